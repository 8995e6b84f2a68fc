/*
 * keys.c - loading, generating and describing RSA and EC keys (see crypto.h).
 *
 * Key files are parsed with OpenSSL's decoders, one PEM block at a time, so
 * each container (PKCS#8, SPKI, PKCS#1, SEC1, X.509) is named in errors.
 * Encrypted keys are refused rather than prompting for a passphrase.
 */
#include "crypto/crypto.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <string.h>

#include "crypto/crypto_int.h"
#include "crypto/jose.h"
#include "util/json.h"
#include "util/util.h"

static const crypto__curve g_curves[] = {
    {"P-256", "prime256v1", 32},
    {"P-384", "secp384r1", 48},
    {"P-521", "secp521r1", 66},
};

/*
 * Domain-parameters-only keys, one per curve, made once. Generating a key from one, or importing
 * a public point into a copy of one, skips building the curve's group from its name (and
 * OpenSSL 3.0's algorithm lookups by name) on every call: about half the cost of a P-256 key
 * generation or import. Never modified after creation, so any thread may read them.
 */
static EVP_PKEY *g_curve_params[ARRAY_LEN(g_curves)];
static pthread_once_t g_curve_params_once = PTHREAD_ONCE_INIT;

static void curve_params_init(void)
{
    for (size_t i = 0; i < ARRAY_LEN(g_curves); i++) {
        OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                           (char *)g_curves[i].group, 0),
                          OSSL_PARAM_construct_end()};
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
            EVP_PKEY_fromdata(ctx, &g_curve_params[i], EVP_PKEY_KEY_PARAMETERS, p) != 1)
            g_curve_params[i] = NULL; /* callers fall back to the by-name paths */
        EVP_PKEY_CTX_free(ctx);
    }
    ERR_clear_error();
}

EVP_PKEY *crypto__curve_params(const crypto__curve *c)
{
    pthread_once(&g_curve_params_once, curve_params_init);
    return g_curve_params[c - g_curves];
}

const crypto__curve *crypto__curve_by_crv(const char *crv)
{
    for (size_t i = 0; crv && i < ARRAY_LEN(g_curves); i++)
        if (strcmp(g_curves[i].crv, crv) == 0)
            return &g_curves[i];
    return NULL;
}

const crypto__curve *crypto__curve_of_key(const EVP_PKEY *key)
{
    char group[64];
    size_t len = 0;
    if (!key || !EVP_PKEY_is_a(key, "EC") ||
        EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1) {
        ERR_clear_error();
        return NULL;
    }
    /* OpenSSL reports the SN of the curve; accept the NIST aliases too. */
    static const char *const aliases[][2] = {
        {"P-256", "prime256v1"},
        {"secp256r1", "prime256v1"},
        {"P-384", "secp384r1"},
        {"P-521", "secp521r1"},
    };
    const char *g = group;
    for (size_t i = 0; i < ARRAY_LEN(aliases); i++)
        if (strcmp(group, aliases[i][0]) == 0)
            g = aliases[i][1];
    for (size_t i = 0; i < ARRAY_LEN(g_curves); i++)
        if (strcmp(g_curves[i].group, g) == 0)
            return &g_curves[i];
    return NULL;
}

bool crypto__key_has_private(const EVP_PKEY *key)
{
    const char *param = NULL;
    if (!key)
        return false;
    if (EVP_PKEY_is_a(key, "RSA"))
        param = OSSL_PKEY_PARAM_RSA_D;
    else if (EVP_PKEY_is_a(key, "EC"))
        param = OSSL_PKEY_PARAM_PRIV_KEY;
    else
        return false;
    BIGNUM *bn = NULL;
    int ok = EVP_PKEY_get_bn_param(key, param, &bn);
    BN_clear_free(bn);
    ERR_clear_error();
    return ok == 1;
}

void crypto__pkey_freep(EVP_PKEY **k)
{
    EVP_PKEY_free(*k);
    *k = NULL;
}

bool crypto_key_is_rsa(const EVP_PKEY *key)
{
    return key && EVP_PKEY_is_a(key, "RSA");
}

