import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import {
  BOX_SILENCE_SECONDS,
  BOX_WEDGE_STUCK_SECONDS,
  jobScript,
  kvmHolderLine,
  longestSoftLockup,
  shellQuote,
  wedgeReason,
} from './box.js';

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

test('longestSoftLockup reads the longest stuck time of the box kernel soft-lockup lines', () => {
  const log = [
    'box: running job',
    '[   21.710655] kvm [141]: vcpu0, guest rIP: 0xffffffffb327e744 Unhandled WRMSR(0xc0010007)',
    '[  137.202510] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [node:211]',
    '[  165.293002] watchdog: BUG: soft lockup - CPU#1 stuck for 152s! [node:212]',
    '[  193.200934] watchdog: BUG: soft lockup - CPU#0 stuck for 78s! [node:211]',
  ];
  assert.equal(longestSoftLockup(log.join('\n')), 152);
  assert.equal(longestSoftLockup(log.slice(0, 2).join('\n')), 0);
  assert.equal(longestSoftLockup(log.slice(0, 3).join('\n')), 26);
});

test('wedgeReason: a long soft lockup, or a silent box; not a short stall or a recent beat', () => {
  const lockup = (s: number) => `watchdog: BUG: soft lockup - CPU#1 stuck for ${s}s! [node:9]`;
  const now = 1_000_000;
  const quiet = now - BOX_SILENCE_SECONDS * 1000;
  assert.equal(wedgeReason(lockup(26), now - 1000, now), undefined);
  assert.equal(wedgeReason('', quiet + 1000, now), undefined);
  assert.match(wedgeReason(lockup(BOX_WEDGE_STUCK_SECONDS), now, now) ?? '', /stuck for 150 s/);
  assert.match(wedgeReason('', quiet, now) ?? '', /no heartbeat for 180 s/);
});

test('kvmHolderLine starts this node on the holder script, which exists, in the background', () => {
  const line = kvmHolderLine();
  const [node, script] = [...line.matchAll(/'([^']*)'/g)].map((m) => m[1]!);
  assert.equal(node, process.execPath);
  assert.ok(script?.endsWith('/kvm-holder.js') && existsSync(script), script);
  assert.match(line, /&$/);
});
