/*
 * format.c - byte encodings of the volume format (docs/volume-format.md):
 * key derivation, the AES-GCM context, block references, tree nodes, inode
 * records, superblocks and directory blobs. Parsers read field by field at
 * explicit offsets and reject anything the encoder would not produce.
 */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <string.h>
#include <sys/stat.h>

#include "crypto/crypto.h"
#include "util/codec.h"
#include "util/util.h"
#include "volume/vol_int.h"

/* ---- keys ---- */

int vol__hkdf(uint8_t *out, size_t out_size, const uint8_t master[VOL_KEY_SIZE],
              const uint8_t volume_id[VOL_ID_SIZE], const char *label, cista_error **err)
{
    char info[96];
    int n = snprintf(info, sizeof(info), "cista/volume/v1/%s", label);
    if (n < 0 || (size_t)n >= sizeof(info))
        return err_set(err, -EINVAL, "HKDF label %s too long", label);
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (!kdf)
        return err_set_ssl(err, -EIO, "HKDF is not available in this OpenSSL");
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!kctx)
        return err_set_ssl(err, -ENOMEM, "HKDF context");
    OSSL_PARAM params[5];
    size_t i = 0;
    params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[i++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master, VOL_KEY_SIZE);
    params[i++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)volume_id, VOL_ID_SIZE);
    params[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, (size_t)n);
    params[i] = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(kctx, out, out_size, params);
    EVP_KDF_CTX_free(kctx);
    if (ok != 1)
        return err_set_ssl(err, -EIO, "HKDF-SHA256 derivation of the %s key failed", label);
    return 0;
}

int vol__derive_keys(vol_keys *out, const uint8_t master[VOL_KEY_SIZE],
                     const uint8_t volume_id[VOL_ID_SIZE], cista_error **err)
{
    int r;
    if ((r = vol__hkdf(out->data, VOL_KEY_SIZE, master, volume_id, "data", err)) < 0 ||
        (r = vol__hkdf(out->meta, VOL_KEY_SIZE, master, volume_id, "meta", err)) < 0 ||
        (r = vol__hkdf(out->super, VOL_KEY_SIZE, master, volume_id, "super", err)) < 0 ||
        (r = vol__hkdf(out->name, VOL_KEY_SIZE, master, volume_id, "name", err)) < 0 ||
        (r = vol__hkdf(out->anchor, VOL_KEY_SIZE, master, volume_id, "anchor", err)) < 0 ||
        (r = vol__hkdf(out->check, sizeof(out->check), master, volume_id, "key-check", err)) < 0) {
        OPENSSL_cleanse(out, sizeof(*out));
        return r;
    }
    return 0;
}

/* ---- AES-256-GCM ---- */

int vol__gcm_init(vol_gcm *g, const uint8_t key[VOL_KEY_SIZE], cista_error **err)
{
    g->enc = EVP_CIPHER_CTX_new();
    g->dec = EVP_CIPHER_CTX_new();
    if (!g->enc || !g->dec ||
        EVP_EncryptInit_ex(g->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_SET_IVLEN, VOL_NONCE_SIZE, NULL) != 1 ||
        EVP_EncryptInit_ex(g->enc, NULL, NULL, key, NULL) != 1 ||
        EVP_DecryptInit_ex(g->dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_IVLEN, VOL_NONCE_SIZE, NULL) != 1 ||
        EVP_DecryptInit_ex(g->dec, NULL, NULL, key, NULL) != 1) {
        vol__gcm_free(g);
        return err_set_ssl(err, -EIO, "AES-256-GCM context setup failed");
    }
    return 0;
}

void vol__gcm_free(vol_gcm *g)
{
    EVP_CIPHER_CTX_free(g->enc);
    EVP_CIPHER_CTX_free(g->dec);
    g->enc = g->dec = NULL;
}

