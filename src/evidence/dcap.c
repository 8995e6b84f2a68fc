/*
 * dcap.c - Intel DCAP ECDSA quote verification shared by the tdx and sgx
 * verifiers (and azure.c through ev__dcap_verify_td_quote): quote header and
 * body (v3, v4, v5) read field by field by their length fields; the quote
 * signature by the attestation key; the QE report signed by the PCK and its
 * report data binding the attestation key; the PCK chain to the pinned
 * Intel SGX Root CA with CRLs; the PCK SGX extensions; TCB info and QE
 * identity collateral (signature over the exact signed JSON text, issuer
 * chain, validity window) and the TCB level matching into one status.
 * Layouts: Intel sgx_quote_3.h/4.h/5.h as summarised in
 * shared/reference/evidence-layouts.md sections 2 and 3.
 *
 * A warm verification (the same platform and collateral again, with
 * opts->chain_cache) parses nothing it parsed before: collateral entries
 * are read once per ev_collateral (coll_entry_parse), and the chain
 * outcomes, document signatures and the attestation key's context come
 * from the cache; what remains per call is the quote layout, the windows,
 * the QE identity and TCB level checks, two P-256 verifications and the
 * claims (docs/performance.md, "DCAP").
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/dcap_int.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define ATT_KEY_ECDSA_P256 2
#define CERT_PCK_CHAIN 5
#define CERT_QE_REPORT 6
#define SIG_SIZE 64
#define AK_SIZE 64
#define MAX_DOCS 8 /* TCB infos / QE identities in one collateral set */
#define OID_SGX_EXT "1.2.840.113741.1.13.1"

static const uint8_t g_intel_qe_vendor[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                              0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

/* data/intel/intel_sgx_root_ca.pem (pinned by DCAP_ROOT_SHA256_HEX). */
const char ev__intel_sgx_root_ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw\n"
    "aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv\n"
    "cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ\n"
    "BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG\n"
    "A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0\n"
    "aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT\n"
    "AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7\n"
    "1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB\n"
    "uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ\n"
    "MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50\n"
    "ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV\n"
    "Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI\n"
    "KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg\n"
    "AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=\n"
    "-----END CERTIFICATE-----\n";

/*
 * data/intel/intel_sgx_tcb_signing.pem: the TCB signing certificate Intel
 * PCS returns in its issuer-chain header; used when collateral carries no
 * issuer chain (raw PCS response bodies). It must still chain to the pinned
 * root.
 */
static const char g_tcb_signing_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICjTCCAjKgAwIBAgIUfjiC1ftVKUpASY5FhAPpFJG99FUwCgYIKoZIzj0EAwIw\n"
    "aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv\n"
    "cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ\n"
    "BgNVBAYTAlVTMB4XDTI1MDUwNjA5MjUwMFoXDTMyMDUwNjA5MjUwMFowbDEeMBwG\n"
    "A1UEAwwVSW50ZWwgU0dYIFRDQiBTaWduaW5nMRowGAYDVQQKDBFJbnRlbCBDb3Jw\n"
    "b3JhdGlvbjEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMQswCQYD\n"
    "VQQGEwJVUzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABENFG8xzydWRfK92bmGv\n"
    "P+mAh91PEyV7Jh6FGJd5ndE9aBH7R3E4A7ubrlh/zN3C4xvpoouGlirMba+W2lju\n"
    "ypajgbUwgbIwHwYDVR0jBBgwFoAUImUM1lqdNInzg7SVUr9QGzknBqwwUgYDVR0f\n"
    "BEswSTBHoEWgQ4ZBaHR0cHM6Ly9jZXJ0aWZpY2F0ZXMudHJ1c3RlZHNlcnZpY2Vz\n"
    "LmludGVsLmNvbS9JbnRlbFNHWFJvb3RDQS5kZXIwHQYDVR0OBBYEFH44gtX7VSlK\n"
    "QEmORYQD6RSRvfRVMA4GA1UdDwEB/wQEAwIGwDAMBgNVHRMBAf8EAjAAMAoGCCqG\n"
    "SM49BAMCA0kAMEYCIQDdmmRuAo3qCO8TC1IoJMITAoOEw4dlgEBHzSz1TuMSTAIh\n"
    "AKVTqOkt59+co0O3m3hC+v5Fb00FjYWcgeu3EijOULo5\n"
    "-----END CERTIFICATE-----\n";

/* ---- small helpers ---- */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static const char *const g_status_names[] = {
    "Unknown",
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
};

const char *ev__dcap_status_name(int status)
{
    if (status < 0 || (size_t)status >= ARRAY_LEN(g_status_names))
        return "Unknown";
    return g_status_names[status];
}

static int status_parse(int *out, const char *s)
{
    for (size_t i = 1; i < ARRAY_LEN(g_status_names); i++)
        if (strcmp(s, g_status_names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    return -1;
}

/* Combine two statuses the way Intel's QVL converges them. */
static int status_merge(int a, int b)
{
    if (a == EV_TCB_UNKNOWN)
        return b;
    if (b == EV_TCB_UNKNOWN)
        return a;
    if (a == EV_TCB_REVOKED || b == EV_TCB_REVOKED)
        return EV_TCB_REVOKED;
#define SW(s)                                                                                      \
    ((s) == EV_TCB_SW_HARDENING_NEEDED || (s) == EV_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED)
#define CONF(s)                                                                                    \
    ((s) == EV_TCB_CONFIGURATION_NEEDED || (s) == EV_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED ||  \
     (s) == EV_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED)
#define OOD(s) ((s) == EV_TCB_OUT_OF_DATE || (s) == EV_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED)
    bool sw = SW(a) || SW(b), conf = CONF(a) || CONF(b), ood = OOD(a) || OOD(b);
#undef SW
#undef CONF
#undef OOD
    if (ood)
        return conf ? EV_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED : EV_TCB_OUT_OF_DATE;
    if (conf && sw)
        return EV_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED;
    if (conf)
        return EV_TCB_CONFIGURATION_NEEDED;
    if (sw)
        return EV_TCB_SW_HARDENING_NEEDED;
    return EV_TCB_UP_TO_DATE;
}

/* "2025-06-19T10:16:03Z" (optionally with fractional seconds) -> time_t. */
static int time_parse(time_t *out, const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -1;
    const char *p = s + n;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (strcmp(p, "Z") != 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}

static time_t now_of(const ev_verify_opts *opts)
{
    return opts && opts->now ? opts->now : time(NULL);
}

static void json_add_unique(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0)
            return;
    }
    json_array_append_new(arr, json_string(s));
}

/* ---- exact spans of members in JSON text (the bytes Intel signed) ---- */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* @i at the opening quote; returns the index after the closing quote, 0 on error. */
static size_t scan_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
        else if ((unsigned char)s[i] < 0x20)
            return 0;
    }
    return 0;
}

/* @i at a value; returns the index after it, 0 on error. */
static size_t scan_value(const char *s, size_t n, size_t i)
{
    int depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            i = scan_string(s, n, i);
            if (!i)
                return 0;
        } else if (c == '{' || c == '[') {
            if (++depth > JS_MAX_DEPTH)
                return 0;
            i++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i; /* end of the enclosing container: a scalar just ended */
            depth--;
            i++;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        } else {
            i++;
        }
        if (depth == 0 && (c == '"' || c == '}' || c == ']'))
            return i;
    }
    return depth == 0 ? i : 0;
}

/*
 * Byte span of the value of the top-level member @key of the JSON object
 * text @s. -ENOENT when absent, -EINVAL on malformed text or a duplicate.
 */
static int member_span(size_t *out_off, size_t *out_len, const char *s, size_t n, const char *key)
{
    size_t klen = strlen(key), i = skip_ws(s, n, 0);
    bool found = false;
    if (i >= n || s[i] != '{')
        return -EINVAL;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return -ENOENT;
    while (i < n) {
        if (s[i] != '"')
            return -EINVAL;
        size_t kend = scan_string(s, n, i);
        if (!kend)
            return -EINVAL;
        bool match = kend - i - 2 == klen && memcmp(s + i + 1, key, klen) == 0;
        i = skip_ws(s, n, kend);
        if (i >= n || s[i] != ':')
            return -EINVAL;
        i = skip_ws(s, n, i + 1);
        size_t vend = scan_value(s, n, i);
        if (!vend || vend == i)
            return -EINVAL;
        if (match) {
            if (found)
                return -EINVAL;
            found = true;
            *out_off = i;
            *out_len = vend - i;
        }
        i = skip_ws(s, n, vend);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, n, i + 1);
            continue;
        }
        if (i < n && s[i] == '}')
            return found ? 0 : -ENOENT;
        return -EINVAL;
    }
    return -EINVAL;
}

/* ---- TCB info and QE identity: parsed once, checked on every call ---- */

/*
 * A field of a signed document as read when the collateral was parsed: on
 * failure the code and error a verification reports when it reaches the
 * field (the checks run in the same order as reading the JSON there would,
 * so the outcome and message are the same).
 */
typedef struct {
    int rc; /* < 0 with @err when reading failed */
    cista_error *err;
} perr;

static void perr_take(perr *p, int rc, cista_error **e)
{
    if (rc < 0) {
        p->rc = rc;
        p->err = steal_ptr(e);
        if (!p->err)
            (void)err_set(&p->err, rc, "DCAP collateral: unreadable field");
    }
}

static void perr_free(perr *p)
{
    err_free(p->err);
}

/* An error kept by perr_take() (or elsewhere at parse time), set into @err; returns its code. */
static int err_replay(cista_error **err, int rc, const cista_error *src)
{
    (void)err_set(err, src->code, "%s", src->msg);
    for (size_t i = 0; i < src->context_len; i++)
        (void)err_wrap(err, "%s", src->context[i]);
    return rc;
}

#define PERR_CHECK(p, err)                                                                         \
    do {                                                                                           \
        if ((p).err)                                                                               \
            return err_replay((err), (p).rc, (p).err);                                             \
    } while (0)

static int hex_field(uint8_t *out, size_t size, json_t *obj, const char *key, const char *what,
                     cista_error **err)
{
    const char *s = NULL;
    if (js_get_string(&s, obj, key, true, what, err) < 0)
        return EV_E_FORMAT;
    _cleanup_err_ cista_error *e = NULL;
    if (strlen(s) != 2 * size || hex_decode_to(out, size, s, &e) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP %s: \"%s\" must be %zu hex digits, got \"%.40s\"",
                       what, key, 2 * size, s);
    return 0;
}

static int level_status(int *out, json_t *level, const char *what, cista_error **err)
{
    const char *st = NULL;
    if (js_get_string(&st, level, "tcbStatus", true, what, err) < 0)
        return EV_E_FORMAT;
    if (status_parse(out, st) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP %s: unknown tcbStatus \"%s\"", what, st);
    return 0;
}

/* A level's outcome: tcbStatus and advisoryIDs, read when the level is the one that matches. */
typedef struct {
    perr e;
    int status;
    const char **adv; /* borrowed from the document's JSON */
    size_t nadv;
} level_outcome;

static void outcome_read(level_outcome *o, json_t *level, const char *what)
{
    _cleanup_err_ cista_error *e = NULL;
    int r = level_status(&o->status, level, what, &e);
    json_t *adv = NULL;
    if (r == 0 && js_get_array(&adv, level, "advisoryIDs", false, what, &e) < 0)
        r = EV_E_FORMAT;
    o->adv = xzalloc((json_array_size(adv) + 1) * sizeof(*o->adv));
    for (size_t i = 0; r == 0 && i < json_array_size(adv); i++) {
        json_t *v = json_array_get(adv, i);
        if (!json_is_string(v))
            r = err_set(&e, EV_E_FORMAT, "DCAP %s: advisoryIDs must be strings", what);
        else
            o->adv[o->nadv++] = json_string_value(v);
    }
    perr_take(&o->e, r, &e);
}

static void outcome_free(level_outcome *o)
{
    perr_free(&o->e);
    free(o->adv);
}

/* The JSON "issueDate" / "nextUpdate" of a document. */
typedef struct {
    perr e;
    const char *issue, *next; /* borrowed from the document's JSON */
    time_t from, to;
    char from_s[24], to_s[24]; /* @from, @to as ev__time_str() writes them */
} doc_dates;

static void dates_read(doc_dates *d, json_t *doc, const char *what, const char *name)
{
    _cleanup_err_ cista_error *e = NULL;
    int r = 0;
    if (js_get_string(&d->issue, doc, "issueDate", true, what, &e) < 0 ||
        js_get_string(&d->next, doc, "nextUpdate", true, what, &e) < 0)
        r = EV_E_FORMAT;
    else if (time_parse(&d->from, d->issue) < 0 || time_parse(&d->to, d->next) < 0)
        r = err_set(&e, EV_E_FORMAT,
                    "DCAP %s (%s): issueDate \"%s\" / nextUpdate \"%s\" are "
                    "not RFC 3339 UTC times",
                    what, name, d->issue, d->next);
    perr_take(&d->e, r, &e);
    if (r == 0) {
        ev__time_str(d->from_s, sizeof(d->from_s), d->from);
        ev__time_str(d->to_s, sizeof(d->to_s), d->to);
    }
}

/* The intersection of the documents' windows, reported in the claims. */
typedef struct {
    time_t from, to;           /* 0: not narrowed yet */
    const char *from_s, *to_s; /* their text (doc_dates), NULL when not narrowed */
} doc_span;

