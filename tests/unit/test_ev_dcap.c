/*
 * test_ev_dcap.c - the TDX and SGX DCAP verifiers against every tdx/ and
 * sgx/ sample of shared/testdata/evidence (outcomes and field values from
 * its README, "now" pinned), a tamper matrix (one error code and message
 * per failed check), collateral handling, and get() through directories
 * that mimic configfs-tsm and Gramine's /dev/attestation.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_helpers.h"

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/dcap_int.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define TDX "../shared/testdata/evidence/tdx/"
#define SGX "../shared/testdata/evidence/sgx/"
#define VC "../shared/testdata/evidence/vendor-certs/"

#define T2020 ((time_t)1577836800)       /* 2020-01-01T00:00:00Z */
#define T2023_07 ((time_t)1688173200)    /* 2023-07-01T01:00:00Z */
#define T2025_07 ((time_t)1751328000)    /* 2025-07-01T00:00:00Z */
#define T2025_07_25 ((time_t)1753401600) /* 2025-07-25T00:00:00Z */
#define T2025_09 ((time_t)1757894400)    /* 2025-09-15T00:00:00Z */
#define T2025_10_20 ((time_t)1760918400) /* 2025-10-20T00:00:00Z */
#define T2025_11 ((time_t)1761955200)    /* 2025-11-01T00:00:00Z */
#define T2025_12 ((time_t)1764547200)    /* 2025-12-01T00:00:00Z */
#define T2026_02_03 ((time_t)1770076800) /* 2026-02-03T00:00:00Z */
#define T2026_02_20 ((time_t)1771545600) /* 2026-02-20T00:00:00Z */
#define T2026_03 ((time_t)1772323200)    /* 2026-03-01T00:00:00Z */
#define T2030 ((time_t)1893456000)       /* 2030-01-01T00:00:00Z */

/* ---- helpers ---- */

/* Verify @q as @tee with @c at @now; @extra (may be NULL) gives further options. */
static int verify_bytes_c(json_t **out, const char *tee, const uint8_t *q, size_t size,
                          const ev_collateral *c, time_t now, const ev_verify_opts *extra,
                          cista_error **err)
{
    ev_verify_opts o;
    if (extra)
        o = *extra;
    else
        ev_verify_opts_init(&o);
    o.now = now;
    o.collateral = c;
    json_t *claims = NULL;
    int r = ev_find(tee)->verify(&claims, q, size, NULL, 0, &o, err);
    if (out)
        *out = claims;
    else
        json_decref(claims);
    if (r < 0 && err && *err)
        print_message("    -> %d %s\n", r, (*err)->msg);
    if (r == 0)
        assert_non_null(claims);
    return r;
}

static int verify_bytes(json_t **out, const char *tee, const uint8_t *q, size_t size,
                        const char *const *paths, time_t now, const ev_verify_opts *extra,
                        cista_error **err)
{
    _cleanup_collateral_ ev_collateral *c = coll(paths);
    return verify_bytes_c(out, tee, q, size, c, now, extra, err);
}

static int verify_file(json_t **out, const char *tee, const char *path, const char *const *paths,
                       time_t now, const ev_verify_opts *extra, cista_error **err)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(path, &n);
    return verify_bytes(out, tee, q, n, paths, now, extra, err);
}

static void assert_hex(const json_t *c, const char *path, const char *prefix, const char *suffix)
{
    const char *s = str_at(c, path);
    if (strncmp(s, prefix, strlen(prefix)) != 0 ||
        strcmp(s + strlen(s) - strlen(suffix), suffix) != 0)
        print_message("    %s = %s, want %s...%s\n", path, s, prefix, suffix);
    assert_int_equal(strncmp(s, prefix, strlen(prefix)), 0);
    assert_string_equal(s + strlen(s) - strlen(suffix), suffix);
}

static bool all_zero_hex(const char *s)
{
    for (; *s; s++)
        if (*s != '0')
            return false;
    return true;
}

static void assert_svns(const json_t *c, const char *path, const int *want, size_t n)
{
    const json_t *a = at(c, path);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 16);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(json_integer_value(json_array_get(a, i)), want[i]);
}

static void assert_advisories(const json_t *c, const char *const *want)
{
    const json_t *a = at(c, "tcb.advisories");
    size_t n = 0;
    for (; want[n]; n++) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(a); i++)
            found |= strcmp(json_string_value(json_array_get(a, i)), want[n]) == 0;
        assert_true(found);
    }
    assert_int_equal(json_array_size(a), n);
}

static void assert_msg(const cista_error *err, const char *needle)
{
    assert_non_null(err);
    if (!strstr(err->msg, needle))
        print_message("    message \"%s\" lacks \"%s\"\n", err->msg, needle);
    assert_non_null(strstr(err->msg, needle));
}

/*
 * Collateral for v5_90c06f_sample_quote.bin: v5_90c06f_pcs_tcbinfo.json plus
 * the QE identity, PCK CRL, root CRL and issuer chains of
 * v5_90c06f_outdated_collateral.json (README row), rebuilt as separate files.
 */
static ev_collateral *v5_sample_coll(void)
{
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *b = read_all(TDX "v5_90c06f_outdated_collateral.json", &n);
    _cleanup_json_ json_t *j = NULL;
    assert_int_equal(js_parse_object(&j, b, n, 1 << 20, "bundle", &err), 0);
    ev_collateral *c = ev_collateral_new();
    coll_add_file(c, TDX "v5_90c06f_pcs_tcbinfo.json");
    _cleanup_free_ char *qe =
        xasprintf("{\"enclaveIdentity\":%s,\"signature\":\"%s\"}",
                  json_string_value(json_object_get(j, "qe_identity")),
                  json_string_value(json_object_get(j, "qe_identity_signature")));
    assert_int_equal(ev_collateral_add(c, "qe_identity.json", qe, strlen(qe), &err), 0);
    static const char *const crls[] = {"root_ca_crl", "pck_crl"};
    for (size_t i = 0; i < 2; i++) {
        const char *h = json_string_value(json_object_get(j, crls[i]));
        _cleanup_free_ uint8_t *der = NULL;
        size_t dn = 0;
        assert_int_equal(hex_decode(&der, &dn, h, strlen(h), &err), 0);
        assert_int_equal(ev_collateral_add(c, crls[i], der, dn, &err), 0);
    }
    const char *chain = json_string_value(json_object_get(j, "pck_crl_issuer_chain"));
    assert_int_equal(ev_collateral_add(c, "pck_crl_issuer_chain.pem", chain, strlen(chain), &err),
                     0);
    return c;
}

static const char *const g_50806f_coll[] = {
    TDX "v4_50806f_pcs_tcbinfo.json", TDX "pcs_td_qe_identity_2023-06.json",
    TDX "pck_platform_ca_crl_2023-06-08.der", VC "intel_sgx_root_ca_crl_2023-04-03.der", NULL};
static const char *const g_00a06d_coll[] = {TDX "v4_00a06d_pcs_tcbinfo.json",
                                            TDX "pcs_td_qe_identity_2025-10.json", NULL};
static const char *const g_b0c06f_coll[] = {TDX "v4_b0c06f_collateral.json", NULL};
static const char *const g_sgx_coll[] = {SGX "v3_00a067_collateral.json", NULL};

/* ---- README rows: tdx/ ---- */

static void test_tdx_b0c06f(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2025_07, NULL, &err), 0);
    assert_string_equal(str_at(c, "tee"), "tdx");
    assert_false(bool_at(c, "insecure"));
    assert_false(bool_at(c, "debug"));
    assert_string_equal(str_at(c, "tcb.status"), "UpToDate");
    assert_int_equal(json_array_size(at(c, "tcb.advisories")), 0);
    assert_string_equal(str_at(c, "tcb.platform_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.module_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.qe_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.date"), "2024-03-13T00:00:00Z");
    assert_true(bool_at(c, "tcb.collateral"));
    assert_string_equal(str_at(c, "platform_id"), "b0c06f000000");
    assert_string_equal(str_at(c, "tcb.fmspc"), "b0c06f000000");
    assert_hex(c, "tdx.tee_tcb_svn", "06010300", "");
    assert_hex(c, "measurements.mrseam", "5b38e33a6487958b", "c1");
    assert_string_equal(str_at(c, "tdx.td_attributes.raw"), "0x0000000010000000");
    assert_true(bool_at(c, "tdx.td_attributes.sept_ve_disable"));
    assert_false(bool_at(c, "tdx.td_attributes.debug"));
    assert_string_equal(str_at(c, "tdx.xfam"), "e702060000000000");
    assert_string_equal(str_at(c, "measurements.mrtd"),
                        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6d"
                        "c5f87f27428b2538873118b7");
    assert_hex(c, "measurements.rtmr0", "44c0197b39157fdd", "c9c0");
    assert_hex(c, "measurements.rtmr1", "0084452c01668329", "9378");
    assert_hex(c, "measurements.rtmr2", "d833feef2cd94514", "3132");
    assert_true(all_zero_hex(str_at(c, "measurements.rtmr3")));
    assert_string_equal(str_at(c, "report_data"),
                        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdb"
                        "b481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20");
    assert_int_equal(int_at(c, "tdx.qe.isv_svn"), 6);
    assert_int_equal(int_at(c, "tdx.version"), 4);
    assert_string_equal(str_at(c, "tdx.body"), "td1.0");
    assert_int_equal(int_at(c, "tdx.trailing_bytes"), 70);
    assert_string_equal(str_at(c, "tdx.pck.ca"), "platform");
    /* signers: PCK, PCK Platform CA, pinned root, TCB signing */
    assert_int_equal(json_array_size(at(c, "signers")), 4);
    assert_string_equal(str_at(c, "signers.0.role"), "pck");
    assert_string_equal(str_at(c, "signers.1.role"), "pck-platform-ca");
    assert_string_equal(str_at(c, "signers.2.role"), "intel-sgx-root-ca");
    assert_true(bool_at(c, "signers.2.pinned"));
    assert_string_equal(str_at(c, "signers.2.sha256"), DCAP_ROOT_SHA256_HEX);
    assert_string_equal(str_at(c, "signers.3.role"), "tcb-signing");

    /* the same quote alone: quote-level checks only, status Unknown */
    json_decref(c);
    c = NULL;
    assert_int_equal(verify_file(&c, "tdx", TDX "v4_b0c06f_quote.bin", NULL, T2025_07, NULL, &err),
                     0);
    assert_string_equal(str_at(c, "tcb.status"), "Unknown");
    assert_false(bool_at(c, "tcb.collateral"));
    assert_int_equal(json_array_size(at(c, "signers")), 3);
}

