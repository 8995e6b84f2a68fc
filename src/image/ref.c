/*
 * ref.c - image references: "oci:DIR[:TAG]", "oci-archive:FILE[:TAG]",
 * "docker-archive:FILE[:TAG]", split as containers/image splits them (the
 * path ends at the first ':'), so the same strings work with skopeo.
 */
#include <errno.h>
#include <string.h>

#include "image/img_int.h"
#include "util/util.h"

static const struct {
    const char *prefix;
    img_ref_kind kind;
} transports[] = {
    {"oci:", IMG_REF_OCI},
    {"oci-archive:", IMG_REF_OCI_ARCHIVE},
    {"docker-archive:", IMG_REF_DOCKER_ARCHIVE},
};

static const char *kind_prefix(img_ref_kind kind)
{
    for (size_t i = 0; i < ARRAY_LEN(transports); i++)
        if (transports[i].kind == kind)
            return transports[i].prefix;
    return "?:";
}

int img_ref_parse(img_ref *out, const char *s, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (!s)
        return err_set(err, -EINVAL, "no image reference given");
    for (size_t i = 0; i < ARRAY_LEN(transports); i++) {
        size_t pl = strlen(transports[i].prefix);
        if (strncmp(s, transports[i].prefix, pl) != 0)
            continue;
        const char *path = s + pl;
        const char *colon = strchr(path, ':');
        size_t path_len = colon ? (size_t)(colon - path) : strlen(path);
        if (path_len == 0)
            return err_set(err, -EINVAL,
                           "image reference \"%s\" has an empty path; expected %sPATH[:TAG]", s,
                           transports[i].prefix);
        if (colon && colon[1] == '\0')
            return err_set(err, -EINVAL,
                           "image reference \"%s\" ends with ':' but names no tag; expected "
                           "%sPATH[:TAG]",
                           s, transports[i].prefix);
        out->kind = transports[i].kind;
        out->path = xstrndup(path, path_len);
        out->tag = colon ? xstrdup(colon + 1) : NULL;
        return 0;
    }
    return err_set(err, -EINVAL,
                   "\"%s\" is not an image reference; expected oci:DIR[:TAG], "
                   "oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG]",
                   s);
}

void img_ref_clear(img_ref *ref)
{
    if (!ref)
        return;
    free(ref->path);
    free(ref->tag);
    ref->path = NULL;
    ref->tag = NULL;
}

char *img_ref_str(const img_ref *ref)
{
    if (ref->tag)
        return xasprintf("%s%s:%s", kind_prefix(ref->kind), ref->path, ref->tag);
    return xasprintf("%s%s", kind_prefix(ref->kind), ref->path);
}
