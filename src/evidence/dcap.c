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
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
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

/* ---- collateral ---- */

typedef struct {
    char *name; /* where it came from, for messages */
    char *text; /* the signed JSON text, NUL-terminated copy */
    size_t size;
    uint8_t sig[SIG_SIZE]; /* r || s, big-endian */
} signed_doc;

typedef struct {
    STACK_OF(X509) * certs;
    STACK_OF(X509_CRL) * crls;
    signed_doc tcb[MAX_DOCS], qe[MAX_DOCS];
    size_t ntcb, nqe;
    /* parsing PEM through opts->chain_cache (see certs_load); all borrowed, cache may be NULL */
    ev_chain_cache *cache;
    X509 *root;
    time_t now;
} coll_set;

/*
 * x509_certs_load() of @data into *out (appended), through the cache when
 * there is one: certificates parsed before from byte-identical text
 * (scope "dcap/pem/<SHA-256 of the bytes>", under the pinned root) are
 * taken as new references instead of being parsed again. Parsing is a
 * function of the bytes alone; nothing here is trusted because it was
 * cached, every check on the certificates still runs. The entry lives while
 * "now" is inside the certificates' validity (outside it they fail the
 * chain checks anyway and are parsed again).
 */
static int certs_load(STACK_OF(X509) * *out, const void *data, size_t size, const coll_set *s,
                      cista_error **err)
{
    if (!s->cache || !s->root)
        return x509_certs_load(out, data, size, err);
    uint8_t d[32];
    _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
    crypto_hash_update(h, data, size);
    crypto_hash_final(h, d);
    _cleanup_free_ char *hex = hex_encode(d, sizeof(d));
    char scope[96];
    snprintf(scope, sizeof(scope), "dcap/pem/%s", hex);
    STACK_OF(X509) *got = NULL;
    if (!ev__chain_cache_get(&got, s->cache, scope, s->root, s->now)) {
        int r = x509_certs_load(&got, data, size, err);
        if (r < 0)
            return r;
        ev__chain_cache_put(s->cache, scope, s->root, got);
    }
    if (!*out) {
        *out = got;
        return 0;
    }
    while (sk_X509_num(got) > 0)
        if (!sk_X509_push(*out, sk_X509_shift(got)))
            abort();
    sk_X509_free(got);
    return 0;
}

static void coll_set_free(coll_set *s)
{
    sk_X509_pop_free(s->certs, X509_free);
    sk_X509_CRL_pop_free(s->crls, X509_CRL_free);
    for (size_t i = 0; i < s->ntcb; i++) {
        free(s->tcb[i].name);
        free(s->tcb[i].text);
    }
    for (size_t i = 0; i < s->nqe; i++) {
        free(s->qe[i].name);
        free(s->qe[i].text);
    }
}

