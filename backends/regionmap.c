/* ferry: the clone's region map, see regionmap.h.
 *
 * File layout (little-endian):
 *
 *   offset 0      header slot 0 (4096 bytes)
 *   offset 4096   header slot 1 (4096 bytes)
 *   offset 8192   bitmap slot 0 (bitmap_area bytes = bitmap rounded up to 4096)
 *   8192 + area   bitmap slot 1
 *
 * Header (one slot):
 *   0  char[8]  magic "FERRYMAP"
 *   8  u32      version (2; 1 is read: no destination identity, recorded at the next commit)
 *   12 u32      header size (4096)
 *   16 u64      generation (the newer valid slot wins)
 *   24 u64      volume size in bytes (= the source size)
 *   32 u64      region size in bytes (power of two, 4 KiB .. 64 MiB)
 *   40 u64      region count
 *   48 u64      source size in bytes
 *   56 u32      CRC32C of this slot's bitmap (region count rounded up to 64 bits)
 *   60 u32      source identity length
 *   64 char[]   source identity (normally the source URI, or what the caller chose), <1024
 *   1088 u64    destination size in bytes (version 2)
 *   1096 u32    destination identity length (version 2; 0: none recorded)
 *   1100 char[] destination identity ("inode N" for a file, a URI...), <256
 *   4092 u32    CRC32C of bytes 0..4091
 *
 * Why two slots rather than write-new + rename: a commit rewrites a preallocated area of the
 * same file, so it never allocates (no ENOSPC halfway through), needs one fdatasync instead of
 * file fsync + rename + directory fsync, and the slot that is not being written is always a
 * complete older map.  A torn commit fails its CRC and the other slot is used.  The headers sit
 * at fixed offsets so either can be read when the other is garbage.
 *
 * Only creation uses temp file + rename + directory fsync, so that a crash while creating
 * never leaves a half-written file that would later be refused as corrupt.
 *
 * The marks file "<map>.marks": every bit is also written there (pwrite, no fsync) before it
 * is set in core, so a *process* that dies (kill -9) loses no mark: the page cache keeps both
 * the data written before a mark and the mark, and the next open of the same map during the
 * same boot of the host adds them back.  A client that reconnects to a restarted server (qemu's
 * nbd reconnect-delay) has writes acknowledged before the crash but not yet flushed; without
 * this, the restarted server would see their regions as unhydrated and copy the source over
 * them.  After a reboot (another boot_id) the file is ignored: only committed maps, whose data
 * was flushed first, are trusted across a power loss.
 *   0   char[8] magic "FERRYMRK"; 8 u32 version (1); 12 u32 pad
 *   16  char[40] the host's boot_id (/proc/sys/kernel/random/boot_id)
 *   56  u64 volume size, 64 u64 region size, 72 u64 source size, 80 u32 CRC32C(source id)
 *   4096 the bitmap words (u64 little-endian), region count rounded up to 64
 */
#include "backends/regionmap.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "FERRYMAP"
#define VERSION 2
#define DEST_OFFSET 1088
#define HEADER_SIZE 4096
#define AREA_ALIGN 4096

struct regionmap {
  char *path;
  int fd;
  uint64_t volume_size, region_size, regions, source_size;
  char source_id[REGIONMAP_MAX_SOURCE_ID];
  uint64_t dest_size;
  char dest_id[REGIONMAP_MAX_DEST_ID]; /* "" when not recorded */
  bool rewrite;                        /* the next commit writes even with nothing dirty */
  size_t words;                        /* bitmap length in 64-bit words */
  uint64_t area;                       /* bytes reserved per bitmap slot */
  uint64_t *bits;                      /* in-core bitmap, updated with atomics */
  uint64_t *snapshot;                  /* what the running commit writes */
  uint64_t count;                      /* bits set (atomic) */
  uint64_t dirty;                      /* bits set since the last commit (atomic) */
  pthread_mutex_t commit_lock;
  unsigned active;     /* slot holding the last commit */
  uint64_t generation; /* of the last commit */
  bool failed;         /* a commit failed: the file state is unknown, refuse further commits */
  int marks_fd;        /* the marks file, -1 when it could not be used */
  pthread_mutex_t marks_lock;
};

