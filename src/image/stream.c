/*
 * stream.c - the streaming stages of pack and unpack as small pull readers:
 *
 *   file -> digest -> ctr(+hmac) -> digest -> decompress -> digest -> tar_apply
 *
 * Each stage pulls chunks from its source and hands them on; none holds
 * more than one chunk (IMG_CHUNK), so memory stays bounded whatever the
 * layer size. End-of-stream checks (size, digest, HMAC, stream completeness)
 * run when a stage sees its source end, so a consumer that reads to the end
 * has all of them. Stages are independent objects so that a later change
 * can run them on separate threads with a queue between them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "util/codec.h"
#include "util/util.h"

ssize_t img__rd_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    /* Sticky results: a consumer that retries gets the same answer, not a new message. */
    if (r->failed)
        return r->failed;
    if (r->eof)
        return 0;
    ssize_t n = r->read(r, buf, err);
    if (n < 0)
        r->failed = (int)n;
    else if (n == 0)
        r->eof = true;
    return n;
}

void img__rd_free(img_rd *r)
{
    while (r) {
        img_rd *src = r->src;
        r->destroy(r);
        r = src;
    }
}

void img__rd_freep(img_rd **r)
{
    img__rd_free(*r);
    *r = NULL;
}

int img__rd_drain(img_rd *r, cista_error **err)
{
    for (;;) {
        uint8_t *p;
        ssize_t n = img__rd_read(r, &p, err);
        if (n <= 0)
            return (int)n;
    }
}

/* ---- file ---- */

typedef struct {
    img_rd base;
    int fd;
    uint64_t size, pos;
    img_progress progress;
    uint8_t *buf;
} rd_fd;

static ssize_t fd_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_fd *f = (rd_fd *)r;
    size_t want = IMG_CHUNK;
    if (f->size != UINT64_MAX && f->size - f->pos < want)
        want = (size_t)(f->size - f->pos);
    if (want == 0) {
        /* The descriptor size is reached: anything more means the blob is not what it says. */
        if (f->size != UINT64_MAX) {
            uint8_t extra;
            ssize_t n = util_read_all(f->fd, &extra, 1);
            if (n < 0)
                return err_set_sys(err, (int)n, "read blob");
            if (n > 0)
                return err_set(err, -EBADMSG,
                               "the blob has more bytes than the %llu its descriptor says",
                               (unsigned long long)f->size);
        }
        return 0;
    }
    ssize_t n = util_read_all(f->fd, f->buf, want);
    if (n < 0)
        return err_set_sys(err, (int)n, "read blob");
    if (n == 0) {
        if (f->size == UINT64_MAX)
            return 0;
        return err_set(err, -EBADMSG,
                       "the blob is truncated: it ended after %llu of the %llu bytes its "
                       "descriptor says",
                       (unsigned long long)f->pos, (unsigned long long)f->size);
    }
    f->pos += (uint64_t)n;
    if (f->progress.fn)
        f->progress.fn(f->progress.ctx, f->progress.base + f->pos, f->progress.total);
    *buf = f->buf;
    return n;
}

static void fd_destroy(img_rd *r)
{
    rd_fd *f = (rd_fd *)r;
    free(f->buf);
    free(f);
}

img_rd *img__rd_fd(int fd, uint64_t size, const img_progress *progress)
{
    rd_fd *f = xzalloc(sizeof(*f));
    f->base.read = fd_read;
    f->base.destroy = fd_destroy;
    f->fd = fd;
    f->size = size;
    if (progress)
        f->progress = *progress;
    f->buf = xmalloc(IMG_CHUNK);
    return &f->base;
}

/* ---- memory (tests) ---- */

typedef struct {
    img_rd base;
    const uint8_t *data;
    size_t size, pos, chunk;
    uint8_t *buf;
} rd_mem;

static ssize_t mem_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    (void)err;
    rd_mem *m = (rd_mem *)r;
    size_t n = m->size - m->pos < m->chunk ? m->size - m->pos : m->chunk;
    if (n == 0)
        return 0;
    /* Copy: downstream stages may modify the chunk in place. */
    memcpy(m->buf, m->data + m->pos, n);
    m->pos += n;
    *buf = m->buf;
    return (ssize_t)n;
}

static void mem_destroy(img_rd *r)
{
    rd_mem *m = (rd_mem *)r;
    free(m->buf);
    free(m);
}

