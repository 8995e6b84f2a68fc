/*
 * test_volume.c - the encrypted volume format through its store callbacks,
 * without FUSE: fsx-style random operations against a plain model, tamper
 * and rollback cases on a temp-dir store, and a crash loop on an in-memory
 * store that drops or tears unsynced writes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/log.h"
#include "util/util.h"
#include "volume/vol_int.h"
#include "volume/volume.h"

static const uint8_t g_key[VOL_KEY_SIZE] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                            12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                            23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* ---- deterministic PRNG (xorshift64*) ---- */
static uint64_t g_rng;
static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static uint64_t rn(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* ---------------------------------------------------------------------------
 * In-memory store with crash simulation: writes are pending until sync();
 * crash() keeps, drops or tears (per 512-byte sector) each pending page.
 */
typedef struct mpage {
    struct mpage *next;
    uint64_t idx;
    uint8_t *durable;
    uint8_t *pending;
} mpage;

typedef struct mobj {
    char name[48];
    bool exists;
    mpage *tab[256];
} mobj;

typedef struct mstore {
    mobj objs[512];
    size_t count;
    long fail_after; /* < 0: never; else writes left before the "power cut" */
    bool dead;
} mstore;

static mobj *mobj_find(mstore *s, const char *name)
{
    for (size_t i = 0; i < s->count; i++)
        if (s->objs[i].exists && strcmp(s->objs[i].name, name) == 0)
            return &s->objs[i];
    return NULL;
}

static mpage *mpage_get(mobj *o, uint64_t idx, bool create)
{
    mpage **pp = &o->tab[(idx * 2654435761u) & 255];
    for (mpage *p = *pp; p; p = p->next)
        if (p->idx == idx)
            return p;
    if (!create)
        return NULL;
    mpage *p = xzalloc(sizeof(*p));
    p->idx = idx;
    p->next = *pp;
    *pp = p;
    return p;
}

static void mobj_clear(mobj *o)
{
    for (size_t i = 0; i < 256; i++) {
        mpage *p = o->tab[i];
        while (p) {
            mpage *n = p->next;
            free(p->durable);
            free(p->pending);
            free(p);
            p = n;
        }
        o->tab[i] = NULL;
    }
}

static uint64_t mobj_size(mobj *o)
{
    uint64_t end = 0;
    for (size_t i = 0; i < 256; i++)
        for (mpage *p = o->tab[i]; p; p = p->next)
            if ((p->durable || p->pending) && (p->idx + 1) * 4096 > end)
                end = (p->idx + 1) * 4096;
    return end;
}

static int ms_open(void *ctx, const char *name, bool create, void **out)
{
    mstore *s = ctx;
    mobj *o = mobj_find(s, name);
    if (!o) {
        if (!create)
            return -ENOENT;
        for (size_t i = 0; i < s->count && !o; i++)
            if (!s->objs[i].exists)
                o = &s->objs[i];
        if (!o) {
            assert_true(s->count < ARRAY_LEN(s->objs));
            o = &s->objs[s->count++];
        }
        memset(o, 0, sizeof(*o));
        snprintf(o->name, sizeof(o->name), "%s", name);
        o->exists = true;
    }
    *out = o;
    return 0;
}

static void ms_close(void *ctx, void *h)
{
    (void)ctx;
    (void)h;
}

static ssize_t ms_read(void *ctx, void *h, uint64_t off, void *buf, size_t size)
{
    (void)ctx;
    mobj *o = h;
    assert_int_equal(off % 4096, 0);
    assert_int_equal(size % 4096, 0);
    uint64_t end = mobj_size(o);
    if (off >= end)
        return 0;
    if (size > end - off)
        size = (size_t)(end - off);
    for (size_t i = 0; i < size; i += 4096) {
        mpage *p = mpage_get(o, (off + i) / 4096, false);
        const uint8_t *src = p ? (p->pending ? p->pending : p->durable) : NULL;
        if (src)
            memcpy((uint8_t *)buf + i, src, 4096);
        else
            memset((uint8_t *)buf + i, 0, 4096);
    }
    return (ssize_t)size;
}

static int ms_write(void *ctx, void *h, uint64_t off, const void *buf, size_t size)
{
    mstore *s = ctx;
    mobj *o = h;
    assert_int_equal(off % 4096, 0);
    assert_int_equal(size % 4096, 0);
    if (s->dead)
        return -EIO;
    if (s->fail_after >= 0 && s->fail_after-- == 0) {
        s->dead = true;
        return -EIO;
    }
    for (size_t i = 0; i < size; i += 4096) {
        mpage *p = mpage_get(o, (off + i) / 4096, true);
        if (!p->pending)
            p->pending = xmalloc(4096);
        memcpy(p->pending, (const uint8_t *)buf + i, 4096);
    }
    return 0;
}

static int ms_sync(void *ctx, void *h)
{
    mstore *s = ctx;
    mobj *o = h;
    if (s->dead)
        return -EIO;
    if (s->fail_after >= 0 && s->fail_after-- == 0) {
        s->dead = true;
        return -EIO;
    }
    for (size_t i = 0; i < 256; i++)
        for (mpage *p = o->tab[i]; p; p = p->next)
            if (p->pending) {
                free(p->durable);
                p->durable = p->pending;
                p->pending = NULL;
            }
    return 0;
}

static int ms_truncate(void *ctx, void *h, uint64_t size)
{
    mstore *s = ctx;
    if (s->dead)
        return -EIO;
    assert_int_equal(size, 0);
    mobj_clear(h);
    return 0;
}

static int ms_remove(void *ctx, const char *name)
{
    mstore *s = ctx;
    if (s->dead)
        return -EIO;
    mobj *o = mobj_find(s, name);
    if (!o)
        return -ENOENT;
    mobj_clear(o);
    o->exists = false;
    return 0;
}

static int ms_sync_dir(void *ctx)
{
    mstore *s = ctx;
    return s->dead ? -EIO : 0;
}

static int ms_list(void *ctx, int (*cb)(void *arg, const char *name), void *arg)
{
    mstore *s = ctx;
    for (size_t i = 0; i < s->count; i++)
        if (s->objs[i].exists) {
            int r = cb(arg, s->objs[i].name);
            if (r)
                return r;
        }
    return 0;
}

static void ms_free(void *ctx)
{
    (void)ctx; /* the test owns the mstore */
}

static const vol_store_ops g_mem_ops = {
    .open = ms_open,
    .close = ms_close,
    .read = ms_read,
    .write = ms_write,
    .sync = ms_sync,
    .truncate = ms_truncate,
    .remove = ms_remove,
    .sync_dir = ms_sync_dir,
    .list = ms_list,
    .free = ms_free,
};

static vol_store *mstore_handle(mstore *s)
{
    vol_store *st = xmalloc(sizeof(*st));
    st->ops = &g_mem_ops;
    st->ctx = s;
    return st;
}

/* Power cut: each pending page is kept, dropped or torn by 512-byte sectors. */
static void mstore_crash(mstore *s)
{
    for (size_t k = 0; k < s->count; k++) {
        mobj *o = &s->objs[k];
        for (size_t i = 0; i < 256; i++)
            for (mpage *p = o->tab[i]; p; p = p->next) {
                if (!p->pending)
                    continue;
                uint64_t how = rn(3);
                if (how == 1) {
                    free(p->durable);
                    p->durable = p->pending;
                } else {
                    if (how == 2) {
                        if (!p->durable)
                            p->durable = xzalloc(4096);
                        for (int sct = 0; sct < 8; sct++)
                            if (rn(2))
                                memcpy(p->durable + sct * 512, p->pending + sct * 512, 512);
                    }
                    free(p->pending);
                }
                p->pending = NULL;
            }
    }
    s->dead = false;
    s->fail_after = -1;
}

static void mstore_free(mstore *s)
{
    for (size_t k = 0; k < s->count; k++)
        mobj_clear(&s->objs[k]);
    free(s);
}

/* ---------------------------------------------------------------------------
 * Helpers over the inode API
 */
static int resolve(vol_volume *v, const char *path, uint64_t *ino)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    uint64_t cur = VOL_ROOT_INO;
    char *save = NULL;
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        struct stat st;
        int r = vol_lookup(v, cur, c, &st);
        if (r < 0)
            return r;
        cur = st.st_ino;
    }
    *ino = cur;
    return 0;
}

