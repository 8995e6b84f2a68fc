/* fuzz_policy.c - policy JSON parsing, then enforcement calls with fixed requests. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char cfg[] =
        "{\"process\":{\"args\":[\"/bin/server\"],\"env\":[\"PATH=/usr/bin\",\"FOO=bar\"],"
        "\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0},\"noNewPrivileges\":true,"
        "\"capabilities\":{\"bounding\":[\"CAP_CHOWN\"]}},\"root\":{\"readonly\":true},"
        "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
        "{\"destination\":\"//data/\",\"type\":\"bind\",\"source\":\"/x\",\"options\":[\"ro\"]}],"
        "\"linux\":{\"sysctl\":{\"a.b\":\"1\"}}}";
    static const char proc[] = "{\"args\":[\"/bin/ls\",\"-l\"],\"env\":[\"A=1\"]}";
    cista_error *err = NULL;
    pol_policy *p = NULL;
    if (pol_parse(&p, data, size, &err) < 0) {
        err_free(err);
        return 0;
    }
    /* The policy decides; the request is fixed, so every rule kind gets evaluated. */
    for (size_t i = 0; i <= pol_container_count(p); i++) {
        const char *name = pol_container_name(p, i); /* NULL at the end: "the only one" */
        pol_decision d = {0};
        pol_allow_create(&d, p, name, cfg, sizeof(cfg) - 1);
        pol_decision_clear(&d);
        pol_allow_exec(&d, p, name, proc, sizeof(proc) - 1);
        pol_decision_clear(&d);
        pol_allow_logs(&d, p, name);
        pol_decision_clear(&d);
        pol_allow_signal(&d, p, name, 15);
        pol_decision_clear(&d);
        pol_allow_copy(&d, p, name, "/etc//app/../x");
        pol_decision_clear(&d);
        pol_allow_copy(&d, p, name, "/srv/upload/a");
        pol_decision_clear(&d);
        pol_allow_volume_mount(&d, p, name, "v", "/data/");
        pol_decision_clear(&d);
        const char *layers[] = {"sha256:00"};
        pol_allow_image(&d, p, name, "sha256:00", layers, 1);
        pol_decision_clear(&d);
    }
    pol_free(p);
    return 0;
}
