/* Vector table and reset handler for the mps2 boards under QEMU: enable the
 * FPU when the build uses one, then newlib's rdimon _start (zeroes .bss,
 * sets up semihosting, runs main, exits with its return value). */
#include <stdint.h>

extern uint32_t __StackTop;
extern void _start(void);
extern void _exit(int code);

void Reset_Handler(void);
static void Fault_Handler(void);

/* A fault ends the run with exit code 70 (the host reports it). */
static void Fault_Handler(void) {
    _exit(70);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__StackTop),
    Reset_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
    Fault_Handler,
    0,
    0,
    0,
    0,
    Fault_Handler,
    Fault_Handler,
    0,
    Fault_Handler,
    Fault_Handler,
};

void Reset_Handler(void) {
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88 |= (0xFu << 20);
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    _start();
}
