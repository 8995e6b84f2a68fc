/*
 * test_kbs.c - the key broker: RFC 8785 canonicalisation, the runtime-data
 * binding, release-policy and appraisal tables, the session table, the
 * SQLite store (round trips, encryption at rest, the keyed audit chain
 * against a database writer, unkeyed entries of an older cista), JWS (RFC
 * 7515 A.3), tokens, and a transport-free RCAR exchange with sim evidence
 * including its refusals.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "crypto/jws.h"
#include "evidence/ev.h"
#include "kbs/kbs.h"
#include "kbs/client.h"
#include "kbs/kbs_int.h"
#include "kbs/store.h"
#include "policy/appraisal.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("bad JSON in test: %s: %s", text, e.text);
    return v;
}

/* ---- JCS ---- */

static void check_jcs(const char *in, const char *want)
{
    _cleanup_json_ json_t *v = J(in);
    _cleanup_free_ char *out = NULL;
    assert_int_equal(kbs_jcs(&out, v, NULL), 0);
    if (strcmp(out, want) != 0)
        fail_msg("JCS of %s:\n got  %s\n want %s", in, out, want);
}

static void test_jcs(void **state)
{
    (void)state;
    /* RFC 8785 §3.2.2 */
    check_jcs("{\"numbers\": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],"
              " \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\","
              " \"literals\": [null, true, false]}",
              "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,"
              "1e-27],\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
    /* RFC 8785 §3.2.3: sorting by UTF-16 code units */
    check_jcs("{\"\\u20ac\": \"Euro Sign\", \"\\r\": \"Carriage Return\", \"\\ufb33\": "
              "\"Hebrew Letter Dalet With Dagesh\", \"1\": \"One\", \"\\ud83d\\ude00\": "
              "\"Emoji: Grinning Face\", \"\\u0080\": \"Control\", \"\\u00f6\": \"Latin Small "
              "Letter O With Diaeresis\"}",
              "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\",\"\xc3\xb6\":"
              "\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\","
              "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew Letter "
              "Dalet With Dagesh\"}");
    /* Number serialisation (ECMAScript), appendix B samples */
    check_jcs("[0, -0.0, 1, -1, 1.5, 100, 1e21, 1e20, 1.2345678901234568e20, 0.000001, 1e-7, "
              "9007199254740991, 5e-324, 1.7976931348623157e308, 2.9514790517935283e20]",
              "[0,0,1,-1,1.5,100,1e+21,100000000000000000000,123456789012345680000,0.000001,"
              "1e-7,9007199254740991,5e-324,1.7976931348623157e+308,295147905179352830000]");
    check_jcs("{\"b\":{\"z\":1,\"a\":[{\"y\":2,\"x\":\"\\u0001\"}]},\"a\":\"\\t\"}",
              "{\"a\":\"\\t\",\"b\":{\"a\":[{\"x\":\"\\u0001\",\"y\":2}],\"z\":1}}");
}

static void test_binding(void **state)
{
    (void)state;
    _cleanup_json_ json_t *jwk = J("{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ECDH-ES+A256KW\","
                                   "\"x\":\"AAA\",\"y\":\"BBB\"}");
    const char *want_text = "{\"additional-evidence\":\"\",\"nonce\":\"bm9uY2U=\",\"tee-pubkey\":"
                            "{\"alg\":\"ECDH-ES+A256KW\",\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":"
                            "\"AAA\",\"y\":\"BBB\"}}";
    uint8_t want[64] = {0}, got[64];
    crypto_hash_oneshot(CRYPTO_SHA384, want_text, strlen(want_text), want);
    assert_int_equal(kbs_binding(got, CRYPTO_SHA384, "bm9uY2U=", jwk, "", NULL), 0);
    assert_memory_equal(got, want, 64);
    for (int i = 48; i < 64; i++)
        assert_int_equal(got[i], 0); /* left-aligned, zero-padded */
    /* Without additional evidence (0.2.0), and with SHA-256 / SHA-512 */
    const char *t2 = "{\"nonce\":\"bm9uY2U=\",\"tee-pubkey\":{\"alg\":\"ECDH-ES+A256KW\",\"crv\":"
                     "\"P-256\",\"kty\":\"EC\",\"x\":\"AAA\",\"y\":\"BBB\"}}";
    memset(want, 0, sizeof(want));
    crypto_hash_oneshot(CRYPTO_SHA256, t2, strlen(t2), want);
    assert_int_equal(kbs_binding(got, CRYPTO_SHA256, "bm9uY2U=", jwk, NULL, NULL), 0);
    assert_memory_equal(got, want, 64);
    crypto_hash_oneshot(CRYPTO_SHA512, t2, strlen(t2), want);
    assert_int_equal(kbs_binding(got, CRYPTO_SHA512, "bm9uY2U=", jwk, NULL, NULL), 0);
    assert_memory_equal(got, want, 64);
    assert_int_equal(kbs_hash_alg_parse("SHA384"), CRYPTO_SHA384);
    assert_int_equal(kbs_hash_alg_parse("md5"), -1);
}

/* ---- release policies ---- */

static const char *const INPUT =
    "{\"tee\":\"snp\",\"insecure\":false,\"debug\":false,"
    "\"measurements\":{\"measurement\":\"aabb\",\"pcrs\":{\"sha256\":{\"23\":\"cc\"}}},"
    "\"host_data\":\"0123\",\"platform_id\":\"ff00\","
    "\"tcb\":{\"status\":\"UpToDate\",\"components\":{\"snp\":22,\"microcode\":213}},"
    "\"snp\":{\"vmpl\":0,\"policy\":{\"debug\":false}},"
    "\"appraisal\":{\"status\":\"affirming\"},"
    "\"resource\":{\"path\":\"default/key/1\",\"repository\":\"default\",\"type\":\"key\","
    "\"tag\":\"1\"},"
    "\"ear.status\":\"affirming\",\"list\":[\"a\",\"b\"],\"ratio\":0.5}";

typedef struct {
    const char *policy;
    int allow; /* 1 allow, 0 deny, -1 parse error */
    const char *reason_has;
} rp_case;

#define P1(cond) "{\"version\":\"1.0.0\",\"anyOf\":[{\"allOf\":[" cond "]}]}"

static const rp_case RP_CASES[] = {
    {P1("{\"claim\":\"tee\",\"equals\":\"snp\"}"), 1, "rule #1 allows"},
    {P1("{\"claim\":\"tee\",\"equals\":\"tdx\"}"), 0, "claim tee = \"snp\" fails equals \"tdx\""},
    {P1("{\"claim\":\"tee\",\"notEquals\":\"sim\"}"), 1, NULL},
    {P1("{\"claim\":\"tee\",\"notEquals\":\"snp\"}"), 0, NULL},
    {P1("{\"claim\":\"host_data\",\"in\":[\"0123\",\"4567\"]}"), 1, NULL},
    {P1("{\"claim\":\"host_data\",\"in\":[\"4567\"]}"), 0, "is not in the 1 allowed values"},
    {P1("{\"claim\":\"host_data\",\"notIn\":[\"4567\"]}"), 1, NULL},
    {P1("{\"claim\":\"tcb.components.snp\",\"gte\":22}"), 1, NULL},
    {P1("{\"claim\":\"tcb.components.snp\",\"gte\":23}"), 0, "fails gte 23"},
    {P1("{\"claim\":\"tcb.components.snp\",\"gt\":21}"), 1, NULL},
    {P1("{\"claim\":\"tcb.components.snp\",\"lt\":22}"), 0, NULL},
    {P1("{\"claim\":\"tcb.components.snp\",\"lte\":22}"), 1, NULL},
    {P1("{\"claim\":\"tcb.components.microcode\",\"greaterOrEquals\":200}"), 1, NULL},
    {P1("{\"claim\":\"ratio\",\"less\":1}"), 1, NULL},
    {P1("{\"claim\":\"tee\",\"gte\":1}"), 0, NULL}, /* not a number */
    {P1("{\"claim\":\"debug\",\"equals\":false}"), 1, NULL},
    {P1("{\"claim\":\"debug\",\"equals\":\"false\"}"), 1, NULL}, /* SKR string form */
    {P1("{\"claim\":\"snp.vmpl\",\"equals\":\"0\"}"), 1, NULL},
    {P1("{\"claim\":\"measurements.pcrs.sha256.23\",\"equals\":\"cc\"}"), 1, NULL},
    {P1("{\"claim\":\"ear.status\",\"equals\":\"affirming\"}"), 1, NULL}, /* dotted key */
    {P1("{\"claim\":\"list.1\",\"equals\":\"b\"}"), 1, NULL},             /* array index */
    {P1("{\"claim\":\"list.7\",\"exists\":false}"), 1, NULL},
    {P1("{\"claim\":\"nope.deeper\",\"exists\":true}"), 0, "is absent"},
    {P1("{\"claim\":\"host_data\",\"exists\":true}"), 1, NULL},
    {P1("{\"claim\":\"missing\",\"equals\":\"x\"}"), 0, "(absent)"},
    {P1("{\"claim\":\"resource.tag\",\"matches\":\"[0-9]+\"}"), 1, NULL},
    {P1("{\"claim\":\"resource.path\",\"matches\":\"key\"}"), 0, NULL}, /* anchored */
    {P1("{\"claim\":\"resource.path\",\"matches\":\"default/.*\"}"), 1, NULL},
    {P1("{\"claim\":\"tee\",\"equals\":\"snp\"},{\"claim\":\"debug\",\"equals\":true}"), 0,
     "fails equals true"},
    {"{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"tdx-prod\",\"allOf\":[{\"claim\":\"tee\","
     "\"equals\":\"tdx\"}]},{\"name\":\"snp-prod\",\"allOf\":[{\"claim\":\"tee\",\"equals\":"
     "\"snp\"}]}]}",
     1, "rule \"snp-prod\" allows"},
    {"{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"a\",\"allOf\":[{\"claim\":\"tee\",\"equals\":"
     "\"tdx\"}]},{\"name\":\"b\",\"allOf\":[{\"claim\":\"debug\",\"equals\":true}]}]}",
     0, "rule \"a\": claim tee"},
    {"{\"version\":\"1.0.0\",\"allOf\":[{\"claim\":\"tee\",\"equals\":\"snp\"},{\"anyOf\":[{"
     "\"claim\":\"tee\",\"equals\":\"x\"},{\"claim\":\"host_data\",\"equals\":\"0123\"}]}]}",
     1, NULL},
    {"{\"version\":\"0.2\",\"anyOf\":[{\"authority\":\"https://maa\",\"allOf\":[{\"claim\":"
     "\"tee\",\"equals\":\"snp\"}]}]}",
     1, NULL},
    /* parse errors */
    {"{\"version\":\"2.0.0\",\"anyOf\":[]}", -1, NULL},
    {"{\"anyOf\":[{\"allOf\":[{\"claim\":\"tee\",\"equals\":\"snp\"}]}]}", -1, NULL},
    {"{\"version\":\"1.0.0\"}", -1, NULL},
    {"{\"version\":\"1.0.0\",\"anyOf\":[]}", -1, NULL},
    {P1("{\"claim\":\"tee\",\"equals\":\"snp\",\"in\":[]}"), -1, NULL},
    {P1("{\"claim\":\"tee\",\"like\":\"snp\"}"), -1, NULL},
    {P1("{\"claim\":\"tee\"}"), -1, NULL},
    {P1("{\"claim\":\"tee\",\"matches\":\"(\"}"), -1, NULL},
    {P1("{\"claim\":\"tee\",\"matches\":\"x)|(.*\"}"), -1, NULL},      /* escapes ^(..)$ */
    {P1("{\"claim\":\"tee\",\"matches\":\"s[)]m|\\\\(x\"}"), 0, NULL}, /* ) in [], \\( */
    {P1("{\"claim\":\"tee\",\"gte\":\"1\"}"), -1, NULL},
    {P1("{\"claim\":\"tee\",\"in\":\"snp\"}"), -1, NULL},
    {P1("{\"claim\":\"\",\"equals\":1}"), -1, NULL},
    {"[1,2]", -1, NULL},
    {"{\"version\":\"1.0.0\",\"anyOf\":[{\"allOf\":[{\"allOf\":[{\"allOf\":[{\"allOf\":[{"
     "\"allOf\":[{\"allOf\":[{\"allOf\":[{\"allOf\":[{\"allOf\":[{\"claim\":\"a\",\"equals\":1}"
     "]}]}]}]}]}]}]}]}]}]}",
     -1, NULL},
};

static void test_release_policy(void **state)
{
    (void)state;
    _cleanup_json_ json_t *in = J(INPUT);
    for (size_t i = 0; i < ARRAY_LEN(RP_CASES); i++) {
        const rp_case *c = &RP_CASES[i];
        _cleanup_release_ pol_release *p = NULL;
        _cleanup_err_ cista_error *err = NULL;
        int r = pol_release_parse(&p, c->policy, strlen(c->policy), &err);
        if (c->allow < 0) {
            if (r == 0)
                fail_msg("case %zu: policy should not parse: %s", i, c->policy);
            continue;
        }
        if (r < 0) {
            _cleanup_free_ char *s = err_str(err);
            fail_msg("case %zu: %s: %s", i, c->policy, s);
        }
        bool allow = false;
        _cleanup_free_ char *reason = NULL;
        assert_int_equal(pol_release_eval(&allow, &reason, p, in, NULL), 0);
        if ((int)allow != c->allow)
            fail_msg("case %zu: expected %s, got %s (%s)", i, c->allow ? "allow" : "deny",
                     allow ? "allow" : "deny", reason);
        if (c->reason_has && !strstr(reason, c->reason_has))
            fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, reason, c->reason_has);
    }
    assert_true(ARRAY_LEN(RP_CASES) >= 30);
}