static void split(const char *path, char *dir, char *name)
{
    const char *sl = strrchr(path, '/');
    if (!sl) {
        strcpy(dir, "");
        strcpy(name, path);
    } else {
        memcpy(dir, path, (size_t)(sl - path));
        dir[sl - path] = '\0';
        strcpy(name, sl + 1);
    }
}

static vol_volume *open_mem(mstore *s)
{
    vol_volume *v = NULL;
    cista_error *e = NULL;
    vol_open_opts o = {.rollback = VOL_ROLLBACK_OFF};
    int r = vol_open(&v, mstore_handle(s), g_key, &o, &e);
    if (r < 0) {
        char *m = err_str(e);
        fprintf(stderr, "vol_open: %s\n", m);
        free(m);
    }
    err_free(e);
    assert_int_equal(r, 0);
    return v;
}

static void create_mem(mstore *s)
{
    cista_error *e = NULL;
    vol_store *st = mstore_handle(s);
    assert_int_equal(vol_create(st, g_key, NULL, NULL, &e), 0);
    vol_store_free(st);
}

static uint64_t create_file(vol_volume *v, uint64_t dir, const char *name)
{
    struct stat st;
    assert_int_equal(vol_mknod(v, dir, name, S_IFREG | 0644, 0, 0, 0, &st), 0);
    return st.st_ino;
}

static void commit_ok(vol_volume *v)
{
    cista_error *e = NULL;
    int r = vol_commit(v, &e);
    if (r < 0) {
        char *m = err_str(e);
        fprintf(stderr, "commit: %s\n", m);
        free(m);
    }
    err_free(e);
    assert_int_equal(r, 0);
}

static void close_ok(vol_volume *v)
{
    cista_error *e = NULL;
    assert_int_equal(vol_close(v, &e), 0);
    err_free(e);
}

/* ---------------------------------------------------------------------------
 * The plain model for fsx
 */
#define M_NODES 256
#define M_ENTS 128
#define M_MAXSIZE (3u << 20)

typedef struct mnode {
    bool used;
    bool symlink;
    int nlink;
    uint8_t *data;
    size_t size;
    char target[40];
} mnode;

typedef struct ment {
    char path[32];
    int node;
} ment;

typedef struct model {
    mnode nodes[M_NODES];
    ment ents[M_ENTS];
    size_t ents_count;
    bool dirs[2]; /* d0, d1 */
} model;

static void model_free(model *m)
{
    for (size_t i = 0; i < M_NODES; i++)
        free(m->nodes[i].data);
    memset(m, 0, sizeof(*m));
}

static void model_copy(model *dst, const model *src)
{
    model_free(dst);
    *dst = *src;
    for (size_t i = 0; i < M_NODES; i++)
        if (src->nodes[i].data) {
            dst->nodes[i].data = xmalloc(src->nodes[i].size ? src->nodes[i].size : 1);
            memcpy(dst->nodes[i].data, src->nodes[i].data, src->nodes[i].size);
        }
}

static int model_find(model *m, const char *path)
{
    for (size_t i = 0; i < m->ents_count; i++)
        if (strcmp(m->ents[i].path, path) == 0)
            return (int)i;
    return -1;
}

static int model_new_node(model *m)
{
    for (int i = 0; i < M_NODES; i++)
        if (!m->nodes[i].used) {
            memset(&m->nodes[i], 0, sizeof(m->nodes[i]));
            m->nodes[i].used = true;
            return i;
        }
    fail_msg("model out of nodes");
    return -1;
}

static void model_drop_entry(model *m, int ei)
{
    mnode *n = &m->nodes[m->ents[ei].node];
    if (--n->nlink == 0) {
        free(n->data);
        memset(n, 0, sizeof(*n));
    }
    m->ents[ei] = m->ents[--m->ents_count];
}

static void model_set_size(mnode *n, size_t size)
{
    if (size > n->size) {
        n->data = xrealloc(n->data, size);
        memset(n->data + n->size, 0, size - n->size);
    }
    n->size = size;
}

static void random_path(model *m, char *out)
{
    int d = (int)rn(3);
    if (d > 0 && !m->dirs[d - 1])
        d = 0;
    if (d == 0)
        sprintf(out, "f%d", (int)rn(6));
    else
        sprintf(out, "d%d/f%d", d - 1, (int)rn(6));
}

/* True when the files of the model read back the same (names, sizes, content). */
static bool model_matches(vol_volume *v, model *m)
{
    static uint8_t buf[M_MAXSIZE];
    for (size_t i = 0; i < m->ents_count; i++) {
        uint64_t ino = 0;
        if (resolve(v, m->ents[i].path, &ino) != 0)
            return false;
        mnode *n = &m->nodes[m->ents[i].node];
        struct stat st;
        if (vol_getattr(v, ino, &st) != 0 || S_ISLNK(st.st_mode) != n->symlink)
            return false;
        if (n->symlink)
            continue;
        if ((size_t)st.st_size != n->size || (int)st.st_nlink != n->nlink)
            return false;
        ssize_t got = vol_read(v, ino, 0, buf, sizeof(buf));
        if (got != (ssize_t)n->size || (n->size && memcmp(buf, n->data, n->size) != 0))
            return false;
    }
    for (int f = 0; f < 6; f++) {
        char p[16];
        sprintf(p, "f%d", f);
        struct stat st;
        if ((vol_lookup(v, VOL_ROOT_INO, p, &st) == 0) != (model_find(m, p) >= 0))
            return false;
    }
    return true;
}

