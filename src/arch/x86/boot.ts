/**
 * Linux x86-64 boot: loads a bzImage or an ELF vmlinux with its initrd and command line, fills
 * the zero page (struct boot_params, Documentation/arch/x86/boot.rst), builds a GDT and an
 * identity-mapping page table, and returns the register state of the 64-bit entry. Writes only
 * into `GuestMemory`; turning the returned state into KVM ioctls is the caller's job.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import { MemvisorError } from '../../util/errors.js';
import {
  BOOT_GDT_START,
  BOOT_IDT_START,
  BOOT_STACK_POINTER,
  CMDLINE_MAX_SIZE,
  CMDLINE_START,
  EBDA_START,
  HIGH_MEMORY_START,
  HIGH_RAM_START,
  KERNEL_START,
  LOW_RAM_END_MAX,
  PAGE_SIZE_2M,
  PAGE_SIZE_4K,
  PDE_COUNT,
  PDE_START,
  PDPTE_START,
  PML4_START,
  RSDP_START,
  ZERO_PAGE_START,
} from './layout.js';

/** A segment register as KVM's `struct kvm_segment` holds it; `limit` is in bytes. */
export interface SegmentState {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
}

/** Registers of the boot vCPU at the kernel's 64-bit entry point. */
export interface BootCpuState {
  rip: number;
  rsp: number;
  rbp: number;
  rsi: number;
  rflags: number;
  cr0: number;
  cr3: number;
  cr4: number;
  efer: number;
  cs: SegmentState;
  ds: SegmentState;
  es: SegmentState;
  fs: SegmentState;
  gs: SegmentState;
  ss: SegmentState;
  tr: SegmentState;
  ldt: SegmentState;
  gdt: { base: number; limit: number };
  idt: { base: number; limit: number };
}

/** A range of guest-physical RAM. */
export interface RamRange {
  gpa: number;
  size: number;
}

/** What `loadLinux` loads. */
export interface LinuxBootConfig {
  /** A bzImage or an ELF vmlinux. */
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  /** Boot RAM, sorted or not; the range at GPA 0 must cover the first MiB and the kernel. */
  ram: RamRange[];
}

/** Offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h). */
export const BOOT_PARAMS = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  sentinel: 0x1ef,
  hdr: 0x1f1,
  e820_table: 0x2d0,
} as const;

