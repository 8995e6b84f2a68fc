/*
 * fuzz_nvidia_report.c - the NVIDIA H100 SPDM measurement report verifier
 * over untrusted bytes: the input is the report; the certificate chain is
 * the driver 550 sample chain when the fuzz data starts like a report, so
 * parsing, leaf selection, chain, FWID and signature paths all run. Must
 * never crash, leak or accept a modified report.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "evidence/ev.h"
#include "util/log.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHAIN "shared/testdata/evidence/nvidia-gpu/h100_driver550_certchain.pem"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *chain;
    static size_t chain_size;
    static int loaded;
    log_set_level(LOG_LVL_ERROR);
    if (!loaded) {
        loaded = 1;
        /* From the repository root or a build directory; missing: no chain. */
        static const char *const up[] = {"../", "../../", "../../../"};
        for (size_t i = 0; i < sizeof(up) / sizeof(up[0]) && !chain; i++) {
            cista_error *e = NULL;
            char *path = xasprintf("%s%s", up[i], CHAIN);
            if (util_read_file(&chain, &chain_size, path, 1 << 20, &e) < 0)
                chain = NULL;
            free(path);
            err_free(e);
        }
    }
    const ev_ops *nv = ev_find("nvidia-gpu");
    for (int with_chain = 0; with_chain < 2; with_chain++) {
        ev_verify_opts o;
        ev_verify_opts_init(&o);
        json_t *claims = NULL;
        cista_error *err = NULL;
        if (nv->verify(&claims, data, size, with_chain ? (const uint8_t *)chain : NULL,
                       with_chain ? chain_size : 0, &o, &err) == 0)
            json_decref(claims);
        err_free(err);
    }
    (void)ev_detect(data, size);
    return 0;
}
