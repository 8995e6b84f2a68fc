/*
 * azure.c - Azure confidential VMs with a paravisor vTPM ("azure-snp-vtpm",
 * "azure-tdx-vtpm"). The evidence is the HCL report the paravisor (HCL)
 * writes to vTPM NV index 0x01400001 plus a vTPM quote:
 *
 *   HCL report = header (32 bytes, "HCLA") | hardware report at 0x20 (SNP
 *   report, 1184 bytes, or TDREPORT, 1024 bytes) | IGVM request data at
 *   0x4C0 {data_size, version, report_type, hash_type, variable_data_size}
 *   | variable data at 0x4D4 (the runtime data JSON: "keys" with the vTPM
 *   AK as the JWK "HCLAkPub", "vm-configuration", "user-data").
 *
 * Verification: the hardware report verifies (SNP via snp.c; TDX: the TD
 * quote via dcap.c, and its body equals the TDREPORT); hash(variable data)
 * == REPORT_DATA[0..hash size) (the exact variable_data_size bytes); the
 * HCLAkPub key verifies the TPM quote and its PCR values (tpm.c); the
 * quote's extraData binds the caller's report data. Everything is read
 * from untrusted bytes with explicit offsets and bounds.
 *
 * Container (docs/evidence.md, "azure"): {"format": "cista-azure-snp-vtpm-v1"
 * or "cista-azure-tdx-vtpm-v1", "hcl_report": b64, "td_quote": b64 (tdx),
 * "tpm_quote": {a "tpm" container: attest, signature, signature_format,
 * pcrs}}; the VCEK (snp) and DCAP collateral come in the collateral set.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "evidence/dcap_int.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "evidence/tpm_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define AZ_SNP_FORMAT "cista-azure-snp-vtpm-v1"
#define AZ_TDX_FORMAT "cista-azure-tdx-vtpm-v1"

/* HCL report layout. */
#define HCL_SIGNATURE 0x414C4348u /* "HCLA" little-endian */
#define HCL_OFF_VERSION 0x004
#define HCL_OFF_REPORT_SIZE 0x008
#define HCL_OFF_REQUEST_TYPE 0x00C
#define HCL_OFF_HW_REPORT 0x020
#define HCL_HW_REPORT_SIZE 1184
#define HCL_OFF_IGVM 0x4C0
#define HCL_IGVM_HEADER_SIZE 20
#define HCL_OFF_VAR 0x4D4
#define HCL_MAX_VAR (64u * 1024)
#define HCL_TYPE_SNP 2
#define HCL_TYPE_TDX 4
#define TDREPORT_SIZE 1024

typedef struct {
    uint32_t version, report_size, request_type;
    uint32_t data_size, igvm_version, report_type, hash_type, var_size;
    const uint8_t *hw;  /* borrowed: the hardware report */
    const uint8_t *var; /* borrowed: variable data */
} hcl_report;

