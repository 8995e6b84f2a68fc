/*
 * fuzz_sim_report.c - the sim verifier over untrusted bytes, with a fixed
 * platform public key (the seed corpus was signed by its private half,
 * which is not kept). Must never crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_pub[] = "-----BEGIN PUBLIC KEY-----\n"
                            "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEIDTeOeZrZspcIqO7WFu8339fOo53d7rp\n"
                            "w++pYJ5AYqVvXn2xrNIullcAgBYW//Cs65aPLeayTVXdiLb0VMMZCEI5jY43WMt0\n"
                            "YqRZsyapIuA96hJoB6jq7L+18tnvPnm3\n"
                            "-----END PUBLIC KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static EVP_PKEY *key;
    log_set_level(LOG_LVL_ERROR);
    if (!key) {
        cista_error *err = NULL;
        if (crypto_key_load(&key, g_pub, strlen(g_pub), false, &err) < 0)
            __builtin_trap();
    }
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.sim_key = key;
    json_t *claims = NULL;
    cista_error *err = NULL;
    if (ev_find("sim")->verify(&claims, data, size, NULL, 0, &o, &err) == 0)
        json_decref(claims);
    err_free(err);
    return 0;
}
