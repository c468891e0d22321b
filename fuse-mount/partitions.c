/* ferry-fuse: MBR and GPT partition tables, see partitions.h.
 *
 * Every number read from the disk is untrusted: counts and sizes are bounded before they size
 * an allocation or a read, and every partition is checked against the disk before it is
 * exposed.  A table that fails a check is refused as a whole (the caller still serves the
 * whole disk): half a table is worse than none when someone mounts the wrong range.
 */
#include "fuse-mount/partitions.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR 512u
#define MAX_LOGICAL 128 /* extended partition chain length we follow */
#define MAX_GPT_ENTRIES_BYTES (1u << 20)

static uint32_t
le32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
le64(const unsigned char *p)
{
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

uint32_t
partitions_crc32(const void *buf, size_t len)
{
  const unsigned char *p = buf;
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < len; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1u));
  }
  return ~crc;
}

const char *
partitions_scheme_name(enum partition_scheme s)
{
  switch (s) {
  case PARTITIONS_MBR:
    return "MBR";
  case PARTITIONS_GPT:
    return "GPT";
  default:
    return "none";
  }
}

void
partitions_free(struct partition_table *t)
{
  free(t->v);
  t->v = NULL;
  t->n = 0;
  t->scheme = PARTITIONS_NONE;
}

static int
add(struct partition_table *t, size_t *cap, unsigned number, uint64_t offset, uint64_t length)
{
  if (t->n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 8;
    struct partition *v = realloc(t->v, ncap * sizeof *v);
    if (!v)
      return error_set(ENOMEM, "out of memory for the partition list");
    t->v = v;
    *cap = ncap;
  }
  t->v[t->n++] = (struct partition){ number, offset, length };
  return 0;
}

