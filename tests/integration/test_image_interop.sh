#!/usr/bin/env bash
# test_image_interop.sh - cista's image pack/unpack against the real peers,
# both ways:
#   * images encrypted by skopeo (the samples in ../shared/testdata/ocicrypt,
#     and a multi-layer image encrypted here) unpack with cista to the same
#     tree as `umoci unpack` of the plaintext image;
#   * images packed by cista (RSA, EC, both; keep/gzip/zstd) decrypt with
#     `skopeo copy --decryption-key` and unpack with umoci to the same tree
#     as cista's own unpack;
#   * oci-archive and docker-archive sources written by tar and skopeo.
# A larger test image (busybox-static, 3 layers, whiteouts) is built here
# with umoci. Trees are compared by path, type, mode, owner, size, link
# target and content.
#
# Usage: tests/integration/test_image_interop.sh [path/to/cista]
# Prints "ok N - name" / "not ok N - name" and a final count.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
CISTA=$(realpath "${1:-build/src/cli/cista}")
S=../shared/testdata/ocicrypt

for tool in skopeo umoci; do
  if ! command -v "$tool" >/dev/null; then
    echo "1..0 # SKIP $tool is not installed"
    exit 0
  fi
done

T=$(mktemp -d /tmp/cista-interop.XXXXXX)
# KEEP_TMP=1 keeps the scratch directory for debugging.
cleanup() { if [ -n "${KEEP_TMP:-}" ]; then echo "# kept $T"; else rm -rf "$T"; fi; }
trap cleanup EXIT INT TERM
# Nothing may land in the real home: skopeo and umoci read and write config there.
export HOME=$T/home XDG_CONFIG_HOME=$T/home/.config XDG_DATA_HOME=$T/home/.local/share
export XDG_CACHE_HOME=$T/home/.cache XDG_RUNTIME_DIR=$T/run TMPDIR=$T/tmp
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR" "$TMPDIR"
chmod 700 "$XDG_RUNTIME_DIR"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$T/policy.json"
SKOPEO=(skopeo --policy "$T/policy.json")
cista() { "$CISTA" --quiet "$@"; }

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
# check NAME CMD...: run the command (output kept in $T/last.log).
check() {
  local name=$1
  shift
  if "$@" >"$T/last.log" 2>&1; then ok "$name"; else not_ok "$name"; sed 's/^/# /' "$T/last.log" | tail -n 20; fi
}

# A listing that identifies a tree: path type mode uid gid size link-target sha256.
tree_list() {
  (cd "$1" && find . -mindepth 1 -printf '%p\t%y\t%m\t%U\t%G\t%s\t%l\n' | LC_ALL=C sort) >"$2.meta"
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) >"$2.sum"
}
# same_tree A B: identical file lists, types, modes, owners, sizes, links and contents.
same_tree() {
  tree_list "$1" "$T/a" && tree_list "$2" "$T/b" || return 1
  # Directory sizes depend on the filesystem's history, not on the image.
  awk -F'\t' 'BEGIN{OFS="\t"} $2=="d"{$6="-"} {print}' "$T/a.meta" >"$T/a.m"
  awk -F'\t' 'BEGIN{OFS="\t"} $2=="d"{$6="-"} {print}' "$T/b.meta" >"$T/b.m"
  diff -u "$T/a.m" "$T/b.m" && diff -u "$T/a.sum" "$T/b.sum"
}
umoci_unpack() { # LAYOUT:TAG DIR -> DIR/rootfs
  umoci unpack --image "$1" "$2"
}
# cista_same REF OUT EXPECTED_TREE [cista unpack options]: unpack with cista, compare.
cista_same() {
  local ref=$1 out=$2 want=$3
  shift 3
  cista image unpack "$ref" "$out" "$@" && same_tree "$out" "$want"
}
# umoci_same IMAGE OUT EXPECTED_TREE: unpack with umoci, compare its rootfs.
umoci_same() {
  umoci unpack --image "$1" "$2" >/dev/null 2>&1 && same_tree "$2/rootfs" "$3"
}
# jq_check REF FILTER: the filter holds on `cista image inspect --json REF`.
jq_check() {
  cista image inspect --json "$1" | tee "$T/inspect.json" | jq -e "$2"
}
refused() { ! "$@"; }

