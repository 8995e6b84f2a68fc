/*
 * store_pg.c - the PostgreSQL backend of the KBS store (see store.h), over
 * libpq with parameterised statements only. Several KBS replicas share the
 * database: schema creation runs under an advisory lock, the audit chain is
 * extended under a transaction-scoped advisory lock so concurrent appends
 * from different replicas stay one chain, and single-use nonces are consumed
 * by one conditional UPDATE, as are counters (compare-and-set on the
 * generation, so two replicas cannot both advance from the same value). Commits are durable
 * (synchronous_commit on, the server default) before a call returns. A trigger refuses UPDATE and
 * DELETE on the audit table. libpq is opened on first use, not linked (see below).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbs/store_int.h"
#include "util/dynlib.h"
#include "util/json.h"
#include "util/util.h"

#define LOCK_SCHEMA "7306421001"
#define LOCK_AUDIT "7306421002"

struct kbs_backend {
    PGconn *conn;
    size_t max_sessions;
};

/*
 * libpq is opened on the first pg_open() (util/dynlib.h), not linked: it brings krb5, ldap and
 * gnutls into the process, and only a KBS on PostgreSQL needs it. Every call goes through this
 * table, whose entries have the prototypes of libpq-fe.h; it is filled before any backend exists,
 * so the functions below that take a backend can use it without checking.
 */
#define PQ_FUNCS(X)                                                                                \
    X(PQclear)                                                                                     \
    X(PQcmdTuples)                                                                                 \
    X(PQconnectdb)                                                                                 \
    X(PQerrorMessage)                                                                              \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQfinish)                                                                                    \
    X(PQgetisnull)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQgetvalue)                                                                                  \
    X(PQntuples)                                                                                   \
    X(PQreset)                                                                                     \
    X(PQresultErrorField)                                                                          \
    X(PQresultErrorMessage)                                                                        \
    X(PQresultStatus)                                                                              \
    X(PQstatus)                                                                                    \
    X(PQtransactionStatus)

#define PQ_DECLARE(f) __typeof__(f) *f;
static struct {
    PQ_FUNCS(PQ_DECLARE)
} g_pq;
#undef PQ_DECLARE

