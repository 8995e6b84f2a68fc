/*
 * kbs_session_mem.c - heap bytes per attested session of the KBS's memory session table, for
 * bench/bench_kbs.sh. Runs the KBS's request handler in process (no network: what is measured
 * is what a session keeps, not connections) on the bench's KBS directory after the server has
 * stopped: WARMUP full auth + attest exchanges first, so that what grows with the first
 * requests whatever the number of sessions (SQLite's page cache, up to 2 MB, the document
 * caches) has grown, then N more, and prints the growth of malloc's in-use bytes per session
 * (chunk headers included) as JSON. Every session stays attested (the token lifetime is 30 s
 * in the bench's configuration), so each of the N holds what an idle attested session holds.
 * Usage: kbs_session_mem CONFIG SIM_DIR N WARMUP
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "evidence/ev.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static char g_cookie[128];

static int call(kbs_ctx *ctx, const char *method, const char *path, const char *body, json_t **out)
{
    kbs_request req = {.method = method,
                       .path = path,
                       .cookie = g_cookie[0] ? g_cookie : NULL,
                       .body = (const uint8_t *)body,
                       .body_size = strlen(body),
                       .peer = "bench"};
    kbs_response resp;
    memset(&resp, 0, sizeof(resp));
    kbs_handle(ctx, &req, &resp);
    if (resp.set_cookie) {
        size_t n = strcspn(resp.set_cookie, ";");
        snprintf(g_cookie, sizeof(g_cookie), "%.*s", (int)n, resp.set_cookie);
    }
    if (out)
        *out = json_loadb((const char *)resp.body.data, resp.body.size, 0, NULL);
    int st = resp.status;
    kbs_response_clear(&resp);
    return st;
}

/* An /attest body for @nonce: sim evidence binding @nonce and @key, as a guest sends it. */
static char *attest_body(const char *sim_dir, const char *nonce, EVP_PKEY *key)
{
    _cleanup_json_ json_t *jwk = NULL;
    uint8_t rd[64];
    if (jwk_from_key(&jwk, key, false, NULL) < 0 ||
        kbs_binding(rd, CRYPTO_SHA384, nonce, jwk, "", NULL) < 0)
        abort();
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = sim_dir;
    uint8_t *ev = NULL, *aux = NULL;
    size_t evs = 0, auxs = 0;
    if (ev_find("sim")->get(&ev, &evs, &aux, &auxs, rd, &g, NULL) < 0)
        abort();
    _cleanup_free_ char *ev64 = b64_encode(ev, evs);
    free(ev);
    free(aux);
    _cleanup_json_ json_t *b =
        json_pack("{s:{s:s,s:O},s:{s:{s:s,s:s},s:s}}", "runtime-data", "nonce", nonce, "tee-pubkey",
                  jwk, "tee-evidence", "primary_evidence", "tee", "sim", "evidence", ev64,
                  "additional_evidence", "");
    return js_dump_compact(b);
}

static void attest_once(kbs_ctx *ctx, const char *sim_dir, EVP_PKEY *key)
{
    json_t *o = NULL;
    g_cookie[0] = '\0';
    if (call(ctx, "POST", "/kbs/v0/auth", "{\"version\":\"0.4.0\",\"tee\":\"sim\"}", &o) != 200)
        abort();
    _cleanup_free_ char *nonce = xstrdup(json_string_value(json_object_get(o, "nonce")));
    json_decref(o);
    _cleanup_free_ char *body = attest_body(sim_dir, nonce, key);
    if (call(ctx, "POST", "/kbs/v0/attest", body, NULL) != 200) {
        fprintf(stderr, "kbs_session_mem: /attest refused (are sim and its policy allowed?)\n");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: kbs_session_mem CONFIG SIM_DIR N WARMUP\n");
        return 2;
    }
    int n = atoi(argv[3]), warmup = atoi(argv[4]);
    cista_error *err = NULL;
    kbs_config *cfg = NULL;
    kbs_ctx *ctx = NULL;
    if (kbs_config_load(&cfg, argv[1], &err) < 0 || kbs_ctx_new(&ctx, cfg, &err) < 0) {
        char *s = err_str(err);
        fprintf(stderr, "kbs_session_mem: %s\n", s);
        return 1;
    }
    /* One tee key for all: the session keeps its own imported copy either way. */
    EVP_PKEY *key = NULL;
    if (crypto_key_generate_ec(&key, "P-256", NULL) < 0)
        abort();
    for (int i = 0; i < warmup; i++)
        attest_once(ctx, argv[2], key);
    malloc_trim(0);
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < n; i++)
        attest_once(ctx, argv[2], key);
    size_t after = mallinfo2().uordblks;
    printf("{\"attested_sessions\":%d,\"bytes_per_attested_session\":%.0f}\n", n,
           n ? ((double)after - (double)before) / n : 0.0);
    EVP_PKEY_free(key);
    kbs_ctx_free(ctx);
    kbs_config_free(cfg);
    return 0;
}
