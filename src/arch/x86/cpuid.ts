/**
 * The CPUID table a vCPU is given: KVM's supported entries, adjusted for this vCPU's APIC id
 * and the VM's topology (one thread per core, one package of `count` cores), with features
 * memvisor does not emulate taken out.
 */

import type { CpuidEntry } from '../../kvm/structs.js';

/** Which vCPU the table is for, and how many the VM has. */
export interface VcpuTopology {
  id: number;
  count: number;
}

/** Choices KVM reports outside KVM_GET_SUPPORTED_CPUID. */
export interface CpuidOptions {
  /** KVM_CAP_TSC_DEADLINE_TIMER with an in-kernel irqchip: advertise the TSC-deadline timer. */
  tscDeadline?: boolean;
}

/** kvm_cpuid_entry2.flags: the leaf's output depends on the subleaf in ECX. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

// Leaves (Intel SDM vol. 2A, CPUID; AMD APM vol. 3, appendix E).
export const CPUID_LEAF_VENDOR = 0x0;
export const CPUID_LEAF_FEATURES = 0x1;
export const CPUID_LEAF_CACHE_PARAMS = 0x4;
export const CPUID_LEAF_MONITOR = 0x5;
export const CPUID_LEAF_TOPOLOGY = 0xb;
export const CPUID_LEAF_TOPOLOGY_V2 = 0x1f;
export const CPUID_LEAF_EXT_FEATURES = 0x80000001;
export const CPUID_LEAF_EXT_SIZES = 0x80000008;
export const CPUID_LEAF_EXT_APIC_ID = 0x8000001e;

// Leaf 1 bits.
export const CPUID_1_ECX_MONITOR = 1 << 3;
export const CPUID_1_ECX_TSC_DEADLINE = 1 << 24;
export const CPUID_1_ECX_HYPERVISOR = 1 << 31;
export const CPUID_1_EDX_HTT = 1 << 28;
/** CLFLUSH line size in 8-byte units: 64-byte cache lines. */
const CLFLUSH_LINE_SIZE_QWORDS = 8;
// Leaf 0x8000_0001 ECX bits (AMD).
export const CPUID_EXT_ECX_CMP_LEGACY = 1 << 1;
export const CPUID_EXT_ECX_MONITORX = 1 << 29;

// Leaf 0xB / 0x1F level types (ECX[15:8]).
const TOPOLOGY_LEVEL_INVALID = 0;
const TOPOLOGY_LEVEL_SMT = 1;
const TOPOLOGY_LEVEL_CORE = 2;

/** "AuthenticAMD" and "HygonGenuine" start with these leaf-0 EBX values. */
const VENDOR_EBX_AMD = 0x68747541;
const VENDOR_EBX_HYGON = 0x6f677948;

/** Bits needed to number `n` items: ceil(log2(n)). */
function bitsFor(n: number): number {
  return n <= 1 ? 0 : 32 - Math.clz32(n - 1);
}

/** Replaces bits [lo, lo+width) of `value` with `field`. */
function setField(value: number, lo: number, width: number, field: number): number {
  const mask = (width === 32 ? 0xffffffff : (1 << width) - 1) * 2 ** lo;
  return ((value & ~mask) | ((field * 2 ** lo) & mask)) >>> 0;
}

/**
 * KVM's supported CPUID entries adjusted for vCPU `vcpu.id` of `vcpu.count`: APIC id in leaf 1
 * and the topology leaves, logical processor counts, the hypervisor bit, no MONITOR/MWAIT, and
 * KVM's own 0x4000_0000 leaves untouched. Returns new entries; `supported` is not changed.
 */
export function filterCpuid(
  supported: readonly CpuidEntry[],
  vcpu: VcpuTopology,
  options: CpuidOptions = {},
): CpuidEntry[] {
  const apicId = vcpu.id;
  const count = Math.max(1, vcpu.count);
  const vendor = supported.find((e) => e.function === CPUID_LEAF_VENDOR);
  const isAmd = vendor?.ebx === VENDOR_EBX_AMD || vendor?.ebx === VENDOR_EBX_HYGON;

  return supported.map((entry) => {
    const e = { ...entry };
    switch (e.function) {
      case CPUID_LEAF_FEATURES: {
        e.ebx = setField(e.ebx, 8, 8, CLFLUSH_LINE_SIZE_QWORDS);
        e.ebx = setField(e.ebx, 16, 8, Math.min(count, 255));
        e.ebx = setField(e.ebx, 24, 8, apicId);
        e.ecx = (e.ecx | CPUID_1_ECX_HYPERVISOR) & ~CPUID_1_ECX_MONITOR;
        if (options.tscDeadline) e.ecx |= CPUID_1_ECX_TSC_DEADLINE;
        e.ecx >>>= 0;
        e.edx = count > 1 ? (e.edx | CPUID_1_EDX_HTT) >>> 0 : (e.edx & ~CPUID_1_EDX_HTT) >>> 0;
        break;
      }
      case CPUID_LEAF_CACHE_PARAMS: {
        // EAX[7:5] is the cache level: L1 and L2 are per core, L3 is shared by the package.
        const level = (e.eax >>> 5) & 0x7;
        if (level === 0) break;
        const sharing = level >= 3 ? count - 1 : 0;
        e.eax = setField(e.eax, 14, 12, Math.min(sharing, 0xfff));
        e.eax = setField(e.eax, 26, 6, Math.min(count - 1, 63));
        break;
      }
      case CPUID_LEAF_MONITOR:
        e.eax = 0;
        e.ebx = 0;
        e.ecx = 0;
        e.edx = 0;
        break;
      case CPUID_LEAF_TOPOLOGY:
      case CPUID_LEAF_TOPOLOGY_V2:
        Object.assign(e, topologyLevel(e.index, apicId, count));
        break;
      case CPUID_LEAF_EXT_FEATURES:
        e.ecx &= ~CPUID_EXT_ECX_MONITORX;
        if (isAmd && count > 1) e.ecx |= CPUID_EXT_ECX_CMP_LEGACY;
        e.ecx >>>= 0;
        break;
      case CPUID_LEAF_EXT_SIZES:
        if (isAmd) {
          // ECX[7:0] NC: cores in the package minus one; ECX[15:12]: APIC id bits for them.
          e.ecx = setField(e.ecx, 0, 8, Math.min(count - 1, 255));
          e.ecx = setField(e.ecx, 12, 4, bitsFor(count));
        }
        break;
      case CPUID_LEAF_EXT_APIC_ID:
        // One thread per core, one node: core id = APIC id, node 0 of 1.
        e.eax = apicId >>> 0;
        e.ebx = apicId & 0xff;
        e.ecx = 0;
        e.edx = 0;
        break;
    }
    return e;
  });
}

/** Leaf 0xB / 0x1F subleaf `index`: an SMT level of 1 thread, then a core level of `count`. */
function topologyLevel(
  index: number,
  apicId: number,
  count: number,
): Pick<CpuidEntry, 'eax' | 'ebx' | 'ecx' | 'edx'> {
  const edx = apicId >>> 0;
  if (index === 0) return { eax: 0, ebx: 1, ecx: (TOPOLOGY_LEVEL_SMT << 8) | index, edx };
  if (index === 1) {
    return { eax: bitsFor(count), ebx: count, ecx: (TOPOLOGY_LEVEL_CORE << 8) | index, edx };
  }
  return { eax: 0, ebx: 0, ecx: (TOPOLOGY_LEVEL_INVALID << 8) | (index & 0xff), edx };
}
