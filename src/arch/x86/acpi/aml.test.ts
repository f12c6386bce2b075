import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemvisorError } from '../../../util/errors.js';
import * as aml from './aml.js';
import { assertRoundTrip } from './iasl-harness.js';
import { sdt } from './tables.js';

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));
const bytes = (b: Uint8Array) => [...b];
const amlError = (e: unknown) => e instanceof MemvisorError && e.code === 'aml_encoding';

describe('aml.pkgLength', () => {
  it('uses one byte up to a total of 63', () => {
    assert.deepEqual(bytes(aml.pkgLength(0)), [0x01]);
    assert.deepEqual(bytes(aml.pkgLength(62)), [0x3f]);
  });

  it('switches to two bytes at a total of 64', () => {
    // 63 content bytes: a 1-byte length would make 64, so 2 bytes and a total of 65 = 0x41.
    assert.deepEqual(bytes(aml.pkgLength(63)), [0x41, 0x04]);
    assert.deepEqual(bytes(aml.pkgLength(4093)), [0x4f, 0xff]);
  });

  it('switches to three bytes at a total of 4096, four at 2^20', () => {
    assert.deepEqual(bytes(aml.pkgLength(4094)), [0x81, 0x00, 0x01]);
    assert.deepEqual(bytes(aml.pkgLength(2 ** 20 - 4)), [0x8f, 0xff, 0xff]);
    assert.deepEqual(bytes(aml.pkgLength(2 ** 20 - 3)), [0xc1, 0x00, 0x00, 0x01]);
    assert.deepEqual(bytes(aml.pkgLength(aml.PKG_LENGTH_MAX - 4)), [0xcf, 0xff, 0xff, 0xff]);
  });

  it('refuses lengths past 28 bits', () => {
    assert.throws(() => aml.pkgLength(aml.PKG_LENGTH_MAX - 3), amlError);
  });
});

describe('aml names', () => {
  it('pads segments and encodes prefixes', () => {
    assert.deepEqual(bytes(aml.nameString('_HID')), ascii('_HID'));
    assert.deepEqual(bytes(aml.nameString('VR0')), ascii('VR0_'));
    assert.deepEqual(bytes(aml.nameString('\\_SB')), [0x5c, ...ascii('_SB_')]);
    assert.deepEqual(bytes(aml.nameString('\\_SB.VR00')), [0x5c, 0x2e, ...ascii('_SB_VR00')]);
    assert.deepEqual(bytes(aml.nameString('^^FOO')), [0x5e, 0x5e, ...ascii('FOO_')]);
    assert.deepEqual(bytes(aml.nameString('A.B.C')), [0x2f, 3, ...ascii('A___B___C___')]);
    assert.deepEqual(bytes(aml.nameString('\\')), [0x5c, 0x00]);
  });

  it('refuses invalid segments', () => {
    for (const bad of ['abc', 'TOOLONG', '1ABC', 'A-B', '_SB..X']) {
      assert.throws(() => aml.nameString(bad), amlError, bad);
    }
  });
});

describe('aml data', () => {
  it('encodes integers in the smallest form', () => {
    const cases: [number | bigint, number[]][] = [
      [0, [0x00]],
      [1, [0x01]],
      [2, [0x0a, 0x02]],
      [0xff, [0x0a, 0xff]],
      [0x100, [0x0b, 0x00, 0x01]],
      [0xffff, [0x0b, 0xff, 0xff]],
      [0x10000, [0x0c, 0x00, 0x00, 0x01, 0x00]],
      [0xd0001000, [0x0c, 0x00, 0x10, 0x00, 0xd0]],
      [0x100000000, [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]],
      [0x123456789abcdef0n, [0x0e, 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12]],
      [0xffffffffffffffffn, [0xff]],
    ];
    for (const [value, expected] of cases) {
      assert.deepEqual(bytes(aml.integer(value)), expected, `0x${value.toString(16)}`);
    }
    assert.throws(() => aml.integer(-1), amlError);
    assert.throws(() => aml.integer(1n << 64n), amlError);
  });

  it('encodes strings NUL-terminated and refuses non-ASCII', () => {
    assert.deepEqual(bytes(aml.string('LNRO0005')), [0x0d, ...ascii('LNRO0005'), 0]);
    assert.deepEqual(bytes(aml.string('')), [0x0d, 0]);
    assert.throws(() => aml.string('caf\u00e9'), amlError);
    assert.throws(() => aml.string('a\0b'), amlError);
  });

  it('compresses EISA ids', () => {
    assert.deepEqual(bytes(aml.eisaId('PNP0501')), [0x0c, 0x41, 0xd0, 0x05, 0x01]);
    assert.deepEqual(bytes(aml.eisaId('PNP0A03')), [0x0c, 0x41, 0xd0, 0x0a, 0x03]);
    assert.throws(() => aml.eisaId('pnp0501'), amlError);
  });

  it('encodes buffers and packages', () => {
    assert.deepEqual(bytes(aml.buffer(Uint8Array.of(1, 2, 3))), [0x11, 0x06, 0x0a, 0x03, 1, 2, 3]);
    assert.deepEqual(
      bytes(aml.pkg([aml.integer(5), aml.integer(0)])),
      [0x12, 0x05, 0x02, 0x0a, 0x05, 0x00],
    );
    assert.throws(() => aml.pkg(new Array(256).fill(aml.integer(0))), amlError);
  });
});

