/* ferry: what a DISK inherits from its datastore, recomputed for the destination.
 *
 * oned fills a DISK from its image (Image::disk_attribute, src/image/Image.cc) and then from the
 * image's datastore (Datastore::disk_attribute, src/datastore/Datastore.cc): DATASTORE,
 * DATASTORE_ID, TM_MAD, CLUSTER_ID always; CLONE_TARGET/LN_TARGET (CLONE_TARGET_<TM_MAD_SYSTEM>
 * first) and every INHERIT_DATASTORE_ATTR of oned.conf only where the DISK has no value yet;
 * DISK_TYPE_<TM_MAD_SYSTEM> sets TYPE and DISK_TYPE.  Volatile disks get the same from the system
 * datastore (VirtualMachineDisks::volatile_info).  A DISK that moves must end up as if oned had
 * filled it from the destination: a value inherited from the source datastore takes the
 * destination's value (or goes, when the destination has none); a value that is neither is
 * refused by name rather than guessed.  /work/notes/opennebula-source.md, section 3.
 */
#include "migrator/opennebula/plan-internal.h"
#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- datastores ---- */

const char *
plan_disk_type_name(int t)
{
  static const char *const names[]
      = { "FILE",          "CDROM",    "BLOCK",          "RBD",  "RBD_CDROM", "GLUSTER",
          "GLUSTER_CDROM", "SHEEPDOG", "SHEEPDOG_CDROM", "ISCSI" };
  return t >= 0 && (size_t)t < sizeof names / sizeof names[0] ? names[t] : "";
}

void
plan_ds_clear(struct plan_ds *ds)
{
  free(ds->name);
  free(ds->tm_mad);
  free(ds->base_path);
  free(ds->clusters);
  xmlbody_leaves_free(ds->tmpl, ds->n);
  memset(ds, 0, sizeof *ds);
}

int
plan_ds_parse(const char *body, const char *what, int64_t id, struct plan_ds *ds)
{
  struct xmlbody *x = NULL;
  char *type = NULL, *disk_type = NULL;
  int64_t *cids = NULL;
  size_t n_cids = 0;
  int r;
  memset(ds, 0, sizeof *ds);
  ds->id = id;
  if ((r = xmlbody_parse_lenient(body, what, &x)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/NAME", &ds->name)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/TM_MAD", &ds->tm_mad)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/BASE_PATH", &ds->base_path)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/TYPE", &type)) < 0
      || (r = xmlbody_get(x, "/DATASTORE/DISK_TYPE", &disk_type)) < 0)
    goto out;
  if (!ds->name) {
    r = error_set(EINVAL, "%s: no NAME", what);
    goto out;
  }
  ds->type = type ? atoi(type) : -1;
  ds->disk_type = disk_type ? atoi(disk_type) : 0;
  if (xmlbody_count(x, "/DATASTORE/TEMPLATE") == 1
      && (r = xmlbody_leaves(x, "/DATASTORE/TEMPLATE", &ds->tmpl, &ds->n)) < 0)
    goto out;
  /* Datastore::get_cluster_ids: the CLUSTERS set, in order, joined by "," for CLUSTER_ID. */
  if (xmlbody_count(x, "/DATASTORE/CLUSTERS") == 1
      && (r = xmlbody_ids(x, "/DATASTORE/CLUSTERS", &cids, &n_cids)) < 0)
    goto out;
  size_t len = 1;
  for (size_t i = 0; i < n_cids; i++)
    len += 22;
  if (!(ds->clusters = malloc(len))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  ds->clusters[0] = '\0';
  for (size_t i = 0, at = 0; i < n_cids; i++)
    at += (size_t)sprintf(ds->clusters + at, "%s%" PRId64, i ? "," : "", cids[i]);
  r = 0;
out:
  free(cids);
  free(type);
  free(disk_type);
  xmlbody_free(x);
  if (r < 0)
    plan_ds_clear(ds);
  return r;
}

const char *
plan_ds_attr(const struct plan_ds *ds, const char *name)
{
  for (size_t i = 0; i < ds->n; i++)
    if (!ds->tmpl[i].vector && strcmp(ds->tmpl[i].name, name) == 0)
      return ds->tmpl[i].value;
  return NULL;
}

