/*
 * anchor.c - rollback anchors: the trusted {generation, root} of a volume.
 *
 * The file anchor keeps one small text file, written atomically (temp file,
 * fsync, rename, directory fsync) and MACed with HMAC-SHA256 under a key
 * derived from the volume key, so only the volume's key holder can produce
 * a valid anchor and an anchor of another volume is rejected. The file must
 * live where the host cannot roll it back (TEE tmpfs, sealed storage);
 * otherwise use the KBS anchor.
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
#include "util/codec.h"
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

/*
 * KBS anchor hook. The design: the anchor is a KBS resource
 * (repo/volume-anchor/<volume id>) holding {generation, root}; reading it
 * needs the attested workload's token, advancing it is a compare-and-set the
 * KBS resource policy allows only to that workload. It plugs in here as a
 * second vol_anchor_ops once src/kbs/client.h exposes a resource
 * compare-and-set.
 */
int vol_anchor_kbs_new(vol_anchor **out, const char *kbs_url, const char *resource,
                       cista_error **err)
{
    *out = NULL;
    return err_set(err, -ENOTSUP,
                   "KBS rollback anchor (%s, resource %s) is not available in this build: the "
                   "KBS client has no counter resource yet; use --anchor FILE",
                   kbs_url ? kbs_url : "?", resource ? resource : "?");
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
