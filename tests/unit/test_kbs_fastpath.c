/*
 * test_kbs_fastpath.c - the KBS's per-round-trip shortcuts, each against the
 * slow path it replaces: partial EC public-key validation on import
 * (jwk_to_key_partial, differential against jwk_to_key), EC key generation
 * from a shared per-curve parameters key, ECDH without
 * re-validating a validated peer, the sim platform-id cache, the token
 * header computed once, session-bound tokens (no signature check only for
 * the exact token an in-memory session holds), the session table's
 * incremental sweep of expired sessions, prepared statements kept per
 * SQLite connection (no read transaction left open), the server's shared
 * request-handler pool under concurrent RCAR clients, algorithms fetched once
 * per process (first use racing from many threads), EC JWK coordinates
 * from the encoded point, prepared ES256 / JWS signers shared by threads, and
 * release policies and reference values parsed once per text. With
 * CISTA_KBS_HOT_BENCH=1 it also prints the CPU time per call of the round
 * trip's non-verify steps beside the slower forms they replace, and of
 * POST /kbs/v0/attest and its parts.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "crypto/crypto.h"
#include "crypto/crypto_int.h"
#include "crypto/jose.h"
#include "crypto/jws.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "kbs/client.h"
#include "kbs/kbs.h"
#include "kbs/kbs_int.h"
#include "kbs/store.h"
#include "policy/appraisal.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static char g_tmp[64];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/test_kbs_fast.XXXXXX");
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

/* ---- JWK import with partial validation ---- */

/* Flip bit @bit of base64url member @m of @jwk (a copy). */
static json_t *mutate(const json_t *jwk, const char *m, unsigned bit)
{
    json_t *c = json_deep_copy(jwk);
    uint8_t *raw = NULL;
    size_t n = 0;
    const char *v = json_string_value(json_object_get(c, m));
    assert_int_equal(b64url_decode(&raw, &n, v, strlen(v), NULL), 0);
    raw[(bit / 8) % n] ^= (uint8_t)(1u << (bit % 8));
    _cleanup_free_ char *enc = b64url_encode(raw, n);
    free(raw);
    json_object_set_new(c, m, json_string(enc));
    return c;
}

static void test_jwk_partial(void **state)
{
    (void)state;
    static const char *const crvs[] = {"P-256", "P-384", "P-521"};
    for (size_t i = 0; i < 3; i++) {
        _cleanup_pkey_ EVP_PKEY *k = NULL, *a = NULL, *b = NULL;
        assert_int_equal(crypto_key_generate_ec(&k, crvs[i], NULL), 0);
        _cleanup_json_ json_t *jwk = NULL;
        assert_int_equal(jwk_from_key(&jwk, k, false, NULL), 0);
        assert_int_equal(jwk_to_key_partial(&a, jwk, NULL), 0);
        assert_true(crypto_key_public_eq(a, k));
        /* Differential: every single-bit change of x or y is accepted by both or neither. */
        for (unsigned bit = 0; bit < 160; bit += 3) {
            for (int m = 0; m < 2; m++) {
                _cleanup_json_ json_t *bad = mutate(jwk, m ? "y" : "x", bit * 7 + (unsigned)m);
                EVP_PKEY *p1 = NULL, *p2 = NULL;
                _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
                int r1 = jwk_to_key(&p1, bad, &e1), r2 = jwk_to_key_partial(&p2, bad, &e2);
                assert_int_equal(r1, r2);
                if (r1 == 0)
                    assert_true(crypto_key_public_eq(p1, p2));
                EVP_PKEY_free(p1);
                EVP_PKEY_free(p2);
            }
        }
        /* Off the curve (y + 1 is never also a point for the same x unless y = -y - 1). */
        _cleanup_json_ json_t *off = mutate(jwk, "y", 0);
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(jwk_to_key_partial(&b, off, &e), -EINVAL);
        assert_null(b);
        assert_non_null(strstr(e->msg, "not a point on"));
        /*
         * The point at infinity has no affine coordinates: a JWK can only spell it (0, 0), as
         * some libraries do, which is on none of these curves (b != 0). A short coordinate is
         * refused before import.
         */
        _cleanup_json_ json_t *zero = json_deep_copy(jwk);
        size_t fs = i == 0 ? 32 : i == 1 ? 48 : 66;
        uint8_t z[66] = {0};
        _cleanup_free_ char *zs = b64url_encode(z, fs), *shorts = b64url_encode(z, fs - 1);
        json_object_set_new(zero, "x", json_string(zs));
        json_object_set_new(zero, "y", json_string(zs));
        _cleanup_err_ cista_error *e2 = NULL, *e3 = NULL, *e5 = NULL;
        assert_int_equal(jwk_to_key_partial(&b, zero, &e2), -EINVAL);
        assert_null(b);
        assert_int_equal(jwk_to_key(&b, zero, &e5), -EINVAL);
        json_object_set_new(zero, "x", json_string(shorts));
        assert_int_equal(jwk_to_key_partial(&b, zero, &e3), -EINVAL);
        /*
         * Out of range: y + p names the same point mod p, and OpenSSL reduces coordinates mod p
         * when it sets them, so only the range check refuses it. It fits the field size on P-521
         * (p = 2^521 - 1 in 66 bytes); on P-256 and P-384 it almost never does.
         */
        BIGNUM *p = NULL, *yb = NULL;
        uint8_t yraw[66];
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_P, &p), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &yb), 1);
        assert_int_equal(BN_add(yb, yb, p), 1);
        if (BN_num_bytes(yb) <= (int)fs) {
            assert_int_equal(BN_bn2binpad(yb, yraw, (int)fs), (int)fs);
            _cleanup_json_ json_t *wide = json_deep_copy(jwk);
            _cleanup_free_ char *ys = b64url_encode(yraw, fs);
            json_object_set_new(wide, "y", json_string(ys));
            _cleanup_err_ cista_error *e6 = NULL, *e7 = NULL;
            assert_int_equal(jwk_to_key_partial(&b, wide, &e6), -EINVAL);
            assert_null(b);
            assert_int_equal(jwk_to_key(&b, wide, &e7), -EINVAL);
        } else {
            assert_int_not_equal(i, 2); /* always tested on P-521 */
        }
        BN_free(p);
        BN_free(yb);
    }
    /* Private EC and RSA JWKs take the jwk_to_key() path. */
    _cleanup_pkey_ EVP_PKEY *ec = NULL, *rsa = NULL, *x = NULL, *y = NULL;
    assert_int_equal(crypto_key_generate_ec(&ec, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_rsa(&rsa, 2048, NULL), 0);
    _cleanup_json_ json_t *jp = NULL, *jr = NULL;
    assert_int_equal(jwk_from_key(&jp, ec, true, NULL), 0);
    assert_int_equal(jwk_from_key(&jr, rsa, false, NULL), 0);
    assert_int_equal(jwk_to_key_partial(&x, jp, NULL), 0);
    assert_int_equal(jwk_to_key_partial(&y, jr, NULL), 0);
    assert_true(crypto_key_public_eq(x, ec) && crypto_key_public_eq(y, rsa));
    _cleanup_err_ cista_error *e4 = NULL;
    EVP_PKEY *none = NULL;
    assert_int_equal(jwk_to_key_partial(&none, json_object_get(jp, "nope"), &e4), -EINVAL);
}

