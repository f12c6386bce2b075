/**
 * A memvisor guest for the benchmark, started with `memvisor run --api-sock` (through
 * `launchVm`) and driven only through its control API, as an operator would.
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiClient } from '../src/api/client.js';
import { guestOutput } from '../src/api/converge.js';
import { CLI, type LaunchedVm, launchVm } from '../src/api/launcher.js';
import { rogueKernel } from '../src/guest/rogue.js';
import type { VmStatus } from '../src/vmm/controller.js';
import type { Recorder } from './results.js';
import { type BenchVm, pollUntil } from './vm.js';

/** A running memvisor guest; see the module comment. */
export class MemvisorVm implements BenchVm {
  readonly vmm = 'memvisor' as const;
  readonly bootSeconds: number;
  readonly api: ApiClient;
  #launched: LaunchedVm;

  private constructor(launched: LaunchedVm, bootSeconds: number) {
    this.#launched = launched;
    this.api = launched.api;
    this.bootSeconds = bootSeconds;
  }

  /**
   * Starts `memvisor run` with `args` (after `--api-sock`) and resolves once the guest agent
   * has answered a first command, the same point QEMU's boot time is taken at.
   */
  static async start(args: string[], timeoutMs = 240_000): Promise<MemvisorVm> {
    const start = performance.now();
    const launched = await launchVm(args, { timeoutMs });
    try {
      await guestOutput(launched.api, 'true', 30_000);
    } catch (error) {
      await launched.close();
      throw error;
    }
    return new MemvisorVm(launched, (performance.now() - start) / 1000);
  }

  /** The VMM's status document. */
  status(): Promise<VmStatus> {
    return this.api.call<VmStatus>('GET', '/v1/vm');
  }

  exec(command: string, timeoutMs = 120_000): Promise<string> {
    return guestOutput(this.api, command, timeoutMs);
  }

  async hostResidentBytes(): Promise<number> {
    return (await this.status()).resident_bytes;
  }

  async reboot(timeoutMs = 240_000): Promise<void> {
    const before = (await this.status()).resets;
    await this.api.call('PUT', '/v1/vm/reset');
    const reset = await pollUntil(
      () => this.status(),
      (s) => s.resets > before && s.state === 'running',
      timeoutMs,
      50,
    );
    if (!reset.ok) {
      const { state, resets } = reset.value;
      throw new Error(
        `memvisor: no reset within ${timeoutMs} ms (state ${state}, resets ${before} -> ${resets})`,
      );
    }
    const answered = await pollUntil(
      () =>
        guestOutput(this.api, 'true', 5_000).then(
          () => true,
          () => false,
        ),
      (ok) => ok,
      timeoutMs,
      50,
    );
    if (!answered.ok) throw new Error(`memvisor: agent silent ${timeoutMs} ms after reset`);
  }

  /** Everything the VMM printed, for failure messages. */
  output(): string {
    return this.#launched.output();
  }

  async close(): Promise<void> {
    await this.#launched.close();
  }
}

/** The line `bootSecondsByExec` has the guest print. */
const ANSWER = 'memvisor-bench-answer';

/**
 * Seconds from starting `memvisor run ARGS --exec 'echo …'` until the guest agent's answer
 * reaches its stdout: the same point `MemvisorVm.start` measures, for a `run` that cannot serve
 * the control API. Rejects with the VMM's output if it ends or times out first.
 */
export function bootSecondsByExec(args: string[], timeoutMs = 240_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(
      process.execPath,
      [CLI, 'run', ...args, '--console', '/dev/null', '--exec', `echo ${ANSWER}`],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let answered = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const take = (d: Buffer) => {
      out += d.toString();
      if (!answered && out.includes(ANSWER)) {
        answered = true;
        resolve((performance.now() - start) / 1000);
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (!answered) reject(new Error(`memvisor run ended with ${code}: ${out.trim()}`));
    });
  });
}

/** Pages the rogue guest reads and then writes, each one access. */
const ROGUE_TOUCHES = 100;

/**
 * The misuse scenario on memvisor's virtio-mem: a bare guest (`rogueKernel`) reads and writes
 * 100 pages of a 1 GiB device with nothing plugged, then powers off. Records how many accesses
 * memvisor caught against how many were made, and the region's resident bytes at the end, from
 * the summary `run` prints.
 */
export async function rogueMisuse(rec: Recorder): Promise<void> {
  const kernel = join(tmpdir(), `memvisor-bench-rogue-${process.pid}.elf`);
  // The device region starts at 4 GiB; the pages lie 64 MiB into it.
  writeFileSync(kernel, rogueKernel(4 * 2 ** 30 + 64 * 2 ** 20, ROGUE_TOUCHES));
  try {
    const r = spawnSync(
      process.execPath,
      [CLI, 'run', '--memory', '256M', '--kernel', kernel, '--virtio-mem', '1G'],
      { encoding: 'utf8', timeout: 300_000 },
    );
    const caught = /(\d+) guest accesses to unplugged memory caught, first at (0x[0-9a-f]+)/.exec(
      r.stderr,
    );
    const resident = /resident (\d+) bytes/.exec(r.stderr);
    rec('touched', 2 * ROGUE_TOUCHES, 'count', 'reads and writes of unplugged blocks');
    rec(
      'caught',
      caught ? Number(caught[1]) : 0,
      'count',
      caught ? `first at ${caught[2]}` : r.stderr.slice(-300),
    );
    rec(
      'host_rss_growth',
      resident ? Number(resident[1]) / 2 ** 20 : null,
      'MiB',
      `run exited ${r.status}`,
    );
  } finally {
    rmSync(kernel, { force: true });
  }
}
