/**
 * The wire format of virtio-mem requests and responses (VIRTIO 1.2 section 5.15.6), decoded
 * from little-endian once, on entry, into a tagged union.
 */
import {
  VIRTIO_MEM_REQ_PLUG,
  VIRTIO_MEM_REQ_STATE,
  VIRTIO_MEM_REQ_UNPLUG,
  VIRTIO_MEM_REQ_UNPLUG_ALL,
} from './constants.js';

/**
 * sizeof(struct virtio_mem_req): le16 type, le16 padding[3], then the largest union member,
 * struct virtio_mem_req_plug { le64 addr; le16 nb_blocks; le16 padding[3]; }.
 */
export const VIRTIO_MEM_REQ_SIZE = 2 + 2 * 3 + (8 + 2 + 2 * 3);
/** sizeof(struct virtio_mem_resp): le16 type, le16 padding[3], struct { le16 state; }. */
export const VIRTIO_MEM_RESP_SIZE = 2 + 2 * 3 + 2;

const REQ_TYPE = 0;
const REQ_ADDR = 8;
const REQ_NB_BLOCKS = 16;
const RESP_TYPE = 0;
const RESP_STATE = 8;

/** A block range named by PLUG, UNPLUG and STATE; not yet checked against the device. */
export interface BlockRange {
  addr: bigint;
  nbBlocks: number;
}

/** A decoded request; padding is ignored, as section 5.15.6.1 requires. */
export type MemRequest =
  | ({ type: 'plug' } & BlockRange)
  | ({ type: 'unplug' } & BlockRange)
  | ({ type: 'state' } & BlockRange)
  | { type: 'unplug_all' }
  | { type: 'unsupported'; code: number };

/** Decodes a request, or returns null if `bytes` is shorter than a request. */
export function decodeRequest(bytes: Uint8Array): MemRequest | null {
  if (bytes.length < VIRTIO_MEM_REQ_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, VIRTIO_MEM_REQ_SIZE);
  const code = view.getUint16(REQ_TYPE, true);
  const range = (): BlockRange => ({
    addr: view.getBigUint64(REQ_ADDR, true),
    nbBlocks: view.getUint16(REQ_NB_BLOCKS, true),
  });
  switch (code) {
    case VIRTIO_MEM_REQ_PLUG:
      return { type: 'plug', ...range() };
    case VIRTIO_MEM_REQ_UNPLUG:
      return { type: 'unplug', ...range() };
    case VIRTIO_MEM_REQ_STATE:
      return { type: 'state', ...range() };
    case VIRTIO_MEM_REQ_UNPLUG_ALL:
      return { type: 'unplug_all' };
    default:
      return { type: 'unsupported', code };
  }
}

/** Encodes a response; `state` is meaningful only for an ACKed STATE request. */
export function encodeResponse(type: number, state = 0): Uint8Array {
  const bytes = new Uint8Array(VIRTIO_MEM_RESP_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(RESP_TYPE, type, true);
  view.setUint16(RESP_STATE, state, true);
  return bytes;
}