/* Keys generated from the per-curve parameters key are ordinary keys of that curve. */
static void test_keygen_params(void **state)
{
    (void)state;
    static const char *const crvs[] = {"P-256", "P-384", "P-521"};
    for (size_t i = 0; i < 3; i++) {
        _cleanup_pkey_ EVP_PKEY *a = NULL, *b = NULL, *back = NULL;
        assert_int_equal(crypto_key_generate_ec(&a, crvs[i], NULL), 0);
        assert_int_equal(crypto_key_generate_ec(&b, crvs[i], NULL), 0);
        assert_string_equal(crypto_key_ec_crv(a), crvs[i]);
        assert_false(crypto_key_public_eq(a, b));
        /* private PEM round trip, and ECDH agrees both ways */
        _cleanup_free_ char *pem = crypto_key_to_pem(a, true);
        assert_int_equal(crypto_key_load(&back, pem, strlen(pem), true, NULL), 0);
        assert_true(crypto_key_public_eq(a, back));
        uint8_t *z1 = NULL, *z2 = NULL;
        size_t n1 = 0, n2 = 0;
        assert_int_equal(crypto_ecdh(&z1, &n1, a, b, NULL), 0);
        assert_int_equal(crypto_ecdh(&z2, &n2, b, back, NULL), 0);
        assert_int_equal(n1, n2);
        assert_memory_equal(z1, z2, n1);
        crypto_free_secret(z1, n1);
        crypto_free_secret(z2, n2);
        crypto_free_secret(pem, strlen(pem));
        pem = NULL;
    }
    _cleanup_err_ cista_error *e = NULL;
    EVP_PKEY *none = NULL;
    assert_int_equal(crypto_key_generate_ec(&none, "P-224", &e), -EINVAL);
}

static void test_ecdh_unchecked_peer(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *a = NULL, *b = NULL;
    assert_int_equal(crypto_key_generate_ec(&a, "P-384", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&b, "P-384", NULL), 0);
    uint8_t *z1 = NULL, *z2 = NULL;
    size_t n1 = 0, n2 = 0;
    assert_int_equal(crypto_ecdh(&z1, &n1, a, b, NULL), 0);
    assert_int_equal(crypto_ecdh_ex(&z2, &n2, a, b, false, NULL), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(z1, z2, n1);
    crypto_free_secret(z1, n1);
    crypto_free_secret(z2, n2);
    /* A JWE to a key marked as checked decrypts like any other. */
    _cleanup_json_ json_t *jwk = NULL;
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    assert_int_equal(jwk_from_key(&jwk, b, false, NULL), 0);
    assert_int_equal(jwk_to_key_partial(&pub, jwk, NULL), 0);
    jwe_key enc = {.pkey = pub, .pkey_checked = true}, dec = {.pkey = b};
    _cleanup_free_ char *jwe = NULL;
    assert_int_equal(jwe_encrypt(&jwe, "secret", 6, &enc, 1, NULL, JWE_FLATTENED, NULL), 0);
    uint8_t *pt = NULL;
    size_t ptn = 0;
    assert_int_equal(jwe_decrypt(&pt, &ptn, jwe, strlen(jwe), &dec, 1, NULL, NULL), 0);
    assert_int_equal(ptn, 6);
    assert_memory_equal(pt, "secret", 6);
    crypto_free_secret(pt, ptn);
}

/* ---- sim platform-id cache ---- */

#define NPLAT 11 /* more platforms than the cache has slots */

typedef struct {
    char dir[128];
    EVP_PKEY *pub;
    uint8_t *rep;
    size_t rep_size;
} plat;

static int sim_verify_with(const plat *p, EVP_PKEY *key, json_t **claims)
{
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.sim_key = key;
    uint8_t rd[64] = {0};
    o.report_data = rd;
    cista_error *err = NULL;
    json_t *c = NULL;
    int r = ev_find("sim")->verify(&c, p->rep, p->rep_size, NULL, 0, &o, &err);
    err_free(err);
    if (claims)
        *claims = c;
    else
        json_decref(c);
    return r;
}

/* SHA-512 of the key's SPKI DER, hex: the platform id the uncached code computes. */
static char *spki_pid(EVP_PKEY *k)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    assert_true(n > 0);
    uint8_t d[64];
    crypto_hash_oneshot(CRYPTO_SHA512, der, (size_t)n, d);
    OPENSSL_free(der);
    return hex_encode(d, sizeof(d));
}

typedef struct {
    plat *p;
    int rounds, failures;
} pid_race;

static void *pid_racer(void *arg)
{
    pid_race *pr = arg;
    for (int i = 0; i < pr->rounds; i++) {
        const plat *p = &pr->p[(i * 7 + pr->rounds) % NPLAT];
        if (sim_verify_with(p, p->pub, NULL) != 0)
            pr->failures++;
    }
    return NULL;
}

