/*
 * fuzz_kbs_request.c - every KBS endpoint's JSON handling: the first byte
 * picks a parser (auth request, attest request 0.4.0 / 0.2.0 for a few
 * TEEs, JWK, reference values, release policy, CoCo snp report, resource
 * path, JCS of any JSON), the rest is its input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/jose.h"
#include "kbs/kbs.h"
#include "policy/appraisal.h"
#include "util/json.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    data++;
    size--;
    cista_error *err = NULL;
    json_t *doc = NULL;
    static const char *const tees[] = {"sim", "tpm", "snp", "tdx"};
    switch (sel % 8) {
    case 0: {
        kbs_auth_req a;
        if (kbs_parse_auth(&a, &doc, data, size, &err) == 0)
            json_decref(doc);
        break;
    }
    case 1:
    case 2: {
        kbs_attest_req a;
        kbs_proto p = sel % 8 == 1 ? KBS_PROTO_V4 : KBS_PROTO_V2;
        if (kbs_parse_attest(&a, &doc, p, tees[(sel >> 3) % 4], data, size, &err) == 0) {
            uint8_t rd[64];
            cista_error *e2 = NULL;
            if (kbs_binding(rd, CRYPTO_SHA384, a.nonce ? a.nonce : "n", a.tee_pubkey, a.additional,
                            &e2) < 0)
                err_free(e2);
            kbs_attest_req_clear(&a);
            json_decref(doc);
        }
        break;
    }
    case 3: {
        if (js_parse(&doc, data, size, 1 << 16, "jwk", &err) == 0) {
            EVP_PKEY *k = NULL;
            cista_error *e2 = NULL;
            if (jwk_to_key(&k, doc, &e2) == 0)
                EVP_PKEY_free(k);
            err_free(e2);
            json_decref(doc);
        }
        break;
    }
    case 4: {
        pol_refvals *rv = NULL;
        if (pol_refvals_parse(&rv, data, size, &err) == 0) {
            json_t *cl = json_pack("{s:s,s:b,s:{s:s}}", "tee", "sim", "insecure", 1, "measurements",
                                   "measurement", "aa");
            pol_appraisal a;
            if (pol_appraise(&a, rv, cl, "00", NULL) == 0)
                pol_appraisal_clear(&a);
            json_decref(cl);
            pol_refvals_free(rv);
        }
        break;
    }
    case 5: {
        if (js_parse(&doc, data, size, 1 << 20, "report", &err) == 0) {
            uint8_t *r = NULL;
            size_t n = 0;
            cista_error *e2 = NULL;
            if (kbs_snp_report_from_json(&r, &n, doc, &e2) == 0)
                free(r);
            err_free(e2);
            json_decref(doc);
        }
        break;
    }
    case 6: {
        char *p = xstrndup((const char *)data, size);
        if (kbs_check_resource_path(p, &err) < 0)
            err_clear(&err);
        free(p);
        break;
    }
    default: {
        if (js_parse(&doc, data, size, 1 << 16, "json", &err) == 0) {
            char *out = NULL;
            cista_error *e2 = NULL;
            if (kbs_jcs(&out, doc, &e2) == 0)
                free(out);
            err_free(e2);
            json_decref(doc);
        }
        break;
    }
    }
    err_free(err);
    return 0;
}
