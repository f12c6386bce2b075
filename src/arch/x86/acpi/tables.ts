/**
 * ACPI tables for a hardware-reduced x86-64 guest (ACPI 6.5, chapter 5): RSDP, XSDT, FADT,
 * MADT, DSDT and, with NUMA, SRAT and SLIT. Builders return the table bytes with length and
 * checksum filled in; `writeAcpiTables` lays them out in the legacy BIOS area.
 */
import type { GuestMemory } from '../../../memory/guest-memory.js';
import { MemvisorError } from '../../../util/errors.js';
import type { RamRange } from '../boot.js';
import {
  ACPI_END,
  ACPI_RESET_PORT,
  ACPI_RESET_VALUE,
  ACPI_S5_SLP_TYP,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  APIC_START,
  COM1_IRQ,
  COM1_PORT,
  COM2_IRQ,
  COM2_PORT,
  IOAPIC_START,
  RSDP_START,
  SERIAL_PORT_SIZE,
} from '../layout.js';
import * as aml from './aml.js';

/** One virtio-mmio device as the DSDT describes it. */
export interface VirtioMmioDevice {
  base: number;
  size: number;
  gsi: number;
}

/** One NUMA node: its vCPUs (by APIC id), its boot RAM and its virtio-mem regions. */
export interface NumaNode {
  id: number;
  cpus: number[];
  ram: RamRange[];
  hotplug: RamRange[];
}

/** NUMA topology: nodes are numbered 0..n-1 and become proximity domains of the same number. */
export interface NumaConfig {
  nodes: NumaNode[];
  /** distances[i][j] from node i to node j; default 10 local, 20 remote. */
  distances?: number[][];
}

/** What the ACPI tables describe. */
export interface AcpiConfig {
  vcpus: number;
  virtioMmio: VirtioMmioDevice[];
  numa?: NumaConfig;
}

/** Where each table landed, by signature ("DSDT", "FACP", "APIC", "SRAT", "SLIT", "XSDT"). */
export interface AcpiLayout {
  rsdp: number;
  tables: Record<string, { addr: number; length: number }>;
}

/** OEM fields of every table. */
export const OEM_ID = 'MEMVSR';
export const OEM_TABLE_ID = 'MEMVISOR';
export const OEM_REVISION = 1;
export const CREATOR_ID = 'MVSR';
export const CREATOR_REVISION = 1;
/** FADT hypervisor vendor identity. */
export const HYPERVISOR_VENDOR_ID = 'MEMVISOR';

/** Size of the common table header (ACPI 6.5, 5.2.6). */
export const SDT_HEADER_SIZE = 36;
const SDT_LENGTH_OFFSET = 4;
const SDT_CHECKSUM_OFFSET = 9;

/** Most vCPUs the MADT's 8-bit Local APIC entries can name (APIC id 0xff is broadcast). */
export const MAX_VCPUS = 254;

function acpiError(message: string): MemvisorError {
  return new MemvisorError('invalid_input', `ACPI: ${message}`);
}

function ascii(text: string, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(new TextEncoder().encode(text).subarray(0, size));
  return out;
}

/** The byte that makes `bytes` sum to zero modulo 256 when it replaces a zero byte. */
export function checksum(bytes: Uint8Array): number {
  return (256 - (bytes.reduce((s, b) => s + b, 0) & 0xff)) & 0xff;
}

/** A little-endian byte builder for fixed-layout tables. */
class Bytes {
  readonly bytes: Uint8Array;
  readonly #dv: DataView;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.#dv = new DataView(this.bytes.buffer);
  }

  u8(at: number, v: number): this {
    this.#dv.setUint8(at, v);
    return this;
  }

  u16(at: number, v: number): this {
    this.#dv.setUint16(at, v, true);
    return this;
  }

  u32(at: number, v: number): this {
    this.#dv.setUint32(at, v >>> 0, true);
    return this;
  }

  u64(at: number, v: number | bigint): this {
    this.#dv.setBigUint64(at, BigInt(v), true);
    return this;
  }

  set(at: number, data: Uint8Array): this {
    this.bytes.set(data, at);
    return this;
  }
}