/* Parse the HCL report header and IGVM request data of @p (@size bytes). */
static int hcl_parse(hcl_report *h, const uint8_t *p, size_t size, cista_error **err)
{
    memset(h, 0, sizeof(*h));
    if (size < HCL_OFF_VAR)
        return err_set(err, EV_E_SIZE,
                       "HCL report: %zu bytes, shorter than the %u-byte header, hardware report "
                       "and IGVM request data; the report is truncated",
                       size, HCL_OFF_VAR);
    uint32_t sig = ev__le32(p);
    if (sig != HCL_SIGNATURE)
        return err_set(err, EV_E_FORMAT,
                       "HCL report: signature is 0x%08x, expected \"HCLA\" (0x414c4348); this is "
                       "not an Azure HCL report (vTPM NV index 0x01400001)",
                       sig);
    h->version = ev__le32(p + HCL_OFF_VERSION);
    h->report_size = ev__le32(p + HCL_OFF_REPORT_SIZE);
    h->request_type = ev__le32(p + HCL_OFF_REQUEST_TYPE);
    if (h->version < 1 || h->version > 2)
        return err_set(err, EV_E_VERSION,
                       "HCL report: header version %u is not supported (1 and 2 are)", h->version);
    if (h->request_type != 2)
        return err_set(err, EV_E_FORMAT, "HCL report: request_type %u, expected 2",
                       h->request_type);
    h->data_size = ev__le32(p + HCL_OFF_IGVM);
    h->igvm_version = ev__le32(p + HCL_OFF_IGVM + 4);
    h->report_type = ev__le32(p + HCL_OFF_IGVM + 8);
    h->hash_type = ev__le32(p + HCL_OFF_IGVM + 12);
    h->var_size = ev__le32(p + HCL_OFF_IGVM + 16);
    if (h->igvm_version != 1)
        return err_set(err, EV_E_VERSION, "HCL report: IGVM request data version %u, expected 1",
                       h->igvm_version);
    if (h->report_type != HCL_TYPE_SNP && h->report_type != HCL_TYPE_TDX)
        return err_set(err, EV_E_VERSION,
                       "HCL report: hardware report type %u is not supported (2 SNP, 4 TDX)",
                       h->report_type);
    if (h->hash_type < 1 || h->hash_type > 3)
        return err_set(err, EV_E_VERSION,
                       "HCL report: report data hash type %u is not supported (1 SHA-256, 2 "
                       "SHA-384, 3 SHA-512)",
                       h->hash_type);
    if (h->var_size > HCL_MAX_VAR ||
        (uint64_t)h->data_size != HCL_IGVM_HEADER_SIZE + (uint64_t)h->var_size)
        return err_set(err, EV_E_FORMAT,
                       "HCL report: IGVM data_size %u and variable_data_size %u disagree (data "
                       "size must be %u + variable size, at most %u)",
                       h->data_size, h->var_size, HCL_IGVM_HEADER_SIZE, HCL_MAX_VAR);
    if ((uint64_t)h->report_size != HCL_OFF_IGVM + (uint64_t)h->data_size)
        return err_set(err, EV_E_FORMAT,
                       "HCL report: report_size %u, but the header and IGVM data need %llu",
                       h->report_size, (unsigned long long)(HCL_OFF_IGVM + (uint64_t)h->data_size));
    if (h->report_size > size)
        return err_set(err, EV_E_SIZE,
                       "HCL report: report_size %u but only %zu bytes are present; the report is "
                       "truncated",
                       h->report_size, size);
    h->hw = p + HCL_OFF_HW_REPORT;
    h->var = p + HCL_OFF_VAR;
    return 0;
}

static crypto_hash_alg hcl_hash(uint32_t t)
{
    return t == 1 ? CRYPTO_SHA256 : t == 2 ? CRYPTO_SHA384 : CRYPTO_SHA512;
}

/* The runtime data's "HCLAkPub" JWK as a key; *out_runtime gets the parsed JSON. */
static int runtime_ak(EVP_PKEY **out, json_t **out_runtime, const hcl_report *h, cista_error **err)
{
    json_t *rt = NULL;
    int rc = js_parse_object(&rt, h->var, h->var_size, HCL_MAX_VAR, "HCL runtime data", err);
    if (rc < 0) {
        /* Some HCL versions pad with NULs: parse up to the first one. */
        const uint8_t *nul = memchr(h->var, 0, h->var_size);
        err_clear(err);
        if (!nul || js_parse_object(&rt, h->var, (size_t)(nul - h->var), HCL_MAX_VAR,
                                    "HCL runtime data", err) < 0)
            return err_set(err, EV_E_FORMAT, "HCL runtime data (%u bytes) is not a JSON object",
                           h->var_size);
    }
    *out_runtime = rt;
    json_t *keys = json_object_get(rt, "keys");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kid = json_string_value(json_object_get(k, "kid"));
        if (!kid || strcmp(kid, "HCLAkPub") != 0)
            continue;
        _cleanup_free_ char *text = js_dump_compact(k);
        rc = crypto_key_load(out, text, strlen(text), false, err);
        if (rc < 0) {
            err_wrap(err, "HCL runtime data: HCLAkPub");
            _cleanup_free_ char *m = err_str(*err);
            err_clear(err);
            return err_set(err, EV_E_NOKEY, "%s", m);
        }
        return 0;
    }
    return err_set(err, EV_E_NOKEY,
                   "HCL runtime data has no \"HCLAkPub\" key in \"keys\": the vTPM attestation "
                   "key is not bound to the hardware report");
}

