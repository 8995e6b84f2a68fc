/* ev.c - the evidence registry, collateral sets, claim helpers and configfs-tsm I/O. */
#include "evidence/ev.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "evidence/ev_int.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"

/* ---- registry ---- */

static const ev_ops *const g_ops[] = {&ev__sim_ops,       &ev__snp_ops,       &ev__tpm_ops,
                                      &ev__azure_snp_ops, &ev__azure_tdx_ops, &ev__tdx_ops,
                                      &ev__sgx_ops,       &ev__nvidia_ops};

const ev_ops *ev_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < ARRAY_LEN(g_ops); i++)
        if (strcmp(g_ops[i]->name, name) == 0)
            return g_ops[i];
    return NULL;
}

const ev_ops *const *ev_list(size_t *out_count)
{
    *out_count = ARRAY_LEN(g_ops);
    return g_ops;
}

const ev_ops *ev_detect(const uint8_t *evidence, size_t evidence_size)
{
    for (size_t i = 0; i < ARRAY_LEN(g_ops); i++)
        if (g_ops[i]->detect && g_ops[i]->detect(evidence, evidence_size))
            return g_ops[i];
    return NULL;
}

void ev_get_opts_init(ev_get_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->privlevel = -1;
}

void ev_verify_opts_init(ev_verify_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->vmpl = -1;
}

/* ---- collateral ---- */

#define COLL_PARSERS 2 /* verifiers with their own parsed form of an entry (today: dcap) */

struct ev_collateral {
    struct {
        char *name;
        uint8_t *data;
        size_t size;
        STACK_OF(X509) * certs; /* parsed once at add time; NULL: not certificates */
        struct {
            const ev__coll_parser *by;
            void *v;
        } parsed[COLL_PARSERS]; /* made on first use (ev__collateral_parsed) */
    } item[EV_MAX_COLLATERAL];
    size_t count;
    pthread_mutex_t lock; /* guards parsed[] */
};

