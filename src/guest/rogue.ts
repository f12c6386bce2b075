/**
 * A deliberately misbehaving guest for tests and the benchmark: a tiny ELF kernel that, entered
 * in 64-bit mode with the boot page tables (PML4 0x9000, PDPT 0xa000), maps the 1 GiB around a
 * target address with a 1 GiB page, then `touches` times reads 8 bytes of a page and writes
 * them back 8 bytes further on, moving one page up each time, and finally powers off through
 * the ACPI sleep control port. Pointed at an unplugged virtio-mem block, every read and every
 * write is an access the VMM must catch: 2 × `touches` in all.
 */
import { MemvisorError } from '../util/errors.js';

const LOAD_ADDR = 0x10_0000;
const PDPT_ADDR = 0xa000;
const GiB = 2 ** 30;
const ELF_HEADER = 64;
const PROGRAM_HEADER = 56;
/** ACPI sleep control register and the value that means S5 (see src/arch/x86/layout.ts). */
const SLEEP_CONTROL_PORT = 0x600;
const SLEEP_S5 = 0x34;

function u64(value: number): number[] {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return [...b];
}

function u32(value: number): number[] {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value);
  return [...b];
}

function u16(value: number): number[] {
  return [value & 0xff, value >> 8];
}

/** The machine code; see the module comment for what it does. */
function code(target: number, touches: number): number[] {
  const gigabyte = Math.floor(target / GiB);
  return [
    ...[0x48, 0xb8, ...u64(gigabyte * GiB + 0x83)], // mov rax, 1 GiB page | PS | RW | P
    ...[0x48, 0xa3, ...u64(PDPT_ADDR + gigabyte * 8)], // mov [pdpt + 8 * index], rax
    ...[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8], // mov rax, cr3; mov cr3, rax (flush the TLB)
    ...[0x48, 0xbf, ...u64(target)], // mov rdi, target
    ...[0xb9, ...u32(touches)], // mov ecx, touches
    // loop:
    ...[0x48, 0x8b, 0x07], // mov rax, [rdi]
    ...[0x48, 0x89, 0x47, 0x08], // mov [rdi + 8], rax
    ...[0x48, 0x81, 0xc7, ...u32(0x1000)], // add rdi, 4096
    ...[0xff, 0xc9], // dec ecx
    ...[0x75, 0xee], // jnz loop (-18)
    ...[0x66, 0xba, ...u16(SLEEP_CONTROL_PORT)], // mov dx, port
    ...[0xb0, SLEEP_S5], // mov al, S5 | SLP_EN
    0xee, // out dx, al
    0xf4, // hlt
    ...[0xeb, 0xfd], // jmp hlt
  ];
}

/**
 * Builds the rogue kernel as an ELF64 executable loaded at 1 MiB. `target` must be 8-byte
 * aligned, and the `touches` pages from it must lie within one 1 GiB page at or above 4 GiB
 * (the boot page tables map the first 4 GiB themselves).
 */
export function rogueKernel(target: number, touches: number): Uint8Array {
  if (target < 4 * GiB || target % 8 !== 0 || touches < 1 || touches > 0xffff) {
    throw new MemvisorError(
      'invalid_input',
      'rogue guest: target >= 4 GiB, aligned; 1..65535 touches',
    );
  }
  if (Math.floor((target + touches * 0x1000) / GiB) !== Math.floor(target / GiB)) {
    throw new MemvisorError(
      'invalid_input',
      'rogue guest: the touched pages cross a 1 GiB boundary',
    );
  }
  const text = code(target, touches);
  const entry = LOAD_ADDR + ELF_HEADER + PROGRAM_HEADER;
  const total = ELF_HEADER + PROGRAM_HEADER + text.length;
  const header = [
    ...[0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, ...new Array(8).fill(0)], // ELF64, LE, SysV
    ...u16(2), // ET_EXEC
    ...u16(0x3e), // EM_X86_64
    ...u32(1), // EV_CURRENT
    ...u64(entry),
    ...u64(ELF_HEADER), // e_phoff
    ...u64(0), // e_shoff
    ...u32(0), // e_flags
    ...u16(ELF_HEADER),
    ...u16(PROGRAM_HEADER),
    ...u16(1), // e_phnum
    ...u16(64), // e_shentsize
    ...u16(0), // e_shnum
    ...u16(0), // e_shstrndx
  ];
  const program = [
    ...u32(1), // PT_LOAD
    ...u32(5), // PF_R | PF_X
    ...u64(0), // p_offset
    ...u64(LOAD_ADDR), // p_vaddr
    ...u64(LOAD_ADDR), // p_paddr
    ...u64(total), // p_filesz
    ...u64(total), // p_memsz
    ...u64(0x1000), // p_align
  ];
  return Uint8Array.from([...header, ...program, ...text]);
}
