#!/usr/bin/env bash
# The cista demo: a full confidential run on the embedded defaults.
#
#   1. the workload owner builds an image, encrypts it to their key, and writes a policy that
#      pins the image, its command and a secret;
#   2. the key broker (embedded KBS on SQLite, loopback) gets the image key and the secret,
#      reference values that accept this policy's hash, and a release policy;
#   3. `cista run` in the (INSECURE, development) sim TEE: the policy hash is bound to the TEE,
#      the runtime attests to the KBS with an ephemeral key, receives the image key and the
#      secret wrapped to that key, decrypts and verifies the image into the sandbox's memory,
#      and starts the app only as the policy allows; the app prints, using the secret;
#   4. the attestation claims the KBS saw, a refusal (a command the policy does not allow), and
#      the KBS audit log.
# Needs root (mounts, runc), umoci, busybox-static. Usage: scripts/demo.sh [path/to/cista]
set -euo pipefail
CISTA=${1:-build/src/cli/cista}
CISTA=$(realpath "$CISTA")
WORK=$(mktemp -d /tmp/cista-demo.XXXXXX)
KBS_PID=
cleanup() {
  local id
  for id in "$WORK"/state/*; do [ -d "$id" ] && { "$CISTA" -q --root "$WORK/state" rm -f "${id##*/}" >/dev/null 2>&1 || true; }; done
  [ -n "$KBS_PID" ] && kill "$KBS_PID" 2>/dev/null && wait "$KBS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
if [ "$(id -u)" != 0 ]; then echo "demo: run as root (the runtime mounts the sandbox and runs runc)" >&2; exit 1; fi
export CISTA_SIM_DIR=$WORK/sim CISTA_LOG_LEVEL=error

say "owner: building an app image from local files (busybox-static + a shell app) with umoci"
umoci init --layout plain >/dev/null
umoci new --image plain:app >/dev/null
umoci unpack --image plain:app bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/app bundle/rootfs/proc bundle/rootfs/dev bundle/rootfs/sys
cp /bin/busybox bundle/rootfs/bin/busybox
ln -s busybox bundle/rootfs/bin/sh
cat > bundle/rootfs/app/hello.sh <<'APP'
read -r token < /run/secrets/api-token
echo "hello from a confidential container ($APP_MODE)"
echo "the API token I received has ${#token} characters and starts with ${token%${token#???}}..."
APP
umoci repack --image plain:app bundle >/dev/null
umoci config --image plain:app --config.entrypoint /bin/sh --config.cmd /app/hello.sh \
  --config.env APP_MODE=demo --config.env PATH=/bin >/dev/null
rm -rf bundle

say "owner: encrypting it (ocicrypt JWE to the owner's key) and writing the policy"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out image-key.pem 2>/dev/null
openssl pkey -in image-key.pem -pubout -out image-pub.pem
"$CISTA" -q image pack --encrypt jwe:image-pub.pem oci:plain:app oci:app:1 >/dev/null
# the broker's address is part of the policy: keys and secrets come from it only
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CISTA" policy gen --image oci:app:1 --secret 'app:kbs:///default/token/api=/run/secrets/api-token' \
  --kbs "http://127.0.0.1:$PORT" -o policy.json
HASH=$("$CISTA" policy hash --json policy.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"])')

say "broker: cista kbs init + serve (SQLite, loopback), resources, reference values, release policy"
"$CISTA" -q sim init >/dev/null 2>&1
"$CISTA" -q kbs init --dir kbs >/dev/null
python3 - kbs/kbs.json "$WORK/sim/platform-pub.pem" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); d["sim_platform_keys"] = [sys.argv[2]]; json.dump(d, open(sys.argv[1], "w"))
EOF
"$CISTA" kbs serve --config kbs/kbs.json --listen "127.0.0.1:$PORT" >kbs.log 2>&1 &
KBS_PID=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
export CISTA_KBS_URL=http://127.0.0.1:$PORT CISTA_KBS_ADMIN_KEY=$WORK/kbs/admin-key.pem
"$CISTA" -q kbs admin --file image-key.pem put-resource default/image-key/app
"$CISTA" -q kbs admin --value "tok-7f3a9c2e51d84b06" put-resource default/token/api
echo "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true,\"host_data\":[\"$HASH\"]}}}" >refvals.json
"$CISTA" -q kbs admin set-reference-values refvals.json
echo "{\"version\":\"1.0.0\",\"allOf\":[{\"claim\":\"host_data\",\"equals\":\"$HASH\"}]}" >release.json
"$CISTA" -q kbs admin set-policy release.json
echo "KBS on $CISTA_KBS_URL: image key and API token stored; released only to a TEE bound to policy $HASH"

say "node: cista run --kbs $CISTA_KBS_URL --policy policy.json --tee sim oci:app:1"
"$CISTA" --root "$WORK/state" run --rm --json --kbs "$CISTA_KBS_URL" --policy policy.json --tee sim \
  oci:app:1 >run.out
sed '/^{/,$d' run.out
sed -n '/^{/,$p' run.out >run.json

say "what the KBS verified before releasing anything (claims from its attestation token)"
python3 - run.json <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["claims"]["submods"]["cpu0"]
a = ev["ear.veraison.annotated-evidence"]
print(f"  tee                 {a['tee']} (insecure: {a['insecure']})")
print(f"  appraisal           {ev['ear.status']}")
print(f"  host_data (policy)  {a['host_data']}")
print(f"  tee-pubkey          {a['runtime_data_claims']['tee-pubkey']['crv']} ephemeral key, x={a['runtime_data_claims']['tee-pubkey']['x'][:16]}...")
print(f"  policy sha256       {d['policy_sha256']}")
t = d["timings_ms"]
print(f"  launch timings (ms) bind {t['bind']:.1f}, attest {t['attest']:.1f}, keys {t['keys']:.1f}, decrypt+unpack {t['unpack']:.1f}, config {t['config']:.1f}")
print(f"  exit code           {d['exit_code']}")
EOF

say "a command the policy does not allow is refused before anything runs"
if "$CISTA" --root "$WORK/state" run --rm --kbs "$CISTA_KBS_URL" --policy policy.json --tee sim \
  oci:app:1 -- /bin/sh -c 'cat /run/secrets/api-token' 2>&1 | grep 'error'; then :; fi

say "the KBS audit log (a hash chain keyed by the master key)"
"$CISTA" kbs admin audit 2>/dev/null | tail -n 6 || true
say "demo complete"
