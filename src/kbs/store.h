/*
 * store.h - the KBS's persistent state behind one interface with two
 * backends: SQLite (the default; WAL journal, synchronous=FULL so every
 * acknowledged write survives kill -9 or power loss, busy timeout for
 * concurrent writers) and PostgreSQL through libpq (several KBS replicas
 * share one database).
 *
 * What is stored: resources (encrypted at rest with AES-256-GCM under the
 * master key, AAD = the resource path, so a value moved to another path
 * fails to decrypt), documents (release policies, reference values), RCAR
 * sessions (when shared between replicas), used admin token ids (replay
 * protection) and the audit log. The audit log is append-only: this module
 * has no code path that updates or deletes an entry, and every entry holds
 * its predecessor's hash and its own, an HMAC under a key derived from the
 * master key (a keyed hash chain), so kbs_store_audit_verify() detects an
 * entry edited, inserted, removed or reordered by anyone without the master
 * key, even one who recomputes the chain. It cannot detect the newest
 * entries removed, or the whole database restored from an older copy: that
 * needs an anchor outside the database. Entries written by a cista before
 * keyed chains (unkeyed SHA-256) are accepted only as a prefix an
 * administrator adopted (kbs_store_audit_adopt(); store.c explains why
 * nothing weaker is sound). A store without a master key writes unkeyed
 * entries, as before, and cannot verify keyed ones. Monotonic counters
 * (rollback anchors: {generation, root}) are advanced only by an atomic
 * compare-and-set that is durable when the call returns.
 *
 * Thread-safety: a kbs_store is one database connection; use one per
 * thread. Several stores (threads, processes, replicas) may share a
 * database. Trust assumption: the database is outside the TEE but inside
 * the operator's trust; what it returns is still checked (GCM tags, document
 * tags, the keyed hash chain, sizes).
 */
#ifndef CISTA_KBS_STORE_H
#define CISTA_KBS_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kbs/kbs.h"
#include "util/err.h"

#define KBS_MASTER_KEY_SIZE 32

typedef struct kbs_store kbs_store;

typedef struct {
    const char *kind;          /* "sqlite" (default) or "postgres" */
    const char *sqlite_path;   /* sqlite */
    const char *pg_dsn;        /* postgres: libpq connection string */
    const uint8_t *master_key; /* KBS_MASTER_KEY_SIZE bytes, borrowed; NULL: resources unusable */
    bool init_schema;          /* create tables if missing */
    /* Bound on stored sessions (0: none). When it is reached, the session that has waited
     * longest for its /attest gives way; attested ones never do. Checked before each add, so
     * replicas adding at the same moment may pass it by a few. */
    size_t max_sessions;
} kbs_store_opts;

int kbs_store_open(kbs_store **out, const kbs_store_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));
void kbs_store_close(kbs_store *s);
void kbs__store_closep(kbs_store **s);
#define _cleanup_store_ __attribute__((cleanup(kbs__store_closep)))

/* Read the master key file (exactly 32 bytes, or 64 hex digits; must not be group/world readable).
 */
