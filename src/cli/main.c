/*
 * main.c - the `cista` multi-call binary: global options, dispatch to the
 * subcommands, error reporting, progress bars.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

cli_globals g_cli;

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"image", cli_image, "inspect, pack (encrypt) and unpack (decrypt, verify) OCI images"},
    {"evidence", cli_evidence, "produce and verify TEE attestation evidence"},
    {"sim", cli_sim, "manage the insecure software TEE used for development"},
    {"policy", cli_policy, "generate, hash and check container policies"},
    {"kbs", cli_kbs, "the key broker: init, serve, admin"},
    {"volume", cli_volume, "encrypted volumes with integrity and rollback protection"},
    {"run", cli_run, "run an encrypted image confidentially (policy, attestation, keys)"},
    {"ps", cli_run, "list containers; `ps ID`: the processes of one (OCI)"},
    {"exec", cli_run, "run a command in a container, if its policy allows it"},
    {"logs", cli_run, "print a container's output, if its policy allows it"},
    {"stop", cli_run, "stop a container (SIGTERM, then SIGKILL)"},
    {"rm", cli_run, "remove containers"},
    {"inspect", cli_run, "a container's mode, TEE, attestation claims and timings"},
    {"create", cli_run, "OCI runtime: create a container from a bundle"},
    {"start", cli_run, "OCI runtime: start a created container"},
    {"state", cli_run, "OCI runtime: the state of a container (JSON)"},
    {"kill", cli_run, "OCI runtime: send a signal (policy-checked)"},
    {"delete", cli_run, "OCI runtime: delete a container"},
    {"pause", cli_run, "OCI runtime: freeze a container"},
    {"resume", cli_run, "OCI runtime: thaw a container"},
    {"update", cli_run, "OCI runtime: set a container's cgroup limits"},
    {"features", cli_run, "OCI runtime: supported features (JSON)"},
    {"spec", cli_run, "OCI runtime: write a default config.json"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: cista [GLOBAL OPTIONS] COMMAND [ARGS]\n"
                 "\n"
                 "Run unmodified container images inside a hardware TEE.\n"
                 "\n"
                 "Commands:\n");
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n"
                 "Global options:\n"
                 "  --json                machine-readable output on stdout (and JSON errors)\n"
                 "  --log-level LEVEL     error, warn (default), info or debug\n"
                 "  --log-format FORMAT   text (default) or json (JSON lines on stderr)\n"
                 "  -q, --quiet           no progress output\n"
                 "  --root DIR            container state (default /run/cista)\n"
                 "  --log FILE            write the log to FILE (as runc does; JSON with\n"
                 "                        --log-format json)\n"
                 "  --systemd-cgroup      accepted for compatibility (cgroupfs is used)\n"
                 "  --debug               debug logging\n"
                 "  -h, --help            this help; `cista COMMAND --help` for a command\n"
                 "  --version             print the version\n"
                 "\n"
                 "Exit codes: 0 success, 1 failure, 2 usage error, 3 refused by a security\n"
                 "check (digest, HMAC, key, policy). See docs/cli.md.\n");
}

int cli_report(const cista_error *e)
{
    _cleanup_free_ char *s = err_str(e);
    int code = e ? e->code : -EIO;
    int exit_code = CLI_EXIT_FAILURE;
    if (code == -EBADMSG || code == -ENOKEY || code == -EACCES || code == -EPERM ||
        code == -EKEYREJECTED || code == -EKEYEXPIRED || code == -EKEYREVOKED)
        exit_code = CLI_EXIT_DENIED;
    else if (code == -EINVAL && e && e->context_len == 0 && strstr(e->msg, "usage"))
        exit_code = CLI_EXIT_USAGE;
    if (g_cli.json) {
        json_t *o = json_pack("{s:{s:s,s:i,s:s}}", "error", "message", s, "code", code, "errno",
                              strerror(code < 0 ? -code : EIO));
        cli_print_json_line(o);
        json_decref(o);
    }
    fprintf(stderr, "cista: error: %s\n", s);
    return exit_code;
}

struct cli_progress {
    char *label;
    uint64_t total;
    uint64_t done;
    struct timespec start, last;
};

static double since(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

cli_progress *cli_progress_new(const char *label, uint64_t total)
{
    if (!g_cli.progress)
        return NULL;
    cli_progress *p = xzalloc(sizeof(*p));
    p->label = xstrdup(label);
    p->total = total;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
    return p;
}

static void draw(cli_progress *p, const struct timespec *now)
{
    double secs = since(&p->start, now);
    double mbs = secs > 0 ? (double)p->done / 1e6 / secs : 0;
    struct winsize ws;
    int cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 40 ? ws.ws_col : 80;
    if (p->total) {
        int width = cols - 50 > 10 ? (cols - 50 > 40 ? 40 : cols - 50) : 10;
        int fill = (int)((double)p->done / (double)p->total * width);
        if (fill > width)
            fill = width;
        fprintf(stderr, "\r%-20.20s [%.*s%*s] %5.1f%% %7.1f MB/s", p->label, fill,
                "########################################", width - fill, "",
                100.0 * (double)p->done / (double)p->total, mbs);
    } else {
        fprintf(stderr, "\r%-20.20s %10.1f MB %7.1f MB/s", p->label, (double)p->done / 1e6, mbs);
    }
    fflush(stderr);
}

void cli_progress_update(cli_progress *p, uint64_t done)
{
    if (!p)
        return;
    p->done = done;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* Redraw at most 10 times a second: the terminal is slower than AES. */
    if (since(&p->last, &now) < 0.1)
        return;
    p->last = now;
    draw(p, &now);
}

