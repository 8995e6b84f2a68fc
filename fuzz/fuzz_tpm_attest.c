/*
 * fuzz_tpm_attest.c - the TPM quote verifier over untrusted bytes. Input =
 * u16be attest size | TPMS_ATTEST | u16be signature size | TPMT_SIGNATURE |
 * TCG event log (the rest). Each part is parsed on its own, then the whole
 * is verified as "tpm" evidence with a fixed registered AK (the swtpm
 * sample's) and SHA-256 PCR 0-23 values all zero but 17-22 (0xff), so the
 * seed built from the swtpm sample reaches the event-log replay. Also the
 * raw input as a container and as a TPMT_PUBLIC. Must never crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "evidence/tpm_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* SubjectPublicKeyInfo of the swtpm sample AK (tpm2/swtpm_ak_pub_spki.der), RSA-2048. */
static const char g_ak_b64[] =
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtmS6twmGpeO2i8JpQ9ZVxcBTCU9rZnqT"
    "VkO2yQ2EJ8cYG7Fccd1LeBAkp8u8+HXb5mg/ZvMVST2vgiKZ+XwYagPQvyemBiknbinOhTdBnDsO"
    "vqb1/9wD/uqRAqIfJEeN7M4r3zgY+K5v/ThIqAMv42adxGu83AesasISEMllZ7clSTXybe9UhTFf"
    "jf7icrGoeHQTOkHiqmE/Aev9M/0cNbMf/6M23ZeJP46rnj+eY2HMV3kPoXrd89lnTrrs/yxyWtht"
    "Bj03fXoO76ZN8ZYK6yPXbyu/AxdKpu2/sIF/FZXLWQ7jLbIgz/zswntlecCC1R7nLGXXcY0LejWn"
    "dbRYzQIDAQAB";

static EVP_PKEY *ak(void)
{
    static EVP_PKEY *k;
    if (!k) {
        uint8_t *der = NULL;
        size_t n = 0;
        if (b64_decode(&der, &n, g_ak_b64, strlen(g_ak_b64), NULL) < 0 ||
            crypto_key_load(&k, der, n, false, NULL) < 0)
            abort();
        free(der);
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    log_set_level(LOG_LVL_ERROR);
    cista_error *err = NULL;
    tpm_quote q;
    if (ev__tpm_parse_quote(&q, data, size, &err) < 0)
        err_clear(&err);
    err_clear(&err);
    EVP_PKEY *pk = NULL;
    uint32_t attrs = 0;
    if (ev__tpm_parse_public(&pk, &attrs, data, size, &err) == 0)
        EVP_PKEY_free(pk);
    err_clear(&err);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = 1793491200;
    o.tpm_ak_pub = ak();
    json_t *claims = NULL;
    if (ev_find("tpm")->verify(&claims, data, size, NULL, 0, &o, &err) == 0)
        json_decref(claims);
    err_clear(&err);

    if (size < 4)
        return 0;
    size_t an = (size_t)data[0] << 8 | data[1];
    if (2 + an + 2 > size)
        return 0;
    const uint8_t *att = data + 2;
    size_t sn = (size_t)data[2 + an] << 8 | data[3 + an];
    if (4 + an + sn > size)
        return 0;
    const uint8_t *sig = data + 4 + an, *log = sig + sn;
    size_t log_size = size - 4 - an - sn;
    char *ba = b64_encode(att, an), *bs = b64_encode(sig, sn), *bl = b64_encode(log, log_size);
    json_t *pcrs = json_object();
    for (int k = 0; k < 24; k++) {
        char idx[8];
        snprintf(idx, sizeof(idx), "%d", k);
        json_object_set_new(pcrs, idx,
                            json_string(k >= 17 && k <= 22 ? "ffffffffffffffffffffffffffffffff"
                                                             "ffffffffffffffffffffffffffffffff"
                                                           : "00000000000000000000000000000000"
                                                             "00000000000000000000000000000000"));
    }
    json_t *c = json_pack("{s:s,s:s,s:s,s:{s:o},s:s}", "format", "cista-tpm-quote-v1", "attest", ba,
                          "signature", bs, "pcrs", "sha256", pcrs, "tcg_event_log", bl);
    char *text = js_dump_compact(c);
    json_decref(c);
    claims = NULL;
    if (ev_find("tpm")->verify(&claims, (const uint8_t *)text, strlen(text), NULL, 0, &o, &err) ==
        0)
        json_decref(claims);
    err_free(err);
    free(text);
    free(ba);
    free(bs);
    free(bl);
    return 0;
}
