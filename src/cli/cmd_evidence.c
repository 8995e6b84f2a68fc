/*
 * cmd_evidence.c - `cista evidence get|verify` and `cista sim init`: thin
 * argument parsing over src/evidence (ev.h); everything TEE-specific stays
 * behind the ev_ops vtable.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

/* Verification failures are security refusals (exit 3), as in docs/cli.md. */
static int report_error(const cista_error *e)
{
    int rc = cli_report(e);
    int code = e ? e->code : 0;
    if (code == EV_E_SIGNATURE || code == EV_E_CHAIN || code == EV_E_EXPIRED ||
        code == EV_E_REVOKED || code == EV_E_NOKEY || code == EV_E_PLATFORM || code == EV_E_TCB ||
        code == EV_E_REPORT_DATA || code == EV_E_POLICY || code == EV_E_FORMAT ||
        code == EV_E_VERSION || code == EV_E_SIZE || code == EV_E_MISMATCH)
        return CLI_EXIT_DENIED;
    return rc;
}

/* Up to 64 bytes of hex, zero-padded to 64. */
static int parse_report_data(uint8_t out[EV_REPORT_DATA_SIZE], const char *hex, cista_error **err)
{
    _cleanup_free_ uint8_t *b = NULL;
    size_t n = 0;
    int r = hex_decode(&b, &n, hex, strlen(hex), err);
    if (r < 0)
        return err_wrap(err, "--report-data");
    if (n > EV_REPORT_DATA_SIZE)
        return err_set(err, -EINVAL, "--report-data: %zu bytes, at most %d", n,
                       EV_REPORT_DATA_SIZE);
    memset(out, 0, EV_REPORT_DATA_SIZE);
    memcpy(out, b, n);
    return 0;
}

/* A decimal number in [@lo, @hi] into *out (strtol rules); -1 when it is not one. */
static int parse_range(long *out, const char *s, long lo, long hi)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* --vmpl N (0-3) of @cmd into *out; on a bad N, prints the usage error and returns -1. */
static int parse_vmpl(int *out, const char *cmd, const char *s)
{
    long v = 0;
    if (parse_range(&v, s, 0, 3) < 0) {
        cli_usage_error(cmd, "--vmpl must be 0-3, not \"%s\"", s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* RFC 3339 ("2025-06-01T00:00:00Z", "...+02:00") or a date ("2025-06-01", midnight UTC). */
static int parse_time(time_t *out, const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    long off = 0;
    if (!end) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, "%Y-%m-%d", &tm);
        if (!end || *end)
            return -1;
    } else {
        if (*end == '.') /* fractional seconds */
            for (end++; *end >= '0' && *end <= '9'; end++)
                ;
        if (*end == 'Z' || *end == 'z') {
            end++;
        } else if ((*end == '+' || *end == '-') && strlen(end) == 6 && end[3] == ':') {
            int h = atoi(end + 1), m = atoi(end + 4);
            off = (h * 3600L + m * 60L) * (*end == '+' ? 1 : -1);
            end += 6;
        } else {
            return -1;
        }
        if (*end)
            return -1;
    }
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = t - off;
    return 0;
}

static void print_tees(FILE *out)
{
    size_t n = 0;
    const ev_ops *const *all = ev_list(&n);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-6s %s%s\n", all[i]->name, all[i]->description,
                all[i]->insecure ? " [INSECURE]" : "");
}

/* ---- cista sim ---- */

static void sim_usage(FILE *out)
{
    fprintf(out, "Usage: cista sim init [--state-dir DIR]\n"
                 "\n"
                 "Create the platform key (P-384, 0600) of the insecure software TEE \"sim\".\n"
                 "sim evidence proves nothing about the platform: use it for development only;\n"
                 "a KBS accepts it only when its appraisal policy explicitly allows sim.\n"
                 "\n"
                 "Options:\n"
                 "  --state-dir DIR   state directory (default $CISTA_SIM_DIR, else\n"
                 "                    $XDG_STATE_HOME/cista/sim or ~/.local/state/cista/sim)\n"
                 "  -h, --help        this help\n");
}