int vol__gcm_seal(vol_gcm *g, const uint8_t nonce[VOL_NONCE_SIZE], const uint8_t *aad,
                  size_t aad_size, const uint8_t *pt, size_t size, uint8_t *ct,
                  uint8_t tag[VOL_TAG_SIZE])
{
    int n = 0;
    if (EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(g->enc, NULL, &n, aad, (int)aad_size) != 1 ||
        EVP_EncryptUpdate(g->enc, ct, &n, pt, (int)size) != 1 ||
        EVP_EncryptFinal_ex(g->enc, ct + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, VOL_TAG_SIZE, tag) != 1)
        return -EIO;
    return 0;
}

int vol__gcm_open(vol_gcm *g, const uint8_t nonce[VOL_NONCE_SIZE], const uint8_t *aad,
                  size_t aad_size, const uint8_t *ct, size_t size, uint8_t *pt,
                  const uint8_t tag[VOL_TAG_SIZE])
{
    int n = 0;
    if (EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(g->dec, NULL, &n, aad, (int)aad_size) != 1 ||
        EVP_DecryptUpdate(g->dec, pt, &n, ct, (int)size) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, VOL_TAG_SIZE, (void *)tag) != 1)
        return -EIO;
    if (EVP_DecryptFinal_ex(g->dec, pt + n, &n) != 1) {
        OPENSSL_cleanse(pt, size);
        return -EBADMSG;
    }
    return 0;
}

void vol__object_name(char out[33], const uint8_t name_key[VOL_KEY_SIZE], uint64_t oid)
{
    uint8_t msg[11] = {'o', 'b', 'j'};
    vol__put64(msg + 3, oid);
    uint8_t mac[32];
    _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, name_key, VOL_KEY_SIZE);
    crypto_hmac_update(m, msg, sizeof(msg));
    crypto_hmac_final(m, mac);
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < 16; i++) {
        out[2 * i] = hx[mac[i] >> 4];
        out[2 * i + 1] = hx[mac[i] & 15];
    }
    out[32] = '\0';
}

/* ---- refs and nodes ---- */