describe('aml namespace terms', () => {
  it('encodes Name, Scope, Device, Method and Return', () => {
    assert.deepEqual(bytes(aml.name('_UID', aml.integer(0))), [0x08, ...ascii('_UID'), 0x00]);
    assert.deepEqual(bytes(aml.scope('\\_SB', [])), [0x10, 0x06, 0x5c, ...ascii('_SB_')]);
    assert.deepEqual(bytes(aml.device('VR00', [aml.name('_UID', aml.integer(1))])), [
      0x5b,
      0x82,
      0x0b,
      ...ascii('VR00'),
      0x08,
      ...ascii('_UID'),
      0x01,
    ]);
    const sta = aml.method('_STA', 0, false, [aml.returnTerm(aml.integer(0x0f))]);
    assert.deepEqual(bytes(sta), [0x14, 0x09, ...ascii('_STA'), 0x00, 0xa4, 0x0a, 0x0f]);
    assert.equal(aml.method('FOO', 2, true, [])[6], 0x0a);
    assert.throws(() => aml.method('BAD', 8, false, []), amlError);
  });
});

describe('aml resource descriptors', () => {
  it('encodes Memory32Fixed', () => {
    assert.deepEqual(
      bytes(aml.memory32Fixed(0xd0000000, 0x1000)),
      [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00],
    );
    assert.equal(aml.memory32Fixed(0, 1, false)[3], 0);
  });

  it('encodes IO', () => {
    assert.deepEqual(
      bytes(aml.io(0x3f8, 0x3f8, 1, 8)),
      [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08],
    );
    assert.throws(() => aml.io(0x10000, 0, 1, 1), amlError);
  });

  it('encodes Extended Interrupt flags and lists', () => {
    const edge = { consumer: true, edge: true, activeLow: false, shared: false };
    assert.deepEqual(
      bytes(aml.extendedInterrupt(edge, [5])),
      [0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00],
    );
    const level = { consumer: true, edge: false, activeLow: true, shared: true, wake: true };
    assert.deepEqual(
      bytes(aml.extendedInterrupt(level, [9, 0x123])),
      [0x89, 0x0a, 0x00, 0x1d, 0x02, 0x09, 0x00, 0x00, 0x00, 0x23, 0x01, 0x00, 0x00],
    );
    assert.throws(() => aml.extendedInterrupt(edge, []), amlError);
  });

  it('encodes QWordMemory', () => {
    const d = aml.qwordMemory(0x1_4000_0000n, 0x8000_0000n);
    const dv = new DataView(d.buffer);
    assert.equal(d.length, 46);
    assert.deepEqual(bytes(d.subarray(0, 6)), [0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03]);
    assert.equal(dv.getBigUint64(6, true), 0n);
    assert.equal(dv.getBigUint64(14, true), 0x1_4000_0000n);
    assert.equal(dv.getBigUint64(22, true), 0x1_bfff_ffffn);
    assert.equal(dv.getBigUint64(30, true), 0n);
    assert.equal(dv.getBigUint64(38, true), 0x8000_0000n);
  });

  it('ends a template with an End Tag whose checksum zeroes the sum', () => {
    const t = aml.resourceTemplate([aml.memory32Fixed(0xd0000000, 0x1000)]);
    // Buffer op, PkgLength, BufferSize (byte 14), 12 descriptor bytes, End Tag.
    assert.deepEqual(bytes(t.subarray(0, 4)), [0x11, 0x11, 0x0a, 0x0e]);
    const template = t.subarray(4);
    assert.equal(template.length, 14);
    assert.equal(template[12], 0x79);
    assert.equal(template.reduce((s, b) => s + b, 0) % 256, 0);
  });
});

