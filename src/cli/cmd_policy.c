/*
 * cmd_policy.c - `cista policy gen|hash|check`: generate a container policy
 * from images and Kubernetes YAML, print its hash and launch encodings, and
 * explain what the policy allows.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "policy/policy.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

static void usage_main(FILE *out)
{
    fprintf(out, "Usage: cista policy COMMAND [OPTIONS]\n"
                 "\n"
                 "Commands:\n"
                 "  gen     generate a policy from images and/or Kubernetes YAML\n"
                 "  hash    print a policy's SHA-256 and its HOST_DATA/MRCONFIGID/PCR encodings\n"
                 "  check   explain whether a policy allows an OCI config or exec process\n"
                 "\n"
                 "`cista policy COMMAND --help` for the options. Format: docs/policy.md.\n");
}

static void usage_gen(FILE *out)
{
    fprintf(out,
            "Usage: cista policy gen (--image REF)... [--pod FILE.yaml [--pod-out FILE]]\n"
            "                        [--allow-exec CMD]... [--deny-logs] [--secret SPEC]...\n"
            "                        [--volume SPEC]... [--kbs URL [--kbs-ca FILE]] -o FILE\n"
            "\n"
            "  --image REF        an image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or\n"
            "                     docker-archive:FILE[:TAG]; 'YAMLIMAGE=REF' says which image\n"
            "                     of the YAML it is (otherwise name and tag must match)\n"
            "  --pod FILE         Kubernetes YAML: Pod, Deployment, StatefulSet, DaemonSet,\n"
            "                     Job, ReplicaSet, CronJob (a multi-document stream is fine)\n"
            "  --pod-out FILE     write the YAML annotated for cista (runtimeClassName,\n"
            "                     io.cista.policy, io.cista.policy-hash)\n"
            "  --allow-exec CMD   allow exec of this exact command in every container: a JSON\n"
            "                     array '[\"sh\",\"-c\",\"date\"]' or words split on spaces\n"
            "  --deny-logs        do not allow the host to read container output\n"
            "  --secret SPEC      CONTAINER:kbs:///REPO/TYPE/TAG=/FILE or =env:NAME\n"
            "  --volume SPEC      an encrypted volume the runtime mounts:\n"
            "                     CONTAINER:VOLUME=/MOUNT/POINT,key=kbs:///REPO/TYPE/TAG\n"
            "                     [,anchor=kbs:///REPO/TYPE/TAG][,rollback=strict|reset|off]\n"
            "                     key: the KBS resource of the volume key; anchor: the KBS\n"
            "                     counter against rollback (rollback default strict with an\n"
            "                     anchor; without one only off)\n"
            "  --kbs URL          pin the key broker: keys and secrets come only from it,\n"
            "                     whatever the host asks for (recommended)\n"
            "  --kbs-ca FILE      the CA (PEM) its certificate must chain to, put into the\n"
            "                     policy (default: the TEE's system trust store)\n"
            "  -o, --output FILE  the policy (canonical JSON; '-' for stdout)\n");
}

static void usage_hash(FILE *out)
{
    fprintf(out, "Usage: cista policy hash FILE [--json]\n"
                 "\n"
                 "SHA-256 over the exact bytes of FILE and its encodings: SNP HOST_DATA (32\n"
                 "bytes), TDX MRCONFIGID (48 bytes: the digest, then 16 zero bytes), the value\n"
                 "to extend into TPM PCR 23 and the PCR after that extend, sim host_data.\n");
}

static void usage_check(FILE *out)
{
    fprintf(out, "Usage: cista policy check FILE [--config config.json] [--exec process.json]\n"
                 "                          [--container NAME]\n"
                 "\n"
                 "Exit 0 when everything asked is allowed, 3 when denied (the reason names the\n"
                 "rule and the offending field), 1 on errors.\n");
}

static int write_out(const char *path, const char *data, size_t size, cista_error **err)
{
    if (strcmp(path, "-") == 0)
        return util_write_all(STDOUT_FILENO, data, size) < 0
                   ? err_set_sys(err, -errno, "writing to stdout")
                   : 0;
    return util_write_file_atomic(AT_FDCWD, path, data, size, 0644, err);
}

/* "a b c" or a JSON array -> NULL-terminated argv (owned). */
static int parse_cmd(char ***out, const char *s, cista_error **err)
{
    char **v = NULL;
    size_t n = 0;
    if (s[0] == '[') {
        _cleanup_json_ json_t *a = NULL;
        int r = js_parse(&a, s, strlen(s), 65536, "--allow-exec", err);
        if (r < 0)
            return r;
        if (!json_is_array(a) || json_array_size(a) == 0)
            return err_set(err, -EINVAL, "usage: --allow-exec: expected a non-empty JSON array");
        v = xzalloc((json_array_size(a) + 1) * sizeof(char *));
        for (size_t i = 0; i < json_array_size(a); i++) {
            json_t *x = json_array_get(a, i);
            if (!json_is_string(x)) {
                for (size_t j = 0; j < n; j++)
                    free(v[j]);
                free(v);
                return err_set(err, -EINVAL, "usage: --allow-exec: element %zu is not a string", i);
            }
            v[n++] = xstrdup(json_string_value(x));
        }
    } else {
        _cleanup_free_ char *copy = xstrdup(s);
        char *save = NULL;
        v = xzalloc((strlen(s) / 2 + 2) * sizeof(char *));
        for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
            v[n++] = xstrdup(t);
        if (n == 0) {
            free(v);
            return err_set(err, -EINVAL, "usage: --allow-exec: empty command");
        }
    }
    *out = v;
    return 0;
}