/* Hash(variable data) must be the start of the hardware report's REPORT_DATA. */
static int check_binding(const hcl_report *h, const uint8_t *report_data, cista_error **err)
{
    uint8_t d[64];
    crypto_hash_alg alg = hcl_hash(h->hash_type);
    size_t hs = crypto_hash_size(alg);
    crypto_hash_oneshot(alg, h->var, h->var_size, d);
    if (!crypto_memeq(d, report_data, hs)) {
        _cleanup_free_ char *got = hex_encode(report_data, hs);
        _cleanup_free_ char *want = hex_encode(d, hs);
        return err_set(err, EV_E_REPORT_DATA,
                       "HCL report: the hardware report's REPORT_DATA[0..%zu) is %s, but %s of the "
                       "%u bytes of runtime data is %s; the runtime data (and the AK in it) was "
                       "modified or belongs to another report",
                       hs, got, crypto_hash_name(alg), h->var_size, want);
    }
    return 0;
}

/* The runtime data details for the claims: vm-configuration, user-data, key ids. */
static json_t *runtime_json(const json_t *rt, EVP_PKEY *ak)
{
    json_t *o = json_object();
    json_t *vmc = json_object_get(rt, "vm-configuration");
    if (json_is_object(vmc))
        json_object_set(o, "vm_configuration", vmc);
    const char *ud = json_string_value(json_object_get(rt, "user-data"));
    if (ud) {
        _cleanup_free_ char *low = xstrdup(ud);
        for (char *c = low; *c; c++)
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        json_object_set_new(o, "user_data", json_string(low));
    }
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(ak, &der);
    if (n > 0) {
        uint8_t h[32];
        crypto_hash_oneshot(CRYPTO_SHA256, der, (size_t)n, h);
        json_object_set_new(o, "ak_key_sha256", ev__json_hex(h, 32));
        OPENSSL_free(der);
    }
    return o;
}

typedef struct {
    json_t *root;
    uint8_t *hcl, *td_quote;
    size_t hcl_size, td_quote_size;
    json_t *tpm_quote; /* borrowed from root */
} az_container;

static void az_container_free(az_container *c)
{
    json_decref(c->root);
    free(c->hcl);
    free(c->td_quote);
}

static int fmt_err(cista_error **err)
{
    if (!err || !*err)
        return EV_E_FORMAT;
    _cleanup_free_ char *m = err_str(*err);
    err_clear(err);
    return err_set(err, EV_E_FORMAT, "%s", m);
}

static int get_b64(uint8_t **out, size_t *out_size, const json_t *o, const char *key, bool required,
                   cista_error **err)
{
    const char *s = NULL;
    if (js_get_string(&s, o, key, required, "Azure evidence", err) < 0)
        return fmt_err(err);
    if (!s)
        return 0;
    if (b64_decode(out, out_size, s, strlen(s), err) < 0) {
        err_wrap(err, "Azure evidence: member \"%s\"", key);
        return fmt_err(err);
    }
    if (*out_size > EV_MAX_EVIDENCE)
        return err_set(err, EV_E_SIZE, "Azure evidence: %s is too large", key);
    return 0;
}

static int az_parse(az_container *c, const uint8_t *ev, size_t size, const char *want_format,
                    cista_error **err)
{
    if (js_parse_object(&c->root, ev, size, EV_MAX_EVIDENCE, "Azure evidence", err) < 0)
        return fmt_err(err);
    const char *fmt = NULL;
    if (js_get_string(&fmt, c->root, "format", true, "Azure evidence", err) < 0)
        return fmt_err(err);
    if (strcmp(fmt, want_format) != 0)
        return err_set(err, EV_E_VERSION, "Azure evidence: format \"%s\", expected \"%s\"", fmt,
                       want_format);
    int rc;
    if ((rc = get_b64(&c->hcl, &c->hcl_size, c->root, "hcl_report", true, err)) < 0 ||
        (rc = get_b64(&c->td_quote, &c->td_quote_size, c->root, "td_quote",
                      strcmp(want_format, AZ_TDX_FORMAT) == 0, err)) < 0)
        return rc;
    if (js_get_object(&c->tpm_quote, c->root, "tpm_quote", true, "Azure evidence", err) < 0)
        return fmt_err(err);
    return 0;
}