/** Offsets of struct setup_header fields, relative to the start of the zero page or bzImage. */
export const SETUP_HEADER = {
  setup_sects: 0x1f1,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

/** Size of the zero page. */
export const ZERO_PAGE_SIZE = 4096;
/** The setup header copy ends where boot_params' padding after it ends. */
const SETUP_HEADER_END_MAX = 0x290;
/** "HdrS", the setup header magic. */
export const HDRS_MAGIC = 0x53726448;
/** boot_flag value of a valid header. */
export const BOOT_FLAG_MAGIC = 0xaa55;
/** Oldest boot protocol accepted: 2.06 added cmdline_size, which the loader needs. */
export const MIN_BOOT_PROTOCOL = 0x0206;
/** type_of_loader for a boot loader without an assigned id. */
export const LOADER_TYPE_UNDEFINED = 0xff;
/** loadflags bits. */
export const LOADED_HIGH = 0x01;
export const CAN_USE_HEAP = 0x80;
/** xloadflags bit: the kernel has a 64-bit entry point at load address + 0x200. */
export const XLF_KERNEL_64 = 0x01;
/** Offset of the 64-bit entry point from the protected-mode kernel's load address. */
export const STARTUP_64_OFFSET = 0x200;
/** heap_end_ptr: end of the setup heap relative to the real-mode code, as boot.rst suggests. */
const HEAP_END = 0xfe00;
/** Default alignment stated in a header synthesized for a vmlinux (CONFIG_PHYSICAL_ALIGN). */
const DEFAULT_KERNEL_ALIGNMENT = 0x1000000;

/** e820 entry types. */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
/** Most e820 entries the zero page holds. */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
const E820_ENTRY_SIZE = 20;

/** One e820 entry. */
export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

// Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
export const X86_CR0_PE = 1 << 0;
export const X86_CR0_ET = 1 << 4;
export const X86_CR0_PG = 2 ** 31;
export const X86_CR4_PAE = 1 << 5;
export const EFER_LME = 1 << 8;
export const EFER_LMA = 1 << 10;
/** RFLAGS bit 1 is reserved and always set. */
const RFLAGS_RESERVED = 0x2;

// Page-table entry bits.
const PTE_PRESENT = 1 << 0;
const PTE_WRITABLE = 1 << 1;
const PDE_PAGE_SIZE = 1 << 7;
const PAGE_TABLE_ENTRIES = 512;

// The boot GDT: selector = index * 8.
/** GDT flags and access bytes, as `flags << 12 | access` (the top nibble is G, D/B, L, AVL). */
export const GDT_CODE64 = 0xa09b;
export const GDT_DATA = 0xc093;
export const GDT_TSS = 0x808b;
/** Boot GDT entries in order: null, code, data, TSS. */
export const BOOT_GDT: readonly bigint[] = [
  0n,
  gdtEntry(GDT_CODE64, 0, 0xfffff),
  gdtEntry(GDT_DATA, 0, 0xfffff),
  gdtEntry(GDT_TSS, 0, 0xfffff),
];
export const BOOT_CODE_SELECTOR = 1 * 8;
export const BOOT_DATA_SELECTOR = 2 * 8;
export const BOOT_TSS_SELECTOR = 3 * 8;

/**
 * Encodes a GDT descriptor from `flags` (G, D/B, L, AVL in bits 15..12 and the access byte in
 * bits 7..0), a 32-bit base and a 20-bit limit.
 */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit & 0xfffff);
  const f = BigInt(flags & 0xf0ff);
  return (
    ((b & 0xff000000n) << 32n) |
    (f << 40n) |
    ((l & 0xf0000n) << 32n) |
    ((b & 0xffffffn) << 16n) |
    (l & 0xffffn)
  );
}

/** Decodes a GDT descriptor into the segment register state KVM loads for it. */
export function segmentFromGdt(entry: bigint, selector: number): SegmentState {
  const bits = (shift: bigint, width: bigint): number =>
    Number((entry >> shift) & ((1n << width) - 1n));
  const g = bits(55n, 1n);
  const rawLimit = bits(0n, 16n) | (bits(48n, 4n) << 16);
  return {
    base: bits(16n, 24n) | (bits(56n, 8n) * 2 ** 24),
    // With G set the limit counts 4 KiB pages; KVM wants it in bytes.
    limit: g ? rawLimit * PAGE_SIZE_4K + (PAGE_SIZE_4K - 1) : rawLimit,
    selector,
    type: bits(40n, 4n),
    s: bits(44n, 1n),
    dpl: bits(45n, 2n),
    present: bits(47n, 1n),
    avl: bits(52n, 1n),
    l: bits(53n, 1n),
    db: bits(54n, 1n),
    g,
  };
}

/** Splits `memBytes` of boot RAM around the [3 GiB, 4 GiB) MMIO hole. */
export function bootRamRanges(memBytes: number): RamRange[] {
  if (!Number.isSafeInteger(memBytes) || memBytes <= 0) {
    throw new MemvisorError('invalid_input', `boot RAM size ${memBytes} is not a positive size`);
  }
  const low = Math.min(memBytes, LOW_RAM_END_MAX);
  const ranges: RamRange[] = [{ gpa: 0, size: low }];
  if (memBytes > low) ranges.push({ gpa: HIGH_RAM_START, size: memBytes - low });
  return ranges;
}

/**
 * The e820 map of `ram`: the range at 0 is split into RAM below the EBDA, the reserved legacy
 * area up to 1 MiB, and RAM from 1 MiB; every other range is RAM.
 */
