/**
 * virtio over MMIO, version 2 (VIRTIO 1.2 section 4.2.2), modern devices only. One instance
 * per device, mapped on the MMIO bus over a 4 KiB window; device config space starts at 0x100.
 */
import type { BusDevice, IrqLine } from '../../devices/bus.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import {
  type DeviceContext,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_INDIRECT_DESC,
  type VirtioDevice,
} from '../device.js';
import { type LogSink, RateLimitedLog, hex } from '../log.js';
import { Virtqueue } from '../queue.js';

/** Register offsets of VIRTIO 1.2 section 4.2.2 "MMIO Device Register Layout". */
export const VIRTIO_MMIO = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  QUEUE_RESET: 0x0c0,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** "virt" read as a little-endian 32-bit value. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** The modern (non-legacy) register layout. */
export const VIRTIO_MMIO_VERSION = 2;
/** The size of one device's MMIO window. */
export const VIRTIO_MMIO_WINDOW = 0x1000;
/** "MVSR": the vendor ID memvisor reports. */
export const MEMVISOR_VENDOR_ID = 0x5253564d;

// VIRTIO 1.2 section 4.2.2, InterruptStatus bits.
export const VIRTIO_MMIO_INT_VRING = 1 << 0;
export const VIRTIO_MMIO_INT_CONFIG = 1 << 1;

/** Features every device gets from the transport and ring implementation. */
export const TRANSPORT_FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC;

const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER = ACK | VIRTIO_CONFIG_S_DRIVER;
const FEATURES_OK = DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
const DRIVER_OK = FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

/**
 * Section 3.1.1 driver initialization as allowed status transitions (ignoring FAILED and
 * DEVICE_NEEDS_RESET, handled apart). Writing the current value again is always allowed.
 */
const STATUS_TRANSITIONS: readonly (readonly [from: number, to: number])[] = [
  [0, ACK],
  [ACK, DRIVER],
  [DRIVER, FEATURES_OK],
  [FEATURES_OK, DRIVER_OK],
];

/** Options of a `VirtioMmioTransport`. */
export interface MmioTransportOptions {
  /** Names the device in log lines, e.g. `virtio-mem[mem0]`. */
  name: string;
  log?: LogSink;
}

/** Guest mistakes the transport has seen, by kind. */
export interface MmioTransportCounters {
  bad_register_access: number;
  refused_status: number;
  refused_features: number;
  invalid_queue: number;
  bad_notify: number;
  /** Notifies after FEATURES_OK and before DRIVER_OK, served at DRIVER_OK (see `#notify`). */
  early_notify: number;
}

/**
 * Int32 cells of a transport's shared register block (`VirtioMmioTransport.shared`). A vCPU
 * worker answers InterruptStatus reads and InterruptACK writes through them by itself
 * (mmio-worker.ts): a driver makes two of these per interrupt, and an exit that waits for the
 * main thread costs milliseconds in the nested box.
 *
 * QueueNotify is not among them, on purpose. Posted from the worker, it let the notifying vCPU
 * run on while the main thread served the request, which for virtio-mem creates and deletes KVM
 * memory slots (6.1 zaps every shadow page of the VM on a deletion). In the box, vCPU 0
 * then triple-faulted in two end-to-end runs out of two, during plugs and unplugs; the faults
 * seen before had all been on other vCPUs. The notifying vCPU waits for its request to be
 * served again; that the posting was the cause is doubtful, as vCPU 3 of the same NUMA guest
 * then triple-faulted at the same step without it (README, Known gaps).
 */
export const SharedCell = {
  /** InterruptStatus: the transport sets bits, the driver's acknowledge clears them. */
  INTERRUPT_STATUS: 0,
} as const;

/** Int32 cells in a shared register block. */
export const SHARED_CELLS = 1;

/** A virtio device behind the MMIO register window. */
export class VirtioMmioTransport implements BusDevice {
  readonly device: VirtioDevice;
  readonly counters: MmioTransportCounters = {
    bad_register_access: 0,
    refused_status: 0,
    refused_features: 0,
    invalid_queue: 0,
    bad_notify: 0,
    early_notify: 0,
  };
  readonly #memory: GuestMemory;
  readonly #irq: IrqLine;
  readonly #log: RateLimitedLog;
  readonly #queues: Virtqueue[];
  readonly #deviceFeatures: bigint;
  /** The shared register block, for the vCPU workers (see SharedCell). */
  readonly shared = new SharedArrayBuffer(SHARED_CELLS * 4);
  readonly #cells = new Int32Array(this.shared);
  #status = 0;
  #driverFeatures = 0n;
  #deviceFeaturesSel = 0;
  #driverFeaturesSel = 0;
  #queueSel = 0;
  #shmSel = 0;
  #configGeneration = 0;
  /** Queues notified before DRIVER_OK, to serve once the device is live. */
  readonly #earlyNotifies = new Set<number>();
  /** The context handed to the device; replaced on every reset so stale ones do nothing. */
  #ctx: DeviceContext | null = null;

