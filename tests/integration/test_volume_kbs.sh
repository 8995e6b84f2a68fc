#!/bin/bash
# test_volume_kbs.sh - the KBS rollback anchor of encrypted volumes end to end: a KBS on
# loopback over TLS (test CA, sim evidence allowed by the appraisal, a release policy for the
# counter path), `cista volume mount --anchor kbs:...`, write + fsync + unmount advance the
# counter, a restored older copy of the backing directory is refused at mount (rollback detected
# via the KBS counter), a failed advance fails fsync with EIO, and a client that is not attested
# or that the policy denies cannot advance the counter. Needs root, /dev/fuse, fusermount3,
# python3, openssl, curl, jq. Servers are started on free loopback ports and stopped by pid.
# Usage: test_volume_kbs.sh [path/to/cista]
set -u
CISTA=$(realpath "${1:-build/src/cli/cista}")
T=$(mktemp -d /tmp/cista-volkbs-XXXXXX)
MNT=$T/mnt
BACK=$T/back
KEY=$T/key
DAEMON_PID=
KBS_PID=
N=0
FAILED=0

cleanup() {
    if [ "$FAILED" != 0 ]; then
        echo "# kbs.err:"; tail -5 "$T/kbs.err" 2>/dev/null | sed 's/^/#   /'
        echo "# daemon.log:"; tail -5 "$T/daemon.log" 2>/dev/null | sed 's/^/#   /'
    fi
    if mountpoint -q "$MNT" 2>/dev/null; then
        umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    [ -n "$KBS_PID" ] && kill -9 "$KBS_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT

ok() { N=$((N + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $1"; }
check() { # check "description" command...
    local d=$1
    shift
    if "$@" >"$T/check.out" 2>&1; then ok "$d"; else
        not_ok "$d"
        sed 's/^/# /' "$T/check.out" | head -5
    fi
}
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
    done
    echo 0
}

cd "$T" || exit 1

# ---- a KBS on loopback over TLS (test CA), sim evidence allowed ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -subj /CN=kbs-test-ca -days 2 >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr \
    -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 \
    -extfile ext.cnf >/dev/null 2>&1
check "kbs init" "$CISTA" kbs init --dir k
check "sim init" "$CISTA" -q sim init --state-dir sim
PORT=$(free_port)
jq --arg l "127.0.0.1:$PORT" \
    '.listen = $l | .tls = {cert: "../tls.pem", key: "../tls.key"} | .sim_platform_keys = ["../sim/platform-pub.pem"]' \
    k/kbs.json >k/kbs.json.new && mv k/kbs.json.new k/kbs.json
"$CISTA" kbs serve --config k/kbs.json >kbs.out 2>kbs.err &
KBS_PID=$!
for _ in $(seq 100); do
    grep -q '^listening on' kbs.out 2>/dev/null && break
    sleep 0.05
done
check "kbs serve over TLS on 127.0.0.1:$PORT" grep -q '^listening on' kbs.out
URL=https://127.0.0.1:$PORT
A=(--url "$URL" --ca ca.pem --admin-key k/admin-key.pem)
SIMM=$("$CISTA" evidence get --tee sim --state-dir sim -o simev.bin >/dev/null 2>&1
    "$CISTA" evidence verify simev.bin --tee sim --sim-key sim/platform-pub.pem --json 2>/dev/null |
        jq -r .measurements.measurement)
jq -n --arg m "$SIMM" '{version: "1.0.0", tees: {sim: {allow_insecure: true, measurements: {measurement: [$m]}}}}' >rv.json
check "appraisal allows this sim workload" "$CISTA" -q kbs admin "${A[@]}" set-reference-values rv.json
# Only the volume's workload (sim, launch host data all zero) may read or advance the counter.
ZERO=$(printf '0%.0s' $(seq 64))
jq -n --arg h "$ZERO" '{version: "1.0.0", anyOf: [{name: "volume-workload", allOf: [{claim: "tee", equals: "sim"}, {claim: "host_data", equals: $h}]}]}' >pol.json
check "release policy for vol/anchor/*" "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'vol/anchor/*' pol.json
check "admin creates the counter (generation 0)" "$CISTA" -q kbs admin "${A[@]}" counter-reset vol/anchor/v1
gen() { "$CISTA" kbs admin "${A[@]}" counter-get vol/anchor/v1 | jq -r .generation; }

# ---- the volume ----
mkdir -p "$MNT"
check "create a volume" "$CISTA" -q volume create "$BACK" --key-file "$KEY"
ANCHOR=kbs:$URL/vol/anchor/v1
mount_vol() {
    "$CISTA" volume mount "$BACK" "$MNT" --key-file "$KEY" --anchor "$ANCHOR" --kbs-ca ca.pem \
        --tee sim --sim-state sim -f --commit-interval 600000 "$@" 2>>"$T/daemon.log" &
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
    local rc=$?
    DAEMON_PID=
    return $rc
}
fsync_file() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$1"; }

check "mount with the KBS anchor (attests with sim evidence)" mount_vol
G0=$(gen)
echo first >"$MNT/a"
check "write + fsync" fsync_file "$MNT/a"
G1=$(gen)
check "fsync advanced the KBS counter ($G0 -> $G1)" test "$G1" -gt "$G0"
check "unmount" unmount_vol
G2=$(gen)
check "the KBS counter matches the volume after unmount" test "$G2" -ge "$G1"
cp -a "$BACK" "$T/back.old"
check "remount (the anchor matches)" mount_vol
check "data is back" test "$(cat "$MNT/a")" = first
echo second >"$MNT/b"
check "write more + fsync" fsync_file "$MNT/b"
check "unmount again" unmount_vol
G3=$(gen)
check "the counter moved on ($G2 -> $G3)" test "$G3" -gt "$G2"

# ---- rollback of the whole backing directory: refused via the KBS counter
mv "$BACK" "$T/back.new"
cp -a "$T/back.old" "$BACK"
"$CISTA" volume mount "$BACK" "$MNT" --key-file "$KEY" --anchor "$ANCHOR" --kbs-ca ca.pem \
    --tee sim --sim-state sim -f >"$T/rb.out" 2>&1
rc=$?
check "mounting the older copy is refused (exit $rc)" test "$rc" -ne 0
check "the refusal names the rollback and the KBS anchor" grep -q "rollback detected.*kbs:" "$T/rb.out"
check "nothing was mounted" bash -c "! mountpoint -q '$MNT'"
check "the counter did not move back" test "$(gen)" = "$G3"
rm -rf "$BACK"
mv "$T/back.new" "$BACK"
check "the newest copy mounts again" mount_vol
check "and holds both files" test "$(cat "$MNT/a")$(cat "$MNT/b")" = firstsecond

# ---- a failed advance fails the sync (EIO), and is logged
G4=$(gen)
"$CISTA" -q kbs admin "${A[@]}" counter-reset vol/anchor/v1 $((G4 + 100))
echo third >"$MNT/c"
if fsync_file "$MNT/c" 2>"$T/fsync.err"; then not_ok "fsync must fail when the anchor cannot advance"; else
    check "fsync fails with EIO when the anchor cannot advance" grep -q "Input/output error" "$T/fsync.err"
fi
check "the failed advance is logged by the daemon" grep -q "rollback anchor kbs:.*was not advanced" "$T/daemon.log"
"$CISTA" -q kbs admin "${A[@]}" counter-reset vol/anchor/v1 "$G4" \
    "$("$CISTA" kbs admin "${A[@]}" counter-get vol/anchor/v1 | jq -r .root)"
kill -9 "$DAEMON_PID" 2>/dev/null
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null

# ---- other clients cannot advance the counter
CUR=$(gen)
BODY="{\"expected_generation\":$CUR,\"generation\":$((CUR + 1000)),\"root\":\"\"}"
st=$(curl -s --cacert ca.pem -o resp.json -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "$BODY" "$URL/kbs/v0/counter/vol/anchor/v1")
check "an unattested client cannot advance it (401)" test "$st" = 401
# Another workload: sim evidence with different launch host data gets a token, but the release
# policy of the counter path denies it.
"$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim \
    --host-data "$(printf 'ab%.0s' $(seq 32))" --token-out other.jwt vol/anchor/v1 >/dev/null 2>&1
check "another (attested) workload got a token" test -s other.jwt
st=$(curl -s --cacert ca.pem -o resp.json -w '%{http_code}' -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $(cat other.jwt)" -d "$BODY" "$URL/kbs/v0/counter/vol/anchor/v1")
check "a policy-denied workload cannot advance it (403)" test "$st" = 403
check "the counter is unchanged" test "$(gen)" = "$CUR"
check "the advances are in the KBS audit log" bash -c \
    "'$CISTA' kbs admin ${A[*]} audit --limit 10000 | grep -q 'counter.*allow.*advanced'"

kill -TERM "$KBS_PID" 2>/dev/null
wait "$KBS_PID" 2>/dev/null
KBS_PID=
echo "# $N tests, $FAILED failed"
[ "$FAILED" = 0 ]
