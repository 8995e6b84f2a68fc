/*
 * pipeline.c - a pull-reader stage that runs everything below it on a
 * worker thread, so that the stages of one layer (digests and CTR+HMAC,
 * inflate, tar_apply) use more than one core.
 *
 *   consumer thread                    worker thread
 *   read() <- ring of IMG_PIPE_DEPTH <- img__rd_read(src) ... (src chain)
 *             chunks of IMG_CHUNK
 *
 * The worker copies each chunk its source hands out into a free slot of a
 * bounded ring; the consumer gets the slots in order, and the slot it holds
 * stays its own (it may modify it in place) until its next read(), as the
 * reader contract says. Memory is bounded: IMG_PIPE_DEPTH * IMG_CHUNK per
 * stage whatever the layer size.
 *
 * Errors: the worker's end (0 or an error with its message) is delivered
 * after every chunk before it, so the consumer sees exactly what a serial
 * chain would have shown. A consumer that gives up calls img__rd_stop():
 * every worker of the chain is joined, after which the whole chain belongs
 * to the calling thread again (to drain its integrity stages, or free it),
 * and an error a worker met but never delivered can be collected: when a
 * worker ran ahead, that error may be the real cause of the failure.
 *
 * When a thread cannot be created, the stage reads its source inline
 * (same results, one core).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "image/img_int.h"
#include "util/util.h"

typedef struct {
    uint8_t *buf;
    size_t size;
} pipe_slot;

typedef struct {
    img_rd base;
    pthread_t th;
    bool threaded; /* a worker was started and not joined yet */
    pthread_mutex_t mu;
    pthread_cond_t cv_data; /* consumer waits for a chunk or the end */
    pthread_cond_t cv_room; /* worker waits for a free slot or stop */
    pipe_slot slots[IMG_PIPE_DEPTH];
    size_t head;        /* next slot the consumer takes */
    size_t count;       /* filled slots, the one the consumer holds included */
    bool held;          /* the consumer holds slots[head] */
    bool stop;          /* the consumer asked the worker to stop */
    bool done;          /* the worker's source ended (end says how) */
    ssize_t end;        /* 0, or the negative errno the source returned */
    cista_error *err;   /* the worker's error, until delivered or collected */
    bool err_delivered; /* end < 0 was handed to the consumer */
} rd_pipe;

static void *pipe_worker(void *arg)
{
    rd_pipe *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->count == IMG_PIPE_DEPTH && !p->stop)
            pthread_cond_wait(&p->cv_room, &p->mu);
        bool stop = p->stop;
        /* The slot past the filled ones is free: the consumer does not look at it. */
        pipe_slot *s = &p->slots[(p->head + p->count) % IMG_PIPE_DEPTH];
        pthread_mutex_unlock(&p->mu);
        if (stop)
            return NULL;

        uint8_t *chunk = NULL;
        cista_error *e = NULL;
        ssize_t n = img__rd_read(p->base.src, &chunk, &e);
        if (n > 0) {
            if (!s->buf)
                s->buf = xmalloc(IMG_CHUNK);
            /* Stages never hand out more than IMG_CHUNK (the reader contract). */
            memcpy(s->buf, chunk, (size_t)n);
            s->size = (size_t)n;
        }
        pthread_mutex_lock(&p->mu);
        if (n > 0) {
            p->count++;
        } else {
            p->done = true;
            p->end = n;
            p->err = e;
        }
        pthread_cond_signal(&p->cv_data);
        pthread_mutex_unlock(&p->mu);
        if (n <= 0)
            return NULL;
    }
}

static ssize_t pipe_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_pipe *p = (rd_pipe *)r;
    if (!p->threaded && !p->done) {
        /* No worker (pthread_create failed): read inline. */
        return img__rd_read(r->src, buf, err);
    }
    pthread_mutex_lock(&p->mu);
    if (p->held) {
        p->held = false;
        p->head = (p->head + 1) % IMG_PIPE_DEPTH;
        p->count--;
        pthread_cond_signal(&p->cv_room);
    }
    while (p->count == 0 && !p->done)
        pthread_cond_wait(&p->cv_data, &p->mu);
    ssize_t n;
    if (p->count > 0) {
        p->held = true;
        *buf = p->slots[p->head].buf;
        n = (ssize_t)p->slots[p->head].size;
    } else {
        n = p->end;
        if (n == -ECANCELED && !p->err) {
            err_set(err, -ECANCELED, "read after the pipeline was stopped");
        } else if (n < 0) {
            p->err_delivered = true;
            if (err && !*err)
                *err = p->err;
            else
                err_free(p->err);
            p->err = NULL;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* Stop and join the worker of one stage; the stage keeps its undelivered error. */
static void pipe_join(rd_pipe *p)
{
    if (!p->threaded)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv_room);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    p->threaded = false;
    /* Chunks still in the ring, or never read, are dropped: later reads must fail. */
    if ((!p->done || p->count > (p->held ? 1u : 0u)) && p->end == 0)
        p->end = -ECANCELED;
    p->done = true;
    p->count = 0;
    p->held = false;
}

static void pipe_destroy(img_rd *r)
{
    rd_pipe *p = (rd_pipe *)r;
    pipe_join(p);
    for (size_t i = 0; i < IMG_PIPE_DEPTH; i++)
        free(p->slots[i].buf);
    err_free(p->err);
    pthread_cond_destroy(&p->cv_data);
    pthread_cond_destroy(&p->cv_room);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

img_rd *img__rd_pipe(img_rd *src)
{
    rd_pipe *p = xzalloc(sizeof(*p));
    p->base.read = pipe_read;
    p->base.destroy = pipe_destroy;
    p->base.src = src;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_data, NULL);
    pthread_cond_init(&p->cv_room, NULL);
    p->threaded = pthread_create(&p->th, NULL, pipe_worker, p) == 0;
    return &p->base;
}

/* ---- progress relay ---- */

static void relay_record(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    img_progress_relay *rel = ctx;
    atomic_store_explicit(&rel->done, done, memory_order_relaxed);
}

img_progress img__progress_relay_init(img_progress_relay *rel, const img_progress *user)
{
    memset(rel, 0, sizeof(*rel));
    if (!user || !user->fn)
        return (img_progress){0};
    rel->user = *user;
    atomic_init(&rel->done, user->base);
    rel->sent = user->base;
    return (img_progress){relay_record, rel, user->base, user->total};
}

void img__progress_relay_flush(img_progress_relay *rel)
{
    if (!rel || !rel->user.fn)
        return;
    uint64_t d = atomic_load_explicit(&rel->done, memory_order_relaxed);
    if (d != rel->sent)
        rel->user.fn(rel->user.ctx, d, rel->user.total);
    rel->sent = d;
}

int img__rd_stop(img_rd *top, const img_rd *below, cista_error **err)
{
    /* Outermost first: an outer worker may be waiting on an inner stage's ring. */
    for (img_rd *r = top; r; r = r->src)
        if (r->read == pipe_read)
            pipe_join((rd_pipe *)r);
    /* Every thread is joined: the chain is ours. The innermost undelivered error wins. */
    rd_pipe *found = NULL;
    for (img_rd *r = top; r && r != below; r = r->src) {
        rd_pipe *p = (rd_pipe *)r;
        if (r->read == pipe_read && !p->err_delivered &&
            (p->err || (p->end < 0 && p->end != -ECANCELED)))
            found = p;
    }
    if (!found)
        return 0;
    int code = (int)found->end;
    if (err && !*err)
        *err = steal_ptr(&found->err);
    err_free(found->err);
    found->err = NULL;
    found->err_delivered = true;
    return code;
}
