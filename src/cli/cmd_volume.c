/*
 * cmd_volume.c - `cista volume create|mount|unmount|fsck|info`: encrypted,
 * integrity- and rollback-protected volumes served over FUSE. The format
 * is docs/volume-format.md; the guide is docs/volumes.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"
#include "volume/volume.h"

#define LOCK_NAME "lock"

static void usage_main(FILE *out)
{
    fprintf(out, "Usage: cista volume COMMAND [OPTIONS]\n"
                 "\n"
                 "Commands:\n"
                 "  create    make an empty encrypted volume in a backing directory\n"
                 "  mount     serve a volume over FUSE\n"
                 "  unmount   unmount it and wait for the final commit\n"
                 "  fsck      authenticate every block and check the structure\n"
                 "  info      show the superblock (generation, root, volume id)\n"
                 "\n"
                 "`cista volume COMMAND --help` for the options. Guide: docs/volumes.md.\n");
}

static void usage_create(FILE *out)
{
    fprintf(out, "Usage: cista volume create DIR --key-file K [--anchor FILE]\n"
                 "\n"
                 "  DIR              backing directory (created; must not hold a volume)\n"
                 "  --key-file K     32-byte volume key (raw or 64 hex digits); generated\n"
                 "                   (mode 0600) when K does not exist\n"
                 "  --anchor FILE    trusted rollback anchor to initialise (keep it where the\n"
                 "                   host cannot roll it back)\n");
}

static void usage_mount(FILE *out)
{
    fprintf(out,
            "Usage: cista volume mount DIR MNT (--key-file K | --key-fd N)\n"
            "                          [--anchor FILE|kbs:URL/repo/type/tag]\n"
            "                          [--kbs-ca CA.pem --tee sim|tpm [--sim-state DIR]]\n"
            "                          [--rollback strict|reset|off] [-f] [--commit-interval MS]\n"
            "\n"
            "  --key-fd N         read the key (32 raw bytes or 64 hex digits) from fd N\n"
            "                     until EOF instead of a file (a pipe: the runtime passes keys\n"
            "                     released by the KBS this way, never through a disk)\n"
            "  --anchor FILE      rollback anchor; mount refuses a volume older than it\n"
            "  --anchor kbs:https://HOST:PORT/repo/type/tag\n"
            "                     the anchor is a KBS counter only this attested workload\n"
            "                     may advance (advanced on every sync and at unmount)\n"
            "  --kbs-ca CA.pem    CA the KBS certificate must chain to\n"
            "  --tee TEE          evidence for the KBS: sim or tpm\n"
            "  --sim-state DIR    sim: evidence state directory\n"
            "  --host-data HEX    sim: the launch value (64 hex digits, the workload's policy\n"
            "                     hash) bound in the anchor's reports (default: zeros)\n"
            "  --tpm-tcti CONF    tpm: TCTI (swtpm:host=127.0.0.1,port=N)\n"
            "  --rollback MODE    strict (default with --anchor): refuse a rollback;\n"
            "                     reset: start over empty after a rollback;\n"
            "                     off (default without --anchor): accept, with a warning\n"
            "  -f, --foreground   stay in the foreground (logs on stderr)\n"
            "  --commit-interval MS  periodic commit (default 5000); fsync commits at once\n"
            "  --debug            FUSE request tracing\n");
}

static void usage_unmount(FILE *out)
{
    fprintf(out, "Usage: cista volume unmount MNT [--timeout SECONDS]\n"
                 "\n"
                 "Unmounts and waits (default 60 s) until the daemon has written its final\n"
                 "commit and released the backing directory.\n");
}

static void usage_fsck(FILE *out)
{
    fprintf(out, "Usage: cista volume fsck DIR --key-file K [--anchor FILE] [--repair] [--json]\n"
                 "\n"
                 "Reads and authenticates every object, tree node and block, checks names,\n"
                 "link counts and unreferenced objects. --repair removes unreferenced objects\n"
                 "and inodes unlinked while open. Exit 0 clean, 1 problems found.\n");
}

static void usage_info(FILE *out)
{
    fprintf(out, "Usage: cista volume info DIR [--key-file K] [--json]\n"
                 "\n"
                 "Without a key: the plaintext header (volume id, generation). With the key:\n"
                 "also whether it matches, the authenticated root and inode counts.\n");
}

/* create and fsck take a file anchor: the KBS counter is reset by an admin. */
static int file_anchor_only(const char *anchor)
{
    if (anchor && !strncmp(anchor, "kbs:", 4))
        return cli_usage_report(
            "a KBS anchor is used by `cista volume mount` only (an admin creates "
            "the counter: `cista kbs admin counter-reset`); not ",
            anchor);
    return 0;
}

