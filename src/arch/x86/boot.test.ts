import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferBacking } from '../../memory/backing.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import { MemvisorError } from '../../util/errors.js';
import {
  BOOT_PARAMS,
  E820_RAM,
  E820_RESERVED,
  SETUP_HEADER,
  bootRamRanges,
  e820Entries,
  loadLinux,
} from './boot.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const ZERO_PAGE = 0x7000;

function memory(size: number): GuestMemory {
  return new GuestMemory([{ name: 'ram', gpa: 0, size, backing: new BufferBacking(size) }]);
}

/** Setup-header values read from Debian bookworm's bzImage (linux-image-6.1.0-57-amd64). */
const DEBIAN_HEADER = {
  setupSects: 0x27,
  jumpOffset: 0x6a,
  version: 0x020f,
  loadflags: 0x01,
  initrdAddrMax: 0x7fffffff,
  kernelAlignment: 0x200000,
  xloadflags: 0x7f,
  cmdlineSize: 0x7ff,
  initSize: 0x3f98000,
};

/** A bzImage with a real-shaped setup header and `payload` as its protected-mode part. */
function bzImage(payload: Uint8Array, edit?: (dv: DataView) => void): Uint8Array {
  const setupBytes = (DEBIAN_HEADER.setupSects + 1) * 512;
  const image = new Uint8Array(setupBytes + payload.length);
  const dv = new DataView(image.buffer);
  dv.setUint8(SETUP_HEADER.setup_sects, DEBIAN_HEADER.setupSects);
  dv.setUint16(SETUP_HEADER.boot_flag, 0xaa55, true);
  dv.setUint8(SETUP_HEADER.jump, 0xeb);
  dv.setUint8(SETUP_HEADER.jump + 1, DEBIAN_HEADER.jumpOffset);
  dv.setUint32(SETUP_HEADER.header, 0x53726448, true);
  dv.setUint16(SETUP_HEADER.version, DEBIAN_HEADER.version, true);
  dv.setUint8(SETUP_HEADER.loadflags, DEBIAN_HEADER.loadflags);
  dv.setUint32(SETUP_HEADER.code32_start, 0x100000, true);
  dv.setUint32(SETUP_HEADER.initrd_addr_max, DEBIAN_HEADER.initrdAddrMax, true);
  dv.setUint32(SETUP_HEADER.kernel_alignment, DEBIAN_HEADER.kernelAlignment, true);
  dv.setUint8(SETUP_HEADER.relocatable_kernel, 1);
  dv.setUint16(SETUP_HEADER.xloadflags, DEBIAN_HEADER.xloadflags, true);
  dv.setUint32(SETUP_HEADER.cmdline_size, DEBIAN_HEADER.cmdlineSize, true);
  dv.setBigUint64(SETUP_HEADER.pref_address, 0x1000000n, true);
  dv.setUint32(SETUP_HEADER.init_size, DEBIAN_HEADER.initSize, true);
  // A byte past the header end (0x202 + 0x6a) that must not reach the zero page.
  dv.setUint8(0x26c, 0x5a);
  edit?.(dv);
  image.set(payload, setupBytes);
  return image;
}

function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 31 + seed) & 0xff);
}

function hasCode(code: string) {
  return (err: unknown) => err instanceof MemvisorError && err.code === code;
}

/** Walks the 4-level page tables in `mem` from `cr3`; returns the physical address or null. */
function translate(mem: GuestMemory, cr3: number, va: number): number | null {
  const index = (level: number) => Math.floor(va / 2 ** (12 + 9 * level)) % 512;
  const pml4e = mem.readU64(cr3 + index(3) * 8);
  if ((pml4e & 1n) === 0n) return null;
  const pdpte = mem.readU64(Number(pml4e & 0xffffffffff000n) + index(2) * 8);
  if ((pdpte & 1n) === 0n) return null;
  assert.equal(pdpte & 0x80n, 0n, 'no 1 GiB pages expected');
  const pde = mem.readU64(Number(pdpte & 0xffffffffff000n) + index(1) * 8);
  if ((pde & 1n) === 0n) return null;
  assert.equal(pde & 0x83n, 0x83n, '2 MiB page, present and writable');
  return Number(pde & 0xfffffffe00000n) + (va % (2 * MiB));
}