describe('aml through iasl', () => {
  /** A DSDT holding one of each construct, and buffers at the PkgLength boundaries. */
  function everything(): Uint8Array {
    const filled = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 1) & 0xff);
    return sdt(
      'DSDT',
      2,
      aml.concat([
        aml.scope('\\_SB', [
          aml.device('DEV0', [
            aml.name('_HID', aml.eisaId('PNP0501')),
            aml.name('_UID', aml.integer(0x1234)),
            aml.name('STR0', aml.string('memvisor')),
            aml.method('_STA', 0, false, [aml.returnTerm(aml.integer(0x0f))]),
            aml.method('MTH2', 2, true, [aml.returnTerm(aml.integer(0x123456789n))]),
            aml.name(
              '_CRS',
              aml.resourceTemplate([
                aml.io(0x2f8, 0x2f8, 1, 8),
                aml.memory32Fixed(0xfec00000, 0x1000),
                aml.extendedInterrupt(
                  { consumer: true, edge: false, activeLow: true, shared: true },
                  [17, 18],
                ),
                aml.qwordMemory(0x1_4000_0000n, 0x8000_0000n),
              ]),
            ),
          ]),
        ]),
        // Buffers whose PkgLength totals are 63, 64 (one/two bytes) and 4095, 4096 (two/three).
        aml.name('\\BF63', aml.buffer(filled(60))),
        aml.name('\\BF64', aml.buffer(filled(61))),
        aml.name('\\BF4K', aml.buffer(filled(4090))),
        aml.name('\\BF4L', aml.buffer(filled(4091))),
        aml.name(
          '\\PKG0',
          aml.pkg([aml.integer(0), aml.integer(1), aml.integer(0xffffffffffffffffn)]),
        ),
      ]),
    );
  }

  it('round-trips every construct through iasl -d and back', () => {
    const dsl = assertRoundTrip(everything());
    assert.match(dsl, /Device \(DEV0\)/);
    assert.match(dsl, /Name \(_HID, EisaId \("PNP0501"\)/);
    assert.match(dsl, /Name \(_UID, 0x1234\)/);
    assert.match(dsl, /Name \(STR0, "memvisor"\)/);
    assert.match(dsl, /Method \(_STA, 0, NotSerialized\)[^\n]*\s*\{\s*Return \(0x0F\)\s*\}/);
    assert.match(dsl, /Method \(MTH2, 2, Serialized\)\s*\{\s*Return \(0x0000000123456789\)/);
    assert.match(dsl, /IO \(Decode16,\s*0x02F8,[^\n]*\n\s*0x02F8,[^\n]*\n\s*0x01,[^\n]*\n\s*0x08,/);
    assert.match(dsl, /Memory32Fixed \(ReadWrite,\s*0xFEC00000,[^\n]*\n\s*0x00001000,/);
    const irq = /Interrupt \(ResourceConsumer, Level, ActiveLow, Shared, ,, \)\s*\{([^}]*)\}/;
    assert.match(irq.exec(dsl)?.[1] ?? '', /^\s*0x00000011,\s*0x00000012,?\s*$/);
    assert.match(
      dsl,
      /QWordMemory \(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,/,
    );
    assert.match(dsl, /0x0000000140000000, \/\/ Range Minimum/);
    assert.match(dsl, /0x00000001BFFFFFFF, \/\/ Range Maximum/);
    assert.match(dsl, /0x0000000080000000, \/\/ Length/);
    assert.match(dsl, /Name \(\\BF63, Buffer \(0x3C\)/);
    assert.match(dsl, /Name \(\\BF64, Buffer \(0x3D\)/);
    assert.match(dsl, /Name \(\\BF4K, Buffer \(0x0FFA\)/);
    assert.match(dsl, /Name \(\\BF4L, Buffer \(0x0FFB\)/);
    assert.match(dsl, /Name \(\\PKG0, Package \(0x03\)\s*\{\s*Zero,\s*One,\s*Ones\s*\}/);
  });
});
