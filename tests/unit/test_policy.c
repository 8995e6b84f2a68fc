/* test_policy.c - policy parsing, the allow/deny table, generation from images and YAML. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/policy.h"
#include "util/json.h"
#include "util/util.h"

#define DIGEST_M "sha256:93a5add5c26ed21f3336ad08c3d20df43aab44ca8fa9a0f7b0f084fd2ff6878e"
#define DIGEST_L "sha256:1633fb949722186ddb41294a2a913ccae9f43e97d702dd8161fb6bf639d1be70"
#define SAMPLE_IMAGE "oci:../shared/testdata/ocicrypt/plain:v1"

static const char *const POLICY =
    "{\"version\":\"1\",\"containers\":["
    "{\"name\":\"app\","
    " \"image\":{\"manifest_digest\":\"" DIGEST_M "\",\"layers\":[\"" DIGEST_L "\"]},"
    " \"process\":{\"args\":[\"/bin/server\",\"--port\",\"8080\"],"
    "  \"env\":[{\"exact\":\"PATH=/usr/bin:/bin\"},{\"exact\":\"FOO=bar\"},"
    "   {\"regex\":\"^HOSTNAME=[a-z0-9-]+$\"},{\"regex\":\"LOG_[A-Z]+=(debug|info)\"}],"
    "  \"cwd\":\"/srv\",\"user\":{\"uid\":1000,\"gid\":1000,\"additional_gids\":[2000]},"
    "  \"no_new_privileges\":true},"
    " \"mounts\":["
    "  {\"destination\":\"/proc\",\"type\":\"proc\",\"source\":{\"exact\":\"proc\"}},"
    "  "
    "{\"destination\":\"/data\",\"type\":\"bind\",\"source\":{\"regex\":\"/var/lib/data/[a-z]+\"},"
    "   \"options\":[\"rbind\",\"rw\"]},"
    "  {\"destination\":\"/etc/tls\",\"type\":\"bind\",\"source\":{\"exact\":\"/host/tls\"},"
    "   \"options\":[\"rbind\"],\"read_only\":true}],"
    " \"capabilities\":{\"bounding\":[\"CAP_NET_BIND_SERVICE\",\"CAP_CHOWN\"],"
    "  \"effective\":[\"CAP_NET_BIND_SERVICE\"],\"permitted\":[\"CAP_NET_BIND_SERVICE\"]},"
    " \"sysctls\":{\"net.ipv4.ip_unprivileged_port_start\":\"80\"},"
    " \"read_only_rootfs\":true,"
    " \"secrets\":[{\"resource\":\"kbs:///default/key/db\",\"path\":\"/run/secrets/db\"},"
    "  {\"resource\":\"kbs:///default/token/api\",\"env\":\"API_TOKEN\"}],"
    " \"volumes\":[{\"name\":\"vol1\",\"mount_point\":\"/data/enc\","
    "  \"key\":\"kbs:///default/volume-key/vol1\"}],"
    " \"exec\":[[\"/bin/ls\",\"-l\"],[\"/bin/sh\",\"-c\",\"echo hi\"]],"
    " \"logs\":false,\"signals\":[15],"
    " \"copy\":[\"/etc/app/config.yaml\",\"/srv/upload/\"]},"
    "{\"name\":\"side\",\"process\":{\"args\":[\"/side\"],\"cwd\":\"/\","
    "  \"user\":{\"uid\":0,\"gid\":0}},\"logs\":true,\"signals\":[9,15]}"
    "]}";

static const char *const CONFIG =
    "{\"ociVersion\":\"1.1.0\","
    "\"process\":{\"args\":[\"/bin/server\",\"--port\",\"8080\"],"
    " \"env\":[\"PATH=/usr/bin:/bin\",\"FOO=bar\",\"HOSTNAME=web-1\"],"
    " \"cwd\":\"/srv\",\"user\":{\"uid\":1000,\"gid\":1000,\"additionalGids\":[2000]},"
    " \"noNewPrivileges\":true,"
    " \"capabilities\":{\"bounding\":[\"CAP_NET_BIND_SERVICE\"],"
    "  \"effective\":[\"CAP_NET_BIND_SERVICE\"],\"permitted\":[\"CAP_NET_BIND_SERVICE\"]}},"
    "\"root\":{\"path\":\"rootfs\",\"readonly\":true},"
    "\"mounts\":["
    " {\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\","
    "  \"options\":[\"nosuid\",\"noexec\",\"nodev\"]},"
    " {\"destination\":\"/data\",\"type\":\"bind\",\"source\":\"/var/lib/data/abc\","
    "  \"options\":[\"rbind\",\"rw\"]},"
    " {\"destination\":\"/etc/tls\",\"type\":\"bind\",\"source\":\"/host/tls\","
    "  \"options\":[\"rbind\",\"ro\"]}],"
    "\"linux\":{\"sysctl\":{\"net.ipv4.ip_unprivileged_port_start\":\"80\"}}}";

/* Set the member at a dotted path ("process.env") to @v (stolen); NULL deletes. */
static void set_path(json_t *root, const char *path, json_t *v)
{
    char *copy = xstrdup(path);
    json_t *o = root;
    char *save = NULL, *tok = strtok_r(copy, ".", &save), *next;
    while ((next = strtok_r(NULL, ".", &save))) {
        json_t *c = json_object_get(o, tok);
        if (!c) {
            c = json_object();
            json_object_set_new(o, tok, c);
        }
        o = c;
        tok = next;
    }
    if (v)
        json_object_set_new(o, tok, v);
    else
        json_object_del(o, tok);
    free(copy);
}