static int add_doc(coll_set *s, bool tcb, const char *name, const char *text, size_t size,
                   const char *sig_hex, cista_error **err)
{
    signed_doc *d = tcb ? &s->tcb[s->ntcb] : &s->qe[s->nqe];
    const char *what = tcb ? "TCB info" : "QE identity";
    if ((tcb ? s->ntcb : s->nqe) >= MAX_DOCS)
        return err_set(err, EV_E_FORMAT, "DCAP collateral: more than %d %s documents", MAX_DOCS,
                       what);
    if (!sig_hex || strlen(sig_hex) != 2 * SIG_SIZE)
        return err_set(err, EV_E_FORMAT,
                       "DCAP collateral %s: the %s signature must be %d hex digits (r || s), got "
                       "%zu",
                       name, what, 2 * SIG_SIZE, sig_hex ? strlen(sig_hex) : 0);
    _cleanup_err_ cista_error *e = NULL;
    if (hex_decode_to(d->sig, SIG_SIZE, sig_hex, &e) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP collateral %s: %s signature is not hex", name, what);
    d->name = xstrdup(name);
    d->text = xmalloc(size + 1);
    memcpy(d->text, text, size);
    d->text[size] = 0;
    d->size = size;
    if (tcb)
        s->ntcb++;
    else
        s->nqe++;
    return 0;
}

static int add_pem_certs(coll_set *s, const char *name, const char *pem, cista_error **err)
{
    if (!pem)
        return 0;
    if (certs_load(&s->certs, pem, strlen(pem), s, err) < 0)
        return err_wrap(err, "DCAP collateral %s: issuer chain", name);
    return 0;
}

static int add_hex_crl(coll_set *s, const char *name, const char *hex, cista_error **err)
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
static int add_pcs_json(coll_set *s, const char *name, const char *text, size_t size, json_t *root,
                        bool tcb, cista_error **err)
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
static int add_bundle(coll_set *s, const char *name, json_t *root, cista_error **err)
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

static int coll_add(coll_set *s, const char *name, const uint8_t *data, size_t size,
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
    _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
    if (x509_certs_load(&s->certs, data, size, &e1) == 0)
        return 0;
    if (x509_crls_load(&s->crls, data, size, &e2) == 0)
        return 0;
    log_debug("DCAP collateral: ignoring %s (not JSON, a certificate or a CRL)", name);
    return 0;
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

static int load_root(X509 **out, X509 *override, cista_error **err)
{
    if (override) {
        X509_up_ref(override);
        *out = override;
        return 0;
    }
    _cleanup_x509_ X509 *root = NULL;
    int r = ev__cert_embedded(&root, ev__intel_sgx_root_ca_pem, err);
    if (r < 0)
        return err_wrap(err, "built-in Intel SGX Root CA");
    uint8_t fp[32];
    if ((r = x509_cert_sha256(fp, root, err)) < 0)
        return r;
    _cleanup_free_ char *hex = hex_encode(fp, 32);
    if (strcmp(hex, DCAP_ROOT_SHA256_HEX) != 0)
        return err_set(err, EV_E_CHAIN, "built-in Intel SGX Root CA does not match its pin");
    *out = steal_ptr(&root);
    return 0;
}

static bool cn_is(X509 *c, const char *want)
{
    _cleanup_free_ char *cn = x509_subject_cn(c);
    return cn && strcmp(cn, want) == 0;
}

/* Untrusted intermediates: @extra (may be NULL) plus the collateral's, minus roots. */
static int intermediates(STACK_OF(X509) * *out, STACK_OF(X509) * extra, const coll_set *cs,
                         X509 *root, cista_error **err)
{
    uint8_t rfp[32], fp[32];
    int r = x509_cert_sha256(rfp, root, err);
    if (r < 0)
        return r;
    STACK_OF(X509) *inter = sk_X509_new_null();
    if (!inter)
        abort();
    for (int pass = 0; pass < 2; pass++) {
        STACK_OF(X509) *src = pass == 0 ? extra : cs->certs;
        for (int i = 0; i < sk_X509_num(src); i++) {
            X509 *c = sk_X509_value(src, i);
            /* the pinned root itself (self-signed) is not an intermediate; matching it by
             * fingerprint first spares a self-signature verification per copy */
            bool have_fp = x509_cert_sha256(fp, c, NULL) == 0;
            if (have_fp && memcmp(fp, rfp, 32) == 0)
                continue;
            if (x509_is_self_signed(c)) {
                /* other vendors' roots in a shared collateral directory are not ours */
                if (pass == 1 && !cn_is(c, "Intel SGX Root CA"))
                    continue;
                _cleanup_free_ char *subj = x509_subject_str(c);
                _cleanup_free_ char *got = hex_encode(fp, 32);
                _cleanup_free_ char *want = hex_encode(rfp, 32);
                sk_X509_pop_free(inter, X509_free);
                return err_set(err, EV_E_CHAIN,
                               "DCAP: the root certificate '%s' given %s is not the pinned "
                               "Intel SGX Root CA: SHA-256 %s, expected %s",
                               subj, pass == 0 ? "in the quote" : "in the collateral", got, want);
            }
            X509_up_ref(c);
            sk_X509_push(inter, c);
        }
    }
    *out = inter;
    return 0;
}

/* The intermediates() of @extra and @cs, and a stack holding just @root: a chain's inputs. */
static int chain_inputs(STACK_OF(X509) * *out_inter, STACK_OF(X509) * *out_roots,
                        STACK_OF(X509) * extra, const coll_set *cs, X509 *root, cista_error **err)
{
    int r = intermediates(out_inter, extra, cs, root, err);
    if (r < 0)
        return r;
    *out_roots = sk_X509_new_null();
    if (!*out_roots)
        abort();
    X509_up_ref(root);
    sk_X509_push(*out_roots, root);
    return 0;
}

/*
 * The verified-chain cache (opts->chain_cache) for DCAP. An entry is keyed
 * by the leaf and a scope "dcap/<what>/<digest>" whose digest covers every
 * other input of the verification: the pinned root, each untrusted
 * intermediate offered and each CRL (DER). A different input therefore
 * never hits. The cache checks "now" against the chain's validity; the CRLs'
 * own windows are checked here (crls_current), so a CRL outside its window
 * bypasses the cache and the full verification reports it.
 */
#define SCOPE_DIGEST 32 /* SHA-256 in the scope: 64 hex; chain_cache.c allows < 96 chars */

static void hash_cert(crypto_hash *h, X509 *c)
{
    uint8_t fp[32];
    if (x509_cert_sha256(fp, c, NULL) < 0)
        memset(fp, 0, sizeof(fp)); /* cannot happen for a parsed certificate */
    crypto_hash_update(h, "C", 1);
    crypto_hash_update(h, fp, sizeof(fp));
}

static void cache_scope(char *out, size_t size, const char *what, STACK_OF(X509) * inter,
                        X509 *root, STACK_OF(X509_CRL) * crls, const uint8_t *extra,
                        size_t extra_size)
{
    _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
    crypto_hash_update(h, what, strlen(what) + 1);
    hash_cert(h, root);
    for (int i = 0; i < sk_X509_num(inter); i++)
        hash_cert(h, sk_X509_value(inter, i));
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        unsigned char *der = NULL;
        int n = i2d_X509_CRL(sk_X509_CRL_value(crls, i), &der);
        if (n <= 0)
            abort();
        uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        crypto_hash_update(h, "R", 1);
        crypto_hash_update(h, len, sizeof(len));
        crypto_hash_update(h, der, (size_t)n);
        OPENSSL_free(der);
    }
    if (extra_size) {
        crypto_hash_update(h, "X", 1);
        crypto_hash_update(h, extra, extra_size);
    }
    uint8_t d[32];
    crypto_hash_final(h, d);
    _cleanup_free_ char *hex = hex_encode(d, SCOPE_DIGEST);
    snprintf(out, size, "dcap/%s/%s", what, hex);
}

/* Every CRL is inside [thisUpdate, nextUpdate) at @now: only then may a cached chain be used. */
static bool crls_current(STACK_OF(X509_CRL) * crls, time_t now)
{
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        const ASN1_TIME *lu = X509_CRL_get0_lastUpdate(crl), *nu = X509_CRL_get0_nextUpdate(crl);
        if (!lu || X509_cmp_time(lu, &now) != -1 || (nu && X509_cmp_time(nu, &now) != 1))
            return false;
    }
    return true;
}

