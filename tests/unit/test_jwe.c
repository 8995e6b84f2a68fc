/*
 * test_jwe.c - JWK and JWE against published vectors and real go-jose output.
 *
 * Vectors: RFC 7516 Appendix A.1 (RSA-OAEP + A256GCM), A.2 (RSA1_5 +
 * A128CBC-HS256) and A.3 (A128KW + A128CBC-HS256); RFC 7520 ("JOSE Cookbook")
 * §5.1, 5.4, 5.5, 5.6, 5.8, 5.9, 5.10, 5.11, 5.12 and 5.13; the RFC 7638 §3.1
 * thumbprint. Interop: the JWEs skopeo 1.9.3 (ocicrypt, go-jose) wrote into
 * ../shared/testdata/ocicrypt. Then the negative cases: wrong keys, tampering,
 * malformed and oversized input, header conflicts, off-curve ephemeral keys.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define OCI "../shared/testdata/ocicrypt/"

/* ---- helpers ---- */

static uint8_t *b64u(const char *s, size_t *size)
{
    uint8_t *out = NULL;
    assert_int_equal(b64url_decode(&out, size, s, strlen(s), NULL), 0);
    return out;
}

static char *b64u_enc(const void *p, size_t size)
{
    return b64url_encode(p, size);
}

static EVP_PKEY *jwk_key(const char *text)
{
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    int r = crypto_key_load(&k, text, strlen(text), false, &err);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        fail_msg("JWK: %s", m);
    }
    return k;
}

static EVP_PKEY *file_key(const char *path)
{
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    int r = crypto_key_load_file(&k, path, true, &err);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        fail_msg("%s: %s", path, m);
    }
    return k;
}

/* Decrypt; on failure the code is returned and the message goes to *msg when asked. */
static int dec(const char *jwe, const jwe_key *keys, size_t n, uint8_t **pt, size_t *pt_size,
               size_t *idx, char **msg)
{
    _cleanup_err_ cista_error *err = NULL;
    uint8_t *p = NULL;
    size_t ps = 0;
    int r = jwe_decrypt(&p, &ps, jwe, strlen(jwe), keys, n, idx, &err);
    if (r == 0) {
        assert_null(err);
        if (pt) {
            *pt = p;
            *pt_size = ps;
        } else {
            crypto_free_secret(p, ps);
        }
    } else {
        assert_non_null(err);
        assert_int_equal(err->code, r);
        if (msg)
            *msg = err_str(err);
    }
    return r;
}

static void expect_pt(const char *jwe, const jwe_key *keys, size_t n, const char *want,
                      size_t want_size)
{
    uint8_t *pt = NULL;
    size_t size = 0;
    char *msg = NULL;
    int r = dec(jwe, keys, n, &pt, &size, NULL, &msg);
    if (r < 0)
        fail_msg("decrypt: %d %s", r, msg);
    assert_int_equal(size, want_size);
    assert_memory_equal(pt, want, want_size);
    assert_int_equal(pt[size], 0); /* NUL-terminated for convenience */
    crypto_free_secret(pt, size);
}

static void expect_fail(const char *jwe, const jwe_key *keys, size_t n, int code,
                        const char *in_msg)
{
    _cleanup_free_ char *msg = NULL;
    int r = dec(jwe, keys, n, NULL, NULL, NULL, &msg);
    if (r != code)
        fail_msg("expected %d, got %d (%s)", code, r, msg ? msg : "success");
    if (in_msg && !strstr(msg, in_msg))
        fail_msg("message \"%s\" lacks \"%s\"", msg, in_msg);
}

/* Split a compact JWE into its five parts (new strings). */
static void split5(const char *jwe, char *parts[5])
{
    const char *p = jwe;
    for (int i = 0; i < 5; i++) {
        const char *dot = i < 4 ? strchr(p, '.') : p + strlen(p);
        assert_non_null(dot);
        parts[i] = xstrndup(p, (size_t)(dot - p));
        p = dot + 1;
    }
}

static void free5(char *parts[5])
{
    for (int i = 0; i < 5; i++)
        free(parts[i]);
}

/* The JSON text with member @key (a string) replaced, or removed when @value is NULL. */
static char *json_set(const char *text, const char *key, const char *value)
{
    json_t *doc = NULL;
    assert_int_equal(js_parse_object(&doc, text, strlen(text), JWE_MAX_SIZE, "test", NULL), 0);
    if (value)
        json_object_set_new(doc, key, json_string(value));
    else
        json_object_del(doc, key);
    char *out = js_dump_compact(doc);
    json_decref(doc);
    return out;
}

static char *json_get(const char *text, const char *key)
{
    json_t *doc = NULL;
    assert_int_equal(js_parse_object(&doc, text, strlen(text), JWE_MAX_SIZE, "test", NULL), 0);
    const char *v = json_string_value(json_object_get(doc, key));
    assert_non_null(v);
    char *out = xstrdup(v);
    json_decref(doc);
    return out;
}

/* Flip one bit of the decoded bytes of a base64url string. */
static char *flip_b64(const char *s, size_t at)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *raw = b64u(s, &n);
    assert_true(at < n);
    raw[at] ^= 0x01;
    return b64u_enc(raw, n);
}

static char *flip_member(const char *jwe, const char *member, size_t at)
{
    _cleanup_free_ char *v = json_get(jwe, member);
    _cleanup_free_ char *f = flip_b64(v, at);
    return json_set(jwe, member, f);
}

/* ---- RFC 7516 Appendix A ---- */

static const char g_a1_jwe[] = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ."
                               "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe"
                               "ipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDb"
                               "Sv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaV"
                               "mqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je8"
                               "1860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi"
                               "6UklfCpIMfIjf7iGdXKHzg."
                               "48V1_ALb6US04U3b."
                               "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji"
                               "SdiwkIr3ajwQzaBtQD_A."
                               "XFBoMYUZodetZdvTiFvSkQ";

static const char g_a1_key[] = "{\"kty\":\"RSA\","
                               "\"n\":\"oahUIoWw0K0usKNuOR6H4wkf4oBUXHTxRvgb48E-BVvxkeDNjbC4he8rUW"
                               "cJoZmds2h7M70imEVhRU5djINXtqllXI4DFqcI1DgjT9LewND8MW2Krf3S"
                               "psk_ZkoFnilakGygTwpZ3uesH-PFABNIUYpOiN15dsQRkgr0vEhxN92i2a"
                               "sbOenSZeyaxziK72UwxrrKoExv6kc5twXTq4h-QChLOln0_mtUZwfsRaMS"
                               "tPs6mS6XrgxnxbWhojf663tuEQueGC-FCMfra36C9knDFGzKsNa7LZK2dj"
                               "YgyD3JR_MB_4NUJW_TqOQtwHYbxevoJArm-L5StowjzGy-_bq6Gw\","
                               "\"e\":\"AQAB\","
                               "\"d\":\"kLdtIj6GbDks_ApCSTYQtelcNttlKiOyPzMrXHeI-yk1F7-kpDxY4-WY5N"
                               "WV5KntaEeXS1j82E375xxhWMHXyvjYecPT9fpwR_M9gV8n9Hrh2anTpTD9"
                               "3Dt62ypW3yDsJzBnTnrYu1iwWRgBKrEYY46qAZIrA2xAwnm2X7uGR1hghk"
                               "qDp0Vqj3kbSCz1XyfCs6_LehBwtxHIyh8Ripy40p24moOAbgxVw3rxT_vl"
                               "t3UVe4WO3JkJOzlpUf-KTVI2Ptgm-dARxTEtE-id-4OJr0h-K-VFs3VSnd"
                               "VTIznSxfyrj8ILL6MG_Uv8YAu7VILSB3lOW085-4qE3DzgrTjgyQ\","
                               "\"p\":\"1r52Xk46c-LsfB5P442p7atdPUrxQSy4mti_tZI3Mgf2EuFVbUoDBvaRQ-"
                               "SWxkbkmoEzL7JXroSBjSrK3YIQgYdMgyAEPTPjXv_hI2_1eTSPVZfzL0lf"
                               "fNn03IXqWF5MDFuoUYE0hzb2vhrlN_rKrbfDIwUbTrjjgieRbwC6Cl0\","
                               "\"q\":\"wLb35x7hmQWZsWJmB_vle87ihgZ19S8lBEROLIsZG4ayZVe9Hi9gDVCOBm"
                               "UDdaDYVTSNx_8Fyw1YYa9XGrGnDew00J28cRUoeBB_jKI1oma0Orv1T9aX"
                               "IWxKwd4gvxFImOWr3QRL9KEBRzk2RatUBnmDZJTIAfwTs0g68UZHvtc\","
                               "\"dp\":\"ZK-YwE7diUh0qR1tR7w8WHtolDx3MZ_OTowiFvgfeQ3SiresXjm9gZ5KL"
                               "hMXvo-uz-KUJWDxS5pFQ_M0evdo1dKiRTjVw_x4NyqyXPM5nULPkcpU827"
                               "rnpZzAJKpdhWAgqrXGKAECQH0Xt4taznjnd_zVpAmZZq60WPMBMfKcuE\","
                               "\"dq\":\"Dq0gfgJ1DdFGXiLvQEZnuKEN0UUmsJBxkjydc3j4ZYdBiMRAy86x0vHCj"
                               "ywcMlYYg4yoC4YZa9hNVcsjqA3FeiL19rk8g6Qn29Tt0cj8qqyFpz9vNDB"
                               "UfCAiJVeESOjJDZPYHdHY8v1b-o-Z2X5tvLx-TCekf7oxyeKDUqKWjis\","
                               "\"qi\":\"VIMpMYbPf47dT1w_zDUXfPimsSegnMOA1zTaX7aGk_8urY6R8-ZW1FxU7"
                               "AlWAyLWybqq6t16VFd7hQd0y6flUK4SlOydB61gwanOsXGOAOv82cHq0E3"
                               "eL4HrtZkUuKvnPrMnsUUFlfUdybVzxyjz9JF_XyaY14ardLSjf4L_FNY\"}";

static const char g_a1_pt[] = "The true sign of intelligence is not knowledge but imagination.";
static const uint8_t g_a1_cek[32] = {177, 161, 244, 128, 84,  143, 225, 115, 63, 180, 3,
                                     255, 107, 154, 212, 246, 138, 7,   110, 91, 112, 46,
                                     34,  105, 47,  130, 203, 46,  122, 234, 64, 252};
static const uint8_t g_a1_iv[12] = {227, 197, 117, 252, 2, 219, 233, 68, 180, 225, 77, 219};

