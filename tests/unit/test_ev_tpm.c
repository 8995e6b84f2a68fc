/*
 * test_ev_tpm.c - the TPM 2.0 verifier (no TPM needed): every sample of
 * ../shared/testdata/evidence/tpm2 verifies as its README row says (GCE
 * SHA-1/256/384 quotes with the AK certificate chain to the pinned Google
 * root and the TCG event log replay, the swtpm quote with a registered SPKI
 * AK), with field values asserted and "now" pinned; a tamper matrix with
 * one error code per failed check; quotes made in the test with a software
 * ECDSA "TPM" to cover ECDSA signatures and the cista event log. The real
 * swtpm round trip is tests/integration/test_tpm_swtpm.sh.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_helpers.h"

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/tpm_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define TPM "../shared/testdata/evidence/tpm2/"
#define VC "../shared/testdata/evidence/vendor-certs/"
#define T2026_11 ((time_t)1793491200) /* 2026-11-01T00:00:00Z, the README's "now" */

static json_t *b64_file(const char *path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(path, &n);
    _cleanup_free_ char *b = b64_encode(d, n);
    return json_string(b);
}

/* {"sha256": {"0": hex, ...}} from a concatenated PCR file. */
static json_t *pcr_map(const char *bank, const char *path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(path, &n);
    size_t sz = ev__tpm_alg_size(ev__tpm_alg_by_name(bank));
    json_t *m = json_object();
    for (size_t k = 0; k < n / sz; k++) {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", k);
        _cleanup_free_ char *h = hex_encode(d + k * sz, sz);
        json_object_set_new(m, idx, json_string(h));
    }
    return json_pack("{s:o}", bank, m);
}

/* The container for GCE quote @bank ("sha1", "sha256", "sha384"). */
static json_t *gce(const char *bank, bool with_log, bool with_cert)
{
    char a[256], s[256], p[256];
    snprintf(a, sizeof(a), TPM "gce_sev_quote_%s.attest", bank);
    snprintf(s, sizeof(s), TPM "gce_sev_quote_%s.tpmt_signature", bank);
    snprintf(p, sizeof(p), TPM "gce_sev_quote_%s_pcrs.bin", bank);
    json_t *o = json_pack("{s:s,s:o,s:o,s:o,s:o}", "format", "cista-tpm-quote-v1", "attest",
                          b64_file(a), "signature", b64_file(s), "pcrs", pcr_map(bank, p),
                          "ak_public", b64_file(TPM "gce_sev_ak_pub.tpmt_public"));
    if (with_cert)
        json_object_set_new(o, "ak_certs", json_pack("[o]", b64_file(TPM "gce_sev_ak_cert.der")));
    if (with_log)
        json_object_set_new(o, "tcg_event_log", b64_file(TPM "gce_sev_tcg2_eventlog.bin"));
    return o;
}

static json_t *swtpm_sample(void)
{
    return json_pack("{s:s,s:o,s:o,s:o,s:o}", "format", "cista-tpm-quote-v1", "attest",
                     b64_file(TPM "swtpm_quote.attest"), "signature",
                     b64_file(TPM "swtpm_quote.tpmt_signature"), "pcrs",
                     pcr_map("sha256", TPM "swtpm_quote_sha256_pcrs.bin"), "ak_spki",
                     b64_file(TPM "swtpm_ak_pub_spki.der"));
}

static const char *const g_inter2[] = {VC "google_tpm_ek_intermediate_2.pem", NULL};

/* Verify container @o; *out (may be NULL) gets the claims. */
static int verify(json_t **out, const json_t *o, const char *const *collateral, EVP_PKEY *ak,
                  const uint8_t *report_data, cista_error **err)
{
    _cleanup_collateral_ ev_collateral *c = coll(collateral);
    ev_verify_opts opts;
    ev_verify_opts_init(&opts);
    opts.now = T2026_11;
    opts.collateral = c;
    opts.tpm_ak_pub = ak;
    opts.report_data = report_data;
    _cleanup_free_ char *text = js_dump_compact(o);
    json_t *claims = NULL;
    int r =
        ev_find("tpm")->verify(&claims, (const uint8_t *)text, strlen(text), NULL, 0, &opts, err);
    if (r < 0 && err && *err)
        print_message("    -> %d %s\n", r, (*err)->msg);
    if (out)
        *out = claims;
    else
        json_decref(claims);
    return r;
}