/* issueDate <= now <= nextUpdate; also narrows the reported window. */
static int doc_window(const doc_dates *d, const char *what, const char *name, time_t now,
                      doc_span *w, cista_error **err)
{
    PERR_CHECK(d->e, err);
    if (now < d->from || now > d->to) {
        char at[32];
        ev__time_str(at, sizeof(at), now);
        return err_set(err, EV_E_EXPIRED,
                       "DCAP %s (%s) is outside its validity window at %s: issueDate %s, "
                       "nextUpdate %s; fetch current collateral from Intel PCS or verify at a "
                       "time inside the window",
                       what, name, at, d->issue, d->next);
    }
    if (d->from > w->from) {
        w->from = d->from;
        w->from_s = d->from_s;
    }
    if (!w->to || d->to < w->to) {
        w->to = d->to;
        w->to_s = d->to_s;
    }
    return 0;
}

/* A level selected by ISV SVN (QE identity, TDX module identity): tcb.isvsvn. */
typedef struct {
    perr e;
    int64_t isvsvn;
    level_outcome out;
} isv_level;

typedef struct {
    perr e; /* the "tcbLevels" array */
    isv_level *v;
    size_t n;
} isv_levels;

static void isv_levels_read(isv_levels *l, json_t *obj, const char *what)
{
    _cleanup_err_ cista_error *e = NULL;
    json_t *levels = NULL;
    if (js_get_array(&levels, obj, "tcbLevels", true, what, &e) < 0) {
        perr_take(&l->e, EV_E_FORMAT, &e);
        return;
    }
    l->n = json_array_size(levels);
    l->v = xzalloc((l->n ? l->n : 1) * sizeof(*l->v));
    for (size_t i = 0; i < l->n; i++) {
        json_t *lv = json_array_get(levels, i), *tcb = NULL;
        isv_level *x = &l->v[i];
        if (js_get_object(&tcb, lv, "tcb", true, what, &e) < 0 ||
            js_get_int(&x->isvsvn, tcb, "isvsvn", true, what, &e) < 0) {
            perr_take(&x->e, EV_E_FORMAT, &e);
            continue;
        }
        outcome_read(&x->out, lv, what);
    }
}

static void isv_levels_free(isv_levels *l)
{
    perr_free(&l->e);
    for (size_t i = 0; i < l->n; i++) {
        perr_free(&l->v[i].e);
        outcome_free(&l->v[i].out);
    }
    free(l->v);
}

/* First level (newest first) whose tcb.isvsvn <= @isvsvn, or NULL. */
static int isvsvn_level(const isv_level **out, const isv_levels *l, unsigned isvsvn,
                        cista_error **err)
{
    PERR_CHECK(l->e, err);
    for (size_t i = 0; i < l->n; i++) {
        PERR_CHECK(l->v[i].e, err);
        if (l->v[i].isvsvn <= (int64_t)isvsvn) {
            *out = &l->v[i];
            return 0;
        }
    }
    *out = NULL;
    return 0;
}

/* Read the 16 SGX component SVNs and pcesvn of a level (TCB info v2 or v3). */
static int level_sgx(uint8_t comp[16], int64_t *pcesvn, json_t *tcb, int version, const char *what,
                     cista_error **err)
{
    if (version >= 3) {
        json_t *arr = NULL;
        if (js_get_array(&arr, tcb, "sgxtcbcomponents", true, what, err) < 0)
            return EV_E_FORMAT;
        if (json_array_size(arr) != 16)
            return err_set(err, EV_E_FORMAT, "DCAP %s: sgxtcbcomponents has %zu entries, not 16",
                           what, json_array_size(arr));
        for (size_t i = 0; i < 16; i++) {
            int64_t v = 0;
            if (js_get_int(&v, json_array_get(arr, i), "svn", true, what, err) < 0)
                return EV_E_FORMAT;
            comp[i] = v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
        }
    } else {
        for (int i = 0; i < 16; i++) {
            char key[24];
            snprintf(key, sizeof(key), "sgxtcbcomp%02dsvn", i + 1);
            int64_t v = 0;
            if (js_get_int(&v, tcb, key, true, what, err) < 0)
                return EV_E_FORMAT;
            comp[i] = v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
        }
    }
    if (js_get_int(pcesvn, tcb, "pcesvn", true, what, err) < 0)
        return EV_E_FORMAT;
    return 0;
}

static int level_tdx(uint8_t comp[16], json_t *tcb, const char *what, cista_error **err)
{
    json_t *arr = NULL;
    if (js_get_array(&arr, tcb, "tdxtcbcomponents", true, what, err) < 0)
        return EV_E_FORMAT;
    if (json_array_size(arr) != 16)
        return err_set(err, EV_E_FORMAT, "DCAP %s: tdxtcbcomponents has %zu entries, not 16", what,
                       json_array_size(arr));
    for (size_t i = 0; i < 16; i++) {
        int64_t v = 0;
        if (js_get_int(&v, json_array_get(arr, i), "svn", true, what, err) < 0)
            return EV_E_FORMAT;
        comp[i] = v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
    }
    return 0;
}

/* A platform level of a TCB info. */
typedef struct {
    perr e; /* reading tcb, its components or tcbDate failed */
    uint8_t sgx[16], tdx[16];
    int64_t pcesvn;
    const char *date; /* borrowed; NULL when absent */
    level_outcome out;
} tcb_level;

/* A TDX module of a TCB info: "tdxModule", or one of "tdxModuleIdentities". */
typedef struct {
    perr id_e;      /* identities: reading "id" failed */
    const char *id; /* borrowed */
    perr hex_e;     /* reading mrsigner, attributes, attributesMask failed */
    uint8_t signer[48], attr[8], mask[8];
    isv_levels levels; /* identities only */
} tdx_module;

/*
 * A TCB info as the checks use it. A TCB info is only ever matched against
 * quotes of its own kind ("id" TDX: TD quotes; SGX or none: SGX quotes), so
 * its levels are read for that kind.
 */
typedef struct {
    perr version_e;
    int64_t version;
    doc_dates dates;
    perr pce_e;
    uint8_t pceid[2];
    bool tdx;            /* "id" is TDX */
    bool has_module_ids; /* a "tdxModuleIdentities" member exists (any value) */
    perr levels_e;       /* the "tcbLevels" array */
    tcb_level *levels;
    size_t nlevels;
    perr modules_e;  /* "tdxModuleIdentities" / "tdxModule" of the wrong type */
    tdx_module *ids; /* NULL when there is no identity array */
    size_t nids;
    tdx_module *module; /* "tdxModule", or NULL */
} tcb_info;

static void module_hex_read(tdx_module *m, json_t *mod, const char *what)
{
    _cleanup_err_ cista_error *e = NULL;
    int r;
    if ((r = hex_field(m->signer, 48, mod, "mrsigner", what, &e)) < 0 ||
        (r = hex_field(m->attr, 8, mod, "attributes", what, &e)) < 0 ||
        (r = hex_field(m->mask, 8, mod, "attributesMask", what, &e)) < 0)
        perr_take(&m->hex_e, r, &e);
}

static void module_free(tdx_module *m)
{
    if (!m)
        return;
    perr_free(&m->id_e);
    perr_free(&m->hex_e);
    isv_levels_free(&m->levels);
}

static void tcb_info_read(tcb_info *t, json_t *info, const char *name)
{
    static const char what[] = "TCB info";
    _cleanup_err_ cista_error *e = NULL;
    if (js_get_int(&t->version, info, "version", true, what, &e) < 0)
        perr_take(&t->version_e, EV_E_FORMAT, &e);
    dates_read(&t->dates, info, what, name);
    perr_take(&t->pce_e, hex_field(t->pceid, 2, info, "pceId", what, &e), &e);
    const char *id = json_string_value(json_object_get(info, "id"));
    t->tdx = id && strcmp(id, "TDX") == 0;
    t->has_module_ids = json_object_get(info, "tdxModuleIdentities") != NULL;

    json_t *levels = NULL;
    if (js_get_array(&levels, info, "tcbLevels", true, what, &e) < 0) {
        perr_take(&t->levels_e, EV_E_FORMAT, &e);
    } else {
        t->nlevels = json_array_size(levels);
        t->levels = xzalloc((t->nlevels ? t->nlevels : 1) * sizeof(*t->levels));
        for (size_t i = 0; i < t->nlevels; i++) {
            json_t *lv = json_array_get(levels, i), *tcb = NULL;
            tcb_level *l = &t->levels[i];
            int r = 0;
            if (js_get_object(&tcb, lv, "tcb", true, what, &e) < 0)
                r = EV_E_FORMAT;
            else if ((r = level_sgx(l->sgx, &l->pcesvn, tcb, (int)t->version, what, &e)) < 0)
                ;
            else if (t->tdx && (r = level_tdx(l->tdx, tcb, what, &e)) < 0)
                ;
            else if (js_get_string(&l->date, lv, "tcbDate", false, what, &e) < 0)
                r = EV_E_FORMAT;
            perr_take(&l->e, r, &e);
            if (r == 0)
                outcome_read(&l->out, lv, what);
        }
    }

    json_t *ids = NULL, *mod = NULL;
    if (js_get_array(&ids, info, "tdxModuleIdentities", false, what, &e) < 0 ||
        js_get_object(&mod, info, "tdxModule", false, what, &e) < 0) {
        perr_take(&t->modules_e, EV_E_FORMAT, &e);
        return;
    }
    if (ids) {
        t->nids = json_array_size(ids);
        t->ids = xzalloc((t->nids ? t->nids : 1) * sizeof(*t->ids));
        for (size_t i = 0; i < t->nids; i++) {
            json_t *m = json_array_get(ids, i);
            tdx_module *x = &t->ids[i];
            if (js_get_string(&x->id, m, "id", true, what, &e) < 0) {
                perr_take(&x->id_e, EV_E_FORMAT, &e);
                continue;
            }
            module_hex_read(x, m, what);
            isv_levels_read(&x->levels, m, what);
        }
    }
    if (mod) {
        t->module = xzalloc(sizeof(*t->module));
        module_hex_read(t->module, mod, what);
    }
}

static void tcb_info_free(tcb_info *t)
{
    if (!t)
        return;
    perr_free(&t->version_e);
    perr_free(&t->dates.e);
    perr_free(&t->pce_e);
    perr_free(&t->levels_e);
    for (size_t i = 0; i < t->nlevels; i++) {
        perr_free(&t->levels[i].e);
        outcome_free(&t->levels[i].out);
    }
    free(t->levels);
    perr_free(&t->modules_e);
    for (size_t i = 0; i < t->nids; i++)
        module_free(&t->ids[i]);
    free(t->ids);
    module_free(t->module);
    free(t->module);
    free(t);
}

/* A QE identity as the checks use it. */
typedef struct {
    perr version_e;
    int64_t version;
    doc_dates dates;
    perr fields_e; /* mrsigner, miscselect(Mask), attributes(Mask), isvprodid */
    uint8_t mrsigner[32], misc[4], misc_mask[4], attr[16], attr_mask[16];
    int64_t isvprodid;
    isv_levels levels;
} qe_identity;

static void qe_identity_read(qe_identity *q, json_t *qe, const char *name)
{
    static const char what[] = "QE identity";
    _cleanup_err_ cista_error *e = NULL;
    if (js_get_int(&q->version, qe, "version", true, what, &e) < 0)
        perr_take(&q->version_e, EV_E_FORMAT, &e);
    dates_read(&q->dates, qe, what, name);
    int r;
    if ((r = hex_field(q->mrsigner, 32, qe, "mrsigner", what, &e)) < 0 ||
        (r = hex_field(q->misc, 4, qe, "miscselect", what, &e)) < 0 ||
        (r = hex_field(q->misc_mask, 4, qe, "miscselectMask", what, &e)) < 0 ||
        (r = hex_field(q->attr, 16, qe, "attributes", what, &e)) < 0 ||
        (r = hex_field(q->attr_mask, 16, qe, "attributesMask", what, &e)) < 0)
        perr_take(&q->fields_e, r, &e);
    else if (js_get_int(&q->isvprodid, qe, "isvprodid", true, what, &e) < 0)
        perr_take(&q->fields_e, EV_E_FORMAT, &e);
    isv_levels_read(&q->levels, qe, what);
}

static void qe_identity_free(qe_identity *q)
{
    if (!q)
        return;
    perr_free(&q->version_e);
    perr_free(&q->dates.e);
    perr_free(&q->fields_e);
    isv_levels_free(&q->levels);
    free(q);
}

/* ---- collateral: each entry parsed once, kept with the ev_collateral ---- */

/*
 * A TCB info or QE identity document: the exact signed text, its
 * signature, and the text parsed once. A text that does not parse is kept
 * with the reason, reported when a verification reaches the document (as
 * parsing it there would).
 */
typedef struct {
    char *name; /* the collateral entry it came from, for messages */
    char *text; /* the signed JSON text, NUL-terminated copy */
    size_t size;
    uint8_t sig[SIG_SIZE]; /* r || s, big-endian */
    uint8_t digest[32];    /* SHA-256 over size, text and sig: the signature's cache identity */
    json_t *json;          /* @text parsed; NULL when it does not parse (@bad says why) */
    cista_error *bad;
    tcb_info *tcb;   /* a TCB info's fields (with @json) */
    qe_identity *qe; /* a QE identity's fields (with @json) */
    /* what selects a TCB info: its "id" (borrowed from @json) and "fmspc" */
    const char *id;
    bool fmspc_ok;
    uint8_t fmspc[6];
} signed_doc;

/* A collateral certificate and the facts the chain checks ask of it, computed once. */
typedef struct {
    X509 *x; /* borrowed from the entry's stack */
    uint8_t fp[32];
    bool fp_ok, self_signed, cn_root, cn_tcb;
} coll_cert;

