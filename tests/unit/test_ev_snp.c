/*
 * test_ev_snp.c - every SEV-SNP sample of ../shared/testdata/evidence/sev-snp
 * verifies (or fails) as its README row says, with the README's field values
 * asserted and "now" pinned; the tamper matrix; the certificate table;
 * get() through a directory that plays configfs-tsm.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_helpers.h"

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define SNP "../shared/testdata/evidence/sev-snp/"
#define VC "../shared/testdata/evidence/vendor-certs/"

#define T2025_06 ((time_t)1748736000) /* 2025-06-01T00:00:00Z */
#define T2026_01 ((time_t)1767225600) /* 2026-01-01T00:00:00Z */
#define T2026_06 ((time_t)1780272000) /* 2026-06-01T00:00:00Z */
#define T2026_11 ((time_t)1793491200) /* 2026-11-01T00:00:00Z */
#define T2030 ((time_t)1893456000)    /* 2030-01-01T00:00:00Z */

/* Verify @rep (bytes) with the files @paths as collateral at @now. */
static int verify_bytes(json_t **out, const uint8_t *rep, size_t size, const char *const *paths,
                        time_t now, const ev_verify_opts *extra, cista_error **err)
{
    _cleanup_collateral_ ev_collateral *c = coll(paths);
    ev_verify_opts o;
    if (extra)
        o = *extra;
    else
        ev_verify_opts_init(&o);
    o.now = now;
    o.collateral = c;
    json_t *claims = NULL;
    int r = ev_find("snp")->verify(&claims, rep, size, NULL, 0, &o, err);
    if (out)
        *out = claims;
    else
        json_decref(claims);
    if (r < 0 && err && *err)
        print_message("    -> %d %s\n", r, (*err)->msg);
    return r;
}

static int verify_file(json_t **out, const char *report, const char *const *paths, time_t now,
                       const ev_verify_opts *extra, cista_error **err)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(report, &n);
    return verify_bytes(out, rep, n, paths, now, extra, err);
}

static void assert_prefix_suffix(const char *s, const char *prefix, const char *suffix)
{
    assert_int_equal(strncmp(s, prefix, strlen(prefix)), 0);
    assert_string_equal(s + strlen(s) - strlen(suffix), suffix);
}

static void assert_tcb(const json_t *c, const char *which, int bl, int tee, int snp, int ucode)
{
    char p[64];
    snprintf(p, sizeof(p), "snp.%s.bootloader", which);
    assert_int_equal(int_at(c, p), bl);
    snprintf(p, sizeof(p), "snp.%s.tee", which);
    assert_int_equal(int_at(c, p), tee);
    snprintf(p, sizeof(p), "snp.%s.snp", which);
    assert_int_equal(int_at(c, p), snp);
    snprintf(p, sizeof(p), "snp.%s.microcode", which);
    assert_int_equal(int_at(c, p), ucode);
}

static const char *const g_zero64 =
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000";

/* ---- README rows ---- */