/* Base document with a patch: a JSON object of dotted path -> new value (null deletes). */
static char *patched(const char *base, const char *patch)
{
    json_t *doc = json_loads(base, 0, NULL);
    assert_non_null(doc);
    if (patch) {
        json_t *p = json_loads(patch, 0, NULL);
        assert_non_null(p);
        const char *k;
        json_t *v;
        json_object_foreach(p, k, v)
        {
            set_path(doc, k, json_is_null(v) ? NULL : json_incref(v));
        }
        json_decref(p);
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

static pol_policy *load_policy(void)
{
    pol_policy *p = NULL;
    cista_error *err = NULL;
    int r = pol_parse(&p, POLICY, strlen(POLICY), &err);
    if (r < 0)
        fail_msg("policy: %s", err->msg);
    return p;
}

typedef enum { OP_CREATE, OP_EXEC, OP_LOGS, OP_SIGNAL, OP_COPY, OP_VOLUME, OP_IMAGE } op_kind;

typedef struct {
    const char *name;
    op_kind op;
    const char *container;
    const char *arg;  /* create: patch of CONFIG; exec: process.json; copy: path; volume: name */
    const char *arg2; /* volume: dest; image: manifest digest */
    int num;          /* signal */
    bool allow;
    const char *rule; /* expected rule on deny */
    const char *field;
} policy_case;

#define EXEC(args)                                                                                 \
    "{\"args\":" args ",\"cwd\":\"/srv\",\"env\":[\"PATH=/usr/bin:/"                               \
    "bin\"],\"noNewPrivileges\":true}"

static const policy_case cases[] = {
    /* create: the base config */
    {"base config", OP_CREATE, "app", NULL, NULL, 0, true, NULL, NULL},
    {"container from the only... not: two containers, no name", OP_CREATE, NULL, NULL, NULL, 0,
     false, "container", ""},
    {"unknown container", OP_CREATE, "db", NULL, NULL, 0, false, "container", ""},
    {"container name case", OP_CREATE, "App", NULL, NULL, 0, false, "container", ""},
    {"cri annotation names the container", OP_CREATE, NULL,
     "{\"annotations\":{\"io.kubernetes.cri.container-name\":\"app\"}}", NULL, 0, true, NULL, NULL},
    /* args: injection */
    {"extra argument", OP_CREATE, "app",
     "{\"process.args\":[\"/bin/server\",\"--port\",\"8080\",\"--debug\"]}", NULL, 0, false,
     "process.args", "process.args"},
    {"missing argument", OP_CREATE, "app", "{\"process.args\":[\"/bin/server\",\"--port\"]}", NULL,
     0, false, "process.args", "process.args"},
    {"split argument", OP_CREATE, "app", "{\"process.args\":[\"/bin/server\",\"--port 8080\"]}",
     NULL, 0, false, "process.args", "process.args[1]"},
    {"argument with trailing space", OP_CREATE, "app",
     "{\"process.args\":[\"/bin/server\",\"--port\",\"8080 \"]}", NULL, 0, false, "process.args",
     "process.args[2]"},
    {"argument with shell injection", OP_CREATE, "app",
     "{\"process.args\":[\"/bin/server\",\"--port\",\"8080;sh\"]}", NULL, 0, false, "process.args",
     "process.args[2]"},
    {"other binary", OP_CREATE, "app", "{\"process.args\":[\"/bin/sh\",\"--port\",\"8080\"]}", NULL,
     0, false, "process.args", "process.args[0]"},
    {"argument case", OP_CREATE, "app", "{\"process.args\":[\"/bin/Server\",\"--port\",\"8080\"]}",
     NULL, 0, false, "process.args", "process.args[0]"},
    {"args missing", OP_CREATE, "app", "{\"process.args\":null}", NULL, 0, false, "process.args",
     "process.args"},
    {"args not strings", OP_CREATE, "app", "{\"process.args\":[\"/bin/server\",8080,\"x\"]}", NULL,
     0, false, "process.args", "process.args"},
    {"args empty", OP_CREATE, "app", "{\"process.args\":[]}", NULL, 0, false, "process.args",
     "process.args"},
    /* env: anchoring, case, duplicates */
    {"env exact suffix", OP_CREATE, "app", "{\"process.env\":[\"FOO=barx\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env exact prefix", OP_CREATE, "app", "{\"process.env\":[\"XFOO=bar\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env value case", OP_CREATE, "app", "{\"process.env\":[\"FOO=Bar\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env name case", OP_CREATE, "app", "{\"process.env\":[\"foo=bar\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env regex match", OP_CREATE, "app", "{\"process.env\":[\"LOG_LEVEL=debug\"]}", NULL, 0, true,
     NULL, NULL},
    {"env regex anchored at end", OP_CREATE, "app", "{\"process.env\":[\"LOG_LEVEL=debugx\"]}",
     NULL, 0, false, "process.env", "process.env[0]"},
    {"env regex anchored at start", OP_CREATE, "app", "{\"process.env\":[\"XLOG_LEVEL=info\"]}",
     NULL, 0, false, "process.env", "process.env[0]"},
    {"env regex alternation stays inside anchors", OP_CREATE, "app",
     "{\"process.env\":[\"LOG_LEVEL=info;rm\"]}", NULL, 0, false, "process.env", "process.env[0]"},
    {"env regex newline", OP_CREATE, "app", "{\"process.env\":[\"HOSTNAME=a\\nLD_PRELOAD=x\"]}",
     NULL, 0, false, "process.env", "process.env[0]"},
    {"env not allowed at index 3", OP_CREATE, "app",
     "{\"process.env\":[\"PATH=/usr/bin:/bin\",\"FOO=bar\",\"HOSTNAME=a\",\"DEBUG=1\"]}", NULL, 0,
     false, "process.env", "process.env[3]"},
    {"env duplicate shadows", OP_CREATE, "app",
     "{\"process.env\":[\"FOO=bar\",\"HOSTNAME=a\",\"FOO=bar\"]}", NULL, 0, false, "process.env",
     "process.env[2]"},
    {"env duplicate via regex", OP_CREATE, "app",
     "{\"process.env\":[\"HOSTNAME=a\",\"HOSTNAME=b\"]}", NULL, 0, false, "process.env",
     "process.env[1]"},
    {"env without =", OP_CREATE, "app", "{\"process.env\":[\"FOO\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env empty name", OP_CREATE, "app", "{\"process.env\":[\"=bar\"]}", NULL, 0, false,
     "process.env", "process.env[0]"},
    {"env LD_PRELOAD", OP_CREATE, "app", "{\"process.env\":[\"LD_PRELOAD=/tmp/x.so\"]}", NULL, 0,
     false, "process.env", "process.env[0]"},
    {"env missing is fine", OP_CREATE, "app", "{\"process.env\":null}", NULL, 0, true, NULL, NULL},
    {"env not an array", OP_CREATE, "app", "{\"process.env\":\"FOO=bar\"}", NULL, 0, false,
     "process.env", "process.env"},
    /* cwd, user, nnp */
    {"cwd differs", OP_CREATE, "app", "{\"process.cwd\":\"/\"}", NULL, 0, false, "process.cwd",
     "process.cwd"},
    {"cwd trailing slash", OP_CREATE, "app", "{\"process.cwd\":\"/srv/\"}", NULL, 0, true, NULL,
     NULL},
    {"cwd climbing", OP_CREATE, "app", "{\"process.cwd\":\"/srv/../srv\"}", NULL, 0, false,
     "process.cwd", "process.cwd"},
    {"cwd missing", OP_CREATE, "app", "{\"process.cwd\":null}", NULL, 0, false, "process.cwd",
     "process.cwd"},
    {"uid 0", OP_CREATE, "app", "{\"process.user.uid\":0}", NULL, 0, false, "process.user",
     "process.user.uid"},
    {"uid missing means 0", OP_CREATE, "app", "{\"process.user.uid\":null}", NULL, 0, false,
     "process.user", "process.user.uid"},
    {"gid differs", OP_CREATE, "app", "{\"process.user.gid\":0}", NULL, 0, false, "process.user",
     "process.user.gid"},
    {"additional gid not allowed", OP_CREATE, "app", "{\"process.user.additionalGids\":[0]}", NULL,
     0, false, "process.user", "process.user.additionalGids[0]"},
    {"user missing", OP_CREATE, "app", "{\"process.user\":null}", NULL, 0, false, "process.user",
     "process.user"},
    {"no_new_privileges flipped", OP_CREATE, "app", "{\"process.noNewPrivileges\":false}", NULL, 0,
     false, "process.no_new_privileges", "process.noNewPrivileges"},
    {"no_new_privileges missing", OP_CREATE, "app", "{\"process.noNewPrivileges\":null}", NULL, 0,
     false, "process.no_new_privileges", "process.noNewPrivileges"},
    /* capabilities */
    {"cap not allowed", OP_CREATE, "app",
     "{\"process.capabilities.effective\":[\"CAP_SYS_ADMIN\"]}", NULL, 0, false, "capabilities",
     "process.capabilities.effective"},
    {"cap allowed in bounding only", OP_CREATE, "app",
     "{\"process.capabilities.effective\":[\"CAP_CHOWN\"]}", NULL, 0, false, "capabilities",
     "process.capabilities.effective"},
    {"cap subset ok", OP_CREATE, "app",
     "{\"process.capabilities.bounding\":[\"CAP_CHOWN\"],\"process.capabilities.effective\":[]}",
     NULL, 0, true, NULL, NULL},
    {"cap case", OP_CREATE, "app", "{\"process.capabilities.bounding\":[\"cap_net_bind_service\"]}",
     NULL, 0, false, "capabilities", "process.capabilities.bounding"},
    {"ambient cap", OP_CREATE, "app",
     "{\"process.capabilities.ambient\":[\"CAP_NET_BIND_SERVICE\"]}", NULL, 0, false,
     "capabilities", "process.capabilities.ambient"},
    {"unknown cap set", OP_CREATE, "app", "{\"process.capabilities.superset\":[]}", NULL, 0, false,
     "capabilities", "process.capabilities.superset"},
    /* root */
    {"read-only rootfs flipped", OP_CREATE, "app", "{\"root.readonly\":false}", NULL, 0, false,
     "read_only_rootfs", "root.readonly"},
    {"read-only rootfs missing", OP_CREATE, "app", "{\"root.readonly\":null}", NULL, 0, false,
     "read_only_rootfs", "root.readonly"},
    {"root missing", OP_CREATE, "app", "{\"root\":null}", NULL, 0, false, "read_only_rootfs",
     "root"},
    /* mounts: path tricks */
    {"mount dot-dot", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/../etc\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount double slash elsewhere", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"//etc\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount double slash normalised", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"//data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"mount trailing slash", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"mount dot component", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/./data/.\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"mount destination case", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/Data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount relative destination", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\"}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount source regex anchored", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\","
     "\"source\":\"/etc/var/lib/data/abc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount source climbing", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc/../../../../etc\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount exact source double slash", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/etc/tls\",\"type\":\"bind\","
     "\"source\":\"//host//tls/\",\"options\":[\"rbind\",\"ro\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"mount type differs", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"tmpfs\",\"source\":\"tmpfs\"}]}", NULL, 0,
     false, "mounts", "mounts[0]"},
    {"mount read-only rule without ro", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/etc/tls\",\"type\":\"bind\","
     "\"source\":\"/host/tls\",\"options\":[\"rbind\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount rw on read-only rule", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/etc/tls\",\"type\":\"bind\","
     "\"source\":\"/host/tls\",\"options\":[\"rbind\",\"ro\",\"rw\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount option not allowed", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\",\"rshared\"]}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    {"mount restrictive options ok", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\","
     "\"source\":\"/var/lib/data/abc\",\"options\":[\"rbind\",\"nosuid\",\"nodev\",\"ro\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"mount of host root", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/host\",\"type\":\"bind\",\"source\":\"/\"}]}", NULL, 0,
     false, "mounts", "mounts[0]"},
    {"mount without destination", OP_CREATE, "app", "{\"mounts\":[{\"type\":\"proc\"}]}", NULL, 0,
     false, "mounts", "mounts[0]"},
    {"no mounts at all", OP_CREATE, "app", "{\"mounts\":null}", NULL, 0, true, NULL, NULL},
    /* sysctls */
    {"sysctl not allowed", OP_CREATE, "app", "{\"linux.sysctl\":{\"kernel.msgmax\":\"1\"}}", NULL,
     0, false, "sysctls", "linux.sysctl.kernel.msgmax"},
    {"sysctl value differs", OP_CREATE, "app",
     "{\"linux.sysctl\":{\"net.ipv4.ip_unprivileged_port_start\":\"0\"}}", NULL, 0, false,
     "sysctls", "linux.sysctl.net.ipv4.ip_unprivileged_port_start"},
    /* malformed */
    {"config not JSON", OP_CREATE, "app", "!notjson", NULL, 0, false, "config", ""},
    {"process missing", OP_CREATE, "app", "{\"process\":null}", NULL, 0, false, "process",
     "process"},
    /* the second container */
    {"side container default create", OP_CREATE, "side",
     "{\"process.args\":[\"/side\"],\"process.env\":null,\"process.cwd\":\"/\","
     "\"process.user\":{\"uid\":0,\"gid\":0},\"process.capabilities\":null,\"mounts\":null,"
     "\"linux\":null,\"root.readonly\":false,\"process.noNewPrivileges\":false}",
     NULL, 0, true, NULL, NULL},
    {"side container gets no caps", OP_CREATE, "side",
     "{\"process.args\":[\"/side\"],\"process.env\":null,\"process.cwd\":\"/\","
     "\"process.user\":{\"uid\":0,\"gid\":0},\"mounts\":null,\"linux\":null}",
     NULL, 0, false, "capabilities", "process.capabilities.bounding"},
    /* exec */
    {"exec allowed", OP_EXEC, "app", EXEC("[\"/bin/ls\",\"-l\"]"), NULL, 0, true, NULL, NULL},
    {"exec with spaces allowed", OP_EXEC, "app", EXEC("[\"/bin/sh\",\"-c\",\"echo hi\"]"), NULL, 0,
     true, NULL, NULL},
    {"exec not allowed", OP_EXEC, "app", EXEC("[\"/bin/sh\"]"), NULL, 0, false, "exec", "args"},
    {"exec extra argument", OP_EXEC, "app", EXEC("[\"/bin/ls\",\"-l\",\"/etc\"]"), NULL, 0, false,
     "exec", "args"},
    {"exec split argument", OP_EXEC, "app", EXEC("[\"/bin/sh\",\"-c\",\"echo\",\"hi\"]"), NULL, 0,
     false, "exec", "args"},
    {"exec joined argument", OP_EXEC, "app", EXEC("[\"/bin/ls -l\"]"), NULL, 0, false, "exec",
     "args"},
    {"exec bad env", OP_EXEC, "app", "{\"args\":[\"/bin/ls\",\"-l\"],\"env\":[\"LD_PRELOAD=/x\"]}",
     NULL, 0, false, "process.env", "process.env[0]"},
    {"exec cap escalation", OP_EXEC, "app",
     "{\"args\":[\"/bin/ls\",\"-l\"],\"capabilities\":{\"effective\":[\"CAP_SYS_ADMIN\"]}}", NULL,
     0, false, "capabilities", "process.capabilities.effective"},
    {"exec as root", OP_EXEC, "app",
     "{\"args\":[\"/bin/ls\",\"-l\"],\"noNewPrivileges\":true,\"user\":{\"uid\":0,\"gid\":0}}",
     NULL, 0, false, "process.user", "process.user.uid"},
    {"exec in container without exec", OP_EXEC, "side", "{\"args\":[\"/side\"]}", NULL, 0, false,
     "exec", "args"},
    {"exec without no_new_privileges", OP_EXEC, "app", "{\"args\":[\"/bin/ls\",\"-l\"]}", NULL, 0,
     false, "process.no_new_privileges", "process.noNewPrivileges"},
    {"exec args missing", OP_EXEC, "app", "{\"cwd\":\"/\"}", NULL, 0, false, "exec", "args"},
    {"exec malformed", OP_EXEC, "app", "[1,2]", NULL, 0, false, "process", ""},
    /* logs, signals */
    {"logs denied", OP_LOGS, "app", NULL, NULL, 0, false, "logs", ""},
    {"logs allowed", OP_LOGS, "side", NULL, NULL, 0, true, NULL, NULL},
    {"signal TERM", OP_SIGNAL, "app", NULL, NULL, 15, true, NULL, NULL},
    {"signal KILL denied", OP_SIGNAL, "app", NULL, NULL, 9, false, "signals", "signal"},
    {"signal KILL side", OP_SIGNAL, "side", NULL, NULL, 9, true, NULL, NULL},
    {"signal USR1 denied", OP_SIGNAL, "side", NULL, NULL, 10, false, "signals", "signal"},
    /* copy */
    {"copy exact file", OP_COPY, "app", "/etc/app/config.yaml", NULL, 0, true, NULL, NULL},
    {"copy other file", OP_COPY, "app", "/etc/passwd", NULL, 0, false, "copy", "path"},
    {"copy under directory", OP_COPY, "app", "/srv/upload/a.txt", NULL, 0, true, NULL, NULL},
    {"copy climbing out of directory", OP_COPY, "app", "/srv/upload/../../etc/shadow", NULL, 0,
     false, "copy", "path"},
    {"copy directory prefix trick", OP_COPY, "app", "/srv/uploadx/a", NULL, 0, false, "copy",
     "path"},
    {"copy double slash", OP_COPY, "app", "//etc/app//config.yaml", NULL, 0, true, NULL, NULL},
    {"copy relative", OP_COPY, "app", "etc/app/config.yaml", NULL, 0, false, "copy", "path"},
    {"copy none allowed", OP_COPY, "side", "/x", NULL, 0, false, "copy", "path"},
    /* volumes */
    {"volume allowed", OP_VOLUME, "app", "vol1", "/data/enc", 0, true, NULL, NULL},
    {"volume wrong place", OP_VOLUME, "app", "vol1", "/etc", 0, false, "volumes", "mount_point"},
    {"volume trailing slash", OP_VOLUME, "app", "vol1", "/data/enc/", 0, true, NULL, NULL},
    {"volume climbing", OP_VOLUME, "app", "vol1", "/data/enc/../../etc", 0, false, "volumes",
     "mount_point"},
    {"volume unknown", OP_VOLUME, "app", "vol2", "/data/enc", 0, false, "volumes", "name"},
    {"volume of another container", OP_VOLUME, "side", "vol1", "/data/enc", 0, false, "volumes",
     "name"},
    /* create: a mount at a volume's mount point is the volume (rule volumes, not mounts) */
    {"create: bind at the volume's mount point, any source", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/enc\",\"type\":\"bind\","
     "\"source\":\"/anything/the/host/chose\",\"options\":[\"rbind\",\"nosuid\",\"nodev\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"create: untyped bind (options) at the volume's mount point", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/enc/\",\"source\":\"/x\","
     "\"options\":[\"bind\",\"ro\"]}]}",
     NULL, 0, true, NULL, NULL},
    {"create: tmpfs at the volume's mount point", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/enc\",\"type\":\"tmpfs\",\"source\":\"tmpfs\"}]}", NULL,
     0, false, "volumes", "mounts[0]"},
    {"create: volume bind with a power-adding option", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/enc\",\"type\":\"bind\",\"source\":\"/x\","
     "\"options\":[\"rbind\",\"suid\"]}]}",
     NULL, 0, false, "volumes", "mounts[0]"},
    {"create: the volume mounted twice", OP_CREATE, "app",
     "{\"mounts\":[{\"destination\":\"/data/enc\",\"type\":\"bind\",\"source\":\"/x\"},"
     "{\"destination\":\"//data/enc\",\"type\":\"bind\",\"source\":\"/y\"}]}",
     NULL, 0, false, "volumes", "mounts[1]"},
    {"create: a volume's mount point in another container is a plain mount", OP_CREATE, "side",
     "!{\"process\":{\"args\":[\"/side\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},"
     "\"root\":{\"path\":\"r\"},\"mounts\":[{\"destination\":\"/data/enc\",\"type\":\"bind\","
     "\"source\":\"/x\"}]}",
     NULL, 0, false, "mounts", "mounts[0]"},
    /* image */
    {"image matches", OP_IMAGE, "app", DIGEST_L, DIGEST_M, 0, true, NULL, NULL},
    {"image manifest differs", OP_IMAGE, "app", DIGEST_L, DIGEST_L, 0, false, "image",
     "manifest_digest"},
    {"image layer differs", OP_IMAGE, "app", DIGEST_M, DIGEST_M, 0, false, "image", "layers[0]"},
    {"image without rule", OP_IMAGE, "side", DIGEST_L, DIGEST_M, 0, false, "image", ""},
};

static void test_allow_deny_table(void **state)
{
    (void)state;
    _cleanup_pol_ pol_policy *p = load_policy();
    assert_true(ARRAY_LEN(cases) >= 60);
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const policy_case *t = &cases[i];
        _cleanup_decision_ pol_decision d = {0};
        _cleanup_free_ char *req = NULL;
        int r = -1;
        switch (t->op) {
        case OP_CREATE:
            req = t->arg && t->arg[0] == '!' ? xstrdup(t->arg + 1) : patched(CONFIG, t->arg);
            r = pol_allow_create(&d, p, t->container, req, strlen(req));
            break;
        case OP_EXEC:
            r = pol_allow_exec(&d, p, t->container, t->arg, strlen(t->arg));
            break;
        case OP_LOGS:
            r = pol_allow_logs(&d, p, t->container);
            break;
        case OP_SIGNAL:
            r = pol_allow_signal(&d, p, t->container, t->num);
            break;
        case OP_COPY:
            r = pol_allow_copy(&d, p, t->container, t->arg);
            break;
        case OP_VOLUME:
            r = pol_allow_volume_mount(&d, p, t->container, t->arg, t->arg2);
            break;
        case OP_IMAGE: {
            const char *layers[] = {t->arg};
            r = pol_allow_image(&d, p, t->container, t->arg2, layers, 1);
            break;
        }
        }
        if (d.allowed != t->allow || (r == 0) != t->allow)
            fail_msg("case %zu \"%s\": expected %s, got %s (rule %s, field %s): %s", i, t->name,
                     t->allow ? "allow" : "deny", d.allowed ? "allow" : "deny", d.rule, d.field,
                     d.reason);
        assert_non_null(d.rule);
        assert_non_null(d.reason);
        if (!t->allow) {
            assert_int_equal(r, -EACCES);
            if (strcmp(d.rule, t->rule) != 0 || strcmp(d.field, t->field) != 0)
                fail_msg("case %zu \"%s\": expected rule %s field %s, got %s / %s: %s", i, t->name,
                         t->rule, t->field, d.rule, d.field, d.reason);
        }
    }
}

static void test_deny_message(void **state)
{
    (void)state;
    _cleanup_pol_ pol_policy *p = load_policy();
    _cleanup_free_ char *req = patched(
        CONFIG,
        "{\"process.env\":[\"PATH=/usr/bin:/bin\",\"FOO=bar\",\"HOSTNAME=a\",\"DEBUG=1\"]}");
    _cleanup_decision_ pol_decision d = {0};
    assert_int_equal(pol_allow_create(&d, p, "app", req, strlen(req)), -EACCES);
    assert_string_equal(d.reason,
                        "process.env[3] \"DEBUG=1\" matches no env rule of container \"app\"");
}

static void expect_parse_error(const char *doc, const char *needle)
{
    pol_policy *p = NULL;
    cista_error *err = NULL;
    int r = pol_parse(&p, doc, strlen(doc), &err);
    if (r == 0)
        fail_msg("policy parsed but should not: %s", doc);
    assert_null(p);
    if (!strstr(err->msg, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err->msg, needle);
    err_free(err);
}

static void test_parse_errors(void **state)
{
    (void)state;
#define C(body)                                                                                    \
    "{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{\"args\":[\"/x\"],"           \
    "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}}" body "}]}"
    pol_policy *p = NULL;
    cista_error *err = NULL;
    assert_int_equal(pol_parse(&p, C(""), strlen(C("")), &err), 0);
    assert_int_equal(pol_container_count(p), 1);
    assert_string_equal(pol_container_name(p, 0), "a");
    pol_free(p);
    expect_parse_error("{\"version\":\"2\",\"containers\":[]}", "version \"2\"");
    expect_parse_error(C(",\"capabilites\":{}"), "unknown member \"capabilites\"");
    expect_parse_error(C(",\"mounts\":[{\"destination\":\"/a/../b\",\"type\":\"bind\","
                         "\"source\":{\"exact\":\"/x\"}}]"),
                       "not an absolute path");
    expect_parse_error(C(",\"mounts\":[{\"destination\":\"/a//b\",\"type\":\"bind\","
                         "\"source\":{\"exact\":\"/x\"}}]"),
                       "not normalised");
    expect_parse_error(C(",\"secrets\":[{\"resource\":\"kbs:///a/b\",\"path\":\"/x\"}]"),
                       "kbs:///repo/type/tag");
    expect_parse_error(C(",\"secrets\":[{\"resource\":\"kbs:///a/b/c\"}]"), "exactly one");
    expect_parse_error(C(",\"signals\":[0]"), "signal");
    expect_parse_error("{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{"
                       "\"args\":[\"/x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},"
                       "\"env\":[{\"regex\":\"(unclosed\"}]}}]}",
                       "unbalanced");
    /* a pattern that would close the anchoring group: ^(A=1)|(.*)$ matches anything */
    expect_parse_error("{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{"
                       "\"args\":[\"/x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},"
                       "\"env\":[{\"regex\":\"A=1)|(.*\"}]}}]}",
                       "unbalanced");

    expect_parse_error("{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{"
                       "\"args\":[\"/x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},"
                       "\"env\":[{\"exact\":\"A=1\",\"regex\":\"A=.*\"}]}}]}",
                       "exactly one");
    expect_parse_error("{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{"
                       "\"args\":[\"/x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}}},"
                       "{\"name\":\"a\",\"process\":{\"args\":[\"/x\"],\"cwd\":\"/\","
                       "\"user\":{\"uid\":0,\"gid\":0}}}]}",
                       "appears twice");
    expect_parse_error("{\"version\":\"1\",\"containers\":[{\"name\":\"a\"}]}",
                       "\"process\" is missing");
    expect_parse_error("{\"version\":\"1\",\"containers\":[],\"version\":\"1\"}", "duplicate");
    /* the pinned KBS */
    expect_parse_error("{\"version\":\"1\",\"containers\":[],\"kbs\":\"x\"}", "object");
    expect_parse_error("{\"version\":\"1\",\"containers\":[],\"kbs\":{}}", "url");
    expect_parse_error("{\"version\":\"1\",\"containers\":[],\"kbs\":{\"url\":\"ftp://k\"}}",
                       "not an http(s) URL");
    expect_parse_error("{\"version\":\"1\",\"containers\":[],\"kbs\":{\"url\":\"https://k/?a\"}}",
                       "not an http(s) URL");
    expect_parse_error(
        "{\"version\":\"1\",\"containers\":[],\"kbs\":{\"url\":\"https://k\",\"ca\":\"x\"}}",
        "not a PEM");
    expect_parse_error(
        "{\"version\":\"1\",\"containers\":[],\"kbs\":{\"url\":\"https://k\",\"pin\":\"x\"}}",
        "pin");
#undef C
}

static void test_kbs_pin(void **state)
{
    (void)state;
    const char *doc =
        "{\"version\":\"1\",\"containers\":[],\"kbs\":{\"url\":\"https://kbs.example:8443//\","
        "\"ca\":\"-----BEGIN CERTIFICATE-----\\nMII\\n-----END CERTIFICATE-----\\n\"}}";
    _cleanup_pol_ pol_policy *p = NULL;
    assert_int_equal(pol_parse(&p, doc, strlen(doc), NULL), 0);
    const char *url = NULL, *ca = NULL;
    assert_int_equal(pol_get_kbs(&url, &ca, p), 1);
    assert_string_equal(url, "https://kbs.example:8443");
    assert_non_null(strstr(ca, "BEGIN CERTIFICATE"));
    const char *none = "{\"version\":\"1\",\"containers\":[]}";
    _cleanup_pol_ pol_policy *q = NULL;
    assert_int_equal(pol_parse(&q, none, strlen(none), NULL), 0);
    assert_int_equal(pol_get_kbs(&url, &ca, q), 0);
    assert_null(url);
}

static void test_path_normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } t[] = {
        {"/", "/"},           {"//", "/"},          {"/a//b/", "/a/b"}, {"/./a/./", "/a"},
        {"/a/..", NULL},      {"/a/../b", NULL},    {"a", NULL},        {"", NULL},
        {"/..a/b", "/..a/b"}, {"/a/...", "/a/..."},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        _cleanup_free_ char *n = pol_path_normalize(t[i].in);
        if (t[i].out)
            assert_string_equal(n, t[i].out);
        else
            assert_null(n);
    }
}

