/*
 * k8s.c - Kubernetes YAML streams to JSON documents and back, with libyaml.
 *
 * The YAML comes from whoever wrote the deployment, often copied from the
 * internet, so it is parsed as untrusted: a size limit, a nesting limit, and
 * a limit on nodes counted *after* alias expansion, because a few lines of
 * anchors and aliases can describe billions of nodes ("billion laughs").
 * Aliases share the anchored JSON value instead of copying it, and only
 * finished nodes can be aliased, so a document cannot refer to itself.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "policy/pol_int.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/util.h"

#define MAX_ANCHORS 1024

typedef struct {
    char *name;
    json_t *value; /* a reference of its own */
    size_t nodes;  /* expanded size */
} anchor;

typedef struct {
    json_t *node; /* object or array */
    char *key;    /* pending key when node is an object */
    char *anchor; /* the anchor of this collection, or NULL */
    size_t start; /* node count when it opened */
} frame;

typedef struct {
    frame stack[POL_MAX_YAML_DEPTH];
    size_t depth;
    json_t *root;
    anchor anchors[MAX_ANCHORS];
    size_t anchors_len;
    size_t nodes;
    cista_error **err;
} loader;

static void loader_reset_doc(loader *l)
{
    for (size_t i = 0; i < l->depth; i++) {
        json_decref(l->stack[i].node);
        free(l->stack[i].key);
        free(l->stack[i].anchor);
    }
    l->depth = 0;
    json_decref(l->root);
    l->root = NULL;
    for (size_t i = 0; i < l->anchors_len; i++) {
        free(l->anchors[i].name);
        json_decref(l->anchors[i].value);
    }
    l->anchors_len = 0;
}

static int count(loader *l, size_t n, const yaml_mark_t *m)
{
    if (n > POL_MAX_YAML_NODES || l->nodes + n > POL_MAX_YAML_NODES)
        return err_set(l->err, -E2BIG,
                       "YAML line %zu: more than %u nodes (after expanding aliases); refusing "
                       "what looks like an alias bomb",
                       m->line + 1, POL_MAX_YAML_NODES);
    l->nodes += n;
    return 0;
}

static int add_anchor(loader *l, const char *name, json_t *v, size_t nodes, const yaml_mark_t *m)
{
    if (!name)
        return 0;
    if (l->anchors_len == MAX_ANCHORS)
        return err_set(l->err, -E2BIG, "YAML line %zu: more than %d anchors", m->line + 1,
                       MAX_ANCHORS);
    /* A redefined anchor shadows the older one (YAML 1.2); lookups go newest first. */
    l->anchors[l->anchors_len++] = (anchor){xstrdup(name), json_incref(v), nodes};
    return 0;
}

/* Attach @v (reference stolen) to the open collection, or make it the root. */
static int attach(loader *l, json_t *v, bool scalar_key_ok, const char *key_text,
                  const yaml_mark_t *m)
{
    if (l->depth == 0) {
        l->root = v;
        return 0;
    }
    frame *f = &l->stack[l->depth - 1];
    if (json_is_array(f->node)) {
        json_array_append_new(f->node, v);
        return 0;
    }
    if (!f->key) {
        json_decref(v);
        if (!scalar_key_ok)
            return err_set(l->err, -EINVAL, "YAML line %zu: mapping keys must be scalars",
                           m->line + 1);
        f->key = xstrdup(key_text);
        return 0;
    }
    if (json_object_get(f->node, f->key)) {
        json_decref(v);
        /* Two parsers could pick different values: refuse the ambiguity. */
        return err_set(l->err, -EINVAL, "YAML line %zu: duplicate key \"%s\"", m->line + 1, f->key);
    }
    json_object_set_new(f->node, f->key, v);
    free(f->key);
    f->key = NULL;
    return 0;
}

static bool all_digits(const char *s, const char *set)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr(set, *s))
            return false;
    return true;
}

