/*
 * handler.c - the KBS request handlers, independent of the transport (see
 * kbs_handle() in kbs.h). Each handler validates its input, makes one
 * decision, writes one audit entry for auth / attest / release / admin
 * decisions, and answers with JSON or an RFC 7807 problem document.
 *
 * Error bodies name the failed check (the rule that denied, the evidence
 * check that failed) but never a resource value, a nonce, a session id or a
 * token.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "kbs/kbs_int.h"
#include "policy/appraisal.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

static void free_secret_str(char *s)
{
    if (s)
        crypto_free_secret(s, strlen(s));
}

#define ERR_BASE "https://github.com/confidential-containers/kbs/errors/"

static const char g_default_policy[] =
    "{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"default-affirming\",\"allOf\":[{\"claim\":"
    "\"appraisal.status\",\"equals\":\"affirming\"}]}]}";

void kbs_response_clear(kbs_response *r)
{
    buf_free(&r->body);
    if (r->set_cookie) /* holds the session id, a bearer credential */
        crypto_free_secret(r->set_cookie, strlen(r->set_cookie));
    memset(r, 0, sizeof(*r));
}

static void problem(kbs_response *resp, int status, const char *kind, const char *fmt, ...)
    CISTA_PRINTF(4, 5);
static void problem(kbs_response *resp, int status, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *detail = NULL;
    if (vasprintf(&detail, fmt, ap) < 0)
        abort();
    va_end(ap);
    json_t *o =
        json_pack("{s:s,s:s,s:i,s:s}", "type", "", "title", kind, "status", status, "detail", "");
    _cleanup_free_ char *type = xasprintf(ERR_BASE "%s", kind);
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "detail", json_stringn(detail, strnlen(detail, 2048)));
    free(detail);
    _cleanup_free_ char *text = js_dump_compact(o);
    json_decref(o);
    buf_reset(&resp->body);
    buf_puts(&resp->body, text);
    resp->status = status;
    resp->content_type = "application/problem+json";
}

static void problem_err(kbs_response *resp, int status, const char *kind, const cista_error *e)
{
    _cleanup_free_ char *s = err_str(e);
    problem(resp, status, kind, "%s", s);
}

static void reply_json(kbs_response *resp, int status, const json_t *o)
{
    _cleanup_free_ char *text = js_dump_compact(o);
    buf_reset(&resp->body);
    buf_puts(&resp->body, text);
    resp->status = status;
    resp->content_type = "application/json";
}

/* {"token": @token}, written directly: the token is ~2 KiB that jansson would copy and scan per
 * character twice (into a string node, then out again). */
static void reply_token(kbs_response *resp, const char *token)
{
    size_t n = strlen(token);
    buf_reset(&resp->body);
    buf_reserve(&resp->body, n + 16); /* one allocation, not a doubling from 64 bytes */
    buf_puts(&resp->body, "{\"token\":");
    js_buf_put_string(&resp->body, token, n, false);
    buf_puts(&resp->body, "}");
    resp->status = 200;
    resp->content_type = "application/json";
}

/* The /auth challenge {"nonce", "extra-params"}, written directly as reply_token() is. */
static void reply_challenge(kbs_response *resp, const char *nonce, kbs_proto proto,
                            crypto_hash_alg hash)
{
    cbuf *b = &resp->body;
    buf_reset(b);
    buf_puts(b, "{\"nonce\":");
    js_buf_put_string(b, nonce, strlen(nonce), false);
    if (proto == KBS_PROTO_V2) {
        buf_puts(b, ",\"extra-params\":\"\"}");
    } else {
        const char *name = crypto_hash_name(hash);
        buf_puts(b, ",\"extra-params\":{\"selected-hash-algorithm\":");
        js_buf_put_string(b, name, strlen(name), false);
        buf_puts(b, "}}");
    }
    resp->status = 200;
    resp->content_type = "application/json";
}

static void audit(kbs_ctx *c, const kbs_request *req, const char *event, const char *tee,
                  const char *digest, const char *resource, const char *decision,
                  const char *reason)
{
    kbs_audit_entry e = {event, tee, digest, resource, decision, reason, req->peer};
    cista_error *err = NULL;
    if (c->defer_audit) {
        /* Group commit: the server sends the reply once the committer made this durable. */
        kbs__commit_job_add(&c->audit_job, kbs_store_audit_body(&e), time(NULL));
        return;
    }
    if (kbs_store_audit_append(c->store, &e, time(NULL), &err) < 0) {
        _cleanup_free_ char *s = err_str(err);
        log_error("audit: cannot append the %s entry: %s", event, s);
        err_free(err);
    }
}

/* ---- sessions over the memory table or the store ---- */

static int sess_add(kbs_ctx *c, const kbs_session *s, time_t now, cista_error **err)
{
    if (c->sh->sessions)
        return kbs_sessions_add(c->sh->sessions, s, now, err);
    return kbs_store_session_add(c->store, s, now, err);
}

static int sess_find(kbs_ctx *c, kbs_session *out, const char *id, time_t now)
{
    if (c->sh->sessions)
        return kbs_sessions_find(c->sh->sessions, out, id, now);
    cista_error *e = NULL;
    int r = kbs_store_session_find(c->store, out, id, now, &e);
    if (r < 0 && r != -ENOENT && r != -ETIMEDOUT) {
        _cleanup_free_ char *s = err_str(e);
        log_error("session lookup: %s", s);
    }
    err_free(e);
    return r;
}

static int sess_consume(kbs_ctx *c, const char *id, time_t now)
{
    if (c->sh->sessions)
        return kbs_sessions_consume(c->sh->sessions, id, now);
    cista_error *e = NULL;
    int r = kbs_store_session_consume(c->store, id, now, &e);
    err_free(e);
    return r;
}

static int sess_set_token(kbs_ctx *c, const char *id, const char *token, EVP_PKEY *tee_key,
                          time_t exp)
{
    if (c->sh->sessions)
        return kbs_sessions_set_token(c->sh->sessions, id, token, tee_key, exp);
    cista_error *e = NULL;
    int r = kbs_store_session_set_token(c->store, id, token, exp, &e);
    err_free(e);
    return r;
}

/* The kbs-session-id cookie value (43 base64url characters) into @out. */
static bool cookie_session(char out[KBS_SESSION_ID_LEN + 1], const char *cookie)
{
    if (!cookie)
        return false;
    const char *p = cookie;
    while ((p = strstr(p, KBS_COOKIE "=")) != NULL) {
        if (p == cookie || p[-1] == ' ' || p[-1] == ';') {
            p += strlen(KBS_COOKIE "=");
            size_t n = strcspn(p, "; ");
            if (n != KBS_SESSION_ID_LEN)
                return false;
            for (size_t i = 0; i < n; i++) {
                char ch = p[i];
                if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
                    return false;
            }
            memcpy(out, p, n);
            out[n] = 0;
            return true;
        }
        p++;
    }
    return false;
}

static const char *bearer(const char *authz)
{
    if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
        return NULL;
    authz += 7;
    while (*authz == ' ')
        authz++;
    return *authz ? authz : NULL;
}

/* ---- /auth ---- */