#define MARKS_MAGIC "FERRYMRK"
#define MARKS_HEADER 4096

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slice-by-8 tables ---- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t
regionmap_crc32c(uint32_t crc, const void *buf, size_t len)
{
  pthread_once(&crc_once, crc_init);
  const unsigned char *p = buf;
  crc = ~crc;
  while (len >= 8) {
    uint32_t lo
        = crc
          ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff]
          ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]]
          ^ crc_table[0][p[7]];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

/* ---- little-endian encoding ---- */

static void
put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void
put64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
get32(const unsigned char *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t
get64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* The bitmap on disk is the words in little-endian byte order. */
static void
encode_bitmap(unsigned char *out, const uint64_t *words, size_t n)
{
  for (size_t i = 0; i < n; i++)
    put64(out + 8 * i, words[i]);
}

static uint64_t
area_for(size_t words)
{
  return ((uint64_t)words * 8 + AREA_ALIGN - 1) / AREA_ALIGN * AREA_ALIGN;
}

static void
encode_header(const struct regionmap *m, unsigned char *h, uint64_t generation, uint32_t bcrc)
{
  memset(h, 0, HEADER_SIZE);
  memcpy(h, MAGIC, 8);
  put32(h + 8, VERSION);
  put32(h + 12, HEADER_SIZE);
  put64(h + 16, generation);
  put64(h + 24, m->volume_size);
  put64(h + 32, m->region_size);
  put64(h + 40, m->regions);
  put64(h + 48, m->source_size);
  put32(h + 56, bcrc);
  size_t idlen = strlen(m->source_id);
  put32(h + 60, (uint32_t)idlen);
  memcpy(h + 64, m->source_id, idlen);
  size_t dlen = strlen(m->dest_id);
  put64(h + DEST_OFFSET, m->dest_size);
  put32(h + DEST_OFFSET + 8, (uint32_t)dlen);
  memcpy(h + DEST_OFFSET + 12, m->dest_id, dlen);
  put32(h + HEADER_SIZE - 4, regionmap_crc32c(0, h, HEADER_SIZE - 4));
}

/* Write slot `slot` from the encoded bitmap `enc` (m->words * 8 bytes), then fdatasync. */
static int
write_slot(struct regionmap *m, int fd, unsigned slot, uint64_t generation, unsigned char *enc,
           const char *name)
{
  unsigned char h[HEADER_SIZE];
  size_t blen = m->words * 8;
  encode_header(m, h, generation, regionmap_crc32c(0, enc, blen));
  int r = full_pwrite(fd, enc, blen, 2 * HEADER_SIZE + slot * m->area);
  if (r == 0)
    r = full_pwrite(fd, h, HEADER_SIZE, (uint64_t)slot * HEADER_SIZE);
  if (r < 0)
    return error_set_errno(-r, "%s: writing map slot %u", name, slot);
  if (fdatasync(fd) < 0)
    return error_set_errno(errno, "%s: fdatasync", name);
  return 0;
}

/* ---- opening ---- */

struct slot_info {
  bool valid;
  const char *why; /* when not valid */
  uint32_t version;
  uint64_t generation, volume_size, region_size, regions, source_size, dest_size;
  char source_id[REGIONMAP_MAX_SOURCE_ID];
  char dest_id[REGIONMAP_MAX_DEST_ID];
};

static void
read_header(int fd, unsigned slot, uint64_t file_size, struct slot_info *s)
{
  unsigned char h[HEADER_SIZE];
  memset(s, 0, sizeof *s);
  s->why = "file too short";
  if (file_size < (uint64_t)(slot + 1) * HEADER_SIZE
      || full_pread(fd, h, HEADER_SIZE, (uint64_t)slot * HEADER_SIZE) < 0)
    return;
  s->why = "bad magic (not a ferry region map)";
  if (memcmp(h, MAGIC, 8) != 0)
    return;
  s->why = "bad header checksum";
  s->generation = get64(h + 16); /* for messages only, until the checksum says it is valid */
  if (get32(h + HEADER_SIZE - 4) != regionmap_crc32c(0, h, HEADER_SIZE - 4))
    return;
  s->why = "unsupported version";
  s->version = get32(h + 8);
  if ((s->version != 1 && s->version != VERSION) || get32(h + 12) != HEADER_SIZE)
    return;
  s->generation = get64(h + 16);
  s->volume_size = get64(h + 24);
  s->region_size = get64(h + 32);
  s->regions = get64(h + 40);
  s->source_size = get64(h + 48);
  uint32_t idlen = get32(h + 60);
  s->why = "inconsistent header";
  if (!is_power_of_two(s->region_size) || s->region_size < REGIONMAP_MIN_REGION_SIZE
      || s->region_size > REGIONMAP_MAX_REGION_SIZE || idlen >= REGIONMAP_MAX_SOURCE_ID
      || s->regions != (s->volume_size + s->region_size - 1) / s->region_size)
    return;
  memcpy(s->source_id, h + 64, idlen);
  s->source_id[idlen] = 0;
  if (s->version >= 2) {
    uint32_t dlen = get32(h + DEST_OFFSET + 8);
    if (dlen >= REGIONMAP_MAX_DEST_ID)
      return;
    s->dest_size = get64(h + DEST_OFFSET);
    memcpy(s->dest_id, h + DEST_OFFSET + 12, dlen);
    s->dest_id[dlen] = 0;
  }
  s->valid = true;
  s->why = NULL;
}

/* Read and check slot's bitmap into words (m's geometry already set from the header). */
static bool
read_bitmap(struct regionmap *m, unsigned slot, uint64_t file_size, uint32_t want_crc_from_hdr,
            uint64_t *words)
{
  size_t blen = m->words * 8;
  uint64_t off = 2 * HEADER_SIZE + slot * m->area;
  if (file_size < off + blen)
    return false;
  unsigned char *enc = malloc(blen ? blen : 1);
  if (!enc)
    return false;
  bool ok = full_pread(m->fd, enc, blen, off) == 0
            && regionmap_crc32c(0, enc, blen) == want_crc_from_hdr;
  for (size_t i = 0; ok && i < m->words; i++)
    words[i] = get64(enc + 8 * i);
  free(enc);
  /* Bits past the last region must be clear, or count/complete would lie. */
  if (ok && m->regions % 64)
    ok = (words[m->words - 1] >> (m->regions % 64)) == 0;
  return ok;
}

static uint32_t
header_bitmap_crc(int fd, unsigned slot)
{
  unsigned char b[4];
  if (full_pread(fd, b, 4, (uint64_t)slot * HEADER_SIZE + 56) < 0)
    return 0;
  return get32(b);
}

static int
set_geometry(struct regionmap *m, uint64_t volume_size, uint64_t region_size)
{
  m->volume_size = volume_size;
  m->region_size = region_size;
  m->regions = (volume_size + region_size - 1) / region_size;
  m->words = (size_t)((m->regions + 63) / 64);
  m->area = area_for(m->words);
  m->bits = calloc(m->words ? m->words : 1, 8);
  m->snapshot = calloc(m->words ? m->words : 1, 8);
  if (!m->bits || !m->snapshot)
    return error_set(ENOMEM, "%s: out of memory for the bitmap", m->path);
  return 0;
}

/* Create a fresh map (generation 1, nothing hydrated) at m->path: temp + rename. */
static int
create_map(struct regionmap *m)
{
  size_t n = strlen(m->path) + 16;
  char *tmp = malloc(n);
  int fd = -1, r = 0;
  unsigned char *enc = calloc(m->words ? m->words : 1, 8);
  if (!tmp || !enc) {
    r = error_set(ENOMEM, "%s: out of memory", m->path);
    goto out;
  }
  snprintf(tmp, n, "%s.new", m->path);
  fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    r = error_set_errno(errno, "%s: cannot create", tmp);
    goto out;
  }
  /* Preallocate both slots so no commit ever needs to allocate. */
  uint64_t total = 2 * HEADER_SIZE + 2 * m->area;
  int e = posix_fallocate(fd, 0, (off_t)total);
  if (e == EOPNOTSUPP || e == EINVAL)
    e = ftruncate(fd, (off_t)total) < 0 ? errno : 0;
  if (e) {
    r = error_set_errno(e, "%s: cannot allocate %" PRIu64 " bytes", tmp, total);
    goto out;
  }
  if ((r = write_slot(m, fd, 0, 1, enc, tmp)) < 0)
    goto out;
  if (rename(tmp, m->path) < 0) {
    r = error_set_errno(errno, "%s: cannot rename to %s", tmp, m->path);
    goto out;
  }
  /* The rename must be durable too, or a crash could lose the whole map file. */
  if (fsync_parent_dir(m->path) < 0)
    error_clear(); /* not fatal, as before: the map is usable, only its new name may not be durable yet */
  m->fd = fd;
  fd = -1;
  m->active = 0;
  m->generation = 1;
out:
  if (fd >= 0) {
    close(fd);
    unlink(tmp);
  }
  free(tmp);
  free(enc);
  return r;
}