int cli_sim(int argc, char **argv)
{
    static const struct option opts[] = {{"state-dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cli_usage(sim_usage, argc >= 2);
    if (strcmp(argv[1], "init") != 0)
        return cli_usage_error("sim", "unknown subcommand \"%s\"", argv[1]);
    const char *dir = NULL;
    optind = 0; /* GNU getopt: full re-initialisation */
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'h':
            return cli_usage(sim_usage, true);
        default:
            return cli_usage_error("sim", "bad option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("sim", "unexpected argument \"%s\"", argv[optind + 1]);
    _cleanup_free_ char *dflt = dir ? NULL : ev_sim_default_dir();
    _cleanup_err_ cista_error *err = NULL;
    bool created = false;
    if (ev_sim_init(dir ? dir : dflt, &created, &err) < 0)
        return report_error(err);
    const char *d = dir ? dir : dflt;
    if (g_cli.json) {
        json_t *o = json_pack("{s:s,s:b,s:s,s:b}", "state_dir", d, "created", created, "public_key",
                              "platform-pub.pem", "insecure", 1);
        cli_print_json_line(o);
        json_decref(o);
    } else {
        printf("%s sim platform key in %s (public key: %s/platform-pub.pem)\n",
               created ? "created" : "kept the existing", d, d);
        printf("WARNING: sim is an insecure software TEE, for development only.\n");
    }
    return CLI_EXIT_OK;
}

/* ---- cista evidence get ---- */

static void evidence_usage(FILE *out)
{
    fprintf(out, "Usage: cista evidence get --tee TEE [--report-data HEX] -o FILE [OPTIONS]\n"
                 "       cista evidence verify FILE [--tee TEE] [--collateral DIR] [OPTIONS]\n"
                 "\n"
                 "Produce attestation evidence inside a TEE, or verify evidence into normalized\n"
                 "claims (docs/claims.md). TEEs:\n");
    print_tees(out);
    fprintf(out, "\n`cista evidence get --help` and `cista evidence verify --help` list the "
                 "options.\n");
}

static void get_usage(FILE *out)
{
    fprintf(out,
            "Usage: cista evidence get --tee TEE [--report-data HEX] -o FILE [OPTIONS]\n"
            "\n"
            "Ask the TEE for evidence binding REPORT-DATA (up to 64 bytes of hex, zero-padded)\n"
            "and write it to FILE.\n"
            "\n"
            "Options:\n"
            "  --tee TEE            sim or snp\n"
            "  --report-data HEX    report data (default: 64 zero bytes)\n"
            "  -o, --output FILE    where to write the evidence\n"
            "  --aux-output FILE    write the auxiliary blob (SNP certificate table), if any\n"
            "  --state-dir DIR      sim: state directory of `cista sim init`\n"
            "  --host-data HEX      sim: 32 bytes of host data (e.g. the policy SHA-256)\n"
            "  --config FILE        sim: configuration measured with the binary\n"
            "  --tsm-dir DIR        snp: configfs-tsm report directory\n"
            "                       (default $CISTA_TSM_DIR or /sys/kernel/config/tsm/report)\n"
            "  --vmpl N             snp: VMPL (privlevel) to request\n"
            "  --tcti CONF          tpm: tpm2-tss TCTI (default $CISTA_TPM_TCTI or\n"
            "                       device:/dev/tpmrm0; swtpm:host=127.0.0.1,port=N)\n"
            "  --pcrs SPEC          tpm: PCRs to quote (default sha256:0-23)\n"
            "  --tpm-eventlog FILE  tpm: cista event log (default $CISTA_TPM_EVENTLOG or\n"
            "                       /run/cista/tpm-eventlog.jsonl)\n"
            "  -h, --help           this help\n");
}

static int write_out(const char *path, const void *data, size_t size, cista_error **err)
{
    int r = util_write_file_atomic(AT_FDCWD, path, data, size, 0644, err);
    return r < 0 ? err_wrap(err, "writing %s", path) : 0;
}

static int evidence_get(int argc, char **argv)
{
    enum {
        OPT_TEE = 1000,
        OPT_RD,
        OPT_AUX,
        OPT_STATE,
        OPT_HOST,
        OPT_CONFIG,
        OPT_TSM,
        OPT_VMPL,
        OPT_TCTI,
        OPT_PCRS,
        OPT_TPMLOG
    };
    static const struct option opts[] = {{"tee", required_argument, NULL, OPT_TEE},
                                         {"report-data", required_argument, NULL, OPT_RD},
                                         {"output", required_argument, NULL, 'o'},
                                         {"aux-output", required_argument, NULL, OPT_AUX},
                                         {"state-dir", required_argument, NULL, OPT_STATE},
                                         {"host-data", required_argument, NULL, OPT_HOST},
                                         {"config", required_argument, NULL, OPT_CONFIG},
                                         {"tsm-dir", required_argument, NULL, OPT_TSM},
                                         {"vmpl", required_argument, NULL, OPT_VMPL},
                                         {"tcti", required_argument, NULL, OPT_TCTI},
                                         {"pcrs", required_argument, NULL, OPT_PCRS},
                                         {"tpm-eventlog", required_argument, NULL, OPT_TPMLOG},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *tee = NULL, *rd_hex = NULL, *output = NULL, *aux_out = NULL, *config = NULL;
    uint8_t host_data[EV_HOST_DATA_SIZE];
    bool have_host = false;
    ev_get_opts g;
    ev_get_opts_init(&g);
    _cleanup_err_ cista_error *err = NULL;
    optind = 0; /* GNU getopt: full re-initialisation */
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEE:
            tee = optarg;
            break;
        case OPT_RD:
            rd_hex = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case OPT_AUX:
            aux_out = optarg;
            break;
        case OPT_STATE:
            g.sim_state_dir = optarg;
            break;
        case OPT_HOST:
            if (hex_decode_to(host_data, sizeof(host_data), optarg, &err) < 0)
                return cli_usage_error("evidence get", "--host-data needs 64 hex digits");
            have_host = true;
            break;
        case OPT_CONFIG:
            config = optarg;
            break;
        case OPT_TSM:
            g.tsm_dir = optarg;
            break;
        case OPT_VMPL:
            if (parse_vmpl(&g.privlevel, "evidence get", optarg) < 0)
                return CLI_EXIT_USAGE;
            break;
        case OPT_TCTI:
            g.tpm_tcti = optarg;
            break;
        case OPT_PCRS:
            g.tpm_pcrs = optarg;
            break;
        case OPT_TPMLOG:
            g.tpm_eventlog = optarg;
            break;
        case 'h':
            return cli_usage(get_usage, true);
        default:
            return cli_usage_error("evidence get", "bad option");
        }
    }
    if (optind != argc)
        return cli_usage_error("evidence get", "unexpected argument \"%s\"", argv[optind]);
    if (!tee)
        return cli_usage_error("evidence get", "--tee is required (%s)", "sim or snp");
    if (!output)
        return cli_usage_error("evidence get", "-o FILE is required");
    const ev_ops *ops = ev_find(tee);
    if (!ops || !ops->get)
        return cli_usage_error("evidence get", "unknown TEE \"%s\"", tee);
    uint8_t rd[EV_REPORT_DATA_SIZE] = {0};
    if (rd_hex && parse_report_data(rd, rd_hex, &err) < 0)
        return report_error(err);
    if (have_host)
        g.host_data = host_data;
    _cleanup_free_ char *cfg = NULL;
    size_t cfg_size = 0;
    if (config) {
        if (util_read_file(&cfg, &cfg_size, config, EV_MAX_EVIDENCE, &err) < 0)
            return report_error(err);
        g.sim_config = cfg;
        g.sim_config_size = cfg_size;
    }
    _cleanup_free_ uint8_t *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    if (ops->get(&ev, &ev_size, &aux, &aux_size, rd, &g, &err) < 0)
        return report_error(err);
    if (write_out(output, ev, ev_size, &err) < 0)
        return report_error(err);
    if (aux_out && aux_size && write_out(aux_out, aux, aux_size, &err) < 0)
        return report_error(err);
    if (g_cli.json)
        printf("{\"tee\":\"%s\",\"evidence\":\"%s\",\"size\":%zu}\n", ops->name, output, ev_size);
    else if (!g_cli.quiet)
        fprintf(stderr, "wrote %zu bytes of %s evidence to %s\n", ev_size, ops->name, output);
    return CLI_EXIT_OK;
}

/* ---- cista evidence verify ---- */

static void verify_usage(FILE *out)
{
    fprintf(out, "Usage: cista evidence verify FILE [OPTIONS]\n"
                 "\n"
                 "Verify evidence and print its normalized claims (docs/claims.md), or the check\n"
                 "that failed. Exit status 3 when the evidence is refused.\n"
                 "\n"
                 "Options:\n"
                 "  --tee TEE            kind of evidence (default: detected from the contents)\n"
                 "  --collateral DIR     certificates and CRLs (snp: VCEK or VLEK, optionally\n"
                 "                       ASK/ASVK, ARK, CRL; recognised by their contents)\n"
                 "  --aux FILE           auxiliary blob from `evidence get --aux-output`\n"
                 "                       (nvidia-gpu: the device certificate chain, PEM)\n"
                 "  --report-data HEX    expected report data (zero-padded to 64 bytes)\n"
                 "  --at TIME            verify certificates at TIME (RFC 3339, e.g.\n"
                 "                       2025-06-01T00:00:00Z; default now)\n"
                 "  --sim-key FILE       sim: trusted platform public key (platform-pub.pem)\n"
                 "  --forbid-debug       refuse evidence from a debuggable TEE\n"
                 "  --vmpl N             snp: require this VMPL\n"
                 "  --ak FILE            tpm: registered attestation key (PEM/DER SPKI or JWK)\n"
                 "  --json               print the claims as JSON\n"
                 "  -h, --help           this help\n");
}

static void print_value(const char *key, const json_t *v, int indent)
{
    if (json_is_object(v)) {
        printf("%*s%s:\n", indent, "", key);
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) print_value(k, x, indent + 2);
    } else if (json_is_array(v)) {
        printf("%*s%s:\n", indent, "", key);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            char idx[32];
            snprintf(idx, sizeof(idx), "[%zu]", i);
            print_value(idx, x, indent + 2);
        }
    } else {
        _cleanup_free_ char *s = json_dumps(v, JSON_ENCODE_ANY);
        if (json_is_string(v))
            printf("%*s%s: %s\n", indent, "", key, json_string_value(v));
        else
            printf("%*s%s: %s\n", indent, "", key, s ? s : "?");
    }
}

