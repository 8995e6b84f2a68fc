/*
 * volumes.c - the encrypted volumes a policy declares (docs/runtime.md, "Volumes").
 *
 * The host only says where a volume's ciphertext lives (`cista run --volume NAME=DIR`, or a
 * bind mount at the volume's mount point in config.json, which is how a PVC or hostPath
 * reaches a bundle); the policy says which volumes exist, where they are mounted, which KBS
 * resource holds each key and which KBS counter is each rollback anchor. After attestation the
 * keys come from the KBS session that released the image keys; each volume is then served by
 * `cista volume mount` (src/volume through the cista binary) with its key on a pipe, mounted
 * on the sandbox's tmpfs and bound into the container by the delegate.
 *
 * Why a separate daemon process, exec'd: the FUSE server must outlive `cista create`
 * (containerd's shim runs create and start as separate processes), it must start from a clean
 * process image (no inherited fds, threads or heap holding other secrets), and `cista volume
 * mount` already does the anchor check, daemonising only once the mount is up, the periodic and
 * fsync commits, and a final durable commit when it is unmounted.
 *
 * Everything from the host (names, paths, the config's mounts) is untrusted input here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "crypto/crypto.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"
#include "volume/volume.h"

extern char **environ;

#define VOL_LOCK "lock"                /* the volume daemon's lock in the backing directory */
#define DAEMON_TIMEOUT_MS (120 * 1000) /* attestation for the anchor included */
#define UNMOUNT_BUSY_MS (5 * 1000)
#define COMMIT_WAIT_MS (60 * 1000)
#define MAX_DAEMON_OUTPUT (64u << 10)

_Static_assert(AGENT_VOLUME_KEY_SIZE == VOL_KEY_SIZE, "volume key sizes differ");

/* Log and return a denial of rule "volumes" for volume @name. */
static int deny(cista_error **err, const char *name, const char *field, const char *fmt, ...)
    CISTA_PRINTF(4, 5);

static int deny(cista_error **err, const char *name, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *reason = NULL;
    if (vasprintf(&reason, fmt, ap) < 0)
        abort();
    va_end(ap);
    pol_decision d = {.allowed = false,
                      .rule = xstrdup("volumes"),
                      .field = xstrdup(field ? field : ""),
                      .reason = reason};
    _cleanup_free_ char *what = xasprintf("volume \"%s\"", name ? name : "");
    int rc = agent__deny(err, &d, what);
    pol_decision_clear(&d);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- parsing ---- */

int agent_volume_request_parse(agent_volume_request *out, char *spec, cista_error **err)
{
    *out = (agent_volume_request){0};
    char *eq = spec ? strchr(spec, '=') : NULL;
    if (!eq || eq == spec || !eq[1])
        return err_set(err, -EINVAL, "usage: --volume \"%s\": expected NAME=DIR[:MOUNTPOINT]",
                       spec ? spec : "");
    *eq = '\0';
    char *dir = eq + 1;
    char *mp = NULL;
    for (char *c = dir; (c = strstr(c, ":/")); c++)
        mp = c;
    if (mp) {
        *mp++ = '\0';
        if (!*dir)
            return err_set(err, -EINVAL, "usage: --volume %s=: the directory is missing", spec);
    }
    out->name = spec;
    out->backing = dir;
    out->mount_point = mp;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int agent_volume_key_parse(uint8_t out[AGENT_VOLUME_KEY_SIZE], const void *data, size_t size,
                           const char *resource, cista_error **err)
{
    const uint8_t *d = data;
    if (size == AGENT_VOLUME_KEY_SIZE) {
        memcpy(out, d, AGENT_VOLUME_KEY_SIZE);
        return 0;
    }
    if (size == 2 * AGENT_VOLUME_KEY_SIZE + 1 && d[size - 1] == '\n')
        size--;
    if (size == 2 * AGENT_VOLUME_KEY_SIZE) {
        uint8_t k[AGENT_VOLUME_KEY_SIZE];
        bool ok = true;
        /* every digit is read, no early exit at a bad one; the key is cleansed either way */
        for (size_t i = 0; i < AGENT_VOLUME_KEY_SIZE; i++) {
            int hi = hexval(d[2 * i]), lo = hexval(d[2 * i + 1]);
            ok &= hi >= 0 && lo >= 0;
            k[i] = (uint8_t)((hi & 0xf) << 4 | (lo & 0xf));
        }
        if (ok)
            memcpy(out, k, sizeof(k));
        crypto_cleanse(k, sizeof(k));
        if (ok)
            return 0;
    }
    return err_set(err, -EINVAL,
                   "volume key resource %s: %zu bytes that are neither 32 raw bytes nor 64 hex "
                   "digits; store the volume master key in one of those forms",
                   resource ? resource : "(unnamed)", size);
}

/* ---- the plan: which volume, from where ---- */

static bool has_option(const json_t *opts, const char *o)
{
    size_t i;
    json_t *v;
    json_array_foreach(opts, i, v)
    {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, o))
            return true;
    }
    return false;
}

