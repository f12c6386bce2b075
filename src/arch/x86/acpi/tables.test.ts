import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferBacking } from '../../../memory/backing.js';
import { GuestMemory } from '../../../memory/guest-memory.js';
import { MemvisorError } from '../../../util/errors.js';
import { acpiexec, assertRoundTrip, compile, disassemble } from './iasl-harness.js';
import {
  type AcpiConfig,
  type NumaConfig,
  buildDsdt,
  buildFadt,
  buildMadt,
  buildRsdp,
  buildSlit,
  buildSrat,
  buildXsdt,
  defaultDistances,
  writeAcpiTables,
} from './tables.js';

const GiB = 2 ** 30;

/** Field lines of a disassembled data table: "[off dec len] Name : Value". */
function fields(dsl: string): { offset: number; name: string; value: string }[] {
  const out: { offset: number; name: string; value: string }[] = [];
  for (const m of dsl.matchAll(/^\[([0-9A-F]+)h \d+ +\d+\] +(.+?) : (.*)$/gm)) {
    out.push({ offset: Number.parseInt(m[1]!, 16), name: m[2]!.trim(), value: m[3]!.trim() });
  }
  return out;
}

function field(dsl: string, name: string): string {
  const found = fields(dsl).filter((f) => f.name === name);
  assert.equal(found.length, 1, `one "${name}" field`);
  return found[0]!.value;
}

function values(dsl: string, name: string): string[] {
  return fields(dsl)
    .filter((f) => f.name === name)
    .map((f) => f.value);
}

function sum(bytes: Uint8Array): number {
  return bytes.reduce((s, b) => s + b, 0) & 0xff;
}

/** Header checks every SDT must pass. */
function assertHeader(table: Uint8Array, signature: string, revision: number): void {
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  assert.equal(new TextDecoder().decode(table.subarray(0, 4)), signature);
  assert.equal(dv.getUint32(4, true), table.length, 'length field');
  assert.equal(table[8], revision, 'revision');
  assert.equal(sum(table), 0, 'checksum');
  assert.equal(new TextDecoder().decode(table.subarray(10, 16)), 'MEMVSR');
}

const virtio = [0, 1, 2].map((i) => ({ base: 0xd0000000 + i * 0x1000, size: 0x1000, gsi: 5 + i }));

const twoNodes: NumaConfig = {
  nodes: [
    {
      id: 0,
      cpus: [0, 2],
      ram: [{ gpa: 0, size: 2 * GiB }],
      hotplug: [{ gpa: 4 * GiB, size: 4 * GiB }],
    },
    {
      id: 1,
      cpus: [1, 3],
      ram: [{ gpa: 2 * GiB, size: GiB }],
      hotplug: [
        { gpa: 8 * GiB, size: 2 * GiB },
        { gpa: 10 * GiB, size: 128 * 2 ** 20 },
      ],
    },
  ],
};

const invalidInput = (e: unknown) => e instanceof MemvisorError && e.code === 'invalid_input';

describe('iasl harness', () => {
  it('rejects a table whose checksum is wrong', () => {
    const table = buildMadt(1);
    table[9] = (table[9]! + 1) & 0xff;
    assert.throws(() => disassemble(table), /Incorrect checksum/);
  });
});

describe('RSDP', () => {
  it('has revision 2, both checksums and the XSDT address', () => {
    const rsdp = buildRsdp(0xe0300);
    const dv = new DataView(rsdp.buffer);
    assert.equal(rsdp.length, 36);
    assert.equal(new TextDecoder().decode(rsdp.subarray(0, 8)), 'RSD PTR ');
    assert.equal(sum(rsdp.subarray(0, 20)), 0);
    assert.equal(sum(rsdp), 0);
    assert.equal(rsdp[15], 2);
    assert.equal(dv.getUint32(16, true), 0);
    assert.equal(dv.getUint32(20, true), 36);
    assert.equal(dv.getBigUint64(24, true), 0xe0300n);
  });

  it('equals the RSDP iasl compiles from the same fields', () => {
    // iasl cannot disassemble a lone RSDP, so compile one and compare, checksums included.
    const source = [
      '[0008] Signature : "RSD PTR "',
      '[0001] Checksum : 00',
      '[0006] Oem ID : "MEMVSR"',
      '[0001] Revision : 02',
      '[0004] RSDT Address : 00000000',
      '[0004] Length : 00000024',
      '[0008] XSDT Address : 00000000000E0300',
      '[0001] Extended Checksum : 00',
      '[0003] Reserved : 000000',
    ].join('\n');
    assert.deepEqual(compile(source), buildRsdp(0xe0300));
  });
});

