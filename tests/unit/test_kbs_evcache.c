/*
 * test_kbs_evcache.c - the KBS's evidence verification with its one
 * long-lived ev_chain_cache and its configured collateral loaded once
 * (kbs__verify_evidence, the step /attest runs): real TDX and SGX samples
 * of shared/testdata/evidence verify twice with identical claims, the
 * second time from the cache; a tampered quote, a wrong report data and
 * collateral past its window are still refused with a warm cache, with the
 * same code and message as without one; CoCo snp evidence (certificates
 * sent by the client, merged with the configured set per request) gives the
 * claims of the old full merge. "now" is pinned: the samples' collateral
 * has expired. With CISTA_KBS_EV_BENCH=1 it also prints the CPU time of a
 * verification cold (what the KBS did before) and warm.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "test_helpers.h"

#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "kbs/kbs.h"
#include "kbs/kbs_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define EVD "../shared/testdata/evidence/"
#define TDX EVD "tdx/"
#define SGX EVD "sgx/"
#define SNP EVD "sev-snp/"
#define VC EVD "vendor-certs/"

#define T2025_07 ((time_t)1751328000) /* 2025-07-01T00:00:00Z */
#define T2025_11 ((time_t)1761955200) /* 2025-11-01T00:00:00Z */
#define T2030 ((time_t)1893456000)    /* 2030-01-01T00:00:00Z */
/* v4_00a06d_pcs_tcbinfo.json nextUpdate 2025-11-26T13:07:17Z: the last second it is valid */
#define T00A06D_LAST ((time_t)1764162437)

/* Offsets in the TDX v4 sample quotes (header 48 + TD body 584 + signature data). */
#define OFF_MRTD (48 + 136)
#define OFF_QE_REPORT 770
#define OFF_PEM 1258

static char g_tmp[64];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/test_kbs_evc.XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    cista_error *err = NULL;
    int r = util_rm_rf_at(AT_FDCWD, g_tmp, &err);
    err_free(err);
    return r < 0 ? -1 : 0;
}

/* Copy the files @paths (NULL-terminated) into the new directory g_tmp/@name; its path. */
static char *coll_dir(const char *name, const char *const *paths)
{
    char *dir = xasprintf("%s/%s", g_tmp, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t i = 0; paths[i]; i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *d = read_all(paths[i], &n);
        _cleanup_free_ char *p = xasprintf("%s/f%02zu", dir, i);
        assert_int_equal(util_write_file_atomic(AT_FDCWD, p, d, n, 0600, NULL), 0);
    }
    return dir;
}

/*
 * A KBS (kbs_shared, as `cista kbs serve` builds it) whose collateral for tdx, sgx and snp are
 * @tdx, @sgx and @snp (NULL-terminated file lists). With @cold it has no verification cache:
 * what every /attest did before the KBS kept one.
 */
static kbs_shared *kbs_with(const char *tag, const char *const *tdx, const char *const *sgx,
                            const char *const *snp, bool cold, kbs_config **out_cfg)
{
    _cleanup_free_ char *dir = xasprintf("%s/kbs-%s", g_tmp, tag);
    assert_int_equal(kbs_init_dir(dir, NULL), 0);
    _cleanup_free_ char *tag_tdx = xasprintf("%s-tdx", tag), *tag_sgx = xasprintf("%s-sgx", tag),
                        *tag_snp = xasprintf("%s-snp", tag);
    _cleanup_free_ char *dt = coll_dir(tag_tdx, tdx), *ds = coll_dir(tag_sgx, sgx),
                        *dn = coll_dir(tag_snp, snp);
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_free_ char *cfgt =
        xasprintf("{\"signing_key\":\"kbs-signing-key.pem\",\"master_key\":\"master.key\","
                  "\"store\":{\"type\":\"sqlite\",\"path\":\"kbs.db\"},"
                  "\"collateral\":{\"tdx\":\"%s\",\"sgx\":\"%s\",\"snp\":\"%s\"}}",
                  dt, ds, dn);
    assert_int_equal(util_write_file_atomic(AT_FDCWD, cfgp, cfgt, strlen(cfgt), 0600, NULL), 0);
    assert_int_equal(kbs_config_load(out_cfg, cfgp, NULL), 0);
    kbs_shared *sh = NULL;
    assert_int_equal(kbs__shared_new(&sh, *out_cfg, NULL), 0);
    assert_non_null(sh->ev_cache);
    if (cold) {
        ev_chain_cache_free(sh->ev_cache);
        sh->ev_cache = NULL;
    }
    return sh;
}

