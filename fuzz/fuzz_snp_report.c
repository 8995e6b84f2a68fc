/*
 * fuzz_snp_report.c - the SEV-SNP verifier over untrusted bytes: input =
 * a report (first 1184 bytes) followed by a GHCB certificate table (the
 * rest), verified against the built-in pinned AMD roots at two fixed times.
 * Must never crash, leak or accept a modified report.
 */
#include <stddef.h>
#include <stdint.h>

#include "evidence/ev.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const time_t at[] = {1748736000 /* 2025-06-01 */, 1780272000 /* 2026-06-01 */};
    log_set_level(LOG_LVL_ERROR);
    const ev_ops *snp = ev_find("snp");
    size_t rep = size < 1184 ? size : 1184;
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        ev_verify_opts o;
        ev_verify_opts_init(&o);
        o.now = at[i];
        json_t *claims = NULL;
        cista_error *err = NULL;
        if (snp->verify(&claims, data, rep, data + rep, size - rep, &o, &err) == 0)
            json_decref(claims);
        err_free(err);
    }
    (void)ev_detect(data, size);
    return 0;
}
