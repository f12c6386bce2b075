import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'memvisor-run-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `memvisor run --accel native ARGS`; a run that does not end within 20 s fails the test. */
function run(...args: string[]) {
  const out = spawnSync(process.execPath, [CLI, 'run', '--accel', 'native', ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(out.error, undefined, `run ${args.join(' ')} did not end: ${out.stderr}`);
  // The native path may warn first that this KVM is the software kind.
  const lines = out.stderr.split('\n').filter((l) => l !== '' && !l.includes('software KVM'));
  return { status: out.status, lines };
}

test('run refuses a --kernel that is not a kernel, before booting, and exits', () => {
  const junk = join(dir, 'junk');
  writeFileSync(junk, Buffer.alloc(8192, 0x5a));
  const r = run('--kernel', junk);
  assert.equal(r.status, 2);
  assert.deepEqual(r.lines, [
    `memvisor: --kernel: '${junk}': kernel image: neither a bzImage nor an ELF file`,
  ]);
});

test('run refuses an --api-sock that is a file or a folder, keeping it, and exits', () => {
  const file = join(dir, 'precious.txt');
  writeFileSync(file, 'precious data');
  const r = run('--api-sock', file);
  assert.equal(r.status, 2);
  assert.deepEqual(r.lines, [
    `memvisor: --api-sock: ${file} exists and is not a socket; not replacing it`,
  ]);
  assert.equal(readFileSync(file, 'utf8'), 'precious data');

  const missing = run('--api-sock', join(dir, 'no-such-folder', 'vm.sock'));
  assert.equal(missing.status, 2);
  assert.deepEqual(missing.lines, [
    `memvisor: --api-sock: folder ${join(dir, 'no-such-folder')} does not exist`,
  ]);

  const folder = join(dir, 'sockdir');
  mkdirSync(folder);
  const f = run('--api-sock', folder);
  assert.equal(f.status, 2);
  assert.equal(f.lines.length, 1);
  assert.match(f.lines[0]!, /--api-sock: .*sockdir exists and is not a socket/);
});

test('run refuses --balloon options it does not know, naming the flag, and exits', () => {
  const known = 'known: deflate-on-oom, stats=0..3600 seconds';
  for (const [value, item] of [
    ['stats=3601', 'stats=3601'],
    ['deflate-on-oom,stats=-1', 'stats=-1'],
    ['free-page-hinting', 'free-page-hinting'],
  ]) {
    const r = run('--balloon', value!);
    assert.equal(r.status, 2, value);
    assert.deepEqual(r.lines, [`memvisor: --balloon: '${item}' is not an option (${known})`]);
  }
});
