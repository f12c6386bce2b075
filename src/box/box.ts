/**
 * Runs one command inside the box: a QEMU TCG machine with emulated AMD SVM, where `kvm_amd`
 * gives a working nested `/dev/kvm` (design.md, "The box"). The box boots Debian's vmlinux with
 * the box initramfs, mounts the host root read-only over virtio-9p with the work folder
 * read-write at the same path, chroots, and runs the command. Its stdout and stderr come back
 * live over two virtio-serial ports that QEMU connects to Unix sockets this process listens on;
 * the box kernel's console goes to a log file in the results folder; the exit code comes back
 * through the results export.
 *
 * Many commands in one box are run by giving one command that runs them all (a shell script or a
 * node test runner); each call of `runInBox` boots a fresh box.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BOX_CMDLINE, ensureGuestImage } from '../guest/image.js';
import { KVM_HOLDER } from '../util/entry-points.js';
import { MemvisorError } from '../util/errors.js';

/** Memory of the box when the caller gives none; nested guests need room. */
export const DEFAULT_BOX_MEMORY_MIB = 12288;
/** Time a box may run when the caller gives no limit: one hour. */
export const DEFAULT_BOX_TIMEOUT_MS = 3_600_000;
const KILL_GRACE_MS = 2000;
/** How often the box's console log is read for signs that its kernel stopped making progress. */
const WEDGE_POLL_MS = 5000;

/**
 * How long a box CPU may report being stuck before the box counts as wedged. The box kernel
 * warns of a soft lockup after about 26 s, but on this host the whole box machine sometimes
 * stalls that long and then goes on (the warning comes once, CPUs idle). A real wedge, seen with
 * both CPUs in memvisor's vCPU threads inside KVM_RUN (nested KVM under TCG), repeats the warning
 * every 26 s with a growing count for as long as the box runs.
 */
export const BOX_WEDGE_STUCK_SECONDS = 150;

/**
 * How long the box may go without a heartbeat before it counts as wedged. Its `/init` writes one
 * every few seconds to a virtio-serial port of its own. A box whose CPUs all stopped (seen in CI:
 * the console went quiet mid-suite and stayed so for the hour the box had) prints no soft-lockup
 * warning, because the warning needs a running CPU; only the silence shows it. The box boots in
 * about 20 s, and its longest stall seen that it recovered from was under 30 s.
 */
export const BOX_SILENCE_SECONDS = 180;

/**
 * The longest time any box CPU was reported stuck in the console log `text` (the kernel's
 * "soft lockup - CPU#n stuck for Ns!" warnings), or 0 when none was.
 */
export function longestSoftLockup(text: string): number {
  let longest = 0;
  for (const m of text.matchAll(/watchdog: BUG: soft lockup - CPU#\d+ stuck for (\d+)s!/g)) {
    longest = Math.max(longest, Number(m[1]));
  }
  return longest;
}

/**
 * Why the box counts as wedged, or undefined while it does not: a CPU reported stuck for
 * BOX_WEDGE_STUCK_SECONDS in the console log `log`, or no heartbeat for BOX_SILENCE_SECONDS
 * between `lastBeatMs` (the spawn time until the first one) and `nowMs`.
 */
export function wedgeReason(log: string, lastBeatMs: number, nowMs: number): string | undefined {
  const stuck = longestSoftLockup(log);
  if (stuck >= BOX_WEDGE_STUCK_SECONDS) {
    return `a box CPU was stuck for ${stuck} s (the box kernel's soft lockup warning)`;
  }
  const silent = Math.floor((nowMs - lastBeatMs) / 1000);
  if (silent >= BOX_SILENCE_SECONDS) return `the box sent no heartbeat for ${silent} s`;
  return undefined;
}

/**
 * Exit status of `memvisor box` when the box itself failed (it wedged or reset) rather than the
 * job: EX_TEMPFAIL, so a caller may run the job again in a new box.
 */
export const BOX_TEMPFAIL_STATUS = 75;

/** Error codes of `runInBox` that mean the box failed, not the job. */
export const BOX_FAILURE_CODES: readonly string[] = ['box_wedged', 'box_reset'];

/** Options of `runInBox`. */
export interface BoxOptions {
  /** Working directory of the command; the host's current one when absent. */
  cwd?: string;
  /** Variables added to the command's environment (PATH and HOME are always passed). */
  env?: Record<string, string>;
  /** Box memory in MiB. */
  memoryMiB?: number;
  /** Kill the box after this long and reject with code `box_timeout`. */
  timeoutMs?: number;
  /** The folder mounted read-write at its own path; the memvisor checkout when absent. */
  workDir?: string;
  /**
   * TCP ports of 127.0.0.1 on the host that QEMU forwards to ports of the box. When given, the
   * box gets a virtio-net device on QEMU's user network, restricted so that it reaches nothing
   * but these forwards, and `eth0` comes up as `BOX_NET.address` before the command runs.
   */
  hostForwards?: readonly HostForward[];
}

/** One TCP forward from the host's loopback into the box. */
export interface HostForward {
  hostPort: number;
  boxPort: number;
}

/** The box's address on QEMU's user network (slirp's default guest address and prefix). */
export const BOX_NET = { address: '10.0.2.15', prefixLength: 24 } as const;

/** QEMU's `-netdev` and `-device` arguments for `forwards`; none when the list is empty. */
export function netArgs(forwards: readonly HostForward[]): string[] {
  if (forwards.length === 0) return [];
  const rules = forwards.map((f) => {
    for (const port of [f.hostPort, f.boxPort]) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new MemvisorError('invalid_input', `box: bad TCP port ${port}`);
      }
    }
    return `,hostfwd=tcp:127.0.0.1:${f.hostPort}-${BOX_NET.address}:${f.boxPort}`;
  });
  return [
    ...['-netdev', `user,id=n0,restrict=on${rules.join('')}`],
    // No option ROM: the box boots from -kernel, and iPXE would only add its banner and delay.
    ...['-device', 'virtio-net-pci,netdev=n0,romfile='],
  ];
}