/* One collateral entry as DCAP reads it (ev__collateral_parsed with g_coll_parser). */
typedef struct {
    uint8_t digest[32];     /* SHA-256 of the entry's bytes: its identity in cache keys */
    STACK_OF(X509) * certs; /* a certificate file, or a bundle's issuer chains */
    coll_cert *cinfo;       /* one per certificate */
    STACK_OF(X509_CRL) * crls;
    time_t crl_from, crl_to; /* intersection of the CRLs' windows (see crl_window) */
    signed_doc *docs[2];     /* in the order they were read */
    bool doc_tcb[2];         /* TCB info (else QE identity) */
    size_t ndocs;
    /*
     * Reading the entry failed after @docs (rc < 0, @err says why). When the
     * failure is in a document (err_doc: 1 TCB info, 0 QE identity, else -1),
     * the set's MAX_DOCS limit is checked before it, as reading did.
     */
    int rc, err_doc;
    cista_error *err;
} coll_entry;

static void doc_free(signed_doc *d)
{
    if (!d)
        return;
    free(d->name);
    free(d->text);
    tcb_info_free(d->tcb);
    qe_identity_free(d->qe);
    json_decref(d->json);
    err_free(d->bad);
    free(d);
}

static void coll_entry_free(void *p)
{
    coll_entry *e = p;
    if (!e)
        return;
    sk_X509_pop_free(e->certs, X509_free);
    free(e->cinfo);
    sk_X509_CRL_pop_free(e->crls, X509_CRL_free);
    for (size_t i = 0; i < e->ndocs; i++)
        doc_free(e->docs[i]);
    err_free(e->err);
    free(e);
}

/* SHA-256 fetched once: an implicit fetch by name costs locks and a lookup on every use. */
static pthread_once_t g_md_once = PTHREAD_ONCE_INIT;
static EVP_MD *g_sha256;

static void md_init(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* kept for the process */
}

static const EVP_MD *sha256_md(void)
{
    pthread_once(&g_md_once, md_init);
    return g_sha256 ? g_sha256 : EVP_sha256();
}

static void sha256_of(uint8_t out[32], const void *a, size_t na, const void *b, size_t nb,
                      const void *c, size_t nc)
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    unsigned n = 0;
    if (!h || EVP_DigestInit_ex(h, sha256_md(), NULL) != 1 || EVP_DigestUpdate(h, a, na) != 1 ||
        (nb && EVP_DigestUpdate(h, b, nb) != 1) || (nc && EVP_DigestUpdate(h, c, nc) != 1) ||
        EVP_DigestFinal_ex(h, out, &n) != 1 || n != 32)
        abort(); /* SHA-256 is always available; only allocation can fail */
    EVP_MD_CTX_free(h);
}

static int fmspc_of(uint8_t out[6], json_t *info)
{
    const char *s = json_string_value(json_object_get(info, "fmspc"));
    _cleanup_err_ cista_error *e = NULL;
    if (!s || strlen(s) != 12 || hex_decode_to(out, 6, s, &e) < 0)
        return -1;
    return 0;
}

