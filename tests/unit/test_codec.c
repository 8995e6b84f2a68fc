/* test_codec.c - RFC 4648 §10 vectors and strictness of the decoders. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/codec.h"
#include "util/util.h"

static const struct {
    const char *plain, *b64, *b64url, *hex;
} vectors[] = {
    /* RFC 4648 §10 */
    {"", "", "", ""},
    {"f", "Zg==", "Zg", "66"},
    {"fo", "Zm8=", "Zm8", "666f"},
    {"foo", "Zm9v", "Zm9v", "666f6f"},
    {"foob", "Zm9vYg==", "Zm9vYg", "666f6f62"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE", "666f6f6261"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy", "666f6f626172"},
    /* the two alphabets differ at 62 and 63 */
    {"\xfb\xff\xbf", "+/+/", "-_-_", "fbffbf"},
};

static void test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(vectors); i++) {
        size_t n = strlen(vectors[i].plain);
        _cleanup_free_ char *a = b64_encode(vectors[i].plain, n);
        _cleanup_free_ char *b = b64url_encode(vectors[i].plain, n);
        _cleanup_free_ char *c = hex_encode(vectors[i].plain, n);
        assert_string_equal(a, vectors[i].b64);
        assert_string_equal(b, vectors[i].b64url);
        assert_string_equal(c, vectors[i].hex);

        uint8_t *d;
        size_t dn;
        cista_error *err = NULL;
        assert_int_equal(b64_decode(&d, &dn, a, strlen(a), &err), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(d, vectors[i].plain, n);
        free(d);
        assert_int_equal(b64url_decode(&d, &dn, b, strlen(b), &err), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(d, vectors[i].plain, n);
        free(d);
        assert_int_equal(hex_decode(&d, &dn, c, strlen(c), &err), 0);
        assert_memory_equal(d, vectors[i].plain, n);
        free(d);
        assert_null(err);
    }
}

static void expect_bad_b64(const char *s, bool url)
{
    uint8_t *d = NULL;
    size_t dn;
    cista_error *err = NULL;
    int r =
        url ? b64url_decode(&d, &dn, s, strlen(s), &err) : b64_decode(&d, &dn, s, strlen(s), &err);
    assert_int_equal(r, -EINVAL);
    assert_null(d);
    assert_non_null(err);
    err_free(err);
}

static void test_strict(void **state)
{
    (void)state;
    expect_bad_b64("Zg", false);     /* std needs padding */
    expect_bad_b64("Zg=", false);    /* wrong padding */
    expect_bad_b64("Zh==", false);   /* non-canonical trailing bits */
    expect_bad_b64("Zm9v\n", false); /* whitespace */
    expect_bad_b64("Zm-v", false);   /* url alphabet in std */
    expect_bad_b64("Zm+v", true);    /* std alphabet in url */
    expect_bad_b64("Z", true);       /* impossible length */
    expect_bad_b64("Zg=a", false);   /* padding in the middle */
    expect_bad_b64("====", false);

    /* base64url tolerates padding */
    uint8_t *d;
    size_t dn;
    cista_error *err = NULL;
    assert_int_equal(b64url_decode(&d, &dn, "Zg==", 4, &err), 0);
    assert_int_equal(dn, 1);
    free(d);

    assert_int_equal(hex_decode(&d, &dn, "abc", 3, &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(hex_decode(&d, &dn, "zz", 2, &err), -EINVAL);
    err_clear(&err);
    uint8_t fixed[2];
    assert_int_equal(hex_decode_to(fixed, 2, "ABcd", &err), 0);
    assert_int_equal(fixed[0], 0xab);
    assert_int_equal(hex_decode_to(fixed, 2, "abcdef", &err), -EINVAL);
    err_clear(&err);
}

static void test_binary_roundtrip(void **state)
{
    (void)state;
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n++) {
        _cleanup_free_ char *a = b64_encode(all, n);
        _cleanup_free_ char *b = b64url_encode(all, n);
        uint8_t *d;
        size_t dn;
        cista_error *err = NULL;
        assert_int_equal(b64_decode(&d, &dn, a, strlen(a), &err), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(d, all, n);
        free(d);
        assert_int_equal(b64url_decode(&d, &dn, b, strlen(b), &err), 0);
        assert_memory_equal(d, all, n);
        free(d);
        /* the in-place form writes the same text and its NUL, and says how long it is */
        char to[350];
        memset(to, 'x', sizeof(to));
        assert_int_equal(b64url_encoded_len(n), strlen(b));
        assert_int_equal(b64url_encode_to(to, all, n), strlen(b));
        assert_string_equal(to, b);
    }
}

/* ---- the table-driven decoder against the character-by-character one it replaced ---- */

static int ref_val(char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* The previous decoder: 0 with *out (owned) and *out_size, or -1 with the message in @why. */
static int ref_decode(uint8_t **out, size_t *out_size, char why[128], const char *s, size_t len,
                      bool url)
{
    const char *what = url ? "base64url" : "base64";
    size_t pad = 0;
    while (pad < 2 && len > pad && s[len - 1 - pad] == '=')
        pad++;
    size_t n = len - pad;
    if ((!url || pad) && len % 4 != 0) {
        snprintf(why, 128, "%s: length %zu is not a multiple of 4", what, len);
        return -1;
    }
    if (n % 4 == 1) {
        snprintf(why, 128, "%s: impossible length %zu", what, len);
        return -1;
    }
    uint8_t *o = xmalloc(n / 4 * 3 + 3);
    size_t k = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = ref_val(s[i], url);
        if (v < 0) {
            free(o);
            snprintf(why, 128, "%s: invalid character at offset %zu", what, i);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            o[k++] = (uint8_t)(acc >> 16);
            o[k++] = (uint8_t)(acc >> 8);
            o[k++] = (uint8_t)acc;
            acc = 0;
        }
    }
    size_t rem = n % 4;
    if ((rem == 2 && (acc & 0xf)) || (rem == 3 && (acc & 0x3))) {
        free(o);
        snprintf(why, 128, "%s: non-canonical trailing bits", what);
        return -1;
    }
    if (rem == 2) {
        o[k++] = (uint8_t)(acc >> 4);
    } else if (rem == 3) {
        o[k++] = (uint8_t)(acc >> 10);
        o[k++] = (uint8_t)(acc >> 2);
    }
    *out = o;
    *out_size = k;
    return 0;
}

/* Same bytes, or the same refusal with the same message, for random near-base64 strings. */
static void test_decode_differential(void **state)
{
    (void)state;
    static const char pool[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                               "+/-_====AQgw\n *\x80\xff\x01";
    unsigned seed = 7;
    char s[64];
    for (int round = 0; round < 200000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(s);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* mostly valid characters, so that decoding gets past the first group */
            unsigned r = seed >> 16;
            s[i] = r % 16 == 0 ? pool[(r >> 4) % (sizeof(pool) - 1)] : pool[(r >> 4) % 64];
        }
        for (int url = 0; url < 2; url++) {
            uint8_t *a = NULL, *b = NULL;
            size_t an = 0, bn = 0;
            char why[128] = "";
            cista_error *err = NULL;
            int ra = ref_decode(&a, &an, why, s, len, url);
            int rb = url ? b64url_decode(&b, &bn, s, len, &err) : b64_decode(&b, &bn, s, len, &err);
            assert_int_equal(ra < 0, rb < 0);
            if (ra == 0) {
                assert_int_equal(an, bn);
                assert_memory_equal(a, b, an);
                assert_int_equal(b[bn], 0);
            } else {
                assert_string_equal(err->msg, why);
            }
            free(a);
            free(b);
            err_free(err);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_strict),
        cmocka_unit_test(test_binary_roundtrip),
        cmocka_unit_test(test_decode_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
