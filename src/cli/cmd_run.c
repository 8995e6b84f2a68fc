/*
 * cmd_run.c - `cista run|ps|exec|logs|stop|rm|inspect` and the OCI runtime
 * verbs (create, start, state, kill, delete, pause, resume, features, spec)
 * that containerd's runc shim and podman/conmon drive. Thin: parse, call
 * src/runtime, print.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "crypto/crypto.h"
#include "runtime/runtime.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define MAX_LIST 64

static int fail(cista_error *e)
{
    if (g_cli.log_file && e) {
        _cleanup_free_ char *s = err_str(e);
        log_error("%s", s);
    }
    return cli_fail(e);
}

static int load_config(rt_config **out, const char *path)
{
    cista_error *e = NULL;
    if (rt_config_load(out, path, &e) < 0)
        return fail(e);
    rt_config *c = *out;
    if (g_cli.root) {
        free(c->root);
        c->root = xstrdup(g_cli.root);
    }
    if (g_cli.log_file)
        c->log_file = xstrdup(g_cli.log_file);
    c->log_json = g_cli.log_json;
    c->systemd_cgroup = g_cli.systemd_cgroup;
    c->debug = g_cli.debug;
    return 0;
}

/* ---- cista run ---- */

static void run_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: cista run --policy FILE [--kbs URL] [--tee auto|sim|tpm|snp|tdx] [OPTIONS]\n"
        "                 IMAGE-REF [-- ARGS...]\n"
        "\n"
        "Run an (encrypted) image confidentially: check that the policy is the one bound\n"
        "to the TEE, attest to the KBS with an ephemeral key, fetch the image key and the\n"
        "secrets the policy names, decrypt and verify the image into the sandbox's memory,\n"
        "build the container from image + policy, and start it only if the policy allows\n"
        "it. In the foreground the container's output is shown (if the policy allows the\n"
        "host to read it) and cista exits with the container's status.\n"
        "\n"
        "Options:\n"
        "  --policy FILE        the container policy (`cista policy gen`)\n"
        "  --kbs URL            the key broker (image keys and secrets after attestation)\n"
        "  --tee TEE            auto (default), sim (INSECURE, development), tpm, snp, tdx\n"
        "  --policy-hash HEX    the policy hash the launcher bound (default: the hash of\n"
        "                       --policy; a differing value is refused, as a TEE would)\n"
        "  --container NAME     the policy container to run (policies with several)\n"
        "  --image-key RES      KBS resource of the image key\n"
        "                       (default kbs:///default/image-key/CONTAINER)\n"
        "  --key-file PEM       DEVELOPMENT ONLY (insecure): image private key from a file\n"
        "  --secret-file R=F    DEVELOPMENT ONLY (insecure): secret R (kbs:///...) from file F\n"
        "  --name ID            container id (default: random)\n"
        "  -d, --detach         start it and print its id\n"
        "  --rm                 remove it when it exits (foreground)\n"
        "  -e, --env NAME=VAL   add an env variable (the policy must allow it)\n"
        "  --network none|host  network namespace: own (default) or the host's\n"
        "  -v, --volume NAME=DIR[:MOUNTPOINT]\n"
        "                       encrypted volume NAME of the policy, its ciphertext kept in\n"
        "                       host directory DIR (an empty or missing DIR gets a new\n"
        "                       volume); mounted at the policy's mount point (MOUNTPOINT, if\n"
        "                       given, must be that). Its key comes from the KBS (the policy's\n"
        "                       \"key\"), its rollback anchor is the policy's KBS counter.\n"
        "                       Every volume of the policy needs one. Repeatable.\n"
        "  --config FILE        runtime configuration (default $CISTA_RUNTIME_CONFIG or\n"
        "                       /etc/cista/runtime.json)\n"
        "  --json               print the result (id, exit code, timings, claims) as JSON\n"
        "  -h, --help           this help\n"
        "\n"
        "Exit codes: the container's status in the foreground; 3 refused (policy hash not\n"
        "bound, policy denial, image verification, key); 1 other failures.\n");
}

