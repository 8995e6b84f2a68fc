/*
 * volume.c - an open volume: blobs (objects with a tree of authenticated
 * block references), inodes, directories, atomic commits, the rollback
 * check at open, and fsck. docs/volume-format.md describes the bytes;
 * this file is the state machine around them.
 *
 * Out-of-place rule: between two commits every block or node is written to
 * the slot that the last committed tree does not reference (each position
 * has two slots), so the committed tree stays readable until the next
 * superblock is durable. The "old" refs of dirty nodes remember which slot
 * that is.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"
#include "volume/vol_int.h"

/* ---------------------------------------------------------------------------
 * In-memory structures
 */
typedef struct vnode {
    struct vnode *hnext;
    uint32_t level;
    uint64_t index;
    bool dirty;
    vol_ref *old; /* committed entries while dirty */
    vol_ref cur[VOL_FANOUT];
} vnode;

typedef struct vblob {
    uint64_t oid;
    uint32_t kind; /* VOL_KIND_DATA or VOL_KIND_META */
    uint32_t depth, old_depth;
    vol_ref root, old_root;
    vnode **tab;
    size_t tab_cap, tab_count;
    void *h;
    uint32_t users;     /* unlocked readers/writers of h */
    bool close_pending; /* close h when the last user is done */
    bool dirty;         /* tree changed since the last commit */
    bool wrote;         /* backing object written since the last sync */
    bool reset;         /* emptied: truncate the backing object after commit */
} vblob;

typedef struct vdent {
    uint64_t ino; /* 0 = removed (tombstone) */
    uint64_t cookie;
    int32_t next;
    uint8_t type;
    uint8_t len;
    char name[];
} vdent;

typedef struct vdir {
    vdent **ents;
    size_t count, cap, live;
    int32_t *buckets;
    size_t nbuckets;
    uint64_t next_cookie;
    uint8_t *ser; /* bytes as last written */
    size_t ser_size;
} vdir;

typedef struct vinode {
    struct vinode *hnext;
    uint64_t ino;
    vol_rec rec;
    vblob blob;
    vdir *dir;
    uint32_t nopen;
    bool rec_dirty, dir_dirty, freed, listed, has_handle;
} vinode;

struct vol_volume {
    pthread_mutex_t lock;
    vol_store *store;
    uint8_t master[VOL_KEY_SIZE];
    vol_keys keys;
    vol_gcm g_data, g_meta, g_super;
    uint8_t volume_id[VOL_ID_SIZE];
    uint64_t gen;  /* last committed generation */
    uint64_t wgen; /* generation being written (gen + 1) */
    uint8_t root[VOL_ROOT_SIZE];
    uint64_t next_ino;
    uint32_t epoch;
    uint64_t ctr;
    int64_t created;
    uint64_t itable_size;
    vblob itable;
    void *sb_h;
    vinode **itab;
    size_t itab_cap, itab_count;
    vinode **dirty;
    size_t dirty_count, dirty_cap;
    vinode **handles;
    size_t handles_count, handles_cap;
    uint64_t *doomed; /* object ids to remove after the next commit */
    size_t doomed_count, doomed_cap;
    uint64_t *reap; /* object ids unreferenced by the last commit, removed after it */
    size_t reap_count, reap_cap;
    uint64_t doomed_bytes; /* size of the regular files among doomed */
    bool changed;
    bool dir_changed;
    bool broken;
    bool ro;
    bool borrowed_store;
    vol_anchor *anchor;
    bool anchor_behind; /* the last durable commit is not anchored yet (advance failed) */
    vol_rollback_mode mode;
    /* data I/O running without the lock: block ranges, and the commit barrier */
    struct vinflight *infl;
    size_t infl_count, infl_cap;
    size_t infl_writes;
    bool committing;
    pthread_cond_t infl_cv;
    uint64_t serial; /* identifies the keys for thread-local cipher contexts */
    /* one decrypted inode-table block */
    uint64_t itc_block;
    bool itc_valid;
    uint8_t itc[VOL_BLOCK_SIZE];
};

typedef struct vinflight {
    uint64_t ino, first, last; /* blocks [first, last] */
    bool write;
} vinflight;

static uint64_t g_level_base[VOL_MAX_DEPTH + 2];
static uint64_t g_serial; /* volumes opened so far (atomic) */
static pthread_once_t g_base_once = PTHREAD_ONCE_INIT;

static void init_bases(void)
{
    uint64_t span = VOL_FANOUT, base = 0;
    for (uint32_t l = 1; l <= VOL_MAX_DEPTH + 1; l++) {
        g_level_base[l] = base;
        base += (VOL_MAX_BLOCKS + span - 1) / span;
        span *= VOL_FANOUT;
    }
}

static uint64_t cap_blocks(uint32_t depth)
{
    uint64_t c = 1;
    for (uint32_t i = 0; i < depth; i++)
        c *= VOL_FANOUT;
    return c;
}

static uint64_t phys(uint32_t level, uint64_t index, unsigned slot)
{
    if (level == 0)
        return slot * VOL_SLOT_STRIDE + index * VOL_BLOCK_SIZE;
    return VOL_TREE_BASE + (g_level_base[level] + index) * 2 * VOL_BLOCK_SIZE +
           slot * VOL_BLOCK_SIZE;
}

static void make_aad(uint8_t out[VOL_AAD_SIZE], const vol_volume *v, uint64_t oid, uint32_t level,
                     uint32_t kind, uint64_t index, uint64_t gen)
{
    memcpy(out, v->volume_id, VOL_ID_SIZE);
    vol__put64(out + 16, oid);
    vol__put32(out + 24, level);
    vol__put32(out + 28, kind);
    vol__put64(out + 32, index);
    vol__put64(out + 40, gen);
}

static void next_nonce(vol_volume *v, uint8_t out[VOL_NONCE_SIZE])
{
    uint64_t c = v->ctr++;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(v->epoch >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(c >> (56 - 8 * i));
}

static void now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
}

/* ---------------------------------------------------------------------------
 * Blobs
 */
static void blob_init(vblob *b, uint64_t oid, uint32_t kind, uint32_t depth, const vol_ref *root)
{
    memset(b, 0, sizeof(*b));
    b->oid = oid;
    b->kind = kind;
    b->depth = b->old_depth = depth;
    if (root)
        b->root = b->old_root = *root;
}

static size_t node_hash(uint32_t level, uint64_t index, size_t cap)
{
    uint64_t h = (index * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)level << 58);
    return (size_t)(h >> 17) & (cap - 1);
}

static vnode *node_find(vblob *b, uint32_t level, uint64_t index)
{
    if (!b->tab)
        return NULL;
    for (vnode *n = b->tab[node_hash(level, index, b->tab_cap)]; n; n = n->hnext)
        if (n->level == level && n->index == index)
            return n;
    return NULL;
}

static void node_insert(vblob *b, vnode *n)
{
    if (b->tab_count + 1 > b->tab_cap) {
        size_t ncap = b->tab_cap ? b->tab_cap * 2 : 16;
        vnode **nt = xzalloc(ncap * sizeof(*nt));
        for (size_t i = 0; i < b->tab_cap; i++) {
            vnode *x = b->tab[i];
            while (x) {
                vnode *nx = x->hnext;
                size_t k = node_hash(x->level, x->index, ncap);
                x->hnext = nt[k];
                nt[k] = x;
                x = nx;
            }
        }
        free(b->tab);
        b->tab = nt;
        b->tab_cap = ncap;
    }
    size_t k = node_hash(n->level, n->index, b->tab_cap);
    n->hnext = b->tab[k];
    b->tab[k] = n;
    b->tab_count++;
}

static void node_free(vnode *n)
{
    free(n->old);
    free(n);
}

static void blob_drop_nodes(vblob *b)
{
    for (size_t i = 0; i < b->tab_cap; i++) {
        vnode *n = b->tab[i];
        while (n) {
            vnode *nx = n->hnext;
            node_free(n);
            n = nx;
        }
    }
    free(b->tab);
    b->tab = NULL;
    b->tab_cap = b->tab_count = 0;
}

static void node_touch(vblob *b, vnode *n)
{
    if (!n->dirty) {
        n->old = xmalloc(sizeof(n->cur));
        memcpy(n->old, n->cur, sizeof(n->cur));
        n->dirty = true;
    }
    b->dirty = true;
}

/* Remember @owner's blob among those with an open handle (synced and closed at commit). */
static void track_handle(vol_volume *v, vinode *owner)
{
    if (!owner || owner->has_handle)
        return;
    if (v->handles_count == v->handles_cap) {
        v->handles_cap = v->handles_cap ? v->handles_cap * 2 : 64;
        v->handles = xrealloc(v->handles, v->handles_cap * sizeof(*v->handles));
    }
    v->handles[v->handles_count++] = owner;
    owner->has_handle = true;
}

static int blob_handle(vol_volume *v, vblob *b, vinode *owner, bool create)
{
    track_handle(v, owner);
    if (b->h)
        return 0;
    char name[33];
    vol__object_name(name, v->keys.name, b->oid);
    int r = v->store->ops->open(v->store->ctx, name, create, &b->h);
    if (r < 0) {
        b->h = NULL;
        return r;
    }
    if (create)
        v->dir_changed = true;
    return 0;
}

static void blob_close(vol_volume *v, vblob *b)
{
    if (b->users) {
        b->close_pending = true;
        return;
    }
    b->close_pending = false;
    if (b->h) {
        v->store->ops->close(v->store->ctx, b->h);
        b->h = NULL;
    }
}

static int load_node_raw(vol_volume *v, vblob *b, uint32_t level, uint64_t index,
                         const vol_ref *ref, vol_ref *out)
{
    int r = blob_handle(v, b, NULL, false);
    if (r < 0) {
        log_error("volume: object %" PRIu64 " is missing from the backing store (%s)", b->oid,
                  strerror(-r));
        return -EIO;
    }
    uint8_t ct[VOL_BLOCK_SIZE], pt[VOL_BLOCK_SIZE], aad[VOL_AAD_SIZE];
    ssize_t n = v->store->ops->read(v->store->ctx, b->h,
                                    phys(level, index, ref->flags & VOL_REF_SLOT), ct, sizeof(ct));
    if (n != (ssize_t)sizeof(ct)) {
        log_error("volume: object %" PRIu64 " tree node L%u/%" PRIu64
                  " is truncated on the backing store",
                  b->oid, level, index);
        return -EIO;
    }
    make_aad(aad, v, b->oid, level, VOL_KIND_NODE, index, ref->gen);
    if (vol__gcm_open(&v->g_meta, ref->nonce, aad, sizeof(aad), ct, sizeof(ct), pt, ref->tag) < 0) {
        log_error("volume: object %" PRIu64 " tree node L%u/%" PRIu64
                  " does not authenticate (tampered, swapped or replayed)",
                  b->oid, level, index);
        return -EIO;
    }
    cista_error *e = NULL;
    r = vol__node_get(out, pt, sizeof(pt), v->gen, &e);
    if (r < 0) {
        _cleanup_free_ char *s = err_str(e);
        log_error("volume: object %" PRIu64 ": %s", b->oid, s);
        err_free(e);
        return -EIO;
    }
    return 0;
}

static int get_node(vol_volume *v, vblob *b, uint32_t level, uint64_t index, bool create,
                    vnode **out);
static void blob_unuse(vol_volume *v, vblob *b);
static uint8_t *tl_buffer(void);
static void maybe_free(vol_volume *v, struct vinode *vi);

/* The ref of (level, index) in the last committed tree. */
static int old_ref_of(vol_volume *v, vblob *b, uint32_t level, uint64_t index, vol_ref *out)
{
    memset(out, 0, sizeof(*out));
    if (level > b->old_depth)
        return 0;
    if (level == b->old_depth) {
        if (index == 0)
            *out = b->old_root;
        return 0;
    }
    vnode *p;
    int r = get_node(v, b, level + 1, index / VOL_FANOUT, true, &p);
    if (r < 0)
        return r;
    *out = p->dirty ? p->old[index % VOL_FANOUT] : p->cur[index % VOL_FANOUT];
    return 0;
}

static int get_node(vol_volume *v, vblob *b, uint32_t level, uint64_t index, bool create,
                    vnode **out)
{
    *out = node_find(b, level, index);
    if (*out)
        return 0;
    if (level > b->depth || (level == b->depth && index != 0))
        return create ? -EFBIG : 0;
    vol_ref ref;
    if (level == b->depth) {
        ref = b->root;
    } else {
        vnode *p;
        int r = get_node(v, b, level + 1, index / VOL_FANOUT, create, &p);
        if (r < 0)
            return r;
        if (!p)
            return 0;
        ref = p->cur[index % VOL_FANOUT];
    }
    vnode *n = xzalloc(sizeof(*n));
    n->level = level;
    n->index = index;
    if (vol__ref_present(&ref)) {
        int r = load_node_raw(v, b, level, index, &ref, n->cur);
        if (r < 0) {
            free(n);
            return r;
        }
    } else {
        if (!create) {
            free(n);
            return 0;
        }
        n->dirty = true;
        n->old = xzalloc(sizeof(n->cur));
        b->dirty = true;
        vol_ref oref;
        int r = old_ref_of(v, b, level, index, &oref);
        if (r == 0 && vol__ref_present(&oref))
            r = load_node_raw(v, b, level, index, &oref, n->old);
        if (r < 0) {
            node_free(n);
            return r;
        }
    }
    node_insert(b, n);
    *out = n;
    return 0;
}

