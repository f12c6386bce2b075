/**
 * The main thread's handle on one vCPU worker (see vcpu-protocol.ts): starts the worker,
 * sends it commands while it is paused, answers its exits through `onExit`, and pauses it from
 * wherever it is by setting kvm_run.immediate_exit and sending SIGUSR2 to its thread.
 */
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { mapRun } from '../kvm/kvm.js';
import type { KvmRun } from '../kvm/run.js';
import { SIGUSR2, pthreadKill } from '../sys/libc.js';
import { VCPU_WORKER_URL } from '../util/entry-points.js';
import { MemvisorError } from '../util/errors.js';
import { waitAsync } from '../util/wait-async.js';
import type { SharedMmioWindow } from '../virtio/transport/mmio-worker.js';
import {
  SLOT_COUNT,
  Slot,
  type VcpuCommand,
  type VcpuReply,
  type VcpuSetup,
  VcpuState,
  type VcpuWorkerData,
} from './vcpu-protocol.js';

/** What the exit handler decides: re-enter the guest, or keep the vCPU stopped in its exit. */
export type ExitVerdict = 'resume' | 'hold';

/** Handles one exit on the main thread; the access is complete when it returns. */
export type ExitHandler = (vcpu: VcpuThread, run: KvmRun) => ExitVerdict;

/**
 * Called when KVM_RUN fails with `errno` (the vCPU then waits until paused), or when the worker
 * itself dies (errno is 0 and `message` says why).
 */
export type RunErrorHandler = (vcpu: VcpuThread, errno: number, message: string) => void;

/** How often a pause kicks a vCPU that is still running. */
const REKICK_MS = 200;

// The signal only has to interrupt KVM_RUN; a handler must exist so it does not kill the process.
let signalInstalled = false;
function installKickSignal(): void {
  if (signalInstalled) return;
  signalInstalled = true;
  process.on('SIGUSR2', () => {});
}

/** One vCPU run in its own worker thread. */
export class VcpuThread {
  readonly id: number;
  readonly fd: number;
  /** The main thread's mapping of the vCPU's kvm_run page. */
  readonly run: KvmRun;
  /** Exits answered on the main thread. */
  exits = 0;
  readonly #control: Int32Array;
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #onExit: ExitHandler;
  readonly #onError: RunErrorHandler;
  #held = false;
  #replyWaiters: ((r: VcpuReply) => void)[] = [];

