/**
 * A small encoder for ACPI Machine Language (ACPI 6.5, chapter 20) and the resource
 * descriptors of a ResourceTemplate (chapter 6.4): just the constructs memvisor's DSDT needs.
 * Each function returns the encoded bytes of one term; callers concatenate them.
 */
import { MemvisorError } from '../../../util/errors.js';

// Opcodes (ACPI 6.5, 20.3).
export const ZERO_OP = 0x00;
export const ONE_OP = 0x01;
export const NAME_OP = 0x08;
export const BYTE_PREFIX = 0x0a;
export const WORD_PREFIX = 0x0b;
export const DWORD_PREFIX = 0x0c;
export const STRING_PREFIX = 0x0d;
export const QWORD_PREFIX = 0x0e;
export const SCOPE_OP = 0x10;
export const BUFFER_OP = 0x11;
export const PACKAGE_OP = 0x12;
export const METHOD_OP = 0x14;
export const DUAL_NAME_PREFIX = 0x2e;
export const MULTI_NAME_PREFIX = 0x2f;
export const EXT_OP_PREFIX = 0x5b;
export const DEVICE_OP = 0x82;
export const ROOT_CHAR = 0x5c;
export const PARENT_PREFIX_CHAR = 0x5e;
export const RETURN_OP = 0xa4;
export const ONES_OP = 0xff;

// Resource descriptor tags (ACPI 6.5, 6.4.2 and 6.4.3).
export const IO_PORT_DESCRIPTOR = 0x47;
export const END_TAG_DESCRIPTOR = 0x79;
export const MEMORY32_FIXED_DESCRIPTOR = 0x86;
export const EXTENDED_INTERRUPT_DESCRIPTOR = 0x89;
export const QWORD_ADDRESS_DESCRIPTOR = 0x8a;
/** Length field of a QWord Address Space Descriptor: the bytes after its 3-byte header. */
const QWORD_ADDRESS_LENGTH = 43;

/** Largest value a PkgLength can encode (28 bits). */
export const PKG_LENGTH_MAX = 2 ** 28 - 1;

