import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverQueue, layoutAt } from '../../test/support/driver-queue.js';
import { fakeGuestMemory } from '../../test/support/guest-memory.js';
import {
  type PopResult,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  Virtqueue,
} from './queue.js';

const MEM_SIZE = 1 << 20;

function setup(size = 8, indirect = true) {
  const memory = fakeGuestMemory([{ gpa: 0, size: MEM_SIZE }]);
  const layout = layoutAt(0x1000, size);
  const driver = new DriverQueue(memory, layout);
  const queue = new Virtqueue(memory, 256);
  Object.assign(queue.config, {
    size,
    ready: true,
    descAddr: BigInt(layout.desc),
    driverAddr: BigInt(layout.avail),
    deviceAddr: BigInt(layout.used),
  });
  assert.equal(queue.activate(indirect), null);
  return { memory, driver, queue };
}

function chainOf(result: PopResult | null) {
  if (result?.kind !== 'chain') assert.fail(`expected a chain, got ${JSON.stringify(result)}`);
  return result.chain;
}

function badReason(result: PopResult | null): string {
  if (result?.kind !== 'bad_chain') assert.fail(`expected bad_chain, got ${result?.kind}`);
  return result.reason;
}

describe('Virtqueue', () => {
  it('pops a chain split into readable and writable buffers', () => {
    const { memory, driver, queue } = setup();
    memory.write(0x8000, Uint8Array.of(1, 2, 3, 4, 5, 6));
    const head = driver.addChain([
      { addr: 0x8000, len: 4 },
      { addr: 0x8004, len: 2 },
      { addr: 0x9000, len: 3, write: true },
      { addr: 0x9100, len: 5, write: true },
    ]);
    const chain = chainOf(queue.pop());
    assert.equal(chain.head, head);
    assert.deepEqual(chain.readable, [
      { addr: 0x8000, len: 4 },
      { addr: 0x8004, len: 2 },
    ]);
    assert.deepEqual(chain.writable, [
      { addr: 0x9000, len: 3 },
      { addr: 0x9100, len: 5 },
    ]);
    assert.deepEqual(chain.readBytes(memory, 100), Uint8Array.of(1, 2, 3, 4, 5, 6));
    assert.deepEqual(chain.readBytes(memory, 5), Uint8Array.of(1, 2, 3, 4, 5));
    assert.equal(chain.writeBytes(memory, Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2, 1, 0)), 8);
    assert.deepEqual(memory.read(0x9000, 3), Uint8Array.of(9, 8, 7));
    assert.deepEqual(memory.read(0x9100, 6), Uint8Array.of(6, 5, 4, 3, 2, 0));
    assert.equal(queue.pop(), null);
  });

  it('publishes used elements and the used index', () => {
    const { driver, queue } = setup();
    const a = driver.addChain([{ addr: 0x8000, len: 16, write: true }]);
    const b = driver.addChain([{ addr: 0x8100, len: 16, write: true }]);
    chainOf(queue.pop());
    chainOf(queue.pop());
    assert.equal(queue.addUsed(b, 7), true);
    assert.equal(queue.addUsed(a, 3), true);
    assert.equal(driver.usedIdx(), 2);
    assert.deepEqual(driver.takeUsed(), [
      { id: b, len: 7 },
      { id: a, len: 3 },
    ]);
  });

  it('keeps working across 16-bit index wrap-around', () => {
    const { driver, queue } = setup(4);
    for (let i = 0; i < 70000; i += 1) {
      const head = driver.addChain([{ addr: 0x8000, len: 4 }]);
      const chain = chainOf(queue.pop());
      assert.equal(chain.head, head);
      queue.addUsed(head, i & 0xff);
      assert.deepEqual(driver.takeUsed(), [{ id: head, len: i & 0xff }]);
    }
    assert.equal(driver.usedIdx(), 70000 & 0xffff);
  });

  it('follows an indirect table when VIRTIO_F_INDIRECT_DESC was negotiated', () => {
    const { memory, driver, queue } = setup();
    memory.write(0x8000, Uint8Array.of(0xaa, 0xbb));
    const head = driver.addIndirect(0x7000, [
      { addr: 0x8000, len: 2 },
      { addr: 0x9000, len: 10, write: true },
    ]);
    const chain = chainOf(queue.pop());
    assert.equal(chain.head, head);
    assert.deepEqual(chain.readable, [{ addr: 0x8000, len: 2 }]);
    assert.deepEqual(chain.writable, [{ addr: 0x9000, len: 10 }]);
  });

  it('refuses an indirect descriptor when the feature was not negotiated', () => {
    const { driver, queue } = setup(8, false);
    const head = driver.addIndirect(0x7000, [{ addr: 0x8000, len: 2 }]);
    const result = queue.pop();
    assert.match(badReason(result), /VIRTIO_F_INDIRECT_DESC/);
    assert.equal(result?.kind === 'bad_chain' && result.head, head);
  });

  it('refuses nested indirect tables, INDIRECT with NEXT and bad table lengths', () => {
    const { memory, driver, queue } = setup();
    driver.addIndirect(0x7000, [{ addr: 0x7800, len: 16 }]);
    memory.writeU16(0x7000 + 12, VIRTQ_DESC_F_INDIRECT);
    assert.match(badReason(queue.pop()), /inside an indirect table/);

    driver.writeDescriptor(5, { addr: 0x7000, len: 16, flags: VIRTQ_DESC_F_INDIRECT | 1, next: 6 });
    driver.publish(5);
    assert.match(badReason(queue.pop()), /both INDIRECT and NEXT/);

    driver.writeDescriptor(5, { addr: 0x7000, len: 20, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    driver.publish(5);
    assert.match(badReason(queue.pop()), /indirect table length 20/);

    driver.writeDescriptor(5, {
      addr: MEM_SIZE - 16,
      len: 32,
      flags: VIRTQ_DESC_F_INDIRECT,
      next: 0,
    });
    driver.publish(5);
    assert.match(badReason(queue.pop()), /indirect table .* leaves guest memory/);

    // An indirect table with more entries than the queue size.
    driver.writeDescriptor(5, { addr: 0x7000, len: 16 * 9, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    driver.publish(5);
    assert.match(badReason(queue.pop()), /longer than the queue size/);
  });

  it('detects a descriptor loop and goes on serving the next chain', () => {
    const { driver, queue } = setup();
    driver.writeDescriptor(0, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    driver.writeDescriptor(1, { addr: 0x8004, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    driver.publish(0);
    const result = queue.pop();
    assert.match(badReason(result), /descriptor loop at index 0/);
    assert.equal(result?.kind === 'bad_chain' && result.head, 0);

    driver.writeDescriptor(3, { addr: 0x8000, len: 4, flags: 0, next: 0 });
    driver.publish(3);
    assert.equal(chainOf(queue.pop()).head, 3);
  });

  it('detects a loop inside an indirect table', () => {
    const { memory, driver, queue } = setup();
    driver.addIndirect(0x7000, [
      { addr: 0x8000, len: 4 },
      { addr: 0x8004, len: 4 },
    ]);
    memory.writeU16(0x7010 + 12, VIRTQ_DESC_F_NEXT);
    memory.writeU16(0x7010 + 14, 0);
    assert.match(badReason(queue.pop()), /descriptor loop/);
  });

  it('refuses a next index out of range and a head out of range', () => {
    const { driver, queue } = setup();
    driver.writeDescriptor(0, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 8 });
    driver.publish(0);
    assert.match(badReason(queue.pop()), /next index 8 out of range/);

    driver.publish(200);
    const result = queue.pop();
    assert.match(badReason(result), /head index 200 out of range/);
    assert.equal(result?.kind === 'bad_chain' && result.head, null);
  });

  it('refuses buffers that leave guest memory or lie past the address limit', () => {
    const { driver, queue } = setup();
    driver.addChain([{ addr: MEM_SIZE - 8, len: 16 }]);
    assert.match(badReason(queue.pop()), /buffer 0xffff8\+16 leaves guest memory/);

    driver.writeDescriptor(6, { addr: 1n << 60n, len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    driver.publish(6);
    assert.match(badReason(queue.pop()), /leaves guest memory/);
  });

  it('refuses a device-readable buffer after a device-writable one', () => {
    const { driver, queue } = setup();
    driver.addChain([
      { addr: 0x8000, len: 24, write: true },
      { addr: 0x9000, len: 10 },
    ]);
    assert.match(badReason(queue.pop()), /readable buffer after a device-writable/);
  });

  it('reports a broken ring when the available index runs ahead by more than the size', () => {
    const { driver, queue } = setup();
    driver.setAvailIdx(9);
    const result = queue.pop();
    assert.equal(result?.kind, 'broken');
  });

  it('honours VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const { driver, queue } = setup();
    assert.equal(queue.needsInterrupt(), true);
    driver.setNoInterrupt(true);
    assert.equal(queue.needsInterrupt(), false);
  });

  it('refuses a bad configuration at activation', () => {
    const memory = fakeGuestMemory([{ gpa: 0, size: MEM_SIZE }]);
    const queue = new Virtqueue(memory, 16);
    const layout = layoutAt(0x1000, 8);
    const base = {
      size: 8,
      ready: true,
      descAddr: BigInt(layout.desc),
      driverAddr: BigInt(layout.avail),
      deviceAddr: BigInt(layout.used),
    };
    Object.assign(queue.config, { ...base, size: 6 });
    assert.match(queue.activate(true) ?? '', /queue size 6 is not a power of two/);
    Object.assign(queue.config, { ...base, size: 32 });
    assert.match(queue.activate(true) ?? '', /queue size 32/);
    Object.assign(queue.config, { ...base, descAddr: 0x1008n });
    assert.match(queue.activate(true) ?? '', /descriptor table at 0x1008/);
    Object.assign(queue.config, { ...base, deviceAddr: BigInt(MEM_SIZE - 8) });
    assert.match(queue.activate(true) ?? '', /used ring/);
    assert.equal(queue.active, false);
    assert.equal(queue.pop(), null);
    Object.assign(queue.config, base);
    assert.equal(queue.activate(true), null);
    assert.equal(queue.active, true);
  });
});
