/*
 * jwk.c - JSON Web Keys (RFC 7517, parameters of RFC 7518 §6) for RSA and
 * EC keys, and RFC 7638 thumbprints (see jose.h).
 *
 * A JWK can come from an untrusted peer (the "epk" of a JWE), so every
 * member is checked: coordinates have their exact length, EC points must be
 * on the named curve, and private parts must match the public ones.
 */
#include "crypto/jose.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/crypto_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

/* ---- key -> JWK ---- */

/* Set @member to the base64url big-endian bytes of a key parameter (@pad 0: minimal length). */
static int put_bn(json_t *jwk, const char *member, const EVP_PKEY *key, const char *param,
                  size_t pad, bool required, cista_error **err)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(key, param, &bn) != 1) {
        ERR_clear_error();
        if (!required)
            return 0;
        return err_set(err, -EINVAL, "JWK: the key lacks its \"%s\" parameter", member);
    }
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    if (n == 0)
        n = 1;
    uint8_t *buf = xmalloc(n);
    int ok = BN_bn2binpad(bn, buf, (int)n) == (int)n;
    BN_clear_free(bn);
    if (!ok) {
        crypto_free_secret(buf, n);
        return err_set(err, -EINVAL, "JWK: parameter \"%s\" is larger than %zu bytes", member, n);
    }
    char *b64 = b64url_encode(buf, n);
    crypto_free_secret(buf, n);
    json_object_set_new(jwk, member, json_string(b64));
    crypto_free_secret(b64, strlen(b64));
    return 0;
}

/*
 * "x" and "y" from the key's uncompressed point encoding: one parameter query instead of two
 * BIGNUM ones (a quarter of the cost; this runs for every JWE's ephemeral key). False when the
 * key encodes its point otherwise (compressed form): the caller falls back to put_bn().
 */
static bool put_ec_point(json_t *jwk, const EVP_PKEY *key, size_t field_size)
{
    uint8_t pt[1 + 2 * 66];
    size_t n = 0;
    if (field_size > 66 || EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                                           pt, sizeof(pt), &n) != 1) {
        ERR_clear_error();
        return false;
    }
    if (n != 1 + 2 * field_size || pt[0] != 0x04)
        return false;
    char *x = b64url_encode(pt + 1, field_size),
         *y = b64url_encode(pt + 1 + field_size, field_size);
    json_object_set_new(jwk, "x", json_string(x));
    json_object_set_new(jwk, "y", json_string(y));
    free(x);
    free(y);
    return true;
}

int jwk_from_key(json_t **out, EVP_PKEY *key, bool include_private, cista_error **err)
{
    if (!key)
        return err_set(err, -EINVAL, "JWK: no key");
    if (include_private && !crypto__key_has_private(key))
        return err_set(err, -EINVAL, "JWK: a private JWK was asked for a public key");
    _cleanup_json_ json_t *jwk = json_object();
    int r = 0;
    if (crypto_key_is_rsa(key)) {
        json_object_set_new(jwk, "kty", json_string("RSA"));
        r = put_bn(jwk, "n", key, OSSL_PKEY_PARAM_RSA_N, 0, true, err);
        if (r == 0)
            r = put_bn(jwk, "e", key, OSSL_PKEY_PARAM_RSA_E, 0, true, err);
        if (r == 0 && include_private) {
            r = put_bn(jwk, "d", key, OSSL_PKEY_PARAM_RSA_D, 0, true, err);
            /* The CRT values go together or not at all (RFC 7518 §6.3.2). */
            BIGNUM *p = NULL;
            bool crt = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_FACTOR1, &p) == 1;
            BN_clear_free(p);
            ERR_clear_error();
            static const char *const crt_names[][2] = {
                {"p", OSSL_PKEY_PARAM_RSA_FACTOR1},       {"q", OSSL_PKEY_PARAM_RSA_FACTOR2},
                {"dp", OSSL_PKEY_PARAM_RSA_EXPONENT1},    {"dq", OSSL_PKEY_PARAM_RSA_EXPONENT2},
                {"qi", OSSL_PKEY_PARAM_RSA_COEFFICIENT1},
            };
            for (size_t i = 0; crt && r == 0 && i < ARRAY_LEN(crt_names); i++)
                r = put_bn(jwk, crt_names[i][0], key, crt_names[i][1], 0, true, err);
        }
    } else if (crypto_key_is_ec(key)) {
        const crypto__curve *c = crypto__curve_of_key(key);
        if (!c)
            return err_set(err, -ENOTSUP, "JWK: EC keys must be on P-256, P-384 or P-521");
        json_object_set_new(jwk, "kty", json_string("EC"));
        json_object_set_new(jwk, "crv", json_string(c->crv));
        if (!put_ec_point(jwk, key, c->field_size)) {
            r = put_bn(jwk, "x", key, OSSL_PKEY_PARAM_EC_PUB_X, c->field_size, true, err);
            if (r == 0)
                r = put_bn(jwk, "y", key, OSSL_PKEY_PARAM_EC_PUB_Y, c->field_size, true, err);
        }
        if (r == 0 && include_private)
            r = put_bn(jwk, "d", key, OSSL_PKEY_PARAM_PRIV_KEY, c->field_size, true, err);
    } else {
        return err_set(err, -ENOTSUP, "JWK: only RSA and EC keys are supported, not %s",
                       EVP_PKEY_get0_type_name(key));
    }
    if (r < 0)
        return r;
    *out = steal_ptr(&jwk);
    return 0;
}

