import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  boxedArgv,
  dispatchAccel,
  insideBox,
  optionValue,
  resolveAccel,
  subcommandOf,
  takeAccelFlag,
} from './accel.js';

const CLI = fileURLToPath(new URL('./main.js', import.meta.url));

test('takeAccelFlag removes every --accel form before -- and keeps the last value', () => {
  const argv = ['--accel', 'box', 'run', '--memory', '1G', '--accel=native', '--exec', 'true'];
  assert.equal(takeAccelFlag(argv), 'native');
  assert.deepEqual(argv, ['run', '--memory', '1G', '--exec', 'true']);

  const none = ['demo', '--vcpus', '2'];
  assert.equal(takeAccelFlag(none), 'auto');
  assert.deepEqual(none, ['demo', '--vcpus', '2']);

  const afterDashes = ['box', '--accel=box', '--', 'node', '--accel', 'x'];
  assert.equal(takeAccelFlag(afterDashes), 'box');
  assert.deepEqual(afterDashes, ['box', '--', 'node', '--accel', 'x']);
});

test('takeAccelFlag names the flag on a bad or missing value', () => {
  assert.throws(() => takeAccelFlag(['run', '--accel', 'kvm']), {
    code: 'invalid_input',
    message: "--accel: 'kvm' is not one of native, box, auto",
  });
  assert.throws(() => takeAccelFlag(['run', '--accel']), {
    message: '--accel needs a value: native, box or auto',
  });
  assert.throws(() => takeAccelFlag(['run', '--accel=']), {
    message: '--accel needs a value: native, box or auto',
  });
});

test('the CLI exits 2 with one line naming --accel for a bad value', () => {
  const out = spawnSync(process.execPath, [CLI, 'run', '--accel=fast'], { encoding: 'utf8' });
  assert.equal(out.status, 2);
  assert.equal(out.stderr, "memvisor: --accel: 'fast' is not one of native, box, auto\n");
  assert.equal(out.stdout, '');
});

test('subcommandOf and optionValue find words and both option spellings', () => {
  assert.deepEqual(subcommandOf(['--help']), undefined);
  assert.deepEqual(subcommandOf(['-V', 'run', 'x']), { name: 'run', index: 1 });
  assert.deepEqual(subcommandOf(['--', 'run']), undefined);
  const argv = ['run', '--api-sock', '/a.sock', '--memory', '1G', '--api-sock=/b.sock'];
  assert.deepEqual(optionValue(argv, '--api-sock'), { value: '/b.sock', index: 5, joined: true });
  assert.deepEqual(optionValue(argv.slice(0, 5), '--api-sock'), {
    value: '/a.sock',
    index: 2,
    joined: false,
  });
  assert.equal(optionValue(['run', '--api-sock'], '--api-sock'), undefined);
});

test('boxedArgv asks for native after the subcommand and points --api-sock into the box', () => {
  assert.deepEqual(boxedArgv(['run', '--memory', '1G']), [
    'run',
    '--accel',
    'native',
    '--memory',
    '1G',
  ]);
  assert.deepEqual(boxedArgv(['run', '--api-sock', 'rel.sock', '--exec', 'id'], '/tmp/in.sock'), [
    'run',
    '--accel',
    'native',
    '--api-sock',
    '/tmp/in.sock',
    '--exec',
    'id',
  ]);
  assert.deepEqual(boxedArgv(['run', '--api-sock=/h.sock'], '/tmp/in.sock'), [
    'run',
    '--accel',
    'native',
    '--api-sock=/tmp/in.sock',
  ]);
});

test('inside the box every choice resolves to native', () => {
  const env = { MEMVISOR_IN_BOX: '1' };
  assert.equal(insideBox(env), true);
  assert.equal(insideBox({}), false);
  assert.equal(insideBox({ MEMVISOR_IN_BOX: '0' }), false);
  for (const choice of ['native', 'box', 'auto'] as const) {
    assert.equal(resolveAccel(choice, env), 'native');
  }
  assert.equal(resolveAccel('box', {}), 'box');
});

test('dispatchAccel leaves other commands and help to main, with --accel removed', async () => {
  const status = ['status', '--accel', 'box', '--api-sock', '/x.sock'];
  assert.equal(await dispatchAccel(status), undefined);
  assert.deepEqual(status, ['status', '--api-sock', '/x.sock']);

  const help = ['run', '--accel=box', '--help'];
  assert.equal(await dispatchAccel(help), undefined);
  assert.deepEqual(help, ['run', '--help']);
});