/* ---- appraisal ---- */

typedef struct {
    const char *refvals;
    const char *claims;
    pol_status want;
    const char *reason_has;
} ap_case;

#define SIMC                                                                                       \
    "{\"tee\":\"sim\",\"insecure\":true,\"debug\":false,\"measurements\":{\"measurement\":\"aa\"}" \
    ",\"host_data\":\"0101\",\"platform_id\":\"ee\"}"
#define SNPC                                                                                       \
    "{\"tee\":\"snp\",\"insecure\":false,\"debug\":false,\"measurements\":{\"measurement\":"       \
    "\"aa\"},\"host_data\":\"0101\",\"platform_id\":\"ee\",\"tcb\":{\"status\":\"Unknown\","       \
    "\"components\":{\"snp\":22,\"microcode\":213}}}"
#define RV(t) "{\"version\":\"1.0.0\",\"tees\":{" t "}}"

static const ap_case AP_CASES[] = {
    {RV(""), SIMC, POL_CONTRAINDICATED, "no reference values"},
    {RV("\"sim\":{}"), SIMC, POL_CONTRAINDICATED, "insecure"},
    {RV("\"sim\":{\"allow_insecure\":true}"), SIMC, POL_WARNING, "not appraised"},
    {RV("\"sim\":{\"allow_insecure\":true,\"measurements\":{\"measurement\":[\"AA\"]}}"), SIMC,
     POL_AFFIRMING, NULL},
    {RV("\"sim\":{\"allow_insecure\":true,\"measurements\":{\"measurement\":[\"bb\"]}}"), SIMC,
     POL_CONTRAINDICATED, "measurements.measurement aa is not one"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"host_data\":[\"0101\"]}"), SNPC,
     POL_AFFIRMING, NULL},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"host_data\":[\"0202\"]}"), SNPC,
     POL_CONTRAINDICATED, "host_data"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"platform_ids\":[\"dd\"]}"), SNPC,
     POL_CONTRAINDICATED, "platform_id"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"min_tcb\":{\"snp\":22,"
        "\"microcode\":200}}"),
     SNPC, POL_AFFIRMING, NULL},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"min_tcb\":{\"snp\":23}}"), SNPC,
     POL_CONTRAINDICATED, "below the minimum 23"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"min_tcb\":{\"fmc\":1}}"), SNPC,
     POL_CONTRAINDICATED, "absent"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]},\"tcb_status\":[\"UpToDate\"]}"),
     SNPC, POL_CONTRAINDICATED, "TCB status Unknown"},
    {RV("\"snp\":{\"measurements\":{\"measurement\":[\"aa\"]}}"),
     "{\"tee\":\"snp\",\"debug\":true,\"measurements\":{\"measurement\":\"aa\"}}",
     POL_CONTRAINDICATED, "debuggable"},
    {RV("\"snp\":{\"allow_debug\":true,\"measurements\":{\"measurement\":[\"aa\"]}}"),
     "{\"tee\":\"snp\",\"debug\":true,\"measurements\":{\"measurement\":\"aa\"}}", POL_AFFIRMING,
     NULL},
    {RV("\"tpm\":{\"pcrs\":{\"sha256\":{\"23\":[\"cc\"]}}}"),
     "{\"tee\":\"tpm\",\"measurements\":{\"pcrs\":{\"sha256\":{\"23\":\"cc\"}}}}", POL_AFFIRMING,
     NULL},
    {RV("\"tpm\":{\"pcrs\":{\"sha256\":{\"23\":[\"cc\"]}}}"),
     "{\"tee\":\"tpm\",\"measurements\":{\"pcrs\":{\"sha256\":{\"23\":\"dd\"}}}}",
     POL_CONTRAINDICATED, "pcrs.sha256.23"},
    {RV("\"tdx\":{\"measurements\":{\"mrtd\":[\"aa\"]},\"init_data\":[\"1234\"]}"),
     "{\"tee\":\"tdx\",\"measurements\":{\"mrtd\":\"aa\"},\"init_data\":\"9999\"}",
     POL_CONTRAINDICATED, "init_data"},
};

static void test_appraisal(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(AP_CASES); i++) {
        const ap_case *c = &AP_CASES[i];
        _cleanup_refvals_ pol_refvals *rv = NULL;
        _cleanup_err_ cista_error *err = NULL;
        if (pol_refvals_parse(&rv, c->refvals, strlen(c->refvals), &err) < 0) {
            _cleanup_free_ char *s = err_str(err);
            fail_msg("case %zu: %s", i, s);
        }
        _cleanup_json_ json_t *cl = J(c->claims);
        pol_appraisal a;
        assert_int_equal(pol_appraise(&a, rv, cl, NULL, NULL), 0);
        if (a.status != c->want)
            fail_msg("case %zu: want %s, got %s (%s)", i, pol_status_name(c->want),
                     pol_status_name(a.status), a.reason ? a.reason : "");
        if (c->reason_has && (!a.reason || !strstr(a.reason, c->reason_has)))
            fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, a.reason ? a.reason : "",
                     c->reason_has);
        pol_appraisal_clear(&a);
    }
    /* init-data from the request satisfies the init_data check */
    _cleanup_refvals_ pol_refvals *rv = NULL;
    const char *t = RV("\"tdx\":{\"measurements\":{\"mrtd\":[\"aa\"]},\"init_data\":[\"1234\"]}");
    assert_int_equal(pol_refvals_parse(&rv, t, strlen(t), NULL), 0);
    _cleanup_json_ json_t *cl = J("{\"tee\":\"tdx\",\"measurements\":{\"mrtd\":\"aa\"}}");
    pol_appraisal a;
    assert_int_equal(pol_appraise(&a, rv, cl, "1234", NULL), 0);
    assert_int_equal(a.status, POL_AFFIRMING);
    pol_appraisal_clear(&a);
    /* reference-value documents are strict */
    static const char *const bad[] = {
        "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecur\":true}}}",
        "{\"version\":\"9\",\"tees\":{}}",
        "{\"version\":\"1.0.0\",\"tees\":{\"snp\":{\"host_data\":[\"xyz\"]}}}",
        "{\"version\":\"1.0.0\",\"tees\":{\"tpm\":{\"pcrs\":{\"sha256\":{\"24\":[\"aa\"]}}}}}",
        "{\"version\":\"1.0.0\",\"tees\":{\"snp\":{\"min_tcb\":{\"snp\":-1}}}}",
        "{\"version\":\"1.0.0\"}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        pol_refvals *x = NULL;
        _cleanup_err_ cista_error *err = NULL;
        if (pol_refvals_parse(&x, bad[i], strlen(bad[i]), &err) == 0)
            fail_msg("bad refvals %zu parsed", i);
    }
}

/* ---- sessions ---- */

static void mk_session(kbs_session *s, int n, time_t expires)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%043d", n);
    s->nonce[0] = (uint8_t)n;
    snprintf(s->tee, sizeof(s->tee), "sim");
    s->expires = expires;
}