/* The cache to use for a chain verified with @crls at @now (NULL: verify in full). */
static ev_chain_cache *chain_cache_for(ev_chain_cache *c, STACK_OF(X509_CRL) * crls, time_t now)
{
    return c && crls_current(crls, now) ? c : NULL;
}

static int verify_pck_chain(dcap_result *q, const quote_sigdata *sd, const coll_set *cs, X509 *root,
                            time_t now, ev_chain_cache *cache, cista_error **err)
{
    _cleanup_x509_stack_ STACK_OF(X509) *certs = NULL;
    _cleanup_err_ cista_error *e = NULL;
    if (certs_load(&certs, sd->pck_pem, sd->pck_pem_size, cs, &e) < 0)
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
    STACK_OF(X509) *chain = NULL;
    cache = chain_cache_for(cache, cs->crls, now);
    char scope[96] = "";
    if (cache)
        cache_scope(scope, sizeof(scope), "pck", inter, root, cs->crls, NULL, 0);
    if (!ev__chain_cache_get(&chain, cache, scope, leaf, now)) {
        r = x509_verify_chain(&chain, leaf, inter, roots, &xo, err);
        if (r < 0)
            return err_wrap(err, "DCAP PCK certificate chain (PCK -> PCK CA -> Intel SGX Root CA)");
        ev__chain_cache_put(cache, scope, leaf, chain);
    }
    q->chain = chain;
    if (sk_X509_num(chain) != 3)
        return err_set(err, EV_E_CHAIN, "DCAP PCK chain has %d certificates, expected 3",
                       sk_X509_num(chain));
    X509 *ca = sk_X509_value(chain, 1);
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
    return 0;
}

static time_t not_before(X509 *c)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (ASN1_TIME_to_tm(X509_get0_notBefore(c), &tm) != 1)
        return 0;
    return timegm(&tm);
}

/*
 * The TCB signing certificate, chained to the root at @now (root CRL
 * applied). Certificates given in the collateral come first; without any,
 * the built-in one is used, checked at the later of @now and its notBefore
 * (Intel re-issues it with the same key, so older collateral verifies).
 */
static int tcb_signer(X509 **out, const coll_set *cs, X509 *root, time_t now, ev_chain_cache *cache,
                      cista_error **err)
{
    _cleanup_x509_stack_ STACK_OF(X509) *inter = NULL, *roots = NULL;
    int r = chain_inputs(&inter, &roots, NULL, cs, root, err);
    if (r < 0)
        return r;
    x509_verify_opts xo = {.at = now, .crls = cs->crls, .crl_mode = X509_CRL_AVAILABLE};
    for (int i = 0; i < sk_X509_num(inter); i++) {
        X509 *c = sk_X509_value(inter, i);
        if (!cn_is(c, "Intel SGX TCB Signing"))
            continue;
        ev_chain_cache *cc = chain_cache_for(cache, cs->crls, now);
        char scope[96] = "";
        if (cc)
            cache_scope(scope, sizeof(scope), "tcb", inter, root, cs->crls, NULL, 0);
        if (!ev__chain_cache_get(NULL, cc, scope, c, now)) {
            _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
            r = x509_verify_chain(&chain, c, inter, roots, &xo, err);
            if (r < 0)
                return err_wrap(err, "DCAP TCB signing certificate chain (TCB Signing -> Intel "
                                     "SGX Root CA)");
            ev__chain_cache_put(cc, scope, c, chain);
        }
        X509_up_ref(c);
        *out = c;
        return 0;
    }
    _cleanup_x509_ X509 *builtin = NULL;
    if ((r = ev__cert_embedded(&builtin, g_tcb_signing_pem, err)) < 0)
        return err_wrap(err, "built-in Intel SGX TCB Signing certificate");
    time_t nb = not_before(builtin);
    x509_verify_opts bo = {.at = now > nb ? now : nb};
    /* no CRLs in this verification (they are applied below, every time) */
    char scope[96] = "";
    if (cache)
        cache_scope(scope, sizeof(scope), "tcbb", NULL, root, NULL, NULL, 0);
    if (!ev__chain_cache_get(NULL, cache, scope, builtin, bo.at)) {
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        if ((r = x509_verify_chain(&chain, builtin, NULL, roots, &bo, err)) < 0)
            return err_wrap(err, "built-in Intel SGX TCB Signing certificate");
        ev__chain_cache_put(cache, scope, builtin, chain);
    }
    /* the root CA CRLs given (their window was checked with the PCK chain) */
    for (int i = 0; i < sk_X509_CRL_num(cs->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(cs->crls, i);
        X509_REVOKED *rev = NULL;
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(root)) == 0 &&
            X509_CRL_verify(crl, X509_get0_pubkey(root)) == 1 &&
            X509_CRL_get0_by_cert(crl, &rev, builtin) == 1)
            return err_set(err, EV_E_REVOKED,
                           "the built-in Intel SGX TCB Signing certificate is revoked by the "
                           "given Intel SGX Root CA CRL");
    }
    *out = steal_ptr(&builtin);
    return 0;
}

/*
 * The signature of @d by @signer. With @cache, a signature that verified
 * before over byte-identical text and signature by the same signing
 * certificate (its chain is checked by the caller on every call) is not
 * verified again; the entry lives while "now" is inside the signer's
 * validity. The document's own window (doc_window) is checked on every call.
 */
