#!/usr/bin/env bash
# bench/bench_volume.sh - cista encrypted volumes (FUSE) against gocryptfs and the plain
# directory (ext4) on the same machine in the same run. On demand, not in CI. Needs root
# (drop_caches, allow_other), gocryptfs, python3.
#
#   bench/bench_volume.sh [CISTA] [SEQ_MB]        (default build/src/cli/cista, 1024)
#
# Environment:
#   RUNS=3              timed runs per test and system (medians; systems interleave per run)
#   BENCH_DIR=/var/tmp  where the backing directories live (a disk, like the reference)
#   RAND_FILE_MB=256 RAND_OPS=8192   4 KiB random I/O: file size and operations per run
#   NFILES=10000        create+stat test
#   TESTS="seq-write seq-read ..."   a subset of the tests below (default: all)
#   CISTA_BASE=PATH     a second cista binary (e.g. the previous commit's) run as a fourth
#                       system "cista-base" in the same run, for before/after comparisons
#
# Tests (page cache dropped before every read test and after every write test; the order of
# the systems rotates from run to run):
#   seq-write   dd bs=1M of SEQ_MB with conv=fdatasync (the data is durable: one commit)
#   seq-read    dd bs=1M, cold
#   rand-write  RAND_OPS 4 KiB pwrites at random aligned offsets of a preallocated file,
#               then fsync
#   rand-read   RAND_OPS 4 KiB preads at random aligned offsets, cold
#   create+stat NFILES empty files created (open O_CREAT + close) in one directory,
#               then all stat()ed, then fsync of the directory
# Conventions: MB = 10^6 bytes; ops/s for random I/O and files/s for create+stat.
set -euo pipefail
cd "$(dirname "$0")/.."
CISTA=$(realpath "${1:-build/src/cli/cista}")
SEQ_MB=${2:-1024}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
RAND_FILE_MB=${RAND_FILE_MB:-256}
RAND_OPS=${RAND_OPS:-8192}
NFILES=${NFILES:-10000}
W=$(mktemp -d "$BENCH_DIR/cista-volbench.XXXXXX")
CISTA_BASE=${CISTA_BASE:+$(realpath "$CISTA_BASE")}
CISTA_PID=
BASE_PID=
cleanup() {
    # no errexit here: a daemon that already exited after its unmount must not stop the cleanup
    # before the work directory (several GB) is removed
    set +e
    for m in "$W/cista.mnt" "$W/cista-base.mnt" "$W/gocryptfs.mnt"; do
        mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || fusermount3 -u "$m" || umount -l "$m"; }
    done
    for p in $CISTA_PID $BASE_PID; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---- set up the three systems
mkdir -p "$W/plain" "$W/gocryptfs.cipher" "$W/gocryptfs.mnt" "$W/cista.mnt"
gocryptfs -q -init -extpass 'echo benchpw' "$W/gocryptfs.cipher" >/dev/null
gocryptfs -q -extpass 'echo benchpw' "$W/gocryptfs.cipher" "$W/gocryptfs.mnt"
cista_mount() { # BIN NAME: create a volume and serve it on $W/NAME.mnt (in the background)
    mkdir -p "$W/$2.mnt"
    "$1" -q volume create "$W/$2.back" --key-file "$W/$2.key" >/dev/null 2>&1
    "$1" -q volume mount "$W/$2.back" "$W/$2.mnt" --key-file "$W/$2.key" -f 2>"$W/$2.log" &
}
wait_mounted() {
    for _ in $(seq 100); do mountpoint -q "$W/$1.mnt" && break; sleep 0.1; done
    mountpoint -q "$W/$1.mnt" || { cat "$W/$1.log"; exit 1; }
}
cista_mount "$CISTA" cista
CISTA_PID=$!
wait_mounted cista
declare -A DIR=([plain]="$W/plain" [gocryptfs]="$W/gocryptfs.mnt" [cista]="$W/cista.mnt")
SYSTEMS=(plain gocryptfs cista)
if [ -n "$CISTA_BASE" ]; then
    cista_mount "$CISTA_BASE" cista-base
    BASE_PID=$!
    wait_mounted cista-base
    DIR[cista-base]="$W/cista-base.mnt"
    SYSTEMS=(plain gocryptfs cista-base cista)
fi

