/* ferry demo: a complete move on a throwaway world (demo-world.h), through the same code as
 * `ferry migrate --storage fs` (migrate-storage.h), then a verification that can fail:
 * source and destination compared by ferry verify (block digests of both, holes skipped),
 * every catalog edit read back by XPath, e2fsck of the
 * moved ext4 image and a file inside it read with debugfs and compared byte for byte.
 * Exit 0 only when everything verifies. */
#include "backends/verify.h"
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "migrator/opennebula/catalog.h"
#include "migrator/commands.h"
#include "migrator/demo/demo-vm.h"
#include "migrator/demo/demo-world.h"
#include "migrator/locate.h"
#include "migrator/migrate-storage.h"
#include "migrator/opennebula/plan.h"
#include "migrator/opennebula/xmlbody.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void
usage(FILE *f)
{
  fprintf(f,
          "Usage: ferry demo [--size SIZE] [--no-vm] [--keep] [--json] [-v]\n"
          "\n"
          "Build a throwaway OpenNebula world in a temporary directory — an SQLite catalog from\n"
          "the built-in 6.8 fixture, fs datastores for cluster A and cluster B, VM 42's disk as\n"
          "an ext4 image full of generated files, served by ferry-nbd as cluster A — and move\n"
          "the disk to cluster B exactly as `ferry migrate --storage fs` does: downtime, live\n"
          "progress, catalog edits, then verify (ferry verify, XPaths read back, e2fsck, a file\n"
          "read with debugfs).  Exit status 0 only when everything verifies.\n"
          "\n"
          "With qemu installed VM 42 really runs: the test guest (tests/guest/build: Debian's\n"
          "cloud kernel, a busybox initramfs) boots from cluster A's export, checks its files\n"
          "and keeps writing and fsyncing; its disk moves live to cluster B (ferry migrate\n"
          "--qmp: the VM is never stopped), and the demo prints the pause the guest saw (its\n"
          "largest heartbeat gap) next to ferry's, and checks every write it acknowledged.\n"
          "\n"
          "Options:\n"
          "  --size SIZE   disk size (default 1G; e.g. 64G: sparse, downtime does not grow)\n"
          "  --no-vm       do not boot the VM: the near-live move of a stopped VM\n"
          "  --keep        keep the world (its path is printed) instead of removing it\n"
          "  --json        print one JSON object with the results instead of text\n"
          "  -v            debug output\n"
          "  -h, --help    this help\n"
          "\n"
          "Needs mkfs.ext4, e2fsck and debugfs (e2fsprogs) and ferry-nbd next to ferry; the\n"
          "VM needs qemu-system-x86 (and, to build the guest once, busybox-static, cpio and\n"
          "apt access to Debian's linux-image-cloud-amd64).\n");
}

struct demo {
  struct demo_world w;
  bool json, keep, no_vm, live;
  struct demo_vm *vm;    /* VM 42 running, or NULL: the near-live demo */
  pthread_t hash_thread; /* hashing the source image from the switch on */
  bool hashing;
  struct digest_job *switch_hash;
  FILE *out; /* human output: stdout, or /dev/null with --json */
  pid_t cluster_a;
  char *cluster_a_sock, *cluster_a_uri;
  json_t *result;
  bool ok;
};

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void
sleep_ms(long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

/* Cluster A: ferry-nbd serving the source image read-only on a unix socket. */
static int
start_cluster_a(struct demo *d)
{
  char *prog = NULL, *pidfile = NULL, *log = NULL;
  int r = locate_program("ferry-nbd", "nbd-server", "FERRY_NBD", &prog);
  if (r < 0)
    return r;
  if (asprintf(&d->cluster_a_sock, "%s/cluster-a.sock", d->w.dir) < 0
      || asprintf(&d->cluster_a_uri, "nbd+unix:///?socket=%s", d->cluster_a_sock) < 0
      || asprintf(&pidfile, "%s/cluster-a.pid", d->w.dir) < 0
      || asprintf(&log, "%s/cluster-a.log", d->w.dir) < 0) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  /* Read-only for the clone of a stopped VM; a running VM writes its disk until the switch. */
  char *argv[12];
  int n = 0;
  argv[n++] = prog;
  argv[n++] = (char *)"--foreground";
  if (!d->live)
    argv[n++] = (char *)"--read-only";
  argv[n++] = (char *)"--socket";
  argv[n++] = d->cluster_a_sock;
  argv[n++] = (char *)"--pidfile";
  argv[n++] = pidfile;
  argv[n++] = (char *)"--export-name";
  argv[n++] = (char *)"";
  argv[n++] = d->w.image;
  argv[n] = NULL;
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    r = error_set_errno(errno, "%s: create", log);
    goto out;
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);                    /* ^C reaches ferry, which stops this server itself... */
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* ...or, if ferry dies first, the kernel does */
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], argv);
    _exit(127);
  }
  close(fd);
  if (pid < 0) {
    r = error_set_errno(errno, "%s: fork", prog);
    goto out;
  }
  d->cluster_a = pid;
  double deadline = now_seconds() + 30;
  while (access(pidfile, F_OK) != 0 || access(d->cluster_a_sock, F_OK) != 0) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      d->cluster_a = 0;
      r = error_set(EIO, "cluster A: ferry-nbd exited (status %d) before serving; see %s",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log);
      goto out;
    }
    if (now_seconds() > deadline) {
      r = error_set(ETIMEDOUT, "cluster A: ferry-nbd did not start within 30 s; see %s", log);
      goto out;
    }
    sleep_ms(10);
  }