static int add_doc(coll_entry *s, bool tcb, const char *name, const char *text, size_t size,
                   const char *sig_hex, cista_error **err)
{
    const char *what = tcb ? "TCB info" : "QE identity";
    s->err_doc = tcb; /* a failure from here on is this document's */
    if (!sig_hex || strlen(sig_hex) != 2 * SIG_SIZE)
        return err_set(err, EV_E_FORMAT,
                       "DCAP collateral %s: the %s signature must be %d hex digits (r || s), got "
                       "%zu",
                       name, what, 2 * SIG_SIZE, sig_hex ? strlen(sig_hex) : 0);
    uint8_t sig[SIG_SIZE];
    _cleanup_err_ cista_error *e = NULL;
    if (hex_decode_to(sig, SIG_SIZE, sig_hex, &e) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP collateral %s: %s signature is not hex", name, what);
    signed_doc *d = xzalloc(sizeof(*d));
    d->name = xstrdup(name);
    d->text = xmalloc(size + 1);
    memcpy(d->text, text, size);
    d->text[size] = 0;
    d->size = size;
    memcpy(d->sig, sig, SIG_SIZE);
    uint8_t len[8];
    ev__put_le64(len, (uint64_t)size);
    sha256_of(d->digest, len, sizeof(len), d->text, size, d->sig, SIG_SIZE);
    _cleanup_err_ cista_error *pe = NULL;
    if (js_parse_object(&d->json, d->text, d->size, EV_MAX_EVIDENCE, what, &pe) < 0) {
        (void)err_set(&d->bad, EV_E_FORMAT, "DCAP %s (%s): %s", what, d->name, pe->msg);
    } else {
        d->id = json_string_value(json_object_get(d->json, "id"));
        d->fmspc_ok = fmspc_of(d->fmspc, d->json) == 0;
        if (tcb) {
            d->tcb = xzalloc(sizeof(*d->tcb));
            tcb_info_read(d->tcb, d->json, d->name);
        } else {
            d->qe = xzalloc(sizeof(*d->qe));
            qe_identity_read(d->qe, d->json, d->name);
        }
    }
    s->docs[s->ndocs] = d;
    s->doc_tcb[s->ndocs] = tcb;
    s->ndocs++;
    s->err_doc = -1;
    return 0;
}

static int add_pem_certs(coll_entry *s, const char *name, const char *pem, cista_error **err)
{
    if (!pem)
        return 0;
    if (x509_certs_load(&s->certs, pem, strlen(pem), err) < 0)
        return err_wrap(err, "DCAP collateral %s: issuer chain", name);
    return 0;
}

static int add_hex_crl(coll_entry *s, const char *name, const char *hex, cista_error **err)
{
    if (!hex || !*hex)
        return 0;
    _cleanup_free_ uint8_t *der = NULL;
    size_t n = 0;
    _cleanup_err_ cista_error *e = NULL;
    if (hex_decode(&der, &n, hex, strlen(hex), &e) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP collateral %s: CRL is not hex (%s)", name, e->msg);
    if (x509_crls_load(&s->crls, der, n, err) < 0)
        return err_wrap(err, "DCAP collateral %s: CRL", name);
    return 0;
}

/* A PCS response body {"tcbInfo"|"enclaveIdentity": {...}, "signature": "..."}. */
static int add_pcs_json(coll_entry *s, const char *name, const char *text, size_t size,
                        json_t *root, bool tcb, cista_error **err)
{
    const char *key = tcb ? "tcbInfo" : "enclaveIdentity";
    size_t off = 0, len = 0;
    if (member_span(&off, &len, text, size, key) < 0)
        return err_set(err, EV_E_FORMAT,
                       "DCAP collateral %s: cannot locate the exact text of \"%s\" (malformed or "
                       "duplicate member)",
                       name, key);
    const char *sig = NULL;
    if (js_get_string(&sig, root, "signature", true, name, err) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP collateral %s: no \"signature\" string", name);
    return add_doc(s, tcb, name, text + off, len, sig, err);
}

/* dcap-qvl's QuoteCollateralV3: PEM chains, hex CRLs, signed JSON as strings. */
static int add_bundle(coll_entry *s, const char *name, json_t *root, cista_error **err)
{
    static const char *const chains[] = {"pck_crl_issuer_chain", "tcb_info_issuer_chain",
                                         "qe_identity_issuer_chain"};
    static const char *const crls[] = {"root_ca_crl", "pck_crl"};
    for (size_t i = 0; i < ARRAY_LEN(chains); i++) {
        const char *v = NULL;
        if (js_get_string(&v, root, chains[i], false, name, err) < 0)
            return EV_E_FORMAT;
        if (add_pem_certs(s, name, v, err) < 0)
            return EV_E_FORMAT;
    }
    for (size_t i = 0; i < ARRAY_LEN(crls); i++) {
        const char *v = NULL;
        if (js_get_string(&v, root, crls[i], false, name, err) < 0)
            return EV_E_FORMAT;
        int r = add_hex_crl(s, name, v, err);
        if (r < 0)
            return r;
    }
    for (int k = 0; k < 2; k++) {
        const char *doc = NULL, *sig = NULL;
        const char *dk = k == 0 ? "tcb_info" : "qe_identity";
        const char *sk = k == 0 ? "tcb_info_signature" : "qe_identity_signature";
        if (js_get_string(&doc, root, dk, false, name, err) < 0 ||
            js_get_string(&sig, root, sk, false, name, err) < 0)
            return EV_E_FORMAT;
        if (!doc)
            continue;
        int r = add_doc(s, k == 0, name, doc, strlen(doc), sig, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Read an entry that ev_collateral_add() did not parse as certificates. */
static int coll_read(coll_entry *s, const char *name, const uint8_t *data, size_t size,
                     cista_error **err)
{
    size_t i = 0;
    while (i < size && isspace(data[i]))
        i++;
    if (i < size && data[i] == '{') {
        _cleanup_json_ json_t *root = NULL;
        _cleanup_err_ cista_error *e = NULL;
        if (js_parse_object(&root, data, size, EV_MAX_EVIDENCE, name, &e) < 0)
            return err_set(err, EV_E_FORMAT, "DCAP collateral %s: %s", name, e->msg);
        if (json_object_get(root, "tcbInfo"))
            return add_pcs_json(s, name, (const char *)data, size, root, true, err);
        if (json_object_get(root, "enclaveIdentity"))
            return add_pcs_json(s, name, (const char *)data, size, root, false, err);
        if (json_object_get(root, "tcb_info") || json_object_get(root, "qe_identity") ||
            json_object_get(root, "pck_crl"))
            return add_bundle(s, name, root, err);
        log_debug("DCAP collateral: ignoring %s (JSON, not TCB info, QE identity or a bundle)",
                  name);
        return 0;
    }
    /* not certificates (ev_collateral_add tried); CRLs read before a malformed one are kept */
    _cleanup_err_ cista_error *e2 = NULL;
    if (x509_crls_load(&s->crls, data, size, &e2) == 0)
        return 0;
    log_debug("DCAP collateral: ignoring %s (not JSON, a certificate or a CRL)", name);
    return 0;
}

static bool cn_is(X509 *c, const char *want)
{
    _cleanup_free_ char *cn = x509_subject_cn(c);
    return cn && strcmp(cn, want) == 0;
}

static bool asn1_to_time(time_t *out, const ASN1_TIME *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = timegm(&tm);
    return true;
}

/*
 * Narrow [*from, *to] to the times at which @crl is current: lastUpdate <=
 * now < nextUpdate, as X509_cmp_time() decides it. A CRL without lastUpdate
 * or with a time that does not convert is never current.
 */
static void crl_window(time_t *from, time_t *to, X509_CRL *crl)
{
    time_t lu = 0, nu = 0;
    const ASN1_TIME *nut = X509_CRL_get0_nextUpdate(crl);
    if (!asn1_to_time(&lu, X509_CRL_get0_lastUpdate(crl)) || (nut && !asn1_to_time(&nu, nut))) {
        *from = INT64_MAX;
        *to = INT64_MIN;
        return;
    }
    if (lu > *from)
        *from = lu;
    if (nut && nu - 1 < *to)
        *to = nu - 1;
}

/* The trust anchor of a verification: the pinned Intel root (or a test's override). */
typedef struct {
    X509 *x; /* borrowed: the process-wide parsed root, or the caller's override */
    uint8_t fp[32];
} dcap_root;

static pthread_once_t g_root_once = PTHREAD_ONCE_INIT;
static dcap_root g_root;
static int g_root_rc;
static cista_error *g_root_err; /* why the built-in root is unusable (never expected) */

/* Parse the compiled-in root and check it against its pin, once per process. */
static void root_init(void)
{
    X509 *root = NULL;
    int r = ev__cert_embedded(&root, ev__intel_sgx_root_ca_pem, &g_root_err);
    if (r < 0) {
        g_root_rc = err_wrap(&g_root_err, "built-in Intel SGX Root CA");
        return;
    }
    uint8_t pin[32];
    if ((r = x509_cert_sha256(g_root.fp, root, &g_root_err)) < 0 ||
        (r = hex_decode_to(pin, sizeof(pin), DCAP_ROOT_SHA256_HEX, &g_root_err)) < 0) {
        X509_free(root);
        memset(g_root.fp, 0, sizeof(g_root.fp));
        g_root_rc = r;
        return;
    }
    if (memcmp(pin, g_root.fp, 32) != 0) {
        X509_free(root);
        memset(g_root.fp, 0, sizeof(g_root.fp));
        g_root_rc =
            err_set(&g_root_err, EV_E_CHAIN, "built-in Intel SGX Root CA does not match its pin");
        return;
    }
    g_root.x = root; /* kept for the process, like every ev__cert_embedded() certificate */
}

/* SHA-256 of the pinned root (zeros if it is unusable, which load_root() reports). */
static const uint8_t *intel_root_fp(void)
{
    pthread_once(&g_root_once, root_init);
    return g_root.fp;
}

static int load_root(dcap_root *out, X509 *override, cista_error **err)
{
    if (override) {
        out->x = override;
        return x509_cert_sha256(out->fp, override, err);
    }
    pthread_once(&g_root_once, root_init);
    if (g_root_rc < 0)
        return err_replay(err, g_root_rc, g_root_err);
    *out = g_root;
    return 0;
}

/*
 * A certificate as intermediates() sees it. Its self-signature is only
 * checked when it is not the root (by fingerprint): copies of the root come
 * with most chains and checking them would cost a verification each.
 */
static void cert_facts(coll_cert *out, X509 *c, const uint8_t root_fp[32])
{
    memset(out, 0, sizeof(*out));
    out->x = c;
    out->fp_ok = x509_cert_sha256(out->fp, c, NULL) == 0;
    if (out->fp_ok && memcmp(out->fp, root_fp, 32) == 0)
        out->self_signed = true; /* the pinned root */
    else
        out->self_signed = x509_is_self_signed(c);
    out->cn_root = cn_is(c, "Intel SGX Root CA");
    out->cn_tcb = cn_is(c, "Intel SGX TCB Signing");
}

static void *coll_entry_parse(const char *name, const uint8_t *data, size_t size,
                              STACK_OF(X509) * certs)
{
    coll_entry *e = xzalloc(sizeof(*e));
    e->err_doc = -1;
    sha256_of(e->digest, data, size, NULL, 0, NULL, 0);
    if (certs) {
        if (!(e->certs = X509_chain_up_ref(certs)))
            abort();
    } else {
        e->rc = coll_read(e, name, data, size, &e->err);
        if (e->rc < 0 && !e->err)
            (void)err_set(&e->err, e->rc, "DCAP collateral %s: unreadable", name);
    }
    int n = sk_X509_num(e->certs);
    e->cinfo = xzalloc((size_t)(n > 0 ? n : 1) * sizeof(*e->cinfo));
    const uint8_t *intel = intel_root_fp();
    for (int i = 0; i < n; i++)
        cert_facts(&e->cinfo[i], sk_X509_value(e->certs, i), intel);
    e->crl_from = INT64_MIN;
    e->crl_to = INT64_MAX;
    for (int i = 0; i < sk_X509_CRL_num(e->crls); i++)
        crl_window(&e->crl_from, &e->crl_to, sk_X509_CRL_value(e->crls, i));
    return e;
}

static const ev__coll_parser g_coll_parser = {.parse = coll_entry_parse, .free = coll_entry_free};

/*
 * The collateral of one verification: the parsed entries (borrowed from
 * opts->collateral, which outlives the call), their documents in order,
 * and what the full chain verifications take (stacks of borrowed pointers).
 */
typedef struct {
    const coll_entry *e[EV_MAX_COLLATERAL];
    size_t n;
    const signed_doc *tcb[MAX_DOCS], *qe[MAX_DOCS];
    size_t ntcb, nqe;
    STACK_OF(X509) * certs;    /* every collateral certificate, in order (coll_set_stacks) */
    STACK_OF(X509_CRL) * crls; /* every CRL (coll_set_stacks) */
    time_t crl_from, crl_to;   /* the times at which every CRL is current */
} coll_set;

static void coll_set_free(coll_set *s)
{
    sk_X509_free(s->certs);
    sk_X509_CRL_free(s->crls);
}

static int coll_set_doc(coll_set *s, bool tcb, const signed_doc *d, cista_error **err)
{
    if ((tcb ? s->ntcb : s->nqe) >= MAX_DOCS)
        return err_set(err, EV_E_FORMAT, "DCAP collateral: more than %d %s documents", MAX_DOCS,
                       tcb ? "TCB info" : "QE identity");
    if (d) {
        if (tcb)
            s->tcb[s->ntcb++] = d;
        else
            s->qe[s->nqe++] = d;
    }
    return 0;
}

/* The collateral set of @c (may be NULL), each entry parsed on first use. */
static int coll_set_load(coll_set *s, const ev_collateral *c, cista_error **err)
{
    memset(s, 0, sizeof(*s));
    s->crl_from = INT64_MIN;
    s->crl_to = INT64_MAX;
    for (size_t i = 0; i < ev_collateral_count(c); i++) {
        const coll_entry *e = ev__collateral_parsed(c, i, &g_coll_parser);
        s->e[s->n++] = e;
        if (e->crl_from > s->crl_from)
            s->crl_from = e->crl_from;
        if (e->crl_to < s->crl_to)
            s->crl_to = e->crl_to;
        int r;
        for (size_t k = 0; k < e->ndocs; k++)
            if ((r = coll_set_doc(s, e->doc_tcb[k], e->docs[k], err)) < 0)
                return r;
        if (e->rc < 0) {
            if (e->err_doc >= 0 && (r = coll_set_doc(s, e->err_doc == 1, NULL, err)) < 0)
                return r;
            return err_replay(err, e->rc, e->err);
        }
    }
    return 0;
}

/* The stacks the full chain verifications take, made on first use (a warm call needs none). */
static void coll_set_stacks(coll_set *s)
{
    if (s->certs)
        return;
    if (!(s->certs = sk_X509_new_null()) || !(s->crls = sk_X509_CRL_new_null()))
        abort();
    for (size_t i = 0; i < s->n; i++) {
        const coll_entry *e = s->e[i];
        for (int k = 0; k < sk_X509_num(e->certs); k++)
            if (!sk_X509_push(s->certs, sk_X509_value(e->certs, k)))
                abort();
        for (int k = 0; k < sk_X509_CRL_num(e->crls); k++)
            if (!sk_X509_CRL_push(s->crls, sk_X509_CRL_value(e->crls, k)))
                abort();
    }
}

/* Every CRL of the set is current at @now: only then may a cached outcome be used. */
static bool crls_current(const coll_set *s, time_t now)
{
    return now >= s->crl_from && now <= s->crl_to;
}

/* The cache to use with @s at @now (NULL: verify in full). */
static ev_chain_cache *cache_for(ev_chain_cache *c, const coll_set *s, time_t now)
{
    return c && crls_current(s, now) ? c : NULL;
}

/* ---- the quote ---- */

typedef struct {
    const uint8_t *sig, *ak; /* quote signature r||s, attestation key x||y */
    const uint8_t *qe_report, *qe_sig;
    const uint8_t *qe_auth;
    size_t qe_auth_size;
    const uint8_t *pck_pem; /* certification data type 5 */
    size_t pck_pem_size;
    size_t signed_size; /* header + body */
} quote_sigdata;

static const char *tee_name(uint32_t tee)
{
    return tee == DCAP_TEE_TDX ? "TDX" : tee == DCAP_TEE_SGX ? "SGX" : "unknown";
}

/* Make sure @need bytes at @off fit in @size; names the field when not. */
static int need(size_t off, size_t want, size_t size, const char *field, cista_error **err)
{
    if (off > size || want > size - off)
        return err_set(err, EV_E_SIZE,
                       "DCAP quote: truncated: %s at offset %zu needs %zu bytes, only %zu remain "
                       "of %zu",
                       field, off, want, off > size ? 0 : size - off, size);
    return 0;
}

static int parse_quote(dcap_result *q, quote_sigdata *sd, const uint8_t *p, size_t size,
                       uint32_t want_tee, cista_error **err)
{
    int r;
    if ((r = need(0, DCAP_HEADER_SIZE, size, "the 48-byte header", err)) < 0)
        return r;
    q->version = le16(p);
    q->att_key_type = le16(p + 2);
    q->tee_type = ev__le32(p + 4);
    q->qe_vendor_id = p + 12;
    q->user_data = p + 28;
    if (q->version != 3 && q->version != 4 && q->version != 5)
        return err_set(err, EV_E_VERSION,
                       "DCAP quote: version %u is not supported (3 for SGX, 4 and 5 for TDX)",
                       q->version);
    if (q->att_key_type != ATT_KEY_ECDSA_P256)
        return err_set(err, EV_E_VERSION,
                       "DCAP quote: attestation key type %u is not supported (only 2, ECDSA "
                       "P-256; 3 would be ECDSA P-384)",
                       q->att_key_type);
    if (q->version == 3) {
        /* bytes 4..7 are att_key_data_0 (reserved), then qe_svn and pce_svn */
        if (q->tee_type != 0)
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote v3: reserved header field at 4 is 0x%08x, expected 0",
                           q->tee_type);
        q->tee_type = DCAP_TEE_SGX;
        q->qe_svn = le16(p + 8);
        q->pce_svn = le16(p + 10);
    } else {
        if (q->tee_type != DCAP_TEE_TDX && q->tee_type != DCAP_TEE_SGX)
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote: TEE type 0x%08x is neither SGX (0) nor TDX (0x81)",
                           q->tee_type);
        if (!ev__all_zero(p + 8, 4))
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote v%u: reserved header bytes 8..11 are %02x%02x%02x%02x, "
                           "expected zero",
                           q->version, p[8], p[9], p[10], p[11]);
    }
    if (q->tee_type != want_tee)
        return err_set(err, EV_E_FORMAT,
                       "DCAP quote: this is a %s quote (TEE type 0x%02x, version %u), expected "
                       "%s; use --tee %s",
                       tee_name(q->tee_type), q->tee_type, q->version, tee_name(want_tee),
                       q->tee_type == DCAP_TEE_TDX ? "tdx" : "sgx");
    if (memcmp(q->qe_vendor_id, g_intel_qe_vendor, 16) != 0) {
        _cleanup_free_ char *v = hex_encode(q->qe_vendor_id, 16);
        return err_set(err, EV_E_FORMAT,
                       "DCAP quote: QE vendor id %s is not Intel's "
                       "(939a7233f79c4ca9940a0db3957f0607); only the Intel QE is supported",
                       v);
    }

    size_t off = DCAP_HEADER_SIZE;
    if (q->version == 5) {
        if ((r = need(off, 6, size, "v5 body type and size", err)) < 0)
            return r;
        q->body_type = le16(p + off);
        uint32_t bs = ev__le32(p + off + 2);
        size_t want = q->body_type == DCAP_BODY_SGX    ? DCAP_SGX_REPORT_SIZE
                      : q->body_type == DCAP_BODY_TD10 ? DCAP_TD10_BODY_SIZE
                      : q->body_type == DCAP_BODY_TD15 ? DCAP_TD15_BODY_SIZE
                                                       : 0;
        if (!want)
            return err_set(err, EV_E_VERSION,
                           "DCAP quote v5: body type %u is not supported (1 SGX, 2 TD 1.0, 3 TD "
                           "1.5)",
                           q->body_type);
        if ((q->body_type == DCAP_BODY_SGX) != (q->tee_type == DCAP_TEE_SGX))
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote v5: body type %u does not match TEE type 0x%02x",
                           q->body_type, q->tee_type);
        if (bs != want)
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote v5: body size is %u, expected %zu for body type %u", bs,
                           want, q->body_type);
        off += 6;
        q->body_size = bs;
    } else if (q->tee_type == DCAP_TEE_TDX) {
        q->body_type = DCAP_BODY_TD10;
        q->body_size = DCAP_TD10_BODY_SIZE;
    } else {
        if (q->version != 3)
            return err_set(err, EV_E_VERSION, "DCAP quote v4 with an SGX body is not supported");
        q->body_type = DCAP_BODY_SGX;
        q->body_size = DCAP_SGX_REPORT_SIZE;
    }
    if ((r = need(off, q->body_size, size, "the quote body", err)) < 0)
        return r;
    q->body = p + off;
    off += q->body_size;
    sd->signed_size = off;

    if ((r = need(off, 4, size, "signature data length", err)) < 0)
        return r;
    uint32_t sdl = ev__le32(p + off);
    off += 4;
    size_t sd_start = off;
    if ((r = need(off, sdl, size, "the signature data (by its length field)", err)) < 0)
        return r;
    size_t sd_end = off + sdl;
    q->quote_size = sd_end;
    q->trailing_bytes = size - sd_end;

    if ((r = need(off, SIG_SIZE + AK_SIZE, sd_end, "quote signature and attestation key", err)) < 0)
        return r;
    sd->sig = p + off;
    sd->ak = p + off + SIG_SIZE;
    off += SIG_SIZE + AK_SIZE;

    size_t qe_end = sd_end; /* where the QE report certification data ends */
    if (q->version >= 4) {
        if ((r = need(off, 6, sd_end, "certification data header", err)) < 0)
            return r;
        uint16_t type = le16(p + off);
        uint32_t csize = ev__le32(p + off + 2);
        if (type != CERT_QE_REPORT)
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote v%u: certification data type %u, expected 6 (QE report "
                           "certification data)",
                           q->version, type);
        off += 6;
        if ((r = need(off, csize, sd_end, "QE report certification data", err)) < 0)
            return r;
        qe_end = off + csize;
        if (qe_end != sd_end)
            return err_set(err, EV_E_FORMAT,
                           "DCAP quote: certification data ends at %zu but the signature data "
                           "length says %zu; the length fields disagree",
                           qe_end, sd_end);
    }
    if ((r = need(off, DCAP_SGX_REPORT_SIZE + SIG_SIZE + 2, qe_end, "QE report and signature",
                  err)) < 0)
        return r;
    sd->qe_report = p + off;
    q->qe_report = sd->qe_report;
    sd->qe_sig = p + off + DCAP_SGX_REPORT_SIZE;
    off += DCAP_SGX_REPORT_SIZE + SIG_SIZE;
    uint16_t auth = le16(p + off);
    off += 2;
    if ((r = need(off, auth, qe_end, "QE authentication data", err)) < 0)
        return r;
    sd->qe_auth = p + off;
    sd->qe_auth_size = auth;
    off += auth;
    if ((r = need(off, 6, qe_end, "PCK certification data header", err)) < 0)
        return r;
    uint16_t ctype = le16(p + off);
    uint32_t csize = ev__le32(p + off + 2);
    off += 6;
    if (ctype >= 1 && ctype <= 3)
        return err_set(err, EV_E_NOKEY,
                       "DCAP quote: certification data type %u carries only the encrypted PPID, "
                       "not the PCK certificate chain; configure the quote provider to embed "
                       "the chain (type 5)",
                       ctype);
    if (ctype != CERT_PCK_CHAIN)
        return err_set(err, EV_E_FORMAT,
                       "DCAP quote: PCK certification data type %u, expected 5 (PCK certificate "
                       "chain, PEM)",
                       ctype);
    if ((r = need(off, csize, qe_end, "PCK certificate chain", err)) < 0)
        return r;
    if (off + csize != qe_end)
        return err_set(err, EV_E_FORMAT,
                       "DCAP quote: %zu bytes left after the PCK certificate chain inside the "
                       "signature data; the length fields disagree",
                       qe_end - off - csize);
    sd->pck_pem = p + off;
    sd->pck_pem_size = csize;
    (void)sd_start;

    if (q->trailing_bytes > DCAP_MAX_TRAILING)
        return err_set(err, EV_E_SIZE,
                       "DCAP quote: padded: %zu bytes follow the %zu-byte quote (at most %d are "
                       "tolerated as buffer padding)",
                       q->trailing_bytes, q->quote_size, DCAP_MAX_TRAILING);
    return 0;
}