cat >"$W/io.py" <<'EOF'
import os, random, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode in ("rand-write", "rand-read"):
    size, ops = int(sys.argv[3]) << 20, int(sys.argv[4])
    rnd = random.Random(42)
    offs = [rnd.randrange(size // 4096) * 4096 for _ in range(ops)]
    buf = os.urandom(4096)
    fd = os.open(path, os.O_RDWR)
    t = time.perf_counter()
    if mode == "rand-write":
        for o in offs:
            os.pwrite(fd, buf, o)
        os.fsync(fd)
    else:
        for o in offs:
            os.pread(fd, 4096, o)
    dt = time.perf_counter() - t
    os.close(fd)
    print(ops / dt)
elif mode == "create-stat":
    n = int(sys.argv[3])
    d = os.path.join(path, "many")
    os.mkdir(d)
    names = [os.path.join(d, "file%05d" % i) for i in range(n)]
    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
    for p in names:
        os.stat(p)
    dfd = os.open(d, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    dt = time.perf_counter() - t
    print(n / dt)
EOF

seq_write() { # MB/s
    local f=$1/seq out
    rm -f "$f"
    drop
    out=$(dd if=/dev/zero of="$f" bs=1M count="$SEQ_MB" conv=fdatasync 2>&1 | tail -1)
    python3 -c "import sys; print($SEQ_MB * 1048576 / float(sys.argv[1]) / 1e6)" "$(echo "$out" | awk '{print $(NF-3)}')"
}
seq_read() {
    local f=$1/seq out
    drop
    out=$(dd if="$f" of=/dev/null bs=1M 2>&1 | tail -1)
    python3 -c "import sys; print($SEQ_MB * 1048576 / float(sys.argv[1]) / 1e6)" "$(echo "$out" | awk '{print $(NF-3)}')"
}
rand_prep() {
    dd if=/dev/urandom of="$1/rand" bs=1M count="$RAND_FILE_MB" conv=fdatasync status=none
}
rand_write() { drop; python3 "$W/io.py" rand-write "$1/rand" "$RAND_FILE_MB" "$RAND_OPS"; }
rand_read() { drop; python3 "$W/io.py" rand-read "$1/rand" "$RAND_FILE_MB" "$RAND_OPS"; }
create_stat() { rm -rf "$1/many"; drop; python3 "$W/io.py" create-stat "$1" "$NFILES"; }

declare -A R
read -r -a TESTS <<<"${TESTS:-seq-write seq-read rand-write rand-read create-stat}"
echo "# cista volume bench: $(date -u +%FT%TZ), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# gocryptfs: $(gocryptfs -version 2>/dev/null | head -1)"
echo "# cista: $CISTA${CISTA_BASE:+; cista-base: $CISTA_BASE}"
case " ${TESTS[*]} " in *" rand-"*) for s in "${SYSTEMS[@]}"; do rand_prep "${DIR[$s]}"; done ;; esac
for run in $(seq "$RUNS"); do
    # the order of the systems rotates per run, so that none always runs first or last
    k=$(((run - 1) % ${#SYSTEMS[@]}))
    ORDER=("${SYSTEMS[@]:k}" "${SYSTEMS[@]:0:k}")
    for t in "${TESTS[@]}"; do
        for s in "${ORDER[@]}"; do
            case $t in
            seq-write) v=$(seq_write "${DIR[$s]}") ;;
            seq-read) v=$(seq_read "${DIR[$s]}") ;;
            rand-write) v=$(rand_write "${DIR[$s]}") ;;
            rand-read) v=$(rand_read "${DIR[$s]}") ;;
            create-stat) v=$(create_stat "${DIR[$s]}") ;;
            esac
            R[$t.$s]="${R[$t.$s]:-} $v"
            printf "run %d %-11s %-9s %10.1f\n" "$run" "$t" "$s" "$v"
        done
    done
done

echo
if [ -n "$CISTA_BASE" ]; then
    echo "| test | unit | plain ext4 | gocryptfs | cista-base | cista | cista / gocryptfs | cista / plain | base / gocryptfs | cista / base |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
else
    echo "| test | unit | plain ext4 | gocryptfs | cista | cista / gocryptfs | cista / plain |"
    echo "|---|---|---|---|---|---|---|"
fi
for t in "${TESTS[@]}"; do
    unit="MB/s"
    case $t in rand-*) unit="ops/s" ;; create-stat) unit="files/s" ;; esac
    declare -A M=([cista-base]=0)
    for s in "${SYSTEMS[@]}"; do M[$s]=$(echo "${R[$t.$s]}" | tr ' ' '\n' | grep . | median); done
    python3 - "$t" "$unit" "${M[plain]}" "${M[gocryptfs]}" "${M[cista]}" "${M[cista-base]}" <<'EOF'
import sys
t, u, p, g, c, b = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
if b:
    print(f"| {t} | {u} | {p:.0f} | {g:.0f} | {b:.0f} | {c:.0f} | {c/g:.2f}x | {c/p:.2f}x | {b/g:.2f}x | {c/b:.2f}x |")
else:
    print(f"| {t} | {u} | {p:.0f} | {g:.0f} | {c:.0f} | {c/g:.2f}x | {c/p:.2f}x |")
EOF
done
echo
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); cista daemon CPU: $(ps -o time= -p "$CISTA_PID")${BASE_PID:+, cista-base daemon CPU: $(ps -o time= -p "$BASE_PID")}"
