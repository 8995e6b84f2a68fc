/*
 * crypto.c - hashes, HMAC, AES modes, RSA, ECDH and the Concat KDF as thin
 * wrappers over OpenSSL 3's EVP interfaces (see crypto.h).
 *
 * Functions that cannot fail on valid input (hash, HMAC and CTR updates)
 * abort when OpenSSL reports an internal failure, as allocation failure
 * does: there is no safe way to continue with a half-computed digest.
 */
#include "crypto/crypto.h"

#include <errno.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto_int.h"
#include "util/log.h"
#include "util/util.h"

/* OpenSSL's update functions take int lengths; feed them in slices. */
#define CHUNK ((size_t)1 << 30)

static void must(int ok, const char *what)
{
    if (ok > 0)
        return;
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    log_error("crypto: %s failed inside OpenSSL (%s); cannot continue", what, buf);
    abort();
}

/* ---- randomness, comparison, cleansing ---- */

int crypto_random(void *out, size_t size, cista_error **err)
{
    uint8_t *p = out;
    while (size > 0) {
        size_t n = size < CHUNK ? size : CHUNK;
        if (RAND_bytes(p, (int)n) != 1)
            return err_set_ssl(err, -EIO, "random: OpenSSL's DRBG could not produce %zu bytes", n);
        p += n;
        size -= n;
    }
    return 0;
}

bool crypto_memeq(const void *a, const void *b, size_t size)
{
    if (size == 0)
        return true;
    return CRYPTO_memcmp(a, b, size) == 0;
}

void crypto_cleanse(void *p, size_t size)
{
    if (p && size)
        OPENSSL_cleanse(p, size);
}

void crypto_free_secret(void *p, size_t size)
{
    if (!p)
        return;
    crypto_cleanse(p, size);
    free(p);
}

/* ---- hashes ---- */

const char *crypto__md_name(crypto_hash_alg alg)
{
    switch (alg) {
    case CRYPTO_SHA1:
        return "SHA1";
    case CRYPTO_SHA256:
        return "SHA256";
    case CRYPTO_SHA384:
        return "SHA384";
    case CRYPTO_SHA512:
        return "SHA512";
    }
    return NULL;
}

size_t crypto_hash_size(crypto_hash_alg alg)
{
    switch (alg) {
    case CRYPTO_SHA1:
        return 20;
    case CRYPTO_SHA256:
        return 32;
    case CRYPTO_SHA384:
        return 48;
    case CRYPTO_SHA512:
        return 64;
    }
    return 0;
}

const char *crypto_hash_name(crypto_hash_alg alg)
{
    switch (alg) {
    case CRYPTO_SHA1:
        return "sha1";
    case CRYPTO_SHA256:
        return "sha256";
    case CRYPTO_SHA384:
        return "sha384";
    case CRYPTO_SHA512:
        return "sha512";
    }
    return NULL;
}

/*
 * Algorithm objects fetched once per process. An implicit fetch (EVP_sha256(), a name) costs
 * OpenSSL 3 a method-store lookup under locks on every operation; fetched EVP_MD / EVP_CIPHER /
 * EVP_MAC / EVP_KDF objects are immutable and reference counted, so one of each is shared by all
 * threads: published with a compare-and-swap (a thread that loses the race frees its own copy)
 * and never freed.
 */
