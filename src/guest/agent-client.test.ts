import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { AgentClient } from './agent-client.js';
import { decodeGuestLine, encodeRequest } from './agent-protocol.js';
import { AGENT_CUT_BYTES, AGENT_SCRIPT } from './scripts.js';

/** A guest written in the test: parses requests and answers with canned results. */
class FakeGuest {
  requests: { id: number; command: string }[] = [];
  client: AgentClient;
  warnings: string[] = [];
  answer: (id: number, command: string) => string | undefined = () => undefined;

  constructor() {
    this.client = new AgentClient((bytes) => this.#onBytes(bytes), {
      warn: (m) => this.warnings.push(m),
    });
  }

  #onBytes(bytes: Uint8Array): void {
    for (const line of Buffer.from(bytes).toString('ascii').split('\n')) {
      const m = /^#MV (\d+) (\d+) (\S*)$/.exec(line);
      if (!m) continue;
      assert.equal(m[3]!.length, Number(m[2]));
      const command = Buffer.from(m[3]!, 'base64').toString('utf8');
      this.requests.push({ id: Number(m[1]), command });
      const reply = this.answer(Number(m[1]), command);
      if (reply !== undefined) queueMicrotask(() => this.say(reply));
    }
  }

  say(text: string | Buffer): void {
    this.client.receive(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
  }
}

function result(id: number, code: number, out: Buffer, err: Buffer): string {
  const payload = `${out.toString('base64')} ${err.toString('base64')}`;
  return `#MV ${id} ${code} ${out.length} ${err.length} ${payload}\n`;
}

test('request frame: leading newline, id, base64 length, base64 of the command', () => {
  assert.equal(encodeRequest(7, 'echo hi').toString('ascii'), '\n#MV 7 12 ZWNobyBoaQ==\n');
});

test('ready resolves on the hello line, even split across receives and after noise', async () => {
  const guest = new FakeGuest();
  guest.say('[    1.0] random console noise\r\n#MV re');
  assert.equal(guest.client.isReady, false);
  guest.say('ady\r\n');
  await guest.client.ready(100);
  assert.equal(guest.client.isReady, true);
});

test('ready times out with agent_timeout', async () => {
  const guest = new FakeGuest();
  await assert.rejects(guest.client.ready(20), { code: 'agent_timeout' });
});

test('exec returns binary stdout, stderr and exit code exactly', async () => {
  const guest = new FakeGuest();
  const out = Buffer.from([0, 1, 0xff, 0x0a, 0x0d, 0x80, 0x23]);
  const err = Buffer.from('warn\n');
  guest.answer = (id) => result(id, 42, out, err);
  const r = await guest.client.exec('printf stuff');
  assert.equal(guest.requests[0]?.command, 'printf stuff');
  assert.equal(r.code, 42);
  assert.deepEqual(r.stdout, out);
  assert.deepEqual(r.stderr, err);
});

test('requests are sent one at a time, in order, with rising ids', async () => {
  const guest = new FakeGuest();
  guest.answer = (id, cmd) => result(id, cmd.length, Buffer.from(cmd), Buffer.alloc(0));
  const [a, b] = await Promise.all([guest.client.exec('one'), guest.client.exec('three')]);
  assert.deepEqual(
    guest.requests.map((r) => r.id),
    [1, 2],
  );
  assert.equal(a.stdout.toString(), 'one');
  assert.equal(b.code, 5);
});

test('a result whose payload does not match its length is dropped and counted', async () => {
  const guest = new FakeGuest();
  guest.answer = (id) => `#MV ${id} 0 5 0 aGk= \n`; // says 5 bytes, carries 2
  await assert.rejects(guest.client.exec('x', 50), { code: 'agent_timeout' });
  assert.equal(guest.client.counters.invalidFrames, 1);
  assert.match(guest.warnings[0] ?? '', /^agent: invalid frame dropped/);
});

test('garbage never throws out of receive and warnings are rate-limited', () => {
  const guest = new FakeGuest();
  for (let i = 0; i < 50; i++) guest.say(`#MV x${i} junk\n#MV 1 0 0\n\xff\x00#MV\n`);
  assert.equal(guest.client.counters.invalidFrames, 100);
  assert.equal(guest.warnings.length, 1);
});

test('a timed-out request does not swallow the next result', async () => {
  const guest = new FakeGuest();
  await assert.rejects(guest.client.exec('sleep 100', 20), { code: 'agent_timeout' });
  guest.answer = (id) => result(id, 0, Buffer.from('late-ok'), Buffer.alloc(0));
  const pending = guest.client.exec('true', 500);
  guest.say(result(1, 0, Buffer.from('stale'), Buffer.alloc(0)));
  assert.equal((await pending).stdout.toString(), 'late-ok');
  assert.equal(guest.client.counters.staleResults, 1);
});

test('a refusal from the agent rejects the request with agent_refused', async () => {
  const guest = new FakeGuest();
  guest.answer = (id) => `#MV ${id} ERR length mismatch\n`;
  await assert.rejects(guest.client.exec('x', 500), { code: 'agent_refused' });
  assert.equal(guest.client.counters.refusals, 1);
});

