/*
 * tpm.c - TPM 2.0: produce quotes through tpm2-tss ESYS (an attestation key
 * recreated from a fixed template under the endorsement hierarchy, PCR
 * extends recorded in the cista event log) and verify them: TPMS_ATTEST and
 * TPMT_SIGNATURE read field by field (big-endian, bounded), signature with a
 * trusted AK (a registered key, or an AK certificate chaining to a pinned
 * Google vTPM root), magic and type, extraData against the report data,
 * pcrDigest over the supplied PCR values, replay of the TCG2 firmware event
 * log and of the cista event log against the quoted PCRs.
 *
 * The evidence is a JSON container (docs/evidence.md, "tpm"):
 *   {"format": "cista-tpm-quote-v1", "attest": b64 TPMS_ATTEST,
 *    "signature": b64 TPMT_SIGNATURE, "pcrs": {"sha256": {"0": hex, ...}},
 *    "ak_public": b64 TPMT_PUBLIC, "ak_spki": b64 DER, "ak_certs": [b64 DER],
 *    "cista_event_log": [{pcr, alg, digest, type, data}], "tcg_event_log": b64}
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "evidence/tpm_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define TPM_FORMAT "cista-tpm-quote-v1"
#define EV_NO_ACTION 0x00000003u
#define TCG_MAX_ALGS 8
#define CISTA_LOG_MAX_TYPE 64
#define CISTA_LOG_MAX_DATA 4096
#define DEFAULT_TCTI "device:/dev/tpmrm0"
#define DEFAULT_EVENTLOG "/run/cista/tpm-eventlog.jsonl"
#define DEFAULT_PCRS "sha256:0-23"

/* ---- pinned AK roots: Google vTPM (GCE Shielded / Confidential VM) ---- */

/* tpm_ek_v1_cloud_host_root-signer (go-tpm-tools server/ca-certs/tpm_ek_root_1.cer) */
static const char g_tpm_ek_root_1[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIGfzCCBGegAwIBAgIQbw4ksY2+TlOMT5bDqCZawTANBgkqhkiG9w0BAQsFADCB\n"
    "vjELMAkGA1UEBhMCVVMxEzARBgNVBAgTCkNhbGlmb3JuaWExFjAUBgNVBAcTDU1v\n"
    "dW50YWluIFZpZXcxEzARBgNVBAoTCkdvb2dsZSBMTEMxDjAMBgNVBAsTBUNsb3Vk\n"
    "MV0wWwYDVQQDDFR0cG1fZWtfdjFfY2xvdWRfaG9zdF9yb290LXNpZ25lci0wLTIw\n"
    "MTgtMDQtMDZUMTA6NTg6MjYtMDc6MDAgSzoxLCAxOlB3MDAzSHNGWU80OjA6MTgw\n"
    "IBcNMTgwNDA2MTc1ODI2WhgPMjExODA0MDYxODU4MjZaMIG+MQswCQYDVQQGEwJV\n"
    "UzETMBEGA1UECBMKQ2FsaWZvcm5pYTEWMBQGA1UEBxMNTW91bnRhaW4gVmlldzET\n"
    "MBEGA1UEChMKR29vZ2xlIExMQzEOMAwGA1UECxMFQ2xvdWQxXTBbBgNVBAMMVHRw\n"
    "bV9la192MV9jbG91ZF9ob3N0X3Jvb3Qtc2lnbmVyLTAtMjAxOC0wNC0wNlQxMDo1\n"
    "ODoyNi0wNzowMCBLOjEsIDE6UHcwMDNIc0ZZTzQ6MDoxODCCAiIwDQYJKoZIhvcN\n"
    "AQEBBQADggIPADCCAgoCggIBAPvCO6TuV/jpJ4auYVo+9DKtdsC7EP5pXtyXwvbn\n"
    "Cj2kT+8JPGb++tOJylihDSO2BNrtqVukkiV8dXYY0MQNufPinSnBZP7s1RXN4F99\n"
    "k0tSI3e5TI2DwRFBV0jcu7rYZlzx3mO1ltNp/9UVA3zxLz663SPnoBBUUNlXnY90\n"
    "JudOLfwXNP68KiCt/YIG7XrIRMY8iXNFrTS9BIlaLb+LIgmh29FN/YcQsXsAyum8\n"
    "35FoULcDLqzrTjA+3rfRvQLwrq5QsJcEVuZYVRQS5td4RbRDz4GLQzHtRT0DSe89\n"
    "aFAndaK8h4i/WLDoOI8SJ8B8m+VvOWDYnx/7qP6NsCnicVg7BQzYqAtlTTHUzi5N\n"
    "d2p7Hc3FbbqYU74EdNTtFAwDsI95N0f+LC3wRK1xvGgaRSdnJeklhNVsdO00TDkm\n"
    "AVdkkK+o7Pij2Ss2ywW9uRH5gnosnfswiWxAe9LvwJfBr4MNtha7evAwcvqkRvBJ\n"
    "Fgd+AVugOuwOCC3rHFEquaoUWpNrvSBFMVooWgs0fMMcStYYj+vRd9aNDtgHsbgS\n"
    "QvCFDmo91lcqRFcwYqDf8JmQwZO9yYOzjb/73MBsxRzuXpeQ9/L/SrIgL3zS7LLT\n"
    "ybbQ3LJO592vz+sEk6/P/IOZSGPSh5NLVLSzjHfUuMR60hJ8zGo34QHJ/p1m6aHf\n"
    "k52hAgMBAAGjdTBzMA4GA1UdDwEB/wQEAwIBhjAQBgNVHSUECTAHBgVngQUIATAP\n"
    "BgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBRl9OTmqvb9WtKInKhTVfcAjgj3pTAf\n"
    "BgNVHSMEGDAWgBRl9OTmqvb9WtKInKhTVfcAjgj3pTANBgkqhkiG9w0BAQsFAAOC\n"
    "AgEAJY6404gcN0hetPP/wdmL8fullQHfro3Jw5V311MFlkFEHpHS0+Bhg+Brt2J3\n"
    "D9CVpsAhmU5Wy8CrdZ25dh8vRp27Ki5zaq3VWnyQSt0zjIGwez7WMbq4ky5SfMlk\n"
    "mM5XvE1Boi99P6K4Qi2pJdU1JA4yYi6aiTz6A7iG7df769VokOD1Q4LIccD5MLUy\n"
    "s+ptnbn30e1VmteBrHagrYUpedUUTzBo2050DoQLPTuGRBsQBnBkMD2N+yrj6Nov\n"
    "4YufKPQUklu3PtLxdjZMa3U7Yd+Aw2WJJgD4xu0OH4SYfnnguaSX20njyi8tXNxk\n"
    "helXGMQt85YCuoYE5nBMDLQ0M0jsz0abUHjYavlHsVTxwPNWxUFONI3+tDdy9ZWX\n"
    "whYDRg/C+z7IvcrO9hcnghmJ7a1lX1oTHCah9bjTqz5w+cccx/nXHXpMglcACXJX\n"
    "E7LlvO3VeStT+57cPuIfpRO7dRbce1O8qfnGH4Sk0LNmJai6OfFU/5499lvPdWbw\n"
    "ChdLwaTFu/2Hs/Tq4bXvi9nHk0WSIQbPuUsFACRUf1U+NhyF7Ly6vWkI2cV3fI2w\n"
    "N1gQ2YgOiESSNE50dof8LyJ6RO97aQqAkW0Qeqj7xfL2+U6qlCQNNp4gSbBegysr\n"
    "cGNZKz/iBmmWoNvicw9mpPQqHnLv60IvRumxby/n617o/jU=\n"
    "-----END CERTIFICATE-----\n"
    /* EK/AK CA Root (go-tpm-tools server/ca-certs/gcp_ek_ak_ca_root.crt) */
    ;
static const char g_gcp_ek_ak_ca_root[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIGATCCA+mgAwIBAgIUAKZdpPnjKPOANcOnPU9yQyvfFdwwDQYJKoZIhvcNAQEL\n"
    "BQAwfjELMAkGA1UEBhMCVVMxEzARBgNVBAgTCkNhbGlmb3JuaWExFjAUBgNVBAcT\n"
    "DU1vdW50YWluIFZpZXcxEzARBgNVBAoTCkdvb2dsZSBMTEMxFTATBgNVBAsTDEdv\n"
    "b2dsZSBDbG91ZDEWMBQGA1UEAxMNRUsvQUsgQ0EgUm9vdDAgFw0yMjA3MDgwMDQw\n"
    "MzRaGA8yMTIyMDcwODA1NTcyM1owfjELMAkGA1UEBhMCVVMxEzARBgNVBAgTCkNh\n"
    "bGlmb3JuaWExFjAUBgNVBAcTDU1vdW50YWluIFZpZXcxEzARBgNVBAoTCkdvb2ds\n"
    "ZSBMTEMxFTATBgNVBAsTDEdvb2dsZSBDbG91ZDEWMBQGA1UEAxMNRUsvQUsgQ0Eg\n"
    "Um9vdDCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIBAJ0l9VCoyJZLSol8\n"
    "KyhNpbS7pBnuicE6ptrdtxAWIR2TnLxSgxNFiR7drtofxI0ruceoCIpsa9NHIKrz\n"
    "3sM/N/E8mFNHiJAuyVf3pPpmDpLJZQ1qe8yHkpGSs3Kj3s5YYWtEecCVfzNs4MtK\n"
    "vGfA+WKB49A6Noi8R9R1GonLIN6wSXX3kP1ibRn0NGgdqgfgRe5HC3kKAhjZ6scT\n"
    "8Eb1SGlaByGzE5WoGTnNbyifkyx9oUZxXVJsqv2q611W3apbPxcgev8z5JXQUbrr\n"
    "Q7EbO0StK1DsKRsKLuD+YLxjrBRQ4UeIN5WHp6G0vgYiOptHm6YKZxQemO/kVMLR\n"
    "zsm1AYH7eNOFekcBIKRjSqpk5m4ud04qum6f0hBj3iE/Pe+DvIbVhLh9ItAunISG\n"
    "QPA9dYEgfA/qWir+pU7LV3phpLeGhull8G/zYmQhF3heg0buIR70aavzT8iLAQrx\n"
    "VMNRZJEGMwIN/tq8YiT3+3EZIcSqq6GAGjiuVw3NIsXC3+CuSJGQ5GbDp49Lc6VW\n"
    "PHeWeFvwSUGgxKXq5r1+PRsoYgK6S4hhecgXEX5c7Rta6TcFlEFb0XK9fpy1dr89\n"
    "LeFGxUBpdDvKxDRLMm3FQen8rmR/PSReEcJsaqbUP/q7Pc7k0RfF9Mb6AfPZfnqg\n"
    "pYJQ+IFSr9EjRSW1wPcL03zoTP47AgMBAAGjdTBzMA4GA1UdDwEB/wQEAwIBBjAQ\n"
    "BgNVHSUECTAHBgVngQUIATAPBgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBRJ50pb\n"
    "Vin1nXm3pjA8A7KP5xTdTDAfBgNVHSMEGDAWgBRJ50pbVin1nXm3pjA8A7KP5xTd\n"
    "TDANBgkqhkiG9w0BAQsFAAOCAgEAlfHRvOB3CJoLTl1YG/AvjGoZkpNMyp5X5je1\n"
    "ICCQ68b296En9hIUlcYY/+nuEPSPUjDA3izwJ8DAfV4REgpQzqoh6XhR3TgyfHXj\n"
    "J6DC7puzEgtzF1+wHShUpBoe3HKuL4WhB3rvwk2SEsudBu92o9BuBjcDJ/GW5GRt\n"
    "pD/H71HAE8rI9jJ41nS0FvkkjaX0glsntMVUXiwcta8GI0QOE2ijsJBwk41uQGt0\n"
    "YOj2SGlEwNAC5DBTB5kZ7+6X9xGE6/c+M3TAA0ONoX18rNfif94cCx/mPYOs8pUk\n"
    "ANRAQ4aTRBvpBrryGT8R1ahTBkMeRQG3tdsLHRT8fJCFUANd5WLWsi83005y/WuM\n"
    "z8/gFKc0PL+F+MubCsJ1ODPTRscH93QlS4zEMg5hDAIks+fDoRJ2QiROqo7GAqbT\n"
    "c7STKfGcr9+pa63na7f3oy1sZPWPdxB8tx5z3lghiPP3ktQx/yK/1Fwf1hgxJHFy\n"
    "/2UcaGuOXRRRTPyEnppZp82Kigs9aPHWtaVm2/LrXX2fvT9iM/k0CovNAj8rztHx\n"
    "sUEoA0xJnSOJNPpe9PRdjsTj7/u3Xu6hQLNNidBHgI3Hcmi704HMMd/3yZ424OOr\n"
    "S32ylpeU1oeQHFrLE6hYX4/ttMETbmESIKd2rTgstPotSvkuB5TljbKYPR+lq7hQ\n"
    "av16U4E=\n"
    "-----END CERTIFICATE-----\n";

static const struct {
    const char *name;
    const char *pem;
    const char *sha256_hex; /* pin: SHA-256 of the DER */
} g_roots[] = {
    {"Google tpm_ek_v1_cloud_host_root", g_tpm_ek_root_1,
     "9bd5285f8fb18502a7947e621ffd470266f49fcd3b73e19a190f690ad32a7caf"},
    {"Google EK/AK CA Root", g_gcp_ek_ak_ca_root,
     "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2"},
};

/* ---- algorithms ---- */

static const struct {
    uint16_t alg;
    const char *name; /* claims and PCR maps */
    const char *md;   /* OpenSSL digest name */
    crypto_hash_alg h;
    size_t size;
} g_algs[] = {
    {TPM_ALG_SHA1, "sha1", "SHA1", CRYPTO_SHA1, 20},
    {TPM_ALG_SHA256, "sha256", "SHA256", CRYPTO_SHA256, 32},
    {TPM_ALG_SHA384, "sha384", "SHA384", CRYPTO_SHA384, 48},
    {TPM_ALG_SHA512, "sha512", "SHA512", CRYPTO_SHA512, 64},
};

static int alg_index(uint16_t alg)
{
    for (size_t i = 0; i < ARRAY_LEN(g_algs); i++)
        if (g_algs[i].alg == alg)
            return (int)i;
    return -1;
}

size_t ev__tpm_alg_size(uint16_t alg)
{
    int i = alg_index(alg);
    return i < 0 ? 0 : g_algs[i].size;
}

const char *ev__tpm_alg_name(uint16_t alg)
{
    int i = alg_index(alg);
    return i < 0 ? NULL : g_algs[i].name;
}

uint16_t ev__tpm_alg_by_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(g_algs); i++)
        if (name && strcmp(g_algs[i].name, name) == 0)
            return g_algs[i].alg;
    return 0;
}

