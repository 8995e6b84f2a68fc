/*
 * ev.h - TEE attestation evidence: produce it inside a TEE (get) and verify
 * it into normalized claims (verify), one implementation per TEE behind one
 * vtable (ev_ops), found by name with ev_find(). Every TEE-specific decision
 * lives in src/evidence; callers only see ev_ops, ev_verify_opts and the
 * claims document described in docs/claims.md.
 *
 * Kinds today: "sim" (insecure software TEE for development) and "snp"
 * (AMD SEV-SNP attestation reports v2, v3, v5 with VCEK/VLEK chains to the
 * pinned Milan/Genoa/Turin ARKs). TPM, TDX, SGX, Azure vTPM and NVIDIA GPU
 * come later through the same vtable.
 *
 * Thread-safety: the registry is constant; get() and verify() keep no
 * global state and may run concurrently (also on one shared collateral
 * set, whose entries a verifier parses on first use under the set's
 * lock). Trust assumption: evidence, auxiliary blobs and collateral are
 * untrusted bytes from the host or the network; only the pinned vendor
 * roots compiled into the binary (and a sim platform key the caller
 * configures) are trusted. verify() never trusts a root that arrives with
 * the evidence unless it equals a pinned one.
 */
#ifndef CISTA_EV_H
#define CISTA_EV_H

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util/err.h"

#define EV_REPORT_DATA_SIZE 64
#define EV_HOST_DATA_SIZE 32
#define EV_MAX_EVIDENCE (1u << 20) /* bytes of evidence or of one aux blob */
#define EV_MAX_COLLATERAL 32       /* files in one collateral set */

/*
 * Error codes of verify(), one per kind of failed check (the message names
 * the check, expected vs actual, and the likely cause). Stable: the CLI and
 * the KBS map them to outcomes, tests assert them.
 */
#define EV_E_SIZE (-EMSGSIZE)           /* truncated or padded evidence */
#define EV_E_VERSION (-EPROTONOSUPPORT) /* unknown report version / algorithm / key type */
#define EV_E_FORMAT (-EPROTO)           /* malformed field (reserved bits set, ...) */
#define EV_E_SIGNATURE (-EBADMSG)       /* evidence signature does not verify */
#define EV_E_CHAIN (-EKEYREJECTED)      /* certificate chain link or root pin failed */
#define EV_E_EXPIRED (-EKEYEXPIRED)     /* certificate or CRL outside its validity at "now" */
#define EV_E_REVOKED (-EKEYREVOKED)     /* certificate revoked by a CRL */
#define EV_E_NOKEY (-ENOKEY)            /* signing key missing or of the wrong kind */
#define EV_E_PLATFORM (-ENODEV)         /* chip / platform id differs from the certificate */
#define EV_E_TCB (-ERANGE)              /* TCB differs from the certificate's TCB */
#define EV_E_REPORT_DATA (-EACCES)      /* report data differs from the expected value */
#define EV_E_POLICY (-EPERM)            /* an optional caller constraint is not met */
#define EV_E_NOTEE (-ENOTSUP)           /* get(): this TEE is not available here */
#define EV_E_MISMATCH (-EILSEQ)         /* PCR values / event log differ from their signed digest */

/* ---- collateral: named blobs (certificates, CRLs, ...) handed to verify() ---- */

typedef struct ev_collateral ev_collateral;

ev_collateral *ev_collateral_new(void);
void ev_collateral_free(ev_collateral *c);
void ev__collateral_freep(ev_collateral **c);
#define _cleanup_collateral_ __attribute__((cleanup(ev__collateral_freep)))
/* Copy @size bytes in under @name (a file name, used in messages). */
int ev_collateral_add(ev_collateral *c, const char *name, const void *data, size_t size,
                      cista_error **err) __attribute__((warn_unused_result));
/*
 * Add every regular file of directory @dir (not recursive, hidden files
 * skipped, each at most EV_MAX_EVIDENCE bytes, at most EV_MAX_COLLATERAL
 * files). What a file is comes from its contents, not its name.
 */
