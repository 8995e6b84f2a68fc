/*
 * cmd_kbs.c - `cista kbs init|serve|admin|get-resource`: argument parsing
 * over src/kbs (kbs.h, store.h, client.h). The admin commands sign a
 * short-lived admin token per call with the administrator's private key.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "kbs/client.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

static const char *default_dir(void)
{
    const char *d = getenv("CISTA_KBS_DIR");
    return d && *d ? d : "/var/lib/cista/kbs";
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = default_dir();
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'h':
            printf("Usage: cista kbs init [--dir DIR]\n"
                   "\n"
                   "Create a KBS directory (default $CISTA_KBS_DIR or /var/lib/cista/kbs):\n"
                   "kbs-signing-key.pem (P-256 token key), admin-key.pem / admin-pub.pem (the\n"
                   "administrator's key pair: move admin-key.pem off the server), master.key\n"
                   "(AES-256 key for resources at rest, 0600), kbs.db (SQLite) and kbs.json.\n");
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("kbs init", "bad option");
        }
    }
    if (optind != argc)
        return cli_usage_error("kbs init", "unexpected argument %s", argv[optind]);
    cista_error *err = NULL;
    if (kbs_init_dir(dir, &err) < 0)
        return cli_fail(err);
    if (g_cli.json) {
        _cleanup_json_ json_t *o = json_pack("{s:s,s:s}", "dir", dir, "config", "kbs.json");
        cli_print_json_line(o);
    } else if (!g_cli.quiet) {
        printf("KBS initialised in %s (config %s/kbs.json)\n", dir, dir);
    }
    return CLI_EXIT_OK;
}

/* ---- serve ---- */

static kbs_server *g_server;

static void on_signal(int sig)
{
    (void)sig;
    kbs_server_stop(g_server);
}

static int cmd_serve(int argc, char **argv)
{
    enum { OPT_INSECURE = 256, OPT_WORKERS };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"insecure-http", no_argument, NULL, OPT_INSECURE},
                                         {"workers", required_argument, NULL, OPT_WORKERS},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *listen_addr = NULL;
    bool insecure = false;
    long workers = -1;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'l':
            listen_addr = optarg;
            break;
        case OPT_INSECURE:
            insecure = true;
            break;
        case OPT_WORKERS:
            workers = strtol(optarg, NULL, 10);
            if (workers < 0 || workers > 256)
                return cli_usage_error("kbs serve", "--workers must be 0-256");
            break;
        case 'h':
            printf("Usage: cista kbs serve [--config FILE] [--listen ADDR:PORT] "
                   "[--insecure-http]\n"
                   "\n"
                   "Serve the KBS (RCAR 0.4.0 and 0.2.0, admin API) until SIGTERM/SIGINT.\n"
                   "HTTPS with tls.cert/tls.key from the config; plain HTTP only on a loopback\n"
                   "address or with --insecure-http. See docs/kbs.md.\n"
                   "\n"
                   "Options:\n"
                   "  -c, --config FILE   configuration (default $CISTA_KBS_DIR/kbs.json)\n"
                   "  -l, --listen ADDR   override \"listen\" (port 0 picks a free port)\n"
                   "  --insecure-http     allow plain HTTP on a non-loopback address\n"
                   "  --workers N         worker threads (default: one per CPU)\n");
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("kbs serve", "bad option");
        }
    }
    if (optind != argc)
        return cli_usage_error("kbs serve", "unexpected argument %s", argv[optind]);
    _cleanup_free_ char *defcfg = config ? NULL : xasprintf("%s/kbs.json", default_dir());
    cista_error *err = NULL;
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    if (kbs_config_load(&cfg, config ? config : defcfg, &err) < 0)
        return cli_fail(err);
    if (listen_addr) {
        free(cfg->listen);
        cfg->listen = xstrdup(listen_addr);
    }
    if (insecure)
        cfg->insecure_http = true;
    if (workers >= 0)
        cfg->workers = (unsigned)workers;
    /*
     * Every connection is a descriptor: the usual soft limit (1024) would be reached long before
     * limits.connections_per_peer of a couple of peers. Raising the soft limit up to the hard one
     * needs no privilege.
     */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("kbs serve: cannot raise the descriptor limit to %llu: %s",
                     (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (kbs_server_new(&g_server, cfg, &err) < 0)
        return cli_fail(err);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* The bound address on stdout (one line) so scripts can use port 0. */
    if (g_cli.json)
        printf("{\"listen\":\"%s\"}\n", kbs_server_address(g_server));
    else
        printf("listening on %s\n", kbs_server_address(g_server));
    fflush(stdout);
    int r = kbs_server_run(g_server, &err);
    kbs_server_free(g_server);
    g_server = NULL;
    return r < 0 ? cli_fail(err) : CLI_EXIT_OK;
}

/* ---- admin ---- */

typedef struct {
    const char *url, *ca, *key, *file, *value, *out, *key_name;
    long after, limit;
    bool system_trust;
} admin_opts;

/* A JSON string for a terminal: control bytes and backslashes as \xNN; NULL when not a string. */
static char *printable(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    cbuf b = CBUF_INIT;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        if (ch < 0x20 || ch == 0x7f || ch == '\\') {
            snprintf(esc, sizeof(esc), "\\x%02x", ch);
            buf_puts(&b, esc);
        } else {
            buf_put(&b, s, 1);
        }
    }
    return (char *)buf_steal(&b, NULL);
}