describe('bootRamRanges', () => {
  it('keeps small guests below the hole', () => {
    assert.deepEqual(bootRamRanges(512 * MiB), [{ gpa: 0, size: 512 * MiB }]);
    assert.deepEqual(bootRamRanges(3 * GiB), [{ gpa: 0, size: 3 * GiB }]);
  });

  it('continues above 4 GiB past 3 GiB', () => {
    assert.deepEqual(bootRamRanges(5 * GiB), [
      { gpa: 0, size: 3 * GiB },
      { gpa: 4 * GiB, size: 2 * GiB },
    ]);
  });

  it('rejects a size that is not positive', () => {
    assert.throws(() => bootRamRanges(0), hasCode('invalid_input'));
  });
});

describe('e820Entries', () => {
  it('reserves the legacy area and lists high RAM', () => {
    assert.deepEqual(e820Entries(bootRamRanges(6 * GiB)), [
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x9fc00, size: 0x60400, type: E820_RESERVED },
      { addr: 0x100000, size: 3 * GiB - MiB, type: E820_RAM },
      { addr: 4 * GiB, size: 3 * GiB, type: E820_RAM },
    ]);
  });

  it('needs RAM from 0 past 1 MiB', () => {
    assert.throws(() => e820Entries([{ gpa: 4096, size: GiB }]), hasCode('invalid_input'));
    assert.throws(() => e820Entries([{ gpa: 0, size: MiB }]), hasCode('invalid_input'));
  });
});