static void handle_auth(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    cista_error *err = NULL;
    kbs_auth_req a;
    _cleanup_json_ json_t *doc = NULL;
    int r = kbs_parse_auth(&a, &doc, req->body, req->body_size, &err);
    if (r < 0) {
        problem_err(resp, 400, r == -EPROTONOSUPPORT ? "ProtocolVersion" : "InvalidRequest", err);
        err_free(err);
        return;
    }
    time_t now = time(NULL);
    kbs_session s;
    memset(&s, 0, sizeof(s));
    uint8_t idb[32];
    if (crypto_random(idb, sizeof(idb), &err) < 0 ||
        crypto_random(s.nonce, sizeof(s.nonce), &err) < 0) {
        problem(resp, 500, "InternalError", "no randomness");
        err_free(err);
        return;
    }
    _cleanup_free_ char *id = b64url_encode(idb, sizeof(idb));
    crypto_cleanse(idb, sizeof(idb));
    snprintf(s.id, sizeof(s.id), "%s", id);
    snprintf(s.tee, sizeof(s.tee), "%s", a.tee);
    s.proto = (uint8_t)a.proto;
    s.hash = (uint8_t)a.hash;
    s.state = KBS_SESSION_CHALLENGED;
    s.expires = now + c->sh->cfg->nonce_lifetime;
    if ((r = sess_add(c, &s, now, &err)) < 0) {
        problem_err(resp, r == -EBUSY ? 503 : 500, "SessionError", err);
        err_free(err);
        kbs_session_clear(&s);
        return;
    }
    _cleanup_free_ char *nonce = b64_encode(s.nonce, sizeof(s.nonce));
    reply_challenge(resp, nonce, a.proto, (crypto_hash_alg)a.hash);
    resp->set_cookie = xasprintf(KBS_COOKIE "=%s; Path=/kbs/v0; Max-Age=%u; HttpOnly; "
                                            "SameSite=Strict%s",
                                 s.id, c->sh->cfg->nonce_lifetime, req->tls ? "; Secure" : "");
    crypto_cleanse(nonce, strlen(nonce));
    kbs_session_clear(&s);
    _cleanup_free_ char *why = xasprintf("challenge issued (protocol %s, %s)", a.version,
                                         crypto_hash_name((crypto_hash_alg)a.hash));
    audit(c, req, "auth", a.tee, NULL, NULL, "allow", why);
}

/* ---- /attest ---- */

static const ev_collateral *collateral_for(const kbs_shared *sh, const char *tee)
{
    for (size_t i = 0; i < sh->coll_count; i++)
        if (!strcmp(sh->colls[i].tee, tee))
            return sh->colls[i].c;
    return NULL;
}

int kbs__verify_evidence(json_t **out, kbs_shared *sh, const kbs_attest_req *a,
                         const uint8_t *report_data, time_t now, cista_error **err)
{
    const ev_ops *ops = ev_find(a->ev_tee);
    if (!ops)
        return err_set(err, -ENOTSUP, "no verifier for tee %s in this build", a->ev_tee);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.report_data = report_data;
    o.now = now;
    /* Safe to share across requests and clients: an outcome is only reused for byte-identical
     * inputs (quote chain, every collateral entry, CRLs included) while "now" is inside its
     * validity window (ev.h), so revocation and expiry are decided on every call. */
    o.chain_cache = sh->ev_cache;
    const ev_collateral *base = collateral_for(sh, a->ev_tee);
    _cleanup_collateral_ ev_collateral *merged = NULL;
    if (a->certs) {
        /* The client's certificates first, then the configured set: the order verifiers saw
         * before. The configured entries keep the certificates parsed when the configuration
         * was loaded, so only what the client sent is parsed per request. */
        merged = ev_collateral_new();
        for (size_t i = 0; i < ev_collateral_count(a->certs); i++) {
            int r = ev_collateral_add_from(merged, a->certs, i, err);
            if (r < 0)
                return r;
        }
        for (size_t i = 0; i < ev_collateral_count(base); i++) {
            int r = ev_collateral_add_from(merged, base, i, err);
            if (r < 0)
                return r;
        }
        o.collateral = merged;
    } else {
        o.collateral = base;
    }
    if (!strcmp(a->ev_tee, "sim")) {
        if (sh->sim_key_count == 0)
            return err_set(err, -ENOKEY,
                           "sim evidence: this KBS trusts no sim platform key (config "
                           "sim_platform_keys)");
        int r = 0;
        for (size_t i = 0; i < sh->sim_key_count; i++) {
            if (i)
                err_clear(err);
            o.sim_key = sh->sim_keys[i];
            r = ops->verify(out, a->evidence, a->evidence_size, a->aux, a->aux_size, &o, err);
            /* EV_E_PLATFORM: the report names another platform, perhaps a later key's */
            if (r != EV_E_SIGNATURE && r != EV_E_PLATFORM)
                return r;
        }
        return r;
    }
    if (!strcmp(a->ev_tee, "tpm") && sh->tpm_ak_count > 0) {
        int r = 0;
        for (size_t i = 0; i < sh->tpm_ak_count; i++) {
            if (i)
                err_clear(err);
            o.tpm_ak_pub = sh->tpm_aks[i];
            r = ops->verify(out, a->evidence, a->evidence_size, a->aux, a->aux_size, &o, err);
            if (r != EV_E_SIGNATURE && r != EV_E_NOKEY)
                return r;
        }
        return r;
    }
    return ops->verify(out, a->evidence, a->evidence_size, a->aux, a->aux_size, &o, err);
}

/* Does the init-data digest match the launch-bound value in the claims? */
static int check_init_data(const json_t *claims, const char *digest_hex, cista_error **err)
{
    const char *bound = json_string_value(json_object_get(claims, "host_data"));
    const char *name = "host_data";
    if (!bound) {
        bound = json_string_value(json_object_get(claims, "init_data"));
        name = "init_data";
    }
    if (!bound)
        return 0; /* this TEE binds no launch data: the digest proves nothing */
    size_t n = strlen(digest_hex);
    bool ok = strncasecmp(bound, digest_hex, n) == 0;
    for (const char *p = bound + (strlen(bound) >= n ? n : strlen(bound)); ok && *p; p++)
        ok = *p == '0';
    if (!ok)
        return err_set(err, -EACCES,
                       "init-data digest %.16s… does not match the launch-bound %s %.16s…; the "
                       "guest presented other init-data than it was launched with",
                       digest_hex, name, bound);
    return 1;
}