static int verify_code(const json_t *o, const char *const *collateral, EVP_PKEY *ak,
                       const uint8_t *rd, const char *msg_part)
{
    _cleanup_err_ cista_error *err = NULL;
    int r = verify(NULL, o, collateral, ak, rd, &err);
    if (r < 0 && msg_part) {
        _cleanup_free_ char *m = err_str(err);
        if (!strstr(m, msg_part))
            fail_msg("message \"%s\" lacks \"%s\"", m, msg_part);
    }
    return r;
}

static const char *jstr(const json_t *c, const char *path)
{
    /* "a.b.c" lookup of a string */
    _cleanup_free_ char *dup = xstrdup(path);
    const json_t *v = c;
    char *save = NULL;
    for (char *k = strtok_r(dup, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* The verified (or unverified) PCR list of bank @bank as "0,1,2". */
static char *pcr_list(const json_t *c, const char *which, const char *bank)
{
    json_t *a = json_object_get(
        json_object_get(json_object_get(json_object_get(c, "tpm"), "event_log"), which), bank);
    assert_non_null(a);
    char buf[128] = "";
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        char n[8];
        snprintf(n, sizeof(n), "%s%lld", i ? "," : "", (long long)json_integer_value(v));
        strcat(buf, n);
    }
    return xstrdup(buf);
}

static char *verified_list(const json_t *c, const char *bank)
{
    return pcr_list(c, "verified_pcrs", bank);
}

static uint8_t *get_b64(const json_t *o, const char *key, size_t *n)
{
    uint8_t *d = NULL;
    const char *s = json_string_value(json_object_get(o, key));
    assert_non_null(s);
    assert_int_equal(b64_decode(&d, n, s, strlen(s), NULL), 0);
    return d;
}

/* ---- samples ---- */

static void test_gce_sha256(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = gce("sha256", true, true);
    _cleanup_json_ json_t *c = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(verify(&c, o, g_inter2, NULL, NULL, &err), 0);
    assert_string_equal(jstr(c, "tee"), "tpm");
    assert_string_equal(jstr(c, "tpm.extra_data"), "9009");
    assert_string_equal(jstr(c, "tpm.firmware_version"), "0x2016051100162800");
    assert_string_equal(jstr(c, "measurements.pcrs.sha256.0"),
                        "0f35c214608d93c7a6e68ae7359b4a8be5a0e99eea9107ece427c4dea4e439cf");
    assert_string_equal(jstr(c, "tpm.ak.type"), "RSA-2048");
    assert_string_equal(jstr(c, "tpm.ak.attributes"), "0x00050072");
    assert_string_equal(jstr(c, "tpm.ak.source"), "certificate");
    assert_true(strncmp(jstr(c, "report_data"), "9009000000", 10) == 0);
    /* signers: ak, ak-cert, intermediate, pinned root */
    json_t *s = json_object_get(c, "signers");
    assert_int_equal(json_array_size(s), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(s, 1), "role")),
                        "ak-cert");
    assert_true(json_is_true(json_object_get(json_array_get(s, 3), "pinned")));
    assert_true(strstr(json_string_value(json_object_get(json_array_get(s, 3), "subject")),
                       "tpm_ek_v1_cloud_host_root") != NULL);
    /*
     * README: the log reproduces PCR 0-9, 11-16 and 23; PCR 10 is not covered. PCR 17-22 hold
     * the PC client reset value (all 0xff, no DRTM) with no events, which cista also counts as
     * explained by the log.
     */
    _cleanup_free_ char *l = verified_list(c, "sha256");
    assert_string_equal(l, "0,1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23");
    _cleanup_free_ char *u = pcr_list(c, "unverified_pcrs", "sha256");
    assert_string_equal(u, "10");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(c, "tpm"), "event_log"), "events")),
                     44); /* README: 44 measured events (the Spec ID event is not counted) */
    /* expected report data 9009 (zero-padded) binds; anything else does not */
    uint8_t rd[64] = {0x90, 0x09};
    assert_int_equal(verify_code(o, g_inter2, NULL, rd, NULL), 0);
    rd[1] = 0x0a;
    assert_int_equal(verify_code(o, g_inter2, NULL, rd, "extraData is 9009"), EV_E_REPORT_DATA);
}

