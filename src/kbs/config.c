/*
 * config.c - the KBS configuration file and `cista kbs init` (see kbs.h and
 * docs/kbs.md for the format).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "kbs/kbs.h"
#include "kbs/store.h"
#include "util/json.h"
#include "util/util.h"

kbs_config *kbs_config_new(void)
{
    kbs_config *c = xzalloc(sizeof(*c));
    c->listen = xstrdup("127.0.0.1:8080");
    c->store = xstrdup("sqlite");
    c->sessions = xstrdup("memory");
    c->token_lifetime = 300;
    c->nonce_lifetime = 300;
    c->max_sessions = 10000;
    c->timeout = 10;
    /* Generous: a cluster behind one NAT address is one peer. A full handshake costs ~0.3 ms
     * of server CPU, so 200/s is at most ~6% of a core per address, and 2000 guests behind one
     * address can still all boot at once. */
    c->conns_per_peer = 512;
    c->handshakes_per_peer = 200;
    c->handshake_burst = 2000;
    c->peer_ipv6_prefix = 64;
    c->reject_contraindicated = true;
    c->collateral = json_object();
    return c;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void kbs_config_free(kbs_config *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->store);
    free(c->sqlite_path);
    free(c->pg_dsn);
    free(c->sessions);
    free(c->master_key_file);
    free(c->signing_key_file);
    free(c->admin_pubkey_file);
    free_list(c->sim_keys, c->sim_key_count);
    free_list(c->tpm_aks, c->tpm_ak_count);
    json_decref(c->collateral);
    free(c);
}

void kbs__config_freep(kbs_config **c)
{
    kbs_config_free(*c);
    *c = NULL;
}

/* @name relative to @base (a directory), unless absolute. */
static char *resolve(const char *base, const char *name)
{
    if (name[0] == '/' || !base)
        return xstrdup(name);
    return xasprintf("%s/%s", base, name);
}

static int get_path(char **dst, const json_t *o, const char *key, const char *base,
                    const char *what, cista_error **err)
{
    const char *s = NULL;
    int r = js_get_string(&s, o, key, false, what, err);
    if (r < 0 || !s)
        return r;
    free(*dst);
    *dst = resolve(base, s);
    return 0;
}

static int get_uint(unsigned *dst, const json_t *o, const char *key, int64_t min, int64_t max,
                    const char *what, cista_error **err)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return err_set(err, -EINVAL, "%s: \"%s\" must be an integer in %lld..%lld", what, key,
                       (long long)min, (long long)max);
    *dst = (unsigned)json_integer_value(v);
    return 0;
}

static int get_list(char ***dst, size_t *count, const json_t *o, const char *key, const char *base,
                    const char *what, cista_error **err)
{
    json_t *a = NULL;
    int r = js_get_array(&a, o, key, false, what, err);
    if (r < 0 || !a)
        return r;
    if (json_array_size(a) > 64)
        return err_set(err, -E2BIG, "%s: \"%s\" has more than 64 entries", what, key);
    *dst = xzalloc((json_array_size(a) + 1) * sizeof(char *));
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        if (!json_is_string(e))
            return err_set(err, -EINVAL, "%s: \"%s\"[%zu] must be a file name", what, key, i);
        (*dst)[(*count)++] = resolve(base, json_string_value(e));
    }
    return 0;
}

static int check_members(const json_t *o, const char *const *allowed, const char *what,
                         cista_error **err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(allowed[i], k);
        if (!ok)
            return err_set(err, -EINVAL, "%s: unknown member \"%s\"", what, k);
    }
    return 0;
}

