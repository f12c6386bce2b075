/**
 * The shared `struct kvm_run` page of a vCPU (linux/kvm.h): how a KVM_RUN exit is read and
 * answered. Both the vCPU's worker thread and the main thread hold a view of the same mapping.
 */

// struct kvm_run field offsets.
export const RUN_REQUEST_INTERRUPT_WINDOW = 0;
export const RUN_IMMEDIATE_EXIT = 1;
export const RUN_EXIT_REASON = 8;
export const RUN_READY_FOR_INTERRUPT_INJECTION = 12;
export const RUN_IF_FLAG = 13;
/** Start of the per-exit-reason union. */
export const RUN_EXIT_UNION = 32;

// The `io` member of the union.
export const RUN_IO_DIRECTION = RUN_EXIT_UNION;
export const RUN_IO_SIZE = RUN_EXIT_UNION + 1;
export const RUN_IO_PORT = RUN_EXIT_UNION + 2;
export const RUN_IO_COUNT = RUN_EXIT_UNION + 4;
export const RUN_IO_DATA_OFFSET = RUN_EXIT_UNION + 8;
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// The `mmio` member of the union.
export const RUN_MMIO_PHYS_ADDR = RUN_EXIT_UNION;
export const RUN_MMIO_DATA = RUN_EXIT_UNION + 8;
export const RUN_MMIO_LEN = RUN_EXIT_UNION + 16;
export const RUN_MMIO_IS_WRITE = RUN_EXIT_UNION + 20;

// The `fail_entry`, `internal` and `system_event` members of the union.
export const RUN_FAIL_ENTRY_REASON = RUN_EXIT_UNION;
export const RUN_INTERNAL_SUBERROR = RUN_EXIT_UNION;
export const RUN_SYSTEM_EVENT_TYPE = RUN_EXIT_UNION;

/** KVM_EXIT_* values of `exit_reason`. */
export const KvmExit = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

/** KVM_SYSTEM_EVENT_* values of `system_event.type`. */
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;

/** The name of an exit reason, for logs. */
export function exitName(reason: number): string {
  for (const [name, value] of Object.entries(KvmExit)) if (value === reason) return name;
  return `exit_${reason}`;
}

/** A decoded port I/O exit; `data` aliases the kvm_run page, so reads are answered in place. */
export interface IoExit {
  out: boolean;
  port: number;
  size: number;
  count: number;
  data: Uint8Array;
}

/** A decoded MMIO exit; `data` aliases kvm_run.mmio.data, so reads are answered in place. */
export interface MmioExit {
  write: boolean;
  addr: bigint;
  data: Uint8Array;
}

/** Typed access to one vCPU's kvm_run mapping. */
export class KvmRun {
  readonly bytes: Uint8Array;
  readonly #view: DataView;

  constructor(buffer: ArrayBuffer) {
    this.bytes = new Uint8Array(buffer);
    this.#view = new DataView(buffer);
  }

  get exitReason(): number {
    return this.#view.getUint32(RUN_EXIT_REASON, true);
  }

  /** kvm_run.immediate_exit: KVM_RUN returns EINTR at once while it is set. */
  set immediateExit(on: boolean) {
    this.#view.setUint8(RUN_IMMEDIATE_EXIT, on ? 1 : 0);
  }

  get immediateExit(): boolean {
    return this.#view.getUint8(RUN_IMMEDIATE_EXIT) !== 0;
  }

  /**
   * The port I/O exit. `count` repetitions (string instructions) of `size` bytes each lie
   * back to back at data_offset; the offset is KVM's, so it is kept within the mapping.
   */
  io(): IoExit {
    const size = this.#view.getUint8(RUN_IO_SIZE);
    const count = this.#view.getUint32(RUN_IO_COUNT, true);
    const offset = Number(this.#view.getBigUint64(RUN_IO_DATA_OFFSET, true));
    const len = Math.min(size * count, Math.max(0, this.bytes.length - offset));
    return {
      out: this.#view.getUint8(RUN_IO_DIRECTION) === KVM_EXIT_IO_OUT,
      port: this.#view.getUint16(RUN_IO_PORT, true),
      size,
      count,
      data: this.bytes.subarray(offset, offset + len),
    };
  }

  /** The MMIO exit; `len` is at most 8. */
  mmio(): MmioExit {
    const len = Math.min(8, this.#view.getUint32(RUN_MMIO_LEN, true));
    return {
      write: this.#view.getUint8(RUN_MMIO_IS_WRITE) !== 0,
      addr: this.#view.getBigUint64(RUN_MMIO_PHYS_ADDR, true),
      data: this.bytes.subarray(RUN_MMIO_DATA, RUN_MMIO_DATA + len),
    };
  }

  get systemEventType(): number {
    return this.#view.getUint32(RUN_SYSTEM_EVENT_TYPE, true);
  }

  get failEntryReason(): bigint {
    return this.#view.getBigUint64(RUN_FAIL_ENTRY_REASON, true);
  }

  get internalSuberror(): number {
    return this.#view.getUint32(RUN_INTERNAL_SUBERROR, true);
  }
}
