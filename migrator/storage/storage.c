/* ferry: the storage step — plan, phases, log and rollback (storage.h).
 *
 * The whole state is one JSON document (the log): kind, base directory or hook, timestamp and
 * the list of actions, each {"phase","state","request"[,"reply"][,"before"]}.  It is written
 * durably before an action starts and after it ends, so a crash at any point leaves a log that
 * says what may have happened, and rollback can undo exactly that. */
#include "migrator/storage/storage.h"
#include "migrator/storage/storage-impl.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum phase { PREPARE, FINALIZE };
static const char *const phase_names[] = { "prepare", "finalize" };

struct disk_paths {
  int vm, disk;
  char *source, *dest;
};

struct storage {
  enum storage_kind kind;
  char *command;    /* exec */
  char *datastores; /* fs */
  char *log_path;
  long long timestamp;
  json_t *actions; /* array of {"phase","state","request",...} */
  struct disk_paths *disks;
  size_t n_disks;
};

const char *
storage_kind_name(enum storage_kind k)
{
  switch (k) {
  case STORAGE_FS:
    return "fs";
  case STORAGE_EXEC:
    return "exec";
  default:
    return "none";
  }
}

int
storage_new(const char *spec, struct storage **out)
{
  enum storage_kind kind;
  const char *command = NULL;
  if (!spec)
    return error_set(EINVAL, "--storage: missing value (fs, exec:CMD or none)");
  if (strcmp(spec, "fs") == 0)
    kind = STORAGE_FS;
  else if (strcmp(spec, "none") == 0)
    kind = STORAGE_NONE;
  else if (strncmp(spec, "exec:", 5) == 0) {
    kind = STORAGE_EXEC;
    command = spec + 5;
    if (!*command)
      return error_set(EINVAL, "--storage exec: no command after 'exec:'");
  } else
    return error_set(EINVAL, "--storage: unknown kind '%s' (fs, exec:CMD or none)", spec);
  struct storage *s = calloc(1, sizeof *s);
  if (!s)
    return error_set(ENOMEM, "out of memory");
  s->kind = kind;
  s->command = command ? strdup(command) : NULL;
  s->datastores = strdup(STORAGE_DEFAULT_DATASTORES);
  s->timestamp = (long long)time(NULL);
  s->actions = json_array();
  if ((command && !s->command) || !s->datastores || !s->actions) {
    storage_free(s);
    return error_set(ENOMEM, "out of memory");
  }
  *out = s;
  return 0;
}

void
storage_free(struct storage *s)
{
  if (!s)
    return;
  for (size_t i = 0; i < s->n_disks; i++) {
    free(s->disks[i].source);
    free(s->disks[i].dest);
  }
  free(s->disks);
  json_decref(s->actions);
  free(s->command);
  free(s->datastores);
  free(s->log_path);
  free(s);
}

enum storage_kind
storage_get_kind(const struct storage *s)
{
  return s->kind;
}

void
storage_set_datastores(struct storage *s, const char *dir)
{
  char *d = strdup(dir);
  if (!d)
    return;
  /* "/base/" and "/base" name the same directory; keep paths in messages tidy. */
  size_t n = strlen(d);
  while (n > 1 && d[n - 1] == '/')
    d[--n] = '\0';
  free(s->datastores);
  s->datastores = d;
}

void
storage_set_timestamp(struct storage *s, long long unix_seconds)
{
  s->timestamp = unix_seconds;
}

void
storage_set_log(struct storage *s, const char *path)
{
  free(s->log_path);
  s->log_path = path ? strdup(path) : NULL;
}

const char *
storage_action_target(const json_t *act)
{
  static _Thread_local char buf[512];
  snprintf(buf, sizeof buf, "%lld:%s",
           (long long)json_integer_value(json_object_get(act, "datastore")),
           json_string_value(json_object_get(act, "volume")) ?: "?");
  return buf;
}