export function e820Entries(ram: readonly RamRange[]): E820Entry[] {
  const sorted = [...ram].sort((a, b) => a.gpa - b.gpa);
  const first = sorted[0];
  if (!first || first.gpa !== 0 || first.size <= HIGH_MEMORY_START) {
    throw new MemvisorError('invalid_input', 'boot RAM must start at 0 and extend past 1 MiB');
  }
  const entries: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: HIGH_MEMORY_START - EBDA_START, type: E820_RESERVED },
    { addr: HIGH_MEMORY_START, size: first.size - HIGH_MEMORY_START, type: E820_RAM },
  ];
  for (const r of sorted.slice(1)) entries.push({ addr: r.gpa, size: r.size, type: E820_RAM });
  if (entries.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new MemvisorError('invalid_input', `${entries.length} e820 entries do not fit`);
  }
  return entries;
}

/** A parsed kernel image: what to copy where, and what its header asks of the loader. */
interface KernelImage {
  /** Pieces to copy into guest memory; `zero` bytes of zeros follow each piece's data. */
  segments: { gpa: number; data: Uint8Array; zero: number }[];
  /** The 64-bit entry point. */
  entry: number;
  /** First byte past everything the kernel occupies or will occupy while booting. */
  end: number;
  /** The setup header to start the zero page from (bzImage), or null (vmlinux). */
  setupHeader: Uint8Array | null;
  /** Highest address the initrd may occupy, inclusive. */
  initrdAddrMax: number;
  /** Longest command line the kernel accepts, without the terminating NUL. */
  cmdlineSize: number;
}

/**
 * Checks that `image` is a kernel `loadLinux` can boot (a 64-bit bzImage or an ELF vmlinux),
 * without loading it; throws MemvisorError('bad_kernel', ...) saying why not.
 */
export function checkKernelImage(image: Uint8Array): void {
  if (isElf(image)) parseElf(image);
  else parseBzImage(image);
}

/**
 * Loads the kernel, initrd, command line, zero page, GDT and page tables; returns the BSP's
 * entry state (64-bit entry: bzImage at load address + 0x200 per the boot protocol, ELF at
 * e_entry; rsi = zero page). Throws MemvisorError('bad_kernel', ...) on a file that is neither.
 */
export function loadLinux(mem: GuestMemory, cfg: LinuxBootConfig): BootCpuState {
  const e820 = e820Entries(cfg.ram);
  const lowRam = e820[2]!;
  const lowRamEnd = lowRam.addr + lowRam.size;

  const kernel = isElf(cfg.kernel) ? parseElf(cfg.kernel) : parseBzImage(cfg.kernel);
  if (kernel.end > lowRamEnd) {
    throw new MemvisorError(
      'ram_too_small',
      `the kernel needs RAM up to 0x${kernel.end.toString(16)}`,
    );
  }

  const cmdline = new TextEncoder().encode(cfg.cmdline);
  const cmdlineMax = Math.min(CMDLINE_MAX_SIZE - 1, kernel.cmdlineSize);
  if (cmdline.length > cmdlineMax || cmdline.includes(0)) {
    throw new MemvisorError(
      'invalid_input',
      `kernel command line of ${cmdline.length} bytes is over ${cmdlineMax} or holds a NUL`,
    );
  }
  const initrd = cfg.initrd ? placeInitrd(cfg.initrd.length, lowRamEnd, kernel) : null;

  for (const seg of kernel.segments) {
    mem.write(seg.gpa, seg.data);
    mem.fill(seg.gpa + seg.data.length, seg.zero);
  }
  mem.fill(CMDLINE_START, CMDLINE_MAX_SIZE);
  mem.write(CMDLINE_START, cmdline);
  if (cfg.initrd && initrd) mem.write(initrd.gpa, cfg.initrd);
  writeZeroPage(mem, kernel, cmdline.length, initrd, e820);
  writeGdtAndIdt(mem);
  writePageTables(mem);
  return entryState(kernel.entry);
}