/** A System Description Table: the 36-byte header, then `body`; length and checksum set. */
export function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Bytes(SDT_HEADER_SIZE + body.length)
    .set(0, ascii(signature, 4))
    .u32(SDT_LENGTH_OFFSET, SDT_HEADER_SIZE + body.length)
    .u8(8, revision)
    .set(10, ascii(OEM_ID, 6))
    .set(16, ascii(OEM_TABLE_ID, 8))
    .u32(24, OEM_REVISION)
    .set(28, ascii(CREATOR_ID, 4))
    .u32(32, CREATOR_REVISION)
    .set(SDT_HEADER_SIZE, body);
  return t.u8(SDT_CHECKSUM_OFFSET, checksum(t.bytes)).bytes;
}

// RSDP (ACPI 6.5, 5.2.5.3).
export const RSDP_SIZE = 36;
const RSDP_V1_SIZE = 20;

/** RSDP revision 2 pointing at the XSDT only; both checksums set. */
export function buildRsdp(xsdtAddr: number): Uint8Array {
  const t = new Bytes(RSDP_SIZE)
    .set(0, ascii('RSD PTR ', 8))
    .set(9, ascii(OEM_ID, 6))
    .u8(15, 2)
    .u32(16, 0)
    .u32(20, RSDP_SIZE)
    .u64(24, xsdtAddr);
  t.u8(8, checksum(t.bytes.subarray(0, RSDP_V1_SIZE)));
  return t.u8(32, checksum(t.bytes)).bytes;
}

/** XSDT: 64-bit pointers to every other table but the DSDT and the FACS. */
export function buildXsdt(tableAddrs: readonly number[]): Uint8Array {
  const body = new Bytes(8 * tableAddrs.length);
  tableAddrs.forEach((addr, i) => body.u64(i * 8, addr));
  return sdt('XSDT', 1, body.bytes);
}

// FADT (ACPI 6.5, 5.2.9).
export const FADT_SIZE = 276;
export const FADT_REVISION = 6;
const FADT_MINOR_REVISION = 5;
/** FADT field offsets used here. */
const FADT = {
  dsdt: 40,
  iapc_boot_arch: 109,
  flags: 112,
  reset_reg: 116,
  reset_value: 128,
  minor_version: 131,
  x_dsdt: 140,
  sleep_control_reg: 244,
  sleep_status_reg: 256,
  hypervisor_vendor_id: 268,
} as const;
/** FADT flags. */
export const FADT_F_PWR_BUTTON = 1 << 4;
export const FADT_F_SLP_BUTTON = 1 << 5;
export const FADT_F_RESET_REG_SUP = 1 << 10;
export const FADT_F_HW_REDUCED_ACPI = 1 << 20;
/** IA-PC boot architecture flags. */
export const IAPC_BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2;
export const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT = 1 << 5;

/** Generic Address Structure address spaces and access sizes (ACPI 6.5, 5.2.3.2). */
export const GAS_SYSTEM_IO = 1;
export const GAS_ACCESS_BYTE = 1;
const GAS_SIZE = 12;

/** A Generic Address Structure for an 8-bit I/O port. */
function ioPortGas(port: number): Uint8Array {
  return new Bytes(GAS_SIZE)
    .u8(0, GAS_SYSTEM_IO)
    .u8(1, 8)
    .u8(2, 0)
    .u8(3, GAS_ACCESS_BYTE)
    .u64(4, port).bytes;
}

/**
 * FADT revision 6 for a hardware-reduced platform: sleep control/status registers instead of
 * PM1 blocks, the reset register, no power or sleep button, no VGA and no CMOS RTC.
 */
export function buildFadt(dsdtAddr: number): Uint8Array {
  const body = new Bytes(FADT_SIZE)
    // The 32-bit field may only repeat X_DSDT; above 4 GiB it stays zero.
    .u32(FADT.dsdt, dsdtAddr < 2 ** 32 ? dsdtAddr : 0)
    // Linux reads no RTC with this set (x86_platform.legacy.rtc = 0); memvisor emulates none.
    .u16(FADT.iapc_boot_arch, IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT)
    .u32(
      FADT.flags,
      FADT_F_HW_REDUCED_ACPI | FADT_F_RESET_REG_SUP | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON,
    )
    .set(FADT.reset_reg, ioPortGas(ACPI_RESET_PORT))
    .u8(FADT.reset_value, ACPI_RESET_VALUE)
    .u8(FADT.minor_version, FADT_MINOR_REVISION)
    .u64(FADT.x_dsdt, dsdtAddr)
    .set(FADT.sleep_control_reg, ioPortGas(ACPI_SLEEP_CONTROL_PORT))
    .set(FADT.sleep_status_reg, ioPortGas(ACPI_SLEEP_STATUS_PORT))
    .set(FADT.hypervisor_vendor_id, ascii(HYPERVISOR_VENDOR_ID, 8));
  return sdt('FACP', FADT_REVISION, body.bytes.subarray(SDT_HEADER_SIZE));
}