static int parse_target(char **container, char **rest, const char *s, const char *opt,
                        cista_error **err)
{
    const char *c = strchr(s, ':');
    if (!c || c == s)
        return err_set(err, -EINVAL, "usage: %s \"%s\": expected CONTAINER:...", opt, s);
    *container = xstrndup(s, (size_t)(c - s));
    *rest = xstrdup(c + 1);
    return 0;
}

/*
 * "VOLUME=/MOUNT/POINT,key=RES[,anchor=RES][,rollback=MODE]" (@rest, split in place) into @out;
 * the values are checked by pol_gen(). -1 when malformed.
 */
static int parse_volume(pol_gen_volume *out, const char *container, char *rest)
{
    *out = (pol_gen_volume){.container = container};
    char *save = NULL;
    char *head = strtok_r(rest, ",", &save);
    char *eq = head ? strchr(head, '=') : NULL;
    if (!eq || eq == head || !eq[1])
        return -1;
    *eq = '\0';
    out->name = head;
    out->mount_point = eq + 1;
    for (char *t = strtok_r(NULL, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strncmp(t, "key=", 4) && !out->key)
            out->key = t + 4;
        else if (!strncmp(t, "anchor=", 7) && !out->anchor)
            out->anchor = t + 7;
        else if (!strncmp(t, "rollback=", 9) && !out->rollback)
            out->rollback = t + 9;
        else
            return -1;
    }
    return 0;
}

