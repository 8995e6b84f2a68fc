/*
 * fuzz_kbs_http1.c - the KBS server's request head parser (kbs/http1.h) and target splitter
 * over arbitrary bytes, as a client would send them. The head is parsed from the whole input
 * and from every prefix length a read could end at (a few chosen ones for long inputs): a
 * prefix must never complete a head the whole input does not, nor yield a different one; every
 * span returned must lie inside the input; the split path must decode into its buffer. Must
 * never crash, hang or read out of bounds (the input is copied to an exact-size heap buffer so
 * ASan sees an overread).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbs/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_span(kbs_http_span s, const char *buf, size_t len)
{
    if (s.s && (s.s < buf || s.s + s.n > buf + len))
        abort();
}

static void check(const kbs_http_req *q, const char *buf, size_t len)
{
    check_span(q->method, buf, len);
    check_span(q->target, buf, len);
    check_span(q->cookie, buf, len);
    check_span(q->authorization, buf, len);
    if (q->head_len > len || q->head_len > KBS_HTTP_HEAD_MAX || q->target.n > KBS_HTTP_TARGET_MAX)
        abort();
    char path[KBS_HTTP_TARGET_MAX + 1];
    kbs_http_span query;
    if (kbs_http_split_target(path, sizeof(path), &query, q->target)) {
        if (strlen(path) > q->target.n)
            abort();
        check_span(query, buf, len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    kbs_http_req whole, part;
    int r = kbs_http_parse_head(&whole, buf, size);
    if (r > 0)
        check(&whole, buf, size);
    size_t step = size > 512 ? size / 64 : 1;
    for (size_t n = 0; n < size; n += step) {
        int rp = kbs_http_parse_head(&part, buf, n);
        if (rp > 0) {
            check(&part, buf, n);
            /* a head complete in a prefix is the same head in the whole */
            if (rp != r || part.content_length != whole.content_length ||
                part.target.n != whole.target.n || part.keep_alive != whole.keep_alive)
                abort();
        } else if (rp < 0 && r != rp && r > 0) {
            abort(); /* refused early, accepted later */
        }
    }
    free(buf);
    return 0;
}
