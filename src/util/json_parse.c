/*
 * json_parse.c - the JSON parser behind js_parse(): builds jansson trees, faster than jansson.
 *
 * jansson's json_loadb() reads its input through a stream one character at a time, checking
 * UTF-8 per character and copying every string through a growing buffer: about 8 ns a byte,
 * some 15 us for a KBS attestation body of 2 KB, most of it a long base64 string. This parser
 * works on the buffer in place. It skips over string bodies eight bytes at a time, looks at a
 * byte singly only where it is a quote, a backslash, a control character or not ASCII, and
 * makes a string straight from the input when it has no escapes.
 *
 * It accepts exactly what jansson 2.14's json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)
 * accepts, with two exceptions, both refusals. More than JS_MAX_DEPTH nested arrays/objects
 * is refused here while parsing, so hostile input cannot make the stack or the tree deep. And
 * every NUL byte is refused: jansson refuses them too, but for one it loses, a NUL right
 * after a number or a true/false/null: its lexer reads that byte one too far and puts it back
 * (stream_unget) into a buffer where NUL means "empty". js_parse() promises to refuse
 * embedded NULs, and another parser would not skip one. For what it accepts, it builds the
 * same tree with jansson's own constructors: same values, integers as integers and other
 * numbers as reals, members in document order. fuzz/fuzz_json_diff.c holds the two parsers
 * to that. jansson's rules, all kept here:
 *
 *   - any value at the top level, surrounded by whitespace (space, \t, \n, \r) only;
 *   - all of the input valid UTF-8 (no overlong forms, surrogates or code points past
 *     U+10FFFF), though outside strings only ASCII can be valid JSON anyway;
 *   - in strings, no raw control character (< 0x20), only the escapes \" \\ \/ \b \f \n \r
 *     \t \uXXXX, UTF-16 surrogates only as a high-low pair, and no \u0000 (jansson needs
 *     JSON_ALLOW_NUL for that, which js_parse() does not pass);
 *   - numbers -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, an integer when there is no
 *     fraction and no exponent (and then it must fit json_int_t), else a double that must not
 *     overflow (underflow to a denormal or zero is fine);
 *   - no two members of an object with the same key, compared byte-wise after unescaping.
 *
 * The parser is a loop over an explicit stack of the open arrays and objects, not a
 * recursion. A new array or object goes into its parent as soon as it is opened, so the
 * root owns everything made so far and one json_decref(root) frees a partial tree.
 */
#include "util/json_int.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"
#include "util/util.h"

/* The integer range below is that of a 64-bit json_int_t (long long, strtoll in jansson). */
_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "json_int_t is 64 bits");

/*
 * Bytes of strings with escapes, decoded. Most such strings are short, so the buffer starts
 * inside the struct, on the parser's stack; a longer one moves to the heap.
 */
typedef struct {
    char *data;
    size_t size, cap;
    char inline_data[256];
} scratch;

typedef struct {
    const unsigned char *start, *p, *end;
    /* the first error: where it was seen and what it was */
    const unsigned char *err_at;
    const char *why;
    js__status status;
    /*
     * A member's key stays in use while its value is parsed (it is inserted with the value),
     * so keys and string values decode into separate buffers.
     */
    scratch key, val;
} parser;

static void scratch_init(scratch *s)
{
    s->data = s->inline_data;
    s->size = 0;
    s->cap = sizeof(s->inline_data);
}

static void scratch_free(scratch *s)
{
    if (s->data != s->inline_data)
        free(s->data);
}

/* Room for @n more bytes. */
static void scratch_reserve(scratch *s, size_t n)
{
    if (s->cap - s->size >= n)
        return;
    size_t cap = s->cap * 2;
    while (cap - s->size < n)
        cap *= 2;
    if (s->data == s->inline_data) {
        s->data = memcpy(xmalloc(cap), s->inline_data, s->size);
    } else {
        s->data = xrealloc(s->data, cap);
    }
    s->cap = cap;
}

static void scratch_put(scratch *s, const void *src, size_t n)
{
    scratch_reserve(s, n);
    memcpy(s->data + s->size, src, n);
    s->size += n;
}

/* Record the first error; returns false (or NULL, through fail_null) for the caller to pass on. */
static bool fail(parser *ps, const unsigned char *at, const char *why)
{
    if (ps->status == JS__OK) {
        ps->status = JS__ESYNTAX;
        ps->err_at = at;
        ps->why = why;
    }
    return false;
}

static json_t *fail_null(parser *ps, const unsigned char *at, const char *why)
{
    fail(ps, at, why);
    return NULL;
}

