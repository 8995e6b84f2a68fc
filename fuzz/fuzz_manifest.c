/*
 * fuzz_manifest.c - the image documents cista parses from untrusted layouts
 * and archives: index.json (and tag/platform selection), manifests, configs
 * and the manifest.json of `docker save` archives. Every input goes to
 * every parser; none may crash, leak or accept something it then cannot
 * hold (a valid digest, bounded counts).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/img_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cista_error *e = NULL;

    img_index idx;
    if (img__index_parse(&idx, data, size, "index.json", &e) == 0) {
        static const char *const tags[] = {NULL, "v1", "latest"};
        static const char *const platforms[] = {NULL, "linux/arm64/v8", "linux"};
        for (size_t t = 0; t < 3; t++) {
            size_t pick;
            char *note = NULL;
            if (img__index_select(&pick, &note, &idx, tags[t], platforms[t], "index.json", &e) ==
                0) {
                if (pick >= idx.len || !img__digest_valid(idx.v[pick].digest))
                    abort();
            }
            free(note);
            err_clear(&e);
        }
        img__index_clear(&idx);
    }
    err_clear(&e);

    img_manifest m;
    if (img__manifest_parse(&m, data, size, NULL, "manifest", &e) == 0) {
        if (!img__digest_valid(m.config.digest) || m.layer_count > IMG_MAX_LAYERS)
            abort();
        for (size_t i = 0; i < m.layer_count; i++)
            if (!img__digest_valid(m.layers[i].digest))
                abort();
        json_t *built = img__manifest_build(&m.config, m.layers, m.layer_count, m.annotations);
        json_decref(built);
        img__manifest_clear(&m);
    }
    err_clear(&e);

    img_config c;
    char(*ids)[IMG_DIGEST_MAX] = NULL;
    size_t n = 0;
    if (img__config_parse(&c, &ids, &n, data, size, "config", &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!img__digest_valid(ids[i]))
                abort();
        img__config_clear(&c);
        free(ids);
    }
    err_clear(&e);

    img_docker_manifest dm;
    if (img__docker_manifest_parse(&dm, data, size, &e) == 0) {
        static const char *const tags[] = {NULL, "busybox", "@0", "a:b"};
        for (size_t t = 0; t < 4; t++) {
            size_t pick;
            if (img__docker_select(&pick, &dm, tags[t], &e) == 0 && pick >= dm.len)
                abort();
            err_clear(&e);
        }
        img__docker_manifest_clear(&dm);
    }
    err_clear(&e);

    /* Media type classification on the raw bytes as a string. */
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    img_compression comp;
    bool enc;
    if (img__layer_type(&comp, &enc, s, NULL) == 0 && comp == IMG_COMP_UNKNOWN)
        abort();
    (void)img__digest_valid(s);
    free(img__quote(s));
    free(s);
    return 0;
}
