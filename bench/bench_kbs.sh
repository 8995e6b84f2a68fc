#!/usr/bin/env bash
# bench_kbs.sh - KBS throughput and latency: full RCAR round trips (auth + attest with sim
# evidence, one ECDSA P-384 verify each, + resource fetch with JWE unwrap) per second and p50/p99
# at 1, 16 and 64 concurrent clients over TLS on loopback, beside `openssl speed ecdsap384`
# (verify/s, on the server's CPU) measured in the same run, and the memory of an idle session
# (challenged: the table's entry; attested: in process, bench/kbs_session_mem.c).
# Two connection modes: "new" (a new TCP + TLS connection per round trip, as a CoCo guest doing
# one RCAR per boot) and "keepalive" (one connection per client thread, reused).
# Per-core accounting: the server's CPU seconds (utime+stime from /proc) per round trip give
# round trips/s per server core, compared with the P-384 verify bound; the driver's own CPU is
# reported too. With >= 2 CPUs the driver is pinned to LOAD_CPUS (default 0) and the server to
# SERVER_CPUS (default 1) so they do not compete; set PIN=0 to share all CPUs.
# The driver precomputes PRESIGN_RATE * SECONDS ECDSA nonces (default 2000/s, ~1 s of setup per
# second measured) before each timed run so that its own P-384 signing does not limit the server
# (see bench/kbs_load.c; PRESIGN_RATE=0 disables). A run that used them all says so: the rest of
# its round trips include the driver's online signing, which inflates the latencies measured.
# REPEAT=N runs every (mode, clients) point N times and prints the medians at the end.
# WARMUP=S runs S seconds of unmeasured load first (see below: steady state).
# LOAD_RATE=R paces the clients to R round trips/s in total (latency from each scheduled start,
# see bench/kbs_load.c) instead of each starting its next round trip as soon as one ends.
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

# The load driver, linked against the build's static library as meson.build links cista:
# libarchive statically (--gc-sections drops its writers), libpq not at all (opened on first use,
# util/dynlib.h; the client speaks HTTP itself, util/httpc.h).
DEPS="openssl jansson zlib libzstd yaml-0.1 sqlite3 fuse3 tss2-esys tss2-mu tss2-tctildr tss2-rc libevent libevent_openssl libevent_pthreads"
pkg-config --exists libisal 2>/dev/null && DEPS="$DEPS libisal"
cc -O2 -I"$ROOT/src" "$ROOT/bench/kbs_load.c" "$ROOT/$BUILD/libcista.a" -Wl,--gc-sections \
  "$(pkg-config --variable=libdir libarchive)/libarchive.a" $(pkg-config --libs $DEPS) -ldl \
  -lpthread -lm -o kbs_load
