/*
 * image.h - OCI container images: references, the OCI image layout, OCI
 * archives and `docker save` archives; manifest and config parsing;
 * inspection; packing into an OCI layout with ocicrypt layer encryption
 * (JWE recipients, AES_256_CTR_HMAC_SHA256, byte-compatible with skopeo and
 * containers/ocicrypt); and verified, staged unpacking into a root
 * filesystem.
 *
 * Thread-safety: an img_image belongs to one thread at a time; distinct
 * handles are independent and may be used concurrently. No global state.
 *
 * Trust: the reference string, the output paths and the key files are the
 * caller's (trusted). Everything read from the image is untrusted: it may
 * come from a registry or from the host. JSON documents are size-limited
 * (IMG_MAX_*), parsed strictly, and every digest is validated before a path
 * is built from it. Blob bytes are streamed in bounded chunks and checked in
 * this order: size, digest, HMAC (encrypted layers), digest of the decrypted
 * blob, decompression, diff_id; a root filesystem appears (by rename) only
 * after every check of every layer passed. Library code never prints;
 * progress is reported through a callback. The exact formats and rules are
 * in docs/images.md.
 */
#ifndef CISTA_IMAGE_H
#define CISTA_IMAGE_H

#include <openssl/evp.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* "sha256:" + 64 lowercase hex digits + NUL. */
#define IMG_DIGEST_MAX 72

/* Hard limits on untrusted documents (bytes) and counts. */
#define IMG_MAX_INDEX (4u << 20)
#define IMG_MAX_MANIFEST (4u << 20)
#define IMG_MAX_CONFIG (8u << 20)
#define IMG_MAX_LAYERS 4096

/* ---- references ---- */

typedef enum {
    IMG_REF_OCI,            /* oci:DIR[:TAG] - an OCI image layout directory */
    IMG_REF_OCI_ARCHIVE,    /* oci-archive:FILE[:TAG] - a tar of an OCI layout */
    IMG_REF_DOCKER_ARCHIVE, /* docker-archive:FILE[:TAG] - `docker save` output */
} img_ref_kind;

typedef struct {
    img_ref_kind kind;
    char *path; /* owned */
    char *tag;  /* owned; NULL when the reference names none */
} img_ref;

/*
 * Parse "TRANSPORT:PATH[:TAG]". As in containers/image, PATH ends at the
 * first ':' after the transport, so a path cannot contain ':'. Fills *out
 * (strings owned by it; release with img_ref_clear). -EINVAL with a message
 * saying what was expected when the string is not a reference.
 */
int img_ref_parse(img_ref *out, const char *s, cista_error **err)
    __attribute__((warn_unused_result));
void img_ref_clear(img_ref *ref);
/* "oci:DIR:TAG" text of a reference; caller frees. */
char *img_ref_str(const img_ref *ref);

/* ---- the parsed image ---- */

typedef enum {
    IMG_COMP_NONE,
    IMG_COMP_GZIP,
    IMG_COMP_ZSTD,
    IMG_COMP_UNKNOWN, /* media type not understood: unpack and pack refuse the layer */
} img_compression;

/* One layer, bottom first. Every string is owned by the image. */
typedef struct {
    char *media_type; /* as written in the manifest */
    char digest[IMG_DIGEST_MAX];
    uint64_t size;
    char diff_id[IMG_DIGEST_MAX]; /* from the config's rootfs.diff_ids */
    img_compression compression;  /* of the (decrypted) blob, from the media type */
    bool encrypted;               /* media type ends in "+encrypted" */
    char *enc_keys_jwe;           /* annotation org.opencontainers.image.enc.keys.jwe, or NULL */
    char *enc_pubopts;            /* annotation org.opencontainers.image.enc.pubopts, or NULL */
    json_t *annotations;          /* the descriptor's annotations object, or NULL */
} img_layer;

/* The runtime-relevant part of the image config. Vectors end with NULL. */
typedef struct {
    char *os, *architecture, *variant; /* variant may be NULL */
    char **entrypoint;                 /* NULL when unset */
    char **cmd;                        /* NULL when unset */
    char **env;                        /* NULL when unset */
    char *user;                        /* NULL when unset */
    char *working_dir;                 /* NULL when unset */
    char **exposed_ports;              /* "80/tcp", ...; NULL when unset */
    char *stop_signal;                 /* "SIGQUIT", "3", ...; NULL when unset */
} img_config;

typedef struct img_image img_image;

