/*
 * anchor.c - rollback anchors: the trusted {generation, root} of a volume.
 *
 * The file anchor keeps one small text file, written atomically (temp file,
 * fsync, rename, directory fsync) and MACed with HMAC-SHA256 under a key
 * derived from the volume key, so only the volume's key holder can produce
 * a valid anchor and an anchor of another volume is rejected. The file must
 * live where the host cannot roll it back (TEE tmpfs, sealed storage);
 * otherwise use the KBS anchor.
 *
 * The KBS anchor keeps the pair in a counter resource on the broker, which
 * only the workload that attests (and that the release policy of the counter
 * path admits) can read or advance; every advance is a compare-and-set from
 * the generation this mount last confirmed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "kbs/client.h"
#include "kbs/kbs.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"
#include "volume/vol_int.h"

#define ANCHOR_MAX 1024

typedef struct file_anchor {
    char *path;
    uint8_t key[VOL_KEY_SIZE];
    uint8_t volume_id[VOL_ID_SIZE];
} file_anchor;

static void anchor_mac(uint8_t out[32], const file_anchor *a, uint64_t gen,
                       const uint8_t root[VOL_ROOT_SIZE])
{
    uint8_t msg[13 + VOL_ID_SIZE + 8 + VOL_ROOT_SIZE];
    memcpy(msg, "cista-anchor", 13);
    memcpy(msg + 13, a->volume_id, VOL_ID_SIZE);
    vol__put64(msg + 13 + VOL_ID_SIZE, gen);
    memcpy(msg + 13 + VOL_ID_SIZE + 8, root, VOL_ROOT_SIZE);
    _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, a->key, sizeof(a->key));
    crypto_hmac_update(m, msg, sizeof(msg));
    crypto_hmac_final(m, out);
}

static int fa_read(void *ctx, uint64_t *gen, uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    file_anchor *a = ctx;
    _cleanup_free_ char *text = NULL;
    size_t size = 0;
    cista_error *e2 = NULL;
    int r = util_read_file(&text, &size, a->path, ANCHOR_MAX, &e2);
    if (r == -ENOENT) {
        err_free(e2);
        return -ENOENT;
    }
    if (r < 0) {
        err_free(e2);
        return err_set_sys(err, r, "rollback anchor %s", a->path);
    }
    char id_hex[2 * VOL_ID_SIZE + 1], root_hex[2 * VOL_ROOT_SIZE + 1], mac_hex[65];
    unsigned long long g = 0;
    int consumed = 0;
    if (sscanf(text,
               "cista-volume-anchor 1\nvolume %32[0-9a-f]\ngeneration %20llu\nroot "
               "%64[0-9a-f]\nmac %64[0-9a-f]\n%n",
               id_hex, &g, root_hex, mac_hex, &consumed) != 4 ||
        (size_t)consumed != size || strlen(id_hex) != 32 || strlen(root_hex) != 64 ||
        strlen(mac_hex) != 64)
        return err_set(err, -EUCLEAN, "rollback anchor %s is malformed", a->path);
    uint8_t id[VOL_ID_SIZE], mac[32], want[32];
    if (hex_decode_to(id, sizeof(id), id_hex, err) < 0 ||
        hex_decode_to(root, VOL_ROOT_SIZE, root_hex, err) < 0 ||
        hex_decode_to(mac, sizeof(mac), mac_hex, err) < 0)
        return err_wrap(err, "rollback anchor %s", a->path);
    if (!crypto_memeq(id, a->volume_id, VOL_ID_SIZE))
        return err_set(err, -EUCLEAN, "rollback anchor %s belongs to volume %s, not this volume",
                       a->path, id_hex);
    anchor_mac(want, a, g, root);
    if (!crypto_memeq(want, mac, sizeof(mac)))
        return err_set(err, -EBADMSG,
                       "rollback anchor %s: MAC does not verify (modified, or made with "
                       "another key)",
                       a->path);
    *gen = g;
    return 0;
}

static int fa_advance(void *ctx, uint64_t gen, const uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    file_anchor *a = ctx;
    uint64_t cur = 0;
    uint8_t cur_root[VOL_ROOT_SIZE];
    cista_error *e2 = NULL;
    int r = fa_read(ctx, &cur, cur_root, &e2);
    err_free(e2);
    if (r == 0 && cur > gen)
        return err_set(err, -ESTALE,
                       "rollback anchor %s is at generation %" PRIu64
                       ", refusing to move it back to %" PRIu64,
                       a->path, cur, gen);
    uint8_t mac[32];
    anchor_mac(mac, a, gen, root);
    _cleanup_free_ char *id = hex_encode(a->volume_id, VOL_ID_SIZE);
    _cleanup_free_ char *rt = hex_encode(root, VOL_ROOT_SIZE);
    _cleanup_free_ char *mh = hex_encode(mac, sizeof(mac));
    _cleanup_free_ char *text =
        xasprintf("cista-volume-anchor 1\nvolume %s\ngeneration %" PRIu64 "\nroot %s\nmac %s\n", id,
                  gen, rt, mh);
    _cleanup_free_ char *dcopy = xstrdup(a->path);
    _cleanup_free_ char *bcopy = xstrdup(a->path);
    _cleanup_close_ int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "rollback anchor directory of %s", a->path);
    return util_write_file_atomic(dfd, basename(bcopy), text, strlen(text), 0600, err);
}

static const char *fa_describe(void *ctx)
{
    file_anchor *a = ctx;
    return a->path;
}

static void fa_free(void *ctx)
{
    file_anchor *a = ctx;
    if (!a)
        return;
    free(a->path);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    free(a);
}

static const vol_anchor_ops g_file_anchor_ops = {
    .read = fa_read,
    .advance = fa_advance,
    .describe = fa_describe,
    .free = fa_free,
};

vol_anchor *vol_anchor_file_new(const char *path, const uint8_t master_key[VOL_KEY_SIZE],
                                const uint8_t volume_id[VOL_ID_SIZE])
{
    file_anchor *a = xzalloc(sizeof(*a));
    a->path = xstrdup(path);
    memcpy(a->volume_id, volume_id, VOL_ID_SIZE);
    cista_error *e = NULL;
    if (vol__hkdf(a->key, sizeof(a->key), master_key, volume_id, "anchor", &e) < 0)
        abort(); /* HKDF-SHA256 is always available in OpenSSL 3 */
    vol_anchor *out = xmalloc(sizeof(*out));
    out->ops = &g_file_anchor_ops;
    out->ctx = a;
    return out;
}