# ---- 1. skopeo-encrypted samples -> cista == umoci of the plaintext ----
cp -a "$S" "$T/samples"
chmod -R u+w "$T/samples"
K=$T/samples/keys
umoci_unpack "$T/samples/plain:v1" "$T/ref-plain" >/dev/null 2>&1 || not_ok "umoci unpack plain sample"
check "plain sample: cista unpack == umoci unpack" \
  cista_same "oci:$T/samples/plain:v1" "$T/c-plain" "$T/ref-plain/rootfs"
for s in enc-jwe-rsa:rsa-priv enc-jwe-ec:ec-priv enc-jwe-multi:rsa-priv enc-jwe-multi:ec-priv; do
  img=${s%%:*} key=${s##*:}
  out=$T/c-$img-$key
  check "skopeo sample $img with $key: cista unpack == umoci unpack of plain" \
    cista_same "oci:$T/samples/$img:v1" "$out" "$T/ref-plain/rootfs" --key "$K/$key.pem"
done
check "skopeo sample enc-jwe-rsa with the EC key: refused" \
  refused cista image unpack "oci:$T/samples/enc-jwe-rsa:v1" "$T/x" --key "$K/ec-priv.pem"
check "nothing left after the refusal" test ! -e "$T/x"

# ---- 2. a larger image built with umoci from host files ----
build_big() {
  local L=$T/big
  # umoci repack diffs against the tree the bundle was unpacked from: a fresh bundle per layer.
  umoci init --layout "$L" && umoci new --image "$L:base" && umoci unpack --image "$L:base" "$T/b1" || return 1
  local R=$T/b1/rootfs
  # layer 1: busybox, links, assorted modes and owners
  mkdir -p "$R/bin" "$R/etc/conf.d" "$R/usr/share/doc/cista" "$R/var/empty" "$R/tmp" "$R/secret"
  cp /bin/busybox "$R/bin/busybox"
  for a in sh ls cat echo; do ln -s busybox "$R/bin/$a"; done
  echo "hello" >"$R/etc/hello"
  echo "to be deleted" >"$R/etc/conf.d/old.conf"
  echo "keep" >"$R/etc/conf.d/keep.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
  ln "$R/etc/passwd" "$R/etc/passwd.hardlink"
  echo "doc" >"$R/usr/share/doc/cista/README"
  echo "key material" >"$R/secret/key"
  chmod 0600 "$R/secret/key"
  chmod 0700 "$R/secret"
  chmod 1777 "$R/tmp"
  chmod 4755 "$R/bin/busybox"
  chown 1000:1000 "$R/etc/hello"
  head -c 300000 /dev/urandom >"$R/usr/share/doc/cista/random.bin"
  umoci repack --image "$L:base" "$T/b1" || return 1
  # layer 2: a whiteout (deleted file), a changed file, a new file
  umoci unpack --image "$L:base" "$T/b2" || return 1
  R=$T/b2/rootfs
  rm "$R/etc/conf.d/old.conf"
  echo "changed" >"$R/etc/hello"
  echo "new" >"$R/etc/new"
  umoci repack --image "$L:base" "$T/b2" || return 1
  # layer 3: a whole directory deleted, and another with other content in its place
  umoci unpack --image "$L:base" "$T/b3" || return 1
  R=$T/b3/rootfs
  rm -rf "$R/usr/share/doc/cista" "$R/var/empty"
  mkdir -p "$R/usr/share/doc/cista2"
  echo "second doc" >"$R/usr/share/doc/cista2/NEW"
  ln -s ../../../../etc/hello "$R/usr/share/doc/cista2/link"
  umoci repack --image "$L:base" "$T/b3" || return 1
  umoci config --image "$L:base" --config.entrypoint /bin/sh --config.env A=1 \
    --config.workingdir /tmp --config.exposedports 8080/tcp --config.user 1000:1000 || return 1
  umoci gc --layout "$L"
}
if [ -x /bin/busybox ] && build_big >"$T/last.log" 2>&1; then
  ok "build a 3-layer test image with umoci"
else
  not_ok "build a 3-layer test image with umoci"
  sed 's/^/# /' "$T/last.log" | tail -n 20
fi
umoci_unpack "$T/big:base" "$T/ref-big" >/dev/null 2>&1
check "big image: cista unpack == umoci unpack" cista_same "oci:$T/big:base" "$T/c-big" "$T/ref-big/rootfs"
check "big image: whiteouts applied" \
  sh -c "test ! -e $T/c-big/etc/conf.d/old.conf && test ! -e $T/c-big/usr/share/doc/cista && test ! -e $T/c-big/var/empty && test -f $T/c-big/usr/share/doc/cista2/NEW && grep -q changed $T/c-big/etc/hello"
check "big image: inspect shows the config" jq_check "oci:$T/big:base" \
  '.config.entrypoint == ["/bin/sh"] and .config.exposed_ports == ["8080/tcp"] and (.layers | length) == 3' 

# ---- 3. cista pack (encrypt) -> skopeo decrypt -> umoci unpack == cista unpack ----
pubkey() { echo "$K/${1%-priv}-pub.pem"; }
for keys in rsa ec both; do
  for comp in keep gzip zstd; do
    name="$keys/$comp"
    case $keys in
      rsa) enc=(--encrypt "jwe:$K/rsa-pub.pem") dec=(rsa-priv) ;;
      ec) enc=(--encrypt "jwe:$K/ec-pub.pem") dec=(ec-priv) ;;
      both) enc=(--encrypt "jwe:$K/rsa-pub.pem" --encrypt "jwe:$K/ec-pub.pem") dec=(rsa-priv ec-priv) ;;
    esac
    P=$T/p-$keys-$comp
    if ! cista image pack "${enc[@]}" --compress "$comp" "oci:$T/big:base" "oci:$P:v1" >"$T/last.log" 2>&1; then
      not_ok "cista pack $name"
      sed 's/^/# /' "$T/last.log"
      continue
    fi
    ok "cista pack $name"
    check "cista pack $name: all 3 layers encrypted" jq_check "oci:$P:v1" '.encrypted_layers == 3' 
    for k in "${dec[@]}"; do
      C=$T/cu-$keys-$comp-$k
      check "cista unpack $name with $k == umoci unpack of the plaintext" \
        cista_same "oci:$P:v1" "$C" "$T/ref-big/rootfs" --key "$K/$k.pem"
      D=$T/d-$keys-$comp-$k
      if ! "${SKOPEO[@]}" copy -q --decryption-key "$K/$k.pem" "oci:$P:v1" "oci:$D:v1" >"$T/last.log" 2>&1; then
        not_ok "skopeo decrypts cista $name with $k"
        sed 's/^/# /' "$T/last.log"
        continue
      fi
      ok "skopeo decrypts cista $name with $k"
      G="$D:v1"
      if [ "$comp" = zstd ]; then
        # umoci 0.4.7 cannot read zstd layers: recompress the skopeo-decrypted image (cista
        # holds the tar to the config's diff_id while doing so), then let umoci unpack it.
        check "recompress skopeo-decrypted $name to gzip" \
          "$CISTA" -q image pack --compress gzip "oci:$D:v1" "oci:$D-gz:v1"
        G="$D-gz:v1"
      fi
      U=$T/u-$keys-$comp-$k
      check "umoci unpack of skopeo-decrypted $name == cista unpack" umoci_same "$G" "$U" "$C"
    done
  done