static void kbs_done(kbs_shared *sh, kbs_config *cfg)
{
    kbs__shared_free(sh);
    kbs_config_free(cfg);
}

/* An /attest request's evidence part: @tee evidence @ev (copied), client certificates @certs. */
static void req_init(kbs_attest_req *a, const char *tee, const uint8_t *ev, size_t n,
                     const char *const *certs)
{
    memset(a, 0, sizeof(*a));
    a->ev_tee = xstrdup(tee);
    a->evidence = xmalloc(n);
    memcpy(a->evidence, ev, n);
    a->evidence_size = n;
    if (certs)
        a->certs = coll(certs);
}

/* The SHA-256 of the claims' JCS: what the audit log records for the attestation. */
static void claims_digest(uint8_t out[32], const json_t *claims)
{
    _cleanup_free_ char *jcs = NULL;
    assert_int_equal(kbs_jcs(&jcs, claims, NULL), 0);
    crypto_hash_oneshot(CRYPTO_SHA256, jcs, strlen(jcs), out);
}

/* The 64 report-data bytes the claims show (what the session binding must equal). */
static void report_data_of(uint8_t out[64], const json_t *claims)
{
    const char *h = str_at(claims, "report_data");
    _cleanup_free_ uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(hex_decode(&d, &n, h, strlen(h), NULL), 0);
    assert_int_equal(n, 64);
    memcpy(out, d, 64);
}

/*
 * @a verified at @now by the warm KBS @hot and the cache-less @cold: the same code, and the same
 * claims (compared as JSON and as the audited digest) or the same message. *out gets @hot's
 * claims (may be NULL).
 */
static int verify_both(json_t **out, kbs_shared *hot, kbs_shared *cold, const kbs_attest_req *a,
                       const uint8_t *rd, time_t now)
{
    _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
    _cleanup_json_ json_t *c1 = NULL;
    json_t *c2 = NULL;
    int r1 = kbs__verify_evidence(&c1, cold, a, rd, now, &e1);
    int r2 = kbs__verify_evidence(&c2, hot, a, rd, now, &e2);
    assert_int_equal(r1, r2);
    if (r1 < 0) {
        assert_string_equal(e1->msg, e2->msg);
    } else {
        assert_true(json_equal(c1, c2));
        uint8_t d1[32], d2[32];
        claims_digest(d1, c1);
        claims_digest(d2, c2);
        assert_memory_equal(d1, d2, 32);
    }
    if (out)
        *out = c2;
    else
        json_decref(c2);
    return r2;
}

static const char *const g_tdx_b0c06f[] = {TDX "v4_b0c06f_collateral.json", NULL};
static const char *const g_sgx_00a067[] = {SGX "v3_00a067_collateral.json", NULL};
static const char *const g_snp_milan[] = {VC "amd_milan_ask.pem", VC "amd_milan_ark.pem", NULL};
static const char *const g_none[] = {NULL};

