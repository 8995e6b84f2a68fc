/*
 * snp.c - AMD SEV-SNP: get attestation reports (configfs-tsm, falling back
 * to the /dev/sev-guest SNP_GET_EXT_REPORT ioctl) and verify them: layout
 * and reserved fields, VCEK/VLEK -> ASK/ASVK -> pinned ARK chain at a given
 * time (with CRLs when provided), ECDSA P-384 signature with little-endian
 * r and s, chip id against the VCEK hwID, reported TCB against the VCEK TCB
 * extensions. Offsets follow the SEV-SNP firmware ABI (#56860) as
 * summarised in ev_int.h; the report is read field by field.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sev-guest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "evidence/snp_int.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"

/* VCEK/VLEK extensions (AMD VCEK spec #57230). */
#define OID_STRUCT_VERSION "1.3.6.1.4.1.3704.1.1"
#define OID_PRODUCT_NAME "1.3.6.1.4.1.3704.1.2"
#define OID_BL_SPL "1.3.6.1.4.1.3704.1.3.1"
#define OID_TEE_SPL "1.3.6.1.4.1.3704.1.3.2"
#define OID_SNP_SPL "1.3.6.1.4.1.3704.1.3.3"
#define OID_UCODE_SPL "1.3.6.1.4.1.3704.1.3.8"
#define OID_FMC_SPL "1.3.6.1.4.1.3704.1.3.9"
#define OID_HWID "1.3.6.1.4.1.3704.1.4"
#define OID_CSP_ID "1.3.6.1.4.1.3704.1.5"

#define SNP_KEY_VCEK 0
#define SNP_KEY_VLEK 1
#define SNP_KEY_NONE 7

#define POLICY_SMT (1ull << 16)
#define POLICY_RSVD1 (1ull << 17)
#define POLICY_MIGRATE_MA (1ull << 18)
#define POLICY_DEBUG (1ull << 19)
#define POLICY_SINGLE_SOCKET (1ull << 20)
#define POLICY_CXL_ALLOW (1ull << 21)
#define POLICY_MEM_AES_256_XTS (1ull << 22)
#define POLICY_RAPL_DIS (1ull << 23)
#define POLICY_CIPHERTEXT_HIDING (1ull << 24)
#define POLICY_PAGE_SWAP_DISABLE (1ull << 25)
#define POLICY_MBZ (~((1ull << 26) - 1))

#define CERT_TABLE_MAX_ENTRIES 64
#define EXT_CERTS_MAX (1u << 20)

typedef enum { PRODUCT_UNKNOWN = -1, PRODUCT_MILAN = 0, PRODUCT_GENOA, PRODUCT_TURIN } product_id;

typedef struct {
    uint8_t fmc, bl, tee, snp, ucode;
    uint64_t raw;
} snp_tcb;

/* A report copied out of the untrusted bytes, field by field. */
typedef struct {
    uint32_t version, guest_svn, vmpl, sig_algo, signer_info;
    uint64_t policy, platform_info;
    uint64_t current_tcb, reported_tcb, committed_tcb, launch_tcb;
    uint64_t launch_mit, current_mit;
    uint8_t family_id[16], image_id[16];
    uint8_t report_data[64], measurement[48], host_data[32];
    uint8_t id_key_digest[48], author_key_digest[48];
    uint8_t report_id[32], report_id_ma[32], chip_id[64];
    uint8_t cpuid_fam, cpuid_mod, cpuid_step;
    uint8_t cur_ver[3], com_ver[3]; /* build, minor, major */
    int signing_key;
    bool author_key_en, mask_chip_id;
} snp_report;

static const char *key_name(int k)
{
    return k == SNP_KEY_VCEK ? "VCEK" : k == SNP_KEY_VLEK ? "VLEK" : "none";
}

static int check_zero(const uint8_t *p, size_t off, size_t size, const char *what,
                      cista_error **err)
{
    for (size_t i = 0; i < size; i++)
        if (p[off + i])
            return err_set(err, EV_E_FORMAT,
                           "SNP report: reserved field %s (0x%03zx) has byte 0x%02x at 0x%03zx, "
                           "expected zero; the report is malformed or from an unsupported "
                           "firmware",
                           what, off, p[off + i], off + i);
    return 0;
}

