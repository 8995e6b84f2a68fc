/*
 * kbs_load.c - load driver for bench/bench_kbs.sh: C client threads each
 * doing full RCAR round trips (auth + attest with sim evidence + resource
 * fetch and JWE unwrap) against a running KBS, for a fixed time; prints
 * round trips per second, p50 / p99 latency in milliseconds and the
 * driver's own CPU seconds as JSON.
 * Usage: kbs_load URL CA_FILE SIM_DIR CLIENTS SECONDS PATH [new|keepalive] [PRESIGN] [RATE]
 * "new" (default): a new TCP connection and a full TLS handshake (no
 * resumption) and a new session per round trip, as a CoCo guest doing one
 * RCAR per boot; the client thread keeps its KBS client across round trips
 * (kbs_client_reset) so that it does not reload the CA file every time.
 * "keepalive": each thread keeps one client (one connection) and repeats
 * the full RCAR round trip on it (new key, new challenge, new evidence).
 * RATE > 0 paces the clients: together they start RATE round trips per
 * second on a fixed schedule (each client every CLIENTS / RATE seconds),
 * and latency counts from the scheduled start, so time spent waiting behind
 * a slow server is included (no coordinated omission). RATE 0 (default):
 * each client starts its next round trip as soon as the last one ended.
 *
 * The driver must not be what limits the measurement, and it must not make
 * the server's work easier. So what a sim guest would redo identically for
 * every report is done once (the server cannot tell): the platform key is
 * loaded once and the report template (measurement of the binary, platform
 * id) is produced once by the real sim get(); each attempt only writes its
 * REPORT_DATA (the binding of the fresh nonce and tee-pubkey) and signs the
 * report with ECDSA P-384 over SHA-384, as sim does. With PRESIGN > 0 the
 * signing is split into its offline and online halves: before the timed
 * window, PRESIGN random nonces k are drawn and r = x(k·G) mod n and k^-1
 * are computed (the scalar multiplication, ~all of a P-384 signature's
 * cost); each attempt then computes s = k^-1 (SHA-384(report) + r·d) mod n
 * with one unused pair — a standard ECDSA signature the server verifies in
 * full. Each pair is used at most once; when they run out, attempts sign
 * the usual way (EVP). OpenSSL 3 has no EVP interface for precomputed
 * ECDSA nonces, hence the EC_POINT / BIGNUM arithmetic here.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "kbs/client.h"
#include "kbs/kbs.h"
#include "util/log.h"

typedef struct {
    const char *url, *ca, *path;
    double until;
    double start, period; /* paced: first scheduled start and interval; period 0: closed loop */
    bool keepalive;
    double *lat;
    size_t n, cap, errors;
} job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- sim evidence: a template from the real get(), signed per attempt ---- */

typedef struct {
    BIGNUM *r, *kinv;
} presig;

static struct {
    uint8_t tmpl[SNP_REPORT_SIZE];
    EVP_PKEY *key; /* the platform's private key */
    BIGNUM *d;     /* its scalar */
    EC_GROUP *group;
    presig *pool;
    size_t pool_count;
    size_t next;   /* atomic: next unused pair */
    size_t online; /* atomic: reports signed without a pair */
} g_sim;

static void fail(const char *what, cista_error *err)
{
    char *s = err ? err_str(err) : NULL;
    fprintf(stderr, "kbs_load: %s%s%s\n", what, s ? ": " : "", s ? s : "");
    exit(1);
}

static int bn_le(uint8_t *out, size_t n, const BIGNUM *bn)
{
    return BN_bn2lebinpad(bn, out, (int)n) == (int)n ? 0 : -1;
}

/* s = kinv * (e + r * d) mod n with the next unused pair; -1 when the pool is used up. */
static int sign_presigned(uint8_t *rep, BN_CTX *ctx)
{
    size_t i = __atomic_fetch_add(&g_sim.next, 1, __ATOMIC_RELAXED);
    if (i >= g_sim.pool_count)
        return -1;
    const presig *p = &g_sim.pool[i];
    uint8_t h[48];
    crypto_hash_oneshot(CRYPTO_SHA384, rep, SNP_SIGNED_SIZE, h);
    const BIGNUM *n = EC_GROUP_get0_order(g_sim.group);
    BN_CTX_start(ctx);
    BIGNUM *e = BN_CTX_get(ctx), *s = BN_CTX_get(ctx);
    /* P-384's order is 384 bits, as is SHA-384: the whole digest is the integer e. */
    int ok = e && s && BN_bin2bn(h, sizeof(h), e) && BN_mod_mul(s, p->r, g_sim.d, n, ctx) &&
             BN_mod_add(s, s, e, n, ctx) && BN_mod_mul(s, s, p->kinv, n, ctx) && !BN_is_zero(s) &&
             bn_le(rep + SNP_OFF_SIGNATURE, SNP_SIG_INT_SIZE, p->r) == 0 &&
             bn_le(rep + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE, s) == 0;
    BN_CTX_end(ctx);
    return ok ? 0 : -1;
}