static void test_tdx_20a06f(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const cl[] = {TDX "v4_20a06f_collateral.json", NULL};
    assert_int_equal(verify_file(&c, "tdx", TDX "v4_20a06f_quote.bin", cl, T2025_09, NULL, &err),
                     0);
    assert_string_equal(str_at(c, "tcb.status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.platform_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.module_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.qe_status"), "UpToDate");
    assert_string_equal(str_at(c, "platform_id"), "20a06f000000");
    static const int comps[] = {4, 4, 2, 2, 5, 255, 0, 2};
    assert_svns(c, "tcb.components.sgx", comps, 8);
    assert_int_equal(int_at(c, "tcb.components.pcesvn"), 13);
    assert_string_equal(str_at(c, "tdx.xfam"), "0702000000000000");
    assert_string_equal(str_at(c, "measurements.mrtd"),
                        "f06dfda6dce1cf904d4e2bab1dc370634cf95cefa2ceb2de2eee127c9382698090d7a4a1"
                        "3e14c536ec6c9c3c8fa87077");
    assert_hex(c, "measurements.mrconfigid", "0112a20aed7d6c68", "");
    assert_string_equal(str_at(c, "init_data"), str_at(c, "measurements.mrconfigid"));
    assert_hex(c, "measurements.rtmr3", "287a9242edd8c842", "b7b3");
    assert_hex(c, "report_data", "0001d579ba6e734a", "813a0000000000000000000000000000");
}

static void test_tdx_v5_outdated(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const cl[] = {TDX "v5_90c06f_outdated_collateral.json", NULL};
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v5_90c06f_outdated_quote.bin", cl, T2026_03, NULL, &err),
        EV_E_TCB);
    assert_msg(err, "no TCB level matches this platform");
    assert_msg(err, "sgxtcbcomponents[7] >= 5 (PCK has 3)");
    err_clear(&err);
    /* quote-level: valid, field values */
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v5_90c06f_outdated_quote.bin", NULL, T2026_03, NULL, &err), 0);
    assert_int_equal(int_at(c, "tdx.version"), 5);
    assert_string_equal(str_at(c, "tdx.body"), "td1.5");
    assert_string_equal(str_at(c, "platform_id"), "90c06f000000");
    static const int comps[] = {3, 3, 2, 2, 4, 1, 0, 3};
    assert_svns(c, "tcb.components.sgx", comps, 8);
    assert_int_equal(int_at(c, "tcb.components.pcesvn"), 13);
    assert_hex(c, "tdx.tee_tcb_svn", "07010300", "");
    assert_hex(c, "tdx.tee_tcb_svn2", "0d010300", "");
    assert_true(all_zero_hex(str_at(c, "tdx.mrservicetd")));
    for (int i = 0; i < 4; i++) {
        char p[32];
        snprintf(p, sizeof(p), "measurements.rtmr%d", i);
        assert_true(all_zero_hex(str_at(c, p)));
    }
    assert_hex(c, "measurements.mrtd", "273828c46252fcbd", "3dbd");
    assert_string_equal(str_at(c, "report_data"),
                        "d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce47728"
                        "0000000000000000000000000000000000000000000000000000000000000000");
}

static void test_tdx_v5_sample(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v5_90c06f_sample_quote.bin", NULL, T2026_02_03, NULL, &err), 0);
    json_decref(c);
    c = NULL;
    _cleanup_collateral_ ev_collateral *cl = v5_sample_coll();
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v5_90c06f_sample_quote.bin", &n);
    assert_int_equal(verify_bytes_c(&c, "tdx", q, n, cl, T2026_02_20, NULL, &err), 0);
    assert_string_equal(str_at(c, "tcb.status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.module_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.qe_status"), "UpToDate");
    assert_hex(c, "tdx.tee_tcb_svn", "0b010400", "");
    assert_hex(c, "tdx.tee_tcb_svn2", "0d010400", "");
    assert_string_equal(str_at(c, "measurements.mrtd"),
                        "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3"
                        "ee19747dda8f750c3bc8f876");
    assert_hex(c, "measurements.rtmr0", "5c8daf76063a71ac", "4619");
    assert_hex(c, "report_data", "945eaacf5abc1f71", "5c3a");
    static const int comps[] = {4, 4, 2, 2, 4, 1, 0, 5};
    assert_svns(c, "tcb.components.sgx", comps, 8);
    assert_int_equal(int_at(c, "tdx.qe.isv_svn"), 7);
    /* the window the README gives: the PCK CRL starts 2026-02-18T10:42:15Z */
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, cl, T2026_02_03, NULL, &err), EV_E_EXPIRED);
    err_clear(&err);
}

static void test_tdx_50806f(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v4_50806f_spr_e4_quote.bin", NULL, T2023_07, NULL, &err), 0);
    assert_int_equal(int_at(c, "tdx.trailing_bytes"), 39);
    assert_string_equal(str_at(c, "platform_id"), "50806f000000");
    assert_hex(c, "tdx.tee_tcb_svn", "03000400", "");
    assert_string_equal(str_at(c, "tdx.td_attributes.raw"), "0x0000000040000000");
    assert_false(bool_at(c, "tdx.td_attributes.sept_ve_disable"));
    assert_true(bool_at(c, "tdx.td_attributes.pks"));
    assert_string_equal(str_at(c, "tdx.xfam"), "e71a060000000000");
    assert_string_equal(str_at(c, "measurements.mrtd"),
                        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8"
                        "dcd404bc10d5e119d7215cbb");
    assert_hex(c, "measurements.rtmr0", "2927da70461cd632", "f32a");
    assert_hex(c, "report_data", "6c62dec1b8191749", "1113");
    assert_hex(c, "signers.0.not_before", "2022-09-20", "");
    assert_hex(c, "signers.0.not_after", "2029-09-20", "");
    json_decref(c);
    c = NULL;
    /* with collateral: every signature valid, but no TCB level (TDX component 2: 4 < 5) */
    assert_int_equal(verify_file(&c, "tdx", TDX "v4_50806f_spr_e4_quote.bin", g_50806f_coll,
                                 T2023_07, NULL, &err),
                     EV_E_TCB);
    assert_msg(err, "tdxtcbcomponents[2] >= 5 (TEE_TCB_SVN has 4)");
}

static void test_tdx_00a06d(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v4_00a06d_quote.bin", g_00a06d_coll, T2025_11, NULL, &err), 0);
    assert_string_equal(str_at(c, "tcb.status"), "OutOfDate");
    assert_string_equal(str_at(c, "tcb.platform_status"), "OutOfDate");
    assert_string_equal(str_at(c, "tcb.module_status"), "UpToDate");
    assert_string_equal(str_at(c, "tcb.qe_status"), "UpToDate");
    assert_int_equal(json_array_size(at(c, "tcb.advisories")), 0); /* none listed */
    assert_int_equal(int_at(c, "tcb.components.pcesvn"), 11);
    assert_string_equal(str_at(c, "platform_id"), "00a06d080000");
    assert_int_equal(int_at(c, "tdx.pck.sgx_type"), 2);
    assert_hex(c, "tdx.tee_tcb_svn", "05030200", "");
    assert_hex(c, "measurements.mrseam", "476a2997c62bccc7", "ea7c");
    assert_hex(c, "measurements.mrtd", "21e8dead92d6c69d", "1e88");
    assert_hex(c, "measurements.mrconfigid", "889abf4718f037e3", "ed67");
    assert_hex(c, "report_data", "26cae1c77185617f", "2cfd00000000000000000000000000000000");
}

static void test_tdx_gce(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "tdx", TDX "v4_gce_cos113_quote.bin", NULL, T2025_07, NULL, &err), 0);
    assert_int_equal(int_at(c, "tdx.trailing_bytes"), 8000 - 4935);
    assert_string_equal(str_at(c, "platform_id"), "00806f050000");
    assert_true(all_zero_hex(str_at(c, "report_data")));
    assert_true(all_zero_hex(str_at(c, "tdx.user_data")));
    assert_string_equal(str_at(c, "measurements.mrtd"),
                        "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7"
                        "717cb2735396c1d04231f94a");
    assert_string_equal(str_at(c, "measurements.rtmr0"),
                        "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e5"
                        "44039c7e1edece752afd17f6");
    assert_string_equal(str_at(c, "measurements.rtmr1"),
                        "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944"
                        "aa62c41a86e8a878c2b122c1");
    assert_string_equal(str_at(c, "measurements.rtmr2"),
                        "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219"
                        "048c9fc09f11f381a6fbe7c1");
    assert_true(all_zero_hex(str_at(c, "measurements.rtmr3")));
}

static void test_tdreport_not_a_quote(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    /* a raw TDREPORT (REPORTTYPE 0x81 ...) is not a quote */
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "tdreport_intel_sample.bin", NULL, T2025_07, NULL, &err),
        EV_E_VERSION);
    assert_msg(err, "version");
}

/* ---- README rows: sgx/ ---- */