/* Compare the whole volume with the model. */
static void verify(vol_volume *v, model *m)
{
    static uint8_t buf[M_MAXSIZE];
    for (size_t i = 0; i < m->ents_count; i++) {
        uint64_t ino = 0;
        int r = resolve(v, m->ents[i].path, &ino);
        if (r != 0)
            fail_msg("%s: lookup %d", m->ents[i].path, r);
        mnode *n = &m->nodes[m->ents[i].node];
        struct stat st;
        assert_int_equal(vol_getattr(v, ino, &st), 0);
        if (n->symlink) {
            char t[64];
            assert_true(S_ISLNK(st.st_mode));
            assert_int_equal(vol_readlink(v, ino, t, sizeof(t)), (int)strlen(n->target));
            assert_string_equal(t, n->target);
            continue;
        }
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal((int)st.st_nlink, n->nlink);
        if ((size_t)st.st_size != n->size)
            fail_msg("%s: size %lld, model %zu", m->ents[i].path, (long long)st.st_size, n->size);
        ssize_t got = vol_read(v, ino, 0, buf, sizeof(buf));
        assert_int_equal(got, (ssize_t)n->size);
        if (n->size && memcmp(buf, n->data, n->size) != 0)
            fail_msg("%s: content differs", m->ents[i].path);
    }
    /* no extra names */
    for (int d = 0; d < 3; d++) {
        uint64_t dino = VOL_ROOT_INO;
        if (d > 0) {
            char dn[4];
            sprintf(dn, "d%d", d - 1);
            int r = resolve(v, dn, &dino);
            assert_int_equal(r == 0, m->dirs[d - 1]);
            if (r)
                continue;
        }
        for (int f = 0; f < 6; f++) {
            char p[16], nm[4];
            if (d == 0)
                sprintf(p, "f%d", f);
            else
                sprintf(p, "d%d/f%d", d - 1, f);
            sprintf(nm, "f%d", f);
            struct stat st;
            int r = vol_lookup(v, dino, nm, &st);
            assert_int_equal(r == 0, model_find(m, p) >= 0);
        }
    }
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* The crash loop commits itself, to know the committed state. */
static bool g_no_commit_ops;

/* One random operation, applied to both. */
static void fsx_op(vol_volume *v, model *m)
{
    static uint8_t buf[M_MAXSIZE];
    char path[32], dir[32], name[32];
    random_path(m, path);
    split(path, dir, name);
    uint64_t dino = VOL_ROOT_INO;
    assert_int_equal(resolve(v, dir, &dino), 0);
    int ei = model_find(m, path);
    mnode *n = ei >= 0 ? &m->nodes[m->ents[ei].node] : NULL;
    uint64_t op = rn(100);
    if (op < 35) { /* write, creating when needed */
        if (n && n->symlink)
            return;
        uint64_t ino = 0;
        if (!n) {
            ino = create_file(v, dino, name);
            int ni = model_new_node(m);
            m->nodes[ni].nlink = 1;
            snprintf(m->ents[m->ents_count].path, 32, "%s", path);
            m->ents[m->ents_count++].node = ni;
            n = &m->nodes[ni];
        } else {
            assert_int_equal(resolve(v, path, &ino), 0);
        }
        size_t off = rn(8) == 0 ? rn(M_MAXSIZE - 70000) : rn(200000);
        size_t len = rn(4) == 0 ? rn(70000) : rn(9000);
        if (rn(4) == 0) { /* block aligned */
            off &= ~(size_t)4095;
            len = (len + 4095) & ~(size_t)4095;
        }
        fill_random(buf, len);
        bool append = rn(10) == 0;
        if (append)
            off = n->size;
        assert_int_equal(vol_write(v, ino, append ? 12345 : off, buf, len, append), (ssize_t)len);
        if (off + len > n->size)
            model_set_size(n, off + len);
        memcpy(n->data + off, buf, len);
    } else if (op < 50) { /* read a range */
        if (!n || n->symlink)
            return;
        uint64_t ino = 0;
        assert_int_equal(resolve(v, path, &ino), 0);
        size_t off = rn(n->size + 5000), len = rn(100000);
        ssize_t got = vol_read(v, ino, off, buf, len);
        size_t want = off >= n->size ? 0 : (n->size - off < len ? n->size - off : len);
        assert_int_equal(got, (ssize_t)want);
        if (want && memcmp(buf, n->data + off, want) != 0)
            fail_msg("read %s [%zu, +%zu) differs", path, off, want);
    } else if (op < 60) { /* truncate up or down */
        if (!n || n->symlink)
            return;
        uint64_t ino = 0;
        assert_int_equal(resolve(v, path, &ino), 0);
        size_t ns = rn(3) == 0 ? rn(M_MAXSIZE) : rn(n->size + 10000);
        struct stat in = {.st_size = (off_t)ns}, st;
        assert_int_equal(vol_setattr(v, ino, &in, VOL_SET_SIZE, &st), 0);
        model_set_size(n, ns);
    } else if (op < 67) { /* unlink */
        if (!n)
            return;
        assert_int_equal(vol_unlink(v, dino, name), 0);
        model_drop_entry(m, ei);
    } else if (op < 77) { /* rename over whatever is there */
        if (!n)
            return;
        char to[32], tdir[32], tname[32];
        random_path(m, to);
        split(to, tdir, tname);
        uint64_t tdino = 0;
        assert_int_equal(resolve(v, tdir, &tdino), 0);
        assert_int_equal(vol_rename(v, dino, name, tdino, tname, 0), 0);
        int ti = model_find(m, to);
        if (ti == ei)
            return;
        if (ti >= 0 && m->ents[ti].node == m->ents[ei].node) {
            /* POSIX: renaming onto another link of the same file does nothing */
            return;
        }
        int node = m->ents[ei].node;
        if (ti >= 0) {
            model_drop_entry(m, ti);
            ei = model_find(m, path);
        }
        m->ents[ei].node = node;
        snprintf(m->ents[ei].path, 32, "%s", to);
    } else if (op < 83) { /* hard link */
        if (!n || n->symlink)
            return;
        char to[32], tdir[32], tname[32];
        random_path(m, to);
        if (model_find(m, to) >= 0)
            return;
        split(to, tdir, tname);
        uint64_t tdino = 0, ino = 0;
        assert_int_equal(resolve(v, tdir, &tdino), 0);
        assert_int_equal(resolve(v, path, &ino), 0);
        struct stat st;
        assert_int_equal(vol_link(v, ino, tdino, tname, &st), 0);
        n->nlink++;
        snprintf(m->ents[m->ents_count].path, 32, "%s", to);
        m->ents[m->ents_count++].node = m->ents[ei].node;
    } else if (op < 87) { /* symlink */
        if (n)
            return;
        struct stat st;
        int ni = model_new_node(m);
        mnode *s = &m->nodes[ni];
        s->symlink = true;
        s->nlink = 1;
        snprintf(s->target, sizeof(s->target), "../target/%llu", (unsigned long long)rn(1000000));
        assert_int_equal(vol_symlink(v, dino, name, s->target, 0, 0, &st), 0);
        snprintf(m->ents[m->ents_count].path, 32, "%s", path);
        m->ents[m->ents_count++].node = ni;
    } else if (op < 92) { /* mkdir / rmdir */
        int d = (int)rn(2);
        char dn[4];
        sprintf(dn, "d%d", d);
        struct stat st;
        if (!m->dirs[d]) {
            assert_int_equal(vol_mkdir(v, VOL_ROOT_INO, dn, 0755, 0, 0, &st), 0);
            m->dirs[d] = true;
        } else {
            bool empty = true;
            for (size_t i = 0; i < m->ents_count; i++)
                if (strncmp(m->ents[i].path, dn, 2) == 0 && m->ents[i].path[2] == '/')
                    empty = false;
            assert_int_equal(vol_rmdir(v, VOL_ROOT_INO, dn), empty ? 0 : -ENOTEMPTY);
            if (empty)
                m->dirs[d] = false;
        }
    } else if (op < 97) {
        if (!g_no_commit_ops)
            commit_ok(v);
    } else {
        verify(v, m);
    }
}

static void run_fsx(uint64_t seed, int ops, int reopen_every)
{
    g_rng = seed;
    mstore *s = xzalloc(sizeof(*s));
    s->fail_after = -1;
    create_mem(s);
    vol_volume *v = open_mem(s);
    model *m = xzalloc(sizeof(*m));
    for (int i = 0; i < ops; i++) {
        fsx_op(v, m);
        if (reopen_every && i % reopen_every == reopen_every - 1) {
            close_ok(v);
            v = open_mem(s);
            verify(v, m);
            uint64_t objs = 0, orph = 0;
            cista_error *e = NULL;
            int r = vol_fsck(v, false, &objs, &orph, &e);
            if (r < 0) {
                char *msg = err_str(e);
                fail_msg("fsck: %s", msg);
            }
            err_free(e);
            assert_int_equal(orph, 0);
        }
    }
    verify(v, m);
    close_ok(v);
    v = open_mem(s);
    verify(v, m);
    close_ok(v);
    model_free(m);
    free(m);
    mstore_free(s);
}

static void test_fsx_seed1(void **state)
{
    (void)state;
    run_fsx(0x1234567887654321ull, 4000, 500);
}

static void test_fsx_seed2(void **state)
{
    (void)state;
    run_fsx(0xC0FFEE0DDBA11ull, 4000, 0);
}

/* ---------------------------------------------------------------------------
 * Crash loop: power cuts at random points, also inside commits.
 */
static void test_crash_loop(void **state)
{
    (void)state;
    g_rng = 0xDEADBEEF12345ull;
    g_no_commit_ops = true;
    mstore *s = xzalloc(sizeof(*s));
    s->fail_after = -1;
    create_mem(s);
    model *committed = xzalloc(sizeof(*committed));
    model *cur = xzalloc(sizeof(*cur));
    model *next = xzalloc(sizeof(*next));
    int old_state = 0, new_state = 0;
    for (int round = 0; round < 120; round++) {
        vol_volume *v = open_mem(s);
        verify(v, committed);
        model_copy(cur, committed);
        int ops = (int)rn(60);
        for (int i = 0; i < ops; i++) {
            fsx_op(v, cur);
            if (rn(15) == 0) {
                commit_ok(v);
                model_copy(committed, cur);
            }
        }
        /* cut the power: either between operations or inside a commit */
        bool in_commit = rn(2) == 0;
        if (in_commit) {
            s->fail_after = (long)rn(30);
            cista_error *e = NULL;
            int r = vol_commit(v, &e);
            err_free(e);
            if (r == 0) {
                model_copy(committed, cur);
                in_commit = false;
            }
        }
        vol_abandon(v);
        mstore_crash(s);
        if (getenv("VOLTEST_DEBUG"))
            fprintf(stderr, "round %d in_commit %d fail_after left %ld\n", round, in_commit,
                    s->fail_after);
        v = open_mem(s);
        if (in_commit) {
            /* old or new committed state, nothing else */
            model_copy(next, cur);
            if (model_matches(v, next)) {
                verify(v, next);
                model_copy(committed, next);
                new_state++;
            } else {
                verify(v, committed);
                old_state++;
            }
        } else {
            verify(v, committed);
        }
        cista_error *e = NULL;
        uint64_t orph = 0;
        assert_int_equal(vol_fsck(v, true, NULL, &orph, &e), 0);
        err_free(e);
        close_ok(v);
    }
    g_no_commit_ops = false;
    print_message("crash loop: %d cuts inside commits came back old, %d new\n", old_state,
                  new_state);
    model_free(committed);
    model_free(cur);
    model_free(next);
    free(committed);
    free(cur);
    free(next);
    mstore_free(s);
}

/* ---------------------------------------------------------------------------
 * Temp-dir store: tamper, replay, rollback
 */
static char g_tmp[64];

static int setup_tmp(void **state)
{
    (void)state;
    strcpy(g_tmp, "/tmp/cista-voltest-XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static char *tpath(const char *rel)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof(p[k]), "%s/%s", g_tmp, rel);
    return p[k];
}

static int open_dir(vol_volume **v, const char *rel, vol_rollback_mode mode, cista_error **e)
{
    vol_store *st = NULL;
    assert_int_equal(vol_store_dir_new(&st, tpath(rel), false, e), 0);
    vol_open_opts o = {.rollback = mode};
    return vol_open(v, st, g_key, &o, e);
}

static void create_dir_volume(const char *rel, const char *anchor_rel)
{
    vol_store *st = NULL;
    cista_error *e = NULL;
    vol_info info;
    assert_int_equal(vol_store_dir_new(&st, tpath(rel), true, &e), 0);
    assert_int_equal(vol_create(st, g_key, NULL, &info, &e), 0);
    vol_store_free(st);
    if (anchor_rel) {
        vol_anchor *a = vol_anchor_file_new(tpath(anchor_rel), g_key, info.volume_id);
        assert_int_equal(a->ops->advance(a->ctx, info.generation, info.root, &e), 0);
        vol_anchor_free(a);
    }
}

/* Open with an anchor held for the volume's lifetime. */
typedef struct anchored {
    vol_volume *v;
    vol_anchor *a;
} anchored;

static int open_anchored(anchored *out, const char *rel, vol_rollback_mode mode,
                         const char *anchor_rel, cista_error **e)
{
    vol_store *st = NULL;
    assert_int_equal(vol_store_dir_new(&st, tpath(rel), false, e), 0);
    vol_info info;
    assert_int_equal(vol_read_info(&info, st, NULL, e), 0);
    out->a = vol_anchor_file_new(tpath(anchor_rel), g_key, info.volume_id);
    vol_open_opts o = {.rollback = mode, .anchor = out->a};
    int r = vol_open(&out->v, st, g_key, &o, e);
    if (r < 0) {
        vol_anchor_free(out->a);
        out->a = NULL;
    }
    return r;
}

static void close_anchored(anchored *x)
{
    close_ok(x->v);
    vol_anchor_free(x->a);
}

static vol_volume *open_plain(const char *rel)
{
    vol_volume *v = NULL;
    cista_error *e = NULL;
    int r = open_dir(&v, rel, VOL_ROLLBACK_OFF, &e);
    if (r < 0) {
        char *m = err_str(e);
        fprintf(stderr, "open: %s\n", m);
        free(m);
    }
    err_free(e);
    assert_int_equal(r, 0);
    return v;
}

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7 + (i >> 12));
}

