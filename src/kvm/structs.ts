/**
 * Codecs for the KVM structs memvisor passes through ioctls, little-endian x86-64 layouts from
 * linux/kvm.h and asm/kvm.h. Each struct has a size constant (asserted by structs.test.ts) and
 * an encode/decode pair between a plain object and the bytes the kernel reads or writes.
 */

/** sizeof(struct kvm_regs): 18 u64 registers. */
export const KVM_REGS_SIZE = 18 * 8;
/** sizeof(struct kvm_segment). */
export const KVM_SEGMENT_SIZE = 24;
/** sizeof(struct kvm_dtable). */
export const KVM_DTABLE_SIZE = 16;
/** sizeof(struct kvm_sregs): 8 segments, 2 tables, 7 control u64s, 4 u64 interrupt bitmap. */
export const KVM_SREGS_SIZE = 8 * KVM_SEGMENT_SIZE + 2 * KVM_DTABLE_SIZE + 7 * 8 + 4 * 8;
/** sizeof(struct kvm_fpu). */
export const KVM_FPU_SIZE = 416;
/** sizeof(struct kvm_userspace_memory_region). */
export const KVM_USERSPACE_MEMORY_REGION_SIZE = 32;
/** sizeof(struct kvm_cpuid2) without entries, and of one struct kvm_cpuid_entry2. */
export const KVM_CPUID2_HEADER_SIZE = 8;
export const KVM_CPUID_ENTRY2_SIZE = 40;
/** sizeof(struct kvm_msrs) without entries, and of one struct kvm_msr_entry. */
export const KVM_MSRS_HEADER_SIZE = 8;
export const KVM_MSR_ENTRY_SIZE = 16;
/** sizeof(struct kvm_lapic_state): the APIC register page as KVM shows it. */
export const KVM_LAPIC_STATE_SIZE = 1024;
/** sizeof(struct kvm_pit_config). */
export const KVM_PIT_CONFIG_SIZE = 64;
/** sizeof(struct kvm_irq_level). */
export const KVM_IRQ_LEVEL_SIZE = 8;
/** sizeof(struct kvm_irqfd). */
export const KVM_IRQFD_SIZE = 32;
/** sizeof(struct kvm_ioeventfd). */
export const KVM_IOEVENTFD_SIZE = 64;
/** sizeof(struct kvm_irqchip): chip id, padding, and a 512-byte union of chip states. */
export const KVM_IRQCHIP_SIZE = 520;
/** sizeof(struct kvm_pit_state2). */
export const KVM_PIT_STATE2_SIZE = 112;
/** KVM_IRQCHIP_* chip ids of struct kvm_irqchip. */
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;
/** sizeof(struct kvm_mp_state). */
export const KVM_MP_STATE_SIZE = 4;

// struct kvm_regs, in declaration order.
const REG_NAMES = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rsp',
  'rbp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rip',
  'rflags',
] as const;

/** General-purpose registers (struct kvm_regs). */
export type Regs = Record<(typeof REG_NAMES)[number], bigint>;

/** A `Regs` with every register zero except the reserved rflags bit 1, which reads as one. */
export function emptyRegs(): Regs {
  const r = Object.fromEntries(REG_NAMES.map((n) => [n, 0n])) as Regs;
  r.rflags = 2n;
  return r;
}

export function encodeRegs(r: Regs): Uint8Array {
  const b = new Uint8Array(KVM_REGS_SIZE);
  const v = new DataView(b.buffer);
  REG_NAMES.forEach((n, i) => v.setBigUint64(i * 8, r[n], true));
  return b;
}

export function decodeRegs(b: Uint8Array): Regs {
  const v = view(b, KVM_REGS_SIZE);
  return Object.fromEntries(REG_NAMES.map((n, i) => [n, v.getBigUint64(i * 8, true)])) as Regs;
}

/** A segment register as KVM holds it, descriptor cache included (struct kvm_segment). */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** A descriptor table register (struct kvm_dtable). */
export interface DTable {
  base: bigint;
  limit: number;
}

const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;

