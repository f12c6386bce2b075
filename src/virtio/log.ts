/**
 * Rate-limited warnings for guest-triggerable conditions. A guest can provoke a warning on every
 * request, so each device keeps a small budget per interval and reports how many it suppressed.
 */

/** Where a warning line goes; the VMM may route it into its logger. */
export type LogSink = (line: string) => void;

/** Writes to standard error; the default when a device is given no sink. */
export const stderrSink: LogSink = (line) => {
  process.stderr.write(`${line}\n`);
};

/** Budget of a `RateLimitedLog`: at most `burst` lines per `intervalMs`. */
export interface RateLimit {
  burst: number;
  intervalMs: number;
}

const DEFAULT_LIMIT: RateLimit = { burst: 10, intervalMs: 5000 };

/** Prefixes every line with the device name, e.g. `virtio-mem[mem0]: `. */
export class RateLimitedLog {
  readonly #prefix: string;
  readonly #sink: LogSink;
  readonly #limit: RateLimit;
  readonly #now: () => number;
  #windowStart = Number.NEGATIVE_INFINITY;
  #inWindow = 0;
  #suppressed = 0;

  constructor(prefix: string, sink: LogSink = stderrSink, limit = DEFAULT_LIMIT, now = Date.now) {
    this.#prefix = prefix;
    this.#sink = sink;
    this.#limit = limit;
    this.#now = now;
  }

  /** Emits `message` unless this interval's budget is spent. */
  warn(message: string): void {
    const now = this.#now();
    if (now - this.#windowStart >= this.#limit.intervalMs) {
      if (this.#suppressed > 0) {
        this.#sink(`${this.#prefix}: ${this.#suppressed} similar warnings suppressed`);
      }
      this.#windowStart = now;
      this.#inWindow = 0;
      this.#suppressed = 0;
    }
    if (this.#inWindow < this.#limit.burst) {
      this.#inWindow++;
      this.#sink(`${this.#prefix}: ${message}`);
    } else {
      this.#suppressed++;
    }
  }
}

/** `0x`-prefixed hexadecimal, the form every address in a log line takes. */
export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