img_rd *img__rd_mem(const void *data, size_t size, size_t chunk)
{
    rd_mem *m = xzalloc(sizeof(*m));
    m->base.read = mem_read;
    m->base.destroy = mem_destroy;
    m->data = data;
    m->size = size;
    m->chunk = chunk ? (chunk > IMG_CHUNK ? IMG_CHUNK : chunk) : IMG_CHUNK;
    m->buf = xmalloc(m->chunk);
    return &m->base;
}

/* ---- sha256 tap ---- */

typedef struct {
    img_rd base;
    crypto_hash *h;
    img_check check;
    char expect[IMG_DIGEST_MAX];
    char *out;
} rd_digest;

static int mismatch(cista_error **err, img_check check, const char *expect, const char *got)
{
    switch (check) {
    case IMG_CHECK_BLOB:
        return err_set(err, -EBADMSG,
                       "sha256 of the blob is %s but the descriptor says %s; the blob was "
                       "modified or corrupted (fetch or copy the image again)",
                       got, expect);
    case IMG_CHECK_SOURCE:
        return err_set(err, -EBADMSG,
                       "sha256 of the source blob is %s but its descriptor says %s; the source "
                       "image is corrupted",
                       got, expect);
    case IMG_CHECK_PLAIN:
        return err_set(err, -EBADMSG,
                       "sha256 of the decrypted blob is %s but the private options say %s; the "
                       "layer was encrypted from different data or its keys were swapped",
                       got, expect);
    case IMG_CHECK_DIFFID:
        return err_set(err, -EBADMSG,
                       "sha256 of the uncompressed tar is %s but the config's diff_id is %s; "
                       "the layer does not belong to this config",
                       got, expect);
    case IMG_CHECK_NONE:
        break;
    }
    return err_set(err, -EBADMSG, "digest mismatch: %s != %s", got, expect);
}

static ssize_t digest_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_digest *d = (rd_digest *)r;
    ssize_t n = img__rd_read(r->src, buf, err);
    if (n > 0) {
        crypto_hash_update(d->h, *buf, (size_t)n);
        return n;
    }
    if (n < 0)
        return n;
    uint8_t raw[32];
    char got[IMG_DIGEST_MAX];
    crypto_hash_final(d->h, raw);
    img__sha256_digest(got, raw);
    if (d->out)
        memcpy(d->out, got, IMG_DIGEST_MAX);
    if (d->check != IMG_CHECK_NONE && strcmp(got, d->expect) != 0)
        return mismatch(err, d->check, d->expect, got);
    return 0;
}

static void digest_destroy(img_rd *r)
{
    rd_digest *d = (rd_digest *)r;
    crypto_hash_free(d->h);
    free(d);
}

img_rd *img__rd_digest(img_rd *src, img_check check, const char *expect, char *out)
{
    rd_digest *d = xzalloc(sizeof(*d));
    d->base.read = digest_read;
    d->base.destroy = digest_destroy;
    d->base.src = src;
    d->h = crypto_hash_new(CRYPTO_SHA256);
    d->check = expect ? check : IMG_CHECK_NONE;
    if (expect)
        snprintf(d->expect, sizeof(d->expect), "%s", expect);
    d->out = out;
    return &d->base;
}

/* ---- AES-256-CTR with HMAC-SHA256 over the ciphertext (ocicrypt) ---- */

typedef struct {
    img_rd base;
    bool encrypt;
    crypto_ctr *ctr;
    crypto_hmac *mac;
    uint8_t *hmac; /* decrypt: expected (copied into want); encrypt: output */
    uint8_t want[32];
} rd_ctr;

static ssize_t ctr_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_ctr *c = (rd_ctr *)r;
    ssize_t n = img__rd_read(r->src, buf, err);
    if (n > 0) {
        /* The MAC covers the ciphertext: the input when decrypting, the output when encrypting. */
        if (!c->encrypt)
            crypto_hmac_update(c->mac, *buf, (size_t)n);
        crypto_ctr_update(c->ctr, *buf, *buf, (size_t)n);
        if (c->encrypt)
            crypto_hmac_update(c->mac, *buf, (size_t)n);
        return n;
    }
    if (n < 0)
        return n;
    uint8_t got[32];
    crypto_hmac_final(c->mac, got);
    if (c->encrypt) {
        memcpy(c->hmac, got, 32);
        return 0;
    }
    if (!crypto_memeq(got, c->want, 32)) {
        _cleanup_free_ char *g = hex_encode(got, 32);
        _cleanup_free_ char *w = hex_encode(c->want, 32);
        return err_set(err, -EBADMSG,
                       "HMAC-SHA256 of the ciphertext is %s but pubopts says %s; the encrypted "
                       "layer was modified or does not belong to these annotations",
                       g, w);
    }
    return 0;
}

