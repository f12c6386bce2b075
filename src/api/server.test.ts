import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { InvalidInputError, MemvisorError } from '../util/errors.js';
import type {
  BlockMap,
  ExecResult,
  VirtioMemStatus,
  VmController,
  VmStatus,
} from '../vmm/controller.js';
import { ApiClient, type ApiError } from './client.js';
import { createApiServer, listenApi } from './server.js';

const MiB = 2 ** 20;

/** A controller with one 1 GiB device that records what it was asked. */
class FakeVm implements VmController {
  readonly events = new EventEmitter();
  requested = 0;
  paused = false;
  resets = 0;

  device(): VirtioMemStatus {
    return {
      id: 'mem0',
      node: 0,
      addr: 4 * 1024 * MiB,
      region_size: 1024 * MiB,
      block_size: 2 * MiB,
      usable_region_size: 0,
      requested_size: this.requested,
      plugged_size: 0,
      resident_bytes: 0,
      driver_ok: true,
      violations: 0,
    };
  }

  status(): VmStatus {
    return {
      state: this.paused ? 'paused' : 'running',
      vcpus: 2,
      boot_memory: 1024 * MiB,
      resident_bytes: 123,
      uptime_ms: 5,
      resets: this.resets,
      numa_nodes: [
        {
          node: 0,
          cpus: [0, 1],
          boot_memory: 1024 * MiB,
          requested_size: 256 * MiB,
          plugged_size: 128 * MiB,
        },
      ],
      virtio_mem: [this.device()],
      balloon: null,
    };
  }

  resize(id: string | undefined, bytes: number): void {
    if (id !== 'mem0') throw new MemvisorError('unknown_device', `no virtio-mem device '${id}'`);
    if (bytes % (2 * MiB) !== 0) throw new InvalidInputError('not a multiple of the block size');
    this.requested = bytes;
  }

  blocks(): BlockMap {
    return { id: 'mem0', addr: 0, block_size: 2 * MiB, usable_blocks: 0, plugged: '..' };
  }

  setBalloon(): void {
    throw new InvalidInputError('this VM has no balloon (run it with --balloon)');
  }

  async exec(command: string): Promise<ExecResult> {
    return { code: 3, stdout: Buffer.from([0, 255]), stderr: Buffer.from(command) };
  }

  async pause(): Promise<void> {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  reset(): void {
    this.resets++;
  }

  async stop(): Promise<void> {}
}

describe('control API', () => {
  const vm = new FakeVm();
  const app = createApiServer(vm);
  const patch = (body: unknown, id = 'mem0') =>
    app.inject({ method: 'PATCH', url: `/v1/virtio-mem/${id}`, payload: body as object });

  test('status reports each NUMA node with its boot, requested and plugged bytes', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/vm' });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().numa_nodes, [
      {
        node: 0,
        cpus: [0, 1],
        boot_memory: 1024 * MiB,
        requested_size: 256 * MiB,
        plugged_size: 128 * MiB,
      },
    ]);
  });

  test('a resize in bytes or with a unit sets the requested size', async () => {
    let res = await patch({ requested_size: 64 * MiB });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().requested_size, 64 * MiB);
    res = await patch({ requested_size: '1G' });
    assert.equal(res.statusCode, 200);
    assert.equal(vm.requested, 1024 * MiB);
  });

  test('bad sizes are 400 with a message and change nothing', async () => {
    vm.requested = 0;
    for (const body of [
      { requested_size: 3 * MiB },
      { requested_size: -1 },
      { requested_size: 1.5 },
      { requested_size: 'lots' },
      { requested_size: true },
      { size: 1 },
      { requested_size: 0, extra: 1 },
    ]) {
      const res = await patch(body);
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.equal(typeof res.json().message, 'string');
      assert.ok(res.json().message.length > 0);
    }
    const broken = await app.inject({
      method: 'PATCH',
      url: '/v1/virtio-mem/mem0',
      headers: { 'content-type': 'application/json' },
      payload: '{"requested_size": ',
    });
    assert.equal(broken.statusCode, 400);
    assert.equal(vm.requested, 0);
  });

  test('an unknown device is 404 and an unknown route is 404', async () => {
    const res = await patch({ requested_size: 0 }, 'nope');
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().error, 'unknown_device');
    assert.equal((await app.inject({ method: 'GET', url: '/v1/nothing' })).statusCode, 404);
  });

  test('exec returns the exit code and base64 output', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/exec', payload: { command: 'x' } });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { code: 3, stdout: 'AP8=', stderr: 'eA==' });
    const empty = await app.inject({ method: 'POST', url: '/v1/exec', payload: { command: '' } });
    assert.equal(empty.statusCode, 400);
  });

  test('a balloon request on a VM without one is 400', async () => {
    const res = await app.inject({
      method: 'PUT',
      url: '/v1/balloon',
      payload: { target_size: 0 },
    });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /no balloon/);
  });

  test('pause, resume and reset reach the VM', async () => {
    await app.inject({ method: 'PUT', url: '/v1/vm/pause' });
    assert.equal(vm.status().state, 'paused');
    await app.inject({ method: 'PUT', url: '/v1/vm/resume' });
    assert.equal(vm.status().state, 'running');
    await app.inject({ method: 'PUT', url: '/v1/vm/reset' });
    assert.equal(vm.resets, 1);
  });

  test('metrics and the OpenAPI document are served', async () => {
    const metrics = (await app.inject({ method: 'GET', url: '/v1/metrics' })).body;
    assert.match(metrics, /memvisor_virtio_mem_region_bytes\{device="mem0",node="0"\} 1073741824/);
    assert.match(metrics, /memvisor_resident_bytes 123/);
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json();
    assert.equal(doc.openapi, '3.1.0');
    assert.ok(doc.paths['/v1/virtio-mem/{id}'].patch);
  });
});

