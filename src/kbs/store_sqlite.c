/*
 * store_sqlite.c - the SQLite backend of the KBS store (see store.h).
 *
 * journal_mode=WAL lets readers run beside the single writer;
 * synchronous=FULL makes every commit durable before it returns (the WAL is
 * fsynced at each commit), so an acknowledged write survives kill -9 and
 * power loss. busy_timeout lets several threads and processes share the
 * file. Every statement is prepared with bound parameters, once per
 * connection: prep() keeps it (SQLITE_PREPARE_PERSISTENT) and the cleanup
 * at the end of its scope only resets it, so the hot paths (resource reads,
 * audit batches) do not re-parse SQL on every call.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "kbs/store_int.h"
#include "util/json.h"
#include "util/util.h"

/* Prepared statements of one connection, keyed by their SQL text (string literals). */
#define SQ_STMT_MAX 32

struct kbs_backend {
    sqlite3 *db;
    size_t max_sessions;
    size_t nstmts;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[SQ_STMT_MAX];
};

static const char *const g_schema =
    "CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (ns, key));"
    "CREATE TABLE IF NOT EXISTS jti (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, nonce BLOB NOT NULL,"
    " tee TEXT NOT NULL, proto INTEGER NOT NULL, hash INTEGER NOT NULL, state INTEGER NOT NULL,"
    " expires INTEGER NOT NULL, token TEXT);"
    "CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);"
    /* No AUTOINCREMENT: rows are never deleted (the triggers below), so the next rowid is
     * already one past the last, and AUTOINCREMENT's sqlite_sequence row would be one more
     * page written and synced with every commit (4 WAL frames per batch of 7 entries -> 3). */
    "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY,"
    " time INTEGER NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS counters (path TEXT PRIMARY KEY, generation INTEGER NOT NULL,"
    " root TEXT NOT NULL, updated INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";

