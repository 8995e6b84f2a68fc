/*
 * protocol.c - parsers for the RCAR request bodies and the evidence shapes
 * they carry (see kbs.h). Everything here reads untrusted bytes: sizes are
 * bounded, strings checked against alphabets, and the evidence is only
 * decoded here - verification is ev_ops.verify()'s job.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/jose.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static const struct {
    const char *wire;
    const char *name;
} g_tees[] = {
    {"sim", "sim"},
    {"snp", "snp"},
    {"tdx", "tdx"},
    {"sgx", "sgx"},
    {"tpm", "tpm"},
    {"az-snp-vtpm", "azure-snp-vtpm"},
    {"azure-snp-vtpm", "azure-snp-vtpm"},
    {"az-tdx-vtpm", "azure-tdx-vtpm"},
    {"azure-tdx-vtpm", "azure-tdx-vtpm"},
};

static const char *tee_name(const char *wire)
{
    for (size_t i = 0; i < ARRAY_LEN(g_tees); i++)
        if (!strcmp(g_tees[i].wire, wire))
            return g_tees[i].name;
    return NULL;
}

/* "0.4.0" → 4, "0.2.0" → 2 (any patch level); 0 otherwise. */
static int parse_version(const char *v)
{
    unsigned a, b, c;
    char tail;
    if (strlen(v) > 32 || sscanf(v, "%u.%u.%u%c", &a, &b, &c, &tail) != 3)
        return 0;
    if (a == 0 && b == 4)
        return KBS_PROTO_V4;
    if (a == 0 && b == 2)
        return KBS_PROTO_V2;
    return 0;
}

int kbs_parse_auth(kbs_auth_req *out, json_t **doc, const void *body, size_t size,
                   cista_error **err)
{
    memset(out, 0, sizeof(*out));
    _cleanup_json_ json_t *d = NULL;
    int r = js_parse_object(&d, body, size, 64 * 1024, "auth request", err);
    if (r < 0)
        return r;
    const char *version = NULL, *tee = NULL;
    if ((r = js_get_string(&version, d, "version", true, "auth request", err)) < 0 ||
        (r = js_get_string(&tee, d, "tee", true, "auth request", err)) < 0)
        return r;
    int proto = parse_version(version);
    if (!proto)
        return err_set(err, -EPROTONOSUPPORT,
                       "KBS protocol version \"%.32s\" is not supported: this KBS speaks "
                       "%s and %s; update the guest's attestation agent or pin a matching KBS",
                       version, KBS_PROTOCOL_VERSION, KBS_PROTOCOL_LEGACY);
    const char *name = tee_name(tee);
    if (!name)
        return err_set(err, -ENOTSUP,
                       "TEE \"%.32s\" is not supported (sim, snp, tdx, sgx, tpm, az-snp-vtpm, "
                       "az-tdx-vtpm)",
                       tee);
    out->proto = (kbs_proto)proto;
    out->version = version;
    out->tee = name;
    out->hash = CRYPTO_SHA384;
    json_t *extra = json_object_get(d, "extra-params");
    json_t *algs =
        json_is_object(extra) ? json_object_get(extra, "supported-hash-algorithms") : NULL;
    if (algs) {
        if (!json_is_array(algs))
            return err_set(err, -EINVAL,
                           "auth request: extra-params.supported-hash-algorithms must be an "
                           "array of strings");
        static const crypto_hash_alg pref[] = {CRYPTO_SHA384, CRYPTO_SHA512, CRYPTO_SHA256};
        bool found = false;
        for (size_t p = 0; p < ARRAY_LEN(pref) && !found; p++) {
            size_t i;
            json_t *e;
            json_array_foreach(algs, i, e)
            {
                if (kbs_hash_alg_parse(json_string_value(e)) == (int)pref[p]) {
                    out->hash = pref[p];
                    found = true;
                    break;
                }
            }
        }
        if (!found)
            return err_set(err, -ENOTSUP,
                           "auth request: none of the supported-hash-algorithms is sha384, "
                           "sha512 or sha256");
    }
    *doc = steal_ptr(&d);
    return 0;
}

void kbs_attest_req_clear(kbs_attest_req *a)
{
    free(a->ev_tee);
    free(a->evidence);
    free(a->aux);
    ev_collateral_free(a->certs);
    EVP_PKEY_free(a->tee_key);
    memset(a, 0, sizeof(*a));
}

