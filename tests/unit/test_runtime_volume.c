/* test_runtime_volume.c - the runtime's encrypted volumes, without FUSE: `--volume` specs, the
 * volume key forms a KBS resource may take, which volumes a container gets from the host's
 * request (explicit and config.json binds) with every refusal, and the volume binds in the
 * generated config checked by the policy's volumes rule. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "policy/policy.h"
#include "util/json.h"
#include "util/util.h"

static const char POLICY[] =
    "{\"version\":\"1\",\"containers\":[{\"name\":\"app\","
    "\"process\":{\"args\":[\"/bin/app\"],\"cwd\":\"/app\",\"user\":{\"uid\":1000,\"gid\":2000},"
    "\"env\":[{\"exact\":\"PATH=/bin\"}]},"
    "\"volumes\":[{\"name\":\"d\",\"mount_point\":\"/data\",\"key\":\"kbs:///default/vk/d\","
    "\"anchor\":\"kbs:///vol/anchor/d\"},"
    "{\"name\":\"e\",\"mount_point\":\"/srv/e\",\"key\":\"kbs:///default/vk/e\"}]},"
    "{\"name\":\"plain\",\"process\":{\"args\":[\"/x\"],\"cwd\":\"/\",\"user\":{\"uid\":0,"
    "\"gid\":0}}}]}";

static pol_policy *load(void)
{
    pol_policy *p = NULL;
    cista_error *err = NULL;
    if (pol_parse(&p, POLICY, strlen(POLICY), &err) < 0)
        fail_msg("policy: %s", err->msg);
    return p;
}

static void test_request_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in, *name, *backing, *mp;
    } good[] = {
        {"data=/srv/x", "data", "/srv/x", NULL},   {"data=/srv/x:/data", "data", "/srv/x", "/data"},
        {"data=rel/dir", "data", "rel/dir", NULL}, {"data=/a:b:/c", "data", "/a:b", "/c"},
        {"data=/a:/b:/c", "data", "/a:/b", "/c"},  {"d=x=y", "d", "x=y", NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        char *s = xstrdup(good[i].in);
        agent_volume_request r;
        cista_error *err = NULL;
        if (agent_volume_request_parse(&r, s, &err) < 0)
            fail_msg("%s: %s", good[i].in, err->msg);
        assert_string_equal(r.name, good[i].name);
        assert_string_equal(r.backing, good[i].backing);
        if (good[i].mp)
            assert_string_equal(r.mount_point, good[i].mp);
        else
            assert_null(r.mount_point);
        free(s);
    }
    static const char *const bad[] = {"data=", "=x", "nodir", "", "data=:/m"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *s = xstrdup(bad[i]);
        agent_volume_request r;
        cista_error *err = NULL;
        assert_int_equal(agent_volume_request_parse(&r, s, &err), -EINVAL);
        assert_non_null(strstr(err->msg, "usage"));
        err_free(err);
        free(s);
    }
}

static void test_key_parse(void **state)
{
    (void)state;
    uint8_t raw[32], key[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(i * 7 + 1);
    cista_error *err = NULL;
    assert_int_equal(agent_volume_key_parse(key, raw, 32, "kbs:///r/t/k", &err), 0);
    assert_memory_equal(key, raw, 32);
    char hex[66];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    memset(key, 0, sizeof(key));
    assert_int_equal(agent_volume_key_parse(key, hex, 64, "r", &err), 0);
    assert_memory_equal(key, raw, 32);
    hex[64] = '\n';
    memset(key, 0, sizeof(key));
    assert_int_equal(agent_volume_key_parse(key, hex, 65, "r", &err), 0);
    assert_memory_equal(key, raw, 32);
    for (int i = 0; i < 64; i++)
        if (hex[i] >= 'a' && hex[i] <= 'f')
            hex[i] = (char)(hex[i] - 'a' + 'A');
    memset(key, 0, sizeof(key));
    assert_int_equal(agent_volume_key_parse(key, hex, 64, "r", &err), 0);
    assert_memory_equal(key, raw, 32);
    /* not a key: the wrong length, a non-hex digit, a newline that is not trailing */
    static const size_t sizes[] = {0, 31, 33, 63, 66, 128};
    uint8_t big[128] = {0};
    memset(big, 'a', sizeof(big));
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        assert_int_equal(agent_volume_key_parse(key, big, sizes[i], "kbs:///r/t/k", &err), -EINVAL);
        assert_non_null(strstr(err->msg, "kbs:///r/t/k"));
        assert_non_null(strstr(err->msg, "32 raw bytes nor 64 hex digits"));
        err_clear(&err);
    }
    hex[10] = 'g';
    assert_int_equal(agent_volume_key_parse(key, hex, 64, "r", &err), -EINVAL);
    err_clear(&err);
    hex[10] = '0';
    hex[64] = 'x';
    assert_int_equal(agent_volume_key_parse(key, hex, 65, "r", &err), -EINVAL);
    err_clear(&err);
}

