import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverQueue, layoutAt } from '../../../test/support/driver-queue.js';
import { CountingIrq, fakeGuestMemory } from '../../../test/support/guest-memory.js';
import { MmioDriver } from '../../../test/support/mmio-driver.js';
import { InvalidInputError } from '../../util/errors.js';
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../device.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../queue.js';
import {
  VIRTIO_MMIO,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VirtioMmioTransport,
} from '../transport/mmio.js';
import {
  VIRTIO_MEM_CONFIG,
  VIRTIO_MEM_F_ACPI_PXM,
  VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
  VIRTIO_MEM_REQ_PLUG,
  VIRTIO_MEM_REQ_STATE,
  VIRTIO_MEM_REQ_UNPLUG,
  VIRTIO_MEM_REQ_UNPLUG_ALL,
  VIRTIO_MEM_RESP_ACK,
  VIRTIO_MEM_RESP_BUSY,
  VIRTIO_MEM_RESP_ERROR,
  VIRTIO_MEM_RESP_NACK,
  VIRTIO_MEM_STATE_MIXED,
  VIRTIO_MEM_STATE_PLUGGED,
  VIRTIO_MEM_STATE_UNPLUGGED,
} from './constants.js';
import { VirtioMem, type VirtioMemGuestError, type VirtioMemSizeChanged } from './device.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const BLOCK = 2 * MiB;
const ADDR = 4 * GiB;
const REGION = GiB;
const REQ = 0x40000;
const RESP = 0x41000;

/** Records host calls; `fail` makes the next calls throw. */
class FakeHost {
  calls: string[] = [];
  fail = false;
  plug(offset: number, len: number): void {
    if (this.fail) throw new Error('no memory now');
    this.calls.push(`plug ${offset / MiB}M+${len / MiB}M`);
  }
  unplug(offset: number, len: number): void {
    if (this.fail) throw new Error('discard failed');
    this.calls.push(`unplug ${offset / MiB}M+${len / MiB}M`);
  }
}

function request(type: number, addr = 0n, nbBlocks = 0): Uint8Array {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, type, true);
  view.setBigUint64(8, addr, true);
  view.setUint16(16, nbBlocks, true);
  return bytes;
}

const block = (i: number) => BigInt(ADDR + i * BLOCK);

function setup(opts: { requestedSize?: number; nodeId?: number; acpiPxm?: boolean } = {}) {
  const memory = fakeGuestMemory([{ gpa: 0, size: MiB }]);
  const host = new FakeHost();
  const logs: string[] = [];
  const mem = new VirtioMem({
    id: 'mem0',
    addr: ADDR,
    regionSize: REGION,
    blockSize: BLOCK,
    host,
    log: (line) => logs.push(line),
    ...opts,
  });
  const irq = new CountingIrq();
  const transport = new VirtioMmioTransport(mem, memory, irq, {
    name: 'virtio-mem[mem0]',
    log: () => {},
  });
  const driver = new MmioDriver(transport);
  const sized: VirtioMemSizeChanged[] = [];
  const guestErrors: VirtioMemGuestError[] = [];
  mem.events.on('size_changed', (e: VirtioMemSizeChanged) => sized.push(e));
  mem.events.on('guest_error', (e: VirtioMemGuestError) => guestErrors.push(e));
  const env = {
    memory,
    host,
    logs,
    mem,
    irq,
    transport,
    driver,
    sized,
    guestErrors,
    queue: undefined as unknown as DriverQueue,
  };
  start(env);
  return env;
}

type Env = ReturnType<typeof setup>;

/** Brings the driver up as Linux does: negotiate, one queue, DRIVER_OK. */
function start(env: Omit<Env, 'queue'> & { queue: DriverQueue }) {
  const features =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE;
  assert.equal(env.driver.negotiate(features), true);
  const layout = layoutAt(0x1000, 128);
  env.queue = new DriverQueue(env.memory, layout);
  env.driver.setupQueue(0, layout);
  assert.equal(env.driver.driverOk(), true);
}

