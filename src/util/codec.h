/*
 * codec.h - base64 (RFC 4648 §4, padded), base64url (§5, unpadded on
 * output, padding tolerated on input) and lowercase hex.
 *
 * Decoders are strict: they reject characters outside the alphabet,
 * whitespace, and non-canonical trailing bits, because these strings come
 * from untrusted manifests and JWEs. Outputs are owned by the caller and
 * NUL-terminated. Thread-safe.
 */
#ifndef CISTA_CODEC_H
#define CISTA_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

char *b64_encode(const void *data, size_t size);
char *b64url_encode(const void *data, size_t size);
char *hex_encode(const void *data, size_t size);
/*
 * base64url into @dst, which holds b64url_encoded_len(@size) + 1 bytes: for output assembled in
 * one buffer (a JWS, a JWE) without a string per part. Returns the length (NUL not counted).
 */
size_t b64url_encoded_len(size_t size);
size_t b64url_encode_to(char *dst, const void *data, size_t size);

/* @len is strlen-style; the decoded bytes are NUL-terminated for convenience. */
int b64_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
    __attribute__((warn_unused_result));
int b64url_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
    __attribute__((warn_unused_result));
int hex_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
    __attribute__((warn_unused_result));
/* Decode exactly @size bytes of hex into @out (no allocation). */
int hex_decode_to(uint8_t *out, size_t size, const char *s, cista_error **err)
    __attribute__((warn_unused_result));

#endif
