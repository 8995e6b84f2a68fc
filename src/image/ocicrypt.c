/*
 * ocicrypt.c - the encrypted-layer metadata of containers/ocicrypt, byte for
 * byte: the pubopts annotation, the private options JSON that every key
 * wrapper encrypts, and JWE key wrapping (go-jose layout: flattened JSON for
 * one recipient, general JSON for several). docs/images.md has the format.
 *
 * Annotation values and the JWE come from the image (untrusted); they are
 * decoded with hard size limits. Private options hold the layer key, so
 * every copy of them is cleansed before it is freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "image/img_int.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

/* More comma-separated JWEs than this in one annotation is not an image, it is an attack. */
#define MAX_JWES 64
/* Protected headers are a few hundred bytes; an epk-bearing one stays far below this. */
#define MAX_HEADER (64u << 10)

/* Wipe every string of a parsed secret document before jansson frees it. */
static void cleanse_strings(json_t *v)
{
    if (json_is_string(v)) {
        crypto_cleanse((void *)json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            cleanse_strings(c);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            cleanse_strings(c);
        }
    }
}

static void secret_json_freep(json_t **p)
{
    if (*p) {
        cleanse_strings(*p);
        json_decref(*p);
        *p = NULL;
    }
}

/* Decode standard base64 into exactly @size bytes of @out. */
static int b64_exact(uint8_t *out, size_t size, const char *s, const char *what, cista_error **err)
{
    uint8_t *raw = NULL;
    size_t n = 0;
    int r = b64_decode(&raw, &n, s, strlen(s), err);
    if (r < 0)
        return err_wrap(err, "%s", what);
    if (n != size) {
        crypto_free_secret(raw, n);
        return err_set(err, -EINVAL, "%s is %zu bytes, expected %zu", what, n, size);
    }
    memcpy(out, raw, size);
    crypto_free_secret(raw, n);
    return 0;
}

/* ---- private options ---- */

int img__privopts_parse(img_privopts *out, const void *json, size_t size, cista_error **err)
{
    static const char what[] = "private options";
    memset(out, 0, sizeof(*out));
    __attribute__((cleanup(secret_json_freep))) json_t *root = NULL;
    int r = js_parse_object(&root, json, size, IMG_MAX_PRIVOPTS, what, err);
    if (r < 0)
        return r;
    const char *symkey, *digest, *nonce;
    json_t *copts;
    /* Members we do not know are ignored, as Go's encoding/json does. */
    if ((r = js_get_string(&symkey, root, "symkey", true, what, err)) < 0 ||
        (r = js_get_string(&digest, root, "digest", true, what, err)) < 0 ||
        (r = js_get_object(&copts, root, "cipheroptions", true, what, err)) < 0 ||
        (r = js_get_string(&nonce, copts, "nonce", true, "private options cipheroptions", err)) < 0)
        return r;
    img_privopts p = {0};
    if ((r = b64_exact(p.symkey, sizeof(p.symkey), symkey, "private options symkey", err)) < 0 ||
        (r = b64_exact(p.nonce, sizeof(p.nonce), nonce, "private options nonce", err)) < 0 ||
        (r = img__digest_check(digest, what, err)) < 0) {
        crypto_cleanse(&p, sizeof(p));
        return r;
    }
    memcpy(p.digest, digest, IMG_DIGEST_MAX);
    *out = p;
    crypto_cleanse(&p, sizeof(p));
    return 0;
}

char *img__privopts_emit(const img_privopts *p, size_t *out_size)
{
    char *sym = b64_encode(p->symkey, sizeof(p->symkey));
    char *nonce = b64_encode(p->nonce, sizeof(p->nonce));
    /* Go's encoding/json order of ocicrypt's PrivateLayerBlockCipherOptions. */
    char *s =
        xasprintf("{\"symkey\":\"%s\",\"digest\":\"%s\",\"cipheroptions\":{\"nonce\":\"%s\"}}", sym,
                  p->digest, nonce);
    crypto_free_secret(sym, strlen(sym));
    crypto_free_secret(nonce, strlen(nonce));
    if (out_size)
        *out_size = strlen(s);
    return s;
}

/* ---- public options ---- */