static int doc_verify(const signed_doc *d, X509 *signer, const char *what, ev_chain_cache *cache,
                      time_t now, cista_error **err)
{
    char scope[96] = "";
    if (cache) {
        uint8_t len[8];
        ev__put_le64(len, (uint64_t)d->size);
        _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
        crypto_hash_update(h, len, sizeof(len));
        crypto_hash_update(h, d->text, d->size);
        crypto_hash_update(h, d->sig, SIG_SIZE);
        uint8_t dg[32];
        crypto_hash_final(h, dg);
        cache_scope(scope, sizeof(scope), "doc", NULL, signer, NULL, dg, sizeof(dg));
        if (ev__chain_cache_get(NULL, cache, scope, signer, now))
            return 0;
    }
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
    if (cache) {
        STACK_OF(X509) *one = sk_X509_new_null();
        if (!one || !sk_X509_push(one, signer))
            abort();
        ev__chain_cache_put(cache, scope, signer, one);
        sk_X509_free(one);
    }
    return 0;
}

/* issueDate <= now <= nextUpdate; also narrows the reported window. */
static int doc_window(json_t *doc, const char *what, const char *name, time_t now, time_t *win_from,
                      time_t *win_to, cista_error **err)
{
    const char *is = NULL, *nu = NULL;
    time_t ti = 0, tn = 0;
    if (js_get_string(&is, doc, "issueDate", true, what, err) < 0 ||
        js_get_string(&nu, doc, "nextUpdate", true, what, err) < 0)
        return EV_E_FORMAT;
    if (time_parse(&ti, is) < 0 || time_parse(&tn, nu) < 0)
        return err_set(err, EV_E_FORMAT,
                       "DCAP %s (%s): issueDate \"%s\" / nextUpdate \"%s\" are "
                       "not RFC 3339 UTC times",
                       what, name, is, nu);
    char at[32];
    ev__time_str(at, sizeof(at), now);
    if (now < ti || now > tn)
        return err_set(err, EV_E_EXPIRED,
                       "DCAP %s (%s) is outside its validity window at %s: issueDate %s, "
                       "nextUpdate %s; fetch current collateral from Intel PCS or verify at a "
                       "time inside the window",
                       what, name, at, is, nu);
    if (ti > *win_from)
        *win_from = ti;
    if (!*win_to || tn < *win_to)
        *win_to = tn;
    return 0;
}

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

static int add_advisories(json_t *dst, json_t *level, const char *what, cista_error **err)
{
    json_t *adv = NULL;
    if (js_get_array(&adv, level, "advisoryIDs", false, what, err) < 0)
        return EV_E_FORMAT;
    size_t i;
    json_t *v;
    json_array_foreach(adv, i, v)
    {
        if (!json_is_string(v))
            return err_set(err, EV_E_FORMAT, "DCAP %s: advisoryIDs must be strings", what);
        json_add_unique(dst, json_string_value(v));
    }
    return 0;
}

/* First level of @levels (newest first) whose tcb.isvsvn <= @isvsvn. */
static int isvsvn_level(json_t **out, json_t *levels, unsigned isvsvn, const char *what,
                        cista_error **err)
{
    size_t i;
    json_t *lv;
    json_array_foreach(levels, i, lv)
    {
        json_t *tcb = NULL;
        int64_t s = 0;
        if (js_get_object(&tcb, lv, "tcb", true, what, err) < 0 ||
            js_get_int(&s, tcb, "isvsvn", true, what, err) < 0)
            return EV_E_FORMAT;
        if (s <= (int64_t)isvsvn) {
            *out = lv;
            return 0;
        }
    }
    *out = NULL;
    return 0;
}

/* ---- TCB info ---- */

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

static char *svn_list(const uint8_t *v, size_t n)
{
    char buf[16 * 4 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, i ? ",%u" : "%u", v[i]);
    return xstrdup(buf);
}

static int eval_platform(dcap_result *q, json_t *info, int version, const char *what,
                         cista_error **err)
{
    bool tdx = q->tee_type == DCAP_TEE_TDX;
    const uint8_t *tee_svn = tdx ? q->body + TDB_TEE_TCB_SVN : NULL;
    bool modules = tdx && json_object_get(info, "tdxModuleIdentities") != NULL;
    size_t skip = tdx && modules && tee_svn[1] > 0 ? 2 : 0;
    json_t *levels = NULL;
    if (js_get_array(&levels, info, "tcbLevels", true, what, err) < 0)
        return EV_E_FORMAT;
    char why[512] = "the TCB info has no levels";
    size_t best_miss = SIZE_MAX;
    size_t i;
    json_t *lv;
    json_array_foreach(levels, i, lv)
    {
        json_t *tcb = NULL;
        uint8_t sgx[16], tdxc[16];
        int64_t pcesvn = 0;
        int r;
        if (js_get_object(&tcb, lv, "tcb", true, what, err) < 0)
            return EV_E_FORMAT;
        if ((r = level_sgx(sgx, &pcesvn, tcb, version, what, err)) < 0)
            return r;
        if (tdx && (r = level_tdx(tdxc, tcb, what, err)) < 0)
            return r;
        const char *date = NULL;
        if (js_get_string(&date, lv, "tcbDate", false, what, err) < 0)
            return EV_E_FORMAT;
        /* count the misses; the reasons shown are those of the closest level */
        size_t miss = 0, o = 0;
        char list[400] = "";
#define MISS(...)                                                                                  \
    do {                                                                                           \
        if (o < sizeof(list))                                                                      \
            o += (size_t)snprintf(list + o, sizeof(list) - o, __VA_ARGS__);                        \
        miss++;                                                                                    \
    } while (0)
        for (size_t c = 0; c < 16; c++)
            if (sgx[c] > q->pck_comp[c])
                MISS("%ssgxtcbcomponents[%zu] >= %u (PCK has %u)", miss ? ", " : "", c, sgx[c],
                     q->pck_comp[c]);
        if (pcesvn > q->pcesvn)
            MISS("%spcesvn >= %lld (PCK has %u)", miss ? ", " : "", (long long)pcesvn, q->pcesvn);
        for (size_t c = skip; tdx && c < 16; c++)
            if (tdxc[c] > tee_svn[c])
                MISS("%stdxtcbcomponents[%zu] >= %u (TEE_TCB_SVN has %u)", miss ? ", " : "", c,
                     tdxc[c], tee_svn[c]);
#undef MISS
        bool ok = miss == 0;
        if (!ok && miss < best_miss) {
            best_miss = miss;
            snprintf(why, sizeof(why), "the closest level %zu (tcbDate %s) needs %s", i,
                     date ? date : "?", list);
        }
        if (!ok)
            continue;
        if ((r = level_status(&q->platform_status, lv, what, err)) < 0)
            return r;
        if ((r = add_advisories(q->advisories, lv, what, err)) < 0)
            return r;
        snprintf(q->tcb_date, sizeof(q->tcb_date), "%s", date ? date : "");
        return 0;
    }
    _cleanup_free_ char *pc = svn_list(q->pck_comp, 16);
    _cleanup_free_ char *ts = tdx ? svn_list(tee_svn, 16) : xstrdup("-");
    return err_set(err, EV_E_TCB,
                   "DCAP %s: no TCB level matches this platform (PCK SGX components %s, PCESVN "
                   "%u%s%s): %s; the platform TCB is not supported (update microcode/BIOS%s)",
                   what, pc, q->pcesvn, tdx ? ", TEE_TCB_SVN " : "", tdx ? ts : "", why,
                   tdx ? " or the TDX module" : "");
}