describe('loadLinux with a bzImage', () => {
  const ramSize = 128 * MiB;
  const payload = pattern(3 * MiB + 123, 7);
  const initrd = pattern(5 * MiB + 17, 3);
  const cmdline = 'console=ttyS0 reboot=acpi panic=1 pci=off';

  function boot() {
    const mem = memory(ramSize);
    const image = bzImage(payload);
    const state = loadLinux(mem, { kernel: image, initrd, cmdline, ram: bootRamRanges(ramSize) });
    return { mem, image, state };
  }

  it('places the protected-mode kernel at 1 MiB and enters at +0x200', () => {
    const { mem, state } = boot();
    assert.deepEqual(mem.read(0x100000, payload.length), payload);
    assert.equal(state.rip, 0x100200);
    assert.equal(state.rsi, ZERO_PAGE);
    assert.equal(state.rsp, 0x8ff0);
    assert.equal(state.rbp, 0x8ff0);
    assert.equal(state.rflags, 2);
  });

  it('copies the setup header up to its end and sets the loader fields', () => {
    const { mem, image } = boot();
    const at = (off: number) => ZERO_PAGE + off;
    // Unchanged header fields read back from the kernel's copy.
    assert.equal(mem.readU8(at(0x1f1)), DEBIAN_HEADER.setupSects);
    assert.equal(mem.readU16(at(0x1fe)), 0xaa55);
    assert.equal(mem.readU32(at(0x202)), 0x53726448);
    assert.equal(mem.readU16(at(0x206)), 0x020f);
    assert.equal(mem.readU16(at(0x236)), 0x7f);
    assert.equal(mem.readU32(at(0x260)), DEBIAN_HEADER.initSize);
    assert.deepEqual(mem.read(at(0x230), 8), image.subarray(0x230, 0x238));
    assert.equal(mem.readU8(at(0x26c)), 0, 'bytes past the header end are not copied');
    // Loader-written fields.
    assert.equal(mem.readU8(at(0x210)), 0xff);
    assert.equal(mem.readU8(at(0x211)), 0x81);
    assert.equal(mem.readU16(at(0x224)), 0xfe00);
    assert.equal(mem.readU32(at(0x228)), 0x20000);
    assert.equal(mem.readU32(at(0x238)), cmdline.length + 1);
    assert.equal(mem.readU32(at(BOOT_PARAMS.ext_cmd_line_ptr)), 0);
    assert.equal(mem.readU64(at(0x070)), 0xe0000n);
  });

  it('writes the command line NUL-terminated at 0x20000', () => {
    const { mem } = boot();
    const bytes = mem.read(0x20000, cmdline.length + 1);
    assert.equal(new TextDecoder().decode(bytes.subarray(0, -1)), cmdline);
    assert.equal(bytes[cmdline.length], 0);
  });

  it('places the initrd page-aligned at the top of low RAM', () => {
    const { mem } = boot();
    const expected = Math.floor((ramSize - initrd.length) / 4096) * 4096;
    assert.equal(mem.readU32(ZERO_PAGE + 0x218), expected);
    assert.equal(mem.readU32(ZERO_PAGE + 0x21c), initrd.length);
    assert.equal(mem.readU32(ZERO_PAGE + 0x0c0), 0);
    assert.equal(mem.readU32(ZERO_PAGE + 0x0c4), 0);
    assert.deepEqual(mem.read(expected, initrd.length), initrd);
  });

  it('keeps the initrd below initrd_addr_max', () => {
    const mem = memory(ramSize);
    const image = bzImage(payload, (dv) => dv.setUint32(0x22c, 0x6000000 - 1, true));
    loadLinux(mem, { kernel: image, initrd, cmdline, ram: bootRamRanges(ramSize) });
    const gpa = mem.readU32(ZERO_PAGE + 0x218);
    assert.equal(gpa, Math.floor((0x6000000 - initrd.length) / 4096) * 4096);
    assert.ok(gpa + initrd.length <= 0x6000000);
  });

  it('writes the e820 table', () => {
    const { mem } = boot();
    assert.equal(mem.readU8(ZERO_PAGE + 0x1e8), 3);
    const entry = (i: number) => {
      const at = ZERO_PAGE + 0x2d0 + i * 20;
      return [mem.readU64(at), mem.readU64(at + 8), mem.readU32(at + 16)];
    };
    assert.deepEqual(entry(0), [0n, 0x9fc00n, 1]);
    assert.deepEqual(entry(1), [0x9fc00n, 0x60400n, 2]);
    assert.deepEqual(entry(2), [0x100000n, BigInt(ramSize - MiB), 1]);
    assert.deepEqual(entry(3), [0n, 0n, 0]);
  });

  it('builds a GDT with 64-bit code, data and TSS descriptors', () => {
    const { mem, state } = boot();
    assert.equal(mem.readU64(0x500), 0n);
    assert.equal(mem.readU64(0x508), 0x00af9b000000ffffn);
    assert.equal(mem.readU64(0x510), 0x00cf93000000ffffn);
    assert.equal(mem.readU64(0x518), 0x008f8b000000ffffn);
    assert.deepEqual(state.gdt, { base: 0x500, limit: 31 });
    assert.deepEqual(state.idt, { base: 0x520, limit: 7 });
    assert.equal(mem.readU64(0x520), 0n);
    assert.deepEqual(state.cs, {
      base: 0,
      limit: 0xffffffff,
      selector: 8,
      type: 0xb,
      present: 1,
      dpl: 0,
      db: 0,
      s: 1,
      l: 1,
      g: 1,
      avl: 0,
    });
    for (const seg of [state.ds, state.es, state.fs, state.gs, state.ss]) {
      assert.deepEqual(seg, { ...state.cs, selector: 0x10, type: 3, db: 1, l: 0 });
    }
    assert.deepEqual(state.tr, { ...state.cs, selector: 0x18, type: 0xb, s: 0, l: 0 });
    assert.equal(state.ldt.type, 2);
    assert.equal(state.ldt.selector, 0);
  });

  it('enables long mode with an identity map of the first 4 GiB', () => {
    const { mem, state } = boot();
    assert.equal(state.cr0, 0x80000011);
    assert.equal(state.cr3, 0x9000);
    assert.equal(state.cr4, 0x20);
    assert.equal(state.efer, 0x500);
    assert.equal(mem.readU64(0x9000), 0xa003n);
    assert.equal(mem.readU64(0x9008), 0n);
    for (let i = 0; i < 4; i++)
      assert.equal(mem.readU64(0xa000 + i * 8), BigInt(0xb003 + i * 0x1000));
    for (const va of [0, 0x7000, 0x1234567, 0x7fffffff, 0xc0000000, 0xfee00123, 0xffffffff]) {
      assert.equal(translate(mem, state.cr3, va), va, `va 0x${va.toString(16)}`);
    }
    assert.equal(translate(mem, state.cr3, 4 * GiB), null);
  });

  it('refuses images that are not a usable bzImage', () => {
    const load = (kernel: Uint8Array) =>
      loadLinux(memory(ramSize), { kernel, cmdline, ram: bootRamRanges(ramSize) });
    assert.throws(() => load(new Uint8Array(8192)), hasCode('bad_kernel'));
    assert.throws(() => load(new Uint8Array(16)), hasCode('bad_kernel'));
    assert.throws(
      () => load(bzImage(payload, (dv) => dv.setUint16(0x206, 0x0205, true))),
      (e: unknown) => hasCode('bad_kernel')(e) && /2\.05/.test((e as Error).message),
    );
    assert.throws(
      () => load(bzImage(payload, (dv) => dv.setUint16(0x236, 0x7e, true))),
      (e: unknown) => hasCode('bad_kernel')(e) && /XLF_KERNEL_64/.test((e as Error).message),
    );
  });

  it('refuses a command line longer than the kernel takes', () => {
    const mem = memory(ramSize);
    const kernel = bzImage(payload, (dv) => dv.setUint32(0x238, 15, true));
    const ram = bootRamRanges(ramSize);
    assert.throws(
      () => loadLinux(mem, { kernel, cmdline: 'x'.repeat(16), ram }),
      hasCode('invalid_input'),
    );
    loadLinux(mem, { kernel, cmdline: 'x'.repeat(15), ram });
    assert.equal(mem.readU8(0x20000 + 14), 0x78);
    assert.equal(mem.readU8(0x20000 + 15), 0);
  });

  it('refuses an initrd that would overlap the kernel', () => {
    const small = 96 * MiB;
    const mem = memory(small);
    const big = new Uint8Array(small - 0x100000 - DEBIAN_HEADER.initSize + 4096);
    assert.throws(
      () =>
        loadLinux(mem, {
          kernel: bzImage(payload),
          initrd: big,
          cmdline,
          ram: bootRamRanges(small),
        }),
      hasCode('ram_too_small'),
    );
  });
});

