/* test_runtime.c - the runtime and agent building blocks: config generation from image +
 * policy + host request, annotation parsing, runtime configuration, policy denials as errors,
 * rlimit clamping, secret file injection, ids and signals, when a rootfs may be a read-only bind
 * of the shared image tree, and copy refused into one. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "runtime/runtime.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static char *g_entry[] = {NULL};
static char *g_cmd[] = {"/bin/app", "--port", "80", NULL};
static char *g_env[] = {"PATH=/bin", "GREETING=hi", NULL};

static img_config image_config(void)
{
    img_config ic = {0};
    ic.os = "linux";
    ic.architecture = "amd64";
    ic.entrypoint = g_entry;
    ic.cmd = g_cmd;
    ic.env = g_env;
    ic.user = "1000:2000";
    ic.working_dir = "/app";
    return ic;
}

static json_t *rules(void)
{
    json_t *r = json_pack(
        "{s:s,s:{s:[sss],s:s,s:{s:i,s:i},s:b},s:{s:[s],s:[s],s:[s]},s:b}", "name", "app", "process",
        "args", "/bin/app", "--port", "80", "cwd", "/app", "user", "uid", 1000, "gid", 2000,
        "no_new_privileges", true, "capabilities", "bounding", "CAP_NET_BIND_SERVICE", "effective",
        "CAP_NET_BIND_SERVICE", "permitted", "CAP_NET_BIND_SERVICE", "read_only_rootfs", true);
    assert_non_null(r);
    return r;
}

static const char *env_at(json_t *cfg, size_t i)
{
    return json_string_value(
        json_array_get(json_object_get(json_object_get(cfg, "process"), "env"), i));
}

static void test_config_without_host_request(void **state)
{
    (void)state;
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    const char *env[] = {"EXTRA=1", NULL};
    agent_host_request req = {.env = env, .host_network = true};
    _cleanup_json_ json_t *cfg = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_build_config(&cfg, &ic, r, &req, "/sb/tee/rootfs", &err), 0);
    json_t *p = json_object_get(cfg, "process");
    /* args: the image's entrypoint + cmd */
    assert_int_equal(json_array_size(json_object_get(p, "args")), 3);
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "args"), 0)),
                        "/bin/app");
    /* env: the image's, then the host's extra (left for the policy to judge) */
    assert_string_equal(env_at(cfg, 0), "PATH=/bin");
    assert_string_equal(env_at(cfg, 1), "GREETING=hi");
    assert_string_equal(env_at(cfg, 2), "EXTRA=1");
    /* cwd, user, caps and nnp: the policy's (no host process at all) */
    assert_string_equal(json_string_value(json_object_get(p, "cwd")), "/app");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "user"), "uid")), 1000);
    json_t *caps = json_object_get(p, "capabilities");
    assert_int_equal(json_array_size(json_object_get(caps, "bounding")), 1);
    assert_int_equal(json_array_size(json_object_get(caps, "inheritable")), 0);
    assert_true(json_is_true(json_object_get(p, "noNewPrivileges")));
    /* root: the sandbox rootfs, read-only as the policy says */
    json_t *root = json_object_get(cfg, "root");
    assert_string_equal(json_string_value(json_object_get(root, "path")), "/sb/tee/rootfs");
    assert_true(json_is_true(json_object_get(root, "readonly")));
    /* host network: no network namespace; mount and pid always */
    json_t *ns = json_object_get(json_object_get(cfg, "linux"), "namespaces");
    bool net = false, mnt = false;
    size_t i;
    json_t *v;
    json_array_foreach(ns, i, v)
    {
        const char *t = json_string_value(json_object_get(v, "type"));
        net |= !strcmp(t, "network");
        mnt |= !strcmp(t, "mount");
    }
    assert_false(net);
    assert_true(mnt);
    assert_true(json_array_size(json_object_get(json_object_get(cfg, "linux"), "maskedPaths")) > 5);
}

static const char g_host[] =
    "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[],\"env\":[\"PATH=/usr/local/bin:/usr/bin\","
    "\"HOSTNAME=x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},\"capabilities\":{"
    "\"bounding\":[\"CAP_KILL\"],\"effective\":[\"CAP_KILL\"],\"permitted\":[\"CAP_KILL\"],"
    "\"inheritable\":[\"CAP_SYS_ADMIN\"]},\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":"
    "1048576,\"soft\":1048576}]},\"root\":{\"path\":\"rootfs\"},\"hostname\":\"h\","
    "\"hooks\":{\"prestart\":[{\"path\":\"/bin/evil\"}]},"
    "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"bind\",\"source\":\"/\"},"
    "{\"destination\":\"/run\",\"type\":\"tmpfs\",\"source\":\"tmpfs\"},"
    "{\"destination\":\"/data\",\"type\":\"bind\",\"source\":\"/var/"
    "data\",\"options\":[\"rbind\"]}],"
    "\"linux\":{\"namespaces\":[{\"type\":\"pid\",\"path\":\"/proc/1/ns/pid\"},"
    "{\"type\":\"network\",\"path\":\"/var/run/netns/x\"}],"
    "\"devices\":[{\"path\":\"/dev/sda\",\"type\":\"b\",\"major\":8,\"minor\":0}],"
    "\"resources\":{\"memory\":{\"limit\":1000000},\"devices\":[{\"allow\":true,\"access\":\"rwm\"}"
    "]},"
    "\"cgroupsPath\":\"/x/y\",\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ERRNO\","
    "\"syscalls\":[{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"}]}},"
    "\"annotations\":{\"a\":\"b\",\"run.oci.seccomp.receiver\":\"/run/x.sock\","
    "\"io.kubernetes.cri.container-name\":\"app\"}}";