static int parse_report(snp_report *r, const uint8_t *p, size_t size, cista_error **err)
{
    if (size != SNP_REPORT_SIZE)
        return err_set(err, EV_E_SIZE, "SNP report: %zu bytes, expected %u (0x4A0); the file is %s",
                       size, SNP_REPORT_SIZE, size < SNP_REPORT_SIZE ? "truncated" : "padded");
    memset(r, 0, sizeof(*r));
    r->version = ev__le32(p + SNP_OFF_VERSION);
    if (r->version != 2 && r->version != 3 && r->version != 5)
        return err_set(err, EV_E_VERSION,
                       "SNP report: version %u is not supported (2, 3 and 5 are); newer "
                       "layouts are accepted only after review",
                       r->version);
    r->sig_algo = ev__le32(p + SNP_OFF_SIG_ALGO);
    if (r->sig_algo != 1)
        return err_set(err, EV_E_VERSION,
                       "SNP report: signature algorithm %u is not supported (expected 1, ECDSA "
                       "P-384 with SHA-384)",
                       r->sig_algo);
    r->guest_svn = ev__le32(p + SNP_OFF_GUEST_SVN);
    r->policy = ev__le64(p + SNP_OFF_POLICY);
    memcpy(r->family_id, p + SNP_OFF_FAMILY_ID, 16);
    memcpy(r->image_id, p + SNP_OFF_IMAGE_ID, 16);
    r->vmpl = ev__le32(p + SNP_OFF_VMPL);
    r->current_tcb = ev__le64(p + SNP_OFF_CURRENT_TCB);
    r->platform_info = ev__le64(p + SNP_OFF_PLATFORM_INFO);
    r->signer_info = ev__le32(p + SNP_OFF_SIGNER_INFO);
    memcpy(r->report_data, p + SNP_OFF_REPORT_DATA, 64);
    memcpy(r->measurement, p + SNP_OFF_MEASUREMENT, 48);
    memcpy(r->host_data, p + SNP_OFF_HOST_DATA, 32);
    memcpy(r->id_key_digest, p + SNP_OFF_ID_KEY_DIGEST, 48);
    memcpy(r->author_key_digest, p + SNP_OFF_AUTHOR_KEY_DIGEST, 48);
    memcpy(r->report_id, p + SNP_OFF_REPORT_ID, 32);
    memcpy(r->report_id_ma, p + SNP_OFF_REPORT_ID_MA, 32);
    r->reported_tcb = ev__le64(p + SNP_OFF_REPORTED_TCB);
    memcpy(r->chip_id, p + SNP_OFF_CHIP_ID, 64);
    r->committed_tcb = ev__le64(p + SNP_OFF_COMMITTED_TCB);
    for (int i = 0; i < 3; i++) {
        r->cur_ver[i] = p[SNP_OFF_CURRENT_VER + i];
        r->com_ver[i] = p[SNP_OFF_COMMITTED_VER + i];
    }
    r->launch_tcb = ev__le64(p + SNP_OFF_LAUNCH_TCB);

    int rc;
    if ((rc = check_zero(p, SNP_OFF_RSVD1, 4, "after signer info", err)) < 0)
        return rc;
    if (r->signer_info >> 5)
        return err_set(err, EV_E_FORMAT,
                       "SNP report: signer info 0x%08x has reserved bits 31:5 set", r->signer_info);
    r->author_key_en = r->signer_info & 1;
    r->mask_chip_id = (r->signer_info >> 1) & 1;
    r->signing_key = (int)((r->signer_info >> 2) & 7);
    if (r->version >= 3) {
        r->cpuid_fam = p[SNP_OFF_CPUID_FAM];
        r->cpuid_mod = p[SNP_OFF_CPUID_MOD];
        r->cpuid_step = p[SNP_OFF_CPUID_STEP];
        rc = check_zero(p, SNP_OFF_RSVD2, SNP_OFF_CHIP_ID - SNP_OFF_RSVD2, "after CPUID", err);
    } else {
        rc = check_zero(p, SNP_OFF_CPUID_FAM, SNP_OFF_CHIP_ID - SNP_OFF_CPUID_FAM,
                        "after REPORTED_TCB (v2)", err);
    }
    if (rc < 0)
        return rc;
    if ((rc = check_zero(p, SNP_OFF_CURRENT_VER + 3, 1, "CURRENT_VERSION", err)) < 0 ||
        (rc = check_zero(p, SNP_OFF_COMMITTED_VER + 3, 1, "COMMITTED_VERSION", err)) < 0)
        return rc;
    if (r->version >= 5) {
        r->launch_mit = ev__le64(p + SNP_OFF_LAUNCH_MIT);
        r->current_mit = ev__le64(p + SNP_OFF_CURRENT_MIT);
        rc = check_zero(p, SNP_OFF_RSVD3, SNP_OFF_SIGNATURE - SNP_OFF_RSVD3, "before SIGNATURE",
                        err);
    } else {
        rc = check_zero(p, SNP_OFF_LAUNCH_MIT, SNP_OFF_SIGNATURE - SNP_OFF_LAUNCH_MIT,
                        "before SIGNATURE", err);
    }
    if (rc < 0)
        return rc;
    if ((rc = check_zero(p, SNP_OFF_SIGNATURE + 2 * SNP_SIG_INT_SIZE,
                         SNP_SIG_SIZE - 2 * SNP_SIG_INT_SIZE, "SIGNATURE tail", err)) < 0)
        return rc;
    if (r->signing_key == SNP_KEY_NONE)
        return err_set(err, EV_E_NOKEY,
                       "SNP report: signing key field is 7 (no key): the report is unsigned");
    if (r->signing_key != SNP_KEY_VCEK && r->signing_key != SNP_KEY_VLEK)
        return err_set(err, EV_E_FORMAT, "SNP report: signing key field %d is reserved",
                       r->signing_key);
    if (r->policy & POLICY_MBZ)
        return err_set(err, EV_E_FORMAT, "SNP report: policy 0x%016llx has reserved bits 63:26 set",
                       (unsigned long long)r->policy);
    if (!(r->policy & POLICY_RSVD1))
        return err_set(err, EV_E_FORMAT,
                       "SNP report: policy 0x%016llx has bit 17 clear (must be 1)",
                       (unsigned long long)r->policy);
    if (r->vmpl > 3)
        return err_set(err, EV_E_FORMAT, "SNP report: VMPL %u is out of range 0-3", r->vmpl);
    return 0;
}

