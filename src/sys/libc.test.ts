import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countOnes } from './libc.js';

describe('countOnes', () => {
  const vector = (pattern: (i: number) => number, length = 10_000) =>
    Buffer.from(Array.from({ length }, (_, i) => pattern(i)));

  it('counts the resident pages of a mincore vector in every layout', () => {
    assert.equal(countOnes(Buffer.alloc(0)), 0);
    assert.equal(countOnes(vector(() => 0)), 0);
    assert.equal(countOnes(vector(() => 1)), 10_000);
    assert.equal(countOnes(vector((i) => i % 2)), 5_000);
    assert.equal(countOnes(vector((i) => ((i >> 9) & 1) ^ 1)), 5_120);
    assert.equal(countOnes(vector((i) => (i === 0 || i === 9_999 ? 1 : 0))), 2);
  });
});