static void ctr_destroy(img_rd *r)
{
    rd_ctr *c = (rd_ctr *)r;
    crypto_ctr_free(c->ctr);
    crypto_hmac_free(c->mac);
    crypto_cleanse(c->want, sizeof(c->want));
    free(c);
}

img_rd *img__rd_ctr(img_rd *src, bool encrypt, const uint8_t key[32], const uint8_t nonce[16],
                    uint8_t hmac[32])
{
    rd_ctr *c = xzalloc(sizeof(*c));
    c->base.read = ctr_read;
    c->base.destroy = ctr_destroy;
    c->base.src = src;
    c->encrypt = encrypt;
    c->ctr = crypto_ctr_new(key, nonce);
    c->mac = crypto_hmac_new(CRYPTO_SHA256, key, 32);
    c->hmac = hmac;
    if (!encrypt)
        memcpy(c->want, hmac, 32);
    return &c->base;
}

/* ---- decompression ---- */

typedef struct {
    img_rd base;
    img_compression comp;
    struct inflate_state *gz; /* ISA-L igzip: 85 KiB, one per reader */
    int gzh;                  /* gzip: where in the member header we are (GZH_*) */
    uint8_t gzh_buf[10];      /* the fixed header part, then the two FHCRC bytes */
    size_t gzh_have;
    size_t gzh_left;       /* FEXTRA bytes still to skip */
    unsigned long gzh_crc; /* CRC32 of the header so far, for FHCRC */
    ZSTD_DCtx *zd;
    const uint8_t *in;
    size_t in_size;
    bool src_eof;
    bool started;    /* any compressed input seen */
    bool member_end; /* gzip: the last member ended cleanly; zstd: frame complete */
    uint64_t members;
    uint8_t *out;
} rd_decomp;

/* Refill the input window; returns <0 on error, 0 at source EOF, >0 otherwise. */
static ssize_t decomp_fill(rd_decomp *d, cista_error **err)
{
    if (d->in_size)
        return 1;
    if (d->src_eof)
        return 0;
    uint8_t *p;
    ssize_t n = img__rd_read(d->base.src, &p, err);
    if (n < 0)
        return n;
    if (n == 0) {
        d->src_eof = true;
        return 0;
    }
    d->in = p;
    d->in_size = (size_t)n;
    d->started = true;
    return n;
}

static const char *isal_strerror(int r)
{
    switch (r) {
    case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
        return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
        return "back-reference before the start of the data";
    case ISAL_INVALID_WRAPPER:
        return "not a gzip header";
    case ISAL_UNSUPPORTED_METHOD:
        return "compression method is not deflate";
    case ISAL_INCORRECT_CHECKSUM:
        return "CRC32 or length check of the member failed";
    case ISAL_NEED_DICT:
        return "the stream asks for a preset dictionary";
    default:
        return "unknown inflate error";
    }
}

/* Where the gzip member header parser is (RFC 1952 2.3). */
enum { GZH_FIXED, GZH_XLEN, GZH_EXTRA, GZH_NAME, GZH_COMMENT, GZH_HCRC, GZH_DONE };

#define GZ_FHCRC 0x02
#define GZ_FEXTRA 0x04
#define GZ_FNAME 0x08
#define GZ_FCOMMENT 0x10
#define GZ_FRESERVED 0xe0

/* The next header part present after part st, given the header flags. */
static int gzh_next(uint8_t flg, int st)
{
    if (st < GZH_XLEN && (flg & GZ_FEXTRA))
        return GZH_XLEN;
    if (st < GZH_NAME && (flg & GZ_FNAME))
        return GZH_NAME;
    if (st < GZH_COMMENT && (flg & GZ_FCOMMENT))
        return GZH_COMMENT;
    if (st < GZH_HCRC && (flg & GZ_FHCRC))
        return GZH_HCRC;
    return GZH_DONE;
}

/*
 * Parse and skip a gzip member header from the input window, a piece at a time as
 * input arrives; nothing of it is kept but a few counters. We do this rather than let
 * ISA-L (ISAL_GZIP) do it because ISA-L 2.30 gets the FHCRC wrong when the header
 * spans two input windows, rejecting valid streams. Once the header is complete the
 * decoder is reset for a raw deflate body followed by the CRC32/ISIZE trailer.
 */