static void test_sgx_00a067(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(
        verify_file(&c, "sgx", SGX "v3_00a067_quote.bin", g_sgx_coll, T2025_07, NULL, &err), 0);
    assert_string_equal(str_at(c, "tee"), "sgx");
    assert_string_equal(str_at(c, "tcb.status"), "ConfigurationAndSWHardeningNeeded");
    static const char *const adv[] = {"INTEL-SA-00289", "INTEL-SA-00615", NULL};
    assert_advisories(c, adv);
    assert_string_equal(str_at(c, "tcb.qe_status"), "UpToDate");
    assert_int_equal(int_at(c, "sgx.qe_svn"), 10);
    assert_int_equal(int_at(c, "sgx.pce_svn"), 15);
    assert_string_equal(str_at(c, "measurements.mrenclave"),
                        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    assert_string_equal(str_at(c, "measurements.mrsigner"),
                        "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
    assert_int_equal(int_at(c, "measurements.isv_prod_id"), 0);
    assert_int_equal(int_at(c, "measurements.isv_svn"), 0);
    assert_string_equal(str_at(c, "sgx.attributes"), "0500000000000000e700000000000000");
    assert_false(bool_at(c, "debug"));
    assert_hex(c, "report_data", "48656c6c6f2c20776f726c6421000000", "0000");
    assert_string_equal(str_at(c, "platform_id"), "00a067110000");
    static const int comps[] = {11, 11, 2, 2, 255, 1, 0};
    assert_svns(c, "tcb.components.sgx", comps, 7);
    assert_int_equal(int_at(c, "tcb.components.pcesvn"), 13);
    assert_string_equal(str_at(c, "sgx.qe.mrsigner"),
                        "8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff");
    assert_int_equal(int_at(c, "sgx.qe.isv_svn"), 10);
    assert_string_equal(str_at(c, "sgx.pck.ca"), "processor");
    assert_string_equal(str_at(c, "signers.1.role"), "pck-processor-ca");
}

static void test_sgx_occlum(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify_file(&c, "sgx", SGX "v3_occlum_quote.bin", NULL, T2025_07, NULL, &err),
                     0);
    assert_true(bool_at(c, "debug"));
    assert_string_equal(str_at(c, "sgx.attributes"), "0700000000000000e700000000000000");
    assert_string_equal(str_at(c, "sgx.misc_select"), "01000000");
    assert_string_equal(str_at(c, "measurements.mrenclave"),
                        "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68");
    assert_string_equal(str_at(c, "measurements.mrsigner"),
                        "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e");
    assert_hex(c, "report_data", "74657374000000", "0000");
    assert_int_equal(int_at(c, "sgx.qe_svn"), 8);
    assert_int_equal(int_at(c, "sgx.pce_svn"), 13);
    assert_string_equal(str_at(c, "platform_id"), "00606a000000");
    assert_string_equal(str_at(c, "tcb.status"), "Unknown");
    /* production policy: debug refused */
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.forbid_debug = true;
    assert_int_equal(verify_file(NULL, "sgx", SGX "v3_occlum_quote.bin", NULL, T2025_07, &o, &err),
                     EV_E_POLICY);
    assert_msg(err, "DEBUG (bit 1)");
}

/* ---- tamper matrix (v4_b0c06f with its collateral at 2025-07-01) ---- */

/* v4 layout of the b0c06f quote: body 48, sig data 636, QE report 770, auth 1220, PEM 1258 */
#define OFF_SIG 636
#define OFF_AK 700
#define OFF_CERT_TYPE 764
#define OFF_QE_REPORT 770
#define OFF_QE_AUTH 1220
#define OFF_PEM 1258

static int flip_verify(size_t off, uint8_t x, cista_error **err)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    assert_true(off < n);
    q[off] ^= x;
    return verify_bytes(NULL, "tdx", q, n, g_b0c06f_coll, T2025_07, NULL, err);
}

static void expect_flip(size_t off, uint8_t x, int code, const char *needle)
{
    _cleanup_err_ cista_error *err = NULL;
    print_message("  flip 0x%02x at %zu\n", x, off);
    assert_int_equal(flip_verify(off, x, &err), code);
    assert_msg(err, needle);
}

static void test_tamper_fields(void **state)
{
    (void)state;
    /* header */
    expect_flip(0, 0x02, EV_E_VERSION, "version 6 is not supported");
    expect_flip(2, 0x01, EV_E_VERSION, "attestation key type 3 is not supported");
    expect_flip(4, 0x81, EV_E_FORMAT, "this is a SGX quote");
    expect_flip(8, 0x01, EV_E_FORMAT, "reserved header bytes 8..11");
    expect_flip(12, 0x01, EV_E_FORMAT, "is not Intel's");
    expect_flip(30, 0x01, EV_E_SIGNATURE, "quote signature by the attestation key");
    /* body: MRTD, RTMR0, REPORTDATA, TD attributes */
    expect_flip(48 + TDB_MRTD, 0x01, EV_E_SIGNATURE, "header or body was modified");
    expect_flip(48 + TDB_RTMR0 + 5, 0x80, EV_E_SIGNATURE, "header or body was modified");
    expect_flip(48 + TDB_REPORTDATA, 0x01, EV_E_SIGNATURE, "header or body was modified");
    expect_flip(48 + TDB_TDATTRIBUTES, 0x01, EV_E_SIGNATURE, "header or body was modified");
    /* the quote signature */
    expect_flip(OFF_SIG + 3, 0x01, EV_E_SIGNATURE, "quote signature by the attestation key");
    expect_flip(OFF_SIG + 40, 0x01, EV_E_SIGNATURE, "quote signature by the attestation key");
    /* attestation key: no longer the one the QE report binds */
    expect_flip(OFF_AK + 10, 0x01, EV_E_NOKEY, "SHA-256(attestation key || QE auth data)");
    /* certification data type */
    expect_flip(OFF_CERT_TYPE, 0x03, EV_E_FORMAT, "expected 6");
    /* QE report (its MRENCLAVE) and its signature */
    expect_flip(OFF_QE_REPORT + SGXR_MRENCLAVE, 0x01, EV_E_SIGNATURE,
                "QE report signature by the PCK");
    expect_flip(OFF_QE_REPORT + 384 + 7, 0x01, EV_E_SIGNATURE, "QE report signature by the PCK");
    /* QE authentication data */
    expect_flip(OFF_QE_AUTH + 3, 0x01, EV_E_NOKEY, "attestation key is not the one");
    /* the PCK chain PEM: base64 of the leaf's signature; then the header line */
    expect_flip(OFF_PEM + 1000, 0x01, EV_E_CHAIN, "does not verify");
    expect_flip(OFF_PEM + 3, 0x01, EV_E_CHAIN, "expected CN 'Intel SGX PCK Certificate'");
    expect_flip(OFF_PEM + 100, 0x80, EV_E_FORMAT, "PCK certificate chain");
}

/* Replace the PEM chain of a v4 quote (sizes updated). New buffer. */
static uint8_t *with_pem(size_t *out_size, const uint8_t *q, const char *pem)
{
    size_t pn = strlen(pem) + 1, size = OFF_PEM + pn;
    uint8_t *o = xzalloc(size);
    memcpy(o, q, OFF_PEM);
    ev__put_le32(o + OFF_PEM - 4, (uint32_t)pn);
    memcpy(o + OFF_PEM, pem, pn);
    ev__put_le32(o + 632, (uint32_t)(size - 636));
    ev__put_le32(o + OFF_CERT_TYPE + 2, (uint32_t)(size - OFF_QE_REPORT));
    *out_size = size;
    return o;
}

static char *pem_of(X509 *c)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509(b, c) == 1);
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    char *r = xzalloc((size_t)n + 1);
    memcpy(r, d, (size_t)n);
    BIO_free(b);
    return r;
}

static STACK_OF(X509) * quote_chain(const char *path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(path, &n);
    _cleanup_err_ cista_error *err = NULL;
    STACK_OF(X509) *s = NULL;
    assert_int_equal(x509_certs_load(&s, q + OFF_PEM, n - OFF_PEM, &err), 0);
    return s;
}

static void test_tamper_chain(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0, tn = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_x509_stack_ STACK_OF(X509) *chain = quote_chain(TDX "v4_b0c06f_quote.bin");
    assert_int_equal(sk_X509_num(chain), 3);
    _cleanup_free_ char *leaf = pem_of(sk_X509_value(chain, 0));
    _cleanup_free_ char *root = pem_of(sk_X509_value(chain, 2));

    /* the same chain re-encoded: still valid (sizes are followed) */
    _cleanup_free_ char *ca = pem_of(sk_X509_value(chain, 1));
    _cleanup_free_ char *same = xasprintf("%s%s%s", leaf, ca, root);
    _cleanup_free_ uint8_t *t0 = with_pem(&tn, q, same);
    assert_int_equal(verify_bytes(NULL, "tdx", t0, tn, g_b0c06f_coll, T2025_07, NULL, &err), 0);

    /* broken link: the Processor CA instead of the Platform CA */
    size_t pn = 0;
    _cleanup_free_ uint8_t *proc = read_all(VC "intel_sgx_pck_processor_ca.pem", &pn);
    _cleanup_free_ char *broken = xasprintf("%s%.*s%s", leaf, (int)pn, proc, root);
    _cleanup_free_ uint8_t *t1 = with_pem(&tn, q, broken);
    assert_int_equal(verify_bytes(NULL, "tdx", t1, tn, NULL, T2025_07, NULL, &err), EV_E_CHAIN);
    assert_msg(err, "unknown issuer");
    assert_msg(err, "CN = Intel SGX PCK Certificate");
    err_clear(&err);

    /* a self-made "Intel SGX Root CA" in the quote is not the pinned root */
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-256", &err), 0);
    X509 *fake = X509_dup(sk_X509_value(chain, 2));
    X509_set_pubkey(fake, k);
    assert_true(X509_sign(fake, k, EVP_sha256()) > 0);
    _cleanup_free_ char *fake_pem = pem_of(fake);
    X509_free(fake);
    _cleanup_free_ char *forged = xasprintf("%s%s%s", leaf, ca, fake_pem);
    _cleanup_free_ uint8_t *t2 = with_pem(&tn, q, forged);
    assert_int_equal(verify_bytes(NULL, "tdx", t2, tn, NULL, T2025_07, NULL, &err), EV_E_CHAIN);
    assert_msg(err, "is not the pinned Intel SGX Root CA");
    err_clear(&err);

    /* only the leaf: the Platform CA is missing */
    _cleanup_free_ uint8_t *t3 = with_pem(&tn, q, leaf);
    assert_int_equal(verify_bytes(NULL, "tdx", t3, tn, NULL, T2025_07, NULL, &err), EV_E_CHAIN);
    assert_msg(err, "unknown issuer");
    err_clear(&err);

    /* the CA first: not a PCK certificate */
    _cleanup_free_ char *swapped = xasprintf("%s%s%s", ca, leaf, root);
    _cleanup_free_ uint8_t *t4 = with_pem(&tn, q, swapped);
    assert_int_equal(verify_bytes(NULL, "tdx", t4, tn, NULL, T2025_07, NULL, &err), EV_E_CHAIN);
    assert_msg(err, "expected CN 'Intel SGX PCK Certificate'");
    err_clear(&err);

    /* expired and not yet valid PCK (no collateral: quote-level checks) */
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "v4_50806f_spr_e4_quote.bin", NULL, T2030, NULL, &err),
        EV_E_EXPIRED);
    assert_msg(err, "is expired at 2030-01-01T00:00:00Z");
    err_clear(&err);
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "v4_50806f_spr_e4_quote.bin", NULL, T2020, NULL, &err),
        EV_E_EXPIRED);
    assert_msg(err, "not yet valid");
    err_clear(&err);
    /* a CRL past its nextUpdate */
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2026_03, NULL, &err),
        EV_E_EXPIRED);
    assert_msg(err, "CRL");
}