static void test_config_from_host_request(void **state)
{
    (void)state;
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    agent_host_request req = {.config = g_host, .config_size = strlen(g_host)};
    _cleanup_json_ json_t *cfg = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_build_config(&cfg, &ic, r, &req, "/sb/rootfs", &err), 0);
    json_t *p = json_object_get(cfg, "process");
    /* empty host args: the image's; host uid 0 means the image's user; "/" the image's cwd */
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "args"), 0)),
                        "/bin/app");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "user"), "gid")), 2000);
    assert_string_equal(json_string_value(json_object_get(p, "cwd")), "/app");
    /* the image's PATH wins; HOSTNAME passes on to the policy */
    assert_string_equal(env_at(cfg, 0), "PATH=/bin");
    assert_string_equal(env_at(cfg, 2), "HOSTNAME=x");
    assert_null(env_at(cfg, 3));
    /* inheritable forced empty; host caps kept for the policy to judge */
    json_t *caps = json_object_get(p, "capabilities");
    assert_int_equal(json_array_size(json_object_get(caps, "inheritable")), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(caps, "bounding"), 0)),
                        "CAP_KILL");
    /* hooks and devices dropped; default mounts are cista's; /run tmpfs dropped; others kept */
    assert_null(json_object_get(cfg, "hooks"));
    json_t *lx = json_object_get(cfg, "linux");
    assert_null(json_object_get(lx, "devices"));
    json_t *dev = json_array_get(json_object_get(json_object_get(lx, "resources"), "devices"), 0);
    assert_false(json_is_true(json_object_get(dev, "allow")));
    assert_string_equal(json_string_value(json_object_get(lx, "cgroupsPath")), "/x/y");
    json_t *mounts = json_object_get(cfg, "mounts");
    size_t i;
    json_t *m;
    bool data = false;
    json_array_foreach(mounts, i, m)
    {
        const char *d = json_string_value(json_object_get(m, "destination"));
        const char *t = json_string_value(json_object_get(m, "type"));
        if (!strcmp(d, "/proc"))
            assert_string_equal(t, "proc");
        assert_string_not_equal(d, "/run");
        data |= !strcmp(d, "/data");
    }
    assert_true(data);
    /* the pid namespace is never the host's; a network namespace path is kept */
    json_t *ns = json_object_get(lx, "namespaces");
    json_t *v;
    json_array_foreach(ns, i, v)
    {
        const char *t = json_string_value(json_object_get(v, "type"));
        if (!strcmp(t, "pid"))
            assert_null(json_object_get(v, "path"));
        if (!strcmp(t, "network"))
            assert_string_equal(json_string_value(json_object_get(v, "path")), "/var/run/netns/x");
    }
    /* rlimits clamped to what this process may set */
    struct rlimit cur;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &cur), 0);
    json_t *rl = json_array_get(json_object_get(p, "rlimits"), 0);
    if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < 1048576)
        assert_int_equal(json_integer_value(json_object_get(rl, "hard")), (json_int_t)cur.rlim_max);
    assert_true(json_integer_value(json_object_get(rl, "soft")) <=
                json_integer_value(json_object_get(rl, "hard")));
    /* only inert annotations pass (crun acts on run.oci.*) */
    json_t *ann = json_object_get(cfg, "annotations");
    assert_null(json_object_get(ann, "a"));
    assert_null(json_object_get(ann, "run.oci.seccomp.receiver"));
    assert_string_equal(json_string_value(json_object_get(ann, "io.kubernetes.cri.container-name")),
                        "app");
    /* a restricting seccomp filter passes */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(lx, "seccomp"), "defaultAction")),
        "SCMP_ACT_ERRNO");
    /* namespaces the request left out (shared with the runtime) are the container's own */
    bool ipc = false, uts = false;
    json_array_foreach(ns, i, v)
    {
        ipc |= !strcmp(json_string_value(json_object_get(v, "type")), "ipc");
        uts |= !strcmp(json_string_value(json_object_get(v, "type")), "uts");
    }
    assert_true(ipc && uts);
}

static void test_config_bad_host_request(void **state)
{
    (void)state;
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    static const char *const bad[] = {
        "[]",
        "{\"process\":3}",
        "{\"process\":{\"args\":[1]}}",
        "{\"process\":{\"env\":\"x\"}}",
        "{\"process\":{},\"mounts\":[{\"type\":\"bind\"}]}",
        "{\"process\":{},\"linux\":{\"namespaces\":[{\"type\":\"user\"}]}}",
        "{\"process\":{},\"linux\":{\"namespaces\":[{\"type\":\"bogus\"}]}}",
        "{\"process\":",
        /* a syscall supervisor outside the TEE */
        "{\"process\":{},\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\","
        "\"listenerPath\":\"/run/s.sock\"}}}",
        "{\"process\":{},\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_NOTIFY\"}}}",
        "{\"process\":{},\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\","
        "\"syscalls\":[{\"names\":[\"openat\"],\"action\":\"SCMP_ACT_TRACE\"}]}}}",
        "{\"process\":{},\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\","
        "\"flags\":[\"SECCOMP_FILTER_FLAG_NEW_LISTENER\"]}}}",
        "{\"process\":{},\"linux\":{\"seccomp\":3}}",
        /* the runtime's own IPC namespace */
        "{\"process\":{},\"linux\":{\"namespaces\":[{\"type\":\"ipc\",\"path\":"
        "\"/proc/self/ns/ipc\"}]}}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        agent_host_request req = {.config = bad[i], .config_size = strlen(bad[i])};
        json_t *cfg = NULL;
        cista_error *err = NULL;
        assert_true(agent_build_config(&cfg, &ic, r, &req, "/r", &err) < 0);
        assert_null(cfg);
        assert_non_null(err);
        err_free(err);
    }
    /* an image with a named user cannot be resolved without its passwd: refused */
    ic.user = "nginx";
    agent_host_request req = {0};
    json_t *cfg = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_build_config(&cfg, &ic, r, &req, "/r", &err), -EINVAL);
    assert_non_null(strstr(err->msg, "numeric"));
    err_free(err);
}

static void test_rlimit_clamp(void **state)
{
    (void)state;
    struct rlimit cur;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &cur), 0);
    _cleanup_json_ json_t *c = json_pack(
        "{s:{s:[{s:s,s:I,s:I},{s:s,s:I,s:I},{s:s,s:I,s:I},{s:s,s:I,s:I}]}}", "process", "rlimits",
        "type", "RLIMIT_NOFILE", "hard", (json_int_t)1 << 40, "soft", (json_int_t)1 << 40, "type",
        "RLIMIT_BOGUS", "hard", (json_int_t)1, "soft", (json_int_t)1, "type", "RLIMIT_CORE", "hard",
        (json_int_t)0, "soft", (json_int_t)0, "type", "RLIMIT_NPROC", "hard", (json_int_t)10,
        "soft", (json_int_t)100);
    int changed = agent_clamp_rlimits(c);
    json_t *rl = json_object_get(json_object_get(c, "process"), "rlimits");
    assert_int_equal(json_array_size(rl), 3); /* the unknown resource is dropped */
    json_t *nofile = json_array_get(rl, 0);
    if (cur.rlim_max != RLIM_INFINITY)
        assert_int_equal(json_integer_value(json_object_get(nofile, "hard")),
                         (json_int_t)cur.rlim_max);
    json_t *core = json_array_get(rl, 1);
    assert_int_equal(json_integer_value(json_object_get(core, "hard")), 0);
    json_t *nproc = json_array_get(rl, 2);
    assert_int_equal(json_integer_value(json_object_get(nproc, "soft")), 10); /* soft <= hard */
    assert_true(changed >= 2);
    _cleanup_json_ json_t *none = json_object();
    assert_int_equal(agent_clamp_rlimits(none), 0);
}

/* agent_build_config() of the host config @host against rules(): 0 or the error (freed). */
static int build_host(json_t **out, const char *host, char **msg)
{
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    agent_host_request req = {.config = host, .config_size = strlen(host)};
    cista_error *err = NULL;
    *out = NULL;
    int rc = agent_build_config(out, &ic, r, &req, "/sb/rootfs", &err);
    if (msg)
        *msg = err ? xstrdup(err->msg) : NULL;
    err_free(err);
    return rc;
}

#define HOST_SECCOMP(sc) "{\"process\":{\"noNewPrivileges\":false},\"linux\":{\"seccomp\":" sc "}}"

/*
 * A seccomp action that makes a syscall return success without running it (SCMP_ACT_ERRNO with
 * errno 0) is refused: installed before the runtime switches user and drops capabilities, it
 * left the workload uid 0 with every capability against a policy of uid 1000 and none.
 */