static int
check_match(struct regionmap *m, const struct slot_info *s, const struct regionmap_params *p)
{
  if (s->volume_size != p->volume_size)
    return error_set(EINVAL, "%s: map is for a volume of %" PRIu64 " bytes, not %" PRIu64, m->path,
                     s->volume_size, p->volume_size);
  if (p->region_size && s->region_size != p->region_size)
    return error_set(EINVAL, "%s: region size %" PRIu64 " does not match %" PRIu64, m->path,
                     s->region_size, p->region_size);
  if (s->source_size != p->source_size || strcmp(s->source_id, p->source_id) != 0)
    return error_set(EINVAL,
                     "%s: map belongs to another source ('%s', %" PRIu64
                     " bytes), not '%s' (%" PRIu64 " bytes)",
                     m->path, s->source_id, s->source_size, p->source_id, p->source_size);
  /* Its regions say what the destination holds: another destination (a copy, a file made
   * anew at the same path) would be served as if it held them. */
  if (p->dest_id && s->dest_id[0]
      && (s->dest_size != p->dest_size || strcmp(s->dest_id, p->dest_id) != 0))
    return error_set(EINVAL,
                     "%s: map belongs to another destination (%s, %" PRIu64
                     " bytes), not this one (%s, %" PRIu64 " bytes)",
                     m->path, s->dest_id, s->dest_size, p->dest_id, p->dest_size);
  return 0;
}