static void hash_alg(uint16_t alg, const void *p, size_t size, uint8_t *out)
{
    crypto_hash_oneshot(g_algs[alg_index(alg)].h, p, size, out);
}

/* ---- a bounded big-endian reader ---- */

typedef struct {
    const uint8_t *p;
    size_t size, off;
    const char *what; /* "TPMS_ATTEST" */
} rd;

static int need(rd *r, size_t n, const char *field, cista_error **err)
{
    if (r->size - r->off < n)
        return err_set(err, EV_E_SIZE,
                       "%s: field %s at offset %zu needs %zu bytes but only %zu are left; the "
                       "structure is truncated",
                       r->what, field, r->off, n, r->size - r->off);
    return 0;
}

static int rd_u8(rd *r, uint8_t *v, const char *field, cista_error **err)
{
    int rc = need(r, 1, field, err);
    if (rc < 0)
        return rc;
    *v = r->p[r->off++];
    return 0;
}

static int rd_u16(rd *r, uint16_t *v, const char *field, cista_error **err)
{
    int rc = need(r, 2, field, err);
    if (rc < 0)
        return rc;
    *v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
    r->off += 2;
    return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *field, cista_error **err)
{
    int rc = need(r, 4, field, err);
    if (rc < 0)
        return rc;
    const uint8_t *p = r->p + r->off;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    r->off += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *field, cista_error **err)
{
    uint32_t hi = 0, lo = 0;
    int rc = rd_u32(r, &hi, field, err);
    if (rc < 0 || (rc = rd_u32(r, &lo, field, err)) < 0)
        return rc;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

/* A TPM2B: u16 size then that many bytes, at most @max. *out borrows from the input. */
static int rd_2b(rd *r, const uint8_t **out, size_t *out_size, size_t max, const char *field,
                 cista_error **err)
{
    uint16_t n = 0;
    int rc = rd_u16(r, &n, field, err);
    if (rc < 0)
        return rc;
    if (n > max)
        return err_set(err, EV_E_FORMAT, "%s: %s has size %u, more than the maximum %zu", r->what,
                       field, n, max);
    if ((rc = need(r, n, field, err)) < 0)
        return rc;
    *out = r->p + r->off;
    *out_size = n;
    r->off += n;
    return 0;
}

static int rd_end(rd *r, cista_error **err)
{
    if (r->off != r->size)
        return err_set(err, EV_E_SIZE,
                       "%s: %zu bytes follow the end of the structure at offset %zu (%zu bytes "
                       "in all); the data is padded or two structures were concatenated",
                       r->what, r->size - r->off, r->off, r->size);
    return 0;
}

/* ---- TPMS_ATTEST ---- */

int ev__tpm_parse_quote(tpm_quote *q, const uint8_t *p, size_t size, cista_error **err)
{
    memset(q, 0, sizeof(*q));
    if (size > TPM_MAX_ATTEST)
        return err_set(err, EV_E_SIZE, "TPMS_ATTEST: %zu bytes, more than the limit of %d", size,
                       TPM_MAX_ATTEST);
    rd r = {p, size, 0, "TPMS_ATTEST"};
    const uint8_t *b = NULL;
    size_t n = 0;
    int rc;
    if ((rc = rd_u32(&r, &q->magic, "magic", err)) < 0)
        return rc;
    if (q->magic != TPM_GENERATED_VALUE)
        return err_set(err, EV_E_FORMAT,
                       "TPMS_ATTEST: magic is 0x%08x, expected TPM_GENERATED_VALUE 0xff544347; "
                       "the structure was not produced by a TPM (a signature over it proves "
                       "nothing)",
                       q->magic);
    if ((rc = rd_u16(&r, &q->type, "type", err)) < 0)
        return rc;
    if (q->type != TPM_ST_ATTEST_QUOTE)
        return err_set(err, EV_E_FORMAT,
                       "TPMS_ATTEST: type is 0x%04x, expected TPM_ST_ATTEST_QUOTE 0x8018; this is "
                       "another kind of attestation (certify, time, ...), not a PCR quote",
                       q->type);
    if ((rc = rd_2b(&r, &b, &n, sizeof(q->signer), "qualifiedSigner", err)) < 0)
        return rc;
    memcpy(q->signer, b, n);
    q->signer_size = n;
    if ((rc = rd_2b(&r, &b, &n, 66, "extraData", err)) < 0)
        return rc;
    if (n > sizeof(q->extra))
        return err_set(err, EV_E_FORMAT,
                       "TPMS_ATTEST: extraData is %zu bytes; cista binds at most 64 bytes of "
                       "report data",
                       n);
    memcpy(q->extra, b, n);
    q->extra_size = n;
    if ((rc = rd_u64(&r, &q->clock, "clockInfo.clock", err)) < 0 ||
        (rc = rd_u32(&r, &q->reset_count, "clockInfo.resetCount", err)) < 0 ||
        (rc = rd_u32(&r, &q->restart_count, "clockInfo.restartCount", err)) < 0 ||
        (rc = rd_u8(&r, &q->safe, "clockInfo.safe", err)) < 0)
        return rc;
    if (q->safe > 1)
        return err_set(err, EV_E_FORMAT, "TPMS_ATTEST: clockInfo.safe is %u, expected 0 or 1",
                       q->safe);
    if ((rc = rd_u64(&r, &q->firmware, "firmwareVersion", err)) < 0)
        return rc;
    uint32_t count = 0;
    if ((rc = rd_u32(&r, &count, "pcrSelect.count", err)) < 0)
        return rc;
    if (count == 0 || count > TPM_MAX_BANKS)
        return err_set(err, EV_E_FORMAT,
                       "TPMS_ATTEST: the quote selects %u PCR banks, expected 1 to %d", count,
                       TPM_MAX_BANKS);
    for (uint32_t i = 0; i < count; i++) {
        uint16_t alg = 0;
        uint8_t sz = 0;
        if ((rc = rd_u16(&r, &alg, "pcrSelections.hash", err)) < 0 ||
            (rc = rd_u8(&r, &sz, "pcrSelections.sizeofSelect", err)) < 0)
            return rc;
        if (!ev__tpm_alg_size(alg))
            return err_set(err, EV_E_VERSION,
                           "TPMS_ATTEST: PCR bank hash 0x%04x is not supported (sha1, sha256, "
                           "sha384, sha512 are)",
                           alg);
        if (sz > 8)
            return err_set(err, EV_E_FORMAT, "TPMS_ATTEST: sizeofSelect %u is more than 8", sz);
        if ((rc = need(&r, sz, "pcrSelections.pcrSelect", err)) < 0)
            return rc;
        uint32_t mask = 0;
        for (uint8_t j = 0; j < sz; j++) {
            uint8_t v = r.p[r.off + j];
            if (j >= 3 && v)
                return err_set(err, EV_E_FORMAT,
                               "TPMS_ATTEST: the quote selects PCRs above 23 (byte %u of the %s "
                               "selection is 0x%02x); only PCRs 0-23 are supported",
                               j, ev__tpm_alg_name(alg), v);
            if (j < 3)
                mask |= (uint32_t)v << (8 * j);
        }
        r.off += sz;
        for (uint32_t k = 0; k < i; k++)
            if (q->sel[k].alg == alg)
                return err_set(err, EV_E_FORMAT, "TPMS_ATTEST: PCR bank %s is selected twice",
                               ev__tpm_alg_name(alg));
        q->sel[i].alg = alg;
        q->sel[i].mask = mask;
    }
    q->sel_count = count;
    if ((rc = rd_2b(&r, &b, &n, TPM_MAX_DIGEST, "pcrDigest", err)) < 0)
        return rc;
    memcpy(q->pcr_digest, b, n);
    q->pcr_digest_size = n;
    return rd_end(&r, err);
}

/* ---- TPMT_SIGNATURE ---- */

typedef struct {
    uint16_t alg, hash;
    const uint8_t *sig, *r, *s; /* borrowed */
    size_t sig_size, r_size, s_size;
} tpm_sig;

static int parse_signature(tpm_sig *s, const uint8_t *p, size_t size, cista_error **err)
{
    memset(s, 0, sizeof(*s));
    rd r = {p, size, 0, "TPMT_SIGNATURE"};
    int rc;
    if ((rc = rd_u16(&r, &s->alg, "sigAlg", err)) < 0)
        return rc;
    if (s->alg != TPM_ALG_RSASSA && s->alg != TPM_ALG_RSAPSS && s->alg != TPM_ALG_ECDSA)
        return err_set(err, EV_E_VERSION,
                       "TPMT_SIGNATURE: sigAlg 0x%04x is not supported (RSASSA 0x0014, RSAPSS "
                       "0x0016, ECDSA 0x0018 are)",
                       s->alg);
    if ((rc = rd_u16(&r, &s->hash, "hash", err)) < 0)
        return rc;
    if (s->hash == TPM_ALG_SHA1 || !ev__tpm_alg_size(s->hash))
        return err_set(err, EV_E_VERSION,
                       "TPMT_SIGNATURE: hash 0x%04x is not accepted (sha256, sha384, sha512 are; "
                       "SHA-1 signatures are refused)",
                       s->hash);
    if (s->alg == TPM_ALG_ECDSA) {
        if ((rc = rd_2b(&r, &s->r, &s->r_size, 66, "signatureR", err)) < 0 ||
            (rc = rd_2b(&r, &s->s, &s->s_size, 66, "signatureS", err)) < 0)
            return rc;
        if (!s->r_size || !s->s_size)
            return err_set(err, EV_E_FORMAT, "TPMT_SIGNATURE: ECDSA r or s is empty");
    } else {
        if ((rc = rd_2b(&r, &s->sig, &s->sig_size, 512, "sig", err)) < 0)
            return rc;
        if (!s->sig_size)
            return err_set(err, EV_E_FORMAT, "TPMT_SIGNATURE: RSA signature is empty");
    }
    return rd_end(&r, err);
}

/* ---- TPMT_PUBLIC ---- */

static int rd_scheme(rd *r, uint16_t *alg, uint16_t *hash, const char *field, cista_error **err)
{
    int rc = rd_u16(r, alg, field, err);
    if (rc < 0)
        return rc;
    *hash = 0;
    if (*alg != TPM_ALG_NULL)
        rc = rd_u16(r, hash, field, err);
    return rc;
}

int ev__tpm_parse_public(EVP_PKEY **out, uint32_t *out_attrs, const uint8_t *p, size_t size,
                         cista_error **err)
{
    rd r = {p, size, 0, "TPMT_PUBLIC"};
    uint16_t type = 0, name_alg = 0, sym = 0, scheme = 0, scheme_hash = 0;
    uint32_t attrs = 0;
    const uint8_t *b = NULL;
    size_t n = 0;
    int rc;
    if ((rc = rd_u16(&r, &type, "type", err)) < 0 ||
        (rc = rd_u16(&r, &name_alg, "nameAlg", err)) < 0 ||
        (rc = rd_u32(&r, &attrs, "objectAttributes", err)) < 0 ||
        (rc = rd_2b(&r, &b, &n, TPM_MAX_DIGEST, "authPolicy", err)) < 0 ||
        (rc = rd_u16(&r, &sym, "parameters.symmetric", err)) < 0)
        return rc;
    if (type != TPM_ALG_RSA && type != TPM_ALG_ECC)
        return err_set(err, EV_E_VERSION,
                       "TPMT_PUBLIC: key type 0x%04x is not supported (RSA 0x0001, ECC 0x0023)",
                       type);
    if (sym != TPM_ALG_NULL)
        return err_set(err, EV_E_NOKEY,
                       "TPMT_PUBLIC: the key has a symmetric algorithm (0x%04x): it is a storage "
                       "key, not an attestation key",
                       sym);
    if ((rc = rd_scheme(&r, &scheme, &scheme_hash, "parameters.scheme", err)) < 0)
        return rc;
    json_t *jwk = NULL;
    if (type == TPM_ALG_RSA) {
        uint16_t bits = 0;
        uint32_t exp = 0;
        if ((rc = rd_u16(&r, &bits, "parameters.keyBits", err)) < 0 ||
            (rc = rd_u32(&r, &exp, "parameters.exponent", err)) < 0 ||
            (rc = rd_2b(&r, &b, &n, 512, "unique.rsa", err)) < 0)
            return rc;
        if (n * 8 != bits || bits < 2048)
            return err_set(err, EV_E_NOKEY,
                           "TPMT_PUBLIC: RSA modulus is %zu bits with keyBits %u; at least 2048 "
                           "matching bits are required",
                           n * 8, bits);
        if (exp == 0)
            exp = 65537;
        uint8_t e[4] = {(uint8_t)(exp >> 24), (uint8_t)(exp >> 16), (uint8_t)(exp >> 8),
                        (uint8_t)exp};
        size_t skip = 0;
        while (skip < 3 && e[skip] == 0)
            skip++;
        _cleanup_free_ char *ns = b64url_encode(b, n);
        _cleanup_free_ char *es = b64url_encode(e + skip, 4 - skip);
        jwk = json_pack("{s:s,s:s,s:s}", "kty", "RSA", "n", ns, "e", es);
    } else {
        uint16_t curve = 0, kdf = 0, kdf_hash = 0;
        const uint8_t *x = NULL, *y = NULL;
        size_t xs = 0, ys = 0;
        if ((rc = rd_u16(&r, &curve, "parameters.curveID", err)) < 0 ||
            (rc = rd_scheme(&r, &kdf, &kdf_hash, "parameters.kdf", err)) < 0 ||
            (rc = rd_2b(&r, &x, &xs, 66, "unique.ecc.x", err)) < 0 ||
            (rc = rd_2b(&r, &y, &ys, 66, "unique.ecc.y", err)) < 0)
            return rc;
        const char *crv = curve == 0x0003 ? "P-256" : curve == 0x0004 ? "P-384" : NULL;
        size_t cs = curve == 0x0003 ? 32 : 48;
        if (!crv)
            return err_set(err, EV_E_VERSION,
                           "TPMT_PUBLIC: ECC curve 0x%04x is not supported (NIST P-256 0x0003, "
                           "P-384 0x0004)",
                           curve);
        if (xs > cs || ys > cs)
            return err_set(err, EV_E_FORMAT, "TPMT_PUBLIC: ECC point is larger than the curve");
        uint8_t xb[48] = {0}, yb[48] = {0};
        memcpy(xb + cs - xs, x, xs);
        memcpy(yb + cs - ys, y, ys);
        _cleanup_free_ char *xe = b64url_encode(xb, cs);
        _cleanup_free_ char *ye = b64url_encode(yb, cs);
        jwk = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", crv, "x", xe, "y", ye);
    }
    if ((rc = rd_end(&r, err)) < 0) {
        json_decref(jwk);
        return rc;
    }
    if (!(attrs & TPMA_SIGN) || (attrs & TPMA_DECRYPT)) {
        json_decref(jwk);
        return err_set(err, EV_E_NOKEY,
                       "TPMT_PUBLIC: objectAttributes 0x%08x: the key is not a signing-only key "
                       "(sign set, decrypt clear)",
                       attrs);
    }
    _cleanup_free_ char *text = js_dump_compact(jwk);
    json_decref(jwk);
    rc = crypto_key_load(out, text, strlen(text), false, err);
    if (rc < 0)
        return err_wrap(err, "TPMT_PUBLIC key");
    *out_attrs = attrs;
    return 0;
}

/* ---- signature and quote ---- */

static int verify_rsa(EVP_PKEY *ak, uint16_t scheme, uint16_t hash, const uint8_t *msg,
                      size_t msg_size, const uint8_t *sig, size_t sig_size, cista_error **err)
{
    if (!crypto_key_is_rsa(ak))
        return err_set(err, EV_E_NOKEY,
                       "TPM quote: the signature is RSA but the attestation key is not an RSA "
                       "key");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (!ctx)
        abort();
    int ok = EVP_DigestVerifyInit(ctx, &pctx, EVP_get_digestbyname(g_algs[alg_index(hash)].md),
                                  NULL, ak) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(pctx, scheme == TPM_ALG_RSAPSS ? RSA_PKCS1_PSS_PADDING
                                                                         : RSA_PKCS1_PADDING) == 1;
    if (ok && scheme == TPM_ALG_RSAPSS)
        ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) == 1;
    if (!ok) {
        EVP_MD_CTX_free(ctx);
        return err_set_ssl(err, -EINVAL, "TPM quote: setting up the RSA verification");
    }
    int v = EVP_DigestVerify(ctx, sig, sig_size, msg, msg_size);
    EVP_MD_CTX_free(ctx);
    if (v != 1) {
        ERR_clear_error();
        return -EBADMSG;
    }
    return 0;
}

