#!/usr/bin/env bash
# bench_kbs.sh - KBS throughput and latency: full RCAR round trips (auth + attest with sim
# evidence, one ECDSA P-384 verify each, + resource fetch with JWE unwrap) per second and p50/p99
# at 1, 16 and 64 concurrent clients over TLS on loopback, beside `openssl speed ecdsap384`
# (verify/s) measured in the same run, and the memory of an idle session.
# Two connection modes: "new" (a new TCP + TLS connection per round trip, as a CoCo guest doing
# one RCAR per boot) and "keepalive" (one connection per client thread, reused).
# Per-core accounting: the server's CPU seconds (utime+stime from /proc) per round trip give
# round trips/s per server core, compared with the P-384 verify bound; the driver's own CPU is
# reported too. With >= 2 CPUs the driver is pinned to LOAD_CPUS (default 0) and the server to
# SERVER_CPUS (default 1) so they do not compete; set PIN=0 to share all CPUs.
# Usage: bench/bench_kbs.sh [BUILD_DIR] [SECONDS]   (from the repo root; BUILD_DIR default build)
set -euo pipefail
BUILD=${1:-build}
SECS=${2:-8}
ROOT=$PWD
CISTA=$ROOT/$BUILD/src/cli/cista
TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
cd "$TMP"

# The load driver, linked against the build's static library.
DEPS="openssl jansson libarchive zlib libzstd yaml-0.1 sqlite3 libpq fuse3 libcurl tss2-esys tss2-mu tss2-tctildr tss2-rc libevent libevent_openssl libevent_pthreads"
cc -O2 -I"$ROOT/src" "$ROOT/bench/kbs_load.c" "$ROOT/$BUILD/libcista.a" \
  $(pkg-config --libs $DEPS) -lpthread -lm -o kbs_load

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 1 >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 1 -extfile ext.cnf >/dev/null 2>&1
"$CISTA" kbs init --dir k >/dev/null
"$CISTA" -q sim init --state-dir sim >/dev/null 2>&1
jq '.listen = "127.0.0.1:0" | .tls = {cert: "../tls.pem", key: "../tls.key"} | .sim_platform_keys = ["../sim/platform-pub.pem"]' k/kbs.json >k/b.json
PIN=${PIN:-1}
[ "$(nproc)" -lt 2 ] && PIN=0
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
SRV_PFX=() LOAD_PFX=()
if [ "$PIN" = 1 ]; then SRV_PFX=(taskset -c "$SERVER_CPUS"); LOAD_PFX=(taskset -c "$LOAD_CPUS"); fi
"${SRV_PFX[@]}" "$CISTA" kbs serve --config k/b.json >serve.out 2>serve.err &
SPID=$!
for _ in $(seq 100); do ADDR=$(sed -n 's/^listening on //p' serve.out); [ -n "$ADDR" ] && break; sleep 0.05; done
URL=https://$ADDR
A=(--url "$URL" --ca ca.pem --admin-key k/admin-key.pem)
"$CISTA" -q kbs admin "${A[@]}" set-reference-values <(echo '{"version":"1.0.0","tees":{"sim":{"allow_insecure":true}}}') >/dev/null
echo '{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"tee","equals":"sim"}]}]}' >pol.json
"$CISTA" -q kbs admin "${A[@]}" set-policy pol.json >/dev/null
"$CISTA" -q kbs admin "${A[@]}" put-resource default/key/1 --value bench-secret >/dev/null

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
V=$(openssl speed -seconds 3 ecdsap384 2>/dev/null | awk '/ 384 bits ecdsa/ {print $NF}')
echo "openssl speed ecdsap384: $V verify/s (one core)"
TCK=$(getconf CLK_TCK)
srv_ticks() { awk '{print $14 + $15}' /proc/$SPID/stat; }
thread_ticks() { for t in /proc/$SPID/task/*; do awk '{printf "%s ", $14 + $15}' "$t/stat"; done; }
# Optional profiling of the server during the load runs: PERF_OUT=file (perf record -g) or
# STRACE_OUT=file (strace -c -f: syscall counts, e.g. fdatasync per round trip).
PROF=
if [ -n "${PERF_OUT:-}" ]; then perf record ${PERF_FLAGS:--g} -p "$SPID" -o "$PERF_OUT" >/dev/null 2>&1 & PROF=$!
elif [ -n "${STRACE_OUT:-}" ]; then strace -c -f -p "$SPID" -o "$STRACE_OUT" & PROF=$!; fi
[ -n "$PROF" ] && sleep 1
[ "$PIN" = 1 ] && echo "# server pinned to CPU $SERVER_CPUS, driver to CPU $LOAD_CPUS"
for mode in ${MODES:-new keepalive}; do
  for c in ${CLIENTS:-1 16 64}; do
    T0=$(srv_ticks)
    OUT=$("${LOAD_PFX[@]}" ./kbs_load "$URL" ca.pem sim "$c" "$SECS" default/key/1 "$mode")
    T1=$(srv_ticks)
    N=$(jq .round_trips <<<"$OUT")
    awk -v t=$((T1 - T0)) -v hz="$TCK" -v n="$N" -v v="$V" -v o="$OUT" 'BEGIN {
      s = t / hz; per = n ? s / n : 0; rate = per ? 1 / per : 0
      printf "%s server_cpu_s=%.2f server_ms_per_rt=%.3f rt_per_server_core=%.0f (%.0f%% of the P-384 verify bound)\n", o, s, per * 1e3, rate, v ? 100 * rate / v : 0 }'
  done
done
[ -n "$PROF" ] && { kill -INT "$PROF"; wait "$PROF" 2>/dev/null || true; }
echo "# server threads' CPU ticks (main + workers): $(thread_ticks)"
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
seq 2000 | xargs -P 16 -I{} curl -s --cacert ca.pem -o /dev/null -d '{"version":"0.4.0","tee":"sim"}' "$URL/kbs/v0/auth"
RSS1=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
echo "idle session: $(./kbs_load --session-bytes) bytes in the session table (+ malloc overhead); server RSS $RSS0 kB -> $RSS1 kB after 2000 more challenged sessions"