function amlError(message: string): MemvisorError {
  return new MemvisorError('aml_encoding', message);
}

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function le(value: number | bigint, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let v = BigInt(value);
  for (let i = 0; i < bytes; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/**
 * PkgLength for `contentLength` bytes following it: one byte up to a total of 63, else a lead
 * byte holding the byte count and the low nibble, then the rest of the total 8 bits at a time.
 * The encoded total counts the PkgLength bytes themselves.
 */
export function pkgLength(contentLength: number): Uint8Array {
  if (contentLength + 1 < 0x40) return Uint8Array.of(contentLength + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0xf);
      for (let i = 1; i <= extra; i++) out[i] = Math.floor(total / 2 ** (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw amlError(`package of ${contentLength} bytes is beyond the largest PkgLength`);
}

/** `opcode` PkgLength `body`: the shape of every AML term that encloses others. */
function withPkgLength(opcode: readonly number[], body: readonly Uint8Array[]): Uint8Array {
  const content = concat(body);
  return concat([Uint8Array.from(opcode), pkgLength(content.length), content]);
}

const NAME_SEG = /^[A-Z_][A-Z0-9_]{0,3}$/;

/** One NameSeg, padded to four characters with '_'. */
export function nameSeg(seg: string): Uint8Array {
  if (!NAME_SEG.test(seg)) throw amlError(`"${seg}" is not an ACPI name segment`);
  return new TextEncoder().encode(seg.padEnd(4, '_'));
}

/** A NameString: optional '\' or '^' prefixes, then dot-separated segments ("\_SB.VR00"). */
export function nameString(path: string): Uint8Array {
  let rest = path;
  const prefix: number[] = [];
  if (rest.startsWith('\\')) {
    prefix.push(ROOT_CHAR);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith('^')) {
      prefix.push(PARENT_PREFIX_CHAR);
      rest = rest.slice(1);
    }
  }
  const segs = rest === '' ? [] : rest.split('.').map(nameSeg);
  let head: number[];
  if (segs.length === 0) head = [ZERO_OP];
  else if (segs.length === 1) head = [];
  else if (segs.length === 2) head = [DUAL_NAME_PREFIX];
  else if (segs.length <= 255) head = [MULTI_NAME_PREFIX, segs.length];
  else throw amlError(`name path "${path}" has too many segments`);
  return concat([Uint8Array.from([...prefix, ...head]), ...segs]);
}

/** An integer in its shortest encoding: Zero, One, Ones, or a Byte/Word/DWord/QWord const. */
export function integer(value: number | bigint): Uint8Array {
  const v = BigInt(value);
  if (v < 0n || v > 0xffffffffffffffffn) throw amlError(`${value} is not a 64-bit unsigned value`);
  if (v === 0n) return Uint8Array.of(ZERO_OP);
  if (v === 1n) return Uint8Array.of(ONE_OP);
  if (v === 0xffffffffffffffffn) return Uint8Array.of(ONES_OP);
  if (v <= 0xffn) return Uint8Array.of(BYTE_PREFIX, Number(v));
  if (v <= 0xffffn) return concat([Uint8Array.of(WORD_PREFIX), le(v, 2)]);
  if (v <= 0xffffffffn) return concat([Uint8Array.of(DWORD_PREFIX), le(v, 4)]);
  return concat([Uint8Array.of(QWORD_PREFIX), le(v, 8)]);
}

/** A String constant: ASCII without NUL, NUL-terminated. */
export function string(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.some((b) => b === 0 || b > 0x7f)) throw amlError(`"${text}" is not an AML string`);
  return concat([Uint8Array.of(STRING_PREFIX), bytes, Uint8Array.of(0)]);
}

/**
 * A compressed EISA id ("PNP0501") as the DWord AML expects: three letters of five bits each
 * and four hex digits, stored big-endian.
 */
export function eisaId(id: string): Uint8Array {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw amlError(`"${id}" is not an EISA id`);
  const letter = (i: number) => id.charCodeAt(i) - 0x40;
  const vendor = (letter(0) << 10) | (letter(1) << 5) | letter(2);
  const product = Number.parseInt(id.slice(3), 16);
  const bytes = Uint8Array.of(vendor >> 8, vendor & 0xff, product >> 8, product & 0xff);
  return integer(new DataView(bytes.buffer).getUint32(0, true));
}

/** A Buffer of `bytes` with its size as the BufferSize. */
export function buffer(bytes: Uint8Array): Uint8Array {
  return withPkgLength([BUFFER_OP], [integer(bytes.length), bytes]);
}

/** A Package of up to 255 already-encoded elements. */
export function pkg(elements: readonly Uint8Array[]): Uint8Array {
  if (elements.length > 255) throw amlError(`package of ${elements.length} elements`);
  return withPkgLength([PACKAGE_OP], [Uint8Array.of(elements.length), ...elements]);
}

/** Name(path, value). */
export function name(path: string, value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(NAME_OP), nameString(path), value]);
}

/** Scope(path) { body }. */
export function scope(path: string, body: readonly Uint8Array[]): Uint8Array {
  return withPkgLength([SCOPE_OP], [nameString(path), ...body]);
}

/** Device(path) { body }. */
export function device(path: string, body: readonly Uint8Array[]): Uint8Array {
  return withPkgLength([EXT_OP_PREFIX, DEVICE_OP], [nameString(path), ...body]);
}

/** Method(path, argCount, Serialized|NotSerialized) { body }, sync level 0. */
export function method(
  path: string,
  argCount: number,
  serialized: boolean,
  body: readonly Uint8Array[],
): Uint8Array {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) {
    throw amlError(`method ${path} with ${argCount} arguments`);
  }
  const flags = argCount | (serialized ? 1 << 3 : 0);
  return withPkgLength([METHOD_OP], [nameString(path), Uint8Array.of(flags), ...body]);
}

/** Return(value). */
export function returnTerm(value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(RETURN_OP), value]);
}

function checkRange(what: string, value: number | bigint, max: bigint): void {
  const v = BigInt(value);
  if (v < 0n || v > max) throw amlError(`${what} ${value} out of range`);
}

