/*
 * jws.c - compact JWS with ES256 / ES384 (see jws.h).
 *
 * The signing input is ASCII(b64url(header)) || '.' || ASCII(b64url(payload));
 * the signature is r || s, each zero-padded to the curve's byte length
 * (32 for P-256, 48 for P-384), as RFC 7518 §3.4 requires.
 */
#include "crypto/jws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

typedef struct {
    const char *alg;
    const char *crv;
    const char *md;
    size_t int_size;
} jws_alg_info;

static const jws_alg_info g_algs[] = {
    {"ES256", "P-256", "SHA256", 32},
    {"ES384", "P-384", "SHA384", 48},
};

static const jws_alg_info *alg_by_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(g_algs); i++)
        if (strcmp(g_algs[i].alg, name) == 0)
            return &g_algs[i];
    return NULL;
}

static const jws_alg_info *alg_by_key(EVP_PKEY *key)
{
    const char *crv = crypto_key_ec_crv(key);
    if (!crv)
        return NULL;
    for (size_t i = 0; i < ARRAY_LEN(g_algs); i++)
        if (strcmp(g_algs[i].crv, crv) == 0)
            return &g_algs[i];
    return NULL;
}

struct jws_signer {
    const jws_alg_info *a;
    x509_ecdsa_signer *es;
    char *prefix; /* ASCII(b64url(header)) || '.': the same for every payload */
    size_t prefix_len;
};

/* The protected header: "alg" first, then @header's members but its own "alg". */
static char *header_text(const jws_alg_info *a, const json_t *header)
{
    _cleanup_json_ json_t *h = json_object();
    json_object_set_new(h, "alg", json_string(a->alg));
    if (header) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)header, k, v)
        {
            if (strcmp(k, "alg") != 0)
                json_object_set(h, k, v);
        }
    }
    return js_dump_compact(h);
}

int jws_signer_new(jws_signer **out, EVP_PKEY *priv, const json_t *header, cista_error **err)
{
    const jws_alg_info *a = priv ? alg_by_key(priv) : NULL;
    if (!a)
        return err_set(err, -ENOTSUP, "JWS: the signing key must be an EC P-256 or P-384 key");
    if (header && !json_is_object(header))
        return err_set(err, -EINVAL, "JWS: the header must be a JSON object");
    x509_ecdsa_signer *es = NULL;
    int r = x509_ecdsa_signer_new(&es, priv, a->md, err);
    if (r < 0)
        return err_wrap(err, "JWS %s signature", a->alg);
    _cleanup_free_ char *htext = header_text(a, header);
    size_t hlen = strlen(htext);
    jws_signer *s = xzalloc(sizeof(*s));
    s->a = a;
    s->es = es;
    s->prefix = xmalloc(b64url_encoded_len(hlen) + 2);
    s->prefix_len = b64url_encode_to(s->prefix, htext, hlen);
    s->prefix[s->prefix_len++] = '.';
    s->prefix[s->prefix_len] = 0;
    *out = s;
    return 0;
}

void jws_signer_free(jws_signer *s)
{
    if (!s)
        return;
    x509_ecdsa_signer_free(s->es);
    free(s->prefix);
    free(s);
}

int jws_signer_sign(char **out, const jws_signer *s, const void *payload, size_t payload_size,
                    cista_error **err)
{
    size_t sig_size = 2 * s->a->int_size;
    size_t cap =
        s->prefix_len + b64url_encoded_len(payload_size) + 1 + b64url_encoded_len(sig_size) + 1;
    _cleanup_free_ char *jws = xmalloc(cap);
    memcpy(jws, s->prefix, s->prefix_len);
    size_t n = s->prefix_len + b64url_encode_to(jws + s->prefix_len, payload, payload_size);
    uint8_t sig[96];
    int r = x509_ecdsa_signer_sign(s->es, sig, sig + s->a->int_size, s->a->int_size,
                                   X509_BIG_ENDIAN, jws, n, err);
    if (r < 0)
        return err_wrap(err, "JWS %s signature", s->a->alg);
    jws[n++] = '.';
    b64url_encode_to(jws + n, sig, sig_size);
    *out = steal_ptr(&jws);
    return 0;
}

int jws_sign(char **out, const json_t *header, const void *payload, size_t payload_size,
             EVP_PKEY *priv, cista_error **err)
{
    jws_signer *s = NULL;
    int r = jws_signer_new(&s, priv, header, err);
    if (r < 0)
        return r;
    r = jws_signer_sign(out, s, payload, payload_size, err);
    jws_signer_free(s);
    return r;
}

