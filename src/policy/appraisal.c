/*
 * appraisal.c - reference values and the appraisal of normalized claims
 * (see appraisal.h). Every check that fails names the claim, the value
 * found and what was expected, so an operator can fix either side.
 */
#include "policy/appraisal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/json.h"
#include "util/util.h"

struct pol_refvals {
    json_t *doc; /* validated document */
};

const char *pol_status_name(pol_status s)
{
    switch (s) {
    case POL_AFFIRMING:
        return "affirming";
    case POL_WARNING:
        return "warning";
    case POL_CONTRAINDICATED:
        return "contraindicated";
    }
    return "contraindicated";
}

/* ---- parsing ---- */

static bool is_hex(const char *s)
{
    if (!*s || strlen(s) > 1024)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

static int check_hex_list(const json_t *v, const char *what, cista_error **err)
{
    if (!json_is_array(v))
        return err_set(err, -EINVAL, "reference values: %s must be an array of hex strings", what);
    if (json_array_size(v) > 4096)
        return err_set(err, -E2BIG, "reference values: %s has more than 4096 entries", what);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || !is_hex(json_string_value(e)))
            return err_set(err, -EINVAL, "reference values: %s[%zu] must be a hex string", what, i);
    }
    return 0;
}

static int check_tee(const char *tee, const json_t *t, cista_error **err)
{
    if (!json_is_object(t))
        return err_set(err, -EINVAL, "reference values: tees.%s must be an object", tee);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)t, k, v)
    {
        _cleanup_free_ char *what = xasprintf("tees.%s.%s", tee, k);
        int r = 0;
        if (!strcmp(k, "allow_insecure") || !strcmp(k, "allow_debug")) {
            if (!json_is_boolean(v))
                r = err_set(err, -EINVAL, "reference values: %s must be true or false", what);
        } else if (!strcmp(k, "host_data") || !strcmp(k, "init_data") ||
                   !strcmp(k, "platform_ids")) {
            r = check_hex_list(v, what, err);
        } else if (!strcmp(k, "measurements")) {
            if (!json_is_object(v))
                return err_set(err, -EINVAL, "reference values: %s must be an object", what);
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                _cleanup_free_ char *w2 = xasprintf("%s.%s", what, mk);
                if ((r = check_hex_list(mv, w2, err)) < 0)
                    return r;
            }
        } else if (!strcmp(k, "pcrs")) {
            if (!json_is_object(v))
                return err_set(err, -EINVAL, "reference values: %s must be an object", what);
            const char *bank;
            json_t *bv;
            json_object_foreach(v, bank, bv)
            {
                if (!json_is_object(bv))
                    return err_set(err, -EINVAL, "reference values: %s.%s must be an object", what,
                                   bank);
                const char *idx;
                json_t *iv;
                json_object_foreach(bv, idx, iv)
                {
                    char *end = NULL;
                    long n = strtol(idx, &end, 10);
                    if (!*idx || *end || n < 0 || n > 23)
                        return err_set(err, -EINVAL,
                                       "reference values: %s.%s: PCR index \"%s\" is not 0-23",
                                       what, bank, idx);
                    _cleanup_free_ char *w2 = xasprintf("%s.%s.%s", what, bank, idx);
                    if ((r = check_hex_list(iv, w2, err)) < 0)
                        return r;
                }
            }
        } else if (!strcmp(k, "min_tcb")) {
            if (!json_is_object(v))
                return err_set(err, -EINVAL, "reference values: %s must be an object", what);
            const char *ck;
            json_t *cv;
            json_object_foreach(v, ck, cv)
            {
                if (!json_is_integer(cv) || json_integer_value(cv) < 0)
                    return err_set(err, -EINVAL,
                                   "reference values: %s.%s must be a non-negative integer", what,
                                   ck);
            }
        } else if (!strcmp(k, "tcb_status")) {
            if (!json_is_array(v))
                return err_set(err, -EINVAL, "reference values: %s must be an array of strings",
                               what);
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e)
            {
                if (!json_is_string(e))
                    return err_set(err, -EINVAL, "reference values: %s[%zu] must be a string", what,
                                   i);
            }
        } else {
            return err_set(err, -EINVAL,
                           "reference values: unknown member %s (allow_insecure, allow_debug, "
                           "measurements, pcrs, host_data, init_data, platform_ids, min_tcb, "
                           "tcb_status)",
                           what);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int pol_refvals_parse(pol_refvals **out, const void *data, size_t size, cista_error **err)
{
    _cleanup_json_ json_t *doc = NULL;
    int r = js_parse_object(&doc, data, size, POL_MAX_REFVALS, "reference values", err);
    if (r < 0)
        return r;
    const char *version = NULL;
    if ((r = js_get_string(&version, doc, "version", true, "reference values", err)) < 0)
        return r;
    if (strcmp(version, "1.0.0") != 0)
        return err_set(err, -EPROTONOSUPPORT,
                       "reference values: version \"%s\" is not supported (1.0.0)", version);
    json_t *tees = NULL;
    if ((r = js_get_object(&tees, doc, "tees", true, "reference values", err)) < 0)
        return r;
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        if (strcmp(k, "version") && strcmp(k, "tees"))
            return err_set(err, -EINVAL, "reference values: unknown member \"%s\"", k);
    }
    json_object_foreach(tees, k, v)
    {
        if ((r = check_tee(k, v, err)) < 0)
            return r;
    }
    pol_refvals *rv = xzalloc(sizeof(*rv));
    rv->doc = steal_ptr(&doc);
    *out = rv;
    return 0;
}