/* TDX and SGX samples: the second /attest is served from the cache, with identical claims. */
static void test_dcap_warm(void **state)
{
    (void)state;
    kbs_config *hc = NULL, *cc = NULL;
    kbs_shared *hot = kbs_with("hot", g_tdx_b0c06f, g_sgx_00a067, g_snp_milan, false, &hc);
    kbs_shared *cold = kbs_with("cold", g_tdx_b0c06f, g_sgx_00a067, g_snp_milan, true, &cc);
    static const struct {
        const char *tee, *quote, *status;
    } rows[] = {{"tdx", TDX "v4_b0c06f_quote.bin", "UpToDate"},
                {"sgx", SGX "v3_00a067_quote.bin", "ConfigurationAndSWHardeningNeeded"}};
    size_t entries = 0;
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *q = read_all(rows[i].quote, &n);
        kbs_attest_req a;
        req_init(&a, rows[i].tee, q, n, NULL);
        /* first without the binding, to learn it; then bound as /attest does */
        json_t *c0 = NULL;
        assert_int_equal(verify_both(&c0, hot, cold, &a, NULL, T2025_07), 0);
        uint8_t rd[64];
        report_data_of(rd, c0);
        size_t after_first = ev_chain_cache_count(hot->ev_cache);
        /* a DCAP verification with collateral keeps 5 outcomes (docs/evidence.md) */
        assert_int_equal(after_first, entries + 5);
        entries = after_first;
        for (int k = 0; k < 2; k++) {
            json_t *c = NULL;
            assert_int_equal(verify_both(&c, hot, cold, &a, rd, T2025_07), 0);
            assert_true(json_equal(c, c0));
            assert_string_equal(str_at(c, "tee"), rows[i].tee);
            assert_string_equal(str_at(c, "tcb.status"), rows[i].status);
            assert_true(bool_at(c, "tcb.collateral"));
            json_decref(c);
        }
        assert_int_equal(ev_chain_cache_count(hot->ev_cache), entries); /* all hits */
        /* warm, but another session's binding: refused as without the cache */
        uint8_t other[64];
        memcpy(other, rd, 64);
        other[0] ^= 1;
        assert_int_equal(verify_both(NULL, hot, cold, &a, other, T2025_07), EV_E_REPORT_DATA);
        json_decref(c0);
        kbs_attest_req_clear(&a);
    }
    assert_null(cold->ev_cache);
    kbs_done(hot, hc);
    kbs_done(cold, cc);
}

/* A warm cache does not let a modified quote through: each tamper fails as without it. */
static void test_dcap_tampered_after_warm(void **state)
{
    (void)state;
    kbs_config *hc = NULL, *cc = NULL;
    kbs_shared *hot = kbs_with("hot", g_tdx_b0c06f, g_none, g_none, false, &hc);
    kbs_shared *cold = kbs_with("cold", g_tdx_b0c06f, g_none, g_none, true, &cc);
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_b0c06f_quote.bin", &n);
    kbs_attest_req a;
    req_init(&a, "tdx", q, n, NULL);
    for (int k = 0; k < 2; k++)
        assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T2025_07), 0);
    size_t warm = ev_chain_cache_count(hot->ev_cache);
    static const struct {
        size_t off;
        int code;
    } flips[] = {
        {OFF_MRTD, EV_E_SIGNATURE},           /* the TD's measurement: quote signature */
        {OFF_QE_REPORT + 64, EV_E_SIGNATURE}, /* QE report: its PCK signature */
        {OFF_PEM + 1000, EV_E_CHAIN},         /* the PCK certificate's signature in the PEM */
    };
    for (size_t i = 0; i < ARRAY_LEN(flips); i++) {
        a.evidence[flips[i].off] ^= 0x01;
        for (int k = 0; k < 2; k++)
            assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T2025_07), flips[i].code);
        a.evidence[flips[i].off] ^= 0x01;
    }
    /* failures are not kept; the untouched quote still verifies from the cache */
    assert_int_equal(ev_chain_cache_count(hot->ev_cache), warm);
    assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T2025_07), 0);
    assert_int_equal(ev_chain_cache_count(hot->ev_cache), warm);
    kbs_attest_req_clear(&a);
    kbs_done(hot, hc);
    kbs_done(cold, cc);
}