static void test_seccomp_fake_success_refused(void **state)
{
    (void)state;
    static const char *const refused[] = {
        /* the reviewer's trigger */
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"setuid\","
                     "\"setgid\",\"setresuid\",\"setresgid\",\"setgroups\",\"capset\",\"prctl\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":0}]}"),
        /* the default action, with defaultErrnoRet 0 */
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":0,\"syscalls\":["
                     "{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"}]}"),
        /* 0 in the 16 bits libseccomp keeps; not an integer; negative; null */
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fsync\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":65536}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fchmod\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":\"0\"}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fchmod\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":-65536}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fchmod\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":0.0}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fchmod\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":null}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"fchmod\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":18446744073709486080}]}"),
        /* an action this code has not judged, a supervisor by another spelling, none */
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"setuid\"],"
                     "\"action\":\"SCMP_ACT_FAKE\"}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"scmp_act_notify\"}"),
        HOST_SECCOMP("{\"syscalls\":[]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"x\"]}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":{}}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[3]}"),
    };
    for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
        json_t *cfg = NULL;
        _cleanup_free_ char *msg = NULL;
        int rc = build_host(&cfg, refused[i], &msg);
        if (rc >= 0)
            fail_msg("seccomp %zu passed: %s", i, refused[i]);
        assert_null(cfg);
        assert_non_null(strstr(msg, "seccomp"));
    }
    /* the refusal names the rule and the value */
    json_t *cfg = NULL;
    _cleanup_free_ char *msg = NULL;
    assert_int_equal(build_host(&cfg, refused[0], &msg), -EPERM);
    assert_non_null(strstr(msg, "syscalls[0] (setuid, setgid"));
    assert_non_null(strstr(msg, "errnoRet 0"));
    free(msg);
    msg = NULL;
    assert_int_equal(build_host(&cfg, refused[1], &msg), -EPERM);
    assert_non_null(strstr(msg, "defaultErrnoRet 0"));

    /* filters that only deny pass unchanged */
    static const char *const passed[] = {
        /* errnoRet absent: EPERM (OCI runtime spec) */
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"setuid\"],"
                     "\"action\":\"SCMP_ACT_ERRNO\"}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                     "\"action\":\"SCMP_ACT_ALLOW\"}]}"),
        /* podman's and Docker's: default ENOSYS, some rules EPERM */
        HOST_SECCOMP(
            "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":38,\"syscalls\":["
            "{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"},{\"names\":[\"bdflush\"],"
            "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1},{\"names\":[\"kexec_load\"],"
            "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":4095}]}"),
        HOST_SECCOMP("{\"defaultAction\":\"SCMP_ACT_LOG\",\"syscalls\":[{\"names\":[\"ptrace\"],"
                     "\"action\":\"SCMP_ACT_KILL_PROCESS\"},{\"names\":[\"mount\"],\"action\":"
                     "\"SCMP_ACT_TRAP\"},{\"names\":[\"umount2\"],\"action\":\"SCMP_ACT_KILL\"},{"
                     "\"names\":[\"chroot\"],\"action\":\"SCMP_ACT_KILL_THREAD\"}],\"flags\":["
                     "\"SECCOMP_FILTER_FLAG_LOG\"]}"),
    };
    for (size_t i = 0; i < ARRAY_LEN(passed); i++) {
        _cleanup_json_ json_t *ok = NULL;
        _cleanup_free_ char *m = NULL;
        if (build_host(&ok, passed[i], &m) < 0)
            fail_msg("seccomp %zu refused: %s", i, m);
        assert_non_null(json_object_get(json_object_get(ok, "linux"), "seccomp"));
    }
}

/* The mount at @dest, however its destination is spelt (*count: how many there are). */
static json_t *mount_at(const json_t *cfg, const char *dest, size_t *count)
{
    json_t *found = NULL;
    size_t i;
    json_t *m;
    *count = 0;
    json_array_foreach(json_object_get(cfg, "mounts"), i, m)
    {
        _cleanup_free_ char *nd =
            pol_path_normalize(json_string_value(json_object_get(m, "destination")));
        if (nd && !strcmp(nd, dest)) {
            found = m;
            (*count)++;
        }
    }
    return found;
}

/*
 * Mount destinations are normalised before cista's own checks and written normalised: "/dev/shm/"
 * (a bind of containerd's sandbox directory) is dropped like "/dev/shm", "//run" like "/run".
 */
static void test_mount_destinations_normalised(void **state)
{
    (void)state;
    static const char host[] =
        "{\"process\":{},\"mounts\":["
        "{\"destination\":\"/dev/shm/\",\"type\":\"bind\",\"source\":\"/run/containerd/"
        "io.containerd.grpc.v1.cri/sandboxes/0123456789abcdef0123456789abcdef0123456789abcdef01234"
        "56789abcdef/shm\",\"options\":[\"rbind\",\"bind\"]},"
        "{\"destination\":\"//dev//shm\",\"type\":\"bind\",\"source\":\"/host/shm\"},"
        "{\"destination\":\"/dev/./shm\",\"type\":\"bind\",\"source\":\"/host/shm\"},"
        "{\"destination\":\"/proc/\",\"type\":\"bind\",\"source\":\"/\"},"
        "{\"destination\":\"//run\",\"type\":\"tmpfs\",\"source\":\"tmpfs\"},"
        "{\"destination\":\"/run/./secrets/\",\"type\":\"bind\",\"source\":\"/host/s\"},"
        "{\"destination\":\"//data\",\"type\":\"bind\",\"source\":\"/var/data\"}]}";
    _cleanup_json_ json_t *cfg = NULL;
    _cleanup_free_ char *msg = NULL;
    if (build_host(&cfg, host, &msg) < 0)
        fail_msg("%s", msg);
    size_t n;
    json_t *shm = mount_at(cfg, "/dev/shm", &n);
    assert_int_equal(n, 1); /* cista's tmpfs only */
    assert_string_equal(json_string_value(json_object_get(shm, "type")), "tmpfs");
    json_t *proc = mount_at(cfg, "/proc", &n);
    assert_int_equal(n, 1);
    assert_string_equal(json_string_value(json_object_get(proc, "type")), "proc");
    assert_null(mount_at(cfg, "/run", &n));
    assert_non_null(mount_at(cfg, "/run/secrets", &n)); /* left for the policy */
    assert_non_null(mount_at(cfg, "/data", &n));
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(cfg, "mounts"), i, m)
    {
        const char *d = json_string_value(json_object_get(m, "destination"));
        _cleanup_free_ char *nd = pol_path_normalize(d);
        assert_string_equal(d, nd);
    }
    /* a secret file under "/run/./secrets/" or "//run/secrets" is hidden by it */
    assert_string_equal(agent__mount_over(json_object_get(cfg, "mounts"), "/run/secrets/token"),
                        "/run/secrets");
    _cleanup_json_ json_t *raw =
        json_pack("[{s:s},{s:s},{s:s}]", "destination", "/run/secretsx", "destination", "/run/sec",
                  "destination", "//run/secrets");
    assert_string_equal(agent__mount_over(raw, "/run/secrets/token"), "//run/secrets");
    json_object_set_new(json_array_get(raw, 2), "destination", json_string("/run/./secrets/"));
    assert_string_equal(agent__mount_over(raw, "/run/secrets/token"), "/run/./secrets/");
    json_array_remove(raw, 2);
    assert_null(agent__mount_over(raw, "/run/secrets/token"));
    assert_null(agent__mount_over(raw, "/run/secret"));
    json_array_append_new(raw, json_pack("{s:s}", "destination", "/run/../run/secrets"));
    assert_non_null(agent__mount_over(raw, "/run/secrets/token")); /* ".." counts as above */
    assert_true(agent__path_within("/run/secrets/x", "/"));
    assert_true(agent__path_within("/run/secrets", "/run/secrets"));
    assert_false(agent__path_within("/run/secretsx", "/run/secrets"));
    assert_true(agent__is_default_mount("/dev//shm/"));
    assert_false(agent__is_default_mount("/dev/shm/x"));
    assert_false(agent__is_default_mount("/dev/../dev/shm"));

    /* a destination with "..", or relative: refused before anything is built */
    static const char *const bad[] = {
        "{\"process\":{},\"mounts\":[{\"destination\":\"/dev/shm/../../etc\",\"source\":\"/x\"}]}",
        "{\"process\":{},\"mounts\":[{\"destination\":\"/run/secrets/..\",\"type\":\"tmpfs\"}]}",
        "{\"process\":{},\"mounts\":[{\"destination\":\"dev/shm\",\"type\":\"bind\"}]}",
    };
    for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
        json_t *c = NULL;
        _cleanup_free_ char *e = NULL;
        assert_int_equal(build_host(&c, bad[k], &e), -EINVAL);
        assert_null(c);
        assert_non_null(strstr(e, "destination"));
    }
}

