/*
 * release.c - declarative resource release policies (see appraisal.h).
 *
 * A policy is parsed once into a small tree (rules and conditions, regexes
 * compiled) with hard limits on size, depth and node count; evaluation is a
 * walk over that tree with no allocation beyond the reason text.
 */
#include "policy/appraisal.h"

#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "policy/pol_int.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/util.h"

typedef enum {
    N_ANY,
    N_ALL,
    N_COND,
} node_kind;

typedef enum {
    OP_EQUALS,
    OP_NOT_EQUALS,
    OP_IN,
    OP_NOT_IN,
    OP_MATCHES,
    OP_GTE,
    OP_GT,
    OP_LTE,
    OP_LT,
    OP_EXISTS,
} cond_op;

static const struct {
    const char *name;
    cond_op op;
} g_ops[] = {
    {"equals", OP_EQUALS},
    {"notEquals", OP_NOT_EQUALS},
    {"in", OP_IN},
    {"notIn", OP_NOT_IN},
    {"matches", OP_MATCHES},
    {"gte", OP_GTE},
    {"greaterOrEquals", OP_GTE},
    {"gt", OP_GT},
    {"greater", OP_GT},
    {"lte", OP_LTE},
    {"lessOrEquals", OP_LTE},
    {"lt", OP_LT},
    {"less", OP_LT},
    {"exists", OP_EXISTS},
};

typedef struct node node;
struct node {
    node_kind kind;
    char *name; /* optional rule name */
    node **kids;
    size_t kid_count;
    /* conditions */
    char *claim;
    cond_op op;
    const char *op_name;
    json_t *value;
    regex_t re;
    bool has_re;
};

struct pol_release {
    node *root;
};

static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->kid_count; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->name);
    free(n->claim);
    json_decref(n->value);
    if (n->has_re)
        regfree(&n->re);
    free(n);
}

void pol_release_free(pol_release *p)
{
    if (!p)
        return;
    node_free(p->root);
    free(p);
}

void pol__release_freep(pol_release **p)
{
    pol_release_free(*p);
    *p = NULL;
}

typedef struct {
    size_t nodes;
} parse_ctx;

static int parse_node(node **out, const json_t *j, unsigned depth, const char *where,
                      parse_ctx *ctx, cista_error **err);

