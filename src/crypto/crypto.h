/*
 * crypto.h - the primitives cista needs, as thin wrappers over OpenSSL 3's
 * EVP interfaces: hashes, HMAC, AES-256-CTR, AES-GCM, AES key wrap
 * (RFC 3394), RSA-OAEP, ECDH with the JOSE Concat KDF, key loading,
 * randomness, constant-time comparison and cleansing.
 *
 * Nothing here is a hand-rolled primitive. Thread-safe: objects are not
 * shared, functions keep no global state. Key material handed in is
 * borrowed; derived secrets handed out are owned by the caller, who must
 * cleanse them (crypto_free_secret()).
 */
#ifndef CISTA_CRYPTO_H
#define CISTA_CRYPTO_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define CRYPTO_MAX_HASH 64

typedef enum {
    CRYPTO_SHA1,
    CRYPTO_SHA256,
    CRYPTO_SHA384,
    CRYPTO_SHA512,
} crypto_hash_alg;

/* ---- randomness, comparison, cleansing ---- */
int crypto_random(void *out, size_t size, cista_error **err) __attribute__((warn_unused_result));
/* Constant-time equality of two equal-length buffers: true when equal. */
bool crypto_memeq(const void *a, const void *b, size_t size);
void crypto_cleanse(void *p, size_t size);
/* Cleanse @size bytes and free. */
void crypto_free_secret(void *p, size_t size);

/* ---- hashes (streaming) ---- */
typedef struct crypto_hash crypto_hash;
size_t crypto_hash_size(crypto_hash_alg alg);
const char *crypto_hash_name(crypto_hash_alg alg); /* "sha256" ... */
crypto_hash *crypto_hash_new(crypto_hash_alg alg);
void crypto_hash_update(crypto_hash *h, const void *data, size_t size);
/* Writes crypto_hash_size() bytes; the object can then only be freed or reset. */
void crypto_hash_final(crypto_hash *h, uint8_t *out);
void crypto_hash_reset(crypto_hash *h);
void crypto_hash_free(crypto_hash *h);
void crypto_hash_oneshot(crypto_hash_alg alg, const void *data, size_t size, uint8_t *out);
#define _cleanup_hash_ __attribute__((cleanup(crypto__hash_freep)))
void crypto__hash_freep(crypto_hash **h);

/* ---- HMAC (streaming) ---- */
typedef struct crypto_hmac crypto_hmac;
crypto_hmac *crypto_hmac_new(crypto_hash_alg alg, const void *key, size_t key_size);
void crypto_hmac_update(crypto_hmac *m, const void *data, size_t size);
void crypto_hmac_final(crypto_hmac *m, uint8_t *out); /* crypto_hash_size(alg) bytes */
void crypto_hmac_free(crypto_hmac *m);
void crypto__hmac_freep(crypto_hmac **m);
#define _cleanup_hmac_ __attribute__((cleanup(crypto__hmac_freep)))

/* ---- AES-256-CTR (streaming; 128-bit big-endian counter, as Go's cipher.NewCTR) ---- */
typedef struct crypto_ctr crypto_ctr;
crypto_ctr *crypto_ctr_new(const uint8_t key[32], const uint8_t iv[16]);
/* Encrypt or decrypt (the same operation); @in may equal @out. */
void crypto_ctr_update(crypto_ctr *c, const void *in, void *out, size_t size);
void crypto_ctr_free(crypto_ctr *c);
void crypto__ctr_freep(crypto_ctr **c);
#define _cleanup_ctr_ __attribute__((cleanup(crypto__ctr_freep)))

/* ---- AES-GCM (key 16/24/32 bytes, tag 16 bytes) ---- */
int crypto_gcm_encrypt(uint8_t *ct, uint8_t tag[16], const uint8_t *key, size_t key_size,
                       const uint8_t *iv, size_t iv_size, const void *aad, size_t aad_size,
                       const void *pt, size_t pt_size, cista_error **err)
    __attribute__((warn_unused_result));
/* -EBADMSG when the tag does not verify (nothing usable is left in @pt). */
int crypto_gcm_decrypt(uint8_t *pt, const uint8_t *key, size_t key_size, const uint8_t *iv,
                       size_t iv_size, const void *aad, size_t aad_size, const void *ct,
                       size_t ct_size, const uint8_t tag[16], cista_error **err)
    __attribute__((warn_unused_result));

/*
 * ---- AES-CBC + HMAC-SHA2 (JWE A128CBC-HS256 etc., RFC 7518 §5.2) ----
 * @key is the MAC key then the AES key (32, 48 or 64 bytes); @tag holds
 * key_size / 2 bytes (at most 32). *ct / *pt are new buffers for the caller
 * (*pt is a secret, NUL-terminated). Decryption checks the tag before the
 * padding; every failure is -EBADMSG.
 */
int crypto_cbc_hs_encrypt(uint8_t **ct, size_t *ct_size, uint8_t *tag, size_t *tag_size,
                          const uint8_t *key, size_t key_size, const uint8_t iv[16],
                          const void *aad, size_t aad_size, const void *pt, size_t pt_size,
                          cista_error **err) __attribute__((warn_unused_result));
