/**
 * Starts `memvisor run` as a child process with an API socket and waits until its guest agent
 * answers: the way the demo, the end-to-end tests and the benchmark get a running VM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../util/entry-points.js';
import { MemvisorError } from '../util/errors.js';
import type { VmStatus } from '../vmm/controller.js';
import { ApiClient } from './client.js';

/** The CLI that `launchVm` starts. */
export { CLI };

/** A VMM child process and its API. */
export interface LaunchedVm {
  api: ApiClient;
  socket: string;
  child: ChildProcess;
  /** Everything the VMM printed (guest console and logs), for failure messages. */
  output(): string;
  /** Resolves with the exit status once the VMM has ended. */
  exited: Promise<number>;
  /** Stops the VM through the API (or kills it) and removes the socket folder. */
  close(): Promise<number>;
}

/**
 * Runs `memvisor run --api-sock <tmp> ...args` and resolves once `GET /v1/vm` reports
 * `running` (the agent answered). Rejects, with the VMM's output, if it ends or times out first.
 */
export async function launchVm(
  args: string[],
  opts: { timeoutMs?: number } = {},
): Promise<LaunchedVm> {
  const dir = mkdtempSync(join(tmpdir(), 'memvisor-vm-'));
  const socket = join(dir, 'api.sock');
  const child = spawn(process.execPath, [CLI, 'run', '--api-sock', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  const exited = new Promise<number>((resolve) => {
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  let ended: number | undefined;
  void exited.then((c) => {
    ended = c;
  });
  const api = new ApiClient(socket);
  const deadline = performance.now() + (opts.timeoutMs ?? 600_000);
  for (;;) {
    if (ended !== undefined) {
      rmSync(dir, { recursive: true, force: true });
      throw new MemvisorError(
        'vm_ended',
        `memvisor run ended with ${ended} before it was ready:\n${log}`,
      );
    }
    try {
      const s = await api.call<VmStatus>('GET', '/v1/vm');
      if (s.state === 'running') break;
    } catch {
      // Not listening yet.
    }
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new MemvisorError('vm_timeout', `the VM was not ready in time:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const close = async (): Promise<number> => {
    if (ended === undefined) {
      try {
        await api.call('PUT', '/v1/vm/stop');
      } catch {
        child.kill('SIGKILL');
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
    return exited;
  };
  return { api, socket, child, output: () => log, exited, close };
}