static const char g_a2_jwe[] = "eyJhbGciOiJSU0ExXzUiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0."
                               "UGhIOguC7IuEvf_NPVaXsGMoLOmwvc1GyqlIKOK1nN94nHPoltGRhWhw7Zx0-kFm"
                               "1NJn8LE9XShH59_i8J0PH5ZZyNfGy2xGdULU7sHNF6Gp2vPLgNZ__deLKxGHZ7Pc"
                               "HALUzoOegEI-8E66jX2E4zyJKx-YxzZIItRzC5hlRirb6Y5Cl_p-ko3YvkkysZIF"
                               "NPccxRU7qve1WYPxqbb2Yw8kZqa2rMWI5ng8OtvzlV7elprCbuPhcCdZ6XDP0_F8"
                               "rkXds2vE4X-ncOIM8hAYHHi29NX0mcKiRaD0-D-ljQTP-cFPgwCp6X-nZZd9OHBv"
                               "-B3oWh2TbqmScqXMR4gp_A."
                               "AxY8DCtDaGlsbGljb3RoZQ."
                               "KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY."
                               "9hH0vgRfYgPnAHOd8stkvw";

static const char g_a2_key[] = "{\"kty\":\"RSA\","
                               "\"n\":\"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"
                               "UzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDpre"
                               "cbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_"
                               "7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBI"
                               "Y2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU"
                               "7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw\","
                               "\"e\":\"AQAB\","
                               "\"d\":\"VFCWOqXr8nvZNyaaJLXdnNPXZKRaWCjkU5Q2egQQpTBMwhprMzWzpR8Sxq"
                               "1OPThh_J6MUD8Z35wky9b8eEO0pwNS8xlh1lOFRRBoNqDIKVOku0aZb-ry"
                               "nq8cxjDTLZQ6Fz7jSjR1Klop-YKaUHc9GsEofQqYruPhzSA-QgajZGPbE_"
                               "0ZaVDJHfyd7UUBUKunFMScbflYAAOYJqVIVwaYR5zWEEceUjNnTNo_CVSj"
                               "-VvXLO5VZfCUAVLgW4dpf1SrtZjSt34YLsRarSb127reG_DUwg9Ch-Kyvj"
                               "T1SkHgUWRVGcyly7uvVGRSDwsXypdrNinPA4jlhoNdizK2zF2CWQ\","
                               "\"p\":\"9gY2w6I6S6L0juEKsbeDAwpd9WMfgqFoeA9vEyEUuk4kLwBKcoe1x4HG68"
                               "ik918hdDSE9vDQSccA3xXHOAFOPJ8R9EeIAbTi1VwBYnbTp87X-xcPWlEP"
                               "krdoUKW60tgs1aNd_Nnc9LEVVPMS390zbFxt8TN_biaBgelNgbC95sM\","
                               "\"q\":\"uKlCKvKv_ZJMVcdIs5vVSU_6cPtYI1ljWytExV_skstvRSNi9r66jdd9-y"
                               "BhVfuG4shsp2j7rGnIio901RBeHo6TPKWVVykPu1iYhQXw1jIABfw-MVsN"
                               "-3bQ76WLdt2SDxsHs7q7zPyUyHXmps7ycZ5c72wGkUwNOjYelmkiNS0\","
                               "\"dp\":\"w0kZbV63cVRvVX6yk3C8cMxo2qCM4Y8nsq1lmMSYhG4EcL6FWbX5h9yuv"
                               "ngs4iLEFk6eALoUS4vIWEwcL4txw9LsWH_zKI-hwoReoP77cOdSL4AVcra"
                               "Hawlkpyd2TWjE5evgbhWtOxnZee3cXJBkAi64Ik6jZxbvk-RR3pEhnCs\","
                               "\"dq\":\"o_8V14SezckO6CNLKs_btPdFiO9_kC1DsuUTd2LAfIIVeMZ7jn1Gus_Ff"
                               "7B7IVx3p5KuBGOVF8L-qifLb6nQnLysgHDh132NDioZkhH7mI7hPG-PYE_"
                               "odApKdnqECHWw0J-F0JWnUd6D2B_1TvF9mXA2Qx-iGYn8OVV1Bsmp6qU\","
                               "\"qi\":\"eNho5yRBEBxhGBtQRww9QirZsB66TrfFReG_CcteI1aCneT0ELGhYlRlC"
                               "tUkTRclIfuEPmNsNDPbLoLqqCVznFbvdB7x-Tl-m0l_eFTj2KiqwGqE9PZ"
                               "B9nNTwMVvH3VRRSLWACvPnSiwP8N5Usy-WRXS-V7TbpxIhvepTfE0NNo\"}";

static const char g_a3_jwe[] = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0."
                               "6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ."
                               "AxY8DCtDaGlsbGljb3RoZQ."
                               "KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY."
                               "U0m_YmjN04DJvceFICbCVQ";
static const char g_a3_key[] = "GawgguFyGrWKav7AX4VKUg";
static const char g_a23_pt[] = "Live long and prosper.";
static const uint8_t g_a23_cek[32] = {4,   211, 31,  197, 84,  157, 252, 254, 11, 100, 157,
                                      250, 63,  170, 106, 206, 107, 124, 212, 45, 111, 107,
                                      9,   219, 200, 177, 0,   240, 143, 156, 44, 207};
static const uint8_t g_a23_iv[16] = {3,   22,  60,  12, 43,  67,  104, 105,
                                     108, 108, 105, 99, 111, 116, 104, 101};

static void test_rfc7516_a1(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *k = jwk_key(g_a1_key);
    jwe_key key = {.pkey = k};
    expect_pt(g_a1_jwe, &key, 1, g_a1_pt, strlen(g_a1_pt));

    /* Encrypt with the RFC's CEK and IV: everything but the (randomised) OAEP output matches. */
    char *out = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(jwe__encrypt_fixed(&out, g_a1_pt, strlen(g_a1_pt), &key, 1, "A256GCM",
                                        JWE_COMPACT, g_a1_cek, 32, g_a1_iv, 12, NULL, &err),
                     0);
    char *want[5], *got[5];
    split5(g_a1_jwe, want);
    split5(out, got);
    assert_string_equal(got[0], want[0]);
    assert_string_not_equal(got[1], want[1]);
    assert_string_equal(got[2], want[2]);
    assert_string_equal(got[3], want[3]);
    assert_string_equal(got[4], want[4]);
    free5(want);
    free5(got);
    expect_pt(out, &key, 1, g_a1_pt, strlen(g_a1_pt));
    free(out);
}

static void test_rfc7516_a2(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *k = jwk_key(g_a2_key);
    jwe_key key = {.pkey = k};
    expect_pt(g_a2_jwe, &key, 1, g_a23_pt, strlen(g_a23_pt));
    /* RSA1_5 is for reading old JWEs only. */
    char *out = NULL;
    jwe_key enc_key = {.pkey = k, .alg = "RSA1_5"};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &enc_key, 1, NULL, JWE_COMPACT, NULL), -ENOTSUP);
    /* With RSA1_5 a bad key shows only as a bad tag (RFC 7516 §11.5, no padding oracle). */
    _cleanup_pkey_ EVP_PKEY *a1 = jwk_key(g_a1_key);
    jwe_key wrong = {.pkey = a1};
    expect_fail(g_a2_jwe, &wrong, 1, -EBADMSG, NULL);
}

static void test_rfc7516_a3(void **state)
{
    (void)state;
    size_t n = 0;
    _cleanup_free_ uint8_t *kek = b64u(g_a3_key, &n);
    jwe_key key = {.secret = kek, .secret_size = n};
    expect_pt(g_a3_jwe, &key, 1, g_a23_pt, strlen(g_a23_pt));
    /* AES key wrap is deterministic: the whole JWE is reproduced byte for byte. */
    char *out = NULL;
    jwe_key enc_key = {.secret = kek, .secret_size = n, .alg = "A128KW"};
    assert_int_equal(jwe__encrypt_fixed(&out, g_a23_pt, strlen(g_a23_pt), &enc_key, 1,
                                        "A128CBC-HS256", JWE_COMPACT, g_a23_cek, 32, g_a23_iv, 16,
                                        NULL, NULL),
                     0);
    assert_string_equal(out, g_a3_jwe);
    free(out);
}

/* ---- RFC 7520 §5 ---- */

/* Figure 72, with U+2013 EN DASH as UTF-8. */
static const char g_c_pt[] = "You can trust us to stick with you through thick and thin\xe2\x80\x93"
                             "to the bitter end. And you can trust us to keep any secret of "
                             "yours\xe2\x80\x93"
                             "closer than you keep it yourself. But you cannot trust us to let "
                             "you face trouble alone, and go off without a word. We are your "
                             "friends, Frodo.";