ev_collateral *ev_collateral_new(void)
{
    ev_collateral *c = xzalloc(sizeof(ev_collateral));
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void ev_collateral_free(ev_collateral *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++) {
        for (size_t k = 0; k < COLL_PARSERS && c->item[i].parsed[k].by; k++)
            c->item[i].parsed[k].by->free(c->item[i].parsed[k].v);
        free(c->item[i].name);
        free(c->item[i].data);
        sk_X509_pop_free(c->item[i].certs, X509_free);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const void *ev__collateral_parsed(const ev_collateral *cc, size_t i, const ev__coll_parser *p)
{
    /* the entry's bytes never change once added, so its parsed form is made once; the
     * lock is the collateral's own (a shared set is read by concurrent verifications) */
    ev_collateral *c = (ev_collateral *)cc;
    pthread_mutex_lock(&c->lock);
    void *v = NULL;
    for (size_t k = 0; k < COLL_PARSERS; k++) {
        if (c->item[i].parsed[k].by == p) {
            v = c->item[i].parsed[k].v;
            break;
        }
        if (!c->item[i].parsed[k].by) {
            v = p->parse(c->item[i].name, c->item[i].data, c->item[i].size, c->item[i].certs);
            c->item[i].parsed[k].by = p;
            c->item[i].parsed[k].v = v;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (!v)
        abort(); /* more parsers than COLL_PARSERS: a build error, not an input error */
    return v;
}

void ev__collateral_freep(ev_collateral **c)
{
    ev_collateral_free(*c);
}

int ev_collateral_add(ev_collateral *c, const char *name, const void *data, size_t size,
                      cista_error **err)
{
    if (c->count >= EV_MAX_COLLATERAL)
        return err_set(err, -E2BIG, "collateral: more than %d files", EV_MAX_COLLATERAL);
    if (size > EV_MAX_EVIDENCE)
        return err_set(err, -EFBIG, "collateral %s: %zu bytes is over the limit of %u", name, size,
                       EV_MAX_EVIDENCE);
    c->item[c->count].name = xstrdup(name ? name : "(unnamed)");
    c->item[c->count].data = xmalloc(size);
    if (size)
        memcpy(c->item[c->count].data, data, size);
    c->item[c->count].size = size;
    if (x509_certs_load(&c->item[c->count].certs, data, size, NULL) < 0) {
        sk_X509_pop_free(c->item[c->count].certs, X509_free);
        c->item[c->count].certs = NULL;
    }
    c->count++;
    return 0;
}

int ev_collateral_add_from(ev_collateral *c, const ev_collateral *src, size_t i, cista_error **err)
{
    if (i >= src->count)
        return err_set(err, -EINVAL, "collateral: entry %zu of a set of %zu", i, src->count);
    if (c->count >= EV_MAX_COLLATERAL)
        return err_set(err, -E2BIG, "collateral: more than %d files", EV_MAX_COLLATERAL);
    /* the bytes are copied (the sets live independently); the certificates parsed from them
     * are immutable and reference-counted, so both sets share them instead of parsing again */
    c->item[c->count].name = xstrdup(src->item[i].name);
    c->item[c->count].data = xmalloc(src->item[i].size ? src->item[i].size : 1);
    if (src->item[i].size)
        memcpy(c->item[c->count].data, src->item[i].data, src->item[i].size);
    c->item[c->count].size = src->item[i].size;
    if (src->item[i].certs && !(c->item[c->count].certs = X509_chain_up_ref(src->item[i].certs)))
        abort();
    c->count++;
    return 0;
}

STACK_OF(X509) * ev__collateral_certs(const ev_collateral *c, size_t i)
{
    return c && i < c->count ? c->item[i].certs : NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ev_collateral_load_dir(ev_collateral *c, const char *dir, cista_error **err)
{
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "collateral directory %s", dir);
    int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return err_set_sys(err, -errno, "collateral directory %s", dir);
    DIR *d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        return err_set_sys(err, -errno, "collateral directory %s", dir);
    }
    char *names[EV_MAX_COLLATERAL + 1];
    size_t n = 0;
    int r = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == EV_MAX_COLLATERAL) {
            r = err_set(err, -E2BIG, "collateral directory %s: more than %d files", dir,
                        EV_MAX_COLLATERAL);
            break;
        }
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str); /* deterministic order */
    for (size_t i = 0; i < n; i++) {
        if (r == 0) {
            _cleanup_free_ char *data = NULL;
            size_t size = 0;
            r = util_read_fileat(&data, &size, dfd, names[i], EV_MAX_EVIDENCE, err);
            if (r < 0)
                r = err_wrap(err, "collateral %s/%s", dir, names[i]);
            else
                r = ev_collateral_add(c, names[i], data, size, err);
        }
        free(names[i]);
    }
    return r;
}

size_t ev_collateral_count(const ev_collateral *c)
{
    return c ? c->count : 0;
}

void ev_collateral_get(const ev_collateral *c, size_t i, const char **name, const uint8_t **data,
                       size_t *size)
{
    *name = c->item[i].name;
    *data = c->item[i].data;
    *size = c->item[i].size;
}

/* ---- claim helpers ---- */

bool ev__all_zero(const uint8_t *p, size_t size)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < size; i++)
        acc |= p[i];
    return acc == 0;
}

json_t *ev__json_hex(const void *p, size_t size)
{
    /* claims carry dozens of these per verification: encode on the stack when it fits */
    static const char digits[] = "0123456789abcdef";
    char buf[256];
    if (size > sizeof(buf) / 2) {
        _cleanup_free_ char *h = hex_encode(p, size);
        return json_string(h);
    }
    const uint8_t *b = p;
    for (size_t i = 0; i < size; i++) {
        buf[2 * i] = digits[b[i] >> 4];
        buf[2 * i + 1] = digits[b[i] & 15];
    }
    return json_stringn_nocheck(buf, 2 * size);
}

void ev__time_str(char *buf, size_t size, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *ev__claims_new(const char *tee, bool insecure)
{
    json_t *c = json_object();
    json_object_set_new_nocheck(c, "tee", json_string(tee));
    json_object_set_new_nocheck(c, "insecure", json_boolean(insecure));
    return c;
}

/*
 * What ev__cert_json() shows of a certificate, a function of its (never
 * modified) parsed contents, rendered once per X509 object and kept with it
 * as ex_data: certificates held by a chain cache or a collateral set are
 * shown in the claims of every verification, and rendering names and
 * hashing the DER cost more than the signature checks.
 */
typedef struct {
    char *subject, *issuer, *not_before, *not_after; /* NULL when not valid UTF-8 */
    char sha256[65];                                 /* "" when it cannot be computed */
} cert_view;

/* @s when it is valid UTF-8 (what json_string() accepts), else NULL (freeing @s). */
static char *utf8_or_null(char *s)
{
    json_t *j = s ? json_string(s) : NULL;
    if (j) {
        json_decref(j);
        return s;
    }
    free(s);
    return NULL;
}

static pthread_once_t g_view_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_view_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_view_index = -1;

static void cert_view_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    cert_view *v = ptr;
    if (!v)
        return;
    free(v->subject);
    free(v->issuer);
    free(v->not_before);
    free(v->not_after);
    free(v);
}

