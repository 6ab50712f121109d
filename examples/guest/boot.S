/* Multiboot v1 entry, GDT and interrupt stubs for the luavfio guest test program. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, want memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .globl _start
_start:
    cli
    mov $stack_top, %esp
    /* The loader's GDT is undefined after multiboot entry: load ours. */
    lgdt gdt_desc
    ljmp $0x08, $1f
1:  mov $0x10, %cx
    mov %cx, %ds
    mov %cx, %es
    mov %cx, %fs
    mov %cx, %gs
    mov %cx, %ss
    push %ebx               /* multiboot info */
    push %eax               /* multiboot magic */
    call guest_main
2:  cli
    hlt
    jmp 2b

/* 256 stubs, 16 bytes apart, each pushing its vector; exceptions that push an error
 * code never return (the C side reports them and stops), so one layout suffices. */
    .align 16
    .globl isr_table
isr_table:
    .set vec, 0
    .rept 256
    .align 16
    pushl $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    pusha
    cld
    mov 32(%esp), %eax
    push %eax
    call isr_dispatch
    add $4, %esp
    popa
    add $4, %esp
    iret

    .section .rodata
    .align 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF  /* 0x08: flat 32-bit code */
    .quad 0x00CF92000000FFFF  /* 0x10: flat data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt

    .bss
    .align 16
    .space 16384
stack_top:
    .section .note.GNU-stack, "", @progbits