/* A jansson constructor returned NULL: it only does that when malloc fails. */
static bool fail_nomem(parser *ps)
{
    if (ps->status == JS__OK) {
        ps->status = JS__ENOMEM;
        ps->err_at = ps->p;
        ps->why = "out of memory";
    }
    return false;
}

static bool is_digit(unsigned c)
{
    return c - '0' < 10;
}

static void skip_ws(parser *ps)
{
    const unsigned char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

/*
 * String bodies, eight bytes at a time ("Bit Twiddling Hacks", "determine if a word has a
 * byte less than n"): (x - 0x01..01 * n) & ~x & 0x80..80 is non-zero exactly when some byte
 * of x is below n (n <= 128); a byte equal to c is a byte of x ^ 0x01..01 * c below 1. The
 * bits it sets above the first such byte may be wrong (borrows), so it only says whether to
 * look at the word's bytes one by one, which also keeps it independent of byte order.
 */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static bool word_needs_look(uint64_t w)
{
    uint64_t quote = w ^ (ONES * '"'), bslash = w ^ (ONES * '\\');
    uint64_t t = ((quote - ONES) & ~quote) | ((bslash - ONES) & ~bslash) | /* a '"' or '\\' */
                 ((w - ONES * 0x20) & ~w) |                                /* a control byte */
                 w;                                                        /* a byte >= 0x80 */
    return (t & HIGHS) != 0;
}

/* A byte a string body takes as it is: ASCII from 0x20 (DEL too), but '"' and '\\'. */
static bool is_plain(unsigned c)
{
    return c - 0x20 < 0x60 && c != '"' && c != '\\';
}

static bool is_cont(unsigned c)
{
    return (c & 0xC0) == 0x80;
}

/*
 * Length of the well-formed UTF-8 sequence of two to four bytes at @p (RFC 3629, section 4:
 * the second byte's range rules out overlong forms, surrogates and code points past
 * U+10FFFF), or 0 if there is none.
 */
size_t js__utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && is_cont(p[1]) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || !is_cont(p[1]) || !is_cont(p[2]))
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || !is_cont(p[1]) || !is_cont(p[2]) || !is_cont(p[3]))
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0; /* ASCII is not ours to see; 0x80-0xC1 and 0xF5-0xFF never start a sequence */
}

static void utf8_put(scratch *s, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    scratch_put(s, b, n);
}

/* The four hex digits (either case) at @p, or -1. */
static int32_t hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (is_digit(c))
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | (int32_t)d;
    }
    return v;
}

/* The escape at *pp (its backslash), decoded onto @s; *pp moves past it. */
static bool decode_escape(parser *ps, const unsigned char **pp, scratch *s)
{
    const unsigned char *p = *pp, *end = ps->end;
    if (end - p < 2)
        return fail(ps, p, "unterminated string");
    char c;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
        c = (char)p[1];
        break;
    case 'b':
        c = '\b';
        break;
    case 'f':
        c = '\f';
        break;
    case 'n':
        c = '\n';
        break;
    case 'r':
        c = '\r';
        break;
    case 't':
        c = '\t';
        break;
    case 'u': {
        int32_t cp = hex4(p + 2, end);
        if (cp < 0)
            return fail(ps, p, "invalid \\u escape");
        if (cp == 0)
            return fail(ps, p, "\\u0000 is not allowed");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(ps, p, "lone UTF-16 low surrogate");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            /* Only a low surrogate escape may follow a high one. */
            int32_t lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8, end) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return fail(ps, p, "lone UTF-16 high surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        utf8_put(s, (uint32_t)cp);
        *pp = p + 6;
        return true;
    }
    default:
        return fail(ps, p, "invalid escape");
    }
    scratch_put(s, &c, 1);
    *pp = p + 2;
    return true;
}

/*
 * The string whose opening quote is at ps->p. Its bytes are the input's own when it has no
 * escape, else decoded into @s: *out and *len say which; ps->p moves past the closing quote.
 */
static bool scan_string(parser *ps, scratch *s, const char **out, size_t *len)
{
    const unsigned char *p = ps->p + 1, *end = ps->end;
    const unsigned char *run = p; /* the bytes from here on are not in @s yet */
    bool escaped = false;
    for (;;) {
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, sizeof(w));
            if (word_needs_look(w))
                break;
            p += 8;
        }
        while (p < end && is_plain(*p))
            p++;
        if (p == end)
            return fail(ps, ps->p, "unterminated string");
        unsigned c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (!escaped) {
                s->size = 0;
                escaped = true;
            }
            scratch_put(s, run, (size_t)(p - run));
            if (!decode_escape(ps, &p, s))
                return false;
            run = p;
        } else if (c < 0x20) {
            return fail(ps, p, "control character in string");
        } else {
            size_t n = js__utf8_len(p, end);
            if (!n)
                return fail(ps, p, "invalid UTF-8");
            p += n;
        }
    }
    if (escaped) {
        scratch_put(s, run, (size_t)(p - run));
        *out = s->data;
        *len = s->size;
    } else {
        *out = (const char *)run;
        *len = (size_t)(p - run);
    }
    ps->p = p + 1;
    return true;
}