test('bytes fed one at a time, as the UART does, decode the same', async () => {
  const guest = new FakeGuest();
  const out = Buffer.alloc(3000, 0xa5);
  guest.answer = (id) => {
    const line = Buffer.from(result(id, 1, out, Buffer.from('e')), 'latin1');
    for (const byte of line) guest.say(Buffer.from([byte]));
    return undefined;
  };
  guest.say(Buffer.from('#MV ready\n'));
  const r = await guest.client.exec('x', 1000);
  assert.deepEqual(r.stdout, out);
  assert.equal(r.stderr.toString(), 'e');
});

test('reset rejects waiting requests and readiness until the next hello', async () => {
  const guest = new FakeGuest();
  guest.say('#MV ready\n');
  const running = guest.client.exec('sleep 5', 1000);
  const queued = guest.client.exec('true', 1000);
  guest.client.reset();
  await assert.rejects(running, { code: 'agent_reset' });
  await assert.rejects(queued, { code: 'agent_reset' });
  assert.equal(guest.client.isReady, false);
  const waiting = guest.client.ready(1000);
  guest.client.reset();
  await assert.rejects(waiting, { code: 'agent_reset' });
  const again = guest.client.ready(1000);
  guest.say('#MV ready\n');
  await again;
  guest.answer = (id) => result(id, 0, Buffer.from('after'), Buffer.alloc(0));
  assert.equal((await guest.client.exec('echo after', 1000)).stdout.toString(), 'after');
});

test('a gzip payload is inflated and checked against its stated length', () => {
  const text = Buffer.from('MemTotal: 2012128 kB\n'.repeat(40));
  const z = `z:${gzipSync(text).toString('base64')}`;
  const frame = decodeGuestLine(`#MV 4 0 ${text.length} 0 ${z} `);
  assert.equal(frame?.kind, 'result');
  assert.deepEqual(frame?.kind === 'result' && frame.stdout, text);
  // Inflating past the stated length is refused, not buffered.
  assert.equal(decodeGuestLine(`#MV 4 0 ${text.length - 1} 0 ${z} `)?.kind, 'invalid');
  assert.equal(decodeGuestLine('#MV 4 0 3 0 z:AAAA ')?.kind, 'invalid');
});

test('decodeGuestLine ignores untagged lines and checks field counts', () => {
  assert.equal(decodeGuestLine('login: '), undefined);
  assert.deepEqual(decodeGuestLine('#MV 3 0 0 0  '), {
    kind: 'result',
    id: 3,
    code: 0,
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
  });
  assert.equal(decodeGuestLine('#MV 3 0 0 0 ')?.kind, 'invalid');
});

/** Runs the real agent script under busybox sh, its port being two FIFOs. */
async function withRealAgent(fn: (client: AgentClient, raw: (s: string) => void) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), 'agent-test-'));
  let agent: ChildProcess | undefined;
  try {
    const toGuest = join(dir, 'in');
    const fromGuest = join(dir, 'out');
    execFileSync('mkfifo', [toGuest, fromGuest]);
    writeFileSync(join(dir, 'agent.sh'), AGENT_SCRIPT);
    agent = spawn('/bin/busybox', ['sh', join(dir, 'agent.sh'), toGuest, fromGuest], {
      stdio: 'ignore',
      env: { PATH: `${join(dir, 'bin')}:/usr/bin:/bin`, TMPDIR: dir },
    });
    const writer = await open(toGuest, 'w');
    const reader = await open(fromGuest, 'r');
    const warnings: string[] = [];
    const client = new AgentClient((bytes) => void writer.write(bytes), {
      warn: (m) => warnings.push(m),
    });
    const stream = reader.createReadStream();
    stream.on('data', (chunk) => client.receive(chunk as Buffer));
    try {
      await client.ready(5000);
      await fn(client, (s) => void writer.write(s));
    } finally {
      await writer.close();
      stream.destroy();
    }
  } finally {
    agent?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the real agent script: binary output, stderr, exit codes and refusals', async () => {
  await withRealAgent(async (client, raw) => {
    const r = await client.exec("printf 'a\\000\\377\\r\\n'; echo oops >&2; exit 9", 5000);
    assert.equal(r.code, 9);
    assert.deepEqual(r.stdout, Buffer.from([0x61, 0, 0xff, 0x0d, 0x0a]));
    assert.equal(r.stderr.toString(), 'oops\n');
    raw('\n#MV 5 8 ZWNobyBoaQ\n'); // length says 8, carries 10
    raw('half a line then #MV 6 4 dHJ1ZQ==\n');
    const empty = await client.exec('true', 5000);
    assert.deepEqual([empty.code, empty.stdout.length, empty.stderr.length], [0, 0, 0]);
    assert.equal(client.counters.refusals, 2);
    const big = await client.exec('i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done');
    assert.equal(big.stdout.toString().split('\n')[2999], 'line2999');
  });
});

test('the real agent cuts output that would not fit its payload limit, and says so', async () => {
  await withRealAgent(async (client) => {
    const r = await client.exec('head -c 200000 /dev/urandom; echo done >&2', 20_000);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.length, AGENT_CUT_BYTES);
    assert.equal(
      r.stderr.toString(),
      `done\nmemvisor-agent: stdout cut to its first ${AGENT_CUT_BYTES} of 200000 bytes\n`,
    );
    // Text that compresses below the limit comes through whole, however long it is.
    const text = await client.exec('yes memvisor | head -n 100000', 20_000);
    assert.equal(text.stdout.toString(), 'memvisor\n'.repeat(100000));
    assert.equal(text.stderr.length, 0);
  });
});