/**
 * Shell lines that bring up `lo` and `eth0` with the box address, using the host's `ip` seen
 * through the chroot; the job ends with status 125 if that fails.
 */
export function netSetupScript(): string[] {
  const addr = `${BOX_NET.address}/${BOX_NET.prefixLength}`;
  const fail = `{ echo 'box: cannot bring up eth0' >&2; exit 125; }`;
  return [`ip link set lo up && ip link set eth0 up && ip addr add ${addr} dev eth0 || ${fail}`];
}

/** The shell line that starts kvm-holder.ts in the background; the job goes on without it. */
export function kvmHolderLine(): string {
  return `${shellQuote(process.execPath)} ${shellQuote(KVM_HOLDER)} </dev/null >/dev/null 2>&1 &`;
}

/** The checkout this module was built from: the nearest folder up with a package.json. */
export function defaultWorkDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (dir !== '/' && !existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

/** Quotes `word` for a POSIX shell. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The script the box runs in the chroot: run the `setup` lines, set the folder and environment,
 * then exec argv.
 */
export function jobScript(
  argv: readonly string[],
  cwd: string,
  env: Record<string, string>,
  setup: readonly string[] = [],
) {
  if (argv.length === 0) throw new MemvisorError('invalid_input', 'box: no command given');
  for (const name of Object.keys(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new MemvisorError('invalid_input', `box: bad environment variable name '${name}'`);
    }
  }
  const vars = Object.entries(env).map(([k, v]) => shellQuote(`${k}=${v}`));
  return [
    ...setup,
    `cd ${shellQuote(cwd)} || exit 125`,
    `exec env -i ${vars.join(' ')} ${argv.map(shellQuote).join(' ')}`,
    '',
  ].join('\n');
}

function listen(path: string, onData: (chunk: Buffer) => void): Promise<Server> {
  return new Promise((resolveServer, reject) => {
    const server = createServer((socket: Socket) => {
      socket.on('data', onData);
      socket.on('error', () => socket.destroy());
    });
    server.once('error', reject);
    server.listen(path, () => resolveServer(server));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((done) => server.close(() => done()));
}

/**
 * Boots a box, runs `argv` in it, streams its output to this process's stdout and stderr, and
 * resolves with its exit code. The box is killed on timeout and on SIGINT or SIGTERM of this
 * process (which then dies of the same signal).
 */
export async function runInBox(argv: string[], opts: BoxOptions = {}): Promise<number> {
  const image = await ensureGuestImage({ quiet: true });
  const workDir = resolve(opts.workDir ?? defaultWorkDir());
  const cwd = resolve(opts.cwd ?? process.cwd());
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
    HOME: process.env.HOME ?? '/root',
    MEMVISOR_IN_BOX: '1',
    ...(process.env.MEMVISOR_CACHE ? { MEMVISOR_CACHE: process.env.MEMVISOR_CACHE } : {}),
    ...opts.env,
  };
  const forwards = opts.hostForwards ?? [];
  const setup = [kvmHolderLine(), ...(forwards.length > 0 ? netSetupScript() : [])];
  const job = jobScript(argv, cwd, env, setup);
  const results = mkdtempSync(join(tmpdir(), 'memvisor-box-'));
  writeFileSync(join(results, 'workdir'), `${workDir}\n`);
  writeFileSync(join(results, 'job.sh'), job);
  const log = join(results, 'box.log');

  let lastBeatMs = Date.now();
  const servers = [
    await listen(join(results, 'stdout.sock'), (chunk) => process.stdout.write(chunk)),
    await listen(join(results, 'stderr.sock'), (chunk) => process.stderr.write(chunk)),
    await listen(join(results, 'heartbeat.sock'), () => {
      lastBeatMs = Date.now();
    }),
  ];
  // QEMU's option syntax takes a doubled comma as a literal one.
  const virtfs = (path: string, tag: string, extra = '') => {
    const escaped = path.replaceAll(',', ',,');
    return `local,path=${escaped},mount_tag=${tag},security_model=none,multidevs=remap${extra}`;
  };
  const memory = String(opts.memoryMiB ?? DEFAULT_BOX_MEMORY_MIB);
  const args = [
    ...['-accel', 'tcg', '-cpu', 'max', '-smp', '2', '-m', memory],
    ...['-nographic', '-nodefaults', '-no-reboot', '-serial', `file:${log}`],
    // A box that resets without a panic (a triple fault) leaves its CPU state here.
    ...['-d', 'cpu_reset', '-D', join(results, 'qemu.log')],
    ...['-kernel', image.vmlinux, '-initrd', image.boxInitrd, '-append', BOX_CMDLINE],
    ...['-virtfs', virtfs('/', 'hostroot', ',readonly=on')],
    ...['-virtfs', virtfs(workDir, 'work')],
    ...['-virtfs', virtfs(results, 'results')],
    ...['-device', 'virtio-serial-pci'],
    ...['-chardev', `socket,id=out,path=${join(results, 'stdout.sock')}`],
    ...['-device', 'virtserialport,chardev=out,name=stdout'],
    ...['-chardev', `socket,id=err,path=${join(results, 'stderr.sock')}`],
    ...['-device', 'virtserialport,chardev=err,name=stderr'],
    ...['-chardev', `socket,id=beat,path=${join(results, 'heartbeat.sock')}`],
    ...['-device', 'virtserialport,chardev=beat,name=heartbeat'],
    ...netArgs(forwards),
  ];
  const qemu: ChildProcess = spawn('qemu-system-x86_64', args, {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let qemuStderr = '';
  qemu.stderr?.on('data', (chunk: Buffer) => {
    qemuStderr = (qemuStderr + chunk.toString()).slice(-4096);
  });

  let timedOut = false;
  let wedged: string | undefined;
  const kill = () => {
    if (qemu.exitCode !== null || qemu.signalCode !== null) return;
    qemu.kill('SIGTERM');
    setTimeout(() => qemu.kill('SIGKILL'), KILL_GRACE_MS).unref();
  };
  const wedgeWatch = setInterval(() => {
    const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
    wedged ??= wedgeReason(text, lastBeatMs, Date.now());
    if (wedged !== undefined) kill();
  }, WEDGE_POLL_MS);
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, opts.timeoutMs ?? DEFAULT_BOX_TIMEOUT_MS);
  const onSignal = (signal: NodeJS.Signals) => {
    kill();
    qemu.once('exit', () => {
      rmSync(results, { recursive: true, force: true });
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      process.kill(process.pid, signal);
    });
  };
  const onExit = () => qemu.kill('SIGKILL');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);

  const exit = await new Promise<{ code: number | null; error?: Error }>((done) => {
    qemu.once('error', (error) => done({ code: null, error }));
    qemu.once('exit', (code) => done({ code }));
  });
  clearTimeout(timer);
  clearInterval(wedgeWatch);
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  process.removeListener('exit', onExit);
  await Promise.all(servers.map(closeServer));

  const rcPath = join(results, 'rc');
  if (wedged !== undefined) {
    throw new MemvisorError(
      'box_wedged',
      `${wedged}, so the box was killed; box log kept in ${log}`,
    );
  }
  if (!timedOut && exit.error === undefined && existsSync(rcPath)) {
    const code = Number.parseInt(readFileSync(rcPath, 'utf8'), 10);
    rmSync(results, { recursive: true, force: true });
    return code;
  }
  if (!timedOut && exit.code === 0) {
    // The job's exit code is written before the box powers off, so a clean QEMU exit without
    // one is the box machine resetting on its own (-no-reboot turns that into an exit).
    throw new MemvisorError(
      'box_reset',
      'the box machine reset without a kernel panic while the job ran; box log kept in ' +
        `${log}, its CPU state at the reset in ${join(results, 'qemu.log')}`,
    );
  }
  const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-15).join('\n') : '';
  const why = timedOut
    ? `box timed out after ${opts.timeoutMs ?? DEFAULT_BOX_TIMEOUT_MS} ms`
    : `box ended without an exit code (qemu ${exit.error?.message ?? `status ${exit.code}`})`;
  throw new MemvisorError(
    timedOut ? 'box_timeout' : 'box_failed',
    `${why}; box log kept in ${log}\n${qemuStderr.trim()}\n${tail}`.trim(),
  );
}
