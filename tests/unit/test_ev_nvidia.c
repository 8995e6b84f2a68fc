/*
 * test_ev_nvidia.c - the NVIDIA H100 samples of
 * ../shared/testdata/evidence/nvidia-gpu verify (or fail) as the README
 * says, with its field values asserted; the three bad chains; the tamper
 * matrix (measurement, opaque data, signature), nonce binding, crossed
 * chains, truncation and padding; get() is EV_E_NOTEE.
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

#define NV "../shared/testdata/evidence/nvidia-gpu/"
#define R550 NV "h100_driver550_spdm_measurements.bin"
#define R580 NV "h100_driver580_spdm_measurements.bin"
#define C550 NV "h100_driver550_certchain.pem"
#define C580 NV "h100_driver580_certchain.pem"

#define NONCE550 "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
#define NONCE580 "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
#define FWID550                                                                                    \
    "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1" \
    "f75d"
#define FWID580                                                                                    \
    "f1ae7d0093a3f5689cced58045c9744f94eb2aa4ddca88135197fb41a7be45576c2881cf920e2cbcc090b1cb921f" \
    "7b2d"

/* Byte offsets in the 550 report (request 37 B, response header 8 B, blocks of 55 B). */
#define OFF_BLOCK2_DIGEST (37 + 8 + 55 + 4 + 3)
#define OFF_OPAQUE (37 + 8 + 3520 + 32 + 2)
#define OFF_MSRSCNT_DATA (OFF_OPAQUE + 92 + 4) /* inside the 256-byte type-12 item */
#define OFF_SIG550 4021

/*
 * Verify @rep with the chain @chain_path passed as aux (@as_aux) or as a
 * collateral file, expected report data @rd (NULL: unchecked).
 */
static int verify_bytes(json_t **out, const uint8_t *rep, size_t size, const char *chain_path,
                        bool as_aux, const uint8_t *rd)
{
    _cleanup_err_ cista_error *err = NULL;
    const char *paths[] = {chain_path, NULL};
    _cleanup_collateral_ ev_collateral *c = coll(as_aux ? NULL : paths);
    size_t chain_size = 0;
    _cleanup_free_ uint8_t *chain = as_aux ? read_all(chain_path, &chain_size) : NULL;
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.collateral = c;
    o.report_data = rd;
    json_t *claims = NULL;
    int r = ev_find("nvidia-gpu")->verify(&claims, rep, size, chain, chain_size, &o, &err);
    if (r < 0) {
        assert_non_null(err);
        print_message("    -> %d %s\n", r, err->msg);
        assert_null(claims);
    }
    if (out)
        *out = claims;
    else
        json_decref(claims);
    return r;
}

static int verify_file(json_t **out, const char *rep_path, const char *chain_path, bool as_aux,
                       const uint8_t *rd)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(rep_path, &n);
    return verify_bytes(out, rep, n, chain_path, as_aux, rd);
}

static void rd_of(uint8_t rd[EV_REPORT_DATA_SIZE], const char *nonce_hex)
{
    _cleanup_err_ cista_error *err = NULL;
    memset(rd, 0, EV_REPORT_DATA_SIZE);
    assert_int_equal(hex_decode_to(rd, 32, nonce_hex, &err), 0);
}

static void check_common(const json_t *c, const char *nonce, const char *fwid, const char *drv,
                         const char *vbios, const char *block2_prefix)
{
    assert_string_equal(str_at(c, "tee"), "nvidia-gpu");
    assert_false(bool_at(c, "insecure"));
    assert_string_equal(str_at(c, "nvidia.nonce"), nonce);
    assert_string_equal(str_at(c, "nvidia.fwid"), fwid);
    assert_string_equal(str_at(c, "platform_id"), fwid);
    assert_string_equal(str_at(c, "nvidia.driver_version"), drv);
    assert_string_equal(str_at(c, "nvidia.vbios_version"), vbios);
    assert_string_equal(str_at(c, "nvidia.chip_sku"), "882");
    assert_string_equal(str_at(c, "nvidia.project"), "1010");
    assert_string_equal(str_at(c, "nvidia.project_sku"), "0200");
    assert_int_equal(int_at(c, "nvidia.measurement_blocks"), 64);
    assert_int_equal(json_object_size(at(c, "measurements")), 64);
    assert_int_equal(strlen(str_at(c, "measurements.64")), 96);
    assert_memory_equal(str_at(c, "measurements.2"), block2_prefix, strlen(block2_prefix));
    const char *rd = str_at(c, "report_data");
    assert_memory_equal(rd, nonce, 64);
    for (size_t i = 64; i < 128; i++)
        assert_int_equal(rd[i], '0');
    assert_int_equal(json_array_size(at(c, "signers")), 5);
    assert_string_equal(str_at(c, "signers.0.role"), "device");
    assert_non_null(strstr(str_at(c, "signers.0.subject"), "GH100 A01 GSP FMC LF"));
    assert_non_null(strstr(str_at(c, "signers.2.subject"), "NVIDIA GH100 Provisioner ICA 1"));
    assert_string_equal(str_at(c, "signers.4.role"), "root");
    assert_true(bool_at(c, "signers.4.pinned"));
    assert_string_equal(str_at(c, "signers.4.sha256"),
                        "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48");
}

