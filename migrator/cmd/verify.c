/* ferry verify: are two volumes identical (backends/verify.h)?  Or, with --digest, the
 * block digest of volumes, to compare with one computed elsewhere (--expect).
 */
#include "backends/verify.h"
#include "backends/volume.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "frontend/options.h"
#include "migrator/commands.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0 identical, 1 different, 2 bad usage (EXIT_USAGE), 3 a volume could not be read. */
enum { EXIT_SAME = 0, EXIT_DIFFERENT = 1, EXIT_TROUBLE = 3 };

static void
usage(FILE *f)
{
  fprintf(f, "Usage: ferry verify [OPTIONS] A B\n"
             "       ferry verify --digest [OPTIONS] VOLUME...\n"
             "       ferry verify --expect DIGEST [OPTIONS] VOLUME\n"
             "\n"
             "Compare volumes A and B byte for byte, reading both in parallel and skipping what\n"
             "both report as zero or holes; print each one's digest and the ranges that differ.\n"
             "The digest (sha256/1M:...) is SHA-256 over the SHA-256 of every 1 MiB block: it\n"
             "depends only on the bytes, so `ferry verify --digest` at two sites compares\n"
             "volumes without moving them.  A and B are paths or volume URIs (nbd://, http://,\n"
             "*.zst images, ...).\n"
             "\n"
             "Options:\n");
  frontend_help_line(f, "    --digest", "print the digest of each VOLUME, compare nothing");
  frontend_help_line(f, "    --expect DIGEST",
                     "compare VOLUME with DIGEST (printed elsewhere by --digest)");
  frontend_help_line(f, "-R, --requests N", "blocks in flight (default 8)");
  frontend_help_line(f, "    --max-ranges N", "differing ranges listed (default 100; all counted)");
  frontend_help_line(f, "-q, --quiet", "print nothing: the exit status says it");
  frontend_options_help(f, FRONTEND_VOLUME | FRONTEND_REPORT | FRONTEND_COMMON);
  fprintf(f, "\n"
             "Exit status: 0 identical (or digest printed / matching), 1 different, 2 bad usage,\n"
             "3 a volume could not be opened or read.\n");
}

enum { OPT_DIGEST = 256, OPT_EXPECT, OPT_MAX_RANGES };

static const struct option long_options[] = {
  { "digest", no_argument, NULL, OPT_DIGEST },
  { "expect", required_argument, NULL, OPT_EXPECT },
  { "requests", required_argument, NULL, 'R' },
  { "max-ranges", required_argument, NULL, OPT_MAX_RANGES },
  { "quiet", no_argument, NULL, 'q' },
  { NULL, 0, NULL, 0 },
};

struct settings {
  struct frontend_options f; /* --connections --progress --json */
  bool digest, quiet;
  const char *expect;
  unsigned requests;
  uint64_t max_ranges;
  char **volumes;
  int n;
};

static int
take_option(void *opaque, int code, const char *arg)
{
  struct settings *s = opaque;
  uint64_t v;
  switch (code) {
  case OPT_DIGEST:
    s->digest = true;
    return 0;
  case OPT_EXPECT:
    if (strncmp(arg, VERIFY_DIGEST_PREFIX, strlen(VERIFY_DIGEST_PREFIX)) != 0
        || strlen(arg) != VERIFY_DIGEST_LEN - 1)
      return error_set(EINVAL,
                       "--expect: '%s' is not a digest printed by ferry verify (%s<64 hex>)", arg,
                       VERIFY_DIGEST_PREFIX);
    s->expect = arg;
    return 0;
  case 'R':
    if (parse_uint("--requests", arg, 1, 256, &v) < 0)
      return -1;
    s->requests = (unsigned)v;
    return 0;
  case OPT_MAX_RANGES:
    return parse_uint("--max-ranges", arg, 0, 1000000, &s->max_ranges) < 0 ? -1 : 0;
  case 'q':
    s->quiet = true;
    return 0;
  }
  return error_set(EINVAL, "option code %d is not understood", code);
}

static const struct frontend_program program = {
  .name = "ferry verify",
  .groups = FRONTEND_VOLUME | FRONTEND_REPORT,
  .shortopts = "R:q",
  .longopts = long_options,
  .take = take_option,
  .usage = usage,
};

/* -1 to go on, else the exit code. */
static int
parse_args(int argc, char **argv, struct settings *s)
{
  *s = (struct settings){ .requests = 8, .max_ranges = 100 };
  frontend_options_init(&s->f);
  int rc = frontend_parse(&program, argc, argv, &s->f, s);
  if (rc != FRONTEND_CONTINUE)
    return rc;
  s->volumes = argv + optind;
  s->n = argc - optind;
  if (s->digest && s->expect) {
    error_set(EINVAL, "--digest and --expect exclude each other");
    return frontend_usage_error(&program);
  }
  int want = s->digest ? -1 : s->expect ? 1 : 2;
  if ((want < 0 && s->n == 0) || (want > 0 && s->n != want)) {
    if (s->n == 0)
      error_set(EINVAL, "missing %s", want == 2 ? "A and B" : "VOLUME");
    else if (want == 2 && s->n == 1)
      error_set(EINVAL, "missing B (after A '%s'); --digest prints one volume's digest",
                s->volumes[0]);
    else
      error_set(EINVAL, "too many arguments: '%s'", s->volumes[want]);
    return frontend_usage_error(&program);
  }
  return -1;
}

static int
open_volume(const struct settings *s, const char *uri, struct volume **v)
{
  struct volume_options o;
  volume_options_init(&o);
  o.readonly = true;
  o.sequential = true; /* a plain .zst is read in order */
  o.connections = s->f.connections;
  return volume_open(uri, &o, v);
}

