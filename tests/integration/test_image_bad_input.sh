#!/usr/bin/env bash
# test_image_bad_input.sh - `cista image unpack` against every kind of bad
# input it must refuse: truncated, extended or modified blobs, a flipped
# bit behind a rewritten descriptor (only the HMAC can see it), wrong or
# missing keys, a diff_id that does not match, unknown media types and
# ciphers, malformed, oversized or path-traversing JSON. For each case it
# checks the exit code (3 for a failed security check, 1 for malformed
# input), that stderr names the layer (index and digest) when a layer is at
# fault, and that neither ROOTFS nor a staging directory is left behind.
#
# The test image (2 layers) is built here with tar, gzip and jq, and
# encrypted with cista.
#
# Usage: tests/integration/test_image_bad_input.sh [path/to/cista]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
CISTA=$(realpath "${1:-build/src/cli/cista}")
S=../shared/testdata/ocicrypt
K=$S/keys

T=$(mktemp -d /tmp/cista-bad.XXXXXX)
# KEEP_TMP=1 keeps the scratch directory for debugging.
cleanup() { if [ -n "${KEEP_TMP:-}" ]; then echo "# kept $T"; else rm -rf "$T"; fi; }
trap cleanup EXIT INT TERM
export HOME=$T/home TMPDIR=$T/tmp
mkdir -p "$HOME" "$TMPDIR"

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }

# The jq programs below use jq variables ($d, $s): single quotes are meant.
# shellcheck disable=SC2016
sha() { sha256sum "$1" | cut -d' ' -f1; }
staging_left() {
  local f
  for f in "$T"/.*.cista-*; do [ -e "$f" ] && return 0; done
  return 1
}
# put_blob LAYOUT FILE: store FILE as a blob, print its digest.
put_blob() {
  local h
  h=$(sha "$2")
  cp "$2" "$1/blobs/sha256/$h"
  echo "sha256:$h"
}
manifest_path() { echo "$1/blobs/sha256/$(jq -r '.manifests[0].digest' "$1/index.json" | cut -c8-)"; }
layer_path() { echo "$1/blobs/sha256/$(jq -r ".layers[$2].digest" "$(manifest_path "$1")" | cut -c8-)"; }
# set_manifest LAYOUT JQ-FILTER [jq args]: rewrite the manifest and repoint index.json at it.
set_manifest() {
  local dir=$1 filter=$2
  shift 2
  jq -c "$@" "$filter" "$(manifest_path "$dir")" >"$T/m.json" || return 1
  local d size
  d=$(put_blob "$dir" "$T/m.json")
  size=$(stat -c %s "$T/m.json")
  jq -c --arg d "$d" --argjson s "$size" '.manifests[0].digest = $d | .manifests[0].size = $s' \
    "$dir/index.json" >"$T/i.json" && mv "$T/i.json" "$dir/index.json"
}

# ---- a 2-layer plaintext image, built by hand ----
build_plain() {
  local L=$T/plain
  mkdir -p "$L/blobs/sha256" "$T/l1/app" "$T/l2/app"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
  echo "first layer" >"$T/l1/app/one.txt"
  echo "second layer" >"$T/l2/app/two.txt"
  local ids=() layers=()
  for i in 1 2; do
    tar --owner=0 --group=0 --numeric-owner -C "$T/l$i" -cf "$T/l$i.tar" . || return 1
    ids+=("sha256:$(sha "$T/l$i.tar")")
    gzip -n -c "$T/l$i.tar" >"$T/l$i.tar.gz"
    layers+=("$(jq -nc --arg d "$(put_blob "$L" "$T/l$i.tar.gz")" --argjson s "$(stat -c %s "$T/l$i.tar.gz")" \
      '{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$d,size:$s}')")
  done
  jq -nc --arg a "${ids[0]}" --arg b "${ids[1]}" \
    '{architecture:"amd64",os:"linux",config:{Cmd:["/app/one.txt"]},rootfs:{type:"layers",diff_ids:[$a,$b]}}' >"$T/c.json"
  local cd
  cd=$(put_blob "$L" "$T/c.json")
  jq -nc --arg cd "$cd" --argjson cs "$(stat -c %s "$T/c.json")" --argjson l1 "${layers[0]}" --argjson l2 "${layers[1]}" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},layers:[$l1,$l2]}' >"$T/m.json"
  local md
  md=$(put_blob "$L" "$T/m.json")
  jq -nc --arg d "$md" --argjson s "$(stat -c %s "$T/m.json")" \
    '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$d,size:$s,annotations:{"org.opencontainers.image.ref.name":"v1"}}]}' >"$L/index.json"
}
if build_plain && "$CISTA" -q image pack --encrypt "jwe:$K/rsa-pub.pem" "oci:$T/plain:v1" "oci:$T/enc:v1" >/dev/null &&
  "$CISTA" -q image unpack "oci:$T/enc:v1" "$T/good" --key "$K/rsa-priv.pem" >/dev/null &&
  grep -q "second layer" "$T/good/app/two.txt"; then
  ok "build and encrypt a 2-layer test image; it unpacks"
