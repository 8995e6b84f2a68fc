/*
 * test_crypto.c - the crypto primitives against published vectors:
 * FIPS 180 / RFC 6234 "abc" digests, RFC 4231 HMAC-SHA-256, NIST SP 800-38A
 * F.5.5 CTR-AES256, the GCM specification's (McGrew-Viega, as in SP 800-38D
 * validation) test cases 13, 14 and 16, RFC 7518 Appendix B AES-CBC-HMAC-SHA2,
 * RFC 3394 §4 key wrap, RFC 7518 Appendix C ECDH-ES + Concat KDF; plus key
 * loading in every container we accept, using the ocicrypt test keys.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/encoder.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define KEYS "../shared/testdata/ocicrypt/keys/"

/* Decode hex (spaces allowed) into a fresh buffer. */
static uint8_t *unhex(const char *s, size_t *size)
{
    _cleanup_free_ char *clean = xmalloc(strlen(s) + 1);
    size_t n = 0;
    for (const char *p = s; *p; p++)
        if (*p != ' ')
            clean[n++] = *p;
    clean[n] = 0;
    uint8_t *out = NULL;
    cista_error *err = NULL;
    assert_int_equal(hex_decode(&out, size, clean, n, &err), 0);
    return out;
}

static void expect_hex(const uint8_t *got, size_t size, const char *want)
{
    size_t n = 0;
    _cleanup_free_ uint8_t *w = unhex(want, &n);
    assert_int_equal(size, n);
    assert_memory_equal(got, w, n);
}

static EVP_PKEY *load(const char *path, bool priv)
{
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    int r = crypto_key_load_file(&k, path, priv, &err);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        fail_msg("%s: %s", path, m);
    }
    return k;
}

static EVP_PKEY *load_jwk(const char *text)
{
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(crypto_key_load(&k, text, strlen(text), false, &err), 0);
    return k;
}

/* ---- randomness, comparison ---- */

static void test_random_memeq(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    assert_int_equal(crypto_random(a, sizeof(a), NULL), 0);
    assert_int_equal(crypto_random(b, sizeof(b), NULL), 0);
    assert_false(crypto_memeq(a, b, sizeof(a)));
    assert_false(crypto_memeq(a, zero, sizeof(a)));
    assert_true(crypto_memeq(a, a, sizeof(a)));
    assert_true(crypto_memeq(a, b, 0));
    assert_int_equal(crypto_random(NULL, 0, NULL), 0);
    crypto_cleanse(a, sizeof(a));
    assert_true(crypto_memeq(a, zero, sizeof(a)));
    uint8_t *s = xmalloc(16);
    memset(s, 0x5a, 16);
    crypto_free_secret(s, 16);
    crypto_free_secret(NULL, 16);
}

/* ---- hashes: FIPS 180-2 appendix / RFC 6234 "abc" ---- */

