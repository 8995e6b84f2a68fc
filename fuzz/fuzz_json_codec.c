/*
 * fuzz_json_codec.c - the bounded JSON parser and the base64/hex decoders,
 * which see every untrusted string first. Checks decode/encode round trips.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_b64(const char *s, size_t len, bool url)
{
    uint8_t *dec = NULL;
    size_t n = 0;
    cista_error *err = NULL;
    int r = url ? b64url_decode(&dec, &n, s, len, &err) : b64_decode(&dec, &n, s, len, &err);
    if (r == 0) {
        /* Strict decoding means the encoding is canonical. */
        char *enc = url ? b64url_encode(dec, n) : b64_encode(dec, n);
        size_t elen = strlen(enc);
        size_t cmp = url ? (len < elen ? len : elen) : len;
        if (elen > len || memcmp(enc, s, cmp) != 0)
            abort();
        free(enc);
        free(dec);
    }
    err_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xstrndup((const char *)data, size);
    size_t len = strlen(s);
    check_b64(s, len, false);
    check_b64(s, len, true);

    uint8_t *h = NULL;
    size_t hn = 0;
    cista_error *err = NULL;
    if (hex_decode(&h, &hn, s, len, &err) == 0) {
        free(h);
    }
    err_clear(&err);

    json_t *v = NULL;
    if (js_parse(&v, data, size, 1 << 20, "fuzz", &err) == 0) {
        char *d = js_dump_compact(v);
        free(d);
        if (json_is_object(v)) {
            const char *str;
            json_t *o;
            int64_t i;
            bool b;
            int r = js_get_string(&str, v, "a", false, "fuzz", &err);
            r |= js_get_object(&o, v, "b", false, "fuzz", &err);
            err_clear(&err);
            r |= js_get_int(&i, v, "c", false, "fuzz", &err);
            err_clear(&err);
            r |= js_get_bool(&b, v, "d", false, "fuzz", &err);
            (void)r;
        }
        json_decref(v);
    }
    err_free(err);
    free(s);
    return 0;
}
