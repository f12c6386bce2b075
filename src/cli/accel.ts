/**
 * `--accel native|box|auto`, handled before commander parses: `run`, `demo` and `bench` run on
 * this machine's `/dev/kvm` (native) or, where that KVM is the software kind, the same command
 * runs inside the box (src/box/box.ts) and its exit code becomes ours. With `run --api-sock
 * PATH`, PATH is served on the host and piped into the box (src/box/forward.ts), so that the
 * control commands work from any host shell.
 */
import { constants, accessSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve, sep } from 'node:path';
import { type Accel, detectAccel } from '../box/accel.js';
import { type BoxOptions, defaultWorkDir, runInBox } from '../box/box.js';
import {
  BOX_API_PORT,
  BOX_API_SOCKET,
  FORWARD_ENV,
  type Forwarder,
  formatForwardEnv,
  forwardUnix,
  freeLoopbackPort,
  startBoxForward,
} from '../box/forward.js';
import { CLI } from '../util/entry-points.js';
import { MemvisorError } from '../util/errors.js';
import { claimUnixSocketPath } from '../util/unix-socket.js';
import { fail } from './options.js';

/** What `--accel` accepts. */
export type AccelChoice = Accel | 'auto';

/** Subcommands that boot guests and so follow `--accel`. */
export const ACCEL_COMMANDS: ReadonlySet<string> = new Set(['run', 'demo', 'bench']);

/** The variable `runInBox` sets in the box, telling memvisor that its KVM is the nested one. */
export const IN_BOX_ENV = 'MEMVISOR_IN_BOX';

const CHOICES: readonly AccelChoice[] = ['native', 'box', 'auto'];
const HELP_FLAGS = new Set(['-h', '--help', '-V', '--version']);
/** A VM in the box runs until it powers off; `setTimeout` takes no longer delay than this. */
const BOXED_RUN_TIMEOUT_MS = 2 ** 31 - 1;

/** Index of the `--` that ends the options, or argv's length. */
function optionsEnd(argv: readonly string[]): number {
  const i = argv.indexOf('--');
  return i < 0 ? argv.length : i;
}

function accelChoice(value: string | undefined): AccelChoice {
  if (value === undefined || value === '') fail('--accel needs a value: native, box or auto');
  if (!(CHOICES as readonly string[]).includes(value)) {
    fail(`--accel: '${value}' is not one of native, box, auto`);
  }
  return value as AccelChoice;
}

/**
 * Removes every `--accel X` and `--accel=X` ahead of a `--` from `argv` (in place) and returns
 * the last value given, `auto` when none is. A bad or missing value is a usage error.
 */
export function takeAccelFlag(argv: string[]): AccelChoice {
  let choice: AccelChoice = 'auto';
  for (let i = 0; i < optionsEnd(argv); ) {
    const arg = argv[i] ?? '';
    if (arg === '--accel') {
      choice = accelChoice(argv[i + 1]);
      argv.splice(i, 2);
    } else if (arg.startsWith('--accel=')) {
      choice = accelChoice(arg.slice('--accel='.length));
      argv.splice(i, 1);
    } else {
      i++;
    }
  }
  return choice;
}

/** The subcommand: the first word of `argv` that is not an option (memvisor has no global ones). */
export function subcommandOf(argv: readonly string[]): { name: string; index: number } | undefined {
  const end = optionsEnd(argv);
  for (let i = 0; i < end; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('-')) return { name: arg, index: i };
  }
  return undefined;
}

/** The value of the last `FLAG V` or `FLAG=V` in `argv`, and where it is. */
export function optionValue(
  argv: readonly string[],
  flag: string,
): { value: string; index: number; joined: boolean } | undefined {
  let found: { value: string; index: number; joined: boolean } | undefined;
  const end = optionsEnd(argv);
  for (let i = 0; i < end; i++) {
    const arg = argv[i] ?? '';
    if (arg === flag && i + 1 < end) {
      found = { value: argv[i + 1] ?? '', index: i + 1, joined: false };
      i++;
    } else if (arg.startsWith(`${flag}=`)) {
      found = { value: arg.slice(flag.length + 1), index: i, joined: true };
    }
  }
  return found;
}

/**
 * The argv the box runs: `argv` with `--accel native` after the subcommand and, when
 * `apiSocket` is given, the last `--api-sock` value replaced by it.
 */
export function boxedArgv(argv: readonly string[], apiSocket?: string): string[] {
  const out = [...argv];
  if (apiSocket !== undefined) {
    const sock = optionValue(out, '--api-sock');
    if (sock) out[sock.index] = sock.joined ? `--api-sock=${apiSocket}` : apiSocket;
  }
  const command = subcommandOf(out);
  const at = command ? command.index + 1 : 0;
  out.splice(at, 0, '--accel', 'native');
  return out;
}

/** True in the memvisor that `runInBox` started. */
export function insideBox(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[IN_BOX_ENV] === '1';
}

function errnoCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