/** Page-aligned initrd placement at the top of low RAM, clear of the kernel. */
function placeInitrd(size: number, lowRamEnd: number, kernel: KernelImage): RamRange {
  const top = Math.min(lowRamEnd, LOW_RAM_END_MAX, kernel.initrdAddrMax + 1);
  const gpa = Math.floor((top - size) / PAGE_SIZE_4K) * PAGE_SIZE_4K;
  if (gpa < kernel.end) {
    throw new MemvisorError(
      'ram_too_small',
      `initrd of ${size} bytes does not fit between the kernel and 0x${top.toString(16)}`,
    );
  }
  return { gpa, size };
}

function isElf(image: Uint8Array): boolean {
  return image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46;
}

/** A boot protocol version as boot.rst writes it: 0x020f is "2.15". */
function protocolName(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
}

function badKernel(why: string): MemvisorError {
  return new MemvisorError('bad_kernel', `kernel image: ${why}`);
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Checks a bzImage's setup header; its protected-mode part goes to KERNEL_START. */
function parseBzImage(image: Uint8Array): KernelImage {
  if (image.length < SETUP_HEADER_END_MAX) throw badKernel('neither a bzImage nor an ELF file');
  const dv = view(image);
  if (
    dv.getUint32(SETUP_HEADER.header, true) !== HDRS_MAGIC ||
    dv.getUint16(SETUP_HEADER.boot_flag, true) !== BOOT_FLAG_MAGIC
  ) {
    throw badKernel('neither a bzImage nor an ELF file');
  }
  const version = dv.getUint16(SETUP_HEADER.version, true);
  if (version < MIN_BOOT_PROTOCOL) {
    throw badKernel(
      `boot protocol ${protocolName(version)} is older than ${protocolName(MIN_BOOT_PROTOCOL)}`,
    );
  }
  if ((dv.getUint16(SETUP_HEADER.xloadflags, true) & XLF_KERNEL_64) === 0) {
    throw badKernel('no 64-bit entry point (XLF_KERNEL_64 clear)');
  }
  // The header's own length: the jump at 0x200 skips it, so its end is 0x202 + the jump offset.
  const headerEnd = Math.min(
    SETUP_HEADER.header + image[SETUP_HEADER.jump + 1]!,
    SETUP_HEADER_END_MAX,
  );
  const setupSects = image[SETUP_HEADER.setup_sects]! || 4;
  const pmOffset = (setupSects + 1) * 512;
  if (pmOffset >= image.length) throw badKernel('setup_sects points past the end of the file');

  const payload = image.subarray(pmOffset);
  const initSize = dv.getUint32(SETUP_HEADER.init_size, true);
  return {
    segments: [{ gpa: KERNEL_START, data: payload, zero: 0 }],
    entry: KERNEL_START + STARTUP_64_OFFSET,
    end: KERNEL_START + Math.max(payload.length, initSize),
    setupHeader: image.slice(SETUP_HEADER.setup_sects, headerEnd),
    initrdAddrMax: dv.getUint32(SETUP_HEADER.initrd_addr_max, true),
    cmdlineSize: dv.getUint32(SETUP_HEADER.cmdline_size, true),
  };
}

// ELF64 (System V gABI) header and program header fields.
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const ELF64_EHDR_SIZE = 64;
const ELF64_PHDR_SIZE = 56;
/** Most program headers read; a vmlinux has a handful. */
const ELF_MAX_PHDRS = 64;
/** Start of the x86-64 kernel's virtual mapping (__START_KERNEL_map). */
const START_KERNEL_MAP = 0xffffffff80000000n;

/** Checks a vmlinux; its PT_LOAD segments go to their physical addresses. */
function parseElf(image: Uint8Array): KernelImage {
  if (image.length < ELF64_EHDR_SIZE) throw badKernel('ELF header truncated');
  const dv = view(image);
  if (
    image[4] !== ELFCLASS64 ||
    image[5] !== ELFDATA2LSB ||
    dv.getUint16(0x12, true) !== EM_X86_64
  ) {
    throw badKernel('not a 64-bit little-endian x86-64 ELF file');
  }
  const entry = dv.getBigUint64(0x18, true);
  const phoff = dv.getBigUint64(0x20, true);
  const phentsize = dv.getUint16(0x36, true);
  const phnum = dv.getUint16(0x38, true);
  if (phentsize < ELF64_PHDR_SIZE || phnum === 0 || phnum > ELF_MAX_PHDRS) {
    throw badKernel(`bad program header table (${phnum} entries of ${phentsize} bytes)`);
  }
  if (phoff + BigInt(phnum * phentsize) > BigInt(image.length)) {
    throw badKernel('program header table past the end of the file');
  }

  const segments: KernelImage['segments'] = [];
  let end = 0;
  let entryPhys: number | null = null;
  for (let i = 0; i < phnum; i++) {
    const at = Number(phoff) + i * phentsize;
    if (dv.getUint32(at, true) !== PT_LOAD) continue;
    const offset = dv.getBigUint64(at + 8, true);
    const vaddr = dv.getBigUint64(at + 16, true);
    const paddr = dv.getBigUint64(at + 24, true);
    const filesz = dv.getBigUint64(at + 32, true);
    const memsz = dv.getBigUint64(at + 40, true);
    if (filesz > memsz || offset + filesz > BigInt(image.length)) {
      throw badKernel(`segment ${i} lies past the end of the file`);
    }
    if (paddr < BigInt(HIGH_MEMORY_START) || paddr + memsz > BigInt(LOW_RAM_END_MAX)) {
      throw badKernel(`segment ${i} at 0x${paddr.toString(16)} is outside [1 MiB, 3 GiB)`);
    }
    const gpa = Number(paddr);
    const data = image.subarray(Number(offset), Number(offset + filesz));
    segments.push({ gpa, data, zero: Number(memsz - filesz) });
    end = Math.max(end, gpa + Number(memsz));
    // e_entry is physical in Linux's vmlinux; map a virtual one through its segment anyway.
    const entryAddr = entry >= START_KERNEL_MAP ? entry - vaddr + paddr : entry;
    if (entryAddr >= paddr && entryAddr < paddr + memsz) entryPhys = Number(entryAddr);
  }
  if (entryPhys === null) throw badKernel(`entry 0x${entry.toString(16)} is in no segment`);
  return {
    segments,
    entry: entryPhys,
    end,
    setupHeader: null,
    initrdAddrMax: LOW_RAM_END_MAX - 1,
    cmdlineSize: CMDLINE_MAX_SIZE - 1,
  };
}

/** Fills the zero page: the kernel's setup header (or a minimal one) plus the loader's fields. */
function writeZeroPage(
  mem: GuestMemory,
  kernel: KernelImage,
  cmdlineLength: number,
  initrd: RamRange | null,
  e820: readonly E820Entry[],
): void {
  const zp = new Uint8Array(ZERO_PAGE_SIZE);
  const dv = view(zp);
  if (kernel.setupHeader) {
    zp.set(kernel.setupHeader, BOOT_PARAMS.hdr);
  } else {
    dv.setUint16(SETUP_HEADER.boot_flag, BOOT_FLAG_MAGIC, true);
    dv.setUint32(SETUP_HEADER.header, HDRS_MAGIC, true);
    dv.setUint32(SETUP_HEADER.kernel_alignment, DEFAULT_KERNEL_ALIGNMENT, true);
  }
  dv.setUint8(SETUP_HEADER.type_of_loader, LOADER_TYPE_UNDEFINED);
  dv.setUint8(
    SETUP_HEADER.loadflags,
    dv.getUint8(SETUP_HEADER.loadflags) | LOADED_HIGH | CAN_USE_HEAP,
  );
  dv.setUint16(SETUP_HEADER.heap_end_ptr, HEAP_END, true);
  dv.setUint32(SETUP_HEADER.cmd_line_ptr, CMDLINE_START, true);
  dv.setUint32(BOOT_PARAMS.ext_cmd_line_ptr, 0, true);
  dv.setUint32(SETUP_HEADER.cmdline_size, cmdlineLength + 1, true);
  if (initrd) {
    dv.setUint32(SETUP_HEADER.ramdisk_image, initrd.gpa >>> 0, true);
    dv.setUint32(SETUP_HEADER.ramdisk_size, initrd.size >>> 0, true);
    dv.setUint32(BOOT_PARAMS.ext_ramdisk_image, Math.floor(initrd.gpa / 2 ** 32), true);
    dv.setUint32(BOOT_PARAMS.ext_ramdisk_size, Math.floor(initrd.size / 2 ** 32), true);
  }
  dv.setBigUint64(BOOT_PARAMS.acpi_rsdp_addr, BigInt(RSDP_START), true);
  dv.setUint8(BOOT_PARAMS.e820_entries, e820.length);
  e820.forEach((e, i) => {
    const at = BOOT_PARAMS.e820_table + i * E820_ENTRY_SIZE;
    dv.setBigUint64(at, BigInt(e.addr), true);
    dv.setBigUint64(at + 8, BigInt(e.size), true);
    dv.setUint32(at + 16, e.type, true);
  });
  mem.write(ZERO_PAGE_START, zp);
}

function writeGdtAndIdt(mem: GuestMemory): void {
  BOOT_GDT.forEach((entry, i) => mem.writeU64(BOOT_GDT_START + i * 8, entry));
  mem.writeU64(BOOT_IDT_START, 0n);
}

/** Identity-maps [0, 4 GiB) with 2 MiB pages: PML4[0] -> PDPT[0..3] -> 4 page directories. */
function writePageTables(mem: GuestMemory): void {
  const flags = PTE_PRESENT | PTE_WRITABLE;
  mem.fill(PML4_START, PAGE_SIZE_4K);
  mem.fill(PDPTE_START, PAGE_SIZE_4K);
  mem.writeU64(PML4_START, BigInt(PDPTE_START | flags));
  const pd = new Uint8Array(PAGE_SIZE_4K * PDE_COUNT);
  const dv = view(pd);
  for (let i = 0; i < PDE_COUNT; i++) {
    mem.writeU64(PDPTE_START + i * 8, BigInt((PDE_START + i * PAGE_SIZE_4K) | flags));
  }
  for (let j = 0; j < PDE_COUNT * PAGE_TABLE_ENTRIES; j++) {
    dv.setBigUint64(j * 8, BigInt(j * PAGE_SIZE_2M) | BigInt(flags | PDE_PAGE_SIZE), true);
  }
  mem.write(PDE_START, pd);
}

function entryState(rip: number): BootCpuState {
  const data = segmentFromGdt(BOOT_GDT[2]!, BOOT_DATA_SELECTOR);
  return {
    rip,
    rsp: BOOT_STACK_POINTER,
    rbp: BOOT_STACK_POINTER,
    rsi: ZERO_PAGE_START,
    rflags: RFLAGS_RESERVED,
    cr0: (X86_CR0_PE | X86_CR0_ET | X86_CR0_PG) >>> 0,
    cr3: PML4_START,
    cr4: X86_CR4_PAE,
    efer: EFER_LME | EFER_LMA,
    cs: segmentFromGdt(BOOT_GDT[1]!, BOOT_CODE_SELECTOR),
    ds: { ...data },
    es: { ...data },
    fs: { ...data },
    gs: { ...data },
    ss: { ...data },
    tr: segmentFromGdt(BOOT_GDT[3]!, BOOT_TSS_SELECTOR),
    // The architectural reset value of LDTR: an empty LDT.
    ldt: {
      base: 0,
      limit: 0xffff,
      selector: 0,
      type: 2,
      present: 1,
      dpl: 0,
      db: 0,
      s: 0,
      l: 0,
      g: 0,
      avl: 0,
    },
    gdt: { base: BOOT_GDT_START, limit: BOOT_GDT.length * 8 - 1 },
    idt: { base: BOOT_IDT_START, limit: 8 - 1 },
  };
}
