/**
 * The hand-off between the main thread and a vCPU's worker thread. Each vCPU has an Int32Array
 * over a SharedArrayBuffer (`VcpuSlot`); the worker runs KVM_RUN and, on an exit that needs
 * device state, moves STATE from RUNNING to EXIT and blocks in Atomics.wait until the main
 * thread has answered through the kvm_run page and moved STATE back to RUNNING. Commands
 * (register set-up, reset) travel over a MessagePort while the worker is PAUSED.
 */
import type { CpuidEntry, Fpu, MsrEntry, Regs, Sregs } from '../kvm/structs.js';
import type { SharedMmioWindow } from '../virtio/transport/mmio-worker.js';

/** Indices in a vCPU's control Int32Array. */
export const Slot = {
  /** One of `VcpuState`. */
  STATE: 0,
  /** 1 while the main thread asks the worker to pause at its next chance. */
  PAUSE_REQUEST: 1,
  /** errno of a failed KVM_RUN, with STATE = ERROR. */
  ERRNO: 2,
  /** Low and high 32 bits of the worker's pthread_t, for pthread_kill. */
  THREAD_LO: 3,
  THREAD_HI: 4,
} as const;

/** Int32 slots in a vCPU's control buffer. */
export const SLOT_COUNT = 8;

/** Values of Slot.STATE. */
export const VcpuState = {
  /** The worker owns the vCPU: in KVM_RUN or about to enter it. */
  RUNNING: 0,
  /** The worker waits; kvm_run holds an exit for the main thread to complete. */
  EXIT: 1,
  /** The worker waits for a command or for RUNNING. */
  PAUSED: 2,
  /** The main thread posted a command on the port. */
  COMMAND: 3,
  /** KVM_RUN failed with an errno other than EINTR; the worker has stopped. */
  ERROR: 4,
  /** The worker has left its loop (after a QUIT command). */
  EXITED: 5,
} as const;

/** What the worker is started with. */
export interface VcpuWorkerData {
  id: number;
  fd: number;
  runSize: number;
  control: SharedArrayBuffer;
  /** virtio-mmio windows whose hot registers the worker answers itself. */
  virtioWindows: SharedMmioWindow[];
}

/** Register state to load into a vCPU; absent parts are left as they are. */
export interface VcpuSetup {
  cpuid?: CpuidEntry[];
  msrs?: MsrEntry[];
  /** MSRs written one by one after `msrs`; one that KVM refuses is skipped. */
  optionalMsrs?: MsrEntry[];
  regs?: Regs;
  sregs?: Sregs;
  fpu?: Fpu;
  /** A whole struct kvm_lapic_state to load (before `lapicLint` applies). */
  lapic?: Uint8Array;
  /** Program LINT0 as ExtINT and LINT1 as NMI (the BSP). */
  lapicLint?: boolean;
  /** KVM_MP_STATE_* to set last. */
  mpState?: number;
}

/** A command for a paused worker. */
export type VcpuCommand = { type: 'setup'; setup: VcpuSetup } | { type: 'dump' } | { type: 'quit' };

/** The worker's answer to a command. */
export type VcpuReply =
  | { ok: true; regs?: Regs; sregs?: Sregs; lapic?: Uint8Array }
  | { ok: false; error: string };