static int bind_libpq(dynlib *lib, cista_error **err)
{
    void *p = NULL;
    int r;
#define PQ_RESOLVE(f)                                                                              \
    if ((r = dynlib_sym(&p, lib, #f, err)) < 0)                                                    \
        return r;                                                                                  \
    g_pq.f = (__typeof__(g_pq.f))p;
    PQ_FUNCS(PQ_RESOLVE)
#undef PQ_RESOLVE
    return 0;
}

static dynlib g_libpq = DYNLIB_INIT("libpq.so.5", "PostgreSQL store", "libpq5", bind_libpq);

static const char *const g_schema =
    "CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BYTEA NOT NULL,"
    " PRIMARY KEY (ns, key));"
    "CREATE TABLE IF NOT EXISTS jti (jti TEXT PRIMARY KEY, exp BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, nonce BYTEA NOT NULL,"
    " tee TEXT NOT NULL, proto INTEGER NOT NULL, hash INTEGER NOT NULL, state INTEGER NOT NULL,"
    " expires BIGINT NOT NULL, token TEXT);"
    "CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);"
    "CREATE TABLE IF NOT EXISTS audit (id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL,"
    " body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS counters (path TEXT PRIMARY KEY, generation BIGINT NOT NULL,"
    " root TEXT NOT NULL, updated BIGINT NOT NULL);"
    "CREATE OR REPLACE FUNCTION cista_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;"
    "CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit"
    " FOR EACH ROW EXECUTE FUNCTION cista_audit_append_only();";

static void res_clear(PGresult **r)
{
    g_pq.PQclear(*r);
}
#define _cleanup_res_ __attribute__((cleanup(res_clear)))

static int pg_fail(kbs_backend *b, PGresult *res, const char *what, cista_error **err)
{
    const char *state = res ? g_pq.PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? g_pq.PQresultErrorMessage(res) : g_pq.PQerrorMessage(b->conn);
    int code = -EIO;
    if (state && !strcmp(state, "23505"))
        code = -EEXIST;
    else if (g_pq.PQstatus(b->conn) != CONNECTION_OK)
        code = -ECONNRESET;
    _cleanup_free_ char *m = xstrdup(msg ? msg : "?");
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        m[--n] = 0;
    return err_set(err, code, "PostgreSQL %s: %s", what, m);
}

/* Run @sql; params are text unless a length is given (then binary). */
static int run(kbs_backend *b, PGresult **out, const char *sql, int n, const char *const *vals,
               const int *lens, int binary_result, const char *what, cista_error **err)
{
    int fmts[8] = {0};
    for (int i = 0; i < n && i < 8; i++)
        fmts[i] = lens && lens[i] >= 0 ? 1 : 0;
    int attempt = 0;
    /*
     * Inside BEGIN ... COMMIT a lost connection lost the transaction: retrying this one statement
     * on a new session would run it outside it (autocommitted, without the transaction's locks),
     * and a retried COMMIT "succeeds" with nothing to commit. Only statements outside a
     * transaction are retried; the caller sees the failure of the others.
     */
    PGTransactionStatusType ts = g_pq.PQtransactionStatus(b->conn);
    bool in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR || ts == PQTRANS_ACTIVE;
    for (;;) {
        PGresult *res = g_pq.PQexecParams(b->conn, sql, n, NULL, vals, lens, fmts, binary_result);
        ExecStatusType st = res ? g_pq.PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (out)
                *out = res;
            else
                g_pq.PQclear(res);
            return 0;
        }
        /* A dropped connection (server restart) is retried once after a reset. */
        if (g_pq.PQstatus(b->conn) != CONNECTION_OK && !in_tx && attempt++ == 0) {
            g_pq.PQclear(res);
            g_pq.PQreset(b->conn);
            if (g_pq.PQstatus(b->conn) == CONNECTION_OK)
                continue;
            return pg_fail(b, NULL, what, err);
        }
        int r = pg_fail(b, res, what, err);
        g_pq.PQclear(res);
        return r;
    }
}

static void pg_close(kbs_backend *b)
{
    if (!b)
        return;
    g_pq.PQfinish(b->conn);
    free(b);
}

static int pg_open(kbs_backend **out, const kbs_store_opts *o, cista_error **err)
{
    if (!o->pg_dsn)
        return err_set(err, -EINVAL, "no PostgreSQL DSN configured (store.dsn)");
    int r = dynlib_load(&g_libpq, err);
    if (r < 0)
        return r;
    kbs_backend *b = xzalloc(sizeof(*b));
    b->max_sessions = o->max_sessions;
    b->conn = g_pq.PQconnectdb(o->pg_dsn);
    if (!b->conn || g_pq.PQstatus(b->conn) != CONNECTION_OK) {
        _cleanup_free_ char *m = xstrdup(b->conn ? g_pq.PQerrorMessage(b->conn) : "out of memory");
        size_t n = strlen(m);
        while (n && m[n - 1] == '\n')
            m[--n] = 0;
        pg_close(b);
        /* The DSN may hold a password: it is not repeated here. */
        return err_set(err, -ECONNREFUSED, "PostgreSQL connect: %s", m);
    }
    r = run(b, NULL, "SET synchronous_commit = on", 0, NULL, NULL, 0, "settings", err);
    if (r == 0 && o->init_schema) {
        r = run(b, NULL, "SELECT pg_advisory_lock(" LOCK_SCHEMA ")", 0, NULL, NULL, 0, "lock", err);
        if (r == 0) {
            PGresult *res = g_pq.PQexec(b->conn, g_schema);
            if (g_pq.PQresultStatus(res) != PGRES_COMMAND_OK)
                r = pg_fail(b, res, "schema", err);
            g_pq.PQclear(res);
            cista_error *e2 = NULL;
            (void)run(b, NULL, "SELECT pg_advisory_unlock(" LOCK_SCHEMA ")", 0, NULL, NULL, 0,
                      "unlock", &e2);
            err_free(e2);
        }
    }
    if (r < 0) {
        pg_close(b);
        return r;
    }
    *out = b;
    return 0;
}

static int pg_kv_put(kbs_backend *b, const char *ns, const char *key, const void *v, size_t size,
                     cista_error **err)
{
    const char *vals[3] = {ns, key, v};
    int lens[3] = {-1, -1, (int)size};
    return run(b, NULL,
               "INSERT INTO kv (ns, key, value) VALUES ($1, $2, $3)"
               " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
               3, vals, lens, 0, "put", err);
}

static int pg_kv_get(kbs_backend *b, uint8_t **out, size_t *out_size, const char *ns,
                     const char *key, cista_error **err)
{
    const char *vals[2] = {ns, key};
    _cleanup_res_ PGresult *res = NULL;
    int r = run(b, &res, "SELECT value FROM kv WHERE ns = $1 AND key = $2", 2, vals, NULL, 1, "get",
                err);
    if (r < 0)
        return r;
    if (g_pq.PQntuples(res) == 0)
        return err_set(err, -ENOENT, "%s %s does not exist", ns, key);
    size_t n = (size_t)g_pq.PQgetlength(res, 0, 0);
    uint8_t *copy = xmalloc(n + 1);
    memcpy(copy, g_pq.PQgetvalue(res, 0, 0), n);
    copy[n] = 0;
    *out = copy;
    *out_size = n;
    return 0;
}

static int pg_kv_delete(kbs_backend *b, const char *ns, const char *key, cista_error **err)
{
    const char *vals[2] = {ns, key};
    _cleanup_res_ PGresult *res = NULL;
    int r =
        run(b, &res, "DELETE FROM kv WHERE ns = $1 AND key = $2", 2, vals, NULL, 0, "delete", err);
    if (r < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(res), "0") == 0)
        return err_set(err, -ENOENT, "%s %s does not exist", ns, key);
    return 0;
}

static int pg_kv_list(kbs_backend *b, json_t **out, const char *ns, cista_error **err)
{
    const char *vals[1] = {ns};
    _cleanup_res_ PGresult *res = NULL;
    int r = run(b, &res, "SELECT key FROM kv WHERE ns = $1 ORDER BY key COLLATE \"C\"", 1, vals,
                NULL, 0, "list", err);
    if (r < 0)
        return r;
    json_t *a = json_array();
    for (int i = 0; i < g_pq.PQntuples(res); i++)
        json_array_append_new(a, json_string(g_pq.PQgetvalue(res, i, 0)));
    *out = a;
    return 0;
}

static int pg_use_jti(kbs_backend *b, const char *jti, time_t exp, time_t now, cista_error **err)
{
    char e[32], old[32];
    snprintf(e, sizeof(e), "%lld", (long long)exp);
    snprintf(old, sizeof(old), "%lld", (long long)now - 600);
    const char *v1[1] = {old};
    int r = run(b, NULL, "DELETE FROM jti WHERE exp < $1", 1, v1, NULL, 0, "prune jti", err);
    if (r < 0)
        return r;
    const char *v2[2] = {jti, e};
    _cleanup_res_ PGresult *res = NULL;
    r = run(b, &res, "INSERT INTO jti (jti, exp) VALUES ($1, $2) ON CONFLICT DO NOTHING", 2, v2,
            NULL, 0, "jti", err);
    if (r < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(res), "1") != 0)
        return err_set(err, -EEXIST, "admin token replayed: its jti was already used");
    return 0;
}