static int parse_list(node *n, const json_t *arr, unsigned depth, const char *where, parse_ctx *ctx,
                      cista_error **err)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return err_set(err, -EINVAL, "release policy: %s must be a non-empty array", where);
    n->kids = xzalloc(json_array_size(arr) * sizeof(node *));
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        _cleanup_free_ char *w = xasprintf("%s[%zu]", where, i);
        /* Counted even on failure: a half-built child is freed with its parent. */
        int r = parse_node(&n->kids[n->kid_count++], e, depth + 1, w, ctx, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_cond(node *n, const json_t *j, const char *where, cista_error **err)
{
    const char *claim = json_string_value(json_object_get(j, "claim"));
    if (!claim || !*claim || strlen(claim) > POL_CLAIM_MAX_PATH)
        return err_set(err, -EINVAL,
                       "release policy: %s.claim must be a dotted claim path of 1-%u bytes", where,
                       POL_CLAIM_MAX_PATH);
    n->kind = N_COND;
    n->claim = xstrdup(claim);
    const char *k;
    json_t *v;
    const char *opk = NULL;
    json_object_foreach((json_t *)j, k, v)
    {
        if (!strcmp(k, "claim") || !strcmp(k, "name"))
            continue;
        bool known = false;
        for (size_t i = 0; i < ARRAY_LEN(g_ops); i++)
            if (!strcmp(g_ops[i].name, k)) {
                known = true;
                if (opk)
                    return err_set(err, -EINVAL,
                                   "release policy: %s has two operators (%s, %s); use one per "
                                   "condition",
                                   where, opk, k);
                opk = g_ops[i].name;
                n->op = g_ops[i].op;
                n->value = json_incref(v);
            }
        if (!known)
            return err_set(err, -EINVAL,
                           "release policy: %s: unknown member \"%s\" (operators: equals, "
                           "notEquals, in, notIn, matches, gte, gt, lte, lt, exists)",
                           where, k);
    }
    if (!opk)
        return err_set(err, -EINVAL, "release policy: %s (claim %s) has no operator", where, claim);
    n->op_name = opk;
    switch (n->op) {
    case OP_IN:
    case OP_NOT_IN:
        if (!json_is_array(n->value) || json_array_size(n->value) > 4096)
            return err_set(err, -EINVAL, "release policy: %s: \"%s\" needs an array (at most 4096)",
                           where, opk);
        break;
    case OP_MATCHES: {
        const char *pat = json_string_value(n->value);
        if (!pat || strlen(pat) > 256)
            return err_set(err, -EINVAL,
                           "release policy: %s: \"matches\" needs a regex string of at most 256 "
                           "bytes",
                           where);
        _cleanup_free_ char *what = xasprintf("release policy: %s", where);
        int rc = pol__regex_compile(&n->re, pat, what, err);
        if (rc < 0)
            return rc;
        n->has_re = true;
        break;
    }
    case OP_GTE:
    case OP_GT:
    case OP_LTE:
    case OP_LT:
        if (!json_is_number(n->value))
            return err_set(err, -EINVAL, "release policy: %s: \"%s\" needs a number", where, opk);
        break;
    case OP_EXISTS:
        if (!json_is_boolean(n->value))
            return err_set(err, -EINVAL, "release policy: %s: \"exists\" needs true or false",
                           where);
        break;
    case OP_EQUALS:
    case OP_NOT_EQUALS:
        break;
    }
    return 0;
}

static int parse_node(node **out, const json_t *j, unsigned depth, const char *where,
                      parse_ctx *ctx, cista_error **err)
{
    if (depth > POL_RELEASE_MAX_DEPTH)
        return err_set(err, -E2BIG, "release policy: %s nests deeper than %u levels", where,
                       POL_RELEASE_MAX_DEPTH);
    if (++ctx->nodes > POL_RELEASE_MAX_NODES)
        return err_set(err, -E2BIG, "release policy: more than %u rules and conditions",
                       POL_RELEASE_MAX_NODES);
    if (!json_is_object(j))
        return err_set(err, -EINVAL, "release policy: %s must be an object", where);
    node *n = xzalloc(sizeof(*n));
    *out = n; /* owned by the parent from here on, freed with it */
    const json_t *name = json_object_get(j, "name");
    if (name) {
        if (!json_is_string(name) || json_string_length(name) > 128)
            return err_set(err, -EINVAL, "release policy: %s.name must be a string (≤ 128)", where);
        n->name = xstrdup(json_string_value(name));
    }
    const json_t *any = json_object_get(j, "anyOf");
    const json_t *all = json_object_get(j, "allOf");
    if (any || all) {
        if (any && all)
            return err_set(err, -EINVAL, "release policy: %s has both anyOf and allOf", where);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            if (strcmp(k, "anyOf") && strcmp(k, "allOf") && strcmp(k, "name") &&
                strcmp(k, "authority") && (depth > 0 || strcmp(k, "version")))
                return err_set(err, -EINVAL, "release policy: %s: unknown member \"%s\"", where, k);
        }
        n->kind = any ? N_ANY : N_ALL;
        _cleanup_free_ char *w = xasprintf("%s.%s", where, any ? "anyOf" : "allOf");
        return parse_list(n, any ? any : all, depth, w, ctx, err);
    }
    if (depth == 0)
        return err_set(err, -EINVAL, "release policy: the top level needs \"anyOf\" or \"allOf\"");
    return parse_cond(n, j, where, err);
}

