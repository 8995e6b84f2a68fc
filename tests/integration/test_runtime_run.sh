#!/usr/bin/env bash
# test_runtime_run.sh - `cista run` end to end: encrypted images built at test time (busybox,
# redis, nginx, python), the embedded KBS on SQLite and swtpm started here on loopback, run
# confidentially with the sim and the tpm TEE and checked from outside (redis-cli, HTTP GET);
# the shared image store (and a host's symlink or tmpfs at ROOT/.images refused), the sandbox
# directory held by fd (a symlink or host directory at ROOT/ID refused), and read-only
# roots on a read-only bind of it (or the overlay when a secret file, CAP_SYS_ADMIN or a mount
# point missing from the image rules the bind out);
# refusals (policy hash not bound, tampered layer, wrong key, KBS denies, image not in the
# policy, command and env not allowed, exec/logs/signals denied) and escape regressions
# (CVE-2019-5736, CVE-2024-21626).
# Usage: tests/integration/test_runtime_run.sh [path/to/cista]   (root; run from the repo root)
set -uo pipefail
CISTA=${1:-build/src/cli/cista}
case $CISTA in /*) ;; *) CISTA=$PWD/$CISTA ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
# CISTA_TEST_DELEGATE=crun (a name or a path) runs the containers through that delegate OCI
# runtime: each runtime configuration the test writes names it ("runtime"). Unset: the
# configuration's default, runc.
DELEGATE=${CISTA_TEST_DELEGATE:-runc}
with_delegate() { # FILE: add "runtime": $CISTA_TEST_DELEGATE to a runtime configuration
  [ -z "${CISTA_TEST_DELEGATE:-}" ] && return 0
  local d='{}'
  [ -s "$1" ] && d=$(cat "$1")
  jq -c --arg r "$CISTA_TEST_DELEGATE" '.runtime = $r' <<<"$d" >"$1"
}
if [ "$(id -u)" != 0 ]; then echo "1..0 # SKIP needs root (mounts, runc)"; exit 0; fi
for t in "$DELEGATE" umoci redis-server redis-cli nginx python3; do
  command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed"; exit 0; }
done

TMP=$(mktemp -d /tmp/cista-rt-run.XXXXXX)
ROOT=$TMP/state
SWTPM_PID= KBS_PID=
cleanup() {
  local id
  for id in "$ROOT"/*; do [ -d "$id" ] && "$CISTA" -q --root "$ROOT" rm -f "${id##*/}" >/dev/null 2>&1; done
  [ -n "$KBS_PID" ] && { kill "$KBS_PID" 2>/dev/null; wait "$KBS_PID" 2>/dev/null; }
  [ -n "${TLS_KBS_PID:-}" ] && { kill "$TLS_KBS_PID" 2>/dev/null; wait "$TLS_KBS_PID" 2>/dev/null; }
  [ -n "$SWTPM_PID" ] && { kill "$SWTPM_PID" 2>/dev/null; wait "$SWTPM_PID" 2>/dev/null; }
  grep -o " ${TMP}[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$TMP" /tmp/cista-cve-21626-canary
}
trap cleanup EXIT
. "$HERE/rt_lib.sh"
# `cista` calls without a configuration of their own use the chosen delegate too
if [ -n "${CISTA_TEST_DELEGATE:-}" ]; then
  with_delegate "$TMP/delegate.json"
  export CISTA_RUNTIME_CONFIG=$TMP/delegate.json
fi

if ! rt_setup bb redis nginx python >"$TMP/setup.log" 2>&1; then
  echo "not ok 1 - setup (images, sim, swtpm, KBS)"; diag "$TMP/setup.log"; exit 1
fi
ok "setup: 4 encrypted images, sim, swtpm, KBS on $KBS_URL"
C=("$CISTA" --root "$ROOT")
CISTA_SHA=$(sha256sum "$CISTA" | cut -c1-64)
DELEGATE_SHA=$(sha256sum "$(command -v "$DELEGATE")" | cut -c1-64)
TEES=(sim)
[ -n "$TCTI" ] && { TEES+=(tpm); export CISTA_TPM_TCTI=$TCTI; }

# ---- busybox: output, secret from the KBS, claims ----
for tee in "${TEES[@]}"; do
  "${C[@]}" run --rm --json --tee "$tee" --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" \
    "oci:$TMP/enc/bb:1" >"$TMP/bb-$tee.out" 2>"$TMP/bb-$tee.err"
  rc=$?
  if [ $rc = 0 ] && grep -q "hello from bb" "$TMP/bb-$tee.out" &&
    grep -q "s3cr3t-greeting-from-the-kbs" "$TMP/bb-$tee.out"; then
    ok "bb/$tee: runs, prints, reads the secret released by the KBS"
  else not_ok "bb/$tee (exit $rc)"; diag "$TMP/bb-$tee.err"; fi
  sed -n '/^{/,$p' "$TMP/bb-$tee.out" >"$TMP/bb-$tee.json"
  check "bb/$tee: claims from the KBS token name TEE $tee, key source kbs" python3 -c "
import json,sys; d=json.load(open('$TMP/bb-$tee.json'))
ev=d['claims']['submods']['cpu0']['ear.veraison.annotated-evidence']
assert d['key_source']=='kbs' and d['tee']=='$tee' and ev['tee']=='$tee' and d['exit_code']==0"
done
if [ -n "$TCTI" ]; then
  H=$(policy_hash "$TMP/bb.policy.json")
  check "tpm: the policy hash was extended into PCR 23 (event log)" \
    grep -q "\"digest\":\"$H\"" "$CISTA_TPM_EVENTLOG"
fi
check "nothing left under the state root after --rm" bash -c "[ -z \"\$(ls '$ROOT')\" ] && ! grep -q ' $ROOT' /proc/mounts"

# the policy pins its KBS: the host cannot point the TEE at another broker or at local keys
expect_refused "a KBS other than the one the policy pins is refused (rule kbs)" "rule kbs" \
  "${C[@]}" run --rm --tee sim --kbs "http://127.0.0.1:9" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
expect_refused "the development key source with a policy that pins a KBS is refused (rule kbs)" "rule kbs" \
  "${C[@]}" run --rm --tee sim --key-file "$TMP/image-key.pem" \
  --secret-file "kbs:///default/app/greeting=$TMP/greeting.txt" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bb:1" "$TMP/bbdev.policy.json" \
  --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
check "policy gen --kbs pins the broker in the policy" bash -c \
  "grep -q '\"kbs\":{\"url\":\"$KBS_URL\"}' '$TMP/bb.policy.json' && ! grep -q '\"kbs\"' '$TMP/bbdev.policy.json'"
kbs_refvals
"${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bbdev.policy.json" "oci:$TMP/enc/bb:1" >"$TMP/nopin.out" 2>&1
check "  ... and runs, warning that the policy pins no KBS" grep -q "pins no KBS" "$TMP/nopin.out"
# a pinned HTTPS KBS: the TEE trusts the policy's CA, never the host's (runtime config kbs_cert)
mkdir -p "$TMP/pki" && (
  cd "$TMP/pki" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
      -subj /CN=pin-ca -days 2 &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr \
      -subj /CN=127.0.0.1 &&
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf &&
    openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 \
      -extfile ext.cnf &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key \
      -out other.pem -subj /CN=host-ca -days 2
) >/dev/null 2>&1
TLS_PORT=$(free_port)
jq --arg c "$TMP/pki/tls.pem" --arg k "$TMP/pki/tls.key" '.tls = {cert: $c, key: $k}' \
  "$TMP/kbs/kbs.json" >"$TMP/kbs/tls.json"
"$CISTA" kbs serve --config "$TMP/kbs/tls.json" --listen "127.0.0.1:$TLS_PORT" >"$TMP/kbs-tls.log" 2>&1 &
TLS_KBS_PID=$!
wait_port "$TLS_PORT" 50
TLS_URL=https://127.0.0.1:$TLS_PORT
KBS_URL=$TLS_URL policy "oci:$TMP/enc/bb:1" "$TMP/bbtls.policy.json" --kbs-ca "$TMP/pki/ca.pem" \
  --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
