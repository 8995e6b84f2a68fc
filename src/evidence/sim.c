/*
 * sim.c - the insecure software TEE. A P-384 "platform key" in a state
 * directory signs reports laid out like SEV-SNP reports (docs/evidence.md):
 *
 *   0x000 u32 version (1)           0x010 16-byte magic "CISTA-SIM-REPORT"
 *   0x008 u64 policy (0x30000)      0x034 u32 signature algo (1, ECDSA P-384 SHA-384)
 *   0x050 report_data[64]           0x090 measurement[48]
 *   0x0C0 host_data[32]             0x1A0 platform_id[64] = SHA-512(platform SPKI DER)
 *   0x2A0 signature: r, s little-endian in 72-byte fields over bytes 0..0x29F
 *
 * Every other byte is zero and must stay zero. Anyone with the state
 * directory can forge reports, so sim is marked insecure in its claims and
 * every production or verification is logged as a warning.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/codec.h"
#include "util/log.h"
#include "util/util.h"

#define SIM_VERSION 1
#define SIM_POLICY 0x30000ull
#define SIM_KEY_FILE "platform-key.pem"
#define SIM_PUB_FILE "platform-pub.pem"
#define SIM_EXE_MAX (1ull << 31)

static const uint8_t g_magic[16] = "CISTA-SIM-REPORT";

char *ev_sim_default_dir(void)
{
    const char *e = getenv("CISTA_SIM_DIR");
    if (e && *e)
        return xstrdup(e);
    e = getenv("XDG_STATE_HOME");
    if (e && *e == '/')
        return xasprintf("%s/cista/sim", e);
    e = getenv("HOME");
    return xasprintf("%s/.local/state/cista/sim", e && *e ? e : "/var/lib");
}

static int mkdir_p(const char *path, mode_t mode, cista_error **err)
{
    _cleanup_free_ char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return err_set_sys(err, -errno, "creating %s", p);
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "creating %s", p);
    return 0;
}

int ev_sim_init(const char *state_dir, bool *out_created, cista_error **err)
{
    _cleanup_free_ char *dflt = state_dir ? NULL : ev_sim_default_dir();
    const char *dir = state_dir ? state_dir : dflt;
    if (out_created)
        *out_created = false;
    int r = mkdir_p(dir, 0700, err);
    if (r < 0)
        return err_wrap(err, "sim state directory");
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "sim state directory %s", dir);
    if (faccessat(dfd, SIM_KEY_FILE, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
        log_info("sim: platform key %s/%s already exists; keeping it", dir, SIM_KEY_FILE);
        return 0;
    }
    log_warn("INSECURE: creating a sim (software) TEE platform key in %s; sim evidence has no "
             "hardware protection and must never be accepted in production",
             dir);
    _cleanup_pkey_ EVP_PKEY *key = NULL;
    r = crypto_key_generate_ec(&key, "P-384", err);
    if (r < 0)
        return err_wrap(err, "sim platform key");
    char *priv = crypto_key_to_pem(key, true);
    _cleanup_free_ char *pub = crypto_key_to_pem(key, false);
    r = util_write_file_atomic(dfd, SIM_KEY_FILE, priv, strlen(priv), 0600, err);
    crypto_free_secret(priv, strlen(priv));
    if (r < 0)
        return err_wrap(err, "sim state directory %s", dir);
    r = util_write_file_atomic(dfd, SIM_PUB_FILE, pub, strlen(pub), 0644, err);
    if (r < 0)
        return err_wrap(err, "sim state directory %s", dir);
    if (out_created)
        *out_created = true;
    return 0;
}

static int load_key(EVP_PKEY **out, const char *state_dir, bool priv, cista_error **err)
{
    _cleanup_free_ char *dflt = state_dir ? NULL : ev_sim_default_dir();
    const char *dir = state_dir ? state_dir : dflt;
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, priv ? SIM_KEY_FILE : SIM_PUB_FILE);
    int r = crypto_key_load_file(out, path, priv, err);
    if (r < 0)
        return err_wrap(err, "sim platform key (run `cista sim init --state-dir %s` first)", dir);
    if (!crypto_key_is_ec(*out) || !crypto_key_ec_crv(*out) ||
        strcmp(crypto_key_ec_crv(*out), "P-384") != 0)
        return err_set(err, -EINVAL, "sim platform key %s is not a P-384 key", path);
    return 0;
}

int ev_sim_load_public(EVP_PKEY **out, const char *state_dir, cista_error **err)
{
    return load_key(out, state_dir, false, err);
}

/* SHA-512 of the SubjectPublicKeyInfo DER: the sim platform id. */
static int platform_id(uint8_t out[64], EVP_PKEY *key, cista_error **err)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return err_set_ssl(err, -EINVAL, "sim: cannot encode the platform public key");
    crypto_hash_oneshot(CRYPTO_SHA512, der, (size_t)n, out);
    OPENSSL_free(der);
    return 0;
}