/* The attestation key replaced by another one that signs the quote: signature fine, binding not. */
static void test_tamper_ak_binding(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-256", &err), 0);
    uint8_t pt[65];
    size_t ptn = 0;
    assert_true(EVP_PKEY_get_octet_string_param(k, "pub", pt, sizeof(pt), &ptn) == 1);
    assert_int_equal(ptn, 65);
    memcpy(q + OFF_AK, pt + 1, 64);
    assert_int_equal(x509_ecdsa_sign_raw(q + OFF_SIG, q + OFF_SIG + 32, 32, X509_BIG_ENDIAN, k,
                                         "SHA256", q, 632, &err),
                     0);
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, g_b0c06f_coll, T2025_07, NULL, &err),
                     EV_E_NOKEY);
    assert_msg(err, "is not the one the quoting enclave certified");
}

static void test_tamper_sizes(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    static const size_t cuts[] = {0, 10, 47, 100, 631, 635, 700, 800, 1219, 1256, 3000, 4935};
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        print_message("  truncated to %zu\n", cuts[i]);
        assert_int_equal(verify_bytes(NULL, "tdx", q, cuts[i], NULL, T2025_07, NULL, &err),
                         EV_E_SIZE);
        assert_msg(err, "truncated");
        err_clear(&err);
    }
    /* exactly the bytes the length fields describe: fine */
    assert_int_equal(verify_bytes(NULL, "tdx", q, 4936, NULL, T2025_07, NULL, &err), 0);
    /* padded beyond what a quote buffer explains */
    size_t big = n + DCAP_MAX_TRAILING;
    _cleanup_free_ uint8_t *p = xzalloc(big);
    memcpy(p, q, n);
    assert_int_equal(verify_bytes(NULL, "tdx", p, big, NULL, T2025_07, NULL, &err), EV_E_SIZE);
    assert_msg(err, "padded");
    err_clear(&err);
    /* length fields that disagree: signature data one byte longer */
    ev__put_le32(q + 632, ev__le32(q + 632) + 1);
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, NULL, T2025_07, NULL, &err), EV_E_FORMAT);
    assert_msg(err, "length fields disagree");
    err_clear(&err);
    /* v5: body size that does not match the body type */
    size_t n5 = 0;
    _cleanup_free_ uint8_t *q5 = read_all(TDX "v5_90c06f_sample_quote.bin", &n5);
    q5[50] ^= 1;
    assert_int_equal(verify_bytes(NULL, "tdx", q5, n5, NULL, T2026_02_03, NULL, &err), EV_E_FORMAT);
    assert_msg(err, "body size");
    err_clear(&err);
    q5[50] ^= 1;
    q5[48] = 9;
    assert_int_equal(verify_bytes(NULL, "tdx", q5, n5, NULL, T2026_02_03, NULL, &err),
                     EV_E_VERSION);
    assert_msg(err, "body type 9");
    err_clear(&err);
    /* the SGX quote truncated in its certification data */
    size_t ns = 0;
    _cleanup_free_ uint8_t *qs = read_all(SGX "v3_00a067_quote.bin", &ns);
    assert_int_equal(verify_bytes(NULL, "sgx", qs, ns - 1, NULL, T2025_07, NULL, &err), EV_E_SIZE);
    assert_msg(err, "truncated");
}

/* ---- collateral ---- */

/* @path's text with the first @from replaced by @to, as collateral (plus the QE identity). */
static ev_collateral *edited(const char *path, const char *from, const char *to, const char *other)
{
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_free_ char *t = NULL;
    size_t tn = 0;
    assert_int_equal(util_read_file(&t, &tn, path, 1 << 20, &err), 0);
    const char *hit = strstr(t, from);
    assert_non_null(hit);
    size_t pos = (size_t)(hit - t);
    _cleanup_free_ char *o = xasprintf("%.*s%s%s", (int)pos, t, to, t + pos + strlen(from));
    ev_collateral *c = ev_collateral_new();
    assert_int_equal(ev_collateral_add(c, path, o, strlen(o), &err), 0);
    if (other)
        coll_add_file(c, other);
    return c;
}

static void test_collateral_checks(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_00a06d_quote.bin", &n);
    const char *tcb = TDX "v4_00a06d_pcs_tcbinfo.json", *qe = TDX "pcs_td_qe_identity_2025-10.json";

    /* a byte changed inside the signed tcbInfo */
    _cleanup_collateral_ ev_collateral *c1 =
        edited(tcb, "\"tcbEvaluationDataNumber\":17", "\"tcbEvaluationDataNumber\":18", qe);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c1, T2025_11, NULL, &err), EV_E_SIGNATURE);
    assert_msg(err, "DCAP TCB info");
    assert_msg(err, "does not verify");
    err_clear(&err);
    /* re-serialised (a space inside the object): the exact text is what is signed */
    _cleanup_collateral_ ev_collateral *c2 = edited(tcb, "\"version\":3,", "\"version\": 3,", qe);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c2, T2025_11, NULL, &err), EV_E_SIGNATURE);
    assert_msg(err, "re-serialised");
    err_clear(&err);
    /* whitespace outside the signed object changes nothing */
    _cleanup_collateral_ ev_collateral *c3 = edited(tcb, "{\"tcbInfo\":", "{ \"tcbInfo\" :\n", qe);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c3, T2025_11, NULL, &err), 0);
    /* the QE identity modified */
    _cleanup_collateral_ ev_collateral *c4 = edited(qe, "\"isvprodid\":2", "\"isvprodid\":3", tcb);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c4, T2025_11, NULL, &err), EV_E_SIGNATURE);
    assert_msg(err, "DCAP QE identity");
    err_clear(&err);
    /* the signature member itself */
    _cleanup_collateral_ ev_collateral *c5 =
        edited(tcb, "\"signature\":\"", "\"signature\":\"0", qe);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c5, T2025_11, NULL, &err), EV_E_FORMAT);
    assert_msg(err, "128 hex digits");
    err_clear(&err);
    /* a duplicate tcbInfo member is refused, not guessed */
    _cleanup_collateral_ ev_collateral *c6 =
        edited(tcb, "{\"tcbInfo\":", "{\"tcbInfo\":{},\"tcbInfo\":", qe);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c6, T2025_11, NULL, &err), EV_E_FORMAT);
    err_clear(&err);

    /* out of the window: after nextUpdate, before issueDate */
    const char *const both[] = {tcb, qe, NULL};
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, both, T2025_12, NULL, &err), EV_E_EXPIRED);
    assert_msg(err, "outside its validity window at 2025-12-01T00:00:00Z");
    assert_msg(err, "nextUpdate 2025-11-2");
    err_clear(&err);
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, both, T2025_10_20, NULL, &err), EV_E_EXPIRED);
    assert_msg(err, "outside its validity window");
    err_clear(&err);

    /* TCB info for another FMSPC; QE identity missing */
    const char *const other[] = {TDX "v4_50806f_pcs_tcbinfo.json", qe, NULL};
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, other, T2025_11, NULL, &err), EV_E_PLATFORM);
    assert_msg(err, "no TDX TCB info for the PCK's FMSPC 00a06d080000");
    err_clear(&err);
    const char *const only_tcb[] = {tcb, NULL};
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, only_tcb, T2025_11, NULL, &err),
                     EV_E_PLATFORM);
    assert_msg(err, "no QE identity");
    err_clear(&err);
    /* an SGX QE identity for a TD quote */
    _cleanup_collateral_ ev_collateral *c7 = edited(qe, "\"TD_QE\"", "\"QE\"", tcb);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c7, T2025_11, NULL, &err), EV_E_PLATFORM);
    err_clear(&err);

    /* TCB status below the caller's minimum */
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.tcb_max_status = EV_TCB_UP_TO_DATE;
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, both, T2025_11, &o, &err), EV_E_POLICY);
    assert_msg(err, "TCB status is OutOfDate");
    err_clear(&err);
    o.tcb_max_status = EV_TCB_OUT_OF_DATE;
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, both, T2025_11, &o, &err), 0);
    o.tcb_max_status = EV_TCB_UP_TO_DATE;
    assert_int_equal(verify_bytes(NULL, "tdx", q, n, NULL, T2025_11, &o, &err), EV_E_POLICY);
    assert_msg(err, "TCB status is unknown");
    err_clear(&err);
    o.tcb_max_status = EV_TCB_SW_HARDENING_NEEDED;
    assert_int_equal(
        verify_file(NULL, "sgx", SGX "v3_00a067_quote.bin", g_sgx_coll, T2025_07, &o, &err),
        EV_E_POLICY);
    assert_msg(err, "ConfigurationAndSWHardeningNeeded");
    err_clear(&err);
    o.tcb_max_status = EV_TCB_UP_TO_DATE;
    o.forbid_debug = true;
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2025_07, &o, &err), 0);

    /* report data */
    uint8_t rd[64] = {0};
    o.report_data = rd;
    assert_int_equal(
        verify_file(NULL, "tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2025_07, &o, &err),
        EV_E_REPORT_DATA);
    assert_msg(err, "report_data is 9a9d48e7");
    err_clear(&err);

    /* the wrong kind */
    assert_int_equal(
        verify_file(NULL, "tdx", SGX "v3_00a067_quote.bin", NULL, T2025_07, NULL, &err),
        EV_E_FORMAT);
    assert_msg(err, "use --tee sgx");
    err_clear(&err);
    assert_int_equal(
        verify_file(NULL, "sgx", TDX "v4_b0c06f_quote.bin", NULL, T2025_07, NULL, &err),
        EV_E_FORMAT);
    assert_msg(err, "use --tee tdx");
}

