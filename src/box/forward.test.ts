import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { jobScript, netArgs, netSetupScript } from './box.js';
import {
  forwardTcp,
  forwardUnix,
  freeLoopbackPort,
  parseForwardEnv,
  startBoxForward,
} from './forward.js';

const dir = mkdtempSync(join(tmpdir(), 'memvisor-forward-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const sockPath = () => join(dir, `s${serial++}.sock`);

function listenUnix(path: string, onConnection: (s: Socket) => void): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer({ allowHalfOpen: true }, onConnection);
    server.listen(path, () => resolve(server));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((done) => server.close(() => done()));
}

/** Connects to `path`, sends `payload`, half-closes, and resolves with everything answered. */
function exchange(path: string, payload: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks).toString());
    });
    socket.on('error', reject);
    socket.end(payload);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** host Unix socket -> TCP loopback -> Unix socket, the path an API call takes into the box. */
async function chain(upstreamPath: string, log: string[] = []) {
  const inner = await forwardTcp(
    '127.0.0.1',
    0,
    { kind: 'unix', path: upstreamPath },
    { name: 'fwd[box]', log: (l) => log.push(l) },
  );
  const port = Number(inner.address.split(':')[1]);
  const hostPath = sockPath();
  const outer = await forwardUnix(
    hostPath,
    { kind: 'tcp', host: '127.0.0.1', port },
    { name: 'fwd[host]', log: (l) => log.push(l) },
  );
  return { inner, outer, hostPath };
}

test('32 concurrent connections through both forwarders each get their own answer', async () => {
  const upstream = sockPath();
  // Answers after the client's half-close: the length and hash of what arrived.
  const server = await listenUnix(upstream, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      s.end(`${all.length} ${sha(all)}`);
    });
  });
  const { inner, outer, hostPath } = await chain(upstream);
  const payloads = Array.from({ length: 32 }, (_, i) => randomBytes(1000 + i * 7919));
  const answers = await Promise.all(payloads.map((p) => exchange(hostPath, p)));
  assert.deepEqual(
    answers,
    payloads.map((p) => `${p.length} ${sha(p)}`),
  );
  assert.equal(outer.stats.accepted, 32);
  assert.equal(inner.stats.accepted, 32);
  await until('all connections closed', () => outer.stats.active === 0 && inner.stats.active === 0);
  assert.equal(outer.stats.upstreamFailed, 0);
  await outer.close();
  await inner.close();
  await closeServer(server);
  assert.equal(existsSync(hostPath), false);
});

test('a client leaving a stream midway closes its upstream; others keep streaming', async () => {
  const upstream = sockPath();
  const open = new Set<Socket>();
  let closedUpstream = 0;
  // An event stream: a numbered line every 5 ms until the peer goes away.
  const server = await listenUnix(upstream, (s) => {
    open.add(s);
    let n = 0;
    const timer = setInterval(() => s.write(`event ${n++}\n`), 5);
    s.on('error', () => {});
    s.on('close', () => {
      clearInterval(timer);
      open.delete(s);
      closedUpstream++;
    });
  });
  const { inner, outer, hostPath } = await chain(upstream);
  const reader = (stopAfter: number) =>
    new Promise<{ lines: string[]; socket: Socket }>((resolve) => {
      const socket = connect(hostPath);
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString();
        const lines = text.split('\n').slice(0, -1);
        if (lines.length >= stopAfter) resolve({ lines: lines.slice(0, stopAfter), socket });
      });
    });
  const [quitter, stayer] = await Promise.all([reader(3), reader(3)]);
  assert.deepEqual(quitter.lines, ['event 0', 'event 1', 'event 2']);
  await until('both streams open upstream', () => open.size === 2);
  quitter.socket.destroy();
  await until('the upstream side of the quitter closed', () => closedUpstream === 1);
  assert.equal(open.size, 1);

  // The remaining stream still delivers new lines in order.
  const more = await new Promise<string[]>((resolve) => {
    let text = '';
    stayer.socket.on('data', (c: Buffer) => {
      text += c.toString();
      const lines = text.split('\n').slice(0, -1);
      if (lines.length >= 5) resolve(lines);
    });
  });
  const numbers = more.map((l) => Number(l.split(' ')[1]));
  for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], (numbers[i - 1] ?? 0) + 1);
  assert.equal(outer.stats.active, 1);

  stayer.socket.destroy();
  await until('the stayer closed upstream', () => closedUpstream === 2);
  await until('forwarders idle', () => outer.stats.active === 0 && inner.stats.active === 0);
  await outer.close();
  await inner.close();
  await closeServer(server);
});