static void test_milan_v2_gosevguest(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "milan_v2_gosevguest_vcek.der", NULL};
    assert_int_equal(
        verify_file(&c, SNP "milan_v2_gosevguest_report.bin", col, T2025_06, NULL, &err), 0);
    assert_string_equal(str_at(c, "tee"), "snp");
    assert_false(bool_at(c, "insecure"));
    assert_true(bool_at(c, "debug"));
    assert_string_equal(str_at(c, "snp.policy.raw"), "0x00000000000b0000");
    assert_true(bool_at(c, "snp.policy.smt"));
    assert_true(bool_at(c, "snp.policy.debug"));
    assert_false(bool_at(c, "snp.policy.migrate_ma"));
    assert_int_equal(int_at(c, "snp.vmpl"), 0);
    assert_int_equal(int_at(c, "snp.guest_svn"), 0);
    assert_int_equal(int_at(c, "snp.version"), 2);
    assert_string_equal(str_at(c, "snp.signing_key"), "vcek");
    assert_string_equal(str_at(c, "snp.product"), "Milan");
    assert_string_equal(str_at(c, "report_data"), "0102030405000000000000000000000000000000000000"
                                                  "0000000000000000000000000000000000000000000000"
                                                  "000000000000000000000000000000000000");
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ec"
                        "e31a5a608eb0cf2e4872b01");
    assert_string_equal(str_at(c, "host_data"),
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_prefix_suffix(str_at(c, "platform_id"), "3ac3fe21e13fb0990eb28a80", "5d");
    assert_string_equal(str_at(c, "snp.chip_id"), str_at(c, "platform_id"));
    static const char *const tcbs[] = {"reported_tcb", "current_tcb", "committed_tcb",
                                       "launch_tcb"};
    for (size_t i = 0; i < ARRAY_LEN(tcbs); i++) {
        assert_tcb(c, tcbs[i], 2, 0, 5, 68);
        char p[48];
        snprintf(p, sizeof(p), "snp.%s.raw", tcbs[i]);
        assert_string_equal(str_at(c, p), "0x4405000000000002");
    }
    assert_int_equal(int_at(c, "tcb.components.microcode"), 68);
    assert_string_equal(str_at(c, "tcb.status"), "Unknown");
    assert_string_equal(str_at(c, "snp.current_firmware"), "1.49.3");
    assert_string_equal(str_at(c, "snp.report_id_ma"),
                        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    json_t *signers = json_object_get(c, "signers");
    assert_int_equal(json_array_size(signers), 3);
    assert_string_equal(str_at(json_array_get(signers, 0), "role"), "vcek");
    assert_string_equal(str_at(json_array_get(signers, 1), "role"), "ask");
    assert_string_equal(str_at(json_array_get(signers, 2), "role"), "ark");
    assert_string_equal(str_at(json_array_get(signers, 2), "sha256"),
                        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd");
    assert_true(bool_at(json_array_get(signers, 2), "pinned"));

    /* README: a policy that forbids debug must reject */
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.forbid_debug = true;
    assert_int_equal(
        verify_file(NULL, SNP "milan_v2_gosevguest_report.bin", col, T2025_06, &o, &err),
        EV_E_POLICY);
    assert_non_null(strstr(err->msg, "DEBUG"));
}

static void test_milan_v2_virtee(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "milan_v2_virtee_vcek.der", NULL};
    assert_int_equal(verify_file(&c, SNP "milan_v2_virtee_report.bin", col, T2025_06, NULL, &err),
                     0);
    assert_string_equal(str_at(c, "snp.policy.raw"), "0x0000000000030000");
    assert_false(bool_at(c, "debug"));
    assert_int_equal(int_at(c, "snp.vmpl"), 0);
    assert_string_equal(str_at(c, "report_data"),
                        "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfc"
                        "a0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd");
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39"
                        "b2c60bd95b9c480cd81841f");
    assert_prefix_suffix(str_at(c, "platform_id"), "d49554ec717f4e5b", "b6");
    assert_tcb(c, "reported_tcb", 3, 0, 8, 115);
    assert_string_equal(str_at(c, "snp.reported_tcb.raw"), "0x7308000000000003");
    assert_string_equal(str_at(c, "snp.current_firmware"), "1.52.4");

    /* expected report data: right, then wrong */
    uint8_t rd[64];
    _cleanup_err_ cista_error *e2 = NULL;
    assert_int_equal(hex_decode_to(rd, 64, str_at(c, "report_data"), &e2), 0);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.report_data = rd;
    assert_int_equal(verify_file(NULL, SNP "milan_v2_virtee_report.bin", col, T2025_06, &o, &err),
                     0);
    rd[63] ^= 1;
    assert_int_equal(verify_file(NULL, SNP "milan_v2_virtee_report.bin", col, T2025_06, &o, &err),
                     EV_E_REPORT_DATA);
    assert_non_null(strstr(err->msg, "expected"));
}

static void test_milan_v2_azure_idblock(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "milan_v2_azure_idblock_vcek.der", NULL};
    assert_int_equal(
        verify_file(&c, SNP "milan_v2_azure_idblock_report.bin", col, T2025_06, NULL, &err), 0);
    assert_int_equal(int_at(c, "snp.guest_svn"), 4);
    assert_string_equal(str_at(c, "snp.policy.raw"), "0x000000000003001f");
    assert_int_equal(int_at(c, "snp.policy.abi_major"), 0);
    assert_int_equal(int_at(c, "snp.policy.abi_minor"), 31);
    assert_true(bool_at(c, "snp.policy.smt"));
    assert_string_equal(str_at(c, "snp.family_id"), "01000000000000000000000000000000");
    assert_string_equal(str_at(c, "snp.image_id"), "02000000000000000000000000000000");
    assert_string_equal(str_at(c, "snp.id_key_digest"),
                        "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f33"
                        "6dc28a6e0b2bb57af7a44a3");
    assert_false(bool_at(c, "snp.author_key_en"));
    assert_string_equal(str_at(c, "report_data"),
                        "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2000000000"
                        "0000000000000000000000000000000000000000000000000000000");
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e"
                        "0e692e6be917f9050d3d38c");
    assert_prefix_suffix(str_at(c, "platform_id"), "c38427a30d4c7af9", "4e");
    /* the VCEK is compared with REPORTED_TCB, not CURRENT_TCB */
    assert_tcb(c, "reported_tcb", 3, 0, 8, 115);
    assert_tcb(c, "current_tcb", 3, 0, 8, 206);
}