/* An array of byte values (0-255), a hex string, or (for cista) base64. */
static int get_bytes(uint8_t *dst, size_t size, const json_t *v, const char *what,
                     cista_error **err)
{
    if (json_is_array(v)) {
        if (json_array_size(v) != size)
            return err_set(err, -EINVAL, "snp attestation_report.%s: %zu bytes, expected %zu", what,
                           json_array_size(v), size);
        for (size_t i = 0; i < size; i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 255)
                return err_set(err, -EINVAL, "snp attestation_report.%s[%zu] is not a byte", what,
                               i);
            dst[i] = (uint8_t)json_integer_value(e);
        }
        return 0;
    }
    if (json_is_string(v) && json_string_length(v) == 2 * size)
        return hex_decode_to(dst, size, json_string_value(v), err);
    return err_set(err, -EINVAL, "snp attestation_report.%s: expected a list of %zu byte values",
                   what, size);
}

static void put_le(uint8_t *dst, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (uint8_t)(v >> (8 * i));
}

static int get_uint(uint64_t *out, const json_t *v, const char *what, cista_error **err)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    /* Bitfield newtypes may serialise as {"0": n} or a one-element list. */
    if (json_is_array(v) && json_array_size(v) == 1)
        return get_uint(out, json_array_get(v, 0), what, err);
    return err_set(err, -EINVAL, "snp attestation_report.%s must be a non-negative integer", what);
}

static int get_tcb(uint8_t dst[8], const json_t *v, const char *what, cista_error **err)
{
    if (json_is_integer(v)) {
        put_le(dst, (uint64_t)json_integer_value(v), 8);
        return 0;
    }
    if (!json_is_object(v))
        return err_set(err, -EINVAL, "snp attestation_report.%s must be a TCB object", what);
    uint64_t bl = 0, tee = 0, snp = 0, mc = 0, fmc = 0;
    int r;
    if ((r = get_uint(&bl, json_object_get(v, "bootloader"), what, err)) < 0 ||
        (r = get_uint(&tee, json_object_get(v, "tee"), what, err)) < 0 ||
        (r = get_uint(&snp, json_object_get(v, "snp"), what, err)) < 0 ||
        (r = get_uint(&mc, json_object_get(v, "microcode"), what, err)) < 0)
        return r;
    memset(dst, 0, 8);
    json_t *f = json_object_get(v, "fmc");
    if (f && !json_is_null(f)) { /* Turin layout */
        if ((r = get_uint(&fmc, f, what, err)) < 0)
            return r;
        dst[0] = (uint8_t)fmc;
        dst[1] = (uint8_t)bl;
        dst[2] = (uint8_t)tee;
        dst[3] = (uint8_t)snp;
        dst[7] = (uint8_t)mc;
    } else { /* Milan / Genoa */
        dst[0] = (uint8_t)bl;
        dst[1] = (uint8_t)tee;
        dst[6] = (uint8_t)snp;
        dst[7] = (uint8_t)mc;
    }
    return 0;
}

#define SNP_REPORT_SIZE 0x4a0