/* Grow the tree until it can address @nblocks blocks. */
static int blob_grow(vblob *b, uint64_t nblocks)
{
    if (nblocks > VOL_MAX_BLOCKS)
        return -EFBIG;
    while (cap_blocks(b->depth) < nblocks) {
        vnode *n = xzalloc(sizeof(*n));
        n->level = b->depth + 1;
        n->index = 0;
        n->dirty = true;
        n->old = xzalloc(sizeof(n->cur));
        n->cur[0] = b->root;
        node_insert(b, n);
        b->depth++;
        memset(&b->root, 0, sizeof(b->root));
        b->dirty = true;
    }
    return 0;
}

/* Current ref of data block @blk for reading (NULL: hole). */
static int read_entry(vol_volume *v, vblob *b, uint64_t blk, const vol_ref **out)
{
    *out = NULL;
    if (blk >= cap_blocks(b->depth))
        return 0;
    if (b->depth == 0) {
        *out = &b->root;
        return 0;
    }
    vnode *n;
    int r = get_node(v, b, 1, blk / VOL_FANOUT, false, &n);
    if (r < 0)
        return r;
    if (n)
        *out = &n->cur[blk % VOL_FANOUT];
    return 0;
}

/* Entry of block @blk for writing, and the slot the write must use. */
static int write_entry(vol_volume *v, vblob *b, uint64_t blk, vol_ref **out, unsigned *slot)
{
    int r = blob_grow(b, blk + 1);
    if (r < 0)
        return r;
    vol_ref oref;
    if (b->depth == 0) {
        *out = &b->root;
        oref = b->old_root;
    } else {
        vnode *n;
        r = get_node(v, b, 1, blk / VOL_FANOUT, true, &n);
        if (r < 0)
            return r;
        node_touch(b, n);
        *out = &n->cur[blk % VOL_FANOUT];
        r = old_ref_of(v, b, 0, blk, &oref);
        if (r < 0)
            return r;
    }
    *slot = vol__ref_present(&oref) ? !(oref.flags & VOL_REF_SLOT) : 0;
    b->dirty = true;
    return 0;
}

static vol_gcm *blob_gcm(vol_volume *v, vblob *b)
{
    return b->kind == VOL_KIND_DATA ? &v->g_data : &v->g_meta;
}

/* Read and authenticate @n whole blocks from @first into @out. */
static int read_blocks(vol_volume *v, vblob *b, vinode *owner, uint64_t first, size_t n,
                       uint8_t *out)
{
    size_t i = 0;
    while (i < n) {
        const vol_ref *ref;
        int r = read_entry(v, b, first + i, &ref);
        if (r < 0)
            return r;
        if (!ref || !vol__ref_present(ref)) {
            memset(out + i * VOL_BLOCK_SIZE, 0, VOL_BLOCK_SIZE);
            i++;
            continue;
        }
        /* a run of present blocks in the same slot is one contiguous read */
        const vol_ref *refs[256];
        size_t run = 0;
        unsigned slot = ref->flags & VOL_REF_SLOT;
        refs[run++] = ref;
        while (i + run < n && run < ARRAY_LEN(refs)) {
            const vol_ref *nr;
            r = read_entry(v, b, first + i + run, &nr);
            if (r < 0)
                return r;
            if (!nr || !vol__ref_present(nr) || (nr->flags & VOL_REF_SLOT) != slot)
                break;
            refs[run++] = nr;
        }
        r = blob_handle(v, b, owner, false);
        if (r < 0) {
            log_error("volume: object %" PRIu64 " is missing from the backing store", b->oid);
            return -EIO;
        }
        uint8_t *dst = out + i * VOL_BLOCK_SIZE;
        ssize_t got = v->store->ops->read(v->store->ctx, b->h, phys(0, first + i, slot), dst,
                                          run * VOL_BLOCK_SIZE);
        if (got != (ssize_t)(run * VOL_BLOCK_SIZE)) {
            log_error("volume: object %" PRIu64 " block %" PRIu64
                      " is truncated on the backing store",
                      b->oid, first + i);
            return -EIO;
        }
        for (size_t k = 0; k < run; k++) {
            uint8_t aad[VOL_AAD_SIZE];
            make_aad(aad, v, b->oid, 0, b->kind, first + i + k, refs[k]->gen);
            uint8_t *blk = dst + k * VOL_BLOCK_SIZE;
            if (vol__gcm_open(blob_gcm(v, b), refs[k]->nonce, aad, sizeof(aad), blk, VOL_BLOCK_SIZE,
                              blk, refs[k]->tag) < 0) {
                OPENSSL_cleanse(dst, run * VOL_BLOCK_SIZE);
                log_error("volume: object %" PRIu64 " block %" PRIu64
                          " does not authenticate (tampered, swapped or replayed)",
                          b->oid, first + i + k);
                return -EIO;
            }
        }
        i += run;
    }
    return 0;
}

#define WRITE_BATCH 256

/* Encrypt and write @n whole blocks from @first, out of place. */
static int write_blocks(vol_volume *v, vblob *b, vinode *owner, uint64_t first, size_t n,
                        const uint8_t *in)
{
    int r = blob_grow(b, first + n);
    if (r < 0)
        return r;
    r = blob_handle(v, b, owner, true);
    if (r < 0) {
        log_error("volume: cannot create object %" PRIu64 ": %s", b->oid, strerror(-r));
        return r;
    }
    uint8_t *ct = tl_buffer();
    size_t i = 0;
    while (i < n) {
        vol_ref *ents[WRITE_BATCH];
        vol_ref nrefs[WRITE_BATCH];
        unsigned slot0 = 0;
        size_t run = 0;
        while (i + run < n && run < WRITE_BATCH) {
            vol_ref *e;
            unsigned slot;
            r = write_entry(v, b, first + i + run, &e, &slot);
            if (r < 0)
                return r;
            if (run == 0)
                slot0 = slot;
            else if (slot != slot0)
                break;
            vol_ref *nr = &nrefs[run];
            nr->gen = v->wgen;
            nr->flags = slot;
            next_nonce(v, nr->nonce);
            uint8_t aad[VOL_AAD_SIZE];
            make_aad(aad, v, b->oid, 0, b->kind, first + i + run, v->wgen);
            if (vol__gcm_seal(blob_gcm(v, b), nr->nonce, aad, sizeof(aad),
                              in + (i + run) * VOL_BLOCK_SIZE, VOL_BLOCK_SIZE,
                              ct + run * VOL_BLOCK_SIZE, nr->tag) < 0)
                return -EIO;
            ents[run] = e;
            run++;
        }
        r = v->store->ops->write(v->store->ctx, b->h, phys(0, first + i, slot0), ct,
                                 run * VOL_BLOCK_SIZE);
        if (r < 0) {
            log_error("volume: write to object %" PRIu64 " failed: %s", b->oid, strerror(-r));
            return r;
        }
        for (size_t k = 0; k < run; k++)
            *ents[k] = nrefs[k];
        b->wrote = true;
        i += run;
    }
    return 0;
}

static int blob_read(vol_volume *v, vblob *b, vinode *owner, uint64_t off, void *buf, size_t size)
{
    uint8_t *p = buf;
    while (size > 0) {
        uint64_t blk = off / VOL_BLOCK_SIZE;
        size_t in = off % VOL_BLOCK_SIZE;
        if (in == 0 && size >= VOL_BLOCK_SIZE) {
            size_t n = size / VOL_BLOCK_SIZE;
            int r = read_blocks(v, b, owner, blk, n, p);
            if (r < 0)
                return r;
            p += n * VOL_BLOCK_SIZE;
            off += n * VOL_BLOCK_SIZE;
            size -= n * VOL_BLOCK_SIZE;
            continue;
        }
        uint8_t tmp[VOL_BLOCK_SIZE];
        int r = read_blocks(v, b, owner, blk, 1, tmp);
        if (r < 0)
            return r;
        size_t take = VOL_BLOCK_SIZE - in < size ? VOL_BLOCK_SIZE - in : size;
        memcpy(p, tmp + in, take);
        OPENSSL_cleanse(tmp, sizeof(tmp));
        p += take;
        off += take;
        size -= take;
    }
    return 0;
}

static int blob_write(vol_volume *v, vblob *b, vinode *owner, uint64_t off, const void *buf,
                      size_t size)
{
    const uint8_t *p = buf;
    while (size > 0) {
        uint64_t blk = off / VOL_BLOCK_SIZE;
        size_t in = off % VOL_BLOCK_SIZE;
        if (in == 0 && size >= VOL_BLOCK_SIZE) {
            size_t n = size / VOL_BLOCK_SIZE;
            int r = write_blocks(v, b, owner, blk, n, p);
            if (r < 0)
                return r;
            p += n * VOL_BLOCK_SIZE;
            off += n * VOL_BLOCK_SIZE;
            size -= n * VOL_BLOCK_SIZE;
            continue;
        }
        uint8_t tmp[VOL_BLOCK_SIZE];
        int r = read_blocks(v, b, owner, blk, 1, tmp);
        if (r < 0)
            return r;
        size_t take = VOL_BLOCK_SIZE - in < size ? VOL_BLOCK_SIZE - in : size;
        memcpy(tmp + in, p, take);
        r = write_blocks(v, b, owner, blk, 1, tmp);
        OPENSSL_cleanse(tmp, sizeof(tmp));
        if (r < 0)
            return r;
        p += take;
        off += take;
        size -= take;
    }
    return 0;
}

/* Make every block from @nb on a hole. */
static int blob_cut(vol_volume *v, vblob *b, uint64_t nb)
{
    if (b->depth == 0) {
        if (nb == 0 && vol__ref_present(&b->root)) {
            memset(&b->root, 0, sizeof(b->root));
            b->dirty = true;
        }
        return 0;
    }
    uint64_t span = 1;
    for (uint32_t l = 1; l <= b->depth; l++, span *= VOL_FANOUT) {
        uint64_t g = (nb + span - 1) / span;
        uint64_t j = g / VOL_FANOUT;
        size_t e = g % VOL_FANOUT;
        vnode *n = NULL;
        if (j * VOL_FANOUT * span < cap_blocks(b->depth)) {
            int r = get_node(v, b, l, j, false, &n);
            if (r < 0)
                return r;
        }
        if (n) {
            for (size_t k = e; k < VOL_FANOUT; k++)
                if (vol__ref_present(&n->cur[k])) {
                    node_touch(b, n);
                    memset(&n->cur[k], 0, sizeof(n->cur[k]));
                }
        }
        /* cached nodes wholly beyond the cut must not resurrect their blocks */
        for (size_t t = 0; t < b->tab_cap; t++)
            for (vnode *x = b->tab[t]; x; x = x->hnext) {
                if (x->level != l || x->index <= j)
                    continue;
                for (size_t k = 0; k < VOL_FANOUT; k++)
                    if (vol__ref_present(&x->cur[k])) {
                        node_touch(b, x);
                        memset(&x->cur[k], 0, sizeof(x->cur[k]));
                    }
            }
    }
    return 0;
}

/* Change the size of a blob from @old_size to @new_size. */
static int blob_truncate(vol_volume *v, vblob *b, vinode *owner, uint64_t old_size,
                         uint64_t new_size)
{
    if (new_size >= old_size)
        return 0;
    uint64_t nb = (new_size + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE;
    int r = blob_cut(v, b, nb);
    if (r < 0)
        return r;
    size_t tail = new_size % VOL_BLOCK_SIZE;
    if (tail) {
        const vol_ref *ref;
        r = read_entry(v, b, nb - 1, &ref);
        if (r < 0)
            return r;
        if (ref && vol__ref_present(ref)) {
            uint8_t zero[VOL_BLOCK_SIZE] = {0};
            r = blob_write(v, b, owner, new_size, zero, VOL_BLOCK_SIZE - tail);
        }
    }
    return r;
}

/* Write the dirty tree nodes bottom-up, out of place; sets b->root. */
static int blob_flush(vol_volume *v, vblob *b, vinode *owner)
{
    uint8_t buf[2 * VOL_BLOCK_SIZE];
    for (uint32_t l = 1; l <= b->depth; l++) {
        for (size_t t = 0; t < b->tab_cap; t++) {
            for (vnode *n = b->tab[t]; n; n = n->hnext) {
                if (n->level != l || !n->dirty)
                    continue;
                vol_ref nr;
                memset(&nr, 0, sizeof(nr));
                bool any = false;
                for (size_t k = 0; k < VOL_FANOUT && !any; k++)
                    any = vol__ref_present(&n->cur[k]);
                if (any) {
                    vol_ref oref;
                    int r = old_ref_of(v, b, l, n->index, &oref);
                    if (r < 0)
                        return r;
                    unsigned slot = vol__ref_present(&oref) ? !(oref.flags & VOL_REF_SLOT) : 0;
                    r = blob_handle(v, b, owner, true);
                    if (r < 0)
                        return r;
                    nr.gen = v->wgen;
                    nr.flags = slot;
                    next_nonce(v, nr.nonce);
                    uint8_t aad[VOL_AAD_SIZE];
                    make_aad(aad, v, b->oid, l, VOL_KIND_NODE, n->index, v->wgen);
                    vol__node_put(buf, n->cur);
                    if (vol__gcm_seal(&v->g_meta, nr.nonce, aad, sizeof(aad), buf, VOL_BLOCK_SIZE,
                                      buf + VOL_BLOCK_SIZE, nr.tag) < 0)
                        return -EIO;
                    r = v->store->ops->write(v->store->ctx, b->h, phys(l, n->index, slot),
                                             buf + VOL_BLOCK_SIZE, VOL_BLOCK_SIZE);
                    if (r < 0)
                        return r;
                    b->wrote = true;
                }
                if (l == b->depth) {
                    b->root = nr;
                } else {
                    vnode *p;
                    int r = get_node(v, b, l + 1, n->index / VOL_FANOUT, true, &p);
                    if (r < 0)
                        return r;
                    if (memcmp(&p->cur[n->index % VOL_FANOUT], &nr, sizeof(nr)) != 0) {
                        node_touch(b, p);
                        p->cur[n->index % VOL_FANOUT] = nr;
                    }
                }
            }
        }
        /* this level's old refs were needed by its children only */
        for (size_t t = 0; t < b->tab_cap; t++)
            for (vnode *n = b->tab[t]; n; n = n->hnext)
                if (n->level == l && n->dirty) {
                    free(n->old);
                    n->old = NULL;
                    n->dirty = false;
                }
    }
    return 0;
}

static void blob_committed(vblob *b)
{
    b->old_root = b->root;
    b->old_depth = b->depth;
    b->dirty = false;
}

/* ---------------------------------------------------------------------------
 * Inodes
 */
static size_t ino_hash(uint64_t ino, size_t cap)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static vinode *ino_find(vol_volume *v, uint64_t ino)
{
    if (!v->itab)
        return NULL;
    for (vinode *n = v->itab[ino_hash(ino, v->itab_cap)]; n; n = n->hnext)
        if (n->ino == ino)
            return n;
    return NULL;
}

static void ino_insert(vol_volume *v, vinode *vi)
{
    if (v->itab_count + 1 > v->itab_cap / 2) {
        size_t ncap = v->itab_cap ? v->itab_cap * 2 : 256;
        vinode **nt = xzalloc(ncap * sizeof(*nt));
        for (size_t i = 0; i < v->itab_cap; i++) {
            vinode *x = v->itab[i];
            while (x) {
                vinode *nx = x->hnext;
                size_t k = ino_hash(x->ino, ncap);
                x->hnext = nt[k];
                nt[k] = x;
                x = nx;
            }
        }
        free(v->itab);
        v->itab = nt;
        v->itab_cap = ncap;
    }
    size_t k = ino_hash(vi->ino, v->itab_cap);
    vi->hnext = v->itab[k];
    v->itab[k] = vi;
    v->itab_count++;
}

static void ino_unlink(vol_volume *v, vinode *vi)
{
    vinode **pp = &v->itab[ino_hash(vi->ino, v->itab_cap)];
    while (*pp && *pp != vi)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = vi->hnext;
        v->itab_count--;
    }
}

