/*
 * test_x509.c - chains of the real AMD certificates (RSASSA-PSS), validity
 * at pinned times, broken signatures, unknown issuers, CRL revocation with
 * a CA made here, VCEK extensions, raw-integer ECDSA both byte orders, and
 * its DER signature built without BIGNUMs against i2d_ECDSA_SIG().
 */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/crypto_int.h"
#include "crypto/x509.h"
#include "util/codec.h"
#include "util/util.h"

#define VC "../shared/testdata/evidence/vendor-certs/"
#define SNP "../shared/testdata/evidence/sev-snp/"

/* 2025-01-01T00:00:00Z, 2030-01-01T00:00:00Z, 2020-01-01T00:00:00Z */
#define T2025 ((time_t)1735689600)
#define T2030 ((time_t)1893456000)
#define T2020 ((time_t)1577836800)

static X509 *load1(const char *path)
{
    STACK_OF(X509) *s = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(x509_certs_load_file(&s, path, &err), 0);
    assert_int_equal(sk_X509_num(s), 1);
    X509 *c = sk_X509_shift(s);
    sk_X509_free(s);
    return c;
}

static STACK_OF(X509) * stack1(X509 *c)
{
    STACK_OF(X509) *s = sk_X509_new_null();
    X509_up_ref(c);
    sk_X509_push(s, c);
    return s;
}

static int verify_at(X509 *leaf, const char *ask, const char *ark, time_t at, cista_error **err)
{
    _cleanup_x509_ X509 *a = load1(ask);
    _cleanup_x509_ X509 *r = load1(ark);
    _cleanup_x509_stack_ STACK_OF(X509) *inter = stack1(a);
    _cleanup_x509_stack_ STACK_OF(X509) *roots = stack1(r);
    x509_verify_opts o = {.at = at};
    return x509_verify_chain(NULL, leaf, inter, roots, &o, err);
}

static void test_amd_chain_ok(void **state)
{
    (void)state;
    _cleanup_x509_ X509 *vcek = load1(SNP "milan_v2_gosevguest_vcek.der");
    _cleanup_x509_ X509 *ask = load1(VC "amd_milan_ask.pem");
    _cleanup_x509_ X509 *ark = load1(VC "amd_milan_ark.pem");
    _cleanup_x509_stack_ STACK_OF(X509) *inter = stack1(ask);
    _cleanup_x509_stack_ STACK_OF(X509) *roots = stack1(ark);
    _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
    _cleanup_err_ cista_error *err = NULL;
    x509_verify_opts o = {.at = T2025};
    assert_int_equal(x509_verify_chain(&chain, vcek, inter, roots, &o, &err), 0);
    assert_int_equal(sk_X509_num(chain), 3);
    _cleanup_free_ char *cn = x509_subject_cn(sk_X509_value(chain, 2));
    assert_string_equal(cn, "ARK-Milan");
    assert_true(x509_is_self_signed(ark));
    assert_false(x509_is_self_signed(ask));

    uint8_t fp[32];
    assert_int_equal(x509_cert_sha256(fp, ark, &err), 0);
    _cleanup_free_ char *h = hex_encode(fp, 32);
    assert_string_equal(h, "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd");

    /* every product line, VCEK and VLEK issuers, RSA-PSS throughout */
    static const char *const prod[] = {"milan", "genoa", "turin"};
    for (size_t i = 0; i < ARRAY_LEN(prod); i++) {
        _cleanup_free_ char *ap = xasprintf(VC "amd_%s_ark.pem", prod[i]);
        _cleanup_free_ char *kp = xasprintf(VC "amd_%s_ask.pem", prod[i]);
        _cleanup_free_ char *vp = xasprintf(VC "amd_%s_asvk.pem", prod[i]);
        _cleanup_x509_ X509 *k = load1(kp);
        _cleanup_x509_ X509 *v = load1(vp);
        _cleanup_x509_ X509 *a = load1(ap);
        _cleanup_x509_stack_ STACK_OF(X509) *rs = stack1(a);
        assert_int_equal(x509_verify_chain(NULL, k, NULL, rs, &o, &err), 0);
        assert_int_equal(x509_verify_chain(NULL, v, NULL, rs, &o, &err), 0);
    }
    _cleanup_x509_ X509 *turin = load1(SNP "turin_virtee_vcek.der");
    assert_int_equal(verify_at(turin, VC "amd_turin_ask.pem", VC "amd_turin_ark.pem", T2025, &err),
                     0);
    _cleanup_x509_ X509 *genoa = load1(SNP "genoa_v3_trustee_vcek.der");
    assert_int_equal(verify_at(genoa, VC "amd_genoa_ask.pem", VC "amd_genoa_ark.pem",
                               (time_t)1767225600 /* 2026-01-01 */, &err),
                     0);
}