static void test_sessions(void **state)
{
    (void)state;
    kbs_sessions *t = kbs_sessions_new(3);
    kbs_session s, f;
    for (int i = 0; i < 3; i++) {
        mk_session(&s, i, i == 0 ? 100 : 1000);
        assert_int_equal(kbs_sessions_add(t, &s, 50, NULL), 0);
    }
    /* full of challenged sessions, none expired: the oldest (0) gives way to a new one */
    mk_session(&s, 9, 1000);
    assert_int_equal(kbs_sessions_add(t, &s, 50, NULL), 0);
    assert_int_equal(kbs_sessions_count(t), 3);
    assert_int_equal(kbs_sessions_find(t, &f, s.id, 50), 0);
    assert_int_equal(f.nonce[0], 9);
    kbs_session_clear(&f);
    mk_session(&s, 0, 0);
    assert_int_equal(kbs_sessions_find(t, &f, s.id, 50), -ENOENT);
    assert_int_equal(kbs_sessions_find(t, &f, "short", 150), -ENOENT);
    /* single-use nonce */
    mk_session(&s, 1, 0);
    assert_int_equal(kbs_sessions_consume(t, s.id, 200), 0);
    assert_int_equal(kbs_sessions_consume(t, s.id, 200), -EALREADY);
    _cleanup_pkey_ EVP_PKEY *tee_key = NULL;
    assert_int_equal(crypto_key_generate_ec(&tee_key, "P-256", NULL), 0);
    /* attested: the table keeps the token's payload as signed and its digest, not the token */
    assert_int_equal(kbs_sessions_set_token(t, s.id, "not-a-jws", tee_key, 2000), -EINVAL);
    static const char payload[] = "{\"iss\":\"x\",\"n\":1}";
    _cleanup_free_ char *tok = NULL;
    assert_int_equal(jws_sign(&tok, NULL, payload, strlen(payload), tee_key, NULL), 0);
    assert_int_equal(kbs_sessions_set_token(t, s.id, tok, tee_key, 2000), 0);
    assert_int_equal(kbs_sessions_find(t, &f, s.id, 1500), 0);
    assert_int_equal(f.state, KBS_SESSION_ATTESTED);
    assert_null(f.token);
    assert_non_null(f.held);
    assert_string_equal(f.held->payload_json, payload);
    assert_int_equal(f.held->payload_size, strlen(payload));
    uint8_t d[32];
    crypto_hash_oneshot(CRYPTO_SHA256, tok, strlen(tok), d);
    assert_memory_equal(f.held->token_sha256, d, 32);
    assert_ptr_equal(f.tee_key, tee_key); /* the imported key itself, by reference */
    kbs_session_clear(&f);
    /* attested (1, 9) and in-use (2) sessions never give way: full of them, a new one waits */
    mk_session(&s, 9, 0);
    assert_int_equal(kbs_sessions_consume(t, s.id, 200), 0);
    assert_int_equal(kbs_sessions_set_token(t, s.id, tok, NULL, 2000), 0);
    mk_session(&s, 2, 0);
    assert_int_equal(kbs_sessions_consume(t, s.id, 200), 0);
    mk_session(&s, 7, 1000);
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(kbs_sessions_add(t, &s, 200, &err), -EBUSY);
    assert_int_equal(kbs_sessions_count(t), 3);
    /* expiry */
    mk_session(&s, 2, 0);
    assert_int_equal(kbs_sessions_consume(t, s.id, 1000), -ETIMEDOUT);
    assert_int_equal(kbs_sessions_find(t, &f, s.id, 1000), -ETIMEDOUT);
    assert_int_equal(kbs_sessions_find(t, &f, s.id, 1000), -ENOENT); /* dropped */
    assert_true(kbs_sessions_idle_bytes() <= 4096);
    kbs_sessions_free(t);
}

/* ---- store ---- */

static char g_tmp[64];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/test_kbs.XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    cista_error *err = NULL;
    int r = util_rm_rf_at(AT_FDCWD, g_tmp, &err);
    err_free(err);
    return r < 0 ? -1 : 0;
}