static void test_hash_abc(void **state)
{
    (void)state;
    static const struct {
        crypto_hash_alg alg;
        const char *name, *digest;
    } v[] = {
        {CRYPTO_SHA1, "sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {CRYPTO_SHA256, "sha256",
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {CRYPTO_SHA384, "sha384",
         "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
         "8086072ba1e7cc2358baeca134c825a7"},
        {CRYPTO_SHA512, "sha512",
         "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
         "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        uint8_t out[CRYPTO_MAX_HASH];
        size_t n = crypto_hash_size(v[i].alg);
        assert_string_equal(crypto_hash_name(v[i].alg), v[i].name);
        crypto_hash_oneshot(v[i].alg, "abc", 3, out);
        expect_hex(out, n, v[i].digest);
        /* Streaming in pieces, and after a reset, gives the same digest. */
        _cleanup_hash_ crypto_hash *h = crypto_hash_new(v[i].alg);
        crypto_hash_update(h, "xyz", 3);
        crypto_hash_reset(h);
        crypto_hash_update(h, "a", 1);
        crypto_hash_update(h, "", 0);
        crypto_hash_update(h, "bc", 2);
        memset(out, 0, sizeof(out));
        crypto_hash_final(h, out);
        expect_hex(out, n, v[i].digest);
    }
}

/* ---- HMAC-SHA-256: RFC 4231 §4.2-4.8 (test cases 1, 2, 3, 4, 6, 7) ---- */

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t k131[131], k20aa[20], k20b[20], k25[25], d50dd[50], d50cd[50];
    memset(k131, 0xaa, sizeof(k131));
    memset(k20aa, 0xaa, sizeof(k20aa));
    memset(k20b, 0x0b, sizeof(k20b));
    for (size_t i = 0; i < sizeof(k25); i++)
        k25[i] = (uint8_t)(i + 1);
    memset(d50dd, 0xdd, sizeof(d50dd));
    memset(d50cd, 0xcd, sizeof(d50cd));
    static const char m6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char m7[] = "This is a test using a larger than block-size key and a larger than "
                             "block-size data. The key needs to be hashed before being used by the "
                             "HMAC algorithm.";
    const struct {
        const void *key;
        size_t key_size;
        const void *data;
        size_t size;
        const char *mac;
    } v[] = {
        {k20b, 20, "Hi There", 8,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"Jefe", 4, "what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {k20aa, 20, d50dd, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k25, 25, d50cd, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {k131, 131, m6, strlen(m6),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {k131, 131, m7, strlen(m7),
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        uint8_t out[32];
        _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, v[i].key, v[i].key_size);
        /* Byte by byte: the streaming interface must equal the one-shot result. */
        for (size_t j = 0; j < v[i].size; j++)
            crypto_hmac_update(m, (const uint8_t *)v[i].data + j, 1);
        crypto_hmac_final(m, out);
        expect_hex(out, 32, v[i].mac);
    }
    /* An empty key is a valid key (HMAC pads it with zeros), not "no key". */
    uint8_t a[32], b[32];
    _cleanup_hmac_ crypto_hmac *m1 = crypto_hmac_new(CRYPTO_SHA256, NULL, 0);
    _cleanup_hmac_ crypto_hmac *m2 = crypto_hmac_new(CRYPTO_SHA256, "\0\0\0", 3);
    crypto_hmac_update(m1, "x", 1);
    crypto_hmac_update(m2, "x", 1);
    crypto_hmac_final(m1, a);
    crypto_hmac_final(m2, b);
    assert_memory_equal(a, b, 32);
}

/* ---- AES-256-CTR: NIST SP 800-38A F.5.5 ---- */

static void test_ctr_sp800_38a(void **state)
{
    (void)state;
    size_t n;
    _cleanup_free_ uint8_t *key =
        unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", &n);
    _cleanup_free_ uint8_t *iv = unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", &n);
    size_t pt_size;
    _cleanup_free_ uint8_t *pt = unhex("6bc1bee22e409f96e93d7e117393172a"
                                       "ae2d8a571e03ac9c9eb76fac45af8e51"
                                       "30c81c46a35ce411e5fbc1191a0a52ef"
                                       "f69f2445df4f9b17ad2b417be66c3710",
                                       &pt_size);
    static const char want[] = "601ec313775789a5b7a7f504bbf3d228"
                               "f443e3ca4d62b59aca84e990cacaf5c5"
                               "2b0930daa23de94ce87017ba2d84988d"
                               "dfc9c58db67aada613c2dd08457941a6";
    uint8_t out[64];
    {
        _cleanup_ctr_ crypto_ctr *c = crypto_ctr_new(key, iv);
        crypto_ctr_update(c, pt, out, pt_size);
        expect_hex(out, sizeof(out), want);
    }
    {
        /* Odd slices cross block boundaries; in place, as the image module streams. */
        memcpy(out, pt, 64);
        _cleanup_ctr_ crypto_ctr *c = crypto_ctr_new(key, iv);
        size_t cuts[] = {1, 15, 17, 0, 30, 1};
        size_t off = 0;
        for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
            crypto_ctr_update(c, out + off, out + off, cuts[i]);
            off += cuts[i];
        }
        assert_int_equal(off, 64);
        expect_hex(out, sizeof(out), want);
    }
    {
        /* Decryption is the same operation. */
        _cleanup_ctr_ crypto_ctr *c = crypto_ctr_new(key, iv);
        crypto_ctr_update(c, out, out, 64);
        assert_memory_equal(out, pt, 64);
    }
}

