/**
 * What a scenario needs of a running guest, whichever VMM runs it: commands through the guest
 * agent, the host memory the VMM holds, and a reset. `QemuVm` and `MemvisorVm` implement it.
 */

/** A running benchmark guest. */
export interface BenchVm {
  /** `qemu` or `memvisor`. */
  readonly vmm: 'qemu' | 'memvisor';
  /** Seconds from the VMM's start until the guest agent's first answer. */
  readonly bootSeconds: number;
  /** Runs `command` in the guest and returns its stdout; rejects if it exits non-zero. */
  exec(command: string, timeoutMs?: number): Promise<string>;
  /** Host bytes resident for the whole VMM process (boot memory and hot-plugged memory). */
  hostResidentBytes(): Promise<number>;
  /** Resets the guest as a reboot would and resolves once its agent answers again. */
  reboot(timeoutMs?: number): Promise<void>;
  /** Powers the VM off and frees everything it held. */
  close(): Promise<void>;
}

/** Reads one `Name: value kB` field of a `/proc/meminfo`-like text, in KiB. */
export function meminfoKiB(text: string, field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(text);
  if (!m?.[1]) throw new Error(`no ${field} in: ${text.slice(0, 200)}`);
  return Number(m[1]);
}

/**
 * The guest's MemTotal in KiB. One line, not the whole file: the guest agent's channel is a
 * serial port, and the bench polls this while it times each step.
 */
export async function guestMemTotalKiB(vm: BenchVm): Promise<number> {
  return meminfoKiB(await vm.exec('grep MemTotal /proc/meminfo'), 'MemTotal');
}

/** Per-NUMA-node MemTotal and MemFree in KiB, indexed by node id. */
export async function guestNodeMemKiB(
  vm: BenchVm,
): Promise<{ node: number; totalKiB: number; freeKiB: number }[]> {
  const out = await vm.exec("grep -h -E 'MemTotal|MemFree' /sys/devices/system/node/node*/meminfo");
  const nodes = new Map<number, { node: number; totalKiB: number; freeKiB: number }>();
  for (const line of out.split('\n')) {
    const m = /^Node (\d+) (MemTotal|MemFree):\s+(\d+) kB/.exec(line);
    if (!m) continue;
    const node = Number(m[1]);
    const entry = nodes.get(node) ?? { node, totalKiB: 0, freeKiB: 0 };
    if (m[2] === 'MemTotal') entry.totalKiB = Number(m[3]);
    else entry.freeKiB = Number(m[3]);
    nodes.set(node, entry);
  }
  return [...nodes.values()].sort((a, b) => a.node - b.node);
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `probe` every `pollMs` until `done` holds or `timeoutMs` passes; resolves with the last
 * value, the seconds taken and whether `done` held.
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
  pollMs = 100,
): Promise<{ value: T; seconds: number; ok: boolean }> {
  const start = performance.now();
  for (;;) {
    const value = await probe();
    const seconds = (performance.now() - start) / 1000;
    if (done(value)) return { value, seconds, ok: true };
    if (seconds * 1000 > timeoutMs) return { value, seconds, ok: false };
    await sleep(pollMs);
  }
}