static int verify_sig(const tpm_quote_in *in, uint16_t *out_hash, uint16_t *out_alg,
                      cista_error **err)
{
    tpm_sig s;
    int rc;
    if (in->sig_raw_rsassa) {
        memset(&s, 0, sizeof(s));
        s.alg = TPM_ALG_RSASSA;
        s.hash = TPM_ALG_SHA256;
        s.sig = in->sig;
        s.sig_size = in->sig_size;
        if (!s.sig_size || s.sig_size > 512)
            return err_set(err, EV_E_SIZE, "TPM quote: raw RSA signature of %zu bytes",
                           in->sig_size);
    } else if ((rc = parse_signature(&s, in->sig, in->sig_size, err)) < 0) {
        return rc;
    }
    *out_hash = s.hash;
    *out_alg = s.alg;
    if (s.alg == TPM_ALG_ECDSA) {
        if (!crypto_key_is_ec(in->ak))
            return err_set(err, EV_E_NOKEY,
                           "TPM quote: the signature is ECDSA but the attestation key is not an "
                           "EC key");
        size_t w = s.r_size > s.s_size ? s.r_size : s.s_size;
        uint8_t rb[66] = {0}, sb[66] = {0};
        memcpy(rb + w - s.r_size, s.r, s.r_size);
        memcpy(sb + w - s.s_size, s.s, s.s_size);
        rc = x509_ecdsa_verify_raw(in->ak, g_algs[alg_index(s.hash)].md, in->attest,
                                   in->attest_size, rb, sb, w, X509_BIG_ENDIAN, err);
        if (rc == -EBADMSG)
            err_clear(err);
    } else {
        rc = verify_rsa(in->ak, s.alg, s.hash, in->attest, in->attest_size, s.sig, s.sig_size, err);
    }
    if (rc == -EBADMSG)
        return err_set(err, EV_E_SIGNATURE,
                       "TPM quote signature (%s/%s) does not verify over the %zu-byte "
                       "TPMS_ATTEST with the trusted attestation key: the quote was modified or "
                       "was signed by another AK (another TPM)",
                       s.alg == TPM_ALG_ECDSA    ? "ECDSA"
                       : s.alg == TPM_ALG_RSAPSS ? "RSAPSS"
                                                 : "RSASSA",
                       ev__tpm_alg_name(s.hash), in->attest_size);
    return rc;
}

