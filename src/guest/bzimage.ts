/**
 * Pulls the ELF `vmlinux` out of an x86 bzImage, for QEMU's PVH boot path. The real-mode setup
 * header (Documentation/arch/x86/boot.rst) says where the compressed payload lies, so no search
 * for a magic is needed; only xz payloads are accepted, which is what Debian's kernels carry.
 */
import { spawnSync } from 'node:child_process';
import { MemvisorError } from '../util/errors.js';

/** Offsets in the setup header, boot protocol 2.08 or later. */
const SETUP_SECTS = 0x1f1;
const HEADER_MAGIC = 0x202;
const PAYLOAD_OFFSET = 0x248;
const PAYLOAD_LENGTH = 0x24c;
const HDRS = 0x53726448; // "HdrS"
const SECTOR = 512;

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** Returns the compressed payload of `bzImage` (its protected-mode part's embedded kernel). */
export function bzImagePayload(bzImage: Buffer): Buffer {
  if (bzImage.length < PAYLOAD_LENGTH + 4 || bzImage.readUInt32LE(HEADER_MAGIC) !== HDRS) {
    throw new MemvisorError('bad_kernel', 'not a bzImage: no HdrS setup header');
  }
  // A zero setup_sects means 4, as the boot protocol keeps for old images.
  const setupSects = bzImage[SETUP_SECTS] || 4;
  const start = (setupSects + 1) * SECTOR + bzImage.readUInt32LE(PAYLOAD_OFFSET);
  const end = start + bzImage.readUInt32LE(PAYLOAD_LENGTH);
  if (end > bzImage.length || start >= end) {
    throw new MemvisorError('bad_kernel', `bzImage payload [${start}, ${end}) out of the file`);
  }
  return bzImage.subarray(start, end);
}

/** Decompresses the xz payload of `bzImage` with the `xz` tool and checks the result is ELF. */
export function extractVmlinux(bzImage: Buffer): Buffer {
  const payload = bzImagePayload(bzImage);
  if (!payload.subarray(0, XZ_MAGIC.length).equals(XZ_MAGIC)) {
    throw new MemvisorError('bad_kernel', 'bzImage payload is not xz-compressed');
  }
  // The kernel's build appends the uncompressed size after the xz stream; --single-stream
  // stops at the stream's end instead of reading those bytes as a second stream.
  const xz = spawnSync('xz', ['-dc', '--single-stream'], {
    input: payload,
    maxBuffer: 1 << 30,
  });
  if (xz.error || xz.status !== 0) {
    const why = xz.error?.message ?? xz.stderr.toString().trim();
    throw new MemvisorError('bad_kernel', `xz failed on the bzImage payload: ${why}`);
  }
  if (!xz.stdout.subarray(0, 4).equals(ELF_MAGIC)) {
    throw new MemvisorError('bad_kernel', 'decompressed bzImage payload is not an ELF file');
  }
  return xz.stdout;
}