void vol__ref_put(uint8_t *p, const vol_ref *r)
{
    vol__put64(p, r->gen);
    vol__put32(p + 8, r->flags);
    memcpy(p + 12, r->nonce, VOL_NONCE_SIZE);
    memcpy(p + 24, r->tag, VOL_TAG_SIZE);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int vol__ref_get(vol_ref *out, const uint8_t *p, uint64_t max_gen, cista_error **err)
{
    out->gen = vol__get64(p);
    out->flags = vol__get32(p + 8);
    memcpy(out->nonce, p + 12, VOL_NONCE_SIZE);
    memcpy(out->tag, p + 24, VOL_TAG_SIZE);
    if (out->gen == 0) {
        if (!all_zero(p, VOL_REF_SIZE))
            return err_set(err, -EUCLEAN, "block reference: a hole must be all zero");
        return 0;
    }
    if (out->flags & ~VOL_REF_SLOT)
        return err_set(err, -EUCLEAN, "block reference: unknown flags 0x%x", out->flags);
    if (out->gen > max_gen)
        return err_set(err, -EUCLEAN,
                       "block reference: generation %llu is newer than its container (%llu)",
                       (unsigned long long)out->gen, (unsigned long long)max_gen);
    return 0;
}

void vol__node_put(uint8_t out[VOL_BLOCK_SIZE], const vol_ref *refs)
{
    for (size_t i = 0; i < VOL_FANOUT; i++)
        vol__ref_put(out + i * VOL_REF_SIZE, &refs[i]);
    memset(out + VOL_FANOUT * VOL_REF_SIZE, 0, VOL_BLOCK_SIZE - VOL_FANOUT * VOL_REF_SIZE);
}

int vol__node_get(vol_ref *refs, const uint8_t *in, size_t size, uint64_t max_gen,
                  cista_error **err)
{
    if (size != VOL_BLOCK_SIZE)
        return err_set(err, -EUCLEAN, "tree node: %zu bytes, expected %u", size, VOL_BLOCK_SIZE);
    if (!all_zero(in + VOL_FANOUT * VOL_REF_SIZE, VOL_BLOCK_SIZE - VOL_FANOUT * VOL_REF_SIZE))
        return err_set(err, -EUCLEAN, "tree node: padding is not zero");
    for (size_t i = 0; i < VOL_FANOUT; i++) {
        int r = vol__ref_get(&refs[i], in + i * VOL_REF_SIZE, max_gen, err);
        if (r < 0)
            return err_wrap(err, "tree node entry %zu", i);
    }
    return 0;
}

/* ---- inode records ----
 * 0 flags u32 | 4 mode | 8 uid | 12 gid | 16 nlink | 20 rdev | 24 size u64 |
 * 32 atime s i64 | 40 atime ns u32 | 44 mtime ns u32 | 48 mtime s | 56 ctime s |
 * 64 ctime ns u32 | 68 depth u32 | 72 root ref (40) | 112 parent u64 | 120 zero (8)
 */
void vol__rec_put(uint8_t out[VOL_REC_SIZE], const vol_rec *r)
{
    memset(out, 0, VOL_REC_SIZE);
    vol__put32(out + 0, r->flags);
    vol__put32(out + 4, r->mode);
    vol__put32(out + 8, r->uid);
    vol__put32(out + 12, r->gid);
    vol__put32(out + 16, r->nlink);
    vol__put32(out + 20, r->rdev);
    vol__put64(out + 24, r->size);
    vol__put64(out + 32, (uint64_t)r->atime.tv_sec);
    vol__put32(out + 40, (uint32_t)r->atime.tv_nsec);
    vol__put32(out + 44, (uint32_t)r->mtime.tv_nsec);
    vol__put64(out + 48, (uint64_t)r->mtime.tv_sec);
    vol__put64(out + 56, (uint64_t)r->ctime.tv_sec);
    vol__put32(out + 64, (uint32_t)r->ctime.tv_nsec);
    vol__put32(out + 68, r->depth);
    vol__ref_put(out + 72, &r->root);
    vol__put64(out + 112, r->parent);
}

static bool mode_ok(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFIFO:
    case S_IFSOCK:
    case S_IFCHR:
    case S_IFBLK:
        return (mode & ~(uint32_t)(S_IFMT | 07777)) == 0;
    default:
        return false;
    }
}