static void *fetch_once(void **slot, void *(*fetch)(const char *), void (*drop)(void *),
                        const char *name)
{
    void *o = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (o)
        return o;
    o = fetch(name);
    must(o != NULL, name);
    void *expected = NULL;
    if (!__atomic_compare_exchange_n(slot, &expected, o, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        drop(o);
        o = expected;
    }
    return o;
}

static void *md_fetch(const char *name)
{
    return EVP_MD_fetch(NULL, name, NULL);
}

static void md_drop(void *o)
{
    EVP_MD_free(o);
}

static void *cipher_fetch(const char *name)
{
    return EVP_CIPHER_fetch(NULL, name, NULL);
}

static void cipher_drop(void *o)
{
    EVP_CIPHER_free(o);
}

static void *mac_fetch(const char *name)
{
    return EVP_MAC_fetch(NULL, name, NULL);
}

static void mac_drop(void *o)
{
    EVP_MAC_free(o);
}

static void *kdf_fetch(const char *name)
{
    return EVP_KDF_fetch(NULL, name, NULL);
}

static void kdf_drop(void *o)
{
    EVP_KDF_free(o);
}

const EVP_MD *crypto__md(crypto_hash_alg alg)
{
    static void *g_mds[CRYPTO_SHA512 + 1];
    const char *name = crypto__md_name(alg);
    if (!name) {
        log_error("crypto: hash algorithm %d does not exist", (int)alg);
        abort();
    }
    return fetch_once(&g_mds[alg], md_fetch, md_drop, name);
}

/* The ciphers this module uses; any other name is fetched per call. */
static const char *const g_cipher_names[] = {
    "AES-128-GCM", "AES-192-GCM", "AES-256-GCM",  "AES-128-CBC",  "AES-192-CBC",
    "AES-256-CBC", "AES-256-CTR", "AES-128-WRAP", "AES-192-WRAP", "AES-256-WRAP",
};

/* A fetched cipher the caller owns one reference to (EVP_CIPHER_free() it). */
static EVP_CIPHER *fetch_cipher(const char *name)
{
    static void *g_ciphers[ARRAY_LEN(g_cipher_names)];
    for (size_t i = 0; name && i < ARRAY_LEN(g_cipher_names); i++) {
        if (strcmp(name, g_cipher_names[i]) != 0)
            continue;
        EVP_CIPHER *c = fetch_once(&g_ciphers[i], cipher_fetch, cipher_drop, name);
        must(EVP_CIPHER_up_ref(c), "EVP_CIPHER_up_ref");
        return c;
    }
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, name, NULL);
    must(c != NULL, name);
    return c;
}

struct crypto_hash {
    EVP_MD_CTX *ctx;
    EVP_MD *md;
};

crypto_hash *crypto_hash_new(crypto_hash_alg alg)
{
    crypto_hash *h = xzalloc(sizeof(*h));
    h->md = (EVP_MD *)crypto__md(alg);
    must(EVP_MD_up_ref(h->md), "EVP_MD_up_ref");
    h->ctx = EVP_MD_CTX_new();
    must(h->ctx != NULL, "EVP_MD_CTX_new");
    must(EVP_DigestInit_ex2(h->ctx, h->md, NULL), "EVP_DigestInit_ex2");
    return h;
}

void crypto_hash_update(crypto_hash *h, const void *data, size_t size)
{
    if (size)
        must(EVP_DigestUpdate(h->ctx, data, size), "EVP_DigestUpdate");
}

void crypto_hash_final(crypto_hash *h, uint8_t *out)
{
    must(EVP_DigestFinal_ex(h->ctx, out, NULL), "EVP_DigestFinal_ex");
}

void crypto_hash_reset(crypto_hash *h)
{
    must(EVP_DigestInit_ex2(h->ctx, h->md, NULL), "EVP_DigestInit_ex2");
}

void crypto_hash_free(crypto_hash *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h);
}

void crypto__hash_freep(crypto_hash **h)
{
    crypto_hash_free(*h);
    *h = NULL;
}

void crypto_hash_oneshot(crypto_hash_alg alg, const void *data, size_t size, uint8_t *out)
{
    crypto_hash *h = crypto_hash_new(alg);
    crypto_hash_update(h, data, size);
    crypto_hash_final(h, out);
    crypto_hash_free(h);
}

/* ---- HMAC ---- */

struct crypto_hmac {
    EVP_MAC_CTX *ctx;
    size_t size;
};

crypto_hmac *crypto_hmac_new(crypto_hash_alg alg, const void *key, size_t key_size)
{
    static const uint8_t empty_key[1];
    const char *md = crypto__md_name(alg);
    if (!md) {
        log_error("crypto: hash algorithm %d does not exist", (int)alg);
        abort();
    }
    crypto_hmac *m = xzalloc(sizeof(*m));
    m->size = crypto_hash_size(alg);
    static void *g_hmac;
    m->ctx = EVP_MAC_CTX_new(fetch_once(&g_hmac, mac_fetch, mac_drop, "HMAC"));
    must(m->ctx != NULL, "EVP_MAC_CTX_new");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)md, 0),
        OSSL_PARAM_construct_end(),
    };
    /* A NULL key would mean "keep the previous key"; an empty key is a real key. */
    must(EVP_MAC_init(m->ctx, key_size ? key : empty_key, key_size, params), "EVP_MAC_init");
    return m;
}

