import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AcpiPm, AcpiPmReg } from './acpi-pm.js';
import { I8042, I8042_COMMAND_OFFSET, I8042_DATA_OFFSET } from './i8042.js';

test('ACPI sleep control 0x34 (SLP_TYP 5 + SLP_EN) powers off; other values do not', () => {
  const calls: string[] = [];
  const pm = new AcpiPm({ powerOff: () => calls.push('off'), reset: () => calls.push('reset') });
  pm.write(AcpiPmReg.SLEEP_CONTROL, Uint8Array.of(0x14));
  assert.deepEqual(calls, [], 'SLP_TYP 5 without SLP_EN');
  pm.write(AcpiPmReg.SLEEP_CONTROL, Uint8Array.of(0x2c));
  assert.deepEqual(calls, [], 'SLP_TYP 3 (S3) is not supported');
  assert.equal(pm.counters.unsupportedSleeps, 1);
  pm.write(AcpiPmReg.SLEEP_CONTROL, Uint8Array.of(0x34));
  assert.deepEqual(calls, ['off']);
});

test('ACPI reset register resets on 1 only', () => {
  const calls: string[] = [];
  const pm = new AcpiPm({ powerOff: () => calls.push('off'), reset: () => calls.push('reset') });
  pm.write(AcpiPmReg.RESET, Uint8Array.of(2));
  pm.write(AcpiPmReg.RESET, Uint8Array.of(1));
  assert.deepEqual(calls, ['reset']);
  const d = Uint8Array.of(0xff);
  pm.read(AcpiPmReg.SLEEP_STATUS, d);
  assert.equal(d[0], 0);
});

test('i8042 reads an idle controller and resets on 0xfe to the command port', () => {
  let resets = 0;
  const kbd = new I8042(() => resets++);
  const d = Uint8Array.of(0xff);
  kbd.read(I8042_COMMAND_OFFSET, d);
  assert.equal(d[0], 0);
  kbd.write(I8042_DATA_OFFSET, Uint8Array.of(0xfe));
  kbd.write(I8042_COMMAND_OFFSET, Uint8Array.of(0xd1));
  assert.equal(resets, 0);
  kbd.write(I8042_COMMAND_OFFSET, Uint8Array.of(0xfe));
  assert.equal(resets, 1);
});
