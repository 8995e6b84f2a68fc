/*
 * x509.h - X.509 certificates, CRLs and raw-integer ECDSA for attestation:
 * load PEM/DER certificates and bundles, verify a chain leaf -> intermediates
 * -> caller-pinned roots at a caller-given time (never the system trust
 * store), with optional CRLs; read extensions by OID (AMD VCEK TCB and hwID
 * extensions); verify and create ECDSA signatures whose r and s are stored
 * as fixed-width big- or little-endian integers (SNP stores them
 * little-endian in 72-byte fields).
 *
 * Everything is a thin layer over OpenSSL 3 (X509_verify_cert, EVP_DigestVerify);
 * RSASSA-PSS certificate signatures (AMD ARK/ASK) are handled by OpenSSL.
 *
 * Thread-safe: no global state; objects are not shared. Trust assumption:
 * certificate, CRL and signature bytes are untrusted (they come from the
 * host or the network); only the roots the caller passes are trusted, and
 * the caller is responsible for pinning them.
 */
#ifndef CISTA_X509_H
#define CISTA_X509_H

#include <errno.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util/err.h"

/* Hard limits on untrusted inputs. */
#define X509_MAX_INPUT (1u << 20) /* bytes of one PEM/DER input */
#define X509_MAX_CERTS 16         /* certificates in one bundle */

/*
 * Error codes of x509_verify_chain(), distinct so callers and tests can tell
 * the failed check apart (the message names the link and the reason).
 */
#define X509_E_REJECTED (-EKEYREJECTED) /* bad signature, unknown issuer, not a CA, ... */
#define X509_E_EXPIRED (-EKEYEXPIRED)   /* certificate or CRL outside its validity window */
#define X509_E_REVOKED (-EKEYREVOKED)   /* serial listed in a CRL */

void x509__freep(X509 **c);
void x509__stack_freep(STACK_OF(X509) * *s);
void x509__crls_freep(STACK_OF(X509_CRL) * *s);
#define _cleanup_x509_ __attribute__((cleanup(x509__freep)))
#define _cleanup_x509_stack_ __attribute__((cleanup(x509__stack_freep)))
#define _cleanup_x509_crls_ __attribute__((cleanup(x509__crls_freep)))

/*
 * Parse one certificate (PEM or DER; a PEM bundle with more than one
 * certificate is an error). New certificate to the caller.
 */