static int cmd_gen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'i'},   {"pod", required_argument, NULL, 'p'},
        {"pod-out", required_argument, NULL, 'P'}, {"allow-exec", required_argument, NULL, 'e'},
        {"deny-logs", no_argument, NULL, 'L'},     {"secret", required_argument, NULL, 's'},
        {"volume", required_argument, NULL, 'v'},  {"output", required_argument, NULL, 'o'},
        {"kbs", required_argument, NULL, 'k'},     {"kbs-ca", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *kbs_ca_file = NULL;
    _cleanup_free_ char *kbs_ca = NULL;
    const char **images = xzalloc((size_t)argc * sizeof(char *));
    char ***exec = xzalloc((size_t)argc * sizeof(char **));
    pol_gen_secret *secrets = xzalloc((size_t)argc * sizeof(*secrets));
    pol_gen_volume *volumes = xzalloc((size_t)argc * sizeof(*volumes));
    char **owned = xzalloc((size_t)argc * 3 * sizeof(char *));
    size_t owned_len = 0;
    pol_gen_opts g = {0};
    const char *pod = NULL, *pod_out = NULL, *output = NULL;
    int rc = CLI_EXIT_OK, c;
    cista_error *e = NULL;
    _cleanup_free_ char *yaml = NULL, *canon = NULL;
    size_t canon_size = 0;
    json_t *doc = NULL;
    char *yaml_out = NULL;

    while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
        char *ctr = NULL, *rest = NULL;
        switch (c) {
        case 'i':
            images[g.image_count++] = optarg;
            break;
        case 'p':
            pod = optarg;
            break;
        case 'P':
            pod_out = optarg;
            break;
        case 'e':
            if (parse_cmd(&exec[g.exec_count], optarg, &e) < 0) {
                rc = cli_fail(steal_ptr(&e));
                goto out;
            }
            g.exec_count++;
            break;
        case 'L':
            g.deny_logs = true;
            break;
        case 's':
        case 'v': {
            if (parse_target(&ctr, &rest, optarg, c == 's' ? "--secret" : "--volume", &e) < 0) {
                rc = cli_fail(steal_ptr(&e));
                goto out;
            }
            owned[owned_len++] = ctr;
            owned[owned_len++] = rest;
            if (c == 'v') {
                if (parse_volume(&volumes[g.volume_count], ctr, rest) < 0) {
                    rc = cli_usage_report("--volume wants CONTAINER:VOLUME=/MOUNT/POINT,key=kbs:///"
                                          "REPO/TYPE/TAG[,anchor=kbs:///REPO/TYPE/TAG]"
                                          "[,rollback=strict|reset|off], not ",
                                          optarg);
                    goto out;
                }
                g.volume_count++;
                break;
            }
            char *eq = strrchr(rest, '=');
            if (!eq || eq == rest || !eq[1]) {
                rc = cli_usage_report("expected =TARGET in ", optarg);
                goto out;
            }
            *eq++ = '\0';
            if (c == 's') {
                pol_gen_secret *s = &secrets[g.secret_count++];
                s->container = ctr;
                s->resource = rest;
                if (!strncmp(eq, "env:", 4))
                    s->env = eq + 4;
                else
                    s->path = eq;
            }
            break;
        }
        case 'k':
            g.kbs_url = optarg;
            break;
        case 'K':
            kbs_ca_file = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
        default:
            rc = cli_usage(usage_gen, c == 'h');
            goto out;
        }
    }
    if (optind != argc) {
        rc = cli_usage_report("unexpected argument ", argv[optind]);
        goto out;
    }
    if (!output) {
        rc = cli_usage_report("-o FILE is required", NULL);
        goto out;
    }
    if (pod_out && !pod) {
        rc = cli_usage_report("--pod-out needs --pod", NULL);
        goto out;
    }
    if (!pod && g.image_count == 0) {
        rc = cli_usage_report("give at least one --image or --pod", NULL);
        goto out;
    }
    if (kbs_ca_file && !g.kbs_url) {
        rc = cli_usage_report("--kbs-ca needs --kbs", NULL);
        goto out;
    }
    if (kbs_ca_file) {
        size_t size;
        if (util_read_file(&kbs_ca, &size, kbs_ca_file, 1u << 20, &e) < 0) {
            err_wrap(&e, "--kbs-ca");
            rc = cli_fail(steal_ptr(&e));
            goto out;
        }
        g.kbs_ca = kbs_ca;
    }
    g.images = images;
    g.exec = (const char *const *const *)exec;
    g.secrets = secrets;
    g.volumes = volumes;
    if (pod) {
        size_t size;
        if (util_read_file(&yaml, &size, pod, POL_MAX_YAML, &e) < 0) {
            err_wrap(&e, "--pod");
            rc = cli_fail(steal_ptr(&e));
            goto out;
        }
        g.pod_yaml = yaml;
        g.pod_yaml_size = size;
    }
    if (pol_gen(&doc, pod_out ? &yaml_out : NULL, &g, &e) < 0) {
        err_wrap(&e, "policy gen");
        rc = cli_fail(steal_ptr(&e));
        goto out;
    }
    canon = pol_canonical(doc, &canon_size);
    if (write_out(output, canon, canon_size, &e) < 0 ||
        (pod_out && write_out(pod_out, yaml_out, strlen(yaml_out), &e) < 0)) {
        rc = cli_fail(steal_ptr(&e));
        goto out;
    }
    if (strcmp(output, "-") != 0 && !g_cli.quiet) {
        uint8_t h[POL_HASH_SIZE];
        pol_hash(h, canon, canon_size);
        _cleanup_free_ char *hex = hex_encode(h, sizeof(h));
        if (g_cli.json)
            printf("{\"output\":\"%s\",\"sha256\":\"%s\",\"containers\":%zu}\n", output, hex,
                   json_array_size(json_object_get(doc, "containers")));
        else
            printf("wrote %s (%zu containers), sha256 %s\n", output,
                   json_array_size(json_object_get(doc, "containers")), hex);
    }
out:
    for (size_t i = 0; i < g.exec_count; i++) {
        for (char **a = exec[i]; *a; a++)
            free(*a);
        free(exec[i]);
    }
    for (size_t i = 0; i < owned_len; i++)
        free(owned[i]);
    free(owned);
    free(exec);
    free(images);
    free(secrets);
    free(volumes);
    free(yaml_out);
    json_decref(doc);
    return rc;
}