int ev_collateral_load_dir(ev_collateral *c, const char *dir, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Add a copy of entry @i (< count) of @src to @c, the same as
 * ev_collateral_add() of its name and bytes, except that the certificates
 * parsed when it was added to @src are shared (new references) instead of
 * parsed again: a set merged per request from a long-lived one (the KBS's
 * configured collateral plus what a client sent) costs no parsing of the
 * long-lived entries. Verifier-specific parsed forms are not shared. @src
 * is borrowed.
 */
int ev_collateral_add_from(ev_collateral *c, const ev_collateral *src, size_t i, cista_error **err)
    __attribute__((warn_unused_result));
size_t ev_collateral_count(const ev_collateral *c);
/* Borrowed view of entry @i (< count). */
void ev_collateral_get(const ev_collateral *c, size_t i, const char **name, const uint8_t **data,
                       size_t *size);

/* ---- options ---- */

typedef struct {
    /* sim */
    const char *sim_state_dir; /* NULL: ev_sim_default_dir() */
    const uint8_t *host_data;  /* EV_HOST_DATA_SIZE bytes set by the launcher; NULL = zeros */
    const void *sim_config;    /* configuration measured with the binary; may be NULL */
    size_t sim_config_size;
    /* snp (and later tdx): configfs-tsm, falling back to /dev/sev-guest */
    const char *tsm_dir;       /* NULL: $CISTA_TSM_DIR or /sys/kernel/config/tsm/report */
    const char *sev_guest_dev; /* NULL: $CISTA_SEV_GUEST_DEV or /dev/sev-guest */
    int privlevel;             /* SNP VMPL to request, -1 = leave the default */
    /*
     * Called after the configfs-tsm entry directory is created and before
     * inblob is written (tests use it to play the kernel's part in a plain
     * directory). May be NULL.
     */
    void (*tsm_hook)(const char *entry_dir, void *arg);
    void *tsm_hook_arg;
    /* tpm (and the azure vTPM kinds) */
    const char *tpm_tcti;     /* tpm2-tss TCTI, e.g. "swtpm:host=127.0.0.1,port=2321";
                                 NULL: $CISTA_TPM_TCTI or "device:/dev/tpmrm0" */
    const char *tpm_pcrs;     /* PCRs to quote, "sha256:0-23" (default) or "sha256:0-7,23+sha1:0" */
    const char *tpm_eventlog; /* cista event log (JSON lines); NULL: $CISTA_TPM_EVENTLOG or
                                 /run/cista/tpm-eventlog.jsonl; missing file = empty log */
} ev_get_opts;

typedef struct {
    const uint8_t *report_data;      /* expected EV_REPORT_DATA_SIZE bytes; NULL = not checked */
    time_t now;                      /* certificate/CRL validity time; 0 = current time */
    const ev_collateral *collateral; /* certificates, CRLs; may be NULL */
    EVP_PKEY *sim_key;               /* sim: the trusted platform public key (borrowed) */
    /* optional caller constraints (the KBS appraisal does the real policy work) */
    bool forbid_debug; /* reject evidence from a debuggable TEE */
    int vmpl;          /* snp: required VMPL, -1 = any */
    /*
     * tdx/sgx: the worst TCB status accepted (EV_TCB_*, below); 0 = any,
     * even EV_TCB_UNKNOWN (no TCB info collateral given). Otherwise a quote
     * without TCB info and QE identity collateral is rejected too.
     */
    int tcb_max_status;
    /*
     * tpm: a registered attestation key (borrowed). When set, the quote must
     * be signed by it; otherwise the evidence must carry an AK certificate
     * chaining to a pinned root (Google vTPM AK CAs).
     */
    EVP_PKEY *tpm_ak_pub;
    /*
     * Optional cache of verification outcomes (borrowed; may be NULL, may be
     * shared between threads). snp and nvidia-gpu skip the chain
     * verification for a leaf certificate whose chain verified before to
     * the same pinned root, while "now" is inside the chain's validity; not
     * used when CRLs are given. tdx and sgx keep the PCK and TCB signing
     * chain outcomes (keyed by the quote's chain bytes, the root and every
     * collateral entry, CRLs included), collateral signatures and parsed
     * keys; see docs/evidence.md.
     */
    struct ev_chain_cache *chain_cache;
} ev_verify_opts;

/* DCAP TCB statuses (Intel PCS names), best first. */
#define EV_TCB_UNKNOWN 0
#define EV_TCB_UP_TO_DATE 1
#define EV_TCB_SW_HARDENING_NEEDED 2
#define EV_TCB_CONFIGURATION_NEEDED 3
#define EV_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED 4
#define EV_TCB_OUT_OF_DATE 5
#define EV_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED 6
#define EV_TCB_REVOKED 7

/* Defaults: vmpl -1, privlevel -1, everything else zero. */
void ev_get_opts_init(ev_get_opts *o);
void ev_verify_opts_init(ev_verify_opts *o);

/* ---- the vtable ---- */

typedef struct ev_ops {
    const char *name; /* "sim", "snp", ... (the claims' "tee" value) */
    const char *description;
    bool insecure; /* true for sim only */
    /*
     * Produce evidence binding @report_data (64 bytes). *out_evidence and
     * *out_aux (auxiliary blob, e.g. the SNP certificate table; may come back
     * NULL/0) are new buffers owned by the caller. EV_E_NOTEE when this TEE
     * is not present.
     */
    int (*get)(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
               size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
               const ev_get_opts *opts, cista_error **err);
    /*
     * Verify @evidence (and @aux, may be NULL) and return the normalized
     * claims (new reference owned by the caller), or an EV_E_* error.
     * Inputs are borrowed.
     */
    int (*verify)(json_t **out, const uint8_t *evidence, size_t evidence_size, const uint8_t *aux,
                  size_t aux_size, const ev_verify_opts *opts, cista_error **err);
    /* True when @evidence looks like this kind (a cheap sniff, not a check). */
    bool (*detect)(const uint8_t *evidence, size_t evidence_size);
} ev_ops;

/* The implementation called @name, or NULL. */
const ev_ops *ev_find(const char *name);
/* All implementations (constant array of *out_count entries). */
const ev_ops *const *ev_list(size_t *out_count);
/* The first implementation whose detect() accepts @evidence, or NULL. */
const ev_ops *ev_detect(const uint8_t *evidence, size_t evidence_size);

/* ---- sim: the insecure software TEE ---- */

/*
 * The sim state directory: $CISTA_SIM_DIR, else $XDG_STATE_HOME/cista/sim,
 * else $HOME/.local/state/cista/sim. Caller frees.
 */
char *ev_sim_default_dir(void);
/*
 * Create @state_dir (0700) with a new P-384 platform key platform-key.pem
 * (0600) and its public half platform-pub.pem, unless a key already
 * exists (then *out_created is false and nothing changes). @out_created may
 * be NULL. Logs a warning: sim is insecure.
 */
int ev_sim_init(const char *state_dir, bool *out_created, cista_error **err)
    __attribute__((warn_unused_result));
/* The platform public key of @state_dir (NULL: default). New key to the caller. */
int ev_sim_load_public(EVP_PKEY **out, const char *state_dir, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- tpm: measurements into PCRs with the cista event log ---- */

/*
 * Extend @digest (32 bytes) into the SHA-256 bank of PCR @pcr (0-23) of the
 * TPM at @opts->tpm_tcti and append the event {pcr, alg, digest, type,
 * data} to the cista event log @opts->tpm_eventlog (created 0644, appended
 * under an exclusive lock; the line is written before the extend so a crash
 * leaves a log that fails replay rather than one that hides a measurement).
 * @type is a short name ("cista.policy", "cista.container"); @data is a
 * description (may be NULL), not bound by the digest. Inputs are borrowed.
 */
int ev_tpm_extend(const ev_get_opts *opts, unsigned pcr, const uint8_t digest[32], const char *type,
                  const char *data, cista_error **err) __attribute__((warn_unused_result));

/* ---- verified-chain cache (ev_verify_opts.chain_cache) ---- */

typedef struct ev_chain_cache ev_chain_cache;

/*
 * A cache of at most @max_entries outcomes (0 means 1; a warm DCAP
 * verification uses 5 per platform and collateral set); caller frees.
 * Thread-safe.
 */
ev_chain_cache *ev_chain_cache_new(size_t max_entries);
void ev_chain_cache_free(ev_chain_cache *c);
/* Entries held now. */
size_t ev_chain_cache_count(ev_chain_cache *c);

#endif