static int fast_sim_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                        size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                        const ev_get_opts *opts, cista_error **err)
{
    (void)opts;
    static __thread BN_CTX *ctx;
    if (!ctx)
        ctx = BN_CTX_new(); /* one per client thread for the process's life */
    uint8_t *rep = malloc(SNP_REPORT_SIZE);
    memcpy(rep, g_sim.tmpl, SNP_REPORT_SIZE);
    memcpy(rep + SNP_OFF_REPORT_DATA, report_data, EV_REPORT_DATA_SIZE);
    memset(rep + SNP_OFF_SIGNATURE, 0, 2 * SNP_SIG_INT_SIZE);
    if (sign_presigned(rep, ctx) < 0) {
        __atomic_fetch_add(&g_sim.online, 1, __ATOMIC_RELAXED);
        int r = x509_ecdsa_sign_raw(
            rep + SNP_OFF_SIGNATURE, rep + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
            X509_LITTLE_ENDIAN, g_sim.key, "SHA384", rep, SNP_SIGNED_SIZE, err);
        if (r < 0) {
            free(rep);
            return r;
        }
    }
    *out_evidence = rep;
    *out_evidence_size = SNP_REPORT_SIZE;
    *out_aux = NULL;
    *out_aux_size = 0;
    return 0;
}

static ev_ops g_fast_sim_ops;

typedef struct {
    size_t from, to;
} presig_range;

static void *presign_main(void *arg)
{
    presig_range *rg = arg;
    BN_CTX *ctx = BN_CTX_new();
    EC_POINT *R = EC_POINT_new(g_sim.group);
    BIGNUM *k = BN_new(), *x = BN_new();
    const BIGNUM *n = EC_GROUP_get0_order(g_sim.group);
    for (size_t i = rg->from; i < rg->to; i++) {
        presig *p = &g_sim.pool[i];
        p->r = BN_new();
        p->kinv = BN_new();
        do {
            do {
                if (!BN_priv_rand_range(k, n))
                    fail("BN_priv_rand_range", NULL);
            } while (BN_is_zero(k));
            if (!EC_POINT_mul(g_sim.group, R, k, NULL, NULL, ctx) ||
                !EC_POINT_get_affine_coordinates(g_sim.group, R, x, NULL, ctx) ||
                !BN_nnmod(p->r, x, n, ctx))
                fail("EC_POINT_mul", NULL);
        } while (BN_is_zero(p->r));
        if (!BN_mod_inverse(p->kinv, k, n, ctx))
            fail("BN_mod_inverse", NULL);
    }
    BN_clear_free(k);
    BN_free(x);
    EC_POINT_free(R);
    BN_CTX_free(ctx);
    return NULL;
}

static void sim_setup(const char *dir, size_t presign)
{
    cista_error *err = NULL;
    const ev_ops *sim = ev_find("sim");
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = dir;
    uint8_t zero[EV_REPORT_DATA_SIZE] = {0}, *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    if (!sim || sim->get(&ev, &ev_size, &aux, &aux_size, zero, &g, &err) < 0 ||
        ev_size != SNP_REPORT_SIZE)
        fail("sim evidence template", err);
    memcpy(g_sim.tmpl, ev, SNP_REPORT_SIZE);
    free(ev);
    free(aux);
    char path[4096];
    snprintf(path, sizeof(path), "%s/platform-key.pem", dir);
    if (crypto_key_load_file(&g_sim.key, path, true, &err) < 0)
        fail("sim platform key", err);
    g_fast_sim_ops = *sim;
    g_fast_sim_ops.get = fast_sim_get;
    if (presign == 0)
        return;
    if (EVP_PKEY_get_bn_param(g_sim.key, OSSL_PKEY_PARAM_PRIV_KEY, &g_sim.d) != 1 ||
        !(g_sim.group = EC_GROUP_new_by_curve_name(NID_secp384r1)))
        fail("sim platform key scalar", NULL);
    g_sim.pool = calloc(presign, sizeof(presig));
    g_sim.pool_count = presign;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nth = ncpu > 0 ? (size_t)ncpu : 1;
    pthread_t th[64];
    presig_range rg[64];
    if (nth > 64)
        nth = 64;
    for (size_t t = 0; t < nth; t++) {
        rg[t] = (presig_range){presign * t / nth, presign * (t + 1) / nth};
        pthread_create(&th[t], NULL, presign_main, &rg[t]);
    }
    for (size_t t = 0; t < nth; t++)
        pthread_join(th[t], NULL);
    /* Self-test: a presigned report must verify like any other. */
    uint8_t *rep = NULL, *a2 = NULL;
    size_t rs = 0, as = 0;
    if (fast_sim_get(&rep, &rs, &a2, &as, zero, NULL, &err) < 0)
        fail("presigned report", err);
    if (x509_ecdsa_verify_raw(g_sim.key, "SHA384", rep, SNP_SIGNED_SIZE, rep + SNP_OFF_SIGNATURE,
                              rep + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
                              X509_LITTLE_ENDIAN, &err) < 0)
        fail("a presigned report does not verify", err);
    free(rep);
}

