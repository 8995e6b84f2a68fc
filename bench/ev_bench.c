/*
 * ev_bench.c - evidence verifications per second for one sample, with a
 * warm collateral set (files read and added once) and, unless --no-cache,
 * an ev_chain_cache shared by all iterations: the same evidence is verified
 * repeatedly for --seconds. Prints one line:
 *   <label> <verifies/s> <iterations> <seconds> <wall verifies/s> <ref verify/s>
 * The rate is per second of this thread's CPU time, the clock `openssl
 * speed` uses by default (it counts user time), so that both sides of the
 * ratio hold on a machine other processes share; the wall-clock rate
 * follows. With --ref p256|p384 the time is split into short alternating
 * slices of evidence verification and of bare ECDSA verifications as
 * `openssl speed` does them (EVP_PKEY_verify of a 32-byte digest with a
 * prepared context), so both rates see the same machine load; the last
 * column is that reference rate (0 without --ref).
 * Built by bench/bench_evidence.sh against libcista.a; not part of CI.
 *
 * Usage: ev_bench LABEL KIND EVIDENCE [--aux F] [--coll F]... [--at EPOCH]
 *                 [--seconds S] [--no-cache] [--sim-dir DIR] [--ak-spki F]
 *                 [--ref p256|p384]
 * KIND sim: EVIDENCE is ignored; a report is made with the sim key in DIR.
 */
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "util/log.h"
#include "util/util.h"

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A prepared ECDSA verification on @curve, as `openssl speed ecdsa*` times it. */
typedef struct {
    EVP_PKEY *key;
    EVP_PKEY_CTX *ctx;
    unsigned char sig[160], dg[32];
    size_t sig_size;
} ref_verify;

static void ref_init(ref_verify *r, const char *curve)
{
    memset(r, 0, sizeof(*r));
    memset(r->dg, 0x5a, sizeof(r->dg));
    r->key = EVP_EC_gen(curve);
    EVP_PKEY_CTX *s = r->key ? EVP_PKEY_CTX_new_from_pkey(NULL, r->key, NULL) : NULL;
    r->sig_size = sizeof(r->sig);
    if (!s || EVP_PKEY_sign_init(s) != 1 ||
        EVP_PKEY_sign(s, r->sig, &r->sig_size, r->dg, sizeof(r->dg)) != 1) {
        fprintf(stderr, "ev_bench: cannot make a %s reference signature\n", curve);
        exit(1);
    }
    EVP_PKEY_CTX_free(s);
    r->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, r->key, NULL);
    if (!r->ctx || EVP_PKEY_verify_init(r->ctx) != 1) {
        fprintf(stderr, "ev_bench: cannot prepare a %s verification\n", curve);
        exit(1);
    }
}

static void ref_run(ref_verify *r)
{
    if (EVP_PKEY_verify(r->ctx, r->sig, r->sig_size, r->dg, sizeof(r->dg)) != 1) {
        fprintf(stderr, "ev_bench: reference verification failed\n");
        exit(1);
    }
}

static uint8_t *slurp(const char *path, size_t *size)
{
    char *d = NULL;
    cista_error *err = NULL;
    if (util_read_file(&d, size, path, 1 << 20, &err) < 0) {
        fprintf(stderr, "ev_bench: %s: %s\n", path, err ? err->msg : "?");
        exit(2);
    }
    return (uint8_t *)d;
}

