/** Issue 2: memvisor boots Debian's kernel, runs commands through the agent, ends cleanly. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { guestOutput, memTotalKiB } from '../../src/api/converge.js';
import { type LaunchedVm, launchVm } from '../../src/api/launcher.js';
import { BOOT_TIMEOUT_MS, closeKeepingLog, guestNumber, memvisor } from './support.js';

test(
  'run --exec prints nproc and MemTotal of a 2-vCPU 1 GiB guest',
  { timeout: BOOT_TIMEOUT_MS },
  async () => {
    const r = await memvisor([
      'run',
      '--vcpus',
      '2',
      '--memory',
      '1G',
      '--console',
      '/dev/null',
      '--exec',
      'nproc; grep MemTotal /proc/meminfo',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [nproc, mem] = r.stdout.trim().split('\n');
    assert.equal(nproc, '2');
    const kib = Number(/MemTotal:\s+(\d+) kB/.exec(mem ?? '')?.[1]);
    assert.ok(kib > 900_000 && kib <= 1_048_576, `MemTotal ${kib} kB`);
  },
);

describe('a 1-vCPU 512 MiB guest', { timeout: BOOT_TIMEOUT_MS * 2 }, () => {
  let vm: LaunchedVm;
  before(async () => {
    vm = await launchVm(['--vcpus', '1', '--memory', '512M'], { timeoutMs: BOOT_TIMEOUT_MS });
  });
  after(() => closeKeepingLog(vm, 'boot-1vcpu'));

  test('nproc is 1 and MemTotal follows --memory', async () => {
    assert.equal(await guestNumber(vm.api, 'nproc'), 1);
    const kib = await memTotalKiB(vm.api);
    assert.ok(kib > 400_000 && kib <= 524_288, `MemTotal ${kib} kB`);
  });

  test('exit codes, stdout and stderr come back exactly, binary-safe', async () => {
    const r = await vm.api.call<{ code: number; stdout: string; stderr: string }>(
      'POST',
      '/v1/exec',
      {
        command: "printf 'a\\000b\\377'; echo oops >&2; exit 42",
      },
    );
    assert.equal(r.code, 42);
    assert.deepEqual([...Buffer.from(r.stdout, 'base64')], [0x61, 0, 0x62, 0xff]);
    assert.equal(Buffer.from(r.stderr, 'base64').toString(), 'oops\n');
    assert.equal((await guestOutput(vm.api, 'echo fine')).trim(), 'fine');
  });

  test('poweroff in the guest ends the VMM with status 0', async () => {
    vm.api.call('POST', '/v1/exec', { command: 'poweroff -f' }).catch(() => {});
    assert.equal(await vm.exited, 0);
  });
});

describe('a 4-vCPU 2 GiB guest', { timeout: BOOT_TIMEOUT_MS * 2 }, () => {
  let vm: LaunchedVm;
  before(async () => {
    vm = await launchVm(['--vcpus', '4', '--memory', '2G'], { timeoutMs: BOOT_TIMEOUT_MS });
  });
  after(() => closeKeepingLog(vm, 'boot-4vcpu'));

  test('nproc is 4 and MemTotal follows --memory', async () => {
    assert.equal(await guestNumber(vm.api, 'nproc'), 4);
    const kib = await memTotalKiB(vm.api);
    assert.ok(kib > 1_900_000 && kib <= 2_097_152, `MemTotal ${kib} kB`);
  });

  test('a guest kernel panic ends the VMM non-zero with the panic in its log', async () => {
    vm.api.call('POST', '/v1/exec', { command: 'echo c > /proc/sysrq-trigger' }).catch(() => {});
    const code = await vm.exited;
    assert.notEqual(code, 0);
    assert.match(vm.output(), /Kernel panic - not syncing/);
  });
});
