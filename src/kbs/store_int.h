/*
 * store_int.h - the backend vtable shared by store.c (encryption, audit
 * chain, argument checks) and the SQLite and PostgreSQL backends. Values
 * handed to a backend are already encrypted; the backends only move bytes.
 */
#ifndef CISTA_KBS_STORE_INT_H
#define CISTA_KBS_STORE_INT_H

#include "kbs/store.h"

typedef struct kbs_backend kbs_backend;

/* How audit entries are chained: opaque outside store.c (it holds the chain's key). */
typedef struct kbs_audit_mac kbs_audit_mac;

/* Room for an entry's hash string and its NUL: "hmac:" and 64 hex digits when keyed. */
#define KBS__AUDIT_HASH_MAX 72

typedef struct {
    const char *name;
    int (*open)(kbs_backend **out, const kbs_store_opts *o, cista_error **err);
    void (*close)(kbs_backend *b);
    /* key/value namespaces: "resource", "policy", "refvals" */
    int (*kv_put)(kbs_backend *b, const char *ns, const char *key, const void *v, size_t size,
                  cista_error **err);
    int (*kv_get)(kbs_backend *b, uint8_t **out, size_t *out_size, const char *ns, const char *key,
                  cista_error **err);
    int (*kv_delete)(kbs_backend *b, const char *ns, const char *key, cista_error **err);
    int (*kv_list)(kbs_backend *b, json_t **out, const char *ns, cista_error **err);
    int (*use_jti)(kbs_backend *b, const char *jti, time_t exp, time_t now, cista_error **err);
    int (*sess_add)(kbs_backend *b, const kbs_session *s, time_t now, cista_error **err);
    int (*sess_find)(kbs_backend *b, kbs_session *out, const char *id, time_t now,
                     cista_error **err);
    int (*sess_consume)(kbs_backend *b, const char *id, time_t now, cista_error **err);
    int (*sess_set_token)(kbs_backend *b, const char *id, const char *token, time_t expires,
                          cista_error **err);
    /*
     * Append @count entries (@bodies[i] at @times[i]) in order after the current last entry,
     * in ONE transaction (one durable commit; the backend locks the chain head), each hashed
     * with kbs__audit_link(@mac, ...) on its predecessor's stored hash.
     */
    int (*audit_append)(kbs_backend *b, const kbs_audit_mac *mac, const char *const *bodies,
                        const time_t *times, size_t count, cista_error **err);
    int (*audit_list)(kbs_backend *b, json_t **out, int64_t after, size_t limit, cista_error **err);
    /* counters: @root_hex is lower-case hex (checked by store.c); -ENOENT when missing */
    int (*counter_get)(kbs_backend *b, kbs_counter *out, const char *path, cista_error **err);
    /*
     * Atomically: when the stored generation (0 if missing) == @expected, store @gen (> @expected,
     * checked by store.c), @root_hex, @now and return 0 once durable; otherwise -ESTALE with
     * *out_cur filled.
     */
    int (*counter_cas)(kbs_backend *b, kbs_counter *out_cur, const char *path, int64_t expected,
                       int64_t gen, const char *root_hex, int64_t now, cista_error **err);
    int (*counter_set)(kbs_backend *b, const char *path, int64_t gen, const char *root_hex,
                       int64_t now, cista_error **err);
    int (*counter_delete)(kbs_backend *b, const char *path, cista_error **err);
} kbs_backend_ops;

extern const kbs_backend_ops kbs__sqlite_ops;
extern const kbs_backend_ops kbs__pg_ops;

/* Fill @out from a row: @root_hex must be even-length lower-case hex of at most
 * KBS_COUNTER_ROOT_MAX bytes, @gen >= 0; -EBADMSG otherwise. */
int kbs__counter_from_row(kbs_counter *out, int64_t gen, const char *root_hex, int64_t updated,
                          cista_error **err);

/*
 * The hash to store for the entry (@time, @body) after the entry whose stored hash is @prev ("" for
 * the first): keyed under @mac when the store has a master key, unkeyed otherwise (store.c).
 * -ENOKEY when @mac is unkeyed and @prev is keyed: that entry would break the chain.
 */
int kbs__audit_link(char out[KBS__AUDIT_HASH_MAX], const kbs_audit_mac *mac, const char *prev,
                    int64_t time, const char *body, cista_error **err)
    __attribute__((warn_unused_result));

#endif