static void dir_free(vdir *d);

static void vinode_free(vol_volume *v, vinode *vi)
{
    blob_close(v, &vi->blob);
    blob_drop_nodes(&vi->blob);
    dir_free(vi->dir);
    free(vi);
}

static void mark_dirty(vol_volume *v, vinode *vi)
{
    v->changed = true;
    if (vi->listed)
        return;
    if (v->dirty_count == v->dirty_cap) {
        v->dirty_cap = v->dirty_cap ? v->dirty_cap * 2 : 64;
        v->dirty = xrealloc(v->dirty, v->dirty_cap * sizeof(*v->dirty));
    }
    v->dirty[v->dirty_count++] = vi;
    vi->listed = true;
}

static void touch_rec(vol_volume *v, vinode *vi)
{
    vi->rec_dirty = true;
    mark_dirty(v, vi);
}

static int itable_read_block(vol_volume *v, uint64_t blk, uint8_t *out)
{
    if (v->itc_valid && v->itc_block == blk) {
        memcpy(out, v->itc, VOL_BLOCK_SIZE);
        return 0;
    }
    int r = read_blocks(v, &v->itable, NULL, blk, 1, out);
    if (r < 0)
        return r;
    memcpy(v->itc, out, VOL_BLOCK_SIZE);
    v->itc_block = blk;
    v->itc_valid = true;
    return 0;
}

static uint32_t kind_of(uint32_t mode)
{
    return S_ISREG(mode) ? VOL_KIND_DATA : VOL_KIND_META;
}

static int inode_get(vol_volume *v, uint64_t ino, vinode **out)
{
    vinode *vi = ino_find(v, ino);
    if (vi) {
        if (vi->freed)
            return -ENOENT;
        *out = vi;
        return 0;
    }
    if (ino == 0 || ino >= v->next_ino || (ino + 1) * VOL_REC_SIZE > v->itable_size)
        return -ENOENT;
    uint8_t blk[VOL_BLOCK_SIZE];
    uint64_t off = ino * VOL_REC_SIZE;
    int r = itable_read_block(v, off / VOL_BLOCK_SIZE, blk);
    if (r < 0)
        return r;
    vol_rec rec;
    cista_error *e = NULL;
    r = vol__rec_get(&rec, blk + off % VOL_BLOCK_SIZE, VOL_REC_SIZE, v->gen, &e);
    if (r < 0) {
        _cleanup_free_ char *s = err_str(e);
        log_error("volume: inode %" PRIu64 ": %s", ino, s);
        err_free(e);
        return -EIO;
    }
    if (rec.flags == 0)
        return -ENOENT;
    vi = xzalloc(sizeof(*vi));
    vi->ino = ino;
    vi->rec = rec;
    blob_init(&vi->blob, ino, kind_of(rec.mode), rec.depth, &rec.root);
    ino_insert(v, vi);
    *out = vi;
    return 0;
}

static void fill_stat(const vinode *vi, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = vi->ino;
    st->st_mode = vi->rec.mode;
    st->st_nlink = vi->rec.nlink;
    st->st_uid = vi->rec.uid;
    st->st_gid = vi->rec.gid;
    st->st_rdev = vi->rec.rdev;
    st->st_size = (off_t)vi->rec.size;
    st->st_blksize = VOL_BLOCK_SIZE;
    st->st_blocks = (blkcnt_t)((vi->rec.size + 511) / 512);
    st->st_atim = vi->rec.atime;
    st->st_mtim = vi->rec.mtime;
    st->st_ctim = vi->rec.ctime;
}

static vinode *inode_new(vol_volume *v, uint32_t mode, uint32_t uid, uint32_t gid, uint32_t rdev)
{
    vinode *vi = xzalloc(sizeof(*vi));
    vi->ino = v->next_ino++;
    vi->rec.flags = VOL_REC_INUSE;
    vi->rec.mode = mode;
    vi->rec.uid = uid;
    vi->rec.gid = gid;
    vi->rec.rdev = rdev;
    vi->rec.nlink = S_ISDIR(mode) ? 2 : 1;
    now(&vi->rec.mtime);
    vi->rec.atime = vi->rec.ctime = vi->rec.mtime;
    blob_init(&vi->blob, vi->ino, kind_of(mode), 0, NULL);
    ino_insert(v, vi);
    touch_rec(v, vi);
    return vi;
}

static void doom_object(vol_volume *v, uint64_t oid)
{
    if (v->doomed_count == v->doomed_cap) {
        v->doomed_cap = v->doomed_cap ? v->doomed_cap * 2 : 64;
        v->doomed = xrealloc(v->doomed, v->doomed_cap * sizeof(*v->doomed));
    }
    v->doomed[v->doomed_count++] = oid;
}

/* Free the inode once it has no links and no open handles. */
static void maybe_free(vol_volume *v, vinode *vi)
{
    if (vi->rec.nlink > 0 || vi->nopen > 0 || vi->freed)
        return;
    vi->freed = true;
    dir_free(vi->dir);
    vi->dir = NULL;
    doom_object(v, vi->ino);
    if (S_ISREG(vi->rec.mode))
        v->doomed_bytes += vi->rec.size;
    touch_rec(v, vi);
}

/* ---------------------------------------------------------------------------
 * Directories
 */
static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static void dir_free(vdir *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++)
        free(d->ents[i]);
    free(d->ents);
    free(d->buckets);
    free(d->ser);
    free(d);
}

static void dir_rehash(vdir *d)
{
    size_t nb = 16;
    while (nb < d->count * 2)
        nb *= 2;
    free(d->buckets);
    d->buckets = xmalloc(nb * sizeof(*d->buckets));
    for (size_t i = 0; i < nb; i++)
        d->buckets[i] = -1;
    d->nbuckets = nb;
    for (size_t i = 0; i < d->count; i++) {
        vdent *e = d->ents[i];
        if (e->ino == 0)
            continue;
        size_t k = name_hash(e->name, e->len) & (nb - 1);
        e->next = d->buckets[k];
        d->buckets[k] = (int32_t)i;
    }
}

static vdent *dir_find(vdir *d, const char *name, size_t len, int32_t *idx)
{
    if (!d->nbuckets)
        return NULL;
    for (int32_t i = d->buckets[name_hash(name, len) & (d->nbuckets - 1)]; i >= 0;
         i = d->ents[i]->next) {
        vdent *e = d->ents[i];
        if (e->len == len && memcmp(e->name, name, len) == 0) {
            if (idx)
                *idx = i;
            return e;
        }
    }
    return NULL;
}

static void dir_add(vdir *d, const char *name, size_t len, uint64_t ino, uint8_t type)
{
    if (d->count == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->ents = xrealloc(d->ents, d->cap * sizeof(*d->ents));
    }
    vdent *e = xmalloc(sizeof(*e) + len + 1);
    e->ino = ino;
    e->type = type;
    e->len = (uint8_t)len;
    e->cookie = ++d->next_cookie;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    d->ents[d->count++] = e;
    d->live++;
    if (d->count * 2 > d->nbuckets) {
        dir_rehash(d);
    } else {
        size_t k = name_hash(name, len) & (d->nbuckets - 1);
        e->next = d->buckets[k];
        d->buckets[k] = (int32_t)(d->count - 1);
    }
}

static void dir_remove(vdir *d, const char *name, size_t len)
{
    int32_t idx;
    vdent *e = dir_find(d, name, len, &idx);
    if (!e)
        return;
    int32_t *pp = &d->buckets[name_hash(name, len) & (d->nbuckets - 1)];
    while (*pp != idx)
        pp = &d->ents[*pp]->next;
    *pp = e->next;
    e->ino = 0;
    d->live--;
}

static int dir_load_cb(void *arg, uint64_t ino, uint8_t type, const char *name, size_t len)
{
    vdir *d = arg;
    if (dir_find(d, name, len, NULL))
        return -EEXIST;
    dir_add(d, name, len, ino, type);
    return 0;
}

static int dir_get(vol_volume *v, uint64_t ino, vinode **out)
{
    vinode *vi;
    int r = inode_get(v, ino, &vi);
    if (r < 0)
        return r;
    if (!S_ISDIR(vi->rec.mode))
        return -ENOTDIR;
    if (!vi->dir) {
        size_t size = (size_t)vi->rec.size;
        uint8_t *data = xmalloc(size ? size : 1);
        r = blob_read(v, &vi->blob, vi, 0, data, size);
        if (r < 0) {
            free(data);
            return r;
        }
        vdir *d = xzalloc(sizeof(*d));
        cista_error *e = NULL;
        r = vol__dir_parse(data, size, dir_load_cb, d, &e);
        if (r < 0) {
            _cleanup_free_ char *s = err_str(e);
            log_error("volume: directory inode %" PRIu64 ": %s", ino, s);
            err_free(e);
            dir_free(d);
            free(data);
            return -EIO;
        }
        if (!d->nbuckets)
            dir_rehash(d);
        d->ser = data;
        d->ser_size = size;
        vi->dir = d;
    }
    *out = vi;
    return 0;
}