/*
 * Platform ids of the public keys verify() saw last. i2d_PUBKEY runs OpenSSL 3's encoder
 * framework (~50 us, a tenth of the P-384 verify itself) and a verifier such as the KBS checks
 * every report against the same few configured keys. An entry is keyed by everything the SPKI
 * DER is a function of for a named-curve EC key: the group name, the point conversion form and
 * the encoded public point (public data, compared in full). Keys with explicit parameters are
 * never cached. No key object is referenced, so a freed key cannot leave a stale entry behind.
 */
#define PID_CACHE_SLOTS 8
#define PID_POINT_MAX 133 /* uncompressed P-521 */

typedef struct {
    char group[24];
    char form[16];
    uint8_t point[PID_POINT_MAX];
    size_t point_size;
} pid_fingerprint;

static struct {
    bool used;
    pid_fingerprint fp;
    uint8_t pid[64];
} g_pid_cache[PID_CACHE_SLOTS];
static unsigned g_pid_next;
static pthread_mutex_t g_pid_lock = PTHREAD_MUTEX_INITIALIZER;

/* The fingerprint of @key, or false when it cannot be cached (not a named-curve EC key). */
static bool pid_fingerprint_of(pid_fingerprint *out, EVP_PKEY *key)
{
    char enc[24] = "";
    memset(out, 0, sizeof(*out));
    OSSL_PARAM ps[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, out->group, sizeof(out->group)),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, enc, sizeof(enc)),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, out->form,
                               sizeof(out->form)),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out->point, sizeof(out->point)),
        OSSL_PARAM_END,
    };
    bool ok = EVP_PKEY_get_params(key, ps) == 1;
    for (size_t i = 0; ok && i < 4; i++)
        ok = OSSL_PARAM_modified(&ps[i]);
    ERR_clear_error();
    if (!ok || strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
        return false;
    out->point_size = ps[3].return_size;
    return out->point_size > 0 && out->point_size <= sizeof(out->point);
}

static bool pid_fingerprint_eq(const pid_fingerprint *a, const pid_fingerprint *b)
{
    return !strcmp(a->group, b->group) && !strcmp(a->form, b->form) &&
           a->point_size == b->point_size && !memcmp(a->point, b->point, a->point_size);
}

/* platform_id() through the cache (thread-safe). */
static int platform_id_cached(uint8_t out[64], EVP_PKEY *key, cista_error **err)
{
    pid_fingerprint fp;
    if (!pid_fingerprint_of(&fp, key))
        return platform_id(out, key, err);
    pthread_mutex_lock(&g_pid_lock);
    for (size_t i = 0; i < PID_CACHE_SLOTS; i++) {
        if (g_pid_cache[i].used && pid_fingerprint_eq(&g_pid_cache[i].fp, &fp)) {
            memcpy(out, g_pid_cache[i].pid, 64);
            pthread_mutex_unlock(&g_pid_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&g_pid_lock);
    int r = platform_id(out, key, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&g_pid_lock);
    unsigned slot = g_pid_next++ % PID_CACHE_SLOTS;
    g_pid_cache[slot].used = true;
    g_pid_cache[slot].fp = fp;
    memcpy(g_pid_cache[slot].pid, out, 64);
    pthread_mutex_unlock(&g_pid_lock);
    return 0;
}

/* SHA-384("cista-sim-measurement-v1" || le64 size || /proc/self/exe || le64 size || config). */
static int measure(uint8_t out[48], const void *config, size_t config_size, cista_error **err)
{
    static const char label[] = "cista-sim-measurement-v1";
    _cleanup_close_ int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "sim: opening /proc/self/exe to measure it");
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > SIM_EXE_MAX)
        return err_set(err, -EINVAL, "sim: /proc/self/exe is not a measurable regular file");
    _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA384);
    uint8_t le[8];
    crypto_hash_update(h, label, sizeof(label));
    ev__put_le64(le, (uint64_t)st.st_size);
    crypto_hash_update(h, le, sizeof(le));
    uint64_t total = 0;
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_set_sys(err, -errno, "sim: reading /proc/self/exe");
        if (n == 0)
            break;
        crypto_hash_update(h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    if (total != (uint64_t)st.st_size)
        return err_set(err, -EIO, "sim: /proc/self/exe changed while it was measured");
    ev__put_le64(le, config_size);
    crypto_hash_update(h, le, sizeof(le));
    if (config_size)
        crypto_hash_update(h, config, config_size);
    crypto_hash_final(h, out);
    return 0;
}