/* Figure 73 (frodo.baggins@hobbiton.example), RSA 2048. */
static const char g_c_rsa[] = "{\"kty\":\"RSA\","
                              "\"n\":\"maxhbsmBtdQ3CNrKvprUE6n9lYcregDMLYNeTAWcLj8NnPU9XIYegT"
                              "HVHQjxKDSHP2l-F5jS7sppG1wgdAqZyhnWvXhYNvcM7RfgKxqNx_xAHx"
                              "6f3yy7s-M9PSNCwPC2lh6UAkR4I00EhV9lrypM9Pi4lBUop9t5fS9W5U"
                              "NwaAllhrd-osQGPjIeI1deHTwx-ZTHu3C60Pu_LJIl6hKn9wbwaUmA4c"
                              "R5Bd2pgbaY7ASgsjCUbtYJaNIHSoHXprUdJZKUMAzV0WOKPfA6OPI4oy"
                              "pBadjvMZ4ZAj3BnXaSYsEZhaueTXvZB4eZOAjIyh2e_VOIKVMsnDrJYA"
                              "VotGlvMQ\","
                              "\"e\":\"AQAB\","
                              "\"d\":\"Kn9tgoHfiTVi8uPu5b9TnwyHwG5dK6RE0uFdlpCGnJN7ZEi963R7wy"
                              "bQ1PLAHmpIbNTztfrheoAniRV1NCIqXaW_qS461xiDTp4ntEPnqcKsyO"
                              "5jMAji7-CL8vhpYYowNFvIesgMoVaPRYMYT9TW63hNM0aWs7USZ_hLg6"
                              "Oe1mY0vHTI3FucjSM86Nff4oIENt43r2fspgEPGRrdE6fpLc9Oaq-qeP"
                              "1GFULimrRdndm-P8q8kvN3KHlNAtEgrQAgTTgz80S-3VD0FgWfgnb1PN"
                              "miuPUxO8OpI9KDIfu_acc6fg14nsNaJqXe6RESvhGPH2afjHqSy_Fd2v"
                              "pzj85bQQ\","
                              "\"p\":\"2DwQmZ43FoTnQ8IkUj3BmKRf5Eh2mizZA5xEJ2MinUE3sdTYKSLtaE"
                              "oekX9vbBZuWxHdVhM6UnKCJ_2iNk8Z0ayLYHL0_G21aXf9-unynEpUsH"
                              "7HHTklLpYAzOOx1ZgVljoxAdWNn3hiEFrjZLZGS7lOH-a3QQlDDQoJOJ"
                              "2VFmU\","
                              "\"q\":\"te8LY4-W7IyaqH1ExujjMqkTAlTeRbv0VLQnfLY2xINnrWdwiQ93_V"
                              "F099aP1ESeLja2nw-6iKIe-qT7mtCPozKfVtUYfz5HrJ_XY2kfexJINb"
                              "9lhZHMv5p1skZpeIS-GPHCC6gRlKo1q-idn_qxyusfWv7WAxlSVfQfk8"
                              "d6Et0\","
                              "\"dp\":\"UfYKcL_or492vVc0PzwLSplbg4L3-Z5wL48mwiswbpzOyIgd2xHTH"
                              "QmjJpFAIZ8q-zf9RmgJXkDrFs9rkdxPtAsL1WYdeCT5c125Fkdg317JV"
                              "RDo1inX7x2Kdh8ERCreW8_4zXItuTl_KiXZNU5lvMQjWbIw2eTx1lpsf"
                              "lo0rYU\","
                              "\"dq\":\"iEgcO-QfpepdH8FWd7mUFyrXdnOkXJBCogChY6YKuIHGc_p8Le9Mb"
                              "pFKESzEaLlN1Ehf3B6oGBl5Iz_ayUlZj2IoQZ82znoUrpa9fVYNot87A"
                              "CfzIG7q9Mv7RiPAderZi03tkVXAdaBau_9vs5rS-7HMtxkVrxSUvJY14"
                              "TkXlHE\","
                              "\"qi\":\"kC-lzZOqoFaZCr5l0tOVtREKoVqaAYhQiqIRGL-MzS4sCmRkxm5vZ"
                              "lXYx6RtE1n_AagjqajlkjieGlxTTThHD8Iga6foGBMaAr5uR1hGQpSc7"
                              "Gl7CF1DZkBJMTQN6EshYzZfxW08mIO8M6Rzuh0beL6fG9mkDcIyPrBXx"
                              "2bQ_mM\"}";

/* Figure 108 (peregrin.took@tuckborough.example), P-384. */
static const char g_c_p384[] = "{\"kty\":\"EC\",\"crv\":\"P-384\","
                               "\"x\":\"YU4rRUzdmVqmRtWOs2OpDE_T5fsNIodcG8G5FWPrTPMyxpzsSOGaQL"
                               "pe2FpxBmu2\","
                               "\"y\":\"A8-yxCHxkfBz3hKZfI1jUYMjUhsEveZ9THuwFjH2sCNdtksRJU7D5-"
                               "SkgaFL1ETP\","
                               "\"d\":\"iTx2pk7wW-GqJkHcEkFQb2EFyYcO7RugmaW3mRrQVAOUiPommT0Idn"
                               "YK2xDlZh-j\"}";

