/*
 * kbs.h - the cista Key Broker Service: the server side of the
 * Confidential Containers RCAR protocol (Request, Challenge, Attestation,
 * Response; versions 0.4.0 and 0.2.0), attestation tokens, the admin API
 * and the HTTPS server that carries them (docs/kbs.md).
 *
 *   config    kbs_config_*: the JSON configuration file
 *   protocol  kbs_jcs(), kbs_binding(), kbs_parse_*(): canonical JSON, the
 *             runtime-data binding and the request body parsers (also used
 *             by the client in client.h and by the fuzz targets)
 *   sessions  kbs_sessions_*: a bounded in-memory table of RCAR sessions
 *             with single-use nonces that expire
 *   tokens    kbs_token_*: EAR-style attestation JWTs (ES256)
 *   server    kbs_server_*: worker threads, one event loop each, sharing a
 *             listening socket; kbs_handle() is the transport-free request
 *             handler (used by the server and by tests)
 *
 * Thread-safety: kbs_sessions and kbs_server are safe to share between
 * threads (a mutex guards the session table; each worker owns its own store
 * connection). Everything else is plain data or reentrant functions.
 *
 * Trust assumption: every byte of an HTTP request (headers, cookies, JSON
 * bodies, evidence, JWKs, bearer tokens) is untrusted. Bodies are parsed
 * with js_parse() under explicit size limits; identifiers, paths and nonces
 * are checked against fixed alphabets and lengths; secrets (nonces, session
 * ids, tokens, resource values) are compared in constant time and never
 * logged. Trusted inputs: the configuration file, the keys it names, and the
 * administrator's signed requests.
 */
#ifndef CISTA_KBS_H
#define CISTA_KBS_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "evidence/ev.h"
#include "util/buf.h"
#include "util/err.h"

/* Protocol versions this KBS speaks. */
#define KBS_PROTOCOL_VERSION "0.4.0"
#define KBS_PROTOCOL_LEGACY "0.2.0"

#define KBS_MAX_BODY (2u << 20)     /* request body bytes (evidence included) */
#define KBS_MAX_RESOURCE (1u << 20) /* bytes of one resource value */
#define KBS_NONCE_SIZE 32
#define KBS_SESSION_ID_LEN 43 /* base64url of 32 random bytes */
#define KBS_COOKIE "kbs-session-id"
#define KBS_MAX_PATH 256 /* bytes of repo/type/tag */

/* ---- configuration ---- */

typedef struct {
    char *path; /* file the configuration came from (NULL for defaults) */
    char *listen;
    char *tls_cert;
    char *tls_key;
    bool insecure_http; /* plain HTTP on a non-loopback address */
    char *store;        /* "sqlite" or "postgres" */
    char *sqlite_path;
    char *pg_dsn;
    char *sessions; /* "memory" or "store" (shared between replicas) */
    char *master_key_file;
    char *signing_key_file;
    char *admin_pubkey_file;
    unsigned token_lifetime; /* seconds */
    unsigned nonce_lifetime; /* seconds a challenge stays valid */
    size_t max_sessions;     /* bound of the session table (memory or store) */
    unsigned workers;        /* 0: one per online CPU */
    unsigned timeout;        /* seconds of idle/slow client allowed */
    /* "limits": per client IP address, TLS only (0: unlimited; see peers.h) */
    unsigned conns_per_peer;      /* open TLS connections */
    unsigned handshakes_per_peer; /* TLS handshakes per second, sustained */
    unsigned handshake_burst;     /* TLS handshakes at once, after an idle while */
    unsigned peer_ipv6_prefix;    /* an IPv6 peer is its /N (1..128) */
    char **sim_keys;              /* trusted sim platform public keys (files) */
    size_t sim_key_count;
    char **tpm_aks; /* registered TPM attestation keys (files) */
    size_t tpm_ak_count;
    json_t *collateral;          /* {tee: directory} */
    bool reject_contraindicated; /* refuse to issue a token for a contraindicated result */
    bool audit_adopt; /* POST /audit/adopt allowed (once, after upgrading; off by default) */
    /* a resource no stored policy covers is refused ("release_default": "deny"), instead of
     * released on an affirming appraisal (the built-in default) */
    bool release_default_deny;
} kbs_config;

/* Defaults (listen 127.0.0.1:8080, SQLite, 300 s tokens and nonces, ...). Caller frees. */
kbs_config *kbs_config_new(void);
/*
 * Read the JSON configuration file at @path (docs/kbs.md). Relative file
 * names in it are relative to the file's directory. Unknown members are
 * errors. New object to the caller.
 */