static void obj_path(vol_volume *v, const char *rel, uint64_t ino, char *out)
{
    char name[33];
    vol_object_name(v, ino, name);
    sprintf(out, "%s/%s", tpath(rel), name);
}

/* Flip one byte in every 4 KiB page that holds data (both slots, tree nodes). */
static void flip_all_pages(const char *path, off_t in_page)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t pos = 0;
    for (;;) {
        off_t d = lseek(fd, pos, SEEK_DATA);
        if (d < 0)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        for (off_t p = d & ~(off_t)4095; p < h; p += 4096) {
            uint8_t b;
            assert_int_equal(pread(fd, &b, 1, p + in_page), 1);
            b ^= 0x40;
            assert_int_equal(pwrite(fd, &b, 1, p + in_page), 1);
        }
        pos = h;
    }
    close(fd);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void swap_ranges(const char *path, off_t a, off_t b)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t x[4096], y[4096];
    assert_int_equal(pread(fd, x, 4096, a), 4096);
    assert_int_equal(pread(fd, y, 4096, b), 4096);
    assert_int_equal(pwrite(fd, y, 4096, a), 4096);
    assert_int_equal(pwrite(fd, x, 4096, b), 4096);
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static void copy_tree(const char *from, const char *to)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a --sparse=always '%s' '%s'", to, from, to);
    assert_int_equal(system(cmd), 0);
}

static void test_tamper(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_ERROR + 0);
    create_dir_volume("vol", NULL);
    static uint8_t a[3 * 4096], b[2 * 4096], out[3 * 4096];
    fill_pattern(a, sizeof(a), 1);
    fill_pattern(b, sizeof(b), 99);
    vol_volume *v = open_plain("vol");
    uint64_t ia = create_file(v, VOL_ROOT_INO, "a");
    uint64_t ib = create_file(v, VOL_ROOT_INO, "b");
    assert_int_equal(vol_write(v, ia, 0, a, sizeof(a), false), (ssize_t)sizeof(a));
    assert_int_equal(vol_write(v, ib, 0, b, sizeof(b), false), (ssize_t)sizeof(b));
    char pa[300], pb[300], pdir[300], pit[300];
    obj_path(v, "vol", ia, pa);
    obj_path(v, "vol", ib, pb);
    obj_path(v, "vol", VOL_ROOT_INO, pdir);
    obj_path(v, "vol", 0, pit);
    close_ok(v);

    /* 1. a flipped byte in file data: EIO on read, fine after restoring */
    flip_byte(pa, 4096 + 10);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, 4096), 4096);
    assert_int_equal(vol_read(v, ia, 4096, out, 4096), -EIO);
    vol_abandon(v);
    flip_byte(pa, 4096 + 10);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, sizeof(a)), (ssize_t)sizeof(a));
    assert_memory_equal(out, a, sizeof(a));
    vol_abandon(v);

    /* 2. two blocks of one file swapped */
    swap_ranges(pa, 0, 4096);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, 4096), -EIO);
    vol_abandon(v);
    swap_ranges(pa, 0, 4096);

    /* 3. two files swapped */
    char tmp[310];
    snprintf(tmp, sizeof(tmp), "%s.x", pa);
    assert_int_equal(rename(pa, tmp), 0);
    assert_int_equal(rename(pb, pa), 0);
    assert_int_equal(rename(tmp, pb), 0);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, 4096), -EIO);
    assert_int_equal(vol_read(v, ib, 0, out, 4096), -EIO);
    vol_abandon(v);
    assert_int_equal(rename(pa, tmp), 0);
    assert_int_equal(rename(pb, pa), 0);
    assert_int_equal(rename(tmp, pb), 0);

    /* 4. a backing object truncated */
    copy_file(pa, tmp);
    assert_int_equal(truncate(pa, 4096), 0);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, 4096), -EIO);
    vol_abandon(v);
    assert_int_equal(rename(tmp, pa), 0);

    /* 5. a flipped byte in metadata: the root directory, then the inode table */
    flip_all_pages(pdir, 3);
    vol_volume *bad = NULL;
    cista_error *e = NULL;
    assert_int_equal(open_dir(&bad, "vol", VOL_ROLLBACK_OFF, &e), -EIO);
    err_clear(&e);
    flip_all_pages(pdir, 3);
    flip_all_pages(pit, 100);
    assert_true(open_dir(&bad, "vol", VOL_ROLLBACK_OFF, &e) < 0);
    err_clear(&e);
    flip_all_pages(pit, 100);

    /* 6. both superblock slots corrupted: refused; the wrong key: refused */
    copy_file(tpath("vol/superblock"), tmp);
    flip_byte(tpath("vol/superblock"), 80);
    flip_byte(tpath("vol/superblock"), 4096 + 80);
    assert_int_equal(open_dir(&bad, "vol", VOL_ROLLBACK_OFF, &e), -EBADMSG);
    err_clear(&e);
    assert_int_equal(rename(tmp, tpath("vol/superblock")), 0);
    {
        vol_store *st = NULL;
        assert_int_equal(vol_store_dir_new(&st, tpath("vol"), false, &e), 0);
        uint8_t wrong[VOL_KEY_SIZE] = {0};
        vol_open_opts o = {.rollback = VOL_ROLLBACK_OFF};
        assert_int_equal(vol_open(&bad, st, wrong, &o, &e), -EKEYREJECTED);
        err_clear(&e);
    }

    /* 7. an older copy of one file replayed */
    v = open_plain("vol");
    fill_pattern(a, sizeof(a), 2);
    assert_int_equal(vol_write(v, ia, 0, a, sizeof(a), false), (ssize_t)sizeof(a));
    close_ok(v);
    copy_file(pa, tmp); /* holds versions 1 (slot 0) and 2 (slot 1) */
    v = open_plain("vol");
    fill_pattern(a, sizeof(a), 3);
    assert_int_equal(vol_write(v, ia, 0, a, sizeof(a), false), (ssize_t)sizeof(a));
    close_ok(v);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, sizeof(a)), (ssize_t)sizeof(a));
    assert_memory_equal(out, a, sizeof(a));
    vol_abandon(v);
    assert_int_equal(rename(tmp, pa), 0);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ia, 0, out, 4096), -EIO);
    uint64_t orph;
    assert_int_equal(vol_fsck(v, false, NULL, &orph, &e), -EUCLEAN);
    err_clear(&e);
    vol_abandon(v);
}