static int gzip_header(rd_decomp *d, cista_error **err)
{
    unsigned long long m = (unsigned long long)d->members + 1;
    while (d->in_size > 0 && d->gzh != GZH_DONE) {
        int st = d->gzh;
        uint8_t c = d->in[0];
        uint8_t flg = d->gzh_buf[3];
        size_t n = 1;
        switch (st) {
        case GZH_FIXED:
            d->gzh_buf[d->gzh_have++] = c;
            if ((d->gzh_have == 1 && c != 0x1f) || (d->gzh_have == 2 && c != 0x8b)) {
                if (m == 1)
                    return err_set(err, -EBADMSG,
                                   "the gzip stream does not start with a gzip header "
                                   "(magic 1f 8b)");
                return err_set(err, -EBADMSG,
                               "the gzip stream has trailing data after member %llu that is "
                               "not a gzip member",
                               m - 1);
            }
            if (d->gzh_have == 3 && c != 8)
                return err_set(err, -EBADMSG,
                               "the gzip stream is corrupt in member %llu: compression method "
                               "%u is not deflate (8)",
                               m, c);
            if (d->gzh_have == 4 && (c & GZ_FRESERVED))
                return err_set(err, -EBADMSG,
                               "the gzip stream is corrupt in member %llu: reserved header "
                               "flags set (0x%02x)",
                               m, c);
            if (d->gzh_have == 10) {
                d->gzh_have = 0;
                d->gzh = gzh_next(d->gzh_buf[3], GZH_FIXED);
            }
            break;
        case GZH_XLEN:
            d->gzh_left |= (size_t)c << (8 * d->gzh_have++);
            if (d->gzh_have == 2) {
                d->gzh_have = 0;
                d->gzh = d->gzh_left ? GZH_EXTRA : gzh_next(flg, GZH_EXTRA);
            }
            break;
        case GZH_EXTRA:
            n = d->in_size < d->gzh_left ? d->in_size : d->gzh_left;
            d->gzh_left -= n;
            if (d->gzh_left == 0)
                d->gzh = gzh_next(flg, GZH_EXTRA);
            break;
        case GZH_NAME:
        case GZH_COMMENT: {
            const uint8_t *nul = memchr(d->in, 0, d->in_size);
            n = nul ? (size_t)(nul - d->in) + 1 : d->in_size;
            if (nul)
                d->gzh = gzh_next(flg, st);
            break;
        }
        case GZH_HCRC:
            d->gzh_buf[d->gzh_have++] = c;
            if (d->gzh_have == 2) {
                unsigned want = d->gzh_buf[0] | (unsigned)d->gzh_buf[1] << 8;
                if (want != (d->gzh_crc & 0xffff))
                    return err_set(err, -EBADMSG,
                                   "the gzip stream is corrupt in member %llu: header CRC16 "
                                   "%04x, the header hashes to %04lx",
                                   m, want, d->gzh_crc & 0xffff);
                d->gzh = GZH_DONE;
            }
            break;
        default:
            abort();
        }
        if (st != GZH_HCRC)
            d->gzh_crc = crc32(d->gzh_crc, d->in, (uInt)n);
        d->in += n;
        d->in_size -= n;
    }
    if (d->gzh == GZH_DONE) {
        isal_inflate_reset(d->gz);
        d->gz->crc_flag = ISAL_GZIP_NO_HDR_VER; /* raw deflate, then CRC32 + ISIZE */
    }
    return 0;
}

static void gzip_member_start(rd_decomp *d)
{
    d->gzh = GZH_FIXED;
    d->gzh_have = 0;
    d->gzh_left = 0;
    d->gzh_crc = crc32(0, NULL, 0);
    d->member_end = false;
}

/* Run the decoder over the current input window (possibly empty, to flush what it
 * still holds); notes a member's clean end. */
static int gzip_step(rd_decomp *d, cista_error **err)
{
    struct inflate_state *s = d->gz;
    s->next_in = (uint8_t *)d->in;
    s->avail_in = (uint32_t)d->in_size; /* at most one source chunk */
    int ir = isal_inflate(s);
    size_t used = d->in_size - s->avail_in;
    d->in += used;
    d->in_size -= used;
    /* ISAL_END_INPUT and ISAL_OUT_OVERFLOW just mean "call again"; negative codes
     * are corrupt data. */
    if (ir < 0 || ir == ISAL_NEED_DICT)
        return err_set(err, -EBADMSG, "the gzip stream is corrupt in member %llu: %s",
                       (unsigned long long)d->members + 1, isal_strerror(ir));
    if (s->block_state == ISAL_BLOCK_FINISH) {
        d->member_end = true;
        d->members++;
    }
    return 0;
}

