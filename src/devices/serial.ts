/**
 * A 16550A-compatible 8250 UART, as Linux's 8250 driver probes and drives it: eight registers,
 * the divisor latch behind LCR.DLAB, a receive FIFO fed by the host, and a transmitter that
 * sends each byte to the host at once (so THR is always empty again right after a write).
 * Interrupts are edges on an `IrqLine`, raised each time a THRE or received-data condition
 * appears while enabled in IER.
 */
import type { BusDevice, IrqLine } from './bus.js';

/** Register offsets from the UART's base port (the `UART_*` names of Linux serial_reg.h). */
export const UartReg = {
  /** Receive buffer (read) / transmit holding (write); divisor latch low when DLAB. */
  RBR_THR_DLL: 0,
  /** Interrupt enable; divisor latch high when DLAB. */
  IER_DLM: 1,
  /** Interrupt identification (read) / FIFO control (write). */
  IIR_FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
} as const;

/** Number of I/O ports the UART occupies. */
export const UART_PORT_COUNT = 8;

// IER bits.
export const IER_RDI = 0x01;
export const IER_THRI = 0x02;
export const IER_RLSI = 0x04;
export const IER_MSI = 0x08;
const IER_MASK = 0x0f;

// IIR values.
export const IIR_NO_INT = 0x01;
export const IIR_THRI = 0x02;
export const IIR_RDI = 0x04;
/** IIR bits 6-7: FIFOs enabled, as a 16550A reports them. */
export const IIR_FIFO_ENABLED = 0xc0;

// FCR bits.
const FCR_ENABLE_FIFO = 0x01;
const FCR_CLEAR_RCVR = 0x02;

// LCR bits.
export const LCR_DLAB = 0x80;

// MCR bits.
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
export const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f;

// LSR bits.
export const LSR_DR = 0x01;
export const LSR_OE = 0x02;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;

// MSR bits.
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

/** Bytes the receive FIFO holds; host input beyond it waits in `pendingInput`. */
export const RX_FIFO_SIZE = 64;
/** Host input kept for the guest before the oldest is dropped (counted as overruns). */
export const MAX_PENDING_INPUT = 1 << 20;

/** Counters of a UART, for status and tests. */
export interface SerialCounters {
  txBytes: number;
  rxBytes: number;
  /** Host bytes dropped because the guest was not reading. */
  rxDropped: number;
  /** Accesses wider than one byte, which the UART ignores. */
  badAccesses: number;
}

/** An emulated 8250 UART. */
export class Serial implements BusDevice {
  readonly counters: SerialCounters = { txBytes: 0, rxBytes: 0, rxDropped: 0, badAccesses: 0 };
  readonly #irq: IrqLine;
  readonly #output: (byte: number) => void;
  #ier = 0;
  #lcr = 0;
  #mcr = 0;
  #scr = 0;
  #dll = 0x0c;
  #dlm = 0;
  #fifoEnabled = false;
  /** A THRE interrupt waits to be identified by an IIR read (or cleared by a THR write). */
  #threPending = false;
  #overrun = false;
  readonly #rx: number[] = [];
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

  /** `output` receives each byte the guest transmits (also in loopback, as real wires do not). */
  constructor(irq: IrqLine, output: (byte: number) => void) {
    this.#irq = irq;
    this.#output = output;
  }

  /**
   * Returns the UART to its power-on state. Host input not yet read is dropped: it was meant
   * for the guest that was running before the reset.
   */
  reset(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#ier = 0;
    this.#lcr = 0;
    this.#mcr = 0;
    this.#scr = 0;
    this.#dll = 0x0c;
    this.#dlm = 0;
    this.#fifoEnabled = false;
    this.#threPending = false;
    this.#overrun = false;
    this.#rx.length = 0;
  }

  /** Queues bytes from the host for the guest to read. */
  enqueue(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#pending.push(bytes.slice());
    this.#pendingBytes += bytes.length;
    while (this.#pendingBytes > MAX_PENDING_INPUT) {
      const dropped = this.#pending.shift()!;
      this.#pendingBytes -= dropped.length;
      this.counters.rxDropped += dropped.length;
    }
    this.#refill();
  }

  /** Bytes received from the host that the guest has not read yet. */
  get queuedInput(): number {
    return this.#rx.length + this.#pendingBytes;
  }