static void test_milan_v3_aws_vlek(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "milan_v3_aws_vlek.der", NULL};
    assert_int_equal(verify_file(&c, SNP "milan_v3_aws_vlek_report.bin", col, T2025_06, NULL, &err),
                     0);
    assert_int_equal(int_at(c, "snp.version"), 3);
    assert_int_equal(int_at(c, "snp.vmpl"), 1);
    assert_string_equal(str_at(c, "snp.signing_key"), "vlek");
    assert_string_equal(str_at(c, "platform_id"), g_zero64);
    assert_string_equal(str_at(c, "snp.platform_info.raw"), "0x0000000000000027");
    assert_int_equal(int_at(c, "snp.cpuid.family"), 0x19);
    assert_int_equal(int_at(c, "snp.cpuid.model"), 0x01);
    assert_int_equal(int_at(c, "snp.cpuid.stepping"), 0x01);
    assert_tcb(c, "reported_tcb", 4, 0, 24, 217);
    assert_string_equal(str_at(c, "snp.reported_tcb.raw"), "0xd918000000000004");
    assert_tcb(c, "current_tcb", 4, 0, 24, 220);
    assert_tcb(c, "committed_tcb", 4, 0, 24, 219);
    assert_tcb(c, "launch_tcb", 4, 0, 24, 219);
    assert_prefix_suffix(str_at(c, "report_data"), "819770b7", "27ca");
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857"
                        "f5ceeb5a493df2a570d7bf0");
    assert_string_equal(str_at(c, "snp.current_firmware"), "1.55.29");
    json_t *signers = json_object_get(c, "signers");
    assert_string_equal(str_at(json_array_get(signers, 0), "role"), "vlek");
    assert_string_equal(str_at(json_array_get(signers, 1), "role"), "asvk");

    /* README: at the current time (after 2025-12-10) the VLEK is expired */
    assert_int_equal(
        verify_file(NULL, SNP "milan_v3_aws_vlek_report.bin", col, T2026_11, NULL, &err),
        EV_E_EXPIRED);
    assert_non_null(strstr(err->msg, "notAfter 2025-12-10"));
    err_clear(&err);

    /* optional VMPL constraint */
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.vmpl = 0;
    assert_int_equal(verify_file(NULL, SNP "milan_v3_aws_vlek_report.bin", col, T2025_06, &o, &err),
                     EV_E_POLICY);
    assert_non_null(strstr(err->msg, "VMPL is 1, expected 0"));
}

static void test_genoa_v3_trustee(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "genoa_v3_trustee_vcek.der", NULL};
    assert_int_equal(verify_file(&c, SNP "genoa_v3_trustee_report.bin", col, T2026_01, NULL, &err),
                     0);
    assert_string_equal(str_at(c, "snp.product"), "Genoa");
    assert_int_equal(int_at(c, "snp.version"), 3);
    assert_int_equal(int_at(c, "snp.cpuid.family"), 0x19);
    assert_int_equal(int_at(c, "snp.cpuid.model"), 0xA0);
    assert_int_equal(int_at(c, "snp.cpuid.stepping"), 0x02);
    assert_string_equal(str_at(c, "snp.policy.raw"), "0x0000000000030000");
    assert_int_equal(int_at(c, "snp.vmpl"), 0);
    assert_string_equal(str_at(c, "snp.platform_info.raw"), "0x0000000000000025");
    assert_tcb(c, "reported_tcb", 10, 0, 23, 25);
    assert_string_equal(str_at(c, "snp.reported_tcb.raw"), "0x191700000000000a");
    assert_string_equal(str_at(c, "report_data"),
                        "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff2"
                        "3c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0");
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d7"
                        "5c837974dd50b315506e73e");
    assert_prefix_suffix(str_at(c, "platform_id"), "371c55d6d15cb50f", "e8");
    assert_string_equal(str_at(c, "snp.current_firmware"), "1.55.40");
    json_t *signers = json_object_get(c, "signers");
    assert_string_equal(str_at(json_array_get(signers, 2), "sha256"),
                        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1");
}

