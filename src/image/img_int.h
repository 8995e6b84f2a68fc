/*
 * img_int.h - what the image module's .c files share and the unit tests and
 * fuzz targets reach into. Not a public API: everything here may change.
 *
 * Same thread-safety and trust rules as image.h: every parser here takes
 * untrusted bytes and a hard size limit.
 */
#ifndef CISTA_IMG_INT_H
#define CISTA_IMG_INT_H

#include <sys/types.h>

#include "image/image.h"

/* Streaming chunk: big enough to amortise syscalls and EVP calls, small
 * enough that a pipeline of a few stages stays within a few MiB. */
#define IMG_CHUNK (1u << 20)
/* Nested indexes (index -> index -> manifest) we follow at most. */
#define IMG_MAX_INDEX_DEPTH 4
/* docker-archive manifest.json, and the ocicrypt documents. */
#define IMG_MAX_DOCKER_MANIFEST (4u << 20)
#define IMG_MAX_PRIVOPTS (64u << 10)
#define IMG_MAX_PUBOPTS (64u << 10)

#define IMG_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IMG_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IMG_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define IMG_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define IMG_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IMG_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

#define IMG_ANN_REF_NAME "org.opencontainers.image.ref.name"
#define IMG_ANN_ENC_PREFIX "org.opencontainers.image.enc."
#define IMG_ANN_KEYS_JWE "org.opencontainers.image.enc.keys.jwe"
#define IMG_ANN_PUBOPTS "org.opencontainers.image.enc.pubopts"
#define IMG_CIPHER "AES_256_CTR_HMAC_SHA256"
#define IMG_ENCRYPTED_SUFFIX "+encrypted"

/* ---- descriptors and documents (manifest.c) ---- */

typedef struct {
    char *media_type; /* NULL when the descriptor has none */
    char digest[IMG_DIGEST_MAX];
    uint64_t size;
    json_t *annotations; /* owned reference, or NULL */
    /* index entries only */
    char *ref_name; /* annotation org.opencontainers.image.ref.name */
    char *os, *architecture, *variant;
} img_desc;

typedef struct {
    img_desc *v;
    size_t len;
} img_index;

typedef struct {
    char *media_type; /* of the document (or its descriptor when the document has none) */
    img_desc config;
    img_layer *layers;
    size_t layer_count;
    json_t *annotations; /* owned reference, or NULL */
} img_manifest;

typedef struct {
    char *config;     /* member name of the config blob */
    char **repo_tags; /* NULL-terminated; may be empty */
    char **layers;    /* member names, NULL-terminated */
    size_t layer_count;
} img_docker_entry;

typedef struct {
    img_docker_entry *v;
    size_t len;
} img_docker_manifest;

/* A quoted, printable, truncated copy of an untrusted string for messages. Caller frees. */
char *img__quote(const char *s);
/* The same without the quotes, for names that are expected to be plain words. */
char *img__printable(const char *s);