KBS_URL=$TLS_URL policy "oci:$TMP/enc/bb:1" "$TMP/bbtlsx.policy.json" --kbs-ca "$TMP/pki/other.pem" \
  --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
kbs_refvals
echo "{\"kbs_cert\":\"$TMP/pki/other.pem\"}" >"$TMP/hostca.json"
with_delegate "$TMP/hostca.json"
check "pinned HTTPS KBS with the policy's CA: runs, though the host's kbs_cert is another CA" bash -c \
  "'$CISTA' -q --root '$ROOT' run --rm --config '$TMP/hostca.json' --tee sim --kbs '$TLS_URL' \
     --policy '$TMP/bbtls.policy.json' 'oci:$TMP/enc/bb:1' 2>&1 | grep -q s3cr3t-greeting"
echo "{\"kbs_cert\":\"$TMP/pki/ca.pem\"}" >"$TMP/hostca2.json"
with_delegate "$TMP/hostca2.json"
expect_refused "a policy pinning another CA is refused though the host's kbs_cert would verify" "certificate" \
  "${C[@]}" run --rm --config "$TMP/hostca2.json" --tee sim --kbs "$TLS_URL" \
  --policy "$TMP/bbtlsx.policy.json" "oci:$TMP/enc/bb:1"
# development key source (a policy that pins no KBS)
"${C[@]}" run --rm --tee sim --key-file "$TMP/image-key.pem" \
  --secret-file "kbs:///default/app/greeting=$TMP/greeting.txt" --policy "$TMP/bbdev.policy.json" \
  "oci:$TMP/enc/bb:1" >"$TMP/dev.out" 2>&1
check "dev key source (--key-file/--secret-file) runs and says DEVELOPMENT loudly" \
  bash -c "grep -q 'hello from bb' '$TMP/dev.out' && grep -q 'DEVELOPMENT' '$TMP/dev.out'"

# ---- redis, nginx, python: detached, host network, checked from outside ----
app_up() { # NAME TEE PORT
  "${C[@]}" -q run -d --name "$1-$2" --network host --tee "$2" --kbs "$KBS_URL" \
    --policy "$TMP/$1.policy.json" "oci:$TMP/enc/$1:1" >"$TMP/$1-$2.run" 2>&1 && wait_port "$3" 100
}
for tee in "${TEES[@]}"; do
  if app_up redis "$tee" "$REDIS_PORT"; then
    r=$(redis-cli -p "$REDIS_PORT" PING; redis-cli -p "$REDIS_PORT" SET k "v-$tee"; redis-cli -p "$REDIS_PORT" GET k)
    [ "$(echo $r)" = "PONG OK v-$tee" ] && ok "redis/$tee: PING/SET/GET over loopback" || not_ok "redis/$tee: got '$r'"
  else not_ok "redis/$tee did not come up"; diag "$TMP/redis-$tee.run"; fi
  check "redis/$tee: cista ps shows it running, confidential" bash -c \
    "'$CISTA' --root '$ROOT' ps --json | python3 -c 'import json,sys; l=[c for c in json.load(sys.stdin) if c[\"id\"]==\"redis-$tee\"]; assert l and l[0][\"status\"]==\"running\" and l[0][\"mode\"]==\"confidential\"'"
  check "redis/$tee: stop and rm" bash -c "'$CISTA' -q --root '$ROOT' stop -t 5 redis-$tee && '$CISTA' -q --root '$ROOT' rm redis-$tee"

  if app_up nginx "$tee" "$NGINX_PORT"; then
    check "nginx/$tee: HTTP GET" bash -c "http_get $NGINX_PORT | grep -q 'hello from nginx in a TEE'"
  else not_ok "nginx/$tee did not come up"; diag "$TMP/nginx-$tee.run"; fi
  "${C[@]}" -q rm -f "nginx-$tee" >/dev/null 2>&1

  if app_up python "$tee" "$PY_PORT"; then
    check "python/$tee: HTTP GET; the app reads the injected secret file" bash -c \
      "http_get $PY_PORT | grep -q 'secret-sha-len=29'"
  else not_ok "python/$tee did not come up"; diag "$TMP/python-$tee.run"; fi
  "${C[@]}" -q rm -f "python-$tee" >/dev/null 2>&1
done

# ---- the secret file layout: mode 0400 in the rootfs on the sandbox tmpfs ----
policy "oci:$TMP/enc/bb:1" "$TMP/bbx.policy.json" --allow-exec '["/bin/stat","-c","%a %u %s","/run/secrets/greeting"]' \
  --allow-exec '["/bin/true"]' --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
build_bb "$TMP/img/bbs" 1 /bin/sleep 300 && mkdir -p "$TMP/enc/bbs" &&
  "$CISTA" -q image pack --encrypt "jwe:$TMP/image-pub.pem" "oci:$TMP/img/bbs:1" "oci:$TMP/enc/bbs:1" >/dev/null
kbs_put default/image-key/bbs "$TMP/image-key.pem"
policy "oci:$TMP/enc/bbs:1" "$TMP/bbs.policy.json" --allow-exec '["/bin/stat","-c","%a %u %s","/run/secrets/greeting"]' \
  --allow-exec '["/bin/true"]' --secret "bbs:kbs:///default/app/greeting=/run/secrets/greeting"
# a secret file where a mount goes (here /dev/shm, one of cista's own) would be hidden by it
policy "oci:$TMP/enc/bb:1" "$TMP/bbh.policy.json" --secret "bb:kbs:///default/app/greeting=/dev/shm/greeting"
kbs_refvals
"${C[@]}" -q run -d --name s1 --tee sim --kbs "$KBS_URL" --policy "$TMP/bbs.policy.json" "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/s1.err"
check "exec allowed by the policy: the secret file is 0400, uid 0, 29 bytes" bash -c \
  "[ \"\$('$CISTA' -q --root '$ROOT' exec s1 /bin/stat -c '%a %u %s' /run/secrets/greeting)\" = '400 0 29' ]"
check "the sandbox is a tmpfs; its rootfs holds the plaintext, the state dir does not" bash -c \
  "[ \"\$(stat -f -c %T '$ROOT/s1/tee')\" = tmpfs ] && ! grep -rqs s3cr3t '$ROOT/s1/state.json'"
expect_refused "exec of a command not in the policy is refused (rule exec)" "rule exec" \
  "${C[@]}" exec s1 /bin/sh -c id
expect_refused "exec with an extra env variable is refused (rule process.env)" "process.env" \
  "${C[@]}" exec -e LD_PRELOAD=/tmp/x.so s1 /bin/true
expect_refused "signal not in the policy (SIGHUP) is refused (rule signals)" "rule signals" \
  "${C[@]}" kill s1 HUP
check "the sandbox tmpfs is kept out of swap (noswap, or a warning on kernels before 6.4)" bash -c \
  "grep ' $ROOT/s1/tee tmpfs ' /proc/mounts | grep -q noswap || grep -q 'no tmpfs noswap' '$TMP/s1.err'"
# kubelet's in-place resize and CPU manager reach the runtime as `update --resources`
upd_pids() {
  local pid cg f
  pid=$(cat "$ROOT/s1/init.pid")
  printf '{"pids":{"limit":321}}' | "${C[@]}" -q update --resources - s1 || return 1
  cg=$(awk -F: '$2 == "pids" {print $3}' /proc/$pid/cgroup)
  if [ -n "$cg" ]; then f=/sys/fs/cgroup/pids$cg/pids.max; else f=/sys/fs/cgroup$(awk -F: '$1 == 0 {print $3}' /proc/$pid/cgroup)/pids.max; fi
  [ "$(cat "$f")" = 321 ]
}
check "update --resources: the container's cgroup limit changes (pids.max 321)" upd_pids
expect_fail "  ... of a container that does not exist: refused" "does not exist" \
  bash -c "echo '{}' | '$CISTA' -q --root '$ROOT' update --resources - nosuch"