/** Special registers (struct kvm_sregs). */
export type Sregs = Record<(typeof SEGMENT_NAMES)[number], Segment> & {
  gdt: DTable;
  idt: DTable;
  /** The pending external interrupt bitmap, 256 bits as four u64 words. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
} & Record<(typeof CONTROL_NAMES)[number], bigint>;

// Byte offsets inside struct kvm_sregs.
const SREGS_GDT = 8 * KVM_SEGMENT_SIZE;
const SREGS_IDT = SREGS_GDT + KVM_DTABLE_SIZE;
const SREGS_CR0 = SREGS_IDT + KVM_DTABLE_SIZE;
const SREGS_INTERRUPT_BITMAP = SREGS_CR0 + CONTROL_NAMES.length * 8;

// Byte offsets inside struct kvm_segment.
const SEG_BASE = 0;
const SEG_LIMIT = 8;
const SEG_SELECTOR = 12;
const SEG_FLAG_BYTES = ['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const;
const SEG_TYPE = 14;

function encodeSegment(v: DataView, at: number, s: Segment): void {
  v.setBigUint64(at + SEG_BASE, s.base, true);
  v.setUint32(at + SEG_LIMIT, s.limit >>> 0, true);
  v.setUint16(at + SEG_SELECTOR, s.selector, true);
  SEG_FLAG_BYTES.forEach((n, i) => v.setUint8(at + SEG_TYPE + i, s[n]));
}

function decodeSegment(v: DataView, at: number): Segment {
  const s = {
    base: v.getBigUint64(at + SEG_BASE, true),
    limit: v.getUint32(at + SEG_LIMIT, true),
    selector: v.getUint16(at + SEG_SELECTOR, true),
  } as Segment;
  SEG_FLAG_BYTES.forEach((n, i) => {
    s[n] = v.getUint8(at + SEG_TYPE + i);
  });
  return s;
}

export function encodeSregs(s: Sregs): Uint8Array {
  const b = new Uint8Array(KVM_SREGS_SIZE);
  const v = new DataView(b.buffer);
  SEGMENT_NAMES.forEach((n, i) => encodeSegment(v, i * KVM_SEGMENT_SIZE, s[n]));
  for (const [at, t] of [
    [SREGS_GDT, s.gdt],
    [SREGS_IDT, s.idt],
  ] as const) {
    v.setBigUint64(at, t.base, true);
    v.setUint16(at + 8, t.limit, true);
  }
  CONTROL_NAMES.forEach((n, i) => v.setBigUint64(SREGS_CR0 + i * 8, s[n], true));
  s.interruptBitmap.forEach((w, i) => v.setBigUint64(SREGS_INTERRUPT_BITMAP + i * 8, w, true));
  return b;
}

export function decodeSregs(b: Uint8Array): Sregs {
  const v = view(b, KVM_SREGS_SIZE);
  const table = (at: number): DTable => ({
    base: v.getBigUint64(at, true),
    limit: v.getUint16(at + 8, true),
  });
  const s = {
    gdt: table(SREGS_GDT),
    idt: table(SREGS_IDT),
    interruptBitmap: [0, 1, 2, 3].map((i) =>
      v.getBigUint64(SREGS_INTERRUPT_BITMAP + i * 8, true),
    ) as Sregs['interruptBitmap'],
  } as Sregs;
  SEGMENT_NAMES.forEach((n, i) => {
    s[n] = decodeSegment(v, i * KVM_SEGMENT_SIZE);
  });
  CONTROL_NAMES.forEach((n, i) => {
    s[n] = v.getBigUint64(SREGS_CR0 + i * 8, true);
  });
  return s;
}

// Byte offsets inside struct kvm_fpu.
const FPU_FCW = 128;
const FPU_MXCSR = 408;

/**
 * The x87/SSE state fields a boot sets (struct kvm_fpu): the control word and MXCSR. The
 * remaining fields (registers, tags, last instruction pointers) are zero in a reset state.
 */
export interface Fpu {
  fcw: number;
  mxcsr: number;
}

export function encodeFpu(f: Fpu): Uint8Array {
  const b = new Uint8Array(KVM_FPU_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(FPU_FCW, f.fcw, true);
  v.setUint32(FPU_MXCSR, f.mxcsr, true);
  return b;
}

export function decodeFpu(b: Uint8Array): Fpu {
  const v = view(b, KVM_FPU_SIZE);
  return { fcw: v.getUint16(FPU_FCW, true), mxcsr: v.getUint32(FPU_MXCSR, true) };
}

/** One CPUID leaf/subleaf (struct kvm_cpuid_entry2). */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

const CPUID_FIELDS = ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const;

/** struct kvm_cpuid2 with its entries. */
export function encodeCpuid2(entries: readonly CpuidEntry[]): Uint8Array {
  const b = new Uint8Array(KVM_CPUID2_HEADER_SIZE + entries.length * KVM_CPUID_ENTRY2_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const at = KVM_CPUID2_HEADER_SIZE + i * KVM_CPUID_ENTRY2_SIZE;
    CPUID_FIELDS.forEach((n, j) => v.setUint32(at + j * 4, e[n] >>> 0, true));
  });
  return b;
}

/** The `nent` entries of a struct kvm_cpuid2. */
export function decodeCpuid2(b: Uint8Array): CpuidEntry[] {
  const v = view(b, KVM_CPUID2_HEADER_SIZE);
  const nent = v.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < nent; i++) {
    const at = KVM_CPUID2_HEADER_SIZE + i * KVM_CPUID_ENTRY2_SIZE;
    if (at + KVM_CPUID_ENTRY2_SIZE > b.length) break;
    const e = {} as CpuidEntry;
    CPUID_FIELDS.forEach((n, j) => {
      e[n] = v.getUint32(at + j * 4, true);
    });
    out.push(e);
  }
  return out;
}