static int eval_module(dcap_result *q, json_t *info, const char *what, cista_error **err)
{
    const uint8_t *tee_svn = q->body + TDB_TEE_TCB_SVN;
    json_t *ids = NULL, *mod = NULL;
    if (js_get_array(&ids, info, "tdxModuleIdentities", false, what, err) < 0 ||
        js_get_object(&mod, info, "tdxModule", false, what, err) < 0)
        return EV_E_FORMAT;
    char id[16];
    snprintf(id, sizeof(id), "TDX_%02X", tee_svn[1]);
    bool by_identity = ids && tee_svn[1] > 0;
    if (by_identity) {
        mod = NULL;
        size_t i;
        json_t *m;
        json_array_foreach(ids, i, m)
        {
            const char *mid = NULL;
            if (js_get_string(&mid, m, "id", true, what, err) < 0)
                return EV_E_FORMAT;
            if (strcasecmp(mid, id) == 0)
                mod = m;
        }
        if (!mod)
            return err_set(err, EV_E_TCB,
                           "DCAP %s: no TDX module identity %s for TDX module major version %u "
                           "(TEE_TCB_SVN[1]); the module is not supported",
                           what, id, tee_svn[1]);
    }
    if (!mod)
        return 0; /* TCB info v2-style without module data */
    uint8_t signer[48], attr[8], mask[8];
    int r;
    if ((r = hex_field(signer, 48, mod, "mrsigner", what, err)) < 0 ||
        (r = hex_field(attr, 8, mod, "attributes", what, err)) < 0 ||
        (r = hex_field(mask, 8, mod, "attributesMask", what, err)) < 0)
        return r;
    if (memcmp(signer, q->body + TDB_MRSIGNERSEAM, 48) != 0) {
        _cleanup_free_ char *got = hex_encode(q->body + TDB_MRSIGNERSEAM, 48);
        _cleanup_free_ char *want = hex_encode(signer, 48);
        return err_set(err, EV_E_CHAIN,
                       "DCAP TDX module: MRSIGNERSEAM %s differs from the TCB info's mrsigner %s "
                       "(%s); the TDX module is not the one Intel lists",
                       got, want, by_identity ? id : "tdxModule");
    }
    for (int b = 0; b < 8; b++)
        if ((q->body[TDB_SEAMATTRIBUTES + b] & mask[b]) != attr[b]) {
            _cleanup_free_ char *got = hex_encode(q->body + TDB_SEAMATTRIBUTES, 8);
            return err_set(err, EV_E_CHAIN,
                           "DCAP TDX module: SEAMATTRIBUTES %s do not match the TCB info's "
                           "attributes under its mask",
                           got);
        }
    if (!by_identity)
        return 0;
    json_t *levels = NULL, *lv = NULL;
    if (js_get_array(&levels, mod, "tcbLevels", true, what, err) < 0)
        return EV_E_FORMAT;
    if ((r = isvsvn_level(&lv, levels, tee_svn[0], what, err)) < 0)
        return r;
    if (!lv)
        return err_set(err, EV_E_TCB,
                       "DCAP %s: TDX module %s SVN %u (TEE_TCB_SVN[0]) is below every level of "
                       "its identity; the module is not supported",
                       what, id, tee_svn[0]);
    if ((r = level_status(&q->module_status, lv, what, err)) < 0)
        return r;
    return add_advisories(q->advisories, lv, what, err);
}

static int parse_doc(json_t **out, const signed_doc *d, const char *what, cista_error **err)
{
    _cleanup_err_ cista_error *e = NULL;
    if (js_parse_object(out, d->text, d->size, EV_MAX_EVIDENCE, what, &e) < 0)
        return err_set(err, EV_E_FORMAT, "DCAP %s (%s): %s", what, d->name, e->msg);
    return 0;
}