static json_t *rlimit_of(const json_t *cfg, const char *type, size_t *count)
{
    json_t *found = NULL;
    size_t i;
    json_t *e;
    *count = 0;
    json_array_foreach(json_object_get(json_object_get(cfg, "process"), "rlimits"), i, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "type")), type)) {
            found = e;
            (*count)++;
        }
    }
    return found;
}

/* No core dump of a confidential workload, whatever the host asks or the caller's limit is. */
static void test_rlimit_core_forced_zero(void **state)
{
    (void)state;
    /* no host request: the defaults and RLIMIT_CORE 0/0 */
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    agent_host_request req = {0};
    _cleanup_json_ json_t *cfg = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_build_config(&cfg, &ic, r, &req, "/sb/rootfs", &err), 0);
    size_t n;
    json_t *core = rlimit_of(cfg, "RLIMIT_CORE", &n);
    assert_int_equal(n, 1);
    assert_int_equal(json_integer_value(json_object_get(core, "hard")), 0);
    assert_int_equal(json_integer_value(json_object_get(core, "soft")), 0);
    assert_non_null(rlimit_of(cfg, "RLIMIT_NOFILE", &n));

    /* host rlimits without RLIMIT_CORE (the caller's would be inherited), and with it twice */
    static const char *const hosts[] = {
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}]}}",
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_CORE\",\"hard\":18446744073709551615,"
        "\"soft\":18446744073709551615},{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024},"
        "{\"type\":\"RLIMIT_CORE\",\"hard\":4096,\"soft\":4096}]}}",
    };
    for (size_t i = 0; i < ARRAY_LEN(hosts); i++) {
        _cleanup_json_ json_t *c = NULL;
        _cleanup_free_ char *msg = NULL;
        if (build_host(&c, hosts[i], &msg) < 0)
            fail_msg("%s", msg);
        core = rlimit_of(c, "RLIMIT_CORE", &n);
        assert_int_equal(n, 1);
        assert_int_equal(json_integer_value(json_object_get(core, "hard")), 0);
        assert_int_equal(json_integer_value(json_object_get(core, "soft")), 0);
        assert_non_null(rlimit_of(c, "RLIMIT_NOFILE", &n));
        _cleanup_free_ char *text = agent_oci_dump_config(c);
        assert_non_null(strstr(text, "{\"type\":\"RLIMIT_CORE\",\"hard\":0,\"soft\":0}"));
    }
    _cleanup_json_ json_t *notarray = json_object();
    assert_int_equal(agent_force_no_core(notarray), -EINVAL);
}

/*
 * OCI rlimits are uint64: "unlimited" (2^64-1, `--ulimit x=-1`) is read, kept and written back
 * unsigned (runc refuses -1); so is any value above INT64_MAX, and a seccomp argument mask.
 */
static void test_rlimit_unlimited_round_trip(void **state)
{
    (void)state;
    static const char host[] =
        "{\"process\":{\"env\":[\"X=18446744073709551615\"],\"oomScoreAdj\":-999,\"rlimits\":["
        "{\"type\":\"RLIMIT_STACK\",\"hard\":18446744073709551615,\"soft\":8388608},"
        "{\"type\":\"RLIMIT_CPU\",\"hard\":18446744073709551615,\"soft\":18446744073709551615},"
        "{\"type\":\"RLIMIT_FSIZE\",\"hard\":18446744073709551615,\"soft\":9223372036854775808}]},"
        "\"linux\":{\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":["
        "\"personality\"],\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":"
        "18446744073709551615,\"valueTwo\":9223372036854775807,\"op\":\"SCMP_CMP_EQ\"}]}]}}}";
    _cleanup_json_ json_t *cfg = NULL;
    _cleanup_free_ char *msg = NULL;
    if (build_host(&cfg, host, &msg) < 0)
        fail_msg("%s", msg); /* was "too big integer" */
    size_t n;
    json_t *cpu = rlimit_of(cfg, "RLIMIT_CPU", &n);
    struct rlimit cur;
    assert_int_equal(getrlimit(RLIMIT_CPU, &cur), 0);
    /* kept as 2^64-1 (two's complement in jansson), or clamped to this process's hard limit */
    assert_int_equal((uint64_t)json_integer_value(json_object_get(cpu, "hard")),
                     cur.rlim_max == RLIM_INFINITY ? UINT64_MAX : (uint64_t)cur.rlim_max);
    _cleanup_free_ char *text = agent_oci_dump_config(cfg);
    assert_null(strstr(text, "\"hard\":-"));
    assert_null(strstr(text, "\"soft\":-"));
    assert_non_null(strstr(text, "\"X=18446744073709551615\""));
    assert_non_null(strstr(text, "\"oomScoreAdj\":-999"));
    assert_non_null(
        strstr(text, "\"value\":18446744073709551615,\"valueTwo\":9223372036854775807"));
    if (cur.rlim_max == RLIM_INFINITY)
        assert_non_null(strstr(text, "{\"type\":\"RLIMIT_CPU\",\"hard\":18446744073709551615,"
                                     "\"soft\":18446744073709551615}"));
    struct rlimit fs;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &fs), 0);
    if (fs.rlim_max == RLIM_INFINITY)
        assert_non_null(strstr(text, "{\"type\":\"RLIMIT_FSIZE\",\"hard\":18446744073709551615,"
                                     "\"soft\":9223372036854775808}"));
    /* what was written reads back to the same document */
    _cleanup_json_ json_t *back = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_parse_oci(&back, text, strlen(text), "config", &err), 0);
    assert_true(json_equal(back, cfg));
    /* the process of an exec too */
    _cleanup_free_ char *ptext = agent_oci_dump_process(json_object_get(cfg, "process"));
    assert_null(strstr(ptext, "\"hard\":-"));
    assert_non_null(strstr(ptext, "\"oomScoreAdj\":-999"));

    /* beyond uint64, or negative beyond int64: still refused; malformed stays malformed */
    static const char *const bad[] = {
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_CPU\",\"hard\":18446744073709551616,"
        "\"soft\":1}]}}",
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_CPU\",\"hard\":-9223372036854775809,"
        "\"soft\":1}]}}",
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_CPU\",\"hard\":018446744073709551615,"
        "\"soft\":1}]}}",
        "{\"process\":{\"rlimits\":[{\"type\":\"RLIMIT_CPU\",\"hard\":x18446744073709551615,"
        "\"soft\":1}]}}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *c = NULL;
        err = NULL;
        assert_int_equal(agent_parse_oci(&c, bad[i], strlen(bad[i]), "config", &err), -EINVAL);
        assert_null(c);
        err_free(err);
    }
    /* a host rlimit that is not an integer is dropped, not taken for "unlimited" */
    _cleanup_json_ json_t *c = json_pack("{s:{s:[{s:s,s:f,s:f}]}}", "process", "rlimits", "type",
                                         "RLIMIT_NOFILE", "hard", 1e30, "soft", 1e30);
    assert_int_equal(agent_clamp_rlimits(c), 1);
    assert_int_equal(json_array_size(json_object_get(json_object_get(c, "process"), "rlimits")), 0);
}