static void test_rollback(void **state)
{
    (void)state;
    create_dir_volume("rb", "anchor");
    cista_error *e = NULL;
    anchored x;
    static uint8_t a[8192], out[8192];
    fill_pattern(a, sizeof(a), 5);
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), 0);
    uint64_t ia = create_file(x.v, VOL_ROOT_INO, "a");
    assert_int_equal(vol_write(x.v, ia, 0, a, sizeof(a), false), (ssize_t)sizeof(a));
    close_anchored(&x);
    copy_tree(tpath("rb"), tpath("rb.old")); /* a consistent older copy */
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), 0);
    create_file(x.v, VOL_ROOT_INO, "b");
    close_anchored(&x);

    /* the whole volume rolled back: refused in strict mode */
    copy_tree(tpath("rb"), tpath("rb.new"));
    copy_tree(tpath("rb.old"), tpath("rb"));
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), -EACCES);
    assert_non_null(strstr(e->msg, "rollback detected"));
    err_clear(&e);
    /* the newest superblock slot destroyed (falls back one generation): refused too */
    copy_tree(tpath("rb.new"), tpath("rb"));
    {
        int fd = open(tpath("rb/superblock"), O_RDWR);
        uint8_t hdr[64];
        assert_int_equal(pread(fd, hdr, 8, 0), 8);
        vol_info info;
        vol_store *st = NULL;
        assert_int_equal(vol_store_dir_new(&st, tpath("rb"), false, &e), 0);
        assert_int_equal(vol_read_info(&info, st, g_key, &e), 0);
        vol_store_free(st);
        uint8_t zero[4096] = {0};
        assert_int_equal(pwrite(fd, zero, 4096, (off_t)((info.generation % 2) * 4096)), 4096);
        close(fd);
    }
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), -EACCES);
    err_clear(&e);
    /* the real newest copy still mounts */
    copy_tree(tpath("rb.new"), tpath("rb"));
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), 0);
    assert_int_equal(vol_read(x.v, ia, 0, out, sizeof(out)), (ssize_t)sizeof(out));
    assert_memory_equal(out, a, sizeof(a));
    close_anchored(&x);

    /* mode off accepts the old copy (with a warning) */
    copy_tree(tpath("rb"), tpath("rb.new"));
    copy_tree(tpath("rb.old"), tpath("rb"));
    vol_volume *v = NULL;
    assert_int_equal(open_dir(&v, "rb", VOL_ROLLBACK_OFF, &e), 0);
    struct stat st;
    assert_int_equal(vol_lookup(v, VOL_ROOT_INO, "b", &st), -ENOENT);
    vol_abandon(v);
    /* mode reset starts over empty, at a generation above the anchor */
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_RESET, "anchor", &e), 0);
    assert_int_equal(vol_lookup(x.v, VOL_ROOT_INO, "a", &st), -ENOENT);
    create_file(x.v, VOL_ROOT_INO, "fresh");
    close_anchored(&x);
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), 0);
    assert_int_equal(vol_lookup(x.v, VOL_ROOT_INO, "fresh", &st), 0);
    close_anchored(&x);

    /* a modified anchor file is rejected */
    flip_byte(tpath("anchor"), 60);
    assert_true(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e) < 0);
    err_clear(&e);
    /* a missing anchor is refused in strict mode */
    assert_int_equal(unlink(tpath("anchor")), 0);
    assert_int_equal(open_anchored(&x, "rb", VOL_ROLLBACK_STRICT, "anchor", &e), -ENOENT);
    err_clear(&e);
}

/* Offsets beyond 4 GiB, sparse extends and truncation on a real directory store. */
static void test_big_offsets(void **state)
{
    (void)state;
    create_dir_volume("big", NULL);
    vol_volume *v = open_plain("big");
    uint64_t ino = create_file(v, VOL_ROOT_INO, "sparse");
    const uint64_t off = (UINT64_C(5) << 30) + 12345;
    const char msg[] = "beyond four gigabytes";
    assert_int_equal(vol_write(v, ino, off, msg, sizeof(msg), false), (ssize_t)sizeof(msg));
    assert_int_equal(vol_write(v, ino, 100, msg, sizeof(msg), false), (ssize_t)sizeof(msg));
    close_ok(v);
    v = open_plain("big");
    struct stat st;
    assert_int_equal(vol_getattr(v, ino, &st), 0);
    assert_int_equal((uint64_t)st.st_size, off + sizeof(msg));
    char buf[64];
    assert_int_equal(vol_read(v, ino, off, buf, sizeof(buf)), (ssize_t)sizeof(msg));
    assert_string_equal(buf, msg);
    assert_int_equal(vol_read(v, ino, 100, buf, sizeof(msg)), (ssize_t)sizeof(msg));
    assert_string_equal(buf, msg);
    static uint8_t zeros[8192], got[8192];
    assert_int_equal(vol_read(v, ino, UINT64_C(4) << 30, got, sizeof(got)), (ssize_t)sizeof(got));
    assert_memory_equal(got, zeros, sizeof(got));
    /* truncate down into the middle of the message, then extend: the tail reads zero */
    struct stat in = {.st_size = (off_t)(off + 4)};
    assert_int_equal(vol_setattr(v, ino, &in, VOL_SET_SIZE, &st), 0);
    in.st_size = (off_t)(off + 100);
    assert_int_equal(vol_setattr(v, ino, &in, VOL_SET_SIZE, &st), 0);
    assert_int_equal(vol_read(v, ino, off, buf, 30), 30);
    assert_memory_equal(buf, msg, 4);
    assert_memory_equal(buf + 4, zeros, 26);
    /* grows past 2^40: refused */
    assert_int_equal(vol_write(v, ino, VOL_MAX_FILE_SIZE, msg, 1, false), -EFBIG);
    close_ok(v);
    v = open_plain("big");
    assert_int_equal(vol_read(v, ino, off, buf, 30), 30);
    assert_memory_equal(buf + 4, zeros, 26);
    cista_error *e = NULL;
    uint64_t orph = 1;
    assert_int_equal(vol_fsck(v, false, NULL, &orph, &e), 0);
    assert_int_equal(orph, 0);
    close_ok(v);
}

