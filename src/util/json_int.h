/*
 * json_int.h - private to src/util/json*.c: the JSON parser behind js_parse().
 *
 * Not part of the util API: everything else parses through js_parse() and works on the
 * jansson trees it returns.
 */
#ifndef CISTA_JSON_INT_H
#define CISTA_JSON_INT_H

#include <jansson.h>
#include <stddef.h>

typedef enum {
    JS__OK = 0,
    JS__ESYNTAX, /* not JSON, or JSON jansson's loader refuses */
    JS__EDEPTH,  /* more than JS_MAX_DEPTH nested arrays/objects */
    JS__ENOMEM,  /* a jansson constructor failed */
} js__status;

typedef struct {
    js__status status;
    int line, column; /* 1-based, where the error was seen (JS__ESYNTAX) */
    const char *why;  /* a static phrase; never quotes the input */
} js__error;

/*
 * Parse @size bytes (no NUL needed) as one JSON value. Accepts exactly what jansson 2.14's
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) accepts, except nesting deeper than
 * JS_MAX_DEPTH and one NUL byte jansson skips (see json_parse.c), and returns the same tree
 * (member order, integer or real), as a new reference. On failure returns NULL and fills @e.
 */
json_t *js__parse(const void *data, size_t size, js__error *e);

/* Length of the well-formed UTF-8 sequence of 2 to 4 bytes at @p (before @end), else 0. */
size_t js__utf8_len(const unsigned char *p, const unsigned char *end);

#endif
