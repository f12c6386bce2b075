import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferBacking, PAGE_SIZE } from './backing.js';
import { type MemslotTable, PluggableRegion } from './pluggable-region.js';

const MiB = 1 << 20;
const BLOCK = 2 * MiB;
const GPA = 0x1_0000_0000;
const HOST = 0x7f00_0000_0000n;

/** A memslot table that records the live mappings like KVM would. */
class FakeSlots implements MemslotTable {
  next = 0;
  live = new Map<number, { gpa: number; size: number; host: bigint }>();
  calls = 0;
  unmaps: number[] = [];
  released: number[] = [];
  /** Refuse the map call with this index (counting from 0), as KVM out of memory would. */
  failAt = -1;

  allocate(): number {
    return this.next++;
  }

  map(slot: number, gpa: number, size: number, host: bigint): void {
    assert.ok(!this.live.has(slot), `slot ${slot} mapped twice`);
    if (this.calls === this.failAt) throw new Error('KVM_SET_USER_MEMORY_REGION: ENOMEM');
    this.calls++;
    this.live.set(slot, { gpa, size, host });
  }

  unmap(slot: number): void {
    assert.ok(this.live.delete(slot), `slot ${slot} unmapped but not live`);
    this.calls++;
    this.unmaps.push(slot);
  }

  release(slot: number): void {
    assert.ok(!this.live.has(slot), `slot ${slot} released while mapped`);
    this.released.push(slot);
  }

  /** The mapped ranges, sorted, as [gpa, size] pairs. */
  ranges(): [number, number][] {
    return [...this.live.values()].sort((a, b) => a.gpa - b.gpa).map((r) => [r.gpa, r.size]);
  }
}

function region(blocks = 16) {
  const slots = new FakeSlots();
  const backing = new BufferBacking(blocks * BLOCK, HOST);
  return { slots, backing, r: new PluggableRegion(GPA, BLOCK, backing, slots) };
}

/** Whether every page of block `b` is protected from host and guest access. */
function guarded(backing: BufferBacking, b: number): boolean {
  for (let p = (b * BLOCK) / PAGE_SIZE; p < ((b + 1) * BLOCK) / PAGE_SIZE; p++) {
    if (!backing.protectedPages.has(p)) return false;
  }
  return true;
}

test('a new region is all unplugged, unmapped and protected', () => {
  const { slots, backing, r } = region(4);
  assert.equal(slots.live.size, 0);
  for (let b = 0; b < 4; b++) assert.ok(guarded(backing, b));
  assert.equal(r.picture(), '....');
});

test('a plug request gets one slot over its blocks, at their host offset, and host access', () => {
  const { slots, backing, r } = region();
  r.plug(2 * BLOCK, 3 * BLOCK);
  assert.deepEqual(slots.ranges(), [[GPA + 2 * BLOCK, 3 * BLOCK]]);
  assert.deepEqual(
    [...slots.live.values()].map((v) => v.host),
    [HOST + BigInt(2 * BLOCK)],
  );
  assert.equal(r.slotCount, 1);
  for (const b of [2, 3, 4]) assert.ok(!guarded(backing, b), `block ${b}`);
  for (const b of [1, 5]) assert.ok(guarded(backing, b), `block ${b}`);
});

test('a plug beside plugged blocks never deletes their slots', () => {
  const { slots, r } = region();
  r.plug(0, BLOCK);
  r.plug(2 * BLOCK, BLOCK);
  r.plug(BLOCK, BLOCK);
  assert.deepEqual(slots.unmaps, []);
  assert.equal(r.slotCount, 3);
  assert.equal(r.picture(), '###.............');
});

test('unplugging part of a slot keeps the slot but protects and discards those blocks', () => {
  const { slots, backing, r } = region();
  r.plug(0, 8 * BLOCK);
  backing.bytes.fill(7, 0, 8 * BLOCK);
  r.unplug(3 * BLOCK, 2 * BLOCK);
  assert.deepEqual(slots.unmaps, []);
  assert.deepEqual(slots.ranges(), [[GPA, 8 * BLOCK]]);
  assert.ok(guarded(backing, 3) && guarded(backing, 4));
  assert.ok(!guarded(backing, 2) && !guarded(backing, 5));
  assert.equal(backing.residentBytes(3 * BLOCK, 2 * BLOCK), 0);
  assert.equal(backing.bytes[3 * BLOCK - 1], 7);
  assert.equal(backing.bytes[5 * BLOCK], 7);
  assert.equal(r.picture(), '###..###........');
});

