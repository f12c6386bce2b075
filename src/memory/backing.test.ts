import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { type BackingKind, MappedBacking } from './backing.js';

const MiB = 1 << 20;

/** The /proc/self/maps line of the mapping that starts at `addr`, as [start, end, perms]. */
function mappingAt(addr: bigint): [bigint, bigint, string] | undefined {
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
    if (m && BigInt(`0x${m[1]}`) === addr) return [addr, BigInt(`0x${m[2]}`), m[3]!];
  }
  return undefined;
}

for (const kind of ['anonymous', 'memfd'] as BackingKind[]) {
  test(`a ${kind} backing starts on a 2 MiB boundary and maps exactly its size`, () => {
    const size = 6 * MiB + 4096;
    const b = new MappedBacking(size, kind);
    try {
      assert.equal(b.hostAddress % BigInt(2 * MiB), 0n);
      const [start, end, perms] = mappingAt(b.hostAddress) ?? assert.fail('no mapping');
      assert.equal(end - start, BigInt(size));
      assert.match(perms, /^rw/);
      b.chunkView(size - 8, 8).fill(1);
      assert.equal(b.residentBytes(size - 4096, 4096), 4096);
    } finally {
      b.release();
    }
  });
}