done
# A wrong key is refused by skopeo too (so the JWE really names its recipients).
check "skopeo refuses cista rsa/keep with the EC key" \
  refused "${SKOPEO[@]}" copy -q --decryption-key "$K/ec-priv.pem" "oci:$T/p-rsa-keep:v1" "oci:$T/wrong:v1"
# skopeo without a key copies the image still encrypted; cista unpacks the copy.
check "skopeo copies a cista-encrypted image without a key (still encrypted)" \
  "${SKOPEO[@]}" copy -q "oci:$T/p-ec-gzip:v1" "oci:$T/copied:v1"
check "cista unpacks skopeo's copy of the encrypted image" \
  cista_same "oci:$T/copied:v1" "$T/c-copied" "$T/ref-big/rootfs" --key "$K/ec-priv.pem"

# ---- 4. skopeo-encrypted multi-layer image -> cista ----
for k in rsa ec; do
  check "skopeo encrypts the 3-layer image to $k" \
    "${SKOPEO[@]}" copy -q --encryption-key "jwe:$K/$k-pub.pem" "oci:$T/big:base" "oci:$T/se-$k:v1"
  check "skopeo-encrypted 3-layer image ($k): cista unpack == umoci of plaintext" \
    cista_same "oci:$T/se-$k:v1" "$T/c-se-$k" "$T/ref-big/rootfs" --key "$K/$k-priv.pem"