describe('control API over a Unix socket', () => {
  const vm = new FakeVm();
  const dir = mkdtempSync(join(tmpdir(), 'memvisor-api-'));
  const sock = join(dir, 'api.sock');
  let close: () => Promise<void>;

  before(async () => {
    const app = await listenApi(vm, sock);
    close = () => app.close();
  });
  after(async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the client gets typed errors', async () => {
    const api = new ApiClient(sock);
    await assert.rejects(
      api.call('PATCH', '/v1/virtio-mem/mem0', { requested_size: 1 }),
      (e: ApiError) => {
        assert.equal(e.status, 400);
        assert.match(e.message, /block size/);
        return true;
      },
    );
  });

  test('events stream to a client, and a client that goes away leaves no listener', async () => {
    const api = new ApiClient(sock);
    const abort = new AbortController();
    const got: Record<string, unknown>[] = [];
    let opened!: () => void;
    const open = new Promise<void>((resolve) => {
      opened = resolve;
    });
    const onEvent = (e: Record<string, unknown>) => {
      got.push(e);
      if (got.length === 2) abort.abort();
    };
    const done = api.events(onEvent, abort.signal, opened);
    // Open before any event: once the client has the headers, the server's listener is there.
    await open;
    assert.equal(vm.events.listenerCount('event'), 1);
    vm.events.emit('event', { type: 'size_changed', time: 't', plugged_size: 1 });
    vm.events.emit('event', { type: 'reset', time: 't' });
    await done;
    assert.deepEqual(
      got.map((e) => e.type),
      ['size_changed', 'reset'],
    );
    for (let i = 0; i < 100 && vm.events.listenerCount('event') > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(vm.events.listenerCount('event'), 0);
  });

  test('a second server on a live socket is refused', async () => {
    await assert.rejects(listenApi(vm, sock), /in use/);
  });

  test('a client whose VMM drops the connection unanswered gets a clear error', async () => {
    const dropping = createServer((socket) => socket.destroy());
    const path = join(dir, 'dropping.sock');
    await new Promise<void>((done) => dropping.listen(path, done));
    try {
      await assert.rejects(
        new ApiClient(path).call('PUT', '/v1/vm/stop'),
        /closed the connection without answering/,
      );
    } finally {
      await new Promise((done) => dropping.close(done));
    }
  });

  test('a client of a socket nobody serves gets a clear error', async () => {
    await assert.rejects(
      new ApiClient(join(dir, 'none.sock')).call('GET', '/v1/vm'),
      /no VM listens there/,
    );
  });
});