/** Throws unless `/dev/kvm` can be opened for reading and writing. */
function requireDevKvm(): void {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (err) {
    throw new MemvisorError(
      'kvm_unavailable',
      `--accel native: /dev/kvm is not usable here (${errnoCode(err)}); use --accel box or auto`,
    );
  }
}

/**
 * Decides how a guest-booting command runs: in the box everything is native; `auto` follows
 * `detectAccel`; `native` needs an openable `/dev/kvm` and warns when it is the software kind.
 */
export function resolveAccel(choice: AccelChoice, env: NodeJS.ProcessEnv = process.env): Accel {
  if (insideBox(env)) return 'native';
  if (choice === 'auto') return detectAccel();
  if (choice === 'native') {
    requireDevKvm();
    if (detectAccel() === 'box') {
      process.stderr.write(
        'memvisor: --accel native on a software KVM (kvm_pvm): guests boot very slowly\n',
      );
    }
  }
  return choice;
}

/** The box's `/tmp` is its own tmpfs, so a host folder under it cannot be the job's folder. */
function boxCwd(workDir: string): string {
  const cwd = process.cwd();
  const tmp = resolve(tmpdir());
  const under = (dir: string) => cwd === dir || cwd.startsWith(dir + sep);
  if (under(tmp) && !under(workDir)) {
    process.stderr.write(
      `memvisor: ${cwd} is hidden in the box (its ${tmp} is empty); running from /\n`,
    );
    return '/';
  }
  return cwd;
}

/** Serves `hostPath` on the host for the VMM in the box; see `FORWARD_ENV`. */
async function hostApiForward(hostPath: string): Promise<{ forwarder: Forwarder; port: number }> {
  await claimUnixSocketPath(hostPath, '--api-sock');
  const port = await freeLoopbackPort();
  const forwarder = await forwardUnix(
    hostPath,
    { kind: 'tcp', host: '127.0.0.1', port },
    { name: 'api-forward[host]' },
  );
  return { forwarder, port };
}

/**
 * Runs `argv` in the box with the host's Unix socket `hostPath` piped to `BOX_API_SOCKET` there:
 * the box command must serve that socket and call `startBoxForward` (memvisor does both when
 * `run --api-sock` was rewritten by `boxedArgv`). The host socket is refused when live, replaced
 * when stale, and removed when the box ends or this process is stopped by SIGINT or SIGTERM.
 */
export async function runInBoxWithApiSocket(
  argv: string[],
  hostPath: string,
  opts: BoxOptions,
): Promise<number> {
  const { forwarder, port } = await hostApiForward(hostPath);
  const removeSocket = () => void forwarder.close();
  const onSignal = (signal: NodeJS.Signals) => {
    removeSocket();
    // Before runInBox has its own handlers (it first checks the image), nobody else would end us.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  // runInBox re-raises SIGINT and SIGTERM once the box is down, ending this process without an
  // 'exit' event, so the socket also goes in the signal handlers, which run ahead of its own.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', removeSocket);
  try {
    return await runInBox(argv, {
      ...opts,
      hostForwards: [...(opts.hostForwards ?? []), { hostPort: port, boxPort: BOX_API_PORT }],
      env: { ...opts.env, [FORWARD_ENV]: formatForwardEnv(BOX_API_PORT, BOX_API_SOCKET) },
    });
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('exit', removeSocket);
    await forwarder.close();
  }
}

/** Runs `argv` (a guest-booting command) in the box, forwarding its API socket if it has one. */
async function runBoxed(argv: readonly string[], command: string): Promise<number> {
  const workDir = defaultWorkDir();
  const opts: BoxOptions = { workDir, cwd: boxCwd(workDir), timeoutMs: BOXED_RUN_TIMEOUT_MS };
  const sock = command === 'run' ? optionValue(argv, '--api-sock') : undefined;
  if (sock === undefined) {
    return runInBox([process.execPath, CLI, ...boxedArgv(argv)], opts);
  }
  const inner = [process.execPath, CLI, ...boxedArgv(argv, BOX_API_SOCKET)];
  return runInBoxWithApiSocket(inner, resolve(sock.value), opts);
}

/**
 * Called by main before commander parses `argv` (the arguments after the script, edited in
 * place: `--accel` is taken out). A command bound for the box goes through `check` first (it
 * throws on a usage mistake). Resolves with the exit code when the command ran in the box,
 * or undefined when main should go on here. In the box it starts the API forwarder the host
 * asked for.
 */
export async function dispatchAccel(
  argv: string[],
  check: (argv: string[]) => Promise<void> = async () => {},
): Promise<number | undefined> {
  const choice = takeAccelFlag(argv);
  if (insideBox()) {
    await startBoxForward();
    return undefined;
  }
  const command = subcommandOf(argv);
  if (command === undefined || !ACCEL_COMMANDS.has(command.name)) return undefined;
  if (argv.slice(0, optionsEnd(argv)).some((a) => HELP_FLAGS.has(a))) return undefined;
  if (resolveAccel(choice) === 'native') return undefined;
  await check(argv);
  return runBoxed(argv, command.name);
}
