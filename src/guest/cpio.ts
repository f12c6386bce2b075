/**
 * A writer for the "newc" cpio format (SVR4 without checksums), the format the Linux kernel
 * unpacks as an initramfs. Written in-process so that device nodes such as `/dev/console` can be
 * packed without root privileges or `mknod`, and so that the archive is byte-for-byte
 * reproducible: every entry gets uid 0, gid 0 and mtime 0.
 */

/** File type bits of `st_mode`, as in `<sys/stat.h>`. */
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

/** The magic that opens every newc header. */
const NEWC_MAGIC = '070701';
/** Header size: the magic plus 13 eight-digit hexadecimal fields. */
export const NEWC_HEADER_SIZE = 6 + 13 * 8;
const TRAILER_NAME = 'TRAILER!!!';

/** One archive member. `path` is relative to the archive root, without a leading slash. */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

function hex8(value: number): string {
  return value.toString(16).padStart(8, '0');
}

function pad4(length: number): number {
  return (4 - (length % 4)) % 4;
}

function header(
  ino: number,
  mode: number,
  size: number,
  rmajor: number,
  rminor: number,
  name: string,
) {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rmajor, rminor, nameBytes.length, 0];
  const text = NEWC_MAGIC + fields.map(hex8).join('');
  return Buffer.concat([
    Buffer.from(text, 'ascii'),
    nameBytes,
    Buffer.alloc(pad4(NEWC_HEADER_SIZE + nameBytes.length)),
  ]);
}

/** Packs `entries` in the given order, followed by the trailer, into one newc archive. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const entry of entries) {
    if (entry.path.startsWith('/') || entry.path.length === 0) {
      throw new Error(`cpio: path must be relative and non-empty: '${entry.path}'`);
    }
    let mode: number;
    let data: Uint8Array = new Uint8Array(0);
    let rmajor = 0;
    let rminor = 0;
    switch (entry.kind) {
      case 'dir':
        mode = S_IFDIR | (entry.mode ?? 0o755);
        break;
      case 'file':
        mode = S_IFREG | (entry.mode ?? 0o644);
        data = entry.data;
        break;
      case 'symlink':
        mode = S_IFLNK | 0o777;
        data = Buffer.from(entry.target, 'utf8');
        break;
      case 'chardev':
        mode = S_IFCHR | (entry.mode ?? 0o600);
        rmajor = entry.major;
        rminor = entry.minor;
        break;
    }
    parts.push(header(ino++, mode, data.length, rmajor, rminor, entry.path));
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    parts.push(Buffer.alloc(pad4(data.length)));
  }
  parts.push(header(0, 0, 0, 0, 0, TRAILER_NAME));
  return Buffer.concat(parts);
}