static int db_err(sqlite3 *db, int rc, cista_error **err, const char *what)
{
    int code = (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? -EBUSY
               : rc == SQLITE_FULL                        ? -ENOSPC
               : rc == SQLITE_CONSTRAINT                  ? -EEXIST
                                                          : -EIO;
    return err_set(err, code, "SQLite %s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

static int exec(sqlite3 *db, const char *sql, cista_error **err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int r = err_set(err, rc == SQLITE_BUSY ? -EBUSY : -EIO, "SQLite: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return r;
    }
    return 0;
}

static void sq_close(kbs_backend *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->nstmts; i++)
        sqlite3_finalize(b->stmts[i].st);
    sqlite3_close_v2(b->db);
    free(b);
}

static int sq_open(kbs_backend **out, const kbs_store_opts *o, cista_error **err)
{
    if (!o->sqlite_path)
        return err_set(err, -EINVAL, "no SQLite database path configured");
    sqlite3 *db = NULL;
    int rc =
        sqlite3_open_v2(o->sqlite_path, &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int r = err_set(err, -EIO, "SQLite open %s: %s", o->sqlite_path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return r;
    }
    kbs_backend *b = xzalloc(sizeof(*b));
    b->db = db;
    b->max_sessions = o->max_sessions;
    sqlite3_busy_timeout(db, 10000);
    int r =
        exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", err);
    if (r == 0 && o->init_schema)
        r = exec(db, g_schema, err);
    if (r < 0) {
        sq_close(b);
        return err_wrap(err, "%s", o->sqlite_path);
    }
    *out = b;
    return 0;
}

/*
 * The connection's statement for @sql (a string literal: looked up by address first), prepared
 * on first use. The caller must not hold the same statement twice at once (no call site nests
 * one); _cleanup_stmt_ resets it and clears its bindings when the caller's scope ends, which
 * also ends the statement's read transaction.
 */
static int prep(kbs_backend *b, sqlite3_stmt **st, const char *sql, cista_error **err)
{
    for (size_t i = 0; i < b->nstmts; i++) {
        if (b->stmts[i].sql == sql || !strcmp(b->stmts[i].sql, sql)) {
            *st = b->stmts[i].st;
            return 0;
        }
    }
    if (b->nstmts == SQ_STMT_MAX)
        abort(); /* more distinct statements than this file has: raise SQ_STMT_MAX */
    int rc = sqlite3_prepare_v3(b->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        return db_err(b->db, rc, err, "prepare");
    b->stmts[b->nstmts].sql = sql;
    b->stmts[b->nstmts++].st = *st;
    return 0;
}

static void st_release(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
#define _cleanup_stmt_ __attribute__((cleanup(st_release)))

/* One statement without results (BEGIN, COMMIT, ROLLBACK) through the cache. */
static int run(kbs_backend *b, const char *sql, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, sql, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_err(b->db, rc, err, sql);
    return 0;
}

/* After a failed step inside BEGIN ... COMMIT (the error is already reported). */
static void rollback(kbs_backend *b)
{
    cista_error *e = NULL;
    if (run(b, "ROLLBACK", &e) < 0)
        err_free(e);
}

static int step_done(sqlite3 *db, sqlite3_stmt *st, cista_error **err, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_err(db, rc, err, what);
    return 0;
}

static int sq_kv_put(kbs_backend *b, const char *ns, const char *key, const void *v, size_t size,
                     cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st,
                 "INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3)"
                 " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                 err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 3, v, size, SQLITE_STATIC);
    return step_done(b->db, st, err, "put");
}

static int sq_kv_get(kbs_backend *b, uint8_t **out, size_t *out_size, const char *ns,
                     const char *key, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, "SELECT value FROM kv WHERE ns = ?1 AND key = ?2", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return err_set(err, -ENOENT, "%s %s does not exist", ns, key);
    if (rc != SQLITE_ROW)
        return db_err(b->db, rc, err, "get");
    const void *v = sqlite3_column_blob(st, 0);
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    uint8_t *copy = xmalloc(n + 1);
    if (n)
        memcpy(copy, v, n);
    copy[n] = 0;
    *out = copy;
    *out_size = n;
    return 0;
}

static int sq_kv_delete(kbs_backend *b, const char *ns, const char *key, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, "DELETE FROM kv WHERE ns = ?1 AND key = ?2", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if ((r = step_done(b->db, st, err, "delete")) < 0)
        return r;
    if (sqlite3_changes(b->db) == 0)
        return err_set(err, -ENOENT, "%s %s does not exist", ns, key);
    return 0;
}

static int sq_kv_list(kbs_backend *b, json_t **out, const char *ns, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, "SELECT key FROM kv WHERE ns = ?1 ORDER BY key", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    _cleanup_json_ json_t *a = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(a, json_string((const char *)sqlite3_column_text(st, 0)));
    if (rc != SQLITE_DONE)
        return db_err(b->db, rc, err, "list");
    *out = steal_ptr(&a);
    return 0;
}

static int sq_use_jti(kbs_backend *b, const char *jti, time_t exp, time_t now, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *del = NULL;
    int r = prep(b, &del, "DELETE FROM jti WHERE exp < ?1", err);
    if (r < 0)
        return r;
    sqlite3_bind_int64(del, 1, (sqlite3_int64)now - 600);
    if ((r = step_done(b->db, del, err, "prune jti")) < 0)
        return r;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if ((r = prep(b, &st, "INSERT INTO jti (jti, exp) VALUES (?1, ?2)", err)) < 0)
        return r;
    sqlite3_bind_text(st, 1, jti, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)exp);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT)
        return err_set(err, -EEXIST, "admin token replayed: its jti was already used");
    if (rc != SQLITE_DONE)
        return db_err(b->db, rc, err, "jti");
    return 0;
}

/* At the bound, drop the challenged session that expires first (as the memory table does). */
static int sq_sess_make_room(kbs_backend *b, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *cnt = NULL;
    int r = prep(b, &cnt, "SELECT count(*) FROM sessions", err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(cnt);
    if (rc != SQLITE_ROW)
        return db_err(b->db, rc, err, "count sessions");
    if ((size_t)sqlite3_column_int64(cnt, 0) < b->max_sessions)
        return 0;
    _cleanup_stmt_ sqlite3_stmt *ev = NULL;
    if ((r = prep(b, &ev,
                  "DELETE FROM sessions WHERE id = (SELECT id FROM sessions WHERE state = 0"
                  " ORDER BY expires LIMIT 1)",
                  err)) < 0 ||
        (r = step_done(b->db, ev, err, "evict a session")) < 0)
        return r;
    if (sqlite3_changes(b->db) == 0)
        return err_set(err, -EBUSY,
                       "the session table is full (%zu attested or attesting sessions); retry "
                       "later or raise sessions.max",
                       b->max_sessions);
    return 0;
}

static int sq_sess_add(kbs_backend *b, const kbs_session *s, time_t now, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *del = NULL;
    int r = prep(b, &del, "DELETE FROM sessions WHERE expires < ?1", err);
    if (r < 0)
        return r;
    sqlite3_bind_int64(del, 1, (sqlite3_int64)now);
    if ((r = step_done(b->db, del, err, "prune sessions")) < 0)
        return r;
    if (b->max_sessions && (r = sq_sess_make_room(b, err)) < 0)
        return r;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    r = prep(b, &st,
             "INSERT INTO sessions (id, nonce, tee, proto, hash, state, expires)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
             err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, s->nonce, KBS_NONCE_SIZE, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, s->tee, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, s->proto);
    sqlite3_bind_int(st, 5, s->hash);
    sqlite3_bind_int(st, 6, s->state);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)s->expires);
    return step_done(b->db, st, err, "session add");
}

static int sq_sess_find(kbs_backend *b, kbs_session *out, const char *id, time_t now,
                        cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(
        b, &st, "SELECT nonce, tee, proto, hash, state, expires, token FROM sessions WHERE id = ?1",
        err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return err_set(err, -ENOENT, "unknown session");
    if (rc != SQLITE_ROW)
        return db_err(b->db, rc, err, "session find");
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    if (sqlite3_column_bytes(st, 0) == KBS_NONCE_SIZE)
        memcpy(out->nonce, sqlite3_column_blob(st, 0), KBS_NONCE_SIZE);
    snprintf(out->tee, sizeof(out->tee), "%s", (const char *)sqlite3_column_text(st, 1));
    out->proto = (uint8_t)sqlite3_column_int(st, 2);
    out->hash = (uint8_t)sqlite3_column_int(st, 3);
    out->state = (uint8_t)sqlite3_column_int(st, 4);
    out->expires = (time_t)sqlite3_column_int64(st, 5);
    if (sqlite3_column_type(st, 6) == SQLITE_TEXT)
        out->token = xstrdup((const char *)sqlite3_column_text(st, 6));
    if (out->expires <= now) {
        kbs_session_clear(out);
        return err_set(err, -ETIMEDOUT, "session expired");
    }
    return 0;
}

static int sq_sess_consume(kbs_backend *b, const char *id, time_t now, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st,
                 "UPDATE sessions SET state = 1 WHERE id = ?1 AND state = 0 AND expires > ?2", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
    if ((r = step_done(b->db, st, err, "session consume")) < 0)
        return r;
    if (sqlite3_changes(b->db) != 1)
        return err_set(err, -EALREADY, "the session's nonce was already used or expired");
    return 0;
}

static int sq_sess_set_token(kbs_backend *b, const char *id, const char *token, time_t expires,
                             cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r =
        prep(b, &st, "UPDATE sessions SET state = 2, token = ?2, expires = ?3 WHERE id = ?1", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, token, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)expires);
    return step_done(b->db, st, err, "session token");
}

static int sq_audit_append(kbs_backend *b, const kbs_audit_mac *mac, const char *const *bodies,
                           const time_t *times, size_t count, cista_error **err)
{
    int r = run(b, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    char prev[KBS__AUDIT_HASH_MAX] = "";
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if ((r = prep(b, &st, "SELECT hash FROM audit ORDER BY id DESC LIMIT 1", err)) < 0)
            goto fail;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            snprintf(prev, sizeof(prev), "%s", (const char *)sqlite3_column_text(st, 0));
        else if (rc != SQLITE_DONE) {
            r = db_err(b->db, rc, err, "audit head");
            goto fail;
        }
    }
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if ((r = prep(b, &st, "INSERT INTO audit (time, body, prev, hash) VALUES (?1, ?2, ?3, ?4)",
                      err)) < 0)
            goto fail;
        for (size_t i = 0; i < count; i++) {
            char hash[KBS__AUDIT_HASH_MAX];
            if ((r = kbs__audit_link(hash, mac, prev, (int64_t)times[i], bodies[i], err)) < 0)
                goto fail;
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, (sqlite3_int64)times[i]);
            sqlite3_bind_text(st, 2, bodies[i], -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, prev, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 4, hash, -1, SQLITE_TRANSIENT);
            if ((r = step_done(b->db, st, err, "audit append")) < 0)
                goto fail;
            memcpy(prev, hash, sizeof(hash));
        }
    }
    if ((r = run(b, "COMMIT", err)) < 0)
        goto fail;
    return 0;
fail:
    rollback(b);
    return r;
}

