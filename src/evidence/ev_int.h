/*
 * ev_int.h - internals shared by the src/evidence implementations: the
 * SNP-style report layout (also used by sim), little-endian readers, claim
 * builders and the configfs-tsm report interface. Not a public API.
 */
#ifndef CISTA_EV_INT_H
#define CISTA_EV_INT_H

#include <stdint.h>

#include "crypto/x509.h"
#include "evidence/ev.h"

/* AMD SEV-SNP ATTESTATION_REPORT layout (ABI spec #56860, table 22). */
#define SNP_REPORT_SIZE 0x4A0
#define SNP_OFF_VERSION 0x000
#define SNP_OFF_GUEST_SVN 0x004
#define SNP_OFF_POLICY 0x008
#define SNP_OFF_FAMILY_ID 0x010
#define SNP_OFF_IMAGE_ID 0x020
#define SNP_OFF_VMPL 0x030
#define SNP_OFF_SIG_ALGO 0x034
#define SNP_OFF_CURRENT_TCB 0x038
#define SNP_OFF_PLATFORM_INFO 0x040
#define SNP_OFF_SIGNER_INFO 0x048
#define SNP_OFF_RSVD1 0x04C
#define SNP_OFF_REPORT_DATA 0x050
#define SNP_OFF_MEASUREMENT 0x090
#define SNP_OFF_HOST_DATA 0x0C0
#define SNP_OFF_ID_KEY_DIGEST 0x0E0
#define SNP_OFF_AUTHOR_KEY_DIGEST 0x110
#define SNP_OFF_REPORT_ID 0x140
#define SNP_OFF_REPORT_ID_MA 0x160
#define SNP_OFF_REPORTED_TCB 0x180
#define SNP_OFF_CPUID_FAM 0x188
#define SNP_OFF_CPUID_MOD 0x189
#define SNP_OFF_CPUID_STEP 0x18A
#define SNP_OFF_RSVD2 0x18B /* 21 bytes */
#define SNP_OFF_CHIP_ID 0x1A0
#define SNP_OFF_COMMITTED_TCB 0x1E0
#define SNP_OFF_CURRENT_VER 0x1E8   /* build, minor, major, rsvd */
#define SNP_OFF_COMMITTED_VER 0x1EC /* build, minor, major, rsvd */
#define SNP_OFF_LAUNCH_TCB 0x1F0
#define SNP_OFF_LAUNCH_MIT 0x1F8
#define SNP_OFF_CURRENT_MIT 0x200
#define SNP_OFF_RSVD3 0x208 /* to 0x2A0 */
#define SNP_OFF_SIGNATURE 0x2A0
#define SNP_SIGNED_SIZE 0x2A0
#define SNP_SIG_INT_SIZE 72 /* r at +0, s at +0x48, little-endian */
#define SNP_SIG_SIZE 512
#define SNP_MEASUREMENT_SIZE 48
#define SNP_CHIP_ID_SIZE 64

static inline uint32_t ev__le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t ev__le64(const uint8_t *p)
{
    return (uint64_t)ev__le32(p) | (uint64_t)ev__le32(p + 4) << 32;
}

static inline void ev__put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void ev__put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* True when @size bytes at @p are all zero. */
bool ev__all_zero(const uint8_t *p, size_t size);
/* New JSON string holding lowercase hex of the bytes. */
json_t *ev__json_hex(const void *p, size_t size);
/* "2026-11-01T00:00:00Z" of @t into @buf (>= 21 bytes). */
void ev__time_str(char *buf, size_t size, time_t t);
/*
 * The claims skeleton every kind fills: {"tee", "insecure", ...}. New
 * reference to the caller.
 */
json_t *ev__claims_new(const char *tee, bool insecure);
/*
 * A certificate as a "signers" entry: {"role", "subject", "issuer",
 * "not_before", "not_after", "sha256", "pinned" (only when @pinned)}. @c is
 * borrowed; new reference to the caller.
 */
json_t *ev__cert_json(const char *role, X509 *c, bool pinned);
/*
 * @opts, or @dflt initialised with ev_verify_opts_init() when @opts is NULL:
 * the defaults every verify() applies to a NULL options pointer. Both are
 * borrowed; the result points at one of them.
 */
const ev_verify_opts *ev__verify_opts_or_default(const ev_verify_opts *opts, ev_verify_opts *dflt);
/*
 * The caller's expected report data @want (NULL: nothing expected) against
 * the @got the evidence carries, both EV_REPORT_DATA_SIZE bytes. On a
 * mismatch EV_E_REPORT_DATA with "<@what> report_data is <got>, expected
 * <want>; the <@noun> is stale, replayed or bound to another key".
 */
int ev__check_report_data(const uint8_t *want, const uint8_t *got, const char *what,
                          const char *noun, cista_error **err) __attribute__((warn_unused_result));

/*
 * Request a report through configfs-tsm: make an entry under @opts' tsm
 * directory, check its provider equals @provider, write @privlevel (>= 0)
 * and inblob, read outblob and auxblob (auxblob may be missing/empty), check
 * that generation did not change under us, remove the entry. -ENOENT when
 * the configfs-tsm directory does not exist. Outputs are owned by the caller.
 */
