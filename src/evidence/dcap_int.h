/*
 * dcap_int.h - Intel DCAP quote verification shared by tdx.c, sgx.c and the
 * Azure TDX vTPM verifier (azure.c). Not a public API.
 *
 * dcap.c parses ECDSA quotes (v3 SGX, v4 TDX, v5 TDX/SGX with a typed body)
 * field by field by their length fields, verifies the quote signature by
 * the attestation key, the QE report signature by the PCK, the binding of
 * the attestation key in the QE report data, the PCK chain to the pinned
 * Intel SGX Root CA (with CRLs from the collateral), and, when TCB info and
 * QE identity collateral are given, their signatures, validity windows and
 * the TCB level matching (platform, TDX module, QE) into one TCB status.
 *
 * Collateral entries are parsed once per ev_collateral (issuer chains,
 * CRLs, TCB info and QE identity levels and fields; read errors are kept
 * and reported on use). With opts->chain_cache, the PCK chain outcome
 * (chain, SGX extension, key; keyed by the quote's PEM bytes, the root and
 * every collateral entry), the TCB signing chain outcome, TCB info / QE
 * identity signatures (keyed by signer and the exact text and signature)
 * and the attestation key's parsed form are reused while "now" is inside
 * their certificates' and CRLs' windows; windows, TCB matching, the QE
 * report and quote signatures run on every call.
 *
 * Thread-safe: no global state but the compiled-in certificates parsed
 * once (ev__cert_embedded, the pinned root) and SHA-256 fetched once.
 * Trust assumption: quotes and collateral are untrusted; only the
 * compiled-in Intel SGX Root CA (data/intel/) is trusted, pinned by the
 * SHA-256 of its DER encoding.
 */
#ifndef CISTA_DCAP_INT_H
#define CISTA_DCAP_INT_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evidence/ev.h"

#define DCAP_TEE_SGX 0x00000000u
#define DCAP_TEE_TDX 0x00000081u

#define DCAP_HEADER_SIZE 48
#define DCAP_SGX_REPORT_SIZE 384 /* SGX REPORT body (ISV enclave and QE report) */
#define DCAP_TD10_BODY_SIZE 584
#define DCAP_TD15_BODY_SIZE 648
#define DCAP_BODY_SGX 1 /* v5 body types */
#define DCAP_BODY_TD10 2
#define DCAP_BODY_TD15 3
/* Bytes tolerated after the quote's last length-delimited field (buffers
 * from quote generation are often zero-padded); more is EV_E_SIZE. */
#define DCAP_MAX_TRAILING 8192

/* SHA-256 (DER) of the Intel SGX Root CA, the only DCAP trust anchor. */
#define DCAP_ROOT_SHA256_HEX "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

/* The compiled-in Intel SGX Root CA (PEM; a copy of data/intel/intel_sgx_root_ca.pem). */
extern const char ev__intel_sgx_root_ca_pem[];

/* Field offsets inside an SGX REPORT body (384 bytes). */
#define SGXR_CPUSVN 0
#define SGXR_MISCSELECT 16
#define SGXR_ISVEXTPRODID 32
#define SGXR_ATTRIBUTES 48
#define SGXR_MRENCLAVE 64
#define SGXR_MRSIGNER 128
#define SGXR_CONFIGID 192
#define SGXR_ISVPRODID 256
#define SGXR_ISVSVN 258
#define SGXR_CONFIGSVN 260
#define SGXR_ISVFAMILYID 304
#define SGXR_REPORTDATA 320

/* Field offsets inside a TD quote body (TD 1.0: 584 bytes; TD 1.5: 648). */
#define TDB_TEE_TCB_SVN 0
#define TDB_MRSEAM 16
#define TDB_MRSIGNERSEAM 64
#define TDB_SEAMATTRIBUTES 112
#define TDB_TDATTRIBUTES 120
#define TDB_XFAM 128
#define TDB_MRTD 136
#define TDB_MRCONFIGID 184
#define TDB_MROWNER 232
#define TDB_MROWNERCONFIG 280
#define TDB_RTMR0 328 /* 4 x 48 */
#define TDB_REPORTDATA 520
#define TDB_TEE_TCB_SVN2 584 /* TD 1.5 only */
#define TDB_MRSERVICETD 600  /* TD 1.5 only */