int img__pubopts_parse(uint8_t hmac[32], const char *annotation, cista_error **err)
{
    static const char what[] = "annotation " IMG_ANN_PUBOPTS;
    if (!annotation)
        return err_set(err, -EINVAL, "the encrypted layer has no %s annotation", IMG_ANN_PUBOPTS);
    size_t len = strlen(annotation);
    if (len > IMG_MAX_PUBOPTS)
        return err_set(err, -EMSGSIZE, "%s is %zu bytes, more than the limit of %u", what, len,
                       IMG_MAX_PUBOPTS);
    _cleanup_free_ uint8_t *raw = NULL;
    size_t n;
    int r = b64_decode(&raw, &n, annotation, len, err);
    if (r < 0)
        return err_wrap(err, "%s is not standard base64", what);
    _cleanup_json_ json_t *root = NULL;
    const char *cipher, *mac;
    json_t *copts;
    if ((r = js_parse_object(&root, raw, n, IMG_MAX_PUBOPTS, what, err)) < 0 ||
        (r = js_get_string(&cipher, root, "cipher", true, what, err)) < 0 ||
        (r = js_get_string(&mac, root, "hmac", true, what, err)) < 0 ||
        (r = js_get_object(&copts, root, "cipheroptions", false, what, err)) < 0)
        return r;
    if (strcmp(cipher, IMG_CIPHER) != 0) {
        _cleanup_free_ char *q = img__quote(cipher);
        return err_set(err, -ENOTSUP,
                       "%s names the cipher %s; cista supports only " IMG_CIPHER
                       " (the only cipher ocicrypt defines)",
                       what, q);
    }
    return b64_exact(hmac, 32, mac, "pubopts hmac", err);
}

char *img__pubopts_emit(const uint8_t hmac[32])
{
    _cleanup_free_ char *mac = b64_encode(hmac, 32);
    _cleanup_free_ char *json =
        xasprintf("{\"cipher\":\"" IMG_CIPHER "\",\"hmac\":\"%s\",\"cipheroptions\":{}}", mac);
    return b64_encode(json, strlen(json));
}

/* ---- JWE annotation ---- */

int img__jwe_split(char ***out, const char *annotation, cista_error **err)
{
    *out = NULL;
    if (!annotation || !*annotation)
        return err_set(err, -EINVAL, "annotation %s is empty", IMG_ANN_KEYS_JWE);
    size_t count = 1;
    for (const char *p = annotation; *p; p++)
        count += *p == ',';
    if (count > MAX_JWES)
        return err_set(err, -E2BIG, "annotation %s joins %zu JWEs, more than the limit of %d",
                       IMG_ANN_KEYS_JWE, count, MAX_JWES);
    char **v = xzalloc((count + 1) * sizeof(char *));
    const char *p = annotation;
    for (size_t i = 0; i < count; i++) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        uint8_t *raw = NULL;
        size_t n;
        /* Base64 is 4/3 of the data: reject before decoding anything oversized. */
        if (len / 4 * 3 > JWE_MAX_SIZE) {
            img__strv_free(v);
            return err_set(err, -EMSGSIZE, "annotation %s: JWE %zu is larger than %u bytes",
                           IMG_ANN_KEYS_JWE, i + 1, JWE_MAX_SIZE);
        }
        int r = b64_decode(&raw, &n, p, len, err);
        if (r < 0) {
            img__strv_free(v);
            return err_wrap(err, "annotation %s: JWE %zu is not standard base64", IMG_ANN_KEYS_JWE,
                            i + 1);
        }
        if (memchr(raw, '\0', n)) {
            free(raw);
            img__strv_free(v);
            return err_set(err, -EINVAL, "annotation %s: JWE %zu contains a NUL byte",
                           IMG_ANN_KEYS_JWE, i + 1);
        }
        v[i] = (char *)raw;
        p = comma ? comma + 1 : p + len;
    }
    *out = v;
    return 0;
}

/* Decode a base64url JSON header object (the JWE "protected" member). */
static int header_decode(json_t **out, const char *b64, size_t len, cista_error **err)
{
    if (len > MAX_HEADER)
        return err_set(err, -EMSGSIZE, "JWE protected header is larger than %u bytes", MAX_HEADER);
    _cleanup_free_ uint8_t *raw = NULL;
    size_t n;
    int r = b64url_decode(&raw, &n, b64, len, err);
    if (r < 0)
        return err_wrap(err, "JWE protected header");
    return js_parse_object(out, raw, n, MAX_HEADER, "JWE protected header", err);
}