static json_t *with_annotations(json_t *a)
{
    return json_pack("{s:o}", "annotations", a);
}

static void test_annotations(void **state)
{
    (void)state;
    const char pol[] = "{\"version\":\"1\"}\n";
    _cleanup_free_ char *b64 = b64_encode(pol, strlen(pol));
    rt_confidential c = {0};
    bool present = true;
    cista_error *err = NULL;

    _cleanup_json_ json_t *none = with_annotations(json_pack("{s:s}", "x", "y"));
    assert_int_equal(rt_confidential_from_annotations(&c, &present, none, &err), 0);
    assert_false(present);

    _cleanup_json_ json_t *full = with_annotations(json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s}", RT_ANN_IMAGE, "oci:/x:1", RT_ANN_POLICY, b64,
        RT_ANN_POLICY_HASH, "abababababababababababababababababababababababababababababababab",
        RT_ANN_KBS, "http://127.0.0.1:1", RT_ANN_TEE, "sim", "io.kubernetes.cri.container-name",
        "web"));
    assert_int_equal(rt_confidential_from_annotations(&c, &present, full, &err), 0);
    assert_true(present);
    assert_string_equal(c.image, "oci:/x:1");
    assert_int_equal(c.policy_size, strlen(pol));
    assert_memory_equal(c.policy, pol, strlen(pol));
    assert_true(c.has_hash);
    assert_int_equal(c.policy_hash[0], 0xab);
    assert_string_equal(c.kbs, "http://127.0.0.1:1");
    assert_string_equal(c.tee, "sim");
    assert_string_equal(c.container, "web");
    rt_confidential_clear(&c);

    _cleanup_json_ json_t *noimg = with_annotations(json_pack("{s:s}", RT_ANN_POLICY, b64));
    assert_int_equal(rt_confidential_from_annotations(&c, &present, noimg, &err), -EINVAL);
    assert_non_null(strstr(err->msg, RT_ANN_IMAGE));
    err_clear(&err);
    _cleanup_json_ json_t *nopol = with_annotations(json_pack("{s:s}", RT_ANN_IMAGE, "oci:/x"));
    assert_int_equal(rt_confidential_from_annotations(&c, &present, nopol, &err), -EINVAL);
    err_clear(&err);
    _cleanup_json_ json_t *badhash = with_annotations(json_pack(
        "{s:s,s:s,s:s}", RT_ANN_IMAGE, "oci:/x", RT_ANN_POLICY, b64, RT_ANN_POLICY_HASH, "zz"));
    assert_int_equal(rt_confidential_from_annotations(&c, &present, badhash, &err), -EINVAL);
    assert_non_null(strstr(err->msg, RT_ANN_POLICY_HASH));
    err_clear(&err);
    _cleanup_json_ json_t *bad64 = with_annotations(
        json_pack("{s:s,s:s}", RT_ANN_IMAGE, "oci:/x", RT_ANN_POLICY, "!!!not base64"));
    assert_true(rt_confidential_from_annotations(&c, &present, bad64, &err) < 0);
    err_clear(&err);
    _cleanup_json_ json_t *nofile = with_annotations(json_pack(
        "{s:s,s:s}", RT_ANN_IMAGE, "oci:/x", RT_ANN_POLICY_FILE, "/nonexistent/policy.json"));
    assert_true(rt_confidential_from_annotations(&c, &present, nofile, &err) < 0);
    err_clear(&err);
}

static void test_runtime_config(void **state)
{
    (void)state;
    rt_config *c = NULL;
    cista_error *err = NULL;
    const char good[] = "{\"allow_plain\":true,\"runtime\":\"/usr/sbin/runc\",\"tee\":\"sim\","
                        "\"dev_key_files\":[\"/k.pem\"],\"dev_secrets\":{\"kbs:///a/b/c\":\"/f\"}}";
    assert_int_equal(rt_config_parse(&c, good, strlen(good), &err), 0);
    assert_true(c->allow_plain);
    assert_string_equal(c->delegate, "/usr/sbin/runc");
    assert_string_equal(c->root, RT_DEFAULT_ROOT);
    assert_int_equal(c->dev_key_count, 1);
    assert_string_equal(c->dev_secrets[0], "kbs:///a/b/c=/f");
    rt_config_free(c);
    const char dflt[] = "{}";
    assert_int_equal(rt_config_parse(&c, dflt, strlen(dflt), &err), 0);
    assert_false(c->allow_plain);
    assert_string_equal(c->delegate, "runc");
    assert_string_equal(c->tee, "auto");
    assert_false(c->private_rootfs); /* the shared image store by default */
    rt_config_free(c);
    const char priv[] = "{\"image_store\":\"private\"}";
    assert_int_equal(rt_config_parse(&c, priv, strlen(priv), &err), 0);
    assert_true(c->private_rootfs);
    rt_config_free(c);
    static const char *const bad[] = {
        "{\"image_store\":\"copy\"}",
        "{\"image_store\":true}",
        "{\"allow_plian\":true}",
        "{\"allow_plain\":\"yes\"}",
        "{\"runtime\":1}",
        "{\"dev_key_files\":\"x\"}",
        "{\"dev_secrets\":[\"x\"]}",
        "[]",
        "{",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        c = NULL;
        assert_int_equal(rt_config_parse(&c, bad[i], strlen(bad[i]), &err), -EINVAL);
        assert_null(c);
        err_clear(&err);
    }
}

