/* ferry: the demo's running VM — the test guest (tests/guest/build: Debian's cloud kernel and a
 * busybox initramfs) under qemu, booted from cluster A's NBD export, writing and fsyncing in a
 * loop with a heartbeat line every 20 ms on its serial console, which the demo reads and stamps
 * with the host's clock (the guest's clock stops while qemu is stopped). */
#ifndef FERRY_DEMO_VM_H
#define FERRY_DEMO_VM_H

#include <stdbool.h>
#include <stddef.h>

struct demo_vm;

/* Can the demo boot a VM?  qemu-system-x86_64 in PATH and a test guest: FERRY_GUEST_KERNEL
 * and FERRY_GUEST_INITRD (FERRY_GUEST_ACCEL, default tcg), else what the source tree's
 * tests/guest/build prints (it builds the guest once, from Debian packages, cached).  false
 * with the reason in why. */
bool demo_vm_available(char *why, size_t len);

/* Boot VM 42 in dir with its disk on the NBD export at socket (device virtio-disk0, as
 * libvirt names a VM's first disk).  Returns once qemu runs; the guest boots meanwhile. */
int demo_vm_start(const char *dir, const char *socket, struct demo_vm **out);
const char *demo_vm_qmp(const struct demo_vm *vm);
int demo_vm_pid(const struct demo_vm *vm);
const char *demo_vm_accel(const struct demo_vm *vm);

/* Wait for a serial line that starts with prefix ("ferry-guest: ack 10"); a line
 * "ferry-guest: FAILED ..." or qemu's exit is an error naming it. */
int demo_vm_wait_line(struct demo_vm *vm, const char *prefix, double timeout);
/* Acknowledged writes so far ("ferry-guest: ack N" lines). */
unsigned demo_vm_acks(struct demo_vm *vm);
/* Host time (CLOCK_REALTIME) now, comparable with the lines' stamps. */
double demo_vm_clock(void);
/* Over the lines stamped in [from, to]: the largest gap between heartbeats and between
 * acknowledged writes, and the number of heartbeats. */
void demo_vm_gaps(struct demo_vm *vm, double from, double to, double *heartbeat_gap,
                  double *ack_gap, unsigned *heartbeats);
/* End the guest's loop ("stop" on its console) and wait for the power-off. */
int demo_vm_stop(struct demo_vm *vm, double timeout);
/* Every write the guest acknowledged is in image's /ferry-guest/writes.log (read with
 * debugfs, the VM powered off).  *acked: how many it acknowledged. */
int demo_vm_check_writes(struct demo_vm *vm, const char *image, unsigned *acked);
/* Kill qemu if it still runs, free everything. */
void demo_vm_free(struct demo_vm *vm);

#endif