int vol__rec_get(vol_rec *out, const uint8_t *in, size_t size, uint64_t max_gen, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (size != VOL_REC_SIZE)
        return err_set(err, -EUCLEAN, "inode record: %zu bytes, expected %u", size, VOL_REC_SIZE);
    out->flags = vol__get32(in);
    if (out->flags == 0) {
        if (!all_zero(in, VOL_REC_SIZE))
            return err_set(err, -EUCLEAN, "inode record: a free record must be all zero");
        return 0;
    }
    if (out->flags != VOL_REC_INUSE)
        return err_set(err, -EUCLEAN, "inode record: unknown flags 0x%x", out->flags);
    out->mode = vol__get32(in + 4);
    out->uid = vol__get32(in + 8);
    out->gid = vol__get32(in + 12);
    out->nlink = vol__get32(in + 16);
    out->rdev = vol__get32(in + 20);
    out->size = vol__get64(in + 24);
    out->atime.tv_sec = (time_t)vol__get64(in + 32);
    out->atime.tv_nsec = vol__get32(in + 40);
    out->mtime.tv_nsec = vol__get32(in + 44);
    out->mtime.tv_sec = (time_t)vol__get64(in + 48);
    out->ctime.tv_sec = (time_t)vol__get64(in + 56);
    out->ctime.tv_nsec = vol__get32(in + 64);
    out->depth = vol__get32(in + 68);
    out->parent = vol__get64(in + 112);
    if (!mode_ok(out->mode))
        return err_set(err, -EUCLEAN, "inode record: invalid mode 0%o", out->mode);
    if (out->size > VOL_MAX_FILE_SIZE)
        return err_set(err, -EUCLEAN, "inode record: size %llu exceeds the 1 TiB maximum",
                       (unsigned long long)out->size);
    if (out->depth > VOL_MAX_DEPTH)
        return err_set(err, -EUCLEAN, "inode record: tree depth %u exceeds %u", out->depth,
                       VOL_MAX_DEPTH);
    if (out->atime.tv_nsec >= 1000000000 || out->mtime.tv_nsec >= 1000000000 ||
        out->ctime.tv_nsec >= 1000000000)
        return err_set(err, -EUCLEAN, "inode record: nanoseconds out of range");
    if (S_ISDIR(out->mode) && out->size > VOL_DIR_MAX_SIZE)
        return err_set(err, -EUCLEAN, "inode record: directory of %llu bytes exceeds %u",
                       (unsigned long long)out->size, VOL_DIR_MAX_SIZE);
    if (S_ISLNK(out->mode) && (out->size == 0 || out->size > VOL_SYMLINK_MAX))
        return err_set(err, -EUCLEAN, "inode record: symlink target of %llu bytes",
                       (unsigned long long)out->size);
    if (!all_zero(in + 120, 8))
        return err_set(err, -EUCLEAN, "inode record: reserved bytes are not zero");
    int r = vol__ref_get(&out->root, in + 72, max_gen, err);
    if (r < 0)
        return err_wrap(err, "inode record root");
    return 0;
}

/* ---- superblock ----
 * Header (authenticated as AAD): 0 magic "CISTAVOL" | 8 version u32 | 12 flags u32 |
 * 16 volume id (16) | 32 key check (16) | 48 generation u64 | 56 nonce (12) |
 * 68 body size u32 (= 128).
 * 72 body (128, AES-256-GCM with the super key) | 200 tag (16) | 216.. zero.
 * Body: 0 itable root ref (40) | 40 itable depth u32 | 44 zero u32 | 48 itable size u64 |
 * 56 next ino u64 | 64 mount epoch u32 | 68 zero u32 | 72 created i64 | 80.. zero.
 */
int vol__sb_seal(uint8_t out[VOL_SB_SLOT_SIZE], const vol_sb *sb, vol_gcm *super_gcm,
                 const uint8_t nonce[VOL_NONCE_SIZE], cista_error **err)
{
    memset(out, 0, VOL_SB_SLOT_SIZE);
    memcpy(out, VOL_MAGIC, 8);
    vol__put32(out + 8, VOL_VERSION);
    vol__put32(out + 12, 0);
    memcpy(out + 16, sb->volume_id, VOL_ID_SIZE);
    memcpy(out + 32, sb->key_check, 16);
    vol__put64(out + 48, sb->generation);
    memcpy(out + 56, nonce, VOL_NONCE_SIZE);
    vol__put32(out + 68, VOL_SB_BODY_SIZE);
    uint8_t body[VOL_SB_BODY_SIZE] = {0};
    vol__ref_put(body, &sb->itable_root);
    vol__put32(body + 40, sb->itable_depth);
    vol__put64(body + 48, sb->itable_size);
    vol__put64(body + 56, sb->next_ino);
    vol__put32(body + 64, sb->mount_epoch);
    vol__put64(body + 72, (uint64_t)sb->created);
    int r = vol__gcm_seal(super_gcm, nonce, out, VOL_SB_HDR_SIZE, body, sizeof(body),
                          out + VOL_SB_HDR_SIZE, out + VOL_SB_HDR_SIZE + VOL_SB_BODY_SIZE);
    OPENSSL_cleanse(body, sizeof(body));
    if (r < 0)
        return err_set_ssl(err, r, "sealing the superblock failed");
    return 0;
}