static product_id product_from_cpuid(const snp_report *r)
{
    if (r->version < 3)
        return PRODUCT_UNKNOWN;
    if (r->cpuid_fam == 0x19 && r->cpuid_mod <= 0x0F)
        return PRODUCT_MILAN;
    if (r->cpuid_fam == 0x19 && ((r->cpuid_mod >= 0x10 && r->cpuid_mod <= 0x1F) ||
                                 (r->cpuid_mod >= 0xA0 && r->cpuid_mod <= 0xAF)))
        return PRODUCT_GENOA;
    if (r->cpuid_fam == 0x1A && r->cpuid_mod <= 0x11)
        return PRODUCT_TURIN;
    return PRODUCT_UNKNOWN;
}

static snp_tcb tcb_decode(uint64_t raw, product_id prod)
{
    snp_tcb t = {0};
    t.raw = raw;
    uint8_t b[8];
    ev__put_le64(b, raw);
    if (prod == PRODUCT_TURIN) {
        t.fmc = b[0];
        t.bl = b[1];
        t.tee = b[2];
        t.snp = b[3];
    } else {
        t.bl = b[0];
        t.tee = b[1];
        t.snp = b[6];
    }
    t.ucode = b[7];
    return t;
}

static void tcb_str(char *buf, size_t size, const snp_tcb *t, product_id prod)
{
    if (prod == PRODUCT_TURIN)
        snprintf(buf, size, "fmc %u, bl %u, tee %u, snp %u, ucode %u", t->fmc, t->bl, t->tee,
                 t->snp, t->ucode);
    else
        snprintf(buf, size, "bl %u, tee %u, snp %u, ucode %u", t->bl, t->tee, t->snp, t->ucode);
}

static json_t *tcb_json(const snp_tcb *t, product_id prod)
{
    char raw[24];
    snprintf(raw, sizeof(raw), "0x%016llx", (unsigned long long)t->raw);
    json_t *o =
        json_pack("{s:s,s:i,s:i,s:i,s:i}", "raw", raw, "bootloader", (json_int_t)t->bl, "tee",
                  (json_int_t)t->tee, "snp", (json_int_t)t->snp, "microcode", (json_int_t)t->ucode);
    if (prod == PRODUCT_TURIN)
        json_object_set_new(o, "fmc", json_integer(t->fmc));
    return o;
}

/* ---- certificates from collateral and the certificate table ---- */

typedef struct {
    STACK_OF(X509) * vcek, *vlek, *ask, *asvk, *ark;
    STACK_OF(X509_CRL) * crls;
} cert_set;

static void cert_set_free(cert_set *s)
{
    sk_X509_pop_free(s->vcek, X509_free);
    sk_X509_pop_free(s->vlek, X509_free);
    sk_X509_pop_free(s->ask, X509_free);
    sk_X509_pop_free(s->asvk, X509_free);
    sk_X509_pop_free(s->ark, X509_free);
    sk_X509_CRL_pop_free(s->crls, X509_CRL_free);
}

static bool has_prefix(const char *s, const char *p)
{
    return s && strncmp(s, p, strlen(p)) == 0;
}

static void push(STACK_OF(X509) * *s, X509 *c)
{
    if (!*s)
        *s = sk_X509_new_null();
    if (!*s)
        abort();
    sk_X509_push(*s, c);
}

/* Sort certificates by what they are (their contents, not file names). */
static void classify(cert_set *set, STACK_OF(X509) * certs)
{
    X509 *c;
    while ((c = sk_X509_shift(certs)) != NULL) {
        EVP_PKEY *pk = X509_get0_pubkey(c);
        _cleanup_free_ char *cn = x509_subject_cn(c);
        _cleanup_free_ char *icn = x509_issuer_cn(c);
        if (X509_check_ca(c) == 0 && pk && EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
            push(has_prefix(icn, "SEV-VLEK-") ? &set->vlek : &set->vcek, c);
        } else if (has_prefix(cn, "ARK-")) {
            push(&set->ark, c);
        } else if (has_prefix(cn, "SEV-VLEK-")) {
            push(&set->asvk, c);
        } else if (has_prefix(cn, "SEV-")) {
            push(&set->ask, c);
        } else {
            log_info("SNP collateral: ignoring certificate CN=%s", cn ? cn : "?");
            X509_free(c);
        }
    }
}

static int add_blob(cert_set *set, const char *name, const uint8_t *data, size_t size,
                    cista_error **err)
{
    _cleanup_x509_stack_ STACK_OF(X509) *certs = NULL;
    _cleanup_err_ cista_error *e1 = NULL;
    _cleanup_err_ cista_error *e2 = NULL;
    if (x509_certs_load(&certs, data, size, &e1) == 0) {
        classify(set, certs);
        return 0;
    }
    if (x509_crls_load(&set->crls, data, size, &e2) == 0)
        return 0;
    if (size && (data[0] == '-' || data[0] == 0x30))
        return err_set(err, EV_E_FORMAT, "SNP collateral %s: neither a certificate nor a CRL (%s)",
                       name, e1 ? e1->msg : "?");
    log_info("SNP collateral: ignoring %s (neither a certificate nor a CRL)", name);
    return 0;
}

/* GHCB certificate table GUIDs, in the table's byte order. */
static const struct {
    uint8_t guid[16];
    const char *name;
} g_guids[] = {
    {{0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
      0xcd},
     "VCEK"},
    {{0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
      0xa1},
     "VLEK"},
    {{0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7,
      0x82},
     "ASK"},
    {{0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0,
      0xae},
     "ARK"},
};

