/**
 * What a virtio device implements, independent of its transport, and what the transport hands
 * it once the driver has set DRIVER_OK. Names follow VIRTIO 1.2 sections 2 and 6.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Virtqueue } from './queue.js';

// VIRTIO 1.2 section 2.1 "Device Status Field".
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01;
export const VIRTIO_CONFIG_S_DRIVER = 0x02;
export const VIRTIO_CONFIG_S_DRIVER_OK = 0x04;
export const VIRTIO_CONFIG_S_FEATURES_OK = 0x08;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// VIRTIO 1.2 section 6 "Reserved Feature Bits" (those memvisor offers).
export const VIRTIO_RING_F_INDIRECT_DESC = 1n << 28n;
export const VIRTIO_F_VERSION_1 = 1n << 32n;

// VIRTIO 1.2 section 5 "Device Types".
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_MEM = 24;

/** What a device may use and signal while it is active. Valid until the next device reset. */
export interface DeviceContext {
  readonly memory: GuestMemory;
  /** One per entry of `queueMaxSizes`, configured by the driver; some may not be ready. */
  readonly queues: readonly Virtqueue[];
  /** The features the driver accepted (FEATURES_OK). */
  readonly ackedFeatures: bigint;
  /** Interrupts the driver for used buffers on queue `index`, unless it suppressed them. */
  signalUsed(index: number): void;
  /** Bumps the config generation and sends a configuration change notification. */
  signalConfig(): void;
  /** Reports a fatal protocol violation: sets DEVICE_NEEDS_RESET; no queue is served after. */
  needsReset(reason: string): void;
}

/** A virtio device as the transport sees it. Guest input never makes these methods throw. */
export interface VirtioDevice {
  /** VIRTIO device ID (section 5). */
  readonly deviceType: number;
  /** Device feature bits; the transport adds its own (VERSION_1, ring features). */
  readonly availableFeatures: bigint;
  /** Largest size the driver may choose for each queue; the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Fills `data` from device config space at `offset`; bytes past its end read as zero. */
  readConfig(offset: number, data: Uint8Array): void;
  /** A driver write to device config space; read-only fields ignore it. */
  writeConfig(offset: number, data: Uint8Array): void;
  /** The driver set DRIVER_OK; `ctx` stays valid until `deviceReset`. */
  activate(ctx: DeviceContext): void;
  /** The driver notified queue `index`. */
  processQueue(index: number): void;
  /** The driver wrote 0 to the status register. */
  deviceReset(): void;
}

/** Copies `data.length` bytes of `config` from `offset`; what lies past its end reads as 0. */
export function readConfigBytes(config: Uint8Array, offset: number, data: Uint8Array): void {
  data.fill(0);
  if (offset < 0 || offset >= config.length) return;
  data.set(config.subarray(offset, Math.min(config.length, offset + data.length)));
}
