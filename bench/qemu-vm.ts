/**
 * A QEMU 7.2 guest for the baselines: `-accel kvm`, the same Debian kernel and guest initramfs
 * memvisor boots, 2 vCPUs, 1 GiB of boot memory split over two NUMA nodes, the console to a log
 * file, the guest agent's ttyS1 and QMP each on a Unix socket the harness listens on (QEMU
 * connects as the client, so nothing the guest says early is lost).
 *
 * Two differences from memvisor's guest are forced by QEMU's devices and stated here: the guest
 * image loads no virtio-pci driver (memvisor's devices are virtio-mmio), so an initramfs layer
 * holding `virtio_pci` and its dependencies, taken from the box initramfs of the same kernel, is
 * appended; and the command line drops `pci=off`, since virtio-mem-pci and virtio-balloon-pci
 * sit on PCI.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { AgentClient } from '../src/guest/agent-client.js';
import { writeCpio } from '../src/guest/cpio.js';
import { type GuestImage, cacheDir } from '../src/guest/image.js';
import { QmpClient } from './qmp.js';
import type { BenchVm } from './vm.js';

/** Modules QEMU's PCI devices need that the guest image does not carry, in load order. */
const PCI_MODULES = ['virtio_pci_modern_dev.ko', 'virtio_pci_legacy_dev.ko', 'virtio_pci.ko'];

/** Options of `QemuVm.start`. */
export interface QemuVmOptions {
  image: GuestImage;
  /** Boot memory in MiB, split evenly over nodes 0 and 1. */
  bootMiB: number;
  /** Extra `-m` options, e.g. `slots=32,maxmem=8G`. */
  memExtra?: string;
  /** Extra QEMU arguments: the device under test. */
  args: string[];
  /** Appended to the guest command line. */
  cmdlineExtra?: string;
  /** Folder for the console log; a temporary one when absent. */
  logDir?: string;
  /** Name used in log file names. */
  name: string;
}

/** The guest initramfs with the virtio-pci layer appended, built once per image. */
export function pciInitrd(image: GuestImage): string {
  const manifest = readFileSync(join(image.dir, 'manifest.json'), 'utf8');
  const stamp = (JSON.parse(manifest) as { builtAt: string }).builtAt.replace(/\W/g, '');
  const name = `initrd-pci-${stamp}.gz`;
  const cached = join(cacheDir(), 'bench', name);
  if (existsSync(cached)) return cached;
  let path = cached;
  try {
    mkdirSync(join(cacheDir(), 'bench'), { recursive: true });
  } catch {
    // Inside the box the host's cache is read-only: build into the box's own /tmp.
    path = join(tmpdir(), name);
    if (existsSync(path)) return path;
  }
  const box = spawnSync('sh', ['-c', `zcat '${image.boxInitrd}'`], { maxBuffer: 1 << 30 });
  const guest = spawnSync('sh', ['-c', `zcat '${image.initrd}'`], { maxBuffer: 1 << 30 });
  const pick = (archive: Buffer, name: string): Buffer => {
    const r = spawnSync('cpio', ['-i', '--quiet', '--to-stdout', name], {
      input: archive,
      maxBuffer: 1 << 28,
    });
    if (r.status !== 0 || r.stdout.length === 0) {
      throw new Error(`bench: ${name} not found in the image (${r.stderr.toString().trim()})`);
    }
    return r.stdout;
  };
  const order = pick(guest.stdout, 'etc/modules.order').toString().trim().split('\n');
  // virtio_pci needs virtio and virtio_ring, which come first in the guest's own order.
  const at = order.indexOf('virtio.ko') + 1;
  const merged = [...order.slice(0, at), ...PCI_MODULES, ...order.slice(at)];
  const layer = writeCpio([
    ...PCI_MODULES.map((m) => ({
      kind: 'file' as const,
      path: `lib/modules/${m}`,
      data: pick(box.stdout, `lib/modules/${m}`),
    })),
    { kind: 'file', path: 'etc/modules.order', data: Buffer.from(`${merged.join('\n')}\n`) },
  ]);
  writeFileSync(path, Buffer.concat([readFileSync(image.initrd), gzipSync(layer)]));
  return path;
}

function listenOnce(path: string): { server: Server; connected: Promise<Socket> } {
  let server!: Server;
  const connected = new Promise<Socket>((resolve) => {
    server = createServer((socket) => {
      // QEMU killed mid-command resets the connection; without a listener that error ends the
      // whole bench. A command waiting on the socket times out instead.
      socket.on('error', () => socket.destroy());
      resolve(socket);
    });
  });
  server.listen(path);
  return { server, connected };
}

/** A running QEMU guest; see the module comment. */
export class QemuVm implements BenchVm {
  readonly vmm = 'qemu' as const;
  bootSeconds = 0;
  readonly qmp: QmpClient;
  readonly consoleLog: string;
  #child: ChildProcess;
  #agent: AgentClient;
  #agentSocket: Socket;
  #servers: Server[];
  #dir: string;
  #stderr = '';