static void handle_attest(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    cista_error *err = NULL;
    char id[KBS_SESSION_ID_LEN + 1];
    if (!cookie_session(id, req->cookie)) {
        problem(resp, 401, "AttestationError",
                "no valid " KBS_COOKIE " cookie: POST /kbs/v0/auth first");
        return;
    }
    time_t now = time(NULL);
    kbs_session s;
    memset(&s, 0, sizeof(s));
    int r = sess_find(c, &s, id, now);
    if (r < 0) {
        problem(resp, 401, "AttestationError", "%s: POST /kbs/v0/auth again",
                r == -ETIMEDOUT ? "the session expired" : "unknown session");
        audit(c, req, "attest", NULL, NULL, NULL, "deny",
              r == -ETIMEDOUT ? "session expired" : "unknown session");
        return;
    }
    char tee[sizeof(s.tee)];
    memcpy(tee, s.tee, sizeof(tee));
    if (s.state != KBS_SESSION_CHALLENGED) {
        kbs_session_clear(&s);
        problem(resp, 401, "AttestationError",
                "this session's nonce was already used (a replayed attestation): POST "
                "/kbs/v0/auth for a new challenge");
        audit(c, req, "attest", tee, NULL, NULL, "deny", "nonce already used");
        return;
    }
    kbs_attest_req a;
    _cleanup_json_ json_t *doc = NULL;
    if ((r = kbs_parse_attest(&a, &doc, (kbs_proto)s.proto, s.tee, req->body, req->body_size,
                              &err)) < 0) {
        kbs_session_clear(&s);
        (void)sess_consume(c, id, now); /* a challenge is used up whatever the outcome */
        problem_err(resp, 400, "InvalidRequest", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, "attest", tee, NULL, NULL, "deny", why);
        err_free(err);
        return;
    }
    _cleanup_free_ char *nonce = b64_encode(s.nonce, sizeof(s.nonce));
    crypto_hash_alg halg = (crypto_hash_alg)s.hash;
    kbs_session_clear(&s);
    json_t *claims = NULL;
    char digest[65] = "";
    _cleanup_free_ char *init_hex = NULL;
    _cleanup_free_ char *token = NULL; /* declared before the first goto (cleanup attribute) */
    const char *fail_kind = "AttestationError";
    pol_appraisal ap;
    memset(&ap, 0, sizeof(ap));
    if (a.nonce &&
        (strlen(a.nonce) != strlen(nonce) || !crypto_memeq(a.nonce, nonce, strlen(nonce)))) {
        r = err_set(&err, -EACCES,
                    "runtime-data nonce does not match this session's challenge (a replay, or a "
                    "nonce from another session)");
        (void)sess_consume(c, id, now);
        goto deny;
    }
    if ((r = sess_consume(c, id, now)) < 0) {
        r = err_set(&err, -EACCES,
                    r == -EALREADY ? "this session's nonce was already used (a replayed "
                                     "attestation): POST /kbs/v0/auth again"
                                   : "the session expired: POST /kbs/v0/auth again");
        goto deny;
    }
    if (strcmp(a.ev_tee, tee) != 0) {
        r = err_set(&err, -EACCES,
                    "the evidence is %s evidence but the session was opened for tee %s", a.ev_tee,
                    tee);
        goto deny;
    }
    uint8_t rd[64];
    if ((r = kbs_binding(rd, halg, nonce, a.tee_pubkey, a.nonce ? a.additional : NULL, &err)) < 0)
        goto deny;
    if ((r = kbs__verify_evidence(&claims, c->sh, &a, rd, now, &err)) < 0) {
        if (r == EV_E_REPORT_DATA)
            err_wrap(&err,
                     "the evidence's report data is not the %s binding of this session's "
                     "nonce and tee-pubkey",
                     crypto_hash_name(halg));
        goto deny;
    }
    {
        _cleanup_free_ char *jcs = NULL;
        if (kbs_jcs(&jcs, claims, NULL) == 0) {
            uint8_t d[32];
            crypto_hash_oneshot(CRYPTO_SHA256, jcs, strlen(jcs), d);
            _cleanup_free_ char *h = hex_encode(d, sizeof(d));
            memcpy(digest, h, 65);
        }
    }
    if (a.init_data_body) {
        uint8_t d[32];
        crypto_hash_oneshot(CRYPTO_SHA256, a.init_data_body, strlen(a.init_data_body), d);
        init_hex = hex_encode(d, sizeof(d));
        if ((r = check_init_data(claims, init_hex, &err)) < 0)
            goto deny;
        /*
         * Evidence that binds no launch data (tpm, sgx) does not cover the init-data body, which
         * the client alone chose: its digest must satisfy neither an init_data reference value
         * nor a release rule, so it is dropped (the appraisal then sees no init-data).
         */
        if (r == 0) {
            log_info("attest: the %s evidence binds no init-data; the client's is ignored", tee);
            free(steal_ptr(&init_hex));
        }
    }
    {
        _cleanup_free_ char *rvtext = NULL;
        kbs_parsed_ref *rv = NULL;
        cista_error *e2 = NULL;
        int gr = kbs__doc_cache_get(c->sh->docs, c->store, &rvtext, "refvals", "default", &e2);
        if (gr < 0 && gr != -ENOENT) {
            /* unreadable (or modified outside the KBS): appraised as having none */
            _cleanup_free_ char *s2 = err_str(e2);
            log_error("reference values: %s", s2);
        } else if (gr == 0 && kbs__doc_cache_refvals(c->sh->docs, &rv, rvtext, &e2) < 0) {
            _cleanup_free_ char *s2 = err_str(e2);
            log_error("stored reference values do not parse: %s", s2);
        }
        err_free(e2);
        r = pol_appraise(&ap, rv ? kbs__parsed_refvals(rv) : NULL, claims, init_hex, &err);
        kbs__parsed_ref_put(rv);
        if (r < 0)
            goto deny;
    }
    if (ap.status == POL_CONTRAINDICATED && c->sh->cfg->reject_contraindicated) {
        r = err_set(&err, -EPERM, "appraisal: contraindicated: %s", ap.reason);
        goto deny;
    }
    if ((r = kbs_token_issue_with(&token, NULL, c->sh->token_signer, claims,
                                  pol_status_name(ap.status), ap.reason, a.tee_pubkey, nonce,
                                  init_hex, c->sh->cfg->token_lifetime, now, &err)) < 0) {
        fail_kind = "InternalError";
        goto deny;
    }
    sess_set_token(c, id, token, a.tee_key, now + c->sh->cfg->token_lifetime);
    reply_token(resp, token);
    {
        _cleanup_free_ char *why =
            xasprintf("token issued: appraisal %s%s%s", pol_status_name(ap.status),
                      ap.reason ? ": " : "", ap.reason ? ap.reason : "");
        audit(c, req, "attest", tee, digest, NULL, "allow", why);
    }
    free_secret_str(steal_ptr(&token));
    goto out;
deny : {
    _cleanup_free_ char *why = err_str(err);
    problem(resp, strcmp(fail_kind, "InternalError") ? 401 : 500, fail_kind, "%s", why);
    audit(c, req, "attest", tee, digest[0] ? digest : NULL, NULL, "deny", why);
}
out:
    pol_appraisal_clear(&ap);
    json_decref(claims);
    kbs_attest_req_clear(&a);
    err_free(err);
    crypto_cleanse(nonce, strlen(nonce));
}

/* ---- guest resource ---- */

/* Policy key candidates for a resource path, most specific first. */
static int find_policy(kbs_ctx *c, char **out_text, char **out_key, const char *path)
{
    char repo[KBS_MAX_PATH + 1], type[KBS_MAX_PATH + 1];
    const char *a = strchr(path, '/');
    const char *b = strchr(a + 1, '/');
    snprintf(repo, sizeof(repo), "%.*s", (int)(a - path), path);
    snprintf(type, sizeof(type), "%.*s", (int)(b - a - 1), a + 1);
    char *keys[4] = {xstrdup(path), xasprintf("%s/%s/*", repo, type), xasprintf("%s/*", repo),
                     xstrdup("default")};
    int r = -ENOENT;
    for (size_t i = 0; i < 4 && r == -ENOENT; i++) {
        cista_error *e = NULL;
        r = kbs__doc_cache_get(c->sh->docs, c->store, out_text, "policy", keys[i], &e);
        if (r == 0)
            *out_key = xstrdup(keys[i]);
        else if (r != -ENOENT) {
            _cleanup_free_ char *s = err_str(e);
            log_error("release policy lookup: %s", s);
        }
        err_free(e);
    }
    for (size_t i = 0; i < 4; i++)
        free(keys[i]);
    return r;
}

