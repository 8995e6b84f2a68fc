/*
 * fuzz_volume_meta.c - the volume's parsers of untrusted (host-controlled
 * or, for records, decrypted-but-attacker-shaped) bytes: superblock slots
 * (header only, and with a fixed key through the GCM check), inode records,
 * directory blobs and tree nodes. The first input byte picks the parser.
 * Must never crash, hang or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/log.h"
#include "volume/volume.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t key[VOL_KEY_SIZE] = {0x42};
    log_set_level(LOG_LVL_ERROR);
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 5;
    data++;
    size--;
    cista_error *err = NULL;
    vol_info info;
    switch (which) {
    case 0:
        (void)vol_parse_superblock(&info, data, size, NULL, &err);
        break;
    case 1:
        (void)vol_parse_superblock(&info, data, size, key, &err);
        break;
    case 2:
        (void)vol_parse_inode(data, size, &err);
        break;
    case 3:
        (void)vol_parse_dir(data, size, &err);
        break;
    default:
        (void)vol_parse_node(data, size, &err);
        break;
    }
    err_free(err);
    return 0;
}