void crypto_hmac_update(crypto_hmac *m, const void *data, size_t size)
{
    if (size)
        must(EVP_MAC_update(m->ctx, data, size), "EVP_MAC_update");
}

void crypto_hmac_final(crypto_hmac *m, uint8_t *out)
{
    size_t n = 0;
    must(EVP_MAC_final(m->ctx, out, &n, m->size), "EVP_MAC_final");
    must(n == m->size, "HMAC output length");
}

void crypto_hmac_free(crypto_hmac *m)
{
    if (!m)
        return;
    EVP_MAC_CTX_free(m->ctx); /* cleanses the key schedule */
    free(m);
}

void crypto__hmac_freep(crypto_hmac **m)
{
    crypto_hmac_free(*m);
    *m = NULL;
}

/* ---- AES-256-CTR ---- */

struct crypto_ctr {
    EVP_CIPHER_CTX *ctx;
};

crypto_ctr *crypto_ctr_new(const uint8_t key[32], const uint8_t iv[16])
{
    crypto_ctr *c = xzalloc(sizeof(*c));
    EVP_CIPHER *cipher = fetch_cipher("AES-256-CTR");
    c->ctx = EVP_CIPHER_CTX_new();
    must(c->ctx != NULL, "EVP_CIPHER_CTX_new");
    /* OpenSSL increments the whole 16-byte block big-endian, as Go's cipher.NewCTR. */
    must(EVP_EncryptInit_ex2(c->ctx, cipher, key, iv, NULL), "EVP_EncryptInit_ex2(AES-256-CTR)");
    EVP_CIPHER_free(cipher);
    return c;
}

void crypto_ctr_update(crypto_ctr *c, const void *in, void *out, size_t size)
{
    const uint8_t *i = in;
    uint8_t *o = out;
    while (size > 0) {
        size_t n = size < CHUNK ? size : CHUNK;
        int outl = 0;
        must(EVP_EncryptUpdate(c->ctx, o, &outl, i, (int)n), "EVP_EncryptUpdate(AES-CTR)");
        must((size_t)outl == n, "AES-CTR output length");
        i += n;
        o += n;
        size -= n;
    }
}

void crypto_ctr_free(crypto_ctr *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->ctx);
    free(c);
}

void crypto__ctr_freep(crypto_ctr **c)
{
    crypto_ctr_free(*c);
    *c = NULL;
}

/* ---- helpers for one-shot ciphers ---- */

/* Feed @size bytes through EVP_CipherUpdate; @out NULL feeds AAD. */
static int cipher_update(EVP_CIPHER_CTX *ctx, uint8_t *out, size_t *written, const uint8_t *in,
                         size_t size)
{
    size_t total = 0;
    while (size > 0) {
        size_t n = size < CHUNK ? size : CHUNK;
        int outl = 0;
        if (EVP_CipherUpdate(ctx, out ? out + total : NULL, &outl, in, (int)n) != 1)
            return -1;
        total += (size_t)outl;
        in += n;
        size -= n;
    }
    if (written)
        *written = total;
    return 0;
}

static const char *aes_name(size_t key_size, const char *mode)
{
    static const char *const names[][3] = {
        {"AES-128-GCM", "AES-192-GCM", "AES-256-GCM"},
        {"AES-128-CBC", "AES-192-CBC", "AES-256-CBC"},
        {"AES-128-WRAP", "AES-192-WRAP", "AES-256-WRAP"},
    };
    int m = strcmp(mode, "GCM") == 0 ? 0 : strcmp(mode, "CBC") == 0 ? 1 : 2;
    switch (key_size) {
    case 16:
        return names[m][0];
    case 24:
        return names[m][1];
    case 32:
        return names[m][2];
    }
    return NULL;
}

/* ---- AES-GCM ---- */

