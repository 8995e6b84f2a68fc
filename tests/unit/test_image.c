/*
 * test_image.c - the image module: references, index/manifest/config
 * parsing (good and malformed), ocicrypt annotations (round trip and the
 * real skopeo samples against expected.json), the streaming stages, and
 * pack -> unpack round trips with every failure mode unpack must catch.
 *
 * Runs with the repository root as cwd; shared data is ../shared/testdata.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "image/image.h"
#include "image/img_int.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define SAMPLES "../shared/testdata/ocicrypt"
#define PLAIN "oci:" SAMPLES "/plain:v1"

/* ---- helpers ---- */

static char *g_tmp; /* per-test scratch directory */

static int setup_tmp(void **state)
{
    (void)state;
    g_tmp = xstrdup("/tmp/cista-test-image-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    return 0;
}

static int teardown_tmp(void **state)
{
    (void)state;
    cista_error *e = NULL;
    if (util_rm_rf_at(AT_FDCWD, g_tmp, &e) < 0)
        err_free(e);
    free(g_tmp);
    g_tmp = NULL;
    return 0;
}

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", g_tmp, name);
}

static char *slurp(const char *path, size_t *size)
{
    char *data = NULL;
    cista_error *e = NULL;
    if (util_read_file(&data, size, path, 64u << 20, &e) < 0) {
        err_free(e);
        return NULL;
    }
    return data;
}

static void spit(const char *path, const void *data, size_t size)
{
    cista_error *e = NULL;
    assert_int_equal(util_write_file_atomic(AT_FDCWD, path, data, size, 0644, &e), 0);
}

/* Error text contains @needle (and print it when it does not). */
static void assert_err_has(const cista_error *e, const char *needle)
{
    assert_non_null(e);
    _cleanup_free_ char *s = err_str(e);
    if (!strstr(s, needle))
        fail_msg("error \"%s\" does not contain \"%s\"", s, needle);
}

static bool staging_left(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".cista-"))
            found = true;
    closedir(d);
    return found;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static EVP_PKEY *g_rsa, *g_ec, *g_rsa2;

static int setup_keys(void **state)
{
    (void)state;
    cista_error *e = NULL;
    if (crypto_key_generate_rsa(&g_rsa, 2048, &e) < 0 ||
        crypto_key_generate_ec(&g_ec, "P-256", &e) < 0 ||
        crypto_key_generate_rsa(&g_rsa2, 2048, &e) < 0) {
        err_free(e);
        return -1;
    }
    return 0;
}

static int teardown_keys(void **state)
{
    (void)state;
    EVP_PKEY_free(g_rsa);
    EVP_PKEY_free(g_ec);
    EVP_PKEY_free(g_rsa2);
    return 0;
}

static EVP_PKEY *load_key(const char *name)
{
    _cleanup_free_ char *path = xasprintf(SAMPLES "/keys/%s", name);
    EVP_PKEY *k = NULL;
    cista_error *e = NULL;
    if (crypto_key_load_file(&k, path, true, &e) < 0) {
        _cleanup_free_ char *s = err_str(e);
        err_free(e);
        fail_msg("load %s: %s", path, s);
    }
    return k;
}

/* ---- references ---- */

static void test_ref_parse(void **state)
{
    (void)state;
    img_ref r;
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(img_ref_parse(&r, "oci:/a/b", &e), 0);
    assert_int_equal(r.kind, IMG_REF_OCI);
    assert_string_equal(r.path, "/a/b");
    assert_null(r.tag);
    img_ref_clear(&r);
    assert_int_equal(img_ref_parse(&r, "oci:dir:v1", &e), 0);
    assert_string_equal(r.path, "dir");
    assert_string_equal(r.tag, "v1");
    _cleanup_free_ char *s = img_ref_str(&r);
    assert_string_equal(s, "oci:dir:v1");
    img_ref_clear(&r);
    assert_int_equal(img_ref_parse(&r, "oci-archive:x.tar:latest", &e), 0);
    assert_int_equal(r.kind, IMG_REF_OCI_ARCHIVE);
    assert_string_equal(r.tag, "latest");
    img_ref_clear(&r);
    /* docker references keep their own colon: the path ends at the first one. */
    assert_int_equal(img_ref_parse(&r, "docker-archive:img.tar:busybox:1.36", &e), 0);
    assert_int_equal(r.kind, IMG_REF_DOCKER_ARCHIVE);
    assert_string_equal(r.path, "img.tar");
    assert_string_equal(r.tag, "busybox:1.36");
    img_ref_clear(&r);

    static const char *const bad[] = {
        "dir", "oci:", "oci::v1", "oci:dir:", "docker://x", "OCI:dir", ""};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_int_equal(img_ref_parse(&r, bad[i], &e), -EINVAL);
        assert_non_null(e);
        err_clear(&e);
    }
}

static void test_digest(void **state)
{
    (void)state;
    const char *ok = "sha256:7735dbc10bba09520a0f6f189f0925af08678e1626b099b3d1811942a27d7846";
    assert_true(img__digest_valid(ok));
    assert_false(img__digest_valid("sha256:7735DBC10bba09520a0f6f189f0925af08678e1626b099b3d18"
                                   "11942a27d7846"));
    assert_false(img__digest_valid("sha256:7735"));
    assert_false(img__digest_valid("sha256:../../../../etc/passwd"));
    _cleanup_free_ char *longer = xasprintf("%s0", ok);
    assert_false(img__digest_valid(longer));
    assert_false(img__digest_valid(NULL));
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(img__digest_check("sha512:abcd", "layer 1", &e), -EINVAL);
    assert_err_has(e, "other than sha256");
}

/* ---- documents ---- */

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static int parse_index(img_index *idx, const char *json, cista_error **e)
{
    return img__index_parse(idx, json, strlen(json), "index.json", e);
}

static void test_index(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    img_index idx;
    size_t pick;
    char *note = NULL;
    const char *two =
        "{\"schemaVersion\":2,\"manifests\":["
        "{\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":10,"
        "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}},"
        "{\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":11,"
        "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v2\"}}]}";
    assert_int_equal(parse_index(&idx, two, &e), 0);
    assert_int_equal(idx.len, 2);
    assert_int_equal(img__index_select(&pick, &note, &idx, "v2", NULL, "index.json", &e), 0);
    assert_int_equal(pick, 1);
    assert_null(note);
    assert_int_equal(img__index_select(&pick, &note, &idx, "v3", NULL, "index.json", &e), -ENOENT);
    assert_err_has(e, "\"v1\", \"v2\"");
    err_clear(&e);
    assert_int_equal(img__index_select(&pick, &note, &idx, NULL, NULL, "index.json", &e), -EINVAL);
    assert_err_has(e, "name one with :TAG");
    err_clear(&e);
    img__index_clear(&idx);

    /* A multi-platform index: the host platform is picked, and we are told so. */
    const char *multi =
        "{\"schemaVersion\":2,\"mediaType\":\"" IMG_MT_OCI_INDEX "\",\"manifests\":["
        "{\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":1,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}},"
        "{\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":1,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
        "{\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"digest\":\"" D3 "\",\"size\":1,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"s390x\"}}]}";
    assert_int_equal(parse_index(&idx, multi, &e), 0);
    assert_int_equal(img__index_select(&pick, &note, &idx, NULL, "linux/amd64", "idx", &e), 0);
    assert_int_equal(pick, 1);
    assert_non_null(note);
    assert_non_null(strstr(note, "linux/amd64"));
    free(note);
    assert_int_equal(img__index_select(&pick, &note, &idx, NULL, "linux/arm64", "idx", &e), 0);
    assert_int_equal(pick, 0);
    free(note);
    assert_int_equal(img__index_select(&pick, &note, &idx, NULL, "linux/arm64/v8", "idx", &e), 0);
    free(note);
    assert_int_equal(img__index_select(&pick, &note, &idx, NULL, "linux/riscv64", "idx", &e),
                     -ENOENT);
    assert_err_has(e, "\"linux/s390x\"");
    err_clear(&e);
    img__index_clear(&idx);

    static const char *const bad[] = {
        "",
        "[]",
        "{\"schemaVersion\":1,\"manifests\":[]}",
        "{\"schemaVersion\":\"2\",\"manifests\":[]}",
        "{\"schemaVersion\":2}",
        "{\"schemaVersion\":2,\"manifests\":{}}",
        "{\"schemaVersion\":2,\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"manifests\":[]}",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"sha256:abc\","
        "\"size\":1}]}",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\","
        "\"size\":-1}]}",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\","
        "\"size\":1,\"annotations\":{\"a\":1}}]}",
        "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"" D1 "\",\"size\":1}]}",
        "{\"schemaVersion\":2,\"schemaVersion\":2,\"manifests\":[]}",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\","
        "\"size\":1,\"platform\":{\"os\":\"linux\"}}]}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (parse_index(&idx, bad[i], &e) == 0)
            fail_msg("accepted bad index %zu: %s", i, bad[i]);
        assert_non_null(e);
        err_clear(&e);
    }
    /* Over the size limit: refused before parsing. */
    size_t big = IMG_MAX_INDEX + 1;
    char *huge = xmalloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    assert_int_equal(img__index_parse(&idx, huge, big, "index.json", &e), -EMSGSIZE);
    err_clear(&e);
    free(huge);
}

static const char *const good_manifest =
    "{\"schemaVersion\":2,\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\","
    "\"config\":{\"mediaType\":\"" IMG_MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":5},"
    "\"layers\":["
    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D2 "\","
    "\"size\":7},"
    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd+encrypted\",\"digest\":\"" D3
    "\",\"size\":9,\"annotations\":{\"org.opencontainers.image.enc.keys.jwe\":\"a\","
    "\"org.opencontainers.image.enc.pubopts\":\"b\"}},"
    "{\"mediaType\":\"application/x-unknown\",\"digest\":\"" D3 "\",\"size\":1}"
    "]}";