bool
plan_ds_is_vector(const struct plan_ds *ds, const char *name)
{
  for (size_t i = 0; i < ds->n; i++)
    if (ds->tmpl[i].vector && strcmp(ds->tmpl[i].vector, name) == 0)
      return true;
  return false;
}

static const char *
ds_vector_value(const struct plan_ds *ds, const char *vector, const char *key)
{
  for (size_t i = 0; i < ds->n; i++)
    if (ds->tmpl[i].vector && !strcmp(ds->tmpl[i].vector, vector) && !strcmp(ds->tmpl[i].name, key))
      return ds->tmpl[i].value;
  return NULL;
}

/* ---- the DISK as a map ---- */

struct attrs {
  struct xmlbody_leaf *l;
  size_t n;
  /* the target values, parallel to l, plus names added */
  char **want;
  bool *set;
  char **add_name, **add_value;
  size_t n_add;
};

static const char *
cur(const struct attrs *a, const char *name)
{
  for (size_t i = 0; i < a->n; i++)
    if (!a->l[i].vector && strcmp(a->l[i].name, name) == 0)
      return a->l[i].value;
  return NULL;
}

static int
want(struct attrs *a, const char *name, const char *value)
{
  for (size_t i = 0; i < a->n; i++)
    if (!a->l[i].vector && strcmp(a->l[i].name, name) == 0) {
      char *v = value ? strdup(value) : NULL;
      if (value && !v)
        return error_set(ENOMEM, "out of memory");
      free(a->want[i]);
      a->want[i] = v;
      a->set[i] = true;
      return 0;
    }
  for (size_t i = 0; i < a->n_add; i++)
    if (strcmp(a->add_name[i], name) == 0) {
      char *v = value ? strdup(value) : NULL;
      if (value && !v)
        return error_set(ENOMEM, "out of memory");
      free(a->add_value[i]);
      a->add_value[i] = v;
      return 0;
    }
  if (!value)
    return 0;
  char **n = realloc(a->add_name, (a->n_add + 1) * sizeof *n);
  if (n)
    a->add_name = n;
  char **v = n ? realloc(a->add_value, (a->n_add + 1) * sizeof *v) : NULL;
  if (!v)
    return error_set(ENOMEM, "out of memory");
  a->add_value = v;
  a->add_name[a->n_add] = strdup(name);
  a->add_value[a->n_add] = strdup(value);
  if (!a->add_name[a->n_add++] || !a->add_value[a->n_add - 1])
    return error_set(ENOMEM, "out of memory");
  return 0;
}

static void
attrs_clear(struct attrs *a)
{
  for (size_t i = 0; i < a->n; i++)
    free(a->want ? a->want[i] : NULL);
  for (size_t i = 0; i < a->n_add; i++) {
    free(a->add_name[i]);
    free(a->add_value[i]);
  }
  xmlbody_leaves_free(a->l, a->n);
  free(a->want);
  free(a->set);
  free(a->add_name);
  free(a->add_value);
  memset(a, 0, sizeof *a);
}