/* An EC P-256 public key from the raw x || y of the quote. */
static int ak_pkey(EVP_PKEY **out, const uint8_t xy[AK_SIZE], cista_error **err)
{
    uint8_t pt[1 + AK_SIZE];
    pt[0] = 0x04;
    memcpy(pt + 1, xy, AK_SIZE);
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)),
        OSSL_PARAM_END,
    };
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx)
        abort();
    EVP_PKEY *pk = NULL;
    int ok = EVP_PKEY_fromdata_init(ctx) == 1 &&
             EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pk);
        return err_set_ssl(err, EV_E_NOKEY,
                           "DCAP quote: the attestation key is not a valid P-256 point");
    }
    *out = pk;
    return 0;
}

/* ---- ECDSA P-256 over SHA-256 with r || s from the quote ---- */

/*
 * A context that verifies ECDSA signatures over SHA-256 digests with @key
 * (borrowed; the context holds its own reference), or NULL. Making one
 * costs a few microseconds in OpenSSL 3.0 (algorithm fetches by name), so
 * the context of a cached key is kept with it and duplicated per use.
 */
static EVP_PKEY_CTX *verify_ctx_new(EVP_PKEY *key)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (c && EVP_PKEY_verify_init(c) == 1)
        return c;
    EVP_PKEY_CTX_free(c);
    return NULL;
}

static void vctx_freep(EVP_PKEY_CTX **c)
{
    EVP_PKEY_CTX_free(*c);
}

/* DER INTEGER of the 32-byte big-endian unsigned @v (minimal, with a sign byte if needed). */
static size_t der_uint(uint8_t *out, const uint8_t v[32])
{
    size_t i = 0;
    while (i < 31 && v[i] == 0)
        i++;
    size_t n = 32 - i, pad = v[i] & 0x80 ? 1 : 0;
    out[0] = 0x02;
    out[1] = (uint8_t)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, v + i, n);
    return 2 + pad + n;
}

/*
 * Verify the signature @sig (r || s, 32 bytes each, big-endian) over
 * SHA-256(@msg) with @ctx (from verify_ctx_new). 0, or -EBADMSG when it
 * does not verify (as x509_ecdsa_verify_raw(): the same DER encoding of r
 * and s, the same check).
 */
static int p256_verify(EVP_PKEY_CTX *ctx, const void *msg, size_t size, const uint8_t sig[SIG_SIZE],
                       cista_error **err)
{
    uint8_t dg[32], der[2 + 2 * 35];
    unsigned dn = 0;
    if (EVP_Digest(msg, size, dg, &dn, sha256_md(), NULL) != 1 || dn != 32)
        return err_set_ssl(err, -EIO, "SHA-256 failed");
    size_t n = der_uint(der + 2, sig);
    n += der_uint(der + 2 + n, sig + 32);
    der[0] = 0x30; /* SEQUENCE, at most 70 bytes: short-form length */
    der[1] = (uint8_t)n;
    if (EVP_PKEY_verify(ctx, der, n + 2, dg, sizeof(dg)) == 1)
        return 0;
    ERR_clear_error();
    return err_set(err, -EBADMSG, "ECDSA signature does not verify");
}

/* ---- the PCK certificate's SGX extension (1.2.840.113741.1.13.1) ---- */

static void seq_freep(ASN1_SEQUENCE_ANY **s)
{
    sk_ASN1_TYPE_pop_free(*s, ASN1_TYPE_free);
}

/* Parse a DER SEQUENCE OF ANY that must fill @size exactly. */
static ASN1_SEQUENCE_ANY *seq_parse(const uint8_t *der, size_t size)
{
    const unsigned char *p = der;
    if (size > LONG_MAX)
        return NULL;
    ASN1_SEQUENCE_ANY *s = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)size);
    if (s && p != der + size) {
        sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free);
        return NULL;
    }
    return s;
}

/* Element @t of the extension: SEQUENCE { OID, value } -> its OID text and value. */
static bool oid_pair(char *oid, size_t oid_size, ASN1_TYPE **val, ASN1_SEQUENCE_ANY **holder,
                     const ASN1_TYPE *t)
{
    if (ASN1_TYPE_get(t) != V_ASN1_SEQUENCE)
        return false;
    ASN1_SEQUENCE_ANY *pair = seq_parse(t->value.sequence->data, (size_t)t->value.sequence->length);
    if (!pair || sk_ASN1_TYPE_num(pair) != 2 ||
        ASN1_TYPE_get(sk_ASN1_TYPE_value(pair, 0)) != V_ASN1_OBJECT) {
        sk_ASN1_TYPE_pop_free(pair, ASN1_TYPE_free);
        return false;
    }
    if (OBJ_obj2txt(oid, (int)oid_size, sk_ASN1_TYPE_value(pair, 0)->value.object, 1) <= 0) {
        sk_ASN1_TYPE_pop_free(pair, ASN1_TYPE_free);
        return false;
    }
    *val = sk_ASN1_TYPE_value(pair, 1);
    *holder = pair;
    return true;
}

static bool octets(uint8_t *out, size_t size, const ASN1_TYPE *v)
{
    if (ASN1_TYPE_get(v) != V_ASN1_OCTET_STRING || (size_t)v->value.octet_string->length != size)
        return false;
    memcpy(out, v->value.octet_string->data, size);
    return true;
}

static bool small_int(int64_t *out, const ASN1_TYPE *v, int64_t max)
{
    int64_t x = 0;
    if (ASN1_TYPE_get(v) == V_ASN1_INTEGER) {
        if (ASN1_INTEGER_get_int64(&x, v->value.integer) != 1)
            return false;
    } else if (ASN1_TYPE_get(v) == V_ASN1_ENUMERATED) {
        if (ASN1_ENUMERATED_get_int64(&x, v->value.enumerated) != 1)
            return false;
    } else {
        return false;
    }
    if (x < 0 || x > max)
        return false;
    *out = x;
    return true;
}

static int pck_ext_err(cista_error **err, const char *what)
{
    return err_set(err, EV_E_FORMAT,
                   "DCAP PCK certificate: SGX extension (" OID_SGX_EXT ") %s; not a genuine "
                   "Intel PCK certificate",
                   what);
}

static int pck_tcb(dcap_result *q, const ASN1_TYPE *v, cista_error **err)
{
    if (ASN1_TYPE_get(v) != V_ASN1_SEQUENCE)
        return pck_ext_err(err, "TCB is not a SEQUENCE");
    __attribute__((cleanup(seq_freep))) ASN1_SEQUENCE_ANY *tcb =
        seq_parse(v->value.sequence->data, (size_t)v->value.sequence->length);
    if (!tcb)
        return pck_ext_err(err, "TCB is malformed");
    unsigned seen = 0;
    for (int i = 0; i < sk_ASN1_TYPE_num(tcb); i++) {
        char oid[80];
        ASN1_TYPE *val = NULL;
        __attribute__((cleanup(seq_freep))) ASN1_SEQUENCE_ANY *holder = NULL;
        if (!oid_pair(oid, sizeof(oid), &val, &holder, sk_ASN1_TYPE_value(tcb, i)))
            return pck_ext_err(err, "TCB entry is malformed");
        const char *pre = OID_SGX_EXT ".2.";
        if (strncmp(oid, pre, strlen(pre)) != 0)
            continue;
        char *end = NULL;
        long k = strtol(oid + strlen(pre), &end, 10);
        if (*end)
            continue;
        int64_t x = 0;
        if (k >= 1 && k <= 16) {
            if (!small_int(&x, val, 255))
                return pck_ext_err(err, "TCB component SVN is not an integer 0-255");
            q->pck_comp[k - 1] = (uint8_t)x;
            seen |= 1u << (k - 1);
        } else if (k == 17) {
            if (!small_int(&x, val, 65535))
                return pck_ext_err(err, "PCESVN is not an integer 0-65535");
            q->pcesvn = (uint16_t)x;
            seen |= 1u << 16;
        } else if (k == 18) {
            if (!octets(q->cpusvn, 16, val))
                return pck_ext_err(err, "CPUSVN is not 16 octets");
            seen |= 1u << 17;
        }
    }
    if (seen != 0x3ffff)
        return pck_ext_err(err, "TCB lacks a component SVN, PCESVN or CPUSVN");
    return 0;
}

static int pck_parse(dcap_result *q, X509 *leaf, cista_error **err)
{
    const uint8_t *raw = NULL;
    size_t n = 0;
    _cleanup_err_ cista_error *e = NULL;
    if (x509_ext_raw(&raw, &n, leaf, OID_SGX_EXT, &e) < 0)
        return pck_ext_err(err, "is missing or duplicated");
    __attribute__((cleanup(seq_freep))) ASN1_SEQUENCE_ANY *ext = seq_parse(raw, n);
    if (!ext)
        return pck_ext_err(err, "is not a DER SEQUENCE");
    bool have_fmspc = false, have_pceid = false, have_tcb = false;
    q->sgx_type = -1;
    for (int i = 0; i < sk_ASN1_TYPE_num(ext); i++) {
        char oid[80];
        ASN1_TYPE *val = NULL;
        __attribute__((cleanup(seq_freep))) ASN1_SEQUENCE_ANY *holder = NULL;
        if (!oid_pair(oid, sizeof(oid), &val, &holder, sk_ASN1_TYPE_value(ext, i)))
            return pck_ext_err(err, "has a malformed entry");
        int r;
        if (strcmp(oid, OID_SGX_EXT ".2") == 0) {
            if ((r = pck_tcb(q, val, err)) < 0)
                return r;
            have_tcb = true;
        } else if (strcmp(oid, OID_SGX_EXT ".3") == 0) {
            if (!octets(q->pceid, 2, val))
                return pck_ext_err(err, "PCE-ID is not 2 octets");
            have_pceid = true;
        } else if (strcmp(oid, OID_SGX_EXT ".4") == 0) {
            if (!octets(q->fmspc, 6, val))
                return pck_ext_err(err, "FMSPC is not 6 octets");
            have_fmspc = true;
        } else if (strcmp(oid, OID_SGX_EXT ".5") == 0) {
            int64_t t = 0;
            if (!small_int(&t, val, 255))
                return pck_ext_err(err, "SGX type is not a small integer");
            q->sgx_type = (int)t;
        }
    }
    if (!have_tcb || !have_fmspc || !have_pceid)
        return pck_ext_err(err, "lacks the TCB, FMSPC or PCE-ID");
    return 0;
}

/* ---- certificate chains ---- */

static time_t not_before(X509 *c)
{
    time_t t = 0;
    return asn1_to_time(&t, X509_get0_notBefore(c)) ? t : 0;
}

/*
 * Untrusted intermediates: @extra (the quote's certificates, may be NULL)
 * plus the collateral's, minus roots. New stack of new references.
 */
static int intermediates(STACK_OF(X509) * *out, STACK_OF(X509) * extra, const coll_set *cs,
                         const dcap_root *root, cista_error **err)
{
    STACK_OF(X509) *inter = sk_X509_new_null();
    if (!inter)
        abort();
    size_t ei = 0;
    int k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (;;) {
            coll_cert tmp;
            const coll_cert *ci;
            if (pass == 0) {
                if (k >= sk_X509_num(extra))
                    break;
                cert_facts(&tmp, sk_X509_value(extra, k++), root->fp);
                ci = &tmp;
            } else {
                /* the next collateral certificate, facts computed when the entry was parsed */
                while (ei < cs->n && k >= sk_X509_num(cs->e[ei]->certs)) {
                    ei++;
                    k = 0;
                }
                if (ei >= cs->n)
                    break;
                ci = &cs->e[ei]->cinfo[k++];
            }
            /* the pinned root itself (self-signed) is not an intermediate; matching it by
             * fingerprint first spares a self-signature verification per copy */
            if (ci->fp_ok && memcmp(ci->fp, root->fp, 32) == 0)
                continue;
            if (ci->self_signed) {
                /* other vendors' roots in a shared collateral directory are not ours */
                if (pass == 1 && !ci->cn_root)
                    continue;
                _cleanup_free_ char *subj = x509_subject_str(ci->x);
                _cleanup_free_ char *got = hex_encode(ci->fp, 32);
                _cleanup_free_ char *want = hex_encode(root->fp, 32);
                sk_X509_pop_free(inter, X509_free);
                return err_set(err, EV_E_CHAIN,
                               "DCAP: the root certificate '%s' given %s is not the pinned "
                               "Intel SGX Root CA: SHA-256 %s, expected %s",
                               subj, pass == 0 ? "in the quote" : "in the collateral", got, want);
            }
            X509_up_ref(ci->x);
            sk_X509_push(inter, ci->x);
        }
        k = 0;
    }
    *out = inter;
    return 0;
}

