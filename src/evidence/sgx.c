/*
 * sgx.c - Intel SGX: get DCAP quotes through Gramine's /dev/attestation
 * pseudo-files and verify ECDSA quotes v3 (and v5 with an SGX body) with
 * the shared DCAP machinery of dcap.c, then turn the ISV enclave report
 * into the normalized claims (docs/claims.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evidence/dcap_int.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/log.h"
#include "util/util.h"

#define SGX_FLAG_DEBUG (1ull << 1)
#define GRAMINE_DEFAULT_DIR "/dev/attestation"

/* Keys are literals and values hex or numbers: the _nocheck calls skip UTF-8 checks. */
static json_t *sgx_claims(const dcap_result *r)
{
    const uint8_t *b = r->body;
    uint64_t flags = ev__le64(b + SGXR_ATTRIBUTES);
    bool debug = (flags & SGX_FLAG_DEBUG) != 0;
    json_t *c = ev__claims_new("sgx", false);
    json_object_set_new_nocheck(c, "debug", json_boolean(debug));
    json_t *m = json_object();
    json_object_set_new_nocheck(m, "mrenclave", ev__json_hex(b + SGXR_MRENCLAVE, 32));
    json_object_set_new_nocheck(m, "mrsigner", ev__json_hex(b + SGXR_MRSIGNER, 32));
    json_object_set_new_nocheck(m, "isv_prod_id",
                                json_integer(b[SGXR_ISVPRODID] | b[SGXR_ISVPRODID + 1] << 8));
    json_object_set_new_nocheck(m, "isv_svn",
                                json_integer(b[SGXR_ISVSVN] | b[SGXR_ISVSVN + 1] << 8));
    json_object_set_new_nocheck(c, "measurements", m);
    json_object_set_new_nocheck(c, "report_data", ev__json_hex(b + SGXR_REPORTDATA, 64));
    json_object_set_new_nocheck(c, "platform_id", ev__json_hex(r->fmspc, 6));
    json_object_set_new_nocheck(c, "tcb", ev__dcap_tcb_json(r));
    json_object_set_new_nocheck(c, "signers", ev__dcap_signers_json(r));

    json_t *s = json_object();
    ev__dcap_common_json(s, r);
    if (r->version == 3) {
        json_object_set_new_nocheck(s, "qe_svn", json_integer(r->qe_svn));
        json_object_set_new_nocheck(s, "pce_svn", json_integer(r->pce_svn));
    }
    json_object_set_new_nocheck(s, "attributes", ev__json_hex(b + SGXR_ATTRIBUTES, 16));
    json_object_set_new_nocheck(s, "misc_select", ev__json_hex(b + SGXR_MISCSELECT, 4));
    json_object_set_new_nocheck(s, "cpusvn", ev__json_hex(b + SGXR_CPUSVN, 16));
    json_object_set_new_nocheck(s, "isv_ext_prod_id", ev__json_hex(b + SGXR_ISVEXTPRODID, 16));
    json_object_set_new_nocheck(s, "config_id", ev__json_hex(b + SGXR_CONFIGID, 64));
    json_object_set_new_nocheck(s, "config_svn",
                                json_integer(b[SGXR_CONFIGSVN] | b[SGXR_CONFIGSVN + 1] << 8));
    json_object_set_new_nocheck(s, "isv_family_id", ev__json_hex(b + SGXR_ISVFAMILYID, 16));
    json_object_set_new_nocheck(c, "sgx", s);
    return c;
}

static int sgx_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                      size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    if (aux && aux_size)
        log_debug("SGX: ignoring %zu bytes of auxiliary data", aux_size);
    __attribute__((cleanup(ev__dcap_result_free))) dcap_result r;
    int rc = ev__dcap_verify(&r, ev, size, DCAP_TEE_SGX, opts, NULL, err);
    if (rc < 0)
        return rc;
    uint64_t flags = ev__le64(r.body + SGXR_ATTRIBUTES);
    if (opts && opts->forbid_debug && (flags & SGX_FLAG_DEBUG))
        return err_set(err, EV_E_POLICY,
                       "SGX enclave attributes 0x%016llx have DEBUG (bit 1) set: its memory is "
                       "readable by the host; refused by the caller's constraints",
                       (unsigned long long)flags);
    *out = sgx_claims(&r);
    return 0;
}

static bool sgx_detect(const uint8_t *ev, size_t size)
{
    if (size < DCAP_HEADER_SIZE + DCAP_SGX_REPORT_SIZE + 4)
        return false;
    unsigned v = (unsigned)(ev[0] | ev[1] << 8);
    return v == 3 && ev[2] == 2 && ev[3] == 0 && ev__le32(ev + 4) == 0;
}

/* ---- get: Gramine's /dev/attestation ---- */

static int sgx_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                   size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                   const ev_get_opts *opts, cista_error **err)
{
    (void)opts;
    const char *base = getenv("CISTA_GRAMINE_ATTESTATION_DIR");
    if (!base || !*base)
        base = GRAMINE_DEFAULT_DIR;
    log_info("SGX: requesting a DCAP quote via Gramine %s (untested on hardware)", base);
    _cleanup_close_ int dfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT)
            return err_set(err, EV_E_NOTEE,
                           "SGX is not available: %s does not exist (run inside Gramine with "
                           "sgx.remote_attestation = \"dcap\")",
                           base);
        return err_set_sys(err, -errno, "SGX: opening %s", base);
    }
    _cleanup_free_ char *type = NULL;
    size_t tsize = 0;
    int r = util_read_fileat(&type, &tsize, dfd, "attestation_type", 64, err);
    if (r == 0) {
        while (tsize && (type[tsize - 1] == '\n' || type[tsize - 1] == 0))
            type[--tsize] = 0;
        if (strcmp(type, "dcap") != 0)
            return err_set(err, EV_E_NOTEE,
                           "SGX: Gramine attestation type is \"%s\", expected \"dcap\" (EPID and "
                           "none are not supported)",
                           type);
    } else if (r == -ENOENT) {
        err_clear(err);
    } else {
        return err_wrap(err, "SGX: %s/attestation_type", base);
    }
    _cleanup_close_ int wfd = openat(dfd, "user_report_data", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (wfd < 0)
        return err_set_sys(err, -errno, "SGX: opening %s/user_report_data", base);
    if (util_write_all(wfd, report_data, EV_REPORT_DATA_SIZE) < 0)
        return err_set_sys(err, -errno, "SGX: writing %s/user_report_data", base);
    _cleanup_free_ char *quote = NULL;
    size_t qsize = 0;
    if ((r = util_read_fileat(&quote, &qsize, dfd, "quote", EV_MAX_EVIDENCE, err)) < 0)
        return err_wrap(err, "SGX: reading %s/quote", base);
    if (!sgx_detect((const uint8_t *)quote, qsize))
        return err_set(err, -EPROTO, "SGX: %s/quote (%zu bytes) is not a DCAP quote v3", base,
                       qsize);
    *out_evidence = (uint8_t *)steal_ptr(&quote);
    *out_evidence_size = qsize;
    *out_aux = NULL;
    *out_aux_size = 0;
    return 0;
}

const ev_ops ev__sgx_ops = {
    .name = "sgx",
    .description = "Intel SGX DCAP quote v3 (PCK chain to the pinned Intel SGX Root CA)",
    .insecure = false,
    .get = sgx_get,
    .verify = sgx_verify,
    .detect = sgx_detect,
};
