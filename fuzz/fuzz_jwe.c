/*
 * fuzz_jwe.c - libFuzzer target for jwe_decrypt(): the input is an untrusted
 * JWE in any serialisation. It is decrypted with a fixed set of test keys so
 * that inputs derived from the seed corpus reach the key unwrapping and
 * content decryption code, not only the parser:
 *
 *   - the ocicrypt test keys (RSA-2048 and P-256; ../shared/testdata/ocicrypt),
 *     which open the skopeo-made JWEs in the corpus;
 *   - the RFC 7520 P-384 key (Figure 108) and its A128KW key (Figure 151) and
 *     the RFC 7520 dir key (Figure 130), which open the cookbook examples.
 *
 * The keys are public test vectors, never to be used for anything else.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jose.h"
#include "util/codec.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_rsa_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDKbLpx917aJT6J\n"
                                "6slzBW+h9U6mXJSdLjWlwwb444osz85oJYIZfsIQCGOf1blW4nz2c1w+jB73S4Hm\n"
                                "aMP78TM405Xj7bscAir0qpaEiCC0U4GYW0tzq/GckEbtcO4Ajb2QqK3wKN035CWG\n"
                                "/h0+TISxcNYdJxytvQcKYfW1aV/QPJY6wlkV23tROKbpUNtNpZfEYXYFWf+Ab7YF\n"
                                "yOG33ysL0uuJ98UPnMOKQaZ9ag5aERDSUPqsZTnoh/nx5WdEu2yhS29C1Ol1E06+\n"
                                "38fQE04VD0q+obFzV89dAcXpkkcdQTzIuqUFewnepdTvjlnbg1Cgxovnh1vuRHlO\n"
                                "yB6upVH/AgMBAAECggEAXMXAHYNWAXyYUPU+Jm0TYJLg3PYJVpBbHgFoLKF8LlV/\n"
                                "L9Qg8DZcEqUFo7d8HgnnY7wzRqdJeeUtP8A8Mje1VhIC3FeULZ4AuemE2nDZLEwp\n"
                                "VP5icj0Xmr21BBWBvtc3ThlAvpS77mWtnVTRaj//gKNKPkoypp2/oE6NIfuNYg3R\n"
                                "KPeIXuTZmXrvHEs0/tA12y/3RQPRyV5hBAmPrUT4mA0DrY5txXIyV9aHxUKFESyH\n"
                                "ZNqWXonqmwbtaVymbOstW/qxfSosh79q6nNjsan1uto2qQmGSwzYbcrWmDxiPGXO\n"
                                "jwoN895J1EK9ina5kDcS9eIar0Jpg9TYMtm2+W8aAQKBgQD2iCfuy6Df2tgaHMrt\n"
                                "cY8iVmfVWHbsVREf9IoXrnzjJUCFTtEh4ctQBh6UEZPh1CkxBSr+xi/Jyy+w8aex\n"
                                "mGLwgMT2OyrB9rryEwRzQ85ij4rmhFunMiRQL641HTkKVNH4whttkBVoqj4f56Sk\n"
                                "3xY2mnmpnTKKbUXwQecfE8ITvwKBgQDSMuvRBhoUMqpAthISdS+/5H+57fFwIRsz\n"
                                "Ah7QHXV1gfOQp3qLaul8+fyv7hWQ5M4yolhyiAJKIKxARVQtqklUE117LdEkPQZH\n"
                                "YbheBEKs0ZPsvXWsQcm/HKlWvyncq3SpRe0kubdVs826/KBFjASdi4ZBtBOghy3S\n"
                                "P9Ss8CtRwQKBgFox3DJAa54aqd970z5lwpE0fY6PbArw4HAJfpBFdUmBMobTHC5C\n"
                                "NqkTZBKWD72aamuV0XIevhMc9FjPQKP39ZK5+dWANhd6llDEZmdpUlO64n2NxR55\n"
                                "eNGhcCHcjCbce2mAUpqWEU8Wod34WMM9HxphD8vfSENe0SyiX9V93A5vAoGAfxzs\n"
                                "HmtiOfSpoJh6NU9IoPK9iuKprvVWTXJqz9AAyB7d/AxLvyPYLwu+E2YXBJhZWaVz\n"
                                "d09okwtPH07NqQ/haEaNsX/zicadlW0y4SgSahATNIceMh1Ws4vRm/PejOPimLsA\n"
                                "vcTRabJiJ0G+alBSOjO17OXJOLqGqy6OnkZe7AECgYBppu+i0K8Ai4IBdWeph21+\n"
                                "GvLDjQkZHkrmbGJWripOrztrlP9b5cUalYWGKDNumfYxOVnp/b8EnDFgVHmekkRd\n"
                                "vM/kKYo7Fy/Y3qx8eghOaIDUI8m6sjl0n4jm4bxe4Nj0gHWImZ3JNieDXM+KwQKg\n"
                                "iOipL7S3dnB0W+862RspBw==\n"
                                "-----END PRIVATE KEY-----\n";

static const char g_ec_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                               "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0udGxSstG5eIM3c2\n"
                               "g6ySC3DaM3YEC6kA95Kw1FvKtDOhRANCAASDTtNWfGxQmpdjzAdUZvEDtqDqhJFg\n"
                               "Ig80XMe6FUhexa65721n+jczeT83T4BmSul60z/28C7AIaUKFLR43M1R\n"
                               "-----END PRIVATE KEY-----\n";

static const char g_p384_jwk[] = "{\"kty\":\"EC\",\"crv\":\"P-384\","
                                 "\"x\":\"YU4rRUzdmVqmRtWOs2OpDE_T5fsNIodcG8G5FWPrTPMyxpzsSOGaQL"
                                 "pe2FpxBmu2\","
                                 "\"y\":\"A8-yxCHxkfBz3hKZfI1jUYMjUhsEveZ9THuwFjH2sCNdtksRJU7D5-"
                                 "SkgaFL1ETP\","
                                 "\"d\":\"iTx2pk7wW-GqJkHcEkFQb2EFyYcO7RugmaW3mRrQVAOUiPommT0Idn"
                                 "YK2xDlZh-j\"}";

#define KEY_COUNT 5

static jwe_key g_keys[KEY_COUNT];

static EVP_PKEY *load_or_die(const char *text)
{
    EVP_PKEY *k = NULL;
    if (crypto_key_load(&k, text, strlen(text), true, NULL) < 0)
        abort();
    return k;
}

static uint8_t *secret_or_die(const char *b64, size_t *size)
{
    uint8_t *out = NULL;
    if (b64url_decode(&out, size, b64, strlen(b64), NULL) < 0)
        abort();
    return out;
}

static void init_keys(void)
{
    size_t n = 0;
    g_keys[0].pkey = load_or_die(g_rsa_pem);
    g_keys[1].pkey = load_or_die(g_ec_pem);
    g_keys[2].pkey = load_or_die(g_p384_jwk);
    g_keys[3].secret = secret_or_die("GZy6sIZ6wl9NJOKB-jnmVQ", &n);
    g_keys[3].secret_size = n;
    g_keys[4].secret = secret_or_die("XctOhJAkA-pD9Lh7ZgW_2A", &n);
    g_keys[4].secret_size = n;
    g_keys[4].alg = "dir";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        init_keys();
        ready = true;
    }
    uint8_t *pt = NULL;
    size_t pt_size = 0, idx = 0;
    cista_error *err = NULL;
    int r = jwe_decrypt(&pt, &pt_size, (const char *)data, size, g_keys, KEY_COUNT, &idx, &err);
    if (r == 0) {
        if (idx >= KEY_COUNT || err)
            abort();
        crypto_free_secret(pt, pt_size);
    } else if (!err || err->code != r) {
        abort(); /* every failure must come with its reason */
    }
    err_free(err);
    return 0;
}
