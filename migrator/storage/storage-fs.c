/* ferry: the `fs` storage kind — volumes are files under DATASTORES/<ds_id>/ (storage.h).
 * Every change is made durable before it is reported done: the file or directory entry is
 * fsynced, then its directory, because the storage log claims it happened. */
#include "migrator/storage/storage-impl.h"

#include "common/error.h"
#include "common/util.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDECAR_SUFFIX ".ferry.json"

int
storage_fs_volume_path(const char *datastores, int ds, const char *volume, char **out)
{
  if (ds < 0)
    return error_set(EINVAL, "datastore %d: not a datastore ID", ds);
  if (!volume || !*volume || volume[0] == '/' || strstr(volume, "..") || strstr(volume, "//"))
    return error_set(EINVAL, "datastore %d: volume '%s' is not a name inside the datastore", ds,
                     volume ? volume : "");
  if (asprintf(out, "%s/%d/%s", datastores, ds, volume) < 0)
    return error_set(ENOMEM, "out of memory");
  return 0;
}

static char *
sidecar_of(const char *path)
{
  char *s = NULL;
  if (asprintf(&s, "%s" SIDECAR_SUFFIX, path) < 0)
    return NULL;
  return s;
}

/* mkdir -p for the parent directories of path below `top` (the datastore directory must
 * already exist: a missing one means a wrong --datastores, not something to create). */
static int
make_parents(const char *path)
{
  char *copy = strdup(path);
  if (!copy)
    return error_set(ENOMEM, "out of memory");
  int r = 0;
  for (char *p = strchr(copy + 1, '/'); p; p = strchr(p + 1, '/')) {
    *p = '\0';
    if (mkdir(copy, 0750) < 0 && errno != EEXIST) {
      r = error_set_errno(errno, "%s: mkdir", copy);
      break;
    }
    *p = '/';
  }
  free(copy);
  return r;
}

static int
fs_create(const char *path, uint64_t size)
{
  int r = make_parents(path);
  if (r < 0)
    return r;
  /* O_EXCL: an existing destination was renamed aside by the plan; anything there now
   * appeared since and is not ours to overwrite. */
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
  if (fd < 0)
    return error_set_errno(errno, "%s: create destination", path);
  if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0) {
    r = error_set_errno(errno, "%s: size %llu", path, (unsigned long long)size);
    close(fd);
    unlink(path);
    return r;
  }
  close(fd);
  return fsync_parent_dir(path);
}

/* Rename without ever replacing an existing file. */
static int
rename_noreplace(const char *from, const char *to)
{
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return -errno;
  /* Filesystems without RENAME_NOREPLACE (some NFS): check, then rename (small race). */
  struct stat st;
  if (lstat(to, &st) == 0)
    return -EEXIST;
  return rename(from, to) == 0 ? 0 : -errno;
}

static int
fs_rename(const char *from, const char *to)
{
  int r = rename_noreplace(from, to);
  if (r < 0)
    return error_set_errno(-r, "rename %s to %s", from, to);
  char *sf = sidecar_of(from), *st = sidecar_of(to);
  if (!sf || !st) {
    free(sf);
    free(st);
    return error_set(ENOMEM, "out of memory");
  }
  /* The tags travel with their file. */
  r = rename_noreplace(sf, st);
  if (r == -ENOENT)
    r = 0;
  else if (r < 0)
    r = error_set_errno(-r, "rename %s to %s", sf, st);
  free(sf);
  free(st);
  if (r < 0)
    return r;
  return fsync_parent_dir(to);
}

static int
fs_remove(const char *path)
{
  if (unlink(path) < 0)
    return error_set_errno(errno, "%s: remove", path);
  char *sc = sidecar_of(path);
  if (!sc)
    return error_set(ENOMEM, "out of memory");
  if (unlink(sc) < 0 && errno != ENOENT) {
    int r = error_set_errno(errno, "%s: remove", sc);
    free(sc);
    return r;
  }
  free(sc);
  return fsync_parent_dir(path);
}

