/**
 * Typed KVM objects: `Kvm` (the /dev/kvm system fd), `Vm` (one virtual machine) and `Vcpu`
 * (one virtual CPU). Every failure is a `SyscallError` naming the ioctl. A `Vcpu` may be
 * rebuilt from its fd in another thread (`Vcpu.fromFd`), which is how each vCPU's ioctls all
 * come from its own worker thread.
 */
import {
  EAGAIN,
  EINTR,
  type HostAddress,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  close,
  hostView,
  ioctlBuf,
  ioctlInt,
  ioctlIntErrno,
  mmap,
  munmap,
  open,
} from '../sys/libc.js';
import { MemvisorError } from '../util/errors.js';
import {
  KVM_API_VERSION,
  KVM_CAP_NR_MEMSLOTS,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_FPU,
  KVM_GET_IRQCHIP,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_PIT2,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IOEVENTFD,
  KVM_IRQFD,
  KVM_IRQ_LINE,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_IRQCHIP,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_PIT2,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
} from './ioctl.js';
import { KvmRun } from './run.js';
import {
  type CpuidEntry,
  type Fpu,
  type IoEventFd,
  KVM_CPUID2_HEADER_SIZE,
  KVM_CPUID_ENTRY2_SIZE,
  KVM_FPU_SIZE,
  KVM_IRQCHIP_SIZE,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_LAPIC_STATE_SIZE,
  KVM_MP_STATE_SIZE,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_PIT_STATE2_SIZE,
  KVM_REGS_SIZE,
  KVM_SREGS_SIZE,
  type MsrEntry,
  type Regs,
  type Sregs,
  decodeCpuid2,
  decodeFpu,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  encodeCpuid2,
  encodeFpu,
  encodeIoEventFd,
  encodeIrqLevel,
  encodeIrqfd,
  encodeMemoryRegion,
  encodeMsrs,
  encodePitConfig,
  encodeRegs,
  encodeSregs,
} from './structs.js';

/** The KVM device node. */
export const KVM_DEVICE = '/dev/kvm';

/** Upper bound on CPUID entries asked of KVM_GET_SUPPORTED_CPUID (KVM's own limit is 256). */
const MAX_CPUID_ENTRIES = 256;

/** The /dev/kvm system handle. */
export class Kvm {
  readonly fd: number;

