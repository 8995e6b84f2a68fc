#!/usr/bin/env bash
# bench_evidence.sh - evidence verifications per second per kind, beside the
# ECDSA (and RSA) verify rates of `openssl speed` measured in the same run,
# and the ratio to the bound "rate of the signature verifications one
# evidence needs". Warm collateral: files are read once; chains are cached
# (ev_chain_cache) unless noted. Both rates are per second of CPU time
# (`openssl speed` counts user time by default; ev_bench its thread's CPU
# time), so the ratio holds on a machine other jobs share; ev_bench's
# wall-clock rate is printed too. The DCAP rows also give the ratio to an
# interleaved reference: ev_bench --ref p256 alternates 20 ms slices of
# evidence verification and of bare P-256 verifications as `openssl speed`
# times them, so both sides see the same load. Not part of CI.
#
# Usage: bench/bench_evidence.sh [BUILD_DIR] [SECONDS]
#   BUILD_DIR  a configured build dir with libcista.a (default: build)
#   SECONDS    per measurement (default 3)
# Run from anywhere; prints a markdown table on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
SECS=${2:-3}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
EV=$(cd "$ROOT/../shared/testdata/evidence" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ -f "$BUILD/libcista.a" ] || ninja -C "$BUILD" -j1 libcista.a >/dev/null
PKGS="openssl jansson libarchive zlib libzstd yaml-0.1 libevent libevent_openssl
      libevent_pthreads sqlite3 libpq fuse3 tss2-esys tss2-mu tss2-tctildr tss2-rc
      libisal"