static void test_sim_platform_id_cache(void **state)
{
    (void)state;
    plat p[NPLAT];
    const ev_ops *sim = ev_find("sim");
    for (int i = 0; i < NPLAT; i++) {
        snprintf(p[i].dir, sizeof(p[i].dir), "%s/sim%d", g_tmp, i);
        assert_int_equal(ev_sim_init(p[i].dir, NULL, NULL), 0);
        assert_int_equal(ev_sim_load_public(&p[i].pub, p[i].dir, NULL), 0);
        ev_get_opts g;
        ev_get_opts_init(&g);
        g.sim_state_dir = p[i].dir;
        uint8_t rd[64] = {0}, *aux = NULL;
        size_t auxn = 0;
        assert_int_equal(sim->get(&p[i].rep, &p[i].rep_size, &aux, &auxn, rd, &g, NULL), 0);
        free(aux);
    }
    /* Each report verifies with its own key, round after round, with more keys than slots; its
     * claimed platform id is the SPKI digest of that key, never another cached key's. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NPLAT; i++) {
            json_t *c = NULL;
            assert_int_equal(sim_verify_with(&p[i], p[i].pub, &c), 0);
            _cleanup_free_ char *want = spki_pid(p[i].pub);
            assert_string_equal(json_string_value(json_object_get(c, "platform_id")), want);
            json_decref(c);
            /* and never with a neighbour's key (cached or not) */
            int r = sim_verify_with(&p[i], p[(i + 1) % NPLAT].pub, NULL);
            assert_true(r == EV_E_PLATFORM || r == EV_E_SIGNATURE);
        }
    }
    /* The same point in compressed form is another SPKI: its platform id must be computed for it
     * (the report then verifies only if that SPKI happens to be the one the report names). */
    {
        _cleanup_pkey_ EVP_PKEY *dup = NULL;
        _cleanup_free_ char *pem_path = xasprintf("%s/platform-pub.pem", p[0].dir);
        assert_int_equal(crypto_key_load_file(&dup, pem_path, false, NULL), 0);
        assert_int_equal(EVP_PKEY_set_utf8_string_param(
                             dup, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed"),
                         1);
        _cleanup_free_ char *orig = spki_pid(p[0].pub), *comp = spki_pid(dup);
        int r = sim_verify_with(&p[0], dup, NULL);
        assert_int_equal(r, strcmp(orig, comp) == 0 ? 0 : EV_E_PLATFORM);
        /* and the uncompressed key still gets its own id afterwards */
        assert_int_equal(sim_verify_with(&p[0], p[0].pub, NULL), 0);
    }
    /* Concurrent verifiers. */
    pthread_t th[4];
    pid_race pr[4];
    for (int t = 0; t < 4; t++) {
        pr[t] = (pid_race){.p = p, .rounds = 30 + t, .failures = 0};
        assert_int_equal(pthread_create(&th[t], NULL, pid_racer, &pr[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(pr[t].failures, 0);
    }
    for (int i = 0; i < NPLAT; i++) {
        EVP_PKEY_free(p[i].pub);
        free(p[i].rep);
    }
}

/* ---- tokens: the header computed once, session-bound decoding ---- */

static void test_token_header_and_decode(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *k = NULL, *eph = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&eph, "P-256", NULL), 0);
    _cleanup_json_ json_t *jwk = NULL, *hdr = NULL;
    assert_int_equal(jwk_from_key(&jwk, eph, false, NULL), 0);
    assert_int_equal(kbs_token_header(&hdr, k, NULL), 0);
    _cleanup_json_ json_t *claims = json_pack("{s:s,s:b}", "tee", "sim", "insecure", 1);
    _cleanup_free_ char *t1 = NULL, *t2 = NULL;
    _cleanup_json_ json_t *signed_payload = NULL;
    jws_signer *signer = NULL;
    assert_int_equal(kbs_token_signer(&signer, k, NULL), 0);
    assert_int_equal(kbs_token_issue_with(&t1, &signed_payload, signer, claims, "affirming", NULL,
                                          jwk, "n", NULL, 300, 1000, NULL),
                     0);
    jws_signer_free(signer);
    assert_int_equal(
        kbs_token_issue(&t2, k, claims, "affirming", NULL, jwk, "n", NULL, 300, 1000, NULL), 0);
    /* Same protected header either way. */
    _cleanup_json_ json_t *h1 = NULL, *h2 = NULL;
    assert_int_equal(jws_peek_header(&h1, t1, strlen(t1), NULL), 0);
    assert_int_equal(jws_peek_header(&h2, t2, strlen(t2), NULL), 0);
    assert_true(json_equal(h1, h2));
    assert_non_null(json_string_value(json_object_get(h1, "kid")));
    _cleanup_json_ json_t *pv = NULL;
    assert_int_equal(kbs_token_verify(&pv, k, t1, strlen(t1), 1100, NULL), 0);
    /* the payload handed back at issue is the one signed, with the same checks */
    assert_true(json_equal(pv, signed_payload));
    /* and the signed bytes are jansson's compact dump of it, as they were before */
    uint8_t *signed_text = NULL;
    size_t signed_size = 0;
    assert_int_equal(jws_peek_payload(&signed_text, &signed_size, t1, strlen(t1), NULL), 0);
    _cleanup_free_ char *dumped = js_dump_compact(signed_payload);
    assert_int_equal(signed_size, strlen(dumped));
    assert_memory_equal(signed_text, dumped, signed_size);
    free(signed_text);
    /* the protected header is kbs_token_header()'s with "alg" first */
    json_object_set_new(hdr, "alg", json_string("ES256"));
    assert_true(json_equal(h1, hdr));
    assert_int_equal(kbs_token_check_issued(signed_payload, 1100, NULL), 0);
    _cleanup_err_ cista_error *e5 = NULL, *e6 = NULL;
    assert_int_equal(kbs_token_check_issued(signed_payload, 1300, &e5), -EKEYEXPIRED);
    assert_int_equal(kbs_token_check_issued(signed_payload, 800, &e6), -EKEYREJECTED);
    /* another issuer, even signed by the same key */
    _cleanup_err_ cista_error *e3 = NULL;
    _cleanup_json_ json_t *op =
        json_pack("{s:s,s:i,s:i}", "iss", "someone", "iat", 1000, "exp", 1300);
    assert_int_equal(kbs_token_check_issued(op, 1100, &e3), -EKEYREJECTED);
}

/* ---- prepared ECDSA / JWS signers ---- */

static void check_ecdsa_signer(const char *crv, const char *md, size_t n, x509_endian endian)
{
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, crv, NULL), 0);
    x509_ecdsa_signer *sg = NULL;
    assert_int_equal(x509_ecdsa_signer_new(&sg, k, md, NULL), 0);
    static const char msg[] = "the same message, signed twice";
    for (int i = 0; i < 2; i++) {
        uint8_t r[66], s2[66];
        assert_int_equal(x509_ecdsa_signer_sign(sg, r, s2, n, endian, msg, sizeof(msg), NULL), 0);
        assert_int_equal(x509_ecdsa_verify_raw(k, md, msg, sizeof(msg), r, s2, n, endian, NULL), 0);
        r[n / 2] ^= 1;
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(x509_ecdsa_verify_raw(k, md, msg, sizeof(msg), r, s2, n, endian, &e),
                         -EBADMSG);
    }
    _cleanup_err_ cista_error *e1 = NULL;
    uint8_t r[66], s2[66];
    assert_int_equal(x509_ecdsa_signer_sign(sg, r, s2, 0, endian, msg, 1, &e1), -EINVAL);
    x509_ecdsa_signer_free(sg);
}

typedef struct {
    const jws_signer *signer;
    EVP_PKEY *key;
    int bad;
} sign_racer;