int kbs_snp_report_from_json(uint8_t **out, size_t *out_size, const json_t *rep, cista_error **err)
{
    static const struct {
        const char *name;
        size_t off, size;
        char kind; /* 'u' integer, 'b' bytes, 't' tcb */
        bool required;
    } f[] = {
        {"version", 0x00, 4, 'u', true},
        {"guest_svn", 0x04, 4, 'u', true},
        {"policy", 0x08, 8, 'u', true},
        {"family_id", 0x10, 16, 'b', true},
        {"image_id", 0x20, 16, 'b', true},
        {"vmpl", 0x30, 4, 'u', true},
        {"sig_algo", 0x34, 4, 'u', true},
        {"current_tcb", 0x38, 8, 't', true},
        {"plat_info", 0x40, 8, 'u', true},
        {"key_info", 0x48, 4, 'u', false},
        {"author_key_en", 0x48, 4, 'u', false},
        {"report_data", 0x50, 64, 'b', true},
        {"measurement", 0x90, 48, 'b', true},
        {"host_data", 0xc0, 32, 'b', true},
        {"id_key_digest", 0xe0, 48, 'b', true},
        {"author_key_digest", 0x110, 48, 'b', true},
        {"report_id", 0x140, 32, 'b', true},
        {"report_id_ma", 0x160, 32, 'b', true},
        {"reported_tcb", 0x180, 8, 't', true},
        {"cpuid_fam_id", 0x188, 1, 'u', false},
        {"cpuid_mod_id", 0x189, 1, 'u', false},
        {"cpuid_step", 0x18a, 1, 'u', false},
        {"chip_id", 0x1a0, 64, 'b', true},
        {"committed_tcb", 0x1e0, 8, 't', true},
        {"current_build", 0x1e8, 1, 'u', false},
        {"current_minor", 0x1e9, 1, 'u', false},
        {"current_major", 0x1ea, 1, 'u', false},
        {"committed_build", 0x1ec, 1, 'u', false},
        {"committed_minor", 0x1ed, 1, 'u', false},
        {"committed_major", 0x1ee, 1, 'u', false},
        {"launch_tcb", 0x1f0, 8, 't', true},
        {"launch_mit_vector", 0x1f8, 8, 'u', false},
        {"current_mit_vector", 0x200, 8, 'u', false},
    };
    if (!json_is_object(rep))
        return err_set(err, -EINVAL, "snp evidence: attestation_report must be an object");
    _cleanup_free_ uint8_t *r8 = xzalloc(SNP_REPORT_SIZE);
    int r;
    for (size_t i = 0; i < ARRAY_LEN(f); i++) {
        const json_t *v = json_object_get(rep, f[i].name);
        if (!v || json_is_null(v)) {
            if (f[i].required)
                return err_set(err, -EINVAL, "snp evidence: attestation_report.%s is missing",
                               f[i].name);
            continue;
        }
        if (f[i].kind == 'b') {
            r = get_bytes(r8 + f[i].off, f[i].size, v, f[i].name, err);
        } else if (f[i].kind == 't') {
            r = get_tcb(r8 + f[i].off, v, f[i].name, err);
        } else {
            uint64_t u = 0;
            r = get_uint(&u, v, f[i].name, err);
            if (r == 0 && f[i].size < 8 && u >> (8 * f[i].size))
                r = err_set(err, -EINVAL,
                            "snp attestation_report.%s: %llu does not fit %zu byte(s)", f[i].name,
                            (unsigned long long)u, f[i].size);
            if (r == 0)
                put_le(r8 + f[i].off, u, f[i].size);
        }
        if (r < 0)
            return r;
    }
    /* "current"/"committed" as {major, minor, build} objects (newer sev crates). */
    static const struct {
        const char *name;
        size_t off;
    } vers[] = {{"current", 0x1e8}, {"committed", 0x1ec}};
    for (size_t i = 0; i < ARRAY_LEN(vers); i++) {
        const json_t *v = json_object_get(rep, vers[i].name);
        if (!json_is_object(v))
            continue;
        uint64_t ma = 0, mi = 0, bu = 0;
        if ((r = get_uint(&ma, json_object_get(v, "major"), vers[i].name, err)) < 0 ||
            (r = get_uint(&mi, json_object_get(v, "minor"), vers[i].name, err)) < 0 ||
            (r = get_uint(&bu, json_object_get(v, "build"), vers[i].name, err)) < 0)
            return r;
        r8[vers[i].off] = (uint8_t)bu;
        r8[vers[i].off + 1] = (uint8_t)mi;
        r8[vers[i].off + 2] = (uint8_t)ma;
    }
    const json_t *sig = json_object_get(rep, "signature");
    if (!json_is_object(sig))
        return err_set(err, -EINVAL,
                       "snp evidence: attestation_report.signature {r, s} is missing");
    if ((r = get_bytes(r8 + 0x2a0, 72, json_object_get(sig, "r"), "signature.r", err)) < 0 ||
        (r = get_bytes(r8 + 0x2e8, 72, json_object_get(sig, "s"), "signature.s", err)) < 0)
        return r;
    *out = steal_ptr(&r8);
    *out_size = SNP_REPORT_SIZE;
    return 0;
}

static int decode_b64_field(uint8_t **out, size_t *out_size, const json_t *v, const char *what,
                            cista_error **err)
{
    const char *s = json_string_value(v);
    if (!s)
        return err_set(err, -EINVAL, "evidence: %s must be a base64 string", what);
    size_t n = json_string_length(v);
    if (n > 4 * (EV_MAX_EVIDENCE / 3) + 4)
        return err_set(err, -EMSGSIZE, "evidence: %s is larger than %u bytes", what,
                       EV_MAX_EVIDENCE);
    int r = b64_decode(out, out_size, s, n, err);
    if (r < 0) {
        err_clear(err);
        r = b64url_decode(out, out_size, s, n, err);
    }
    return r < 0 ? err_wrap(err, "evidence: %s", what) : 0;
}