/* The intermediates() of @extra and @cs, and a stack holding just the root: a chain's inputs. */
static int chain_inputs(STACK_OF(X509) * *out_inter, STACK_OF(X509) * *out_roots,
                        STACK_OF(X509) * extra, const coll_set *cs, const dcap_root *root,
                        cista_error **err)
{
    int r = intermediates(out_inter, extra, cs, root, err);
    if (r < 0)
        return r;
    *out_roots = sk_X509_new_null();
    if (!*out_roots)
        abort();
    X509_up_ref(root->x);
    sk_X509_push(*out_roots, root->x);
    return 0;
}

/*
 * Cache keys (opts->chain_cache). A key names every input of the outcome it
 * keeps: what is verified, the root (SHA-256 of its DER), each collateral
 * entry (SHA-256 of its bytes, computed when it was parsed: the CRLs,
 * intermediates and documents offered) and the evidence's own bytes. The
 * outcome's window is that of its certificates and of the CRLs, so
 * validity and CRL currency are checked on every call; only successes are
 * kept.
 */
#define KEY_MAX (3 + EV_MAX_COLLATERAL)

static size_t set_key(ev__key_part *k, const char *what, const dcap_root *root, const coll_set *cs)
{
    size_t n = 0;
    k[n++] = (ev__key_part){what, strlen(what) + 1};
    k[n++] = (ev__key_part){root->fp, 32};
    for (size_t i = 0; i < cs->n; i++)
        k[n++] = (ev__key_part){cs->e[i]->digest, 32};
    return n;
}

/* What verify_pck() establishes beside the chain (a cache blob: plain bytes). */
typedef struct {
    uint8_t fmspc[6], pceid[2], cpusvn[16], pck_comp[16];
    uint16_t pcesvn;
    int16_t sgx_type;
    uint8_t processor_ca; /* PCK CA: 1 Processor, 0 Platform */
} pck_facts;

static void pck_facts_of(pck_facts *f, const dcap_result *q)
{
    memset(f, 0, sizeof(*f));
    memcpy(f->fmspc, q->fmspc, 6);
    memcpy(f->pceid, q->pceid, 2);
    memcpy(f->cpusvn, q->cpusvn, 16);
    memcpy(f->pck_comp, q->pck_comp, 16);
    f->pcesvn = q->pcesvn;
    f->sgx_type = (int16_t)q->sgx_type;
    f->processor_ca = strcmp(q->pck_ca, "processor") == 0;
}

static void pck_facts_to(dcap_result *q, const pck_facts *f)
{
    memcpy(q->fmspc, f->fmspc, 6);
    memcpy(q->pceid, f->pceid, 2);
    memcpy(q->cpusvn, f->cpusvn, 16);
    memcpy(q->pck_comp, f->pck_comp, 16);
    q->pcesvn = f->pcesvn;
    q->sgx_type = f->sgx_type;
    q->pck_ca = f->processor_ca ? "processor" : "platform";
}

/*
 * The PCK chain of the quote to the root with the collateral's CRLs, its
 * SGX extension and key type: *q's chain, pck_* fields. With a cache, the
 * outcome for the same quote PEM bytes, root and collateral is reused while
 * "now" is inside the chain's and the CRLs' windows.
 */
static int verify_pck(dcap_result *q, EVP_PKEY_CTX **out_vctx, const quote_sigdata *sd,
                      coll_set *cs, const dcap_root *root, time_t now, ev_chain_cache *cache,
                      cista_error **err)
{
    cache = cache_for(cache, cs, now);
    ev__key_part key[KEY_MAX];
    size_t nkey = 0;
    pck_facts f;
    if (cache) {
        nkey = set_key(key, "dcap/pck", root, cs);
        key[nkey++] = (ev__key_part){sd->pck_pem, sd->pck_pem_size};
        if (ev__cache_get(cache, key, nkey, now, &q->chain, out_vctx, &f, sizeof(f))) {
            pck_facts_to(q, &f);
            return 0;
        }
    }
    coll_set_stacks(cs);
    _cleanup_x509_stack_ STACK_OF(X509) *certs = NULL;
    _cleanup_err_ cista_error *e = NULL;
    if (x509_certs_load(&certs, sd->pck_pem, sd->pck_pem_size, &e) < 0)
        return err_set(err, EV_E_FORMAT,
                       "DCAP quote: the PCK certificate chain (certification data type 5) does "
                       "not parse: %s",
                       e ? e->msg : "?");
    if (sk_X509_num(certs) < 1)
        return err_set(err, EV_E_FORMAT, "DCAP quote: the PCK certificate chain is empty");
    _cleanup_x509_ X509 *leaf = sk_X509_shift(certs);
    if (!cn_is(leaf, "Intel SGX PCK Certificate")) {
        _cleanup_free_ char *s = x509_subject_str(leaf);
        return err_set(err, EV_E_CHAIN,
                       "DCAP quote: the first certificate of the PCK chain is '%s', expected CN "
                       "'Intel SGX PCK Certificate'",
                       s);
    }
    _cleanup_x509_stack_ STACK_OF(X509) *inter = NULL, *roots = NULL;
    int r = chain_inputs(&inter, &roots, certs, cs, root, err);
    if (r < 0)
        return r;
    x509_verify_opts xo = {.at = now, .crls = cs->crls, .crl_mode = X509_CRL_AVAILABLE};
    r = x509_verify_chain(&q->chain, leaf, inter, roots, &xo, err);
    if (r < 0)
        return err_wrap(err, "DCAP PCK certificate chain (PCK -> PCK CA -> Intel SGX Root CA)");
    if (sk_X509_num(q->chain) != 3)
        return err_set(err, EV_E_CHAIN, "DCAP PCK chain has %d certificates, expected 3",
                       sk_X509_num(q->chain));
    X509 *ca = sk_X509_value(q->chain, 1);
    if (cn_is(ca, "Intel SGX PCK Platform CA"))
        q->pck_ca = "platform";
    else if (cn_is(ca, "Intel SGX PCK Processor CA"))
        q->pck_ca = "processor";
    else {
        _cleanup_free_ char *s = x509_subject_str(ca);
        return err_set(err, EV_E_CHAIN,
                       "DCAP PCK issuer '%s' is neither the PCK Platform CA nor the PCK "
                       "Processor CA",
                       s);
    }
    if ((r = pck_parse(q, sk_X509_value(q->chain, 0), err)) < 0)
        return r;
    EVP_PKEY *pck = X509_get0_pubkey(sk_X509_value(q->chain, 0));
    const char *crv = pck ? crypto_key_ec_crv(pck) : NULL;
    if (!crv || strcmp(crv, "P-256") != 0)
        return err_set(err, EV_E_NOKEY, "DCAP PCK certificate key is not an ECDSA P-256 key");
    if (!(*out_vctx = verify_ctx_new(pck))) {
        (void)err_set_ssl(err, -EINVAL, "ECDSA: cannot initialise verification");
        return err_wrap(err, "DCAP QE report signature");
    }
    if (cache) {
        ev__cache_val v = {.not_before = cs->crl_from,
                           .not_after = cs->crl_to,
                           .chain = q->chain,
                           .vctx = *out_vctx,
                           .blob = &f,
                           .blob_size = sizeof(f)};
        pck_facts_of(&f, q);
        if (ev__chain_window(&v.not_before, &v.not_after, q->chain))
            ev__cache_put(cache, key, nkey, &v);
    }
    return 0;
}

/*
 * The TCB signing certificate, chained to the root at @now (root CRL
 * applied). Certificates given in the collateral come first; without any,
 * the built-in one is used, checked at the later of @now and its notBefore
 * (Intel re-issues it with the same key, so older collateral verifies).
 * *out is a new reference, @out_fp its SHA-256 (when *fp_ok). With a cache, the outcome
 * for the same root and collateral is reused inside its window.
 */
static int tcb_signer(X509 **out, uint8_t out_fp[32], bool *fp_ok, coll_set *cs,
                      const dcap_root *root, time_t now, ev_chain_cache *cache, cista_error **err)
{
    cache = cache_for(cache, cs, now);
    ev__key_part key[KEY_MAX];
    size_t nkey = 0;
    if (cache) {
        nkey = set_key(key, "dcap/tcb", root, cs);
        STACK_OF(X509) *got = NULL;
        if (ev__cache_get(cache, key, nkey, now, &got, NULL, out_fp, 32)) {
            *fp_ok = true;
            *out = sk_X509_shift(got);
            sk_X509_pop_free(got, X509_free);
            return 0;
        }
    }
    coll_set_stacks(cs);
    _cleanup_x509_stack_ STACK_OF(X509) *inter = NULL, *roots = NULL;
    int r = chain_inputs(&inter, &roots, NULL, cs, root, err);
    if (r < 0)
        return r;
    x509_verify_opts xo = {.at = now, .crls = cs->crls, .crl_mode = X509_CRL_AVAILABLE};
    ev__cache_val v = {.not_before = cs->crl_from, .not_after = cs->crl_to};
    _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
    _cleanup_x509_ X509 *signer = NULL;
    for (size_t i = 0; i < cs->n && !signer; i++) {
        for (int k = 0; k < sk_X509_num(cs->e[i]->certs) && !signer; k++) {
            const coll_cert *ci = &cs->e[i]->cinfo[k];
            /* the intermediates() of the collateral: neither the root nor self-signed */
            if (!ci->cn_tcb || (ci->fp_ok && memcmp(ci->fp, root->fp, 32) == 0) || ci->self_signed)
                continue;
            r = x509_verify_chain(&chain, ci->x, inter, roots, &xo, err);
            if (r < 0)
                return err_wrap(err, "DCAP TCB signing certificate chain (TCB Signing -> Intel "
                                     "SGX Root CA)");
            if (!ev__chain_window(&v.not_before, &v.not_after, chain))
                cache = NULL;
            X509_up_ref(ci->x);
            signer = ci->x;
            memcpy(out_fp, ci->fp, 32);
            if (!(*fp_ok = ci->fp_ok))
                cache = NULL;
        }
    }
    if (!signer) {
        if ((r = ev__cert_embedded(&signer, g_tcb_signing_pem, err)) < 0)
            return err_wrap(err, "built-in Intel SGX TCB Signing certificate");
        time_t nb = not_before(signer);
        x509_verify_opts bo = {.at = now > nb ? now : nb};
        /* no CRLs in this verification (they are applied below) */
        if ((r = x509_verify_chain(&chain, signer, NULL, roots, &bo, err)) < 0)
            return err_wrap(err, "built-in Intel SGX TCB Signing certificate");
        /* the root CA CRLs given (their window was checked with the PCK chain) */
        for (int i = 0; i < sk_X509_CRL_num(cs->crls); i++) {
            X509_CRL *crl = sk_X509_CRL_value(cs->crls, i);
            X509_REVOKED *rev = NULL;
            if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(root->x)) == 0 &&
                X509_CRL_verify(crl, X509_get0_pubkey(root->x)) == 1 &&
                X509_CRL_get0_by_cert(crl, &rev, signer) == 1)
                return err_set(err, EV_E_REVOKED,
                               "the built-in Intel SGX TCB Signing certificate is revoked by the "
                               "given Intel SGX Root CA CRL");
        }
        /* checked at max(now, nb): in terms of "now", the chain's window without its start
         * when that start is nb itself */
        time_t from = INT64_MIN, to = INT64_MAX;
        *fp_ok = x509_cert_sha256(out_fp, signer, NULL) == 0;
        if (!ev__chain_window(&from, &to, chain) || !*fp_ok)
            cache = NULL;
        if (from > nb && from > v.not_before)
            v.not_before = from;
        if (to < v.not_after)
            v.not_after = to;
    }
    if (cache) {
        STACK_OF(X509) *one = sk_X509_new_null();
        if (!one || !sk_X509_push(one, signer))
            abort();
        v.chain = one;
        v.blob = out_fp;
        v.blob_size = 32;
        ev__cache_put(cache, key, nkey, &v);
        sk_X509_free(one);
    }
    *out = steal_ptr(&signer);
    return 0;
}

/*
 * The signature of @d by @signer (SHA-256 @signer_fp, NULL if unknown). With @cache, a
 * signature that verified before over byte-identical text and signature
 * (the document's digest, computed when it was parsed) by the same signing
 * certificate (its chain is checked by the caller on every call) is not
 * verified again; the entry lives while "now" is inside the signer's
 * validity. The document's own window (doc_window) is checked on every call.
 */
static int doc_verify(const signed_doc *d, X509 *signer, const uint8_t signer_fp[32],
                      const char *what, ev_chain_cache *cache, time_t now, cista_error **err)
{
    ev__key_part key[] = {{"dcap/doc", 9}, {signer_fp, 32}, {d->digest, 32}};
    if (!signer_fp)
        cache = NULL;
    if (ev__cache_get(cache, key, ARRAY_LEN(key), now, NULL, NULL, NULL, 0))
        return 0;
    EVP_PKEY *pub = X509_get0_pubkey(signer);
    int r = x509_ecdsa_verify_raw(pub, "SHA256", d->text, d->size, d->sig, d->sig + 32, 32,
                                  X509_BIG_ENDIAN, err);
    if (r == -EBADMSG) {
        err_clear(err);
        return err_set(err, EV_E_SIGNATURE,
                       "DCAP %s (%s): the signature by the Intel SGX TCB Signing key does not "
                       "verify over the %zu bytes of the signed JSON text; the collateral was "
                       "modified or re-serialised",
                       what, d->name, d->size);
    }
    if (r < 0)
        return err_wrap(err, "DCAP %s (%s) signature", what, d->name);
    ev__cache_val v = {.not_before = INT64_MIN, .not_after = INT64_MAX};
    if (cache && ev__time_window(&v.not_before, &v.not_after, X509_get0_notBefore(signer),
                                 X509_get0_notAfter(signer)))
        ev__cache_put(cache, key, ARRAY_LEN(key), &v);
    return 0;
}