static volatile sig_atomic_t g_stop_sig;
static void on_signal(int sig)
{
    g_stop_sig = sig;
}

/* Copy what was appended to @fd since the last call to stdout. */
static void pump(int fd)
{
    char buf[8192];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        if (util_write_all(STDOUT_FILENO, buf, (size_t)r) < 0)
            break;
}

static int run_foreground(const rt_config *c, const char *id, pid_t pid, bool logs, bool rm,
                          bool json)
{
    _cleanup_close_ int lfd = -1;
    if (logs) {
        _cleanup_free_ char *lp = xasprintf("%s/%s/%s/%s", c->root, id, AGENT_TEE_DIR, AGENT_LOG);
        lfd = open(lp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = -1, code = 0, forwarded = 0;
    _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        if (lfd >= 0)
            pump(lfd);
        if (g_stop_sig) {
            cista_error *e2 = NULL;
            /* the second signal escalates: an init that ignores SIGTERM is killed */
            int sig = forwarded++ ? SIGKILL : (int)g_stop_sig;
            if (rt_kill(c, id, sig, false, &e2) < 0) {
                _cleanup_free_ char *s = err_str(e2);
                log_warn("forwarding signal %d: %s", sig, s);
                err_free(e2);
            }
            g_stop_sig = 0;
        }
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (pidfd >= 0) {
            /* wake up when the container exits, or to copy new output */
            struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
            poll(&pfd, 1, lfd >= 0 ? 50 : 500);
            continue;
        }
        if (w < 0 && errno != EINTR)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (lfd >= 0)
        pump(lfd);
    if (status >= 0)
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (json) {
        json_t *info = NULL;
        cista_error *e2 = NULL;
        if (rt_inspect(&info, c, id, &e2) == 0) {
            json_object_set_new(info, "exit_code", json_integer(code));
            cli_print_json(info);
            json_decref(info);
        } else {
            err_free(e2);
        }
    }
    if (rm) {
        cista_error *e2 = NULL;
        if (rt_delete(c, id, true, &e2) < 0)
            return fail(e2);
    }
    return code;
}

static int cmd_run(int argc, char **argv)
{
    enum {
        O_POLICY = 256,
        O_KBS,
        O_TEE,
        O_HASH,
        O_CONTAINER,
        O_IMAGE_KEY,
        O_KEY,
        O_SECRET,
        O_NAME,
        O_RM,
        O_NETWORK,
        O_CONFIG,
        O_JSON,
    };
    /* volumes: the specs are split in place, in argv */
    agent_volume_request vols[MAX_LIST];
    size_t nvols = 0;
    static const struct option opts[] = {
        {"policy", required_argument, NULL, O_POLICY},
        {"kbs", required_argument, NULL, O_KBS},
        {"tee", required_argument, NULL, O_TEE},
        {"policy-hash", required_argument, NULL, O_HASH},
        {"container", required_argument, NULL, O_CONTAINER},
        {"image-key", required_argument, NULL, O_IMAGE_KEY},
        {"key-file", required_argument, NULL, O_KEY},
        {"secret-file", required_argument, NULL, O_SECRET},
        {"name", required_argument, NULL, O_NAME},
        {"detach", no_argument, NULL, 'd'},
        {"rm", no_argument, NULL, O_RM},
        {"env", required_argument, NULL, 'e'},
        {"network", required_argument, NULL, O_NETWORK},
        {"volume", required_argument, NULL, 'v'},
        {"config", required_argument, NULL, O_CONFIG},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *policy = NULL, *name = NULL, *config = NULL;
    const char *keys[MAX_LIST], *secrets[MAX_LIST], *env[MAX_LIST + 1];
    size_t nkeys = 0, nsecrets = 0, nenv = 0;
    bool detach = false, rm = false, host_net = false, json = g_cli.json;
    rt_confidential conf = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "+de:v:h", opts, NULL)) != -1) {
        switch (ch) {
        case O_POLICY:
            policy = optarg;
            break;
        case O_KBS:
            conf.kbs = optarg;
            break;
        case O_TEE:
            conf.tee = optarg;
            break;
        case O_HASH:
            if (strlen(optarg) != 64) {
                return cli_usage_see("run", "--policy-hash wants 64 hex digits");
            } else {
                cista_error *e = NULL;
                if (hex_decode_to(conf.policy_hash, 32, optarg, &e) < 0) {
                    err_free(e);
                    return cli_usage_see("run", "--policy-hash wants 64 hex digits");
                }
                conf.has_hash = true;
            }
            break;
        case O_CONTAINER:
            conf.container = optarg;
            break;
        case O_IMAGE_KEY:
            conf.image_key = optarg;
            break;
        case O_KEY:
            if (nkeys == MAX_LIST)
                return cli_usage_see("run", "too many --key-file");
            keys[nkeys++] = optarg;
            break;
        case O_SECRET:
            if (nsecrets == MAX_LIST)
                return cli_usage_see("run", "too many --secret-file");
            secrets[nsecrets++] = optarg;
            break;
        case O_NAME:
            name = optarg;
            break;
        case 'd':
            detach = true;
            break;
        case O_RM:
            rm = true;
            break;
        case 'e':
            if (nenv == MAX_LIST)
                return cli_usage_see("run", "too many --env");
            env[nenv++] = optarg;
            break;
        case O_NETWORK:
            if (!strcmp(optarg, "host"))
                host_net = true;
            else if (strcmp(optarg, "none"))
                return cli_usage_see("run", "--network is none or host");
            break;
        case 'v': {
            if (nvols == MAX_LIST)
                return cli_usage_see("run", "too many --volume");
            cista_error *ve = NULL;
            if (agent_volume_request_parse(&vols[nvols], optarg, &ve) < 0)
                return cli_fail(ve);
            nvols++;
            break;
        }
        case O_CONFIG:
            config = optarg;
            break;
        case O_JSON:
            json = true;
            break;
        case 'h':
            return cli_usage(run_usage, true);
        default:
            return cli_usage_see("run", "bad option");
        }
    }
    env[nenv] = NULL;
    if (optind >= argc)
        return cli_usage_see("run", "IMAGE-REF is missing");
    if (!policy)
        return cli_usage_see("run", "--policy is required");
    if (detach && rm)
        return cli_usage_see("run", "--rm needs the foreground (no --detach)");
    conf.image = argv[optind++];
    if (optind < argc && !strcmp(argv[optind], "--"))
        optind++;
    const char *const *args = optind < argc ? (const char *const *)argv + optind : NULL;
    if (nkeys || nsecrets)
        log_warn("DEVELOPMENT MODE: --key-file/--secret-file bypass the KBS; keys and secrets "
                 "are released without attestation. Never use this in production.");

    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, config);
    if (rc)
        return rc;
    cista_error *e = NULL;
    size_t psize;
    if (util_read_file(&conf.policy, &psize, policy, POL_MAX_POLICY, &e) < 0) {
        err_wrap(&e, "--policy");
        return fail(e);
    }
    conf.policy_size = psize;
    char idbuf[32];
    if (!name) {
        uint8_t rnd[6];
        if (crypto_random(rnd, sizeof(rnd), &e) < 0) {
            free(conf.policy);
            return fail(e);
        }
        _cleanup_free_ char *h = hex_encode(rnd, sizeof(rnd));
        snprintf(idbuf, sizeof(idbuf), "%s", h);
        name = idbuf;
    }
    /* a relative DIR is relative to here; the sandbox resolves and checks it */
    char cwd[4096];
    size_t absize = 1;
    for (size_t i = 0; i < nvols; i++)
        absize += strlen(vols[i].backing) + sizeof(cwd) + 2;
    _cleanup_free_ char *absblk = xzalloc(absize);
    char *at = absblk;
    for (size_t i = 0; i < nvols; i++) {
        if (vols[i].backing[0] == '/')
            continue;
        if (!getcwd(cwd, sizeof(cwd))) {
            free(conf.policy);
            err_set_sys(&e, -errno, "--volume %s: the current directory", vols[i].name);
            return fail(e);
        }
        int w = sprintf(at, "%s/%s", cwd, vols[i].backing);
        vols[i].backing = at;
        at += w + 1;
    }
    rt_create_opts co = {
        .confidential = &conf,
        .args = args,
        .env = env,
        .host_network = host_net,
        .volumes = vols,
        .volume_count = nvols,
        .key_files = keys,
        .key_count = nkeys,
        .secret_specs = secrets,
        .secret_count = nsecrets,
        .stdio_fd = -1,
    };
    /* the container's output goes to its log in the sandbox (read back if the policy allows) */
    co.to_sandbox_log = true;
    /* foreground: one delegate `run` (create, start, wait) that is our child */
    pid_t run_pid = -1;
    if (!detach)
        co.run_pid = &run_pid;
    rc = rt_create(c, name, NULL, &co, &e);
    free(conf.policy);
    if (rc < 0)
        return fail(e);
    if (detach && rt_start(c, name, &e) < 0) {
        cista_error *e2 = NULL;
        if (rt_delete(c, name, true, &e2) < 0)
            err_free(e2);
        return fail(e);
    }
    json_t *info = NULL;
    bool logs = false;
    if (rt_inspect(&info, c, name, &e) < 0)
        return fail(e);
    logs = json_is_true(json_object_get(info, "logs"));
    if (detach) {
        if (json)
            cli_print_json(info);
        else
            printf("%s\n", name);
        json_decref(info);
        return CLI_EXIT_OK;
    }
    json_decref(info);
    if (!logs && !g_cli.quiet)
        fprintf(stderr, "cista: the policy does not let the host read this container's output\n");
    return run_foreground(c, name, run_pid, logs, rm, json);
}