/*
 * The guest side of every resource-like request: an attestation token (bearer or the cookie of
 * an attested session) that verifies, a valid path, and the release policy of @path allowing the
 * token's claims. On refusal the response and the audit entry (@event) are written and false is
 * returned. On success *out_payload (new reference), *out_tee (owned), *out_why (owned: "policy
 * KEY: reason") are set, and *out_key (when @out_key is not NULL) to the payload's tee-pubkey as
 * the attestation imported it if the session holds it (a new reference), else NULL.
 */
static void held_freep(kbs_held_token **h)
{
    kbs_held_token_free(*h);
}

static bool guest_authorize(kbs_ctx *c, const kbs_request *req, kbs_response *resp,
                            const char *path, const char *event, json_t **out_payload,
                            EVP_PKEY **out_key, char **out_tee, char **out_why)
{
    cista_error *err = NULL;
    /* first: an invalid path (control bytes, "..") never reaches the audit log or the store */
    if (kbs_check_resource_path(path, &err) < 0) {
        problem_err(resp, 400, "InvalidRequestPath", err);
        err_free(err);
        return false;
    }
    time_t now = time(NULL);
    _cleanup_free_ char *token = NULL;
    const char *tok = bearer(req->authorization);
    /*
     * Session binding: the token of an attested in-memory session was signed by this process and
     * has never left its memory unverified, so it needs no signature check: the session keeps
     * the payload it signed, and a bearer token counts as that token only when its SHA-256 equals
     * the one kept (compared in constant time). Store-backed sessions do not qualify: the
     * database is outside this process, and a token read from it is verified like any bearer
     * token.
     */
    bool memory = c->sh->sessions != NULL;
    char *sess_token = NULL;                                          /* store-backed sessions */
    __attribute__((cleanup(held_freep))) kbs_held_token *kept = NULL; /* the memory table */
    _cleanup_json_ json_t *payload = NULL;
    _cleanup_pkey_ EVP_PKEY *tee_key = NULL;
    if (!tok || memory) {
        char id[KBS_SESSION_ID_LEN + 1];
        kbs_session s;
        memset(&s, 0, sizeof(s));
        if (cookie_session(id, req->cookie) && sess_find(c, &s, id, now) == 0 &&
            s.state == KBS_SESSION_ATTESTED) {
            sess_token = steal_ptr(&s.token);
            kept = steal_ptr(&s.held);
            tee_key = steal_ptr(&s.tee_key);
        }
        kbs_session_clear(&s);
    }
    bool held = false;
    if (tok) {
        token = xstrdup(tok);
        if (memory && kept) {
            uint8_t d[32];
            crypto_hash_oneshot(CRYPTO_SHA256, tok, strlen(tok), d);
            held = crypto_memeq(d, kept->token_sha256, sizeof(d));
            crypto_cleanse(d, sizeof(d));
        }
    } else if (kept) {
        held = memory;
    } else if (sess_token) {
        token = steal_ptr(&sess_token);
    }
    free_secret_str(steal_ptr(&sess_token));
    if (!token && !held) {
        problem(resp, 401, "TokenNotFound",
                "not attested: send Authorization: Bearer <attestation token> or the cookie of "
                "an attested session");
        audit(c, req, event, NULL, NULL, path, "deny", "not attested");
        return false;
    }
    /* a held token's payload is the one signed for it, kept with the session (memory table) */
    int r;
    if (held) {
        r = js_parse_object(&payload, kept->payload_json, kept->payload_size, JWS_MAX_SIZE,
                            "attestation token", &err);
        if (r == 0)
            r = kbs_token_check_issued(payload, now, &err);
    } else {
        EVP_PKEY_free(steal_ptr(&tee_key));
        r = kbs_token_verify(&payload, c->sh->sign_key, token, strlen(token), now, &err);
    }
    free_secret_str(steal_ptr(&token));
    if (r < 0) {
        problem_err(resp, 401, "TokenVerifierError", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, event, NULL, NULL, path, "deny", why);
        err_free(err);
        return false;
    }
    _cleanup_json_ json_t *input = kbs_token_policy_input(payload, path);
    const char *tee = json_string_value(json_object_get(input, "tee"));
    _cleanup_free_ char *ptext = NULL, *pkey = NULL;
    int fr = find_policy(c, &ptext, &pkey, path);
    if (fr == -ENOENT && c->sh->cfg->release_default_deny) {
        /* the configuration, out of a database writer's reach, says a missing policy is no
         * policy: deleting rows cannot widen a release to the built-in default */
        problem(resp, 403, "PolicyDeny",
                "no release policy covers %s (none for it, its type, its repository or "
                "\"default\"), and release_default is deny",
                path);
        audit(c, req, event, tee, NULL, path, "deny", "no release policy (release_default deny)");
        return false;
    }
    if (fr == -ENOENT) {
        ptext = xstrdup(g_default_policy);
        pkey = xstrdup("(built-in default)");
    } else if (fr < 0) {
        /* the store failed: the policy that guards @path is unknown, so nothing is released
         * (falling back to the default would release under a weaker rule) */
        problem(resp, 503, "StorageError",
                "the release policy of %s could not be read; try again later", path);
        audit(c, req, event, tee, NULL, path, "error", "release policy unreadable (store error)");
        return false;
    }
    kbs_parsed_ref *pol = NULL;
    bool allow = false;
    _cleanup_free_ char *reason = NULL;
    int pr = kbs__doc_cache_policy(c->sh->docs, &pol, ptext, &err);
    if (pr == 0)
        pr = pol_release_eval(&allow, &reason, kbs__parsed_policy(pol), input, &err);
    kbs__parsed_ref_put(pol);
    if (pr < 0) {
        _cleanup_free_ char *s = err_str(err);
        problem(resp, 403, "PolicyDeny", "release policy %s is unusable (denying): %s", pkey, s);
        audit(c, req, event, tee, NULL, path, "deny", s);
        err_free(err);
        return false;
    }
    if (!allow) {
        problem(resp, 403, "PolicyDeny", "release policy %s denies %s: %s", pkey, path, reason);
        _cleanup_free_ char *why = xasprintf("policy %s: %s", pkey, reason);
        audit(c, req, event, tee, NULL, path, "deny", why);
        return false;
    }
    *out_tee = tee ? xstrdup(tee) : NULL;
    *out_why = xasprintf("%s: %s", pkey, reason);
    *out_payload = steal_ptr(&payload);
    if (out_key)
        *out_key = steal_ptr(&tee_key);
    return true;
}

/* @value as a JWE to the token's tee-pubkey: @held_key when the session holds it, else imported. */
static int release_jwe(char **out, const json_t *payload, EVP_PKEY *held_key, const uint8_t *value,
                       size_t vsize, cista_error **err)
{
    const json_t *jwk = kbs_token_tee_pubkey(payload);
    _cleanup_pkey_ EVP_PKEY *imported = NULL;
    /* Validated once at import; ECDH need not repeat the check (a scalar multiplication). */
    int r = held_key ? 0 : jwk_to_key_partial(&imported, jwk, err);
    if (r < 0)
        return r;
    EVP_PKEY *pk = held_key ? held_key : imported;
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    jwe_key k = {.pkey = pk, .pkey_checked = true};
    if (crypto_key_is_ec(pk))
        k.alg = "ECDH-ES+A256KW";
    else
        k.alg = alg && !strcmp(alg, "RSA-OAEP") ? "RSA-OAEP" : "RSA-OAEP-256";
    return jwe_encrypt(out, value, vsize, &k, 1, "A256GCM", JWE_FLATTENED, err);
}