/** Sends one request the way Linux does (request buffer, then response buffer) and answers. */
function send(env: Env, req: Uint8Array, respLen = 10) {
  env.memory.write(REQ, req);
  env.memory.fill(RESP, 16, 0xee);
  const head = env.queue.addChain([
    { addr: REQ, len: req.length },
    { addr: RESP, len: respLen, write: true },
  ]);
  env.driver.notify(0);
  const used = env.queue.takeUsed();
  assert.equal(used.length, 1);
  assert.equal(used[0]!.id, head);
  return {
    type: env.memory.readU16(RESP),
    state: env.memory.readU16(RESP + 8),
    len: used[0]!.len,
  };
}

const config = (env: Env, field: number) => env.driver.readConfigU64(field);

describe('VirtioMem configuration', () => {
  it('lays out struct virtio_mem_config', () => {
    const env = setup({ requestedSize: 64 * MiB, nodeId: 3, acpiPxm: true });
    assert.equal(config(env, VIRTIO_MEM_CONFIG.BLOCK_SIZE), BLOCK);
    assert.deepEqual(
      env.driver.readConfig(VIRTIO_MEM_CONFIG.NODE_ID, 8),
      Uint8Array.of(3, 0, 0, 0, 0, 0, 0, 0),
    );
    assert.equal(config(env, VIRTIO_MEM_CONFIG.ADDR), ADDR);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.REGION_SIZE), REGION);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE), 320 * MiB);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.PLUGGED_SIZE), 0);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.REQUESTED_SIZE), 64 * MiB);
    assert.deepEqual(env.driver.readConfig(56, 4), new Uint8Array(4));
  });

  it('offers ACPI_PXM only with a node and acpiPxm, UNPLUGGED_INACCESSIBLE always', () => {
    const base = {
      id: 'm',
      addr: ADDR,
      regionSize: REGION,
      blockSize: BLOCK,
      host: new FakeHost(),
    };
    assert.equal(
      new VirtioMem(base).availableFeatures,
      VIRTIO_F_VERSION_1 | VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
    );
    assert.equal(
      new VirtioMem({ ...base, nodeId: 1 }).availableFeatures & VIRTIO_MEM_F_ACPI_PXM,
      0n,
    );
    assert.equal(
      new VirtioMem({ ...base, nodeId: 1, acpiPxm: true }).availableFeatures &
        VIRTIO_MEM_F_ACPI_PXM,
      VIRTIO_MEM_F_ACPI_PXM,
    );
  });

  it('refuses bad construction parameters', () => {
    const base = {
      id: 'm',
      addr: ADDR,
      regionSize: REGION,
      blockSize: BLOCK,
      host: new FakeHost(),
    };
    assert.throws(() => new VirtioMem({ ...base, blockSize: 3 * MiB }), /power of two/);
    assert.throws(
      () => new VirtioMem({ ...base, addr: ADDR + MiB }),
      /not a multiple of the block/,
    );
    assert.throws(() => new VirtioMem({ ...base, regionSize: 0 }), /region size/);
    assert.throws(() => new VirtioMem({ ...base, requestedSize: 2 * GiB }), /exceeds the region/);
    assert.throws(() => new VirtioMem({ ...base, acpiPxm: true }), /needs a nodeId/);
    assert.throws(() => new VirtioMem({ ...base, nodeId: 65536 }), /16-bit node_id/);
  });
  it('ignores driver writes to its read-only config and counts them', () => {
    const env = setup({ requestedSize: 64 * MiB });
    env.transport.write(VIRTIO_MMIO.CONFIG + VIRTIO_MEM_CONFIG.REQUESTED_SIZE, new Uint8Array(8));
    assert.equal(config(env, VIRTIO_MEM_CONFIG.REQUESTED_SIZE), 64 * MiB);
    assert.equal(env.mem.metrics.violations, 1);
  });

  it('still serves a driver that did not accept UNPLUGGED_INACCESSIBLE, and says so', () => {
    const env = setup({ requestedSize: 64 * MiB });
    assert.equal(env.mem.unpluggedInaccessibleAcked, true);
    assert.equal(env.driver.negotiate(VIRTIO_F_VERSION_1), true);
    const layout = layoutAt(0x1000, 128);
    env.queue = new DriverQueue(env.memory, layout);
    env.driver.setupQueue(0, layout);
    assert.equal(env.driver.driverOk(), true);
    assert.equal(env.mem.unpluggedInaccessibleAcked, false);
    assert.match(env.logs.at(-1) ?? '', /did not accept UNPLUGGED_INACCESSIBLE/);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });
});