/* ---- cista ps / inspect / logs / exec / stop / rm ---- */

static int simple_opts(int argc, char **argv, const char *usage, bool *json)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (ch == 'j') {
            *json = true;
        } else {
            return cli_usage_text(usage, ch == 'h');
        }
    }
    return -1;
}

static int cmd_ps(int argc, char **argv)
{
    static const char usage[] =
        "Usage: cista ps [--json]            list containers\n"
        "       cista ps [--format table|json] ID   the processes of container ID (OCI)\n";
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = g_cli.json;
    int ch;
    while ((ch = getopt_long(argc, argv, "+f:h", opts, NULL)) != -1) {
        if (ch == 'j') {
            json = true;
        } else if (ch == 'f') {
            json = !strcmp(optarg, "json");
        } else {
            return cli_usage_text(usage, ch == 'h');
        }
    }
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    json_t *out = NULL;
    if (optind < argc) {
        if (rt_ps(&out, c, argv[optind], &e) < 0)
            return fail(e);
        if (json) {
            cli_print_json_line(out);
        } else {
            printf("PID\n");
            size_t i;
            json_t *v;
            json_array_foreach(out, i, v) printf("%lld\n", (long long)json_integer_value(v));
        }
        json_decref(out);
        return CLI_EXIT_OK;
    }
    if (rt_list(&out, c, &e) < 0)
        return fail(e);
    if (json) {
        cli_print_json(out);
    } else {
        printf("%-16s %-12s %-5s %-8s %-8s %s\n", "ID", "MODE", "TEE", "STATUS", "PID", "IMAGE");
        size_t i;
        json_t *v;
        json_array_foreach(out, i, v)
        {
            const char *tee = json_string_value(json_object_get(v, "tee"));
            const char *img = json_string_value(json_object_get(v, "image"));
            printf("%-16s %-12s %-5s %-8s %-8lld %s\n", json_string_value(json_object_get(v, "id")),
                   json_string_value(json_object_get(v, "mode")), tee ? tee : "-",
                   json_string_value(json_object_get(v, "status")),
                   (long long)json_integer_value(json_object_get(v, "pid")), img ? img : "-");
        }
    }
    json_decref(out);
    return CLI_EXIT_OK;
}