/*
 * Open the image named by @ref (see img_ref_parse), select its manifest,
 * and read and verify the manifest and config blobs. A multi-platform index
 * resolves to the host platform (linux/amd64 on x86-64); img_platform_note()
 * says so. Archives are extracted to a private temporary directory that
 * img_free() removes. New handle to the caller.
 */
int img_open(img_image **out, const char *ref, cista_error **err)
    __attribute__((warn_unused_result));
/* The same with an explicit platform "OS/ARCH[/VARIANT]" (NULL = host). */
int img_open_platform(img_image **out, const char *ref, const char *platform, cista_error **err)
    __attribute__((warn_unused_result));
void img_free(img_image *img);
void img__freep(img_image **img);
#define _cleanup_img_ __attribute__((cleanup(img__freep)))

/* Accessors; returned pointers borrow from @img. */
const img_ref *img_get_ref(const img_image *img);
const char *img_manifest_digest(const img_image *img);
const char *img_manifest_media_type(const img_image *img);
const char *img_config_digest(const img_image *img);
/* How the manifest was chosen from a multi-platform index, or NULL. */
const char *img_platform_note(const img_image *img);
const img_config *img_get_config(const img_image *img);
size_t img_layer_count(const img_image *img);
const img_layer *img_get_layer(const img_image *img, size_t index);

/*
 * Describe the image as JSON: reference, manifest, platform, config,
 * layers with their encryption (cipher, JWE recipients as far as the
 * headers reveal them: alg, kid, "RSA-2048" / "EC P-256"). Reads no layer
 * blob. New reference to the caller.
 */
int img_inspect(json_t **out, const img_image *img, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- unpack and pack ---- */

/* Progress in bytes of blobs read so far, out of @total. */
typedef void (*img_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct {
    img_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    bool allow_devices;     /* create device nodes (needs CAP_MKNOD) */
    bool no_preserve_owner; /* do not chown to the tar uid/gid even as root */
    bool redact_names;      /* errors never quote a path of the image (its names are plaintext) */
} img_unpack_opts;

/*
 * Unpack every layer of @img, in order, into a new directory @rootfs (which
 * must not exist, or be an empty directory). Encrypted layers are decrypted
 * with whichever of @keys (private keys, borrowed) unwraps a recipient.
 * Layers are applied in a private staging directory next to @rootfs
 * (".NAME.cista-XXXXXX"); @rootfs appears by rename() only after every
 * check of every layer passed. On failure the staging directory is removed
 * and @rootfs is left as it was. @opts may be NULL.
 */
int img_unpack(const img_image *img, const char *rootfs, EVP_PKEY *const *keys, size_t key_count,
               const img_unpack_opts *opts, cista_error **err) __attribute__((warn_unused_result));

/*
 * Check that @keys open every encrypted layer of @img: each layer's wrapped
 * private options unwrap (an authenticated JWE) with one of them. Nothing is
 * decrypted or written; for a caller that reuses a tree img_unpack() made
 * from the same manifest and must still prove it holds the keys. 0, or the
 * error img_unpack() would give for that layer (-ENOKEY: no key fits).
 */
int img_keys_check(const img_image *img, EVP_PKEY *const *keys, size_t key_count, cista_error **err)
    __attribute__((warn_unused_result));

typedef enum {
    IMG_COMPRESS_KEEP, /* layer bytes as they are (default) */
    IMG_COMPRESS_NONE, /* decompress to plain tar */
    IMG_COMPRESS_GZIP,
    IMG_COMPRESS_ZSTD,
} img_compress;

typedef struct {
    EVP_PKEY *const *recipients; /* public keys (borrowed); none = no encryption */
    size_t recipient_count;
    img_compress compress;
    int level;                /* compression level; 0 = the library default */
    const char *platform;     /* for a multi-platform source; NULL = host */
    img_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    /* Output: the digest of the manifest written (may be left NULL). */
    char *out_manifest_digest; /* IMG_DIGEST_MAX bytes, or NULL */
} img_pack_opts;

/*
 * Copy the image @src into the OCI layout named by @dst ("oci:DIR[:TAG]",
 * tag "latest" by default), creating the layout when needed and replacing
 * the tag when it exists. With recipients, every layer is encrypted as
 * ocicrypt does it (fresh symmetric key and nonce per layer, private
 * options wrapped in one JWE for all recipients). Blobs are streamed in
 * 1 MiB chunks to a temporary file, fsynced and renamed to their digest;
 * index.json is replaced atomically last. A source layer that is already
 * encrypted is copied as is, or refused when recipients are given. @opts
 * may be NULL.
 */
int img_pack(const char *src, const char *dst, const img_pack_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

#endif
