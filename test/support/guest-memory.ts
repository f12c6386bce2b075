/**
 * Fake guest memory for device tests: regions backed by plain buffers, and an interrupt line
 * that counts its edges.
 */
import type { IrqLine } from '../../src/devices/bus.js';
import { BufferBacking } from '../../src/memory/backing.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';

/** A region to create: its guest-physical start and size. */
export interface FakeRegion {
  gpa: number;
  size: number;
}

/** Guest memory of the given regions (one of 1 MiB at 0 when none are given), zero-filled. */
export function fakeGuestMemory(regions: FakeRegion[] = [{ gpa: 0, size: 1 << 20 }]): GuestMemory {
  return new GuestMemory(
    regions.map((r, i) => ({
      name: `ram${i}`,
      gpa: r.gpa,
      size: r.size,
      backing: new BufferBacking(r.size),
    })),
  );
}

/** An IrqLine recording how many edges it was given. */
export class CountingIrq implements IrqLine {
  readonly gsi: number;
  edges = 0;

  constructor(gsi = 5) {
    this.gsi = gsi;
  }

  trigger(): void {
    this.edges++;
  }
}