static void test_gce_sha1_sha384(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o1 = gce("sha1", true, true);
    _cleanup_json_ json_t *c1 = NULL;
    assert_int_equal(verify(&c1, o1, g_inter2, NULL, NULL, NULL), 0);
    assert_string_equal(jstr(c1, "measurements.pcrs.sha1.0"),
                        "c032c3b51dbb6f96b047421512fd4b4dfde496f3");
    /* pcrDigest is SHA-256 (the signing hash) over SHA-1 values */
    assert_int_equal(strlen(jstr(c1, "tpm.pcr_digest")), 64);
    _cleanup_free_ char *l1 = verified_list(c1, "sha1");
    assert_string_equal(l1, "0,1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23");
    _cleanup_free_ char *u1 = pcr_list(c1, "unverified_pcrs", "sha1");
    assert_string_equal(u1, "10");

    _cleanup_json_ json_t *o3 = gce("sha384", true, true);
    _cleanup_json_ json_t *c3 = NULL;
    assert_int_equal(verify(&c3, o3, g_inter2, NULL, NULL, NULL), 0);
    assert_string_equal(jstr(c3, "measurements.pcrs.sha384.0"),
                        "46ce251b0b5b3da7917c5eb7a72e6e88f8f830445b149937921b095c1fd628db691963861c"
                        "1153aba9c7097ff1c747f9");
    assert_string_equal(jstr(c3, "tpm.extra_data"), "9009");
}

static void test_gce_trust(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = gce("sha256", false, true);
    /* no intermediate: the chain cannot be built */
    assert_int_equal(verify_code(o, NULL, NULL, NULL, "AK certificate chain"), EV_E_CHAIN);
    /* the other Google intermediate does not help */
    const char *const other[] = {VC "google_tpm_ek_intermediate_3.pem", NULL};
    assert_int_equal(verify_code(o, other, NULL, NULL, NULL), EV_E_CHAIN);
    /* a root handed in is never trusted unless pinned: an Intel root is ignored */
    const char *const intel[] = {VC "intel_sgx_root_ca.pem", NULL};
    assert_int_equal(verify_code(o, intel, NULL, NULL, NULL), EV_E_CHAIN);
    /* expired: before the AK certificate's notBefore (2021-08-31) */
    {
        _cleanup_collateral_ ev_collateral *c = coll(g_inter2);
        ev_verify_opts opts;
        ev_verify_opts_init(&opts);
        opts.now = 1577836800; /* 2020-01-01 */
        opts.collateral = c;
        _cleanup_free_ char *text = js_dump_compact(o);
        json_t *claims = NULL;
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(ev_find("tpm")->verify(&claims, (const uint8_t *)text, strlen(text), NULL,
                                                0, &opts, &err),
                         EV_E_EXPIRED);
    }
    /* no certificate and no registered AK */
    _cleanup_json_ json_t *nocert = gce("sha256", false, false);
    assert_int_equal(verify_code(nocert, NULL, NULL, NULL, "no trusted attestation key"),
                     EV_E_NOKEY);
    /* the registered AK (from the TPMT_PUBLIC) instead of the certificate */
    size_t n = 0;
    _cleanup_free_ uint8_t *pub = read_all(TPM "gce_sev_ak_pub.tpmt_public", &n);
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    uint32_t attrs = 0;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev__tpm_parse_public(&ak, &attrs, pub, n, &err), 0);
    assert_int_equal(attrs, 0x00050072);
    assert_int_equal(verify_code(nocert, NULL, ak, NULL, NULL), 0);
    /* the AK certificate's key equals the TPMT_PUBLIC key (README) */
    size_t cn = 0;
    _cleanup_free_ uint8_t *cder = read_all(TPM "gce_sev_ak_cert.der", &cn);
    _cleanup_x509_ X509 *cert = NULL;
    assert_int_equal(x509_cert_load(&cert, cder, cn, &err), 0);
    assert_true(crypto_key_public_eq(X509_get0_pubkey(cert), ak));
    /* another registered AK: the evidence names a different key */
    size_t sn = 0;
    _cleanup_free_ uint8_t *sder = read_all(TPM "swtpm_ak_pub_spki.der", &sn);
    _cleanup_pkey_ EVP_PKEY *other_ak = NULL;
    assert_int_equal(crypto_key_load(&other_ak, sder, sn, false, &err), 0);
    assert_int_equal(verify_code(nocert, NULL, other_ak, NULL, "another TPM"), EV_E_NOKEY);
    /* ... and without the AK named in the evidence, the signature itself fails */
    json_object_del(nocert, "ak_public");
    assert_int_equal(verify_code(nocert, NULL, other_ak, NULL, "signed by another AK"),
                     EV_E_SIGNATURE);
    /* an AK public area whose restricted bit is cleared is refused */
    pub[5] &= (uint8_t)~0x01; /* objectAttributes byte 2 (0x00050072 -> 0x00040072) */
    _cleanup_json_ json_t *unres = gce("sha256", false, false);
    set_b64(unres, "ak_public", pub, n);
    assert_int_equal(verify_code(unres, NULL, ak, NULL, "restricted"), EV_E_NOKEY);
}

