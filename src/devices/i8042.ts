/**
 * The smallest i8042 keyboard controller Linux needs: it reads an empty controller (no data,
 * ready for commands) and honours the pulse-reset command, which is one of the ways Linux
 * reboots (`reboot=k`, and the fallback after ACPI reset).
 */
import type { BusDevice } from './bus.js';

/** Port offsets from the data port (0x60): the command/status port is 0x64. */
export const I8042_DATA_OFFSET = 0;
export const I8042_COMMAND_OFFSET = 4;
/** Ports from 0x60 to 0x64 inclusive. */
export const I8042_PORT_COUNT = 5;
/** Command: pulse the CPU reset line. */
export const I8042_CMD_RESET = 0xfe;

/** An i8042 that only resets. */
export class I8042 implements BusDevice {
  readonly #onReset: () => void;

  constructor(onReset: () => void) {
    this.#onReset = onReset;
  }

  read(_offset: number, data: Uint8Array): void {
    // Status 0: output buffer empty, input buffer empty; the data port holds nothing either.
    data.fill(0);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset === I8042_COMMAND_OFFSET && data[0] === I8042_CMD_RESET) this.#onReset();
  }
}
