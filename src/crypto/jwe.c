/*
 * jwe.c - JSON Web Encryption (RFC 7516) with the algorithms of RFC 7518,
 * compatible with go-jose as ocicrypt uses it (see jose.h).
 *
 * Decryption treats the JWE as hostile: the text is bounded (JWE_MAX_SIZE),
 * JSON with duplicate members is refused, the three header sources must be
 * disjoint, "zip" and "crit" are refused, every size is checked against the
 * algorithm before any key is used, and an ephemeral EC key must be a point
 * on its curve. Each key is tried against each recipient; a recipient whose
 * key unwraps but whose content does not authenticate is a tampered message
 * (-EBADMSG), no key unwrapping anything is -ENOKEY.
 */
#include "crypto/jose.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/crypto_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define JWE_MAX_RECIPIENTS 64
#define CEK_MAX 64
#define TAG_MAX 32

/* ---- algorithms ---- */

typedef struct {
    const char *name;
    bool gcm;
    size_t key_size; /* CEK bytes */
    size_t iv_size;
    size_t tag_size;
} enc_alg;

static const enc_alg g_encs[] = {
    {"A128GCM", true, 16, 12, 16},        {"A192GCM", true, 24, 12, 16},
    {"A256GCM", true, 32, 12, 16},        {"A128CBC-HS256", false, 32, 16, 16},
    {"A192CBC-HS384", false, 48, 16, 24}, {"A256CBC-HS512", false, 64, 16, 32},
};

typedef enum { KM_RSA_OAEP, KM_RSA1_5, KM_ECDH_ES, KM_ECDH_ES_KW, KM_AES_KW, KM_DIR } km_kind;

typedef struct {
    const char *name;
    km_kind kind;
    crypto_hash_alg md; /* RSA-OAEP hash */
    size_t kek_size;    /* AES key wrap key bytes */
} key_alg;

static const key_alg g_algs[] = {
    {"RSA-OAEP", KM_RSA_OAEP, CRYPTO_SHA1, 0},
    {"RSA-OAEP-256", KM_RSA_OAEP, CRYPTO_SHA256, 0},
    {"RSA1_5", KM_RSA1_5, CRYPTO_SHA1, 0},
    {"ECDH-ES", KM_ECDH_ES, CRYPTO_SHA256, 0},
    {"ECDH-ES+A128KW", KM_ECDH_ES_KW, CRYPTO_SHA256, 16},
    {"ECDH-ES+A192KW", KM_ECDH_ES_KW, CRYPTO_SHA256, 24},
    {"ECDH-ES+A256KW", KM_ECDH_ES_KW, CRYPTO_SHA256, 32},
    {"A128KW", KM_AES_KW, CRYPTO_SHA256, 16},
    {"A192KW", KM_AES_KW, CRYPTO_SHA256, 24},
    {"A256KW", KM_AES_KW, CRYPTO_SHA256, 32},
    {"dir", KM_DIR, CRYPTO_SHA256, 0},
};

static const enc_alg *find_enc(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_LEN(g_encs); i++)
        if (strcmp(g_encs[i].name, name) == 0)
            return &g_encs[i];
    return NULL;
}

static const key_alg *find_alg(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_LEN(g_algs); i++)
        if (strcmp(g_algs[i].name, name) == 0)
            return &g_algs[i];
    return NULL;
}

static bool is_direct(const key_alg *a)
{
    return a->kind == KM_DIR || a->kind == KM_ECDH_ES;
}

/* ---- shared steps ---- */

/* Z = ECDH(priv, peer); out = ConcatKDF(Z, alg_id, apu, apv) with keydatalen = out_size * 8. */
static int derive_ecdh(uint8_t *out, size_t out_size, const char *alg_id, EVP_PKEY *priv,
                       EVP_PKEY *peer, bool validate_peer, const uint8_t *apu, size_t apu_size,
                       const uint8_t *apv, size_t apv_size, cista_error **err)
{
    uint8_t *z = NULL;
    size_t z_size = 0;
    int r = crypto_ecdh_ex(&z, &z_size, priv, peer, validate_peer, err);
    if (r < 0)
        return r;
    r = crypto_concat_kdf(out, out_size, z, z_size, alg_id, apu, apu_size, apv, apv_size, err);
    crypto_free_secret(z, z_size);
    return r;
}

static int content_encrypt(uint8_t **ct, size_t *ct_size, uint8_t tag[TAG_MAX], const enc_alg *e,
                           const uint8_t *cek, const uint8_t *iv, const char *aad, size_t aad_size,
                           const void *pt, size_t pt_size, cista_error **err)
{
    if (e->gcm) {
        _cleanup_free_ uint8_t *buf = xmalloc(pt_size ? pt_size : 1);
        int r = crypto_gcm_encrypt(buf, tag, cek, e->key_size, iv, e->iv_size, aad, aad_size, pt,
                                   pt_size, err);
        if (r < 0)
            return r;
        *ct = steal_ptr(&buf);
        *ct_size = pt_size;
        return 0;
    }
    size_t tag_size = 0;
    return crypto_cbc_hs_encrypt(ct, ct_size, tag, &tag_size, cek, e->key_size, iv, aad, aad_size,
                                 pt, pt_size, err);
}

/* ---- decryption: the parsed JWE ---- */