static bool
same(const char *a, const char *b)
{
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static const char *
q(const char *v)
{
  return v ? v : "(none)";
}

/* ---- the rules ---- */

struct rule_ctx {
  struct plan *p;
  const struct disk_move *m;
  struct attrs *a;
};

/* A value oned copied from the datastore only where the DISK had none: if the DISK holds the
 * source datastore's value (or nothing), it gets the destination's; if it already holds the
 * destination's, nothing changes; anything else was not inherited and is refused by name. */
static int
inherited(struct rule_ctx *c, const char *name, const char *from_value, const char *to_value)
{
  const char *v = cur(c->a, name);
  char img[256];
  /* A value the image template gave (INHERIT_IMAGE_ATTR) is the image's, not the datastore's. */
  if (v && c->m->image) {
    char *iv = NULL;
    snprintf(img, sizeof img, "/IMAGE/TEMPLATE/%s", name);
    if (xmlbody_get(c->m->image, img, &iv) == 1 && strcmp(iv, v) == 0) {
      free(iv);
      return 0;
    }
    free(iv);
  }
  if (!v || same(v, from_value))
    return same(v, to_value) ? 0 : want(c->a, name, to_value);
  if (same(v, to_value))
    return 0;
  return error_set(EINVAL,
                   "VM %" PRId64 " disk %" PRId64 ": %s is '%s', neither datastore %" PRId64
                   " (%s)'s %s nor datastore %" PRId64
                   " (%s)'s %s: not inherited (set in the VM template?), "
                   "and ferry does not guess where it should point after the move; make it one "
                   "of them first",
                   c->p->vm_id, c->m->disk_id, name, v, c->m->from->id, c->m->from->name,
                   q(from_value), c->m->to->id, c->m->to->name, q(to_value));
}

/* CLONE_TARGET / LN_TARGET / DISK_TYPE as the datastore gives them for TM_MAD_SYSTEM tsys:
 * X_<TSYS> first, X otherwise (Datastore::disk_attribute; get_tm_mad_targets). */
static const char *
target_of(const struct plan_ds *ds, const char *attr, const char *tsys)
{
  if (tsys && *tsys) {
    char key[96];
    snprintf(key, sizeof key, "%s_%s", attr, tsys);
    for (char *k = key + strlen(attr) + 1; *k; k++)
      *k = (char)(*k >= 'a' && *k <= 'z' ? *k - 32 : *k);
    const char *v = plan_ds_attr(ds, key);
    if (v && *v)
      return v;
  }
  return plan_ds_attr(ds, attr);
}

static bool
in_list(const struct plan *p, const char *name)
{
  for (size_t i = 0; i < p->n_inherit; i++)
    if (strcmp(p->inherit[i], name) == 0)
      return true;
  return false;
}

/* A DISK TYPE as Image::disk_attribute writes it for a datastore's disk type. */
static const char *
type_of(int disk_type, bool cdrom, char *buf, size_t len)
{
  const char *t = plan_disk_type_name(disk_type);
  if (cdrom) {
    if (!strcmp(t, "RBD") || !strcmp(t, "GLUSTER") || !strcmp(t, "SHEEPDOG"))
      snprintf(buf, len, "%s_CDROM", t);
    else
      snprintf(buf, len, "CDROM");
    return buf;
  }
  snprintf(buf, len, "%s", t);
  return buf;
}

static int
image_disk_rules(struct rule_ctx *c)
{
  const struct disk_move *m = c->m;
  const char *tnew = m->tsys_new, *tm_new = m->to->tm_mad;
  /* The DISK's own TM_MAD_SYSTEM is what Datastore::disk_attribute reads: check_tm_mad sets it
   * (to the VM's) only on disks whose driver differs from the system datastore's. */
  bool sys_new = tnew && *tnew && tm_new && strcasecmp(tnew, tm_new) != 0;
  const char *told = cur(c->a, "TM_MAD_SYSTEM"), *dnew = sys_new ? tnew : NULL;
  int r;
  /* With a TM_MAD_SYSTEM other than the disk's own driver, oned insists on CLONE_TARGET_<TM>,
   * LN_TARGET_<TM> and DISK_TYPE_<TM> (VirtualMachineDisks::check_tm_mad). */
  if (sys_new) {
    static const char *const need[] = { "CLONE_TARGET", "LN_TARGET", "DISK_TYPE" };
    for (size_t i = 0; i < 3; i++) {
      char key[96];
      snprintf(key, sizeof key, "%s_%s", need[i], tnew);
      for (char *k = key + strlen(need[i]) + 1; *k; k++)
        *k = (char)(*k >= 'a' && *k <= 'z' ? *k - 32 : *k);
      if (!plan_ds_attr(m->to, key))
        return error_set(EINVAL,
                         "VM %" PRId64 " disk %" PRId64 ": datastore %" PRId64
                         " (%s) has no %s: oned would not run its disks on a %s system "
                         "datastore (Datastore::get_tm_mad_targets)",
                         c->p->vm_id, m->disk_id, m->to->id, m->to->name, key, tnew);
    }
  }
  if ((r = inherited(c, "CLONE_TARGET", target_of(m->from, "CLONE_TARGET", told),
                     target_of(m->to, "CLONE_TARGET", dnew)))
          < 0
      || (r = inherited(c, "LN_TARGET", target_of(m->from, "LN_TARGET", told),
                        target_of(m->to, "LN_TARGET", dnew)))
             < 0)
    return r;
  /* TYPE: Image::disk_attribute's disk_type_to_str of the image (= its datastore's DISK_TYPE),
   * or DISK_TYPE_<TM_MAD_SYSTEM> through VirtualMachineDisk::set_types. */
  char a[32], b[32];
  const char *v = cur(c->a, "TYPE"), *ft = type_of(m->from->disk_type, m->cdrom_image, a, sizeof a),
             *tt = type_of(m->to->disk_type, m->cdrom_image, b, sizeof b);
  const char *fsys = told ? target_of(m->from, "DISK_TYPE", told) : NULL;
  const char *tsys_type = dnew ? target_of(m->to, "DISK_TYPE", dnew) : NULL;
  if (v && !same(v, ft) && fsys && same(v, fsys) && tsys_type)
    r = same(v, tsys_type) ? 0 : want(c->a, "TYPE", tsys_type);
  else if ((r = inherited(c, "TYPE", ft, tt)) < 0)
    return r;
  /* DISK_TYPE: DISK_TYPE_<TM_MAD_SYSTEM> where check_tm_mad set the disk's TM_MAD_SYSTEM, else
   * inherited when INHERIT_DATASTORE_ATTR names it; otherwise not the datastore's business. */
  bool sys_old = told && *told;
  bool listed = in_list(c->p, "DISK_TYPE");
  if (r == 0 && (sys_old || sys_new || listed))
    r = inherited(c, "DISK_TYPE",
                  sys_old  ? target_of(m->from, "DISK_TYPE", told)
                  : listed ? plan_ds_attr(m->from, "DISK_TYPE")
                           : NULL,
                  sys_new  ? target_of(m->to, "DISK_TYPE", dnew)
                  : listed ? plan_ds_attr(m->to, "DISK_TYPE")
                           : NULL);
  /* The DISK's own TM_MAD_SYSTEM (check_tm_mad sets it where the disk's driver differs). */
  if (r == 0)
    r = want(c->a, "TM_MAD_SYSTEM", dnew);
  return r;
}

static int
volatile_disk_rules(struct rule_ctx *c)
{
  const struct disk_move *m = c->m;
  int r;
  if ((r = inherited(c, "CLONE_TARGET", plan_ds_attr(m->from, "CLONE_TARGET"),
                     plan_ds_attr(m->to, "CLONE_TARGET")))
          < 0
      || (r = inherited(c, "LN_TARGET", plan_ds_attr(m->from, "LN_TARGET"),
                        plan_ds_attr(m->to, "LN_TARGET")))
             < 0)
    return r;
  /* DISK_TYPE: inherited, else the system datastore's disk type. */
  const char *fd = in_list(c->p, "DISK_TYPE") ? plan_ds_attr(m->from, "DISK_TYPE") : NULL;
  const char *td = in_list(c->p, "DISK_TYPE") ? plan_ds_attr(m->to, "DISK_TYPE") : NULL;
  if ((r = inherited(c, "DISK_TYPE", fd ? fd : plan_disk_type_name(m->from->disk_type),
                     td ? td : plan_disk_type_name(m->to->disk_type)))
      < 0)
    return r;
  /* A volatile FS disk's FORMAT is the system datastore's DRIVER: ferry copies bytes, it does
   * not convert a raw file into a qcow2 one. */
  const char *type = cur(c->a, "TYPE");
  if (type && !strcasecmp(type, "FS")
      && !same(plan_ds_attr(m->from, "DRIVER"), plan_ds_attr(m->to, "DRIVER")))
    return error_set(EINVAL,
                     "VM %" PRId64 " disk %" PRId64 " (volatile FS): datastore %" PRId64
                     " (%s) formats it %s and datastore %" PRId64
                     " (%s) %s (DRIVER): ferry copies volumes, it does not convert them",
                     c->p->vm_id, m->disk_id, m->from->id, m->from->name,
                     q(plan_ds_attr(m->from, "DRIVER")), m->to->id, m->to->name,
                     q(plan_ds_attr(m->to, "DRIVER")));
  return 0;
}

static int
inherit_rules(struct rule_ctx *c)
{
  const struct disk_move *m = c->m;
  bool vectors = c->p->vectors_inherited;
  int r = 0;
  for (size_t i = 0; i < c->p->n_inherit && r == 0; i++) {
    const char *name = c->p->inherit[i];
    if (!strcmp(name, "DISK_TYPE"))
      continue; /* its own rule above */
    if (vectors && (plan_ds_is_vector(m->from, name) || plan_ds_is_vector(m->to, name))) {
      /* 6.0+: a vector attribute's values are inherited one by one under their own names. */
      const struct plan_ds *both[2] = { m->from, m->to };
      for (int s = 0; s < 2 && r == 0; s++)
        for (size_t k = 0; k < both[s]->n && r == 0; k++) {
          const struct xmlbody_leaf *l = &both[s]->tmpl[k];
          if (!l->vector || strcmp(l->vector, name) != 0)
            continue;
          if (s == 1 && ds_vector_value(m->from, name, l->name))
            continue; /* done with the source's */
          r = inherited(c, l->name, ds_vector_value(m->from, name, l->name),
                        ds_vector_value(m->to, name, l->name));
        }
      continue;
    }
    r = inherited(c, name, plan_ds_attr(m->from, name), plan_ds_attr(m->to, name));
  }
  return r;
}

int
plan_disk_changes(struct plan *p, const struct disk_move *m, struct attr_change **out, size_t *n)
{
  struct attrs a = { 0 };
  struct rule_ctx c = { .p = p, .m = m, .a = &a };
  char path[128], num[32];
  int r;
  *out = NULL;
  *n = 0;
  snprintf(path, sizeof path, "/VM/TEMPLATE/DISK[DISK_ID=%" PRId64 "]", m->disk_id);
  if ((r = xmlbody_leaves(m->vm, path, &a.l, &a.n)) < 0)
    return r;
  if (!(a.want = calloc(a.n + 1, sizeof *a.want)) || !(a.set = calloc(a.n + 1, sizeof *a.set))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  /* Always replaced by Datastore::disk_attribute. */
  snprintf(num, sizeof num, "%" PRId64, m->to->id);
  if ((r = want(&a, "DATASTORE", m->to->name)) < 0 || (r = want(&a, "DATASTORE_ID", num)) < 0
      || (m->to->tm_mad && (r = want(&a, "TM_MAD", m->to->tm_mad)) < 0)
      || (r = want(&a, "CLUSTER_ID", m->to->clusters)) < 0)
    goto out;
  if ((r = m->is_volatile ? volatile_disk_rules(&c) : image_disk_rules(&c)) < 0
      || (r = inherit_rules(&c)) < 0)
    goto out;
  /* The changes, in the DISK's order, then the added names. */
  size_t cap = a.n + a.n_add;
  if (cap && !(*out = calloc(cap, sizeof **out))) {
    r = error_set(ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < a.n + a.n_add; i++) {
    const char *name = i < a.n ? a.l[i].name : a.add_name[i - a.n];
    const char *old = i < a.n ? a.l[i].value : NULL;
    const char *new = i < a.n ? (a.set[i] ? a.want[i] : a.l[i].value) : a.add_value[i - a.n];
    if ((i < a.n && a.l[i].vector) || same(old, new))
      continue;
    struct attr_change *ch = &(*out)[(*n)++];
    ch->name = strdup(name);
    ch->old_value = old ? strdup(old) : NULL;
    ch->new_value = new ? strdup(new) : NULL;
    if (!ch->name || (old && !ch->old_value) || (new && !ch->new_value)) {
      r = error_set(ENOMEM, "out of memory");
      goto out;
    }
  }
  r = 0;
out:
  attrs_clear(&a);
  if (r < 0) {
    plan_attr_changes_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return r;
}

void
plan_attr_changes_free(struct attr_change *c, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(c[i].name);
    free(c[i].old_value);
    free(c[i].new_value);
  }
  free(c);
}
