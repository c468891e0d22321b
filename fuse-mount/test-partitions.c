/* Unit test of fuse-mount/partitions.c: MBR (primary + logical) and GPT images built in
 * memory, and every kind of damage the parser must refuse with a message naming it. */
#include "fuse-mount/partitions.h"
#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR 512u
#define DISK_SECTORS 8192u /* a 4 MiB disk */

static unsigned char disk[DISK_SECTORS * SECTOR];
static int failures;

static int
read_disk(void *opaque, void *buf, size_t len, uint64_t off)
{
  (void)opaque;
  if (off > sizeof disk || len > sizeof disk - off)
    return error_set(EIO, "read beyond the test disk");
  memcpy(buf, disk + off, len);
  return 0;
}

static void
put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void
put64(unsigned char *p, uint64_t v)
{
  put32(p, (uint32_t)v);
  put32(p + 4, (uint32_t)(v >> 32));
}

static void
mbr_entry(unsigned char *sector, int slot, unsigned type, uint32_t start, uint32_t count)
{
  unsigned char *e = sector + 446 + 16 * slot;
  e[0] = 0;
  e[4] = (unsigned char)type;
  put32(e + 8, start);
  put32(e + 12, count);
  sector[510] = 0x55;
  sector[511] = 0xaa;
}

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FAIL line %d: ", __LINE__);                                                 \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static void
expect_part(const struct partition_table *t, size_t i, unsigned number, uint64_t start_sector,
            uint64_t sectors)
{
  CHECK(i < t->n, "partition index %zu missing (n=%zu)", i, t->n);
  if (i >= t->n)
    return;
  CHECK(t->v[i].number == number && t->v[i].offset == start_sector * SECTOR
            && t->v[i].length == sectors * SECTOR,
        "partition %zu: got p%u %llu+%llu, want p%u %llu+%llu", i, t->v[i].number,
        (unsigned long long)t->v[i].offset, (unsigned long long)t->v[i].length, number,
        (unsigned long long)(start_sector * SECTOR), (unsigned long long)(sectors * SECTOR));
}

static void
expect_error(const char *what, const char *text)
{
  struct partition_table t;
  int r = partitions_read(read_disk, NULL, sizeof disk, &t);
  CHECK(r < 0, "%s: accepted", what);
  CHECK(t.n == 0 && t.v == NULL, "%s: table not empty after an error", what);
  CHECK(strstr(error_message(), text) != NULL, "%s: message '%s' lacks '%s'", what, error_message(),
        text);
}

static void
test_none(void)
{
  memset(disk, 0, sizeof disk);
  struct partition_table t;
  CHECK(partitions_read(read_disk, NULL, sizeof disk, &t) == 0 && t.scheme == PARTITIONS_NONE,
        "blank disk");
  /* A FAT-like boot sector: signature but code bytes where the status bytes would be. */
  memset(disk + 446, 0x33, 64);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  CHECK(partitions_read(read_disk, NULL, sizeof disk, &t) == 0 && t.scheme == PARTITIONS_NONE,
        "boot sector taken for an MBR");
  /* A disk too small for a table. */
  CHECK(partitions_read(read_disk, NULL, 512, &t) == 0 && t.scheme == PARTITIONS_NONE, "tiny");
}

static void
build_mbr(void)
{
  memset(disk, 0, sizeof disk);
  mbr_entry(disk, 0, 0x83, 2048, 1024);
  mbr_entry(disk, 1, 0x05, 4096, 4000); /* extended: logicals at 4096+1 and 6000+1 */
  mbr_entry(disk, 3, 0x83, 3072, 1000);
  unsigned char *ebr1 = disk + 4096 * SECTOR, *ebr2 = disk + 6000 * SECTOR;
  mbr_entry(ebr1, 0, 0x83, 1, 1000);
  mbr_entry(ebr1, 1, 0x05, 6000 - 4096, 2000);
  mbr_entry(ebr2, 0, 0x83, 1, 500);
}

static void
test_mbr(void)
{
  build_mbr();
  struct partition_table t;
  int r = partitions_read(read_disk, NULL, sizeof disk, &t);
  CHECK(r == 0, "mbr: %s", error_message());
  CHECK(t.scheme == PARTITIONS_MBR, "mbr scheme");
  CHECK(t.n == 4, "mbr: %zu partitions, want 4", t.n);
  expect_part(&t, 0, 1, 2048, 1024);
  expect_part(&t, 1, 4, 3072, 1000);
  expect_part(&t, 2, 5, 4097, 1000);
  expect_part(&t, 3, 6, 6001, 500);
  partitions_free(&t);

  build_mbr();
  mbr_entry(disk, 0, 0x83, 2048, DISK_SECTORS); /* runs off the end */
  expect_error("mbr beyond end", "MBR partition 1 (sectors 2048+8192) ends beyond the disk");
  build_mbr();
  mbr_entry(disk, 3, 0x83, 2500, 1000);
  expect_error("mbr overlap", "MBR partitions 1 and 4 overlap");
  build_mbr();
  disk[6000 * SECTOR + 511] = 0;
  expect_error("ebr signature", "extended boot record at sector 6000 lacks the 0x55AA");
  build_mbr();
  mbr_entry(disk + 6000 * SECTOR, 1, 0x05, 0, 10); /* links back to the first EBR */
  expect_error("ebr loop", "outside the chain");
  build_mbr();
  mbr_entry(disk + 6000 * SECTOR, 0, 0x83, 1, 5000);
  expect_error("logical outside", "logical partition 6");
}