/* ---- JWK -> key ---- */

typedef struct {
    uint8_t *data;
    size_t size;
} bytes;

static void bytes_clear(bytes *b)
{
    crypto_free_secret(b->data, b->size);
    b->data = NULL;
    b->size = 0;
}

/* Decode base64url member @name; absent leaves @b empty (an error when @required). */
static int get_b64(bytes *b, const json_t *jwk, const char *name, bool required, const char *what,
                   cista_error **err)
{
    const char *s = NULL;
    int r = js_get_string(&s, jwk, name, required, what, err);
    if (r < 0 || !s)
        return r;
    r = b64url_decode(&b->data, &b->size, s, strlen(s), err);
    if (r < 0)
        return err_wrap(err, "%s: member \"%s\"", what, name);
    if (b->size == 0)
        return err_set(err, -EINVAL, "%s: member \"%s\" is empty", what, name);
    return 0;
}

static void bld_freep(OSSL_PARAM_BLD **b)
{
    OSSL_PARAM_BLD_free(*b);
}

static void bn_freep(BIGNUM **b)
{
    BN_clear_free(*b);
}

static void params_freep(OSSL_PARAM **p)
{
    OSSL_PARAM_free(*p);
}

static BIGNUM *bn_of(const bytes *b)
{
    BIGNUM *bn = BN_bin2bn(b->data, (int)b->size, NULL);
    if (!bn)
        abort();
    return bn;
}

static int fromdata(EVP_PKEY **out, const char *type, OSSL_PARAM_BLD *bld, int selection,
                    const char *what, cista_error **err)
{
    __attribute__((cleanup(params_freep))) OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    if (!params)
        abort();
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1)
        return err_set_ssl(err, -EIO, "%s: cannot set up OpenSSL key import", what);
    if (EVP_PKEY_fromdata(ctx, out, selection, params) != 1)
        return err_set_ssl(err, -EINVAL, "%s: OpenSSL rejects the key parameters", what);
    return 0;
}

/* Run OpenSSL's full consistency checks on a freshly imported key. */
static int check_key(EVP_PKEY *key, bool priv, const char *what, cista_error **err)
{
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (!ctx)
        abort();
    if (EVP_PKEY_public_check(ctx) != 1)
        return err_set_ssl(err, -EINVAL,
                           "%s: the public key fails validation (for EC: the point is not on the "
                           "curve or is the point at infinity; an invalid-curve attack or a "
                           "corrupt key)",
                           what);
    if (priv && (EVP_PKEY_private_check(ctx) != 1 || EVP_PKEY_pairwise_check(ctx) != 1))
        return err_set_ssl(err, -EINVAL, "%s: the private key does not match the public key", what);
    return 0;
}