/* Serialise a dirty directory into its blob, rewriting only changed blocks. */
static int dir_store(vol_volume *v, vinode *vi)
{
    vdir *d = vi->dir;
    size_t size = 0;
    for (size_t i = 0; i < d->count; i++)
        if (d->ents[i]->ino)
            size += 10 + d->ents[i]->len;
    if (size > VOL_DIR_MAX_SIZE)
        return -ENOSPC;
    uint8_t *buf = xmalloc(size ? size : 1);
    size_t off = 0, w = 0;
    for (size_t i = 0; i < d->count; i++) {
        vdent *e = d->ents[i];
        if (!e->ino) {
            free(e);
            continue;
        }
        vol__put64(buf + off, e->ino);
        buf[off + 8] = e->type;
        buf[off + 9] = e->len;
        memcpy(buf + off + 10, e->name, e->len);
        off += 10 + e->len;
        d->ents[w++] = e;
    }
    d->count = w;
    dir_rehash(d);
    for (size_t blk = 0; blk * VOL_BLOCK_SIZE < size; blk++) {
        size_t o = blk * VOL_BLOCK_SIZE;
        size_t n = size - o < VOL_BLOCK_SIZE ? size - o : VOL_BLOCK_SIZE;
        size_t on = d->ser_size > o
                        ? (d->ser_size - o < VOL_BLOCK_SIZE ? d->ser_size - o : VOL_BLOCK_SIZE)
                        : 0;
        if (n == on && memcmp(buf + o, d->ser + o, n) == 0)
            continue;
        uint8_t tmp[VOL_BLOCK_SIZE] = {0};
        memcpy(tmp, buf + o, n);
        int r = write_blocks(v, &vi->blob, vi, blk, 1, tmp);
        if (r < 0) {
            free(buf);
            return r;
        }
    }
    if (size < d->ser_size) {
        int r = blob_cut(v, &vi->blob, (size + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE);
        if (r < 0) {
            free(buf);
            return r;
        }
    }
    free(d->ser);
    d->ser = buf;
    d->ser_size = size;
    vi->rec.size = size;
    vi->dir_dirty = false;
    vi->rec_dirty = true;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Superblock, commit
 */
static int write_superblock(vol_volume *v, cista_error **err)
{
    vol_sb sb;
    memset(&sb, 0, sizeof(sb));
    memcpy(sb.volume_id, v->volume_id, VOL_ID_SIZE);
    memcpy(sb.key_check, v->keys.check, 16);
    sb.generation = v->wgen;
    sb.itable_root = v->itable.root;
    sb.itable_depth = v->itable.depth;
    sb.itable_size = v->itable_size;
    sb.next_ino = v->next_ino;
    sb.mount_epoch = v->epoch;
    sb.created = v->created;
    uint8_t page[VOL_SB_SLOT_SIZE], nonce[VOL_NONCE_SIZE];
    next_nonce(v, nonce);
    int r = vol__sb_seal(page, &sb, &v->g_super, nonce, err);
    if (r < 0)
        return r;
    if (!v->sb_h) {
        r = v->store->ops->open(v->store->ctx, VOL_SB_OBJECT, true, &v->sb_h);
        if (r < 0)
            return err_set_sys(err, r, "open the superblock object");
        r = v->store->ops->sync_dir(v->store->ctx);
        if (r < 0)
            return err_set_sys(err, r, "sync the backing directory");
    }
    r = v->store->ops->write(v->store->ctx, v->sb_h, (v->wgen % 2) * VOL_SB_SLOT_SIZE, page,
                             sizeof(page));
    if (r == 0)
        r = v->store->ops->sync(v->store->ctx, v->sb_h);
    if (r < 0)
        return err_set_sys(err, r, "write superblock slot %u (generation %" PRIu64 ")",
                           (unsigned)(v->wgen % 2), v->wgen);
    vol__sb_root(v->root, page);
    return 0;
}

static int cmp_ino(const void *a, const void *b)
{
    const vinode *x = *(vinode *const *)a, *y = *(vinode *const *)b;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static int commit_locked(vol_volume *v, cista_error **err)
{
    if (v->broken)
        return err_set(err, -EIO, "volume is in an error state after a failed commit; remount it");
    if (!v->ro && !v->changed && v->anchor_behind) {
        /* Nothing new to write, but the last commit still has to reach the anchor. */
        int ra = v->anchor->ops->advance(v->anchor->ctx, v->gen, v->root, err);
        if (ra < 0)
            return err_wrap(err,
                            "commit %" PRIu64 " is durable but the rollback anchor %s "
                            "was not advanced",
                            v->gen, v->anchor->ops->describe(v->anchor->ctx));
        v->anchor_behind = false;
        return 0;
    }
    if (v->ro || !v->changed)
        return 0;
    int r = 0;
    /* 1. directories, 2. file trees */
    for (size_t i = 0; i < v->dirty_count; i++) {
        vinode *vi = v->dirty[i];
        if (vi->freed)
            continue;
        if (vi->dir_dirty && (r = dir_store(v, vi)) < 0) {
            err_set_sys(err, r, "store directory inode %" PRIu64, vi->ino);
            goto fail;
        }
        if (vi->rec.size == 0 && vi->blob.depth > 0) {
            blob_drop_nodes(&vi->blob);
            vi->blob.depth = 0;
            memset(&vi->blob.root, 0, sizeof(vi->blob.root));
            vi->blob.dirty = true;
            vi->blob.reset = true;
        }
        if (vi->blob.dirty) {
            if ((r = blob_flush(v, &vi->blob, vi)) < 0) {
                err_set_sys(err, r, "write the tree of inode %" PRIu64, vi->ino);
                goto fail;
            }
            vi->rec.depth = vi->blob.depth;
            vi->rec.root = vi->blob.root;
            vi->rec_dirty = true;
        }
    }
    /* 3. inode records, grouped per inode-table block */
    if (v->dirty_count)
        qsort(v->dirty, v->dirty_count, sizeof(*v->dirty), cmp_ino);
    v->itc_valid = false;
    for (size_t i = 0; i < v->dirty_count;) {
        uint64_t blk = v->dirty[i]->ino * VOL_REC_SIZE / VOL_BLOCK_SIZE;
        uint8_t page[VOL_BLOCK_SIZE];
        if ((r = read_blocks(v, &v->itable, NULL, blk, 1, page)) < 0) {
            err_set_sys(err, r, "read inode table block %" PRIu64, blk);
            goto fail;
        }
        bool any = false;
        for (; i < v->dirty_count && v->dirty[i]->ino * VOL_REC_SIZE / VOL_BLOCK_SIZE == blk; i++) {
            vinode *vi = v->dirty[i];
            if (!vi->rec_dirty)
                continue;
            uint8_t *slot = page + vi->ino * VOL_REC_SIZE % VOL_BLOCK_SIZE;
            if (vi->freed)
                memset(slot, 0, VOL_REC_SIZE);
            else
                vol__rec_put(slot, &vi->rec);
            if ((vi->ino + 1) * VOL_REC_SIZE > v->itable_size)
                v->itable_size = (vi->ino + 1) * VOL_REC_SIZE;
            any = true;
        }
        if (any && (r = write_blocks(v, &v->itable, NULL, blk, 1, page)) < 0) {
            OPENSSL_cleanse(page, sizeof(page));
            err_set_sys(err, r, "write inode table block %" PRIu64, blk);
            goto fail;
        }
        OPENSSL_cleanse(page, sizeof(page));
    }
    if (v->itable.dirty && (r = blob_flush(v, &v->itable, NULL)) < 0) {
        err_set_sys(err, r, "write the inode table tree");
        goto fail;
    }
    /* 4. make everything durable, then flip the superblock */
    for (size_t i = 0; i < v->handles_count; i++) {
        vblob *b = &v->handles[i]->blob;
        if (b->h && b->wrote) {
            if ((r = v->store->ops->sync(v->store->ctx, b->h)) < 0) {
                err_set_sys(err, r, "sync object %" PRIu64, b->oid);
                goto fail;
            }
            b->wrote = false;
        }
    }
    if (v->itable.h && v->itable.wrote) {
        if ((r = v->store->ops->sync(v->store->ctx, v->itable.h)) < 0) {
            err_set_sys(err, r, "sync the inode table");
            goto fail;
        }
        v->itable.wrote = false;
    }
    if (v->dir_changed) {
        if ((r = v->store->ops->sync_dir(v->store->ctx)) < 0) {
            err_set_sys(err, r, "sync the backing directory");
            goto fail;
        }
        v->dir_changed = false;
    }
    if ((r = write_superblock(v, err)) < 0)
        goto fail;
    v->gen = v->wgen;
    v->wgen = v->gen + 1;
    /* 5. the new state is committed: remember it as "old", drop what is gone */
    blob_committed(&v->itable);
    for (size_t i = 0; i < v->dirty_count; i++) {
        vinode *vi = v->dirty[i];
        vi->listed = false;
        vi->rec_dirty = false;
        blob_committed(&vi->blob);
        if (vi->blob.reset && vi->blob.h && !vi->freed)
            (void)v->store->ops->truncate(v->store->ctx, vi->blob.h, 0);
        vi->blob.reset = false;
    }
    v->dirty_count = 0;
    size_t w = 0;
    for (size_t i = 0; i < v->handles_count; i++) {
        vinode *vi = v->handles[i];
        if (vi->nopen == 0 || vi->freed) {
            blob_close(v, &vi->blob);
            vi->has_handle = false;
        } else {
            v->handles[w++] = vi;
        }
    }
    v->handles_count = w;
    /* the objects of freed inodes go to the reap list: removing a large object
     * takes the host file system a while (measured for 1 GiB on ext4 with
     * discard: 0.3 s idle, up to 7 s under load, during which every writer
     * waited for the mutex), so vol_commit does it after dropping the mutex (or
     * vol_reap, after the caller has answered whoever waits for the commit).
     * Inode numbers are never reused, so nothing can recreate an object meanwhile. */
    for (size_t i = 0; i < v->doomed_count; i++) {
        vinode *vi = ino_find(v, v->doomed[i]);
        if (vi && vi->freed) {
            ino_unlink(v, vi);
            vinode_free(v, vi);
        }
        if (v->reap_count == v->reap_cap) {
            v->reap_cap = v->reap_cap ? v->reap_cap * 2 : 64;
            v->reap = xrealloc(v->reap, v->reap_cap * sizeof(*v->reap));
        }
        v->reap[v->reap_count++] = v->doomed[i];
    }
    v->doomed_count = 0;
    v->doomed_bytes = 0;
    v->changed = false;
    if (v->anchor) {
        r = v->anchor->ops->advance(v->anchor->ctx, v->gen, v->root, err);
        v->anchor_behind = r < 0;
        if (r < 0)
            return err_wrap(err,
                            "commit %" PRIu64 " is durable but the rollback anchor %s "
                            "was not advanced",
                            v->gen, v->anchor->ops->describe(v->anchor->ctx));
    }
    return 0;
fail:
    v->broken = true;
    return err_wrap(err, "commit of generation %" PRIu64, v->wgen);
}

/*
 * Remove the objects on the reap list. With @locked false the mutex is taken
 * only to move the list out, so other operations run during the removals.
 */
static void reap(vol_volume *v, bool locked)
{
    if (!locked)
        pthread_mutex_lock(&v->lock);
    uint64_t *list = v->reap;
    size_t n = v->reap_count;
    v->reap = NULL;
    v->reap_count = v->reap_cap = 0;
    if (!locked)
        pthread_mutex_unlock(&v->lock);
    for (size_t i = 0; i < n; i++) {
        char name[33];
        vol__object_name(name, v->keys.name, list[i]);
        int r = v->store->ops->remove(v->store->ctx, name);
        if (r < 0 && r != -ENOENT)
            log_warn("volume: could not remove unreferenced object %s: %s", name, strerror(-r));
    }
    free(list);
    if (n > 0) {
        /* the next commit makes the removals durable */
        if (!locked)
            pthread_mutex_lock(&v->lock);
        v->dir_changed = true;
        if (!locked)
            pthread_mutex_unlock(&v->lock);
    }
}

/*
 * Flush written objects to disk before the commit proper, without the mutex,
 * so that writers are not held up for the whole flush; the commit's own syncs
 * then find little left to write.
 */
static void presync(vol_volume *v)
{
    pthread_mutex_lock(&v->lock);
    size_t n = 0;
    vinode **list = xmalloc((v->handles_count + 1) * sizeof(*list));
    for (size_t i = 0; i < v->handles_count; i++) {
        vinode *vi = v->handles[i];
        if (vi->blob.h && vi->blob.wrote && !vi->freed) {
            vi->blob.users++;
            vi->nopen++;
            list[n++] = vi;
        }
    }
    pthread_mutex_unlock(&v->lock);
    for (size_t i = 0; i < n; i++)
        (void)v->store->ops->sync(v->store->ctx, list[i]->blob.h);
    pthread_mutex_lock(&v->lock);
    for (size_t i = 0; i < n; i++) {
        list[i]->nopen--;
        blob_unuse(v, &list[i]->blob);
        maybe_free(v, list[i]);
    }
    pthread_mutex_unlock(&v->lock);
    free(list);
}

int vol_commit_ex(vol_volume *v, unsigned flags, cista_error **err)
{
    if (!v->ro)
        presync(v);
    pthread_mutex_lock(&v->lock);
    v->committing = true;
    while (v->infl_writes > 0)
        pthread_cond_wait(&v->infl_cv, &v->lock);
    int r = commit_locked(v, err);
    v->committing = false;
    pthread_cond_broadcast(&v->infl_cv);
    pthread_mutex_unlock(&v->lock);
    if (!(flags & VOL_COMMIT_DEFER_REAP))
        reap(v, false);
    return r;
}

int vol_commit(vol_volume *v, cista_error **err)
{
    return vol_commit_ex(v, 0, err);
}

void vol_reap(vol_volume *v)
{
    reap(v, false);
}

uint64_t vol_reclaimable(vol_volume *v)
{
    pthread_mutex_lock(&v->lock);
    uint64_t n = v->doomed_bytes;
    pthread_mutex_unlock(&v->lock);
    return n;
}

bool vol_is_dirty(vol_volume *v)
{
    pthread_mutex_lock(&v->lock);
    bool d = v->changed || v->anchor_behind;
    pthread_mutex_unlock(&v->lock);
    return d;
}

/* ---------------------------------------------------------------------------
 * Create, open, close
 */
static vol_volume *volume_alloc(vol_store *store, const uint8_t key[VOL_KEY_SIZE])
{
    pthread_once(&g_base_once, init_bases);
    vol_volume *v = xzalloc(sizeof(*v));
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->infl_cv, NULL);
    v->serial = __atomic_add_fetch(&g_serial, 1, __ATOMIC_RELAXED);
    v->store = store;
    memcpy(v->master, key, VOL_KEY_SIZE);
    return v;
}

static int volume_keys(vol_volume *v, cista_error **err)
{
    int r = vol__derive_keys(&v->keys, v->master, v->volume_id, err);
    if (r < 0)
        return r;
    if ((r = vol__gcm_init(&v->g_data, v->keys.data, err)) < 0 ||
        (r = vol__gcm_init(&v->g_meta, v->keys.meta, err)) < 0 ||
        (r = vol__gcm_init(&v->g_super, v->keys.super, err)) < 0)
        return r;
    return 0;
}

static void volume_free(vol_volume *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->itab_cap; i++) {
        vinode *x = v->itab ? v->itab[i] : NULL;
        while (x) {
            vinode *nx = x->hnext;
            vinode_free(v, x);
            x = nx;
        }
    }
    free(v->itab);
    blob_close(v, &v->itable);
    blob_drop_nodes(&v->itable);
    if (v->sb_h)
        v->store->ops->close(v->store->ctx, v->sb_h);
    free(v->dirty);
    free(v->handles);
    free(v->doomed);
    free(v->reap);
    vol__gcm_free(&v->g_data);
    vol__gcm_free(&v->g_meta);
    vol__gcm_free(&v->g_super);
    if (!v->borrowed_store)
        vol_store_free(v->store);
    OPENSSL_cleanse(v->master, sizeof(v->master));
    OPENSSL_cleanse(&v->keys, sizeof(v->keys));
    OPENSSL_cleanse(v->itc, sizeof(v->itc));
    free(v->infl);
    pthread_cond_destroy(&v->infl_cv);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

/* Fresh empty state (root directory only) on top of generation @gen. */
static int init_empty(vol_volume *v, uint64_t gen, cista_error **err)
{
    v->gen = gen;
    v->wgen = gen + 1;
    v->next_ino = VOL_ROOT_INO;
    v->itable_size = 0;
    blob_init(&v->itable, VOL_ITABLE_OID, VOL_KIND_META, 0, NULL);
    if (crypto_random(&v->ctr, sizeof(v->ctr), err) < 0)
        return -EIO;
    struct timespec ts;
    now(&ts);
    v->created = ts.tv_sec;
    vinode *root = inode_new(v, S_IFDIR | 0755, (uint32_t)getuid(), (uint32_t)getgid(), 0);
    root->rec.parent = VOL_ROOT_INO;
    root->dir = xzalloc(sizeof(vdir));
    dir_rehash(root->dir);
    root->dir_dirty = true;
    return 0;
}

int vol_create(vol_store *store, const uint8_t master_key[VOL_KEY_SIZE], vol_anchor *anchor,
               vol_info *out_info, cista_error **err)
{
    void *h = NULL;
    int r = store->ops->open(store->ctx, VOL_SB_OBJECT, false, &h);
    if (r == 0) {
        store->ops->close(store->ctx, h);
        return err_set(err, -EEXIST,
                       "the backing store already holds a volume (superblock "
                       "exists); refusing to overwrite it");
    }
    vol_volume *v = volume_alloc(store, master_key);
    if ((r = crypto_random(v->volume_id, VOL_ID_SIZE, err)) < 0 || (r = volume_keys(v, err)) < 0 ||
        (r = init_empty(v, 0, err)) < 0)
        goto out;
    v->epoch = 1;
    v->anchor = anchor;
    r = commit_locked(v, err);
    if (r == 0 && out_info)
        vol_get_info(v, out_info);
out:
    v->borrowed_store = true;
    volume_free(v);
    return r;
}

/* Read both slots; fills @sb/@page with the newest authentic one. */
static int pick_superblock(vol_volume *v, vol_sb *sb, uint8_t *page, cista_error **err)
{
    int r = v->store->ops->open(v->store->ctx, VOL_SB_OBJECT, false, &v->sb_h);
    if (r < 0) {
        v->sb_h = NULL;
        return err_set_sys(err, r, "no superblock in the backing store (not a cista volume)");
    }
    uint8_t slots[2][VOL_SB_SLOT_SIZE];
    memset(slots, 0, sizeof(slots));
    ssize_t n = v->store->ops->read(v->store->ctx, v->sb_h, 0, slots, sizeof(slots));
    if (n < 0)
        return err_set_sys(err, (int)n, "read the superblock");
    vol_sb hdr[2];
    bool hdr_ok[2];
    for (int i = 0; i < 2; i++) {
        cista_error *e = NULL;
        hdr_ok[i] = vol__sb_header(&hdr[i], slots[i], VOL_SB_SLOT_SIZE, &e) == 0;
        if (!hdr_ok[i] && e && e->code == -EPROTONOSUPPORT) {
            int c = err_set(err, e->code, "%s", e->msg);
            err_free(e);
            return c;
        }
        err_free(e);
    }
    int first = hdr_ok[0] ? 0 : hdr_ok[1] ? 1 : -1;
    if (first < 0)
        return err_set(err, -EUCLEAN, "neither superblock slot is a cista volume header");
    memcpy(v->volume_id, hdr[first].volume_id, VOL_ID_SIZE);
    if ((r = volume_keys(v, err)) < 0)
        return r;
    if (!crypto_memeq(v->keys.check, hdr[first].key_check, 16))
        return err_set(err, -EKEYREJECTED,
                       "wrong key: the key check value of volume %02x%02x%02x%02x... does not "
                       "match this key",
                       v->volume_id[0], v->volume_id[1], v->volume_id[2], v->volume_id[3]);
    int best = -1;
    vol_sb opened[2];
    for (int i = 0; i < 2; i++) {
        if (!hdr_ok[i])
            continue;
        cista_error *e = NULL;
        if (!crypto_memeq(hdr[i].volume_id, v->volume_id, VOL_ID_SIZE) ||
            vol__sb_open(&opened[i], slots[i], VOL_SB_SLOT_SIZE, &v->g_super, &e) < 0 ||
            opened[i].generation % 2 != (uint64_t)i) {
            _cleanup_free_ char *s = e ? err_str(e) : xstrdup("slot does not match");
            log_warn("volume: superblock slot %d ignored: %s", i, s);
            err_free(e);
            continue;
        }
        if (best < 0 || opened[i].generation > opened[best].generation)
            best = i;
    }
    if (best < 0)
        return err_set(err, -EBADMSG,
                       "no superblock slot authenticates with this key: the "
                       "volume was tampered with or is corrupt");
    int other = 1 - best;
    if (hdr_ok[other] && hdr[other].generation > opened[best].generation)
        log_warn("volume: newest superblock (generation %" PRIu64
                 ") does not authenticate; using generation %" PRIu64
                 " (a torn commit or tampering; the anchor check decides)",
                 hdr[other].generation, opened[best].generation);
    *sb = opened[best];
    memcpy(page, slots[best], VOL_SB_SLOT_SIZE);
    return 0;
}

static int wipe_cb(void *arg, const char *name)
{
    vol_volume *v = arg;
    if (strcmp(name, VOL_SB_OBJECT) == 0 || strcmp(name, "lock") == 0)
        return 0;
    int r = v->store->ops->remove(v->store->ctx, name);
    return r == -ENOENT ? 0 : r;
}

static int check_anchor(vol_volume *v, const vol_sb *sb, bool *reset, cista_error **err)
{
    *reset = false;
    if (!v->anchor) {
        if (v->mode == VOL_ROLLBACK_STRICT)
            return err_set(err, -EINVAL, "rollback mode strict needs an anchor");
        if (v->mode == VOL_ROLLBACK_RESET)
            return err_set(err, -EINVAL, "rollback mode reset needs an anchor");
        log_warn("volume: no rollback anchor: an older copy of this volume would be accepted");
        return 0;
    }
    uint64_t agen = 0;
    uint8_t aroot[VOL_ROOT_SIZE];
    int r = v->anchor->ops->read(v->anchor->ctx, &agen, aroot, err);
    const char *where = v->anchor->ops->describe(v->anchor->ctx);
    if (r == -ENOENT) {
        if (v->mode == VOL_ROLLBACK_STRICT)
            return err_set(err, -ENOENT,
                           "rollback anchor %s does not exist: it is created with the volume "
                           "(`cista volume create --anchor`); to trust this copy once, mount "
                           "with --rollback reset",
                           where);
        log_warn("volume: rollback anchor %s does not exist; trusting generation %" PRIu64
                 " and anchoring it",
                 where, sb->generation);
        return 0;
    }
    if (r < 0)
        return r;
    bool older = sb->generation < agen;
    bool forked = sb->generation == agen && !crypto_memeq(v->root, aroot, VOL_ROOT_SIZE);
    if (!older && !forked)
        return 0;
    const char *what = older ? "older than" : "a different state at the same generation as";
    switch (v->mode) {
    case VOL_ROLLBACK_STRICT:
        return err_set(err, -EACCES,
                       "rollback detected: the volume is at generation %" PRIu64
                       ", %s the anchored generation %" PRIu64
                       " (%s); refusing to mount. Restore the newest copy of the backing "
                       "directory, or mount with --rollback reset to start over empty",
                       sb->generation, what, agen, where);
    case VOL_ROLLBACK_RESET:
        log_warn("volume: rollback detected (generation %" PRIu64 ", anchor %" PRIu64
                 "): resetting the volume to empty as --rollback reset asks",
                 sb->generation, agen);
        *reset = true;
        v->gen = agen > sb->generation ? agen : sb->generation;
        return 0;
    case VOL_ROLLBACK_OFF:
        log_warn("volume: rollback detected (generation %" PRIu64 ", anchor %" PRIu64
                 ") but rollback checks are off; mounting the old state",
                 sb->generation, agen);
        return 0;
    }
    return 0;
}

int vol_open(vol_volume **out, vol_store *store, const uint8_t master_key[VOL_KEY_SIZE],
             const vol_open_opts *opts, cista_error **err)
{
    *out = NULL;
    vol_volume *v = volume_alloc(store, master_key);
    v->anchor = opts ? opts->anchor : NULL;
    v->mode = opts ? opts->rollback : VOL_ROLLBACK_OFF;
    v->ro = opts && opts->read_only;
    vol_sb sb;
    memset(&sb, 0, sizeof(sb));
    uint8_t page[VOL_SB_SLOT_SIZE];
    int r = pick_superblock(v, &sb, page, err);
    if (r < 0)
        goto fail;
    vol__sb_root(v->root, page);
    bool reset;
    if ((r = check_anchor(v, &sb, &reset, err)) < 0)
        goto fail;
    if (reset) {
        if (v->ro) {
            r = err_set(err, -EROFS, "rollback reset needs a writable mount");
            goto fail;
        }
        if ((r = v->store->ops->list(v->store->ctx, wipe_cb, v)) < 0) {
            r = err_set_sys(err, r, "clear the rolled-back volume");
            goto fail;
        }
        if ((r = init_empty(v, v->gen, err)) < 0)
            goto fail;
        v->epoch = sb.mount_epoch + 1;
        v->dir_changed = true;
    } else {
        v->gen = sb.generation;
        v->wgen = v->gen + 1;
        v->next_ino = sb.next_ino;
        v->itable_size = sb.itable_size;
        v->created = sb.created;
        blob_init(&v->itable, VOL_ITABLE_OID, VOL_KIND_META, sb.itable_depth, &sb.itable_root);
        if ((r = crypto_random(&v->ctr, sizeof(v->ctr), err)) < 0)
            goto fail;
        v->epoch = sb.mount_epoch + 1;
        vinode *root;
        if ((r = dir_get(v, VOL_ROOT_INO, &root)) < 0) {
            r = err_set(err, -EIO,
                        "the root directory does not load (see the log); run "
                        "`cista volume fsck`");
            goto fail;
        }
    }
    if (!v->ro) {
        /* a new nonce epoch is durable before any block is written under it */
        v->changed = true;
        if ((r = commit_locked(v, err)) < 0)
            goto fail;
    }
    *out = v;
    return 0;
fail:
    volume_free(v);
    return r;
}

int vol_close(vol_volume *v, cista_error **err)
{
    if (!v)
        return 0;
    int r = 0;
    if (!v->ro && !v->broken)
        r = vol_commit(v, err);
    volume_free(v);
    return r;
}

void vol_abandon(vol_volume *v)
{
    volume_free(v);
}

void vol_get_info(vol_volume *v, vol_info *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->volume_id, v->volume_id, VOL_ID_SIZE);
    out->version = VOL_VERSION;
    out->generation = v->gen;
    memcpy(out->root, v->root, VOL_ROOT_SIZE);
    out->next_ino = v->next_ino;
    out->mount_epoch = v->epoch;
    out->created = v->created;
    out->key_ok = true;
}

int vol_read_info(vol_info *out, vol_store *store, const uint8_t *master_key_or_null,
                  cista_error **err)
{
    void *h = NULL;
    int r = store->ops->open(store->ctx, VOL_SB_OBJECT, false, &h);
    if (r < 0)
        return err_set_sys(err, r, "no superblock in the backing store (not a cista volume)");
    uint8_t slots[2][VOL_SB_SLOT_SIZE];
    memset(slots, 0, sizeof(slots));
    ssize_t n = store->ops->read(store->ctx, h, 0, slots, sizeof(slots));
    store->ops->close(store->ctx, h);
    if (n < 0)
        return err_set_sys(err, (int)n, "read the superblock");
    int best = -1;
    vol_info info[2];
    cista_error *first_err = NULL;
    for (int i = 0; i < 2; i++) {
        cista_error *e = NULL;
        if (vol_parse_superblock(&info[i], slots[i], VOL_SB_SLOT_SIZE, master_key_or_null, &e) <
            0) {
            if (!first_err)
                first_err = e;
            else
                err_free(e);
            continue;
        }
        if (best < 0 || info[i].generation > info[best].generation)
            best = i;
    }
    if (best < 0) {
        r = err_set(err, first_err ? first_err->code : -EUCLEAN, "%s",
                    first_err ? first_err->msg : "no valid superblock");
        err_free(first_err);
        return r;
    }
    err_free(first_err);
    *out = info[best];
    return 0;
}

/* ---------------------------------------------------------------------------
 * Unlocked data I/O
 *
 * Large aligned reads and writes do their AES-GCM and backing I/O without the
 * volume mutex, so several FUSE threads use several cores. Under the mutex
 * they register the block range (readers exclude writers, writers exclude
 * everyone on overlapping blocks of the same inode), copy or reserve the
 * block references, and pin the backing handle; a commit waits until no
 * write is in flight and holds new ones back, so slots and generations
 * chosen before the unlock stay valid.
 */
static pthread_key_t g_tl_key;
static pthread_once_t g_tl_once = PTHREAD_ONCE_INIT;

/*
 * Each worker thread owns one 2 MiB region, aligned to 2 MiB and marked for
 * a transparent huge page: the first half is the ciphertext buffer of its
 * writes, the second the buffer its reads land in. Both are transferred
 * with direct I/O, which pins the buffer's pages for every request (8-11 % of
 * the daemon's CPU on sequential I/O with small pages): one huge page is
 * pinned as one folio instead of 256 pages per megabyte.
 */
#define TL_REGION (2u << 20)

typedef struct tl_state {
    uint64_t serial;
    vol_gcm data, meta;
    uint8_t *buf; /* TL_REGION bytes: WRITE_BATCH blocks, then the read buffer */
} tl_state;

static void tl_free(void *p)
{
    tl_state *t = p;
    if (!t)
        return;
    vol__gcm_free(&t->data);
    vol__gcm_free(&t->meta);
    if (t->buf)
        OPENSSL_cleanse(t->buf, TL_REGION); /* the read half held plaintext */
    free(t->buf);
    free(t);
}

static void tl_init(void)
{
    (void)pthread_key_create(&g_tl_key, tl_free);
}

static tl_state *tl_state_get(void)
{
    pthread_once(&g_tl_once, tl_init);
    tl_state *t = pthread_getspecific(g_tl_key);
    if (!t) {
        t = xzalloc(sizeof(*t));
        _Static_assert(2 * WRITE_BATCH * VOL_BLOCK_SIZE <= TL_REGION, "thread region");
        t->buf = aligned_alloc(TL_REGION, TL_REGION);
        if (!t->buf)
            abort();
        (void)madvise(t->buf, TL_REGION, MADV_HUGEPAGE); /* advisory: small pages work */
        (void)pthread_setspecific(g_tl_key, t);
    }
    return t;
}

/* This thread's WRITE_BATCH-block ciphertext buffer (freed at thread exit). */
static uint8_t *tl_buffer(void)
{
    return tl_state_get()->buf;
}

uint8_t *vol__thread_read_buffer(void)
{
    tl_state *t = tl_state_get();
    return t->buf + WRITE_BATCH * VOL_BLOCK_SIZE;
}

/* This thread's cipher contexts for @v (keys set up once per thread). */
static tl_state *tl_get(vol_volume *v)
{
    tl_state *t = tl_state_get();
    if (t->serial != v->serial) {
        vol__gcm_free(&t->data);
        vol__gcm_free(&t->meta);
        t->serial = 0;
        if (vol__gcm_init(&t->data, v->keys.data, NULL) < 0 ||
            vol__gcm_init(&t->meta, v->keys.meta, NULL) < 0)
            return NULL;
        t->serial = v->serial;
    }
    return t;
}

static bool infl_conflict(vol_volume *v, uint64_t ino, uint64_t first, uint64_t last, bool write)
{
    for (size_t i = 0; i < v->infl_count; i++) {
        vinflight *f = &v->infl[i];
        if (f->ino == ino && f->first <= last && first <= f->last && (write || f->write))
            return true;
    }
    return false;
}

/* Wait (mutex held) until blocks [first, last] of @ino are free, then claim them. */
static void infl_enter(vol_volume *v, uint64_t ino, uint64_t first, uint64_t last, bool write)
{
    while ((write && v->committing) || infl_conflict(v, ino, first, last, write))
        pthread_cond_wait(&v->infl_cv, &v->lock);
    if (v->infl_count == v->infl_cap) {
        v->infl_cap = v->infl_cap ? v->infl_cap * 2 : 16;
        v->infl = xrealloc(v->infl, v->infl_cap * sizeof(*v->infl));
    }
    v->infl[v->infl_count++] = (vinflight){ino, first, last, write};
    if (write)
        v->infl_writes++;
}

static void infl_leave(vol_volume *v, uint64_t ino, uint64_t first, uint64_t last, bool write)
{
    for (size_t i = 0; i < v->infl_count; i++) {
        vinflight *f = &v->infl[i];
        if (f->ino == ino && f->first == first && f->last == last && f->write == write) {
            v->infl[i] = v->infl[--v->infl_count];
            break;
        }
    }
    if (write)
        v->infl_writes--;
    pthread_cond_broadcast(&v->infl_cv);
}

/* Wait (mutex held) until nothing is in flight on @ino (truncation). */
static void infl_wait_inode(vol_volume *v, uint64_t ino)
{
    while (infl_conflict(v, ino, 0, UINT64_MAX, true))
        pthread_cond_wait(&v->infl_cv, &v->lock);
}

static void blob_unuse(vol_volume *v, vblob *b)
{
    if (--b->users == 0 && b->close_pending)
        blob_close(v, b);
}

/*
 * Read and authenticate whole blocks [first, first + n) into @out with the
 * mutex released during I/O and decryption. Called with the mutex held;
 * returns with it held. Falls back to the locked path on any failure, so a
 * reported error is never a race.
 */
static int read_blocks_unlocked(vol_volume *v, vinode *vi, uint64_t first, size_t n, uint8_t *out)
{
    vblob *b = &vi->blob;
    infl_enter(v, vi->ino, first, first + n - 1, false);
    vol_ref *refs = xmalloc(n * sizeof(*refs));
    bool any = false;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const vol_ref *e;
        r = read_entry(v, b, first + i, &e);
        if (r == 0 && e && vol__ref_present(e)) {
            refs[i] = *e;
            any = true;
        } else {
            memset(&refs[i], 0, sizeof(refs[i]));
        }
    }
    if (r == 0 && any && blob_handle(v, b, vi, false) < 0)
        r = -EIO;
    if (r < 0 || !any) {
        if (r == 0)
            memset(out, 0, n * VOL_BLOCK_SIZE);
        infl_leave(v, vi->ino, first, first + n - 1, false);
        free(refs);
        return r < 0 ? read_blocks(v, b, vi, first, n, out) : 0;
    }
    b->users++;
    void *h = b->h;
    uint32_t kind = b->kind;
    pthread_mutex_unlock(&v->lock);

    bool ok = true;
    tl_state *t = tl_get(v);
    if (!t)
        ok = false;
    for (size_t i = 0; i < n && ok;) {
        if (!vol__ref_present(&refs[i])) {
            memset(out + i * VOL_BLOCK_SIZE, 0, VOL_BLOCK_SIZE);
            i++;
            continue;
        }
        unsigned slot = refs[i].flags & VOL_REF_SLOT;
        size_t run = 1;
        while (i + run < n && vol__ref_present(&refs[i + run]) &&
               (refs[i + run].flags & VOL_REF_SLOT) == slot)
            run++;
        uint8_t *dst = out + i * VOL_BLOCK_SIZE;
        ssize_t got = v->store->ops->read(v->store->ctx, h, phys(0, first + i, slot), dst,
                                          run * VOL_BLOCK_SIZE);
        if (got != (ssize_t)(run * VOL_BLOCK_SIZE)) {
            ok = false;
            break;
        }
        for (size_t k = 0; k < run && ok; k++) {
            uint8_t aad[VOL_AAD_SIZE];
            make_aad(aad, v, b->oid, 0, kind, first + i + k, refs[i + k].gen);
            uint8_t *blk = dst + k * VOL_BLOCK_SIZE;
            ok = vol__gcm_open(kind == VOL_KIND_DATA ? &t->data : &t->meta, refs[i + k].nonce, aad,
                               sizeof(aad), blk, VOL_BLOCK_SIZE, blk, refs[i + k].tag) == 0;
        }
        i += run;
    }

    pthread_mutex_lock(&v->lock);
    blob_unuse(v, b);
    infl_leave(v, vi->ino, first, first + n - 1, false);
    free(refs);
    if (!ok) {
        OPENSSL_cleanse(out, n * VOL_BLOCK_SIZE);
        return read_blocks(v, b, vi, first, n, out); /* reports what is wrong */
    }
    return 0;
}

