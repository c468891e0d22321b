/* ferry: the shared flags of ferry-nbd, ferry-fuse, `ferry hydrate` and `ferry copy` (see
 * options.h): one table, one parse loop, one check, one --help layout, one man-page source. */
#include "frontend/options.h"

#include "common/error.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum kind {
  KIND_STRING,  /* const char * field = the value */
  KIND_TRUE,    /* bool field = true */
  KIND_UINT,    /* unsigned field, decimal in [min, max] */
  KIND_RATE,    /* uint64_t field, parse_rate() */
  KIND_CUSTOM,  /* parse(flag, text, field) */
  KIND_VERBOSE, /* -v */
  KIND_HELP,    /* -h */
  KIND_VERSION, /* -V */
};

struct flag {
  const char *name; /* long name, without "--" */
  char letter;      /* short option, or 0 */
  const char *arg;  /* the value's name in --help and man pages; NULL: the flag takes none */
  unsigned groups;
  bool clone_only; /* refused without --source (in programs where a clone is optional) */
  enum kind kind;
  size_t field; /* offsetof(struct frontend_options, ...) */
  uint64_t min, max;
  int (*parse)(const char *flag, const char *text, void *field);
  const char *help; /* --help: one line ("\n" continues it under the description column) */
  const char *doc;  /* man page: POD text of the flag's =item */
};

static int
parse_region_size(const char *flag, const char *text, void *field)
{
  (void)flag;
  return clone_parse_region_size(text, field);
}

static int
parse_request_size(const char *flag, const char *text, void *field)
{
  uint64_t v;
  if (parse_size(flag, text, &v) < 0)
    return -1;
  if (v < 4096 || v > (256u << 20) || v % 4096)
    return error_set(EINVAL, "%s: '%s' must be a multiple of 4K between 4K and 256M", flag, text);
  *(uint64_t *)field = v;
  return 0;
}

static int
parse_clone_size(const char *flag, const char *text, void *field)
{
  return parse_size(flag, text, field);
}

static int
parse_source_timeout(const char *flag, const char *text, void *field)
{
  char *end;
  double v = strtod(text, &end);
  if (end == text || *end || !(v >= 0.1 && v <= 86400))
    return error_set(EINVAL, "%s: '%s' must be seconds from 0.1 to 86400", flag, text);
  *(double *)field = v;
  return 0;
}

static int
parse_seconds(const char *flag, const char *text, void *field)
{
  char *end;
  double v = strtod(text, &end);
  if (end == text || *end || !(v >= 0.01 && v <= 3600))
    return error_set(EINVAL, "%s: '%s' must be seconds from 0.01 to 3600", flag, text);
  *(double *)field = v;
  return 0;
}

#define FIELD(f) offsetof(struct frontend_options, f)

/* THE TABLE.  A new shared flag is added in this module and nowhere else.  Say the clone's
 * --source-timeout SECONDS (this milestone's; likewise --new-map and the TLS client flags):
 *   1. one row here: name, letter, value name, group, clone_only, how to parse, --help line,
 *      man paragraph;
 *   2. its field in struct frontend_options (options.h), under its group;
 *   3. if the library takes it, one line in frontend_clone_options() below
 *      (co->source.timeout = o->source_timeout).
 * ferry-nbd, ferry-fuse and `ferry hydrate` then accept it, check it, list it in --help and
 * in their man pages (docs/meson.build splices the paragraphs in): none of them changes.
 * Order here is the order of --help and of the man pages.  A letter must not be one a
 * program using the group already takes for itself (frontend_parse aborts if it is). */