static void test_store_sqlite(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/kbs.db", g_tmp);
    uint8_t mk[32], mk2[32];
    memset(mk, 7, sizeof(mk));
    memset(mk2, 8, sizeof(mk2));
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .master_key = mk, .init_schema = true};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    assert_int_equal(kbs_store_put_resource(s, "default/key/1", "hello", 5, NULL), 0);
    assert_int_equal(kbs_store_put_resource(s, "default/key/2", "", 0, NULL), 0);
    uint8_t *v = NULL;
    size_t n = 0;
    assert_int_equal(kbs_store_get_resource(s, &v, &n, "default/key/1", NULL), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(v, "hello", 5);
    kbs_secret_free(v, n);
    assert_int_equal(kbs_store_put_resource(s, "default/key/1", "world!", 6, NULL), 0);
    assert_int_equal(kbs_store_get_resource(s, &v, &n, "default/key/1", NULL), 0);
    assert_int_equal(n, 6);
    kbs_secret_free(v, n);
    assert_int_equal(kbs_store_get_resource(s, &v, &n, "default/key/3", NULL), -ENOENT);
    assert_int_equal(kbs_store_put_resource(s, "../etc/passwd", "x", 1, NULL), -EINVAL);
    assert_int_equal(kbs_store_put_resource(s, "a/b", "x", 1, NULL), -EINVAL);
    _cleanup_json_ json_t *list = NULL;
    assert_int_equal(kbs_store_list_resources(s, &list, NULL), 0);
    assert_int_equal(json_array_size(list), 2);
    assert_int_equal(kbs_store_delete_resource(s, "default/key/2", NULL), 0);
    assert_int_equal(kbs_store_delete_resource(s, "default/key/2", NULL), -ENOENT);
    /* at rest: no plaintext in the file; a row moved to another path fails to decrypt */
    {
        sqlite3 *raw = NULL;
        assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(raw, "SELECT value FROM kv WHERE key='default/key/1'",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_null(
            memmem(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), "world", 5));
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_exec(raw,
                                      "INSERT INTO kv SELECT ns, 'default/key/9', value FROM kv "
                                      "WHERE key='default/key/1'",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(raw);
    }
    assert_int_equal(kbs_store_get_resource(s, &v, &n, "default/key/9", NULL), -EBADMSG);
    /* another master key cannot read */
    {
        kbs_store_opts o2 = o;
        o2.master_key = mk2;
        _cleanup_store_ kbs_store *s2 = NULL;
        assert_int_equal(kbs_store_open(&s2, &o2, NULL), 0);
        assert_int_equal(kbs_store_get_resource(s2, &v, &n, "default/key/1", NULL), -EBADMSG);
    }
    /* documents */
    assert_int_equal(kbs_store_set_doc(s, "policy", "default", "{\"a\":1}", NULL), 0);
    _cleanup_free_ char *doc = NULL;
    assert_int_equal(kbs_store_get_doc(s, &doc, "policy", "default", NULL), 0);
    assert_string_equal(doc, "{\"a\":1}");
    assert_int_equal(kbs_store_set_doc(s, "secrets", "x", "{}", NULL), -EINVAL);
    /* documents are tagged under the master key: a database writer cannot loosen a policy,
     * move one to another key, or add an untagged one */
    assert_int_equal(kbs_store_set_doc(s, "policy", "prod/*", "{\"b\":2}", NULL), 0);
    {
        sqlite3 *raw = NULL;
        assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(raw,
                         "UPDATE kv SET value = replace(value, '\"a\":1', '\"a\":2') "
                         "WHERE ns='policy' AND key='default';"
                         "INSERT INTO kv SELECT ns, 'moved', value FROM kv WHERE key='prod/*';"
                         "INSERT INTO kv VALUES ('policy', 'plain', '{}');",
                         NULL, NULL, NULL),
            SQLITE_OK);
        sqlite3_close(raw);
    }
    char *bad = NULL;
    _cleanup_err_ cista_error *de1 = NULL, *de2 = NULL, *de3 = NULL;
    assert_int_equal(kbs_store_get_doc(s, &bad, "policy", "default", &de1), -EBADMSG);
    assert_non_null(strstr(de1->msg, "modified"));
    assert_int_equal(kbs_store_get_doc(s, &bad, "policy", "moved", &de2), -EBADMSG);
    assert_int_equal(kbs_store_get_doc(s, &bad, "policy", "plain", &de3), -EBADMSG);
    assert_non_null(strstr(de3->msg, "no integrity tag"));
    _cleanup_free_ char *ok2 = NULL;
    assert_int_equal(kbs_store_get_doc(s, &ok2, "policy", "prod/*", NULL), 0);
    assert_string_equal(ok2, "{\"b\":2}");
    assert_int_equal(kbs_store_set_doc(s, "policy", "default", "{\"a\":1}", NULL), 0);
    /* jti replay */
    assert_int_equal(kbs_store_use_jti(s, "abc", 1000, 900, NULL), 0);
    assert_int_equal(kbs_store_use_jti(s, "abc", 1000, 900, NULL), -EEXIST);
    /* shared sessions */
    kbs_session ss, f;
    mk_session(&ss, 5, 2000);
    assert_int_equal(kbs_store_session_add(s, &ss, 1000, NULL), 0);
    assert_int_equal(kbs_store_session_find(s, &f, ss.id, 1000, NULL), 0);
    assert_int_equal(f.nonce[0], 5);
    assert_string_equal(f.tee, "sim");
    kbs_session_clear(&f);
    assert_int_equal(kbs_store_session_consume(s, ss.id, 1000, NULL), 0);
    assert_int_equal(kbs_store_session_consume(s, ss.id, 1000, NULL), -EALREADY);
    assert_int_equal(kbs_store_session_set_token(s, ss.id, "t0k", 3000, NULL), 0);
    assert_int_equal(kbs_store_session_find(s, &f, ss.id, 2500, NULL), 0);
    assert_string_equal(f.token, "t0k");
    kbs_session_clear(&f);
    assert_int_equal(kbs_store_session_find(s, &f, ss.id, 3500, NULL), -ETIMEDOUT);
    /* audit chain */
    for (int i = 0; i < 5; i++) {
        kbs_audit_entry e = {"attest",  "sim",        NULL, NULL, i % 2 ? "deny" : "allow",
                             "because", "127.0.0.1:1"};
        assert_int_equal(kbs_store_audit_append(s, &e, 1000 + i, NULL), 0);
    }
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    assert_int_equal(count, 5);
    _cleanup_json_ json_t *entries = NULL;
    assert_int_equal(kbs_store_audit_list(s, &entries, 2, 10, NULL), 0);
    assert_int_equal(json_array_size(entries), 3);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(entries, 1), "entry"), "decision")),
                        "deny");
    {
        sqlite3 *raw = NULL;
        assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
        /* the triggers refuse edits ... */
        assert_int_not_equal(
            sqlite3_exec(raw, "UPDATE audit SET body='x' WHERE id=2", NULL, NULL, NULL), SQLITE_OK);
        assert_int_not_equal(sqlite3_exec(raw, "DELETE FROM audit WHERE id=2", NULL, NULL, NULL),
                             SQLITE_OK);
        /* ... and an edit behind their back breaks the chain */
        assert_int_equal(sqlite3_exec(raw,
                                      "DROP TRIGGER audit_no_update; UPDATE audit SET body="
                                      "replace(body,'deny','allow') WHERE id=2",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(raw);
    }
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(kbs_store_audit_verify(s, &count, &err), -EBADMSG);
    assert_non_null(strstr(err->msg, "entry 2"));
}

/* ---- the keyed audit chain, and what a database writer can and cannot do to it ---- */

/* An entry's hash as a cista before keyed chains wrote it: hex SHA-256(prev "\n" time "\n" body).
 */
static void unkeyed_hash(char out[65], const char *prev, long long t, const char *body)
{
    char ts[32];
    snprintf(ts, sizeof(ts), "\n%lld\n", t);
    uint8_t d[32];
    crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
    crypto_hash_update(h, prev, strlen(prev));
    crypto_hash_update(h, ts, strlen(ts));
    crypto_hash_update(h, body, strlen(body));
    crypto_hash_final(h, d);
    crypto_hash_free(h);
    _cleanup_free_ char *hex = hex_encode(d, sizeof(d));
    memcpy(out, hex, 65);
}

static sqlite3 *raw_open(const char *db)
{
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    return raw;
}

static void raw_exec(sqlite3 *raw, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(raw, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* Append @n entries the way a cista before keyed chains did (plain SQL, unkeyed hashes). */
static void append_unkeyed(const char *db, int n, long long t0)
{
    sqlite3 *raw = raw_open(db);
    char prev[128] = "";
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(raw, "SELECT hash FROM audit ORDER BY id DESC LIMIT 1", -1, &st, NULL),
        SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(prev, sizeof(prev), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++) {
        char body[96], hash[65];
        snprintf(
            body, sizeof(body),
            "{\"decision\":\"allow\",\"event\":\"auth\",\"reason\":\"old %d\",\"tee\":\"sim\"}", i);
        unkeyed_hash(hash, prev, t0 + i, body);
        assert_int_equal(sqlite3_prepare_v2(raw,
                                            "INSERT INTO audit (time, body, prev, hash) VALUES "
                                            "(?1, ?2, ?3, ?4)",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, t0 + i);
        sqlite3_bind_text(st, 2, body, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, prev, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, hash, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
        memcpy(prev, hash, 65);
    }
    sqlite3_close(raw);
}

/*
 * What a database writer without the master key does to hide an edit: drop the append-only
 * triggers, then recompute the plain SHA-256 chain over entries @from to @to (each rewritten in
 * the unkeyed form, the first linked to entry @from - 1 as stored).
 */
static void rechain_unkeyed(sqlite3 *raw, int64_t from, int64_t to)
{
    raw_exec(raw, "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete");
    char prev[128] = "";
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(raw, "SELECT hash FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT 1", -1,
                           &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, from);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(prev, sizeof(prev), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    for (int64_t id = from; id <= to; id++) {
        assert_int_equal(
            sqlite3_prepare_v2(raw, "SELECT time, body FROM audit WHERE id = ?1", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_finalize(st);
            break;
        }
        char hash[65];
        unkeyed_hash(hash, prev, sqlite3_column_int64(st, 0),
                     (const char *)sqlite3_column_text(st, 1));
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_prepare_v2(raw,
                                            "UPDATE audit SET prev = ?1, hash = ?2 WHERE id = ?3",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, prev, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, id);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
        memcpy(prev, hash, 65);
    }
}

/* Verify expecting failure @code with @words in the message. */
static void verify_fails(kbs_store *s, int code, const char *words)
{
    size_t count = 0;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(kbs_store_audit_verify(s, &count, &err), code);
    assert_non_null(err);
    if (!strstr(err->msg, words))
        fail_msg("verify: \"%s\" does not say \"%s\"", err->msg, words);
}

static void append_keyed(kbs_store *s, int n, time_t t0)
{
    for (int i = 0; i < n; i++) {
        kbs_audit_entry e = {
            "resource", "sim",        NULL, "default/key/1", i % 2 ? "deny" : "allow",
            "new",      "127.0.0.1:1"};
        assert_int_equal(kbs_store_audit_append(s, &e, t0 + i, NULL), 0);
    }
}

static void test_audit_keyed(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/keyed.db", g_tmp);
    uint8_t mk[32], mk2[32];
    memset(mk, 7, sizeof(mk));
    memset(mk2, 8, sizeof(mk2));
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .master_key = mk, .init_schema = true};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    append_keyed(s, 3, 1000);
    const char *bodies[2] = {"{\"event\":\"auth\",\"n\":1}", "{\"event\":\"auth\",\"n\":2}"};
    time_t times[2] = {1003, 1004};
    assert_int_equal(kbs_store_audit_append_bodies(s, bodies, times, 2, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    assert_int_equal(count, 5);
    /* every entry is keyed; the first links to "" */
    _cleanup_json_ json_t *list = NULL;
    assert_int_equal(kbs_store_audit_list(s, &list, 0, 10, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "prev")), "");
    for (size_t i = 0; i < json_array_size(list); i++)
        assert_int_equal(
            strncmp(json_string_value(json_object_get(json_array_get(list, i), "hash")),
                    "hmac:", 5),
            0);
    /* without the master key: keyed entries cannot be checked, and none can be added unkeyed */
    {
        kbs_store_opts o2 = o;
        o2.master_key = NULL;
        _cleanup_store_ kbs_store *s2 = NULL;
        assert_int_equal(kbs_store_open(&s2, &o2, NULL), 0);
        verify_fails(s2, -ENOKEY, "without a master key");
        kbs_audit_entry e = {"auth", "sim", NULL, NULL, "allow", "x", NULL};
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(kbs_store_audit_append(s2, &e, 2000, &err), -ENOKEY);
        assert_non_null(strstr(err->msg, "would break the chain"));
    }
    /* another master key: every MAC fails */
    {
        kbs_store_opts o2 = o;
        o2.master_key = mk2;
        _cleanup_store_ kbs_store *s2 = NULL;
        assert_int_equal(kbs_store_open(&s2, &o2, NULL), 0);
        verify_fails(s2, -EBADMSG, "entry 1: its MAC does not match");
    }
    /* a database writer edits entry 3 and recomputes the plain SHA-256 chain from there */
    {
        sqlite3 *raw = raw_open(db);
        raw_exec(raw, "DROP TRIGGER audit_no_update");
        raw_exec(raw, "UPDATE audit SET body = replace(body, 'allow', 'deny') WHERE id = 3");
        rechain_unkeyed(raw, 3, INT64_MAX);
        sqlite3_close(raw);
    }
    verify_fails(s, -EBADMSG, "entry 3 is unkeyed but follows keyed entries");
    /* ... or from the first entry: an all-unkeyed log, which is never accepted unadopted */
    {
        sqlite3 *raw = raw_open(db);
        rechain_unkeyed(raw, 1, INT64_MAX);
        sqlite3_close(raw);
    }
    verify_fails(s, -EBADMSG, "entries 1-5 are unkeyed");
    verify_fails(s, -EBADMSG, "never adopted");
    /* ... and keeping the keyed form with a recomputed SHA-256 is a MAC mismatch */
    {
        sqlite3 *raw = raw_open(db);
        raw_exec(raw, "UPDATE audit SET prev = '', hash = 'hmac:' || hash WHERE id = 1");
        sqlite3_close(raw);
    }
    verify_fails(s, -EBADMSG, "entry 1: its MAC does not match");
}

static void test_audit_legacy(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/legacy.db", g_tmp);
    uint8_t mk[32];
    memset(mk, 7, sizeof(mk));
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .master_key = mk, .init_schema = true};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    /* entries 1-3 written by an older cista, then this one appends keyed entries 4-6 */
    append_unkeyed(db, 3, 500);
    char head[65] = "", second[65] = "";
    {
        _cleanup_json_ json_t *list = NULL;
        assert_int_equal(kbs_store_audit_list(s, &list, 0, 10, NULL), 0);
        snprintf(second, sizeof(second), "%s",
                 json_string_value(json_object_get(json_array_get(list, 1), "hash")));
        snprintf(head, sizeof(head), "%s",
                 json_string_value(json_object_get(json_array_get(list, 2), "hash")));
    }
    verify_fails(s, -EBADMSG, head); /* the message names the hash to adopt */
    append_keyed(s, 3, 600);
    verify_fails(s, -EBADMSG, "entries 1-3 are unkeyed");
    verify_fails(s, -EBADMSG, "audit-adopt");
    /* adoption needs the prefix's last hash exactly */
    {
        _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
        assert_int_equal(kbs_store_audit_adopt(s, second, &e1), -EINVAL);
        assert_non_null(strstr(e1->msg, head));
        assert_int_equal(kbs_store_audit_adopt(s, "not-a-hash", &e2), -EINVAL);
    }
    assert_int_equal(kbs_store_audit_adopt(s, head, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    assert_int_equal(count, 6);
    assert_int_equal(kbs_store_audit_adopt(s, head, NULL), 0); /* idempotent */
    {
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(kbs_store_audit_adopt(s, second, &err), -EINVAL);
        assert_non_null(strstr(err->msg, "already adopted"));
    }
    append_keyed(s, 2, 700);
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    assert_int_equal(count, 8);
    /* a store without the master key: cannot verify the keyed part nor adopt */
    {
        kbs_store_opts o2 = o;
        o2.master_key = NULL;
        _cleanup_store_ kbs_store *s2 = NULL;
        assert_int_equal(kbs_store_open(&s2, &o2, NULL), 0);
        verify_fails(s2, -ENOKEY, "entry 4 is keyed");
        _cleanup_err_ cista_error *err = NULL;
        assert_int_equal(kbs_store_audit_adopt(s2, head, &err), -ENOKEY);
    }
    /* the adoption record is tagged: an edit is refused */
    {
        sqlite3 *raw = raw_open(db);
        raw_exec(raw, "UPDATE kv SET value = replace(value, 'head', 'hea' || 'd ') "
                      "WHERE ns = 'audit'");
        sqlite3_close(raw);
        verify_fails(s, -EBADMSG, "modified");
        raw = raw_open(db);
        raw_exec(raw, "UPDATE kv SET value = replace(value, 'head ', 'head') WHERE ns = 'audit'");
        sqlite3_close(raw);
        assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    }
    /* downgrade: the keyed entries 4-8 rewritten unkeyed (with an edit) run past the adopted
     * prefix */
    _cleanup_free_ char *copy = xasprintf("%s/legacy-copy.db", g_tmp);
    {
        sqlite3 *raw = raw_open(db);
        _cleanup_free_ char *sql = xasprintf("VACUUM INTO '%s'", copy);
        raw_exec(raw, sql);
        raw_exec(raw, "DROP TRIGGER audit_no_update");
        raw_exec(raw, "UPDATE audit SET body = replace(body, 'deny', 'allow') WHERE id = 5");
        rechain_unkeyed(raw, 4, INT64_MAX);
        sqlite3_close(raw);
    }
    verify_fails(s, -EBADMSG, "entry 4 is unkeyed but the adopted unkeyed prefix ends before it");
    /* ... and deleting the adoption record as well leaves an unadopted log, never an accepted
     * one (a row's deletion is what a tag cannot show) */
    {
        sqlite3 *raw = raw_open(db);
        raw_exec(raw, "DELETE FROM kv WHERE ns = 'audit'");
        sqlite3_close(raw);
    }
    verify_fails(s, -EBADMSG, "entries 1-8 are unkeyed");
    /* on the untouched copy: removing the unkeyed entries (all of them, or the oldest) shows */
    kbs_store_opts oc = o;
    oc.sqlite_path = copy;
    _cleanup_store_ kbs_store *sc = NULL;
    assert_int_equal(kbs_store_open(&sc, &oc, NULL), 0);
    assert_int_equal(kbs_store_audit_verify(sc, &count, NULL), 0);
    {
        sqlite3 *raw = raw_open(copy);
        raw_exec(raw, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 1");
        rechain_unkeyed(raw, 2, 3);
        sqlite3_close(raw);
    }
    verify_fails(sc, -EBADMSG, "entry 4 does not link");
    {
        sqlite3 *raw = raw_open(copy);
        rechain_unkeyed(raw, 2, INT64_MAX);
        sqlite3_close(raw);
    }
    verify_fails(sc, -EBADMSG, "the log's unkeyed entries end at entry 8");
    {
        sqlite3 *raw = raw_open(copy);
        raw_exec(raw, "DELETE FROM audit");
        sqlite3_close(raw);
    }
    verify_fails(sc, -EBADMSG, "the log has no unkeyed entries: entries were removed");
}

/* ---- JWS and tokens ---- */

static void test_jws_rfc7515(void **state)
{
    (void)state;
    /* RFC 7515 appendix A.3 (ES256) */
    const char *jws =
        "eyJhbGciOiJFUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290"
        "Ijp0cnVlfQ"
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    _cleanup_json_ json_t *jwk =
        J("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
          "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}");
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    assert_int_equal(jwk_to_key(&pub, jwk, NULL), 0);
    uint8_t *p = NULL;
    size_t n = 0;
    assert_int_equal(jws_verify(&p, &n, NULL, jws, strlen(jws), pub, NULL, NULL), 0);
    assert_non_null(strstr((char *)p, "\"iss\":\"joe\""));
    free(p);
    /* a flipped signature bit, a changed payload, ES384 refused by the caller */
    _cleanup_free_ char *bad = xstrdup(jws);
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
    _cleanup_err_ cista_error *e1 = NULL;
    assert_int_equal(jws_verify(&p, &n, NULL, bad, strlen(bad), pub, NULL, &e1), -EBADMSG);
    static const char *const only384[] = {"ES384", NULL};
    _cleanup_err_ cista_error *e2 = NULL;
    assert_int_equal(jws_verify(&p, &n, NULL, jws, strlen(jws), pub, only384, &e2), -ENOTSUP);
    _cleanup_err_ cista_error *e3 = NULL;
    const char *none = "eyJhbGciOiJub25lIn0.eyJhIjoxfQ.";
    assert_true(jws_verify(&p, &n, NULL, none, strlen(none), pub, NULL, &e3) < 0);
    /* sign + verify round trips with P-256 and P-384 */
    const char *curves[] = {"P-256", "P-384"};
    for (size_t i = 0; i < 2; i++) {
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        assert_int_equal(crypto_key_generate_ec(&k, curves[i], NULL), 0);
        _cleanup_free_ char *t = NULL;
        assert_int_equal(jws_sign(&t, NULL, "payload", 7, k, NULL), 0);
        _cleanup_json_ json_t *h = NULL;
        assert_int_equal(jws_verify(&p, &n, &h, t, strlen(t), k, NULL, NULL), 0);
        assert_string_equal((char *)p, "payload");
        assert_string_equal(json_string_value(json_object_get(h, "alg")), i ? "ES384" : "ES256");
        free(p);
    }
}

static void test_tokens(void **state)
{
    (void)state;
    _cleanup_pkey_ EVP_PKEY *k = NULL, *other = NULL, *eph = NULL;
    assert_int_equal(crypto_key_generate_ec(&k, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&other, "P-256", NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&eph, "P-256", NULL), 0);
    _cleanup_json_ json_t *jwk = NULL;
    assert_int_equal(jwk_from_key(&jwk, eph, false, NULL), 0);
    _cleanup_json_ json_t *claims = J("{\"tee\":\"sim\",\"insecure\":true,\"host_data\":\"00\"}");
    _cleanup_free_ char *tok = NULL;
    assert_int_equal(
        kbs_token_issue(&tok, k, claims, "affirming", NULL, jwk, "n0nce", NULL, 300, 1000, NULL),
        0);
    _cleanup_json_ json_t *p = NULL;
    assert_int_equal(kbs_token_verify(&p, k, tok, strlen(tok), 1100, NULL), 0);
    assert_true(json_equal((json_t *)kbs_token_tee_pubkey(p), jwk));
    _cleanup_json_ json_t *in = kbs_token_policy_input(p, "default/key/1");
    assert_string_equal(json_string_value(pol_claim_lookup(in, "appraisal.status")), "affirming");
    assert_string_equal(json_string_value(pol_claim_lookup(in, "tee")), "sim");
    assert_string_equal(json_string_value(pol_claim_lookup(in, "resource.type")), "key");
    assert_null(pol_claim_lookup(in, "runtime_data_claims"));
    json_t *x = NULL;
    _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL, *e5 = NULL;
    assert_int_equal(kbs_token_verify(&x, k, tok, strlen(tok), 1300, &e1), -EKEYEXPIRED);
    assert_int_equal(kbs_token_verify(&x, other, tok, strlen(tok), 1100, &e2), -EBADMSG);
    /* admin tokens */
    _cleanup_free_ char *at = NULL, *jti = NULL;
    time_t exp = 0;
    assert_int_equal(kbs_admin_token_make(&at, k, 60, 1000, NULL), 0);
    assert_int_equal(kbs_admin_token_check(&jti, &exp, k, at, strlen(at), 1010, NULL), 0);
    assert_int_equal(exp, 1060);
    assert_int_equal(kbs_admin_token_check(&jti, &exp, other, at, strlen(at), 1010, &e3), -EBADMSG);
    assert_int_equal(kbs_admin_token_check(&jti, &exp, k, at, strlen(at), 2000, &e4), -EKEYEXPIRED);
    /* an attestation token is not an admin token (audience) */
    assert_int_equal(kbs_admin_token_check(&jti, &exp, k, tok, strlen(tok), 1010, &e5),
                     -EKEYREJECTED);
}

/* ---- protocol parsers ---- */

static void test_parsers(void **state)
{
    (void)state;
    kbs_auth_req a;
    json_t *doc = NULL;
    const char *b1 = "{\"version\":\"0.4.0\",\"tee\":\"az-snp-vtpm\",\"extra-params\":{"
                     "\"supported-hash-algorithms\":[\"sha256\",\"sha512\"]}}";
    assert_int_equal(kbs_parse_auth(&a, &doc, b1, strlen(b1), NULL), 0);
    assert_string_equal(a.tee, "azure-snp-vtpm");
    assert_int_equal(a.hash, CRYPTO_SHA512);
    assert_int_equal(a.proto, KBS_PROTO_V4);
    json_decref(doc);
    const char *b2 = "{\"version\":\"0.2.0\",\"tee\":\"sim\",\"extra-params\":\"\"}";
    assert_int_equal(kbs_parse_auth(&a, &doc, b2, strlen(b2), NULL), 0);
    assert_int_equal(a.proto, KBS_PROTO_V2);
    assert_int_equal(a.hash, CRYPTO_SHA384);
    json_decref(doc);
    _cleanup_err_ cista_error *e1 = NULL, *e2 = NULL;
    const char *b3 = "{\"version\":\"1.0.0\",\"tee\":\"sim\"}";
    assert_int_equal(kbs_parse_auth(&a, &doc, b3, strlen(b3), &e1), -EPROTONOSUPPORT);
    assert_non_null(strstr(e1->msg, "0.4.0"));
    const char *b4 = "{\"version\":\"0.4.0\",\"tee\":\"sample\"}";
    assert_int_equal(kbs_parse_auth(&a, &doc, b4, strlen(b4), &e2), -ENOTSUP);
    static const char *const paths_ok[] = {"default/key/1", "a.b/c_d/e-f"};
    static const char *const paths_bad[] = {"default/key", "a/b/c/d", "../b/c", "a//c",
                                            "a/b/c d",     "a/./c",   "",       "/a/b"};
    for (size_t i = 0; i < ARRAY_LEN(paths_ok); i++)
        assert_int_equal(kbs_check_resource_path(paths_ok[i], NULL), 0);
    for (size_t i = 0; i < ARRAY_LEN(paths_bad); i++) {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_check_resource_path(paths_bad[i], &e), -EINVAL);
    }
}

/* ---- counters in the store: CAS semantics and a race between connections ---- */

typedef struct {
    const char *db;
    pthread_barrier_t *bar;
    int result;
} ctr_race;

static void *ctr_racer(void *arg)
{
    ctr_race *cr = arg;
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = cr->db};
    kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    kbs_counter cur;
    uint8_t root[32];
    memset(root, (int)(uintptr_t)arg & 0xff, sizeof(root));
    pthread_barrier_wait(cr->bar);
    cista_error *e = NULL;
    cr->result = kbs_store_counter_cas(s, &cur, "vol/anchor/race", 3, 4, root, 32, 100, &e);
    err_free(e);
    kbs_store_close(s);
    return NULL;
}

/* Stored sessions are bounded like the memory table: the challenged one expiring first gives
 * way, attested ones never. */
static void test_store_sessions_bounded(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/sess-bound.db", g_tmp);
    kbs_store_opts o = {
        .kind = "sqlite", .sqlite_path = db, .init_schema = true, .max_sessions = 3};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    kbs_session ss, f;
    for (int i = 1; i <= 3; i++) {
        mk_session(&ss, i, 2000 + i);
        assert_int_equal(kbs_store_session_add(s, &ss, 1000, NULL), 0);
    }
    /* full: session 1 (challenged, expiring first) gives way to 4 */
    mk_session(&ss, 4, 2004);
    assert_int_equal(kbs_store_session_add(s, &ss, 1000, NULL), 0);
    mk_session(&ss, 1, 0);
    assert_int_equal(kbs_store_session_find(s, &f, ss.id, 1000, NULL), -ENOENT);
    for (int i = 2; i <= 4; i++) {
        mk_session(&ss, i, 0);
        assert_int_equal(kbs_store_session_find(s, &f, ss.id, 1000, NULL), 0);
        kbs_session_clear(&f);
        assert_int_equal(kbs_store_session_consume(s, ss.id, 1000, NULL), 0);
        assert_int_equal(kbs_store_session_set_token(s, ss.id, "tok", 3000, NULL), 0);
    }
    /* all attested: nothing gives way, the add is refused */
    mk_session(&ss, 5, 2005);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(kbs_store_session_add(s, &ss, 1000, &e), -EBUSY);
    assert_non_null(strstr(e->msg, "sessions.max"));
    /* once they expire, there is room again */
    assert_int_equal(kbs_store_session_add(s, &ss, 3001, NULL), 0);
}

static void test_store_counters(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/ctr.db", g_tmp);
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .init_schema = true};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    kbs_counter k;
    const char *p = "vol/anchor/a";
    uint8_t r1[32], r2[32];
    memset(r1, 1, sizeof(r1));
    memset(r2, 2, sizeof(r2));
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_get(s, &k, p, &e), -ENOENT);
    }
    /* a missing counter is generation 0 */
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_cas(s, &k, p, 1, 2, r1, 32, 10, &e), -ESTALE);
        assert_int_equal(k.generation, 0);
    }
    assert_int_equal(kbs_store_counter_cas(s, &k, p, 0, 1, r1, 32, 10, NULL), 0);
    assert_int_equal(kbs_store_counter_get(s, &k, p, NULL), 0);
    assert_int_equal(k.generation, 1);
    assert_int_equal(k.root_size, 32);
    assert_memory_equal(k.root, r1, 32);
    assert_int_equal(k.updated, 10);
    /* stale expected, equal and lower new generations: conflict with the current value */
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_cas(s, &k, p, 0, 7, r2, 32, 11, &e), -ESTALE);
        assert_int_equal(k.generation, 1);
        assert_memory_equal(k.root, r1, 32);
    }
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_cas(s, &k, p, 1, 1, r2, 32, 11, &e), -ESTALE);
        assert_int_equal(k.generation, 1);
    }
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_cas(s, &k, p, 1, 0, r2, 32, 11, &e), -ESTALE);
    }
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_cas(s, &k, p, 1, 2, r2, 65, 11, &e), -EINVAL);
        assert_int_equal(
            kbs_store_counter_cas(s, &k, p, 1, (uint64_t)INT64_MAX + 1, r2, 32, 11, &e), -EINVAL);
        assert_int_equal(kbs_store_counter_cas(s, &k, "../x/y", 1, 2, r2, 32, 11, &e), -EINVAL);
    }
    assert_int_equal(kbs_store_counter_cas(s, &k, p, 1, 9, r2, 32, 12, NULL), 0);
    assert_int_equal(kbs_store_counter_get(s, &k, p, NULL), 0);
    assert_int_equal(k.generation, 9);
    assert_memory_equal(k.root, r2, 32);
    /* admin set moves it anywhere (also backwards), delete removes it */
    assert_int_equal(kbs_store_counter_set(s, p, 3, NULL, 0, 13, NULL), 0);
    assert_int_equal(kbs_store_counter_get(s, &k, p, NULL), 0);
    assert_int_equal(k.generation, 3);
    assert_int_equal(k.root_size, 0);
    assert_int_equal(kbs_store_counter_delete(s, p, NULL), 0);
    {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(kbs_store_counter_delete(s, p, &e), -ENOENT);
    }
    /* durable: another connection sees it after reopening */
    assert_int_equal(kbs_store_counter_set(s, "vol/anchor/race", 3, NULL, 0, 1, NULL), 0);
    kbs_store_close(s);
    s = NULL;
    /* eight connections race from generation 3 to 4: exactly one wins */
    enum { N = 8 };
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    pthread_t th[N];
    ctr_race cr[N];
    for (int i = 0; i < N; i++) {
        cr[i] = (ctr_race){.db = db, .bar = &bar, .result = 1};
        assert_int_equal(pthread_create(&th[i], NULL, ctr_racer, &cr[i]), 0);
    }
    int wins = 0, conflicts = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        wins += cr[i].result == 0;
        conflicts += cr[i].result == -ESTALE;
    }
    pthread_barrier_destroy(&bar);
    assert_int_equal(wins, 1);
    assert_int_equal(conflicts, N - 1);
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    assert_int_equal(kbs_store_counter_get(s, &k, "vol/anchor/race", NULL), 0);
    assert_int_equal(k.generation, 4);
}

