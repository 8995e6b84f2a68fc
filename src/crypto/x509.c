/* x509.c - certificate loading, chain verification, extensions, raw ECDSA. */
#include "crypto/x509.h"

#include <errno.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "crypto/crypto_int.h"
#include "util/util.h"

void x509__freep(X509 **c)
{
    X509_free(*c);
}

void x509__stack_freep(STACK_OF(X509) * *s)
{
    sk_X509_pop_free(*s, X509_free);
}

void x509__crls_freep(STACK_OF(X509_CRL) * *s)
{
    sk_X509_CRL_pop_free(*s, X509_CRL_free);
}

static void bio_freep(BIO **b)
{
    BIO_free(*b);
}
#define _cleanup_bio_ __attribute__((cleanup(bio_freep)))

static bool looks_pem(const void *data, size_t size)
{
    static const char tag[] = "-----BEGIN ";
    return size >= sizeof(tag) - 1 && memmem(data, size, tag, sizeof(tag) - 1) != NULL;
}

static int check_input(size_t size, const char *what, cista_error **err)
{
    if (size == 0)
        return err_set(err, -EINVAL, "%s: empty input", what);
    if (size > X509_MAX_INPUT || size > INT_MAX)
        return err_set(err, -EFBIG, "%s: %zu bytes is larger than the limit of %u", what, size,
                       X509_MAX_INPUT);
    return 0;
}

int x509_certs_load(STACK_OF(X509) * *out, const void *data, size_t size, cista_error **err)
{
    int r = check_input(size, "certificate", err);
    if (r < 0)
        return r;
    _cleanup_x509_stack_ STACK_OF(X509) *got = sk_X509_new_null();
    if (!got)
        abort();
    if (looks_pem(data, size)) {
        _cleanup_bio_ BIO *bio = BIO_new_mem_buf(data, (int)size);
        if (!bio)
            abort();
        for (;;) {
            char *name = NULL, *header = NULL;
            unsigned char *der = NULL;
            long len = 0;
            if (!PEM_read_bio(bio, &name, &header, &der, &len)) {
                unsigned long e = ERR_peek_last_error();
                if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                    ERR_clear_error();
                    break;
                }
                return err_set_ssl(err, -EINVAL, "certificate: malformed PEM");
            }
            bool is_cert =
                strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "X509 CERTIFICATE") == 0;
            X509 *c = NULL;
            if (is_cert) {
                const unsigned char *p = der;
                c = d2i_X509(NULL, &p, len);
                if (!c || p != der + len) {
                    X509_free(c);
                    c = NULL;
                }
            }
            OPENSSL_free(name);
            OPENSSL_free(header);
            OPENSSL_free(der);
            if (!is_cert)
                continue;
            if (!c)
                return err_set_ssl(err, -EINVAL, "certificate %d of the PEM bundle: malformed DER",
                                   sk_X509_num(got) + 1);
            if (sk_X509_num(got) + (*out ? sk_X509_num(*out) : 0) >= X509_MAX_CERTS) {
                X509_free(c);
                return err_set(err, -E2BIG, "certificate bundle: more than %d certificates",
                               X509_MAX_CERTS);
            }
            sk_X509_push(got, c);
        }
        if (sk_X509_num(got) == 0)
            return err_set(err, -EINVAL, "certificate: PEM input holds no CERTIFICATE block");
    } else {
        const unsigned char *p = data;
        X509 *c = d2i_X509(NULL, &p, (long)size);
        if (!c)
            return err_set_ssl(err, -EINVAL, "certificate: neither PEM nor valid DER");
        if (p != (const unsigned char *)data + size) {
            X509_free(c);
            return err_set(err, -EINVAL, "certificate: %zu trailing bytes after the DER encoding",
                           size - (size_t)(p - (const unsigned char *)data));
        }
        if (*out && sk_X509_num(*out) >= X509_MAX_CERTS) {
            X509_free(c);
            return err_set(err, -E2BIG, "certificate bundle: more than %d certificates",
                           X509_MAX_CERTS);
        }
        sk_X509_push(got, c);
    }
    if (!*out) {
        *out = steal_ptr(&got);
        return 0;
    }
    while (sk_X509_num(got) > 0)
        sk_X509_push(*out, sk_X509_shift(got));
    return 0;
}