describe('VirtioMem resize', () => {
  it('refuses bad requested sizes with InvalidInputError and changes nothing', () => {
    const env = setup({ requestedSize: 128 * MiB });
    const edges = env.irq.edges;
    for (const [bytes, message] of [
      [MiB, /requested size 1048576 is not a multiple of the block size 2097152/],
      [-BLOCK, /is not a whole number of bytes/],
      [0.5, /is not a whole number of bytes/],
      [1e30, /exceeds the region size/],
      [2 ** 53, /exceeds the region size/],
      [REGION + BLOCK, /exceeds the region size 1073741824/],
    ] as const) {
      assert.throws(
        () => env.mem.setRequestedSize(bytes),
        (err: unknown) => err instanceof InvalidInputError && message.test(err.message),
      );
    }
    assert.equal(env.mem.requestedSize, 128 * MiB);
    assert.equal(env.mem.usableRegionSize, 384 * MiB);
    assert.equal(env.irq.edges, edges);
  });

  it('grows usable_region_size to requested + 256 MiB, capped by the region, never shrinks', () => {
    const env = setup();
    assert.equal(env.mem.usableRegionSize, 0);
    env.mem.setRequestedSize(100 * MiB);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE), 356 * MiB);
    env.mem.setRequestedSize(900 * MiB);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE), REGION);
    env.mem.setRequestedSize(0);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE), REGION);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.REQUESTED_SIZE), 0);
  });

  it('sends a config-change interrupt and bumps the generation on each resize', () => {
    const env = setup();
    const gen = env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION);
    env.mem.setRequestedSize(256 * MiB);
    assert.equal(env.irq.edges, 1);
    assert.equal(env.driver.ackInterrupts(), VIRTIO_MMIO_INT_CONFIG);
    env.mem.setRequestedSize(128 * MiB);
    assert.equal(env.irq.edges, 2);
    assert.equal(env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION), gen + 2);
    assert.equal(env.mem.metrics.config_changes, 2);
  });
});