static json_t *
side_json(const char *uri, const struct verify_side *side)
{
  return json_pack("{s:s, s:I, s:s, s:I, s:I}", "volume", uri, "size", (json_int_t)side->size,
                   "digest", side->digest, "bytes_read", (json_int_t)side->bytes_read,
                   "bytes_skipped", (json_int_t)side->bytes_skipped);
}

static void
print_json(json_t *o)
{
  char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
  if (text)
    printf("%s\n", text);
  free(text);
  json_decref(o);
}

/* --digest (and --expect): one volume at a time. */
static int
digests(const struct settings *s, const struct verify_options *vo)
{
  int status = EXIT_SAME;
  json_t *list = s->f.json ? json_array() : NULL;
  for (int i = 0; i < s->n; i++) {
    struct volume *v = NULL;
    struct verify_side side;
    int r = open_volume(s, s->volumes[i], &v);
    if (r == 0) {
      struct verify_options o = *vo;
      o.progress = progress_new("verify", v->size, s->f.progress);
      r = verify_digest(v, &o, &side);
      progress_finish(o.progress);
      progress_free(o.progress);
    }
    volume_close(v);
    if (r < 0) {
      log_error("%s", error_message());
      status = EXIT_TROUBLE;
      continue;
    }
    bool match = !s->expect || strcmp(side.digest, s->expect) == 0;
    if (!match)
      status = EXIT_DIFFERENT;
    if (list) {
      json_t *o = side_json(s->volumes[i], &side);
      if (s->expect)
        json_object_set_new(o, "equal", json_boolean(match));
      json_array_append_new(list, o);
    } else if (!s->quiet) {
      printf("%s  %s\n", side.digest, s->volumes[i]);
      if (!match)
        printf("%s differs from the digest expected (%s)\n", s->volumes[i], s->expect);
    }
  }
  if (list)
    print_json(s->expect ? json_incref(json_array_get(list, 0)) : json_incref(list));
  json_decref(list);
  return status;
}

static void
print_text(const struct settings *s, const struct verify_result *r)
{
  const char *a = s->volumes[0], *b = s->volumes[1];
  char sz[32], rd[32], sk[32];
  printf("%s  %s\n%s  %s\n", r->a.digest, a, r->b.digest, b);
  if (r->equal) {
    printf("identical: %s (read %s, skipped %s of zeroes and holes)\n",
           format_size(sz, sizeof sz, (double)r->a.size),
           format_size(rd, sizeof rd, (double)(r->a.bytes_read + r->b.bytes_read)),
           format_size(sk, sizeof sk, (double)(r->a.bytes_skipped + r->b.bytes_skipped)));
    return;
  }
  if (r->a.size != r->b.size)
    printf("sizes differ: %s is %" PRIu64 " bytes, %s is %" PRIu64 " bytes\n", a, r->a.size, b,
           r->b.size);
  for (size_t i = 0; i < r->n_ranges; i++)
    printf("differ: offset %" PRIu64 ", %" PRIu64 " byte%s\n", r->ranges[i].offset,
           r->ranges[i].length, r->ranges[i].length == 1 ? "" : "s");
  if (r->total_ranges > r->n_ranges)
    printf("... and %" PRIu64 " more ranges\n", r->total_ranges - r->n_ranges);
  printf("%s and %s differ: %" PRIu64 " byte%s in %" PRIu64 " range%s\n", a, b, r->bytes_differing,
         r->bytes_differing == 1 ? "" : "s", r->total_ranges, r->total_ranges == 1 ? "" : "s");
}

int
cmd_verify(int argc, char **argv)
{
  struct settings s;
  int r = parse_args(argc, argv, &s);
  if (r >= 0)
    return r;
  struct verify_options vo;
  verify_options_init(&vo);
  vo.workers = s.requests;
  vo.max_ranges = s.max_ranges;
  if (s.digest || s.expect)
    return digests(&s, &vo);

  struct volume *a = NULL, *b = NULL;
  struct verify_result res = { 0 };
  int status = EXIT_TROUBLE;
  if (open_volume(&s, s.volumes[0], &a) < 0 || open_volume(&s, s.volumes[1], &b) < 0)
    goto out;
  vo.progress = progress_new("verify", a->size > b->size ? a->size : b->size, s.f.progress);
  r = verify_compare(a, b, &vo, &res);
  progress_finish(vo.progress);
  progress_free(vo.progress);
  if (r < 0)
    goto out;
  status = res.equal ? EXIT_SAME : EXIT_DIFFERENT;
  if (s.f.json) {
    json_t *ranges = json_array();
    for (size_t i = 0; i < res.n_ranges; i++)
      json_array_append_new(ranges,
                            json_pack("{s:I, s:I}", "offset", (json_int_t)res.ranges[i].offset,
                                      "length", (json_int_t)res.ranges[i].length));
    print_json(json_pack("{s:b, s:o, s:o, s:o, s:I, s:I, s:f}", "equal", res.equal, "a",
                         side_json(s.volumes[0], &res.a), "b", side_json(s.volumes[1], &res.b),
                         "ranges", ranges, "total_ranges", (json_int_t)res.total_ranges,
                         "bytes_differing", (json_int_t)res.bytes_differing, "seconds",
                         res.seconds));
  } else if (!s.quiet) {
    print_text(&s, &res);
  }
out:
  if (status == EXIT_TROUBLE)
    log_error("%s", error_message());
  verify_result_free(&res);
  volume_close(b);
  volume_close(a);
  return status;
}