static void test_driver550(void **state)
{
    (void)state;
    uint8_t rd[EV_REPORT_DATA_SIZE];
    rd_of(rd, NONCE550);
    json_t *c = NULL;
    assert_int_equal(verify_file(&c, R550, C550, true, rd), 0);
    check_common(c, NONCE550, FWID550, "550.90.07", "009f009601000000", "8048dfd18fe229bf");
    json_decref(c);
    /* The same through the collateral instead of aux. */
    assert_int_equal(verify_file(&c, R550, C550, false, rd), 0);
    json_decref(c);
}

static void test_driver580(void **state)
{
    (void)state;
    uint8_t rd[EV_REPORT_DATA_SIZE];
    rd_of(rd, NONCE580);
    json_t *c = NULL;
    assert_int_equal(verify_file(&c, R580, C580, false, rd), 0);
    check_common(c, NONCE580, FWID580, "580.95.05", "007400961a000000", "b558fdac9af53b91");
    assert_string_equal(str_at(c, "nvidia.opaque.34"), "0100");
    assert_string_equal(str_at(c, "nvidia.opaque.36"), "0000");
    json_decref(c);
}

static void test_bad_chains(void **state)
{
    (void)state;
    /* Root only: chain too short. */
    assert_int_equal(verify_file(NULL, R550, NV "h100_certchain_bad_single.pem", true, NULL),
                     EV_E_NOKEY);
    /* Provisioner ICA missing: chain does not verify. */
    assert_int_equal(verify_file(NULL, R550, NV "h100_certchain_bad_broken.pem", true, NULL),
                     EV_E_CHAIN);
    /* Leaf is the BROM certificate: chain verifies, FWID extension missing. */
    assert_int_equal(verify_file(NULL, R550, NV "h100_certchain_bad_nofwid.pem", true, NULL),
                     EV_E_FORMAT);
    /* No chain at all. */
    assert_int_equal(verify_file(NULL, R550, NULL, false, NULL), EV_E_NOKEY);
}

static void test_tamper(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *orig = read_all(R550, &n);
    assert_int_equal(n, 4117);
    const size_t offs[] = {OFF_BLOCK2_DIGEST,
                           OFF_BLOCK2_DIGEST + 40,
                           OFF_MSRSCNT_DATA,
                           OFF_OPAQUE + 4 /* VBIOS */,
                           OFF_SIG550,
                           OFF_SIG550 + 60,
                           10 /* nonce */};
    for (size_t i = 0; i < ARRAY_LEN(offs); i++) {
        _cleanup_free_ uint8_t *b = xmalloc(n);
        memcpy(b, orig, n);
        b[offs[i]] ^= 0x01;
        assert_int_equal(verify_bytes(NULL, b, n, C550, true, NULL), EV_E_SIGNATURE);
    }
}

static void test_nonce(void **state)
{
    (void)state;
    uint8_t rd[EV_REPORT_DATA_SIZE];
    rd_of(rd, NONCE550);
    rd[0] ^= 0x80;
    assert_int_equal(verify_file(NULL, R550, C550, true, rd), EV_E_REPORT_DATA);
    /* Right nonce, but the second half of report data cannot be bound. */
    rd_of(rd, NONCE550);
    rd[40] = 1;
    assert_int_equal(verify_file(NULL, R550, C550, true, rd), EV_E_REPORT_DATA);
    /* The other report's nonce. */
    rd_of(rd, NONCE580);
    assert_int_equal(verify_file(NULL, R550, C550, true, rd), EV_E_REPORT_DATA);
}

static void test_crossed(void **state)
{
    (void)state;
    int r = verify_file(NULL, R550, C580, true, NULL);
    assert_true(r == EV_E_SIGNATURE || r == EV_E_PLATFORM);
    r = verify_file(NULL, R580, C550, false, NULL);
    assert_true(r == EV_E_SIGNATURE || r == EV_E_PLATFORM);
}

