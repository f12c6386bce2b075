import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { NEWC_HEADER_SIZE, writeCpio } from './cpio.js';

test('newc header of a one-byte file has the fields the kernel reads', () => {
  const archive = writeCpio([{ kind: 'file', path: 'a', data: Buffer.from('Z'), mode: 0o755 }]);
  const head = archive.subarray(0, NEWC_HEADER_SIZE).toString('ascii');
  assert.equal(head.slice(0, 6), '070701');
  assert.equal(head.slice(14, 22), '000081ed'); // S_IFREG | 0755
  assert.equal(head.slice(54, 62), '00000001'); // filesize
  assert.equal(head.slice(94, 102), '00000002'); // namesize, "a\0"
  // header 110 + name 2 = 112, already 4-aligned; the data byte follows at once.
  assert.equal(archive[112], 0x5a);
  assert.equal(archive.length % 4, 0);
  assert.match(archive.subarray(116).toString('latin1'), /TRAILER!!!\0/);
});

test('GNU cpio unpacks files, directories and symlinks exactly', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
  try {
    const binary = Buffer.from([0, 1, 2, 0xff, 0x80, 10, 13]);
    const archive = writeCpio([
      { kind: 'dir', path: 'etc' },
      { kind: 'file', path: 'etc/bin.dat', data: binary, mode: 0o600 },
      { kind: 'symlink', path: 'etc/link', target: 'bin.dat' },
    ]);
    const result = spawnSync('cpio', ['-i', '--quiet', '-d'], { cwd: dir, input: archive });
    assert.equal(result.status, 0, result.stderr.toString());
    assert.deepEqual(readFileSync(join(dir, 'etc/bin.dat')), binary);
    assert.equal(statSync(join(dir, 'etc/bin.dat')).mode & 0o777, 0o600);
    assert.equal(readlinkSync(join(dir, 'etc/link')), 'bin.dat');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('absolute paths are refused', () => {
  assert.throws(() => writeCpio([{ kind: 'dir', path: '/etc' }]), /relative/);
});
