/* fuzz_k8s_yaml.c - Kubernetes YAML to a policy (and the annotated YAML), without images. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pol_gen_opts o = {
        .pod_yaml = (const char *)data, .pod_yaml_size = size, .no_image_pinning = true};
    json_t *doc = NULL;
    char *yaml = NULL;
    cista_error *err = NULL;
    if (pol_gen(&doc, &yaml, &o, &err) < 0) {
        err_free(err);
        return 0;
    }
    json_decref(doc);
    free(yaml);
    return 0;
}