static int fmspc_of(uint8_t out[6], json_t *info)
{
    const char *s = json_string_value(json_object_get(info, "fmspc"));
    _cleanup_err_ cista_error *e = NULL;
    if (!s || strlen(s) != 12 || hex_decode_to(out, 6, s, &e) < 0)
        return -1;
    return 0;
}

static int eval_tcb_info(dcap_result *q, const coll_set *cs, X509 *signer, time_t now,
                         ev_chain_cache *cache, time_t *win_from, time_t *win_to, cista_error **err)
{
    const char *want_id = q->tee_type == DCAP_TEE_TDX ? "TDX" : "SGX";
    _cleanup_free_ char *fm = hex_encode(q->fmspc, 6);
    const signed_doc *d = NULL;
    _cleanup_json_ json_t *info = NULL;
    _cleanup_free_ char *seen = xstrdup("");
    for (size_t i = 0; i < cs->ntcb && !d; i++) {
        _cleanup_json_ json_t *doc = NULL;
        int r = parse_doc(&doc, &cs->tcb[i], "TCB info", err);
        if (r < 0)
            return r;
        uint8_t f[6];
        const char *id = json_string_value(json_object_get(doc, "id"));
        bool f_ok = fmspc_of(f, doc) == 0;
        /* TDX TCB info always has "id"; SGX v2 has none */
        bool id_ok = id ? strcmp(id, want_id) == 0 : q->tee_type == DCAP_TEE_SGX;
        if (f_ok && memcmp(f, q->fmspc, 6) == 0 && id_ok) {
            d = &cs->tcb[i];
            info = steal_ptr(&doc);
        } else {
            _cleanup_free_ char *fh = f_ok ? hex_encode(f, 6) : xstrdup("?");
            char *n = xasprintf("%s%s%s %s (%s)", seen, *seen ? ", " : "", id ? id : "?", fh,
                                cs->tcb[i].name);
            free(seen);
            seen = n;
        }
    }
    if (!d)
        return err_set(err, EV_E_PLATFORM,
                       "DCAP: no %s TCB info for the PCK's FMSPC %s among the collateral (given: "
                       "%s); fetch /%s/certification/v4/tcb?fmspc=%s from Intel PCS",
                       want_id, fm, seen, q->tee_type == DCAP_TEE_TDX ? "tdx" : "sgx", fm);
    int r = doc_verify(d, signer, "TCB info", cache, now, err);
    if (r < 0)
        return r;
    int64_t version = 0;
    if (js_get_int(&version, info, "version", true, "TCB info", err) < 0)
        return EV_E_FORMAT;
    if (q->tee_type == DCAP_TEE_TDX ? version != 3 : (version != 2 && version != 3))
        return err_set(err, EV_E_VERSION,
                       "DCAP TCB info (%s): version %lld is not supported for %s (%s)", d->name,
                       (long long)version, want_id, q->tee_type == DCAP_TEE_TDX ? "3" : "2 or 3");
    if ((r = doc_window(info, "TCB info", d->name, now, win_from, win_to, err)) < 0)
        return r;
    uint8_t pceid[2];
    if ((r = hex_field(pceid, 2, info, "pceId", "TCB info", err)) < 0)
        return r;
    if (memcmp(pceid, q->pceid, 2) != 0)
        return err_set(err, EV_E_PLATFORM,
                       "DCAP TCB info (%s): pceId %02x%02x differs from the PCK's PCE-ID "
                       "%02x%02x",
                       d->name, pceid[0], pceid[1], q->pceid[0], q->pceid[1]);
    if ((r = eval_platform(q, info, (int)version, "TCB info", err)) < 0)
        return r;
    if (q->tee_type == DCAP_TEE_TDX && (r = eval_module(q, info, "TCB info", err)) < 0)
        return r;
    q->have_tcb_info = true;
    return 0;
}

/* ---- QE identity ---- */