out:
  free(prog);
  free(pidfile);
  free(log);
  return r;
}

static void
stop_cluster_a(struct demo *d)
{
  if (d->cluster_a > 0) {
    kill(d->cluster_a, SIGTERM);
    waitpid(d->cluster_a, NULL, 0);
    d->cluster_a = 0;
  }
}

static void check(struct demo *d, json_t *checks, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void
check(struct demo *d, json_t *checks, const char *name, bool ok, const char *fmt, ...)
{
  char *detail = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&detail, fmt, ap) < 0)
    detail = NULL;
  va_end(ap);
  fprintf(d->out, "  %-4s %s: %s\n", ok ? "OK" : "FAIL", name, detail ? detail : "");
  json_array_append_new(checks, json_pack("{s:s, s:b, s:s}", "check", name, "ok", ok, "detail",
                                          detail ? detail : ""));
  if (!ok)
    d->ok = false;
  free(detail);
}

/* Every edit of the plan, read back from a freshly opened catalog. */
static void
verify_catalog(struct demo *d, const struct plan *p, json_t *checks)
{
  struct catalog *c = NULL;
  struct catalog_options co = { .read_only = true };
  if (catalog_open(d->w.catalog, &co, &c) < 0) {
    check(d, checks, "catalog", false, "%s", error_message());
    return;
  }
  size_t good = 0;
  char name[96];
  for (size_t i = 0; i < p->n_edits; i++) {
    const struct plan_edit *e = &p->edits[i];
    const struct catalog_row *want = &p->after[e->row];
    catalog_row_name(want, name, sizeof name);
    struct catalog_row row = { 0 };
    struct xmlbody *b = NULL;
    bool ok = false;
    char *got = NULL;
    if (e->column == CATALOG_BODY_JSON) {
      /* 6.10's JSON twin is compared whole: the row must hold the planned image. */
      ok = catalog_read_row(c, want->kind, want->id, want->seq, &row) == 0 && row.value[e->column]
           && want->value[e->column]
           && catalog_column_equal(e->column, row.value[e->column], want->value[e->column]);
    } else if (catalog_read_row(c, want->kind, want->id, want->seq, &row) == 0
               && row.value[e->column] && xmlbody_parse(row.value[e->column], name, &b) == 0) {
      if (e->op == PLAN_SET || e->op == PLAN_INSERT)
        ok = xmlbody_get(b, e->path, &got) == 1 && strcmp(got, e->new_value) == 0;
      else if (e->op == PLAN_DELETE)
        ok = xmlbody_count(b, e->path) == 0;
      else {
        int64_t *ids = NULL;
        size_t n = 0;
        bool has = false;
        int64_t id = strtoll(e->op == PLAN_ID_ADD ? e->new_value : e->old_value, NULL, 10);
        char *list = strdup(e->path);
        char *slash = list ? strrchr(list, '/') : NULL;
        if (slash)
          *slash = '\0'; /* "/DATASTORE/IMAGES/ID" -> the list "/DATASTORE/IMAGES" */
        if (list && xmlbody_ids(b, list, &ids, &n) >= 0)
          for (size_t k = 0; k < n; k++)
            has |= ids[k] == id;
        ok = e->op == PLAN_ID_ADD ? has : !has;
        free(ids);
        free(list);
      }
    }
    if (ok)
      good++;
    else
      check(d, checks, "catalog edit", false, "%s %s: %s does not hold %s (found %s)", name,
            catalog_column_name(e->column), e->path, e->new_value ? e->new_value : "(deleted)",
            got ? got : "nothing");
    free(got);
    xmlbody_free(b);
    catalog_row_clear(&row);
  }
  check(d, checks, "catalog XPaths read back", good == p->n_edits,
        "%zu of %zu edits hold their new value in %s", good, p->n_edits, d->w.catalog);
  catalog_close(c);
}