expect_fail "exec --preserve-fds 1: refused with the reason, not silently dropped" "passes no descriptors" \
  "${C[@]}" exec --preserve-fds 1 s1 /bin/true
check "  ... --preserve-fds 0 (what podman may pass) is accepted" "${C[@]}" -q exec --preserve-fds 0 s1 /bin/true
mkdir -p "$TMP/fakebin" && printf '#!/bin/sh\ntouch %s/fake-delegate-ran\nexit 1\n' "$TMP" >"$TMP/fakebin/$DELEGATE" &&
  chmod +x "$TMP/fakebin/$DELEGATE"
check "the delegate is not looked up in the caller's PATH (a $DELEGATE put first there never runs)" bash -c \
  "PATH='$TMP/fakebin':\$PATH '$CISTA' -q --root '$ROOT' state s1 >/dev/null && [ ! -e '$TMP/fake-delegate-ran' ]"
# state.json is on the host's disk: edits that would bypass the agent are refused
cp "$ROOT/s1/state.json" "$TMP/s1.state"
python3 -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['mode']='plain'; json.dump(d,open(p,'w'))" "$ROOT/s1/state.json"
expect_refused "state.json edited to mode plain: exec is refused, not run past the policy" "altered" \
  "${C[@]}" exec s1 /bin/sh -c id
cp "$TMP/s1.state" "$ROOT/s1/state.json"
python3 -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['delegate']='/bin/echo'; json.dump(d,open(p,'w'))" "$ROOT/s1/state.json"
expect_refused "state.json naming another program as delegate: refused" "neither the configured" \
  "${C[@]}" kill s1 TERM
cp "$TMP/s1.state" "$ROOT/s1/state.json"
# the delegate cannot delete it (its state is damaged): rm -f kills the init before the state goes
S1_PID=$(cat "$ROOT/s1/init.pid")
check "the init's start time is recorded at create (a reused pid is not taken for it)" bash -c \
  "[ \"\$(cat '$ROOT/s1/init.start')\" = \"\$(awk '{print \$22}' /proc/$S1_PID/stat)\" ]"
for f in state.json status; do # runc's, crun's
  [ -e "$ROOT/s1/tee/runc/s1/$f" ] && echo garbage >"$ROOT/s1/tee/runc/s1/$f"
done
check "rm -f when the delegate fails: the container's init is killed, not orphaned" bash -c \
  "'$CISTA' -q --root '$ROOT' rm -f s1 && sleep 0.2 && ! kill -0 $S1_PID 2>/dev/null && [ ! -e '$ROOT/s1' ]"
"${C[@]}" -q rm -f s1 >/dev/null 2>&1

# ---- sandboxes of one image share one verified tree; what each writes stays its own ----
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/share.policy.json" --allow-exec '["/bin/sh","-c","echo mine >/etc/passwd"]' \
  --allow-exec '["/bin/cat","/etc/passwd"]'
kbs_refvals
for s in sh1 sh2; do
  "${C[@]}" -q run -d --name $s --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/$s.err"
done
check "two sandboxes of one image: one tree in the image store tmpfs, referenced twice" bash -c \
  "[ \"\$(stat -f -c %T '$ROOT/.images')\" = tmpfs ] && [ \$(ls -d '$ROOT'/.images/*/ | wc -l) = 1 ] &&
   [ \"\$(ls '$ROOT'/.images/*/refs | tr '\n' ' ')\" = 'sh1 sh2 ' ]"
check "each sandbox tmpfs holds only its own upper layer (< 256 kB; the tree is shared)" bash -c \
  "for s in sh1 sh2; do [ \$(df -k --output=used '$ROOT/'\$s/tee | tail -1) -lt 256 ] || exit 1; done"
"${C[@]}" -q exec sh1 /bin/sh -c 'echo mine >/etc/passwd' >/dev/null 2>&1
check "a write in one container is not seen by the other, nor in the shared tree" bash -c \
  "'$CISTA' -q --root '$ROOT' exec sh1 /bin/cat /etc/passwd | grep -qx mine &&
   '$CISTA' -q --root '$ROOT' exec sh2 /bin/cat /etc/passwd | grep -q '^root:' &&
   grep -q '^root:' '$ROOT'/.images/*/rootfs/etc/passwd"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/wrong-share.pem" 2>/dev/null
expect_refused "a shared tree does not stand in for the key: the wrong image key is refused" "no key matches" \
  "${C[@]}" run --rm --tee sim --key-file "$TMP/wrong-share.pem" --policy "$TMP/share.policy.json" "oci:$TMP/enc/bbs:1"
echo '{"version":"1.0.0","allOf":[{"claim":"tee","equals":"none"}]}' >"$TMP/deny-share.json"
kbs_policy default/image-key/bbs "$TMP/deny-share.json"
expect_refused "a shared tree does not stand in for the KBS: a denied image key is refused" "403|denied|not allowed|policy" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" "oci:$TMP/enc/bbs:1"
kbs_policy default/image-key/bbs "$TMP/release.json"
"${C[@]}" -q rm -f sh1 >/dev/null 2>&1
check "the tree stays while a sandbox uses it" bash -c "[ \"\$(ls '$ROOT'/.images/*/refs)\" = sh2 ]"
"${C[@]}" -q rm -f sh2 >/dev/null 2>&1
check "the last removal removes the tree and unmounts the store" bash -c \
  "[ -z \"\$(ls '$ROOT')\" ] && ! grep -q ' $ROOT' /proc/mounts"
echo '{"image_store":"private"}' >"$TMP/private.json"
with_delegate "$TMP/private.json"
"${C[@]}" -q run -d --config "$TMP/private.json" --name pv --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" \
  "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/pv.err"
check "image_store private: the sandbox tmpfs holds its own copy, no store is mounted" bash -c \
  "[ \$(df -k --output=used '$ROOT/pv/tee' | tail -1) -gt 512 ] && ! grep -q ' $ROOT/.images' /proc/mounts &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec pv /bin/cat /etc/passwd | head -1)\" = 'root:x:0:0:root:/root:/bin/sh' ]"
"${C[@]}" -q rm -f pv >/dev/null 2>&1

# ---- the image store is the tmpfs cista mounted at ROOT/.images, nothing the host put there ----
# The host (here: this script, root) makes a tree for the image's manifest whose /bin/cat and
# /bin/sleep are its own script, and offers it as the store: through a symlink to a tmpfs of its
# own, then as a tmpfs it mounts at ROOT/.images itself (as cista would: 0700, nodev, nosuid,
# private), then with a marker copied from a store cista made. Each start is refused (exit 3)
# and the host's script never runs; no tree of the host's is taken as the image's.
BBS_HEX=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "1") | .digest' \
  "$TMP/enc/bbs/index.json" | cut -d: -f2)