static int eval_qe_identity(dcap_result *q, const coll_set *cs, X509 *signer, time_t now,
                            ev_chain_cache *cache, time_t *win_from, time_t *win_to,
                            cista_error **err)
{
    const char *want_id = q->tee_type == DCAP_TEE_TDX ? "TD_QE" : "QE";
    const signed_doc *d = NULL;
    _cleanup_json_ json_t *qe = NULL;
    for (size_t i = 0; i < cs->nqe && !d; i++) {
        _cleanup_json_ json_t *doc = NULL;
        int r = parse_doc(&doc, &cs->qe[i], "QE identity", err);
        if (r < 0)
            return r;
        const char *id = json_string_value(json_object_get(doc, "id"));
        if (id && strcmp(id, want_id) == 0) {
            d = &cs->qe[i];
            qe = steal_ptr(&doc);
        }
    }
    if (!d)
        return err_set(err, EV_E_PLATFORM,
                       "DCAP: no QE identity with id \"%s\" among the collateral; fetch "
                       "/%s/certification/v4/qe/identity from Intel PCS",
                       want_id, q->tee_type == DCAP_TEE_TDX ? "tdx" : "sgx");
    int r = doc_verify(d, signer, "QE identity", cache, now, err);
    if (r < 0)
        return r;
    int64_t version = 0, prodid = 0;
    if (js_get_int(&version, qe, "version", true, "QE identity", err) < 0)
        return EV_E_FORMAT;
    if (version != 2 && version != 3)
        return err_set(err, EV_E_VERSION, "DCAP QE identity (%s): version %lld is not supported",
                       d->name, (long long)version);
    if ((r = doc_window(qe, "QE identity", d->name, now, win_from, win_to, err)) < 0)
        return r;
    uint8_t mrsigner[32], misc[4], misc_mask[4], attr[16], attr_mask[16];
    if ((r = hex_field(mrsigner, 32, qe, "mrsigner", "QE identity", err)) < 0 ||
        (r = hex_field(misc, 4, qe, "miscselect", "QE identity", err)) < 0 ||
        (r = hex_field(misc_mask, 4, qe, "miscselectMask", "QE identity", err)) < 0 ||
        (r = hex_field(attr, 16, qe, "attributes", "QE identity", err)) < 0 ||
        (r = hex_field(attr_mask, 16, qe, "attributesMask", "QE identity", err)) < 0)
        return r;
    if (js_get_int(&prodid, qe, "isvprodid", true, "QE identity", err) < 0)
        return EV_E_FORMAT;
    const uint8_t *rep = q->qe_report;
    if (memcmp(mrsigner, rep + SGXR_MRSIGNER, 32) != 0) {
        _cleanup_free_ char *got = hex_encode(rep + SGXR_MRSIGNER, 32);
        _cleanup_free_ char *want = hex_encode(mrsigner, 32);
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: MRSIGNER %s differs from the QE identity's %s; the "
                       "quoting enclave is not Intel's",
                       got, want);
    }
    unsigned got_prod = le16(rep + SGXR_ISVPRODID);
    if ((int64_t)got_prod != prodid)
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: ISVPRODID %u differs from the QE identity's %lld", got_prod,
                       (long long)prodid);
    uint32_t ms = ev__le32(rep + SGXR_MISCSELECT);
    uint32_t want_ms =
        (uint32_t)misc[0] << 24 | (uint32_t)misc[1] << 16 | (uint32_t)misc[2] << 8 | misc[3];
    uint32_t ms_mask = (uint32_t)misc_mask[0] << 24 | (uint32_t)misc_mask[1] << 16 |
                       (uint32_t)misc_mask[2] << 8 | misc_mask[3];
    if ((ms & ms_mask) != want_ms)
        return err_set(err, EV_E_CHAIN,
                       "DCAP QE report: MISCSELECT 0x%08x under mask 0x%08x is not 0x%08x", ms,
                       ms_mask, want_ms);
    for (int b = 0; b < 16; b++)
        if ((rep[SGXR_ATTRIBUTES + b] & attr_mask[b]) != attr[b]) {
            _cleanup_free_ char *got = hex_encode(rep + SGXR_ATTRIBUTES, 16);
            return err_set(err, EV_E_CHAIN,
                           "DCAP QE report: ATTRIBUTES %s do not match the QE identity under "
                           "its mask (a debug or non-production QE?)",
                           got);
        }
    json_t *levels = NULL, *lv = NULL;
    if (js_get_array(&levels, qe, "tcbLevels", true, "QE identity", err) < 0)
        return EV_E_FORMAT;
    unsigned isvsvn = le16(rep + SGXR_ISVSVN);
    if ((r = isvsvn_level(&lv, levels, isvsvn, "QE identity", err)) < 0)
        return r;
    if (!lv)
        return err_set(err, EV_E_TCB,
                       "DCAP QE identity (%s): QE ISVSVN %u is below every level; the quoting "
                       "enclave is not supported",
                       d->name, isvsvn);
    if ((r = level_status(&q->qe_status, lv, "QE identity", err)) < 0)
        return r;
    if ((r = add_advisories(q->advisories, lv, "QE identity", err)) < 0)
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

