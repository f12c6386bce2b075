import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { QmpClient, QmpError } from './qmp.js';

/** A connected pair: the client side wrapped in QmpClient, the other side playing QEMU. */
async function pair(): Promise<{ qmp: QmpClient; qemu: Socket; lines: string[]; done(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'qmp-test-'));
  const path = join(dir, 's');
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const qemu = connect(path);
  const qmp = new QmpClient(await accepted);
  server.close();
  const lines: string[] = [];
  qemu.setEncoding('utf8');
  qemu.on('data', (d: string) => lines.push(...d.split('\n').filter((l) => l !== '')));
  return {
    qmp,
    qemu,
    lines,
    done() {
      qmp.close();
      qemu.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

test('handshake waits for the greeting, then negotiates capabilities', async () => {
  const p = await pair();
  const shaken = p.qmp.handshake();
  await tick();
  assert.deepEqual(p.lines, []);
  p.qemu.write('{"QMP": {"version": {}, "capabilities": []}}\n');
  await tick();
  assert.deepEqual(
    p.lines.map((l) => JSON.parse(l)),
    [{ execute: 'qmp_capabilities' }],
  );
  p.qemu.write('{"return": {}}\n');
  await shaken;
  p.done();
});

test('answers commands in order across chunks; errors carry class and text', async () => {
  const p = await pair();
  const a = p.qmp.execute<{ actual: number }>('query-balloon');
  const b = p.qmp.execute('device_del', { id: 'dimm0' });
  await tick();
  assert.deepEqual(JSON.parse(p.lines[1] ?? ''), {
    execute: 'device_del',
    arguments: { id: 'dimm0' },
  });
  p.qemu.write('{"return": {"actual": 10737');
  p.qemu.write('41824}}\n{"error": {"class": "GenericError", "desc": "no dimm0"}}\n');
  assert.deepEqual(await a, { actual: 1073741824 });
  await assert.rejects(b, (e: unknown) => {
    assert.ok(e instanceof QmpError);
    assert.equal(e.errorClass, 'GenericError');
    assert.equal(e.desc, 'no dimm0');
    assert.equal(e.command, 'device_del');
    return true;
  });
  p.done();
});

test('waitEvent finds a kept event, a later one, or times out with undefined', async () => {
  const p = await pair();
  const since = performance.now();
  p.qemu.write('{"event": "DEVICE_DELETED", "data": {"device": "dimm1"}, "timestamp": {}}\n');
  await tick();
  const kept = await p.qmp.waitEvent('DEVICE_DELETED', since, 10);
  assert.equal(kept?.data.device, 'dimm1');
  const later = p.qmp.waitEvent('DEVICE_DELETED', since, 1000, (e) => e.data.device === 'dimm2');
  p.qemu.write('{"event": "DEVICE_DELETED", "data": {"device": "dimm2"}}\n');
  assert.equal((await later)?.data.device, 'dimm2');
  assert.equal(await p.qmp.waitEvent('BALLOON_CHANGE', since, 30), undefined);
  assert.equal(p.qmp.received.length, 2);
  p.done();
});

test('a closed connection rejects waiting and later commands', async () => {
  const p = await pair();
  const waiting = p.qmp.execute('query-status');
  p.qemu.destroy();
  await assert.rejects(waiting, /query-status: closed/);
  await assert.rejects(p.qmp.execute('quit'), /quit: closed/);
  p.done();
});