static int admin_request(long *st, uint8_t **body, size_t *size, const admin_opts *o,
                         const char *method, const char *path, const void *data, size_t dsize,
                         const char *ctype, cista_error **err)
{
    if (!o->url)
        return err_set(err, -EINVAL, "usage: --url URL (or $CISTA_KBS_URL) is required");
    if (!o->key)
        return err_set(err, -EINVAL,
                       "usage: --admin-key FILE (or $CISTA_KBS_ADMIN_KEY) is required");
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    int r = crypto_key_load_file(&k, o->key, true, err);
    if (r < 0)
        return err_wrap(err, "admin key");
    _cleanup_free_ char *tok = NULL;
    if ((r = kbs_admin_token_make(&tok, k, 120, time(NULL), err)) < 0)
        return r;
    kbs_client_opts co = {.url = o->url, .ca_file = o->ca, .system_trust = o->system_trust};
    _cleanup_kbs_client_ kbs_client *c = NULL;
    if ((r = kbs_client_new(&c, &co, err)) < 0)
        return r;
    r = kbs_client_request(c, st, body, size, method, path, tok, data, dsize, ctype, err);
    crypto_cleanse(tok, strlen(tok));
    return r;
}

static int admin_status(long st, const uint8_t *body, size_t size, const char *what,
                        cista_error **err)
{
    if (st >= 200 && st < 300)
        return 0;
    _cleanup_free_ char *d = kbs_client_problem_detail(body, size);
    int code = (st == 401 || st == 403) ? -EACCES
               : st == 404              ? -ENOENT
               : st == 400              ? -EINVAL
                                        : -EIO;
    return err_set(err, code, "%s: HTTP %ld: %s", what, st, d);
}

