/*
 * cmd_image.c - `cista image inspect|pack|unpack`: argument parsing and
 * output. All the work is in src/image (image.h).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "crypto/crypto.h"
#include "image/image.h"
#include "util/json.h"
#include "util/util.h"

static void usage_image(FILE *out)
{
    fprintf(
        out,
        "Usage: cista image COMMAND [OPTIONS] ARGS\n"
        "\n"
        "Inspect, pack (encrypt) and unpack (decrypt, verify) OCI images.\n"
        "\n"
        "Commands:\n"
        "  inspect REF                 manifest, platform, config and layers (with their\n"
        "                              encryption recipients) of an image\n"
        "  pack SRC DST                copy an image into an OCI layout, optionally\n"
        "                              recompressed and encrypted (ocicrypt, skopeo-compatible)\n"
        "  unpack REF ROOTFS           verify, decrypt and unpack every layer into ROOTFS\n"
        "\n"
        "References:\n"
        "  oci:DIR[:TAG]               an OCI image layout directory\n"
        "  oci-archive:FILE[:TAG]      a tar of an OCI image layout\n"
        "  docker-archive:FILE[:TAG]   `docker save` output (TAG is REPO:TAG or @INDEX)\n"
        "\n"
        "`cista image COMMAND --help` shows the options of a command. See docs/images.md.\n");
}

static void usage_inspect(FILE *out)
{
    fprintf(out, "Usage: cista image inspect [OPTIONS] REF\n"
                 "\n"
                 "Show the manifest digest, platform, config (entrypoint, cmd, env, user,\n"
                 "working directory, exposed ports) and layers of an image: media type, size,\n"
                 "digest, diff_id, and for encrypted layers the JWE recipients as far as the\n"
                 "headers show them (algorithm, key type and size, kid). Needs no key.\n"
                 "\n"
                 "Options:\n"
                 "  --json                 print JSON instead of text\n"
                 "  --platform OS/ARCH[/VARIANT]\n"
                 "                         the platform to pick from a multi-platform index\n"
                 "                         (default: this host's, e.g. linux/amd64)\n"
                 "  -h, --help             this help\n");
}

static void usage_pack(FILE *out)
{
    fprintf(out,
            "Usage: cista image pack [OPTIONS] SRC DST\n"
            "\n"
            "Copy the image SRC into the OCI layout DST (oci:DIR[:TAG], tag \"latest\" by\n"
            "default). With --encrypt every layer is encrypted as containers/ocicrypt does\n"
            "(AES_256_CTR_HMAC_SHA256, the layer key wrapped in a JWE for every recipient), so\n"
            "`skopeo copy --decryption-key` and `cista image unpack --key` can decrypt it.\n"
            "\n"
            "Options:\n"
            "  --encrypt jwe:PUBKEY.pem   encrypt to this public key (RSA or EC, PEM/DER/JWK);\n"
            "                             repeat for several recipients\n"
            "  --compress keep|gzip|zstd|none\n"
            "                             layer compression (default keep: bytes unchanged)\n"
            "  --level N                  compression level (default: gzip 6, zstd 3)\n"
            "  --platform OS/ARCH[/VARIANT]\n"
            "                             the platform to pick from a multi-platform source\n"
            "  --json                     print the result as JSON\n"
            "  -h, --help                 this help\n");
}

static void usage_unpack(FILE *out)
{
    fprintf(out, "Usage: cista image unpack [OPTIONS] REF ROOTFS\n"
                 "\n"
                 "Verify and unpack every layer of REF into the new directory ROOTFS (which must\n"
                 "not exist, or be empty). Each layer's size, digest, HMAC (encrypted layers),\n"
                 "decrypted digest and diff_id are checked; the layers are applied in a staging\n"
                 "directory next to ROOTFS, and ROOTFS appears only when every check passed.\n"
                 "\n"
                 "Options:\n"
                 "  --key PRIV.pem          a private key for encrypted layers (PEM/DER/JWK);\n"
                 "                          repeat to offer several\n"
                 "  --platform OS/ARCH[/VARIANT]\n"
                 "                          the platform to pick from a multi-platform index\n"
                 "  --allow-devices         create device nodes found in layers (default: refuse)\n"
                 "  --no-preserve-owner     do not chown files to the owners in the layers\n"
                 "  --json                  print the result as JSON\n"
                 "  -h, --help              this help\n");
}

/* ---- progress ---- */