fake_tree() { # STORE: STORE/HEX/rootfs, busybox with the host's cat and sleep
  local r=$1/$BBS_HEX/rootfs b
  mkdir -p "$1/$BBS_HEX/refs" && base_rootfs "$r" || return 1
  for b in cat sleep; do
    rm -f "$r/bin/$b" && printf '#!/bin/sh\necho HOST-BINARY-RAN\n' >"$r/bin/$b" && chmod 755 "$r/bin/$b"
  done
}
h3_start() { # NAME: start the image; its output and errors in $TMP/NAME.err
  "${C[@]}" run -d --name "$1" --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" \
    "oci:$TMP/enc/bbs:1" >"$TMP/$1.err" 2>&1
}
# NAME: refused with exit 3 and WORDS; the host's binary never ran; no sandbox, no reference left
h3_refused() {
  local rc=0
  h3_start "$1" || rc=$?
  [ "$rc" = 3 ] && grep -Eq -- "$2" "$TMP/$1.err" && [ ! -e "$ROOT/$1" ] &&
    ! "$CISTA" -q --root "$ROOT" exec "$1" /bin/cat /etc/passwd 2>&1 | grep -q HOST-BINARY-RAN &&
    ! grep -rqs HOST-BINARY-RAN "$TMP/$1.err" && ! ls "$3"/*/refs/"$1" >/dev/null 2>&1 ||
    { echo "exit $rc"; cat "$TMP/$1.err"; return 1; }
}
mkdir -p "$TMP/hostshm" && mount -t tmpfs -o mode=1777 tmpfs "$TMP/hostshm" && fake_tree "$TMP/hostshm/evil" &&
  ln -s "$TMP/hostshm/evil" "$ROOT/.images"
check "a symlink at ROOT/.images to a host tmpfs with a tree for the image: refused, the host's binary never runs" \
  h3_refused h3a "is not the image store cista mounted there: it is a symbolic link" "$TMP/hostshm/evil"
check "  ... nothing was mounted through the link and the host's tree was not touched" bash -c \
  "[ -L '$ROOT/.images' ] && ! grep -q ' $TMP/hostshm/evil' /proc/mounts &&
   [ -z \"\$(ls -A '$TMP/hostshm/evil/$BBS_HEX/refs')\" ] && [ ! -e '$TMP/hostshm/evil/.cista-store' ]"
rm -f "$ROOT/.images"
mkdir "$ROOT/.images" && mount -t tmpfs -o mode=0700,nodev,nosuid tmpfs "$ROOT/.images" &&
  mount --make-private "$ROOT/.images" && fake_tree "$ROOT/.images"
check "a tmpfs the host mounted at ROOT/.images (0700, nodev, nosuid) with a tree for the image: refused" \
  h3_refused h3b "is not the image store cista mounted there: it carries no marker" "$ROOT/.images"
# a bind of a directory of a host tmpfs, mounted over it
mount --bind "$TMP/hostshm/evil" "$ROOT/.images"
check "a bind of a host directory over it: refused" \
  h3_refused h3c "is not the image store cista mounted there: .*(mounted over another|bind of a directory)" "$ROOT/.images"
umount "$ROOT/.images"; umount "$ROOT/.images"; rmdir "$ROOT/.images"
# a marker copied from a store cista made does not fit another tmpfs
h3_start h3ok && cp "$ROOT/.images/.cista-store" "$TMP/marker"
"${C[@]}" -q rm -f h3ok >/dev/null 2>&1
check "  (cista's own store is back to normal: it started, wrote its marker and went with the last sandbox)" bash -c \
  "[ -s '$TMP/marker' ] && ! grep -q ' $ROOT/.images ' /proc/mounts && [ ! -e '$ROOT/.images' ]"
mkdir "$ROOT/.images" && mount -t tmpfs -o mode=0700,nodev,nosuid tmpfs "$ROOT/.images" &&
  mount --make-private "$ROOT/.images" && fake_tree "$ROOT/.images" && cp "$TMP/marker" "$ROOT/.images/.cista-store"
check "a host tmpfs carrying a copy of the marker of an earlier store: refused" \
  h3_refused h3d "its marker .cista-store names another tmpfs" "$ROOT/.images"
umount "$ROOT/.images"; rmdir "$ROOT/.images"; umount "$TMP/hostshm"

# ---- the sandbox directory ROOT/ID is held by its fd and checked, never followed ----
# The host renames a running sandbox's directory and puts a symlink to it, then a directory of
# its own holding copies of its files, in its place: exec, kill and delete refuse (exit 3) and act
# through nothing; the container runs on, its TEE tmpfs where cista mounted it. Put back, it is
# deleted as usual. A symlink at ROOT/ID before create is refused, nothing made or mounted
# through it. (A swap inside one create is covered by test_runtime's test_sandbox_tee_checked.)
"${C[@]}" -q run -d --name sd1 --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" \
  "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/sd1.err"
SD1_PID=$(cat "$ROOT/sd1/init.pid" 2>/dev/null)
mv "$ROOT/sd1" "$ROOT/sd1.moved" && ln -s "$ROOT/sd1.moved" "$ROOT/sd1"
expect_refused "ROOT/ID renamed and a symlink to it put in its place: exec is refused" "symbolic link" \
  "${C[@]}" exec sd1 /bin/cat /etc/passwd
expect_refused "  ... kill is refused" "symbolic link" "${C[@]}" kill sd1 KILL
expect_refused "  ... delete --force is refused" "symbolic link" "${C[@]}" delete --force sd1
check "  ... the container runs on, its tmpfs still mounted in the moved directory, the link left" bash -c \
  "[ -n '$SD1_PID' ] && kill -0 $SD1_PID && grep -q ' $ROOT/sd1.moved/tee ' /proc/mounts && [ -L '$ROOT/sd1' ]"
rm -f "$ROOT/sd1" && mkdir -p "$ROOT/sd1/tee" && cp "$ROOT/sd1.moved/state.json" "$ROOT/sd1/" &&
  cp "$ROOT/sd1.moved/tee/agent.json" "$ROOT/sd1.moved/tee/policy.json" "$ROOT/sd1/tee/"
expect_refused "a host directory at ROOT/ID with copies of the sandbox's state and policy: exec is refused" \
  "is not the tmpfs cista mounted there: it is a plain directory" "${C[@]}" exec sd1 /bin/cat /etc/passwd
rm -rf "$ROOT/sd1" && mv "$ROOT/sd1.moved" "$ROOT/sd1"
check "  ... put back, exec works and rm -f removes it all" bash -c \
  "'$CISTA' -q --root '$ROOT' exec sd1 /bin/cat /etc/passwd | grep -q '^root:' &&
   '$CISTA' -q --root '$ROOT' rm -f sd1 >/dev/null && sleep 0.2 &&
   ! ps -o stat= -p $SD1_PID | grep -qv '^Z' &&
   [ ! -e '$ROOT/sd1' ] &&
   ! grep -q ' $ROOT/sd1' /proc/mounts"
mkdir -p "$TMP/hostsb" && ln -s "$TMP/hostsb" "$ROOT/sd2"
expect_fail "a symlink at ROOT/ID before create: refused" "already exists|symbolic link" \
  "${C[@]}" run -d --name sd2 --tee sim --kbs "$KBS_URL" --policy "$TMP/share.policy.json" "oci:$TMP/enc/bbs:1"
check "  ... nothing was made in or mounted on the directory it points to" bash -c \
  "[ -z \"\$(ls -A '$TMP/hostsb')\" ] && ! grep -q ' $TMP/hostsb' /proc/mounts && [ -L '$ROOT/sd2' ]"
rm -f "$ROOT/sd2"

# ---- a read-only root: a read-only bind of the shared tree instead of the overlay ----
ro_exec=(--allow-exec '["/bin/cat","/etc/passwd"]' --allow-exec '["/bin/sh","-c","echo mine >/etc/passwd"]'
  --allow-exec '["/bin/sh","-c","echo tmp >/dev/shm/f && cat /dev/shm/f"]')
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/ro.policy.json" "${ro_exec[@]}"
policy_edit "$TMP/ro.policy.json" 'c["read_only_rootfs"] = True'
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/rosec.policy.json" "${ro_exec[@]}" \
  --allow-exec '["/bin/cat","/run/secrets/greeting"]' --secret "bbs:kbs:///default/app/greeting=/run/secrets/greeting"
policy_edit "$TMP/rosec.policy.json" 'c["read_only_rootfs"] = True'
# (the host asks for the read-only root here; tmpfs mounts at /tmp, in the image, and /scratch, not)
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/romnt.policy.json" \
  --allow-exec '["/bin/sh","-c","echo tmp >/tmp/f && cat /tmp/f"]' \
  --allow-exec '["/bin/sh","-c","echo tmp >/scratch/f && cat /scratch/f"]'
policy_edit "$TMP/romnt.policy.json" 'c["mounts"] += [{"destination": d, "type": "tmpfs",
  "source": {"exact": "tmpfs"}, "options": ["nosuid", "nodev", "size=1m"]} for d in ("/tmp", "/scratch")]'
cp "$TMP/romnt.policy.json" "$TMP/romnt-host.policy.json" # the host alone asks for the read-only root
policy_edit "$TMP/romnt.policy.json" 'c["read_only_rootfs"] = True'
kbs_refvals
# ro_bind ID: the sandbox's rootfs is the store's tmpfs bound read-only (no overlay) at a tree of
# the store, and the container's / is that same tree, read-only
ro_bind() {
  local fstype opts fsroot pid
  read -r fstype opts fsroot < <(findmnt -n -o FSTYPE,OPTIONS,FSROOT "$ROOT/$1/tee/rootfs") || return 1
  echo "$1: $fstype $opts $fsroot"
  [ "$fstype" = tmpfs ] && [[ ,$opts, == *,ro,*nosuid,*nodev,* ]] && [[ $fsroot == /*/rootfs ]] &&
    [ -d "$ROOT/.images$fsroot" ] && [ "$("$CISTA" -q --root "$ROOT" inspect "$1" | jq -r .rootfs)" = readonly-bind ] ||
    return 1
  pid=$(cat "$ROOT/$1/init.pid")
  grep " $fsroot / ro[, ]" "/proc/$pid/mountinfo" | grep -q ' - tmpfs '
}
for s in ro1 ro2; do
  "${C[@]}" --log-level info run -d --name $s --tee sim --kbs "$KBS_URL" --policy "$TMP/ro.policy.json" \
    "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/$s.err"
