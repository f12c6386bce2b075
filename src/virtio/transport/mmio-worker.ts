/**
 * The part of virtio-mmio a vCPU worker answers by itself, through a transport's shared
 * register block (see SharedCell in mmio.ts, also for why QueueNotify is not part of it): reads
 * of InterruptStatus and writes of InterruptACK. Everything else exits to the main thread.
 */
import { SharedCell, VIRTIO_MMIO } from './mmio.js';

/** A virtio-mmio window in guest-physical space and its transport's shared register block. */
export interface SharedMmioWindow {
  base: number;
  size: number;
  shared: SharedArrayBuffer;
}

/** Worker-side view of the shared windows, built once per worker. */
export class SharedMmioWindows {
  readonly #windows: { base: number; end: number; cells: Int32Array }[];

  constructor(windows: readonly SharedMmioWindow[]) {
    this.#windows = windows.map((w) => ({
      base: w.base,
      end: w.base + w.size,
      cells: new Int32Array(w.shared),
    }));
  }

  /**
   * Answers an MMIO access at `addr` if it is one of the registers above, filling `data` on a
   * read; returns false for anything the main thread must answer.
   */
  answer(addr: bigint, write: boolean, data: Uint8Array): boolean {
    if (data.length !== 4 || this.#windows.length === 0) return false;
    const a = Number(addr);
    const w = this.#windows.find((x) => a >= x.base && a < x.end);
    if (!w) return false;
    const view = new DataView(data.buffer, data.byteOffset, 4);
    switch (a - w.base) {
      case VIRTIO_MMIO.INTERRUPT_STATUS:
        if (write) return false;
        view.setUint32(0, Atomics.load(w.cells, SharedCell.INTERRUPT_STATUS) >>> 0, true);
        return true;
      case VIRTIO_MMIO.INTERRUPT_ACK:
        if (!write) return false;
        Atomics.and(w.cells, SharedCell.INTERRUPT_STATUS, ~view.getUint32(0, true));
        return true;
      default:
        return false;
    }
  }
}