int crypto_cbc_hs_decrypt(uint8_t **pt, size_t *pt_size, const uint8_t *key, size_t key_size,
                          const uint8_t iv[16], const void *aad, size_t aad_size, const void *ct,
                          size_t ct_size, const uint8_t *tag, size_t tag_size, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- AES key wrap, RFC 3394 (KEK 16/24/32 bytes; @in a multiple of 8, >= 16) ---- */
int crypto_aes_wrap(uint8_t *out /* in_size + 8 */, const uint8_t *kek, size_t kek_size,
                    const uint8_t *in, size_t in_size, cista_error **err)
    __attribute__((warn_unused_result));
/* -EBADMSG when the integrity check fails. */
int crypto_aes_unwrap(uint8_t *out /* in_size - 8 */, const uint8_t *kek, size_t kek_size,
                      const uint8_t *in, size_t in_size, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- keys ---- */
void crypto__pkey_freep(EVP_PKEY **k);
#define _cleanup_pkey_ __attribute__((cleanup(crypto__pkey_freep)))
/*
 * Load a public or private key from PEM (SPKI, PKCS#8, PKCS#1; SEC1 "EC
 * PRIVATE KEY" too), DER, or a JWK JSON object. With @want_private, a file
 * holding only a public key is an error. New key to the caller.
 */
int crypto_key_load(EVP_PKEY **out, const void *data, size_t size, bool want_private,
                    cista_error **err) __attribute__((warn_unused_result));
int crypto_key_load_file(EVP_PKEY **out, const char *path, bool want_private, cista_error **err)
    __attribute__((warn_unused_result));
/* Curves by JOSE name: "P-256", "P-384", "P-521". */
int crypto_key_generate_ec(EVP_PKEY **out, const char *crv, cista_error **err)
    __attribute__((warn_unused_result));
int crypto_key_generate_rsa(EVP_PKEY **out, unsigned bits, cista_error **err)
    __attribute__((warn_unused_result));
/* PEM text (SPKI for public, PKCS#8 for private); caller frees. */
char *crypto_key_to_pem(EVP_PKEY *key, bool include_private);
bool crypto_key_is_rsa(const EVP_PKEY *key);
bool crypto_key_is_ec(const EVP_PKEY *key);
/* JOSE curve name of an EC key, or NULL. */
const char *crypto_key_ec_crv(const EVP_PKEY *key);
/* True when both keys hold the same public key. */
bool crypto_key_public_eq(const EVP_PKEY *a, const EVP_PKEY *b);

/* ---- RSA-OAEP; @md is CRYPTO_SHA1 (JOSE "RSA-OAEP") or CRYPTO_SHA256 ("RSA-OAEP-256") ---- */
int crypto_rsa_oaep_encrypt(uint8_t **out, size_t *out_size, EVP_PKEY *pub, crypto_hash_alg md,
                            const void *in, size_t in_size, cista_error **err)
    __attribute__((warn_unused_result));
int crypto_rsa_oaep_decrypt(uint8_t **out, size_t *out_size, EVP_PKEY *priv, crypto_hash_alg md,
                            const void *in, size_t in_size, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * RSAES-PKCS1-v1_5, decrypt only (JOSE RSA1_5). OpenSSL 3.0 reports bad
 * padding as an error (3.2+ returns a synthetic message instead); callers
 * must not let the difference show (jwe.c continues with a random CEK).
 */
int crypto_rsa_pkcs1_decrypt(uint8_t **out, size_t *out_size, EVP_PKEY *priv, const void *in,
                             size_t in_size, cista_error **err) __attribute__((warn_unused_result));

/* ---- ECDH and the JOSE Concat KDF (NIST SP 800-56A, RFC 7518 §4.6.2) ---- */
/* Shared secret Z; caller frees with crypto_free_secret(*out, *out_size). */
int crypto_ecdh(uint8_t **out, size_t *out_size, EVP_PKEY *priv, EVP_PKEY *peer, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * crypto_ecdh() where @validate_peer false skips OpenSSL's full public-key check of @peer (a
 * scalar multiplication by the group order, ~35 us on P-256): only for a peer key this process
 * validated when it imported it (jwk_to_key(), jwk_to_key_partial()).
 */
int crypto_ecdh_ex(uint8_t **out, size_t *out_size, EVP_PKEY *priv, EVP_PKEY *peer,
                   bool validate_peer, cista_error **err) __attribute__((warn_unused_result));
/* SHA-256 Concat KDF: AlgorithmID, PartyUInfo, PartyVInfo each length-prefixed. */
int crypto_concat_kdf(uint8_t *out, size_t out_size, const uint8_t *z, size_t z_size,
                      const char *alg_id, const uint8_t *apu, size_t apu_size, const uint8_t *apv,
                      size_t apv_size, cista_error **err) __attribute__((warn_unused_result));

#endif