bool crypto_key_is_ec(const EVP_PKEY *key)
{
    return key && EVP_PKEY_is_a(key, "EC");
}

const char *crypto_key_ec_crv(const EVP_PKEY *key)
{
    const crypto__curve *c = crypto__curve_of_key(key);
    return c ? c->crv : NULL;
}

bool crypto_key_public_eq(const EVP_PKEY *a, const EVP_PKEY *b)
{
    if (!a || !b)
        return false;
    int r = EVP_PKEY_eq(a, b);
    ERR_clear_error();
    return r == 1;
}

/* ---- loading ---- */

/* Never prompt: an encrypted key is an error, not a terminal dialogue. */
static int no_passphrase(char *pass, size_t pass_size, size_t *pass_len, const OSSL_PARAM params[],
                         void *arg)
{
    (void)pass, (void)pass_size, (void)params, (void)arg;
    *pass_len = 0;
    return 0;
}

static EVP_PKEY *decode_der(const uint8_t *der, size_t size, const char *structure,
                            const char *keytype, int selection)
{
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, "DER", structure, keytype, selection, NULL, NULL);
    if (!dctx)
        return NULL;
    OSSL_DECODER_CTX_set_passphrase_cb(dctx, no_passphrase, NULL);
    const unsigned char *p = der;
    size_t left = size;
    if (OSSL_DECODER_from_data(dctx, &p, &left) != 1 || left != 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error();
    return pkey;
}

/*
 * The key type of a PKCS#8 PrivateKeyInfo, from its AlgorithmIdentifier: a decoder told the type
 * tries one candidate instead of every provider's (~0.12 instead of ~0.46 ms warm, half of that
 * cold: a key load in every `cista run`). NULL when unknown: the decoder then tries them all.
 */
static const char *pkcs8_keytype(const uint8_t *der, size_t size)
{
    const unsigned char *p = der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)size);
    const ASN1_OBJECT *alg = NULL;
    const char *type = NULL;
    if (p8 && PKCS8_pkey_get0(&alg, NULL, NULL, NULL, p8) == 1) {
        switch (OBJ_obj2nid(alg)) {
        case NID_X9_62_id_ecPublicKey:
            type = "EC";
            break;
        case NID_rsaEncryption:
            type = "RSA";
            break;
        case NID_rsassaPss:
            type = "RSA-PSS";
            break;
        default:
            break;
        }
    }
    PKCS8_PRIV_KEY_INFO_free(p8); /* clears the key octets */
    ERR_clear_error();
    return type;
}

static EVP_PKEY *pubkey_of_cert(const uint8_t *der, size_t size)
{
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)size);
    if (!cert)
        return NULL;
    EVP_PKEY *k = X509_get_pubkey(cert);
    X509_free(cert);
    return k;
}

/* One PEM block: 1 and *out set when it holds a key, 0 to skip it, < 0 on error. */
static int pem_block(EVP_PKEY **out, const char *name, const char *header, const uint8_t *der,
                     size_t size, cista_error **err)
{
    static const struct {
        const char *name, *structure, *keytype;
        int selection;
    } kinds[] = {
        {"PRIVATE KEY", "PrivateKeyInfo", NULL, EVP_PKEY_KEYPAIR},
        {"RSA PRIVATE KEY", "type-specific", "RSA", EVP_PKEY_KEYPAIR},
        {"EC PRIVATE KEY", "type-specific", "EC", EVP_PKEY_KEYPAIR},
        {"PUBLIC KEY", "SubjectPublicKeyInfo", NULL, EVP_PKEY_PUBLIC_KEY},
        {"RSA PUBLIC KEY", "type-specific", "RSA", EVP_PKEY_PUBLIC_KEY},
    };
    if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0 || (header && *header))
        return err_set(err, -ENOTSUP,
                       "the PEM block \"%s\" is encrypted; store the key unencrypted (for "
                       "example `openssl pkey -in KEY -out PLAIN`) inside the TEE",
                       name);
    if (strcmp(name, "CERTIFICATE") == 0) {
        *out = pubkey_of_cert(der, size);
        if (!*out)
            return err_set_ssl(err, -EINVAL,
                               "the PEM CERTIFICATE is not a valid X.509 certificate");
        return 1;
    }
    if (strcmp(name, "PUBLIC KEY") == 0) {
        const unsigned char *p = der;
        *out = d2i_PUBKEY(NULL, &p, (long)size);
        if (*out && p == der + size)
            return 1;
        EVP_PKEY_free(*out);
        *out = NULL;
        ERR_clear_error();
    }
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
        if (strcmp(name, kinds[i].name) != 0)
            continue;
        const char *keytype = kinds[i].keytype;
        if (!keytype && kinds[i].selection == EVP_PKEY_KEYPAIR)
            keytype = pkcs8_keytype(der, size);
        *out = decode_der(der, size, kinds[i].structure, keytype, kinds[i].selection);
        if (!*out)
            return err_set(err, -EINVAL, "the PEM block \"%s\" does not hold a valid %s key", name,
                           kinds[i].keytype ? kinds[i].keytype : "RSA or EC");
        return 1;
    }
    return 0; /* EC PARAMETERS and the like */
}