int pol_release_parse(pol_release **out, const void *data, size_t size, cista_error **err)
{
    _cleanup_json_ json_t *doc = NULL;
    int r = js_parse_object(&doc, data, size, POL_MAX_RELEASE, "release policy", err);
    if (r < 0)
        return r;
    const char *version = json_string_value(json_object_get(doc, "version"));
    if (!version)
        return err_set(err, -EINVAL, "release policy: member \"version\" (\"1.0.0\") is missing");
    if (strcmp(version, "1.0.0") && strcmp(version, "0.2"))
        return err_set(err, -EPROTONOSUPPORT,
                       "release policy: version \"%s\" is not supported (1.0.0)", version);
    pol_release *p = xzalloc(sizeof(*p));
    parse_ctx ctx = {0};
    r = parse_node(&p->root, doc, 0, "policy", &ctx, err);
    if (r < 0) {
        pol_release_free(p);
        return r;
    }
    *out = p;
    return 0;
}

/* ---- claim lookup ---- */

const json_t *pol_claim_lookup(const json_t *doc, const char *path)
{
    size_t len = strlen(path);
    if (len == 0 || len > POL_CLAIM_MAX_PATH)
        return NULL;
    const json_t *cur = doc;
    size_t pos = 0;
    while (cur && pos < len) {
        const char *rest = path + pos;
        size_t rlen = len - pos;
        const json_t *next = NULL;
        size_t used = 0;
        if (json_is_object(cur)) {
            /* Longest dot-delimited prefix of the rest that is a key. */
            for (size_t cut = rlen; cut > 0; cut--) {
                if (cut < rlen && rest[cut] != '.')
                    continue;
                next = json_object_getn(cur, rest, cut);
                if (next) {
                    used = cut;
                    break;
                }
            }
        } else if (json_is_array(cur)) {
            size_t idx = 0, i = 0;
            for (; i < rlen && i < 6 && rest[i] >= '0' && rest[i] <= '9'; i++)
                idx = idx * 10 + (size_t)(rest[i] - '0');
            if (i > 0 && (i == rlen || rest[i] == '.')) {
                next = json_array_get(cur, idx);
                used = i;
            }
        }
        if (!next)
            return NULL;
        cur = next;
        pos += used;
        if (pos < len)
            pos++; /* the dot */
        if (pos == len && path[len - 1] == '.')
            return NULL;
    }
    return cur;
}

/* ---- evaluation ---- */

/* Short JSON text of a claim value for reasons (at most ~64 bytes). */
static char *show(const json_t *v)
{
    if (!v)
        return xstrdup("(absent)");
    _cleanup_free_ char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t)
        return xstrdup("?");
    if (strlen(t) <= 64)
        return steal_ptr(&t);
    return xasprintf("%.56s…(%zu bytes)", t, strlen(t));
}

/* Equality with SKR's convenience: a string reference matches a bool/number by its text. */
static bool value_eq(const json_t *claim, const json_t *want)
{
    if (json_equal((json_t *)claim, (json_t *)want))
        return true;
    if (json_is_string(want) && (json_is_boolean(claim) || json_is_integer(claim))) {
        char tmp[32];
        if (json_is_boolean(claim))
            snprintf(tmp, sizeof(tmp), "%s", json_is_true(claim) ? "true" : "false");
        else
            snprintf(tmp, sizeof(tmp), "%lld", (long long)json_integer_value(claim));
        return strcmp(tmp, json_string_value(want)) == 0;
    }
    return false;
}

static bool in_list(const json_t *claim, const json_t *list)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (value_eq(claim, e))
            return true;
    }
    return false;
}