typedef struct {
    const json_t *own;    /* per-recipient "header" (borrowed from the document) */
    json_t *header;       /* union of protected, shared and own */
    const char *alg_name; /* borrowed from header */
    const key_alg *alg;   /* NULL when not supported: skipped */
    uint8_t *ek;
    size_t ek_size;
    EVP_PKEY *epk;
    uint8_t *apu, *apv;
    size_t apu_size, apv_size;
} rcpt;

typedef struct {
    json_t *doc;          /* JSON serialisation, NULL for compact */
    json_t *prot;         /* decoded protected header, NULL when there is none */
    const json_t *shared; /* "unprotected" (borrowed from doc) */
    char *aad;            /* the content encryption's associated data */
    size_t aad_size;
    uint8_t *iv, *ct, *tag;
    size_t iv_size, ct_size, tag_size;
    const enc_alg *enc;
    rcpt *rcpts;
    size_t rcpt_count;
} parsed;

static void parsed_free(parsed *p)
{
    for (size_t i = 0; i < p->rcpt_count; i++) {
        rcpt *r = &p->rcpts[i];
        json_decref(r->header);
        free(r->ek);
        EVP_PKEY_free(r->epk);
        free(r->apu);
        free(r->apv);
    }
    free(p->rcpts);
    json_decref(p->doc);
    json_decref(p->prot);
    free(p->aad);
    free(p->iv);
    free(p->ct);
    free(p->tag);
}

static int b64_member(uint8_t **out, size_t *size, const char *s, size_t len, const char *what,
                      cista_error **err)
{
    int r = b64url_decode(out, size, s, len, err);
    if (r < 0)
        return err_wrap(err, "JWE %s", what);
    return 0;
}

static int parse_protected(parsed *p, const char *b64, size_t len, cista_error **err)
{
    _cleanup_free_ uint8_t *text = NULL;
    size_t size = 0;
    int r = b64_member(&text, &size, b64, len, "protected header", err);
    if (r < 0)
        return r;
    return js_parse_object(&p->prot, text, size, JWE_MAX_SIZE, "JWE protected header", err);
}

static int parse_compact(parsed *p, const char *s, size_t len, cista_error **err)
{
    const char *part[5];
    size_t plen[5], n = 0;
    const char *start = s;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.')
            continue;
        if (n == 5)
            return err_set(err, -EINVAL, "JWE compact serialisation has more than 5 parts");
        part[n] = start;
        plen[n++] = (size_t)(s + i - start);
        start = s + i + 1;
    }
    if (n != 5)
        return err_set(err, -EINVAL,
                       "JWE compact serialisation has %zu dot-separated parts; it needs 5 "
                       "(header.key.iv.ciphertext.tag)",
                       n);
    if (plen[0] == 0)
        return err_set(err, -EINVAL, "JWE compact serialisation has an empty protected header");
    int r = parse_protected(p, part[0], plen[0], err);
    if (r < 0)
        return r;
    p->aad = xstrndup(part[0], plen[0]);
    p->aad_size = plen[0];
    p->rcpts = xzalloc(sizeof(*p->rcpts));
    p->rcpt_count = 1;
    if ((r = b64_member(&p->rcpts[0].ek, &p->rcpts[0].ek_size, part[1], plen[1], "encrypted key",
                        err)) < 0 ||
        (r = b64_member(&p->iv, &p->iv_size, part[2], plen[2], "IV", err)) < 0 ||
        (r = b64_member(&p->ct, &p->ct_size, part[3], plen[3], "ciphertext", err)) < 0 ||
        (r = b64_member(&p->tag, &p->tag_size, part[4], plen[4], "tag", err)) < 0)
        return r;
    return 0;
}

static int json_b64(uint8_t **out, size_t *size, const json_t *obj, const char *key, bool required,
                    const char *what, cista_error **err)
{
    const char *s = NULL;
    int r = js_get_string(&s, obj, key, required, what, err);
    if (r < 0 || !s)
        return r;
    r = b64url_decode(out, size, s, strlen(s), err);
    if (r < 0)
        return err_wrap(err, "%s: member \"%s\"", what, key);
    return 0;
}