/** An ELF64 x86-64 executable with the given PT_LOAD segments. */
function elf(
  entry: bigint,
  segments: { paddr: number; vaddr: bigint; data: Uint8Array; memsz: number }[],
): Uint8Array {
  const phoff = 64;
  let offset = phoff + segments.length * 56;
  const size = offset + segments.reduce((n, s) => n + s.data.length, 0);
  const image = new Uint8Array(size);
  const dv = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  dv.setUint16(0x10, 2, true);
  dv.setUint16(0x12, 62, true);
  dv.setBigUint64(0x18, entry, true);
  dv.setBigUint64(0x20, BigInt(phoff), true);
  dv.setUint16(0x36, 56, true);
  dv.setUint16(0x38, segments.length, true);
  segments.forEach((s, i) => {
    const at = phoff + i * 56;
    dv.setUint32(at, 1, true);
    dv.setBigUint64(at + 8, BigInt(offset), true);
    dv.setBigUint64(at + 16, s.vaddr, true);
    dv.setBigUint64(at + 24, BigInt(s.paddr), true);
    dv.setBigUint64(at + 32, BigInt(s.data.length), true);
    dv.setBigUint64(at + 40, BigInt(s.memsz), true);
    image.set(s.data, offset);
    offset += s.data.length;
  });
  return image;
}