typedef struct wslot {
    vol_ref *entry;
    vol_ref ref;
} wslot;

/*
 * Encrypt and write whole blocks [first, first + n) from @in, out of place,
 * with the mutex released during encryption and I/O. Called and returns with
 * the mutex held.
 */
static int write_blocks_unlocked(vol_volume *v, vinode *vi, uint64_t first, size_t n,
                                 const uint8_t *in)
{
    vblob *b = &vi->blob;
    int r = blob_grow(b, first + n);
    if (r < 0)
        return r;
    r = blob_handle(v, b, vi, true);
    if (r < 0) {
        log_error("volume: cannot create object %" PRIu64 ": %s", b->oid, strerror(-r));
        return r;
    }
    wslot *ws = xmalloc(n * sizeof(*ws));
    for (size_t i = 0; i < n; i++) {
        unsigned slot;
        if ((r = write_entry(v, b, first + i, &ws[i].entry, &slot)) < 0) {
            free(ws);
            return r;
        }
        memset(&ws[i].ref, 0, sizeof(ws[i].ref));
        ws[i].ref.gen = v->wgen;
        ws[i].ref.flags = slot;
        next_nonce(v, ws[i].ref.nonce);
    }
    b->users++;
    void *h = b->h;
    uint32_t kind = b->kind;
    pthread_mutex_unlock(&v->lock);

    tl_state *t = tl_get(v);
    r = t ? 0 : -EIO;
    for (size_t i = 0; i < n && r == 0;) {
        unsigned slot = ws[i].ref.flags;
        size_t run = 0;
        while (i + run < n && run < WRITE_BATCH && ws[i + run].ref.flags == slot) {
            uint8_t aad[VOL_AAD_SIZE];
            vol_ref *nr = &ws[i + run].ref;
            make_aad(aad, v, b->oid, 0, kind, first + i + run, nr->gen);
            if (vol__gcm_seal(kind == VOL_KIND_DATA ? &t->data : &t->meta, nr->nonce, aad,
                              sizeof(aad), in + (i + run) * VOL_BLOCK_SIZE, VOL_BLOCK_SIZE,
                              t->buf + run * VOL_BLOCK_SIZE, nr->tag) < 0) {
                r = -EIO;
                break;
            }
            run++;
        }
        if (r == 0)
            r = v->store->ops->write(v->store->ctx, h, phys(0, first + i, slot), t->buf,
                                     run * VOL_BLOCK_SIZE);
        i += run;
    }

    pthread_mutex_lock(&v->lock);
    blob_unuse(v, b);
    if (r == 0) {
        for (size_t i = 0; i < n; i++)
            *ws[i].entry = ws[i].ref;
        b->wrote = true;
    } else {
        log_error("volume: write to object %" PRIu64 " failed: %s", b->oid, strerror(-r));
    }
    free(ws);
    return r;
}