int vol__sb_header(vol_sb *out, const uint8_t *in, size_t size, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (size < VOL_SB_USED)
        return err_set(err, -EUCLEAN, "superblock: %zu bytes, expected at least %u", size,
                       VOL_SB_USED);
    if (memcmp(in, VOL_MAGIC, 8) != 0)
        return err_set(err, -EUCLEAN, "superblock: bad magic (not a cista volume)");
    uint32_t version = vol__get32(in + 8);
    if (version != VOL_VERSION)
        return err_set(err, -EPROTONOSUPPORT, "superblock: format version %u, this cista reads %u",
                       version, VOL_VERSION);
    if (vol__get32(in + 12) != 0)
        return err_set(err, -EUCLEAN, "superblock: unknown flags 0x%x", vol__get32(in + 12));
    memcpy(out->volume_id, in + 16, VOL_ID_SIZE);
    memcpy(out->key_check, in + 32, 16);
    out->generation = vol__get64(in + 48);
    if (out->generation == 0)
        return err_set(err, -EUCLEAN, "superblock: generation 0");
    if (vol__get32(in + 68) != VOL_SB_BODY_SIZE)
        return err_set(err, -EUCLEAN, "superblock: body size %u, expected %u", vol__get32(in + 68),
                       VOL_SB_BODY_SIZE);
    if (!all_zero(in + VOL_SB_USED, size - VOL_SB_USED))
        return err_set(err, -EUCLEAN, "superblock: bytes after the tag are not zero");
    return 0;
}

int vol__sb_open(vol_sb *out, const uint8_t *in, size_t size, vol_gcm *super_gcm, cista_error **err)
{
    int r = vol__sb_header(out, in, size, err);
    if (r < 0)
        return r;
    uint8_t body[VOL_SB_BODY_SIZE];
    r = vol__gcm_open(super_gcm, in + 56, in, VOL_SB_HDR_SIZE, in + VOL_SB_HDR_SIZE,
                      VOL_SB_BODY_SIZE, body, in + VOL_SB_HDR_SIZE + VOL_SB_BODY_SIZE);
    if (r < 0)
        return err_set(err, -EBADMSG,
                       "superblock generation %llu: the GCM tag does not verify (torn write, "
                       "tampering, or another volume's key)",
                       (unsigned long long)out->generation);
    r = vol__ref_get(&out->itable_root, body, out->generation, err);
    if (r < 0)
        goto fail;
    out->itable_depth = vol__get32(body + 40);
    out->itable_size = vol__get64(body + 48);
    out->next_ino = vol__get64(body + 56);
    out->mount_epoch = vol__get32(body + 64);
    out->created = (int64_t)vol__get64(body + 72);
    if (out->itable_depth > VOL_MAX_DEPTH || vol__get32(body + 44) != 0 ||
        vol__get32(body + 68) != 0 || !all_zero(body + 80, VOL_SB_BODY_SIZE - 80)) {
        r = err_set(err, -EUCLEAN, "superblock body: reserved field or depth out of range");
        goto fail;
    }
    if (out->itable_size > VOL_MAX_FILE_SIZE || out->itable_size % VOL_REC_SIZE != 0 ||
        out->next_ino <= VOL_ROOT_INO || out->next_ino > VOL_MAX_FILE_SIZE / VOL_REC_SIZE ||
        out->itable_size > out->next_ino * VOL_REC_SIZE) {
        r = err_set(err, -EUCLEAN,
                    "superblock body: inode table size %llu / next inode %llu "
                    "inconsistent",
                    (unsigned long long)out->itable_size, (unsigned long long)out->next_ino);
        goto fail;
    }
    OPENSSL_cleanse(body, sizeof(body));
    return 0;
fail:
    OPENSSL_cleanse(body, sizeof(body));
    return r;
}

void vol__sb_root(uint8_t out[VOL_ROOT_SIZE], const uint8_t *slot)
{
    crypto_hash_oneshot(CRYPTO_SHA256, slot, VOL_SB_USED, out);
}

