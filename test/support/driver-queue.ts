/**
 * The driver side of a split virtqueue, for device tests: lays out the descriptor table and
 * rings in fake guest memory and pushes chains the way a driver does, including malformed ones.
 */
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_AVAIL_RING_OFFSET,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_RING_OFFSET,
} from '../../src/virtio/queue.js';

/** A buffer of a chain; `write` marks it device-writable. */
export interface DriverBuffer {
  addr: number;
  len: number;
  write?: boolean;
}

/** A raw descriptor, for building malformed tables. */
export interface RawDescriptor {
  addr: bigint | number;
  len: number;
  flags: number;
  next: number;
}

/** A returned used-ring element. */
export interface UsedElement {
  id: number;
  len: number;
}

/** Where the queue's three areas live. */
export interface DriverQueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

/** Lays a queue out at `base`: table, avail ring, then the used ring 4-byte aligned. */
export function layoutAt(base: number, size: number): DriverQueueLayout {
  const desc = base;
  const avail = desc + VIRTQ_DESC_SIZE * size;
  const used = Math.ceil((avail + VIRTQ_AVAIL_RING_OFFSET + 2 * size + 2) / 4) * 4;
  return { size, desc, avail, used };
}

/** One driver-side virtqueue. Descriptors are handed out in order and recycled when used. */
export class DriverQueue {
  readonly layout: DriverQueueLayout;
  readonly #memory: GuestMemory;
  readonly #free: number[];
  readonly #chains = new Map<number, number[]>();
  #availIdx = 0;
  #lastUsed = 0;

  constructor(memory: GuestMemory, layout: DriverQueueLayout) {
    this.#memory = memory;
    this.layout = layout;
    this.#free = Array.from({ length: layout.size }, (_, i) => i);
    memory.fill(layout.desc, VIRTQ_DESC_SIZE * layout.size);
    memory.fill(layout.avail, VIRTQ_AVAIL_RING_OFFSET + 2 * layout.size + 2);
    memory.fill(layout.used, VIRTQ_USED_RING_OFFSET + VIRTQ_USED_ELEM_SIZE * layout.size + 2);
  }

  /** Descriptors not in flight. */
  get freeDescriptors(): number {
    return this.#free.length;
  }

  /** Places a chain of `buffers` and makes it available; returns its head. */
  addChain(buffers: DriverBuffer[]): number {
    const indices = this.#take(buffers.length);
    buffers.forEach((b, i) => {
      const last = i === buffers.length - 1;
      this.writeDescriptor(indices[i]!, {
        addr: b.addr,
        len: b.len,
        flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next: last ? 0 : indices[i + 1]!,
      });
    });
    this.#chains.set(indices[0]!, indices);
    this.publish(indices[0]!);
    return indices[0]!;
  }

  /** Writes `buffers` as an indirect table at `table` and makes one descriptor point to it. */
  addIndirect(table: number, buffers: DriverBuffer[]): number {
    buffers.forEach((b, i) => {
      const last = i === buffers.length - 1;
      this.#writeDescriptorAt(table + VIRTQ_DESC_SIZE * i, {
        addr: b.addr,
        len: b.len,
        flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next: last ? 0 : i + 1,
      });
    });
    const [head] = this.#take(1);
    this.writeDescriptor(head!, {
      addr: table,
      len: VIRTQ_DESC_SIZE * buffers.length,
      flags: VIRTQ_DESC_F_INDIRECT,
      next: 0,
    });
    this.#chains.set(head!, [head!]);
    this.publish(head!);
    return head!;
  }

  /** Writes descriptor `index` of the table as given. */
  writeDescriptor(index: number, d: RawDescriptor): void {
    this.#writeDescriptorAt(this.layout.desc + VIRTQ_DESC_SIZE * index, d);
  }

  /** Puts `head` in the next available slot and publishes it by bumping the index. */
  publish(head: number): void {
    const slot =
      this.layout.avail + VIRTQ_AVAIL_RING_OFFSET + 2 * (this.#availIdx % this.layout.size);
    this.#memory.writeU16(slot, head);
    this.setAvailIdx(this.#availIdx + 1);
  }

  /** Writes the available index directly (for malformed-ring tests). */
  setAvailIdx(idx: number): void {
    this.#availIdx = idx & 0xffff;
    this.#memory.writeU16(this.layout.avail + 2, this.#availIdx);
  }

  /** Sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT. */
  setNoInterrupt(on: boolean): void {
    this.#memory.writeU16(this.layout.avail, on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** The used index the device last published. */
  usedIdx(): number {
    return this.#memory.readU16(this.layout.used + 2);
  }

  /** Used elements returned since the last call; their descriptors become free again. */
  takeUsed(): UsedElement[] {
    const out: UsedElement[] = [];
    const idx = this.usedIdx();
    while (this.#lastUsed !== idx) {
      const at =
        this.layout.used +
        VIRTQ_USED_RING_OFFSET +
        VIRTQ_USED_ELEM_SIZE * (this.#lastUsed % this.layout.size);
      const id = this.#memory.readU32(at);
      out.push({ id, len: this.#memory.readU32(at + 4) });
      this.#free.push(...(this.#chains.get(id) ?? []));
      this.#chains.delete(id);
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }

  #take(n: number): number[] {
    if (n > this.#free.length) throw new Error(`driver queue: ${n} descriptors wanted`);
    return this.#free.splice(0, n);
  }

  #writeDescriptorAt(at: number, d: RawDescriptor): void {
    this.#memory.writeU64(at, BigInt(d.addr));
    this.#memory.writeU32(at + 8, d.len);
    this.#memory.writeU16(at + 12, d.flags);
    this.#memory.writeU16(at + 14, d.next);
  }
}
