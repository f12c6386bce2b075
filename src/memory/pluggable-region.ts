/**
 * A guest-physical region whose blocks are given to the guest one by one: the host memory of
 * the whole region is reserved up front, but only plugged blocks are mapped into the guest.
 *
 * Enforcement is per block and costs few KVM memory slots. A plug request gets one slot over
 * each run of its blocks that no slot covers yet. An unplugged block loses its host pages and
 * its host access (PROT_NONE) at once, but keeps its slot while other blocks of that slot are
 * still plugged; a slot goes only when its last block is unplugged. So the guest never makes
 * unplugged memory resident: KVM cannot map a PROT_NONE page, and KVM_RUN fails with EFAULT
 * instead. That failure says neither which address nor which block, so on it the VMM pauses
 * every vCPU and calls `isolateUnplugged`, which replaces each slot holding an unplugged block
 * by slots over its plugged runs only. Re-run, the access leaves KVM as an MMIO exit at its
 * address and is caught there, as an access to a block that never had a slot always is.
 *
 * Slots are never merged or split while vCPUs run: KVM can neither resize nor atomically
 * replace a slot, and an instruction fetch or page-table walk that lands in the window between
 * the delete and the create cannot be completed by the VMM (the guest gets #UD or a triple
 * fault). A well-behaved guest therefore costs one slot per plug request (Linux asks for up to
 * one 128 MiB memory block at a time) and one slot deletion per emptied slot. The worst case,
 * a slot for every block, is what the Vmm checks against the slots KVM offers at start.
 */
import { MemvisorError } from '../util/errors.js';
import type { Backing } from './backing.js';

/** The KVM memory-slot operations a region needs (the Machine adapts its `Vm` to this). */
export interface MemslotTable {
  /** Reserves a free slot number. */
  allocate(): number;
  /** Maps [gpa, gpa+size) to host memory at `hostAddress` through `slot`. */
  map(slot: number, gpa: number, size: number, hostAddress: bigint): void;
  /** Deletes `slot`'s mapping and frees the slot number. */
  unmap(slot: number): void;
  /** Frees a slot number that `allocate` gave but that was never mapped. */
  release(slot: number): void;
}

/** The outcome of a guest access that reached the VMM instead of RAM. */
export type AccessOutcome = 'emulated' | 'violation';

/** One KVM memory slot over blocks [first, first + count) of the region. */
interface SlotSpan {
  slot: number;
  first: number;
  count: number;
}

/** A virtio-mem device's region: block plug state, host memory and the slots that map it. */
export class PluggableRegion {
  readonly gpa: number;
  readonly size: number;
  readonly blockSize: number;
  readonly backing: Backing;
  readonly #slots: MemslotTable;
  readonly #plugged: Uint8Array;
  /** The span covering each block, or undefined where no slot maps the block. */
  readonly #spanOf: (SlotSpan | undefined)[];
  readonly #spans = new Set<SlotSpan>();

  constructor(gpa: number, blockSize: number, backing: Backing, slots: MemslotTable) {
    if (backing.size % blockSize !== 0 || gpa % blockSize !== 0) {
      throw new MemvisorError('bad_region', 'region address and size must be block multiples');
    }
    if (backing.hostAddress === null) {
      throw new MemvisorError('bad_region', 'a pluggable region needs mapped host memory');
    }
    this.gpa = gpa;
    this.size = backing.size;
    this.blockSize = blockSize;
    this.backing = backing;
    this.#slots = slots;
    this.#plugged = new Uint8Array(backing.size / blockSize);
    this.#spanOf = new Array(backing.size / blockSize).fill(undefined);
    backing.protect(0, this.size, true);
  }

  /** Blocks in the region: the most memory slots it can use at once. */
  get blockCount(): number {
    return this.#plugged.length;
  }

  /** KVM memory slots the region uses now. */
  get slotCount(): number {
    return this.#spans.size;
  }

  /** True if the block holding region offset `offset` is plugged. */
  isPlugged(offset: number): boolean {
    return this.#plugged[Math.floor(offset / this.blockSize)] === 1;
  }