static void cert_view_init(void)
{
    g_view_index = X509_get_ex_new_index(0, NULL, NULL, NULL, cert_view_free);
    if (g_view_index < 0)
        abort(); /* allocation failure inside OpenSSL */
}

/* The view of @c, made on first use; borrowed (lives as long as @c). */
static const cert_view *cert_view_of(X509 *c)
{
    pthread_once(&g_view_once, cert_view_init);
    /* ex_data of a certificate shared between threads: read and set under one lock */
    pthread_mutex_lock(&g_view_lock);
    cert_view *v = X509_get_ex_data(c, g_view_index);
    if (!v) {
        v = xzalloc(sizeof(*v));
        v->subject = utf8_or_null(x509_subject_str(c));
        v->issuer = utf8_or_null(x509_issuer_str(c));
        v->not_before = utf8_or_null(x509_not_before_str(c));
        v->not_after = utf8_or_null(x509_not_after_str(c));
        uint8_t fp[32];
        if (x509_cert_sha256(fp, c, NULL) == 0)
            for (size_t i = 0; i < 32; i++)
                snprintf(v->sha256 + 2 * i, 3, "%02x", fp[i]);
        if (X509_set_ex_data(c, g_view_index, v) != 1)
            abort(); /* allocation failure inside OpenSSL */
    }
    pthread_mutex_unlock(&g_view_lock);
    return v;
}

json_t *ev__cert_json(const char *role, X509 *c, bool pinned)
{
    const cert_view *v = cert_view_of(c);
    /* the view's strings were checked when it was made: no UTF-8 check per call */
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "role", json_string(role));
    if (v->subject)
        json_object_set_new_nocheck(o, "subject", json_string_nocheck(v->subject));
    if (v->issuer)
        json_object_set_new_nocheck(o, "issuer", json_string_nocheck(v->issuer));
    if (v->not_before)
        json_object_set_new_nocheck(o, "not_before", json_string_nocheck(v->not_before));
    if (v->not_after)
        json_object_set_new_nocheck(o, "not_after", json_string_nocheck(v->not_after));
    if (v->sha256[0])
        json_object_set_new_nocheck(o, "sha256", json_stringn_nocheck(v->sha256, 64));
    if (pinned)
        json_object_set_new_nocheck(o, "pinned", json_true());
    return o;
}

const ev_verify_opts *ev__verify_opts_or_default(const ev_verify_opts *opts, ev_verify_opts *dflt)
{
    if (opts)
        return opts;
    ev_verify_opts_init(dflt);
    return dflt;
}

int ev__check_report_data(const uint8_t *want, const uint8_t *got, const char *what,
                          const char *noun, cista_error **err)
{
    if (!want || crypto_memeq(want, got, EV_REPORT_DATA_SIZE))
        return 0;
    _cleanup_free_ char *w = hex_encode(want, EV_REPORT_DATA_SIZE);
    _cleanup_free_ char *g = hex_encode(got, EV_REPORT_DATA_SIZE);
    return err_set(err, EV_E_REPORT_DATA,
                   "%s report_data is %s, expected %s; the %s is stale, replayed or bound to "
                   "another key",
                   what, g, w, noun);
}

/* ---- configfs-tsm ---- */

#define TSM_DEFAULT_DIR "/sys/kernel/config/tsm/report"

static int read_attr(uint8_t **out, size_t *out_size, int dfd, const char *name, bool optional,
                     cista_error **err)
{
    char *data = NULL;
    size_t size = 0;
    int r = util_read_fileat(&data, &size, dfd, name, EV_MAX_EVIDENCE, err);
    if (r == -ENOENT && optional) {
        err_clear(err);
        *out = NULL;
        *out_size = 0;
        return 0;
    }
    if (r < 0)
        return err_wrap(err, "configfs-tsm attribute %s", name);
    *out = (uint8_t *)data;
    *out_size = size;
    return 0;
}