static ssize_t gzip_read(rd_decomp *d, cista_error **err)
{
    struct inflate_state *s = d->gz;
    s->next_out = d->out;
    s->avail_out = IMG_CHUNK;
    while (s->avail_out > 0) {
        ssize_t f = decomp_fill(d, err);
        if (f < 0)
            return f;
        if (f == 0) {
            if (d->gzh == GZH_DONE && !d->member_end) {
                /* The decoder may hold decoded bytes it has not handed out yet. */
                uint32_t before = s->avail_out;
                if (gzip_step(d, err) < 0)
                    return -EBADMSG;
                if (s->avail_out < before)
                    continue;
            }
            if (s->avail_out < IMG_CHUNK)
                break; /* hand out what we have; the end is checked on the next call */
            if (!d->started)
                return err_set(err, -EBADMSG, "the gzip stream is empty");
            if (!d->member_end)
                return err_set(err, -EBADMSG,
                               "the gzip stream is truncated (it ends inside member %llu)",
                               (unsigned long long)d->members + 1);
            return 0;
        }
        if (d->member_end)
            gzip_member_start(d); /* another member follows (pigz, concatenated gzip) */
        if (d->gzh != GZH_DONE) {
            if (gzip_header(d, err) < 0)
                return -EBADMSG;
            continue;
        }
        uint32_t before_out = s->avail_out;
        size_t before_in = d->in_size;
        if (gzip_step(d, err) < 0)
            return -EBADMSG;
        if (d->in_size == before_in && s->avail_out == before_out && !d->member_end)
            return err_set(err, -EBADMSG, "gzip: inflate made no progress");
    }
    return (ssize_t)(IMG_CHUNK - s->avail_out);
}

static ssize_t zstd_read(rd_decomp *d, cista_error **err)
{
    ZSTD_outBuffer out = {d->out, IMG_CHUNK, 0};
    while (out.pos < out.size) {
        ssize_t f = decomp_fill(d, err);
        if (f < 0)
            return f;
        if (f == 0) {
            if (out.pos > 0)
                break;
            if (!d->started)
                return err_set(err, -EBADMSG, "the zstd stream is empty");
            /* A frame that ended with everything flushed: done. (Asking the decoder
             * again here would answer with the header size of a next frame.) */
            if (d->member_end)
                return 0;
            /* Flush what the decoder may still hold for the last frame. */
            ZSTD_inBuffer none = {NULL, 0, 0};
            size_t zr = ZSTD_decompressStream(d->zd, &out, &none);
            if (ZSTD_isError(zr))
                return err_set(err, -EBADMSG, "the zstd stream is corrupt: %s",
                               ZSTD_getErrorName(zr));
            d->member_end = zr == 0;
            if (out.pos > 0)
                break;
            if (!d->member_end)
                return err_set(err, -EBADMSG, "the zstd stream is truncated (incomplete frame)");
            return 0;
        }
        ZSTD_inBuffer in = {d->in, d->in_size, 0};
        size_t zr = ZSTD_decompressStream(d->zd, &out, &in);
        d->in += in.pos;
        d->in_size -= in.pos;
        if (ZSTD_isError(zr))
            return err_set(err, -EBADMSG, "the zstd stream is corrupt: %s", ZSTD_getErrorName(zr));
        /* 0 means a frame ended and everything of it was flushed. */
        d->member_end = zr == 0;
    }
    return (ssize_t)out.pos;
}

static ssize_t decomp_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_decomp *d = (rd_decomp *)r;
    ssize_t n = d->comp == IMG_COMP_GZIP ? gzip_read(d, err) : zstd_read(d, err);
    if (n > 0)
        *buf = d->out;
    return n;
}

static void decomp_destroy(img_rd *r)
{
    rd_decomp *d = (rd_decomp *)r;
    free(d->gz);
    ZSTD_freeDCtx(d->zd);
    free(d->out);
    free(d);
}