/* ---- transport-free RCAR with sim evidence ---- */

typedef struct {
    kbs_ctx *ctx;
    char cookie[128];
} rcar;

static long call(rcar *r, const char *method, const char *path, const char *body, const char *authz,
                 json_t **out)
{
    kbs_request req = {.method = method,
                       .path = path,
                       .cookie = r->cookie[0] ? r->cookie : NULL,
                       .authorization = authz,
                       .body = (const uint8_t *)(body ? body : ""),
                       .body_size = body ? strlen(body) : 0,
                       .peer = "test"};
    kbs_response resp;
    memset(&resp, 0, sizeof(resp));
    kbs_handle(r->ctx, &req, &resp);
    if (resp.set_cookie) {
        size_t n = strcspn(resp.set_cookie, ";");
        snprintf(r->cookie, sizeof(r->cookie), "%.*s", (int)n, resp.set_cookie);
    }
    if (out)
        *out = json_loadb((const char *)resp.body.data, resp.body.size, 0, NULL);
    long st = resp.status;
    kbs_response_clear(&resp);
    return st;
}

static char *attest_body(const char *sim_dir, const char *nonce, EVP_PKEY *key,
                         const char *bind_nonce)
{
    _cleanup_json_ json_t *jwk = NULL;
    assert_int_equal(jwk_from_key(&jwk, key, false, NULL), 0);
    uint8_t rd[64];
    assert_int_equal(kbs_binding(rd, CRYPTO_SHA384, bind_nonce, jwk, "", NULL), 0);
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = sim_dir;
    uint8_t *ev = NULL, *aux = NULL;
    size_t evs = 0, auxs = 0;
    assert_int_equal(ev_find("sim")->get(&ev, &evs, &aux, &auxs, rd, &g, NULL), 0);
    _cleanup_free_ char *ev64 = b64_encode(ev, evs);
    free(ev);
    free(aux);
    _cleanup_json_ json_t *b =
        json_pack("{s:{s:s,s:O},s:{s:{s:s,s:s},s:s}}", "runtime-data", "nonce", nonce, "tee-pubkey",
                  jwk, "tee-evidence", "primary_evidence", "tee", "sim", "evidence", ev64,
                  "additional_evidence", "");
    return js_dump_compact(b);
}