static void test_milan_v5_gcp(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_json_ json_t *c = NULL;
    const char *const col[] = {SNP "milan_v5_gcp_vcek.der", NULL};
    assert_int_equal(verify_file(&c, SNP "milan_v5_gcp_report.bin", col, T2026_06, NULL, &err), 0);
    assert_int_equal(int_at(c, "snp.version"), 5);
    assert_int_equal(int_at(c, "snp.vmpl"), 0);
    assert_string_equal(str_at(c, "snp.policy.raw"), "0x0000000000030000");
    assert_string_equal(str_at(c, "report_data"), g_zero64);
    assert_string_equal(str_at(c, "measurements.measurement"),
                        "b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b"
                        "8ee600fd16a3708f58406f3");
    assert_prefix_suffix(str_at(c, "platform_id"), "980cf7b61876cb37", "61");
    assert_tcb(c, "reported_tcb", 4, 0, 27, 222);
    assert_string_equal(str_at(c, "snp.reported_tcb.raw"), "0xde1b000000000004");
    assert_string_equal(str_at(c, "snp.platform_info.raw"), "0x0000000000000025");
    assert_int_equal(int_at(c, "snp.cpuid.family"), 0x19);
    assert_int_equal(int_at(c, "snp.cpuid.model"), 0x01);
    assert_int_equal(int_at(c, "snp.launch_mit_vector"), 0xb);
    assert_int_equal(int_at(c, "snp.current_mit_vector"), 0xb);
    assert_string_equal(str_at(c, "snp.current_firmware"), "1.55.35");

    /* the x25519-bound report of the same VM: VMPL 1, report_data = SHA-512(nonce || pub) */
    json_decref(c);
    c = NULL;
    assert_int_equal(
        verify_file(&c, SNP "milan_v5_gcp_x25519_report.bin", col, T2026_06, NULL, &err), 0);
    assert_int_equal(int_at(c, "snp.vmpl"), 1);
    uint8_t bind[64], rd[64];
    assert_int_equal(
        hex_decode_to(bind, 32, "df82306ff38a9da023854af947d02a878cfab1b40a793823ff41dc51213b96aa",
                      &err),
        0);
    assert_int_equal(
        hex_decode_to(bind + 32, 32,
                      "03a8107030fabeac06b0df4ef865763918b5e2a9fa030e20025a4315dab4b2a6", &err),
        0);
    crypto_hash_oneshot(CRYPTO_SHA512, bind, 64, rd);
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.report_data = rd;
    assert_int_equal(
        verify_file(NULL, SNP "milan_v5_gcp_x25519_report.bin", col, T2026_06, &o, &err), 0);
    /* before the VCEK's notBefore (2025-12-05) */
    assert_int_equal(verify_file(NULL, SNP "milan_v5_gcp_report.bin", col, T2025_06, NULL, &err),
                     EV_E_EXPIRED);
    assert_non_null(strstr(err->msg, "not yet valid"));
}

static void test_badsig_vceks(void **state)
{
    (void)state;
    static const char *const bad[] = {SNP "milan_vcek_badsig_legacy.der",
                                      SNP "milan_vcek_badsig_new.der"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        _cleanup_err_ cista_error *err = NULL;
        const char *const col[] = {bad[i], NULL};
        assert_int_equal(
            verify_file(NULL, SNP "milan_v2_gosevguest_report.bin", col, T2025_06, NULL, &err),
            EV_E_CHAIN);
        assert_non_null(strstr(err->msg, "signature by issuer"));
        {
            _cleanup_free_ char *full = err_str(err);
            assert_non_null(strstr(full, "certificate chain"));
        }
    }
}

/* ---- tamper matrix ---- */