else
  not_ok "build and encrypt a 2-layer test image; it unpacks"
  echo "Bail out! cannot build the test image"
  exit 1
fi

# fresh NAME [plain]: a copy of the encrypted (or plain) image to tamper with.
fresh() {
  rm -rf "${T:?}/$1"
  cp -a "$T/${2:-enc}" "$T/$1"
  echo "$T/$1"
}

# expect NAME CODE PATTERN LAYER CISTA-ARGS...: cista fails with CODE, stderr matches PATTERN
# (and names LAYER, e.g. "layer 2/2 (sha256:", unless LAYER is "-"), and $T/out and any
# staging directory are gone.
expect() {
  local name=$1 code=$2 pat=$3 layer=$4
  shift 4
  rm -rf "$T/out"
  "$CISTA" -q "$@" 2>"$T/err" >/dev/null
  local rc=$? why=""
  [ "$rc" -eq "$code" ] || why="exit code $rc, expected $code"
  grep -q -- "$pat" "$T/err" || why="$why; stderr lacks \"$pat\""
  if [ "$layer" != - ] && ! grep -qF -- "$layer" "$T/err"; then why="$why; stderr does not name $layer"; fi
  [ ! -e "$T/out" ] || why="$why; $T/out exists"
  if staging_left; then why="$why; a staging directory is left"; fi
  if [ -z "$why" ]; then
    ok "$name"
    [ -z "${VERBOSE:-}" ] || sed 's/^/#   /' "$T/err"
  else
    not_ok "$name ($why)"
    sed 's/^/# /' "$T/err"
  fi
}
L2=$(jq -r '.layers[1].digest' "$(manifest_path "$T/enc")")
LAYER2="layer 2/2 ($L2)"
unpack_key=(--key "$K/rsa-priv.pem")

# ---- blobs ----
d=$(fresh trunc)
truncate -s -1 "$(layer_path "$d" 1)"
expect "truncated blob" 3 "truncated" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh extra)
echo -n x >>"$(layer_path "$d" 1)"
expect "blob with extra bytes" 3 "longer than it should be" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh modified)
f=$(layer_path "$d" 1)
printf '\x00' | dd of="$f" bs=1 seek=40 conv=notrunc status=none
expect "blob modified (digest mismatch)" 3 "sha256 of the blob is" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh bitflip)
f=$(layer_path "$d" 1)
cp "$f" "$T/flipped"
off=$(($(stat -c %s "$f") / 2))
byte=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
# shellcheck disable=SC2059 # the format is the octal escape of the flipped byte
printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$T/flipped" bs=1 seek="$off" conv=notrunc status=none
nd=$(put_blob "$d" "$T/flipped")
set_manifest "$d" '.layers[1].digest = $d' --arg d "$nd"
expect "one flipped bit behind a rewritten descriptor (HMAC)" 3 "HMAC-SHA256 of the ciphertext" "layer 2/2 ($nd)" \
  image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh missing)
