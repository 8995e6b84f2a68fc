#!/bin/bash
# test_volume_fuse.sh - cista encrypted volumes through the real FUSE mount:
# POSIX basics, kill -9 mid-write, redis AOF+RDB, tamper -> EIO, rollback
# refused. Needs root, /dev/fuse, fusermount3, python3, redis-server.
# Usage: test_volume_fuse.sh [path/to/cista]
set -u
CISTA=$(realpath "${1:-build/src/cli/cista}")
T=$(mktemp -d /tmp/cista-volfuse-XXXXXX)
MNT=$T/mnt
BACK=$T/back
KEY=$T/key
ANCHOR=$T/anchor
DAEMON_PID=
REDIS_PID=
N=0
FAILED=0

cleanup() {
    [ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
    if mountpoint -q "$MNT" 2>/dev/null; then
        umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

ok() { N=$((N + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $1"; }
check() { # check "description" command...
    local d=$1
    shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}

# Mount in the foreground in the background, so the test knows the daemon's pid.
mount_vol() {
    "$CISTA" volume mount "$BACK" "$MNT" --key-file "$KEY" --anchor "$ANCHOR" -f \
        --commit-interval 1000 "$@" 2>>"$T/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 100); do
        mountpoint -q "$MNT" && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
unmount_vol() {
    "$CISTA" volume unmount "$MNT" && wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=
}
crash_vol() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=
    umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
    true
}

mkdir -p "$MNT"
check "create a volume (key generated)" "$CISTA" volume create "$BACK" --key-file "$KEY" --anchor "$ANCHOR"
check "mount" mount_vol

# ---- POSIX basics
echo hello >"$MNT/a"
check "write and read back" test "$(cat "$MNT/a")" = hello
mv "$MNT/a" "$MNT/b"
check "rename" test ! -e "$MNT/a" -a "$(cat "$MNT/b")" = hello
ln "$MNT/b" "$MNT/c"
check "hard link (nlink 2, same inode)" test "$(stat -c %h "$MNT/b")" = 2 -a \
    "$(stat -c %i "$MNT/b")" = "$(stat -c %i "$MNT/c")"
ln -s b "$MNT/s"
check "symlink" test "$(readlink "$MNT/s")" = b -a "$(cat "$MNT/s")" = hello
mkdir -p "$MNT/d1/d2" && mv "$MNT/d1/d2" "$MNT/d2" && rmdir "$MNT/d1"
check "mkdir, directory rename, rmdir" test -d "$MNT/d2" -a ! -e "$MNT/d1"
printf 'one\n' >>"$MNT/log"
printf 'two\n' >>"$MNT/log"
check "O_APPEND" test "$(cat "$MNT/log")" = "$(printf 'one\ntwo')"
python3 - "$MNT/mm" <<'EOF'
import mmap, os, sys
p = sys.argv[1]
with open(p, "wb") as f:
    f.truncate(65536)
with open(p, "r+b") as f:
    m = mmap.mmap(f.fileno(), 65536)
    m[4096:4101] = b"mmap!"
    m.flush()
    m.close()
with open(p, "rb") as f:
    d = f.read()
assert d[4096:4101] == b"mmap!" and d[:4096] == bytes(4096), "mmap content"
EOF
check "mmap write and read" test $? -eq 0
dd if=/dev/urandom of="$MNT/sparse" bs=1 count=13 seek=$((5 * 1024 * 1024 * 1024)) conv=notrunc status=none
check "sparse file beyond 4 GiB (size)" test "$(stat -c %s "$MNT/sparse")" = $((5 * 1024 * 1024 * 1024 + 13))
check "sparse hole reads zero" test "$(dd if="$MNT/sparse" bs=4096 skip=$((1024 * 1024)) count=1 status=none | tr -d '\0' | wc -c)" = 0
SUM_SPARSE=$(tail -c 13 "$MNT/sparse" | sha256sum)
truncate -s 100 "$MNT/b"
check "truncate up (zero fill)" test "$(stat -c %s "$MNT/b")" = 100 -a "$(head -c 6 "$MNT/b")" = hello
dd if=/dev/urandom of="$MNT/big" bs=1M count=8 status=none
SUM_BIG=$(sha256sum <"$MNT/big")
sync "$MNT/big"
check "unmount" unmount_vol
check "remount" mount_vol
check "content survives remount" test "$(sha256sum <"$MNT/big")" = "$SUM_BIG" -a \
    "$(tail -c 13 "$MNT/sparse" | sha256sum)" = "$SUM_SPARSE" -a "$(readlink "$MNT/s")" = b
check "backing store hides names" test -z "$(ls "$BACK" | grep -E '^(big|sparse|b|c|s|log|d2)$')"

# ---- large sequential I/O: 1 MiB requests, direct I/O on the backing object when the
# backing file system has it, authenticated like everything else
daemon_has_direct_fd() {
    python3 - "$DAEMON_PID" "$BACK" <<'EOF'
import os, sys
pid, back = sys.argv[1], os.path.realpath(sys.argv[2])
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        flags = next(l for l in open(f"/proc/{pid}/fdinfo/{fd}") if l.startswith("flags:"))
    except OSError:
        continue
    if os.path.dirname(target) == back and int(flags.split()[1], 8) & os.O_DIRECT:
        sys.exit(0)
sys.exit(1)
EOF
}
dd if=/dev/urandom of="$T/large.src" bs=1M count=48 status=none
dd if="$T/large.src" of="$MNT/large" bs=1M conv=fdatasync status=none
check "large sequential write (dd bs=1M, fdatasync)" cmp -s "$T/large.src" "$MNT/large"
exec 3<"$MNT/large"
sync
echo 3 >/proc/sys/vm/drop_caches
check "large cold read returns the same bytes" cmp -s "$T/large.src" "$MNT/large"
if python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDWR|os.O_CREAT|os.O_DIRECT))' "$T/dio.probe" 2>/dev/null; then
    check "the daemon uses direct I/O on the backing object" daemon_has_direct_fd
else
    ok "the daemon uses direct I/O on the backing object # SKIP $T does not support O_DIRECT"
fi
exec 3<&-

# ---- kill -9 of the daemon mid-write loop
# same-length records rewritten in place: the only states are old and new
for i in 1 2 3 4 5; do printf 'old-%s-000000\n' "$i" >"$MNT/w$i"; done
sync "$MNT/w1"
(
    n=0
    while :; do
        n=$((n + 1))
        for i in 1 2 3 4 5; do
            printf 'new-%s-%06d\n' "$i" "$n" | dd of="$MNT/w$i" conv=notrunc status=none 2>/dev/null || exit 0
        done
        dd if=/dev/urandom of="$MNT/stream" bs=64k count=4 status=none 2>/dev/null || exit 0
    done
) &
WRITER=$!
sleep 2.5
crash_vol
kill "$WRITER" 2>/dev/null
wait "$WRITER" 2>/dev/null
check "remount after kill -9" mount_vol
good=1
for i in 1 2 3 4 5; do
    c=$(cat "$MNT/w$i" 2>/dev/null) || good=0
    case "$c" in old-$i-000000 | new-$i-[0-9][0-9][0-9][0-9][0-9][0-9]) ;; *) good=0 ;; esac
done
check "every file old or new after the crash" test $good = 1
check "earlier data intact after the crash" test "$(sha256sum <"$MNT/big")" = "$SUM_BIG"
cat "$MNT/stream" >/dev/null 2>&1
check "partially written file readable" test $? -eq 0

# ---- redis with AOF and RDB on the volume
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_redis() {
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$MNT" --appendonly yes \
        --appendfsync always --save "" --daemonize no --protected-mode no >"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 50); do
        redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    return 1
}
if command -v redis-server >/dev/null; then
    check "redis-server starts on the volume" start_redis
    for i in $(seq 200); do echo "SET key$i value$i"; done | redis-cli -p "$PORT" >/dev/null
    redis-cli -p "$PORT" BGSAVE >/dev/null
    for _ in $(seq 50); do
        [ "$(redis-cli -p "$PORT" INFO persistence | grep -c 'rdb_bgsave_in_progress:0')" = 1 ] && break
        sleep 0.1
    done
    redis-cli -p "$PORT" SHUTDOWN >/dev/null 2>&1
    wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=
    check "redis wrote RDB and AOF" test -f "$MNT/dump.rdb" -a -e "$MNT/appendonlydir" -o -f "$MNT/dump.rdb" -a -f "$MNT/appendonly.aof"
    unmount_vol
    mount_vol
    check "redis restarts from the remounted volume" start_redis
    check "redis keys survive (GET key1, key200)" test "$(redis-cli -p "$PORT" GET key1)" = value1 -a \
        "$(redis-cli -p "$PORT" GET key200)" = value200
    redis-cli -p "$PORT" SHUTDOWN NOSAVE >/dev/null 2>&1
    wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=