static void test_amd_chain_failures(void **state)
{
    (void)state;
    _cleanup_x509_ X509 *vcek = load1(SNP "milan_v2_gosevguest_vcek.der");
    _cleanup_err_ cista_error *err = NULL;

    /* expired: notAfter 2029-09-24 */
    assert_int_equal(verify_at(vcek, VC "amd_milan_ask.pem", VC "amd_milan_ark.pem", T2030, &err),
                     X509_E_EXPIRED);
    assert_non_null(strstr(err->msg, "expired at 2030-01-01T00:00:00Z"));
    assert_non_null(strstr(err->msg, "notAfter 2029-09-24"));
    assert_non_null(strstr(err->msg, "depth 0"));
    err_clear(&err);
    /* not yet valid: notBefore 2022-09-24 */
    assert_int_equal(verify_at(vcek, VC "amd_milan_ask.pem", VC "amd_milan_ark.pem", T2020, &err),
                     X509_E_EXPIRED);
    assert_non_null(strstr(err->msg, "not yet valid"));
    err_clear(&err);
    /* unknown issuer: Milan VCEK against the Genoa roots */
    assert_int_equal(verify_at(vcek, VC "amd_genoa_ask.pem", VC "amd_genoa_ark.pem", T2025, &err),
                     X509_E_REJECTED);
    assert_non_null(strstr(err->msg, "unknown issuer"));
    assert_non_null(strstr(err->msg, "SEV-Milan"));
    err_clear(&err);
    /* edited VCEKs: the ASK's signature over them fails */
    static const char *const bad[] = {SNP "milan_vcek_badsig_legacy.der",
                                      SNP "milan_vcek_badsig_new.der"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        _cleanup_x509_ X509 *b = load1(bad[i]);
        assert_int_equal(verify_at(b, VC "amd_milan_ask.pem", VC "amd_milan_ark.pem", T2025, &err),
                         X509_E_REJECTED);
        assert_non_null(strstr(err->msg, "signature by issuer"));
        err_clear(&err);
    }
    /* no roots at all */
    assert_int_equal(x509_verify_chain(NULL, vcek, NULL, NULL, NULL, &err), -EINVAL);
}