static void test_swtpm_sample(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = swtpm_sample();
    size_t n = 0;
    _cleanup_free_ uint8_t *der = read_all(TPM "swtpm_ak_pub_spki.der", &n);
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(crypto_key_load(&ak, der, n, false, &err), 0);
    /* no chain: only a registered AK makes it verifiable */
    assert_int_equal(verify_code(o, NULL, NULL, NULL, NULL), EV_E_NOKEY);
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify(&c, o, NULL, ak, NULL, &err), 0);
    assert_string_equal(jstr(c, "tpm.firmware_version"), "0x2019102300163636");
    assert_string_equal(jstr(c, "tpm.pcr_digest"),
                        "019de64c9318655e422c3d03831169896e31f02a1d74e4d8fef575bf4e0d75fa");
    const char *x = jstr(c, "tpm.extra_data");
    assert_int_equal(strlen(x), 128);
    assert_true(strncmp(x, "a04182b5", 8) == 0);
    assert_true(strcmp(x + 96, "00000000000000000000000000000000") == 0);
    assert_string_equal(jstr(c, "measurements.pcrs.sha256.16"),
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_string_equal(jstr(c, "measurements.pcrs.sha256.17"),
                        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    /* the 64-byte extraData is the report data */
    uint8_t rd[64];
    assert_int_equal(hex_decode_to(rd, 64, x, &err), 0);
    assert_int_equal(verify_code(o, NULL, ak, rd, NULL), 0);
    /* the GCE AK does not verify the swtpm quote */
    size_t pn = 0;
    _cleanup_free_ uint8_t *pub = read_all(TPM "gce_sev_ak_pub.tpmt_public", &pn);
    _cleanup_pkey_ EVP_PKEY *gce_ak = NULL;
    uint32_t attrs = 0;
    assert_int_equal(ev__tpm_parse_public(&gce_ak, &attrs, pub, pn, &err), 0);
    json_object_del(o, "ak_spki");
    assert_int_equal(verify_code(o, NULL, gce_ak, NULL, NULL), EV_E_SIGNATURE);
}

/* ---- tamper matrix on the GCE SHA-256 quote ---- */

static int tamper(const char *key, size_t off, uint8_t x, const char *msg_part)
{
    _cleanup_json_ json_t *o = gce("sha256", true, true);
    size_t n = 0;
    _cleanup_free_ uint8_t *d = get_b64(o, key, &n);
    assert_true(off < n);
    d[off] ^= x;
    set_b64(o, key, d, n);
    return verify_code(o, g_inter2, NULL, NULL, msg_part);
}

static int resize(const char *key, long delta)
{
    _cleanup_json_ json_t *o = gce("sha256", false, true);
    size_t n = 0;
    _cleanup_free_ uint8_t *d = get_b64(o, key, &n);
    _cleanup_free_ uint8_t *e = xzalloc(n + 8);
    memcpy(e, d, n);
    set_b64(o, key, e, (size_t)((long)n + delta));
    return verify_code(o, g_inter2, NULL, NULL, NULL);
}

static void test_tamper(void **state)
{
    (void)state;
    /* TPMS_ATTEST field groups */
    assert_int_equal(tamper("attest", 0, 0x01, "TPM_GENERATED_VALUE"), EV_E_FORMAT);
    assert_int_equal(tamper("attest", 5, 0x01, "TPM_ST_ATTEST_QUOTE"), EV_E_FORMAT);
    assert_int_equal(tamper("attest", 10, 0x01, "does not verify"), EV_E_SIGNATURE);   /* signer */
    assert_int_equal(tamper("attest", 0x2c, 0x01, "does not verify"), EV_E_SIGNATURE); /* extra */
    assert_int_equal(tamper("attest", 0x30, 0x01, "does not verify"), EV_E_SIGNATURE); /* clock */
    assert_int_equal(tamper("attest", 0x40, 0x01, "does not verify"), EV_E_SIGNATURE); /* fw */
    assert_int_equal(tamper("attest", 0x4e, 0x01, "does not verify"), EV_E_SIGNATURE); /* select */
    assert_int_equal(tamper("attest", 0x60, 0x01, "does not verify"), EV_E_SIGNATURE); /* digest */
    assert_int_equal(tamper("attest", 0x4a, 0x04, "banks"), EV_E_FORMAT);   /* pcr bank count */
    assert_int_equal(tamper("attest", 0x3e, 0x02, "safe"), EV_E_FORMAT);    /* clockInfo.safe */
    assert_int_equal(tamper("attest", 0x4c, 0x01, "0x000a"), EV_E_VERSION); /* bank hash */
    /* TPMT_SIGNATURE */
    assert_int_equal(tamper("signature", 1, 0x04, "sigAlg"), EV_E_VERSION);
    assert_int_equal(tamper("signature", 3, 0x0f, "SHA-1"), EV_E_VERSION);
    assert_int_equal(tamper("signature", 100, 0x01, "does not verify"), EV_E_SIGNATURE);
    assert_int_equal(tamper("signature", 5, 0x01, NULL), EV_E_SIZE); /* sig size */
    /* PCR values: not what was quoted */
    {
        _cleanup_json_ json_t *o = gce("sha256", false, true);
        json_t *bank = json_object_get(json_object_get(o, "pcrs"), "sha256");
        json_object_set_new(bank, "5",
                            json_string("00000000000000000000000000000000000000000000"
                                        "00000000000000000000"));
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "signed pcrDigest"), EV_E_MISMATCH);
        json_object_del(bank, "5");
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "sha256:5"), EV_E_FORMAT);
        json_object_set_new(bank, "24", json_string("00"));
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "0-23"), EV_E_FORMAT);
    }
    /* event log: a digest of event 10 flipped, then a truncated log */
    {
        _cleanup_json_ json_t *o = gce("sha256", true, true);
        size_t n = 0;
        _cleanup_free_ uint8_t *d = get_b64(o, "tcg_event_log", &n);
        /* find event 1's SHA-256 digest: after the Spec ID event (0x20 + 0x29 bytes) */
        size_t ev1 = 32 + 0x29;
        size_t sha256_off = ev1 + 4 + 4 + 4 + 2 + 20 + 2; /* pcr, type, count, sha1 alg+dig, alg */
        d[sha256_off] ^= 1;
        set_b64(o, "tcg_event_log", d, n);
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "event log replay gives PCR sha256:"),
                         EV_E_MISMATCH);
        set_b64(o, "tcg_event_log", d, 200);
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "truncated"), EV_E_SIZE);
    }
    /* truncated and padded structures */
    assert_int_equal(resize("attest", -1), EV_E_SIZE);
    assert_int_equal(resize("attest", 2), EV_E_SIZE);
    assert_int_equal(resize("signature", -1), EV_E_SIZE);
    assert_int_equal(resize("signature", 1), EV_E_SIZE);
    /* malformed containers */
    {
        _cleanup_json_ json_t *o = gce("sha256", false, true);
        json_object_set_new(o, "attest", json_string("not base64!"));
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, "attest"), EV_E_FORMAT);
        json_object_set_new(o, "format", json_string("cista-tpm-quote-v9"));
        assert_int_equal(verify_code(o, g_inter2, NULL, NULL, NULL), EV_E_VERSION);
    }
    const ev_ops *t = ev_find("tpm");
    json_t *claims = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(t->verify(&claims, (const uint8_t *)"{", 1, NULL, 0, NULL, &err), EV_E_FORMAT);
}