int x509_cert_load(X509 **out, const void *data, size_t size, cista_error **err)
{
    _cleanup_x509_stack_ STACK_OF(X509) *s = NULL;
    int r = x509_certs_load(&s, data, size, err);
    if (r < 0)
        return r;
    if (sk_X509_num(s) != 1)
        return err_set(err, -EINVAL, "certificate: expected one certificate, found %d",
                       sk_X509_num(s));
    *out = sk_X509_shift(s);
    return 0;
}

int x509_certs_load_file(STACK_OF(X509) * *out, const char *path, cista_error **err)
{
    _cleanup_free_ char *data = NULL;
    size_t size = 0;
    int r = util_read_file(&data, &size, path, X509_MAX_INPUT, err);
    if (r < 0)
        return err_wrap(err, "%s", path);
    r = x509_certs_load(out, data, size, err);
    if (r < 0)
        return err_wrap(err, "%s", path);
    return 0;
}

int x509_crls_load(STACK_OF(X509_CRL) * *out, const void *data, size_t size, cista_error **err)
{
    int r = check_input(size, "CRL", err);
    if (r < 0)
        return r;
    if (!*out) {
        *out = sk_X509_CRL_new_null();
        if (!*out)
            abort();
    }
    if (looks_pem(data, size)) {
        _cleanup_bio_ BIO *bio = BIO_new_mem_buf(data, (int)size);
        int n = 0;
        if (!bio)
            abort();
        for (;;) {
            X509_CRL *c = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
            if (!c) {
                unsigned long e = ERR_peek_last_error();
                if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE && n > 0) {
                    ERR_clear_error();
                    break;
                }
                return err_set_ssl(err, -EINVAL, "CRL %d: malformed PEM", n + 1);
            }
            if (sk_X509_CRL_num(*out) >= X509_MAX_CERTS) {
                X509_CRL_free(c);
                return err_set(err, -E2BIG, "more than %d CRLs", X509_MAX_CERTS);
            }
            sk_X509_CRL_push(*out, c);
            n++;
        }
        return 0;
    }
    const unsigned char *p = data;
    X509_CRL *c = d2i_X509_CRL(NULL, &p, (long)size);
    if (!c)
        return err_set_ssl(err, -EINVAL, "CRL: neither PEM nor valid DER");
    if (p != (const unsigned char *)data + size) {
        X509_CRL_free(c);
        return err_set(err, -EINVAL, "CRL: trailing bytes after the DER encoding");
    }
    if (sk_X509_CRL_num(*out) >= X509_MAX_CERTS) {
        X509_CRL_free(c);
        return err_set(err, -E2BIG, "more than %d CRLs", X509_MAX_CERTS);
    }
    sk_X509_CRL_push(*out, c);
    return 0;
}

int x509_cert_sha256(uint8_t out[32], X509 *cert, cista_error **err)
{
    unsigned int n = 0;
    if (!X509_digest(cert, EVP_sha256(), out, &n) || n != 32)
        return err_set_ssl(err, -EIO, "certificate: cannot compute its SHA-256");
    return 0;
}

static char *name_str(const X509_NAME *name)
{
    _cleanup_bio_ BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        abort();
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) < 0)
        return xstrdup("?");
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    return xstrndup(p ? p : "", n > 0 ? (size_t)n : 0);
}

char *x509_subject_str(X509 *cert)
{
    return name_str(X509_get_subject_name(cert));
}

char *x509_issuer_str(X509 *cert)
{
    return name_str(X509_get_issuer_name(cert));
}

static char *name_cn(const X509_NAME *name)
{
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0)
        return NULL;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, s);
    if (n < 0)
        return NULL;
    char *r = xstrndup((const char *)u, (size_t)n);
    OPENSSL_free(u);
    if (strlen(r) != (size_t)n) { /* embedded NUL */
        free(r);
        return NULL;
    }
    return r;
}

char *x509_subject_cn(X509 *cert)
{
    return name_cn(X509_get_subject_name(cert));
}

char *x509_issuer_cn(X509 *cert)
{
    return name_cn(X509_get_issuer_name(cert));
}

static char *asn1_time_str(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return xstrdup("(invalid time)");
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return xstrdup(buf);
}

char *x509_not_before_str(X509 *cert)
{
    return asn1_time_str(X509_get0_notBefore(cert));
}

char *x509_not_after_str(X509 *cert)
{
    return asn1_time_str(X509_get0_notAfter(cert));
}

bool x509_is_self_signed(X509 *cert)
{
    int r = X509_self_signed(cert, 1);
    ERR_clear_error();
    return r == 1;
}