/* A collateral directory (what the CLI's --collateral loads): contents decide, not names. */
static void test_collateral_dir(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    char tmpl[] = "/tmp/cista-dcap-coll-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    static const char *const files[] = {TDX "v4_50806f_pcs_tcbinfo.json",
                                        TDX "pcs_td_qe_identity_2023-06.json",
                                        TDX "pck_platform_ca_crl_2023-06-08.der",
                                        VC "intel_sgx_root_ca_crl_2023-04-03.der",
                                        VC "intel_sgx_root_ca.pem",
                                        VC "amd_milan_ark.pem"};
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *d = read_all(files[i], &n);
        _cleanup_free_ char *p = xasprintf("%s/f%zu", tmpl, i);
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(d, 1, n, f), n);
        fclose(f);
    }
    _cleanup_collateral_ ev_collateral *c = ev_collateral_new();
    assert_int_equal(ev_collateral_load_dir(c, tmpl, &err), 0);
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_50806f_spr_e4_quote.bin", &n);
    assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, c, T2023_07, NULL, &err), EV_E_TCB);
    err_clear(&err);
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        _cleanup_free_ char *p = xasprintf("%s/f%zu", tmpl, i);
        unlink(p);
    }
    assert_int_equal(rmdir(tmpl), 0);
}

/* ---- get() through directories that mimic the kernel / Gramine ---- */

static void test_tdx_get_configfs_mimic(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    char tmpl[] = "/tmp/cista-tsm-tdx-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    tsm_mimic m = {.provider = "tdx_guest\n", .outblob = q, .outblob_size = n};
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.tsm_dir = tmpl;
    g.tsm_hook = kernel_part;
    g.tsm_hook_arg = &m;
    uint8_t rd[64];
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(0xa0 + i);
    uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    assert_int_equal(ev_find("tdx")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), 0);
    assert_int_equal(ev_size, n);
    assert_memory_equal(ev, q, n);
    assert_null(aux);
    _cleanup_free_ char *inpath = xasprintf("%s/inblob", m.entry);
    size_t in_size = 0;
    _cleanup_free_ uint8_t *in = read_all(inpath, &in_size);
    assert_int_equal(in_size, 64);
    assert_memory_equal(in, rd, 64);
    rm_entry(m.entry);
    /* what came back verifies */
    assert_int_equal(verify_bytes(NULL, "tdx", ev, ev_size, g_b0c06f_coll, T2025_07, NULL, &err),
                     0);
    free(ev);
    /* an SNP provider is not TDX */
    m.provider = "sev_guest\n";
    assert_int_equal(ev_find("tdx")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), EV_E_NOTEE);
    assert_msg(err, "sev_guest");
    err_clear(&err);
    rm_entry(m.entry);
    /* an outblob that is not a TD quote */
    m.provider = "tdx_guest";
    m.outblob_size = 40;
    assert_int_equal(ev_find("tdx")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), -EPROTO);
    err_clear(&err);
    rm_entry(m.entry);
    assert_int_equal(rmdir(tmpl), 0);
    /* no configfs-tsm at all */
    g.tsm_dir = "/nonexistent/tsm/report";
    assert_int_equal(ev_find("tdx")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), EV_E_NOTEE);
}

static void test_sgx_get_gramine_mimic(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    char tmpl[] = "/tmp/cista-gramine-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(SGX "v3_00a067_quote.bin", &n);
    put(tmpl, "attestation_type", "dcap", 4);
    put(tmpl, "user_report_data", "", 0);
    put(tmpl, "quote", q, n);
    assert_int_equal(setenv("CISTA_GRAMINE_ATTESTATION_DIR", tmpl, 1), 0);
    uint8_t rd[64];
    memset(rd, 0x5a, sizeof(rd));
    uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    assert_int_equal(ev_find("sgx")->get(&ev, &ev_size, &aux, &aux_size, rd, NULL, &err), 0);
    assert_int_equal(ev_size, n);
    assert_memory_equal(ev, q, n);
    assert_null(aux);
    assert_int_equal(aux_size, 0);
    _cleanup_free_ char *urd = xasprintf("%s/user_report_data", tmpl);
    size_t un = 0;
    _cleanup_free_ uint8_t *written = read_all(urd, &un);
    assert_int_equal(un, 64);
    assert_memory_equal(written, rd, 64);
    assert_int_equal(verify_bytes(NULL, "sgx", ev, ev_size, g_sgx_coll, T2025_07, NULL, &err), 0);
    free(ev);
    /* EPID is not supported */
    put(tmpl, "attestation_type", "epid\n", 5);
    assert_int_equal(ev_find("sgx")->get(&ev, &ev_size, &aux, &aux_size, rd, NULL, &err),
                     EV_E_NOTEE);
    assert_msg(err, "\"epid\"");
    err_clear(&err);
    /* not a quote */
    put(tmpl, "attestation_type", "dcap\n", 5);
    put(tmpl, "quote", "nope", 4);
    assert_int_equal(ev_find("sgx")->get(&ev, &ev_size, &aux, &aux_size, rd, NULL, &err), -EPROTO);
    err_clear(&err);
    static const char *const names[] = {"attestation_type", "user_report_data", "quote"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", tmpl, names[i]);
        unlink(p);
    }
    assert_int_equal(rmdir(tmpl), 0);
    /* outside Gramine */
    assert_int_equal(setenv("CISTA_GRAMINE_ATTESTATION_DIR", "/nonexistent/attestation", 1), 0);
    assert_int_equal(ev_find("sgx")->get(&ev, &ev_size, &aux, &aux_size, rd, NULL, &err),
                     EV_E_NOTEE);
    unsetenv("CISTA_GRAMINE_ATTESTATION_DIR");
}

static void test_registry(void **state)
{
    (void)state;
    const ev_ops *tdx = ev_find("tdx"), *sgx = ev_find("sgx");
    assert_non_null(tdx);
    assert_non_null(sgx);
    assert_false(tdx->insecure);
    assert_false(sgx->insecure);
    static const char *const tdx_files[] = {
        TDX "v4_b0c06f_quote.bin",          TDX "v4_20a06f_quote.bin",
        TDX "v5_90c06f_outdated_quote.bin", TDX "v5_90c06f_sample_quote.bin",
        TDX "v4_50806f_spr_e4_quote.bin",   TDX "v4_00a06d_quote.bin",
        TDX "v4_gce_cos113_quote.bin"};
    for (size_t i = 0; i < ARRAY_LEN(tdx_files); i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *q = read_all(tdx_files[i], &n);
        assert_ptr_equal(ev_detect(q, n), tdx);
        assert_false(sgx->detect(q, n));
    }
    static const char *const sgx_files[] = {SGX "v3_00a067_quote.bin", SGX "v3_occlum_quote.bin"};
    for (size_t i = 0; i < ARRAY_LEN(sgx_files); i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *q = read_all(sgx_files[i], &n);
        assert_ptr_equal(ev_detect(q, n), sgx);
        assert_false(tdx->detect(q, n));
    }
    size_t n = 0;
    _cleanup_free_ uint8_t *r = read_all(TDX "tdreport_intel_sample.bin", &n);
    assert_false(tdx->detect(r, n));
    assert_false(sgx->detect(r, n));
    assert_string_equal(ev__dcap_status_name(EV_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED),
                        "OutOfDateConfigurationNeeded");
    /* the shipped copy of the root is the compiled-in one */
    size_t pn = 0;
    _cleanup_free_ uint8_t *pem = read_all("data/intel/intel_sgx_root_ca.pem", &pn);
    assert_int_equal(pn, strlen(ev__intel_sgx_root_ca_pem));
    assert_memory_equal(pem, ev__intel_sgx_root_ca_pem, pn);
}

/* The entry point azure.c uses: the same verification and claims as "tdx". */
static void test_td_quote_entry(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_collateral_ ev_collateral *c = coll(g_b0c06f_coll);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_07;
    o.collateral = c;
    _cleanup_json_ json_t *claims = NULL;
    assert_int_equal(ev__dcap_verify_td_quote(&claims, q, n, &o, &err), 0);
    assert_string_equal(str_at(claims, "tee"), "tdx");
    assert_string_equal(str_at(claims, "tcb.status"), "UpToDate");
    size_t sn = 0;
    _cleanup_free_ uint8_t *s = read_all(SGX "v3_00a067_quote.bin", &sn);
    json_t *none = NULL;
    assert_int_equal(ev__dcap_verify_td_quote(&none, s, sn, &o, &err), EV_E_FORMAT);
    assert_null(none);
}

/* ---- revocation, with a PKI made here (no revoked sample exists) ---- */

static X509 *mkcert_until(const char *cn, X509 *issuer, EVP_PKEY *pub, EVP_PKEY *signer, bool ca,
                          long serial, const uint8_t *sgx_ext, size_t sgx_ext_size,
                          time_t not_after)
{
    X509 *c = X509_new();
    assert_non_null(c);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c, name);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);
    ASN1_TIME_set(X509_getm_notBefore(c), T2020);
    ASN1_TIME_set(X509_getm_notAfter(c), not_after);
    X509_set_pubkey(c, pub);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : c, c, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                            ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(c, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
                            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    X509_add_ext(c, e, -1);
    X509_EXTENSION_free(e);
    if (sgx_ext) {
        ASN1_OBJECT *oid = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(os, sgx_ext, (int)sgx_ext_size);
        e = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, os);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
        ASN1_OCTET_STRING_free(os);
        ASN1_OBJECT_free(oid);
    }
    assert_true(X509_sign(c, signer, EVP_sha256()) > 0);
    return c;
}

static X509 *mkcert(const char *cn, X509 *issuer, EVP_PKEY *pub, EVP_PKEY *signer, bool ca,
                    long serial, const uint8_t *sgx_ext, size_t sgx_ext_size)
{
    return mkcert_until(cn, issuer, pub, signer, ca, serial, sgx_ext, sgx_ext_size, T2030);
}

static void add_pem(ev_collateral *c, const char *name, X509 *cert)
{
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_free_ char *pem = pem_of(cert);
    assert_int_equal(ev_collateral_add(c, name, pem, strlen(pem), &err), 0);
}

/* A PCS-style document: @text signed with @k. */
static void add_signed(ev_collateral *c, const char *member, const char *text, EVP_PKEY *k)
{
    _cleanup_err_ cista_error *err = NULL;
    uint8_t sig[64];
    assert_int_equal(x509_ecdsa_sign_raw(sig, sig + 32, 32, X509_BIG_ENDIAN, k, "SHA256", text,
                                         strlen(text), &err),
                     0);
    _cleanup_free_ char *hex = hex_encode(sig, 64);
    _cleanup_free_ char *doc = xasprintf("{\"%s\":%s,\"signature\":\"%s\"}", member, text, hex);
    assert_int_equal(ev_collateral_add(c, member, doc, strlen(doc), &err), 0);
}