static void test_extensions(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_x509_ X509 *vcek = load1(SNP "milan_v2_gosevguest_vcek.der");
    int64_t v = -1;
    assert_int_equal(x509_ext_int(&v, vcek, "1.3.6.1.4.1.3704.1.3.8", &err), 0);
    assert_int_equal(v, 68);
    assert_int_equal(x509_ext_int(&v, vcek, "1.3.6.1.4.1.3704.1.3.1", &err), 0);
    assert_int_equal(v, 2);
    assert_int_equal(x509_ext_int(&v, vcek, "1.3.6.1.4.1.3704.1.3.3", &err), 0);
    assert_int_equal(v, 5);
    _cleanup_free_ char *name = NULL;
    assert_int_equal(x509_ext_string(&name, vcek, "1.3.6.1.4.1.3704.1.2", &err), 0);
    assert_string_equal(name, "Milan-B0");
    const uint8_t *hw = NULL;
    size_t hw_size = 0;
    assert_int_equal(x509_ext_raw(&hw, &hw_size, vcek, "1.3.6.1.4.1.3704.1.4", &err), 0);
    assert_int_equal(hw_size, 64);
    _cleanup_free_ char *hwh = hex_encode(hw, 8);
    assert_string_equal(hwh, "3ac3fe21e13fb099");
    assert_int_equal(x509_ext_raw(&hw, &hw_size, vcek, "1.3.6.1.4.1.3704.1.5", &err), -ENOENT);
    assert_int_equal(x509_ext_raw(&hw, &hw_size, vcek, "not-an-oid", &err), -EINVAL);
    err_clear(&err);

    _cleanup_x509_ X509 *turin = load1(SNP "turin_virtee_vcek.der");
    assert_int_equal(x509_ext_raw(&hw, &hw_size, turin, "1.3.6.1.4.1.3704.1.4", &err), 0);
    _cleanup_free_ char *th = hex_encode(hw, hw_size);
    assert_string_equal(th, "1e550a8ee5cf9f4d");
    assert_int_equal(x509_ext_int(&v, turin, "1.3.6.1.4.1.3704.1.3.9", &err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(x509_ext_int(&v, turin, "1.3.6.1.4.1.3704.1.3.8", &err), 0);
    assert_int_equal(v, 9);
    assert_int_equal(x509_ext_int(&v, turin, "1.3.6.1.4.1.3704.1.1", &err), 0);
    assert_int_equal(v, 1);

    /* ucodeSPL as a 2-byte INTEGER 0x00a9 */
    _cleanup_x509_ X509 *legacy = load1(SNP "milan_vcek_badsig_legacy.der");
    assert_int_equal(x509_ext_int(&v, legacy, "1.3.6.1.4.1.3704.1.3.8", &err), 0);
    assert_int_equal(v, 0xa9);

    /* the VLEK: csp_id, no hwID */
    _cleanup_x509_ X509 *vlek = load1(SNP "milan_v3_aws_vlek.der");
    _cleanup_free_ char *csp = NULL;
    assert_int_equal(x509_ext_string(&csp, vlek, "1.3.6.1.4.1.3704.1.5", &err), 0);
    assert_string_equal(csp, "CN=cc-us-east-2.amazonaws.com");
    assert_int_equal(x509_ext_raw(&hw, &hw_size, vlek, "1.3.6.1.4.1.3704.1.4", &err), -ENOENT);
}

static void test_load(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_free_ char *a = NULL, *b = NULL;
    size_t as = 0, bs = 0;
    assert_int_equal(util_read_file(&a, &as, VC "amd_milan_ask.pem", 1 << 20, &err), 0);
    assert_int_equal(util_read_file(&b, &bs, VC "amd_milan_ark.pem", 1 << 20, &err), 0);
    _cleanup_free_ char *bundle = xasprintf("junk before\n%s%s", a, b);
    _cleanup_x509_stack_ STACK_OF(X509) *s = NULL;
    assert_int_equal(x509_certs_load(&s, bundle, strlen(bundle), &err), 0);
    assert_int_equal(sk_X509_num(s), 2);
    X509 *one = NULL;
    assert_int_equal(x509_cert_load(&one, bundle, strlen(bundle), &err), -EINVAL);
    assert_non_null(strstr(err->msg, "found 2"));
    err_clear(&err);

    /* DER with a trailing byte, garbage, empty */
    _cleanup_free_ char *der = NULL;
    size_t ds = 0;
    assert_int_equal(util_read_file(&der, &ds, SNP "milan_v2_gosevguest_vcek.der", 1 << 20, &err),
                     0);
    _cleanup_free_ uint8_t *padded = xzalloc(ds + 1);
    memcpy(padded, der, ds);
    assert_int_equal(x509_cert_load(&one, padded, ds + 1, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "trailing"));
    err_clear(&err);
    assert_int_equal(x509_cert_load(&one, "garbage", 7, &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(x509_cert_load(&one, der, ds - 10, &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(x509_cert_load(&one, "", 0, &err), -EINVAL);
    err_clear(&err);

    /* CRLs: the Intel root CRL (DER) */
    _cleanup_free_ char *crl = NULL;
    size_t cs = 0;
    assert_int_equal(
        util_read_file(&crl, &cs, VC "intel_sgx_root_ca_crl_2025-03-20.der", 1 << 20, &err), 0);
    _cleanup_x509_crls_ STACK_OF(X509_CRL) *crls = NULL;
    assert_int_equal(x509_crls_load(&crls, crl, cs, &err), 0);
    assert_int_equal(sk_X509_CRL_num(crls), 1);
    assert_int_equal(x509_crls_load(&crls, a, as, &err), -EINVAL); /* a certificate */
}

/* ---- a CA made here, for CRLs ---- */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
                       EVP_PKEY *issuer_key, bool ca)
{
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    ASN1_TIME_set(X509_getm_notBefore(c), T2020);
    ASN1_TIME_set(X509_getm_notAfter(c), T2030);
    X509_set_pubkey(c, key);
    add_ext(c, issuer ? issuer : c, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    if (ca)
        add_ext(c, issuer ? issuer : c, NID_key_usage, "critical,keyCertSign,cRLSign");
    assert_true(X509_sign(c, issuer_key, EVP_sha256()) > 0);
    return c;
}

static X509_CRL *make_crl(X509 *ca, EVP_PKEY *key, long revoked_serial, time_t next)
{
    X509_CRL *crl = X509_CRL_new();
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
    ASN1_TIME *t = ASN1_TIME_set(NULL, T2025 - 86400);
    X509_CRL_set1_lastUpdate(crl, t);
    ASN1_TIME_set(t, next);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    if (revoked_serial >= 0) {
        X509_REVOKED *rv = X509_REVOKED_new();
        ASN1_INTEGER *sn = ASN1_INTEGER_new();
        ASN1_INTEGER_set(sn, revoked_serial);
        X509_REVOKED_set_serialNumber(rv, sn);
        ASN1_INTEGER_free(sn);
        ASN1_TIME *rt = ASN1_TIME_set(NULL, T2025 - 86400);
        X509_REVOKED_set_revocationDate(rv, rt);
        ASN1_TIME_free(rt);
        X509_CRL_add0_revoked(crl, rv);
    }
    X509_CRL_sort(crl);
    assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
    return crl;
}

static void test_crl(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_pkey_ EVP_PKEY *rk = NULL, *ik = NULL, *lk = NULL;
    assert_int_equal(crypto_key_generate_ec(&rk, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&ik, "P-256", &err), 0);
    assert_int_equal(crypto_key_generate_ec(&lk, "P-256", &err), 0);
    _cleanup_x509_ X509 *root = make_cert("Test Root", 1, rk, NULL, rk, true);
    _cleanup_x509_ X509 *ica = make_cert("Test ICA", 2, ik, root, rk, true);
    _cleanup_x509_ X509 *leaf = make_cert("Test Leaf", 0x1234, lk, ica, ik, false);
    _cleanup_x509_stack_ STACK_OF(X509) *roots = stack1(root);
    _cleanup_x509_stack_ STACK_OF(X509) *inter = stack1(ica);

    x509_verify_opts o = {.at = T2025};
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), 0);

    /* revoked leaf */
    _cleanup_x509_crls_ STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, make_crl(ica, ik, 0x1234, T2025 + 86400 * 30));
    o.crls = crls;
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), X509_E_REVOKED);
    assert_non_null(strstr(err->msg, "serial 1234"));
    assert_non_null(strstr(err->msg, "Test ICA"));
    err_clear(&err);

    /* the same CRL, expired at the verification time */
    o.at = T2025 + 86400 * 60;
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), X509_E_EXPIRED);
    assert_non_null(strstr(err->msg, "CRL"));
    err_clear(&err);
    o.at = T2025;

    /* a CRL that revokes something else: fine; strict mode needs the root's CRL too */
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, make_crl(ica, ik, 99, T2025 + 86400 * 30));
    o.crls = crls;
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), 0);
    o.crl_mode = X509_CRL_ALL;
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), X509_E_REJECTED);
    assert_non_null(strstr(err->msg, "no CRL"));
    err_clear(&err);
    sk_X509_CRL_push(crls, make_crl(root, rk, 2, T2025 + 86400 * 30)); /* revokes the ICA */
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), X509_E_REVOKED);
    assert_non_null(strstr(err->msg, "Test ICA"));
    err_clear(&err);

    /* a CRL signed by the wrong key */
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, make_crl(ica, lk, -1, T2025 + 86400 * 30));
    o.crls = crls;
    o.crl_mode = X509_CRL_AVAILABLE;
    assert_int_equal(x509_verify_chain(NULL, leaf, inter, roots, &o, &err), X509_E_REJECTED);
    assert_non_null(strstr(err->msg, "CRL signature"));
}

