/*
 * fuzz_hcl_report.c - the Azure HCL report over untrusted bytes: input = an
 * HCL report. Parsed and checked on its own (header, IGVM request data,
 * runtime-data binding, HCLAkPub), then verified as azure-snp-vtpm and
 * azure-tdx-vtpm evidence (with an empty vTPM quote, no collateral) at a
 * fixed time. Must never crash, leak or accept.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evidence/ev.h"
#include "evidence/tpm_int.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    log_set_level(LOG_LVL_ERROR);
    cista_error *err = NULL;
    if (ev__azure_hcl_check(data, size, &err) < 0)
        err_clear(&err);
    err_free(err);
    char *b = b64_encode(data, size);
    static const char *const kinds[] = {"azure-snp-vtpm", "azure-tdx-vtpm"};
    for (size_t i = 0; i < 2; i++) {
        char *ev = xasprintf("{\"format\":\"cista-%s-v1\",\"hcl_report\":\"%s\",\"td_quote\":\"\","
                             "\"tpm_quote\":{\"attest\":\"\",\"signature\":\"\",\"pcrs\":{}}}",
                             kinds[i], b);
        ev_verify_opts o;
        ev_verify_opts_init(&o);
        o.now = 1793491200; /* 2026-11-01 */
        json_t *claims = NULL;
        err = NULL;
        if (ev_find(kinds[i])->verify(&claims, (const uint8_t *)ev, strlen(ev), NULL, 0, &o,
                                      &err) == 0)
            abort(); /* no VCEK, no quote: never valid */
        err_free(err);
        free(ev);
    }
    free(b);
    return 0;
}
