import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSize, parseSize } from './size.js';

test('sizes with binary units parse to bytes', () => {
  assert.equal(parseSize('512M', '--memory'), 512 * 2 ** 20);
  assert.equal(parseSize('1G', '--memory'), 2 ** 30);
  assert.equal(parseSize('1536MiB', '--memory'), 1536 * 2 ** 20);
  assert.equal(parseSize('4096', '--memory'), 4096);
  assert.equal(parseSize('1.5G', '--memory'), 1.5 * 2 ** 30);
  assert.equal(parseSize('2k', '--memory'), 2048);
});

test('a bad size names the flag', () => {
  for (const bad of ['', 'abc', '-1G', '1X', '1.0000000001K', '99999999999T', '1 G B']) {
    assert.throws(
      () => parseSize(bad, '--memory'),
      (err: Error) => {
        assert.match(err.message, /^--memory: /);
        return true;
      },
    );
  }
});

test('formatSize picks the largest unit that divides', () => {
  assert.equal(formatSize(130 * 2 ** 20), '130 MiB');
  assert.equal(formatSize(2 ** 30), '1 GiB');
  assert.equal(formatSize(1536), '1.50 KiB');
  assert.equal(formatSize(7), '7 B');
});
