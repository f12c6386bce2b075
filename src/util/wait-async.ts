/**
 * Atomics.waitAsync (ES2024, in Node 20), typed here: the project compiles against ES2022. A
 * pending wait does not keep the process alive.
 */

/** What Atomics.waitAsync returns. */
export type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };

/** Waits, without blocking the thread, until `array[index]` is notified or no longer `value`. */
export const waitAsync = (
  Atomics as unknown as {
    waitAsync(array: Int32Array, index: number, value: number, timeoutMs?: number): WaitAsyncResult;
  }
).waitAsync;