test('an unreachable upstream closes the client, is counted, and warns with the name', async () => {
  const log: string[] = [];
  const { inner, outer, hostPath } = await chain(join(dir, 'nobody.sock'), log);
  const answer = await exchange(hostPath, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  assert.equal(answer, '');
  await until('failure counted', () => inner.stats.upstreamFailed === 1);
  assert.equal(outer.stats.upstreamFailed, 0);
  assert.deepEqual(log, [`fwd[box]: cannot reach ${join(dir, 'nobody.sock')}: ENOENT`]);
  await until('forwarders idle', () => outer.stats.active === 0 && inner.stats.active === 0);
  await outer.close();
  await inner.close();
});

test('closing a forwarder ends its open connections', async () => {
  const upstream = sockPath();
  let upstreamEnded = false;
  const server = await listenUnix(upstream, (s) => {
    s.on('error', () => {});
    s.on('end', () => {
      upstreamEnded = true;
      s.end();
    });
  });
  const { inner, outer, hostPath } = await chain(upstream);
  const socket = connect(hostPath);
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('error', () => {});
  await until('connected through', () => inner.stats.active === 1);
  await outer.close();
  await closed;
  await until('the upstream end reached', () => upstreamEnded);
  await inner.close();
  await closeServer(server);
});

test('freeLoopbackPort returns a port that can be bound on 127.0.0.1', async () => {
  const port = await freeLoopbackPort();
  assert.ok(port > 0 && port < 65536);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  await closeServer(server);
});

test('parseForwardEnv takes <port>:<absolute path> only', () => {
  assert.deepEqual(parseForwardEnv('7024:/tmp/a.sock'), { port: 7024, path: '/tmp/a.sock' });
  assert.equal(parseForwardEnv('0:/tmp/a.sock'), undefined);
  assert.equal(parseForwardEnv('70000:/tmp/a.sock'), undefined);
  assert.equal(parseForwardEnv('7024:relative.sock'), undefined);
  assert.equal(parseForwardEnv('x:/a'), undefined);
});

test('startBoxForward does nothing without its variable and refuses a bad one', async () => {
  const env: NodeJS.ProcessEnv = {};
  assert.equal(await startBoxForward(env), undefined);
  const bad: NodeJS.ProcessEnv = { MEMVISOR_BOX_API_FORWARD: 'nonsense' };
  await assert.rejects(startBoxForward(bad), { code: 'forward_failed' });
  assert.equal(bad.MEMVISOR_BOX_API_FORWARD, undefined);
});

test('netArgs restricts the user network to loopback forwards into the box address', () => {
  assert.deepEqual(netArgs([]), []);
  assert.deepEqual(netArgs([{ hostPort: 40001, boxPort: 7024 }]), [
    '-netdev',
    'user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40001-10.0.2.15:7024',
    '-device',
    'virtio-net-pci,netdev=n0,romfile=',
  ]);
  assert.throws(() => netArgs([{ hostPort: 0, boxPort: 7024 }]), { code: 'invalid_input' });
});

test('jobScript runs the network setup first and stops with 125 when it fails', () => {
  const script = jobScript(['sh', '-c', 'echo ran'], '/', {}, netSetupScript());
  assert.match(script, /^ip link set lo up && ip link set eth0 up && ip addr add 10\.0\.2\.15\/24/);
  // An `ip` that always fails stands in for a box without eth0.
  const fake = join(dir, 'bin');
  spawnSync('mkdir', ['-p', fake]);
  writeFileSync(join(fake, 'ip'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  const run = spawnSync('sh', ['-c', script], { env: { PATH: `${fake}:/usr/bin:/bin` } });
  assert.equal(run.status, 125);
  assert.equal(run.stdout.toString(), '');
  assert.equal(run.stderr.toString(), 'box: cannot bring up eth0\n');
});