int kbs_master_key_load(uint8_t out[KBS_MASTER_KEY_SIZE], const char *path, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- resources (values are secrets) ---- */
int kbs_store_put_resource(kbs_store *s, const char *path, const void *data, size_t size,
                           cista_error **err) __attribute__((warn_unused_result));
/* *out is a secret: free with crypto_free_secret(*out, *out_size). -ENOENT when missing. */
int kbs_store_get_resource(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                           cista_error **err) __attribute__((warn_unused_result));
/*
 * kbs_store_get_resource() in two steps, for a cache of the stored form: the sealed value as
 * stored (encrypted and authenticated, so not itself a secret; -ENOENT when missing; caller
 * frees), and its decryption (*out as kbs_store_get_resource() gives it).
 */
int kbs_store_get_sealed(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                         cista_error **err) __attribute__((warn_unused_result));
int kbs_store_unseal(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                     const uint8_t *sealed, size_t sealed_size, cista_error **err)
    __attribute__((warn_unused_result));
int kbs_store_delete_resource(kbs_store *s, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
/* Sorted array of resource paths. New reference. */
int kbs_store_list_resources(kbs_store *s, json_t **out, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- documents: @ns is "policy" or "refvals" ---- */
int kbs_store_set_doc(kbs_store *s, const char *ns, const char *key, const char *text,
                      cista_error **err) __attribute__((warn_unused_result));
/* -ENOENT when missing. Caller frees *out. */
int kbs_store_get_doc(kbs_store *s, char **out, const char *ns, const char *key, cista_error **err)
    __attribute__((warn_unused_result));
int kbs_store_delete_doc(kbs_store *s, const char *ns, const char *key, cista_error **err)
    __attribute__((warn_unused_result));
int kbs_store_list_docs(kbs_store *s, json_t **out, const char *ns, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- admin token replay protection ---- */
/* Record @jti (valid until @exp); -EEXIST when it was seen before. Old ids are pruned. */
int kbs_store_use_jti(kbs_store *s, const char *jti, time_t exp, time_t now, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- shared sessions (replicas) ---- */
int kbs_store_session_add(kbs_store *s, const kbs_session *sess, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
int kbs_store_session_find(kbs_store *s, kbs_session *out, const char *id, time_t now,
                           cista_error **err) __attribute__((warn_unused_result));
int kbs_store_session_consume(kbs_store *s, const char *id, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
int kbs_store_session_set_token(kbs_store *s, const char *id, const char *token, time_t expires,
                                cista_error **err) __attribute__((warn_unused_result));

/* ---- monotonic counters (rollback anchors) ---- */
#define KBS_COUNTER_ROOT_MAX 64       /* bytes of the opaque root */
#define KBS_COUNTER_GEN_MAX INT64_MAX /* generations are stored as signed 64-bit */

typedef struct {
    uint64_t generation;
    uint8_t root[KBS_COUNTER_ROOT_MAX];
    size_t root_size;
    int64_t updated; /* Unix time of the last change */
} kbs_counter;

/* The counter at resource path @path; -ENOENT when it does not exist. */
int kbs_store_counter_get(kbs_store *s, kbs_counter *out, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Compare-and-set, atomic against every other store on the same database (other threads,
 * processes, replicas): set {@generation, @root} only when the stored generation equals
 * @expected (a missing counter counts as generation 0) and @generation > @expected. Durable
 * before it returns 0. On a conflict returns -ESTALE and fills *out_current (generation 0,
 * updated 0 when the counter does not exist). @root is borrowed.
 */
int kbs_store_counter_cas(kbs_store *s, kbs_counter *out_current, const char *path,
                          uint64_t expected, uint64_t generation, const uint8_t *root,
                          size_t root_size, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* Admin: create or overwrite (also backwards) the counter at @path. */
int kbs_store_counter_set(kbs_store *s, const char *path, uint64_t generation, const uint8_t *root,
                          size_t root_size, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* Admin: delete; -ENOENT when missing. */
int kbs_store_counter_delete(kbs_store *s, const char *path, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- audit log ---- */
typedef struct {
    const char *event;         /* "auth", "attest", "resource", "admin" */
    const char *tee;           /* may be NULL */
    const char *claims_digest; /* hex SHA-256 of the JCS claims, may be NULL */
    const char *resource;      /* may be NULL */
    const char *decision;      /* "allow", "deny", "error" */
    const char *reason;        /* never a secret */
    const char *peer;          /* may be NULL */
} kbs_audit_entry;

int kbs_store_audit_append(kbs_store *s, const kbs_audit_entry *e, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* The canonical entry text (compact JSON, sorted keys) of @e; bytes of its strings that are
 * not UTF-8 become U+FFFD. Caller frees. */
char *kbs_store_audit_body(const kbs_audit_entry *e);
/*
 * Group commit: append @count entry texts (from kbs_store_audit_body()) with their times, in
 * order, in one transaction — one fsync for the whole batch. All or nothing.
 */
int kbs_store_audit_append_bodies(kbs_store *s, const char *const *bodies, const time_t *times,
                                  size_t count, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Entries with id > @after, oldest first, at most @limit: an array of
 * {"id", "time", "entry": {...}, "prev", "hash"}. New reference.
 */
int kbs_store_audit_list(kbs_store *s, json_t **out, int64_t after, size_t limit, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Walk the whole chain: 0 and the number of entries when it verifies; -EBADMSG naming the first
 * entry that does not (modified, removed or reordered, unkeyed after keyed entries) or an unkeyed
 * prefix that was never adopted (the message gives the hash to adopt); -ENOKEY when the log holds
 * keyed entries and the store has no master key.
 */
int kbs_store_audit_verify(kbs_store *s, size_t *out_count, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Adopt the log's unkeyed prefix (entries written by a cista before keyed chains), once, after an
 * administrator reviewed it: @head (borrowed) must be the hash of its last entry, as the verify
 * message shows. Stores a record tagged under the master key; from then on the prefix verifies
 * and must end exactly there. Idempotent for the same @head; -EINVAL for another head, an
 * already adopted prefix or a log without unkeyed entries; -ENOKEY without the master key.
 */
int kbs_store_audit_adopt(kbs_store *s, const char *head, cista_error **err)
    __attribute__((warn_unused_result));

#endif