static const struct flag table[] = {
  /* FRONTEND_CLONE */
  { "source", 's', "SRC", FRONTEND_CLONE, false, KIND_STRING, FIELD(source), 0, 0, NULL,
    "the source of a clone (read only)",
    "Serve, or hydrate, a clone of the volume I<SRC> (any volume URI; opened read-only) "
    "into the destination volume.  Reads of regions not yet on the destination are fetched "
    "from I<SRC> and kept there, writes land on the destination, and a background hydrator "
    "copies the rest.  Needs B<--map>." },
  { "map", 'm', "MAP", FRONTEND_CLONE, false, KIND_STRING, FIELD(map), 0, 0, NULL,
    "the clone's region map file (created when missing)",
    "The clone's region map: which regions are on the destination.  Created when missing; "
    "refused, touching nothing, when it belongs to another source, size or region size, is "
    "corrupt or is in use by another process.  It is committed atomically, and only after the "
    "destination data it describes is durable.  Needs B<--source>." },
  { "region-size", 0, "SIZE", FRONTEND_CLONE | FRONTEND_HYDRATE, true, KIND_CUSTOM,
    FIELD(region_size), 0, 0, parse_region_size, "region size of a new map, 4K..64M (default 64K)",
    "Region size of a new map: a power of two from 4K to 64M (default 64K).  An existing map "
    "keeps its own and refuses another." },
  { "workers", 'w', "N", FRONTEND_CLONE, true, KIND_UINT, FIELD(workers), 1, 256, NULL,
    "hydrator requests in flight (default 16)",
    "Requests the hydrator keeps in flight, 1 to 256 (default 16)." },
  /* FRONTEND_COPY only (a clone's hydrator calls them --workers) */
  { "requests", 'R', "N", FRONTEND_COPY, false, KIND_UINT, FIELD(requests), 1, 1024, NULL,
    "requests in flight (default 16)", "Copy requests in flight, 1 to 1024 (default 16)." },
  /* FRONTEND_CLONE and FRONTEND_COPY */
  { "request-size", 'S', "SIZE", FRONTEND_CLONE | FRONTEND_COPY, true, KIND_CUSTOM,
    FIELD(request_size), 0, 0, parse_request_size, "bytes per request, 4K..256M (default 1M)",
    "Bytes per copy request, a multiple of 4K up to 256M (default 1M: the buffer stays in the "
    "CPU cache between read and write; larger requests help on high-latency links)." },
  { "rate", 0, "BYTES/s", FRONTEND_CLONE | FRONTEND_COPY | FRONTEND_HYDRATE, true, KIND_RATE,
    FIELD(rate), 0, 0, NULL, "limit source reads, e.g. 100M (default unlimited)",
    "Limit the rate at which the source is read by the copy, in bytes per second (C<100M> or "
    "C<100M/s>; more than 0).  For a clone it limits the hydrator: reads a client waits for are "
    "never held back.  Changeable at run time through the control socket (C<ferry set-rate>)." },
  { "commit-interval", 0, "S", FRONTEND_CLONE, true, KIND_CUSTOM, FIELD(commit_interval), 0, 0,
    parse_seconds,
    "seconds between map commits (default 1): longer\nflushes less, shorter redoes less",
    "Seconds between commits of the map by the hydrator, 0.01 to 3600 (default 1).  Each "
    "commit flushes the destination first: a longer interval flushes less, a shorter one "
    "redoes less work after a crash." },
  { "paused", 0, NULL, FRONTEND_CLONE, true, KIND_TRUE, FIELD(paused), 0, 0, NULL,
    "start paused (ferry resume through --control)",
    "Start with the hydrator paused (C<ferry resume> through B<--control> starts it); reads "
    "are still fetched on demand." },
  { "size", 0, "SIZE", FRONTEND_CLONE, true, KIND_CUSTOM, FIELD(size), 0, 0, parse_clone_size,
    "the clone's size when larger than SRC (zeroes past\nSRC's end: room for a qcow2 file to grow)",
    "The clone's size when it is to be larger than I<SRC> (default: I<SRC>'s size).  Past "
    "I<SRC>'s end the clone reads zeroes; the map keeps I<SRC>'s own size.  A qcow2 image file "
    "served as a guest's disk grows as qemu allocates clusters: C<ferry live-move> gives its "
    "clone room to grow with this." },
  { "hold", 0, NULL, FRONTEND_CLONE, true, KIND_TRUE, FIELD(hold), 0, 0, NULL,
    "keep nothing of the source until ferry release\n(it may still change: live migration)",
    "Hold the copy back until C<ferry release> through B<--control>: the source may still "
    "change (a live migration, while the source VM runs).  Until then reads of regions not on "
    "the destination are served from the source and not kept, and the hydrator does not run; "
    "writes are taken as usual (they can only come once the source has stopped).  "
    "C<ferry resume> is refused while held." },
  { "source-identity", 0, "ID", FRONTEND_CLONE, true, KIND_STRING, FIELD(source_identity), 0, 0,
    NULL, "name recorded in MAP for the source (default: SRC)",
    "The name recorded in the map for the source and checked on every open (default: I<SRC> "
    "as given).  Give a stable one, such as an image ID, when the source URI can change "
    "between runs." },
  { "source-timeout", 0, "SECONDS", FRONTEND_CLONE, true, KIND_CUSTOM, FIELD(source_timeout), 0, 0,
    parse_source_timeout, "how long a read waits for a lost source before\nEIO (default 60)",
    "How long a read (or a partial write) of a region still on the source waits for a lost "
    "source before it fails with EIO, 0.1 to 86400 seconds (default 60).  The source is "
    "retried with a growing pause meanwhile (the nbd and http drivers reconnect by "
    "themselves, and requests in flight are sent again on the new connection), so a blip of "
    "the link stalls reads instead of failing them.  The hydrator waits for a lost source as "
    "long as it takes (C<ferry status> then says C<reconnecting>, with the reason), and "
    "carries on by itself when it is back." },
  { "new-map", 0, NULL, FRONTEND_CLONE, true, KIND_TRUE, FIELD(new_map), 0, 0, NULL,
    "allow a new map over a destination holding data",
    "Allow creating a new map (the file missing or empty) over a destination that already "
    "holds data.  Without it that is refused: a map that was lost while the destination "
    "kept the clone's writes would otherwise be recreated, and the hydrator would overwrite "
    "those writes with source data.  Give it when the destination's content may be "
    "discarded (a fresh preallocated volume, a block device).  The map records the "
    "destination (its size and, for a file, its inode) and refuses another one." },
  /* FRONTEND_SERVE */
  { "control", 0, "PATH", FRONTEND_SERVE, false, KIND_STRING, FIELD(control), 0, 0, NULL,
    "control socket for ferry status, wait, pause, ...",
    "Serve the control socket at I<PATH>: C<ferry status|wait|pause|resume|set-rate PATH> talk "
    "to it (one JSON object per line).  Without a clone it reports state C<direct>." },
  { "pidfile", 0, "PATH", FRONTEND_SERVE, false, KIND_STRING, FIELD(pidfile), 0, 0, NULL,
    "write the PID to PATH once ready; removed at exit",
    "Write the process ID to I<PATH> once ready (ferry-nbd: it accepts connections; ferry-fuse: "
    "the mount, and its loop device, are ready; ferry hydrate: the clone is open), atomically "
    "(written whole, then renamed); removed at exit." },
  /* FRONTEND_DAEMON */
  { "foreground", 'f', NULL, FRONTEND_DAEMON, false, KIND_TRUE, FIELD(foreground), 0, 0, NULL,
    "do not daemonize (default: daemonize once ready)",
    "Stay in the foreground.  By default the program returns once it is ready (the moment its "
    "pidfile is written), so a script can use it at once; it then logs to syslog, and its exit "
    "status tells whether startup worked." },
  /* FRONTEND_VOLUME */
  { "connections", 'C', "N", FRONTEND_VOLUME, false, KIND_UINT, FIELD(connections), 1, 64, NULL,
    "nbd/http connections (default: the driver's)",
    "Parallel connections to an nbd or http volume, 1 to 64 (default: the driver's)." },
  /* FRONTEND_DIRECT */
  { "direct", 0, NULL, FRONTEND_DIRECT, false, KIND_TRUE, FIELD(direct), 0, 0, NULL,
    "open files with O_DIRECT",
    "Open file volumes with C<O_DIRECT> (the page cache is bypassed; requests are aligned to "
    "4096 bytes)." },
  /* FRONTEND_REPORT */
  { "progress", 'p', NULL, FRONTEND_REPORT, false, KIND_TRUE, FIELD(progress), 0, 0, NULL,
    "progress bar on stderr (when it is a terminal)",
    "Draw a progress bar (completed bytes) on standard error when it is a terminal." },
  { "json", 0, NULL, FRONTEND_REPORT, false, KIND_TRUE, FIELD(json), 0, 0, NULL,
    "print a summary object on stdout at the end",
    "Print a summary as one JSON object on standard output at the end." },
  /* FRONTEND_COMMON */
  { "verbose", 'v', NULL, FRONTEND_COMMON, false, KIND_VERBOSE, 0, 0, 0, NULL,
    "debug messages on stderr (or FERRY_DEBUG=module,...)",
    "Debug messages of every module on standard error (syslog once daemonized); "
    "C<FERRY_DEBUG=nbd,clone,...> selects modules." },
  { "help", 'h', NULL, FRONTEND_COMMON, false, KIND_HELP, 0, 0, 0, NULL, "this text",
    "Print the options and exit." },
  { "version", 'V', NULL, FRONTEND_COMMON, false, KIND_VERSION, 0, 0, 0, NULL, "print the version",
    "Print the version and exit." },
};

