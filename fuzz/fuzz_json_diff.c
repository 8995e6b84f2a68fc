/*
 * fuzz_json_diff.c - js_parse() (our parser, util/json_parse.c) against jansson's json_loadb()
 * with the flags js_parse() used to pass it: both must accept the same inputs and build the
 * same trees, down to member order and integer-or-real. Two intended differences: js_parse
 * refuses more than JS_MAX_DEPTH nested arrays/objects, jansson only past 2048; and js_parse
 * refuses every NUL byte, where jansson's lexer loses one that comes right after a number or
 * a true/false/null it read one byte past (stream_unget() puts the byte back into a buffer
 * whose NUL means "empty"), and parses as if it were not there.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Nested arrays/objects in @v, counted up to @limit + 1. */
static size_t depth(const json_t *v, size_t limit)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (limit == 0)
        return 1;
    size_t best = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c)
        {
            size_t d = depth(c, limit - 1);
            if (d > best)
                best = d;
        }
    } else {
        for (size_t i = 0; i < json_array_size(v); i++) {
            size_t d = depth(json_array_get(v, i), limit - 1);
            if (d > best)
                best = d;
        }
    }
    return best + 1;
}

static void check_same(const json_t *ours, const json_t *theirs)
{
    if (depth(ours, JS_MAX_DEPTH) > JS_MAX_DEPTH)
        abort();
    /* json_equal() compares types (integer vs real) and values, the dumps member order. */
    if (!json_equal(ours, theirs))
        abort();
    size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
    char *a = json_dumps(ours, flags), *b = json_dumps(theirs, flags);
    if (!a || !b || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);
}

/* @data without its NUL bytes must parse (or be too deep for us) to jansson's @theirs. */
static void check_without_nuls(const uint8_t *data, size_t size, const json_t *theirs)
{
    char *text = malloc(size);
    size_t n = 0;
    if (!text)
        abort();
    for (size_t i = 0; i < size; i++)
        if (data[i])
            text[n++] = (char)data[i];
    json_t *ours = NULL;
    cista_error *err = NULL;
    if (js_parse(&ours, text, n, SIZE_MAX, "fuzz", &err) == 0) {
        check_same(ours, theirs);
    } else if (!strstr(err->msg, "nested deeper") || depth(theirs, JS_MAX_DEPTH) <= JS_MAX_DEPTH) {
        abort();
    }
    json_decref(ours);
    err_free(err);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* NULL for the empty input, as a caller with nothing may pass. */
    const char *text = size ? (const char *)data : NULL;
    json_t *ours = NULL;
    cista_error *err = NULL;
    int r = js_parse(&ours, text, size, SIZE_MAX, "fuzz", &err);
    json_t *theirs =
        json_loadb(size ? text : "", size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);

    if (r < 0) {
        if (ours || !err)
            abort();
        bool too_deep = strstr(err->msg, "nested deeper") != NULL;
        if (!too_deep && !strstr(err->msg, "invalid JSON"))
            abort();
        if (theirs && memchr(data, '\0', size)) {
            /* jansson skipped NULs: then it parsed what we parse without them. */
            check_without_nuls(data, size, theirs);
        } else if (theirs && (!too_deep || depth(theirs, JS_MAX_DEPTH) <= JS_MAX_DEPTH)) {
            /* jansson may accept only what is too deep for us. */
            abort();
        }
    } else {
        if (!ours || err || !theirs)
            abort();
        check_same(ours, theirs);
    }
    json_decref(ours);
    json_decref(theirs);
    err_free(err);
    return 0;
}
