/* A 16550A UART on 8 I/O ports, answered in the vCPU run loop (struct kvm_io_ops).
 *
 * Transmitted bytes go, as chosen at creation, live to fd 1 (one write per byte, no
 * buffering, so a console streams as the guest prints) and/or to a capped capture
 * buffer; the last KVM_UART_TAIL bytes are always kept, so a VMM can show the text of a
 * panic even when it only streamed. A stdout with no reader left never raises SIGPIPE:
 * streaming stops and stdout_errno says why. Releasing the range (removed, or the VM
 * closed) lowers the IRQ line it holds high. Input is queued with kvm_uart_feed() (bounded) and
 * read by the guest from RBR. The UART drives one IRQ line of the in-kernel irqchip
 * (KVM_IRQ_LINE): high while an enabled interrupt condition holds. */
#ifndef LUAVFIO_UART_H
#define LUAVFIO_UART_H

#include "iobus.h"

#include <stddef.h>
#include <stdint.h>

#define KVM_UART_PORTS 8
#define KVM_UART_TAIL 4096
#define KVM_UART_RX_CAP 4096

struct kvm_uart {
    struct kvm_vm *vm;           /* NULL once its range is gone: no more IRQ updates */
    uint64_t base;               /* first port (set by kvm_uart_attach) */
    uint32_t irq;
    int to_stdout;               /* cleared when stdout has no reader left (EPIPE) */
    int stdout_pipe;             /* stdout is a pipe or socket: writes guard SIGPIPE */
    int stdout_errno;            /* the last error writing to stdout, 0: none */
    /* capture buffer: cap 0 means none; bytes past the cap are counted, not kept */
    char *cap_buf;
    size_t cap_len, cap_max;
    uint64_t dropped;
    /* the tail ring: the last KVM_UART_TAIL bytes sent */
    char tail[KVM_UART_TAIL];
    size_t tail_pos;
    uint64_t sent;
    /* receive queue (ring) */
    uint8_t rx[KVM_UART_RX_CAP];
    unsigned rx_head, rx_len;
    /* registers */
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, lsr_err, msr_delta;
    int thri;                    /* THR-empty interrupt pending */
    int line;                    /* level last put on the IRQ line, -1: never */
    int closed;
};

extern const struct kvm_io_ops kvm_uart_ops; /* opaque: struct kvm_uart */

/* Set up a UART (the struct is caller-owned memory, e.g. a userdata). capture: bytes of
 * capture buffer (0: none). Returns 0 or -errno. */
int kvm_uart_init(struct kvm_uart *u, uint32_t irq, int to_stdout, size_t capture);
/* Attach to the VM whose irqchip gets the IRQ, at ports [base, base + 8) (done before
 * the range is added; the range's release detaches it). */
void kvm_uart_attach(struct kvm_uart *u, struct kvm_vm *vm, uint64_t base);
/* Queue input; returns how many bytes were taken (the rest did not fit). */
size_t kvm_uart_feed(struct kvm_uart *u, const void *data, size_t len);
/* Copy the tail (oldest first) into out (KVM_UART_TAIL bytes); returns its length. */
size_t kvm_uart_tail(const struct kvm_uart *u, char *out);
void kvm_uart_close(struct kvm_uart *u);

#endif
