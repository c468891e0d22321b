/* Unit tests of the storage step (storage.h): fs on a temporary datastore tree, exec with a
 * real bash hook that logs what it receives.  Exact texts are asserted: plan lines, hook
 * stdin lines, sidecar tags, error messages. */
#include "migrator/storage/storage.h"

#include "common/error.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
static char base[256];

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,     \
              error_message());                                                                    \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

#define CHECK_STR(got, want)                                                                       \
  do {                                                                                             \
    const char *g_ = (got), *w_ = (want);                                                          \
    if (!g_ || strcmp(g_, w_) != 0) {                                                              \
      fprintf(stderr, "%s:%d: got\n---\n%s\n---\nwant\n---\n%s\n---\n", __FILE__, __LINE__,        \
              g_ ? g_ : "(null)", w_);                                                             \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char *
path_of(const char *rel)
{
  static char buf[4][512];
  static int k;
  char *b = buf[k++ % 4];
  snprintf(b, 512, "%s/%s", base, rel);
  return b;
}

static void
write_file(const char *rel, const char *text)
{
  FILE *f = fopen(path_of(rel), "w");
  fputs(text, f);
  fclose(f);
}

/* The whole file as a string ("" when missing; caller frees). */
static char *
read_file(const char *rel)
{
  FILE *f = fopen(path_of(rel), "r");
  char *s = NULL;
  size_t n = 0;
  if (!f)
    return strdup("");
  if (getdelim(&s, &n, '\0', f) < 0) {
    free(s);
    s = strdup("");
  }
  fclose(f);
  return s;
}

static int
exists(const char *rel)
{
  struct stat st;
  return lstat(path_of(rel), &st) == 0;
}

static int
count_prefix(const char *dir, const char *prefix)
{
  DIR *d = opendir(path_of(dir));
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  if (d)
    closedir(d);
  return n;
}

static struct storage_disk disk42 = {
  .vm = 42,
  .disk = 0,
  .src_ds = 1,
  .dst_ds = 101,
  .src_volume = "one-10",
  .dst_volume = "one-10",
};

static struct storage *
new_storage(const char *spec)
{
  struct storage *s = NULL;
  CHECK(storage_new(spec, &s) == 0);
  storage_set_datastores(s, base);
  storage_set_timestamp(s, 1700000000);
  storage_set_log(s, path_of("storage.json"));
  return s;
}

static char *
plan_text(struct storage *s)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  storage_print_plan(s, f);
  fclose(f);
  return text;
}

static void
test_spec(void)
{
  struct storage *s = NULL;
  CHECK(storage_new("zfs", &s) == -EINVAL);
  CHECK_STR(error_message(), "--storage: unknown kind 'zfs' (fs, exec:CMD or none)");
  CHECK(storage_new("exec:", &s) == -EINVAL);
  CHECK_STR(error_message(), "--storage exec: no command after 'exec:'");
  CHECK(storage_new("none", &s) == 0);
  CHECK(storage_plan_disk(s, &disk42) == 0);
  CHECK(storage_prepare(s) == 0 && storage_finalize(s) == 0);
  CHECK(storage_dest_path(s, 42, 0) == NULL);
  storage_free(s);
}

static void
test_fs_move_and_rollback(void)
{
  mkdir(path_of("1"), 0755);
  mkdir(path_of("101"), 0755);
  write_file("1/one-10", "source bytes\n");
  struct storage *s = new_storage("fs");
  CHECK(storage_plan_disk(s, &disk42) == 0);
  char *plan = plan_text(s), *want = NULL;
  CHECK(asprintf(&want,
                 "storage: fs (datastores in %s)\n"
                 "  before the clone  : create 101:one-10 (13 B)  [%s/101/one-10]\n"
                 "  after convergence: rename 1:one-10 -> MIGRATED-one-10-1700000000  "
                 "[%s/1/one-10]\n"
                 "  after convergence: tag    101:one-10 nvm=42 mvts=1700000000  [%s/101/one-10]\n"
                 "  after convergence: tag    1:MIGRATED-one-10-1700000000 nvm=42 mvts=1700000000"
                 "  [%s/1/MIGRATED-one-10-1700000000]\n",
                 base, base, base, base, base)
        > 0);
  CHECK_STR(plan, want);
  free(plan);
  free(want);
  CHECK(!exists("101/one-10")); /* planning changes nothing */

  CHECK(storage_prepare(s) == 0);
  struct stat st;
  CHECK(stat(path_of("101/one-10"), &st) == 0 && st.st_size == 13 && st.st_blocks == 0);
  CHECK_STR(storage_dest_path(s, 42, 0), path_of("101/one-10"));
  CHECK_STR(storage_source_path(s, 42, 0), path_of("1/one-10"));
  CHECK(exists("1/one-10"));

  CHECK(storage_finalize(s) == 0);
  CHECK(!exists("1/one-10"));
  char *moved = read_file("1/MIGRATED-one-10-1700000000");
  CHECK_STR(moved, "source bytes\n");
  free(moved);
  char *tags = read_file("101/one-10.ferry.json");
  CHECK_STR(tags, "{\n  \"tags\": {\n    \"nvm\": \"42\",\n    \"mvts\": \"1700000000\"\n  }\n}\n");
  free(tags);
  tags = read_file("1/MIGRATED-one-10-1700000000.ferry.json");
  CHECK_STR(tags, "{\n  \"tags\": {\n    \"nvm\": \"42\",\n    \"mvts\": \"1700000000\"\n  }\n}\n");
  free(tags);
  storage_free(s);

  /* Rollback: source back under its name, the destination kept aside, tags gone. */
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  CHECK(storage_rollback_file(path_of("storage.json"), f) == 0);
  fclose(f);
  CHECK(strstr(out, "storage undo: rename 1:MIGRATED-one-10-1700000000 -> one-10") != NULL);
  CHECK(strstr(out, "storage undo: rename 101:one-10 -> ROLLEDBACK-one-10-") != NULL);
  free(out);
  moved = read_file("1/one-10");
  CHECK_STR(moved, "source bytes\n");
  free(moved);
  CHECK(!exists("1/MIGRATED-one-10-1700000000"));
  CHECK(!exists("1/MIGRATED-one-10-1700000000.ferry.json"));
  CHECK(!exists("1/one-10.ferry.json"));
  CHECK(!exists("101/one-10") && !exists("101/one-10.ferry.json"));
  CHECK(count_prefix("101", "ROLLEDBACK-one-10-") == 1);
  /* A second rollback finds everything undone. */
  f = fopen("/dev/null", "w");
  CHECK(storage_rollback_file(path_of("storage.json"), f) == 0);
  fclose(f);
  CHECK(exists("1/one-10") && count_prefix("101", "ROLLEDBACK-") == 1);
  system("rm -rf -- \"$TEST_BASE\"/101/ROLLEDBACK-*");
}

static void
test_fs_existing_destination_and_abort(void)
{
  write_file("101/one-10", "OLD");
  struct storage *s = new_storage("fs");
  CHECK(storage_plan_disk(s, &disk42) == 0);
  char *plan = plan_text(s);
  CHECK(strstr(plan, "  before the clone  : rename 101:one-10 -> RENAMED-one-10-1700000000")
        != NULL);
  free(plan);
  CHECK(storage_prepare(s) == 0);
  char *old = read_file("101/RENAMED-one-10-1700000000"), *now = read_file("101/one-10");
  CHECK_STR(old, "OLD");
  CHECK_STR(now, "");
  free(old);
  free(now);
  /* The move fails before the VM used the destination: everything put back. */
  CHECK(storage_abort(s) == 0);
  old = read_file("101/one-10");
  CHECK_STR(old, "OLD");
  free(old);
  CHECK(!exists("101/RENAMED-one-10-1700000000"));
  CHECK(exists("1/one-10"));
  storage_free(s);
  unlink(path_of("101/one-10"));
}

static void
test_fs_refusals(void)
{
  struct storage *s = new_storage("fs");
  struct storage_disk d = disk42;
  d.src_volume = "nope";
  CHECK(storage_plan_disk(s, &d) == -ENOENT);
  char want[1024];
  snprintf(want, sizeof want, "datastore 1: source volume %s/1/nope: No such file or directory",
           base);
  CHECK_STR(error_message(), want);
  d = disk42;
  d.dst_ds = 7;
  CHECK(storage_plan_disk(s, &d) == -ENOENT);
  snprintf(want, sizeof want, "datastore 7: directory %s/7 does not exist (wrong --datastores?)",
           base);
  CHECK_STR(error_message(), want);
  d = disk42;
  d.dst_volume = "../1/one-10";
  CHECK(storage_plan_disk(s, &d) == -EINVAL);
  CHECK_STR(error_message(),
            "datastore 101: volume '../1/one-10' is not a name inside the datastore");
  CHECK(storage_prepare(s) == 0); /* nothing planned, nothing done */
  CHECK(!exists("101/one-10") && !exists("7"));
  storage_free(s);
}

static void
write_hook(const char *rel, const char *body)
{
  char *text = NULL;
  CHECK(asprintf(&text, "#!/bin/bash\nset -e\n%s\n", body) > 0);
  write_file(rel, text);
  free(text);
  chmod(path_of(rel), 0755);
}

static void
test_exec(void)
{
  write_hook("hook.sh", "read -r line\n"
                        "echo \"$FERRY_ACTION $line\" >> \"$(dirname \"$0\")/hook.log\"\n"
                        "if [ \"$FERRY_ACTION\" = create ]; then\n"
                        "  echo '{\"path\":\"/dev/sp/new\",\"source\":\"/dev/sp/old\"}'\n"
                        "fi\n"
                        "echo 'progress note' >&2");
  char *spec = NULL;
  CHECK(asprintf(&spec, "exec:%s", path_of("hook.sh")) > 0);
  struct storage *s = new_storage(spec);
  CHECK(storage_plan_disk(s, &disk42) == 0);
  CHECK(storage_prepare(s) == 0);
  CHECK_STR(storage_dest_path(s, 42, 0), "/dev/sp/new");
  CHECK_STR(storage_source_path(s, 42, 0), "/dev/sp/old");
  CHECK(storage_finalize(s) == 0);
  storage_free(s);
  char *log = read_file("hook.log");
  CHECK_STR(log,
            "create {\"action\":\"create\",\"vm\":42,\"disk\":0,\"datastore\":101,\"volume\":"
            "\"one-10\",\"size\":0,\"source\":{\"datastore\":1,\"volume\":\"one-10\"}}\n"
            "rename {\"action\":\"rename\",\"vm\":42,\"disk\":0,\"datastore\":1,\"volume\":"
            "\"one-10\",\"to\":\"MIGRATED-one-10-1700000000\"}\n"
            "tag {\"action\":\"tag\",\"vm\":42,\"disk\":0,\"datastore\":101,\"volume\":"
            "\"one-10\",\"tags\":{\"nvm\":\"42\",\"mvts\":\"1700000000\"}}\n"
            "tag {\"action\":\"tag\",\"vm\":42,\"disk\":0,\"datastore\":1,\"volume\":"
            "\"MIGRATED-one-10-1700000000\",\"tags\":{\"nvm\":\"42\",\"mvts\":\"1700000000\"}}\n");
  free(log);
  unlink(path_of("hook.log"));

  /* Rollback through the same hook: the inverse actions, newest first. */
  FILE *f = fopen("/dev/null", "w");
  CHECK(storage_rollback_file(path_of("storage.json"), f) == 0);
  fclose(f);
  log = read_file("hook.log");
  const char *want_prefix
      = "tag {\"action\":\"tag\",\"vm\":42,\"disk\":0,\"datastore\":1,\"volume\":"
        "\"MIGRATED-one-10-1700000000\",\"tags\":{\"nvm\":null,\"mvts\":null}}\n"
        "tag {\"action\":\"tag\",\"vm\":42,\"disk\":0,\"datastore\":101,\"volume\":"
        "\"one-10\",\"tags\":{\"nvm\":null,\"mvts\":null}}\n"
        "rename {\"action\":\"rename\",\"vm\":42,\"disk\":0,\"datastore\":1,\"volume\":"
        "\"MIGRATED-one-10-1700000000\",\"to\":\"one-10\"}\n"
        "rename {\"action\":\"rename\",\"vm\":42,\"disk\":0,\"datastore\":101,\"volume\":"
        "\"one-10\",\"to\":\"ROLLEDBACK-one-10-";
  CHECK(strncmp(log, want_prefix, strlen(want_prefix)) == 0);
  if (strncmp(log, want_prefix, strlen(want_prefix)) != 0)
    fprintf(stderr, "hook log:\n%s\n", log);
  free(log);
  unlink(path_of("hook.log"));
  free(spec);

  /* A failing hook: exact message with its stderr, and nothing after it is asked for. */
  write_hook("fail.sh", "cat >> \"$(dirname \"$0\")/hook.log\"\n"
                        "echo 'pool one-b: 3 GiB missing' >&2\nexit 3");
  CHECK(asprintf(&spec, "exec:%s", path_of("fail.sh")) > 0);
  s = new_storage(spec);
  CHECK(storage_plan_disk(s, &disk42) == 0);
  CHECK(storage_prepare(s) == -EIO);
  char want[1024];
  snprintf(want, sizeof want,
           "storage hook '%s' failed on create of 101:one-10 (exit status 3): pool one-b: 3 GiB "
           "missing",
           path_of("fail.sh"));
  CHECK_STR(error_message(), want);
  CHECK(storage_abort(s) == 0); /* the failed create is not undone: the hook saw one line */
  storage_free(s);
  log = read_file("hook.log");
  CHECK_STR(log, "{\"action\":\"create\",\"vm\":42,\"disk\":0,\"datastore\":101,\"volume\":"
                 "\"one-10\",\"size\":0,\"source\":{\"datastore\":1,\"volume\":\"one-10\"}}\n");
  free(log);
  free(spec);

  /* A reply that is not JSON is refused, naming the hook and the text. */
  write_hook("bad.sh", "echo hello");
  CHECK(asprintf(&spec, "exec:%s", path_of("bad.sh")) > 0);
  s = new_storage(spec);
  CHECK(storage_plan_disk(s, &disk42) == 0);
  CHECK(storage_prepare(s) == -EINVAL);
  snprintf(want, sizeof want,
           "storage hook '%s': reply to create of 101:one-10 is not a JSON object: hello",
           path_of("bad.sh"));
  CHECK_STR(error_message(), want);
  storage_free(s);
  free(spec);

  /* A hook that ignores its stdin and exits at once must not kill us with SIGPIPE. */
  s = new_storage("exec:exit 0");
  CHECK(storage_plan_disk(s, &disk42) == 0);
  CHECK(storage_prepare(s) == 0);
  storage_free(s);
}

int
main(void)
{
  snprintf(base, sizeof base, "/tmp/ferry-storage-test.XXXXXX");
  if (!mkdtemp(base)) {
    perror("mkdtemp");
    return 1;
  }
  setenv("TEST_BASE", base, 1);
  test_spec();
  test_fs_move_and_rollback();
  test_fs_existing_destination_and_abort();
  test_fs_refusals();
  test_exec();
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", base);
  if (system(cmd) != 0)
    failures++;
  if (failures)
    fprintf(stderr, "%d check(s) failed\n", failures);
  else
    printf("storage: all checks passed\n");
  return failures ? 1 : 0;
}