static int sq_audit_list(kbs_backend *b, json_t **out, int64_t after, size_t limit,
                         cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st,
                 "SELECT id, time, body, prev, hash FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
                 err);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    _cleanup_json_ json_t *a = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        long long id = sqlite3_column_int64(st, 0);
        const char *body = (const char *)sqlite3_column_text(st, 2);
        /* A row the listing cannot carry (NULL, a NUL inside, not UTF-8) is an error: skipping
         * it would hide it, and every entry after it, from the chain's verification. */
        json_t *e = body && strlen(body) == (size_t)sqlite3_column_bytes(st, 2)
                        ? json_pack("{s:I,s:I,s:s,s:s,s:s}", "id", (json_int_t)id, "time",
                                    (json_int_t)sqlite3_column_int64(st, 1), "body", body, "prev",
                                    (const char *)sqlite3_column_text(st, 3), "hash",
                                    (const char *)sqlite3_column_text(st, 4))
                        : NULL;
        if (!e)
            return err_set(err, -EBADMSG,
                           "audit entry %lld cannot be read as text (NULL, NUL byte or not "
                           "UTF-8): it was written outside this KBS",
                           id);
        json_array_append_new(a, e);
    }
    if (rc != SQLITE_DONE)
        return db_err(b->db, rc, err, "audit list");
    *out = steal_ptr(&a);
    return 0;
}

