/*
 * fuzz_tar.c - tar_apply() over arbitrary bytes, into a fresh root.
 *
 * Each input is applied as one layer (devices refused) into
 * /tmp/cista-fuzz-tar-XXXXXX/root, next to a "sentinel" directory that the
 * input could only reach by escaping ("../sentinel/victim" is in the seed
 * corpus). Besides ASan/UBSan findings, the target aborts when anything
 * beside the root changed, or when the root cannot be removed afterwards.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/tar_apply.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
    size_t chunk;
} src;

static ssize_t src_read(void *ctx, const void **buf, cista_error **err)
{
    src *s = ctx;
    (void)err;
    size_t n = s->size - s->pos < s->chunk ? s->size - s->pos : s->chunk;
    *buf = s->data + s->pos;
    s->pos += n;
    return (ssize_t)n;
}

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tar: %s\n", what);
        abort();
    }
}

/* The base holds exactly root/ and sentinel/, and sentinel/victim is intact. */
static void check_sentinel(int basefd)
{
    char buf[32] = "";
    int fd = openat(basefd, "sentinel/victim", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    check(fd >= 0, "sentinel/victim is gone");
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    check(n == 6 && memcmp(buf, "victim", 6) == 0, "sentinel/victim was modified");

    int dfd = openat(basefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fdopendir(dfd);
    check(d != NULL, "cannot list the base directory");
    for (struct dirent *de; (de = readdir(d));)
        check(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
                  !strcmp(de->d_name, "root") || !strcmp(de->d_name, "sentinel"),
              "something appeared next to the root");
    closedir(d);
    struct stat st;
    check(fstatat(basefd, "sentinel", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
              st.st_nlink == 2,
          "the sentinel directory changed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char base[] = "/tmp/cista-fuzz-tar-XXXXXX";
    check(mkdtemp(base) != NULL, "mkdtemp failed");
    int basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(basefd >= 0, "cannot open the base directory");
    check(mkdirat(basefd, "root", 0755) == 0 && mkdirat(basefd, "sentinel", 0755) == 0,
          "cannot create root and sentinel");
    int fd = openat(basefd, "sentinel/victim", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    check(fd >= 0 && write(fd, "victim", 6) == 6, "cannot create the sentinel");
    close(fd);
    int rootfd = openat(basefd, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(rootfd >= 0, "cannot open the root");

    /* Vary the chunk size with the input so reads straddle headers differently. */
    src s = {data, size, 0, 1 + (size % 4096)};
    tar_apply_opts o = {
        .allow_devices = false,
        .preserve_owner = geteuid() == 0,
        .max_entries = 10000,
        .max_total = 64u << 20,
        .layer_name = "fuzz",
    };
    cista_error *err = NULL;
    /* Refusals are the expected outcome for most inputs; only crashes and escapes count. */
    if (tar_apply(rootfd, src_read, &s, &o, NULL, &err) < 0 && !err)
        check(false, "tar_apply failed without an error");
    err_free(err);
    close(rootfd);

    check_sentinel(basefd);
    close(basefd);
    err = NULL;
    int tmpfd = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int r = util_rm_rf_at(tmpfd, base + strlen("/tmp/"), &err);
    if (r < 0) {
        char *msg = err_str(err);
        fprintf(stderr, "fuzz_tar: cannot remove %s: %s\n", base, msg);
        abort();
    }
    close(tmpfd);
    return 0;
}