static int parse_json(parsed *p, const char *s, size_t len, cista_error **err)
{
    static const char *const what = "JWE";
    int r = js_parse_object(&p->doc, s, len, JWE_MAX_SIZE, "JWE JSON", err);
    if (r < 0)
        return r;
    const char *prot = NULL, *aad = NULL;
    json_t *shared = NULL, *recipients = NULL;
    if ((r = js_get_string(&prot, p->doc, "protected", false, what, err)) < 0 ||
        (r = js_get_object(&shared, p->doc, "unprotected", false, what, err)) < 0 ||
        (r = js_get_string(&aad, p->doc, "aad", false, what, err)) < 0 ||
        (r = js_get_array(&recipients, p->doc, "recipients", false, what, err)) < 0)
        return r;
    p->shared = shared;
    if (prot && *prot && (r = parse_protected(p, prot, strlen(prot), err)) < 0)
        return r;
    if (aad) {
        /* AAD = ASCII(protected) || '.' || ASCII(aad) (RFC 7516 §5.1 step 14). */
        _cleanup_free_ uint8_t *raw = NULL;
        size_t raw_size = 0;
        if ((r = b64_member(&raw, &raw_size, aad, strlen(aad), "aad", err)) < 0)
            return r;
        p->aad = xasprintf("%s.%s", prot ? prot : "", aad);
    } else {
        p->aad = xstrdup(prot ? prot : "");
    }
    p->aad_size = strlen(p->aad);
    if ((r = json_b64(&p->iv, &p->iv_size, p->doc, "iv", true, what, err)) < 0 ||
        (r = json_b64(&p->ct, &p->ct_size, p->doc, "ciphertext", true, what, err)) < 0 ||
        (r = json_b64(&p->tag, &p->tag_size, p->doc, "tag", true, what, err)) < 0)
        return r;

    if (!recipients) {
        /* Flattened: one recipient, at the top level. */
        p->rcpts = xzalloc(sizeof(*p->rcpts));
        p->rcpt_count = 1;
        json_t *own = NULL;
        if ((r = js_get_object(&own, p->doc, "header", false, what, err)) < 0)
            return r;
        p->rcpts[0].own = own;
        return json_b64(&p->rcpts[0].ek, &p->rcpts[0].ek_size, p->doc, "encrypted_key", false, what,
                        err);
    }
    /* General. A top-level "encrypted_key" beside "recipients" is go-jose's copy of
     * recipient 0's and carries no information; a top-level "header" would be ambiguous. */
    if (json_object_get(p->doc, "header"))
        return err_set(err, -EINVAL,
                       "JWE: a top-level \"header\" beside \"recipients\" is "
                       "ambiguous; per-recipient headers belong in the recipients");
    size_t n = json_array_size(recipients);
    if (n == 0 || n > JWE_MAX_RECIPIENTS)
        return err_set(err, -EINVAL, "JWE: \"recipients\" has %zu entries; it must have 1 to %d", n,
                       JWE_MAX_RECIPIENTS);
    p->rcpts = xzalloc(n * sizeof(*p->rcpts));
    p->rcpt_count = n;
    for (size_t i = 0; i < n; i++) {
        char rwhat[48];
        snprintf(rwhat, sizeof(rwhat), "JWE recipient %zu", i);
        json_t *ri = json_array_get(recipients, i), *own = NULL;
        if (!json_is_object(ri))
            return err_set(err, -EINVAL, "%s: must be a JSON object", rwhat);
        if ((r = js_get_object(&own, ri, "header", false, rwhat, err)) < 0)
            return r;
        p->rcpts[i].own = own;
        r = json_b64(&p->rcpts[i].ek, &p->rcpts[i].ek_size, ri, "encrypted_key", false, rwhat, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Merge the recipient's headers, then check everything that does not depend on a key. */
static int prepare_rcpt(parsed *p, size_t idx, cista_error **err)
{
    rcpt *rc = &p->rcpts[idx];
    char what[48];
    snprintf(what, sizeof(what), "JWE recipient %zu", idx);
    rc->header = json_object();
    const json_t *src[3] = {p->prot, p->shared, rc->own};
    for (size_t s = 0; s < 3; s++) {
        const char *key;
        json_t *val;
        if (!src[s])
            continue;
        json_object_foreach((json_t *)src[s], key, val)
        {
            if (json_object_get(rc->header, key))
                return err_set(err, -EINVAL,
                               "%s: header parameter \"%s\" appears in more than one of the "
                               "protected, shared and per-recipient headers; they must be "
                               "disjoint (RFC 7516 §7.2.1)",
                               what, key);
            json_object_set(rc->header, key, val);
        }
    }
    if (json_object_get(rc->header, "crit"))
        return err_set(err, -ENOTSUP,
                       "%s: the JWE marks header extensions critical (\"crit\") and none are "
                       "understood here; refusing it",
                       what);
    if (json_object_get(rc->header, "zip"))
        return err_set(err, -ENOTSUP,
                       "%s: compressed JWEs (\"zip\") are refused (decompression is a "
                       "denial-of-service risk and a compression oracle)",
                       what);
    const char *enc = NULL, *alg = NULL;
    int r;
    if ((r = js_get_string(&enc, rc->header, "enc", true, what, err)) < 0 ||
        (r = js_get_string(&alg, rc->header, "alg", true, what, err)) < 0)
        return r;
    const enc_alg *e = find_enc(enc);
    if (!e)
        return err_set(err, -ENOTSUP,
                       "%s: content encryption \"%s\" is not supported (A128GCM, A192GCM, "
                       "A256GCM, A128CBC-HS256, A192CBC-HS384, A256CBC-HS512)",
                       what, enc);
    if (p->enc && p->enc != e)
        return err_set(err, -EINVAL, "%s: \"enc\" is %s but another recipient says %s", what, enc,
                       p->enc->name);
    p->enc = e;
    rc->alg_name = alg;
    rc->alg = find_alg(alg);
    if (!rc->alg)
        return 0; /* another recipient may use something we know */

    size_t want_ek = 0;
    switch (rc->alg->kind) {
    case KM_RSA_OAEP:
    case KM_RSA1_5:
        if (rc->ek_size == 0)
            return err_set(err, -EINVAL, "%s: %s needs an encrypted_key", what, alg);
        return 0;
    case KM_ECDH_ES:
    case KM_DIR:
        want_ek = 0;
        break;
    case KM_ECDH_ES_KW:
    case KM_AES_KW:
        want_ek = e->key_size + 8;
        break;
    }
    if (rc->ek_size != want_ek)
        return err_set(err, -EINVAL, "%s: the encrypted key is %zu bytes; %s with %s needs %zu",
                       what, rc->ek_size, alg, enc, want_ek);
    if (rc->alg->kind != KM_ECDH_ES && rc->alg->kind != KM_ECDH_ES_KW)
        return 0;

    json_t *epk = NULL;
    const char *kty = NULL;
    if ((r = js_get_object(&epk, rc->header, "epk", true, what, err)) < 0 ||
        (r = js_get_string(&kty, epk, "kty", true, what, err)) < 0)
        return r;
    if (strcmp(kty, "EC") != 0)
        return err_set(err, -ENOTSUP, "%s: ephemeral key type \"%s\" is not supported (EC)", what,
                       kty);
    if (json_object_get(epk, "d"))
        return err_set(err, -EINVAL, "%s: the ephemeral key \"epk\" carries a private part", what);
    /* jwk_to_key refuses points that are not on the curve. */
    if ((r = jwk_to_key(&rc->epk, epk, err)) < 0)
        return err_wrap(err, "%s: epk", what);
    if ((r = json_b64(&rc->apu, &rc->apu_size, rc->header, "apu", false, what, err)) < 0 ||
        (r = json_b64(&rc->apv, &rc->apv_size, rc->header, "apv", false, what, err)) < 0)
        return r;
    return 0;
}

static bool key_fits(const jwe_key *k, const rcpt *rc, const enc_alg *e)
{
    if (k->alg && strcmp(k->alg, rc->alg->name) != 0)
        return false;
    switch (rc->alg->kind) {
    case KM_RSA_OAEP:
    case KM_RSA1_5:
        return crypto_key_is_rsa(k->pkey) && EVP_PKEY_get_bits(k->pkey) >= CRYPTO__RSA_MIN_BITS &&
               crypto__key_has_private(k->pkey);
    case KM_ECDH_ES:
    case KM_ECDH_ES_KW:
        return crypto_key_is_ec(k->pkey) && crypto__curve_of_key(k->pkey) &&
               crypto__curve_of_key(k->pkey) == crypto__curve_of_key(rc->epk) &&
               crypto__key_has_private(k->pkey);
    case KM_AES_KW:
        return k->secret && k->secret_size == rc->alg->kek_size;
    case KM_DIR:
        return k->secret && k->secret_size == e->key_size;
    }
    return false;
}

/* 0 with the CEK in @cek, -ENOKEY when @k is not this recipient's key, other < 0 on error. */
static int unwrap_cek(uint8_t cek[CEK_MAX], const jwe_key *k, const rcpt *rc, const enc_alg *e,
                      cista_error **err)
{
    const key_alg *a = rc->alg;
    size_t n = e->key_size;
    uint8_t *buf = NULL, kek[32];
    size_t size = 0;
    int r;
    switch (a->kind) {
    case KM_RSA_OAEP:
        if (crypto_rsa_oaep_decrypt(&buf, &size, k->pkey, a->md, rc->ek, rc->ek_size, NULL) < 0)
            return -ENOKEY;
        r = size == n ? 0
                      : err_set(err, -EBADMSG, "the %s encrypted key holds %zu bytes; %s needs %zu",
                                a->name, size, e->name, n);
        if (r == 0)
            memcpy(cek, buf, n);
        crypto_free_secret(buf, size);
        return r;
    case KM_RSA1_5:
        /* RFC 7516 §11.5: on failure go on with a random CEK, so a bad padding shows only as
         * a bad tag, like any other modification (no Bleichenbacher oracle). */
        if ((r = crypto_random(cek, n, err)) < 0)
            return r;
        if (crypto_rsa_pkcs1_decrypt(&buf, &size, k->pkey, rc->ek, rc->ek_size, NULL) == 0) {
            if (size == n)
                memcpy(cek, buf, n);
            crypto_free_secret(buf, size);
        }
        return 0;
    case KM_ECDH_ES:
        /* Direct key agreement: AlgorithmID is "enc", keydatalen its key size. */
        return derive_ecdh(cek, n, e->name, k->pkey, rc->epk, true, rc->apu, rc->apu_size, rc->apv,
                           rc->apv_size, err);
    case KM_ECDH_ES_KW:
        r = derive_ecdh(kek, a->kek_size, a->name, k->pkey, rc->epk, true, rc->apu, rc->apu_size,
                        rc->apv, rc->apv_size, err);
        if (r == 0)
            r = crypto_aes_unwrap(cek, kek, a->kek_size, rc->ek, rc->ek_size, NULL) < 0 ? -ENOKEY
                                                                                        : 0;
        crypto_cleanse(kek, sizeof(kek));
        return r;
    case KM_AES_KW:
        if (crypto_aes_unwrap(cek, k->secret, a->kek_size, rc->ek, rc->ek_size, NULL) < 0)
            return -ENOKEY;
        return 0;
    case KM_DIR:
        memcpy(cek, k->secret, n);
        return 0;
    }
    return -ENOKEY;
}

static int content_decrypt(uint8_t **pt, size_t *pt_size, const parsed *p, const uint8_t *cek,
                           cista_error **err)
{
    const enc_alg *e = p->enc;
    if (!e->gcm)
        return crypto_cbc_hs_decrypt(pt, pt_size, cek, e->key_size, p->iv, p->aad, p->aad_size,
                                     p->ct, p->ct_size, p->tag, p->tag_size, err);
    uint8_t *buf = xmalloc(p->ct_size + 1);
    int r = crypto_gcm_decrypt(buf, cek, e->key_size, p->iv, p->iv_size, p->aad, p->aad_size, p->ct,
                               p->ct_size, p->tag, err);
    if (r < 0) {
        free(buf); /* already cleansed */
        return r;
    }
    buf[p->ct_size] = 0;
    *pt = buf;
    *pt_size = p->ct_size;
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int jwe_decrypt(uint8_t **out, size_t *out_size, const char *jwe, size_t jwe_size,
                const jwe_key *keys, size_t key_count, size_t *out_key_index, cista_error **err)
{
    if (!jwe)
        return err_set(err, -EINVAL, "JWE: no input");
    if (jwe_size > JWE_MAX_SIZE)
        return err_set(err, -EMSGSIZE, "JWE: %zu bytes is more than the limit of %u", jwe_size,
                       JWE_MAX_SIZE);
    while (jwe_size > 0 && is_space(*jwe))
        jwe++, jwe_size--;
    while (jwe_size > 0 && is_space(jwe[jwe_size - 1]))
        jwe_size--;
    if (jwe_size == 0)
        return err_set(err, -EINVAL, "JWE: the input is empty");

    __attribute__((cleanup(parsed_free))) parsed p = {0};
    int r =
        jwe[0] == '{' ? parse_json(&p, jwe, jwe_size, err) : parse_compact(&p, jwe, jwe_size, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < p.rcpt_count; i++)
        if ((r = prepare_rcpt(&p, i, err)) < 0)
            return r;
    if (p.iv_size != p.enc->iv_size || p.tag_size != p.enc->tag_size)
        return err_set(err, -EINVAL,
                       "JWE: IV of %zu bytes and tag of %zu bytes; %s needs %zu and %zu", p.iv_size,
                       p.tag_size, p.enc->name, p.enc->iv_size, p.enc->tag_size);

    size_t supported = 0, tried = 0;
    int bad_code = 0;
    char bad_msg[512] = "";
    for (size_t ri = 0; ri < p.rcpt_count; ri++) {
        const rcpt *rc = &p.rcpts[ri];
        if (!rc->alg)
            continue;
        supported++;
        for (size_t ki = 0; keys && ki < key_count; ki++) {
            if (!key_fits(&keys[ki], rc, p.enc))
                continue;
            uint8_t cek[CEK_MAX];
            _cleanup_err_ cista_error *e = NULL;
            r = unwrap_cek(cek, &keys[ki], rc, p.enc, &e);
            if (r == -ENOKEY)
                continue;
            tried++;
            if (r == 0)
                r = content_decrypt(out, out_size, &p, cek, &e);
            crypto_cleanse(cek, sizeof(cek));
            if (r == 0) {
                if (out_key_index)
                    *out_key_index = ki;
                return 0;
            }
            if (!bad_code) {
                _cleanup_free_ char *m = err_str(e);
                bad_code = r;
                snprintf(bad_msg, sizeof(bad_msg), "recipient %zu (%s) with key %zu: %s", ri,
                         rc->alg->name, ki, m);
            }
        }
    }
    if (tried)
        return err_set(err, bad_code, "JWE: %s", bad_msg);

    char algs[256] = "";
    size_t used = 0;
    for (size_t ri = 0; ri < p.rcpt_count && used < sizeof(algs); ri++) {
        const char *crv = crypto_key_ec_crv(p.rcpts[ri].epk);
        int n = snprintf(algs + used, sizeof(algs) - used, "%s%s%s%s", ri ? ", " : "",
                         p.rcpts[ri].alg_name, crv ? " on " : "", crv ? crv : "");
        if (n > 0)
            used += (size_t)n;
    }
    if (supported == 0)
        return err_set(err, -ENOTSUP,
                       "JWE: no recipient uses a supported key management algorithm (%s)", algs);
    return err_set(err, -ENOKEY,
                   "JWE: none of the %zu key(s) opens any of the %zu recipient(s) (%s); it was "
                   "encrypted to other keys",
                   key_count, p.rcpt_count, algs);
}

/* ---- encryption ---- */

static int pick_alg(const key_alg **out, const jwe_key *k, const enc_alg *e, size_t idx,
                    cista_error **err)
{
    bool has_pkey = k->pkey != NULL, has_secret = k->secret != NULL && k->secret_size > 0;
    if (has_pkey == has_secret)
        return err_set(err, -EINVAL, "JWE recipient %zu: give exactly one of pkey and secret", idx);
    const char *name = k->alg;
    if (!name && has_pkey)
        name = crypto_key_is_rsa(k->pkey)  ? "RSA-OAEP"
               : crypto_key_is_ec(k->pkey) ? "ECDH-ES+A256KW"
                                           : NULL;
    else if (!name)
        name = k->secret_size == 16            ? "A128KW"
               : k->secret_size == 24          ? "A192KW"
               : k->secret_size == 32          ? "A256KW"
               : k->secret_size == e->key_size ? "dir"
                                               : NULL;
    if (!name)
        return err_set(err, -EINVAL,
                       "JWE recipient %zu: no key management algorithm fits this key; set "
                       "jwe_key.alg",
                       idx);
    const key_alg *a = find_alg(name);
    if (!a)
        return err_set(err, -ENOTSUP, "JWE recipient %zu: key management \"%s\" is not supported",
                       idx, name);
    bool ok = false;
    switch (a->kind) {
    case KM_RSA1_5:
        return err_set(err, -ENOTSUP,
                       "JWE recipient %zu: RSA1_5 is supported for decryption only; use "
                       "RSA-OAEP or RSA-OAEP-256",
                       idx);
    case KM_RSA_OAEP:
        ok = crypto_key_is_rsa(k->pkey) && EVP_PKEY_get_bits(k->pkey) >= CRYPTO__RSA_MIN_BITS;
        break;
    case KM_ECDH_ES:
    case KM_ECDH_ES_KW:
        ok = crypto_key_is_ec(k->pkey) && crypto__curve_of_key(k->pkey) != NULL;
        break;
    case KM_AES_KW:
        ok = has_secret && k->secret_size == a->kek_size;
        break;
    case KM_DIR:
        ok = has_secret && k->secret_size == e->key_size;
        break;
    }
    if (!ok)
        return err_set(err, -EINVAL, "JWE recipient %zu: %s needs %s", idx, name,
                       a->kind == KM_RSA_OAEP ? "an RSA key of at least 2048 bits"
                       : a->kind == KM_AES_KW ? "a secret of the key-wrap key's size"
                       : a->kind == KM_DIR    ? "a secret of the content key's size"
                                              : "an EC key on P-256, P-384 or P-521");
    *out = a;
    return 0;
}

/* Encrypt (or derive) the CEK for one recipient; @hdr receives alg, enc and epk in order. */
static int wrap_for(uint8_t **ek, size_t *ek_size, json_t *hdr, uint8_t cek[CEK_MAX],
                    const jwe_key *k, const key_alg *a, const enc_alg *e, cista_error **err)
{
    json_object_set_new(hdr, "alg", json_string(a->name));
    json_object_set_new(hdr, "enc", json_string(e->name));
    *ek = NULL;
    *ek_size = 0;
    int r = 0;
    uint8_t kek[32];
    switch (a->kind) {
    case KM_RSA1_5:
        return err_set(err, -ENOTSUP, "JWE: RSA1_5 encryption is not supported");
    case KM_RSA_OAEP:
        return crypto_rsa_oaep_encrypt(ek, ek_size, k->pkey, a->md, cek, e->key_size, err);
    case KM_ECDH_ES:
    case KM_ECDH_ES_KW: {
        _cleanup_pkey_ EVP_PKEY *eph = NULL;
        json_t *epk = NULL;
        if ((r = crypto_key_generate_ec(&eph, crypto_key_ec_crv(k->pkey), err)) < 0 ||
            (r = jwk_from_key(&epk, eph, false, err)) < 0)
            return r;
        json_object_set_new(hdr, "epk", epk);
        if (a->kind == KM_ECDH_ES)
            return derive_ecdh(cek, e->key_size, e->name, eph, k->pkey, !k->pkey_checked, NULL, 0,
                               NULL, 0, err);
        r = derive_ecdh(kek, a->kek_size, a->name, eph, k->pkey, !k->pkey_checked, NULL, 0, NULL, 0,
                        err);
        if (r == 0) {
            *ek = xmalloc(e->key_size + 8);
            *ek_size = e->key_size + 8;
            r = crypto_aes_wrap(*ek, kek, a->kek_size, cek, e->key_size, err);
        }
        crypto_cleanse(kek, sizeof(kek));
        return r;
    }
    case KM_AES_KW:
        *ek = xmalloc(e->key_size + 8);
        *ek_size = e->key_size + 8;
        return crypto_aes_wrap(*ek, k->secret, a->kek_size, cek, e->key_size, err);
    case KM_DIR:
        memcpy(cek, k->secret, e->key_size);
        return 0;
    }
    return -EINVAL;
}

typedef struct {
    size_t count;
    const key_alg **algs;
    json_t **params;  /* alg, enc, epk of each recipient */
    json_t **headers; /* the part of params not in the protected header */
    uint8_t **eks;
    size_t *ek_sizes;
    uint8_t cek[CEK_MAX];
} enc_state;

static void enc_state_free(enc_state *s)
{
    for (size_t i = 0; i < s->count; i++) {
        json_decref(s->params[i]);
        json_decref(s->headers[i]);
        free(s->eks[i]);
    }
    free(s->algs);
    free(s->params);
    free(s->headers);
    free(s->eks);
    free(s->ek_sizes);
    crypto_cleanse(s->cek, sizeof(s->cek));
}

static const char *const g_params[] = {"alg", "enc", "epk"};

/* Build the protected header text and each recipient's unprotected header. */
static int build_headers(char **prot_text, enc_state *s, jwe_format fmt,
                         const char *protected_override, cista_error **err)
{
    _cleanup_json_ json_t *prot = NULL;
    int r;
    if (protected_override) {
        r = js_parse_object(&prot, protected_override, strlen(protected_override), JWE_MAX_SIZE,
                            "JWE protected header override", err);
        if (r < 0)
            return r;
        if (json_object_get(prot, "zip") || json_object_get(prot, "crit"))
            return err_set(err, -EINVAL, "JWE: the protected header may not use zip or crit");
    } else {
        prot = json_object();
        for (size_t i = 0; i < ARRAY_LEN(g_params); i++) {
            json_t *v = json_object_get(s->params[0], g_params[i]);
            /* go-jose's layout: general JSON protects only "enc". */
            if (v && (fmt != JWE_GENERAL || strcmp(g_params[i], "enc") == 0))
                json_object_set(prot, g_params[i], v);
        }
    }
    for (size_t i = 0; i < s->count; i++) {
        s->headers[i] = json_object();
        for (size_t j = 0; j < ARRAY_LEN(g_params); j++) {
            json_t *v = json_object_get(s->params[i], g_params[j]);
            json_t *pv = json_object_get(prot, g_params[j]);
            if (!v)
                continue;
            if (pv && !json_equal(pv, v))
                return err_set(err, -EINVAL,
                               "JWE: the protected header sets \"%s\" differently from what "
                               "recipient %zu uses",
                               g_params[j], i);
            if (!pv)
                json_object_set(s->headers[i], g_params[j], v);
        }
    }
    if (fmt == JWE_COMPACT && json_object_size(s->headers[0]) != 0)
        return err_set(err, -EINVAL,
                       "JWE: the compact serialisation needs alg, enc (and epk) in "
                       "the protected header");
    if (protected_override) {
        *prot_text = xstrdup(protected_override);
    } else {
        cbuf text = CBUF_INIT;
        js_buf_put_compact(&text, prot);
        *prot_text = (char *)buf_steal(&text, NULL);
    }
    return 0;
}

/*
 * The serialisations are written straight into one buffer, member for member as jansson wrote
 * them from a document tree before (every value but "header" is base64url, which needs no
 * escaping): building the tree only to dump it cost more than the AES-GCM encryption.
 */
static void put_b64(cbuf *b, const uint8_t *data, size_t size)
{
    char *dst = (char *)buf_reserve(b, b64url_encoded_len(size) + 1);
    b->size += b64url_encode_to(dst, size ? data : (const uint8_t *)"", size);
}

/* ,"name":"b64url(data)" */
static void put_b64_member(cbuf *b, const char *name, const uint8_t *data, size_t size)
{
    buf_puts(b, ",\"");
    buf_puts(b, name);
    buf_puts(b, "\":\"");
    put_b64(b, data, size);
    buf_put(b, "\"", 1);
}

static void put_compact(cbuf *b, const enc_state *s, const char *prot64, const uint8_t *iv,
                        size_t iv_size, const uint8_t *ct, size_t ct_size, const uint8_t *tag,
                        size_t tag_size)
{
    const uint8_t *parts[] = {s->eks[0], iv, ct, tag};
    const size_t sizes[] = {s->ek_sizes[0], iv_size, ct_size, tag_size};
    buf_puts(b, prot64);
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
        buf_put(b, ".", 1);
        put_b64(b, parts[i], sizes[i]);
    }
}

/* Recipient @i's "header" and "encrypted_key" (each when it has one); @after: a member precedes. */
static void put_recipient(cbuf *b, const enc_state *s, size_t i, bool after)
{
    if (json_object_size(s->headers[i])) {
        buf_puts(b, after ? ",\"header\":" : "\"header\":");
        js_buf_put_compact(b, s->headers[i]);
        after = true;
    }
    if (s->ek_sizes[i]) {
        buf_puts(b, after ? ",\"encrypted_key\":\"" : "\"encrypted_key\":\"");
        put_b64(b, s->eks[i], s->ek_sizes[i]);
        buf_put(b, "\"", 1);
    }
}

static void put_json(cbuf *b, const enc_state *s, jwe_format fmt, const char *prot64,
                     const uint8_t *iv, size_t iv_size, const uint8_t *ct, size_t ct_size,
                     const uint8_t *tag, size_t tag_size)
{
    buf_puts(b, "{\"protected\":");
    js_buf_put_string(b, prot64, strlen(prot64), false);
    if (fmt == JWE_GENERAL) {
        buf_puts(b, ",\"recipients\":[");
        for (size_t i = 0; i < s->count; i++) {
            buf_puts(b, i ? ",{" : "{");
            put_recipient(b, s, i, false);
            buf_put(b, "}", 1);
        }
        buf_put(b, "]", 1);
    } else {
        put_recipient(b, s, 0, true);
    }
    put_b64_member(b, "iv", iv, iv_size);
    put_b64_member(b, "ciphertext", ct, ct_size);
    put_b64_member(b, "tag", tag, tag_size);
    buf_put(b, "}", 1);
}

int jwe__encrypt_fixed(char **out, const void *pt, size_t pt_size, const jwe_key *rcpts,
                       size_t rcpt_count, const char *enc, jwe_format fmt, const uint8_t *cek,
                       size_t cek_size, const uint8_t *iv, size_t iv_size,
                       const char *protected_override, cista_error **err)
{
    if (!rcpts || rcpt_count == 0 || rcpt_count > JWE_MAX_RECIPIENTS)
        return err_set(err, -EINVAL, "JWE: %zu recipients; it must be 1 to %d", rcpt_count,
                       JWE_MAX_RECIPIENTS);
    if (fmt != JWE_COMPACT && fmt != JWE_FLATTENED && fmt != JWE_GENERAL)
        return err_set(err, -EINVAL, "JWE: unknown serialisation %d", (int)fmt);
    if (fmt != JWE_GENERAL && rcpt_count != 1)
        return err_set(err, -EINVAL,
                       "JWE: the compact and flattened serialisations carry one recipient; use "
                       "JWE_GENERAL for %zu",
                       rcpt_count);
    if (!pt && pt_size)
        return err_set(err, -EINVAL, "JWE: no plaintext buffer for %zu bytes", pt_size);
    if (pt_size > JWE_MAX_SIZE)
        return err_set(err, -EMSGSIZE, "JWE: a plaintext of %zu bytes is more than the limit of %u",
                       pt_size, JWE_MAX_SIZE);
    const enc_alg *e = find_enc(enc ? enc : "A256GCM");
    if (!e)
        return err_set(err, -ENOTSUP, "JWE: content encryption \"%s\" is not supported", enc);
    if (cek && cek_size != e->key_size)
        return err_set(err, -EINVAL, "JWE: a fixed CEK of %zu bytes; %s needs %zu", cek_size,
                       e->name, e->key_size);
    if (iv && iv_size != e->iv_size)
        return err_set(err, -EINVAL, "JWE: a fixed IV of %zu bytes; %s needs %zu", iv_size, e->name,
                       e->iv_size);

    __attribute__((cleanup(enc_state_free))) enc_state s = {0};
    s.algs = xzalloc(rcpt_count * sizeof(*s.algs));
    s.params = xzalloc(rcpt_count * sizeof(*s.params));
    s.headers = xzalloc(rcpt_count * sizeof(*s.headers));
    s.eks = xzalloc(rcpt_count * sizeof(*s.eks));
    s.ek_sizes = xzalloc(rcpt_count * sizeof(*s.ek_sizes));
    s.count = rcpt_count;
    int r;
    bool direct = false;
    for (size_t i = 0; i < rcpt_count; i++) {
        if ((r = pick_alg(&s.algs[i], &rcpts[i], e, i, err)) < 0)
            return r;
        direct = direct || is_direct(s.algs[i]);
        s.params[i] = json_object();
    }
    if (direct && (rcpt_count != 1 || cek))
        return err_set(err, -EINVAL,
                       "JWE: dir and ECDH-ES derive the content key from the one recipient's "
                       "key; they take no other recipients and no fixed CEK");
    if (!direct) {
        if (cek)
            memcpy(s.cek, cek, cek_size);
        else if ((r = crypto_random(s.cek, e->key_size, err)) < 0)
            return r;
    }
    for (size_t i = 0; i < rcpt_count; i++)
        if ((r = wrap_for(&s.eks[i], &s.ek_sizes[i], s.params[i], s.cek, &rcpts[i], s.algs[i], e,
                          err)) < 0)
            return err_wrap(err, "JWE recipient %zu (%s)", i, s.algs[i]->name);

    _cleanup_free_ char *prot_text = NULL;
    if ((r = build_headers(&prot_text, &s, fmt, protected_override, err)) < 0)
        return r;
    _cleanup_free_ char *prot64 = b64url_encode(prot_text, strlen(prot_text));
    uint8_t ivbuf[16], tag[TAG_MAX];
    if (iv)
        memcpy(ivbuf, iv, iv_size);
    else if ((r = crypto_random(ivbuf, e->iv_size, err)) < 0)
        return r;
    _cleanup_free_ uint8_t *ct = NULL;
    size_t ct_size = 0;
    if ((r = content_encrypt(&ct, &ct_size, tag, e, s.cek, ivbuf, prot64, strlen(prot64), pt,
                             pt_size, err)) < 0)
        return r;
    _cleanup_buf_ cbuf res = CBUF_INIT;
    /* The payload's base64 and room for the headers: one allocation instead of six doublings */
    buf_reserve(&res, strlen(prot64) + b64url_encoded_len(ct_size) + 512 * rcpt_count);
    if (fmt == JWE_COMPACT)
        put_compact(&res, &s, prot64, ivbuf, e->iv_size, ct, ct_size, tag, e->tag_size);
    else
        put_json(&res, &s, fmt, prot64, ivbuf, e->iv_size, ct, ct_size, tag, e->tag_size);
    if (res.size > JWE_MAX_SIZE)
        return err_set(err, -EMSGSIZE,
                       "JWE: the result would be %zu bytes, more than the limit of %u that "
                       "readers accept",
                       res.size, JWE_MAX_SIZE);
    *out = (char *)buf_steal(&res, NULL);
    return 0;
}

int jwe_encrypt(char **out, const void *pt, size_t pt_size, const jwe_key *rcpts, size_t rcpt_count,
                const char *enc, jwe_format fmt, cista_error **err)
{
    return jwe__encrypt_fixed(out, pt, pt_size, rcpts, rcpt_count, enc, fmt, NULL, 0, NULL, 0, NULL,
                              err);
}
