#!/usr/bin/env bash
# test_runtime_volume.sh - encrypted volumes that a policy declares, mounted by the confidential
# runtime: a redis-server image built at test time from the host's redis-server, encrypted, run
# with the sim TEE through `cista run` (and through containerd's shim, `ctr run --runc-binary`,
# and podman through conmon, `podman --runtime`) with its data directory /data on a cista
# volume. The volume key is a KBS resource released after attestation, the rollback anchor a KBS
# counter (the embedded KBS on SQLite, started here on loopback). Checked: redis with AOF
# (appendfsync always) and RDB keeps its keys across containers, even after SIGKILL; the host's
# backing directory holds no plaintext; an older copy of the backing directory is refused (exit
# 3, rule volumes) before redis starts, "reset" starts over empty, a wrong key / a key the KBS
# denies / an undeclared volume / another mount point are refused; nothing stays mounted after
# delete. podman: the volume daemon survives conmon (and conmon being killed), goes with
# podman's cleanup (stop, restart, rm), and a directory still in use is refused naming its holder.
# Usage: tests/integration/test_runtime_volume.sh [path/to/cista]   (root; from the repo root)
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
if [ "$(id -u)" != 0 ]; then echo "1..0 # SKIP needs root (mounts, runc, FUSE)"; exit 0; fi
for t in "$DELEGATE" umoci redis-server redis-cli python3 fusermount3; do
  command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed"; exit 0; }
done
[ -c /dev/fuse ] || { echo "1..0 # SKIP no /dev/fuse"; exit 0; }

