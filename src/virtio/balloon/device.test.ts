import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverQueue, layoutAt } from '../../../test/support/driver-queue.js';
import { CountingIrq, fakeGuestMemory } from '../../../test/support/guest-memory.js';
import { MmioDriver } from '../../../test/support/mmio-driver.js';
import { InvalidInputError } from '../../util/errors.js';
import { VIRTIO_F_VERSION_1 } from '../device.js';
import { VIRTIO_MMIO, VIRTIO_MMIO_INT_CONFIG, VirtioMmioTransport } from '../transport/mmio.js';
import {
  VIRTIO_BALLOON_CONFIG,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_PAGE_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
} from './constants.js';
import { VirtioBalloon } from './device.js';

const MiB = 1 << 20;
const RAM = 16 * MiB;
const PFNS = 0x80000;

class FakeHost {
  discards: [number, number][] = [];
  discard(gpa: number, len: number): void {
    this.discards.push([gpa, len]);
  }
}

function setup(
  features = VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ | VIRTIO_BALLOON_F_PAGE_REPORTING,
  deflateOnOom = true,
) {
  const memory = fakeGuestMemory([{ gpa: 0, size: RAM }]);
  const host = new FakeHost();
  const balloon = new VirtioBalloon({ host, log: () => {}, deflateOnOom });
  const irq = new CountingIrq();
  const transport = new VirtioMmioTransport(balloon, memory, irq, {
    name: 'virtio-balloon',
    log: () => {},
  });
  const driver = new MmioDriver(transport);
  assert.equal(driver.negotiate(features), true);
  const queues: DriverQueue[] = [];
  const count =
    2 +
    (features & VIRTIO_BALLOON_F_STATS_VQ ? 1 : 0) +
    (features & VIRTIO_BALLOON_F_PAGE_REPORTING ? 1 : 0);
  for (let i = 0; i < count; i++) {
    const layout = layoutAt(0x1000 + i * 0x2000, 64);
    queues.push(new DriverQueue(memory, layout));
    driver.setupQueue(i, layout);
  }
  assert.equal(driver.driverOk(), true);
  return { memory, host, balloon, irq, transport, driver, queues };
}

type Env = ReturnType<typeof setup>;

/** Sends `pfns` on queue `index` the way Linux's tell_host does. */
function sendPfns(env: Env, index: number, pfns: number[]) {
  const bytes = new Uint8Array(4 * pfns.length);
  const view = new DataView(bytes.buffer);
  pfns.forEach((pfn, i) => view.setUint32(4 * i, pfn, true));
  env.memory.write(PFNS, bytes);
  const head = env.queues[index]!.addChain([{ addr: PFNS, len: bytes.length }]);
  env.driver.notify(index);
  assert.deepEqual(env.queues[index]!.takeUsed(), [{ id: head, len: 0 }]);
}

function stats(entries: [number, bigint][]): Uint8Array {
  const bytes = new Uint8Array(10 * entries.length);
  const view = new DataView(bytes.buffer);
  entries.forEach(([tag, val], i) => {
    view.setUint16(10 * i, tag, true);
    view.setBigUint64(10 * i + 2, val, true);
  });
  return bytes;
}

