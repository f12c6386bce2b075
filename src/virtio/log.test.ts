import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RateLimitedLog, hex } from './log.js';

describe('RateLimitedLog', () => {
  it('lets a burst through per interval and reports what it suppressed', () => {
    const lines: string[] = [];
    let now = 1000;
    const log = new RateLimitedLog(
      'virtio-mem[m0]',
      (l) => lines.push(l),
      { burst: 2, intervalMs: 100 },
      () => now,
    );
    for (let i = 0; i < 5; i++) log.warn(`bad ${i}`);
    assert.deepEqual(lines, ['virtio-mem[m0]: bad 0', 'virtio-mem[m0]: bad 1']);
    now += 100;
    log.warn('bad 5');
    assert.deepEqual(lines.slice(2), [
      'virtio-mem[m0]: 3 similar warnings suppressed',
      'virtio-mem[m0]: bad 5',
    ]);
  });

  it('formats addresses as hexadecimal', () => {
    assert.equal(hex(0x1_0000_0000), '0x100000000');
    assert.equal(hex(0xfen), '0xfe');
  });
});
