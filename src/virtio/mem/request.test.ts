import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockBitmap } from './bitmap.js';
import {
  VIRTIO_MEM_CONFIG,
  VIRTIO_MEM_CONFIG_SIZE,
  VIRTIO_MEM_RESP_ERROR,
  VIRTIO_MEM_STATE_MIXED,
} from './constants.js';
import {
  VIRTIO_MEM_REQ_SIZE,
  VIRTIO_MEM_RESP_SIZE,
  decodeRequest,
  encodeResponse,
} from './request.js';

/** A request as Linux lays out struct virtio_mem_req, with padding filled with junk. */
function rawRequest(type: number, addr: bigint, nbBlocks: number): Uint8Array {
  const bytes = new Uint8Array(24).fill(0xee);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, type, true);
  view.setBigUint64(8, addr, true);
  view.setUint16(16, nbBlocks, true);
  return bytes;
}

describe('virtio-mem wire format', () => {
  it('has the sizes of struct virtio_mem_req, virtio_mem_resp and virtio_mem_config', () => {
    assert.equal(VIRTIO_MEM_REQ_SIZE, 24);
    assert.equal(VIRTIO_MEM_RESP_SIZE, 10);
    assert.equal(VIRTIO_MEM_CONFIG_SIZE, 56);
    assert.deepEqual(Object.values(VIRTIO_MEM_CONFIG), [0, 8, 16, 24, 32, 40, 48]);
  });

  it('decodes each request type and ignores padding', () => {
    assert.deepEqual(decodeRequest(rawRequest(0, 0x1_0020_0000n, 3)), {
      type: 'plug',
      addr: 0x1_0020_0000n,
      nbBlocks: 3,
    });
    assert.deepEqual(decodeRequest(rawRequest(1, 0xfedcba9876543210n, 0xffff)), {
      type: 'unplug',
      addr: 0xfedcba9876543210n,
      nbBlocks: 0xffff,
    });
    assert.deepEqual(decodeRequest(rawRequest(2, 5n, 5)), { type: 'unplug_all' });
    assert.deepEqual(decodeRequest(rawRequest(3, 0n, 1)), { type: 'state', addr: 0n, nbBlocks: 1 });
    assert.deepEqual(decodeRequest(rawRequest(0x1234, 0n, 1)), {
      type: 'unsupported',
      code: 0x1234,
    });
  });

  it('decodes from an offset view and refuses short input', () => {
    const padded = new Uint8Array(30);
    padded.set(rawRequest(3, 0x4000n, 2), 6);
    assert.deepEqual(decodeRequest(padded.subarray(6)), {
      type: 'state',
      addr: 0x4000n,
      nbBlocks: 2,
    });
    assert.equal(decodeRequest(new Uint8Array(23)), null);
  });

  it('encodes a response with zero padding', () => {
    assert.deepEqual(
      encodeResponse(VIRTIO_MEM_RESP_ERROR),
      Uint8Array.of(3, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    );
    assert.deepEqual(
      encodeResponse(0, VIRTIO_MEM_STATE_MIXED),
      Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 2, 0),
    );
  });
});

describe('BlockBitmap', () => {
  it('counts, sets and lists runs across word boundaries', () => {
    const bitmap = new BlockBitmap(100);
    bitmap.set(30, 5, true);
    bitmap.set(31, 1, true);
    bitmap.set(64, 36, true);
    assert.equal(bitmap.plugged, 41);
    assert.equal(bitmap.countPlugged(28, 10), 5);
    assert.equal(bitmap.isPlugged(34), true);
    assert.equal(bitmap.isPlugged(35), false);
    assert.equal(bitmap.isPlugged(100), false);
    assert.deepEqual(bitmap.pluggedRuns(), [
      [30, 5],
      [64, 36],
    ]);
    bitmap.set(32, 40, false);
    assert.equal(bitmap.plugged, 2 + 28);
    assert.deepEqual(bitmap.pluggedRuns(), [
      [30, 2],
      [72, 28],
    ]);
  });
});