enum {
    OPT_KEY = 256,
    OPT_ANCHOR,
    OPT_ROLLBACK,
    OPT_INTERVAL,
    OPT_DEBUG,
    OPT_REPAIR,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_READY_FD,
    OPT_KBS_CA,
    OPT_TEE,
    OPT_SIM_STATE,
    OPT_TPM_TCTI,
    OPT_KEY_FD,
    OPT_HOST_DATA,
};

static const struct option g_long[] = {
    {"key-file", required_argument, NULL, OPT_KEY},
    {"anchor", required_argument, NULL, OPT_ANCHOR},
    {"rollback", required_argument, NULL, OPT_ROLLBACK},
    {"commit-interval", required_argument, NULL, OPT_INTERVAL},
    {"debug", no_argument, NULL, OPT_DEBUG},
    {"repair", no_argument, NULL, OPT_REPAIR},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"ready-fd", required_argument, NULL, OPT_READY_FD},
    {"kbs-ca", required_argument, NULL, OPT_KBS_CA},
    {"tee", required_argument, NULL, OPT_TEE},
    {"sim-state", required_argument, NULL, OPT_SIM_STATE},
    {"tpm-tcti", required_argument, NULL, OPT_TPM_TCTI},
    {"key-fd", required_argument, NULL, OPT_KEY_FD},
    {"host-data", required_argument, NULL, OPT_HOST_DATA},
    {"foreground", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

typedef struct vopts {
    const char *key_file;
    const char *anchor;
    const char *rollback;
    const char *kbs_ca, *tee, *sim_state, *tpm_tcti, *host_data;
    unsigned interval_ms;
    bool foreground, debug, repair, json, help;
    int timeout_s;
    int ready_fd;
    int key_fd;
    char *pos[2];
    int npos;
} vopts;

static int parse(vopts *o, int argc, char **argv, int max_pos, void (*usage)(FILE *))
{
    memset(o, 0, sizeof(*o));
    o->timeout_s = 60;
    o->ready_fd = -1;
    o->key_fd = -1;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "fh", g_long, NULL)) != -1) {
        switch (c) {
        case OPT_KEY:
            o->key_file = optarg;
            break;
        case OPT_ANCHOR:
            o->anchor = optarg;
            break;
        case OPT_ROLLBACK:
            o->rollback = optarg;
            break;
        case OPT_KBS_CA:
            o->kbs_ca = optarg;
            break;
        case OPT_TEE:
            o->tee = optarg;
            break;
        case OPT_SIM_STATE:
            o->sim_state = optarg;
            break;
        case OPT_HOST_DATA:
            o->host_data = optarg;
            break;
        case OPT_TPM_TCTI:
            o->tpm_tcti = optarg;
            break;
        case OPT_INTERVAL: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || v == 0 || v > 3600000)
                return cli_usage_report("--commit-interval wants milliseconds, got ", optarg);
            o->interval_ms = (unsigned)v;
            break;
        }
        case OPT_TIMEOUT:
            o->timeout_s = atoi(optarg);
            break;
        case OPT_READY_FD:
            o->ready_fd = atoi(optarg);
            break;
        case OPT_KEY_FD: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 1024)
                return cli_usage_report("--key-fd wants a file descriptor number, got ", optarg);
            o->key_fd = (int)v;
            break;
        }
        case OPT_DEBUG:
            o->debug = true;
            break;
        case OPT_REPAIR:
            o->repair = true;
            break;
        case OPT_JSON:
            o->json = true;
            g_cli.json = true;
            break;
        case 'f':
            o->foreground = true;
            break;
        case 'h':
            usage(stdout);
            o->help = true;
            return 0;
        default:
            return cli_usage_report("unknown option ", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (o->npos >= max_pos)
            return cli_usage_report("unexpected argument ", argv[i]);
        o->pos[o->npos++] = argv[i];
    }
    if (o->npos < max_pos)
        return cli_usage_report("missing argument", NULL);
    return 0;
}