static void test_tamper_fields(void **state)
{
    (void)state;
    static const struct {
        size_t off;
        uint8_t mask;
        int code;
        const char *what;
    } flips[] = {
        {0x000, 0x80, EV_E_VERSION, "version"},
        {0x004, 0x01, EV_E_SIGNATURE, "guest_svn"},
        {0x008, 0x01, EV_E_SIGNATURE, "policy"},
        {0x00A, 0x04, EV_E_SIGNATURE, "policy migrate_ma"},
        {0x010, 0x01, EV_E_SIGNATURE, "family_id"},
        {0x020, 0x01, EV_E_SIGNATURE, "image_id"},
        {0x030, 0x01, EV_E_SIGNATURE, "vmpl"},
        {0x034, 0x02, EV_E_VERSION, "signature_algo"},
        {0x038, 0x01, EV_E_SIGNATURE, "current_tcb"},
        {0x040, 0x01, EV_E_SIGNATURE, "platform_info"},
        {0x048, 0x01, EV_E_SIGNATURE, "author_key_en"},
        {0x048, 0x04, EV_E_NOKEY, "signing_key (VCEK->VLEK)"},
        {0x048, 0x1c, EV_E_NOKEY, "signing_key (none)"},
        {0x048, 0x08, EV_E_FORMAT, "signing_key (reserved)"},
        {0x04B, 0x80, EV_E_FORMAT, "signer info MBZ"},
        {0x04C, 0x01, EV_E_FORMAT, "reserved 0x04C"},
        {0x050, 0x01, EV_E_SIGNATURE, "report_data"},
        {0x08F, 0x80, EV_E_SIGNATURE, "report_data end"},
        {0x090, 0x01, EV_E_SIGNATURE, "measurement"},
        {0x0C0, 0x01, EV_E_SIGNATURE, "host_data"},
        {0x0E0, 0x01, EV_E_SIGNATURE, "id_key_digest"},
        {0x110, 0x01, EV_E_SIGNATURE, "author_key_digest"},
        {0x140, 0x01, EV_E_SIGNATURE, "report_id"},
        {0x160, 0x01, EV_E_SIGNATURE, "report_id_ma"},
        {0x180, 0x01, EV_E_TCB, "reported_tcb"},
        {0x187, 0x01, EV_E_TCB, "reported_tcb ucode"},
        {0x188, 0x01, EV_E_FORMAT, "v2 reserved (cpuid)"},
        {0x1A0, 0x01, EV_E_PLATFORM, "chip_id"},
        {0x1DF, 0x01, EV_E_PLATFORM, "chip_id end"},
        {0x1E0, 0x01, EV_E_SIGNATURE, "committed_tcb"},
        {0x1E8, 0x01, EV_E_SIGNATURE, "current build"},
        {0x1EB, 0x01, EV_E_FORMAT, "current version reserved"},
        {0x1EC, 0x01, EV_E_SIGNATURE, "committed build"},
        {0x1F0, 0x01, EV_E_SIGNATURE, "launch_tcb"},
        {0x1F8, 0x01, EV_E_FORMAT, "v2 launch_mit (reserved)"},
        {0x250, 0x01, EV_E_FORMAT, "reserved before signature"},
        {0x2A0, 0x01, EV_E_SIGNATURE, "signature r"},
        {0x2D0, 0x01, EV_E_SIGNATURE, "signature r high"},
        {0x2E8, 0x01, EV_E_SIGNATURE, "signature s"},
        {0x300, 0x01, EV_E_SIGNATURE, "signature s zero extension"},
        {0x330, 0x01, EV_E_FORMAT, "signature tail"},
        {0x49F, 0x01, EV_E_FORMAT, "last byte"},
    };
    size_t n = 0;
    _cleanup_free_ uint8_t *orig = read_all(SNP "milan_v2_gosevguest_report.bin", &n);
    const char *const col[] = {SNP "milan_v2_gosevguest_vcek.der", NULL};
    for (size_t i = 0; i < ARRAY_LEN(flips); i++) {
        _cleanup_err_ cista_error *err = NULL;
        _cleanup_free_ uint8_t *rep = xmalloc(n);
        memcpy(rep, orig, n);
        rep[flips[i].off] ^= flips[i].mask;
        print_message("  flip %s at 0x%03zx\n", flips[i].what, flips[i].off);
        assert_int_equal(verify_bytes(NULL, rep, n, col, T2025_06, NULL, &err), flips[i].code);
    }
    /* the same checks on a v5 report, where 0x1F8.. carries the mitigation vectors */
    _cleanup_free_ uint8_t *v5 = read_all(SNP "milan_v5_gcp_report.bin", &n);
    const char *const col5[] = {SNP "milan_v5_gcp_vcek.der", NULL};
    static const struct {
        size_t off;
        int code;
    } v5flips[] = {{0x188, EV_E_SIGNATURE},
                   {0x18B, EV_E_FORMAT},
                   {0x1F8, EV_E_SIGNATURE},
                   {0x200, EV_E_SIGNATURE},
                   {0x208, EV_E_FORMAT}};
    for (size_t i = 0; i < ARRAY_LEN(v5flips); i++) {
        _cleanup_err_ cista_error *err = NULL;
        v5[v5flips[i].off] ^= 1;
        int r = verify_bytes(NULL, v5, n, col5, T2026_06, NULL, &err);
        v5[v5flips[i].off] ^= 1;
        if (v5flips[i].off == 0x188) /* CPUID family feeds the product check first */
            assert_true(r == EV_E_SIGNATURE || r == EV_E_CHAIN);
        else
            assert_int_equal(r, v5flips[i].code);
    }
}