describe('VirtioBalloon', () => {
  it('offers DEFLATE_ON_OOM only when asked to', () => {
    const { driver } = setup(VIRTIO_F_VERSION_1, false);
    assert.equal(driver.deviceFeatures() & VIRTIO_BALLOON_F_DEFLATE_ON_OOM, 0n);
  });

  it('offers STATS_VQ, DEFLATE_ON_OOM and PAGE_REPORTING', () => {
    const { driver } = setup();
    assert.equal(
      driver.deviceFeatures() & ~(1n << 28n),
      VIRTIO_F_VERSION_1 |
        VIRTIO_BALLOON_F_STATS_VQ |
        VIRTIO_BALLOON_F_DEFLATE_ON_OOM |
        VIRTIO_BALLOON_F_PAGE_REPORTING,
    );
  });

  it('sets num_pages from the target with a config notification, and reads back actual', () => {
    const env = setup();
    env.balloon.setTarget(8 * MiB);
    assert.deepEqual(
      env.driver.readConfig(VIRTIO_BALLOON_CONFIG.NUM_PAGES, 4),
      Uint8Array.of(0, 8, 0, 0),
    );
    assert.equal(env.driver.ackInterrupts(), VIRTIO_MMIO_INT_CONFIG);
    env.driver.write32(VIRTIO_MMIO.CONFIG + VIRTIO_BALLOON_CONFIG.ACTUAL, 1234);
    assert.equal(env.balloon.status().actual_bytes, 1234 * 4096);
    assert.equal(env.balloon.status().target_bytes, 8 * MiB);
    env.transport.write(
      VIRTIO_MMIO.CONFIG + VIRTIO_BALLOON_CONFIG.NUM_PAGES,
      Uint8Array.of(1, 2, 3, 4),
    );
    assert.equal(env.balloon.status().target_bytes, 8 * MiB);
    assert.equal(env.balloon.metrics.violations, 1);
  });

  it('refuses a bad target with InvalidInputError and changes nothing', () => {
    const env = setup();
    env.balloon.setTarget(4096);
    for (const bytes of [100, -4096, 2 ** 32 * 4096]) {
      assert.throws(() => env.balloon.setTarget(bytes), InvalidInputError);
    }
    assert.equal(env.balloon.status().target_bytes, 4096);
  });

  it('discards inflated frames in contiguous runs and skips out-of-range PFNs', () => {
    const env = setup();
    env.memory.fill(0x5000, 3 * 4096, 0x77);
    sendPfns(env, 0, [5, 6, 7, 9, 0x100000, 0xffffffff, 10]);
    assert.deepEqual(env.host.discards, [
      [0x5000, 3 * 4096],
      [0x9000, 2 * 4096],
    ]);
    assert.equal(env.balloon.metrics.inflated_pages, 5);
    assert.equal(env.balloon.metrics.out_of_range_pfns, 2);
    assert.equal(env.balloon.status().resident_discarded_bytes, 5 * 4096);
  });

  it('discards frames listed out of order, or twice, in address-ordered runs', () => {
    const env = setup();
    sendPfns(env, 0, [12, 3, 11, 10, 2, 11]);
    assert.deepEqual(env.host.discards, [
      [0x2000, 2 * 4096],
      [0xa000, 3 * 4096],
    ]);
    assert.equal(env.balloon.status().resident_discarded_bytes, 5 * 4096);
  });

  it('deflates without a host call and forgets the frames', () => {
    const env = setup();
    sendPfns(env, 0, [5, 6, 7]);
    sendPfns(env, 1, [6, 0x200000]);
    assert.equal(env.host.discards.length, 1);
    assert.equal(env.balloon.metrics.deflated_pages, 1);
    assert.equal(env.balloon.metrics.out_of_range_pfns, 1);
    assert.equal(env.balloon.status().resident_discarded_bytes, 2 * 4096);
  });

  it('keeps the stats buffer, names the values, and refreshes them on request', () => {
    const env = setup();
    env.memory.write(
      0x90000,
      stats([
        [0, 11n],
        [4, 123456789n],
        [7, 5n],
        [99, 1n],
        [15, 3n],
      ]),
    );
    const head = env.queues[2]!.addChain([{ addr: 0x90000, len: 50 }]);
    env.driver.notify(2);
    assert.deepEqual(env.queues[2]!.takeUsed(), []);
    assert.deepEqual(env.balloon.status().stats, {
      swap_in: 11,
      free_memory: 123456789,
      disk_caches: 5,
      direct_reclaims: 3,
    });
    const edges = env.irq.edges;
    assert.equal(env.balloon.requestStats(), true);
    assert.equal(env.balloon.requestStats(), false);
    assert.deepEqual(env.queues[2]!.takeUsed(), [{ id: head, len: 0 }]);
    assert.equal(env.irq.edges, edges + 1);
    env.memory.write(0x90000, stats([[4, 42n]]));
    env.queues[2]!.addChain([{ addr: 0x90000, len: 10 }]);
    env.driver.notify(2);
    assert.equal(env.balloon.status().stats.free_memory, 42);
    assert.equal(env.balloon.metrics.stats_updates, 2);
  });

  it('discards free page reports and returns them', () => {
    const env = setup();
    const head = env.queues[3]!.addChain([
      { addr: 0x200000, len: 2 * MiB, write: true },
      { addr: 0x600000, len: 4 * MiB, write: true },
    ]);
    env.driver.notify(3);
    assert.deepEqual(env.queues[3]!.takeUsed(), [{ id: head, len: 0 }]);
    assert.deepEqual(env.host.discards, [
      [0x200000, 2 * MiB],
      [0x600000, 4 * MiB],
    ]);
    assert.equal(env.balloon.metrics.reported_bytes, 6 * MiB);
  });

  it('numbers the reporting queue after the negotiated ones, as Linux 6.1 does', () => {
    const env = setup(VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_PAGE_REPORTING);
    env.queues[2]!.addChain([{ addr: 0x200000, len: 4096, write: true }]);
    env.driver.notify(2);
    assert.deepEqual(env.host.discards, [[0x200000, 4096]]);
  });

  it('returns malformed chains unused, counts them and keeps working', () => {
    const env = setup();
    env.queues[0]!.addChain([{ addr: RAM - 4, len: 8 }]);
    env.driver.notify(0);
    assert.equal(env.queues[0]!.takeUsed()[0]?.len, 0);
    assert.equal(env.balloon.metrics.violations, 1);
    assert.equal(env.host.discards.length, 0);
    sendPfns(env, 0, [1]);
    assert.deepEqual(env.host.discards, [[4096, 4096]]);
  });

  it('forgets the balloon on a device reset but keeps the target', () => {
    const env = setup();
    env.balloon.setTarget(MiB);
    sendPfns(env, 0, [5]);
    env.driver.write32(VIRTIO_MMIO.STATUS, 0);
    assert.deepEqual(env.balloon.status(), {
      target_bytes: MiB,
      actual_bytes: 0,
      resident_discarded_bytes: 0,
      stats: {},
    });
  });
});