/* Collateral past its window is refused although its outcomes are cached. */
static void test_dcap_expired_when_cached(void **state)
{
    (void)state;
    static const char *const tdx[] = {TDX "v4_00a06d_pcs_tcbinfo.json",
                                      TDX "pcs_td_qe_identity_2025-10.json", NULL};
    kbs_config *hc = NULL, *cc = NULL;
    kbs_shared *hot = kbs_with("hot", tdx, g_none, g_none, false, &hc);
    kbs_shared *cold = kbs_with("cold", tdx, g_none, g_none, true, &cc);
    size_t n = 0;
    _cleanup_free_ uint8_t *q = read_all(TDX "v4_00a06d_quote.bin", &n);
    kbs_attest_req a;
    req_init(&a, "tdx", q, n, NULL);
    json_t *c = NULL;
    assert_int_equal(verify_both(&c, hot, cold, &a, NULL, T2025_11), 0);
    assert_string_equal(str_at(c, "tcb.status"), "OutOfDate");
    json_decref(c);
    size_t warm = ev_chain_cache_count(hot->ev_cache);
    assert_true(warm > 0);
    /* the TCB info's last valid second, warm; one second later refused, cached or not */
    assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T00A06D_LAST), 0);
    assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T00A06D_LAST + 1), EV_E_EXPIRED);
    assert_int_equal(verify_both(NULL, hot, cold, &a, NULL, T2030), EV_E_EXPIRED);
    /* and the b0c06f bundle (PCK and root CRLs) long after its CRLs' nextUpdate */
    kbs_attest_req b;
    size_t bn = 0;
    _cleanup_free_ uint8_t *bq = read_all(TDX "v4_b0c06f_quote.bin", &bn);
    kbs_config *hc2 = NULL, *cc2 = NULL;
    kbs_shared *hot2 = kbs_with("hot2", g_tdx_b0c06f, g_none, g_none, false, &hc2);
    kbs_shared *cold2 = kbs_with("cold2", g_tdx_b0c06f, g_none, g_none, true, &cc2);
    req_init(&b, "tdx", bq, bn, NULL);
    assert_int_equal(verify_both(NULL, hot2, cold2, &b, NULL, T2025_07), 0);
    assert_true(verify_both(NULL, hot2, cold2, &b, NULL, T2030) < 0);
    /* the current time (0): every sample's collateral has expired since */
    assert_true(verify_both(NULL, hot2, cold2, &b, NULL, 0) < 0);
    assert_int_equal(verify_both(NULL, hot2, cold2, &b, NULL, T2025_07), 0);
    kbs_attest_req_clear(&b);
    kbs_done(hot2, hc2);
    kbs_done(cold2, cc2);
    kbs_attest_req_clear(&a);
    kbs_done(hot, hc);
    kbs_done(cold, cc);
}

/*
 * CoCo snp evidence brings its VCEK: the KBS merges it with its configured collateral per
 * request. The claims equal those of the merge the KBS did before (every entry re-added, so
 * re-parsed) without a cache, and the second request takes the VCEK chain from the cache.
 */
static void test_snp_merged(void **state)
{
    (void)state;
    kbs_config *hc = NULL;
    kbs_shared *hot = kbs_with("hot", g_none, g_none, g_snp_milan, false, &hc);
    static const char *const vcek[] = {SNP "milan_v2_virtee_vcek.der", NULL};
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v2_virtee_report.bin", &n);
    kbs_attest_req a;
    req_init(&a, "snp", rep, n, vcek);
    /* the old merge: client certificates then the configured set, each parsed again */
    _cleanup_collateral_ ev_collateral *old = coll(vcek);
    for (size_t i = 0; g_snp_milan[i]; i++)
        coll_add_file(old, g_snp_milan[i]);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_07;
    o.collateral = old;
    _cleanup_json_ json_t *want = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev_find("snp")->verify(&want, rep, n, NULL, 0, &o, &err), 0);
    uint8_t rd[64];
    report_data_of(rd, want);
    for (int k = 0; k < 3; k++) {
        _cleanup_json_ json_t *c = NULL;
        assert_int_equal(kbs__verify_evidence(&c, hot, &a, rd, T2025_07, &err), 0);
        assert_true(json_equal(c, want));
        assert_int_equal(ev_chain_cache_count(hot->ev_cache), 1);
    }
    /* a VCEK with a broken signature is still refused with the good chain cached */
    kbs_attest_req bad;
    static const char *const badc[] = {SNP "milan_vcek_badsig_legacy.der", NULL};
    req_init(&bad, "snp", rep, n, badc);
    assert_true(kbs__verify_evidence(&want, hot, &bad, rd, T2025_07, &err) < 0);
    err_clear(&err);
    kbs_attest_req_clear(&bad);
    kbs_attest_req_clear(&a);
    kbs_done(hot, hc);
}