static int load_pem(EVP_PKEY **out, const void *data, size_t size, cista_error **err)
{
    BIO *bio = BIO_new_mem_buf(data, (int)size);
    if (!bio)
        abort();
    int r = 0;
    while (r == 0) {
        char *name = NULL, *header = NULL;
        unsigned char *der = NULL;
        long len = 0;
        if (PEM_read_bio(bio, &name, &header, &der, &len) != 1) {
            ERR_clear_error();
            r = err_set(err, -EINVAL,
                        "no PEM block holds a key (expected PRIVATE KEY, RSA PRIVATE KEY, EC "
                        "PRIVATE KEY, PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)");
            break;
        }
        r = pem_block(out, name, header, der, (size_t)len, err);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_clear_free(der, (size_t)len);
    }
    BIO_free(bio);
    return r < 0 ? r : 0;
}

static int load_der(EVP_PKEY **out, const void *data, size_t size, cista_error **err)
{
    /*
     * A public key in SubjectPublicKeyInfo DER is what verifiers load on every
     * call (TPM AKs, tee-pubkeys): d2i_PUBKEY decodes it without setting up a
     * decoder context per candidate format, which costs ~10x more.
     */
    const unsigned char *p = data;
    EVP_PKEY *spki = d2i_PUBKEY(NULL, &p, (long)size);
    if (spki && p == (const unsigned char *)data + size) {
        *out = spki;
        return 0;
    }
    EVP_PKEY_free(spki);
    ERR_clear_error();

    static const struct {
        const char *structure, *keytype;
        int selection;
    } kinds[] = {
        {"PrivateKeyInfo", NULL, EVP_PKEY_KEYPAIR},
        {"SubjectPublicKeyInfo", NULL, EVP_PKEY_PUBLIC_KEY},
        {"type-specific", "RSA", EVP_PKEY_KEYPAIR},
        {"type-specific", "EC", EVP_PKEY_KEYPAIR},
        {"type-specific", "RSA", EVP_PKEY_PUBLIC_KEY},
    };
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
        const char *keytype = kinds[i].keytype;
        if (!keytype && kinds[i].selection == EVP_PKEY_KEYPAIR)
            keytype = pkcs8_keytype(data, size);
        *out = decode_der(data, size, kinds[i].structure, keytype, kinds[i].selection);
        if (*out)
            return 0;
    }
    if ((*out = pubkey_of_cert(data, size)) != NULL)
        return 0;
    ERR_clear_error();
    return err_set(err, -EINVAL,
                   "not a PEM, DER (PKCS#8, SubjectPublicKeyInfo, PKCS#1, SEC1, X.509) or JWK "
                   "key, or an encrypted one");
}

static int load_jwk(EVP_PKEY **out, const void *data, size_t size, cista_error **err)
{
    _cleanup_json_ json_t *jwk = NULL;
    int r = js_parse_object(&jwk, data, size, CRYPTO__KEY_MAX_SIZE, "JWK", err);
    if (r < 0)
        return r;
    return jwk_to_key(out, jwk, err);
}