static int sim_get(uint8_t **out_evidence, size_t *out_evidence_size, uint8_t **out_aux,
                   size_t *out_aux_size, const uint8_t report_data[EV_REPORT_DATA_SIZE],
                   const ev_get_opts *opts, cista_error **err)
{
    ev_get_opts dflt;
    if (!opts) {
        ev_get_opts_init(&dflt);
        opts = &dflt;
    }
    _cleanup_pkey_ EVP_PKEY *key = NULL;
    int r = load_key(&key, opts->sim_state_dir, true, err);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *rep = xzalloc(SNP_REPORT_SIZE);
    ev__put_le32(rep + SNP_OFF_VERSION, SIM_VERSION);
    ev__put_le64(rep + SNP_OFF_POLICY, SIM_POLICY);
    memcpy(rep + SNP_OFF_FAMILY_ID, g_magic, sizeof(g_magic));
    ev__put_le32(rep + SNP_OFF_SIG_ALGO, 1);
    memcpy(rep + SNP_OFF_REPORT_DATA, report_data, EV_REPORT_DATA_SIZE);
    r = measure(rep + SNP_OFF_MEASUREMENT, opts->sim_config, opts->sim_config_size, err);
    if (r < 0)
        return r;
    if (opts->host_data)
        memcpy(rep + SNP_OFF_HOST_DATA, opts->host_data, EV_HOST_DATA_SIZE);
    r = platform_id(rep + SNP_OFF_CHIP_ID, key, err);
    if (r < 0)
        return r;
    r = x509_ecdsa_sign_raw(rep + SNP_OFF_SIGNATURE, rep + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE,
                            SNP_SIG_INT_SIZE, X509_LITTLE_ENDIAN, key, "SHA384", rep,
                            SNP_SIGNED_SIZE, err);
    if (r < 0)
        return err_wrap(err, "sim: signing the report");
    log_warn("INSECURE: produced sim (software TEE) evidence; it proves nothing about the "
             "platform and is accepted only where policy explicitly allows sim");
    *out_evidence = steal_ptr(&rep);
    *out_evidence_size = SNP_REPORT_SIZE;
    *out_aux = NULL;
    *out_aux_size = 0;
    return 0;
}

static bool sim_detect(const uint8_t *ev, size_t size)
{
    return size >= SNP_OFF_FAMILY_ID + sizeof(g_magic) &&
           memcmp(ev + SNP_OFF_FAMILY_ID, g_magic, sizeof(g_magic)) == 0;
}

/* Byte ranges that carry data; everything else must be zero. */
static const struct {
    size_t off, size;
} g_used[] = {
    {SNP_OFF_VERSION, 4},    {SNP_OFF_POLICY, 8},       {SNP_OFF_FAMILY_ID, 16},
    {SNP_OFF_SIG_ALGO, 4},   {SNP_OFF_REPORT_DATA, 64}, {SNP_OFF_MEASUREMENT, 48},
    {SNP_OFF_HOST_DATA, 32}, {SNP_OFF_CHIP_ID, 64},     {SNP_OFF_SIGNATURE, 2 * SNP_SIG_INT_SIZE},
};

static int check_mbz(const uint8_t *rep, cista_error **err)
{
    size_t pos = 0;
    for (size_t i = 0; i <= ARRAY_LEN(g_used); i++) {
        size_t end = i < ARRAY_LEN(g_used) ? g_used[i].off : SNP_REPORT_SIZE;
        for (size_t j = pos; j < end; j++)
            if (rep[j])
                return err_set(err, EV_E_FORMAT,
                               "sim report: reserved byte at offset 0x%03zx is 0x%02x, expected "
                               "0; the report is malformed",
                               j, rep[j]);
        if (i < ARRAY_LEN(g_used))
            pos = g_used[i].off + g_used[i].size;
    }
    return 0;
}