static int load_key(uint8_t key[VOL_KEY_SIZE], const char *path, cista_error **err)
{
    if (!path)
        return err_set(err, -EINVAL,
                       "usage: --key-file is required (or, for mount, --key-fd: a confidential "
                       "container's runtime hands over the key released by the KBS that way)");
    return vol_key_load(key, path, err);
}

/* The key from @fd (read to EOF, then closed): 32 raw bytes or 64 hex digits. */
static int read_key_fd(uint8_t key[VOL_KEY_SIZE], int fd, cista_error **err)
{
    uint8_t buf[2 * VOL_KEY_SIZE + 2];
    size_t n = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = err_set_sys(err, -errno, "--key-fd %d", fd);
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof(buf)) {
            rc = err_set(err, -EINVAL, "--key-fd %d: more than a volume key", fd);
            break;
        }
    }
    close(fd);
    if (rc == 0)
        rc = agent_volume_key_parse(key, buf, n, "--key-fd", err);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

static int open_store_locked(vol_store **st, int *lockfd, const char *dir, bool wait,
                             cista_error **err)
{
    int r = vol_store_dir_new(st, dir, false, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *lp = xasprintf("%s/%s", dir, LOCK_NAME);
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = err_set_sys(err, -errno, "lock file %s", lp);
        vol_store_free(*st);
        return r;
    }
    if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
        r = err_set(err, -EBUSY, "volume %s is in use (mounted or being checked)", dir);
        close(fd);
        vol_store_free(*st);
        return r;
    }
    *lockfd = fd;
    return 0;
}

static int cmd_create(int argc, char **argv)
{
    vopts o;
    int rc = parse(&o, argc, argv, 1, usage_create);
    if (rc || o.help || (rc = file_anchor_only(o.anchor)))
        return rc;
    cista_error *e = NULL;
    uint8_t key[VOL_KEY_SIZE];
    int r;
    if (!o.key_file)
        return cli_usage_report("--key-file is required", NULL);
    if (access(o.key_file, F_OK) == 0) {
        r = vol_key_load(key, o.key_file, &e);
    } else {
        r = vol_key_generate(key, o.key_file, &e);
        if (r == 0 && !g_cli.quiet)
            fprintf(stderr, "cista: generated a new volume key in %s; keep it safe\n", o.key_file);
    }
    if (r < 0)
        return cli_fail(e);
    _cleanup_vol_store_ vol_store *st = NULL;
    vol_info info;
    if ((r = vol_store_dir_new(&st, o.pos[0], true, &e)) < 0 ||
        (r = vol_create(st, key, NULL, &info, &e)) < 0) {
        OPENSSL_cleanse(key, sizeof(key));
        return cli_fail(e);
    }
    if (o.anchor) {
        vol_anchor *a = vol_anchor_file_new(o.anchor, key, info.volume_id);
        r = a->ops->advance(a->ctx, info.generation, info.root, &e);
        vol_anchor_free(a);
        if (r < 0) {
            OPENSSL_cleanse(key, sizeof(key));
            return cli_fail(e);
        }
    }
    OPENSSL_cleanse(key, sizeof(key));
    _cleanup_free_ char *id = hex_encode(info.volume_id, VOL_ID_SIZE);
    if (g_cli.json)
        printf("{\"volume_id\":\"%s\",\"generation\":%" PRIu64 "}\n", id, info.generation);
    else if (!g_cli.quiet)
        printf("created volume %s in %s (generation %" PRIu64 ")\n", id, o.pos[0], info.generation);
    return CLI_EXIT_OK;
}