# shellcheck disable=SC2086
${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/src" -I"$BUILD" -o "$TMP/ev_bench" \
    "$ROOT/bench/ev_bench.c" "$BUILD/libcista.a" $(pkg-config --cflags --libs $PKGS) -lpthread

# openssl speed: verify/s (last column: verify/s).
P384=$(openssl speed -seconds "$SECS" ecdsap384 2>/dev/null | awk '/nistp384/ {print $NF; exit}')
P256=$(openssl speed -seconds "$SECS" ecdsap256 2>/dev/null | awk '/nistp256/ {print $NF; exit}')
RSA2048=$(openssl speed -seconds "$SECS" rsa2048 2>/dev/null |
          awk '/^rsa 2048/ {print $NF; exit}')
RSA4096=$(openssl speed -seconds "$SECS" rsa4096 2>/dev/null |
          awk '/^rsa 4096/ {print $NF; exit}')
# Signature verifications one DCAP verification does, counted with a gdb
# breakpoint on EC_POINT_mul (tdx v4_b0c06f, per call after the first): with
# the warm chain cache only the quote and QE report signatures remain, 2 with
# or without collateral; without a cache 12 with the collateral JSON (PCK
# chain 2, its 2 CRLs, TCB signing chain 1 + root CRL 1, TCB info, QE
# identity, QE report, quote) and 4 without.
DCAPN=${DCAP_VERIFIES:-2}
DCAPM=${DCAP_VERIFIES_NOCOLL:-2}
DCAPU=${DCAP_VERIFIES_NOCACHE:-12}

# The TPM sample as a cista-tpm-quote-v1 container.
python3 - "$EV/tpm2" "$TMP/swtpm.json" <<'PY'
import base64, json, sys
d, out = sys.argv[1], sys.argv[2]
b = lambda f: base64.b64encode(open(f"{d}/{f}", "rb").read()).decode()
p = open(f"{d}/swtpm_quote_sha256_pcrs.bin", "rb").read()
pcrs = {str(i): p[i*32:(i+1)*32].hex() for i in range(len(p)//32)}
json.dump({"format": "cista-tpm-quote-v1", "attest": b("swtpm_quote.attest"),
           "signature": b("swtpm_quote.tpmt_signature"), "pcrs": {"sha256": pcrs},
           "ak_spki": b("swtpm_ak_pub_spki.der")}, open(out, "w"))
PY

B=$TMP/ev_bench
run() { "$B" "$@" --seconds "$SECS"; }
{
run snp snp "$EV/sev-snp/milan_v2_virtee_report.bin" --coll "$EV/sev-snp/milan_v2_virtee_vcek.der"
run snp-nocache snp "$EV/sev-snp/milan_v2_virtee_report.bin" \
    --coll "$EV/sev-snp/milan_v2_virtee_vcek.der" --no-cache
run nvidia-gpu nvidia-gpu "$EV/nvidia-gpu/h100_driver550_spdm_measurements.bin" \
    --coll "$EV/nvidia-gpu/h100_driver550_certchain.pem"
run nvidia-gpu-nocache nvidia-gpu "$EV/nvidia-gpu/h100_driver550_spdm_measurements.bin" \
    --coll "$EV/nvidia-gpu/h100_driver550_certchain.pem" --no-cache
run tdx tdx "$EV/tdx/v4_b0c06f_quote.bin" --coll "$EV/tdx/v4_b0c06f_collateral.json" \
    --at 1751328000 --ref p256
run tdx-nocoll tdx "$EV/tdx/v4_b0c06f_quote.bin" --at 1751328000 --ref p256
run tdx-nocache tdx "$EV/tdx/v4_b0c06f_quote.bin" --coll "$EV/tdx/v4_b0c06f_collateral.json" \
    --at 1751328000 --no-cache --ref p256
run sgx sgx "$EV/sgx/v3_00a067_quote.bin" --coll "$EV/sgx/v3_00a067_collateral.json" \
    --at 1751328000 --ref p256
run tpm-swtpm tpm "$TMP/swtpm.json" --ak-spki "$EV/tpm2/swtpm_ak_pub_spki.der"
run sim sim - --sim-dir "$TMP/sim"
} >"$TMP/rates"

# kind | verify/s | verifications needed | bound rate (1 / sum of their costs) | ratio
awk -v p384="$P384" -v p256="$P256" -v rsa="$RSA2048" -v rsa4="$RSA4096" \
    -v dn="$DCAPN" -v dm="$DCAPM" -v du="$DCAPU" '
# n: the verifications per evidence when $6 is an interleaved P-256 reference rate
function row(k, r, need, bound, n) {
    il = n && $6 > 0 ? sprintf("%.0f %%", 100 * r * n / $6) : "-"
    printf "| %s | %.0f | %.0f | %s | %.0f | %.0f %% | %s |\n", k, r, $5, need, bound,
        100 * r / bound, il
}
BEGIN {
    printf "openssl speed verify/s: ecdsap384 %.0f, ecdsap256 %.0f, rsa2048 %.0f, rsa4096 %.0f\n\n",
        p384, p256, rsa, rsa4
    print "| kind | verifies/s (CPU) | wall /s | signature verifications per evidence | bound/s" \
        " | ratio | ratio (interleaved) |"
    print "|---|---|---|---|---|---|---|"
}
$1 == "snp" { row($1, $2, "1 P-384 (report; chain cached)", p384) }
$1 == "snp-nocache" {
    row($1, $2, "1 P-384 + 2 RSA-4096 (VCEK, ASK links)", 1 / (1 / p384 + 2 / rsa4)) }
$1 == "nvidia-gpu" { row($1, $2, "1 P-384 (report; chain cached)", p384) }
$1 == "nvidia-gpu-nocache" { row($1, $2, "5 P-384 (report + 4 chain links)", p384 / 5) }
$1 == "tdx" { row($1, $2, dn " P-256 (quote, QE report; the rest cached)", p256 / dn, dn) }
$1 == "tdx-nocoll" {
    row($1, $2, dm " P-256 (quote, QE report; PCK chain cached)", p256 / dm, dm) }
$1 == "tdx-nocache" { row($1, $2, du " P-256 (nothing cached)", p256 / du, du) }
$1 == "sgx" { row($1, $2, dn " P-256 (quote, QE report)", p256 / dn, dn) }
$1 == "tpm-swtpm" { row($1, $2, "1 RSA-2048 (registered AK)", rsa) }
$1 == "sim" { row($1, $2, "1 P-384", p384) }
' "$TMP/rates"
echo
echo "uptime: $(uptime)"
