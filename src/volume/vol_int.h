/*
 * vol_int.h - what the volume's .c files share: on-disk encodings
 * (format.c), key derivation and the AES-GCM context (format.c), and the
 * in-memory structures of an open volume (volume.c, fsck in volume.c).
 * Not a public API; docs/volume-format.md is the byte-level specification.
 */
#ifndef CISTA_VOL_INT_H
#define CISTA_VOL_INT_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "volume/volume.h"

#define VOL_MAGIC "CISTAVOL"
#define VOL_VERSION 1u
#define VOL_REF_SIZE 40u
#define VOL_FANOUT 102u /* refs per tree node: 102 * 40 = 4080 bytes + 16 zero */
#define VOL_MAX_DEPTH 5u
#define VOL_MAX_BLOCKS (VOL_MAX_FILE_SIZE / VOL_BLOCK_SIZE) /* 2^28 */
#define VOL_REC_SIZE 128u
#define VOL_SB_SLOT_SIZE 4096u
#define VOL_SB_HDR_SIZE 72u
#define VOL_SB_BODY_SIZE 128u
#define VOL_SB_USED (VOL_SB_HDR_SIZE + VOL_SB_BODY_SIZE + 16u) /* 216 */
#define VOL_NONCE_SIZE 12u
#define VOL_TAG_SIZE 16u
#define VOL_AAD_SIZE 48u
#define VOL_DIR_MAX_SIZE (64u << 20)
#define VOL_SYMLINK_MAX 4095u
#define VOL_SB_OBJECT "superblock"
#define VOL_ITABLE_OID 0u

/* Physical layout inside one backing object. */
#define VOL_SLOT_STRIDE (UINT64_C(1) << 40) /* data slot s starts at s * 2^40 */
#define VOL_TREE_BASE (UINT64_C(1) << 41)   /* tree nodes from 2^41 */

/* Block kinds, bound in the AAD (and choosing the key). */
enum { VOL_KIND_DATA = 0, VOL_KIND_META = 1, VOL_KIND_NODE = 2 };

/* Inode record flag: record in use. */
#define VOL_REC_INUSE 1u

#define VOL_REF_SLOT 1u /* ref flag: the block lives in slot 1 */

/* A reference to one encrypted block or node: all-zero (gen 0) is a hole. */
typedef struct vol_ref {
    uint64_t gen;
    uint32_t flags;
    uint8_t nonce[VOL_NONCE_SIZE];
    uint8_t tag[VOL_TAG_SIZE];
} vol_ref;

static inline bool vol__ref_present(const vol_ref *r)
{
    return r->gen != 0;
}

/* Little-endian field access. */
static inline void vol__put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void vol__put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void vol__put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t vol__get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t vol__get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t vol__get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- keys (format.c) ---- */
typedef struct vol_keys {
    uint8_t data[VOL_KEY_SIZE];
    uint8_t meta[VOL_KEY_SIZE];
    uint8_t super[VOL_KEY_SIZE];
    uint8_t name[VOL_KEY_SIZE];
    uint8_t anchor[VOL_KEY_SIZE];
    uint8_t check[16]; /* key check value stored in the superblock header */
} vol_keys;

/* HKDF-SHA256(master, salt = volume id, info = "cista/volume/v1/" label). */
/*
 * The calling thread's 1 MiB read buffer, aligned for direct I/O (part of the
 * thread's huge-page region; cleansed and freed when the thread exits).
 */
uint8_t *vol__thread_read_buffer(void);

int vol__hkdf(uint8_t *out, size_t out_size, const uint8_t master[VOL_KEY_SIZE],
              const uint8_t volume_id[VOL_ID_SIZE], const char *label, cista_error **err);
int vol__derive_keys(vol_keys *out, const uint8_t master[VOL_KEY_SIZE],
                     const uint8_t volume_id[VOL_ID_SIZE], cista_error **err);

