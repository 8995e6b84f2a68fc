/*
 * nvidia.c - NVIDIA H100 GPU attestation (verify only): an SPDM 1.1
 * GET_MEASUREMENTS request followed by the GPU's MEASUREMENTS response,
 * whose last 96 bytes are an ECDSA P-384 signature (r || s, big-endian)
 * over SHA-384 of everything before it (request || response up to the
 * signature). The signing key is the leaf of the device certificate chain
 * (GSP FMC -> GSP BROM -> Provisioner ICA -> GH100 Identity -> NVIDIA Device
 * Identity CA), given as a PEM bundle in aux or in the collateral; the root
 * is pinned (compiled in, SHA-256 of its DER checked). The leaf's TCG DICE
 * FWID extension (2.23.133.5.4.1, last 48 bytes) must equal the FWID the
 * GPU reports in its opaque data. The 32-byte request nonce is the binding:
 * it must equal the first 32 bytes of the expected report data, whose last
 * 32 bytes must be zero. Layout: docs/evidence.md (nvidia-gpu) and
 * DMTF DSP0274 1.1; every field is read with explicit offsets and bounds.
 *
 * Comparing the 64 measurement blocks against NVIDIA's signed RIMs (driver
 * and VBIOS reference values) is not done here: the claims carry the
 * blocks for policy to appraise.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"

#define SPDM_VERSION_11 0x11
#define SPDM_GET_MEASUREMENTS 0xE0
#define SPDM_MEASUREMENTS 0x60
#define SPDM_REQ_SIZE 37 /* version, code, param1, param2, nonce[32], slot_id */
#define SPDM_NONCE_SIZE 32
#define SPDM_RESP_HDR_SIZE 8 /* version, code, param1, param2, blocks, u24 record length */
#define NV_SIG_SIZE 96       /* ECDSA P-384 r || s, big-endian */
#define NV_SIG_INT_SIZE 48
#define NV_DIGEST_MAX 64 /* bytes of one measurement value we keep */
#define NV_MAX_BLOCKS 255
#define NV_FWID_SIZE 48
#define NV_TRAILING_MAX 1 /* zero bytes tolerated after the signature (trustee sample) */
#define NV_MIN_SIZE (SPDM_REQ_SIZE + SPDM_RESP_HDR_SIZE + SPDM_NONCE_SIZE + 2 + NV_SIG_SIZE)

/* Opaque data types (NVIDIA, as named by trustee's OpaqueDataType). */
#define OPQ_DRIVER_VERSION 3
#define OPQ_GPU_INFO 4
#define OPQ_VBIOS_VERSION 6
#define OPQ_BOARD_ID 14
#define OPQ_CHIP_SKU 15
#define OPQ_PROJECT 17
#define OPQ_PROJECT_SKU 18
#define OPQ_FWID 20
#define OPQ_OPAQUE_DATA_VERSION 34
#define OPQ_FEATURE_FLAG 36
#define OPQ_STR_MAX 64

#define OID_TCG_DICE_FWID "2.23.133.5.4.1"

/* SHA-256 of the DER of the NVIDIA Device Identity CA (data/nvidia/). */
#define NV_ROOT_SHA256 "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"

/* data/nvidia/nvidia_device_identity_ca.pem */
static const char g_nv_root[] = "-----BEGIN CERTIFICATE-----\n"
                                "MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw\n"
                                "IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE\n"
                                "SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM\n"
                                "GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG\n"
                                "ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX\n"
                                "gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB\n"
                                "2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B\n"
                                "Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY\n"
                                "MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3\n"
                                "TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+\n"
                                "EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=\n"
                                "-----END CERTIFICATE-----\n";

typedef struct {
    uint8_t index, spec, type;
    uint16_t value_size;
    uint8_t value[NV_DIGEST_MAX];
} nv_block;