/* "sha256:" followed by exactly 64 lowercase hex digits. */
bool img__digest_valid(const char *s);
/* The same, with a message naming @what ("layer 2 digest") when it fails. */
int img__digest_check(const char *s, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
void img__sha256_digest(char out[IMG_DIGEST_MAX], const uint8_t raw[32]);

int img__desc_parse(img_desc *out, const json_t *obj, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
void img__desc_clear(img_desc *d);

/* Media type classification; -EINVAL (with a message) for types not understood. */
bool img__is_index_type(const char *mt);
bool img__is_manifest_type(const char *mt);
int img__layer_type(img_compression *comp, bool *encrypted, const char *media_type,
                    cista_error **err) __attribute__((warn_unused_result));
/* The OCI layer media type for a compression, with "+encrypted" when asked. */
const char *img__oci_layer_type(img_compression comp, bool encrypted);
const char *img__compression_name(img_compression comp);

int img__index_parse(img_index *out, const void *data, size_t size, const char *what,
                     cista_error **err) __attribute__((warn_unused_result));
void img__index_clear(img_index *idx);
/*
 * Pick one entry: those whose ref.name equals @tag (all when @tag is NULL),
 * then, when several remain and they carry platforms, the one matching
 * @platform ("os/arch[/variant]"). *note receives a sentence saying how a
 * platform was picked (NULL when it was not needed); caller frees.
 */
int img__index_select(size_t *out, char **note, const img_index *idx, const char *tag,
                      const char *platform, const char *what, cista_error **err)
    __attribute__((warn_unused_result));

int img__manifest_parse(img_manifest *out, const void *data, size_t size,
                        const char *desc_media_type, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
void img__manifest_clear(img_manifest *m);

/* Fills *out and the rootfs.diff_ids (caller frees *diff_ids). */
int img__config_parse(img_config *out, char (**diff_ids)[IMG_DIGEST_MAX], size_t *diff_id_count,
                      const void *data, size_t size, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
void img__config_clear(img_config *c);

int img__docker_manifest_parse(img_docker_manifest *out, const void *data, size_t size,
                               cista_error **err) __attribute__((warn_unused_result));
void img__docker_manifest_clear(img_docker_manifest *m);
/* By "repo:tag" (or the tag alone when unique); NULL tag needs exactly one image. */
int img__docker_select(size_t *out, const img_docker_manifest *m, const char *tag,
                       cista_error **err) __attribute__((warn_unused_result));

/* "linux/amd64" etc. for the architecture this binary was built for. */
const char *img__host_platform(void);

/* ---- store: where blobs come from (layout.c) ---- */

typedef enum { IMG_MEMBER_FILE, IMG_MEMBER_SYMLINK, IMG_MEMBER_HARDLINK } img_member_kind;

typedef struct {
    char *name; /* cleaned archive path */
    img_member_kind kind;
    char *target;  /* links: cleaned archive path of the target */
    char file[24]; /* file name in the private directory */
    uint64_t size;
    char digest[IMG_DIGEST_MAX]; /* computed while extracting (docker-archive only) */
} img_member;

typedef struct {
    img_ref_kind kind;
    int dirfd;    /* layout directory, or the private directory of an archive */
    char *tmpdir; /* archives: the private directory, removed on close */
    img_member *members;
    size_t member_count;
} img_store;

struct img_image {
    img_ref ref;
    char *ref_str;
    img_store store;
    char manifest_digest[IMG_DIGEST_MAX];
    uint64_t manifest_size;
    char *platform_note;
    bool synthesized; /* docker-archive: manifest built by us from manifest.json */
    img_manifest manifest;
    uint8_t *config_raw;
    size_t config_size;
    img_config config;
};

/*
 * Open the blob @digest (validated) for reading; when @size is not
 * UINT64_MAX the file must be a regular file of exactly that size. The fd
 * is the caller's.
 */
int img__blob_open(int *out, const img_image *img, const char *digest, uint64_t size,
                   const char *what, cista_error **err) __attribute__((warn_unused_result));
/* Read a small blob whole, checking size (<= @max) and digest. Caller frees. */
int img__blob_read(uint8_t **out, size_t *out_size, const img_image *img, const img_desc *d,
                   size_t max, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
/* Build the OCI manifest JSON for @img's config and the given layers. New ref. */
json_t *img__manifest_build(const img_desc *config, const img_layer *layers, size_t count,
                            const json_t *annotations);
/* Is the directory @name below @dirfd empty (a symlink is an error)? */
int img__dir_is_empty(bool *out, int dirfd, const char *name, cista_error **err)
    __attribute__((warn_unused_result));
/* "layer 2/5 (sha256:…)" for messages; caller frees. */
char *img__layer_name(const img_image *img, size_t index);

/* ---- ocicrypt (ocicrypt.c) ---- */

typedef struct {
    uint8_t symkey[32];
    uint8_t nonce[16];
    char digest[IMG_DIGEST_MAX]; /* of the plaintext (compressed) blob */
} img_privopts;

/* Strict: symkey 32 bytes, nonce 16 bytes, digest "sha256:<64 hex>". */
int img__privopts_parse(img_privopts *out, const void *json, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
/* Exactly {"symkey":…,"digest":…,"cipheroptions":{"nonce":…}}; a secret: free with
 * crypto_free_secret(p, *out_size + 1). */
char *img__privopts_emit(const img_privopts *p, size_t *out_size);

/* Decode the pubopts annotation; refuses ciphers other than AES_256_CTR_HMAC_SHA256. */
int img__pubopts_parse(uint8_t hmac[32], const char *annotation, cista_error **err)
    __attribute__((warn_unused_result));
/* The pubopts annotation value (standard base64). Caller frees. */
char *img__pubopts_emit(const uint8_t hmac[32]);

/* Split a keys.jwe annotation ("b64,b64,…") into decoded JWE texts (NULL-terminated). */
int img__jwe_split(char ***out, const char *annotation, cista_error **err)
    __attribute__((warn_unused_result));
void img__strv_free(char **v);
/* JSON array describing every recipient visible in the JWE headers. */
int img__recipients_describe(json_t **out, const char *annotation, cista_error **err)
    __attribute__((warn_unused_result));
/* "RSA-OAEP (RSA-2048), ECDH-ES+A256KW (EC P-256)"; caller frees. Never fails. */
char *img__recipients_summary(const img_layer *l);
/* Unwrap the private options of layer @l with the first key that fits. */
int img__privopts_unwrap(img_privopts *out, const img_layer *l, EVP_PKEY *const *keys,
                         size_t key_count, cista_error **err) __attribute__((warn_unused_result));
/* Wrap into one JWE (flattened for one recipient, general for several): the
 * keys.jwe annotation value. Caller frees. */
int img__privopts_wrap(char **out, const img_privopts *p, EVP_PKEY *const *rcpts, size_t rcpt_count,
                       cista_error **err) __attribute__((warn_unused_result));

/* ---- streaming stages (stream.c) ---- */

/*
 * A pull reader: read() sets *buf to the next chunk and returns its size,
 * 0 at the end (after the stage's end-of-stream checks passed) or a
 * negative errno with err set. The chunk belongs to the stage but the
 * caller may modify it in place until its next read() (that is how CTR
 * decrypts without a copy). A stage owns its source and frees it.
 */
typedef struct img_rd img_rd;
struct img_rd {
    ssize_t (*read)(img_rd *r, uint8_t **buf, cista_error **err);
    void (*destroy)(img_rd *r);
    img_rd *src;
    int failed; /* sticky error code once a read failed */
    bool eof;
};

typedef enum {
    IMG_CHECK_NONE,   /* only compute */
    IMG_CHECK_BLOB,   /* blob bytes vs descriptor digest */
    IMG_CHECK_PLAIN,  /* decrypted blob vs private options digest */
    IMG_CHECK_DIFFID, /* uncompressed tar vs config rootfs.diff_ids */
    IMG_CHECK_SOURCE, /* pack: source blob vs its descriptor */
} img_check;

typedef struct {
    img_progress_fn fn;
    void *ctx;
    uint64_t base, total;
} img_progress;

ssize_t img__rd_read(img_rd *r, uint8_t **buf, cista_error **err);
void img__rd_free(img_rd *r);
void img__rd_freep(img_rd **r);
#define _cleanup_rd_ __attribute__((cleanup(img__rd_freep)))
/* Read everything that is left (running every end-of-stream check). */
int img__rd_drain(img_rd *r, cista_error **err) __attribute__((warn_unused_result));

/* Chunks of @fd (borrowed); exactly @size bytes unless UINT64_MAX. */
img_rd *img__rd_fd(int fd, uint64_t size, const img_progress *progress);
/* sha256 tap; @expect (or NULL) is checked at the end; @out receives the digest. */
img_rd *img__rd_digest(img_rd *src, img_check check, const char *expect, char *out);
/* AES-256-CTR. Decrypt: HMAC over the input, checked against @hmac at the end.
 * Encrypt: HMAC over the output, written to @hmac at the end. */
img_rd *img__rd_ctr(img_rd *src, bool encrypt, const uint8_t key[32], const uint8_t nonce[16],
                    uint8_t hmac[32]);
/* Decompress gzip (multi-member) or zstd; NONE returns @src unchanged. */
img_rd *img__rd_decompress(img_rd *src, img_compression comp);
/* Compress to gzip or zstd at @level (0 = default); NONE returns @src. */
img_rd *img__rd_compress(img_rd *src, img_compression comp, int level);
/* A reader over a memory buffer (borrowed), in chunks of at most @chunk bytes (tests). */
img_rd *img__rd_mem(const void *data, size_t size, size_t chunk);

/* ---- pipelining (pipeline.c) ---- */

/* Chunks in flight between two threads of a pipeline (each IMG_CHUNK). */
#define IMG_PIPE_DEPTH 4

/*
 * Run @src (owned, with everything below it) on a worker thread; read()
 * hands out its chunks, in order, through a ring of IMG_PIPE_DEPTH buffers,
 * then its end (0, or its error and message). Only the consumer may call
 * read(). Until img__rd_stop() (or free) the stages below belong to the
 * worker: do not touch them. Without a thread (pthread_create failed) it
 * reads inline.
 */
img_rd *img__rd_pipe(img_rd *src);
/*
 * Join every worker of the pipe stages from @top down. The whole chain then
 * belongs to the caller. Returns 0, or the code of the innermost error a
 * worker met above @below (exclusive; NULL = the whole chain) that was never
 * delivered to a reader, moving its message into *err when that is empty:
 * a worker that ran ahead may have found the real cause of a failure the
 * consumer saw first. Further reads of @top fail.
 */
int img__rd_stop(img_rd *top, const img_rd *below, cista_error **err);

/*
 * Progress from a worker thread, reported on the consumer's: give the
 * returned img_progress to the stage that reports (img__rd_fd), and call
 * flush on the consumer's thread between reads. @rel must outlive the chain.
 */
typedef struct {
    img_progress user;
    _Atomic uint64_t done;
    uint64_t sent;
} img_progress_relay;
img_progress img__progress_relay_init(img_progress_relay *rel, const img_progress *user);
void img__progress_relay_flush(img_progress_relay *rel);

#endif