static bool mount_is_bind(const json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    const json_t *opts = json_object_get(m, "options");
    if (type && !strcmp(type, "bind"))
        return true;
    if (type && *type && strcmp(type, "none"))
        return false;
    return has_option(opts, "bind") || has_option(opts, "rbind");
}

static int plan_set(json_t **slots, const pol_volume *v, const char *backing, bool ro,
                    const char *from, cista_error **err)
{
    if (backing[0] != '/')
        return err_set(err, -EINVAL,
                       "volume \"%s\" (%s): the backing directory \"%s\" is not an absolute path",
                       v->name, from, backing);
    if (strlen(backing) >= 4096 || strchr(backing, '\n'))
        return err_set(err, -EINVAL, "volume \"%s\" (%s): the backing directory is not a path",
                       v->name, from);
    if (*slots)
        return deny(err, v->name, from,
                    "volume \"%s\" is asked for twice (backing directories \"%s\" and \"%s\")",
                    v->name, json_string_value(json_object_get(*slots, "backing")), backing);
    *slots = json_pack("{s:s,s:s,s:s,s:b}", "name", v->name, "mount_point", v->mount_point,
                       "backing", backing, "read_only", ro);
    return 0;
}

int agent_volume_plan(json_t **out, const pol_policy *p, const char *container,
                      const agent_host_request *req, cista_error **err)
{
    int rc;
    if (!container) {
        if (pol_container_count(p) != 1)
            return err_set(err, -EINVAL, "volumes: which container of the policy?");
        container = pol_container_name(p, 0);
    }
    const pol_volume *vols = NULL;
    size_t n = 0;
    if ((rc = pol_get_volumes(&vols, &n, p, container, err)) < 0)
        return rc;
    json_t **slots = xzalloc((n + 1) * sizeof(*slots));
    rc = 0;
    /* by name: `cista run --volume NAME=DIR[:MOUNTPOINT]` */
    for (size_t i = 0; rc == 0 && req && i < req->volume_count; i++) {
        const agent_volume_request *vr = &req->volumes[i];
        if (!vr->name || !vr->backing) {
            rc = err_set(err, -EINVAL, "volume request %zu has no name or directory", i);
            break;
        }
        size_t k;
        for (k = 0; k < n && strcmp(vols[k].name, vr->name); k++)
            ;
        char field[96];
        snprintf(field, sizeof(field), "volumes[%.64s]", vr->name);
        if (k == n) {
            rc = deny(err, vr->name, "name",
                      "volume \"%s\" is not declared by the policy of container \"%s\"", vr->name,
                      container);
            break;
        }
        if (vr->mount_point) {
            _cleanup_decision_ pol_decision d = {0};
            if (pol_allow_volume_mount(&d, p, container, vr->name, vr->mount_point) < 0) {
                _cleanup_free_ char *what = xasprintf("volume \"%s\"", vr->name);
                rc = agent__deny(err, &d, what);
                break;
            }
        }
        rc = plan_set(&slots[k], &vols[k], vr->backing, false, field, err);
    }
    /* by mount point: a bind of the host's config.json (a PVC, a hostPath) */
    _cleanup_json_ json_t *cfg = NULL;
    if (rc == 0 && req && req->config)
        rc = agent_parse_oci(&cfg, req->config, req->config_size, "the host's config.json", err);
    json_t *mounts = cfg ? json_object_get(cfg, "mounts") : NULL;
    if (rc == 0 && mounts && !json_is_array(mounts))
        rc = err_set(err, -EINVAL, "the host's config.json: mounts is not an array");
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m)
    {
        if (rc < 0)
            break;
        const char *dest = json_string_value(json_object_get(m, "destination"));
        _cleanup_free_ char *nd = dest ? pol_path_normalize(dest) : NULL;
        if (!nd)
            continue; /* not a volume; the mounts rule judges it */
        size_t k;
        for (k = 0; k < n && strcmp(vols[k].mount_point, nd); k++)
            ;
        if (k == n)
            continue;
        char field[48];
        snprintf(field, sizeof(field), "mounts[%zu]", i);
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!mount_is_bind(m)) {
            rc = deny(err, vols[k].name, field,
                      "%s (type \"%s\") is at \"%s\", the mount point of volume \"%s\": only "
                      "the volume (a bind mount of its backing directory) may be mounted there",
                      field, type ? type : "", nd, vols[k].name);
            break;
        }
        const char *src = json_string_value(json_object_get(m, "source"));
        if (!src) {
            rc = err_set(err, -EINVAL, "the host's config.json: %s (volume \"%s\") has no source",
                         field, vols[k].name);
            break;
        }
        rc = plan_set(&slots[k], &vols[k], src, has_option(json_object_get(m, "options"), "ro"),
                      field, err);
    }
    /* every volume of the policy is mounted: the workload relies on its data being there */
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (slots[k])
            continue;
        char field[96];
        snprintf(field, sizeof(field), "volumes[%s]", vols[k].name);
        rc = deny(err, vols[k].name, field,
                  "volume \"%s\" (mount point \"%s\") has no backing directory: give one with "
                  "`cista run --volume %s=DIR`, or as a bind mount at \"%s\" in config.json",
                  vols[k].name, vols[k].mount_point, vols[k].name, vols[k].mount_point);
    }
    json_t *arr = json_array();
    for (size_t k = 0; k < n; k++) {
        if (slots[k] && rc == 0)
            json_array_append(arr, slots[k]);
        json_decref(slots[k]);
    }
    free(slots);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* ---- keys ---- */

