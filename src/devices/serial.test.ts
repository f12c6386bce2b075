import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IrqLine } from './bus.js';
import {
  IER_RDI,
  IER_THRI,
  IIR_FIFO_ENABLED,
  IIR_NO_INT,
  IIR_RDI,
  IIR_THRI,
  LCR_DLAB,
  LSR_DR,
  LSR_OE,
  LSR_TEMT,
  LSR_THRE,
  MCR_LOOP,
  RX_FIFO_SIZE,
  Serial,
  UartReg,
} from './serial.js';

function uart() {
  const irq = {
    gsi: 4,
    edges: 0,
    trigger() {
      this.edges++;
    },
  } satisfies IrqLine & { edges: number };
  const out: number[] = [];
  const s = new Serial(irq, (b) => out.push(b));
  const rd = (reg: number) => {
    const d = new Uint8Array(1);
    s.read(reg, d);
    return d[0]!;
  };
  const wr = (reg: number, v: number) => s.write(reg, Uint8Array.of(v));
  return { s, irq, out, rd, wr };
}

test('power-on registers read as a 16550A at rest', () => {
  const { rd } = uart();
  assert.equal(rd(UartReg.IER_DLM), 0);
  assert.equal(rd(UartReg.IIR_FCR), IIR_NO_INT);
  assert.equal(rd(UartReg.LCR), 0);
  assert.equal(rd(UartReg.LSR), LSR_THRE | LSR_TEMT);
  assert.equal(rd(UartReg.MSR), 0xb0);
});

test('THR bytes go to the output callback in order', () => {
  const { out, wr, s } = uart();
  for (const b of new TextEncoder().encode('ok\n')) wr(UartReg.RBR_THR_DLL, b);
  assert.deepEqual(out, [0x6f, 0x6b, 0x0a]);
  assert.equal(s.counters.txBytes, 3);
});

test('DLAB switches offsets 0 and 1 to the divisor latch', () => {
  const { out, rd, wr } = uart();
  wr(UartReg.LCR, LCR_DLAB | 0x03);
  wr(UartReg.RBR_THR_DLL, 0x01);
  wr(UartReg.IER_DLM, 0x02);
  assert.equal(rd(UartReg.RBR_THR_DLL), 0x01);
  assert.equal(rd(UartReg.IER_DLM), 0x02);
  assert.deepEqual(out, [], 'a divisor write is not a transmitted byte');
  wr(UartReg.LCR, 0x03);
  assert.equal(rd(UartReg.IER_DLM), 0, 'IER untouched by the DLM write');
  assert.equal(rd(UartReg.LCR), 0x03);
});

test('enabling THRE raises an edge and IIR reports it once', () => {
  const { irq, rd, wr } = uart();
  wr(UartReg.IER_DLM, IER_THRI);
  assert.equal(irq.edges, 1);
  assert.equal(rd(UartReg.IIR_FCR), IIR_THRI);
  assert.equal(rd(UartReg.IIR_FCR), IIR_NO_INT, 'reading IIR cleared the THRE interrupt');
  wr(UartReg.RBR_THR_DLL, 0x41);
  assert.equal(irq.edges, 2, 'each transmitted byte empties THR again');
  assert.equal(rd(UartReg.IIR_FCR), IIR_THRI);
});

test('no THRE edge while THRE is disabled', () => {
  const { irq, rd, wr } = uart();
  wr(UartReg.RBR_THR_DLL, 0x41);
  assert.equal(irq.edges, 0);
  assert.equal(rd(UartReg.IIR_FCR), IIR_NO_INT);
});