/* ---------------------------------------------------------------------------
 * KBS anchor: a counter resource on the broker, read and advanced with the
 * attested workload's token (see vol_anchor_kbs_new() in volume.h).
 */
typedef struct kbs_anchor {
    kbs_client *cl;
    EVP_PKEY *key; /* the ephemeral key the token is bound to */
    const ev_ops *tee;
    char *url, *path, *sim_state, *tcti, *desc;
    bool has_host_data;
    uint8_t host_data[EV_HOST_DATA_SIZE];
    bool attested;
    bool known; /* known_gen/known_root hold what the broker last confirmed */
    uint64_t known_gen;
    uint8_t known_root[VOL_ROOT_SIZE];
} kbs_anchor;

static int ka_attest(kbs_anchor *a, cista_error **err)
{
    ev_get_opts go;
    ev_get_opts_init(&go);
    go.sim_state_dir = a->sim_state;
    go.tpm_tcti = a->tcti;
    if (a->has_host_data)
        go.host_data = a->host_data;
    int r;
    if (!a->key && (r = crypto_key_generate_ec(&a->key, "P-256", err)) < 0)
        return r;
    if ((r = kbs_client_attest(a->cl, a->tee, &go, a->key, NULL, err)) < 0)
        return err_wrap(err, "rollback anchor %s: attestation", a->desc);
    a->attested = true;
    log_info("volume: attested to KBS %s (TEE %s) for rollback anchor %s", a->url, a->tee->name,
             a->path);
    return 0;
}

/*
 * Run a counter request with a token: attest first when there is none, and once more when the
 * broker refuses the token (it expires; a policy refusal fails again and is returned).
 */
static int ka_get(kbs_anchor *a, kbs_counter_value *out, cista_error **err)
{
    int r;
    if (!a->attested && (r = ka_attest(a, err)) < 0)
        return r;
    r = kbs_client_counter_get(a->cl, out, a->path, err);
    if (r != -EACCES)
        return r;
    err_clear(err);
    if ((r = ka_attest(a, err)) < 0)
        return r;
    return kbs_client_counter_get(a->cl, out, a->path, err);
}