static void test_manifest(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    img_manifest m;
    assert_int_equal(img__manifest_parse(&m, good_manifest, strlen(good_manifest),
                                         IMG_MT_OCI_MANIFEST, "manifest", &e),
                     0);
    assert_int_equal(m.layer_count, 3);
    assert_int_equal(m.layers[0].compression, IMG_COMP_GZIP);
    assert_false(m.layers[0].encrypted);
    assert_int_equal(m.layers[1].compression, IMG_COMP_ZSTD);
    assert_true(m.layers[1].encrypted);
    assert_string_equal(m.layers[1].enc_keys_jwe, "a");
    assert_string_equal(m.layers[1].enc_pubopts, "b");
    assert_int_equal(m.layers[2].compression, IMG_COMP_UNKNOWN);
    img__manifest_clear(&m);

    /* The document's mediaType must agree with the descriptor pointing at it. */
    assert_int_equal(img__manifest_parse(&m, good_manifest, strlen(good_manifest),
                                         IMG_MT_DOCKER_MANIFEST, "manifest", &e),
                     -EINVAL);
    assert_err_has(e, "differs");
    err_clear(&e);

    static const char *const bad[] = {
        "{\"schemaVersion\":2,\"mediaType\":\"" IMG_MT_OCI_INDEX "\",\"manifests\":[]}",
        "{\"schemaVersion\":2,\"manifests\":[]}",
        "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.cncf.helm.config.v1"
        "+json\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[]}",
        "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" IMG_MT_OCI_CONFIG "\",\"digest\":\"" D1
        "\",\"size\":1}}",
        "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" IMG_MT_OCI_CONFIG "\",\"digest\":\"" D1
        "\",\"size\":1},\"layers\":[{\"mediaType\":\"x\",\"digest\":\"sha256:" D1
        "\",\"size\":1}]}",
        "{\"schemaVersion\":3,\"config\":{},\"layers\":[]}",
        "{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"config\":{},\"layers\":[]}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (img__manifest_parse(&m, bad[i], strlen(bad[i]), NULL, "manifest", &e) == 0)
            fail_msg("accepted bad manifest %zu", i);
        err_clear(&e);
    }

    /* More layers than IMG_MAX_LAYERS. */
    cbuf b = CBUF_INIT;
    buf_puts(&b, "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" IMG_MT_OCI_CONFIG
                 "\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[");
    for (int i = 0; i <= IMG_MAX_LAYERS; i++)
        buf_printf(&b, "%s{\"mediaType\":\"x\",\"digest\":\"" D2 "\",\"size\":1}", i ? "," : "");
    buf_puts(&b, "]}");
    assert_int_equal(img__manifest_parse(&m, b.data, b.size, NULL, "manifest", &e), -E2BIG);
    err_clear(&e);
    buf_free(&b);
}

