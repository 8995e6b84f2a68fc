/*
 * pol_int.h - structures shared by the policy module's .c files. Not a
 * public API: the runtime uses policy.h only.
 */
#ifndef CISTA_POL_INT_H
#define CISTA_POL_INT_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

typedef struct {
    char **v;
    size_t len;
} pol_strv;

/* A string rule: exact text, or a POSIX ERE that must match the whole string. */
typedef struct {
    bool is_regex;
    char *text;
    regex_t re; /* compiled when is_regex */
} pol_match;

typedef struct {
    char *destination; /* normalised */
    char *type;
    pol_match source;
    pol_strv options;
    bool read_only;
} pol_mount;

enum {
    POL_CAP_BOUNDING,
    POL_CAP_EFFECTIVE,
    POL_CAP_INHERITABLE,
    POL_CAP_PERMITTED,
    POL_CAP_AMBIENT,
    POL_CAP_SETS
};

typedef struct {
    char *name;
    bool has_image;
    char *image_ref;
    char *manifest_digest;
    pol_strv layers;

    pol_strv args;
    pol_match *env;
    size_t env_len;
    char *cwd;
    uint32_t uid, gid;
    uint32_t *gids;
    size_t gids_len;
    bool no_new_privileges;

    pol_mount *mounts;
    size_t mounts_len;
    pol_strv caps[POL_CAP_SETS];
    pol_strv sysctl_keys, sysctl_values;
    bool read_only_rootfs;

    pol_secret *secrets;
    size_t secrets_len;
    pol_volume *volumes;
    size_t volumes_len;

    pol_strv *exec;
    size_t exec_len;
    bool logs;
    int *signals;
    size_t signals_len;
    pol_strv copy;
} pol_container;

struct pol_policy {
    pol_container *containers;
    size_t containers_len;
    char *kbs_url; /* the pinned KBS, or NULL */
    char *kbs_ca;  /* PEM the pinned KBS's certificate must chain to, or NULL */
};

extern const char *const pol__cap_set_names[POL_CAP_SETS];

/* Compile @pattern anchored as ^(pattern)$ with REG_EXTENDED|REG_NOSUB. */
int pol__regex_compile(regex_t *re, const char *pattern, const char *what, cista_error **err)
    __attribute__((warn_unused_result));
bool pol__match(const pol_match *m, const char *s);

/* "kbs:///repo/type/tag" with three non-empty segments, as the KBS expects. */
bool pol__kbs_resource_ok(const char *res);
/* A volume name: [A-Za-z0-9][A-Za-z0-9_.-]*, at most POL_MAX_VOLUME_NAME (a directory name). */
bool pol__volume_name_ok(const char *name);
/*
 * Check a volume's name, key, anchor and rollback mode (@what names it in errors). *@rollback
 * NULL gets the default: "strict" with an anchor, "off" without; without an anchor only "off"
 * is accepted. The strings are borrowed; *@rollback then points to a static string or stays.
 */
int pol__volume_check(const char *what, const char *name, const char *key, const char *anchor,
                      const char **rollback, cista_error **err) __attribute__((warn_unused_result));

/*
 * Kubernetes YAML stream -> array of JSON documents (k8s.c). Scalars follow
 * the YAML 1.2 core schema for plain scalars (null, bool, int); quoted
 * scalars stay strings. Duplicate keys, non-scalar keys, tags other than the
 * standard ones and inputs beyond the POL_MAX_YAML_* limits are refused.
 */
int pol__yaml_load(json_t **out, const char *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
/* Array of JSON documents -> YAML stream (libyaml emitter). Caller frees. */
int pol__yaml_emit(char **out, const json_t *docs, cista_error **err)
    __attribute__((warn_unused_result));

#endif
