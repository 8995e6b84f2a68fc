/*
 * client.h - the in-TEE side of the KBS protocol (RCAR 0.4.0, or 0.2.0 for
 * older brokers) over HTTP(S) (util/httpc.h), as the runtime uses it to fetch secrets:
 * attest with the TEE's evidence bound to an ephemeral key, then fetch
 * resources wrapped (JWE) to that key. Also a generic authenticated request
 * for the admin CLI.
 *
 * TLS: the broker's certificate must chain to the CA file given in the
 * options (pinning); the system trust store is used only when asked for.
 * Plain http:// URLs are accepted (for loopback tests) and said so in the
 * log at info level.
 *
 * Thread-safety: one kbs_client per thread. Trust assumption: the broker is
 * authenticated by TLS only; every response is parsed with bounds. Released
 * secrets are returned in buffers the caller must free with
 * kbs_secret_free() (cleansed).
 */
#ifndef CISTA_KBS_CLIENT_H
#define CISTA_KBS_CLIENT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evidence/ev.h"
#include "util/err.h"

typedef struct kbs_client kbs_client;

typedef struct {
    const char *url;     /* "https://kbs.example:8443" (no trailing path) */
    const char *ca_file; /* PEM CA(s) the broker's certificate must chain to */
    bool system_trust;   /* use the system trust store instead of / besides ca_file */
    long timeout;        /* seconds per request; 0: 30 */
    const char *version; /* protocol version to speak; NULL: "0.4.0" */
} kbs_client_opts;

int kbs_client_new(kbs_client **out, const kbs_client_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));
void kbs_client_free(kbs_client *c);
void kbs__client_freep(kbs_client **c);
/*
 * Start over as a new guest would: drop the token, the key and the session cookie, and make the
 * next request open a new TCP connection with a full TLS handshake (no session resumption from
 * then on); the loaded CA store is kept. For load generators and tests that play many guests
 * with one client.
 */
void kbs_client_reset(kbs_client *c);
#define _cleanup_kbs_client_ __attribute__((cleanup(kbs__client_freep)))

/*
 * Run auth + attest: evidence from @tee (with @get options) binding the
 * challenge and @key's public JWK. The client keeps a reference to @key
 * and the token for later kbs_client_get_resource() calls. *out_token (may
 * be NULL) receives a copy. Refusals by the broker are -EACCES with its
 * problem detail in the message.
 */
int kbs_client_attest(kbs_client *c, const ev_ops *tee, const ev_get_opts *get, EVP_PKEY *key,
                      char **out_token, cista_error **err) __attribute__((warn_unused_result));

/*
 * GET /kbs/v0/resource/@path with the token and unwrap the JWE with the
 * attested key. -EACCES (401/403), -ENOENT (404). *out is a secret.
 */
int kbs_client_get_resource(kbs_client *c, uint8_t **out, size_t *out_size, const char *path,
                            cista_error **err) __attribute__((warn_unused_result));

/*
 * One request to @path (e.g. "/kbs/v0/audit?after=3") with an optional
 * bearer token and body. Any HTTP status is returned in *out_status with
 * the body; transport failures are errors. *out_body NUL-terminated.
 */
int kbs_client_request(kbs_client *c, long *out_status, uint8_t **out_body, size_t *out_size,
                       const char *method, const char *path, const char *bearer, const void *body,
                       size_t body_size, const char *content_type, cista_error **err)
    __attribute__((warn_unused_result));

/* The problem "detail" of an RFC 7807 body, or the body itself; caller frees. */
char *kbs_client_problem_detail(const uint8_t *body, size_t size);

void kbs_secret_free(uint8_t *p, size_t size);

/* ---- monotonic counters (rollback anchors; docs/kbs.md "Counters") ---- */

#define KBS_CLIENT_COUNTER_ROOT_MAX 64

typedef struct {
    uint64_t generation;
    uint8_t root[KBS_CLIENT_COUNTER_ROOT_MAX];
    size_t root_size;
    int64_t updated; /* Unix time of the last change, as the broker reports it */
} kbs_counter_value;

/*
 * GET /kbs/v0/counter/@path with the token of kbs_client_attest(). -EACCES (401/403: not
 * attested, token expired, or the release policy of @path denies), -ENOENT (404).
 */
int kbs_client_counter_get(kbs_client *c, kbs_counter_value *out, const char *path,
                           cista_error **err) __attribute__((warn_unused_result));

/*
 * Compare-and-set: POST /kbs/v0/counter/@path {expected_generation, generation, root}. 0 when
 * the broker stored it durably. -ESTALE on 409 (the counter is not at @expected, or @generation
 * is not above it) with the broker's current value in *out_current (may be NULL); -EACCES,
 * -ENOENT as for kbs_client_counter_get(). @root (at most KBS_CLIENT_COUNTER_ROOT_MAX bytes)
 * is borrowed.
 */
int kbs_client_counter_advance(kbs_client *c, kbs_counter_value *out_current, const char *path,
                               uint64_t expected, uint64_t generation, const uint8_t *root,
                               size_t root_size, cista_error **err)
    __attribute__((warn_unused_result));

#endif
