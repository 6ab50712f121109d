/* The 16550A UART model (see uart.h). Registers, by offset from the base port:
 * 0 RBR/THR (DLL with LCR.DLAB), 1 IER (DLM with DLAB), 2 IIR/FCR, 3 LCR, 4 MCR, 5 LSR,
 * 6 MSR, 7 SCR. Transmission is instant, so THR is always empty (LSR.THRE and TEMT). */
#include "uart.h"
#include "irq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { RBR = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

#define IER_RDI 0x01   /* data ready */
#define IER_THRI 0x02  /* THR empty */
#define IER_RLSI 0x04  /* line status */
#define IER_MSI 0x08   /* modem status */
#define LCR_DLAB 0x80
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

int kvm_uart_init(struct kvm_uart *u, uint32_t irq, int to_stdout, size_t capture)
{
    memset(u, 0, sizeof *u);
    u->irq = irq;
    u->to_stdout = to_stdout;
    u->line = -1;
    u->lcr = 0x03;         /* 8N1, as after a BIOS */
    u->thri = 0;
    struct stat st;
    /* a pipe or a socket can lose its reader, and a write then raises SIGPIPE */
    u->stdout_pipe = to_stdout && fstat(1, &st) == 0 &&
                     (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    if (capture) {
        u->cap_buf = malloc(capture);
        if (!u->cap_buf)
            return -ENOMEM;
        u->cap_max = capture;
    }
    return 0;
}

void kvm_uart_attach(struct kvm_uart *u, struct kvm_vm *vm, uint64_t base)
{
    u->vm = vm;
    u->base = base;
    u->line = -1;
}

void kvm_uart_close(struct kvm_uart *u)
{
    if (u->line == 1 && u->vm && u->vm->fd >= 0)
        kvm_irq_line(u->vm, u->irq, 0); /* a closed UART asks for nothing */
    u->line = 0;
    free(u->cap_buf);
    u->cap_buf = NULL;
    u->cap_len = u->cap_max = 0;
    u->rx_len = 0;
    u->closed = 1;
}

/* The range is gone (removed, or the VM closes): the line goes low first, or the guest's
 * IRQ would stay asserted by a device nobody can reach any more. */
static void uart_release(void *opaque)
{
    struct kvm_uart *u = opaque;
    if (u->line == 1 && u->vm && u->vm->fd >= 0 && u->vm->irqchip)
        kvm_irq_line(u->vm, u->irq, 0);
    u->line = 0;
    u->vm = NULL;
}

/* ---- interrupt line ---- */

static int pending(const struct kvm_uart *u)
{
    return ((u->ier & IER_RLSI) && u->lsr_err) || ((u->ier & IER_RDI) && u->rx_len) ||
           ((u->ier & IER_THRI) && u->thri) || ((u->ier & IER_MSI) && u->msr_delta);
}

/* ISA interrupts are edge-triggered at the PIC and the IOAPIC: the line follows the
 * pending state exactly, so every new condition after a drop is a new edge. */
static void update_irq(struct kvm_uart *u)
{
    int level = pending(u);
    if (level == u->line || !u->vm || u->vm->fd < 0 || !u->vm->irqchip)
        return;
    if (kvm_irq_line(u->vm, u->irq, level) == 0)
        u->line = level;
}

/* ---- data paths ---- */

/* write(1, ...) without SIGPIPE: blocked around the write when stdout is a pipe or a
 * socket (the signal of a write is the writing thread's), and the one the write raised
 * taken back unless it was blocked before. */
static ssize_t write_stdout(const struct kvm_uart *u, const uint8_t *b)
{
    sigset_t pipe, old;
    if (u->stdout_pipe) {
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, &old);
    }
    ssize_t n;
    do
        n = write(1, b, 1);
    while (n < 0 && errno == EINTR);
    int err = errno;
    if (u->stdout_pipe) {
        if (n < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    errno = err;
    return n;
}

/* A console that went away must not stop the guest, nor the VMM: the byte is dropped, and
 * with no reader left (EPIPE) streaming stops, the error kept for kvm_uart's caller. */
static void stream(struct kvm_uart *u, uint8_t b)
{
    if (write_stdout(u, &b) >= 0)
        return;
    u->stdout_errno = errno;
    if (errno == EPIPE)
        u->to_stdout = 0;
}

static void emit(struct kvm_uart *u, uint8_t b)
{
    u->tail[u->tail_pos] = (char)b;
    u->tail_pos = (u->tail_pos + 1) % KVM_UART_TAIL;
    u->sent++;
    if (u->cap_max) {
        if (u->cap_len < u->cap_max)
            u->cap_buf[u->cap_len++] = (char)b;
        else
            u->dropped++;
    }
    if (u->to_stdout)
        stream(u, b);
}

static int rx_push(struct kvm_uart *u, uint8_t b)
{
    if (u->rx_len == KVM_UART_RX_CAP)
        return 0;
    u->rx[(u->rx_head + u->rx_len++) % KVM_UART_RX_CAP] = b;
    return 1;
}

static uint8_t rx_pop(struct kvm_uart *u)
{
    if (!u->rx_len)
        return 0;
    uint8_t b = u->rx[u->rx_head];
    u->rx_head = (u->rx_head + 1) % KVM_UART_RX_CAP;
    u->rx_len--;
    return b;
}

size_t kvm_uart_feed(struct kvm_uart *u, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t n = 0;
    if (u->closed)
        return 0;
    while (n < len && rx_push(u, p[n]))
        n++;
    update_irq(u);
    return n;
}

size_t kvm_uart_tail(const struct kvm_uart *u, char *out)
{
    size_t n = u->sent < KVM_UART_TAIL ? (size_t)u->sent : KVM_UART_TAIL;
    size_t start = (u->tail_pos + KVM_UART_TAIL - n) % KVM_UART_TAIL;
    for (size_t i = 0; i < n; i++)
        out[i] = u->tail[(start + i) % KVM_UART_TAIL];
    return n;
}

/* ---- registers ---- */

/* Modem status lines: in loopback they are the MCR outputs wired back; otherwise a
 * connected terminal (CTS, DSR, DCD). */
static uint8_t msr_lines(const struct kvm_uart *u)
{
    if (!(u->mcr & MCR_LOOP))
        return 0xb0;
    return (uint8_t)(((u->mcr & MCR_RTS) ? 0x10 : 0) | ((u->mcr & MCR_DTR) ? 0x20 : 0) |
                     ((u->mcr & MCR_OUT1) ? 0x40 : 0) | ((u->mcr & MCR_OUT2) ? 0x80 : 0));
}

static void set_mcr(struct kvm_uart *u, uint8_t v)
{
    uint8_t before = msr_lines(u);
    u->mcr = v & 0x1f;
    uint8_t after = msr_lines(u), ch = before ^ after;
    u->msr_delta |= (uint8_t)(((ch & 0x10) ? 0x01 : 0) | ((ch & 0x20) ? 0x02 : 0) |
                              ((before & 0x40) && !(after & 0x40) ? 0x04 : 0) |
                              ((ch & 0x80) ? 0x08 : 0));
}

static uint8_t iir(const struct kvm_uart *u)
{
    uint8_t fifo = (u->fcr & FCR_ENABLE) ? 0xc0 : 0;
    if ((u->ier & IER_RLSI) && u->lsr_err)
        return fifo | 0x06;
    if ((u->ier & IER_RDI) && u->rx_len)
        return fifo | 0x04;
    if ((u->ier & IER_THRI) && u->thri)
        return fifo | 0x02;
    if ((u->ier & IER_MSI) && u->msr_delta)
        return fifo | 0x00;
    return fifo | 0x01;
}

static uint8_t reg_read(struct kvm_uart *u, unsigned r)
{
    uint8_t v;
    switch (r) {
    case RBR:
        if (u->lcr & LCR_DLAB)
            return u->dll;
        return rx_pop(u);
    case IER:
        return (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
    case IIR:
        v = iir(u);
        if ((v & 0x0f) == 0x02)
            u->thri = 0;   /* reading IIR while it reports THR empty acknowledges it */
        return v;
    case LCR:
        return u->lcr;
    case MCR:
        return u->mcr;
    case LSR:
        v = (uint8_t)((u->rx_len ? LSR_DR : 0) | u->lsr_err | LSR_THRE | LSR_TEMT);
        u->lsr_err = 0;
        return v;
    case MSR:
        v = (uint8_t)(msr_lines(u) | u->msr_delta);
        u->msr_delta = 0;
        return v;
    default:
        return u->scr;
    }
}

static void reg_write(struct kvm_uart *u, unsigned r, uint8_t v)
{
    switch (r) {
    case RBR:
        if (u->lcr & LCR_DLAB) {
            u->dll = v;
            break;
        }
        /* THR fills (the line drops), then empties at once: a fresh edge per byte */
        u->thri = 0;
        update_irq(u);
        if (u->mcr & MCR_LOOP) {
            if (!rx_push(u, v))
                u->lsr_err |= LSR_OE;
        } else {
            emit(u, v);
        }
        u->thri = 1;
        break;
    case IER:
        if (u->lcr & LCR_DLAB) {
            u->dlm = v;
            break;
        }
        /* enabling the THR-empty interrupt while THR is empty raises it (16550) */
        if ((v & IER_THRI) && !(u->ier & IER_THRI))
            u->thri = 1;
        else if (!(v & IER_THRI))
            u->thri = 0;
        u->ier = v & 0x0f;
        break;
    case IIR: /* FCR */
        if ((v ^ u->fcr) & FCR_ENABLE)
            u->rx_len = 0; /* switching the FIFOs on or off empties them */
        if (v & FCR_CLEAR_RX)
            u->rx_len = 0;
        u->fcr = v & 0xc9;
        break;
    case LCR:
        u->lcr = v;
        break;
    case MCR:
        set_mcr(u, v);
        break;
    case LSR:
    case MSR:
        break; /* read-only (factory test registers on real parts) */
    default:
        u->scr = v;
    }
}

/* Any size, any port of the range: byte-wide like the ISA bus splits it, and bytes past
 * the 8 registers read as all ones and write nowhere. */
static int uart_access(void *opaque, int space, uint64_t addr, uint8_t *data, unsigned size,
                  int is_write)
{
    struct kvm_uart *u = opaque;
    for (unsigned i = 0; i < size; i++) {
        uint64_t off = addr + i - u->base;
        if (addr + i < u->base || off >= KVM_UART_PORTS || u->closed) {
            if (!is_write)
                data[i] = 0xff;
            continue;
        }
        if (is_write)
            reg_write(u, (unsigned)off, data[i]);
        else
            data[i] = reg_read(u, (unsigned)off);
    }
    update_irq(u);
    return KVM_VMM_IO_DONE;
}

const struct kvm_io_ops kvm_uart_ops = {.access = uart_access, .release = uart_release};