static void admin_help(void)
{
    printf("Usage: cista kbs admin COMMAND [OPTIONS] [ARGS]\n"
           "\n"
           "Commands:\n"
           "  put-resource PATH (--file F | --value S)  store a secret at repo/type/tag\n"
           "  get-resource PATH [-o FILE]              read a secret back\n"
           "  delete-resource PATH\n"
           "  list-resources\n"
           "  counter-get PATH                         a counter (rollback anchor) as JSON\n"
           "  counter-reset PATH [GEN [ROOT-HEX]]      create or set a counter (default 0)\n"
           "  counter-delete PATH\n"
           "  set-reference-values FILE                appraisal reference values (JSON)\n"
           "  get-reference-values\n"
           "  set-policy [--key KEY] FILE              release policy for KEY (a resource\n"
           "                                           path, repo/type/*, repo/*, or default)\n"
           "  get-policy [KEY]  delete-policy KEY  list-policies\n"
           "  audit [--after ID] [--limit N]           read the audit log (and check its\n"
           "                                           hash chain)\n"
           "  audit-adopt HASH                         accept the log's unkeyed entries (from\n"
           "                                           a cista before keyed chains), once,\n"
           "                                           after reviewing them\n"
           "  token                                    print a fresh admin token (for curl)\n"
           "\n"
           "Options:\n"
           "  --url URL           the KBS (default $CISTA_KBS_URL)\n"
           "  --ca FILE           CA the KBS certificate must chain to (https)\n"
           "  --system-trust      use the system trust store\n"
           "  --admin-key FILE    administrator private key (default $CISTA_KBS_ADMIN_KEY)\n"
           "  --json              machine-readable output (global option)\n");
}

static int print_body(const uint8_t *body, size_t size)
{
    fwrite(body, 1, size, stdout);
    if (size && body[size - 1] != '\n')
        putchar('\n');
    return CLI_EXIT_OK;
}

