/**
 * A guest-physical region whose blocks are given to the guest one by one: the host memory of
 * the whole region is reserved up front, but only plugged blocks are mapped into the guest,
 * through one KVM memory slot per maximal run of plugged blocks. An unplugged block has no
 * slot, so a guest access to it leaves KVM as an MMIO exit and is caught at that access; its
 * host pages are discarded and nothing the guest does can make them resident again.
 *
 * Changing a run means deleting its slot and creating the new ones: KVM cannot resize a slot.
 * In that short window a vCPU may touch plugged memory that has no slot; `access()` completes
 * such an access from the backing, so the guest sees ordinary RAM. An instruction fetch from
 * that window cannot be completed this way and would stop the vCPU with an emulation error;
 * Linux does not execute from memory it is plugging or unplugging, so this is not expected.
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
}

/** The outcome of a guest access that reached the VMM instead of RAM. */
export type AccessOutcome = 'emulated' | 'violation';

interface Run {
  first: number;
  count: number;
  slot: number;
}

export class PluggableRegion {
  readonly gpa: number;
  readonly size: number;
  readonly blockSize: number;
  readonly backing: Backing;
  readonly #slots: MemslotTable;
  readonly #plugged: Uint8Array;
  #runs: Run[] = [];

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
  }

  /** KVM memory slots the region uses now. */
  get slotCount(): number {
    return this.#runs.length;
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

  /** Maps the blocks of [offset, offset+len) into the guest. The caller checked the range. */
  plug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    for (let b = first; b < first + count; b++) this.#plugged[b] = 1;
    this.#remap(first - 1, first + count + 1);
  }

  /** Unmaps the blocks of [offset, offset+len) and gives their memory back to the host. */
  unplug(offset: number, len: number): void {
    const [first, count] = this.#blocks(offset, len);
    for (let b = first; b < first + count; b++) this.#plugged[b] = 0;
    this.#remap(first, first + count);
    // Discard only once no slot maps the range, so the guest cannot fault the pages back in.
    this.backing.discard(offset, len);
  }

  /** Unplugs every block (system reset, UNPLUG_ALL). */
  unplugAll(): void {
    this.#plugged.fill(0);
    for (const run of this.#runs) this.#slots.unmap(run.slot);
    this.#runs = [];
    this.backing.discard(0, this.size);
  }

  /**
   * Handles a guest access at region offset `offset` that had no memory slot. A plugged block
   * is in a slot update: the access is completed on the backing. Otherwise it is a violation:
   * reads see all ones, writes are dropped, and the host memory is not touched.
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

  /**
   * Rebuilds the slots of every run that touches blocks [from, to): deletes them, then maps the
   * maximal plugged runs of the span they and the range cover.
   */
  #remap(from: number, to: number): void {
    const lo = Math.max(0, from);
    const hi = Math.min(this.#plugged.length, to);
    const touched = this.#runs.filter((r) => r.first < hi && r.first + r.count > lo);
    let spanFirst = lo;
    let spanEnd = hi;
    for (const r of touched) {
      spanFirst = Math.min(spanFirst, r.first);
      spanEnd = Math.max(spanEnd, r.first + r.count);
      this.#slots.unmap(r.slot);
    }
    const kept = this.#runs.filter((r) => !touched.includes(r));
    let b = spanFirst;
    while (b < spanEnd) {
      if (!this.#plugged[b]) {
        b++;
        continue;
      }
      const first = b;
      while (b < this.#plugged.length && this.#plugged[b]) b++;
      const run = { first, count: b - first, slot: this.#slots.allocate() };
      this.#slots.map(
        run.slot,
        this.gpa + first * this.blockSize,
        run.count * this.blockSize,
        this.backing.hostAddress! + BigInt(first * this.blockSize),
      );
      kept.push(run);
    }
    this.#runs = kept.sort((a, b2) => a.first - b2.first);
  }
}
