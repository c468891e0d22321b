/* ferry: the clone's region map — which regions of the destination already hold their data.
 *
 * Its own module behind an opaque handle (the dm-clone metadata model): an in-core bitmap
 * that the clone sets as regions get hydrated, and a file that keeps the committed state
 * across crashes.  Bits only ever go from 0 to 1.
 *
 * File format (all integers little-endian), documented in full in regionmap.c:
 *   two slots, each = a 4 KiB header + the bitmap padded to 4 KiB;
 *   header: magic "FERRYMAP", version, generation, volume size, region size, region count,
 *   source size, source identity (a string, normally the source URI), destination size and
 *   identity (version 2), CRC32C of the bitmap, CRC32C of the header.  The valid slot with
 *   the highest generation is the map; a commit writes the other slot with generation + 1,
 *   so a crash at any instant leaves the old map or the new one, never a torn one.
 *
 * Durability: regionmap_commit() snapshots the bitmap, calls the caller's flush (make the
 * destination data durable), and only then writes the snapshot.
 */
#ifndef FERRY_REGIONMAP_H
#define FERRY_REGIONMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct regionmap;

#define REGIONMAP_DEFAULT_REGION_SIZE (64u << 10)
#define REGIONMAP_MIN_REGION_SIZE (4u << 10)
#define REGIONMAP_MAX_REGION_SIZE (64u << 20)
#define REGIONMAP_MAX_SOURCE_ID 1024
#define REGIONMAP_MAX_DEST_ID 256

/* What a map must match.  region_size 0: the existing map's (or the default for a new map). */
struct regionmap_params {
  uint64_t volume_size;
  uint64_t region_size;
  uint64_t source_size;
  const char *source_id; /* e.g. the source URI; at most REGIONMAP_MAX_SOURCE_ID - 1 bytes */
  /* The destination the map describes ("inode 1234", a URI): recorded at creation (and into
   * a version-1 map at its next commit), refused when another.  NULL: not checked. */
  const char *dest_id;
  uint64_t dest_size;
  /* A missing or empty map is an error (-ENOENT, message naming the path) instead of being
   * created: the destination already holds data this map would no longer describe. */
  bool no_create;
};

/* Open the map at path, creating it (atomically: temp file + rename + directory fsync) when
 * it is missing or empty (unless no_create).  An existing map that does not match params
 * (source, destination, sizes), or whose both slots are corrupt, is refused with a message
 * naming path, and nothing is written.  Falling back to the older slot because the newer one
 * is torn is logged as a warning naming both generations.  0 or -errno. */
int regionmap_open(const char *path, const struct regionmap_params *p, struct regionmap **out);
/* Close without committing (the caller commits first when it wants to). */
void regionmap_close(struct regionmap *m);

uint64_t regionmap_region_size(const struct regionmap *m);
uint64_t regionmap_regions(const struct regionmap *m);
uint64_t regionmap_generation(const struct regionmap *m); /* of the last commit */
const char *regionmap_path(const struct regionmap *m);

/* In-core bitmap.  Thread-safe (atomic word updates). */
bool regionmap_test(const struct regionmap *m, uint64_t region);
/* Set one bit; true when it was clear (then the map is dirty). */
bool regionmap_mark(struct regionmap *m, uint64_t region);
uint64_t regionmap_count(const struct regionmap *m); /* regions set */
bool regionmap_complete(const struct regionmap *m);  /* every region set */
/* First clear region in [from, regions), or regions when none. */
uint64_t regionmap_next_clear(const struct regionmap *m, uint64_t from);
/* First set region in [from, regions), or regions when none. */
uint64_t regionmap_next_set(const struct regionmap *m, uint64_t from);
/* Regions marked since the last commit. */
uint64_t regionmap_dirty(const struct regionmap *m);

/* Make the data behind every bit set so far durable (flush(opaque) < 0 aborts the commit and
 * its error is returned), then write the map atomically.  Commits are serialised; when
 * nothing is dirty only flush runs.  0 or -errno with a message naming the map file. */
int regionmap_commit(struct regionmap *m, int (*flush)(void *opaque), void *opaque);

/* CRC32C (Castagnoli), exposed for the unit test. */
uint32_t regionmap_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
