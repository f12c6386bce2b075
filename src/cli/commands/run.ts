/**
 * `memvisor run`: boots a guest and stays in the foreground until the guest powers off
 * (status 0), panics (status 1) or the VMM fails (status 1). With `--exec`, runs one command
 * through the guest agent once it is up, prints its output, powers the guest off and exits with
 * the command's status. With `--api-sock`, serves the control API while it runs.
 */
import {
  constants,
  accessSync,
  createWriteStream,
  existsSync,
  readFileSync,
  statSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { checkKernelImage } from '../../arch/x86/boot.js';
import { GUEST_CMDLINE, ensureGuestImage } from '../../guest/image.js';
import { formatSize } from '../../util/size.js';
import { claimUnixSocketPath } from '../../util/unix-socket.js';
import {
  MAX_VCPUS,
  type ViolationPolicy,
  type VmConfig,
  distanceMatrix,
  parseNuma,
  parseVirtioMem,
  validateConfig,
} from '../../vmm/config.js';
import type { MachineExit } from '../../vmm/machine.js';
import { Vmm } from '../../vmm/vmm.js';
import { fail, intOption, sizeOption } from '../options.js';

/** Defaults of `run`. */
export const DEFAULT_VCPUS = 2;
export const DEFAULT_MEMORY = '1G';
/** How long `--exec` waits for the guest agent to answer. */
export const AGENT_READY_TIMEOUT_MS = 600_000;
/** How long `--exec` waits for the guest to power off after its command. */
const POWEROFF_TIMEOUT_MS = 60_000;

/** Options of `run` as commander hands them over. */
export interface RunOptions {
  vcpus: string;
  memory: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  apiSock?: string;
  exec?: string;
  console: string;
  virtioMem: string[];
  numa: string[];
  numaDistance: string[];
  balloon?: string | true;
  onViolation: string;
}

function readFile(path: string, flag: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    return fail(`${flag}: cannot read '${path}': ${(err as Error).message}`);
  }
}

