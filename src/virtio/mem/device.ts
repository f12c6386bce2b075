/**
 * The virtio-mem device (VIRTIO 1.2 section 5.15): a region of guest-physical memory above boot
 * RAM, split into blocks the driver plugs and unplugs on request, steered by `requested_size`.
 * Block state is the device's; making memory accessible or discarding it is the host's
 * (`VirtioMemHost`), so this file knows nothing of KVM or mappings.
 *
 * VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE is always offered. A driver that does not accept it is
 * still served, but the host keeps unplugged blocks inaccessible anyway, so such a driver reading
 * unplugged memory (which the spec then allows, e.g. for dumps) faults instead of reading zeros.
 */
import { EventEmitter } from 'node:events';
import { InvalidInputError } from '../../util/errors.js';
import type { VirtioMemStatus } from '../../vmm/controller.js';
import {
  type DeviceContext,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_MEM,
  type VirtioDevice,
  readConfigBytes,
} from '../device.js';
import { type LogSink, RateLimitedLog, hex } from '../log.js';
import type { DescriptorChain, Virtqueue } from '../queue.js';
import { BlockBitmap } from './bitmap.js';
import {
  VIRTIO_MEM_CONFIG,
  VIRTIO_MEM_CONFIG_SIZE,
  VIRTIO_MEM_F_ACPI_PXM,
  VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
  VIRTIO_MEM_GUEST_REQUEST_QUEUE,
  VIRTIO_MEM_QUEUE_SIZE,
  VIRTIO_MEM_REQUESTS_PER_NOTIFY,
  VIRTIO_MEM_RESP_ACK,
  VIRTIO_MEM_RESP_BUSY,
  VIRTIO_MEM_RESP_ERROR,
  VIRTIO_MEM_RESP_NACK,
  VIRTIO_MEM_STATE_MIXED,
  VIRTIO_MEM_STATE_PLUGGED,
  VIRTIO_MEM_STATE_UNPLUGGED,
  VIRTIO_MEM_USABLE_EXTENT,
} from './constants.js';
import { type VirtioMemMetrics, newVirtioMemMetrics } from './metrics.js';
import {
  type BlockRange,
  type MemRequest,
  VIRTIO_MEM_REQ_SIZE,
  VIRTIO_MEM_RESP_SIZE,
  decodeRequest,
  encodeResponse,
} from './request.js';

/** What the VMM does when blocks change state; offsets are relative to the region start. */
export interface VirtioMemHost {
  /** Makes [offset, offset+len) of the region guest-accessible; throws if it cannot now. */
  plug(offset: number, len: number): void;
  /** Discards the range on the host and makes it inaccessible to the guest. */
  unplug(offset: number, len: number): void;
}

/** Construction parameters; sizes in bytes. */
export interface VirtioMemOptions {
  id: string;
  /** Guest-physical start of the region; a multiple of `blockSize`. */
  addr: number;
  /** A non-zero multiple of `blockSize`. */
  regionSize: number;
  /** A power of two, at least 4 KiB. */
  blockSize: number;
  /** NUMA node (ACPI proximity domain) of the region; 0 when absent. */
  nodeId?: number;
  /** Offer VIRTIO_MEM_F_ACPI_PXM; needs `nodeId`. */
  acpiPxm?: boolean;
  /** Initial requested size; 0 when absent. */
  requestedSize?: number;
  host: VirtioMemHost;
  log?: LogSink;
}

/** Emitted as 'size_changed' whenever the plugged size changes. */
export interface VirtioMemSizeChanged {
  id: string;
  node: number;
  plugged_size: number;
  requested_size: number;
}

/** Emitted as 'guest_error' for every guest protocol violation. */
export interface VirtioMemGuestError {
  id: string;
  reason: string;
}

/** A device status without `resident_bytes`, which only the host can measure. */
export type VirtioMemDeviceStatus = Omit<VirtioMemStatus, 'resident_bytes'>;

type Answer = { type: number; state?: number };

const MIN_BLOCK_SIZE = 4096;