/* Figure 120 (meriadoc.brandybuck@buckland.example), P-256. */
static const char g_c_p256[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                               "\"x\":\"Ze2loSV3wrroKUN_4zhwGhCqo3Xhu1td4QjeQ5wIVR0\","
                               "\"y\":\"HlLtdXARY_f55A3fnzQbPcm6hgr34Mp8p-nuzQCE0Zw\","
                               "\"d\":\"r_kHyZ-a06rmxM3yESK84r1otSg-aQcVStkRhA-iCM8\"}";

static const char g_c_kw128[] = "GZy6sIZ6wl9NJOKB-jnmVQ";  /* Figure 151 */
static const char g_c_dir128[] = "XctOhJAkA-pD9Lh7ZgW_2A"; /* Figure 130 */

/* Figure 81: RSA1_5 + A128CBC-HS256. */
static const char g_c51[] = "eyJhbGciOiJSU0ExXzUiLCJraWQiOiJmcm9kby5iYWdnaW5zQGhvYmJpdG9uLm"
                            "V4YW1wbGUiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0"
                            "."
                            "laLxI0j-nLH-_BgLOXMozKxmy9gffy2gTdvqzfTihJBuuzxg0V7yk1WClnQePF"
                            "vG2K-pvSlWc9BRIazDrn50RcRai__3TDON395H3c62tIouJJ4XaRvYHFjZTZ2G"
                            "Xfz8YAImcc91Tfk0WXC2F5Xbb71ClQ1DDH151tlpH77f2ff7xiSxh9oSewYrcG"
                            "TSLUeeCt36r1Kt3OSj7EyBQXoZlN7IxbyhMAfgIe7Mv1rOTOI5I8NQqeXXW8Vl"
                            "zNmoxaGMny3YnGir5Wf6Qt2nBq4qDaPdnaAuuGUGEecelIO1wx1BpyIfgvfjOh"
                            "MBs9M8XL223Fg47xlGsMXdfuY-4jaqVw"
                            "."
                            "bbd5sTkYwhAIqfHsx8DayA"
                            "."
                            "0fys_TY_na7f8dwSfXLiYdHaA2DxUjD67ieF7fcVbIR62JhJvGZ4_FNVSiGc_r"
                            "aa0HnLQ6s1P2sv3Xzl1p1l_o5wR_RsSzrS8Z-wnI3Jvo0mkpEEnlDmZvDu_k8O"
                            "WzJv7eZVEqiWKdyVzFhPpiyQU28GLOpRc2VbVbK4dQKPdNTjPPEmRqcaGeTWZV"
                            "yeSUvf5k59yJZxRuSvWFf6KrNtmRdZ8R4mDOjHSrM_s8uwIFcqt4r5GX8TKaI0"
                            "zT5CbL5Qlw3sRc7u_hg0yKVOiRytEAEs3vZkcfLkP6nbXdC_PkMdNS-ohP78T2"
                            "O6_7uInMGhFeX4ctHG7VelHGiT93JfWDEQi5_V9UN1rhXNrYu-0fVMkZAKX3VW"
                            "i7lzA6BP430m"
                            "."
                            "kvKuFBXHe5mQr4lqgobAUg";

/* Figure 117: ECDH-ES+A128KW (P-384) + A128GCM. */
#define C54_PROT                                                                                   \
    "eyJhbGciOiJFQ0RILUVTK0ExMjhLVyIsImtpZCI6InBlcmVncmluLnRvb2tAdH"                               \
    "Vja2Jvcm91Z2guZXhhbXBsZSIsImVwayI6eyJrdHkiOiJFQyIsImNydiI6IlAt"                               \
    "Mzg0IiwieCI6InVCbzRrSFB3Nmtiang1bDB4b3dyZF9vWXpCbWF6LUdLRlp1NH"                               \
    "hBRkZrYllpV2d1dEVLNml1RURzUTZ3TmROZzMiLCJ5Ijoic3AzcDVTR2haVkMy"                               \
    "ZmFYdW1JLWU5SlUyTW84S3BvWXJGRHI1eVBOVnRXNFBnRXdaT3lRVEEtSmRhWT"                               \
    "h0YjdFMCJ9LCJlbmMiOiJBMTI4R0NNIn0"
#define C54_EK "0DJjBXri_kBcC46IkU5_Jk9BqaQeHdv2"
#define C54_IV "mH-G2zVqgztUtnW_"
#define C54_CT                                                                                     \
    "tkZuOO9h95OgHJmkkrfLBisku8rGf6nzVxhRM3sVOhXgz5NJ76oID7lpnAi_cP"                               \
    "WJRCjSpAaUZ5dOR3Spy7QuEkmKx8-3RCMhSYMzsXaEwDdXta9Mn5B7cCBoJKB0"                               \
    "IgEnj_qfo1hIi-uEkUpOZ8aLTZGHfpl05jMwbKkTe2yK3mjF6SBAsgicQDVCkc"                               \
    "Y9BLluzx1RmC3ORXaM0JaHPB93YcdSDGgpgBWMVrNU1ErkjcMqMoT_wtCex3w0"                               \
    "3XdLkjXIuEr2hWgeP-nkUZTPU9EoGSPj6fAS-bSz87RCPrxZdj_iVyC6QWcqAu"                               \
    "07WNhjzJEPc4jVntRJ6K53NgPQ5p99l3Z408OUqj4ioYezbS6vTPlQ"
#define C54_TAG "WuGzxmcreYjpHGJoa17EBg"
static const char g_c54[] = C54_PROT "." C54_EK "." C54_IV "." C54_CT "." C54_TAG;
/* Figures 118 and 119. */
static const char g_c54_general[] = "{\"recipients\":[{\"encrypted_key\":\"" C54_EK "\"}],"
                                    "\"protected\":\"" C54_PROT "\",\"iv\":\"" C54_IV "\","
                                    "\"ciphertext\":\"" C54_CT "\",\"tag\":\"" C54_TAG "\"}";
static const char g_c54_flat[] =
    "{\"protected\":\"" C54_PROT "\",\"encrypted_key\":\"" C54_EK "\",\"iv\":\"" C54_IV
    "\",\"ciphertext\":\"" C54_CT "\",\"tag\":\"" C54_TAG "\"}";

/* Figure 128: ECDH-ES (direct, P-256) + A128CBC-HS256. */
static const char g_c55[] = "eyJhbGciOiJFQ0RILUVTIiwia2lkIjoibWVyaWFkb2MuYnJhbmR5YnVja0BidW"
                            "NrbGFuZC5leGFtcGxlIiwiZXBrIjp7Imt0eSI6IkVDIiwiY3J2IjoiUC0yNTYi"
                            "LCJ4IjoibVBVS1RfYkFXR0hJaGcwVHBqanFWc1AxclhXUXVfdndWT0hIdE5rZF"
                            "lvQSIsInkiOiI4QlFBc0ltR2VBUzQ2ZnlXdzVNaFlmR1RUMElqQnBGdzJTUzM0"
                            "RHY0SXJzIn0sImVuYyI6IkExMjhDQkMtSFMyNTYifQ"
                            "."
                            "."
                            "yc9N8v5sYyv3iGQT926IUg"
                            "."
                            "BoDlwPnTypYq-ivjmQvAYJLb5Q6l-F3LIgQomlz87yW4OPKbWE1zSTEFjDfhU9"
                            "IPIOSA9Bml4m7iDFwA-1ZXvHteLDtw4R1XRGMEsDIqAYtskTTmzmzNa-_q4F_e"
                            "vAPUmwlO-ZG45Mnq4uhM1fm_D9rBtWolqZSF3xGNNkpOMQKF1Cl8i8wjzRli7-"
                            "IXgyirlKQsbhhqRzkv8IcY6aHl24j03C-AR2le1r7URUhArM79BY8soZU0lzwI"
                            "-sD5PZ3l4NDCCei9XkoIAfsXJWmySPoeRb2Ni5UZL4mYpvKDiwmyzGd65KqVw7"
                            "MsFfI_K767G9C9Azp73gKZD0DyUn1mn0WW5LmyX_yJ-3AROq8p1WZBfG-ZyJ61"
                            "95_JGG2m9Csg"
                            "."
                            "WCCkNa-x4BeB9hIDIfFuhg";

/* Figure 136: dir + A128GCM. */
static const char g_c56[] = "eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02MT"
                            "diNWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0"
                            "."
                            "."
                            "refa467QzzKx6QAB"
                            "."
                            "JW_i_f52hww_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7Y"
                            "hLpT1bjFuvZPjQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9zM"
                            "DB2n0cRDIHAzFVeJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtBP-c_"
                            "BIwCPTjb9o0SbdcdREEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZAxscj5"
                            "g-NJsUPbjk29-s7LJAGb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9aKZSRSIn"
                            "ZI-wjsY0yu3cT4_aQ3i1o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TTnp"
                            "."
                            "vbb32Xvllea2OtmHAdccRQ";

/* Figure 159: A128KW + A128GCM. */
#define C58_PROT                                                                                   \
    "eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC"                               \
    "04MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIn0"
#define C58_CT                                                                                     \
    "AwliP-KmWgsZ37BvzCefNen6VTbRK3QMA4TkvRkH0tP1bTdhtFJgJxeVmJkLD6"                               \
    "1A1hnWGetdg11c9ADsnWgL56NyxwSYjU1ZEHcGkd3EkU0vjHi9gTlb90qSYFfe"                               \
    "F0LwkcTtjbYKCsiNJQkcIp1yeM03OmuiYSoYJVSpf7ej6zaYcMv3WwdxDFl8RE"                               \
    "wOhNImk2Xld2JXq6BR53TSFkyT7PwVLuq-1GwtGHlQeg7gDT6xW0JqHDPn_H-p"                               \
    "uQsmthc9Zg0ojmJfqqFvETUxLAF-KjcBTS5dNy6egwkYtOt8EIHK-oEsKYtZRa"                               \
    "a8Z7MOZ7UGxGIMvEmxrGCPeJa14slv2-gaqK0kEThkaSqdYw0FkQZF"
static const char g_c58[] =
    C58_PROT ".CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx.Qx0pmsDa8KnJc9Jo." C58_CT ".ER7MWJZ1FBI_NKvn7Zb1Lw";
/* Figure 160. */
static const char g_c58_general[] =
    "{\"recipients\":[{\"encrypted_key\":\"CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx\"}],"
    "\"protected\":\"" C58_PROT "\",\"iv\":\"Qx0pmsDa8KnJc9Jo\","
    "\"ciphertext\":\"" C58_CT "\",\"tag\":\"ER7MWJZ1FBI_NKvn7Zb1Lw\"}";

/* Figure 170: as 5.8, with "zip":"DEF". */
static const char g_c59[] = "eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC"
                            "04MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIiwiemlwIjoiREVGIn0"
                            "."
                            "5vUT2WOtQxKWcekM_IzVQwkGgzlFDwPi"
                            "."
                            "p9pUq6XHY0jfEZIl"
                            "."
                            "HbDtOsdai1oYziSx25KEeTxmwnh8L8jKMFNc1k3zmMI6VB8hry57tDZ61jXyez"
                            "SPt0fdLVfe6Jf5y5-JaCap_JQBcb5opbmT60uWGml8blyiMQmOn9J--XhhlYg0"
                            "m-BHaqfDO5iTOWxPxFMUedx7WCy8mxgDHj0aBMG6152PsM-w5E_o2B3jDbrYBK"
                            "hpYA7qi3AyijnCJ7BP9rr3U8kxExCpG3mK420TjOw"
                            "."
                            "VILuUwuIxaLVmh5X-T7kmA";

/* Figure 183: additional authenticated data. */
static const char g_c510[] =
    "{\"protected\":\"" C58_PROT "\","
    "\"encrypted_key\":\"4YiiQ_ZzH76TaIkJmYfRFgOV9MIpnx4X\","
    "\"aad\":\"WyJ2Y2FyZCIsW1sidmVyc2lvbiIse30sInRleHQiLCI0LjAiXSxbImZuIix7fS"
    "widGV4dCIsIk1lcmlhZG9jIEJyYW5keWJ1Y2siXSxbIm4iLHt9LCJ0ZXh0Iixb"
    "IkJyYW5keWJ1Y2siLCJNZXJpYWRvYyIsIk1yLiIsIiJdXSxbImJkYXkiLHt9LC"
    "J0ZXh0IiwiVEEgMjk4MiJdLFsiZ2VuZGVyIix7fSwidGV4dCIsIk0iXV1d\","
    "\"iv\":\"veCx9ece2orS7c_N\","
    "\"ciphertext\":\"Z_3cbr0k3bVM6N3oSNmHz7Lyf3iPppGf3Pj17wNZqteJ0Ui8p74SchQP8xygM1"
    "oFRWCNzeIa6s6BcEtp8qEFiqTUEyiNkOWDNoF14T_4NFqF-p2Mx8zkbKxI7oPK"
    "8KNarFbyxIDvICNqBLba-v3uzXBdB89fzOI-Lv4PjOFAQGHrgv1rjXAmKbgkft"
    "9cB4WeyZw8MldbBhc-V_KWZslrsLNygon_JJWd_ek6LQn5NRehvApqf9ZrxB4a"
    "q3FXBxOxCys35PhCdaggy2kfUfl2OkwKnWUbgXVD1C6HxLIlqHhCwXDG59weHr"
    "RDQeHyMRoBljoV3X_bUTJDnKBFOod7nLz-cj48JMx3SnCZTpbQAkFV\","
    "\"tag\":\"vOaH_Rajnpy_3hOtqvZHRA\"}";

/* Figure 192: alg and kid in the shared unprotected header. */
static const char g_c511[] =
    "{\"recipients\":[{\"encrypted_key\":\"jJIcM9J-hbx3wnqhf5FlkEYos0sHsF0H\"}],"
    "\"unprotected\":{\"alg\":\"A128KW\",\"kid\":\"81b20965-8332-43d9-a468-82160ad91ac8\"},"
    "\"protected\":\"eyJlbmMiOiJBMTI4R0NNIn0\",\"iv\":\"WgEJsDS9bkoXQ3nR\","
    "\"ciphertext\":\"lIbCyRmRJxnB2yLQOTqjCDKV3H30ossOw3uD9DPsqLL2DM3swKkjOwQyZtWsFL"
    "YMj5YeLht_StAn21tHmQJuuNt64T8D4t6C7kC9OCCJ1IHAolUv4MyOt80MoPb8"
    "fZYbNKqplzYJgIL58g8N2v46OgyG637d6uuKPwhAnTGm_zWhqc_srOvgiLkzyF"
    "XPq1hBAURbc3-8BqeRb48iR1-_5g5UjWVD3lgiLCN_P7AW8mIiFvUNXBPJK3nO"
    "WL4teUPS8yHLbWeL83olU4UAgL48x-8dDkH23JykibVSQju-f7e-1xreHWXzWL"
    "Hs1NqBbre0dEwK3HX_xM0LjUz77Krppgegoutpf5qaKg3l-_xMINmf\","
    "\"tag\":\"fNYLqpUe84KD45lvDiaBAQ\"}";

/* Figure 201: no protected header at all. */
static const char g_c512[] =
    "{\"unprotected\":{\"alg\":\"A128KW\",\"kid\":\"81b20965-8332-43d9-a468-82160ad91ac8\","
    "\"enc\":\"A128GCM\"},"
    "\"encrypted_key\":\"244YHfO_W7RMpQW81UjQrZcq5LSyqiPv\",\"iv\":\"YihBoVOGsR1l7jCD\","
    "\"ciphertext\":\"qtPIMMaOBRgASL10dNQhOa7Gqrk7Eal1vwht7R4TT1uq-arsVCPaIeFwQfzrSS"
    "6oEUWbBtxEasE0vC6r7sphyVziMCVJEuRJyoAHFSP3eqQPb4Ic1SDSqyXjw_L3"
    "svybhHYUGyQuTmUQEDjgjJfBOifwHIsDsRPeBz1NomqeifVPq5GTCWFo5k_MNI"
    "QURR2Wj0AHC2k7JZfu2iWjUHLF8ExFZLZ4nlmsvJu_mvifMYiikfNfsZAudISO"
    "a6O73yPZtL04k_1FI7WDfrb2w7OqKLWDXzlpcxohPVOLQwpA3mFNRKdY-bQz4Z"
    "4KX9lfz1cne31N4-8BKmojpw-OdQjKdLOGkC445Fb_K1tlDQXw2sBF\","
    "\"tag\":\"e2m0Vm7JvjK2VpCKXS-kyg\"}";

/* Figure 221: three recipients (RSA1_5, ECDH-ES+A256KW on P-384, A256GCMKW). */
static const char g_c513[] =
    "{\"recipients\":["
    "{\"encrypted_key\":\"dYOD28kab0Vvf4ODgxVAJXgHcSZICSOp8M51zjwj4w6Y5G4XJQsNNIBiqyvUUA"
    "OcpL7S7-cFe7Pio7gV_Q06WmCSa-vhW6me4bWrBf7cHwEQJdXihidAYWVajJIa"
    "KMXMvFRMV6iDlRr076DFthg2_AV0_tSiV6xSEIFqt1xnYPpmP91tc5WJDOGb-w"
    "qjw0-b-S1laS11QVbuP78dQ7Fa0zAVzzjHX-xvyM2wxj_otxr9clN1LnZMbeYS"
    "rRicJK5xodvWgkpIdkMHo4LvdhRRvzoKzlic89jFWPlnBq_V4n5trGuExtp_-d"
    "bHcGlihqc_wGgho9fLMK8JOArYLcMDNQ\","
    "\"header\":{\"alg\":\"RSA1_5\",\"kid\":\"frodo.baggins@hobbiton.example\"}},"
    "{\"encrypted_key\":\"ExInT0io9BqBMYF6-maw5tZlgoZXThD1zWKsHixJuw_elY4gSSId_w\","
    "\"header\":{\"alg\":\"ECDH-ES+A256KW\",\"kid\":\"peregrin.took@tuckborough.example\","
    "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-384\","
    "\"x\":\"Uzdvk3pi5wKCRc1izp5_r0OjeqT-I68i8g2b8mva8diRhsE2xAn2DtMRb25Ma2CX\","
    "\"y\":\"VDrRyFJh-Kwd1EjAgmj5Eo-CTHAZ53MC7PjjpLioy3ylEjI1pOMbw91fzZ84pbfm\"}}},"
    "{\"encrypted_key\":\"a7CclAejo_7JSuPB8zeagxXRam8dwCfmkt9-WyTpS1E\","
    "\"header\":{\"alg\":\"A256GCMKW\",\"kid\":\"18ec08e1-bfa9-4d95-b205-2b4dd1d4321d\","
    "\"tag\":\"59Nqh1LlYtVIhfD3pgRGvw\",\"iv\":\"AvpeoPZ9Ncn9mkBn\"}}],"
    "\"unprotected\":{\"cty\":\"text/plain\"},"
    "\"protected\":\"eyJlbmMiOiJBMTI4Q0JDLUhTMjU2In0\",\"iv\":\"VgEIHY20EnzUtZFl2RpB1g\","
    "\"ciphertext\":\"ajm2Q-OpPXCr7-MHXicknb1lsxLdXxK_yLds0KuhJzfWK04SjdxQeSw2L9mu3a"
    "_k1C55kCQ_3xlkcVKC5yr__Is48VOoK0k63_QRM9tBURMFqLByJ8vOYQX0oJW4"
    "VUHJLmGhF-tVQWB7Kz8mr8zeE7txF0MSaP6ga7-siYxStR7_G07Thd1jh-zGT0"
    "wxM5g-VRORtq0K6AXpLlwEqRp7pkt2zRM0ZAXqSpe1O6FJ7FHLDyEFnD-zDIZu"
    "kLpCbzhzMDLLw2-8I14FQrgi-iEuzHgIJFIJn2wh9Tj0cg_kOZy9BqMRZbmYXM"
    "Y9YQjorZ_P_JYG3ARAIF3OjDNqpdYe-K_5Q5crGJSDNyij_ygEiItR5jssQVH2"
    "ofDQdLChtazE\","
    "\"tag\":\"BESYyFN7T09KY7i8zKs5_g\"}";

static void test_rfc7520_asymmetric(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = jwk_key(g_c_rsa);
    _cleanup_pkey_ EVP_PKEY *p384 = jwk_key(g_c_p384);
    _cleanup_pkey_ EVP_PKEY *p256 = jwk_key(g_c_p256);
    size_t n = strlen(g_c_pt);
    jwe_key k_rsa = {.pkey = rsa}, k_384 = {.pkey = p384}, k_256 = {.pkey = p256};
    expect_pt(g_c51, &k_rsa, 1, g_c_pt, n);         /* 5.1 RSA1_5 */
    expect_pt(g_c54, &k_384, 1, g_c_pt, n);         /* 5.4 compact */
    expect_pt(g_c54_general, &k_384, 1, g_c_pt, n); /* 5.4 general */
    expect_pt(g_c54_flat, &k_384, 1, g_c_pt, n);    /* 5.4 flattened */
    expect_pt(g_c55, &k_256, 1, g_c_pt, n);         /* 5.5 ECDH-ES direct */
    expect_pt(g_c513, &k_384, 1, g_c_pt, n);        /* 5.13 recipient 2 */
    expect_pt(g_c513, &k_rsa, 1, g_c_pt, n);        /* 5.13 recipient 1 */

    /* With several keys, the one that fits is used and reported. */
    jwe_key several[] = {k_256, k_rsa, k_384};
    size_t idx = 99;
    uint8_t *pt = NULL;
    size_t size = 0;
    assert_int_equal(dec(g_c54, several, 3, &pt, &size, &idx, NULL), 0);
    assert_int_equal(idx, 2);
    crypto_free_secret(pt, size);

    /* A key for another curve or type fits no recipient. */
    expect_fail(g_c54, &k_256, 1, -ENOKEY, "P-384");
    expect_fail(g_c54, &k_rsa, 1, -ENOKEY, NULL);
    /* jwe_key.alg restricts the algorithm a key may be used with. */
    jwe_key restricted = {.pkey = p384, .alg = "ECDH-ES+A256KW"};
    expect_fail(g_c54, &restricted, 1, -ENOKEY, NULL);
}

static void test_rfc7520_symmetric(void **state)
{
    (void)state;
    size_t kn = 0, dn = 0, n = strlen(g_c_pt);
    _cleanup_free_ uint8_t *kek = b64u(g_c_kw128, &kn);
    _cleanup_free_ uint8_t *dir = b64u(g_c_dir128, &dn);
    jwe_key k_kw = {.secret = kek, .secret_size = kn};
    jwe_key k_dir = {.secret = dir, .secret_size = dn, .alg = "dir"};
    expect_pt(g_c56, &k_dir, 1, g_c_pt, n);        /* 5.6 dir */
    expect_pt(g_c58, &k_kw, 1, g_c_pt, n);         /* 5.8 compact */
    expect_pt(g_c58_general, &k_kw, 1, g_c_pt, n); /* 5.8 general */
    expect_pt(g_c510, &k_kw, 1, g_c_pt, n);        /* 5.10 aad */
    expect_pt(g_c511, &k_kw, 1, g_c_pt, n);        /* 5.11 shared header */
    expect_pt(g_c512, &k_kw, 1, g_c_pt, n);        /* 5.12 no protected header */
    expect_fail(g_c59, &k_kw, 1, -ENOTSUP, "zip"); /* 5.9 compressed: refused */

    /* 5.10: the aad member is authenticated. */
    _cleanup_free_ char *aad2 = json_set(g_c510, "aad", "WyJ2Y2FyZCJd");
    expect_fail(aad2, &k_kw, 1, -EBADMSG, NULL);
    _cleanup_free_ char *noaad = json_set(g_c510, "aad", NULL);
    expect_fail(noaad, &k_kw, 1, -EBADMSG, NULL);
    /* 5.12: adding a protected header changes the AAD. */
    _cleanup_free_ char *prot = json_set(g_c512, "protected", "e30");
    expect_fail(prot, &k_kw, 1, -EBADMSG, NULL);

    /* Encryption with the cookbook's CEK, IV and header text reproduces it exactly. */
    size_t cn = 0, ivn = 0;
    _cleanup_free_ uint8_t *cek = b64u("aY5_Ghmk9KxWPBLu_glx1w", &cn);
    _cleanup_free_ uint8_t *iv = b64u("Qx0pmsDa8KnJc9Jo", &ivn);
    char *out = NULL;
    assert_int_equal(
        jwe__encrypt_fixed(&out, g_c_pt, n, &k_kw, 1, "A128GCM", JWE_COMPACT, cek, cn, iv, ivn,
                           "{\"alg\":\"A128KW\",\"kid\":\"81b20965-8332-43d9-a468-82160ad91ac8\","
                           "\"enc\":\"A128GCM\"}",
                           NULL),
        0);
    assert_string_equal(out, g_c58);
    free(out);
    _cleanup_free_ uint8_t *iv6 = b64u("refa467QzzKx6QAB", &ivn);
    assert_int_equal(
        jwe__encrypt_fixed(&out, g_c_pt, n, &k_dir, 1, "A128GCM", JWE_COMPACT, NULL, 0, iv6, ivn,
                           "{\"alg\":\"dir\",\"kid\":\"77c7e2b8-6e13-45cf-8672-617b5b45243a\","
                           "\"enc\":\"A128GCM\"}",
                           NULL),
        0);
    assert_string_equal(out, g_c56);
    free(out);
    /* An override that contradicts the recipient is refused. */
    assert_int_equal(jwe__encrypt_fixed(&out, "x", 1, &k_kw, 1, "A128GCM", JWE_COMPACT, NULL, 0,
                                        NULL, 0, "{\"alg\":\"A256KW\",\"enc\":\"A128GCM\"}", NULL),
                     -EINVAL);
    assert_int_equal(jwe__encrypt_fixed(&out, "x", 1, &k_kw, 1, "A128GCM", JWE_COMPACT, NULL, 0,
                                        NULL, 0, "{\"enc\":\"A128GCM\"}", NULL),
                     -EINVAL);
    /* Wrong symmetric key: the key wrap integrity check fails. */
    uint8_t other[16] = {1};
    jwe_key k_other = {.secret = other, .secret_size = 16};
    expect_fail(g_c58, &k_other, 1, -ENOKEY, NULL);
}

/* ---- ocicrypt / go-jose interop ---- */

static json_t *read_json(const char *path)
{
    char *text = NULL;
    size_t size = 0;
    _cleanup_err_ cista_error *err = NULL;
    if (util_read_file(&text, &size, path, 1 << 20, &err) < 0)
        fail_msg("%s: %s", path, err->msg);
    json_t *v = NULL;
    assert_int_equal(js_parse(&v, text, size, 1 << 20, path, NULL), 0);
    free(text);
    return v;
}

/* The JWE of the sample's only layer, base64-decoded from its annotation. */
static char *oci_jwe(const char *sample)
{
    _cleanup_free_ char *ipath = xasprintf(OCI "%s/index.json", sample);
    _cleanup_json_ json_t *index = read_json(ipath);
    const char *digest = json_string_value(
        json_object_get(json_array_get(json_object_get(index, "manifests"), 0), "digest"));
    assert_non_null(digest);
    assert_true(strncmp(digest, "sha256:", 7) == 0);
    _cleanup_free_ char *mpath = xasprintf(OCI "%s/blobs/sha256/%s", sample, digest + 7);
    _cleanup_json_ json_t *manifest = read_json(mpath);
    json_t *layer = json_array_get(json_object_get(manifest, "layers"), 0);
    const char *b64 = json_string_value(json_object_get(json_object_get(layer, "annotations"),
                                                        "org.opencontainers.image.enc.keys.jwe"));
    assert_non_null(b64);
    uint8_t *jwe = NULL;
    size_t size = 0;
    assert_int_equal(b64_decode(&jwe, &size, b64, strlen(b64), NULL), 0);
    assert_int_equal(strlen((char *)jwe), size);
    return (char *)jwe;
}

static char *oci_expected(const char *sample)
{
    _cleanup_json_ json_t *exp = read_json(OCI "expected.json");
    const char *s = json_string_value(
        json_object_get(json_object_get(exp, sample), "private_options_json_exact"));
    assert_non_null(s);
    return xstrdup(s);
}

static void test_ocicrypt_interop(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = file_key(OCI "keys/rsa-priv.pem");
    _cleanup_pkey_ EVP_PKEY *ec = file_key(OCI "keys/ec-priv.pem");
    _cleanup_pkey_ EVP_PKEY *ec_sec1 = file_key(OCI "keys/ec-priv-sec1.pem");
    jwe_key k_rsa = {.pkey = rsa}, k_ec = {.pkey = ec}, k_sec1 = {.pkey = ec_sec1};
    static const char *const samples[] = {"enc-jwe-rsa", "enc-jwe-ec", "enc-jwe-multi"};
    for (size_t i = 0; i < ARRAY_LEN(samples); i++) {
        _cleanup_free_ char *jwe = oci_jwe(samples[i]);
        _cleanup_free_ char *want = oci_expected(samples[i]);
        size_t n = strlen(want);
        bool has_rsa = i != 1, has_ec = i != 0;
        if (has_rsa)
            expect_pt(jwe, &k_rsa, 1, want, n);
        if (has_ec) {
            expect_pt(jwe, &k_ec, 1, want, n);
            expect_pt(jwe, &k_sec1, 1, want, n);
        }
        if (!has_rsa)
            expect_fail(jwe, &k_rsa, 1, -ENOKEY, "ECDH-ES+A256KW");
        if (!has_ec)
            expect_fail(jwe, &k_ec, 1, -ENOKEY, "RSA-OAEP");
        /* Both keys: the first that opens a recipient wins. */
        jwe_key both[] = {k_ec, k_rsa};
        size_t idx = 99;
        uint8_t *pt = NULL;
        size_t size = 0;
        assert_int_equal(dec(jwe, both, 2, &pt, &size, &idx, NULL), 0);
        assert_int_equal(idx, has_rsa ? 1 : 0);
        crypto_free_secret(pt, size);
    }
    /* go-jose's top-level encrypted_key in the general form is its copy of recipient 0's:
     * changing it changes nothing. */
    _cleanup_free_ char *multi = oci_jwe("enc-jwe-multi");
    _cleanup_free_ char *want = oci_expected("enc-jwe-multi");
    _cleanup_free_ char *dup = flip_member(multi, "encrypted_key", 3);
    expect_pt(dup, &k_ec, 1, want, strlen(want));
    expect_pt(dup, &k_rsa, 1, want, strlen(want));
}

/* ---- negative cases ---- */

static void test_wrong_keys(void **state)
{
    (void)state;
    _cleanup_free_ char *rsa_jwe = oci_jwe("enc-jwe-rsa");
    _cleanup_free_ char *ec_jwe = oci_jwe("enc-jwe-ec");
    _cleanup_pkey_ EVP_PKEY *rsa2 = NULL, *ec2 = NULL, *ec384 = NULL;
    assert_int_equal(crypto_key_generate_rsa(&rsa2, 2048, NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&ec2, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&ec384, "P-384", NULL), 0);
    jwe_key k_rsa2 = {.pkey = rsa2}, k_ec2 = {.pkey = ec2}, k_384 = {.pkey = ec384};
    expect_fail(rsa_jwe, &k_rsa2, 1, -ENOKEY, "none of the 1 key");
    expect_fail(ec_jwe, &k_ec2, 1, -ENOKEY, NULL);
    expect_fail(ec_jwe, &k_384, 1, -ENOKEY, NULL);
    expect_fail(ec_jwe, NULL, 0, -ENOKEY, NULL);
    jwe_key all[] = {k_rsa2, k_ec2, k_384};
    expect_fail(rsa_jwe, all, 3, -ENOKEY, NULL);
    expect_fail(ec_jwe, all, 3, -ENOKEY, NULL);
    /* A public key cannot decrypt. */
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    assert_int_equal(crypto_key_load_file(&pub, OCI "keys/rsa-pub.pem", false, NULL), 0);
    jwe_key k_pub = {.pkey = pub};
    expect_fail(rsa_jwe, &k_pub, 1, -ENOKEY, NULL);
}

static void test_tampering(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = file_key(OCI "keys/rsa-priv.pem");
    _cleanup_pkey_ EVP_PKEY *ec = file_key(OCI "keys/ec-priv.pem");
    jwe_key keys[] = {{.pkey = rsa}, {.pkey = ec}};
    static const char *const samples[] = {"enc-jwe-rsa", "enc-jwe-ec"};
    for (size_t i = 0; i < ARRAY_LEN(samples); i++) {
        _cleanup_free_ char *jwe = oci_jwe(samples[i]);
        _cleanup_free_ char *t1 = flip_member(jwe, "tag", 0);
        _cleanup_free_ char *t2 = flip_member(jwe, "tag", 15);
        _cleanup_free_ char *c1 = flip_member(jwe, "ciphertext", 0);
        _cleanup_free_ char *c2 = flip_member(jwe, "ciphertext", 100);
        _cleanup_free_ char *iv = flip_member(jwe, "iv", 11);
        expect_fail(t1, keys, 2, -EBADMSG, "authentication tag");
        expect_fail(t2, keys, 2, -EBADMSG, NULL);
        expect_fail(c1, keys, 2, -EBADMSG, NULL);
        expect_fail(c2, keys, 2, -EBADMSG, NULL);
        expect_fail(iv, keys, 2, -EBADMSG, NULL);
        /* The protected header is the AAD: a changed (still valid) header fails. */
        _cleanup_free_ char *p64 = json_get(jwe, "protected");
        size_t n = 0;
        _cleanup_free_ uint8_t *p = b64u(p64, &n);
        _cleanup_free_ char *hdr = xasprintf("%.*s,\"kid\":\"x\"}", (int)n - 1, (char *)p);
        _cleanup_free_ char *hdr64 = b64u_enc(hdr, strlen(hdr));
        _cleanup_free_ char *aad = json_set(jwe, "protected", hdr64);
        expect_fail(aad, keys, 2, -EBADMSG, NULL);
        /* A changed encrypted key unwraps with no key. */
        _cleanup_free_ char *ek = flip_member(jwe, "encrypted_key", 5);
        expect_fail(ek, keys, 2, -ENOKEY, NULL);
    }
    /* Compact: flip each part in turn. */
    size_t kn = 0;
    _cleanup_free_ uint8_t *kek = b64u(g_c_kw128, &kn);
    jwe_key k_kw = {.secret = kek, .secret_size = kn};
    static const int codes[5] = {-EBADMSG, -ENOKEY, -EBADMSG, -EBADMSG, -EBADMSG};
    for (int part = 1; part < 5; part++) {
        char *parts[5];
        split5(g_c58, parts);
        char *f = flip_b64(parts[part], 1);
        free(parts[part]);
        parts[part] = f;
        _cleanup_free_ char *jwe =
            xasprintf("%s.%s.%s.%s.%s", parts[0], parts[1], parts[2], parts[3], parts[4]);
        free5(parts);
        expect_fail(jwe, &k_kw, 1, codes[part], NULL);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    size_t kn = 0;
    _cleanup_free_ uint8_t *kek = b64u(g_c_kw128, &kn);
    jwe_key k = {.secret = kek, .secret_size = kn};
    static const struct {
        const char *jwe;
        int code;
    } bad[] = {
        {"", -EINVAL},
        {"   \n", -EINVAL},
        {"{", -EINVAL},
        {"[]", -EINVAL},
        {"{}", -EINVAL},
        {"{\"protected\":1,\"iv\":\"\",\"ciphertext\":\"\",\"tag\":\"\"}", -EINVAL},
        {"a.b.c.d", -EINVAL},
        {"a.b.c.d.e.f", -EINVAL},
        {"....", -EINVAL},
        {"e30....", -EINVAL},      /* {} : no alg, no enc */
        {"eyJ!.a.b.c.d", -EINVAL}, /* not base64url */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIn0.+/+/.a.b.c", -EINVAL},
        {"bm90IGpzb24.a.b.c.d", -EINVAL}, /* "not json" */
        /* {"alg":"A128KW","enc":"A999GCM"} */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBOTk5R0NNIn0.AAAA.AAAA.AAAA.AAAA", -ENOTSUP},
        /* {"alg":"PBES2-HS256+A128KW","enc":"A128GCM"}: only unsupported recipients */
        {"eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIn0."
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
         -ENOTSUP},
        /* {"alg":"A128KW","enc":"A128GCM","crit":["exp"],"exp":1} */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwiY3JpdCI6WyJleHAiXSwiZXhwIjoxfQ."
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
         -ENOTSUP},
        /* {"alg":"A128KW","enc":"A128GCM","alg":"dir"}: duplicate member */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwiYWxnIjoiZGlyIn0.a.b.c.d", -EINVAL},
        /* {"alg":"A128KW","enc":"A128GCM"} with a 3-byte IV */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIn0."
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
         -EINVAL},
        /* ... with an encrypted key of the wrong size for A128GCM */
        {"eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIn0."
         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
         -EINVAL},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        _cleanup_free_ char *msg = NULL;
        int r = dec(bad[i].jwe, &k, 1, NULL, NULL, NULL, &msg);
        if (r != bad[i].code)
            fail_msg("case %zu (%s): expected %d, got %d (%s)", i, bad[i].jwe, bad[i].code, r,
                     msg ? msg : "ok");
    }
    /* Duplicate members in the JSON serialisation itself. */
    _cleanup_free_ char *dupe = xasprintf("{\"iv\":\"AAAA\",%s", g_c58_general + 1);
    expect_fail(dupe, &k, 1, -EINVAL, NULL);
    /* JSON with no tag, a recipient that is not an object, an empty list. */
    _cleanup_free_ char *notag = json_set(g_c58_general, "tag", NULL);
    expect_fail(notag, &k, 1, -EINVAL, "tag");
    static const char *const lists[] = {"[]", "[1]", "[{\"header\":5}]"};
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        json_t *doc = NULL;
        assert_int_equal(
            js_parse_object(&doc, g_c58_general, strlen(g_c58_general), JWE_MAX_SIZE, "t", NULL),
            0);
        json_t *l = NULL;
        assert_int_equal(js_parse(&l, lists[i], strlen(lists[i]), 100, "t", NULL), 0);
        json_object_set_new(doc, "recipients", l);
        _cleanup_free_ char *text = js_dump_compact(doc);
        json_decref(doc);
        expect_fail(text, &k, 1, -EINVAL, NULL);
    }
    /* Oversized input is refused before it is parsed. */
    size_t big = (size_t)JWE_MAX_SIZE + 1;
    char *huge = xmalloc(big);
    memset(huge, 'A', big);
    _cleanup_err_ cista_error *err = NULL;
    uint8_t *pt = NULL;
    size_t ps = 0;
    assert_int_equal(jwe_decrypt(&pt, &ps, huge, big, &k, 1, NULL, &err), -EMSGSIZE);
    char *out = NULL;
    assert_int_equal(jwe_encrypt(&out, huge, big, &k, 1, NULL, JWE_COMPACT, NULL), -EMSGSIZE);
    free(huge);
    assert_int_equal(jwe_decrypt(&pt, &ps, NULL, 0, &k, 1, NULL, NULL), -EINVAL);
}