/* Split a compact JWS into its three parts; offsets into @jws. */
static int split(size_t dots[2], const char *jws, size_t size, cista_error **err)
{
    if (size > JWS_MAX_SIZE)
        return err_set(err, -EMSGSIZE, "JWS: %zu bytes, more than the limit of %u", size,
                       JWS_MAX_SIZE);
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        char c = jws[i];
        if (c == '.') {
            if (n == 2)
                return err_set(err, -EINVAL,
                               "JWS: more than three dot-separated parts (a JWE, or not a "
                               "compact JWS)");
            dots[n++] = i;
        } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_')) {
            return err_set(err, -EINVAL, "JWS: byte 0x%02x at offset %zu is not base64url",
                           (unsigned char)c, i);
        }
    }
    if (n != 2)
        return err_set(err, -EINVAL, "JWS: expected header.payload.signature, found %zu part(s)",
                       n + 1);
    if (dots[0] == 0)
        return err_set(err, -EINVAL, "JWS: empty header");
    return 0;
}

static int decode_header(json_t **out, const char *jws, size_t len, cista_error **err)
{
    _cleanup_free_ uint8_t *h = NULL;
    size_t hs = 0;
    int r = b64url_decode(&h, &hs, jws, len, err);
    if (r < 0)
        return err_wrap(err, "JWS header");
    r = js_parse_object(out, h, hs, 8192, "JWS header", err);
    return r;
}

int jws_peek_header(json_t **out, const char *jws, size_t size, cista_error **err)
{
    size_t dots[2];
    int r = split(dots, jws, size, err);
    if (r < 0)
        return r;
    return decode_header(out, jws, dots[0], err);
}

int jws_peek_payload(uint8_t **out, size_t *out_size, const char *jws, size_t size,
                     cista_error **err)
{
    size_t dots[2];
    int r = split(dots, jws, size, err);
    if (r < 0)
        return r;
    r = b64url_decode(out, out_size, jws + dots[0] + 1, dots[1] - dots[0] - 1, err);
    return r < 0 ? err_wrap(err, "JWS payload") : 0;
}

int jws_verify(uint8_t **out_payload, size_t *out_size, json_t **out_header, const char *jws,
               size_t size, EVP_PKEY *pub, const char *const *algs, cista_error **err)
{
    size_t dots[2];
    int r = split(dots, jws, size, err);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *h = NULL;
    if ((r = decode_header(&h, jws, dots[0], err)) < 0)
        return r;
    const char *alg = NULL;
    if ((r = js_get_string(&alg, h, "alg", true, "JWS header", err)) < 0)
        return r;
    if (json_object_get(h, "crit"))
        return err_set(err, -ENOTSUP, "JWS: header parameter \"crit\" is not supported");
    const jws_alg_info *a = alg_by_name(alg);
    if (!a)
        return err_set(err, -ENOTSUP, "JWS: algorithm \"%s\" is not accepted (ES256, ES384)", alg);
    if (algs) {
        bool ok = false;
        for (size_t i = 0; algs[i]; i++)
            ok |= strcmp(algs[i], alg) == 0;
        if (!ok)
            return err_set(err, -ENOTSUP, "JWS: algorithm \"%s\" is not accepted here", alg);
    }
    if (!pub || alg_by_key(pub) != a)
        return err_set(err, -ENOTSUP,
                       "JWS: algorithm %s needs an EC %s key; the verification key is another "
                       "kind",
                       a->alg, a->crv);
    _cleanup_free_ uint8_t *sig = NULL;
    size_t sig_size = 0;
    r = b64url_decode(&sig, &sig_size, jws + dots[1] + 1, size - dots[1] - 1, err);
    if (r < 0)
        return err_wrap(err, "JWS signature");
    if (sig_size != 2 * a->int_size)
        return err_set(err, -EBADMSG, "JWS: %s signature is %zu bytes, expected %zu (r || s)",
                       a->alg, sig_size, 2 * a->int_size);
    r = x509_ecdsa_verify_raw(pub, a->md, jws, dots[1], sig, sig + a->int_size, a->int_size,
                              X509_BIG_ENDIAN, err);
    if (r < 0)
        return r == -EBADMSG ? r : err_wrap(err, "JWS %s signature", a->alg);
    uint8_t *p = NULL;
    size_t ps = 0;
    r = b64url_decode(&p, &ps, jws + dots[0] + 1, dots[1] - dots[0] - 1, err);
    if (r < 0)
        return err_wrap(err, "JWS payload");
    *out_payload = p;
    *out_size = ps;
    if (out_header)
        *out_header = steal_ptr(&h);
    return 0;
}
