/* Legacy PC ports Linux probes, answered in the vCPU run loop so that the thousands of
 * probes and delays (port 0x80, CMOS, absent serial ports and VGA) never leave C, and
 * the i8042 controller, whose reset line is the machine's reboot. */
#ifndef LUAVFIO_LEGACY_H
#define LUAVFIO_LEGACY_H

#include "iobus.h"

#include <stdint.h>

/* Ports [base, base + size) that read `value` in every byte and drop writes: what an
 * empty ISA slot (0xff) or an idle device looks like. Returns the range id or -errno. */
int kvm_add_ignore(struct kvm_vm *vm, uint16_t base, uint16_t size, uint8_t value);

/* A keyboard controller on ports 0x60 (data) and 0x64 (status/command) with no keyboard
 * or mouse behind it: the controller commands Linux uses (read/write the command byte,
 * self tests, port enables, loopback) answer, device bytes get no reply, and a pulse of
 * the reset line (command 0xfe) ends the run loop with a stop exit at port 0x64 (the
 * reboot). Returns the id of the 0x64 range (> 0; the 0x60 range has id + 1) or -errno. */
int kvm_add_i8042(struct kvm_vm *vm);

#endif