bool ev__tpm_extra_matches(const tpm_quote *q, const uint8_t report_data[EV_REPORT_DATA_SIZE])
{
    if (q->extra_size <= EV_REPORT_DATA_SIZE) {
        uint8_t pad[EV_REPORT_DATA_SIZE] = {0};
        memcpy(pad, q->extra, q->extra_size);
        if (crypto_memeq(pad, report_data, EV_REPORT_DATA_SIZE))
            return true;
    }
    if (q->extra_size == 32) {
        uint8_t h[32];
        crypto_hash_oneshot(CRYPTO_SHA256, report_data, EV_REPORT_DATA_SIZE, h);
        return crypto_memeq(h, q->extra, 32);
    }
    return false;
}

static int pcr_bank(const tpm_pcrs *p, uint16_t alg)
{
    for (size_t i = 0; i < p->bank_count; i++)
        if (p->bank[i].alg == alg)
            return (int)i;
    return -1;
}

int ev__tpm_verify_quote(tpm_quote *q, const tpm_quote_in *in, const uint8_t *report_data,
                         cista_error **err)
{
    /* Parse first (cheap, precise errors), then the signature, then what it covers. */
    int rc = ev__tpm_parse_quote(q, in->attest, in->attest_size, err);
    if (rc < 0)
        return rc;
    uint16_t hash = 0, sig_alg = 0;
    if ((rc = verify_sig(in, &hash, &sig_alg, err)) < 0)
        return rc;
    if (report_data && !ev__tpm_extra_matches(q, report_data)) {
        _cleanup_free_ char *got = hex_encode(q->extra, q->extra_size);
        _cleanup_free_ char *want = hex_encode(report_data, EV_REPORT_DATA_SIZE);
        return err_set(err, EV_E_REPORT_DATA,
                       "TPM quote extraData is %s (%zu bytes), expected the report data %s "
                       "(zero-padded to 64 bytes) or its SHA-256; the quote is stale, replayed "
                       "or answers another nonce",
                       q->extra_size ? got : "(empty)", q->extra_size, want);
    }
    /* pcrDigest = H_sig(PCR values in selection order). */
    size_t hs = ev__tpm_alg_size(hash);
    if (q->pcr_digest_size != hs)
        return err_set(err, EV_E_FORMAT,
                       "TPM quote: pcrDigest is %zu bytes, expected %zu for the signing hash %s",
                       q->pcr_digest_size, hs, ev__tpm_alg_name(hash));
    crypto_hash *h = crypto_hash_new(g_algs[alg_index(hash)].h);
    for (size_t i = 0; i < q->sel_count; i++) {
        int b = pcr_bank(in->pcrs, q->sel[i].alg);
        for (unsigned k = 0; k < TPM_PCR_COUNT; k++) {
            if (!(q->sel[i].mask & (1u << k)))
                continue;
            if (b < 0 || !(in->pcrs->bank[b].present & (1u << k))) {
                crypto_hash_free(h);
                return err_set(err, EV_E_FORMAT,
                               "TPM quote selects PCR %s:%u but the evidence carries no value "
                               "for it",
                               ev__tpm_alg_name(q->sel[i].alg), k);
            }
            crypto_hash_update(h, in->pcrs->bank[b].value[k], ev__tpm_alg_size(q->sel[i].alg));
        }
    }
    uint8_t d[TPM_MAX_DIGEST];
    crypto_hash_final(h, d);
    crypto_hash_free(h);
    if (!crypto_memeq(d, q->pcr_digest, hs)) {
        _cleanup_free_ char *got = hex_encode(d, hs);
        _cleanup_free_ char *want = hex_encode(q->pcr_digest, hs);
        return err_set(err, EV_E_MISMATCH,
                       "TPM quote: the %s digest of the supplied PCR values is %s, but the signed "
                       "pcrDigest is %s; the PCR values were modified or belong to another quote",
                       ev__tpm_alg_name(hash), got, want);
    }
    (void)sig_alg;
    return 0;
}

/* ---- PCR maps ---- */

static int pcrs_bank_add(tpm_pcrs *out, uint16_t alg, cista_error **err)
{
    int b = pcr_bank(out, alg);
    if (b >= 0)
        return b;
    if (out->bank_count == TPM_MAX_BANKS)
        return err_set(err, EV_E_FORMAT, "PCR values: more than %d banks", TPM_MAX_BANKS);
    out->bank[out->bank_count].alg = alg;
    out->bank[out->bank_count].present = 0;
    return (int)out->bank_count++;
}

int ev__tpm_pcrs_from_json(tpm_pcrs *out, const json_t *obj, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj))
        return err_set(err, EV_E_FORMAT, "\"pcrs\" must be an object {\"sha256\": {\"0\": hex}}");
    const char *bank_name;
    json_t *bank;
    json_object_foreach((json_t *)obj, bank_name, bank)
    {
        uint16_t alg = ev__tpm_alg_by_name(bank_name);
        if (!alg)
            return err_set(err, EV_E_VERSION, "pcrs: unknown bank \"%s\"", bank_name);
        if (!json_is_object(bank))
            return err_set(err, EV_E_FORMAT, "pcrs.%s must be an object", bank_name);
        int b = pcrs_bank_add(out, alg, err);
        if (b < 0)
            return b;
        const char *idx;
        json_t *v;
        json_object_foreach(bank, idx, v)
        {
            char *end = NULL;
            long k = strtol(idx, &end, 10);
            if (!*idx || *end || k < 0 || k >= TPM_PCR_COUNT || (idx[0] == '0' && idx[1]))
                return err_set(err, EV_E_FORMAT, "pcrs.%s: \"%s\" is not a PCR index 0-23",
                               bank_name, idx);
            size_t sz = ev__tpm_alg_size(alg);
            if (!json_is_string(v) || json_string_length(v) != 2 * sz)
                return err_set(err, EV_E_FORMAT, "pcrs.%s.%s must be %zu hex digits", bank_name,
                               idx, 2 * sz);
            int rc = hex_decode_to(out->bank[b].value[k], sz, json_string_value(v), err);
            if (rc < 0)
                return err_wrap(err, "pcrs.%s.%s", bank_name, idx);
            out->bank[b].present |= 1u << k;
        }
    }
    return 0;
}

int ev__tpm_pcrs_add_concat(tpm_pcrs *out, uint16_t alg, const uint8_t *p, size_t size,
                            cista_error **err)
{
    size_t sz = ev__tpm_alg_size(alg);
    if (!sz || size % sz || size / sz > TPM_PCR_COUNT)
        return err_set(err, EV_E_SIZE, "PCR values: %zu bytes is not a whole number of %s PCRs",
                       size, ev__tpm_alg_name(alg) ? ev__tpm_alg_name(alg) : "?");
    int b = pcrs_bank_add(out, alg, err);
    if (b < 0)
        return b;
    for (size_t k = 0; k < size / sz; k++) {
        memcpy(out->bank[b].value[k], p + k * sz, sz);
        out->bank[b].present |= 1u << k;
    }
    return 0;
}

json_t *ev__tpm_pcrs_json(const tpm_pcrs *pcrs, const tpm_quote *q)
{
    json_t *o = json_object();
    for (size_t i = 0; i < q->sel_count; i++) {
        int b = pcr_bank(pcrs, q->sel[i].alg);
        json_t *bank = json_object();
        for (unsigned k = 0; k < TPM_PCR_COUNT && b >= 0; k++) {
            if (!(q->sel[i].mask & (1u << k)))
                continue;
            char idx[16];
            snprintf(idx, sizeof(idx), "%u", k);
            json_object_set_new(
                bank, idx, ev__json_hex(pcrs->bank[b].value[k], ev__tpm_alg_size(q->sel[i].alg)));
        }
        json_object_set_new(o, ev__tpm_alg_name(q->sel[i].alg), bank);
    }
    return o;
}

static char *key_id(EVP_PKEY *k)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    if (n <= 0)
        return xstrdup("?");
    uint8_t h[32];
    crypto_hash_oneshot(CRYPTO_SHA256, der, (size_t)n, h);
    OPENSSL_free(der);
    return hex_encode(h, 32);
}

static char *key_desc(EVP_PKEY *k)
{
    if (crypto_key_is_rsa(k))
        return xasprintf("RSA-%d", EVP_PKEY_get_bits(k));
    const char *crv = crypto_key_ec_crv(k);
    return xasprintf("EC-%s", crv ? crv : "?");
}

json_t *ev__tpm_quote_json(const tpm_quote *q, EVP_PKEY *ak)
{
    char fw[24], clk[24];
    snprintf(fw, sizeof(fw), "0x%016llx", (unsigned long long)q->firmware);
    snprintf(clk, sizeof(clk), "%llu", (unsigned long long)q->clock);
    _cleanup_free_ char *kid = key_id(ak);
    _cleanup_free_ char *kd = key_desc(ak);
    json_t *sel = json_object();
    for (size_t i = 0; i < q->sel_count; i++) {
        json_t *a = json_array();
        for (unsigned k = 0; k < TPM_PCR_COUNT; k++)
            if (q->sel[i].mask & (1u << k))
                json_array_append_new(a, json_integer(k));
        json_object_set_new(sel, ev__tpm_alg_name(q->sel[i].alg), a);
    }
    json_t *o = json_object();
    json_object_set_new(o, "firmware_version", json_string(fw));
    json_object_set_new(o, "clock",
                        json_pack("{s:s,s:I,s:I,s:b}", "clock_ms", clk, "reset_count",
                                  (json_int_t)q->reset_count, "restart_count",
                                  (json_int_t)q->restart_count, "safe", q->safe != 0));
    json_object_set_new(o, "extra_data", ev__json_hex(q->extra, q->extra_size));
    json_object_set_new(o, "qualified_signer", ev__json_hex(q->signer, q->signer_size));
    json_object_set_new(o, "pcr_selection", sel);
    json_object_set_new(o, "pcr_digest", ev__json_hex(q->pcr_digest, q->pcr_digest_size));
    json_object_set_new(o, "ak", json_pack("{s:s,s:s}", "key_sha256", kid, "type", kd));
    return o;
}

/* ---- event logs ---- */

/* Re-code a helper's error (JSON, base64) as EV_E_FORMAT, keeping its message. */
static int as_format(cista_error **err)
{
    if (!err || !*err)
        return EV_E_FORMAT;
    _cleanup_free_ char *m = err_str(*err);
    err_clear(err);
    return err_set(err, EV_E_FORMAT, "%s", m);
}

/* Replay state: one bank per quoted bank; @touched marks PCRs the logs extended. */
typedef struct {
    tpm_pcrs pcr;
    uint32_t touched[TPM_MAX_BANKS];
    size_t events;
} replay;

static void replay_init(replay *rp, const tpm_quote *q)
{
    memset(rp, 0, sizeof(*rp));
    for (size_t i = 0; i < q->sel_count; i++) {
        rp->pcr.bank[i].alg = q->sel[i].alg;
        /* PC client reset values: 0 except PCR 17-22 (DRTM, not launched) all 0xff. */
        for (unsigned k = 17; k <= 22; k++)
            memset(rp->pcr.bank[i].value[k], 0xff, ev__tpm_alg_size(q->sel[i].alg));
    }
    rp->pcr.bank_count = q->sel_count;
}

static void replay_extend(replay *rp, uint16_t alg, unsigned pcr, const uint8_t *digest)
{
    int b = pcr_bank(&rp->pcr, alg);
    if (b < 0)
        return; /* a bank the quote does not cover */
    size_t sz = ev__tpm_alg_size(alg);
    uint8_t buf[2 * TPM_MAX_DIGEST];
    memcpy(buf, rp->pcr.bank[b].value[pcr], sz);
    memcpy(buf + sz, digest, sz);
    hash_alg(alg, buf, 2 * sz, rp->pcr.bank[b].value[pcr]);
    rp->touched[b] |= 1u << pcr;
}