static void test_size(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *b = read_all(R550, &n);
    const size_t cuts[] = {0, 1, 36, 37, 100, 3000, 4000, n - 97, n - 50, n - 1};
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++)
        assert_int_equal(verify_bytes(NULL, b, cuts[i], C550, true, NULL), EV_E_SIZE);
    /* One trailing zero byte is tolerated (the 580 sample has it), two are not. */
    _cleanup_free_ uint8_t *p = xzalloc(n + 2);
    memcpy(p, b, n);
    json_t *c = NULL;
    assert_int_equal(verify_bytes(&c, p, n + 1, C550, true, NULL), 0);
    json_decref(c);
    assert_int_equal(verify_bytes(NULL, p, n + 2, C550, true, NULL), EV_E_SIZE);
    p[n] = 0x55;
    assert_int_equal(verify_bytes(NULL, p, n + 1, C550, true, NULL), EV_E_SIZE);
    /* The 580 report without its trailing byte verifies too. */
    size_t m = 0;
    _cleanup_free_ uint8_t *q = read_all(R580, &m);
    assert_int_equal(m, 4130);
    assert_int_equal(verify_bytes(&c, q, m - 1, C580, true, NULL), 0);
    json_decref(c);
}

static void test_format(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *b = read_all(R550, &n);
    /* Wrong SPDM version / code. */
    b[0] = 0x12;
    assert_int_equal(verify_bytes(NULL, b, n, C550, true, NULL), EV_E_VERSION);
    b[0] = 0x11;
    /* Block count one higher than the record holds. */
    b[37 + 4] = 65;
    assert_int_equal(verify_bytes(NULL, b, n, C550, true, NULL), EV_E_FORMAT);
    b[37 + 4] = 64;
    /* Opaque length off by one. */
    b[OFF_OPAQUE - 2] ^= 1;
    int r = verify_bytes(NULL, b, n, C550, true, NULL);
    assert_true(r == EV_E_FORMAT || r == EV_E_SIZE);
}

static void test_chain_cache(void **state)
{
    (void)state;
    size_t n = 0, cn = 0;
    _cleanup_free_ uint8_t *b = read_all(R550, &n);
    _cleanup_free_ uint8_t *chain = read_all(C550, &cn);
    ev_chain_cache *cache = ev_chain_cache_new(4);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.chain_cache = cache;
    for (int i = 0; i < 3; i++) {
        json_t *c = NULL;
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(ev_find("nvidia-gpu")->verify(&c, b, n, chain, cn, &o, &err), 0);
        assert_int_equal(json_array_size(at(c, "signers")), 5);
        json_decref(c);
        assert_int_equal(ev_chain_cache_count(cache), 1);
    }
    /* A cached chain does not excuse a modified report. */
    b[OFF_BLOCK2_DIGEST] ^= 1;
    _cleanup_err_ cista_error *err = NULL;
    json_t *c = NULL;
    assert_int_equal(ev_find("nvidia-gpu")->verify(&c, b, n, chain, cn, &o, &err), EV_E_SIGNATURE);
    b[OFF_BLOCK2_DIGEST] ^= 1;
    err_clear(&err);
    /* Outside the chain's validity the cache is bypassed and the chain check reports it. */
    o.now = (time_t)1577836800; /* 2020-01-01, before the leaf's notBefore */
    assert_int_equal(ev_find("nvidia-gpu")->verify(&c, b, n, chain, cn, &o, &err), EV_E_EXPIRED);
    ev_chain_cache_free(cache);
}

static void test_registry_get(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *b = read_all(R580, &n);
    const ev_ops *ops = ev_detect(b, n);
    assert_non_null(ops);
    assert_string_equal(ops->name, "nvidia-gpu");
    uint8_t rd[EV_REPORT_DATA_SIZE] = {0};
    uint8_t *ev = NULL, *aux = NULL;
    size_t evs = 0, auxs = 0;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ops->get(&ev, &evs, &aux, &auxs, rd, NULL, &err), EV_E_NOTEE);
    assert_null(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver550),    cmocka_unit_test(test_driver580),
        cmocka_unit_test(test_bad_chains),   cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_nonce),        cmocka_unit_test(test_crossed),
        cmocka_unit_test(test_size),         cmocka_unit_test(test_format),
        cmocka_unit_test(test_registry_get), cmocka_unit_test(test_chain_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