/* primary evidence (object) → kind, evidence bytes, aux, certificates. */
static int decode_evidence(kbs_attest_req *out, const json_t *pe, const char *tee,
                           cista_error **err)
{
    int r;
    if (!json_is_object(pe))
        return err_set(err, -EINVAL, "evidence: primary evidence must be a JSON object");
    const json_t *t = json_object_get(pe, "tee");
    const json_t *ev = json_object_get(pe, "evidence");
    if (json_is_string(t) && json_is_string(ev)) { /* cista's own shape */
        const char *name = tee_name(json_string_value(t));
        if (!name)
            return err_set(err, -ENOTSUP, "evidence: unknown tee \"%.32s\"", json_string_value(t));
        out->ev_tee = xstrdup(name);
        if ((r = decode_b64_field(&out->evidence, &out->evidence_size, ev, "evidence", err)) < 0)
            return r;
        const json_t *aux = json_object_get(pe, "aux");
        if (aux && !json_is_null(aux) &&
            (r = decode_b64_field(&out->aux, &out->aux_size, aux, "aux", err)) < 0)
            return r;
        return 0;
    }
    if (json_object_get(pe, "attestation_report")) { /* CoCo snp */
        out->ev_tee = xstrdup("snp");
        if ((r = kbs_snp_report_from_json(&out->evidence, &out->evidence_size,
                                          json_object_get(pe, "attestation_report"), err)) < 0)
            return r;
        const json_t *chain = json_object_get(pe, "cert_chain");
        if (json_is_array(chain)) {
            if (json_array_size(chain) > 8)
                return err_set(err, -E2BIG, "snp evidence: more than 8 certificates");
            out->certs = ev_collateral_new();
            size_t i;
            json_t *c;
            json_array_foreach(chain, i, c)
            {
                const json_t *data = json_object_get(c, "data");
                size_t n = json_array_size(data);
                if (!json_is_array(data) || n == 0 || n > 16384)
                    return err_set(err, -EINVAL,
                                   "snp evidence: cert_chain[%zu].data must be a list of bytes", i);
                _cleanup_free_ uint8_t *der = xmalloc(n);
                for (size_t j = 0; j < n; j++) {
                    json_t *e = json_array_get(data, j);
                    if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                        json_integer_value(e) > 255)
                        return err_set(err, -EINVAL,
                                       "snp evidence: cert_chain[%zu].data[%zu] is not a byte", i,
                                       j);
                    der[j] = (uint8_t)json_integer_value(e);
                }
                char name[48];
                snprintf(name, sizeof(name), "cert_chain[%zu]", i);
                if ((r = ev_collateral_add(out->certs, name, der, n, err)) < 0)
                    return r;
            }
        }
        return 0;
    }
    if (json_object_get(pe, "quote")) { /* CoCo tdx */
        out->ev_tee = xstrdup("tdx");
        return decode_b64_field(&out->evidence, &out->evidence_size, json_object_get(pe, "quote"),
                                "quote", err);
    }
    /* TPM-based kinds: the evidence is itself a JSON document. */
    if (!strcmp(tee, "tpm") || !strcmp(tee, "azure-snp-vtpm") || !strcmp(tee, "azure-tdx-vtpm")) {
        out->ev_tee = xstrdup(tee);
        char *text = json_dumps(pe, JSON_COMPACT);
        if (!text)
            return err_set(err, -EINVAL, "evidence: not serialisable");
        out->evidence = (uint8_t *)text;
        out->evidence_size = strlen(text);
        return 0;
    }
    return err_set(err, -EINVAL,
                   "evidence: unrecognised primary evidence shape for tee %s (expected "
                   "{\"tee\", \"evidence\", \"aux\"}, or the CoCo snp / tdx layouts)",
                   tee);
}

/* A member that may be a JSON value or a string holding one. */
static int json_or_string(json_t **out, const json_t *v, const char *what, cista_error **err)
{
    if (json_is_string(v))
        return js_parse(out, json_string_value(v), json_string_length(v), KBS_MAX_BODY, what, err);
    if (!v)
        return err_set(err, -EINVAL, "attest request: %s is missing", what);
    *out = json_incref((json_t *)v);
    return 0;
}

/* Longest JWK member: the base64url modulus of an 8192-bit RSA key is 1366 characters. */
#define KBS_JWK_MEMBER_MAX 1400

/* An array of at most @max strings of at most 32 characters (key_ops). */
static bool short_strings(const json_t *a, size_t max)
{
    if (!json_is_array(a) || json_array_size(a) > max)
        return false;
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x)
    {
        if (!json_is_string(x) || json_string_length(x) > 32)
            return false;
    }
    return true;
}