else
    ok "redis # SKIP redis-server not installed"
fi

# ---- tamper on the backing store -> EIO on read after remount
ls "$BACK" | sort >"$T/before"
printf 'secret-%.0s' $(seq 2000) >"$MNT/victim"
check "unmount before tamper" unmount_vol
# the victim's data object: of the objects new since, the one with the most allocated blocks
# (a directory or table object may be new too, and object names are random)
V=$(ls "$BACK" | sort | comm -13 "$T/before" - | while read -r o; do
    echo "$(stat -c %b "$BACK/$o") $o"
done | sort -n | tail -1 | cut -d' ' -f2)
check "the new file has its own opaque object" test -n "$V"
cp -a "$BACK" "$T/back.old"
printf '\x55' | dd of="$BACK/$V" bs=1 seek=5000 conv=notrunc status=none
mount_vol
cat "$MNT/victim" >/dev/null 2>"$T/cat.err"
check "tampered block detected on read (EIO)" grep -q "Input/output error" "$T/cat.err"
check "other files still readable" test "$(sha256sum <"$MNT/big")" = "$SUM_BIG"
unmount_vol
"$CISTA" volume fsck "$BACK" --key-file "$KEY" >"$T/fsck.out" 2>&1
check "fsck reports the tampering" test $? -ne 0
cp -a "$T/back.old/$V" "$BACK/$V"