/* True when the condition holds; otherwise *why gets a reason. */
static bool eval_cond(const node *n, const json_t *input, char **why)
{
    const json_t *c = pol_claim_lookup(input, n->claim);
    bool ok = false;
    switch (n->op) {
    case OP_EXISTS:
        ok = (c != NULL && !json_is_null(c)) == json_is_true(n->value);
        if (!ok)
            *why = xasprintf("claim %s %s", n->claim, c ? "exists" : "is absent");
        return ok;
    case OP_EQUALS:
        ok = c && value_eq(c, n->value);
        break;
    case OP_NOT_EQUALS:
        ok = c && !value_eq(c, n->value);
        break;
    case OP_IN:
        ok = c && in_list(c, n->value);
        if (!ok) {
            _cleanup_free_ char *s = show(c);
            *why = xasprintf("claim %s = %s is not in the %zu allowed values", n->claim, s,
                             json_array_size(n->value));
        }
        return ok;
    case OP_NOT_IN:
        ok = c && !in_list(c, n->value);
        break;
    case OP_MATCHES:
        ok = json_is_string(c) && json_string_length(c) <= POL_MATCH_MAX_INPUT &&
             strlen(json_string_value(c)) == json_string_length(c) &&
             regexec(&n->re, json_string_value(c), 0, NULL, 0) == 0;
        break;
    case OP_GTE:
    case OP_GT:
    case OP_LTE:
    case OP_LT:
        if (json_is_number(c)) {
            double a = json_number_value(c), b = json_number_value(n->value);
            if (json_is_integer(c) && json_is_integer(n->value)) {
                json_int_t ia = json_integer_value(c), ib = json_integer_value(n->value);
                ok = n->op == OP_GTE   ? ia >= ib
                     : n->op == OP_GT  ? ia > ib
                     : n->op == OP_LTE ? ia <= ib
                                       : ia < ib;
            } else {
                ok = n->op == OP_GTE   ? a >= b
                     : n->op == OP_GT  ? a > b
                     : n->op == OP_LTE ? a <= b
                                       : a < b;
            }
        }
        break;
    }
    if (!ok) {
        _cleanup_free_ char *s = show(c);
        _cleanup_free_ char *w = show(n->value);
        *why = xasprintf("claim %s = %s fails %s %s", n->claim, s, n->op_name, w);
    }
    return ok;
}

static bool eval_node(const node *n, const json_t *input, char **why)
{
    if (n->kind == N_COND)
        return eval_cond(n, input, why);
    if (n->kind == N_ALL) {
        for (size_t i = 0; i < n->kid_count; i++)
            if (!eval_node(n->kids[i], input, why))
                return false;
        return true;
    }
    char *first = NULL;
    for (size_t i = 0; i < n->kid_count; i++) {
        char *w = NULL;
        if (eval_node(n->kids[i], input, &w)) {
            free(first);
            return true;
        }
        if (!first)
            first = w;
        else
            free(w);
    }
    *why = first ? first : xstrdup("no alternative holds");
    return false;
}

static char *rule_label(const node *n, size_t i)
{
    return n->name ? xasprintf("rule \"%s\"", n->name) : xasprintf("rule #%zu", i + 1);
}

int pol_release_eval(bool *out_allow, char **out_reason, const pol_release *p, const json_t *input,
                     cista_error **err)
{
    if (!p || !p->root)
        return err_set(err, -EINVAL, "release policy: no policy");
    const node *root = p->root;
    if (root->kind == N_ALL) {
        char *why = NULL;
        if (eval_node(root, input, &why)) {
            *out_allow = true;
            *out_reason = xstrdup("allOf: every condition holds");
        } else {
            *out_allow = false;
            *out_reason = xasprintf("allOf: %s", why);
            free(why);
        }
        return 0;
    }
    cbuf b = CBUF_INIT;
    buf_puts(&b, "no rule allows the release: ");
    for (size_t i = 0; i < root->kid_count; i++) {
        char *why = NULL;
        _cleanup_free_ char *label = rule_label(root->kids[i], i);
        if (eval_node(root->kids[i], input, &why)) {
            buf_free(&b);
            *out_allow = true;
            *out_reason = xasprintf("%s allows", label);
            return 0;
        }
        if (i < 16)
            buf_printf(&b, "%s%s: %s", i ? "; " : "", label, why);
        else if (i == 16)
            buf_puts(&b, "; …");
        free(why);
    }
    *out_allow = false;
    *out_reason = (char *)buf_steal(&b, NULL);
    return 0;
}