/* A report copied out of the untrusted bytes, field by field. */
typedef struct {
    uint8_t req_param1, req_param2, slot_id;
    uint8_t nonce[SPDM_NONCE_SIZE];
    uint8_t resp_param1, resp_param2;
    size_t block_count;
    nv_block blocks[NV_MAX_BLOCKS];
    uint8_t resp_nonce[SPDM_NONCE_SIZE];
    char driver_version[OPQ_STR_MAX + 1], chip_sku[OPQ_STR_MAX + 1], project[OPQ_STR_MAX + 1],
        project_sku[OPQ_STR_MAX + 1];
    uint8_t vbios[OPQ_STR_MAX];
    size_t vbios_size;
    uint8_t fwid[NV_FWID_SIZE];
    bool has_fwid;
    json_t *opaque; /* {"<type>": hex} of every item */
    size_t signed_size;
    const uint8_t *sig; /* borrowed from the evidence */
} nv_report;

static void report_freep(nv_report **r)
{
    if (*r) {
        json_decref((*r)->opaque);
        free(*r);
    }
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* A NUL-padded ASCII string item into @out (at most OPQ_STR_MAX bytes). */
static int opaque_str(char *out, const uint8_t *p, size_t size, const char *what, cista_error **err)
{
    if (size > OPQ_STR_MAX)
        return err_set(err, EV_E_FORMAT, "NVIDIA report: opaque %s is %zu bytes, at most %d", what,
                       size, OPQ_STR_MAX);
    size_t n = 0;
    while (n < size && p[n])
        n++;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: opaque %s has a non-printable byte 0x%02x at %zu", what,
                           p[i], i);
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

static int parse_opaque(nv_report *r, const uint8_t *p, size_t size, cista_error **err)
{
    r->opaque = json_object();
    for (size_t off = 0; off < size;) {
        if (size - off < 4)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: opaque item header at offset %zu runs past the %zu-byte "
                           "opaque data",
                           off, size);
        uint16_t type = le16(p + off), isize = le16(p + off + 2);
        const uint8_t *v = p + off + 4;
        if (isize > size - off - 4)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: opaque item type %u (%u bytes) at offset %zu runs past "
                           "the %zu-byte opaque data",
                           type, isize, off, size);
        char key[8];
        snprintf(key, sizeof(key), "%u", type);
        if (json_object_get(r->opaque, key))
            return err_set(err, EV_E_FORMAT, "NVIDIA report: opaque item type %u appears twice",
                           type);
        json_object_set_new(r->opaque, key, ev__json_hex(v, isize));
        int rc = 0;
        switch (type) {
        case OPQ_DRIVER_VERSION:
            rc = opaque_str(r->driver_version, v, isize, "DRIVER_VERSION", err);
            break;
        case OPQ_CHIP_SKU:
            rc = opaque_str(r->chip_sku, v, isize, "CHIP_SKU", err);
            break;
        case OPQ_PROJECT:
            rc = opaque_str(r->project, v, isize, "PROJECT", err);
            break;
        case OPQ_PROJECT_SKU:
            rc = opaque_str(r->project_sku, v, isize, "PROJECT_SKU", err);
            break;
        case OPQ_VBIOS_VERSION:
            if (isize > OPQ_STR_MAX)
                return err_set(err, EV_E_FORMAT,
                               "NVIDIA report: opaque VBIOS_VERSION is %u bytes, at most %d", isize,
                               OPQ_STR_MAX);
            memcpy(r->vbios, v, isize);
            r->vbios_size = isize;
            break;
        case OPQ_FWID:
            if (isize != NV_FWID_SIZE)
                return err_set(err, EV_E_FORMAT,
                               "NVIDIA report: opaque FWID is %u bytes, expected %d", isize,
                               NV_FWID_SIZE);
            memcpy(r->fwid, v, NV_FWID_SIZE);
            r->has_fwid = true;
            break;
        default:
            break;
        }
        if (rc < 0)
            return rc;
        off += 4 + (size_t)isize;
    }
    if (!r->has_fwid)
        return err_set(err, EV_E_FORMAT,
                       "NVIDIA report: the opaque data has no FWID (type %d); it cannot be tied "
                       "to the device certificate",
                       OPQ_FWID);
    return 0;
}