static void test_tamper_messages(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v2_gosevguest_report.bin", &n);
    const char *const col[] = {SNP "milan_v2_gosevguest_vcek.der", NULL};
    _cleanup_err_ cista_error *err = NULL;

    rep[0x90] ^= 1;
    assert_int_equal(verify_bytes(NULL, rep, n, col, T2025_06, NULL, &err), EV_E_SIGNATURE);
    assert_non_null(strstr(err->msg, "signature by the VCEK"));
    assert_non_null(strstr(err->msg, "modified"));
    rep[0x90] ^= 1;
    err_clear(&err);

    rep[0x186] ^= 1; /* SNP SPL */
    assert_int_equal(verify_bytes(NULL, rep, n, col, T2025_06, NULL, &err), EV_E_TCB);
    assert_non_null(strstr(err->msg, "REPORTED_TCB (bl 2, tee 0, snp 4, ucode 68)"));
    assert_non_null(strstr(err->msg, "VCEK's TCB (bl 2, tee 0, snp 5, ucode 68)"));
    rep[0x186] ^= 1;
    err_clear(&err);

    /* unknown version 4 and 1 */
    rep[0] = 4;
    assert_int_equal(verify_bytes(NULL, rep, n, col, T2025_06, NULL, &err), EV_E_VERSION);
    assert_non_null(strstr(err->msg, "version 4 is not supported"));
    err_clear(&err);
    rep[0] = 1;
    assert_int_equal(verify_bytes(NULL, rep, n, col, T2025_06, NULL, &err), EV_E_VERSION);
    rep[0] = 2;
    err_clear(&err);

    /* truncated, padded, empty */
    assert_int_equal(verify_bytes(NULL, rep, n - 1, col, T2025_06, NULL, &err), EV_E_SIZE);
    assert_non_null(strstr(err->msg, "truncated"));
    err_clear(&err);
    _cleanup_free_ uint8_t *pad = xzalloc(n + 1);
    memcpy(pad, rep, n);
    assert_int_equal(verify_bytes(NULL, pad, n + 1, col, T2025_06, NULL, &err), EV_E_SIZE);
    assert_non_null(strstr(err->msg, "padded"));
    err_clear(&err);
    assert_int_equal(verify_bytes(NULL, rep, 0, col, T2025_06, NULL, &err), EV_E_SIZE);
    err_clear(&err);

    /* no certificate at all */
    assert_int_equal(verify_bytes(NULL, rep, n, NULL, T2025_06, NULL, &err), EV_E_NOKEY);
    assert_non_null(strstr(err->msg, "none was given"));
}

static void test_wrong_keys(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    /* VCEK of another chip */
    const char *const other[] = {SNP "milan_v2_virtee_vcek.der", NULL};
    assert_int_equal(
        verify_file(NULL, SNP "milan_v2_gosevguest_report.bin", other, T2025_06, NULL, &err),
        EV_E_PLATFORM);
    assert_non_null(strstr(err->msg, "another chip"));
    assert_non_null(strstr(err->msg, "3ac3fe21e13fb099"));
    err_clear(&err);

    /* VLEK report with only a VCEK, and the reverse */
    const char *const vcek[] = {SNP "milan_v2_virtee_vcek.der", NULL};
    assert_int_equal(
        verify_file(NULL, SNP "milan_v3_aws_vlek_report.bin", vcek, T2025_06, NULL, &err),
        EV_E_NOKEY);
    assert_non_null(strstr(err->msg, "signed by the VLEK (signing_key=1) but only a VCEK"));
    err_clear(&err);
    const char *const vlek[] = {SNP "milan_v3_aws_vlek.der", NULL};
    assert_int_equal(
        verify_file(NULL, SNP "milan_v2_virtee_report.bin", vlek, T2025_06, NULL, &err),
        EV_E_NOKEY);
    assert_non_null(strstr(err->msg, "only a VLEK"));
    err_clear(&err);

    /* Genoa report (CPUID says Genoa) with a Milan VCEK */
    assert_int_equal(
        verify_file(NULL, SNP "genoa_v3_trustee_report.bin", vcek, T2026_01, NULL, &err),
        EV_E_CHAIN);
    assert_non_null(strstr(err->msg, "CPUID"));
    err_clear(&err);

    /* expired at a given time */
    const char *const gsg[] = {SNP "milan_v2_gosevguest_vcek.der", NULL};
    assert_int_equal(
        verify_file(NULL, SNP "milan_v2_gosevguest_report.bin", gsg, T2030, NULL, &err),
        EV_E_EXPIRED);
    assert_non_null(strstr(err->msg, "notAfter 2029-09-24"));
}

/* A certificate named like an AMD one but signed by a key of ours. */
static X509 *forge(const char *subject_pem, const char *issuer_pem, EVP_PKEY *key)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *sp = read_all(subject_pem, &n);
    _cleanup_x509_ X509 *subj = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(x509_cert_load(&subj, sp, n, &err), 0);
    _cleanup_free_ uint8_t *ip = read_all(issuer_pem, &n);
    _cleanup_x509_ X509 *iss = NULL;
    assert_int_equal(x509_cert_load(&iss, ip, n, &err), 0);
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 77);
    X509_set_subject_name(c, X509_get_subject_name(subj));
    X509_set_issuer_name(c, X509_get_subject_name(iss));
    ASN1_TIME_set(X509_getm_notBefore(c), (time_t)1600000000);
    ASN1_TIME_set(X509_getm_notAfter(c), (time_t)2200000000);
    X509_set_pubkey(c, key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, c, c, NULL, NULL, 0);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(c, key, EVP_sha384()) > 0);
    return c;
}

static void add_cert(ev_collateral *c, const char *name, X509 *cert)
{
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(ev_collateral_add(c, name, der, (size_t)n, &err), 0);
    OPENSSL_free(der);
}