static void die(const char *what, cista_error *err)
{
    fprintf(stderr, "ev_bench: %s: %s\n", what, err ? err->msg : "?");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ev_bench LABEL KIND EVIDENCE [options]\n");
        return 2;
    }
    log_set_level(LOG_LVL_ERROR);
    const char *label = argv[1], *kind = argv[2], *ev_path = argv[3];
    const char *aux_path = NULL, *sim_dir = NULL, *ak_path = NULL, *ref = NULL;
    double seconds = 2.0;
    bool cache_on = true;
    time_t at = 0;
    cista_error *err = NULL;
    ev_collateral *coll = ev_collateral_new();
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--no-cache") == 0) {
            cache_on = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ev_bench: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(argv[i - 1], "--aux") == 0) {
            aux_path = v;
        } else if (strcmp(argv[i - 1], "--coll") == 0) {
            size_t n = 0;
            uint8_t *d = slurp(v, &n);
            if (ev_collateral_add(coll, v, d, n, &err) < 0)
                die(v, err);
            free(d);
        } else if (strcmp(argv[i - 1], "--at") == 0) {
            at = (time_t)strtoll(v, NULL, 10);
        } else if (strcmp(argv[i - 1], "--seconds") == 0) {
            seconds = strtod(v, NULL);
        } else if (strcmp(argv[i - 1], "--sim-dir") == 0) {
            sim_dir = v;
        } else if (strcmp(argv[i - 1], "--ak-spki") == 0) {
            ak_path = v;
        } else if (strcmp(argv[i - 1], "--ref") == 0) {
            ref = strcmp(v, "p384") == 0 ? "P-384" : strcmp(v, "p256") == 0 ? "P-256" : NULL;
            if (!ref) {
                fprintf(stderr, "ev_bench: --ref takes p256 or p384\n");
                return 2;
            }
        } else {
            fprintf(stderr, "ev_bench: unknown option %s\n", argv[i - 1]);
            return 2;
        }
    }
    const ev_ops *ops = ev_find(kind);
    if (!ops) {
        fprintf(stderr, "ev_bench: unknown kind %s\n", kind);
        return 2;
    }
    uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    o.now = at;
    o.collateral = coll;
    EVP_PKEY *key = NULL;
    if (strcmp(kind, "sim") == 0) {
        uint8_t rd[EV_REPORT_DATA_SIZE] = {1};
        ev_get_opts g;
        ev_get_opts_init(&g);
        g.sim_state_dir = sim_dir;
        if (ev_sim_init(sim_dir, NULL, &err) < 0 ||
            ops->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err) < 0 ||
            ev_sim_load_public(&key, sim_dir, &err) < 0)
            die("sim", err);
        o.sim_key = key;
    } else {
        ev = slurp(ev_path, &ev_size);
        if (aux_path)
            aux = slurp(aux_path, &aux_size);
    }
    if (ak_path) {
        size_t n = 0;
        uint8_t *d = slurp(ak_path, &n);
        if (crypto_key_load(&key, d, n, false, &err) < 0)
            die(ak_path, err);
        free(d);
        o.tpm_ak_pub = key;
    }
    ev_chain_cache *cache = cache_on ? ev_chain_cache_new(16) : NULL;
    o.chain_cache = cache;
    /* One checked run (also warms the cache), then the timed loop. */
    json_t *claims = NULL;
    if (ops->verify(&claims, ev, ev_size, aux, aux_size, &o, &err) < 0)
        die(label, err);
    json_decref(claims);
    ref_verify rv;
    if (ref)
        ref_init(&rv, ref);
    /* slices of ~20 ms of each, alternating, until --seconds of wall time */
    unsigned long n = 0, nref = 0;
    double cpu = 0, cpu_ref = 0;
    double t0 = now_s(CLOCK_MONOTONIC), t = t0;
    while (t - t0 < seconds) {
        double c0 = now_s(CLOCK_THREAD_CPUTIME_ID), c = c0;
        while (c - c0 < 0.02) {
            for (int k = 0; k < 16; k++, n++) {
                claims = NULL;
                if (ops->verify(&claims, ev, ev_size, aux, aux_size, &o, &err) < 0)
                    die(label, err);
                json_decref(claims);
            }
            c = now_s(CLOCK_THREAD_CPUTIME_ID);
        }
        cpu += c - c0;
        if (ref) {
            c0 = c = now_s(CLOCK_THREAD_CPUTIME_ID);
            while (c - c0 < 0.02) {
                for (int k = 0; k < 16; k++, nref++)
                    ref_run(&rv);
                c = now_s(CLOCK_THREAD_CPUTIME_ID);
            }
            cpu_ref += c - c0;
        }
        t = now_s(CLOCK_MONOTONIC);
    }
    double wall = (t - t0) * (cpu / (cpu + cpu_ref)); /* the evidence slices' share */
    printf("%s %.1f %lu %.2f %.1f %.1f\n", label, (double)n / cpu, n, cpu, (double)n / wall,
           ref ? (double)nref / cpu_ref : 0.0);
    if (ref) {
        EVP_PKEY_CTX_free(rv.ctx);
        EVP_PKEY_free(rv.key);
    }
    ev_chain_cache_free(cache);
    EVP_PKEY_free(key);
    ev_collateral_free(coll);
    free(ev);
    free(aux);
    return 0;
}
