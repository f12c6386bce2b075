/**
 * The split virtqueue of VIRTIO 1.2 section 2.7, device side: the driver places descriptor
 * chains in the available ring, the device pops them, uses their buffers and returns them
 * through the used ring. Every guest address is checked through `GuestMemory` when the chain is
 * popped, so the buffers of a returned chain are known to be guest memory.
 *
 * VIRTIO_F_EVENT_IDX is not offered: the device always wants notifications and honours only
 * VIRTQ_AVAIL_F_NO_INTERRUPT, so a driver that could batch with event indexes interrupts and
 * kicks a little more often than it would need to.
 */
import { type GuestMemory, GuestMemoryError, gpaFromGuest } from '../memory/guest-memory.js';
import { hex } from './log.js';

// VIRTIO 1.2 section 2.7.5 "The Virtqueue Descriptor Table".
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next. */
export const VIRTQ_DESC_SIZE = 8 + 4 + 2 + 2;

// VIRTIO 1.2 section 2.7.6 "The Virtqueue Available Ring".
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Offset of ring[] in struct virtq_avail: le16 flags, le16 idx. */
export const VIRTQ_AVAIL_RING_OFFSET = 2 + 2;

// VIRTIO 1.2 section 2.7.8 "The Virtqueue Used Ring".
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Offset of ring[] in struct virtq_used: le16 flags, le16 idx. */
export const VIRTQ_USED_RING_OFFSET = 2 + 2;
/** struct virtq_used_elem: le32 id, le32 len. */
export const VIRTQ_USED_ELEM_SIZE = 4 + 4;

/** The largest queue size of a split virtqueue (section 2.7). */
export const VIRTQ_MAX_SIZE = 32768;

/** A guest-physical buffer, already checked to lie in guest memory. */
export interface GuestRange {
  readonly addr: number;
  readonly len: number;
}

/** A popped chain: its head index and its buffers split by direction, in chain order. */
export class DescriptorChain {
  readonly head: number;
  readonly readable: readonly GuestRange[];
  readonly writable: readonly GuestRange[];

  constructor(head: number, readable: GuestRange[], writable: GuestRange[]) {
    this.head = head;
    this.readable = readable;
    this.writable = writable;
  }

  /** Total bytes the device may read. */
  get readableLength(): number {
    return this.readable.reduce((n, r) => n + r.len, 0);
  }

  /** Total bytes the device may write. */
  get writableLength(): number {
    return this.writable.reduce((n, r) => n + r.len, 0);
  }

  /** The first `max` readable bytes (fewer if the chain has fewer), gathered across buffers. */
  readBytes(memory: GuestMemory, max: number): Uint8Array {
    const out = new Uint8Array(Math.min(max, this.readableLength));
    let at = 0;
    for (const r of this.readable) {
      if (at === out.length) break;
      const take = Math.min(r.len, out.length - at);
      out.set(memory.read(r.addr, take), at);
      at += take;
    }
    return out;
  }

  /** Scatters `data` over the writable buffers; returns the bytes written (all that fit). */
  writeBytes(memory: GuestMemory, data: Uint8Array): number {
    let at = 0;
    for (const w of this.writable) {
      if (at === data.length) break;
      const take = Math.min(w.len, data.length - at);
      memory.write(w.addr, data.subarray(at, at + take));
      at += take;
    }
    return at;
  }
}

/**
 * What `pop` found. `bad_chain` is a guest error confined to one chain: the device answers or
 * returns it (`head` is null when even the head index was out of range, so nothing can be
 * returned) and the queue keeps working. `broken` means the ring itself cannot be trusted; the
 * device should report DEVICE_NEEDS_RESET.
 */
export type PopResult =
  | { kind: 'chain'; chain: DescriptorChain }
  | { kind: 'bad_chain'; head: number | null; reason: string }
  | { kind: 'broken'; reason: string };

/** Ring addresses as the driver wrote them through the transport (64-bit). */
export interface QueueConfig {
  size: number;
  ready: boolean;
  descAddr: bigint;
  driverAddr: bigint;
  deviceAddr: bigint;
}

/** One split virtqueue. The transport fills `config`; `activate` checks it and starts service. */
export class Virtqueue {
  readonly maxSize: number;
  readonly config: QueueConfig;
  readonly #memory: GuestMemory;
  #active = false;
  #indirect = false;
  #desc = 0;
  #avail = 0;
  #used = 0;
  #lastAvail = 0;
  #nextUsed = 0;

  constructor(memory: GuestMemory, maxSize: number) {
    this.#memory = memory;
    this.maxSize = maxSize;
    this.config = Virtqueue.#initialConfig(maxSize);
  }