/* AES-256-GCM with the key schedule set up once (one context per key). */
typedef struct vol_gcm {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
} vol_gcm;
int vol__gcm_init(vol_gcm *g, const uint8_t key[VOL_KEY_SIZE], cista_error **err);
void vol__gcm_free(vol_gcm *g);
int vol__gcm_seal(vol_gcm *g, const uint8_t nonce[VOL_NONCE_SIZE], const uint8_t *aad,
                  size_t aad_size, const uint8_t *pt, size_t size, uint8_t *ct,
                  uint8_t tag[VOL_TAG_SIZE]);
/* -EBADMSG when the tag does not verify. */
int vol__gcm_open(vol_gcm *g, const uint8_t nonce[VOL_NONCE_SIZE], const uint8_t *aad,
                  size_t aad_size, const uint8_t *ct, size_t size, uint8_t *pt,
                  const uint8_t tag[VOL_TAG_SIZE]);

/* Backing object name of object @oid: hex of HMAC(name key, "obj" || le64 oid)[0..16]. */
void vol__object_name(char out[33], const uint8_t name_key[VOL_KEY_SIZE], uint64_t oid);

/* ---- encodings (format.c) ---- */
void vol__ref_put(uint8_t *p, const vol_ref *r);
/* Validates: a hole is all zero; flags only VOL_REF_SLOT; gen <= @max_gen. */
int vol__ref_get(vol_ref *out, const uint8_t *p, uint64_t max_gen, cista_error **err);

/* A tree node: VOL_FANOUT refs then 16 zero bytes. */
void vol__node_put(uint8_t out[VOL_BLOCK_SIZE], const vol_ref *refs);
int vol__node_get(vol_ref *refs, const uint8_t *in, size_t size, uint64_t max_gen,
                  cista_error **err);

/* Inode record (128 bytes). */
typedef struct vol_rec {
    uint32_t flags; /* VOL_REC_INUSE */
    uint32_t mode;  /* with S_IFMT */
    uint32_t uid, gid, nlink, rdev;
    uint64_t size;
    struct timespec atime, mtime, ctime;
    uint32_t depth;
    vol_ref root;
    uint64_t parent; /* directories: parent directory inode */
} vol_rec;
void vol__rec_put(uint8_t out[VOL_REC_SIZE], const vol_rec *r);
/* A free record (all zero) gives flags 0. */
int vol__rec_get(vol_rec *out, const uint8_t *in, size_t size, uint64_t max_gen, cista_error **err);

/* Superblock. */
typedef struct vol_sb {
    uint8_t volume_id[VOL_ID_SIZE];
    uint8_t key_check[16];
    uint64_t generation;
    /* encrypted body */
    vol_ref itable_root;
    uint32_t itable_depth;
    uint64_t itable_size;
    uint64_t next_ino;
    uint32_t mount_epoch;
    int64_t created;
} vol_sb;
/* Encode and seal into a VOL_SB_SLOT_SIZE page. */
int vol__sb_seal(uint8_t out[VOL_SB_SLOT_SIZE], const vol_sb *sb, vol_gcm *super_gcm,
                 const uint8_t nonce[VOL_NONCE_SIZE], cista_error **err);
/* Plaintext header only (volume id, key check, generation). */
int vol__sb_header(vol_sb *out, const uint8_t *in, size_t size, cista_error **err);
/* Header and authenticated body. -EBADMSG when the seal does not verify. */
int vol__sb_open(vol_sb *out, const uint8_t *in, size_t size, vol_gcm *super_gcm,
                 cista_error **err);
/* SHA-256 over the used bytes of a sealed slot. */
void vol__sb_root(uint8_t out[VOL_ROOT_SIZE], const uint8_t *slot);

/* Directory blob: entries of le64 ino, u8 type, u8 name length, name. */
typedef int (*vol_dirent_cb)(void *arg, uint64_t ino, uint8_t type, const char *name, size_t len);
int vol__dir_parse(const uint8_t *data, size_t size, vol_dirent_cb cb, void *arg,
                   cista_error **err);
/* A name is valid: 1..255 bytes, no '/', no NUL, not "." or "..". */
bool vol__name_ok(const char *name, size_t len);

#endif
