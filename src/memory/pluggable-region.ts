/**
 * A guest-physical region whose blocks are given to the guest one by one: the host memory of
 * the whole region is reserved up front, but only plugged blocks are mapped into the guest,
 * each through a KVM memory slot of its own. An unplugged block has no slot, so a guest access
 * to it leaves KVM as an MMIO exit and is caught at that access; its host pages are discarded
 * and nothing the guest does can make them resident again.
 *
 * One slot per block, not per run of plugged blocks, because KVM can neither resize nor
 * atomically replace a slot: merging or splitting runs means deleting a slot that maps memory
 * the guest is using, and an instruction fetch, page-table walk or vector store that lands in
 * that window cannot be completed by the VMM (the guest gets #UD or a triple fault). With a
 * slot per block, plugging and unplugging only ever create or delete the slots of the blocks
 * that change. The cost is one memory slot per plugged block: the Vmm refuses, at start, a
 * configuration whose blocks could outnumber the slots KVM offers.
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

export class PluggableRegion {
  readonly gpa: number;
  readonly size: number;
  readonly blockSize: number;
  readonly backing: Backing;
  readonly #slots: MemslotTable;
  readonly #plugged: Uint8Array;
  /** The memory slot of each plugged block; -1 for an unplugged one. */
  readonly #slotOf: Int32Array;
  #slotCount = 0;

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
    this.#slotOf = new Int32Array(backing.size / blockSize).fill(-1);
  }

  /** Blocks in the region: the most memory slots it can use at once. */
  get blockCount(): number {
    return this.#plugged.length;
  }

  /** KVM memory slots the region uses now: one per plugged block. */
  get slotCount(): number {
    return this.#slotCount;
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
   * Maps the blocks of [offset, offset+len) into the guest. The caller checked the range. All
   * or nothing: if KVM refuses a slot, the blocks this call mapped are unmapped again and the
   * error is rethrown.
   */
  plug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    const mapped: number[] = [];
    try {
      for (let b = first; b < first + count; b++) {
        if (this.#plugged[b]) continue;
        this.#mapBlock(b);
        mapped.push(b);
      }
    } catch (err) {
      for (const b of mapped) this.#unmapBlock(b);
      throw err;
    }
    for (const b of mapped) this.#plugged[b] = 1;
  }

  /** Unmaps the blocks of [offset, offset+len) and gives their memory back to the host. */
  unplug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    for (let b = first; b < first + count; b++) {
      this.#plugged[b] = 0;
      this.#unmapBlock(b);
    }
    // Discard only once no slot maps the range, so the guest cannot fault the pages back in.
    this.backing.discard(offset, len);
  }

  /** Unplugs every block (system reset, UNPLUG_ALL). */
  unplugAll(): void {
    this.#plugged.fill(0);
    for (let b = 0; b < this.#slotOf.length; b++) this.#unmapBlock(b);
    this.backing.discard(0, this.size);
  }

  /**
   * Handles a guest access at region offset `offset` that had no memory slot. A plugged block
   * can only be met here in the instant between its bit and its slot changing (a vCPU racing
   * the plug): the access is completed on the backing. Otherwise it is a violation: reads see
   * all ones, writes are dropped, and the host memory is not touched.
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

  /** Gives block `b` a memory slot; a failure leaves the block unmapped and is rethrown. */
  #mapBlock(b: number): void {
    const slot = this.#slots.allocate();
    try {
      this.#slots.map(
        slot,
        this.gpa + b * this.blockSize,
        this.blockSize,
        this.backing.hostAddress! + BigInt(b * this.blockSize),
      );
    } catch (err) {
      this.#slots.release(slot);
      throw err;
    }
    this.#slotOf[b] = slot;
    this.#slotCount++;
  }

  #unmapBlock(b: number): void {
    const slot = this.#slotOf[b]!;
    if (slot < 0) return;
    this.#slots.unmap(slot);
    this.#slotOf[b] = -1;
    this.#slotCount--;
  }
}