static void test_hash_encodings(void **state)
{
    (void)state;
    uint8_t h[POL_HASH_SIZE];
    pol_hash(h, "", 0);
    _cleanup_json_ json_t *e = pol_hash_encodings(h);
    const char *empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_string_equal(json_string_value(json_object_get(e, "sha256")), empty);
    assert_string_equal(json_string_value(json_object_get(e, "snp_host_data")), empty);
    assert_string_equal(json_string_value(json_object_get(e, "sim_host_data")), empty);
    const char *mr = json_string_value(json_object_get(e, "tdx_mrconfigid"));
    assert_int_equal(strlen(mr), 96);
    assert_memory_equal(mr, empty, 64);
    assert_string_equal(mr + 64, "00000000000000000000000000000000");
    assert_int_equal(json_integer_value(json_object_get(e, "tpm_pcr")), 23);
    assert_int_equal(strlen(json_string_value(json_object_get(e, "tpm_pcr_value"))), 64);
}

static char *read_text(const char *path, size_t *size)
{
    char *data = NULL;
    cista_error *err = NULL;
    if (util_read_file(&data, size, path, 1 << 20, &err) < 0)
        fail_msg("%s: %s", path, err->msg);
    return data;
}

/* Generate from a YAML file; returns the canonical policy or NULL (error in *err). */
static char *gen_yaml(const char *file, bool pin, char **yaml_out, cista_error **err)
{
    size_t size;
    _cleanup_free_ char *yaml = read_text(file, &size);
    const char *images[] = {SAMPLE_IMAGE};
    pol_gen_opts o = {0};
    o.pod_yaml = yaml;
    o.pod_yaml_size = size;
    if (pin) {
        o.images = images;
        o.image_count = 1;
    } else {
        o.no_image_pinning = true;
    }
    json_t *doc = NULL;
    if (pol_gen(&doc, yaml_out, &o, err) < 0)
        return NULL;
    char *canon = pol_canonical(doc, NULL);
    json_decref(doc);
    return canon;
}