static int cmd_hash(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = g_cli.json;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else {
            return cli_usage(usage_hash, c == 'h');
        }
    }
    if (optind + 1 != argc)
        return cli_usage_report("cista policy hash FILE", NULL);
    cista_error *e = NULL;
    _cleanup_free_ char *data = NULL;
    size_t size;
    if (util_read_file(&data, &size, argv[optind], POL_MAX_POLICY, &e) < 0)
        return cli_fail(e);
    /* Hash only what would be accepted: a file that does not parse is a mistake. */
    pol_policy *p = NULL;
    if (pol_parse(&p, data, size, &e) < 0) {
        err_wrap(&e, "%s", argv[optind]);
        return cli_fail(e);
    }
    pol_free(p);
    uint8_t h[POL_HASH_SIZE];
    pol_hash(h, data, size);
    _cleanup_json_ json_t *enc = pol_hash_encodings(h);
    if (json) {
        cli_print_json_line(enc);
        return CLI_EXIT_OK;
    }
    printf("sha256          %s\n", json_string_value(json_object_get(enc, "sha256")));
    printf("snp_host_data   %s\n", json_string_value(json_object_get(enc, "snp_host_data")));
    printf("tdx_mrconfigid  %s\n", json_string_value(json_object_get(enc, "tdx_mrconfigid")));
    printf("tpm_pcr23_extend %s\n", json_string_value(json_object_get(enc, "tpm_pcr_extend")));
    printf("tpm_pcr23_value  %s\n", json_string_value(json_object_get(enc, "tpm_pcr_value")));
    printf("sim_host_data   %s\n", json_string_value(json_object_get(enc, "sim_host_data")));
    return CLI_EXIT_OK;
}

static void print_decision(const char *what, const pol_decision *d)
{
    if (g_cli.json) {
        json_t *o = json_pack("{s:s,s:b,s:s,s:s,s:s}", "request", what, "allowed", d->allowed,
                              "rule", d->rule, "field", d->field, "reason", d->reason);
        cli_print_json_line(o);
        json_decref(o);
        return;
    }
    if (d->allowed)
        printf("allow: %s: %s (rule %s)\n", what, d->reason, d->rule);
    else
        printf("deny: %s (rule %s%s%s)\n", d->reason, d->rule, *d->field ? ", field " : "",
               d->field);
}

static int check_one(const pol_policy *p, const char *container, const char *path, bool exec,
                     bool *denied)
{
    cista_error *e = NULL;
    _cleanup_free_ char *data = NULL;
    size_t size;
    if (util_read_file(&data, &size, path, POL_MAX_CONFIG, &e) < 0)
        return cli_fail(e);
    _cleanup_decision_ pol_decision d = {0};
    if (exec)
        pol_allow_exec(&d, p, container, data, size);
    else
        pol_allow_create(&d, p, container, data, size);
    print_decision(exec ? "exec" : "create", &d);
    *denied |= !d.allowed;
    return CLI_EXIT_OK;
}

static int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"exec", required_argument, NULL, 'e'},
        {"container", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *exec = NULL, *container = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'e':
            exec = optarg;
            break;
        case 'n':
            container = optarg;
            break;
        case 'h':
        default:
            return cli_usage(usage_check, c == 'h');
        }
    }
    if (optind + 1 != argc)
        return cli_usage_report("cista policy check FILE --config config.json", NULL);
    if (!config && !exec)
        return cli_usage_report("give --config and/or --exec", NULL);
    cista_error *e = NULL;
    _cleanup_pol_ pol_policy *p = NULL;
    if (pol_load_file(&p, argv[optind], &e) < 0)
        return cli_fail(e);
    bool denied = false;
    int rc;
    if (config && (rc = check_one(p, container, config, false, &denied)) != CLI_EXIT_OK)
        return rc;
    if (exec && (rc = check_one(p, container, exec, true, &denied)) != CLI_EXIT_OK)
        return rc;
    return denied ? CLI_EXIT_DENIED : CLI_EXIT_OK;
}

int cli_policy(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage(usage_main, false);
    const char *sub = argv[1];
    optind = 0; /* 0 re-initialises glibc getopt, permutation state included */
    if (!strcmp(sub, "gen"))
        return cmd_gen(argc - 1, argv + 1);
    if (!strcmp(sub, "hash"))
        return cmd_hash(argc - 1, argv + 1);
    if (!strcmp(sub, "check"))
        return cmd_check(argc - 1, argv + 1);
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))
        return cli_usage(usage_main, true);
    return cli_usage_report("unknown policy command ", sub);
}
