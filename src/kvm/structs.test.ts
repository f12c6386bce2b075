import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ioctl from './ioctl.js';
import {
  RUN_EXIT_REASON,
  RUN_IO_DATA_OFFSET,
  RUN_IO_PORT,
  RUN_MMIO_IS_WRITE,
  RUN_MMIO_LEN,
} from './run.js';
import {
  APIC_LVT_LINT0,
  APIC_LVT_LINT1,
  KVM_CPUID2_HEADER_SIZE,
  KVM_CPUID_ENTRY2_SIZE,
  KVM_FPU_SIZE,
  KVM_IOEVENTFD_SIZE,
  KVM_IRQCHIP_SIZE,
  KVM_IRQFD_SIZE,
  KVM_IRQ_LEVEL_SIZE,
  KVM_LAPIC_STATE_SIZE,
  KVM_MSRS_HEADER_SIZE,
  KVM_MSR_ENTRY_SIZE,
  KVM_PIT_CONFIG_SIZE,
  KVM_PIT_STATE2_SIZE,
  KVM_REGS_SIZE,
  KVM_SEGMENT_SIZE,
  KVM_SREGS_SIZE,
  KVM_USERSPACE_MEMORY_REGION_SIZE,
  decodeCpuid2,
  decodeFpu,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  emptyRegs,
  encodeCpuid2,
  encodeFpu,
  encodeIrqLevel,
  encodeIrqfd,
  encodeMemoryRegion,
  encodeMsrs,
  encodeRegs,
  encodeSregs,
  setLapicLint,
} from './structs.js';

test('struct sizes match linux/kvm.h on x86-64', () => {
  assert.equal(KVM_REGS_SIZE, 144);
  assert.equal(KVM_SREGS_SIZE, 312);
  assert.equal(KVM_SEGMENT_SIZE, 24);
  assert.equal(KVM_FPU_SIZE, 416);
  assert.equal(KVM_USERSPACE_MEMORY_REGION_SIZE, 32);
  assert.equal(KVM_CPUID2_HEADER_SIZE, 8);
  assert.equal(KVM_CPUID_ENTRY2_SIZE, 40);
  assert.equal(KVM_MSRS_HEADER_SIZE, 8);
  assert.equal(KVM_MSR_ENTRY_SIZE, 16);
  assert.equal(KVM_LAPIC_STATE_SIZE, 1024);
  assert.equal(KVM_PIT_CONFIG_SIZE, 64);
  assert.equal(KVM_IRQ_LEVEL_SIZE, 8);
  assert.equal(KVM_IRQFD_SIZE, 32);
  assert.equal(KVM_IOEVENTFD_SIZE, 64);
  assert.equal(KVM_IRQCHIP_SIZE, 520);
  assert.equal(KVM_PIT_STATE2_SIZE, 112);
});

test('kvm_run offsets match linux/kvm.h', () => {
  assert.equal(RUN_EXIT_REASON, 8);
  assert.equal(RUN_IO_PORT, 34);
  assert.equal(RUN_IO_DATA_OFFSET, 40);
  assert.equal(RUN_MMIO_LEN, 48);
  assert.equal(RUN_MMIO_IS_WRITE, 52);
});

test('ioctl numbers equal the values the C headers give', () => {
  // Printed by a C program including <linux/kvm.h> on Debian bookworm.
  const expected: Record<string, number> = {
    KVM_GET_API_VERSION: 0xae00,
    KVM_CREATE_VM: 0xae01,
    KVM_CHECK_EXTENSION: 0xae03,
    KVM_GET_VCPU_MMAP_SIZE: 0xae04,
    KVM_GET_SUPPORTED_CPUID: 0xc008ae05,
    KVM_GET_MSR_INDEX_LIST: 0xc004ae02,
    KVM_CREATE_VCPU: 0xae41,
    KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
    KVM_SET_TSS_ADDR: 0xae47,
    KVM_SET_IDENTITY_MAP_ADDR: 0x4008ae48,
    KVM_CREATE_IRQCHIP: 0xae60,
    KVM_IRQ_LINE: 0x4008ae61,
    KVM_GET_IRQCHIP: 0xc208ae62,
    KVM_SET_IRQCHIP: 0x8208ae63,
    KVM_IRQFD: 0x4020ae76,
    KVM_CREATE_PIT2: 0x4040ae77,
    KVM_IOEVENTFD: 0x4040ae79,
    KVM_GET_PIT2: 0x8070ae9f,
    KVM_SET_PIT2: 0x4070aea0,
    KVM_RUN: 0xae80,
    KVM_GET_REGS: 0x8090ae81,
    KVM_SET_REGS: 0x4090ae82,
    KVM_GET_SREGS: 0x8138ae83,
    KVM_SET_SREGS: 0x4138ae84,
    KVM_GET_MSRS: 0xc008ae88,
    KVM_SET_MSRS: 0x4008ae89,
    KVM_GET_FPU: 0x81a0ae8c,
    KVM_SET_FPU: 0x41a0ae8d,
    KVM_GET_LAPIC: 0x8400ae8e,
    KVM_SET_LAPIC: 0x4400ae8f,
    KVM_SET_CPUID2: 0x4008ae90,
    KVM_GET_MP_STATE: 0x8004ae98,
    KVM_SET_MP_STATE: 0x4004ae99,
  };
  for (const [name, value] of Object.entries(expected)) {
    assert.equal((ioctl as Record<string, unknown>)[name], value, name);
  }
});