static int add_cert_table(cert_set *set, const uint8_t *aux, size_t size, cista_error **err)
{
    for (size_t i = 0;; i++) {
        size_t off = i * 24;
        if (i == CERT_TABLE_MAX_ENTRIES)
            return err_set(err, EV_E_FORMAT, "SNP certificate table: more than %d entries",
                           CERT_TABLE_MAX_ENTRIES);
        if (off + 24 > size)
            return err_set(err, EV_E_FORMAT,
                           "SNP certificate table: entry %zu runs past the end (%zu bytes) "
                           "without the all-zero terminator",
                           i, size);
        const uint8_t *e = aux + off;
        if (ev__all_zero(e, 24))
            return 0;
        uint32_t co = ev__le32(e + 16), cl = ev__le32(e + 20);
        if ((uint64_t)co + cl > size || cl == 0)
            return err_set(err, EV_E_FORMAT,
                           "SNP certificate table: entry %zu (offset %u, length %u) is outside "
                           "the %zu-byte table",
                           i, co, cl, size);
        const char *name = NULL;
        for (size_t g = 0; g < ARRAY_LEN(g_guids); g++)
            if (memcmp(e, g_guids[g].guid, 16) == 0)
                name = g_guids[g].name;
        if (!name) {
            log_debug("SNP certificate table: skipping entry %zu with an unknown GUID", i);
            continue;
        }
        int r = add_blob(set, name, aux + co, cl, err);
        if (r < 0)
            return err_wrap(err, "SNP certificate table entry %zu (%s)", i, name);
    }
}

static int load_embedded(X509 **out, const char *pem, cista_error **err)
{
    return ev__cert_embedded(out, pem, err);
}

/* ---- claims ---- */

static json_t *build_claims(const snp_report *r, product_id prod, STACK_OF(X509) * chain,
                            int leaf_kind)
{
    json_t *c = ev__claims_new("snp", false);
    bool debug = (r->policy & POLICY_DEBUG) != 0;
    json_object_set_new(c, "debug", json_boolean(debug));
    json_object_set_new(c, "measurements",
                        json_pack("{s:o}", "measurement", ev__json_hex(r->measurement, 48)));
    json_object_set_new(c, "host_data", ev__json_hex(r->host_data, 32));
    json_object_set_new(c, "report_data", ev__json_hex(r->report_data, 64));
    json_object_set_new(c, "platform_id", ev__json_hex(r->chip_id, 64));
    snp_tcb rep = tcb_decode(r->reported_tcb, prod);
    json_t *comp = tcb_json(&rep, prod);
    json_object_del(comp, "raw");
    json_object_set_new(c, "tcb", json_pack("{s:s,s:o}", "status", "Unknown", "components", comp));

    json_t *signers = json_array();
    const char *roles[] = {leaf_kind == SNP_KEY_VLEK ? "vlek" : "vcek",
                           leaf_kind == SNP_KEY_VLEK ? "asvk" : "ask", "ark"};
    for (int i = 0; i < sk_X509_num(chain) && i < 3; i++)
        json_array_append_new(signers, ev__cert_json(roles[i], sk_X509_value(chain, i), i == 2));
    json_object_set_new(c, "signers", signers);

    char pol[24], pi[24];
    snprintf(pol, sizeof(pol), "0x%016llx", (unsigned long long)r->policy);
    snprintf(pi, sizeof(pi), "0x%016llx", (unsigned long long)r->platform_info);
    json_t *policy = json_pack(
        "{s:s,s:i,s:i,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:b}", "raw", pol, "abi_major",
        (json_int_t)((r->policy >> 8) & 0xff), "abi_minor", (json_int_t)(r->policy & 0xff), "smt",
        (r->policy & POLICY_SMT) != 0, "migrate_ma", (r->policy & POLICY_MIGRATE_MA) != 0, "debug",
        debug, "single_socket", (r->policy & POLICY_SINGLE_SOCKET) != 0, "cxl_allow",
        (r->policy & POLICY_CXL_ALLOW) != 0, "mem_aes_256_xts",
        (r->policy & POLICY_MEM_AES_256_XTS) != 0, "rapl_dis", (r->policy & POLICY_RAPL_DIS) != 0,
        "ciphertext_hiding", (r->policy & POLICY_CIPHERTEXT_HIDING) != 0, "page_swap_disable",
        (r->policy & POLICY_PAGE_SWAP_DISABLE) != 0);
    uint64_t p = r->platform_info;
    json_t *pinfo =
        json_pack("{s:s,s:b,s:b,s:b,s:b,s:b,s:b,s:b}", "raw", pi, "smt_enabled", (p & 1) != 0,
                  "tsme_enabled", (p & 2) != 0, "ecc_enabled", (p & 4) != 0, "rapl_disabled",
                  (p & 8) != 0, "ciphertext_hiding_enabled", (p & 16) != 0, "alias_check_complete",
                  (p & 32) != 0, "tio_enabled", (p & 128) != 0);
    snp_tcb cur = tcb_decode(r->current_tcb, prod), com = tcb_decode(r->committed_tcb, prod),
            lau = tcb_decode(r->launch_tcb, prod);
    char fw_cur[16], fw_com[16];
    snprintf(fw_cur, sizeof(fw_cur), "%u.%u.%u", r->cur_ver[2], r->cur_ver[1], r->cur_ver[0]);
    snprintf(fw_com, sizeof(fw_com), "%u.%u.%u", r->com_ver[2], r->com_ver[1], r->com_ver[0]);
    json_t *snp = json_object();
    json_object_set_new(snp, "version", json_integer(r->version));
    json_object_set_new(snp, "product",
                        json_string(prod >= 0 ? ev__snp_products[prod].name : "unknown"));
    json_object_set_new(snp, "guest_svn", json_integer(r->guest_svn));
    json_object_set_new(snp, "policy", policy);
    json_object_set_new(snp, "vmpl", json_integer(r->vmpl));
    json_object_set_new(snp, "signing_key",
                        json_string(leaf_kind == SNP_KEY_VLEK ? "vlek" : "vcek"));
    json_object_set_new(snp, "author_key_en", json_boolean(r->author_key_en));
    json_object_set_new(snp, "mask_chip_id", json_boolean(r->mask_chip_id));
    json_object_set_new(snp, "family_id", ev__json_hex(r->family_id, 16));
    json_object_set_new(snp, "image_id", ev__json_hex(r->image_id, 16));
    json_object_set_new(snp, "id_key_digest", ev__json_hex(r->id_key_digest, 48));
    json_object_set_new(snp, "author_key_digest", ev__json_hex(r->author_key_digest, 48));
    json_object_set_new(snp, "report_id", ev__json_hex(r->report_id, 32));
    json_object_set_new(snp, "report_id_ma", ev__json_hex(r->report_id_ma, 32));
    json_object_set_new(snp, "chip_id", ev__json_hex(r->chip_id, 64));
    json_object_set_new(snp, "platform_info", pinfo);
    json_object_set_new(snp, "reported_tcb", tcb_json(&rep, prod));
    json_object_set_new(snp, "current_tcb", tcb_json(&cur, prod));
    json_object_set_new(snp, "committed_tcb", tcb_json(&com, prod));
    json_object_set_new(snp, "launch_tcb", tcb_json(&lau, prod));
    json_object_set_new(snp, "current_firmware", json_string(fw_cur));
    json_object_set_new(snp, "committed_firmware", json_string(fw_com));
    if (r->version >= 3)
        json_object_set_new(snp, "cpuid",
                            json_pack("{s:i,s:i,s:i}", "family", (json_int_t)r->cpuid_fam, "model",
                                      (json_int_t)r->cpuid_mod, "stepping",
                                      (json_int_t)r->cpuid_step));
    if (r->version >= 5) {
        json_object_set_new(snp, "launch_mit_vector", json_integer((json_int_t)r->launch_mit));
        json_object_set_new(snp, "current_mit_vector", json_integer((json_int_t)r->current_mit));
    }
    json_object_set_new(c, "snp", snp);
    return c;
}