/*
 * Merge: the hardware claims (@hw, tee "snp"/"tdx") become the base; the
 * TPM's PCRs, report data (the quote's extraData: the freshness binding),
 * AK signer and "tpm" object are added; "azure" holds the HCL details.
 */
static json_t *merge(json_t *hw, json_t *tpm, const char *tee, const char *hw_name,
                     const hcl_report *h, json_t *runtime)
{
    json_t *c = json_deep_copy(hw);
    json_object_set_new(c, "tee", json_string(tee));
    json_t *hw_obj = json_object_get(c, hw_name);
    if (hw_obj) /* keep the hardware report_data (SHA-256 of the runtime data) there */
        json_object_set(hw_obj, "report_data", json_object_get(hw, "report_data"));
    json_object_set(c, "report_data", json_object_get(tpm, "report_data"));
    json_t *meas = json_object_get(c, "measurements");
    if (!meas) {
        meas = json_object();
        json_object_set_new(c, "measurements", meas);
    }
    json_object_set(meas, "pcrs", json_object_get(json_object_get(tpm, "measurements"), "pcrs"));
    json_t *signers = json_object_get(c, "signers");
    json_t *ak = json_array_get(json_object_get(tpm, "signers"), 0);
    if (json_is_array(signers) && ak)
        json_array_insert(signers, 0, ak);
    json_object_set(c, "tpm", json_object_get(tpm, "tpm"));
    json_t *az = json_object();
    json_object_set_new(az, "hcl",
                        json_pack("{s:I,s:I,s:s,s:I}", "version", (json_int_t)h->version,
                                  "report_type", (json_int_t)h->report_type, "report_data_hash",
                                  crypto_hash_name(hcl_hash(h->hash_type)), "runtime_data_size",
                                  (json_int_t)h->var_size));
    json_object_set_new(az, "runtime_data", json_incref(runtime));
    json_object_set_new(c, "azure", az);
    return c;
}

/* The TPM quote with the HCLAkPub; opts->report_data applies to its extraData. */
static int verify_vtpm(json_t **out, const az_container *c, EVP_PKEY *ak,
                       const ev_verify_opts *opts, cista_error **err)
{
    int rc = ev__tpm_verify_json(out, c->tpm_quote, ak, "hcl-report", opts, err);
    if (rc < 0)
        return err_wrap(err, "Azure vTPM quote (AK = HCLAkPub of the HCL report)");
    return 0;
}

/* The @format container into @c and its HCL report into @h, which must carry @want_type. */
static int az_load(az_container *c, hcl_report *h, const uint8_t *ev, size_t size,
                   const char *format, uint32_t want_type, cista_error **err)
{
    int rc = az_parse(c, ev, size, format, err);
    if (rc < 0)
        return rc;
    if ((rc = hcl_parse(h, c->hcl, c->hcl_size, err)) < 0)
        return rc;
    if (h->report_type != want_type)
        return err_set(err, EV_E_VERSION,
                       "HCL report carries hardware report type %u, not %s (%u): use %s",
                       h->report_type, want_type == HCL_TYPE_SNP ? "SNP" : "TDX", want_type,
                       want_type == HCL_TYPE_SNP ? "azure-tdx-vtpm" : "azure-snp-vtpm");
    return 0;
}

/*
 * The steps after the hardware report: the AK from the runtime data verifies
 * the vTPM quote, and the hardware claims @hw merge with the TPM's as @tee.
 */