static int check_signatures(dcap_result *q, const quote_sigdata *sd, const uint8_t *quote,
                            cista_error **err)
{
    X509 *leaf = sk_X509_value(q->chain, 0);
    EVP_PKEY *pck = X509_get0_pubkey(leaf);
    const char *crv = pck ? crypto_key_ec_crv(pck) : NULL;
    if (!crv || strcmp(crv, "P-256") != 0)
        return err_set(err, EV_E_NOKEY, "DCAP PCK certificate key is not an ECDSA P-256 key");
    _cleanup_free_ char *fm = hex_encode(q->fmspc, 6);

    /* 1. the QE report, signed by the PCK */
    int r = x509_ecdsa_verify_raw(pck, "SHA256", sd->qe_report, DCAP_SGX_REPORT_SIZE, sd->qe_sig,
                                  sd->qe_sig + 32, 32, X509_BIG_ENDIAN, err);
    if (r == -EBADMSG) {
        err_clear(err);
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
    _cleanup_hash_ crypto_hash *hs = crypto_hash_new(CRYPTO_SHA256);
    crypto_hash_update(hs, sd->ak, AK_SIZE);
    crypto_hash_update(hs, sd->qe_auth, sd->qe_auth_size);
    crypto_hash_final(hs, h);
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
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    if ((r = ak_pkey(&ak, sd->ak, err)) < 0)
        return r;
    r = x509_ecdsa_verify_raw(ak, "SHA256", quote, sd->signed_size, sd->sig, sd->sig + 32, 32,
                              X509_BIG_ENDIAN, err);
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

    _cleanup_x509_ X509 *root = NULL;
    if ((r = load_root(&root, root_override, err)) < 0)
        return r;
    time_t now = now_of(opts);
    ev_chain_cache *cache = opts->chain_cache;
    __attribute__((cleanup(coll_set_free))) coll_set cs;
    memset(&cs, 0, sizeof(cs));
    cs.cache = cache;
    cs.root = root;
    cs.now = now;
    for (size_t i = 0; i < ev_collateral_count(opts->collateral); i++) {
        const char *name;
        const uint8_t *data;
        size_t dsize;
        ev_collateral_get(opts->collateral, i, &name, &data, &dsize);
        STACK_OF(X509) *parsed = ev__collateral_certs(opts->collateral, i);
        if (parsed) { /* certificates, parsed when added: take new references */
            if (!cs.certs && !(cs.certs = sk_X509_new_null()))
                abort();
            for (int k = 0; k < sk_X509_num(parsed); k++) {
                X509_up_ref(sk_X509_value(parsed, k));
                if (!sk_X509_push(cs.certs, sk_X509_value(parsed, k)))
                    abort();
            }
            continue;
        }
        if ((r = coll_add(&cs, name, data, dsize, err)) < 0)
            return r;
    }
    if ((r = verify_pck_chain(&q, &sd, &cs, root, now, cache, err)) < 0)
        return r;
    if ((r = pck_parse(&q, sk_X509_value(q.chain, 0), err)) < 0)
        return r;
    if ((r = check_signatures(&q, &sd, quote, err)) < 0)
        return r;

    /* collateral: TCB info and QE identity come together */
    if (cs.ntcb || cs.nqe) {
        if ((r = tcb_signer(&q.tcb_signer, &cs, root, now, cache, err)) < 0)
            return r;
        time_t from = 0, to = 0;
        if ((r = eval_qe_identity(&q, &cs, q.tcb_signer, now, cache, &from, &to, err)) < 0)
            return r;
        if ((r = eval_tcb_info(&q, &cs, q.tcb_signer, now, cache, &from, &to, err)) < 0)
            return r;
        char a[24], b[24];
        ev__time_str(a, sizeof(a), from);
        ev__time_str(b, sizeof(b), to);
        snprintf(q.collateral_window, sizeof(q.collateral_window), "%s..%s", a, b);
        q.tcb_status = status_merge(status_merge(q.platform_status, q.module_status), q.qe_status);
    }

    _cleanup_free_ char *fm = hex_encode(q.fmspc, 6);
    if (q.tcb_status == EV_TCB_REVOKED)
        return err_set(err, EV_E_REVOKED,
                       "DCAP TCB status is Revoked (platform %s, QE %s%s%s) for FMSPC %s: Intel "
                       "revoked this TCB",
                       ev__dcap_status_name(q.platform_status), ev__dcap_status_name(q.qe_status),
                       q.tee_type == DCAP_TEE_TDX ? ", TDX module " : "",
                       q.tee_type == DCAP_TEE_TDX ? ev__dcap_status_name(q.module_status) : "", fm);
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

json_t *ev__dcap_tcb_json(const dcap_result *r)
{
    json_t *sgx = json_array();
    for (int i = 0; i < 16; i++)
        json_array_append_new(sgx, json_integer(r->pck_comp[i]));
    json_t *comp = json_pack("{s:o,s:i,s:o}", "sgx", sgx, "pcesvn", (json_int_t)r->pcesvn, "cpusvn",
                             ev__json_hex(r->cpusvn, 16));
    json_t *t = json_object();
    json_object_set_new(t, "status", json_string(ev__dcap_status_name(r->tcb_status)));
    json_object_set_new(t, "components", comp);
    json_object_set_new(t, "advisories", json_deep_copy(r->advisories));
    json_object_set_new(t, "fmspc", ev__json_hex(r->fmspc, 6));
    json_object_set_new(t, "pce_id", ev__json_hex(r->pceid, 2));
    json_object_set_new(t, "collateral", json_boolean(r->have_tcb_info && r->have_qe_identity));
    if (r->have_tcb_info) {
        json_object_set_new(t, "platform_status",
                            json_string(ev__dcap_status_name(r->platform_status)));
        if (r->tcb_date[0])
            json_object_set_new(t, "date", json_string(r->tcb_date));
    }
    if (r->module_status)
        json_object_set_new(t, "module_status",
                            json_string(ev__dcap_status_name(r->module_status)));
    if (r->have_qe_identity)
        json_object_set_new(t, "qe_status", json_string(ev__dcap_status_name(r->qe_status)));
    if (r->collateral_window[0])
        json_object_set_new(t, "collateral_window", json_string(r->collateral_window));
    return t;
}

void ev__dcap_common_json(json_t *obj, const dcap_result *r)
{
    const uint8_t *qe = r->qe_report;
    json_object_set_new(obj, "version", json_integer(r->version));
    json_object_set_new(obj, "qe_vendor_id", ev__json_hex(r->qe_vendor_id, 16));
    json_object_set_new(obj, "user_data", ev__json_hex(r->user_data, 20));
    json_object_set_new(obj, "qe",
                        json_pack("{s:o,s:o,s:i,s:i}", "mrenclave",
                                  ev__json_hex(qe + SGXR_MRENCLAVE, 32), "mrsigner",
                                  ev__json_hex(qe + SGXR_MRSIGNER, 32), "isv_prod_id",
                                  (json_int_t)le16(qe + SGXR_ISVPRODID), "isv_svn",
                                  (json_int_t)le16(qe + SGXR_ISVSVN)));
    json_t *pck = json_pack("{s:o,s:o,s:s}", "fmspc", ev__json_hex(r->fmspc, 6), "pce_id",
                            ev__json_hex(r->pceid, 2), "ca", r->pck_ca ? r->pck_ca : "?");
    if (r->sgx_type >= 0)
        json_object_set_new(pck, "sgx_type", json_integer(r->sgx_type));
    json_object_set_new(obj, "pck", pck);
    json_object_set_new(obj, "trailing_bytes", json_integer((json_int_t)r->trailing_bytes));
}
