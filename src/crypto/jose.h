/*
 * jose.h - JSON Web Keys (RFC 7517) and JSON Web Encryption (RFC 7516,
 * algorithms of RFC 7518) on top of crypto.h.
 *
 * Supported key management: RSA-OAEP, RSA-OAEP-256, RSA1_5 (decrypt only),
 * ECDH-ES (direct), ECDH-ES+A128KW/A192KW/A256KW, A128KW/A192KW/A256KW, dir.
 * Content encryption: A128GCM/A192GCM/A256GCM, A128CBC-HS256,
 * A192CBC-HS384, A256CBC-HS512. Serialisations: compact, flattened JSON,
 * general JSON. "zip" is refused.
 *
 * The JWE text is untrusted: it is parsed with bounds (JWE_MAX_SIZE) and
 * every field is checked before use. Thread-safe. Keys are borrowed;
 * returned buffers belong to the caller (plaintext is a secret: free it
 * with crypto_free_secret()).
 */
#ifndef CISTA_JOSE_H
#define CISTA_JOSE_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define JWE_MAX_SIZE (1u << 20)

/* ---- JWK ---- */
/* Public (or with @include_private, private) JWK of an RSA or EC key. New ref. */
int jwk_from_key(json_t **out, EVP_PKEY *key, bool include_private, cista_error **err)
    __attribute__((warn_unused_result));
/* RSA or EC JWK → key; a private JWK gives a key usable for both halves. */
int jwk_to_key(EVP_PKEY **out, const json_t *jwk, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * jwk_to_key() where a public EC key gets the partial public-key validation of NIST SP 800-56A
 * rev. 3 §5.6.2.3.4 (coordinates in range, on the curve, not the point at infinity; OpenSSL's
 * decoding of the point does all three) instead of OpenSSL's full check, which adds
 * n·Q = infinity. On P-256, P-384 and P-521 (the only curves accepted; cofactor 1) every point on
 * the curve except infinity has order n, so that extra scalar multiplication (~35 us on P-256) can
 * never fail: the accepted keys are exactly those of jwk_to_key(). Private and RSA JWKs take the
 * jwk_to_key() path.
 */
int jwk_to_key_partial(EVP_PKEY **out, const json_t *jwk, cista_error **err)
    __attribute__((warn_unused_result));
/* RFC 7638 SHA-256 thumbprint, base64url. Caller frees. */
int jwk_thumbprint(char **out, const json_t *jwk, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- JWE ---- */
typedef enum { JWE_COMPACT, JWE_FLATTENED, JWE_GENERAL } jwe_format;

/* A key for one recipient: an asymmetric key, or a symmetric secret (A*KW, dir). */
typedef struct {
    EVP_PKEY *pkey;
    const uint8_t *secret;
    size_t secret_size;
    /* Key management algorithm; NULL picks RSA-OAEP for RSA keys,
     * ECDH-ES+A256KW for EC keys, A256KW / dir by secret length. */
    const char *alg;
    /* Encryption only: @pkey was validated when it was imported (jwk_to_key() or
     * jwk_to_key_partial()), so ECDH need not check it again (crypto_ecdh_ex). False (the
     * default) checks it. */
    bool pkey_checked;
} jwe_key;

/*
 * Encrypt @pt to every recipient. @enc NULL means A256GCM. JWE_COMPACT and
 * JWE_FLATTENED need exactly one recipient. With JWE_GENERAL the protected
 * header holds only "enc" and each recipient's unprotected header holds
 * "alg" (and "epk"), as go-jose writes it. Output string owned by caller.
 */
int jwe_encrypt(char **out, const void *pt, size_t pt_size, const jwe_key *rcpts, size_t rcpt_count,
                const char *enc, jwe_format fmt, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Decrypt a JWE in any serialisation with the first of @keys that unwraps a
 * recipient. A top-level "encrypted_key" beside "recipients" (go-jose's
 * duplicate) is ignored. -ENOKEY when no key matches any recipient,
 * -EBADMSG when authentication fails, -EINVAL for malformed input,
 * -ENOTSUP for "zip", "crit" or algorithms not listed above, -EMSGSIZE
 * beyond JWE_MAX_SIZE. Decryption keys need their private part. With
 * RSA1_5, ECDH-ES (direct) and dir nothing checks the key before the
 * content, so a wrong key shows as -EBADMSG (for RSA1_5 deliberately: RFC
 * 7516 §11.5). When @out_key_index is not NULL it receives the index of the
 * key used. *out is NUL-terminated (not counted in *out_size).
 */
int jwe_decrypt(uint8_t **out, size_t *out_size, const char *jwe, size_t jwe_size,
                const jwe_key *keys, size_t key_count, size_t *out_key_index, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Encrypt with caller-fixed ephemeral values: for test vectors only, where
 * RFC examples pin the CEK and IV. @cek / @iv may be NULL for random.
 * @protected_override, when not NULL, is the exact JSON text of the
 * protected header (so an example's "kid" and member order are reproduced);
 * the parameters it does not hold (alg, epk) go to the unprotected
 * per-recipient header, and it may not contradict the recipients.
 */
int jwe__encrypt_fixed(char **out, const void *pt, size_t pt_size, const jwe_key *rcpts,
                       size_t rcpt_count, const char *enc, jwe_format fmt, const uint8_t *cek,
                       size_t cek_size, const uint8_t *iv, size_t iv_size,
                       const char *protected_override, cista_error **err)
    __attribute__((warn_unused_result));

#endif
