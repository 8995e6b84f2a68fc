/*
 * kbs_int.h - state shared by the request handlers (handler.c) and the
 * HTTP server (server.c): keys and trust anchors loaded once, the session
 * table, and per-worker handler contexts.
 */
#ifndef CISTA_KBS_INT_H
#define CISTA_KBS_INT_H

#include "evidence/ev.h"
#include "kbs/kbs.h"
#include "kbs/store.h"
#include "policy/appraisal.h"

/* ---- group commit of audit entries (commit.c) ---- */

/* The audit entries one request produced, and what to do once they are durable. */
typedef struct kbs_commit_job kbs_commit_job;
struct kbs_commit_job {
    char **bodies; /* owned: kbs_store_audit_body() texts */
    time_t *times;
    size_t count, cap;
    int result; /* set before done(): 0, or the batch's negative errno */
    /* Called on the writer thread once the batch holding this job is durable (or failed). */
    void (*done)(kbs_commit_job *j, void *arg);
    void *arg;
    kbs_commit_job *next; /* the committer's queue */
};
void kbs__commit_job_add(kbs_commit_job *j, char *body, time_t t); /* takes @body */
void kbs__commit_job_clear(kbs_commit_job *j);

/*
 * One writer thread over @store (taken): every job queued while a commit is in flight goes
 * into the next single transaction. Thread-safe: any thread may submit.
 */
typedef struct kbs_committer kbs_committer;
int kbs__committer_new(kbs_committer **out, kbs_store *store, cista_error **err);
void kbs__committer_submit(kbs_committer *cm, kbs_commit_job *j);
/*
 * @inflight (read atomically, owned by the caller, set before the first submit): requests the
 * server is working on or answering. While it exceeds the queued jobs, a batch is held open
 * for a short window so that their entries share its fsync.
 */
void kbs__committer_set_inflight(kbs_committer *cm, const unsigned *inflight);
/* @fn runs on the writer thread after each batch's done() calls (set before the first submit). */
void kbs__committer_on_batch(kbs_committer *cm, void (*fn)(void *arg), void *arg);
void kbs__committer_stats(kbs_committer *cm, uint64_t *out_batches, uint64_t *out_entries);
/* Commits what is queued, stops the thread, closes the store. */
void kbs__committer_free(kbs_committer *cm);

/* ---- policy / reference-value cache (doccache.c); thread-safe ---- */

#define KBS_DOC_CACHE_TTL_MS 1000
typedef struct kbs_doc_cache kbs_doc_cache;
kbs_doc_cache *kbs__doc_cache_new(int64_t ttl_ms);
void kbs__doc_cache_free(kbs_doc_cache *dc);
/* kbs_store_get_doc() through the cache (-ENOENT cached too). Caller frees *out. */
int kbs__doc_cache_get(kbs_doc_cache *dc, kbs_store *st, char **out, const char *ns,
                       const char *key, cista_error **err);
/* Call after every write of a policy, the reference values or a resource. */
void kbs__doc_cache_invalidate(kbs_doc_cache *dc);
void kbs__doc_cache_stats(kbs_doc_cache *dc, uint64_t *out_hits, uint64_t *out_misses);

/* ---- sealed resources and parsed documents in the document cache (doccache.c) ---- */

/*
 * kbs_store_get_sealed() through the cache, with the TTL and invalidation of the documents:
 * what a release reads per request is the stored (encrypted) value, decrypted by the caller
 * (kbs_store_unseal()) every time. Misses are cached too; values over 64 KiB are not kept.
 * Caller frees *out. Thread-safe.
 */
int kbs__doc_cache_get_sealed(kbs_doc_cache *dc, kbs_store *st, uint8_t **out, size_t *out_size,
                              const char *path, cista_error **err)
    __attribute__((warn_unused_result));

/* One reader's hold on a parsed release policy or reference-values document. */
typedef struct kbs_parsed_ref kbs_parsed_ref;
/*
 * pol_release_parse(@text) / pol_refvals_parse(@text), parsed once per distinct text and shared:
 * *out is a new reference (kbs__parsed_ref_put() it once used). A text that does not parse fails
 * as the parser does and is not kept.
 */
int kbs__doc_cache_policy(kbs_doc_cache *dc, kbs_parsed_ref **out, const char *text,
                          cista_error **err) __attribute__((warn_unused_result));
int kbs__doc_cache_refvals(kbs_doc_cache *dc, kbs_parsed_ref **out, const char *text,
                           cista_error **err) __attribute__((warn_unused_result));
const pol_release *kbs__parsed_policy(const kbs_parsed_ref *ref);
const pol_refvals *kbs__parsed_refvals(const kbs_parsed_ref *ref);
void kbs__parsed_ref_put(kbs_parsed_ref *ref);

/*
 * The configured collateral of one TEE (config "collateral"), loaded once: its certificates are
 * parsed when loaded and DCAP's parsed documents are kept with it after their first use, so
 * every /attest reuses them.
 */
typedef struct {
    char tee[24];
    ev_collateral *c;
} kbs_collateral_set;

/*
 * Entries of the KBS's verification cache (ev_chain_cache). A warm DCAP attestation uses about
 * 2 per platform (PCK chain, attestation key) plus 3 per collateral set (TCB signing chain, TCB
 * info and QE identity signatures), SNP and NVIDIA one per device certificate: room for several
 * hundred platforms. Bounded because a lookup scans the entries (keys of the same size compared
 * with memcmp): with 1000 other same-size PCK keys ahead of its own, a warm TDX verification
 * costs ~110 µs of CPU instead of ~97 µs (test_kbs_evcache's benchmark).
 */
#define KBS_EV_CACHE_ENTRIES 1024

typedef struct {
    const kbs_config *cfg;
    EVP_PKEY *sign_key;
    jws_signer *token_signer; /* kbs_token_signer(sign_key), prepared once */
    EVP_PKEY *admin_pub;      /* NULL: every admin call is refused */
    EVP_PKEY **sim_keys;
    size_t sim_key_count;
    EVP_PKEY **tpm_aks;
    size_t tpm_ak_count;
    kbs_collateral_set *colls;
    size_t coll_count;
    uint8_t master_key[KBS_MASTER_KEY_SIZE];
    bool has_master_key;
    kbs_sessions *sessions; /* NULL when sessions live in the store */
    kbs_doc_cache *docs;
    ev_chain_cache *ev_cache; /* every /attest's verification outcomes (thread-safe) */
} kbs_shared;

struct kbs_ctx {
    kbs_shared *sh;
    bool own_shared;
    kbs_store *store;
    /* Set by the server: audit entries go into @audit_job (handed to the committer with the
     * reply) instead of being written synchronously. */
    bool defer_audit;
    kbs_commit_job audit_job;
};

/* Load everything the configuration names. */
int kbs__shared_new(kbs_shared **out, const kbs_config *cfg, cista_error **err);
void kbs__shared_free(kbs_shared *sh);
/*
 * Verify the evidence of @a (borrowed) as /attest does: with the configured collateral of its
 * TEE (the certificates that came with the evidence first, when any), the shared verification
 * cache, the trusted sim keys / TPM AKs, @report_data (64 bytes, NULL = not checked) and
 * validity time @now (0 = the current time). *out gets the claims (new reference) or an EV_E_*
 * error.
 */
int kbs__verify_evidence(json_t **out, kbs_shared *sh, const kbs_attest_req *a,
                         const uint8_t *report_data, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* A handler context over @sh (borrowed) with its own store connection. */
int kbs__ctx_new(kbs_ctx **out, kbs_shared *sh, bool init_schema, cista_error **err);

#endif