void agent__volume_keys_free(agent__volume_key *keys, size_t count)
{
    for (size_t i = 0; keys && i < count; i++) {
        crypto_cleanse(keys[i].key, sizeof(keys[i].key));
        free(keys[i].name);
    }
    free(keys);
}

int agent__volume_keys_fetch(agent__volume_key **out, size_t *out_count, const pol_policy *p,
                             const char *container, agent_keysource *ks, cista_error **err)
{
    const pol_volume *vols = NULL;
    size_t n = 0;
    int rc = pol_get_volumes(&vols, &n, p, container, err);
    if (rc < 0)
        return rc;
    agent__volume_key *keys = xzalloc((n + 1) * sizeof(*keys));
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *data = NULL;
        size_t size = 0;
        if ((rc = ks->ops->get_secret(ks, vols[i].key, &data, &size, err)) < 0) {
            _cleanup_free_ char *why = err && *err ? err_str(*err) : xstrdup("refused");
            log_warn("volume \"%s\": the key %s was not released: %s (rule volumes, field "
                     "volumes[%s].key)",
                     vols[i].name, vols[i].key, why, vols[i].name);
            err_wrap(err, "volume \"%s\": key %s (rule volumes)", vols[i].name, vols[i].key);
            break;
        }
        rc = agent_volume_key_parse(keys[got].key, data, size, vols[i].key, err);
        crypto_free_secret(data, size);
        if (rc < 0) {
            err_wrap(err, "volume \"%s\"", vols[i].name);
            break;
        }
        keys[got++].name = xstrdup(vols[i].name);
    }
    if (rc < 0) {
        agent__volume_keys_free(keys, got);
        return rc;
    }
    if (n)
        log_info("%zu volume key(s) released by the key source", n);
    *out = keys;
    *out_count = got;
    return 0;
}

/* ---- mounting ---- */

static const pol_volume *policy_volume(const pol_policy *p, const char *container, const char *name)
{
    const pol_volume *vols = NULL;
    size_t n = 0;
    cista_error *e = NULL;
    if (pol_get_volumes(&vols, &n, p, container, &e) < 0) {
        err_free(e);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(vols[i].name, name))
            return &vols[i];
    return NULL;
}

static int save_state(int tfd, const json_t *state, cista_error **err)
{
    _cleanup_free_ char *text = js_dump_pretty(state);
    return util_write_file_atomic(tfd, AGENT_VOLUMES_STATE, text, strlen(text), 0600, err);
}

/* Does @dir hold anything but the daemon's lock file? */
static int dir_has_entries(bool *out, const char *dir, cista_error **err)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set_sys(err, -errno, "open backing directory %s", dir);
    struct dirent *e;
    *out = false;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, VOL_LOCK)) {
            *out = true;
            break;
        }
    }
    closedir(d);
    return 0;
}

/* Undo mountinfo's octal escapes (\040 for a space...) in place. */
static void unescape_octal(char *s)
{
    char *o = s;
    for (char *i = s; *i; i++) {
        if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] >= '0' && i[2] <= '7' &&
            i[3] >= '0' && i[3] <= '7') {
            *o++ = (char)((i[1] - '0') << 6 | (i[2] - '0') << 3 | (i[3] - '0'));
            i += 3;
        } else {
            *o++ = *i;
        }
    }
    *o = '\0';
}

/*
 * Where the volume in backing directory @dir is mounted (a fuse.cista mount whose source is
 * "cista:DIR", as `cista volume mount` names it), from /proc/self/mountinfo; NULL if it is not
 * mounted in this mount namespace. The caller owns the result.
 */
