/* uart_host pipe|release: the UART model (csrc/kvm/uart.c) without KVM.
 *
 *   pipe     streaming to a stdout whose reader has gone: the guest's bytes must not
 *            kill the process with SIGPIPE; streaming stops, the error is kept
 *            (stdout_errno EPIPE), the capture goes on.
 *   release  the range released (removed, or the VM closed) while the UART holds its IRQ
 *            line high: the line must go low, or the guest's IRQ stays asserted. This
 *            program's ioctl() stands in for KVM's and records KVM_IRQ_LINE.
 * Prints "ok: ..." on stderr and exits 0, else "FAIL: ..." and 1 (or dies of SIGPIPE). */
#include "kvm/uart.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int lines[32], calls;

/* KVM's stand-in: only KVM_IRQ_LINE on the fake VM fd is expected */
int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (fd == 100 && req == KVM_IRQ_LINE) {
        const struct kvm_irq_level *l = arg;
        if (l->irq < 32)
            lines[l->irq] = (int)l->level;
        calls++;
        return 0;
    }
    errno = ENOTTY;
    return -1;
}

static int pipe_mode(void)
{
    int p[2];
    if (pipe(p) < 0)
        return 2;
    close(p[0]);               /* no reader */
    dup2(p[1], 1);
    close(p[1]);
    static struct kvm_uart u;
    if (kvm_uart_init(&u, 4, 1, 64) < 0)
        return 2;
    kvm_uart_attach(&u, NULL, 0x3f8);   /* no VM: no IRQ line to drive */
    for (int i = 0; i < 4; i++) {
        uint8_t b = 'A';
        kvm_uart_ops.access(&u, KVM_VMM_PIO, 0x3f8, &b, 1, 1);
    }
    if (u.stdout_errno != EPIPE || u.to_stdout || u.cap_len != 4 ||
        memcmp(u.cap_buf, "AAAA", 4)) {
        fprintf(stderr, "FAIL: stdout_errno %d, streaming %d, %zu bytes captured\n",
                u.stdout_errno, u.to_stdout, u.cap_len);
        return 1;
    }
    fprintf(stderr, "ok: 4 bytes to a pipe with no reader: %s, streaming stopped, captured\n",
            strerror(u.stdout_errno));
    kvm_uart_close(&u);
    return 0;
}

static int release_mode(void)
{
    static struct kvm_vm vm = {.fd = 100, .irqchip = 1};
    static struct kvm_uart u;
    if (kvm_uart_init(&u, 4, 0, 0) < 0)
        return 2;
    kvm_uart_attach(&u, &vm, 0x3f8);
    uint8_t ier = 0x02;   /* THR-empty interrupt on: pending at once, the line goes high */
    kvm_uart_ops.access(&u, KVM_VMM_PIO, 0x3f9, &ier, 1, 1);
    if (lines[4] != 1) {
        fprintf(stderr, "FAIL: enabling THRI did not raise IRQ 4\n");
        return 1;
    }
    kvm_uart_ops.release(&u);   /* vm:remove_range, or the VM's close */
    if (lines[4] != 0) {
        fprintf(stderr, "FAIL: IRQ 4 left high after the UART's range was released\n");
        return 1;
    }
    fprintf(stderr, "ok: IRQ 4 raised, then lowered by the release (%d KVM_IRQ_LINE)\n",
            calls);
    kvm_uart_close(&u);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "pipe"))
        return pipe_mode();
    if (argc > 1 && !strcmp(argv[1], "release"))
        return release_mode();
    fprintf(stderr, "usage: uart_host pipe|release\n");
    return 2;
}
