/**
 * The driver side of the virtio-mmio transport for tests: 32-bit register accesses and the
 * initialization sequence of VIRTIO 1.2 section 3.1.1 as Linux's virtio_mmio performs it.
 */
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from '../../src/virtio/device.js';
import { VIRTIO_MMIO, type VirtioMmioTransport } from '../../src/virtio/transport/mmio.js';
import type { DriverQueueLayout } from './driver-queue.js';

/** Register-level access to a transport, as a driver has it. */
export class MmioDriver {
  readonly transport: VirtioMmioTransport;

  constructor(transport: VirtioMmioTransport) {
    this.transport = transport;
  }

  read32(offset: number): number {
    const data = new Uint8Array(4);
    this.transport.read(offset, data);
    return new DataView(data.buffer).getUint32(0, true);
  }

  write32(offset: number, value: number): void {
    const data = new Uint8Array(4);
    new DataView(data.buffer).setUint32(0, value >>> 0, true);
    this.transport.write(offset, data);
  }

  /** Reads `len` bytes of device config space at `offset` in one access. */
  readConfig(offset: number, len: number): Uint8Array {
    const data = new Uint8Array(len);
    this.transport.read(VIRTIO_MMIO.CONFIG + offset, data);
    return data;
  }

  /** A 64-bit config field read as two 32-bit halves, as Linux reads it. */
  readConfigU64(offset: number): number {
    const lo = new DataView(this.readConfig(offset, 4).buffer).getUint32(0, true);
    const hi = new DataView(this.readConfig(offset + 4, 4).buffer).getUint32(0, true);
    return hi * 2 ** 32 + lo;
  }

  /** The 64-bit device feature set, read through both selector windows. */
  deviceFeatures(): bigint {
    this.write32(VIRTIO_MMIO.DEVICE_FEATURES_SEL, 1);
    const high = this.read32(VIRTIO_MMIO.DEVICE_FEATURES);
    this.write32(VIRTIO_MMIO.DEVICE_FEATURES_SEL, 0);
    const low = this.read32(VIRTIO_MMIO.DEVICE_FEATURES);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  /** Adds `bit` to the status register, as virtio_add_status does. */
  addStatus(bit: number): void {
    this.write32(VIRTIO_MMIO.STATUS, this.read32(VIRTIO_MMIO.STATUS) | bit);
  }

  /**
   * Reset, ACKNOWLEDGE, DRIVER, write `features`, FEATURES_OK. Returns whether the device kept
   * FEATURES_OK set.
   */
  negotiate(features: bigint): boolean {
    this.write32(VIRTIO_MMIO.STATUS, 0);
    this.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.addStatus(VIRTIO_CONFIG_S_DRIVER);
    this.write32(VIRTIO_MMIO.DRIVER_FEATURES_SEL, 1);
    this.write32(VIRTIO_MMIO.DRIVER_FEATURES, Number(features >> 32n));
    this.write32(VIRTIO_MMIO.DRIVER_FEATURES_SEL, 0);
    this.write32(VIRTIO_MMIO.DRIVER_FEATURES, Number(features & 0xffffffffn));
    this.addStatus(VIRTIO_CONFIG_S_FEATURES_OK);
    return (this.read32(VIRTIO_MMIO.STATUS) & VIRTIO_CONFIG_S_FEATURES_OK) !== 0;
  }

  /** Programs queue `index` with `layout` and sets it ready. */
  setupQueue(index: number, layout: DriverQueueLayout): void {
    this.write32(VIRTIO_MMIO.QUEUE_SEL, index);
    this.write32(VIRTIO_MMIO.QUEUE_NUM, layout.size);
    this.write32(VIRTIO_MMIO.QUEUE_DESC_LOW, layout.desc);
    this.write32(VIRTIO_MMIO.QUEUE_DESC_HIGH, 0);
    this.write32(VIRTIO_MMIO.QUEUE_DRIVER_LOW, layout.avail);
    this.write32(VIRTIO_MMIO.QUEUE_DRIVER_HIGH, 0);
    this.write32(VIRTIO_MMIO.QUEUE_DEVICE_LOW, layout.used);
    this.write32(VIRTIO_MMIO.QUEUE_DEVICE_HIGH, 0);
    this.write32(VIRTIO_MMIO.QUEUE_READY, 1);
  }

  /** Sets DRIVER_OK; returns whether it stuck. */
  driverOk(): boolean {
    this.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
    return (this.read32(VIRTIO_MMIO.STATUS) & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
  }

  /** Kicks queue `index`. */
  notify(index: number): void {
    this.write32(VIRTIO_MMIO.QUEUE_NOTIFY, index);
  }

  /** Reads and acknowledges InterruptStatus, as the driver's interrupt handler does. */
  ackInterrupts(): number {
    const status = this.read32(VIRTIO_MMIO.INTERRUPT_STATUS);
    this.write32(VIRTIO_MMIO.INTERRUPT_ACK, status);
    return status;
  }
}
