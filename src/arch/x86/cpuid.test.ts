import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CpuidEntry } from '../../kvm/structs.js';
import { filterCpuid } from './cpuid.js';

function leaf(fn: number, index: number, regs: Partial<CpuidEntry> = {}): CpuidEntry {
  const flags = [4, 0xb, 0x1f].includes(fn) ? 1 : 0;
  return { function: fn, index, flags, eax: 0, ebx: 0, ecx: 0, edx: 0, ...regs };
}

/** A trimmed KVM_GET_SUPPORTED_CPUID answer from an AMD host. */
function amdSupported(): CpuidEntry[] {
  return [
    leaf(0, 0, { eax: 0x1f, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 }),
    // ECX: SSE3 | MONITOR | SSSE3 | x2APIC | (no hypervisor bit); EDX: FPU | CLFSH.
    leaf(1, 0, { eax: 0x00a20f12, ebx: 0x0003_0000 | 0x07, ecx: 0x0020_0209, edx: 0x0008_0001 }),
    leaf(4, 0, { eax: 0x0000_0121, ebx: 0x01c0003f }),
    leaf(4, 1, { eax: 0x0000_0122 }),
    leaf(4, 2, { eax: 0x0000_0143 }),
    leaf(4, 3, { eax: 0x0000_0163 }),
    leaf(4, 4, { eax: 0 }),
    leaf(5, 0, { eax: 0x40, ebx: 0x40, ecx: 3, edx: 0x11142120 }),
    leaf(0xb, 0, { eax: 1, ebx: 2, ecx: 0x100, edx: 7 }),
    leaf(0xb, 1, { eax: 4, ebx: 16, ecx: 0x201, edx: 7 }),
    leaf(0xb, 2, { eax: 0, ebx: 0, ecx: 0x2, edx: 7 }),
    leaf(0x1f, 1, { eax: 4, ebx: 16, ecx: 0x201, edx: 7 }),
    leaf(0x40000000, 0, { eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d }),
    leaf(0x40000001, 0, { eax: 0x01007afb }),
    // ECX: LAHF | SVM | TOPOEXT | MONITORX.
    leaf(0x80000001, 0, { ecx: 0x2040_0005, edx: 0x2c100800 }),
    leaf(0x80000008, 0, { eax: 0x3030, ecx: 0x0000_700f }),
    leaf(0x8000001e, 0, { eax: 9, ebx: 0x0109, ecx: 0x0301, edx: 5 }),
  ];
}

function find(entries: CpuidEntry[], fn: number, index = 0): CpuidEntry {
  const e = entries.find((x) => x.function === fn && x.index === index);
  assert.ok(e, `leaf 0x${fn.toString(16)}.${index}`);
  return e;
}

describe('filterCpuid', () => {
  it('puts the APIC id, CLFLUSH size and logical count in leaf 1', () => {
    const out = filterCpuid(amdSupported(), { id: 3, count: 4 });
    const l1 = find(out, 1);
    assert.equal(l1.ebx, 0x0304_0807);
    assert.equal(l1.eax, 0x00a20f12);
    // Hypervisor set, MONITOR cleared, the rest kept.
    assert.equal(l1.ecx, 0x8020_0201);
    assert.equal(l1.edx, 0x1008_0001);
  });

  it('leaves HTT clear and adds TSC-deadline only when asked', () => {
    const single = find(filterCpuid(amdSupported(), { id: 0, count: 1 }), 1);
    assert.equal(single.edx & (1 << 28), 0);
    assert.equal(single.ecx & (1 << 24), 0);
    const withDeadline = find(
      filterCpuid(amdSupported(), { id: 0, count: 1 }, { tscDeadline: true }),
      1,
    );
    assert.equal(withDeadline.ecx, 0x8120_0201);
  });

  it('describes one thread per core and count cores in leaves 0xB and 0x1F', () => {
    const out = filterCpuid(amdSupported(), { id: 5, count: 6 });
    assert.deepEqual(find(out, 0xb, 0), leaf(0xb, 0, { eax: 0, ebx: 1, ecx: 0x100, edx: 5 }));
    assert.deepEqual(find(out, 0xb, 1), leaf(0xb, 1, { eax: 3, ebx: 6, ecx: 0x201, edx: 5 }));
    assert.deepEqual(find(out, 0xb, 2), leaf(0xb, 2, { eax: 0, ebx: 0, ecx: 0x2, edx: 5 }));
    assert.deepEqual(find(out, 0x1f, 1), leaf(0x1f, 1, { eax: 3, ebx: 6, ecx: 0x201, edx: 5 }));
  });

  it('sets cores per package and cache sharing in leaf 4', () => {
    const out = filterCpuid(amdSupported(), { id: 0, count: 4 });
    assert.equal(find(out, 4, 0).eax, (3 << 26) | 0x121);
    assert.equal(find(out, 4, 0).ebx, 0x01c0003f);
    assert.equal(find(out, 4, 2).eax, (3 << 26) | 0x143);
    assert.equal(find(out, 4, 3).eax, (3 << 26) | (3 << 14) | 0x163);
    assert.equal(find(out, 4, 4).eax, 0, 'the terminating subleaf stays null');
  });

  it('hides MONITOR/MWAIT and MONITORX', () => {
    const out = filterCpuid(amdSupported(), { id: 0, count: 2 });
    assert.deepEqual(find(out, 5), leaf(5, 0));
    assert.equal(find(out, 0x80000001).ecx, 0x0040_0007);
  });

  it('fills the AMD core count and extended APIC id leaves', () => {
    const out = filterCpuid(amdSupported(), { id: 2, count: 3 });
    assert.equal(find(out, 0x80000008).ecx, 0x0000_2002);
    assert.equal(find(out, 0x80000008).eax, 0x3030);
    assert.deepEqual(find(out, 0x8000001e), leaf(0x8000001e, 0, { eax: 2, ebx: 2 }));
  });

  it('keeps KVM leaves and does not touch its input', () => {
    const input = amdSupported();
    const out = filterCpuid(input, { id: 1, count: 2 });
    assert.deepEqual(find(out, 0x40000000), find(input, 0x40000000));
    assert.deepEqual(find(out, 0x40000001), find(input, 0x40000001));
    assert.deepEqual(input, amdSupported());
    assert.equal(out.length, input.length);
  });

  it('leaves AMD-only fields alone on Intel', () => {
    const intel = amdSupported().map((e) =>
      e.function === 0 ? { ...e, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 } : e,
    );
    const out = filterCpuid(intel, { id: 1, count: 2 });
    assert.equal(find(out, 0x80000008).ecx, 0x0000_700f);
    assert.equal(find(out, 0x80000001).ecx, 0x0040_0005);
  });
});