done
ro_bind_both() { ro_bind ro1 && ro_bind ro2 && grep -q 'read-only bind of the shared image tree' "$TMP/ro1.err"; }
check "read-only root: the rootfs is a read-only bind of the store's tree, also the container's / (no overlay)" \
  ro_bind_both
check "  ... and the sandbox tmpfs holds no copy and no upper layer" bash -c \
  "[ \$(df -k --output=used '$ROOT/ro1/tee' | tail -1) -lt 256 ] && [ ! -e '$ROOT/ro1/tee/upper' ]"
check "read-only root: the workload reads the image and writes a tmpfs mount (/dev/shm)" bash -c \
  "[ \"\$('$CISTA' -q --root '$ROOT' exec ro1 /bin/cat /etc/passwd | head -1)\" = 'root:x:0:0:root:/root:/bin/sh' ] &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec ro1 /bin/sh -c 'echo tmp >/dev/shm/f && cat /dev/shm/f')\" = tmp ]"
expect_fail "read-only root: a write to / in the container fails with EROFS" "Read-only file system" \
  "${C[@]}" exec ro1 /bin/sh -c 'echo mine >/etc/passwd'
check "  ... and the host side cannot write through the sandbox's rootfs either" bash -c \
  "out=\$(touch '$ROOT/ro1/tee/rootfs/x' 2>&1); [ \$? != 0 ] && [[ \$out == *'Read-only file system'* ]]"
check "two read-only-root containers share one tree; neither changed it for the other" bash -c \
  "[ \"\$(ls '$ROOT'/.images/*/refs | tr '\n' ' ')\" = 'ro1 ro2 ' ] &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec ro2 /bin/cat /etc/passwd | head -1)\" = 'root:x:0:0:root:/root:/bin/sh' ] &&
   grep -q '^root:' '$ROOT'/.images/*/rootfs/etc/passwd && [ ! -e '$ROOT'/.images/*/rootfs/x ]"
"${C[@]}" -q rm -f ro1 >/dev/null 2>&1
check "read-only root: rm drops one reference; the other container keeps the tree and runs" bash -c \
  "[ \"\$(ls '$ROOT'/.images/*/refs)\" = ro2 ] && ! grep -q ' $ROOT/ro1' /proc/mounts &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec ro2 /bin/cat /etc/passwd | head -1)\" = 'root:x:0:0:root:/root:/bin/sh' ]"
"${C[@]}" -q rm -f ro2 >/dev/null 2>&1
check "  ... and the last rm removes the tree and unmounts the store" bash -c \
  "[ -z \"\$(ls '$ROOT')\" ] && ! grep -q ' $ROOT' /proc/mounts"
# fallback: a secret file has to be written into the rootfs: the overlay, root still read-only
"${C[@]}" --log-level info run -d --name ros --tee sim --kbs "$KBS_URL" --policy "$TMP/rosec.policy.json" \
  "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/ros.err"
