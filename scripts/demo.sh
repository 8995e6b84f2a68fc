#!/usr/bin/env bash
# The cista demo on the embedded defaults.
#
# Today (issue 2): build a small example image from local files, encrypt it
# for two recipients with ocicrypt-compatible JWE, inspect it, show that
# unpacking without a key is refused, unpack it with one recipient's key
# (every digest, HMAC and diff_id checked), and run the app from the tree.
# Later issues grow this into the full confidential run (KBS + sim TEE).
set -euo pipefail
CISTA=${1:-build/src/cli/cista}
CISTA=$(realpath "$CISTA")
WORK=$(mktemp -d /tmp/cista-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "building an example image from local files (busybox-static + a shell app) with umoci"
umoci init --layout plain >/dev/null
umoci new --image plain:app >/dev/null
umoci unpack --rootless --image plain:app bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/app
cp /bin/busybox bundle/rootfs/bin/busybox
ln -s busybox bundle/rootfs/bin/sh
cat > bundle/rootfs/app/hello.sh <<'APP'
read -r recipe < /app/secret-recipe.txt
echo "hello from a confidential image ($APP_MODE): $recipe"
APP
echo "the recipe is 42" > bundle/rootfs/app/secret-recipe.txt
umoci repack --image plain:app bundle >/dev/null
umoci config --image plain:app --config.entrypoint /bin/sh --config.cmd /app/hello.sh \
  --config.env APP_MODE=demo >/dev/null
rm -rf bundle

say "generating recipient keys (RSA-2048 and EC P-256)"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
openssl pkey -in rsa.pem -pubout -out rsa-pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem
openssl pkey -in ec.pem -pubout -out ec-pub.pem

say "cista image pack --encrypt (ocicrypt: AES-256-CTR + HMAC-SHA256, keys wrapped as JWE)"
"$CISTA" image pack --compress zstd --encrypt jwe:rsa-pub.pem --encrypt jwe:ec-pub.pem \
  oci:plain:app oci:secret:app

say "cista image inspect"
"$CISTA" image inspect oci:secret:app

say "unpacking without a key is refused (and leaves nothing behind)"
if "$CISTA" image unpack oci:secret:app rootfs-nokey; then
  echo "demo: unpack without a key succeeded - this is a bug" >&2
  exit 1
fi
test ! -e rootfs-nokey && echo "(no rootfs-nokey directory was created)"

say "cista image unpack --key ec.pem (decrypt, verify HMAC, digest and diff_id, safe unpack)"
"$CISTA" image unpack --key ec.pem oci:secret:app rootfs
find rootfs -type f | sort

say "running the app from the unpacked tree"
if [ "$(id -u)" = 0 ]; then
  APP_MODE=demo chroot rootfs /bin/sh /app/hello.sh
else
  (cd rootfs && sed 's#/app/#app/#' app/hello.sh | APP_MODE=demo bin/busybox sh)
fi
say "demo complete"
