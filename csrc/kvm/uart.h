/* A 16550A UART on 8 I/O ports, answered in the vCPU run loop (struct lv_kvm_io_ops).
 *
 * Transmitted bytes go, as chosen at creation, live to fd 1 (one write per byte, no
 * buffering, so a console streams as the guest prints) and/or to a capped capture
 * buffer; the last LV_UART_TAIL bytes are always kept, so a VMM can show the text of a
 * panic even when it only streamed. A stdout with no reader left never raises SIGPIPE:
 * streaming stops and stdout_errno says why. Releasing the range (removed, or the VM
 * closed) lowers the IRQ line it holds high. Input is queued with lv_uart_feed() (bounded) and
 * read by the guest from RBR. The UART drives one IRQ line of the in-kernel irqchip
 * (KVM_IRQ_LINE): high while an enabled interrupt condition holds. */
#ifndef LUAVFIO_UART_H
#define LUAVFIO_UART_H

#include "iobus.h"

#include <stddef.h>
#include <stdint.h>

#define LV_UART_PORTS 8
#define LV_UART_TAIL 4096
#define LV_UART_RX_CAP 4096

struct lv_uart {
    struct lv_kvm_vm *vm;        /* NULL once its range is gone: no more IRQ updates */
    uint64_t base;               /* first port (set by lv_uart_attach) */
    uint32_t irq;
    int to_stdout;               /* cleared when stdout has no reader left (EPIPE) */
    int stdout_pipe;             /* stdout is a pipe or socket: writes guard SIGPIPE */
    int stdout_errno;            /* the last error writing to stdout, 0: none */
    /* capture buffer: cap 0 means none; bytes past the cap are counted, not kept */
    char *cap_buf;
    size_t cap_len, cap_max;
    uint64_t dropped;
    /* the tail ring: the last LV_UART_TAIL bytes sent */
    char tail[LV_UART_TAIL];
    size_t tail_pos;
    uint64_t sent;
    /* receive queue (ring) */
    uint8_t rx[LV_UART_RX_CAP];
    unsigned rx_head, rx_len;
    /* registers */
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, lsr_err, msr_delta;
    int thri;                    /* THR-empty interrupt pending */
    int line;                    /* level last put on the IRQ line, -1: never */
    int closed;
};

extern const struct lv_kvm_io_ops lv_uart_ops; /* opaque: struct lv_uart */

/* Set up a UART (the struct is caller-owned memory, e.g. a userdata). capture: bytes of
 * capture buffer (0: none). Returns 0 or -errno. */
int lv_uart_init(struct lv_uart *u, uint32_t irq, int to_stdout, size_t capture);
/* Attach to the VM whose irqchip gets the IRQ, at ports [base, base + 8) (done before
 * the range is added; the range's release detaches it). */
void lv_uart_attach(struct lv_uart *u, struct lv_kvm_vm *vm, uint64_t base);
/* Queue input; returns how many bytes were taken (the rest did not fit). */
size_t lv_uart_feed(struct lv_uart *u, const void *data, size_t len);
/* Copy the tail (oldest first) into out (LV_UART_TAIL bytes); returns its length. */
size_t lv_uart_tail(const struct lv_uart *u, char *out);
void lv_uart_close(struct lv_uart *u);

#endif