  static #initialConfig(maxSize: number): QueueConfig {
    return { size: maxSize, ready: false, descAddr: 0n, driverAddr: 0n, deviceAddr: 0n };
  }

  /** True once `activate` accepted the configuration. */
  get active(): boolean {
    return this.#active;
  }

  /** Queue size chosen by the driver. */
  get size(): number {
    return this.config.size;
  }

  /** Back to the state after construction (device reset). */
  reset(): void {
    Object.assign(this.config, Virtqueue.#initialConfig(this.maxSize));
    this.#active = false;
    this.#indirect = false;
    this.#lastAvail = 0;
    this.#nextUsed = 0;
  }

  /**
   * Checks the driver's configuration (section 2.7: size a power of two no larger than the
   * maximum, ring alignment, rings inside guest memory) and starts serving the queue. Returns
   * the reason it refused, or null.
   */
  activate(indirect: boolean): string | null {
    const { size, descAddr, driverAddr, deviceAddr } = this.config;
    if (size === 0 || size > this.maxSize || (size & (size - 1)) !== 0) {
      return `queue size ${size} is not a power of two in [1, ${this.maxSize}]`;
    }
    const desc = gpaFromGuest(descAddr);
    const avail = gpaFromGuest(driverAddr);
    const used = gpaFromGuest(deviceAddr);
    const rings: [string, number | null, bigint, number, number][] = [
      ['descriptor table', desc, descAddr, 16, VIRTQ_DESC_SIZE * size],
      ['available ring', avail, driverAddr, 2, VIRTQ_AVAIL_RING_OFFSET + 2 * size + 2],
      ['used ring', used, deviceAddr, 4, VIRTQ_USED_RING_OFFSET + VIRTQ_USED_ELEM_SIZE * size + 2],
    ];
    for (const [name, gpa, raw, align, len] of rings) {
      if (gpa === null || gpa % align !== 0 || !this.#memory.contains(gpa, len)) {
        return `${name} at ${hex(raw)} (${len} bytes, align ${align}) is not in guest memory`;
      }
    }
    this.#desc = desc!;
    this.#avail = avail!;
    this.#used = used!;
    this.#indirect = indirect;
    this.#active = true;
    return null;
  }

  /** Whether the driver has placed chains the device has not popped yet. */
  hasPending(): boolean {
    return this.#active && this.#availIdx() !== this.#lastAvail;
  }

  /** Takes the next available chain, or null if there is none (or the queue is inactive). */
  pop(): PopResult | null {
    if (!this.#active) return null;
    try {
      const pending = (this.#availIdx() - this.#lastAvail) & 0xffff;
      if (pending === 0) return null;
      if (pending > this.size) {
        const reason = `available index ${pending} ahead of the device (size ${this.size})`;
        return { kind: 'broken', reason };
      }
      const slot = this.#avail + VIRTQ_AVAIL_RING_OFFSET + 2 * (this.#lastAvail % this.size);
      const head = this.#memory.readU16(slot);
      this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
      if (head >= this.size) {
        return { kind: 'bad_chain', head: null, reason: `head index ${head} out of range` };
      }
      return this.#walk(head);
    } catch (err) {
      if (err instanceof GuestMemoryError) return { kind: 'broken', reason: err.message };
      throw err;
    }
  }

  /**
   * Returns chain `head` to the driver with `len` bytes written. `head` must come from `pop`
   * on this queue. Returns false if the used ring could not be written (only possible if the
   * device misuses the queue; the ring was checked by `activate`).
   */
  addUsed(head: number, len: number): boolean {
    if (!this.#active) return false;
    const elem =
      this.#used + VIRTQ_USED_RING_OFFSET + VIRTQ_USED_ELEM_SIZE * (this.#nextUsed % this.size);
    this.#memory.writeU32(elem, head);
    this.#memory.writeU32(elem + 4, len);
    // The element must be visible before the index that publishes it; writes through the
    // backing land in program order and x86 keeps stores ordered.
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.#memory.writeU16(this.#used + 2, this.#nextUsed);
    return true;
  }

  /** False when the driver set VIRTQ_AVAIL_F_NO_INTERRUPT (section 2.7.7). */
  needsInterrupt(): boolean {
    if (!this.#active) return false;
    return (this.#memory.readU16(this.#avail) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  #availIdx(): number {
    return this.#memory.readU16(this.#avail + 2);
  }

  /** Follows a chain from a head already known to be in range. */
  #walk(head: number): PopResult {
    const bad = (reason: string): PopResult => ({ kind: 'bad_chain', head, reason });
    const readable: GuestRange[] = [];
    const writable: GuestRange[] = [];
    let table = this.#desc;
    let tableSize = this.size;
    let seen = new Uint8Array(tableSize);
    let inIndirect = false;
    let index = head;
    let count = 0;

    for (;;) {
      if (index >= tableSize)
        return bad(`next index ${index} out of range (table of ${tableSize})`);
      if (seen[index]) return bad(`descriptor loop at index ${index}`);
      seen[index] = 1;
      const at = table + VIRTQ_DESC_SIZE * index;
      const addr = this.#memory.readU64(at);
      const len = this.#memory.readU32(at + 8);
      const flags = this.#memory.readU16(at + 12);
      const next = this.#memory.readU16(at + 14);

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.#indirect) return bad('indirect descriptor but VIRTIO_F_INDIRECT_DESC not acked');
        if (inIndirect) return bad('indirect descriptor inside an indirect table');
        if (flags & VIRTQ_DESC_F_NEXT) return bad('descriptor has both INDIRECT and NEXT');
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) return bad(`indirect table length ${len}`);
        const entries = len / VIRTQ_DESC_SIZE;
        if (count + entries > this.size) {
          return bad(`indirect table of ${entries} makes the chain longer than the queue size`);
        }
        const gpa = gpaFromGuest(addr);
        if (gpa === null || !this.#memory.contains(gpa, len)) {
          return bad(`indirect table ${hex(addr)}+${len} leaves guest memory`);
        }
        table = gpa;
        tableSize = entries;
        seen = new Uint8Array(tableSize);
        inIndirect = true;
        index = 0;
        continue;
      }

      count++;
      if (count > this.size) return bad(`chain longer than the queue size ${this.size}`);
      const gpa = gpaFromGuest(addr);
      if (gpa === null || !this.#memory.contains(gpa, len)) {
        return bad(`buffer ${hex(addr)}+${len} leaves guest memory`);
      }
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push({ addr: gpa, len });
      } else if (writable.length > 0) {
        return bad('device-readable buffer after a device-writable one');
      } else {
        readable.push({ addr: gpa, len });
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      index = next;
    }
    return { kind: 'chain', chain: new DescriptorChain(head, readable, writable) };
  }
}