/* First string member @key among the header layers (recipient header wins). */
static const char *hdr_str(json_t *const *layers, size_t n, const char *key)
{
    for (size_t i = n; i-- > 0;) {
        json_t *v = layers[i] ? json_object_get(layers[i], key) : NULL;
        if (json_is_string(v))
            return json_string_value(v);
    }
    return NULL;
}

static json_t *hdr_obj(json_t *const *layers, size_t n, const char *key)
{
    for (size_t i = n; i-- > 0;) {
        json_t *v = layers[i] ? json_object_get(layers[i], key) : NULL;
        if (json_is_object(v))
            return v;
    }
    return NULL;
}

/* One recipient: {"scheme","alg","enc","key","kid"} from its merged headers. */
static json_t *describe_one(json_t *const *layers, size_t n, const char *encrypted_key)
{
    json_t *o = json_object();
    const char *alg = hdr_str(layers, n, "alg");
    const char *enc = hdr_str(layers, n, "enc");
    const char *kid = hdr_str(layers, n, "kid");
    json_object_set_new(o, "scheme", json_string("jwe"));
    json_object_set_new(o, "alg", alg ? json_string(alg) : json_null());
    json_object_set_new(o, "enc", enc ? json_string(enc) : json_null());
    char *key = NULL;
    if (alg && !strncmp(alg, "RSA", 3) && encrypted_key) {
        /* An RSA ciphertext is exactly as long as the modulus. */
        size_t len = strlen(encrypted_key);
        size_t bytes = len / 4 * 3 + (len % 4 == 3 ? 2 : len % 4 == 2 ? 1 : 0);
        key = xasprintf("RSA-%zu", bytes * 8);
    } else if (alg && !strncmp(alg, "ECDH-ES", 7)) {
        json_t *epk = hdr_obj(layers, n, "epk");
        json_t *crv = epk ? json_object_get(epk, "crv") : NULL;
        json_t *kty = epk ? json_object_get(epk, "kty") : NULL;
        if (json_is_string(crv) && json_is_string(kty))
            key = xasprintf("%s %s", json_string_value(kty), json_string_value(crv));
    } else if (alg && (!strcmp(alg, "dir") || util_has_suffix(alg, "KW"))) {
        key = xstrdup("symmetric");
    }
    json_object_set_new(o, "key", key ? json_string(key) : json_null());
    free(key);
    if (kid)
        json_object_set_new(o, "kid", json_string(kid));
    return o;
}

static int describe_jwe(json_t *arr, const char *jwe, cista_error **err)
{
    _cleanup_json_ json_t *prot = NULL;
    int r;
    if (jwe[0] != '{') {
        /* Compact: header.encrypted_key.iv.ciphertext.tag */
        const char *d1 = strchr(jwe, '.');
        const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        if (!d2)
            return err_set(err, -EINVAL, "JWE is neither JSON nor compact serialisation");
        if ((r = header_decode(&prot, jwe, (size_t)(d1 - jwe), err)) < 0)
            return r;
        _cleanup_free_ char *ek = xstrndup(d1 + 1, (size_t)(d2 - d1 - 1));
        json_t *layers[1] = {prot};
        json_array_append_new(arr, describe_one(layers, 1, ek));
        return 0;
    }
    _cleanup_json_ json_t *root = NULL;
    if ((r = js_parse_object(&root, jwe, strlen(jwe), JWE_MAX_SIZE, "JWE", err)) < 0)
        return r;
    const char *p, *ek;
    json_t *unprot, *hdr, *rcpts;
    if ((r = js_get_string(&p, root, "protected", false, "JWE", err)) < 0 ||
        (r = js_get_object(&unprot, root, "unprotected", false, "JWE", err)) < 0 ||
        (r = js_get_object(&hdr, root, "header", false, "JWE", err)) < 0 ||
        (r = js_get_string(&ek, root, "encrypted_key", false, "JWE", err)) < 0 ||
        (r = js_get_array(&rcpts, root, "recipients", false, "JWE", err)) < 0)
        return r;
    if (p && (r = header_decode(&prot, p, strlen(p), err)) < 0)
        return r;
    if (!rcpts) {
        json_t *layers[3] = {prot, unprot, hdr};
        json_array_append_new(arr, describe_one(layers, 3, ek));
        return 0;
    }
    /* go-jose's duplicate top-level encrypted_key is ignored: recipients is authoritative. */
    size_t i;
    json_t *rc;
    json_array_foreach(rcpts, i, rc)
    {
        if (i >= MAX_JWES)
            break;
        json_t *rh = json_is_object(rc) ? json_object_get(rc, "header") : NULL;
        json_t *rek = json_is_object(rc) ? json_object_get(rc, "encrypted_key") : NULL;
        json_t *layers[3] = {prot, unprot, json_is_object(rh) ? rh : NULL};
        json_array_append_new(
            arr, describe_one(layers, 3, json_is_string(rek) ? json_string_value(rek) : NULL));
    }
    return 0;
}

