/**
 * Host side of the guest agent: runs shell commands in the guest over the second UART and
 * returns their exit code, stdout and stderr byte for byte. The VMM feeds `receive` with what
 * the guest writes to COM2 and gives the constructor a function that queues bytes into the
 * guest's COM2 receiver. Requests go one at a time, in call order, because the agent is a single
 * shell loop. Bad lines from the guest are counted and warned about (rate-limited); they never
 * throw out of `receive`.
 */
import { MemvisorError } from '../util/errors.js';
import type { ExecResult } from '../vmm/controller.js';
import { MAX_LINE_BYTES, decodeGuestLine, encodeRequest } from './agent-protocol.js';

/** Default time an `exec` may take, from the moment its request is sent. */
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
const WARN_INTERVAL_MS = 1000;

/** Options of an `AgentClient`. */
export interface AgentClientOptions {
  /** Where rate-limited warnings go; `console.warn` when absent. */
  warn?: (message: string) => void;
  /** Name used in warnings; `agent` when absent. */
  name?: string;
}

/** Counters of what went wrong on the channel, for status and tests. */
export interface AgentCounters {
  /** Tagged lines that failed to decode, and over-long lines. */
  invalidFrames: number;
  /** Results whose id matched no waiting request (for example after a timeout). */
  staleResults: number;
  /** Requests the agent refused as malformed. */
  refusals: number;
}

interface Pending {
  id: number;
  command: string;
  timeoutMs: number;
  resolve: (result: ExecResult) => void;
  reject: (error: Error) => void;
  timer?: NodeJS.Timeout;
}

/** Client for the guest agent; see the module comment. */
export class AgentClient {
  readonly counters: AgentCounters = { invalidFrames: 0, staleResults: 0, refusals: 0 };
  #send: (bytes: Uint8Array) => void;
  #warnSink: (message: string) => void;
  #name: string;
  #lastWarn = Number.NEGATIVE_INFINITY;
  #suppressed = 0;
  // The VMM hands bytes over one at a time, so the line grows in place instead of in pieces.
  #line = Buffer.alloc(256);
  #lineBytes = 0;
  #overlong = false;
  #isReady = false;
  #readyWaiters: (() => void)[] = [];
  #readyRejects: ((error: Error) => void)[] = [];
  #queue: Pending[] = [];
  #current: Pending | undefined;
  #nextId = 1;

  constructor(send: (bytes: Uint8Array) => void, options: AgentClientOptions = {}) {
    this.#send = send;
    this.#warnSink = options.warn ?? ((message) => console.warn(message));
    this.#name = options.name ?? 'agent';
  }

  /** True once the agent has announced itself. */
  get isReady(): boolean {
    return this.#isReady;
  }

  /** Takes bytes the guest wrote to its agent port. Never throws. */
  receive(bytes: Uint8Array): void {
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== 0x0a) continue;
      this.#append(bytes.subarray(start, i));
      this.#endLine();
      start = i + 1;
    }
    this.#append(bytes.subarray(start));
  }

  /** Resolves when the agent has said it is ready; rejects after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void> {
    if (this.#isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const forget = () => {
        clearTimeout(timer);
        this.#readyWaiters = this.#readyWaiters.filter((w) => w !== waiter);
        this.#readyRejects = this.#readyRejects.filter((r) => r !== fail);
      };
      const waiter = () => {
        forget();
        resolve();
      };
      const fail = (error: Error) => {
        forget();
        reject(error);
      };
      const timer = setTimeout(() => {
        fail(new MemvisorError('agent_timeout', `${this.#name}: not ready in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#readyWaiters.push(waiter);
      this.#readyRejects.push(fail);
    });
  }

  /** Runs `command` with `sh -c` in the guest. Rejects with code `agent_timeout` on timeout. */
  exec(command: string, timeoutMs = DEFAULT_EXEC_TIMEOUT_MS): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, command, timeoutMs, resolve, reject });
      this.#pump();
    });
  }

  /**
   * Forgets the agent after a guest reset: it is not ready until it says hello again, and every
   * waiting `exec` and `ready` is rejected with code `agent_reset`.
   */
  reset(): void {
    const error = () => new MemvisorError('agent_reset', `${this.#name}: guest was reset`);
    this.#isReady = false;
    this.#lineBytes = 0;
    this.#overlong = false;
    for (const reject of this.#readyRejects.splice(0)) reject(error());
    this.#readyWaiters = [];
    for (const pending of this.#queue.splice(0)) pending.reject(error());
    this.#finish(error());
  }

  #append(chunk: Uint8Array): void {
    if (chunk.length === 0 || this.#overlong) return;
    const needed = this.#lineBytes + chunk.length;
    if (needed > MAX_LINE_BYTES) {
      this.#overlong = true;
      this.#lineBytes = 0;
      return;
    }
    if (needed > this.#line.length) {
      const grown = Buffer.alloc(Math.min(MAX_LINE_BYTES, Math.max(needed, this.#line.length * 2)));
      this.#line.copy(grown, 0, 0, this.#lineBytes);
      this.#line = grown;
    }
    this.#line.set(chunk, this.#lineBytes);
    this.#lineBytes = needed;
  }

  #endLine(): void {
    const overlong = this.#overlong;
    const text = this.#line.toString('latin1', 0, this.#lineBytes).replace(/\r$/, '');
    this.#lineBytes = 0;
    this.#overlong = false;
    if (this.#line.length > 4096) this.#line = Buffer.alloc(256);
    if (overlong) {
      this.counters.invalidFrames++;
      this.#warn(`line longer than ${MAX_LINE_BYTES} bytes dropped`);
      return;
    }
    const frame = decodeGuestLine(text);
    if (frame === undefined) return;
    switch (frame.kind) {
      case 'hello':
        this.#isReady = true;
        for (const waiter of this.#readyWaiters.splice(0)) waiter();
        return;
      case 'invalid':
        this.counters.invalidFrames++;
        this.#warn(`invalid frame dropped: ${frame.reason}`);
        return;
      case 'refusal':
        this.counters.refusals++;
        this.#warn(`request ${frame.id} refused: ${frame.reason}`);
        if (this.#current?.id === frame.id) {
          this.#finish(new MemvisorError('agent_refused', `${this.#name}: ${frame.reason}`));
        }
        return;
      case 'result':
        if (this.#current?.id !== frame.id) {
          this.counters.staleResults++;
          return;
        }
        this.#finish(undefined, { code: frame.code, stdout: frame.stdout, stderr: frame.stderr });
        return;
    }
  }

  #pump(): void {
    if (this.#current !== undefined) return;
    const next = this.#queue.shift();
    if (next === undefined) return;
    this.#current = next;
    next.timer = setTimeout(() => {
      this.#finish(
        new MemvisorError('agent_timeout', `${this.#name}: no answer in ${next.timeoutMs} ms`),
      );
    }, next.timeoutMs);
    this.#send(encodeRequest(next.id, next.command));
  }

  #finish(error: Error | undefined, result?: ExecResult): void {
    const done = this.#current;
    if (done === undefined) return;
    clearTimeout(done.timer);
    this.#current = undefined;
    if (error !== undefined) done.reject(error);
    else if (result !== undefined) done.resolve(result);
    this.#pump();
  }

  #warn(message: string): void {
    const now = Date.now();
    if (now - this.#lastWarn < WARN_INTERVAL_MS) {
      this.#suppressed++;
      return;
    }
    const more = this.#suppressed > 0 ? ` (${this.#suppressed} more suppressed)` : '';
    this.#lastWarn = now;
    this.#suppressed = 0;
    this.#warnSink(`${this.#name}: ${message}${more}`);
  }
}
