/*
 * tpm_int.h - internals of the TPM 2.0 quote verifier shared by tpm.c and
 * azure.c (the Azure vTPM quote is an ordinary TPM quote whose AK comes from
 * the HCL report). Not a public API.
 *
 * Every structure here is read from untrusted bytes field by field, big
 * endian, with explicit bounds (tss2-mu is used only by the producer).
 */
#ifndef CISTA_TPM_INT_H
#define CISTA_TPM_INT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evidence/ev.h"

/* TPM_ALG_ID values (TPM 2.0 Library Part 2, table 9). */
#define TPM_ALG_RSA 0x0001
#define TPM_ALG_SHA1 0x0004
#define TPM_ALG_SHA256 0x000B
#define TPM_ALG_SHA384 0x000C
#define TPM_ALG_SHA512 0x000D
#define TPM_ALG_NULL 0x0010
#define TPM_ALG_RSASSA 0x0014
#define TPM_ALG_RSAPSS 0x0016
#define TPM_ALG_ECDSA 0x0018
#define TPM_ALG_ECC 0x0023

#define TPM_GENERATED_VALUE 0xFF544347u
#define TPM_ST_ATTEST_QUOTE 0x8018

#define TPM_PCR_COUNT 24  /* PCRs 0-23 (PC client); higher indexes are refused */
#define TPM_MAX_BANKS 4   /* sha1, sha256, sha384, sha512 */
#define TPM_MAX_DIGEST 64 /* SHA-512 */
#define TPM_MAX_ATTEST 1024
#define TPM_MAX_EVENTS 4096 /* events in one log (TCG or cista) */

/* objectAttributes bits (Part 2, table 31). */
#define TPMA_FIXED_TPM (1u << 1)
#define TPMA_FIXED_PARENT (1u << 4)
#define TPMA_SENSITIVE_DATA_ORIGIN (1u << 5)
#define TPMA_RESTRICTED (1u << 16)
#define TPMA_DECRYPT (1u << 17)
#define TPMA_SIGN (1u << 18)

/* PCR values of up to TPM_MAX_BANKS banks, PCR 0-23 each. */
typedef struct {
    size_t bank_count;
    struct {
        uint16_t alg;
        uint32_t present; /* bit i: PCR i has a value */
        uint8_t value[TPM_PCR_COUNT][TPM_MAX_DIGEST];
    } bank[TPM_MAX_BANKS];
} tpm_pcrs;

/* A TPMS_ATTEST of type quote, copied out of the signed bytes. */
typedef struct {
    uint32_t magic;
    uint16_t type;
    uint8_t signer[2 + TPM_MAX_DIGEST]; /* qualifiedSigner (TPM2B_NAME contents) */
    size_t signer_size;
    uint8_t extra[64]; /* extraData (qualifying data) */
    size_t extra_size;
    uint64_t clock;
    uint32_t reset_count, restart_count;
    uint8_t safe;
    uint64_t firmware;
    size_t sel_count;
    struct {
        uint16_t alg;
        uint32_t mask; /* bit i: PCR i selected */
    } sel[TPM_MAX_BANKS];
    uint8_t pcr_digest[TPM_MAX_DIGEST];
    size_t pcr_digest_size;
} tpm_quote;

/* Digest size of a TPM hash algorithm, 0 when unknown. */
size_t ev__tpm_alg_size(uint16_t alg);
/* "sha256" for TPM_ALG_SHA256 ..., NULL when unknown. */
const char *ev__tpm_alg_name(uint16_t alg);
/* The TPM_ALG_ID of "sha1".."sha512", 0 when unknown. */
uint16_t ev__tpm_alg_by_name(const char *name);

/* Parse a marshalled TPMS_ATTEST of type quote (all bytes must be used). */
int ev__tpm_parse_quote(tpm_quote *out, const uint8_t *p, size_t size, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Parse a marshalled TPMT_PUBLIC (RSA or ECC) into a public key (new, to the
 * caller); *out_attrs gets objectAttributes. The key must be a signing key.
 */
int ev__tpm_parse_public(EVP_PKEY **out, uint32_t *out_attrs, const uint8_t *p, size_t size,
                         cista_error **err) __attribute__((warn_unused_result));

/* The quote and the values that come with it; all borrowed. */
typedef struct {
    const uint8_t *attest;
    size_t attest_size;
    const uint8_t *sig;
    size_t sig_size;
    bool sig_raw_rsassa; /* @sig is a bare RSASSA-PKCS1-v1_5/SHA-256 signature (Azure) */
    const tpm_pcrs *pcrs;
    EVP_PKEY *ak; /* the trusted attestation key */
} tpm_quote_in;

/*
 * Verify the quote: signature with @in->ak (hash from the signature), magic,
 * type, extraData against @report_data (NULL: not checked; see
 * ev__tpm_extra_matches), pcrDigest over @in->pcrs. Fills *out.
 */
int ev__tpm_verify_quote(tpm_quote *out, const tpm_quote_in *in, const uint8_t *report_data,
                         cista_error **err) __attribute__((warn_unused_result));

/*
 * The binding rule between 64 bytes of report data and the quote's
 * extraData (n bytes): extraData zero-padded to 64 bytes equals the report
 * data, or extraData is SHA-256(report data) (TPMs whose TPM2B_DATA holds
 * fewer than 64 bytes).
 */
bool ev__tpm_extra_matches(const tpm_quote *q, const uint8_t report_data[EV_REPORT_DATA_SIZE]);

/*
 * Parse a TPM PCR map {"sha256": {"0": "<hex>", ...}, ...} into *out.
 */
int ev__tpm_pcrs_from_json(tpm_pcrs *out, const json_t *obj, cista_error **err)
    __attribute__((warn_unused_result));
/* Add @count values of bank @alg, PCR 0.. in order, from concatenated bytes. */
int ev__tpm_pcrs_add_concat(tpm_pcrs *out, uint16_t alg, const uint8_t *p, size_t size,
                            cista_error **err) __attribute__((warn_unused_result));

/* {"sha256": {"0": hex, ...}} of the PCRs the quote selected. New reference. */
json_t *ev__tpm_pcrs_json(const tpm_pcrs *pcrs, const tpm_quote *q);
/* The "tpm" claims object of a verified quote (clock, firmware, ...). New reference. */
json_t *ev__tpm_quote_json(const tpm_quote *q, EVP_PKEY *ak);

/*
 * Verify a TPM evidence container object @obj (docs/evidence.md, "tpm";
 * borrowed). With @ak (borrowed) that key is trusted as the AK (the caller
 * established it, e.g. from an Azure HCL report; @ak_source names how);
 * otherwise opts->tpm_ak_pub or an AK certificate chain. Claims (tee "tpm")
 * to the caller.
 */
int ev__tpm_verify_json(json_t **out, const json_t *obj, EVP_PKEY *ak, const char *ak_source,
                        const ev_verify_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * azure.c: parse an Azure HCL report (header, IGVM request data, runtime
 * data JSON), check that hash(runtime data) is the start of the hardware
 * report's REPORT_DATA and extract the HCLAkPub key; no hardware signature
 * is checked (the verifiers do that first). For the fuzz target and tests.
 */
int ev__azure_hcl_check(const uint8_t *hcl, size_t size, cista_error **err)
    __attribute__((warn_unused_result));

#endif