static int finish(json_t **out, const az_container *c, const hcl_report *h, json_t *hw,
                  const char *tee, const char *hw_name, const ev_verify_opts *opts,
                  cista_error **err)
{
    _cleanup_json_ json_t *rt = NULL;
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    int rc = runtime_ak(&ak, &rt, h, err);
    if (rc < 0)
        return rc;
    _cleanup_json_ json_t *tpm = NULL;
    if ((rc = verify_vtpm(&tpm, c, ak, opts, err)) < 0)
        return rc;
    _cleanup_json_ json_t *runtime = runtime_json(rt, ak);
    *out = merge(hw, tpm, tee, hw_name, h, runtime);
    return 0;
}

static int az_snp_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                         size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    (void)aux;
    (void)aux_size;
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    __attribute__((cleanup(az_container_free))) az_container c = {0};
    hcl_report h;
    int rc = az_load(&c, &h, ev, size, AZ_SNP_FORMAT, HCL_TYPE_SNP, err);
    if (rc < 0)
        return rc;
    /* 1. The SNP report: signature, VCEK chain, TCB, chip id (snp.c). */
    ev_verify_opts sub = *opts;
    sub.report_data = NULL; /* bound to the runtime data, checked below */
    _cleanup_json_ json_t *snp = NULL;
    if ((rc = ev__snp_ops.verify(&snp, h.hw, SNP_REPORT_SIZE, NULL, 0, &sub, err)) < 0)
        return err_wrap(err, "SNP report inside the HCL report");
    /* 2. REPORT_DATA binds the runtime data (and so the AK). */
    if ((rc = check_binding(&h, h.hw + SNP_OFF_REPORT_DATA, err)) < 0)
        return rc;
    /* 3. The AK from the runtime data verifies the vTPM quote. */
    return finish(out, &c, &h, snp, "azure-snp-vtpm", "snp", opts, err);
}

/* TDREPORT offsets (reference 2.4) and the TD quote body fields they must equal. */
static const struct {
    size_t tdr, body, size;
    const char *name;
} g_td_fields[] = {
    {256 + 8, TDB_TEE_TCB_SVN, 16, "TEE_TCB_SVN"},
    {256 + 24, TDB_MRSEAM, 48, "MRSEAM"},
    {256 + 72, TDB_MRSIGNERSEAM, 48, "MRSIGNERSEAM"},
    {256 + 120, TDB_SEAMATTRIBUTES, 8, "SEAM ATTRIBUTES"},
    {512, TDB_TDATTRIBUTES, 8, "TDATTRIBUTES"},
    {520, TDB_XFAM, 8, "XFAM"},
    {528, TDB_MRTD, 48, "MRTD"},
    {576, TDB_MRCONFIGID, 48, "MRCONFIGID"},
    {624, TDB_MROWNER, 48, "MROWNER"},
    {672, TDB_MROWNERCONFIG, 48, "MROWNERCONFIG"},
    {720, TDB_RTMR0, 192, "RTMR0-3"},
    {128, TDB_REPORTDATA, 64, "REPORTDATA"},
};

static int check_tdreport(const uint8_t *tdr, const dcap_result *q, cista_error **err)
{
    if (tdr[0] != 0x81)
        return err_set(err, EV_E_FORMAT, "TDREPORT: type 0x%02x, expected 0x81 (TDX)", tdr[0]);
    uint8_t d[48];
    crypto_hash_oneshot(CRYPTO_SHA384, tdr + 256, 239, d);
    if (!crypto_memeq(d, tdr + 32, 48))
        return err_set(err, EV_E_FORMAT,
                       "TDREPORT: TEE_TCB_INFO_HASH does not equal SHA-384(TEE_TCB_INFO); the "
                       "TDREPORT was modified");
    crypto_hash_oneshot(CRYPTO_SHA384, tdr + 512, 512, d);
    if (!crypto_memeq(d, tdr + 80, 48))
        return err_set(err, EV_E_FORMAT,
                       "TDREPORT: TEE_INFO_HASH does not equal SHA-384(TDINFO); the TDREPORT was "
                       "modified");
    if (q->body_size < DCAP_TD10_BODY_SIZE)
        return err_set(err, EV_E_FORMAT, "TD quote body of %zu bytes", q->body_size);
    for (size_t i = 0; i < ARRAY_LEN(g_td_fields); i++) {
        const uint8_t *a = tdr + g_td_fields[i].tdr, *b = q->body + g_td_fields[i].body;
        size_t n = g_td_fields[i].size;
        if (!crypto_memeq(a, b, n)) {
            _cleanup_free_ char *ha = hex_encode(a, n < 16 ? n : 16);
            _cleanup_free_ char *hb = hex_encode(b, n < 16 ? n : 16);
            return err_set(err, EV_E_PLATFORM,
                           "TDREPORT %s (%s...) differs from the TD quote's (%s...): the quote "
                           "was produced for another TD report",
                           g_td_fields[i].name, ha, hb);
        }
    }
    return 0;
}

