/**
 * Issues 3 and 6: a real Debian guest grows and shrinks through virtio-mem in 2 MiB steps, the
 * host gets unplugged memory back, guest data survives a shrink, the API refuses bad sizes, and
 * the balloon baseline works. One VM for all of it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ApiError } from '../../src/api/client.js';
import { guestOutput, memTotalKiB, resizeAndWait } from '../../src/api/converge.js';
import { type LaunchedVm, launchVm } from '../../src/api/launcher.js';
import type { BlockMap, VirtioMemStatus, VmStatus } from '../../src/vmm/controller.js';
import { BOOT_TIMEOUT_MS, GiB, MiB, closeKeepingLog } from './support.js';

const REGION = 4 * GiB;
const BLOCK = 2 * MiB;

describe('virtio-mem on a 1 GiB guest with a 4 GiB device', { timeout: 3_600_000 }, () => {
  let vm: LaunchedVm;
  let base = 0;

  before(async () => {
    vm = await launchVm(
      ['--vcpus', '2', '--memory', '1G', '--virtio-mem', '4G,id=mem0', '--balloon'],
      {
        timeoutMs: BOOT_TIMEOUT_MS,
      },
    );
    base = await memTotalKiB(vm.api);
  });
  after(() => closeKeepingLog(vm, 'virtio-mem'));

  const device = async (): Promise<VirtioMemStatus> =>
    (await vm.api.call<VmStatus>('GET', '/v1/vm')).virtio_mem[0]!;

  test('the device is where the layout puts it and starts empty', async () => {
    const d = await device();
    assert.equal(d.id, 'mem0');
    assert.equal(d.addr, 4 * GiB);
    assert.equal(d.region_size, REGION);
    assert.equal(d.block_size, BLOCK);
    assert.equal(d.plugged_size, 0);
    assert.equal(d.requested_size, 0);
    assert.equal(d.driver_ok, true);
    assert.ok(d.resident_bytes <= BLOCK, `resident ${d.resident_bytes}`);
    const iomem = await guestOutput(vm.api, 'cat /proc/iomem');
    assert.match(iomem, /100000000-1ffffffff : virtio\d+/);
  });

  test('0 -> 1 GiB -> 4 GiB -> 512 MiB -> 0: plugged, MemTotal, host memory follow', async () => {
    let previous = 0;
    for (const bytes of [GiB, 4 * GiB, 512 * MiB, 0]) {
      const step = await resizeAndWait(vm.api, 'mem0', bytes, { baseKiB: base });
      assert.equal(step.device.plugged_size, bytes);
      assert.equal(step.memTotalKiB - base, bytes / 1024);
      if (bytes < previous) {
        const d = await device();
        assert.ok(
          d.resident_bytes <= bytes + BLOCK,
          `resident ${d.resident_bytes} > plugged + 2 MiB`,
        );
      }
      previous = bytes;
    }
  });

  test('2 MiB steps: 130 MiB requested gives 130 MiB plugged and MemTotal + 130 MiB', async () => {
    const step = await resizeAndWait(vm.api, 'mem0', 130 * MiB, { baseKiB: base });
    assert.equal(step.device.plugged_size, 130 * MiB);
    assert.equal(step.memTotalKiB - base, (130 * MiB) / 1024);
  });

  test('the whole region plugs every block; the driver never marks the device broken', async () => {
    const step = await resizeAndWait(vm.api, 'mem0', REGION, { baseKiB: base });
    assert.equal(step.device.plugged_size, REGION);
    const map = await vm.api.call<BlockMap>('GET', '/v1/virtio-mem/mem0/blocks');
    assert.equal(map.plugged, '#'.repeat(REGION / BLOCK));
    const dmesg = await guestOutput(vm.api, 'dmesg');
    assert.doesNotMatch(dmesg, /marking device broken/);
  });

  test('a paused VM refuses guest commands at once and runs them again once resumed', async () => {
    await vm.api.call('PUT', '/v1/vm/pause');
    try {
      assert.equal((await vm.api.call<VmStatus>('GET', '/v1/vm')).state, 'paused');
      await assert.rejects(guestOutput(vm.api, 'echo x'), (err: ApiError) => {
        assert.equal(err.status, 409);
        assert.match(err.message, /paused/);
        return true;
      });
    } finally {
      await vm.api.call('PUT', '/v1/vm/resume');
    }
    assert.equal(await guestOutput(vm.api, 'echo back'), 'back\n');
  });

  test('bad sizes get HTTP 4xx with the reason and change nothing', async () => {
    const before = await device();
    const cases: [unknown, number, RegExp][] = [
      [3 * MiB, 400, /multiple of the block size|block/],
      [REGION + BLOCK, 400, /region|exceeds|above/],
      ['lots', 400, /not a size/],
      [-2, 400, /requested_size|minimum|>=/],
      [1.5, 400, /integer|requested_size/],
    ];
    for (const [value, status, message] of cases) {
      await assert.rejects(
        vm.api.call('PATCH', '/v1/virtio-mem/mem0', { requested_size: value }),
        (err: ApiError) => {
          assert.equal(err.status, status, `${value}: ${err.message}`);
          assert.match(err.message, message);
          return true;
        },
      );
    }
    await assert.rejects(
      vm.api.call('PATCH', '/v1/virtio-mem/nope', { requested_size: 0 }),
      (err: ApiError) => {
        assert.equal(err.status, 404);
        return true;
      },
    );
    const after = await device();
    assert.equal(after.requested_size, before.requested_size);
    assert.equal(after.usable_region_size, before.usable_region_size);
  });

  test('50 changes of requested_size in a tight loop end with plugged = the last one', async () => {
    let last = 0;
    for (let i = 0; i < 50; i++) {
      last = ((i * 37) % 2048) * BLOCK;
      await vm.api.call('PATCH', '/v1/virtio-mem/mem0', { requested_size: last });
    }
    const step = await resizeAndWait(vm.api, 'mem0', last, { baseKiB: base });
    assert.equal(step.device.plugged_size, last);
  });

  test('a 1 GiB pattern in guest memory survives a shrink of the device', async () => {
    await resizeAndWait(vm.api, 'mem0', 3 * GiB, { baseKiB: base });
    const sum = await guestOutput(
      vm.api,
      'mkdir -p /mnt/p && mount -t tmpfs -o size=1200m tmpfs /mnt/p && ' +
        'yes memvisor-pattern | head -c 1073741824 > /mnt/p/data && md5sum /mnt/p/data',
      600_000,
    );
    await resizeAndWait(vm.api, 'mem0', 1536 * MiB, { baseKiB: base });
    assert.equal(await guestOutput(vm.api, 'md5sum /mnt/p/data', 600_000), sum);
    await guestOutput(vm.api, 'umount /mnt/p');
  });

  test('balloon: inflating 256 MiB takes it from guest and host, deflate returns it', async () => {
    await resizeAndWait(vm.api, 'mem0', 0, { baseKiB: base });
    // Make the guest touch its memory so the host holds it before the balloon takes it.
    await guestOutput(
      vm.api,
      'mkdir -p /mnt/q && mount -t tmpfs tmpfs /mnt/q && ' +
        'head -c 400m /dev/zero > /mnt/q/z && rm /mnt/q/z',
    );
    const before = await vm.api.call<VmStatus>('GET', '/v1/vm');
    await vm.api.call('PUT', '/v1/balloon', { target_size: 256 * MiB });
    const deadline = Date.now() + 300_000;
    let status = before;
    while (Date.now() < deadline) {
      status = await vm.api.call<VmStatus>('GET', '/v1/vm');
      if (status.balloon?.actual_bytes === 256 * MiB) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(status.balloon?.actual_bytes, 256 * MiB);
    assert.equal(await memTotalKiB(vm.api), base - (256 * MiB) / 1024);
    // The guest's statistics, refreshed every 5 s, count its MemTotal in bytes.
    assert.equal(await balloonTotalMemory(base * 1024 - 256 * MiB), base * 1024 - 256 * MiB);
    const dropped = before.resident_bytes - status.resident_bytes;
    assert.ok(dropped > 200 * MiB, `host resident dropped by ${dropped} bytes only`);
    await vm.api.call('PUT', '/v1/balloon', { target_size: 0 });
    while (Date.now() < deadline) {
      status = await vm.api.call<VmStatus>('GET', '/v1/vm');
      if (status.balloon?.actual_bytes === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(status.balloon?.actual_bytes, 0);
    assert.equal(await memTotalKiB(vm.api), base);
    assert.equal(await balloonTotalMemory(base * 1024), base * 1024);
  });

  /** The balloon's last total_memory statistic once it equals `bytes`, or after 30 s. */
  async function balloonTotalMemory(bytes: number): Promise<number | undefined> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const total = (await vm.api.call<VmStatus>('GET', '/v1/vm')).balloon?.stats.total_memory;
      if (total === bytes || Date.now() > deadline) return total;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
});