test('a slot goes when its last plugged block is unplugged', () => {
  const { slots, r } = region();
  r.plug(0, 4 * BLOCK);
  r.plug(4 * BLOCK, 2 * BLOCK);
  r.unplug(0, 2 * BLOCK);
  assert.equal(r.slotCount, 2);
  r.unplug(2 * BLOCK, 4 * BLOCK);
  assert.equal(slots.live.size, 0);
  assert.equal(slots.unmaps.length, 2);
  assert.equal(r.slotCount, 0);
});

test('plugging a block its slot still maps only gives host access back', () => {
  const { slots, backing, r } = region();
  r.plug(0, 4 * BLOCK);
  r.unplug(BLOCK, BLOCK);
  const calls = slots.calls;
  r.plug(BLOCK, BLOCK);
  assert.equal(slots.calls, calls);
  assert.ok(!guarded(backing, 1));
  assert.equal(r.picture(), '####............');
});

test('isolateUnplugged leaves only plugged runs in slots, once', () => {
  const { slots, r } = region();
  r.plug(0, 8 * BLOCK);
  r.plug(10 * BLOCK, 2 * BLOCK);
  r.unplug(3 * BLOCK, 2 * BLOCK);
  r.unplug(7 * BLOCK, BLOCK);
  assert.equal(r.isolateUnplugged(), true);
  assert.deepEqual(slots.ranges(), [
    [GPA, 3 * BLOCK],
    [GPA + 5 * BLOCK, 2 * BLOCK],
    [GPA + 10 * BLOCK, 2 * BLOCK],
  ]);
  assert.equal(r.isolateUnplugged(), false);
  r.unplug(5 * BLOCK, 2 * BLOCK);
  assert.equal(r.slotCount, 2);
});

test('a plug KVM refuses halfway undoes its slots and host access', () => {
  const { slots, backing, r } = region(4);
  r.plug(BLOCK, BLOCK);
  slots.failAt = 2;
  assert.throws(() => r.plug(0, 3 * BLOCK), /ENOMEM/);
  assert.deepEqual(slots.ranges(), [[GPA + BLOCK, BLOCK]]);
  assert.equal(slots.released.length, 1);
  assert.equal(r.slotCount, 1);
  assert.equal(r.picture(), '.#..');
  assert.ok(guarded(backing, 0) && guarded(backing, 2));
  assert.ok(!guarded(backing, 1));
  assert.equal(r.allPlugged(0, BLOCK), false);
});

test('an unplugged block access is a violation: reads all ones, writes nothing', () => {
  const { backing, r } = region();
  const data = new Uint8Array(4);
  assert.equal(r.access(5 * BLOCK, data, false), 'violation');
  assert.deepEqual([...data], [0xff, 0xff, 0xff, 0xff]);
  assert.equal(r.access(5 * BLOCK, Uint8Array.of(1, 2, 3, 4), true), 'violation');
  assert.equal(backing.residentBytes(0, backing.size), 0);
});

test('an access to a plugged block without a slot is completed on the backing', () => {
  const { backing, r } = region();
  r.plug(0, BLOCK);
  assert.equal(r.access(16, Uint8Array.of(9, 8), true), 'emulated');
  assert.deepEqual([...backing.bytes.subarray(16, 18)], [9, 8]);
  const out = new Uint8Array(2);
  assert.equal(r.access(16, out, false), 'emulated');
  assert.deepEqual([...out], [9, 8]);
});

test('unplugAll removes every slot and empties the region', () => {
  const { slots, backing, r } = region();
  r.plug(0, 4 * BLOCK);
  r.plug(8 * BLOCK, 2 * BLOCK);
  backing.bytes.fill(1, 0, 4 * BLOCK);
  r.unplugAll();
  assert.equal(slots.live.size, 0);
  for (let b = 0; b < 16; b++) assert.ok(guarded(backing, b));
  assert.equal(r.residentBytes(), 0);
  assert.equal(r.picture(), '.'.repeat(16));
});

test('ranges that are not whole blocks are refused before anything changes', () => {
  const { slots, r } = region();
  assert.throws(() => r.plug(BLOCK / 2, BLOCK), /not whole blocks/);
  assert.throws(() => r.plug(15 * BLOCK, 2 * BLOCK), /not whole blocks/);
  assert.equal(slots.calls, 0);
});