rm "$(layer_path "$d" 1)"
expect "missing blob" 1 "is missing from the layout" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

# ---- keys ----
expect "wrong key (EC key, RSA recipient)" 3 "no key matches any recipient" "layer 1/2" \
  image unpack "oci:$T/enc:v1" "$T/out" --key "$K/ec-priv.pem"
openssl genrsa -out "$T/other-rsa.pem" 2048 2>/dev/null
expect "no matching recipient (another RSA key)" 3 "recipients are: RSA-OAEP (RSA-2048)" "layer 1/2" \
  image unpack "oci:$T/enc:v1" "$T/out" --key "$T/other-rsa.pem"
expect "no key for an encrypted image" 3 "give the matching private key with --key" "layer 1/2" \
  image unpack "oci:$T/enc:v1" "$T/out"
expect "a public key where a private key is needed" 1 "private key is needed" - \
  image unpack "oci:$T/enc:v1" "$T/out" --key "$K/rsa-pub.pem"

# ---- config and media types ----
d=$(fresh diffid plain)
jq -c '.rootfs.diff_ids[1] = "sha256:0000000000000000000000000000000000000000000000000000000000000000"' \
  "$d/blobs/sha256/$(jq -r '.config.digest' "$(manifest_path "$d")" | cut -c8-)" >"$T/c2.json"
cd2=$(put_blob "$d" "$T/c2.json")
set_manifest "$d" '.config.digest = $d | .config.size = $s' --arg d "$cd2" --argjson s "$(stat -c %s "$T/c2.json")"
LP2="layer 2/2 ($(jq -r '.layers[1].digest' "$(manifest_path "$d")"))"
expect "diff_id does not match the config" 3 "the config's diff_id is" "$LP2" image unpack "oci:$d:v1" "$T/out"

d=$(fresh mediatype)
set_manifest "$d" '.layers[1].mediaType = "application/vnd.oci.image.layer.v1.tar+lz4+encrypted"'
expect "unknown layer media type" 1 "unknown layer media type" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh cipher)
po=$(printf '%s' '{"cipher":"AES_256_GCM","hmac":"","cipheroptions":{}}' | base64 -w0)
set_manifest "$d" '.layers[1].annotations["org.opencontainers.image.enc.pubopts"] = $p' --arg p "$po"
expect "unknown cipher in pubopts" 1 "AES_256_GCM" "$LAYER2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh nojwe)
set_manifest "$d" 'del(.layers[0].annotations["org.opencontainers.image.enc.keys.jwe"])'
expect "encrypted layer without keys.jwe annotation" 1 "no org.opencontainers.image.enc.keys.jwe" "layer 1/2" \
  image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

d=$(fresh badjwe)
set_manifest "$d" '.layers[0].annotations["org.opencontainers.image.enc.keys.jwe"] = "bm90IGEgandl"'
expect "keys.jwe that is not a JWE" 1 "JWE" "layer 1/2" image unpack "oci:$d:v1" "$T/out" "${unpack_key[@]}"

# ---- JSON documents ----
d=$(fresh badindex)
echo '{"schemaVersion":2,"manifests":[' >"$d/index.json"
expect "malformed index.json" 1 "index.json: invalid JSON" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh hugeindex)
head -c $((4 * 1024 * 1024 + 1)) /dev/zero | tr '\0' ' ' >"$d/index.json"
expect "oversized index.json (> 4 MiB)" 1 "more than the limit" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh schema1)
set_manifest "$d" '.schemaVersion = 1'
expect "manifest with schemaVersion 1" 1 "schemaVersion is 1" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh traversal)
set_manifest "$d" '.layers[0].digest = "sha256:../../../../../../../../etc/passwd"'
expect "path traversal in a layer digest" 1 "is malformed" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh sha512)
set_manifest "$d" '.layers[0].digest = "sha512:00"'
expect "non-sha256 digest" 1 "other than sha256" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh bigmanifest)
jq -c '.manifests[0].size = 5000000' "$d/index.json" >"$T/i.json" && mv "$T/i.json" "$d/index.json"
expect "manifest descriptor over the 4 MiB limit" 1 "more than the limit" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh badconfig)
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":"x"}}' >"$T/c3.json"
cd3=$(put_blob "$d" "$T/c3.json")
set_manifest "$d" '.config.digest = $d | .config.size = $s' --arg d "$cd3" --argjson s "$(stat -c %s "$T/c3.json")"
expect "malformed config" 1 "diff_ids\" must be an array" - image unpack "oci:$d:v1" "$T/out"