  /** True if every block touched by [offset, offset+len) is plugged. */
  allPlugged(offset: number, len: number): boolean {
    if (offset < 0 || len <= 0 || offset + len > this.size) return false;
    const last = Math.floor((offset + len - 1) / this.blockSize);
    for (let b = Math.floor(offset / this.blockSize); b <= last; b++) {
      if (this.#plugged[b] !== 1) return false;
    }
    return true;
  }

  /**
   * Gives the blocks of [offset, offset+len) to the guest: host access back, and a slot over
   * each run no slot covers. The caller checked the range. All or nothing: if KVM refuses a
   * slot, what this call changed is undone and the error is rethrown.
   */
  plug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    const opened: number[] = [];
    for (let b = first; b < first + count; b++) if (!this.#plugged[b]) opened.push(b);
    const protect = (inaccessible: boolean) => {
      for (const [runFirst, runCount] of runs(opened)) {
        this.backing.protect(runFirst * this.blockSize, runCount * this.blockSize, inaccessible);
      }
    };
    const created: SlotSpan[] = [];
    try {
      protect(false);
      const unmapped = opened.filter((b) => this.#spanOf[b] === undefined);
      for (const [runFirst, runCount] of runs(unmapped)) {
        created.push(this.#map(runFirst, runCount));
      }
    } catch (err) {
      for (const span of created) this.#unmap(span);
      protect(true);
      throw err;
    }
    for (const b of opened) this.#plugged[b] = 1;
  }

  /**
   * Takes the blocks of [offset, offset+len) from the guest and gives their memory back to the
   * host. A slot that no longer maps a plugged block is deleted.
   */
  unplug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    // Protect before discarding, so that nothing can fault the pages back in between.
    this.backing.protect(offset, len, true);
    this.backing.discard(offset, len);
    const touched = new Set<SlotSpan>();
    for (let b = first; b < first + count; b++) {
      this.#plugged[b] = 0;
      const span = this.#spanOf[b];
      if (span) touched.add(span);
    }
    for (const span of touched) {
      if (!this.#plugged.subarray(span.first, span.first + span.count).includes(1)) {
        this.#unmap(span);
      }
    }
  }

  /** Unplugs every block (system reset, UNPLUG_ALL). */
  unplugAll(): void {
    this.#plugged.fill(0);
    this.backing.protect(0, this.size, true);
    this.backing.discard(0, this.size);
    for (const span of [...this.#spans]) this.#unmap(span);
  }

  /**
   * Replaces every slot that maps an unplugged block by slots over its plugged runs, so that
   * each unplugged block leaves KVM as an MMIO exit. Only while no vCPU runs (see above).
   * Returns false if no slot mapped an unplugged block. If KVM refuses a new slot, the plugged
   * blocks left without one are still served, slowly, through `access`.
   */
  isolateUnplugged(): boolean {
    const mixed = [...this.#spans].filter((s) =>
      this.#plugged.subarray(s.first, s.first + s.count).includes(0),
    );
    for (const span of mixed) {
      this.#unmap(span);
      const plugged: number[] = [];
      for (let b = span.first; b < span.first + span.count; b++) {
        if (this.#plugged[b]) plugged.push(b);
      }
      for (const [runFirst, runCount] of runs(plugged)) this.#map(runFirst, runCount);
    }
    return mixed.length > 0;
  }

  /**
   * Handles a guest access at region offset `offset` that had no memory slot. A plugged block
   * is met here in the instant between its bit and its slot changing (a vCPU racing the plug),
   * or when KVM refused it a slot: the access is completed on the backing. Otherwise it is a
   * violation: reads see all ones, writes are dropped, and the host memory is not touched.
   */
  access(offset: number, data: Uint8Array, isWrite: boolean): AccessOutcome {
    if (this.allPlugged(offset, data.length)) {
      const view = this.backing.chunkView(offset, data.length);
      if (isWrite) view.set(data);
      else data.set(view);
      return 'emulated';
    }
    if (!isWrite) data.fill(0xff);
    return 'violation';
  }

  /** Host-resident bytes of the whole region. */
  residentBytes(): number {
    return this.backing.residentBytes(0, this.size);
  }

  /** The plug state of every block as '#' (plugged) and '.' (unplugged). */
  picture(): string {
    let s = '';
    for (const b of this.#plugged) s += b ? '#' : '.';
    return s;
  }

  #blocks(offset: number, len: number): [number, number] {
    if (offset % this.blockSize !== 0 || len % this.blockSize !== 0 || offset + len > this.size) {
      throw new MemvisorError(
        'bad_range',
        `range 0x${offset.toString(16)}+${len} is not whole blocks`,
      );
    }
    return [offset / this.blockSize, len / this.blockSize];
  }

  /** Maps blocks [first, first+count) through a new slot; a failure maps nothing. */
  #map(first: number, count: number): SlotSpan {
    const slot = this.#slots.allocate();
    try {
      this.#slots.map(
        slot,
        this.gpa + first * this.blockSize,
        count * this.blockSize,
        this.backing.hostAddress! + BigInt(first * this.blockSize),
      );
    } catch (err) {
      this.#slots.release(slot);
      throw err;
    }
    const span = { slot, first, count };
    this.#spans.add(span);
    for (let b = first; b < first + count; b++) this.#spanOf[b] = span;
    return span;
  }

  #unmap(span: SlotSpan): void {
    this.#slots.unmap(span.slot);
    this.#spans.delete(span);
    for (let b = span.first; b < span.first + span.count; b++) this.#spanOf[b] = undefined;
  }
}

/** The runs of consecutive numbers in ascending `blocks`, as [first, count] pairs. */
function* runs(blocks: readonly number[]): Generator<[number, number]> {
  let start = -1;
  let prev = -2;
  for (const b of blocks) {
    if (b !== prev + 1) {
      if (start >= 0) yield [start, prev - start + 1];
      start = b;
    }
    prev = b;
  }
  if (start >= 0) yield [start, prev - start + 1];
}
