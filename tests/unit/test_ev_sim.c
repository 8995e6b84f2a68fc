/*
 * test_ev_sim.c - the insecure software TEE: init, get/verify round trip,
 * measurement and host data, wrong key, tampered reports, report data
 * mismatch, and that an SNP verifier never accepts a sim report.
 */
#include <errno.h>
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

#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

typedef struct {
    char dir[64];
    char other[64];
} fixture;

static void rm_state(const char *dir)
{
    static const char *const names[] = {"platform-key.pem", "platform-pub.pem"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int setup(void **state)
{
    fixture *f = xzalloc(sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cista-sim-XXXXXX");
    snprintf(f->other, sizeof(f->other), "/tmp/cista-sim-XXXXXX");
    if (!mkdtemp(f->dir) || !mkdtemp(f->other))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rm_state(f->dir);
    rm_state(f->other);
    free(f);
    return 0;
}

static void get(uint8_t **ev, size_t *size, const char *dir, const uint8_t rd[64],
                const uint8_t *host_data, const char *config)
{
    _cleanup_err_ cista_error *err = NULL;
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = dir;
    g.host_data = host_data;
    g.sim_config = config;
    g.sim_config_size = config ? strlen(config) : 0;
    uint8_t *aux = NULL;
    size_t aux_size = 0;
    assert_int_equal(ev_find("sim")->get(ev, size, &aux, &aux_size, rd, &g, &err), 0);
    assert_null(aux);
    assert_int_equal(aux_size, 0);
}

static int verify(json_t **out, const uint8_t *ev, size_t size, const char *dir,
                  const uint8_t *want_rd, cista_error **err)
{
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    if (dir)
        assert_int_equal(ev_sim_load_public(&pub, dir, err), 0);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.sim_key = pub;
    o.report_data = want_rd;
    json_t *c = NULL;
    int r = ev_find("sim")->verify(&c, ev, size, NULL, 0, &o, err);
    if (out)
        *out = c;
    else
        json_decref(c);
    return r;
}

static void test_init(void **state)
{
    fixture *f = *state;
    _cleanup_err_ cista_error *err = NULL;
    bool created = false;
    assert_int_equal(ev_sim_init(f->dir, &created, &err), 0);
    assert_true(created);
    _cleanup_free_ char *kp = xasprintf("%s/platform-key.pem", f->dir);
    struct stat st;
    assert_int_equal(stat(kp, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    size_t n1 = 0, n2 = 0;
    _cleanup_free_ char *k1 = NULL, *k2 = NULL;
    assert_int_equal(util_read_file(&k1, &n1, kp, 1 << 16, &err), 0);
    /* a second init keeps the key */
    assert_int_equal(ev_sim_init(f->dir, &created, &err), 0);
    assert_false(created);
    assert_int_equal(util_read_file(&k2, &n2, kp, 1 << 16, &err), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(k1, k2, n1);
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    assert_int_equal(ev_sim_load_public(&pub, f->dir, &err), 0);
    assert_string_equal(crypto_key_ec_crv(pub), "P-384");

    /* a state directory without a key */
    uint8_t rd[64] = {0};
    uint8_t *ev = NULL, *aux = NULL;
    size_t es = 0, as = 0;
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = "/nonexistent/cista-sim";
    assert_true(ev_find("sim")->get(&ev, &es, &aux, &as, rd, &g, &err) < 0);
    {
        _cleanup_free_ char *full = err_str(err);
        assert_non_null(strstr(full, "cista sim init"));
    }
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev_sim_init(f->dir, NULL, &err), 0);
    uint8_t rd[64], hd[32];
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(0xa0 + i);
    crypto_hash_oneshot(CRYPTO_SHA256, "policy", 6, hd);
    _cleanup_free_ uint8_t *ev = NULL;
    size_t size = 0;
    get(&ev, &size, f->dir, rd, hd, "runtime-config-v1");
    assert_int_equal(size, 1184);
    assert_ptr_equal(ev_detect(ev, size), ev_find("sim"));
    assert_true(ev_find("sim")->insecure);

    _cleanup_json_ json_t *c = NULL;
    assert_int_equal(verify(&c, ev, size, f->dir, rd, &err), 0);
    assert_string_equal(json_string_value(json_object_get(c, "tee")), "sim");
    assert_true(json_is_true(json_object_get(c, "insecure")));
    assert_true(json_is_false(json_object_get(c, "debug")));
    _cleanup_free_ char *rdh = hex_encode(rd, 64);
    _cleanup_free_ char *hdh = hex_encode(hd, 32);
    assert_string_equal(json_string_value(json_object_get(c, "report_data")), rdh);
    assert_string_equal(json_string_value(json_object_get(c, "host_data")), hdh);
    const char *m1 =
        json_string_value(json_object_get(json_object_get(c, "measurements"), "measurement"));
    assert_int_equal(strlen(m1), 96);
    assert_int_equal(strlen(json_string_value(json_object_get(c, "platform_id"))), 128);
    assert_int_equal(json_array_size(json_object_get(c, "signers")), 1);

    /* the same binary and configuration measure the same; another configuration differs */
    _cleanup_free_ uint8_t *ev2 = NULL, *ev3 = NULL;
    get(&ev2, &size, f->dir, rd, NULL, "runtime-config-v1");
    get(&ev3, &size, f->dir, rd, NULL, "runtime-config-v2");
    assert_memory_equal(ev + 0x90, ev2 + 0x90, 48);
    assert_memory_not_equal(ev + 0x90, ev3 + 0x90, 48);
    static const uint8_t zero[32];
    assert_memory_equal(ev2 + 0xC0, zero, 32); /* no host data set: zeros */
}

/* A KBS verifies sim reports by the thousand: the INSECURE warning is said once per process. */
static void test_warns_once(void **state)
{
    fixture *f = *state;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev_sim_init(f->dir, NULL, &err), 0);
    uint8_t rd[64] = {1};
    _cleanup_free_ uint8_t *ev = NULL;
    size_t size = 0;
    get(&ev, &size, f->dir, rd, NULL, NULL);
    char *text = NULL;
    size_t text_size = 0;
    FILE *mem = open_memstream(&text, &text_size);
    assert_non_null(mem);
    log_set_stream(mem);
    for (int i = 0; i < 3; i++)
        assert_int_equal(verify(NULL, ev, size, f->dir, rd, &err), 0);
    log_set_stream(NULL);
    fclose(mem);
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, "verifying sim")) != NULL; p++)
        n++;
    free(text);
    assert_int_equal(n, 1); /* this test runs first: nothing verified before it */
}

static void test_wrong_key_and_tamper(void **state)
{
    fixture *f = *state;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev_sim_init(f->dir, NULL, &err), 0);
    assert_int_equal(ev_sim_init(f->other, NULL, &err), 0);
    uint8_t rd[64] = {1, 2, 3};
    _cleanup_free_ uint8_t *ev = NULL;
    size_t size = 0;
    get(&ev, &size, f->dir, rd, NULL, NULL);
    assert_int_equal(verify(NULL, ev, size, f->dir, rd, &err), 0);

    /* another sim platform's key */
    assert_int_equal(verify(NULL, ev, size, f->other, rd, &err), EV_E_PLATFORM);
    assert_non_null(strstr(err->msg, "another sim platform"));
    err_clear(&err);
    /* no key configured */
    assert_int_equal(verify(NULL, ev, size, NULL, rd, &err), EV_E_NOKEY);
    assert_non_null(strstr(err->msg, "--sim-key"));
    err_clear(&err);
    /* report data mismatch */
    uint8_t other_rd[64] = {1, 2, 4};
    assert_int_equal(verify(NULL, ev, size, f->dir, other_rd, &err), EV_E_REPORT_DATA);
    assert_non_null(strstr(err->msg, "expected 010204"));
    err_clear(&err);

    static const struct {
        size_t off;
        uint8_t mask;
        int code;
    } flips[] = {
        {0x000, 0x02, EV_E_VERSION},   {0x008, 0x01, EV_E_FORMAT},    {0x010, 0x01, EV_E_FORMAT},
        {0x034, 0x02, EV_E_VERSION},   {0x030, 0x01, EV_E_FORMAT},    {0x050, 0x01, EV_E_SIGNATURE},
        {0x090, 0x01, EV_E_SIGNATURE}, {0x0C0, 0x01, EV_E_SIGNATURE}, {0x180, 0x01, EV_E_FORMAT},
        {0x1A0, 0x01, EV_E_PLATFORM},  {0x2A0, 0x01, EV_E_SIGNATURE}, {0x2E8, 0x01, EV_E_SIGNATURE},
        {0x49F, 0x01, EV_E_FORMAT},
    };
    for (size_t i = 0; i < ARRAY_LEN(flips); i++) {
        ev[flips[i].off] ^= flips[i].mask;
        assert_int_equal(verify(NULL, ev, size, f->dir, NULL, &err), flips[i].code);
        err_clear(&err);
        ev[flips[i].off] ^= flips[i].mask;
    }
    assert_int_equal(verify(NULL, ev, size - 1, f->dir, NULL, &err), EV_E_SIZE);
    err_clear(&err);
    _cleanup_free_ uint8_t *pad = xzalloc(size + 8);
    memcpy(pad, ev, size);
    assert_int_equal(verify(NULL, pad, size + 8, f->dir, NULL, &err), EV_E_SIZE);
    err_clear(&err);

    /* the SNP verifier refuses a sim report outright */
    json_t *c = NULL;
    assert_int_equal(ev_find("snp")->verify(&c, ev, size, NULL, 0, NULL, &err), EV_E_VERSION);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* first: it counts the warnings of the process's first sim verifications */
        cmocka_unit_test_setup_teardown(test_warns_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_and_tamper, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
