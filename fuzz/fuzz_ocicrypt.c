/*
 * fuzz_ocicrypt.c - the ocicrypt metadata of an encrypted layer, which an
 * attacker controls completely: the pubopts annotation, the keys.jwe
 * annotation (split and header inspection, no key needed), and the private
 * options JSON that a recipient unwraps. The input is fed both as the raw
 * annotation string and base64-encoded, so the JSON parsers behind the
 * base64 layer are reached too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "util/codec.h"
#include "util/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void annotation(const char *a)
{
    cista_error *e = NULL;
    uint8_t mac[32];
    if (img__pubopts_parse(mac, a, &e) < 0 && !e)
        abort(); /* every failure explains itself */
    err_clear(&e);
    char **v = NULL;
    if (img__jwe_split(&v, a, &e) == 0)
        img__strv_free(v);
    err_clear(&e);
    json_t *rc = NULL;
    if (img__recipients_describe(&rc, a, &e) == 0)
        json_decref(rc);
    err_clear(&e);
    /* The summary never fails, whatever the annotations hold. */
    img_layer l = {0};
    l.enc_keys_jwe = (char *)a;
    l.encrypted = true;
    free(img__recipients_summary(&l));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cista_error *e = NULL;
    img_privopts p;
    if (img__privopts_parse(&p, data, size, &e) == 0) {
        /* Whatever parsed must re-emit into something that parses to the same. */
        size_t n;
        char *s = img__privopts_emit(&p, &n);
        img_privopts q;
        if (img__privopts_parse(&q, s, n, &e) != 0 || memcmp(&p, &q, sizeof(p)) != 0)
            abort();
        crypto_free_secret(s, n + 1);
    }
    err_clear(&e);

    char *raw = malloc(size + 1);
    if (!raw)
        abort();
    memcpy(raw, data, size);
    raw[size] = '\0';
    annotation(raw);
    free(raw);

    char *b64 = b64_encode(data, size);
    annotation(b64);
    free(b64);
    return 0;
}