// MADT (ACPI 6.5, 5.2.12).
export const MADT_REVISION = 5;
const MADT_TYPE_LOCAL_APIC = 0;
const MADT_TYPE_IO_APIC = 1;
const MADT_TYPE_INTERRUPT_OVERRIDE = 2;
const MADT_LOCAL_APIC_ENABLED = 1;
/** The PIT's ISA IRQ 0 arrives on IOAPIC pin 2, as on PC hardware and in QEMU's routing. */
export const PIT_ISA_IRQ = 0;
export const PIT_GSI = 2;
export const IOAPIC_ID = 0;

/**
 * MADT: the LAPIC address, PCAT_COMPAT clear (no 8259 for the guest to use), a Local APIC per
 * vCPU (ACPI UID = APIC id = index), the IOAPIC at GSI base 0, and ISA IRQ 0 -> GSI 2.
 */
export function buildMadt(vcpus: number): Uint8Array {
  checkVcpus(vcpus);
  const entries = new Bytes(8 + vcpus * 8 + 12 + 10).u32(0, APIC_START).u32(4, 0);
  let at = 8;
  for (let id = 0; id < vcpus; id++) {
    entries
      .u8(at, MADT_TYPE_LOCAL_APIC)
      .u8(at + 1, 8)
      .u8(at + 2, id)
      .u8(at + 3, id);
    entries.u32(at + 4, MADT_LOCAL_APIC_ENABLED);
    at += 8;
  }
  entries
    .u8(at, MADT_TYPE_IO_APIC)
    .u8(at + 1, 12)
    .u8(at + 2, IOAPIC_ID)
    .u32(at + 4, IOAPIC_START);
  entries.u32(at + 8, 0);
  at += 12;
  // Bus 0 is ISA; flags 0 keep the bus's conforming polarity and trigger mode.
  entries
    .u8(at, MADT_TYPE_INTERRUPT_OVERRIDE)
    .u8(at + 1, 10)
    .u8(at + 2, 0)
    .u8(at + 3, PIT_ISA_IRQ);
  entries.u32(at + 4, PIT_GSI).u16(at + 8, 0);
  return sdt('APIC', MADT_REVISION, entries.bytes);
}

function checkVcpus(vcpus: number): void {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) {
    throw acpiError(`${vcpus} vCPUs; between 1 and ${MAX_VCPUS} are supported`);
  }
}

// DSDT (ACPI 6.5, 5.2.11.1). Revision 2: integers are 64 bits wide.
export const DSDT_REVISION = 2;
/** _HID of a virtio-mmio device, as Linux's virtio_mmio driver matches it. */
export const VIRTIO_MMIO_HID = 'LNRO0005';
/** _HID of a 16550A-compatible UART. */
export const SERIAL_HID = 'PNP0501';

const EDGE_HIGH_EXCLUSIVE: aml.InterruptFlags = {
  consumer: true,
  edge: true,
  activeLow: false,
  shared: false,
};

/** The AML name of virtio-mmio device `index`: VR00, VR01, ... in hexadecimal. */
export function virtioMmioDeviceName(index: number): string {
  return `VR${index.toString(16).toUpperCase().padStart(2, '0')}`;
}

function serialDevice(name: string, uid: number, port: number, irq: number): Uint8Array {
  return aml.device(name, [
    aml.name('_HID', aml.eisaId(SERIAL_HID)),
    aml.name('_UID', aml.integer(uid)),
    aml.name(
      '_CRS',
      aml.resourceTemplate([
        aml.io(port, port, 1, SERIAL_PORT_SIZE),
        aml.extendedInterrupt(EDGE_HIGH_EXCLUSIVE, [irq]),
      ]),
    ),
  ]);
}

/**
 * DSDT: under \_SB the two UARTs (COM1, COM2) and one LNRO0005 device per virtio-mmio slot with
 * its 4 KiB window and edge-triggered, active-high interrupt; then \_S5_ for soft off.
 */