describe('VirtioMem requests', () => {
  it('ACKs a PLUG, plugs through the host and reports the new size', () => {
    const env = setup({ requestedSize: 64 * MiB });
    const edges = env.irq.edges;
    const resp = send(env, request(VIRTIO_MEM_REQ_PLUG, block(2), 4));
    assert.deepEqual(resp, { type: VIRTIO_MEM_RESP_ACK, state: 0, len: 10 });
    assert.deepEqual(env.host.calls, ['plug 4M+8M']);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.PLUGGED_SIZE), 8 * MiB);
    assert.deepEqual(env.sized, [
      { id: 'mem0', node: 0, plugged_size: 8 * MiB, requested_size: 64 * MiB },
    ]);
    assert.equal(env.mem.isPlugged(ADDR + 4 * MiB), true);
    assert.equal(env.mem.isPlugged(ADDR + 12 * MiB - 1), true);
    assert.equal(env.mem.isPlugged(ADDR + 12 * MiB), false);
    assert.equal(env.mem.isPlugged(ADDR - 1), false);
    // Only a used-buffer interrupt: plugged_size alone changes no config notification.
    assert.equal(env.irq.edges, edges + 1);
    assert.equal(env.transport.interruptStatus, VIRTIO_MMIO_INT_VRING);
  });

  it('answers ERROR for every PLUG protocol violation and keeps working', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 2));
    const cases: [Uint8Array, RegExp][] = [
      [request(VIRTIO_MEM_REQ_PLUG, block(4) + 4096n, 1), /not aligned/],
      [request(VIRTIO_MEM_REQ_PLUG, block(4), 0), /nb_blocks is 0/],
      [request(VIRTIO_MEM_REQ_PLUG, block(-1), 1), /outside the usable region/],
      // usable is 320 MiB = 160 blocks; blocks 159 and 160 straddle its end.
      [request(VIRTIO_MEM_REQ_PLUG, block(159), 2), /outside the usable region/],
      [request(VIRTIO_MEM_REQ_PLUG, 0xffff_ffff_ffe0_0000n, 0xffff), /outside the usable region/],
      [request(VIRTIO_MEM_REQ_PLUG, block(1), 2), /already plugged/],
    ];
    for (const [req, reason] of cases) {
      assert.equal(send(env, req).type, VIRTIO_MEM_RESP_ERROR);
      assert.match(env.guestErrors.at(-1)?.reason ?? '', reason);
    }
    assert.equal(env.mem.metrics.violations, cases.length);
    assert.equal(env.mem.metrics.error, cases.length);
    assert.equal(env.mem.status().violations, cases.length);
    assert.equal(env.mem.pluggedSize, 4 * MiB);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(159), 1)).type, VIRTIO_MEM_RESP_ACK);
    assert.match(
      env.logs[0] ?? '',
      /^virtio-mem\[mem0\]: PLUG addr=0x100801000 blocks=1: address not aligned/,
    );
  });

  it('NACKs a PLUG beyond requested_size', () => {
    const env = setup({ requestedSize: 8 * MiB });
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 3)).type, VIRTIO_MEM_RESP_ACK);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(3), 2)).type, VIRTIO_MEM_RESP_NACK);
    assert.equal(env.mem.metrics.nack, 1);
    assert.equal(env.mem.metrics.violations, 0);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(3), 1)).type, VIRTIO_MEM_RESP_ACK);
    assert.equal(env.mem.pluggedSize, 8 * MiB);
  });

  it('answers BUSY when the host cannot plug or unplug now, changing nothing', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1));
    env.host.fail = true;
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(1), 1)).type, VIRTIO_MEM_RESP_BUSY);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_UNPLUG, block(0), 1)).type, VIRTIO_MEM_RESP_BUSY);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_UNPLUG_ALL)).type, VIRTIO_MEM_RESP_BUSY);
    assert.equal(env.mem.pluggedSize, 2 * MiB);
    assert.equal(env.mem.metrics.busy, 3);
    assert.equal(env.mem.metrics.host_failures, 3);
    env.host.fail = false;
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(1), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('ACKs an UNPLUG of plugged blocks and refuses blocks not all plugged', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 4));
    assert.equal(
      send(env, request(VIRTIO_MEM_REQ_UNPLUG, block(3), 2)).type,
      VIRTIO_MEM_RESP_ERROR,
    );
    assert.equal(
      send(env, request(VIRTIO_MEM_REQ_UNPLUG, block(8), 1)).type,
      VIRTIO_MEM_RESP_ERROR,
    );
    assert.equal(
      send(env, request(VIRTIO_MEM_REQ_UNPLUG, block(1), 0)).type,
      VIRTIO_MEM_RESP_ERROR,
    );
    assert.equal(send(env, request(VIRTIO_MEM_REQ_UNPLUG, block(1), 2)).type, VIRTIO_MEM_RESP_ACK);
    assert.deepEqual(env.host.calls, ['plug 0M+8M', 'unplug 2M+4M']);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.PLUGGED_SIZE), 4 * MiB);
    assert.deepEqual(env.sized.at(-1), {
      id: 'mem0',
      node: 0,
      plugged_size: 4 * MiB,
      requested_size: 64 * MiB,
    });
    assert.equal(env.mem.isPlugged(ADDR + 2 * MiB), false);
  });

  it('answers STATE with PLUGGED, UNPLUGGED or MIXED, and ERROR for a bad range', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(2), 2));
    const state = (first: number, n: number) =>
      send(env, request(VIRTIO_MEM_REQ_STATE, block(first), n));
    assert.deepEqual(state(2, 2), {
      type: VIRTIO_MEM_RESP_ACK,
      state: VIRTIO_MEM_STATE_PLUGGED,
      len: 10,
    });
    assert.deepEqual(state(4, 9), {
      type: VIRTIO_MEM_RESP_ACK,
      state: VIRTIO_MEM_STATE_UNPLUGGED,
      len: 10,
    });
    assert.deepEqual(state(1, 2), {
      type: VIRTIO_MEM_RESP_ACK,
      state: VIRTIO_MEM_STATE_MIXED,
      len: 10,
    });
    assert.equal(state(0, 0).type, VIRTIO_MEM_RESP_ERROR);
    assert.equal(state(160, 1).type, VIRTIO_MEM_RESP_ERROR);
    assert.equal(env.mem.metrics.state_requests, 5);
  });

  it('UNPLUG_ALL unplugs every block and shrinks the usable region with a notification', () => {
    const env = setup({ requestedSize: 512 * MiB });
    assert.equal(env.mem.usableRegionSize, 768 * MiB);
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 3));
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(10), 2));
    env.mem.setRequestedSize(64 * MiB);
    assert.equal(env.mem.usableRegionSize, 768 * MiB);
    const gen = env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION);
    env.driver.ackInterrupts();
    assert.equal(send(env, request(VIRTIO_MEM_REQ_UNPLUG_ALL)).type, VIRTIO_MEM_RESP_ACK);
    assert.deepEqual(env.host.calls.slice(2), ['unplug 0M+6M', 'unplug 20M+4M']);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.PLUGGED_SIZE), 0);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE), 320 * MiB);
    assert.equal(env.driver.read32(VIRTIO_MMIO.CONFIG_GENERATION), gen + 1);
    assert.equal(env.driver.ackInterrupts(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    assert.equal(env.sized.at(-1)?.plugged_size, 0);
    // Nothing plugged: still ACK, no host call.
    assert.equal(send(env, request(VIRTIO_MEM_REQ_UNPLUG_ALL)).type, VIRTIO_MEM_RESP_ACK);
    assert.equal(env.host.calls.length, 4);
  });

  it('answers ERROR to an unknown request type', () => {
    const env = setup({ requestedSize: 64 * MiB });
    assert.equal(send(env, request(7)).type, VIRTIO_MEM_RESP_ERROR);
    assert.deepEqual(env.guestErrors, [{ id: 'mem0', reason: 'unknown request type 7' }]);
    assert.equal(env.mem.metrics.unsupported_requests, 1);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('serves requests sent through indirect descriptors, as Linux sends them', () => {
    const env = setup({ requestedSize: 64 * MiB });
    env.memory.write(REQ, request(VIRTIO_MEM_REQ_PLUG, block(5), 1));
    const head = env.queue.addIndirect(0x30000, [
      { addr: REQ, len: 24 },
      { addr: RESP, len: 10, write: true },
    ]);
    env.driver.notify(0);
    assert.deepEqual(env.queue.takeUsed(), [{ id: head, len: 10 }]);
    assert.equal(env.memory.readU16(RESP), VIRTIO_MEM_RESP_ACK);
    assert.equal(env.mem.pluggedSize, BLOCK);
  });
});