/* The block digest of an image (ferry verify --digest), in a thread of its own. */
struct digest_job {
  const char *path;
  char digest[VERIFY_DIGEST_LEN];
  int r;
  char *error;
};

static void *
digest_thread(void *opaque)
{
  struct digest_job *j = opaque;
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = true;
  struct volume *v = NULL;
  struct verify_side side;
  j->r = volume_open(j->path, &vo, &v);
  if (j->r == 0)
    j->r = verify_digest(v, NULL, &side);
  if (j->r == 0)
    memcpy(j->digest, side.digest, sizeof j->digest);
  else
    j->error = strdup(error_message());
  volume_close(v);
  error_clear(); /* thread-local message: freed before the thread ends */
  return NULL;
}

/* The source image from the switch on (live): hashed in a thread while the clone copies. */
static void
on_switched(void *opaque, const char *image)
{
  (void)image; /* cluster A's export; the demo hashes the file behind it */
  struct demo *d = opaque;
  if (d->hashing || !(d->switch_hash = calloc(1, sizeof *d->switch_hash)))
    return;
  d->switch_hash->path = d->w.image;
  d->hashing = pthread_create(&d->hash_thread, NULL, digest_thread, d->switch_hash) == 0;
}

static void
verify_source_unchanged(struct demo *d, const char *source, json_t *checks)
{
  if (!d->hashing) {
    check(d, checks, "source unchanged since the switch", false, "no hash taken at the switch");
    return;
  }
  pthread_join(d->hash_thread, NULL);
  d->hashing = false;
  struct digest_job now = { .path = source };
  digest_thread(&now);
  if (d->switch_hash->r < 0 || now.r < 0)
    check(d, checks, "source unchanged since the switch", false, "%s",
          d->switch_hash->error ? d->switch_hash->error
          : now.error           ? now.error
                                : "?");
  else
    check(d, checks, "source unchanged since the switch",
          strcmp(d->switch_hash->digest, now.digest) == 0,
          "at the switch %s, now %s", d->switch_hash->digest, now.digest);
  free(now.error);
}

static void
verify_image(struct demo *d, const char *source, const char *dest, json_t *checks)
{
  if (d->live) {
    /* The VM wrote on cluster B: DEST is the source plus its writes, checked below. */
    verify_source_unchanged(d, source, checks);
    goto filesystem;
  }
  /* ferry verify: both images read in parallel, holes skipped, digests printed. */
  struct volume_options vo;
  volume_options_init(&vo);
  vo.readonly = true;
  struct volume *a = NULL, *b = NULL;
  struct verify_result res = { 0 };
  int r = volume_open(source, &vo, &a);
  if (r == 0)
    r = volume_open(dest, &vo, &b);
  if (r == 0)
    r = verify_compare(a, b, NULL, &res);
  if (r < 0)
    check(d, checks, "verify", false, "%s", error_message());
  else
    check(d, checks, "verify", res.equal, "source %s, destination %s%s", res.a.digest,
          res.b.digest, res.equal ? "" : " (they differ)");
  verify_result_free(&res);
  volume_close(b);
  volume_close(a);

filesystem:;
  char *out = NULL, *err = NULL;
  size_t out_len = 0;
  char *fsck[] = { (char *)"e2fsck", (char *)"-fn", (char *)dest, NULL };
  int st = demo_run(fsck, &out, &out_len, &err);
  check(d, checks, "e2fsck -fn destination", st == 0, "%s",
        st == 0       ? "clean"
        : err && *err ? err
        : out         ? out
                      : "failed");
  free(out);
  free(err);

  char *req = NULL;
  uint8_t *want = NULL;
  size_t want_len = 0;
  if (asprintf(&req, "cat %s", d->w.probe_file) < 0
      || demo_world_probe_content(&d->w, &want, &want_len) < 0) {
    check(d, checks, "debugfs", false, "%s", error_message());
    free(req);
    return;
  }
  char *dbg[] = { (char *)"debugfs", (char *)"-R", req, (char *)dest, NULL };
  out = err = NULL;
  st = demo_run(dbg, &out, &out_len, &err);
  bool same = st == 0 && out_len == want_len && memcmp(out, want, want_len) == 0;
  char sz[32];
  check(d, checks, "file read from the destination with debugfs", same, "%s: %s %s",
        d->w.probe_file, format_size(sz, sizeof sz, (double)out_len),
        same ? "identical to the generated file" : "differs from the generated file");
  free(out);
  free(err);
  free(want);
  free(req);
}

