/*
 * client.c - the KBS protocol client (see client.h) over util/httpc.h, the in-house HTTP/1.1
 * client on libssl: no libcurl to load, and nothing in the TEE's trusted computing base for
 * HTTP but that small client and OpenSSL.
 */
#include "kbs/client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/httpc.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

struct kbs_client {
    httpc *http;
    char *version;
    EVP_PKEY *key;
    char *token;
};

void kbs_secret_free(uint8_t *p, size_t size)
{
    if (p)
        crypto_free_secret(p, size);
}

int kbs_client_new(kbs_client **out, const kbs_client_opts *o, cista_error **err)
{
    if (!o->url || (strncmp(o->url, "https://", 8) && strncmp(o->url, "http://", 7)))
        return err_set(err, -EINVAL, "KBS URL must start with https:// or http://");
    bool https = !strncmp(o->url, "https://", 8);
    if (https && !o->ca_file && !o->system_trust)
        return err_set(err, -EINVAL,
                       "KBS %s: give the CA that signed its certificate (--ca FILE); the system "
                       "trust store is not used unless asked for",
                       o->url);
    httpc_opts ho = {
        .url = o->url,
        .ca_file = o->ca_file,
        .system_trust = o->system_trust,
        .timeout = o->timeout,
        .body_max = 4u << 20,
    };
    httpc *h = NULL;
    int r = httpc_new(&h, &ho, err);
    if (r < 0)
        return err_wrap(err, "KBS client");
    if (!https)
        log_info("KBS %s: plain HTTP, no server authentication", o->url);
    kbs_client *c = xzalloc(sizeof(*c));
    c->http = h;
    c->version = xstrdup(o->version ? o->version : KBS_PROTOCOL_VERSION);
    *out = c;
    return 0;
}

void kbs_client_free(kbs_client *c)
{
    if (!c)
        return;
    httpc_free(c->http);
    free(c->version);
    EVP_PKEY_free(c->key);
    if (c->token)
        crypto_free_secret(c->token, strlen(c->token));
    free(c);
}

void kbs_client_reset(kbs_client *c)
{
    EVP_PKEY_free(c->key);
    c->key = NULL;
    if (c->token)
        crypto_free_secret(c->token, strlen(c->token));
    c->token = NULL;
    httpc_cookies_clear(c->http); /* the session cookie */
    /* A new guest has no connection and no TLS ticket: the next request connects anew, with a
     * full handshake, and no session is kept from now on. The loaded CA store is kept. */
    httpc_disconnect(c->http, true);
}

void kbs__client_freep(kbs_client **c)
{
    kbs_client_free(*c);
    *c = NULL;
}

int kbs_client_request(kbs_client *c, long *out_status, uint8_t **out_body, size_t *out_size,
                       const char *method, const char *path, const char *bearer, const void *body,
                       size_t body_size, const char *content_type, cista_error **err)
{
    httpc_req q = {
        .method = method,
        .path = path,
        .bearer = bearer,
        .body = body,
        .body_size = body_size,
        .content_type = content_type,
    };
    httpc_resp resp;
    int r = httpc_request(c->http, &resp, &q, err);
    if (r < 0)
        return r;
    *out_status = resp.status;
    *out_body = resp.body;
    *out_size = resp.body_size;
    return 0;
}

char *kbs_client_problem_detail(const uint8_t *body, size_t size)
{
    json_t *d = json_loadb((const char *)body, size, 0, NULL);
    const char *detail = json_string_value(json_object_get(d, "detail"));
    const char *src = detail ? detail : (const char *)body;
    size_t n = detail ? strlen(detail) : size;
    /* the broker's words end up in logs and on terminals: bounded, no control bytes */
    char *out = xstrndup(src, n > 512 ? 512 : n);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    json_decref(d);
    return out;
}

static int http_error(long st, const uint8_t *body, size_t size, const char *what,
                      cista_error **err)
{
    _cleanup_free_ char *d = kbs_client_problem_detail(body, size);
    int code = (st == 401 || st == 403) ? -EACCES : st == 404 ? -ENOENT : -EIO;
    return err_set(err, code, "%s: HTTP %ld: %s", what, st, d);
}

static int post_json(kbs_client *c, json_t **out, const char *path, const json_t *body,
                     const char *what, cista_error **err)
{
    _cleanup_free_ char *text = js_dump_compact(body);
    _cleanup_free_ uint8_t *resp = NULL;
    size_t rs = 0;
    long st = 0;
    int r =
        kbs_client_request(c, &st, &resp, &rs, "POST", path, NULL, text, strlen(text), NULL, err);
    if (r < 0)
        return r;
    if (st != 200)
        return http_error(st, resp, rs, what, err);
    r = js_parse_object(out, resp, rs, 1u << 20, what, err);
    crypto_cleanse(resp, rs);
    return r;
}