TMP=$(mktemp -d /tmp/cista-rt-vol.XXXXXX)
ROOT=$TMP/state
D=$TMP/ctd
PD=$TMP/pd
SWTPM_PID= KBS_PID= CTD_PID=
P=()
# volume daemons left behind by a failure: ours are the ones whose command line names $TMP
our_daemons() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q "volume mount $TMP/" && echo "${p#/proc/}"
  done
}
PR=/run/cista # podman's runtime calls: the default state root
pd_ours() { # the runtime's containers of this test's podman (their bundles are under $PD)
  local d
  for d in "$PR"/*; do grep -qs "\"bundle\": *\"$PD/" "$d/state.json" && echo "${d##*/}"; done
}
cleanup() {
  local id c p
  [ ${#P[@]} -gt 0 ] && "${P[@]}" rm -af -t 0 >/dev/null 2>&1
  if [ -n "$CTD_PID" ]; then
    for c in $(ctr -a "$D/containerd.sock" -n cista task ls -q 2>/dev/null); do
      ctr -a "$D/containerd.sock" -n cista task kill -s SIGKILL "$c" >/dev/null 2>&1; done
    sleep 0.3
    for c in $(ctr -a "$D/containerd.sock" -n cista c ls -q 2>/dev/null); do
      ctr -a "$D/containerd.sock" -n cista task rm -f "$c" >/dev/null 2>&1
      ctr -a "$D/containerd.sock" -n cista c rm "$c" >/dev/null 2>&1; done
    kill "$CTD_PID" 2>/dev/null; wait "$CTD_PID" 2>/dev/null
  fi
  for id in "$ROOT"/*; do [ -d "$id" ] && "$CISTA" -q --root "$ROOT" rm -f "${id##*/}" >/dev/null 2>&1; done
  for id in $(pd_ours); do "$CISTA" -q --root "$PR" delete --force "$id" >/dev/null 2>&1; done
  for id in "$D"/runc/cista/*; do [ -d "$id" ] || continue
    CISTA_RUNTIME_CONFIG=$TMP/rt.json "$CISTA" -q --root "$D/runc/cista" delete --force "${id##*/}" >/dev/null 2>&1; done
  [ -n "$KBS_PID" ] && { kill "$KBS_PID" 2>/dev/null; wait "$KBS_PID" 2>/dev/null; }
  [ -n "$SWTPM_PID" ] && { kill "$SWTPM_PID" 2>/dev/null; wait "$SWTPM_PID" 2>/dev/null; }
  grep -o " ${TMP}[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  for p in $(our_daemons); do kill -9 "$p" 2>/dev/null; done
  rm -rf "$TMP"
  rmdir /sys/fs/cgroup/*/cista 2>/dev/null
  # podman's cgroupfs parents (rmdir fails harmlessly while another podman uses them)
  for p in /sys/fs/cgroup/*/libpod_parent; do
    [ -d "$p" ] && { rmdir "$p"/* 2>/dev/null; rmdir "$p" 2>/dev/null; }
  done
}
trap cleanup EXIT
. "$HERE/rt_lib.sh"
# `cista` calls without a configuration of their own use the chosen delegate too
if [ -n "${CISTA_TEST_DELEGATE:-}" ]; then
  with_delegate "$TMP/delegate.json"
  export CISTA_RUNTIME_CONFIG=$TMP/delegate.json
fi
START=$(date +%s)

# ---- setup: keys, sim, KBS (no swtpm: this test is about volumes), the redis image ----
setup() {
  mkdir -p "$TMP/img" "$TMP/enc"
  make_keys || return 1
  export CISTA_SIM_DIR=$TMP/sim
  "$CISTA" -q sim init >/dev/null 2>&1 || return 1
  TCTI=
  start_kbs "sim_platform_keys=$TMP/sim/platform-pub.pem" || return 1
  REDIS_PORT=$(free_port)
  local r=$TMP/rootfs-redis
  base_rootfs "$r" && copy_bin "$r" /usr/bin/redis-server && mkdir -p "$r/data" || return 1
  REDIS_CMD=(/usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no --dir /data
    --appendonly yes --appendfsync always)
  make_image "$TMP/img/redisv" 1 "$r" "PATH=/usr/bin:/bin" "${REDIS_CMD[@]}" || return 1
  rm -rf "$r"
  mkdir -p "$TMP/enc/redisv"
  encrypt "$TMP/img/redisv" 1 "$TMP/enc/redisv" || return 1
  kbs_put default/image-key/redisv "$TMP/image-key.pem" || return 1
  # the volume keys: 32 raw bytes, and 64 hex digits (both forms are accepted)
  head -c 32 /dev/urandom >"$TMP/vkey.bin" && kbs_put default/volume-key/redis "$TMP/vkey.bin" || return 1
  head -c 32 /dev/urandom >"$TMP/other.bin" && kbs_put default/volume-key/other "$TMP/other.bin" || return 1
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/ckey.hex" && echo >>"$TMP/ckey.hex"
  kbs_put default/volume-key/ctd "$TMP/ckey.hex" || return 1
  head -c 32 /dev/urandom >"$TMP/pkey.bin" && kbs_put default/volume-key/pod "$TMP/pkey.bin" || return 1
  kbs_put default/volume-key/denied "$TMP/other.bin" || return 1
  # the rollback anchors: KBS counters the admin creates at generation 0
  "$CISTA" -q kbs admin counter-reset vol/anchor/redis >/dev/null || return 1
  "$CISTA" -q kbs admin counter-reset vol/anchor/ctd >/dev/null || return 1
  "$CISTA" -q kbs admin counter-reset vol/anchor/pod >/dev/null || return 1
  echo '{"version":"1.0.0","anyOf":[{"claim":"tee","equals":"sim"}]}' >"$TMP/release.json"
  kbs_policy "$TMP/release.json" || return 1
  OTHER=$(printf 'ab%.0s' $(seq 32))
  echo "{\"version\":\"1.0.0\",\"allOf\":[{\"claim\":\"host_data\",\"equals\":\"$OTHER\"}]}" >"$TMP/deny.json"
  kbs_policy default/volume-key/denied "$TMP/deny.json" || return 1
  local img="oci:$TMP/enc/redisv:1" k=kbs:///default/volume-key
  policy "$img" "$TMP/strict.policy.json" --volume "redisv:data=/data,key=$k/redis,anchor=kbs:///vol/anchor/redis" &&
    policy "$img" "$TMP/reset.policy.json" --volume "redisv:data=/data,key=$k/redis,anchor=kbs:///vol/anchor/redis,rollback=reset" &&
    policy "$img" "$TMP/wrongkey.policy.json" --volume "redisv:data=/data,key=$k/other,anchor=kbs:///vol/anchor/redis" &&
    policy "$img" "$TMP/denied.policy.json" --volume "redisv:data=/data,key=$k/denied" &&
    policy "$img" "$TMP/ctd.policy.json" --volume "redisv:data=/data,key=$k/ctd,anchor=kbs:///vol/anchor/ctd" &&
    policy "$img" "$TMP/pod.policy.json" --volume "redisv:data=/data,key=$k/pod,anchor=kbs:///vol/anchor/pod" || return 1
  # podman adds a bind of its /run/.containerenv marker: the owner allows it (test_runtime_podman.sh)
  policy_edit "$TMP/pod.policy.json" 'c["mounts"].append({"destination":"/run/.containerenv","type":"bind","source":{"regex":"^/.+/\\.containerenv$"},"options":["bind","rprivate"],"read_only":False})' || return 1
  vol_refvals
}
# reference values: sim (insecure, allowed here) with the launch-bound policy hashes only. The
# KBS rollback anchor attests with its own sim evidence carrying the same launch value (the
# runtime passes the policy hash to the volume daemon), so all-zero host data is NOT accepted.
vol_refvals() {
  local f hs=""
  for f in "$TMP"/*.policy.json; do hs="$hs\"$(policy_hash "$f")\","; done
  echo "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true,\"host_data\":[${hs%,}]}}}" >"$TMP/refvals.json"
  "$CISTA" -q kbs admin set-reference-values "$TMP/refvals.json" >/dev/null
}
if ! setup >"$TMP/setup.log" 2>&1; then
  echo "not ok 1 - setup (image, sim, KBS, volume keys, counters)"; diag "$TMP/setup.log"; exit 1
fi
ok "setup: encrypted redis image, sim, KBS on $KBS_URL, volume keys and anchor counters"
C=("$CISTA" --root "$ROOT")
BACK=$TMP/backing/redis
RC=(redis-cli -p "$REDIS_PORT")
# redis answers -LOADING until its data set is read: wait for PONG
wait_redis() { local i; for i in $(seq 100); do [ "$("${RC[@]}" PING 2>/dev/null)" = PONG ] && return 0; sleep 0.1; done; return 1; }
# no_plaintext DIR WORD...: none of the words in any file's data (holes skipped: the volume's
# objects are sparse, terabytes apparent) nor in a file name
no_plaintext() {
  python3 - "$@" <<'EOF2'
import os, sys
top, words = sys.argv[1], [w.encode() for w in sys.argv[2:]]
files = 0
for d, _, names in os.walk(top):
    for n in names:
        if any(w in n.encode() for w in words):
            sys.exit("plaintext in a file name: " + n)
        p = os.path.join(d, n); fd = os.open(p, os.O_RDONLY); off = 0; files += 1
        try:
            while True:
                try: off = os.lseek(fd, off, os.SEEK_DATA)
                except OSError: break
                end = os.lseek(fd, off, os.SEEK_HOLE)
                os.lseek(fd, off, os.SEEK_SET)
                data = os.read(fd, end - off)
                for w in words:
                    if w in data: sys.exit("found %r in %s" % (w, p))
                off = end
        finally:
            os.close(fd)
if files < 3: sys.exit("only %d files: nothing to check" % files)
EOF2
}
port_closed() { ! (exec 3<>/dev/tcp/127.0.0.1/"$REDIS_PORT") 2>/dev/null; }
nothing_left() { # NAME: no state, no mount under the state root, no volume daemon
  [ ! -e "$ROOT/$1" ] && ! grep -q " $ROOT" /proc/mounts && [ -z "$(our_daemons)" ]
}
never_ran() { port_closed && nothing_left "$1"; }
ctd_clean() { ! grep -q " $D/runc" /proc/mounts && [ -z "$(our_daemons)" ]; }
up() { # NAME POLICY [run options]: a detached run with /data on the volume
  local name=$1 pol=$2; shift 2
  "${C[@]}" -q run -d --name "$name" --network host --tee sim --kbs "$KBS_URL" \
    --policy "$TMP/$pol.policy.json" "$@" "oci:$TMP/enc/redisv:1" >"$TMP/$name.run" 2>&1 &&
    wait_port "$REDIS_PORT" 100 && wait_redis
}
counter() { "$CISTA" kbs admin counter-get "vol/anchor/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }

# ---- 1. a new volume: redis writes RDB and AOF to it ----
if up r1 strict --volume "data=$BACK"; then ok "run with --volume data=DIR: redis up, /data on a new volume"
else not_ok "redis with a volume did not come up"; diag "$TMP/r1.run"; fi
MNT=$ROOT/r1/tee/volumes/data
check "the volume is a FUSE mount on the sandbox tmpfs" bash -c \
  "grep -q ' $MNT fuse.cista ' /proc/mounts && [ \"\$(stat -f -c %T '$ROOT/r1/tee')\" = tmpfs ]"
r=$("${RC[@]}" SET k1 plaintext-one-4f1c; "${RC[@]}" SAVE; "${RC[@]}" SET k2 plaintext-two-9b2e)
check "SET k1, SAVE (RDB), SET k2 (AOF only) over loopback" [ "$(echo $r)" = "OK OK OK" ]
check "redis wrote dump.rdb and its AOF on the volume (seen through the mount)" bash -c \
  "[ -s '$MNT/dump.rdb' ] && ls '$MNT/appendonlydir' | grep -q 'incr.aof' && grep -rqs plaintext-two-9b2e '$MNT/appendonlydir'"
found() { ! no_plaintext "$@" >/dev/null 2>&1; }
check "the plaintext check finds the values where they are (on the mounted volume)" \
  found "$MNT" plaintext-two-9b2e
G1=$(counter redis)
check "fsync (appendfsync always) advanced the KBS anchor (generation $G1 > 0)" test "$G1" -gt 1
"${C[@]}" -q rm -f r1 >/dev/null 2>&1 # SIGKILL: no shutdown save, only what was fsync'ed
check "rm -f (SIGKILL): nothing left mounted, no volume daemon, no state" nothing_left r1
check "the host's backing directory holds ciphertext objects" bash -c \
  "[ \$(find '$BACK' -type f | wc -l) -ge 4 ] && [ \$(du -sk '$BACK' | cut -f1) -gt 8 ]"
check "... and no plaintext: not the values, not the RDB magic, not the AOF text" \
  no_plaintext "$BACK" plaintext-one plaintext-two REDIS appendonly SET

# ---- 2. a second container gets the keys back ----
if up r2 strict --volume "data=$BACK"; then
  r=$("${RC[@]}" GET k1; "${RC[@]}" GET k2)
  [ "$(echo $r)" = "plaintext-one-4f1c plaintext-two-9b2e" ] && ok "run again: k1 (RDB) and k2 (AOF after SIGKILL) are back" ||
    not_ok "run again: got '$r'"
else not_ok "second run did not come up"; diag "$TMP/r2.run"; fi
"${C[@]}" -q stop -t 5 r2 >/dev/null 2>&1
check "stop + rm: the final commit is durable and nothing stays mounted" bash -c \
  "'$CISTA' -q --root '$ROOT' rm r2 >/dev/null && [ ! -e '$ROOT/r2' ] && ! grep -q ' $ROOT' /proc/mounts"

# ---- foreground `run --rm`: SIGTERM to cista is forwarded, the volume goes with the container ----
"${C[@]}" -q run --rm --name fg --network host --tee sim --kbs "$KBS_URL" --policy "$TMP/strict.policy.json" \
  --volume "data=$BACK" "oci:$TMP/enc/redisv:1" >"$TMP/fg.out" 2>&1 &
FG=$!
if wait_port "$REDIS_PORT" 100 && wait_redis; then
  check "run --rm (foreground): SET over loopback" [ "$("${RC[@]}" SET kf foreground)" = OK ]
else not_ok "run --rm did not come up"; diag "$TMP/fg.out"; fi
kill -TERM "$FG" 2>/dev/null; wait "$FG" 2>/dev/null
check "run --rm: after SIGTERM, no state, no mount, no volume daemon" nothing_left fg

# ---- 3. rollback: an older copy of the backing directory is refused ----
cp -a "$BACK" "$TMP/back.old"
G_OLD=$(counter redis)
if up r3 strict --volume "data=$BACK"; then
  "${RC[@]}" SET k3 newer >/dev/null
  "${C[@]}" -q rm -f r3 >/dev/null 2>&1
fi
check "more writes moved the anchor on ($G_OLD -> $(counter redis))" test "$(counter redis)" -gt "$G_OLD"
mv "$BACK" "$TMP/back.new" && cp -a "$TMP/back.old" "$BACK"
expect_refused "the restored older copy is refused (exit 3, rollback detected, rule volumes)" \
  "rollback detected.*kbs:.*vol/anchor/redis" \
  "${C[@]}" run -d --name rb --network host --tee sim --kbs "$KBS_URL" --policy "$TMP/strict.policy.json" \
  --volume "data=$BACK" "oci:$TMP/enc/redisv:1"
check "  ... the log line names the rule" grep -q "refused before the container started: .*rule volumes" "$TMP/refused.out"
check "  ... redis never started, nothing was left behind" never_ran rb
rm -rf "$BACK" && mv "$TMP/back.new" "$BACK"
if up r4 strict --volume "data=$BACK"; then
  r=$("${RC[@]}" GET k3; "${RC[@]}" GET kf)
  [ "$(echo $r)" = "newer foreground" ] && ok "the newest copy mounts again and holds k3 (and kf from run --rm)" ||
    not_ok "newest copy: got '$r'"
else not_ok "the newest copy did not come up"; diag "$TMP/r4.run"; fi
"${C[@]}" -q rm -f r4 >/dev/null 2>&1

# ---- 4. rollback "reset": the older copy is wiped and redis starts empty ----
rm -rf "$BACK" && cp -a "$TMP/back.old" "$BACK"
if up r5 reset --volume "data=$BACK"; then
  r=$("${RC[@]}" DBSIZE)
  [ "$r" = 0 ] && ok "rollback reset: the volume starts over empty (DBSIZE 0)" || not_ok "reset: DBSIZE $r"
  "${RC[@]}" SET k5 after-reset >/dev/null
else not_ok "reset run did not come up"; diag "$TMP/r5.run"; fi
"${C[@]}" -q rm -f r5 >/dev/null 2>&1
if up r6 strict --volume "data=$BACK"; then
  [ "$("${RC[@]}" GET k5)" = after-reset ] && ok "after the reset, the anchor follows the new volume (strict mounts it)" ||
    not_ok "after reset: k5 missing"
else not_ok "strict after reset did not come up"; diag "$TMP/r6.run"; fi
"${C[@]}" -q rm -f r6 >/dev/null 2>&1

# ---- 5. refusals before anything of the image runs ----
vrun() { "${C[@]}" run -d --name "$1" --network host --tee sim --kbs "$KBS_URL" --policy "$TMP/$2.policy.json" "${@:3}" "oci:$TMP/enc/redisv:1"; }
expect_refused "a wrong key for the existing volume is refused (rule volumes)" "does not open the volume.*rule volumes" \
  vrun wk wrongkey --volume "data=$BACK"
check "  ... nothing left, redis never started" never_ran wk
expect_refused "a key the KBS refuses to release is refused (403, rule volumes)" "403|denied|not allowed" \
  vrun dn denied --volume "data=$TMP/backing/denied"
check "  ... the log names the key and the rule" grep -q "key kbs:///default/volume-key/denied was not released.*rule volumes" "$TMP/refused.out"
expect_refused "a volume at a mount point the policy does not declare is refused (rule volumes)" \
  "mounted at \"/data\" by its policy, not at \"/srv\".*rule volumes, field mount_point" \
  vrun mp strict --volume "data=$BACK:/srv"
expect_refused "a volume the policy does not declare is refused (rule volumes)" "not declared by the policy.*rule volumes" \
  vrun nd strict --volume "data=$BACK" --volume "scratch=$TMP/backing/scratch"
expect_refused "a declared volume without a backing directory is refused" "has no backing directory.*rule volumes" \
  vrun nb strict
check "  ... no state, mount or daemon after the refusals; no key-less backing dir was created" bash -c \
  "[ -z \"\$(ls '$ROOT')\" ] && ! grep -q ' $ROOT' /proc/mounts && [ ! -e '$TMP/backing/scratch' ] && [ ! -e '$TMP/backing/denied' ]"
check "every refusal was logged with its rule" bash -c "grep -q 'rule volumes' '$TMP/refused.out'"

# ---- 6. containerd: a bind mount at /data is the volume's backing directory ----
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
  printf '{"tee":"sim","sim_state_dir":"%s"}\n' "$CISTA_SIM_DIR" >"$TMP/rt.json"
  with_delegate "$TMP/rt.json"
  mkdir -p "$D" "$TMP/empty" "$TMP/backing/ctd"
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
  tar -C "$TMP/enc/redisv" -cf "$TMP/redisv.tar" .
  "${CTR[@]}" images import --no-unpack --index-name cista.local/redisv:1 "$TMP/redisv.tar" >/dev/null 2>&1
  ctd_up() { # NAME
    "${CTR[@]}" run --runc-binary "$CISTA" --runc-root "$D/runc" -d --net-host \
      --annotation "io.cista.image=oci-archive:$TMP/redisv.tar" \
      --annotation "io.cista.policy=$(base64 -w0 "$TMP/ctd.policy.json")" \
      --annotation "io.cista.kbs=$KBS_URL" --annotation io.cista.tee=sim \
      --mount "type=bind,src=$TMP/backing/ctd,dst=/data,options=rbind:rw" \
      --rootfs "$TMP/empty" "$1" >"$TMP/$1.out" 2>&1 && wait_port "$REDIS_PORT" 100 && wait_redis
  }
  ctd_down() { # NAME
    "${CTR[@]}" task kill -s SIGTERM "$1" >/dev/null 2>&1
    for _ in $(seq 50); do "${CTR[@]}" task ls | grep "$1" | grep -q STOPPED && break; sleep 0.1; done
    "${CTR[@]}" task rm "$1" >/dev/null 2>&1; "${CTR[@]}" c rm "$1" >/dev/null 2>&1
  }
  if ctd_up cv1; then
    check "ctr: a bind at /data becomes the volume (FUSE mount in the sandbox)" bash -c \
      "grep -q ' $D/runc/cista/cv1/tee/volumes/data fuse.cista ' /proc/mounts"
    check "ctr: SET over loopback" [ "$("${RC[@]}" SET kc value-through-containerd)" = OK ]
  else not_ok "ctr: redis with a volume did not come up"; diag "$TMP/cv1.out"; diag "$D/log"; fi
  ctd_down cv1
  check "ctr: task rm + c rm unmount the volume" bash -c "! grep -q ' $D/runc' /proc/mounts && [ -z \"\$(ls '$D/runc/cista' 2>/dev/null)\" ]"
  if ctd_up cv2; then
    r=$("${RC[@]}" GET kc)
    check "ctr: a second container reads the value back (hex key from the KBS; got $r)" \
      [ "$r" = value-through-containerd ]
  else not_ok "ctr: second container did not come up"; diag "$TMP/cv2.out"; fi
  ctd_down cv2
  check "ctr: the backing directory holds no plaintext" no_plaintext "$TMP/backing/ctd" value-through REDIS appendonly
  check "ctr: nothing stays mounted, no volume daemon" ctd_clean
else
  skip "ctr: containerd is not installed" "no containerd"
fi

# ---- 7. podman through conmon: `-v DIR:/data` is the volume's backing directory ----
# conmon runs `cista create`; the volume daemon it starts is adopted by conmon (a child
# subreaper) and lives in conmon's cgroup, in a session of its own. It must outlive create, keep
# serving while conmon watches the container, and go (unmounted, final commit) with the runtime's
# delete: podman's cleanup when the container exits (stop, restart), or `podman rm`.
if command -v podman >/dev/null && command -v conmon >/dev/null; then
  printf '{"tee":"sim","sim_state_dir":"%s"}\n' "$CISTA_SIM_DIR" >"$TMP/rt.json"
  with_delegate "$TMP/rt.json"
  mkdir -p "$PD/empty" "$TMP/backing/pod"
  cat >"$PD/containers.conf" <<EOF2
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CISTA_RUNTIME_CONFIG=$TMP/rt.json"]
EOF2
  export CONTAINERS_CONF=$PD/containers.conf
  # the runtime's state is in its default root, $PR: podman's exit command (`podman container
  # cleanup`, which calls the runtime's delete) is not given podman's --runtime-flag
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
  pd_run() { # NAME: redis with /data on the volume, detached
    "${P[@]}" run -d --name "$1" --network host \
      --annotation "io.cista.image=oci:$TMP/enc/redisv:1" \
      --annotation "io.cista.policy=$(base64 -w0 "$TMP/pod.policy.json")" \
      --annotation "io.cista.kbs=$KBS_URL" --annotation io.cista.tee=sim \
      -v "$TMP/backing/pod:/data" --rootfs "$PD/empty" "${REDIS_CMD[@]}"
  }
  pd_up() { pd_run "$1" >"$TMP/$1.out" 2>&1 && wait_port "$REDIS_PORT" 100 && wait_redis; }
  pd_id() { "${P[@]}" inspect -f '{{.Id}}' "$1"; }
  pd_mounted() { grep -q " $PR/$1/tee/volumes/data fuse.cista " /proc/mounts; } # ID
  pd_clean() { [ -z "$(pd_ours)" ] && ! grep -q "^cista:$TMP/backing/pod " /proc/mounts && [ -z "$(our_daemons)" ]; }
  own_session() { local p; p=$(our_daemons); [ "$(echo $p | wc -w)" = 1 ] && [ "$(ps -o sid= -p "$p" | tr -d ' ')" = "$p" ]; }
  if pd_up pv1; then
    ID1=$(pd_id pv1)
    check "podman: -v DIR:/data becomes the volume (FUSE mount in the sandbox)" pd_mounted "$ID1"
    sleep 1 # conmon has settled into watching the container: the daemon must still serve
    check "podman: SET over loopback (appendfsync always: an fsync through the volume daemon)" \
      [ "$("${RC[@]}" SET kp value-through-podman)" = OK ]
    check "podman: one volume daemon outlived create, in a session of its own" own_session
    expect_fail "podman: a second container on the same backing directory is refused, naming the first" \
      "in use: its volume is mounted by container \"$ID1\"" pd_run pbusy
    "${P[@]}" rm -f pbusy >/dev/null 2>&1
    check "  ... and the first one still serves" [ "$("${RC[@]}" GET kp)" = value-through-podman ]
    "${P[@]}" restart -t 5 pv1 >"$TMP/pv1.restart" 2>&1 && wait_port "$REDIS_PORT" 100 && wait_redis
    check "podman restart (delete + create under the same id): the value is back" \
      [ "$("${RC[@]}" GET kp)" = value-through-podman ]
    "${RC[@]}" SET kr after-restart >/dev/null
  else not_ok "podman: redis with a volume did not come up"; diag "$TMP/pv1.out"; fi
  check "podman stop: podman's cleanup deletes the runtime's container: the volume is unmounted" \
    bash -c "$(printf '%q ' "${P[@]}") stop -t 5 pv1 >/dev/null && ! grep -q ' $PR/${ID1:-none}/' /proc/mounts"
  check "podman rm: the runtime's state is gone" \
    bash -c "$(printf '%q ' "${P[@]}") rm pv1 >/dev/null && [ ! -e '$PR/${ID1:-none}' ]"
  check "  ... nothing stays mounted, no volume daemon" pd_clean
  if pd_up pv2; then
    r=$("${RC[@]}" GET kp; "${RC[@]}" GET kr)
    check "podman: a second container reads the values back (got $(echo $r))" \
      [ "$(echo $r)" = "value-through-podman after-restart" ]
  else not_ok "podman: second container did not come up"; diag "$TMP/pv2.out"; fi
  check "podman: stop + rm of the second container" \
    bash -c "$(printf '%q ' "${P[@]}") stop -t 5 pv2 >/dev/null && $(printf '%q ' "${P[@]}") rm pv2 >/dev/null"
  check "podman: the backing directory holds no plaintext" no_plaintext "$TMP/backing/pod" value-through after-restart REDIS appendonly
  check "podman: nothing stays mounted, no volume daemon" pd_clean

  # conmon killed: the daemon does not go with it; podman then never calls the runtime's delete
  # (nor for runc), so the volume stays mounted after `podman rm`; the next container's refusal
  # names it, and the command it gives releases it with a final commit
  if pd_up pv3; then
    ID3=$(pd_id pv3)
    CONMON=$("${P[@]}" inspect -f '{{.State.ConmonPid}}' pv3)
    [ "${CONMON:-0}" -gt 1 ] && kill -9 "$CONMON"
    sleep 0.5
    check "podman: conmon killed: the volume daemon still serves (SET)" [ "$("${RC[@]}" SET kc conmon-gone)" = OK ]
  else not_ok "podman: third container did not come up"; diag "$TMP/pv3.out"; fi
  "${P[@]}" rm -f -t 2 pv3 >/dev/null 2>&1
  if pd_mounted "${ID3:-none}"; then
    expect_fail "podman: after conmon died and rm, the next container is refused, naming the forgotten one" \
      "mounted by container \"$ID3\" \(state root $PR\).*cista --root $PR delete --force $ID3" pd_run pv4
    "${P[@]}" rm -f pv4 >/dev/null 2>&1
    check "  ... \`cista --root ROOT delete --force ID\` releases it" "$CISTA" -q --root "$PR" delete --force "$ID3"
  elif [ -n "${ID3:-}" ]; then
    ok "podman: after conmon died, podman deleted the runtime's container itself"
  fi
  check "  ... nothing stays mounted, no volume daemon" pd_clean
  if pd_up pv5; then
    check "podman: the write made after conmon died is there" [ "$("${RC[@]}" GET kc)" = conmon-gone ]
  else not_ok "podman: container after the release did not come up"; diag "$TMP/pv5.out"; fi
  "${P[@]}" rm -f -t 5 pv5 >/dev/null 2>&1
  check "podman: rm -f: nothing stays mounted, no volume daemon" pd_clean
else
  skip "podman: podman or conmon is not installed" "no podman/conmon"
fi

echo "# $(($(date +%s) - START)) s"
echo "1..$n"
[ "$failed" = 0 ]
