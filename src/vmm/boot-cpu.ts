/**
 * Turns the x86 loader's entry state (`BootCpuState`) into the KVM register structs of the boot
 * vCPU, and gives the reset-time x87/SSE state every vCPU starts with.
 */
import type { BootCpuState, SegmentState } from '../arch/x86/boot.js';
import { type Fpu, type Regs, type Segment, type Sregs, emptyRegs } from '../kvm/structs.js';

/** FCW after FNINIT: all exceptions masked, 64-bit precision, round to nearest. */
export const FPU_FCW_DEFAULT = 0x37f;
/** MXCSR at reset: all SIMD exceptions masked. */
export const MXCSR_DEFAULT = 0x1f80;

/** The x87/SSE state of a vCPU at reset. */
export function resetFpu(): Fpu {
  return { fcw: FPU_FCW_DEFAULT, mxcsr: MXCSR_DEFAULT };
}

function segment(s: SegmentState): Segment {
  return {
    base: BigInt(s.base),
    limit: s.limit,
    selector: s.selector,
    type: s.type,
    present: s.present,
    dpl: s.dpl,
    db: s.db,
    s: s.s,
    l: s.l,
    g: s.g,
    avl: s.avl,
    unusable: s.present ? 0 : 1,
  };
}

/** The general-purpose registers at the kernel's 64-bit entry. */
export function bootRegs(state: BootCpuState): Regs {
  const r = emptyRegs();
  r.rip = BigInt(state.rip);
  r.rsp = BigInt(state.rsp);
  r.rbp = BigInt(state.rbp);
  r.rsi = BigInt(state.rsi);
  r.rflags = BigInt(state.rflags);
  return r;
}

/**
 * The special registers at the kernel's 64-bit entry, on top of the vCPU's current ones so that
 * what the loader does not decide (APIC base, CR8, pending interrupts) keeps KVM's values.
 */
export function bootSregs(current: Sregs, state: BootCpuState): Sregs {
  return {
    ...current,
    cs: segment(state.cs),
    ds: segment(state.ds),
    es: segment(state.es),
    fs: segment(state.fs),
    gs: segment(state.gs),
    ss: segment(state.ss),
    tr: segment(state.tr),
    ldt: segment(state.ldt),
    gdt: { base: BigInt(state.gdt.base), limit: state.gdt.limit },
    idt: { base: BigInt(state.idt.base), limit: state.idt.limit },
    cr0: BigInt(state.cr0),
    cr3: BigInt(state.cr3),
    cr4: BigInt(state.cr4),
    efer: BigInt(state.efer),
  };
}