static int sq_counter_get(kbs_backend *b, kbs_counter *out, const char *path, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, "SELECT generation, root, updated FROM counters WHERE path = ?1", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return err_set(err, -ENOENT, "counter %s does not exist", path);
    if (rc != SQLITE_ROW)
        return db_err(b->db, rc, err, "counter get");
    return kbs__counter_from_row(out, sqlite3_column_int64(st, 0),
                                 (const char *)sqlite3_column_text(st, 1),
                                 sqlite3_column_int64(st, 2), err);
}

/*
 * One IMMEDIATE transaction (the write lock is taken before the read), so two connections cannot
 * both see the same generation and both advance; synchronous=FULL makes the COMMIT durable.
 */
static int sq_counter_cas(kbs_backend *b, kbs_counter *out_cur, const char *path, int64_t expected,
                          int64_t gen, const char *root_hex, int64_t now, cista_error **err)
{
    int r = run(b, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    cista_error *e2 = NULL;
    r = sq_counter_get(b, out_cur, path, &e2);
    if (r == -ENOENT) {
        memset(out_cur, 0, sizeof(*out_cur));
        r = 0;
    }
    if (r < 0) {
        _cleanup_free_ char *why = err_str(e2);
        err_free(e2);
        r = err_set(err, r, "%s", why);
        goto fail;
    }
    err_free(e2);
    if ((int64_t)out_cur->generation != expected) {
        r = err_set(err, -ESTALE, "counter %s is at generation %llu, not the expected %lld", path,
                    (unsigned long long)out_cur->generation, (long long)expected);
        goto fail;
    }
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if ((r = prep(b, &st,
                      "INSERT INTO counters (path, generation, root, updated) VALUES (?1, ?2, ?3, "
                      "?4) ON CONFLICT (path) DO UPDATE SET generation = excluded.generation, root "
                      "= excluded.root, updated = excluded.updated",
                      err)) < 0)
            goto fail;
        sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, gen);
        sqlite3_bind_text(st, 3, root_hex, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        if ((r = step_done(b->db, st, err, "counter advance")) < 0)
            goto fail;
    }
    if ((r = run(b, "COMMIT", err)) < 0)
        goto fail;
    return 0;
fail:
    rollback(b);
    return r;
}

static int sq_counter_set(kbs_backend *b, const char *path, int64_t gen, const char *root_hex,
                          int64_t now, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st,
                 "INSERT INTO counters (path, generation, root, updated) VALUES (?1, ?2, ?3, ?4)"
                 " ON CONFLICT (path) DO UPDATE SET generation = excluded.generation,"
                 " root = excluded.root, updated = excluded.updated",
                 err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, gen);
    sqlite3_bind_text(st, 3, root_hex, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    return step_done(b->db, st, err, "counter set");
}

static int sq_counter_delete(kbs_backend *b, const char *path, cista_error **err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = prep(b, &st, "DELETE FROM counters WHERE path = ?1", err);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    if ((r = step_done(b->db, st, err, "counter delete")) < 0)
        return r;
    if (sqlite3_changes(b->db) == 0)
        return err_set(err, -ENOENT, "counter %s does not exist", path);
    return 0;
}

const kbs_backend_ops kbs__sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .kv_put = sq_kv_put,
    .kv_get = sq_kv_get,
    .kv_delete = sq_kv_delete,
    .kv_list = sq_kv_list,
    .use_jti = sq_use_jti,
    .sess_add = sq_sess_add,
    .sess_find = sq_sess_find,
    .sess_consume = sq_sess_consume,
    .sess_set_token = sq_sess_set_token,
    .audit_append = sq_audit_append,
    .audit_list = sq_audit_list,
    .counter_get = sq_counter_get,
    .counter_cas = sq_counter_cas,
    .counter_set = sq_counter_set,
    .counter_delete = sq_counter_delete,
};
