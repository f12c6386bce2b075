import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { BOX_WEDGE_PATTERN, jobScript, shellQuote } from './box.js';

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

test('the wedge pattern matches the box kernel soft-lockup line and not its ordinary lines', () => {
  const stuck = '[  865.201159] watchdog: BUG: soft lockup - CPU#0 stuck for 704s! [node:211]';
  assert.ok(BOX_WEDGE_PATTERN.test(stuck));
  const fine = [
    'box: running job',
    '[   21.710655] kvm [141]: vcpu0, guest rIP: 0xffffffffb327e744 Unhandled WRMSR(0xc0010007)',
  ];
  for (const line of fine) assert.ok(!BOX_WEDGE_PATTERN.test(line), line);
});
