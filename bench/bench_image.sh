#!/usr/bin/env bash
# bench/bench_image.sh - cista image pack/unpack against skopeo (+ umoci) on
# the same machine in the same run, beside the per-core ceilings that
# `openssl speed` and the decompressors measure here. On demand, not in CI.
#
#   bench/bench_image.sh [CISTA] [SIZE_MB]     (default build/src/cli/cista, 200)
#
# Prints medians of RUNS (default 3) runs, MB/s of the image's uncompressed
# size, ratios, and peak RSS. Needs: skopeo umoci openssl zstd gzip time jq.
set -euo pipefail
cd "$(dirname "$0")/.."
CISTA=$(realpath "${1:-build/src/cli/cista}")
SIZE_MB=${2:-200}
RUNS=${RUNS:-3}
W=$(mktemp -d /tmp/cista-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
export HOME=$W/home XDG_RUNTIME_DIR=$W/run TMPDIR=$W/tmp
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$TMPDIR"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$W/policy.json"
SKOPEO=(skopeo --policy "$W/policy.json")

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# time_cmd OUTVAR CMD...: wall seconds and peak RSS (KiB) of one run
run_timed() {
  /usr/bin/time -f '%e %M' -o "$W/t" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  cat "$W/t"
}

echo "== building a ~${SIZE_MB} MB, 3-layer image from host files"
umoci init --layout "$W/src" >/dev/null
umoci new --image "$W/src:v1" >/dev/null
umoci unpack --rootless --image "$W/src:v1" "$W/b" >/dev/null
per=$((SIZE_MB * 1024 * 1024 / 3))
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
  umoci repack --image "$W/src:v1" "$W/b" >/dev/null
done
rm -rf "$W/b"
RAW=$(du -sb "$W/src" | cut -f1)
# Uncompressed size = sum of the layer tars (what every stage touches after inflate).
UNC=0
for blob in $(jq -r '.layers[].digest' "$W/src/blobs/sha256/$(jq -r '.manifests[0].digest' "$W/src/index.json" | cut -d: -f2)" | cut -d: -f2); do
  UNC=$((UNC + $(gzip -dc "$W/src/blobs/sha256/$blob" | wc -c)))
done
MB=$(echo "$UNC / 1000000" | bc -l)
printf 'image: %d bytes on disk (gzip), %d bytes uncompressed (%.0f MB)\n' "$RAW" "$UNC" "$MB"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/k.pem" 2>/dev/null
openssl pkey -in "$W/k.pem" -pubout -out "$W/pub.pem"

echo "== per-core ceilings measured now"
speed() { openssl speed -bytes 1048576 -seconds 2 -evp "$1" 2>/dev/null | awk -v a="$1" 'tolower($1)==a {print $NF}' | tail -1 | sed 's/k$//'; }
CTR=$(speed aes-256-ctr); SHA=$(speed sha256)
CTR_MB=$(echo "$CTR * 1000 / 1000000" | bc -l); SHA_MB=$(echo "$SHA * 1000 / 1000000" | bc -l)
first=$(jq -r '.layers[0].digest' "$W/src/blobs/sha256/$(jq -r '.manifests[0].digest' "$W/src/index.json" | cut -d: -f2)" | cut -d: -f2)
L="$W/src/blobs/sha256/$first"
LU=$(gzip -dc "$L" | wc -c)
gz_t=$( { /usr/bin/time -f '%e' gzip -dc "$L" >/dev/null; } 2>&1 )
gzip -dc "$L" | zstd -q -3 -o "$W/l.zst"
zs_t=$( { /usr/bin/time -f '%e' zstd -qdc "$W/l.zst" >/dev/null; } 2>&1 )
GZ_MB=$(echo "$LU / 1000000 / $gz_t" | bc -l); ZS_MB=$(echo "$LU / 1000000 / $zs_t" | bc -l)
printf 'AES-256-CTR %.0f MB/s, SHA-256 %.0f MB/s, gzip -d %.0f MB/s, zstd -d %.0f MB/s (output)\n' \
  "$CTR_MB" "$SHA_MB" "$GZ_MB" "$ZS_MB"

declare -A T R
measure() { # name cmd...
  local name=$1; shift
  local ts=() rs=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$W/out" "$W/root" "$W/bundle" "$W/dec"
    # Flush what earlier steps left dirty so each tool pays only for its own I/O.
    sync
    read -r t r < <(run_timed "$@")
    ts+=("$t"); rs+=("$r")
  done
  T[$name]=$(printf '%s\n' "${ts[@]}" | median)
  R[$name]=$(printf '%s\n' "${rs[@]}" | sort -n | tail -1)
  printf '%-28s %7.2f s  %7.1f MB/s  peak RSS %6.1f MB\n' "$name" "${T[$name]}" \
    "$(echo "$MB / ${T[$name]}" | bc -l)" "$(echo "${R[$name]} / 1024" | bc -l)"
}

echo "== pack --encrypt (medians of $RUNS)"
measure cista-pack "$CISTA" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/out:v1"
measure skopeo-encrypt "${SKOPEO[@]}" copy --encryption-key "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/out:v1"
"$CISTA" -q image pack --encrypt "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/enc:v1"

echo "== decrypt + verify + unpack (medians of $RUNS)"
measure cista-unpack "$CISTA" -q image unpack --key "$W/k.pem" "oci:$W/enc:v1" "$W/root"
skopeo_umoci() { "${SKOPEO[@]}" copy --decryption-key "$W/k.pem" "oci:$W/enc:v1" "oci:$W/dec:v1" && umoci unpack --image "$W/dec:v1" "$W/bundle"; }
export -f skopeo_umoci; export W
measure skopeo+umoci bash -c "$(declare -p SKOPEO); $(declare -f skopeo_umoci); skopeo_umoci"

echo "== ratios"
slow=$(printf '%s\n' "$GZ_MB" "$SHA_MB" "$CTR_MB" | sort -g | head -1)
un_mb=$(echo "$MB / ${T[cista-unpack]}" | bc -l)
printf 'unpack speed-up vs skopeo+umoci: %.2fx (target >= 3x)\n' "$(echo "${T[skopeo+umoci]} / ${T[cista-unpack]}" | bc -l)"
printf 'unpack vs slowest-stage ceiling (%.0f MB/s): %.0f%% (target >= 70%%)\n' "$slow" "$(echo "100 * $un_mb / $slow" | bc -l)"
printf 'pack speed-up vs skopeo: %.2fx (target >= 2x)\n' "$(echo "${T[skopeo-encrypt]} / ${T[cista-pack]}" | bc -l)"
printf 'peak RSS: pack %.1f MB, unpack %.1f MB (target <= 64 MB)\n' "$(echo "${R[cista-pack]} / 1024" | bc -l)" "$(echo "${R[cista-unpack]} / 1024" | bc -l)"