typedef struct {
    const char *label;
    cli_progress *bar;
} progress_ctx;

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    progress_ctx *p = ctx;
    if (!p->bar)
        p->bar = cli_progress_new(p->label, total);
    cli_progress_update(p->bar, done);
}

static void progress_end(progress_ctx *p)
{
    if (p->bar)
        cli_progress_done(p->bar);
    p->bar = NULL;
}

/* ---- keys ---- */

typedef struct {
    EVP_PKEY **v;
    size_t len;
} key_list;

static void keys_free(key_list *k)
{
    for (size_t i = 0; i < k->len; i++)
        EVP_PKEY_free(k->v[i]);
    free(k->v);
    k->v = NULL;
    k->len = 0;
}

static int keys_add(key_list *k, const char *path, bool priv, cista_error **err)
{
    EVP_PKEY *key = NULL;
    int r = crypto_key_load_file(&key, path, priv, err);
    if (r < 0)
        return err_wrap(err, "%s key %s", priv ? "private" : "public", path);
    k->v = xrealloc(k->v, (k->len + 1) * sizeof(EVP_PKEY *));
    k->v[k->len++] = key;
    return 0;
}

/* ---- output helpers ---- */

/* JSON text of a value: quotes and escapes untrusted strings for the terminal. */
static void print_json_value(const json_t *v)
{
    if (!v || json_is_null(v)) {
        fputs("(none)", stdout);
        return;
    }
    char *s = js_dump_compact(v);
    fputs(s, stdout);
    free(s);
}

/* A string as is when it is plain printable text, else JSON-quoted (escapes shown). */
static void print_word(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s) {
        print_json_value(v);
        return;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == 0x22 || *p == 0x5c) {
            print_json_value(v);
            return;
        }
    }
    fputs(s, stdout);
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void print_inspect_text(const json_t *o)
{
    const json_t *m = json_object_get(o, "manifest");
    const json_t *p = json_object_get(o, "platform");
    const json_t *c = json_object_get(o, "config");
    const json_t *layers = json_object_get(o, "layers");
    printf("Reference:    %s\n", jstr(o, "reference"));
    printf("Manifest:     %s (%s, %lld bytes%s)\n", jstr(m, "digest"), jstr(m, "media_type"),
           (long long)json_integer_value(json_object_get(m, "size")),
           json_object_get(m, "synthesized_from") ? ", synthesized from docker-archive" : "");
    printf("Platform:     ");
    print_word(json_object_get(p, "os"));
    putchar('/');
    print_word(json_object_get(p, "architecture"));
    if (json_object_get(p, "variant")) {
        putchar('/');
        print_word(json_object_get(p, "variant"));
    }
    putchar('\n');
    if (json_object_get(p, "note"))
        printf("              (%s)\n", jstr(p, "note"));
    printf("Config:       %s\n", jstr(c, "digest"));
    static const struct {
        const char *key, *label;
    } fields[] = {
        {"entrypoint", "Entrypoint"},
        {"cmd", "Cmd"},
        {"env", "Env"},
        {"user", "User"},
        {"working_dir", "WorkingDir"},
        {"exposed_ports", "ExposedPorts"},
    };
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        printf("  %-12s ", fields[i].label);
        const json_t *v = json_object_get(c, fields[i].key);
        if (json_is_string(v))
            print_word(v);
        else
            print_json_value(v);
        putchar('\n');
    }
    printf("Layers:       %zu (%lld bytes, %lld encrypted)\n", json_array_size(layers),
           (long long)json_integer_value(json_object_get(o, "layers_size")),
           (long long)json_integer_value(json_object_get(o, "encrypted_layers")));
    size_t i;
    const json_t *l;
    json_array_foreach(layers, i, l)
    {
        printf("  %zu. %s  %lld bytes  ", i + 1, jstr(l, "digest"),
               (long long)json_integer_value(json_object_get(l, "size")));
        print_word(json_object_get(l, "media_type"));
        printf("\n     diff_id %s\n", jstr(l, "diff_id"));
        const json_t *enc = json_object_get(l, "encryption");
        if (!enc)
            continue;
        if (json_object_get(enc, "cipher_error"))
            printf("     encrypted, unreadable pubopts: %s\n", jstr(enc, "cipher_error"));
        else
            printf("     encrypted with %s\n", jstr(enc, "cipher"));
        if (json_object_get(enc, "recipients_error"))
            printf("     unreadable recipients: %s\n", jstr(enc, "recipients_error"));
        size_t j;
        const json_t *rc;
        json_array_foreach(json_object_get(enc, "recipients"), j, rc)
        {
            printf("     recipient %zu: %s", j + 1, jstr(rc, "scheme"));
            if (json_is_false(json_object_get(rc, "supported"))) {
                printf(" (not supported by cista)\n");
                continue;
            }
            printf(" ");
            print_word(json_object_get(rc, "alg"));
            if (json_is_string(json_object_get(rc, "key"))) {
                printf(" (");
                print_word(json_object_get(rc, "key"));
                printf(")");
            }
            if (json_object_get(rc, "kid")) {
                printf(" kid ");
                print_json_value(json_object_get(rc, "kid"));
            }
            printf(" enc ");
            print_word(json_object_get(rc, "enc"));
            putchar('\n');
        }
    }
}