static void *sign_race(void *arg)
{
    sign_racer *sr = arg;
    for (int i = 0; i < 40; i++) {
        char payload[32];
        snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
        _cleanup_free_ char *jws = NULL;
        _cleanup_free_ uint8_t *back = NULL;
        size_t n = 0;
        if (jws_signer_sign(&jws, sr->signer, payload, strlen(payload), NULL) < 0 ||
            jws_verify(&back, &n, NULL, jws, strlen(jws), sr->key, NULL, NULL) < 0 ||
            n != strlen(payload) || memcmp(back, payload, n) != 0)
            __atomic_add_fetch(&sr->bad, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_prepared_signers(void **state)
{
    (void)state;
    check_ecdsa_signer("P-256", "SHA256", 32, X509_BIG_ENDIAN);
    check_ecdsa_signer("P-384", "SHA384", 48, X509_LITTLE_ENDIAN);
    check_ecdsa_signer("P-521", "SHA512", 66, X509_BIG_ENDIAN);
    _cleanup_pkey_ EVP_PKEY *rsa = NULL;
    assert_int_equal(crypto_key_generate_rsa(&rsa, 2048, NULL), 0);
    x509_ecdsa_signer *none = NULL;
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(x509_ecdsa_signer_new(&none, rsa, "SHA256", &e), -EINVAL);
    /* A JWS signer gives what jws_sign gives: same header bytes, a signature that verifies. */
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-384", NULL), 0);
    _cleanup_json_ json_t *hdr = json_pack("{s:s,s:s}", "typ", "JWT", "alg", "ignored");
    jws_signer *sg = NULL;
    assert_int_equal(jws_signer_new(&sg, k, hdr, NULL), 0);
    _cleanup_free_ char *a = NULL, *b = NULL;
    assert_int_equal(jws_signer_sign(&a, sg, "{}", 2, NULL), 0);
    assert_int_equal(jws_sign(&b, hdr, "{}", 2, k, NULL), 0);
    size_t cut = strrchr(a, '.') - a;
    assert_int_equal(cut, strrchr(b, '.') - b);
    assert_memory_equal(a, b, cut); /* header.payload */
    assert_int_equal(strlen(a), strlen(b));
    _cleanup_json_ json_t *h = NULL;
    assert_int_equal(jws_peek_header(&h, a, strlen(a), NULL), 0);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES384");
    /* Threads share one signer (each signature on its own copy of the prepared context). */
    pthread_t th[4];
    sign_racer sr = {sg, k, 0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sign_race, &sr), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(sr.bad, 0);
    jws_signer_free(sg);
}

/* ---- parsed release policies shared by text ---- */

static void test_policy_cache(void **state)
{
    (void)state;
    kbs_doc_cache *dc = kbs__doc_cache_new(60000);
    static const char a[] = "{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"sim\",\"allOf\":[{"
                            "\"claim\":\"tee\",\"equals\":\"sim\"}]}]}";
    static const char b[] = "{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"tdx\",\"allOf\":[{"
                            "\"claim\":\"tee\",\"equals\":\"tdx\"}]}]}";
    kbs_parsed_ref *p1 = NULL, *p2 = NULL, *p3 = NULL, *bad = NULL;
    assert_int_equal(kbs__doc_cache_policy(dc, &p1, a, NULL), 0);
    assert_int_equal(kbs__doc_cache_policy(dc, &p2, a, NULL), 0);
    assert_ptr_equal(p1, p2); /* parsed once */
    assert_int_equal(kbs__doc_cache_policy(dc, &p3, b, NULL), 0);
    assert_ptr_not_equal(p1, p3);
    /* A policy that does not parse fails every time with its reason, and is not kept. */
    for (int i = 0; i < 2; i++) {
        _cleanup_err_ cista_error *e = NULL;
        assert_true(kbs__doc_cache_policy(dc, &bad, "{\"version\":\"1.0.0\"", &e) < 0);
        assert_non_null(e);
    }
    /* Reference values share the cache under their own kind. */
    static const char rv[] = "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true}}}";
    kbs_parsed_ref *r1 = NULL, *r2 = NULL;
    assert_int_equal(kbs__doc_cache_refvals(dc, &r1, rv, NULL), 0);
    assert_int_equal(kbs__doc_cache_refvals(dc, &r2, rv, NULL), 0);
    assert_ptr_equal(r1, r2);
    assert_non_null(kbs__parsed_refvals(r1));
    assert_null(kbs__parsed_policy(r1));
    assert_null(kbs__parsed_refvals(p1));
    kbs__parsed_ref_put(r1);
    kbs__parsed_ref_put(r2);
    {
        _cleanup_err_ cista_error *e = NULL;
        kbs_parsed_ref *as_rv = NULL;
        assert_true(kbs__doc_cache_refvals(dc, &as_rv, a, &e) < 0); /* a policy is no refvals */
    }
    /* An invalidation drops the cache's references; a reader's stays usable until it lets go. */
    kbs__doc_cache_invalidate(dc);
    _cleanup_json_ json_t *in = json_pack("{s:s}", "tee", "sim");
    bool allow = false;
    _cleanup_free_ char *why = NULL;
    assert_int_equal(pol_release_eval(&allow, &why, kbs__parsed_policy(p1), in, NULL), 0);
    assert_true(allow);
    kbs__parsed_ref_put(p1);
    kbs__parsed_ref_put(p2);
    kbs__parsed_ref_put(p3);
    kbs_parsed_ref *p4 = NULL;
    assert_int_equal(kbs__doc_cache_policy(dc, &p4, b, NULL), 0);
    kbs__parsed_ref_put(p4);
    kbs__doc_cache_free(dc);
}

/* ---- session binding through kbs_handle ---- */

typedef struct {
    kbs_ctx *ctx;
    char cookie[128];
} rcar;

static long call(rcar *r, const char *method, const char *path, const char *body, const char *authz,
                 json_t **out)
{
    kbs_request req = {.method = method,
                       .path = path,
                       .cookie = r->cookie[0] ? r->cookie : NULL,
                       .authorization = authz,
                       .body = (const uint8_t *)(body ? body : ""),
                       .body_size = body ? strlen(body) : 0,
                       .peer = "test"};
    kbs_response resp;
    memset(&resp, 0, sizeof(resp));
    kbs_handle(r->ctx, &req, &resp);
    if (resp.set_cookie) {
        size_t n = strcspn(resp.set_cookie, ";");
        snprintf(r->cookie, sizeof(r->cookie), "%.*s", (int)n, resp.set_cookie);
    }
    if (out)
        *out = json_loadb((const char *)resp.body.data, resp.body.size, 0, NULL);
    long st = resp.status;
    kbs_response_clear(&resp);
    return st;
}

/* POST /kbs/v0/auth on @r, then the attest body with sim evidence from @sim (owned). */
static char *attest_body(rcar *r, const char *sim, EVP_PKEY *eph)
{
    json_t *o = NULL;
    assert_int_equal(
        call(r, "POST", "/kbs/v0/auth", "{\"version\":\"0.4.0\",\"tee\":\"sim\"}", NULL, &o), 200);
    _cleanup_free_ char *nonce = xstrdup(json_string_value(json_object_get(o, "nonce")));
    json_decref(o);
    _cleanup_json_ json_t *jwk = NULL;
    assert_int_equal(jwk_from_key(&jwk, eph, false, NULL), 0);
    uint8_t rd[64];
    assert_int_equal(kbs_binding(rd, CRYPTO_SHA384, nonce, jwk, "", NULL), 0);
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = sim;
    uint8_t *ev = NULL, *aux = NULL;
    size_t evs = 0, auxs = 0;
    assert_int_equal(ev_find("sim")->get(&ev, &evs, &aux, &auxs, rd, &g, NULL), 0);
    _cleanup_free_ char *ev64 = b64_encode(ev, evs);
    free(ev);
    free(aux);
    _cleanup_json_ json_t *b =
        json_pack("{s:{s:s,s:O},s:{s:{s:s,s:s},s:s}}", "runtime-data", "nonce", nonce, "tee-pubkey",
                  jwk, "tee-evidence", "primary_evidence", "tee", "sim", "evidence", ev64,
                  "additional_evidence", "");
    return js_dump_compact(b);
}

/* auth + attest on @r with sim evidence from @sim; returns the token (owned). */
static char *attest(rcar *r, const char *sim, EVP_PKEY *eph)
{
    _cleanup_free_ char *body = attest_body(r, sim, eph);
    json_t *o = NULL;
    assert_int_equal(call(r, "POST", "/kbs/v0/attest", body, NULL, &o), 200);
    char *tok = xstrdup(json_string_value(json_object_get(o, "token")));
    json_decref(o);
    return tok;
}

/* A KBS directory with sim allowed and default/key/1 = "s3cret" released to sim. */
static void kbs_setup(const char *dir, const char *sim, const char *sessions, const char *listen)
{
    assert_int_equal(kbs_init_dir(dir, NULL), 0);
    assert_int_equal(ev_sim_init(sim, NULL, NULL), 0);
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_free_ char *cfgt = xasprintf(
        "{\"signing_key\":\"kbs-signing-key.pem\",\"admin_public_key\":\"admin-pub.pem\","
        "\"master_key\":\"master.key\",\"store\":{\"type\":\"sqlite\",\"path\":\"kbs.db\"},"
        "\"sessions\":{\"backend\":\"%s\"},\"listen\":\"%s\",\"workers\":2,"
        "\"sim_platform_keys\":[\"%s/platform-pub.pem\"]}",
        sessions, listen, sim);
    assert_int_equal(util_write_file_atomic(AT_FDCWD, cfgp, cfgt, strlen(cfgt), 0600, NULL), 0);
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    assert_int_equal(kbs_config_load(&cfg, cfgp, NULL), 0);
    rcar r = {0};
    assert_int_equal(kbs_ctx_new(&r.ctx, cfg, NULL), 0);
    _cleanup_free_ char *akp = xasprintf("%s/admin-key.pem", dir);
    _cleanup_pkey_ EVP_PKEY *adm = NULL;
    assert_int_equal(crypto_key_load_file(&adm, akp, true, NULL), 0);
    static const char *const calls[][2] = {
        {"/kbs/v0/reference-values",
         "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true}}}"},
        {"/kbs/v0/resource-policy/default/key/*", "{\"version\":\"1.0.0\",\"anyOf\":[{\"allOf\":[{"
                                                  "\"claim\":\"tee\",\"equals\":\"sim\"}]}]}"},
        {"/kbs/v0/resource/default/key/1", "s3cret"},
    };
    for (size_t i = 0; i < ARRAY_LEN(calls); i++) {
        _cleanup_free_ char *t = NULL;
        assert_int_equal(kbs_admin_token_make(&t, adm, 60, time(NULL), NULL), 0);
        _cleanup_free_ char *a = xasprintf("Bearer %s", t);
        assert_int_equal(call(&r, "POST", calls[i][0], calls[i][1], a, NULL), 200);
    }
    kbs_ctx_free(r.ctx);
}

static void check_binding(const char *sessions)
{
    _cleanup_free_ char *dir = xasprintf("%s/kbs-%s", g_tmp, sessions);
    _cleanup_free_ char *sim = xasprintf("%s/sim-%s", g_tmp, sessions);
    kbs_setup(dir, sim, sessions, "127.0.0.1:0");
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    assert_int_equal(kbs_config_load(&cfg, cfgp, NULL), 0);
    rcar a = {0}, b = {0};
    assert_int_equal(kbs_ctx_new(&a.ctx, cfg, NULL), 0);
    b.ctx = a.ctx;
    _cleanup_pkey_ EVP_PKEY *ka = NULL, *kb = NULL;
    assert_int_equal(crypto_key_generate_ec(&ka, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&kb, "P-256", NULL), 0);
    _cleanup_free_ char *ta = attest(&a, sim, ka), *tb = attest(&b, sim, kb);
    _cleanup_free_ char *bear_a = xasprintf("Bearer %s", ta), *bear_b = xasprintf("Bearer %s", tb);
    /* a token with a changed signature byte, and one with a changed payload byte */
    _cleanup_free_ char *sig_bad = xasprintf("Bearer %s", ta),
                        *pay_bad = xasprintf("Bearer %s", ta);
    char *last = sig_bad + strlen(sig_bad) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    char *mid = strchr(pay_bad + 7, '.') + 5;
    *mid = *mid == 'A' ? 'B' : 'A';
    const char *path = "/kbs/v0/resource/default/key/1";
    assert_int_equal(call(&a, "GET", path, NULL, NULL, NULL), 200);   /* cookie alone */
    assert_int_equal(call(&a, "GET", path, NULL, bear_a, NULL), 200); /* cookie + its token */
    assert_int_equal(call(&a, "GET", path, NULL, bear_b, NULL), 200); /* another valid token */
    assert_int_equal(call(&a, "GET", path, NULL, sig_bad, NULL), 401);
    assert_int_equal(call(&a, "GET", path, NULL, pay_bad, NULL), 401);
    /* The released JWE is to the session's tee-pubkey. */
    json_t *o = NULL;
    assert_int_equal(call(&a, "GET", path, NULL, NULL, &o), 200);
    _cleanup_free_ char *jwe = js_dump_compact(o);
    json_decref(o);
    jwe_key dk = {.pkey = ka};
    uint8_t *pt = NULL;
    size_t ptn = 0;
    assert_int_equal(jwe_decrypt(&pt, &ptn, jwe, strlen(jwe), &dk, 1, NULL, NULL), 0);
    assert_int_equal(ptn, 6);
    crypto_free_secret(pt, ptn);
    /*
     * Which tokens are checked against the signing key? Swap in another key: a token the
     * in-memory session holds still works with its cookie (signed by us, never left our memory),
     * the same token presented alone does not, and a store-backed session's token is always
     * verified (the database is outside the process).
     */
    kbs_shared *sh = a.ctx->sh;
    EVP_PKEY *saved = sh->sign_key, *other = NULL;
    assert_int_equal(crypto_key_generate_ec(&other, "P-256", NULL), 0);
    sh->sign_key = other;
    bool memory = !strcmp(sessions, "memory");
    assert_int_equal(call(&a, "GET", path, NULL, NULL, NULL), memory ? 200 : 401);
    assert_int_equal(call(&a, "GET", path, NULL, bear_a, NULL), memory ? 200 : 401);
    assert_int_equal(call(&a, "GET", path, NULL, bear_b, NULL), 401);
    a.cookie[0] = 0;
    assert_int_equal(call(&a, "GET", path, NULL, bear_a, NULL), 401);
    sh->sign_key = saved;
    EVP_PKEY_free(other);
    assert_int_equal(call(&a, "GET", path, NULL, bear_a, NULL), 200);
    kbs_ctx_free(a.ctx);
}

static void test_session_binding(void **state)
{
    (void)state;
    check_binding("memory");
    check_binding("store");
}

/* ---- the in-memory session table drops expired sessions as it goes ---- */

static void test_session_sweep(void **state)
{
    (void)state;
    kbs_sessions *t = kbs_sessions_new(2000);
    kbs_session s;
    for (int i = 0; i < 1000; i++) {
        memset(&s, 0, sizeof(s));
        snprintf(s.id, sizeof(s.id), "%043d", i);
        s.expires = 100;
        assert_int_equal(kbs_sessions_add(t, &s, 50, NULL), 0);
    }
    assert_int_equal(kbs_sessions_count(t), 1000);
    /* The table never fills, yet after enough adds every expired session is gone. */
    for (int i = 0; i < 600; i++) {
        memset(&s, 0, sizeof(s));
        snprintf(s.id, sizeof(s.id), "x%042d", i);
        s.expires = 1000;
        assert_int_equal(kbs_sessions_add(t, &s, 200, NULL), 0);
    }
    assert_int_equal(kbs_sessions_count(t), 600);
    kbs_sessions_free(t);
}

/* ---- SQLite: statements kept per connection ---- */

static void test_sqlite_statement_cache(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/stmt.db", g_tmp);
    uint8_t mk[32];
    memset(mk, 3, sizeof(mk));
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .master_key = mk, .init_schema = true};
    _cleanup_store_ kbs_store *s1 = NULL, *s2 = NULL;
    assert_int_equal(kbs_store_open(&s1, &o, NULL), 0);
    o.init_schema = false;
    assert_int_equal(kbs_store_open(&s2, &o, NULL), 0);
    /* Every read on s2 must see the write just committed on s1: a kept statement that were not
     * reset at the end of its scope would hold s2's read transaction (an old WAL snapshot). */
    for (int i = 0; i < 50; i++) {
        char path[64], val[32];
        snprintf(path, sizeof(path), "default/key/%d", i % 5);
        snprintf(val, sizeof(val), "value-%d", i);
        assert_int_equal(kbs_store_put_resource(s1, path, val, strlen(val), NULL), 0);
        uint8_t *v = NULL;
        size_t n = 0;
        assert_int_equal(kbs_store_get_resource(s2, &v, &n, path, NULL), 0);
        assert_int_equal(n, strlen(val));
        assert_memory_equal(v, val, n);
        kbs_secret_free(v, n);
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_get_resource(s2, &v, &n, "default/key/none", &e), -ENOENT);
        kbs_audit_entry ae = {"resource", "sim", NULL, path, "allow", "test", "peer"};
        assert_int_equal(kbs_store_audit_append(s1, &ae, time(NULL), NULL), 0);
    }
    /* A failed compare-and-set rolls back and leaves the connection usable. */
    kbs_counter cur;
    _cleanup_err_ cista_error *e1 = NULL;
    assert_int_equal(kbs_store_counter_cas(s1, &cur, "vol/a/b", 0, 1, NULL, 0, 1, NULL), 0);
    assert_int_equal(kbs_store_counter_cas(s1, &cur, "vol/a/b", 0, 2, NULL, 0, 1, &e1), -ESTALE);
    assert_int_equal(kbs_store_counter_cas(s1, &cur, "vol/a/b", 1, 2, NULL, 0, 1, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s2, &count, NULL), 0);
    assert_int_equal(count, 50);
}

/* ---- the server's shared handler pool under concurrent clients ---- */

typedef struct {
    const char *url, *sim;
    int rounds, ok;
    bool keepalive;
} client_job;

static void *client_main(void *arg)
{
    client_job *j = arg;
    kbs_client_opts co = {.url = j->url};
    kbs_client *kept = NULL;
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = j->sim;
    for (int i = 0; i < j->rounds; i++) {
        kbs_client *c = kept;
        EVP_PKEY *k = NULL;
        uint8_t *v = NULL;
        size_t n = 0;
        cista_error *err = NULL;
        if ((c || kbs_client_new(&c, &co, &err) == 0) &&
            crypto_key_generate_ec(&k, "P-256", &err) == 0 &&
            kbs_client_attest(c, ev_find("sim"), &g, k, NULL, &err) == 0 &&
            kbs_client_get_resource(c, &v, &n, "default/key/1", &err) == 0 && n == 6 &&
            !memcmp(v, "s3cret", 6))
            j->ok++;
        kbs_secret_free(v, n);
        EVP_PKEY_free(k);
        err_free(err);
        if (j->keepalive) {
            kept = c;
        } else {
            kbs_client_free(c);
            kept = NULL;
        }
    }
    kbs_client_free(kept);
    return NULL;
}

static void *server_main(void *arg)
{
    kbs_server *s = arg;
    cista_error *err = NULL;
    int r = kbs_server_run(s, &err);
    err_free(err);
    return (void *)(intptr_t)r;
}

static void test_server_pool(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = xasprintf("%s/kbs-srv", g_tmp);
    _cleanup_free_ char *sim = xasprintf("%s/sim-srv", g_tmp);
    kbs_setup(dir, sim, "memory", "127.0.0.1:0");
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    assert_int_equal(kbs_config_load(&cfg, cfgp, NULL), 0);
    kbs_server *s = NULL;
    assert_int_equal(kbs_server_new(&s, cfg, NULL), 0);
    _cleanup_free_ char *url = xasprintf("http://%s", kbs_server_address(s));
    pthread_t st;
    assert_int_equal(pthread_create(&st, NULL, server_main, s), 0);
    enum { N = 6, ROUNDS = 4 };
    pthread_t th[N];
    client_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (client_job){.url = url, .sim = sim, .rounds = ROUNDS, .keepalive = i % 2};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].ok, ROUNDS);
    }
    /* kbs_client_reset(): every round trip a new connection (another peer port) and session. */
    {
        kbs_client_opts co = {.url = url};
        _cleanup_kbs_client_ kbs_client *c = NULL;
        assert_int_equal(kbs_client_new(&c, &co, NULL), 0);
        ev_get_opts g;
        ev_get_opts_init(&g);
        g.sim_state_dir = sim;
        char *prev_tok = NULL;
        for (int i = 0; i < 3; i++) {
            _cleanup_pkey_ EVP_PKEY *k = NULL;
            char *tok = NULL;
            uint8_t *v = NULL;
            size_t n = 0;
            assert_int_equal(crypto_key_generate_ec(&k, "P-256", NULL), 0);
            assert_int_equal(kbs_client_attest(c, ev_find("sim"), &g, k, &tok, NULL), 0);
            assert_int_equal(kbs_client_get_resource(c, &v, &n, "default/key/1", NULL), 0);
            kbs_secret_free(v, n);
            assert_true(!prev_tok || strcmp(prev_tok, tok) != 0);
            free(prev_tok);
            prev_tok = tok;
            kbs_client_reset(c);
            /* no token after a reset */
            _cleanup_err_ cista_error *e = NULL;
            assert_int_equal(kbs_client_get_resource(c, &v, &n, "default/key/1", &e), -EACCES);
        }
        free(prev_tok);
    }
    kbs_server_stop(s);
    void *rv = NULL;
    pthread_join(st, &rv);
    assert_int_equal((int)(intptr_t)rv, 0);
    kbs_server_free(s);
    /* Every round trip's auth, attest and resource entries are in the log, chain intact (keyed:
     * checking it needs the master key). */
    _cleanup_free_ char *db = xasprintf("%s/kbs.db", dir);
    _cleanup_free_ char *mkp = xasprintf("%s/master.key", dir);
    uint8_t mk[KBS_MASTER_KEY_SIZE];
    assert_int_equal(kbs_master_key_load(mk, mkp, NULL), 0);
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .master_key = mk};
    _cleanup_store_ kbs_store *st2 = NULL;
    assert_int_equal(kbs_store_open(&st2, &o, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(st2, &count, NULL), 0);
    assert_true(count >= 3 + 3 * N * ROUNDS + 9);
    /* The last 9 entries are the reset client's 3 rounds: 3 connections (peer ports), each used
     * for its round's auth, attest and resource. */
    _cleanup_json_ json_t *list = NULL;
    assert_int_equal(kbs_store_audit_list(st2, &list, (int64_t)count - 9, 100, NULL), 0);
    assert_int_equal(json_array_size(list), 9);
    char peers[9][80];
    for (size_t i = 0; i < 9; i++) {
        _cleanup_json_ json_t *b = NULL;
        const char *body = json_string_value(json_object_get(json_array_get(list, i), "body"));
        assert_int_equal(js_parse_object(&b, body, strlen(body), 1 << 16, "audit", NULL), 0);
        snprintf(peers[i], sizeof(peers[i]), "%s", json_string_value(json_object_get(b, "peer")));
    }
    for (int r = 0; r < 3; r++) {
        assert_string_equal(peers[3 * r], peers[3 * r + 1]);
        assert_string_equal(peers[3 * r], peers[3 * r + 2]);
        if (r)
            assert_string_not_equal(peers[3 * r], peers[3 * r - 1]);
    }
}