static void test_forged_cas(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_pkey_ EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-384", &err), 0);
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v2_gosevguest_report.bin", &n);
    const char *const vcek[] = {SNP "milan_v2_gosevguest_vcek.der", NULL};
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_06;
    json_t *claims = NULL;

    /* wrong ASK: named SEV-Milan, issued "by" ARK-Milan, signed by our key */
    _cleanup_x509_ X509 *ask = forge(VC "amd_milan_ask.pem", VC "amd_milan_ark.pem", k);
    _cleanup_collateral_ ev_collateral *c1 = coll(vcek);
    add_cert(c1, "ask.der", ask);
    o.collateral = c1;
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, NULL, 0, &o, &err), EV_E_CHAIN);
    assert_non_null(strstr(err->msg, "unknown issuer"));
    assert_non_null(strstr(err->msg, "CN = SEV-Milan"));
    err_clear(&err);

    /* an ARK that is not the pinned one */
    _cleanup_x509_ X509 *ark = forge(VC "amd_milan_ark.pem", VC "amd_milan_ark.pem", k);
    _cleanup_collateral_ ev_collateral *c2 = coll(vcek);
    add_cert(c2, "ark.der", ark);
    o.collateral = c2;
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, NULL, 0, &o, &err), EV_E_CHAIN);
    assert_non_null(strstr(err->msg, "not the pinned AMD root"));
    err_clear(&err);

    /* the real ASK/ARK given explicitly (the data/amd copies): accepted */
    const char *const full[] = {SNP "milan_v2_gosevguest_vcek.der", "data/amd/amd_milan_ask.pem",
                                "data/amd/amd_milan_ark.pem", NULL};
    assert_int_equal(
        verify_file(&claims, SNP "milan_v2_gosevguest_report.bin", full, T2025_06, NULL, &err), 0);
    json_decref(claims);

    /* a CRL claiming to be from ARK-Milan but signed by our key */
    _cleanup_x509_ X509 *real_ark = NULL;
    _cleanup_free_ uint8_t *ap = read_all("data/amd/amd_milan_ark.pem", &n);
    assert_int_equal(x509_cert_load(&real_ark, ap, n, &err), 0);
    X509_CRL *crl = X509_CRL_new();
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(real_ark));
    ASN1_TIME *t = ASN1_TIME_set(NULL, T2025_06 - 86400);
    X509_CRL_set1_lastUpdate(crl, t);
    ASN1_TIME_set(t, T2025_06 + 86400 * 30);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    assert_true(X509_CRL_sign(crl, k, EVP_sha384()) > 0);
    unsigned char *der = NULL;
    int dn = i2d_X509_CRL(crl, &der);
    X509_CRL_free(crl);
    _cleanup_collateral_ ev_collateral *c3 = coll(vcek);
    assert_int_equal(ev_collateral_add(c3, "crl", der, (size_t)dn, &err), 0);
    OPENSSL_free(der);
    o.collateral = c3;
    size_t rn = 0;
    _cleanup_free_ uint8_t *rep2 = read_all(SNP "milan_v2_gosevguest_report.bin", &rn);
    assert_int_equal(ev_find("snp")->verify(&claims, rep2, rn, NULL, 0, &o, &err), EV_E_CHAIN);
    assert_non_null(strstr(err->msg, "CRL signature"));
}

/* ---- certificate table (auxblob / SNP_GET_EXT_REPORT) ---- */

static const uint8_t g_vcek_guid[16] = {0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
                                        0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd};

static uint8_t *cert_table(size_t *out_size, const char *vcek_path)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *der = read_all(vcek_path, &n);
    size_t size = 2 * 24 + n;
    uint8_t *t = xzalloc(size);
    memcpy(t, g_vcek_guid, 16);
    uint32_t off = 48, len = (uint32_t)n;
    for (int i = 0; i < 4; i++) {
        t[16 + i] = (uint8_t)(off >> (8 * i));
        t[20 + i] = (uint8_t)(len >> (8 * i));
    }
    memcpy(t + 48, der, n);
    *out_size = size;
    return t;
}

static void test_cert_table(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0, tn = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v2_virtee_report.bin", &n);
    _cleanup_free_ uint8_t *tab = cert_table(&tn, SNP "milan_v2_virtee_vcek.der");
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_06;
    _cleanup_json_ json_t *claims = NULL;
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, tab, tn, &o, &err), 0);
    /* cut short: the entry points past the end */
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, tab, 30, &o, &err), EV_E_FORMAT);
    assert_non_null(strstr(err->msg, "outside"));
    err_clear(&err);
    /* an entry with an unknown GUID (skipped) and no terminator */
    uint8_t lone[24] = {0xee};
    lone[20] = 24;
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, lone, sizeof(lone), &o, &err),
                     EV_E_FORMAT);
    assert_non_null(strstr(err->msg, "terminator"));
    err_clear(&err);
    /* entry pointing outside */
    tab[21] = 0xff;
    assert_int_equal(ev_find("snp")->verify(&claims, rep, n, tab, tn, &o, &err), EV_E_FORMAT);
    assert_non_null(strstr(err->msg, "outside"));
}