/* ---- verification ---- */

/* The VCEK/VLEK TCB extensions. */
static int cert_tcb(snp_tcb *out, X509 *leaf, product_id prod, cista_error **err)
{
    static const struct {
        const char *oid, *name;
        size_t field;
    } exts[] = {
        {OID_BL_SPL, "blSPL", offsetof(snp_tcb, bl)},
        {OID_TEE_SPL, "teeSPL", offsetof(snp_tcb, tee)},
        {OID_SNP_SPL, "snpSPL", offsetof(snp_tcb, snp)},
        {OID_UCODE_SPL, "ucodeSPL", offsetof(snp_tcb, ucode)},
        {OID_FMC_SPL, "fmcSPL", offsetof(snp_tcb, fmc)},
    };
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < ARRAY_LEN(exts); i++) {
        if (exts[i].field == offsetof(snp_tcb, fmc) && prod != PRODUCT_TURIN)
            continue;
        int64_t v = 0;
        int r = x509_ext_int(&v, leaf, exts[i].oid, err);
        if (r == -ENOENT)
            return err_set(err, EV_E_FORMAT, "SNP %s certificate lacks the %s extension (%s)",
                           "leaf", exts[i].name, exts[i].oid);
        if (r < 0)
            return err_wrap(err, "SNP leaf certificate %s", exts[i].name);
        if (v > 255)
            return err_set(err, EV_E_FORMAT, "SNP leaf certificate: %s = %lld is above 255",
                           exts[i].name, (long long)v);
        *((uint8_t *)out + exts[i].field) = (uint8_t)v;
    }
    return 0;
}

static bool tcb_eq(const snp_tcb *a, const snp_tcb *b, product_id prod)
{
    return a->bl == b->bl && a->tee == b->tee && a->snp == b->snp && a->ucode == b->ucode &&
           (prod != PRODUCT_TURIN || a->fmc == b->fmc);
}

/* 1 = match, 0 = mismatch, -1 = the certificate has no hwID (VLEK). */
static int hwid_match(X509 *leaf, const snp_report *r, product_id prod, char **out_hwid)
{
    const uint8_t *v = NULL;
    size_t n = 0;
    if (x509_ext_raw(&v, &n, leaf, OID_HWID, NULL) < 0)
        return -1;
    *out_hwid = hex_encode(v, n);
    if (prod == PRODUCT_TURIN && n == 8)
        return memcmp(v, r->chip_id, 8) == 0;
    return n == SNP_CHIP_ID_SIZE && memcmp(v, r->chip_id, SNP_CHIP_ID_SIZE) == 0;
}