/* ---- algorithms fetched once (crypto.c), first use from many threads at once ---- */

typedef struct {
    pthread_barrier_t *start;
    uint8_t gcm_ct[32], gcm_tag[16], kdf[32];
    int ok;
} fetch_job;

static void expect_hex(const uint8_t *d, size_t n, const char *hex)
{
    _cleanup_free_ char *h = hex_encode(d, n);
    assert_string_equal(h, hex);
}

static void *fetch_main(void *arg)
{
    fetch_job *j = arg;
    pthread_barrier_wait(j->start);
    for (int round = 0; round < 50; round++) {
        uint8_t d[64];
        /* FIPS 180 "abc" and RFC 4231 test case 2. */
        crypto_hash_oneshot(CRYPTO_SHA1, "abc", 3, d);
        expect_hex(d, 20, "a9993e364706816aba3e25717850c26c9cd0d89d");
        crypto_hash_oneshot(CRYPTO_SHA256, "abc", 3, d);
        expect_hex(d, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        crypto_hash_oneshot(CRYPTO_SHA384, "abc", 3, d);
        expect_hex(d, 48,
                   "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7"
                   "cc2358baeca134c825a7");
        crypto_hash_oneshot(CRYPTO_SHA512, "abc", 3, d);
        expect_hex(d, 64,
                   "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274f"
                   "c1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
        _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, "Jefe", 4);
        crypto_hmac_update(m, "what do ya want for nothing?", 28);
        crypto_hmac_final(m, d);
        expect_hex(d, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        uint8_t key[32], iv[12], pt[32], back[32];
        memset(key, 0x11, sizeof(key));
        memset(iv, 0x22, sizeof(iv));
        memset(pt, 0x33, sizeof(pt));
        assert_int_equal(crypto_gcm_encrypt(j->gcm_ct, j->gcm_tag, key, sizeof(key), iv, sizeof(iv),
                                            "aad", 3, pt, sizeof(pt), NULL),
                         0);
        assert_int_equal(crypto_gcm_decrypt(back, key, sizeof(key), iv, sizeof(iv), "aad", 3,
                                            j->gcm_ct, sizeof(j->gcm_ct), j->gcm_tag, NULL),
                         0);
        assert_memory_equal(back, pt, sizeof(pt));
        assert_int_equal(crypto_concat_kdf(j->kdf, sizeof(j->kdf), key, sizeof(key), "A256KW", NULL,
                                           0, NULL, 0, NULL),
                         0);
    }
    j->ok = 1;
    return NULL;
}

static void test_fetch_once(void **state)
{
    (void)state;
    enum { N = 8 };
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, N), 0);
    pthread_t th[N];
    fetch_job jobs[N];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < N; i++) {
        jobs[i].start = &start;
        assert_int_equal(pthread_create(&th[i], NULL, fetch_main, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].ok, 1);
        assert_memory_equal(jobs[i].gcm_ct, jobs[0].gcm_ct, sizeof(jobs[0].gcm_ct));
        assert_memory_equal(jobs[i].gcm_tag, jobs[0].gcm_tag, sizeof(jobs[0].gcm_tag));
        assert_memory_equal(jobs[i].kdf, jobs[0].kdf, sizeof(jobs[0].kdf));
    }
    /* One object per digest, the right one, and the same on every call. */
    static const struct {
        crypto_hash_alg alg;
        const char *name;
        int size;
    } mds[] = {{CRYPTO_SHA1, "SHA1", 20},
               {CRYPTO_SHA256, "SHA256", 32},
               {CRYPTO_SHA384, "SHA384", 48},
               {CRYPTO_SHA512, "SHA512", 64}};
    for (size_t i = 0; i < ARRAY_LEN(mds); i++) {
        const EVP_MD *m = crypto__md(mds[i].alg);
        assert_non_null(m);
        assert_ptr_equal(crypto__md(mds[i].alg), m);
        assert_true(EVP_MD_is_a(m, mds[i].name));
        assert_int_equal(EVP_MD_get_size(m), mds[i].size);
        for (size_t k = 0; k < i; k++)
            assert_ptr_not_equal(crypto__md(mds[k].alg), m);
    }
}