export function buildDsdt(virtioMmio: readonly VirtioMmioDevice[]): Uint8Array {
  if (virtioMmio.length > 256) throw acpiError(`${virtioMmio.length} virtio-mmio devices`);
  const devices = virtioMmio.map((dev, i) =>
    aml.device(virtioMmioDeviceName(i), [
      aml.name('_HID', aml.string(VIRTIO_MMIO_HID)),
      aml.name('_UID', aml.integer(i)),
      aml.name(
        '_CRS',
        aml.resourceTemplate([
          aml.memory32Fixed(dev.base, dev.size),
          aml.extendedInterrupt(EDGE_HIGH_EXCLUSIVE, [dev.gsi]),
        ]),
      ),
    ]),
  );
  const body = aml.concat([
    aml.scope('\\_SB', [
      serialDevice('COM1', 1, COM1_PORT, COM1_IRQ),
      serialDevice('COM2', 2, COM2_PORT, COM2_IRQ),
      ...devices,
    ]),
    aml.name('\\_S5', aml.pkg([aml.integer(ACPI_S5_SLP_TYP), aml.integer(0)])),
  ]);
  return sdt('DSDT', DSDT_REVISION, body);
}

// SRAT (ACPI 6.5, 5.2.16).
export const SRAT_REVISION = 3;
const SRAT_TYPE_LOCAL_APIC_AFFINITY = 0;
const SRAT_TYPE_MEMORY_AFFINITY = 1;
export const SRAT_CPU_ENABLED = 1;
export const SRAT_MEM_ENABLED = 1 << 0;
export const SRAT_MEM_HOT_PLUGGABLE = 1 << 1;
const SRAT_LOCAL_APIC_SIZE = 16;
const SRAT_MEMORY_SIZE = 40;

/** Checks nodes are numbered 0..n-1 and every vCPU belongs to exactly one of them. */
function checkNuma(numa: NumaConfig, vcpus: number): void {
  const n = numa.nodes.length;
  if (n === 0 || n > 256) throw acpiError(`${n} NUMA nodes`);
  const ids = numa.nodes.map((node) => node.id).sort((a, b) => a - b);
  if (ids.some((id, i) => id !== i)) throw acpiError('NUMA node ids must be 0..n-1, each once');
  const owner = new Array<number>(vcpus).fill(-1);
  for (const node of numa.nodes) {
    for (const cpu of node.cpus) {
      if (!Number.isInteger(cpu) || cpu < 0 || cpu >= vcpus) {
        throw acpiError(`node ${node.id} names vCPU ${cpu}, not one of ${vcpus}`);
      }
      if (owner[cpu] !== -1)
        throw acpiError(`vCPU ${cpu} is in nodes ${owner[cpu]} and ${node.id}`);
      owner[cpu] = node.id;
    }
  }
  const orphan = owner.indexOf(-1);
  if (orphan !== -1) throw acpiError(`vCPU ${orphan} is in no NUMA node`);
}

/**
 * SRAT: a Processor Local APIC affinity entry per vCPU, an enabled memory affinity entry per
 * boot RAM range and an enabled, hot-pluggable one per virtio-mem region, each in its node's
 * proximity domain (= node id).
 */
export function buildSrat(numa: NumaConfig, vcpus: number): Uint8Array {
  checkVcpus(vcpus);
  checkNuma(numa, vcpus);
  const cpus = numa.nodes.flatMap((node) => node.cpus.map((cpu) => ({ cpu, pxm: node.id })));
  cpus.sort((a, b) => a.cpu - b.cpu);
  const memory = numa.nodes.flatMap((node) => [
    ...node.ram.map((r) => ({ ...r, pxm: node.id, flags: SRAT_MEM_ENABLED })),
    ...node.hotplug.map((r) => ({
      ...r,
      pxm: node.id,
      flags: SRAT_MEM_ENABLED | SRAT_MEM_HOT_PLUGGABLE,
    })),
  ]);
  const body = new Bytes(
    12 + cpus.length * SRAT_LOCAL_APIC_SIZE + memory.length * SRAT_MEMORY_SIZE,
  );
  // Reserved field that must read 1 for compatibility with older OSes.
  body.u32(0, 1);
  let at = 12;
  for (const { cpu, pxm } of cpus) {
    body.u8(at, SRAT_TYPE_LOCAL_APIC_AFFINITY).u8(at + 1, SRAT_LOCAL_APIC_SIZE);
    body
      .u8(at + 2, pxm & 0xff)
      .u8(at + 3, cpu)
      .u32(at + 4, SRAT_CPU_ENABLED);
    // Proximity domain bits 31:8 live in three bytes at offset 9.
    body.u8(at + 9, (pxm >> 8) & 0xff).u16(at + 10, pxm >>> 16);
    at += SRAT_LOCAL_APIC_SIZE;
  }
  for (const m of memory) {
    if (!Number.isSafeInteger(m.gpa) || !Number.isSafeInteger(m.size) || m.size <= 0) {
      throw acpiError(`memory range 0x${m.gpa.toString(16)}+${m.size} of node ${m.pxm}`);
    }
    body
      .u8(at, SRAT_TYPE_MEMORY_AFFINITY)
      .u8(at + 1, SRAT_MEMORY_SIZE)
      .u32(at + 2, m.pxm);
    body
      .u64(at + 8, m.gpa)
      .u64(at + 16, m.size)
      .u32(at + 28, m.flags);
    at += SRAT_MEMORY_SIZE;
  }
  return sdt('SRAT', SRAT_REVISION, body.bytes);
}