static int snp_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                      size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    snp_report rep;
    int r = parse_report(&rep, ev, size, err);
    if (r < 0)
        return r;

    __attribute__((cleanup(cert_set_free))) cert_set set = {0};
    if (aux && aux_size) {
        r = add_cert_table(&set, aux, aux_size, err);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < ev_collateral_count(opts->collateral); i++) {
        const char *name;
        const uint8_t *data;
        size_t dsize;
        ev_collateral_get(opts->collateral, i, &name, &data, &dsize);
        STACK_OF(X509) *parsed = ev__collateral_certs(opts->collateral, i);
        if (parsed) { /* parsed when added: classify new references */
            STACK_OF(X509) *refs = X509_chain_up_ref(parsed);
            if (!refs)
                abort();
            classify(&set, refs);
            sk_X509_free(refs);
            continue;
        }
        r = add_blob(&set, name, data, dsize, err);
        if (r < 0)
            return r;
    }

    /* The leaf the report names. */
    STACK_OF(X509) *leaves = rep.signing_key == SNP_KEY_VLEK ? set.vlek : set.vcek;
    STACK_OF(X509) *other = rep.signing_key == SNP_KEY_VLEK ? set.vcek : set.vlek;
    if (sk_X509_num(leaves) <= 0) {
        if (sk_X509_num(other) > 0)
            return err_set(err, EV_E_NOKEY,
                           "SNP report says it is signed by the %s (signing_key=%d) but only a "
                           "%s was given; VCEK and VLEK are not interchangeable (or the "
                           "signing_key field was modified)",
                           key_name(rep.signing_key), rep.signing_key,
                           key_name(rep.signing_key == SNP_KEY_VLEK ? SNP_KEY_VCEK : SNP_KEY_VLEK));
        return err_set(err, EV_E_NOKEY,
                       "SNP report is signed by a %s, but none was given: pass it in the "
                       "collateral directory or the certificate table (AMD KDS /%s/v1/...)",
                       key_name(rep.signing_key),
                       rep.signing_key == SNP_KEY_VLEK ? "vlek" : "vcek");
    }
    X509 *leaf = sk_X509_value(leaves, 0);
    for (int i = 0; i < sk_X509_num(leaves); i++) { /* prefer the one for this chip */
        _cleanup_free_ char *h = NULL;
        if (hwid_match(sk_X509_value(leaves, i), &rep, PRODUCT_UNKNOWN, &h) == 1) {
            leaf = sk_X509_value(leaves, i);
            break;
        }
    }

    /* Product line: CPUID (v3+) and the leaf issuer must agree. */
    _cleanup_free_ char *icn = x509_issuer_cn(leaf);
    const char *want_issuer_prefix = rep.signing_key == SNP_KEY_VLEK ? "SEV-VLEK-" : "SEV-";
    product_id by_cert = PRODUCT_UNKNOWN;
    for (int i = 0; i < SNP_PRODUCT_COUNT; i++) {
        _cleanup_free_ char *want = xasprintf("%s%s", want_issuer_prefix, ev__snp_products[i].name);
        if (icn && strcmp(icn, want) == 0)
            by_cert = (product_id)i;
    }
    if (by_cert == PRODUCT_UNKNOWN)
        return err_set(err, EV_E_CHAIN,
                       "SNP %s issuer CN=%s is not an AMD %s<product> key (Milan, Genoa, Turin)",
                       key_name(rep.signing_key), icn ? icn : "?", want_issuer_prefix);
    product_id by_cpuid = product_from_cpuid(&rep);
    if (by_cpuid != PRODUCT_UNKNOWN && by_cpuid != by_cert)
        return err_set(err, EV_E_CHAIN,
                       "SNP report CPUID (family 0x%02x model 0x%02x) is a %s, but the %s was "
                       "issued for %s",
                       rep.cpuid_fam, rep.cpuid_mod, ev__snp_products[by_cpuid].name,
                       key_name(rep.signing_key), ev__snp_products[by_cert].name);
    product_id prod = by_cert;
    const snp_product *pp = &ev__snp_products[prod];

    /* Roots: only the pinned ARK; an ARK handed in must be that same one. */
    _cleanup_x509_ X509 *ark = NULL;
    r = load_embedded(&ark, pp->ark_pem, err);
    if (r < 0)
        return err_wrap(err, "built-in ARK-%s", pp->name);
    uint8_t fp[32];
    r = x509_cert_sha256(fp, ark, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *fp_hex = hex_encode(fp, 32);
    if (strcmp(fp_hex, pp->ark_sha256_hex) != 0)
        return err_set(err, EV_E_CHAIN, "built-in ARK-%s does not match its pin", pp->name);
    for (int i = 0; i < sk_X509_num(set.ark); i++) {
        X509 *a = sk_X509_value(set.ark, i);
        _cleanup_free_ char *cn = x509_subject_cn(a);
        _cleanup_free_ char *want = xasprintf("ARK-%s", pp->name);
        if (!cn || strcmp(cn, want) != 0)
            continue;
        uint8_t afp[32];
        r = x509_cert_sha256(afp, a, err);
        if (r < 0)
            return r;
        if (memcmp(afp, fp, 32) != 0) {
            _cleanup_free_ char *got = hex_encode(afp, 32);
            return err_set(err, EV_E_CHAIN,
                           "the ARK-%s given with the evidence is not the pinned AMD root: "
                           "SHA-256 %s, expected %s",
                           pp->name, got, pp->ark_sha256_hex);
        }
    }
    _cleanup_x509_stack_ STACK_OF(X509) *roots = sk_X509_new_null();
    _cleanup_x509_stack_ STACK_OF(X509) *inter = sk_X509_new_null();
    if (!roots || !inter)
        abort();
    sk_X509_push(roots, steal_ptr(&ark));

    /* Intermediates: the ASK/ASVK given for this product, else the built-in one. */
    STACK_OF(X509) *given = rep.signing_key == SNP_KEY_VLEK ? set.asvk : set.ask;
    _cleanup_free_ char *want_ca = xasprintf("%s%s", want_issuer_prefix, pp->name);
    for (int i = 0; i < sk_X509_num(given); i++) {
        _cleanup_free_ char *cn = x509_subject_cn(sk_X509_value(given, i));
        if (cn && strcmp(cn, want_ca) == 0) {
            X509_up_ref(sk_X509_value(given, i));
            sk_X509_push(inter, sk_X509_value(given, i));
        }
    }
    if (sk_X509_num(inter) == 0) {
        X509 *ca = NULL;
        r = load_embedded(&ca, rep.signing_key == SNP_KEY_VLEK ? pp->asvk_pem : pp->ask_pem, err);
        if (r < 0)
            return err_wrap(err, "built-in %s", want_ca);
        sk_X509_push(inter, ca);
    }

    x509_verify_opts xo = {.at = opts->now, .crls = set.crls, .crl_mode = X509_CRL_AVAILABLE};
    _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
    /* A chain verified before (no CRLs given) is taken from the caller's cache. */
    ev_chain_cache *cache = set.crls ? NULL : opts->chain_cache;
    _cleanup_free_ char *scope = xasprintf("snp/%s/%s", pp->name, key_name(rep.signing_key));
    if (!ev__chain_cache_get(&chain, cache, scope, leaf, opts->now)) {
        r = x509_verify_chain(&chain, leaf, inter, roots, &xo, err);
        if (r < 0)
            return err_wrap(err, "SNP %s certificate chain (%s -> %s -> ARK-%s)",
                            key_name(rep.signing_key), key_name(rep.signing_key), want_ca,
                            pp->name);
        ev__chain_cache_put(cache, scope, leaf, chain);
    }
    if (sk_X509_num(chain) != 3)
        return err_set(err, EV_E_CHAIN, "SNP %s chain has %d certificates, expected 3",
                       key_name(rep.signing_key), sk_X509_num(chain));

    /* TCB and hwID from the leaf's extensions. */
    snp_tcb want_tcb;
    r = cert_tcb(&want_tcb, leaf, prod, err);
    if (r < 0)
        return r;
    snp_tcb got_tcb = tcb_decode(rep.reported_tcb, prod);
    _cleanup_free_ char *hwid = NULL;
    int hw = hwid_match(leaf, &rep, prod, &hwid);
    if (rep.signing_key == SNP_KEY_VCEK && hw < 0)
        return err_set(err, EV_E_FORMAT, "SNP VCEK lacks the hwID extension (%s)", OID_HWID);
    bool chip_ok = hw != 0 || rep.mask_chip_id;
    bool tcb_ok = tcb_eq(&want_tcb, &got_tcb, prod);
    char tw[96], tg[96];
    tcb_str(tw, sizeof(tw), &want_tcb, prod);
    tcb_str(tg, sizeof(tg), &got_tcb, prod);
    _cleanup_free_ char *chip_hex = hex_encode(rep.chip_id, prod == PRODUCT_TURIN ? 8 : 64);

    /* The signature over bytes 0x000-0x29F. */
    EVP_PKEY *pub = X509_get0_pubkey(leaf);
    if (!pub || !crypto_key_ec_crv(pub) || strcmp(crypto_key_ec_crv(pub), "P-384") != 0)
        return err_set(err, EV_E_VERSION, "SNP %s key is not an ECDSA P-384 key",
                       key_name(rep.signing_key));
    r = x509_ecdsa_verify_raw(pub, "SHA384", ev, SNP_SIGNED_SIZE, ev + SNP_OFF_SIGNATURE,
                              ev + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
                              X509_LITTLE_ENDIAN, err);
    if (r < 0 && r != -EBADMSG)
        return err_wrap(err, "SNP report signature");
    bool sig_ok = r == 0;
    err_clear(err);
    if (!chip_ok)
        return err_set(err, EV_E_PLATFORM,
                       "SNP report chip_id %s does not match the VCEK hwID %s: the VCEK belongs "
                       "to another chip%s",
                       chip_hex, hwid ? hwid : "?",
                       sig_ok ? "" : " (or chip_id was modified; the signature does not verify)");
    if (!tcb_ok)
        return err_set(err, EV_E_TCB,
                       "SNP REPORTED_TCB (%s) differs from the %s's TCB (%s): fetch the %s for "
                       "this TCB from AMD KDS%s",
                       tg, key_name(rep.signing_key), tw, key_name(rep.signing_key),
                       sig_ok ? ""
                              : " (or REPORTED_TCB was modified; the signature does not verify)");
    if (!sig_ok)
        return err_set(err, EV_E_SIGNATURE,
                       "SNP report signature by the %s (chip_id %.16s..., %s) does not verify over "
                       "bytes 0x000-0x29F: the report was modified or the %s belongs to another "
                       "platform",
                       key_name(rep.signing_key), chip_hex, tg, key_name(rep.signing_key));

    /* Bindings and optional constraints. */
    r = ev__check_report_data(opts->report_data, rep.report_data, "SNP", "evidence", err);
    if (r < 0)
        return r;
    if (opts->forbid_debug && (rep.policy & POLICY_DEBUG))
        return err_set(err, EV_E_POLICY,
                       "SNP guest policy 0x%016llx allows DEBUG (bit 19): the hypervisor can "
                       "read and modify guest memory; refused by the caller's constraints",
                       (unsigned long long)rep.policy);
    if (opts->vmpl >= 0 && rep.vmpl != (uint32_t)opts->vmpl)
        return err_set(err, EV_E_POLICY, "SNP report VMPL is %u, expected %d", rep.vmpl,
                       opts->vmpl);

    *out = build_claims(&rep, prod, chain, rep.signing_key);
    return 0;
}

