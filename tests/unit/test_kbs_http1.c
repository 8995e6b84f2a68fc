/*
 * test_kbs_http1.c - the KBS server's HTTP/1.1 request head parser (kbs/http1.h): the
 * requests RCAR clients send, incomplete heads at every length, keep-alive by version and
 * Connection, Expect, the refusals (each with its status) of everything ambiguous or out of
 * bounds, and the target split with percent-decoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kbs/http1.h"

static bool span_is(kbs_http_span s, const char *lit)
{
    return s.s && s.n == strlen(lit) && !memcmp(s.s, lit, s.n);
}

static int parse(kbs_http_req *q, const char *s)
{
    return kbs_http_parse_head(q, s, strlen(s));
}

static void test_rcar_requests(void **state)
{
    (void)state;
    kbs_http_req q;
    const char *auth = "POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs:8080\r\n"
                       "Content-Type: application/json\r\nContent-Length: 33\r\n\r\n{\"x\":1}";
    int r = parse(&q, auth);
    assert_int_equal(r, (int)(strstr(auth, "\r\n\r\n") + 4 - auth));
    assert_true(span_is(q.method, "POST"));
    assert_true(span_is(q.target, "/kbs/v0/auth"));
    assert_int_equal(q.minor, 1);
    assert_true(q.has_length);
    assert_int_equal(q.content_length, 33);
    assert_true(q.keep_alive);
    assert_null(q.cookie.s);
    assert_null(q.authorization.s);

    assert_true(parse(&q, "GET /kbs/v0/resource/a/b/c HTTP/1.1\r\n"
                          "cookie:  kbs-session-id=abc \t\r\n"
                          "AUTHORIZATION: Bearer x.y.z\r\nCookie: second=1\r\n\r\n") > 0);
    assert_true(span_is(q.cookie, "kbs-session-id=abc")); /* OWS trimmed, the first one */
    assert_true(span_is(q.authorization, "Bearer x.y.z"));
    assert_false(q.has_length);
    assert_int_equal(q.content_length, 0);
}

/* Every proper prefix of a head is "more, please"; the whole is complete. */
static void test_incomplete(void **state)
{
    (void)state;
    const char *h = "PUT /kbs/v0/resource/x/y/z HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
    size_t head = strlen(h) - 4;
    kbs_http_req q;
    for (size_t n = 0; n < head; n++)
        assert_int_equal(kbs_http_parse_head(&q, h, n), 0);
    assert_int_equal(kbs_http_parse_head(&q, h, head), (int)head);
    assert_int_equal(kbs_http_parse_head(&q, h, strlen(h)), (int)head);
}

