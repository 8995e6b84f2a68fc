/*
 * kbs_load.c - load driver for bench/bench_kbs.sh: C client threads each
 * doing full RCAR round trips (auth + attest with sim evidence + resource
 * fetch and JWE unwrap) against a running KBS, for a fixed time; prints
 * round trips per second, p50 / p99 latency in milliseconds and the
 * driver's own CPU seconds as JSON.
 * Usage: kbs_load URL CA_FILE SIM_DIR CLIENTS SECONDS PATH [new|keepalive]
 * "new" (default): a new client, so a new TCP connection and a full TLS
 * handshake, per round trip (a CoCo guest does one RCAR per boot).
 * "keepalive": each thread keeps one client (one connection) and repeats
 * the full RCAR round trip on it (new key, new challenge, new evidence).
 */
#include <pthread.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "kbs/client.h"
#include "kbs/kbs.h"
#include "util/log.h"

typedef struct {
    const char *url, *ca, *sim, *path;
    double until;
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

static void *run(void *arg)
{
    job *j = arg;
    ev_get_opts g;
    ev_get_opts_init(&g);
    g.sim_state_dir = j->sim;
    kbs_client_opts o = {.url = j->url, .ca_file = strcmp(j->ca, "-") ? j->ca : NULL};
    kbs_client *kept = NULL;
    while (now_s() < j->until) {
        double t0 = now_s();
        cista_error *err = NULL;
        kbs_client *c = kept;
        EVP_PKEY *k = NULL;
        uint8_t *v = NULL;
        size_t n = 0;
        if ((!c && kbs_client_new(&c, &o, &err) < 0) ||
            crypto_key_generate_ec(&k, "P-256", &err) < 0 ||
            kbs_client_attest(c, ev_find("sim"), &g, k, NULL, &err) < 0 ||
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
        if (j->keepalive && !err)
            kept = c;
        else {
            kbs_client_free(c);
            kept = NULL;
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

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--session-bytes")) {
        printf("%zu\n", kbs_sessions_idle_bytes());
        return 0;
    }
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: kbs_load URL CA|- SIM_DIR CLIENTS SECONDS PATH [new|keepalive]\n");
        return 2;
    }
    log_set_level(LOG_LVL_ERROR);
    int clients = atoi(argv[4]);
    double secs = atof(argv[5]);
    job *jobs = calloc((size_t)clients, sizeof(job));
    pthread_t *th = calloc((size_t)clients, sizeof(pthread_t));
    bool keepalive = argc == 8 && !strcmp(argv[7], "keepalive");
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        jobs[i] = (job){argv[1], argv[2], argv[3], argv[6], t0 + secs, keepalive, NULL, 0, 0, 0};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    size_t total = 0, errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].n;
        errors += jobs[i].errors;
    }
    double elapsed = now_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double *all = malloc((total ? total : 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, jobs[i].lat, jobs[i].n * sizeof(double));
        k += jobs[i].n;
        free(jobs[i].lat);
    }
    qsort(all, total, sizeof(double), cmp);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)(total * 0.99)] : 0;
    printf("{\"clients\":%d,\"mode\":\"%s\",\"round_trips\":%zu,\"errors\":%zu,"
           "\"seconds\":%.2f,\"per_second\":%.1f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
           "\"driver_cpu_s\":%.2f}\n",
           clients, keepalive ? "keepalive" : "new", total, errors, elapsed,
           (double)total / elapsed, p50 * 1e3, p99 * 1e3, cpu);
    free(all);
    free(jobs);
    free(th);
    return errors && !total ? 1 : 0;
}