/* POSIX corner cases of the inode API. */
static void test_posix(void **state)
{
    (void)state;
    mstore *s = xzalloc(sizeof(*s));
    s->fail_after = -1;
    create_mem(s);
    vol_volume *v = open_mem(s);
    struct stat st, d1, d2;
    assert_int_equal(vol_mkdir(v, VOL_ROOT_INO, "d1", 0755, 0, 0, &d1), 0);
    assert_int_equal(vol_mkdir(v, d1.st_ino, "d2", 0755, 0, 0, &d2), 0);
    /* a directory cannot move below itself */
    assert_int_equal(vol_rename(v, VOL_ROOT_INO, "d1", d2.st_ino, "x", 0), -EINVAL);
    assert_int_equal(vol_rmdir(v, VOL_ROOT_INO, "d1"), -ENOTEMPTY);
    assert_int_equal(vol_unlink(v, VOL_ROOT_INO, "d1"), -EISDIR);
    uint64_t f = create_file(v, d2.st_ino, "f");
    assert_int_equal(vol_mknod(v, d2.st_ino, "f", S_IFREG | 0600, 0, 0, 0, &st), -EEXIST);
    assert_int_equal(vol_link(v, d2.st_ino, VOL_ROOT_INO, "dl", &st), -EPERM);
    /* unlinked while open: still readable until release */
    assert_int_equal(vol_write(v, f, 0, "data", 4, false), 4);
    assert_int_equal(vol_open_file(v, f, false), 0);
    assert_int_equal(vol_unlink(v, d2.st_ino, "f"), 0);
    char buf[8];
    assert_int_equal(vol_read(v, f, 0, buf, 8), 4);
    commit_ok(v);
    vol_release(v, f);
    assert_int_equal(vol_getattr(v, f, &st), -ENOENT);
    /* exchange and noreplace */
    uint64_t a = create_file(v, VOL_ROOT_INO, "a");
    uint64_t b = create_file(v, VOL_ROOT_INO, "b");
    assert_int_equal(vol_rename(v, VOL_ROOT_INO, "a", VOL_ROOT_INO, "b", RENAME_NOREPLACE),
                     -EEXIST);
    assert_int_equal(vol_rename(v, VOL_ROOT_INO, "a", d1.st_ino, "b", RENAME_EXCHANGE), -ENOENT);
    assert_int_equal(vol_rename(v, VOL_ROOT_INO, "a", VOL_ROOT_INO, "b", RENAME_EXCHANGE), 0);
    assert_int_equal(vol_lookup(v, VOL_ROOT_INO, "a", &st), 0);
    assert_int_equal(st.st_ino, b);
    /* moving a directory fixes link counts and ".." */
    assert_int_equal(vol_rename(v, d1.st_ino, "d2", VOL_ROOT_INO, "d2", 0), 0);
    assert_int_equal(vol_getattr(v, d1.st_ino, &st), 0);
    assert_int_equal(st.st_nlink, 2);
    assert_int_equal(vol_lookup(v, d2.st_ino, "..", &st), 0);
    assert_int_equal(st.st_ino, VOL_ROOT_INO);
    assert_int_equal(vol_getattr(v, VOL_ROOT_INO, &st), 0);
    assert_int_equal(st.st_nlink, 4);
    /* names */
    char longname[300];
    memset(longname, 'x', 299);
    longname[299] = '\0';
    assert_int_equal(vol_mknod(v, VOL_ROOT_INO, longname, S_IFREG, 0, 0, 0, &st), -ENAMETOOLONG);
    assert_int_equal(vol_read(v, VOL_ROOT_INO, 0, buf, 1), -EISDIR);
    (void)a;
    close_ok(v);
    v = open_mem(s);
    cista_error *e = NULL;
    uint64_t orph = 1;
    assert_int_equal(vol_fsck(v, false, NULL, &orph, &e), 0);
    assert_int_equal(orph, 0);
    close_ok(v);
    mstore_free(s);
}

/* Several threads write and read their own regions of one file (the unlocked
 * data path) while another thread commits; everything must read back. */
#include <pthread.h>

#define MT_THREADS 4
#define MT_REGION (1u << 20)

typedef struct mt_arg {
    vol_volume *v;
    uint64_t ino;
    int idx;
    uint8_t *model;
    bool failed;
} mt_arg;

static int g_mt_stop; /* accessed with __atomic builtins */

static void *mt_worker(void *p)
{
    mt_arg *a = p;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(a->idx + 1);
    uint8_t *buf = xmalloc(65536);
    for (int i = 0; i < 150 && !a->failed; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t off = (size_t)(seed >> 33) % (MT_REGION / 4096 - 16) * 4096;
        size_t len = 4096 * (8 + (size_t)(seed >> 20) % 8);
        uint64_t base = (uint64_t)a->idx * MT_REGION;
        if (i % 3 == 2) {
            ssize_t n = vol_read(a->v, a->ino, base + off, buf, len);
            if (n != (ssize_t)len || memcmp(buf, a->model + off, len) != 0)
                a->failed = true;
            continue;
        }
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)(seed >> (k % 56)) ^ (uint8_t)k;
        if (vol_write(a->v, a->ino, base + off, buf, len, false) != (ssize_t)len)
            a->failed = true;
        memcpy(a->model + off, buf, len);
    }
    free(buf);
    return NULL;
}

static void *mt_committer(void *p)
{
    vol_volume *v = p;
    while (!__atomic_load_n(&g_mt_stop, __ATOMIC_ACQUIRE)) {
        cista_error *e = NULL;
        if (vol_commit(v, &e) < 0)
            __atomic_store_n(&g_mt_stop, 2, __ATOMIC_RELEASE);
        err_free(e);
        usleep(2000);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    create_dir_volume("mt", NULL);
    vol_volume *v = open_plain("mt");
    uint64_t ino = create_file(v, VOL_ROOT_INO, "shared");
    struct stat in = {.st_size = (off_t)MT_THREADS * MT_REGION}, st;
    assert_int_equal(vol_setattr(v, ino, &in, VOL_SET_SIZE, &st), 0);
    mt_arg args[MT_THREADS];
    pthread_t th[MT_THREADS], ct;
    __atomic_store_n(&g_mt_stop, 0, __ATOMIC_RELEASE);
    assert_int_equal(pthread_create(&ct, NULL, mt_committer, v), 0);
    for (int i = 0; i < MT_THREADS; i++) {
        args[i] = (mt_arg){.v = v, .ino = ino, .idx = i, .model = xzalloc(MT_REGION)};
        assert_int_equal(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(th[i], NULL);
    int expected = 0;
    __atomic_compare_exchange_n(&g_mt_stop, &expected, 1, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
    pthread_join(ct, NULL);
    assert_int_equal(__atomic_load_n(&g_mt_stop, __ATOMIC_ACQUIRE), 1);
    close_ok(v);
    v = open_plain("mt");
    uint8_t *buf = xmalloc(MT_REGION);
    for (int i = 0; i < MT_THREADS; i++) {
        assert_false(args[i].failed);
        assert_int_equal(vol_read(v, ino, (uint64_t)i * MT_REGION, buf, MT_REGION),
                         (ssize_t)MT_REGION);
        assert_memory_equal(buf, args[i].model, MT_REGION);
        free(args[i].model);
    }
    free(buf);
    close_ok(v);
}

/* True when this process holds an O_DIRECT descriptor of @path. */
static bool holds_direct_fd(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        char link[300], target[512], info[300];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) != 0)
            continue;
        snprintf(info, sizeof(info), "/proc/self/fdinfo/%s", de->d_name);
        FILE *f = fopen(info, "r");
        if (!f)
            continue;
        char line[128];
        unsigned long flags = 0;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "flags: %lo", &flags) == 1)
                break;
        fclose(f);
        found = (flags & O_DIRECT) != 0;
    }
    closedir(d);
    return found;
}

/*
 * The directory store moves large page-aligned transfers with direct I/O and
 * everything else through the page cache; both views of an object agree, and
 * a file the host cut short reads short, not as an error.
 */