int kbs_client_attest(kbs_client *c, const ev_ops *tee, const ev_get_opts *get, EVP_PKEY *key,
                      char **out_token, cista_error **err)
{
    bool v2 = strncmp(c->version, "0.2.", 4) == 0;
    _cleanup_json_ json_t *req =
        json_pack("{s:s,s:s,s:{s:[s,s,s]}}", "version", c->version, "tee", tee->name,
                  "extra-params", "supported-hash-algorithms", "sha384", "sha256", "sha512");
    _cleanup_json_ json_t *ch = NULL;
    int r = post_json(c, &ch, "/kbs/v0/auth", req, "KBS auth", err);
    if (r < 0)
        return r;
    const char *nonce = NULL;
    if ((r = js_get_string(&nonce, ch, "nonce", true, "KBS challenge", err)) < 0)
        return r;
    if (strlen(nonce) > 256)
        return err_set(err, -EINVAL, "KBS challenge: nonce longer than 256 bytes");
    crypto_hash_alg alg = CRYPTO_SHA384;
    json_t *extra = json_object_get(ch, "extra-params");
    const char *sel = json_string_value(json_object_get(extra, "selected-hash-algorithm"));
    if (sel) {
        int a = kbs_hash_alg_parse(sel);
        if (a < 0)
            return err_set(err, -ENOTSUP, "KBS selected hash algorithm \"%.16s\" is unknown", sel);
        alg = (crypto_hash_alg)a;
    }
    _cleanup_json_ json_t *jwk = NULL;
    if ((r = jwk_from_key(&jwk, key, false, err)) < 0)
        return r;
    json_object_set_new(jwk, "alg",
                        json_string(crypto_key_is_ec(key) ? "ECDH-ES+A256KW" : "RSA-OAEP-256"));
    uint8_t rd[64];
    if ((r = kbs_binding(rd, alg, nonce, jwk, v2 ? NULL : "", err)) < 0)
        return r;
    _cleanup_free_ uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    if ((r = tee->get(&ev, &ev_size, &aux, &aux_size, rd, get, err)) < 0)
        return err_wrap(err, "%s evidence", tee->name);
    _cleanup_free_ char *ev64 = b64_encode(ev, ev_size);
    json_t *primary = json_pack("{s:s,s:s}", "tee", tee->name, "evidence", ev64);
    if (aux && aux_size) {
        _cleanup_free_ char *aux64 = b64_encode(aux, aux_size);
        json_object_set_new(primary, "aux", json_string(aux64));
    }
    _cleanup_json_ json_t *att = NULL;
    if (v2) {
        _cleanup_free_ char *ptext = js_dump_compact(primary);
        json_decref(primary);
        att = json_pack("{s:O,s:s}", "tee-pubkey", jwk, "tee-evidence", ptext);
    } else {
        att =
            json_pack("{s:{s:s,s:O},s:{s:o,s:s}}", "runtime-data", "nonce", nonce, "tee-pubkey",
                      jwk, "tee-evidence", "primary_evidence", primary, "additional_evidence", "");
    }
    _cleanup_json_ json_t *resp = NULL;
    if ((r = post_json(c, &resp, "/kbs/v0/attest", att, "KBS attest", err)) < 0)
        return r;
    const char *token = NULL;
    if ((r = js_get_string(&token, resp, "token", true, "KBS attest response", err)) < 0)
        return r;
    if (c->token)
        crypto_free_secret(c->token, strlen(c->token));
    c->token = xstrdup(token);
    EVP_PKEY_up_ref(key);
    EVP_PKEY_free(c->key);
    c->key = key;
    if (out_token)
        *out_token = xstrdup(token);
    /* the parsed reply's copy of the bearer token goes back to the heap wiped (jansson's string
     * is ours until the decref; its lexer's scratch copy is freed inside json_loadb) */
    crypto_cleanse((char *)token, strlen(token));
    return 0;
}