describe('XSDT', () => {
  it('lists 64-bit table addresses', () => {
    const xsdt = buildXsdt([0xe0100, 0xe0240, 0xe0400]);
    assertHeader(xsdt, 'XSDT', 1);
    assert.equal(xsdt.length, 36 + 24);
    const dsl = assertRoundTrip(xsdt);
    assert.deepEqual(
      fields(dsl)
        .filter((f) => f.name.startsWith('ACPI Table Address'))
        .map((f) => f.value),
      ['00000000000E0100', '00000000000E0240', '00000000000E0400'],
    );
  });
});

describe('FADT', () => {
  const fadt = buildFadt(0xe0040);

  it('is a 276-byte revision 6 table', () => {
    assertHeader(fadt, 'FACP', 6);
    assert.equal(fadt.length, 276);
  });

  it('describes a hardware-reduced platform with reset and sleep registers', () => {
    const dsl = assertRoundTrip(fadt);
    assert.match(dsl, /Hardware Reduced \(V5\) : 1/);
    assert.match(dsl, /Reset Register Supported \(V2\) : 1/);
    assert.match(dsl, /VGA Not Present \(V4\) : 1/);
    assert.match(dsl, /CMOS RTC Not Present \(V5\) : 1/);
    assert.equal(field(dsl, 'Flags (decoded below)'), '00100430');
    assert.equal(field(dsl, 'Value to cause reset'), '01');
    assert.equal(field(dsl, 'FADT Minor Revision'), '05');
    assert.deepEqual(values(dsl, 'DSDT Address'), ['000E0040', '00000000000E0040']);
    assert.equal(field(dsl, 'Hypervisor ID'), '524F5349564D454D');
    // Reset, sleep control and sleep status: 8-bit System I/O registers at 0x604/0x600/0x601.
    const spaces = values(dsl, 'Space ID');
    const addresses = values(dsl, 'Address');
    const widths = values(dsl, 'Bit Width');
    const io = spaces.flatMap((s, i) => (s.startsWith('01') ? [[addresses[i], widths[i]]] : []));
    assert.deepEqual(io, [
      ['0000000000000604', '08'],
      ['0000000000000600', '08'],
      ['0000000000000601', '08'],
    ]);
  });
});

describe('MADT', () => {
  it('lists one Local APIC per vCPU, the IOAPIC and IRQ0 -> GSI 2', () => {
    const madt = buildMadt(3);
    assertHeader(madt, 'APIC', 5);
    assert.equal(madt.length, 36 + 8 + 3 * 8 + 12 + 10);
    const dsl = assertRoundTrip(madt);
    assert.equal(field(dsl, 'Local Apic Address'), 'FEE00000');
    assert.match(dsl, /PC-AT Compatibility : 0/);
    assert.deepEqual(values(dsl, 'Processor ID'), ['00', '01', '02']);
    assert.deepEqual(values(dsl, 'Local Apic ID'), ['00', '01', '02']);
    assert.equal(field(dsl, 'I/O Apic ID'), '00');
    assert.deepEqual(values(dsl, 'Address'), ['FEC00000']);
    assert.deepEqual(values(dsl, 'Interrupt'), ['00000000', '00000002']);
    assert.equal(field(dsl, 'Bus'), '00');
    assert.equal(field(dsl, 'Source'), '00');
    assert.deepEqual(
      values(dsl, 'Subtable Type').map((v) => v.slice(0, 2)),
      ['00', '00', '00', '01', '02'],
    );
  });

  it('refuses vCPU counts the 8-bit APIC ids cannot hold', () => {
    assert.throws(() => buildMadt(0), invalidInput);
    assert.throws(() => buildMadt(255), invalidInput);
    assert.equal(buildMadt(254).length, 36 + 8 + 254 * 8 + 22);
  });
});