static int ka_cas(kbs_anchor *a, kbs_counter_value *cur, uint64_t expected, uint64_t gen,
                  const uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    int r;
    if (!a->attested && (r = ka_attest(a, err)) < 0)
        return r;
    r = kbs_client_counter_advance(a->cl, cur, a->path, expected, gen, root, VOL_ROOT_SIZE, err);
    if (r != -EACCES)
        return r;
    err_clear(err);
    if ((r = ka_attest(a, err)) < 0)
        return r;
    return kbs_client_counter_advance(a->cl, cur, a->path, expected, gen, root, VOL_ROOT_SIZE, err);
}

static int ka_read(void *ctx, uint64_t *gen, uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    kbs_anchor *a = ctx;
    kbs_counter_value cv;
    int r = ka_get(a, &cv, err);
    if (r == -ENOENT) {
        err_clear(err);
        a->known = true;
        a->known_gen = 0;
        memset(a->known_root, 0, VOL_ROOT_SIZE);
        return -ENOENT;
    }
    if (r < 0)
        return err_wrap(err, "rollback anchor %s", a->desc);
    if (cv.generation > 0 && cv.root_size != VOL_ROOT_SIZE)
        return err_set(err, -EUCLEAN,
                       "rollback anchor %s holds a root of %zu bytes at generation %" PRIu64
                       ", not a %d-byte volume root; it is not this volume's counter (reset it "
                       "with `cista kbs admin counter-reset`)",
                       a->desc, cv.root_size, cv.generation, VOL_ROOT_SIZE);
    memset(root, 0, VOL_ROOT_SIZE);
    if (cv.root_size == VOL_ROOT_SIZE)
        memcpy(root, cv.root, VOL_ROOT_SIZE);
    *gen = cv.generation;
    a->known = true;
    a->known_gen = cv.generation;
    memcpy(a->known_root, root, VOL_ROOT_SIZE);
    return 0;
}

static int ka_advance(void *ctx, uint64_t gen, const uint8_t root[VOL_ROOT_SIZE], cista_error **err)
{
    kbs_anchor *a = ctx;
    int r;
    if (!a->known) {
        uint64_t g;
        uint8_t rt[VOL_ROOT_SIZE];
        if ((r = ka_read(a, &g, rt, err)) < 0 && r != -ENOENT)
            return r;
    }
    if (gen == a->known_gen && crypto_memeq(root, a->known_root, VOL_ROOT_SIZE))
        return 0;
    if (gen <= a->known_gen)
        return err_set(err, -ESTALE,
                       "rollback anchor %s is at generation %" PRIu64
                       ", refusing to move it to %" PRIu64,
                       a->desc, a->known_gen, gen);
    kbs_counter_value cur;
    memset(&cur, 0, sizeof(cur));
    r = ka_cas(a, &cur, a->known_gen, gen, root, err);
    if (r == -ESTALE && cur.generation == gen && cur.root_size == VOL_ROOT_SIZE &&
        crypto_memeq(cur.root, root, VOL_ROOT_SIZE)) {
        /* Our earlier advance went through but its reply was lost. */
        err_clear(err);
        r = 0;
    }
    if (r == -ESTALE) {
        _cleanup_free_ char *why = err ? err_str(*err) : xstrdup("");
        err_clear(err);
        log_error("volume: rollback anchor %s moved to generation %" PRIu64
                  " behind this mount's back (expected %" PRIu64 ")",
                  a->desc, cur.generation, a->known_gen);
        return err_set(err, -ESTALE,
                       "rollback anchor %s is at generation %" PRIu64 ", not %" PRIu64
                       " as this mount left it: another writer advanced it (the volume is "
                       "mounted twice, or this copy was replaced); %s",
                       a->desc, cur.generation, a->known_gen, why);
    }
    if (r < 0)
        return err_wrap(err, "rollback anchor %s", a->desc);
    a->known_gen = gen;
    memcpy(a->known_root, root, VOL_ROOT_SIZE);
    return 0;
}

static const char *ka_describe(void *ctx)
{
    kbs_anchor *a = ctx;
    return a->desc;
}