static void test_revoked(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *real = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_x509_stack_ STACK_OF(X509) *chain = quote_chain(TDX "v4_b0c06f_quote.bin");
    const uint8_t *ext = NULL;
    size_t ext_size = 0;
    assert_int_equal(
        x509_ext_raw(&ext, &ext_size, sk_X509_value(chain, 0), "1.2.840.113741.1.13.1", &err), 0);
    _cleanup_pkey_ EVP_PKEY *rk = NULL, *ck = NULL, *pk = NULL, *tk = NULL;
    assert_int_equal(crypto_key_generate_ec(&rk, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&ck, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&pk, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&tk, "P-256", &err), 0);
    _cleanup_x509_ X509 *root = mkcert("Intel SGX Root CA", NULL, rk, rk, true, 1, NULL, 0);
    _cleanup_x509_ X509 *ca = mkcert("Intel SGX PCK Platform CA", root, ck, rk, true, 2, NULL, 0);
    _cleanup_x509_ X509 *leaf =
        mkcert("Intel SGX PCK Certificate", ca, pk, ck, false, 0x1234, ext, ext_size);
    _cleanup_x509_ X509 *tcbs = mkcert("Intel SGX TCB Signing", root, tk, rk, false, 3, NULL, 0);
    _cleanup_free_ char *lp = pem_of(leaf), *cp = pem_of(ca), *rp = pem_of(root);
    _cleanup_free_ char *pem = xasprintf("%s%s%s", lp, cp, rp);
    size_t qn = 0;
    _cleanup_free_ uint8_t *q = with_pem(&qn, real, pem);
    /* the QE report, re-signed by our PCK (its report data still binds the real AK) */
    assert_int_equal(x509_ecdsa_sign_raw(q + OFF_QE_REPORT + 384, q + OFF_QE_REPORT + 416, 32,
                                         X509_BIG_ENDIAN, pk, "SHA256", q + OFF_QE_REPORT, 384,
                                         &err),
                     0);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_07;
    dcap_result r;
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, root, &err), 0);
    ev__dcap_result_free(&r);
    /* the pinned Intel root does not accept it */
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, NULL, &err), EV_E_CHAIN);
    err_clear(&err);

    /* a CRL of the PCK CA listing the PCK */
    X509_CRL *crl = X509_CRL_new();
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
    ASN1_TIME *t = ASN1_TIME_set(NULL, T2025_07 - 86400);
    X509_CRL_set1_lastUpdate(crl, t);
    X509_REVOKED *rv = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(rv, X509_get_serialNumber(leaf));
    X509_REVOKED_set_revocationDate(rv, t);
    X509_CRL_add0_revoked(crl, rv);
    ASN1_TIME_set(t, T2025_07 + 30 * 86400);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    assert_true(X509_CRL_sign(crl, ck, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int dn = i2d_X509_CRL(crl, &der);
    X509_CRL_free(crl);
    _cleanup_collateral_ ev_collateral *c1 = ev_collateral_new();
    assert_int_equal(ev_collateral_add(c1, "pck.crl", der, (size_t)dn, &err), 0);
    OPENSSL_free(der);
    o.collateral = c1;
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, root, &err), EV_E_REVOKED);
    assert_msg(err, "is revoked: serial 1234");
    err_clear(&err);

    /* a TCB level marked Revoked, signed by a TCB signing key of this PKI */
    size_t bn = 0;
    _cleanup_free_ uint8_t *b = read_all(TDX "v4_b0c06f_collateral.json", &bn);
    _cleanup_json_ json_t *bundle = NULL;
    assert_int_equal(js_parse_object(&bundle, b, bn, 1 << 20, "bundle", &err), 0);
    const char *ti = json_string_value(json_object_get(bundle, "tcb_info"));
    const char *qi = json_string_value(json_object_get(bundle, "qe_identity"));
    /* every UpToDate level (platform and TDX modules) becomes Revoked */
    _cleanup_free_ char *revoked = xstrdup(ti);
    for (char *hit; (hit = strstr(revoked, "\"UpToDate\"")) != NULL;) {
        char *next = xasprintf("%.*s\"Revoked\"%s", (int)(hit - revoked), revoked,
                               hit + strlen("\"UpToDate\""));
        free(revoked);
        revoked = next;
    }
    _cleanup_collateral_ ev_collateral *c2 = ev_collateral_new();
    add_pem(c2, "tcb-signing.pem", tcbs);
    add_signed(c2, "tcbInfo", revoked, tk);
    add_signed(c2, "enclaveIdentity", qi, tk);
    o.collateral = c2;
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, root, &err), EV_E_REVOKED);
    assert_msg(err, "TCB status is Revoked");
    err_clear(&err);
    /* the same documents unmodified: UpToDate */
    _cleanup_collateral_ ev_collateral *c3 = ev_collateral_new();
    add_pem(c3, "tcb-signing.pem", tcbs);
    add_signed(c3, "tcbInfo", ti, tk);
    add_signed(c3, "enclaveIdentity", qi, tk);
    o.collateral = c3;
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, root, &err), 0);
    assert_int_equal(r.tcb_status, EV_TCB_UP_TO_DATE);
    ev__dcap_result_free(&r);
    /* a TCB signing certificate of another PKI is refused */
    o.collateral = c3;
    assert_int_equal(ev__dcap_verify(&r, q, qn, DCAP_TEE_TDX, &o, sk_X509_value(chain, 2), &err),
                     EV_E_CHAIN);
}

/* Verify @q with @c at @now with and without @cache: same result, same claims, same message. */
static int verify_both(json_t **out, const char *tee, const uint8_t *q, size_t size,
                       const ev_collateral *c, time_t now, ev_chain_cache *cache)
{
    _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
    _cleanup_json_ json_t *c1 = NULL;
    json_t *c2 = NULL;
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.chain_cache = cache;
    int r1 = verify_bytes_c(&c1, tee, q, size, c, now, NULL, &e1);
    int r2 = verify_bytes_c(&c2, tee, q, size, c, now, &o, &e2);
    assert_int_equal(r1, r2);
    if (r1 < 0)
        assert_string_equal(e1->msg, e2->msg);
    else
        assert_true(json_equal(c1, c2));
    *out = c2;
    return r2;
}

/* ev_verify_opts.chain_cache: hits give the same claims; other bytes or times never hit. */
static void test_chain_cache(void **state)
{
    (void)state;
    ev_chain_cache *cache = ev_chain_cache_new(16);
    size_t n = 0;
    json_t *c = NULL;

    /* bundle with CRLs (PCK and TCB signing chains, both documents): cold then warm */
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_collateral_ ev_collateral *b = coll(g_b0c06f_coll);
    assert_int_equal(verify_both(&c, "tdx", q, n, b, T2025_07, cache), 0);
    json_decref(c);
    /* the PCK outcome (chain, SGX extension facts, key), the attestation key, the TCB signing
     * outcome, the TCB info and QE identity signatures */
    assert_int_equal(ev_chain_cache_count(cache), 5);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(verify_both(&c, "tdx", q, n, b, T2025_07, cache), 0);
        assert_string_equal(str_at(c, "tcb.status"), "UpToDate");
        json_decref(c);
    }
    assert_int_equal(ev_chain_cache_count(cache), 5); /* all hits */
    /* outside the documents' window: fails as without the cache */
    assert_true(verify_both(&c, "tdx", q, n, b, T2030, cache) < 0);

    /* PCS documents without issuer chain (built-in TCB signing certificate) */
    size_t n2 = 0;
    _cleanup_free_ uint8_t *q2 = read_all(TDX "v4_00a06d_quote.bin", &n2);
    const char *tcb = TDX "v4_00a06d_pcs_tcbinfo.json", *qe = TDX "pcs_td_qe_identity_2025-10.json";
    _cleanup_collateral_ ev_collateral *good = coll(g_00a06d_coll);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(verify_both(&c, "tdx", q2, n2, good, T2025_11, cache), 0);
        json_decref(c);
    }
    size_t warm = ev_chain_cache_count(cache);
    /* a modified TCB info / QE identity misses the cache and fails as before; what did verify
     * for these collateral bytes (PCK and TCB signing outcomes) is kept, the failed signature
     * is not */
    _cleanup_collateral_ ev_collateral *c1 =
        edited(tcb, "\"tcbEvaluationDataNumber\":17", "\"tcbEvaluationDataNumber\":18", qe);
    for (int i = 0; i < 2; i++)
        assert_int_equal(verify_both(&c, "tdx", q2, n2, c1, T2025_11, cache), EV_E_SIGNATURE);
    assert_int_equal(ev_chain_cache_count(cache), warm + 2);
    _cleanup_collateral_ ev_collateral *c4 = edited(qe, "\"isvprodid\":2", "\"isvprodid\":3", tcb);
    for (int i = 0; i < 2; i++)
        assert_int_equal(verify_both(&c, "tdx", q2, n2, c4, T2025_11, cache), EV_E_SIGNATURE);
    assert_int_equal(ev_chain_cache_count(cache), warm + 4);
    /* the good set still verifies from the cache */
    assert_int_equal(verify_both(&c, "tdx", q2, n2, good, T2025_11, cache), 0);
    json_decref(c);
    assert_int_equal(ev_chain_cache_count(cache), warm + 4);

    /* SGX */
    size_t n3 = 0;
    _cleanup_free_ uint8_t *q3 = read_all(SGX "v3_00a067_quote.bin", &n3);
    _cleanup_collateral_ ev_collateral *s = coll(g_sgx_coll);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(verify_both(&c, "sgx", q3, n3, s, T2025_07, cache), 0);
        json_decref(c);
    }
    ev_chain_cache_free(cache);
}

/*
 * Every DCAP sample of shared/testdata/evidence (the README rows, at their
 * times, with and without their collateral): the verification with a cache,
 * cold and then warm, gives the same outcome, claims and message as without.
 */
static const char *const g_20a06f_coll[] = {TDX "v4_20a06f_collateral.json", NULL};
static const char *const g_90c06f_coll[] = {TDX "v5_90c06f_outdated_collateral.json", NULL};
static const char *const g_v5_sample[] = {NULL}; /* v5_sample_coll() */