static int rsa_from_jwk(EVP_PKEY **out, const json_t *jwk, cista_error **err)
{
    static const char *const what = "RSA JWK";
    static const char *const names[] = {"n", "e", "d", "p", "q", "dp", "dq", "qi"};
    static const char *const params[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    bytes v[8] = {{0}};
    int r = 0;
    if (json_object_get(jwk, "oth"))
        r = err_set(err, -ENOTSUP, "%s: multi-prime keys (\"oth\") are not supported", what);
    for (size_t i = 0; r == 0 && i < 8; i++)
        r = get_b64(&v[i], jwk, names[i], i < 2, what, err);
    size_t crt = 0;
    for (size_t i = 3; i < 8; i++)
        crt += v[i].data != NULL;
    if (r == 0 && crt != 0 && (crt != 5 || !v[2].data))
        r = err_set(err, -EINVAL,
                    "%s: \"d\", \"p\", \"q\", \"dp\", \"dq\", \"qi\" go together; "
                    "some are missing",
                    what);
    if (r == 0 && (v[0].size * 8 > CRYPTO__RSA_MAX_BITS || v[1].size > 8))
        r = err_set(err, -EINVAL, "%s: modulus or exponent too large", what);
    if (r == 0) {
        __attribute__((cleanup(bld_freep))) OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        BIGNUM *bns[8] = {NULL};
        for (size_t i = 0; i < 8; i++) {
            if (!v[i].data)
                continue;
            bns[i] = bn_of(&v[i]);
            if (i >= 2)
                BN_set_flags(bns[i], BN_FLG_CONSTTIME);
            if (!OSSL_PARAM_BLD_push_BN(bld, params[i], bns[i]))
                abort();
        }
        bool priv = v[2].data != NULL;
        r = fromdata(out, "RSA", bld, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, what, err);
        for (size_t i = 0; i < 8; i++)
            BN_clear_free(bns[i]);
        /* OpenSSL's pairwise check needs the CRT values; with d alone, check the public half. */
        if (r == 0)
            r = check_key(*out, priv && crt == 5, what, err);
        if (r < 0) {
            EVP_PKEY_free(*out);
            *out = NULL;
        }
    }
    for (size_t i = 0; i < 8; i++)
        bytes_clear(&v[i]);
    return r;
}

/* Import the uncompressed point @pub on @c, with the private scalar @d when it is set. */
static int ec_fromdata(EVP_PKEY **out, const crypto__curve *c, const uint8_t *pub, size_t pub_size,
                       const bytes *d, const char *what)
{
    __attribute__((cleanup(bld_freep))) OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    __attribute__((cleanup(bn_freep))) BIGNUM *dbn = NULL;
    if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, c->group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_size))
        abort();
    if (d->data) {
        dbn = bn_of(d);
        BN_set_flags(dbn, BN_FLG_CONSTTIME);
        if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, dbn))
            abort();
    }
    return fromdata(out, "EC", bld, d->data ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, what, NULL);
}

static int ec_from_jwk(EVP_PKEY **out, const json_t *jwk, bool quick, cista_error **err)
{
    static const char *const what = "EC JWK";
    const char *crv = NULL;
    int r = js_get_string(&crv, jwk, "crv", true, what, err);
    if (r < 0)
        return r;
    const crypto__curve *c = crypto__curve_by_crv(crv);
    if (!c)
        return err_set(err, -ENOTSUP, "%s: curve \"%s\" is not P-256, P-384 or P-521", what, crv);
    bytes x = {0}, y = {0}, d = {0};
    r = get_b64(&x, jwk, "x", true, what, err);
    if (r == 0)
        r = get_b64(&y, jwk, "y", true, what, err);
    if (r == 0)
        r = get_b64(&d, jwk, "d", false, what, err);
    /* RFC 7518 §6.2.1.2: coordinates are exactly the field size, zero-padded. */
    if (r == 0 &&
        (x.size != c->field_size || y.size != c->field_size || (d.data && d.size != c->field_size)))
        r = err_set(err, -EINVAL, "%s: on %s, \"x\", \"y\" and \"d\" must be %zu bytes each", what,
                    crv, c->field_size);
    if (r == 0) {
        size_t pub_size = 1 + 2 * c->field_size;
        uint8_t pub[1 + 2 * 66];
        pub[0] = 0x04; /* uncompressed point */
        memcpy(pub + 1, x.data, c->field_size);
        memcpy(pub + 1 + c->field_size, y.data, c->field_size);
        /*
         * OpenSSL refuses off-curve points here already; say so in our words. The partial path
         * sets the point on a copy of the curve's parameters key (EVP_PKEY_dup: an EC key owns
         * its group, so the copy is the cheapest way to a new key of that curve), a quarter of
         * the cost of building the key from the curve's name.
         */
        bool partial = quick && !d.data;
        EVP_PKEY *params = partial ? crypto__curve_params(c) : NULL;
        if (params) {
            *out = EVP_PKEY_dup(params);
            r = *out && EVP_PKEY_set1_encoded_public_key(*out, pub, pub_size) == 1 ? 0 : -EINVAL;
        } else {
            r = ec_fromdata(out, c, pub, pub_size, &d, what);
        }
        if (r < 0)
            r = err_set_ssl(
                err, -EINVAL,
                "%s: (x, y) is not a point on %s; refusing it (an invalid-curve attack or a "
                "corrupt key)",
                what, crv);
        /*
         * The partial check (EVP_PKEY_public_check_quick) would repeat what either import just
         * did: both decode the point with EC_POINT_oct2point(), which refuses a coordinate >= p
         * and, through EC_POINT_set_affine_coordinates(), a point off the curve; and the
         * uncompressed form (04 || x || y, built above) cannot encode the point at infinity.
         * test_jwk_partial checks all three refusals. The full check (jwk_to_key) stays.
         */
        if (r == 0 && !partial)
            r = check_key(*out, d.data != NULL, what, err);
        if (r < 0) {
            EVP_PKEY_free(*out);
            *out = NULL;
        }
    }
    bytes_clear(&x);
    bytes_clear(&y);
    bytes_clear(&d);
    return r;
}