int img__recipients_describe(json_t **out, const char *annotation, cista_error **err)
{
    char **jwes = NULL;
    int r = img__jwe_split(&jwes, annotation, err);
    if (r < 0)
        return r;
    json_t *arr = json_array();
    for (size_t i = 0; jwes[i]; i++) {
        if ((r = describe_jwe(arr, jwes[i], err)) < 0) {
            json_decref(arr);
            img__strv_free(jwes);
            return err_wrap(err, "annotation %s: JWE %zu", IMG_ANN_KEYS_JWE, i + 1);
        }
    }
    img__strv_free(jwes);
    *out = arr;
    return 0;
}

static const char *const other_schemes[] = {
    "org.opencontainers.image.enc.keys.pkcs7",
    "org.opencontainers.image.enc.keys.pgp",
    "org.opencontainers.image.enc.keys.pkcs11",
};

/* The key-wrapping schemes other than JWE that the layer carries, e.g. "pkcs7, provider.kbs". */
static char *other_schemes_of(const img_layer *l)
{
    cbuf b = CBUF_INIT;
    if (!l->annotations)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(l->annotations, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < ARRAY_LEN(other_schemes); i++)
            known |= !strcmp(k, other_schemes[i]);
        if (known || !strncmp(k, "org.opencontainers.image.enc.keys.provider.", 43)) {
            _cleanup_free_ char *q =
                img__printable(k + strlen("org.opencontainers.image.enc.keys."));
            buf_printf(&b, "%s%s", b.size ? ", " : "", q);
        }
    }
    return b.size ? (char *)buf_steal(&b, NULL) : (buf_free(&b), NULL);
}

char *img__recipients_summary(const img_layer *l)
{
    cbuf b = CBUF_INIT;
    if (l->enc_keys_jwe) {
        json_t *arr = NULL;
        cista_error *e = NULL;
        if (img__recipients_describe(&arr, l->enc_keys_jwe, &e) < 0) {
            buf_puts(&b, "unreadable JWE annotation");
            err_free(e);
        } else {
            size_t i;
            json_t *rc;
            json_array_foreach(arr, i, rc)
            {
                json_t *alg = json_object_get(rc, "alg");
                json_t *key = json_object_get(rc, "key");
                json_t *kid = json_object_get(rc, "kid");
                _cleanup_free_ char *qa =
                    img__printable(json_is_string(alg) ? json_string_value(alg) : "?");
                buf_printf(&b, "%s%s", i ? ", " : "", qa);
                if (json_is_string(key)) {
                    _cleanup_free_ char *qk = img__printable(json_string_value(key));
                    buf_printf(&b, " (%s)", qk);
                }
                if (json_is_string(kid)) {
                    _cleanup_free_ char *qk = img__quote(json_string_value(kid));
                    buf_printf(&b, " kid %s", qk);
                }
            }
            json_decref(arr);
        }
    }
    _cleanup_free_ char *others = other_schemes_of(l);
    if (others)
        buf_printf(&b, "%s%s (not supported by cista)", b.size ? ", " : "", others);
    if (!b.size)
        buf_puts(&b, "none");
    return (char *)buf_steal(&b, NULL);
}