static void test_cache_every_sample(void **state)
{
    (void)state;
    static const struct {
        const char *tee, *quote;
        const char *const *coll; /* NULL: none; g_v5_sample: built by v5_sample_coll() */
        time_t at;
        int want;
    } rows[] = {
        {"tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2025_07, 0},
        {"tdx", TDX "v4_b0c06f_quote.bin", NULL, T2025_07, 0},
        {"tdx", TDX "v4_b0c06f_quote.bin", g_b0c06f_coll, T2026_03, EV_E_EXPIRED},
        {"tdx", TDX "v4_20a06f_quote.bin", g_20a06f_coll, T2025_09, 0},
        {"tdx", TDX "v5_90c06f_outdated_quote.bin", g_90c06f_coll, T2026_03, EV_E_TCB},
        {"tdx", TDX "v5_90c06f_outdated_quote.bin", NULL, T2026_03, 0},
        {"tdx", TDX "v5_90c06f_sample_quote.bin", NULL, T2026_02_03, 0},
        {"tdx", TDX "v5_90c06f_sample_quote.bin", g_v5_sample, T2026_02_20, 0},
        {"tdx", TDX "v5_90c06f_sample_quote.bin", g_v5_sample, T2026_02_03, EV_E_EXPIRED},
        {"tdx", TDX "v4_50806f_spr_e4_quote.bin", NULL, T2023_07, 0},
        {"tdx", TDX "v4_50806f_spr_e4_quote.bin", g_50806f_coll, T2023_07, EV_E_TCB},
        {"tdx", TDX "v4_50806f_spr_e4_quote.bin", NULL, T2030, EV_E_EXPIRED},
        {"tdx", TDX "v4_00a06d_quote.bin", g_00a06d_coll, T2025_11, 0},
        {"tdx", TDX "v4_00a06d_quote.bin", g_00a06d_coll, T2025_12, EV_E_EXPIRED},
        {"tdx", TDX "v4_gce_cos113_quote.bin", NULL, T2025_07, 0},
        {"tdx", TDX "tdreport_intel_sample.bin", NULL, T2025_07, EV_E_VERSION},
        {"sgx", SGX "v3_00a067_quote.bin", g_sgx_coll, T2025_07, 0},
        {"sgx", SGX "v3_occlum_quote.bin", NULL, T2025_07, 0},
    };
    ev_chain_cache *cache = ev_chain_cache_new(64);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
            print_message("  %s %s at %lld (%s)\n", rows[i].tee, rows[i].quote,
                          (long long)rows[i].at, pass ? "warm" : "cold");
            size_t n = 0;
            _cleanup_free_ uint8_t *q = read_all(rows[i].quote, &n);
            _cleanup_collateral_ ev_collateral *c = !rows[i].coll      ? NULL
                                                    : !rows[i].coll[0] ? v5_sample_coll()
                                                                       : coll(rows[i].coll);
            json_t *claims = NULL;
            assert_int_equal(verify_both(&claims, rows[i].tee, q, n, c, rows[i].at, cache),
                             rows[i].want);
            json_decref(claims);
        }
    }
    ev_chain_cache_free(cache);
}

/* A test PKI in the shape of Intel's and the b0c06f quote re-signed under it. */
typedef struct {
    EVP_PKEY *rk, *ck, *pk, *tk; /* root, PCK CA, PCK, TCB signing keys */
    X509 *root, *ca, *leaf, *tcbs;
    uint8_t *q; /* the quote with the PCK chain leaf, ca, root */
    size_t qn;
} test_pki;

static void pki_new(test_pki *t, time_t leaf_not_after)
{
    _cleanup_err_ cista_error *err = NULL;
    memset(t, 0, sizeof(*t));
    size_t n = 0;
    _cleanup_free_ uint8_t *real = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_x509_stack_ STACK_OF(X509) *chain = quote_chain(TDX "v4_b0c06f_quote.bin");
    const uint8_t *ext = NULL;
    size_t ext_size = 0;
    assert_int_equal(
        x509_ext_raw(&ext, &ext_size, sk_X509_value(chain, 0), "1.2.840.113741.1.13.1", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&t->rk, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&t->ck, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&t->pk, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&t->tk, "P-256", &err), 0);
    t->root = mkcert("Intel SGX Root CA", NULL, t->rk, t->rk, true, 1, NULL, 0);
    t->ca = mkcert("Intel SGX PCK Platform CA", t->root, t->ck, t->rk, true, 2, NULL, 0);
    t->leaf = mkcert_until("Intel SGX PCK Certificate", t->ca, t->pk, t->ck, false, 0x1234, ext,
                           ext_size, leaf_not_after);
    t->tcbs = mkcert("Intel SGX TCB Signing", t->root, t->tk, t->rk, false, 3, NULL, 0);
    _cleanup_free_ char *lp = pem_of(t->leaf), *cp = pem_of(t->ca), *rp = pem_of(t->root);
    _cleanup_free_ char *pem = xasprintf("%s%s%s", lp, cp, rp);
    t->q = with_pem(&t->qn, real, pem);
    /* the QE report, re-signed by our PCK (its report data still binds the real AK) */
    assert_int_equal(x509_ecdsa_sign_raw(t->q + OFF_QE_REPORT + 384, t->q + OFF_QE_REPORT + 416, 32,
                                         X509_BIG_ENDIAN, t->pk, "SHA256", t->q + OFF_QE_REPORT,
                                         384, &err),
                     0);
}

static void pki_free(test_pki *t)
{
    EVP_PKEY_free(t->rk);
    EVP_PKEY_free(t->ck);
    EVP_PKEY_free(t->pk);
    EVP_PKEY_free(t->tk);
    X509_free(t->root);
    X509_free(t->ca);
    X509_free(t->leaf);
    X509_free(t->tcbs);
    free(t->q);
}

/* A DER CRL by @issuer (@key) valid @from..@to listing @revoked (may be NULL). New buffer. */
static uint8_t *crl_der(size_t *out_size, X509 *issuer, EVP_PKEY *key, X509 *revoked, time_t from,
                        time_t to)
{
    X509_CRL *crl = X509_CRL_new();
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer));
    ASN1_TIME *t = ASN1_TIME_set(NULL, from);
    X509_CRL_set1_lastUpdate(crl, t);
    if (revoked) {
        X509_REVOKED *rv = X509_REVOKED_new();
        X509_REVOKED_set_serialNumber(rv, X509_get_serialNumber(revoked));
        X509_REVOKED_set_revocationDate(rv, t);
        X509_CRL_add0_revoked(crl, rv);
    }
    ASN1_TIME_set(t, to);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int dn = i2d_X509_CRL(crl, &der);
    X509_CRL_free(crl);
    assert_true(dn > 0);
    uint8_t *out = xmalloc((size_t)dn);
    memcpy(out, der, (size_t)dn);
    OPENSSL_free(der);
    *out_size = (size_t)dn;
    return out;
}

/* ev__dcap_verify() under @root with and without @cache: same code and message, same result. */
static int dcap_both(const uint8_t *q, size_t qn, const ev_collateral *c, time_t now, X509 *root,
                     ev_chain_cache *cache, cista_error **err)
{
    _cleanup_err_ cista_error *e1 = NULL;
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = now;
    o.collateral = c;
    dcap_result r1, r2;
    int c1 = ev__dcap_verify(&r1, q, qn, DCAP_TEE_TDX, &o, root, &e1);
    o.chain_cache = cache;
    int c2 = ev__dcap_verify(&r2, q, qn, DCAP_TEE_TDX, &o, root, err);
    assert_int_equal(c1, c2);
    if (c1 < 0) {
        assert_string_equal(e1->msg, (*err)->msg);
    } else {
        _cleanup_json_ json_t *s1 = ev__dcap_signers_json(&r1), *s2 = ev__dcap_signers_json(&r2);
        _cleanup_json_ json_t *t1 = ev__dcap_tcb_json(&r1), *t2 = ev__dcap_tcb_json(&r2);
        assert_true(json_equal(s1, s2));
        assert_true(json_equal(t1, t2));
        assert_string_equal(r1.pck_ca, r2.pck_ca);
    }
    ev__dcap_result_free(&r1);
    ev__dcap_result_free(&r2);
    return c2;
}

/* Different bytes never hit: another PEM encoding, other collateral, a tampered chain. */
static void test_cache_other_bytes(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    ev_chain_cache *cache = ev_chain_cache_new(32);
    size_t n = 0, tn = 0;
    json_t *c = NULL;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_collateral_ ev_collateral *b = coll(g_b0c06f_coll);
    assert_int_equal(verify_both(&c, "tdx", q, n, b, T2025_07, cache), 0);
    json_decref(c);
    size_t warm = ev_chain_cache_count(cache);

    /* the same certificates in other PEM text (a blank line between two): an outcome of its own */
    _cleanup_x509_stack_ STACK_OF(X509) *chain = quote_chain(TDX "v4_b0c06f_quote.bin");
    _cleanup_free_ char *lp = pem_of(sk_X509_value(chain, 0)),
                        *cp = pem_of(sk_X509_value(chain, 1)),
                        *rp = pem_of(sk_X509_value(chain, 2));
    _cleanup_free_ char *same = xasprintf("%s\n%s%s", lp, cp, rp);
    _cleanup_free_ uint8_t *t0 = with_pem(&tn, q, same);
    assert_int_equal(verify_both(&c, "tdx", t0, tn, b, T2025_07, cache), 0);
    json_decref(c);
    assert_int_equal(ev_chain_cache_count(cache), warm + 1);
    /* byte-identical PEM text (re-encoded as the quote has it): the same outcome */
    _cleanup_free_ char *ident = xasprintf("%s%s%s", lp, cp, rp);
    _cleanup_free_ uint8_t *t3 = with_pem(&tn, q, ident);
    assert_int_equal(verify_both(&c, "tdx", t3, tn, b, T2025_07, cache), 0);
    json_decref(c);
    assert_int_equal(ev_chain_cache_count(cache), warm + 1);

    /* a byte of the leaf's signature changed in the PEM, with every other input cached */
    _cleanup_free_ uint8_t *t1 = xmalloc(n);
    memcpy(t1, q, n);
    t1[OFF_PEM + 1000] ^= 1;
    assert_int_equal(verify_both(&c, "tdx", t1, n, b, T2025_07, cache), EV_E_CHAIN);
    /* the leaf replaced by the CA certificate, same root and collateral */
    _cleanup_free_ char *swapped = xasprintf("%s%s%s", cp, lp, rp);
    _cleanup_free_ uint8_t *t2 = with_pem(&tn, q, swapped);
    assert_int_equal(verify_both(&c, "tdx", t2, tn, b, T2025_07, cache), EV_E_CHAIN);

    /* the collateral bundle re-serialised with one more space (other bytes, same content):
     * misses the chain outcomes (verified again, kept), hits the documents' signatures */
    size_t bn = 0;
    _cleanup_free_ char *bt = (char *)read_all(TDX "v4_b0c06f_collateral.json", &bn);
    _cleanup_free_ char *spaced = xasprintf(" %.*s", (int)bn, bt);
    _cleanup_collateral_ ev_collateral *b2 = ev_collateral_new();
    assert_int_equal(ev_collateral_add(b2, "spaced.json", spaced, strlen(spaced), &err), 0);
    size_t before = ev_chain_cache_count(cache);
    assert_int_equal(verify_both(&c, "tdx", q, n, b2, T2025_07, cache), 0);
    json_decref(c);
    assert_int_equal(ev_chain_cache_count(cache), before + 2);

    /* the same bundle plus an unrelated CRL that is not current: nothing cached is used, and
     * the verification reports the same as without a cache */
    size_t dn = 0;
    _cleanup_free_ uint8_t *stale = read_all(TDX "pck_platform_ca_crl_2023-06-08.der", &dn);
    _cleanup_collateral_ ev_collateral *b3 = coll(g_b0c06f_coll);
    assert_int_equal(ev_collateral_add(b3, "stale.crl", stale, dn, &err), 0);
    int r = verify_both(&c, "tdx", q, n, b3, T2025_07, cache);
    if (r == 0)
        json_decref(c);
    ev_chain_cache_free(cache);
}