int x509_cert_load(X509 **out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Parse every certificate of @data: a PEM bundle (other PEM blocks are
 * skipped) or a single DER certificate. Appends to *out (creating the stack
 * when *out is NULL); at most X509_MAX_CERTS in total. The caller owns *out.
 */
int x509_certs_load(STACK_OF(X509) * *out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
/* Read @path (at most X509_MAX_INPUT bytes) and x509_certs_load() it. */
int x509_certs_load_file(STACK_OF(X509) * *out, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
/* CRLs: PEM (any number) or one DER CRL; appends to *out as above. */
int x509_crls_load(STACK_OF(X509_CRL) * *out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));

/* SHA-256 of the DER encoding (for pinning). */
int x509_cert_sha256(uint8_t out[32], X509 *cert, cista_error **err)
    __attribute__((warn_unused_result));
/* One-line subject ("CN=SEV-Milan, O=Advanced Micro Devices, ..."); caller frees. */
char *x509_subject_str(X509 *cert);
char *x509_issuer_str(X509 *cert);
/* The subject (or issuer) commonName, or NULL; caller frees. */
char *x509_subject_cn(X509 *cert);
char *x509_issuer_cn(X509 *cert);
/* notBefore / notAfter as "2029-09-24T20:20:14Z"; caller frees. */
char *x509_not_before_str(X509 *cert);
char *x509_not_after_str(X509 *cert);
/* True when subject == issuer and the certificate's own key verifies it. */
bool x509_is_self_signed(X509 *cert);

/*
 * Raw value (the extnValue OCTET STRING contents) of the extension @oid
 * (dotted text, e.g. "1.3.6.1.4.1.3704.1.4"). *out borrows from @cert.
 * -ENOENT when the certificate lacks it, -EINVAL when it appears twice.
 */
int x509_ext_raw(const uint8_t **out, size_t *out_size, X509 *cert, const char *oid,
                 cista_error **err) __attribute__((warn_unused_result));
/* The extension's value decoded as a DER INTEGER in [0, INT64_MAX]. */
int x509_ext_int(int64_t *out, X509 *cert, const char *oid, cista_error **err)
    __attribute__((warn_unused_result));
/* The extension's value decoded as a DER IA5String/UTF8String; caller frees. */
int x509_ext_string(char **out, X509 *cert, const char *oid, cista_error **err)
    __attribute__((warn_unused_result));

typedef enum {
    X509_CRL_NONE = 0,  /* ignore CRLs */
    X509_CRL_ALL,       /* every certificate needs a CRL from its issuer */
    X509_CRL_AVAILABLE, /* check each certificate whose issuer has a CRL in the set */
} x509_crl_mode;

typedef struct {
    time_t at;                 /* verification time; 0 means now */
    STACK_OF(X509_CRL) * crls; /* borrowed, may be NULL */
    x509_crl_mode crl_mode;    /* X509_CRL_AVAILABLE when crls is set and this is NONE */
    int max_depth;             /* 0 = OpenSSL default */
} x509_verify_opts;

/*
 * Verify @leaf up to one of @roots (trusted as given: pin them first),
 * using @intermediates (untrusted, may be NULL). No system store, no
 * partial chains. On failure the message names the link ("certificate
 * 'CN=SEV-Milan' (chain depth 1)") and the reason (expired at T with its
 * notAfter, signature, revoked serial, unknown issuer); codes X509_E_*.
 * On success and with @out_chain, the verified chain leaf-first (new
 * stack of new references, owned by the caller).
 */
int x509_verify_chain(STACK_OF(X509) * *out_chain, X509 *leaf, STACK_OF(X509) * intermediates,
                      STACK_OF(X509) * roots, const x509_verify_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

/* Byte order of raw ECDSA integers. */
typedef enum { X509_BIG_ENDIAN = 0, X509_LITTLE_ENDIAN = 1 } x509_endian;

/*
 * Verify an ECDSA signature over @msg with digest @md ("SHA256", "SHA384",
 * "SHA512"), r and s given as @int_size-byte unsigned integers in @endian
 * order (wider than the curve order is fine if the extra bytes are zero).
 * @pub is borrowed. Returns 0, or -EBADMSG when the signature does not
 * verify (other codes for unusable inputs).
 */
int x509_ecdsa_verify_raw(EVP_PKEY *pub, const char *md, const void *msg, size_t msg_size,
                          const uint8_t *r, const uint8_t *s, size_t int_size, x509_endian endian,
                          cista_error **err) __attribute__((warn_unused_result));
/* Largest @int_size the raw-ECDSA functions take. */
#define X509_ECDSA_INT_MAX 256
/* Sign; writes r and s zero-padded to @int_size bytes each in @endian order. */
int x509_ecdsa_sign_raw(uint8_t *r, uint8_t *s, size_t int_size, x509_endian endian, EVP_PKEY *priv,
                        const char *md, const void *msg, size_t msg_size, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * x509_ecdsa_sign_raw() for a key that signs many messages (the KBS token key): the signing
 * context is set up once, so a signature costs about the curve arithmetic alone. Thread-safe:
 * each signature works on its own copy of the prepared context, which holds a reference to @priv.
 */
typedef struct x509_ecdsa_signer x509_ecdsa_signer;
int x509_ecdsa_signer_new(x509_ecdsa_signer **out, EVP_PKEY *priv, const char *md,
                          cista_error **err) __attribute__((warn_unused_result));
int x509_ecdsa_signer_sign(const x509_ecdsa_signer *sg, uint8_t *r, uint8_t *s, size_t int_size,
                           x509_endian endian, const void *msg, size_t msg_size, cista_error **err)
    __attribute__((warn_unused_result));
void x509_ecdsa_signer_free(x509_ecdsa_signer *sg);

#endif
