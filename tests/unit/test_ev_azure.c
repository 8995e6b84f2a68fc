/*
 * test_ev_azure.c - the Azure vTPM verifiers against every sample of
 * ../shared/testdata/evidence/azure-snp-vtpm and azure-tdx-vtpm, with the
 * README's field values asserted and "now" pinned, and a tamper matrix:
 * runtime data byte flipped (report data binding), quote or signature
 * flipped, wrong PCRs, wrong nonce, another report's VCEK, a hardware
 * report of the other kind, truncated HCL report.
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

#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define AZ "../shared/testdata/evidence/azure-snp-vtpm/"
#define AZT "../shared/testdata/evidence/azure-tdx-vtpm/"
#define T2026_11 ((time_t)1793491200) /* 2026-11-01T00:00:00Z */

static void set_file(json_t *o, const char *key, const char *path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(path, &n);
    set_b64(o, key, d, n);
}

static json_t *pcr_map(const char *path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(path, &n);
    json_t *m = json_object();
    for (size_t k = 0; k < n / 32; k++) {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", k);
        _cleanup_free_ char *h = hex_encode(d + k * 32, 32);
        json_object_set_new(m, idx, json_string(h));
    }
    return json_pack("{s:o}", "sha256", m);
}

/* The container for sample prefix @p ("milan_", "genoa_", "milan_userdata_" or AZT). */
static json_t *container(const char *dir, const char *p, bool tdx)
{
    char path[512];
    json_t *q = json_object();
    snprintf(path, sizeof(path), "%s%stpmquote.attest", dir, p);
    set_file(q, "attest", path);
    snprintf(path, sizeof(path), "%s%stpmquote.sig", dir, p);
    set_file(q, "signature", path);
    json_object_set_new(q, "signature_format", json_string("rsassa-sha256"));
    snprintf(path, sizeof(path), "%s%stpmquote_pcrs_sha256.bin", dir, p);
    json_object_set_new(q, "pcrs", pcr_map(path));
    json_t *o =
        json_pack("{s:s,s:o}", "format",
                  tdx ? "cista-azure-tdx-vtpm-v1" : "cista-azure-snp-vtpm-v1", "tpm_quote", q);
    snprintf(path, sizeof(path), "%s%shcl_report.bin", dir, p);
    set_file(o, "hcl_report", path);
    if (tdx)
        set_file(o, "td_quote", AZT "td_quote_v4.bin");
    return o;
}

static int verify(json_t **out, const json_t *o, const char *tee, const char *vcek,
                  const uint8_t *rd, const char *msg_part)
{
    ev_collateral *c = ev_collateral_new();
    _cleanup_err_ cista_error *err = NULL;
    if (vcek) {
        size_t n = 0;
        _cleanup_free_ uint8_t *d = read_all(vcek, &n);
        assert_int_equal(ev_collateral_add(c, vcek, d, n, &err), 0);
    }
    ev_verify_opts opts;
    ev_verify_opts_init(&opts);
    opts.now = T2026_11;
    opts.collateral = c;
    opts.report_data = rd;
    _cleanup_free_ char *text = js_dump_compact(o);
    json_t *claims = NULL;
    int r =
        ev_find(tee)->verify(&claims, (const uint8_t *)text, strlen(text), NULL, 0, &opts, &err);
    ev_collateral_free(c);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        print_message("    -> %d %s\n", r, m);
        if (msg_part && !strstr(m, msg_part))
            fail_msg("message \"%s\" lacks \"%s\"", m, msg_part);
    }
    if (out)
        *out = claims;
    else
        json_decref(claims);
    return r;
}