static void test_config(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{"
                      "\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":null,\"Env\":[\"A=1\",\"B=2\"],"
                      "\"User\":\"1000:1000\",\"WorkingDir\":\"/app\","
                      "\"ExposedPorts\":{\"80/tcp\":{},\"53/udp\":{}}},"
                      "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]}}";
    img_config c;
    char(*ids)[IMG_DIGEST_MAX] = NULL;
    size_t n;
    assert_int_equal(img__config_parse(&c, &ids, &n, cfg, strlen(cfg), "config", &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ids[1], D2);
    assert_string_equal(c.entrypoint[0], "/bin/sh");
    assert_string_equal(c.entrypoint[1], "-c");
    assert_null(c.entrypoint[2]);
    assert_null(c.cmd);
    assert_string_equal(c.env[1], "B=2");
    assert_string_equal(c.user, "1000:1000");
    assert_string_equal(c.working_dir, "/app");
    assert_string_equal(c.exposed_ports[0], "80/tcp");
    assert_string_equal(c.exposed_ports[1], "53/udp");
    img__config_clear(&c);
    free(ids);

    static const char *const bad[] = {
        "{\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"x\",\"diff_ids\":[]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":[\"sha256:00\"]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":[1]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[1]},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":\"ls\"},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"a\\u0000b\"]},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (img__config_parse(&c, &ids, &n, bad[i], strlen(bad[i]), "config", &e) == 0)
            fail_msg("accepted bad config %zu", i);
        assert_null(ids);
        err_clear(&e);
    }
}

static void test_docker_manifest(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    const char *dm = "[{\"Config\":\"abc.json\",\"RepoTags\":[\"busybox:latest\",\"bb:1\","
                     "\"docker.io/cista/big:v1\"],"
                     "\"Layers\":[\"l1/layer.tar\"]},"
                     "{\"Config\":\"def.json\",\"RepoTags\":null,\"Layers\":[]}]";
    img_docker_manifest m;
    size_t pick;
    assert_int_equal(img__docker_manifest_parse(&m, dm, strlen(dm), &e), 0);
    assert_int_equal(m.len, 2);
    assert_int_equal(img__docker_select(&pick, &m, "busybox", &e), 0);
    assert_int_equal(pick, 0);
    assert_int_equal(img__docker_select(&pick, &m, "bb:1", &e), 0);
    assert_int_equal(img__docker_select(&pick, &m, "docker.io/library/busybox", &e), 0);
    assert_int_equal(img__docker_select(&pick, &m, "cista/big:v1", &e), 0);
    assert_int_equal(pick, 0);
    assert_int_equal(img__docker_select(&pick, &m, "@1", &e), 0);
    assert_int_equal(pick, 1);
    assert_int_equal(img__docker_select(&pick, &m, "@2", &e), -ENOENT);
    err_clear(&e);
    assert_int_equal(img__docker_select(&pick, &m, "nginx", &e), -ENOENT);
    assert_err_has(e, "\"busybox:latest\"");
    err_clear(&e);
    assert_int_equal(img__docker_select(&pick, &m, NULL, &e), -EINVAL);
    err_clear(&e);
    img__docker_manifest_clear(&m);

    static const char *const bad[] = {"{}", "[1]", "[{\"Config\":1,\"Layers\":[]}]",
                                      "[{\"Config\":\"a\"}]",
                                      "[{\"Config\":\"a\",\"Layers\":[1]}]"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (img__docker_manifest_parse(&m, bad[i], strlen(bad[i]), &e) == 0)
            fail_msg("accepted bad docker manifest %zu", i);
        err_clear(&e);
    }
}

static void test_layer_types(void **state)
{
    (void)state;
    static const struct {
        const char *mt;
        img_compression c;
        bool enc;
    } ok[] = {
        {"application/vnd.oci.image.layer.v1.tar", IMG_COMP_NONE, false},
        {"application/vnd.oci.image.layer.v1.tar+gzip+encrypted", IMG_COMP_GZIP, true},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", IMG_COMP_ZSTD, false},
        {"application/vnd.docker.image.rootfs.diff.tar.gzip", IMG_COMP_GZIP, false},
        {"application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted", IMG_COMP_GZIP, true},
    };
    _cleanup_err_ cista_error *e = NULL;
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        img_compression c;
        bool enc;
        assert_int_equal(img__layer_type(&c, &enc, ok[i].mt, &e), 0);
        assert_int_equal(c, ok[i].c);
        assert_int_equal(enc, ok[i].enc);
    }
    img_compression c;
    bool enc;
    assert_int_equal(img__layer_type(&c, &enc, "application/vnd.oci.image.layer.v1.tar+bzip2", &e),
                     -EINVAL);
    assert_err_has(e, "unknown layer media type");
    err_clear(&e);
    assert_int_equal(img__layer_type(&c, &enc, "+encrypted", &e), -EINVAL);
    assert_string_equal(img__oci_layer_type(IMG_COMP_ZSTD, true),
                        "application/vnd.oci.image.layer.v1.tar+zstd+encrypted");
}

/* ---- ocicrypt ---- */

static void test_privopts(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    img_privopts p = {0}, q;
    for (size_t i = 0; i < 32; i++)
        p.symkey[i] = (uint8_t)i;
    for (size_t i = 0; i < 16; i++)
        p.nonce[i] = (uint8_t)(0xf0 + i);
    memcpy(p.digest, D1, IMG_DIGEST_MAX);
    size_t size;
    char *s = img__privopts_emit(&p, &size);
    assert_string_equal(s, "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\","
                           "\"digest\":\"" D1 "\",\"cipheroptions\":{\"nonce\":"
                           "\"8PHy8/T19vf4+fr7/P3+/w==\"}}");
    assert_int_equal(img__privopts_parse(&q, s, size, &e), 0);
    assert_memory_equal(&p, &q, sizeof(p));
    crypto_free_secret(s, size + 1);

    /* Extra members are ignored (as Go does); key order does not matter. */
    const char *reordered = "{\"cipheroptions\":{\"nonce\":\"8PHy8/T19vf4+fr7/P3+/w==\",\"x\":"
                            "\"\"},\"digest\":\"" D1 "\",\"extra\":1,\"symkey\":"
                            "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}";
    assert_int_equal(img__privopts_parse(&q, reordered, strlen(reordered), &e), 0);
    assert_memory_equal(&p, &q, sizeof(p));

    static const char *const bad[] = {
        /* symkey 31 bytes */
        "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\",\"digest\":\"" D1
        "\",\"cipheroptions\":{\"nonce\":\"8PHy8/T19vf4+fr7/P3+/w==\"}}",
        /* nonce 12 bytes */
        "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\",\"digest\":\"" D1
        "\",\"cipheroptions\":{\"nonce\":\"8PHy8/T19vf4+fr7\"}}",
        /* digest not sha256 */
        "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\",\"digest\":\"md5:00\","
        "\"cipheroptions\":{\"nonce\":\"8PHy8/T19vf4+fr7/P3+/w==\"}}",
        /* base64url is not standard base64 */
        "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\",\"digest\":\"" D1
        "\",\"cipheroptions\":{\"nonce\":\"8PHy8_T19vf4-fr7_P3-_w==\"}}",
        "{\"symkey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\",\"digest\":\"" D1 "\"}",
        "[]",
        "{\"symkey\":1}",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (img__privopts_parse(&q, bad[i], strlen(bad[i]), &e) == 0)
            fail_msg("accepted bad private options %zu", i);
        err_clear(&e);
    }
}

static void test_pubopts(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    uint8_t mac[32], got[32];
    for (size_t i = 0; i < 32; i++)
        mac[i] = (uint8_t)(i * 7);
    _cleanup_free_ char *ann = img__pubopts_emit(mac);
    uint8_t *raw;
    size_t n;
    assert_int_equal(b64_decode(&raw, &n, ann, strlen(ann), &e), 0);
    _cleanup_free_ char *mac64 = b64_encode(mac, 32);
    _cleanup_free_ char *want = xasprintf(
        "{\"cipher\":\"AES_256_CTR_HMAC_SHA256\",\"hmac\":\"%s\",\"cipheroptions\":{}}", mac64);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(raw, want, n);
    free(raw);
    assert_int_equal(img__pubopts_parse(got, ann, &e), 0);
    assert_memory_equal(got, mac, 32);

    const char *chacha = "{\"cipher\":\"CHACHA20_POLY1305\",\"hmac\":\"\",\"cipheroptions\":{}}";
    _cleanup_free_ char *a2 = b64_encode(chacha, strlen(chacha));
    assert_int_equal(img__pubopts_parse(got, a2, &e), -ENOTSUP);
    assert_err_has(e, "CHACHA20_POLY1305");
    err_clear(&e);
    const char *short_mac = "{\"cipher\":\"AES_256_CTR_HMAC_SHA256\",\"hmac\":\"AAAA\"}";
    _cleanup_free_ char *a3 = b64_encode(short_mac, strlen(short_mac));
    assert_int_equal(img__pubopts_parse(got, a3, &e), -EINVAL);
    err_clear(&e);
    assert_true(img__pubopts_parse(got, "!!!", &e) < 0);
    err_clear(&e);
    assert_true(img__pubopts_parse(got, NULL, &e) < 0);
}

/* The real skopeo samples decode to exactly the values in expected.json. */
static void test_samples_expected(void **state)
{
    (void)state;
    json_error_t je;
    json_t *exp = json_load_file(SAMPLES "/expected.json", 0, &je);
    assert_non_null(exp);
    static const struct {
        const char *name;
        const char *keys[2];
    } samples[] = {
        {"enc-jwe-rsa", {"rsa-priv.pem", NULL}},
        {"enc-jwe-ec", {"ec-priv.pem", NULL}},
        {"enc-jwe-multi", {"rsa-priv.pem", "ec-priv.pem"}},
    };
    for (size_t s = 0; s < ARRAY_LEN(samples); s++) {
        json_t *x = json_object_get(exp, samples[s].name);
        assert_non_null(x);
        _cleanup_free_ char *ref = xasprintf("oci:" SAMPLES "/%s:v1", samples[s].name);
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_img_ img_image *img = NULL;
        assert_int_equal(img_open(&img, ref, &e), 0);
        assert_string_equal(img_manifest_digest(img),
                            json_string_value(json_object_get(x, "manifest_digest")));
        assert_int_equal(img_layer_count(img), 1);
        const img_layer *l = img_get_layer(img, 0);
        assert_true(l->encrypted);
        assert_string_equal(l->media_type,
                            json_string_value(json_object_get(x, "layer_mediaType")));
        assert_string_equal(l->digest,
                            json_string_value(json_object_get(x, "encrypted_layer_digest")));

        uint8_t mac[32];
        assert_int_equal(img__pubopts_parse(mac, l->enc_pubopts, &e), 0);
        _cleanup_free_ char *mac_hex = hex_encode(mac, 32);
        assert_string_equal(mac_hex, json_string_value(json_object_get(x, "hmac_hex")));

        /* Each key of the sample (both for multi) unwraps the same private options. */
        for (size_t k = 0; k < 2 && samples[s].keys[k]; k++) {
            EVP_PKEY *key = load_key(samples[s].keys[k]);
            img_privopts po;
            assert_int_equal(img__privopts_unwrap(&po, l, &key, 1, &e), 0);
            _cleanup_free_ char *sym = hex_encode(po.symkey, 32);
            _cleanup_free_ char *nonce = hex_encode(po.nonce, 16);
            assert_string_equal(sym, json_string_value(json_object_get(x, "symkey_hex")));
            assert_string_equal(nonce, json_string_value(json_object_get(x, "nonce_hex")));
            assert_string_equal(po.digest,
                                json_string_value(json_object_get(x, "plaintext_layer_digest")));
            /* Our emitter writes back the exact bytes Go wrote. */
            size_t size;
            char *text = img__privopts_emit(&po, &size);
            assert_string_equal(
                text, json_string_value(json_object_get(x, "private_options_json_exact")));
            crypto_free_secret(text, size + 1);
            EVP_PKEY_free(key);
        }

        /* Recipients as the headers show them. */
        json_t *rc = NULL;
        assert_int_equal(img__recipients_describe(&rc, l->enc_keys_jwe, &e), 0);
        json_t *hdrs = json_object_get(x, "jwe_recipient_headers");
        size_t want = json_array_size(hdrs) ? json_array_size(hdrs) : 1;
        assert_int_equal(json_array_size(rc), want);
        for (size_t i = 0; i < want; i++) {
            json_t *h = json_array_size(hdrs) ? json_array_get(hdrs, i)
                                              : json_object_get(x, "jwe_protected_header");
            json_t *r = json_array_get(rc, i);
            assert_string_equal(json_string_value(json_object_get(r, "alg")),
                                json_string_value(json_object_get(h, "alg")));
            const char *key = json_string_value(json_object_get(r, "key"));
            assert_non_null(key);
            if (!strcmp(json_string_value(json_object_get(h, "alg")), "RSA-OAEP"))
                assert_string_equal(key, "RSA-2048");
            else
                assert_string_equal(key, "EC P-256");
        }
        json_decref(rc);
        _cleanup_free_ char *summary = img__recipients_summary(l);
        assert_non_null(strstr(summary, "(RSA-2048)") ? summary : strstr(summary, "(EC P-256)"));
    }
    json_decref(exp);
}

/* pkcs7 is recognised and refused with a message naming it. */
static void test_sample_pkcs7(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    _cleanup_img_ img_image *img = NULL;
    assert_int_equal(img_open(&img, "oci:" SAMPLES "/enc-pkcs7:v1", &e), 0);
    EVP_PKEY *key = load_key("rsa-priv.pem");
    img_privopts po;
    assert_int_equal(img__privopts_unwrap(&po, img_get_layer(img, 0), &key, 1, &e), -ENOTSUP);
    assert_err_has(e, "pkcs7");
    EVP_PKEY_free(key);
    json_t *o = NULL;
    assert_int_equal(img_inspect(&o, img, &e), 0);
    json_t *r = json_array_get(
        json_object_get(
            json_object_get(json_array_get(json_object_get(o, "layers"), 0), "encryption"),
            "recipients"),
        0);
    assert_string_equal(json_string_value(json_object_get(r, "scheme")), "pkcs7");
    json_decref(o);
}

static void test_jwe_split(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    char **v = NULL;
    _cleanup_free_ char *a = b64_encode("{\"a\":1}", 7);
    _cleanup_free_ char *b = b64_encode("{\"b\":2}", 7);
    _cleanup_free_ char *joined = xasprintf("%s,%s", a, b);
    assert_int_equal(img__jwe_split(&v, joined, &e), 0);
    assert_string_equal(v[0], "{\"a\":1}");
    assert_string_equal(v[1], "{\"b\":2}");
    assert_null(v[2]);
    img__strv_free(v);
    assert_true(img__jwe_split(&v, "", &e) < 0);
    err_clear(&e);
    assert_true(img__jwe_split(&v, "abc,", &e) < 0);
    err_clear(&e);
    assert_true(img__jwe_split(&v, "AA==", &e) < 0); /* a NUL byte */
    err_clear(&e);
    json_t *rc = NULL;
    _cleanup_free_ char *junk = b64_encode("not json", 8);
    assert_true(img__recipients_describe(&rc, junk, &e) < 0);
}

/* ---- streaming stages ---- */

static uint8_t *collect(img_rd *rd, size_t *size, cista_error **e, int *ret)
{
    cbuf b = CBUF_INIT;
    for (;;) {
        uint8_t *p;
        ssize_t n = img__rd_read(rd, &p, e);
        if (n <= 0) {
            *ret = (int)n;
            break;
        }
        buf_put(&b, p, (size_t)n);
    }
    return buf_steal(&b, size);
}

static uint8_t *pattern(size_t size)
{
    uint8_t *p = xmalloc(size);
    uint32_t x = 12345;
    for (size_t i = 0; i < size; i++) {
        x = x * 1103515245u + 12345u;
        /* Compressible but not trivially so. */
        p[i] = (uint8_t)((x >> 16) % 17 + 'a');
    }
    return p;
}

static void test_stream_compress(void **state)
{
    (void)state;
    size_t size = 3 * IMG_CHUNK + 12345;
    _cleanup_free_ uint8_t *data = pattern(size);
    static const img_compression comps[] = {IMG_COMP_GZIP, IMG_COMP_ZSTD};
    for (size_t c = 0; c < ARRAY_LEN(comps); c++) {
        _cleanup_err_ cista_error *e = NULL;
        int r;
        size_t zsize, back_size;
        img_rd *rd = img__rd_compress(img__rd_mem(data, size, 100000), comps[c], 0);
        _cleanup_free_ uint8_t *z = collect(rd, &zsize, &e, &r);
        img__rd_free(rd);
        assert_int_equal(r, 0);
        assert_true(zsize < size);
        /* Decompress through small chunks, checking the digest of the result. */
        char want[IMG_DIGEST_MAX], got[IMG_DIGEST_MAX];
        uint8_t raw[32];
        crypto_hash_oneshot(CRYPTO_SHA256, data, size, raw);
        img__sha256_digest(want, raw);
        rd = img__rd_digest(img__rd_decompress(img__rd_mem(z, zsize, 777), comps[c]),
                            IMG_CHECK_DIFFID, want, got);
        _cleanup_free_ uint8_t *back = collect(rd, &back_size, &e, &r);
        img__rd_free(rd);
        assert_int_equal(r, 0);
        assert_int_equal(back_size, size);
        assert_memory_equal(back, data, size);
        assert_string_equal(got, want);

        /* Truncated stream: an error, never a short success. */
        rd = img__rd_decompress(img__rd_mem(z, zsize - 5, 0), comps[c]);
        free(collect(rd, &back_size, &e, &r));
        img__rd_free(rd);
        assert_int_equal(r, -EBADMSG);
        assert_err_has(e, "truncated");
        err_clear(&e);

        /* Trailing garbage after the last member/frame. */
        _cleanup_free_ uint8_t *tail = xmalloc(zsize + 8);
        memcpy(tail, z, zsize);
        memcpy(tail + zsize, "garbage!", 8);
        rd = img__rd_decompress(img__rd_mem(tail, zsize + 8, 0), comps[c]);
        free(collect(rd, &back_size, &e, &r));
        img__rd_free(rd);
        assert_int_equal(r, -EBADMSG);
        err_clear(&e);

        /* Empty input. */
        rd = img__rd_decompress(img__rd_mem("", 0, 0), comps[c]);
        free(collect(rd, &back_size, &e, &r));
        img__rd_free(rd);
        assert_int_equal(r, -EBADMSG);
        assert_err_has(e, "empty");
    }
}

static void test_stream_gzip_multimember(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    int r;
    size_t n1, n2, out_size;
    img_rd *rd = img__rd_compress(img__rd_mem("hello ", 6, 0), IMG_COMP_GZIP, 0);
    _cleanup_free_ uint8_t *m1 = collect(rd, &n1, &e, &r);
    img__rd_free(rd);
    rd = img__rd_compress(img__rd_mem("world", 5, 0), IMG_COMP_GZIP, 9);
    _cleanup_free_ uint8_t *m2 = collect(rd, &n2, &e, &r);
    img__rd_free(rd);
    _cleanup_free_ uint8_t *both = xmalloc(n1 + n2);
    memcpy(both, m1, n1);
    memcpy(both + n1, m2, n2);
    /* Chunks of 3 bytes split headers and trailers across reads. */
    rd = img__rd_decompress(img__rd_mem(both, n1 + n2, 3), IMG_COMP_GZIP);
    _cleanup_free_ uint8_t *out = collect(rd, &out_size, &e, &r);
    img__rd_free(rd);
    assert_int_equal(r, 0);
    assert_int_equal(out_size, 11);
    assert_memory_equal(out, "hello world", 11);
    /* A corrupted CRC is caught. */
    both[n1 - 6] ^= 1;
    rd = img__rd_decompress(img__rd_mem(both, n1 + n2, 0), IMG_COMP_GZIP);
    free(collect(rd, &out_size, &e, &r));
    img__rd_free(rd);
    assert_int_equal(r, -EBADMSG);
}

/* One gzip member made by zlib; with hdr, the optional header fields (FEXTRA, FNAME,
 * FCOMMENT, FHCRC) are present, as some producers write them. */
static uint8_t *gzip_member(const uint8_t *data, size_t size, int level, bool hdr, size_t *out)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    gz_header h = {0};
    if (hdr) {
        h.extra = (Bytef *)"XY\x02\x00hi";
        h.extra_len = 6;
        h.name = (Bytef *)"layer.tar";
        h.comment = (Bytef *)"a comment";
        h.hcrc = 1;
        assert_int_equal(deflateSetHeader(&z, &h), Z_OK);
    }
    size_t cap = deflateBound(&z, (uLong)size) + 64;
    uint8_t *buf = xmalloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)size;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out = cap - z.avail_out;
    deflateEnd(&z);
    return buf;
}