/* ---- EC JWK coordinates from the encoded point, against the BIGNUM parameters ---- */

static void expect_coord(const json_t *jwk, const char *member, EVP_PKEY *key, const char *param,
                         size_t field_size)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(key, param, &bn), 1);
    uint8_t buf[66];
    assert_int_equal(BN_bn2binpad(bn, buf, (int)field_size), (int)field_size);
    BN_free(bn);
    _cleanup_free_ char *want = b64url_encode(buf, field_size);
    assert_string_equal(json_string_value(json_object_get(jwk, member)), want);
}

static void test_jwk_from_key_point(void **state)
{
    (void)state;
    static const struct {
        const char *crv;
        size_t field_size;
    } curves[] = {{"P-256", 32}, {"P-384", 48}, {"P-521", 66}};
    for (size_t i = 0; i < ARRAY_LEN(curves); i++) {
        for (int compressed = 0; compressed < 2; compressed++) {
            _cleanup_pkey_ EVP_PKEY *key = NULL;
            assert_int_equal(crypto_key_generate_ec(&key, curves[i].crv, NULL), 0);
            /* A key that encodes its point compressed takes the BIGNUM path. */
            if (compressed)
                assert_int_equal(EVP_PKEY_set_utf8_string_param(
                                     key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed"),
                                 1);
            for (int priv = 0; priv < 2; priv++) {
                _cleanup_json_ json_t *jwk = NULL;
                assert_int_equal(jwk_from_key(&jwk, key, priv, NULL), 0);
                assert_string_equal(json_string_value(json_object_get(jwk, "crv")), curves[i].crv);
                expect_coord(jwk, "x", key, OSSL_PKEY_PARAM_EC_PUB_X, curves[i].field_size);
                expect_coord(jwk, "y", key, OSSL_PKEY_PARAM_EC_PUB_Y, curves[i].field_size);
                assert_int_equal(json_object_get(jwk, "d") != NULL, priv);
                _cleanup_pkey_ EVP_PKEY *back = NULL;
                assert_int_equal(jwk_to_key(&back, jwk, NULL), 0);
                assert_int_equal(EVP_PKEY_eq(back, key), 1);
            }
        }
    }
}

/* ---- CISTA_KBS_HOT_BENCH=1: CPU per call of the round trip's non-crypto steps, new vs old ---- */

static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

#define BENCH_ROW(label, iters, ...)                                                               \
    do {                                                                                           \
        double t0_ = cpu_us();                                                                     \
        for (int i_ = 0; i_ < (iters); i_++) {                                                     \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        print_message("  %-58s %7.2f\n", label, (cpu_us() - t0_) / (iters));                       \
    } while (0)

/* The floor under x509_ecdsa_verify_raw(): a prepared context, the digest and DER made once. */
static void bench_verify_floor(EVP_PKEY *pub, const uint8_t *rep)
{
    uint8_t le[2][SNP_SIG_INT_SIZE], dg[48];
    for (size_t i = 0; i < SNP_SIG_INT_SIZE; i++) {
        le[0][i] = rep[SNP_OFF_SIGNATURE + i];
        le[1][i] = rep[SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE + i];
    }
    ECDSA_SIG *es = ECDSA_SIG_new();
    assert_non_null(es);
    ECDSA_SIG_set0(es, BN_lebin2bn(le[0], SNP_SIG_INT_SIZE, NULL),
                   BN_lebin2bn(le[1], SNP_SIG_INT_SIZE, NULL));
    unsigned char *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    assert_true(der_len > 0);
    crypto_hash_oneshot(CRYPTO_SHA384, rep, SNP_SIGNED_SIZE, dg);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    assert_non_null(pc);
    assert_int_equal(EVP_PKEY_verify_init(pc), 1);
    BENCH_ROW("  floor: EVP_PKEY_verify, prepared ctx, digest + DER", 2000,
              { assert_int_equal(EVP_PKEY_verify(pc, der, (size_t)der_len, dg, sizeof(dg)), 1); });
    EVP_PKEY_CTX_free(pc);
    OPENSSL_free(der);
}

/* POST /kbs/v0/attest and its own steps, on a sim report (the challenge is made untimed). */
static void bench_attest(rcar *r, const char *sim, EVP_PKEY *eph)
{
    _cleanup_pkey_ EVP_PKEY *simk = NULL;
    assert_int_equal(ev_sim_load_public(&simk, sim, NULL), 0);
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = sim;
    uint8_t rd[64] = {0}, *rep = NULL, *aux = NULL;
    size_t rep_size = 0, aux_size = 0;
    assert_int_equal(ev_find("sim")->get(&rep, &rep_size, &aux, &aux_size, rd, &g, NULL), 0);
    free(aux);
    const uint8_t *sig = rep + SNP_OFF_SIGNATURE;
    BENCH_ROW("attest: x509_ecdsa_verify_raw, sim report (P-384)", 2000, {
        assert_int_equal(x509_ecdsa_verify_raw(simk, "SHA384", rep, SNP_SIGNED_SIZE, sig,
                                               sig + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
                                               X509_LITTLE_ENDIAN, NULL),
                         0);
    });
    bench_verify_floor(simk, rep);
    /* r = 0 is refused before the curve arithmetic: what is left is the per-call overhead. */
    static const uint8_t zero[SNP_SIG_INT_SIZE];
    BENCH_ROW("attest: x509_ecdsa_verify_raw, r = 0 (overhead only)", 20000, {
        assert_int_equal(x509_ecdsa_verify_raw(simk, "SHA384", rep, SNP_SIGNED_SIZE, zero,
                                               sig + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
                                               X509_LITTLE_ENDIAN, NULL),
                         -EBADMSG);
    });
    free(rep);
    _cleanup_json_ json_t *jwk = NULL;
    assert_int_equal(jwk_from_key(&jwk, eph, false, NULL), 0);
    BENCH_ROW("attest: jwk_to_key_partial, P-256 JWK", 20000, {
        EVP_PKEY *k = NULL;
        assert_int_equal(jwk_to_key_partial(&k, jwk, NULL), 0);
        EVP_PKEY_free(k);
    });
    _cleanup_free_ char *body = attest_body(r, sim, eph);
    kbs__commit_job_clear(&r->ctx->audit_job);
    size_t body_size = strlen(body);
    BENCH_ROW("attest: kbs_parse_attest, sim body", 20000, {
        kbs_attest_req a;
        json_t *doc = NULL;
        assert_int_equal(kbs_parse_attest(&a, &doc, KBS_PROTO_V4, "sim", body, body_size, NULL), 0);
        kbs_attest_req_clear(&a);
        json_decref(doc);
    });
    /* The challenge and the report (a P-384 signature) per round are not counted. */
    enum { ROUNDS = 1000 };
    double spent = 0;
    for (int i = 0; i < ROUNDS; i++) {
        _cleanup_free_ char *b = attest_body(r, sim, eph);
        double t0 = cpu_us();
        assert_int_equal(call(r, "POST", "/kbs/v0/attest", b, NULL, NULL), 200);
        spent += cpu_us() - t0;
        kbs__commit_job_clear(&r->ctx->audit_job);
    }
    print_message("  %-58s %7.2f\n", "POST /kbs/v0/attest (sim; P-384 verify + ES256 sign)",
                  spent / ROUNDS);
}

static void test_hot_bench(void **state)
{
    (void)state;
    const char *env = getenv("CISTA_KBS_HOT_BENCH");
    if (!env || strcmp(env, "1") != 0)
        skip();
    _cleanup_free_ char *dir = xasprintf("%s/kbs-bench", g_tmp);
    _cleanup_free_ char *sim = xasprintf("%s/sim-bench", g_tmp);
    kbs_setup(dir, sim, "memory", "127.0.0.1:0");
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    assert_int_equal(kbs_config_load(&cfg, cfgp, NULL), 0);
    rcar r = {0};
    assert_int_equal(kbs_ctx_new(&r.ctx, cfg, NULL), 0);
    _cleanup_pkey_ EVP_PKEY *eph = NULL;
    assert_int_equal(crypto_key_generate_ec(&eph, "P-256", NULL), 0);
    _cleanup_free_ char *token = attest(&r, sim, eph);
    kbs_shared *sh = r.ctx->sh;
    _cleanup_json_ json_t *payload = NULL, *jwk = NULL;
    assert_int_equal(
        kbs_token_verify(&payload, sh->sign_key, token, strlen(token), time(NULL), NULL), 0);
    assert_int_equal(jwk_from_key(&jwk, eph, false, NULL), 0);
    json_t *ann = json_object_get(json_object_get(json_object_get(payload, "submods"), "cpu0"),
                                  "ear.veraison.annotated-evidence");
    _cleanup_json_ json_t *claims = json_deep_copy(ann);
    json_object_del(claims, "runtime_data_claims");
    static const char pol[] = "{\"version\":\"1.0.0\",\"anyOf\":[{\"allOf\":[{\"claim\":\"tee\","
                              "\"equals\":\"sim\"}]}]}";
    time_t now = time(NULL);
    print_message("CPU us per call (token %zu bytes):\n", strlen(token));
    BENCH_ROW("token: kbs_token_issue_with, prepared signer", 4000, {
        char *t = NULL;
        json_t *p = NULL;
        assert_int_equal(kbs_token_issue_with(&t, &p, sh->token_signer, claims, "affirming", NULL,
                                              jwk, "n", NULL, 30, now, NULL),
                         0);
        free(t);
        json_decref(p);
    });
    BENCH_ROW("token: kbs_token_issue, header and signer per call", 1000, {
        char *t = NULL;
        assert_int_equal(kbs_token_issue(&t, sh->sign_key, claims, "affirming", NULL, jwk, "n",
                                         NULL, 30, now, NULL),
                         0);
        free(t);
    });
    uint8_t sig[64];
    x509_ecdsa_signer *es = NULL;
    assert_int_equal(x509_ecdsa_signer_new(&es, sh->sign_key, "SHA256", NULL), 0);
    BENCH_ROW("ES256: x509_ecdsa_signer_sign (prepared)", 4000, {
        assert_int_equal(
            x509_ecdsa_signer_sign(es, sig, sig + 32, 32, X509_BIG_ENDIAN, token, 1000, NULL), 0);
    });
    BENCH_ROW("ES256: x509_ecdsa_sign_raw (set up per call)", 4000, {
        assert_int_equal(x509_ecdsa_sign_raw(sig, sig + 32, 32, X509_BIG_ENDIAN, sh->sign_key,
                                             "SHA256", token, 1000, NULL),
                         0);
    });
    x509_ecdsa_signer_free(es);
    BENCH_ROW("payload text: js_buf_put_compact", 20000, {
        cbuf b = CBUF_INIT;
        js_buf_put_compact(&b, payload);
        buf_free(&b);
    });
    BENCH_ROW("payload text: js_dump_compact (jansson)", 20000, free(js_dump_compact(payload)));
    BENCH_ROW("/attest reply: js_buf_put_string of the token", 20000, {
        cbuf b = CBUF_INIT;
        js_buf_put_string(&b, token, strlen(token), false);
        buf_free(&b);
    });
    BENCH_ROW("/attest reply: json_pack + js_dump_compact", 20000, {
        json_t *o = json_pack("{s:s}", "token", token);
        free(js_dump_compact(o));
        json_decref(o);
    });
    BENCH_ROW("policy: kbs__doc_cache_policy (parsed once)", 20000, {
        kbs_parsed_ref *ref = NULL;
        assert_int_equal(kbs__doc_cache_policy(sh->docs, &ref, pol, NULL), 0);
        kbs__parsed_ref_put(ref);
    });
    BENCH_ROW("policy: pol_release_parse", 20000, {
        pol_release *rp = NULL;
        assert_int_equal(pol_release_parse(&rp, pol, strlen(pol), NULL), 0);
        pol_release_free(rp);
    });
    BENCH_ROW("policy input: kbs_token_policy_input", 20000,
              json_decref(kbs_token_policy_input(payload, "default/key/1")));
    BENCH_ROW("resource: sealed value through the cache + unseal", 20000, {
        uint8_t *v = NULL, *sealed = NULL;
        size_t n = 0, sn = 0;
        assert_int_equal(
            kbs__doc_cache_get_sealed(sh->docs, r.ctx->store, &sealed, &sn, "default/key/1", NULL),
            0);
        assert_int_equal(kbs_store_unseal(r.ctx->store, &v, &n, "default/key/1", sealed, sn, NULL),
                         0);
        free(sealed);
        crypto_free_secret(v, n);
    });
    BENCH_ROW("resource: kbs_store_get_resource (SQLite + unseal)", 20000, {
        uint8_t *v = NULL;
        size_t n = 0;
        assert_int_equal(kbs_store_get_resource(r.ctx->store, &v, &n, "default/key/1", NULL), 0);
        crypto_free_secret(v, n);
    });
    r.ctx->defer_audit = true; /* as the server runs it: no synchronous audit write */
    BENCH_ROW("GET /kbs/v0/resource (held session; ECDH + keygen ~42 of it)", 2000, {
        assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, NULL, NULL), 200);
        kbs__commit_job_clear(&r.ctx->audit_job);
    });
    bench_attest(&r, sim, eph);
    kbs_ctx_free(r.ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: the algorithm caches must start empty for the race to be exercised. */
        cmocka_unit_test(test_fetch_once),
        cmocka_unit_test(test_jwk_partial),
        cmocka_unit_test(test_jwk_from_key_point),
        cmocka_unit_test(test_keygen_params),
        cmocka_unit_test(test_ecdh_unchecked_peer),
        cmocka_unit_test_setup_teardown(test_sim_platform_id_cache, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_token_header_and_decode),
        cmocka_unit_test(test_prepared_signers),
        cmocka_unit_test(test_policy_cache),
        cmocka_unit_test_setup_teardown(test_session_binding, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_session_sweep),
        cmocka_unit_test_setup_teardown(test_sqlite_statement_cache, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_server_pool, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_hot_bench, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