int jwk_to_key(EVP_PKEY **out, const json_t *jwk, cista_error **err)
{
    if (!json_is_object(jwk))
        return err_set(err, -EINVAL, "JWK: expected a JSON object");
    const char *kty = NULL;
    int r = js_get_string(&kty, jwk, "kty", true, "JWK", err);
    if (r < 0)
        return r;
    EVP_PKEY *key = NULL;
    if (strcmp(kty, "RSA") == 0)
        r = rsa_from_jwk(&key, jwk, err);
    else if (strcmp(kty, "EC") == 0)
        r = ec_from_jwk(&key, jwk, false, err);
    else if (strcmp(kty, "oct") == 0)
        return err_set(err, -ENOTSUP,
                       "JWK: \"oct\" is a symmetric key; pass its bytes as jwe_key.secret");
    else
        return err_set(err, -ENOTSUP, "JWK: key type \"%s\" is not supported (RSA, EC)", kty);
    if (r < 0)
        return r;
    *out = key;
    return 0;
}

int jwk_to_key_partial(EVP_PKEY **out, const json_t *jwk, cista_error **err)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    if (!kty || strcmp(kty, "EC") != 0 || json_object_get(jwk, "d"))
        return jwk_to_key(out, jwk, err);
    EVP_PKEY *key = NULL;
    int r = ec_from_jwk(&key, jwk, true, err);
    if (r < 0)
        return r;
    *out = key;
    return 0;
}

/* ---- RFC 7638 thumbprint ---- */

int jwk_thumbprint(char **out, const json_t *jwk, cista_error **err)
{
    static const char *const rsa[] = {"e", "kty", "n", NULL};
    static const char *const ec[] = {"crv", "kty", "x", "y", NULL};
    static const char *const oct[] = {"k", "kty", NULL};
    const char *kty = NULL;
    int r = js_get_string(&kty, jwk, "kty", true, "JWK", err);
    if (r < 0)
        return r;
    const char *const *members = strcmp(kty, "RSA") == 0   ? rsa
                                 : strcmp(kty, "EC") == 0  ? ec
                                 : strcmp(kty, "oct") == 0 ? oct
                                                           : NULL;
    if (!members)
        return err_set(err, -ENOTSUP, "JWK thumbprint: key type \"%s\" is not supported", kty);
    /* The required members only, sorted by name, no whitespace (RFC 7638 §3.2). */
    _cleanup_json_ json_t *req = json_object();
    for (size_t i = 0; members[i]; i++) {
        const char *v = NULL;
        r = js_get_string(&v, jwk, members[i], true, "JWK", err);
        if (r < 0)
            return r;
        json_object_set_new(req, members[i], json_string(v));
    }
    char *text = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        abort();
    uint8_t digest[32];
    crypto_hash_oneshot(CRYPTO_SHA256, text, strlen(text), digest);
    free(text);
    *out = b64url_encode(digest, sizeof(digest));
    return 0;
}
