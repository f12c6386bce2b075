import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferBacking } from './backing.js';
import { GuestMemory, GuestMemoryError, gpaFromGuest } from './guest-memory.js';

function memory() {
  return new GuestMemory([
    { name: 'low', gpa: 0, size: 0x10000, backing: new BufferBacking(0x10000) },
    { name: 'high', gpa: 0x10000, size: 0x1000, backing: new BufferBacking(0x1000) },
    { name: 'far', gpa: 0x100000, size: 0x1000, backing: new BufferBacking(0x1000) },
  ]);
}

test('little-endian accessors round trip', () => {
  const m = memory();
  m.writeU16(0x10, 0xbeef);
  m.writeU32(0x20, 0xdeadbeef);
  m.writeU64(0x30, 0x0123_4567_89ab_cdefn);
  assert.equal(m.readU16(0x10), 0xbeef);
  assert.equal(m.readU8(0x10), 0xef);
  assert.equal(m.readU32(0x20), 0xdeadbeef);
  assert.equal(m.readU64(0x30), 0x0123_4567_89ab_cdefn);
});

test('an access may span two adjacent regions', () => {
  const m = memory();
  m.writeU32(0xfffe, 0x11223344);
  assert.equal(m.readU32(0xfffe), 0x11223344);
  assert.deepEqual([...m.read(0x10000, 2)], [0x22, 0x11]);
});

test('accesses outside guest memory throw and write nothing', () => {
  const m = memory();
  assert.throws(() => m.readU32(0x10ffe), GuestMemoryError);
  assert.throws(() => m.write(0x10fff, Uint8Array.of(1, 2)), GuestMemoryError);
  assert.equal(m.readU8(0x10fff), 0);
  assert.throws(() => m.read(-1, 1), GuestMemoryError);
  assert.throws(() => m.read(2 ** 60, 1), GuestMemoryError);
  assert.equal(m.contains(0x100000, 0x1000), true);
  assert.equal(m.contains(0x100000, 0x1001), false);
});

test('overlapping regions are refused', () => {
  const b = new BufferBacking(0x2000);
  assert.throws(
    () =>
      new GuestMemory([
        { name: 'a', gpa: 0, size: 0x2000, backing: b },
        { name: 'b', gpa: 0x1000, size: 0x2000, backing: b },
      ]),
    /overlaps/,
  );
});

test('guest-supplied 64-bit addresses beyond 2^52 are not guest memory', () => {
  assert.equal(gpaFromGuest(0x1000n), 0x1000);
  assert.equal(gpaFromGuest(2n ** 63n), null);
});

test('a region may refuse ranges it has not given to the guest', () => {
  const backing = new BufferBacking(0x4000);
  const m = new GuestMemory([
    {
      name: 'hotplug',
      gpa: 0x10000,
      size: 0x4000,
      backing,
      accessible: (offset, len) => offset >= 0x2000 && offset + len <= 0x4000,
    },
  ]);
  assert.throws(() => m.write(0x10000, Uint8Array.of(1)), GuestMemoryError);
  assert.throws(() => m.read(0x11ff0, 0x20), GuestMemoryError);
  m.writeU32(0x12000, 7);
  assert.equal(m.readU32(0x12000), 7);
  assert.equal(backing.bytes[0], 0);
});