static int
parse_args(int argc, char **argv, struct demo *d, uint64_t *size)
{
  static const struct option opts[] = {
    { "size", required_argument, NULL, 's' },
    { "keep", no_argument, NULL, 'k' },
    { "json", no_argument, NULL, 'j' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "no-vm", no_argument, NULL, 'n' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  *size = 1ull << 30;
  optind = 1;
  while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      if (parse_size("--size", optarg, size) < 0) {
        fprintf(stderr, "ferry demo: %s\n", error_message());
        return -1;
      }
      if (*size < (16u << 20) || *size > (16ull << 40) || *size % 4096) {
        fprintf(stderr, "ferry demo: --size %s: must be a multiple of 4 KiB from 16M to 16T\n",
                optarg);
        return -1;
      }
      break;
    /* clang-format off */
    case 'k': d->keep = true; break;
    case 'n':
      d->no_vm = true;
      break;
    case 'j': d->json = true; break;
    case 'v': log_set_verbose(true); break;
    case 'h': usage(stdout); exit(EXIT_OK);
    default: usage(stderr); return -1;
      /* clang-format on */
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ferry demo: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  return 0;
}

/* VM 42 runs: the catalog says so (state ACTIVE, LCM state RUNNING), as oned would. */
static int
demo_set_running(struct demo *d)
{
  sqlite3 *db = NULL;
  char *msg = NULL;
  int r = 0;
  if (sqlite3_open_v2(d->w.db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK
      || sqlite3_exec(db,
                      "UPDATE vm_pool SET state = 3, lcm_state = 3, body = replace(body, "
                      "'<STATE>9</STATE><LCM_STATE>0</LCM_STATE>', "
                      "'<STATE>3</STATE><LCM_STATE>3</LCM_STATE>') WHERE oid = 42",
                      NULL, NULL, &msg)
             != SQLITE_OK)
    r = error_set(EIO, "%s: marking VM 42 RUNNING: %s", d->w.db_path,
                  msg  ? msg
                  : db ? sqlite3_errmsg(db)
                       : "cannot open");
  sqlite3_free(msg);
  sqlite3_close(db);
  return r;
}

/* Boot VM 42 from cluster A and wait until it checked its files and writes in its loop. */
static int
boot_vm(struct demo *d)
{
  double t0 = now_seconds();
  int r = demo_vm_start(d->w.dir, d->cluster_a_sock, &d->vm);
  if (r < 0)
    return r;
  fprintf(d->out,
          "  VM 42:     qemu (pid %d, accel %s) booting the test guest from cluster A "
          "(QMP %s)\n",
          demo_vm_pid(d->vm), demo_vm_accel(d->vm), demo_vm_qmp(d->vm));
  fflush(d->out);
  if ((r = demo_vm_wait_line(d->vm, "ferry-guest: wrote", 300)) < 0
      || (r = demo_vm_wait_line(d->vm, "ferry-guest: ack 10", 120)) < 0)
    return r;
  fprintf(d->out,
          "  VM 42:     up in %.1f s: its files verified (MANIFEST), writing and "
          "fsyncing in a loop, a heartbeat every 20 ms\n",
          now_seconds() - t0);
  return 0;
}

/* The move itself: plan VM 42 -> cluster 100, then migrate_storage() as `ferry migrate` runs
 * it, with the clone reading cluster A's export. */
static int
run_move(struct demo *d, long long ts, struct plan **plan_out, struct move_report *rep,
         char **journal)
{
  struct catalog *c = NULL;
  struct catalog_options co = { .one_lock = NULL };
  char *lock = NULL;
  int r;
  /* oned's lock path inside the world: absent, as for a stopped oned. */
  if (asprintf(&lock, "%s/one.lock", d->w.dir) < 0
      || asprintf(journal, "%s/journal.json", d->w.dir) < 0)
    return error_set(ENOMEM, "out of memory");
  co.one_lock = lock;
  co.one_endpoint = "none"; /* the demo's world has no oned to ask */
  if ((r = catalog_open(d->w.catalog, &co, &c)) < 0)
    goto out;
  struct plan_request req = { .vm_id = 42,
                              .to_cluster = 100,
                              .to_datastore = -1,
                              .to_system_datastore = -1,
                              .storage_moves_running = d->live };
  if ((r = plan_build(c, &req, plan_out)) < 0)
    goto out;
  fprintf(d->out, "\nplan (the catalog edits, as `ferry migrate --dry-run` prints them):\n");
  plan_print(*plan_out, d->out);
  fprintf(d->out, "\nmove:\n");
  fflush(d->out);
  struct migrate_storage_options mo = {
    .storage = "fs",
    .datastores = d->w.datastores,
    .journal = *journal,
    .source_uri = d->cluster_a_uri,
    .timestamp = ts,
    .progress = true,
    .out = d->out,
    .die_with_parent = true,
  };
  if (d->live) {
    /* ferry migrate --qmp: the disk moves under the running VM. */
    mo.live_qmp = demo_vm_qmp(d->vm);
    mo.on_switched = on_switched;
    mo.opaque = d;
  }
  r = migrate_storage(*plan_out, &mo, rep);
out:
  /* Once a plan exists it holds the catalog: the caller closes both. */
  if (!*plan_out)
    catalog_close(c);
  free(lock);
  return r;
}

/* Build the world, move VM 42's disk, verify, report; the exit code. */
static int
run_demo(struct demo *d, uint64_t size)
{
  d->out = d->json ? fopen("/dev/null", "w") : stdout;
  if (!d->out)
    return EXIT_FAIL;
  const char *tmp = getenv("TMPDIR");
  char *dir = NULL;
  if (asprintf(&dir, "%s/ferry-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0 || !mkdtemp(dir)) {
    fprintf(stderr, "ferry demo: cannot create a temporary directory: %s\n", strerror(errno));
    free(dir);
    return EXIT_FAIL;
  }
  int rc = EXIT_FAIL;
  struct plan *p = NULL;
  char *journal = NULL;
  json_t *checks = json_array();
  struct move_report rep = { 0 };
  long long ts = (long long)time(NULL);
  char sz[32], data[32];

  fprintf(d->out, "ferry demo: a throwaway OpenNebula world in %s\n", dir);
  fflush(d->out);
  if (demo_world_build(dir, size, &d->w) < 0) {
    fprintf(stderr, "ferry demo: building the world: %s\n", error_message());
    goto out;
  }
  char why[512] = "";
  d->live = !d->no_vm && demo_vm_available(why, sizeof why);
  if (d->live && demo_set_running(d) < 0) {
    fprintf(stderr, "ferry demo: %s\n", error_message());
    goto out;
  }
  fprintf(d->out,
          "  catalog:   %s (OpenNebula 6.8: cluster-a 0, cluster-b 100; VM 42 web-01 %s)\n"
          "  disk:      %s: %s ext4 with %s of generated files (mkfs.ext4 -d)\n",
          d->w.catalog, d->live ? "RUNNING" : "UNDEPLOYED", d->w.image,
          format_size(sz, sizeof sz, (double)size),
          format_size(data, sizeof data, (double)d->w.data_bytes));
  if (start_cluster_a(d) < 0) {
    fprintf(stderr, "ferry demo: %s\n", error_message());
    goto out;
  }
  fprintf(d->out, "  cluster A: ferry-nbd (pid %d) serving it at %s\n", (int)d->cluster_a,
          d->cluster_a_uri);
  if (!d->live)
    fprintf(d->out, "  VM 42:     not booted (%s): the near-live move of a stopped VM\n",
            d->no_vm ? "--no-vm" : why);
  else if (boot_vm(d) < 0) {
    fprintf(stderr, "ferry demo: %s\n", error_message());
    goto out;
  }

  double move_from = demo_vm_clock();
  if (run_move(d, ts, &p, &rep, &journal) < 0) {
    fprintf(stderr, "ferry demo: the move failed: %s\n", error_message());
    goto out;
  }
  double move_to = demo_vm_clock();
  double hb_gap = 0, ack_gap = 0;
  unsigned beats = 0, acked = 0;
  if (d->live) {
    demo_vm_gaps(d->vm, move_from, move_to, &hb_gap, &ack_gap, &beats);
    /* Writing on cluster B now; then the guest ends its loop and powers off. */
    char line[64];
    snprintf(line, sizeof line, "ferry-guest: ack %u", demo_vm_acks(d->vm) + 10);
    if (demo_vm_wait_line(d->vm, line, 120) < 0 || demo_vm_stop(d->vm, 120) < 0) {
      fprintf(stderr, "ferry demo: %s\n", error_message());
      goto out;
    }
    fprintf(d->out, "VM 42: %u more writes on cluster B, then powered off\n", 10);
  }
  stop_cluster_a(d);

  fprintf(d->out, "\nverification:\n");
  char *source = NULL, *dest = NULL;
  if (asprintf(&source, "%s/0/42/MIGRATED-disk.0-%lld", d->w.datastores, ts) < 0
      || asprintf(&dest, "%s/100/42/disk.0", d->w.datastores) < 0) {
    free(source);
    goto out;
  }
  verify_image(d, source, dest, checks);
  if (d->live) {
    int r = demo_vm_check_writes(d->vm, dest, &acked);
    check(d, checks, "the guest's acknowledged writes on the destination", r == 0, "%s",
          r == 0 ? "every one of them" : error_message());
    if (r == 0)
      json_object_set_new(json_array_get(checks, json_array_size(checks) - 1), "writes",
                          json_integer(acked));
  }
  verify_catalog(d, p, checks);
  free(source);
  free(dest);
  if (d->live)
    fprintf(d->out,
            "\n%s: VM 42 moved live, never stopped: guest paused %.3f s (ferry: stop -> cont), "
            "largest heartbeat gap %.3f s (what the guest saw, %u heartbeats during the move), "
            "%u writes acknowledged, for a %s disk; converged in %.2f s\n",
            d->ok ? "demo OK" : "demo FAILED", rep.downtime, hb_gap, beats, acked, sz,
            rep.hydrate_seconds);
  else
    fprintf(d->out,
            "\n%s: downtime %.3f s for a %s disk (VM stopped -> first read served on "
            "cluster B); converged in %.2f s\n",
            d->ok ? "demo OK" : "demo FAILED", rep.downtime, sz, rep.hydrate_seconds);
  if (d->keep)
    fprintf(d->out, "world kept in %s (journal %s)\n", dir, journal);
  rc = d->ok ? EXIT_OK : EXIT_FAIL;

  if (d->json) {
    json_t *o = json_pack(
        "{s:b, s:s, s:I, s:f, s:f, s:I, s:I, s:I, s:s?, s:O, s:o}", "ok", d->ok, "world", dir,
        "size", (json_int_t)size, "downtime", rep.downtime, "hydrate_seconds", rep.hydrate_seconds,
        "bytes_copied", (json_int_t)rep.bytes_copied, "bytes_fetched",
        (json_int_t)rep.bytes_fetched, "bytes_skipped", (json_int_t)rep.bytes_skipped, "journal",
        d->keep ? journal : NULL, "checks", checks, "edits", (json_t *)plan_edits_json(p));
    if (o && d->live)
      json_object_update_new(o, json_pack("{s:b, s:f, s:f, s:f, s:i, s:i}", "live", 1,
                                          "paused_seconds", rep.downtime, "heartbeat_gap", hb_gap,
                                          "ack_gap", ack_gap, "heartbeats", (int)beats,
                                          "writes_acknowledged", (int)acked));
    else if (o)
      json_object_set_new(o, "live", json_false());
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    if (text)
      printf("%s\n", text);
    free(text);
    json_decref(o);
  }
out:
  if (d->hashing)
    pthread_join(d->hash_thread, NULL);
  if (d->switch_hash)
    free(d->switch_hash->error);
  free(d->switch_hash);
  demo_vm_free(d->vm);
  stop_cluster_a(d);
  if (rc != EXIT_OK && !d->keep)
    fprintf(stderr, "ferry demo: world removed (run with --keep to inspect it)\n");
  if (!d->keep)
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (p) {
    struct catalog *c = p->catalog;
    plan_free(p);
    catalog_close(c);
  }
  json_decref(checks);
  free(journal);
  free(d->cluster_a_sock);
  free(d->cluster_a_uri);
  demo_world_free(&d->w);
  free(dir);
  if (d->json)
    fclose(d->out);
  return rc;
}

int
cmd_demo(int argc, char **argv)
{
  struct demo d = { .ok = true };
  uint64_t size;
  if (parse_args(argc, argv, &d, &size) < 0)
    return EXIT_USAGE;
  return run_demo(&d, size);
}