static void test_ecdsa_raw(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    static const char *const curves[] = {"P-256", "P-384", "P-521"};
    static const size_t widths[] = {32, 48, 66};
    const char msg[] = "attestation report bytes";
    for (size_t c = 0; c < ARRAY_LEN(curves); c++) {
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        assert_int_equal(crypto_key_generate_ec(&k, curves[c], &err), 0);
        for (int e = 0; e < 2; e++) {
            size_t w = e ? 72 : widths[c]; /* LE zero-extended as SNP does */
            uint8_t r[72], s[72];
            x509_endian end = e ? X509_LITTLE_ENDIAN : X509_BIG_ENDIAN;
            assert_int_equal(x509_ecdsa_sign_raw(r, s, w, end, k, "SHA384", msg, sizeof(msg), &err),
                             0);
            assert_int_equal(
                x509_ecdsa_verify_raw(k, "SHA384", msg, sizeof(msg), r, s, w, end, &err), 0);
            /* wrong byte order, flipped message, flipped r */
            assert_int_equal(x509_ecdsa_verify_raw(k, "SHA384", msg, sizeof(msg), r, s, w,
                                                   e ? X509_BIG_ENDIAN : X509_LITTLE_ENDIAN, &err),
                             -EBADMSG);
            err_clear(&err);
            assert_int_equal(
                x509_ecdsa_verify_raw(k, "SHA384", msg, sizeof(msg) - 1, r, s, w, end, &err),
                -EBADMSG);
            err_clear(&err);
            r[e ? 0 : w - 1] ^= 1;
            assert_int_equal(
                x509_ecdsa_verify_raw(k, "SHA384", msg, sizeof(msg), r, s, w, end, &err), -EBADMSG);
            err_clear(&err);
        }
    }
    _cleanup_pkey_ EVP_PKEY *rsa = NULL;
    uint8_t r[48] = {1}, s[48] = {1};
    assert_int_equal(crypto_key_generate_rsa(&rsa, 2048, &err), 0);
    assert_int_equal(x509_ecdsa_verify_raw(rsa, "SHA384", "x", 1, r, s, 48, X509_BIG_ENDIAN, &err),
                     -EINVAL);
    err_clear(&err);
    assert_int_equal(x509_ecdsa_verify_raw(rsa, "MD5", "x", 1, r, s, 48, X509_BIG_ENDIAN, &err),
                     -EINVAL);
    err_clear(&err);
    /* too narrow for P-384 */
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-384", &err), 0);
    assert_int_equal(x509_ecdsa_sign_raw(r, s, 16, X509_BIG_ENDIAN, k, "SHA384", "x", 1, &err),
                     -EINVAL);
    err_clear(&err);
    /* r or s zero (all bytes, or the 0x00 a wide field adds) never verifies */
    uint8_t good_r[72], good_s[72], zero[72] = {0};
    assert_int_equal(
        x509_ecdsa_sign_raw(good_r, good_s, 72, X509_LITTLE_ENDIAN, k, "SHA384", "x", 1, &err), 0);
    assert_int_equal(
        x509_ecdsa_verify_raw(k, "SHA384", "x", 1, good_r, good_s, 72, X509_LITTLE_ENDIAN, &err),
        0);
    assert_int_equal(
        x509_ecdsa_verify_raw(k, "SHA384", "x", 1, zero, good_s, 72, X509_LITTLE_ENDIAN, &err),
        -EBADMSG);
    err_clear(&err);
    assert_int_equal(
        x509_ecdsa_verify_raw(k, "SHA384", "x", 1, good_r, zero, 72, X509_LITTLE_ENDIAN, &err),
        -EBADMSG);
    err_clear(&err);
    assert_int_equal(
        x509_ecdsa_verify_raw(k, "SHA384", "x", 1, zero, zero, 1, X509_BIG_ENDIAN, &err), -EBADMSG);
    err_clear(&err);
    /* a bad integer size is refused before anything else */
    assert_int_equal(
        x509_ecdsa_verify_raw(k, "SHA384", "x", 1, good_r, good_s, 0, X509_BIG_ENDIAN, &err),
        -EINVAL);
    err_clear(&err);
    assert_int_equal(x509_ecdsa_verify_raw(k, "SHA384", "x", 1, good_r, good_s,
                                           X509_ECDSA_INT_MAX + 1, X509_BIG_ENDIAN, &err),
                     -EINVAL);
}