describe('VirtioMem malformed chains', () => {
  it('answers ERROR to a request shorter than 24 bytes', () => {
    const env = setup({ requestedSize: 64 * MiB });
    const resp = send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1).subarray(0, 16));
    assert.deepEqual(resp, { type: VIRTIO_MEM_RESP_ERROR, state: 0, len: 10 });
    assert.equal(env.mem.pluggedSize, 0);
    assert.match(env.guestErrors[0]?.reason ?? '', /request of 16 bytes, need 24/);
  });

  it('returns a chain whose response buffer is too short unanswered', () => {
    const env = setup({ requestedSize: 64 * MiB });
    const resp = send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1), 8);
    assert.equal(resp.len, 0);
    assert.equal(env.memory.readU16(RESP), 0xeeee);
    assert.equal(env.mem.pluggedSize, 0);
    assert.equal(env.mem.metrics.dropped_chains, 1);
    assert.equal(env.mem.metrics.violations, 1);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('returns a chain with swapped directions unanswered', () => {
    const env = setup({ requestedSize: 64 * MiB });
    env.memory.write(REQ, request(VIRTIO_MEM_REQ_PLUG, block(0), 1));
    const head = env.queue.addChain([
      { addr: REQ, len: 24, write: true },
      { addr: RESP, len: 10 },
    ]);
    env.driver.notify(0);
    assert.deepEqual(env.queue.takeUsed(), [{ id: head, len: 0 }]);
    assert.equal(env.mem.pluggedSize, 0);
    assert.match(env.guestErrors[0]?.reason ?? '', /readable buffer after a device-writable/);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('returns a looping chain and one leaving guest memory, and keeps serving', () => {
    const env = setup({ requestedSize: 64 * MiB });
    env.queue.writeDescriptor(100, { addr: REQ, len: 24, flags: VIRTQ_DESC_F_NEXT, next: 101 });
    env.queue.writeDescriptor(101, {
      addr: RESP,
      len: 10,
      flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
      next: 100,
    });
    env.queue.publish(100);
    env.queue.writeDescriptor(102, { addr: REQ, len: 24, flags: VIRTQ_DESC_F_NEXT, next: 103 });
    env.queue.writeDescriptor(103, { addr: MiB - 4, len: 10, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    env.queue.publish(102);
    env.driver.notify(0);
    assert.deepEqual(env.queue.takeUsed(), [
      { id: 100, len: 0 },
      { id: 102, len: 0 },
    ]);
    assert.equal(env.mem.metrics.violations, 2);
    assert.equal(env.mem.metrics.dropped_chains, 2);
    assert.match(env.guestErrors[0]?.reason ?? '', /descriptor loop/);
    assert.match(env.guestErrors[1]?.reason ?? '', /leaves guest memory/);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('sets DEVICE_NEEDS_RESET when the available ring is broken, and recovers after reset', () => {
    const env = setup({ requestedSize: 64 * MiB });
    env.queue.setAvailIdx(200);
    env.driver.notify(0);
    assert.equal(env.transport.status & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.equal(env.mem.metrics.violations, 1);
    start(env);
    assert.equal(send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 1)).type, VIRTIO_MEM_RESP_ACK);
  });

  it('serves a flood in slices, yielding to the event loop between them', async () => {
    const env = setup({ requestedSize: 256 * MiB });
    for (let i = 0; i < 100; i++) {
      env.memory.write(REQ + 32 * i, request(VIRTIO_MEM_REQ_STATE, block(0), 1));
      env.queue.addIndirect(0x50000 + 32 * i, [
        { addr: REQ + 32 * i, len: 24 },
        { addr: RESP + 16 * i, len: 10, write: true },
      ]);
    }
    env.driver.notify(0);
    assert.equal(env.queue.usedIdx(), 32);
    const seen: number[] = [];
    for (let i = 0; i < 10 && env.queue.usedIdx() !== 100; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      seen.push(env.queue.usedIdx());
    }
    assert.deepEqual(seen, [64, 96, 100]);
    assert.equal(env.mem.metrics.state_requests, 100);
  });
});

describe('VirtioMem resets', () => {
  it('keeps every block across a device reset', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 3));
    env.driver.write32(VIRTIO_MMIO.STATUS, 0);
    assert.equal(env.mem.status().driver_ok, false);
    start(env);
    assert.equal(config(env, VIRTIO_MEM_CONFIG.PLUGGED_SIZE), 6 * MiB);
    assert.deepEqual(send(env, request(VIRTIO_MEM_REQ_STATE, block(0), 3)), {
      type: VIRTIO_MEM_RESP_ACK,
      state: VIRTIO_MEM_STATE_PLUGGED,
      len: 10,
    });
    assert.deepEqual(env.host.calls, ['plug 0M+6M']);
  });

  it('unplugs and discards everything on a system reset, keeping requested_size', () => {
    const env = setup({ requestedSize: 512 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 2));
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(300), 1));
    env.mem.setRequestedSize(100 * MiB);
    env.transport.reset();
    env.mem.systemReset();
    assert.deepEqual(env.host.calls.slice(2), ['unplug 0M+4M', 'unplug 600M+2M']);
    assert.equal(env.mem.isPlugged(ADDR), false);
    assert.deepEqual(env.mem.status(), {
      id: 'mem0',
      node: 0,
      addr: ADDR,
      region_size: REGION,
      block_size: BLOCK,
      usable_region_size: 356 * MiB,
      requested_size: 100 * MiB,
      plugged_size: 0,
      driver_ok: false,
      violations: 0,
    });
    assert.equal(env.sized.at(-1)?.plugged_size, 0);
  });

  it('rethrows a host failure during system reset after unplugging what it could', () => {
    const env = setup({ requestedSize: 64 * MiB });
    send(env, request(VIRTIO_MEM_REQ_PLUG, block(0), 2));
    env.host.fail = true;
    assert.throws(() => env.mem.systemReset(), /discard failed/);
    assert.equal(env.mem.pluggedSize, 4 * MiB);
  });
});