static json_t *container_of(const char *canon, const char *name)
{
    json_t *doc = json_loads(canon, 0, NULL);
    assert_non_null(doc);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "containers"), i, c)
    {
        if (!strcmp(json_string_value(json_object_get(c, "name")), name)) {
            json_incref(c);
            json_decref(doc);
            return c;
        }
    }
    json_decref(doc);
    fail_msg("no container %s", name);
    return NULL;
}

static bool has_env_rule(const json_t *c, const char *kind, const char *text)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(json_object_get(c, "process"), "env"), i, r)
    {
        const char *v = json_string_value(json_object_get(r, kind));
        if (v && !strcmp(v, text))
            return true;
    }
    return false;
}

static void test_gen_deployment(void **state)
{
    (void)state;
    cista_error *err = NULL;
    char *yaml_out = NULL;
    _cleanup_free_ char *canon = gen_yaml("tests/data/k8s/deployment.yaml", true, &yaml_out, &err);
    if (!canon)
        fail_msg("gen: %s", err->msg);
    _cleanup_json_ json_t *web = container_of(canon, "web");
    _cleanup_json_ json_t *mig = container_of(canon, "migrate");
    json_t *proc = json_object_get(web, "process");
    /* args replace the image cmd, the entrypoint stays, $(VAR) expands and $$ escapes */
    _cleanup_free_ char *args = js_dump_compact(json_object_get(proc, "args"));
    assert_string_equal(args, "[\"/app/main.py\",\"--port\",\"8080\",\"--greeting=hello world\","
                              "\"$(LITERAL)\"]");
    _cleanup_free_ char *margs =
        js_dump_compact(json_object_get(json_object_get(mig, "process"), "args"));
    assert_string_equal(margs, "[\"/app/migrate\",\"--db\",\"db.internal\"]");
    assert_true(has_env_rule(web, "exact", "GREETING=hello world"));
    assert_true(has_env_rule(web, "regex", "^DB_PASSWORD=.*$"));
    assert_true(has_env_rule(web, "regex", "^LOG_LEVEL=.*$")); /* envFrom ConfigMap key */
    assert_true(has_env_rule(web, "regex", "^app\\.properties=.*$"));
    assert_true(has_env_rule(web, "regex", "^EXTRA_[A-Za-z0-9_.-]*=.*$"));
    assert_false(has_env_rule(mig, "regex", "^DB_PASSWORD=.*$"));
    assert_string_equal(json_string_value(json_object_get(proc, "cwd")), "/app");
    assert_true(json_is_true(json_object_get(proc, "no_new_privileges")));
    assert_true(json_is_true(json_object_get(web, "read_only_rootfs")));
    json_t *user = json_object_get(proc, "user");
    assert_int_equal(json_integer_value(json_object_get(user, "uid")), 1000);
    assert_int_equal(json_integer_value(json_object_get(user, "gid")), 1000);
    _cleanup_free_ char *caps =
        js_dump_compact(json_object_get(json_object_get(web, "capabilities"), "bounding"));
    assert_string_equal(caps, "[\"CAP_NET_BIND_SERVICE\"]");
    _cleanup_free_ char *ex = js_dump_compact(json_object_get(web, "exec"));
    assert_string_equal(ex, "[[\"/app/healthz\"]]");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(web, "image"), "manifest_digest")),
        DIGEST_M);
    assert_string_equal(json_string_value(json_object_get(json_object_get(web, "sysctls"),
                                                          "net.ipv4.ip_unprivileged_port_start")),
                        "80");
    /* the annotated YAML carries the policy and its hash, and reads back */
    assert_non_null(yaml_out);
    assert_non_null(strstr(yaml_out, "runtimeClassName: cista"));
    assert_non_null(strstr(yaml_out, "io.cista.policy-hash: "));
    assert_non_null(strstr(yaml_out, "io.cista.policy: eyJ"));
    free(yaml_out);

    /* the policy allows what a runtime would ask for the web container */
    _cleanup_pol_ pol_policy *p = NULL;
    assert_int_equal(pol_parse(&p, canon, strlen(canon), &err), 0);
    const char *cfg =
        "{\"process\":{\"args\":[\"/app/main.py\",\"--port\",\"8080\",\"--greeting=hello world\","
        "\"$(LITERAL)\"],\"env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:"
        "/bin\",\"HOSTNAME=web-5d9c7\",\"GREETING=hello world\",\"DB_PASSWORD=s3cret\","
        "\"LOG_LEVEL=info\",\"KUBERNETES_SERVICE_HOST=10.0.0.1\",\"FRONT_SERVICE_PORT=80\"],"
        "\"cwd\":\"/app\",\"user\":{\"uid\":1000,\"gid\":1000,\"additionalGids\":[2000]},"
        "\"noNewPrivileges\":true,\"capabilities\":{\"bounding\":[\"CAP_NET_BIND_SERVICE\"]}},"
        "\"root\":{\"path\":\"rootfs\",\"readonly\":true},\"mounts\":["
        "{\"destination\":\"/"
        "proc\",\"type\":\"proc\",\"source\":\"proc\",\"options\":[\"nosuid\"]},"
        "{\"destination\":\"/etc/tls\",\"type\":\"bind\",\"source\":\"/var/lib/kubelet/pods/"
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/volumes/kubernetes.io~secret/tls\","
        "\"options\":[\"rbind\",\"rprivate\",\"ro\"]}],"
        "\"linux\":{\"sysctl\":{\"net.ipv4.ip_unprivileged_port_start\":\"80\"}},"
        "\"annotations\":{\"io.kubernetes.cri.container-name\":\"web\"}}";
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_create(&d, p, NULL, cfg, strlen(cfg)) < 0)
        fail_msg("generated policy denies: %s", d.reason);
    pol_decision_clear(&d);
    /* ... and not the secret volume written to */
    _cleanup_free_ char *rw = patched(cfg, "{\"mounts\":[{\"destination\":\"/etc/tls\","
                                           "\"type\":\"bind\",\"source\":\"/var/lib/kubelet/pods/"
                                           "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/volumes/"
                                           "kubernetes.io~secret/tls\",\"options\":[\"rw\"]}]}");
    assert_int_equal(pol_allow_create(&d, p, NULL, rw, strlen(rw)), -EACCES);
    assert_string_equal(d.rule, "mounts");
    pol_decision_clear(&d);
    /* no rule lets a host directory be /dev/shm (containerd's bind of the CRI sandbox's shm):
     * the agent mounts its own tmpfs there, and the host would read the workload's shared
     * memory through it */
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(web, "mounts"), i, m)
    {
        if (!strcmp(json_string_value(json_object_get(m, "destination")), "/dev/shm"))
            assert_string_equal(json_string_value(json_object_get(m, "type")), "tmpfs");
    }
    _cleanup_free_ char *shm = patched(
        cfg, "{\"mounts\":[{\"destination\":\"/dev/shm\",\"type\":\"bind\",\"source\":"
             "\"/run/containerd/io.containerd.grpc.v1.cri/sandboxes/0123456789abcdef01234567"
             "89abcdef0123456789abcdef0123456789abcdef/shm\",\"options\":[\"rbind\","
             "\"bind\"]}]}");
    assert_int_equal(pol_allow_create(&d, p, NULL, shm, strlen(shm)), -EACCES);
    assert_string_equal(d.rule, "mounts");
}