static int gcm_setup(EVP_CIPHER_CTX **out, bool enc, const uint8_t *key, size_t key_size,
                     const uint8_t *iv, size_t iv_size, cista_error **err)
{
    const char *name = aes_name(key_size, "GCM");
    if (!name)
        return err_set(err, -EINVAL, "AES-GCM: key is %zu bytes; it must be 16, 24 or 32",
                       key_size);
    if (iv_size == 0 || iv_size > 128)
        return err_set(err, -EINVAL, "AES-GCM: IV is %zu bytes; it must be 1 to 128 (12 is usual)",
                       iv_size);
    EVP_CIPHER *cipher = fetch_cipher(name);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    must(ctx != NULL, "EVP_CIPHER_CTX_new");
    size_t ivlen = iv_size;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &ivlen),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_CipherInit_ex2(ctx, cipher, NULL, NULL, enc, params) == 1 &&
             EVP_CipherInit_ex2(ctx, NULL, key, iv, enc, NULL) == 1;
    EVP_CIPHER_free(cipher);
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return err_set_ssl(err, -EIO, "AES-GCM: cannot set up the cipher");
    }
    *out = ctx;
    return 0;
}

int crypto_gcm_encrypt(uint8_t *ct, uint8_t tag[16], const uint8_t *key, size_t key_size,
                       const uint8_t *iv, size_t iv_size, const void *aad, size_t aad_size,
                       const void *pt, size_t pt_size, cista_error **err)
{
    _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = NULL;
    int r = gcm_setup(&ctx, true, key, key_size, iv, iv_size, err);
    if (r < 0)
        return r;
    size_t n = 0;
    int fl = 0;
    uint8_t none[16]; /* GCM's final step writes nothing; @ct may be NULL when @pt_size is 0 */
    if (cipher_update(ctx, NULL, NULL, aad, aad_size) < 0 ||
        cipher_update(ctx, ct, &n, pt, pt_size) < 0 ||
        EVP_EncryptFinal_ex(ctx, ct ? ct + n : none, &fl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
        return err_set_ssl(err, -EIO, "AES-GCM: encryption failed");
    return 0;
}

int crypto_gcm_decrypt(uint8_t *pt, const uint8_t *key, size_t key_size, const uint8_t *iv,
                       size_t iv_size, const void *aad, size_t aad_size, const void *ct,
                       size_t ct_size, const uint8_t tag[16], cista_error **err)
{
    _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = NULL;
    int r = gcm_setup(&ctx, false, key, key_size, iv, iv_size, err);
    if (r < 0)
        return r;
    size_t n = 0;
    int fl = 0;
    if (cipher_update(ctx, NULL, NULL, aad, aad_size) < 0 ||
        cipher_update(ctx, pt, &n, ct, ct_size) < 0 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1)
        return err_set_ssl(err, -EIO, "AES-GCM: decryption failed");
    uint8_t none[16];
    if (EVP_DecryptFinal_ex(ctx, pt ? pt + n : none, &fl) != 1) {
        ERR_clear_error();
        crypto_cleanse(pt, ct_size);
        return err_set(err, -EBADMSG,
                       "AES-GCM: the authentication tag does not verify; the ciphertext, IV, "
                       "tag or associated data was modified, or the key is wrong");
    }
    return 0;
}

/* ---- AES-CBC + HMAC-SHA2 (RFC 7518 §5.2) ---- */

static int cbc_hs_params(size_t key_size, crypto_hash_alg *md, cista_error **err)
{
    switch (key_size) {
    case 32:
        *md = CRYPTO_SHA256;
        return 0;
    case 48:
        *md = CRYPTO_SHA384;
        return 0;
    case 64:
        *md = CRYPTO_SHA512;
        return 0;
    }
    return err_set(err, -EINVAL,
                   "AES-CBC-HMAC: key is %zu bytes; it must be 32, 48 or 64 (MAC key then AES key)",
                   key_size);
}

/* T = first half of HMAC(MAC_KEY, A || IV || E || AL), AL = bit length of A, 64-bit BE. */
static void cbc_hs_tag(uint8_t *out, crypto_hash_alg md, const uint8_t *mac_key, size_t half,
                       const void *aad, size_t aad_size, const uint8_t iv[16], const uint8_t *ct,
                       size_t ct_size)
{
    uint8_t al[8];
    uint64_t bits = (uint64_t)aad_size * 8;
    for (int i = 0; i < 8; i++)
        al[i] = (uint8_t)(bits >> (56 - 8 * i));
    uint8_t full[CRYPTO_MAX_HASH];
    _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(md, mac_key, half);
    crypto_hmac_update(m, aad, aad_size);
    crypto_hmac_update(m, iv, 16);
    crypto_hmac_update(m, ct, ct_size);
    crypto_hmac_update(m, al, sizeof(al));
    crypto_hmac_final(m, full);
    memcpy(out, full, half);
    crypto_cleanse(full, sizeof(full));
}

int crypto_cbc_hs_encrypt(uint8_t **ct, size_t *ct_size, uint8_t *tag, size_t *tag_size,
                          const uint8_t *key, size_t key_size, const uint8_t iv[16],
                          const void *aad, size_t aad_size, const void *pt, size_t pt_size,
                          cista_error **err)
{
    crypto_hash_alg md = CRYPTO_SHA256;
    int r = cbc_hs_params(key_size, &md, err);
    if (r < 0)
        return r;
    size_t half = key_size / 2;
    if (pt_size > SIZE_MAX - 32)
        return err_set(err, -EMSGSIZE, "AES-CBC-HMAC: plaintext too large");
    EVP_CIPHER *cipher = fetch_cipher(aes_name(half, "CBC"));
    _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    must(ctx != NULL, "EVP_CIPHER_CTX_new");
    int ok = EVP_EncryptInit_ex2(ctx, cipher, key + half, iv, NULL);
    EVP_CIPHER_free(cipher);
    /* PKCS#7 padding adds 1 to 16 bytes. */
    _cleanup_free_ uint8_t *out = xmalloc(pt_size + 16);
    size_t n = 0;
    int fl = 0;
    if (ok != 1 || cipher_update(ctx, out, &n, pt, pt_size) < 0 ||
        EVP_EncryptFinal_ex(ctx, out + n, &fl) != 1)
        return err_set_ssl(err, -EIO, "AES-CBC-HMAC: encryption failed");
    n += (size_t)fl;
    cbc_hs_tag(tag, md, key, half, aad, aad_size, iv, out, n);
    *tag_size = half;
    *ct_size = n;
    *ct = steal_ptr(&out);
    return 0;
}

int crypto_cbc_hs_decrypt(uint8_t **pt, size_t *pt_size, const uint8_t *key, size_t key_size,
                          const uint8_t iv[16], const void *aad, size_t aad_size, const void *ct,
                          size_t ct_size, const uint8_t *tag, size_t tag_size, cista_error **err)
{
    crypto_hash_alg md = CRYPTO_SHA256;
    int r = cbc_hs_params(key_size, &md, err);
    if (r < 0)
        return r;
    size_t half = key_size / 2;
    uint8_t want[32];
    /* Authenticate before touching the padding, so it cannot become an oracle. */
    cbc_hs_tag(want, md, key, half, aad, aad_size, iv, ct, ct_size);
    bool good = tag_size == half && crypto_memeq(want, tag, half);
    crypto_cleanse(want, sizeof(want));
    if (!good || ct_size == 0 || ct_size % 16 != 0)
        return err_set(err, -EBADMSG,
                       "AES-CBC-HMAC: the authentication tag does not verify; the ciphertext, IV, "
                       "tag or associated data was modified, or the key is wrong");
    EVP_CIPHER *cipher = fetch_cipher(aes_name(half, "CBC"));
    _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    must(ctx != NULL, "EVP_CIPHER_CTX_new");
    int ok = EVP_DecryptInit_ex2(ctx, cipher, key + half, iv, NULL);
    EVP_CIPHER_free(cipher);
    size_t cap = ct_size + 16;
    uint8_t *out = xmalloc(cap);
    size_t n = 0;
    int fl = 0;
    if (ok != 1 || cipher_update(ctx, out, &n, ct, ct_size) < 0 ||
        EVP_DecryptFinal_ex(ctx, out + n, &fl) != 1) {
        crypto_free_secret(out, cap);
        ERR_clear_error();
        /* Only the key's holder can produce a good tag over bad padding. */
        return err_set(err, -EBADMSG, "AES-CBC-HMAC: authentic ciphertext with invalid padding");
    }
    n += (size_t)fl;
    out[n] = 0;
    *pt = out;
    *pt_size = n;
    return 0;
}

/* ---- AES key wrap (RFC 3394) ---- */

#define WRAP_MAX 4096

static int wrap_op(uint8_t *out, bool enc, const uint8_t *kek, size_t kek_size, const uint8_t *in,
                   size_t in_size, cista_error **err)
{
    const char *name = aes_name(kek_size, "WRAP");
    if (!name)
        return err_set(err, -EINVAL, "AES key wrap: KEK is %zu bytes; it must be 16, 24 or 32",
                       kek_size);
    size_t min = enc ? 16 : 24;
    if (in_size < min || in_size % 8 != 0 || in_size > WRAP_MAX)
        return err_set(err, -EINVAL,
                       "AES key %s: input is %zu bytes; it must be a multiple of 8 from %zu to %d",
                       enc ? "wrap" : "unwrap", in_size, min, WRAP_MAX);
    EVP_CIPHER *cipher = fetch_cipher(name);
    _cleanup_cipher_ctx_ EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    must(ctx != NULL, "EVP_CIPHER_CTX_new");
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    /* A NULL IV selects RFC 3394's default A6A6A6A6A6A6A6A6. */
    int ok = EVP_CipherInit_ex2(ctx, cipher, kek, NULL, enc, NULL);
    EVP_CIPHER_free(cipher);
    if (ok != 1)
        return err_set_ssl(err, -EIO, "AES key wrap: cannot set up the cipher");
    size_t want = enc ? in_size + 8 : in_size - 8;
    int outl = 0, fl = 0;
    if (EVP_CipherUpdate(ctx, out, &outl, in, (int)in_size) != 1 || (size_t)outl != want ||
        EVP_CipherFinal_ex(ctx, out + outl, &fl) != 1) {
        ERR_clear_error();
        crypto_cleanse(out, want);
        if (!enc)
            return err_set(err, -EBADMSG,
                           "AES key unwrap: the integrity check fails; wrong key-encryption key "
                           "or modified data");
        return err_set(err, -EIO, "AES key wrap: encryption failed");
    }
    return 0;
}

int crypto_aes_wrap(uint8_t *out, const uint8_t *kek, size_t kek_size, const uint8_t *in,
                    size_t in_size, cista_error **err)
{
    return wrap_op(out, true, kek, kek_size, in, in_size, err);
}

int crypto_aes_unwrap(uint8_t *out, const uint8_t *kek, size_t kek_size, const uint8_t *in,
                      size_t in_size, cista_error **err)
{
    return wrap_op(out, false, kek, kek_size, in, in_size, err);
}

/* ---- RSA ---- */

static int rsa_check(EVP_PKEY *key, bool need_private, const char *what, cista_error **err)
{
    if (!key || !crypto_key_is_rsa(key))
        return err_set(err, -EINVAL, "%s: the key is not an RSA key", what);
    if (need_private && !crypto__key_has_private(key))
        return err_set(err, -EINVAL, "%s: the RSA key has no private part; decryption needs it",
                       what);
    return 0;
}

static int rsa_ctx(EVP_PKEY_CTX **out, EVP_PKEY *key, bool enc, const char *pad, crypto_hash_alg md,
                   const char *what, cista_error **err)
{
    const char *mdname = NULL;
    if (strcmp(pad, OSSL_PKEY_RSA_PAD_MODE_OAEP) == 0) {
        mdname = crypto__md_name(md);
        if (!mdname)
            return err_set(err, -EINVAL, "%s: unknown OAEP hash %d", what, (int)md);
    }
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    must(ctx != NULL, "EVP_PKEY_CTX_new_from_pkey");
    OSSL_PARAM params[4];
    size_t i = 0;
    params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, (char *)pad, 0);
    if (mdname) {
        params[i++] =
            OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, (char *)mdname, 0);
        params[i++] =
            OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, (char *)mdname, 0);
    }
    params[i] = OSSL_PARAM_construct_end();
    int ok = enc ? EVP_PKEY_encrypt_init_ex(ctx, params) : EVP_PKEY_decrypt_init_ex(ctx, params);
    if (ok != 1) {
        EVP_PKEY_CTX_free(ctx);
        return err_set_ssl(err, -EIO, "%s: cannot set up the RSA operation", what);
    }
    *out = ctx;
    return 0;
}