static const char *jstr(const json_t *c, const char *path)
{
    _cleanup_free_ char *dup = xstrdup(path);
    const json_t *v = c;
    char *save = NULL;
    for (char *k = strtok_r(dup, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    if (!v || !json_is_string(v))
        fail_msg("claim %s missing", path);
    return json_string_value(v);
}

static json_int_t jint(const json_t *c, const char *path)
{
    _cleanup_free_ char *dup = xstrdup(path);
    const json_t *v = c;
    char *save = NULL;
    for (char *k = strtok_r(dup, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    if (!v || !json_is_integer(v))
        fail_msg("claim %s missing", path);
    return json_integer_value(v);
}

static void rd_from_hex(uint8_t rd[64], const char *hex)
{
    memset(rd, 0, 64);
    size_t n = strlen(hex) / 2;
    _cleanup_free_ uint8_t *b = NULL;
    size_t got = 0;
    assert_int_equal(hex_decode(&b, &got, hex, 2 * n, NULL), 0);
    memcpy(rd, b, got);
}

/* ---- samples ---- */

static void test_milan(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = container(AZ, "milan_", false);
    _cleanup_json_ json_t *c = NULL;
    uint8_t rd[64];
    rd_from_hex(rd, "6368616c6c656e6765"); /* "challenge" */
    assert_int_equal(verify(&c, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", rd, NULL), 0);
    assert_string_equal(jstr(c, "tee"), "azure-snp-vtpm");
    assert_string_equal(jstr(c, "measurements.measurement"),
                        "9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1"
                        "a12e0c22944eb386d17c315");
    assert_string_equal(jstr(c, "measurements.pcrs.sha256.0"),
                        "f3a7e99a5f819a034386bce753a48a73cfdaa0bea0ecfc124bedbf5a8c4799be");
    assert_int_equal(jint(c, "snp.guest_svn"), 5);
    assert_int_equal(jint(c, "snp.vmpl"), 0);
    assert_string_equal(jstr(c, "snp.policy.raw"), "0x000000000003001f");
    assert_true(strncmp(jstr(c, "snp.chip_id"), "19752a447db501a3", 16) == 0);
    assert_true(strncmp(jstr(c, "snp.id_key_digest"), "0356215882a8", 12) == 0);
    assert_string_equal(jstr(c, "snp.report_data"),
                        "b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac"
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_int_equal(jint(c, "tcb.components.snp"), 8);
    assert_int_equal(jint(c, "tcb.components.microcode"), 115);
    assert_int_equal(jint(c, "azure.hcl.version"), 1);
    assert_int_equal(jint(c, "azure.hcl.runtime_data_size"), 1110);
    assert_string_equal(jstr(c, "azure.runtime_data.vm_configuration.vmUniqueId"),
                        "911B0EF8-9DBA-48B0-B275-4E4DF2D39252");
    assert_string_equal(jstr(c, "azure.runtime_data.user_data"),
                        "0000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_string_equal(jstr(c, "tpm.extra_data"), "6368616c6c656e6765");
    assert_string_equal(jstr(c, "tpm.firmware_version"), "0x2020031200120003");
    assert_string_equal(jstr(c, "tpm.ak.source"), "hcl-report");
    assert_string_equal(jstr(c, "tpm.ak.type"), "RSA-2048");
    json_t *s = json_object_get(c, "signers");
    assert_string_equal(json_string_value(json_object_get(json_array_get(s, 0), "role")), "ak");
    assert_string_equal(json_string_value(json_object_get(json_array_get(s, 1), "role")), "vcek");
    /* the nonce is the TPM's extraData: another one is refused */
    rd[0] ^= 1;
    assert_int_equal(verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", rd, "extraData"),
                     EV_E_REPORT_DATA);
    /* no VCEK */
    assert_int_equal(verify(NULL, o, "azure-snp-vtpm", NULL, NULL, "VCEK"), EV_E_NOKEY);
    /* another chip's VCEK */
    assert_int_equal(verify(NULL, o, "azure-snp-vtpm", AZ "milan_userdata_vcek.pem", NULL, NULL),
                     EV_E_PLATFORM);
}

static void test_milan_userdata(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = container(AZ, "milan_userdata_", false);
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify(&c, o, "azure-snp-vtpm", AZ "milan_userdata_vcek.pem", NULL, NULL), 0);
    assert_int_equal(jint(c, "snp.version"), 3);
    assert_int_equal(jint(c, "snp.guest_svn"), 12);
    assert_string_equal(jstr(c, "measurements.measurement"),
                        "5b0ce64ad1c1f6375dbda5f760b98526ca1bcf91b8195091afc28e7b024251d68fe32e05a"
                        "f34048d6607678cd23283ff");
    assert_int_equal(jint(c, "tcb.components.snp"), 24);
    assert_int_equal(jint(c, "tcb.components.microcode"), 219);
    assert_string_equal(jstr(c, "azure.runtime_data.vm_configuration.vmUniqueId"),
                        "7DF7B373-B947-4AAA-96E5-C358F2A03D20");
    /* README: user-data's first 48 bytes == the quote's extraData; user-data = report data */
    const char *ud = jstr(c, "azure.runtime_data.user_data");
    assert_int_equal(strlen(ud), 128);
    assert_true(strncmp(ud, "982f5c6e", 8) == 0);
    assert_string_equal(jstr(c, "tpm.extra_data"),
                        "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647c"
                        "aa2338748cd0fd9f5f819ef");
    assert_string_equal(jstr(c, "report_data"), ud);
    assert_true(strncmp(jstr(c, "measurements.pcrs.sha256.0"), "84275b2f4312cd4f", 16) == 0);
    uint8_t rd[64];
    rd_from_hex(rd, ud);
    assert_int_equal(verify(NULL, o, "azure-snp-vtpm", AZ "milan_userdata_vcek.pem", rd, NULL), 0);
}

static void test_genoa(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = container(AZ, "genoa_", false);
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify(&c, o, "azure-snp-vtpm", AZ "genoa_vcek.pem", NULL, NULL), 0);
    assert_string_equal(jstr(c, "snp.product"), "Genoa");
    assert_int_equal(jint(c, "snp.guest_svn"), 0x1000b);
    assert_int_equal(jint(c, "tcb.components.bootloader"), 10);
    assert_int_equal(jint(c, "tcb.components.snp"), 23);
    assert_int_equal(jint(c, "tcb.components.microcode"), 84);
    assert_int_equal(jint(c, "azure.hcl.version"), 2);
    assert_int_equal(jint(c, "azure.hcl.runtime_data_size"), 1200);
    assert_true(strncmp(jstr(c, "measurements.measurement"), "f57dc09a507c6ecd", 16) == 0);
    assert_true(strncmp(jstr(c, "snp.chip_id"), "0506ffba875e939c", 16) == 0);
    assert_true(strncmp(jstr(c, "tpm.extra_data"), "0218488bae25d250", 16) == 0);
    assert_true(strncmp(jstr(c, "measurements.pcrs.sha256.0"), "afd689d0bb1c5f36", 16) == 0);
    assert_non_null(json_object_get(
        json_object_get(json_object_get(json_object_get(c, "azure"), "runtime_data"),
                        "vm_configuration"),
        "root-cert-thumbprint"));
}

/* ---- tamper matrix (Milan) ---- */

static int tamper_file(const char *key, size_t off, uint8_t x, bool in_quote, const char *part)
{
    _cleanup_json_ json_t *o = container(AZ, "milan_", false);
    json_t *obj = in_quote ? json_object_get(o, "tpm_quote") : o;
    const char *s = json_string_value(json_object_get(obj, key));
    _cleanup_free_ uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(b64_decode(&d, &n, s, strlen(s), NULL), 0);
    assert_true(off < n);
    d[off] ^= x;
    set_b64(obj, key, d, n);
    return verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, part);
}

static void test_tamper(void **state)
{
    (void)state;
    /* runtime data byte flipped (inside the JSON, in "vmUniqueId") */
    assert_int_equal(tamper_file("hcl_report", 0x4d4 + 1000, 0x01, false, "runtime data"),
                     EV_E_REPORT_DATA);
    /* the HCLAkPub modulus changed: binding fails first */
    assert_int_equal(tamper_file("hcl_report", 0x4d4 + 80, 0x01, false, "REPORT_DATA"),
                     EV_E_REPORT_DATA);
    /* the SNP report inside */
    assert_int_equal(tamper_file("hcl_report", 0x20 + 0x90, 0x01, false, "SNP report"),
                     EV_E_SIGNATURE);
    /* HCL header */
    assert_int_equal(tamper_file("hcl_report", 0, 0x01, false, "HCLA"), EV_E_FORMAT);
    assert_int_equal(tamper_file("hcl_report", 0x4c8, 0x06, false, "type"), EV_E_VERSION);
    assert_int_equal(tamper_file("hcl_report", 0x4d0, 0x01, false, "disagree"), EV_E_FORMAT);
    /* quote, signature, PCRs */
    assert_int_equal(tamper_file("attest", 0x40, 0x01, true, "does not verify"), EV_E_SIGNATURE);
    assert_int_equal(tamper_file("signature", 10, 0x01, true, "does not verify"), EV_E_SIGNATURE);
    {
        _cleanup_json_ json_t *o = container(AZ, "milan_", false);
        json_t *b =
            json_object_get(json_object_get(json_object_get(o, "tpm_quote"), "pcrs"), "sha256");
        json_object_set_new(b, "1",
                            json_string("00000000000000000000000000000000000000000000000000"
                                        "00000000000000"));
        assert_int_equal(
            verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, "pcrDigest"),
            EV_E_MISMATCH);
        /* another sample's PCRs */
        json_object_set_new(json_object_get(o, "tpm_quote"), "pcrs",
                            pcr_map(AZ "genoa_tpmquote_pcrs_sha256.bin"));
        assert_int_equal(
            verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, "pcrDigest"),
            EV_E_MISMATCH);
    }
    /* the quote of another VM (its AK is not this report's HCLAkPub) */
    {
        _cleanup_json_ json_t *o = container(AZ, "milan_", false);
        _cleanup_json_ json_t *g = container(AZ, "genoa_", false);
        json_object_set(o, "tpm_quote", json_object_get(g, "tpm_quote"));
        assert_int_equal(
            verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, "does not verify"),
            EV_E_SIGNATURE);
    }
    /* truncated HCL report */
    {
        _cleanup_json_ json_t *o = container(AZ, "milan_", false);
        size_t n = 0;
        _cleanup_free_ uint8_t *d = read_all(AZ "milan_hcl_report.bin", &n);
        set_b64(o, "hcl_report", d, 2000);
        assert_int_equal(
            verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, "truncated"),
            EV_E_SIZE);
        set_b64(o, "hcl_report", d, 0x400);
        assert_int_equal(
            verify(NULL, o, "azure-snp-vtpm", AZ "milan_vcek_chain.pem", NULL, "truncated"),
            EV_E_SIZE);
    }
    /* the TDX HCL report through the SNP verifier, and the wrong container format */
    {
        _cleanup_json_ json_t *o = container(AZ, "milan_", false);
        set_file(o, "hcl_report", AZT "hcl_report.bin");
        assert_int_equal(verify(NULL, o, "azure-snp-vtpm", NULL, NULL, "not SNP"), EV_E_VERSION);
        assert_int_equal(verify(NULL, o, "azure-tdx-vtpm", NULL, NULL, "format"), EV_E_VERSION);
    }
}

/* ---- TDX ---- */

static void test_tdx(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = container(AZT, "", true);
    _cleanup_json_ json_t *c = NULL;
    uint8_t rd[64];
    rd_from_hex(rd, "6368616c6c656e6765");
    int r = verify(&c, o, "azure-tdx-vtpm", NULL, rd, NULL);
    assert_int_equal(r, 0);
    assert_string_equal(jstr(c, "tee"), "azure-tdx-vtpm");
    assert_string_equal(jstr(c, "measurements.mrtd"),
                        "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b662"
                        "05949d15469dc8c1ba7ab7b");
    assert_string_equal(jstr(c, "azure.runtime_data.vm_configuration.vmUniqueId"),
                        "6332533D-5649-4D02-8AA7-8F64B7C3EE21");
    assert_string_equal(jstr(c, "tpm.extra_data"), "6368616c6c656e6765");
    assert_true(strncmp(jstr(c, "measurements.pcrs.sha256.0"), "782b20b10f55cc46", 16) == 0);
    assert_true(strncmp(jstr(c, "tdx.report_data"), "9734504f161d104c74e3165c15f779b0", 32) == 0);
    /* runtime data flipped: the TDREPORT REPORTDATA no longer matches */
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(AZT "hcl_report.bin", &n);
    d[0x4d4 + 900] ^= 1;
    set_b64(o, "hcl_report", d, n);
    assert_int_equal(verify(NULL, o, "azure-tdx-vtpm", NULL, NULL, "runtime data"),
                     EV_E_REPORT_DATA);
    d[0x4d4 + 900] ^= 1;
    /* a TDREPORT field differs from the quote (MRTD; the TEE_INFO_HASH catches it first) */
    d[0x20 + 528] ^= 1;
    set_b64(o, "hcl_report", d, n);
    assert_int_equal(verify(NULL, o, "azure-tdx-vtpm", NULL, NULL, "TEE_INFO_HASH"), EV_E_FORMAT);
    d[0x20 + 528] ^= 1;
    /* the TDREPORT's REPORTDATA differs from the quote's */
    d[0x20 + 128 + 40] ^= 1;
    set_b64(o, "hcl_report", d, n);
    assert_int_equal(verify(NULL, o, "azure-tdx-vtpm", NULL, NULL, "report_data"),
                     EV_E_REPORT_DATA);
    d[0x20 + 128 + 40] ^= 1;
    /* the vTPM quote flipped */
    set_b64(o, "hcl_report", d, n);
    json_t *q = json_object_get(o, "tpm_quote");
    const char *s = json_string_value(json_object_get(q, "attest"));
    _cleanup_free_ uint8_t *a = NULL;
    size_t an = 0;
    assert_int_equal(b64_decode(&a, &an, s, strlen(s), NULL), 0);
    a[20] ^= 1;
    set_b64(q, "attest", a, an);
    assert_int_equal(verify(NULL, o, "azure-tdx-vtpm", NULL, NULL, "does not verify"),
                     EV_E_SIGNATURE);
}

static void test_detect(void **state)
{
    (void)state;
    _cleanup_json_ json_t *o = container(AZ, "milan_", false);
    _cleanup_free_ char *t = js_dump_compact(o);
    const ev_ops *d = ev_detect((const uint8_t *)t, strlen(t));
    assert_non_null(d);
    assert_string_equal(d->name, "azure-snp-vtpm");
    _cleanup_json_ json_t *x = container(AZT, "", true);
    _cleanup_free_ char *tx = js_dump_compact(x);
    d = ev_detect((const uint8_t *)tx, strlen(tx));
    assert_non_null(d);
    assert_string_equal(d->name, "azure-tdx-vtpm");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_milan), cmocka_unit_test(test_milan_userdata),
        cmocka_unit_test(test_genoa), cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_tdx),   cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