/* At the bound, drop the challenged session that expires first (as the memory table does). */
static int pg_sess_make_room(kbs_backend *b, cista_error **err)
{
    _cleanup_res_ PGresult *res = NULL;
    int r = run(b, &res, "SELECT count(*)::text FROM sessions", 0, NULL, NULL, 0, "count sessions",
                err);
    if (r < 0)
        return r;
    if (strtoull(g_pq.PQgetvalue(res, 0, 0), NULL, 10) < b->max_sessions)
        return 0;
    _cleanup_res_ PGresult *del = NULL;
    if ((r = run(b, &del,
                 "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE state = 0"
                 " ORDER BY expires LIMIT 1)",
                 0, NULL, NULL, 0, "evict a session", err)) < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(del), "0") == 0)
        return err_set(err, -EBUSY,
                       "the session table is full (%zu attested or attesting sessions); retry "
                       "later or raise sessions.max",
                       b->max_sessions);
    return 0;
}

static int pg_sess_add(kbs_backend *b, const kbs_session *s, time_t now, cista_error **err)
{
    char t[32], p[8], h[8], st[8], ex[32];
    snprintf(t, sizeof(t), "%lld", (long long)now);
    const char *v1[1] = {t};
    int r = run(b, NULL, "DELETE FROM sessions WHERE expires < $1", 1, v1, NULL, 0,
                "prune sessions", err);
    if (r < 0 || (b->max_sessions && (r = pg_sess_make_room(b, err)) < 0))
        return r;
    snprintf(p, sizeof(p), "%d", s->proto);
    snprintf(h, sizeof(h), "%d", s->hash);
    snprintf(st, sizeof(st), "%d", s->state);
    snprintf(ex, sizeof(ex), "%lld", (long long)s->expires);
    const char *vals[7] = {s->id, (const char *)s->nonce, s->tee, p, h, st, ex};
    int lens[7] = {-1, KBS_NONCE_SIZE, -1, -1, -1, -1, -1};
    return run(b, NULL,
               "INSERT INTO sessions (id, nonce, tee, proto, hash, state, expires)"
               " VALUES ($1, $2, $3, $4, $5, $6, $7)",
               7, vals, lens, 0, "session add", err);
}