# ---- tamper in the middle of a large file: caught on the large-request (direct) path
# the object with the most allocated blocks is the 48 MiB file's, written once into slot 0
LARGE=$(python3 - "$BACK" <<'EOF'
import os, sys
back = sys.argv[1]
objs = [o for o in os.listdir(back) if len(o) == 32]
print(max(objs, key=lambda o: os.stat(os.path.join(back, o)).st_blocks))
EOF
)
printf '\x55' | dd of="$BACK/$LARGE" bs=1 seek=$((20 * 1024 * 1024 + 77)) conv=notrunc status=none
mount_vol
echo 3 >/proc/sys/vm/drop_caches
dd if="$MNT/large" of=/dev/null bs=1M 2>"$T/dd.err"
check "tampered block of a large file detected (EIO on a 1 MiB read)" grep -q "Input/output error" "$T/dd.err"
unmount_vol
printf '\x55' | dd of="$BACK/$LARGE" bs=1 seek=$((20 * 1024 * 1024 + 77)) conv=notrunc status=none

# ---- rollback of the whole backing directory is refused
mount_vol
echo newer >"$MNT/newer"
unmount_vol
rm -rf "$BACK" && cp -a "$T/back.old" "$BACK"
"$CISTA" volume mount "$BACK" "$MNT" --key-file "$KEY" --anchor "$ANCHOR" -f >"$T/rb.out" 2>&1
rc=$?
check "rolled-back volume refused at mount (exit 3)" test $rc -eq 3
check "the refusal names the rollback" grep -q "rollback detected" "$T/rb.out"
check "fsck of the current copy is clean" "$CISTA" volume fsck "$BACK" --key-file "$KEY"

check "no sanitizer reports from the daemon" bash -c "! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error' '$T/daemon.log'"

echo "1..$N"
[ "$FAILED" -eq 0 ]
