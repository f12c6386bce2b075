/**
 * Model-specific registers the boot vCPU starts with. The kernel programs the syscall MSRs
 * itself; zeroing them gives every vCPU, and every reboot, the same known starting point.
 */

// MSR numbers (Intel SDM vol. 4, table 2-2; AMD APM vol. 2, appendix A).
export const MSR_IA32_TSC = 0x10;
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_MTRR_DEF_TYPE = 0x2ff;
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;
export const MSR_KERNEL_GS_BASE = 0xc0000102;

// KVM's paravirtual MSRs that hold a guest-physical address KVM writes to (Linux's
// Documentation/virt/kvm/x86/msr.rst): kvmclock (both numbers), async page fault, steal time,
// paravirtual EOI.
export const MSR_KVM_SYSTEM_TIME = 0x12;
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;
export const MSR_KVM_ASYNC_PF_EN = 0x4b564d02;
export const MSR_KVM_STEAL_TIME = 0x4b564d03;
export const MSR_KVM_PV_EOI_EN = 0x4b564d04;

/** IA32_MISC_ENABLE bit 0: fast-string operations (REP MOVS/STOS) enabled. */
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1n << 0n;
/** IA32_MTRR_DEF_TYPE bit 11: MTRRs enabled. */
export const MTRR_ENABLE = 1n << 11n;
/** Memory type write-back, the default for memory no variable MTRR covers. */
export const MTRR_MEM_TYPE_WB = 6n;

/** One MSR write, as a `struct kvm_msr_entry` carries it. */
export interface MsrEntry {
  index: number;
  data: bigint;
}

/**
 * The paravirtual MSRs, all off, for every boot. KVM keeps writing the clock, steal time and
 * the other areas a guest registered until they are switched off, and a reset does not do that:
 * after a reboot it wrote into the new kernel, placed elsewhere by KASLR, which then hung in
 * early boot (one reset in two, in the box). A KVM without one of them refuses its write; the
 * guest cannot have enabled it either, so each is written on its own and a refusal is fine.
 */
export function pvMsrsOff(): MsrEntry[] {
  return [
    MSR_KVM_SYSTEM_TIME,
    MSR_KVM_SYSTEM_TIME_NEW,
    MSR_KVM_ASYNC_PF_EN,
    MSR_KVM_STEAL_TIME,
    MSR_KVM_PV_EOI_EN,
  ].map((index) => ({ index, data: 0n }));
}

/** The MSRs to set on each vCPU before its first run. */
export function bootMsrs(): MsrEntry[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MSR_IA32_MISC_ENABLE_FAST_STRING },
    // Without MTRRs enabled Linux treats all memory as uncached.
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE | MTRR_MEM_TYPE_WB },
  ];
}