enum { NFLAGS = sizeof table / sizeof table[0] };

static const struct {
  const char *name;
  unsigned group;
} group_names[] = {
  { "clone", FRONTEND_CLONE },   { "serve", FRONTEND_SERVE },   { "daemon", FRONTEND_DAEMON },
  { "volume", FRONTEND_VOLUME }, { "direct", FRONTEND_DIRECT }, { "copy", FRONTEND_COPY },
  { "report", FRONTEND_REPORT }, { "common", FRONTEND_COMMON }, { "hydrate", FRONTEND_HYDRATE },
};

unsigned
frontend_group_by_name(const char *name)
{
  for (size_t i = 0; i < sizeof group_names / sizeof group_names[0]; i++)
    if (strcmp(group_names[i].name, name) == 0)
      return group_names[i].group;
  return 0;
}

void
frontend_options_init(struct frontend_options *o)
{
  memset(o, 0, sizeof *o);
}

static int
code_of(size_t i)
{
  return table[i].letter ? table[i].letter : FRONTEND_CODE_BASE + (int)i;
}

/* The row getopt_long answered with `code` among the program's groups, or -1. */
static int
row_of(unsigned groups, int code)
{
  for (size_t i = 0; i < NFLAGS; i++)
    if ((table[i].groups & groups) && code_of(i) == code)
      return (int)i;
  return -1;
}

