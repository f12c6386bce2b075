/**
 * Guest-physical memory: a set of non-overlapping regions, each backed by host memory. Every
 * access is bounds-checked against the regions; devices go through this class and never index
 * a raw buffer of guest RAM.
 */
import { MAX_VIEW } from '../sys/libc.js';
import { MemvisorError } from '../util/errors.js';
import type { Backing } from './backing.js';

/** An access outside guest memory (or spanning a hole between regions). */
export class GuestMemoryError extends MemvisorError {
  constructor(gpa: number | bigint, len: number) {
    super('guest_memory_range', `guest range 0x${gpa.toString(16)}+${len} is not guest memory`);
  }
}

/** One contiguous range of guest-physical addresses and the host memory behind it. */
export interface GuestRegion {
  readonly name: string;
  readonly gpa: number;
  readonly size: number;
  readonly backing: Backing;
  /**
   * For regions only partly given to the guest (virtio-mem): whether [offset, offset+len) is
   * all plugged. A device access to a part that is not is refused like one outside memory, so
   * a guest cannot make the host touch memory it gave back.
   */
  readonly accessible?: (offset: number, len: number) => boolean;
}

/** The highest guest-physical address memvisor uses; keeps every address a safe JS integer. */
const GPA_LIMIT = 2 ** 52;

/**
 * Converts a guest-supplied 64-bit address to a number, or null if it cannot be guest memory.
 * Callers treat null as an out-of-range access.
 */
export function gpaFromGuest(value: bigint): number | null {
  return value >= 0n && value < BigInt(GPA_LIMIT) ? Number(value) : null;
}

export class GuestMemory {
  readonly #regions: GuestRegion[];

  constructor(regions: GuestRegion[]) {
    this.#regions = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < this.#regions.length; i++) {
      const prev = this.#regions[i - 1]!;
      if (prev.gpa + prev.size > this.#regions[i]!.gpa) {
        throw new MemvisorError('memory_overlap', `region ${prev.name} overlaps the next one`);
      }
    }
  }

  get regions(): readonly GuestRegion[] {
    return this.#regions;
  }

  /** The region holding `gpa`, or undefined. */
  regionAt(gpa: number): GuestRegion | undefined {
    return this.#regions.find((r) => gpa >= r.gpa && gpa < r.gpa + r.size);
  }

  /** True if every byte of [gpa, gpa+len) is guest memory. */
  contains(gpa: number, len: number): boolean {
    return this.#pieces(gpa, len) !== null;
  }

  /** Copies `len` bytes out of guest memory. */
  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let at = 0;
    for (const piece of this.#checked(gpa, len)) {
      out.set(piece, at);
      at += piece.length;
    }
    return out;
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    let at = 0;
    for (const piece of this.#checked(gpa, data.length)) {
      piece.set(data.subarray(at, at + piece.length));
      at += piece.length;
    }
  }

  /** Fills [gpa, gpa+len) with `value`. */
  fill(gpa: number, len: number, value = 0): void {
    for (const piece of this.#checked(gpa, len)) piece.fill(value);
  }

  /**
   * Gives the host pages of [gpa, gpa+len) back; they read as zeros afterwards. The range is
   * shrunk to whole 4 KiB pages, and must lie in guest memory.
   */
  discard(gpa: number, len: number): void {
    if (!this.contains(gpa, len)) throw new GuestMemoryError(gpa, len);
    const start = Math.ceil(gpa / 4096) * 4096;
    const end = Math.floor((gpa + len) / 4096) * 4096;
    let cur = start;
    while (cur < end) {
      const region = this.regionAt(cur)!;
      const take = Math.min(end, region.gpa + region.size) - cur;
      region.backing.discard(cur - region.gpa, take);
      cur += take;
    }
  }

  /** Host-resident bytes of every region, or of those `include` picks. */
  residentBytes(include: (region: GuestRegion) => boolean = () => true): number {
    return this.#regions.reduce(
      (sum, r) => (include(r) ? sum + r.backing.residentBytes(0, r.size) : sum),
      0,
    );
  }

  readU8(gpa: number): number {
    return this.read(gpa, 1)[0]!;
  }

  readU16(gpa: number): number {
    return this.#dataView(gpa, 2).getUint16(0, true);
  }

  readU32(gpa: number): number {
    return this.#dataView(gpa, 4).getUint32(0, true);
  }

  readU64(gpa: number): bigint {
    return this.#dataView(gpa, 8).getBigUint64(0, true);
  }

  writeU8(gpa: number, value: number): void {
    this.write(gpa, Uint8Array.of(value));
  }

  writeU16(gpa: number, value: number): void {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, value, true);
    this.write(gpa, b);
  }

  writeU32(gpa: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    this.write(gpa, b);
  }

  writeU64(gpa: number, value: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, value, true);
    this.write(gpa, b);
  }

  #dataView(gpa: number, len: number): DataView {
    const pieces = this.#checked(gpa, len);
    const bytes = pieces.length === 1 ? pieces[0]! : this.read(gpa, len);
    return new DataView(bytes.buffer, bytes.byteOffset, len);
  }

  #checked(gpa: number, len: number): Uint8Array[] {
    const pieces = this.#pieces(gpa, len);
    if (!pieces) throw new GuestMemoryError(gpa, len);
    return pieces;
  }

  /** Views covering [gpa, gpa+len) across regions and 1 GiB chunks, or null if not all RAM. */
  #pieces(gpa: number, len: number): Uint8Array[] | null {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) {
      return null;
    }
    const pieces: Uint8Array[] = [];
    let cur = gpa;
    const end = gpa + len;
    while (cur < end) {
      const region = this.regionAt(cur);
      if (!region) return null;
      const offset = cur - region.gpa;
      if (
        region.accessible &&
        !region.accessible(offset, Math.min(end - cur, region.size - offset))
      ) {
        return null;
      }
      const chunkEnd = (Math.floor(offset / MAX_VIEW) + 1) * MAX_VIEW;
      const take = Math.min(end - cur, region.size - offset, chunkEnd - offset);
      pieces.push(region.backing.chunkView(offset, take));
      cur += take;
    }
    return pieces;
  }
}
