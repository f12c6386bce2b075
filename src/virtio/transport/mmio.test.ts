import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { layoutAt } from '../../../test/support/driver-queue.js';
import { CountingIrq, fakeGuestMemory } from '../../../test/support/guest-memory.js';
import { MmioDriver } from '../../../test/support/mmio-driver.js';
import {
  type DeviceContext,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_INDIRECT_DESC,
  type VirtioDevice,
  readConfigBytes,
} from '../device.js';
import { SharedMmioWindows } from './mmio-worker.js';
import {
  MEMVISOR_VENDOR_ID,
  VIRTIO_MMIO,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_WINDOW,
  VirtioMmioTransport,
} from './mmio.js';

/** A device that records what the transport asks of it. */
class RecordingDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly availableFeatures = (1n << 3n) | (1n << 40n);
  readonly queueMaxSizes = [16, 64];
  readonly config = Uint8Array.from({ length: 12 }, (_, i) => 0x10 + i);
  ctx: DeviceContext | null = null;
  processed: number[] = [];
  resets = 0;
  configWrites: [number, number[]][] = [];

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config, offset, data);
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.configWrites.push([offset, [...data]]);
  }
  activate(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  processQueue(index: number): void {
    this.processed.push(index);
  }
  deviceReset(): void {
    this.resets++;
    this.ctx = null;
  }
}

function setup() {
  const memory = fakeGuestMemory([{ gpa: 0, size: 1 << 20 }]);
  const irq = new CountingIrq();
  const device = new RecordingDevice();
  const logs: string[] = [];
  const transport = new VirtioMmioTransport(device, memory, irq, {
    name: 'virtio-test[0]',
    log: (line) => logs.push(line),
  });
  const driver = new MmioDriver(transport);
  return { memory, irq, device, transport, driver, logs };
}

const FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | (1n << 3n);

function activate(env: ReturnType<typeof setup>) {
  assert.equal(env.driver.negotiate(FEATURES), true);
  env.driver.setupQueue(0, layoutAt(0x1000, 16));
  assert.equal(env.driver.driverOk(), true);
  assert.ok(env.device.ctx);
  return env.device.ctx;
}