static void add_advisories(json_t *dst, const level_outcome *o)
{
    for (size_t i = 0; i < o->nadv; i++)
        json_add_unique(dst, o->adv[i]);
}

/* The matched level's status and advisories. */
static int take_outcome(int *status, json_t *advisories, const level_outcome *o, cista_error **err)
{
    PERR_CHECK(o->e, err);
    *status = o->status;
    add_advisories(advisories, o);
    return 0;
}

/* ---- TCB info ---- */

static char *svn_list(const uint8_t *v, size_t n)
{
    char buf[16 * 4 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, i ? ",%u" : "%u", v[i]);
    return xstrdup(buf);
}

/* How many of level @l's components exceed the platform's; with @list, which (for messages). */
static size_t level_misses(const dcap_result *q, const tcb_level *l, size_t skip, char *list,
                           size_t list_size)
{
    bool tdx = q->tee_type == DCAP_TEE_TDX;
    const uint8_t *tee_svn = tdx ? q->body + TDB_TEE_TCB_SVN : NULL;
    size_t miss = 0, o = 0;
#define MISS(...)                                                                                  \
    do {                                                                                           \
        if (list && o < list_size)                                                                 \
            o += (size_t)snprintf(list + o, list_size - o, __VA_ARGS__);                           \
        miss++;                                                                                    \
    } while (0)
    for (size_t c = 0; c < 16; c++)
        if (l->sgx[c] > q->pck_comp[c])
            MISS("%ssgxtcbcomponents[%zu] >= %u (PCK has %u)", miss ? ", " : "", c, l->sgx[c],
                 q->pck_comp[c]);
    if (l->pcesvn > q->pcesvn)
        MISS("%spcesvn >= %lld (PCK has %u)", miss ? ", " : "", (long long)l->pcesvn, q->pcesvn);
    for (size_t c = skip; tdx && c < 16; c++)
        if (l->tdx[c] > tee_svn[c])
            MISS("%stdxtcbcomponents[%zu] >= %u (TEE_TCB_SVN has %u)", miss ? ", " : "", c,
                 l->tdx[c], tee_svn[c]);
#undef MISS
    return miss;
}

static int eval_platform(dcap_result *q, const tcb_info *t, const char *what, cista_error **err)
{
    bool tdx = q->tee_type == DCAP_TEE_TDX;
    const uint8_t *tee_svn = tdx ? q->body + TDB_TEE_TCB_SVN : NULL;
    bool modules = tdx && t->has_module_ids;
    size_t skip = tdx && modules && tee_svn[1] > 0 ? 2 : 0;
    PERR_CHECK(t->levels_e, err);
    size_t best_miss = SIZE_MAX, best = SIZE_MAX;
    for (size_t i = 0; i < t->nlevels; i++) {
        const tcb_level *l = &t->levels[i];
        PERR_CHECK(l->e, err);
        /* count the misses; the reasons shown are those of the closest level */
        size_t miss = level_misses(q, l, skip, NULL, 0);
        if (miss && miss < best_miss) {
            best_miss = miss;
            best = i;
        }
        if (miss)
            continue;
        int r = take_outcome(&q->platform_status, q->advisories, &l->out, err);
        if (r < 0)
            return r;
        snprintf(q->tcb_date, sizeof(q->tcb_date), "%s", l->date ? l->date : "");
        return 0;
    }
    char why[512] = "the TCB info has no levels";
    if (best != SIZE_MAX) {
        char list[400] = "";
        const tcb_level *l = &t->levels[best];
        (void)level_misses(q, l, skip, list, sizeof(list));
        snprintf(why, sizeof(why), "the closest level %zu (tcbDate %s) needs %s", best,
                 l->date ? l->date : "?", list);
    }
    _cleanup_free_ char *pc = svn_list(q->pck_comp, 16);
    _cleanup_free_ char *ts = tdx ? svn_list(tee_svn, 16) : xstrdup("-");
    return err_set(err, EV_E_TCB,
                   "DCAP %s: no TCB level matches this platform (PCK SGX components %s, PCESVN "
                   "%u%s%s): %s; the platform TCB is not supported (update microcode/BIOS%s)",
                   what, pc, q->pcesvn, tdx ? ", TEE_TCB_SVN " : "", tdx ? ts : "", why,
                   tdx ? " or the TDX module" : "");
}

static int eval_module(dcap_result *q, const tcb_info *t, const char *what, cista_error **err)
{
    const uint8_t *tee_svn = q->body + TDB_TEE_TCB_SVN;
    PERR_CHECK(t->modules_e, err);
    char id[16];
    snprintf(id, sizeof(id), "TDX_%02X", tee_svn[1]);
    bool by_identity = t->ids && tee_svn[1] > 0;
    const tdx_module *mod = t->module;
    if (by_identity) {
        mod = NULL;
        for (size_t i = 0; i < t->nids; i++) {
            PERR_CHECK(t->ids[i].id_e, err);
            if (strcasecmp(t->ids[i].id, id) == 0)
                mod = &t->ids[i];
        }
        if (!mod)
            return err_set(err, EV_E_TCB,
                           "DCAP %s: no TDX module identity %s for TDX module major version %u "
                           "(TEE_TCB_SVN[1]); the module is not supported",
                           what, id, tee_svn[1]);
    }
    if (!mod)
        return 0; /* TCB info v2-style without module data */
    PERR_CHECK(mod->hex_e, err);
    if (memcmp(mod->signer, q->body + TDB_MRSIGNERSEAM, 48) != 0) {
        _cleanup_free_ char *got = hex_encode(q->body + TDB_MRSIGNERSEAM, 48);
        _cleanup_free_ char *want = hex_encode(mod->signer, 48);
        return err_set(err, EV_E_CHAIN,
                       "DCAP TDX module: MRSIGNERSEAM %s differs from the TCB info's mrsigner %s "
                       "(%s); the TDX module is not the one Intel lists",
                       got, want, by_identity ? id : "tdxModule");
    }
    for (int b = 0; b < 8; b++)
        if ((q->body[TDB_SEAMATTRIBUTES + b] & mod->mask[b]) != mod->attr[b]) {
            _cleanup_free_ char *got = hex_encode(q->body + TDB_SEAMATTRIBUTES, 8);
            return err_set(err, EV_E_CHAIN,
                           "DCAP TDX module: SEAMATTRIBUTES %s do not match the TCB info's "
                           "attributes under its mask",
                           got);
        }
    if (!by_identity)
        return 0;
    const isv_level *lv = NULL;
    int r = isvsvn_level(&lv, &mod->levels, tee_svn[0], err);
    if (r < 0)
        return r;
    if (!lv)
        return err_set(err, EV_E_TCB,
                       "DCAP %s: TDX module %s SVN %u (TEE_TCB_SVN[0]) is below every level of "
                       "its identity; the module is not supported",
                       what, id, tee_svn[0]);
    return take_outcome(&q->module_status, q->advisories, &lv->out, err);
}

/* @d's parsed text, or the reason it does not parse (borrowed). */
static int doc_json(const signed_doc *d, cista_error **err)
{
    if (!d->json)
        return err_replay(err, d->bad->code, d->bad);
    return 0;
}

static int eval_tcb_info(dcap_result *q, const coll_set *cs, X509 *signer,
                         const uint8_t signer_fp[32], time_t now, ev_chain_cache *cache,
                         doc_span *win, cista_error **err)
{
    const char *want_id = q->tee_type == DCAP_TEE_TDX ? "TDX" : "SGX";
    const signed_doc *d = NULL;
    for (size_t i = 0; i < cs->ntcb && !d; i++) {
        const signed_doc *c = cs->tcb[i];
        int r = doc_json(c, err);
        if (r < 0)
            return r;
        /* TDX TCB info always has "id"; SGX v2 has none */
        bool id_ok = c->id ? strcmp(c->id, want_id) == 0 : q->tee_type == DCAP_TEE_SGX;
        if (c->fmspc_ok && memcmp(c->fmspc, q->fmspc, 6) == 0 && id_ok)
            d = c;
    }
    if (!d) {
        _cleanup_free_ char *fm = hex_encode(q->fmspc, 6);
        _cleanup_free_ char *seen = xstrdup("");
        for (size_t i = 0; i < cs->ntcb; i++) {
            const signed_doc *c = cs->tcb[i];
            _cleanup_free_ char *fh = c->fmspc_ok ? hex_encode(c->fmspc, 6) : xstrdup("?");
            char *n = xasprintf("%s%s%s %s (%s)", seen, *seen ? ", " : "", c->id ? c->id : "?", fh,
                                c->name);
            free(seen);
            seen = n;
        }
        return err_set(err, EV_E_PLATFORM,
                       "DCAP: no %s TCB info for the PCK's FMSPC %s among the collateral (given: "
                       "%s); fetch /%s/certification/v4/tcb?fmspc=%s from Intel PCS",
                       want_id, fm, seen, q->tee_type == DCAP_TEE_TDX ? "tdx" : "sgx", fm);
    }
    int r = doc_verify(d, signer, signer_fp, "TCB info", cache, now, err);
    if (r < 0)
        return r;
    const tcb_info *t = d->tcb;
    PERR_CHECK(t->version_e, err);
    if (q->tee_type == DCAP_TEE_TDX ? t->version != 3 : (t->version != 2 && t->version != 3))
        return err_set(
            err, EV_E_VERSION, "DCAP TCB info (%s): version %lld is not supported for %s (%s)",
            d->name, (long long)t->version, want_id, q->tee_type == DCAP_TEE_TDX ? "3" : "2 or 3");
    if ((r = doc_window(&t->dates, "TCB info", d->name, now, win, err)) < 0)
        return r;
    PERR_CHECK(t->pce_e, err);
    if (memcmp(t->pceid, q->pceid, 2) != 0)
        return err_set(err, EV_E_PLATFORM,
                       "DCAP TCB info (%s): pceId %02x%02x differs from the PCK's PCE-ID "
                       "%02x%02x",
                       d->name, t->pceid[0], t->pceid[1], q->pceid[0], q->pceid[1]);
    if ((r = eval_platform(q, t, "TCB info", err)) < 0)
        return r;
    if (q->tee_type == DCAP_TEE_TDX && (r = eval_module(q, t, "TCB info", err)) < 0)
        return r;
    q->have_tcb_info = true;
    return 0;
}

/* ---- QE identity ---- */

static int eval_qe_identity(dcap_result *q, const coll_set *cs, X509 *signer,
                            const uint8_t signer_fp[32], time_t now, ev_chain_cache *cache,
                            doc_span *win, cista_error **err)
{
    const char *want_id = q->tee_type == DCAP_TEE_TDX ? "TD_QE" : "QE";
    const signed_doc *d = NULL;
    for (size_t i = 0; i < cs->nqe && !d; i++) {
        int r = doc_json(cs->qe[i], err);
        if (r < 0)
            return r;
        if (cs->qe[i]->id && strcmp(cs->qe[i]->id, want_id) == 0)
            d = cs->qe[i];
    }
    if (!d)
        return err_set(err, EV_E_PLATFORM,
                       "DCAP: no QE identity with id \"%s\" among the collateral; fetch "
                       "/%s/certification/v4/qe/identity from Intel PCS",
                       want_id, q->tee_type == DCAP_TEE_TDX ? "tdx" : "sgx");
    int r = doc_verify(d, signer, signer_fp, "QE identity", cache, now, err);
    if (r < 0)
        return r;
    const qe_identity *qi = d->qe;
    PERR_CHECK(qi->version_e, err);
    if (qi->version != 2 && qi->version != 3)
        return err_set(err, EV_E_VERSION, "DCAP QE identity (%s): version %lld is not supported",
                       d->name, (long long)qi->version);
    if ((r = doc_window(&qi->dates, "QE identity", d->name, now, win, err)) < 0)
        return r;
    PERR_CHECK(qi->fields_e, err);
    const uint8_t *rep = q->qe_report;
    if (memcmp(qi->mrsigner, rep + SGXR_MRSIGNER, 32) != 0) {
        _cleanup_free_ char *got = hex_encode(rep + SGXR_MRSIGNER, 32);
        _cleanup_free_ char *want = hex_encode(qi->mrsigner, 32);
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: MRSIGNER %s differs from the QE identity's %s; the "
                       "quoting enclave is not Intel's",
                       got, want);
    }
    unsigned got_prod = le16(rep + SGXR_ISVPRODID);
    if ((int64_t)got_prod != qi->isvprodid)
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: ISVPRODID %u differs from the QE identity's %lld", got_prod,
                       (long long)qi->isvprodid);
    uint32_t ms = ev__le32(rep + SGXR_MISCSELECT);
    const uint8_t *m = qi->misc, *mm = qi->misc_mask;
    uint32_t want_ms = (uint32_t)m[0] << 24 | (uint32_t)m[1] << 16 | (uint32_t)m[2] << 8 | m[3];
    uint32_t ms_mask = (uint32_t)mm[0] << 24 | (uint32_t)mm[1] << 16 | (uint32_t)mm[2] << 8 | mm[3];
    if ((ms & ms_mask) != want_ms)
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: MISCSELECT 0x%08x under mask 0x%08x is not 0x%08x", ms,
                       ms_mask, want_ms);
    for (int b = 0; b < 16; b++)
        if ((rep[SGXR_ATTRIBUTES + b] & qi->attr_mask[b]) != qi->attr[b]) {
            _cleanup_free_ char *got = hex_encode(rep + SGXR_ATTRIBUTES, 16);
            return err_set(err, EV_E_CHAIN,
                           "DCAP QE report: ATTRIBUTES %s do not match the QE identity under "
                           "its mask (a debug or non-production QE?)",
                           got);
        }
    unsigned isvsvn = le16(rep + SGXR_ISVSVN);
    const isv_level *lv = NULL;
    if ((r = isvsvn_level(&lv, &qi->levels, isvsvn, err)) < 0)
        return r;
    if (!lv)
        return err_set(err, EV_E_TCB,
                       "DCAP QE identity (%s): QE ISVSVN %u is below every level; the quoting "
                       "enclave is not supported",
                       d->name, isvsvn);
    if ((r = take_outcome(&q->qe_status, q->advisories, &lv->out, err)) < 0)
        return r;
    q->have_qe_identity = true;
    return 0;
}

