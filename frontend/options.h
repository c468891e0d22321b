/* ferry: the command-line flags every clone-serving program shares (ferry-nbd, ferry-fuse,
 * `ferry hydrate`) and the volume flags `ferry copy` shares with them.
 *
 * One table in options.c declares each shared flag once: its name and short letter, the
 * group it belongs to, how its value is parsed and checked, its --help line and its man-page
 * paragraph.  A program says which groups it takes (struct frontend_program) and keeps its
 * own flags; frontend_parse() runs getopt_long over both, stores the shared ones in struct
 * frontend_options, hands the program's own codes to its take() callback, and checks how the
 * shared flags combine ("--map needs --source").  frontend_options_help() prints the --help
 * lines of some groups; `frontend-pod` (options-pod.c) splices their man-page paragraphs into
 * docs/<program>.pod at build time (docs/meson.build).
 */
#ifndef FERRY_FRONTEND_OPTIONS_H
#define FERRY_FRONTEND_OPTIONS_H

#include "backends/clone.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Groups of shared flags; a program takes the groups it understands. */
enum frontend_group {
  FRONTEND_CLONE = 1u << 0,  /* --source --map and the hydrator's flags (region size, ...) */
  FRONTEND_SERVE = 1u << 1,  /* --control --pidfile */
  FRONTEND_DAEMON = 1u << 2, /* -f --foreground */
  FRONTEND_VOLUME = 1u << 3, /* -C --connections: how a network volume is opened */
  FRONTEND_DIRECT = 1u << 4, /* --direct: file volumes with O_DIRECT (sizes aligned to 4K) */
  FRONTEND_COPY = 1u << 5,   /* --requests, plus --request-size and --rate of the clone group */
  FRONTEND_REPORT = 1u << 6, /* -p --progress, --json */
  FRONTEND_COMMON = 1u << 7, /* -v --verbose, -h --help, -V --version: every program */
  /* --region-size --rate alone: for a program that starts a clone of a source it finds
   * itself (ferry live-move: the guest's current image) */
  FRONTEND_HYDRATE = 1u << 8,
};

/* The values of the shared flags.  Zero means "not given" (the library's default) unless a
 * program sets another default between frontend_options_init() and frontend_parse(). */
struct frontend_options {
  /* FRONTEND_CLONE */
  const char *source, *map;
  uint64_t region_size;   /* 0: the existing map's, else 64K */
  unsigned workers;       /* hydrator workers (0: the copy engine's default) */
  uint64_t request_size;  /* also FRONTEND_COPY: bytes per request (0: default) */
  uint64_t rate;          /* also FRONTEND_COPY: bytes/s (0: unlimited) */
  double commit_interval; /* seconds between map commits (0: default) */
  bool paused;            /* the hydrator starts paused */
  bool hold;              /* the copy is held back until `ferry release` */
  const char *source_identity;
  uint64_t size;         /* the clone's size when larger than the source (0: the source's) */
  double source_timeout; /* seconds an on-demand read waits for a lost source (0: 60) */
  bool new_map;          /* a missing map may be created over a destination holding data */
  /* FRONTEND_SERVE */
  const char *control, *pidfile;
  /* FRONTEND_DAEMON */
  bool foreground;
  /* FRONTEND_VOLUME */
  unsigned connections; /* nbd, http volumes (0: the driver's default) */
  /* FRONTEND_DIRECT */
  bool direct; /* file volumes: O_DIRECT */
  /* FRONTEND_COPY */
  unsigned requests;
  /* FRONTEND_REPORT */
  bool progress, json;

  /* Filled by frontend_parse(): the first flag given that only a clone takes ("--rate"). */
  const char *clone_flag;
};

/* A program that uses the table. */
struct frontend_program {
  const char *name;     /* "ferry-nbd", "ferry hydrate": in messages and --version */
  unsigned groups;      /* FRONTEND_* it takes (FRONTEND_COMMON is implied) */
  bool clone_required;  /* --source and --map are mandatory (ferry hydrate) */
  bool stop_at_operand; /* options end at the first operand (ferry-fuse, like mount tools) */
  /* The program's own flags: short letters ("r", "t:"), long options with codes below
   * FRONTEND_CODE_BASE (letters or 256 and up); either may be NULL. */
  const char *shortopts;
  const struct option *longopts;
  /* Store one of the program's own flags: 0, or -1 with a message (error_set) for a bad
   * value (exit 2), or -ENOMEM (exit 1). */
  int (*take)(void *opaque, int code, const char *arg);
  /* --help: the whole text on f (it calls frontend_options_help for the shared lines). */
  void (*usage)(FILE *f);
  /* getopt_long returned ':' (missing value) or '?' (unknown option): set the message.
   * NULL: getopt_error() of common/util.h ("unknown option '--x'"). */
  void (*getopt_error)(int c, char **argv);
};

/* Codes of shared flags without a short letter start here; a program's own codes stay below. */
enum { FRONTEND_CODE_BASE = 0x1000 };

/* frontend_parse() returns this when the program goes on (optind is at the first operand);
 * any other value is the exit code: 0 after --help or --version, 2 after a usage message,
 * 1 when memory ran out. */
enum { FRONTEND_CONTINUE = -1 };

void frontend_options_init(struct frontend_options *o);

/* Parse argv (getopt_long from optind = 1): shared flags into o, the program's own through
 * p->take(opaque, ...); then check how the shared flags combine.  Prints usage messages. */
int frontend_parse(const struct frontend_program *p, int argc, char **argv,
                   struct frontend_options *o, void *opaque);

/* "PROGRAM: <error_message()>" and "Try 'PROGRAM --help'." on stderr; returns 2.  For the
 * program's own checks after frontend_parse (operands and the like). */
int frontend_usage_error(const struct frontend_program *p);

/* The --help lines of the shared flags in `groups`, in table order: "  -s, --source SRC ..."
 * with the description at column FRONTEND_HELP_COLUMN. */
void frontend_options_help(FILE *f, unsigned groups);
/* One line of a program's own flags in the same layout ("  -r, --read-only", "text"). */
void frontend_help_line(FILE *f, const char *flags, const char *text);
enum { FRONTEND_HELP_COLUMN = 28 };

/* The man-page items (POD "=item ...") of the shared flags in `groups`. */
void frontend_options_pod(FILE *f, unsigned groups);
/* A group by its name in docs ("clone", "serve", ...): its bit, or 0. */
unsigned frontend_group_by_name(const char *name);

/* The clone flags as clone_options (after clone_options_init: hydrate on, nothing else set
 * beyond what the flags say). */
void frontend_clone_options(const struct frontend_options *o, struct clone_options *co);

#endif