/* Below this many whole blocks the locked path is cheaper. */
#define UNLOCKED_MIN_BLOCKS 8

/* ---------------------------------------------------------------------------
 * File operations
 */
/*
 * LOCKED(v) { ... } runs the block with the volume mutex held. The inner
 * loop makes `break` leave the block early while still unlocking.
 */
#define LOCKED(v)                                                                                  \
    for (int once_ = (pthread_mutex_lock(&(v)->lock), 1); once_;                                   \
         once_ = (pthread_mutex_unlock(&(v)->lock), 0))                                            \
        for (int inner_ = 1; inner_; inner_ = 0)

static int check_writable(vol_volume *v)
{
    if (v->ro)
        return -EROFS;
    if (v->broken)
        return -EIO;
    return 0;
}

int vol_getattr(vol_volume *v, uint64_t ino, struct stat *st)
{
    int r;
    LOCKED(v)
    {
        vinode *vi;
        r = inode_get(v, ino, &vi);
        if (r == 0)
            fill_stat(vi, st);
    }
    return r;
}

int vol_lookup(vol_volume *v, uint64_t parent, const char *name, struct stat *st)
{
    int r;
    size_t len = strlen(name);
    LOCKED(v)
    {
        vinode *d, *vi;
        r = dir_get(v, parent, &d);
        if (r < 0)
            break;
        if (len == 1 && name[0] == '.') {
            fill_stat(d, st);
            break;
        }
        if (len == 2 && name[0] == '.' && name[1] == '.') {
            r = inode_get(v, d->rec.parent, &vi);
            if (r == 0)
                fill_stat(vi, st);
            break;
        }
        if (len > VOL_NAME_MAX) {
            r = -ENAMETOOLONG;
            break;
        }
        vdent *e = dir_find(d->dir, name, len, NULL);
        if (!e) {
            r = -ENOENT;
            break;
        }
        r = inode_get(v, e->ino, &vi);
        if (r == -ENOENT) {
            log_error("volume: directory %" PRIu64 " names missing inode %" PRIu64, parent, e->ino);
            r = -EIO;
        }
        if (r == 0)
            fill_stat(vi, st);
    }
    return r;
}

static void touch_dir(vol_volume *v, vinode *d)
{
    now(&d->rec.mtime);
    d->rec.ctime = d->rec.mtime;
    d->dir_dirty = true;
    touch_rec(v, d);
}