  read(offset: number, data: Uint8Array): void {
    if (data.length !== 1) {
      this.counters.badAccesses++;
      data.fill(0xff);
      return;
    }
    data[0] = this.#readReg(offset);
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length !== 1) {
      this.counters.badAccesses++;
      return;
    }
    this.#writeReg(offset, data[0]!);
  }

  #dlab(): boolean {
    return (this.#lcr & LCR_DLAB) !== 0;
  }

  #loopback(): boolean {
    return (this.#mcr & MCR_LOOP) !== 0;
  }

  #readReg(offset: number): number {
    switch (offset) {
      case UartReg.RBR_THR_DLL:
        return this.#dlab() ? this.#dll : this.#readRbr();
      case UartReg.IER_DLM:
        return this.#dlab() ? this.#dlm : this.#ier;
      case UartReg.IIR_FCR:
        return this.#readIir();
      case UartReg.LCR:
        return this.#lcr;
      case UartReg.MCR:
        return this.#mcr;
      case UartReg.LSR:
        return this.#readLsr();
      case UartReg.MSR:
        return this.#readMsr();
      case UartReg.SCR:
        return this.#scr;
      default:
        return 0xff;
    }
  }

  #writeReg(offset: number, value: number): void {
    switch (offset) {
      case UartReg.RBR_THR_DLL:
        if (this.#dlab()) this.#dll = value;
        else this.#transmit(value);
        return;
      case UartReg.IER_DLM:
        if (this.#dlab()) this.#dlm = value;
        else this.#writeIer(value);
        return;
      case UartReg.IIR_FCR:
        this.#fifoEnabled = (value & FCR_ENABLE_FIFO) !== 0;
        if (value & FCR_CLEAR_RCVR) {
          this.#rx.length = 0;
          this.#refill();
        }
        return;
      case UartReg.LCR:
        this.#lcr = value;
        return;
      case UartReg.MCR:
        this.#mcr = value & MCR_MASK;
        return;
      case UartReg.SCR:
        this.#scr = value;
        return;
      default:
        // LSR and MSR are read-only; writes to them are ignored as on hardware.
        return;
    }
  }

  #readRbr(): number {
    const byte = this.#rx.shift();
    this.#refill();
    return byte ?? 0;
  }

  #readIir(): number {
    const fifo = this.#fifoEnabled ? IIR_FIFO_ENABLED : 0;
    if (this.#ier & IER_RDI && this.#rx.length > 0) return IIR_RDI | fifo;
    if (this.#ier & IER_THRI && this.#threPending) {
      // Reading IIR while it reports THRE clears that interrupt (16550 data sheet, table 4).
      this.#threPending = false;
      return IIR_THRI | fifo;
    }
    return IIR_NO_INT | fifo;
  }

  #readLsr(): number {
    let lsr = LSR_THRE | LSR_TEMT;
    if (this.#rx.length > 0) lsr |= LSR_DR;
    if (this.#overrun) {
      lsr |= LSR_OE;
      this.#overrun = false;
    }
    return lsr;
  }

  #readMsr(): number {
    if (!this.#loopback()) return MSR_DCD | MSR_DSR | MSR_CTS;
    // In loopback the modem inputs are wired to the modem control outputs.
    let msr = 0;
    if (this.#mcr & MCR_RTS) msr |= MSR_CTS;
    if (this.#mcr & MCR_DTR) msr |= MSR_DSR;
    if (this.#mcr & MCR_OUT1) msr |= MSR_RI;
    if (this.#mcr & MCR_OUT2) msr |= MSR_DCD;
    return msr;
  }

  #writeIer(value: number): void {
    const was = this.#ier;
    this.#ier = value & IER_MASK;
    // Enabling THRE while the transmitter is empty raises the interrupt at once.
    if (!(was & IER_THRI) && this.#ier & IER_THRI) {
      this.#threPending = true;
      this.#irq.trigger();
    }
    if (!(was & IER_RDI) && this.#ier & IER_RDI && this.#rx.length > 0) this.#irq.trigger();
  }

  #transmit(byte: number): void {
    if (this.#loopback()) {
      this.#receive(byte);
    } else {
      this.counters.txBytes++;
      this.#output(byte);
    }
    if (this.#ier & IER_THRI) {
      this.#threPending = true;
      this.#irq.trigger();
    } else {
      this.#threPending = false;
    }
  }

  /** Moves one byte into the receive FIFO, raising RDA when the FIFO was empty. */
  #receive(byte: number): void {
    if (this.#rx.length >= RX_FIFO_SIZE) {
      this.#overrun = true;
      return;
    }
    this.#rx.push(byte);
    this.counters.rxBytes++;
    if (this.#rx.length === 1 && this.#ier & IER_RDI) this.#irq.trigger();
  }

  /** Tops up the receive FIFO from the host queue. */
  #refill(): void {
    if (this.#loopback()) return;
    while (this.#rx.length < RX_FIFO_SIZE && this.#pending.length > 0) {
      const head = this.#pending[0]!;
      const take = Math.min(head.length, RX_FIFO_SIZE - this.#rx.length);
      const wasEmpty = this.#rx.length === 0;
      for (let i = 0; i < take; i++) this.#rx.push(head[i]!);
      this.counters.rxBytes += take;
      this.#pendingBytes -= take;
      if (take === head.length) this.#pending.shift();
      else this.#pending[0] = head.subarray(take);
      if (wasEmpty && this.#ier & IER_RDI) this.#irq.trigger();
    }
  }
}