  /** Opens /dev/kvm and checks the API version; throws `kvm_unavailable` or `kvm_api`. */
  constructor(path = KVM_DEVICE) {
    try {
      this.fd = open(path, O_RDWR);
    } catch (err) {
      throw new MemvisorError('kvm_unavailable', `cannot open ${path}: ${String(err)}`, {
        cause: err,
      });
    }
    const version = ioctlInt(this.fd, KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
    if (version !== KVM_API_VERSION) {
      close(this.fd);
      throw new MemvisorError('kvm_api', `KVM API version ${version}, expected ${KVM_API_VERSION}`);
    }
  }

  /** KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific positive value. */
  checkExtension(cap: number): number {
    return ioctlInt(this.fd, KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION');
  }

  /** Number of memory slots a VM may have. */
  get maxMemslots(): number {
    return this.checkExtension(KVM_CAP_NR_MEMSLOTS);
  }

  /** Size of each vCPU's kvm_run mapping. */
  get vcpuMmapSize(): number {
    return ioctlInt(this.fd, KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
  }

  /** The CPUID leaves KVM can present to a guest on this host. */
  supportedCpuid(): CpuidEntry[] {
    const buf = new Uint8Array(KVM_CPUID2_HEADER_SIZE + MAX_CPUID_ENTRIES * KVM_CPUID_ENTRY2_SIZE);
    new DataView(buf.buffer).setUint32(0, MAX_CPUID_ENTRIES, true);
    ioctlBuf(this.fd, KVM_GET_SUPPORTED_CPUID, buf, 'KVM_GET_SUPPORTED_CPUID');
    return decodeCpuid2(buf);
  }

  /** KVM_CREATE_VM. */
  createVm(): Vm {
    const fd = ioctlInt(this.fd, KVM_CREATE_VM, 0, 'KVM_CREATE_VM');
    return new Vm(fd, this.maxMemslots, this.vcpuMmapSize);
  }

  close(): void {
    close(this.fd);
  }
}

/** KVM_MEM_* flags of a memory slot. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

/** One KVM memory slot as the VM last set it. */
export interface Memslot {
  slot: number;
  gpa: number;
  size: number;
  hostAddress: HostAddress;
  flags: number;
}

/** A KVM virtual machine. */
export class Vm {
  readonly fd: number;
  readonly maxMemslots: number;
  readonly vcpuMmapSize: number;
  readonly #slots = new Map<number, Memslot>();
  #allocated = new Set<number>();
  /** No slot number below this one is free. */
  #lowestFree = 0;

  constructor(fd: number, maxMemslots: number, vcpuMmapSize: number) {
    this.fd = fd;
    this.maxMemslots = maxMemslots;
    this.vcpuMmapSize = vcpuMmapSize;
  }

  /** KVM_SET_TSS_ADDR: three pages KVM needs below 4 GiB for real-mode emulation on VMX. */
  setTssAddr(gpa: number): void {
    ioctlInt(this.fd, KVM_SET_TSS_ADDR, gpa, 'KVM_SET_TSS_ADDR');
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map on VMX. */
  setIdentityMapAddr(gpa: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(gpa), true);
    ioctlBuf(this.fd, KVM_SET_IDENTITY_MAP_ADDR, b, 'KVM_SET_IDENTITY_MAP_ADDR');
  }

  /** KVM_CREATE_IRQCHIP: in-kernel 8259 pair, IOAPIC and local APICs. */
  createIrqchip(): void {
    ioctlInt(this.fd, KVM_CREATE_IRQCHIP, 0, 'KVM_CREATE_IRQCHIP');
  }

  /** KVM_CREATE_PIT2: in-kernel 8254 timer with a dummy speaker port. */
  createPit2(): void {
    ioctlBuf(this.fd, KVM_CREATE_PIT2, encodePitConfig(KVM_PIT_SPEAKER_DUMMY), 'KVM_CREATE_PIT2');
  }

  /** KVM_GET_IRQCHIP: the raw struct kvm_irqchip of chip `chipId` (KVM_IRQCHIP_*). */
  getIrqchip(chipId: number): Uint8Array {
    const b = new Uint8Array(KVM_IRQCHIP_SIZE);
    new DataView(b.buffer).setUint32(0, chipId, true);
    ioctlBuf(this.fd, KVM_GET_IRQCHIP, b, 'KVM_GET_IRQCHIP');
    return b;
  }

  /** KVM_SET_IRQCHIP with a struct kvm_irqchip read by `getIrqchip`. */
  setIrqchip(state: Uint8Array): void {
    ioctlBuf(this.fd, KVM_SET_IRQCHIP, state, 'KVM_SET_IRQCHIP');
  }

  /** KVM_GET_PIT2: the raw struct kvm_pit_state2. */
  getPit2(): Uint8Array {
    const b = new Uint8Array(KVM_PIT_STATE2_SIZE);
    ioctlBuf(this.fd, KVM_GET_PIT2, b, 'KVM_GET_PIT2');
    return b;
  }

  setPit2(state: Uint8Array): void {
    ioctlBuf(this.fd, KVM_SET_PIT2, state, 'KVM_SET_PIT2');
  }

  /** Reserves the lowest free slot number; throws `memslots_exhausted` when none is left. */
  allocateSlot(): number {
    for (let slot = this.#lowestFree; slot < this.maxMemslots; slot++) {
      if (!this.#allocated.has(slot)) {
        this.#allocated.add(slot);
        this.#lowestFree = slot + 1;
        return slot;
      }
    }
    throw new MemvisorError('memslots_exhausted', `all ${this.maxMemslots} KVM memslots in use`);
  }

  /** Frees a slot number from `allocateSlot` that was never mapped. */
  releaseSlot(slot: number): void {
    if (this.#slots.has(slot)) {
      throw new MemvisorError('memslot_mapped', `memslot ${slot} is mapped; delete it instead`);
    }
    this.#free(slot);
  }

  #free(slot: number): void {
    this.#allocated.delete(slot);
    this.#lowestFree = Math.min(this.#lowestFree, slot);
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: maps [gpa, gpa+size) to host memory at `hostAddress`. A size of
   * zero deletes the slot and frees its number.
   */
  setMemoryRegion(slot: number, gpa: number, size: number, hostAddress: HostAddress, flags = 0) {
    if (!this.#allocated.has(slot)) {
      throw new MemvisorError('memslot_unallocated', `memslot ${slot} was not allocated`);
    }
    const region = encodeMemoryRegion({
      slot,
      flags,
      guestPhysAddr: BigInt(gpa),
      memorySize: BigInt(size),
      userspaceAddr: hostAddress,
    });
    ioctlBuf(
      this.fd,
      KVM_SET_USER_MEMORY_REGION,
      region,
      `KVM_SET_USER_MEMORY_REGION slot ${slot}`,
    );
    if (size === 0) {
      this.#slots.delete(slot);
      this.#free(slot);
    } else {
      this.#slots.set(slot, { slot, gpa, size, hostAddress, flags });
    }
  }

  /** The slots currently mapped, by slot number. */
  get memslots(): readonly Memslot[] {
    return [...this.#slots.values()].sort((a, b) => a.slot - b.slot);
  }

  /** KVM_IRQ_LINE: drives a GSI of the in-kernel irqchip to `level`. */
  irqLine(gsi: number, level: 0 | 1): void {
    ioctlBuf(this.fd, KVM_IRQ_LINE, encodeIrqLevel(gsi, level), 'KVM_IRQ_LINE');
  }

  /** KVM_IRQFD: a write to eventfd `fd` raises an edge on `gsi` without leaving the kernel. */
  irqfd(fd: number, gsi: number, deassign = false): void {
    const arg = encodeIrqfd(fd, gsi, deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0);
    ioctlBuf(this.fd, KVM_IRQFD, arg, 'KVM_IRQFD');
  }

  /** KVM_IOEVENTFD: a guest write matching `e` signals eventfd `e.fd` without an exit. */
  ioeventfd(e: IoEventFd): void {
    ioctlBuf(this.fd, KVM_IOEVENTFD, encodeIoEventFd(e), 'KVM_IOEVENTFD');
  }

  /** KVM_CREATE_VCPU with APIC id `id`; returns the vCPU fd (see `Vcpu.fromFd`). */
  createVcpuFd(id: number): number {
    return ioctlInt(this.fd, KVM_CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`);
  }

  close(): void {
    close(this.fd);
  }
}

/** What a KVM_RUN call ended with: an exit to read from kvm_run, an interruption, a failure. */
export type RunResult =
  | { kind: 'exit'; reason: number }
  | { kind: 'interrupted' }
  | { kind: 'failed'; errno: number };

/** A virtual CPU: its fd and its kvm_run mapping. */
export class Vcpu {
  readonly id: number;
  readonly fd: number;
  readonly run: KvmRun;
  readonly #runAddress: HostAddress;
  readonly #runSize: number;

  private constructor(id: number, fd: number, runSize: number) {
    this.id = id;
    this.fd = fd;
    this.#runSize = runSize;
    this.#runAddress = mmap(runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    this.run = new KvmRun(hostView(this.#runAddress, runSize));
  }

  /** Wraps the fd of a vCPU created with `Vm.createVcpuFd`, mapping its kvm_run page. */
  static fromFd(id: number, fd: number, runSize: number): Vcpu {
    return new Vcpu(id, fd, runSize);
  }

  /**
   * KVM_RUN. EINTR (a signal or immediate_exit) is a normal result; any other failure (EFAULT
   * on a host page the guest may not touch, for instance) is returned for the caller to report.
   */
  runOnce(): RunResult {
    const rc = ioctlIntErrno(this.fd, KVM_RUN, 0);
    // EAGAIN: an application processor left its wait-for-SIPI state; it simply runs again.
    if (rc === -EINTR || rc === -EAGAIN) return { kind: 'interrupted' };
    if (rc < 0) return { kind: 'failed', errno: -rc };
    return { kind: 'exit', reason: this.run.exitReason };
  }

  getRegs(): Regs {
    const b = new Uint8Array(KVM_REGS_SIZE);
    ioctlBuf(this.fd, KVM_GET_REGS, b, 'KVM_GET_REGS');
    return decodeRegs(b);
  }

  setRegs(r: Regs): void {
    ioctlBuf(this.fd, KVM_SET_REGS, encodeRegs(r), 'KVM_SET_REGS');
  }

  getSregs(): Sregs {
    const b = new Uint8Array(KVM_SREGS_SIZE);
    ioctlBuf(this.fd, KVM_GET_SREGS, b, 'KVM_GET_SREGS');
    return decodeSregs(b);
  }

  setSregs(s: Sregs): void {
    ioctlBuf(this.fd, KVM_SET_SREGS, encodeSregs(s), 'KVM_SET_SREGS');
  }

  getFpu(): Fpu {
    const b = new Uint8Array(KVM_FPU_SIZE);
    ioctlBuf(this.fd, KVM_GET_FPU, b, 'KVM_GET_FPU');
    return decodeFpu(b);
  }

  setFpu(f: Fpu): void {
    ioctlBuf(this.fd, KVM_SET_FPU, encodeFpu(f), 'KVM_SET_FPU');
  }

  /** KVM_SET_MSRS; throws unless KVM accepted every entry. */
  setMsrs(entries: readonly MsrEntry[]): void {
    const n = ioctlBuf(this.fd, KVM_SET_MSRS, encodeMsrs(entries), 'KVM_SET_MSRS');
    if (n !== entries.length) {
      const bad = entries[n];
      throw new MemvisorError(
        'kvm_msr',
        `KVM_SET_MSRS stopped at entry ${n} (msr 0x${bad?.index.toString(16)})`,
      );
    }
  }

  /** KVM_SET_MSRS of one entry; false if KVM refused it. */
  trySetMsr(entry: MsrEntry): boolean {
    return ioctlBuf(this.fd, KVM_SET_MSRS, encodeMsrs([entry]), 'KVM_SET_MSRS') === 1;
  }

  /** KVM_GET_MSRS for the given indices; returns the entries KVM read. */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    const b = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const n = ioctlBuf(this.fd, KVM_GET_MSRS, b, 'KVM_GET_MSRS');
    return decodeMsrs(b, n);
  }

  setCpuid2(entries: readonly CpuidEntry[]): void {
    ioctlBuf(this.fd, KVM_SET_CPUID2, encodeCpuid2(entries), 'KVM_SET_CPUID2');
  }

  /** KVM_GET_LAPIC: the raw struct kvm_lapic_state. */
  getLapic(): Uint8Array {
    const b = new Uint8Array(KVM_LAPIC_STATE_SIZE);
    ioctlBuf(this.fd, KVM_GET_LAPIC, b, 'KVM_GET_LAPIC');
    return b;
  }

  setLapic(state: Uint8Array): void {
    ioctlBuf(this.fd, KVM_SET_LAPIC, state, 'KVM_SET_LAPIC');
  }

  getMpState(): number {
    const b = new Uint8Array(KVM_MP_STATE_SIZE);
    ioctlBuf(this.fd, KVM_GET_MP_STATE, b, 'KVM_GET_MP_STATE');
    return new DataView(b.buffer).getUint32(0, true);
  }

  setMpState(state: number): void {
    const b = new Uint8Array(KVM_MP_STATE_SIZE);
    new DataView(b.buffer).setUint32(0, state, true);
    ioctlBuf(this.fd, KVM_SET_MP_STATE, b, 'KVM_SET_MP_STATE');
  }

  /** Unmaps kvm_run; the fd stays open for the thread that owns it to close. */
  unmapRun(): void {
    munmap(this.#runAddress, this.#runSize);
  }

  close(): void {
    this.unmapRun();
    close(this.fd);
  }
}

/**
 * A second mapping of a vCPU's kvm_run page (the same physical page), for the main thread that
 * answers the exits of a vCPU run in a worker.
 */
export function mapRun(fd: number, runSize: number): KvmRun {
  const addr = mmap(runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return new KvmRun(hostView(addr, runSize));
}
