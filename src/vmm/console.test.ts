import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConsoleSink, PanicDetector } from './console.js';

const bytes = (s: string) => new TextEncoder().encode(s);

test('the panic banner fires once, also after a false start', () => {
  let fired = 0;
  const d = new PanicDetector(() => fired++);
  for (const b of bytes('[ 1.0] Kernel paKernel panic - not syncing: VFS\n')) d.push(b);
  assert.equal(fired, 1);
  for (const b of bytes('Kernel panic - not syncing')) d.push(b);
  assert.equal(fired, 1, 'once per boot');
  d.clear();
  for (const b of bytes('Kernel panic - not syncing')) d.push(b);
  assert.equal(fired, 2);
});

test('ordinary console text does not fire', () => {
  let fired = 0;
  const d = new PanicDetector(() => fired++);
  for (const b of bytes('Kernel command line: panic=1\nnot syncing\n')) d.push(b);
  assert.equal(fired, 0);
});

test('the console sink batches bytes into one write per turn, in order', async () => {
  const writes: string[] = [];
  const sink = new ConsoleSink((b) => writes.push(new TextDecoder().decode(b)));
  for (const b of bytes('hello ')) sink.push(b);
  for (const b of bytes('world')) sink.push(b);
  assert.deepEqual(writes, []);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, ['hello world']);
  const big = 'x'.repeat(10000);
  for (const b of bytes(big)) sink.push(b);
  sink.flush();
  assert.equal(writes[1], big);
});
