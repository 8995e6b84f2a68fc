/*
 * tdx.c - Intel TDX: get TD quotes through configfs-tsm (provider
 * "tdx_guest") and verify quotes v4 and v5 (TD 1.0 and TD 1.5 bodies) with
 * the shared DCAP machinery of dcap.c, then turn the TD quote body into the
 * normalized claims (docs/claims.md). The body is read field by field at
 * the offsets of dcap_int.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "evidence/dcap_int.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/log.h"
#include "util/util.h"

#define TDATTR_DEBUG (1ull << 0)
#define TDATTR_SEPT_VE_DISABLE (1ull << 28)
#define TDATTR_PKS (1ull << 30)
#define TDATTR_KL (1ull << 31)
#define TDATTR_PERFMON (1ull << 63)

/* Keys are literals and values hex or numbers: the _nocheck calls skip UTF-8 checks. */
static json_t *tdx_claims(const dcap_result *r)
{
    const uint8_t *b = r->body;
    uint64_t attr = ev__le64(b + TDB_TDATTRIBUTES);
    bool debug = (attr & TDATTR_DEBUG) != 0;
    json_t *c = ev__claims_new("tdx", false);
    json_object_set_new_nocheck(c, "debug", json_boolean(debug));

    json_t *m = json_object();
    json_object_set_new_nocheck(m, "mrtd", ev__json_hex(b + TDB_MRTD, 48));
    for (int i = 0; i < 4; i++) {
        char k[8];
        snprintf(k, sizeof(k), "rtmr%d", i);
        json_object_set_new_nocheck(m, k, ev__json_hex(b + TDB_RTMR0 + 48 * i, 48));
    }
    json_object_set_new_nocheck(m, "mrconfigid", ev__json_hex(b + TDB_MRCONFIGID, 48));
    json_object_set_new_nocheck(m, "mrowner", ev__json_hex(b + TDB_MROWNER, 48));
    json_object_set_new_nocheck(m, "mrownerconfig", ev__json_hex(b + TDB_MROWNERCONFIG, 48));
    json_object_set_new_nocheck(m, "mrseam", ev__json_hex(b + TDB_MRSEAM, 48));
    json_object_set_new_nocheck(c, "measurements", m);
    json_object_set_new_nocheck(c, "init_data", ev__json_hex(b + TDB_MRCONFIGID, 48));
    json_object_set_new_nocheck(c, "report_data", ev__json_hex(b + TDB_REPORTDATA, 64));
    json_object_set_new_nocheck(c, "platform_id", ev__json_hex(r->fmspc, 6));

    json_t *tcb = ev__dcap_tcb_json(r);
    json_t *tdxc = json_array();
    for (int i = 0; i < 16; i++)
        json_array_append_new(tdxc, json_integer(b[TDB_TEE_TCB_SVN + i]));
    json_object_set_new_nocheck(json_object_get(tcb, "components"), "tdx", tdxc);
    json_object_set_new_nocheck(c, "tcb", tcb);
    json_object_set_new_nocheck(c, "signers", ev__dcap_signers_json(r));

    json_t *t = json_object();
    ev__dcap_common_json(t, r);
    json_object_set_new_nocheck(
        t, "body", json_string_nocheck(r->body_type == DCAP_BODY_TD15 ? "td1.5" : "td1.0"));
    json_object_set_new_nocheck(t, "tee_tcb_svn", ev__json_hex(b + TDB_TEE_TCB_SVN, 16));
    json_object_set_new_nocheck(t, "mrsignerseam", ev__json_hex(b + TDB_MRSIGNERSEAM, 48));
    json_object_set_new_nocheck(t, "seam_attributes", ev__json_hex(b + TDB_SEAMATTRIBUTES, 8));
    char raw[24];
    snprintf(raw, sizeof(raw), "0x%016llx", (unsigned long long)attr);
    json_t *ta = json_object();
    json_object_set_new_nocheck(ta, "raw", json_string_nocheck(raw));
    json_object_set_new_nocheck(ta, "debug", json_boolean(debug));
    json_object_set_new_nocheck(ta, "sept_ve_disable",
                                json_boolean((attr & TDATTR_SEPT_VE_DISABLE) != 0));
    json_object_set_new_nocheck(ta, "pks", json_boolean((attr & TDATTR_PKS) != 0));
    json_object_set_new_nocheck(ta, "kl", json_boolean((attr & TDATTR_KL) != 0));
    json_object_set_new_nocheck(ta, "perfmon", json_boolean((attr & TDATTR_PERFMON) != 0));
    json_object_set_new_nocheck(t, "td_attributes", ta);
    json_object_set_new_nocheck(t, "xfam", ev__json_hex(b + TDB_XFAM, 8));
    if (r->body_type == DCAP_BODY_TD15) {
        json_object_set_new_nocheck(t, "tee_tcb_svn2", ev__json_hex(b + TDB_TEE_TCB_SVN2, 16));
        json_object_set_new_nocheck(t, "mrservicetd", ev__json_hex(b + TDB_MRSERVICETD, 48));
    }
    json_object_set_new_nocheck(c, "tdx", t);
    return c;
}