/* kbs_store_get_resource() with the stored (sealed) value read through the document cache. */
static int get_resource(kbs_ctx *c, uint8_t **out, size_t *out_size, const char *path,
                        cista_error **err)
{
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size = 0;
    int r = kbs__doc_cache_get_sealed(c->sh->docs, c->store, &sealed, &sealed_size, path, err);
    if (r < 0)
        return r;
    return kbs_store_unseal(c->store, out, out_size, path, sealed, sealed_size, err);
}

static void handle_resource_get(kbs_ctx *c, const kbs_request *req, kbs_response *resp,
                                const char *path)
{
    cista_error *err = NULL;
    _cleanup_json_ json_t *payload = NULL;
    _cleanup_pkey_ EVP_PKEY *held_key = NULL;
    _cleanup_free_ char *tee = NULL, *allowed = NULL;
    if (!guest_authorize(c, req, resp, path, "resource", &payload, &held_key, &tee, &allowed))
        return;
    int r;
    uint8_t *value = NULL;
    size_t vsize = 0;
    if ((r = get_resource(c, &value, &vsize, path, &err)) < 0) {
        if (r == -ENOENT)
            problem(resp, 404, "ResourceNotFound", "resource %s does not exist", path);
        else
            problem_err(resp, 500, "StorageError", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, "resource", tee, NULL, path, r == -ENOENT ? "deny" : "error", why);
        err_free(err);
        return;
    }
    _cleanup_free_ char *jwe = NULL;
    r = release_jwe(&jwe, payload, held_key, value, vsize, &err);
    crypto_free_secret(value, vsize);
    if (r < 0) {
        problem_err(resp, 500, "JweError", err);
        err_free(err);
        return;
    }
    buf_reset(&resp->body);
    buf_puts(&resp->body, jwe);
    resp->status = 200;
    resp->content_type = "application/json";
    _cleanup_free_ char *why = xasprintf("released (%s)", allowed);
    audit(c, req, "resource", tee, NULL, path, "allow", why);
}

/* ---- counters (rollback anchors) ---- */

static json_t *counter_json(const kbs_counter *k)
{
    _cleanup_free_ char *hex = hex_encode(k->root, k->root_size);
    return json_pack("{s:I,s:s,s:I}", "generation", (json_int_t)k->generation, "root", hex,
                     "updated", (json_int_t)k->updated);
}

/* {"expected_generation": N, "generation": M, "root": HEX} (also used by the admin reset). */
static int counter_body(int64_t *out_expected, int64_t *out_gen, uint8_t root[KBS_COUNTER_ROOT_MAX],
                        size_t *out_root_size, const kbs_request *req, bool need_expected,
                        cista_error **err)
{
    _cleanup_json_ json_t *d = NULL;
    const char *hex = NULL;
    int r;
    *out_expected = 0;
    *out_gen = 0;
    *out_root_size = 0;
    if (req->body_size == 0 && !need_expected)
        return 0;
    if ((r = js_parse_object(&d, req->body, req->body_size, 4096, "counter request", err)) < 0 ||
        (r = js_get_int(out_expected, d, "expected_generation", need_expected, "counter request",
                        err)) < 0 ||
        (r = js_get_int(out_gen, d, "generation", need_expected, "counter request", err)) < 0 ||
        (r = js_get_string(&hex, d, "root", false, "counter request", err)) < 0)
        return r;
    if (*out_expected < 0 || *out_gen < 0)
        return err_set(err, -EINVAL, "counter request: generations must not be negative");
    size_t n = hex ? strlen(hex) : 0;
    if (n % 2 || n > 2 * KBS_COUNTER_ROOT_MAX)
        return err_set(err, -EINVAL,
                       "counter request: root must be hex of at most %d bytes (got %zu digits)",
                       KBS_COUNTER_ROOT_MAX, n);
    if (n && (r = hex_decode_to(root, n / 2, hex, err)) < 0)
        return err_wrap(err, "counter request: root");
    *out_root_size = n / 2;
    return 0;
}

static void handle_counter(kbs_ctx *c, const kbs_request *req, kbs_response *resp, const char *path,
                           bool advance)
{
    cista_error *err = NULL;
    _cleanup_json_ json_t *payload = NULL;
    _cleanup_free_ char *tee = NULL, *allowed = NULL;
    if (!guest_authorize(c, req, resp, path, "counter", &payload, NULL, &tee, &allowed))
        return;
    kbs_counter cur;
    memset(&cur, 0, sizeof(cur));
    int r;
    if (!advance) {
        if ((r = kbs_store_counter_get(c->store, &cur, path, &err)) < 0) {
            if (r == -ENOENT)
                problem(resp, 404, "ResourceNotFound", "counter %s does not exist", path);
            else
                problem_err(resp, 500, "StorageError", err);
            err_free(err);
            return;
        }
        _cleanup_json_ json_t *o = counter_json(&cur);
        reply_json(resp, 200, o);
        _cleanup_free_ char *why =
            xasprintf("read generation %llu (%s)", (unsigned long long)cur.generation, allowed);
        audit(c, req, "counter", tee, NULL, path, "allow", why);
        return;
    }
    int64_t expected = 0, gen = 0;
    uint8_t root[KBS_COUNTER_ROOT_MAX];
    size_t root_size = 0;
    if (counter_body(&expected, &gen, root, &root_size, req, true, &err) < 0) {
        problem_err(resp, 400, "InvalidRequest", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, "counter", tee, NULL, path, "deny", why);
        err_free(err);
        return;
    }
    r = kbs_store_counter_cas(c->store, &cur, path, (uint64_t)expected, (uint64_t)gen, root,
                              root_size, time(NULL), &err);
    if (r == -ESTALE) {
        _cleanup_json_ json_t *o = counter_json(&cur);
        _cleanup_free_ char *why = err_str(err);
        json_object_set_new(o, "type", json_string("CounterConflict"));
        json_object_set_new(o, "detail", json_string(why));
        reply_json(resp, 409, o);
        resp->content_type = "application/problem+json";
        _cleanup_free_ char *msg = xasprintf("conflict: %s", why);
        audit(c, req, "counter", tee, NULL, path, "deny", msg);
        err_free(err);
        return;
    }
    if (r < 0) {
        problem_err(resp, r == -EINVAL ? 400 : 500,
                    r == -EINVAL ? "InvalidRequest" : "StorageError", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, "counter", tee, NULL, path, "error", why);
        err_free(err);
        return;
    }
    /* Durable (committed) here; with group commit the reply also waits for the audit entry. */
    kbs_counter now_k = {
        .generation = (uint64_t)gen, .root_size = root_size, .updated = (int64_t)time(NULL)};
    memcpy(now_k.root, root, root_size);
    _cleanup_json_ json_t *o = counter_json(&now_k);
    reply_json(resp, 200, o);
    _cleanup_free_ char *why =
        xasprintf("advanced %lld -> %lld (%s)", (long long)expected, (long long)gen, allowed);
    audit(c, req, "counter", tee, NULL, path, "allow", why);
}

/* ---- admin ---- */