static int gunzip(const uint8_t *z, size_t zsize, size_t chunk, uint8_t **out, size_t *out_size,
                  cista_error **e)
{
    int r;
    img_rd *rd = img__rd_decompress(img__rd_mem(z, zsize, chunk), IMG_COMP_GZIP);
    *out = collect(rd, out_size, e, &r);
    img__rd_free(rd);
    return r;
}

/* Members larger than a chunk, header fields, odd read sizes, and the ways a gzip layer
 * can be bad: each a clean -EBADMSG naming the member. */
static void test_stream_gzip_edges(void **state)
{
    (void)state;
    size_t size = 2 * IMG_CHUNK + 4321, split = IMG_CHUNK + IMG_CHUNK / 2;
    _cleanup_free_ uint8_t *data = pattern(size);
    size_t n1, n2;
    _cleanup_free_ uint8_t *m1 = gzip_member(data, split, 1, false, &n1);
    _cleanup_free_ uint8_t *m2 = gzip_member(data + split, size - split, 9, true, &n2);
    size_t zsize = n1 + n2;
    _cleanup_free_ uint8_t *z = xmalloc(zsize + 8);
    memcpy(z, m1, n1);
    memcpy(z + n1, m2, n2);
    static const size_t chunks[] = {0, 7, 777, 65536};
    for (size_t i = 0; i < ARRAY_LEN(chunks); i++) {
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_free_ uint8_t *out = NULL;
        size_t out_size;
        int r = gunzip(z, zsize, chunks[i], &out, &out_size, &e);
        if (r != 0) {
            _cleanup_free_ char *m = err_str(e);
            fail_msg("chunk %zu: %s", chunks[i], m);
        }
        assert_int_equal(out_size, size);
        assert_memory_equal(out, data, size);
    }
    /* Member 2's header: 10 fixed bytes, FEXTRA (2 + 6), "layer.tar\0", "a comment\0",
     * then the FHCRC. */
    size_t hcrc_at = n1 + 10 + 8 + 10 + 10;
    const struct {
        const char *name;
        size_t at; /* offset to flip bits at; SIZE_MAX: append tail instead */
        uint8_t mask;
        const char *tail;
        size_t tail_size;
        const char *msg;
    } bad[] = {
        {"garbage after the last member", SIZE_MAX, 0, "garbage!", 8, "trailing data"},
        {"half a magic after the last member", SIZE_MAX, 0, "\x1f", 1, "truncated"},
        {"a second magic but no header", SIZE_MAX, 0, "\x1f\x8b\x08", 3, "member 3"},
        {"corrupt deflate data in member 1", 1000, 0xff, NULL, 0, "corrupt in member 1"},
        {"CRC32 of member 2", zsize - 8, 0x01, NULL, 0, "corrupt in member 2"},
        {"ISIZE of member 2", zsize - 4, 0x01, NULL, 0, "corrupt in member 2"},
        {"header magic of member 2", n1, 0x01, NULL, 0, "trailing data"},
        {"header magic of member 1", 0, 0x01, NULL, 0, "does not start with a gzip header"},
        {"compression method of member 1", 2, 0x01, NULL, 0, "not deflate"},
        {"reserved flag in member 1", 3, 0x20, NULL, 0, "reserved header flags"},
        {"header CRC16 of member 2", hcrc_at, 0x01, NULL, 0, "header CRC16"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_free_ uint8_t *b = xmalloc(zsize + 8);
        memcpy(b, z, zsize);
        size_t bsize = zsize;
        if (bad[i].tail) {
            memcpy(b + zsize, bad[i].tail, bad[i].tail_size);
            bsize += bad[i].tail_size;
        } else {
            b[bad[i].at] ^= bad[i].mask;
        }
        for (size_t c = 0; c < ARRAY_LEN(chunks); c++) {
            _cleanup_free_ uint8_t *out = NULL;
            size_t out_size;
            int r = gunzip(b, bsize, chunks[c], &out, &out_size, &e);
            if (r != -EBADMSG || !e)
                fail_msg("%s (chunk %zu): got %d", bad[i].name, chunks[c], r);
            assert_err_has(e, bad[i].msg);
            err_clear(&e);
        }
    }
    /* zlib-wrapped and raw deflate are not gzip layers. */
    _cleanup_err_ cista_error *e = NULL;
    uint8_t zl[64];
    uLongf zl_size = sizeof(zl);
    assert_int_equal(compress(zl, &zl_size, (const Bytef *)"hello", 5), Z_OK);
    _cleanup_free_ uint8_t *out = NULL;
    size_t out_size;
    assert_int_equal(gunzip(zl, zl_size, 0, &out, &out_size, &e), -EBADMSG);
}

static void test_stream_ctr_hmac(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    size_t size = IMG_CHUNK + 999;
    _cleanup_free_ uint8_t *data = pattern(size);
    uint8_t key[32], nonce[16], mac[32];
    memset(key, 0x42, sizeof(key));
    memset(nonce, 0xff, sizeof(nonce)); /* the counter wraps: 128-bit big-endian increment */
    int r;
    size_t ct_size, pt_size;
    img_rd *rd = img__rd_ctr(img__rd_mem(data, size, 4096), true, key, nonce, mac);
    _cleanup_free_ uint8_t *ct = collect(rd, &ct_size, &e, &r);
    img__rd_free(rd);
    assert_int_equal(r, 0);
    assert_int_equal(ct_size, size);
    /* The HMAC is over the ciphertext, keyed with the layer key. */
    uint8_t want[32];
    crypto_hmac *h = crypto_hmac_new(CRYPTO_SHA256, key, 32);
    crypto_hmac_update(h, ct, ct_size);
    crypto_hmac_final(h, want);
    crypto_hmac_free(h);
    assert_memory_equal(mac, want, 32);
    /* CTR agrees with the one-shot primitive. */
    _cleanup_free_ uint8_t *ref = xmalloc(size);
    crypto_ctr *c = crypto_ctr_new(key, nonce);
    crypto_ctr_update(c, data, ref, size);
    crypto_ctr_free(c);
    assert_memory_equal(ref, ct, size);

    rd = img__rd_ctr(img__rd_mem(ct, ct_size, 0), false, key, nonce, mac);
    _cleanup_free_ uint8_t *pt = collect(rd, &pt_size, &e, &r);
    img__rd_free(rd);
    assert_int_equal(r, 0);
    assert_memory_equal(pt, data, size);

    ct[size / 2] ^= 0x10;
    rd = img__rd_ctr(img__rd_mem(ct, ct_size, 0), false, key, nonce, mac);
    free(collect(rd, &pt_size, &e, &r));
    img__rd_free(rd);
    assert_int_equal(r, -EBADMSG);
    assert_err_has(e, "HMAC");
}

static void test_stream_fd_sizes(void **state)
{
    (void)state;
    _cleanup_free_ char *path = tmp_path("blob");
    spit(path, "0123456789", 10);
    static const struct {
        uint64_t size;
        int ret;
        const char *msg;
    } cases[] = {{10, 0, NULL}, {11, -EBADMSG, "truncated"}, {9, -EBADMSG, "more bytes"}};
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        img_rd *rd = img__rd_fd(fd, cases[i].size, NULL);
        int r = img__rd_drain(rd, &e);
        img__rd_free(rd);
        assert_int_equal(r, cases[i].ret);
        if (cases[i].msg)
            assert_err_has(e, cases[i].msg);
    }
}

/* ---- pack and unpack ---- */

static void pack(const char *src, const char *dst, EVP_PKEY **rcpts, size_t n, img_compress c)
{
    _cleanup_err_ cista_error *e = NULL;
    img_pack_opts o = {.recipients = rcpts, .recipient_count = n, .compress = c};
    if (img_pack(src, dst, &o, &e) < 0) {
        _cleanup_free_ char *s = err_str(e);
        fail_msg("pack %s %s: %s", src, dst, s);
    }
}

static int unpack(const char *ref, const char *rootfs, EVP_PKEY **keys, size_t n, cista_error **e)
{
    _cleanup_img_ img_image *img = NULL;
    int r = img_open(&img, ref, e);
    if (r < 0)
        return r;
    return img_unpack(img, rootfs, keys, n, NULL, e);
}