/* ev_collateral_add_from: the copy verifies like the original, and the size bound still holds. */
static void test_collateral_add_from(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_collateral_ ev_collateral *src = coll(g_snp_milan);
    _cleanup_collateral_ ev_collateral *dst = ev_collateral_new();
    for (size_t i = 0; i < ev_collateral_count(src); i++)
        assert_int_equal(ev_collateral_add_from(dst, src, i, &err), 0);
    assert_int_equal(ev_collateral_count(dst), ev_collateral_count(src));
    for (size_t i = 0; i < ev_collateral_count(src); i++) {
        const char *n1, *n2;
        const uint8_t *d1, *d2;
        size_t s1, s2;
        ev_collateral_get(src, i, &n1, &d1, &s1);
        ev_collateral_get(dst, i, &n2, &d2, &s2);
        assert_string_equal(n1, n2);
        assert_int_equal(s1, s2);
        assert_memory_equal(d1, d2, s1);
        assert_ptr_not_equal(d1, d2);
        /* the same parsed certificates, shared */
        assert_int_equal(sk_X509_num(ev__collateral_certs(dst, i)),
                         sk_X509_num(ev__collateral_certs(src, i)));
        assert_ptr_equal(sk_X509_value(ev__collateral_certs(dst, i), 0),
                         sk_X509_value(ev__collateral_certs(src, i), 0));
    }
    assert_int_equal(ev_collateral_add_from(dst, src, 99, &err), -EINVAL);
    err_clear(&err);
    while (ev_collateral_count(dst) < EV_MAX_COLLATERAL)
        assert_int_equal(ev_collateral_add_from(dst, src, 0, &err), 0);
    assert_int_equal(ev_collateral_add_from(dst, src, 0, &err), -E2BIG);
    /* the copy outlives its source */
    ev_collateral_free(steal_ptr(&src));
    assert_non_null(ev__collateral_certs(dst, 0));
}

/* ---- CISTA_KBS_EV_BENCH=1: CPU per verification, cold vs warm ---- */

static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static double bench_one(kbs_shared *sh, const kbs_attest_req *a, time_t now, int iters)
{
    _cleanup_err_ cista_error *err = NULL;
    json_t *c = NULL;
    assert_int_equal(kbs__verify_evidence(&c, sh, a, NULL, now, &err), 0); /* warm-up */
    json_decref(c);
    double t0 = cpu_us();
    for (int i = 0; i < iters; i++) {
        assert_int_equal(kbs__verify_evidence(&c, sh, a, NULL, now, &err), 0);
        json_decref(c);
    }
    return (cpu_us() - t0) / iters;
}