int x509_ext_raw(const uint8_t **out, size_t *out_size, X509 *cert, const char *oid,
                 cista_error **err)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    if (!obj)
        return err_set_ssl(err, -EINVAL, "extension OID %s: not a dotted OID", oid);
    int i = X509_get_ext_by_OBJ(cert, obj, -1);
    int j = i >= 0 ? X509_get_ext_by_OBJ(cert, obj, i) : -1;
    ASN1_OBJECT_free(obj);
    if (i < 0)
        return -ENOENT; /* callers decide whether absence is an error */
    if (j >= 0)
        return err_set(err, -EINVAL, "extension %s appears more than once", oid);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(cert, i));
    *out = ASN1_STRING_get0_data(v);
    *out_size = (size_t)ASN1_STRING_length(v);
    return 0;
}

int x509_ext_int(int64_t *out, X509 *cert, const char *oid, cista_error **err)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    int r = x509_ext_raw(&p, &n, cert, oid, err);
    if (r < 0)
        return r;
    const uint8_t *q = p;
    ASN1_INTEGER *ai = d2i_ASN1_INTEGER(NULL, &q, (long)n);
    int64_t v = 0;
    bool ok = ai && q == p + n && ASN1_INTEGER_get_int64(&v, ai) == 1 && v >= 0;
    ASN1_INTEGER_free(ai);
    if (!ok) {
        ERR_clear_error();
        return err_set(err, -EINVAL, "extension %s: not a non-negative DER INTEGER", oid);
    }
    *out = v;
    return 0;
}

int x509_ext_string(char **out, X509 *cert, const char *oid, cista_error **err)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    int r = x509_ext_raw(&p, &n, cert, oid, err);
    if (r < 0)
        return r;
    const uint8_t *q = p;
    ASN1_STRING *s = d2i_ASN1_PRINTABLE(NULL, &q, (long)n);
    if (!s || q != p + n) {
        ASN1_STRING_free(s);
        ERR_clear_error();
        return err_set(err, -EINVAL, "extension %s: not a DER string", oid);
    }
    unsigned char *u = NULL;
    int len = ASN1_STRING_to_UTF8(&u, s);
    ASN1_STRING_free(s);
    if (len < 0 || memchr(u, 0, (size_t)len)) {
        OPENSSL_free(u);
        ERR_clear_error();
        return err_set(err, -EINVAL, "extension %s: bad string", oid);
    }
    *out = xstrndup((const char *)u, (size_t)len);
    OPENSSL_free(u);
    return 0;
}

/* ---- chain verification ---- */

static void store_ctx_freep(X509_STORE_CTX **c)
{
    X509_STORE_CTX_free(*c);
}

static void store_freep(X509_STORE **s)
{
    X509_STORE_free(*s);
}

/* X509_CRL_AVAILABLE: a certificate whose issuer published no CRL in the set passes. */
static int crl_available_cb(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_UNABLE_TO_GET_CRL) {
        X509_STORE_CTX_set_error(ctx, X509_V_OK);
        return 1;
    }
    return ok;
}

static char *serial_hex(const ASN1_INTEGER *serial)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    char *r = xstrdup(h ? h : "?");
    OPENSSL_free(h);
    BN_free(bn);
    return r;
}