static bool admin_auth(kbs_ctx *c, const kbs_request *req, kbs_response *resp, const char *what)
{
    const char *tok = bearer(req->authorization);
    cista_error *err = NULL;
    if (!c->sh->admin_pub) {
        problem(resp, 401, "AdminAuthError",
                "admin API disabled: no admin_public_key is configured");
        return false;
    }
    if (!tok) {
        problem(resp, 401, "AdminAuthError",
                "%s needs Authorization: Bearer <admin token> signed by the admin key", what);
        audit(c, req, "admin", NULL, NULL, NULL, "deny", "no admin token");
        return false;
    }
    _cleanup_free_ char *jti = NULL;
    time_t exp = 0, now = time(NULL);
    int r = kbs_admin_token_check(&jti, &exp, c->sh->admin_pub, tok, strlen(tok), now, &err);
    if (r == 0)
        r = kbs_store_use_jti(c->store, jti, exp, now, &err);
    if (r < 0) {
        problem_err(resp, 401, "AdminAuthError", err);
        _cleanup_free_ char *why = err_str(err);
        audit(c, req, "admin", NULL, NULL, NULL, "deny", why);
        err_free(err);
        return false;
    }
    return true;
}

static void admin_done(kbs_ctx *c, const kbs_request *req, kbs_response *resp, int r,
                       cista_error *err, const char *action, const char *target)
{
    if (r < 0) {
        /* 409: what the store holds fails its integrity check (a document's tag, the audit
         * chain) or needs the master key; the request itself was fine */
        int st = r == -ENOENT                                                               ? 404
                 : (r == -EINVAL || r == -EPROTONOSUPPORT || r == -E2BIG || r == -EMSGSIZE) ? 400
                 : (r == -EBADMSG || r == -ENOKEY)                                          ? 409
                                                                                            : 500;
        problem_err(resp, st,
                    st == 404   ? "ResourceNotFound"
                    : st == 400 ? "InvalidRequest"
                    : st == 409 ? "IntegrityError"
                                : "StorageError",
                    err);
        _cleanup_free_ char *why = err_str(err);
        _cleanup_free_ char *msg = xasprintf("%s: %s", action, why);
        audit(c, req, "admin", NULL, NULL, target, "error", msg);
        err_free(err);
        return;
    }
    if (resp->status == 0) {
        _cleanup_json_ json_t *o = json_pack("{s:s}", "status", "ok");
        reply_json(resp, 200, o);
    }
    audit(c, req, "admin", NULL, NULL, target, "allow", action);
}

static bool policy_key_ok(const char *k)
{
    if (!strcmp(k, "default"))
        return true;
    size_t n = strlen(k), segs = 1;
    if (n == 0 || n > KBS_MAX_PATH || k[0] == '/' || k[n - 1] == '/' || strstr(k, "//") ||
        strstr(k, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = k[i];
        if (ch == '/')
            segs++;
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                   (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '*'))
            return false;
    }
    return segs <= 3;
}

static void admin_policy(kbs_ctx *c, const kbs_request *req, kbs_response *resp, const char *key)
{
    cista_error *err = NULL;
    int r = 0;
    if (!strcmp(req->method, "GET") && !key) {
        _cleanup_json_ json_t *list = NULL;
        if ((r = kbs_store_list_docs(c->store, &list, "policy", &err)) == 0) {
            _cleanup_json_ json_t *o = json_pack("{s:O}", "policies", list);
            reply_json(resp, 200, o);
        }
        admin_done(c, req, resp, r, err, "list-policies", NULL);
        return;
    }
    _cleanup_free_ char *text = NULL;
    if (!key || !strcmp(req->method, "POST") || !strcmp(req->method, "PUT")) {
        /* CoCo's POST /resource-policy {"policy": b64url} sets the default policy. */
        if (!key) {
            _cleanup_json_ json_t *d = NULL;
            const char *p = NULL;
            if ((r = js_parse_object(&d, req->body, req->body_size, POL_MAX_RELEASE * 2,
                                     "resource-policy request", &err)) < 0 ||
                (r = js_get_string(&p, d, "policy", true, "resource-policy request", &err)) < 0) {
                admin_done(c, req, resp, r, err, "set-policy", "default");
                return;
            }
            uint8_t *dec = NULL;
            size_t n = 0;
            if ((r = b64url_decode(&dec, &n, p, strlen(p), &err)) < 0) {
                admin_done(c, req, resp, r, err, "set-policy", "default");
                return;
            }
            text = (char *)dec;
            key = "default";
        } else {
            text = xstrndup((const char *)req->body, req->body_size);
        }
    }
    if (!policy_key_ok(key)) {
        r = err_set(&err, -EINVAL,
                    "policy key \"%.64s\" must be \"default\" or a resource path with optional "
                    "* segments (repo/type/tag, repo/type/*, repo/*)",
                    key);
        admin_done(c, req, resp, r, err, "policy", NULL);
        return;
    }
    if (!strcmp(req->method, "GET")) {
        _cleanup_free_ char *doc = NULL;
        if ((r = kbs_store_get_doc(c->store, &doc, "policy", key, &err)) == 0) {
            buf_puts(&resp->body, doc);
            resp->status = 200;
            resp->content_type = "application/json";
        }
        admin_done(c, req, resp, r, err, "get-policy", key);
    } else if (!strcmp(req->method, "DELETE")) {
        r = kbs_store_delete_doc(c->store, "policy", key, &err);
        kbs__doc_cache_invalidate(c->sh->docs);
        admin_done(c, req, resp, r, err, "delete-policy", key);
    } else {
        _cleanup_release_ pol_release *p = NULL;
        if ((r = pol_release_parse(&p, text, strlen(text), &err)) == 0)
            r = kbs_store_set_doc(c->store, "policy", key, text, &err);
        kbs__doc_cache_invalidate(c->sh->docs);
        admin_done(c, req, resp, r, err, "set-policy", key);
    }
}

static void admin_refvals(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    cista_error *err = NULL;
    int r;
    if (!strcmp(req->method, "GET")) {
        _cleanup_free_ char *doc = NULL;
        if ((r = kbs_store_get_doc(c->store, &doc, "refvals", "default", &err)) == 0) {
            buf_puts(&resp->body, doc);
            resp->status = 200;
            resp->content_type = "application/json";
        }
        admin_done(c, req, resp, r, err, "get-reference-values", NULL);
        return;
    }
    _cleanup_free_ char *text = xstrndup((const char *)req->body, req->body_size);
    _cleanup_refvals_ pol_refvals *rv = NULL;
    if ((r = pol_refvals_parse(&rv, req->body, req->body_size, &err)) == 0)
        r = kbs_store_set_doc(c->store, "refvals", "default", text, &err);
    kbs__doc_cache_invalidate(c->sh->docs);
    admin_done(c, req, resp, r, err, "set-reference-values", NULL);
}