void cli_progress_done(cli_progress *p)
{
    if (!p)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (p->total)
        p->done = p->total;
    draw(p, &now);
    fputc('\n', stderr);
    free(p->label);
    free(p);
}

int main(int argc, char **argv)
{
    enum {
        OPT_JSON = 256,
        OPT_LOG_LEVEL,
        OPT_LOG_FORMAT,
        OPT_VERSION,
        OPT_ROOT,
        OPT_LOG,
        OPT_SYSTEMD_CGROUP,
        OPT_DEBUG,
    };
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"root", required_argument, NULL, OPT_ROOT},
        {"log", required_argument, NULL, OPT_LOG},
        {"systemd-cgroup", no_argument, NULL, OPT_SYSTEMD_CGROUP},
        {"debug", no_argument, NULL, OPT_DEBUG},
        {0},
    };
    const char *lvl = getenv("CISTA_LOG_LEVEL");
    if (lvl && log_level_parse(lvl) >= 0)
        log_set_level((log_level)log_level_parse(lvl));
    int c;
    /* "+" stops at the first non-option: the rest belongs to the subcommand. */
    while ((c = getopt_long(argc, argv, "+qh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            g_cli.json = true;
            break;
        case OPT_LOG_LEVEL:
            if (log_level_parse(optarg) < 0) {
                fprintf(stderr, "cista: unknown log level '%s' (error, warn, info, debug)\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            log_set_level((log_level)log_level_parse(optarg));
            break;
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
                fprintf(stderr, "cista: unknown log format '%s' (text, json)\n", optarg);
                return CLI_EXIT_USAGE;
            }
            log_set_json(!strcmp(optarg, "json"));
            g_cli.log_json = !strcmp(optarg, "json");
            break;
        case OPT_ROOT:
            g_cli.root = optarg;
            break;
        case OPT_LOG: {
            /* as runc: the log goes to FILE (containerd reads errors from it) */
            FILE *f = fopen(optarg, "ae");
            if (!f) {
                fprintf(stderr, "cista: --log %s: %s\n", optarg, strerror(errno));
                return CLI_EXIT_USAGE;
            }
            setvbuf(f, NULL, _IOLBF, 0);
            log_set_stream(f);
            g_cli.log_file = optarg;
            break;
        }
        case OPT_SYSTEMD_CGROUP:
            g_cli.systemd_cgroup = true;
            break;
        case OPT_DEBUG:
            g_cli.debug = true;
            log_set_level(LOG_LVL_DEBUG);
            break;
        case 'q':
            g_cli.quiet = true;
            break;
        case OPT_VERSION:
            printf("cista %s\n", CISTA_VERSION);
            return CLI_EXIT_OK;
        case 'h':
        default:
            return cli_usage(usage, c == 'h');
        }
    }
    if (optind >= argc)
        return cli_usage(usage, false);
    g_cli.progress = !g_cli.quiet && isatty(STDERR_FILENO);
    const char *cmd = argv[optind];
    for (size_t i = 0; i < ARRAY_LEN(commands); i++) {
        if (!strcmp(cmd, commands[i].name)) {
            /* Subcommands run their own getopt from a clean state. */
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0;
            return commands[i].fn(sub_argc, sub_argv);
        }
    }
    if (!strcmp(cmd, "help"))
        return cli_usage(usage, true);
    fprintf(stderr, "cista: unknown command '%s'; see `cista --help`\n", cmd);
    return CLI_EXIT_USAGE;
}