static int write_attr(int dfd, const char *name, const void *data, size_t size, cista_error **err)
{
    _cleanup_close_ int fd = openat(dfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_set_sys(err, -errno, "configfs-tsm attribute %s", name);
    if (util_write_all(fd, data, size) < 0)
        return err_set_sys(err, -errno, "configfs-tsm: writing %s", name);
    return 0;
}

static int read_generation(long *out, int dfd, cista_error **err)
{
    _cleanup_free_ uint8_t *g = NULL;
    size_t n = 0;
    int r = read_attr(&g, &n, dfd, "generation", true, err);
    if (r < 0)
        return r;
    if (!g) {
        *out = -1;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol((const char *)g, &end, 10);
    if (errno || end == (char *)g)
        return err_set(err, -EPROTO, "configfs-tsm: generation is not a number");
    *out = v;
    return 0;
}

int ev__tsm_get(uint8_t **out, size_t *out_size, uint8_t **aux, size_t *aux_size,
                const char *provider, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                const ev_get_opts *opts, cista_error **err)
{
    const char *base = opts && opts->tsm_dir ? opts->tsm_dir : getenv("CISTA_TSM_DIR");
    if (!base || !*base)
        base = TSM_DEFAULT_DIR;
    _cleanup_close_ int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return err_set_sys(err, -errno, "configfs-tsm report directory %s", base);

    char name[64];
    unsigned rnd = 0;
    _cleanup_close_ int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (ufd < 0 || util_read_all(ufd, &rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
        rnd = (unsigned)getpid();
    snprintf(name, sizeof(name), "cista-%ld-%08x", (long)getpid(), rnd);
    if (mkdirat(bfd, name, 0700) < 0)
        return err_set_sys(err, -errno, "configfs-tsm: creating entry %s/%s", base, name);
    _cleanup_free_ char *entry = xasprintf("%s/%s", base, name);

    /* Everything the error path frees is declared before the first goto. */
    int r = 0;
    _cleanup_free_ uint8_t *prov = NULL, *ob = NULL, *ab = NULL;
    size_t prov_size = 0, ob_size = 0, ab_size = 0;
    long gen_before = 0, gen_after = 0;
    _cleanup_close_ int efd = openat(bfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (efd < 0) {
        r = err_set_sys(err, -errno, "configfs-tsm: opening entry %s", entry);
        goto out;
    }
    if (opts && opts->tsm_hook)
        opts->tsm_hook(entry, opts->tsm_hook_arg);

    r = read_attr(&prov, &prov_size, efd, "provider", false, err);
    if (r < 0)
        goto out;
    while (prov_size > 0 && (prov[prov_size - 1] == '\n' || prov[prov_size - 1] == 0))
        prov[--prov_size] = 0;
    if (strcmp((const char *)prov, provider) != 0) {
        r = err_set(err, EV_E_NOTEE, "configfs-tsm: provider is \"%s\", expected \"%s\"",
                    (const char *)prov, provider);
        goto out;
    }
    if (opts && opts->privlevel >= 0) {
        char lvl[16];
        int n = snprintf(lvl, sizeof(lvl), "%d\n", opts->privlevel);
        r = write_attr(efd, "privlevel", lvl, (size_t)n, err);
        if (r < 0)
            goto out;
    }
    r = write_attr(efd, "inblob", report_data, EV_REPORT_DATA_SIZE, err);
    if (r < 0)
        goto out;
    r = read_generation(&gen_before, efd, err);
    if (r < 0)
        goto out;
    r = read_attr(&ob, &ob_size, efd, "outblob", false, err);
    if (r < 0)
        goto out;
    r = read_attr(&ab, &ab_size, efd, "auxblob", true, err);
    if (r < 0)
        goto out;
    r = read_generation(&gen_after, efd, err);
    if (r < 0)
        goto out;
    if (gen_before != gen_after) {
        r = err_set(err, -EAGAIN,
                    "configfs-tsm: entry %s changed while reading (generation %ld -> %ld); "
                    "another writer raced us, retry",
                    entry, gen_before, gen_after);
        goto out;
    }
    if (ob_size == 0) {
        r = err_set(err, -EPROTO, "configfs-tsm: outblob of %s is empty", entry);
        goto out;
    }
    *out = steal_ptr(&ob);
    *out_size = ob_size;
    *aux = steal_ptr(&ab);
    *aux_size = ab_size;
out:
    /* On configfs, rmdir removes the entry with its attributes. */
    if (unlinkat(bfd, name, AT_REMOVEDIR) < 0)
        log_debug("configfs-tsm: removing %s: %s", entry, strerror(errno));
    return r;
}