static char *backing_mount(const char *dir)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return NULL;
    _cleanup_free_ char *want = xasprintf("cista:%s", dir);
    char *line = NULL, *found = NULL;
    size_t cap = 0;
    while (!found && getline(&line, &cap, f) > 0) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
        char *save = NULL, *mp = NULL, *t = strtok_r(line, " \n", &save);
        for (int i = 1; t && i <= 4; i++)
            mp = t = strtok_r(NULL, " \n", &save);
        while (t && strcmp(t, "-"))
            t = strtok_r(NULL, " \n", &save);
        char *type = t ? strtok_r(NULL, " \n", &save) : NULL;
        char *src = type ? strtok_r(NULL, " \n", &save) : NULL;
        if (!mp || !src || strcmp(type, "fuse.cista"))
            continue;
        unescape_octal(src);
        if (!strcmp(src, want)) {
            unescape_octal(mp);
            found = xstrdup(mp);
        }
    }
    free(line);
    return found;
}

/*
 * The backing directory @dir of volume @name is locked by another volume daemon: say whose, so
 * that a volume left mounted by a container its engine forgot (podman never deletes a container
 * whose conmon died) can be released. Mount points are SANDBOX/tee/volumes/NAME, the sandbox
 * ROOT/ID as the runtime lays them out.
 */
static int busy(cista_error **err, const char *name, const char *dir)
{
    _cleanup_free_ char *mnt = backing_mount(dir);
    if (!mnt)
        return err_set(err, -EBUSY,
                       "volume \"%s\": backing directory %s is in use (being checked or mounted "
                       "by another container, possibly in another mount namespace)",
                       name, dir);
    static const char mark[] = "/" AGENT_TEE_DIR "/" AGENT_VOLUMES "/";
    char *at = NULL;
    for (char *c = mnt; (c = strstr(c, mark)); c++)
        at = c;
    char *slash = NULL;
    if (at) {
        *at = '\0';
        slash = strrchr(mnt, '/');
    }
    if (!slash || slash == mnt || !slash[1]) {
        if (at)
            *at = '/';
        return err_set(err, -EBUSY,
                       "volume \"%s\": backing directory %s is in use: its volume is mounted at "
                       "%s (by another container or `cista volume mount`)",
                       name, dir, mnt);
    }
    *slash = '\0';
    return err_set(err, -EBUSY,
                   "volume \"%s\": backing directory %s is in use: its volume is mounted by "
                   "container \"%s\" (state root %s). If that container has exited and its "
                   "engine will not delete it (podman does not after conmon died), `cista --root "
                   "%s delete --force %s` unmounts the volume with a final commit",
                   name, dir, slash + 1, mnt, mnt, slash + 1);
}

/*
 * Make sure @backing holds a volume that @key opens: an existing one (the key must match), or
 * a new empty one in an empty directory. *out_dir is the canonical path. Nothing here trusts
 * the host's directory beyond what vol_read_info() authenticates; the rollback check is the
 * daemon's (against the anchor), so a host that deletes or replaces the directory is caught
 * there, not here.
 */