static void assert_sample_tree(const char *rootfs)
{
    _cleanup_free_ char *p1 = xasprintf("%s/app/hello.txt", rootfs);
    _cleanup_free_ char *p2 = xasprintf("%s/app/main.py", rootfs);
    size_t n;
    _cleanup_free_ char *a = slurp(p1, &n);
    assert_non_null(a);
    assert_string_equal(a, "hello from an ocicrypt test layer\n");
    _cleanup_free_ char *b = slurp(p2, &n);
    assert_non_null(b);
    assert_string_equal(b, "print(\"secret python code\")\n");
    struct stat st;
    assert_int_equal(stat(p1, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
}

static void test_unpack_samples(void **state)
{
    (void)state;
    EVP_PKEY *rsa = load_key("rsa-priv.pem"), *ec = load_key("ec-priv.pem");
    static const struct {
        const char *ref;
        int key; /* 0 none, 1 rsa, 2 ec */
    } cases[] = {
        {PLAIN, 0},
        {"oci:" SAMPLES "/enc-jwe-rsa:v1", 1},
        {"oci:" SAMPLES "/enc-jwe-ec:v1", 2},
        {"oci:" SAMPLES "/enc-jwe-multi:v1", 1},
        {"oci:" SAMPLES "/enc-jwe-multi:v1", 2},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_free_ char *root = xasprintf("%s/root%zu", g_tmp, i);
        EVP_PKEY *k = cases[i].key == 1 ? rsa : ec;
        if (unpack(cases[i].ref, root, &k, cases[i].key ? 1 : 0, &e) < 0) {
            _cleanup_free_ char *s = err_str(e);
            fail_msg("unpack %s: %s", cases[i].ref, s);
        }
        assert_sample_tree(root);
        assert_false(staging_left(g_tmp));
    }
    /* Both keys offered, only one matches: fine. */
    _cleanup_err_ cista_error *e = NULL;
    EVP_PKEY *both[2] = {ec, rsa};
    _cleanup_free_ char *root = tmp_path("both");
    assert_int_equal(unpack("oci:" SAMPLES "/enc-jwe-rsa:v1", root, both, 2, &e), 0);
    /* Into an existing empty directory: allowed, replaced by rename. */
    _cleanup_free_ char *empty = tmp_path("empty");
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(unpack(PLAIN, empty, NULL, 0, &e), 0);
    assert_sample_tree(empty);
    /* Not empty now: refused, and left alone. */
    assert_int_equal(unpack(PLAIN, empty, NULL, 0, &e), -EEXIST);
    assert_err_has(e, "not empty");
    assert_sample_tree(empty);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

static void test_pack_roundtrip(void **state)
{
    (void)state;
    static const img_compress comps[] = {IMG_COMPRESS_KEEP, IMG_COMPRESS_GZIP, IMG_COMPRESS_ZSTD,
                                         IMG_COMPRESS_NONE};
    EVP_PKEY *both[2] = {g_rsa, g_ec};
    for (size_t c = 0; c < ARRAY_LEN(comps); c++) {
        for (size_t nk = 0; nk <= 2; nk++) {
            _cleanup_free_ char *dst = xasprintf("oci:%s/img-%zu-%zu:t", g_tmp, c, nk);
            pack(PLAIN, dst, both, nk, comps[c]);
            _cleanup_err_ cista_error *e = NULL;
            _cleanup_img_ img_image *img = NULL;
            assert_int_equal(img_open(&img, dst, &e), 0);
            const img_layer *l = img_get_layer(img, 0);
            assert_int_equal(l->encrypted, nk > 0);
            /* Config and diff_ids unchanged whatever the compression. */
            assert_string_equal(img_config_digest(img), "sha256:b5aa37061e2151f31fe61e8264651b0"
                                                        "26cd7d1890c6a3d7710b2d4215cdb8f6e");
            if (comps[c] == IMG_COMPRESS_KEEP && nk == 0)
                assert_string_equal(l->digest, "sha256:7735dbc10bba09520a0f6f189f0925af08678e16"
                                               "26b099b3d1811942a27d7846");
            for (size_t k = 0; k < (nk ? nk : 1); k++) {
                _cleanup_free_ char *root = xasprintf("%s/root-%zu-%zu-%zu", g_tmp, c, nk, k);
                if (img_unpack(img, root, &both[k], nk ? 1 : 0, NULL, &e) < 0) {
                    _cleanup_free_ char *s = err_str(e);
                    fail_msg("unpack %s: %s", dst, s);
                }
                assert_sample_tree(root);
            }
            if (nk) {
                json_t *o = NULL;
                assert_int_equal(img_inspect(&o, img, &e), 0);
                json_t *rc = json_object_get(
                    json_object_get(json_array_get(json_object_get(o, "layers"), 0), "encryption"),
                    "recipients");
                assert_int_equal(json_array_size(rc), nk);
                json_decref(o);
            }
        }
    }
    /* A second tag in the same layout keeps the first. */
    _cleanup_free_ char *d1 = xasprintf("oci:%s/multi:a", g_tmp);
    _cleanup_free_ char *d2 = xasprintf("oci:%s/multi:b", g_tmp);
    _cleanup_free_ char *d3 = xasprintf("oci:%s/multi", g_tmp);
    pack(PLAIN, d1, NULL, 0, IMG_COMPRESS_KEEP);
    pack(PLAIN, d2, NULL, 0, IMG_COMPRESS_ZSTD);
    pack(PLAIN, d2, NULL, 0, IMG_COMPRESS_GZIP); /* replaces tag b */
    _cleanup_err_ cista_error *e = NULL;
    _cleanup_img_ img_image *a = NULL, *b = NULL, *x = NULL;
    assert_int_equal(img_open(&a, d1, &e), 0);
    assert_int_equal(img_open(&b, d2, &e), 0);
    assert_int_equal(img_get_layer(b, 0)->compression, IMG_COMP_GZIP);
    assert_int_equal(img_open(&x, d3, &e), -EINVAL); /* two tags: must name one */
    assert_err_has(e, "name one with :TAG");
}

static void test_pack_refusals(void **state)
{
    (void)state;
    _cleanup_free_ char *enc = xasprintf("oci:%s/enc:v1", g_tmp);
    pack(PLAIN, enc, &g_rsa, 1, IMG_COMPRESS_KEEP);
    _cleanup_err_ cista_error *e = NULL;
    /* Re-encrypting an encrypted layer: refused, nothing created. */
    _cleanup_free_ char *dst = xasprintf("oci:%s/re:v1", g_tmp);
    _cleanup_free_ char *dst_dir = tmp_path("re");
    img_pack_opts o = {.recipients = &g_ec, .recipient_count = 1};
    assert_int_equal(img_pack(enc, dst, &o, &e), -EINVAL);
    assert_err_has(e, "already encrypted");
    assert_false(exists(dst_dir));
    err_clear(&e);
    img_pack_opts z = {.compress = IMG_COMPRESS_ZSTD};
    assert_int_equal(img_pack(enc, dst, &z, &e), -EINVAL);
    assert_err_has(e, "cannot be recompressed");
    err_clear(&e);
    /* Without keys: copied as is, and still decrypts. */
    assert_int_equal(img_pack(enc, dst, NULL, &e), 0);
    _cleanup_free_ char *root = tmp_path("re-root");
    assert_int_equal(unpack(dst, root, &g_rsa, 1, &e), 0);
    assert_sample_tree(root);
    img_pack_opts lv = {.compress = IMG_COMPRESS_GZIP, .level = 12};
    assert_int_equal(img_pack(PLAIN, dst, &lv, &e), -EINVAL);
    assert_err_has(e, "out of range");
    err_clear(&e);
    /* The destination must be an OCI layout reference. */
    assert_int_equal(img_pack(PLAIN, "docker-archive:/tmp/x.tar", NULL, &e), -EINVAL);
    err_clear(&e);
    /* A directory that is not a layout is not overwritten. */
    _cleanup_free_ char *junk = tmp_path("junk");
    assert_int_equal(mkdir(junk, 0755), 0);
    _cleanup_free_ char *junkfile = tmp_path("junk/file");
    spit(junkfile, "x", 1);
    _cleanup_free_ char *junkref = xasprintf("oci:%s", junk);
    assert_int_equal(img_pack(PLAIN, junkref, NULL, &e), -EEXIST);
    assert_true(exists(junkfile));
}

/* ---- tampering: rewrite a layout the way an attacker with write access would ---- */

typedef struct {
    char *dir;
    json_t *manifest;
} layout;

static void blob_path(char *out, size_t size, const char *dir, const char *digest)
{
    snprintf(out, size, "%s/blobs/sha256/%s", dir, digest + 7);
}

static void blob_put(char digest[IMG_DIGEST_MAX], const char *dir, const void *data, size_t size)
{
    uint8_t raw[32];
    crypto_hash_oneshot(CRYPTO_SHA256, data, size, raw);
    img__sha256_digest(digest, raw);
    char path[4096];
    blob_path(path, sizeof(path), dir, digest);
    spit(path, data, size);
}

static layout layout_load(const char *dir)
{
    layout l = {xstrdup(dir), NULL};
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", dir);
    json_t *idx = json_load_file(path, 0, NULL);
    assert_non_null(idx);
    const char *d = json_string_value(
        json_object_get(json_array_get(json_object_get(idx, "manifests"), 0), "digest"));
    blob_path(path, sizeof(path), dir, d);
    l.manifest = json_load_file(path, 0, NULL);
    assert_non_null(l.manifest);
    json_decref(idx);
    return l;
}

/* Write the (modified) manifest and point the index's only tag at it. */
static void layout_store(layout *l)
{
    char *text = json_dumps(l->manifest, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char digest[IMG_DIGEST_MAX];
    blob_put(digest, l->dir, text, strlen(text));
    json_t *idx = json_pack("{s:i,s:[{s:s,s:s,s:I,s:{s:s}}]}", "schemaVersion", 2, "manifests",
                            "mediaType", IMG_MT_OCI_MANIFEST, "digest", digest, "size",
                            (json_int_t)strlen(text), "annotations", IMG_ANN_REF_NAME, "v1");
    char *itext = json_dumps(idx, JSON_COMPACT);
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", l->dir);
    spit(path, itext, strlen(itext));
    free(itext);
    free(text);
    json_decref(idx);
    json_decref(l->manifest);
    free(l->dir);
}

static json_t *layer0(layout *l)
{
    return json_array_get(json_object_get(l->manifest, "layers"), 0);
}

static char *layer0_path(layout *l)
{
    char path[4096];
    blob_path(path, sizeof(path), l->dir, json_string_value(json_object_get(layer0(l), "digest")));
    return xstrdup(path);
}

typedef enum {
    T_TRUNCATE,
    T_EXTRA,
    T_DIGEST,
    T_BITFLIP_REHASHED,
    T_DIFFID,
    T_MEDIATYPE,
    T_CIPHER,
    T_PRIVOPTS_DIGEST,
    T_NO_PUBOPTS,
    T_BAD_JWE,
    T_WRONG_KEY,
    T_NO_KEY,
    T_BAD_MANIFEST_JSON,
    T_BAD_DIGEST_IN_MANIFEST,
} tamper;

static void do_tamper(const char *dir, tamper t)
{
    layout l = layout_load(dir);
    _cleanup_free_ char *lp = layer0_path(&l);
    size_t size;
    _cleanup_free_ char *blob = slurp(lp, &size);
    assert_non_null(blob);
    json_t *ly = layer0(&l);
    char digest[IMG_DIGEST_MAX];
    switch (t) {
    case T_TRUNCATE:
        assert_int_equal(truncate(lp, (off_t)size - 1), 0);
        break;
    case T_EXTRA: {
        _cleanup_free_ char *more = xmalloc(size + 1);
        memcpy(more, blob, size);
        more[size] = 'x';
        spit(lp, more, size + 1);
        break;
    }
    case T_DIGEST:
        blob[size / 2] ^= 0x01;
        spit(lp, blob, size);
        break;
    case T_BITFLIP_REHASHED:
        /* Flip one bit and fix up the descriptor: only the HMAC can notice. */
        blob[size / 2] ^= 0x01;
        blob_put(digest, dir, blob, size);
        json_object_set_new(ly, "digest", json_string(digest));
        break;
    case T_DIFFID: {
        json_t *cd = json_object_get(l.manifest, "config");
        char path[4096];
        blob_path(path, sizeof(path), dir, json_string_value(json_object_get(cd, "digest")));
        json_t *cfg = json_load_file(path, 0, NULL);
        json_array_set_new(json_object_get(json_object_get(cfg, "rootfs"), "diff_ids"), 0,
                           json_string(D1));
        char *text = json_dumps(cfg, JSON_COMPACT);
        blob_put(digest, dir, text, strlen(text));
        json_object_set_new(cd, "digest", json_string(digest));
        json_object_set_new(cd, "size", json_integer((json_int_t)strlen(text)));
        free(text);
        json_decref(cfg);
        break;
    }
    case T_MEDIATYPE:
        json_object_set_new(ly, "mediaType",
                            json_string("application/vnd.oci.image.layer.v1.tar+lz4"));
        break;
    case T_CIPHER: {
        const char *p = "{\"cipher\":\"AES_128_GCM\",\"hmac\":\"\",\"cipheroptions\":{}}";
        _cleanup_free_ char *b = b64_encode(p, strlen(p));
        json_object_set_new(json_object_get(ly, "annotations"), IMG_ANN_PUBOPTS, json_string(b));
        break;
    }
    case T_PRIVOPTS_DIGEST: {
        /* Someone holding a recipient key re-wraps options naming other data. */
        _cleanup_err_ cista_error *e = NULL;
        img_layer il = {0};
        il.enc_keys_jwe = (char *)json_string_value(
            json_object_get(json_object_get(ly, "annotations"), IMG_ANN_KEYS_JWE));
        img_privopts po;
        assert_int_equal(img__privopts_unwrap(&po, &il, &g_rsa, 1, &e), 0);
        memcpy(po.digest, D2, IMG_DIGEST_MAX);
        char *ann = NULL;
        assert_int_equal(img__privopts_wrap(&ann, &po, &g_rsa, 1, &e), 0);
        json_object_set_new(json_object_get(ly, "annotations"), IMG_ANN_KEYS_JWE, json_string(ann));
        free(ann);
        break;
    }
    case T_NO_PUBOPTS:
        json_object_del(json_object_get(ly, "annotations"), IMG_ANN_PUBOPTS);
        break;
    case T_BAD_JWE: {
        _cleanup_free_ char *b = b64_encode("{\"protected\":1}", 15);
        json_object_set_new(json_object_get(ly, "annotations"), IMG_ANN_KEYS_JWE, json_string(b));
        break;
    }
    case T_BAD_DIGEST_IN_MANIFEST:
        json_object_set_new(ly, "digest", json_string("sha256:../../../../../../etc/passwd"));
        break;
    case T_BAD_MANIFEST_JSON: {
        /* A manifest blob that is not JSON, correctly indexed. */
        json_decref(l.manifest);
        free(l.dir);
        const char *junk = "{\"schemaVersion\":2,";
        blob_put(digest, dir, junk, strlen(junk));
        json_t *idx = json_pack("{s:i,s:[{s:s,s:s,s:I,s:{s:s}}]}", "schemaVersion", 2, "manifests",
                                "mediaType", IMG_MT_OCI_MANIFEST, "digest", digest, "size",
                                (json_int_t)strlen(junk), "annotations", IMG_ANN_REF_NAME, "v1");
        char *itext = json_dumps(idx, JSON_COMPACT);
        char path[4096];
        snprintf(path, sizeof(path), "%s/index.json", dir);
        spit(path, itext, strlen(itext));
        free(itext);
        json_decref(idx);
        return;
    }
    case T_WRONG_KEY:
    case T_NO_KEY:
        break;
    }
    layout_store(&l);
}

static void test_unpack_failures(void **state)
{
    (void)state;
    static const struct {
        tamper t;
        int ret;
        const char *msg;
        bool at_open; /* the image does not even open */
    } cases[] = {
        {T_TRUNCATE, -EBADMSG, "truncated", false},
        {T_EXTRA, -EBADMSG, "longer than it should be", false},
        {T_DIGEST, -EBADMSG, "sha256 of the blob", false},
        {T_BITFLIP_REHASHED, -EBADMSG, "HMAC-SHA256 of the ciphertext", false},
        {T_DIFFID, -EBADMSG, "diff_id", false},
        {T_MEDIATYPE, -EINVAL, "unknown layer media type", false},
        {T_CIPHER, -ENOTSUP, "AES_128_GCM", false},
        {T_PRIVOPTS_DIGEST, -EBADMSG, "private options say", false},
        {T_NO_PUBOPTS, -EINVAL, "pubopts", false},
        {T_BAD_JWE, -EINVAL, "unwrap the layer key from JWE 1", false},
        {T_WRONG_KEY, -ENOKEY, "no key matches any recipient", false},
        {T_NO_KEY, -ENOKEY, "give the matching private key", false},
        {T_BAD_MANIFEST_JSON, -EINVAL, "invalid JSON", true},
        {T_BAD_DIGEST_IN_MANIFEST, -EINVAL, "malformed", true},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        _cleanup_free_ char *dir = xasprintf("%s/t%zu", g_tmp, i);
        _cleanup_free_ char *ref = xasprintf("oci:%s:v1", dir);
        pack(PLAIN, ref, &g_rsa, 1, i % 2 ? IMG_COMPRESS_ZSTD : IMG_COMPRESS_KEEP);
        do_tamper(dir, cases[i].t);
        _cleanup_err_ cista_error *e = NULL;
        _cleanup_img_ img_image *img = NULL;
        int r = img_open(&img, ref, &e);
        if (cases[i].at_open) {
            assert_int_equal(r, cases[i].ret);
            assert_err_has(e, cases[i].msg);
            continue;
        }
        if (r < 0) {
            _cleanup_free_ char *s = err_str(e);
            fail_msg("case %zu: open failed: %s", i, s);
        }
        _cleanup_free_ char *root = xasprintf("%s/rootfs%zu", g_tmp, i);
        EVP_PKEY *key = cases[i].t == T_WRONG_KEY ? g_rsa2 : g_rsa;
        r = img_unpack(img, root, &key, cases[i].t == T_NO_KEY ? 0 : 1, NULL, &e);
        if (r != cases[i].ret) {
            _cleanup_free_ char *s = e ? err_str(e) : xstrdup("(no error)");
            fail_msg("case %zu: expected %d, got %d: %s", i, cases[i].ret, r, s);
        }
        assert_err_has(e, cases[i].msg);
        /* Every message names the layer. */
        assert_err_has(e, "layer 1/1 (sha256:");
        assert_false(exists(root));
        assert_false(staging_left(g_tmp));
    }
}

/* A plaintext layer whose gzip is corrupted: reported as a digest mismatch, not a gzip error. */
static void test_unpack_reports_root_cause(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = tmp_path("cause");
    _cleanup_free_ char *ref = xasprintf("oci:%s:v1", dir);
    pack(PLAIN, ref, NULL, 0, IMG_COMPRESS_KEEP);
    do_tamper(dir, T_DIGEST);
    _cleanup_err_ cista_error *e = NULL;
    _cleanup_free_ char *root = tmp_path("cause-root");
    assert_int_equal(unpack(ref, root, NULL, 0, &e), -EBADMSG);
    assert_err_has(e, "sha256 of the blob");
    assert_false(exists(root));
}

/* ---- archives ---- */

static void tar_add(struct archive *a, const char *name, const void *data, size_t size)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(a, data, size), (la_ssize_t)size);
    archive_entry_free(e);
}

static void tar_add_file(struct archive *a, const char *name, const char *path)
{
    size_t size;
    _cleanup_free_ char *data = slurp(path, &size);
    assert_non_null(data);
    tar_add(a, name, data, size);
}

static void test_archives(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    /* oci-archive: a tar of the plain layout. */
    _cleanup_free_ char *oa = tmp_path("plain.tar");
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, oa), ARCHIVE_OK);
    static const char *const files[] = {
        "oci-layout", "index.json",
        "blobs/sha256/93a5add5c26ed21f3336ad08c3d20df43aab44ca8fa9a0f7b0f084fd2ff6878e",
        "blobs/sha256/7735dbc10bba09520a0f6f189f0925af08678e1626b099b3d1811942a27d7846",
        "blobs/sha256/b5aa37061e2151f31fe61e8264651b026cd7d1890c6a3d7710b2d4215cdb8f6e"};
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        _cleanup_free_ char *p = xasprintf(SAMPLES "/plain/%s", files[i]);
        _cleanup_free_ char *n = xasprintf("./%s", files[i]);
        tar_add_file(a, n, p);
    }
    archive_write_close(a);
    archive_write_free(a);
    _cleanup_free_ char *oref = xasprintf("oci-archive:%s:v1", oa);
    _cleanup_free_ char *oroot = tmp_path("oa-root");
    assert_int_equal(unpack(oref, oroot, NULL, 0, &e), 0);
    assert_sample_tree(oroot);

    /* docker-archive: manifest.json + config + an uncompressed layer.tar (last, as docker). */
    size_t gz_size, tar_size;
    _cleanup_free_ char *gz = slurp(SAMPLES "/plain/blobs/sha256/7735dbc10bba09520a0f6f189f0925"
                                            "af08678e1626b099b3d1811942a27d7846",
                                    &gz_size);
    int r;
    img_rd *rd = img__rd_decompress(img__rd_mem(gz, gz_size, 0), IMG_COMP_GZIP);
    _cleanup_free_ uint8_t *tar = collect(rd, &tar_size, &e, &r);
    img__rd_free(rd);
    assert_int_equal(r, 0);
    _cleanup_free_ char *da = tmp_path("docker.tar");
    a = archive_write_new();
    archive_write_set_format_ustar(a);
    assert_int_equal(archive_write_open_filename(a, da), ARCHIVE_OK);
    tar_add(a, "abcd/layer.tar", tar, tar_size);
    tar_add_file(a, "b5aa3706.json",
                 SAMPLES "/plain/blobs/sha256/b5aa37061e2151f31fe61e8264651b026cd7d1890c6a3d7710b"
                         "2d4215cdb8f6e");
    const char *mj = "[{\"Config\":\"b5aa3706.json\",\"RepoTags\":[\"sample:v1\"],"
                     "\"Layers\":[\"abcd/layer.tar\"]}]";
    tar_add(a, "manifest.json", mj, strlen(mj));
    archive_write_close(a);
    archive_write_free(a);
    _cleanup_free_ char *dref = xasprintf("docker-archive:%s:sample:v1", da);
    _cleanup_img_ img_image *img = NULL;
    assert_int_equal(img_open(&img, dref, &e), 0);
    const img_layer *l = img_get_layer(img, 0);
    assert_int_equal(l->compression, IMG_COMP_NONE);
    /* For an uncompressed layer the digest is the diff_id. */
    assert_string_equal(l->digest, l->diff_id);
    _cleanup_free_ char *droot = tmp_path("da-root");
    assert_int_equal(img_unpack(img, droot, NULL, 0, NULL, &e), 0);
    assert_sample_tree(droot);
    /* docker-archive -> encrypted, gzip-compressed OCI layout -> unpack. */
    _cleanup_free_ char *dst = xasprintf("oci:%s/from-docker:v1", g_tmp);
    pack(dref, dst, &g_ec, 1, IMG_COMPRESS_GZIP);
    _cleanup_free_ char *eroot = tmp_path("from-docker-root");
    assert_int_equal(unpack(dst, eroot, &g_ec, 1, &e), 0);
    assert_sample_tree(eroot);
    /* A name that is not in RepoTags. */
    _cleanup_free_ char *nref = xasprintf("docker-archive:%s:other:v1", da);
    _cleanup_img_ img_image *none = NULL;
    assert_int_equal(img_open(&none, nref, &e), -ENOENT);
    assert_err_has(e, "\"sample:v1\"");
    err_clear(&e);
    /* Not an archive at all. */
    _cleanup_free_ char *bad = xasprintf("docker-archive:%s", SAMPLES "/expected.json");
    assert_true(img_open(&none, bad, &e) < 0);
}