static int cmd_inspect(int argc, char **argv)
{
    bool json = true;
    int r = simple_opts(argc, argv,
                        "Usage: cista inspect ID\n\nMode, TEE, image, policy hash, key source, "
                        "attestation claims, launch timings and rootfs kind (overlay, "
                        "readonly-bind, private) of a container (JSON).\n",
                        &json);
    if (r >= 0)
        return r;
    if (optind >= argc)
        return cli_usage_see("inspect", "ID is missing");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    json_t *out = NULL;
    if (rt_inspect(&out, c, argv[optind], &e) < 0)
        return fail(e);
    cli_print_json(out);
    json_decref(out);
    return CLI_EXIT_OK;
}

static int cmd_logs(int argc, char **argv)
{
    bool json = false;
    int r = simple_opts(argc, argv,
                        "Usage: cista logs ID\n\nPrint the container's output, if its policy lets "
                        "the host read it (rule logs); a denial exits 3.\n",
                        &json);
    if (r >= 0)
        return r;
    if (optind >= argc)
        return cli_usage_see("logs", "ID is missing");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    _cleanup_free_ char *out = NULL;
    size_t size;
    if (rt_logs(&out, &size, c, argv[optind], &e) < 0)
        return fail(e);
    if (util_write_all(STDOUT_FILENO, out, size) < 0)
        return CLI_EXIT_FAILURE;
    return CLI_EXIT_OK;
}