static int
load_existing(struct regionmap *m, uint64_t file_size, const struct regionmap_params *p)
{
  struct slot_info s[2];
  read_header(m->fd, 0, file_size, &s[0]);
  read_header(m->fd, 1, file_size, &s[1]);
  /* Try the newest header first; fall back to the other when its bitmap is torn. */
  int order[2] = { 0, 1 };
  if (s[1].valid && (!s[0].valid || s[1].generation > s[0].generation)) {
    order[0] = 1;
    order[1] = 0;
  }
  const char *why = s[0].why ? s[0].why : "bad bitmap checksum";
  /* A slot that was written once but no longer reads back (torn header) is worth a warning
   * when the other one is used: what was hydrated after the older generation is redone. */
  if (s[order[0]].valid && !s[order[1]].valid && s[order[1]].why
      && strcmp(s[order[1]].why, "bad header checksum") == 0)
    log_warning("%s: map slot %d is torn (bad header checksum; it says generation %" PRIu64
                "): using slot %d, generation %" PRIu64
                " (regions hydrated after it are copied again)",
                m->path, order[1], s[order[1]].generation, order[0], s[order[0]].generation);
  for (int k = 0; k < 2; k++) {
    unsigned slot = (unsigned)order[k];
    if (!s[slot].valid)
      continue;
    if (k == 1)
      log_warning("%s: the newest map slot (generation %" PRIu64
                  ") has a torn bitmap: using the older one, generation %" PRIu64
                  " (regions hydrated after it are copied again)",
                  m->path, s[order[0]].generation, s[slot].generation);
    free(m->bits);
    free(m->snapshot);
    int r = set_geometry(m, s[slot].volume_size, s[slot].region_size);
    if (r < 0)
      return r;
    if (!read_bitmap(m, slot, file_size, header_bitmap_crc(m->fd, slot), m->bits)) {
      why = "bad bitmap checksum";
      debug("regionmap", "%s: slot %u generation %" PRIu64 " has a torn bitmap", m->path, slot,
            s[slot].generation);
      continue;
    }
    if ((r = check_match(m, &s[slot], p)) < 0)
      return r;
    m->active = slot;
    m->generation = s[slot].generation;
    m->source_size = s[slot].source_size;
    if (s[slot].dest_id[0]) {
      m->dest_size = s[slot].dest_size;
      snprintf(m->dest_id, sizeof m->dest_id, "%s", s[slot].dest_id);
    } else if (p->dest_id) {
      /* Version 1 (or none recorded): this destination is the map's from now on. */
      m->dest_size = p->dest_size;
      snprintf(m->dest_id, sizeof m->dest_id, "%s", p->dest_id);
      m->rewrite = true;
      debug("regionmap", "%s: recording destination %s at the next commit", m->path, m->dest_id);
    }
    if (s[slot].version < VERSION)
      m->rewrite = true;
    uint64_t c = 0;
    for (size_t i = 0; i < m->words; i++)
      c += (uint64_t)__builtin_popcountll(m->bits[i]);
    m->count = c;
    debug("regionmap", "%s: slot %u generation %" PRIu64 ", %" PRIu64 "/%" PRIu64 " hydrated",
          m->path, slot, m->generation, c, m->regions);
    return 0;
  }
  return error_set(EINVAL, "%s: corrupt region map (%s)", m->path, why);
}