function exitStatus(exit: MachineExit): number {
  return exit.kind === 'poweroff' ? 0 : 1;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** Seconds between balloon statistics requests unless `--balloon stats=S` says otherwise. */
export const DEFAULT_BALLOON_STATS_SECONDS = 5;

/** `--balloon [deflate-on-oom][,stats=SECONDS]`; a mistake is a usage error. */
function parseBalloon(spec: string): { deflateOnOom: boolean; statsSeconds: number } {
  const out = { deflateOnOom: false, statsSeconds: DEFAULT_BALLOON_STATS_SECONDS };
  for (const item of spec.split(',').filter((s) => s !== '')) {
    const stats = /^stats=(\d+)$/.exec(item);
    if (item === 'deflate-on-oom') out.deflateOnOom = true;
    else if (stats && Number(stats[1]) <= 3600) out.statsSeconds = Number(stats[1]);
    else {
      fail(`--balloon: '${item}' is not an option (known: deflate-on-oom, stats=0..3600 seconds)`);
    }
  }
  return out;
}

/** Turns the flags into a validated configuration; any mistake is a usage error. */
export function configFromOptions(opts: RunOptions): VmConfig {
  const vcpus = intOption(opts.vcpus, '--vcpus', 1, MAX_VCPUS);
  const memory = sizeOption(opts.memory, '--memory');
  const policies = ['log', 'pause', 'stop'];
  if (!policies.includes(opts.onViolation)) {
    fail(`--on-violation: '${opts.onViolation}' is not one of ${policies.join(', ')}`);
  }
  const balloon = opts.balloon !== undefined;
  const balloonOpts = parseBalloon(typeof opts.balloon === 'string' ? opts.balloon : '');
  try {
    const numa = opts.numa.map(parseNuma);
    return validateConfig({
      vcpus,
      memory,
      numa,
      distances:
        numa.length || opts.numaDistance.length
          ? distanceMatrix(numa.length, opts.numaDistance)
          : undefined,
      virtioMem: opts.virtioMem.map(parseVirtioMem),
      balloon,
      balloonDeflateOnOom: balloonOpts.deflateOnOom,
      balloonStatsSeconds: balloonOpts.statsSeconds,
      onViolation: opts.onViolation as ViolationPolicy,
    });
  } catch (err) {
    return fail((err as Error).message);
  }
}

/**
 * Everything `run` can check without booting: the configuration, the files it reads and the
 * folders it writes in. Called on the host before a command goes into the box, so that a
 * mistake costs no box start, and again by `run` itself. Returns the configuration.
 */
export function checkRunOptions(opts: RunOptions): VmConfig {
  const config = configFromOptions(opts);
  for (const [flag, path] of [
    ['--kernel', opts.kernel],
    ['--initrd', opts.initrd],
  ] as const) {
    if (path === undefined) continue;
    try {
      accessSync(path, constants.R_OK);
    } catch (err) {
      fail(`${flag}: cannot read '${path}': ${(err as Error).message}`);
    }
    if (!statSync(path).isFile()) fail(`${flag}: '${path}' is not a file`);
  }
  if (opts.kernel !== undefined) {
    try {
      checkKernelImage(readFileSync(opts.kernel));
    } catch (err) {
      fail(`--kernel: '${opts.kernel}': ${(err as Error).message}`);
    }
  }
  // --api-sock's folder is checked with the rest of its path by claimUnixSocketPath, which
  // both the native run and the box's host forwarder call before anything starts.
  if (opts.console !== '-') {
    const dir = dirname(resolve(opts.console));
    if (!existsSync(dir)) fail(`--console: folder '${dir}' does not exist`);
  }
  return config;
}

/** Registers `run` on `program`. */
export function register(program: Command): void {
  program
    .command('run')
    .description('Boot a Linux guest and run it until it powers off')
    .allowExcessArguments(false)
    .option('--accel <where>', 'native, box or auto: where the guest runs', 'auto')
    .option('--vcpus <n>', 'number of vCPUs', String(DEFAULT_VCPUS))
    .option('--memory <size>', 'boot RAM, e.g. 512M or 2G', DEFAULT_MEMORY)
    .option(
      '--virtio-mem <spec>',
      'a virtio-mem device: SIZE[,id=NAME][,block=2M][,requested=SIZE][,node=N][,host-node=N]' +
        ' (repeatable)',
      collect,
      [],
    )
    .option(
      '--numa <spec>',
      'a NUMA node: node=N,cpus=A-B[:C][,memory=SIZE] (repeatable)',
      collect,
      [],
    )
    .option(
      '--numa-distance <spec>',
      'FROM:TO=DISTANCE between two nodes (repeatable)',
      collect,
      [],
    )
    .option(
      '--balloon [options]',
      'add a virtio-balloon device; options: deflate-on-oom, stats=SECONDS between statistics ' +
        `requests (default ${DEFAULT_BALLOON_STATS_SECONDS}, 0: only the first)`,
    )
    .option(
      '--on-violation <policy>',
      'guest access to unplugged memory: log, pause or stop',
      'log',
    )
    .option('--kernel <path>', 'bzImage or vmlinux (default: the cached guest image)')
    .option('--initrd <path>', 'initramfs (default: the cached guest image)')
    .option('--cmdline <text>', 'kernel command line (default: the guest image one)')
    .option('--api-sock <path>', 'serve the control API on this Unix socket')
    .option('--exec <command>', 'run a command in the guest, print its output, power off')
    .option('--console <path>', "where the guest console goes: a file, or '-' for stdout", '-')
    .action(async (opts: RunOptions) => {
      process.exitCode = await run(opts);
    });
}

async function run(opts: RunOptions): Promise<number> {
  const config = checkRunOptions(opts);
  // Refused before anything starts; listenApi claims the path again when it binds.
  if (opts.apiSock) await claimUnixSocketPath(opts.apiSock, '--api-sock');
  // Without --kernel the cached image supplies kernel and initrd; a given kernel boots alone.
  const image = opts.kernel ? undefined : await ensureGuestImage({ quiet: true });
  const kernel = readFile(opts.kernel ?? image!.kernel, '--kernel');
  const initrdPath = opts.initrd ?? image?.initrd;
  const initrd = initrdPath ? readFile(initrdPath, '--initrd') : undefined;
  const cmdline = opts.cmdline ?? GUEST_CMDLINE;
  const consoleOut =
    opts.console === '-'
      ? (b: Uint8Array) => process.stdout.write(b)
      : (() => {
          const stream = createWriteStream(opts.console);
          return (b: Uint8Array) => stream.write(b);
        })();
  const vmm = new Vmm(
    config,
    { kernel, ...(initrd ? { initrd } : {}), cmdline },
    { console: consoleOut },
  );
  const started = Date.now();
  const devices = config.virtioMem.map((d) => `virtio-mem ${d.id} ${formatSize(d.regionSize)}`);
  process.stderr.write(
    `memvisor: booting ${config.vcpus} vCPUs, ${formatSize(config.memory)}` +
      `${devices.length ? `, ${devices.join(', ')}` : ''}\n`,
  );
  // The API server (fastify) takes seconds to load in the box; it loads while the guest boots.
  const server = opts.apiSock ? import('../../api/server.js') : undefined;
  await vmm.start();
  let api: { close(): Promise<unknown> } | undefined;
  if (server && opts.apiSock) {
    try {
      api = await (await server).listenApi(vmm, opts.apiSock);
    } catch (err) {
      await vmm.stop();
      throw err;
    }
  }

  let status: number | undefined;
  if (opts.exec !== undefined) {
    try {
      await vmm.machine.agent.ready(AGENT_READY_TIMEOUT_MS);
      process.stderr.write(`memvisor: guest agent ready after ${Date.now() - started} ms\n`);
      const result = await vmm.machine.agent.exec(opts.exec, AGENT_READY_TIMEOUT_MS);
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
      status = result.code;
      vmm.machine.agent.exec('poweroff -f', POWEROFF_TIMEOUT_MS).catch(() => {});
    } catch (err) {
      process.stderr.write(`memvisor: --exec: ${(err as Error).message}\n`);
      status = 1;
      await vmm.machine.stop({ kind: 'error', message: 'exec failed' });
    }
  }
  const exit = await vmm.wait();
  if (exit.kind === 'panic') process.stderr.write('memvisor: guest kernel panic\n');
  if (exit.kind === 'error') process.stderr.write(`memvisor: ${exit.message}\n`);
  for (const line of vmm.summary()) process.stderr.write(`memvisor: ${line}\n`);
  process.stderr.write(`memvisor: ${exit.kind} after ${Date.now() - started} ms\n`);
  await api?.close();
  // The workers and the guest RAM mappings go with the process.
  setImmediate(() => process.exit(status ?? exitStatus(exit)));
  return status ?? exitStatus(exit);
}
