/*
 * kbs_int.h - state shared by the request handlers (handler.c) and the
 * HTTP server (server.c): keys and trust anchors loaded once, the session
 * table, and per-worker handler contexts.
 */
#ifndef CISTA_KBS_INT_H
#define CISTA_KBS_INT_H

#include "evidence/ev.h"
#include "kbs/kbs.h"
#include "kbs/store.h"

typedef struct {
    char tee[24];
    ev_collateral *c;
} kbs_collateral_set;

typedef struct {
    const kbs_config *cfg;
    EVP_PKEY *sign_key;
    EVP_PKEY *admin_pub; /* NULL: every admin call is refused */
    EVP_PKEY **sim_keys;
    size_t sim_key_count;
    EVP_PKEY **tpm_aks;
    size_t tpm_ak_count;
    kbs_collateral_set *colls;
    size_t coll_count;
    uint8_t master_key[KBS_MASTER_KEY_SIZE];
    bool has_master_key;
    kbs_sessions *sessions; /* NULL when sessions live in the store */
} kbs_shared;

struct kbs_ctx {
    kbs_shared *sh;
    bool own_shared;
    kbs_store *store;
};

/* Load everything the configuration names. */
int kbs__shared_new(kbs_shared **out, const kbs_config *cfg, cista_error **err);
void kbs__shared_free(kbs_shared *sh);
/* A handler context over @sh (borrowed) with its own store connection. */
int kbs__ctx_new(kbs_ctx **out, kbs_shared *sh, bool init_schema, cista_error **err);

#endif