static uint32_t le32(const uint8_t *p)
{
    return ev__le32(p);
}

/* Little-endian reader for the TCG log (same bounds rules as rd). */
static int lneed(rd *r, size_t n, const char *field, cista_error **err)
{
    return need(r, n, field, err);
}

static int lrd_u32(rd *r, uint32_t *v, const char *field, cista_error **err)
{
    int rc = lneed(r, 4, field, err);
    if (rc < 0)
        return rc;
    *v = le32(r->p + r->off);
    r->off += 4;
    return 0;
}

static int lrd_u16(rd *r, uint16_t *v, const char *field, cista_error **err)
{
    int rc = lneed(r, 2, field, err);
    if (rc < 0)
        return rc;
    *v = (uint16_t)(r->p[r->off] | r->p[r->off + 1] << 8);
    r->off += 2;
    return 0;
}

/*
 * TCG PC Client crypto-agile log (or a legacy SHA-1 log): the first event is
 * TCG_PCR_EVENT; with "Spec ID Event03" the rest are TCG_PCR_EVENT2 whose
 * digest sizes come from the Spec ID algorithm table. EV_NO_ACTION events
 * are not extended; "StartupLocality" sets PCR 0's initial locality byte.
 */
static int replay_tcg(replay *rp, const uint8_t *p, size_t size, cista_error **err)
{
    rd r = {p, size, 0, "TCG event log"};
    uint32_t pcr = 0, type = 0, esz = 0;
    int rc;
    if ((rc = lrd_u32(&r, &pcr, "first event pcrIndex", err)) < 0 ||
        (rc = lrd_u32(&r, &type, "first event eventType", err)) < 0 ||
        (rc = lneed(&r, 20, "first event digest", err)) < 0)
        return rc;
    const uint8_t *d0 = r.p + r.off;
    r.off += 20;
    if ((rc = lrd_u32(&r, &esz, "first event eventSize", err)) < 0 ||
        (rc = lneed(&r, esz, "first event data", err)) < 0)
        return rc;
    const uint8_t *ev0 = r.p + r.off;
    r.off += esz;
    struct {
        uint16_t alg, size;
    } algs[TCG_MAX_ALGS];
    uint32_t nalg = 0;
    bool agile = type == EV_NO_ACTION && esz >= 24 && memcmp(ev0, "Spec ID Event03", 16) == 0;
    if (agile) {
        rd s = {ev0, esz, 16, "TCG Spec ID event"};
        uint32_t cls = 0;
        if ((rc = lrd_u32(&s, &cls, "platformClass", err)) < 0 ||
            (rc = lneed(&s, 4, "specVersion", err)) < 0)
            return rc;
        s.off += 4;
        if ((rc = lrd_u32(&s, &nalg, "numberOfAlgorithms", err)) < 0)
            return rc;
        if (nalg == 0 || nalg > TCG_MAX_ALGS)
            return err_set(err, EV_E_FORMAT, "TCG Spec ID event: %u algorithms (1-%d expected)",
                           nalg, TCG_MAX_ALGS);
        for (uint32_t i = 0; i < nalg; i++) {
            if ((rc = lrd_u16(&s, &algs[i].alg, "algorithmId", err)) < 0 ||
                (rc = lrd_u16(&s, &algs[i].size, "digestSize", err)) < 0)
                return rc;
            if (algs[i].size == 0 || algs[i].size > TPM_MAX_DIGEST ||
                (ev__tpm_alg_size(algs[i].alg) && ev__tpm_alg_size(algs[i].alg) != algs[i].size))
                return err_set(err, EV_E_FORMAT,
                               "TCG Spec ID event: algorithm 0x%04x has digest size %u",
                               algs[i].alg, algs[i].size);
        }
    } else {
        /* Legacy SHA-1 log: the first event is an ordinary measurement. */
        if (pcr >= TPM_PCR_COUNT)
            return err_set(err, EV_E_FORMAT, "TCG event log: event 0 extends PCR %u", pcr);
        if (type != EV_NO_ACTION)
            replay_extend(rp, TPM_ALG_SHA1, pcr, d0);
        rp->events++;
    }
    for (size_t i = 1; r.off < r.size; i++) {
        if (ev__all_zero(r.p + r.off, r.size - r.off))
            break; /* zero padding after the last event */
        if (rp->events >= TPM_MAX_EVENTS)
            return err_set(err, EV_E_SIZE, "TCG event log: more than %d events", TPM_MAX_EVENTS);
        if ((rc = lrd_u32(&r, &pcr, "pcrIndex", err)) < 0 ||
            (rc = lrd_u32(&r, &type, "eventType", err)) < 0)
            return err_wrap(err, "TCG event %zu", i);
        if (pcr >= TPM_PCR_COUNT)
            return err_set(err, EV_E_FORMAT,
                           "TCG event log: event %zu extends PCR %u (only 0-23 exist)", i, pcr);
        const uint8_t *dig[TCG_MAX_ALGS];
        uint16_t dalg[TCG_MAX_ALGS];
        uint32_t cnt = 1;
        if (agile) {
            if ((rc = lrd_u32(&r, &cnt, "digests.count", err)) < 0)
                return err_wrap(err, "TCG event %zu", i);
            if (cnt > nalg)
                return err_set(err, EV_E_FORMAT,
                               "TCG event %zu has %u digests, the Spec ID event declares %u", i,
                               cnt, nalg);
            for (uint32_t j = 0; j < cnt; j++) {
                if ((rc = lrd_u16(&r, &dalg[j], "digests.hashAlg", err)) < 0)
                    return err_wrap(err, "TCG event %zu", i);
                size_t ds = 0;
                for (uint32_t a = 0; a < nalg; a++)
                    if (algs[a].alg == dalg[j])
                        ds = algs[a].size;
                if (!ds)
                    return err_set(err, EV_E_FORMAT,
                                   "TCG event %zu: digest algorithm 0x%04x is not in the Spec ID "
                                   "event",
                                   i, dalg[j]);
                if ((rc = lneed(&r, ds, "digest", err)) < 0)
                    return err_wrap(err, "TCG event %zu", i);
                dig[j] = r.p + r.off;
                r.off += ds;
            }
        } else {
            if ((rc = lneed(&r, 20, "digest", err)) < 0)
                return err_wrap(err, "TCG event %zu", i);
            dalg[0] = TPM_ALG_SHA1;
            dig[0] = r.p + r.off;
            r.off += 20;
        }
        if ((rc = lrd_u32(&r, &esz, "eventSize", err)) < 0 ||
            (rc = lneed(&r, esz, "event data", err)) < 0)
            return err_wrap(err, "TCG event %zu", i);
        const uint8_t *data = r.p + r.off;
        r.off += esz;
        rp->events++;
        if (type == EV_NO_ACTION) {
            if (pcr == 0 && esz >= 17 && memcmp(data, "StartupLocality", 16) == 0) {
                for (size_t b = 0; b < rp->pcr.bank_count; b++)
                    if (!(rp->touched[b] & 1))
                        rp->pcr.bank[b].value[0][ev__tpm_alg_size(rp->pcr.bank[b].alg) - 1] =
                            data[16];
            }
            continue;
        }
        for (uint32_t j = 0; j < cnt; j++)
            if (ev__tpm_alg_size(dalg[j]))
                replay_extend(rp, dalg[j], pcr, dig[j]);
    }
    return 0;
}

/* The cista event log: an array of {pcr, alg, digest, type, data?}. */
static int replay_cista(replay *rp, const json_t *log, json_t *out_events, cista_error **err)
{
    if (!json_is_array(log))
        return err_set(err, EV_E_FORMAT, "cista_event_log must be an array");
    if (json_array_size(log) > TPM_MAX_EVENTS)
        return err_set(err, EV_E_SIZE, "cista event log: more than %d events", TPM_MAX_EVENTS);
    size_t i;
    json_t *e;
    json_array_foreach(log, i, e)
    {
        int64_t pcr = -1;
        const char *alg_s = NULL, *dig_s = NULL, *type = NULL, *data = NULL;
        char what[48];
        snprintf(what, sizeof(what), "cista event %zu", i);
        int rc;
        if (!json_is_object(e))
            return err_set(err, EV_E_FORMAT, "%s is not an object", what);
        if ((rc = js_get_int(&pcr, e, "pcr", true, what, err)) < 0 ||
            (rc = js_get_string(&alg_s, e, "alg", true, what, err)) < 0 ||
            (rc = js_get_string(&dig_s, e, "digest", true, what, err)) < 0 ||
            (rc = js_get_string(&type, e, "type", true, what, err)) < 0 ||
            (rc = js_get_string(&data, e, "data", false, what, err)) < 0)
            return as_format(err);
        uint16_t alg = ev__tpm_alg_by_name(alg_s);
        if (pcr < 0 || pcr >= TPM_PCR_COUNT || !alg || strlen(type) > CISTA_LOG_MAX_TYPE ||
            (data && strlen(data) > CISTA_LOG_MAX_DATA))
            return err_set(err, EV_E_FORMAT,
                           "%s: pcr %lld, alg \"%s\", type of %zu characters: expected a PCR "
                           "0-23, sha1/sha256/sha384/sha512, a type of at most %d and data of "
                           "at most %d characters",
                           what, (long long)pcr, alg_s, strlen(type), CISTA_LOG_MAX_TYPE,
                           CISTA_LOG_MAX_DATA);
        uint8_t d[TPM_MAX_DIGEST];
        if ((rc = hex_decode_to(d, ev__tpm_alg_size(alg), dig_s, err)) < 0) {
            err_clear(err);
            return err_set(err, EV_E_FORMAT, "%s: digest is not %zu hex digits", what,
                           2 * ev__tpm_alg_size(alg));
        }
        replay_extend(rp, alg, (unsigned)pcr, d);
        rp->events++;
        json_t *o = json_pack("{s:I,s:s,s:s,s:s}", "pcr", (json_int_t)pcr, "alg", alg_s, "digest",
                              dig_s, "type", type);
        if (data)
            json_object_set_new(o, "data", json_string(data));
        json_array_append_new(out_events, o);
    }
    return 0;
}

/*
 * Every quoted PCR the logs extended must equal its replay (else
 * EV_E_MISMATCH). verified_pcrs lists the quoted PCRs whose value the logs
 * explain (replayed, or untouched and still at the reset value);
 * unverified_pcrs those the logs do not cover (untouched, not at reset).
 */