static void test_gen_shapes(void **state)
{
    (void)state;
    cista_error *err = NULL;
    /* StatefulSet: volumeClaimTemplates, no service links, no SA token */
    _cleanup_free_ char *ss = gen_yaml("tests/data/k8s/statefulset.yaml", true, NULL, &err);
    if (!ss)
        fail_msg("statefulset: %s", err->msg);
    _cleanup_json_ json_t *db = container_of(ss, "db");
    assert_true(has_env_rule(db, "exact", "PGDATA=/var/lib/db/data"));
    assert_false(has_env_rule(db, "regex",
                              "^[A-Z0-9_]+_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)="
                              "[A-Za-z0-9.:]*$"));
    assert_null(strstr(ss, "serviceaccount"));
    assert_non_null(strstr(ss, "\"/var/lib/db\""));
    /* Job: command drops the image entrypoint and cmd; hostPath is normalised; subPath */
    _cleanup_free_ char *job = gen_yaml("tests/data/k8s/job.yaml", true, NULL, &err);
    if (!job)
        fail_msg("job: %s", err->msg);
    _cleanup_json_ json_t *rep = container_of(job, "report");
    _cleanup_free_ char *args =
        js_dump_compact(json_object_get(json_object_get(rep, "process"), "args"));
    assert_string_equal(args, "[\"/bin/sh\",\"-c\",\"echo 'a b' > /out/report.txt\"]");
    assert_non_null(strstr(job, "volume-subpaths/out/report/"));
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(rep, "process"), "user"), "uid")),
                     65534);
    /* multi-document stream: Service skipped, Pod and DaemonSet kept; $(UNDEFINED) literal */
    char *yaml_out = NULL;
    _cleanup_free_ char *multi = gen_yaml("tests/data/k8s/multi.yaml", true, &yaml_out, &err);
    if (!multi)
        fail_msg("multi: %s", err->msg);
    _cleanup_json_ json_t *agent = container_of(multi, "agent");
    _cleanup_json_ json_t *front = container_of(multi, "front");
    _cleanup_free_ char *aargs =
        js_dump_compact(json_object_get(json_object_get(agent, "process"), "args"));
    assert_string_equal(aargs, "[\"/app/main.py\",\"--node\",\"$(NODE_NAME)\"]");
    assert_true(has_env_rule(agent, "exact", "MODE=1"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(front, "process"), "cwd")), "/");
    assert_non_null(yaml_out);
    assert_non_null(strstr(yaml_out, "kind: Service"));
    /* the quoted "1" stays a string when written back */
    assert_non_null(strstr(yaml_out, "value: \"1\""));
    free(yaml_out);
}