/* ---- a software "TPM": quotes signed in the test (ECDSA P-256, cista event log) ---- */

static void put16(uint8_t **p, uint16_t v)
{
    *(*p)++ = (uint8_t)(v >> 8);
    *(*p)++ = (uint8_t)v;
}

static void put32(uint8_t **p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p, (uint16_t)v);
}

static void put_bytes(uint8_t **p, const void *d, size_t n)
{
    memcpy(*p, d, n);
    *p += n;
}

static void extend(uint8_t pcr[32], const uint8_t d[32])
{
    uint8_t b[64];
    memcpy(b, pcr, 32);
    memcpy(b + 32, d, 32);
    crypto_hash_oneshot(CRYPTO_SHA256, b, 64, pcr);
}

/* A quote over sha256 PCR 0-23 with @pcrs and @extra, signed by @key; container to the caller. */
static json_t *soft_quote(EVP_PKEY *key, uint8_t pcrs[24][32], const uint8_t *extra,
                          size_t extra_size, json_t *log)
{
    uint8_t att[256], *p = att;
    put32(&p, 0xff544347);
    put16(&p, 0x8018);
    put16(&p, 4);
    put32(&p, 0x40000001);
    put16(&p, (uint16_t)extra_size);
    put_bytes(&p, extra, extra_size);
    put32(&p, 0), put32(&p, 12345), put32(&p, 7), put32(&p, 0);
    *p++ = 1;
    put32(&p, 0x20240101), put32(&p, 0x00000001);
    put32(&p, 1);
    put16(&p, 0x000b);
    *p++ = 3, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff;
    uint8_t dig[32];
    crypto_hash_oneshot(CRYPTO_SHA256, pcrs, 24 * 32, dig);
    put16(&p, 32);
    put_bytes(&p, dig, 32);
    size_t att_size = (size_t)(p - att);
    uint8_t r[32], s[32];
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(
        x509_ecdsa_sign_raw(r, s, 32, X509_BIG_ENDIAN, key, "SHA256", att, att_size, &err), 0);
    uint8_t sig[80], *q = sig;
    put16(&q, 0x0018), put16(&q, 0x000b), put16(&q, 32);
    put_bytes(&q, r, 32);
    put16(&q, 32);
    put_bytes(&q, s, 32);
    json_t *m = json_object();
    for (int k = 0; k < 24; k++) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", k);
        _cleanup_free_ char *h = hex_encode(pcrs[k], 32);
        json_object_set_new(m, idx, json_string(h));
    }
    json_t *o = json_pack("{s:s,s:{s:o}}", "format", "cista-tpm-quote-v1", "pcrs", "sha256", m);
    set_b64(o, "attest", att, att_size);
    set_b64(o, "signature", sig, (size_t)(q - sig));
    if (log)
        json_object_set(o, "cista_event_log", log);
    return o;
}