/* "42/disk.0" -> "42/MIGRATED-disk.0-1763767045": the new name stays in the same directory. */
static char *
aside_name(const char *prefix, const char *volume, long long ts)
{
  const char *base = strrchr(volume, '/');
  int dirlen = base ? (int)(base - volume + 1) : 0;
  base = base ? base + 1 : volume;
  char *s = NULL;
  if (asprintf(&s, "%.*s%s-%s-%lld", dirlen, volume, prefix, base, ts) < 0)
    return NULL;
  return s;
}

static struct disk_paths *
find_disk(const struct storage *s, int vm, int disk)
{
  for (size_t i = 0; i < s->n_disks; i++)
    if (s->disks[i].vm == vm && s->disks[i].disk == disk)
      return &s->disks[i];
  return NULL;
}

/* A new action object {"action", "vm", "disk", "datastore", "volume"} (+ "path" for fs). */
static json_t *
new_request(const struct storage *s, const char *what, const struct storage_disk *d, int ds,
            const char *volume)
{
  json_t *a = json_pack("{s:s, s:i, s:i, s:i, s:s}", "action", what, "vm", d->vm, "disk", d->disk,
                        "datastore", ds, "volume", volume);
  if (a && s->kind == STORAGE_FS) {
    char *path;
    if (storage_fs_volume_path(s->datastores, ds, volume, &path) < 0) {
      json_decref(a);
      return NULL;
    }
    json_object_set_new(a, "path", json_string(path));
    free(path);
  }
  return a;
}

static int
add_action(struct storage *s, enum phase phase, json_t *req)
{
  if (!req)
    return error_code() ? -error_code() : error_set(ENOMEM, "out of memory");
  json_t *entry = json_pack("{s:s, s:s, s:o}", "phase", phase_names[phase], "state", "planned",
                            "request", req);
  if (!entry || json_array_append_new(s->actions, entry) < 0)
    return error_set(ENOMEM, "out of memory");
  return 0;
}

static json_t *
rename_request(const struct storage *s, const struct storage_disk *d, int ds, const char *volume,
               const char *to)
{
  json_t *a = new_request(s, "rename", d, ds, volume);
  if (!a)
    return NULL;
  json_object_set_new(a, "to", json_string(to));
  if (s->kind == STORAGE_FS) {
    char *path;
    if (storage_fs_volume_path(s->datastores, ds, to, &path) < 0) {
      json_decref(a);
      return NULL;
    }
    json_object_set_new(a, "to_path", json_string(path));
    free(path);
  }
  return a;
}

static json_t *
tag_request(const struct storage *s, const struct storage_disk *d, int ds, const char *volume)
{
  json_t *a = new_request(s, "tag", d, ds, volume);
  json_t *tags = json_object();
  if (!a || !tags) {
    json_decref(a);
    json_decref(tags);
    return NULL;
  }
  char v[32];
  snprintf(v, sizeof v, "%d", d->vm);
  json_object_set_new(tags, "nvm", json_string(v));
  snprintf(v, sizeof v, "%lld", s->timestamp);
  json_object_set_new(tags, "mvts", json_string(v));
  json_object_set_new(a, "tags", tags);
  return a;
}

/* fs checks at plan time: the source is there, the destination datastore is there, and
 * whether a file already sits at the destination name. */
