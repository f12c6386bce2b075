/**
 * Shared pieces of the end-to-end suite. The suite runs where /dev/kvm works (inside the box on
 * a software-KVM host); every test boots real Debian guests through `memvisor run`.
 */
import { spawn } from 'node:child_process';
import type { ApiClient } from '../../src/api/client.js';
import { guestOutput } from '../../src/api/converge.js';
import { CLI } from '../../src/api/launcher.js';

/** Time one guest boot may take in the box, with margin for a loaded host. */
export const BOOT_TIMEOUT_MS = 600_000;

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