// SLIT (ACPI 6.5, 5.2.17).
export const SLIT_REVISION = 1;
export const LOCAL_DISTANCE = 10;
export const REMOTE_DISTANCE = 20;

/** The default distance matrix: 10 to itself, 20 to every other node. */
export function defaultDistances(nodes: number): number[][] {
  return Array.from({ length: nodes }, (_, i) =>
    Array.from({ length: nodes }, (_, j) => (i === j ? LOCAL_DISTANCE : REMOTE_DISTANCE)),
  );
}

/**
 * SLIT: the n x n distance matrix, row i from proximity domain i. Linux ignores a SLIT whose
 * diagonal is not 10 or whose other entries are not above 10, so such a matrix is refused.
 */
export function buildSlit(distances: readonly (readonly number[])[]): Uint8Array {
  const n = distances.length;
  if (n === 0 || n > 256) throw acpiError(`SLIT of ${n} localities`);
  const body = new Bytes(8 + n * n).u64(0, n);
  distances.forEach((row, i) => {
    if (row.length !== n) throw acpiError(`SLIT row ${i} has ${row.length} entries, not ${n}`);
    row.forEach((d, j) => {
      const ok = i === j ? d === LOCAL_DISTANCE : Number.isInteger(d) && d > 10 && d <= 254;
      if (!ok) throw acpiError(`distance ${d} from node ${i} to node ${j}`);
      body.u8(8 + i * n + j, d);
    });
  });
  return sdt('SLIT', SLIT_REVISION, body.bytes);
}

/** Tables start on this boundary. */
const TABLE_ALIGN = 16;

/**
 * Builds every table for `cfg` and writes them at RSDP_START and after it, below 1 MiB.
 * Returns the RSDP address and each table's address and length by signature.
 */
export function writeAcpiTables(mem: GuestMemory, cfg: AcpiConfig): AcpiLayout {
  checkVcpus(cfg.vcpus);
  const tables: AcpiLayout['tables'] = {};
  const blobs: { addr: number; bytes: Uint8Array }[] = [];
  let next = RSDP_START + RSDP_SIZE;
  const place = (signature: string, bytes: Uint8Array): number => {
    const addr = Math.ceil(next / TABLE_ALIGN) * TABLE_ALIGN;
    if (addr + bytes.length > ACPI_END) {
      throw new MemvisorError('acpi_too_large', 'ACPI tables do not fit below 1 MiB');
    }
    next = addr + bytes.length;
    tables[signature] = { addr, length: bytes.length };
    blobs.push({ addr, bytes });
    return addr;
  };

  const dsdt = place('DSDT', buildDsdt(cfg.virtioMmio));
  const pointed = [place('FACP', buildFadt(dsdt)), place('APIC', buildMadt(cfg.vcpus))];
  if (cfg.numa) {
    pointed.push(place('SRAT', buildSrat(cfg.numa, cfg.vcpus)));
    const distances = cfg.numa.distances ?? defaultDistances(cfg.numa.nodes.length);
    if (distances.length !== cfg.numa.nodes.length) {
      throw acpiError(`${distances.length} distance rows for ${cfg.numa.nodes.length} nodes`);
    }
    pointed.push(place('SLIT', buildSlit(distances)));
  }
  const xsdt = place('XSDT', buildXsdt(pointed));

  mem.fill(RSDP_START, ACPI_END - RSDP_START);
  mem.write(RSDP_START, buildRsdp(xsdt));
  for (const blob of blobs) mem.write(blob.addr, blob.bytes);
  return { rsdp: RSDP_START, tables };
}