static int
fs_check(const struct storage *s, const struct storage_disk *d, uint64_t *size, bool *dest_exists)
{
  char *src = NULL, *dst = NULL, *dsdir = NULL;
  int r = storage_fs_volume_path(s->datastores, d->src_ds, d->src_volume, &src);
  if (r == 0)
    r = storage_fs_volume_path(s->datastores, d->dst_ds, d->dst_volume, &dst);
  if (r < 0)
    goto out;
  struct stat st;
  if (stat(src, &st) < 0) {
    r = error_set_errno(errno, "datastore %d: source volume %s", d->src_ds, src);
    goto out;
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    r = error_set(EINVAL, "datastore %d: source volume %s is not a file or block device", d->src_ds,
                  src);
    goto out;
  }
  /* A file's own size wins over the catalog's (SIZE is in MiB, and often stale): the clone
   * needs a destination exactly as large as its source. */
  if (S_ISREG(st.st_mode))
    *size = (uint64_t)st.st_size;
  if (asprintf(&dsdir, "%s/%d", s->datastores, d->dst_ds) < 0) {
    dsdir = NULL;
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (stat(dsdir, &st) < 0 || !S_ISDIR(st.st_mode)) {
    r = error_set(ENOENT, "datastore %d: directory %s does not exist (wrong --datastores?)",
                  d->dst_ds, dsdir);
    goto out;
  }
  *dest_exists = lstat(dst, &st) == 0;
  if (d->src_ds == d->dst_ds && strcmp(d->src_volume, d->dst_volume) == 0)
    r = error_set(EINVAL, "datastore %d: volume %s would be moved onto itself", d->dst_ds,
                  d->dst_volume);
out:
  free(src);
  free(dst);
  free(dsdir);
  return r;
}

int
storage_plan_disk(struct storage *s, const struct storage_disk *d)
{
  if (s->kind == STORAGE_NONE)
    return 0;
  if (!d->src_volume || !d->dst_volume)
    return error_set(EINVAL, "VM %d disk %d: no volume name", d->vm, d->disk);
  if (find_disk(s, d->vm, d->disk))
    return error_set(EEXIST, "VM %d disk %d: planned twice", d->vm, d->disk);
  uint64_t size = d->size;
  bool dest_exists = false;
  int r;
  if (s->kind == STORAGE_FS && (r = fs_check(s, d, &size, &dest_exists)) < 0)
    return r;

  struct disk_paths *v = realloc(s->disks, (s->n_disks + 1) * sizeof *v);
  if (!v)
    return error_set(ENOMEM, "out of memory");
  s->disks = v;
  struct disk_paths *dp = &s->disks[s->n_disks++];
  *dp = (struct disk_paths){ .vm = d->vm, .disk = d->disk };
  if (s->kind == STORAGE_FS) {
    if (storage_fs_volume_path(s->datastores, d->src_ds, d->src_volume, &dp->source) < 0
        || storage_fs_volume_path(s->datastores, d->dst_ds, d->dst_volume, &dp->dest) < 0)
      return -error_code();
  }

  char *renamed = aside_name("RENAMED", d->dst_volume, s->timestamp);
  char *migrated = aside_name("MIGRATED", d->src_volume, s->timestamp);
  if (!renamed || !migrated) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  if (dest_exists
      && (r = add_action(s, PREPARE, rename_request(s, d, d->dst_ds, d->dst_volume, renamed))) < 0)
    goto out;
  json_t *create = new_request(s, "create", d, d->dst_ds, d->dst_volume);
  if (create) {
    json_object_set_new(create, "size", json_integer((json_int_t)size));
    json_object_set_new(create, "source",
                        json_pack("{s:i, s:s}", "datastore", d->src_ds, "volume", d->src_volume));
  }
  if ((r = add_action(s, PREPARE, create)) < 0
      || (r = add_action(s, FINALIZE, rename_request(s, d, d->src_ds, d->src_volume, migrated))) < 0
      || (r = add_action(s, FINALIZE, tag_request(s, d, d->dst_ds, d->dst_volume))) < 0
      || (r = add_action(s, FINALIZE, tag_request(s, d, d->src_ds, migrated))) < 0)
    goto out;
out:
  free(renamed);
  free(migrated);
  return r;
}

static void
print_request(const json_t *req, FILE *f)
{
  const char *what = json_string_value(json_object_get(req, "action"));
  fprintf(f, "%-6s %s", what, storage_action_target(req));
  if (strcmp(what, "rename") == 0)
    fprintf(f, " -> %s", json_string_value(json_object_get(req, "to")));
  else if (strcmp(what, "create") == 0) {
    char sz[32];
    format_size(sz, sizeof sz, (double)json_integer_value(json_object_get(req, "size")));
    fprintf(f, " (%s)", sz);
  } else if (strcmp(what, "tag") == 0) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(req, "tags"), k, v)
        fprintf(f, " %s=%s", k, json_is_null(v) ? "(removed)" : json_string_value(v));
  }
  const char *path = json_string_value(json_object_get(req, "path"));
  if (path)
    fprintf(f, "  [%s]", path);
  fputc('\n', f);
}