describe('DSDT', () => {
  const dsdt = buildDsdt(virtio);

  it('has a valid header', () => {
    assertHeader(dsdt, 'DSDT', 2);
  });

  it('describes each virtio-mmio device with its window and interrupt', () => {
    const dsl = assertRoundTrip(dsdt);
    const devices = [...dsl.matchAll(/Device \((\w+)\)\s*\{([\s\S]*?)\n {8}\}/g)];
    assert.deepEqual(
      devices.map((d) => d[1]),
      ['COM1', 'COM2', 'VR00', 'VR01', 'VR02'],
    );
    virtio.forEach((dev, i) => {
      const body = devices[i + 2]![2]!;
      assert.match(body, /Name \(_HID, "LNRO0005"\)/);
      assert.match(
        body,
        i === 0 ? /Name \(_UID, Zero\)/ : i === 1 ? /_UID, One\)/ : /_UID, 0x02\)/,
      );
      const base = dev.base.toString(16).toUpperCase();
      assert.match(
        body,
        new RegExp(`Memory32Fixed \\(ReadWrite,\\s*0x${base},[^\\n]*\\n\\s*0x00001000,`),
      );
      const irq = /Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{([^}]*)\}/;
      assert.equal(irq.exec(body)?.[1]?.trim(), `0x${dev.gsi.toString(16).padStart(8, '0')},`);
    });
    assert.match(dsl, /Scope \(\\_SB\)/);
  });

  it('describes both UARTs', () => {
    const dsl = disassemble(dsdt);
    for (const [name, uid, port, irq] of [
      ['COM1', 'One', '0x03F8', 4],
      ['COM2', '0x02', '0x02F8', 3],
    ] as const) {
      const body = new RegExp(`Device \\(${name}\\)\\s*\\{([\\s\\S]*?)\\n {8}\\}`).exec(dsl)?.[1];
      assert.ok(body, name);
      assert.match(body, /Name \(_HID, EisaId \("PNP0501"\)/);
      assert.match(body, new RegExp(`Name \\(_UID, ${uid}\\)`));
      assert.match(
        body,
        new RegExp(
          `IO \\(Decode16,\\s*${port},[^\\n]*\\n\\s*${port},[^\\n]*\\n\\s*0x01,[^\\n]*\\n\\s*0x08,`,
        ),
      );
      assert.match(body, new RegExp(`Exclusive, ,, \\)\\s*\\{\\s*0x0000000${irq},`));
    }
  });

  it('has the \\_S5_ package with SLP_TYP 5', () => {
    const dsl = disassemble(dsdt);
    assert.match(dsl, /Name \(\\_S5, Package \(0x02\)[^\n]*\s*\{\s*0x05,\s*Zero\s*\}/);
  });

  it('builds with no virtio devices', () => {
    const dsl = assertRoundTrip(buildDsdt([]));
    assert.doesNotMatch(dsl, /LNRO0005/);
    assert.match(dsl, /Device \(COM2\)/);
  });
});