img_rd *img__rd_decompress(img_rd *src, img_compression comp)
{
    if (comp != IMG_COMP_GZIP && comp != IMG_COMP_ZSTD)
        return src;
    rd_decomp *d = xzalloc(sizeof(*d));
    d->base.read = decomp_read;
    d->base.destroy = decomp_destroy;
    d->base.src = src;
    d->comp = comp;
    d->out = xmalloc(IMG_CHUNK);
    if (comp == IMG_COMP_GZIP) {
        /* ISA-L igzip inflates ~1.8x as fast as zlib. Only a gzip wrapper is accepted
         * (zlib or raw deflate are not gzip layers): gzip_header() parses it, ISA-L
         * inflates the body and checks each member's CRC32 and ISIZE. */
        d->gz = xmalloc(sizeof(*d->gz));
        isal_inflate_init(d->gz);
        gzip_member_start(d);
    } else {
        d->zd = ZSTD_createDCtx();
        if (!d->zd)
            abort();
        /* Bound the window (memory) an attacker can ask for: 128 MiB, zstd's own default. */
        ZSTD_DCtx_setParameter(d->zd, ZSTD_d_windowLogMax, 27);
    }
    return &d->base;
}

/* ---- compression ---- */

typedef struct {
    img_rd base;
    img_compression comp;
    z_stream z;
    ZSTD_CCtx *zc;
    const uint8_t *in;
    size_t in_size;
    bool src_eof, done;
    uint8_t *out;
} rd_comp;

static ssize_t comp_fill(rd_comp *c, cista_error **err)
{
    if (c->in_size || c->src_eof)
        return 1;
    uint8_t *p = NULL;
    ssize_t n = img__rd_read(c->base.src, &p, err);
    if (n < 0)
        return n;
    if (n == 0)
        c->src_eof = true;
    c->in = p;
    c->in_size = (size_t)n;
    return 1;
}

static ssize_t comp_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_comp *c = (rd_comp *)r;
    size_t produced = 0;
    while (!c->done && produced < IMG_CHUNK) {
        ssize_t f = comp_fill(c, err);
        if (f < 0)
            return f;
        if (c->comp == IMG_COMP_GZIP) {
            c->z.next_in = (Bytef *)c->in;
            c->z.avail_in = (uInt)c->in_size;
            c->z.next_out = c->out + produced;
            c->z.avail_out = (uInt)(IMG_CHUNK - produced);
            int zr = deflate(&c->z, c->src_eof ? Z_FINISH : Z_NO_FLUSH);
            if (zr == Z_STREAM_ERROR)
                return err_set(err, -EIO, "gzip compression failed");
            c->in += c->in_size - c->z.avail_in;
            c->in_size = c->z.avail_in;
            produced = IMG_CHUNK - c->z.avail_out;
            if (zr == Z_STREAM_END)
                c->done = true;
        } else {
            ZSTD_inBuffer in = {c->in, c->in_size, 0};
            ZSTD_outBuffer out = {c->out, IMG_CHUNK, produced};
            size_t zr =
                ZSTD_compressStream2(c->zc, &out, &in, c->src_eof ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(zr))
                return err_set(err, -EIO, "zstd compression failed: %s", ZSTD_getErrorName(zr));
            c->in += in.pos;
            c->in_size -= in.pos;
            produced = out.pos;
            if (c->src_eof && zr == 0)
                c->done = true;
        }
    }
    *buf = c->out;
    return (ssize_t)produced;
}

static void comp_destroy(img_rd *r)
{
    rd_comp *c = (rd_comp *)r;
    if (c->comp == IMG_COMP_GZIP)
        deflateEnd(&c->z);
    ZSTD_freeCCtx(c->zc);
    free(c->out);
    free(c);
}

img_rd *img__rd_compress(img_rd *src, img_compression comp, int level)
{
    if (comp != IMG_COMP_GZIP && comp != IMG_COMP_ZSTD)
        return src;
    rd_comp *c = xzalloc(sizeof(*c));
    c->base.read = comp_read;
    c->base.destroy = comp_destroy;
    c->base.src = src;
    c->comp = comp;
    c->out = xmalloc(IMG_CHUNK);
    if (comp == IMG_COMP_GZIP) {
        /* 15 + 16: gzip wrapper, as OCI tar+gzip layers are. */
        if (deflateInit2(&c->z, level ? level : Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            abort();
    } else {
        c->zc = ZSTD_createCCtx();
        if (!c->zc)
            abort();
        ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, level ? level : 3);
        /* The checksum lets decoders that check it (zstd -t, containerd) catch corruption. */
        ZSTD_CCtx_setParameter(c->zc, ZSTD_c_checksumFlag, 1);
    }
    return &c->base;
}
