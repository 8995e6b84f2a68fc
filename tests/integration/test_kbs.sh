#!/usr/bin/env bash
# test_kbs.sh - the KBS end to end: RCAR 0.4.0 and 0.2.0 over TLS with sim evidence and with
# swtpm-backed tpm evidence, the admin API and CLI, refusals (replayed / mismatched nonce,
# expired session and token, report data not binding the key, evidence of another TEE,
# policy deny, sim not allowed, admin without / with a wrong key, malformed, oversized and
# unknown-version requests), 200 concurrent clients, kill -9 under write load, and two replicas
# on one real PostgreSQL server. Servers are started on free loopback ports and stopped by pid.
# Usage: tests/integration/test_kbs.sh [path/to/cista]  (from the repo root)
set -uo pipefail
CISTA=${1:-build/src/cli/cista}
case $CISTA in /*) ;; *) CISTA=$PWD/$CISTA ;; esac
PGBIN=/usr/lib/postgresql/15/bin

TMP=$(mktemp -d)
PGDIR=
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$PGDIR" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
    pgpid=$(head -1 "$PGDIR/data/postmaster.pid")
    kill -TERM "$pgpid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "$PGDIR" ] && rm -rf "$PGDIR"
  rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { local name=$1; shift; if "$@" >"$TMP/check.out" 2>&1; then ok "$name"; else not_ok "$name"; sed 's/^/# /' "$TMP/check.out" | head -5; fi; }
# expect_exit NAME CODE WORDS CMD...: exit status CODE and WORDS in stdout+stderr
expect_exit() {
  local name=$1 code=$2 words=$3; shift 3
  "$@" >"$TMP/out.txt" 2>&1
  local rc=$?
  if [ "$rc" = "$code" ] && grep -q -- "$words" "$TMP/out.txt"; then ok "$name"; else
    not_ok "$name (exit $rc)"; sed 's/^/# /' "$TMP/out.txt" | head -5; fi
}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
  done
  echo 0
}

# start_kbs NAME CONFIG [extra args]: starts `cista kbs serve`, sets KBS_PID and KBS_ADDR.
start_kbs() {
  local name=$1 cfg=$2; shift 2
  "$CISTA" kbs serve --config "$cfg" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  KBS_PID=$!
  PIDS+=("$KBS_PID")
  KBS_ADDR=
  for _ in $(seq 100); do
    KBS_ADDR=$(sed -n 's/^listening on //p' "$TMP/$name.out")
    [ -n "$KBS_ADDR" ] && return 0
    kill -0 "$KBS_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "# $name did not start:"; sed 's/^/#   /' "$TMP/$name.err" | head -5
  return 1
}
stop_pid() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

cd "$TMP" || exit 1
export TSS2_LOG=all+NONE

# ---- certificates (a test CA and a server certificate for 127.0.0.1) ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -subj /CN=kbs-test-ca -days 2 >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr \
  -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 \
  -extfile ext.cnf >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other-ca.key \
  -out other-ca.pem -subj /CN=other-ca -days 2 >/dev/null 2>&1

check "kbs init creates keys, master key (0600), store and config" bash -c \
  "'$CISTA' kbs init --dir k >/dev/null && [ \$(stat -c %a k/master.key) = 600 ] && [ -f k/kbs.db ] && [ -f k/admin-key.pem ]"
check "sim init" "$CISTA" -q sim init --state-dir sim

# ---- swtpm (optional) ----
TPM_OK=0
if command -v swtpm >/dev/null 2>&1; then
  mkdir -p tpmstate
  for _ in 1 2 3 4 5; do
    TPORT=$(( 20000 + (RANDOM % 20000) * 2 ))
    swtpm socket --tpm2 --tpmstate dir=tpmstate --server type=tcp,port=$TPORT,bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((TPORT + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear \
      --log file=swtpm.log &
    SWPID=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$TPORT) 2>/dev/null && break; sleep 0.1; done
    if kill -0 "$SWPID" 2>/dev/null; then PIDS+=("$SWPID"); TPM_OK=1; break; fi
  done
fi
if [ "$TPM_OK" = 1 ]; then
  TCTI="swtpm:host=127.0.0.1,port=$TPORT"
  D1=$(printf 'policy' | sha256sum | cut -c1-64)
  "$CISTA" -q evidence extend --tee tpm --tcti "$TCTI" --tpm-eventlog tpm.log --pcr 23 \
    --type cista.policy --digest "$D1" >/dev/null 2>&1
  "$CISTA" -q evidence get --tee tpm --tcti "$TCTI" --tpm-eventlog tpm.log --pcrs sha256:0-7,23 \
    -o tpm-ev.json >/dev/null 2>&1
  jq -r .ak_spki tpm-ev.json | base64 -d >ak.der
  "$CISTA" evidence verify tpm-ev.json --tee tpm --ak ak.der --json >tpm-claims.json 2>/dev/null
  PCR23=$(jq -r '.measurements.pcrs.sha256["23"]' tpm-claims.json)
  openssl pkey -pubin -inform DER -in ak.der -out ak.pem 2>/dev/null
  check "swtpm AK registered (PEM) and PCR 23 measured" test -s ak.pem -a -n "$PCR23"
else
  echo "# swtpm not installed: the tpm flow is skipped"
fi

# ---- the main server: TLS, SQLite ----
SIMM=$("$CISTA" evidence get --tee sim --state-dir sim -o simev.bin >/dev/null 2>&1;
       "$CISTA" evidence verify simev.bin --tee sim --sim-key sim/platform-pub.pem --json 2>/dev/null |
       jq -r .measurements.measurement)
PORT=$(free_port)
AKS='[]'; [ "$TPM_OK" = 1 ] && AKS='["../ak.pem"]'
jq --arg l "127.0.0.1:$PORT" --argjson aks "$AKS" \
  '.listen = $l | .tls = {cert: "../tls.pem", key: "../tls.key"} | .sim_platform_keys = ["../sim/platform-pub.pem"] | .tpm_aks = $aks | .workers = 2' \
  k/kbs.json >k/kbs.json.new && mv k/kbs.json.new k/kbs.json
start_kbs main k/kbs.json && ok "kbs serve over TLS on 127.0.0.1:$PORT" || not_ok "kbs serve over TLS"
MAIN_PID=$KBS_PID
URL=https://127.0.0.1:$PORT
A=(--url "$URL" --ca ca.pem --admin-key k/admin-key.pem)
CURL=(curl -s --cacert ca.pem --max-time 20)

if [ "$TPM_OK" = 1 ]; then
  RV=$(jq -n --arg m "$SIMM" --arg p "$PCR23" '{version: "1.0.0", tees: {sim: {allow_insecure: true, measurements: {measurement: [$m]}}, tpm: {pcrs: {sha256: {"23": [$p]}}}}}')
else
  RV=$(jq -n --arg m "$SIMM" '{version: "1.0.0", tees: {sim: {allow_insecure: true, measurements: {measurement: [$m]}}}}')
fi
echo "$RV" >rv.json
check "admin set-reference-values" "$CISTA" -q kbs admin "${A[@]}" set-reference-values rv.json
check "admin put-resource" "$CISTA" -q kbs admin "${A[@]}" put-resource default/key/1 --value 'top-s3cret'
printf '\x00\x01binary\xff' >bin.dat
check "admin put-resource --file (binary)" "$CISTA" -q kbs admin "${A[@]}" put-resource default/key/bin --file bin.dat
check "admin get-resource returns the value" bash -c "[ \"\$('$CISTA' kbs admin ${A[*]} get-resource default/key/1)\" = top-s3cret ]"
check "admin list-resources" bash -c "'$CISTA' kbs admin ${A[*]} list-resources | jq -e '.resources == [\"default/key/1\",\"default/key/bin\"]'"

# ---- RCAR with sim evidence ----
check "RCAR 0.4.0 over TLS with sim evidence releases the secret" bash -c \
  "[ \"\$('$CISTA' kbs get-resource --url $URL --ca ca.pem --tee sim --state-dir sim default/key/1 2>/dev/null)\" = top-s3cret ]"
check "RCAR 0.2.0 (legacy shape) releases the secret" bash -c \
  "[ \"\$('$CISTA' kbs get-resource --url $URL --ca ca.pem --tee sim --state-dir sim --protocol 0.2.0 default/key/1 2>/dev/null)\" = top-s3cret ]"
check "binary resource round trips through the JWE" bash -c \
  "'$CISTA' kbs get-resource --url $URL --ca ca.pem --tee sim --state-dir sim -o got.dat default/key/bin 2>/dev/null && cmp got.dat bin.dat"
expect_exit "a KBS certificate from another CA is refused (exit 3)" 3 "certificate" \
  "$CISTA" kbs get-resource --url "$URL" --ca other-ca.pem --tee sim --state-dir sim default/key/1
expect_exit "missing resource is 404" 1 "404" \
  "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim default/key/nope
"$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim --token-out tok.jwt default/key/1 >/dev/null 2>&1
check "token is an ES256 JWT with an EAR affirming status" bash -c \
  "cut -d. -f1 tok.jwt | basenc --base64url -d 2>/dev/null | jq -e '.alg == \"ES256\"' >/dev/null; cut -d. -f2 tok.jwt | tr '_-' '/+' | { read s; while [ \$((\${#s} % 4)) != 0 ]; do s=\$s=; done; echo \$s; } | base64 -d | jq -e '.submods.cpu0[\"ear.status\"] == \"affirming\"'"
check "Authorization: Bearer token works without the cookie" bash -c \
  "${CURL[*]} -H \"Authorization: Bearer \$(cat tok.jwt)\" $URL/kbs/v0/resource/default/key/1 | jq -e '.protected and .encrypted_key and .iv and .ciphertext and .tag' >/dev/null"
check "TLS 1.2 is accepted" bash -c "${CURL[*]} --tlsv1.2 --tls-max 1.2 $URL/healthz | jq -e '.status == \"ok\"'"
check "TLS 1.3 is accepted" bash -c "${CURL[*]} --tlsv1.3 $URL/healthz | jq -e '.status == \"ok\"'"

# ---- RCAR by hand (curl) for the refusals ----
openssl ecparam -name prime256v1 -genkey -noout -out eph.pem 2>/dev/null
XY=$(openssl ec -in eph.pem -pubout -outform DER 2>/dev/null | tail -c 64 | xxd -p | tr -d '\n')
b64u() { xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '='; }
JWK=$(jq -nc --arg x "$(echo "${XY:0:64}" | b64u)" --arg y "$(echo "${XY:64:64}" | b64u)" \
  '{kty: "EC", crv: "P-256", alg: "ECDH-ES+A256KW", x: $x, y: $y}')
# auth JAR [TEE] -> nonce
auth() { "${CURL[@]}" -c "$1" -b "$1" -H 'Content-Type: application/json' \
  -d "{\"version\":\"0.4.0\",\"tee\":\"${2:-sim}\"}" "$URL/kbs/v0/auth" | jq -r .nonce; }
# body BODY_NONCE BIND_NONCE -> attest body with sim evidence binding BIND_NONCE and $JWK
body() {
  local jcs rd
  jcs=$(jq -cS -n --arg n "$2" --argjson k "$JWK" '{"additional-evidence": "", nonce: $n, "tee-pubkey": $k}')
  rd=$(printf '%s' "$jcs" | sha384sum | cut -c1-96)00000000000000000000000000000000
  "$CISTA" evidence get --tee sim --state-dir sim --report-data "$rd" -o ev.bin >/dev/null 2>&1
  jq -nc --arg n "$1" --argjson k "$JWK" --arg e "$(base64 -w0 ev.bin)" \
    '{"runtime-data": {nonce: $n, "tee-pubkey": $k}, "tee-evidence": {primary_evidence: {tee: "sim", evidence: $e}, additional_evidence: ""}}'
}
# attest JAR BODY -> "STATUS DETAIL"
attest() { "${CURL[@]}" -c "$1" -b "$1" -o resp.json -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary "$2" "$URL/kbs/v0/attest"; echo " $(jq -r '.detail // .token' resp.json 2>/dev/null)"; }
expect_status() { # NAME WANT_STATUS WORDS "STATUS DETAIL"
  if [ "${4%% *}" = "$2" ] && [[ "$4" == *"$3"* ]]; then ok "$1"; else not_ok "$1 (got: ${4:0:200})"; fi; }

N1=$(auth j1)
GOOD1=$(body "$N1" "$N1")
expect_status "hand-made RCAR (jq JCS + sha384 + zero padding) attests" 200 "ey" "$(attest j1 "$GOOD1")"
expect_status "replayed attestation on the same session is refused" 401 "already used" "$(attest j1 "$GOOD1")"
N2=$(auth j2)
expect_status "replayed attestation on a new session: nonce mismatch" 401 "nonce does not match" "$(attest j2 "$GOOD1")"
N3=$(auth j3)
expect_status "nonce mismatch in runtime-data is refused" 401 "nonce does not match" "$(attest j3 "$(body AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "$N3")")"
N4=$(auth j4)
expect_status "REPORT_DATA not binding nonce+tee-pubkey is refused" 401 "report data" "$(attest j4 "$(body "$N4" "$N1")")"
N5=$(auth j5)
OTHERJWK=$JWK
JWK=$(jq -c '.x = "'"$(printf '%064x' 1 | b64u)"'"' <<<"$OTHERJWK")
expect_status "tee-pubkey that is not a valid key is refused" 400 "tee-pubkey" "$(attest j5 "$(body "$N5" "$N5")")"
# padding the JWK (it is kept with the attested session and put into the token) is refused
N5b=$(auth j5b)
JWK=$(jq -c --arg pad "$(head -c 20000 /dev/zero | tr '\0' a)" '.pad = $pad' <<<"$OTHERJWK")
expect_status "tee-pubkey with extra members (padding) is refused" 400 "unexpected member" "$(attest j5b "$(body "$N5b" "$N5b")")"
JWK=$OTHERJWK
if [ "$TPM_OK" = 1 ]; then
  N6=$(auth j6 tpm)
  expect_status "sim evidence on a session opened for tpm is refused" 401 "opened for tee tpm" "$(attest j6 "$(body "$N6" "$N6")")"
else
  N6=$(auth j6 snp)
  expect_status "sim evidence on a session opened for snp is refused" 401 "opened for tee snp" "$(attest j6 "$(body "$N6" "$N6")")"
fi
expect_status "attest without a session cookie is refused" 401 "auth first" "$("${CURL[@]}" -o resp.json -w '%{http_code}' -d '{}' "$URL/kbs/v0/attest"; echo " $(jq -r .detail resp.json)")"
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' -d '{"version":"0.9.1","tee":"sim"}' "$URL/kbs/v0/auth")
expect_status "unknown protocol version: clear 400 naming the versions spoken" 400 "0.4.0 and 0.2.0" "$st $(jq -r .detail resp.json)"
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' -d '{"version":"0.4.0",' "$URL/kbs/v0/auth")
expect_status "malformed JSON is a 400 problem document" 400 "auth request" "$st $(jq -r .detail resp.json)"
head -c 3000000 /dev/zero | tr '\0' 'a' >big.txt
st=$("${CURL[@]}" -o /dev/null -w '%{http_code}' --data-binary @big.txt "$URL/kbs/v0/auth")
expect_status "oversized body is refused (413)" 413 "" "$st"
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' "$URL/kbs/v0/resource/default/key/1")
expect_status "resource without attestation is 401" 401 "not attested" "$st $(jq -r .detail resp.json)"
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' -H 'Authorization: Bearer e30.e30.AAAA' "$URL/kbs/v0/resource/default/key/1")
expect_status "forged bearer token is 401" 401 "" "$st"

# ---- the HTTP/1.1 layer (src/kbs/http1.c, server.c) with raw requests over TLS ----
# raw.py ADDR DATA [WAIT]: sends DATA (Python escapes) on one TLS connection, reads for WAIT s
# (default 1.5) or until the server closes; prints the statuses of the responses in order, then
# "closed" or "open", then C if a response said "Connection: close", A if one had the Allow
# line, and the seconds until the server closed.
cat >raw.py <<'PY'
import socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
data = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
wait = float(sys.argv[3]) if len(sys.argv) > 3 else 1.5
ctx = ssl.create_default_context(cafile="ca.pem")
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
t0 = time.time()
s.sendall(data)
s.settimeout(wait)
buf, closed = b"", False
try:
    while True:
        d = s.recv(65536)
        if not d:
            closed = True
            break
        buf += d
except socket.timeout:
    pass
except (ConnectionResetError, ssl.SSLError):
    closed = True
text, st, heads = buf.decode("latin-1"), [], ""
while text.startswith("HTTP/1."):  # one response after the other, each delimited by its length
    head, _, text = text.partition("\r\n\r\n")
    st.append(head.split(" ")[1])
    heads += head + "\r\n"
    for l in head.split("\r\n"):
        if l.lower().startswith("content-length:"):
            text = text[int(l.split(":")[1]):]
flags = ("C" if "\r\nConnection: close\r\n" in heads else "") + ("A" if "\r\nAllow: GET, POST, PUT, DELETE\r\n" in heads else "")
print(" ".join(st + ["closed" if closed else "open"] + ([flags] if flags else [])), "%.1f" % (time.time() - t0))
PY
HP=${URL#https://}
AB='{"version":"0.4.0","tee":"sim"}'
AUTHREQ="POST /kbs/v0/auth HTTP/1.1\\r\\nHost: kbs\\r\\nContent-Length: ${#AB}\\r\\n\\r\\n$AB"
raw() { python3 raw.py "$HP" "$@" 2>&1 | sed 's/ [0-9.]*$//'; }
check "two pipelined requests on one connection: two replies, in order, connection kept" \
  [ "$(raw "$AUTHREQ$AUTHREQ")" = "200 200 open" ]
check "HTTP/1.0 without keep-alive: the reply says Connection: close and the server closes" \
  [ "$(raw "POST /kbs/v0/auth HTTP/1.0\\r\\nContent-Length: ${#AB}\\r\\n\\r\\n$AB")" = "200 closed C" ]
check "a chunked body is refused (501), then the connection closed" \
  [ "$(raw "POST /kbs/v0/auth HTTP/1.1\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n0\\r\\n\\r\\n")" = "501 closed C" ]
check "two different Content-Lengths are refused (400)" \
  [ "$(raw "POST /kbs/v0/auth HTTP/1.1\\r\\nContent-Length: 3\\r\\nContent-Length: 4\\r\\n\\r\\nabcd")" = "400 closed C" ]
check "an unknown method is 405 with an Allow line" \
  [ "$(raw "PATCH /kbs/v0/auth HTTP/1.1\\r\\n\\r\\n")" = "405 closed CA" ]
check "a request head over 16 KiB is 431" \
  [ "$(raw "GET /kbs/v0/auth HTTP/1.1\\r\\nX-Pad: $(head -c 20000 /dev/zero | tr '\0' a)\\r\\n\\r\\n")" = "431 closed C" ]
check "a path with a bad percent escape is 400" \
  [ "$(raw "GET /kbs/v0/resource/a/%zz/c HTTP/1.1\\r\\n\\r\\n")" = "400 closed C" ]
check "Expect: 100-continue gets 100 Continue before the body is sent" \
  [ "$(raw "POST /kbs/v0/auth HTTP/1.1\\r\\nExpect: 100-continue\\r\\nContent-Length: ${#AB}\\r\\n\\r\\n")" = "100 open" ]
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' -H 'Expect: 100-continue' --data-binary "$AB" "$URL/kbs/v0/auth")
expect_status "  ... and curl's request with it is served" 200 "nonce" "$st $(cat resp.json)"

# ---- policy deny, sim not allowed ----
cat >deny.json <<'P'
{"version": "1.0.0", "anyOf": [{"name": "snp-only", "allOf": [{"claim": "tee", "equals": "snp"}, {"claim": "debug", "equals": false}]}]}
P
check "admin set-policy for default/prod/*" "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'default/prod/*' deny.json

# ---- counters (rollback anchors): compare-and-set over TLS with the attested token ----
cat >ctrpol.json <<'P'
{"version": "1.0.0", "anyOf": [{"name": "sim-anchor", "allOf": [{"claim": "tee", "equals": "sim"}]}]}
P
check "admin set-policy for default/anchor/*" "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'default/anchor/*' ctrpol.json
check "admin counter-reset creates a counter at 0" "$CISTA" -q kbs admin "${A[@]}" counter-reset default/anchor/v1
ctr() { # METHOD PATH [BODY] [TOKEN] -> "STATUS BODY"
  local tok=${4-$(cat tok.jwt)}
  local h=(); [ -n "$tok" ] && h=(-H "Authorization: Bearer $tok")
  if [ "$1" = POST ]; then
    "${CURL[@]}" -o resp.json -w '%{http_code}' "${h[@]}" -H 'Content-Type: application/json' -d "$3" "$URL/kbs/v0/counter/$2"
  else
    "${CURL[@]}" -o resp.json -w '%{http_code}' "${h[@]}" "$URL/kbs/v0/counter/$2"
  fi
  echo " $(cat resp.json)"
}
expect_status "counter GET with the attested token" 200 '"generation":0' "$(ctr GET default/anchor/v1)"
expect_status "counter advance 0 -> 1 (CAS)" 200 '"generation":1' \
  "$(ctr POST default/anchor/v1 '{"expected_generation":0,"generation":1,"root":"aabb"}')"
expect_status "a second advance from 0 conflicts (409, current value)" 409 '"generation":1' \
  "$(ctr POST default/anchor/v1 '{"expected_generation":0,"generation":2,"root":"ccdd"}')"
expect_status "an advance that does not move forward conflicts" 409 '"root":"aabb"' \
  "$(ctr POST default/anchor/v1 '{"expected_generation":1,"generation":1,"root":"ccdd"}')"
expect_status "advance 1 -> 2" 200 '"generation":2' \
  "$(ctr POST default/anchor/v1 '{"expected_generation":1,"generation":2,"root":"ccdd"}')"
expect_status "counter without a token is 401" 401 "not attested" \
  "$(ctr POST default/anchor/v1 '{"expected_generation":2,"generation":3,"root":""}' '')"
expect_status "counter with a forged token is 401" 401 "" \
  "$(ctr POST default/anchor/v1 '{"expected_generation":2,"generation":3,"root":""}' 'e30.e30.AAAA')"
check "admin counter-reset default/prod/c1" "$CISTA" -q kbs admin "${A[@]}" counter-reset default/prod/c1
expect_status "the release policy of the counter path denies sim (403)" 403 "snp-only" \
  "$(ctr POST default/prod/c1 '{"expected_generation":0,"generation":1,"root":""}')"
check "admin counter-get shows generation 2" bash -c "'$CISTA' kbs admin ${A[*]} counter-get default/anchor/v1 | jq -e '.generation == 2 and .root == \"ccdd\"'"
check "admin counter-delete" "$CISTA" -q kbs admin "${A[@]}" counter-delete default/prod/c1
check "every counter advance and refusal is audited" bash -c \
  "'$CISTA' kbs admin ${A[*]} audit --limit 10000 >ctr-audit.txt; grep -q 'advanced 0 -> 1' ctr-audit.txt && grep -q 'advanced 1 -> 2' ctr-audit.txt && grep -q 'conflict' ctr-audit.txt"
check "admin get-policy" bash -c "'$CISTA' kbs admin ${A[*]} get-policy 'default/prod/*' | jq -e '.anyOf[0].name == \"snp-only\"'"
"$CISTA" -q kbs admin "${A[@]}" put-resource default/prod/db --value 'prod-password' >/dev/null 2>&1
expect_exit "release policy deny: exit 3, names the rule, not the secret" 3 'snp-only' \
  "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim default/prod/db
check "the deny message does not contain the secret" bash -c "! grep -q prod-password out.txt"
# a database writer loosens the policy (snp -> sim) without the master key: refused, not released
sqlite3 k/kbs.db "UPDATE kv SET value = CAST(replace(CAST(value AS TEXT), '\"snp\"', '\"sim\"') AS BLOB) WHERE ns = 'policy' AND key = 'default/prod/*'"
sleep 1.2 # the policy cache's TTL
expect_exit "a policy modified in the database (not through the KBS) releases nothing (503)" 1 "503" \
  "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim default/prod/db
check "  ... and the server says the document was modified outside the KBS" grep -q "modified outside" "$TMP/main.err"
check "admin set-policy again restores it (tagged)" "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'default/prod/*' deny.json
echo '{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"tee","equals":' >badpol.json
expect_exit "malformed release policy is rejected by the admin API" 1 "400" \
  "$CISTA" kbs admin "${A[@]}" set-policy --key default badpol.json
jq '.tees.sim = {}' rv.json >rv-nosim.json
"$CISTA" -q kbs admin "${A[@]}" set-reference-values rv-nosim.json
expect_exit "sim not allowed by the reference values: exit 3" 3 "allow_insecure" \
  "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim default/key/1
"$CISTA" -q kbs admin "${A[@]}" set-reference-values rv.json

# ---- admin authentication ----
st=$("${CURL[@]}" -o resp.json -w '%{http_code}' --data-binary x "$URL/kbs/v0/resource/default/key/x")
expect_status "admin call without a token is 401" 401 "admin" "$st $(jq -r .detail resp.json)"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkey -out wrong-admin.pem 2>/dev/null
expect_exit "admin call signed by the wrong key: exit 3" 3 "does not verify" \
  "$CISTA" kbs admin --url "$URL" --ca ca.pem --admin-key wrong-admin.pem put-resource default/key/x --value y
TOKA=$("$CISTA" kbs admin --admin-key k/admin-key.pem token)
st1=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKA" "$URL/kbs/v0/reference-values")
st2=$("${CURL[@]}" -o resp.json -w '%{http_code}' -H "Authorization: Bearer $TOKA" "$URL/kbs/v0/reference-values")
st12="$st1,$st2"
expect_status "admin token replay (same jti) is refused" "200,401" "replayed" "$st12 $(jq -r .detail resp.json)"
st=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat tok.jwt)" "$URL/kbs/v0/audit")
expect_status "an attestation token is not an admin token" 401 "" "$st"

# ---- tpm ----
if [ "$TPM_OK" = 1 ]; then
  "$CISTA" -q kbs admin "${A[@]}" put-resource default/tpm/k --value 'tpm-secret' >/dev/null 2>&1
  echo '{"version":"1.0.0","anyOf":[{"name":"tpm","allOf":[{"claim":"tee","equals":"tpm"},{"claim":"appraisal.status","equals":"affirming"}]}]}' >tpmpol.json
  "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'default/tpm/*' tpmpol.json
  check "RCAR with swtpm quote evidence (registered AK, PCR 23 reference) releases" bash -c \
    "[ \"\$('$CISTA' kbs get-resource --url $URL --ca ca.pem --tee tpm --tcti '$TCTI' --tpm-eventlog tpm.log --pcrs sha256:0-7,23 default/tpm/k 2>/dev/null)\" = tpm-secret ]"
  # init-data with evidence that binds no launch data: the quote covers only the nonce and key,
  # so the client's init-data must neither reach the token nor satisfy a release rule
  N7=$(auth j7 tpm)
  J7=$(jq -cS -n --arg n "$N7" --argjson k "$JWK" '{"additional-evidence": "", nonce: $n, "tee-pubkey": $k}')
  RD7=$(printf '%s' "$J7" | sha384sum | cut -c1-96)00000000000000000000000000000000
  "$CISTA" -q evidence get --tee tpm --tcti "$TCTI" --tpm-eventlog tpm.log --pcrs sha256:0-7,23 \
    --report-data "$RD7" -o tpm-ev7.json >/dev/null 2>&1
  ID7="algorithm = \"sha256\"  # chosen by the client"
  B7=$(jq -nc --arg n "$N7" --argjson k "$JWK" --arg id "$ID7" --slurpfile e tpm-ev7.json \
    '{"init-data": {format: "toml", body: $id}, "runtime-data": {nonce: $n, "tee-pubkey": $k}, "tee-evidence": {primary_evidence: $e[0], additional_evidence: ""}}')
  expect_status "tpm evidence with the client's init-data attests (hand-made RCAR)" 200 "ey" "$(attest j7 "$B7")"
  jq -r .token resp.json >tok7.jwt
  jwt_payload() { cut -d. -f2 "$1" | tr '_-' '/+' | { read -r s; while [ $((${#s} % 4)) != 0 ]; do s=$s=; done; echo "$s"; } | base64 -d; }
  check "  ... but the init-data, which a TPM quote does not bind, is not in its token" bash -c \
    "$(declare -f jwt_payload); jwt_payload tok7.jwt | jq -e '[.. | objects | has(\"init_data_digest\")] | any | not' >/dev/null"
  ID7D=$(printf '%s' "$ID7" | sha256sum | cut -c1-64)
  jq -n --arg d "$ID7D" '{version: "1.0.0", anyOf: [{allOf: [{claim: "tee", equals: "tpm"}, {claim: "init_data_digest", equals: $d}]}]}' >idpol.json
  "$CISTA" -q kbs admin "${A[@]}" set-policy --key 'default/tpmid/*' idpol.json
  "$CISTA" -q kbs admin "${A[@]}" put-resource default/tpmid/k --value 'needs-init-data' >/dev/null 2>&1
  st=$("${CURL[@]}" -o resp.json -w '%{http_code}' -H "Authorization: Bearer $(cat tok7.jwt)" "$URL/kbs/v0/resource/default/tpmid/k")
  expect_status "  ... nor satisfies a release rule on init_data_digest (403)" 403 "init_data_digest" "$st $(jq -r .detail resp.json)"
  "$CISTA" -q evidence extend --tee tpm --tcti "$TCTI" --tpm-eventlog tpm.log --pcr 23 --type cista.policy --digest "$D1" >/dev/null 2>&1
  expect_exit "tpm with PCR 23 changed: contraindicated, exit 3" 3 "pcrs.sha256.23" \
    "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee tpm --tcti "$TCTI" --tpm-eventlog tpm.log --pcrs sha256:0-7,23 default/tpm/k
fi

# ---- concurrency: 200 clients, 25 at a time ----
seq 200 | timeout 120 xargs -P 25 -I{} sh -c \
  "v=\$('$CISTA' kbs get-resource --url $URL --ca ca.pem --tee sim --state-dir sim default/key/1 2>/dev/null); echo \"\$v\"" >conc.txt
check "200 concurrent clients all get the secret" bash -c "[ \$(grep -c '^top-s3cret$' conc.txt) = 200 ]"
check "audit log: hash chain intact, every decision recorded" bash -c \
  "'$CISTA' kbs admin ${A[*]} audit --limit 10000 >audit.txt; tail -1 audit.txt | grep -q 'hash chain: ok' && [ \$(grep -c ' resource allow ' audit.txt) -ge 200 ] && grep -q 'attest   deny' audit.txt"
check "the default per-peer limits refused no handshake of the run" bash -c "! grep -q 'TLS handshake.*refused' $TMP/main.err"
check "no secret in the server log or the audit log" bash -c "! grep -q -e top-s3cret -e prod-password $TMP/main.err audit.txt"
# ---- an audit log that cannot be written: no decision leaves unrecorded ----
sqlite3 k/kbs.db "CREATE TRIGGER test_audit_full BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'full (test)'); END;"
expect_exit "audit log unwritable: the reply is withheld (503), nothing released unrecorded" 1 "503" \
  "$CISTA" kbs get-resource --url "$URL" --ca ca.pem --tee sim --state-dir sim default/key/1
sqlite3 k/kbs.db "DROP TRIGGER test_audit_full;"
check "  ... and the secret is released again once the audit log works" bash -c \
  "[ \"\$('$CISTA' kbs get-resource --url $URL --ca ca.pem --tee sim --state-dir sim default/key/1 2>/dev/null)\" = top-s3cret ]"
# ---- a database writer edits an audit entry and recomputes the chain without the master key ----
# unkeyed_hash PREV TIME BODY: the hash a cista before keyed chains stored (SHA-256, no key)
unkeyed_hash() { printf '%s\n%s\n%s' "$1" "$2" "$3" | sha256sum | cut -c1-64; }
TID=$(sqlite3 k/kbs.db "SELECT min(id) FROM audit WHERE body LIKE '%\"decision\":\"deny\"%'")
sqlite3 k/kbs.db "DROP TRIGGER audit_no_update; UPDATE audit SET body = replace(body, '\"decision\":\"deny\"', '\"decision\":\"allow\"') WHERE id = $TID"
prev=$(sqlite3 k/kbs.db "SELECT hash FROM audit WHERE id < $TID ORDER BY id DESC LIMIT 1")
sqlite3 -separator $'\x1f' k/kbs.db "SELECT id, time, body FROM audit WHERE id >= $TID ORDER BY id" >rows.txt
{ echo 'BEGIN;'
  while IFS=$'\x1f' read -r id t b; do
    h=$(unkeyed_hash "$prev" "$t" "$b")
    echo "UPDATE audit SET prev = '$prev', hash = '$h' WHERE id = $id;"
    prev=$h
  done <rows.txt
  echo 'COMMIT;'; } >rechain.sql
sqlite3 k/kbs.db <rechain.sql
# "unkeyed but follows keyed": the recomputed SHA-256 matched (the edit was done well); only the key shows it
expect_exit "an audit entry edited in SQLite with the SHA-256 chain recomputed: chain broken (exit 3)" 3 \
  "hash chain: audit entry $TID is unkeyed but follows keyed entries" "$CISTA" kbs admin "${A[@]}" audit --limit 1
expect_exit "audit-adopt is refused unless the KBS config switches adoption on" 3 "audit entries is off" \
  "$CISTA" kbs admin "${A[@]}" audit-adopt "$(printf '%064d' 0)"
stop_pid "$MAIN_PID"
check "SIGTERM stops the server cleanly" bash -c "! kill -0 $MAIN_PID 2>/dev/null"
jq 'del(.tls)' k/kbs.json >k/plain.json
expect_exit "plain HTTP on a non-loopback address is refused" 1 "refusing plain HTTP" \
  "$CISTA" kbs serve --config k/plain.json --listen 0.0.0.0:0

# ---- per-peer TLS limits: open connections and handshake rate of one address ----
# tlsconn.py ADDR hold: one TLS connection, "A" once up, held until killed (60 s at most).
# tlsconn.py ADDR seq SPEC: handshakes one after another, each closed at once, e.g. "8,p1.2,3" is
# 8 of them, a 1.2 s pause, 3 more; prints a letter each ("A" done, "R" refused with the KBS's
# internal_error alert, "E" another failure) and "|" for a pause.
cat >tlsconn.py <<'PY'
import socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
host = host.strip("[]")
ctx = ssl.create_default_context(cafile='ca.pem')
def attempt():
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        return ctx.wrap_socket(s, server_hostname=host), 'A'
    except ssl.SSLError as e:
        s.close()
        return None, 'R' if e.reason == 'TLSV1_ALERT_INTERNAL_ERROR' else 'E'
if sys.argv[2] == 'hold':
    t, r = attempt()
    print(r, flush=True)
    if t:
        time.sleep(60)
else:
    out = ''
    for step in sys.argv[3].split(','):
        if step[0] == 'p':
            time.sleep(float(step[1:]))
            out += '|'
            continue
        for _ in range(int(step)):
            t, r = attempt()
            out += r
            if t:
                t.close()
    print(out)
PY
cp -r k k6
jq '.listen = "127.0.0.1:0" | .limits = {connections_per_peer: 3, handshakes_per_peer_per_s: 0}' k/kbs.json >k6/kbs.json
if start_kbs conncap k6/kbs.json; then
  CPID6=$KBS_PID; A6=$KBS_ADDR
  HOLD=()
  for i in 1 2 3; do
    python3 tlsconn.py "$A6" hold >"hold.$i" 2>&1 &
    HOLD+=($!); PIDS+=($!)
  done
  for _ in $(seq 100); do [ "$(cat hold.1 hold.2 hold.3 | grep -c '^A$')" = 3 ] && break; sleep 0.05; done
  check "connections_per_peer 3: three TLS connections of one address are up" \
    [ "$(cat hold.1 hold.2 hold.3 | grep -c '^A$')" = 3 ]
  check "  ... a fourth handshake, and nine more, are refused (internal_error alert)" \
    [ "$(python3 tlsconn.py "$A6" seq 10)" = RRRRRRRRRR ]
  check "  ... logged once for the ten, not once per connection" \
    [ "$(grep -c 'TLS handshake from 127.0.0.1 refused: it holds 3 connections (limits.connections_per_peer)' "$TMP/conncap.err")" = 1 ]
  kill "${HOLD[0]}"; wait "${HOLD[0]}" 2>/dev/null
  got=R
  for _ in $(seq 40); do got=$(python3 tlsconn.py "$A6" seq 1); [ "$got" = A ] && break; sleep 0.05; done
  check "  ... one closes: a new handshake is accepted" [ "$got" = A ]
  kill "${HOLD[1]}" "${HOLD[2]}"; wait "${HOLD[1]}" "${HOLD[2]}" 2>/dev/null
  sleep 0.2
  check "  ... and RCAR works under the cap" bash -c \
    "[ \"\$('$CISTA' kbs get-resource --url https://$A6 --ca ca.pem --tee sim --state-dir sim default/key/1 2>/dev/null)\" = top-s3cret ]"
  stop_pid "$CPID6"
fi
cp -r k k7
jq '.listen = "127.0.0.1:0" | .limits = {connections_per_peer: 0, handshakes_per_peer_per_s: 1, handshake_burst: 5}' k/kbs.json >k7/kbs.json
if start_kbs hsrate k7/kbs.json; then
  R7=$(python3 tlsconn.py "$KBS_ADDR" seq 8,p1.3,3)
  check "handshakes_per_peer_per_s 1, burst 5: 5 handshakes, refused, one more after 1.3 s ($R7)" \
    [ "$R7" = "AAAAARRR|ARR" ]
  check "  ... logged once" \
    [ "$(grep -c 'TLS handshake from 127.0.0.1 refused: more than 1 handshakes per second' "$TMP/hsrate.err")" = 1 ]
  stop_pid "$KBS_PID"
fi
# a connection the server closes itself (idle past "timeout", the client still there) is released
jq '.listen = "127.0.0.1:0" | .timeout = 2 | .limits = {connections_per_peer: 1}' k/kbs.json >k7/t.json
if start_kbs idlecap k7/t.json; then
  python3 tlsconn.py "$KBS_ADDR" hold >hold.t 2>&1 &
  HT=$!; PIDS+=($HT)
  for _ in $(seq 100); do grep -q '^A$' hold.t && break; sleep 0.05; done
  r1=$(python3 tlsconn.py "$KBS_ADDR" seq 1)
  sleep 2.5
  r2=$(python3 tlsconn.py "$KBS_ADDR" seq 1)
  kill -0 "$HT" 2>/dev/null && r2="$r2 (its client still up)"
  check "connections_per_peer 1: refused while one is open, accepted once the server timed it out" \
    [ "$(cat hold.t) $r1 $r2" = "A R A (its client still up)" ]
  kill "$HT"; wait "$HT" 2>/dev/null
  sleep 0.3
  # s_client offers a key share for X448 only, which the KBS does not take: a HelloRetryRequest
  # and a second ClientHello on the same connection, which must not count a second time
  HRR=$(openssl s_client -connect "$KBS_ADDR" -CAfile ca.pem -groups X448:X25519 -tls1_3 -msg </dev/null 2>&1)
  check "  ... a TLS 1.3 handshake with a HelloRetryRequest (two ClientHellos) counts once" bash -c \
    '[ "$(grep -c ServerHello <<<"$1")" = 2 ] && grep -q "New, TLSv1.3, Cipher is" <<<"$1"' _ "$HRR"
  sleep 0.3
  # a slow client: a request head that stops half-way is closed by the server ("timeout" 2 s),
  # not held open (the raw client waits 6 s for it; it must not close at once either)
  SL=$(python3 raw.py "$KBS_ADDR" "POST /kbs/v0/auth HTTP/1.1\\r\\nContent-Le" 6)
  check "a request that stops half-way is closed after the timeout ($SL s)" \
    bash -c '[ "${1% *}" = closed ] && awk -v t="${1##* }" "BEGIN { exit !(t >= 1.5) }"' _ "$SL"
  stop_pid "$KBS_PID"
fi
# IPv6: a peer is its /64 (the loopback's ::1 counts as ::/64)
if ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128'; then
  jq '.listen = "[::1]:0" | .limits = {connections_per_peer: 1}' k/kbs.json >k7/v6.json
  if start_kbs v6cap k7/v6.json; then
    python3 tlsconn.py "$KBS_ADDR" hold >hold.v6 2>&1 &
    H6=$!; PIDS+=($H6)
    for _ in $(seq 100); do grep -q '^A$' hold.v6 && break; sleep 0.05; done
    r6=$(python3 tlsconn.py "$KBS_ADDR" seq 2)
    check "IPv6: connections_per_peer 1 on [::1]: one up, the next two refused ($(cat hold.v6) $r6)" \
      [ "$(cat hold.v6) $r6" = "A RR" ]
    check "  ... logged as the peer's /64" \
      grep -q 'TLS handshake from ::/64 refused: it holds 1 connections' "$TMP/v6cap.err"
    kill "$H6"; wait "$H6" 2>/dev/null
    stop_pid "$KBS_PID"
  fi
else
  echo "# no ::1 on lo: the IPv6 per-peer test is skipped"
fi
jq '.limits = {connections_per_peer: 3, conections: 1}' k/kbs.json >k7/bad.json
expect_exit "an unknown member of limits is refused at startup" 1 'limits: unknown member "conections"' \
  "$CISTA" kbs serve --config k7/bad.json

# ---- short lifetimes: expired session and token ----
cp -r k k2 && rm -f k2/kbs.db*
jq '.listen = "127.0.0.1:0" | .sessions.nonce_lifetime = 1 | .token_lifetime = 2 | del(.tls)' k/kbs.json >k2/kbs.json
if start_kbs short k2/kbs.json; then
  SURL=http://$KBS_ADDR; SPID=$KBS_PID
  "$CISTA" -q kbs admin --url "$SURL" --admin-key k2/admin-key.pem set-reference-values rv.json
  "$CISTA" -q kbs admin --url "$SURL" --admin-key k2/admin-key.pem put-resource default/key/1 --value v
  SN=$(curl -s -c js -b js -d '{"version":"0.4.0","tee":"sim"}' "$SURL/kbs/v0/auth" | jq -r .nonce)
  SB=$(body "$SN" "$SN")
  SID=$(awk '$6 == "kbs-session-id" {print $7}' js)
  sleep 2.2
  st=$(curl -s -H "Cookie: kbs-session-id=$SID" -o resp.json -w '%{http_code}' --data-binary "$SB" "$SURL/kbs/v0/attest")
  expect_status "expired session (nonce lifetime 1 s) is refused" 401 "expired" "$st $(jq -r .detail resp.json)"
  "$CISTA" kbs get-resource --url "$SURL" --tee sim --state-dir sim --token-out stok.jwt default/key/1 >/dev/null 2>&1
  sleep 3
  st=$(curl -s -o resp.json -w '%{http_code}' -H "Authorization: Bearer $(cat stok.jwt)" "$SURL/kbs/v0/resource/default/key/1")
  expect_status "expired attestation token is refused" 401 "expired" "$st $(jq -r .detail resp.json)"
  stop_pid "$SPID"
fi

# ---- a store written by an older cista: its unkeyed audit entries must be adopted once ----
cp -r k k4 && rm -f k4/kbs.db*
sqlite3 k4/kbs.db "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);"
prev=
for i in 1 2 3; do
  b="{\"decision\":\"allow\",\"event\":\"auth\",\"reason\":\"old $i\",\"tee\":\"sim\"}"
  h=$(unkeyed_hash "$prev" "$((1000 + i))" "$b")
  sqlite3 k4/kbs.db "INSERT INTO audit (time, body, prev, hash) VALUES ($((1000 + i)), '$b', '$prev', '$h')"
  prev=$h
done
jq '.listen = "127.0.0.1:0" | del(.tls) | .audit_adopt = true' k/kbs.json >k4/kbs.json
if start_kbs legacy k4/kbs.json; then
  LURL=http://$KBS_ADDR; LPID=$KBS_PID
  L=(--url "$LURL" --admin-key k4/admin-key.pem)
  "$CISTA" kbs get-resource --url "$LURL" --tee sim --state-dir sim default/key/1 >/dev/null 2>&1 # keyed entries follow
  expect_exit "unkeyed entries of an older cista are not accepted until adopted (exit 3, names the hash)" 3 \
    "entries 1-3 are unkeyed.*audit-adopt $prev" "$CISTA" kbs admin "${L[@]}" audit
  expect_exit "audit-adopt of another hash is refused" 1 "end at hash $prev" \
    "$CISTA" kbs admin "${L[@]}" audit-adopt "$(printf '%064d' 0)"
  check "audit-adopt HASH" "$CISTA" -q kbs admin "${L[@]}" audit-adopt "$prev"
  check "  ... then the chain verifies, and the adoption is in the log" bash -c \
    "'$CISTA' kbs admin ${L[*]} audit >adopt.txt; tail -1 adopt.txt | grep -q 'hash chain: ok' && grep -Eq 'admin +allow +audit-adopt $prev' adopt.txt"
  stop_pid "$LPID"
fi

# ---- release_default deny: with no covering policy (e.g. its rows deleted) nothing is released ----
cp -r k k5 && rm -f k5/kbs.db*
jq '.listen = "127.0.0.1:0" | del(.tls) | .release_default = "deny"' k/kbs.json >k5/kbs.json
if start_kbs deny-default k5/kbs.json; then
  DURL=http://$KBS_ADDR; DPID=$KBS_PID
  D=(--url "$DURL" --admin-key k5/admin-key.pem)
  "$CISTA" -q kbs admin "${D[@]}" set-reference-values rv.json
  "$CISTA" -q kbs admin "${D[@]}" put-resource default/key/1 --value dd-secret
  expect_exit "release_default deny: a resource no stored policy covers is refused (403)" 3 \
    "release_default is deny" "$CISTA" kbs get-resource --url "$DURL" --tee sim --state-dir sim default/key/1
  echo '{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"tee","equals":"sim"}]}]}' >simpol.json
  "$CISTA" -q kbs admin "${D[@]}" set-policy simpol.json
  check "  ... and released once \"default\" has a policy" bash -c \
    "[ \"\$('$CISTA' kbs get-resource --url $DURL --tee sim --state-dir sim default/key/1 2>/dev/null)\" = dd-secret ]"
  sqlite3 k5/kbs.db "DELETE FROM kv WHERE ns = 'policy'"
  sleep 1.2 # the policy cache's TTL
  expect_exit "  ... and refused again when a database writer deletes that policy row" 3 \
    "release_default is deny" "$CISTA" kbs get-resource --url "$DURL" --tee sim --state-dir sim default/key/1
  stop_pid "$DPID"
fi

# ---- crash: kill -9 under write load, every acknowledged write survives ----
cp -r k k3 && rm -f k3/kbs.db*
jq '.listen = "127.0.0.1:0" | del(.tls)' k/kbs.json >k3/kbs.json
if start_kbs crash k3/kbs.json; then
  CURL3=http://$KBS_ADDR; CPID=$KBS_PID
  ( for i in $(seq 1 100000); do
      "$CISTA" -q kbs admin --url "$CURL3" --admin-key k3/admin-key.pem put-resource "crash/k/$i" --value "value-$i" >/dev/null 2>&1 && echo "$i" >>acked.txt || break
    done ) &
  LOADPID=$!
  PIDS+=("$LOADPID")
  sleep 2.5
  kill -9 "$CPID"; wait "$CPID" 2>/dev/null
  wait "$LOADPID" 2>/dev/null
  ACK=$(wc -l <acked.txt)
  start_kbs crash2 k3/kbs.json
  CURL3=http://$KBS_ADDR; CPID=$KBS_PID
  missing=0
  for i in $(cat acked.txt); do
    v=$("$CISTA" kbs admin --url "$CURL3" --admin-key k3/admin-key.pem get-resource "crash/k/$i" 2>/dev/null)
    [ "$v" = "value-$i" ] || missing=$((missing + 1))
  done
  check "kill -9 under load: all $ACK acknowledged writes present after restart" [ "$ACK" -gt 5 -a "$missing" = 0 ]
  check "audit chain intact after the crash" bash -c "'$CISTA' kbs admin --url $CURL3 --admin-key k3/admin-key.pem audit --limit 1 | tail -1 | grep -q 'hash chain: ok'"
  stop_pid "$CPID"
fi

# ---- two replicas on one PostgreSQL ----
if [ -x "$PGBIN/initdb" ] && id postgres >/dev/null 2>&1; then
  PGDIR=$(mktemp -d /tmp/kbs-pg.XXXXXX)
  chown postgres "$PGDIR"
  PGPORT=$(free_port)
  if runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >"$PGDIR/initdb.log" 2>&1 &&
     runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/pg.log" -w -t 30 \
       -o "-k $PGDIR -p $PGPORT -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
    ok "PostgreSQL started on 127.0.0.1:$PGPORT"
    DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
    for r in ra rb; do
      cp -r k "$r" && rm -f "$r"/kbs.db*
      jq --arg d "$DSN" '.listen = "127.0.0.1:0" | del(.tls) | .store = {type: "postgres", dsn: $d} | .sessions.backend = "store"' k/kbs.json >"$r/kbs.json"
    done
    start_kbs ra ra/kbs.json; RA=http://$KBS_ADDR; RAPID=$KBS_PID
    start_kbs rb rb/kbs.json; RB=http://$KBS_ADDR; RBPID=$KBS_PID
    "$CISTA" -q kbs admin --url "$RA" --admin-key k/admin-key.pem set-reference-values rv.json
    check "replica A stores a resource" "$CISTA" -q kbs admin --url "$RA" --admin-key k/admin-key.pem put-resource default/ha/1 --value ha-secret
    check "replica B releases it (shared store)" bash -c \
      "[ \"\$('$CISTA' kbs get-resource --url $RB --tee sim --state-dir sim default/ha/1 2>/dev/null)\" = ha-secret ]"
    HN=$(curl -s -c jh -b jh -d '{"version":"0.4.0","tee":"sim"}' "$RA/kbs/v0/auth" | jq -r .nonce)
    HB=$(body "$HN" "$HN")
    st=$(curl -s -c jh -b jh -o resp.json -w '%{http_code}' --data-binary "$HB" "$RB/kbs/v0/attest")
    expect_status "auth on replica A, attest on replica B (shared sessions)" 200 "ey" "$st $(jq -r .token resp.json)"
    st=$(curl -s -c jh -b jh -o resp.json -w '%{http_code}' --data-binary "$HB" "$RA/kbs/v0/attest")
    expect_status "the replayed attestation is refused by replica A" 401 "already used" "$st $(jq -r .detail resp.json)"
    st=$(curl -s -b jh -o resp.json -w '%{http_code}' "$RA/kbs/v0/resource/default/ha/1")
    expect_status "cookie session attested on B fetches on A" 200 "" "$st"
    TOKB=$("$CISTA" kbs admin --admin-key k/admin-key.pem token)
    curl -s -o /dev/null -H "Authorization: Bearer $TOKB" "$RA/kbs/v0/reference-values"
    st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKB" "$RB/kbs/v0/reference-values")
    expect_status "admin token replayed on the other replica is refused" 401 "" "$st"
    seq 40 | timeout 60 xargs -P 10 -I{} sh -c "u=\$([ \$(({} % 2)) = 0 ] && echo $RA || echo $RB); v=\$('$CISTA' kbs get-resource --url \$u --tee sim --state-dir sim default/ha/1 2>/dev/null); echo \"\$v\"" >ha.txt
    check "40 clients across both replicas" bash -c "[ \$(grep -c '^ha-secret$' ha.txt) = 40 ]"
    check "one audit hash chain across both replicas" bash -c \
      "'$CISTA' kbs admin --url $RB --admin-key k/admin-key.pem audit --limit 10000 >ha-audit.txt; tail -1 ha-audit.txt | grep -q 'hash chain: ok' && [ \$(grep -c ' resource allow ' ha-audit.txt) -ge 41 ]"
    # the counter CAS is one conditional UPDATE: 20 clients race on both replicas, one wins
    "$CISTA" kbs get-resource --url "$RA" --tee sim --state-dir sim --token-out tokpg.jwt default/ha/1 >/dev/null 2>&1
    check "admin counter-reset on replica A (generation 5)" "$CISTA" -q kbs admin --url "$RA" --admin-key k/admin-key.pem counter-reset default/ha/ctr 5
    rp=()
    for i in $(seq 20); do
      u=$RA; [ $((i % 2)) = 0 ] && u=$RB
      curl -s --max-time 30 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat tokpg.jwt)" \
        -H 'Content-Type: application/json' \
        -d "{\"expected_generation\":5,\"generation\":6,\"root\":\"$(printf %02x "$i")\"}" \
        "$u/kbs/v0/counter/default/ha/ctr" >"race.$i" &
      rp+=($!)
    done
    wait "${rp[@]}"
    wins=0; cfl=0
    for i in $(seq 20); do case $(cat "race.$i") in 200) wins=$((wins + 1)) ;; 409) cfl=$((cfl + 1)) ;; esac; done
    check "PostgreSQL two-replica counter race: exactly one of 20 wins, 19 get 409 ($wins/$cfl)" [ "$wins" = 1 -a "$cfl" = 19 ]
    check "the counter is at generation 6 on the other replica" bash -c \
      "'$CISTA' kbs admin --url $RB --admin-key k/admin-key.pem counter-get default/ha/ctr | jq -e '.generation == 6' >/dev/null"
    check "PostgreSQL refuses UPDATE/DELETE of audit rows" bash -c \
      "! runuser -u postgres -- $PGBIN/../bin/psql -h 127.0.0.1 -p $PGPORT -U postgres -qAt -c 'DELETE FROM audit' 2>/dev/null | grep -q DELETE && runuser -u postgres -- psql -h 127.0.0.1 -p $PGPORT -U postgres -c 'DELETE FROM audit' 2>&1 | grep -q append-only"
    stop_pid "$RAPID"; stop_pid "$RBPID"
  else
    not_ok "PostgreSQL did not start"; tail -5 "$PGDIR/pg.log" "$PGDIR/initdb.log" 2>/dev/null | sed 's/^/# /'
  fi
else
  echo "# PostgreSQL 15 not installed: replica tests skipped"
fi

echo "# $n tests, $failed failed"
[ "$failed" = 0 ]