/* ---- pipeline (pipe stages on worker threads) ---- */

/* A source that hands out @chunks chunks of @size bytes of pattern, then fails (or ends). */
typedef struct {
    img_rd base;
    const uint8_t *data;
    size_t size, chunks, done;
    bool fail;
    _Atomic bool reached_end;
    uint8_t *buf;
} rd_test_src;

static ssize_t test_src_read(img_rd *r, uint8_t **buf, cista_error **err)
{
    rd_test_src *t = (rd_test_src *)r;
    if (t->done == t->chunks) {
        ssize_t n =
            t->fail ? err_set(err, -EBADMSG, "test source fails after chunk %zu", t->done) : 0;
        atomic_store(&t->reached_end, true);
        return n;
    }
    memcpy(t->buf, t->data + t->done * t->size, t->size);
    t->done++;
    *buf = t->buf;
    return (ssize_t)t->size;
}

static void test_src_destroy(img_rd *r)
{
    rd_test_src *t = (rd_test_src *)r;
    free(t->buf);
    free(t);
}

static rd_test_src *test_src(const uint8_t *data, size_t size, size_t chunks, bool fail)
{
    rd_test_src *t = xzalloc(sizeof(*t));
    t->base.read = test_src_read;
    t->base.destroy = test_src_destroy;
    t->data = data;
    t->size = size;
    t->chunks = chunks;
    t->fail = fail;
    t->buf = xmalloc(size);
    return t;
}