static int prepare_backing(char **out_dir, bool *out_fresh, const char *name, const char *backing,
                           const uint8_t key[VOL_KEY_SIZE], cista_error **err)
{
    int rc;
    *out_fresh = false;
    /* as `docker run -v` does: a missing directory (and its parents) is made, 0700 */
    _cleanup_free_ char *mk = xstrdup(backing);
    for (char *c = mk + 1;; c++) {
        if (*c && *c != '/')
            continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(mk, 0700) < 0 && errno != EEXIST)
            return err_set_sys(err, -errno, "volume \"%s\": create backing directory %s", name, mk);
        if (!saved)
            break;
        *c = saved;
    }
    _cleanup_free_ char *dir = realpath(backing, NULL);
    if (!dir)
        return err_set_sys(err, -errno, "volume \"%s\": backing directory %s", name, backing);
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return err_set(err, -ENOTDIR, "volume \"%s\": backing %s is not a directory", name, dir);
    _cleanup_vol_store_ vol_store *store = NULL;
    if ((rc = vol_store_dir_new(&store, dir, false, err)) < 0)
        return err_wrap(err, "volume \"%s\"", name);
    _cleanup_free_ char *lp = xasprintf("%s/%s", dir, VOL_LOCK);
    _cleanup_close_ int lfd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0)
        return err_set_sys(err, -errno, "volume \"%s\": lock file %s", name, lp);
    if (flock(lfd, LOCK_EX | LOCK_NB) < 0)
        return busy(err, name, dir);
    vol_info info;
    cista_error *e = NULL;
    rc = vol_read_info(&info, store, key, &e);
    if (rc == -EKEYREJECTED) {
        _cleanup_free_ char *why = err_str(e);
        err_free(e);
        _cleanup_free_ char *field = xasprintf("volumes[%s].key", name);
        return deny(err, name, field,
                    "the key released for volume \"%s\" does not open the volume in %s (%s); "
                    "the key resource or the backing directory is not this volume's",
                    name, dir, why);
    }
    if (rc == 0) {
        log_info("volume \"%s\": %s holds volume generation %llu; the key matches", name, dir,
                 (unsigned long long)info.generation);
        *out_dir = steal_ptr(&dir);
        return 0;
    }
    if (rc != -ENOENT) {
        rc = err_set(err, rc, "volume \"%s\": backing directory %s: %s", name, dir,
                     e ? e->msg : "unreadable");
        err_free(e);
        return rc;
    }
    err_free(e);
    bool used = false;
    if ((rc = dir_has_entries(&used, dir, err)) < 0)
        return rc;
    if (used)
        return err_set(err, -EUCLEAN,
                       "volume \"%s\": backing directory %s holds files but no cista volume "
                       "superblock; refusing to create a volume over them (give an empty "
                       "directory, or the volume's own backing directory)",
                       name, dir);
    if ((rc = vol_create(store, key, NULL, &info, err)) < 0)
        return err_wrap(err, "volume \"%s\": create in %s", name, dir);
    log_info("volume \"%s\": %s was empty: created a new volume (generation %llu)", name, dir,
             (unsigned long long)info.generation);
    *out_fresh = true;
    *out_dir = steal_ptr(&dir);
    return 0;
}

/* Move @fd to @target in a child before exec (async-signal-safe). */
static int child_fd(int fd, int target)
{
    if (fd == target)
        return fcntl(fd, F_SETFD, 0);
    return dup2(fd, target) < 0 ? -1 : 0;
}

/*
 * Why the daemon did not mount: its JSON error on stdout (`cista --json`), with its errno-style
 * code, else its exit status. Refusals are logged with the rule.
 */
static int daemon_failure(cista_error **err, const pol_volume *pv, const char *text, int st,
                          bool timed_out, const char *log)
{
    int rc;
    const char *brace = text ? strstr(text, "{\"error\"") : NULL;
    _cleanup_json_ json_t *ej = NULL;
    cista_error *pe = NULL;
    if (brace) {
        const char *nl = strchr(brace, '\n');
        size_t len = nl ? (size_t)(nl - brace) : strlen(brace);
        if (js_parse_object(&ej, brace, len, MAX_DAEMON_OUTPUT, "volume daemon error", &pe) < 0)
            err_free(pe);
    }
    json_t *eo = json_object_get(ej, "error");
    const char *msg = json_string_value(json_object_get(eo, "message"));
    int code = (int)json_integer_value(json_object_get(eo, "code"));
    if (timed_out)
        rc = err_set(err, -ETIMEDOUT, "volume \"%s\": not mounted within %d s (see %s)", pv->name,
                     DAEMON_TIMEOUT_MS / 1000, log);
    else if (msg && code < 0)
        rc = err_set(err, code, "volume \"%s\": %s", pv->name, msg);
    else
        rc = err_set(err, WIFEXITED(st) && WEXITSTATUS(st) == 3 ? -EACCES : -EIO,
                     "volume \"%s\": `cista volume mount` exited with status %d (see %s)", pv->name,
                     WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), log);
    if (rc == -EACCES || rc == -EKEYREJECTED || rc == -ENOENT) {
        _cleanup_free_ char *why = err && *err ? err_str(*err) : xstrdup("refused");
        log_warn("volume \"%s\" refused before the container started: %s (rule volumes, field "
                 "volumes[%s].%s)",
                 pv->name, why, pv->name, rc == -EKEYREJECTED ? "key" : "anchor");
    }
    return rc;
}

/*
 * Run `cista volume mount` for one volume and wait until it is mounted (it daemonises then)
 * or refused. The key goes through a pipe (fd 3), readiness comes back on fd 4, the JSON
 * error of a refusal on stdout; the daemon's log is @log on the sandbox tmpfs.
 */