/* A shared letter the program also claims is a bug in the program: stop at once. */
static void
check_letters(const struct frontend_program *p, unsigned groups)
{
  for (size_t i = 0; i < NFLAGS; i++)
    if ((table[i].groups & groups) && table[i].letter && p->shortopts
        && strchr(p->shortopts, table[i].letter)) {
      fprintf(stderr, "%s: internal error: -%c is both its own flag and --%s\n", p->name,
              table[i].letter, table[i].name);
      abort();
    }
}

/* Store row i's value: 0, or -1 with a message for a bad value.  --help and --version print
 * and set *exit_code to 0 (the program then exits). */
static int
take_row(const struct frontend_program *p, size_t i, const char *arg, struct frontend_options *o,
         int *exit_code)
{
  const struct flag *f = &table[i];
  char flag[64];
  snprintf(flag, sizeof flag, "--%s", f->name);
  void *field = (char *)o + f->field;
  uint64_t v;
  if (f->clone_only && (p->groups & FRONTEND_CLONE) && !o->clone_flag)
    o->clone_flag = f->name;
  switch (f->kind) {
  case KIND_STRING:
    *(const char **)field = arg;
    return 0;
  case KIND_TRUE:
    *(bool *)field = true;
    return 0;
  case KIND_UINT:
    if (parse_uint(flag, arg, f->min, f->max, &v) < 0)
      return -1;
    *(unsigned *)field = (unsigned)v;
    return 0;
  case KIND_RATE:
    return parse_rate(flag, arg, field) < 0 ? -1 : 0;
  case KIND_CUSTOM:
    return f->parse(flag, arg, field) < 0 ? -1 : 0;
  case KIND_VERBOSE:
    log_set_verbose(true);
    return 0;
  case KIND_HELP:
    p->usage(stdout);
    *exit_code = 0;
    return 0;
  case KIND_VERSION:
    printf("%s %s\n", p->name, FERRY_VERSION);
    *exit_code = 0;
    return 0;
  }
  return 0;
}

/* How the shared flags combine: -1 with a message, else 0. */
static int
check(const struct frontend_program *p, const struct frontend_options *o)
{
  if (!(p->groups & FRONTEND_CLONE))
    return 0;
  if (p->clone_required) {
    if (!o->source)
      return error_set(EINVAL, "missing --source SRC");
    if (!o->map)
      return error_set(EINVAL, "missing --map MAP");
    return 0;
  }
  if (o->source && !o->map)
    return error_set(EINVAL, "--source needs --map MAP (the clone's region map)");
  if (o->map && !o->source)
    return error_set(EINVAL, "--map needs --source SRC");
  if (o->clone_flag && !o->source)
    return error_set(EINVAL,
                     "--%s without --source: --region-size, --workers and --rate apply to a "
                     "clone (as does every flag under 'Clone:' in --help); they need --source "
                     "and --map",
                     o->clone_flag);
  return 0;
}

int
frontend_usage_error(const struct frontend_program *p)
{
  fprintf(stderr, "%s: %s\nTry '%s --help'.\n", p->name, error_message(), p->name);
  return 2;
}