int crypto_rsa_oaep_encrypt(uint8_t **out, size_t *out_size, EVP_PKEY *pub, crypto_hash_alg md,
                            const void *in, size_t in_size, cista_error **err)
{
    int r = rsa_check(pub, false, "RSA-OAEP encrypt", err);
    if (r < 0)
        return r;
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = NULL;
    r = rsa_ctx(&ctx, pub, true, OSSL_PKEY_RSA_PAD_MODE_OAEP, md, "RSA-OAEP encrypt", err);
    if (r < 0)
        return r;
    size_t n = 0;
    if (EVP_PKEY_encrypt(ctx, NULL, &n, in, in_size) != 1)
        return err_set_ssl(err, -EINVAL, "RSA-OAEP encrypt: cannot size the output");
    _cleanup_free_ uint8_t *buf = xmalloc(n);
    if (EVP_PKEY_encrypt(ctx, buf, &n, in, in_size) != 1)
        return err_set_ssl(err, -EINVAL,
                           "RSA-OAEP encrypt: %zu bytes do not fit the key's modulus with OAEP",
                           in_size);
    *out = steal_ptr(&buf);
    *out_size = n;
    return 0;
}

static int rsa_decrypt(uint8_t **out, size_t *out_size, EVP_PKEY *priv, const char *pad,
                       crypto_hash_alg md, const char *what, const void *in, size_t in_size,
                       cista_error **err)
{
    int r = rsa_check(priv, true, what, err);
    if (r < 0)
        return r;
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = NULL;
    r = rsa_ctx(&ctx, priv, false, pad, md, what, err);
    if (r < 0)
        return r;
    size_t cap = 0;
    if (EVP_PKEY_decrypt(ctx, NULL, &cap, in, in_size) != 1)
        return err_set_ssl(err, -EBADMSG, "%s: cannot size the output", what);
    uint8_t *buf = xmalloc(cap);
    size_t n = cap;
    if (EVP_PKEY_decrypt(ctx, buf, &n, in, in_size) != 1) {
        crypto_free_secret(buf, cap);
        ERR_clear_error();
        return err_set(err, -EBADMSG,
                       "%s: decryption fails; the data was encrypted to another key or modified",
                       what);
    }
    /* Hand out a buffer of the exact size, so crypto_free_secret(*out, *out_size) covers it. */
    uint8_t *res = xmalloc(n ? n : 1);
    memcpy(res, buf, n);
    crypto_free_secret(buf, cap);
    *out = res;
    *out_size = n;
    return 0;
}

