/*
 * inspect.c - describe an opened image as JSON (the CLI renders it as text
 * or prints it). Reads no layer blob; recipients come from the JWE headers
 * alone, so nothing here needs a key.
 */
#include <errno.h>
#include <string.h>

#include "image/img_int.h"
#include "util/util.h"

static json_t *strv_json(char **v)
{
    if (!v)
        return json_null();
    json_t *a = json_array();
    for (; *v; v++)
        json_array_append_new(a, json_string(*v));
    return a;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *layer_json(const img_layer *l, size_t index)
{
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer((json_int_t)index + 1));
    json_object_set_new(o, "media_type", json_string(l->media_type));
    json_object_set_new(o, "size", json_integer((json_int_t)l->size));
    json_object_set_new(o, "digest", json_string(l->digest));
    json_object_set_new(o, "diff_id", json_string(l->diff_id));
    json_object_set_new(o, "compression", json_string(img__compression_name(l->compression)));
    json_object_set_new(o, "encrypted", json_boolean(l->encrypted));
    if (!l->encrypted)
        return o;
    json_t *enc = json_object();
    if (l->enc_pubopts) {
        uint8_t hmac[32];
        cista_error *e = NULL;
        if (img__pubopts_parse(hmac, l->enc_pubopts, &e) < 0) {
            _cleanup_free_ char *s = err_str(e);
            json_object_set_new(enc, "cipher_error", json_string(s));
            err_free(e);
        } else {
            json_object_set_new(enc, "cipher", json_string(IMG_CIPHER));
        }
    } else {
        json_object_set_new(enc, "cipher_error", json_string("no pubopts annotation"));
    }
    json_t *rcpts = NULL;
    if (l->enc_keys_jwe) {
        cista_error *e = NULL;
        if (img__recipients_describe(&rcpts, l->enc_keys_jwe, &e) < 0) {
            _cleanup_free_ char *s = err_str(e);
            json_object_set_new(enc, "recipients_error", json_string(s));
            err_free(e);
            rcpts = NULL;
        }
    }
    if (!rcpts)
        rcpts = json_array();
    /* Other wrapping schemes are shown so the user knows why cista cannot decrypt them. */
    if (l->annotations) {
        const char *k;
        json_t *v;
        static const char prefix[] = "org.opencontainers.image.enc.keys.";
        json_object_foreach(l->annotations, k, v)
        {
            if (strncmp(k, prefix, strlen(prefix)) != 0 || !strcmp(k, IMG_ANN_KEYS_JWE))
                continue;
            json_t *r = json_object();
            json_object_set_new(r, "scheme", json_string(k + strlen(prefix)));
            json_object_set_new(r, "supported", json_false());
            json_array_append_new(rcpts, r);
        }
    }
    json_object_set_new(enc, "recipients", rcpts);
    json_object_set_new(o, "encryption", enc);
    return o;
}

int img_inspect(json_t **out, const img_image *img, cista_error **err)
{
    (void)err;
    json_t *o = json_object();
    json_object_set_new(o, "reference", json_string(img->ref_str));
    json_t *m = json_object();
    json_object_set_new(m, "digest", json_string(img->manifest_digest));
    json_object_set_new(m, "media_type", json_string(img->manifest.media_type));
    json_object_set_new(m, "size", json_integer((json_int_t)img->manifest_size));
    if (img->synthesized)
        json_object_set_new(m, "synthesized_from", json_string("docker-archive manifest.json"));
    json_object_set_new(o, "manifest", m);

    const img_config *c = &img->config;
    json_t *p = json_object();
    json_object_set_new(p, "os", str_or_null(c->os));
    json_object_set_new(p, "architecture", str_or_null(c->architecture));
    if (c->variant)
        json_object_set_new(p, "variant", json_string(c->variant));
    if (img->platform_note)
        json_object_set_new(p, "note", json_string(img->platform_note));
    json_object_set_new(o, "platform", p);

    json_t *cfg = json_object();
    json_object_set_new(cfg, "digest", json_string(img->manifest.config.digest));
    json_object_set_new(cfg, "entrypoint", strv_json(c->entrypoint));
    json_object_set_new(cfg, "cmd", strv_json(c->cmd));
    json_object_set_new(cfg, "env", strv_json(c->env));
    json_object_set_new(cfg, "user", str_or_null(c->user));
    json_object_set_new(cfg, "working_dir", str_or_null(c->working_dir));
    json_object_set_new(cfg, "exposed_ports", strv_json(c->exposed_ports));
    json_object_set_new(cfg, "stop_signal", str_or_null(c->stop_signal));
    json_object_set_new(o, "config", cfg);

    json_t *layers = json_array();
    uint64_t total = 0;
    size_t encrypted = 0;
    for (size_t i = 0; i < img->manifest.layer_count; i++) {
        const img_layer *l = &img->manifest.layers[i];
        json_array_append_new(layers, layer_json(l, i));
        total += l->size;
        encrypted += l->encrypted;
    }
    json_object_set_new(o, "layers", layers);
    json_object_set_new(o, "layers_size", json_integer((json_int_t)total));
    json_object_set_new(o, "encrypted_layers", json_integer((json_int_t)encrypted));
    *out = o;
    return 0;
}