static void test_gen_refusals(void **state)
{
    (void)state;
    cista_error *err = NULL;
    assert_null(gen_yaml("tests/data/k8s/privileged.yaml", true, NULL, &err));
    assert_int_equal(err->code, -EPERM);
    assert_non_null(strstr(err->msg, "privileged"));
    err_clear(&err);
    assert_null(gen_yaml("tests/data/k8s/laughs.yaml", false, NULL, &err));
    assert_int_equal(err->code, -E2BIG);
    err_clear(&err);

    /* an image named in the YAML that no --image provides */
    const char *yaml = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: nginx:1.25\n";
    const char *images[] = {SAMPLE_IMAGE};
    pol_gen_opts o = {
        .images = images, .image_count = 1, .pod_yaml = yaml, .pod_yaml_size = strlen(yaml)};
    json_t *doc = NULL;
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -ENOENT);
    assert_non_null(strstr(err->msg, "no --image provides \"nginx:1.25\""));
    err_clear(&err);
    /* ... unless said explicitly */
    const char *mapped[] = {"nginx:1.25=" SAMPLE_IMAGE};
    o.images = mapped;
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), 0);
    json_decref(doc);
    /* a digest in the YAML must be the image's */
    const char *pinned =
        "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: plain:v1@"
        "sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    o.images = images;
    o.pod_yaml = pinned;
    o.pod_yaml_size = strlen(pinned);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -EBADMSG);
    err_clear(&err);
    /* an argument that depends on a runtime value */
    const char *dep = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: plain:v1\n"
                      "    args: [\"$(POD_IP)\"]\n    env:\n    - name: POD_IP\n      valueFrom:\n"
                      "        fieldRef: {fieldPath: status.podIP}\n";
    o.pod_yaml = dep;
    o.pod_yaml_size = strlen(dep);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "only known at run time"));
    err_clear(&err);
    /* envFrom of an unknown ConfigMap without prefix */
    const char *ef = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: plain:v1\n"
                     "    envFrom:\n    - configMapRef: {name: elsewhere}\n";
    o.pod_yaml = ef;
    o.pod_yaml_size = strlen(ef);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "LD_PRELOAD"));
    err_clear(&err);
    /* duplicate keys are ambiguous */
    const char *dup = "kind: Pod\nkind: Deployment\n";
    o.pod_yaml = dup;
    o.pod_yaml_size = strlen(dup);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "duplicate key"));
    err_clear(&err);
    /* an image user given by name */
    const char *named = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: plain:v1\n";
    o.pod_yaml = named;
    o.pod_yaml_size = strlen(named);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), 0);
    json_decref(doc);
}

