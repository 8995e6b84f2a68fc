/* fuzz_runtime_volume.c - the host's side of encrypted volumes: a config.json whose binds may
 * name volume backing directories (agent_volume_plan(), then the generated config and the
 * policy's volumes rule), a `--volume NAME=DIR[:MOUNTPOINT]` spec, and the bytes of a volume
 * key resource. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_policy[] =
    "{\"version\":\"1\",\"containers\":[{\"name\":\"app\","
    "\"process\":{\"args\":[\"/bin/app\"],\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}},"
    "\"mounts\":[{\"destination\":\"/etc/x\",\"type\":\"bind\",\"source\":{\"regex\":\"/.*\"}}],"
    "\"volumes\":[{\"name\":\"d\",\"mount_point\":\"/data\",\"key\":\"kbs:///r/t/d\","
    "\"anchor\":\"kbs:///r/a/d\"},{\"name\":\"e\",\"mount_point\":\"/srv/e\","
    "\"key\":\"kbs:///r/t/e\"}]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pol_policy *p;
    static json_t *rules;
    cista_error *err = NULL;
    if (!p) {
        log_set_level(LOG_LVL_ERROR);
        if (pol_parse(&p, g_policy, sizeof(g_policy) - 1, &err) < 0)
            abort();
        json_t *doc = json_loads(g_policy, 0, NULL);
        rules = json_incref(json_array_get(json_object_get(doc, "containers"), 0));
        json_decref(doc);
    }
    /* the key resource */
    uint8_t key[AGENT_VOLUME_KEY_SIZE];
    if (agent_volume_key_parse(key, data, size, "kbs:///r/t/d", &err) < 0)
        err_clear(&err);
    /* a --volume spec (NUL-terminated copy, split in place) */
    char *spec = xstrndup((const char *)data, size < 4096 ? size : 4096);
    agent_volume_request vr[1];
    size_t nvr = agent_volume_request_parse(&vr[0], spec, &err) == 0 ? 1 : 0;
    err_clear(&err);
    /* the bytes as the host's config.json, with and without that volume by name */
    for (size_t with = 0; with <= nvr; with++) {
        agent_host_request req = {.config = (const char *)data,
                                  .config_size = size,
                                  .volumes = with ? vr : NULL,
                                  .volume_count = with};
        json_t *plan = NULL;
        if (agent_volume_plan(&plan, p, "app", &req, &err) == 0)
            json_decref(plan);
        err_clear(&err);
        static char *entry[] = {NULL};
        static char *cmd[] = {"/bin/app", NULL};
        img_config ic = {.entrypoint = entry, .cmd = cmd};
        json_t *cfg = NULL;
        if (agent_build_config(&cfg, &ic, rules, &req, "/sb/tee/rootfs", &err) == 0) {
            char *text = js_dump_compact(cfg);
            pol_decision d = {0};
            pol_allow_create(&d, p, "app", text, strlen(text));
            pol_decision_clear(&d);
            free(text);
            /* what runc reads (uint64 members unsigned) reads back to the same config */
            char *oci = agent_oci_dump_config(cfg);
            json_t *back = NULL;
            if (agent_parse_oci(&back, oci, strlen(oci), "round trip", &err) < 0 ||
                !json_equal(back, cfg))
                abort();
            json_decref(back);
            free(oci);
            json_decref(cfg);
        }
        err_clear(&err);
    }
    free(spec);
    return 0;
}