static int run_daemon(const agent__volume_env *env, const pol_volume *pv, const char *backing,
                      const char *mnt, const char *log, const uint8_t key[VOL_KEY_SIZE],
                      cista_error **err)
{
    int rc;
    const char *exe = env->exe ? env->exe : "/proc/self/exe";
    _cleanup_free_ char *anchor = NULL;
    if (pv->anchor) {
        if (!env->kbs_url)
            return err_set(err, -EINVAL,
                           "volume \"%s\": its rollback anchor is the KBS counter %s, but this "
                           "launch has no KBS (--kbs / io.cista.kbs)",
                           pv->name, pv->anchor);
        size_t ul = strlen(env->kbs_url);
        while (ul && env->kbs_url[ul - 1] == '/')
            ul--;
        anchor = xasprintf("kbs:%.*s/%s", (int)ul, env->kbs_url, pv->anchor + strlen("kbs:///"));
    }
    const char *av[40];
    size_t k = 0;
    av[k++] = "cista";
    av[k++] = "--json";
    av[k++] = "--log";
    av[k++] = log;
    if (log_get_level() < LOG_LVL_INFO) {
        av[k++] = "--log-level";
        av[k++] = "info";
    }
    av[k++] = "volume";
    av[k++] = "mount";
    av[k++] = backing;
    av[k++] = mnt;
    av[k++] = "--key-fd";
    av[k++] = "3";
    av[k++] = "--ready-fd";
    av[k++] = "4";
    av[k++] = "--rollback";
    av[k++] = pv->rollback;
    if (anchor) {
        av[k++] = "--anchor";
        av[k++] = anchor;
        av[k++] = "--tee";
        av[k++] = env->tee;
        if (env->kbs_ca) {
            av[k++] = "--kbs-ca";
            av[k++] = env->kbs_ca;
        }
        if (env->sim_state_dir && !strcmp(env->tee, "sim")) {
            av[k++] = "--sim-state";
            av[k++] = env->sim_state_dir;
        }
        /* the anchor's sim reports carry the workload's launch value, as the run's own do */
        if (env->host_data && !strcmp(env->tee, "sim")) {
            av[k++] = "--host-data";
            av[k++] = env->host_data;
        }
        if (env->tpm_tcti && !strcmp(env->tee, "tpm")) {
            av[k++] = "--tpm-tcti";
            av[k++] = env->tpm_tcti;
        }
    }
    av[k] = NULL;

    int kp[2] = {-1, -1}, rp[2] = {-1, -1}, op[2] = {-1, -1};
    _cleanup_close_ int logfd =
        open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    _cleanup_close_ int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (logfd < 0 || nul < 0)
        return err_set_sys(err, -errno, "volume \"%s\": open %s", pv->name, log);
    if (pipe2(kp, O_CLOEXEC) < 0 || pipe2(rp, O_CLOEXEC) < 0 || pipe2(op, O_CLOEXEC) < 0) {
        rc = err_set_sys(err, -errno, "pipe");
        goto out;
    }
    /*
     * The key: into the pipe buffer (kernel memory, never a file) before the daemon exists, so
     * a daemon that dies early cannot turn this write into SIGPIPE.
     */
    if (util_write_all(kp[1], key, VOL_KEY_SIZE) < 0) {
        rc = err_set_sys(err, -errno, "volume \"%s\": hand the key to the daemon", pv->name);
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        rc = err_set_sys(err, -errno, "fork");
        goto out;
    }
    if (pid == 0) {
        /* first above every target, so no dup2 below overwrites a source */
        int a = fcntl(kp[0], F_DUPFD_CLOEXEC, 10), b = fcntl(rp[1], F_DUPFD_CLOEXEC, 10);
        int c = fcntl(op[1], F_DUPFD_CLOEXEC, 10), d = fcntl(logfd, F_DUPFD_CLOEXEC, 10);
        int z = fcntl(nul, F_DUPFD_CLOEXEC, 10);
        if (a < 0 || b < 0 || c < 0 || d < 0 || z < 0 || child_fd(z, 0) < 0 || child_fd(c, 1) < 0 ||
            child_fd(d, 2) < 0 || child_fd(a, 3) < 0 || child_fd(b, 4) < 0)
            _exit(126);
        /* nothing else of ours (other secrets, the KBS connection) reaches the daemon */
        if (syscall(SYS_close_range, 5U, ~0U, 0U) < 0)
            for (int fd = 5; fd < 65536; fd++)
                close(fd);
        signal(SIGPIPE, SIG_DFL);
        execve(exe, (char *const *)av, environ);
        _exit(127);
    }
    close(kp[0]);
    close(rp[1]);
    close(op[1]);
    kp[0] = rp[1] = op[1] = -1;
    close(kp[1]);
    kp[1] = -1;

    cbuf outb = CBUF_INIT;
    buf_init(&outb, MAX_DAEMON_OUTPUT, false);
    char ready[8] = {0};
    size_t ready_len = 0;
    bool rp_open = true, op_open = true;
    long deadline = now_ms() + DAEMON_TIMEOUT_MS;
    while ((rp_open || op_open) && now_ms() < deadline) {
        struct pollfd pf[2] = {{.fd = rp_open ? rp[0] : -1, .events = POLLIN},
                               {.fd = op_open ? op[0] : -1, .events = POLLIN}};
        int pr = poll(pf, 2, 200);
        if (pr < 0 && errno != EINTR)
            break;
        char tmp[4096];
        if (rp_open && pf[0].revents) {
            ssize_t r = read(rp[0], tmp, sizeof(tmp));
            if (r > 0 && ready_len < sizeof(ready) - 1) {
                size_t take = (size_t)r < sizeof(ready) - 1 - ready_len
                                  ? (size_t)r
                                  : sizeof(ready) - 1 - ready_len;
                memcpy(ready + ready_len, tmp, take);
                ready_len += take;
            }
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                rp_open = false;
        }
        if (op_open && pf[1].revents) {
            ssize_t r = read(op[0], tmp, sizeof(tmp));
            if (r > 0) {
                cista_error *e2 = NULL;
                if (buf_append(&outb, tmp, (size_t)r, &e2) < 0)
                    err_free(e2);
            }
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                op_open = false;
        }
        /* mounted: do not wait for the output pipe, a daemon keeps nothing open on it */
        if (!strncmp(ready, "ok\n", 3))
            break;
    }
    int st = 0;
    bool timed_out = strncmp(ready, "ok\n", 3) && (rp_open || op_open);
    if (timed_out)
        kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!strncmp(ready, "ok\n", 3)) {
        rc = 0;
    } else {
        buf_puts(&outb, "");
        rc = daemon_failure(err, pv, (const char *)outb.data, st, timed_out, log);
    }
    buf_free(&outb);