/*
 * --preserve-fds N hands the caller's descriptors 3..N+2 to the container (socket activation).
 * The delegate is started with stdio only, and a confidential container takes nothing from the
 * host but its stdio and console: N > 0 is refused rather than silently dropped.
 */
static int check_preserve_fds(const char *verb, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(arg, &end, 10);
    if (errno || *end || end == arg)
        return cli_usage_see(verb, "--preserve-fds wants a number");
    if (n > 0)
        return cli_usage_see(verb,
                             "--preserve-fds %lu: cista passes no descriptors of the caller "
                             "into a container (only its stdio and console)",
                             n);
    return -1;
}

static int cmd_exec(int argc, char **argv)
{
    static const char usage[] =
        "Usage: cista exec [OPTIONS] ID [--] CMD [ARGS...]\n"
        "       cista exec --process FILE [--detach] [--pid-file F] [--console-socket S] ID\n"
        "\n"
        "Run a process in a container. For a confidential container the command, env,\n"
        "cwd, user and capabilities must be allowed by the policy's exec rules.\n"
        "\n"
        "  -p, --process FILE     OCI process JSON (as runc)\n"
        "  -d, --detach           do not wait for the process\n"
        "  --pid-file FILE        write the process's pid there\n"
        "  --console-socket SOCK  send the terminal's master fd there\n"
        "  -t, --tty              allocate a terminal (with CMD)\n"
        "  -e, --env NAME=VALUE   add an env variable (with CMD)\n"
        "  --cwd DIR              working directory (with CMD)\n"
        "  --preserve-fds 0       accepted (no descriptor of the caller is passed)\n";
    enum { O_PID = 256, O_CONSOLE, O_CWD, O_PRESERVE };
    static const struct option opts[] = {
        {"process", required_argument, NULL, 'p'},
        {"detach", no_argument, NULL, 'd'},
        {"pid-file", required_argument, NULL, O_PID},
        {"console-socket", required_argument, NULL, O_CONSOLE},
        {"tty", no_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},
        {"cwd", required_argument, NULL, O_CWD},
        {"preserve-fds", required_argument, NULL, O_PRESERVE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    rt_exec_opts o = {0};
    const char *env[MAX_LIST + 1];
    size_t nenv = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+p:dte:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            o.process_file = optarg;
            break;
        case 'd':
            o.detach = true;
            break;
        case O_PID:
            o.pid_file = optarg;
            break;
        case O_CONSOLE:
            o.console_socket = optarg;
            break;
        case 't':
            o.tty = true;
            break;
        case 'e':
            if (nenv == MAX_LIST)
                return cli_usage_see("exec", "too many --env");
            env[nenv++] = optarg;
            break;
        case O_CWD:
            o.cwd = optarg;
            break;
        case O_PRESERVE: {
            int r = check_preserve_fds("exec", optarg);
            if (r >= 0)
                return r;
            break;
        }
        case 'h':
        default:
            return cli_usage_text(usage, ch == 'h');
        }
    }
    env[nenv] = NULL;
    o.env = env;
    if (optind >= argc)
        return cli_usage_see("exec", "ID is missing");
    const char *id = argv[optind++];
    if (optind < argc && !strcmp(argv[optind], "--"))
        optind++;
    o.args = optind < argc ? (const char *const *)argv + optind : NULL;
    if (!o.process_file && !o.args)
        return cli_usage_see("exec", "CMD or --process is missing");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    int status = 0;
    if (rt_exec(o.detach ? NULL : &status, c, id, &o, &e) < 0)
        return fail(e);
    return status;
}