static void test_denial_is_eacces_with_rule(void **state)
{
    (void)state;
    pol_decision d = {.allowed = false,
                      .rule = xstrdup("process.env"),
                      .field = xstrdup("process.env[3]"),
                      .reason = xstrdup("\"DEBUG=1\" matches no env rule")};
    cista_error *err = NULL;
    assert_int_equal(agent__deny(&err, &d, "creating the container"), -EACCES);
    assert_non_null(strstr(err->msg, "rule process.env"));
    assert_non_null(strstr(err->msg, "field process.env[3]"));
    assert_non_null(strstr(err->msg, "creating the container"));
    err_free(err);
    pol_decision_clear(&d);
}

static void test_secret_injection(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/cista-test-rt.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    _cleanup_free_ char *root = xasprintf("%s/rootfs", tmpl);
    _cleanup_free_ char *outside = xasprintf("%s/outside", tmpl);
    assert_int_equal(mkdir(root, 0755), 0);
    assert_int_equal(mkdir(outside, 0755), 0);
    /* an image symlink that points out of the rootfs must not carry the secret out */
    _cleanup_free_ char *lnk = xasprintf("%s/etc", root);
    assert_int_equal(symlink(outside, lnk), 0);
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(rootfd >= 0);
    cista_error *err = NULL;
    const char secret[] = "s3cr3t";
    assert_int_equal(agent__inject_secret_file(rootfd, "/run/secrets/db", secret, 6,
                                               (int64_t)getuid(), (int64_t)getgid(), &err),
                     0);
    _cleanup_free_ char *p = xasprintf("%s/run/secrets/db", root);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0400);
    assert_int_equal(st.st_size, 6);
    _cleanup_free_ char *dir = xasprintf("%s/run/secrets", root);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    /* through the symlink: resolved inside the root, never in "outside" */
    int rc = agent__inject_secret_file(rootfd, "/etc/app/key", secret, 6, 0, 0, &err);
    err_clear(&err);
    (void)rc;
    _cleanup_free_ char *escaped = xasprintf("%s/app/key", outside);
    assert_int_not_equal(access(escaped, F_OK), 0);
    /* a secret file that is a symlink in the image is not followed */
    _cleanup_free_ char *sl = xasprintf("%s/run/secrets/link", root);
    _cleanup_free_ char *target = xasprintf("%s/target", outside);
    assert_int_equal(symlink(target, sl), 0);
    assert_true(agent__inject_secret_file(rootfd, "/run/secrets/link", secret, 6, 0, 0, &err) < 0);
    err_clear(&err);
    assert_int_not_equal(access(target, F_OK), 0);
    /* paths that climb or are not absolute are refused */
    assert_int_equal(agent__inject_secret_file(rootfd, "../x", secret, 6, 0, 0, &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(agent__inject_secret_file(rootfd, "/a/../../x", secret, 6, 0, 0, &err),
                     -EINVAL);
    err_clear(&err);
    close(rootfd);
    int tfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_int_equal(util_rm_rf_at(tfd, tmpl + 5, &err), 0);
    close(tfd);
}

/* mkdir -p of each of @paths (relative) below @root */
static void make_dirs(const char *root, const char *const *paths)
{
    for (size_t i = 0; paths[i]; i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", root, paths[i]);
        for (char *s = p + strlen(root) + 1; *s; s++) {
            if (*s == '/') {
                *s = '\0';
                mkdir(p, 0755);
                *s = '/';
            }
        }
        assert_true(mkdir(p, 0755) == 0 || errno == EEXIST);
    }
}

static void rm_tmp(const char *dir)
{
    cista_error *err = NULL;
    int tfd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_int_equal(util_rm_rf_at(tfd, dir + 5, &err), 0);
    close(tfd);
}

/* @cfg's blocker over @treefd as a string compared with @want (NULL: none) */
static void expect_blocker(const json_t *cfg, const json_t *r, bool secret_files, int treefd,
                           const char *want)
{
    _cleanup_free_ char *why = agent_rootfs_bind_blocker(cfg, r, secret_files, false, treefd);
    if (!want) {
        if (why)
            fail_msg("unexpected blocker: %s", why);
        return;
    }
    if (!why || !strstr(why, want))
        fail_msg("blocker \"%s\" does not say \"%s\"", why ? why : "(none)", want);
}

static void test_rootfs_bind_blocker(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/cista-test-bind.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    _cleanup_free_ char *tree = xasprintf("%s/tree", tmpl);
    _cleanup_free_ char *outside = xasprintf("%s/outside", tmpl);
    static const char *const dirs[] = {"tree/proc", "tree/dev",         "tree/sys", "tree/app",
                                       "tree/data", "outside/data/sub", NULL};
    make_dirs(tmpl, dirs);
    int treefd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(treefd >= 0);
    img_config ic = image_config();
    _cleanup_json_ json_t *r = rules();
    agent_host_request req = {0};
    _cleanup_json_ json_t *cfg = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_build_config(&cfg, &ic, r, &req, tree, &err), 0);
    json_t *mounts = json_object_get(cfg, "mounts");
    json_t *caps = json_object_get(json_object_get(cfg, "process"), "capabilities");

    /* read-only root, cista's mounts (/dev/pts in the /dev tmpfs), cwd /app: the bind */
    expect_blocker(cfg, r, false, treefd, NULL);
    expect_blocker(cfg, r, true, treefd, "secret");
    json_object_set_new(json_object_get(cfg, "root"), "readonly", json_false());
    expect_blocker(cfg, r, false, treefd, "root.readonly is false");
    json_object_set_new(json_object_get(cfg, "root"), "readonly", json_true());
    /* only the policy may choose the bind: a read-only root the host asked for stays on the
     * overlay; so does one whose policy allows copying in */
    json_object_set_new(r, "read_only_rootfs", json_false());
    expect_blocker(cfg, r, false, treefd, "the policy does not make the root read-only");
    json_object_set_new(r, "read_only_rootfs", json_true());
    json_object_set_new(r, "copy", json_pack("[s]", "/etc/app/"));
    expect_blocker(cfg, r, false, treefd, "copy files into the container");
    json_object_del(r, "copy");
    {
        /* a FIFO (or socket, device) in the tree would be one channel between the containers */
        _cleanup_free_ char *why = agent_rootfs_bind_blocker(cfg, r, false, true, treefd);
        assert_non_null(why);
        assert_non_null(strstr(why, "FIFO"));
    }

    /* CAP_SYS_ADMIN in any set of the process, or allowed by the policy (exec) */
    static const char *const sets[] = {"bounding", "effective", "permitted", "ambient"};
    for (size_t i = 0; i < ARRAY_LEN(sets); i++) {
        json_t *set = json_object_get(caps, sets[i]);
        json_array_append_new(set, json_string("CAP_SYS_ADMIN"));
        expect_blocker(cfg, r, false, treefd, "CAP_SYS_ADMIN");
        json_array_remove(set, json_array_size(set) - 1);
    }
    expect_blocker(cfg, r, false, treefd, NULL);
    json_t *pbound = json_object_get(json_object_get(r, "capabilities"), "bounding");
    json_array_append_new(pbound, json_string("cap_sys_admin"));
    expect_blocker(cfg, r, false, treefd, "policy allows CAP_SYS_ADMIN");
    json_array_remove(pbound, json_array_size(pbound) - 1);
    /* CAP_DAC_READ_SEARCH: open_by_handle_at through the bind reaches the whole store */
    json_array_append_new(pbound, json_string("CAP_DAC_READ_SEARCH"));
    expect_blocker(cfg, r, false, treefd, "CAP_DAC_READ_SEARCH");
    json_array_remove(pbound, json_array_size(pbound) - 1);
    json_t *peff = json_object_get(caps, "effective");
    json_array_append_new(peff, json_string("DAC_READ_SEARCH"));
    expect_blocker(cfg, r, false, treefd, "CAP_DAC_READ_SEARCH");
    json_array_remove(peff, json_array_size(peff) - 1);

    /* a mount point in the tree; one below an earlier mount; one missing */
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/data/", "type",
                                            "tmpfs", "source", "tmpfs"));
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/data/x/y", "type",
                                            "tmpfs", "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, NULL);
    size_t n = json_array_size(mounts);
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/srv/x", "type",
                                            "tmpfs", "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, "mount point \"/srv/x\" is not in the image");
    /* below /srv only when /srv is mounted first (and /srv itself must be in the image) */
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/srv", "type", "tmpfs",
                                            "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, "mount point \"/srv/x\"");
    make_dirs(tmpl, (const char *const[]){"tree/srv", NULL});
    expect_blocker(cfg, r, false, treefd, "mount point \"/srv/x\"");
    json_array_remove(mounts, n);
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/srv/x", "type",
                                            "tmpfs", "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, NULL);
    json_array_remove(mounts, n);
    json_array_remove(mounts, n);
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "rel", "type", "tmpfs",
                                            "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, "not a clean absolute path");
    json_array_remove(mounts, json_array_size(mounts) - 1);

    /* resolved in the tree: a symlink to an absolute path stays in it (outside/data/sub exists) */
    _cleanup_free_ char *lnk = xasprintf("%s/link", tree);
    assert_int_equal(symlink(outside, lnk), 0);
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/link/data/sub",
                                            "type", "tmpfs", "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, "/link/data/sub");
    json_array_remove(mounts, json_array_size(mounts) - 1);
    _cleanup_free_ char *lnk2 = xasprintf("%s/applink", tree);
    assert_int_equal(symlink("/app", lnk2), 0);
    json_array_append_new(mounts, json_pack("{s:s,s:s,s:s}", "destination", "/applink", "type",
                                            "tmpfs", "source", "tmpfs"));
    expect_blocker(cfg, r, false, treefd, NULL);

    /* the cwd: in the tree, or below a mount (made there), else missing */
    json_t *proc = json_object_get(cfg, "process");
    json_object_set_new(proc, "cwd", json_string("/data/work"));
    expect_blocker(cfg, r, false, treefd, NULL);
    json_object_set_new(proc, "cwd", json_string("/opt"));
    expect_blocker(cfg, r, false, treefd, "the working directory \"/opt\"");

    close(treefd);
    rm_tmp(tmpl);
}

