/* ferry: shared between plan.c, plan-edits.c and plan-apply.c (not a public interface). */
#ifndef FERRY_PLAN_INTERNAL_H
#define FERRY_PLAN_INTERNAL_H

#include "migrator/opennebula/plan.h"

/* (Re)compute plan.after and plan.edits from plan.before (plan-edits.c). */
int plan_compute(struct plan *p);
void plan_clear_edits(struct plan *p);
/* "RUNNING", "POWEROFF", ... (plan.c). */
const char *plan_state_name(int state, int lcm_state);

#endif
