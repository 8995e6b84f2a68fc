/* test_json.c - bounded parsing and typed getters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/json.h"
#include "util/util.h"

static void test_parse_limits(void **state)
{
    (void)state;
    _cleanup_json_ json_t *v = NULL;
    cista_error *err = NULL;
    const char *doc = "{\"a\":\"x\",\"n\":5,\"b\":true,\"o\":{},\"l\":[]}";
    assert_int_equal(js_parse_object(&v, doc, strlen(doc), 1024, "doc", &err), 0);

    json_t *w = NULL;
    assert_int_equal(js_parse(&w, doc, strlen(doc), 10, "doc", &err), -EMSGSIZE);
    err_clear(&err);
    const char *dup = "{\"a\":1,\"a\":2}";
    assert_int_equal(js_parse(&w, dup, strlen(dup), 100, "doc", &err), -EINVAL);
    assert_non_null(strstr(err->msg, "duplicate"));
    err_clear(&err);
    const char *nul = "{\"a\":\"x\\u0000y\"}";
    assert_int_equal(js_parse(&w, nul, strlen(nul), 100, "doc", &err), -EINVAL);
    err_clear(&err);
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_int_equal(js_parse(&w, deep, sizeof(deep), 1000, "doc", &err), -EINVAL);
    assert_non_null(strstr(err->msg, "nested"));
    err_clear(&err);
    assert_int_equal(js_parse_object(&w, "[1]", 3, 100, "doc", &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(js_parse(&w, "{", 1, 100, "manifest", &err), -EINVAL);
    assert_non_null(strstr(err->msg, "manifest: invalid JSON"));
    err_clear(&err);
}

static void test_getters(void **state)
{
    (void)state;
    _cleanup_json_ json_t *v = NULL;
    cista_error *err = NULL;
    const char *doc = "{\"a\":\"x\",\"n\":5,\"b\":true,\"o\":{},\"l\":[],\"z\":null}";
    assert_int_equal(js_parse_object(&v, doc, strlen(doc), 1024, "doc", &err), 0);
    const char *s;
    int64_t n;
    bool b;
    json_t *o;
    assert_int_equal(js_get_string(&s, v, "a", true, "doc", &err), 0);
    assert_string_equal(s, "x");
    assert_int_equal(js_get_int(&n, v, "n", true, "doc", &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(js_get_bool(&b, v, "b", true, "doc", &err), 0);
    assert_true(b);
    assert_int_equal(js_get_object(&o, v, "o", true, "doc", &err), 0);
    assert_int_equal(js_get_array(&o, v, "l", true, "doc", &err), 0);
    /* optional and null */
    assert_int_equal(js_get_string(&s, v, "missing", false, "doc", &err), 0);
    assert_null(s);
    assert_int_equal(js_get_string(&s, v, "z", false, "doc", &err), 0);
    assert_null(s);
    assert_null(err);
    /* required and wrong types name the member */
    assert_int_equal(js_get_string(&s, v, "missing", true, "manifest", &err), -EINVAL);
    assert_string_equal(err->msg, "manifest: member \"missing\" is missing");
    err_clear(&err);
    assert_int_equal(js_get_string(&s, v, "n", true, "doc", &err), -EINVAL);
    assert_string_equal(err->msg, "doc: member \"n\" must be a string");
    err_clear(&err);
    assert_int_equal(js_get_int(&n, v, "a", true, "doc", &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(js_get_array(&o, v, "o", true, "doc", &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(js_get_object(&o, v, "l", true, "doc", &err), -EINVAL);
    err_clear(&err);
    assert_int_equal(js_get_bool(&b, v, "n", true, "doc", &err), -EINVAL);
    err_clear(&err);
}

static void test_dump(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s,s:i}", "z", "last?", "a", 1);
    _cleanup_free_ char *c = js_dump_compact(o);
    assert_string_equal(c, "{\"z\":\"last?\",\"a\":1}");
    _cleanup_free_ char *p = js_dump_pretty(o);
    assert_string_equal(p, "{\n  \"z\": \"last?\",\n  \"a\": 1\n}\n");
    json_decref(o);
}

/* js_buf_put_compact() writes what js_dump_compact() returns, byte for byte. */
static void expect_same_dump(const json_t *v)
{
    _cleanup_free_ char *want = js_dump_compact(v);
    _cleanup_buf_ cbuf b = CBUF_INIT;
    buf_puts(&b, "x"); /* appends to what the buffer holds */
    js_buf_put_compact(&b, v);
    assert_int_equal(b.size, strlen(want) + 1);
    assert_memory_equal(b.data + 1, want, strlen(want));
}

static void test_buf_put_compact(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{}",
        "[]",
        "{\"a\":[],\"b\":{},\"c\":[{}],\"d\":null,\"e\":true,\"f\":false}",
        "{\"z\":1,\"a\":-9223372036854775808,\"m\":9223372036854775807,\"q\":0}",
        "[0.5,1.0,-2.5e-300,1e300,123456789.125,3.0e20,0.1]",
        "{\"esc\":\"quote \\\" back \\\\ slash / tab \\t nl \\n cr \\r bs \\b ff \\f\"}",
        "{\"ctl\":\"\\u0000\\u0001\\u001f\\u007f x\"}",
        "{\"utf8\":\"h\\u00e9 \\u2028 \\u20ac \\ud83d\\ude00 \xc3\xa9\",\"k\\u0001\":\"\\\"\"}",
        "{\"claims\":{\"tee\":\"sim\",\"nested\":[[[\"deep\",{\"x\":[1,2,{}]}]]]},\"n\":\"\"}",
        "\"just a string\"",
        "42",
        "null",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_t *v = json_loads(docs[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        assert_non_null(v);
        expect_same_dump(v);
        json_decref(v);
    }
    /* trees built in code: keys in insertion order, strings with embedded NULs */
    json_t *o = json_pack("{s:s,s:I,s:f}", "z", "last", "a", (json_int_t)-1, "r", 2.0);
    json_object_set_new(o, "nul", json_stringn("a\0b", 3));
    expect_same_dump(o);
    json_decref(o);
    _cleanup_buf_ cbuf b = CBUF_INIT;
    js_buf_put_compact(&b, NULL);
    assert_string_equal((const char *)b.data, "null");
}

static void test_buf_put_string(void **state)
{
    (void)state;
    _cleanup_buf_ cbuf up = CBUF_INIT, low = CBUF_INIT;
    static const char s[] = "a\x1b\"\\\n\x7f\xc3\xa9";
    js_buf_put_string(&up, s, sizeof(s) - 1, false);
    js_buf_put_string(&low, s, sizeof(s) - 1, true);
    assert_string_equal((const char *)up.data, "\"a\\u001B\\\"\\\\\\n\x7f\xc3\xa9\"");
    assert_string_equal((const char *)low.data, "\"a\\u001b\\\"\\\\\\n\x7f\xc3\xa9\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_limits),   cmocka_unit_test(test_getters),
        cmocka_unit_test(test_dump),           cmocka_unit_test(test_buf_put_compact),
        cmocka_unit_test(test_buf_put_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
