/*
 * fuzz_release_policy.c - release-policy parsing and evaluation: the input
 * is a policy; it is evaluated over a fixed claims document and over the
 * policy document itself (arbitrary shapes as claims).
 */
#include <stdint.h>
#include <stdlib.h>

#include "policy/appraisal.h"
#include "util/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cista_error *err = NULL;
    pol_release *p = NULL;
    if (pol_release_parse(&p, data, size, &err) == 0) {
        json_t *in =
            json_pack("{s:s,s:b,s:{s:s},s:s,s:{s:{s:i}},s:{s:s},s:[s,i]}", "tee", "snp", "debug", 0,
                      "measurements", "measurement", "aabb", "host_data", "0011", "tcb",
                      "components", "snp", 22, "appraisal", "status", "affirming", "list", "a", 1);
        bool allow = false;
        char *reason = NULL;
        if (pol_release_eval(&allow, &reason, p, in, NULL) == 0)
            free(reason);
        json_t *self = json_loadb((const char *)data, size, 0, NULL);
        if (self && pol_release_eval(&allow, &reason, p, self, NULL) == 0)
            free(reason);
        json_decref(self);
        json_decref(in);
        pol_release_free(p);
    }
    err_free(err);
    return 0;
}
