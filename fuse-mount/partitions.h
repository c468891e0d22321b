/* ferry-fuse: MBR and GPT partition tables, parsed from any byte source.
 *
 * A pure module: it reads through a callback, so it serves a volume (ferry-fuse) and an
 * in-memory image (its unit test) alike.  Sectors are 512 bytes.  Partitions are numbered as
 * Linux does: MBR primaries 1-4 by slot, logical partitions from 5 in chain order, GPT by
 * entry index + 1 (unused entries leave gaps).
 */
#ifndef FERRY_PARTITIONS_H
#define FERRY_PARTITIONS_H

#include <stddef.h>
#include <stdint.h>

enum partition_scheme { PARTITIONS_NONE, PARTITIONS_MBR, PARTITIONS_GPT };

struct partition {
  unsigned number; /* 1, 2, ... (disk-pN) */
  uint64_t offset; /* bytes from the start of the disk */
  uint64_t length; /* bytes */
};

struct partition_table {
  enum partition_scheme scheme;
  struct partition *v; /* sorted by number */
  size_t n;
  char warning[512]; /* non-empty when read with a caveat: the primary GPT was damaged and
                        the backup header was used */
};

/* Read exactly len bytes at off; 0 or a negative errno (with error_set message). */
typedef int (*partition_read_fn)(void *opaque, void *buf, size_t len, uint64_t off);

/* Parse the table of a disk of disk_size bytes.  Returns 0 with scheme NONE when the disk has
 * no recognisable table, 0 with the partitions otherwise, and a negative errno with a message
 * naming the problem ("GPT header CRC32 mismatch", "partition 2 ends beyond the disk", ...)
 * when a table is present but corrupt, or the read failed; *out is then empty.  A damaged
 * primary GPT with a sound backup header is read from the backup, with out->warning set. */
int partitions_read(partition_read_fn read, void *opaque, uint64_t disk_size,
                    struct partition_table *out);
void partitions_free(struct partition_table *t);

const char *partitions_scheme_name(enum partition_scheme s); /* "none", "MBR", "GPT" */

/* CRC32 (IEEE 802.3, as GPT uses), exposed for the unit test's image builder. */
uint32_t partitions_crc32(const void *buf, size_t len);

#endif