/* A CRL given later revokes a PCK whose chain verified (and was cached) before. */
static void test_cache_crl_added(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    test_pki t;
    pki_new(&t, T2030);
    ev_chain_cache *cache = ev_chain_cache_new(16);
    for (int i = 0; i < 2; i++)
        assert_int_equal(dcap_both(t.q, t.qn, NULL, T2025_07, t.root, cache, &err), 0);
    assert_true(ev_chain_cache_count(cache) > 0);

    size_t dn = 0;
    _cleanup_free_ uint8_t *der =
        crl_der(&dn, t.ca, t.ck, t.leaf, T2025_07 - 86400, T2025_07 + 30 * 86400);
    _cleanup_collateral_ ev_collateral *crl = ev_collateral_new();
    assert_int_equal(ev_collateral_add(crl, "pck.crl", der, dn, &err), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(dcap_both(t.q, t.qn, crl, T2025_07, t.root, cache, &err), EV_E_REVOKED);
        assert_msg(err, "is revoked: serial 1234");
        err_clear(&err);
    }
    /* a CRL of the same CA that lists nothing: verifies (a new outcome for these bytes) */
    _cleanup_free_ uint8_t *der2 =
        crl_der(&dn, t.ca, t.ck, NULL, T2025_07 - 86400, T2025_07 + 30 * 86400);
    _cleanup_collateral_ ev_collateral *clean = ev_collateral_new();
    assert_int_equal(ev_collateral_add(clean, "pck.crl", der2, dn, &err), 0);
    assert_int_equal(dcap_both(t.q, t.qn, clean, T2025_07, t.root, cache, &err), 0);
    /* ... and refuses once that CRL's nextUpdate has passed */
    assert_int_equal(dcap_both(t.q, t.qn, clean, T2025_07 + 30 * 86400, t.root, cache, &err),
                     EV_E_EXPIRED);
    err_clear(&err);
    /* the revoking CRL still revokes after the clean one was cached */
    assert_int_equal(dcap_both(t.q, t.qn, crl, T2025_07, t.root, cache, &err), EV_E_REVOKED);
    err_clear(&err);
    ev_chain_cache_free(cache);
    pki_free(&t);
}

/* A window that ends between two calls: the second is refused, cached or not. */
static void test_cache_window(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    const time_t end = T2025_07 + 3600; /* the PCK's notAfter */
    test_pki t;
    pki_new(&t, end);
    ev_chain_cache *cache = ev_chain_cache_new(16);
    assert_int_equal(dcap_both(t.q, t.qn, NULL, T2025_07, t.root, cache, &err), 0);
    assert_int_equal(dcap_both(t.q, t.qn, NULL, end - 1, t.root, cache, &err), 0);
    /* OpenSSL refuses a certificate at its notAfter second: so does the cache */
    assert_int_equal(dcap_both(t.q, t.qn, NULL, end, t.root, cache, &err), EV_E_EXPIRED);
    assert_msg(err, "expired");
    err_clear(&err);
    assert_int_equal(dcap_both(t.q, t.qn, NULL, end + 86400, t.root, cache, &err), EV_E_EXPIRED);
    err_clear(&err);
    /* and before the chain's notBefore */
    assert_int_equal(dcap_both(t.q, t.qn, NULL, T2020 - 1, t.root, cache, &err), EV_E_EXPIRED);
    err_clear(&err);
    assert_int_equal(dcap_both(t.q, t.qn, NULL, T2025_07, t.root, cache, &err), 0);

    /* the collateral documents' nextUpdate passes between two calls */
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_00a06d_quote.bin", &n);
    _cleanup_collateral_ ev_collateral *c = coll(g_00a06d_coll);
    json_t *claims = NULL;
    assert_int_equal(verify_both(&claims, "tdx", q, n, c, T2025_11, cache), 0);
    json_decref(claims);
    /* QE identity nextUpdate 2025-11-27T06:45:09Z, TCB info 2025-11-26T13:07:17Z */
    assert_int_equal(
        verify_both(&claims, "tdx", q, n, c, 1764162437 /* TCB info nextUpdate */, cache), 0);
    json_decref(claims);
    assert_int_equal(verify_both(&claims, "tdx", q, n, c, 1764162438, cache), EV_E_EXPIRED);
    ev_chain_cache_free(cache);
    pki_free(&t);
}

/* A collateral entry that does not read gives the same error on every use of the set. */
static void test_collateral_errors_kept(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_00a06d_quote.bin", &n);
    const char *tcb = TDX "v4_00a06d_pcs_tcbinfo.json", *qe = TDX "pcs_td_qe_identity_2025-10.json";
    _cleanup_collateral_ ev_collateral *bad =
        edited(tcb, "\"signature\":\"", "\"signature\":\"0", qe);
    _cleanup_collateral_ ev_collateral *dup =
        edited(tcb, "{\"tcbInfo\":", "{\"tcbInfo\":{},\"tcbInfo\":", qe);
    ev_chain_cache *cache = ev_chain_cache_new(16);
    for (int i = 0; i < 3; i++) {
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, bad, T2025_11, NULL, &err), EV_E_FORMAT);
        assert_msg(err, "128 hex digits");
        json_t *c = NULL;
        assert_int_equal(verify_both(&c, "tdx", q, n, dup, T2025_11, cache), EV_E_FORMAT);
    }
    /* more than 8 TCB info documents in one set: refused before the 9th is read */
    _cleanup_collateral_ ev_collateral *many = ev_collateral_new();
    for (int i = 0; i < 9; i++)
        coll_add_file(many, tcb);
    for (int i = 0; i < 2; i++) {
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(verify_bytes_c(NULL, "tdx", q, n, many, T2025_11, NULL, &err),
                         EV_E_FORMAT);
        assert_msg(err, "more than 8 TCB info documents");
    }
    ev_chain_cache_free(cache);
}

/* Threads sharing one collateral set and one cache: every verification gives the same claims. */
typedef struct {
    const ev_collateral *c;
    ev_chain_cache *cache;
    const uint8_t *q;
    size_t n;
    const json_t *want;
    int bad; /* verifications that failed or differed */
} cache_thread_arg;

static void *cache_thread(void *p)
{
    cache_thread_arg *a = p;
    for (int i = 0; i < 25; i++) {
        ev_verify_opts o;
        ev_verify_opts_init(&o);
        o.now = T2025_07;
        o.collateral = a->c;
        o.chain_cache = a->cache;
        json_t *claims = NULL;
        cista_error *err = NULL;
        if (ev_find("tdx")->verify(&claims, a->q, a->n, NULL, 0, &o, &err) < 0 ||
            !json_equal(claims, a->want))
            a->bad++;
        json_decref(claims);
        err_free(err);
    }
    return NULL;
}

static void test_cache_threads(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    _cleanup_collateral_ ev_collateral *b = coll(g_b0c06f_coll);
    _cleanup_json_ json_t *want = NULL;
    assert_int_equal(verify_bytes_c(&want, "tdx", q, n, b, T2025_07, NULL, &err), 0);
    /* a fresh collateral set: its entries are parsed by whichever thread comes first */
    _cleanup_collateral_ ev_collateral *shared = coll(g_b0c06f_coll);
    ev_chain_cache *cache = ev_chain_cache_new(2); /* small: entries are replaced under load */
    pthread_t th[4];
    cache_thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (cache_thread_arg){.c = shared, .cache = cache, .q = q, .n = n, .want = want};
        assert_int_equal(pthread_create(&th[i], NULL, cache_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].bad, 0);
    }
    ev_chain_cache_free(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tdx_b0c06f),
        cmocka_unit_test(test_tdx_20a06f),
        cmocka_unit_test(test_tdx_v5_outdated),
        cmocka_unit_test(test_tdx_v5_sample),
        cmocka_unit_test(test_tdx_50806f),
        cmocka_unit_test(test_tdx_00a06d),
        cmocka_unit_test(test_tdx_gce),
        cmocka_unit_test(test_tdreport_not_a_quote),
        cmocka_unit_test(test_sgx_00a067),
        cmocka_unit_test(test_sgx_occlum),
        cmocka_unit_test(test_tamper_fields),
        cmocka_unit_test(test_tamper_chain),
        cmocka_unit_test(test_tamper_ak_binding),
        cmocka_unit_test(test_tamper_sizes),
        cmocka_unit_test(test_collateral_checks),
        cmocka_unit_test(test_collateral_dir),
        cmocka_unit_test(test_tdx_get_configfs_mimic),
        cmocka_unit_test(test_sgx_get_gramine_mimic),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_td_quote_entry),
        cmocka_unit_test(test_revoked),
        cmocka_unit_test(test_chain_cache),
        cmocka_unit_test(test_cache_every_sample),
        cmocka_unit_test(test_cache_other_bytes),
        cmocka_unit_test(test_cache_crl_added),
        cmocka_unit_test(test_cache_window),
        cmocka_unit_test(test_collateral_errors_kept),
        cmocka_unit_test(test_cache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
