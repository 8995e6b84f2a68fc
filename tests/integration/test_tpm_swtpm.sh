#!/usr/bin/env bash
# test_tpm_swtpm.sh - `cista evidence extend|get|verify --tee tpm` end to end against a real
# software TPM (swtpm, socket mode on loopback, started and killed by this script): round trip,
# wrong nonce, tampered PCR value, wrong / missing AK, replayed and spliced quotes, event log
# not matching (a PCR extended behind the log's back, a modified log), PCR selection.
# Usage: tests/integration/test_tpm_swtpm.sh [path/to/cista]  (run from the repo root)
# swtpm missing: a loud SKIP (exit 0), unless CISTA_REQUIRE_SWTPM=1 (then it fails).
set -uo pipefail
CISTA=${1:-build/src/cli/cista}
case $CISTA in /*) ;; *) CISTA=$PWD/$CISTA ;; esac

if ! command -v swtpm >/dev/null 2>&1; then
  echo "######################################################################" >&2
  echo "# SKIP test_tpm_swtpm: swtpm is not installed (scripts/install-deps.sh)" >&2
  echo "######################################################################" >&2
  echo "ok 1 # SKIP swtpm is not installed"
  [ "${CISTA_REQUIRE_SWTPM:-0}" = 1 ] && exit 1
  exit 0
fi

TMP=$(mktemp -d)
SWTPM_PID=
cleanup() {
  if [ -n "$SWTPM_PID" ]; then
    kill "$SWTPM_PID" 2>/dev/null
    wait "$SWTPM_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { local name=$1; shift; if "$@" >/dev/null; then ok "$name"; else not_ok "$name"; fi; }
# expect_refused NAME WORDS CMD...: exit status 3 and WORDS in the output
expect_refused() {
  local name=$1 words=$2; shift 2
  "$@" >"$TMP/out.txt" 2>&1
  local rc=$?
  if [ "$rc" = 3 ] && grep -q -- "$words" "$TMP/out.txt"; then ok "$name"; else
    not_ok "$name (exit $rc)"; sed 's/^/# /' "$TMP/out.txt" | head -5; fi
}

# Start swtpm on a free loopback port pair (retry a few random ports).
mkdir -p "$TMP/state"
for attempt in 1 2 3 4 5 6 7 8; do
  PORT=$((20000 + (RANDOM % 20000) * 2))
  swtpm socket --tpm2 --tpmstate dir="$TMP/state" \
    --server type=tcp,port=$PORT,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear --log file="$TMP/swtpm.log" &
  SWTPM_PID=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    kill -0 "$SWTPM_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SWTPM_PID" 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
    break
  fi
  kill "$SWTPM_PID" 2>/dev/null
  wait "$SWTPM_PID" 2>/dev/null
  SWTPM_PID=
done
if [ -z "$SWTPM_PID" ]; then
  echo "not ok 1 - swtpm did not start"; tail -5 "$TMP/swtpm.log" 2>/dev/null; exit 1
fi
TCTI="swtpm:host=127.0.0.1,port=$PORT"
LOG=$TMP/eventlog.jsonl
T=(--tcti "$TCTI" --tpm-eventlog "$LOG")
export TSS2_LOG=all+NONE
R1=$(printf '11%.0s' $(seq 64))
R2=$(printf '22%.0s' $(seq 64))

# Measurements: the policy hash and a container image digest into PCR 23, logged.
D1=$(printf 'policy' | sha256sum | cut -c1-64)
printf 'container-config' >"$TMP/config.json"
D2=$(sha256sum "$TMP/config.json" | cut -c1-64)
check "extend PCR 23 with the policy hash" "$CISTA" -q evidence extend --tee tpm "${T[@]}" --pcr 23 --type cista.policy --digest "$D1" --data "policy sha256"
check "extend PCR 23 with a file's digest" "$CISTA" -q evidence extend --tee tpm "${T[@]}" --pcr 23 --type cista.container --file "$TMP/config.json"
check "event log has two JSON lines" bash -c "[ \$(wc -l < '$LOG') = 2 ] && jq -e -s 'length == 2 and .[0].pcr == 23 and .[1].type == \"cista.container\"' '$LOG' >/dev/null"

# get -> verify round trip
check "get --tee tpm" "$CISTA" -q evidence get --tee tpm "${T[@]}" --report-data "$R1" -o "$TMP/ev1.json"
jq -r .ak_spki "$TMP/ev1.json" | base64 -d >"$TMP/ak.der"
check "verify with the registered AK and the nonce" bash -c "'$CISTA' evidence verify '$TMP/ev1.json' --tee tpm --ak '$TMP/ak.der' --report-data '$R1' >'$TMP/v.txt' && grep -q '^OK: tpm evidence' '$TMP/v.txt'"
"$CISTA" evidence verify "$TMP/ev1.json" --ak "$TMP/ak.der" --report-data "$R1" --json >"$TMP/claims.json" 2>"$TMP/err.txt"
check "kind detected without --tee" jq -e '.tee == "tpm" and .insecure == false' "$TMP/claims.json"
P23=$(printf '%064d%s' 0 "$D1" | xxd -r -p | sha256sum | cut -c1-64)
P23=$(printf '%s%s' "$P23" "$D2" | xxd -r -p | sha256sum | cut -c1-64)
check "PCR 23 claim equals the extends computed here" jq -e --arg p "$P23" '.measurements.pcrs.sha256["23"] == $p' "$TMP/claims.json"
check "event log replay verified PCR 23, two cista events" jq -e '.tpm.event_log.events == 2 and (.tpm.event_log.verified_pcrs.sha256 | index(23)) != null and .tpm.event_log.cista_events[0].data == "policy sha256"' "$TMP/claims.json"
check "report_data claim is the nonce" jq -e --arg r "$R1" '.report_data == $r and .tpm.extra_data == $r' "$TMP/claims.json"
check "AK is an ECC P-256 restricted signing key" jq -e '.tpm.ak.type == "EC-P-256" and .tpm.ak.attributes == "0x00050072" and .signers[0].source == "registered"' "$TMP/claims.json"
check "AK is recreated identically (primary from a fixed template)" bash -c "'$CISTA' -q evidence get --tee tpm --tcti '$TCTI' --tpm-eventlog '$LOG' --report-data '$R2' -o '$TMP/ev2.json' && [ \"\$(jq -r .ak_spki '$TMP/ev1.json')\" = \"\$(jq -r .ak_spki '$TMP/ev2.json')\" ]"

# refusals
expect_refused "wrong nonce is refused" "extraData" "$CISTA" evidence verify "$TMP/ev1.json" --tee tpm --ak "$TMP/ak.der" --report-data "$R2"
expect_refused "replayed quote (old nonce) is refused" "stale, replayed" "$CISTA" evidence verify "$TMP/ev1.json" --tee tpm --ak "$TMP/ak.der" --report-data "$R2"
jq --slurpfile b "$TMP/ev2.json" '.signature = $b[0].signature' "$TMP/ev1.json" >"$TMP/splice.json"
expect_refused "quote spliced with another quote's signature is refused" "does not verify" "$CISTA" evidence verify "$TMP/splice.json" --tee tpm --ak "$TMP/ak.der"
jq '.pcrs.sha256["7"] = "0101010101010101010101010101010101010101010101010101010101010101"' "$TMP/ev1.json" >"$TMP/pcr.json"
expect_refused "tampered PCR value is refused" "pcrDigest" "$CISTA" evidence verify "$TMP/pcr.json" --tee tpm --ak "$TMP/ak.der" --report-data "$R1"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkey -pubout -out "$TMP/other.pem" 2>/dev/null
expect_refused "another registered AK is refused" "another TPM" "$CISTA" evidence verify "$TMP/ev1.json" --tee tpm --ak "$TMP/other.pem"
jq 'del(.ak_spki, .ak_public)' "$TMP/ev1.json" >"$TMP/noak.json"
expect_refused "a quote not signed by the registered AK is refused" "signed by another AK" "$CISTA" evidence verify "$TMP/noak.json" --tee tpm --ak "$TMP/other.pem"
expect_refused "no trusted AK is refused" "no trusted attestation key" "$CISTA" evidence verify "$TMP/ev1.json" --tee tpm
jq '.cista_event_log[1].digest = "'"$D1"'"' "$TMP/ev1.json" >"$TMP/log.json"
expect_refused "modified event log is refused" "event log replay" "$CISTA" evidence verify "$TMP/log.json" --tee tpm --ak "$TMP/ak.der"
jq 'del(.cista_event_log[1])' "$TMP/ev1.json" >"$TMP/log2.json"
expect_refused "event log with a dropped event is refused" "PCR sha256:23" "$CISTA" evidence verify "$TMP/log2.json" --tee tpm --ak "$TMP/ak.der"
att=$(jq -r .attest "$TMP/ev1.json" | base64 -d | xxd -p | tr -d '\n')
bad=${att:0:80}$(printf '%02x' $(( 0x${att:80:2} ^ 1 )))${att:82}
jq --arg a "$(echo "$bad" | xxd -r -p | base64 -w0)" '.attest = $a' "$TMP/ev1.json" >"$TMP/att.json"
expect_refused "flipped TPMS_ATTEST byte is refused" "does not verify" "$CISTA" evidence verify "$TMP/att.json" --tee tpm --ak "$TMP/ak.der"

# PCR selection
check "get with --pcrs sha256:0-7,23" "$CISTA" -q evidence get --tee tpm "${T[@]}" --pcrs "sha256:0-7,23" --report-data "$R1" -o "$TMP/ev4.json"
"$CISTA" evidence verify "$TMP/ev4.json" --tee tpm --ak "$TMP/ak.der" --json >"$TMP/c4.json" 2>/dev/null
check "quote covers exactly PCR 0-7 and 23" jq -e '(.tpm.pcr_selection.sha256 | length) == 9 and (.measurements.pcrs.sha256 | keys | length) == 9' "$TMP/c4.json"
# A PCR extended without logging: the next quote no longer matches the log.
if command -v tpm2_pcrextend >/dev/null 2>&1; then
  check "extend PCR 23 behind the log's back (tpm2_pcrextend)" tpm2_pcrextend -T "$TCTI" "23:sha256=$D1"
  check "get after the unlogged extend" "$CISTA" -q evidence get --tee tpm "${T[@]}" --report-data "$R1" -o "$TMP/ev3.json"
  expect_refused "event log not matching the quoted PCR is refused" "extended without logging" "$CISTA" evidence verify "$TMP/ev3.json" --tee tpm --ak "$TMP/ak.der" --report-data "$R1"
else
  echo "# tpm2-tools not installed: unlogged-extend case skipped"
fi

"$CISTA" evidence get --tee tpm "${T[@]}" --pcrs "sha256:0-24" -o "$TMP/x.json" >/dev/null 2>&1
check "a PCR selection above 23 is a usage error" [ $? != 0 ]
"$CISTA" evidence get --tee tpm --tcti "swtpm:host=127.0.0.1,port=1" --tpm-eventlog "$LOG" -o "$TMP/x.json" >"$TMP/out.txt" 2>&1
check "an unreachable TPM is reported" grep -qi "tpm" "$TMP/out.txt"

echo "# $n tests, $failed failed"
[ "$failed" = 0 ]
