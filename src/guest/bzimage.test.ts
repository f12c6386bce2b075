import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { bzImagePayload, extractVmlinux } from './bzimage.js';

/** Builds a minimal image: 2 setup sectors plus boot sector, then `prefix` and the payload. */
function fakeBzImage(payload: Buffer, prefix = 16): Buffer {
  const image = Buffer.alloc(3 * 512 + prefix + payload.length + 4);
  image[0x1f1] = 2;
  image.writeUInt32LE(0x53726448, 0x202);
  image.writeUInt32LE(prefix, 0x248);
  image.writeUInt32LE(payload.length, 0x24c);
  payload.copy(image, 3 * 512 + prefix);
  image.writeUInt32LE(0xdeadbeef, 3 * 512 + prefix + payload.length);
  return image;
}

test('payload is located from setup_sects and payload_offset', () => {
  const payload = Buffer.from('payload-bytes');
  assert.deepEqual(bzImagePayload(fakeBzImage(payload, 40)), payload);
});

test('an xz payload decompresses to the ELF it was made from, trailing size ignored', () => {
  const elf = Buffer.concat([
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]),
    Buffer.alloc(5000, 7),
  ]);
  const xz = spawnSync('xz', ['-c', '--check=crc32'], { input: elf });
  assert.equal(xz.status, 0);
  assert.deepEqual(extractVmlinux(fakeBzImage(xz.stdout)), elf);
});

test('a file without the HdrS magic or with a non-xz payload is refused', () => {
  assert.throws(() => bzImagePayload(Buffer.alloc(4096)), /HdrS/);
  assert.throws(() => extractVmlinux(fakeBzImage(Buffer.from('gzip?'))), /not xz/);
});