/* ---- AES-GCM: GCM specification test cases 13, 14, 16 (AES-256) ---- */

static void test_gcm_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *key, *iv, *aad, *pt, *ct, *tag;
    } v[] = {
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "00000000000000000000000000000000",
         "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
        {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "cafebabefacedbaddecaf888", "feedfacedeadbeeffeedfacedeadbeefabaddad2",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
         "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
         "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
         "76fc6ece0f4e1768cddf8853bb2d551b"},
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        size_t key_size, iv_size, aad_size, pt_size;
        _cleanup_free_ uint8_t *key = unhex(v[i].key, &key_size);
        _cleanup_free_ uint8_t *iv = unhex(v[i].iv, &iv_size);
        _cleanup_free_ uint8_t *aad = unhex(v[i].aad, &aad_size);
        _cleanup_free_ uint8_t *pt = unhex(v[i].pt, &pt_size);
        uint8_t ct[64], tag[16], back[64];
        assert_int_equal(crypto_gcm_encrypt(ct, tag, key, key_size, iv, iv_size, aad, aad_size, pt,
                                            pt_size, NULL),
                         0);
        expect_hex(ct, pt_size, v[i].ct);
        expect_hex(tag, 16, v[i].tag);
        assert_int_equal(crypto_gcm_decrypt(back, key, key_size, iv, iv_size, aad, aad_size, ct,
                                            pt_size, tag, NULL),
                         0);
        assert_memory_equal(back, pt, pt_size);

        /* Any flipped bit: tag, ciphertext, AAD, IV. */
        _cleanup_err_ cista_error *err = NULL;
        tag[0] ^= 1;
        assert_int_equal(crypto_gcm_decrypt(back, key, key_size, iv, iv_size, aad, aad_size, ct,
                                            pt_size, tag, &err),
                         -EBADMSG);
        assert_non_null(err);
        tag[0] ^= 1;
        if (pt_size) {
            ct[pt_size - 1] ^= 0x80;
            assert_int_equal(crypto_gcm_decrypt(back, key, key_size, iv, iv_size, aad, aad_size, ct,
                                                pt_size, tag, NULL),
                             -EBADMSG);
            ct[pt_size - 1] ^= 0x80;
        }
        uint8_t extra = 1;
        assert_int_equal(crypto_gcm_decrypt(back, key, key_size, iv, iv_size,
                                            aad_size ? aad : &extra, aad_size ? aad_size - 1 : 1,
                                            ct, pt_size, tag, NULL),
                         -EBADMSG);
        iv[0] ^= 1;
        assert_int_equal(crypto_gcm_decrypt(back, key, key_size, iv, iv_size, aad, aad_size, ct,
                                            pt_size, tag, NULL),
                         -EBADMSG);
    }
    uint8_t key[32] = {0}, iv[12] = {0}, tag[16], ct[1];
    /* Test case 13 again with no buffers at all: an empty message needs none. */
    assert_int_equal(crypto_gcm_encrypt(NULL, tag, key, 32, iv, 12, NULL, 0, NULL, 0, NULL), 0);
    expect_hex(tag, 16, "530f8afbc74536b9a963b4f1c4cb738b");
    assert_int_equal(crypto_gcm_decrypt(NULL, key, 32, iv, 12, NULL, 0, NULL, 0, tag, NULL), 0);
    assert_int_equal(crypto_gcm_encrypt(ct, tag, key, 20, iv, 12, NULL, 0, NULL, 0, NULL), -EINVAL);
    assert_int_equal(crypto_gcm_encrypt(ct, tag, key, 32, iv, 0, NULL, 0, NULL, 0, NULL), -EINVAL);
}

/* ---- AES_CBC_HMAC_SHA2: RFC 7518 Appendix B.1, B.2, B.3 ---- */