void pol_refvals_free(pol_refvals *rv)
{
    if (!rv)
        return;
    json_decref(rv->doc);
    free(rv);
}

void pol__refvals_freep(pol_refvals **rv)
{
    pol_refvals_free(*rv);
    *rv = NULL;
}

void pol_appraisal_clear(pol_appraisal *a)
{
    free(a->reason);
    json_decref(a->checks);
    memset(a, 0, sizeof(*a));
}

/* ---- appraisal ---- */

static bool hex_in(const json_t *list, const char *v)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (strcasecmp(json_string_value(e), v) == 0)
            return true;
    }
    return false;
}

static void add_check(pol_appraisal *a, const char *check, const char *result)
{
    json_array_append_new(a->checks, json_pack("{s:s,s:s}", "check", check, "result", result));
}

static void contra(pol_appraisal *a, const char *check, char *reason)
{
    add_check(a, check, "fail");
    if (a->status != POL_CONTRAINDICATED) {
        a->status = POL_CONTRAINDICATED;
        free(a->reason);
        a->reason = reason;
    } else {
        free(reason);
    }
}

/* Short form of a hex value for messages. */
static char *shorten(const char *s)
{
    if (!s)
        return xstrdup("(absent)");
    size_t n = strlen(s);
    if (n <= 24)
        return xstrdup(s);
    return xasprintf("%.12s…%s", s, s + n - 8);
}

static void check_list(pol_appraisal *a, const json_t *list, const json_t *claim, const char *name,
                       const char *alt)
{
    if (!list)
        return;
    const char *v = json_is_string(claim) ? json_string_value(claim) : NULL;
    if ((v && hex_in(list, v)) || (alt && hex_in(list, alt))) {
        add_check(a, name, "pass");
        return;
    }
    _cleanup_free_ char *sv = shorten(v ? v : alt);
    contra(
        a, name,
        xasprintf("%s %s is not one of the %zu reference values", name, sv, json_array_size(list)));
}