d=$(fresh mediatypemismatch)
set_manifest "$d" '.mediaType = "application/vnd.oci.image.index.v1+json"'
expect "manifest that claims to be an index" 1 "not a manifest" - image unpack "oci:$d:v1" "$T/out"

expect "tag that does not exist" 1 "no manifest tagged \"nope\"" - image unpack "oci:$T/enc:nope" "$T/out"
expect "not an image layout" 1 "not an OCI image layout" - image unpack "oci:$T/l1" "$T/out"
expect "not an archive" 1 "docker-archive" - image unpack "docker-archive:$T/c.json" "$T/out"

# ---- a layer that tar_apply refuses (a device node): nothing may be left ----
if [ "$(id -u)" -eq 0 ] && mkdir -p "$T/devroot" && mknod "$T/devroot/null" c 1 3 2>/dev/null; then
  d=$(fresh devnode plain)
  tar --owner=0 --group=0 --numeric-owner -C "$T/devroot" -cf "$T/dev.tar" .
  dd=$(put_blob "$d" "$T/dev.tar")
  jq -c --arg d "sha256:$(sha "$T/dev.tar")" '.rootfs.diff_ids[1] = $d' \
    "$d/blobs/sha256/$(jq -r '.config.digest' "$(manifest_path "$d")" | cut -c8-)" >"$T/c4.json"
  cd4=$(put_blob "$d" "$T/c4.json")
  set_manifest "$d" '.layers[1] = {mediaType:"application/vnd.oci.image.layer.v1.tar",digest:$d,size:$s} | .config.digest = $c | .config.size = $cs' \
    --arg d "$dd" --argjson s "$(stat -c %s "$T/dev.tar")" --arg c "$cd4" --argjson cs "$(stat -c %s "$T/c4.json")"
  expect "layer 2 holds a device node: refused after layer 1 was applied" 3 "device" "layer 2/2 ($dd)" \
    image unpack "oci:$d:v1" "$T/out"
else
  ok "# SKIP device-node layer (needs root)"
fi

# ---- the target ----
mkdir -p "$T/out"
touch "$T/out/file"
"$CISTA" -q image unpack "oci:$T/plain:v1" "$T/out" 2>"$T/err" >/dev/null
rc=$?
if [ "$rc" -eq 1 ] && grep -q "not empty" "$T/err" && [ -e "$T/out/file" ] && ! staging_left; then
  ok "non-empty ROOTFS refused and left alone"
else
  not_ok "non-empty ROOTFS refused and left alone (rc $rc)"
  sed 's/^/# /' "$T/err"
fi
rm -rf "$T/out"

# ---- usage ----
"$CISTA" image unpack >/dev/null 2>&1
[ $? -eq 2 ] && ok "missing arguments: exit 2" || not_ok "missing arguments: exit 2"
"$CISTA" image pack --encrypt pkcs7:x.pem "oci:$T/plain:v1" "oci:$T/o" >/dev/null 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "jwe:" "$T/err" && ok "--encrypt pkcs7: refused as usage" || not_ok "--encrypt pkcs7: refused as usage"
"$CISTA" image pack --encrypt "jwe:$K/ec-pub.pem" "oci:$T/enc:v1" "oci:$T/o" >/dev/null 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && grep -q "already encrypted" "$T/err" && [ ! -e "$T/o" ] && ok "re-encrypting an encrypted image refused, nothing written" ||
  not_ok "re-encrypting an encrypted image refused, nothing written"

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