int kbs_client_get_resource(kbs_client *c, uint8_t **out, size_t *out_size, const char *path,
                            cista_error **err)
{
    if (!c->token || !c->key)
        return err_set(err, -EACCES, "not attested: call kbs_client_attest() first");
    int r = kbs_check_resource_path(path, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *p = xasprintf("/kbs/v0/resource/%s", path);
    _cleanup_free_ uint8_t *resp = NULL;
    size_t rs = 0;
    long st = 0;
    if ((r = kbs_client_request(c, &st, &resp, &rs, "GET", p, c->token, NULL, 0, NULL, err)) < 0)
        return r;
    if (st != 200) {
        _cleanup_free_ char *what = xasprintf("KBS resource %s", path);
        return http_error(st, resp, rs, what, err);
    }
    jwe_key k = {.pkey = c->key};
    uint8_t *pt = NULL;
    size_t n = 0;
    if ((r = jwe_decrypt(&pt, &n, (const char *)resp, rs, &k, 1, NULL, err)) < 0)
        return err_wrap(err, "KBS resource %s: JWE", path);
    *out = pt;
    *out_size = n;
    return 0;
}

/* ---- counters ---- */

static int counter_parse(kbs_counter_value *out, const uint8_t *body, size_t size, const char *what,
                         cista_error **err)
{
    _cleanup_json_ json_t *d = NULL;
    int64_t gen = 0, updated = 0;
    const char *hex = NULL;
    int r;
    memset(out, 0, sizeof(*out));
    if ((r = js_parse_object(&d, body, size, 4096, what, err)) < 0 ||
        (r = js_get_int(&gen, d, "generation", true, what, err)) < 0 ||
        (r = js_get_int(&updated, d, "updated", false, what, err)) < 0 ||
        (r = js_get_string(&hex, d, "root", true, what, err)) < 0)
        return r;
    size_t n = strlen(hex);
    if (gen < 0 || n % 2 || n > 2 * KBS_CLIENT_COUNTER_ROOT_MAX)
        return err_set(err, -EBADMSG,
                       "%s: generation %lld or root of %zu hex digits is out of range", what,
                       (long long)gen, n);
    if (n && (r = hex_decode_to(out->root, n / 2, hex, err)) < 0)
        return err_wrap(err, "%s: root", what);
    out->generation = (uint64_t)gen;
    out->root_size = n / 2;
    out->updated = updated;
    return 0;
}

int kbs_client_counter_get(kbs_client *c, kbs_counter_value *out, const char *path,
                           cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (!c->token)
        return err_set(err, -EACCES, "not attested: call kbs_client_attest() first");
    int r = kbs_check_resource_path(path, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *p = xasprintf("/kbs/v0/counter/%s", path);
    _cleanup_free_ char *what = xasprintf("KBS counter %s", path);
    _cleanup_free_ uint8_t *resp = NULL;
    size_t rs = 0;
    long st = 0;
    if ((r = kbs_client_request(c, &st, &resp, &rs, "GET", p, c->token, NULL, 0, NULL, err)) < 0)
        return r;
    if (st != 200)
        return http_error(st, resp, rs, what, err);
    return counter_parse(out, resp, rs, what, err);
}

int kbs_client_counter_advance(kbs_client *c, kbs_counter_value *out_current, const char *path,
                               uint64_t expected, uint64_t generation, const uint8_t *root,
                               size_t root_size, cista_error **err)
{
    if (out_current)
        memset(out_current, 0, sizeof(*out_current));
    if (!c->token)
        return err_set(err, -EACCES, "not attested: call kbs_client_attest() first");
    int r = kbs_check_resource_path(path, err);
    if (r < 0)
        return r;
    if (root_size > KBS_CLIENT_COUNTER_ROOT_MAX || expected > INT64_MAX || generation > INT64_MAX)
        return err_set(err, -EINVAL, "KBS counter %s: root or generation out of range", path);
    _cleanup_free_ char *hex = hex_encode(root, root_size);
    _cleanup_json_ json_t *body =
        json_pack("{s:I,s:I,s:s}", "expected_generation", (json_int_t)expected, "generation",
                  (json_int_t)generation, "root", hex);
    _cleanup_free_ char *text = js_dump_compact(body);
    _cleanup_free_ char *p = xasprintf("/kbs/v0/counter/%s", path);
    _cleanup_free_ char *what = xasprintf("KBS counter %s", path);
    _cleanup_free_ uint8_t *resp = NULL;
    size_t rs = 0;
    long st = 0;
    if ((r = kbs_client_request(c, &st, &resp, &rs, "POST", p, c->token, text, strlen(text),
                                "application/json", err)) < 0)
        return r;
    if (st == 200)
        return 0;
    if (st == 409) {
        kbs_counter_value cur;
        cista_error *e2 = NULL;
        if (counter_parse(&cur, resp, rs, what, &e2) == 0 && out_current)
            *out_current = cur;
        err_free(e2);
        _cleanup_free_ char *d = kbs_client_problem_detail(resp, rs);
        return err_set(err, -ESTALE,
                       "%s: compare-and-set from generation %llu to %llu refused (HTTP 409): %s",
                       what, (unsigned long long)expected, (unsigned long long)generation, d);
    }
    return http_error(st, resp, rs, what, err);
}
