/*
 * jws.h - JSON Web Signatures (RFC 7515) in the compact serialisation with
 * the ECDSA algorithms of RFC 7518 §3.4: ES256 (P-256, SHA-256) and ES384
 * (P-384, SHA-384), signatures as the raw big-endian r || s pair. Used for
 * the KBS attestation tokens (JWT, RFC 7519) and the admin bearer tokens.
 *
 * Thread-safe: no global state; keys are borrowed. Trust assumption: the
 * JWS text is untrusted (a bearer token from the network). jws_verify()
 * parses it with a hard size limit (JWS_MAX_SIZE), decodes every part
 * strictly, refuses "crit", "none", algorithms the caller did not allow and
 * algorithms that do not fit the key's curve, and returns the payload only
 * after the signature verified. jws_peek_header() returns the header of an
 * unverified JWS: nothing in it may be trusted before jws_verify().
 */
#ifndef CISTA_JWS_H
#define CISTA_JWS_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define JWS_MAX_SIZE (256u * 1024)

/*
 * Sign @payload (@payload_size bytes) with the EC private key @priv (P-256
 * gives ES256, P-384 gives ES384). @header may be NULL or an object of
 * extra protected header members ("typ", "kid", "jwk"; "alg" is set here
 * and overrides any given). *out is the compact JWS, owned by the caller.
 */
int jws_sign(char **out, const json_t *header, const void *payload, size_t payload_size,
             EVP_PKEY *priv, cista_error **err) __attribute__((warn_unused_result));

/*
 * jws_sign() for many payloads under one key and header (the KBS's tokens): the header is
 * encoded and the signing context prepared once. Thread-safe; the signer holds a reference to
 * @priv. jws_signer_sign() gives what jws_sign() with the same key and header gives.
 */
typedef struct jws_signer jws_signer;
int jws_signer_new(jws_signer **out, EVP_PKEY *priv, const json_t *header, cista_error **err)
    __attribute__((warn_unused_result));
int jws_signer_sign(char **out, const jws_signer *s, const void *payload, size_t payload_size,
                    cista_error **err) __attribute__((warn_unused_result));
void jws_signer_free(jws_signer *s);

/*
 * Verify the compact JWS @jws (@size bytes, no NUL needed) with the EC
 * public key @pub. @algs is a NULL-terminated list of accepted "alg" values
 * ("ES256", "ES384"); NULL accepts both. On success *out_payload (NUL-
 * terminated, *out_size bytes) and, when not NULL, *out_header (new
 * reference) go to the caller. -EBADMSG when the signature does not verify,
 * -EINVAL for malformed input, -ENOTSUP for a refused algorithm or "crit",
 * -EMSGSIZE beyond JWS_MAX_SIZE.
 */
int jws_verify(uint8_t **out_payload, size_t *out_size, json_t **out_header, const char *jws,
               size_t size, EVP_PKEY *pub, const char *const *algs, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Decode the protected header of @jws without verifying anything (to pick
 * the key by "kid"). New reference to the caller.
 */
int jws_peek_header(json_t **out, const char *jws, size_t size, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Decode the payload of @jws without verifying anything: for displaying a
 * token the caller has already verified or for diagnostics only. Caller
 * frees *out (NUL-terminated).
 */
int jws_peek_payload(uint8_t **out, size_t *out_size, const char *jws, size_t size,
                     cista_error **err) __attribute__((warn_unused_result));

#endif