static void test_keep_alive_and_leniency(void **state)
{
    (void)state;
    kbs_http_req q;
    assert_true(parse(&q, "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n") > 0);
    assert_false(q.keep_alive);
    assert_true(parse(&q, "GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n") > 0);
    assert_false(q.keep_alive);
    assert_true(parse(&q, "GET / HTTP/1.0\r\n\r\n") > 0);
    assert_int_equal(q.minor, 0);
    assert_false(q.keep_alive);
    assert_true(parse(&q, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") > 0);
    assert_true(q.keep_alive);
    /* bare LF line ends and empty lines before the request line (RFC 9112 §2.2) */
    const char *lf = "\r\n\nGET /x HTTP/1.1\nHost: a\n\n";
    assert_int_equal(parse(&q, lf), (int)strlen(lf));
    assert_true(span_is(q.target, "/x"));
    /* a few empty lines are skipped, a run of them is refused */
    assert_true(parse(&q, "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n") > 0);
    assert_int_equal(parse(&q, "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), -400);
    /* HTTP/1.2 is served as 1.1 */
    assert_true(parse(&q, "GET / HTTP/1.2\r\n\r\n") > 0);
    assert_int_equal(q.minor, 1);
    assert_true(parse(&q, "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n") >
                0);
    assert_true(q.expect_continue);
    /* the same length twice is one length */
    assert_true(parse(&q, "POST / HTTP/1.1\r\nContent-Length: 7\r\ncontent-length:7\r\n\r\n") > 0);
    assert_int_equal(q.content_length, 7);
    /* a length past 2^64 saturates: the server answers 413 */
    assert_true(parse(&q, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n") >
                0);
    assert_int_equal(q.content_length, UINT64_MAX);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        int status;
    } cases[] = {
        {"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", -400},
        {"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", -400},
        {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", -400},
        {"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", -400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -501},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\n", -501},
        {"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nno colon\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", -400},
        {"GET / HTTP/1.1\r\nExpect: something-else\r\n\r\n", -417},
        {"GET / HTTP/2.0\r\n\r\n", -505},
        {"GET / HTTP/0.9\r\n\r\n", -505},
        {"GET / HTTP/1.10\r\n\r\n", -400},
        {"GET / http/1.1\r\n\r\n", -400},
        {"GET /\r\n\r\n", -400},
        {"GET  / HTTP/1.1\r\n\r\n", -400},
        {"GET http://kbs/ HTTP/1.1\r\n\r\n", -400},
        {"GET * HTTP/1.1\r\n\r\n", -400},
        {"G(T / HTTP/1.1\r\n\r\n", -400},
        {"GET /a\x7f HTTP/1.1\r\n\r\n", -400},
        {"GET / HTTP/1.1\rX\r\n\r\n", -400},
    };
    kbs_http_req q;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = parse(&q, cases[i].head);
        if (r != cases[i].status)
            fail_msg("case %zu (%s): %d, want %d", i, cases[i].head, r, cases[i].status);
    }
    /* a NUL anywhere in the head */
    static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    assert_int_equal(kbs_http_parse_head(&q, nul, sizeof(nul) - 1), -400);
}

static void test_bounds(void **state)
{
    (void)state;
    kbs_http_req q;
    /* a target of KBS_HTTP_TARGET_MAX bytes is served, one more is 414 */
    char *t = malloc(KBS_HTTP_TARGET_MAX + 64);
    for (size_t extra = 0; extra <= 1; extra++) {
        size_t n = KBS_HTTP_TARGET_MAX + extra;
        memcpy(t, "GET ", 4);
        memset(t + 4, 'a', n);
        t[4] = '/';
        strcpy(t + 4 + n, " HTTP/1.1\r\n\r\n");
        assert_int_equal(parse(&q, t), extra ? -414 : (int)strlen(t));
    }
    free(t);
    /* KBS_HTTP_HEADERS_MAX fields pass, one more is 431 */
    size_t cap = 64 + (KBS_HTTP_HEADERS_MAX + 1) * 8;
    char *h = malloc(cap);
    for (int extra = 0; extra <= 1; extra++) {
        strcpy(h, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < KBS_HTTP_HEADERS_MAX + extra; i++)
            strcat(h, "X: 1\r\n");
        strcat(h, "\r\n");
        assert_int_equal(parse(&q, h), extra ? -431 : (int)strlen(h));
    }
    free(h);
    /* no end of the head within KBS_HTTP_HEAD_MAX bytes: 431 (before then: more, please) */
    char *big = malloc(KBS_HTTP_HEAD_MAX + 16);
    strcpy(big, "GET / HTTP/1.1\r\nX: ");
    size_t used = strlen(big);
    memset(big + used, 'a', KBS_HTTP_HEAD_MAX + 16 - used);
    assert_int_equal(kbs_http_parse_head(&q, big, KBS_HTTP_HEAD_MAX - 1), 0);
    assert_int_equal(kbs_http_parse_head(&q, big, KBS_HTTP_HEAD_MAX), -431);
    assert_int_equal(kbs_http_parse_head(&q, big, KBS_HTTP_HEAD_MAX + 16), -431);
    /* a head that ends past the bound is refused even when all of it has come */
    memcpy(big + KBS_HTTP_HEAD_MAX + 12, "\r\n\r\n", 4);
    assert_int_equal(kbs_http_parse_head(&q, big, KBS_HTTP_HEAD_MAX + 16), -431);
    free(big);
}

static void test_split_target(void **state)
{
    (void)state;
    char path[32];
    kbs_http_span query;
    kbs_http_span t = {"/kbs/v0/resource/a%2Fb/c%41?x=1&y", 33};
    assert_true(kbs_http_split_target(path, sizeof(path), &query, t));
    assert_string_equal(path, "/kbs/v0/resource/a/b/cA");
    assert_true(span_is(query, "x=1&y"));
    t = (kbs_http_span){"/plain", 6};
    assert_true(kbs_http_split_target(path, sizeof(path), &query, t));
    assert_string_equal(path, "/plain");
    assert_null(query.s);
    t = (kbs_http_span){"/a+b?", 5};
    assert_true(kbs_http_split_target(path, sizeof(path), &query, t));
    assert_string_equal(path, "/a+b"); /* '+' is not a space in a path */
    assert_non_null(query.s);
    assert_int_equal(query.n, 0);
    static const char *const bad[] = {"/%00", "/%0", "/%", "/%zz", "/%4", "/a%2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = (kbs_http_span){bad[i], strlen(bad[i])};
        assert_false(kbs_http_split_target(path, sizeof(path), &query, t));
    }
    /* in place, as the server does it: the decoded path over the raw one */
    char inplace[] = "/x%20y?q";
    t = (kbs_http_span){inplace, strlen(inplace)};
    assert_true(kbs_http_split_target(inplace, sizeof(inplace), &query, t));
    assert_string_equal(inplace, "/x y");
    assert_true(span_is(query, "q"));
    /* too long for the buffer */
    t = (kbs_http_span){"/0123456789", 11};
    assert_false(kbs_http_split_target(path, 11, &query, t));
    assert_true(kbs_http_split_target(path, 12, &query, t));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rcar_requests),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_keep_alive_and_leniency),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_split_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