static int pg_sess_find(kbs_backend *b, kbs_session *out, const char *id, time_t now,
                        cista_error **err)
{
    const char *vals[1] = {id};
    _cleanup_res_ PGresult *res = NULL;
    /* Binary results: integers arrive big-endian; read them as text instead via casts. */
    int r = run(b, &res,
                "SELECT nonce, tee, proto::text, hash::text, state::text, expires::text, token"
                " FROM sessions WHERE id = $1",
                1, vals, NULL, 1, "session find", err);
    if (r < 0)
        return r;
    if (g_pq.PQntuples(res) == 0)
        return err_set(err, -ENOENT, "unknown session");
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    if (g_pq.PQgetlength(res, 0, 0) == KBS_NONCE_SIZE)
        memcpy(out->nonce, g_pq.PQgetvalue(res, 0, 0), KBS_NONCE_SIZE);
    snprintf(out->tee, sizeof(out->tee), "%.*s", g_pq.PQgetlength(res, 0, 1),
             g_pq.PQgetvalue(res, 0, 1));
    _cleanup_free_ char *pr =
        xstrndup(g_pq.PQgetvalue(res, 0, 2), (size_t)g_pq.PQgetlength(res, 0, 2));
    _cleanup_free_ char *ha =
        xstrndup(g_pq.PQgetvalue(res, 0, 3), (size_t)g_pq.PQgetlength(res, 0, 3));
    _cleanup_free_ char *sa =
        xstrndup(g_pq.PQgetvalue(res, 0, 4), (size_t)g_pq.PQgetlength(res, 0, 4));
    _cleanup_free_ char *ex =
        xstrndup(g_pq.PQgetvalue(res, 0, 5), (size_t)g_pq.PQgetlength(res, 0, 5));
    out->proto = (uint8_t)atoi(pr);
    out->hash = (uint8_t)atoi(ha);
    out->state = (uint8_t)atoi(sa);
    out->expires = (time_t)strtoll(ex, NULL, 10);
    if (!g_pq.PQgetisnull(res, 0, 6))
        out->token = xstrndup(g_pq.PQgetvalue(res, 0, 6), (size_t)g_pq.PQgetlength(res, 0, 6));
    if (out->expires <= now) {
        kbs_session_clear(out);
        return err_set(err, -ETIMEDOUT, "session expired");
    }
    return 0;
}

static int pg_sess_consume(kbs_backend *b, const char *id, time_t now, cista_error **err)
{
    char t[32];
    snprintf(t, sizeof(t), "%lld", (long long)now);
    const char *vals[2] = {id, t};
    _cleanup_res_ PGresult *res = NULL;
    int r =
        run(b, &res, "UPDATE sessions SET state = 1 WHERE id = $1 AND state = 0 AND expires > $2",
            2, vals, NULL, 0, "session consume", err);
    if (r < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(res), "1") != 0)
        return err_set(err, -EALREADY, "the session's nonce was already used or expired");
    return 0;
}