static void test_gen_deterministic(void **state)
{
    (void)state;
    cista_error *err = NULL;
    char *y1 = NULL, *y2 = NULL;
    _cleanup_free_ char *a = gen_yaml("tests/data/k8s/deployment.yaml", true, &y1, &err);
    _cleanup_free_ char *b = gen_yaml("tests/data/k8s/deployment.yaml", true, &y2, &err);
    if (!a || !b)
        fail_msg("gen: %s", err->msg);
    assert_string_equal(a, b);
    assert_string_equal(y1, y2);
    assert_int_equal(a[strlen(a) - 1], '\n');
    free(y1);
    free(y2);
}

static void test_gen_image(void **state)
{
    (void)state;
    const char *images[] = {SAMPLE_IMAGE};
    const char *ls[] = {"/bin/ls", NULL};
    const char *const *exec[] = {ls};
    pol_gen_secret secrets[] = {{"plain", "kbs:///default/key/db", NULL, "DB_KEY"}};
    pol_gen_volume vols[] = {
        {"plain", "data", "/data", "kbs:///default/volume-key/data", NULL, NULL}};
    pol_gen_opts o = {.images = images,
                      .image_count = 1,
                      .exec = exec,
                      .exec_count = 1,
                      .deny_logs = true,
                      .secrets = secrets,
                      .secret_count = 1,
                      .volumes = vols,
                      .volume_count = 1};
    json_t *doc = NULL;
    cista_error *err = NULL;
    if (pol_gen(&doc, NULL, &o, &err) < 0)
        fail_msg("gen from %s: %s (the image module must be built)", SAMPLE_IMAGE, err->msg);
    size_t size;
    _cleanup_free_ char *canon = pol_canonical(doc, &size);
    json_decref(doc);
    _cleanup_pol_ pol_policy *p = NULL;
    assert_int_equal(pol_parse(&p, canon, size, &err), 0);
    assert_string_equal(pol_container_name(p, 0), "plain");
    const char *layers[] = {DIGEST_L};
    _cleanup_decision_ pol_decision d = {0};
    assert_int_equal(pol_allow_image(&d, p, "plain", DIGEST_M, layers, 1), 0);
    pol_decision_clear(&d);
    assert_int_equal(pol_allow_logs(&d, p, "plain"), -EACCES);
    pol_decision_clear(&d);
    const char *proc = "{\"args\":[\"/bin/ls\"]}";
    assert_int_equal(pol_allow_exec(&d, p, "plain", proc, strlen(proc)), 0);
    pol_decision_clear(&d);
    assert_int_equal(pol_allow_volume_mount(&d, p, "plain", "data", "/data"), 0);
    pol_decision_clear(&d);
    const pol_volume *v;
    size_t nv;
    assert_int_equal(pol_get_volumes(&v, &nv, p, "plain", &err), 0);
    assert_int_equal(nv, 1);
    assert_string_equal(v[0].key, "kbs:///default/volume-key/data");
    assert_null(v[0].anchor);
    /* written out explicitly, so the policy says what happens to an older copy */
    assert_string_equal(v[0].rollback, "off");
    assert_non_null(strstr(canon, "\"rollback\":\"off\""));
    const pol_secret *s;
    size_t n;
    assert_int_equal(pol_get_secrets(&s, &n, p, "plain", &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(s[0].env, "DB_KEY");
    /* the entrypoint of the image, the runtime's env, the injected secret's env */
    const char *cfg =
        "{\"process\":{\"args\":[\"/app/main.py\"],\"env\":[\"PATH=/usr/local/sbin:"
        "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"TERM=xterm\","
        "\"HOSTNAME=abc\",\"DB_KEY=k\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},"
        "\"root\":{\"path\":\"rootfs\"},\"mounts\":[{\"destination\":\"/dev/pts\","
        "\"type\":\"devpts\",\"source\":\"devpts\",\"options\":[\"nosuid\","
        "\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"
        "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\","
        "\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"ro\"]}]}";
    if (pol_allow_create(&d, p, "plain", cfg, strlen(cfg)) < 0)
        fail_msg("denied: %s", d.reason);
}

static pol_policy *parse_ok(const char *doc)
{
    pol_policy *p = NULL;
    cista_error *err = NULL;
    if (pol_parse(&p, doc, strlen(doc), &err) < 0)
        fail_msg("policy: %s", err->msg);
    return p;
}

static void test_volume_rules(void **state)
{
    (void)state;
#define V(vols)                                                                                    \
    "{\"version\":\"1\",\"containers\":[{\"name\":\"a\",\"process\":{\"args\":[\"/x\"],"           \
    "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},\"volumes\":[" vols "]}]}"
#define KEY "\"key\":\"kbs:///default/volume-key/d\""
#define ANCHOR "\"anchor\":\"kbs:///vol/anchor/d\""
    /* defaults: strict with an anchor, off without */
    pol_policy *p = parse_ok(V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY "," ANCHOR "},"
                               "{\"name\":\"e.2_x-y\",\"mount_point\":\"/srv/e\"," KEY "}"));
    const pol_volume *v = NULL;
    size_t n = 0;
    cista_error *err = NULL;
    assert_int_equal(pol_get_volumes(&v, &n, p, "a", &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "d");
    assert_string_equal(v[0].mount_point, "/data");
    assert_string_equal(v[0].key, "kbs:///default/volume-key/d");
    assert_string_equal(v[0].anchor, "kbs:///vol/anchor/d");
    assert_string_equal(v[0].rollback, "strict");
    assert_null(v[1].anchor);
    assert_string_equal(v[1].rollback, "off");
    assert_int_equal(pol_get_volumes(&v, &n, p, "nope", &err), -ENOENT);
    err_clear(&err);
    pol_free(p);
    static const char *const modes[] = {"strict", "reset", "off"};
    for (size_t i = 0; i < ARRAY_LEN(modes); i++) {
        _cleanup_free_ char *doc = xasprintf(
            V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY "," ANCHOR ",\"rollback\":\"%s\"}"),
            modes[i]);
        p = parse_ok(doc);
        assert_int_equal(pol_get_volumes(&v, &n, p, "a", &err), 0);
        assert_string_equal(v[0].rollback, modes[i]);
        pol_free(p);
    }
    p = parse_ok(V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"rollback\":\"off\"}"));
    pol_free(p);
    /* refusals, each naming what is wrong */
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/data\"}"), "\"key\" is missing");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/data\",\"key\":\"kbs:///a/b\"}"),
                       "key: \"kbs:///a/b\" is not kbs:///repo/type/tag");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/data\",\"key\":\"/etc/k\"}"),
                       "is not kbs:///repo/type/tag");
    expect_parse_error(
        V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"anchor\":\"kbs://h/a/b/c\"}"),
        "anchor: \"kbs://h/a/b/c\" is not kbs:///repo/type/tag");
    expect_parse_error(
        V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"rollback\":\"strict\"}"),
        "without an anchor only \"off\"");
    expect_parse_error(
        V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"rollback\":\"reset\"}"),
        "needs an \"anchor\"");
    expect_parse_error(
        V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY "," ANCHOR ",\"rollback\":\"lax\"}"),
        "not strict, reset or off");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"rollback\":1}"),
                       "rollback");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/data\"," KEY ",\"size\":1}"),
                       "unknown member \"size\"");
    expect_parse_error(V("{\"name\":\"../etc\",\"mount_point\":\"/data\"," KEY "}"),
                       "is not a volume name");
    expect_parse_error(V("{\"name\":\".d\",\"mount_point\":\"/data\"," KEY "}"),
                       "is not a volume name");
    expect_parse_error(V("{\"name\":\"\",\"mount_point\":\"/data\"," KEY "}"),
                       "is not a volume name");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/\"," KEY "}"),
                       "cannot replace the root");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"data\"," KEY "}"),
                       "not an absolute path");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/a\"," KEY "},"
                         "{\"name\":\"d\",\"mount_point\":\"/b\"," KEY "}"),
                       "volume \"d\" appears twice");
    expect_parse_error(V("{\"name\":\"d\",\"mount_point\":\"/a\"," KEY "},"
                         "{\"name\":\"e\",\"mount_point\":\"/a\"," KEY "}"),
                       "already the mount point of volume \"d\"");