static int
by_offset(const void *a, const void *b)
{
  const struct partition *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int
by_number(const void *a, const void *b)
{
  const struct partition *x = a, *y = b;
  return x->number < y->number ? -1 : x->number > y->number;
}

/* Sorts by number; refuses overlapping partitions (a sign of a damaged table). */
static int
check_overlaps(struct partition_table *t)
{
  qsort(t->v, t->n, sizeof *t->v, by_offset);
  for (size_t i = 1; i < t->n; i++)
    if (t->v[i].offset < t->v[i - 1].offset + t->v[i - 1].length)
      return error_set(EINVAL, "%s partitions %u and %u overlap", partitions_scheme_name(t->scheme),
                       t->v[i - 1].number, t->v[i].number);
  qsort(t->v, t->n, sizeof *t->v, by_number);
  return 0;
}

static bool
is_extended(unsigned type)
{
  return type == 0x05 || type == 0x0f || type == 0x85;
}

/* Walk the chain of extended boot records; logical partitions are numbered from 5. */
static int
read_logical(partition_read_fn read, void *opaque, uint64_t disk_sectors, uint64_t ext_start,
             uint64_t ext_count, struct partition_table *t, size_t *cap)
{
  unsigned char s[SECTOR];
  uint64_t ebr = ext_start;
  for (unsigned number = 5;; number++) {
    if (number >= 5 + MAX_LOGICAL)
      return error_set(EINVAL,
                       "MBR extended partition chain is longer than %d entries "
                       "(a loop?)",
                       MAX_LOGICAL);
    int r = read(opaque, s, SECTOR, ebr * SECTOR);
    if (r < 0)
      return error_prefix("MBR extended boot record at sector %" PRIu64, ebr);
    if (s[510] != 0x55 || s[511] != 0xaa)
      return error_set(
          EINVAL, "MBR extended boot record at sector %" PRIu64 " lacks the 0x55AA signature", ebr);
    const unsigned char *e0 = s + 446, *e1 = s + 462;
    uint64_t start = ebr + le32(e0 + 8), count = le32(e0 + 12);
    if (e0[4] != 0 && count != 0) {
      if (le32(e0 + 8) == 0 || start + count > ext_start + ext_count
          || start + count > disk_sectors)
        return error_set(EINVAL,
                         "MBR logical partition %u (sectors %" PRIu64 "+%" PRIu64
                         ") lies outside its extended partition",
                         number, start, count);
      if ((r = add(t, cap, number, start * SECTOR, count * SECTOR)) < 0)
        return r;
    }
    if (!is_extended(e1[4]) || le32(e1 + 12) == 0)
      return 0;
    uint64_t next = ext_start + le32(e1 + 8);
    if (next <= ebr || next >= ext_start + ext_count)
      return error_set(EINVAL,
                       "MBR extended boot record at sector %" PRIu64 " links to sector %" PRIu64
                       ", outside the chain",
                       ebr, next);
    ebr = next;
  }
}

static int read_gpt(partition_read_fn read, void *opaque, uint64_t disk_size,
                    struct partition_table *t, size_t *cap);
static int read_gpt_at(partition_read_fn read, void *opaque, uint64_t disk_size, uint64_t lba,
                       struct partition_table *t, size_t *cap);

static int
parse(partition_read_fn read, void *opaque, uint64_t disk_size, struct partition_table *t)
{
  size_t cap = 0;
  unsigned char s[SECTOR];
  if (disk_size < 2 * SECTOR)
    return 0;
  int r = read(opaque, s, SECTOR, 0);
  if (r < 0)
    return error_prefix("reading the partition table");
  if (s[510] != 0x55 || s[511] != 0xaa)
    return 0;
  /* A filesystem boot sector (FAT, NTFS) also ends in 0x55AA: only status bytes 0x00/0x80
   * in all four slots make it an MBR. */
  for (int i = 0; i < 4; i++)
    if (s[446 + 16 * i] != 0 && s[446 + 16 * i] != 0x80)
      return 0;
  uint64_t disk_sectors = disk_size / SECTOR;
  for (int i = 0; i < 4; i++)
    if (s[446 + 16 * i + 4] == 0xee) {
      t->scheme = PARTITIONS_GPT;
      return read_gpt(read, opaque, disk_size, t, &cap);
    }

  t->scheme = PARTITIONS_MBR;
  bool seen_extended = false;
  for (unsigned i = 0; i < 4; i++) {
    const unsigned char *e = s + 446 + 16 * i;
    unsigned type = e[4];
    uint64_t start = le32(e + 8), count = le32(e + 12);
    if (type == 0 || count == 0)
      continue;
    if (start == 0 || start + count > disk_sectors)
      return error_set(EINVAL,
                       "MBR partition %u (sectors %" PRIu64 "+%" PRIu64
                       ") ends beyond the disk (%" PRIu64 " sectors)",
                       i + 1, start, count, disk_sectors);
    if (is_extended(type)) {
      /* The container itself holds no filesystem: only its logical partitions are exposed. */
      if (seen_extended)
        return error_set(EINVAL, "MBR has more than one extended partition");
      seen_extended = true;
      if ((r = read_logical(read, opaque, disk_sectors, start, count, t, &cap)) < 0)
        return r;
      continue;
    }
    if ((r = add(t, &cap, i + 1, start * SECTOR, count * SECTOR)) < 0)
      return r;
  }
  return check_overlaps(t);
}

static int
read_gpt_at(partition_read_fn read, void *opaque, uint64_t disk_size, uint64_t lba,
            struct partition_table *t, size_t *cap)
{
  unsigned char h[SECTOR];
  uint64_t disk_sectors = disk_size / SECTOR;
  int r = read(opaque, h, SECTOR, lba * SECTOR);
  if (r < 0)
    return error_prefix("reading the GPT header at sector %" PRIu64, lba);
  if (memcmp(h, "EFI PART", 8) != 0)
    return error_set(EINVAL,
                     "protective MBR found but the GPT header at sector %" PRIu64
                     " lacks the \"EFI PART\" signature",
                     lba);
  uint32_t header_size = le32(h + 12);
  if (header_size < 92 || header_size > SECTOR)
    return error_set(EINVAL, "GPT header size %" PRIu32 " is invalid", header_size);
  uint32_t stored = le32(h + 16);
  memset(h + 16, 0, 4);
  uint32_t computed = partitions_crc32(h, header_size);
  if (stored != computed)
    return error_set(EINVAL,
                     "GPT header CRC32 mismatch (stored %08" PRIx32 ", computed %08" PRIx32 ")",
                     stored, computed);
  uint64_t my_lba = le64(h + 24), first_usable = le64(h + 40), last_usable = le64(h + 48);
  uint64_t entries_lba = le64(h + 72);
  uint32_t count = le32(h + 80), entry_size = le32(h + 84), entries_crc = le32(h + 88);
  if (my_lba != lba)
    return error_set(EINVAL, "GPT header says it is at sector %" PRIu64 ", not %" PRIu64, my_lba,
                     lba);
  if (entry_size < 128 || entry_size % 8 != 0)
    return error_set(EINVAL, "GPT partition entry size %" PRIu32 " is invalid", entry_size);
  if ((uint64_t)count * entry_size > MAX_GPT_ENTRIES_BYTES)
    return error_set(EINVAL, "GPT has %" PRIu32 " entries of %" PRIu32 " bytes: too large", count,
                     entry_size);
  uint64_t entries_bytes = (uint64_t)count * entry_size;
  if (entries_lba < 2 || entries_lba >= disk_sectors
      || entries_bytes > (disk_sectors - entries_lba) * SECTOR)
    return error_set(EINVAL,
                     "GPT partition entries (sector %" PRIu64 ", %" PRIu64
                     " bytes) lie outside the disk",
                     entries_lba, entries_bytes);
  if (first_usable > last_usable || last_usable >= disk_sectors)
    return error_set(EINVAL,
                     "GPT usable area (sectors %" PRIu64 "-%" PRIu64
                     ") does not fit the disk (%" PRIu64 " sectors)",
                     first_usable, last_usable, disk_sectors);

  unsigned char *entries = malloc(entries_bytes ? entries_bytes : 1);
  if (!entries)
    return error_set(ENOMEM, "out of memory for GPT entries");
  if ((r = read(opaque, entries, entries_bytes, entries_lba * SECTOR)) < 0) {
    error_prefix("reading the GPT partition entries");
    goto out;
  }
  computed = partitions_crc32(entries, entries_bytes);
  if (computed != entries_crc) {
    r = error_set(EINVAL,
                  "GPT partition entries CRC32 mismatch (stored %08" PRIx32 ", computed %08" PRIx32
                  ")",
                  entries_crc, computed);
    goto out;
  }
  static const unsigned char unused[16];
  for (uint32_t i = 0; i < count; i++) {
    const unsigned char *e = entries + (size_t)i * entry_size;
    if (memcmp(e, unused, 16) == 0)
      continue;
    uint64_t first = le64(e + 32), last = le64(e + 40);
    if (first > last || first < first_usable || last > last_usable) {
      r = error_set(EINVAL,
                    "GPT partition %" PRIu32 " (sectors %" PRIu64 "-%" PRIu64
                    ") lies outside the usable area (sectors %" PRIu64 "-%" PRIu64 ")",
                    i + 1, first, last, first_usable, last_usable);
      goto out;
    }
    if ((r = add(t, cap, i + 1, first * SECTOR, (last - first + 1) * SECTOR)) < 0)
      goto out;
  }
  r = check_overlaps(t);
out:
  free(entries);
  return r;
}

/* The primary header and entries first; when they are damaged (not when a read fails), the
 * backup header in the last sector, with a warning: that is what the backup is for. */
static int
read_gpt(partition_read_fn read, void *opaque, uint64_t disk_size, struct partition_table *t,
         size_t *cap)
{
  int r = read_gpt_at(read, opaque, disk_size, 1, t, cap);
  if (r != -EINVAL)
    return r;
  char primary[256];
  snprintf(primary, sizeof primary, "%s", error_message());
  uint64_t backup = disk_size / SECTOR - 1;
  t->n = 0;
  if (read_gpt_at(read, opaque, disk_size, backup, t, cap) == 0) {
    snprintf(t->warning, sizeof t->warning,
             "primary GPT damaged (%.256s): using the backup at sector %" PRIu64, primary, backup);
    return 0;
  }
  t->n = 0;
  return error_set(EINVAL, "%s", primary);
}

int
partitions_read(partition_read_fn read, void *opaque, uint64_t disk_size,
                struct partition_table *out)
{
  memset(out, 0, sizeof *out);
  int r = parse(read, opaque, disk_size, out);
  if (r < 0)
    partitions_free(out);
  return r;
}
