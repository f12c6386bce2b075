import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GiB, MiB } from '../util/size.js';
import { parseVirtioMem } from './config.js';
import { bootRamRanges, nodeRamRanges, placeVirtioMem } from './layout.js';

test('virtio-mem regions start at 4 GiB above small boot RAM, one after another', () => {
  const ram = bootRamRanges(GiB);
  const placed = placeVirtioMem(ram, [parseVirtioMem('4G', 0), parseVirtioMem('1G', 1)]);
  assert.deepEqual(
    placed.map((p) => p.gpa),
    [4 * GiB, 8 * GiB],
  );
});

test('virtio-mem regions go above boot RAM that reaches past 4 GiB', () => {
  const ram = bootRamRanges(4 * GiB + 512 * MiB);
  assert.deepEqual(ram, [
    { gpa: 0, size: 3 * GiB },
    { gpa: 4 * GiB, size: GiB + 512 * MiB },
  ]);
  assert.equal(placeVirtioMem(ram, [parseVirtioMem('1G', 0)])[0]!.gpa, 6 * GiB);
});

test('boot RAM is handed to nodes in order, across the 32-bit hole', () => {
  const ram = bootRamRanges(4 * GiB);
  const nodes = nodeRamRanges(ram, [
    { node: 0, cpus: [0], memory: 2 * GiB },
    { node: 1, cpus: [1], memory: 0 },
    { node: 2, cpus: [2], memory: 2 * GiB },
  ]);
  assert.deepEqual(nodes, [
    [{ gpa: 0, size: 2 * GiB }],
    [],
    [
      { gpa: 2 * GiB, size: GiB },
      { gpa: 4 * GiB, size: GiB },
    ],
  ]);
});