void
storage_print_plan(const struct storage *s, FILE *f)
{
  fprintf(f, "storage: %s", storage_kind_name(s->kind));
  if (s->kind == STORAGE_FS)
    fprintf(f, " (datastores in %s)", s->datastores);
  else if (s->kind == STORAGE_EXEC)
    fprintf(f, " (hook: %s)", s->command);
  fputc('\n', f);
  if (json_array_size(s->actions) == 0)
    fprintf(f, "  no storage action\n");
  size_t i;
  json_t *e;
  json_array_foreach(s->actions, i, e)
  {
    bool prep = strcmp(json_string_value(json_object_get(e, "phase")), "prepare") == 0;
    fprintf(f, "  %s: ", prep ? "before the clone  " : "after convergence");
    print_request(json_object_get(e, "request"), f);
  }
}

json_t *
storage_plan_json(const struct storage *s)
{
  json_t *a = json_array();
  size_t i;
  json_t *e;
  json_array_foreach(s->actions, i, e)
  {
    json_t *req = json_deep_copy(json_object_get(e, "request"));
    json_object_set_new(req, "phase", json_string(json_string_value(json_object_get(e, "phase"))));
    json_array_append_new(a, req);
  }
  return a;
}

const char *
storage_dest_path(const struct storage *s, int vm, int disk)
{
  const struct disk_paths *d = find_disk(s, vm, disk);
  return d ? d->dest : NULL;
}

const char *
storage_source_path(const struct storage *s, int vm, int disk)
{
  const struct disk_paths *d = find_disk(s, vm, disk);
  return d ? d->source : NULL;
}

static json_t *
log_document(const struct storage *s)
{
  json_t *doc = json_pack("{s:i, s:s, s:I, s:O}", "version", 1, "kind", storage_kind_name(s->kind),
                          "timestamp", (json_int_t)s->timestamp, "actions", s->actions);
  if (doc && s->kind == STORAGE_FS)
    json_object_set_new(doc, "datastores", json_string(s->datastores));
  if (doc && s->kind == STORAGE_EXEC)
    json_object_set_new(doc, "command", json_string(s->command));
  return doc;
}

static int
save_log(const struct storage *s)
{
  if (!s->log_path)
    return 0;
  json_t *doc = log_document(s);
  if (!doc)
    return error_set(ENOMEM, "out of memory");
  int r = storage_write_json_file(s->log_path, doc);
  json_decref(doc);
  return r < 0 ? error_prefix("storage log") : 0;
}

/* Run one request with the storage's kind; *extra gets fs's tag before-values or the hook's
 * reply. */
static int
run_request(enum storage_kind kind, const char *command, const json_t *req, json_t **extra)
{
  *extra = NULL;
  if (kind == STORAGE_FS)
    return storage_fs_run(req, extra);
  if (kind == STORAGE_EXEC)
    return storage_exec_run(command, req, extra);
  return 0;
}

