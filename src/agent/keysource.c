/*
 * keysource.c - where image keys and secrets come from: the KBS (after
 * attestation), local files (development only), or nowhere.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "crypto/crypto.h"
#include "util/log.h"
#include "util/util.h"

void agent_keysource_free(agent_keysource *ks)
{
    if (ks && ks->ops->free)
        ks->ops->free(ks);
    free(ks);
}

void agent__keysource_freep(agent_keysource **ks)
{
    agent_keysource_free(*ks);
}

char *agent_image_key_resource(const char *container)
{
    return xasprintf("kbs:///default/image-key/%s", container);
}

/* ---- local attestation, shared by the sources that do not attest remotely ---- */

static int local_attest(agent_keysource *ks, const agent_tee *tee, EVP_PKEY *pub,
                        json_t **out_claims, cista_error **err)
{
    (void)ks;
    (void)tee;
    (void)pub;
    (void)err;
    /* the launch-binding check already produced and verified local evidence */
    *out_claims = NULL;
    return 0;
}

/* ---- none ---- */

static int none_keys(agent_keysource *ks, const char *resource, EVP_PKEY ***out, size_t *count,
                     cista_error **err)
{
    (void)ks;
    (void)out;
    (void)count;
    return err_set(err, -ENOKEY,
                   "the image is encrypted but no key source is configured (need io.cista.kbs, "
                   "or --key-file in development); wanted %s",
                   resource);
}

static int none_secret(agent_keysource *ks, const char *resource, uint8_t **out, size_t *size,
                       cista_error **err)
{
    (void)ks;
    (void)out;
    (void)size;
    return err_set(err, -ENOKEY, "the policy names secret %s but no key source is configured",
                   resource);
}

static const agent_keysource_ops g_none_ops = {
    .name = "none",
    .insecure = false,
    .attest = local_attest,
    .get_image_keys = none_keys,
    .get_secret = none_secret,
    .free = NULL,
};

agent_keysource *agent_keysource_none_new(void)
{
    agent_keysource *ks = xzalloc(sizeof(*ks));
    ks->ops = &g_none_ops;
    return ks;
}

/* ---- dev: local files ---- */

typedef struct {
    char **key_files;
    size_t key_count;
    char **res;  /* resource names */
    char **file; /* their files */
    size_t secret_count;
} dev_source;

static void dev_free(agent_keysource *ks)
{
    dev_source *d = ks->impl;
    if (!d)
        return;
    for (size_t i = 0; i < d->key_count; i++)
        free(d->key_files[i]);
    for (size_t i = 0; i < d->secret_count; i++) {
        free(d->res[i]);
        free(d->file[i]);
    }
    free(d->key_files);
    free(d->res);
    free(d->file);
    free(d);
}

static int dev_attest(agent_keysource *ks, const agent_tee *tee, EVP_PKEY *pub, json_t **out,
                      cista_error **err)
{
    log_warn("DEVELOPMENT key source: image keys and secrets come from local files, not from a "
             "KBS after attestation; never use this in production");
    return local_attest(ks, tee, pub, out, err);
}

static int dev_keys(agent_keysource *ks, const char *resource, EVP_PKEY ***out, size_t *count,
                    cista_error **err)
{
    dev_source *d = ks->impl;
    int rc;
    if (!d->key_count)
        return err_set(err, -ENOKEY, "the image is encrypted and no --key-file was given (%s)",
                       resource);
    EVP_PKEY **keys = xzalloc(d->key_count * sizeof(*keys));
    for (size_t i = 0; i < d->key_count; i++) {
        if ((rc = crypto_key_load_file(&keys[i], d->key_files[i], true, err)) < 0) {
            for (size_t k = 0; k < i; k++)
                EVP_PKEY_free(keys[k]);
            free(keys);
            return err_wrap(err, "key file %s", d->key_files[i]);
        }
    }
    log_warn("DEVELOPMENT key source: image key for %s from %zu local key file(s)", resource,
             d->key_count);
    *out = keys;
    *count = d->key_count;
    return 0;
}

static int dev_secret(agent_keysource *ks, const char *resource, uint8_t **out, size_t *size,
                      cista_error **err)
{
    dev_source *d = ks->impl;
    int rc;
    for (size_t i = 0; i < d->secret_count; i++) {
        if (strcmp(d->res[i], resource))
            continue;
        char *data;
        if ((rc = util_read_file(&data, size, d->file[i], AGENT_MAX_SECRET, err)) < 0)
            return err_wrap(err, "secret file for %s", resource);
        log_warn("DEVELOPMENT key source: secret %s from the local file %s", resource, d->file[i]);
        *out = (uint8_t *)data;
        return 0;
    }
    return err_set(err, -ENOKEY,
                   "the policy names secret %s and no --secret-file %s=FILE was given", resource,
                   resource);
}

static const agent_keysource_ops g_dev_ops = {
    .name = "dev",
    .insecure = true,
    .attest = dev_attest,
    .get_image_keys = dev_keys,
    .get_secret = dev_secret,
    .free = dev_free,
};

int agent_keysource_dev_new(agent_keysource **out, const char *const *key_files, size_t key_count,
                            const char *const *secret_specs, size_t secret_count, cista_error **err)
{
    dev_source *d = xzalloc(sizeof(*d));
    agent_keysource *ks = xzalloc(sizeof(*ks));
    ks->ops = &g_dev_ops;
    ks->impl = d;
    d->key_files = xzalloc((key_count + 1) * sizeof(char *));
    for (size_t i = 0; i < key_count; i++)
        d->key_files[d->key_count++] = xstrdup(key_files[i]);
    d->res = xzalloc((secret_count + 1) * sizeof(char *));
    d->file = xzalloc((secret_count + 1) * sizeof(char *));
    for (size_t i = 0; i < secret_count; i++) {
        const char *s = secret_specs[i];
        const char *eq = strchr(s, '=');
        if (!eq || eq == s || !eq[1]) {
            agent_keysource_free(ks);
            return err_set(err, -EINVAL, "secret \"%s\": expected RESOURCE=FILE", s);
        }
        d->res[d->secret_count] = xstrndup(s, (size_t)(eq - s));
        d->file[d->secret_count++] = xstrdup(eq + 1);
    }
    *out = ks;
    return 0;
}
