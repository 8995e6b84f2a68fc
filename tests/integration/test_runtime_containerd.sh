#!/usr/bin/env bash
# test_runtime_containerd.sh - cista as the runc binary of containerd's io.containerd.runc.v2
# shim (`ctr run --runc-binary`), with a private containerd (temp root/state/config/socket,
# CRI off) started and stopped here by pid. Encrypted images (busybox, redis, nginx, python)
# are imported as OCI archives (containerd holds them as an untrusted registry would; they are
# never unpacked on the host) and run guest-pull style from the io.cista.* annotations, with the
# sim and the tpm TEE, keys from the KBS; checked from outside; exec/signal denials; a wrong
# launch-bound policy hash and a plain bundle refused.
# Usage: tests/integration/test_runtime_containerd.sh [path/to/cista]   (root)
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
if [ "$(id -u)" != 0 ]; then echo "1..0 # SKIP needs root"; exit 0; fi
for t in containerd ctr "$DELEGATE" umoci redis-server redis-cli nginx python3; do
  command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed"; exit 0; }
done

TMP=$(mktemp -d /tmp/cista-rt-ctd.XXXXXX)
D=$TMP/ctd
SWTPM_PID= KBS_PID= CTD_PID=
cleanup() {
  if [ -n "$CTD_PID" ]; then
    local c
    for c in $(ctr -a "$D/containerd.sock" -n cista task ls -q 2>/dev/null); do
      ctr -a "$D/containerd.sock" -n cista task kill -s SIGKILL "$c" >/dev/null 2>&1; done
    sleep 0.3
    for c in $(ctr -a "$D/containerd.sock" -n cista c ls -q 2>/dev/null); do
      ctr -a "$D/containerd.sock" -n cista task rm -f "$c" >/dev/null 2>&1
      ctr -a "$D/containerd.sock" -n cista c rm "$c" >/dev/null 2>&1; done
    kill "$CTD_PID" 2>/dev/null; wait "$CTD_PID" 2>/dev/null
  fi
  local id
  for id in "$D"/runc/cista/*; do [ -d "$id" ] || continue; id=${id##*/}
    CISTA_RUNTIME_CONFIG=$TMP/rt.json "$CISTA" -q --root "$D/runc/cista" delete --force "$id" >/dev/null 2>&1; done
  [ -n "$KBS_PID" ] && { kill "$KBS_PID" 2>/dev/null; wait "$KBS_PID" 2>/dev/null; }
  [ -n "$SWTPM_PID" ] && { kill "$SWTPM_PID" 2>/dev/null; wait "$SWTPM_PID" 2>/dev/null; }
  grep -o " ${TMP}[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$TMP"
  rmdir /sys/fs/cgroup/*/cista 2>/dev/null
}
trap cleanup EXIT
. "$HERE/rt_lib.sh"

if ! rt_setup bb redis nginx python >"$TMP/setup.log" 2>&1; then
  echo "not ok 1 - setup"; diag "$TMP/setup.log"; exit 1
fi
printf '{"tee":"sim","sim_state_dir":"%s","tpm_tcti":"%s","tpm_eventlog":"%s"}\n' \
  "$CISTA_SIM_DIR" "$TCTI" "$TMP/tpm-eventlog.jsonl" >"$TMP/rt.json"
with_delegate "$TMP/rt.json"
mkdir -p "$D" "$TMP/empty"
cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"
EOF
CISTA_RUNTIME_CONFIG=$TMP/rt.json containerd --config "$D/config.toml" >"$D/log" 2>&1 &
CTD_PID=$!
for _ in $(seq 50); do [ -S "$D/containerd.sock" ] && break; sleep 0.1; done
CTR=(ctr -a "$D/containerd.sock" -n cista)
if "${CTR[@]}" version >/dev/null 2>&1; then ok "setup: KBS, swtpm, private containerd"; else
  not_ok "containerd did not start"; diag "$D/log"; exit 1; fi

for app in bb redis nginx python; do
  tar -C "$TMP/enc/$app" -cf "$TMP/$app.tar" .
  "${CTR[@]}" images import --no-unpack --index-name "cista.local/$app:1" "$TMP/$app.tar" >/dev/null 2>&1
done
check "the encrypted images are imported as OCI archives (not unpacked on the host)" bash -c \
  "[ \$(ctr -a '$D/containerd.sock' -n cista images ls -q | grep -c cista.local) = 4 ]"

TEES=(sim); [ -n "$TCTI" ] && TEES+=(tpm)
RUN=("${CTR[@]}" run --runc-binary "$CISTA" --runc-root "$D/runc")
ann() { # APP TEE [extra annotations]: the io.cista.* annotations of a confidential run
  echo --annotation "io.cista.image=oci-archive:$TMP/$1.tar" \
    --annotation "io.cista.policy=$(base64 -w0 "$TMP/$1.policy.json")" \
    --annotation "io.cista.kbs=$KBS_URL" --annotation "io.cista.tee=$2"
}

for tee in "${TEES[@]}"; do
  # shellcheck disable=SC2046
  timeout 60 "${RUN[@]}" --rm $(ann bb "$tee") --rootfs "$TMP/empty" "bb-$tee" >"$TMP/bb-$tee.out" 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q "hello from bb" "$TMP/bb-$tee.out" && grep -q "s3cr3t-greeting-from-the-kbs" "$TMP/bb-$tee.out"; then
    ok "ctr/bb/$tee: runs, prints, reads the KBS secret"
  else not_ok "ctr/bb/$tee (exit $rc)"; diag "$TMP/bb-$tee.out"; fi

  # shellcheck disable=SC2046
  "${RUN[@]}" -d --net-host $(ann redis "$tee") --rootfs "$TMP/empty" "redis-$tee" >"$TMP/redis-$tee.out" 2>&1
  if wait_port "$REDIS_PORT" 100; then
    r=$(redis-cli -p "$REDIS_PORT" PING; redis-cli -p "$REDIS_PORT" SET k "v-$tee"; redis-cli -p "$REDIS_PORT" GET k)
    [ "$(echo $r)" = "PONG OK v-$tee" ] && ok "ctr/redis/$tee: PING/SET/GET over loopback" || not_ok "ctr/redis/$tee: '$r'"
  else not_ok "ctr/redis/$tee did not come up"; diag "$TMP/redis-$tee.out"; fi
  check "ctr/redis/$tee: task is RUNNING under cista" bash -c \
    "ctr -a '$D/containerd.sock' -n cista task ls | grep redis-$tee | grep -q RUNNING"
  check "ctr/redis/$tee: pause and resume (the server answers again)" bash -c \
    "ctr -a '$D/containerd.sock' -n cista task pause redis-$tee && ctr -a '$D/containerd.sock' -n cista task ls | grep redis-$tee | grep -q PAUSED && ctr -a '$D/containerd.sock' -n cista task resume redis-$tee && [ \"\$(redis-cli -p $REDIS_PORT GET k)\" = v-$tee ]"
  expect_fail "ctr/redis/$tee: exec of a command not in the policy is refused (rule exec)" "rule exec" \
    "${CTR[@]}" task exec --exec-id e1 "redis-$tee" /bin/sh -c id
  expect_fail "ctr/redis/$tee: SIGHUP is refused (rule signals)" "rule signals" \
    "${CTR[@]}" task kill -s SIGHUP "redis-$tee"
  "${CTR[@]}" task kill -s SIGTERM "redis-$tee" >/dev/null 2>&1
  for _ in $(seq 50); do "${CTR[@]}" task ls | grep "redis-$tee" | grep -q STOPPED && break; sleep 0.1; done
  check "ctr/redis/$tee: SIGTERM (allowed) stops it; task rm and container rm clean up" bash -c \
    "ctr -a '$D/containerd.sock' -n cista task rm redis-$tee >/dev/null && ctr -a '$D/containerd.sock' -n cista c rm redis-$tee && [ ! -e '$D/runc/cista/redis-$tee' ]"

  for app in nginx python; do
    port=$NGINX_PORT; word="hello from nginx"
    [ $app = python ] && { port=$PY_PORT; word="secret-sha-len=29"; }
    # shellcheck disable=SC2046
    "${RUN[@]}" -d --net-host $(ann $app "$tee") --rootfs "$TMP/empty" "$app-$tee" >"$TMP/$app-$tee.out" 2>&1
    if wait_port "$port" 100; then
      check "ctr/$app/$tee: HTTP GET" bash -c "http_get $port | grep -q '$word'"
    else not_ok "ctr/$app/$tee did not come up"; diag "$TMP/$app-$tee.out"; fi
    "${CTR[@]}" task kill -s SIGKILL "$app-$tee" >/dev/null 2>&1
    for _ in $(seq 50); do "${CTR[@]}" task ls | grep "$app-$tee" | grep -q STOPPED && break; sleep 0.1; done
    "${CTR[@]}" task rm "$app-$tee" >/dev/null 2>&1; "${CTR[@]}" c rm "$app-$tee" >/dev/null 2>&1
  done
done

# a terminal (console socket passed through to the delegate)
# shellcheck disable=SC2046
script -qec "$(printf '%q ' "${RUN[@]}") --rm -t $(ann bb sim) --rootfs $TMP/empty tty1" /dev/null >"$TMP/tty.out" 2>&1
check "ctr run -t: the confidential container gets a terminal (console socket)" grep -q "hello from bb" "$TMP/tty.out"

# exec allowed by the policy
policy "oci:$TMP/enc/redis:1" "$TMP/redisx.policy.json" --allow-exec '["/usr/bin/redis-server","--version"]'
kbs_refvals
# shellcheck disable=SC2046
"${RUN[@]}" -d --net-host --annotation "io.cista.image=oci-archive:$TMP/redis.tar" \
  --annotation "io.cista.policy=$(base64 -w0 "$TMP/redisx.policy.json")" --annotation "io.cista.kbs=$KBS_URL" \
  --annotation io.cista.tee=sim --annotation io.cista.image-key=kbs:///default/image-key/redis \
  --rootfs "$TMP/empty" rx >/dev/null 2>&1
wait_port "$REDIS_PORT" 100
check "ctr task exec of a command the policy allows runs" bash -c \
  "ctr -a '$D/containerd.sock' -n cista task exec --exec-id e2 rx /usr/bin/redis-server --version | grep -q 'Redis server'"
# with a terminal: the delegate's exec gets containerd's console socket (script gives ctr a pty)
check "ctr task exec -t (console socket) of a command the policy allows runs" bash -c \
  "script -qec \"ctr -a '$D/containerd.sock' -n cista task exec -t --exec-id e3 rx /usr/bin/redis-server --version\" /dev/null </dev/null | grep -q 'Redis server'"
"${CTR[@]}" task kill -s SIGKILL rx >/dev/null 2>&1; sleep 0.3
"${CTR[@]}" task rm rx >/dev/null 2>&1; "${CTR[@]}" c rm rx >/dev/null 2>&1

# refusals
# shellcheck disable=SC2046
expect_fail "ctr: a launch-bound policy hash that differs is refused before anything runs" "bound at launch" \
  "${RUN[@]}" --rm $(ann bb sim) --annotation "io.cista.policy-hash=$(printf 'ab%.0s' $(seq 32))" --rootfs "$TMP/empty" neg1
expect_fail "ctr: a command not in the policy is refused" "process.args" \
  "${RUN[@]}" --rm $(ann bb sim) --rootfs "$TMP/empty" neg2 /bin/sh -c 'echo evil'
expect_fail "ctr: env injection is refused" "process.env" \
  "${RUN[@]}" --rm $(ann bb sim) --env LD_PRELOAD=/x.so --rootfs "$TMP/empty" neg3
expect_fail "ctr: a plain bundle is refused (allow_plain is off)" "allow_plain" \
  "${RUN[@]}" --rm --rootfs "$TMP/empty" neg4 /bin/true
check "ctr: no sandbox, mount or state left after the refusals" bash -c \
  "! grep -q ' $D/runc' /proc/mounts && [ -z \"\$(ls '$D/runc/cista' 2>/dev/null)\" ]"

echo "1..$n"
[ $failed = 0 ]