static int chain_error(X509_STORE_CTX *ctx, time_t at, cista_error **err)
{
    int e = X509_STORE_CTX_get_error(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
    _cleanup_free_ char *subj = cur ? x509_subject_str(cur) : xstrdup("(none)");
    _cleanup_free_ char *iss = cur ? x509_issuer_str(cur) : xstrdup("(none)");
    const char *why = X509_verify_cert_error_string(e);
    char atbuf[32];
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(atbuf, sizeof(atbuf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    ERR_clear_error();

    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED: {
        _cleanup_free_ char *na = cur ? x509_not_after_str(cur) : xstrdup("?");
        return err_set(err, X509_E_EXPIRED,
                       "certificate '%s' (chain depth %d) is expired at %s: notAfter %s; use a "
                       "current certificate or verify at a time inside its validity",
                       subj, depth, atbuf, na);
    }
    case X509_V_ERR_CERT_NOT_YET_VALID: {
        _cleanup_free_ char *nb = cur ? x509_not_before_str(cur) : xstrdup("?");
        return err_set(err, X509_E_EXPIRED,
                       "certificate '%s' (chain depth %d) is not yet valid at %s: notBefore %s",
                       subj, depth, atbuf, nb);
    }
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
        return err_set(err, X509_E_EXPIRED,
                       "CRL of issuer '%s' (for chain depth %d) is outside its validity window "
                       "at %s (%s); fetch a fresh CRL",
                       iss, depth, atbuf, why);
    case X509_V_ERR_CERT_REVOKED: {
        _cleanup_free_ char *sn = cur ? serial_hex(X509_get0_serialNumber(cur)) : xstrdup("?");
        return err_set(err, X509_E_REVOKED,
                       "certificate '%s' (chain depth %d) is revoked: serial %s is listed in the "
                       "CRL of '%s'",
                       subj, depth, sn, iss);
    }
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
        return err_set(err, X509_E_REJECTED,
                       "certificate '%s' (chain depth %d): signature by issuer '%s' does not "
                       "verify; the certificate was modified or was not issued by that issuer",
                       subj, depth, iss);
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
        return err_set(err, X509_E_REJECTED,
                       "CRL of issuer '%s' (for chain depth %d): CRL signature does not verify",
                       iss, depth);
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return err_set(err, X509_E_REJECTED,
                       "certificate '%s' (chain depth %d): unknown issuer '%s' (not among the "
                       "given intermediates or the pinned roots: %s)",
                       subj, depth, iss, why);
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        return err_set(err, X509_E_REJECTED,
                       "certificate '%s' (chain depth %d): no CRL from issuer '%s' was given", subj,
                       depth, iss);
    default:
        return err_set(err, X509_E_REJECTED,
                       "certificate '%s' (chain depth %d, issuer '%s'): %s (X509 error %d)", subj,
                       depth, iss, why, e);
    }
}

int x509_verify_chain(STACK_OF(X509) * *out_chain, X509 *leaf, STACK_OF(X509) * intermediates,
                      STACK_OF(X509) * roots, const x509_verify_opts *opts, cista_error **err)
{
    static const x509_verify_opts defaults;
    if (!opts)
        opts = &defaults;
    if (!leaf)
        return err_set(err, -EINVAL, "certificate chain: no leaf certificate");
    if (!roots || sk_X509_num(roots) == 0)
        return err_set(err, -EINVAL, "certificate chain: no trusted root given");

    __attribute__((cleanup(store_freep))) X509_STORE *store = X509_STORE_new();
    __attribute__((cleanup(store_ctx_freep))) X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!store || !ctx)
        abort();
    for (int i = 0; i < sk_X509_num(roots); i++)
        if (!X509_STORE_add_cert(store, sk_X509_value(roots, i)))
            return err_set_ssl(err, -EINVAL, "certificate chain: cannot add root %d", i);

    x509_crl_mode mode = opts->crl_mode;
    if (opts->crls && sk_X509_CRL_num(opts->crls) > 0 && mode == X509_CRL_NONE)
        mode = X509_CRL_AVAILABLE;
    if (!opts->crls || sk_X509_CRL_num(opts->crls) == 0)
        mode = mode == X509_CRL_ALL ? X509_CRL_ALL : X509_CRL_NONE;

    if (!X509_STORE_CTX_init(ctx, store, leaf, intermediates))
        return err_set_ssl(err, -EIO, "certificate chain: cannot set up verification");
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    time_t at = opts->at ? opts->at : time(NULL);
    X509_VERIFY_PARAM_set_time(param, at);
    if (opts->max_depth > 0)
        X509_VERIFY_PARAM_set_depth(param, opts->max_depth);
    if (mode != X509_CRL_NONE) {
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        if (opts->crls)
            X509_STORE_CTX_set0_crls(ctx, opts->crls);
        if (mode == X509_CRL_AVAILABLE)
            X509_STORE_CTX_set_verify_cb(ctx, crl_available_cb);
    }
    ERR_clear_error();
    int ok = X509_verify_cert(ctx);
    if (ok != 1)
        return chain_error(ctx, at, err);
    if (out_chain)
        *out_chain = X509_STORE_CTX_get1_chain(ctx);
    return 0;
}

/* ---- raw ECDSA ---- */

static const EVP_MD *md_by_name(const char *md)
{
    if (!md)
        return NULL;
    /* Fetched once (crypto__md): EVP_sha384() would make every init fetch it again. */
    if (strcmp(md, "SHA256") == 0)
        return crypto__md(CRYPTO_SHA256);
    if (strcmp(md, "SHA384") == 0)
        return crypto__md(CRYPTO_SHA384);
    if (strcmp(md, "SHA512") == 0)
        return crypto__md(CRYPTO_SHA512);
    return NULL;
}

/* The DER length octets of @len at @out; returns how many (at most 3: lengths below 65536). */
static size_t der_put_len(uint8_t *out, size_t len)
{
    if (len < 0x80) {
        out[0] = (uint8_t)len;
        return 1;
    }
    if (len < 0x100) {
        out[0] = 0x81;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = 0x82;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    return 3;
}

/*
 * The DER INTEGER of the unsigned @n-byte @p in @endian order at @out: leading zero bytes
 * dropped, one 0x00 added when the top bit is set (it would read as negative), zero as the single
 * byte 00 - i2d_ECDSA_SIG()'s encoding, without BIGNUMs. Returns the bytes written, at most
 * 4 + @n + 1.
 */
static size_t der_put_uint(uint8_t *out, const uint8_t *p, size_t n, x509_endian endian)
{
    bool le = endian == X509_LITTLE_ENDIAN;
    size_t len = n; /* significant bytes */
    while (len > 0 && p[le ? len - 1 : n - len] == 0)
        len--;
    uint8_t top = len ? p[le ? len - 1 : n - len] : 0;
    bool pad = len == 0 || top & 0x80;
    size_t w = 0;
    out[w++] = 0x02;
    w += der_put_len(out + w, len + pad);
    if (pad)
        out[w++] = 0x00;
    if (le) {
        for (size_t i = len; i > 0; i--)
            out[w++] = p[i - 1];
    } else {
        memcpy(out + w, p + n - len, len);
        w += len;
    }
    return w;
}

size_t x509__ecdsa_sig_der(uint8_t *out, const uint8_t *r, const uint8_t *s, size_t int_size,
                           x509_endian endian)
{
    /* The integers go after the longest SEQUENCE header, then the header goes right before. */
    uint8_t *body = out + 4;
    size_t n = der_put_uint(body, r, int_size, endian);
    n += der_put_uint(body + n, s, int_size, endian);
    uint8_t hdr[4];
    size_t h = 0;
    hdr[h++] = 0x30;
    h += der_put_len(hdr + h, n);
    memmove(out + h, body, n);
    memcpy(out, hdr, h);
    return h + n;
}

/*
 * The arguments both raw-ECDSA directions check: *out gets the digest @md;
 * @key (the @role key: "verification" or "signing") must be an EC key and
 * @int_size in 1..256.
 */
static int ecdsa_args(const EVP_MD **out, const char *md, EVP_PKEY *key, const char *role,
                      size_t int_size, cista_error **err)
{
    *out = md_by_name(md);
    if (!*out)
        return err_set(err, -EINVAL, "ECDSA: unsupported digest %s", md ? md : "(null)");
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
        return err_set(err, -EINVAL, "ECDSA: the %s key is not an EC key", role);
    if (int_size == 0 || int_size > X509_ECDSA_INT_MAX)
        return err_set(err, -EINVAL, "ECDSA: bad integer size %zu", int_size);
    return 0;
}

int x509_ecdsa_verify_raw(EVP_PKEY *pub, const char *md, const void *msg, size_t msg_size,
                          const uint8_t *r, const uint8_t *s, size_t int_size, x509_endian endian,
                          cista_error **err)
{
    const EVP_MD *m = NULL;
    int rc = ecdsa_args(&m, md, pub, "verification", int_size, err);
    if (rc < 0)
        return rc;
    /*
     * The DER signature straight from r and s, the digest in one call, and a bare verification
     * context: EVP_DigestVerifyInit() would fetch the digest by name again under OpenSSL's
     * method-store lock and set up a digest context we do not need. The digest is not set on the
     * context either (ECDSA over a given digest is the same operation; OpenSSL would only check
     * its length). A zero r or s is encoded as 0 and refused by OpenSSL, as before.
     */
    uint8_t der[X509__ECDSA_SIG_DER_MAX], digest[EVP_MAX_MD_SIZE];
    size_t der_len = x509__ecdsa_sig_der(der, r, s, int_size, endian);
    unsigned digest_len = 0;
    if (EVP_Digest(msg, msg_size, digest, &digest_len, m, NULL) != 1)
        return err_set_ssl(err, -EIO, "ECDSA: cannot hash the message");
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    if (!ctx || EVP_PKEY_verify_init(ctx) != 1)
        return err_set_ssl(err, -EINVAL, "ECDSA: cannot initialise verification");
    int v = EVP_PKEY_verify(ctx, der, der_len, digest, digest_len);
    ERR_clear_error();
    return v == 1 ? 0 : err_set(err, -EBADMSG, "ECDSA signature does not verify");
}

static int bn_out(uint8_t *out, size_t n, const BIGNUM *bn, x509_endian endian)
{
    int w = endian == X509_LITTLE_ENDIAN ? BN_bn2lebinpad(bn, out, (int)n)
                                         : BN_bn2binpad(bn, out, (int)n);
    return w == (int)n ? 0 : -1;
}

/* The DER ECDSA-Sig-Value @der as r and s, each @int_size bytes in @endian order. */
static int der_to_raw(uint8_t *r, uint8_t *s, size_t int_size, x509_endian endian,
                      const uint8_t *der, size_t der_len, cista_error **err)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig)
        return err_set_ssl(err, -EIO, "ECDSA: cannot decode our own signature");
    int rc = 0;
    if (bn_out(r, int_size, ECDSA_SIG_get0_r(sig), endian) < 0 ||
        bn_out(s, int_size, ECDSA_SIG_get0_s(sig), endian) < 0)
        rc = err_set(err, -EINVAL, "ECDSA: %zu-byte integers are too small for this curve",
                     int_size);
    ECDSA_SIG_free(sig);
    return rc;
}