/* YAML 1.2 core schema resolution of a plain scalar. New reference. */
static json_t *resolve_plain(const char *s)
{
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
        return json_null();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return json_false();
    const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
    int base = 0;
    if (all_digits(d, "0123456789"))
        base = 10;
    else if (s == d && !strncmp(s, "0x", 2) && all_digits(s + 2, "0123456789abcdefABCDEF"))
        base = 16;
    else if (s == d && !strncmp(s, "0o", 2) && all_digits(s + 2, "01234567"))
        base = 8;
    if (base) {
        errno = 0;
        char *end;
        const char *from = base == 10 ? s : s + 2;
        long long v = strtoll(from, &end, base);
        if (errno == 0 && *end == '\0')
            return json_integer(v);
        return json_string(s); /* out of range: keep the text */
    }
    /* Floats: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
    const char *p = d;
    size_t ip = strspn(p, "0123456789");
    p += ip;
    size_t fp = 0;
    bool dot = *p == '.';
    if (dot) {
        p++;
        fp = strspn(p, "0123456789");
        p += fp;
    }
    bool ok = (ip || fp) && (dot || *p == 'e' || *p == 'E');
    if (ok && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        size_t ep = strspn(p, "0123456789");
        ok = ep > 0;
        p += ep;
    }
    if (ok && *p == '\0') {
        double v = strtod(s, NULL);
        if (isfinite(v))
            return json_real(v);
    }
    return json_string(s);
}

static int check_tag(loader *l, const yaml_char_t *tag, const yaml_mark_t *m)
{
    if (!tag || !strcmp((const char *)tag, "!"))
        return 0;
    if (!strncmp((const char *)tag, "tag:yaml.org,2002:", 18))
        return 0;
    return err_set(l->err, -EINVAL, "YAML line %zu: unsupported tag %s", m->line + 1,
                   (const char *)tag);
}

static int on_scalar(loader *l, const yaml_event_t *ev)
{
    const yaml_mark_t *m = &ev->start_mark;
    const char *val = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (strlen(val) != ev->data.scalar.length)
        return err_set(l->err, -EINVAL, "YAML line %zu: scalar contains a NUL character",
                       m->line + 1);
    int r = check_tag(l, ev->data.scalar.tag, m);
    if (r < 0 || (r = count(l, 1, m)) < 0)
        return r;
    json_t *v;
    if (tag && !strcmp(tag, "tag:yaml.org,2002:str"))
        v = json_string(val);
    else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE || (tag && strcmp(tag, "!")))
        v = resolve_plain(val);
    else
        v = json_string(val);
    if (!v)
        return err_set(l->err, -EINVAL, "YAML line %zu: scalar is not valid UTF-8", m->line + 1);
    if ((r = add_anchor(l, (const char *)ev->data.scalar.anchor, v, 1, m)) < 0) {
        json_decref(v);
        return r;
    }
    return attach(l, v, true, val, m);
}

static int on_open(loader *l, const yaml_event_t *ev, bool mapping)
{
    const yaml_mark_t *m = &ev->start_mark;
    const yaml_char_t *tag = mapping ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
    const yaml_char_t *anc =
        mapping ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    int r = check_tag(l, tag, m);
    if (r < 0 || (r = count(l, 1, m)) < 0)
        return r;
    if (l->depth == POL_MAX_YAML_DEPTH)
        return err_set(l->err, -EINVAL, "YAML line %zu: nested deeper than %u levels", m->line + 1,
                       POL_MAX_YAML_DEPTH);
    if (l->depth > 0) {
        frame *f = &l->stack[l->depth - 1];
        if (json_is_object(f->node) && !f->key)
            return err_set(l->err, -EINVAL, "YAML line %zu: mapping keys must be scalars",
                           m->line + 1);
    }
    l->stack[l->depth++] = (frame){mapping ? json_object() : json_array(), NULL,
                                   anc ? xstrdup((const char *)anc) : NULL, l->nodes - 1};
    return 0;
}

static int on_close(loader *l, const yaml_event_t *ev)
{
    frame f = l->stack[--l->depth];
    free(f.key);
    int r = add_anchor(l, f.anchor, f.node, l->nodes - f.start, &ev->start_mark);
    free(f.anchor);
    if (r < 0) {
        json_decref(f.node);
        return r;
    }
    return attach(l, f.node, false, NULL, &ev->start_mark);
}

static int on_alias(loader *l, const yaml_event_t *ev)
{
    const yaml_mark_t *m = &ev->start_mark;
    const char *name = (const char *)ev->data.alias.anchor;
    for (size_t i = l->anchors_len; i-- > 0;) {
        if (strcmp(l->anchors[i].name, name) == 0) {
            int r = count(l, l->anchors[i].nodes, m);
            if (r < 0)
                return r;
            json_t *v = l->anchors[i].value;
            const char *key = json_is_string(v) ? json_string_value(v) : NULL;
            return attach(l, json_incref(v), key != NULL, key, m);
        }
    }
    return err_set(l->err, -EINVAL, "YAML line %zu: alias *%s names no earlier anchor", m->line + 1,
                   name);
}

static int handle(loader *l, const yaml_event_t *ev, json_t *docs)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        loader_reset_doc(l);
        return 0;
    case YAML_DOCUMENT_END_EVENT:
        /* Empty documents (only comments, a stray "---") are dropped. */
        if (l->root && !json_is_null(l->root))
            json_array_append(docs, l->root);
        loader_reset_doc(l);
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(l, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_open(l, ev, false);
    case YAML_MAPPING_START_EVENT:
        return on_open(l, ev, true);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return on_close(l, ev);
    case YAML_ALIAS_EVENT:
        return on_alias(l, ev);
    default:
        return 0;
    }
}