static int parse_blocks(nv_report *r, const uint8_t *p, size_t size, unsigned count,
                        cista_error **err)
{
    bool seen[256] = {false};
    size_t off = 0;
    for (unsigned i = 0; i < count; i++) {
        if (size - off < 4)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block %u header at record offset %zu runs "
                           "past the %zu-byte record",
                           i, off, size);
        nv_block *b = &r->blocks[i];
        b->index = p[off];
        b->spec = p[off + 1];
        uint16_t bsize = le16(p + off + 2);
        if (bsize > size - off - 4)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block %u (index %u, %u bytes) runs past "
                           "the %zu-byte record",
                           i, b->index, bsize, size);
        if (b->spec != 1)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block index %u has specification 0x%02x, "
                           "expected 0x01 (DMTF)",
                           b->index, b->spec);
        if (b->index == 0 || b->index == 0xff || seen[b->index])
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block index %u is reserved or repeated",
                           b->index);
        seen[b->index] = true;
        const uint8_t *v = p + off + 4;
        if (bsize < 3)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block index %u is %u bytes, too small for "
                           "a DMTF value header",
                           b->index, bsize);
        b->type = v[0];
        b->value_size = le16(v + 1);
        if ((size_t)b->value_size + 3 != bsize || b->value_size > NV_DIGEST_MAX)
            return err_set(err, EV_E_FORMAT,
                           "NVIDIA report: measurement block index %u: DMTF value of %u bytes in "
                           "a %u-byte block (at most %d)",
                           b->index, b->value_size, bsize, NV_DIGEST_MAX);
        memcpy(b->value, v + 3, b->value_size);
        off += 4 + (size_t)bsize;
    }
    if (off != size)
        return err_set(err, EV_E_FORMAT,
                       "NVIDIA report: %u measurement blocks use %zu bytes of the %zu-byte record",
                       count, off, size);
    r->block_count = count;
    return 0;
}