/* Common part of creating a named inode in @parent. */
static int create_common(vol_volume *v, uint64_t parent, const char *name, uint32_t mode,
                         uint32_t rdev, uint32_t uid, uint32_t gid, vinode **out)
{
    int r = check_writable(v);
    if (r < 0)
        return r;
    size_t len = strlen(name);
    if (len > VOL_NAME_MAX)
        return -ENAMETOOLONG;
    if (!vol__name_ok(name, len))
        return -EINVAL;
    vinode *d;
    if ((r = dir_get(v, parent, &d)) < 0)
        return r;
    if (d->rec.nlink == 0)
        return -ENOENT;
    if (dir_find(d->dir, name, len, NULL))
        return -EEXIST;
    if (v->next_ino >= VOL_MAX_FILE_SIZE / VOL_REC_SIZE - 1)
        return -ENOSPC;
    vinode *vi = inode_new(v, mode, uid, gid, rdev);
    dir_add(d->dir, name, len, vi->ino, (uint8_t)((mode & S_IFMT) >> 12));
    touch_dir(v, d);
    if (S_ISDIR(mode)) {
        vi->rec.parent = parent;
        vi->dir = xzalloc(sizeof(vdir));
        dir_rehash(vi->dir);
        vi->dir_dirty = true;
        d->rec.nlink++;
    }
    *out = vi;
    return 0;
}

int vol_mknod(vol_volume *v, uint64_t parent, const char *name, mode_t mode, dev_t rdev, uid_t uid,
              gid_t gid, struct stat *st)
{
    int r;
    if ((mode & S_IFMT) == 0)
        mode |= S_IFREG;
    if (S_ISDIR(mode) || S_ISLNK(mode))
        return -EINVAL;
    LOCKED(v)
    {
        vinode *vi;
        r = create_common(v, parent, name, mode, (uint32_t)rdev, uid, gid, &vi);
        if (r == 0)
            fill_stat(vi, st);
    }
    return r;
}

int vol_mkdir(vol_volume *v, uint64_t parent, const char *name, mode_t mode, uid_t uid, gid_t gid,
              struct stat *st)
{
    int r;
    LOCKED(v)
    {
        vinode *vi;
        r = create_common(v, parent, name, S_IFDIR | (mode & 07777), 0, uid, gid, &vi);
        if (r == 0)
            fill_stat(vi, st);
    }
    return r;
}

int vol_symlink(vol_volume *v, uint64_t parent, const char *name, const char *target, uid_t uid,
                gid_t gid, struct stat *st)
{
    size_t tlen = strlen(target);
    if (tlen == 0)
        return -ENOENT;
    if (tlen > VOL_SYMLINK_MAX)
        return -ENAMETOOLONG;
    int r;
    LOCKED(v)
    {
        vinode *vi;
        r = create_common(v, parent, name, S_IFLNK | 0777, 0, uid, gid, &vi);
        if (r < 0)
            break;
        r = blob_write(v, &vi->blob, vi, 0, target, tlen);
        if (r < 0)
            break;
        vi->rec.size = tlen;
        fill_stat(vi, st);
    }
    return r;
}

int vol_readlink(vol_volume *v, uint64_t ino, char *buf, size_t size)
{
    int r;
    LOCKED(v)
    {
        vinode *vi;
        r = inode_get(v, ino, &vi);
        if (r < 0)
            break;
        if (!S_ISLNK(vi->rec.mode)) {
            r = -EINVAL;
            break;
        }
        size_t n = (size_t)vi->rec.size;
        if (n + 1 > size) {
            r = -ENAMETOOLONG;
            break;
        }
        r = blob_read(v, &vi->blob, vi, 0, buf, n);
        if (r < 0)
            break;
        buf[n] = '\0';
        if (memchr(buf, '\0', n)) {
            r = -EIO;
            break;
        }
        r = (int)n;
    }
    return r;
}

int vol_link(vol_volume *v, uint64_t ino, uint64_t newparent, const char *newname, struct stat *st)
{
    int r;
    size_t len = strlen(newname);
    LOCKED(v)
    {
        if ((r = check_writable(v)) < 0)
            break;
        if (len > VOL_NAME_MAX) {
            r = -ENAMETOOLONG;
            break;
        }
        if (!vol__name_ok(newname, len)) {
            r = -EINVAL;
            break;
        }
        vinode *vi, *d;
        if ((r = inode_get(v, ino, &vi)) < 0 || (r = dir_get(v, newparent, &d)) < 0)
            break;
        if (S_ISDIR(vi->rec.mode)) {
            r = -EPERM;
            break;
        }
        if (vi->rec.nlink >= 65000) {
            r = -EMLINK;
            break;
        }
        if (dir_find(d->dir, newname, len, NULL)) {
            r = -EEXIST;
            break;
        }
        dir_add(d->dir, newname, len, vi->ino, (uint8_t)((vi->rec.mode & S_IFMT) >> 12));
        touch_dir(v, d);
        vi->rec.nlink++;
        now(&vi->rec.ctime);
        touch_rec(v, vi);
        fill_stat(vi, st);
    }
    return r;
}

static int remove_common(vol_volume *v, uint64_t parent, const char *name, bool dir)
{
    int r = check_writable(v);
    if (r < 0)
        return r;
    size_t len = strlen(name);
    vinode *d, *vi;
    if ((r = dir_get(v, parent, &d)) < 0)
        return r;
    if (len > VOL_NAME_MAX)
        return -ENAMETOOLONG;
    vdent *e = dir_find(d->dir, name, len, NULL);
    if (!e)
        return -ENOENT;
    if ((r = inode_get(v, e->ino, &vi)) < 0)
        return r == -ENOENT ? -EIO : r;
    if (dir) {
        if (!S_ISDIR(vi->rec.mode))
            return -ENOTDIR;
        vinode *tmp;
        if ((r = dir_get(v, vi->ino, &tmp)) < 0)
            return r;
        if (vi->dir->live > 0)
            return -ENOTEMPTY;
        vi->rec.nlink = 0;
        d->rec.nlink--;
    } else {
        if (S_ISDIR(vi->rec.mode))
            return -EISDIR;
        vi->rec.nlink--;
    }
    dir_remove(d->dir, name, len);
    touch_dir(v, d);
    now(&vi->rec.ctime);
    touch_rec(v, vi);
    maybe_free(v, vi);
    return 0;
}

int vol_unlink(vol_volume *v, uint64_t parent, const char *name)
{
    int r;
    LOCKED(v)
    r = remove_common(v, parent, name, false);
    return r;
}

int vol_rmdir(vol_volume *v, uint64_t parent, const char *name)
{
    int r;
    LOCKED(v)
    r = remove_common(v, parent, name, true);
    return r;
}

/* True when @ino is @anc or below it. */
static int is_within(vol_volume *v, uint64_t ino, uint64_t anc, bool *out)
{
    *out = false;
    for (int guard = 0; guard < 100000; guard++) {
        if (ino == anc) {
            *out = true;
            return 0;
        }
        if (ino == VOL_ROOT_INO)
            return 0;
        vinode *vi;
        int r = inode_get(v, ino, &vi);
        if (r < 0)
            return r;
        ino = vi->rec.parent;
    }
    return -ELOOP;
}

static int rename_locked(vol_volume *v, uint64_t parent, const char *name, uint64_t newparent,
                         const char *newname, unsigned flags)
{
    int r = check_writable(v);
    if (r < 0)
        return r;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
        return -EINVAL;
    size_t len = strlen(name), nlen = strlen(newname);
    if (len > VOL_NAME_MAX || nlen > VOL_NAME_MAX)
        return -ENAMETOOLONG;
    if (!vol__name_ok(newname, nlen))
        return -EINVAL;
    vinode *sd, *dd, *src, *dst = NULL;
    if ((r = dir_get(v, parent, &sd)) < 0 || (r = dir_get(v, newparent, &dd)) < 0)
        return r;
    vdent *se = dir_find(sd->dir, name, len, NULL);
    if (!se)
        return -ENOENT;
    if ((r = inode_get(v, se->ino, &src)) < 0)
        return r == -ENOENT ? -EIO : r;
    vdent *de = dir_find(dd->dir, newname, nlen, NULL);
    if (de && (r = inode_get(v, de->ino, &dst)) < 0)
        return r == -ENOENT ? -EIO : r;
    if (de && (flags & RENAME_NOREPLACE))
        return -EEXIST;
    if (!de && (flags & RENAME_EXCHANGE))
        return -ENOENT;
    bool src_dir = S_ISDIR(src->rec.mode);
    if (src_dir && newparent != parent) {
        bool within;
        if ((r = is_within(v, newparent, src->ino, &within)) < 0)
            return r;
        if (within)
            return -EINVAL;
    }
    if (flags & RENAME_EXCHANGE) {
        bool dst_dir = S_ISDIR(dst->rec.mode);
        if (dst_dir && newparent != parent) {
            bool within;
            if ((r = is_within(v, parent, dst->ino, &within)) < 0)
                return r;
            if (within)
                return -EINVAL;
        }
        se->ino = dst->ino;
        se->type = (uint8_t)((dst->rec.mode & S_IFMT) >> 12);
        de->ino = src->ino;
        de->type = (uint8_t)((src->rec.mode & S_IFMT) >> 12);
        if (parent != newparent) {
            if (src_dir) {
                src->rec.parent = newparent;
                sd->rec.nlink--;
                dd->rec.nlink++;
            }
            if (dst_dir) {
                dst->rec.parent = parent;
                dd->rec.nlink--;
                sd->rec.nlink++;
            }
        }
        now(&src->rec.ctime);
        dst->rec.ctime = src->rec.ctime;
        touch_rec(v, src);
        touch_rec(v, dst);
        touch_dir(v, sd);
        touch_dir(v, dd);
        return 0;
    }
    if (dst == src)
        return 0;
    if (dst) {
        if (src_dir) {
            if (!S_ISDIR(dst->rec.mode))
                return -ENOTDIR;
            vinode *tmp;
            if ((r = dir_get(v, dst->ino, &tmp)) < 0)
                return r;
            if (dst->dir->live > 0)
                return -ENOTEMPTY;
            dst->rec.nlink = 0;
            dd->rec.nlink--;
        } else {
            if (S_ISDIR(dst->rec.mode))
                return -EISDIR;
            dst->rec.nlink--;
        }
        dir_remove(dd->dir, newname, nlen);
        now(&dst->rec.ctime);
        touch_rec(v, dst);
        maybe_free(v, dst);
    }
    uint8_t type = se->type;
    uint64_t sino = se->ino;
    dir_remove(sd->dir, name, len);
    dir_add(dd->dir, newname, nlen, sino, type);
    if (src_dir && parent != newparent) {
        src->rec.parent = newparent;
        sd->rec.nlink--;
        dd->rec.nlink++;
    }
    now(&src->rec.ctime);
    touch_rec(v, src);
    touch_dir(v, sd);
    touch_dir(v, dd);
    return 0;
}

int vol_rename(vol_volume *v, uint64_t parent, const char *name, uint64_t newparent,
               const char *newname, unsigned flags)
{
    int r;
    LOCKED(v)
    r = rename_locked(v, parent, name, newparent, newname, flags);
    return r;
}

static int setattr_locked(vol_volume *v, uint64_t ino, const struct stat *in, unsigned to_set,
                          struct stat *st)
{
    int r = check_writable(v);
    if (r < 0)
        return r;
    vinode *vi;
    if ((r = inode_get(v, ino, &vi)) < 0)
        return r;
    struct timespec ts;
    now(&ts);
    if (to_set & VOL_SET_SIZE) {
        if (S_ISDIR(vi->rec.mode))
            return -EISDIR;
        if (!S_ISREG(vi->rec.mode))
            return -EINVAL;
        if (in->st_size < 0)
            return -EINVAL;
        uint64_t ns = (uint64_t)in->st_size;
        if (ns > VOL_MAX_FILE_SIZE)
            return -EFBIG;
        infl_wait_inode(v, ino);
        if ((r = blob_truncate(v, &vi->blob, vi, vi->rec.size, ns)) < 0)
            return r;
        if (ns != vi->rec.size) {
            vi->rec.size = ns;
            vi->rec.mtime = ts;
        }
    }
    if (to_set & VOL_SET_MODE)
        vi->rec.mode = (vi->rec.mode & S_IFMT) | (in->st_mode & 07777);
    if (to_set & VOL_SET_UID)
        vi->rec.uid = in->st_uid;
    if (to_set & VOL_SET_GID)
        vi->rec.gid = in->st_gid;
    if (to_set & VOL_SET_ATIME_NOW)
        vi->rec.atime = ts;
    else if (to_set & VOL_SET_ATIME)
        vi->rec.atime = in->st_atim;
    if (to_set & VOL_SET_MTIME_NOW)
        vi->rec.mtime = ts;
    else if (to_set & VOL_SET_MTIME)
        vi->rec.mtime = in->st_mtim;
    if (to_set & VOL_SET_CTIME)
        vi->rec.ctime = in->st_ctim;
    else
        vi->rec.ctime = ts;
    if (vi->rec.atime.tv_nsec < 0 || vi->rec.atime.tv_nsec >= 1000000000)
        vi->rec.atime.tv_nsec = 0;
    if (vi->rec.mtime.tv_nsec < 0 || vi->rec.mtime.tv_nsec >= 1000000000)
        vi->rec.mtime.tv_nsec = 0;
    touch_rec(v, vi);
    fill_stat(vi, st);
    return 0;
}

int vol_setattr(vol_volume *v, uint64_t ino, const struct stat *in, unsigned to_set,
                struct stat *st)
{
    int r;
    LOCKED(v)
    r = setattr_locked(v, ino, in, to_set, st);
    return r;
}