static int az_tdx_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                         size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    (void)aux;
    (void)aux_size;
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    __attribute__((cleanup(az_container_free))) az_container c = {0};
    hcl_report h;
    int rc = az_load(&c, &h, ev, size, AZ_TDX_FORMAT, HCL_TYPE_TDX, err);
    if (rc < 0)
        return rc;
    const uint8_t *tdr = h.hw;
    /* 1. The TD quote (dcap.c) whose body is this TDREPORT. */
    ev_verify_opts sub = *opts;
    sub.report_data = tdr + 128; /* the quote must carry the TDREPORT's REPORTDATA */
    dcap_result q;
    if ((rc = ev__dcap_verify(&q, c.td_quote, c.td_quote_size, DCAP_TEE_TDX, &sub, NULL, err)) < 0)
        return err_wrap(err, "TD quote accompanying the HCL report");
    rc = check_tdreport(tdr, &q, err);
    ev__dcap_result_free(&q);
    if (rc < 0)
        return rc;
    _cleanup_json_ json_t *tdx = NULL;
    if ((rc = ev__dcap_verify_td_quote(&tdx, c.td_quote, c.td_quote_size, &sub, err)) < 0)
        return err_wrap(err, "TD quote accompanying the HCL report");
    /* 2. REPORTDATA binds the runtime data. */
    if ((rc = check_binding(&h, tdr + 128, err)) < 0)
        return rc;
    /* 3. The vTPM quote. */
    return finish(out, &c, &h, tdx, "azure-tdx-vtpm", "tdx", opts, err);
}

int ev__azure_hcl_check(const uint8_t *hcl, size_t size, cista_error **err)
{
    hcl_report h;
    int rc = hcl_parse(&h, hcl, size, err);
    if (rc < 0)
        return rc;
    size_t rd_off = h.report_type == HCL_TYPE_SNP ? SNP_OFF_REPORT_DATA : 128;
    if ((rc = check_binding(&h, h.hw + rd_off, err)) < 0)
        return rc;
    _cleanup_json_ json_t *rt = NULL;
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    return runtime_ak(&ak, &rt, &h, err);
}

static bool sniff(const uint8_t *ev, size_t size, const char *fmt)
{
    size_t n = size < 256 ? size : 256;
    char want[64];
    snprintf(want, sizeof(want), "\"%s\"", fmt);
    return n && ev[0] == '{' && memmem(ev, n, want, strlen(want)) != NULL;
}

static bool az_snp_detect(const uint8_t *ev, size_t size)
{
    return sniff(ev, size, AZ_SNP_FORMAT);
}

static bool az_tdx_detect(const uint8_t *ev, size_t size)
{
    return sniff(ev, size, AZ_TDX_FORMAT);
}

const ev_ops ev__azure_snp_ops = {
    .name = "azure-snp-vtpm",
    .description = "Azure SEV-SNP confidential VM: HCL report (SNP report) + vTPM quote",
    .insecure = false,
    .get = NULL,
    .verify = az_snp_verify,
    .detect = az_snp_detect,
};

const ev_ops ev__azure_tdx_ops = {
    .name = "azure-tdx-vtpm",
    .description = "Azure TDX confidential VM: HCL report (TDREPORT) + TD quote + vTPM quote",
    .insecure = false,
    .get = NULL,
    .verify = az_tdx_verify,
    .detect = az_tdx_detect,
};