static bool is_stopped(const rt_config *c, const char *id)
{
    json_t *s = NULL;
    cista_error *e = NULL;
    if (rt_state(&s, c, id, &e) < 0) {
        err_free(e);
        return true;
    }
    const char *st = json_string_value(json_object_get(s, "status"));
    bool r = !st || !strcmp(st, "stopped");
    json_decref(s);
    return r;
}

static int stop_one(const rt_config *c, const char *id, int timeout, cista_error **err)
{
    if (is_stopped(c, id))
        return 0;
    if (rt_kill(c, id, SIGTERM, false, err) < 0)
        return -1;
    for (int i = 0; i < timeout * 20; i++) {
        if (is_stopped(c, id))
            return 0;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rt_kill(c, id, SIGKILL, false, err) < 0)
        return -1;
    for (int i = 0; i < 100 && !is_stopped(c, id); i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int rm_one(const rt_config *c, const char *id, int force, cista_error **err)
{
    return rt_delete(c, id, force, err);
}

/* stop and rm: @one(c, ID, @arg) for each ID from argv[optind], printing the ID once done. */
static int each_id(const char *verb, int argc, char **argv,
                   int (*one)(const rt_config *c, const char *id, int arg, cista_error **err),
                   int arg)
{
    if (optind >= argc)
        return cli_usage_see(verb, "ID is missing");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    for (int i = optind; i < argc; i++) {
        cista_error *e = NULL;
        if (one(c, argv[i], arg, &e) < 0)
            return fail(e);
        printf("%s\n", argv[i]);
    }
    return CLI_EXIT_OK;
}

static int cmd_stop(int argc, char **argv)
{
    static const char usage[] = "Usage: cista stop [-t SECONDS] ID...\n\nSIGTERM, then SIGKILL "
                                "after SECONDS (default 10); both must be allowed by the "
                                "policy's signals.\n";
    static const struct option opts[] = {
        {"time", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int timeout = 10, ch;
    while ((ch = getopt_long(argc, argv, "+t:h", opts, NULL)) != -1) {
        if (ch == 't') {
            timeout = atoi(optarg);
        } else {
            return cli_usage_text(usage, ch == 'h');
        }
    }
    return each_id("stop", argc, argv, stop_one, timeout);
}

static int cmd_rm(int argc, char **argv)
{
    static const char usage[] = "Usage: cista rm [-f] ID...\n\nRemove stopped containers; -f "
                                "kills running ones first. The sandbox's memory (decrypted "
                                "rootfs, secrets) goes with them.\n";
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool force = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "+fh", opts, NULL)) != -1) {
        if (ch == 'f') {
            force = true;
        } else {
            return cli_usage_text(usage, ch == 'h');
        }
    }
    return each_id("rm", argc, argv, rm_one, force);
}

/* ---- OCI runtime verbs ---- */

static int oci_usage(const char *verb, const char *text, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("Usage: cista %s %s", verb, text);
            return CLI_EXIT_OK;
        }
    }
    return -1;
}