static int replay_check(const replay *rp, const tpm_pcrs *quoted, const tpm_quote *q, json_t *out,
                        cista_error **err)
{
    json_t *verified = json_object(), *unverified = json_object();
    json_object_set_new(out, "verified_pcrs", verified);
    json_object_set_new(out, "unverified_pcrs", unverified);
    for (size_t i = 0; i < q->sel_count; i++) {
        uint16_t alg = q->sel[i].alg;
        int rb = pcr_bank(&rp->pcr, alg), qb = pcr_bank(quoted, alg);
        json_t *a = json_array(), *u = json_array();
        json_object_set_new(verified, ev__tpm_alg_name(alg), a);
        json_object_set_new(unverified, ev__tpm_alg_name(alg), u);
        for (unsigned k = 0; k < TPM_PCR_COUNT; k++) {
            if (!(q->sel[i].mask & (1u << k)))
                continue;
            size_t sz = ev__tpm_alg_size(alg);
            bool eq = crypto_memeq(rp->pcr.bank[rb].value[k], quoted->bank[qb].value[k], sz);
            if (!(rp->touched[rb] & (1u << k))) {
                json_array_append_new(eq ? a : u, json_integer(k));
                continue;
            }
            if (!eq) {
                _cleanup_free_ char *want = hex_encode(rp->pcr.bank[rb].value[k], sz);
                _cleanup_free_ char *got = hex_encode(quoted->bank[qb].value[k], sz);
                return err_set(err, EV_E_MISMATCH,
                               "event log replay gives PCR %s:%u = %s, but the quoted value is "
                               "%s; the event log is incomplete or was modified, or the PCR was "
                               "extended without logging",
                               ev__tpm_alg_name(alg), k, want, got);
            }
            json_array_append_new(a, json_integer(k));
        }
    }
    return 0;
}

/* ---- the evidence container ---- */

typedef struct {
    json_t *root;
    uint8_t *attest, *sig, *ak_public, *ak_spki, *tcg_log;
    size_t attest_size, sig_size, ak_public_size, ak_spki_size, tcg_log_size;
    bool sig_raw_rsassa;
    tpm_pcrs pcrs;
    json_t *ak_certs;  /* borrowed from root, may be NULL */
    json_t *cista_log; /* borrowed from root, may be NULL */
} container;

static void container_free(container *c)
{
    json_decref(c->root);
    free(c->attest);
    free(c->sig);
    free(c->ak_public);
    free(c->ak_spki);
    free(c->tcg_log);
}

static int get_b64(uint8_t **out, size_t *out_size, const json_t *o, const char *key, bool required,
                   const char *what, cista_error **err)
{
    const char *s = NULL;
    int rc = js_get_string(&s, o, key, required, what, err);
    if (rc < 0)
        return as_format(err);
    if (!s)
        return 0;
    rc = b64_decode(out, out_size, s, strlen(s), err);
    if (rc < 0) {
        err_wrap(err, "%s: member \"%s\"", what, key);
        return as_format(err);
    }
    return 0;
}

/*
 * Parse the JSON container @what (a TPM quote with its PCR values, AK and
 * event logs). @obj may be a sub-object of another container (Azure).
 */
static int container_parse(container *c, const json_t *obj, const char *what, cista_error **err)
{
    int rc;
    const char *fmt = NULL;
    if ((rc = js_get_string(&fmt, obj, "format", false, what, err)) < 0)
        return as_format(err);
    if (fmt && strcmp(fmt, TPM_FORMAT) != 0)
        return err_set(err, EV_E_VERSION, "%s: format \"%s\" is not %s", what, fmt, TPM_FORMAT);
    if ((rc = get_b64(&c->attest, &c->attest_size, obj, "attest", true, what, err)) < 0 ||
        (rc = get_b64(&c->sig, &c->sig_size, obj, "signature", true, what, err)) < 0 ||
        (rc = get_b64(&c->ak_public, &c->ak_public_size, obj, "ak_public", false, what, err)) < 0 ||
        (rc = get_b64(&c->ak_spki, &c->ak_spki_size, obj, "ak_spki", false, what, err)) < 0 ||
        (rc = get_b64(&c->tcg_log, &c->tcg_log_size, obj, "tcg_event_log", false, what, err)) < 0)
        return rc;
    const char *sf = NULL;
    if ((rc = js_get_string(&sf, obj, "signature_format", false, what, err)) < 0)
        return as_format(err);
    if (sf && strcmp(sf, "tpmt") != 0 && strcmp(sf, "rsassa-sha256") != 0)
        return err_set(err, EV_E_VERSION,
                       "%s: signature_format \"%s\" is not \"tpmt\" (TPMT_SIGNATURE) or "
                       "\"rsassa-sha256\" (bare RSA signature)",
                       what, sf);
    c->sig_raw_rsassa = sf && strcmp(sf, "rsassa-sha256") == 0;
    json_t *pcrs = NULL;
    if ((rc = js_get_object(&pcrs, obj, "pcrs", true, what, err)) < 0)
        return as_format(err);
    if ((rc = ev__tpm_pcrs_from_json(&c->pcrs, pcrs, err)) < 0)
        return err_wrap(err, "%s", what);
    if ((rc = js_get_array(&c->ak_certs, obj, "ak_certs", false, what, err)) < 0 ||
        (rc = js_get_array(&c->cista_log, obj, "cista_event_log", false, what, err)) < 0)
        return as_format(err);
    return 0;
}

/* ---- trust in the AK ---- */

/*
 * The AK certificate chain: ak_certs[0] is the leaf, the rest of ak_certs
 * and the collateral's certificates are untrusted intermediates, the roots
 * are the pinned Google roots (a root in the collateral must equal one).
 */
static int ak_from_chain(EVP_PKEY **out, json_t *signers, const container *c,
                         const ev_verify_opts *opts, cista_error **err)
{
    _cleanup_x509_stack_ STACK_OF(X509) *inter = sk_X509_new_null();
    _cleanup_x509_stack_ STACK_OF(X509) *roots = sk_X509_new_null();
    _cleanup_x509_crls_ STACK_OF(X509_CRL) *crls = NULL;
    _cleanup_x509_ X509 *leaf = NULL;
    if (!inter || !roots)
        abort();
    size_t i;
    json_t *v;
    json_array_foreach(c->ak_certs, i, v)
    {
        _cleanup_free_ uint8_t *der = NULL;
        size_t n = 0;
        if (!json_is_string(v) ||
            b64_decode(&der, &n, json_string_value(v), json_string_length(v), err) < 0) {
            err_clear(err);
            return err_set(err, EV_E_FORMAT, "ak_certs[%zu] is not base64", i);
        }
        X509 *x = NULL;
        if (x509_cert_load(&x, der, n, err) < 0) {
            err_wrap(err, "ak_certs[%zu]", i);
            return as_format(err);
        }
        if (i == 0)
            leaf = x;
        else
            sk_X509_push(inter, x);
        if (i >= X509_MAX_CERTS)
            return err_set(err, EV_E_FORMAT, "ak_certs: more than %d certificates", X509_MAX_CERTS);
    }
    if (!leaf)
        return err_set(err, EV_E_NOKEY, "ak_certs is empty");
    for (size_t k = 0; k < ARRAY_LEN(g_roots); k++) {
        X509 *root = NULL;
        int rc = x509_cert_load(&root, g_roots[k].pem, strlen(g_roots[k].pem), err);
        if (rc < 0)
            return err_wrap(err, "built-in %s", g_roots[k].name);
        uint8_t fp[32];
        if ((rc = x509_cert_sha256(fp, root, err)) < 0) {
            X509_free(root);
            return rc;
        }
        _cleanup_free_ char *hx = hex_encode(fp, 32);
        if (strcmp(hx, g_roots[k].sha256_hex) != 0) {
            X509_free(root);
            return err_set(err, EV_E_CHAIN, "built-in %s does not match its pin", g_roots[k].name);
        }
        sk_X509_push(roots, root);
    }
    for (size_t k = 0; k < ev_collateral_count(opts->collateral); k++) {
        const char *name;
        const uint8_t *data;
        size_t dsize;
        ev_collateral_get(opts->collateral, k, &name, &data, &dsize);
        _cleanup_x509_stack_ STACK_OF(X509) *certs = NULL;
        _cleanup_err_ cista_error *e1 = NULL;
        _cleanup_err_ cista_error *e2 = NULL;
        if (x509_certs_load(&certs, data, dsize, &e1) < 0) {
            if (x509_crls_load(&crls, data, dsize, &e2) < 0)
                log_info("TPM collateral: ignoring %s (neither a certificate nor a CRL)", name);
            continue;
        }
        X509 *x;
        while ((x = sk_X509_shift(certs)) != NULL) {
            if (x509_is_self_signed(x)) {
                /* Roots are trusted only when pinned: drop it (unpinned ones cannot help). */
                uint8_t fp[32];
                _cleanup_free_ char *hx = NULL;
                if (x509_cert_sha256(fp, x, NULL) == 0)
                    hx = hex_encode(fp, 32);
                bool pinned = false;
                for (size_t k2 = 0; k2 < ARRAY_LEN(g_roots); k2++)
                    pinned |= hx && strcmp(hx, g_roots[k2].sha256_hex) == 0;
                if (!pinned)
                    log_info("TPM collateral %s: ignoring a self-signed certificate that is not "
                             "a pinned AK root",
                             name);
                X509_free(x);
                continue;
            }
            sk_X509_push(inter, x);
        }
    }
    x509_verify_opts xo = {.at = opts->now, .crls = crls, .crl_mode = X509_CRL_AVAILABLE};
    _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
    int rc = x509_verify_chain(&chain, leaf, inter, roots, &xo, err);
    if (rc < 0)
        return err_wrap(err, "TPM AK certificate chain (AK certificate -> intermediate -> pinned "
                             "Google vTPM root)");
    for (int k = 0; k < sk_X509_num(chain); k++) {
        bool last = k == sk_X509_num(chain) - 1;
        json_array_append_new(signers, ev__cert_json(k == 0 ? "ak-cert"
                                                     : last ? "root"
                                                            : "ak-ca",
                                                     sk_X509_value(chain, k), last));
    }
    EVP_PKEY *pk = X509_get_pubkey(leaf);
    if (!pk)
        return err_set(err, EV_E_NOKEY, "AK certificate has no usable public key");
    *out = pk;
    return 0;
}

/* ---- verify ---- */