/* The plan for @req; the JSON text on success, NULL (and *code) on failure, *msg the error. */
static char *plan(int *code, char **msg, const agent_host_request *req, const char *container)
{
    _cleanup_pol_ pol_policy *p = load();
    json_t *out = NULL;
    cista_error *err = NULL;
    *code = agent_volume_plan(&out, p, container, req, &err);
    *msg = err ? xstrdup(err->msg) : NULL;
    err_free(err);
    if (*code < 0)
        return NULL;
    char *s = js_dump_compact(out);
    json_decref(out);
    return s;
}

static void expect_refused(const agent_host_request *req, int want, const char *needle)
{
    int code;
    char *msg = NULL;
    char *s = plan(&code, &msg, req, "app");
    if (code != want || !msg || !strstr(msg, needle))
        fail_msg("expected %d \"%s\", got %d \"%s\" (%s)", want, needle, code, msg ? msg : "",
                 s ? s : "");
    free(msg);
    free(s);
}

static void test_plan(void **state)
{
    (void)state;
    int code;
    char *msg = NULL;
    /* both by name */
    agent_volume_request both[] = {{"e", "/b/e", NULL}, {"d", "/b/d", "/data/"}};
    agent_host_request req = {.volumes = both, .volume_count = 2};
    _cleanup_free_ char *s = plan(&code, &msg, &req, "app");
    if (!s)
        fail_msg("plan: %s", msg);
    /* in the policy's order */
    assert_string_equal(s, "[{\"name\":\"d\",\"mount_point\":\"/data\",\"backing\":\"/b/d\","
                           "\"read_only\":false},{\"name\":\"e\",\"mount_point\":\"/srv/e\","
                           "\"backing\":\"/b/e\",\"read_only\":false}]");
    /* one by name, one as a bind of config.json (a PVC); other mounts are not volumes */
    const char cfg[] = "{\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\"},"
                       "{\"destination\":\"/srv//e/\",\"type\":\"bind\",\"source\":\"/pvc/e\","
                       "\"options\":[\"rbind\",\"ro\"]},"
                       "{\"destination\":\"/srv/other\",\"type\":\"bind\",\"source\":\"/x\"}]}";
    agent_volume_request one[] = {{"d", "/b/d", NULL}};
    agent_host_request req2 = {
        .config = cfg, .config_size = strlen(cfg), .volumes = one, .volume_count = 1};
    _cleanup_free_ char *s2 = plan(&code, &msg, &req2, "app");
    if (!s2)
        fail_msg("plan: %s", msg);
    assert_non_null(strstr(s2, "{\"name\":\"e\",\"mount_point\":\"/srv/e\",\"backing\":\"/pvc/e\","
                               "\"read_only\":true}"));
    /* a container without volumes: nothing, whatever the host binds */
    agent_host_request req3 = {.config = cfg, .config_size = strlen(cfg)};
    _cleanup_free_ char *s3 = plan(&code, &msg, &req3, "plain");
    assert_string_equal(s3, "[]");

    /* refusals */
    agent_volume_request only_d[] = {{"d", "/b/d", NULL}};
    agent_host_request r1 = {.volumes = only_d, .volume_count = 1};
    expect_refused(&r1, -EACCES, "volume \"e\" (mount point \"/srv/e\") has no backing directory");
    agent_volume_request unknown[] = {
        {"d", "/b/d", NULL}, {"e", "/b/e", NULL}, {"x", "/b/x", NULL}};
    agent_host_request r2 = {.volumes = unknown, .volume_count = 3};
    expect_refused(&r2, -EACCES, "volume \"x\" is not declared by the policy of container \"app\"");
    agent_volume_request moved[] = {{"d", "/b/d", "/srv"}, {"e", "/b/e", NULL}};
    agent_host_request r3 = {.volumes = moved, .volume_count = 2};
    expect_refused(&r3, -EACCES, "is mounted at \"/data\" by its policy, not at \"/srv\"");
    agent_volume_request climb[] = {{"d", "/b/d", "/data/../etc"}, {"e", "/b/e", NULL}};
    agent_host_request r3b = {.volumes = climb, .volume_count = 2};
    expect_refused(&r3b, -EACCES, "mount point not an absolute path");
    agent_volume_request twice[] = {{"d", "/b/d", NULL}, {"e", "/b/e", NULL}};
    agent_host_request r4 = {
        .config = cfg, .config_size = strlen(cfg), .volumes = twice, .volume_count = 2};
    expect_refused(&r4, -EACCES, "volume \"e\" is asked for twice");
    const char tmpfs[] = "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"tmpfs\","
                         "\"source\":\"tmpfs\"}]}";
    agent_volume_request just_e[] = {{"e", "/b/e", NULL}};
    agent_host_request r5 = {
        .config = tmpfs, .config_size = strlen(tmpfs), .volumes = just_e, .volume_count = 1};
    expect_refused(&r5, -EACCES, "only the volume (a bind mount of its backing directory)");
    agent_volume_request rel[] = {{"d", "b/d", NULL}, {"e", "/b/e", NULL}};
    agent_host_request r6 = {.volumes = rel, .volume_count = 2};
    expect_refused(&r6, -EINVAL, "is not an absolute path");
    const char nosrc[] = "{\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\"}]}";
    agent_host_request r7 = {
        .config = nosrc, .config_size = strlen(nosrc), .volumes = just_e, .volume_count = 1};
    expect_refused(&r7, -EINVAL, "has no source");
    const char badjson[] = "{\"mounts\":{}}";
    agent_host_request r8 = {.config = badjson, .config_size = strlen(badjson)};
    expect_refused(&r8, -EINVAL, "mounts is not an array");
    agent_host_request r9 = {.config = "{", .config_size = 1};
    int c9;
    char *m9 = NULL;
    char *s9 = plan(&c9, &m9, &r9, "app");
    assert_null(s9);
    assert_int_equal(c9, -EINVAL);
    free(m9);
}