static int parse_report(nv_report *r, const uint8_t *p, size_t size, cista_error **err)
{
    memset(r, 0, sizeof(*r));
    if (size < NV_MIN_SIZE)
        return err_set(err, EV_E_SIZE,
                       "NVIDIA report: %zu bytes, at least %d are needed (SPDM request, response "
                       "header, nonce, opaque length, signature); the file is truncated",
                       size, NV_MIN_SIZE);
    /* GET_MEASUREMENTS request. */
    if (p[0] != SPDM_VERSION_11 || p[1] != SPDM_GET_MEASUREMENTS)
        return err_set(err, EV_E_VERSION,
                       "NVIDIA report: request starts %02x %02x, expected 11 e0 (SPDM 1.1 "
                       "GET_MEASUREMENTS)",
                       p[0], p[1]);
    r->req_param1 = p[2];
    r->req_param2 = p[3];
    memcpy(r->nonce, p + 4, SPDM_NONCE_SIZE);
    r->slot_id = p[36];
    if (!(r->req_param1 & 1))
        return err_set(err, EV_E_FORMAT,
                       "NVIDIA report: request param1 0x%02x does not ask for a signature",
                       r->req_param1);
    if (r->req_param2 != 0xff)
        return err_set(err, EV_E_FORMAT,
                       "NVIDIA report: request param2 0x%02x, expected 0xff (all blocks)",
                       r->req_param2);
    /* MEASUREMENTS response. */
    const uint8_t *q = p + SPDM_REQ_SIZE;
    size_t qsize = size - SPDM_REQ_SIZE;
    if (q[0] != SPDM_VERSION_11 || q[1] != SPDM_MEASUREMENTS)
        return err_set(err, EV_E_VERSION,
                       "NVIDIA report: response starts %02x %02x, expected 11 60 (SPDM 1.1 "
                       "MEASUREMENTS)",
                       q[0], q[1]);
    r->resp_param1 = q[2];
    r->resp_param2 = q[3];
    unsigned nblocks = q[4];
    size_t rec_size = (size_t)q[5] | (size_t)q[6] << 8 | (size_t)q[7] << 16;
    size_t off = SPDM_RESP_HDR_SIZE;
    if (rec_size > qsize - off - SPDM_NONCE_SIZE - 2 - NV_SIG_SIZE)
        return err_set(err, EV_E_SIZE,
                       "NVIDIA report: measurement record of %zu bytes does not fit in the "
                       "%zu-byte response; the file is truncated",
                       rec_size, qsize);
    int rc = parse_blocks(r, q + off, rec_size, nblocks, err);
    if (rc < 0)
        return rc;
    off += rec_size;
    memcpy(r->resp_nonce, q + off, SPDM_NONCE_SIZE);
    off += SPDM_NONCE_SIZE;
    size_t opq_size = le16(q + off);
    off += 2;
    if (opq_size > qsize - off - NV_SIG_SIZE)
        return err_set(err, EV_E_SIZE,
                       "NVIDIA report: opaque data of %zu bytes does not fit in the %zu-byte "
                       "response; the file is truncated",
                       opq_size, qsize);
    rc = parse_opaque(r, q + off, opq_size, err);
    if (rc < 0)
        return rc;
    off += opq_size;
    r->signed_size = SPDM_REQ_SIZE + off;
    r->sig = p + r->signed_size;
    size_t tail = qsize - off - NV_SIG_SIZE;
    if (tail > NV_TRAILING_MAX || !ev__all_zero(r->sig + NV_SIG_SIZE, tail))
        return err_set(err, EV_E_SIZE,
                       "NVIDIA report: %zu bytes after the signature (at most %d zero byte "
                       "tolerated); the file is padded or not one report",
                       tail, NV_TRAILING_MAX);
    return 0;
}

/* ---- certificates ---- */

static int load_certs(STACK_OF(X509) * *out, const uint8_t *aux, size_t aux_size,
                      const ev_collateral *coll, cista_error **err)
{
    int rc;
    if (aux && aux_size && (rc = x509_certs_load(out, aux, aux_size, err)) < 0)
        return err_wrap(err, "NVIDIA certificate chain (aux)");
    for (size_t i = 0; i < ev_collateral_count(coll); i++) {
        const char *name;
        const uint8_t *data;
        size_t dsize;
        ev_collateral_get(coll, i, &name, &data, &dsize);
        STACK_OF(X509) *parsed = ev__collateral_certs(coll, i);
        for (int k = 0; k < sk_X509_num(parsed); k++) {
            if (!*out && !(*out = sk_X509_new_null()))
                abort();
            if (sk_X509_num(*out) >= X509_MAX_CERTS)
                return err_set(err, EV_E_FORMAT, "NVIDIA certificates: more than %d",
                               X509_MAX_CERTS);
            X509_up_ref(sk_X509_value(parsed, k));
            sk_X509_push(*out, sk_X509_value(parsed, k));
        }
        if (parsed)
            continue;
        _cleanup_err_ cista_error *e = NULL;
        if (x509_certs_load(out, data, dsize, &e) < 0)
            log_info("NVIDIA collateral: ignoring %s (%s)", name, e ? e->msg : "no certificate");
    }
    return 0;
}

/* Subject == issuer (a root candidate); no signature check, that is the chain's job. */
static bool self_issued(X509 *c)
{
    return X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(c)) == 0;
}

/* True when some other certificate of @set names @c's subject as its issuer. */
static bool issues_another(STACK_OF(X509) * set, X509 *c)
{
    for (int i = 0; i < sk_X509_num(set); i++) {
        X509 *o = sk_X509_value(set, i);
        if (o != c && X509_NAME_cmp(X509_get_issuer_name(o), X509_get_subject_name(c)) == 0 &&
            X509_NAME_cmp(X509_get_subject_name(o), X509_get_subject_name(c)) != 0)
            return true;
    }
    return false;
}

