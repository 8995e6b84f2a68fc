/*
 * json.h - helpers over jansson for parsing untrusted JSON with bounds and
 * clear errors, and for writing canonical output.
 *
 * Thread-safe. Every getter names the member and the expected type in its
 * error, e.g. "manifest: member \"layers\" must be an array".
 */
#ifndef CISTA_JSON_H
#define CISTA_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/err.h"

/* Max nesting accepted by js_parse, enforced while parsing. */
#define JS_MAX_DEPTH 64

/*
 * Parse @size bytes (no NUL needed) as a JSON value. Rejects inputs larger
 * than @max, embedded NULs, duplicate object keys, nesting deeper than
 * JS_MAX_DEPTH. @what names the document in errors. New reference to caller.
 */
int js_parse(json_t **out, const void *data, size_t size, size_t max, const char *what,
             cista_error **err) __attribute__((warn_unused_result));
/* The same for a top-level object. */
int js_parse_object(json_t **out, const void *data, size_t size, size_t max, const char *what,
                    cista_error **err) __attribute__((warn_unused_result));

/*
 * Typed member getters. With @required false a missing (or null) member gives
 * 0 and *out = NULL / default; a member of the wrong type is always an error.
 * Returned pointers borrow from @obj.
 */
int js_get_string(const char **out, const json_t *obj, const char *key, bool required,
                  const char *what, cista_error **err) __attribute__((warn_unused_result));
int js_get_object(json_t **out, const json_t *obj, const char *key, bool required, const char *what,
                  cista_error **err) __attribute__((warn_unused_result));
int js_get_array(json_t **out, const json_t *obj, const char *key, bool required, const char *what,
                 cista_error **err) __attribute__((warn_unused_result));
int js_get_int(int64_t *out, const json_t *obj, const char *key, bool required, const char *what,
               cista_error **err) __attribute__((warn_unused_result));
int js_get_bool(bool *out, const json_t *obj, const char *key, bool required, const char *what,
                cista_error **err) __attribute__((warn_unused_result));

/* Compact serialisation with keys in insertion order; caller frees. */
char *js_dump_compact(const json_t *v);
/* Pretty (2-space indent) with a trailing newline; caller frees. */
char *js_dump_pretty(const json_t *v);
/*
 * Append exactly what js_dump_compact() returns for @v (a tree of valid UTF-8 strings, as
 * jansson makes them), without jansson's per-character callbacks: a hot path (tokens, JWEs)
 * writes its JSON into the buffer it sends. Recursion is as deep as the tree, as in jansson.
 */
void js_buf_put_compact(cbuf *b, const json_t *v);
/*
 * Append @s (@n bytes of UTF-8) as a JSON string literal: '"', '\\' and control characters
 * escaped as jansson escapes them (\b \f \n \r \t, else \u00XX in upper case, or lower case
 * with @lower_hex, as RFC 8785 wants), every other byte verbatim.
 */
void js_buf_put_string(cbuf *b, const char *s, size_t n, bool lower_hex);
/*
 * js_buf_put_string() for bytes that may not be UTF-8 (what a client sent): each byte that does
 * not start a well-formed UTF-8 sequence is written as U+FFFD, so the text is kept, marked,
 * where jansson would refuse the whole string.
 */
void js_buf_put_string_lossy(cbuf *b, const char *s, size_t n);

void js__decrefp(json_t **p);
#define _cleanup_json_ __attribute__((cleanup(js__decrefp)))

#endif
