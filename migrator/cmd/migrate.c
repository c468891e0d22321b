/* ferry migrate: move a VM's disks to another datastore/cluster and switch OpenNebula's catalog.
 *
 *   plan (read-only) -> [storage step] -> journal (fsynced) -> switch (one transaction)
 *
 * --storage none is the metadata-only move (the storage already holds the volumes, e.g. after
 * a 3PAR Remote Copy); fs and exec:CMD run the near-live move of migrate-storage.h.
 */
#include "migrator/opennebula/catalog.h"
#include "migrator/commands.h"
#include "migrator/opennebula/journal.h"
#include "migrator/migrate-storage.h"
#include "migrator/opennebula/plan.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage(FILE *f)
{
  fprintf(
      f,
      "Usage: ferry migrate [OPTIONS] --catalog URI --storage fs|exec:CMD|none --vm ID\n"
      "                     [--disk N ...] (--to-cluster CID | --to-datastore DS\n"
      "                     --to-system-datastore SDS)\n"
      "       ferry migrate --rollback JOURNAL [--catalog URI]\n"
      "\n"
      "Move VM ID's disks (all image-backed disks, or each --disk N) to another cluster or\n"
      "datastore and switch OpenNebula's catalog in one transaction, journaled.\n"
      "\n"
      "Catalog URIs (oned must be stopped for sqlite: and mysql:):\n"
      "  sqlite:PATH                     oned's SQLite database\n"
      "  mysql://user[:pass]@host[:port]/db, mysql://user@localhost/db?socket=PATH\n"
      "  xmlrpc://host:port/RPC2         a running oned (one.system.sqlquery/sql)\n"
      "\n"
      "Options:\n"
      "  --dry-run              print the plan (every edit, old and new value); change nothing\n"
      "  --force                allow a RUNNING VM (metadata switch under a live VM)\n"
      "  --automatic-requirements  also point AUTOMATIC_(DS_|NIC_)REQUIREMENTS at the new\n"
      "                         cluster now; without it, oned recomputes them when an\n"
      "                         UNDEPLOYED or STOPPED VM is resumed\n"
      "  --journal PATH         journal file (default: $FERRY_STATE_DIR/journal/vm-ID-TIME.json,\n"
      "                         FERRY_STATE_DIR defaults to /var/lib/ferry)\n"
      "  --one-lock PATH        oned's lock file (default /var/lock/one/one); its existence\n"
      "                         means oned runs and sqlite:/mysql: catalogs are refused\n"
      "  --one-endpoint URL|none  oned's XML-RPC endpoint probed like onedb does (default:\n"
      "                         $ONE_XMLRPC, ~/.one/one_endpoint, http://localhost:2633/RPC2);\n"
      "                         an answer means oned runs\n"
      "  --oned-conf PATH       oned.conf to read INHERIT_DATASTORE_ATTR from (default\n"
      "                         /etc/one/oned.conf when readable; xmlrpc: asks oned)\n"
      "  --auth USER:PASSWORD   xmlrpc session (default: the file $ONE_AUTH or ~/.one/one_auth)\n"
      "  --skip-resume          leave the VM stopped after the storage step\n"
      "  --datastores DIR       fs: directory of datastore directories (default\n"
      "                         /var/lib/one/datastores)\n"
      "  --ssh HOST             start the destination clone server on HOST through ssh\n"
      "  --tls-listen HOST:PORT serve each disk's clone over NBD with TLS on HOST:PORT+N\n"
      "                         (disk N) instead of a unix socket forwarded by ssh\n"
      "  --tls-certificates DIR its X.509 directory: server-cert.pem, server-key.pem,\n"
      "                         ca-cert.pem on the server's host; ca-cert.pem,\n"
      "                         client-cert.pem, client-key.pem on this one (same path)\n"
      "  --frontend nbd|fuse    serve the destination clone with ferry-nbd (default) or\n"
      "                         ferry-fuse --loop\n"
      "  --qmp SOCKET           the RUNNING VM's qemu monitor (QMP): its disks move live,\n"
      "                         the VM is never stopped (devices virtio-disk<DISK_ID>;\n"
      "                         see ferry live-move)\n"
      "  --json                 print the result as one JSON object\n"
      "  -v, --verbose          debug output\n"
      "  --rollback JOURNAL     undo a switch (only rows still holding the after-images)\n"
      "  -h, --help             this help\n"
      "\n"
      "VM states: UNDEPLOYED and STOPPED move; POWEROFF only through xmlrpc://, which\n"
      "undeploys it first (oned resumes a powered-off VM on its old host); RUNNING with\n"
      "--force, with --qmp (live), or with a storage step through xmlrpc://; every other state (transient,\n"
      "SUSPENDED, PENDING, HOLD, DONE...) is refused.\n");
}