static void test_store_direct(void **state)
{
    (void)state;
    cista_error *e = NULL;
    vol_store *st = NULL;
    assert_int_equal(vol_store_dir_new(&st, tpath("ds"), true, &e), 0);
    /* does this file system take O_DIRECT at all? */
    int probe = open(tpath("probe"), O_RDWR | O_CREAT | O_DIRECT, 0600);
    bool fs_direct = probe >= 0;
    if (probe >= 0)
        close(probe);
    const size_t big = 1u << 20;
    uint8_t *a = aligned_alloc(4096, big + 4096), *b = aligned_alloc(4096, big + 4096);
    assert_non_null(a);
    assert_non_null(b);
    fill_pattern(a, big, 5);
    void *h = NULL;
    assert_int_equal(st->ops->open(st->ctx, "obj", true, &h), 0);
    assert_int_equal(st->ops->write(st->ctx, h, 3 * 4096, a, big), 0);
    assert_int_equal(holds_direct_fd(tpath("ds/obj")), fs_direct);
    /* a small buffered write inside the range, seen by a direct read */
    uint8_t page[4096];
    fill_pattern(page, sizeof(page), 77);
    assert_int_equal(st->ops->write(st->ctx, h, 10 * 4096, page, sizeof(page)), 0);
    memcpy(a + 7 * 4096, page, sizeof(page));
    assert_int_equal(st->ops->read(st->ctx, h, 3 * 4096, b, big), (ssize_t)big);
    assert_memory_equal(b, a, big);
    /* an unaligned buffer goes buffered and reads the same bytes */
    assert_int_equal(st->ops->read(st->ctx, h, 3 * 4096, b + 1, big), (ssize_t)big);
    assert_memory_equal(b + 1, a, big);
    /* a direct write over a range the page cache holds, seen by a buffered read */
    fill_pattern(a, big, 9);
    assert_int_equal(st->ops->write(st->ctx, h, 3 * 4096, a, big), 0);
    assert_int_equal(st->ops->read(st->ctx, h, 10 * 4096, page, sizeof(page)), 4096);
    assert_memory_equal(page, a + 7 * 4096, sizeof(page));
    /* a hole reads as zeros */
    assert_int_equal(st->ops->write(st->ctx, h, 2 * big, a, big), 0);
    assert_int_equal(st->ops->read(st->ctx, h, big + 4096 * 8, b, big - 4096 * 8),
                     (ssize_t)(big - 4096 * 8));
    for (size_t i = 0; i < big - 4096 * 8; i++)
        if (b[i] != 0)
            fail_msg("hole byte %zu is %u", i, b[i]);
    /* a stream of direct writes allocates ahead of itself (bounded); scattered ones do not */
    if (fs_direct) {
        void *hs = NULL, *hr = NULL;
        assert_int_equal(st->ops->open(st->ctx, "stream", true, &hs), 0);
        assert_int_equal(st->ops->open(st->ctx, "scattered", true, &hr), 0);
        for (uint64_t i = 0; i < 16; i++) {
            assert_int_equal(st->ops->write(st->ctx, hs, i * big, a, big), 0);
            assert_int_equal(st->ops->write(st->ctx, hr, i * 100 * big, a, big), 0);
        }
        struct stat ss, sr;
        assert_int_equal(stat(tpath("ds/stream"), &ss), 0);
        assert_int_equal(stat(tpath("ds/scattered"), &sr), 0);
        uint64_t alloc_s = (uint64_t)ss.st_blocks * 512, alloc_r = (uint64_t)sr.st_blocks * 512;
        /* 16 MiB written; ahead: a quarter of the stream (4 MiB), rounded to 1 MiB */
        assert_true(alloc_s >= 16 * big);
        assert_true(alloc_s <= 21 * big);
        assert_true(alloc_r >= 16 * big);
        assert_true(alloc_r < 17 * big);
        /* the preallocated space reads as zeros and the data is intact */
        assert_int_equal(st->ops->read(st->ctx, hs, 15 * big, b, big), (ssize_t)big);
        assert_memory_equal(b, a, big);
        ssize_t n = st->ops->read(st->ctx, hs, 16 * big, b, big);
        assert_true(n >= 0);
        for (ssize_t i = 0; i < n; i++)
            if (b[i] != 0)
                fail_msg("preallocated byte %zd is %u", i, b[i]);
        /* a truncation forgets the stream */
        assert_int_equal(st->ops->truncate(st->ctx, hs, 0), 0);
        assert_int_equal(st->ops->write(st->ctx, hs, 0, a, big), 0);
        assert_int_equal(stat(tpath("ds/stream"), &ss), 0);
        assert_int_equal((uint64_t)ss.st_blocks * 512, big);
        st->ops->close(st->ctx, hs);
        st->ops->close(st->ctx, hr);
    }
    /* the host cuts the file at an unaligned size: a direct read returns what is there */
    assert_int_equal(st->ops->sync(st->ctx, h), 0);
    assert_int_equal(truncate(tpath("ds/obj"), (off_t)(2 * big + 5000)), 0);
    assert_int_equal(st->ops->read(st->ctx, h, 2 * big, b, big), 5000);
    assert_memory_equal(b, a, 5000);
    st->ops->close(st->ctx, h);
    free(a);
    free(b);
    vol_store_free(st);
}

/* Tampering is caught on the large-request path too (direct I/O, no volume lock). */
static void test_tamper_large(void **state)
{
    (void)state;
    create_dir_volume("vol", NULL);
    const size_t size = 2u << 20;
    uint8_t *a = aligned_alloc(4096, size), *out = aligned_alloc(4096, size);
    assert_non_null(a);
    assert_non_null(out);
    fill_pattern(a, size, 3);
    vol_volume *v = open_plain("vol");
    uint64_t ino = create_file(v, VOL_ROOT_INO, "big");
    assert_int_equal(vol_write(v, ino, 0, a, size, false), (ssize_t)size);
    char pa[300];
    obj_path(v, "vol", ino, pa);
    close_ok(v);

    v = open_plain("vol");
    assert_int_equal(vol_read(v, ino, 0, out, size), (ssize_t)size);
    assert_memory_equal(out, a, size);
    /* while mounted, the host flips a byte of block 300: the next large read fails */
    flip_byte(pa, 300 * 4096 + 17);
    assert_int_equal(vol_read(v, ino, 1u << 20, out, 1u << 20), -EIO);
    assert_int_equal(vol_read(v, ino, 0, out, 1u << 20), 1 << 20);
    assert_memory_equal(out, a, 1u << 20);
    flip_byte(pa, 300 * 4096 + 17);
    assert_int_equal(vol_read(v, ino, 1u << 20, out, 1u << 20), 1 << 20);
    assert_memory_equal(out, a + (1u << 20), 1u << 20);
    /* two blocks in the middle swapped */
    swap_ranges(pa, 400 * 4096, 401 * 4096);
    assert_int_equal(vol_read(v, ino, 1u << 20, out, 1u << 20), -EIO);
    swap_ranges(pa, 400 * 4096, 401 * 4096);
    /* a large overwrite, committed, then the old blocks replayed over the new ones */
    fill_pattern(a, size, 4);
    assert_int_equal(vol_write(v, ino, 0, a, size, false), (ssize_t)size);
    close_ok(v);
    char tmp[310];
    snprintf(tmp, sizeof(tmp), "%s.x", pa);
    copy_file(pa, tmp);
    v = open_plain("vol");
    fill_pattern(a, size, 5);
    assert_int_equal(vol_write(v, ino, 0, a, size, false), (ssize_t)size);
    close_ok(v);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ino, 0, out, size), (ssize_t)size);
    assert_memory_equal(out, a, size);
    vol_abandon(v);
    assert_int_equal(rename(tmp, pa), 0);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ino, 0, out, 1u << 20), -EIO);
    vol_abandon(v);
    /* the object cut in the middle of the data */
    assert_int_equal(truncate(pa, 700 * 1024 + 100), 0);
    v = open_plain("vol");
    assert_int_equal(vol_read(v, ino, 0, out, 1u << 20), -EIO);
    vol_abandon(v);
    free(a);
    free(out);
}

/*
 * The objects of deleted files are removed by the commit, or with
 * VOL_COMMIT_DEFER_REAP by vol_reap afterwards (fsck does not count them as
 * orphans meanwhile).
 */
