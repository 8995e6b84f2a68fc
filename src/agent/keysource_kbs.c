/*
 * keysource_kbs.c - image keys and secrets from the KBS after RCAR
 * attestation (src/kbs/client.h): the TEE's evidence binds the KBS nonce and
 * the sandbox's ephemeral P-256 key; resources come back as JWE to that key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "kbs/client.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define KBS_PREFIX "kbs:///"

typedef struct {
    kbs_client *cl;
    char *url;
} kbs_source;

static void kbs_free(agent_keysource *ks)
{
    kbs_source *k = ks->impl;
    if (!k)
        return;
    kbs_client_free(k->cl);
    free(k->url);
    free(k);
}

/* The claims of the attestation token, for display (the KBS verified them). */
static json_t *token_claims(const char *token)
{
    const char *a = token ? strchr(token, '.') : NULL;
    const char *b = a ? strchr(a + 1, '.') : NULL;
    if (!b)
        return NULL;
    uint8_t *raw = NULL;
    size_t size;
    cista_error *e = NULL;
    json_t *out = NULL;
    if (b64url_decode(&raw, &size, a + 1, (size_t)(b - a - 1), &e) == 0 &&
        js_parse_object(&out, raw, size, 1u << 20, "attestation token", &e) == 0) {
        free(raw);
        return out;
    }
    free(raw);
    err_free(e);
    return NULL;
}

static int kbs_attest(agent_keysource *ks, const agent_tee *tee, EVP_PKEY *pub, json_t **out,
                      cista_error **err)
{
    kbs_source *k = ks->impl;
    const ev_ops *ops = ev_find(tee->tee);
    if (!ops)
        return err_set(err, -ENOTSUP, "unknown TEE \"%s\"", tee->tee);
    ev_get_opts go;
    ev_get_opts_init(&go);
    go.sim_state_dir = tee->sim_state_dir;
    go.host_data = tee->host_data;
    go.tpm_tcti = tee->tpm_tcti;
    go.tpm_eventlog = tee->tpm_eventlog;
    _cleanup_free_ char *simdir = NULL;
    if (!strcmp(tee->tee, "sim") && !go.sim_state_dir) {
        simdir = ev_sim_default_dir();
        go.sim_state_dir = simdir;
    }
    _cleanup_free_ char *token = NULL;
    int rc = kbs_client_attest(k->cl, ops, &go, pub, &token, err);
    if (rc < 0)
        return err_wrap(err, "KBS %s", k->url);
    log_info("attested to KBS %s with TEE %s", k->url, tee->tee);
    *out = token_claims(token);
    return 0;
}

static int resource_path(const char **out, const char *resource, cista_error **err)
{
    if (strncmp(resource, KBS_PREFIX, strlen(KBS_PREFIX)))
        return err_set(err, -EINVAL, "resource \"%s\" is not kbs:///REPO/TYPE/TAG", resource);
    *out = resource + strlen(KBS_PREFIX);
    return 0;
}

static int kbs_get(agent_keysource *ks, const char *resource, uint8_t **out, size_t *size,
                   cista_error **err)
{
    kbs_source *k = ks->impl;
    const char *path = NULL;
    int rc;
    if ((rc = resource_path(&path, resource, err)) < 0)
        return rc;
    uint8_t *data = NULL;
    if ((rc = kbs_client_get_resource(k->cl, &data, size, path, err)) < 0)
        return err_wrap(err, "KBS resource %s", resource);
    /* hand it over in a buffer of our own (cleansed by crypto_free_secret) */
    *out = xmalloc(*size + 1);
    memcpy(*out, data, *size);
    (*out)[*size] = 0;
    kbs_secret_free(data, *size);
    return 0;
}

static int kbs_keys(agent_keysource *ks, const char *resource, EVP_PKEY ***out, size_t *count,
                    cista_error **err)
{
    uint8_t *pem = NULL;
    size_t size;
    int rc;
    if ((rc = kbs_get(ks, resource, &pem, &size, err)) < 0)
        return rc;
    EVP_PKEY *key = NULL;
    rc = crypto_key_load(&key, pem, size, true, err);
    crypto_free_secret(pem, size + 1);
    if (rc < 0)
        return err_wrap(err, "image key %s (a PEM private key was expected)", resource);
    *out = xzalloc(sizeof(**out));
    (*out)[0] = key;
    *count = 1;
    return 0;
}

static int kbs_secret(agent_keysource *ks, const char *resource, uint8_t **out, size_t *size,
                      cista_error **err)
{
    return kbs_get(ks, resource, out, size, err);
}

static const agent_keysource_ops g_kbs_ops = {
    .name = "kbs",
    .insecure = false,
    .attest = kbs_attest,
    .get_image_keys = kbs_keys,
    .get_secret = kbs_secret,
    .free = kbs_free,
};

int agent_keysource_kbs_new(agent_keysource **out, const char *url, const char *cert,
                            cista_error **err)
{
    kbs_client_opts o = {
        .url = url,
        .ca_file = cert,
        .system_trust = cert == NULL,
    };
    kbs_client *cl = NULL;
    int rc = kbs_client_new(&cl, &o, err);
    if (rc < 0)
        return err_wrap(err, "KBS %s", url);
    kbs_source *k = xzalloc(sizeof(*k));
    k->cl = cl;
    k->url = xstrdup(url);
    agent_keysource *ks = xzalloc(sizeof(*ks));
    ks->ops = &g_kbs_ops;
    ks->impl = k;
    *out = ks;
    return 0;
}