static char *describe_keys(EVP_PKEY *const *keys, size_t n)
{
    cbuf b = CBUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (crypto_key_is_rsa(keys[i]))
            buf_printf(&b, "%sRSA-%d", i ? ", " : "", EVP_PKEY_get_bits(keys[i]));
        else if (crypto_key_is_ec(keys[i]))
            buf_printf(&b, "%sEC %s", i ? ", " : "",
                       crypto_key_ec_crv(keys[i]) ? crypto_key_ec_crv(keys[i]) : "?");
        else
            buf_printf(&b, "%sother", i ? ", " : "");
    }
    return (char *)buf_steal(&b, NULL);
}

int img__privopts_unwrap(img_privopts *out, const img_layer *l, EVP_PKEY *const *keys,
                         size_t key_count, cista_error **err)
{
    if (!l->enc_keys_jwe) {
        _cleanup_free_ char *others = other_schemes_of(l);
        if (others)
            return err_set(err, -ENOTSUP,
                           "the layer's key is wrapped only for %s; cista decrypts JWE "
                           "recipients (encrypt with jwe:PUBKEY.pem)",
                           others);
        return err_set(err, -EINVAL,
                       "the layer's media type says encrypted but it has no %s annotation",
                       IMG_ANN_KEYS_JWE);
    }
    _cleanup_free_ char *rcpts = img__recipients_summary(l);
    if (key_count == 0)
        return err_set(err, -ENOKEY,
                       "the layer is encrypted (recipients: %s); give the matching private key "
                       "with --key",
                       rcpts);
    char **jwes = NULL;
    int r = img__jwe_split(&jwes, l->enc_keys_jwe, err);
    if (r < 0)
        return r;
    _cleanup_free_ jwe_key *ks = xzalloc(key_count * sizeof(jwe_key));
    for (size_t i = 0; i < key_count; i++)
        ks[i].pkey = keys[i];
    r = -ENOKEY;
    for (size_t i = 0; jwes[i]; i++) {
        uint8_t *pt = NULL;
        size_t pt_size = 0;
        cista_error *e = NULL;
        r = jwe_decrypt(&pt, &pt_size, jwes[i], strlen(jwes[i]), ks, key_count, NULL, &e);
        if (r == -ENOKEY) {
            err_free(e);
            continue;
        }
        if (r < 0) {
            /* Take over the JWE error as ours, with context. */
            if (err && !*err)
                *err = e;
            else
                err_free(e);
            img__strv_free(jwes);
            return err_wrap(err, "unwrap the layer key from JWE %zu of %s", i + 1,
                            IMG_ANN_KEYS_JWE);
        }
        r = img__privopts_parse(out, pt, pt_size, err);
        crypto_free_secret(pt, pt_size);
        break;
    }
    img__strv_free(jwes);
    if (r == -ENOKEY) {
        _cleanup_free_ char *mine = describe_keys(keys, key_count);
        return err_set(err, -ENOKEY,
                       "no key matches any recipient of the layer; recipients are: %s; keys "
                       "given: %s. Give the private key whose public half the image was "
                       "encrypted to",
                       rcpts, mine);
    }
    return r;
}

int img__privopts_wrap(char **out, const img_privopts *p, EVP_PKEY *const *rcpts, size_t rcpt_count,
                       cista_error **err)
{
    if (rcpt_count == 0)
        return err_set(err, -EINVAL, "no recipients to encrypt the layer key to");
    size_t size;
    char *json = img__privopts_emit(p, &size);
    _cleanup_free_ jwe_key *ks = xzalloc(rcpt_count * sizeof(jwe_key));
    for (size_t i = 0; i < rcpt_count; i++)
        ks[i].pkey = rcpts[i];
    char *jwe = NULL;
    /* go-jose's FullSerialize: flattened for one recipient, general JSON for several. */
    int r = jwe_encrypt(&jwe, json, size, ks, rcpt_count, "A256GCM",
                        rcpt_count == 1 ? JWE_FLATTENED : JWE_GENERAL, err);
    crypto_free_secret(json, size + 1);
    if (r < 0)
        return err_wrap(err, "wrap the layer key");
    *out = b64_encode(jwe, strlen(jwe));
    free(jwe);
    return 0;
}