/* Largest DER signature: P-521's, 2 * (66 + 1 + 2) + 3 bytes. */
#define ECDSA_DER_MAX 160

struct x509_ecdsa_signer {
    /* Initialised for signing with the digest set, then only duplicated: OpenSSL fetches the
     * signature algorithm once, here, instead of under its method-store lock per signature. */
    EVP_PKEY_CTX *tmpl;
    const EVP_MD *md;
};

int x509_ecdsa_signer_new(x509_ecdsa_signer **out, EVP_PKEY *priv, const char *md,
                          cista_error **err)
{
    const EVP_MD *m = NULL;
    int rc = ecdsa_args(&m, md, priv, "signing", 1, err);
    if (rc < 0)
        return rc;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    if (!ctx)
        abort();
    int size = EVP_PKEY_get_size(priv);
    if (EVP_PKEY_sign_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, m) != 1 || size <= 0 ||
        size > ECDSA_DER_MAX) {
        EVP_PKEY_CTX_free(ctx);
        return err_set_ssl(err, -EINVAL, "ECDSA: cannot sign with this key");
    }
    x509_ecdsa_signer *sg = xzalloc(sizeof(*sg));
    sg->tmpl = ctx;
    sg->md = m;
    *out = sg;
    return 0;
}

void x509_ecdsa_signer_free(x509_ecdsa_signer *sg)
{
    if (!sg)
        return;
    EVP_PKEY_CTX_free(sg->tmpl);
    free(sg);
}