static void test_header_conflicts(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = file_key(OCI "keys/rsa-priv.pem");
    jwe_key k = {.pkey = rsa};
    _cleanup_free_ char *jwe = oci_jwe("enc-jwe-rsa");
    /* "alg" in both the protected and the per-recipient header. */
    json_t *doc = NULL;
    assert_int_equal(js_parse_object(&doc, jwe, strlen(jwe), JWE_MAX_SIZE, "t", NULL), 0);
    json_object_set_new(doc, "header", json_pack("{s:s}", "alg", "RSA-OAEP"));
    _cleanup_free_ char *t1 = js_dump_compact(doc);
    expect_fail(t1, &k, 1, -EINVAL, "more than one");
    /* ... in the shared unprotected header. */
    json_object_del(doc, "header");
    json_object_set_new(doc, "unprotected", json_pack("{s:s}", "enc", "A256GCM"));
    _cleanup_free_ char *t2 = js_dump_compact(doc);
    expect_fail(t2, &k, 1, -EINVAL, "disjoint");
    /* Harmless extra parameters in the unprotected header are fine (not authenticated). */
    json_object_set_new(doc, "unprotected", json_pack("{s:s}", "kid", "k1"));
    _cleanup_free_ char *t3 = js_dump_compact(doc);
    _cleanup_free_ char *want = oci_expected("enc-jwe-rsa");
    expect_pt(t3, &k, 1, want, strlen(want));
    /* "zip" smuggled into the unprotected header is refused just the same. */
    json_object_set_new(doc, "unprotected", json_pack("{s:s}", "zip", "DEF"));
    _cleanup_free_ char *t4 = js_dump_compact(doc);
    expect_fail(t4, &k, 1, -ENOTSUP, "zip");
    /* A top-level "header" beside "recipients" is ambiguous. */
    json_decref(doc);
    _cleanup_free_ char *multi = oci_jwe("enc-jwe-multi");
    assert_int_equal(js_parse_object(&doc, multi, strlen(multi), JWE_MAX_SIZE, "t", NULL), 0);
    json_object_set_new(doc, "header", json_pack("{s:s}", "kid", "k1"));
    _cleanup_free_ char *t5 = js_dump_compact(doc);
    expect_fail(t5, &k, 1, -EINVAL, "ambiguous");
    /* Recipients that disagree on enc. */
    json_object_del(doc, "header");
    json_t *r1 = json_object_get(json_array_get(json_object_get(doc, "recipients"), 1), "header");
    json_object_set_new(r1, "enc", json_string("A128GCM"));
    _cleanup_free_ char *t6 = js_dump_compact(doc);
    expect_fail(t6, &k, 1, -EINVAL, NULL);
    json_decref(doc);
}