check "read-only root with a secret file: an overlay (logged why), the secret is there" bash -c \
  "[ \"\$(findmnt -n -o FSTYPE '$ROOT/ros/tee/rootfs')\" = overlay ] &&
   [ \"\$('$CISTA' -q --root '$ROOT' inspect ros | jq -r .rootfs)\" = overlay ] &&
   grep -q 'not a read-only bind: a secret is injected as a file' '$TMP/ros.err' &&
   '$CISTA' -q --root '$ROOT' exec ros /bin/cat /run/secrets/greeting | grep -q s3cr3t-greeting"
expect_fail "  ... and / is still read-only in the container (root.readonly)" "Read-only file system" \
  "${C[@]}" exec ros /bin/sh -c 'echo mine >/etc/passwd'
"${C[@]}" -q rm -f ros >/dev/null 2>&1
# fallback: CAP_SYS_ADMIN could remount the bind writable: the overlay, which takes the write
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/rocap.policy.json" --allow-exec '["/bin/sh","-c","echo mine >/etc/passwd"]' \
  --allow-exec '["/bin/busybox","mount","-o","remount,rw","/"]' --allow-exec '["/bin/cat","/etc/passwd"]'
policy_edit "$TMP/rocap.policy.json" 'c["read_only_rootfs"] = True
for s in ("bounding", "effective", "permitted"): c["capabilities"][s].append("CAP_SYS_ADMIN")'
kbs_refvals
"${C[@]}" --log-level info run -d --name rocap --tee sim --kbs "$KBS_URL" --policy "$TMP/rocap.policy.json" \
  "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/rocap.err"
"${C[@]}" -q exec rocap /bin/busybox mount -o remount,rw / >/dev/null 2>&1
"${C[@]}" -q exec rocap /bin/sh -c 'echo mine >/etc/passwd' >/dev/null 2>&1
check "read-only root with CAP_SYS_ADMIN: an overlay (logged why); remount,rw / writes only its upper layer" bash -c \
  "[ \"\$(findmnt -n -o FSTYPE '$ROOT/rocap/tee/rootfs')\" = overlay ] && grep -q 'not a read-only bind: the process has CAP_SYS_ADMIN' '$TMP/rocap.err' &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec rocap /bin/cat /etc/passwd)\" = mine ] && grep -q '^root:' '$ROOT'/.images/*/rootfs/etc/passwd"
"${C[@]}" -q rm -f rocap >/dev/null 2>&1
# fallback: a FIFO in the image would be one pipe between every container of the image on the bind
r=$TMP/rootfs-fifo; base_rootfs "$r"; mkfifo "$r/pipe"
make_image "$TMP/img/bbf" 1 "$r" "PATH=/bin" /bin/sleep 300; rm -rf "$r"
mkdir -p "$TMP/enc/bbf"
"$CISTA" -q image pack --encrypt "jwe:$TMP/image-pub.pem" "oci:$TMP/img/bbf:1" "oci:$TMP/enc/bbf:1" >/dev/null
kbs_put default/image-key/bbf "$TMP/image-key.pem"
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbf:1" "$TMP/bbf.policy.json"
policy_edit "$TMP/bbf.policy.json" 'c["read_only_rootfs"] = True'
kbs_refvals
"${C[@]}" --log-level info run -d --name rofifo --tee sim --kbs "$KBS_URL" --policy "$TMP/bbf.policy.json" \
  "oci:$TMP/enc/bbf:1" >/dev/null 2>"$TMP/rofifo.err"
check "read-only root, an image with a FIFO: the overlay (logged why), the answer kept with the tree" bash -c \
  "[ \"\$(findmnt -n -o FSTYPE '$ROOT/rofifo/tee/rootfs')\" = overlay ] &&
   grep -q 'not a read-only bind: the image holds a FIFO' '$TMP/rofifo.err' && [ \"\$(cat '$ROOT'/.images/*/special)\" = 1 ]"
"${C[@]}" -q rm -f rofifo >/dev/null 2>&1
# OCI bundles asking for a read-only root, with a tmpfs at DEST
ro_bundle() { # DIR DEST [POLICY]
  mkdir -p "$1" && (cd "$1" && rm -f config.json && runc spec) &&
    python3 - "$1/config.json" "$2" "${3:-$TMP/romnt.policy.json}" "$TMP/enc/bbs:1" "$KBS_URL" <<'EOF'
import json, sys, base64
p, dest, pol, img, kbs = sys.argv[1:]
d = json.load(open(p))
d["process"].update(terminal=False, args=[], env=[])
for s in ("ambient", "inheritable"):
    d["process"]["capabilities"][s] = []
d["root"]["readonly"] = True
d["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "size=1m"]})
d["annotations"] = {"io.cista.image": "oci:" + img, "io.cista.kbs": kbs, "io.cista.tee": "sim",
                    "io.cista.policy": base64.b64encode(open(pol, "rb").read()).decode()}
json.dump(d, open(p, "w"))
EOF
}
for m in tmp scratch hosttmp; do
  pol=$TMP/romnt.policy.json dest=/$m
  [ $m = hosttmp ] && pol=$TMP/romnt-host.policy.json dest=/tmp
  ro_bundle "$TMP/robundle-$m" "$dest" "$pol" &&
    "${C[@]}" --log-level info create --bundle "$TMP/robundle-$m" "rob-$m" </dev/null >/dev/null 2>"$TMP/rob-$m.err" &&
    "${C[@]}" -q start "rob-$m" </dev/null >/dev/null 2>>"$TMP/rob-$m.err" ||
    { echo "# rob-$m:"; grep -E "error|denied" "$TMP/rob-$m.err" | diag; }
done
rob_tmp() { ro_bind rob-tmp && [ "$("${C[@]}" -q exec rob-tmp /bin/sh -c 'echo tmp >/tmp/f && cat /tmp/f')" = tmp ]; }
check "OCI bundle with root.readonly and a tmpfs at /tmp (in the image): the read-only bind, runs" rob_tmp
check "  ... a tmpfs at /scratch (not in the image): the overlay (logged why), runs" bash -c \
  "[ \"\$(findmnt -n -o FSTYPE '$ROOT/rob-scratch/tee/rootfs')\" = overlay ] &&
   grep -q 'not a read-only bind: mount point \"/scratch\" is not in the image' '$TMP/rob-scratch.err' &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec rob-scratch /bin/sh -c 'echo tmp >/scratch/f && cat /scratch/f')\" = tmp ]"
check "  ... root.readonly asked by the host alone (the policy does not): the overlay, read-only" bash -c \
  "[ \"\$(findmnt -n -o FSTYPE '$ROOT/rob-hosttmp/tee/rootfs')\" = overlay ] &&
   grep -q 'the policy does not make the root read-only' '$TMP/rob-hosttmp.err' &&
   awk '\$5 == \"/\" {print \$6}' /proc/\$(cat '$ROOT/rob-hosttmp/init.pid')/mountinfo | grep -q '^ro' &&
   [ \"\$('$CISTA' -q --root '$ROOT' exec rob-hosttmp /bin/sh -c 'echo tmp >/tmp/f && cat /tmp/f')\" = tmp ]"
"${C[@]}" -q rm -f rob-tmp rob-scratch rob-hosttmp >/dev/null 2>&1
# containerd and podman name the pid file: delete --force still finds the init (kept in the state)
if ro_bundle "$TMP/robundle-pf" /tmp &&
  "${C[@]}" -q create --bundle "$TMP/robundle-pf" --pid-file "$TMP/pf.pid" rob-pf </dev/null >/dev/null 2>"$TMP/rob-pf.err" &&
  "${C[@]}" -q start rob-pf </dev/null >/dev/null 2>>"$TMP/rob-pf.err"; then
  PF_PID=$(cat "$TMP/pf.pid")
  check "create --pid-file: the init's pid and start time are kept in the state too" bash -c \
    "[ \"\$(cat '$ROOT/rob-pf/init.pid')\" = $PF_PID ] &&
     [ \"\$(cat '$ROOT/rob-pf/init.start')\" = \"\$(awk '{print \$22}' /proc/$PF_PID/stat)\" ]"
  for f in state.json status; do
    [ -e "$ROOT/rob-pf/tee/runc/rob-pf/$f" ] && echo garbage >"$ROOT/rob-pf/tee/runc/rob-pf/$f"
  done
  check "  ... its delegate state lost, delete --force kills that init" bash -c \
    "'$CISTA' -q --root '$ROOT' delete --force rob-pf && sleep 0.2 && ! kill -0 $PF_PID 2>/dev/null && [ ! -e '$ROOT/rob-pf' ]"
else
  not_ok "create --pid-file of a confidential bundle"; grep -E "error|denied" "$TMP/rob-pf.err" | diag
fi
check "  ... both removed: nothing left" bash -c "[ -z \"\$(ls '$ROOT')\" ] && ! grep -q ' $ROOT' /proc/mounts"

# ---- what a host config.json cannot do to a policy of uid 1000 without capabilities ----
# (the policy even allows a host bind at /dev/shm: cista's own tmpfs is there whatever it says)
POLICY_NO_KBS=1 policy "oci:$TMP/enc/bbs:1" "$TMP/hard.policy.json" --allow-exec '["/bin/cat","/proc/self/limits"]'
policy_edit "$TMP/hard.policy.json" 'c["process"]["user"] = {"uid": 1000, "gid": 1000, "additional_gids": []}
c["process"]["no_new_privileges"] = False
for s in c["capabilities"]: c["capabilities"][s] = []
c["mounts"].append({"destination": "/dev/shm", "type": "bind", "source": {"regex": "^/.*$"},
                    "options": ["rbind", "bind"], "read_only": False})'
kbs_refvals
mkdir -p "$TMP/hostshm" && echo host-side >"$TMP/hostshm/marker"
hard_bundle() { # DIR SECCOMP-JSON
  mkdir -p "$1" && (cd "$1" && rm -f config.json && runc spec) &&
    python3 - "$1/config.json" "$2" "$TMP/hard.policy.json" "$TMP/enc/bbs:1" "$KBS_URL" "$TMP/hostshm" <<'EOF2'
import json, sys, base64
p, sc, pol, img, kbs, shm = sys.argv[1:]
d = json.load(open(p))
d["process"].update(terminal=False, args=[], env=[], noNewPrivileges=False,
                    user={"uid": 1000, "gid": 1000})
for s in d["process"]["capabilities"]:
    d["process"]["capabilities"][s] = []
d["process"]["rlimits"].append({"type": "RLIMIT_CORE", "hard": 1048576, "soft": 1048576})
d["mounts"].append({"destination": "/dev/shm/", "type": "bind", "source": shm,
                    "options": ["rbind", "bind"]})
d["linux"]["seccomp"] = json.loads(sc)
d["annotations"] = {"io.cista.image": "oci:" + img, "io.cista.kbs": kbs, "io.cista.tee": "sim",
                    "io.cista.policy": base64.b64encode(open(pol, "rb").read()).decode()}
json.dump(d, open(p, "w"))
EOF2
}
hard_bundle "$TMP/hard-errno0" '{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["setuid","setgid",
  "setresuid","setresgid","setgroups","capset","prctl"],"action":"SCMP_ACT_ERRNO","errnoRet":0}]}'
expect_refused "a host seccomp filter answering setuid/capset with errno 0 (fake success) is refused" \
  "linux.seccomp.*errnoRet 0" "${C[@]}" create --bundle "$TMP/hard-errno0" hard0
check "  ... before anything was created or mounted" bash -c "[ ! -e '$ROOT/hard0' ] && ! grep -q ' $ROOT/hard0' /proc/mounts"
hard_bundle "$TMP/hard-ok" '{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["acct"],
  "action":"SCMP_ACT_ERRNO","errnoRet":1}]}'
"${C[@]}" --log-level info create --bundle "$TMP/hard-ok" hard1 </dev/null >/dev/null 2>"$TMP/hard1.err" &&
  "${C[@]}" -q start hard1 </dev/null >/dev/null 2>>"$TMP/hard1.err" || diag "$TMP/hard1.err"