int ev__tsm_get(uint8_t **out, size_t *out_size, uint8_t **aux, size_t *aux_size,
                const char *provider, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                const ev_get_opts *opts, cista_error **err) __attribute__((warn_unused_result));

/*
 * Generic entries of the verification cache (chain_cache.c). A key is the
 * list of its parts, stored as (length, bytes) each and compared with
 * memcmp: name every input of the verification whose outcome is kept, so
 * that different bytes never hit.
 */
typedef struct {
    const void *p;
    size_t size;
} ev__key_part;

/* What an entry holds (all borrowed by ev__cache_put, which takes references / copies). */
typedef struct {
    time_t not_before, not_after; /* inclusive window of "now" in which the entry is used */
    STACK_OF(X509) * chain;       /* may be NULL */
    EVP_PKEY_CTX *vctx;           /* a context set up for an operation (copied), may be NULL */
    const void *blob;             /* plain bytes (no pointers), may be NULL */
    size_t blob_size;
} ev__cache_val;

/*
 * The entry keyed @key (@nkey parts) when "now" (0: the current time) is
 * inside its window, it has a chain / context when @out_chain / @out_vctx
 * ask for one, and its blob is @blob_size bytes: true, with a new stack of
 * new references in *out_chain, a new copy of the context (EVP_PKEY_CTX_dup)
 * in *out_vctx and the blob copied to @blob, all owned by the caller. False
 * on a miss or when @c is NULL.
 */
bool ev__cache_get(ev_chain_cache *c, const ev__key_part *key, size_t nkey, time_t now,
                   STACK_OF(X509) * *out_chain, EVP_PKEY_CTX **out_vctx, void *blob,
                   size_t blob_size);
/* Remember @v under @key (replacing an entry with the same key). No-op when @c is NULL. */
void ev__cache_put(ev_chain_cache *c, const ev__key_part *key, size_t nkey, const ev__cache_val *v);
/*
 * Narrow the inclusive window [*not_before, *not_after] to the times at
 * which OpenSSL accepts a certificate (or CRL) valid @from..@to (notBefore
 * <= t < notAfter). False when a time does not convert.
 */
bool ev__time_window(time_t *not_before, time_t *not_after, const ASN1_TIME *from,
                     const ASN1_TIME *to);
/* The same for every certificate of @chain. */
bool ev__chain_window(time_t *not_before, time_t *not_after, STACK_OF(X509) * chain);

/*
 * The chain verified before for @leaf under @scope (verifier and pinned
 * root, < 96 chars), when "now" (0: the current time) is inside its
 * validity: true and, with @out, a new stack of new references to the
 * caller. False on a miss or when @c is NULL.
 */
bool ev__chain_cache_get(STACK_OF(X509) * *out, ev_chain_cache *c, const char *scope, X509 *leaf,
                         time_t now);
/* Remember that @chain (leaf first, borrowed) verified for @leaf under @scope. */
void ev__chain_cache_put(ev_chain_cache *c, const char *scope, X509 *leaf, STACK_OF(X509) * chain);

/*
 * The certificates of collateral entry @i, parsed once when it was added
 * (so a collateral set reused across verifications is not re-parsed), or
 * NULL when the entry is not a certificate bundle. Borrowed; take
 * X509_chain_up_ref() to keep or consume them.
 */
STACK_OF(X509) * ev__collateral_certs(const ev_collateral *c, size_t i);
/*
 * A verifier's own parsed form of collateral entries (dcap: TCB info and QE
 * identity documents, CRLs, issuer chains). parse() gets an entry's name
 * and bytes and, when ev_collateral_add() parsed it as certificates, those
 * (all borrowed, alive as long as the collateral); it never fails: what it
 * could not parse is kept in the object and reported by the verifier when
 * it uses the entry, so the outcome is that of parsing on every call.
 */
typedef struct {
    void *(*parse)(const char *name, const uint8_t *data, size_t size, STACK_OF(X509) * certs);
    void (*free)(void *parsed);
} ev__coll_parser;
/*
 * The parsed form of collateral entry @i (< count) by @p, made on first use
 * (under the collateral's lock, so concurrent verifications may share a
 * collateral set) and kept with the entry until the set is freed: a
 * collateral set reused across verifications is parsed once. Borrowed.
 */
const void *ev__collateral_parsed(const ev_collateral *c, size_t i, const ev__coll_parser *p);
/*
 * The compiled-in certificate @pem (a static string) parsed once per
 * process and shared (read-only); *out is a new reference to the caller.
 */
int ev__cert_embedded(X509 **out, const char *pem, cista_error **err)
    __attribute__((warn_unused_result));

extern const ev_ops ev__sim_ops;
extern const ev_ops ev__snp_ops;
extern const ev_ops ev__tpm_ops;
extern const ev_ops ev__azure_snp_ops;
extern const ev_ops ev__azure_tdx_ops;
extern const ev_ops ev__tdx_ops;
extern const ev_ops ev__sgx_ops;
extern const ev_ops ev__nvidia_ops;

#endif