/* The ephemeral key must be a point on its curve (invalid-curve attacks). */
static void test_epk_validation(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *ec = file_key(OCI "keys/ec-priv.pem");
    jwe_key k = {.pkey = ec};
    _cleanup_free_ char *jwe = oci_jwe("enc-jwe-ec");
    _cleanup_free_ char *p64 = json_get(jwe, "protected");
    size_t n = 0;
    _cleanup_free_ uint8_t *p = b64u(p64, &n);
    json_t *hdr = NULL;
    assert_int_equal(js_parse_object(&hdr, p, n, 4096, "t", NULL), 0);
    json_t *epk = json_object_get(hdr, "epk");
    _cleanup_free_ char *y = xstrdup(json_string_value(json_object_get(epk, "y")));
    static const char zero32[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const struct {
        const char *member, *value, *msg;
        int code;
    } cases[] = {
        {"y", NULL, "curve", -EINVAL},         /* y with one bit flipped */
        {"y", zero32, "curve", -EINVAL},       /* (x, 0) */
        {"x", zero32, "curve", -EINVAL},       /* (0, y) */
        {"y", "AAAA", "32 bytes", -EINVAL},    /* short coordinate */
        {"crv", "P-384", "48 bytes", -EINVAL}, /* P-256 coordinates labelled P-384 */
        {"crv", "P-192", "P-192", -ENOTSUP},   {"kty", "OKP", "OKP", -ENOTSUP},
        {"d", "AAAA", "private", -EINVAL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        json_t *h = json_deep_copy(hdr);
        json_t *e = json_object_get(h, "epk");
        _cleanup_free_ char *flipped = flip_b64(y, 31);
        json_object_set_new(e, cases[i].member,
                            json_string(cases[i].value ? cases[i].value : flipped));
        _cleanup_free_ char *text = js_dump_compact(h);
        json_decref(h);
        _cleanup_free_ char *t64 = b64u_enc(text, strlen(text));
        _cleanup_free_ char *bad = json_set(jwe, "protected", t64);
        expect_fail(bad, &k, 1, cases[i].code, cases[i].msg);
    }
    json_object_del(hdr, "epk");
    _cleanup_free_ char *text = js_dump_compact(hdr);
    _cleanup_free_ char *t64 = b64u_enc(text, strlen(text));
    _cleanup_free_ char *noepk = json_set(jwe, "protected", t64);
    expect_fail(noepk, &k, 1, -EINVAL, "epk");
    json_decref(hdr);
    (void)epk;
}

/* ---- round trips ---- */

/* @text is exactly what jansson's compact dump of its own parse gives (member order, escapes). */
static void expect_jansson_text(const char *text, size_t len)
{
    json_t *v = json_loadb(text, len, 0, NULL);
    assert_non_null(v);
    _cleanup_free_ char *again = js_dump_compact(v);
    json_decref(v);
    assert_int_equal(strlen(again), len);
    assert_memory_equal(again, text, len);
}

/* The JWE's JSON (its document and its protected header) is laid out as jansson writes it. */
static void expect_jansson_layout(const char *jwe, jwe_format fmt)
{
    const char *prot = jwe;
    size_t prot_len = strcspn(jwe, ".");
    _cleanup_json_ json_t *doc = NULL;
    if (fmt != JWE_COMPACT) {
        expect_jansson_text(jwe, strlen(jwe));
        doc = json_loads(jwe, 0, NULL);
        prot = json_string_value(json_object_get(doc, "protected"));
        prot_len = strlen(prot);
    }
    uint8_t *h = NULL;
    size_t hn = 0;
    assert_int_equal(b64url_decode(&h, &hn, prot, prot_len, NULL), 0);
    expect_jansson_text((const char *)h, hn);
    free(h);
}

static void roundtrip(const jwe_key *enc_keys, size_t count, const jwe_key *dec_key,
                      const char *enc, jwe_format fmt, const char *pt, size_t pt_size)
{
    char *out = NULL;
    _cleanup_err_ cista_error *err = NULL;
    int r = jwe_encrypt(&out, pt, pt_size, enc_keys, count, enc, fmt, &err);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        fail_msg("encrypt (%s, fmt %d): %s", enc ? enc : "default", (int)fmt, m);
    }
    if (fmt == JWE_COMPACT)
        assert_null(strchr(out, '{'));
    else
        assert_true(out[0] == '{');
    expect_jansson_layout(out, fmt);
    expect_pt(out, dec_key, 1, pt, pt_size);
    free(out);
}

static void test_roundtrip(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = file_key(OCI "keys/rsa-priv.pem");
    _cleanup_pkey_ EVP_PKEY *rsa_pub = NULL;
    assert_int_equal(crypto_key_load_file(&rsa_pub, OCI "keys/rsa-pub.pem", false, NULL), 0);
    static const char *const crvs[] = {"P-256", "P-384", "P-521"};
    static const char *const encs[] = {"A128GCM",       "A192GCM",       "A256GCM",
                                       "A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512"};
    static const jwe_format fmts[] = {JWE_COMPACT, JWE_FLATTENED, JWE_GENERAL};
    static const char pt[] = "{\"symkey\":\"secret\"}";
    size_t n = strlen(pt);

    for (size_t f = 0; f < ARRAY_LEN(fmts); f++) {
        for (size_t e = 0; e < ARRAY_LEN(encs); e++) {
            jwe_key oaep = {.pkey = rsa_pub}, oaep256 = {.pkey = rsa_pub, .alg = "RSA-OAEP-256"};
            jwe_key dec_rsa = {.pkey = rsa};
            roundtrip(&oaep, 1, &dec_rsa, encs[e], fmts[f], pt, n);
            roundtrip(&oaep256, 1, &dec_rsa, encs[e], fmts[f], pt, n);
        }
        for (size_t c = 0; c < ARRAY_LEN(crvs); c++) {
            _cleanup_pkey_ EVP_PKEY *ec = NULL;
            assert_int_equal(crypto_key_generate_ec(&ec, crvs[c], NULL), 0);
            static const char *const algs[] = {NULL, "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A192KW"};
            for (size_t a = 0; a < ARRAY_LEN(algs); a++) {
                jwe_key k = {.pkey = ec, .alg = algs[a]};
                jwe_key d = {.pkey = ec};
                roundtrip(&k, 1, &d, NULL, fmts[f], pt, n);
                roundtrip(&k, 1, &d, "A256CBC-HS512", fmts[f], pt, n);
            }
        }
        uint8_t secret[64];
        assert_int_equal(crypto_random(secret, sizeof(secret), NULL), 0);
        static const size_t sizes[] = {16, 24, 32};
        for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
            jwe_key k = {.secret = secret, .secret_size = sizes[s]};
            roundtrip(&k, 1, &k, NULL, fmts[f], pt, n);
        }
        jwe_key dir = {.secret = secret, .secret_size = 64}; /* dir by size */
        roundtrip(&dir, 1, &dir, "A256CBC-HS512", fmts[f], pt, n);
        /* Empty plaintext. */
        jwe_key kw = {.secret = secret, .secret_size = 32};
        roundtrip(&kw, 1, &kw, NULL, fmts[f], "", 0);
        roundtrip(&kw, 1, &kw, "A128CBC-HS256", fmts[f], "", 0);
    }

    /* Recipient misuse. */
    char *out = NULL;
    jwe_key two[] = {{.pkey = rsa_pub}, {.pkey = rsa_pub}};
    assert_int_equal(jwe_encrypt(&out, "x", 1, two, 2, NULL, JWE_FLATTENED, NULL), -EINVAL);
    assert_int_equal(jwe_encrypt(&out, "x", 1, two, 2, NULL, JWE_COMPACT, NULL), -EINVAL);
    assert_int_equal(jwe_encrypt(&out, "x", 1, two, 0, NULL, JWE_GENERAL, NULL), -EINVAL);
    uint8_t s20[20] = {0};
    jwe_key odd = {.secret = s20, .secret_size = 20};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &odd, 1, NULL, JWE_COMPACT, NULL), -EINVAL);
    jwe_key both = {.pkey = rsa_pub, .secret = s20, .secret_size = 20};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &both, 1, NULL, JWE_COMPACT, NULL), -EINVAL);
    jwe_key mismatch = {.pkey = rsa_pub, .alg = "ECDH-ES+A256KW"};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &mismatch, 1, NULL, JWE_COMPACT, NULL), -EINVAL);
    jwe_key unknown = {.pkey = rsa_pub, .alg = "RSA-OAEP-384"};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &unknown, 1, NULL, JWE_COMPACT, NULL), -ENOTSUP);
    jwe_key kw = {.pkey = rsa_pub};
    assert_int_equal(jwe_encrypt(&out, "x", 1, &kw, 1, "A256CTR", JWE_COMPACT, NULL), -ENOTSUP);
}

