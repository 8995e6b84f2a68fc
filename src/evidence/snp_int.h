/*
 * snp_int.h - internals of the SEV-SNP verifier shared by snp.c and
 * snp_certs.c (the compiled-in AMD vendor certificates). Not a public API.
 */
#ifndef CISTA_SNP_INT_H
#define CISTA_SNP_INT_H

#define SNP_PRODUCT_COUNT 3

typedef struct {
    const char *name;           /* "Milan", "Genoa", "Turin" (KDS product line) */
    const char *ark_pem;        /* AMD Root Key, self-signed */
    const char *ask_pem;        /* AMD SEV Key: issues VCEKs */
    const char *asvk_pem;       /* AMD SEV VLEK Key: issues VLEKs */
    const char *ark_sha256_hex; /* pin: SHA-256 of the ARK's DER encoding */
} snp_product;

extern const snp_product ev__snp_products[SNP_PRODUCT_COUNT];

#endif