int pol_appraise(pol_appraisal *out, const pol_refvals *rv, const json_t *claims,
                 const char *init_data_hex, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(claims))
        return err_set(err, -EINVAL, "appraisal: the claims must be a JSON object");
    const char *tee = json_string_value(json_object_get(claims, "tee"));
    if (!tee)
        return err_set(err, -EINVAL, "appraisal: the claims lack \"tee\"");
    out->checks = json_array();
    out->status = POL_AFFIRMING;
    json_t *t = rv ? json_object_get(json_object_get(rv->doc, "tees"), tee) : NULL;
    if (!t) {
        contra(out, "reference-values",
               xasprintf("no reference values for tee \"%s\"; add them with `cista kbs admin "
                         "set-reference-values`",
                         tee));
        return 0;
    }
    bool insecure = json_is_true(json_object_get(claims, "insecure"));
    if (insecure && !json_is_true(json_object_get(t, "allow_insecure")))
        contra(out, "insecure",
               xasprintf("%s evidence is insecure (a software TEE) and the reference values do "
                         "not set \"allow_insecure\": true for it",
                         tee));
    else if (insecure)
        add_check(out, "insecure", "allowed");
    if (json_is_true(json_object_get(claims, "debug")) &&
        !json_is_true(json_object_get(t, "allow_debug")))
        contra(out, "debug", xasprintf("the %s TEE is debuggable and debug is forbidden", tee));

    bool pinned = false;
    json_t *ms = json_object_get(t, "measurements");
    const json_t *cm = json_object_get(claims, "measurements");
    const char *k;
    json_t *v;
    json_object_foreach(ms, k, v)
    {
        _cleanup_free_ char *name = xasprintf("measurements.%s", k);
        check_list(out, v, json_object_get(cm, k), name, NULL);
        pinned = true;
    }
    json_t *pcrs = json_object_get(t, "pcrs");
    const char *bank;
    json_t *bv;
    json_object_foreach(pcrs, bank, bv)
    {
        const json_t *cb = json_object_get(json_object_get(cm, "pcrs"), bank);
        const char *idx;
        json_t *iv;
        json_object_foreach(bv, idx, iv)
        {
            _cleanup_free_ char *name = xasprintf("pcrs.%s.%s", bank, idx);
            check_list(out, iv, json_object_get(cb, idx), name, NULL);
            pinned = true;
        }
    }
    check_list(out, json_object_get(t, "host_data"), json_object_get(claims, "host_data"),
               "host_data", NULL);
    check_list(out, json_object_get(t, "init_data"), json_object_get(claims, "init_data"),
               "init_data", init_data_hex);
    check_list(out, json_object_get(t, "platform_ids"), json_object_get(claims, "platform_id"),
               "platform_id", NULL);

    json_t *min = json_object_get(t, "min_tcb");
    const json_t *comps = json_object_get(json_object_get(claims, "tcb"), "components");
    json_object_foreach(min, k, v)
    {
        _cleanup_free_ char *name = xasprintf("tcb.components.%s", k);
        const json_t *c = json_object_get(comps, k);
        if (!json_is_integer(c))
            contra(out, name,
                   xasprintf("TCB component %s is absent from the %s claims (minimum %lld)", k, tee,
                             (long long)json_integer_value(v)));
        else if (json_integer_value(c) < json_integer_value(v))
            contra(out, name,
                   xasprintf("TCB component %s is %lld, below the minimum %lld", k,
                             (long long)json_integer_value(c), (long long)json_integer_value(v)));
        else
            add_check(out, name, "pass");
    }
    json_t *st = json_object_get(t, "tcb_status");
    if (st) {
        const char *s =
            json_string_value(json_object_get(json_object_get(claims, "tcb"), "status"));
        bool ok = false;
        size_t i;
        json_t *e;
        json_array_foreach(st, i, e)
        {
            ok |= s && strcmp(json_string_value(e), s) == 0;
        }
        if (ok)
            add_check(out, "tcb.status", "pass");
        else
            contra(out, "tcb.status",
                   xasprintf("TCB status %s is not one of the %zu allowed", s ? s : "(absent)",
                             json_array_size(st)));
    }
    if (out->status == POL_AFFIRMING && !pinned) {
        out->status = POL_WARNING;
        out->reason = xasprintf("no measurement or PCR reference values for tee \"%s\": the "
                                "workload's code is not appraised",
                                tee);
    }
    return 0;
}