static int pg_sess_set_token(kbs_backend *b, const char *id, const char *token, time_t expires,
                             cista_error **err)
{
    char ex[32];
    snprintf(ex, sizeof(ex), "%lld", (long long)expires);
    const char *vals[3] = {id, token, ex};
    return run(b, NULL, "UPDATE sessions SET state = 2, token = $2, expires = $3 WHERE id = $1", 3,
               vals, NULL, 0, "session token", err);
}

static int pg_audit_append(kbs_backend *b, const kbs_audit_mac *mac, const char *const *bodies,
                           const time_t *times, size_t count, cista_error **err)
{
    /* READ COMMITTED whatever the database's default: under REPEATABLE READ the snapshot
     * predates the advisory lock, and two replicas could both extend the same head */
    int r = run(b, NULL, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, 0, "begin", err);
    if (r < 0)
        return r;
    char prev[KBS__AUDIT_HASH_MAX] = "";
    {
        _cleanup_res_ PGresult *res = NULL;
        if ((r = run(b, NULL, "SELECT pg_advisory_xact_lock(" LOCK_AUDIT ")", 0, NULL, NULL, 0,
                     "audit lock", err)) < 0)
            goto fail;
        if ((r = run(b, &res, "SELECT hash FROM audit ORDER BY id DESC LIMIT 1", 0, NULL, NULL, 0,
                     "audit head", err)) < 0)
            goto fail;
        if (g_pq.PQntuples(res) == 1)
            snprintf(prev, sizeof(prev), "%s", g_pq.PQgetvalue(res, 0, 0));
    }
    for (size_t i = 0; i < count; i++) {
        char hash[KBS__AUDIT_HASH_MAX], t[32];
        if ((r = kbs__audit_link(hash, mac, prev, (int64_t)times[i], bodies[i], err)) < 0)
            goto fail;
        snprintf(t, sizeof(t), "%lld", (long long)times[i]);
        const char *vals[4] = {t, bodies[i], prev, hash};
        if ((r = run(b, NULL, "INSERT INTO audit (time, body, prev, hash) VALUES ($1, $2, $3, $4)",
                     4, vals, NULL, 0, "audit append", err)) < 0)
            goto fail;
        memcpy(prev, hash, sizeof(hash));
    }
    if ((r = run(b, NULL, "COMMIT", 0, NULL, NULL, 0, "commit", err)) < 0)
        goto fail;
    return 0;
fail:
    g_pq.PQclear(g_pq.PQexec(b->conn, "ROLLBACK"));
    return r;
}

static int pg_audit_list(kbs_backend *b, json_t **out, int64_t after, size_t limit,
                         cista_error **err)
{
    char a[32], l[32];
    snprintf(a, sizeof(a), "%lld", (long long)after);
    snprintf(l, sizeof(l), "%zu", limit);
    const char *vals[2] = {a, l};
    _cleanup_res_ PGresult *res = NULL;
    int r = run(b, &res,
                "SELECT id, time, body, prev, hash FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
                2, vals, NULL, 0, "audit list", err);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *arr = json_array();
    for (int i = 0; i < g_pq.PQntuples(res); i++) {
        long long id = strtoll(g_pq.PQgetvalue(res, i, 0), NULL, 10);
        /* as in the SQLite backend: a row that cannot be carried is an error, never skipped */
        json_t *e = json_pack("{s:I,s:I,s:s,s:s,s:s}", "id", (json_int_t)id, "time",
                              (json_int_t)strtoll(g_pq.PQgetvalue(res, i, 1), NULL, 10), "body",
                              g_pq.PQgetvalue(res, i, 2), "prev", g_pq.PQgetvalue(res, i, 3),
                              "hash", g_pq.PQgetvalue(res, i, 4));
        if (!e)
            return err_set(err, -EBADMSG,
                           "audit entry %lld cannot be read as UTF-8 text: it was written "
                           "outside this KBS",
                           id);
        json_array_append_new(arr, e);
    }
    *out = steal_ptr(&arr);
    return 0;
}