static int evidence_verify(int argc, char **argv)
{
    enum {
        OPT_TEE = 1000,
        OPT_COLL,
        OPT_AUX,
        OPT_RD,
        OPT_AT,
        OPT_SIMKEY,
        OPT_NODEBUG,
        OPT_VMPL,
        OPT_JSON,
        OPT_AK
    };
    static const struct option opts[] = {{"tee", required_argument, NULL, OPT_TEE},
                                         {"collateral", required_argument, NULL, OPT_COLL},
                                         {"aux", required_argument, NULL, OPT_AUX},
                                         {"report-data", required_argument, NULL, OPT_RD},
                                         {"at", required_argument, NULL, OPT_AT},
                                         {"sim-key", required_argument, NULL, OPT_SIMKEY},
                                         {"forbid-debug", no_argument, NULL, OPT_NODEBUG},
                                         {"vmpl", required_argument, NULL, OPT_VMPL},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"ak", required_argument, NULL, OPT_AK},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *tee = NULL, *coll_dir = NULL, *aux_path = NULL, *rd_hex = NULL, *sim_key = NULL;
    const char *ak_path = NULL;
    ev_verify_opts o;
    ev_verify_opts_init(&o);
    _cleanup_err_ cista_error *err = NULL;
    optind = 0; /* GNU getopt: full re-initialisation */
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEE:
            tee = optarg;
            break;
        case OPT_COLL:
            coll_dir = optarg;
            break;
        case OPT_AUX:
            aux_path = optarg;
            break;
        case OPT_RD:
            rd_hex = optarg;
            break;
        case OPT_AT:
            if (parse_time(&o.now, optarg) < 0)
                return cli_usage_error("evidence verify",
                                       "--at \"%s\" is not an RFC 3339 time (2025-06-01T00:00:00Z)",
                                       optarg);
            break;
        case OPT_SIMKEY:
            sim_key = optarg;
            break;
        case OPT_NODEBUG:
            o.forbid_debug = true;
            break;
        case OPT_VMPL:
            if (parse_vmpl(&o.vmpl, "evidence verify", optarg) < 0)
                return CLI_EXIT_USAGE;
            break;
        case OPT_JSON:
            g_cli.json = true;
            break;
        case OPT_AK:
            ak_path = optarg;
            break;
        case 'h':
            return cli_usage(verify_usage, true);
        default:
            return cli_usage_error("evidence verify", "bad option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("evidence verify", "expected one evidence FILE");
    const char *path = argv[optind];
    _cleanup_free_ char *ev = NULL, *aux = NULL;
    size_t ev_size = 0, aux_size = 0;
    if (util_read_file(&ev, &ev_size, path, EV_MAX_EVIDENCE, &err) < 0)
        return report_error(err);
    if (aux_path && util_read_file(&aux, &aux_size, aux_path, EV_MAX_EVIDENCE, &err) < 0)
        return report_error(err);
    const ev_ops *ops = tee ? ev_find(tee) : ev_detect((const uint8_t *)ev, ev_size);
    if (!ops)
        return tee ? cli_usage_error("evidence verify", "unknown TEE \"%s\"", tee)
                   : cli_usage_error("evidence verify",
                                     "cannot tell what kind of evidence %s is; pass --tee", path);
    uint8_t rd[EV_REPORT_DATA_SIZE];
    if (rd_hex) {
        if (parse_report_data(rd, rd_hex, &err) < 0)
            return report_error(err);
        o.report_data = rd;
    }
    _cleanup_collateral_ ev_collateral *coll = ev_collateral_new();
    if (coll_dir && ev_collateral_load_dir(coll, coll_dir, &err) < 0)
        return report_error(err);
    o.collateral = coll;
    _cleanup_pkey_ EVP_PKEY *sk = NULL;
    if (sim_key) {
        if (crypto_key_load_file(&sk, sim_key, false, &err) < 0)
            return report_error(err);
        o.sim_key = sk;
    }
    _cleanup_pkey_ EVP_PKEY *akk = NULL;
    if (ak_path) {
        if (crypto_key_load_file(&akk, ak_path, false, &err) < 0)
            return report_error(err);
        o.tpm_ak_pub = akk;
    }
    _cleanup_json_ json_t *claims = NULL;
    if (ops->verify(&claims, (const uint8_t *)ev, ev_size, (const uint8_t *)aux, aux_size, &o,
                    &err) < 0) {
        err_wrap(&err, "%s evidence %s", ops->name, path);
        return report_error(err);
    }
    if (g_cli.json) {
        cli_print_json(claims);
    } else {
        printf("OK: %s evidence %s verified%s\n", ops->name, path,
               ops->insecure ? " (INSECURE software TEE: proves nothing about the platform)" : "");
        const char *k;
        json_t *v;
        json_object_foreach(claims, k, v) print_value(k, v, 2);
    }
    return CLI_EXIT_OK;
}

/* ---- cista evidence extend (tpm) ---- */

static void extend_usage(FILE *out)
{
    fprintf(out, "Usage: cista evidence extend --tee tpm --pcr N --type TYPE\n"
                 "                             (--digest HEX | --file FILE) [--data TEXT]\n"
                 "                             [--tcti CONF] [--tpm-eventlog FILE]\n"
                 "\n"
                 "Extend a SHA-256 digest (given, or of FILE's bytes) into PCR N and record the\n"
                 "event {pcr, alg, digest, type, data} in the cista event log that `evidence\n"
                 "get --tee tpm` includes and `evidence verify` replays (docs/evidence.md).\n");
}

static int evidence_extend(int argc, char **argv)
{
    enum { OPT_TEE = 1000, OPT_PCR, OPT_TYPE, OPT_DIGEST, OPT_FILE, OPT_DATA, OPT_TCTI, OPT_LOG };
    static const struct option opts[] = {{"tee", required_argument, NULL, OPT_TEE},
                                         {"pcr", required_argument, NULL, OPT_PCR},
                                         {"type", required_argument, NULL, OPT_TYPE},
                                         {"digest", required_argument, NULL, OPT_DIGEST},
                                         {"file", required_argument, NULL, OPT_FILE},
                                         {"data", required_argument, NULL, OPT_DATA},
                                         {"tcti", required_argument, NULL, OPT_TCTI},
                                         {"tpm-eventlog", required_argument, NULL, OPT_LOG},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *tee = NULL, *type = NULL, *digest_hex = NULL, *file = NULL, *data = NULL;
    long pcr = -1;
    ev_get_opts g;
    ev_get_opts_init(&g);
    _cleanup_err_ cista_error *err = NULL;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEE:
            tee = optarg;
            break;
        case OPT_PCR:
            if (parse_range(&pcr, optarg, 0, 23) < 0)
                return cli_usage_error("evidence extend", "--pcr must be 0-23");
            break;
        case OPT_TYPE:
            type = optarg;
            break;
        case OPT_DIGEST:
            digest_hex = optarg;
            break;
        case OPT_FILE:
            file = optarg;
            break;
        case OPT_DATA:
            data = optarg;
            break;
        case OPT_TCTI:
            g.tpm_tcti = optarg;
            break;
        case OPT_LOG:
            g.tpm_eventlog = optarg;
            break;
        case 'h':
            return cli_usage(extend_usage, true);
        default:
            return cli_usage_error("evidence extend", "bad option");
        }
    }
    if (optind != argc || !tee || strcmp(tee, "tpm") != 0 || pcr < 0 || !type ||
        !digest_hex == !file)
        return cli_usage_error("evidence extend",
                               "needs --tee tpm, --pcr, --type and one of --digest or --file");
    uint8_t d[32];
    if (digest_hex) {
        if (hex_decode_to(d, sizeof(d), digest_hex, &err) < 0)
            return cli_usage_error("evidence extend", "--digest needs 64 hex digits");
    } else {
        _cleanup_free_ char *buf = NULL;
        size_t n = 0;
        if (util_read_file(&buf, &n, file, EV_MAX_EVIDENCE, &err) < 0)
            return report_error(err);
        crypto_hash_oneshot(CRYPTO_SHA256, buf, n, d);
    }
    if (ev_tpm_extend(&g, (unsigned)pcr, d, type, data, &err) < 0)
        return report_error(err);
    if (!g_cli.quiet)
        fprintf(stderr, "extended PCR %ld\n", pcr);
    return CLI_EXIT_OK;
}

int cli_evidence(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cli_usage(evidence_usage, argc >= 2);
    if (strcmp(argv[1], "get") == 0)
        return evidence_get(argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0)
        return evidence_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "extend") == 0)
        return evidence_extend(argc - 1, argv + 1);
    return cli_usage_error("evidence", "unknown subcommand \"%s\"", argv[1]);
}
