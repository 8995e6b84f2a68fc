/* test_runtime_host.c - what the runtime takes from the host: the confinement of a pod's sandbox
 * (pause) container, which runs plain; files the host names read only when regular (a FIFO does
 * not hang a create); JSON errors that say where, never what (the host may point the runtime at a
 * secret). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/rt_int.h"
#include "util/json.h"
#include "util/util.h"

/* What containerd's CRI makes for a pod sandbox, plus what a hostile host adds. */
static json_t *sandbox_config(void)
{
    json_error_t je;
    json_t *cfg = json_loads(
        "{\"process\": {\"args\": [\"/pause\"], \"capabilities\": {\"bounding\": "
        "[\"CAP_SYS_ADMIN\"],"
        " \"effective\": [\"CAP_SYS_ADMIN\"], \"permitted\": [\"CAP_SYS_ADMIN\"]},"
        " \"noNewPrivileges\": false},"
        " \"root\": {\"path\": \"rootfs\"},"
        " \"hooks\": {\"prestart\": [{\"path\": \"/bin/sh\"}]},"
        " \"mounts\": [{\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},"
        "  {\"destination\": \"/dev\", \"type\": \"tmpfs\", \"source\": \"tmpfs\"},"
        "  {\"destination\": \"/dev/shm\", \"type\": \"bind\", \"source\": \"/run/x/shm\","
        "   \"options\": [\"rbind\", \"ro\"]},"
        "  {\"destination\": \"/store\", \"source\": \"/run/cista/.images\", \"options\": "
        "[\"bind\"]},"
        "  {\"destination\": \"/other\", \"type\": \"tmpfs\", \"source\": \"/run/cista/t1/tee\","
        "   \"options\": [\"rbind\"]}],"
        " \"linux\": {\"devices\": [{\"path\": \"/dev/sda\", \"type\": \"b\"}],"
        "  \"namespaces\": [{\"type\": \"network\", \"path\": \"/var/run/netns/cni-1\"},"
        "   {\"type\": \"ipc\"}, {\"type\": \"uts\"}]}}",
        0, &je);
    assert_non_null(cfg);
    return cfg;
}

static bool has_ns(const json_t *cfg, const char *type)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(json_object_get(cfg, "linux"), "namespaces"), i, n)
    {
        if (!strcmp(json_string_value(json_object_get(n, "type")), type) &&
            !json_object_get(n, "path"))
            return true;
    }
    return false;
}

static void test_pod_sandbox_confined(void **state)
{
    (void)state;
    json_t *cfg = sandbox_config();
    assert_int_equal(rt__confine_pod_sandbox(cfg, "pod1", NULL), 0);
    json_t *proc = json_object_get(cfg, "process");
    json_t *caps = json_object_get(proc, "capabilities");
    const char *sets[] = {"bounding", "effective", "inheritable", "permitted", "ambient"};
    for (size_t i = 0; i < 5; i++) {
        assert_true(json_is_array(json_object_get(caps, sets[i])));
        assert_int_equal(json_array_size(json_object_get(caps, sets[i])), 0);
    }
    assert_true(json_is_true(json_object_get(proc, "noNewPrivileges")));
    assert_null(json_object_get(cfg, "hooks"));
    assert_null(json_object_get(json_object_get(cfg, "linux"), "devices"));
    /* proc and the /dev tmpfs stay; every bind (by type or by option) goes */
    json_t *m = json_object_get(cfg, "mounts");
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "destination")),
                        "/proc");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "destination")),
                        "/dev");
    /* a pid and a mount namespace of its own; the pod's network namespace is still joined */
    assert_true(has_ns(cfg, "pid"));
    assert_true(has_ns(cfg, "mount"));
    assert_int_equal(json_array_size(json_object_get(json_object_get(cfg, "linux"), "namespaces")),
                     5);
    json_decref(cfg);
}

static void test_pod_sandbox_refuses_joins(void **state)
{
    (void)state;
    const char *kinds[] = {"pid", "mount", "user", "cgroup"};
    for (size_t i = 0; i < 4; i++) {
        json_t *cfg = sandbox_config();
        json_array_append_new(
            json_object_get(json_object_get(cfg, "linux"), "namespaces"),
            json_pack("{s:s,s:s}", "type", kinds[i], "path", "/proc/1234/ns/whatever"));
        cista_error *err = NULL;
        assert_int_equal(rt__confine_pod_sandbox(cfg, "pod1", &err), -EPERM);
        assert_non_null(strstr(err->msg, kinds[i]));
        err_free(err);
        json_decref(cfg);
    }
    /* no process at all: refused, not crashed on */
    json_t *cfg = json_object();
    cista_error *err = NULL;
    assert_int_equal(rt__confine_pod_sandbox(cfg, "pod1", &err), -EINVAL);
    err_free(err);
    json_decref(cfg);
}

static void test_regular_files_only(void **state)
{
    (void)state;
    char dir[] = "/tmp/cista-rthost-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[256], reg[256];
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    snprintf(reg, sizeof(reg), "%s/config.json", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    FILE *f = fopen(reg, "w");
    assert_non_null(f);
    fputs("{}", f);
    fclose(f);
    char *data = NULL;
    size_t n = 0;
    cista_error *err = NULL;
    /* a FIFO with no writer: an error at once, not a hang */
    assert_int_equal(util_read_regular_file(&data, &n, fifo, 1024, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "not a regular file"));
    err_clear(&err);
    assert_int_equal(util_read_regular_file(&data, &n, "/dev/null", 1024, &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(util_read_regular_file(&data, &n, reg, 1024, NULL), 0);
    assert_int_equal(n, 2);
    assert_string_equal(data, "{}");
    free(data);
    assert_int_equal(util_read_regular_file(&data, &n, reg, 1, &err), -EFBIG);
    err_clear(&err);
    unlink(fifo);
    unlink(reg);
    rmdir(dir);
}

static void test_json_errors_do_not_quote(void **state)
{
    (void)state;
    const char *docs[] = {"TOPSECRET-value", "{\"a\": TOPSECRET}",
                          "{\"TOPSECRET\": 1, \"TOPSECRET\": 2}", "[1, 2] TOPSECRET"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = NULL;
        cista_error *err = NULL;
        assert_int_equal(js_parse(&v, docs[i], strlen(docs[i]), 1024, "policy", &err), -EINVAL);
        assert_null(strstr(err->msg, "TOPSECRET"));
        assert_non_null(strstr(err->msg, "line 1 column"));
        err_free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pod_sandbox_confined),
        cmocka_unit_test(test_pod_sandbox_refuses_joins),
        cmocka_unit_test(test_regular_files_only),
        cmocka_unit_test(test_json_errors_do_not_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