test('kvm_regs round-trips and puts rip at byte 128', () => {
  const r = emptyRegs();
  r.rax = 0x1122334455667788n;
  r.rip = 0xffffffff81000000n;
  r.r15 = 7n;
  const b = encodeRegs(r);
  assert.equal(new DataView(b.buffer).getBigUint64(128, true), 0xffffffff81000000n);
  assert.equal(new DataView(b.buffer).getBigUint64(136, true), 2n);
  assert.deepEqual(decodeRegs(b), r);
});

test('kvm_sregs round-trips with segment fields at their offsets', () => {
  const seg = (selector: number) => ({
    base: 0n,
    limit: 0xffffffff,
    selector,
    type: 11,
    present: 1,
    dpl: 0,
    db: 0,
    s: 1,
    l: 1,
    g: 1,
    avl: 0,
    unusable: 0,
  });
  const s = {
    cs: seg(8),
    ds: seg(16),
    es: seg(16),
    fs: seg(16),
    gs: seg(16),
    ss: seg(16),
    tr: seg(24),
    ldt: seg(0),
    gdt: { base: 0x500n, limit: 31 },
    idt: { base: 0x520n, limit: 7 },
    cr0: 0x80000011n,
    cr2: 0n,
    cr3: 0x9000n,
    cr4: 0x20n,
    cr8: 0n,
    efer: 0x500n,
    apicBase: 0xfee00900n,
    interruptBitmap: [1n, 0n, 0n, 1n << 63n] as [bigint, bigint, bigint, bigint],
  };
  const b = encodeSregs(s);
  const v = new DataView(b.buffer);
  assert.equal(v.getUint16(12, true), 8, 'cs.selector');
  assert.equal(v.getUint8(14), 11, 'cs.type');
  assert.equal(v.getUint8(19), 1, 'cs.l');
  assert.equal(v.getBigUint64(192, true), 0x500n, 'gdt.base');
  assert.equal(v.getUint16(200, true), 31, 'gdt.limit');
  assert.equal(v.getBigUint64(224, true), 0x80000011n, 'cr0');
  assert.equal(v.getBigUint64(240, true), 0x9000n, 'cr3');
  assert.equal(v.getBigUint64(264, true), 0x500n, 'efer');
  assert.equal(v.getBigUint64(304, true), 1n << 63n, 'interrupt_bitmap[3]');
  assert.deepEqual(decodeSregs(b), s);
});

test('kvm_fpu puts fcw at 128 and mxcsr at 408', () => {
  const b = encodeFpu({ fcw: 0x37f, mxcsr: 0x1f80 });
  assert.equal(b[128], 0x7f);
  assert.equal(b[129], 0x03);
  assert.equal(new DataView(b.buffer).getUint32(408, true), 0x1f80);
  assert.deepEqual(decodeFpu(b), { fcw: 0x37f, mxcsr: 0x1f80 });
});

test('kvm_cpuid2 and kvm_msrs carry their counts and entries', () => {
  const entries = [
    {
      function: 0,
      index: 0,
      flags: 0,
      eax: 0xd,
      ebx: 0x68747541,
      ecx: 0x444d4163,
      edx: 0x69746e65,
    },
    { function: 7, index: 1, flags: 1, eax: 1, ebx: 2, ecx: 3, edx: 0xffffffff },
  ];
  const c = encodeCpuid2(entries);
  assert.equal(c.length, 8 + 2 * 40);
  assert.equal(new DataView(c.buffer).getUint32(0, true), 2);
  assert.equal(new DataView(c.buffer).getUint32(8 + 40, true), 7);
  assert.deepEqual(decodeCpuid2(c), entries);

  const msrs = [
    { index: 0xc0000080, data: 0xd01n },
    { index: 0x2ff, data: 0x806n },
  ];
  const m = encodeMsrs(msrs);
  assert.equal(m.length, 8 + 2 * 16);
  assert.equal(new DataView(m.buffer).getUint32(8, true), 0xc0000080);
  assert.deepEqual(decodeMsrs(m, 2), msrs);
});

test('memory region, irq level and irqfd encode field by field', () => {
  const r = encodeMemoryRegion({
    slot: 3,
    flags: 2,
    guestPhysAddr: 0x100000000n,
    memorySize: 0x40000000n,
    userspaceAddr: 0x7f0012340000n,
  });
  const v = new DataView(r.buffer);
  assert.deepEqual(
    [v.getUint32(0, true), v.getUint32(4, true), v.getBigUint64(8, true)],
    [3, 2, 0x100000000n],
  );
  assert.equal(v.getBigUint64(16, true), 0x40000000n);
  assert.equal(v.getBigUint64(24, true), 0x7f0012340000n);
  assert.deepEqual([...encodeIrqLevel(4, 1)], [4, 0, 0, 0, 1, 0, 0, 0]);
  const f = encodeIrqfd(9, 5, 1);
  assert.deepEqual([...f.subarray(0, 12)], [9, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0]);
});

test('setLapicLint sets ExtINT on LINT0 and NMI on LINT1, keeping other bits', () => {
  const lapic = new Uint8Array(KVM_LAPIC_STATE_SIZE);
  const v = new DataView(lapic.buffer);
  v.setUint32(APIC_LVT_LINT0, 0x10000, true);
  v.setUint32(APIC_LVT_LINT1, 0x10700, true);
  setLapicLint(lapic);
  assert.equal(v.getUint32(APIC_LVT_LINT0, true), 0x10700);
  assert.equal(v.getUint32(APIC_LVT_LINT1, true), 0x10400);
});
