/* json.c - bounded, strict JSON parsing and typed getters over jansson. */
#include "util/json.h"
#include "util/json_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

int js_parse(json_t **out, const void *data, size_t size, size_t max, const char *what,
             cista_error **err)
{
    if (size > max)
        return err_set(err, -EMSGSIZE, "%s: %zu bytes is more than the limit of %zu", what, size,
                       max);
    /*
     * Our own parser (json_parse.c), for speed; it accepts and builds exactly what jansson's
     * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) does. Duplicate keys are an
     * ambiguity attackers use to show two parsers two documents. The depth is bounded while
     * parsing, not after.
     */
    js__error je;
    json_t *v = js__parse(data, size, &je);
    if (!v) {
        if (je.status == JS__EDEPTH)
            return err_set(err, -EINVAL, "%s: JSON nested deeper than %d levels", what,
                           JS_MAX_DEPTH);
        if (je.status == JS__ENOMEM)
            return err_set(err, -ENOMEM, "%s: out of memory parsing JSON", what);
        /*
         * The document may be a secret, or a file a less trusted party pointed us at, and the
         * message may reach a log or another party: line and column say where without
         * quoting what.
         */
        return err_set(err, -EINVAL, "%s: invalid JSON at line %d column %d: %s", what, je.line,
                       je.column, je.why);
    }
    *out = v;
    return 0;
}

int js_parse_object(json_t **out, const void *data, size_t size, size_t max, const char *what,
                    cista_error **err)
{
    json_t *v = NULL;
    int r = js_parse(&v, data, size, max, what, err);
    if (r < 0)
        return r;
    if (!json_is_object(v)) {
        json_decref(v);
        return err_set(err, -EINVAL, "%s: expected a JSON object", what);
    }
    *out = v;
    return 0;
}

static int get(json_t **out, const json_t *obj, const char *key, bool required, const char *what,
               cista_error **err)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = NULL;
        if (required)
            return err_set(err, -EINVAL, "%s: member \"%s\" is missing", what, key);
        return 0;
    }
    *out = v;
    return 1;
}

int js_get_string(const char **out, const json_t *obj, const char *key, bool required,
                  const char *what, cista_error **err)
{
    json_t *v;
    int r = get(&v, obj, key, required, what, err);
    *out = NULL;
    if (r <= 0)
        return r;
    if (!json_is_string(v))
        return err_set(err, -EINVAL, "%s: member \"%s\" must be a string", what, key);
    /* C strings cannot carry the NUL that JSON can. */
    if (strlen(json_string_value(v)) != json_string_length(v))
        return err_set(err, -EINVAL, "%s: member \"%s\" contains a NUL character", what, key);
    *out = json_string_value(v);
    return 0;
}

int js_get_object(json_t **out, const json_t *obj, const char *key, bool required, const char *what,
                  cista_error **err)
{
    int r = get(out, obj, key, required, what, err);
    if (r <= 0)
        return r;
    if (!json_is_object(*out)) {
        *out = NULL;
        return err_set(err, -EINVAL, "%s: member \"%s\" must be an object", what, key);
    }
    return 0;
}

int js_get_array(json_t **out, const json_t *obj, const char *key, bool required, const char *what,
                 cista_error **err)
{
    int r = get(out, obj, key, required, what, err);
    if (r <= 0)
        return r;
    if (!json_is_array(*out)) {
        *out = NULL;
        return err_set(err, -EINVAL, "%s: member \"%s\" must be an array", what, key);
    }
    return 0;
}

int js_get_int(int64_t *out, const json_t *obj, const char *key, bool required, const char *what,
               cista_error **err)
{
    json_t *v;
    *out = 0;
    int r = get(&v, obj, key, required, what, err);
    if (r <= 0)
        return r;
    if (!json_is_integer(v))
        return err_set(err, -EINVAL, "%s: member \"%s\" must be an integer", what, key);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

int js_get_bool(bool *out, const json_t *obj, const char *key, bool required, const char *what,
                cista_error **err)
{
    json_t *v;
    *out = false;
    int r = get(&v, obj, key, required, what, err);
    if (r <= 0)
        return r;
    if (!json_is_boolean(v))
        return err_set(err, -EINVAL, "%s: member \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return 0;
}

char *js_dump_compact(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!s)
        return xstrdup("null");
    return s;
}

char *js_dump_pretty(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    char *r = xasprintf("%s\n", s ? s : "null");
    free(s);
    return r;
}

static char short_escape(unsigned char c)
{
    switch (c) {
    case '"':
    case '\\':
        return (char)c;
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    }
    return 0;
}

static void put_escape(cbuf *b, unsigned char c, bool lower_hex)
{
    char e = short_escape(c);
    if (e) {
        char seq[2] = {'\\', e};
        buf_put(b, seq, sizeof(seq));
        return;
    }
    const char *digits = lower_hex ? "0123456789abcdef" : "0123456789ABCDEF";
    char seq[6] = {'\\', 'u', '0', '0', digits[c >> 4], digits[c & 15]};
    buf_put(b, seq, sizeof(seq));
}

/* js_buf_put_string() without the quotes. */
static void put_string_body(cbuf *b, const char *s, size_t n, bool lower_hex)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_put(b, s + run, i - run);
        put_escape(b, c, lower_hex);
        run = i + 1;
    }
    buf_put(b, s + run, n - run);
}

void js_buf_put_string(cbuf *b, const char *s, size_t n, bool lower_hex)
{
    buf_put(b, "\"", 1);
    put_string_body(b, s, n, lower_hex);
    buf_put(b, "\"", 1);
}

void js_buf_put_string_lossy(cbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
    buf_put(b, "\"", 1);
    while (p < end) {
        size_t len = *p < 0x80 ? 1 : js__utf8_len(p, end);
        if (len) {
            p += len;
            continue;
        }
        put_string_body(b, (const char *)run, (size_t)(p - run), false);
        buf_put(b, "\xef\xbf\xbd", 3); /* U+FFFD REPLACEMENT CHARACTER */
        run = ++p;
    }
    put_string_body(b, (const char *)run, (size_t)(end - run), false);
    buf_put(b, "\"", 1);
}

static void put_scalar(cbuf *b, const json_t *v)
{
    char num[32];
    if (!v) {
        buf_puts(b, "null");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        js_buf_put_string(b, json_string_value(v), json_string_length(v), false);
        return;
    case JSON_INTEGER:
        buf_put(b, num,
                (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
        return;
    case JSON_TRUE:
        buf_puts(b, "true");
        return;
    case JSON_FALSE:
        buf_puts(b, "false");
        return;
    case JSON_REAL: {
        /* rare in our documents: jansson's own digits (%.17g, ".0" kept) */
        char *text = js_dump_compact(v);
        buf_puts(b, text);
        free(text);
        return;
    }
    default:
        buf_puts(b, "null");
    }
}

void js_buf_put_compact(cbuf *b, const json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        size_t klen;
        json_t *x;
        char sep = '{';
        json_object_keylen_foreach((json_t *)v, k, klen, x)
        {
            buf_put(b, &sep, 1);
            js_buf_put_string(b, k, klen, false);
            buf_put(b, ":", 1);
            js_buf_put_compact(b, x);
            sep = ',';
        }
        buf_puts(b, sep == '{' ? "{}" : "}");
    } else if (json_is_array(v)) {
        buf_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                buf_put(b, ",", 1);
            js_buf_put_compact(b, json_array_get(v, i));
        }
        buf_put(b, "]", 1);
    } else {
        put_scalar(b, v);
    }
}

void js__decrefp(json_t **p)
{
    json_decref(*p);
    *p = NULL;
}