static void test_cbc_hs_rfc7518_b(void **state)
{
    (void)state;
    static const char p_hex[] = "41206369706865722073797374656d206d757374206e6f742062652072657175"
                                "6972656420746f206265207365637265742c20616e64206974206d7573742062"
                                "652061626c6520746f2066616c6c20696e746f207468652068616e6473206f66"
                                "2074686520656e656d7920776974686f757420696e636f6e76656e69656e6365";
    static const char iv_hex[] = "1af38c2dc2b96ffdd86694092341bc04";
    static const char a_hex[] = "546865207365636f6e64207072696e6369706c65206f662041756775737465204b"
                                "6572636b686f666673";
    static const struct {
        size_t key_size;
        const char *e, *t;
    } v[] = {
        {32,
         "c80edfa32ddf39d5ef00c0b468834279a2e46a1b8049f792f76bfe54b903a9c9"
         "a94ac9b47ad2655c5f10f9aef71427e2fc6f9b3f399a221489f16362c7032336"
         "09d45ac69864e3321cf82935ac4096c86e133314c54019e8ca7980dfa4b9cf1b"
         "384c486f3a54c51078158ee5d79de59fbd34d848b3d69550a67646344427ade5"
         "4b8851ffb598f7f80074b9473c82e2db",
         "652c3fa36b0a7c5b3219fab3a30bc1c4"},
        {48,
         "ea65da6b59e61edb419be62d19712ae5d303eeb50052d0dfd6697f77224c8edb"
         "000d279bdc14c1072654bd30944230c657bed4ca0c9f4a8466f22b226d174621"
         "4bf8cfc2400add9f5126e479663fc90b3bed787a2f0ffcbf3904be2a641d5c21"
         "05bfe591bae23b1d7449e532eef60a9ac8bb6c6b01d35d49787bcd57ef484927"
         "f280adc91ac0c4e79c7b11efc60054e3",
         "8490ac0e58949bfe51875d733f93ac2075168039ccc733d7"},
        {64,
         "4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd"
         "822c301dd67c373bccb584ad3e9279c2e6d12a1374b77f077553df829410446b"
         "36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3"
         "a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950b"
         "be2638d09dd7a4930930806d0703b1f6",
         "4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5"},
    };
    size_t pt_size, iv_size, a_size;
    _cleanup_free_ uint8_t *pt = unhex(p_hex, &pt_size);
    _cleanup_free_ uint8_t *iv = unhex(iv_hex, &iv_size);
    _cleanup_free_ uint8_t *a = unhex(a_hex, &a_size);
    assert_int_equal(iv_size, 16);
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        uint8_t key[64], tag[32];
        for (size_t j = 0; j < sizeof(key); j++)
            key[j] = (uint8_t)j;
        uint8_t *ct = NULL, *back = NULL;
        size_t ct_size = 0, tag_size = 0, back_size = 0;
        assert_int_equal(crypto_cbc_hs_encrypt(&ct, &ct_size, tag, &tag_size, key, v[i].key_size,
                                               iv, a, a_size, pt, pt_size, NULL),
                         0);
        expect_hex(ct, ct_size, v[i].e);
        expect_hex(tag, tag_size, v[i].t);
        assert_int_equal(crypto_cbc_hs_decrypt(&back, &back_size, key, v[i].key_size, iv, a, a_size,
                                               ct, ct_size, tag, tag_size, NULL),
                         0);
        assert_int_equal(back_size, pt_size);
        assert_memory_equal(back, pt, pt_size);
        crypto_free_secret(back, back_size);
        back = NULL;

        tag[tag_size - 1] ^= 1;
        assert_int_equal(crypto_cbc_hs_decrypt(&back, &back_size, key, v[i].key_size, iv, a, a_size,
                                               ct, ct_size, tag, tag_size, NULL),
                         -EBADMSG);
        tag[tag_size - 1] ^= 1;
        ct[0] ^= 1;
        assert_int_equal(crypto_cbc_hs_decrypt(&back, &back_size, key, v[i].key_size, iv, a, a_size,
                                               ct, ct_size, tag, tag_size, NULL),
                         -EBADMSG);
        ct[0] ^= 1;
        assert_int_equal(crypto_cbc_hs_decrypt(&back, &back_size, key, v[i].key_size, iv, a,
                                               a_size - 1, ct, ct_size, tag, tag_size, NULL),
                         -EBADMSG);
        /* A truncated tag is not a shorter valid tag. */
        assert_int_equal(crypto_cbc_hs_decrypt(&back, &back_size, key, v[i].key_size, iv, a, a_size,
                                               ct, ct_size, tag, tag_size - 1, NULL),
                         -EBADMSG);
        assert_null(back);
        free(ct);
    }
}