/** One virtio-mem device. */
export class VirtioMem implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_MEM;
  readonly availableFeatures: bigint;
  readonly queueMaxSizes = [VIRTIO_MEM_QUEUE_SIZE] as const;
  /** 'size_changed' (VirtioMemSizeChanged) and 'guest_error' (VirtioMemGuestError). */
  readonly events = new EventEmitter();
  readonly metrics: VirtioMemMetrics = newVirtioMemMetrics();
  readonly id: string;
  readonly addr: number;
  readonly regionSize: number;
  readonly blockSize: number;
  readonly node: number;
  readonly #host: VirtioMemHost;
  readonly #log: RateLimitedLog;
  readonly #bitmap: BlockBitmap;
  #requested: number;
  #usable: number;
  #ctx: DeviceContext | null = null;
  #continuation = false;

  constructor(opts: VirtioMemOptions) {
    const { id, addr, regionSize, blockSize } = opts;
    const requested = opts.requestedSize ?? 0;
    const bad = (what: string) => new InvalidInputError(`virtio-mem ${id}: ${what}`);
    if (!isSafeNonNegative(blockSize) || blockSize < MIN_BLOCK_SIZE || !isPowerOfTwo(blockSize)) {
      throw bad(`block size ${blockSize} is not a power of two of at least ${MIN_BLOCK_SIZE}`);
    }
    if (!isSafeNonNegative(addr) || addr % blockSize !== 0) {
      throw bad(`address ${hex(addr)} is not a multiple of the block size ${hex(blockSize)}`);
    }
    if (!isSafeNonNegative(regionSize) || regionSize === 0 || regionSize % blockSize !== 0) {
      throw bad(`region size ${regionSize} is not a positive multiple of the block size`);
    }
    const node = opts.nodeId ?? 0;
    if (!isSafeNonNegative(node) || node > 0xffff) {
      throw bad(`node ${node} does not fit the 16-bit node_id`);
    }
    if (opts.acpiPxm && opts.nodeId === undefined) {
      throw bad('acpiPxm needs a nodeId');
    }
    this.id = id;
    this.addr = addr;
    this.regionSize = regionSize;
    this.blockSize = blockSize;
    this.node = node;
    this.#host = opts.host;
    this.#log = new RateLimitedLog(`virtio-mem[${id}]`, opts.log);
    this.#bitmap = new BlockBitmap(regionSize / blockSize);
    this.#checkRequestedSize(requested);
    this.#requested = requested;
    this.#usable = this.#usableFor(requested);
    this.availableFeatures =
      VIRTIO_F_VERSION_1 |
      VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE |
      (opts.acpiPxm ? VIRTIO_MEM_F_ACPI_PXM : 0n);
  }

  get requestedSize(): number {
    return this.#requested;
  }

  get usableRegionSize(): number {
    return this.#usable;
  }

  get pluggedSize(): number {
    return this.#bitmap.plugged * this.blockSize;
  }

  /** Whether the active driver accepted VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE (false if none). */
  get unpluggedInaccessibleAcked(): boolean {
    return ((this.#ctx?.ackedFeatures ?? 0n) & VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE) !== 0n;
  }

  /**
   * Sets the size the driver is asked to reach. Throws InvalidInputError, changing nothing, for
   * a size that is negative, not a multiple of the block size, or larger than the region.
   */
  setRequestedSize(bytes: number): void {
    this.#checkRequestedSize(bytes);

    this.#requested = bytes;
    this.#usable = Math.max(this.#usable, this.#usableFor(bytes));

    // Sent even when nothing changed (the spec allows it): it nudges a driver that gave up.
    this.#signalConfig();
  }

  /**
   * A system reset (reboot): every block is unplugged and discarded, and the usable region
   * shrinks to fit the requested size, which is kept. A device reset (status 0) is separate and
   * changes no block. If the host fails to unplug a run, the others are still unplugged, that
   * run stays plugged, and the first failure is rethrown.
   */
  systemReset(): void {
    const before = this.#bitmap.plugged;
    const failure = this.#unplugAllBlocks();
    if (failure === null) this.#usable = this.#usableFor(this.#requested);
    if (this.#bitmap.plugged !== before) this.#emitSizeChanged();
    if (failure !== null) throw failure;
  }

  /** Whether guest-physical address `gpa` lies in a plugged block of this device. */
  isPlugged(gpa: number): boolean {
    if (gpa < this.addr || gpa >= this.addr + this.regionSize) return false;
    return this.#bitmap.isPlugged(Math.floor((gpa - this.addr) / this.blockSize));
  }

  /** The device's fields of VirtioMemStatus. */
  status(): VirtioMemDeviceStatus {
    return {
      id: this.id,
      node: this.node,
      addr: this.addr,
      region_size: this.regionSize,
      block_size: this.blockSize,
      usable_region_size: this.#usable,
      requested_size: this.#requested,
      plugged_size: this.pluggedSize,
      driver_ok: this.#ctx !== null,
      violations: this.metrics.violations,
    };
  }

  readConfig(offset: number, data: Uint8Array): void {
    const config = new Uint8Array(VIRTIO_MEM_CONFIG_SIZE);
    const view = new DataView(config.buffer);
    const u64 = (at: number, value: number) => view.setBigUint64(at, BigInt(value), true);
    u64(VIRTIO_MEM_CONFIG.BLOCK_SIZE, this.blockSize);
    view.setUint16(VIRTIO_MEM_CONFIG.NODE_ID, this.node, true);
    u64(VIRTIO_MEM_CONFIG.ADDR, this.addr);
    u64(VIRTIO_MEM_CONFIG.REGION_SIZE, this.regionSize);
    u64(VIRTIO_MEM_CONFIG.USABLE_REGION_SIZE, this.#usable);
    u64(VIRTIO_MEM_CONFIG.PLUGGED_SIZE, this.pluggedSize);
    u64(VIRTIO_MEM_CONFIG.REQUESTED_SIZE, this.#requested);
    readConfigBytes(config, offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    this.#violation(`driver wrote ${data.length} bytes of read-only config at ${hex(offset)}`);
  }

  activate(ctx: DeviceContext): void {
    this.#ctx = ctx;
    if (!this.unpluggedInaccessibleAcked) {
      this.#log.warn(
        'driver did not accept UNPLUGGED_INACCESSIBLE; unplugged blocks stay unmapped',
      );
    }
  }

  deviceReset(): void {
    // Section 5.15.5: a device reset changes no block state.
    this.#ctx = null;
  }

  processQueue(index: number): void {
    const ctx = this.#ctx;
    const queue = ctx?.queues[index];
    if (!ctx || !queue || index !== VIRTIO_MEM_GUEST_REQUEST_QUEUE) return;
    let used = false;
    for (let served = 0; served < VIRTIO_MEM_REQUESTS_PER_NOTIFY; served++) {
      const popped = queue.pop();
      if (popped === null) break;
      if (popped.kind === 'broken') {
        this.#violation(`guest-request queue: ${popped.reason}`);
        if (used) ctx.signalUsed(index);
        ctx.needsReset(popped.reason);
        return;
      }
      if (popped.kind === 'bad_chain') {
        this.#violation(`guest-request queue: ${popped.reason}`);
        if (popped.head !== null) used = this.#drop(queue, popped.head) || used;
        continue;
      }
      this.#serve(ctx, queue, popped.chain);
      used = true;
    }
    if (used) ctx.signalUsed(index);
    if (queue.hasPending()) this.#continueLater(ctx, index);
  }

  /** Yields to the event loop before serving the rest, so a flood cannot starve it. */
  #continueLater(ctx: DeviceContext, index: number): void {
    if (this.#continuation) return;
    this.#continuation = true;
    setImmediate(() => {
      this.#continuation = false;
      if (this.#ctx === ctx) this.processQueue(index);
    });
  }

  #drop(queue: Virtqueue, head: number): boolean {
    this.metrics.dropped_chains++;
    return queue.addUsed(head, 0);
  }

  #serve(ctx: DeviceContext, queue: Virtqueue, chain: DescriptorChain): void {
    if (chain.writableLength < VIRTIO_MEM_RESP_SIZE) {
      this.#violation(
        `response buffer of ${chain.writableLength} bytes, need ${VIRTIO_MEM_RESP_SIZE}`,
      );
      this.#drop(queue, chain.head);
      return;
    }
    const request = decodeRequest(chain.readBytes(ctx.memory, VIRTIO_MEM_REQ_SIZE));
    let answer: Answer;
    if (request === null) {
      this.#violation(`request of ${chain.readableLength} bytes, need ${VIRTIO_MEM_REQ_SIZE}`);
      answer = { type: VIRTIO_MEM_RESP_ERROR };
    } else {
      answer = this.#handle(request);
    }
    this.#count(answer.type);
    const written = chain.writeBytes(ctx.memory, encodeResponse(answer.type, answer.state));
    queue.addUsed(chain.head, written);
  }

  #handle(request: MemRequest): Answer {
    switch (request.type) {
      case 'plug':
        this.metrics.plug_requests++;
        return this.#plug(request);
      case 'unplug':
        this.metrics.unplug_requests++;
        return this.#unplug(request);
      case 'unplug_all':
        this.metrics.unplug_all_requests++;
        return this.#unplugAll();
      case 'state':
        this.metrics.state_requests++;
        return this.#state(request);
      case 'unsupported':
        this.metrics.unsupported_requests++;
        return this.#error(`unknown request type ${request.code}`);
    }
  }

  #plug(request: BlockRange): Answer {
    const range = this.#checkRange('PLUG', request);
    if (typeof range === 'string') return this.#error(range);
    const [first, count] = range;
    if (this.#bitmap.countPlugged(first, count) !== 0) {
      return this.#error(`PLUG ${this.#describe(request)}: some blocks are already plugged`);
    }
    if (this.pluggedSize + count * this.blockSize > this.#requested) {
      return { type: VIRTIO_MEM_RESP_NACK };
    }

    try {
      this.#host.plug(first * this.blockSize, count * this.blockSize);
    } catch (err) {
      this.metrics.host_failures++;
      return this.#busy(`plug failed ${this.#describe(request)}: ${errorText(err)}`);
    }
    this.#bitmap.set(first, count, true);

    this.#emitSizeChanged();
    return { type: VIRTIO_MEM_RESP_ACK };
  }

  #unplug(request: BlockRange): Answer {
    const range = this.#checkRange('UNPLUG', request);
    if (typeof range === 'string') return this.#error(range);
    const [first, count] = range;
    if (this.#bitmap.countPlugged(first, count) !== count) {
      return this.#error(`UNPLUG ${this.#describe(request)}: some blocks are not plugged`);
    }

    try {
      this.#host.unplug(first * this.blockSize, count * this.blockSize);
    } catch (err) {
      this.metrics.host_failures++;
      return this.#busy(`unplug failed ${this.#describe(request)}: ${errorText(err)}`);
    }
    this.#bitmap.set(first, count, false);

    this.#emitSizeChanged();
    return { type: VIRTIO_MEM_RESP_ACK };
  }

  #unplugAll(): Answer {
    const before = this.#bitmap.plugged;
    const failure = this.#unplugAllBlocks();
    if (this.#bitmap.plugged !== before) this.#emitSizeChanged();
    if (failure !== null) return this.#busy(`unplug all failed: ${errorText(failure)}`);

    // Section 5.15.6.3 lets UNPLUG_ALL shrink the usable region. The spec does not require a
    // notification here, but Linux reads usable_region_size only on one, so it is sent.
    const usable = this.#usableFor(this.#requested);
    if (usable !== this.#usable) {
      this.#usable = usable;
      this.#signalConfig();
    }
    return { type: VIRTIO_MEM_RESP_ACK };
  }

  #state(request: BlockRange): Answer {
    const range = this.#checkRange('STATE', request);
    if (typeof range === 'string') return this.#error(range);
    const [first, count] = range;
    const plugged = this.#bitmap.countPlugged(first, count);
    const state =
      plugged === count
        ? VIRTIO_MEM_STATE_PLUGGED
        : plugged === 0
          ? VIRTIO_MEM_STATE_UNPLUGGED
          : VIRTIO_MEM_STATE_MIXED;
    return { type: VIRTIO_MEM_RESP_ACK, state };
  }

  /**
   * Section 5.15.6.1: the range must be block-aligned, non-empty and inside the usable region.
   * Returns [first block, block count] or why it is not.
   */
  #checkRange(what: string, request: BlockRange): [number, number] | string {
    const block = BigInt(this.blockSize);
    const start = BigInt(this.addr);
    const where = `${what} ${this.#describe(request)}`;
    if (request.addr % block !== 0n) return `${where}: address not aligned to the block size`;
    if (request.nbBlocks === 0) return `${where}: nb_blocks is 0`;
    const end = request.addr + BigInt(request.nbBlocks) * block;
    if (request.addr < start || end > start + BigInt(this.#usable)) {
      return `${where}: outside the usable region ${hex(this.addr)}+${hex(this.#usable)}`;
    }
    return [Number((request.addr - start) / block), request.nbBlocks];
  }

  /** Unplugs every plugged run; returns the first host failure (its run stays plugged). */
  #unplugAllBlocks(): unknown {
    let failure: unknown = null;
    for (const [first, count] of this.#bitmap.pluggedRuns()) {
      try {
        this.#host.unplug(first * this.blockSize, count * this.blockSize);
        this.#bitmap.set(first, count, false);
      } catch (err) {
        this.metrics.host_failures++;
        failure ??= err;
      }
    }
    return failure;
  }

  #usableFor(requested: number): number {
    if (requested === 0) return 0;
    const wanted = alignUp(requested + VIRTIO_MEM_USABLE_EXTENT, this.blockSize);
    return Math.min(this.regionSize, wanted);
  }

  #checkRequestedSize(bytes: number): void {
    const bad = (what: string) =>
      new InvalidInputError(`virtio-mem ${this.id}: requested size ${bytes} ${what}`);
    // Beyond 2^53 a number no longer names one byte count, so it can only be too large.
    if (bytes > Number.MAX_SAFE_INTEGER) throw bad(`exceeds the region size ${this.regionSize}`);
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw bad('is not a whole number of bytes (0 or more)');
    }
    if (bytes % this.blockSize !== 0) {
      throw bad(`is not a multiple of the block size ${this.blockSize}`);
    }
    if (bytes > this.regionSize) throw bad(`exceeds the region size ${this.regionSize}`);
  }

  #signalConfig(): void {
    if (!this.#ctx) return;
    this.metrics.config_changes++;
    this.#ctx.signalConfig();
  }

  #emitSizeChanged(): void {
    const event: VirtioMemSizeChanged = {
      id: this.id,
      node: this.node,
      plugged_size: this.pluggedSize,
      requested_size: this.#requested,
    };
    this.events.emit('size_changed', event);
  }

  #describe(request: BlockRange): string {
    return `addr=${hex(request.addr)} blocks=${request.nbBlocks}`;
  }

  #error(reason: string): Answer {
    this.#violation(reason);
    return { type: VIRTIO_MEM_RESP_ERROR };
  }

  /** The host could not do it now; the failure was already counted. */
  #busy(reason: string): Answer {
    this.#log.warn(reason);
    return { type: VIRTIO_MEM_RESP_BUSY };
  }

  #count(type: number): void {
    if (type === VIRTIO_MEM_RESP_ACK) this.metrics.ack++;
    else if (type === VIRTIO_MEM_RESP_NACK) this.metrics.nack++;
    else if (type === VIRTIO_MEM_RESP_BUSY) this.metrics.busy++;
    else this.metrics.error++;
  }

  #violation(reason: string): void {
    this.metrics.violations++;
    this.#log.warn(reason);
    const event: VirtioMemGuestError = { id: this.id, reason };
    this.events.emit('guest_error', event);
  }
}

function isSafeNonNegative(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n));
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
