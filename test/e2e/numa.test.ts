/**
 * Issue 4: one virtio-mem device per NUMA node; each node grows and shrinks alone, a node
 * without boot memory gets memory only through its device, and all devices converge together.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { guestOutput, memTotalKiB, resizeAndWait } from '../../src/api/converge.js';
import { type LaunchedVm, launchVm } from '../../src/api/launcher.js';
import type { VmStatus } from '../../src/vmm/controller.js';
import { BOOT_TIMEOUT_MS, GiB, MiB, closeKeepingLog, nodeMemTotalKiB } from './support.js';

/** Node n's MemTotal in KiB for each n of `nodes` (0 for a node the guest does not show). */
const nodeTotals = (vm: LaunchedVm, nodes: number[]) =>
  Promise.all(nodes.map((n) => nodeMemTotalKiB(vm.api, n).catch(() => 0)));

describe('two NUMA nodes with two vCPUs each, one device each', { timeout: 3_600_000 }, () => {
  let vm: LaunchedVm;
  let base: number[] = [];
  let total = 0;

  before(async () => {
    vm = await launchVm(
      [
        '--vcpus',
        '4',
        '--memory',
        '1536M',
        '--numa',
        'node=0,cpus=0-1,memory=1G',
        '--numa',
        'node=1,cpus=2-3,memory=512M',
        '--virtio-mem',
        '1G,id=n0,node=0',
        '--virtio-mem',
        '1G,id=n1,node=1',
      ],
      { timeoutMs: BOOT_TIMEOUT_MS },
    );
    base = await nodeTotals(vm, [0, 1]);
    total = await memTotalKiB(vm.api);
  });
  after(() => closeKeepingLog(vm, 'numa-2x2'));

  test('the guest sees each node with its CPUs and boot memory', async () => {
    const cpulist = async (n: number) =>
      (await guestOutput(vm.api, `cat /sys/devices/system/node/node${n}/cpulist`)).trim();
    assert.equal(await cpulist(0), '0-1');
    assert.equal(await cpulist(1), '2-3');
    assert.ok(base[0]! > 900_000 && base[0]! <= 1_048_576, `node 0 ${base[0]} kB`);
    assert.ok(base[1]! > 400_000 && base[1]! <= 524_288, `node 1 ${base[1]} kB`);
    const srat = await guestOutput(vm.api, 'dmesg | grep -i "SRAT" || true');
    assert.match(srat, /hotplug/i);
  });

  test("node 1's device to 1 GiB grows node 1 by exactly 1 GiB, node 0 not at all", async () => {
    await resizeAndWait(vm.api, 'n1', GiB, { baseKiB: total });
    const now = await nodeTotals(vm, [0, 1]);
    assert.equal(now[1]! - base[1]!, GiB / 1024);
    assert.equal(now[0], base[0]);
    const status = await vm.api.call<VmStatus>('GET', '/v1/vm');
    const node = (n: number) => status.numa_nodes.find((x) => x.node === n)!;
    assert.deepEqual(
      [node(0).plugged_size, node(1).plugged_size, node(1).requested_size],
      [0, GiB, GiB],
    );
    assert.equal(node(1).boot_memory, 512 * MiB);
  });

  test('node 0 + 512 MiB and node 1 back to 0: each node changes alone', async () => {
    // baseKiB is MemTotal without this device's memory: the other device's stays counted.
    await resizeAndWait(vm.api, 'n0', 512 * MiB, { baseKiB: total + GiB / 1024 });
    let now = await nodeTotals(vm, [0, 1]);
    assert.equal(now[0]! - base[0]!, (512 * MiB) / 1024);
    assert.equal(now[1]! - base[1]!, GiB / 1024);
    await resizeAndWait(vm.api, 'n1', 0, { baseKiB: total + (512 * MiB) / 1024 });
    now = await nodeTotals(vm, [0, 1]);
    assert.equal(now[1], base[1]);
    assert.equal(now[0]! - base[0]!, (512 * MiB) / 1024);
  });
});

// Nodes 0 and 1 get one vCPU each here, not two: with vCPUs 2-3 on node 1 of this four-node VM,
// the nested guest's vCPU 3 ended in a triple fault (KVM_EXIT_SHUTDOWN) within minutes in three
// of about six long runs in the box, with no guest log line before it. The two-node VM above,
// two vCPUs per node, ran clean. The cause is not found (README, Known gaps).
describe(
  'four NUMA nodes, two without CPUs or boot memory, one device each',
  {
    timeout: 3_600_000,
  },
  () => {
    let vm: LaunchedVm;
    let base: number[] = [];
    let total = 0;

    before(async () => {
      vm = await launchVm(
        [
          '--vcpus',
          '2',
          '--memory',
          '1536M',
          '--numa',
          'node=0,cpus=0,memory=1G',
          '--numa',
          'node=1,cpus=1,memory=512M',
          // Nodes 2 and 3 have neither CPUs nor boot memory: only their devices give them memory.
          '--numa',
          'node=2',
          '--numa',
          'node=3',
          '--virtio-mem',
          '1G,id=n0,node=0',
          '--virtio-mem',
          '1G,id=n1,node=1',
          '--virtio-mem',
          '1G,id=n2,node=2',
          '--virtio-mem',
          '1G,id=n3,node=3',
        ],
        { timeoutMs: BOOT_TIMEOUT_MS },
      );
      base = await nodeTotals(vm, [0, 1, 2, 3]);
      total = await memTotalKiB(vm.api);
    });
    after(() => closeKeepingLog(vm, 'numa-4'));

    test('nodes without boot memory show no memory', () => {
      assert.deepEqual(base.slice(2), [0, 0]);
    });

    test('a node without boot memory gets memory only through its device', async () => {
      await resizeAndWait(vm.api, 'n2', 256 * MiB, { baseKiB: total });
      assert.deepEqual(await nodeTotals(vm, [0, 1, 2, 3]), [
        base[0],
        base[1],
        (256 * MiB) / 1024,
        0,
      ]);
      await resizeAndWait(vm.api, 'n2', 0, { baseKiB: total });
      // With its last memory block gone the guest drops the node: it shows no memory at all.
      assert.deepEqual(await nodeTotals(vm, [2]), [0]);
    });

    test('four devices resized at the same time all converge', async () => {
      const sizes = [256 * MiB, 512 * MiB, 128 * MiB, 384 * MiB];
      await Promise.all(
        sizes.map((s, i) => vm.api.call('PATCH', `/v1/virtio-mem/n${i}`, { requested_size: s })),
      );
      const steps = await Promise.all(sizes.map((s, i) => resizeAndWait(vm.api, `n${i}`, s)));
      steps.forEach((step, i) => assert.equal(step.device.plugged_size, sizes[i]));
      const now = await nodeTotals(vm, [0, 1, 2, 3]);
      sizes.forEach((s, i) => assert.equal(now[i]! - base[i]!, s / 1024, `node ${i}`));
    });
  },
);