/* The leaf's FWID (last 48 bytes of the extension value); -ENOENT when absent. */
static int cert_fwid(uint8_t out[NV_FWID_SIZE], X509 *c)
{
    const uint8_t *v = NULL;
    size_t n = 0;
    if (x509_ext_raw(&v, &n, c, OID_TCG_DICE_FWID, NULL) < 0 || n < NV_FWID_SIZE)
        return -ENOENT;
    memcpy(out, v + n - NV_FWID_SIZE, NV_FWID_SIZE);
    return 0;
}

/*
 * The leaf: a certificate that issues none of the others, not self-signed;
 * among several, the one whose FWID equals the report's.
 */
static X509 *pick_leaf(STACK_OF(X509) * set, const nv_report *r)
{
    X509 *first = NULL;
    for (int i = 0; i < sk_X509_num(set); i++) {
        X509 *c = sk_X509_value(set, i);
        if (self_issued(c) || issues_another(set, c))
            continue;
        uint8_t fw[NV_FWID_SIZE];
        if (cert_fwid(fw, c) == 0 && memcmp(fw, r->fwid, NV_FWID_SIZE) == 0)
            return c;
        if (!first)
            first = c;
    }
    return first;
}

static int pinned_root(X509 **out, cista_error **err)
{
    _cleanup_x509_ X509 *root = NULL;
    int rc = ev__cert_embedded(&root, g_nv_root, err);
    if (rc < 0)
        return err_wrap(err, "built-in NVIDIA Device Identity CA");
    uint8_t fp[32];
    if ((rc = x509_cert_sha256(fp, root, err)) < 0)
        return rc;
    _cleanup_free_ char *hex = hex_encode(fp, 32);
    if (strcmp(hex, NV_ROOT_SHA256) != 0)
        return err_set(err, EV_E_CHAIN,
                       "built-in NVIDIA Device Identity CA does not match its pin");
    *out = steal_ptr(&root);
    return 0;
}

/* ---- claims ---- */

static json_t *build_claims(const nv_report *r, STACK_OF(X509) * chain)
{
    json_t *c = ev__claims_new("nvidia-gpu", false);
    json_t *m = json_object();
    for (size_t i = 0; i < r->block_count; i++) {
        char key[8];
        snprintf(key, sizeof(key), "%u", r->blocks[i].index);
        json_object_set_new(m, key, ev__json_hex(r->blocks[i].value, r->blocks[i].value_size));
    }
    json_object_set_new(c, "measurements", m);
    uint8_t rd[EV_REPORT_DATA_SIZE] = {0};
    memcpy(rd, r->nonce, SPDM_NONCE_SIZE);
    json_object_set_new(c, "report_data", ev__json_hex(rd, sizeof(rd)));
    json_object_set_new(c, "platform_id", ev__json_hex(r->fwid, NV_FWID_SIZE));
    json_t *signers = json_array();
    int n = sk_X509_num(chain);
    for (int i = 0; i < n; i++)
        json_array_append_new(signers, ev__cert_json(i == 0       ? "device"
                                                     : i == n - 1 ? "root"
                                                                  : "intermediate",
                                                     sk_X509_value(chain, i), i == n - 1));
    json_object_set_new(c, "signers", signers);
    json_t *nv = json_object();
    json_object_set_new(nv, "spdm_version", json_string("1.1"));
    json_object_set_new(nv, "nonce", ev__json_hex(r->nonce, SPDM_NONCE_SIZE));
    json_object_set_new(nv, "responder_nonce", ev__json_hex(r->resp_nonce, SPDM_NONCE_SIZE));
    json_object_set_new(nv, "slot_id", json_integer(r->slot_id));
    json_object_set_new(nv, "measurement_blocks", json_integer((json_int_t)r->block_count));
    json_object_set_new(nv, "driver_version", json_string(r->driver_version));
    json_object_set_new(nv, "vbios_version", ev__json_hex(r->vbios, r->vbios_size));
    json_object_set_new(nv, "chip_sku", json_string(r->chip_sku));
    json_object_set_new(nv, "project", json_string(r->project));
    json_object_set_new(nv, "project_sku", json_string(r->project_sku));
    json_object_set_new(nv, "fwid", ev__json_hex(r->fwid, NV_FWID_SIZE));
    json_object_set_new(nv, "opaque", json_incref(r->opaque));
    json_object_set_new(c, "nvidia", nv);
    return c;
}

