/**
 * Shared pieces of the end-to-end suite. The suite runs where /dev/kvm works (inside the box on
 * a software-KVM host); every test boots real Debian guests through `memvisor run`.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { ApiClient } from '../../src/api/client.js';
import { guestOutput } from '../../src/api/converge.js';
import { CLI, type LaunchedVm } from '../../src/api/launcher.js';

/** Time one guest boot may take in the box, with margin for a loaded host. */
export const BOOT_TIMEOUT_MS = 600_000;

/** Where each suite's VM output is kept (`dist/e2e-logs`), to read after a failure. */
export const LOG_DIR = resolve(dirname(CLI), '../../e2e-logs');

/** Stops `vm` and keeps everything it printed, its console included, in LOG_DIR/name.log. */
export async function closeKeepingLog(vm: LaunchedVm | undefined, name: string): Promise<void> {
  if (!vm) return;
  const code = await vm.close();
  mkdirSync(LOG_DIR, { recursive: true });
  writeFileSync(join(LOG_DIR, `${name}.log`), `${vm.output()}\n[memvisor exited ${code}]\n`);
}

/** The result of a `memvisor` process run to its end. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `memvisor ...args` to its end and collects its output. */
export function memvisor(args: string[], timeoutMs = BOOT_TIMEOUT_MS): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`memvisor ${args.join(' ')} timed out:\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** A number from the guest: the command's stdout, trimmed and parsed. */
export async function guestNumber(api: ApiClient, command: string): Promise<number> {
  const out = (await guestOutput(api, command)).trim();
  const n = Number(out);
  if (!Number.isFinite(n)) throw new Error(`'${command}' printed '${out}', not a number`);
  return n;
}

/** The guest's per-node MemTotal in KiB, from /sys/devices/system/node. */
export async function nodeMemTotalKiB(api: ApiClient, node: number): Promise<number> {
  return guestNumber(
    api,
    `awk '/MemTotal/ {print $4}' /sys/devices/system/node/node${node}/meminfo`,
  );
}

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