static int64_t query_int(const char *q, const char *name, int64_t def)
{
    if (!q)
        return def;
    size_t n = strlen(name);
    for (const char *p = q; p && *p;) {
        if (!strncmp(p, name, n) && p[n] == '=')
            return strtoll(p + n + 1, NULL, 10);
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return def;
}

static void admin_audit(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    cista_error *err = NULL;
    _cleanup_json_ json_t *list = NULL;
    int64_t after = query_int(req->query, "after", 0);
    int64_t limit = query_int(req->query, "limit", 1000);
    int r = kbs_store_audit_list(c->store, &list, after, limit > 0 ? (size_t)limit : 1000, &err);
    if (r == 0) {
        size_t count = 0;
        cista_error *e2 = NULL;
        int vr = kbs_store_audit_verify(c->store, &count, &e2);
        _cleanup_free_ char *vs = vr < 0 ? err_str(e2) : xstrdup("ok");
        err_free(e2);
        _cleanup_json_ json_t *o =
            json_pack("{s:O,s:s,s:I}", "entries", list, "chain", vs, "total", (json_int_t)count);
        reply_json(resp, 200, o);
        return; /* reading the log is not itself logged (it would grow on every read) */
    }
    admin_done(c, req, resp, r, err, "audit", NULL);
}

/* POST {"head": "<hex>"}: adopt the log's unkeyed prefix ending there (kbs_store_audit_adopt()). */
static void admin_audit_adopt(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    cista_error *err = NULL;
    /*
     * Off unless the KBS's own configuration says so: a database writer who rewrote the log and
     * deleted the adoption record gets the same "never adopted" report as a genuine upgrade, and
     * must not be one admin click away from having the rewrite accepted.
     */
    if (!c->sh->cfg->audit_adopt) {
        problem(resp, 403, "AdoptionDisabled",
                "adopting unkeyed audit entries is off: it is a one-time step right after "
                "upgrading from a cista before keyed chains (set \"audit_adopt\": true in the "
                "KBS config for it, then remove it); a log that asks to be adopted again was "
                "rewritten");
        audit(c, req, "admin", NULL, NULL, NULL, "deny", "audit-adopt: adoption is off");
        return;
    }
    _cleanup_json_ json_t *d = NULL;
    const char *head = NULL;
    int r = js_parse_object(&d, req->body, req->body_size, 4096, "audit adopt request", &err);
    if (r == 0)
        r = js_get_string(&head, d, "head", true, "audit adopt request", &err);
    if (r == 0)
        r = kbs_store_audit_adopt(c->store, head, &err);
    /* the adoption itself goes into the (keyed) log, with the hash adopted */
    /* the hash goes into the log whatever the outcome (head is bounded by the 4 KiB body) */
    _cleanup_free_ char *action = head ? xasprintf("audit-adopt %s", head) : NULL;
    admin_done(c, req, resp, r, err, action ? action : "audit-adopt", NULL);
}

static void admin_resource(kbs_ctx *c, const kbs_request *req, kbs_response *resp, const char *path,
                           bool read)
{
    cista_error *err = NULL;
    int r;
    if (read) {
        uint8_t *v = NULL;
        size_t n = 0;
        if ((r = kbs_store_get_resource(c->store, &v, &n, path, &err)) == 0) {
            buf_init(&resp->body, 0, true);
            buf_put(&resp->body, v, n);
            resp->status = 200;
            resp->content_type = "application/octet-stream";
            crypto_free_secret(v, n);
        }
        admin_done(c, req, resp, r, err, "get-resource", path);
    } else if (!strcmp(req->method, "DELETE")) {
        r = kbs_store_delete_resource(c->store, path, &err);
        kbs__doc_cache_invalidate(c->sh->docs);
        admin_done(c, req, resp, r, err, "delete-resource", path);
    } else {
        r = kbs_store_put_resource(c->store, path, req->body, req->body_size, &err);
        kbs__doc_cache_invalidate(c->sh->docs);
        admin_done(c, req, resp, r, err, "put-resource", path);
    }
}

/* ---- dispatch ---- */

static void admin_counter(kbs_ctx *c, const kbs_request *req, kbs_response *resp, const char *path)
{
    cista_error *err = NULL;
    int r = 0;
    if (!strcmp(req->method, "GET")) {
        kbs_counter cur;
        if ((r = kbs_store_counter_get(c->store, &cur, path, &err)) == 0) {
            _cleanup_json_ json_t *o = counter_json(&cur);
            reply_json(resp, 200, o);
        }
        admin_done(c, req, resp, r, err, "counter-get", path);
    } else if (!strcmp(req->method, "DELETE")) {
        r = kbs_store_counter_delete(c->store, path, &err);
        admin_done(c, req, resp, r, err, "counter-delete", path);
    } else {
        int64_t expected = 0, gen = 0;
        uint8_t root[KBS_COUNTER_ROOT_MAX];
        size_t root_size = 0;
        r = counter_body(&expected, &gen, root, &root_size, req, false, &err);
        if (r == 0)
            r = kbs_store_counter_set(c->store, path, (uint64_t)gen, root, root_size, time(NULL),
                                      &err);
        _cleanup_free_ char *action = xasprintf("counter-reset to %lld", (long long)gen);
        admin_done(c, req, resp, r, err, action, path);
    }
}

void kbs_handle(kbs_ctx *c, const kbs_request *req, kbs_response *resp)
{
    const char *m = req->method;
    const char *p = req->path;
    bool get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), put = !strcmp(m, "PUT"),
         del = !strcmp(m, "DELETE");
    if (!strcmp(p, "/healthz") && get) {
        buf_puts(&resp->body, "{\"status\":\"ok\"}");
        resp->status = 200;
        resp->content_type = "application/json";
        return;
    }
    static const char prefix[] = "/kbs/v0/";
    if (strncmp(p, prefix, strlen(prefix)) != 0) {
        problem(resp, 404, "InvalidRequestPath", "unknown path (the KBS API is under /kbs/v0/)");
        return;
    }
    p += strlen(prefix);
    if (!strcmp(p, "auth") && post) {
        handle_auth(c, req, resp);
    } else if (!strcmp(p, "attest") && post) {
        handle_attest(c, req, resp);
    } else if (!strncmp(p, "resource/", 9)) {
        if (get) {
            handle_resource_get(c, req, resp, p + 9);
        } else if (post || put || del) {
            cista_error *err = NULL;
            if (kbs_check_resource_path(p + 9, &err) < 0) {
                problem_err(resp, 400, "InvalidRequestPath", err);
                err_free(err);
            } else if (admin_auth(c, req, resp, "writing a resource")) {
                admin_resource(c, req, resp, p + 9, false);
            }
        } else {
            problem(resp, 405, "MethodNotAllowed", "%s is not allowed on a resource", m);
        }
    } else if (!strncmp(p, "counter/", 8)) {
        if (get || post)
            handle_counter(c, req, resp, p + 8, post);
        else
            problem(resp, 405, "MethodNotAllowed", "%s is not allowed on a counter", m);
    } else if (!strncmp(p, "admin/counter/", 14) && (get || put || post || del)) {
        cista_error *err = NULL;
        if (kbs_check_resource_path(p + 14, &err) < 0) {
            problem_err(resp, 400, "InvalidRequestPath", err);
            err_free(err);
        } else if (admin_auth(c, req, resp, "managing a counter")) {
            admin_counter(c, req, resp, p + 14);
        }
    } else if (!strncmp(p, "admin/resource/", 15) && get) {
        cista_error *err = NULL;
        if (kbs_check_resource_path(p + 15, &err) < 0) {
            problem_err(resp, 400, "InvalidRequestPath", err);
            err_free(err);
        } else if (admin_auth(c, req, resp, "reading a resource")) {
            admin_resource(c, req, resp, p + 15, true);
        }
    } else if (!strcmp(p, "admin/resources") && get) {
        if (admin_auth(c, req, resp, "listing resources")) {
            cista_error *err = NULL;
            _cleanup_json_ json_t *list = NULL;
            int r = kbs_store_list_resources(c->store, &list, &err);
            if (r == 0) {
                _cleanup_json_ json_t *o = json_pack("{s:O}", "resources", list);
                reply_json(resp, 200, o);
            }
            admin_done(c, req, resp, r, err, "list-resources", NULL);
        }
    } else if ((!strcmp(p, "reference-values") || !strcmp(p, "reference-value")) &&
               (get || post || put)) {
        if (admin_auth(c, req, resp, "reference values"))
            admin_refvals(c, req, resp);
    } else if (!strcmp(p, "resource-policy") && (get || post)) {
        if (admin_auth(c, req, resp, "release policies"))
            admin_policy(c, req, resp, NULL);
    } else if (!strncmp(p, "resource-policy/", 16) && (get || post || put || del)) {
        if (admin_auth(c, req, resp, "release policies"))
            admin_policy(c, req, resp, p + 16);
    } else if (!strcmp(p, "audit") && get) {
        if (admin_auth(c, req, resp, "the audit log"))
            admin_audit(c, req, resp);
    } else if (!strcmp(p, "audit/adopt") && post) {
        if (admin_auth(c, req, resp, "the audit log"))
            admin_audit_adopt(c, req, resp);
    } else if (!strcmp(p, "token-key") && get) {
        _cleanup_json_ json_t *jwk = NULL;
        cista_error *err = NULL;
        if (jwk_from_key(&jwk, c->sh->sign_key, false, &err) == 0) {
            _cleanup_json_ json_t *o = json_pack("{s:[O]}", "keys", jwk);
            reply_json(resp, 200, o);
        } else {
            problem_err(resp, 500, "InternalError", err);
        }
        err_free(err);
    } else {
        problem(resp, 404, "InvalidRequestPath", "no endpoint %s /kbs/v0/%.64s", m, p);
    }
}