int kbs_config_load(kbs_config **out, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
void kbs_config_free(kbs_config *c);
void kbs__config_freep(kbs_config **c);
#define _cleanup_kbs_config_ __attribute__((cleanup(kbs__config_freep)))

/*
 * `cista kbs init`: create @dir (0700) with the KBS signing key (P-256),
 * an admin key pair (P-256; admin-key.pem is the administrator's private
 * key, to be moved off the server), the master key for resources at rest
 * (32 random bytes, 0600), a SQLite store and kbs.json. Existing files are
 * kept (-EEXIST when kbs.json exists).
 */
int kbs_init_dir(const char *dir, cista_error **err) __attribute__((warn_unused_result));

/* ---- protocol helpers ---- */

/* RFC 8785 JSON Canonicalization Scheme of @v. Caller frees *out. */
int kbs_jcs(char **out, const json_t *v, cista_error **err) __attribute__((warn_unused_result));

/* "sha256", "sha384", "sha512" → crypto_hash_alg; -1 when unknown. */
int kbs_hash_alg_parse(const char *name);

/*
 * The runtime-data binding: hash (@alg) of the JCS of {"additional-evidence":
 * @additional (omitted when NULL), "nonce": @nonce, "tee-pubkey": @jwk},
 * left-aligned and zero-padded to 64 bytes.
 */
int kbs_binding(uint8_t out[64], crypto_hash_alg alg, const char *nonce, const json_t *jwk,
                const char *additional, cista_error **err) __attribute__((warn_unused_result));

typedef enum { KBS_PROTO_V2 = 2, KBS_PROTO_V4 = 4 } kbs_proto;

typedef struct {
    kbs_proto proto;
    const char *version;  /* borrowed from the parsed document */
    const char *tee;      /* cista name: "sim", "snp", "tpm", "azure-snp-vtpm", ... */
    crypto_hash_alg hash; /* negotiated from supported-hash-algorithms */
} kbs_auth_req;

/*
 * Parse a Request body. *doc (new reference) keeps the borrowed strings of
 * *out alive. -EPROTONOSUPPORT for a version this KBS does not speak (the
 * message says which it does), -ENOTSUP for an unknown TEE.
 */
int kbs_parse_auth(kbs_auth_req *out, json_t **doc, const void *body, size_t size,
                   cista_error **err) __attribute__((warn_unused_result));

typedef struct {
    const char *nonce;        /* runtime-data nonce (0.4.0); NULL for 0.2.0 */
    const json_t *tee_pubkey; /* JWK, borrowed */
    const char *additional;   /* additional_evidence string or NULL */
    const char *init_data_format;
    const char *init_data_body;
    char *ev_tee;      /* TEE of the evidence (owned) */
    uint8_t *evidence; /* owned */
    size_t evidence_size;
    uint8_t *aux; /* owned, may be NULL */
    size_t aux_size;
    ev_collateral *certs; /* certificates that came with the evidence (owned), or NULL */
    EVP_PKEY *tee_key;    /* tee_pubkey as imported and validated by the parser (owned) */
} kbs_attest_req;

void kbs_attest_req_clear(kbs_attest_req *a);

/*
 * Parse an Attestation body of protocol @proto for a session opened for
 * @tee. primary_evidence may be cista's {"tee", "evidence": b64, "aux": b64},
 * a cista TPM evidence document, the CoCo tdx {"quote", "cc_eventlog"} or
 * snp {"attestation_report", "cert_chain"} shapes (docs/kbs.md). The JWK
 * is checked to be a usable public key.
 */
int kbs_parse_attest(kbs_attest_req *out, json_t **doc, kbs_proto proto, const char *tee,
                     const void *body, size_t size, cista_error **err)
    __attribute__((warn_unused_result));

/* Check "repo/type/tag" (three segments of [A-Za-z0-9._-], no "." or ".." segment). */
int kbs_check_resource_path(const char *path, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Convert a CoCo snp evidence attestation_report (the Rust sev crate's serde
 * layout, byte arrays as integer lists) back into the 1184-byte report.
 * *out is owned by the caller.
 */
int kbs_snp_report_from_json(uint8_t **out, size_t *out_size, const json_t *report,
                             cista_error **err) __attribute__((warn_unused_result));

/* ---- sessions ---- */

typedef enum {
    KBS_SESSION_CHALLENGED = 0,
    KBS_SESSION_USED = 1,
    KBS_SESSION_ATTESTED = 2
} kbs_session_state;

/*
 * What an attested session of the memory table keeps of its token: not the token (~2.3 KiB)
 * but its SHA-256, which is all a bearer token needs to be recognised as the session's own,
 * and the payload it carries as signed (JSON text, ~1.5 KiB), parsed again per release: kept
 * as a jansson tree it was ~8 KiB, and an idle attested session ~14 KiB in all. One heap block,
 * and a pointer in kbs_session, so that challenged sessions do not pay for it.
 */
typedef struct {
    uint8_t token_sha256[32];
    size_t payload_size;
    char payload_json[]; /* NUL-terminated */
} kbs_held_token;

typedef struct {
    char id[KBS_SESSION_ID_LEN + 1];
    uint8_t nonce[KBS_NONCE_SIZE];
    char tee[24];
    uint8_t proto;
    uint8_t hash;  /* crypto_hash_alg */
    uint8_t state; /* kbs_session_state */
    time_t expires;
    /* Attested sessions of a store (SQLite, PostgreSQL): the token, as the store keeps it. */
    char *token;
    /* Attested sessions of the memory table: what they keep of the token (see kbs_held_token). */
    kbs_held_token *held;
    /* The payload's tee-pubkey as the attestation imported and validated it (memory table only,
     * else NULL), so a release encrypts to it without importing it again. Shared by reference:
     * OpenSSL keys are safe to use from several threads once built. */
    EVP_PKEY *tee_key;
} kbs_session;

typedef struct kbs_sessions kbs_sessions;

kbs_sessions *kbs_sessions_new(size_t max);
void kbs_sessions_free(kbs_sessions *t);
/*
 * Add @s (its id and nonce chosen by the caller). Expired entries are
 * dropped first when the table is full; -EBUSY when it is still full.
 */
int kbs_sessions_add(kbs_sessions *t, const kbs_session *s, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* Copy of session @id into *out (out->held a new copy or NULL, out->tee_key a new reference or
 * NULL). -ENOENT, -ETIMEDOUT. */
int kbs_sessions_find(kbs_sessions *t, kbs_session *out, const char *id, time_t now);
/* Atomically move CHALLENGED → USED. -EALREADY when the nonce was used, -ENOENT, -ETIMEDOUT. */
int kbs_sessions_consume(kbs_sessions *t, const char *id, time_t now);
/* Mark attested with @token (a JWS: its digest and payload are kept, see kbs_session) and
 * @tee_key (a reference taken; may be NULL), valid until @expires. -ENOENT, or -EINVAL when
 * @token is not a JWS. */
int kbs_sessions_set_token(kbs_sessions *t, const char *id, const char *token, EVP_PKEY *tee_key,
                           time_t expires);
size_t kbs_sessions_count(kbs_sessions *t);
/* Bytes held by the table per idle (challenged) session, for the benchmark. */
size_t kbs_sessions_idle_bytes(void);
void kbs_session_clear(kbs_session *s);
void kbs_held_token_free(kbs_held_token *h);

/* ---- tokens ---- */

#define KBS_TOKEN_ISSUER "cista-kbs"
#define KBS_EAR_PROFILE "tag:github.com,2024:confidential-containers/Trustee"

/*
 * Issue an attestation token: a JWT (ES256 with @key, header jwk + kid)
 * whose payload is EAR-shaped: iss, iat, exp, jti, eat_profile, and
 * submods.cpu0 {"ear.status", "ear.appraisal-policy-id",
 * "ear.cista.reason", "ear.veraison.annotated-evidence": @claims +
 * {"runtime_data_claims": {"tee-pubkey", "nonce"}, "init_data"}}.
 * Inputs borrowed; *out owned by the caller.
 */
int kbs_token_issue(char **out, EVP_PKEY *key, const json_t *claims, const char *status,
                    const char *reason, const json_t *tee_pubkey, const char *nonce,
                    const char *init_data_hex, unsigned lifetime, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * The protected header kbs_token_issue() signs with @key: {"typ": "JWT", "kid": RFC 7638
 * thumbprint, "jwk"}. New reference. Constant per key: a server encodes it once, in its
 * kbs_token_signer() (the JWK export and thumbprint cost ~15 us per token otherwise).
 */
int kbs_token_header(json_t **out, EVP_PKEY *key, cista_error **err)
    __attribute__((warn_unused_result));
/* A signer for kbs_token_issue_with(): @key with the header kbs_token_header(@key). */
int kbs_token_signer(jws_signer **out, EVP_PKEY *key, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * kbs_token_issue() with a signer made once by kbs_token_signer() (borrowed; thread-safe). When
 * @out_payload is not NULL it receives the signed payload (new reference; the caller must not
 * modify it). The payload shares @claims' members by reference: they must not be modified
 * afterwards either.
 */
int kbs_token_issue_with(char **out, json_t **out_payload, const jws_signer *signer,
                         const json_t *claims, const char *status, const char *reason,
                         const json_t *tee_pubkey, const char *nonce, const char *init_data_hex,
                         unsigned lifetime, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Verify a token issued by kbs_token_issue() with @key: signature, issuer,
 * iat ≤ now + 60 s skew, exp > now. *out is the payload (new reference).
 */
int kbs_token_verify(json_t **out, EVP_PKEY *key, const char *token, size_t size, time_t now,
                     cista_error **err) __attribute__((warn_unused_result));
/* The issuer and time checks of kbs_token_verify() on a payload kbs_token_issue_with()
 * returned and the caller has held since. */
int kbs_token_check_issued(const json_t *payload, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * The document release policies evaluate, built from a verified token
 * payload: the annotated evidence claims, plus "appraisal": {"status",
 * "reason"}, "init_data", and "resource": {"path", "repository", "type",
 * "tag"}. New reference, whose members share @payload's by reference: neither may be modified.
 */
json_t *kbs_token_policy_input(const json_t *payload, const char *resource_path);
/* The tee-pubkey JWK inside a verified payload (borrowed), or NULL. */
const json_t *kbs_token_tee_pubkey(const json_t *payload);

/*
 * Admin bearer tokens: a JWT signed by the administrator's private key with
 * iat, exp (at most KBS_ADMIN_MAX_LIFETIME after iat), a random jti and
 * aud "cista-kbs-admin".
 */
#define KBS_ADMIN_MAX_LIFETIME 300
int kbs_admin_token_make(char **out, EVP_PKEY *admin_key, unsigned lifetime, time_t now,
                         cista_error **err) __attribute__((warn_unused_result));
/* Check signature and times; *out_jti / *out_exp for the replay check (jti owned). */
int kbs_admin_token_check(char **out_jti, time_t *out_exp, EVP_PKEY *admin_pub, const char *token,
                          size_t size, time_t now, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- server ---- */

typedef struct kbs_server kbs_server;

/*
 * Load keys, open (and initialise) the store, bind the listening socket.
 * Refuses plain HTTP on a non-loopback address unless cfg->insecure_http.
 * @cfg is borrowed for the server's lifetime.
 */
int kbs_server_new(kbs_server **out, const kbs_config *cfg, cista_error **err)
    __attribute__((warn_unused_result));
/* Serve until kbs_server_stop(); the calling thread waits for the workers. */
int kbs_server_run(kbs_server *s, cista_error **err) __attribute__((warn_unused_result));
/* Ask the workers to finish in-flight requests and return. Async-signal-safe. */
void kbs_server_stop(kbs_server *s);
/* "ADDR:PORT" actually bound (port 0 in the config picks a free one). */
const char *kbs_server_address(const kbs_server *s);
void kbs_server_free(kbs_server *s);

/* Transport-free request and response (the HTTP layer fills and sends these). */
typedef struct {
    const char *method;        /* "GET", "POST", "PUT", "DELETE" */
    const char *path;          /* decoded path, no query */
    const char *query;         /* raw query or NULL */
    const char *cookie;        /* raw Cookie header or NULL */
    const char *authorization; /* raw Authorization header or NULL */
    const uint8_t *body;
    size_t body_size;
    const char *peer; /* client address for the audit log */
    bool tls;
} kbs_request;

typedef struct {
    int status;
    const char *content_type; /* static string */
    cbuf body;
    char *set_cookie; /* owned */
} kbs_response;

void kbs_response_clear(kbs_response *r);

/*
 * A handler context: the shared server state plus one store connection.
 * Created per worker thread (kbs_server) or by tests over a config.
 */
typedef struct kbs_ctx kbs_ctx;
int kbs_ctx_new(kbs_ctx **out, const kbs_config *cfg, cista_error **err)
    __attribute__((warn_unused_result));
void kbs_ctx_free(kbs_ctx *c);
/* Handle one request; never fails (errors become RFC 7807 responses). */
void kbs_handle(kbs_ctx *c, const kbs_request *req, kbs_response *resp);

#endif