static int sim_verify(json_t **out, const uint8_t *ev, size_t size, const uint8_t *aux,
                      size_t aux_size, const ev_verify_opts *opts, cista_error **err)
{
    (void)aux;
    (void)aux_size;
    ev_verify_opts dflt;
    opts = ev__verify_opts_or_default(opts, &dflt);
    /*
     * Once per process: a KBS verifies sim reports by the thousand per second (a line each was
     * a log flood and a write(2) per attestation); its audit log names the tee of every one.
     */
    static bool warned;
    if (!__atomic_exchange_n(&warned, true, __ATOMIC_RELAXED))
        log_warn("INSECURE: verifying sim (software TEE) evidence; a sim report proves nothing "
                 "about the platform (said once per process)");
    if (size != SNP_REPORT_SIZE)
        return err_set(err, EV_E_SIZE,
                       "sim report: %zu bytes, expected %u; the file is truncated or padded", size,
                       SNP_REPORT_SIZE);
    if (!sim_detect(ev, size))
        return err_set(err, EV_E_FORMAT, "sim report: magic \"CISTA-SIM-REPORT\" missing at 0x010");
    uint32_t version = ev__le32(ev + SNP_OFF_VERSION);
    if (version != SIM_VERSION)
        return err_set(err, EV_E_VERSION, "sim report: version %u is not supported (expected %u)",
                       version, SIM_VERSION);
    uint32_t algo = ev__le32(ev + SNP_OFF_SIG_ALGO);
    if (algo != 1)
        return err_set(err, EV_E_VERSION,
                       "sim report: signature algorithm %u is not supported (expected 1)", algo);
    uint64_t policy = ev__le64(ev + SNP_OFF_POLICY);
    if (policy != SIM_POLICY)
        return err_set(err, EV_E_FORMAT, "sim report: policy 0x%llx, expected 0x%llx",
                       (unsigned long long)policy, (unsigned long long)SIM_POLICY);
    int r = check_mbz(ev, err);
    if (r < 0)
        return r;
    if (!opts->sim_key)
        return err_set(err, EV_E_NOKEY,
                       "sim evidence is verified only against a configured sim platform public "
                       "key (--sim-key FILE, the platform-pub.pem of `cista sim init`)");
    uint8_t pid[64];
    r = platform_id_cached(pid, opts->sim_key, err);
    if (r < 0)
        return r;
    /* The platform first: with several trusted sim keys, a report of another platform costs a
     * comparison here, not a P-384 verify (the caller tries the next key). */
    if (!crypto_memeq(pid, ev + SNP_OFF_CHIP_ID, sizeof(pid)))
        return err_set(err, EV_E_PLATFORM,
                       "sim report: its platform_id is not the configured sim key's; the report "
                       "comes from another sim platform (or was modified)");
    r = x509_ecdsa_verify_raw(opts->sim_key, "SHA384", ev, SNP_SIGNED_SIZE, ev + SNP_OFF_SIGNATURE,
                              ev + SNP_OFF_SIGNATURE + SNP_SIG_INT_SIZE, SNP_SIG_INT_SIZE,
                              X509_LITTLE_ENDIAN, err);
    if (r == -EBADMSG) {
        err_clear(err);
        return err_set(err, EV_E_SIGNATURE,
                       "sim report: signature by the sim platform key does not verify over bytes "
                       "0x000-0x29f; the report was modified");
    }
    if (r < 0)
        return err_wrap(err, "sim report signature");
    r = ev__check_report_data(opts->report_data, ev + SNP_OFF_REPORT_DATA,
                              "sim report:", "evidence", err);
    if (r < 0)
        return r;

    json_t *c = ev__claims_new("sim", true);
    json_object_set_new(c, "debug", json_false());
    json_object_set_new(c, "measurements",
                        json_pack("{s:o}", "measurement",
                                  ev__json_hex(ev + SNP_OFF_MEASUREMENT, SNP_MEASUREMENT_SIZE)));
    json_object_set_new(c, "host_data", ev__json_hex(ev + SNP_OFF_HOST_DATA, EV_HOST_DATA_SIZE));
    json_object_set_new(c, "report_data",
                        ev__json_hex(ev + SNP_OFF_REPORT_DATA, EV_REPORT_DATA_SIZE));
    json_object_set_new(c, "platform_id", ev__json_hex(ev + SNP_OFF_CHIP_ID, 64));
    json_object_set_new(c, "tcb", json_pack("{s:s,s:{}}", "status", "Unknown", "components"));
    json_object_set_new(
        c, "signers",
        json_pack("[{s:s,s:o}]", "role", "sim-platform-key", "platform_id", ev__json_hex(pid, 64)));
    json_object_set_new(c, "sim", json_pack("{s:i}", "version", (json_int_t)version));
    *out = c;
    return 0;
}

const ev_ops ev__sim_ops = {
    .name = "sim",
    .description = "insecure software TEE for development (P-384 key in a state directory)",
    .insecure = true,
    .get = sim_get,
    .verify = sim_verify,
    .detect = sim_detect,
};