static void digest_of(char out[IMG_DIGEST_MAX], const void *data, size_t size)
{
    uint8_t raw[32];
    crypto_hash_oneshot(CRYPTO_SHA256, data, size, raw);
    img__sha256_digest(out, raw);
}

/* Many chunks through two pipes with a decompressor between them: same bytes, same order. */
static void test_pipe_multichunk(void **state)
{
    (void)state;
    size_t size = 11 * IMG_CHUNK + 4321; /* several times the ring */
    _cleanup_free_ uint8_t *data = pattern(size);
    char want[IMG_DIGEST_MAX], tap[IMG_DIGEST_MAX], top[IMG_DIGEST_MAX];
    digest_of(want, data, size);
    static const img_compression comps[] = {IMG_COMP_NONE, IMG_COMP_GZIP, IMG_COMP_ZSTD};
    for (size_t c = 0; c < ARRAY_LEN(comps); c++) {
        _cleanup_err_ cista_error *e = NULL;
        int r;
        size_t zsize, back_size;
        img_rd *rd = img__rd_pipe(img__rd_compress(img__rd_mem(data, size, 65536), comps[c], 1));
        _cleanup_free_ uint8_t *z = collect(rd, &zsize, &e, &r);
        img__rd_free(rd);
        assert_int_equal(r, 0);
        rd = img__rd_digest(img__rd_mem(z, zsize, 100003), IMG_CHECK_NONE, NULL, tap);
        rd = img__rd_pipe(rd);
        rd = img__rd_decompress(rd, comps[c]);
        rd = img__rd_pipe(rd);
        rd = img__rd_digest(rd, IMG_CHECK_DIFFID, want, top);
        _cleanup_free_ uint8_t *back = collect(rd, &back_size, &e, &r);
        assert_int_equal(r, 0);
        assert_null(e);
        /* The end is sticky and silent, as for any stage. */
        uint8_t *p;
        assert_int_equal(img__rd_read(rd, &p, &e), 0);
        img__rd_free(rd);
        assert_int_equal(back_size, size);
        assert_memory_equal(back, data, size);
        assert_string_equal(top, want);
        char zwant[IMG_DIGEST_MAX];
        digest_of(zwant, z, zsize);
        assert_string_equal(tap, zwant);
    }
}

/* The worker's error arrives after every chunk before it, with its message, once. */
static void test_pipe_producer_error(void **state)
{
    (void)state;
    size_t chunk = 70000, chunks = 3 * IMG_PIPE_DEPTH + 1;
    _cleanup_free_ uint8_t *data = pattern(chunk * chunks);
    rd_test_src *src = test_src(data, chunk, chunks, true);
    img_rd *rd = img__rd_pipe(img__rd_pipe(&src->base));
    _cleanup_err_ cista_error *e = NULL;
    size_t got_size;
    int r;
    _cleanup_free_ uint8_t *got = collect(rd, &got_size, &e, &r);
    assert_int_equal(r, -EBADMSG);
    assert_err_has(e, "test source fails after chunk 13");
    assert_int_equal(got_size, chunk * chunks);
    assert_memory_equal(got, data, got_size);
    /* Sticky: the same code again, no second message. */
    err_clear(&e);
    uint8_t *p;
    assert_int_equal(img__rd_read(rd, &p, &e), -EBADMSG);
    assert_null(e);
    /* Delivered, so there is nothing left to collect. */
    assert_int_equal(img__rd_stop(rd, NULL, &e), 0);
    assert_null(e);
    img__rd_free(rd);

    /* A failing first read. */
    src = test_src(data, chunk, 0, true);
    rd = img__rd_pipe(&src->base);
    assert_int_equal(img__rd_read(rd, &p, &e), -EBADMSG);
    assert_err_has(e, "after chunk 0");
    img__rd_free(rd);
}

/*
 * The consumer gives up early (a tar error, or the end-of-archive marker):
 * img__rd_stop() joins the workers, the stages below are the caller's again
 * and can be drained, and every byte passed the taps below exactly once.
 */
static void test_pipe_consumer_stop(void **state)
{
    (void)state;
    size_t size = 40 * IMG_CHUNK + 17;
    _cleanup_free_ uint8_t *data = pattern(size);
    char want[IMG_DIGEST_MAX], tap[IMG_DIGEST_MAX];
    digest_of(want, data, size);
    for (size_t consumed = 0; consumed < 4; consumed++) {
        _cleanup_err_ cista_error *e = NULL;
        img_rd *below = img__rd_digest(img__rd_mem(data, size, 0), IMG_CHECK_BLOB, want, tap);
        img_rd *rd = img__rd_pipe(img__rd_pipe(below));
        uint8_t *p;
        for (size_t i = 0; i < consumed; i++)
            assert_int_equal(img__rd_read(rd, &p, &e), (ssize_t)IMG_CHUNK);
        assert_int_equal(img__rd_stop(rd, below, &e), 0);
        assert_null(e);
        /* The pipes are finished: further reads fail instead of hanging. */
        assert_true(img__rd_read(rd, &p, &e) < 0);
        err_clear(&e);
        assert_int_equal(img__rd_drain(below, &e), 0);
        assert_string_equal(tap, want);
        img__rd_free(rd);
    }
    /* Freeing with the worker blocked on a full ring does not hang either. */
    img_rd *rd = img__rd_pipe(img__rd_pipe(img__rd_mem(data, size, 0)));
    uint8_t *p;
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(img__rd_read(rd, &p, &e), (ssize_t)IMG_CHUNK);
    usleep(20000);
    img__rd_free(rd);
}

/*
 * A worker that ran ahead and failed while the consumer was still busy:
 * img__rd_stop() hands over that error (the real cause), once.
 */
static void test_pipe_error_ahead(void **state)
{
    (void)state;
    size_t chunk = 4096;
    _cleanup_free_ uint8_t *data = pattern(chunk * 2);
    rd_test_src *src = test_src(data, chunk, 2, true);
    img_rd *rd = img__rd_pipe(&src->base);
    _cleanup_err_ cista_error *e = NULL;
    uint8_t *p;
    assert_int_equal(img__rd_read(rd, &p, &e), (ssize_t)chunk);
    /* The ring holds 4: the worker reaches the failure without waiting for us. */
    for (int i = 0; i < 2000 && !atomic_load(&src->reached_end); i++)
        usleep(1000);
    /* Past its stop check: the worker records the error whatever stop says now. */
    assert_true(atomic_load(&src->reached_end));
    assert_int_equal(img__rd_stop(rd, NULL, &e), -EBADMSG);
    assert_err_has(e, "test source fails after chunk 2");
    err_clear(&e);
    assert_int_equal(img__rd_stop(rd, NULL, &e), 0);
    assert_null(e);
    img__rd_free(rd);
}