/* ---- get() through a directory playing configfs-tsm ---- */

static void test_get_configfs_mimic(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    char tmpl[] = "/tmp/cista-tsm-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    size_t n = 0, tn = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v2_virtee_report.bin", &n);
    _cleanup_free_ uint8_t *tab = cert_table(&tn, SNP "milan_v2_virtee_vcek.der");
    tsm_mimic m = {.provider = "sev_guest\n",
                   .outblob = rep,
                   .outblob_size = n,
                   .auxblob = tab,
                   .auxblob_size = tn};
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.tsm_dir = tmpl;
    g.privlevel = 0;
    g.tsm_hook = kernel_part;
    g.tsm_hook_arg = &m;
    uint8_t rd[64];
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)i;
    uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    assert_int_equal(ev_find("snp")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), 0);
    assert_int_equal(ev_size, n);
    assert_memory_equal(ev, rep, n);
    assert_int_equal(aux_size, tn);
    /* what we wrote to the "kernel" */
    _cleanup_free_ char *inpath = xasprintf("%s/inblob", m.entry);
    size_t in_size = 0;
    _cleanup_free_ uint8_t *in = read_all(inpath, &in_size);
    assert_int_equal(in_size, 64);
    assert_memory_equal(in, rd, 64);
    _cleanup_free_ char *plpath = xasprintf("%s/privlevel", m.entry);
    size_t pl_size = 0;
    _cleanup_free_ uint8_t *pl = read_all(plpath, &pl_size);
    assert_memory_equal(pl, "0\n", 2);
    rm_entry(m.entry);

    /* the evidence and certificate table it returned verify */
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = T2025_06;
    _cleanup_json_ json_t *claims = NULL;
    assert_int_equal(ev_find("snp")->verify(&claims, ev, ev_size, aux, aux_size, &o, &err), 0);
    free(ev);
    free(aux);

    /* a TDX provider is not SNP */
    m.provider = "tdx_guest\n";
    assert_int_equal(ev_find("snp")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), EV_E_NOTEE);
    assert_non_null(strstr(err->msg, "tdx_guest"));
    err_clear(&err);
    rm_entry(m.entry);
    /* a short outblob */
    m.provider = "sev_guest";
    m.outblob_size = 100;
    assert_int_equal(ev_find("snp")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), -EPROTO);
    err_clear(&err);
    rm_entry(m.entry);
    assert_int_equal(rmdir(tmpl), 0);

    /* neither configfs-tsm nor /dev/sev-guest */
    g.tsm_dir = "/nonexistent/tsm/report";
    g.sev_guest_dev = "/nonexistent/sev-guest";
    assert_int_equal(ev_find("snp")->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err), EV_E_NOTEE);
}

static void test_registry(void **state)
{
    (void)state;
    assert_non_null(ev_find("snp"));
    assert_non_null(ev_find("sim"));
    assert_null(ev_find("tdx-nope"));
    size_t count = 0;
    const ev_ops *const *all = ev_list(&count);
    /* every kind has a verifier; only sim is insecure */
    assert_true(count >= 2);
    for (size_t i = 0; i < count; i++) {
        assert_non_null(all[i]->verify);
        assert_int_equal(all[i]->insecure, strcmp(all[i]->name, "sim") == 0);
    }
    size_t n = 0;
    _cleanup_free_ uint8_t *rep = read_all(SNP "milan_v5_gcp_report.bin", &n);
    assert_ptr_equal(ev_detect(rep, n), ev_find("snp"));
    assert_null(ev_detect(rep, n - 1));
    assert_false(ev_find("snp")->insecure);

    /* collateral from a directory: what a file is comes from its contents */
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_collateral_ ev_collateral *c = ev_collateral_new();
    assert_int_equal(ev_collateral_load_dir(c, "data/amd", &err), 0);
    assert_int_equal(ev_collateral_count(c), 9);
    assert_int_equal(ev_collateral_load_dir(c, "/nonexistent", &err), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_milan_v2_gosevguest),
        cmocka_unit_test(test_milan_v2_virtee),
        cmocka_unit_test(test_milan_v2_azure_idblock),
        cmocka_unit_test(test_milan_v3_aws_vlek),
        cmocka_unit_test(test_genoa_v3_trustee),
        cmocka_unit_test(test_milan_v5_gcp),
        cmocka_unit_test(test_badsig_vceks),
        cmocka_unit_test(test_tamper_fields),
        cmocka_unit_test(test_tamper_messages),
        cmocka_unit_test(test_wrong_keys),
        cmocka_unit_test(test_forged_cas),
        cmocka_unit_test(test_cert_table),
        cmocka_unit_test(test_get_configfs_mimic),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