static void test_reap(void **state)
{
    (void)state;
    create_dir_volume("rp", NULL);
    vol_volume *v = open_plain("rp");
    static uint8_t data[64 * 1024];
    fill_pattern(data, sizeof(data), 7);
    uint64_t ia = create_file(v, VOL_ROOT_INO, "a");
    uint64_t ib = create_file(v, VOL_ROOT_INO, "b");
    assert_int_equal(vol_write(v, ia, 0, data, sizeof(data), false), (ssize_t)sizeof(data));
    assert_int_equal(vol_write(v, ib, 0, data, sizeof(data), false), (ssize_t)sizeof(data));
    char pa[300], pb[300];
    obj_path(v, "rp", ia, pa);
    obj_path(v, "rp", ib, pb);
    cista_error *e = NULL;
    assert_int_equal(vol_commit(v, &e), 0);
    assert_int_equal(access(pa, F_OK), 0);
    /* deferred: the object stays until vol_reap */
    assert_int_equal(vol_reclaimable(v), 0);
    assert_int_equal(vol_unlink(v, VOL_ROOT_INO, "a"), 0);
    assert_int_equal(vol_reclaimable(v), sizeof(data));
    assert_int_equal(vol_commit_ex(v, VOL_COMMIT_DEFER_REAP, &e), 0);
    assert_int_equal(vol_reclaimable(v), 0);
    assert_int_equal(access(pa, F_OK), 0);
    vol_reap(v);
    assert_int_equal(access(pa, F_OK), -1);
    /* deferred, then fsck: removed, not reported */
    assert_int_equal(vol_unlink(v, VOL_ROOT_INO, "b"), 0);
    assert_int_equal(vol_commit_ex(v, VOL_COMMIT_DEFER_REAP, &e), 0);
    assert_int_equal(access(pb, F_OK), 0);
    uint64_t orph = 1;
    assert_int_equal(vol_fsck(v, false, NULL, &orph, &e), 0);
    assert_int_equal(orph, 0);
    assert_int_equal(access(pb, F_OK), -1);
    /* plain vol_commit removes at once */
    uint64_t ic = create_file(v, VOL_ROOT_INO, "c");
    assert_int_equal(vol_write(v, ic, 0, data, sizeof(data), false), (ssize_t)sizeof(data));
    char pc[300];
    obj_path(v, "rp", ic, pc);
    assert_int_equal(vol_commit(v, &e), 0);
    assert_int_equal(vol_unlink(v, VOL_ROOT_INO, "c"), 0);
    assert_int_equal(vol_commit(v, &e), 0);
    assert_int_equal(access(pc, F_OK), -1);
    close_ok(v);
}

/* Parsers reject what the encoder cannot produce. */
/* An in-memory anchor that can be told to fail, standing in for an unreachable KBS. */
typedef struct mem_anchor {
    bool fail;
    bool has;
    uint64_t gen;
    uint8_t root[VOL_ROOT_SIZE];
    int advances;
} mem_anchor;

static int ma_read(void *ctx, uint64_t *gen, uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    mem_anchor *m = ctx;
    (void)err;
    if (!m->has)
        return -ENOENT;
    *gen = m->gen;
    memcpy(root, m->root, VOL_ROOT_SIZE);
    return 0;
}

static int ma_advance(void *ctx, uint64_t gen, const uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    mem_anchor *m = ctx;
    if (m->fail)
        return err_set(err, -EIO, "KBS unreachable (test)");
    if (m->has && gen < m->gen)
        return err_set(err, -ESTALE, "backwards");
    m->has = true;
    m->gen = gen;
    memcpy(m->root, root, VOL_ROOT_SIZE);
    m->advances++;
    return 0;
}

static const char *ma_describe(void *ctx)
{
    (void)ctx;
    return "mem";
}

static const vol_anchor_ops g_mem_anchor_ops = {
    .read = ma_read, .advance = ma_advance, .describe = ma_describe};

static void test_anchor_kbs(void **state)
{
    (void)state;
    /* the CLI form kbs:URL/repo/type/tag */
    char *url = NULL, *path = NULL;
    assert_int_equal(
        vol_anchor_kbs_parse(&url, &path, "kbs:https://127.0.0.1:8443/vol/anchor/v1", NULL), 0);
    assert_string_equal(url, "https://127.0.0.1:8443");
    assert_string_equal(path, "vol/anchor/v1");
    free(url);
    free(path);
    static const char *const bad[] = {
        "kbs:https://h:1",
        "kbs:https://h:1/a/b",
        "kbs:https://h:1/a/b/c/d",
        "kbs:ftp://h/a/b/c",
        "file:/x",
        "kbs:https:///a/b/c",
        "kbs:https://h/../b/c",
        "kbs:https://h/a//c",
        "kbs:",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        _cleanup_err_ cista_error *e = NULL;
        assert_int_equal(vol_anchor_kbs_parse(&url, &path, bad[i], &e), -EINVAL);
        assert_null(url);
        assert_null(path);
    }
    /* construction checks its options without talking to the broker */
    vol_anchor *a = NULL;
    {
        _cleanup_err_ cista_error *e = NULL;
        vol_kbs_anchor_opts o = {.url = "https://127.0.0.1:1", .tee = "snp", .path = "a/b/c"};
        assert_int_equal(vol_anchor_kbs_new(&a, &o, &e), -EINVAL);
        o.tee = "sim";
        o.path = "a/b";
        assert_int_equal(vol_anchor_kbs_new(&a, &o, &e), -EINVAL);
    }
    {
        vol_kbs_anchor_opts o = {
            .url = "http://127.0.0.1:1", .tee = "sim", .path = "a/b/c", .timeout = 2};
        assert_int_equal(vol_anchor_kbs_new(&a, &o, NULL), 0);
        assert_string_equal(a->ops->describe(a->ctx), "kbs:http://127.0.0.1:1/a/b/c");
        /* nothing listens there: reading fails (not -ENOENT, which would mean "no anchor") */
        _cleanup_err_ cista_error *e = NULL;
        uint64_t g = 0;
        uint8_t root[VOL_ROOT_SIZE];
        int r = a->ops->read(a->ctx, &g, root, &e);
        assert_true(r < 0 && r != -ENOENT);
        vol_anchor_free(a);
    }
    /* a failed advance fails the commit, and the next commit retries it */
    create_dir_volume("ka", NULL);
    mem_anchor m = {0};
    vol_anchor va = {.ops = &g_mem_anchor_ops, .ctx = &m};
    vol_store *st = NULL;
    cista_error *e = NULL;
    assert_int_equal(vol_store_dir_new(&st, tpath("ka"), false, &e), 0);
    vol_open_opts o = {.rollback = VOL_ROLLBACK_RESET, .anchor = &va};
    vol_volume *v = NULL;
    assert_int_equal(vol_open(&v, st, g_key, &o, &e), 0);
    int base = m.advances;
    create_file(v, VOL_ROOT_INO, "x");
    m.fail = true;
    assert_int_equal(vol_commit(v, &e), -EIO);
    {
        _cleanup_free_ char *msg = err_str(e);
        assert_non_null(strstr(msg, "was not advanced"));
    }
    err_clear(&e);
    assert_true(vol_is_dirty(v));
    m.fail = false;
    assert_int_equal(vol_commit(v, &e), 0);
    assert_int_equal(m.advances, base + 1);
    vol_info info;
    vol_get_info(v, &info);
    assert_int_equal(m.gen, info.generation);
    assert_false(vol_is_dirty(v));
    assert_int_equal(vol_close(v, &e), 0);
}

static void test_parsers(void **state)
{
    (void)state;
    cista_error *e = NULL;
    uint8_t rec[VOL_REC_SIZE] = {0};
    assert_int_equal(vol_parse_inode(rec, sizeof(rec), &e), 0);
    rec[127] = 1;
    assert_int_equal(vol_parse_inode(rec, sizeof(rec), &e), -EUCLEAN);
    err_clear(&e);
    uint8_t dir[] = {5, 0, 0, 0, 0, 0, 0, 0, 8, 2, '.', '.'};
    assert_int_equal(vol_parse_dir(dir, sizeof(dir), &e), -EUCLEAN);
    err_clear(&e);
    dir[10] = 'o';
    dir[11] = 'k';
    assert_int_equal(vol_parse_dir(dir, sizeof(dir), &e), 0);
    assert_int_equal(vol_parse_dir(dir, sizeof(dir) - 1, &e), -EUCLEAN);
    err_clear(&e);
    uint8_t node[VOL_BLOCK_SIZE] = {0};
    assert_int_equal(vol_parse_node(node, sizeof(node), &e), 0);
    node[8] = 1; /* flags on a hole */
    assert_int_equal(vol_parse_node(node, sizeof(node), &e), -EUCLEAN);
    err_clear(&e);
    vol_info info;
    uint8_t sb[VOL_SB_SLOT_SIZE] = {0};
    assert_int_equal(vol_parse_superblock(&info, sb, sizeof(sb), NULL, &e), -EUCLEAN);
    err_clear(&e);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_posix),
        cmocka_unit_test(test_fsx_seed1),
        cmocka_unit_test(test_fsx_seed2),
        cmocka_unit_test(test_crash_loop),
        cmocka_unit_test_setup_teardown(test_tamper, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_rollback, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_anchor_kbs, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_big_offsets, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_concurrent, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_store_direct, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tamper_large, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_reap, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