out:
    for (int i = 0; i < 2; i++) {
        if (kp[i] >= 0)
            close(kp[i]);
        if (rp[i] >= 0)
            close(rp[i]);
        if (op[i] >= 0)
            close(op[i]);
    }
    return rc;
}

int agent__volumes_mount(int tee_fd, const char *tee_dir, const json_t *plan, const pol_policy *p,
                         const char *container, const agent__volume_key *keys, size_t key_count,
                         const agent__volume_env *env, int64_t uid, int64_t gid, cista_error **err)
{
    int rc;
    if (json_array_size(plan) == 0)
        return 0;
    _cleanup_free_ char *vdir = xasprintf("%s/%s", tee_dir, AGENT_VOLUMES);
    if (mkdirat(tee_fd, AGENT_VOLUMES, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", vdir);
    _cleanup_close_ int vfd =
        openat(tee_fd, AGENT_VOLUMES, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (vfd < 0)
        return err_set_sys(err, -errno, "open %s", vdir);
    _cleanup_json_ json_t *state = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(plan, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *backing = json_string_value(json_object_get(v, "backing"));
        const pol_volume *pv = name ? policy_volume(p, container, name) : NULL;
        const agent__volume_key *vk = NULL;
        for (size_t k = 0; name && k < key_count; k++)
            if (!strcmp(keys[k].name, name))
                vk = &keys[k];
        if (!pv || !vk || !backing)
            return err_set(err, -EINVAL, "volume \"%s\": no policy entry or key (a bug)",
                           name ? name : "");
        _cleanup_free_ char *dir = NULL;
        bool fresh = false;
        if ((rc = prepare_backing(&dir, &fresh, name, backing, vk->key, err)) < 0)
            return rc;
        _cleanup_free_ char *mnt = xasprintf("%s/%s", vdir, name);
        if (mkdirat(vfd, name, 0700) < 0 && errno != EEXIST)
            return err_set_sys(err, -errno, "mkdir %s", mnt);
        /*
         * Canonical, as /proc/self/mountinfo will show it (the state root may be relative), and
         * where the checked tee is now, through its fd: the daemon mounts by this path (it is
         * another process), and the mount is checked below to have landed in the tee.
         */
        char here[64];
        snprintf(here, sizeof(here), "/proc/self/fd/%d", vfd);
        _cleanup_free_ char *vcanon = realpath(here, NULL);
        if (!vcanon)
            return err_set_sys(err, -errno, "volume \"%s\": %s", name, vdir);
        free(mnt);
        mnt = xasprintf("%s/%s", vcanon, name);
        _cleanup_free_ char *log = xasprintf("%s/%s.log", vcanon, name);
        /* recorded before the daemon starts: delete undoes a mount that a crash left */
        json_array_append_new(
            state, json_pack("{s:s,s:s,s:s}", "name", name, "mount", mnt, "backing", dir));
        if ((rc = save_state(tee_fd, state, err)) < 0)
            return rc;
        if ((rc = run_daemon(env, pv, dir, mnt, log, vk->key, err)) < 0)
            return rc;
        /* the decrypted volume is in the tee, not somewhere the host moved the path to */
        _cleanup_close_ int mfd = openat(vfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (mfd < 0)
            return err_set_sys(err, -errno, "volume \"%s\": open %s", name, mnt);
        if ((rc = agent__check_mounted_on(vfd, mfd, "fuse.cista", mnt, err)) < 0)
            return err_wrap(err, "volume \"%s\"", name);
        if (fresh && (uid || gid) && fchownat(mfd, "", (uid_t)uid, (gid_t)gid, AT_EMPTY_PATH) < 0)
            return err_set_sys(err, -errno, "volume \"%s\": give the new volume to %lld:%lld", name,
                               (long long)uid, (long long)gid);
        log_info("volume \"%s\" mounted at %s in the container (backing %s, rollback %s%s%s)", name,
                 pv->mount_point, dir, pv->rollback, pv->anchor ? ", anchor " : "",
                 pv->anchor ? pv->anchor : "");
    }
    return 0;
}

/*
 * Is something mounted at @path? From /proc/self/mountinfo, not stat(): a daemon that hangs must
 * not hang delete, and a dead daemon's mount (ENOTCONN) is still a mount to remove.
 */
static bool is_mounted(const char *path)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return true; /* cannot tell: try to unmount, EINVAL says it was not */
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (!found && getline(&line, &cap, f) > 0) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
        char *save = NULL, *mp = NULL;
        char *t = strtok_r(line, " ", &save);
        for (int i = 0; t && i < 4; i++)
            t = strtok_r(NULL, " ", &save);
        mp = t;
        if (!mp)
            continue;
        unescape_octal(mp);
        found = strcmp(mp, path) == 0;
    }
    free(line);
    return found;
}

static int unmount_one(const char *name, const char *mnt, const char *backing, cista_error **err)
{
    if (!is_mounted(mnt))
        return 0;
    int rc = 0;
    long until = now_ms() + UNMOUNT_BUSY_MS;
    while (umount2(mnt, 0) < 0) {
        if (errno == EINVAL || errno == ENOENT)
            return 0; /* not mounted after all */
        if (errno != EBUSY || now_ms() > until) {
            /* never leave it reachable: detach, the daemon commits when its last user goes */
            int e = errno;
            if (umount2(mnt, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return err_set_sys(err, -errno, "volume \"%s\": unmount %s", name, mnt);
            log_warn("volume \"%s\": %s was busy (%s): detached lazily; its final commit happens "
                     "when the last process using it exits",
                     name, mnt, strerror(e));
            return 0;
        }
        sleep_ms(100);
    }
    /* the daemon holds the backing directory's lock until its final commit is durable */
    _cleanup_free_ char *lp = xasprintf("%s/%s", backing, VOL_LOCK);
    _cleanup_close_ int fd = open(lp, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    long deadline = now_ms() + COMMIT_WAIT_MS;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (now_ms() > deadline) {
            rc = err_set(err, -ETIMEDOUT,
                         "volume \"%s\": unmounted, but its daemon did not finish its final "
                         "commit to %s within %d s",
                         name, backing, COMMIT_WAIT_MS / 1000);
            log_error("%s", (*err)->msg);
            return rc;
        }
        sleep_ms(50);
    }
    flock(fd, LOCK_UN);
    log_info("volume \"%s\" unmounted; its final commit is durable in %s", name, backing);
    return 0;
}

int agent__volumes_unmount(const char *tee_dir, cista_error **err)
{
    int rc;
    _cleanup_close_ int tfd = open(tee_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tfd < 0)
        return 0;
    _cleanup_free_ char *text = NULL;
    size_t size = 0;
    cista_error *e = NULL;
    if ((rc = util_read_fileat(&text, &size, tfd, AGENT_VOLUMES_STATE, 1u << 20, &e)) < 0) {
        err_free(e);
        return 0; /* no volumes */
    }
    _cleanup_json_ json_t *state = NULL;
    if ((rc = js_parse(&state, text, size, 1u << 20, AGENT_VOLUMES_STATE, err)) < 0)
        return rc;
    int first = 0;
    for (size_t i = json_array_size(state); i-- > 0;) {
        json_t *v = json_array_get(state, i);
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *mnt = json_string_value(json_object_get(v, "mount"));
        const char *backing = json_string_value(json_object_get(v, "backing"));
        if (!name || !mnt || !backing)
            continue;
        cista_error *e2 = NULL;
        if ((rc = unmount_one(name, mnt, backing, &e2)) < 0) {
            if (!first) {
                first = rc;
                if (err)
                    *err = e2;
                else
                    err_free(e2);
            } else {
                err_free(e2);
            }
        }
    }
    if (first == 0)
        unlinkat(tfd, AGENT_VOLUMES_STATE, 0);
    return first;
}
