#!/usr/bin/env bash
# bench/bench_image.sh - cista image pack/unpack against skopeo (+ umoci) on
# the same machine in the same run, beside the per-core ceilings of every
# stage measured in that run. On demand, not in CI.
#
#   bench/bench_image.sh [CISTA] [SIZE_MB]     (default build/src/cli/cista, 200)
#
# Environment:
#   RUNS=3          timed runs per command (medians are reported; runs interleave the tools)
#   BENCH_DIR=/dev/shm   where the images and unpacked trees go. tmpfs by default: that is
#                   where a TEE guest unpacks, and it keeps disk writeback and ext4's inode
#                   allocator (slow right after a previous tree was rm -rf'd) out of the
#                   numbers. Give a disk directory to measure that case instead.
#   CISTA_BASELINE=path  another cista binary (say, a build of the previous commit) timed
#                   on the same runs: rows baseline-pack, baseline-unpack(-zstd).
#   IDLE_PCT=85     before each timed run, wait (at most IDLE_WAIT=20 s) until the CPUs were
#                   this idle over one second; the idle level seen is printed with every run.
#
# Conventions: MB = 10^6 bytes. Every MB/s is MB of *uncompressed layer tar* per wall
# second, for every tool and every ceiling, so the numbers compare directly. Stages that
# work on the compressed blob (CTR, HMAC, the blob digests) are converted with the image's
# compression ratio: a stage running at X MB/s of blob handles X * tar/blob MB/s of tar.
# Needs: skopeo umoci openssl zstd jq cc (zlib, libzstd headers) python3 /usr/bin/time;
# libdeflate-gunzip (libdeflate-tools) and igzip (isal) are used for reference when present.
set -euo pipefail
cd "$(dirname "$0")/.."
CISTA=$(realpath "${1:-build/src/cli/cista}")
SIZE_MB=${2:-200}
RUNS=${RUNS:-3}
IDLE_PCT=${IDLE_PCT:-85}
IDLE_WAIT=${IDLE_WAIT:-20}
BENCH_DIR=${BENCH_DIR:-/dev/shm}
W=$(mktemp -d "$BENCH_DIR/cista-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
export HOME=$W/home XDG_RUNTIME_DIR=$W/run TMPDIR=$W/tmp
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$TMPDIR"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$W/policy.json"
SKOPEO=(skopeo --policy "$W/policy.json")
NCPU=$(nproc)

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
calc() { python3 -c "print($1)"; }
fmt() { printf "%.${2:-0}f" "$1"; }

# Percent idle of all CPUs over one second.
idle_pct() {
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 1
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local ta=0 tb=0 i
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  echo $(( 100 * ((b[4] + b[5]) - (a[4] + a[5])) / (tb - ta) ))
}
wait_idle() {
  local p t=0
  p=$(idle_pct)
  while [ "$p" -lt "$IDLE_PCT" ] && [ $t -lt "$IDLE_WAIT" ]; do p=$(idle_pct); t=$((t + 1)); done
  echo "$p"
}

echo "== machine"
echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(uname -r)"
echo "work dir $W on $(stat -f -c %T "$W"); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cista $CISTA; $(skopeo --version); $(umoci --version); $(openssl version)"

echo "== building a ~${SIZE_MB} MB, 3-layer image from host files"
umoci init --layout "$W/src" >/dev/null
umoci new --image "$W/src:v1" >/dev/null
umoci unpack --rootless --image "$W/src:v1" "$W/b" >/dev/null
per=$((SIZE_MB * 1000000 / 3))
i=0
for dir in /usr/lib /usr/share /usr/bin /usr/libexec /usr/include; do
  [ -d "$dir" ] || continue
  i=$((i + 1)); [ $i -le 3 ] || break
  mkdir -p "$W/b/rootfs/layer$i"
  # Copy files until the layer holds about $per bytes.
  # (find dies of SIGPIPE once python has enough: not an error)
  find "$dir" -type f -size -20M -readable 2>/dev/null | python3 -c '
import os, shutil, sys
budget = int(sys.argv[1]); dst = sys.argv[2]; used = 0
for line in sys.stdin:
    f = line.rstrip("\n")
    try: s = os.path.getsize(f)
    except OSError: continue
    if used + s > budget: continue
    t = os.path.join(dst, f.lstrip("/"))
    os.makedirs(os.path.dirname(t), exist_ok=True)
    try: shutil.copy2(f, t)
    except OSError: continue
    used += s
    if used >= budget * 0.98: break
 ' "$per" "$W/b/rootfs/layer$i" || true
  # --refresh-bundle: the next repack diffs against this one, so each becomes its own layer
  # (without it every repack re-adds everything as one new single-layer image).
  umoci repack --refresh-bundle --image "$W/src:v1" "$W/b" >/dev/null
done
rm -rf "$W/b"

manifest() { echo "$1/blobs/sha256/$(jq -r '.manifests[0].digest' "$1/index.json" | cut -d: -f2)"; }
layers() { jq -r '.layers[].digest' "$(manifest "$1")" | cut -d: -f2 | sed "s|^|$1/blobs/sha256/|"; }
NL=$(layers "$W/src" | wc -l)
[ "$NL" -eq 3 ] || { echo "expected 3 layers, got $NL" >&2; exit 1; }
# Uncompressed size = sum of the layer tars (what every stage after inflate touches).
UNC=0; GZ=0
for f in $(layers "$W/src"); do
  UNC=$((UNC + $(gzip -dc "$f" | wc -c))); GZ=$((GZ + $(stat -c %s "$f")))
done
MB=$(calc "$UNC / 1e6")
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/k.pem" 2>/dev/null
openssl pkey -in "$W/k.pem" -pubout -out "$W/pub.pem"
# The unpack inputs: gzip (as built) and zstd, each encrypted by cista for one RSA recipient.
"$CISTA" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/enc:v1" >/dev/null
"$CISTA" -q image pack --compress zstd "oci:$W/src:v1" "oci:$W/zsrc:v1" >/dev/null
"$CISTA" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/zsrc:v1" "oci:$W/zenc:v1" >/dev/null
ZS=0
for f in $(layers "$W/zsrc"); do ZS=$((ZS + $(stat -c %s "$f"))); done
printf 'image: %d layers, %d bytes of tar (%.1f MB); gzip blobs %d bytes (ratio %.2f), zstd -3 blobs %d bytes (ratio %.2f)\n' \
  "$NL" "$UNC" "$MB" "$GZ" "$(calc "$UNC/$GZ")" "$ZS" "$(calc "$UNC/$ZS")"

echo "== per-core ceilings, measured now (one thread each; medians of $RUNS)"
cc -O2 -o "$W/decomp_rate" bench/decomp_rate.c -lz -lzstd
ossl() { openssl speed -mr -bytes 1048576 -seconds 1 "$@" 2>/dev/null | awk -F: '/^\+F:/ {print $4 / 1e6}' | tail -1; }
declare -A C
rate() { # name cmd... : MB/s of the command's own unit, median of RUNS
  local name=$1; shift
  local v=()
  for _ in $(seq "$RUNS"); do wait_idle >/dev/null; v+=("$("$@")"); done
  C[$name]=$(printf '%s\n' "${v[@]}" | median)
}
dec() { read -r b s < <("$W/decomp_rate" "$@"); calc "$b / 1e6 / $s"; }
whole() { # tool: MB/s of tar for a whole-file decompressor, over the gzip layers
  local t0 t1; t0=$(date +%s%N)
  for f in $(layers "$W/src"); do "$@" "$f" >/dev/null; done
  t1=$(date +%s%N); calc "$UNC / 1e6 / (($t1 - $t0) / 1e9)"
}
rate ctr ossl -evp aes-256-ctr
rate hmac ossl -hmac sha256
rate sha ossl -evp sha256
# shellcheck disable=SC2046
rate zlib dec gzip $(layers "$W/src")
# shellcheck disable=SC2046
rate zstd dec zstd $(layers "$W/zsrc")
command -v libdeflate-gunzip >/dev/null && rate libdeflate whole libdeflate-gunzip -c
command -v igzip >/dev/null && rate igzip whole igzip -dc
RG=$(calc "$UNC/$GZ"); RZ=$(calc "$UNC/$ZS")
printf '%-34s %10s %14s %14s\n' stage "MB/s own" "MB/s tar,gzip" "MB/s tar,zstd"
row() { printf '%-34s %10.0f %14.0f %14.0f\n' "$1" "$2" "$3" "$4"; }
row "AES-256-CTR (blob)" "${C[ctr]}" "$(calc "${C[ctr]}*$RG")" "$(calc "${C[ctr]}*$RZ")"
row "HMAC-SHA256 (blob)" "${C[hmac]}" "$(calc "${C[hmac]}*$RG")" "$(calc "${C[hmac]}*$RZ")"
row "SHA-256 (blob, x2 when encrypted)" "${C[sha]}" "$(calc "${C[sha]}*$RG")" "$(calc "${C[sha]}*$RZ")"
row "SHA-256 (tar: diff_id)" "${C[sha]}" "${C[sha]}" "${C[sha]}"
row "zlib inflate (tar out)" "${C[zlib]}" "${C[zlib]}" 0
row "libzstd decompress (tar out)" "${C[zstd]}" 0 "${C[zstd]}"
[ -n "${C[libdeflate]:-}" ] && row "libdeflate, whole file (reference)" "${C[libdeflate]}" "${C[libdeflate]}" 0
[ -n "${C[igzip]:-}" ] && row "isa-l igzip, streaming (cista's inflate)" "${C[igzip]}" "${C[igzip]}" 0
# cista inflates gzip with ISA-L; igzip (Debian package isal) measures that
# library's ceiling. Without it, fall back to zlib's as a stand-in.
INFL=${C[igzip]:-${C[zlib]}}
INFL_NAME=$([ -n "${C[igzip]:-}" ] && echo "ISA-L inflate" || echo "zlib inflate, stand-in for ISA-L")
# The slowest stage of each unpack, among the ones cista runs.
SLOW_GZ=$(calc "min($INFL, ${C[sha]}, ${C[hmac]}*$RG, ${C[sha]}*$RG, ${C[ctr]}*$RG)")
SLOW_ZS=$(calc "min(${C[zstd]}, ${C[sha]}, ${C[hmac]}*$RZ, ${C[sha]}*$RZ, ${C[ctr]}*$RZ)")
# All the CPU work of one unpack spread perfectly over every core (filesystem writes not counted).
cpu_bound() { calc "$NCPU / (1/$1 + 1/${C[sha]} + 1/(${C[hmac]}*$2) + 2/(${C[sha]}*$2) + 1/(${C[ctr]}*$2))"; }
BOUND_GZ=$(cpu_bound "$INFL" "$RG"); BOUND_ZS=$(cpu_bound "${C[zstd]}" "$RZ")

declare -A T R
declare -A TS RS
MINIDLE=100
measure() { # name cmd... : one timed run, appended to TS/RS
  local name=$1; shift
  rm -rf "$W/out" "$W/root" "$W/bundle" "$W/dec"
  sync
  local idle; idle=$(wait_idle)
  [ "$idle" -lt "$MINIDLE" ] && MINIDLE=$idle
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$W/rss" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
  t1=$(date +%s%N)
  local t; t=$(calc "round(($t1 - $t0) / 1e9, 3)")
  TS[$name]="${TS[$name]:-} $t"; RS[$name]="${RS[$name]:-} $(cat "$W/rss")"
  printf '  %-20s %6.3f s  (CPUs %s%% idle before)\n' "$name" "$t" "$idle"
}
skopeo_umoci() { "${SKOPEO[@]}" copy --decryption-key "$W/k.pem" "oci:$W/enc:v1" "oci:$W/dec:v1" && umoci unpack --image "$W/dec:v1" "$W/bundle"; }
ALL=(cista-pack skopeo-encrypt cista-unpack skopeo+umoci cista-unpack-zstd)
BASE=${CISTA_BASELINE:+$(realpath "$CISTA_BASELINE")}
[ -n "$BASE" ] && ALL+=(baseline-pack baseline-unpack baseline-unpack-zstd)
echo "== timed runs (interleaved, $RUNS rounds)"
for r in $(seq "$RUNS"); do
  echo " round $r"
  measure cista-pack "$CISTA" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/out:v1"
  measure skopeo-encrypt "${SKOPEO[@]}" copy --encryption-key "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/out:v1"
  measure cista-unpack "$CISTA" -q image unpack --key "$W/k.pem" "oci:$W/enc:v1" "$W/root"
  measure skopeo+umoci bash -c "$(declare -p SKOPEO W); $(declare -f skopeo_umoci); skopeo_umoci"
  measure cista-unpack-zstd "$CISTA" -q image unpack --key "$W/k.pem" "oci:$W/zenc:v1" "$W/root"
  if [ -n "$BASE" ]; then
    measure baseline-pack "$BASE" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/out:v1"
    measure baseline-unpack "$BASE" -q image unpack --key "$W/k.pem" "oci:$W/enc:v1" "$W/root"
    measure baseline-unpack-zstd "$BASE" -q image unpack --key "$W/k.pem" "oci:$W/zenc:v1" "$W/root"
  fi
done
for n in "${ALL[@]}"; do
  T[$n]=$(printf '%s\n' ${TS[$n]} | median)
  R[$n]=$(printf '%s\n' ${RS[$n]} | sort -n | tail -1)
done

echo "== results (MB/s of tar, medians of $RUNS; RSS = max over runs; CPUs >= $MINIDLE% idle before every run)"
printf '| %-20s | %8s | %8s | %12s | %s |\n' command "median s" "MB/s" "peak RSS MB" "runs (s)"
for n in "${ALL[@]}"; do
  printf '| %-20s | %8.3f | %8.0f | %12.1f | %s |\n' "$n" "${T[$n]}" "$(calc "$MB / ${T[$n]}")" \
    "$(calc "${R[$n]} / 1024")" "$(printf '%s' "${TS[$n]}" | sed 's/^ //')"
done
UN=$(calc "$MB / ${T[cista-unpack]}"); UZ=$(calc "$MB / ${T[cista-unpack-zstd]}")
echo "== targets"
printf 'unpack (gzip) vs skopeo+umoci: %.2fx (target >= 3x)\n' "$(calc "${T[skopeo+umoci]} / ${T[cista-unpack]}")"
printf 'pack --encrypt vs skopeo copy --encryption-key: %.2fx (target >= 2x)\n' "$(calc "${T[skopeo-encrypt]} / ${T[cista-pack]}")"
printf 'unpack gzip: %.0f MB/s = %.0f%% of its slowest stage (%s %.0f MB/s; target >= 70%%)' "$UN" "$(calc "100*$UN/$SLOW_GZ")" "$INFL_NAME" "$SLOW_GZ"
[ -n "${C[libdeflate]:-}" ] && printf '; %.0f%% of libdeflate (%.0f)' "$(calc "100*$UN/${C[libdeflate]}")" "${C[libdeflate]}"
printf '; %.0f%% of the %d-core CPU bound (%.0f MB/s)\n' "$(calc "100*$UN/$BOUND_GZ")" "$NCPU" "$BOUND_GZ"
printf 'unpack zstd: %.0f MB/s = %.0f%% of its slowest stage (%.0f MB/s); %.0f%% of the %d-core CPU bound (%.0f MB/s)\n' \
  "$UZ" "$(calc "100*$UZ/$SLOW_ZS")" "$SLOW_ZS" "$(calc "100*$UZ/$BOUND_ZS")" "$NCPU" "$BOUND_ZS"
printf 'peak RSS: pack %.1f MB, unpack %.1f MB (gzip) / %.1f MB (zstd) (target <= 64 MB)\n' \
  "$(calc "${R[cista-pack]} / 1024")" "$(calc "${R[cista-unpack]} / 1024")" "$(calc "${R[cista-unpack-zstd]} / 1024")"
echo "(umoci $(umoci --version | awk '{print $3}') cannot unpack zstd layers, so zstd has no skopeo+umoci row)"
