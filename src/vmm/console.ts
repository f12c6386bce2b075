/**
 * The guest console's host side: a sink that batches COM1 bytes (one exit per byte, one write
 * per event-loop turn), and a detector for Linux's panic banner in the byte stream.
 */

/** Most bytes buffered before a synchronous flush. */
const MAX_BUFFERED = 64 * 1024;

/** Batches console bytes into few writes to `out`. */
export class ConsoleSink {
  readonly #out: (bytes: Uint8Array) => void;
  #buf = new Uint8Array(4096);
  #len = 0;
  #scheduled = false;

  constructor(out: (bytes: Uint8Array) => void) {
    this.#out = out;
  }

  push(byte: number): void {
    if (this.#len === this.#buf.length) {
      if (this.#len >= MAX_BUFFERED) this.flush();
      else {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      }
    }
    this.#buf[this.#len++] = byte;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes out whatever is buffered. */
  flush(): void {
    this.#scheduled = false;
    if (this.#len === 0) return;
    this.#out(this.#buf.slice(0, this.#len));
    this.#len = 0;
  }
}

/** The line Linux's panic() prints first. */
export const PANIC_BANNER = 'Kernel panic - not syncing';

/** Watches a byte stream for `PANIC_BANNER` and calls `onPanic` once per `clear`. */
export class PanicDetector {
  readonly #banner: Uint8Array;
  readonly #onPanic: () => void;
  /** Bytes of the banner matched so far; the banner has no repeated prefix, so no KMP table. */
  #matched = 0;
  #fired = false;

  constructor(onPanic: () => void, banner = PANIC_BANNER) {
    this.#banner = new TextEncoder().encode(banner);
    this.#onPanic = onPanic;
  }

  push(byte: number): void {
    if (this.#fired) return;
    if (byte === this.#banner[this.#matched]) {
      this.#matched++;
    } else {
      this.#matched = byte === this.#banner[0] ? 1 : 0;
    }
    if (this.#matched === this.#banner.length) {
      this.#fired = true;
      this.#onPanic();
    }
  }

  /** Re-arms the detector (after a reset). */
  clear(): void {
    this.#matched = 0;
    this.#fired = false;
  }
}