/* ---- verification ---- */

static int nv_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                     size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    __attribute__((cleanup(report_freep))) nv_report *rep = xzalloc(sizeof(*rep));
    int rc = parse_report(rep, ev, size, err);
    if (rc < 0)
        return rc;

    _cleanup_x509_stack_ STACK_OF(X509) *certs = NULL;
    if ((rc = load_certs(&certs, aux, aux_size, opts->collateral, err)) < 0)
        return rc;
    X509 *leaf = certs ? pick_leaf(certs, rep) : NULL;
    int ncerts = certs ? sk_X509_num(certs) : 0;
    if (ncerts < 2 || !leaf)
        return err_set(err, EV_E_NOKEY,
                       "NVIDIA device certificate chain is too short (%d certificate%s, no device "
                       "leaf below the root): pass the GPU's full chain (GSP FMC leaf up to the "
                       "NVIDIA Device Identity CA) with --aux or in the collateral",
                       ncerts, ncerts == 1 ? "" : "s");

    /* Roots: only the pinned CA; a root handed in must be that same one. */
    _cleanup_x509_ X509 *root = NULL;
    if ((rc = pinned_root(&root, err)) < 0)
        return rc;
    _cleanup_x509_stack_ STACK_OF(X509) *roots = sk_X509_new_null();
    _cleanup_x509_stack_ STACK_OF(X509) *inter = sk_X509_new_null();
    if (!roots || !inter)
        abort();
    for (int i = 0; i < sk_X509_num(certs); i++) {
        X509 *c = sk_X509_value(certs, i);
        if (c == leaf || X509_cmp(c, root) == 0)
            continue; /* the pinned root is already the trust anchor */
        if (self_issued(c)) {
            _cleanup_free_ char *cn = x509_subject_cn(c);
            return err_set(err, EV_E_CHAIN,
                           "NVIDIA chain: the self-issued CN=%s given with the evidence is not "
                           "the pinned NVIDIA Device Identity CA (SHA-256 %s)",
                           cn ? cn : "?", NV_ROOT_SHA256);
        }
        X509_up_ref(c);
        sk_X509_push(inter, c);
    }
    sk_X509_push(roots, steal_ptr(&root));
    x509_verify_opts xo = {.at = opts->now};
    _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
    _cleanup_free_ char *leaf_cn = x509_subject_cn(leaf);
    if (!ev__chain_cache_get(&chain, opts->chain_cache, "nvidia-gpu", leaf, opts->now)) {
        rc = x509_verify_chain(&chain, leaf, inter, roots, &xo, err);
        if (rc < 0)
            return err_wrap(err,
                            "NVIDIA device certificate chain (CN=%s -> ... -> NVIDIA Device "
                            "Identity CA)",
                            leaf_cn ? leaf_cn : "?");
        ev__chain_cache_put(opts->chain_cache, "nvidia-gpu", leaf, chain);
    }

    uint8_t cfw[NV_FWID_SIZE];
    if (cert_fwid(cfw, leaf) < 0)
        return err_set(err, EV_E_FORMAT,
                       "NVIDIA leaf certificate CN=%s lacks the FWID extension (%s) or it is "
                       "shorter than %d bytes: it is not the GSP FMC attestation certificate; "
                       "pass the chain that starts at the GPU's leaf",
                       leaf_cn ? leaf_cn : "?", OID_TCG_DICE_FWID, NV_FWID_SIZE);

    EVP_PKEY *pub = X509_get0_pubkey(leaf);
    if (!pub || !crypto_key_ec_crv(pub) || strcmp(crypto_key_ec_crv(pub), "P-384") != 0)
        return err_set(err, EV_E_VERSION, "NVIDIA leaf CN=%s key is not an ECDSA P-384 key",
                       leaf_cn ? leaf_cn : "?");
    _cleanup_free_ char *fw_hex = hex_encode(rep->fwid, NV_FWID_SIZE);
    _cleanup_free_ char *cfw_hex = hex_encode(cfw, NV_FWID_SIZE);
    bool fw_ok = memcmp(cfw, rep->fwid, NV_FWID_SIZE) == 0;
    rc = x509_ecdsa_verify_raw(pub, "SHA384", ev, rep->signed_size, rep->sig,
                               rep->sig + NV_SIG_INT_SIZE, NV_SIG_INT_SIZE, X509_BIG_ENDIAN, err);
    if (rc < 0 && rc != -EBADMSG)
        return err_wrap(err, "NVIDIA report signature");
    if (rc < 0) {
        err_clear(err);
        return err_set(err, EV_E_SIGNATURE,
                       "NVIDIA report signature by CN=%s (FWID %.16s...) does not verify over "
                       "bytes 0-%zu (request and response up to the signature): the report was "
                       "modified%s",
                       leaf_cn ? leaf_cn : "?", cfw_hex, rep->signed_size - 1,
                       fw_ok ? "" : ", or the chain belongs to another GPU or firmware");
    }
    if (!fw_ok)
        return err_set(err, EV_E_PLATFORM,
                       "NVIDIA report FWID %s differs from the leaf certificate FWID %s: the "
                       "certificate belongs to another GPU firmware",
                       fw_hex, cfw_hex);

    /* Binding: the 32-byte SPDM nonce is report_data[0..31]; [32..63] must be zero. */
    uint8_t got[EV_REPORT_DATA_SIZE] = {0};
    memcpy(got, rep->nonce, SPDM_NONCE_SIZE);
    rc = ev__check_report_data(opts->report_data, got, "NVIDIA (SPDM nonce || 32 zero bytes)",
                               "evidence", err);
    if (rc < 0)
        return rc;

    *out = build_claims(rep, chain);
    return 0;
}