/* ---- contexts ---- */

static void free_keys(EVP_PKEY **k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(k[i]);
    free(k);
}

void kbs__shared_free(kbs_shared *sh)
{
    if (!sh)
        return;
    EVP_PKEY_free(sh->sign_key);
    jws_signer_free(sh->token_signer);
    EVP_PKEY_free(sh->admin_pub);
    free_keys(sh->sim_keys, sh->sim_key_count);
    free_keys(sh->tpm_aks, sh->tpm_ak_count);
    for (size_t i = 0; i < sh->coll_count; i++)
        ev_collateral_free(sh->colls[i].c);
    free(sh->colls);
    kbs_sessions_free(sh->sessions);
    kbs__doc_cache_free(sh->docs);
    ev_chain_cache_free(sh->ev_cache);
    crypto_cleanse(sh->master_key, sizeof(sh->master_key));
    free(sh);
}

int kbs__shared_new(kbs_shared **out, const kbs_config *cfg, cista_error **err)
{
    kbs_shared *sh = xzalloc(sizeof(*sh));
    sh->cfg = cfg;
    sh->docs = kbs__doc_cache_new(KBS_DOC_CACHE_TTL_MS);
    sh->ev_cache = ev_chain_cache_new(KBS_EV_CACHE_ENTRIES);
    int r = 0;
    if (!cfg->signing_key_file) {
        r = err_set(err, -EINVAL, "no signing_key configured (run `cista kbs init`)");
        goto fail;
    }
    if ((r = crypto_key_load_file(&sh->sign_key, cfg->signing_key_file, true, err)) < 0)
        goto fail;
    if (!crypto_key_ec_crv(sh->sign_key) || strcmp(crypto_key_ec_crv(sh->sign_key), "P-256")) {
        r = err_set(err, -EINVAL, "signing key %s must be an EC P-256 key (ES256)",
                    cfg->signing_key_file);
        goto fail;
    }
    if ((r = kbs_token_signer(&sh->token_signer, sh->sign_key, err)) < 0)
        goto fail;
    if (cfg->admin_pubkey_file &&
        (r = crypto_key_load_file(&sh->admin_pub, cfg->admin_pubkey_file, false, err)) < 0)
        goto fail;
    if (cfg->master_key_file) {
        if ((r = kbs_master_key_load(sh->master_key, cfg->master_key_file, err)) < 0)
            goto fail;
        sh->has_master_key = true;
    }
    sh->sim_keys = xzalloc((cfg->sim_key_count + 1) * sizeof(EVP_PKEY *));
    for (size_t i = 0; i < cfg->sim_key_count; i++) {
        if ((r = crypto_key_load_file(&sh->sim_keys[i], cfg->sim_keys[i], false, err)) < 0)
            goto fail;
        sh->sim_key_count++;
    }
    if (sh->sim_key_count)
        log_warn("INSECURE: %zu sim (software TEE) platform key(s) configured; sim evidence is "
                 "accepted only where the reference values allow it",
                 sh->sim_key_count);
    sh->tpm_aks = xzalloc((cfg->tpm_ak_count + 1) * sizeof(EVP_PKEY *));
    for (size_t i = 0; i < cfg->tpm_ak_count; i++) {
        if ((r = crypto_key_load_file(&sh->tpm_aks[i], cfg->tpm_aks[i], false, err)) < 0)
            goto fail;
        sh->tpm_ak_count++;
    }
    sh->colls = xzalloc((json_object_size(cfg->collateral) + 1) * sizeof(*sh->colls));
    const char *k;
    json_t *v;
    json_object_foreach(cfg->collateral, k, v)
    {
        kbs_collateral_set *cs = &sh->colls[sh->coll_count];
        snprintf(cs->tee, sizeof(cs->tee), "%s", k);
        cs->c = ev_collateral_new();
        sh->coll_count++;
        if ((r = ev_collateral_load_dir(cs->c, json_string_value(v), err)) < 0)
            goto fail;
    }
    if (!strcmp(cfg->sessions, "memory"))
        sh->sessions = kbs_sessions_new(cfg->max_sessions);
    *out = sh;
    return 0;
fail:
    kbs__shared_free(sh);
    return err_wrap(err, "KBS setup");
}

int kbs__ctx_new(kbs_ctx **out, kbs_shared *sh, bool init_schema, cista_error **err)
{
    kbs_store_opts o = {.kind = sh->cfg->store,
                        .sqlite_path = sh->cfg->sqlite_path,
                        .pg_dsn = sh->cfg->pg_dsn,
                        .master_key = sh->has_master_key ? sh->master_key : NULL,
                        .init_schema = init_schema,
                        .max_sessions = sh->cfg->max_sessions};
    kbs_store *st = NULL;
    int r = kbs_store_open(&st, &o, err);
    if (r < 0)
        return r;
    kbs_ctx *c = xzalloc(sizeof(*c));
    c->sh = sh;
    c->store = st;
    *out = c;
    return 0;
}

int kbs_ctx_new(kbs_ctx **out, const kbs_config *cfg, cista_error **err)
{
    kbs_shared *sh = NULL;
    int r = kbs__shared_new(&sh, cfg, err);
    if (r < 0)
        return r;
    if ((r = kbs__ctx_new(out, sh, true, err)) < 0) {
        kbs__shared_free(sh);
        return r;
    }
    (*out)->own_shared = true;
    return 0;
}

void kbs_ctx_free(kbs_ctx *c)
{
    if (!c)
        return;
    kbs_store_close(c->store);
    kbs__commit_job_clear(&c->audit_job);
    if (c->own_shared)
        kbs__shared_free(c->sh);
    free(c);
}