/* ---- the marks file (see the top of this file) ---- */

static void
boot_id(char out[40])
{
  memset(out, 0, 40);
  const char *env = getenv("FERRY_BOOT_ID"); /* tests: pretend the host rebooted */
  if (env && *env) {
    snprintf(out, 40, "%s", env);
    return;
  }
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, out, 39);
    close(fd);
    if (n > 0)
      out[strcspn(out, "\n")] = '\0';
  }
}

static char *
marks_path(const struct regionmap *m)
{
  char *s = NULL;
  return asprintf(&s, "%s.marks", m->path) < 0 ? NULL : s;
}

static void
unlink_marks(struct regionmap *m)
{
  char *mp = marks_path(m);
  if (mp)
    unlink(mp);
  free(mp);
}

static void
marks_header(const struct regionmap *m, unsigned char *h, const char *boot)
{
  memset(h, 0, MARKS_HEADER);
  memcpy(h, MARKS_MAGIC, 8);
  put32(h + 8, 1);
  memcpy(h + 16, boot, 40);
  put64(h + 56, m->volume_size);
  put64(h + 64, m->region_size);
  put64(h + 72, m->source_size);
  put32(h + 80, regionmap_crc32c(0, m->source_id, strlen(m->source_id)));
}

/* Open (or start) the marks file; a file from this boot of the host adds its marks.  A map
 * just created starts a fresh one: marks of an earlier map at this path mean nothing. */
