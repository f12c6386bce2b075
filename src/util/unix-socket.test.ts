import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { claimUnixSocketPath, unixSocketLive } from './unix-socket.js';

const dir = mkdtempSync(join(tmpdir(), 'memvisor-unix-socket-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((s) => s.end());
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

test('claimUnixSocketPath refuses a live socket and keeps it', async () => {
  const live = join(dir, 'live.sock');
  const server = await listen(live);
  assert.equal(await unixSocketLive(live), true);
  await assert.rejects(claimUnixSocketPath(live, '--api-sock'), {
    code: 'invalid_input',
    message: `--api-sock: ${live} is in use: a server already answers there`,
  });
  assert.equal(existsSync(live), true);
  await new Promise<void>((done) => server.close(() => done()));
});

test('claimUnixSocketPath refuses a file or a folder, leaving it as it was', async () => {
  const file = join(dir, 'plain-file');
  writeFileSync(file, 'keep me');
  await assert.rejects(claimUnixSocketPath(file, '--api-sock'), {
    code: 'invalid_input',
    message: `--api-sock: ${file} exists and is not a socket; not replacing it`,
  });
  assert.equal(readFileSync(file, 'utf8'), 'keep me');
  const folder = join(dir, 'a-folder');
  mkdirSync(folder);
  await assert.rejects(claimUnixSocketPath(folder, '--api-sock'), { code: 'invalid_input' });
  assert.equal(existsSync(folder), true);
});

test('claimUnixSocketPath refuses a missing folder and a path too long for sun_path', async () => {
  const missing = join(dir, 'no-such-folder', 'vm.sock');
  await assert.rejects(claimUnixSocketPath(missing, '--api-sock'), {
    message: `--api-sock: folder ${join(dir, 'no-such-folder')} does not exist`,
  });
  const long = join(dir, `${'x'.repeat(120)}.sock`);
  await assert.rejects(claimUnixSocketPath(long, '--api-sock'), {
    code: 'invalid_input',
    message: /is longer than 107 bytes/,
  });
});

test('claimUnixSocketPath removes a stale socket and accepts a free path', async () => {
  // A socket bound by a process that is gone: the file stays and nobody answers.
  const stale = join(dir, 'stale.sock');
  const bind = spawnSync('python3', [
    '-c',
    'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
    stale,
  ]);
  assert.equal(bind.status, 0, bind.stderr.toString());
  assert.equal(existsSync(stale), true);
  assert.equal(await unixSocketLive(stale), false);
  await claimUnixSocketPath(stale, '--api-sock');
  assert.equal(existsSync(stale), false);
  await claimUnixSocketPath(join(dir, 'never-there.sock'), '--api-sock');
});