static int cmd_mount(int argc, char **argv)
{
    vopts o;
    int rc = parse(&o, argc, argv, 2, usage_mount);
    if (rc || o.help)
        return rc;
    vol_rollback_mode mode = o.anchor ? VOL_ROLLBACK_STRICT : VOL_ROLLBACK_OFF;
    if (o.rollback && vol_rollback_parse(&mode, o.rollback) < 0)
        return cli_usage_report("--rollback must be strict, reset or off, not ", o.rollback);
    if (!o.anchor && mode != VOL_ROLLBACK_OFF)
        return cli_usage_report("--rollback strict/reset needs --anchor FILE", NULL);
    bool kbs_anchor = o.anchor && !strncmp(o.anchor, "kbs:", 4);
    if (kbs_anchor && !o.tee)
        return cli_usage_report("--anchor kbs:... needs --tee sim|tpm", NULL);
    if (!kbs_anchor && (o.tee || o.kbs_ca || o.sim_state || o.tpm_tcti || o.host_data))
        return cli_usage_report(
            "--tee, --kbs-ca, --sim-state, --tpm-tcti, --host-data go with --anchor kbs:...", NULL);
    uint8_t host_data[EV_HOST_DATA_SIZE];
    if (o.host_data && (strlen(o.host_data) != 2 * sizeof(host_data) ||
                        hex_decode_to(host_data, sizeof(host_data), o.host_data, NULL) < 0))
        return cli_usage_report("--host-data must be 64 hex digits, not ", o.host_data);
    cista_error *e = NULL;
    _cleanup_free_ char *kbs_url = NULL, *kbs_path = NULL;
    if (kbs_anchor && vol_anchor_kbs_parse(&kbs_url, &kbs_path, o.anchor, &e) < 0)
        return cli_fail(e);
    uint8_t key[VOL_KEY_SIZE];
    if (o.key_fd >= 0 && o.key_file)
        return cli_usage_report("give --key-file or --key-fd, not both", NULL);
    if (o.key_fd >= 0 ? read_key_fd(key, o.key_fd, &e) < 0 : load_key(key, o.key_file, &e) < 0)
        return cli_fail(e);
    char dir[PATH_MAX], mnt[PATH_MAX];
    if (!realpath(o.pos[0], dir) || !realpath(o.pos[1], mnt)) {
        OPENSSL_cleanse(key, sizeof(key));
        err_set_sys(&e, -errno, "resolve %s / %s", o.pos[0], o.pos[1]);
        return cli_fail(e);
    }
    vol_store *st = NULL;
    int lockfd = -1;
    if (open_store_locked(&st, &lockfd, dir, false, &e) < 0) {
        OPENSSL_cleanse(key, sizeof(key));
        return cli_fail(e);
    }
    vol_anchor *anchor = NULL;
    if (kbs_anchor) {
        vol_kbs_anchor_opts ko = {.url = kbs_url,
                                  .ca_file = o.kbs_ca,
                                  .tee = o.tee,
                                  .path = kbs_path,
                                  .sim_state = o.sim_state,
                                  .host_data = o.host_data ? host_data : NULL,
                                  .tpm_tcti = o.tpm_tcti};
        if (vol_anchor_kbs_new(&anchor, &ko, &e) < 0) {
            OPENSSL_cleanse(key, sizeof(key));
            vol_store_free(st);
            close(lockfd);
            return cli_fail(e);
        }
    } else if (o.anchor) {
        vol_info info;
        if (vol_read_info(&info, st, NULL, &e) < 0) {
            OPENSSL_cleanse(key, sizeof(key));
            vol_store_free(st);
            return cli_fail(e);
        }
        anchor = vol_anchor_file_new(o.anchor, key, info.volume_id);
    }
    vol_open_opts oo = {.rollback = mode, .anchor = anchor};
    vol_volume *v = NULL;
    int r = vol_open(&v, st, key, &oo, &e);
    OPENSSL_cleanse(key, sizeof(key));
    if (r < 0) {
        vol_anchor_free(anchor);
        close(lockfd);
        return cli_fail(e);
    }
    _cleanup_free_ char *fsname = xasprintf("cista:%s", dir);
    vol_fuse_opts fo = {
        .mountpoint = mnt,
        .fsname = fsname,
        .foreground = o.foreground,
        .debug = o.debug,
        .commit_interval_ms = o.interval_ms,
        .ready_fd = o.ready_fd,
    };
    r = vol_fuse_serve(v, &fo, &e);
    vol_anchor_free(anchor);
    close(lockfd);
    if (r < 0)
        return cli_fail(e);
    return CLI_EXIT_OK;
}

