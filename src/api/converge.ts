/**
 * Client-side waiting for a resize to take effect: sets a device's requested size through the
 * API, then polls until the device's plugged size equals it and the guest's MemTotal has moved
 * by exactly the plugged change. Used by the demo, the end-to-end tests and the benchmark.
 */
import { MemvisorError } from '../util/errors.js';
import type { VirtioMemStatus, VmStatus } from '../vmm/controller.js';
import type { ApiClient } from './client.js';

/** A finished resize step. */
export interface ResizeStep {
  device: VirtioMemStatus;
  /** Seconds from the API call until plugged == requested. */
  pluggedSeconds: number;
  /** Seconds until the guest's MemTotal showed the change too. */
  guestSeconds: number;
  memTotalKiB: number;
}

/** Runs `command` in the guest and returns its stdout; throws if it fails. */
export async function guestOutput(
  api: ApiClient,
  command: string,
  timeoutMs = 120_000,
): Promise<string> {
  const r = await api.call<{ code: number; stdout: string; stderr: string }>('POST', '/v1/exec', {
    command,
    timeout_ms: timeoutMs,
  });
  if (r.code !== 0) {
    const err = Buffer.from(r.stderr, 'base64').toString();
    throw new MemvisorError('guest_command_failed', `'${command}' exited ${r.code}: ${err}`);
  }
  return Buffer.from(r.stdout, 'base64').toString();
}

/** The guest's MemTotal in KiB. */
export async function memTotalKiB(api: ApiClient): Promise<number> {
  const out = await guestOutput(api, 'grep MemTotal /proc/meminfo');
  const m = /MemTotal:\s+(\d+) kB/.exec(out);
  if (!m) throw new MemvisorError('guest_output', `unexpected /proc/meminfo line: ${out}`);
  return Number(m[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Resizes `id` to `bytes` and waits for plugged == requested, then for MemTotal ==
 * `baseKiB` + plugged/1024 when `baseKiB` is given. Throws after `timeoutMs`.
 */
export async function resizeAndWait(
  api: ApiClient,
  id: string,
  bytes: number,
  opts: { baseKiB?: number; timeoutMs?: number; pollMs?: number } = {},
): Promise<ResizeStep> {
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const pollMs = opts.pollMs ?? 50;
  const start = performance.now();
  await api.call('PATCH', `/v1/virtio-mem/${encodeURIComponent(id)}`, { requested_size: bytes });
  let device: VirtioMemStatus | undefined;
  for (;;) {
    const status = await api.call<VmStatus>('GET', '/v1/vm');
    device = status.virtio_mem.find((d) => d.id === id);
    if (device?.plugged_size === bytes) break;
    if (performance.now() - start > timeoutMs) {
      throw new MemvisorError(
        'resize_timeout',
        `${id}: plugged ${device?.plugged_size} bytes, not ${bytes}, after ${timeoutMs} ms`,
      );
    }
    await sleep(pollMs);
  }
  const pluggedSeconds = (performance.now() - start) / 1000;
  let kib = 0;
  if (opts.baseKiB === undefined) {
    kib = await memTotalKiB(api);
  } else {
    const want = opts.baseKiB + bytes / 1024;
    for (;;) {
      kib = await memTotalKiB(api);
      if (kib === want) break;
      if (performance.now() - start > timeoutMs) {
        throw new MemvisorError('resize_timeout', `${id}: MemTotal ${kib} kB, not ${want} kB`);
      }
      await sleep(pollMs);
    }
  }
  return {
    device,
    pluggedSeconds,
    guestSeconds: (performance.now() - start) / 1000,
    memTotalKiB: kib,
  };
}