static json_t *parse_string(parser *ps)
{
    const char *s;
    size_t n;
    if (!scan_string(ps, &ps->val, &s, &n))
        return NULL;
    /* scan_string() checked the UTF-8 (and there is no NUL), which is all the check does. */
    return json_stringn_nocheck(s, n);
}

/* The "C" locale, made once: numbers in JSON are not in the user's locale. */
static locale_t g_c_locale;
static pthread_once_t g_c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_make(void)
{
    g_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!g_c_locale)
        abort(); /* only on ENOMEM, and "C" is built in */
}

static locale_t c_locale(void)
{
    pthread_once(&g_c_locale_once, c_locale_make);
    return g_c_locale;
}

static json_t *parse_number(parser *ps)
{
    const unsigned char *start = ps->p, *p = start, *end = ps->end;
    bool neg = false, integer = true;
    if (*p == '-') {
        neg = true;
        p++;
    }
    if (p == end || !is_digit(*p))
        return fail_null(ps, p, "invalid number");
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return fail_null(ps, p, "leading zero in number");
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && *p == '.') {
        integer = false;
        p++;
        if (p == end || !is_digit(*p))
            return fail_null(ps, p, "digit expected after '.'");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return fail_null(ps, p, "digit expected in exponent");
        while (p < end && is_digit(*p))
            p++;
    }
    ps->p = p;

    if (integer) {
        /* What strtoll() gives jansson, without needing a NUL after the digits. */
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
        for (const unsigned char *q = start + neg; q < p; q++) {
            unsigned d = *q - '0';
            if (v > (limit - d) / 10)
                return fail_null(ps, start, "integer out of range");
            v = v * 10 + d;
        }
        json_int_t i;
        if (!neg)
            i = (json_int_t)v;
        else if (v == limit)
            i = INT64_MIN;
        else
            i = -(json_int_t)v;
        return json_integer(i);
    }

    /*
     * strtod() for the same digits gives the same double as jansson's (correctly rounded).
     * It wants a NUL-terminated copy, and reads '.' as the decimal point only in the C locale:
     * strtod_l() with a C locale of our own, whatever the locale of the program linking this
     * (jansson swaps the point for the locale's instead).
     */
    char small[64], *text = small, *stop = NULL;
    size_t n = (size_t)(p - start);
    if (n >= sizeof(small))
        text = xmalloc(n + 1);
    memcpy(text, start, n);
    text[n] = '\0';
    int saved_errno = errno;
    errno = 0;
    double d = strtod_l(text, &stop, c_locale());
    bool overflow = (d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE;
    bool whole = stop == text + n;
    errno = saved_errno;
    if (text != small)
        free(text);
    if (!whole)
        return fail_null(ps, start, "invalid number");
    if (overflow)
        return fail_null(ps, start, "number out of range");
    return json_real(d);
}

/* true, false or null, spelled exactly. */
static json_t *parse_literal(parser *ps)
{
    static const struct {
        const char *text;
        size_t len;
    } lit[] = {{"true", 4}, {"false", 5}, {"null", 4}};
    size_t avail = (size_t)(ps->end - ps->p);
    for (size_t i = 0; i < ARRAY_LEN(lit); i++) {
        if (avail >= lit[i].len && memcmp(ps->p, lit[i].text, lit[i].len) == 0) {
            ps->p += lit[i].len;
            return i == 0 ? json_true() : i == 1 ? json_false() : json_null();
        }
    }
    return fail_null(ps, ps->p, "invalid token");
}

/*
 * An object member's key and its ':', with ps->p at the key's quote (after whitespace). On
 * return ps->p is at the value (after whitespace) and *key / *klen name the key: in the input
 * or in ps->key, valid until the next key is read.
 */
