/* test_json.c - bounded parsing and typed getters. */
#include <errno.h>
#include <locale.h>
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

/*
 * js_parse() has its own parser (util/json_parse.c) that must accept exactly what jansson's
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) accepts and build the same tree.
 */
static void expect_like_jansson(const char *doc, size_t len, bool ok)
{
    json_t *ours = NULL;
    cista_error *err = NULL;
    int r = js_parse(&ours, doc, len, 1 << 20, "doc", &err);
    json_t *theirs = json_loadb(doc, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if ((r == 0) != ok || (theirs != NULL) != ok)
        fail_msg("document %.*s: js_parse %d (%s), jansson %s, expected %s", (int)len, doc, r,
                 err ? err->msg : "-", theirs ? "accepts" : "refuses", ok ? "accept" : "refuse");
    if (ok) {
        assert_true(json_equal(ours, theirs));
        /* json_equal() ignores member order; the dumps keep it, and show -0.0 from 0.0 */
        size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
        _cleanup_free_ char *a = json_dumps(ours, flags);
        _cleanup_free_ char *b = json_dumps(theirs, flags);
        assert_string_equal(a, b);
    } else {
        assert_null(ours);
        assert_non_null(strstr(err->msg, "doc: invalid JSON at line "));
    }
    json_decref(ours);
    json_decref(theirs);
    err_free(err);
}

static void test_parse_like_jansson(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        size_t len;
        bool ok;
    } cases[] = {
#define OK(s)                                                                                      \
    {                                                                                              \
        s, sizeof(s) - 1, true                                                                     \
    }
#define BAD(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1, false                                                                    \
    }
        /* any value at the top level, whitespace around it only */
        OK("{}"),
        OK("[]"),
        OK("\"s\""),
        OK("0"),
        OK("true"),
        OK("false"),
        OK("null"),
        OK(" \t\r\n{ \"a\" : [ 1 , 2 ] }\n\r\t "),
        BAD(""),
        BAD(" "),
        BAD(" \t\r\n"),
        BAD("\f1"),
        BAD("1\v"),
        BAD("{} x"),
        BAD("{}{}"),
        BAD("1 2"),
        BAD("[] ]"),
        BAD("\"a\" ,"),
        BAD("{\"a\":1} \"b\""),
        BAD("[1]\0"),
        BAD("\0[1]"),
        BAD("[1,\0 2]"),
        BAD("\xef\xbb\xbf{}"),
        /* structure */
        BAD("{"),
        BAD("["),
        BAD("}"),
        BAD("]"),
        BAD("[1,]"),
        BAD("[,1]"),
        BAD("[1 2]"),
        BAD("{\"a\":1,}"),
        BAD("{,}"),
        BAD("{\"a\"}"),
        BAD("{\"a\" 1}"),
        BAD("{\"a\":}"),
        BAD("{1:2}"),
        BAD("{a:1}"),
        BAD("{'a':1}"),
        BAD("['a']"),
        BAD("[1:2]"),
        BAD("{\"a\",1}"),
        OK("[[],{},[[]],{\"a\":{}}]"),
        OK("{\"\":\"\"}"),
        BAD("[}"),
        BAD("{]"),
        /* literals exactly */
        OK("[true,false,null]"),
        BAD("tru"),
        BAD("truex"),
        BAD("True"),
        BAD("NULL"),
        BAD("nul"),
        BAD("[true1]"),
        BAD("nan"),
        BAD("NaN"),
        BAD("Infinity"),
        BAD("-Infinity"),
        BAD("fals"),
        /* numbers */
        OK("0"),
        OK("-0"),
        OK("-0.0"),
        OK("0.0"),
        OK("1.5"),
        OK("-1.5e3"),
        OK("1E3"),
        OK("1e+3"),
        OK("1e-3"),
        OK("0e0"),
        OK("10"),
        OK("123456789"),
        OK("1.0"),
        OK("0.1e1"),
        OK("[1,-1]"),
        BAD("01"),
        BAD("-01"),
        BAD("00"),
        BAD("1."),
        BAD("1.e1"),
        BAD(".5"),
        BAD("1e"),
        BAD("1e+"),
        BAD("1E-"),
        BAD("-"),
        BAD("+1"),
        BAD("--1"),
        BAD("- 1"),
        BAD("0x10"),
        BAD("1.5.3"),
        BAD("[1-2]"),
        BAD("1e5x"),
        BAD("-a"),
        OK("9223372036854775807"),
        OK("-9223372036854775808"),
        BAD("9223372036854775808"),
        BAD("-9223372036854775809"),
        BAD("99999999999999999999999"),
        OK("9223372036854775807.0"),
        OK("9223372036854775808e0"),
        BAD("1e400"),
        BAD("-1e400"),
        BAD("1.8e308"),
        OK("1.7976931348623157e308"),
        OK("1e-400"),
        OK("-1e-400"),
        OK("4.9e-324"),
        OK("2.2250738585072011e-308"),
        OK("0.1"),
        OK("3.141592653589793238462643383279"),
        OK("100000000000000000000000000000000000000000000000000000000000000000000000000.5"),
        OK("1e0000000000000000000000000000000000000000000000000000000000000000000000000000001"),
        /* strings */
        OK("\"\""),
        OK("\"plain ascii ~ \x7f\""),
        BAD("\"unterminated"),
        BAD("\"a\\\""),
        BAD("\"a\\"),
        BAD("\"tab\there\""),
        BAD("\"nl\nhere\""),
        BAD("\"\x01\""),
        BAD("\"\x1f\""),
        BAD("\"nul\0here\""),
        OK("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\""),
        BAD("\"\\a\""),
        BAD("\"\\x41\""),
        BAD("\"\\'\""),
        BAD("\"\\U0041\""),
        BAD("\"\\0\""),
        BAD("\"\\ \""),
        OK("\"\\u0041\\u00e9\\u00E9\\u20ac\\uFFFF\\u0001\\u001f\""),
        BAD("\"\\u004\""),
        BAD("\"\\u00g1\""),
        BAD("\"\\u\""),
        BAD("\"\\u12"),
        BAD("\"\\u0000\""),
        BAD("{\"k\":\"a\\u0000b\"}"),
        BAD("{\"\\u0000\":1}"),
        BAD("{\"a\\u0000\":1}"),
        OK("\"\\ud83d\\ude00\""),
        OK("\"\\uD83D\\uDE00\""),
        OK("\"\\udbff\\udfff\""),
        OK("\"\\ud800\\udc00\""),
        BAD("\"\\ud800\""),
        BAD("\"\\ud800x\""),
        BAD("\"\\ud800\\n\""),
        BAD("\"\\ud800\\u0041\""),
        BAD("\"\\ud800\\ud800\""),
        BAD("\"\\udc00\""),
        BAD("\"\\udc00\\ud800\""),
        BAD("\"\\ude00\\ud83d\""),
        BAD("\"\\ud800\\udc0\""),
        BAD("\"\\ud800\\u"),
        BAD("\"\\ud800\\"),
        OK("{\"\\ud83d\\ude00\":\"\\u00e9\"}"),
        /* UTF-8, in strings and out */
        OK("\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xdf\xbf \xef\xbf\xbf \xf4\x8f\xbf\xbf\""),
        OK("\"\xc2\x80\xe0\xa0\x80\xf0\x90\x80\x80\xed\x9f\xbf\xee\x80\x80\""),
        OK("{\"caf\xc3\xa9\":1}"),
        BAD("\"\xc0\xaf\""),
        BAD("\"\xc1\xbf\""),
        BAD("\"\xe0\x80\xaf\""),
        BAD("\"\xe0\x9f\xbf\""),
        BAD("\"\xf0\x80\x80\xaf\""),
        BAD("\"\xf0\x8f\xbf\xbf\""),
        BAD("\"\xed\xa0\x80\""),
        BAD("\"\xed\xbf\xbf\""),
        BAD("\"\xf4\x90\x80\x80\""),
        BAD("\"\xf5\x80\x80\x80\""),
        BAD("\"\xf8\x88\x80\x80\x80\""),
        BAD("\"\xff\""),
        BAD("\"\xfe\""),
        BAD("\"\x80\""),
        BAD("\"\xbf\""),
        BAD("\"\xc3\""),
        BAD("\"\xc3x\""),
        BAD("\"\xe2\x82\""),
        BAD("\"\xe2\x82x\""),
        BAD("\"\xf0\x9f\x98\""),
        BAD("\"\xc3"),
        BAD("\"\xe2\x82"),
        BAD("\"\xf0\x9f\x98"),
        BAD("\"\xc3\xa9"),
        BAD("\xc3\xa9"),
        BAD("[1]\xc3\xa9"),
        BAD("[\xc3\xa9]"),
        BAD("{\"a\":1}\xff"),
        BAD("\"a\"\xe2\x82"),
        BAD("\"long enough to take the eight-byte loop \xe2\x82\""),
        OK("\"long enough to take the eight-byte loop \xe2\x82\xac and more text after it\""),
        BAD("\"long enough to take the eight-byte loop\x01 and more text after it\""),
        OK("\"01234567\\\"0123456\\\\01234567\\/0123456\""),
        /* duplicate keys, compared after unescaping */
        BAD("{\"a\":1,\"a\":2}"),
        BAD("{\"a\":1,\"b\":2,\"a\":3}"),
        BAD("{\"a\":1,\"\\u0061\":2}"),
        BAD("{\"\\u0061\":1,\"a\":2}"),
        BAD("{\"\xc3\xa9\":1,\"\\u00e9\":2}"),
        BAD("{\"\":1,\"\":2}"),
        BAD("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"),
        BAD("{\"a\":{},\"a\":[]}"),
        OK("{\"a\":1,\"A\":2,\"a \":3,\"b\":{\"a\":4}}"),
        OK("[{\"a\":1},{\"a\":2}]"),
        OK("{\"a\\/b\":1,\"a/b\\n\":2}"),
        BAD("{\"a/b\":1,\"a\\/b\":2}"),
#undef OK
#undef BAD
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        expect_like_jansson(cases[i].doc, cases[i].len, cases[i].ok);

    /*
     * Where we differ, on purpose: jansson skips one NUL byte right after a number or a
     * true/false/null (its lexer puts the byte after those back into a buffer where NUL means
     * empty). js_parse() refuses every NUL.
     */
    static const struct {
        const char *doc;
        size_t len;
    } skipped[] = {
#define NUL_DOC(s) {s, sizeof(s) - 1}
        NUL_DOC("8\0"),           NUL_DOC("[true\0]"),
        NUL_DOC("-1.5e3\0 "),     NUL_DOC("{\"a\":null\0}"),
        NUL_DOC("[false\0,0\0]"),
#undef NUL_DOC
    };
    for (size_t i = 0; i < ARRAY_LEN(skipped); i++) {
        json_t *v = json_loadb(skipped[i].doc, skipped[i].len,
                               JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
        assert_non_null(v); /* if this fails, jansson was fixed: drop this part */
        json_decref(v);
        cista_error *err = NULL;
        assert_int_equal(js_parse(&v, skipped[i].doc, skipped[i].len, 100, "doc", &err), -EINVAL);
        assert_non_null(strstr(err->msg, "doc: invalid JSON"));
        err_free(err);
    }
}

/* Up to JS_MAX_DEPTH nested arrays/objects, counted while parsing. */
static void test_parse_depth(void **state)
{
    (void)state;
    static const char *const opens[] = {"[", "{\"k\":", "[{\"a\":[0,"};
    static const char *const closes[] = {"]", "}", "]}]"};
    static const size_t levels[] = {1, 1, 3};
    for (size_t kind = 0; kind < ARRAY_LEN(opens); kind++) {
        for (size_t n = JS_MAX_DEPTH / levels[kind] - 2; n <= JS_MAX_DEPTH / levels[kind] + 1;
             n++) {
            for (int empty = 0; empty <= 1; empty++) {
                /* n times the opening, then 1 or [] (one level more), then the closing */
                _cleanup_buf_ cbuf b = CBUF_INIT;
                for (size_t i = 0; i < n; i++)
                    buf_puts(&b, opens[kind]);
                buf_puts(&b, empty ? "[]" : "1");
                for (size_t i = 0; i < n; i++)
                    buf_puts(&b, closes[kind]);
                size_t d = n * levels[kind] + (size_t)empty;
                json_t *v = NULL;
                cista_error *err = NULL;
                int r = js_parse(&v, b.data, b.size, 1 << 20, "doc", &err);
                if (d <= JS_MAX_DEPTH) {
                    assert_int_equal(r, 0);
                    expect_like_jansson((const char *)b.data, b.size, true);
                } else {
                    assert_int_equal(r, -EINVAL);
                    assert_string_equal(err->msg, "doc: JSON nested deeper than 64 levels");
                    /* jansson (limit 2048) takes it */
                    json_t *j = json_loadb((const char *)b.data, b.size, JSON_DECODE_ANY, NULL);
                    assert_non_null(j);
                    json_decref(j);
                }
                json_decref(v);
                err_free(err);
            }
        }
    }
    /* hostile depth is refused early, not recursed into */
    size_t n = 1000000;
    _cleanup_free_ char *deep = xmalloc(n);
    memset(deep, '[', n);
    json_t *v = NULL;
    cista_error *err = NULL;
    assert_int_equal(js_parse(&v, deep, n, n, "doc", &err), -EINVAL);
    assert_non_null(strstr(err->msg, "nested deeper"));
    err_free(err);
}

/* Members keep document order; strings with and without escapes; numbers keep their type. */
static void test_parse_tree(void **state)
{
    (void)state;
    const char *doc = "{\"z\":1,\"y\":1.0,\"x\":\"a\\tb\",\"w\":[\"\\u00e9\",\"plain\"],"
                      "\"b\\u0061\":{\"q\":null,\"p\":false},\"a\":-0}";
    _cleanup_json_ json_t *v = NULL;
    cista_error *err = NULL;
    assert_int_equal(js_parse_object(&v, doc, strlen(doc), 1024, "doc", &err), 0);
    _cleanup_free_ char *dump = js_dump_compact(v);
    assert_string_equal(dump, "{\"z\":1,\"y\":1.0,\"x\":\"a\\tb\",\"w\":[\"\xc3\xa9\",\"plain\"],"
                              "\"ba\":{\"q\":null,\"p\":false},\"a\":0}");
    assert_true(json_is_integer(json_object_get(v, "z")));
    assert_true(json_is_real(json_object_get(v, "y")));
    assert_true(json_is_integer(json_object_get(v, "a")));
    expect_like_jansson(doc, strlen(doc), true);

    /* strings of every length around the eight-byte loop, with a special byte anywhere */
    static const char *const specials[] = {"\\n", "\\u00e9", "\xc3\xa9", "\\\"", "\x01", "\xff"};
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
    for (size_t len = 0; len < sizeof(alphabet) - 1; len++) {
        for (size_t s = 0; s < ARRAY_LEN(specials); s++) {
            for (size_t at = 0; at <= len; at++) {
                _cleanup_buf_ cbuf b = CBUF_INIT;
                buf_puts(&b, "[\"");
                for (size_t i = 0; i < len; i++) {
                    if (i == at)
                        buf_puts(&b, specials[s]);
                    buf_put(&b, &alphabet[i], 1);
                }
                if (at == len)
                    buf_puts(&b, specials[s]);
                buf_puts(&b, "\"]");
                expect_like_jansson((const char *)b.data, b.size, s < 4);
            }
        }
    }
}

/*
 * Numbers do not follow the caller's locale: in one whose decimal point is a comma, plain
 * strtod() read "1.5" as 1 (a program linking libcista may set one). Skipped where no such
 * locale is installed (CI has only C and POSIX).
 */
static void test_parse_locale(void **state)
{
    (void)state;
    static const char *const names[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE", "fr_FR"};
    locale_t comma = (locale_t)0;
    for (size_t i = 0; i < ARRAY_LEN(names) && !comma; i++)
        comma = newlocale(LC_NUMERIC_MASK, names[i], (locale_t)0);
    if (!comma)
        skip();
    locale_t old = uselocale(comma);
    _cleanup_json_ json_t *v = NULL;
    int r = js_parse(&v, "[1.5,2.25e1]", 12, 64, "doc", NULL);
    uselocale(old);
    freelocale(comma);
    assert_int_equal(r, 0);
    assert_true(json_real_value(json_array_get(v, 0)) == 1.5);
    assert_true(json_real_value(json_array_get(v, 1)) == 22.5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_limits),   cmocka_unit_test(test_getters),
        cmocka_unit_test(test_dump),           cmocka_unit_test(test_buf_put_compact),
        cmocka_unit_test(test_buf_put_string), cmocka_unit_test(test_parse_like_jansson),
        cmocka_unit_test(test_parse_depth),    cmocka_unit_test(test_parse_tree),
        cmocka_unit_test(test_parse_locale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