/* ---- client threads ---- */

/* Weak, so that this driver also builds against a library from before kbs_client_reset() (a
 * baseline in a before/after comparison): there "new" mode makes a new client per round trip. */
void kbs_client_reset(kbs_client *c) __attribute__((weak));

static void *run(void *arg)
{
    job *j = arg;
    kbs_client_opts o = {.url = j->url, .ca_file = strcmp(j->ca, "-") ? j->ca : NULL};
    kbs_client *kept = NULL;
    double sched = j->start;
    while (now_s() < j->until) {
        double t0 = now_s();
        if (j->period > 0) {
            if (sched > t0) {
                struct timespec ts = {(time_t)(sched - t0),
                                      (long)((sched - t0 - (double)(time_t)(sched - t0)) * 1e9)};
                nanosleep(&ts, NULL);
            }
            t0 = sched;
            sched += j->period;
            if (t0 >= j->until)
                break;
        }
        cista_error *err = NULL;
        kbs_client *c = kept;
        EVP_PKEY *k = NULL;
        uint8_t *v = NULL;
        size_t n = 0;
        if ((!c && kbs_client_new(&c, &o, &err) < 0) ||
            crypto_key_generate_ec(&k, "P-256", &err) < 0 ||
            kbs_client_attest(c, &g_fast_sim_ops, NULL, k, NULL, &err) < 0 ||
            kbs_client_get_resource(c, &v, &n, j->path, &err) < 0) {
            if (j->errors++ < 3) {
                char *s = err_str(err);
                fprintf(stderr, "kbs_load: %s\n", s);
                free(s);
            }
        } else {
            if (j->n == j->cap) {
                j->cap = j->cap ? 2 * j->cap : 1024;
                j->lat = realloc(j->lat, j->cap * sizeof(double));
            }
            j->lat[j->n++] = now_s() - t0;
        }
        kbs_secret_free(v, n);
        EVP_PKEY_free(k);
        if (err || (!j->keepalive && !kbs_client_reset)) {
            kbs_client_free(c);
            kept = NULL;
        } else {
            if (!j->keepalive)
                kbs_client_reset(c);
            kept = c;
        }
        err_free(err);
    }
    kbs_client_free(kept);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--session-bytes")) {
        printf("%zu\n", kbs_sessions_idle_bytes());
        return 0;
    }
    if (argc < 7 || argc > 10) {
        fprintf(stderr, "usage: kbs_load URL CA|- SIM_DIR CLIENTS SECONDS PATH [new|keepalive] "
                        "[PRESIGN] [RATE]\n");
        return 2;
    }
    log_set_level(LOG_LVL_ERROR);
    int clients = atoi(argv[4]);
    double secs = atof(argv[5]);
    bool keepalive = argc >= 8 && !strcmp(argv[7], "keepalive");
    size_t presign = argc >= 9 ? strtoull(argv[8], NULL, 10) : 0;
    double rate = argc == 10 ? atof(argv[9]) : 0;
    double p0 = now_s();
    sim_setup(argv[3], presign);
    double setup_s = now_s() - p0, cpu0 = cpu_s();
    job *jobs = calloc((size_t)clients, sizeof(job));
    pthread_t *th = calloc((size_t)clients, sizeof(pthread_t));
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        double period = rate > 0 ? clients / rate : 0;
        jobs[i] = (job){.url = argv[1],
                        .ca = argv[2],
                        .path = argv[6],
                        .until = t0 + secs,
                        .start = t0 + period * i / clients,
                        .period = period,
                        .keepalive = keepalive};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    size_t total = 0, errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].n;
        errors += jobs[i].errors;
    }
    double elapsed = now_s() - t0;
    double cpu = cpu_s() - cpu0;
    double *all = malloc((total ? total : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, jobs[i].lat, jobs[i].n * sizeof(double));
        k += jobs[i].n;
        free(jobs[i].lat);
    }
    qsort(all, total, sizeof(double), cmp);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)(total * 0.99)] : 0;
    size_t used = g_sim.next < g_sim.pool_count ? g_sim.next : g_sim.pool_count;
    printf("{\"clients\":%d,\"mode\":\"%s\",\"round_trips\":%zu,\"errors\":%zu,"
           "\"seconds\":%.2f,\"per_second\":%.1f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
           "\"driver_cpu_s\":%.2f,\"presigned_used\":%zu,\"signed_online\":%zu,"
           "\"setup_s\":%.2f,\"offered_per_second\":%.1f}\n",
           clients, keepalive ? "keepalive" : "new", total, errors, elapsed,
           (double)total / elapsed, p50 * 1e3, p99 * 1e3, cpu, used, g_sim.online, setup_s, rate);
    free(all);
    free(jobs);
    free(th);
    return errors && !total ? 1 : 0;
}
