import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rogueKernel } from './rogue.js';

test('the rogue kernel is a loadable ELF64 with its entry right after the headers', () => {
  const elf = Buffer.from(rogueKernel(5 * 2 ** 30, 100));
  assert.equal(elf.readUInt32BE(0), 0x7f454c46);
  assert.equal(elf.readUInt16LE(18), 0x3e);
  assert.equal(elf.readBigUInt64LE(24), 0x10_0000n + 120n);
  assert.equal(elf.readUInt32LE(64), 1);
  assert.equal(elf.readBigUInt64LE(64 + 24), 0x10_0000n);
  assert.equal(Number(elf.readBigUInt64LE(64 + 32)), elf.length);
  // The PDPT entry maps GiB 5 with a 1 GiB page, at PDPT index 5.
  assert.equal(elf.readBigUInt64LE(120 + 2), 5n * 2n ** 30n + 0x83n);
  assert.equal(elf.readBigUInt64LE(120 + 12), 0xa000n + 40n);
  // The loop counter and the jump back to the loop's first instruction.
  assert.equal(elf.readUInt32LE(120 + 36 + 1), 100);
  const jnz = elf.indexOf(Buffer.from([0x75, 0xee]));
  assert.equal(jnz - (120 + 41), 16);
});

test('targets the boot page tables already map or that cross 1 GiB are refused', () => {
  assert.throws(() => rogueKernel(2 ** 30, 1), /target >= 4 GiB/);
  assert.throws(() => rogueKernel(5 * 2 ** 30 - 4096, 2), /cross a 1 GiB/);
  assert.throws(() => rogueKernel(5 * 2 ** 30 + 4, 2), /aligned/);
});