  private constructor(
    child: ChildProcess,
    qmp: QmpClient,
    agentSocket: Socket,
    servers: Server[],
    dir: string,
    consoleLog: string,
  ) {
    this.#child = child;
    this.qmp = qmp;
    this.#agentSocket = agentSocket;
    this.#servers = servers;
    this.#dir = dir;
    this.consoleLog = consoleLog;
    this.#agent = this.#newAgent();
    child.stderr?.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-4096);
    });
  }

  /** Starts QEMU and resolves once the guest agent has answered a first command. */
  static async start(opts: QemuVmOptions, timeoutMs = 240_000): Promise<QemuVm> {
    const dir = mkdtempSync(join(tmpdir(), `bench-qemu-${opts.name}-`));
    const logDir = opts.logDir ?? dir;
    mkdirSync(logDir, { recursive: true });
    const consoleLog = join(logDir, `qemu-${opts.name}.console.log`);
    const agentPath = join(dir, 'agent.sock');
    const qmpPath = join(dir, 'qmp.sock');
    const agentListen = listenOnce(agentPath);
    const qmpListen = listenOnce(qmpPath);
    const half = opts.bootMiB / 2;
    const cmdline = `${opts.image.cmdline.replace(/\s*pci=off/, '')} ${opts.cmdlineExtra ?? ''}`;
    const mem = opts.memExtra ? `${opts.bootMiB}M,${opts.memExtra}` : `${opts.bootMiB}M`;
    const args = [
      ...['-machine', 'pc', '-accel', 'kvm', '-cpu', 'host', '-smp', '2', '-m', mem],
      ...['-object', `memory-backend-ram,id=boot0,size=${half}M`],
      ...['-object', `memory-backend-ram,id=boot1,size=${half}M`],
      ...['-numa', 'node,nodeid=0,cpus=0,memdev=boot0'],
      ...['-numa', 'node,nodeid=1,cpus=1,memdev=boot1'],
      ...['-nographic', '-nodefaults', '-no-user-config', '-monitor', 'none'],
      ...['-serial', `file:${consoleLog}`],
      ...['-chardev', `socket,id=agent,path=${agentPath},server=off`, '-serial', 'chardev:agent'],
      ...[
        '-chardev',
        `socket,id=qmp,path=${qmpPath},server=off`,
        '-mon',
        'chardev=qmp,mode=control',
      ],
      ...['-kernel', opts.image.kernel, '-initrd', pciInitrd(opts.image), '-append', cmdline],
      ...opts.args,
    ];
    const start = performance.now();
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<never>((_, reject) => {
      child.once('exit', (code) => reject(new Error(`qemu exited ${code}: ${stderr.trim()}`)));
      child.once('error', reject);
    });
    exited.catch(() => undefined);
    const [qmpSocket, agentSocket] = await Promise.race([
      Promise.all([qmpListen.connected, agentListen.connected]),
      exited,
    ]);
    const vm = new QemuVm(
      child,
      new QmpClient(qmpSocket),
      agentSocket,
      [agentListen.server, qmpListen.server],
      dir,
      consoleLog,
    );
    try {
      await Promise.race([vm.qmp.handshake(), exited]);
      await Promise.race([vm.#agent.ready(timeoutMs), exited]);
      await vm.#agent.exec('true', 30_000);
    } catch (error) {
      await vm.close();
      const tail = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8').slice(-2000) : '';
      throw new Error(`qemu ${opts.name} did not boot: ${String(error)}\n${tail}`);
    }
    vm.bootSeconds = (performance.now() - start) / 1000;
    return vm;
  }

  /** QEMU's process id, for reading its resident memory. */
  get pid(): number {
    return this.#child.pid ?? -1;
  }

  async exec(command: string, timeoutMs = 120_000): Promise<string> {
    const r = await this.#agent.exec(command, timeoutMs);
    if (r.code !== 0) {
      throw new Error(`guest '${command}' exited ${r.code}: ${r.stderr.toString().trim()}`);
    }
    return r.stdout.toString();
  }

  /** Like `exec` but resolves with the exit code and both outputs, whatever the code. */
  async run(command: string, timeoutMs = 120_000) {
    const r = await this.#agent.exec(command, timeoutMs);
    return { code: r.code, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  }

  async hostResidentBytes(): Promise<number> {
    const text = readFileSync(`/proc/${this.pid}/smaps_rollup`, 'utf8');
    const m = /^Rss:\s+(\d+) kB/m.exec(text);
    if (!m?.[1]) throw new Error(`qemu: no Rss in smaps_rollup of ${this.pid}`);
    return Number(m[1]) * 1024;
  }

  async reboot(timeoutMs = 240_000): Promise<void> {
    this.#agent = this.#newAgent();
    await this.qmp.execute('system_reset');
    await this.#agent.ready(timeoutMs);
    await this.#agent.exec('true', 30_000);
  }

  async close(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      const gone = new Promise((r) => this.#child.once('exit', r));
      try {
        await Promise.race([this.qmp.execute('quit'), new Promise((r) => setTimeout(r, 5000))]);
      } catch {
        // QEMU closes QMP as it quits.
      }
      const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    this.qmp.close();
    this.#agentSocket.destroy();
    for (const s of this.#servers) s.close();
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** QEMU's last stderr lines, for failure messages. */
  get stderrTail(): string {
    return this.#stderr;
  }

  #newAgent(): AgentClient {
    const agent = new AgentClient((bytes) => this.#agentSocket.write(bytes), {
      name: 'qemu-agent',
      warn: () => undefined,
    });
    this.#agentSocket.removeAllListeners('data');
    this.#agentSocket.on('data', (d: Buffer) => agent.receive(d));
    return agent;
  }
}