  constructor(device: VirtioDevice, memory: GuestMemory, irq: IrqLine, opts: MmioTransportOptions) {
    this.device = device;
    this.#memory = memory;
    this.#irq = irq;
    this.#log = new RateLimitedLog(opts.name, opts.log);
    this.#queues = device.queueMaxSizes.map((max) => new Virtqueue(memory, max));
    this.#deviceFeatures = device.availableFeatures | TRANSPORT_FEATURES;
  }

  /** The device status register as the driver last set it, plus DEVICE_NEEDS_RESET. */
  get status(): number {
    return this.#status;
  }

  /** Features the driver wrote; meaningful once FEATURES_OK is set. */
  get driverFeatures(): bigint {
    return this.#driverFeatures;
  }

  get interruptStatus(): number {
    return Atomics.load(this.#cells, SharedCell.INTERRUPT_STATUS);
  }

  get configGeneration(): number {
    return this.#configGeneration;
  }

  /** The queues, for inspection; the device gets them through its context. */
  get queues(): readonly Virtqueue[] {
    return this.#queues;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO.CONFIG) {
      this.device.readConfig(offset - VIRTIO_MMIO.CONFIG, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.#guestError('bad_register_access', `${data.length}-byte read at ${hex(offset)}`);
      data.fill(0xff);
      return;
    }
    new DataView(data.buffer, data.byteOffset, 4).setUint32(0, this.#readRegister(offset), true);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO.CONFIG) {
      this.device.writeConfig(offset - VIRTIO_MMIO.CONFIG, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.#guestError('bad_register_access', `${data.length}-byte write at ${hex(offset)}`);
      return;
    }
    this.#writeRegister(offset, new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
  }

  /** Resets the transport and the device as a status write of 0 does (also on system reset). */
  reset(): void {
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#deviceFeaturesSel = 0;
    this.#driverFeaturesSel = 0;
    this.#queueSel = 0;
    this.#shmSel = 0;
    Atomics.store(this.#cells, SharedCell.INTERRUPT_STATUS, 0);
    this.#earlyNotifies.clear();
    this.#ctx = null;
    for (const q of this.#queues) q.reset();
    this.device.deviceReset();
  }

  #readRegister(offset: number): number {
    const q = this.#queues[this.#queueSel];
    switch (offset) {
      case VIRTIO_MMIO.MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO.VERSION:
        return VIRTIO_MMIO_VERSION;
      case VIRTIO_MMIO.DEVICE_ID:
        return this.device.deviceType;
      case VIRTIO_MMIO.VENDOR_ID:
        return MEMVISOR_VENDOR_ID;
      case VIRTIO_MMIO.DEVICE_FEATURES:
        return featureWindow(this.#deviceFeatures, this.#deviceFeaturesSel);
      case VIRTIO_MMIO.QUEUE_NUM_MAX:
        return q ? q.maxSize : 0;
      case VIRTIO_MMIO.QUEUE_READY:
        return q?.config.ready ? 1 : 0;
      case VIRTIO_MMIO.INTERRUPT_STATUS:
        return Atomics.load(this.#cells, SharedCell.INTERRUPT_STATUS);
      case VIRTIO_MMIO.STATUS:
        return this.#status;
      // No shared memory regions: a length of all ones says "none" (section 4.2.2).
      case VIRTIO_MMIO.SHM_LEN_LOW:
      case VIRTIO_MMIO.SHM_LEN_HIGH:
      case VIRTIO_MMIO.SHM_BASE_LOW:
      case VIRTIO_MMIO.SHM_BASE_HIGH:
        return 0xffffffff;
      case VIRTIO_MMIO.QUEUE_RESET:
        return 0;
      case VIRTIO_MMIO.CONFIG_GENERATION:
        return this.#configGeneration;
      default:
        this.#guestError('bad_register_access', `read of write-only or unknown ${hex(offset)}`);
        return 0xffffffff;
    }
  }

  #writeRegister(offset: number, value: number): void {
    switch (offset) {
      case VIRTIO_MMIO.DEVICE_FEATURES_SEL:
        this.#deviceFeaturesSel = value;
        return;
      case VIRTIO_MMIO.DRIVER_FEATURES_SEL:
        this.#driverFeaturesSel = value;
        return;
      case VIRTIO_MMIO.DRIVER_FEATURES:
        this.#writeDriverFeatures(value);
        return;
      case VIRTIO_MMIO.QUEUE_SEL:
        this.#queueSel = value;
        return;
      case VIRTIO_MMIO.QUEUE_NUM:
      case VIRTIO_MMIO.QUEUE_READY:
      case VIRTIO_MMIO.QUEUE_DESC_LOW:
      case VIRTIO_MMIO.QUEUE_DESC_HIGH:
      case VIRTIO_MMIO.QUEUE_DRIVER_LOW:
      case VIRTIO_MMIO.QUEUE_DRIVER_HIGH:
      case VIRTIO_MMIO.QUEUE_DEVICE_LOW:
      case VIRTIO_MMIO.QUEUE_DEVICE_HIGH:
        this.#writeQueueRegister(offset, value);
        return;
      case VIRTIO_MMIO.QUEUE_NOTIFY:
        this.#notify(value);
        return;
      case VIRTIO_MMIO.INTERRUPT_ACK:
        Atomics.and(this.#cells, SharedCell.INTERRUPT_STATUS, ~value);
        return;
      case VIRTIO_MMIO.STATUS:
        this.#writeStatus(value);
        return;
      case VIRTIO_MMIO.SHM_SEL:
        this.#shmSel = value;
        return;
      default:
        this.#guestError('bad_register_access', `write of read-only or unknown ${hex(offset)}`);
    }
  }

  #writeDriverFeatures(value: number): void {
    if ((this.#status & ~VIRTIO_CONFIG_S_NEEDS_RESET) !== DRIVER) {
      this.#guestError('refused_features', `feature write in status ${hex(this.#status)}`);
      return;
    }
    if (this.#driverFeaturesSel > 1) return;
    const shift = BigInt(this.#driverFeaturesSel * 32);
    const mask = 0xffffffffn << shift;
    this.#driverFeatures = (this.#driverFeatures & ~mask) | (BigInt(value >>> 0) << shift);
  }

  #writeQueueRegister(offset: number, value: number): void {
    const q = this.#queues[this.#queueSel];
    if (!q) {
      this.#guestError('invalid_queue', `queue register write for queue ${this.#queueSel}`);
      return;
    }
    const setup = this.#status & ~VIRTIO_CONFIG_S_NEEDS_RESET;
    // Linux clears QueueReady while deleting queues after it has reset the device.
    if (setup === 0 && offset === VIRTIO_MMIO.QUEUE_READY && value === 0) return;
    if ((setup & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 || setup === 0) {
      this.#guestError('invalid_queue', `queue ${this.#queueSel} setup in status ${hex(setup)}`);
      return;
    }
    if (offset === VIRTIO_MMIO.QUEUE_READY) {
      q.config.ready = value === 1;
      return;
    }
    if (q.config.ready) {
      this.#guestError('invalid_queue', `queue ${this.#queueSel} changed while ready`);
      return;
    }
    const low = (old: bigint) => (old & ~0xffffffffn) | BigInt(value >>> 0);
    const high = (old: bigint) => (old & 0xffffffffn) | (BigInt(value >>> 0) << 32n);
    switch (offset) {
      case VIRTIO_MMIO.QUEUE_NUM:
        q.config.size = value;
        break;
      case VIRTIO_MMIO.QUEUE_DESC_LOW:
        q.config.descAddr = low(q.config.descAddr);
        break;
      case VIRTIO_MMIO.QUEUE_DESC_HIGH:
        q.config.descAddr = high(q.config.descAddr);
        break;
      case VIRTIO_MMIO.QUEUE_DRIVER_LOW:
        q.config.driverAddr = low(q.config.driverAddr);
        break;
      case VIRTIO_MMIO.QUEUE_DRIVER_HIGH:
        q.config.driverAddr = high(q.config.driverAddr);
        break;
      case VIRTIO_MMIO.QUEUE_DEVICE_LOW:
        q.config.deviceAddr = low(q.config.deviceAddr);
        break;
      case VIRTIO_MMIO.QUEUE_DEVICE_HIGH:
        q.config.deviceAddr = high(q.config.deviceAddr);
        break;
    }
  }

  #notify(index: number): void {
    const q = this.#queues[index];
    if (this.#status === FEATURES_OK && q?.config.ready) {
      // Section 3.1.1 forbids this, but Linux's virtio_balloon posts its first statistics
      // buffer and notifies before it sets DRIVER_OK, then waits for that buffer to come back.
      this.counters.early_notify++;
      this.#earlyNotifies.add(index);
      return;
    }
    if (!this.#ctx || !q?.active || this.#status & VIRTIO_CONFIG_S_NEEDS_RESET) {
      this.#guestError('bad_notify', `notify of queue ${index} in status ${hex(this.#status)}`);
      return;
    }
    this.device.processQueue(index);
  }

  #writeStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const current = this.#status & ~VIRTIO_CONFIG_S_NEEDS_RESET;
    const wanted = value & ~VIRTIO_CONFIG_S_NEEDS_RESET;
    if (wanted & VIRTIO_CONFIG_S_FAILED) {
      // The driver gave up; keep what it reported so it reads back, and serve nothing more.
      this.#status |= VIRTIO_CONFIG_S_FAILED;
      this.#ctx = null;
      return;
    }
    if (wanted === current) return;
    if (!STATUS_TRANSITIONS.some(([from, to]) => from === current && to === wanted)) {
      this.#guestError('refused_status', `status ${hex(current)} -> ${hex(value)} refused`);
      return;
    }
    if (wanted === FEATURES_OK && !this.#featuresAcceptable()) return;
    if (wanted === DRIVER_OK && !this.#activate()) return;
    this.#status = wanted | (this.#status & VIRTIO_CONFIG_S_NEEDS_RESET);
    if (wanted === DRIVER_OK) {
      const early = [...this.#earlyNotifies].sort((a, b) => a - b);
      this.#earlyNotifies.clear();
      for (const index of early) this.#notify(index);
    }
  }

  /** Section 3.1.1 step 5: FEATURES_OK stays clear when the device cannot work with them. */
  #featuresAcceptable(): boolean {
    const unknown = this.#driverFeatures & ~this.#deviceFeatures;
    if (unknown !== 0n) {
      this.#guestError('refused_features', `driver accepted unoffered features ${hex(unknown)}`);
      return false;
    }
    if ((this.#driverFeatures & VIRTIO_F_VERSION_1) === 0n) {
      this.#guestError('refused_features', 'driver did not accept VIRTIO_F_VERSION_1');
      return false;
    }
    return true;
  }

  #activate(): boolean {
    const indirect = (this.#driverFeatures & VIRTIO_RING_F_INDIRECT_DESC) !== 0n;
    for (const [i, q] of this.#queues.entries()) {
      if (!q.config.ready) continue;
      const refused = q.activate(indirect);
      if (refused !== null) {
        this.#guestError('invalid_queue', `queue ${i}: ${refused}`);
        this.#setNeedsReset();
        return false;
      }
    }
    const ctx: DeviceContext = {
      memory: this.#memory,
      queues: this.#queues,
      ackedFeatures: this.#driverFeatures,
      signalUsed: (index) => {
        if (this.#ctx !== ctx) return;
        if (this.#queues[index]?.needsInterrupt()) this.#raise(VIRTIO_MMIO_INT_VRING);
      },
      signalConfig: () => {
        if (this.#ctx !== ctx) return;
        this.#configGeneration = (this.#configGeneration + 1) >>> 0;
        this.#raise(VIRTIO_MMIO_INT_CONFIG);
      },
      needsReset: (reason) => {
        if (this.#ctx !== ctx) return;
        this.#log.warn(`device needs reset: ${reason}`);
        this.#setNeedsReset();
      },
    };
    this.#ctx = ctx;
    this.device.activate(ctx);
    return true;
  }

  /** Section 2.1.2: after DRIVER_OK, DEVICE_NEEDS_RESET comes with a config notification. */
  #setNeedsReset(): void {
    const wasSet = (this.#status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
    this.#status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    if (!wasSet && this.#status & VIRTIO_CONFIG_S_DRIVER_OK) {
      this.#configGeneration = (this.#configGeneration + 1) >>> 0;
      this.#raise(VIRTIO_MMIO_INT_CONFIG);
    }
  }

  /** Sets an InterruptStatus bit; the edge goes out only when the bit was clear. */
  #raise(bit: number): void {
    const was = Atomics.or(this.#cells, SharedCell.INTERRUPT_STATUS, bit);
    if ((was & bit) === 0) this.#irq.trigger();
  }

  #guestError(kind: keyof MmioTransportCounters, message: string): void {
    this.counters[kind]++;
    this.#log.warn(message);
  }
}

/** The 32-bit window `sel` of a 64-bit feature set (windows past 1 read as zero). */
function featureWindow(features: bigint, sel: number): number {
  if (sel > 1) return 0;
  return Number((features >> BigInt(sel * 32)) & 0xffffffffn);
}