static int cmd_admin(int argc, char **argv)
{
    enum {
        OPT_URL = 256,
        OPT_CA,
        OPT_KEY,
        OPT_FILE,
        OPT_VALUE,
        OPT_AFTER,
        OPT_LIMIT,
        OPT_PKEY,
        OPT_SYS
    };
    static const struct option opts[] = {{"url", required_argument, NULL, OPT_URL},
                                         {"ca", required_argument, NULL, OPT_CA},
                                         {"admin-key", required_argument, NULL, OPT_KEY},
                                         {"file", required_argument, NULL, OPT_FILE},
                                         {"value", required_argument, NULL, OPT_VALUE},
                                         {"after", required_argument, NULL, OPT_AFTER},
                                         {"limit", required_argument, NULL, OPT_LIMIT},
                                         {"key", required_argument, NULL, OPT_PKEY},
                                         {"system-trust", no_argument, NULL, OPT_SYS},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    admin_opts o = {
        .url = getenv("CISTA_KBS_URL"), .key = getenv("CISTA_KBS_ADMIN_KEY"), .limit = 1000};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_URL:
            o.url = optarg;
            break;
        case OPT_CA:
            o.ca = optarg;
            break;
        case OPT_KEY:
            o.key = optarg;
            break;
        case OPT_FILE:
            o.file = optarg;
            break;
        case OPT_VALUE:
            o.value = optarg;
            break;
        case OPT_AFTER:
            o.after = strtol(optarg, NULL, 10);
            break;
        case OPT_LIMIT:
            o.limit = strtol(optarg, NULL, 10);
            break;
        case OPT_PKEY:
            o.key_name = optarg;
            break;
        case OPT_SYS:
            o.system_trust = true;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'h':
            admin_help();
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("kbs admin", "bad option");
        }
    }
    if (optind >= argc)
        return cli_usage_error("kbs admin", "missing command");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    cista_error *err = NULL;
    long st = 0;
    _cleanup_free_ uint8_t *body = NULL;
    size_t bsize = 0;
    int r = 0;
    if (!strcmp(cmd, "token")) {
        if (!o.key)
            return cli_usage_error("kbs admin", "--admin-key FILE is required");
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        _cleanup_free_ char *tok = NULL;
        if (crypto_key_load_file(&k, o.key, true, &err) < 0 ||
            kbs_admin_token_make(&tok, k, 120, time(NULL), &err) < 0)
            return cli_fail(err);
        printf("%s\n", tok);
        return CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "counter-get") || !strcmp(cmd, "counter-reset") ||
        !strcmp(cmd, "counter-delete")) {
        bool reset = !strcmp(cmd, "counter-reset");
        if (nargs < 1 || nargs > (reset ? 3 : 1))
            return cli_usage_error("kbs admin", "%s needs PATH (repo/type/tag)%s", cmd,
                                   reset ? " [GENERATION [ROOT-HEX]]" : "");
        const char *path = args[0];
        if (kbs_check_resource_path(path, &err) < 0) {
            err_free(err);
            return cli_usage_error("kbs admin", "PATH must be repo/type/tag");
        }
        _cleanup_free_ char *url = xasprintf("/kbs/v0/admin/counter/%s", path);
        if (reset) {
            char *end = NULL;
            long long gen = nargs > 1 ? strtoll(args[1], &end, 10) : 0;
            if (nargs > 1 && (*end || gen < 0))
                return cli_usage_error("kbs admin", "GENERATION must be a number >= 0");
            _cleanup_json_ json_t *j = json_pack("{s:I,s:s}", "generation", (json_int_t)gen, "root",
                                                 nargs > 2 ? args[2] : "");
            _cleanup_free_ char *text = js_dump_compact(j);
            r = admin_request(&st, &body, &bsize, &o, "PUT", url, text, strlen(text),
                              "application/json", &err);
        } else {
            r = admin_request(&st, &body, &bsize, &o,
                              !strcmp(cmd, "counter-get") ? "GET" : "DELETE", url, NULL, 0, NULL,
                              &err);
        }
        if (r < 0 || admin_status(st, body, bsize, cmd, &err) < 0)
            return cli_fail(err);
        if (!strcmp(cmd, "counter-get")) {
            fwrite(body, 1, bsize, stdout);
            printf("\n");
        } else if (!g_cli.quiet) {
            printf(g_cli.json ? "{\"status\":\"ok\"}\n" : "ok\n");
        }
        return CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "put-resource") || !strcmp(cmd, "get-resource") ||
        !strcmp(cmd, "delete-resource")) {
        if (nargs != 1)
            return cli_usage_error("kbs admin", "%s needs one PATH (repo/type/tag)", cmd);
        const char *path = args[0];
        if (kbs_check_resource_path(path, &err) < 0) {
            err_free(err);
            return cli_usage_error("kbs admin", "PATH must be repo/type/tag");
        }
        _cleanup_free_ char *url = NULL;
        if (!strcmp(cmd, "put-resource")) {
            if (!!o.file == !!o.value)
                return cli_usage_error("kbs admin", "put-resource needs --file F or --value S");
            char *data = NULL;
            size_t dsize = 0;
            if (o.file) {
                if (util_read_file(&data, &dsize, o.file, 1u << 20, &err) < 0)
                    return cli_fail(err);
            } else {
                data = xstrdup(o.value);
                dsize = strlen(data);
            }
            url = xasprintf("/kbs/v0/resource/%s", path);
            r = admin_request(&st, &body, &bsize, &o, "POST", url, data, dsize,
                              "application/octet-stream", &err);
            crypto_free_secret(data, dsize);
        } else if (!strcmp(cmd, "get-resource")) {
            url = xasprintf("/kbs/v0/admin/resource/%s", path);
            r = admin_request(&st, &body, &bsize, &o, "GET", url, NULL, 0, NULL, &err);
        } else {
            url = xasprintf("/kbs/v0/resource/%s", path);
            r = admin_request(&st, &body, &bsize, &o, "DELETE", url, NULL, 0, NULL, &err);
        }
        if (r < 0 || admin_status(st, body, bsize, cmd, &err) < 0) {
            if (body)
                crypto_cleanse(body, bsize);
            return cli_fail(err);
        }
        if (!strcmp(cmd, "get-resource")) {
            if (o.out) {
                r = util_write_file_atomic(AT_FDCWD, o.out, body, bsize, 0600, &err);
                crypto_cleanse(body, bsize);
                return r < 0 ? cli_fail(err) : CLI_EXIT_OK;
            }
            fwrite(body, 1, bsize, stdout);
            crypto_cleanse(body, bsize);
            return CLI_EXIT_OK;
        }
        if (!g_cli.quiet)
            printf(g_cli.json ? "{\"status\":\"ok\"}\n" : "ok\n");
        return CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "set-reference-values") || !strcmp(cmd, "set-policy")) {
        if (nargs != 1)
            return cli_usage_error("kbs admin", "%s needs one FILE", cmd);
        _cleanup_free_ char *data = NULL;
        size_t dsize = 0;
        if (util_read_file(&data, &dsize, args[0], 1u << 20, &err) < 0)
            return cli_fail(err);
        _cleanup_free_ char *url =
            !strcmp(cmd, "set-policy")
                ? xasprintf("/kbs/v0/resource-policy/%s", o.key_name ? o.key_name : "default")
                : xstrdup("/kbs/v0/reference-values");
        r = admin_request(&st, &body, &bsize, &o, "POST", url, data, dsize, NULL, &err);
    } else if (!strcmp(cmd, "get-reference-values")) {
        r = admin_request(&st, &body, &bsize, &o, "GET", "/kbs/v0/reference-values", NULL, 0, NULL,
                          &err);
    } else if (!strcmp(cmd, "get-policy") || !strcmp(cmd, "delete-policy")) {
        const char *k = nargs == 1 ? args[0] : o.key_name ? o.key_name : "default";
        if (nargs > 1)
            return cli_usage_error("kbs admin", "%s takes at most one KEY", cmd);
        _cleanup_free_ char *url = xasprintf("/kbs/v0/resource-policy/%s", k);
        r = admin_request(&st, &body, &bsize, &o, !strcmp(cmd, "get-policy") ? "GET" : "DELETE",
                          url, NULL, 0, NULL, &err);
    } else if (!strcmp(cmd, "list-policies")) {
        r = admin_request(&st, &body, &bsize, &o, "GET", "/kbs/v0/resource-policy", NULL, 0, NULL,
                          &err);
    } else if (!strcmp(cmd, "list-resources")) {
        r = admin_request(&st, &body, &bsize, &o, "GET", "/kbs/v0/admin/resources", NULL, 0, NULL,
                          &err);
    } else if (!strcmp(cmd, "audit-adopt")) {
        if (nargs != 1 || strlen(args[0]) != 64 || strspn(args[0], "0123456789abcdef") != 64)
            return cli_usage_error("kbs admin", "audit-adopt needs one HASH: the 64 hex digits "
                                                "that `audit` names");
        _cleanup_json_ json_t *j = json_pack("{s:s}", "head", args[0]);
        _cleanup_free_ char *text = js_dump_compact(j);
        r = admin_request(&st, &body, &bsize, &o, "POST", "/kbs/v0/audit/adopt", text, strlen(text),
                          "application/json", &err);
        if (r < 0 || admin_status(st, body, bsize, cmd, &err) < 0)
            return cli_fail(err);
        if (!g_cli.quiet)
            printf(g_cli.json ? "{\"status\":\"ok\"}\n" : "ok\n");
        return CLI_EXIT_OK;
    } else if (!strcmp(cmd, "audit")) {
        _cleanup_free_ char *url = xasprintf("/kbs/v0/audit?after=%ld&limit=%ld", o.after, o.limit);
        r = admin_request(&st, &body, &bsize, &o, "GET", url, NULL, 0, NULL, &err);
        if (r == 0 && admin_status(st, body, bsize, cmd, &err) == 0 && !g_cli.json) {
            _cleanup_json_ json_t *d = json_loadb((const char *)body, bsize, 0, NULL);
            json_t *entries = json_object_get(d, "entries");
            size_t i;
            json_t *e;
            json_array_foreach(entries, i, e)
            {
                json_t *en = json_object_get(e, "entry");
                time_t t = (time_t)json_integer_value(json_object_get(e, "time"));
                struct tm tm;
                char ts[32];
                gmtime_r(&t, &tm);
                strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
                /* fields may hold what a client sent: escaped, so no line can pose as another */
                _cleanup_free_ char *res = printable(json_object_get(en, "resource"));
                _cleanup_free_ char *tee = printable(json_object_get(en, "tee"));
                _cleanup_free_ char *ev = printable(json_object_get(en, "event"));
                _cleanup_free_ char *dec = printable(json_object_get(en, "decision"));
                _cleanup_free_ char *why = printable(json_object_get(en, "reason"));
                printf("%lld %s %-8s %-5s %s%s%s%s %s\n",
                       (long long)json_integer_value(json_object_get(e, "id")), ts, ev ? ev : "",
                       dec ? dec : "", tee ? "tee=" : "", tee ? tee : "", res ? " resource=" : "",
                       res ? res : "", why ? why : "");
            }
            const char *chain = json_string_value(json_object_get(d, "chain"));
            printf("# %zu entries shown, %lld in the log, hash chain: %s\n",
                   json_array_size(entries),
                   (long long)json_integer_value(json_object_get(d, "total")), chain ? chain : "?");
            return chain && !strcmp(chain, "ok") ? CLI_EXIT_OK : CLI_EXIT_DENIED;
        }
    } else {
        return cli_usage_error("kbs admin", "unknown command \"%s\"", cmd);
    }
    if (r < 0 || admin_status(st, body, bsize, cmd, &err) < 0)
        return cli_fail(err);
    if (!strncmp(cmd, "set-", 4) || !strcmp(cmd, "delete-policy")) {
        if (!g_cli.quiet)
            printf(g_cli.json ? "{\"status\":\"ok\"}\n" : "ok\n");
        return CLI_EXIT_OK;
    }
    return print_body(body, bsize);
}