/* A sandbox on a tmpfs (agent_sandbox_open() insists) whose agent.json says @rootfs. */
static void make_sandbox(const char *dir, const char *rootfs)
{
    static const char policy[] =
        "{\"version\":\"1\",\"containers\":[{\"name\":\"app\",\"process\":{\"args\":[\"/x\"],"
        "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},\"copy\":[\"/etc/\"]}]}";
    _cleanup_free_ char *tee = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(tee, 0700), 0);
    assert_int_equal(mount("tmpfs", tee, "tmpfs", MS_NODEV, "mode=0700"), 0);
    static const char *const dirs[] = {AGENT_ROOTFS "/etc", NULL};
    make_dirs(tee, dirs);
    _cleanup_free_ char *st = rootfs
                                  ? xasprintf("{\"container\":\"app\",\"rootfs\":\"%s\"}", rootfs)
                                  : xstrdup("{\"container\":\"app\"}");
    int tfd = open(tee, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(tfd >= 0);
    cista_error *err = NULL;
    assert_int_equal(util_write_file_atomic(tfd, "agent.json", st, strlen(st), 0600, &err), 0);
    assert_int_equal(util_write_file_atomic(tfd, AGENT_POLICY, policy, strlen(policy), 0600, &err),
                     0);
    close(tfd);
}

static void test_copy_refused_into_readonly_bind(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/cista-test-cp.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    _cleanup_free_ char *probe = xasprintf("%s/probe", tmpl);
    assert_int_equal(mkdir(probe, 0700), 0);
    if (mount("tmpfs", probe, "tmpfs", 0, NULL) < 0) {
        rm_tmp(tmpl);
        skip(); /* needs CAP_SYS_ADMIN for the sandbox tmpfs */
    }
    umount2(probe, MNT_DETACH);
    static const struct {
        const char *name, *rootfs, *kind;
        int rc;
    } cases[] = {
        {"ro", "readonly-bind", "readonly-bind", -EROFS},
        {"ov", "overlay", "overlay", 0},
        {"old", NULL, NULL, 0}, /* made before the kind was recorded */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        _cleanup_free_ char *dir = xasprintf("%s/%s", tmpl, cases[i].name);
        make_sandbox(dir, cases[i].rootfs);
        agent_sandbox *sb = NULL;
        cista_error *err = NULL;
        assert_int_equal(agent_sandbox_open(&sb, dir, NULL, &err), 0);
        if (cases[i].kind)
            assert_string_equal(agent_sandbox_rootfs(sb), cases[i].kind);
        else
            assert_null(agent_sandbox_rootfs(sb));
        assert_int_equal(agent_copy_in(sb, "/etc/app.conf", "x=1\n", 4, &err), cases[i].rc);
        _cleanup_free_ char *f =
            xasprintf("%s/%s/%s/etc/app.conf", dir, AGENT_TEE_DIR, AGENT_ROOTFS);
        if (cases[i].rc) {
            assert_non_null(strstr(err->msg, "read-only"));
            err_clear(&err);
            assert_int_not_equal(access(f, F_OK), 0);
        } else {
            assert_int_equal(access(f, F_OK), 0);
        }
        agent_sandbox_free(sb);
        _cleanup_free_ char *tee = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
        assert_int_equal(umount2(tee, MNT_DETACH), 0);
    }
    rm_tmp(tmpl);
}