HARD_PID=$(cat "$ROOT/hard1/init.pid" 2>/dev/null)
check "a seccomp filter that only denies (EPERM) passes: the workload is uid 1000 without capabilities" bash -c \
  "grep -Eq '^Uid:\s+1000\s' /proc/$HARD_PID/status && grep -Eq '^CapEff:\s+0+$' /proc/$HARD_PID/status &&
   grep -Eq '^Seccomp:\s+2' /proc/$HARD_PID/status"
hard_shm() { # /dev/shm of the init: cista's tmpfs "shm", without the host directory's file
  local mi
  mi=$(awk '$5 == "/dev/shm"' "/proc/$HARD_PID/mountinfo") && echo "$mi" &&
    [[ $mi == *" - tmpfs shm "* ]] && [ ! -e "/proc/$HARD_PID/root/dev/shm/marker" ] &&
    grep -q 'dropping the host.s mount at "/dev/shm/"' "$TMP/hard1.err"
}
check "the host's \"/dev/shm/\" bind is dropped: /dev/shm is cista's tmpfs, not the host directory" hard_shm
check "RLIMIT_CORE is 0 whatever the host asks (1 MiB here): no core dump leaves the TEE" bash -c \
  "grep -Eq '^Max core file size\s+0\s+0\s' /proc/$HARD_PID/limits"
check "  ... nor of a process exec'd into the container" bash -c \
  "'$CISTA' -q --root '$ROOT' exec hard1 /bin/cat /proc/self/limits | grep -Eq '^Max core file size\s+0\s+0\s'"
"${C[@]}" -q rm -f hard1 >/dev/null 2>&1

# The delegate recorded at create drives every later verb, whatever configuration a caller reads.
OTHER=$([ "$(basename "$DELEGATE")" = crun ] && echo runc || echo crun)
if command -v "$OTHER" >/dev/null; then
  echo "{\"runtime\":\"$OTHER\"}" >"$TMP/other.json"
  "${C[@]}" -q run -d --config "$TMP/other.json" --name od --tee sim --kbs "$KBS_URL" \
    --policy "$TMP/share.policy.json" "oci:$TMP/enc/bbs:1" >/dev/null 2>"$TMP/od.err"
  OD_PID=$("${C[@]}" state od 2>/dev/null | jq -r .pid)
  D=(env -u CISTA_RUNTIME_CONFIG "$CISTA" -q --root "$ROOT")
  check "created by $OTHER: state under the default configuration asks $OTHER (running)" bash -c \
    "[ \"\$(\"\$@\" state od | jq -r .status)\" = running ]" _ "${D[@]}"
  check "... exec too" bash -c \
    "[ \"\$(\"\$@\" exec od /bin/cat /etc/passwd | head -1)\" = 'root:x:0:0:root:/root:/bin/sh' ]" _ "${D[@]}"
  # (dead: gone, or a zombie until whoever inherited it reaps it)
  check "... and rm -f stops and removes it" bash -c \
    "\"\$@\" rm -f od && [ ! -e '$ROOT/od' ] && [ -n '$OD_PID' ] &&
     { ! kill -0 '$OD_PID' 2>/dev/null || ps -o stat= -p '$OD_PID' | grep -q '^Z'; }" _ "${D[@]}"
  "${C[@]}" -q rm -f od >/dev/null 2>&1
else
  ok "delegate recorded at create # SKIP $OTHER is not installed"
fi

# CVE-2019-5736: the container hunts for the runtime's /proc/PID/exe while we exec into it
policy "oci:$TMP/enc/bbs:1" "$TMP/cve.policy.json" --allow-exec '["/bin/true"]'
build_bb "$TMP/img/cve" 1 /bin/sh -c \
  'while :; do for p in /proc/[0-9]*/exe /proc/self/exe; do { echo pwned >>"$p"; } 2>/dev/null; done; done' &&
  mkdir -p "$TMP/enc/cve" && "$CISTA" -q image pack --encrypt "jwe:$TMP/image-pub.pem" "oci:$TMP/img/cve:1" "oci:$TMP/enc/cve:1" >/dev/null
kbs_put default/image-key/cve "$TMP/image-key.pem"
policy "oci:$TMP/enc/cve:1" "$TMP/cve.policy.json" --allow-exec '["/bin/true"]'
kbs_refvals
"${C[@]}" -q run -d --name cve --tee sim --kbs "$KBS_URL" --policy "$TMP/cve.policy.json" "oci:$TMP/enc/cve:1" >/dev/null 2>&1
for i in 1 2 3 4 5 6 7 8; do "${C[@]}" -q exec cve /bin/true >/dev/null 2>&1; done
"${C[@]}" -q rm -f cve >/dev/null 2>&1
check "CVE-2019-5736: cista and $DELEGATE binaries unchanged after the container attacked /proc/*/exe" bash -c \
  "[ \"\$(sha256sum '$CISTA' | cut -c1-64)\" = $CISTA_SHA ] && [ \"\$(sha256sum \"\$(command -v '$DELEGATE')\" | cut -c1-64)\" = $DELEGATE_SHA ]"

# ---- logs denied ----
policy "oci:$TMP/enc/bb:1" "$TMP/nologs.policy.json" --deny-logs --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
kbs_refvals
"${C[@]}" run -d --name nl --tee sim --kbs "$KBS_URL" --policy "$TMP/nologs.policy.json" "oci:$TMP/enc/bb:1" >/dev/null 2>&1
sleep 0.3
expect_refused "logs denied by the policy: cista logs refuses (rule logs)" "rule logs" "${C[@]}" logs nl
check "logs denied: the output stayed in the sandbox tmpfs, not in the host state" bash -c \
  "grep -q 'hello from bb' '$ROOT/nl/tee/container.log' && ! grep -rqs 'hello from bb' '$ROOT/nl/state.json'"
python3 -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['logs']=True; json.dump(d,open(p,'w'))" "$ROOT/nl/state.json"
check "  ... state.json edited to allow logs: inspect (what cista run streams on) still says no" bash -c \
  "[ \"\$('$CISTA' -q --root '$ROOT' inspect nl | jq .logs)\" = false ]"
"${C[@]}" -q rm -f nl >/dev/null 2>&1

# ---- refusals before anything of the image runs ----
runs_nothing() { [ -z "$(ls "$ROOT")" ] && ! grep -q " $ROOT" /proc/mounts; }
OTHER=$(printf 'ab%.0s' $(seq 32))
expect_refused "policy hash not the one bound at launch: refused" "bound at launch" \
  "${C[@]}" run --rm --tee sim --policy-hash "$OTHER" --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
check "  ... and nothing was created or mounted" runs_nothing
expect_refused "a secret file under a mount point is refused (it would be hidden)" "hidden by the mount" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bbh.policy.json" "oci:$TMP/enc/bb:1"
check "  ... and nothing was created or mounted" runs_nothing
if [ -n "$TCTI" ]; then
  expect_refused "tpm: policy hash not the one bound at launch: refused" "bound at launch" \
    "${C[@]}" run --rm --tee tpm --policy-hash "$OTHER" --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
fi
expect_refused "a command not in the policy is refused (rule process.args)" "process.args" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1" -- /bin/sh -c 'cat /run/secrets/greeting >/dev/tcp'
expect_refused "env injection is refused (rule process.env)" "process.env" \
  "${C[@]}" run --rm --tee sim -e LD_PRELOAD=/tmp/evil.so --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
