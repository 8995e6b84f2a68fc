/*
 * commit.c - group commit of audit entries (see kbs_int.h). One writer
 * thread owns one store connection. Request handlers hand it a job (the
 * audit entries one request produced) and go on serving other requests; the
 * writer takes every job queued while the previous commit was in flight,
 * appends all their entries in one transaction (one fsync), and only then
 * calls each job's done() — which is where the server sends the reply. So a
 * reply still leaves only after its writes are durable, and N concurrent
 * requests share one fsync instead of paying N.
 *
 * While other requests are in flight (the server's count, see
 * kbs__committer_set_inflight(), exceeds the jobs queued) a batch is also
 * held open for a short window (COMMIT_WINDOW_US after its first job) before
 * it is cut: otherwise a busy single core commits at every gap of a few µs in
 * its work, ~6 entries per fsync, and on a virtual disk each fdatasync costs
 * the process tens of µs of CPU (I/O submission, flush and completion
 * interrupts). With the window ~10 entries share one. A request alone in the
 * server is committed at once: it pays no delay.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kbs/kbs_int.h"
#include "util/log.h"
#include "util/util.h"

/* How long a batch stays open for the requests in flight beside it. */
#define COMMIT_WINDOW_US 1000

struct kbs_committer {
    kbs_store *store;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* CLOCK_MONOTONIC */
    struct timespec first;    /* when the oldest queued job came */
    size_t queued;            /* jobs in the queue */
    const unsigned *inflight; /* atomic, the server's: requests received and not yet answered */
    kbs_commit_job *head, **tail;
    bool stop;
    void (*on_batch)(void *arg);
    void *on_batch_arg;
    uint64_t batches, entries;
};

void kbs__commit_job_add(kbs_commit_job *j, char *body, time_t t)
{
    if (j->count == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 2;
        j->bodies = xrealloc(j->bodies, j->cap * sizeof(char *));
        j->times = xrealloc(j->times, j->cap * sizeof(time_t));
    }
    j->bodies[j->count] = body;
    j->times[j->count++] = t;
}

void kbs__commit_job_clear(kbs_commit_job *j)
{
    for (size_t i = 0; i < j->count; i++)
        free(j->bodies[i]);
    free(j->bodies);
    free(j->times);
    j->bodies = NULL;
    j->times = NULL;
    j->count = j->cap = 0;
}

static void commit_batch(kbs_committer *cm, kbs_commit_job *list)
{
    size_t n = 0;
    for (kbs_commit_job *j = list; j; j = j->next)
        n += j->count;
    const char **bodies = xmalloc((n ? n : 1) * sizeof(char *));
    time_t *times = xmalloc((n ? n : 1) * sizeof(time_t));
    size_t k = 0;
    for (kbs_commit_job *j = list; j; j = j->next)
        for (size_t i = 0; i < j->count; i++, k++) {
            bodies[k] = j->bodies[i];
            times[k] = j->times[i];
        }
    cista_error *err = NULL;
    int r = kbs_store_audit_append_bodies(cm->store, bodies, times, n, &err);
    if (r < 0) {
        _cleanup_free_ char *s = err_str(err);
        log_error("audit: cannot append %zu entries: %s", n, s);
        err_free(err);
    }
    free(bodies);
    free(times);
    __atomic_add_fetch(&cm->batches, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&cm->entries, n, __ATOMIC_RELAXED);
    while (list) {
        kbs_commit_job *next = list->next;
        list->result = r;
        list->done(list, list->arg); /* may free the job */
        list = next;
    }
    if (cm->on_batch)
        cm->on_batch(cm->on_batch_arg);
}

/* With requests in flight beside the queued ones, wait (mu held) until the batch's window is
 * over or the committer stops. */
static void hold_window(kbs_committer *cm)
{
    if (!cm->inflight || __atomic_load_n(cm->inflight, __ATOMIC_RELAXED) <= cm->queued)
        return;
    struct timespec until = cm->first;
    until.tv_nsec += COMMIT_WINDOW_US * 1000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!cm->stop && pthread_cond_timedwait(&cm->cv, &cm->mu, &until) != ETIMEDOUT)
        ;
}

static void *writer_main(void *arg)
{
    kbs_committer *cm = arg;
    pthread_mutex_lock(&cm->mu);
    for (;;) {
        while (!cm->head && !cm->stop)
            pthread_cond_wait(&cm->cv, &cm->mu);
        if (!cm->head)
            break; /* stopping and drained */
        if (!cm->stop) {
            /*
             * Let handlers that are runnable on this CPU finish and queue their entries before
             * this batch is cut: under load a batch (one transaction, one fdatasync) then holds
             * more requests; with nothing else runnable sched_yield() returns at once.
             */
            pthread_mutex_unlock(&cm->mu);
            sched_yield();
            pthread_mutex_lock(&cm->mu);
            hold_window(cm);
        }
        kbs_commit_job *list = cm->head;
        cm->head = NULL;
        cm->tail = &cm->head;
        cm->queued = 0;
        pthread_mutex_unlock(&cm->mu);
        commit_batch(cm, list);
        pthread_mutex_lock(&cm->mu);
    }
    pthread_mutex_unlock(&cm->mu);
    return NULL;
}

int kbs__committer_new(kbs_committer **out, kbs_store *store, cista_error **err)
{
    kbs_committer *cm = xzalloc(sizeof(*cm));
    cm->store = store;
    cm->tail = &cm->head;
    pthread_mutex_init(&cm->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cm->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&cm->th, NULL, writer_main, cm);
    if (rc != 0) {
        pthread_mutex_destroy(&cm->mu);
        pthread_cond_destroy(&cm->cv);
        free(cm);
        return err_set(err, -rc, "cannot start the audit writer thread");
    }
    *out = cm;
    return 0;
}

void kbs__committer_submit(kbs_committer *cm, kbs_commit_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&cm->mu);
    bool stopping = cm->stop;
    if (!stopping) {
        /* Only the first job of a batch wakes the writer: later ones would cut its window. */
        if (!cm->head) {
            clock_gettime(CLOCK_MONOTONIC, &cm->first);
            pthread_cond_signal(&cm->cv);
        }
        *cm->tail = j;
        cm->tail = &j->next;
        cm->queued++;
    }
    pthread_mutex_unlock(&cm->mu);
    if (stopping) {
        j->result = -ESHUTDOWN;
        j->done(j, j->arg);
    }
}

void kbs__committer_set_inflight(kbs_committer *cm, const unsigned *inflight)
{
    cm->inflight = inflight;
}

void kbs__committer_on_batch(kbs_committer *cm, void (*fn)(void *arg), void *arg)
{
    cm->on_batch = fn;
    cm->on_batch_arg = arg;
}

void kbs__committer_stats(kbs_committer *cm, uint64_t *out_batches, uint64_t *out_entries)
{
    *out_batches = __atomic_load_n(&cm->batches, __ATOMIC_RELAXED);
    *out_entries = __atomic_load_n(&cm->entries, __ATOMIC_RELAXED);
}

void kbs__committer_free(kbs_committer *cm)
{
    if (!cm)
        return;
    pthread_mutex_lock(&cm->mu);
    cm->stop = true;
    pthread_cond_signal(&cm->cv);
    pthread_mutex_unlock(&cm->mu);
    pthread_join(cm->th, NULL);
    pthread_mutex_destroy(&cm->mu);
    pthread_cond_destroy(&cm->cv);
    kbs_store_close(cm->store);
    free(cm);
}