static void
remember_reply(struct storage *s, const json_t *req, const json_t *reply)
{
  if (!reply || strcmp(json_string_value(json_object_get(req, "action")), "create") != 0)
    return;
  struct disk_paths *d = find_disk(s, (int)json_integer_value(json_object_get(req, "vm")),
                                   (int)json_integer_value(json_object_get(req, "disk")));
  const char *path = json_string_value(json_object_get(reply, "path"));
  const char *source = json_string_value(json_object_get(reply, "source"));
  if (d && path) {
    free(d->dest);
    d->dest = strdup(path);
  }
  if (d && source) {
    free(d->source);
    d->source = strdup(source);
  }
}

static int
run_phase(struct storage *s, enum phase phase)
{
  size_t i;
  json_t *e;
  json_array_foreach(s->actions, i, e)
  {
    if (strcmp(json_string_value(json_object_get(e, "phase")), phase_names[phase]) != 0
        || strcmp(json_string_value(json_object_get(e, "state")), "planned") != 0)
      continue;
    json_t *req = json_object_get(e, "request");
    /* Logged as started before it runs: after a crash, rollback knows it may have happened. */
    json_object_set_new(e, "state", json_string("started"));
    int r = save_log(s);
    if (r < 0)
      return r;
    json_t *extra = NULL;
    r = run_request(s->kind, s->command, req, &extra);
    json_object_set_new(e, "state", json_string(r < 0 ? "failed" : "done"));
    if (extra) {
      json_object_set_new(e, s->kind == STORAGE_FS ? "before" : "reply", extra);
      remember_reply(s, req, extra);
    }
    if (r < 0) {
      char *msg = strdup(error_message());
      save_log(s);
      error_set(-r, "%s", msg ? msg : "storage action failed");
      free(msg);
      return r;
    }
    if ((r = save_log(s)) < 0)
      return r;
    debug("storage", "%s done: %s", phase_names[phase], storage_action_target(req));
  }
  return 0;
}

int
storage_prepare(struct storage *s)
{
  return run_phase(s, PREPARE);
}

int
storage_finalize(struct storage *s)
{
  return run_phase(s, FINALIZE);
}

/* The request that undoes entry e; `keep_created` turns "remove what was created" into "rename
 * it aside" (rollback after the VM used it).  NULL when there is nothing to undo. */
static json_t *
undo_request(const json_t *e, bool keep_created, long long now)
{
  const json_t *req = json_object_get(e, "request");
  const char *what = json_string_value(json_object_get(req, "action"));
  json_t *u = json_deep_copy(req);
  if (!u)
    return NULL;
  json_object_del(u, "size");
  json_object_del(u, "source");
  if (strcmp(what, "rename") == 0) {
    json_object_set(u, "volume", json_object_get(req, "to"));
    json_object_set(u, "to", json_object_get(req, "volume"));
    if (json_object_get(req, "path")) {
      json_object_set(u, "path", json_object_get(req, "to_path"));
      json_object_set(u, "to_path", json_object_get(req, "path"));
    }
  } else if (strcmp(what, "create") == 0 && keep_created) {
    const char *vol = json_string_value(json_object_get(req, "volume"));
    char *aside = aside_name("ROLLEDBACK", vol, now);
    json_object_set_new(u, "action", json_string("rename"));
    json_object_set_new(u, "to", json_string(aside));
    const char *path = json_string_value(json_object_get(req, "path"));
    if (path) {
      /* Same directory as the volume: replace the volume's name at the end of its path. */
      size_t base = strlen(path) - strlen(vol);
      char *to_path = NULL;
      if (asprintf(&to_path, "%.*s%s", (int)base, path, aside) >= 0)
        json_object_set_new(u, "to_path", json_string(to_path));
      free(to_path);
    }
    free(aside);
  } else if (strcmp(what, "create") == 0) {
    json_object_set_new(u, "action", json_string("remove"));
  } else if (strcmp(what, "tag") == 0) {
    json_t *before = json_object_get(e, "before");
    json_t *tags = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(req, "tags"), k, v)
    {
      json_t *b = before ? json_object_get(before, k) : NULL;
      json_object_set(tags, k, b ? b : json_null());
    }
    json_object_set_new(u, "tags", tags);
  } else {
    json_decref(u);
    return NULL;
  }
  return u;
}