/* A layer of many chunks, packed (recompressed, encrypted) and unpacked through the pipelines. */
static void test_pipe_large_layer(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    size_t big_size = 9 * IMG_CHUNK + 333;
    _cleanup_free_ uint8_t *big = pattern(big_size);
    /* Less compressible data too, so the compressed blob also spans several chunks. */
    size_t rnd_size = 5 * IMG_CHUNK;
    _cleanup_free_ uint8_t *rnd = xmalloc(rnd_size);
    assert_int_equal(crypto_random(rnd, rnd_size, &e), 0);

    /* layer.tar */
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    size_t cap = big_size + rnd_size + (1u << 20), tar_size = 0;
    _cleanup_free_ uint8_t *tar = xmalloc(cap);
    assert_int_equal(archive_write_open_memory(a, tar, cap, &tar_size), ARCHIVE_OK);
    tar_add(a, "big/pattern.bin", big, big_size);
    tar_add(a, "big/random.bin", rnd, rnd_size);
    tar_add(a, "small.txt", "tail\n", 5);
    archive_write_close(a);
    archive_write_free(a);
    char diff_id[IMG_DIGEST_MAX];
    digest_of(diff_id, tar, tar_size);

    /* docker-archive around it. */
    _cleanup_free_ char *plat = xstrdup(img__host_platform());
    char *arch = strchr(plat, '/');
    assert_non_null(arch);
    *arch++ = '\0';
    char *variant = strchr(arch, '/');
    if (variant)
        *variant = '\0';
    _cleanup_free_ char *cfg = xasprintf("{\"architecture\":\"%s\",\"os\":\"%s\",\"rootfs\":{"
                                         "\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
                                         arch, plat, diff_id);
    _cleanup_free_ char *da = tmp_path("big.tar");
    a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, da), ARCHIVE_OK);
    tar_add(a, "l/layer.tar", tar, tar_size);
    tar_add(a, "c.json", cfg, strlen(cfg));
    const char *mj =
        "[{\"Config\":\"c.json\",\"RepoTags\":[\"big:v1\"],\"Layers\":[\"l/layer.tar\"]}]";
    tar_add(a, "manifest.json", mj, strlen(mj));
    archive_write_close(a);
    archive_write_free(a);
    _cleanup_free_ char *dref = xasprintf("docker-archive:%s:big:v1", da);

    static const img_compress comps[] = {IMG_COMPRESS_NONE, IMG_COMPRESS_GZIP, IMG_COMPRESS_ZSTD};
    for (size_t c = 0; c < ARRAY_LEN(comps); c++) {
        for (int enc = 0; enc < 2; enc++) {
            _cleanup_free_ char *dst = xasprintf("oci:%s/big-%zu-%d:v1", g_tmp, c, enc);
            pack(dref, dst, &g_rsa, enc ? 1 : 0, comps[c]);
            _cleanup_free_ char *root = xasprintf("%s/big-root-%zu-%d", g_tmp, c, enc);
            if (unpack(dst, root, &g_rsa, enc ? 1 : 0, &e) < 0) {
                _cleanup_free_ char *s = err_str(e);
                fail_msg("unpack %s: %s", dst, s);
            }
            _cleanup_free_ char *p1 = xasprintf("%s/big/pattern.bin", root);
            _cleanup_free_ char *p2 = xasprintf("%s/big/random.bin", root);
            _cleanup_free_ char *p3 = xasprintf("%s/small.txt", root);
            size_t n;
            _cleanup_free_ char *b1 = slurp(p1, &n);
            assert_int_equal(n, big_size);
            assert_memory_equal(b1, big, big_size);
            _cleanup_free_ char *b2 = slurp(p2, &n);
            assert_int_equal(n, rnd_size);
            assert_memory_equal(b2, rnd, rnd_size);
            _cleanup_free_ char *b3 = slurp(p3, &n);
            assert_int_equal(n, 5);
            assert_memory_equal(b3, "tail\n", 5);
        }
    }

    /* Corrupt the middle of the big encrypted gzip layer: the HMAC is the reported cause. */
    _cleanup_free_ char *dir = xasprintf("%s/big-1-1", g_tmp);
    _cleanup_free_ char *ref = xasprintf("oci:%s:v1", dir);
    _cleanup_img_ img_image *img = NULL;
    assert_int_equal(img_open(&img, ref, &e), 0);
    const img_layer *l = img_get_layer(img, 0);
    _cleanup_free_ char *blob = xasprintf("%s/blobs/sha256/%s", dir, l->digest + 7);
    size_t bsize;
    _cleanup_free_ char *b = slurp(blob, &bsize);
    assert_true(bsize > 2 * IMG_CHUNK);
    for (size_t i = IMG_CHUNK; i < IMG_CHUNK + 64; i++)
        b[i] ^= 0x5a;
    assert_int_equal(chmod(blob, 0644), 0);
    spit(blob, b, bsize);
    _cleanup_free_ char *root = tmp_path("big-corrupt");
    /* (The blob digest fails first now; that is an integrity failure too.) */
    assert_int_equal(img_unpack(img, root, &g_rsa, 1, NULL, &e), -EBADMSG);
    assert_err_has(e, "sha256 of the blob");
    assert_false(exists(root));
    assert_false(staging_left(g_tmp));
}

/* index.json -> multi-platform index -> manifest: the host platform is picked and named. */
static void test_multiarch(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = tmp_path("ma");
    _cleanup_free_ char *ref = xasprintf("oci:%s:v1", dir);
    pack(PLAIN, ref, NULL, 0, IMG_COMPRESS_KEEP);
    layout l = layout_load(dir);
    char *text = json_dumps(l.manifest, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char mdigest[IMG_DIGEST_MAX], idigest[IMG_DIGEST_MAX];
    blob_put(mdigest, dir, text, strlen(text));
    json_t *nested = json_pack(
        "{s:i,s:s,s:[{s:s,s:s,s:i,s:{s:s,s:s}},{s:s,s:s,s:I,s:{s:s,s:s}}]}", "schemaVersion", 2,
        "mediaType", IMG_MT_OCI_INDEX, "manifests", "mediaType", IMG_MT_OCI_MANIFEST, "digest", D1,
        "size", 10, "platform", "os", "linux", "architecture", "arm64", "mediaType",
        IMG_MT_OCI_MANIFEST, "digest", mdigest, "size", (json_int_t)strlen(text), "platform", "os",
        "linux", "architecture", "amd64");
    char *ntext = json_dumps(nested, JSON_COMPACT);
    blob_put(idigest, dir, ntext, strlen(ntext));
    json_t *idx = json_pack("{s:i,s:[{s:s,s:s,s:I,s:{s:s}}]}", "schemaVersion", 2, "manifests",
                            "mediaType", IMG_MT_OCI_INDEX, "digest", idigest, "size",
                            (json_int_t)strlen(ntext), "annotations", IMG_ANN_REF_NAME, "v1");
    char *itext = json_dumps(idx, JSON_COMPACT);
    _cleanup_free_ char *ipath = xasprintf("%s/index.json", dir);
    spit(ipath, itext, strlen(itext));
    free(itext);
    free(ntext);
    free(text);
    json_decref(idx);
    json_decref(nested);
    json_decref(l.manifest);
    free(l.dir);

    _cleanup_err_ cista_error *e = NULL;
    _cleanup_img_ img_image *img = NULL;
    assert_int_equal(img_open_platform(&img, ref, "linux/amd64", &e), 0);
    assert_string_equal(img_manifest_digest(img), mdigest);
    assert_non_null(img_platform_note(img));
    assert_non_null(strstr(img_platform_note(img), "picked platform linux/amd64 from 2"));
    _cleanup_free_ char *root = tmp_path("ma-root");
    assert_int_equal(img_unpack(img, root, NULL, 0, NULL, &e), 0);
    assert_sample_tree(root);
    /* arm64 resolves to a manifest that is not in the layout. */
    _cleanup_img_ img_image *arm = NULL;
    assert_int_equal(img_open_platform(&arm, ref, "linux/arm64", &e), -ENOENT);
    assert_err_has(e, "is missing from the layout");
    err_clear(&e);
    assert_int_equal(img_open_platform(&arm, ref, "linux/ppc64le", &e), -ENOENT);
    assert_err_has(e, "no manifest for platform linux/ppc64le");
}

static void test_layout_errors(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *e = NULL;
    _cleanup_img_ img_image *img = NULL;
    assert_int_equal(img_open(&img, "oci:" SAMPLES "/plain:nope", &e), -ENOENT);
    assert_err_has(e, "no manifest tagged \"nope\" (tags: \"v1\")");
    err_clear(&e);
    assert_int_equal(img_open(&img, "oci:" SAMPLES "/keys", &e), -ENOENT);
    assert_err_has(e, "not an OCI image layout");
    err_clear(&e);
    assert_int_equal(img_open(&img, "oci:/nonexistent/dir", &e), -ENOENT);
    err_clear(&e);
    /* Symlinked index.json is refused (no FIFOs, devices or links inside a layout). */
    _cleanup_free_ char *dir = tmp_path("lnk");
    _cleanup_free_ char *ref = xasprintf("oci:%s:v1", dir);
    pack(PLAIN, ref, NULL, 0, IMG_COMPRESS_KEEP);
    _cleanup_free_ char *idx = tmp_path("lnk/index.json");
    _cleanup_free_ char *idx2 = tmp_path("lnk/index2.json");
    assert_int_equal(rename(idx, idx2), 0);
    assert_int_equal(symlink("index2.json", idx), 0);
    assert_int_equal(img_open(&img, ref, &e), -EINVAL);
    assert_err_has(e, "symbolic link");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_parse),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_index),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_docker_manifest),
        cmocka_unit_test(test_layer_types),
        cmocka_unit_test(test_privopts),
        cmocka_unit_test(test_pubopts),
        cmocka_unit_test(test_samples_expected),
        cmocka_unit_test(test_sample_pkcs7),
        cmocka_unit_test(test_jwe_split),
        cmocka_unit_test(test_stream_compress),
        cmocka_unit_test(test_stream_gzip_multimember),
        cmocka_unit_test(test_stream_gzip_edges),
        cmocka_unit_test(test_stream_ctr_hmac),
        cmocka_unit_test_setup_teardown(test_stream_fd_sizes, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_unpack_samples, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_pack_roundtrip, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_pack_refusals, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_unpack_failures, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_unpack_reports_root_cause, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_archives, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_pipe_multichunk),
        cmocka_unit_test(test_pipe_producer_error),
        cmocka_unit_test(test_pipe_consumer_stop),
        cmocka_unit_test(test_pipe_error_ahead),
        cmocka_unit_test_setup_teardown(test_pipe_large_layer, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_multiarch, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_layout_errors, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