#undef V
#undef KEY
#undef ANCHOR
}

static void test_gen_volumes(void **state)
{
    (void)state;
    const char *images[] = {SAMPLE_IMAGE};
    pol_gen_volume vols[] = {{"plain", "data", "/data", "kbs:///default/volume-key/data",
                              "kbs:///vol/anchor/data", NULL},
                             {"plain", "cache", "/var/cache/app", "kbs:///default/volume-key/cache",
                              "kbs:///vol/anchor/cache", "reset"}};
    pol_gen_opts o = {.images = images, .image_count = 1, .volumes = vols, .volume_count = 2};
    json_t *doc = NULL;
    cista_error *err = NULL;
    if (pol_gen(&doc, NULL, &o, &err) < 0)
        fail_msg("gen: %s", err->msg);
    size_t size;
    _cleanup_free_ char *canon = pol_canonical(doc, &size);
    json_decref(doc);
    _cleanup_pol_ pol_policy *p = parse_ok(canon);
    const pol_volume *v;
    size_t n;
    assert_int_equal(pol_get_volumes(&v, &n, p, "plain", &err), 0);
    assert_int_equal(n, 2);
    /* sorted (canonical): cache, then data */
    assert_string_equal(v[0].name, "cache");
    assert_string_equal(v[0].rollback, "reset");
    assert_string_equal(v[1].name, "data");
    assert_string_equal(v[1].rollback, "strict");
    assert_string_equal(v[1].anchor, "kbs:///vol/anchor/data");
    /* the user's mistakes are reported in the user's terms */
    static const struct {
        pol_gen_volume v;
        const char *needle;
    } bad[] = {
        {{"plain", "data", "/data", NULL, NULL, NULL}, "\"key\" is missing"},
        {{"plain", "data", "/data", "kbs:///k/k/k", NULL, "strict"}, "needs an \"anchor\""},
        {{"plain", "data", "/data/", "kbs:///k/k/k", NULL, NULL}, "not a normalised"},
        {{"plain", "a/b", "/data", "kbs:///k/k/k", NULL, NULL}, "not a volume name"},
        {{"nope", "data", "/data", "kbs:///k/k/k", NULL, NULL}, "no container \"nope\""},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        pol_gen_opts ob = {
            .images = images, .image_count = 1, .volumes = &bad[i].v, .volume_count = 1};
        json_t *d2 = NULL;
        cista_error *e2 = NULL;
        assert_true(pol_gen(&d2, NULL, &ob, &e2) < 0);
        if (!strstr(e2->msg, bad[i].needle) || strstr(e2->msg, "does not validate"))
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, e2->msg, bad[i].needle);
        err_free(e2);
    }
}

static void test_yaml_limits(void **state)
{
    (void)state;
    cista_error *err = NULL;
    json_t *doc = NULL;
    pol_gen_opts o = {.no_image_pinning = true};
    /* deep nesting */
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    o.pod_yaml = deep;
    o.pod_yaml_size = sizeof(deep);
    assert_true(pol_gen(&doc, NULL, &o, &err) < 0);
    assert_non_null(strstr(err->msg, "nested"));
    err_clear(&err);
    /* an alias to an unknown anchor, a self reference */
    const char *self = "a: &x [1, *x]\n";
    o.pod_yaml = self;
    o.pod_yaml_size = strlen(self);
    assert_true(pol_gen(&doc, NULL, &o, &err) < 0);
    err_clear(&err);
    /* a custom tag */
    const char *tag = "kind: !evil Pod\n";
    o.pod_yaml = tag;
    o.pod_yaml_size = strlen(tag);
    assert_true(pol_gen(&doc, NULL, &o, &err) < 0);
    assert_non_null(strstr(err->msg, "tag"));
    err_clear(&err);
    /* nothing to generate from */
    const char *svc = "kind: Service\n";
    o.pod_yaml = svc;
    o.pod_yaml_size = strlen(svc);
    assert_int_equal(pol_gen(&doc, NULL, &o, &err), -EINVAL);
    err_clear(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_deny_table), cmocka_unit_test(test_deny_message),
        cmocka_unit_test(test_parse_errors),     cmocka_unit_test(test_path_normalize),
        cmocka_unit_test(test_kbs_pin),          cmocka_unit_test(test_hash_encodings),
        cmocka_unit_test(test_gen_deployment),   cmocka_unit_test(test_gen_shapes),
        cmocka_unit_test(test_gen_refusals),     cmocka_unit_test(test_gen_deterministic),
        cmocka_unit_test(test_gen_image),        cmocka_unit_test(test_yaml_limits),
        cmocka_unit_test(test_volume_rules),     cmocka_unit_test(test_gen_volumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