describe('loadLinux with an ELF vmlinux', () => {
  const text = pattern(0x3000, 1);
  const data = pattern(0x1800, 9);
  const segments = [
    { paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: text, memsz: text.length },
    { paddr: 0x1200000, vaddr: 0xffffffff81200000n, data, memsz: 0x4000 },
  ];
  const ram = bootRamRanges(64 * MiB);

  it('loads segments at their physical addresses and zeroes the rest of memsz', () => {
    const mem = memory(64 * MiB);
    mem.fill(0x1200000, 0x4000, 0xaa);
    const state = loadLinux(mem, { kernel: elf(0x1000000n, segments), cmdline: 'quiet', ram });
    assert.deepEqual(mem.read(0x1000000, text.length), text);
    assert.deepEqual(mem.read(0x1200000, data.length), data);
    assert.deepEqual(
      mem.read(0x1200000 + data.length, 0x4000 - data.length),
      new Uint8Array(0x2800),
    );
    assert.equal(state.rip, 0x1000000);
  });

  it('maps a virtual entry point through its segment', () => {
    const mem = memory(64 * MiB);
    const state = loadLinux(mem, { kernel: elf(0xffffffff81000040n, segments), cmdline: '', ram });
    assert.equal(state.rip, 0x1000040);
  });

  it('writes a minimal setup header for the kernel', () => {
    const mem = memory(64 * MiB);
    const initrd = pattern(4096 * 3 + 5, 4);
    loadLinux(mem, { kernel: elf(0x1000000n, segments), initrd, cmdline: 'quiet', ram });
    assert.equal(mem.readU16(ZERO_PAGE + 0x1fe), 0xaa55);
    assert.equal(mem.readU32(ZERO_PAGE + 0x202), 0x53726448);
    assert.equal(mem.readU8(ZERO_PAGE + 0x210), 0xff);
    assert.equal(mem.readU32(ZERO_PAGE + 0x228), 0x20000);
    assert.equal(mem.readU32(ZERO_PAGE + 0x218), 64 * MiB - 4 * 4096);
    assert.equal(mem.readU64(ZERO_PAGE + 0x070), 0xe0000n);
  });

  it('refuses a kernel larger than low RAM before writing anything', () => {
    const mem = memory(0x1200000 + 0x2000);
    const kernel = elf(0x1000000n, segments);
    const ram = bootRamRanges(0x1200000 + 0x2000);
    assert.throws(() => loadLinux(mem, { kernel, cmdline: '', ram }), hasCode('ram_too_small'));
    assert.deepEqual(mem.read(0x1000000, 16), new Uint8Array(16));
    assert.equal(mem.readU32(ZERO_PAGE + 0x202), 0);
  });

  it('refuses malformed ELF files', () => {
    const load = (kernel: Uint8Array) => loadLinux(memory(64 * MiB), { kernel, cmdline: '', ram });
    const good = elf(0x1000000n, segments);
    const edit = (f: (dv: DataView) => void) => {
      const copy = good.slice();
      f(new DataView(copy.buffer));
      return copy;
    };
    assert.throws(() => load(edit((dv) => dv.setUint8(4, 1))), hasCode('bad_kernel'));
    assert.throws(() => load(edit((dv) => dv.setUint16(0x12, 3, true))), hasCode('bad_kernel'));
    assert.throws(() => load(edit((dv) => dv.setUint16(0x38, 500, true))), hasCode('bad_kernel'));
    assert.throws(
      () => load(edit((dv) => dv.setBigUint64(0x18, 0x5000000n, true))),
      hasCode('bad_kernel'),
    );
    assert.throws(
      () => load(edit((dv) => dv.setBigUint64(64 + 32, 1n << 40n, true))),
      hasCode('bad_kernel'),
    );
    assert.throws(() => load(good.subarray(0, 40)), hasCode('bad_kernel'));
  });
});