expect_refused "an image not in the policy is refused (rule image)" "rule image" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" --image-key kbs:///default/image-key/bb "oci:$TMP/enc/redis:1"
cp -r "$TMP/enc/bb" "$TMP/enc/bbt"
blob=$(python3 -c "import json;m=json.load(open('$TMP/enc/bbt/index.json'))['manifests'][0]['digest'].split(':')[1];l=json.load(open('$TMP/enc/bbt/blobs/sha256/'+m))['layers'][0]['digest'].split(':')[1];print(l)")
python3 - "$TMP/enc/bbt/blobs/sha256/$blob" <<'EOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(bytes(b))
EOF
expect_refused "a tampered layer is refused" "modified or corrupted|HMAC" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" --image-key kbs:///default/image-key/bb "oci:$TMP/enc/bbt:1"
check "  ... and nothing was created or mounted" runs_nothing
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/wrong-key.pem" 2>/dev/null
expect_refused "the wrong image key is refused" "key" \
  "${C[@]}" run --rm --tee sim --key-file "$TMP/wrong-key.pem" --secret-file "kbs:///default/app/greeting=$TMP/greeting.txt" \
  --policy "$TMP/bbdev.policy.json" "oci:$TMP/enc/bb:1"
echo "{\"version\":\"1.0.0\",\"allOf\":[{\"claim\":\"host_data\",\"equals\":\"$OTHER\"}]}" >"$TMP/deny.json"
kbs_policy default/image-key/bb "$TMP/deny.json"
expect_refused "the KBS denies the image key (release policy): refused" "403|denied|not allowed|policy" \
  "${C[@]}" run --rm --tee sim --kbs "$KBS_URL" --policy "$TMP/bb.policy.json" "oci:$TMP/enc/bb:1"
check "  ... and nothing was created or mounted" runs_nothing
kbs_policy default/image-key/bb "$TMP/release.json"

# ---- OCI verbs: a bundle requesting cwd through a leaked fd (CVE-2024-21626) ----
mkdir -p "$TMP/bundle/rootfs" && (cd "$TMP/bundle" && runc spec)
python3 - "$TMP/bundle/config.json" "$TMP/bbdev.policy.json" "$TMP/enc/bb:1" <<'EOF'
import json, sys, base64
p = sys.argv[1]; d = json.load(open(p))
d["process"]["terminal"] = False
d["process"]["args"] = []
d["process"]["cwd"] = "/proc/self/fd/7"
d["annotations"] = {"io.cista.image": "oci:" + sys.argv[3],
                    "io.cista.policy": base64.b64encode(open(sys.argv[2], "rb").read()).decode(),
                    "io.cista.tee": "sim"}
json.dump(d, open(p, "w"))
EOF
printf '{"tee":"sim","dev_key_files":["%s"],"dev_secrets":{"kbs:///default/app/greeting":"%s"}}' \
  "$TMP/image-key.pem" "$TMP/greeting.txt" >"$TMP/rt.json"
with_delegate "$TMP/rt.json"
expect_refused "CVE-2024-21626: confidential bundle with cwd /proc/self/fd/7 is refused (rule process.cwd)" "process.cwd" \
  env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" create --bundle "$TMP/bundle" cwdfd
cp -a "$TMP/img/bb" "$TMP/plainimg" && umoci unpack --image "$TMP/plainimg:1" "$TMP/pb" >/dev/null 2>&1
python3 - "$TMP/pb/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["process"]["terminal"] = False
d["process"]["args"] = ["/bin/sh", "-c", "echo x > ../../../../../tmp/cista-cve-21626-canary; ls /proc/self/fd"]
json.dump(d, open(p, "w"))
EOF
expect_refused "a plain bundle is refused unless the configuration allows plain containers" "allow_plain" \
  env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" create --bundle "$TMP/pb" plain0
# a pod's sandbox (pause) container runs plain without allow_plain, but confined: no binds (the
# state root holds every sandbox's TEE memory), no capabilities, its own pid namespace
cp -a "$TMP/pb" "$TMP/podsb"
python3 - "$TMP/podsb/config.json" "$ROOT" <<'EOF'
import json, sys
p, root = sys.argv[1:]; d = json.load(open(p))
d["annotations"] = {"io.kubernetes.cri.container-type": "sandbox"}
d["process"]["args"] = ["/bin/sleep", "30"]
d["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
d["mounts"].append({"destination": "/store", "type": "bind", "source": root, "options": ["rbind"]})
json.dump(d, open(p, "w"))
EOF
if env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" -q create --bundle "$TMP/podsb" podsb >/dev/null 2>"$TMP/podsb.err"; then
  check "a pod sandbox bundle runs plain without allow_plain, its bind of the state root dropped, no capabilities" python3 -c "
import json
d = json.load(open('$ROOT/podsb/bundle/config.json'))
assert not [m for m in d['mounts'] if m['destination'] == '/store'], 'bind kept'
assert all(v == [] for v in d['process']['capabilities'].values()), 'capabilities kept'
assert d['process']['noNewPrivileges'] is True
assert any(n['type'] == 'pid' and 'path' not in n for n in d['linux']['namespaces'])"
else
  not_ok "a pod sandbox bundle runs plain without allow_plain"; diag <"$TMP/podsb.err"
fi
env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" -q delete --force podsb >/dev/null 2>&1
python3 - "$TMP/podsb/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["linux"]["namespaces"] = [n for n in d["linux"]["namespaces"] if n["type"] != "pid"] + [{"type": "pid", "path": "/proc/1/ns/pid"}]
json.dump(d, open(p, "w"))
EOF
expect_refused "  ... one that would join the host's pid namespace is refused" "pid namespace at /proc/1/ns/pid" \
  env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" create --bundle "$TMP/podsb" podsb2
mkfifo "$TMP/fifo-bundle-config" && mkdir -p "$TMP/fifob" && ln -sf "$TMP/fifo-bundle-config" "$TMP/fifob/config.json"
expect_fail "a bundle whose config.json is a FIFO is refused at once (no hang)" "not a regular file" \
  timeout 10 env CISTA_RUNTIME_CONFIG="$TMP/rt.json" "${C[@]}" create --bundle "$TMP/fifob" fifob
echo '{"allow_plain":true}' >"$TMP/plain.json"
with_delegate "$TMP/plain.json"
# rlimits are uint64 in the OCI spec: unlimited (2^64-1, `--ulimit x=-1`) is accepted and never
# written back as -1 (runc refuses that)
cp -a "$TMP/pb" "$TMP/pbul"
python3 - "$TMP/pbul/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
d["process"]["cwd"] = "/"
d["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 18446744073709551615, "soft": 18446744073709551615}]
json.dump(d, open(p, "w"))
EOF
check "a plain bundle with an unlimited rlimit (2^64-1) is created, and no -1 is written for it" bash -c \
  "CISTA_RUNTIME_CONFIG='$TMP/plain.json' '$CISTA' -q --root '$ROOT' create --bundle '$TMP/pbul' pbul &&
   python3 -c \"import json; r = json.load(open('$ROOT/pbul/bundle/config.json'))['process']['rlimits']; assert r and all(x['hard'] >= 0 and x['soft'] >= 0 for x in r), r\""
CISTA_RUNTIME_CONFIG=$TMP/plain.json "${C[@]}" -q delete --force pbul >/dev/null 2>&1
leaks=0
exec 7<"$TMP" 8</ 9</proc
for fd in 3 4 5 6 7 8 9; do
  python3 - "$TMP/pb/config.json" "$fd" <<'EOF'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["process"]["cwd"] = "/proc/self/fd/" + sys.argv[2]
json.dump(d, open(p, "w"))
EOF
  if CISTA_RUNTIME_CONFIG=$TMP/plain.json "${C[@]}" -q create --bundle "$TMP/pb" "p$fd" >/dev/null 2>&1; then
    CISTA_RUNTIME_CONFIG=$TMP/plain.json "${C[@]}" -q start "p$fd" >/dev/null 2>&1
    sleep 0.2
  fi
  CISTA_RUNTIME_CONFIG=$TMP/plain.json "${C[@]}" -q delete --force "p$fd" >/dev/null 2>&1
  [ -e /tmp/cista-cve-21626-canary ] && leaks=$((leaks + 1))
done
exec 7<&- 8<&- 9<&-
[ $leaks = 0 ] && ok "CVE-2024-21626: plain bundles with cwd /proc/self/fd/3..9 (host fds open in the caller) never reach the host" ||
  not_ok "CVE-2024-21626: the container wrote outside its rootfs ($leaks times)"

echo "1..$n"
[ $failed = 0 ]
