/*
 * crypto_int.h - helpers shared by crypto.c, keys.c, jwk.c, jwe.c and x509.c. Not a
 * public API: other modules use crypto.h and jose.h.
 */
#ifndef CISTA_CRYPTO_INT_H
#define CISTA_CRYPTO_INT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"

/* Largest key file or JWK text crypto_key_load() accepts. */
#define CRYPTO__KEY_MAX_SIZE (1u << 20)
/* RSA moduli we handle: at least 2048 bits (RFC 7518 §4.2/4.3), at most 16384. */
#define CRYPTO__RSA_MIN_BITS 2048
#define CRYPTO__RSA_MAX_BITS 16384

/* A NIST curve by its JOSE name, OpenSSL group name and coordinate size in bytes. */
typedef struct {
    const char *crv;
    const char *group;
    size_t field_size;
} crypto__curve;

const crypto__curve *crypto__curve_by_crv(const char *crv);
/* A shared domain-parameters-only key of @c (read-only; never free it), or NULL. */
EVP_PKEY *crypto__curve_params(const crypto__curve *c);
/* The curve of an EC key, or NULL for other keys and curves. */
const crypto__curve *crypto__curve_of_key(const EVP_PKEY *key);
/* True when the key holds its private half (RSA d, EC private scalar). */
bool crypto__key_has_private(const EVP_PKEY *key);
/* OpenSSL's name of a digest ("SHA256"), NULL for an unknown value. */
const char *crypto__md_name(crypto_hash_alg alg);
/*
 * The digest @alg, fetched once per process and shared (thread-safe; never free it, or take a
 * reference with EVP_MD_up_ref). Aborts on an unknown @alg.
 */
const EVP_MD *crypto__md(crypto_hash_alg alg);

/*
 * x509.c: the DER ECDSA-Sig-Value of r and s, each an unsigned @int_size-byte integer (1 ..
 * X509_ECDSA_INT_MAX) in @endian order, written to @out (X509__ECDSA_SIG_DER_MAX bytes); returns
 * its length. The encoding i2d_ECDSA_SIG() gives for the same values.
 */
#define X509__ECDSA_SIG_DER_MAX (4 + 2 * (4 + X509_ECDSA_INT_MAX + 1))
size_t x509__ecdsa_sig_der(uint8_t *out, const uint8_t *r, const uint8_t *s, size_t int_size,
                           x509_endian endian);

static inline void crypto__cipher_ctx_freep(EVP_CIPHER_CTX **c)
{
    EVP_CIPHER_CTX_free(*c);
}
#define _cleanup_cipher_ctx_ __attribute__((cleanup(crypto__cipher_ctx_freep)))

static inline void crypto__pkey_ctx_freep(EVP_PKEY_CTX **c)
{
    EVP_PKEY_CTX_free(*c);
}
#define _cleanup_pkey_ctx_ __attribute__((cleanup(crypto__pkey_ctx_freep)))

#endif
