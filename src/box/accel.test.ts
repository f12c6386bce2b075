import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { detectAccel } from './accel.js';

test('detectAccel: box without /dev/kvm or with kvm_pvm, native with a real one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accel-test-'));
  try {
    const paths = { devKvm: join(dir, 'kvm'), kvmPvm: join(dir, 'kvm_pvm') };
    assert.equal(detectAccel(paths), 'box');
    writeFileSync(paths.devKvm, '');
    assert.equal(detectAccel(paths), 'native');
    mkdirSync(paths.kvmPvm);
    assert.equal(detectAccel(paths), 'box');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