done
check "skopeo encrypts to both keys" \
  "${SKOPEO[@]}" copy -q --encryption-key "jwe:$K/rsa-pub.pem" --encryption-key "jwe:$K/ec-pub.pem" \
  "oci:$T/big:base" "oci:$T/se-both:v1"
check "skopeo-encrypted (both): cista unpack with the EC key == umoci of plaintext" \
  cista_same "oci:$T/se-both:v1" "$T/c-se-both" "$T/ref-big/rootfs" --key "$K/ec-priv.pem"

# ---- 5. archives ----
check "tar the layout into an oci-archive" tar -C "$T/big" -cf "$T/big-oci.tar" .
check "oci-archive (tar of the layout): cista unpack == umoci" \
  cista_same "oci-archive:$T/big-oci.tar:base" "$T/c-oa" "$T/ref-big/rootfs"
check "skopeo writes an oci-archive" \
  "${SKOPEO[@]}" copy -q "oci:$T/big:base" "oci-archive:$T/sk-oci.tar:base"
check "skopeo oci-archive: cista unpack == umoci" \
  cista_same "oci-archive:$T/sk-oci.tar:base" "$T/c-soa" "$T/ref-big/rootfs"
check "skopeo writes a docker-archive" \
  "${SKOPEO[@]}" copy -q "oci:$T/big:base" "docker-archive:$T/sk-docker.tar:cista/big:v1"
check "skopeo docker-archive: cista unpack == umoci" \
  cista_same "docker-archive:$T/sk-docker.tar:cista/big:v1" "$T/c-da" "$T/ref-big/rootfs"
check "docker-archive -> cista pack (encrypt, zstd)" \
  cista image pack --compress zstd --encrypt "jwe:$K/rsa-pub.pem" "docker-archive:$T/sk-docker.tar" \
  "oci:$T/from-da:v1"
check "skopeo decrypts the packed docker-archive image" \
  "${SKOPEO[@]}" copy -q --decryption-key "$K/rsa-priv.pem" "oci:$T/from-da:v1" "oci:$T/from-da-dec:v1"
check "... and its tree is the same" cista_same "oci:$T/from-da-dec:v1" "$T/c-fdd" "$T/ref-big/rootfs"
check "no extraction directory is left after the archive runs" \
  bash -c '! ls -d "$TMPDIR"/cista-archive-* 2>/dev/null'
# A process killed while extracting leaves its directory; the next archive open removes it,
# but never the directory of a live process (it holds a lock on it) nor a brand-new one.
mkdir -p "$TMPDIR/cista-archive-dead1" "$TMPDIR/cista-archive-live1" "$TMPDIR/cista-archive-new1"
echo x >"$TMPDIR/cista-archive-dead1/m000001"
touch -d '-10 minutes' "$TMPDIR/cista-archive-dead1" "$TMPDIR/cista-archive-live1"
flock "$TMPDIR/cista-archive-live1" sleep 60 &
LOCKER=$!
for _ in $(seq 50); do grep -q sleep "/proc/$LOCKER/comm" 2>/dev/null && break; sleep 0.1; done
check "an archive open after a killed extraction" cista image inspect "oci-archive:$T/big-oci.tar:base"
check "... removes the dead process's directory" test ! -e "$TMPDIR/cista-archive-dead1"
check "... keeps a directory another process holds" test -d "$TMPDIR/cista-archive-live1"
check "... keeps a directory created a moment ago" test -d "$TMPDIR/cista-archive-new1"
kill "$LOCKER" 2>/dev/null
wait "$LOCKER" 2>/dev/null
rm -rf "$TMPDIR"/cista-archive-*

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