describe('SRAT', () => {
  const srat = buildSrat(twoNodes, 4);

  it('has a valid header and the reserved 1', () => {
    assertHeader(srat, 'SRAT', 3);
    assert.equal(srat.length, 36 + 12 + 4 * 16 + 5 * 40);
    assert.equal(new DataView(srat.buffer).getUint32(36, true), 1);
  });

  it('puts each vCPU in its node', () => {
    const dsl = assertRoundTrip(srat);
    assert.equal(field(dsl, 'Table Revision'), '00000001');
    assert.deepEqual(values(dsl, 'Apic ID'), ['00', '01', '02', '03']);
    assert.deepEqual(values(dsl, 'Proximity Domain Low(8)'), ['00', '01', '00', '01']);
    assert.deepEqual(values(dsl, 'Proximity Domain High(24)'), [
      '000000',
      '000000',
      '000000',
      '000000',
    ]);
  });

  it('lists boot RAM as enabled and virtio-mem regions as hot-pluggable', () => {
    const dsl = assertRoundTrip(srat);
    const ranges = values(dsl, 'Base Address').map((base, i) => [
      values(dsl, 'Proximity Domain')[i],
      base,
      values(dsl, 'Address Length')[i],
    ]);
    assert.deepEqual(ranges, [
      ['00000000', '0000000000000000', '0000000080000000'],
      ['00000000', '0000000100000000', '0000000100000000'],
      ['00000001', '0000000080000000', '0000000040000000'],
      ['00000001', '0000000200000000', '0000000080000000'],
      ['00000001', '0000000280000000', '0000000008000000'],
    ]);
    assert.deepEqual(values(dsl, 'Hot Pluggable'), []);
    const memFlags = fields(dsl)
      .filter((f) => f.name === 'Flags (decoded below)')
      .map((f) => f.value)
      .slice(4);
    assert.deepEqual(memFlags, ['00000001', '00000003', '00000001', '00000003', '00000003']);
    assert.equal((dsl.match(/Hot Pluggable : 1/g) ?? []).length, 3);
    assert.equal((dsl.match(/Hot Pluggable : 0/g) ?? []).length, 2);
  });

  it('refuses topologies Linux would misread', () => {
    const node = (id: number, cpus: number[]) => ({ id, cpus, ram: [], hotplug: [] });
    assert.throws(() => buildSrat({ nodes: [node(0, [0])] }, 2), /vCPU 1 is in no NUMA node/);
    assert.throws(
      () => buildSrat({ nodes: [node(0, [0, 1]), node(1, [1])] }, 2),
      /in nodes 0 and 1/,
    );
    assert.throws(() => buildSrat({ nodes: [node(0, [0]), node(2, [1])] }, 2), /0\.\.n-1/);
    assert.throws(() => buildSrat({ nodes: [node(0, [0, 5])] }, 2), invalidInput);
    assert.throws(() => buildSrat({ nodes: [] }, 1), invalidInput);
  });
});

describe('SLIT', () => {
  it('writes the default 10/20 matrix', () => {
    const slit = buildSlit(defaultDistances(3));
    assertHeader(slit, 'SLIT', 1);
    assert.equal(slit.length, 36 + 8 + 9);
    const dsl = assertRoundTrip(slit);
    assert.equal(field(dsl, 'Localities'), '0000000000000003');
    assert.deepEqual(
      fields(dsl)
        .filter((f) => f.name.startsWith('Locality'))
        .map((f) => f.value),
      ['0A 14 14', '14 0A 14', '14 14 0A'],
    );
  });

  it('writes a settable matrix', () => {
    const dsl = assertRoundTrip(
      buildSlit([
        [10, 33],
        [41, 10],
      ]),
    );
    assert.match(dsl, /Locality {3}0 : 0A 21/);
    assert.match(dsl, /Locality {3}1 : 29 0A/);
  });

  it('refuses matrices Linux would ignore', () => {
    assert.throws(
      () =>
        buildSlit([
          [11, 20],
          [20, 10],
        ]),
      invalidInput,
    );
    assert.throws(
      () =>
        buildSlit([
          [10, 10],
          [20, 10],
        ]),
      invalidInput,
    );
    assert.throws(() => buildSlit([[10, 20], [20]]), invalidInput);
    assert.throws(
      () =>
        buildSlit([
          [10, 255],
          [20, 10],
        ]),
      invalidInput,
    );
    assert.throws(() => buildSlit([]), invalidInput);
  });
});

describe('tables in ACPICA', () => {
  it('load cleanly and evaluate _CRS, _HID and \\_S5_ in its interpreter', () => {
    const tables = [buildDsdt(virtio), buildFadt(0), buildMadt(4), buildSrat(twoNodes, 4)];
    tables.push(buildSlit(defaultDistances(2)));
    const out = acpiexec(
      tables,
      'evaluate \\_SB.VR02._CRS; evaluate \\_SB.COM1._HID; evaluate \\_S5_',
    );
    assert.match(out, /ACPI: 1 ACPI AML tables successfully acquired and loaded/);
    assert.match(out, /5 Devices/);
    // VR02's _CRS: Memory32Fixed at 0xd0002000, Interrupt 7, End Tag.
    assert.match(out, /0000: 86 09 00 01 00 20 00 D0 00 10 00 00 89 06 00 03/);
    assert.match(out, /0010: 01 07 00 00 00 79 [0-9A-F]{2} /);
    assert.match(out, /\[Integer\] = 000000000105D041/);
    assert.match(out, /\[Package\] Contains 2 Elements:\s*\[Integer\] = 0+5\s*\[Integer\] = 0+\n/);
  });
});

