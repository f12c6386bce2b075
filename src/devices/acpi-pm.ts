/**
 * The ACPI hardware-reduced sleep and reset registers (ACPI 6.4, 4.8.3.7 and 4.8.3.6) that the
 * FADT points at: writing SLP_TYP 5 with SLP_EN to the sleep control register powers the VM
 * off, and writing the reset value to the reset register resets it.
 */
import type { BusDevice } from './bus.js';

/** Register offsets from the block's base port (0x600). */
export const AcpiPmReg = {
  SLEEP_CONTROL: 0,
  SLEEP_STATUS: 1,
  RESET: 4,
} as const;
/** Ports the block spans: 0x600 to 0x604 inclusive. */
export const ACPI_PM_PORT_COUNT = 5;

/** Sleep control: SLP_EN (bit 5) and SLP_TYP (bits 2-4). */
export const SLP_EN = 1 << 5;
const SLP_TYP_SHIFT = 2;
const SLP_TYP_MASK = 0x7;
/** SLP_TYP of S5, soft off, as the DSDT's \_S5_ package says. */
export const SLP_TYP_S5 = 5;
/** The value the reset register takes to reset (the FADT's RESET_VALUE). */
export const ACPI_RESET_VALUE = 1;
/** Sleep status WAK_STS (bit 7), write-one-to-clear. */
const WAK_STS = 0x80;

/** Callbacks of the power device. */
export interface AcpiPmActions {
  powerOff(): void;
  reset(): void;
}

/** Counters of the power device. */
export interface AcpiPmCounters {
  /** Sleep requests other than S5, which memvisor does not support and ignores. */
  unsupportedSleeps: number;
}

/** The ACPI sleep control, sleep status and reset registers. */
export class AcpiPm implements BusDevice {
  readonly counters: AcpiPmCounters = { unsupportedSleeps: 0 };
  readonly #actions: AcpiPmActions;
  #status = 0;

  constructor(actions: AcpiPmActions) {
    this.#actions = actions;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset === AcpiPmReg.SLEEP_STATUS) data[0] = this.#status;
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0] ?? 0;
    switch (offset) {
      case AcpiPmReg.SLEEP_CONTROL: {
        if (!(value & SLP_EN)) return;
        if (((value >> SLP_TYP_SHIFT) & SLP_TYP_MASK) === SLP_TYP_S5) this.#actions.powerOff();
        else this.counters.unsupportedSleeps++;
        return;
      }
      case AcpiPmReg.SLEEP_STATUS:
        this.#status &= ~(value & WAK_STS);
        return;
      case AcpiPmReg.RESET:
        if (value === ACPI_RESET_VALUE) this.#actions.reset();
        return;
      default:
        return;
    }
  }
}
