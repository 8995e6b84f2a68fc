#!/usr/bin/env bash
# test_policy_cli.sh - `cista policy gen|hash|check` through the real binary.
# Usage: tests/integration/test_policy_cli.sh [path/to/cista]  (run from the repo root)
set -uo pipefail
CISTA=${1:-build/src/cli/cista}
case $CISTA in /*) ;; *) CISTA=$PWD/$CISTA ;; esac
IMAGE=oci:../shared/testdata/ocicrypt/plain:v1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }

# gen from an image, twice: same bytes
check "gen from image" "$CISTA" -q policy gen --image "$IMAGE" --allow-exec '["/bin/ls","-l"]' -o "$TMP/p.json"
check "gen is deterministic" bash -c "'$CISTA' -q policy gen --image '$IMAGE' --allow-exec '[\"/bin/ls\",\"-l\"]' -o '$TMP/p2.json' && cmp -s '$TMP/p.json' '$TMP/p2.json'"
check "canonical: one line with a trailing newline" bash -c "[ \$(wc -l < '$TMP/p.json') = 1 ] && [ \"\$(tail -c1 '$TMP/p.json' | od -An -c | tr -d ' ')\" = '\\n' ]"

# hash: the sha256 of the exact bytes, and the encodings
want=$(sha256sum "$TMP/p.json" | cut -d' ' -f1)
out=$("$CISTA" policy hash "$TMP/p.json" --json)
[ -n "$out" ] || out="{}"
check "hash is sha256 of the bytes" bash -c "echo '$out' | jq -e --arg w '$want' '.sha256 == \$w and .snp_host_data == \$w and .sim_host_data == \$w' >/dev/null"
check "mrconfigid is 48 bytes zero-padded" bash -c "echo '$out' | jq -e --arg w '${want}00000000000000000000000000000000' '.tdx_mrconfigid == \$w' >/dev/null"
pcr=$( (head -c 32 /dev/zero; echo -n "$want" | xxd -r -p) | sha256sum | cut -d' ' -f1)
check "pcr 23 value after extend" bash -c "echo '$out' | jq -e --arg w '$pcr' '.tpm_pcr_value == \$w and .tpm_pcr == 23' >/dev/null"
check "hash text output" bash -c "'$CISTA' policy hash '$TMP/p.json' | grep -q '^sha256 *$want\$'"

# check: allowed config, denied env, exec
cat >"$TMP/config.json" <<JSON
{"ociVersion":"1.1.0","process":{"args":["/app/main.py"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HOSTNAME=c1","TERM=xterm"],"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_CHOWN"]}},"root":{"path":"rootfs"},"mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}]}
JSON
check "check allows the image's own process" "$CISTA" policy check "$TMP/p.json" --config "$TMP/config.json"
jq '.process.env += ["DEBUG=1"]' "$TMP/config.json" >"$TMP/bad.json"
"$CISTA" policy check "$TMP/p.json" --config "$TMP/bad.json" >"$TMP/out.txt"
rc=$?
check "check denies an unknown env var with exit 3" [ "$rc" = 3 ]
check "deny names the rule and the field" grep -q 'deny: process.env\[3\] "DEBUG=1" matches no env rule of container "plain" (rule process.env, field process.env\[3\])' "$TMP/out.txt"
echo '{"args":["/bin/ls","-l"]}' >"$TMP/exec-ok.json"
echo '{"args":["/bin/sh"]}' >"$TMP/exec-bad.json"
check "exec of an allowed command" "$CISTA" policy check "$TMP/p.json" --exec "$TMP/exec-ok.json"
"$CISTA" policy check "$TMP/p.json" --exec "$TMP/exec-bad.json" >/dev/null
check "exec of another command is denied" [ $? = 3 ]
"$CISTA" --json policy check "$TMP/p.json" --exec "$TMP/exec-bad.json" >"$TMP/out.json"
check "check --json" jq -e '.allowed == false and .rule == "exec"' "$TMP/out.json"

# gen from Kubernetes YAML with the annotated output
check "gen from a Deployment" "$CISTA" -q policy gen --pod tests/data/k8s/deployment.yaml --image "$IMAGE" -o "$TMP/d.json" --pod-out "$TMP/d.yaml"
h=$("$CISTA" policy hash "$TMP/d.json" --json | jq -r .sha256)
check "annotated YAML carries the policy hash" grep -q "io.cista.policy-hash: $h" "$TMP/d.yaml"
check "annotated YAML sets the runtime class" grep -q "runtimeClassName: cista" "$TMP/d.yaml"
b64=$(grep 'io.cista.policy:' "$TMP/d.yaml" | head -1 | awk '{print $2}')
check "annotation decodes to the policy bytes" bash -c "echo '$b64' | base64 -d | cmp -s - '$TMP/d.json'"
"$CISTA" policy gen --pod tests/data/k8s/privileged.yaml --image "$IMAGE" -o "$TMP/x.json" 2>"$TMP/err.txt"
rc=$?
check "privileged pod is refused" bash -c "[ $rc = 3 ] && grep -q privileged '$TMP/err.txt' && [ ! -e '$TMP/x.json' ]"
"$CISTA" policy gen --pod tests/data/k8s/deployment.yaml -o "$TMP/x.json" 2>"$TMP/err.txt"
check "missing image fails clearly" bash -c "[ $? != 0 ] && grep -q 'no --image provides' '$TMP/err.txt'"

# usage and help
check "gen --help" bash -c "'$CISTA' policy gen --help | grep -q -- --allow-exec"
check "hash --help" bash -c "'$CISTA' policy hash --help | grep -q MRCONFIGID"
check "check --help" bash -c "'$CISTA' policy check --help | grep -q -- --exec"
"$CISTA" policy gen --image "$IMAGE" 2>/dev/null
check "gen without -o is a usage error" [ $? = 2 ]
echo '{"version":"1","containers":[],"extra":1}' >"$TMP/bad-policy.json"
"$CISTA" policy hash "$TMP/bad-policy.json" 2>/dev/null
check "hash refuses an invalid policy" [ $? = 1 ]

# the image's StopSignal (nginx: SIGQUIT) is what kubelet and podman stop it with: allowed
cp -a ../shared/testdata/ocicrypt/plain "$TMP/stopimg" && chmod -R u+w "$TMP/stopimg" &&
  umoci config --image "$TMP/stopimg:v1" --tag v2 --config.stopsignal SIGQUIT >/dev/null 2>&1
check "gen: the image's StopSignal (SIGQUIT) is allowed beside SIGTERM and SIGKILL" bash -c \
  "'$CISTA' -q policy gen --image 'oci:$TMP/stopimg:v2' -o '$TMP/stop.json' &&
   [ \"\$(jq -c '.containers[0].signals' '$TMP/stop.json')\" = '[9,15,3]' ] &&
   [ \"\$(jq -c '.containers[0].signals' '$TMP/p.json')\" = '[9,15]' ]"
echo "1..$n"
[ "$failed" = 0 ]