/* GPT: protective MBR, header at LBA 1, 128 entries of 128 bytes at LBA 2. */
static void
seal_gpt(void)
{
  unsigned char *h = disk + SECTOR;
  put32(h + 88, partitions_crc32(disk + 2 * SECTOR, 128 * 128));
  put32(h + 16, 0);
  put32(h + 16, partitions_crc32(h, 92));
}

static void
gpt_entry(unsigned index, uint64_t first, uint64_t last)
{
  unsigned char *e = disk + 2 * SECTOR + index * 128;
  memset(e, 0xaf, 16); /* any non-zero type GUID */
  put64(e + 32, first);
  put64(e + 40, last);
}

static void
build_gpt(void)
{
  memset(disk, 0, sizeof disk);
  mbr_entry(disk, 0, 0xee, 1, DISK_SECTORS - 1);
  unsigned char *h = disk + SECTOR;
  memcpy(h, "EFI PART", 8);
  put32(h + 8, 0x00010000);
  put32(h + 12, 92);
  put64(h + 24, 1);
  put64(h + 32, DISK_SECTORS - 1);
  put64(h + 40, 34);
  put64(h + 48, DISK_SECTORS - 34);
  put64(h + 72, 2);
  put32(h + 80, 128);
  put32(h + 84, 128);
  gpt_entry(0, 2048, 4095);
  gpt_entry(2, 4096, 8000); /* entry 2 empty: numbering keeps the gap (p1, p3) */
  seal_gpt();
}

static void
test_gpt(void)
{
  build_gpt();
  struct partition_table t;
  int r = partitions_read(read_disk, NULL, sizeof disk, &t);
  CHECK(r == 0, "gpt: %s", error_message());
  CHECK(t.scheme == PARTITIONS_GPT, "gpt scheme %d", t.scheme);
  CHECK(t.n == 2, "gpt: %zu partitions, want 2", t.n);
  expect_part(&t, 0, 1, 2048, 2048);
  expect_part(&t, 1, 3, 4096, 3905);
  partitions_free(&t);

  build_gpt();
  disk[SECTOR + 60] ^= 1; /* a flipped bit in the disk GUID */
  expect_error("gpt header crc", "GPT header CRC32 mismatch");
  build_gpt();
  disk[2 * SECTOR + 128 * 5 + 3] = 1; /* an unused entry changed, header not resealed */
  expect_error("gpt entries crc", "GPT partition entries CRC32 mismatch");
  build_gpt();
  memcpy(disk + SECTOR, "EFI PARX", 8);
  expect_error("gpt signature", "lacks the \"EFI PART\" signature");
  build_gpt();
  gpt_entry(0, 2048, DISK_SECTORS + 10);
  seal_gpt();
  expect_error("gpt beyond", "GPT partition 1 (sectors 2048-8202) lies outside the usable area");
  build_gpt();
  gpt_entry(1, 3000, 5000);
  seal_gpt();
  expect_error("gpt overlap", "GPT partitions 1 and 2 overlap");
  build_gpt();
  put32(disk + SECTOR + 80, 1u << 20); /* huge entry count */
  seal_gpt();
  expect_error("gpt huge", "too large");
  build_gpt();
  put64(disk + SECTOR + 48, DISK_SECTORS + 100); /* usable area past the end */
  seal_gpt();
  expect_error("gpt usable", "does not fit the disk");
  /* The volume is smaller than the table says: partitions beyond it are refused. */
  build_gpt();
  {
    struct partition_table t2;
    CHECK(partitions_read(read_disk, NULL, 6000 * SECTOR, &t2) < 0
              && strstr(error_message(), "does not fit the disk"),
          "gpt on a truncated disk: %s", error_message());
  }
}

/* A backup header in the last sector with its entries just before it; then damage the
 * primary: the table is read from the backup, with a warning naming both. */
static void
test_gpt_backup(void)
{
  build_gpt();
  uint64_t last = DISK_SECTORS - 1, entries = last - 32;
  memcpy(disk + entries * SECTOR, disk + 2 * SECTOR, 128 * 128);
  unsigned char *b = disk + last * SECTOR;
  memcpy(b, disk + SECTOR, 92);
  put64(b + 24, last);
  put64(b + 32, 1);
  put64(b + 72, entries);
  put32(b + 16, 0);
  put32(b + 16, partitions_crc32(b, 92));
  disk[SECTOR + 60] ^= 1; /* primary header CRC now wrong */
  struct partition_table t;
  int r = partitions_read(read_disk, NULL, sizeof disk, &t);
  CHECK(r == 0, "gpt backup: %s", error_message());
  CHECK(t.n == 2, "gpt backup: %zu partitions", t.n);
  expect_part(&t, 0, 1, 2048, 2048);
  CHECK(strstr(t.warning, "primary GPT damaged (GPT header CRC32 mismatch")
            && strstr(t.warning, "using the backup at sector 8191"),
        "gpt backup warning: '%s'", t.warning);
  partitions_free(&t);
  /* Both damaged: the primary's problem is reported. */
  b[60] ^= 1;
  expect_error("gpt both damaged", "GPT header CRC32 mismatch");
  /* A sound primary gives no warning. */
  build_gpt();
  CHECK(partitions_read(read_disk, NULL, sizeof disk, &t) == 0 && t.warning[0] == 0,
        "warning on a sound table: '%s'", t.warning);
  partitions_free(&t);
}

int
main(void)
{
  test_none();
  test_mbr();
  test_gpt();
  test_gpt_backup();
  CHECK(partitions_crc32("123456789", 9) == 0xcbf43926u, "crc32 check value");
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("partitions: all tests passed\n");
  return 0;
}