describe('writeAcpiTables', () => {
  function guest(): GuestMemory {
    const size = 2 * 2 ** 20;
    return new GuestMemory([{ name: 'ram', gpa: 0, size, backing: new BufferBacking(size) }]);
  }

  const cfg: AcpiConfig = { vcpus: 4, virtioMmio: virtio, numa: twoNodes };

  it('writes the RSDP at 0xe0000 and links every table from it', () => {
    const mem = guest();
    const layout = writeAcpiTables(mem, cfg);
    assert.equal(layout.rsdp, 0xe0000);
    assert.deepEqual(Object.keys(layout.tables).sort(), [
      'APIC',
      'DSDT',
      'FACP',
      'SLIT',
      'SRAT',
      'XSDT',
    ]);
    const rsdp = mem.read(0xe0000, 36);
    assert.deepEqual(rsdp, buildRsdp(layout.tables.XSDT!.addr));

    const xsdt = layout.tables.XSDT!;
    const pointers = [];
    for (let at = xsdt.addr + 36; at < xsdt.addr + xsdt.length; at += 8) {
      pointers.push(Number(mem.readU64(at)));
    }
    assert.deepEqual(
      pointers,
      ['FACP', 'APIC', 'SRAT', 'SLIT'].map((s) => layout.tables[s]!.addr),
    );
    const fadt = layout.tables.FACP!.addr;
    assert.equal(Number(mem.readU64(fadt + 140)), layout.tables.DSDT!.addr);
    assert.equal(mem.readU32(fadt + 40), layout.tables.DSDT!.addr);
  });

  it('places tables aligned, apart, below 1 MiB, each intact in memory', () => {
    const mem = guest();
    const layout = writeAcpiTables(mem, cfg);
    const placed = Object.entries(layout.tables).sort((a, b) => a[1].addr - b[1].addr);
    let end = 0xe0000 + 36;
    for (const [signature, { addr, length }] of placed) {
      assert.equal(addr % 16, 0, signature);
      assert.ok(addr >= end, `${signature} overlaps the table before it`);
      end = addr + length;
      const table = mem.read(addr, length);
      assertHeader(table, signature, table[8]!);
    }
    assert.ok(end <= 0x100000);
    assert.deepEqual(
      mem.read(layout.tables.SRAT!.addr, layout.tables.SRAT!.length),
      buildSrat(twoNodes, 4),
    );
    assert.deepEqual(
      mem.read(layout.tables.DSDT!.addr, layout.tables.DSDT!.length),
      buildDsdt(virtio),
    );
  });

  it('leaves SRAT and SLIT out without NUMA', () => {
    const layout = writeAcpiTables(guest(), { vcpus: 1, virtioMmio: [] });
    assert.deepEqual(Object.keys(layout.tables).sort(), ['APIC', 'DSDT', 'FACP', 'XSDT']);
    assert.equal(layout.tables.XSDT!.length, 36 + 16);
  });

  it('uses given distances and checks their size', () => {
    const mem = guest();
    const layout = writeAcpiTables(mem, {
      ...cfg,
      numa: {
        ...twoNodes,
        distances: [
          [10, 15],
          [15, 10],
        ],
      },
    });
    const slit = layout.tables.SLIT!;
    assert.deepEqual([...mem.read(slit.addr + 44, 4)], [10, 15, 15, 10]);
    assert.throws(
      () => writeAcpiTables(guest(), { ...cfg, numa: { ...twoNodes, distances: [[10]] } }),
      invalidInput,
    );
  });

  it('refuses tables that do not fit below 1 MiB', () => {
    const many = Array.from({ length: 3300 }, (_, i) => ({ gpa: (16 + i) * GiB, size: GiB }));
    const numa = { nodes: [{ id: 0, cpus: [0], ram: [], hotplug: many }] };
    assert.throws(
      () => writeAcpiTables(guest(), { vcpus: 1, virtioMmio: [], numa }),
      (e: unknown) => e instanceof MemvisorError && e.code === 'acpi_too_large',
    );
  });
});