enum {
  OPT_DRY_RUN = 256,
  OPT_FORCE,
  OPT_AUTOMATIC_REQUIREMENTS,
  OPT_SKIP_RESUME,
  OPT_JSON,
  OPT_JOURNAL,
  OPT_ONE_LOCK,
  OPT_CATALOG,
  OPT_STORAGE,
  OPT_VM,
  OPT_DISK,
  OPT_TO_CLUSTER,
  OPT_TO_DS,
  OPT_TO_SYS_DS,
  OPT_ROLLBACK,
  OPT_AUTH,
  OPT_DATASTORES,
  OPT_SSH,
  OPT_TLS_LISTEN,
  OPT_TLS_CERTIFICATES,
  OPT_FRONTEND,
  OPT_ONE_ENDPOINT,
  OPT_ONED_CONF,
  OPT_QMP,
};

static const struct option long_options[] = {
  { "dry-run", no_argument, NULL, OPT_DRY_RUN },
  { "verbose", no_argument, NULL, 'v' },
  { "force", no_argument, NULL, OPT_FORCE },
  { "automatic-requirements", no_argument, NULL, OPT_AUTOMATIC_REQUIREMENTS },
  { "skip-resume", no_argument, NULL, OPT_SKIP_RESUME },
  { "json", no_argument, NULL, OPT_JSON },
  { "journal", required_argument, NULL, OPT_JOURNAL },
  { "one-lock", required_argument, NULL, OPT_ONE_LOCK },
  { "one-endpoint", required_argument, NULL, OPT_ONE_ENDPOINT },
  { "oned-conf", required_argument, NULL, OPT_ONED_CONF },
  { "catalog", required_argument, NULL, OPT_CATALOG },
  { "storage", required_argument, NULL, OPT_STORAGE },
  { "vm", required_argument, NULL, OPT_VM },
  { "disk", required_argument, NULL, OPT_DISK },
  { "to-cluster", required_argument, NULL, OPT_TO_CLUSTER },
  { "to-datastore", required_argument, NULL, OPT_TO_DS },
  { "to-system-datastore", required_argument, NULL, OPT_TO_SYS_DS },
  { "rollback", required_argument, NULL, OPT_ROLLBACK },
  { "auth", required_argument, NULL, OPT_AUTH },
  { "datastores", required_argument, NULL, OPT_DATASTORES },
  { "ssh", required_argument, NULL, OPT_SSH },
  { "frontend", required_argument, NULL, OPT_FRONTEND },
  { "qmp", required_argument, NULL, OPT_QMP },
  { "tls-listen", required_argument, NULL, OPT_TLS_LISTEN },
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

/* The settings of one run, parsed from the command line before anything is done. */
struct args {
  bool dry_run, force, skip_resume, json;
  bool storage_step; /* --storage is not none */
  const char *journal, *catalog, *storage, *rollback;
  struct migrate_storage_options sopts; /* --storage fs|exec: (migrate-storage.h) */
  struct catalog_options copts;
  struct plan_request req;
  int64_t disks[64];
};

static int
parse_id(const char *what, const char *text, int64_t *out)
{
  uint64_t v;
  if (parse_uint(what, text, 0, INT32_MAX, &v) < 0) {
    fprintf(stderr, "ferry migrate: %s\n", error_message());
    return -1;
  }
  *out = (int64_t)v;
  return 0;
}

static int
parse_args(int argc, char **argv, struct args *a)
{
  int c;
  memset(a, 0, sizeof *a);
  a->req.vm_id = a->req.to_cluster = a->req.to_datastore = a->req.to_system_datastore = -1;
  a->req.disk_ids = a->disks;
  optind = 1;
  while ((c = getopt_long(argc, argv, "vh", long_options, NULL)) != -1) {
    /* One line per plain flag. */
    /* clang-format off */
    switch (c) {
    case OPT_DRY_RUN: a->dry_run = true; break;
    case 'v': log_set_verbose(true); break;
    case OPT_FORCE: a->force = true; break;
    case OPT_AUTOMATIC_REQUIREMENTS: a->req.automatic_requirements = true; break;
    case OPT_SKIP_RESUME: a->skip_resume = true; break;
    case OPT_JSON: a->json = true; break;
    case OPT_JOURNAL: a->journal = optarg; break;
    case OPT_ONE_LOCK: a->copts.one_lock = optarg; break;
    case OPT_ONE_ENDPOINT: a->copts.one_endpoint = optarg; break;
    case OPT_ONED_CONF: a->req.oned_conf = optarg; break;
    case OPT_CATALOG: a->catalog = optarg; break;
    case OPT_STORAGE: a->storage = optarg; break;
    case OPT_ROLLBACK: a->rollback = optarg; break;
    case OPT_AUTH: a->copts.auth = optarg; break;
    case OPT_DATASTORES: a->sopts.datastores = optarg; break;
    case OPT_SSH: a->sopts.ssh_host = optarg; break;
    case OPT_QMP: a->sopts.live_qmp = optarg; break;
    case OPT_TLS_LISTEN: a->sopts.tls_listen = optarg; break;
    case OPT_TLS_CERTIFICATES: a->sopts.tls_certificates = optarg; break;
    case OPT_FRONTEND:
      if (strcmp(optarg, "nbd") != 0 && strcmp(optarg, "fuse") != 0) {
        fprintf(stderr, "ferry migrate: --frontend %s: expected nbd or fuse\n", optarg);
        return -1;
      }
      a->sopts.frontend = optarg;
      break;
    case OPT_VM:
      if (parse_id("--vm", optarg, &a->req.vm_id) < 0)
        return -1;
      break;
    case OPT_DISK:
      if (a->req.n_disk_ids == sizeof a->disks / sizeof a->disks[0]) {
        fprintf(stderr, "ferry migrate: too many --disk options\n");
        return -1;
      }
      if (parse_id("--disk", optarg, &a->disks[a->req.n_disk_ids]) < 0)
        return -1;
      a->req.n_disk_ids++;
      break;
    case OPT_TO_CLUSTER:
      if (parse_id("--to-cluster", optarg, &a->req.to_cluster) < 0)
        return -1;
      break;
    case OPT_TO_DS:
      if (parse_id("--to-datastore", optarg, &a->req.to_datastore) < 0)
        return -1;
      break;
    case OPT_TO_SYS_DS:
      if (parse_id("--to-system-datastore", optarg, &a->req.to_system_datastore) < 0)
        return -1;
      break;
    case 'h': usage(stdout); exit(EXIT_OK);
    default: usage(stderr); return -1;
    }
    /* clang-format on */
  }
  if (optind < argc) {
    fprintf(stderr, "ferry migrate: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  a->req.force = a->force;
  if (a->rollback)
    return 0;
  const char *missing = !a->catalog        ? "--catalog URI"
                        : !a->storage      ? "--storage fs|exec:CMD|none"
                        : a->req.vm_id < 0 ? "--vm ID"
                                           : NULL;
  if (missing) {
    fprintf(stderr, "ferry migrate: missing %s (see --help)\n", missing);
    return -1;
  }
  if (strcmp(a->storage, "none") != 0 && strcmp(a->storage, "fs") != 0
      && !(strncmp(a->storage, "exec:", 5) == 0 && a->storage[5])) {
    fprintf(stderr, "ferry migrate: --storage %s: expected fs, exec:CMD or none\n", a->storage);
    return -1;
  }
  if (a->req.to_cluster < 0 && (a->req.to_datastore < 0 || a->req.to_system_datastore < 0)) {
    fprintf(stderr, "ferry migrate: name the destination: --to-cluster CID, or --to-datastore DS "
                    "and --to-system-datastore SDS\n");
    return -1;
  }
  if (!a->sopts.tls_listen != !a->sopts.tls_certificates) {
    fprintf(stderr, "ferry migrate: --tls-listen and --tls-certificates go together\n");
    return -1;
  }
  if (a->sopts.tls_listen && a->sopts.live_qmp) {
    fprintf(stderr, "ferry migrate: --tls-listen: not with --qmp (the live move hands qemu "
                    "a local unix socket)\n");
    return -1;
  }
  if (a->sopts.tls_listen && a->sopts.frontend && strcmp(a->sopts.frontend, "fuse") == 0) {
    fprintf(stderr, "ferry migrate: --tls-listen serves NBD: not with --frontend fuse\n");
    return -1;
  }
  /* What the flags mean for the catalog, the plan and the storage step. */
  a->storage_step = strcmp(a->storage, "none") != 0;
  /* Through oned (xmlrpc:) the move undeploys a RUNNING VM and resumes it itself, and
   * undeploys a POWEROFF VM (which oned would resume on its old host). */
  bool xmlrpc = strncmp(a->catalog, "xmlrpc:", 7) == 0;
  a->req.storage_moves_running = a->storage_step && xmlrpc;
  /* With --qmp a RUNNING VM's disks move live: it is not stopped at all. */
  if (a->storage_step && a->sopts.live_qmp)
    a->req.storage_moves_running = true;
  a->req.undeploys_poweroff = xmlrpc;
  a->sopts.storage = a->storage;
  a->sopts.journal = a->journal;
  a->sopts.dry_run = a->dry_run;
  a->sopts.skip_resume = a->skip_resume;
  a->sopts.progress = !a->json;
  a->sopts.out = a->json ? stderr : stdout;
  a->copts.read_only = a->dry_run;
  return 0;
}

static int
fail(const char *what)
{
  fprintf(stderr, "ferry migrate: %s%s%s\n", what ? what : "", what ? ": " : "", error_message());
  return EXIT_FAIL;
}

static int
do_rollback(struct args *a)
{
  struct catalog *c = NULL;
  char *uri = NULL;
  int rc = EXIT_FAIL;
  if (!a->catalog && journal_catalog_uri(a->rollback, &uri) < 0)
    return fail(NULL);
  if (catalog_open(a->catalog ? a->catalog : uri, &a->copts, &c) < 0)
    fail(NULL);
  else if (journal_rollback(c, a->rollback, stdout) < 0)
    fail("rollback");
  else if (migrate_storage_rollback(a->rollback, stdout) < 0)
    fail("storage rollback");
  else
    rc = EXIT_OK;
  catalog_close(c);
  free(uri);
  return rc;
}

static void
print_json(const struct plan *p, const char *result, const char *journal)
{
  json_t *notes = json_array();
  for (size_t i = 0; i < p->n_notes; i++)
    json_array_append_new(notes, json_string(p->notes[i]));
  json_t *o
      = json_pack("{s:I, s:s, s:I, s:I, s:I, s:s?, s:o, s:o}", "vm", (json_int_t)p->vm_id, "result",
                  result, "cluster", (json_int_t)p->cluster, "datastore", (json_int_t)p->datastore,
                  "system_datastore", (json_int_t)p->system_datastore, "journal", journal, "notes",
                  notes, "edits", (json_t *)plan_edits_json(p));
  char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
  if (s)
    printf("%s\n", s);
  free(s);
  json_decref(o);
}

/* Plan, print, and (unless --dry-run) journal and switch, with the storage step when asked. */
static int
run_migrate(struct args *a)
{
  struct catalog *c = NULL;
  struct plan *p = NULL;
  char *journal = NULL;
  int rc = EXIT_FAIL;
  bool storage_step = a->storage_step;
  struct move_report report;
  if (catalog_open(a->catalog, &a->copts, &c) < 0)
    return fail(NULL);
  if (plan_build(c, &a->req, &p) < 0) {
    fail(NULL);
    goto out;
  }
  if (!a->json)
    plan_print(p, stdout);
  if (plan_is_noop(p)) {
    if (a->json)
      print_json(p, "no-op", NULL);
    else
      printf("nothing to do: VM %" PRId64 " is already on cluster %" PRId64
             " (the catalog holds every edit of this move)\n",
             p->vm_id, p->cluster);
    rc = EXIT_OK;
    goto out;
  }
  if (!a->json && !storage_step)
    printf("storage: none (metadata only: the volumes are already on the destination)\n");
  bool poweroff = p->state == 8 /* POWEROFF */;
  if (!a->json && poweroff)
    printf("VM %" PRId64 " is POWEROFF: %s through oned first (a powered-off VM resumes on its "
           "old host); it stays UNDEPLOYED, `onevm resume %" PRId64
           "` schedules it on the new cluster\n",
           p->vm_id, a->dry_run ? "it would be undeployed" : "undeploying it", p->vm_id);
  if (a->dry_run && storage_step && migrate_storage(p, &a->sopts, &report) < 0) {
    fail("storage");
    goto out;
  }
  if (a->dry_run) {
    if (a->json)
      print_json(p, "dry-run", NULL);
    else
      printf("dry run: %zu edit(s) planned, nothing changed\n", p->n_edits);
    rc = EXIT_OK;
    goto out;
  }
  if (!(journal = a->journal ? strdup(a->journal) : journal_default_path(p->vm_id))) {
    fail("journal");
    goto out;
  }
  if (!a->json)
    printf("journal: %s\n", journal);
  a->sopts.journal = journal;
  if (!storage_step && poweroff && migrate_undeploy(p) < 0) {
    fail("undeploy");
    goto out;
  }
  /* With a storage step the switch happens inside the move (after the clone started). */
  if ((storage_step ? migrate_storage(p, &a->sopts, &report) : plan_apply(p, journal)) < 0) {
    fail(storage_step ? "move" : "switch");
    fprintf(stderr, "ferry migrate: journal: %s\n", journal);
    goto out;
  }
  if (a->json)
    print_json(p, "applied", journal);
  else
    printf("switched: %zu edit(s) committed; undo with: ferry migrate --rollback %s\n", p->n_edits,
           journal);
  rc = EXIT_OK;
out:
  free(journal);
  plan_free(p);
  catalog_close(c);
  return rc;
}

int
cmd_migrate(int argc, char **argv)
{
  struct args a;
  if (parse_args(argc, argv, &a) < 0)
    return EXIT_USAGE;
  return a.rollback ? do_rollback(&a) : run_migrate(&a);
}
