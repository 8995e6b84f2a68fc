/*
 * fuzz_dcap_quote.c - the DCAP verifiers (tdx, sgx) over untrusted bytes.
 * Input = a quote with its certification data, optionally followed by the
 * marker "\n--collateral--\n" and one collateral blob (TCB info / QE
 * identity JSON, a dcap-qvl bundle, a certificate or a CRL). Each is verified
 * as tdx and as sgx at two fixed times, without and with that collateral.
 * Must never crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "evidence/ev.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_marker[] = "\n--collateral--\n";

static void run(const char *tee, const uint8_t *q, size_t qsize, const ev_collateral *c, time_t now)
{
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = now;
    o.collateral = c;
    o.forbid_debug = true;
    json_t *claims = NULL;
    cista_error *err = NULL;
    if (ev_find(tee)->verify(&claims, q, qsize, NULL, 0, &o, &err) == 0)
        json_decref(claims);
    err_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const time_t at[] = {1751328000 /* 2025-07-01 */, 1761955200 /* 2025-11-01 */};
    log_set_level(LOG_LVL_ERROR);
    size_t qsize = size, msize = sizeof(g_marker) - 1;
    const uint8_t *coll = NULL;
    for (size_t i = 0; i + msize <= size; i++)
        if (memcmp(data + i, g_marker, msize) == 0) {
            qsize = i;
            coll = data + i + msize;
            break;
        }
    ev_collateral *c = NULL;
    if (coll) {
        c = ev_collateral_new();
        cista_error *err = NULL;
        if (ev_collateral_add(c, "fuzz", coll, size - (size_t)(coll - data), &err) < 0) {
            ev_collateral_free(c);
            c = NULL;
        }
        err_free(err);
    }
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        run("tdx", data, qsize, NULL, at[i]);
        run("sgx", data, qsize, NULL, at[i]);
        if (c) {
            run("tdx", data, qsize, c, at[i]);
            run("sgx", data, qsize, c, at[i]);
        }
    }
    ev_collateral_free(c);
    (void)ev_detect(data, size);
    return 0;
}