static int cmd_create(int argc, char **argv)
{
    static const char text[] =
        "--bundle DIR [--pid-file FILE] [--console-socket SOCK] ID\n"
        "\n"
        "OCI runtime create (as runc). A bundle with the io.cista.image and io.cista.policy\n"
        "(or io.cista.policy-file) annotations is confidential: its rootfs is ignored; the\n"
        "image is decrypted into the sandbox's memory after attestation and the container\n"
        "is built from image + policy. Other bundles run only with \"allow_plain\".\n"
        "Accepted and ignored: --no-pivot, --no-new-keyring, --preserve-fds 0.\n";
    int r = oci_usage("create", text, argc, argv);
    if (r >= 0)
        return r;
    enum { O_PID = 256, O_CONSOLE, O_NOPIVOT, O_NOKEYRING, O_PRESERVE };
    static const struct option opts[] = {
        {"bundle", required_argument, NULL, 'b'},
        {"pid-file", required_argument, NULL, O_PID},
        {"console-socket", required_argument, NULL, O_CONSOLE},
        {"no-pivot", no_argument, NULL, O_NOPIVOT},
        {"no-new-keyring", no_argument, NULL, O_NOKEYRING},
        {"preserve-fds", required_argument, NULL, O_PRESERVE},
        {0},
    };
    const char *bundle = ".";
    rt_create_opts o = {.stdio_fd = -1};
    int ch;
    while ((ch = getopt_long(argc, argv, "+b:", opts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            bundle = optarg;
            break;
        case O_PID:
            o.pid_file = optarg;
            break;
        case O_CONSOLE:
            o.console_socket = optarg;
            break;
        case O_PRESERVE: {
            int pr = check_preserve_fds("create", optarg);
            if (pr >= 0)
                return pr;
            break;
        }
        case O_NOPIVOT:
        case O_NOKEYRING:
            break;
        default:
            return cli_usage_see("create", "bad option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_see("create", "exactly one container ID is expected");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    if (rt_create(c, argv[optind], bundle, &o, &e) < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

static int cmd_id_verb(int argc, char **argv)
{
    const char *verb = argv[0];
    static const char text[] = "ID\n";
    int r = oci_usage(verb, text, argc, argv);
    if (r >= 0)
        return r;
    if (argc != 2)
        return cli_usage_see(verb, "exactly one container ID is expected");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    if (!strcmp(verb, "start"))
        rc = rt_start(c, argv[1], &e);
    else if (!strcmp(verb, "pause"))
        rc = rt_pause(c, argv[1], true, &e);
    else if (!strcmp(verb, "resume"))
        rc = rt_pause(c, argv[1], false, &e);
    else {
        json_t *s = NULL;
        rc = rt_state(&s, c, argv[1], &e);
        if (rc == 0) {
            cli_print_json(s);
            json_decref(s);
        }
    }
    if (rc < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

static int cmd_update(int argc, char **argv)
{
    static const char text[] = "--resources FILE|- ID\n\nSet the container's cgroup limits "
                               "from an OCI LinuxResources JSON document (as runc update "
                               "--resources; - reads standard input).\n";
    int r = oci_usage("update", text, argc, argv);
    if (r >= 0)
        return r;
    static const struct option opts[] = {{"resources", required_argument, NULL, 'r'}, {0}};
    const char *res = NULL;
    optind = 0;
    int o;
    while ((o = getopt_long(argc, argv, "+r:", opts, NULL)) != -1) {
        if (o != 'r')
            return cli_usage_see("update", "only --resources is supported");
        res = optarg;
    }
    if (!res || optind != argc - 1)
        return cli_usage_see("update", "--resources FILE|- and one container ID are expected");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    _cleanup_free_ char *data = NULL;
    size_t size = 0;
    if (!strcmp(res, "-"))
        rc = util_read_file(&data, &size, "/dev/stdin", 1u << 20, &e);
    else
        rc = util_read_regular_file(&data, &size, res, 1u << 20, &e);
    if (rc < 0 || rt_update(c, argv[optind], data, size, &e) < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

static int cmd_kill(int argc, char **argv)
{
    static const char text[] = "[--all] ID [SIGNAL]\n\nSend SIGNAL (default SIGTERM; a "
                               "number or a name) to the container; a confidential "
                               "container's policy must allow it (rule signals).\n";
    int r = oci_usage("kill", text, argc, argv);
    if (r >= 0)
        return r;
    static const struct option opts[] = {
        {"all", no_argument, NULL, 'a'},
        {0},
    };
    bool all = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "+a", opts, NULL)) != -1) {
        if (ch == 'a')
            all = true;
        else
            return cli_usage_see("kill", "bad option");
    }
    if (optind >= argc || argc - optind > 2)
        return cli_usage_see("kill", "expected ID [SIGNAL]");
    int sig = SIGTERM;
    if (argc - optind == 2 && (sig = util_signal_parse(argv[optind + 1])) < 0)
        return cli_usage_see("kill", "unknown signal");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    if (rt_kill(c, argv[optind], sig, all, &e) < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

static int cmd_delete(int argc, char **argv)
{
    static const char text[] = "[--force] ID\n\nDelete a container and its sandbox (the "
                               "tmpfs with the decrypted rootfs and secrets).\n";
    int r = oci_usage("delete", text, argc, argv);
    if (r >= 0)
        return r;
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {0},
    };
    bool force = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "+f", opts, NULL)) != -1) {
        if (ch == 'f')
            force = true;
        else
            return cli_usage_see("delete", "bad option");
    }
    if (optind + 1 != argc)
        return cli_usage_see("delete", "exactly one container ID is expected");
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    if (rt_delete(c, argv[optind], force, &e) < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

static int cmd_features(int argc, char **argv)
{
    int r = oci_usage("features", "\n\nSupported OCI features and cista's annotations (JSON).\n",
                      argc, argv);
    if (r >= 0)
        return r;
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    json_t *f = rt_features(c);
    cli_print_json(f);
    json_decref(f);
    return CLI_EXIT_OK;
}

static int cmd_spec(int argc, char **argv)
{
    int r = oci_usage("spec", "[--bundle DIR]\n\nWrite a default config.json (the delegate's).\n",
                      argc, argv);
    if (r >= 0)
        return r;
    static const struct option opts[] = {
        {"bundle", required_argument, NULL, 'b'},
        {"rootless", no_argument, NULL, 'r'},
        {0},
    };
    const char *bundle = ".";
    int ch;
    while ((ch = getopt_long(argc, argv, "+b:", opts, NULL)) != -1) {
        if (ch == 'b')
            bundle = optarg;
        else if (ch != 'r')
            return cli_usage_see("spec", "bad option");
    }
    _cleanup_rt_config_ rt_config *c = NULL;
    int rc = load_config(&c, NULL);
    if (rc)
        return rc;
    cista_error *e = NULL;
    if (rt_spec(c, bundle, &e) < 0)
        return fail(e);
    return CLI_EXIT_OK;
}

int cli_run(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } verbs[] = {
        {"run", cmd_run},         {"ps", cmd_ps},         {"exec", cmd_exec},
        {"logs", cmd_logs},       {"stop", cmd_stop},     {"rm", cmd_rm},
        {"inspect", cmd_inspect}, {"create", cmd_create}, {"start", cmd_id_verb},
        {"state", cmd_id_verb},   {"pause", cmd_id_verb}, {"resume", cmd_id_verb},
        {"kill", cmd_kill},       {"delete", cmd_delete}, {"features", cmd_features},
        {"spec", cmd_spec},       {"update", cmd_update},
    };
    for (size_t i = 0; i < ARRAY_LEN(verbs); i++)
        if (!strcmp(argv[0], verbs[i].name))
            return verbs[i].fn(argc, argv);
    fprintf(stderr, "cista: unknown command '%s'\n", argv[0]);
    return CLI_EXIT_USAGE;
}