static void test_ids_and_signals(void **state)
{
    (void)state;
    assert_true(rt_id_valid("abc"));
    assert_true(rt_id_valid("a-b_c.d+e"));
    assert_true(rt_id_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(rt_id_valid(""));
    assert_false(rt_id_valid(NULL));
    assert_false(rt_id_valid(".."));
    assert_false(rt_id_valid("-x"));
    assert_false(rt_id_valid("a/b"));
    assert_false(rt_id_valid("a b"));
    char longid[200];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = 0;
    assert_false(rt_id_valid(longid));
    assert_int_equal(util_signal_parse("9"), 9);
    assert_int_equal(util_signal_parse("KILL"), 9);
    assert_int_equal(util_signal_parse("SIGTERM"), 15);
    assert_int_equal(util_signal_parse("sigusr1"), 10);
    assert_int_equal(util_signal_parse("0"), -EINVAL);
    assert_int_equal(util_signal_parse("65"), -EINVAL);
    assert_int_equal(util_signal_parse("SIGNOPE"), -EINVAL);
    assert_int_equal(util_signal_parse(""), -EINVAL);
    assert_int_equal(util_signal_parse("9x"), -EINVAL);
    _cleanup_free_ char *r = agent_image_key_resource("web");
    assert_string_equal(r, "kbs:///default/image-key/web");
}

static void test_keysource_dev(void **state)
{
    (void)state;
    agent_keysource *ks = NULL;
    cista_error *err = NULL;
    const char *bad[] = {"no-equals"};
    assert_int_equal(agent_keysource_dev_new(&ks, NULL, 0, bad, 1, &err), -EINVAL);
    err_clear(&err);
    char tmpl[] = "/tmp/cista-test-secret.XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(util_write_all(fd, "abc", 3), 0);
    close(fd);
    _cleanup_free_ char *spec = xasprintf("kbs:///r/t/x=%s", tmpl);
    const char *specs[] = {spec};
    assert_int_equal(agent_keysource_dev_new(&ks, NULL, 0, specs, 1, &err), 0);
    assert_true(ks->ops->insecure);
    uint8_t *s = NULL;
    size_t size = 0;
    assert_int_equal(ks->ops->get_secret(ks, "kbs:///r/t/x", &s, &size, &err), 0);
    assert_int_equal(size, 3);
    assert_memory_equal(s, "abc", 3);
    free(s);
    assert_int_equal(ks->ops->get_secret(ks, "kbs:///r/t/y", &s, &size, &err), -ENOKEY);
    err_clear(&err);
    EVP_PKEY **keys = NULL;
    size_t n = 0;
    assert_int_equal(ks->ops->get_image_keys(ks, "kbs:///default/image-key/x", &keys, &n, &err),
                     -ENOKEY);
    err_clear(&err);
    agent_keysource_free(ks);
    unlink(tmpl);
    agent_keysource *none = agent_keysource_none_new();
    assert_int_equal(none->ops->get_secret(none, "kbs:///r/t/x", &s, &size, &err), -ENOKEY);
    err_clear(&err);
    agent_keysource_free(none);
}

/* agent_sandbox_open() of @dir: the code, and the message holding @words when refused. */
static void expect_open(const char *dir, int rc, const char *words)
{
    agent_sandbox *sb = NULL;
    cista_error *err = NULL;
    assert_int_equal(agent_sandbox_open(&sb, dir, NULL, &err), rc);
    if (rc == 0) {
        agent_sandbox_free(sb);
        return;
    }
    _cleanup_free_ char *msg = err_str(err);
    if (!strstr(msg, words))
        fail_msg("\"%s\" not in: %s", words, msg);
    err_clear(&err);
}

/*
 * The sandbox directory and its tee are the host's (--root): a symlink there, a plain directory,
 * a tmpfs mounted over cista's, or a bind of a directory of another tmpfs is never taken for the
 * sandbox's TEE memory (agent__check_mounted_on(), as agent_sandbox_open() uses it).
 */
static void test_sandbox_tee_checked(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/cista-test-tee.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    _cleanup_free_ char *probe = xasprintf("%s/probe", tmpl);
    assert_int_equal(mkdir(probe, 0700), 0);
    if (mount("tmpfs", probe, "tmpfs", 0, NULL) < 0) {
        rm_tmp(tmpl);
        skip(); /* needs CAP_SYS_ADMIN for the tmpfs */
    }
    _cleanup_free_ char *dir = xasprintf("%s/sb", tmpl);
    _cleanup_free_ char *tee = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
    make_sandbox(dir, "overlay");
    expect_open(dir, 0, NULL);

    /* the sandbox directory renamed and a symlink to it put in its place */
    _cleanup_free_ char *moved = xasprintf("%s/sb.moved", tmpl);
    assert_int_equal(rename(dir, moved), 0);
    assert_int_equal(symlink(moved, dir), 0);
    expect_open(dir, -EPERM, "is a symbolic link");
    /* ... and a symlink as the tee of a directory of the host's */
    assert_int_equal(unlink(dir), 0);
    assert_int_equal(mkdir(dir, 0700), 0);
    _cleanup_free_ char *mtee = xasprintf("%s/%s", moved, AGENT_TEE_DIR);
    assert_int_equal(symlink(mtee, tee), 0);
    expect_open(dir, -EPERM, "is a symbolic link");
    /* ... or a plain directory with copies of the sandbox's files */
    assert_int_equal(unlink(tee), 0);
    assert_int_equal(mkdir(tee, 0700), 0);
    expect_open(dir, -EPERM, "plain directory");
    /* ... or a bind of a directory of another tmpfs (the real tee's rootfs, say) */
    _cleanup_free_ char *sub = xasprintf("%s/%s", mtee, AGENT_ROOTFS);
    assert_int_equal(mount(sub, tee, NULL, MS_BIND, NULL), 0);
    expect_open(dir, -EPERM, "bind of a directory");
    umount2(tee, MNT_DETACH);
    /* ... or a tmpfs stacked over a tmpfs there */
    assert_int_equal(mount("tmpfs", tee, "tmpfs", MS_NODEV, "mode=0700"), 0);
    assert_int_equal(mount("tmpfs", tee, "tmpfs", MS_NODEV, "mode=0700"), 0);
    expect_open(dir, -EPERM, "mounted over another");
    umount2(tee, MNT_DETACH);
    /* the bottom one alone: the check is about mounts, a host root could do this (docs) */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int tfd = open(tee, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cista_error *err = NULL;
    assert_int_equal(agent__check_mounted_on(dfd, tfd, "tmpfs", tee, &err), 0);
    assert_int_equal(agent__check_mounted_on(dfd, tfd, "fuse.cista", tee, &err), -EPERM);
    assert_non_null(strstr(err->msg, "tmpfs"));
    err_clear(&err);
    close(tfd);
    close(dfd);
    umount2(tee, MNT_DETACH);
    assert_int_equal(rmdir(tee), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(rename(moved, dir), 0);
    expect_open(dir, 0, NULL);
    /* the sandbox is removed through its checked fd only */
    assert_int_equal(agent_sandbox_destroy(dir, &err), 0);
    struct stat a, b;
    assert_int_equal(stat(tee, &a), 0);
    assert_int_equal(stat(dir, &b), 0);
    assert_int_equal(a.st_dev, b.st_dev);
    umount2(probe, MNT_DETACH);
    rm_tmp(tmpl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_without_host_request),
        cmocka_unit_test(test_config_from_host_request),
        cmocka_unit_test(test_config_bad_host_request),
        cmocka_unit_test(test_rlimit_clamp),
        cmocka_unit_test(test_seccomp_fake_success_refused),
        cmocka_unit_test(test_mount_destinations_normalised),
        cmocka_unit_test(test_rlimit_core_forced_zero),
        cmocka_unit_test(test_rlimit_unlimited_round_trip),
        cmocka_unit_test(test_annotations),
        cmocka_unit_test(test_runtime_config),
        cmocka_unit_test(test_denial_is_eacces_with_rule),
        cmocka_unit_test(test_secret_injection),
        cmocka_unit_test(test_ids_and_signals),
        cmocka_unit_test(test_keysource_dev),
        cmocka_unit_test(test_rootfs_bind_blocker),
        cmocka_unit_test(test_copy_refused_into_readonly_bind),
        cmocka_unit_test(test_sandbox_tee_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