static int pg_counter_get(kbs_backend *b, kbs_counter *out, const char *path, cista_error **err)
{
    _cleanup_res_ PGresult *res = NULL;
    const char *vals[1] = {path};
    int r = run(b, &res, "SELECT generation, root, updated FROM counters WHERE path = $1", 1, vals,
                NULL, 0, "counter get", err);
    if (r < 0)
        return r;
    if (g_pq.PQntuples(res) != 1)
        return err_set(err, -ENOENT, "counter %s does not exist", path);
    return kbs__counter_from_row(out, strtoll(g_pq.PQgetvalue(res, 0, 0), NULL, 10),
                                 g_pq.PQgetvalue(res, 0, 1),
                                 strtoll(g_pq.PQgetvalue(res, 0, 2), NULL, 10), err);
}

/*
 * One statement, autocommitted (durable with synchronous_commit on): the row lock and the
 * re-check of "generation = $expected" under READ COMMITTED let exactly one of several
 * concurrent writers (other replicas) with the same expected generation win.
 */
static int pg_counter_cas(kbs_backend *b, kbs_counter *out_cur, const char *path, int64_t expected,
                          int64_t gen, const char *root_hex, int64_t now, cista_error **err)
{
    char e[32], g[32], t[32];
    snprintf(e, sizeof(e), "%lld", (long long)expected);
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(t, sizeof(t), "%lld", (long long)now);
    const char *vals[5] = {path, e, g, root_hex, t};
    _cleanup_res_ PGresult *res = NULL;
    int r =
        run(b, &res,
            expected == 0
                ? "INSERT INTO counters (path, generation, root, updated) VALUES ($1, $3, $4, $5)"
                  " ON CONFLICT (path) DO UPDATE SET generation = excluded.generation,"
                  " root = excluded.root, updated = excluded.updated"
                  " WHERE counters.generation = $2::bigint"
                : "UPDATE counters SET generation = $3, root = $4, updated = $5"
                  " WHERE path = $1 AND generation = $2::bigint",
            5, vals, NULL, 0, "counter advance", err);
    if (r < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(res), "1") == 0)
        return 0;
    cista_error *e2 = NULL;
    r = pg_counter_get(b, out_cur, path, &e2);
    err_free(e2);
    if (r < 0)
        memset(out_cur, 0, sizeof(*out_cur));
    return err_set(err, -ESTALE, "counter %s is at generation %llu, not the expected %lld", path,
                   (unsigned long long)out_cur->generation, (long long)expected);
}

static int pg_counter_set(kbs_backend *b, const char *path, int64_t gen, const char *root_hex,
                          int64_t now, cista_error **err)
{
    char g[32], t[32];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(t, sizeof(t), "%lld", (long long)now);
    const char *vals[4] = {path, g, root_hex, t};
    return run(b, NULL,
               "INSERT INTO counters (path, generation, root, updated) VALUES ($1, $2, $3, $4)"
               " ON CONFLICT (path) DO UPDATE SET generation = excluded.generation,"
               " root = excluded.root, updated = excluded.updated",
               4, vals, NULL, 0, "counter set", err);
}

static int pg_counter_delete(kbs_backend *b, const char *path, cista_error **err)
{
    _cleanup_res_ PGresult *res = NULL;
    const char *vals[1] = {path};
    int r = run(b, &res, "DELETE FROM counters WHERE path = $1", 1, vals, NULL, 0, "counter delete",
                err);
    if (r < 0)
        return r;
    if (strcmp(g_pq.PQcmdTuples(res), "0") == 0)
        return err_set(err, -ENOENT, "counter %s does not exist", path);
    return 0;
}

const kbs_backend_ops kbs__pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .kv_put = pg_kv_put,
    .kv_get = pg_kv_get,
    .kv_delete = pg_kv_delete,
    .kv_list = pg_kv_list,
    .use_jti = pg_use_jti,
    .sess_add = pg_sess_add,
    .sess_find = pg_sess_find,
    .sess_consume = pg_sess_consume,
    .sess_set_token = pg_sess_set_token,
    .audit_append = pg_audit_append,
    .audit_list = pg_audit_list,
    .counter_get = pg_counter_get,
    .counter_cas = pg_counter_cas,
    .counter_set = pg_counter_set,
    .counter_delete = pg_counter_delete,
};