static void
marks_open(struct regionmap *m, bool created)
{
  char *mp = marks_path(m);
  if (!mp)
    return;
  int fd = open(mp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    debug("regionmap", "%s: %s: marks are kept by map commits only", mp, strerror(errno));
    free(mp);
    return;
  }
  char boot[40];
  boot_id(boot);
  unsigned char want[MARKS_HEADER], have[MARKS_HEADER];
  marks_header(m, want, boot);
  size_t bytes = m->words * 8;
  bool valid = !created && boot[0] && pread(fd, have, MARKS_HEADER, 0) == MARKS_HEADER
               && memcmp(have, want, MARKS_HEADER) == 0;
  if (valid) {
    unsigned char *words = malloc(bytes ? bytes : 1);
    uint64_t added = 0;
    if (words && pread(fd, words, bytes, MARKS_HEADER) == (ssize_t)bytes) {
      for (size_t i = 0; i < m->words; i++) {
        uint64_t w = get64(words + i * 8) & ~m->bits[i];
        if (i == m->words - 1 && m->regions % 64)
          w &= (1ull << (m->regions % 64)) - 1;
        m->bits[i] |= w;
        added += (uint64_t)__builtin_popcountll(w);
      }
    }
    free(words);
    m->count += added;
    m->dirty += added; /* not in the committed map yet */
    if (added)
      log_info("%s: %" PRIu64 " regions marked by a process that ended before committing them",
               m->path, added);
  } else if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)(MARKS_HEADER + bytes)) < 0
             || pwrite(fd, want, MARKS_HEADER, 0) != MARKS_HEADER) {
    debug("regionmap", "%s: %s: marks are kept by map commits only", mp, strerror(errno));
    close(fd);
    free(mp);
    return;
  }
  m->marks_fd = fd;
  free(mp);
}

int
regionmap_open(const char *path, const struct regionmap_params *p, struct regionmap **out)
{
  *out = NULL;
  if (p->region_size
      && (!is_power_of_two(p->region_size) || p->region_size < REGIONMAP_MIN_REGION_SIZE
          || p->region_size > REGIONMAP_MAX_REGION_SIZE))
    return error_set(EINVAL,
                     "%s: region size %" PRIu64 " must be a power of two from 4 KiB to 64 MiB",
                     path, p->region_size);
  if (strlen(p->source_id) >= REGIONMAP_MAX_SOURCE_ID)
    return error_set(EINVAL, "%s: source identity is longer than %d bytes", path,
                     REGIONMAP_MAX_SOURCE_ID - 1);
  if (p->dest_id && strlen(p->dest_id) >= REGIONMAP_MAX_DEST_ID)
    return error_set(EINVAL, "%s: destination identity is longer than %d bytes", path,
                     REGIONMAP_MAX_DEST_ID - 1);
  struct regionmap *m = calloc(1, sizeof *m);
  if (!m || !(m->path = strdup(path))) {
    free(m);
    return error_set(ENOMEM, "%s: out of memory", path);
  }
  pthread_mutex_init(&m->commit_lock, NULL);
  pthread_mutex_init(&m->marks_lock, NULL);
  m->fd = -1;
  m->marks_fd = -1;
  m->source_size = p->source_size;
  snprintf(m->source_id, sizeof m->source_id, "%s", p->source_id);
  int r;
  /* Existing file (opened without O_CREAT so a refusal never creates anything). */
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) {
    r = error_set_errno(errno, "%s", path);
    goto fail;
  }
  uint64_t file_size = 0;
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
      r = error_set(EINVAL, "%s: not a regular file", path);
      close(fd);
      goto fail;
    }
    /* One process per map: a second clone on the same map would corrupt it. */
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      r = error_set(EBUSY, "%s: map is in use by another process", path);
      close(fd);
      goto fail;
    }
    file_size = (uint64_t)st.st_size;
    m->fd = fd;
  }
  bool created = false;
  if (fd >= 0 && file_size > 0) {
    if ((r = load_existing(m, file_size, p)) < 0)
      goto fail;
  } else if (p->no_create) {
    r = error_set(ENOENT,
                  "%s: the map is %s, but the destination already holds data: a new map would "
                  "let the hydrator overwrite it with source data (give --new-map if the "
                  "destination's content may be discarded)",
                  path, fd >= 0 ? "empty" : "missing");
    if (fd >= 0)
      close(fd);
    m->fd = -1;
    goto fail;
  } else {
    created = true;
    if (p->dest_id) {
      m->dest_size = p->dest_size;
      snprintf(m->dest_id, sizeof m->dest_id, "%s", p->dest_id);
    }
    if ((r = set_geometry(m, p->volume_size,
                          p->region_size ? p->region_size : REGIONMAP_DEFAULT_REGION_SIZE))
        < 0)
      goto fail;
    int old = m->fd;
    if ((r = create_map(m)) < 0)
      goto fail;
    if (old >= 0)
      close(old); /* the empty file we locked has been replaced */
    if (flock(m->fd, LOCK_EX | LOCK_NB) < 0) {
      r = error_set(EBUSY, "%s: map is in use by another process", path);
      goto fail;
    }
    debug("regionmap", "%s: created, %" PRIu64 " regions of %" PRIu64 " bytes", path, m->regions,
          m->region_size);
  }
  marks_open(m, created);
  *out = m;
  return 0;
