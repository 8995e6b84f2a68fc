/*
 * decomp_rate.c - per-core ceiling of the streaming decompressors cista
 * links (zlib inflate, libzstd), measured the way cista uses them: the
 * whole input in memory, 1 MiB of output at a time, one thread.
 *
 *   decomp_rate gzip|zstd FILE...   -> prints "<output bytes> <seconds>"
 *
 * Each FILE is one layer blob (gzip may hold several members). Built and
 * run by bench_image.sh; not part of the library.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include <zstd.h>

#define OUT (1u << 20)

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static uint64_t gunzip(const uint8_t *in, size_t size, uint8_t *out)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        exit(1);
    uint64_t total = 0;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)size;
    while (z.avail_in > 0) {
        z.next_out = out;
        z.avail_out = OUT;
        int r = inflate(&z, Z_NO_FLUSH);
        total += OUT - z.avail_out;
        if (r == Z_STREAM_END)
            inflateReset(&z);
        else if (r != Z_OK) {
            fprintf(stderr, "inflate: %d\n", r);
            exit(1);
        }
    }
    inflateEnd(&z);
    return total;
}

static uint64_t unzstd(const uint8_t *in, size_t size, uint8_t *out)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = {in, size, 0};
    uint64_t total = 0;
    while (ib.pos < ib.size) {
        ZSTD_outBuffer ob = {out, OUT, 0};
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(r));
            exit(1);
        }
        total += ob.pos;
    }
    ZSTD_freeDCtx(d);
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "gzip") && strcmp(argv[1], "zstd"))) {
        fprintf(stderr, "usage: decomp_rate gzip|zstd FILE...\n");
        return 2;
    }
    uint8_t *out = malloc(OUT);
    uint64_t total = 0;
    double secs = 0;
    for (int i = 2; i < argc; i++) {
        size_t size;
        uint8_t *in = slurp(argv[i], &size);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        total += argv[1][0] == 'g' ? gunzip(in, size, out) : unzstd(in, size, out);
        clock_gettime(CLOCK_MONOTONIC, &b);
        secs += (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        free(in);
    }
    printf("%llu %.6f\n", (unsigned long long)total, secs);
    free(out);
    return 0;
}