static void ka_free(void *ctx)
{
    kbs_anchor *a = ctx;
    if (!a)
        return;
    kbs_client_free(a->cl);
    EVP_PKEY_free(a->key);
    free(a->url);
    free(a->path);
    free(a->sim_state);
    free(a->tcti);
    free(a->desc);
    free(a);
}

static const vol_anchor_ops g_kbs_anchor_ops = {
    .read = ka_read,
    .advance = ka_advance,
    .describe = ka_describe,
    .free = ka_free,
};

int vol_anchor_kbs_new(vol_anchor **out, const vol_kbs_anchor_opts *o, cista_error **err)
{
    *out = NULL;
    if (!o || !o->url || !o->path || !o->tee)
        return err_set(err, -EINVAL, "KBS rollback anchor: URL, counter path and TEE are needed");
    const ev_ops *tee = ev_find(o->tee);
    if (!tee || (strcmp(o->tee, "sim") && strcmp(o->tee, "tpm")))
        return err_set(err, -EINVAL,
                       "KBS rollback anchor: TEE \"%s\" is not supported here (sim or tpm)",
                       o->tee);
    int r = kbs_check_resource_path(o->path, err);
    if (r < 0)
        return err_wrap(err, "KBS rollback anchor");
    kbs_anchor *a = xzalloc(sizeof(*a));
    kbs_client_opts co = {.url = o->url, .ca_file = o->ca_file, .timeout = o->timeout};
    if ((r = kbs_client_new(&a->cl, &co, err)) < 0) {
        ka_free(a);
        return err_wrap(err, "KBS rollback anchor %s", o->url);
    }
    a->tee = tee;
    a->url = xstrdup(o->url);
    a->path = xstrdup(o->path);
    a->sim_state = o->sim_state ? xstrdup(o->sim_state) : NULL;
    a->tcti = o->tpm_tcti ? xstrdup(o->tpm_tcti) : NULL;
    if (o->host_data) {
        memcpy(a->host_data, o->host_data, sizeof(a->host_data));
        a->has_host_data = true;
    }
    a->desc = xasprintf("kbs:%s/%s", o->url, o->path);
    vol_anchor *va = xmalloc(sizeof(*va));
    va->ops = &g_kbs_anchor_ops;
    va->ctx = a;
    *out = va;
    return 0;
}

int vol_anchor_kbs_parse(char **out_url, char **out_path, const char *spec, cista_error **err)
{
    *out_url = NULL;
    *out_path = NULL;
    static const char pfx[] = "kbs:";
    if (strncmp(spec, pfx, strlen(pfx)) != 0)
        return err_set(err, -EINVAL, "anchor \"%s\" does not start with kbs:", spec);
    const char *u = spec + strlen(pfx);
    const char *scheme = strstr(u, "://");
    if (!scheme || (strncmp(u, "https://", 8) && strncmp(u, "http://", 7)))
        return err_set(err, -EINVAL, "anchor \"%s\" must be kbs:https://HOST:PORT/repo/type/tag",
                       spec);
    const char *slash = strchr(scheme + 3, '/');
    if (!slash || slash == scheme + 3)
        return err_set(err, -EINVAL,
                       "anchor \"%s\" has no counter path: kbs:https://HOST:PORT/repo/type/tag",
                       spec);
    cista_error *e2 = NULL;
    if (kbs_check_resource_path(slash + 1, &e2) < 0) {
        _cleanup_free_ char *why = err_str(e2);
        err_free(e2);
        return err_set(err, -EINVAL, "anchor \"%s\": %s", spec, why);
    }
    *out_url = xstrndup(u, (size_t)(slash - u));
    *out_path = xstrdup(slash + 1);
    return 0;
}

void vol_anchor_free(vol_anchor *a)
{
    if (!a)
        return;
    if (a->ops->free)
        a->ops->free(a->ctx);
    free(a);
}

int vol_rollback_parse(vol_rollback_mode *out, const char *s)
{
    if (strcmp(s, "strict") == 0)
        *out = VOL_ROLLBACK_STRICT;
    else if (strcmp(s, "reset") == 0)
        *out = VOL_ROLLBACK_RESET;
    else if (strcmp(s, "off") == 0)
        *out = VOL_ROLLBACK_OFF;
    else
        return -EINVAL;
    return 0;
}