static void test_soft_ecdsa_cista_log(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *key = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(crypto_key_generate_ec(&key, "P-256", &err), 0);
    uint8_t pcrs[24][32];
    memset(pcrs, 0, sizeof(pcrs));
    for (int k = 17; k <= 22; k++)
        memset(pcrs[k], 0xff, 32);
    uint8_t policy[32], container[32];
    crypto_hash_oneshot(CRYPTO_SHA256, "policy", 6, policy);
    crypto_hash_oneshot(CRYPTO_SHA256, "container", 9, container);
    extend(pcrs[23], policy);
    extend(pcrs[23], container);
    _cleanup_free_ char *hp = hex_encode(policy, 32);
    _cleanup_free_ char *hc = hex_encode(container, 32);
    _cleanup_json_ json_t *log =
        json_pack("[{s:i,s:s,s:s,s:s,s:s},{s:i,s:s,s:s,s:s}]", "pcr", 23, "alg", "sha256", "digest",
                  hp, "type", "cista.policy", "data", "policy sha256", "pcr", 23, "alg", "sha256",
                  "digest", hc, "type", "cista.container");
    uint8_t rd[64];
    memset(rd, 0x5a, sizeof(rd));
    _cleanup_json_ json_t *o = soft_quote(key, pcrs, rd, 64, log);
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify(&c, o, NULL, key, rd, &err), 0);
    _cleanup_free_ char *l = verified_list(c, "sha256");
    assert_string_equal(l, "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23");
    assert_string_equal(jstr(c, "tpm.ak.type"), "EC-P-256");
    assert_string_equal(jstr(c, "tpm.clock.clock_ms"), "12345");
    json_t *ev =
        json_object_get(json_object_get(json_object_get(c, "tpm"), "event_log"), "cista_events");
    assert_int_equal(json_array_size(ev), 2);
    /* event log not matching: an event dropped, reordered, or a digest changed */
    json_array_remove(log, 1); /* @o holds the same array */
    assert_int_equal(verify_code(o, NULL, key, rd, "PCR sha256:23"), EV_E_MISMATCH);
    json_array_append_new(log, json_pack("{s:i,s:s,s:s,s:s}", "pcr", 23, "alg", "sha256", "digest",
                                         hp, "type", "cista.policy"));
    json_array_set_new(log, 0,
                       json_pack("{s:i,s:s,s:s,s:s}", "pcr", 23, "alg", "sha256", "digest", hc,
                                 "type", "cista.container"));
    assert_int_equal(verify_code(o, NULL, key, rd, "PCR sha256:23"), EV_E_MISMATCH);
    json_t *bad_log =
        json_pack("[{s:i,s:s,s:s,s:s}]", "pcr", 23, "alg", "sha256", "digest", "00", "type", "x");
    _cleanup_json_ json_t *o3 = soft_quote(key, pcrs, rd, 64, bad_log);
    json_decref(bad_log);
    assert_int_equal(verify_code(o3, NULL, key, rd, "digest"), EV_E_FORMAT);
    /* SHA-256(report data) as qualifying data (TPMs with a smaller TPM2B_DATA) */
    uint8_t h[32];
    crypto_hash_oneshot(CRYPTO_SHA256, rd, 64, h);
    _cleanup_json_ json_t *o4 = soft_quote(key, pcrs, h, 32, NULL);
    assert_int_equal(verify_code(o4, NULL, key, rd, NULL), 0);
    uint8_t rd2[64];
    memset(rd2, 0x5b, sizeof(rd2));
    assert_int_equal(verify_code(o4, NULL, key, rd2, NULL), EV_E_REPORT_DATA);
    /* a non-restricted key cannot be detected without its public area: wrong key fails */
    _cleanup_pkey_ EVP_PKEY *key2 = NULL;
    assert_int_equal(crypto_key_generate_ec(&key2, "P-256", &err), 0);
    assert_int_equal(verify_code(o4, NULL, key2, rd, "signed by another AK"), EV_E_SIGNATURE);
}

static void test_detect(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = swtpm_sample();
    _cleanup_free_ char *t = js_dump_compact(o);
    const ev_ops *d = ev_detect((const uint8_t *)t, strlen(t));
    assert_non_null(d);
    assert_string_equal(d->name, "tpm");
    assert_null(ev_detect((const uint8_t *)"{}", 2));
    assert_int_equal(ev__tpm_alg_size(TPM_ALG_SHA384), 48);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gce_sha256), cmocka_unit_test(test_gce_sha1_sha384),
        cmocka_unit_test(test_gce_trust),  cmocka_unit_test(test_swtpm_sample),
        cmocka_unit_test(test_tamper),     cmocka_unit_test(test_soft_ecdsa_cista_log),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
