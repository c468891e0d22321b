/* ferry: the throwaway world of `ferry demo` — an OpenNebula SQLite catalog from the fixture,
 * fs datastores for two clusters and VM 42's disk: an ext4 image filled with generated files
 * (mkfs.ext4 -d: no mount, no root). */
#ifndef FERRY_DEMO_WORLD_H
#define FERRY_DEMO_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct demo_world {
  char *dir;        /* the world's root (temp dir) */
  char *catalog;    /* "sqlite:DIR/one.db" */
  char *db_path;    /* DIR/one.db */
  char *datastores; /* DIR/datastores: 0 1 100 101 */
  char *image;      /* VM 42's disk in cluster A: DIR/datastores/0/42/disk.0 */
  char *content;    /* the generated files the image was made from */
  uint64_t size;
  uint64_t data_bytes; /* bytes of generated files */
  char *probe_file;    /* a file inside the image ("/srv/data/blob-007.bin") */
};

/* Build the world in dir (existing, empty).  0 or -errno with a message. */
int demo_world_build(const char *dir, uint64_t size, struct demo_world *w);
void demo_world_free(struct demo_world *w);

/* The bytes of w->probe_file as generated (for comparing with debugfs's read). */
int demo_world_probe_content(const struct demo_world *w, uint8_t **data, size_t *len);

/* Run argv (PATH plus /usr/sbin:/sbin, where e2fsprogs live); capture stdout into *out (may be
 * NULL) and stderr into *err (may be NULL).  Returns the exit status (>= 0) or -errno. */
int demo_run(char *const argv[], char **out, size_t *out_len, char **err);

#endif