fail:
  regionmap_close(m);
  return r;
}

void
regionmap_close(struct regionmap *m)
{
  if (!m)
    return;
  if (m->marks_fd >= 0) {
    close(m->marks_fd);
    /* Every mark is in the committed map: the file has nothing more to say. */
    if (__atomic_load_n(&m->dirty, __ATOMIC_ACQUIRE) == 0 && !m->failed)
      unlink_marks(m);
  }
  if (m->fd >= 0)
    close(m->fd);
  pthread_mutex_destroy(&m->commit_lock);
  pthread_mutex_destroy(&m->marks_lock);
  free(m->bits);
  free(m->snapshot);
  free(m->path);
  free(m);
}

uint64_t
regionmap_region_size(const struct regionmap *m)
{
  return m->region_size;
}

uint64_t
regionmap_regions(const struct regionmap *m)
{
  return m->regions;
}

uint64_t
regionmap_generation(const struct regionmap *m)
{
  return __atomic_load_n(&m->generation, __ATOMIC_ACQUIRE);
}

const char *
regionmap_path(const struct regionmap *m)
{
  return m->path;
}

bool
regionmap_test(const struct regionmap *m, uint64_t region)
{
  uint64_t w = __atomic_load_n(&m->bits[region / 64], __ATOMIC_ACQUIRE);
  return (w >> (region % 64)) & 1;
}

bool
regionmap_mark(struct regionmap *m, uint64_t region)
{
  uint64_t bit = 1ull << (region % 64);
  size_t wi = (size_t)(region / 64);
  if (__atomic_load_n(&m->bits[wi], __ATOMIC_ACQUIRE) & bit)
    return false;
  if (m->marks_fd >= 0) {
    /* The marks file first, then the in-core bit: a writer that sees the bit (and writes
     * into the region without a lock) is then covered by the file.  Under the lock, the word
     * written holds every earlier mark of the word. */
    pthread_mutex_lock(&m->marks_lock);
    uint64_t w = __atomic_load_n(&m->bits[wi], __ATOMIC_ACQUIRE) | bit;
    unsigned char le[8];
    put64(le, w);
    if (m->marks_fd >= 0 && pwrite(m->marks_fd, le, 8, MARKS_HEADER + (off_t)wi * 8) != 8) {
      log_warning("%s.marks: %s: marks are kept by map commits only from now on", m->path,
                  strerror(errno));
      close(m->marks_fd);
      m->marks_fd = -1;
    }
    uint64_t old = __atomic_fetch_or(&m->bits[wi], bit, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&m->marks_lock);
    if (old & bit)
      return false;
    __atomic_fetch_add(&m->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->dirty, 1, __ATOMIC_RELEASE);
    return true;
  }
  uint64_t old = __atomic_fetch_or(&m->bits[wi], bit, __ATOMIC_ACQ_REL);
  if (old & bit)
    return false;
  __atomic_fetch_add(&m->count, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&m->dirty, 1, __ATOMIC_RELEASE);
  return true;
}