int x509_ecdsa_signer_sign(const x509_ecdsa_signer *sg, uint8_t *r, uint8_t *s, size_t int_size,
                           x509_endian endian, const void *msg, size_t msg_size, cista_error **err)
{
    if (int_size == 0 || int_size > X509_ECDSA_INT_MAX)
        return err_set(err, -EINVAL, "ECDSA: bad integer size %zu", int_size);
    uint8_t digest[EVP_MAX_MD_SIZE], der[ECDSA_DER_MAX];
    unsigned digest_len = 0;
    size_t der_len = sizeof(der);
    if (EVP_Digest(msg, msg_size, digest, &digest_len, sg->md, NULL) != 1)
        return err_set_ssl(err, -EIO, "ECDSA: cannot hash the message");
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_dup(sg->tmpl);
    int ok = ctx && EVP_PKEY_sign(ctx, der, &der_len, digest, digest_len) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok)
        return err_set_ssl(err, -EIO, "ECDSA: signing failed");
    return der_to_raw(r, s, int_size, endian, der, der_len, err);
}

int x509_ecdsa_sign_raw(uint8_t *r, uint8_t *s, size_t int_size, x509_endian endian, EVP_PKEY *priv,
                        const char *md, const void *msg, size_t msg_size, cista_error **err)
{
    x509_ecdsa_signer *sg = NULL;
    int rc = x509_ecdsa_signer_new(&sg, priv, md, err);
    if (rc < 0)
        return rc;
    rc = x509_ecdsa_signer_sign(sg, r, s, int_size, endian, msg, msg_size, err);
    x509_ecdsa_signer_free(sg);
    return rc;
}