static void test_rcar_inprocess(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = xasprintf("%s/kbs", g_tmp);
    _cleanup_free_ char *sim = xasprintf("%s/sim", g_tmp);
    assert_int_equal(kbs_init_dir(dir, NULL), 0);
    assert_int_equal(ev_sim_init(sim, NULL, NULL), 0);
    /* Two trusted sim platforms, ours second: its reports fail the first key's platform check
     * and must be tried against the second. */
    _cleanup_free_ char *sim0 = xasprintf("%s/sim0", g_tmp);
    assert_int_equal(ev_sim_init(sim0, NULL, NULL), 0);
    _cleanup_free_ char *cfgp = xasprintf("%s/kbs.json", dir);
    _cleanup_free_ char *cfgt = xasprintf(
        "{\"signing_key\":\"kbs-signing-key.pem\",\"admin_public_key\":\"admin-pub.pem\","
        "\"master_key\":\"master.key\",\"store\":{\"type\":\"sqlite\",\"path\":\"kbs.db\"},"
        "\"sim_platform_keys\":[\"%s/platform-pub.pem\",\"%s/platform-pub.pem\"]}",
        sim0, sim);
    assert_int_equal(util_write_file_atomic(AT_FDCWD, cfgp, cfgt, strlen(cfgt), 0600, NULL), 0);
    _cleanup_kbs_config_ kbs_config *cfg = NULL;
    assert_int_equal(kbs_config_load(&cfg, cfgp, NULL), 0);
    rcar r = {0};
    assert_int_equal(kbs_ctx_new(&r.ctx, cfg, NULL), 0);
    /* admin: no token, wrong key, then the right one */
    _cleanup_free_ char *admin_key_path = xasprintf("%s/admin-key.pem", dir);
    _cleanup_pkey_ EVP_PKEY *adm = NULL, *wrong = NULL;
    assert_int_equal(crypto_key_load_file(&adm, admin_key_path, true, NULL), 0);
    assert_int_equal(crypto_key_generate_ec(&wrong, "P-256", NULL), 0);
    assert_int_equal(call(&r, "POST", "/kbs/v0/resource/default/key/1", "s3cret", NULL, NULL), 401);
    _cleanup_free_ char *wt = NULL, *at = NULL, *at2 = NULL;
    assert_int_equal(kbs_admin_token_make(&wt, wrong, 60, time(NULL), NULL), 0);
    _cleanup_free_ char *wauth = xasprintf("Bearer %s", wt);
    assert_int_equal(call(&r, "POST", "/kbs/v0/resource/default/key/1", "s3cret", wauth, NULL),
                     401);
    assert_int_equal(kbs_admin_token_make(&at, adm, 60, time(NULL), NULL), 0);
    _cleanup_free_ char *auth = xasprintf("Bearer %s", at);
    assert_int_equal(call(&r, "POST", "/kbs/v0/resource/default/key/1", "s3cret", auth, NULL), 200);
    assert_int_equal(call(&r, "POST", "/kbs/v0/resource/default/key/1", "again", auth, NULL),
                     401); /* jti replay */
    /* reference values allowing sim */
    assert_int_equal(kbs_admin_token_make(&at2, adm, 60, time(NULL), NULL), 0);
    _cleanup_free_ char *auth2 = xasprintf("Bearer %s", at2);
    assert_int_equal(call(&r, "POST", "/kbs/v0/reference-values",
                          "{\"version\":\"1.0.0\",\"tees\":{\"sim\":{\"allow_insecure\":true}}}",
                          auth2, NULL),
                     200);
    /* RCAR */
    json_t *o = NULL;
    assert_int_equal(
        call(&r, "POST", "/kbs/v0/auth", "{\"version\":\"0.4.0\",\"tee\":\"sim\"}", NULL, &o), 200);
    _cleanup_free_ char *nonce = xstrdup(json_string_value(json_object_get(o, "nonce")));
    json_decref(o);
    _cleanup_pkey_ EVP_PKEY *eph = NULL;
    assert_int_equal(crypto_key_generate_ec(&eph, "P-256", NULL), 0);
    /* nonce mismatch: refused, and the challenge is used up (whatever the outcome) */
    _cleanup_free_ char *bad = attest_body(sim, "AAAA", eph, "AAAA");
    assert_int_equal(call(&r, "POST", "/kbs/v0/attest", bad, NULL, NULL), 401);
    _cleanup_free_ char *good0 = attest_body(sim, nonce, eph, nonce);
    assert_int_equal(call(&r, "POST", "/kbs/v0/attest", good0, NULL, &o), 401);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "already used"));
    json_decref(o);
    free(nonce);
    assert_int_equal(
        call(&r, "POST", "/kbs/v0/auth", "{\"version\":\"0.4.0\",\"tee\":\"sim\"}", NULL, &o), 200);
    nonce = xstrdup(json_string_value(json_object_get(o, "nonce")));
    json_decref(o);
    /* REPORT_DATA not binding this nonce and key */
    _cleanup_free_ char *wrongrd = attest_body(sim, nonce, eph, "other");
    assert_int_equal(call(&r, "POST", "/kbs/v0/attest", wrongrd, NULL, &o), 401);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "report"));
    json_decref(o);
    /* the nonce is now used: even a good body is a replay */
    _cleanup_free_ char *good = attest_body(sim, nonce, eph, nonce);
    assert_int_equal(call(&r, "POST", "/kbs/v0/attest", good, NULL, NULL), 401);
    /* fresh session */
    assert_int_equal(
        call(&r, "POST", "/kbs/v0/auth", "{\"version\":\"0.4.0\",\"tee\":\"sim\"}", NULL, &o), 200);
    _cleanup_free_ char *n2 = xstrdup(json_string_value(json_object_get(o, "nonce")));
    json_decref(o);
    _cleanup_free_ char *good2 = attest_body(sim, n2, eph, n2);
    assert_int_equal(call(&r, "POST", "/kbs/v0/attest", good2, NULL, &o), 200);
    assert_non_null(json_string_value(json_object_get(o, "token")));
    _cleanup_free_ char *tok2 = xstrdup(json_string_value(json_object_get(o, "token")));
    json_decref(o);
    /* warning appraisal: the built-in default policy denies, naming the rule */
    assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, NULL, &o), 403);
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "default-affirming"));
    assert_null(strstr(json_string_value(json_object_get(o, "detail")), "s3cret"));
    json_decref(o);
    /* a policy for every default/key resource allowing sim */
    _cleanup_free_ char *at3 = NULL;
    assert_int_equal(kbs_admin_token_make(&at3, adm, 60, time(NULL), NULL), 0);
    _cleanup_free_ char *auth3 = xasprintf("Bearer %s", at3);
    assert_int_equal(call(&r, "POST", "/kbs/v0/resource-policy/default/key/*",
                          "{\"version\":\"1.0.0\",\"anyOf\":[{\"name\":\"dev-sim\",\"allOf\":[{"
                          "\"claim\":\"tee\",\"equals\":\"sim\"}]}]}",
                          auth3, NULL),
                     200);
    assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, NULL, &o), 200);
    _cleanup_free_ char *jwe = js_dump_compact(o);
    json_decref(o);
    jwe_key k = {.pkey = eph};
    uint8_t *pt = NULL;
    size_t ptn = 0;
    assert_int_equal(jwe_decrypt(&pt, &ptn, jwe, strlen(jwe), &k, 1, NULL, NULL), 0);
    assert_int_equal(ptn, 6);
    assert_memory_equal(pt, "s3cret", 6);
    kbs_secret_free(pt, ptn);
    assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/404", NULL, NULL, NULL), 404);
    /* the session's own token as a bearer (recognised by its digest), the token alone (verified),
     * and a tampered one beside the cookie (neither the session's nor valid) */
    {
        _cleanup_free_ char *b1 = xasprintf("Bearer %s", tok2);
        assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, b1, NULL), 200);
        char saved[sizeof(r.cookie)];
        snprintf(saved, sizeof(saved), "%s", r.cookie);
        r.cookie[0] = 0;
        assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, b1, NULL), 200);
        snprintf(r.cookie, sizeof(r.cookie), "%s", saved);
        b1[strlen(b1) - 3] = b1[strlen(b1) - 3] == 'A' ? 'B' : 'A';
        assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, b1, NULL), 401);
    }
    /* releases read the stored value through a cache: an admin write is seen at once */
    {
        _cleanup_free_ char *t5 = NULL;
        assert_int_equal(kbs_admin_token_make(&t5, adm, 60, time(NULL), NULL), 0);
        _cleanup_free_ char *a5 = xasprintf("Bearer %s", t5);
        assert_int_equal(call(&r, "PUT", "/kbs/v0/resource/default/key/1", "upd4ted", a5, NULL),
                         200);
        assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, NULL, &o), 200);
        _cleanup_free_ char *jwe2 = js_dump_compact(o);
        json_decref(o);
        assert_int_equal(jwe_decrypt(&pt, &ptn, jwe2, strlen(jwe2), &k, 1, NULL, NULL), 0);
        assert_int_equal(ptn, 7);
        assert_memory_equal(pt, "upd4ted", 7);
        kbs_secret_free(pt, ptn);
    }
    /* counters: same token and release policy as resources */
    assert_int_equal(call(&r, "GET", "/kbs/v0/counter/default/key/vol1", NULL, NULL, NULL), 404);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":0,\"generation\":1,\"root\":\"aa\"}", NULL,
                          NULL),
                     200);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":0,\"generation\":2,\"root\":\"cc\"}", NULL, &o),
                     409);
    assert_int_equal(json_integer_value(json_object_get(o, "generation")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "root")), "aa");
    json_decref(o);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":1,\"generation\":1,\"root\":\"cc\"}", NULL,
                          NULL),
                     409);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":1,\"generation\":5,\"root\":\"bb\"}", NULL,
                          NULL),
                     200);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":5,\"generation\":6,\"root\":\"zz\"}", NULL,
                          NULL),
                     400);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1", "{}", NULL, NULL), 400);
    assert_int_equal(call(&r, "GET", "/kbs/v0/counter/default/key/vol1", NULL, NULL, &o), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "generation")), 5);
    assert_string_equal(json_string_value(json_object_get(o, "root")), "bb");
    json_decref(o);
    /* the release policy of the path decides: other/ctr/x falls to the built-in default */
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/other/ctr/x",
                          "{\"expected_generation\":0,\"generation\":1,\"root\":\"\"}", NULL, &o),
                     403);
    json_decref(o);
    assert_int_equal(call(&r, "GET", "/kbs/v0/counter/other/ctr/x", NULL, NULL, NULL), 403);
    assert_int_equal(call(&r, "DELETE", "/kbs/v0/counter/default/key/vol1", NULL, NULL, NULL), 405);
    /* admin: get, reset (backwards), delete; an attestation cookie is no admin token */
    {
        char saved[128];
        snprintf(saved, sizeof(saved), "%s", r.cookie);
        assert_int_equal(call(&r, "PUT", "/kbs/v0/admin/counter/default/key/vol1",
                              "{\"generation\":0}", NULL, NULL),
                         401);
        r.cookie[0] = 0;
        _cleanup_free_ char *t1 = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL;
        assert_int_equal(kbs_admin_token_make(&t1, adm, 60, time(NULL), NULL), 0);
        assert_int_equal(kbs_admin_token_make(&t2, adm, 60, time(NULL), NULL), 0);
        assert_int_equal(kbs_admin_token_make(&t3, adm, 60, time(NULL), NULL), 0);
        assert_int_equal(kbs_admin_token_make(&t4, adm, 60, time(NULL), NULL), 0);
        _cleanup_free_ char *a1 = xasprintf("Bearer %s", t1), *a2 = xasprintf("Bearer %s", t2),
                            *a3 = xasprintf("Bearer %s", t3), *a4 = xasprintf("Bearer %s", t4);
        assert_int_equal(call(&r, "GET", "/kbs/v0/admin/counter/default/key/vol1", NULL, a1, &o),
                         200);
        assert_int_equal(json_integer_value(json_object_get(o, "generation")), 5);
        json_decref(o);
        assert_int_equal(call(&r, "PUT", "/kbs/v0/admin/counter/default/key/vol1",
                              "{\"generation\":2,\"root\":\"01\"}", a2, NULL),
                         200);
        assert_int_equal(call(&r, "GET", "/kbs/v0/audit", NULL, a3, &o), 200);
        _cleanup_free_ char *log = js_dump_compact(o);
        json_decref(o);
        assert_non_null(strstr(log, "advanced 1 -> 5"));
        assert_non_null(strstr(log, "counter-reset to 2"));
        assert_int_equal(
            call(&r, "DELETE", "/kbs/v0/admin/counter/default/key/vol1", NULL, a4, NULL), 200);
        snprintf(r.cookie, sizeof(r.cookie), "%s", saved);
        assert_int_equal(call(&r, "GET", "/kbs/v0/counter/default/key/vol1", NULL, NULL, NULL),
                         404);
    }
    r.cookie[0] = 0;
    assert_int_equal(call(&r, "GET", "/kbs/v0/resource/default/key/1", NULL, NULL, NULL), 401);
    assert_int_equal(call(&r, "GET", "/kbs/v0/counter/default/key/vol1", NULL, NULL, NULL), 401);
    assert_int_equal(call(&r, "POST", "/kbs/v0/counter/default/key/vol1",
                          "{\"expected_generation\":0,\"generation\":1,\"root\":\"\"}", NULL, NULL),
                     401);
    assert_int_equal(
        call(&r, "POST", "/kbs/v0/auth", "{\"version\":\"9.9.9\",\"tee\":\"sim\"}", NULL, NULL),
        400);
    assert_int_equal(call(&r, "POST", "/kbs/v0/auth", "{\"version\":", NULL, NULL), 400);
    kbs_ctx_free(r.ctx);
}

