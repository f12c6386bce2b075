import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bootMsrs, pvMsrsOff } from './msr.js';

describe('bootMsrs', () => {
  it('zeroes the syscall MSRs and the TSC, enables fast strings and write-back MTRRs', () => {
    const byIndex = new Map(bootMsrs().map((m) => [m.index, m.data]));
    assert.equal(byIndex.size, 11);
    for (const index of [0x10, 0x174, 0x175, 0x176, 0xc0000081, 0xc0000082, 0xc0000083]) {
      assert.equal(byIndex.get(index), 0n, `MSR 0x${index.toString(16)}`);
    }
    assert.equal(byIndex.get(0xc0000084), 0n);
    assert.equal(byIndex.get(0xc0000102), 0n);
    assert.equal(byIndex.get(0x1a0), 1n);
    assert.equal(byIndex.get(0x2ff), 0x806n);
  });
});

describe('pvMsrsOff', () => {
  it('switches off every paravirtual area KVM writes into guest memory', () => {
    // kvmclock (old and new numbers), async page fault, steal time, paravirtual EOI.
    assert.deepEqual(
      pvMsrsOff().map((m) => [m.index, m.data]),
      [0x12, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04].map((i) => [i, 0n]),
    );
  });
});