static bool nv_detect(const uint8_t *ev, size_t size)
{
    return size >= NV_MIN_SIZE && ev[0] == SPDM_VERSION_11 && ev[1] == SPDM_GET_MEASUREMENTS &&
           ev[SPDM_REQ_SIZE] == SPDM_VERSION_11 && ev[SPDM_REQ_SIZE + 1] == SPDM_MEASUREMENTS;
}

/*
 * No producer: the report comes from the GPU driver (nvidia-smi conf-compute
 * / NVML nvmlDeviceGetConfComputeGpuAttestationReport) on a host with an
 * H100 in CC mode, which this build does not talk to.
 */
static int nv_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                  size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                  const ev_get_opts *opts, cista_error **err)
{
    (void)out_evidence;
    (void)out_evidence_size;
    (void)out_aux;
    (void)out_aux_size;
    (void)report_data;
    (void)opts;
    return err_set(err, EV_E_NOTEE,
                   "nvidia-gpu: producing GPU evidence is not supported (no NVML/GPU access); "
                   "obtain the report with NVIDIA's tools and verify it here");
}

const ev_ops ev__nvidia_ops = {
    .name = "nvidia-gpu",
    .description = "NVIDIA H100 SPDM measurement report (device chain to the pinned NVIDIA Device "
                   "Identity CA); verify only",
    .insecure = false,
    .get = nv_get,
    .verify = nv_verify,
    .detect = nv_detect,
};