/* The tee-pubkey, checked and imported into *out. */
static int check_jwk(EVP_PKEY **out, const json_t *jwk, cista_error **err)
{
    if (!json_is_object(jwk))
        return err_set(err, -EINVAL, "attest request: tee-pubkey must be a JWK object");
    if (json_object_get(jwk, "d") || json_object_get(jwk, "p"))
        return err_set(err, -EINVAL, "attest request: tee-pubkey holds a private key part");
    /*
     * Only a public key's members, each short: the JWK goes into the token and stays in memory
     * with the attested session, so padding it (the body may be 2 MiB) would let one attesting
     * guest pin megabytes per session.
     */
    static const char *const allowed[] = {"kty", "crv", "x",   "y",       "n",
                                          "e",   "alg", "use", "key_ops", "kid"};
    const char *m;
    json_t *v;
    json_object_foreach((json_t *)jwk, m, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && !known; i++)
            known = !strcmp(m, allowed[i]);
        if (!known)
            return err_set(err, -EINVAL,
                           "attest request: tee-pubkey has an unexpected member "
                           "(a public JWK has kty, crv, x, y, n, e, alg, use, "
                           "key_ops, kid)");
        if (!(json_is_string(v) && json_string_length(v) <= KBS_JWK_MEMBER_MAX) &&
            !(!strcmp(m, "key_ops") && short_strings(v, 8)))
            return err_set(err, -EINVAL,
                           "attest request: tee-pubkey member \"%s\" is not a string of at most "
                           "%d characters",
                           m, KBS_JWK_MEMBER_MAX);
    }
    /* Partial validation suffices on the prime-order curves JWKs may use (jose.h). */
    int r = jwk_to_key_partial(out, jwk, err);
    if (r < 0)
        return err_wrap(err, "attest request: tee-pubkey");
    return 0;
}

int kbs_parse_attest(kbs_attest_req *out, json_t **doc, kbs_proto proto, const char *tee,
                     const void *body, size_t size, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    _cleanup_json_ json_t *d = NULL;
    int r = js_parse_object(&d, body, size, KBS_MAX_BODY, "attest request", err);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *pe = NULL;
    if (proto == KBS_PROTO_V2) {
        out->tee_pubkey = json_object_get(d, "tee-pubkey");
        if ((r = json_or_string(&pe, json_object_get(d, "tee-evidence"), "tee-evidence", err)) < 0)
            goto fail;
    } else {
        json_t *rd = NULL, *te = NULL, *id = NULL;
        if ((r = js_get_object(&rd, d, "runtime-data", true, "attest request", err)) < 0 ||
            (r = js_get_object(&te, d, "tee-evidence", true, "attest request", err)) < 0 ||
            (r = js_get_object(&id, d, "init-data", false, "attest request", err)) < 0 ||
            (r = js_get_string(&out->nonce, rd, "nonce", true, "runtime-data", err)) < 0)
            goto fail;
        out->tee_pubkey = json_object_get(rd, "tee-pubkey");
        if ((r = json_or_string(&pe, json_object_get(te, "primary_evidence"), "primary_evidence",
                                err)) < 0)
            goto fail;
        const json_t *add = json_object_get(te, "additional_evidence");
        if (add && !json_is_null(add)) {
            if (!json_is_string(add)) {
                r = err_set(err, -EINVAL,
                            "attest request: additional_evidence must be a JSON string");
                goto fail;
            }
            out->additional = json_string_value(add);
        }
        if (id) {
            if ((r = js_get_string(&out->init_data_format, id, "format", true, "init-data", err)) <
                    0 ||
                (r = js_get_string(&out->init_data_body, id, "body", true, "init-data", err)) < 0)
                goto fail;
        }
    }
    if ((r = check_jwk(&out->tee_key, out->tee_pubkey, err)) < 0)
        goto fail;
    if ((r = decode_evidence(out, pe, tee, err)) < 0)
        goto fail;
    *doc = steal_ptr(&d);
    return 0;
fail:
    kbs_attest_req_clear(out);
    return r;
}

static bool seg_ok(const char *s, size_t n)
{
    if (n == 0 || n > 128 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int kbs_check_resource_path(const char *path, cista_error **err)
{
    size_t len = strnlen(path, KBS_MAX_PATH + 1);
    if (len > KBS_MAX_PATH)
        return err_set(err, -EINVAL, "resource path is longer than %d bytes", KBS_MAX_PATH);
    const char *p = path;
    for (int i = 0; i < 3; i++) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((i < 2 && !e) || (i == 2 && e) || !seg_ok(p, n))
            return err_set(err, -EINVAL,
                           "resource path \"%.64s\" must be <repository>/<type>/<tag>, each of "
                           "[A-Za-z0-9._-]",
                           path);
        p = e ? e + 1 : p + n;
    }
    return 0;
}