int kbs_config_load(kbs_config **out, const char *path, cista_error **err)
{
    _cleanup_free_ char *text = NULL;
    size_t size = 0;
    int r = util_read_file(&text, &size, path, 1 << 20, err);
    if (r < 0)
        return err_wrap(err, "KBS config");
    _cleanup_json_ json_t *d = NULL;
    if ((r = js_parse_object(&d, text, size, 1 << 20, path, err)) < 0)
        return r;
    static const char *const top[] = {"listen",
                                      "tls",
                                      "insecure_http",
                                      "store",
                                      "sessions",
                                      "master_key",
                                      "signing_key",
                                      "admin_public_key",
                                      "token_lifetime",
                                      "workers",
                                      "timeout",
                                      "limits",
                                      "sim_platform_keys",
                                      "tpm_aks",
                                      "collateral",
                                      "reject_contraindicated",
                                      "audit_adopt",
                                      "release_default",
                                      NULL};
    if ((r = check_members(d, top, path, err)) < 0)
        return r;
    _cleanup_free_ char *pcopy = xstrdup(path);
    const char *base = dirname(pcopy);
    kbs_config *c = kbs_config_new();
    c->path = xstrdup(path);
    const char *s = NULL;
    json_t *o = NULL;
    if ((r = js_get_string(&s, d, "listen", false, path, err)) < 0)
        goto fail;
    if (s) {
        free(c->listen);
        c->listen = xstrdup(s);
    }
    if ((r = js_get_object(&o, d, "tls", false, path, err)) < 0)
        goto fail;
    if (o) {
        static const char *const m[] = {"cert", "key", NULL};
        if ((r = check_members(o, m, "tls", err)) < 0 ||
            (r = get_path(&c->tls_cert, o, "cert", base, "tls", err)) < 0 ||
            (r = get_path(&c->tls_key, o, "key", base, "tls", err)) < 0)
            goto fail;
    }
    if (json_object_get(d, "insecure_http") &&
        (r = js_get_bool(&c->insecure_http, d, "insecure_http", true, path, err)) < 0)
        goto fail;
    if ((r = js_get_object(&o, d, "store", false, path, err)) < 0)
        goto fail;
    if (o) {
        static const char *const m[] = {"type", "path", "dsn", NULL};
        if ((r = check_members(o, m, "store", err)) < 0 ||
            (r = js_get_string(&s, o, "type", false, "store", err)) < 0)
            goto fail;
        if (s) {
            free(c->store);
            c->store = xstrdup(s);
        }
        if ((r = get_path(&c->sqlite_path, o, "path", base, "store", err)) < 0 ||
            (r = js_get_string(&s, o, "dsn", false, "store", err)) < 0)
            goto fail;
        if (s)
            c->pg_dsn = xstrdup(s);
        if (strcmp(c->store, "sqlite") && strcmp(c->store, "postgres")) {
            r = err_set(err, -EINVAL, "store.type \"%s\": expected sqlite or postgres", c->store);
            goto fail;
        }
    }
    if ((r = js_get_object(&o, d, "sessions", false, path, err)) < 0)
        goto fail;
    if (o) {
        static const char *const m[] = {"backend", "max", "nonce_lifetime", NULL};
        unsigned max = (unsigned)c->max_sessions;
        if ((r = check_members(o, m, "sessions", err)) < 0 ||
            (r = js_get_string(&s, o, "backend", false, "sessions", err)) < 0 ||
            (r = get_uint(&max, o, "max", 1, 10000000, "sessions", err)) < 0 ||
            (r = get_uint(&c->nonce_lifetime, o, "nonce_lifetime", 1, 3600, "sessions", err)) < 0)
            goto fail;
        c->max_sessions = max;
        if (s) {
            if (strcmp(s, "memory") && strcmp(s, "store")) {
                r = err_set(err, -EINVAL, "sessions.backend \"%s\": expected memory or store", s);
                goto fail;
            }
            free(c->sessions);
            c->sessions = xstrdup(s);
        }
    }
    if ((r = js_get_object(&o, d, "limits", false, path, err)) < 0)
        goto fail;
    if (o) {
        static const char *const m[] = {"connections_per_peer", "handshakes_per_peer_per_s",
                                        "handshake_burst", "ipv6_prefix", NULL};
        if ((r = check_members(o, m, "limits", err)) < 0 ||
            (r = get_uint(&c->conns_per_peer, o, "connections_per_peer", 0, 1000000, "limits",
                          err)) < 0 ||
            (r = get_uint(&c->handshakes_per_peer, o, "handshakes_per_peer_per_s", 0, 1000000,
                          "limits", err)) < 0 ||
            (r = get_uint(&c->handshake_burst, o, "handshake_burst", 1, 10000000, "limits", err)) <
                0 ||
            (r = get_uint(&c->peer_ipv6_prefix, o, "ipv6_prefix", 1, 128, "limits", err)) < 0)
            goto fail;
    }
    s = NULL;
    if ((r = js_get_string(&s, d, "release_default", false, path, err)) < 0)
        goto fail;
    if (s && strcmp(s, "affirming") && strcmp(s, "deny")) {
        r = err_set(err, -EINVAL, "%s: release_default \"%s\": expected affirming or deny", path,
                    s);
        goto fail;
    }
    c->release_default_deny = s && !strcmp(s, "deny");
    if ((r = get_path(&c->master_key_file, d, "master_key", base, path, err)) < 0 ||
        (r = get_path(&c->signing_key_file, d, "signing_key", base, path, err)) < 0 ||
        (r = get_path(&c->admin_pubkey_file, d, "admin_public_key", base, path, err)) < 0 ||
        (r = get_uint(&c->token_lifetime, d, "token_lifetime", 1, 86400, path, err)) < 0 ||
        (r = get_uint(&c->workers, d, "workers", 0, 256, path, err)) < 0 ||
        (r = get_uint(&c->timeout, d, "timeout", 1, 600, path, err)) < 0 ||
        (r = get_list(&c->sim_keys, &c->sim_key_count, d, "sim_platform_keys", base, path, err)) <
            0 ||
        (r = get_list(&c->tpm_aks, &c->tpm_ak_count, d, "tpm_aks", base, path, err)) < 0 ||
        (json_object_get(d, "reject_contraindicated") &&
         (r = js_get_bool(&c->reject_contraindicated, d, "reject_contraindicated", true, path,
                          err)) < 0) ||
        (json_object_get(d, "audit_adopt") &&
         (r = js_get_bool(&c->audit_adopt, d, "audit_adopt", true, path, err)) < 0) ||
        (r = js_get_object(&o, d, "collateral", false, path, err)) < 0)
        goto fail;
    if (o) {
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v)
        {
            if (!json_is_string(v)) {
                r = err_set(err, -EINVAL, "collateral.%s must be a directory name", k);
                goto fail;
            }
            _cleanup_free_ char *dir = resolve(base, json_string_value(v));
            json_object_set_new(c->collateral, k, json_string(dir));
        }
    }
    if (!strcmp(c->store, "sqlite") && !c->sqlite_path)
        c->sqlite_path = resolve(base, "kbs.db");
    if (!strcmp(c->store, "postgres") && !c->pg_dsn) {
        r = err_set(err, -EINVAL, "store.type is postgres but store.dsn is missing");
        goto fail;
    }
    *out = c;
    return 0;