/* TCB statuses, best first; the numbers are EV_TCB_* of ev.h. */
const char *ev__dcap_status_name(int status);

/*
 * A verified quote: views into the caller's quote bytes (valid while they
 * are) plus what verification established. Filled by ev__dcap_verify().
 */
typedef struct {
    /* header */
    uint16_t version, att_key_type;
    uint32_t tee_type;
    uint16_t qe_svn, pce_svn; /* v3 header only */
    const uint8_t *qe_vendor_id, *user_data;
    /* body */
    uint16_t body_type;  /* DCAP_BODY_* (v3/v4: implied) */
    const uint8_t *body; /* SGX REPORT (384) or TD body (584/648) */
    size_t body_size;
    size_t quote_size;     /* bytes the length fields describe */
    size_t trailing_bytes; /* bytes after them (padding) */
    /* QE */
    const uint8_t *qe_report; /* 384 bytes */
    /* PCK certificate facts (OID 1.2.840.113741.1.13.1) */
    uint8_t fmspc[6], pceid[2], cpusvn[16], pck_comp[16];
    uint16_t pcesvn;
    int sgx_type;           /* -1 when absent */
    const char *pck_ca;     /* "platform" or "processor" */
    STACK_OF(X509) * chain; /* verified PCK chain, leaf first (owned) */
    /* collateral outcome */
    bool have_tcb_info, have_qe_identity;
    int tcb_status;                                /* EV_TCB_*; EV_TCB_UNKNOWN without TCB info */
    int platform_status, module_status, qe_status; /* each EV_TCB_* (UNKNOWN if not evaluated) */
    json_t *advisories;                            /* array of strings (owned) */
    char tcb_date[32];                             /* of the matched platform level, "" if none */
    char collateral_window[64]; /* "from..to" (intersection), "" without collateral */
    X509 *tcb_signer;           /* TCB signing certificate used (owned; NULL without collateral) */
} dcap_result;

void ev__dcap_result_free(dcap_result *r);

/*
 * Verify a DCAP quote of TEE type @want_tee (DCAP_TEE_SGX or DCAP_TEE_TDX)
 * at opts->now with opts->collateral (may be NULL: then the quote-level
 * checks and the PCK chain only, status EV_TCB_UNKNOWN). Applies
 * opts->tcb_max_status (EV_E_POLICY) and opts->report_data; forbid_debug
 * is left to the caller (it knows the attribute layout). @root_override,
 * when not NULL, replaces the pinned Intel root (tests only; borrowed).
 * On success *out is filled (release with ev__dcap_result_free()); on
 * failure it is left cleared. Inputs are borrowed.
 */
int ev__dcap_verify(dcap_result *out, const uint8_t *quote, size_t size, uint32_t want_tee,
                    const ev_verify_opts *opts, X509 *root_override, cista_error **err)
    __attribute__((warn_unused_result));

/* JSON array of the verified PCK chain, leaf first (roles pck, pck-ca, root). New reference. */
json_t *ev__dcap_signers_json(const dcap_result *r);
/* The "tcb" claims object: status, components, advisories, ... New reference. */
json_t *ev__dcap_tcb_json(const dcap_result *r);
/* Add version, qe_vendor_id, user_data, qe {...}, pck {...}, trailing_bytes to @obj. */
void ev__dcap_common_json(json_t *obj, const dcap_result *r);

/*
 * Verify a TD quote (v4 or v5) exactly as the "tdx" verifier does and
 * return its normalized claims (tee "tdx"); for azure.c, which checks the
 * TD quote that accompanies an Azure TDX HCL report. opts->report_data,
 * opts->forbid_debug and opts->tcb_max_status apply as for "tdx". Inputs
 * are borrowed; *out is a new reference owned by the caller.
 */
int ev__dcap_verify_td_quote(json_t **out, const uint8_t *quote, size_t size,
                             const ev_verify_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

#endif
