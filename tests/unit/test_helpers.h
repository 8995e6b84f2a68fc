/*
 * test_helpers.h - small helpers the cmocka unit tests share: file loading,
 * collateral sets, "a.b.c" claim lookups and a configfs-tsm entry that
 * mimics the kernel. Include after <cmocka.h>; everything is static inline,
 * so a test uses what it needs.
 */
#ifndef CISTA_TEST_HELPERS_H
#define CISTA_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

/* The whole file @path (at most 1 MiB; asserts it reads); caller frees. */
static inline uint8_t *read_all(const char *path, size_t *size)
{
    char *d = NULL;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(util_read_file(&d, size, path, 1 << 20, &err), 0);
    return (uint8_t *)d;
}

/* Add the file @path to @c under its path as name. */
static inline void coll_add_file(ev_collateral *c, const char *path)
{
    _cleanup_err_ cista_error *err = NULL;
    size_t n = 0;
    _cleanup_free_ uint8_t *d = read_all(path, &n);
    assert_int_equal(ev_collateral_add(c, path, d, n, &err), 0);
}

/* A collateral set of the files @paths (NULL-terminated; may be NULL); caller frees. */
static inline ev_collateral *coll(const char *const *paths)
{
    ev_collateral *c = ev_collateral_new();
    for (; paths && *paths; paths++)
        coll_add_file(c, *paths);
    return c;
}

/* o[@key] = base64 of the @n bytes at @d. */
static inline void set_b64(json_t *o, const char *key, const uint8_t *d, size_t n)
{
    _cleanup_free_ char *b = b64_encode(d, n);
    json_object_set_new(o, key, json_string(b));
}

/* The claim at "a.b.0.c" (numbers index arrays); asserts it exists. Borrowed. */
static inline const json_t *at(const json_t *c, const char *path)
{
    _cleanup_free_ char *p = xstrdup(path);
    const json_t *v = c;
    for (char *save = NULL, *t = strtok_r(p, ".", &save); t; t = strtok_r(NULL, ".", &save)) {
        if (json_is_array(v))
            v = json_array_get(v, (size_t)atoi(t));
        else
            v = json_object_get(v, t);
    }
    if (!v)
        print_message("    missing claim %s\n", path);
    assert_non_null(v);
    return v;
}

static inline const char *str_at(const json_t *c, const char *path)
{
    const json_t *v = at(c, path);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static inline json_int_t int_at(const json_t *c, const char *path)
{
    const json_t *v = at(c, path);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static inline bool bool_at(const json_t *c, const char *path)
{
    const json_t *v = at(c, path);
    assert_true(json_is_boolean(v));
    return json_is_true(v);
}

/* ---- a configfs-tsm report entry that mimics the kernel (ev_get_opts.tsm_hook) ---- */

typedef struct {
    const char *provider;
    const uint8_t *outblob;
    size_t outblob_size;
    const uint8_t *auxblob; /* NULL: no auxblob attribute */
    size_t auxblob_size;
    char entry[512]; /* the entry directory the hook saw */
} tsm_mimic;

/* Write @size bytes at @data to @dir/@name. */
static inline void put(const char *dir, const char *name, const void *data, size_t size)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* The tsm_hook: fill the new entry @entry_dir as the kernel would; @arg is a tsm_mimic. */
static inline void kernel_part(const char *entry_dir, void *arg)
{
    tsm_mimic *m = arg;
    snprintf(m->entry, sizeof(m->entry), "%s", entry_dir);
    put(entry_dir, "provider", m->provider, strlen(m->provider));
    put(entry_dir, "generation", "1\n", 2);
    put(entry_dir, "inblob", "", 0);
    put(entry_dir, "privlevel", "", 0);
    put(entry_dir, "outblob", m->outblob, m->outblob_size);
    if (m->auxblob)
        put(entry_dir, "auxblob", m->auxblob, m->auxblob_size);
}

/* Remove an entry kernel_part() filled (rmdir on configfs would do it at once). */
static inline void rm_entry(const char *entry)
{
    static const char *const names[] = {"provider",  "generation", "inblob",
                                        "privlevel", "outblob",    "auxblob"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", entry, names[i]);
        unlink(p);
    }
    rmdir(entry);
}

#endif