/** One model-specific register (struct kvm_msr_entry). */
export interface MsrEntry {
  index: number;
  data: bigint;
}

/** struct kvm_msrs with its entries. */
export function encodeMsrs(entries: readonly MsrEntry[]): Uint8Array {
  const b = new Uint8Array(KVM_MSRS_HEADER_SIZE + entries.length * KVM_MSR_ENTRY_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const at = KVM_MSRS_HEADER_SIZE + i * KVM_MSR_ENTRY_SIZE;
    v.setUint32(at, e.index >>> 0, true);
    v.setBigUint64(at + 8, e.data, true);
  });
  return b;
}

/** The first `count` entries of a struct kvm_msrs (KVM_GET_MSRS returns how many it read). */
export function decodeMsrs(b: Uint8Array, count: number): MsrEntry[] {
  const v = view(b, KVM_MSRS_HEADER_SIZE);
  const out: MsrEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = KVM_MSRS_HEADER_SIZE + i * KVM_MSR_ENTRY_SIZE;
    out.push({ index: v.getUint32(at, true), data: v.getBigUint64(at + 8, true) });
  }
  return out;
}

/** struct kvm_userspace_memory_region. */
export interface MemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
}

export function encodeMemoryRegion(r: MemoryRegion): Uint8Array {
  const b = new Uint8Array(KVM_USERSPACE_MEMORY_REGION_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, r.slot, true);
  v.setUint32(4, r.flags, true);
  v.setBigUint64(8, r.guestPhysAddr, true);
  v.setBigUint64(16, r.memorySize, true);
  v.setBigUint64(24, r.userspaceAddr, true);
  return b;
}

/** struct kvm_irq_level: a GSI and the level to drive it to. */
export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const b = new Uint8Array(KVM_IRQ_LEVEL_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, irq, true);
  v.setUint32(4, level, true);
  return b;
}

/** KVM_IRQFD flag that detaches an eventfd from its GSI. */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;

/** struct kvm_irqfd (no resample fd). */
export function encodeIrqfd(fd: number, gsi: number, flags = 0): Uint8Array {
  const b = new Uint8Array(KVM_IRQFD_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, fd, true);
  v.setUint32(4, gsi, true);
  v.setUint32(8, flags, true);
  return b;
}

/** KVM_IOEVENTFD flags. */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

/** struct kvm_ioeventfd. */
export interface IoEventFd {
  datamatch: bigint;
  addr: bigint;
  len: number;
  fd: number;
  flags: number;
}

export function encodeIoEventFd(e: IoEventFd): Uint8Array {
  const b = new Uint8Array(KVM_IOEVENTFD_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, e.datamatch, true);
  v.setBigUint64(8, e.addr, true);
  v.setUint32(16, e.len, true);
  v.setInt32(20, e.fd, true);
  v.setUint32(24, e.flags, true);
  return b;
}

/** KVM_PIT_SPEAKER_DUMMY: KVM emulates the PC speaker port 0x61 as a dummy. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** struct kvm_pit_config. */
export function encodePitConfig(flags: number): Uint8Array {
  const b = new Uint8Array(KVM_PIT_CONFIG_SIZE);
  new DataView(b.buffer).setUint32(0, flags, true);
  return b;
}

/** KVM_MP_STATE_* values of struct kvm_mp_state. */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;

/** Local APIC register offsets in struct kvm_lapic_state (the xAPIC MMIO page layout). */
export const APIC_LVT_LINT0 = 0x350;
export const APIC_LVT_LINT1 = 0x360;
/** LVT delivery mode field, bits 8-10, and the two modes the BSP's LINT pins use. */
const APIC_LVT_DELIVERY_MODE_MASK = 0x700;
export const APIC_DELIVERY_MODE_NMI = 0x4 << 8;
export const APIC_DELIVERY_MODE_EXTINT = 0x7 << 8;

/**
 * Wires the BSP's LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as firmware does on a PC, in a
 * struct kvm_lapic_state read with KVM_GET_LAPIC. Changes `state` in place.
 */
export function setLapicLint(state: Uint8Array): void {
  const v = view(state, KVM_LAPIC_STATE_SIZE);
  for (const [reg, mode] of [
    [APIC_LVT_LINT0, APIC_DELIVERY_MODE_EXTINT],
    [APIC_LVT_LINT1, APIC_DELIVERY_MODE_NMI],
  ] as const) {
    const old = v.getUint32(reg, true);
    v.setUint32(reg, (old & ~APIC_LVT_DELIVERY_MODE_MASK) | mode, true);
  }
}

function view(b: Uint8Array, min: number): DataView {
  if (b.length < min) throw new RangeError(`struct needs ${min} bytes, got ${b.length}`);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
