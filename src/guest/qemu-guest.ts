/**
 * Boots the guest image under QEMU with `-accel kvm`, its console and agent ports on Unix sockets
 * this process listens on. It proves the image and the agent without memvisor, and is the
 * starting point for driving QEMU guests side by side with memvisor ones. It needs a working
 * `/dev/kvm`, so on a host with the software KVM it runs inside the box.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemvisorError } from '../util/errors.js';
import { AgentClient } from './agent-client.js';
import type { GuestImage } from './image.js';
import { GUEST_READY_MARKER } from './scripts.js';

/** Options of `startQemuGuest`. */
export interface QemuGuestOptions {
  /** Guest memory in MiB; 2048 when absent. */
  memoryMiB?: number;
  /** vCPUs; 2 when absent. */
  vcpus?: number;
  /** Appended to QEMU's arguments, e.g. memory devices. */
  extraArgs?: string[];
  /** Appended to the image's command line. */
  extraCmdline?: string;
  /** How long to wait for the agent; 180 s when absent. */
  readyTimeoutMs?: number;
}

/** A running QEMU guest. */
export interface QemuGuest {
  agent: AgentClient;
  /** Milliseconds from spawning QEMU to the console's ready marker. */
  markerMs: number;
  /** Milliseconds from spawning QEMU to the agent's hello. */
  agentMs: number;
  /** Everything the guest printed on its console so far. */
  console(): string;
  /** Powers the guest off through the agent, killing QEMU if it has not gone within 10 s. */
  stop(): Promise<void>;
}

const CONSOLE_KEEP_CHARS = 1 << 20;

function listenOnce(path: string, onSocket: (socket: Socket) => void): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(onSocket);
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

/** Boots `image` under QEMU/KVM and resolves once its agent is ready. */
export async function startQemuGuest(
  image: GuestImage,
  opts: QemuGuestOptions = {},
): Promise<QemuGuest> {
  const dir = mkdtempSync(join(tmpdir(), 'memvisor-qemu-'));
  let consoleText = '';
  let markerMs = -1;
  let agentSocket: Socket | undefined;
  const agent = new AgentClient((bytes) => agentSocket?.write(bytes), { name: 'qemu-agent' });
  const started = Date.now();
  const servers = [
    await listenOnce(join(dir, 'console.sock'), (socket) => {
      socket.on('data', (chunk: Buffer) => {
        consoleText = (consoleText + chunk.toString('latin1')).slice(-CONSOLE_KEEP_CHARS);
        if (markerMs < 0 && consoleText.includes(GUEST_READY_MARKER)) {
          markerMs = Date.now() - started;
        }
      });
    }),
    await listenOnce(join(dir, 'agent.sock'), (socket) => {
      agentSocket = socket;
      socket.on('data', (chunk: Buffer) => agent.receive(chunk));
    }),
  ];
  const cmdline = [image.cmdline, opts.extraCmdline ?? ''].join(' ').trim();
  const qemu: ChildProcess = spawn(
    'qemu-system-x86_64',
    [
      ...['-accel', 'kvm', '-cpu', 'host', '-smp', String(opts.vcpus ?? 2)],
      ...['-m', String(opts.memoryMiB ?? 2048), '-nographic', '-nodefaults', '-no-reboot'],
      ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', cmdline],
      ...['-chardev', `socket,id=con,path=${join(dir, 'console.sock')}`, '-serial', 'chardev:con'],
      ...['-chardev', `socket,id=agt,path=${join(dir, 'agent.sock')}`, '-serial', 'chardev:agt'],
      ...(opts.extraArgs ?? []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let qemuStderr = '';
  qemu.stderr?.on('data', (chunk: Buffer) => {
    qemuStderr = (qemuStderr + chunk.toString()).slice(-4096);
  });
  const exited = new Promise<void>((resolve) => {
    qemu.once('exit', () => resolve());
    qemu.once('error', () => resolve());
  });
  const cleanup = async () => {
    await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await Promise.race([
      agent.ready(opts.readyTimeoutMs ?? 180_000),
      exited.then(() => {
        throw new MemvisorError('guest_failed', 'qemu exited before the agent was ready');
      }),
    ]);
  } catch (error) {
    qemu.kill('SIGKILL');
    await exited;
    await cleanup();
    const why = error instanceof Error ? error.message : String(error);
    throw new MemvisorError(
      'guest_failed',
      `${why}\n${qemuStderr.trim()}\n${consoleText.split('\n').slice(-20).join('\n')}`,
    );
  }
  const agentMs = Date.now() - started;

  return {
    agent,
    markerMs,
    agentMs,
    console: () => consoleText,
    stop: async () => {
      // The guest dies before it can answer, so the request's own timeout is expected.
      agent.exec('poweroff -f', 1000).catch(() => undefined);
      const killer = setTimeout(() => qemu.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
      await cleanup();
    },
  };
}
