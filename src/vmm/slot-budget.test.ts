import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInputError } from '../util/errors.js';
import { checkSlotBudget } from './vmm.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const device = (id: string, regionSize: number, blockSize = 2 * MiB) => ({
  config: { id, regionSize, blockSize },
});

test('regions whose blocks fit the free memory slots are accepted', () => {
  // 4 GiB in 2 MiB blocks is 2048 blocks; 1 GiB in 4 MiB blocks is 256.
  checkSlotBudget([device('a', 4 * GiB), device('b', GiB, 4 * MiB)], 2304);
});

test('one block more than the free slots is refused, naming each device', () => {
  assert.throws(
    () => checkSlotBudget([device('a', 4 * GiB), device('b', GiB, 4 * MiB)], 2303),
    (err: unknown) =>
      err instanceof InvalidInputError &&
      /2304 blocks in all \(a 2048, b 256\)/.test(err.message) &&
      /2303 left/.test(err.message),
  );
});