/* The generated config binds the decrypted volume (on the sandbox tmpfs) at the mount point, in
 * place of the host's bind; the policy allows it by the volumes rule. */
static void test_config_volume_binds(void **state)
{
    (void)state;
    _cleanup_pol_ pol_policy *p = load();
    _cleanup_json_ json_t *doc = json_loads(POLICY, 0, NULL);
    json_t *rules = json_array_get(json_object_get(doc, "containers"), 0);
    static char *entry[] = {NULL};
    static char *cmd[] = {"/bin/app", NULL};
    static char *env[] = {"PATH=/bin", NULL};
    img_config ic = {.entrypoint = entry, .cmd = cmd, .env = env, .user = "1000:2000"};
    const char host[] =
        "{\"process\":{\"args\":[\"/bin/app\"],\"cwd\":\"/app\",\"env\":[\"PATH=/bin\"],"
        "\"user\":{\"uid\":1000,\"gid\":2000}},\"root\":{\"path\":\"rootfs\"},"
        "\"mounts\":[{\"destination\":\"/data\",\"type\":\"bind\",\"source\":\"/pvc/d\","
        "\"options\":[\"rbind\",\"rw\"]}]}";
    agent_volume_request e[] = {{"e", "/b/e", NULL}};
    agent_host_request req = {
        .config = host, .config_size = strlen(host), .volumes = e, .volume_count = 1};
    json_t *cfg = NULL;
    cista_error *err = NULL;
    if (agent_build_config(&cfg, &ic, rules, &req, "/st/c1/tee/rootfs", &err) < 0)
        fail_msg("config: %s", err->msg);
    json_t *mounts = json_object_get(cfg, "mounts");
    int seen = 0;
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m)
    {
        const char *dest = json_string_value(json_object_get(m, "destination"));
        const char *src = json_string_value(json_object_get(m, "source"));
        assert_string_not_equal(src, "/pvc/d"); /* the host's ciphertext never enters */
        if (!strcmp(dest, "/data")) {
            assert_string_equal(src, "/st/c1/tee/volumes/d");
            assert_string_equal(json_string_value(json_object_get(m, "type")), "bind");
            seen |= 1;
        } else if (!strcmp(dest, "/srv/e")) {
            assert_string_equal(src, "/st/c1/tee/volumes/e");
            seen |= 2;
        }
    }
    assert_int_equal(seen, 3);
    /* cista's standard mounts have their own rules (policy gen writes them); here: the rest */
    for (i = 0; i < json_array_size(mounts);) {
        const char *dest =
            json_string_value(json_object_get(json_array_get(mounts, i), "destination"));
        if (agent__is_default_mount(dest))
            json_array_remove(mounts, i);
        else
            i++;
    }
    assert_int_equal(json_array_size(mounts), 2);
    _cleanup_free_ char *text = js_dump_compact(cfg);
    json_decref(cfg);
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_create(&d, p, "app", text, strlen(text)) < 0)
        fail_msg("denied: %s (rule %s, field %s)", d.reason, d.rule, d.field);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_parse),
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_config_volume_binds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