int vol_open_file(vol_volume *v, uint64_t ino, bool truncate)
{
    int r;
    LOCKED(v)
    {
        vinode *vi;
        if ((r = inode_get(v, ino, &vi)) < 0)
            break;
        if (truncate && S_ISREG(vi->rec.mode) && vi->rec.size > 0) {
            if ((r = check_writable(v)) < 0)
                break;
            infl_wait_inode(v, ino);
            if ((r = blob_truncate(v, &vi->blob, vi, vi->rec.size, 0)) < 0)
                break;
            vi->rec.size = 0;
            now(&vi->rec.mtime);
            vi->rec.ctime = vi->rec.mtime;
            touch_rec(v, vi);
        }
        vi->nopen++;
    }
    return r;
}

void vol_release(vol_volume *v, uint64_t ino)
{
    LOCKED(v)
    {
        vinode *vi = ino_find(v, ino);
        if (vi && vi->nopen > 0) {
            vi->nopen--;
            if (vi->nopen == 0 && !vi->blob.wrote)
                blob_close(v, &vi->blob);
            maybe_free(v, vi);
        }
    }
}

/* Read [off, off + size) of a regular file, the aligned middle without the lock. */
static int file_read(vol_volume *v, vinode *vi, uint64_t off, uint8_t *buf, size_t size)
{
    uint64_t a = (off + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE * VOL_BLOCK_SIZE;
    uint64_t e = (off + size) / VOL_BLOCK_SIZE * VOL_BLOCK_SIZE;
    if (e <= a || (e - a) / VOL_BLOCK_SIZE < UNLOCKED_MIN_BLOCKS)
        return blob_read(v, &vi->blob, vi, off, buf, size);
    int r = 0;
    if (a > off)
        r = blob_read(v, &vi->blob, vi, off, buf, (size_t)(a - off));
    if (r == 0)
        r = read_blocks_unlocked(v, vi, a / VOL_BLOCK_SIZE, (size_t)((e - a) / VOL_BLOCK_SIZE),
                                 buf + (a - off));
    if (r == 0 && off + size > e)
        r = blob_read(v, &vi->blob, vi, e, buf + (e - off), (size_t)(off + size - e));
    return r;
}

ssize_t vol_read(vol_volume *v, uint64_t ino, uint64_t off, void *buf, size_t size)
{
    ssize_t r;
    LOCKED(v)
    {
        vinode *vi = ino_find(v, ino);
        if (!vi || vi->freed) {
            int rr = inode_get(v, ino, &vi);
            if (rr < 0) {
                r = rr;
                break;
            }
        }
        if (S_ISDIR(vi->rec.mode)) {
            r = -EISDIR;
            break;
        }
        if (!S_ISREG(vi->rec.mode)) {
            r = -EINVAL;
            break;
        }
        if (off >= vi->rec.size) {
            r = 0;
            break;
        }
        if (size > vi->rec.size - off)
            size = (size_t)(vi->rec.size - off);
        vi->nopen++; /* keeps the inode while the mutex is dropped */
        int rr = file_read(v, vi, off, buf, size);
        vi->nopen--;
        maybe_free(v, vi);
        r = rr < 0 ? rr : (ssize_t)size;
    }
    return r;
}

/* Write [off, off + size): partial head and tail blocks locked, the middle unlocked. */
static int file_write(vol_volume *v, vinode *vi, uint64_t off, const uint8_t *buf, size_t size)
{
    uint64_t a = (off + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE * VOL_BLOCK_SIZE;
    uint64_t e = (off + size) / VOL_BLOCK_SIZE * VOL_BLOCK_SIZE;
    uint64_t first = off / VOL_BLOCK_SIZE;
    uint64_t last = (off + size - 1) / VOL_BLOCK_SIZE;
    infl_enter(v, vi->ino, first, last, true);
    int r;
    if (e <= a || (e - a) / VOL_BLOCK_SIZE < UNLOCKED_MIN_BLOCKS) {
        r = blob_write(v, &vi->blob, vi, off, buf, size);
    } else {
        r = 0;
        if (a > off)
            r = blob_write(v, &vi->blob, vi, off, buf, (size_t)(a - off));
        if (r == 0 && off + size > e)
            r = blob_write(v, &vi->blob, vi, e, buf + (e - off), (size_t)(off + size - e));
        if (r == 0)
            r = write_blocks_unlocked(v, vi, a / VOL_BLOCK_SIZE, (size_t)((e - a) / VOL_BLOCK_SIZE),
                                      buf + (a - off));
    }
    infl_leave(v, vi->ino, first, last, true);
    return r;
}

ssize_t vol_write(vol_volume *v, uint64_t ino, uint64_t off, const void *buf, size_t size,
                  bool append)
{
    ssize_t r;
    LOCKED(v)
    {
        int rr = check_writable(v);
        vinode *vi = ino_find(v, ino);
        if (rr == 0 && (!vi || vi->freed))
            rr = inode_get(v, ino, &vi);
        if (rr < 0) {
            r = rr;
            break;
        }
        if (!S_ISREG(vi->rec.mode)) {
            r = S_ISDIR(vi->rec.mode) ? -EISDIR : -EINVAL;
            break;
        }
        if (append)
            off = vi->rec.size;
        if (off > VOL_MAX_FILE_SIZE || size > VOL_MAX_FILE_SIZE - off) {
            r = -EFBIG;
            break;
        }
        if (size == 0) {
            r = 0;
            break;
        }
        /* the size is claimed first so that concurrent appends do not overlap; after an
         * I/O error the file may stay extended (reading zeros), as on other file systems */
        if (off + size > vi->rec.size)
            vi->rec.size = off + size;
        vi->nopen++; /* keeps the inode while the mutex is dropped */
        rr = file_write(v, vi, off, buf, size);
        vi->nopen--;
        touch_rec(v, vi);
        if (rr < 0) {
            r = rr;
            maybe_free(v, vi);
            break;
        }
        now(&vi->rec.mtime);
        vi->rec.ctime = vi->rec.mtime;
        touch_rec(v, vi);
        maybe_free(v, vi);
        r = (ssize_t)size;
    }
    return r;
}

int vol_readdir(vol_volume *v, uint64_t ino, uint64_t offset, vol_dir_cb cb, void *arg)
{
    int r;
    LOCKED(v)
    {
        vinode *d;
        if ((r = dir_get(v, ino, &d)) < 0)
            break;
        if (offset < 1 && cb(arg, ".", d->ino, S_IFDIR, 1) != 0)
            break;
        if (offset < 2 && cb(arg, "..", d->rec.parent, S_IFDIR, 2) != 0)
            break;
        vdir *dr = d->dir;
        /* entries are sorted by cookie; find the first after @offset */
        uint64_t after = offset > 2 ? offset - 2 : 0;
        size_t lo = 0, hi = dr->count;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (dr->ents[mid]->cookie <= after)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < dr->count; i++) {
            vdent *e = dr->ents[i];
            if (!e->ino)
                continue;
            if (cb(arg, e->name, e->ino, (mode_t)e->type << 12, e->cookie + 2) != 0)
                break;
        }
    }
    return r;
}

void vol_get_statfs(vol_volume *v, vol_statfs *out)
{
    LOCKED(v)
    {
        out->files = v->next_ino;
        out->blocks_used = 0;
    }
}

int vol_object_name(vol_volume *v, uint64_t ino, char out[33])
{
    vol__object_name(out, v->keys.name, ino);
    return 0;
}

/* ---------------------------------------------------------------------------
 * fsck
 */
typedef struct fsck_state {
    vol_volume *v;
    uint32_t *refs; /* references seen per inode */
    uint32_t *subdirs;
    uint8_t *inuse;
    char **names; /* expected object names, sorted */
    size_t names_count;
    uint64_t orphans;
    uint64_t objects;
    bool repair;
    cista_error **err;
} fsck_state;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int orphan_cb(void *arg, const char *name)
{
    fsck_state *f = arg;
    f->objects++;
    if (strcmp(name, VOL_SB_OBJECT) == 0 || strcmp(name, "lock") == 0)
        return 0;
    const char *key = name;
    if (bsearch(&key, f->names, f->names_count, sizeof(char *), cmp_str))
        return 0;
    f->orphans++;
    log_warn("volume fsck: backing object %s is not referenced by the volume%s", name,
             f->repair ? "; removing it" : "");
    if (f->repair) {
        int r = f->v->store->ops->remove(f->v->store->ctx, name);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    return 0;
}

static int fsck_locked(vol_volume *v, bool repair, uint64_t *out_objects, uint64_t *out_orphans,
                       cista_error **err)
{
    /* objects a commit left for vol_reap are unreferenced, not orphans to report */
    reap(v, true);
    int r = 0;
    uint64_t n = v->next_ino;
    fsck_state f = {.v = v, .repair = repair, .err = err};
    f.refs = xzalloc(n * sizeof(*f.refs));
    f.subdirs = xzalloc(n * sizeof(*f.subdirs));
    f.inuse = xzalloc(n);
    f.names = xzalloc((n + 1) * sizeof(char *));
    /* page-aligned: large runs are read with direct I/O */
    uint8_t *buf = aligned_alloc(VOL_BLOCK_SIZE, 1 << 20);
    if (!buf)
        abort();
    char name[33];
    vol__object_name(name, v->keys.name, VOL_ITABLE_OID);
    f.names[f.names_count++] = xstrdup(name);
    for (uint64_t ino = VOL_ROOT_INO; ino < n; ino++) {
        vinode *vi;
        r = inode_get(v, ino, &vi);
        if (r == -ENOENT) {
            r = 0;
            continue;
        }
        if (r < 0) {
            r = err_set(err, -EUCLEAN,
                        "inode %" PRIu64 ": record does not authenticate or "
                        "parse (see the log)",
                        ino);
            goto out;
        }
        f.inuse[ino] = 1;
        vol__object_name(name, v->keys.name, ino);
        f.names[f.names_count++] = xstrdup(name);
        for (uint64_t off = 0; off < vi->rec.size; off += 1 << 20) {
            size_t sz = vi->rec.size - off < (1 << 20) ? (size_t)(vi->rec.size - off) : 1 << 20;
            if ((r = blob_read(v, &vi->blob, NULL, off, buf, sz)) < 0) {
                r = err_set(err, -EUCLEAN,
                            "inode %" PRIu64 ": content at offset %" PRIu64
                            " does not authenticate (tampered, swapped, truncated or replayed)",
                            ino, off);
                goto out;
            }
        }
        if (!vi->listed)
            blob_close(v, &vi->blob);
        if (S_ISDIR(vi->rec.mode)) {
            vinode *d;
            if ((r = dir_get(v, ino, &d)) < 0) {
                r = err_set(err, -EUCLEAN, "directory inode %" PRIu64 " does not parse", ino);
                goto out;
            }
            for (size_t i = 0; i < d->dir->count; i++) {
                vdent *e = d->dir->ents[i];
                if (!e->ino)
                    continue;
                if (e->ino >= n) {
                    r = err_set(err, -EUCLEAN,
                                "directory %" PRIu64 " entry %s names inode %" PRIu64
                                " beyond the inode table",
                                ino, e->name, e->ino);
                    goto out;
                }
                f.refs[e->ino]++;
                if (e->type == (S_IFDIR >> 12))
                    f.subdirs[ino]++;
            }
        }
    }
    for (uint64_t ino = VOL_ROOT_INO; ino < n; ino++) {
        if (!f.inuse[ino]) {
            if (f.refs[ino]) {
                r = err_set(err, -EUCLEAN, "a directory names free inode %" PRIu64, ino);
                goto out;
            }
            continue;
        }
        vinode *vi;
        if ((r = inode_get(v, ino, &vi)) < 0)
            goto out;
        uint32_t want = S_ISDIR(vi->rec.mode) ? 2 + f.subdirs[ino] : f.refs[ino];
        if (S_ISDIR(vi->rec.mode) && ino != VOL_ROOT_INO && f.refs[ino] != 1) {
            r = err_set(err, -EUCLEAN, "directory inode %" PRIu64 " is named %u times", ino,
                        f.refs[ino]);
            goto out;
        }
        if (f.refs[ino] == 0 && ino != VOL_ROOT_INO) {
            log_warn("volume fsck: inode %" PRIu64 " is in use but unnamed (unlinked while "
                     "open)%s",
                     ino, repair ? "; freeing it" : "");
            f.orphans++;
            if (repair) {
                vi->rec.nlink = 0;
                maybe_free(v, vi);
            }
            continue;
        }
        if (vi->rec.nlink != want) {
            r = err_set(err, -EUCLEAN, "inode %" PRIu64 ": link count %u, but %u found", ino,
                        vi->rec.nlink, want);
            goto out;
        }
    }
    qsort(f.names, f.names_count, sizeof(char *), cmp_str);
    r = v->store->ops->list(v->store->ctx, orphan_cb, &f);
    if (r < 0) {
        r = err_set_sys(err, r, "list the backing store");
        goto out;
    }
    if (repair) {
        if ((r = commit_locked(v, err)) < 0)
            goto out;
        reap(v, true);
    }
    if (out_objects)
        *out_objects = f.objects;
    if (out_orphans)
        *out_orphans = f.orphans;
out:
    for (size_t i = 0; i < f.names_count; i++)
        free(f.names[i]);
    free(f.names);
    free(f.refs);
    free(f.subdirs);
    free(f.inuse);
    OPENSSL_cleanse(buf, 1 << 20);
    free(buf);
    return r;
}

int vol_fsck(vol_volume *v, bool repair, uint64_t *out_objects, uint64_t *out_orphans,
             cista_error **err)
{
    int r;
    LOCKED(v)
    r = fsck_locked(v, repair, out_objects, out_orphans, err);
    return r;
}