/* The backing directory of the cista FUSE mount at @mnt, from mountinfo. */
static char *backing_of(const char *mnt)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return NULL;
    char line[8192];
    char *found = NULL;
    while (fgets(line, sizeof(line), f)) {
        char *fields[12];
        int n = 0;
        char *save = NULL;
        for (char *t = strtok_r(line, " \n", &save); t && n < 12; t = strtok_r(NULL, " \n", &save))
            fields[n++] = t;
        if (n < 10 || strcmp(fields[4], mnt) != 0)
            continue;
        int dash = -1;
        for (int i = 6; i < n; i++)
            if (strcmp(fields[i], "-") == 0) {
                dash = i;
                break;
            }
        if (dash < 0 || dash + 2 >= n || strcmp(fields[dash + 1], "fuse.cista") != 0 ||
            strncmp(fields[dash + 2], "cista:", 6) != 0)
            continue;
        free(found);
        found = xstrdup(fields[dash + 2] + 6);
    }
    return found;
}

static int cmd_unmount(int argc, char **argv)
{
    vopts o;
    int rc = parse(&o, argc, argv, 1, usage_unmount);
    if (rc || o.help)
        return rc;
    cista_error *e = NULL;
    char mnt[PATH_MAX];
    if (!realpath(o.pos[0], mnt)) {
        err_set_sys(&e, -errno, "mountpoint %s", o.pos[0]);
        return cli_fail(e);
    }
    _cleanup_free_ char *dir = backing_of(mnt);
    if (!dir) {
        err_set(&e, -EINVAL, "%s is not a cista volume mount", mnt);
        return cli_fail(e);
    }
    if (umount2(mnt, 0) < 0) {
        int saved = errno;
        pid_t pid = fork();
        if (pid == 0) {
            execlp("fusermount3", "fusermount3", "-u", mnt, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            err_set_sys(&e, -saved, "unmount %s", mnt);
            return cli_fail(e);
        }
    }
    /* the daemon holds the lock until its final commit is durable */
    _cleanup_free_ char *lp = xasprintf("%s/%s", dir, LOCK_NAME);
    _cleanup_close_ int fd = open(lp, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        for (int i = 0; i < o.timeout_s * 10; i++) {
            if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                flock(fd, LOCK_UN);
                return CLI_EXIT_OK;
            }
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        err_set(&e, -ETIMEDOUT, "unmounted %s, but the daemon did not release %s within %d s", mnt,
                dir, o.timeout_s);
        return cli_fail(e);
    }
    return CLI_EXIT_OK;
}

static int cmd_fsck(int argc, char **argv)
{
    vopts o;
    int rc = parse(&o, argc, argv, 1, usage_fsck);
    if (rc || o.help || (rc = file_anchor_only(o.anchor)))
        return rc;
    cista_error *e = NULL;
    uint8_t key[VOL_KEY_SIZE];
    if (load_key(key, o.key_file, &e) < 0)
        return cli_fail(e);
    vol_store *st = NULL;
    int lockfd = -1;
    if (open_store_locked(&st, &lockfd, o.pos[0], false, &e) < 0) {
        OPENSSL_cleanse(key, sizeof(key));
        return cli_fail(e);
    }
    vol_anchor *anchor = NULL;
    if (o.anchor) {
        vol_info info;
        if (vol_read_info(&info, st, NULL, &e) == 0)
            anchor = vol_anchor_file_new(o.anchor, key, info.volume_id);
    }
    vol_open_opts oo = {.rollback = anchor ? VOL_ROLLBACK_STRICT : VOL_ROLLBACK_OFF,
                        .anchor = anchor,
                        .read_only = !o.repair};
    vol_volume *v = NULL;
    int r = vol_open(&v, st, key, &oo, &e);
    OPENSSL_cleanse(key, sizeof(key));
    if (r < 0) {
        vol_anchor_free(anchor);
        close(lockfd);
        return cli_fail(e);
    }
    uint64_t objects = 0, orphans = 0;
    r = vol_fsck(v, o.repair, &objects, &orphans, &e);
    vol_info info;
    vol_get_info(v, &info);
    cista_error *e2 = NULL;
    if (vol_close(v, &e2) < 0 && r == 0) {
        r = -EIO;
        e = e2;
        e2 = NULL;
    }
    err_free(e2);
    vol_anchor_free(anchor);
    close(lockfd);
    if (r < 0)
        return cli_fail(e);
    if (g_cli.json)
        printf("{\"clean\":%s,\"generation\":%" PRIu64 ",\"objects\":%" PRIu64
               ",\"orphans\":%" PRIu64 "}\n",
               orphans && !o.repair ? "false" : "true", info.generation, objects, orphans);
    else
        printf("volume %s: generation %" PRIu64 ", %" PRIu64 " backing objects, %" PRIu64
               " orphans%s\n",
               o.pos[0], info.generation, objects, orphans,
               orphans ? (o.repair ? " (removed)" : " (run with --repair)") : "");
    return orphans && !o.repair ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

static int cmd_info(int argc, char **argv)
{
    vopts o;
    int rc = parse(&o, argc, argv, 1, usage_info);
    if (rc || o.help)
        return rc;
    cista_error *e = NULL;
    uint8_t key[VOL_KEY_SIZE];
    bool have_key = o.key_file != NULL;
    if (have_key && vol_key_load(key, o.key_file, &e) < 0)
        return cli_fail(e);
    _cleanup_vol_store_ vol_store *st = NULL;
    if (vol_store_dir_new(&st, o.pos[0], false, &e) < 0)
        return cli_fail(e);
    vol_info info;
    int r = vol_read_info(&info, st, have_key ? key : NULL, &e);
    OPENSSL_cleanse(key, sizeof(key));
    if (r < 0)
        return cli_fail(e);
    _cleanup_free_ char *id = hex_encode(info.volume_id, VOL_ID_SIZE);
    _cleanup_free_ char *root = hex_encode(info.root, VOL_ROOT_SIZE);
    if (g_cli.json) {
        _cleanup_json_ json_t *j = json_object();
        json_object_set_new(j, "volume_id", json_string(id));
        json_object_set_new(j, "format_version", json_integer(info.version));
        json_object_set_new(j, "generation", json_integer((json_int_t)info.generation));
        json_object_set_new(j, "root", json_string(root));
        if (have_key) {
            json_object_set_new(j, "key_ok", json_boolean(info.key_ok));
            json_object_set_new(j, "next_inode", json_integer((json_int_t)info.next_ino));
            json_object_set_new(j, "mount_epoch", json_integer(info.mount_epoch));
            json_object_set_new(j, "created", json_integer(info.created));
        }
        cli_print_json(j);
    } else {
        printf("volume id:      %s\nformat version: %u\ngeneration:     %" PRIu64
               "\nroot:           %s\n",
               id, info.version, info.generation, root);
        if (have_key)
            printf("key:            %s\nnext inode:     %" PRIu64 "\nmount epoch:    %u\n",
                   info.key_ok ? "matches" : "WRONG", info.next_ino, info.mount_epoch);
    }
    return CLI_EXIT_OK;
}

int cli_volume(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage(usage_main, false);
    const char *c = argv[1];
    if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0)
        return cli_usage(usage_main, true);
    if (strcmp(c, "create") == 0)
        return cmd_create(argc - 1, argv + 1);
    if (strcmp(c, "mount") == 0)
        return cmd_mount(argc - 1, argv + 1);
    if (strcmp(c, "unmount") == 0 || strcmp(c, "umount") == 0)
        return cmd_unmount(argc - 1, argv + 1);
    if (strcmp(c, "fsck") == 0)
        return cmd_fsck(argc - 1, argv + 1);
    if (strcmp(c, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    return cli_usage_report("unknown volume command ", c);
}