/* Several recipients in the general serialisation, laid out as go-jose writes it. */
static void test_multi_recipient(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = file_key(OCI "keys/rsa-priv.pem");
    _cleanup_pkey_ EVP_PKEY *ec = file_key(OCI "keys/ec-priv.pem");
    _cleanup_pkey_ EVP_PKEY *rsa_pub = NULL, *ec_pub = NULL, *p521 = NULL;
    assert_int_equal(crypto_key_load_file(&rsa_pub, OCI "keys/rsa-pub.pem", false, NULL), 0);
    assert_int_equal(crypto_key_load_file(&ec_pub, OCI "keys/ec-pub.pem", false, NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&p521, "P-521", NULL), 0);
    uint8_t secret[32];
    assert_int_equal(crypto_random(secret, sizeof(secret), NULL), 0);
    jwe_key rcpts[] = {{.pkey = rsa_pub},
                       {.pkey = ec_pub},
                       {.secret = secret, .secret_size = 32},
                       {.pkey = p521, .alg = "ECDH-ES+A128KW"}};
    static const char pt[] = "multi";
    char *out = NULL;
    assert_int_equal(jwe_encrypt(&out, pt, 5, rcpts, 4, NULL, JWE_GENERAL, NULL), 0);
    expect_jansson_layout(out, JWE_GENERAL);

    json_t *doc = NULL;
    assert_int_equal(js_parse_object(&doc, out, strlen(out), JWE_MAX_SIZE, "t", NULL), 0);
    _cleanup_free_ char *p64 = json_get(out, "protected");
    size_t n = 0;
    _cleanup_free_ uint8_t *prot = b64u(p64, &n);
    assert_int_equal(n, strlen("{\"enc\":\"A256GCM\"}"));
    assert_memory_equal(prot, "{\"enc\":\"A256GCM\"}", n);
    json_t *list = json_object_get(doc, "recipients");
    assert_int_equal(json_array_size(list), 4);
    static const char *const algs[] = {"RSA-OAEP", "ECDH-ES+A256KW", "A256KW", "ECDH-ES+A128KW"};
    for (size_t i = 0; i < 4; i++) {
        json_t *h = json_object_get(json_array_get(list, i), "header");
        assert_string_equal(json_string_value(json_object_get(h, "alg")), algs[i]);
        assert_true((json_object_get(h, "epk") != NULL) == (i == 1 || i == 3));
        assert_null(json_object_get(h, "enc"));
        assert_non_null(json_object_get(json_array_get(list, i), "encrypted_key"));
    }
    assert_null(json_object_get(doc, "encrypted_key"));
    json_decref(doc);

    jwe_key decs[] = {
        {.pkey = rsa}, {.pkey = ec}, {.secret = secret, .secret_size = 32}, {.pkey = p521}};
    for (size_t i = 0; i < 4; i++) {
        size_t idx = 99;
        uint8_t *got = NULL;
        size_t size = 0;
        assert_int_equal(dec(out, &decs[i], 1, &got, &size, &idx, NULL), 0);
        assert_int_equal(idx, 0);
        assert_int_equal(size, 5);
        assert_memory_equal(got, pt, 5);
        crypto_free_secret(got, size);
    }
    /* Tampering with the shared ciphertext fails for every recipient's key. */
    _cleanup_free_ char *bad = flip_member(out, "ciphertext", 2);
    expect_fail(bad, decs, 4, -EBADMSG, NULL);
    free(out);

    /* Flattened output keeps alg, enc and epk in the protected header (go-jose's layout). */
    assert_int_equal(jwe_encrypt(&out, pt, 5, &rcpts[1], 1, NULL, JWE_FLATTENED, NULL), 0);
    _cleanup_free_ char *f64 = json_get(out, "protected");
    _cleanup_free_ uint8_t *fprot = b64u(f64, &n);
    assert_true(strncmp((char *)fprot,
                        "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"epk\":{"
                        "\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":",
                        63) == 0);
    assert_int_equal(js_parse_object(&doc, out, strlen(out), JWE_MAX_SIZE, "t", NULL), 0);
    assert_null(json_object_get(doc, "header"));
    assert_null(json_object_get(doc, "recipients"));
    json_decref(doc);
    free(out);

    /* dir and ECDH-ES cannot share a CEK with other recipients. */
    jwe_key direct[] = {{.pkey = ec_pub, .alg = "ECDH-ES"}, {.pkey = rsa_pub}};
    assert_int_equal(jwe_encrypt(&out, pt, 5, direct, 2, NULL, JWE_GENERAL, NULL), -EINVAL);
}