test('host input sets DR, raises RDA once, and reads back byte for byte', () => {
  const { s, irq, rd, wr } = uart();
  wr(UartReg.IER_DLM, IER_RDI);
  s.enqueue(Uint8Array.of(1, 2, 3));
  assert.equal(irq.edges, 1);
  assert.equal(rd(UartReg.IIR_FCR), IIR_RDI);
  assert.equal(rd(UartReg.LSR) & LSR_DR, LSR_DR);
  assert.deepEqual([rd(0), rd(0), rd(0)], [1, 2, 3]);
  assert.equal(rd(UartReg.LSR) & LSR_DR, 0);
  assert.equal(rd(UartReg.IIR_FCR), IIR_NO_INT);
  s.enqueue(Uint8Array.of(4));
  assert.equal(irq.edges, 2, 'data arriving into an empty FIFO is a new edge');
});

test('RDA has priority over THRE in IIR, and FCR shows FIFOs enabled', () => {
  const { s, rd, wr } = uart();
  wr(UartReg.IIR_FCR, 0x01);
  wr(UartReg.IER_DLM, IER_RDI | IER_THRI);
  s.enqueue(Uint8Array.of(9));
  assert.equal(rd(UartReg.IIR_FCR), IIR_RDI | IIR_FIFO_ENABLED);
  rd(UartReg.RBR_THR_DLL);
  assert.equal(rd(UartReg.IIR_FCR), IIR_THRI | IIR_FIFO_ENABLED);
});

test('input beyond the FIFO waits on the host side and is all delivered', () => {
  const { s, rd } = uart();
  const data = Uint8Array.from({ length: RX_FIFO_SIZE * 3 + 5 }, (_, i) => i & 0xff);
  s.enqueue(data);
  const got: number[] = [];
  while (rd(UartReg.LSR) & LSR_DR) got.push(rd(UartReg.RBR_THR_DLL));
  assert.deepEqual(got, [...data]);
  assert.equal(s.queuedInput, 0);
});

test('loopback: MSR mirrors MCR as Linux autoconfig expects, bytes come back', () => {
  const { out, rd, wr } = uart();
  wr(UartReg.MCR, MCR_LOOP | 0x0a);
  assert.equal(rd(UartReg.MSR) & 0xf0, 0x90);
  wr(UartReg.MCR, MCR_LOOP | 0x0f);
  assert.equal(rd(UartReg.MSR) & 0xf0, 0xf0);
  wr(UartReg.RBR_THR_DLL, 0x5a);
  assert.deepEqual(out, []);
  assert.equal(rd(UartReg.RBR_THR_DLL), 0x5a);
});

test('loopback overrun sets LSR.OE once', () => {
  const { rd, wr } = uart();
  wr(UartReg.MCR, MCR_LOOP);
  for (let i = 0; i <= RX_FIFO_SIZE; i++) wr(UartReg.RBR_THR_DLL, i);
  assert.equal(rd(UartReg.LSR) & LSR_OE, LSR_OE);
  assert.equal(rd(UartReg.LSR) & LSR_OE, 0);
});

test('SCR holds a byte; wide accesses are counted and ignored', () => {
  const { s, rd, wr } = uart();
  wr(UartReg.SCR, 0xa5);
  assert.equal(rd(UartReg.SCR), 0xa5);
  const wide = new Uint8Array(2);
  s.read(UartReg.SCR, wide);
  assert.deepEqual([...wide], [0xff, 0xff]);
  s.write(UartReg.RBR_THR_DLL, Uint8Array.of(1, 2));
  assert.equal(s.counters.badAccesses, 2);
  assert.equal(s.counters.txBytes, 0);
});

test('reset clears registers and stale host input', () => {
  const { s, rd, wr } = uart();
  wr(UartReg.IER_DLM, IER_THRI);
  wr(UartReg.LCR, 0x03);
  s.enqueue(new Uint8Array(RX_FIFO_SIZE + 10).fill(1));
  s.reset();
  assert.equal(s.queuedInput, 0);
  assert.equal(rd(UartReg.LSR) & LSR_DR, 0);
  s.enqueue(Uint8Array.of(7));
  assert.equal(rd(UartReg.IER_DLM), 0);
  assert.equal(rd(UartReg.LCR), 0);
  assert.equal(rd(UartReg.RBR_THR_DLL), 7);
});