static int tpm_verify_container(json_t **out, container *c, EVP_PKEY *bound_ak,
                                const char *bound_source, const ev_verify_opts *opts,
                                cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *signers = json_array();
    /* The AK the evidence names (TPMT_PUBLIC and/or SPKI); not trusted by itself. */
    _cleanup_pkey_ EVP_PKEY *named = NULL;
    _cleanup_pkey_ EVP_PKEY *spki = NULL;
    uint32_t attrs = 0;
    bool have_attrs = false;
    if (c->ak_public) {
        if ((rc = ev__tpm_parse_public(&named, &attrs, c->ak_public, c->ak_public_size, err)) < 0)
            return err_wrap(err, "ak_public");
        have_attrs = true;
        uint32_t want = TPMA_FIXED_TPM | TPMA_FIXED_PARENT | TPMA_SENSITIVE_DATA_ORIGIN |
                        TPMA_RESTRICTED | TPMA_SIGN;
        if ((attrs & want) != want)
            return err_set(err, EV_E_NOKEY,
                           "ak_public: objectAttributes 0x%08x lack fixedTPM, fixedParent, "
                           "sensitiveDataOrigin, restricted or sign (0x%08x): an unrestricted "
                           "or exportable key can sign forged quotes",
                           attrs, want);
    }
    if (c->ak_spki) {
        if ((rc = crypto_key_load(&spki, c->ak_spki, c->ak_spki_size, false, err)) < 0) {
            err_wrap(err, "ak_spki");
            return as_format(err);
        }
        if (named && !crypto_key_public_eq(named, spki))
            return err_set(err, EV_E_NOKEY, "ak_spki and ak_public hold different keys");
        if (!named)
            named = steal_ptr(&spki);
    }

    _cleanup_pkey_ EVP_PKEY *chained = NULL;
    EVP_PKEY *ak = NULL;
    const char *source = NULL;
    if (bound_ak || opts->tpm_ak_pub) {
        ak = bound_ak ? bound_ak : opts->tpm_ak_pub;
        source = bound_ak ? bound_source : "registered";
        if (named && !crypto_key_public_eq(named, ak)) {
            _cleanup_free_ char *a = key_id(named);
            _cleanup_free_ char *b = key_id(ak);
            return err_set(err, EV_E_NOKEY,
                           "the evidence names attestation key %s, but the trusted AK (%s) is "
                           "%s: the quote comes from another TPM (or the AK was re-created)",
                           a, source, b);
        }
    } else if (c->ak_certs && json_array_size(c->ak_certs) > 0) {
        if ((rc = ak_from_chain(&chained, signers, c, opts, err)) < 0)
            return rc;
        ak = chained;
        source = "certificate";
        if (named && !crypto_key_public_eq(named, ak))
            return err_set(err, EV_E_NOKEY,
                           "the AK certificate's key differs from ak_public: the certificate "
                           "belongs to another key");
    } else {
        return err_set(err, EV_E_NOKEY,
                       "no trusted attestation key: register the AK public key (--ak PUB) or "
                       "include an AK certificate chaining to a pinned root (ak_certs)");
    }

    tpm_quote q;
    tpm_quote_in in = {.attest = c->attest,
                       .attest_size = c->attest_size,
                       .sig = c->sig,
                       .sig_size = c->sig_size,
                       .sig_raw_rsassa = c->sig_raw_rsassa,
                       .pcrs = &c->pcrs,
                       .ak = ak};
    if ((rc = ev__tpm_verify_quote(&q, &in, opts->report_data, err)) < 0)
        return rc;

    /* Event logs: firmware (TCG) first, then cista's own extends. */
    _cleanup_json_ json_t *log = NULL;
    if (c->tcg_log || c->cista_log) {
        replay rp;
        replay_init(&rp, &q);
        log = json_object();
        if (c->tcg_log && (rc = replay_tcg(&rp, c->tcg_log, c->tcg_log_size, err)) < 0)
            return err_wrap(err, "tcg_event_log");
        json_t *events = json_array();
        json_object_set_new(log, "cista_events", events);
        if (c->cista_log && (rc = replay_cista(&rp, c->cista_log, events, err)) < 0)
            return err_wrap(err, "cista_event_log");
        json_t *formats = json_array();
        if (c->tcg_log)
            json_array_append_new(formats, json_string("tcg2"));
        if (c->cista_log)
            json_array_append_new(formats, json_string("cista"));
        json_object_set_new(log, "formats", formats);
        json_object_set_new(log, "events", json_integer((json_int_t)rp.events));
        if ((rc = replay_check(&rp, &c->pcrs, &q, log, err)) < 0)
            return rc;
    }

    json_t *cl = ev__claims_new("tpm", false);
    json_object_set_new(cl, "measurements",
                        json_pack("{s:o}", "pcrs", ev__tpm_pcrs_json(&c->pcrs, &q)));
    if (q.extra_size <= EV_REPORT_DATA_SIZE) {
        uint8_t pad[EV_REPORT_DATA_SIZE] = {0};
        memcpy(pad, q.extra, q.extra_size);
        json_object_set_new(cl, "report_data", ev__json_hex(pad, EV_REPORT_DATA_SIZE));
    }
    _cleanup_free_ char *kid = key_id(ak);
    json_object_set_new(cl, "platform_id", json_string(kid));
    json_array_insert_new(
        signers, 0, json_pack("{s:s,s:s,s:s}", "role", "ak", "key_sha256", kid, "source", source));
    json_object_set(cl, "signers", signers);
    json_t *t = ev__tpm_quote_json(&q, ak);
    json_t *akj = json_object_get(t, "ak");
    if (have_attrs) {
        char a[16];
        snprintf(a, sizeof(a), "0x%08x", attrs);
        json_object_set_new(akj, "attributes", json_string(a));
    }
    json_object_set_new(akj, "source", json_string(source));
    if (log)
        json_object_set(t, "event_log", log);
    json_object_set_new(cl, "tpm", t);
    *out = cl;
    return 0;
}

int ev__tpm_verify_json(json_t **out, const json_t *obj, EVP_PKEY *ak, const char *ak_source,
                        const ev_verify_opts *opts, cista_error **err)
{
    __attribute__((cleanup(container_free))) container c = {0};
    int rc = container_parse(&c, obj, "TPM quote", err);
    if (rc < 0)
        return rc;
    return tpm_verify_container(out, &c, ak, ak_source, opts, err);
}

static int tpm_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                      size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    (void)aux;
    (void)aux_size;
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    __attribute__((cleanup(container_free))) container c = {0};
    int rc = js_parse_object(&c.root, ev, size, EV_MAX_EVIDENCE, "TPM evidence", err);
    if (rc < 0)
        return as_format(err);
    if ((rc = container_parse(&c, c.root, "TPM evidence", err)) < 0)
        return rc;
    return tpm_verify_container(out, &c, NULL, NULL, opts, err);
}

static bool tpm_detect(const uint8_t *ev, size_t size)
{
    size_t n = size < 256 ? size : 256;
    return n && ev[0] == '{' && memmem(ev, n, "\"" TPM_FORMAT "\"", strlen(TPM_FORMAT) + 2);
}

/* ---- producer: tpm2-tss ESYS ---- */

typedef struct {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR ak;
} tpm_conn;

static void conn_close(tpm_conn *c)
{
    if (c->esys && c->ak != ESYS_TR_NONE)
        (void)Esys_FlushContext(c->esys, c->ak);
    if (c->esys)
        Esys_Finalize(&c->esys);
    if (c->tcti)
        Tss2_TctiLdr_Finalize(&c->tcti);
}

static int tss_fail(cista_error **err, TSS2_RC rc, const char *what)
{
    return err_set(err, -EIO, "TPM: %s failed: %s (0x%x)", what, Tss2_RC_Decode(rc), rc);
}

static const char *tcti_conf(const ev_get_opts *opts)
{
    const char *s = opts && opts->tpm_tcti ? opts->tpm_tcti : getenv("CISTA_TPM_TCTI");
    return s && *s ? s : DEFAULT_TCTI;
}

static const char *eventlog_path(const ev_get_opts *opts)
{
    const char *s = opts && opts->tpm_eventlog ? opts->tpm_eventlog : getenv("CISTA_TPM_EVENTLOG");
    return s && *s ? s : DEFAULT_EVENTLOG;
}