/* ---- JWK ---- */

static void test_jwk(void **state)
{
    (void)state;
    /* RFC 7638 §3.1. */
    static const char rfc7638[] =
        "{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt"
        "VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6"
        "4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9"
        "1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINH"
        "aQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\","
        "\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
    json_t *j = NULL;
    assert_int_equal(js_parse_object(&j, rfc7638, strlen(rfc7638), 1 << 16, "t", NULL), 0);
    char *tp = NULL;
    assert_int_equal(jwk_thumbprint(&tp, j, NULL), 0);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(tp);
    /* The thumbprint of the key's own JWK is the same. */
    EVP_PKEY *k = NULL;
    assert_int_equal(jwk_to_key(&k, j, NULL), 0);
    json_decref(j);
    assert_int_equal(jwk_from_key(&j, k, false, NULL), 0);
    assert_int_equal(jwk_thumbprint(&tp, j, NULL), 0);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(tp);
    json_decref(j);
    /* No private part: a private JWK cannot be made. */
    assert_int_equal(jwk_from_key(&j, k, true, NULL), -EINVAL);
    EVP_PKEY_free(k);

    /* Round trips: RFC 7520 keys (RSA with CRT values, P-384, P-256) and generated ones. */
    const char *texts[] = {g_c_rsa, g_c_p384, g_c_p256, g_a1_key};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
        _cleanup_pkey_ EVP_PKEY *key = jwk_key(texts[i]);
        json_t *orig = NULL;
        assert_int_equal(js_parse_object(&orig, texts[i], strlen(texts[i]), 1 << 16, "t", NULL), 0);
        json_t *priv = NULL;
        assert_int_equal(jwk_from_key(&priv, key, true, NULL), 0);
        /* Same members, same values, as published. */
        const char *name;
        json_t *v;
        json_object_foreach(orig, name, v)
        {
            json_t *mine = json_object_get(priv, name);
            assert_non_null(mine);
            assert_true(json_equal(mine, v));
        }
        assert_int_equal(json_object_size(priv), json_object_size(orig));
        EVP_PKEY *back = NULL;
        assert_int_equal(jwk_to_key(&back, priv, NULL), 0);
        assert_true(crypto_key_public_eq(back, key));
        EVP_PKEY_free(back);
        json_decref(priv);
        json_decref(orig);
    }
    static const char *const crvs[] = {"P-256", "P-384", "P-521"};
    for (size_t i = 0; i < ARRAY_LEN(crvs); i++) {
        _cleanup_pkey_ EVP_PKEY *key = NULL;
        assert_int_equal(crypto_key_generate_ec(&key, crvs[i], NULL), 0);
        json_t *pub = NULL;
        assert_int_equal(jwk_from_key(&pub, key, false, NULL), 0);
        assert_null(json_object_get(pub, "d"));
        EVP_PKEY *back = NULL;
        assert_int_equal(jwk_to_key(&back, pub, NULL), 0);
        assert_true(crypto_key_public_eq(back, key));
        EVP_PKEY_free(back);
        json_decref(pub);
    }

    /* Bad JWKs. */
    static const struct {
        const char *text;
        int code;
    } bad[] = {
        {"{\"kty\":\"oct\",\"k\":\"AAAA\"}", -ENOTSUP},
        {"{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AAAA\"}", -ENOTSUP},
        {"{\"crv\":\"P-256\"}", -EINVAL},
        {"{\"kty\":\"RSA\",\"e\":\"AQAB\"}", -EINVAL},
        {"{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"oth\":[]}", -ENOTSUP},
        {"{\"kty\":\"RSA\",\"n\":\"++++\",\"e\":\"AQAB\"}", -EINVAL},
        {"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}", -EINVAL},
        /* P-256 point (Alice's x) with Bob's y: off the curve */
        {"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0\","
         "\"y\":\"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck\"}",
         -EINVAL},
        /* Bob's public key with Alice's d: private and public do not match */
        {"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ\","
         "\"y\":\"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck\","
         "\"d\":\"0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo\"}",
         -EINVAL},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *b = NULL;
        assert_int_equal(js_parse_object(&b, bad[i].text, strlen(bad[i].text), 4096, "t", NULL), 0);
        EVP_PKEY *x = NULL;
        _cleanup_err_ cista_error *err = NULL;
        int r = jwk_to_key(&x, b, &err);
        if (r != bad[i].code)
            fail_msg("bad JWK %zu: expected %d, got %d", i, bad[i].code, r);
        assert_null(x);
        json_decref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7516_a1),        cmocka_unit_test(test_rfc7516_a2),
        cmocka_unit_test(test_rfc7516_a3),        cmocka_unit_test(test_rfc7520_asymmetric),
        cmocka_unit_test(test_rfc7520_symmetric), cmocka_unit_test(test_ocicrypt_interop),
        cmocka_unit_test(test_wrong_keys),        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_malformed),         cmocka_unit_test(test_header_conflicts),
        cmocka_unit_test(test_epk_validation),    cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_multi_recipient),   cmocka_unit_test(test_jwk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