/** Memory32Fixed(ReadWrite|ReadOnly, base, length). */
export function memory32Fixed(base: number, length: number, writable = true): Uint8Array {
  checkRange('Memory32Fixed base', base, 0xffffffffn);
  checkRange('Memory32Fixed length', length, 0xffffffffn);
  return concat([
    Uint8Array.of(MEMORY32_FIXED_DESCRIPTOR, 9, 0, writable ? 1 : 0),
    le(base, 4),
    le(length, 4),
  ]);
}

/** IO(Decode16|Decode10, min, max, alignment, length). */
export function io(
  min: number,
  max: number,
  alignment: number,
  length: number,
  decode16 = true,
): Uint8Array {
  checkRange('IO minimum', min, 0xffffn);
  checkRange('IO maximum', max, 0xffffn);
  checkRange('IO alignment', alignment, 0xffn);
  checkRange('IO length', length, 0xffn);
  return concat([
    Uint8Array.of(IO_PORT_DESCRIPTOR, decode16 ? 1 : 0),
    le(min, 2),
    le(max, 2),
    Uint8Array.of(alignment, length),
  ]);
}

/** Settings of an Interrupt() (Extended Interrupt) descriptor. */
export interface InterruptFlags {
  /** ResourceConsumer (true) or ResourceProducer. */
  consumer: boolean;
  /** Edge (true) or Level triggered. */
  edge: boolean;
  /** ActiveLow (true) or ActiveHigh. */
  activeLow: boolean;
  /** Shared (true) or Exclusive. */
  shared: boolean;
  /** Wake capable. */
  wake?: boolean;
}

/** Interrupt(consumer, trigger, polarity, sharing) { gsi, ... }. */
export function extendedInterrupt(flags: InterruptFlags, gsis: readonly number[]): Uint8Array {
  if (gsis.length === 0 || gsis.length > 255) throw amlError(`${gsis.length} interrupts`);
  for (const gsi of gsis) checkRange('interrupt', gsi, 0xffffffffn);
  const bits =
    (flags.consumer ? 1 : 0) |
    (flags.edge ? 1 << 1 : 0) |
    (flags.activeLow ? 1 << 2 : 0) |
    (flags.shared ? 1 << 3 : 0) |
    (flags.wake ? 1 << 4 : 0);
  const length = 2 + 4 * gsis.length;
  return concat([
    Uint8Array.of(EXTENDED_INTERRUPT_DESCRIPTOR, length & 0xff, length >> 8, bits, gsis.length),
    ...gsis.map((g) => le(g, 4)),
  ]);
}

/** Cacheability (_MEM) of a QWordMemory range. */
export type MemoryCacheability = 'non-cacheable' | 'cacheable' | 'write-combining' | 'prefetchable';

/**
 * QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite,
 * granularity 0, base, base + length - 1, translation 0, length).
 */
export function qwordMemory(
  base: bigint,
  length: bigint,
  cacheability: MemoryCacheability = 'cacheable',
): Uint8Array {
  if (length <= 0n) throw amlError('QWordMemory of no length');
  checkRange('QWordMemory end', base + length - 1n, 0xffffffffffffffffn);
  const mem = ['non-cacheable', 'cacheable', 'write-combining', 'prefetchable'].indexOf(
    cacheability,
  );
  // General flags: MaxFixed (bit 3) | MinFixed (bit 2); memory flags: _MEM (bits 2:1) | _RW.
  const general = (1 << 3) | (1 << 2);
  const specific = (mem << 1) | 1;
  return concat([
    Uint8Array.of(QWORD_ADDRESS_DESCRIPTOR, QWORD_ADDRESS_LENGTH, 0, 0, general, specific),
    le(0n, 8),
    le(base, 8),
    le(base + length - 1n, 8),
    le(0n, 8),
    le(length, 8),
  ]);
}

/**
 * ResourceTemplate() { descriptors }: a Buffer of the descriptors and an End Tag whose checksum
 * makes the bytes of the whole template sum to zero.
 */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Uint8Array {
  const body = concat(descriptors);
  const sum = body.reduce((s, b) => s + b, END_TAG_DESCRIPTOR);
  return buffer(concat([body, Uint8Array.of(END_TAG_DESCRIPTOR, (256 - (sum & 0xff)) & 0xff)]));
}