static bool snp_detect(const uint8_t *ev, size_t size)
{
    if (size != SNP_REPORT_SIZE)
        return false;
    uint32_t v = ev__le32(ev + SNP_OFF_VERSION);
    return v >= 2 && v <= 5 && ev__le32(ev + SNP_OFF_SIG_ALGO) == 1;
}

/* ---- get ---- */

static int dev_get(uint8_t **out, size_t *out_size, uint8_t **aux, size_t *aux_size,
                   const uint8_t report_data[EV_REPORT_DATA_SIZE], const ev_get_opts *opts,
                   cista_error **err)
{
    const char *dev =
        opts && opts->sev_guest_dev ? opts->sev_guest_dev : getenv("CISTA_SEV_GUEST_DEV");
    if (!dev || !*dev)
        dev = "/dev/sev-guest";
    _cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return err_set(err, EV_E_NOTEE,
                           "SEV-SNP is not available: neither configfs-tsm nor %s exists", dev);
        return err_set_sys(err, -errno, "opening %s", dev);
    }
    struct snp_ext_report_req req;
    struct snp_report_resp resp;
    memset(&req, 0, sizeof(req));
    memcpy(req.data.user_data, report_data, EV_REPORT_DATA_SIZE);
    req.data.vmpl = opts && opts->privlevel >= 0 ? (uint32_t)opts->privlevel : 0;
    size_t certs_len = 4 * 4096;
    _cleanup_free_ uint8_t *certs = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(certs);
        certs = xzalloc(certs_len);
        memset(&resp, 0, sizeof(resp));
        req.certs_address = (uint64_t)(uintptr_t)certs;
        req.certs_len = (uint32_t)certs_len;
        struct snp_guest_request_ioctl io = {.msg_version = 1,
                                             .req_data = (uint64_t)(uintptr_t)&req,
                                             .resp_data = (uint64_t)(uintptr_t)&resp};
        if (ioctl(fd, SNP_GET_EXT_REPORT, &io) == 0)
            break;
        int e = errno;
        /* vmm_error 1 (SNP_GUEST_VMM_ERR_INVALID_LEN): certs_len now holds the size needed. */
        if (attempt == 0 && io.vmm_error == 1 && req.certs_len > certs_len &&
            req.certs_len <= EXT_CERTS_MAX) {
            certs_len = req.certs_len;
            continue;
        }
        return err_set(err, -e,
                       "SNP_GET_EXT_REPORT on %s failed: %s (fw_error 0x%x, "
                       "vmm_error 0x%x)",
                       dev, strerror(e), io.fw_error, io.vmm_error);
    }
    uint32_t status = ev__le32(resp.data), rsize = ev__le32(resp.data + 4);
    if (status != 0)
        return err_set(err, -EIO, "SNP firmware returned status 0x%x for the report request",
                       status);
    if (rsize != SNP_REPORT_SIZE)
        return err_set(err, -EPROTO, "SNP firmware returned a %u-byte report, expected %u", rsize,
                       SNP_REPORT_SIZE);
    *out = xmalloc(SNP_REPORT_SIZE);
    memcpy(*out, resp.data + 0x20, SNP_REPORT_SIZE);
    *out_size = SNP_REPORT_SIZE;
    *aux = steal_ptr(&certs);
    *aux_size = certs_len;
    return 0;
}

static int snp_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                   size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                   const ev_get_opts *opts, cista_error **err)
{
    log_info("SNP: requesting an attestation report (hardware paths are untested on hardware)");
    int r = ev__tsm_get(out_evidence, out_evidence_size, out_aux, out_aux_size, "sev_guest",
                        report_data, opts, err);
    if (r == -ENOENT) {
        err_clear(err);
        r = dev_get(out_evidence, out_evidence_size, out_aux, out_aux_size, report_data, opts, err);
    }
    if (r < 0)
        return r;
    if (*out_evidence_size != SNP_REPORT_SIZE) {
        free(*out_evidence);
        free(*out_aux);
        *out_evidence = *out_aux = NULL;
        return err_set(err, -EPROTO, "SNP: the TEE returned a %zu-byte report, expected %u",
                       *out_evidence_size, SNP_REPORT_SIZE);
    }
    return 0;
}

const ev_ops ev__snp_ops = {
    .name = "snp",
    .description = "AMD SEV-SNP attestation report (VCEK/VLEK chain to the pinned AMD ARK)",
    .insecure = false,
    .get = snp_get,
    .verify = snp_verify,
    .detect = snp_detect,
};