/* ---- the whole verification ---- */

void ev__dcap_result_free(dcap_result *r)
{
    if (!r)
        return;
    sk_X509_pop_free(r->chain, X509_free);
    json_decref(r->advisories);
    X509_free(r->tcb_signer);
    memset(r, 0, sizeof(*r));
}

/*
 * A verification context for the attestation key of the quote. Building an
 * EC key from its point costs a third of a signature verification (OpenSSL
 * sets up the group for every key); with a cache, the context made before
 * for the same 64 bytes is reused. New, owned by the caller.
 */
static int att_key(EVP_PKEY_CTX **out, const uint8_t xy[AK_SIZE], ev_chain_cache *cache, time_t now,
                   cista_error **err)
{
    ev__key_part key[] = {{"dcap/ak", 8}, {xy, AK_SIZE}};
    if (ev__cache_get(cache, key, ARRAY_LEN(key), now, NULL, out, NULL, 0))
        return 0;
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    int r = ak_pkey(&ak, xy, err);
    if (r < 0)
        return r;
    if (!(*out = verify_ctx_new(ak))) {
        (void)err_set_ssl(err, -EINVAL, "ECDSA: cannot initialise verification");
        return err_wrap(err, "DCAP quote signature");
    }
    ev__cache_val v = {.not_before = INT64_MIN, .not_after = INT64_MAX, .vctx = *out};
    ev__cache_put(cache, key, ARRAY_LEN(key), &v);
    return 0;
}

/* @pck: the verify_pck() context of the PCK's key (P-256). */
static int check_signatures(const dcap_result *q, const quote_sigdata *sd, const uint8_t *quote,
                            EVP_PKEY_CTX *pck, ev_chain_cache *cache, time_t now, cista_error **err)
{
    /* 1. the QE report, signed by the PCK */
    int r = p256_verify(pck, sd->qe_report, DCAP_SGX_REPORT_SIZE, sd->qe_sig, err);
    if (r == -EBADMSG) {
        err_clear(err);
        _cleanup_free_ char *fm = hex_encode(q->fmspc, 6);
        return err_set(err, EV_E_SIGNATURE,
                       "DCAP QE report signature by the PCK (FMSPC %s) does not verify over the "
                       "384-byte QE report; the QE report was modified or the PCK certificate "
                       "belongs to another platform",
                       fm);
    }
    if (r < 0)
        return err_wrap(err, "DCAP QE report signature");

    /* 2. QE report data = SHA-256(attestation key || QE auth data) || 32 zero bytes */
    uint8_t h[32];
    sha256_of(h, sd->ak, AK_SIZE, sd->qe_auth, sd->qe_auth_size, NULL, 0);
    const uint8_t *rd = sd->qe_report + SGXR_REPORTDATA;
    if (!crypto_memeq(h, rd, 32) || !ev__all_zero(rd + 32, 32)) {
        _cleanup_free_ char *want = hex_encode(h, 32);
        _cleanup_free_ char *got = hex_encode(rd, 32);
        return err_set(err, EV_E_NOKEY,
                       "DCAP QE report data %s%s is not SHA-256(attestation key || QE auth "
                       "data) = %s || zeros; the attestation key is not the one the quoting "
                       "enclave certified (attestation key or QE auth data modified)",
                       got, ev__all_zero(rd + 32, 32) ? "" : " (upper half not zero)", want);
    }

    /* 3. the quote (header + body), signed by the attestation key */
    __attribute__((cleanup(vctx_freep))) EVP_PKEY_CTX *ak = NULL;
    if ((r = att_key(&ak, sd->ak, cache, now, err)) < 0)
        return r;
    r = p256_verify(ak, quote, sd->signed_size, sd->sig, err);
    if (r == -EBADMSG) {
        err_clear(err);
        return err_set(err, EV_E_SIGNATURE,
                       "DCAP quote signature by the attestation key does not verify over bytes "
                       "0..%zu (header and %s body); the quote header or body was modified",
                       sd->signed_size - 1, tee_name(q->tee_type));
    }
    if (r < 0)
        return err_wrap(err, "DCAP quote signature");
    return 0;
}

int ev__dcap_verify(dcap_result *out, const uint8_t *quote, size_t size, uint32_t want_tee,
                    const ev_verify_opts *opts, X509 *root_override, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    if (!quote || size > EV_MAX_EVIDENCE)
        return err_set(err, EV_E_SIZE, "DCAP quote: %zu bytes is over the limit of %u", size,
                       EV_MAX_EVIDENCE);
    __attribute__((cleanup(ev__dcap_result_free))) dcap_result q;
    memset(&q, 0, sizeof(q));
    q.advisories = json_array();
    quote_sigdata sd;
    memset(&sd, 0, sizeof(sd));
    int r = parse_quote(&q, &sd, quote, size, want_tee, err);
    if (r < 0)
        return r;

    dcap_root root;
    if ((r = load_root(&root, root_override, err)) < 0)
        return r;
    time_t now = now_of(opts);
    ev_chain_cache *cache = opts->chain_cache;
    __attribute__((cleanup(coll_set_free))) coll_set cs;
    if ((r = coll_set_load(&cs, opts->collateral, err)) < 0)
        return r;
    __attribute__((cleanup(vctx_freep))) EVP_PKEY_CTX *pck = NULL;
    if ((r = verify_pck(&q, &pck, &sd, &cs, &root, now, cache, err)) < 0)
        return r;
    if ((r = check_signatures(&q, &sd, quote, pck, cache, now, err)) < 0)
        return r;

    /* collateral: TCB info and QE identity come together */
    if (cs.ntcb || cs.nqe) {
        uint8_t fp[32];
        bool fp_ok = false;
        if ((r = tcb_signer(&q.tcb_signer, fp, &fp_ok, &cs, &root, now, cache, err)) < 0)
            return r;
        const uint8_t *signer_fp = fp_ok ? fp : NULL;
        doc_span w = {0};
        if ((r = eval_qe_identity(&q, &cs, q.tcb_signer, signer_fp, now, cache, &w, err)) < 0)
            return r;
        if ((r = eval_tcb_info(&q, &cs, q.tcb_signer, signer_fp, now, cache, &w, err)) < 0)
            return r;
        char a[24], b[24];
        if (!w.from_s)
            ev__time_str(a, sizeof(a), w.from);
        if (!w.to_s)
            ev__time_str(b, sizeof(b), w.to);
        snprintf(q.collateral_window, sizeof(q.collateral_window), "%s..%s",
                 w.from_s ? w.from_s : a, w.to_s ? w.to_s : b);
        q.tcb_status = status_merge(status_merge(q.platform_status, q.module_status), q.qe_status);
    }

    if (q.tcb_status == EV_TCB_REVOKED) {
        _cleanup_free_ char *fm = hex_encode(q.fmspc, 6);
        return err_set(err, EV_E_REVOKED,
                       "DCAP TCB status is Revoked (platform %s, QE %s%s%s) for FMSPC %s: Intel "
                       "revoked this TCB",
                       ev__dcap_status_name(q.platform_status), ev__dcap_status_name(q.qe_status),
                       q.tee_type == DCAP_TEE_TDX ? ", TDX module " : "",
                       q.tee_type == DCAP_TEE_TDX ? ev__dcap_status_name(q.module_status) : "", fm);
    }
    if (opts->tcb_max_status > 0) {
        if (q.tcb_status == EV_TCB_UNKNOWN)
            return err_set(err, EV_E_POLICY,
                           "DCAP TCB status is unknown: no TCB info and QE identity collateral "
                           "was given, but the caller requires at most %s; pass the collateral "
                           "(--collateral DIR)",
                           ev__dcap_status_name(opts->tcb_max_status));
        if (q.tcb_status > opts->tcb_max_status) {
            _cleanup_free_ char *adv = js_dump_compact(q.advisories);
            return err_set(err, EV_E_POLICY,
                           "DCAP TCB status is %s (advisories %s), worse than the %s the caller "
                           "accepts; the platform needs updates",
                           ev__dcap_status_name(q.tcb_status), adv,
                           ev__dcap_status_name(opts->tcb_max_status));
        }
    }
    const uint8_t *rd = q.body + (q.tee_type == DCAP_TEE_TDX ? TDB_REPORTDATA : SGXR_REPORTDATA);
    char what[32];
    snprintf(what, sizeof(what), "DCAP %s", tee_name(q.tee_type));
    if ((r = ev__check_report_data(opts->report_data, rd, what, "quote", err)) < 0)
        return r;
    *out = q;
    memset(&q, 0, sizeof(q));
    return 0;
}

/* ---- claims pieces ---- */

/*
 * The claims are built with the _nocheck jansson calls: keys are literals,
 * values are hex, numbers or fixed ASCII names (UTF-8 checks and json_pack's
 * format parsing were a tenth of a warm verification).
 */
#define SET(o, k, v) json_object_set_new_nocheck((o), (k), (v))

json_t *ev__dcap_signers_json(const dcap_result *r)
{
    json_t *a = json_array();
    for (int i = 0; i < sk_X509_num(r->chain); i++) {
        const char *role = i == 0                                ? "pck"
                           : i == sk_X509_num(r->chain) - 1      ? "intel-sgx-root-ca"
                           : strcmp(r->pck_ca, "processor") == 0 ? "pck-processor-ca"
                                                                 : "pck-platform-ca";
        json_array_append_new(
            a, ev__cert_json(role, sk_X509_value(r->chain, i), i == sk_X509_num(r->chain) - 1));
    }
    if (r->tcb_signer)
        json_array_append_new(a, ev__cert_json("tcb-signing", r->tcb_signer, false));
    return a;
}

static json_t *status_json(int status)
{
    return json_string_nocheck(ev__dcap_status_name(status));
}

json_t *ev__dcap_tcb_json(const dcap_result *r)
{
    json_t *sgx = json_array();
    for (int i = 0; i < 16; i++)
        json_array_append_new(sgx, json_integer(r->pck_comp[i]));
    json_t *comp = json_object();
    SET(comp, "sgx", sgx);
    SET(comp, "pcesvn", json_integer((json_int_t)r->pcesvn));
    SET(comp, "cpusvn", ev__json_hex(r->cpusvn, 16));
    json_t *t = json_object();
    SET(t, "status", status_json(r->tcb_status));
    SET(t, "components", comp);
    SET(t, "advisories", json_deep_copy(r->advisories));
    SET(t, "fmspc", ev__json_hex(r->fmspc, 6));
    SET(t, "pce_id", ev__json_hex(r->pceid, 2));
    SET(t, "collateral", json_boolean(r->have_tcb_info && r->have_qe_identity));
    if (r->have_tcb_info) {
        SET(t, "platform_status", status_json(r->platform_status));
        if (r->tcb_date[0])
            SET(t, "date", json_string(r->tcb_date));
    }
    if (r->module_status)
        SET(t, "module_status", status_json(r->module_status));
    if (r->have_qe_identity)
        SET(t, "qe_status", status_json(r->qe_status));
    if (r->collateral_window[0])
        SET(t, "collateral_window", json_string(r->collateral_window));
    return t;
}

void ev__dcap_common_json(json_t *obj, const dcap_result *r)
{
    const uint8_t *qe = r->qe_report;
    SET(obj, "version", json_integer(r->version));
    SET(obj, "qe_vendor_id", ev__json_hex(r->qe_vendor_id, 16));
    SET(obj, "user_data", ev__json_hex(r->user_data, 20));
    json_t *q = json_object();
    SET(q, "mrenclave", ev__json_hex(qe + SGXR_MRENCLAVE, 32));
    SET(q, "mrsigner", ev__json_hex(qe + SGXR_MRSIGNER, 32));
    SET(q, "isv_prod_id", json_integer((json_int_t)le16(qe + SGXR_ISVPRODID)));
    SET(q, "isv_svn", json_integer((json_int_t)le16(qe + SGXR_ISVSVN)));
    SET(obj, "qe", q);
    json_t *pck = json_object();
    SET(pck, "fmspc", ev__json_hex(r->fmspc, 6));
    SET(pck, "pce_id", ev__json_hex(r->pceid, 2));
    SET(pck, "ca", json_string_nocheck(r->pck_ca ? r->pck_ca : "?"));
    if (r->sgx_type >= 0)
        SET(pck, "sgx_type", json_integer(r->sgx_type));
    SET(obj, "pck", pck);
    SET(obj, "trailing_bytes", json_integer((json_int_t)r->trailing_bytes));
}