static int conn_open(tpm_conn *c, const ev_get_opts *opts, cista_error **err)
{
    memset(c, 0, sizeof(*c));
    c->ak = ESYS_TR_NONE;
    const char *conf = tcti_conf(opts);
    TSS2_RC rc = Tss2_TctiLdr_Initialize(conf, &c->tcti);
    if (rc != TSS2_RC_SUCCESS)
        return err_set(err, EV_E_NOTEE,
                       "TPM: cannot open TCTI \"%s\": %s; is a TPM present (device:/dev/tpmrm0) "
                       "or swtpm running (swtpm:host=127.0.0.1,port=N)?",
                       conf, Tss2_RC_Decode(rc));
    /* TPM2_Startup is the firmware's job (swtpm: --flags startup-clear). */
    rc = Esys_Initialize(&c->esys, c->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tss_fail(err, rc, "Esys_Initialize");
    return 0;
}

/*
 * The attestation key: a primary ECC P-256 restricted signing key (ECDSA
 * SHA-256) under the endorsement hierarchy, created from a fixed template.
 * A primary key is derived from the hierarchy seed and the template, so the
 * same TPM gives the same AK every time (until the EPS is changed by
 * TPM2_ChangeEPS / a TPM clear of the endorsement hierarchy): nothing is
 * persisted, and the AK public key can be registered once.
 */
static int create_ak(tpm_conn *c, uint8_t *pub, size_t pub_cap, size_t *pub_size, cista_error **err)
{
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION creation;
    memset(&sens, 0, sizeof(sens));
    memset(&tmpl, 0, sizeof(tmpl));
    memset(&outside, 0, sizeof(outside));
    memset(&creation, 0, sizeof(creation));
    TPMT_PUBLIC *t = &tmpl.publicArea;
    t->type = TPM2_ALG_ECC;
    t->nameAlg = TPM2_ALG_SHA256;
    t->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
    t->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    t->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    t->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    t->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    t->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    TPM2B_PUBLIC *out = NULL;
    TSS2_RC rc = Esys_CreatePrimary(c->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                    ESYS_TR_NONE, &sens, &tmpl, &outside, &creation, &c->ak, &out,
                                    NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tss_fail(err, rc,
                        "creating the attestation key (CreatePrimary under the endorsement "
                        "hierarchy; a non-empty endorsement auth is not supported)");
    size_t off = 0;
    rc = Tss2_MU_TPMT_PUBLIC_Marshal(&out->publicArea, pub, pub_cap, &off);
    Esys_Free(out);
    if (rc != TSS2_RC_SUCCESS)
        return tss_fail(err, rc, "marshalling the AK public area");
    *pub_size = off;
    return 0;
}

/* "sha256:0-23+sha1:0,7" into a TPM selection (sizeofSelect 3). */
static int parse_pcr_spec(TPML_PCR_SELECTION *out, const char *spec, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    _cleanup_free_ char *dup = xstrdup(spec);
    char *save = NULL;
    for (char *bank = strtok_r(dup, "+", &save); bank; bank = strtok_r(NULL, "+", &save)) {
        char *colon = strchr(bank, ':');
        if (!colon)
            return err_set(err, -EINVAL, "PCR selection \"%s\": expected BANK:LIST", spec);
        *colon = 0;
        uint16_t alg = ev__tpm_alg_by_name(bank);
        if (!alg || out->count >= TPM_MAX_BANKS)
            return err_set(err, -EINVAL, "PCR selection \"%s\": unknown or repeated bank \"%s\"",
                           spec, bank);
        TPMS_PCR_SELECTION *s = &out->pcrSelections[out->count++];
        s->hash = alg;
        s->sizeofSelect = 3;
        char *save2 = NULL;
        for (char *item = strtok_r(colon + 1, ",", &save2); item;
             item = strtok_r(NULL, ",", &save2)) {
            char *end = NULL;
            long lo = strtol(item, &end, 10), hi = lo;
            if (end != item && *end == '-')
                hi = strtol(end + 1, &end, 10);
            if (end == item || *end || lo < 0 || hi < lo || hi >= TPM_PCR_COUNT)
                return err_set(err, -EINVAL, "PCR selection \"%s\": bad item \"%s\" (0-23)", spec,
                               item);
            for (long k = lo; k <= hi; k++)
                s->pcrSelect[k / 8] |= (uint8_t)(1u << (k % 8));
        }
    }
    if (out->count == 0)
        return err_set(err, -EINVAL, "PCR selection \"%s\" is empty", spec);
    return 0;
}

static int read_pcrs(tpm_pcrs *out, tpm_conn *c, const TPML_PCR_SELECTION *want, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    TPML_PCR_SELECTION left = *want;
    for (uint32_t i = 0; i < want->count; i++) {
        out->bank[i].alg = want->pcrSelections[i].hash;
        out->bank_count++;
    }
    for (int round = 0; round < 16; round++) {
        bool any = false;
        for (uint32_t i = 0; i < left.count; i++)
            for (int j = 0; j < 3; j++)
                any |= left.pcrSelections[i].pcrSelect[j] != 0;
        if (!any)
            return 0;
        UINT32 counter = 0;
        TPML_PCR_SELECTION *got = NULL;
        TPML_DIGEST *vals = NULL;
        TSS2_RC rc = Esys_PCR_Read(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &left,
                                   &counter, &got, &vals);
        if (rc != TSS2_RC_SUCCESS)
            return tss_fail(err, rc, "PCR_Read");
        uint32_t vi = 0;
        for (uint32_t i = 0; i < got->count; i++) {
            TPMS_PCR_SELECTION *g = &got->pcrSelections[i];
            int b = pcr_bank(out, g->hash);
            for (unsigned k = 0; k < TPM_PCR_COUNT && k / 8 < g->sizeofSelect; k++) {
                if (!(g->pcrSelect[k / 8] & (1u << (k % 8))) || vi >= vals->count || b < 0)
                    continue;
                size_t sz = ev__tpm_alg_size(g->hash);
                if (vals->digests[vi].size == sz) {
                    memcpy(out->bank[b].value[k], vals->digests[vi].buffer, sz);
                    out->bank[b].present |= 1u << k;
                    left.pcrSelections[b].pcrSelect[k / 8] &= (uint8_t) ~(1u << (k % 8));
                }
                vi++;
            }
        }
        Esys_Free(got);
        Esys_Free(vals);
        if (vi == 0)
            return err_set(err, -EIO, "TPM: PCR_Read returned no values (is the bank active?)");
    }
    return err_set(err, -EIO, "TPM: PCR_Read made no progress");
}

/* The cista event log file as a JSON array (missing file: empty). */
static int read_eventlog(json_t **out, int fd, const char *path, cista_error **err)
{
    json_t *a = json_array();
    *out = a;
    if (fd < 0)
        return 0;
    _cleanup_free_ char *data = NULL;
    size_t size = 0;
    int rc = util_read_file(&data, &size, path, EV_MAX_EVIDENCE, err);
    if (rc == -ENOENT) {
        err_clear(err);
        return 0;
    }
    if (rc < 0)
        return err_wrap(err, "TPM event log %s", path);
    size_t line = 0;
    for (char *p = data; p < data + size; line++) {
        char *nl = memchr(p, '\n', (size_t)(data + size - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(data + size - p);
        if (n) {
            json_t *e = NULL;
            if (js_parse_object(&e, p, n, CISTA_LOG_MAX_DATA * 2, "event", err) < 0)
                return err_wrap(err, "TPM event log %s line %zu", path, line + 1);
            json_array_append_new(a, e);
        }
        p += n + 1;
    }
    return 0;
}

static int open_log_locked(int *out, const char *path, bool create, cista_error **err)
{
    *out = -1;
    int fd = open(
        path, (create ? O_WRONLY | O_APPEND | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && errno == ENOENT && create) {
        _cleanup_free_ char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = 0;
            (void)mkdir(dir, 0755);
        }
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    }
    if (fd < 0) {
        if (errno == ENOENT && !create)
            return 0;
        return err_set_sys(err, -errno, "TPM event log %s", path);
    }
    if (flock(fd, create ? LOCK_EX : LOCK_SH) < 0) {
        int e = errno;
        close(fd);
        return err_set_sys(err, -e, "locking TPM event log %s", path);
    }
    *out = fd;
    return 0;
}

static int tpm_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                   size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                   const ev_get_opts *opts, cista_error **err)
{
    *out_aux = NULL;
    *out_aux_size = 0;
    TPML_PCR_SELECTION sel;
    const char *spec = opts && opts->tpm_pcrs ? opts->tpm_pcrs : DEFAULT_PCRS;
    int rc = parse_pcr_spec(&sel, spec, err);
    if (rc < 0)
        return rc;
    __attribute__((cleanup(conn_close))) tpm_conn c = {0};
    if ((rc = conn_open(&c, opts, err)) < 0)
        return rc;
    uint8_t ak_pub[sizeof(TPMT_PUBLIC)];
    size_t ak_pub_size = 0;
    if ((rc = create_ak(&c, ak_pub, sizeof(ak_pub), &ak_pub_size, err)) < 0)
        return rc;
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    uint32_t attrs = 0;
    if ((rc = ev__tpm_parse_public(&ak, &attrs, ak_pub, ak_pub_size, err)) < 0)
        return err_wrap(err, "the TPM's own AK");

    /* Shared lock: no extend (which takes it exclusively) between log read and quote. */
    const char *log_path = eventlog_path(opts);
    _cleanup_close_ int log_fd = -1;
    if ((rc = open_log_locked(&log_fd, log_path, false, err)) < 0)
        return rc;
    _cleanup_json_ json_t *log = NULL;
    if ((rc = read_eventlog(&log, log_fd, log_path, err)) < 0)
        return rc;

    /* Qualifying data: the 64 bytes, or SHA-256 of them when the TPM takes fewer. */
    TPM2B_DATA qd;
    memset(&qd, 0, sizeof(qd));
    qd.size = EV_REPORT_DATA_SIZE;
    memcpy(qd.buffer, report_data, EV_REPORT_DATA_SIZE);
    TPMT_SIG_SCHEME scheme;
    memset(&scheme, 0, sizeof(scheme));
    scheme.scheme = TPM2_ALG_NULL; /* the key's own scheme: ECDSA SHA-256 */
    for (int attempt = 0; attempt < 3; attempt++) {
        TPM2B_ATTEST *quoted = NULL;
        TPMT_SIGNATURE *sig = NULL;
        TSS2_RC trc = Esys_Quote(c.esys, c.ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &qd,
                                 &scheme, &sel, &quoted, &sig);
        if (trc != TSS2_RC_SUCCESS && qd.size == EV_REPORT_DATA_SIZE) {
            log_info("TPM: Quote with 64 bytes of qualifying data failed (%s); using SHA-256 of "
                     "the report data",
                     Tss2_RC_Decode(trc));
            qd.size = 32;
            crypto_hash_oneshot(CRYPTO_SHA256, report_data, EV_REPORT_DATA_SIZE, qd.buffer);
            attempt--;
            continue;
        }
        if (trc != TSS2_RC_SUCCESS)
            return tss_fail(err, trc, "Quote");
        uint8_t sigbuf[sizeof(TPMT_SIGNATURE)];
        size_t sig_size = 0;
        trc = Tss2_MU_TPMT_SIGNATURE_Marshal(sig, sigbuf, sizeof(sigbuf), &sig_size);
        _cleanup_free_ uint8_t *attest = xmalloc(quoted->size ? quoted->size : 1);
        size_t attest_size = quoted->size;
        memcpy(attest, quoted->attestationData, attest_size);
        Esys_Free(quoted);
        Esys_Free(sig);
        if (trc != TSS2_RC_SUCCESS)
            return tss_fail(err, trc, "marshalling the quote signature");
        tpm_pcrs pcrs;
        if ((rc = read_pcrs(&pcrs, &c, &sel, err)) < 0)
            return rc;
        /* Our own check: the values read must be the ones quoted (no extend in between). */
        tpm_quote q;
        tpm_quote_in in = {attest, attest_size, sigbuf, sig_size, false, &pcrs, ak};
        rc = ev__tpm_verify_quote(&q, &in, report_data, err);
        if (rc == EV_E_MISMATCH && attempt < 2) {
            err_clear(err);
            log_info("TPM: PCRs changed between Quote and PCR_Read; retrying");
            continue;
        }
        if (rc < 0)
            return err_wrap(err, "checking the quote just produced");
        unsigned char *der = NULL;
        int dn = i2d_PUBKEY(ak, &der);
        if (dn <= 0)
            return err_set_ssl(err, -EIO, "encoding the AK public key");
        _cleanup_free_ char *b_att = b64_encode(attest, attest_size);
        _cleanup_free_ char *b_sig = b64_encode(sigbuf, sig_size);
        _cleanup_free_ char *b_pub = b64_encode(ak_pub, ak_pub_size);
        _cleanup_free_ char *b_spki = b64_encode(der, (size_t)dn);
        OPENSSL_free(der);
        _cleanup_json_ json_t *o = json_object();
        json_object_set_new(o, "format", json_string(TPM_FORMAT));
        json_object_set_new(o, "attest", json_string(b_att));
        json_object_set_new(o, "signature", json_string(b_sig));
        json_object_set_new(o, "pcrs", ev__tpm_pcrs_json(&pcrs, &q));
        json_object_set_new(o, "ak_public", json_string(b_pub));
        json_object_set_new(o, "ak_spki", json_string(b_spki));
        json_object_set(o, "cista_event_log", log);
        char *text = js_dump_compact(o);
        *out_evidence_size = strlen(text);
        *out_evidence = (uint8_t *)text;
        return 0;
    }
    return err_set(err, -EAGAIN, "TPM: PCRs kept changing during the quote; retry");
}

int ev_tpm_extend(const ev_get_opts *opts, unsigned pcr, const uint8_t digest[32], const char *type,
                  const char *data, cista_error **err)
{
    if (pcr >= TPM_PCR_COUNT)
        return err_set(err, -EINVAL, "TPM extend: PCR %u is not 0-23", pcr);
    if (!type || !*type || strlen(type) > CISTA_LOG_MAX_TYPE ||
        (data && strlen(data) > CISTA_LOG_MAX_DATA))
        return err_set(err, -EINVAL,
                       "TPM extend: the event type must be 1-%d characters and data at most %d",
                       CISTA_LOG_MAX_TYPE, CISTA_LOG_MAX_DATA);
    const char *path = eventlog_path(opts);
    _cleanup_close_ int fd = -1;
    int rc = open_log_locked(&fd, path, true, err);
    if (rc < 0)
        return rc;
    __attribute__((cleanup(conn_close))) tpm_conn c = {0};
    if ((rc = conn_open(&c, opts, err)) < 0)
        return rc;
    _cleanup_json_ json_t *e =
        json_pack("{s:I,s:s,s:o,s:s}", "pcr", (json_int_t)pcr, "alg", "sha256", "digest",
                  ev__json_hex(digest, 32), "type", type);
    if (data)
        json_object_set_new(e, "data", json_string(data));
    _cleanup_free_ char *line = js_dump_compact(e);
    _cleanup_free_ char *nl = xasprintf("%s\n", line);
    if (util_write_all(fd, nl, strlen(nl)) < 0 || fsync(fd) < 0)
        return err_set_sys(err, -errno, "writing TPM event log %s", path);
    TPML_DIGEST_VALUES d;
    memset(&d, 0, sizeof(d));
    d.count = 1;
    d.digests[0].hashAlg = TPM2_ALG_SHA256;
    memcpy(d.digests[0].digest.sha256, digest, 32);
    TSS2_RC trc = Esys_PCR_Extend(c.esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                  ESYS_TR_NONE, &d);
    if (trc != TSS2_RC_SUCCESS)
        return tss_fail(err, trc, "PCR_Extend (the event is logged: replay will now fail)");
    return 0;
}

const ev_ops ev__tpm_ops = {
    .name = "tpm",
    .description = "TPM 2.0 quote (registered AK or AK certificate) with event-log replay",
    .insecure = false,
    .get = tpm_get,
    .verify = tpm_verify,
    .detect = tpm_detect,
};