static void note_platform(const img_image *img)
{
    const char *note = img_platform_note(img);
    if (note && !g_cli.quiet)
        fprintf(stderr, "cista: note: %s\n", note);
}

/* ---- subcommands ---- */

enum {
    OPT_JSON = 256,
    OPT_PLATFORM,
    OPT_ENCRYPT,
    OPT_COMPRESS,
    OPT_LEVEL,
    OPT_KEY,
    OPT_ALLOW_DEVICES,
    OPT_NO_OWNER
};

static int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"platform", required_argument, NULL, OPT_PLATFORM},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *platform = NULL;
    bool json = g_cli.json;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            json = true;
            break;
        case OPT_PLATFORM:
            platform = optarg;
            break;
        case 'h':
            return cli_usage(usage_inspect, true);
        default:
            return cli_usage_see("image inspect", "invalid option");
        }
    }
    if (argc - optind != 1)
        return cli_usage_see("image inspect", "expected one image reference");
    cista_error *err = NULL;
    img_image *img = NULL;
    if (img_open_platform(&img, argv[optind], platform, &err) < 0)
        return cli_fail(err);
    json_t *o = NULL;
    if (img_inspect(&o, img, &err) < 0) {
        img_free(img);
        return cli_fail(err);
    }
    if (json) {
        cli_print_json(o);
    } else {
        print_inspect_text(o);
    }
    json_decref(o);
    img_free(img);
    return CLI_EXIT_OK;
}

static int cmd_pack(int argc, char **argv)
{
    static const struct option opts[] = {
        {"encrypt", required_argument, NULL, OPT_ENCRYPT},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"level", required_argument, NULL, OPT_LEVEL},
        {"platform", required_argument, NULL, OPT_PLATFORM},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    static const struct {
        const char *name;
        img_compress value;
    } comps[] = {
        {"keep", IMG_COMPRESS_KEEP},
        {"none", IMG_COMPRESS_NONE},
        {"gzip", IMG_COMPRESS_GZIP},
        {"zstd", IMG_COMPRESS_ZSTD},
    };
    img_pack_opts po = {0};
    bool json = g_cli.json;
    const char **enc = NULL;
    size_t nenc = 0;
    int c, ret = CLI_EXIT_OK;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_ENCRYPT:
            if (strncmp(optarg, "jwe:", 4) != 0 || !optarg[4]) {
                free(enc);
                return cli_usage_see("image pack",
                                     "--encrypt %s: expected jwe:PUBKEY.pem (cista wraps layer "
                                     "keys with JWE only; pkcs7, pgp and provider are not "
                                     "supported)",
                                     optarg);
            }
            enc = xrealloc(enc, (nenc + 1) * sizeof(char *));
            enc[nenc++] = optarg + 4;
            break;
        case OPT_COMPRESS: {
            bool found = false;
            for (size_t i = 0; i < ARRAY_LEN(comps); i++) {
                if (!strcmp(optarg, comps[i].name)) {
                    po.compress = comps[i].value;
                    found = true;
                }
            }
            if (!found) {
                free(enc);
                return cli_usage_see("image pack",
                                     "--compress %s: expected keep, gzip, zstd or none", optarg);
            }
            break;
        }
        case OPT_LEVEL: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 22) {
                free(enc);
                return cli_usage_see("image pack", "--level %s: expected a number from 1 to 22",
                                     optarg);
            }
            po.level = (int)v;
            break;
        }
        case OPT_PLATFORM:
            po.platform = optarg;
            break;
        case OPT_JSON:
            json = true;
            break;
        case 'h':
            free(enc);
            return cli_usage(usage_pack, true);
        default:
            free(enc);
            return cli_usage_see("image pack", "invalid option");
        }
    }
    if (argc - optind != 2) {
        free(enc);
        return cli_usage_see("image pack", "expected SRC and DST image references");
    }
    const char *src = argv[optind], *dst = argv[optind + 1];
    cista_error *err = NULL;
    key_list keys = {0};
    for (size_t i = 0; i < nenc; i++) {
        if (keys_add(&keys, enc[i], false, &err) < 0) {
            ret = cli_fail(err);
            goto out;
        }
    }
    char digest[IMG_DIGEST_MAX] = "";
    progress_ctx prog = {"pack", NULL};
    po.recipients = keys.v;
    po.recipient_count = keys.len;
    po.progress = progress_cb;
    po.progress_ctx = &prog;
    po.out_manifest_digest = digest;
    int r = img_pack(src, dst, &po, &err);
    progress_end(&prog);
    if (r < 0) {
        ret = cli_fail(err);
        goto out;
    }
    if (json) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:i}", "source", src, "destination", dst,
                              "manifest_digest", digest, "recipients", (int)keys.len);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("packed %s into %s: manifest %s%s\n", src, dst, digest,
               keys.len ? ", layers encrypted" : "");
    }