/* ---- group commit and the document cache ---- */

typedef struct {
    kbs_commit_job job;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int ack_fd; /* crash test: where acknowledged ids go */
    int id;
} gc_req;

static void gc_done(kbs_commit_job *j, void *arg)
{
    gc_req *q = arg;
    if (q->ack_fd >= 0 && j->result == 0) {
        ssize_t n = write(q->ack_fd, &q->id, sizeof(q->id)); /* the "reply" */
        (void)n;
    }
    pthread_mutex_lock(&q->mu);
    q->done = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

typedef struct {
    kbs_committer *cm;
    int first_id, count, ack_fd;
    int failures;
} gc_thread;

/* One simulated worker: each request submits 1-3 entries and waits for its "reply". */
static void *gc_worker(void *arg)
{
    gc_thread *t = arg;
    for (int i = 0; i < t->count; i++) {
        gc_req q = {.ack_fd = t->ack_fd, .id = t->first_id + i};
        pthread_mutex_init(&q.mu, NULL);
        pthread_cond_init(&q.cv, NULL);
        int n = 1 + q.id % 3;
        for (int k = 0; k < n; k++) {
            char reason[48];
            snprintf(reason, sizeof(reason), "req=%d part=%d", q.id, k);
            kbs_audit_entry e = {"auth", "sim", NULL, NULL, "allow", reason, NULL};
            kbs__commit_job_add(&q.job, kbs_store_audit_body(&e), time(NULL));
        }
        q.job.done = gc_done;
        q.job.arg = &q;
        kbs__committer_submit(t->cm, &q.job);
        pthread_mutex_lock(&q.mu);
        while (!q.done)
            pthread_cond_wait(&q.cv, &q.mu);
        pthread_mutex_unlock(&q.mu);
        if (q.job.result != 0)
            t->failures++;
        kbs__commit_job_clear(&q.job);
        pthread_mutex_destroy(&q.mu);
        pthread_cond_destroy(&q.cv);
    }
    return NULL;
}

static kbs_committer *gc_open(const char *db)
{
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .init_schema = true};
    kbs_store *st = NULL;
    if (kbs_store_open(&st, &o, NULL) < 0)
        return NULL;
    kbs_committer *cm = NULL;
    if (kbs__committer_new(&cm, st, NULL) < 0)
        return NULL;
    return cm;
}

/*
 * Concurrent requests through one committer. @held: the server reports many more requests in
 * flight than are ever queued, so every batch waits out its window: still all complete, in
 * order, none lost (the window delays a commit, it never holds one back for good).
 */