describe('VirtioMmioTransport', () => {
  it('identifies itself as a version 2 device', () => {
    const { driver } = setup();
    assert.equal(driver.read32(VIRTIO_MMIO.MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert.equal(driver.read32(VIRTIO_MMIO.MAGIC_VALUE), 0x74726976);
    assert.equal(driver.read32(VIRTIO_MMIO.VERSION), 2);
    assert.equal(driver.read32(VIRTIO_MMIO.DEVICE_ID), 42);
    assert.equal(driver.read32(VIRTIO_MMIO.VENDOR_ID), MEMVISOR_VENDOR_ID);
    assert.equal(driver.read32(VIRTIO_MMIO.SHM_LEN_LOW), 0xffffffff);
    assert.equal(driver.read32(VIRTIO_MMIO.SHM_LEN_HIGH), 0xffffffff);
  });

  it('offers device features plus VERSION_1 and INDIRECT_DESC in 32-bit windows', () => {
    const { driver } = setup();
    assert.equal(driver.deviceFeatures(), (1n << 3n) | (1n << 28n) | (1n << 32n) | (1n << 40n));
    driver.write32(VIRTIO_MMIO.DEVICE_FEATURES_SEL, 2);
    assert.equal(driver.read32(VIRTIO_MMIO.DEVICE_FEATURES), 0);
  });

  it('refuses FEATURES_OK without VIRTIO_F_VERSION_1', () => {
    const env = setup();
    assert.equal(env.driver.negotiate(1n << 3n), false);
    assert.equal(env.transport.status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    assert.equal(env.transport.counters.refused_features, 1);
    assert.match(
      env.logs.at(-1) ?? '',
      /^virtio-test\[0\]: driver did not accept VIRTIO_F_VERSION_1/,
    );
  });

  it('refuses FEATURES_OK with a feature the device did not offer', () => {
    const env = setup();
    assert.equal(env.driver.negotiate(VIRTIO_F_VERSION_1 | (1n << 5n)), false);
    assert.equal(env.transport.counters.refused_features, 1);
  });

  it('accepts the features the driver wrote in both windows', () => {
    const env = setup();
    assert.equal(env.driver.negotiate(FEATURES | (1n << 40n)), true);
    assert.equal(env.transport.driverFeatures, FEATURES | (1n << 40n));
  });

  it('ignores feature writes outside the DRIVER state', () => {
    const env = setup();
    env.driver.negotiate(FEATURES);
    env.driver.write32(VIRTIO_MMIO.DRIVER_FEATURES, 0);
    assert.equal(env.transport.driverFeatures, FEATURES);
    assert.equal(env.transport.counters.refused_features, 1);
  });

  it('follows the status state machine and refuses skipped steps', () => {
    const env = setup();
    env.driver.write32(VIRTIO_MMIO.STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    assert.equal(env.transport.status, 0);
    env.driver.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    env.driver.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
    assert.equal(env.transport.status, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    assert.equal(env.transport.counters.refused_status, 2);
    assert.equal(env.device.ctx, null);
  });

  it('exposes per-queue registers through QueueSel', () => {
    const { driver, transport } = setup();
    driver.negotiate(FEATURES);
    driver.write32(VIRTIO_MMIO.QUEUE_SEL, 1);
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_NUM_MAX), 64);
    driver.write32(VIRTIO_MMIO.QUEUE_SEL, 0);
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_NUM_MAX), 16);
    driver.write32(VIRTIO_MMIO.QUEUE_SEL, 2);
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_NUM_MAX), 0);
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_READY), 0);

    driver.setupQueue(1, { size: 32, desc: 0x2000, avail: 0x3000, used: 0x4000 });
    driver.write32(VIRTIO_MMIO.QUEUE_DESC_HIGH, 1);
    const q = transport.queues[1]!;
    assert.deepEqual(q.config, {
      size: 32,
      ready: true,
      descAddr: 0x2000n,
      driverAddr: 0x3000n,
      deviceAddr: 0x4000n,
    });
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_READY), 1);
    assert.equal(transport.counters.invalid_queue, 1);
  });

  it('activates the device at DRIVER_OK with the acked features', () => {
    const env = setup();
    const ctx = activate(env);
    assert.equal(ctx.ackedFeatures, FEATURES);
    assert.equal(ctx.queues[0]?.active, true);
    assert.equal(ctx.queues[1]?.active, false);
    assert.equal(
      env.transport.status,
      VIRTIO_CONFIG_S_ACKNOWLEDGE |
        VIRTIO_CONFIG_S_DRIVER |
        VIRTIO_CONFIG_S_FEATURES_OK |
        VIRTIO_CONFIG_S_DRIVER_OK,
    );
  });

  it('sets DEVICE_NEEDS_RESET instead of DRIVER_OK when a ready queue is invalid', () => {
    const env = setup();
    env.driver.negotiate(FEATURES);
    env.driver.setupQueue(0, { size: 16, desc: 0x1004, avail: 0x3000, used: 0x4000 });
    assert.equal(env.driver.driverOk(), false);
    assert.equal(env.transport.status & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.equal(env.device.ctx, null);
    assert.equal(env.transport.counters.invalid_queue, 1);
  });

  it('passes notifications of active queues to the device and refuses the others', () => {
    const env = setup();
    env.driver.notify(0);
    assert.deepEqual(env.device.processed, []);
    activate(env);
    env.driver.notify(0);
    env.driver.notify(1);
    env.driver.notify(7);
    assert.deepEqual(env.device.processed, [0]);
    assert.equal(env.transport.counters.bad_notify, 3);
  });

  it('serves a notify of a ready queue before DRIVER_OK once DRIVER_OK is set', () => {
    const env = setup();
    assert.equal(env.driver.negotiate(FEATURES), true);
    env.driver.setupQueue(0, layoutAt(0x1000, 16));
    // What Linux's virtio_balloon does with its statistics queue.
    env.driver.notify(0);
    env.driver.notify(1);
    assert.deepEqual(env.device.processed, []);
    assert.equal(env.transport.counters.early_notify, 1);
    assert.equal(env.transport.counters.bad_notify, 1);
    assert.equal(env.driver.driverOk(), true);
    assert.deepEqual(env.device.processed, [0]);
    assert.equal(env.logs.length, 1);
  });

  it('forgets an early notify when the driver resets the device first', () => {
    const env = setup();
    env.driver.negotiate(FEATURES);
    env.driver.setupQueue(0, layoutAt(0x1000, 16));
    env.driver.notify(0);
    env.driver.write32(VIRTIO_MMIO.STATUS, 0);
    activate(env);
    assert.deepEqual(env.device.processed, []);
  });

  it('raises one edge per newly set interrupt bit and clears bits on ACK', () => {
    const env = setup();
    const ctx = activate(env);
    ctx.signalUsed(0);
    ctx.signalUsed(0);
    assert.equal(env.irq.edges, 1);
    assert.equal(env.transport.interruptStatus, VIRTIO_MMIO_INT_VRING);
    ctx.signalConfig();
    assert.equal(env.irq.edges, 2);
    assert.equal(env.driver.ackInterrupts(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    assert.equal(env.transport.interruptStatus, 0);
    ctx.signalUsed(0);
    assert.equal(env.irq.edges, 3);
  });

  it('suppresses used-buffer interrupts when the driver set VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const env = setup();
    const ctx = activate(env);
    env.memory.writeU16(layoutAt(0x1000, 16).avail, 1);
    ctx.signalUsed(0);
    assert.equal(env.irq.edges, 0);
    assert.equal(env.transport.interruptStatus, 0);
  });

  it('bumps ConfigGeneration on every config change', () => {
    const env = setup();
    const ctx = activate(env);
    const before = env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION);
    ctx.signalConfig();
    ctx.signalConfig();
    assert.equal(env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION), before + 2);
  });

  it('reads config space at any width and offset, zero past its end', () => {
    const { driver, device, transport } = setup();
    assert.deepEqual(driver.readConfig(0, 1), Uint8Array.of(0x10));
    assert.deepEqual(driver.readConfig(3, 2), Uint8Array.of(0x13, 0x14));
    assert.deepEqual(driver.readConfig(5, 4), Uint8Array.of(0x15, 0x16, 0x17, 0x18));
    assert.deepEqual(driver.readConfig(8, 8), Uint8Array.of(0x18, 0x19, 0x1a, 0x1b, 0, 0, 0, 0));
    transport.write(VIRTIO_MMIO.CONFIG + 6, Uint8Array.of(1, 2));
    assert.deepEqual(device.configWrites, [[6, [1, 2]]]);
  });

  it('marks DEVICE_NEEDS_RESET with a config notification and serves nothing after it', () => {
    const env = setup();
    const ctx = activate(env);
    ctx.needsReset('ring broken');
    assert.equal(env.transport.status & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.equal(env.transport.interruptStatus, VIRTIO_MMIO_INT_CONFIG);
    assert.equal(env.irq.edges, 1);
    env.driver.notify(0);
    assert.deepEqual(env.device.processed, []);
    assert.match(env.logs.join('\n'), /device needs reset: ring broken/);
  });

  it('resets device, queues and features on a status write of 0, and recovers', () => {
    const env = setup();
    const ctx = activate(env);
    ctx.signalUsed(0);
    const resets = env.device.resets;
    env.driver.write32(VIRTIO_MMIO.STATUS, 0);
    assert.equal(env.device.resets, resets + 1);
    assert.equal(env.transport.status, 0);
    assert.equal(env.transport.driverFeatures, 0n);
    assert.equal(env.transport.interruptStatus, 0);
    assert.equal(env.transport.queues[0]?.active, false);
    assert.equal(env.transport.queues[0]?.config.ready, false);
    // A context from before the reset signals nothing.
    const edges = env.irq.edges;
    ctx.signalConfig();
    ctx.signalUsed(0);
    assert.equal(env.irq.edges, edges);
    activate(env);
    env.driver.notify(0);
    assert.deepEqual(env.device.processed, [0]);
  });

  it('reads all ones for odd-width or unknown register accesses', () => {
    const { transport, driver } = setup();
    const data = new Uint8Array(2);
    transport.read(VIRTIO_MMIO.STATUS, data);
    assert.deepEqual(data, Uint8Array.of(0xff, 0xff));
    assert.equal(driver.read32(VIRTIO_MMIO.QUEUE_NOTIFY), 0xffffffff);
    driver.write32(VIRTIO_MMIO.MAGIC_VALUE, 0);
    assert.equal(driver.read32(VIRTIO_MMIO.MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert.equal(transport.counters.bad_register_access, 3);
  });
});

describe('the shared register block a vCPU worker answers', () => {
  const BASE = 0xd000_0000;
  const u32 = (value: number) => {
    const data = new Uint8Array(4);
    new DataView(data.buffer).setUint32(0, value, true);
    return data;
  };
  const worker = (env: ReturnType<typeof setup>) => {
    const windows = new SharedMmioWindows([
      { base: BASE, size: VIRTIO_MMIO_WINDOW, shared: env.transport.shared },
    ]);
    return {
      read(offset: number): number | undefined {
        const data = new Uint8Array(4);
        if (!windows.answer(BigInt(BASE + offset), false, data)) return undefined;
        return new DataView(data.buffer).getUint32(0, true);
      },
      write: (offset: number, value: number, data = u32(value)) =>
        windows.answer(BigInt(BASE + offset), true, data),
    };
  };
  it('reads InterruptStatus and acknowledges it; the next change raises a new edge', () => {
    const env = setup();
    const ctx = activate(env);
    const w = worker(env);
    assert.equal(w.read(VIRTIO_MMIO.INTERRUPT_STATUS), 0);
    ctx.signalConfig();
    assert.equal(env.irq.edges, 1);
    assert.equal(w.read(VIRTIO_MMIO.INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert.equal(env.driver.read32(VIRTIO_MMIO.INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert.equal(w.write(VIRTIO_MMIO.INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG), true);
    assert.equal(env.transport.interruptStatus, 0);
    ctx.signalConfig();
    assert.equal(env.irq.edges, 2);
  });

  it('reads InterruptStatus as 0 after a reset', () => {
    const env = setup();
    const ctx = activate(env);
    const w = worker(env);
    ctx.signalUsed(0);
    assert.equal(w.read(VIRTIO_MMIO.INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    env.transport.reset();
    assert.equal(w.read(VIRTIO_MMIO.INTERRUPT_STATUS), 0);
  });

  it('leaves every other access to the main thread', () => {
    const env = setup();
    activate(env);
    const w = worker(env);
    assert.equal(w.read(VIRTIO_MMIO.STATUS), undefined);
    assert.equal(w.write(VIRTIO_MMIO.QUEUE_SEL, 0), false);
    assert.equal(w.write(VIRTIO_MMIO.INTERRUPT_STATUS, 0), false);
    assert.equal(w.read(VIRTIO_MMIO.INTERRUPT_ACK), undefined);
    // A notify waits for the main thread to serve it (SharedCell in mmio.ts says why).
    assert.equal(w.write(VIRTIO_MMIO.QUEUE_NOTIFY, 0), false);
    assert.deepEqual(env.device.processed, []);
    assert.equal(w.write(VIRTIO_MMIO.INTERRUPT_ACK, 1, new Uint8Array(2)), false);
    const outside = new SharedMmioWindows([
      { base: BASE, size: VIRTIO_MMIO_WINDOW, shared: env.transport.shared },
    ]);
    const data = new Uint8Array(4);
    const beyond = BASE + VIRTIO_MMIO_WINDOW + VIRTIO_MMIO.INTERRUPT_STATUS;
    assert.equal(outside.answer(BigInt(beyond), false, data), false);
    assert.equal(env.transport.counters.bad_register_access, 0);
  });
});