  constructor(
    id: number,
    fd: number,
    runSize: number,
    onExit: ExitHandler,
    onError: RunErrorHandler,
    virtioWindows: SharedMmioWindow[] = [],
  ) {
    installKickSignal();
    this.id = id;
    this.fd = fd;
    this.run = mapRun(fd, runSize);
    this.#onExit = onExit;
    this.#onError = onError;
    const control = new SharedArrayBuffer(SLOT_COUNT * 4);
    this.#control = new Int32Array(control);
    Atomics.store(this.#control, Slot.STATE, -1);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#port.on('message', (reply: VcpuReply) => this.#replyWaiters.shift()?.(reply));
    const workerData: VcpuWorkerData & { port: MessagePort } = {
      id,
      fd,
      runSize,
      control,
      virtioWindows,
      port: port2,
    };
    this.#worker = new Worker(VCPU_WORKER_URL, {
      workerData,
      transferList: [port2],
    });
    this.#worker.on('error', (err) => onError(this, 0, `worker failed: ${err.message}`));
  }

  /** Resolves once the worker is up and paused, ready for `setup`. */
  async ready(): Promise<void> {
    await this.#waitFor((s) => s === VcpuState.PAUSED);
  }

  /** Loads register state; only while paused. */
  async setup(setup: VcpuSetup): Promise<void> {
    const reply = await this.#command({ type: 'setup', setup });
    if (!reply.ok) throw new MemvisorError('vcpu_setup', `vcpu ${this.id}: ${reply.error}`);
  }

  /** Reads the registers (for diagnostics); only while paused. */
  async dump(): Promise<VcpuReply> {
    return this.#command({ type: 'dump' });
  }

  /** Lets a paused vCPU run. */
  resume(): void {
    if (this.#state() !== VcpuState.PAUSED) {
      throw new MemvisorError('vcpu_state', `vcpu ${this.id}: resume while not paused`);
    }
    Atomics.store(this.#control, Slot.PAUSE_REQUEST, 0);
    this.#held = false;
    this.#setState(VcpuState.RUNNING);
    this.#watch();
  }

  /** Stops the vCPU wherever it is (in KVM_RUN, in an exit, held) and resolves once paused. */
  async pause(): Promise<void> {
    const state = this.#state();
    if (state === VcpuState.PAUSED) return;
    Atomics.store(this.#control, Slot.PAUSE_REQUEST, 1);
    this.run.immediateExit = true;
    const done = this.#waitFor((s) => s === VcpuState.PAUSED);
    if (state === VcpuState.ERROR) {
      this.#setState(VcpuState.PAUSED);
    } else if (state === VcpuState.EXIT) {
      // An exit being answered is released by #onStateChange; a held one is released here.
      // Either way the loop sees the request before it re-enters KVM_RUN.
      if (this.#held) this.#release();
    } else {
      pthreadKill(this.#thread(), SIGUSR2);
    }
    // A kick is lost where the host drops the inter-processor interrupt that carries it (the
    // nested box's CPUs have been seen deaf to them): the vCPU then runs on until something else
    // stops it. Kicking again is harmless; a stopped vCPU is not kicked.
    const rekick = setInterval(() => {
      if (this.#state() === VcpuState.RUNNING) pthreadKill(this.#thread(), SIGUSR2);
    }, REKICK_MS);
    try {
      await done;
    } finally {
      clearInterval(rekick);
    }
  }

  /** Ends the worker; the vCPU must be paused. */
  async quit(): Promise<void> {
    await this.pause();
    await this.#command({ type: 'quit' });
    await this.#worker.terminate();
  }

  /** Lets a held vCPU continue into its loop, where it finds the pause request. */
  #release(): void {
    this.#held = false;
    this.#setState(VcpuState.RUNNING);
  }

  #state(): number {
    return Atomics.load(this.#control, Slot.STATE);
  }

  #setState(state: number): void {
    Atomics.store(this.#control, Slot.STATE, state);
    Atomics.notify(this.#control, Slot.STATE);
  }

  #thread(): bigint {
    const lo = BigInt(Atomics.load(this.#control, Slot.THREAD_LO) >>> 0);
    const hi = BigInt(Atomics.load(this.#control, Slot.THREAD_HI) >>> 0);
    return (hi << 32n) | lo;
  }

  async #command(cmd: VcpuCommand): Promise<VcpuReply> {
    if (this.#state() !== VcpuState.PAUSED) {
      throw new MemvisorError('vcpu_state', `vcpu ${this.id}: ${cmd.type} while not paused`);
    }
    const reply = new Promise<VcpuReply>((resolve) => this.#replyWaiters.push(resolve));
    this.#port.postMessage(cmd);
    this.#setState(VcpuState.COMMAND);
    return reply;
  }

  /** Polls STATE asynchronously until `done` holds; used outside the hot exit path. */
  async #waitFor(done: (state: number) => boolean): Promise<void> {
    for (;;) {
      const state = this.#state();
      if (done(state)) return;
      const r = waitAsync(this.#control, Slot.STATE, state, 100);
      if (r.async) await r.value;
    }
  }

  /** Arms the wait for the worker's next exit; the hot path. */
  #watch(): void {
    const r = waitAsync(this.#control, Slot.STATE, VcpuState.RUNNING);
    if (r.async) r.value.then(() => this.#onStateChange());
    else queueMicrotask(() => this.#onStateChange());
  }

  #onStateChange(): void {
    switch (this.#state()) {
      case VcpuState.RUNNING:
        this.#watch();
        return;
      case VcpuState.EXIT: {
        this.exits++;
        const verdict = this.#onExit(this, this.run);
        if (verdict === 'hold') {
          if (Atomics.load(this.#control, Slot.PAUSE_REQUEST) !== 0) this.#release();
          else this.#held = true;
          return;
        }
        this.#setState(VcpuState.RUNNING);
        this.#watch();
        return;
      }
      case VcpuState.ERROR:
        this.#onError(this, Atomics.load(this.#control, Slot.ERRNO), 'KVM_RUN failed');
        return;
      default:
        // PAUSED (or EXITED): the pause path watches from here on.
        return;
    }
  }
}