/* ---- directories ---- */

bool vol__name_ok(const char *name, size_t len)
{
    if (len == 0 || len > VOL_NAME_MAX)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    return memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

int vol__dir_parse(const uint8_t *data, size_t size, vol_dirent_cb cb, void *arg, cista_error **err)
{
    if (size > VOL_DIR_MAX_SIZE)
        return err_set(err, -EUCLEAN, "directory: %zu bytes exceeds %u", size, VOL_DIR_MAX_SIZE);
    size_t off = 0;
    while (off < size) {
        if (size - off < 10)
            return err_set(err, -EUCLEAN, "directory: truncated entry at byte %zu", off);
        uint64_t ino = vol__get64(data + off);
        uint8_t type = data[off + 8];
        size_t len = data[off + 9];
        if (size - off - 10 < len)
            return err_set(err, -EUCLEAN, "directory: name at byte %zu runs past the end", off);
        const char *name = (const char *)data + off + 10;
        if (!vol__name_ok(name, len))
            return err_set(err, -EUCLEAN, "directory: invalid name at byte %zu", off);
        if (ino <= VOL_ROOT_INO || ino >= VOL_MAX_FILE_SIZE / VOL_REC_SIZE)
            return err_set(err, -EUCLEAN, "directory: inode %llu out of range at byte %zu",
                           (unsigned long long)ino, off);
        if (!mode_ok((uint32_t)type << 12))
            return err_set(err, -EUCLEAN, "directory: invalid type %u at byte %zu", type, off);
        if (cb) {
            int r = cb(arg, ino, type, name, len);
            if (r < 0)
                return err_set(err, r, "directory: entry at byte %zu rejected", off);
        }
        off += 10 + len;
    }
    return 0;
}

/* ---- public parsers for the fuzz target ---- */

int vol_parse_superblock(vol_info *out, const uint8_t *data, size_t size,
                         const uint8_t *master_key_or_null, cista_error **err)
{
    vol_sb sb;
    memset(out, 0, sizeof(*out));
    int r = vol__sb_header(&sb, data, size, err);
    if (r < 0)
        return r;
    if (master_key_or_null) {
        vol_keys k;
        r = vol__derive_keys(&k, master_key_or_null, sb.volume_id, err);
        if (r < 0)
            return r;
        out->key_ok = crypto_memeq(k.check, sb.key_check, sizeof(k.check));
        if (!out->key_ok) {
            OPENSSL_cleanse(&k, sizeof(k));
            return err_set(err, -EKEYREJECTED,
                           "wrong key: the superblock's key check value "
                           "does not match this key");
        }
        vol_gcm g = {0};
        r = vol__gcm_init(&g, k.super, err);
        OPENSSL_cleanse(&k, sizeof(k));
        if (r < 0)
            return r;
        r = vol__sb_open(&sb, data, size, &g, err);
        vol__gcm_free(&g);
        if (r < 0)
            return r;
        out->next_ino = sb.next_ino;
        out->mount_epoch = sb.mount_epoch;
        out->created = sb.created;
    }
    memcpy(out->volume_id, sb.volume_id, VOL_ID_SIZE);
    out->version = VOL_VERSION;
    out->generation = sb.generation;
    if (size >= VOL_SB_USED)
        vol__sb_root(out->root, data);
    return 0;
}

int vol_parse_inode(const uint8_t *data, size_t size, cista_error **err)
{
    vol_rec rec;
    return vol__rec_get(&rec, data, size, UINT64_MAX, err);
}

int vol_parse_dir(const uint8_t *data, size_t size, cista_error **err)
{
    return vol__dir_parse(data, size, NULL, NULL, err);
}

int vol_parse_node(const uint8_t *data, size_t size, cista_error **err)
{
    vol_ref refs[VOL_FANOUT];
    return vol__node_get(refs, data, size, UINT64_MAX, err);
}