int ev__dcap_verify_td_quote(json_t **out, const uint8_t *quote, size_t size,
                             const ev_verify_opts *opts, cista_error **err)
{
    __attribute__((cleanup(ev__dcap_result_free))) dcap_result r;
    int rc = ev__dcap_verify(&r, quote, size, DCAP_TEE_TDX, opts, NULL, err);
    if (rc < 0)
        return rc;
    uint64_t attr = ev__le64(r.body + TDB_TDATTRIBUTES);
    if (opts && opts->forbid_debug && (attr & TDATTR_DEBUG))
        return err_set(err, EV_E_POLICY,
                       "TDX TD attributes 0x%016llx have DEBUG (bit 0) set: the host can read "
                       "and modify the TD; refused by the caller's constraints",
                       (unsigned long long)attr);
    *out = tdx_claims(&r);
    return 0;
}

static int tdx_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                      size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    /* configfs-tsm gives TDX no auxblob: the PCK chain is inside the quote */
    if (aux && aux_size)
        log_debug("TDX: ignoring %zu bytes of auxiliary data", aux_size);
    return ev__dcap_verify_td_quote(out, ev, size, opts, err);
}

static bool tdx_detect(const uint8_t *ev, size_t size)
{
    if (size < DCAP_HEADER_SIZE + 6)
        return false;
    unsigned v = (unsigned)(ev[0] | ev[1] << 8);
    return (v == 4 || v == 5) && ev[2] == 2 && ev[3] == 0 && ev__le32(ev + 4) == DCAP_TEE_TDX;
}

static int tdx_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                   size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                   const ev_get_opts *opts, cista_error **err)
{
    log_info("TDX: requesting a TD quote via configfs-tsm (untested on hardware)");
    int r = ev__tsm_get(out_evidence, out_evidence_size, out_aux, out_aux_size, "tdx_guest",
                        report_data, opts, err);
    if (r == -ENOENT) {
        err_clear(err);
        return err_set(err, EV_E_NOTEE,
                       "TDX is not available: no configfs-tsm report directory (Linux 6.7+ "
                       "with the tdx_guest driver is needed)");
    }
    if (r < 0)
        return r;
    if (!tdx_detect(*out_evidence, *out_evidence_size)) {
        free(*out_evidence);
        free(*out_aux);
        *out_evidence = *out_aux = NULL;
        return err_set(err, -EPROTO,
                       "TDX: configfs-tsm returned %zu bytes that are not a TD quote v4/v5",
                       *out_evidence_size);
    }
    return 0;
}

const ev_ops ev__tdx_ops = {
    .name = "tdx",
    .description = "Intel TDX DCAP quote v4/v5 (PCK chain to the pinned Intel SGX Root CA)",
    .insecure = false,
    .get = tdx_get,
    .verify = tdx_verify,
    .detect = tdx_detect,
};