out:
    keys_free(&keys);
    free(enc);
    return ret;
}

static int cmd_unpack(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, OPT_KEY},
        {"platform", required_argument, NULL, OPT_PLATFORM},
        {"allow-devices", no_argument, NULL, OPT_ALLOW_DEVICES},
        {"no-preserve-owner", no_argument, NULL, OPT_NO_OWNER},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    img_unpack_opts uo = {0};
    const char *platform = NULL;
    bool json = g_cli.json;
    const char **keyfiles = NULL;
    size_t nkeys = 0;
    int c, ret = CLI_EXIT_OK;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY:
            keyfiles = xrealloc(keyfiles, (nkeys + 1) * sizeof(char *));
            keyfiles[nkeys++] = optarg;
            break;
        case OPT_PLATFORM:
            platform = optarg;
            break;
        case OPT_ALLOW_DEVICES:
            uo.allow_devices = true;
            break;
        case OPT_NO_OWNER:
            uo.no_preserve_owner = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        case 'h':
            free(keyfiles);
            return cli_usage(usage_unpack, true);
        default:
            free(keyfiles);
            return cli_usage_see("image unpack", "invalid option");
        }
    }
    if (argc - optind != 2) {
        free(keyfiles);
        return cli_usage_see("image unpack", "expected an image reference and a ROOTFS directory");
    }
    const char *ref = argv[optind], *rootfs = argv[optind + 1];
    cista_error *err = NULL;
    key_list keys = {0};
    img_image *img = NULL;
    for (size_t i = 0; i < nkeys; i++) {
        if (keys_add(&keys, keyfiles[i], true, &err) < 0) {
            ret = cli_fail(err);
            goto out;
        }
    }
    if (img_open_platform(&img, ref, platform, &err) < 0) {
        ret = cli_fail(err);
        goto out;
    }
    note_platform(img);
    progress_ctx prog = {"unpack", NULL};
    uo.progress = progress_cb;
    uo.progress_ctx = &prog;
    int r = img_unpack(img, rootfs, keys.v, keys.len, &uo, &err);
    progress_end(&prog);
    if (r < 0) {
        ret = cli_fail(err);
        goto out;
    }
    if (json) {
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:i}", "reference", ref, "rootfs", rootfs, "manifest_digest",
                      img_manifest_digest(img), "layers", (int)img_layer_count(img));
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("unpacked %zu layer%s of %s (manifest %s) into %s\n", img_layer_count(img),
               img_layer_count(img) == 1 ? "" : "s", ref, img_manifest_digest(img), rootfs);
    }
out:
    img_free(img);
    keys_free(&keys);
    free(keyfiles);
    return ret;
}

int cli_image(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } cmds[] = {
        {"inspect", cmd_inspect},
        {"pack", cmd_pack},
        {"unpack", cmd_unpack},
    };
    if (argc < 2)
        return cli_usage(usage_image, false);
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))
        return cli_usage(usage_image, true);
    for (size_t i = 0; i < ARRAY_LEN(cmds); i++)
        if (!strcmp(sub, cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    return cli_usage_see("image", "unknown command '%s' (inspect, pack, unpack)", sub);
}
