/**
 * A small QMP client (QEMU Machine Protocol: one JSON object per line). The harness listens on a
 * Unix socket and QEMU connects to it as a client (`-chardev socket,server=off`), so the
 * connection exists before the guest runs and no event is missed. Commands go one at a time;
 * events are kept in order and can be awaited.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';

/** An asynchronous event QEMU sent. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** `performance.now()` when it arrived. */
  at: number;
}

/** A QMP command failure: QEMU's error class and description. */
export class QmpError extends Error {
  constructor(
    readonly errorClass: string,
    readonly desc: string,
    readonly command: string,
  ) {
    super(`qmp ${command}: ${errorClass}: ${desc}`);
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** Events kept for `waitEvent`; a long run sends few, this only bounds a misbehaving QEMU. */
const MAX_KEPT_EVENTS = 10_000;

/** QMP over one connected socket. Call `handshake()` first. */
export class QmpClient {
  readonly events = new EventEmitter();
  #socket: Socket;
  #buffer = '';
  #pending: Pending[] = [];
  #greeting: Promise<void>;
  #greeted!: () => void;
  #kept: QmpEvent[] = [];
  #closed = false;

  constructor(socket: Socket) {
    this.#socket = socket;
    this.#greeting = new Promise((resolve) => {
      this.#greeted = resolve;
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#receive(chunk));
    socket.on('close', () => {
      this.#closed = true;
      for (const p of this.#pending.splice(0)) p.reject(new Error(`qmp ${p.command}: closed`));
    });
    socket.on('error', () => socket.destroy());
  }

  /** Waits for QEMU's greeting and leaves capabilities negotiation mode. */
  async handshake(): Promise<void> {
    await this.#greeting;
    await this.execute('qmp_capabilities');
  }

  /** Runs `command` with `args` and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error(`qmp ${command}: closed`));
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ command, resolve: resolve as (v: unknown) => void, reject });
      const message =
        args === undefined ? { execute: command } : { execute: command, arguments: args };
      this.#socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /**
   * Resolves with the first event named `name` that arrived after `since` (a `performance.now()`
   * value) and satisfies `match`, or `undefined` after `timeoutMs`.
   */
  waitEvent(
    name: string,
    since: number,
    timeoutMs: number,
    match: (e: QmpEvent) => boolean = () => true,
  ): Promise<QmpEvent | undefined> {
    const seen = this.#kept.find((e) => e.event === name && e.at >= since && match(e));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !match(e)) return;
        clearTimeout(timer);
        this.events.off('event', onEvent);
        resolve(e);
      };
      const timer = setTimeout(() => {
        this.events.off('event', onEvent);
        resolve(undefined);
      }, timeoutMs);
      this.events.on('event', onEvent);
    });
  }

  /** Events received so far, oldest first. */
  get received(): readonly QmpEvent[] {
    return this.#kept;
  }

  /** Closes the connection. */
  close(): void {
    this.#socket.destroy();
  }

  #receive(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const nl = this.#buffer.indexOf('\n');
      if (nl < 0) return;
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line !== '') this.#message(line);
    }
  }

  #message(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ('QMP' in msg) {
      this.#greeted();
      return;
    }
    if (typeof msg.event === 'string') {
      const event: QmpEvent = {
        event: msg.event,
        data: (msg.data as Record<string, unknown> | undefined) ?? {},
        at: performance.now(),
      };
      if (this.#kept.length >= MAX_KEPT_EVENTS) this.#kept.shift();
      this.#kept.push(event);
      this.events.emit('event', event);
      return;
    }
    const pending = this.#pending.shift();
    if (pending === undefined) return;
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      pending.reject(new QmpError(err.class ?? 'Error', err.desc ?? '', pending.command));
    } else {
      pending.resolve(msg.return);
    }
  }
}