/* Merge tags into the sidecar (null removes), remembering the previous values in *before. */
static int
fs_tag(const char *path, const json_t *tags, json_t **before)
{
  struct stat stb;
  if (stat(path, &stb) < 0)
    return error_set_errno(errno, "%s: tag", path);
  char *sc = sidecar_of(path);
  if (!sc)
    return error_set(ENOMEM, "out of memory");
  int r = 0;
  json_t *doc = NULL, *old = json_object();
  if (access(sc, F_OK) == 0) {
    json_error_t jerr;
    doc = json_load_file(sc, 0, &jerr);
    if (!doc || !json_is_object(doc)
        || (json_object_get(doc, "tags") && !json_is_object(json_object_get(doc, "tags")))) {
      r = error_set(EINVAL, "%s: not a ferry tag file (%s)", sc,
                    doc ? "no tags object" : jerr.text);
      goto out;
    }
  } else
    doc = json_object();
  json_t *cur = json_object_get(doc, "tags");
  if (!cur) {
    cur = json_object();
    json_object_set_new(doc, "tags", cur);
  }
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)tags, key, val)
  {
    json_t *prev = json_object_get(cur, key);
    json_object_set(old, key, prev ? prev : json_null());
    if (json_is_null(val))
      json_object_del(cur, key);
    else
      json_object_set(cur, key, val);
  }
  if (json_object_size(cur) == 0) {
    if (unlink(sc) < 0 && errno != ENOENT)
      r = error_set_errno(errno, "%s: remove", sc);
    else
      r = fsync_parent_dir(sc);
  } else
    r = storage_write_json_file(sc, doc);
  if (r == 0 && before) {
    *before = old;
    old = NULL;
  }
out:
  json_decref(old);
  json_decref(doc);
  free(sc);
  return r;
}

int
storage_fs_run(const json_t *act, json_t **before)
{
  const char *what = json_string_value(json_object_get(act, "action"));
  const char *path = json_string_value(json_object_get(act, "path"));
  if (!what || !path)
    return error_set(EINVAL, "storage fs: action without \"action\" or \"path\"");
  debug("storage", "fs %s %s", what, path);
  if (strcmp(what, "create") == 0)
    return fs_create(path, (uint64_t)json_integer_value(json_object_get(act, "size")));
  if (strcmp(what, "rename") == 0) {
    const char *to = json_string_value(json_object_get(act, "to_path"));
    if (!to)
      return error_set(EINVAL, "storage fs: rename of %s without \"to_path\"", path);
    return fs_rename(path, to);
  }
  if (strcmp(what, "tag") == 0)
    return fs_tag(path, json_object_get(act, "tags"), before);
  if (strcmp(what, "remove") == 0)
    return fs_remove(path);
  return error_set(EINVAL, "storage fs: unknown action '%s'", what);
}

int
storage_write_json_file(const char *path, const json_t *doc)
{
  char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  char *tmp = NULL;
  if (!text || asprintf(&tmp, "%s.tmp", path) < 0) {
    free(text);
    return error_set(ENOMEM, "out of memory");
  }
  int r = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    r = error_set_errno(errno, "%s: create", tmp);
    goto out;
  }
  size_t len = strlen(text);
  text[len] = '\0';
  ssize_t n = write(fd, text, len);
  if (n != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
    r = error_set_errno(n < 0 ? errno : EIO, "%s: write", tmp);
    close(fd);
    unlink(tmp);
    goto out;
  }
  close(fd);
  /* The new content is durable in tmp before it replaces the old file; the rename is made
   * durable by the directory fsync: a crash leaves the old or the new file, never a torn one. */
  if (rename(tmp, path) < 0) {
    r = error_set_errno(errno, "rename %s to %s", tmp, path);
    unlink(tmp);
    goto out;
  }
  r = fsync_parent_dir(path);
out:
  free(tmp);
  free(text);
  return r;
}
