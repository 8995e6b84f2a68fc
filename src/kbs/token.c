/*
 * token.c - attestation tokens (EAR-shaped JWTs, ES256) and admin bearer
 * tokens (see kbs.h). Both are verified with jws_verify() against one
 * configured key: a token's own "jwk" header is informational only and is
 * never used to verify it. The one exception is the payload an attested
 * in-memory session keeps (kbs_held_token), which this process signed and
 * never let out of its memory: its issuer and times are checked with
 * kbs_token_check_issued(), not its signature.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "crypto/jws.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define CLOCK_SKEW 60

static const char *const g_algs[] = {"ES256", "ES384", NULL};

static char *random_id(void)
{
    uint8_t b[16];
    cista_error *e = NULL;
    if (crypto_random(b, sizeof(b), &e) < 0)
        abort(); /* no randomness: nothing safe to do */
    return b64url_encode(b, sizeof(b));
}

int kbs_token_header(json_t **out, EVP_PKEY *key, cista_error **err)
{
    _cleanup_json_ json_t *jwk = NULL;
    int r = jwk_from_key(&jwk, key, false, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *kid = NULL;
    if ((r = jwk_thumbprint(&kid, jwk, err)) < 0)
        return r;
    *out = json_pack("{s:s,s:s,s:O}", "typ", "JWT", "kid", kid, "jwk", jwk);
    return 0;
}

int kbs_token_signer(jws_signer **out, EVP_PKEY *key, cista_error **err)
{
    _cleanup_json_ json_t *hdr = NULL;
    int r = kbs_token_header(&hdr, key, err);
    if (r < 0)
        return r;
    return jws_signer_new(out, key, hdr, err);
}

int kbs_token_issue(char **out, EVP_PKEY *key, const json_t *claims, const char *status,
                    const char *reason, const json_t *tee_pubkey, const char *nonce,
                    const char *init_data_hex, unsigned lifetime, time_t now, cista_error **err)
{
    jws_signer *s = NULL;
    int r = kbs_token_signer(&s, key, err);
    if (r < 0)
        return r;
    r = kbs_token_issue_with(out, NULL, s, claims, status, reason, tee_pubkey, nonce, init_data_hex,
                             lifetime, now, err);
    jws_signer_free(s);
    return r;
}

/* The EAR payload. A shallow copy of @claims: its members are shared, never modified. */
static json_t *token_payload(const json_t *claims, const char *status, const char *reason,
                             const json_t *tee_pubkey, const char *nonce, const char *init_data_hex,
                             unsigned lifetime, time_t now)
{
    json_t *ev = json_copy((json_t *)claims);
    json_object_set_new(
        ev, "runtime_data_claims",
        json_pack("{s:O,s:s}", "tee-pubkey", tee_pubkey, "nonce", nonce ? nonce : ""));
    if (init_data_hex)
        json_object_set_new(ev, "init_data_digest", json_string(init_data_hex));
    json_t *cpu0 = json_pack("{s:s,s:s,s:o}", "ear.status", status, "ear.appraisal-policy-id",
                             "cista-reference-values", "ear.veraison.annotated-evidence", ev);
    if (reason)
        json_object_set_new(cpu0, "ear.cista.reason", json_string(reason));
    _cleanup_free_ char *jti = random_id();
    return json_pack("{s:s,s:I,s:I,s:s,s:s,s:{s:s,s:s},s:{s:o}}", "iss", KBS_TOKEN_ISSUER, "iat",
                     (json_int_t)now, "exp", (json_int_t)(now + lifetime), "jti", jti,
                     "eat_profile", KBS_EAR_PROFILE, "ear.verifier-id", "developer", "cista",
                     "build", "cista-kbs", "submods", "cpu0", cpu0);
}

int kbs_token_issue_with(char **out, json_t **out_payload, const jws_signer *signer,
                         const json_t *claims, const char *status, const char *reason,
                         const json_t *tee_pubkey, const char *nonce, const char *init_data_hex,
                         unsigned lifetime, time_t now, cista_error **err)
{
    if (!json_is_object(claims))
        return err_set(err, -EINVAL, "token: claims must be an object");
    _cleanup_json_ json_t *payload =
        token_payload(claims, status, reason, tee_pubkey, nonce, init_data_hex, lifetime, now);
    _cleanup_buf_ cbuf text = CBUF_INIT;
    buf_reserve(&text, 2048); /* a token's claims are ~1-2 KiB: no doubling from 64 bytes */
    js_buf_put_compact(&text, payload);
    /* what verification accepts back, so a token never works by cookie and fails as a bearer */
    if (text.size > JWS_MAX_SIZE / 2)
        return err_set(err, -E2BIG, "token: the claims are too large for a token (%zu bytes)",
                       text.size);
    int r = jws_signer_sign(out, signer, text.data, text.size, err);
    if (r == 0 && out_payload)
        *out_payload = steal_ptr(&payload);
    return r;
}

/* iat/exp checks shared by both token kinds. */
static int check_times(const json_t *p, time_t now, json_int_t *iat_out, json_int_t *exp_out,
                       const char *what, cista_error **err)
{
    const json_t *iat = json_object_get(p, "iat"), *exp = json_object_get(p, "exp");
    if (!json_is_integer(iat) || !json_is_integer(exp))
        return err_set(err, -EINVAL, "%s: iat and exp must be integers", what);
    if (json_integer_value(iat) > (json_int_t)now + CLOCK_SKEW)
        return err_set(err, -EKEYREJECTED, "%s: issued in the future (iat %lld, now %lld)", what,
                       (long long)json_integer_value(iat), (long long)now);
    if (json_integer_value(exp) <= (json_int_t)now)
        return err_set(err, -EKEYEXPIRED, "%s expired at %lld (now %lld); attest again", what,
                       (long long)json_integer_value(exp), (long long)now);
    *iat_out = json_integer_value(iat);
    *exp_out = json_integer_value(exp);
    return 0;
}

int kbs_token_check_issued(const json_t *p, time_t now, cista_error **err)
{
    const char *iss = json_string_value(json_object_get(p, "iss"));
    if (!iss || strcmp(iss, KBS_TOKEN_ISSUER) != 0)
        return err_set(err, -EKEYREJECTED, "attestation token: issuer is not %s", KBS_TOKEN_ISSUER);
    json_int_t iat, exp;
    return check_times(p, now, &iat, &exp, "attestation token", err);
}

/* Issuer and times of a token payload whose origin the caller established. */
static int check_payload(json_t **out, const uint8_t *payload, size_t psize, time_t now,
                         cista_error **err)
{
    _cleanup_json_ json_t *p = NULL;
    int r;
    if ((r = js_parse_object(&p, payload, psize, JWS_MAX_SIZE, "attestation token", err)) < 0)
        return r;
    if ((r = kbs_token_check_issued(p, now, err)) < 0)
        return r;
    *out = steal_ptr(&p);
    return 0;
}

int kbs_token_verify(json_t **out, EVP_PKEY *key, const char *token, size_t size, time_t now,
                     cista_error **err)
{
    _cleanup_free_ uint8_t *payload = NULL;
    size_t psize = 0;
    int r = jws_verify(&payload, &psize, NULL, token, size, key, g_algs, err);
    if (r < 0)
        return r == -EBADMSG ? err_set(err, -EBADMSG,
                                       "attestation token: signature does not verify with this "
                                       "KBS's key")
                             : err_wrap(err, "attestation token");
    r = check_payload(out, payload, psize, now, err);
    crypto_cleanse(payload, psize);
    return r;
}

static const json_t *annotated(const json_t *payload)
{
    const json_t *cpu0 = json_object_get(json_object_get(payload, "submods"), "cpu0");
    return json_object_get(cpu0, "ear.veraison.annotated-evidence");
}

const json_t *kbs_token_tee_pubkey(const json_t *payload)
{
    return json_object_get(json_object_get(annotated(payload), "runtime_data_claims"),
                           "tee-pubkey");
}

json_t *kbs_token_policy_input(const json_t *payload, const char *resource_path)
{
    const json_t *cpu0 = json_object_get(json_object_get(payload, "submods"), "cpu0");
    /* shallow: members shared with the payload, which no one modifies */
    const json_t *claims = annotated(payload);
    json_t *in = json_is_object(claims) ? json_copy((json_t *)claims) : json_object();
    json_object_del(in, "runtime_data_claims");
    const char *st = json_string_value(json_object_get(cpu0, "ear.status"));
    const char *reason = json_string_value(json_object_get(cpu0, "ear.cista.reason"));
    json_t *ap = json_pack("{s:s}", "status", st ? st : "none");
    if (reason)
        json_object_set_new(ap, "reason", json_string(reason));
    json_object_set_new(in, "appraisal", ap);
    if (resource_path) {
        char repo[KBS_MAX_PATH + 1] = "", type[KBS_MAX_PATH + 1] = "", tag[KBS_MAX_PATH + 1] = "";
        const char *a = strchr(resource_path, '/');
        const char *b = a ? strchr(a + 1, '/') : NULL;
        if (a && b && strlen(resource_path) <= KBS_MAX_PATH) {
            snprintf(repo, sizeof(repo), "%.*s", (int)(a - resource_path), resource_path);
            snprintf(type, sizeof(type), "%.*s", (int)(b - a - 1), a + 1);
            snprintf(tag, sizeof(tag), "%s", b + 1);
        }
        json_object_set_new(in, "resource",
                            json_pack("{s:s,s:s,s:s,s:s}", "path", resource_path, "repository",
                                      repo, "type", type, "tag", tag));
    }
    return in;
}

/* ---- admin tokens ---- */

#define ADMIN_AUD "cista-kbs-admin"

int kbs_admin_token_make(char **out, EVP_PKEY *admin_key, unsigned lifetime, time_t now,
                         cista_error **err)
{
    if (lifetime == 0 || lifetime > KBS_ADMIN_MAX_LIFETIME)
        lifetime = KBS_ADMIN_MAX_LIFETIME;
    _cleanup_free_ char *jti = random_id();
    _cleanup_json_ json_t *p =
        json_pack("{s:s,s:s,s:I,s:I,s:s}", "iss", "cista-kbs-admin-cli", "aud", ADMIN_AUD, "iat",
                  (json_int_t)now, "exp", (json_int_t)(now + lifetime), "jti", jti);
    _cleanup_json_ json_t *hdr = json_pack("{s:s}", "typ", "JWT");
    _cleanup_free_ char *text = js_dump_compact(p);
    return jws_sign(out, hdr, text, strlen(text), admin_key, err);
}

int kbs_admin_token_check(char **out_jti, time_t *out_exp, EVP_PKEY *admin_pub, const char *token,
                          size_t size, time_t now, cista_error **err)
{
    _cleanup_free_ uint8_t *payload = NULL;
    size_t psize = 0;
    int r = jws_verify(&payload, &psize, NULL, token, size, admin_pub, g_algs, err);
    if (r < 0)
        return r == -EBADMSG ? err_set(err, -EBADMSG,
                                       "admin token: signature does not verify with the "
                                       "configured admin public key")
                             : err_wrap(err, "admin token");
    _cleanup_json_ json_t *p = NULL;
    if ((r = js_parse_object(&p, payload, psize, 16384, "admin token", err)) < 0)
        return r;
    const char *aud = json_string_value(json_object_get(p, "aud"));
    if (!aud || strcmp(aud, ADMIN_AUD) != 0)
        return err_set(err, -EKEYREJECTED, "admin token: audience must be %s", ADMIN_AUD);
    json_int_t iat, exp;
    if ((r = check_times(p, now, &iat, &exp, "admin token", err)) < 0)
        return r;
    if (exp - iat > KBS_ADMIN_MAX_LIFETIME)
        return err_set(err, -EKEYREJECTED,
                       "admin token: lifetime %lld s exceeds the maximum of %d s",
                       (long long)(exp - iat), KBS_ADMIN_MAX_LIFETIME);
    const char *jti = json_string_value(json_object_get(p, "jti"));
    if (!jti || !*jti || strlen(jti) > 128)
        return err_set(err, -EINVAL, "admin token: jti (1-128 bytes) is required");
    *out_jti = xstrdup(jti);
    *out_exp = (time_t)exp;
    return 0;
}