/* ---- AES key wrap: RFC 3394 §4.1-4.6 ---- */

static void test_keywrap_rfc3394(void **state)
{
    (void)state;
    static const struct {
        const char *kek, *data, *wrapped;
    } v[] = {
        {"000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
         "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
        {"000102030405060708090A0B0C0D0E0F1011121314151617", "00112233445566778899AABBCCDDEEFF",
         "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"},
        {"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
         "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
        {"000102030405060708090A0B0C0D0E0F1011121314151617",
         "00112233445566778899AABBCCDDEEFF0001020304050607",
         "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2"},
        {"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
         "00112233445566778899AABBCCDDEEFF0001020304050607",
         "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1"},
        {"000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
         "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
         "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        size_t kek_size, data_size, wrapped_size;
        _cleanup_free_ uint8_t *kek = unhex(v[i].kek, &kek_size);
        _cleanup_free_ uint8_t *data = unhex(v[i].data, &data_size);
        _cleanup_free_ uint8_t *wrapped = unhex(v[i].wrapped, &wrapped_size);
        uint8_t out[40], back[32];
        assert_int_equal(crypto_aes_wrap(out, kek, kek_size, data, data_size, NULL), 0);
        assert_memory_equal(out, wrapped, wrapped_size);
        assert_int_equal(crypto_aes_unwrap(back, kek, kek_size, wrapped, wrapped_size, NULL), 0);
        assert_memory_equal(back, data, data_size);
        wrapped[wrapped_size / 2] ^= 4;
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(crypto_aes_unwrap(back, kek, kek_size, wrapped, wrapped_size, &err),
                         -EBADMSG);
        assert_non_null(err);
        kek[0] ^= 1;
        wrapped[wrapped_size / 2] ^= 4;
        assert_int_equal(crypto_aes_unwrap(back, kek, kek_size, wrapped, wrapped_size, NULL),
                         -EBADMSG);
    }
    uint8_t kek[16] = {0}, in[24] = {0}, out[32];
    assert_int_equal(crypto_aes_wrap(out, kek, 16, in, 12, NULL), -EINVAL);
    assert_int_equal(crypto_aes_wrap(out, kek, 8, in, 16, NULL), -EINVAL);
    assert_int_equal(crypto_aes_unwrap(out, kek, 16, in, 16, NULL), -EINVAL);
}

/* ---- ECDH-ES + Concat KDF: RFC 7518 Appendix C ---- */

static const char g_alice[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                              "\"x\":\"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0\","
                              "\"y\":\"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps\","
                              "\"d\":\"0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo\"}";
static const char g_bob[] = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                            "\"x\":\"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ\","
                            "\"y\":\"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck\","
                            "\"d\":\"VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw\"}";

static void test_ecdh_concat_kdf_rfc7518_c(void **state)
{
    (void)state;
    static const uint8_t z_want[32] = {158, 86,  217, 29,  129, 113, 53,  211, 114, 131, 66,
                                       131, 191, 132, 38,  156, 251, 49,  110, 163, 218, 128,
                                       106, 72,  246, 218, 167, 121, 140, 254, 144, 196};
    static const uint8_t key_want[16] = {86, 170, 141, 234, 248, 35,  109, 32,
                                         92, 34,  40,  205, 113, 167, 16,  26};
    _cleanup_pkey_ EVP_PKEY *alice = load_jwk(g_alice);
    _cleanup_pkey_ EVP_PKEY *bob = load_jwk(g_bob);
    uint8_t *z = NULL, *z2 = NULL;
    size_t z_size = 0, z2_size = 0;
    assert_int_equal(crypto_ecdh(&z, &z_size, alice, bob, NULL), 0);
    assert_int_equal(crypto_ecdh(&z2, &z2_size, bob, alice, NULL), 0);
    assert_int_equal(z_size, 32);
    assert_memory_equal(z, z_want, 32);
    assert_memory_equal(z2, z_want, 32);
    uint8_t key[16];
    assert_int_equal(crypto_concat_kdf(key, sizeof(key), z, z_size, "A128GCM",
                                       (const uint8_t *)"Alice", 5, (const uint8_t *)"Bob", 3,
                                       NULL),
                     0);
    assert_memory_equal(key, key_want, 16);
    /* Every OtherInfo field is bound: AlgorithmID, PartyUInfo, keydatalen. */
    uint8_t other[16], longer[32];
    assert_int_equal(crypto_concat_kdf(other, 16, z, z_size, "A128KW", (const uint8_t *)"Alice", 5,
                                       (const uint8_t *)"Bob", 3, NULL),
                     0);
    assert_memory_not_equal(other, key_want, 16);
    assert_int_equal(crypto_concat_kdf(other, 16, z, z_size, "A128GCM", NULL, 0,
                                       (const uint8_t *)"Bob", 3, NULL),
                     0);
    assert_memory_not_equal(other, key_want, 16);
    assert_int_equal(crypto_concat_kdf(longer, 32, z, z_size, "A128GCM", (const uint8_t *)"Alice",
                                       5, (const uint8_t *)"Bob", 3, NULL),
                     0);
    assert_memory_not_equal(longer, key_want, 16);
    crypto_free_secret(z, z_size);
    crypto_free_secret(z2, z2_size);

    /* Keys on different curves do not agree. */
    _cleanup_pkey_ EVP_PKEY *p384 = NULL;
    assert_int_equal(crypto_key_generate_ec(&p384, "P-384", NULL), 0);
    assert_int_equal(crypto_ecdh(&z, &z_size, alice, p384, NULL), -EINVAL);
}

/* ---- RSA ---- */

static void test_rsa_oaep(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *priv = load(KEYS "rsa-priv.pem", true);
    _cleanup_pkey_ EVP_PKEY *pub = load(KEYS "rsa-pub.pem", false);
    _cleanup_pkey_ EVP_PKEY *other = NULL;
    assert_int_equal(crypto_key_generate_rsa(&other, 2048, NULL), 0);
    static const uint8_t cek[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    crypto_hash_alg mds[] = {CRYPTO_SHA1, CRYPTO_SHA256};
    for (size_t i = 0; i < ARRAY_LEN(mds); i++) {
        uint8_t *ct = NULL, *back = NULL;
        size_t ct_size = 0, back_size = 0;
        assert_int_equal(crypto_rsa_oaep_encrypt(&ct, &ct_size, pub, mds[i], cek, 32, NULL), 0);
        assert_int_equal(ct_size, 256);
        assert_int_equal(
            crypto_rsa_oaep_decrypt(&back, &back_size, priv, mds[i], ct, ct_size, NULL), 0);
        assert_int_equal(back_size, 32);
        assert_memory_equal(back, cek, 32);
        crypto_free_secret(back, back_size);
        /* The other hash, another key, a flipped bit: all fail. */
        assert_int_equal(
            crypto_rsa_oaep_decrypt(&back, &back_size, priv, mds[1 - i], ct, ct_size, NULL),
            -EBADMSG);
        assert_int_equal(
            crypto_rsa_oaep_decrypt(&back, &back_size, other, mds[i], ct, ct_size, NULL), -EBADMSG);
        ct[10] ^= 1;
        assert_int_equal(
            crypto_rsa_oaep_decrypt(&back, &back_size, priv, mds[i], ct, ct_size, NULL), -EBADMSG);
        free(ct);
    }
    uint8_t *x = NULL;
    size_t xs = 0;
    /* Decrypting needs the private key; EC keys are not RSA keys. */
    assert_int_equal(crypto_rsa_oaep_decrypt(&x, &xs, pub, CRYPTO_SHA1, cek, 32, NULL), -EINVAL);
    _cleanup_pkey_ EVP_PKEY *ec = load(KEYS "ec-priv.pem", true);
    assert_int_equal(crypto_rsa_oaep_encrypt(&x, &xs, ec, CRYPTO_SHA1, cek, 32, NULL), -EINVAL);
}

/* ---- key loading ---- */

static char *encode_key(EVP_PKEY *key, int selection, const char *format, const char *structure,
                        size_t *size)
{
    OSSL_ENCODER_CTX *ctx = OSSL_ENCODER_CTX_new_for_pkey(key, selection, format, structure, NULL);
    assert_non_null(ctx);
    unsigned char *data = NULL;
    size_t len = 0;
    assert_int_equal(OSSL_ENCODER_to_data(ctx, &data, &len), 1);
    OSSL_ENCODER_CTX_free(ctx);
    char *out = xmalloc(len + 1);
    memcpy(out, data, len);
    out[len] = 0;
    OPENSSL_free(data);
    *size = len;
    return out;
}

static void expect_load(const char *data, size_t size, bool priv, EVP_PKEY *same)
{
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    int r = crypto_key_load(&k, data, size, priv, &err);
    if (r < 0) {
        _cleanup_free_ char *m = err_str(err);
        fail_msg("load: %s", m);
    }
    assert_true(crypto_key_public_eq(k, same));
    EVP_PKEY_free(k);
}

static void test_key_load_formats(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *rsa = load(KEYS "rsa-priv.pem", true);
    _cleanup_pkey_ EVP_PKEY *rsa_pub = load(KEYS "rsa-pub.pem", false);
    _cleanup_pkey_ EVP_PKEY *rsa_cert = load(KEYS "rsa-cert.pem", false);
    _cleanup_pkey_ EVP_PKEY *ec = load(KEYS "ec-priv.pem", true);
    _cleanup_pkey_ EVP_PKEY *ec_sec1 = load(KEYS "ec-priv-sec1.pem", true);
    _cleanup_pkey_ EVP_PKEY *ec_pub = load(KEYS "ec-pub.pem", false);
    assert_true(crypto_key_is_rsa(rsa) && !crypto_key_is_ec(rsa));
    assert_true(crypto_key_is_ec(ec) && !crypto_key_is_rsa(ec));
    assert_true(crypto_key_public_eq(rsa, rsa_pub));
    assert_true(crypto_key_public_eq(rsa, rsa_cert));
    assert_true(crypto_key_public_eq(ec, ec_sec1));
    assert_true(crypto_key_public_eq(ec, ec_pub));
    assert_false(crypto_key_public_eq(ec, rsa));
    assert_string_equal(crypto_key_ec_crv(ec_sec1), "P-256");
    assert_null(crypto_key_ec_crv(rsa));

    /* PKCS#1 and SEC1 ("type-specific"), PKCS#8 and SPKI, each as PEM and DER. */
    static const struct {
        int selection;
        const char *structure;
        bool priv;
    } forms[] = {
        {EVP_PKEY_KEYPAIR, "type-specific", true},
        {EVP_PKEY_KEYPAIR, "PrivateKeyInfo", true},
        {EVP_PKEY_PUBLIC_KEY, "SubjectPublicKeyInfo", false},
        {EVP_PKEY_PUBLIC_KEY, "type-specific", false},
    };
    EVP_PKEY *keys[] = {rsa, ec};
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        for (size_t i = 0; i < ARRAY_LEN(forms); i++) {
            /* An EC public key has no type-specific (SEC1) container of its own. */
            if (keys[k] == ec && forms[i].selection == EVP_PKEY_PUBLIC_KEY &&
                strcmp(forms[i].structure, "type-specific") == 0)
                continue;
            const char *formats[] = {"PEM", "DER"};
            for (size_t f = 0; f < 2; f++) {
                size_t size = 0;
                _cleanup_free_ char *text =
                    encode_key(keys[k], forms[i].selection, formats[f], forms[i].structure, &size);
                expect_load(text, size, forms[i].priv, keys[k]);
                if (!forms[i].priv) {
                    EVP_PKEY *x = NULL;
                    _cleanup_err_ cista_error *err = NULL;
                    assert_int_equal(crypto_key_load(&x, text, size, true, &err), -EINVAL);
                    assert_non_null(strstr(err->msg, "public"));
                }
            }
        }
    }
    /* "RSA PRIVATE KEY" really is what type-specific PEM says. */
    size_t size = 0;
    _cleanup_free_ char *pkcs1 = encode_key(rsa, EVP_PKEY_KEYPAIR, "PEM", "type-specific", &size);
    assert_non_null(strstr(pkcs1, "BEGIN RSA PRIVATE KEY"));

    /* JWK, and PEM after leading parameters (openssl ecparam -genkey without -noout). */
    json_t *jwk = NULL;
    assert_int_equal(jwk_from_key(&jwk, ec, true, NULL), 0);
    _cleanup_free_ char *jtext = js_dump_compact(jwk);
    json_decref(jwk);
    expect_load(jtext, strlen(jtext), true, ec);
    _cleanup_free_ char *sec1 = NULL;
    {
        _cleanup_free_ char *raw = encode_key(ec, EVP_PKEY_KEYPAIR, "PEM", "type-specific", &size);
        sec1 = xasprintf("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
                         "-----END EC PARAMETERS-----\n%s",
                         raw);
    }
    expect_load(sec1, strlen(sec1), true, ec);

    /* Round trip through our own PEM writer. */
    _cleanup_free_ char *pem_priv = crypto_key_to_pem(rsa, true);
    _cleanup_free_ char *pem_pub = crypto_key_to_pem(rsa, false);
    assert_non_null(strstr(pem_priv, "BEGIN PRIVATE KEY"));
    assert_non_null(strstr(pem_pub, "BEGIN PUBLIC KEY"));
    expect_load(pem_priv, strlen(pem_priv), true, rsa);
    expect_load(pem_pub, strlen(pem_pub), false, rsa);
    assert_null(crypto_key_to_pem(rsa_pub, true));
}

static void test_key_load_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "garbage",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
         "00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
        "{\"kty\":\"oct\",\"k\":\"AAAA\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        EVP_PKEY *k = NULL;
        _cleanup_err_ cista_error *err = NULL;
        int r = crypto_key_load(&k, bad[i], strlen(bad[i]), false, &err);
        assert_true(r == -EINVAL || r == -ENOTSUP);
        assert_null(k);
        assert_non_null(err);
    }
    EVP_PKEY *k = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(crypto_key_load(&k, "", 0, false, NULL), -EINVAL);
    assert_int_equal(crypto_key_load_file(&k, KEYS "does-not-exist.pem", false, &err), -ENOENT);
    _cleanup_free_ char *m = err_str(err);
    assert_non_null(strstr(m, "does-not-exist.pem"));
}

static void test_key_generate(void **state)
{
    (void)state;
    static const char *const crvs[] = {"P-256", "P-384", "P-521"};
    for (size_t i = 0; i < ARRAY_LEN(crvs); i++) {
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        assert_int_equal(crypto_key_generate_ec(&k, crvs[i], NULL), 0);
        assert_string_equal(crypto_key_ec_crv(k), crvs[i]);
        _cleanup_free_ char *pem = crypto_key_to_pem(k, true);
        expect_load(pem, strlen(pem), true, k);
    }
    EVP_PKEY *k = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "secp256k1", NULL), -EINVAL);
    assert_int_equal(crypto_key_generate_rsa(&k, 1024, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_memeq),    cmocka_unit_test(test_hash_abc),
        cmocka_unit_test(test_hmac_rfc4231),    cmocka_unit_test(test_ctr_sp800_38a),
        cmocka_unit_test(test_gcm_vectors),     cmocka_unit_test(test_cbc_hs_rfc7518_b),
        cmocka_unit_test(test_keywrap_rfc3394), cmocka_unit_test(test_ecdh_concat_kdf_rfc7518_c),
        cmocka_unit_test(test_rsa_oaep),        cmocka_unit_test(test_key_load_formats),
        cmocka_unit_test(test_key_load_errors), cmocka_unit_test(test_key_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
