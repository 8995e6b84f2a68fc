#!/usr/bin/env bash
# test_runtime_podman.sh - cista as podman's OCI runtime (`podman --runtime`, driven through
# conmon) with temporary storage, cgroupfs, the file events backend and no podman network
# (netns none; host network for the servers, which needs no netavark). Encrypted images run
# guest-pull style from the io.cista.* annotations with the sim and tpm TEE and keys from the
# KBS; redis/nginx/python checked from outside; exec, logs and env refusals.
# Usage: tests/integration/test_runtime_podman.sh [path/to/cista]   (root)
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
for t in podman conmon "$DELEGATE" umoci redis-server redis-cli nginx python3; do
  command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed"; exit 0; }
done

TMP=$(mktemp -d /tmp/cista-rt-pd.XXXXXX)
PD=$TMP/pd
SWTPM_PID= KBS_PID=
P=()
cleanup() {
  if [ ${#P[@]} -gt 0 ]; then
    "${P[@]}" rm -af -t 0 >/dev/null 2>&1
  fi
  [ -n "$KBS_PID" ] && { kill "$KBS_PID" 2>/dev/null; wait "$KBS_PID" 2>/dev/null; }
  [ -n "$SWTPM_PID" ] && { kill "$SWTPM_PID" 2>/dev/null; wait "$SWTPM_PID" 2>/dev/null; }
  grep -o " ${TMP}[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$TMP"
  # podman's cgroupfs parents (rmdir fails harmlessly while another podman uses them)
  local d
  for d in /sys/fs/cgroup/*/libpod_parent; do
    [ -d "$d" ] && { rmdir "$d"/* 2>/dev/null; rmdir "$d" 2>/dev/null; }
  done
}
trap cleanup EXIT
. "$HERE/rt_lib.sh"

if ! rt_setup bb redis nginx python >"$TMP/setup.log" 2>&1; then
  echo "not ok 1 - setup"; diag "$TMP/setup.log"; exit 1
fi
# podman adds a bind of its /run/.containerenv marker: the owner allows it in the policy
for app in bb redis nginx python; do
  cp "$TMP/$app.policy.json" "$TMP/$app.podman.policy.json"
  policy_edit "$TMP/$app.podman.policy.json" 'c["mounts"].append({"destination":"/run/.containerenv","type":"bind","source":{"regex":"^/.+/\\.containerenv$"},"options":["bind","rprivate"],"read_only":False})'
done
policy "oci:$TMP/enc/bb:1" "$TMP/nologs.policy.json" --deny-logs --secret "bb:kbs:///default/app/greeting=/run/secrets/greeting"
policy_edit "$TMP/nologs.policy.json" 'c["mounts"].append({"destination":"/run/.containerenv","type":"bind","source":{"regex":"^/.+/\\.containerenv$"},"options":["bind","rprivate"],"read_only":False})'
kbs_refvals
printf '{"tee":"sim","sim_state_dir":"%s","tpm_tcti":"%s","tpm_eventlog":"%s"}\n' \
  "$CISTA_SIM_DIR" "$TCTI" "$TMP/tpm-eventlog.jsonl" >"$TMP/rt.json"
with_delegate "$TMP/rt.json"
mkdir -p "$PD" "$TMP/empty"
cat >"$PD/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CISTA_RUNTIME_CONFIG=$TMP/rt.json"]
EOF
export CONTAINERS_CONF=$PD/containers.conf
# podman itself runs the runtime's start, kill and delete, with an environment of its own (only
# conmon passes conmon_env_vars): with the knob set, a wrapper gives them the configuration too,
# as /etc/cista/runtime.json would on a real host, so that every call uses the same delegate
PD_RUNTIME=$CISTA
if [ -n "${CISTA_TEST_DELEGATE:-}" ]; then
  mkdir -p "$TMP/rtbin"
  printf '#!/bin/sh\nCISTA_RUNTIME_CONFIG=%s exec %s "$@"\n' "$TMP/rt.json" "$CISTA" >"$TMP/rtbin/cista"
  chmod +x "$TMP/rtbin/cista"
  PD_RUNTIME=$TMP/rtbin/cista
fi
P=(podman --root "$PD/root" --runroot "$PD/run" --tmpdir "$PD/tmp" --runtime "$PD_RUNTIME")
ok "setup: KBS, swtpm, podman with temporary storage"

ann() { # APP TEE [POLICY]
  echo --annotation "io.cista.image=oci:$TMP/enc/$1:1" \
    --annotation "io.cista.policy=$(base64 -w0 "${3:-$TMP/$1.podman.policy.json}")" \
    --annotation "io.cista.kbs=$KBS_URL" --annotation "io.cista.tee=$2"
}
TEES=(sim); [ -n "$TCTI" ] && TEES+=(tpm)
for tee in "${TEES[@]}"; do
  # shellcheck disable=SC2046
  timeout 60 "${P[@]}" run --rm --network none $(ann bb "$tee") --rootfs "$TMP/empty" \
    /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id' >"$TMP/bb-$tee.out" 2>&1
  rc=$?
  if [ $rc = 0 ] && grep -q "hello from bb" "$TMP/bb-$tee.out" && grep -q "s3cr3t-greeting-from-the-kbs" "$TMP/bb-$tee.out"; then
    ok "podman/bb/$tee: runs, prints, reads the KBS secret"
  else not_ok "podman/bb/$tee (exit $rc)"; diag "$TMP/bb-$tee.out"; fi

  # shellcheck disable=SC2046
  "${P[@]}" run -d --name "redis-$tee" --network host $(ann redis "$tee") --rootfs "$TMP/empty" \
    /usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly no \
    --protected-mode no --dir /tmp >"$TMP/redis-$tee.out" 2>&1
  if wait_port "$REDIS_PORT" 100; then
    r=$(redis-cli -p "$REDIS_PORT" PING; redis-cli -p "$REDIS_PORT" SET k "v-$tee"; redis-cli -p "$REDIS_PORT" GET k)
    [ "$(echo $r)" = "PONG OK v-$tee" ] && ok "podman/redis/$tee: PING/SET/GET over loopback" || not_ok "podman/redis/$tee: '$r'"
  else not_ok "podman/redis/$tee did not come up"; diag "$TMP/redis-$tee.out"; fi
  expect_fail "podman/redis/$tee: exec of a command not in the policy is refused (rule exec)" "rule exec" \
    "${P[@]}" exec "redis-$tee" /bin/sh -c id
  check "podman/redis/$tee: podman stop and rm" bash -c "$(printf '%q ' "${P[@]}") stop -t 5 redis-$tee >/dev/null && $(printf '%q ' "${P[@]}") rm redis-$tee >/dev/null"

  for app in nginx python; do
    port=$NGINX_PORT; word="hello from nginx"; args=(/usr/sbin/nginx -c /etc/nginx/nginx.conf)
    [ $app = python ] && { port=$PY_PORT; word="secret-sha-len=29"; args=(/usr/bin/python3 -S /app/server.py "$PY_PORT"); }
    # shellcheck disable=SC2046
    "${P[@]}" run -d --name "$app-$tee" --network host $(ann $app "$tee") --rootfs "$TMP/empty" "${args[@]}" >"$TMP/$app-$tee.out" 2>&1
    if wait_port "$port" 100; then
      check "podman/$app/$tee: HTTP GET" bash -c "http_get $port | grep -q '$word'"
    else not_ok "podman/$app/$tee did not come up"; diag "$TMP/$app-$tee.out"; fi
    "${P[@]}" rm -f -t 0 "$app-$tee" >/dev/null 2>&1
  done
done

# logs denied: the output never reaches conmon's log on the host
# shellcheck disable=SC2046
"${P[@]}" run --name nl --network none $(ann bb sim "$TMP/nologs.policy.json") --rootfs "$TMP/empty" \
  /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id' >"$TMP/nl.out" 2>&1
check "podman: policy without logs: the secret and output never reach podman (run, logs)" bash -c \
  "! grep -q 's3cr3t\|hello from bb' '$TMP/nl.out' && ! $(printf '%q ' "${P[@]}") logs nl 2>&1 | grep -q 'hello from bb'"
"${P[@]}" rm -f nl >/dev/null 2>&1

# refusals
# shellcheck disable=SC2046
expect_fail "podman: env injection is refused (rule process.env)" "process.env" \
  "${P[@]}" run --rm --network none -e LD_PRELOAD=/x.so $(ann bb sim) --rootfs "$TMP/empty" \
  /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id'
# shellcheck disable=SC2046
expect_fail "podman: a launch-bound policy hash that differs is refused" "bound at launch" \
  "${P[@]}" run --rm --network none $(ann bb sim) --annotation "io.cista.policy-hash=$(printf 'ab%.0s' $(seq 32))" \
  --rootfs "$TMP/empty" /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id'
# shellcheck disable=SC2046
expect_fail "podman: without the owner's .containerenv rule the policy refuses podman's extra mount" \
  "containerenv" "${P[@]}" run --rm --network none $(ann bb sim "$TMP/bb.policy.json") --rootfs "$TMP/empty" \
  /bin/sh -c 'echo hello from bb; cat /run/secrets/greeting; echo; id'

echo "1..$n"
[ $failed = 0 ]