/* ---- get-resource (the in-TEE client, for tests and demos) ---- */

static int cmd_get_resource(int argc, char **argv)
{
    enum {
        OPT_URL = 256,
        OPT_CA,
        OPT_TEE,
        OPT_STATE,
        OPT_HOST,
        OPT_TCTI,
        OPT_LOG,
        OPT_PCRS,
        OPT_PROTO,
        OPT_TOKEN,
        OPT_SYS
    };
    static const struct option opts[] = {{"url", required_argument, NULL, OPT_URL},
                                         {"ca", required_argument, NULL, OPT_CA},
                                         {"tee", required_argument, NULL, OPT_TEE},
                                         {"state-dir", required_argument, NULL, OPT_STATE},
                                         {"host-data", required_argument, NULL, OPT_HOST},
                                         {"tcti", required_argument, NULL, OPT_TCTI},
                                         {"tpm-eventlog", required_argument, NULL, OPT_LOG},
                                         {"pcrs", required_argument, NULL, OPT_PCRS},
                                         {"protocol", required_argument, NULL, OPT_PROTO},
                                         {"token-out", required_argument, NULL, OPT_TOKEN},
                                         {"system-trust", no_argument, NULL, OPT_SYS},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *url = getenv("CISTA_KBS_URL"), *ca = NULL, *tee = NULL, *out = NULL, *proto = NULL,
               *token_out = NULL, *host_hex = NULL;
    bool sys = false;
    ev_get_opts g;
    ev_get_opts_init(&g);
    uint8_t host[EV_HOST_DATA_SIZE];
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_URL:
            url = optarg;
            break;
        case OPT_CA:
            ca = optarg;
            break;
        case OPT_TEE:
            tee = optarg;
            break;
        case OPT_STATE:
            g.sim_state_dir = optarg;
            break;
        case OPT_HOST:
            host_hex = optarg;
            break;
        case OPT_TCTI:
            g.tpm_tcti = optarg;
            break;
        case OPT_LOG:
            g.tpm_eventlog = optarg;
            break;
        case OPT_PCRS:
            g.tpm_pcrs = optarg;
            break;
        case OPT_PROTO:
            proto = optarg;
            break;
        case OPT_TOKEN:
            token_out = optarg;
            break;
        case OPT_SYS:
            sys = true;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            printf("Usage: cista kbs get-resource --url URL --tee TEE [OPTIONS] PATH...\n"
                   "\n"
                   "Attest to the KBS with this TEE's evidence (RCAR: auth, attest) bound to a\n"
                   "fresh P-256 key, then fetch each resource PATH (repo/type/tag), unwrapping\n"
                   "the JWE. Prints the value (one PATH) or writes it with -o.\n"
                   "\n"
                   "Options:\n"
                   "  --url URL            KBS URL (default $CISTA_KBS_URL)\n"
                   "  --ca FILE            CA the KBS certificate must chain to\n"
                   "  --system-trust       use the system trust store\n"
                   "  --tee TEE            sim, tpm, snp, tdx, ...\n"
                   "  --state-dir DIR      sim: state directory\n"
                   "  --host-data HEX      sim: 32 bytes of launch host data\n"
                   "  --tcti CONF          tpm: TCTI (swtpm:host=127.0.0.1,port=N)\n"
                   "  --tpm-eventlog FILE  tpm: cista event log\n"
                   "  --pcrs SPEC          tpm: PCRs to quote\n"
                   "  --protocol VERSION   0.4.0 (default) or 0.2.0\n"
                   "  --token-out FILE     write the attestation token\n"
                   "  -o, --output FILE    write the (single) resource to FILE (0600)\n");
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("kbs get-resource", "bad option");
        }
    }
    if (!url || !tee || optind >= argc)
        return cli_usage_error("kbs get-resource", "--url, --tee and at least one PATH are needed");
    if (out && argc - optind != 1)
        return cli_usage_error("kbs get-resource", "-o works with one PATH");
    cista_error *err = NULL;
    if (host_hex) {
        if (hex_decode_to(host, sizeof(host), host_hex, &err) < 0)
            return cli_fail(err);
        g.host_data = host;
    }
    const ev_ops *ops = ev_find(tee);
    if (!ops)
        return cli_usage_error("kbs get-resource", "unknown TEE \"%s\"", tee);
    kbs_client_opts co = {.url = url, .ca_file = ca, .system_trust = sys, .version = proto};
    _cleanup_kbs_client_ kbs_client *cl = NULL;
    _cleanup_pkey_ EVP_PKEY *key = NULL;
    _cleanup_free_ char *token = NULL;
    if (kbs_client_new(&cl, &co, &err) < 0 || crypto_key_generate_ec(&key, "P-256", &err) < 0 ||
        kbs_client_attest(cl, ops, &g, key, &token, &err) < 0)
        return cli_fail(err);
    if (token_out &&
        util_write_file_atomic(AT_FDCWD, token_out, token, strlen(token), 0600, &err) < 0)
        return cli_fail(err);
    crypto_cleanse(token, strlen(token));
    for (int i = optind; i < argc; i++) {
        uint8_t *v = NULL;
        size_t n = 0;
        if (kbs_client_get_resource(cl, &v, &n, argv[i], &err) < 0)
            return cli_fail(err);
        int r = 0;
        if (out)
            r = util_write_file_atomic(AT_FDCWD, out, v, n, 0600, &err);
        else
            fwrite(v, 1, n, stdout);
        kbs_secret_free(v, n);
        if (r < 0)
            return cli_fail(err);
    }
    return CLI_EXIT_OK;
}

int cli_kbs(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "Usage: cista kbs COMMAND [OPTIONS]\n"
                   "\n"
                   "The key broker (KBS): releases secrets to attested TEEs (docs/kbs.md).\n"
                   "\n"
                   "Commands:\n"
                   "  init           create keys, master key, store and config\n"
                   "  serve          serve the KBS protocol and admin API\n"
                   "  admin          manage resources, policies, reference values; read the "
                   "audit log\n"
                   "  get-resource   attest with this TEE and fetch resources (client)\n");
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "init"))
        return cmd_init(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "admin"))
        return cmd_admin(argc - 1, argv + 1);
    if (!strcmp(cmd, "get-resource"))
        return cmd_get_resource(argc - 1, argv + 1);
    return cli_usage_error("kbs", "unknown command \"%s\"", cmd);
}