int crypto_key_load(EVP_PKEY **out, const void *data, size_t size, bool want_private,
                    cista_error **err)
{
    if (size == 0)
        return err_set(err, -EINVAL, "key: the input is empty");
    if (size > CRYPTO__KEY_MAX_SIZE)
        return err_set(err, -EMSGSIZE, "key: %zu bytes is more than the limit of %u", size,
                       CRYPTO__KEY_MAX_SIZE);
    const char *s = data;
    size_t i = 0;
    while (i < size && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    _cleanup_pkey_ EVP_PKEY *key = NULL;
    int r;
    if (i < size && s[i] == '{')
        r = load_jwk(&key, data, size, err);
    else if (memmem(data, size, "-----BEGIN ", 11))
        r = load_pem(&key, data, size, err);
    else
        r = load_der(&key, data, size, err);
    if (r < 0)
        return r;
    if (!crypto_key_is_rsa(key) && !crypto_key_is_ec(key))
        return err_set(err, -ENOTSUP,
                       "key: a %s key; only RSA and EC (P-256, P-384, P-521) keys "
                       "are supported",
                       EVP_PKEY_get0_type_name(key));
    if (crypto_key_is_ec(key) && !crypto__curve_of_key(key))
        return err_set(err, -ENOTSUP, "key: EC keys must be on P-256, P-384 or P-521");
    if (want_private && !crypto__key_has_private(key))
        return err_set(err, -EINVAL,
                       "key: holds only a public key, but a private key is needed here");
    *out = steal_ptr(&key);
    return 0;
}

int crypto_key_load_file(EVP_PKEY **out, const char *path, bool want_private, cista_error **err)
{
    char *data = NULL;
    size_t size = 0;
    int r = util_read_file(&data, &size, path, CRYPTO__KEY_MAX_SIZE, err);
    if (r < 0)
        return err_wrap(err, "key file %s", path);
    r = crypto_key_load(out, data, size, want_private, err);
    crypto_free_secret(data, size);
    if (r < 0)
        return err_wrap(err, "key file %s", path);
    return 0;
}

/* ---- generation and output ---- */

int crypto_key_generate_ec(EVP_PKEY **out, const char *crv, cista_error **err)
{
    const crypto__curve *c = crypto__curve_by_crv(crv);
    if (!c)
        return err_set(err, -EINVAL, "EC key generation: curve \"%s\" is not P-256, P-384 or P-521",
                       crv ? crv : "(null)");
    EVP_PKEY *k = NULL;
    EVP_PKEY *params = crypto__curve_params(c);
    if (params) {
        _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, params, NULL);
        if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &k) != 1) {
            EVP_PKEY_free(k);
            k = NULL;
            ERR_clear_error();
        }
    }
    if (!k)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", c->group);
    if (!k)
        return err_set_ssl(err, -EIO, "EC key generation on %s failed", crv);
    *out = k;
    return 0;
}

int crypto_key_generate_rsa(EVP_PKEY **out, unsigned bits, cista_error **err)
{
    if (bits < CRYPTO__RSA_MIN_BITS || bits > CRYPTO__RSA_MAX_BITS)
        return err_set(err, -EINVAL, "RSA key generation: %u bits; it must be %d to %d", bits,
                       CRYPTO__RSA_MIN_BITS, CRYPTO__RSA_MAX_BITS);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    if (!k)
        return err_set_ssl(err, -EIO, "RSA-%u key generation failed", bits);
    *out = k;
    return 0;
}

char *crypto_key_to_pem(EVP_PKEY *key, bool include_private)
{
    if (!key || (include_private && !crypto__key_has_private(key)))
        return NULL;
    /* The private PEM passes through secure memory, which is cleansed on free. */
    BIO *bio = BIO_new(include_private ? BIO_s_secmem() : BIO_s_mem());
    if (!bio)
        abort();
    int ok = include_private ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
                             : PEM_write_bio_PUBKEY(bio, key);
    char *res = NULL;
    if (ok == 1) {
        char *p = NULL;
        long n = BIO_get_mem_data(bio, &p);
        if (n >= 0 && p) {
            res = xmalloc((size_t)n + 1);
            memcpy(res, p, (size_t)n);
            res[n] = '\0';
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    return res;
}