cc -O2 -I"$ROOT/src" "$ROOT/bench/kbs_session_mem.c" "$ROOT/$BUILD/libcista.a" -Wl,--gc-sections \
  "$(pkg-config --variable=libdir libarchive)/libarchive.a" $(pkg-config --libs $DEPS) -ldl \
  -lpthread -lm -o kbs_session_mem

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 1 >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 1 -extfile ext.cnf >/dev/null 2>&1
"$CISTA" kbs init --dir k >/dev/null
"$CISTA" -q sim init --state-dir sim >/dev/null 2>&1
# Sessions: hundreds of attestations per second for minutes outgrow the default table (10000
# sessions of 300 s); shorter lifetimes and a larger bound keep the runs away from 503. The
# driver is one address making ~1000 handshakes/s: no per-peer limits.
jq '.listen = "127.0.0.1:0" | .tls = {cert: "../tls.pem", key: "../tls.key"} | .sim_platform_keys = ["../sim/platform-pub.pem"] | .sessions = {backend: "memory", max: 50000, nonce_lifetime: 30} | .token_lifetime = 30 | .limits = {connections_per_peer: 0, handshakes_per_peer_per_s: 0}' k/kbs.json >k/b.json
PIN=${PIN:-1}
[ "$(nproc)" -lt 2 ] && PIN=0
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
SRV_PFX=() LOAD_PFX=()
if [ "$PIN" = 1 ]; then SRV_PFX=(taskset -c "$SERVER_CPUS"); LOAD_PFX=(taskset -c "$LOAD_CPUS"); fi
"${SRV_PFX[@]}" "$CISTA" --log-level info kbs serve --config k/b.json >serve.out 2>serve.err &
SPID=$!
for _ in $(seq 100); do ADDR=$(sed -n 's/^listening on //p' serve.out); [ -n "$ADDR" ] && break; sleep 0.05; done
URL=https://$ADDR
A=(--url "$URL" --ca ca.pem --admin-key k/admin-key.pem)
"$CISTA" -q kbs admin "${A[@]}" set-reference-values <(echo '{"version":"1.0.0","tees":{"sim":{"allow_insecure":true}}}') >/dev/null
echo '{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"tee","equals":"sim"}]}]}' >pol.json
"$CISTA" -q kbs admin "${A[@]}" set-policy pol.json >/dev/null
"$CISTA" -q kbs admin "${A[@]}" put-resource default/key/1 --value bench-secret >/dev/null

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# The bound: one core's P-384 verifies per second, on the server's CPU, before and after the runs.
speed() { "${SRV_PFX[@]}" openssl speed -seconds 3 ecdsap384 2>/dev/null | awk '/ 384 bits ecdsa/ {print $NF}'; }
V0=$(speed)
echo "openssl speed ecdsap384 (before the runs): $V0 verify/s (one core)"
TCK=$(getconf CLK_TCK)
srv_ticks() { awk '{print $14 + $15}' /proc/$SPID/stat; }
thread_ticks() { for t in /proc/$SPID/task/*; do awk '{printf "%s ", $14 + $15}' "$t/stat"; done; }
# Optional profiling of the server during the load runs: PERF_OUT=file (perf record -g) or
# STRACE_OUT=file (strace -c -f: syscall counts, e.g. fdatasync per round trip) or PERF_STAT=file
# (perf stat: context switches, page faults, cycles); LOAD_PERF="perf record -o FILE --" profiles
# the driver.
# WARMUP=S: S seconds of keep-alive load (16 clients, signing online, not measured) first, so
# that the measured runs see the server in its steady state: sessions live nonce_lifetime (30 s
# here), so a fresh server's heap grows (page faults, heap growth) for the first 30 s of load
# and reuses freed sessions from then on, as a long-running KBS does.
if [ "${WARMUP:-0}" != 0 ]; then
  "${LOAD_PFX[@]}" ./kbs_load "$URL" ca.pem sim 16 "$WARMUP" default/key/1 keepalive 0 >/dev/null
  echo "# warm-up: $WARMUP s of load before the measured runs; server RSS $(awk '/VmRSS/ {print $2}' /proc/$SPID/status) kB"
fi
PROF=
if [ -n "${PERF_OUT:-}" ]; then perf record ${PERF_FLAGS:--g} -p "$SPID" -o "$PERF_OUT" >/dev/null 2>&1 & PROF=$!
elif [ -n "${PERF_STAT:-}" ]; then perf stat -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions -p "$SPID" -o "$PERF_STAT" >/dev/null 2>&1 & PROF=$!
elif [ -n "${STRACE_OUT:-}" ]; then ${STRACE_CMD:-strace -c -f} -p "$SPID" -o "$STRACE_OUT" & PROF=$!; fi
[ -n "$PROF" ] && sleep 1
[ "$PIN" = 1 ] && echo "# server pinned to CPU $SERVER_CPUS, driver to CPU $LOAD_CPUS"
PRESIGN=$(awk -v s="$SECS" -v r="${PRESIGN_RATE:-2000}" 'BEGIN {printf "%d", s * r}')
RES=$TMP/results
for rep in $(seq "${REPEAT:-1}"); do
  for mode in ${MODES:-new keepalive}; do
    for c in ${CLIENTS:-1 16 64}; do
      LOAD=$(cut -d' ' -f1 /proc/loadavg)
      TT0=$(thread_ticks)
      T0=$(srv_ticks)
      OUT=$(${LOAD_PERF:-} "${LOAD_PFX[@]}" ./kbs_load "$URL" ca.pem sim "$c" "$SECS" default/key/1 "$mode" "$PRESIGN" ${LOAD_RATE:+"$LOAD_RATE"})
      T1=$(srv_ticks)
      TT1=$(thread_ticks)
      N=$(jq .round_trips <<<"$OUT")
      S=$(jq .seconds <<<"$OUT")
      # Per-thread CPU ticks during the run (main, audit writer, workers...): is the load balanced?
      TD=$(awk -v a="$TT0" -v b="$TT1" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? "/" : ""), y[i] - x[i] }')
      awk -v t=$((T1 - T0)) -v hz="$TCK" -v n="$N" -v v="$V0" -v o="$OUT" -v secs="$S" -v load="$LOAD" -v td="$TD" 'BEGIN {
        s = t / hz; per = n ? s / n : 0; rate = per ? 1 / per : 0
        printf "%s load=%s server_cpu_s=%.2f server_cores=%.2f server_ms_per_rt=%.3f rt_per_server_core=%.0f (%.0f%% of the P-384 verify bound) thread_ticks=%s\n", o, load, s, secs ? s / secs : 0, per * 1e3, rate, v ? 100 * rate / v : 0, td }' | tee -a "$RES"
      ONLINE=$(jq '.signed_online // 0' <<<"$OUT")
      if [ "$PRESIGN" -gt 0 ] && [ "$ONLINE" -gt 0 ]; then
        echo "# warning: the driver ran out of presigned nonces and signed $ONLINE reports online; raise PRESIGN_RATE for honest latencies" >&2
      fi
    done
  done
done
[ -n "$PROF" ] && { kill -INT "$PROF"; wait "$PROF" 2>/dev/null || true; }
V1=$(speed)
echo "openssl speed ecdsap384 (after the runs): $V1 verify/s (one core)"
if [ "${REPEAT:-1}" -gt 1 ]; then
  echo "# medians over $REPEAT runs (bound: mean of the two openssl speed figures)"
  python3 - "$RES" "$V0" "$V1" <<'EOF'
import json, re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    j = json.loads(line[:line.index('}') + 1])
    kv = dict(re.findall(r'(\w+)=([0-9.]+)', line[line.index('}') + 1:]))
    rows.setdefault((j['mode'], j['clients']), []).append((j, kv))
bound = (float(sys.argv[2]) + float(sys.argv[3])) / 2
for (mode, c), rs in rows.items():
    med = lambda f: statistics.median(f(j, kv) for j, kv in rs)
    ms = med(lambda j, kv: float(kv['server_ms_per_rt']))
    print(f"{mode:9} clients={c:<3} rt/s={med(lambda j, kv: j['per_second']):7.1f} "
          f"p50_ms={med(lambda j, kv: j['p50_ms']):7.2f} p99_ms={med(lambda j, kv: j['p99_ms']):7.2f} "
          f"server_ms_per_rt={ms:.3f} rt_per_server_core={1e3 / ms:.0f} "
          f"({100 * 1e3 / ms / bound:.0f}% of {bound:.0f} verify/s) "
          f"driver_ms_per_rt={1e3 * med(lambda j, kv: j['driver_cpu_s'] / max(j['round_trips'], 1)):.3f}")
EOF
fi
echo "# server threads' CPU ticks (main, audit writer, workers): $(thread_ticks)"
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
seq 2000 | xargs -P 16 -I{} curl -s --cacert ca.pem -o /dev/null -d '{"version":"0.4.0","tee":"sim"}' "$URL/kbs/v0/auth"
RSS1=$(awk '/VmRSS/ {print $2}' /proc/$SPID/status)
IDLE="idle session: $(./kbs_load --session-bytes) bytes in the session table (+ malloc overhead); server RSS $RSS0 kB -> $RSS1 kB after 2000 more challenged sessions"
kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
# Group commit: entries per fsync'ed transaction over the whole run (admin calls included).
sed -n 's/.*KBS stopped (audit: \(.*\))/# audit log: \1/p' serve.err
echo "$IDLE"
# An attested session holds more (its token's payload and the imported tee key): measured in
# process on the same KBS directory, now that the server is gone (bench/kbs_session_mem.c).
echo "attested session: $(cd k && ../kbs_session_mem b.json ../sim 2000 4000 2>/dev/null)"