static bool parse_key(parser *ps, json_t *obj, const char **key, size_t *klen)
{
    const unsigned char *at = ps->p;
    if (at == ps->end || *at != '"')
        return fail(ps, at, "string expected as object key");
    if (!scan_string(ps, &ps->key, key, klen))
        return false;
    /* A parser that kept the first or the last of two values could be shown another document. */
    if (json_object_getn(obj, *key, *klen))
        return fail(ps, at, "duplicate object key");
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != ':')
        return fail(ps, ps->p, "':' expected");
    ps->p++;
    skip_ws(ps);
    return true;
}

static json_t *parse_document(parser *ps)
{
    /* The open arrays and objects, outermost first: the last is where the next value goes. */
    json_t *open[JS_MAX_DEPTH];
    size_t depth = 0;
    json_t *root = NULL;
    const char *key = NULL; /* of the member whose value comes next, when in an object */
    size_t klen = 0;

    skip_ws(ps);
    for (;;) {
        /* ps->p is at a value. */
        json_t *v;
        bool opened = false;
        if (ps->p == ps->end) {
            fail(ps, ps->p, "value expected");
            goto error;
        }
        switch (*ps->p) {
        case '{':
        case '[':
            if (depth == JS_MAX_DEPTH) {
                ps->status = JS__EDEPTH;
                ps->err_at = ps->p;
                ps->why = "nested too deep";
                goto error;
            }
            v = *ps->p == '{' ? json_object() : json_array();
            opened = true;
            break;
        case '"':
            v = parse_string(ps);
            break;
        case 't':
        case 'f':
        case 'n':
            v = parse_literal(ps);
            break;
        case '-':
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
            v = parse_number(ps);
            break;
        default:
            fail(ps, ps->p, "value expected");
            goto error;
        }
        if (!v) {
            fail_nomem(ps); /* unless the parse failed first */
            goto error;
        }

        /* Into the parent; jansson's setters take the reference even when they fail. */
        if (depth == 0) {
            root = v;
        } else if (json_is_array(open[depth - 1])) {
            if (json_array_append_new(open[depth - 1], v) < 0) {
                fail_nomem(ps);
                goto error;
            }
        } else if (json_object_setn_new_nocheck(open[depth - 1], key, klen, v) < 0) {
            fail_nomem(ps);
            goto error;
        }

        if (opened) {
            open[depth++] = v;
            ps->p++;
            skip_ws(ps);
            bool is_obj = json_is_object(v);
            if (ps->p < ps->end && *ps->p == (is_obj ? '}' : ']')) {
                ps->p++;
                depth--;
            } else {
                if (is_obj && !parse_key(ps, v, &key, &klen))
                    goto error;
                continue;
            }
        }

        /* After a value: close what ends here, then on to the next value or the end. */
        for (;;) {
            skip_ws(ps);
            if (depth == 0) {
                if (ps->p != ps->end) {
                    fail(ps, ps->p, "end of input expected");
                    goto error;
                }
                return root;
            }
            json_t *parent = open[depth - 1];
            bool is_obj = json_is_object(parent);
            if (ps->p == ps->end) {
                fail(ps, ps->p, is_obj ? "',' or '}' expected" : "',' or ']' expected");
                goto error;
            }
            if (*ps->p == ',') {
                ps->p++;
                skip_ws(ps);
                if (is_obj && !parse_key(ps, parent, &key, &klen))
                    goto error;
                break;
            }
            if (*ps->p != (is_obj ? '}' : ']')) {
                fail(ps, ps->p, is_obj ? "',' or '}' expected" : "',' or ']' expected");
                goto error;
            }
            ps->p++;
            depth--;
        }
    }

error:
    json_decref(root);
    return NULL;
}

/* 1-based line and column (in characters, as jansson counts) of @at. */
static void locate(const unsigned char *start, const unsigned char *at, int *line, int *column)
{
    size_t l = 1, c = 1;
    for (const unsigned char *q = start; q < at; q++) {
        if (*q == '\n') {
            l++;
            c = 1;
        } else if (!is_cont(*q)) {
            c++;
        }
    }
    *line = l > INT_MAX ? INT_MAX : (int)l;
    *column = c > INT_MAX ? INT_MAX : (int)c;
}

json_t *js__parse(const void *data, size_t size, js__error *e)
{
    /* An empty input may come as NULL, which takes no arithmetic, not even + 0. */
    const unsigned char *start = size ? data : (const unsigned char *)"";
    parser ps = {.start = start, .p = start, .end = start + size};
    scratch_init(&ps.key);
    scratch_init(&ps.val);
    json_t *v = parse_document(&ps);
    scratch_free(&ps.key);
    scratch_free(&ps.val);
    if (!v) {
        e->status = ps.status;
        e->why = ps.why;
        locate(ps.start, ps.err_at, &e->line, &e->column);
    }
    return v;
}