/* fs after a crash: did a "started" action take effect?  (exec cannot tell: skipped.) */
static bool
fs_took_effect(const json_t *req)
{
  const char *what = json_string_value(json_object_get(req, "action"));
  const char *path = json_string_value(json_object_get(req, "path"));
  struct stat st;
  if (strcmp(what, "rename") == 0)
    return lstat(path, &st) < 0
           && lstat(json_string_value(json_object_get(req, "to_path")), &st) == 0;
  if (strcmp(what, "create") == 0)
    return lstat(path, &st) == 0;
  return strcmp(what, "tag") != 0; /* a half-done tag left nothing to restore safely */
}

/* Undo done (and, for fs, effective started) actions in reverse order. */
static int
undo_all(struct storage *s, bool keep_created, FILE *out)
{
  long long now = (long long)time(NULL);
  for (size_t i = json_array_size(s->actions); i-- > 0;) {
    json_t *e = json_array_get(s->actions, i);
    const char *state = json_string_value(json_object_get(e, "state"));
    json_t *req = json_object_get(e, "request");
    bool started = strcmp(state, "started") == 0;
    if (strcmp(state, "done") != 0 && !started)
      continue;
    if (started && (s->kind != STORAGE_FS || !fs_took_effect(req))) {
      log_warning("storage: %s of %s was interrupted; not undone",
                  json_string_value(json_object_get(req, "action")), storage_action_target(req));
      continue;
    }
    json_t *u = undo_request(e, keep_created, now);
    if (!u)
      continue;
    json_t *extra = NULL;
    int r = run_request(s->kind, s->command, u, &extra);
    json_decref(extra);
    if (r < 0) {
      json_decref(u);
      save_log(s);
      return error_prefix("storage: undoing %s of %s",
                          json_string_value(json_object_get(req, "action")),
                          storage_action_target(req));
    }
    if (out) {
      fprintf(out, "storage undo: ");
      print_request(u, out);
    }
    json_decref(u);
    json_object_set_new(e, "state", json_string("undone"));
    if ((r = save_log(s)) < 0)
      return r;
  }
  return 0;
}

int
storage_abort(struct storage *s)
{
  return undo_all(s, false, NULL);
}

int
storage_rollback_file(const char *log_path, FILE *out)
{
  json_error_t jerr;
  json_t *doc = json_load_file(log_path, 0, &jerr);
  if (!doc)
    return error_set(EINVAL, "%s: cannot read storage log: %s (line %d)", log_path, jerr.text,
                     jerr.line);
  struct storage *s = NULL;
  int r;
  const char *kind = json_string_value(json_object_get(doc, "kind"));
  json_t *actions = json_object_get(doc, "actions");
  if (json_integer_value(json_object_get(doc, "version")) != 1 || !kind
      || !json_is_array(actions)) {
    r = error_set(EINVAL, "%s: not a ferry storage log (version 1)", log_path);
    goto out;
  }
  char *spec = NULL;
  if (strcmp(kind, "exec") == 0) {
    const char *cmd = json_string_value(json_object_get(doc, "command"));
    if (!cmd || asprintf(&spec, "exec:%s", cmd) < 0)
      spec = NULL;
  } else
    spec = strdup(kind);
  r = storage_new(spec, &s);
  free(spec);
  if (r < 0)
    goto out;
  const char *ds = json_string_value(json_object_get(doc, "datastores"));
  if (ds)
    storage_set_datastores(s, ds);
  s->timestamp = json_integer_value(json_object_get(doc, "timestamp"));
  json_decref(s->actions);
  s->actions = json_incref(actions);
  storage_set_log(s, log_path);
  r = undo_all(s, true, out);
out:
  storage_free(s);
  json_decref(doc);
  return r;
}