uint64_t
regionmap_count(const struct regionmap *m)
{
  return __atomic_load_n(&m->count, __ATOMIC_ACQUIRE);
}

bool
regionmap_complete(const struct regionmap *m)
{
  return regionmap_count(m) == m->regions;
}

static uint64_t
next_with(const struct regionmap *m, uint64_t from, bool set)
{
  while (from < m->regions) {
    size_t wi = (size_t)(from / 64);
    uint64_t w = __atomic_load_n(&m->bits[wi], __ATOMIC_ACQUIRE);
    if (!set)
      w = ~w;
    w &= ~0ull << (from % 64);
    if (w) {
      uint64_t r = (uint64_t)wi * 64 + (uint64_t)__builtin_ctzll(w);
      return r < m->regions ? r : m->regions;
    }
    from = ((uint64_t)wi + 1) * 64;
  }
  return m->regions;
}

uint64_t
regionmap_next_clear(const struct regionmap *m, uint64_t from)
{
  return next_with(m, from, false);
}

uint64_t
regionmap_next_set(const struct regionmap *m, uint64_t from)
{
  return next_with(m, from, true);
}

uint64_t
regionmap_dirty(const struct regionmap *m)
{
  return __atomic_load_n(&m->dirty, __ATOMIC_ACQUIRE);
}

int
regionmap_commit(struct regionmap *m, int (*flush)(void *opaque), void *opaque)
{
  int r = 0;
  pthread_mutex_lock(&m->commit_lock);
  if (m->failed) {
    r = error_set(EIO, "%s: an earlier map commit failed; refusing to commit again", m->path);
    goto out;
  }
  /* Snapshot first: every bit in the snapshot was set after its region's data was written
   * to the destination, so the flush below covers all of it.  Bits set during the flush are
   * left for the next commit (dirty is taken before the copy, so they stay counted). */
  uint64_t dirty = __atomic_exchange_n(&m->dirty, 0, __ATOMIC_ACQ_REL);
  if (m->rewrite) /* an old header (or a destination to record) goes out even if clean */
    dirty++;
  for (size_t i = 0; i < m->words; i++)
    m->snapshot[i] = __atomic_load_n(&m->bits[i], __ATOMIC_ACQUIRE);
  /* DURABILITY: the destination data must be durable BEFORE the map that claims it is
   * written; a crash after the map commit but before this flush would make the map point
   * at data that never reached the disk. */
  if (flush && (r = flush(opaque)) < 0) {
    __atomic_fetch_add(&m->dirty, dirty, __ATOMIC_RELEASE);
    goto out;
  }
  if (dirty == 0)
    goto out;
  unsigned char *enc = malloc(m->words ? m->words * 8 : 1);
  if (!enc) {
    __atomic_fetch_add(&m->dirty, dirty, __ATOMIC_RELEASE);
    r = error_set(ENOMEM, "%s: out of memory", m->path);
    goto out;
  }
  encode_bitmap(enc, m->snapshot, m->words);
  unsigned slot = 1 - m->active; /* never overwrite the last good map */
  r = write_slot(m, m->fd, slot, m->generation + 1, enc, m->path);
  free(enc);
  if (r < 0) {
    /* The slot may be half-written; the other one is intact but we cannot know what the
     * kernel kept, so stop committing rather than risk a silent inconsistency. */
    m->failed = true;
    goto out;
  }
  m->active = slot;
  m->rewrite = false;
  __atomic_store_n(&m->generation, m->generation + 1, __ATOMIC_RELEASE);
  debug("regionmap", "%s: committed generation %" PRIu64 " (%" PRIu64 " new regions)", m->path,
        m->generation, dirty);
out:
  pthread_mutex_unlock(&m->commit_lock);
  return r;
}