/* The program's getopt arguments followed by the shared ones of its groups. */
static int
build_getopt(const struct frontend_program *p, unsigned groups, char *shortopts, size_t size,
             struct option **longopts)
{
  size_t own = 0;
  while (p->longopts && p->longopts[own].name)
    own++;
  struct option *l = calloc(own + NFLAGS + 1, sizeof *l);
  if (!l)
    return error_set(ENOMEM, "out of memory");
  size_t n = 0;
  for (size_t i = 0; i < own; i++)
    l[n++] = p->longopts[i];
  snprintf(shortopts, size, "%s:%s", p->stop_at_operand ? "+" : "",
           p->shortopts ? p->shortopts : "");
  for (size_t i = 0; i < NFLAGS; i++) {
    if (!(table[i].groups & groups))
      continue;
    l[n++] = (struct option){ table[i].name, table[i].arg ? required_argument : no_argument, NULL,
                              code_of(i) };
    if (table[i].letter) {
      size_t len = strlen(shortopts);
      if (len + 3 < size)
        snprintf(shortopts + len, size - len, "%c%s", table[i].letter, table[i].arg ? ":" : "");
    }
  }
  *longopts = l;
  return 0;
}

int
frontend_parse(const struct frontend_program *p, int argc, char **argv, struct frontend_options *o,
               void *opaque)
{
  unsigned groups = p->groups | FRONTEND_COMMON;
  check_letters(p, groups);
  char shortopts[128];
  struct option *longopts = NULL;
  if (build_getopt(p, groups, shortopts, sizeof shortopts, &longopts) < 0) {
    log_error("%s", error_message());
    return 1;
  }
  int rc = FRONTEND_CONTINUE, c;
  opterr = 0; /* our own messages name the flag */
  optind = 1;
  while (rc == FRONTEND_CONTINUE
         && (c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    if (c == ':' || c == '?') {
      if (p->getopt_error)
        p->getopt_error(c, argv);
      else
        getopt_error(c, argv);
      rc = frontend_usage_error(p);
      break;
    }
    int row = row_of(groups, c);
    int r;
    if (row >= 0)
      r = take_row(p, (size_t)row, optarg, o, &rc);
    else if (p->take)
      r = p->take(opaque, c, optarg);
    else /* getopt_long returns only codes it was given: not reached */
      r = error_set(EINVAL, "option '%s' is not understood", argv[optind - 1]);
    if (r == -ENOMEM) {
      log_error("%s", error_message());
      rc = 1;
    } else if (r < 0)
      rc = frontend_usage_error(p);
  }
  free(longopts);
  if (rc == FRONTEND_CONTINUE && check(p, o) < 0)
    rc = frontend_usage_error(p);
  return rc;
}

void
frontend_help_line(FILE *f, const char *flags, const char *text)
{
  int n = fprintf(f, "  %s", flags);
  if (n + 2 > FRONTEND_HELP_COLUMN) {
    fputc('\n', f);
    n = 0;
  }
  fprintf(f, "%*s", FRONTEND_HELP_COLUMN - n, "");
  for (const char *t = text; *t; t++) {
    fputc(*t, f);
    if (*t == '\n')
      fprintf(f, "%*s", FRONTEND_HELP_COLUMN, "");
  }
  fputc('\n', f);
}

void
frontend_options_help(FILE *f, unsigned groups)
{
  for (size_t i = 0; i < NFLAGS; i++) {
    const struct flag *t = &table[i];
    if (!(t->groups & groups))
      continue;
    char flags[64], letter[8] = "    "; /* "-s, ", or blanks where it would stand */
    if (t->letter)
      snprintf(letter, sizeof letter, "-%c, ", t->letter);
    snprintf(flags, sizeof flags, "%s--%s%s%s", letter, t->name, t->arg ? " " : "",
             t->arg ? t->arg : "");
    frontend_help_line(f, flags, t->help);
  }
}

void
frontend_options_pod(FILE *f, unsigned groups)
{
  for (size_t i = 0; i < NFLAGS; i++) {
    const struct flag *t = &table[i];
    if (!(t->groups & groups))
      continue;
    fprintf(f, "=item ");
    if (t->letter)
      fprintf(f, "B<-%c>, ", t->letter);
    fprintf(f, "B<--%s>", t->name);
    if (t->arg)
      fprintf(f, " I<%s>", t->arg);
    fprintf(f, "\n\n%s\n\n", t->doc);
  }
}

void
frontend_clone_options(const struct frontend_options *o, struct clone_options *co)
{
  clone_options_init(co);
  co->region_size = o->region_size;
  co->workers = o->workers;
  co->request_size = o->request_size;
  co->rate = o->rate;
  co->commit_interval = o->commit_interval;
  co->start_paused = o->paused;
  co->size = o->size;
  co->hold = o->hold;
  co->source_identity = o->source_identity;
  co->source_timeout = o->source_timeout;
  co->new_map = o->new_map;
  co->source.connections = o->connections;
  co->source.direct = o->direct;
  co->dest.connections = o->connections;
  co->dest.direct = o->direct;
  co->hydrate = true;
}