static void group_commit_run(bool held)
{
    static unsigned busy = 1000000;
    _cleanup_free_ char *db = xasprintf("%s/gc.db", g_tmp);
    kbs_committer *cm = gc_open(db);
    assert_non_null(cm);
    if (held)
        kbs__committer_set_inflight(cm, &busy);
    enum { THREADS = 8, PER = 40 };
    gc_thread t[THREADS];
    pthread_t th[THREADS];
    size_t want = 0;
    for (int i = 0; i < THREADS; i++) {
        t[i] = (gc_thread){cm, i * PER, PER, -1, 0};
        for (int k = 0; k < PER; k++)
            want += 1 + (size_t)((i * PER + k) % 3);
        assert_int_equal(pthread_create(&th[i], NULL, gc_worker, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].failures, 0);
    }
    uint64_t batches = 0, entries = 0;
    kbs__committer_stats(cm, &batches, &entries);
    assert_int_equal(entries, want);
    /* Concurrent requests shared commits: fewer transactions than requests. */
    assert_true(batches < (uint64_t)(THREADS * PER));
    kbs__committer_free(cm);
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    assert_int_equal(count, want);
    /* A request's entries are contiguous and in order (one job is never split). */
    _cleanup_json_ json_t *list = NULL;
    assert_int_equal(kbs_store_audit_list(s, &list, 0, 100000, NULL), 0);
    int last_req = -1, last_part = -1;
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        const char *reason =
            json_string_value(json_object_get(json_object_get(it, "entry"), "reason"));
        int q = -1, part = -1;
        assert_int_equal(sscanf(reason, "req=%d part=%d", &q, &part), 2);
        if (part > 0)
            assert_true(q == last_req && part == last_part + 1);
        last_req = q;
        last_part = part;
    }
}

/* What jansson wrote for an entry (compact, sorted keys): the direct writer must match it. */
static char *audit_body_jansson(const kbs_audit_entry *e)
{
    json_t *o = json_object();
    const char *k[] = {"event", "tee", "claims_digest", "resource", "decision", "reason", "peer"};
    const char *v[] = {e->event,    e->tee,    e->claims_digest, e->resource,
                       e->decision, e->reason, e->peer};
    for (size_t i = 0; i < ARRAY_LEN(k); i++)
        if (v[i])
            json_object_set_new(o, k[i], json_string(v[i]));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static void test_audit_body(void **state)
{
    (void)state;
    const kbs_audit_entry ok[] = {
        {"attest", "sim", "ab12", NULL, "allow", "token issued: appraisal affirming", "127.0.0.1"},
        {"resource", NULL, NULL, "default/key/1", "deny", "rule \"x\" said no\n\t\x01", NULL},
        {"admin", "snp", NULL, "r/t/caf\xc3\xa9-\xf0\x9f\x94\x91", "error", "\x7f/\\", "::1"},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        _cleanup_free_ char *want = audit_body_jansson(&ok[i]);
        _cleanup_free_ char *got = kbs_store_audit_body(&ok[i]);
        assert_string_equal(got, want);
    }
    /* bytes that are not UTF-8 (a client's path): the member stays, U+FFFD marks them */
    kbs_audit_entry bad = {"resource", NULL, NULL, "default/key/\xff\xc3", "deny", "no", NULL};
    _cleanup_free_ char *got = kbs_store_audit_body(&bad);
    assert_string_equal(got, "{\"decision\":\"deny\",\"event\":\"resource\",\"reason\":\"no\","
                             "\"resource\":\"default/key/\xef\xbf\xbd\xef\xbf\xbd\"}");
    json_t *parsed = NULL;
    assert_int_equal(js_parse_object(&parsed, got, strlen(got), 4096, "entry", NULL), 0);
    json_decref(parsed);
}

static void test_group_commit(void **state)
{
    (void)state;
    group_commit_run(false);
}

static void test_group_commit_held(void **state)
{
    (void)state;
    group_commit_run(true);
}

/* kill -9 while group commits are in flight: every acknowledged request is in the log. */
static void test_group_commit_crash(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/crash.db", g_tmp);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        kbs_committer *cm = gc_open(db);
        if (!cm)
            _exit(1);
        enum { THREADS = 6 };
        gc_thread t[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            t[i] = (gc_thread){cm, i * 1000000, 1000000, p[1], 0};
            pthread_create(&th[i], NULL, gc_worker, &t[i]);
        }
        for (int i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        _exit(0);
    }
    close(p[1]);
    usleep(300 * 1000);
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    size_t cap = 1024, n = 0;
    int *acked = xmalloc(cap * sizeof(int));
    int id;
    while (read(p[0], &id, sizeof(id)) == (ssize_t)sizeof(id)) {
        if (n == cap)
            acked = xrealloc(acked, (cap *= 2) * sizeof(int));
        acked[n++] = id;
    }
    close(p[0]);
    assert_true(n > 0);
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    size_t count = 0;
    assert_int_equal(kbs_store_audit_verify(s, &count, NULL), 0);
    _cleanup_json_ json_t *list = NULL;
    assert_int_equal(kbs_store_audit_list(s, &list, 0, count + 1, NULL), 0);
    /* Every acknowledged request has all its parts in the log. */
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (size_t k = 0; k < n; k++) {
        char pat[64];
        snprintf(pat, sizeof(pat), "%%\"req=%d part=%%", acked[k]);
        sqlite3_stmt *q = NULL;
        assert_int_equal(
            sqlite3_prepare_v2(h, "SELECT count(*) FROM audit WHERE body LIKE ?1", -1, &q, NULL),
            SQLITE_OK);
        sqlite3_bind_text(q, 1, pat, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), 1 + acked[k] % 3);
        sqlite3_finalize(q);
    }
    sqlite3_close(h);
    free(acked);
}

static void test_doc_cache(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/dc.db", g_tmp);
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .init_schema = true};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    kbs_doc_cache *dc = kbs__doc_cache_new(60000);
    char *t = NULL;
    uint64_t hits = 0, misses = 0;
    /* A miss is cached too. */
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), -ENOENT);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), -ENOENT);
    kbs__doc_cache_stats(dc, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    /* A write the cache was not told about stays invisible until the TTL ... */
    assert_int_equal(kbs_store_set_doc(s, "policy", "default", "{\"v\":1}", NULL), 0);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), -ENOENT);
    /* ... and an invalidation (what every admin write does) makes it visible at once. */
    kbs__doc_cache_invalidate(dc);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), 0);
    assert_string_equal(t, "{\"v\":1}");
    free(t);
    assert_int_equal(kbs_store_set_doc(s, "policy", "default", "{\"v\":2}", NULL), 0);
    kbs__doc_cache_invalidate(dc);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), 0);
    assert_string_equal(t, "{\"v\":2}");
    free(t);
    /* Namespaces are separate keys. */
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "refvals", "default", NULL), -ENOENT);
    assert_int_equal(kbs_store_delete_doc(s, "policy", "default", NULL), 0);
    kbs__doc_cache_invalidate(dc);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "default", NULL), -ENOENT);
    kbs__doc_cache_free(dc);
    /* TTL 0: every read goes to the store (what another replica's write relies on). */
    dc = kbs__doc_cache_new(0);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "x/y/*", NULL), -ENOENT);
    assert_int_equal(kbs_store_set_doc(s, "policy", "x/y/*", "{}", NULL), 0);
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "x/y/*", NULL), 0);
    free(t);
    kbs__doc_cache_free(dc);
}

/* What the release path reads through the document cache: the sealed value, as stored. */
static void expect_sealed(kbs_doc_cache *dc, kbs_store *s, const char *path, const char *want)
{
    uint8_t *sealed = NULL, *pt = NULL;
    size_t n = 0, ptn = 0;
    assert_int_equal(kbs__doc_cache_get_sealed(dc, s, &sealed, &n, path, NULL), 0);
    assert_int_equal(n, 1 + 12 + 16 + strlen(want)); /* version, IV, tag, ciphertext */
    assert_int_equal(kbs_store_unseal(s, &pt, &ptn, path, sealed, n, NULL), 0);
    assert_int_equal(ptn, strlen(want));
    assert_memory_equal(pt, want, ptn);
    kbs_secret_free(pt, ptn);
    free(sealed);
}

static void test_sealed_cache(void **state)
{
    (void)state;
    _cleanup_free_ char *db = xasprintf("%s/sc.db", g_tmp);
    uint8_t mk[KBS_MASTER_KEY_SIZE];
    memset(mk, 7, sizeof(mk));
    kbs_store_opts o = {.kind = "sqlite", .sqlite_path = db, .init_schema = true, .master_key = mk};
    _cleanup_store_ kbs_store *s = NULL;
    assert_int_equal(kbs_store_open(&s, &o, NULL), 0);
    kbs_doc_cache *dc = kbs__doc_cache_new(60000);
    uint8_t *v = NULL;
    size_t n = 0;
    /* A miss is cached, as a document's is; an invalidation (every admin write) ends it. */
    assert_int_equal(kbs__doc_cache_get_sealed(dc, s, &v, &n, "a/b/c", NULL), -ENOENT);
    assert_int_equal(kbs_store_put_resource(s, "a/b/c", "one", 3, NULL), 0);
    assert_int_equal(kbs__doc_cache_get_sealed(dc, s, &v, &n, "a/b/c", NULL), -ENOENT);
    kbs__doc_cache_invalidate(dc);
    expect_sealed(dc, s, "a/b/c", "one");
    /* A write the cache was not told about (another replica's) waits for the TTL. */
    assert_int_equal(kbs_store_put_resource(s, "a/b/c", "two", 3, NULL), 0);
    expect_sealed(dc, s, "a/b/c", "one");
    kbs__doc_cache_invalidate(dc);
    expect_sealed(dc, s, "a/b/c", "two");
    /* A resource and a document of the same name are different entries. */
    assert_int_equal(kbs_store_set_doc(s, "policy", "a/b/c", "{}", NULL), 0);
    char *t = NULL;
    assert_int_equal(kbs__doc_cache_get(dc, s, &t, "policy", "a/b/c", NULL), 0);
    assert_string_equal(t, "{}");
    free(t);
    expect_sealed(dc, s, "a/b/c", "two");
    /* Large values are read from the store every time. */
    size_t big = 100 * 1024;
    _cleanup_free_ char *v1 = xmalloc(big + 1), *v2 = xmalloc(big + 1);
    memset(v1, 'x', big);
    memset(v2, 'y', big);
    v1[big] = v2[big] = 0;
    assert_int_equal(kbs_store_put_resource(s, "a/b/big", v1, big, NULL), 0);
    expect_sealed(dc, s, "a/b/big", v1);
    assert_int_equal(kbs_store_put_resource(s, "a/b/big", v2, big, NULL), 0);
    expect_sealed(dc, s, "a/b/big", v2);
    kbs__doc_cache_free(dc);
    /* TTL 0: every read goes to the store. */
    dc = kbs__doc_cache_new(0);
    expect_sealed(dc, s, "a/b/c", "two");
    assert_int_equal(kbs_store_put_resource(s, "a/b/c", "three", 5, NULL), 0);
    expect_sealed(dc, s, "a/b/c", "three");
    kbs__doc_cache_free(dc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jcs),
        cmocka_unit_test(test_binding),
        cmocka_unit_test(test_release_policy),
        cmocka_unit_test(test_appraisal),
        cmocka_unit_test(test_sessions),
        cmocka_unit_test_setup_teardown(test_store_sqlite, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_store_sessions_bounded, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_store_counters, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_audit_keyed, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_audit_legacy, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_jws_rfc7515),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test_setup_teardown(test_rcar_inprocess, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_audit_body),
        cmocka_unit_test_setup_teardown(test_group_commit, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_group_commit_held, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_group_commit_crash, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_doc_cache, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_sealed_cache, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
