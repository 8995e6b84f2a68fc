/*
 * client.c - the KBS protocol client over libcurl (see client.h). libcurl is opened on the first
 * kbs_client_new() (util/dynlib.h), not linked: with its own dependencies (krb5, ldap, ssh2,
 * nghttp2, ...) it cost every cista process start milliseconds of dynamic loading, and most
 * processes (OCI state, kill, delete, ...) never talk to a KBS.
 */
#include "kbs/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "kbs/kbs.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/dynlib.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

struct kbs_client {
    CURL *curl;
    char *url;
    char *version;
    EVP_PKEY *key;
    char *token;
    bool fresh; /* the next request opens a new connection (kbs_client_reset) */
};

/*
 * The libcurl functions the client calls, with the prototypes of curl/curl.h: member f is
 * curl_f. They are filled before any client exists. curl_easy_setopt and curl_easy_getinfo are
 * variadic and are called through their pointers just as they would be directly; the argument
 * types are ours to get right (long for numbers, curl_off_t for _LARGE options), since the type
 * checks of curl's typecheck-gcc.h macros apply only to direct calls.
 */
#define CURL_FUNCS(X)                                                                              \
    X(easy_cleanup)                                                                                \
    X(easy_getinfo)                                                                                \
    X(easy_init)                                                                                   \
    X(easy_perform)                                                                                \
    X(easy_setopt)                                                                                 \
    X(easy_strerror)                                                                               \
    X(global_init)                                                                                 \
    X(slist_append)                                                                                \
    X(slist_free_all)

#define CURL_DECLARE(f) __typeof__(curl_##f) *f;
static struct {
    CURL_FUNCS(CURL_DECLARE)
} g_curl;
#undef CURL_DECLARE

static int bind_libcurl(dynlib *lib, cista_error **err)
{
    void *p = NULL;
    int r;
#define CURL_RESOLVE(f)                                                                            \
    if ((r = dynlib_sym(&p, lib, "curl_" #f, err)) < 0)                                            \
        return r;                                                                                  \
    g_curl.f = (__typeof__(g_curl.f))p;
    CURL_FUNCS(CURL_RESOLVE)
#undef CURL_RESOLVE
    /* Once per process, before any handle exists, as libcurl requires (dynlib runs this once). */
    CURLcode rc = g_curl.global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        return err_set(err, -EIO, "KBS client: curl_global_init: %s", g_curl.easy_strerror(rc));
    return 0;
}

static dynlib g_libcurl = DYNLIB_INIT("libcurl.so.4", "KBS client", "libcurl4", bind_libcurl);

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
    int r = dynlib_load(&g_libcurl, err);
    if (r < 0)
        return r;
    if (!https)
        log_info("KBS %s: plain HTTP, no server authentication", o->url);
    kbs_client *c = xzalloc(sizeof(*c));
    c->curl = g_curl.easy_init();
    if (!c->curl) {
        free(c);
        return err_set(err, -ENOMEM, "curl_easy_init failed");
    }
    c->url = xstrdup(o->url);
    size_t n = strlen(c->url);
    while (n && c->url[n - 1] == '/')
        c->url[--n] = 0;
    c->version = xstrdup(o->version ? o->version : KBS_PROTOCOL_VERSION);
    CURL *h = c->curl;
    g_curl.easy_setopt(h, CURLOPT_COOKIEFILE, ""); /* in-memory cookie engine */
    g_curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    g_curl.easy_setopt(h, CURLOPT_TIMEOUT, o->timeout > 0 ? o->timeout : 30L);
    g_curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    g_curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    g_curl.easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    g_curl.easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    g_curl.easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (o->ca_file) {
        g_curl.easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
        if (!o->system_trust)
            g_curl.easy_setopt(h, CURLOPT_CAPATH, NULL);
    }
    *out = c;
    return 0;
}

void kbs_client_free(kbs_client *c)
{
    if (!c)
        return;
    g_curl.easy_cleanup(c->curl);
    free(c->url);
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
    CURL *h = c->curl;
    g_curl.easy_setopt(h, CURLOPT_COOKIELIST, "ALL"); /* the session cookie */
    /* No TLS resumption: a new guest has no ticket. One cached connection: the next one made
     * (FRESH_CONNECT) closes the previous. The loaded CA store is kept. */
    g_curl.easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    g_curl.easy_setopt(h, CURLOPT_MAXCONNECTS, 1L);
    c->fresh = true;
}

void kbs__client_freep(kbs_client **c)
{
    kbs_client_free(*c);
    *c = NULL;
}

typedef struct {
    cbuf b;
    bool overflow;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    cista_error *e = NULL;
    if (buf_append(&s->b, p, size * n, &e) < 0) {
        err_free(e);
        s->overflow = true;
        return 0;
    }
    return size * n;
}

int kbs_client_request(kbs_client *c, long *out_status, uint8_t **out_body, size_t *out_size,
                       const char *method, const char *path, const char *bearer, const void *body,
                       size_t body_size, const char *content_type, cista_error **err)
{
    CURL *h = c->curl;
    _cleanup_free_ char *url = xasprintf("%s%s", c->url, path);
    sink s = {.b = CBUF_INIT};
    buf_init(&s.b, 4u << 20, true);
    struct curl_slist *hdrs = NULL;
    _cleanup_free_ char *auth = bearer ? xasprintf("Authorization: Bearer %s", bearer) : NULL;
    _cleanup_free_ char *ct =
        xasprintf("Content-Type: %s", content_type ? content_type : "application/json");
    if (auth)
        hdrs = g_curl.slist_append(hdrs, auth);
    if (body)
        hdrs = g_curl.slist_append(hdrs, ct);
    hdrs = g_curl.slist_append(hdrs, "Expect:");
    g_curl.easy_setopt(h, CURLOPT_URL, url);
    g_curl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    g_curl.easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (body) {
        g_curl.easy_setopt(h, CURLOPT_POSTFIELDS, body);
        g_curl.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_size);
        g_curl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    g_curl.easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    g_curl.easy_setopt(h, CURLOPT_FRESH_CONNECT, c->fresh ? 1L : 0L);
    c->fresh = false;
    g_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    g_curl.easy_setopt(h, CURLOPT_WRITEDATA, &s);
    CURLcode rc = g_curl.easy_perform(h);
    g_curl.easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    g_curl.easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    g_curl.slist_free_all(hdrs);
    if (auth)
        crypto_cleanse(auth, strlen(auth));
    if (rc != CURLE_OK) {
        buf_free(&s.b);
        if (s.overflow)
            return err_set(err, -EMSGSIZE, "%s %s: response larger than 4 MiB", method, path);
        return err_set(err,
                       rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE
                           ? -EKEYREJECTED
                           : -ECONNREFUSED,
                       "%s %s%s: %s", method, c->url, path, g_curl.easy_strerror(rc));
    }
    long st = 0;
    g_curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    *out_status = st;
    buf_put(&s.b, "", 0);
    *out_body = buf_steal(&s.b, out_size);
    if (!*out_body) {
        *out_body = (uint8_t *)xstrdup("");
        *out_size = 0;
    }
    return 0;
}

char *kbs_client_problem_detail(const uint8_t *body, size_t size)
{
    json_t *d = json_loadb((const char *)body, size, 0, NULL);
    const char *detail = json_string_value(json_object_get(d, "detail"));
    char *out = detail ? xstrdup(detail) : xstrndup((const char *)body, size > 512 ? 512 : size);
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
