import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { jobScript, shellQuote } from './box.js';

test('shellQuote survives quotes, spaces, dollars and newlines through a real sh', () => {
  const words = ["it's", 'a b', '$HOME', '`id`', 'x\ny', '', '\\'];
  const script = `printf '%s\\0' ${words.map(shellQuote).join(' ')}`;
  const out = spawnSync('sh', ['-c', script]).stdout.toString();
  assert.deepEqual(out.split('\0').slice(0, -1), words);
});

test('jobScript sets the folder and only the given environment, then runs argv', () => {
  const script = jobScript(
    ['sh', '-c', 'echo "$PWD|$A|${HOME-unset}|$0|$1"; exit 4', 'x y', 'z'],
    '/',
    {
      A: "q'uote",
    },
  );
  const run = spawnSync('sh', ['-c', script], { env: { PATH: process.env.PATH, HOME: '/h' } });
  assert.equal(run.status, 4);
  assert.equal(run.stdout.toString(), "/|q'uote|unset|x y|z\n");
});

test('jobScript exits 125 when the folder is missing, and refuses bad input', () => {
  const run = spawnSync('sh', ['-c', jobScript(['true'], '/nonexistent-dir', {})]);
  assert.equal(run.status, 125);
  assert.throws(() => jobScript([], '/', {}), { code: 'invalid_input' });
  assert.throws(() => jobScript(['true'], '/', { 'A=B': 'x' }), { code: 'invalid_input' });
});