fail:
    kbs_config_free(c);
    return err_wrap(err, "KBS config %s", path);
}

/* ---- init ---- */

static int write_new(int dirfd, const char *name, const void *data, size_t size, mode_t mode,
                     bool *created, cista_error **err)
{
    if (faccessat(dirfd, name, F_OK, 0) == 0) {
        *created = false;
        return 0;
    }
    *created = true;
    return util_write_file_atomic(dirfd, name, data, size, mode, err);
}

static int write_key(int dirfd, const char *priv_name, const char *pub_name, cista_error **err)
{
    if (faccessat(dirfd, priv_name, F_OK, 0) == 0)
        return 0;
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    int r = crypto_key_generate_ec(&k, "P-256", err);
    if (r < 0)
        return r;
    char *priv = crypto_key_to_pem(k, true);
    _cleanup_free_ char *pub = crypto_key_to_pem(k, false);
    bool created;
    r = write_new(dirfd, priv_name, priv, strlen(priv), 0600, &created, err);
    crypto_free_secret(priv, strlen(priv));
    if (r < 0)
        return r;
    if (pub_name)
        r = util_write_file_atomic(dirfd, pub_name, pub, strlen(pub), 0644, err);
    return r;
}

int kbs_init_dir(const char *dir, cista_error **err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", dir);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "open %s", dir);
    if (faccessat(dfd, "kbs.json", F_OK, 0) == 0)
        return err_set(err, -EEXIST, "%s/kbs.json exists: this directory is already initialised",
                       dir);
    int r;
    if ((r = write_key(dfd, "kbs-signing-key.pem", "kbs-signing-pub.pem", err)) < 0 ||
        (r = write_key(dfd, "admin-key.pem", "admin-pub.pem", err)) < 0)
        return err_wrap(err, "kbs init %s", dir);
    uint8_t mk[KBS_MASTER_KEY_SIZE];
    if ((r = crypto_random(mk, sizeof(mk), err)) < 0)
        return r;
    bool created;
    r = write_new(dfd, "master.key", mk, sizeof(mk), 0600, &created, err);
    if (r < 0) {
        crypto_cleanse(mk, sizeof(mk));
        return err_wrap(err, "kbs init %s", dir);
    }
    if (!created) {
        _cleanup_free_ char *mp = xasprintf("%s/master.key", dir);
        if ((r = kbs_master_key_load(mk, mp, err)) < 0)
            return r;
    }
    _cleanup_free_ char *db = xasprintf("%s/kbs.db", dir);
    kbs_store_opts so = {
        .kind = "sqlite", .sqlite_path = db, .master_key = mk, .init_schema = true};
    kbs_store *st = NULL;
    r = kbs_store_open(&st, &so, err);
    crypto_cleanse(mk, sizeof(mk));
    if (r < 0)
        return err_wrap(err, "kbs init %s", dir);
    kbs_store_close(st);
    static const char cfg[] = "{\n"
                              "  \"listen\": \"127.0.0.1:8080\",\n"
                              "  \"store\": {\"type\": \"sqlite\", \"path\": \"kbs.db\"},\n"
                              "  \"master_key\": \"master.key\",\n"
                              "  \"signing_key\": \"kbs-signing-key.pem\",\n"
                              "  \"admin_public_key\": \"admin-pub.pem\",\n"
                              "  \"token_lifetime\": 300,\n"
                              "  \"sessions\": {\"backend\": \"memory\", \"max\": 10000, "
                              "\"nonce_lifetime\": 300},\n"
                              "  \"sim_platform_keys\": [],\n"
                              "  \"tpm_aks\": []\n"
                              "}\n";
    return util_write_file_atomic(dfd, "kbs.json", cfg, strlen(cfg), 0600, err);
}