static void test_bench(void **state)
{
    (void)state;
    const char *env = getenv("CISTA_KBS_EV_BENCH");
    if (!env || strcmp(env, "1") != 0)
        skip();
    int iters = 400;
    kbs_config *hc = NULL, *cc = NULL;
    kbs_shared *hot = kbs_with("hot", g_tdx_b0c06f, g_sgx_00a067, g_snp_milan, false, &hc);
    kbs_shared *cold = kbs_with("cold", g_tdx_b0c06f, g_sgx_00a067, g_snp_milan, true, &cc);
    static const char *const vcek[] = {SNP "milan_v2_virtee_vcek.der", NULL};
    static const struct {
        const char *tee, *ev;
        const char *const *certs;
    } rows[] = {{"tdx", TDX "v4_b0c06f_quote.bin", NULL},
                {"sgx", SGX "v3_00a067_quote.bin", NULL},
                {"snp", SNP "milan_v2_virtee_report.bin", vcek}};
    print_message("kbs__verify_evidence CPU µs per call (%d calls):\n", iters);
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        size_t n = 0;
        _cleanup_free_ uint8_t *ev = read_all(rows[i].ev, &n);
        kbs_attest_req a;
        req_init(&a, rows[i].tee, ev, n, rows[i].certs);
        double tc = bench_one(cold, &a, T2025_07, iters);
        double tw = bench_one(hot, &a, T2025_07, iters);
        print_message("  %-4s cold (no cache) %8.1f  warm %8.1f  (%.1fx)\n", rows[i].tee, tc, tw,
                      tc / tw);
        kbs_attest_req_clear(&a);
    }
    /*
     * The same warm TDX call with the cache full of other platforms' PCK outcomes: keys of the
     * PCK key's size and layout (docs/evidence.md: "dcap/pck", root, every collateral entry, the
     * quote's PEM) whose PEM differs 100 bytes in, so each is compared, not skipped by size.
     */
    {
        size_t n = 0, rn = 0, bn = 0;
        _cleanup_free_ uint8_t *ev = read_all(TDX "v4_b0c06f_quote.bin", &n);
        _cleanup_free_ uint8_t *root = read_all(VC "intel_sgx_root_ca.der", &rn);
        _cleanup_free_ uint8_t *bundle = read_all(TDX "v4_b0c06f_collateral.json", &bn);
        uint8_t root_fp[32], coll_fp[32];
        crypto_hash_oneshot(CRYPTO_SHA256, root, rn, root_fp);
        crypto_hash_oneshot(CRYPTO_SHA256, bundle, bn, coll_fp);
        size_t pem_size = ev__le32(ev + OFF_PEM - 4);
        _cleanup_free_ uint8_t *pem = xmalloc(pem_size);
        memcpy(pem, ev + OFF_PEM, pem_size);
        ev__key_part kp[4] = {{"dcap/pck", 9}, {root_fp, 32}, {coll_fp, 32}, {pem, pem_size}};
        ev__cache_val v = {.not_before = INT64_MIN, .not_after = INT64_MAX};
        /* the layout is right when putting the real key replaces the real entry */
        size_t before = ev_chain_cache_count(hot->ev_cache);
        ev__cache_put(hot->ev_cache, kp, 4, &v);
        assert_int_equal(ev_chain_cache_count(hot->ev_cache), before);
        /* a new KBS: the fillers take the first slots, so each lookup scans them all */
        kbs_config *fc = NULL;
        kbs_shared *full = kbs_with("full", g_tdx_b0c06f, g_none, g_none, false, &fc);
        for (size_t k = 0; ev_chain_cache_count(full->ev_cache) < KBS_EV_CACHE_ENTRIES - 8; k++) {
            memcpy(pem + 100, &k, sizeof(k));
            ev__cache_put(full->ev_cache, kp, 4, &v);
        }
        kbs_attest_req a;
        req_init(&a, "tdx", ev, n, NULL);
        double tw = bench_one(full, &a, T2025_07, iters);
        print_message("  tdx  warm, real entries behind %d same-size PCK keys %8.1f\n",
                      KBS_EV_CACHE_ENTRIES - 8, tw);
        assert_int_equal(ev_chain_cache_count(full->ev_cache), KBS_EV_CACHE_ENTRIES - 8 + 5);
        kbs_attest_req_clear(&a);
        kbs_done(full, fc);
    }
    /* snp as the KBS did it before: every configured entry re-added (parsed) per request */
    {
        size_t n = 0;
        _cleanup_free_ uint8_t *ev = read_all(SNP "milan_v2_virtee_report.bin", &n);
        _cleanup_collateral_ ev_collateral *client = coll(vcek);
        _cleanup_collateral_ ev_collateral *base = coll(g_snp_milan);
        double t0 = cpu_us();
        for (int i = 0; i < iters; i++) {
            _cleanup_collateral_ ev_collateral *m = ev_collateral_new();
            for (int pass = 0; pass < 2; pass++) {
                const ev_collateral *src = pass ? base : client;
                for (size_t k = 0; k < ev_collateral_count(src); k++) {
                    const char *name;
                    const uint8_t *d;
                    size_t dn;
                    ev_collateral_get(src, k, &name, &d, &dn);
                    assert_int_equal(ev_collateral_add(m, name, d, dn, NULL), 0);
                }
            }
            ev_verify_opts o;
            ev_verify_opts_init(&o);
            o.now = T2025_07;
            o.collateral = m;
            json_t *c = NULL;
            assert_int_equal(ev_find("snp")->verify(&c, ev, n, NULL, 0, &o, NULL), 0);
            json_decref(c);
        }
        print_message("  snp  before (full re-merge, no cache) %8.1f\n", (cpu_us() - t0) / iters);
    }
    kbs_done(hot, hc);
    kbs_done(cold, cc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dcap_warm, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_dcap_tampered_after_warm, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_dcap_expired_when_cached, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_snp_merged, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_collateral_add_from),
        cmocka_unit_test_setup_teardown(test_bench, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