/* i2d_ECDSA_SIG() of r and s read through BIGNUMs: the encoding verify_raw used to build. */
static size_t der_by_bignum(uint8_t *out, const uint8_t *r, const uint8_t *s, size_t n,
                            x509_endian e)
{
    BIGNUM *br =
        e == X509_LITTLE_ENDIAN ? BN_lebin2bn(r, (int)n, NULL) : BN_bin2bn(r, (int)n, NULL);
    BIGNUM *bs =
        e == X509_LITTLE_ENDIAN ? BN_lebin2bn(s, (int)n, NULL) : BN_bin2bn(s, (int)n, NULL);
    ECDSA_SIG *sig = ECDSA_SIG_new();
    assert_true(br && bs && sig && ECDSA_SIG_set0(sig, br, bs) == 1);
    unsigned char *der = NULL;
    int len = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    assert_true(len > 0 && len <= X509__ECDSA_SIG_DER_MAX);
    memcpy(out, der, (size_t)len);
    OPENSSL_free(der);
    return (size_t)len;
}

/* The DER written straight from raw r and s is OpenSSL's, byte for byte, for every shape. */
static void test_ecdsa_sig_der(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 31, 32, 33, 48, 66, 72, 126, 127, 128, 129, 255, 256};
    uint8_t r[X509_ECDSA_INT_MAX], s[X509_ECDSA_INT_MAX];
    uint8_t want[X509__ECDSA_SIG_DER_MAX], got[X509__ECDSA_SIG_DER_MAX];
    unsigned seed = 1;
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        for (int shape = 0; shape < 64; shape++) {
            for (size_t j = 0; j < n; j++) {
                seed = seed * 1103515245u + 12345u;
                r[j] = (uint8_t)(seed >> 16);
                s[j] = (uint8_t)(seed >> 8);
            }
            /* big-endian view: index 0 is the top byte (the last one for little-endian) */
            x509_endian e = shape & 1 ? X509_LITTLE_ENDIAN : X509_BIG_ENDIAN;
            size_t top = e == X509_LITTLE_ENDIAN ? n - 1 : 0;
            switch (shape / 2 % 8) {
            case 0: /* random */
                break;
            case 1: /* top bit set: needs the 0x00 */
                r[top] |= 0x80;
                s[top] |= 0x80;
                break;
            case 2: /* top bit clear */
                r[top] &= 0x7f;
                s[top] = 0x01;
                break;
            case 3: /* zero */
                memset(r, 0, n);
                memset(s, 0, n);
                break;
            case 4: /* all ones */
                memset(r, 0xff, n);
                memset(s, 0xff, n);
                break;
            case 5: /* leading zero bytes, then a byte with the top bit set */
                for (size_t j = 0; j < n / 2; j++)
                    r[e == X509_LITTLE_ENDIAN ? n - 1 - j : j] = 0;
                r[e == X509_LITTLE_ENDIAN ? n - 1 - n / 2 : n / 2] |= 0x80;
                s[top] = 0;
                break;
            case 6: /* one in the lowest byte only */
                memset(r, 0, n);
                r[e == X509_LITTLE_ENDIAN ? 0 : n - 1] = 1;
                memset(s, 0, n);
                s[e == X509_LITTLE_ENDIAN ? 0 : n - 1] = 0x80;
                break;
            default: /* only the top byte */
                memset(r, 0, n);
                r[top] = 0x7f;
                break;
            }
            size_t wn = der_by_bignum(want, r, s, n, e);
            size_t gn = x509__ecdsa_sig_der(got, r, s, n, e);
            assert_int_equal(gn, wn);
            assert_memory_equal(got, want, wn);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amd_chain_ok),  cmocka_unit_test(test_amd_chain_failures),
        cmocka_unit_test(test_extensions),    cmocka_unit_test(test_load),
        cmocka_unit_test(test_crl),           cmocka_unit_test(test_ecdsa_raw),
        cmocka_unit_test(test_ecdsa_sig_der),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