int pol__yaml_load(json_t **out, const char *data, size_t size, cista_error **err)
{
    if (size > POL_MAX_YAML)
        return err_set(err, -EMSGSIZE, "YAML: %zu bytes is more than the limit of %u", size,
                       POL_MAX_YAML);
    if (memchr(data, '\0', size))
        return err_set(err, -EINVAL, "YAML: contains a NUL byte");
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, size);
    loader *l = xzalloc(sizeof(*l));
    l->err = err;
    _cleanup_json_ json_t *docs = json_array();
    int r = 0;
    bool done = false;
    while (!done && r == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            r = err_set(err, -EINVAL, "YAML line %zu column %zu: %s%s%s",
                        parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                        parser.problem ? parser.problem : "parse error", parser.context ? " " : "",
                        parser.context ? parser.context : "");
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        r = handle(l, &ev, docs);
        yaml_event_delete(&ev);
    }
    loader_reset_doc(l);
    free(l);
    yaml_parser_delete(&parser);
    if (r < 0)
        return r;
    *out = steal_ptr(&docs);
    return 0;
}

/* ---- emitter ---- */

static int write_cb(void *ctx, unsigned char *buffer, size_t size)
{
    buf_put(ctx, buffer, size);
    return 1;
}

/* Would this text, written plain, read back as something other than a string? */
static bool needs_quotes(const char *s)
{
    json_t *v = resolve_plain(s);
    bool q = !json_is_string(v);
    json_decref(v);
    return q;
}

static int emit(yaml_emitter_t *e, const json_t *v, size_t depth);

static int emit_scalar(yaml_emitter_t *e, const char *s, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1, style);
    return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
}

static int emit(yaml_emitter_t *e, const json_t *v, size_t depth)
{
    yaml_event_t ev;
    if (depth > POL_MAX_YAML_DEPTH + 8)
        return -ELOOP;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        if (!yaml_emitter_emit(e, &ev))
            return -EIO;
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c)
        {
            int r = emit_scalar(
                e, k, needs_quotes(k) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
            if (r < 0 || (r = emit(e, c, depth + 1)) < 0)
                return r;
        }
        yaml_mapping_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
    }
    case JSON_ARRAY: {
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
        if (!yaml_emitter_emit(e, &ev))
            return -EIO;
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            int r = emit(e, c, depth + 1);
            if (r < 0)
                return r;
        }
        yaml_sequence_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
    }
    case JSON_STRING: {
        const char *s = json_string_value(v);
        yaml_scalar_style_t st = YAML_ANY_SCALAR_STYLE;
        if (needs_quotes(s))
            st = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        else if (strchr(s, '\n'))
            st = YAML_LITERAL_SCALAR_STYLE; /* keeps scripts and config files readable */
        return emit_scalar(e, s, st);
    }
    case JSON_INTEGER: {
        char b[32];
        snprintf(b, sizeof(b), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(e, b, YAML_PLAIN_SCALAR_STYLE);
    }
    case JSON_REAL: {
        char b[40];
        snprintf(b, sizeof(b), "%.17g", json_real_value(v));
        if (!strpbrk(b, ".eE"))
            strcat(b, ".0");
        return emit_scalar(e, b, YAML_PLAIN_SCALAR_STYLE);
    }
    case JSON_TRUE:
        return emit_scalar(e, "true", YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(e, "false", YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
    default:
        return emit_scalar(e, "null", YAML_PLAIN_SCALAR_STYLE);
    }
}

int pol__yaml_emit(char **out, const json_t *docs, cista_error **err)
{
    _cleanup_buf_ cbuf b = CBUF_INIT;
    yaml_emitter_t e;
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&e))
        abort();
    yaml_emitter_set_output(&e, write_cb, &b);
    yaml_emitter_set_unicode(&e, 1);
    /* Never fold: the policy annotation is one long base64 line. */
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    int r = 0;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    if (!yaml_emitter_emit(&e, &ev))
        r = -EIO;
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        if (r < 0)
            break;
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, i == 0);
        if (!yaml_emitter_emit(&e, &ev)) {
            r = -EIO;
            break;
        }
        if ((r = emit(&e, d, 0)) < 0)
            break;
        yaml_document_end_event_initialize(&ev, 1);
        if (!yaml_emitter_emit(&e, &ev))
            r = -EIO;
    }
    if (r == 0) {
        yaml_stream_end_event_initialize(&ev);
        if (!yaml_emitter_emit(&e, &ev) || !yaml_emitter_flush(&e))
            r = -EIO;
    }
    if (r < 0) {
        r = err_set(err, r, "YAML emitter: %s", e.problem ? e.problem : strerror(-r));
        yaml_emitter_delete(&e);
        return r;
    }
    yaml_emitter_delete(&e);
    *out = (char *)buf_steal(&b, NULL);
    return 0;
}