int crypto_rsa_oaep_decrypt(uint8_t **out, size_t *out_size, EVP_PKEY *priv, crypto_hash_alg md,
                            const void *in, size_t in_size, cista_error **err)
{
    return rsa_decrypt(out, out_size, priv, OSSL_PKEY_RSA_PAD_MODE_OAEP, md, "RSA-OAEP decrypt", in,
                       in_size, err);
}

int crypto_rsa_pkcs1_decrypt(uint8_t **out, size_t *out_size, EVP_PKEY *priv, const void *in,
                             size_t in_size, cista_error **err)
{
    return rsa_decrypt(out, out_size, priv, OSSL_PKEY_RSA_PAD_MODE_PKCSV15, CRYPTO_SHA1,
                       "RSAES-PKCS1-v1_5 decrypt", in, in_size, err);
}

/* ---- ECDH and the Concat KDF ---- */

int crypto_ecdh(uint8_t **out, size_t *out_size, EVP_PKEY *priv, EVP_PKEY *peer, cista_error **err)
{
    return crypto_ecdh_ex(out, out_size, priv, peer, true, err);
}

int crypto_ecdh_ex(uint8_t **out, size_t *out_size, EVP_PKEY *priv, EVP_PKEY *peer,
                   bool validate_peer, cista_error **err)
{
    if (!priv || !peer || !crypto_key_is_ec(priv) || !crypto_key_is_ec(peer))
        return err_set(err, -EINVAL, "ECDH: both keys must be EC keys");
    const crypto__curve *a = crypto__curve_of_key(priv), *b = crypto__curve_of_key(peer);
    if (!a || a != b)
        return err_set(err, -EINVAL,
                       "ECDH: the keys are on different or unsupported curves (%s, %s)",
                       a ? a->crv : "?", b ? b->crv : "?");
    if (!crypto__key_has_private(priv))
        return err_set(err, -EINVAL, "ECDH: our key has no private part");
    _cleanup_pkey_ctx_ EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    must(ctx != NULL, "EVP_PKEY_CTX_new_from_pkey");
    if (EVP_PKEY_derive_init(ctx) != 1)
        return err_set_ssl(err, -EIO, "ECDH: cannot set up the key agreement");
    /* validate_peer=1: reject points off the curve (invalid-curve attacks). */
    if (EVP_PKEY_derive_set_peer_ex(ctx, peer, validate_peer ? 1 : 0) != 1)
        return err_set_ssl(err, -EINVAL, "ECDH: the peer's public key is not a valid %s point",
                           a->crv);
    size_t n = 0;
    if (EVP_PKEY_derive(ctx, NULL, &n) != 1)
        return err_set_ssl(err, -EIO, "ECDH: cannot size the shared secret");
    uint8_t *z = xmalloc(n);
    if (EVP_PKEY_derive(ctx, z, &n) != 1) {
        crypto_free_secret(z, n);
        return err_set_ssl(err, -EIO, "ECDH: key agreement failed");
    }
    *out = z;
    *out_size = n;
    return 0;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#define KDF_FIELD_MAX 4096
#define KDF_OUT_MAX 1024

int crypto_concat_kdf(uint8_t *out, size_t out_size, const uint8_t *z, size_t z_size,
                      const char *alg_id, const uint8_t *apu, size_t apu_size, const uint8_t *apv,
                      size_t apv_size, cista_error **err)
{
    size_t alg_size = strlen(alg_id);
    if (out_size == 0 || out_size > KDF_OUT_MAX)
        return err_set(err, -EINVAL, "Concat KDF: output of %zu bytes; it must be 1 to %d",
                       out_size, KDF_OUT_MAX);
    if (z_size == 0 || alg_size > KDF_FIELD_MAX || apu_size > KDF_FIELD_MAX ||
        apv_size > KDF_FIELD_MAX)
        return err_set(err, -EINVAL, "Concat KDF: an input is empty or longer than %d bytes",
                       KDF_FIELD_MAX);
    /* OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo (RFC 7518 §4.6.2). */
    size_t info_size = 4 + alg_size + 4 + apu_size + 4 + apv_size + 4;
    _cleanup_free_ uint8_t *info = xmalloc(info_size);
    uint8_t *p = info;
    put_be32(p, (uint32_t)alg_size);
    memcpy(p + 4, alg_id, alg_size);
    p += 4 + alg_size;
    put_be32(p, (uint32_t)apu_size);
    if (apu_size)
        memcpy(p + 4, apu, apu_size);
    p += 4 + apu_size;
    put_be32(p, (uint32_t)apv_size);
    if (apv_size)
        memcpy(p + 4, apv, apv_size);
    p += 4 + apv_size;
    put_be32(p, (uint32_t)(out_size * 8));

    /* NIST SP 800-56A's single-step KDF with SHA-256 is exactly the Concat KDF. */
    static void *g_sskdf;
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(fetch_once(&g_sskdf, kdf_fetch, kdf_drop, "SSKDF"));
    must(kctx != NULL, "EVP_KDF_CTX_new");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)z, z_size),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, info_size),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kctx, out, out_size, params);
    EVP_KDF_CTX_free(kctx);
    if (ok != 1)
        return err_set_ssl(err, -EIO, "Concat KDF: derivation failed");
    return 0;
}
