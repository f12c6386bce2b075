/**
 * The scenarios of issue 6 (and the resize and reboot benchmarks of issues 3 and 5), each written
 * once against `ElasticMethod`. Sizes are above the guest's floor: 0 means nothing added (for the
 * balloon: fully inflated). Each scenario leaves what it measured in rows; a failed step records
 * a null value with the error as its note and the scenario goes on where it can.
 */
import { type ElasticMethod, QemuDimm, QemuVirtioMem, requestAndWait } from './methods.js';
import { QemuVm } from './qemu-vm.js';
import type { Recorder, Results } from './results.js';
import { guestNodeMemKiB, meminfoKiB, pollUntil, sleep } from './vm.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Longest wait for one resize step to show in the guest. */
const STEP_TIMEOUT_MS = 120_000;
/** The guest mounts its tmpfs /tmp at half of boot memory; the fills need room beyond. */
const ROOMY_TMP = 'mount -o remount,size=16G /tmp && ';
/** Unmovable (inodes, dentries of 60000 tmpfs files) then movable (512 MiB of tmpfs data). */
const FRAGMENT_FILL =
  'mkdir -p /tmp/frag && cd /tmp/frag && seq 1 60000 | xargs touch && ' +
  'dd if=/dev/zero of=/tmp/frag-data bs=1M count=512 2>/dev/null';
/** How long a shrink under fragmentation may take before what it reached is recorded. */
const FRAGMENT_TIMEOUT_MS = 60_000;
/** Bytes the speed scenario writes in the guest so that the host holds them. */
const FILL_MiB = 1024;

/** What a scenario gets. */
export interface ScenarioContext {
  m: ElasticMethod;
  rec: Recorder;
  results: Results;
}

/** A scenario: its name, which methods it applies to, and its body. */
export interface Scenario {
  name: string;
  appliesTo(m: ElasticMethod): boolean;
  run(ctx: ScenarioContext): Promise<void>;
}

const mib = (bytes: number) => bytes / MiB;
const sizeName = (bytes: number) => (bytes % GiB === 0 ? `${bytes / GiB}GiB` : `${mib(bytes)}MiB`);

/** Time until host resident memory stops falling: no new low for `quietMs`, at most `maxMs`. */
async function settleRss(m: ElasticMethod, quietMs = 1500, maxMs = 20_000) {
  const start = performance.now();
  let low = await m.vm.hostResidentBytes();
  let lowAt = start;
  while (performance.now() - lowAt < quietMs && performance.now() - start < maxMs) {
    await sleep(100);
    const now = await m.vm.hostResidentBytes();
    if (now < low - MiB) {
      low = now;
      lowAt = performance.now();
    }
  }
  return { seconds: (lowAt - start) / 1000, rss: low };
}

/** Steps `m` to `bytes`, recording guest, host and (for shrinking) host-return times. */
async function timedStep(ctx: ScenarioContext, prefix: string, bytes: number, returnTime: boolean) {
  const r = await requestAndWait(ctx.m, bytes, STEP_TIMEOUT_MS);
  const note = r.ok ? undefined : `reached ${mib(r.shown)} MiB; ${r.outcome.detail ?? 'timed out'}`;
  ctx.rec(`${prefix}_guest_s`, r.guestSeconds, 's', note);
  ctx.rec(`${prefix}_host_s`, r.hostSeconds, 's');
  if (returnTime) {
    const settled = await settleRss(ctx.m);
    ctx.rec(`${prefix}_host_returned_s`, r.guestSeconds + settled.seconds, 's');
  }
  return r;
}

/** The level `m` idles at: nothing added. The balloon gets there by inflating fully. */
async function toZero(ctx: ScenarioContext, label = 'reset_to_0', timeoutMs = STEP_TIMEOUT_MS) {
  const r = await requestAndWait(ctx.m, 0, timeoutMs);
  if (!r.ok) ctx.rec(label, mib(r.shown), 'MiB', `left above the floor: ${r.outcome.detail ?? ''}`);
  return r;
}

/** Smallest step each method adds and removes. */
const granularity: Scenario = {
  name: 'granularity',
  appliesTo: () => true,
  async run(ctx) {
    const { m, rec } = ctx;
    const dimm = m instanceof QemuDimm ? m : undefined;
    if (dimm) dimm.dimmSize = m.step;
    try {
      rec('requested_step', mib(m.step), 'MiB');
      // The balloon sits at full size, so its first step is a removal; hot-plug starts at 0.
      const balloon = m.method === 'balloon';
      const high = balloon ? m.capacity : m.step;
      const low = balloon ? m.capacity - m.step : 0;
      const first = balloon ? low : high;
      const second = balloon ? high : low;
      if (balloon) await requestAndWait(m, high, STEP_TIMEOUT_MS);
      const before = await m.shown();
      const a = await requestAndWait(m, first, STEP_TIMEOUT_MS);
      const b = await requestAndWait(m, second, STEP_TIMEOUT_MS);
      const added = balloon ? b.shown - a.shown : a.shown - before;
      const removed = balloon ? before - a.shown : a.shown - b.shown;
      rec('added_KiB', added / 1024, 'KiB', balloon ? undefined : a.outcome.detail);
      rec('removed_KiB', removed / 1024, 'KiB', (balloon ? a : b).outcome.detail);
    } finally {
      if (dimm) dimm.dimmSize = GiB;
    }
  },
};

/** Issue 3's resize benchmark: 0 -> 1 GiB -> 4 GiB -> 512 MiB -> 0 on virtio-mem. */
const resize: Scenario = {
  name: 'resize',
  appliesTo: (m) => m.method === 'virtio-mem',
  async run(ctx) {
    await toZero(ctx);
    for (const bytes of [1 * GiB, 4 * GiB, 512 * MiB, 0]) {
      await timedStep(ctx, `to_${sizeName(bytes)}`, bytes, false);
    }
  },
};

/** 0 -> 4 GiB -> 0 in 1 GiB steps, with the guest writing 1 GiB in between; host memory back. */
const speed: Scenario = {
  name: 'speed',
  appliesTo: () => true,
  async run(ctx) {
    const { m, rec, results } = ctx;
    let requested = m.method === 'balloon' ? m.capacity : 0;
    await requestAndWait(m, requested, STEP_TIMEOUT_MS);
    const t0 = performance.now();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const residentMiB = mib(await m.vm.hostResidentBytes());
        const seconds = (performance.now() - t0) / 1000;
        results.rss.push({
          method: m.method,
          vmm: m.vm.vmm,
          seconds,
          residentMiB,
          requestedMiB: mib(requested),
        });
        await sleep(250);
      }
    })();
    try {
      const rssStart = (await settleRss(m)).rss;
      const grow = async () => {
        let total = 0;
        for (let k = 1; k <= 4; k++) {
          requested = k * GiB;
          total += (await timedStep(ctx, `grow_to_${k}GiB`, requested, false)).guestSeconds;
        }
        rec('grow_total_s', total, 's');
      };
      const fillAndShrink = async () => {
        const fillStart = performance.now();
        // On vCPU 1, node 1's CPU, so the page cache fills node 1's added memory first. Run
        // where the scheduler put it, the fill landed on node 0's boot memory about half the
        // time, which no method can return: 0.545 of it came back in one run, 0.996 in another.
        await m.vm.exec(
          `${ROOMY_TMP}taskset -c 1 dd if=/dev/zero of=/tmp/fill bs=1M count=${FILL_MiB} ` +
            '2>/dev/null && rm /tmp/fill',
          300_000,
        );
        rec('guest_fill_s', (performance.now() - fillStart) / 1000, 's');
        const rssFilled = await m.vm.hostResidentBytes();
        rec('host_rss_after_fill', mib(rssFilled - rssStart), 'MiB');
        let total = 0;
        for (let k = 3; k >= 0; k--) {
          requested = k * GiB;
          total += (await timedStep(ctx, `shrink_to_${k}GiB`, requested, true)).guestSeconds;
        }
        rec('shrink_total_s', total, 's');
        const rssEnd = (await settleRss(m)).rss;
        rec('host_returned', mib(rssFilled - rssEnd), 'MiB');
        rec(
          'host_returned_fraction',
          (rssFilled - rssEnd) / Math.max(1, rssFilled - rssStart),
          '1',
        );
      };
      // A balloon guest boots with everything given, so it shrinks first and saves a full
      // inflation; hot-plug starts from nothing.
      if (m.method === 'balloon') {
        await fillAndShrink();
        await grow();
      } else {
        await grow();
        await fillAndShrink();
      }
    } finally {
      sampling = false;
      await sampler;
    }
  },
};

/** Grow by 1 GiB meant for node 1; which node gains. */
const numa: Scenario = {
  name: 'numa',
  appliesTo: () => true,
  async run(ctx) {
    const { m, rec } = ctx;
    // The balloon grows by deflating, so it first holds 1 GiB to give back.
    const from = m.method === 'balloon' ? m.capacity - GiB : 0;
    await requestAndWait(m, from, STEP_TIMEOUT_MS);
    // MemTotal per node moves for hot-plug; a deflating balloon frees pages wherever its driver
    // had taken them, which shows in MemFree.
    const field = m.method === 'balloon' ? 'freeKiB' : 'totalKiB';
    const before = await guestNodeMemKiB(m.vm);
    await requestAndWait(m, from + GiB, STEP_TIMEOUT_MS);
    const after = await guestNodeMemKiB(m.vm);
    for (const node of after) {
      const was = before.find((b) => b.node === node.node)?.[field] ?? 0;
      rec(`node${node.node}_gain`, (node[field] - was) / 1024, 'MiB');
    }
    if (m.method !== 'balloon') await toZero(ctx);
  },
};

/**
 * Reboots timed per size. A reboot in the box varies by about a tenth from one to the next, as
 * much as the ratio below may differ from 1, so the median of a few stands for each size.
 */
const REBOOT_RUNS = 3;

/** Reboots `m` REBOOT_RUNS times; the median seconds, and the state the last reboot left. */
async function medianReboot(m: ElasticMethod, agreed: number) {
  const runs: number[] = [];
  let held = 0;
  let back = { value: 0, seconds: 0, ok: false };
  for (let i = 0; i < REBOOT_RUNS; i++) {
    const start = performance.now();
    await m.vm.reboot();
    runs.push((performance.now() - start) / 1000);
    held = await m.shown();
    // Each reboot starts, and the scenario goes on, from the agreed size back in place.
    back = await pollUntil(
      () => m.shown(),
      (v) => Math.abs(v - agreed) < MiB,
      120_000,
      100,
    );
  }
  return { seconds: median(runs), runs, held, back };
}

/** The middle value of `xs` (the mean of the two middle ones for an even count). */
const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Reboot with 0 and with memory added: time, memory held right after, time until agreed again. */
const reboot: Scenario = {
  name: 'reboot',
  appliesTo: () => true,
  async run(ctx) {
    const { m, rec } = ctx;
    // Idle is nothing added for hot-plug and an empty balloon; the agreed size is everything
    // plugged for hot-plug and 1 GiB inflated for the balloon, one inflation step away.
    const balloon = m.method === 'balloon';
    const idle = balloon ? m.capacity : 0;
    const agreed = balloon ? m.capacity - GiB : m.capacity;
    await requestAndWait(m, idle, STEP_TIMEOUT_MS);
    const zeroLabel = balloon ? 'reboot_empty_s' : 'reboot_0_s';
    const zero = await medianReboot(m, idle);
    rec(zeroLabel, zero.seconds, 's', `median of ${zero.runs.map((s) => s.toFixed(2)).join(' ')}`);
    const r = await requestAndWait(m, agreed, STEP_TIMEOUT_MS);
    rec('agreed', mib(r.shown), 'MiB', r.ok ? undefined : r.outcome.detail);
    const fullLabel = balloon ? 'reboot_inflated_1GiB_s' : `reboot_${sizeName(agreed)}_s`;
    const full = await medianReboot(m, agreed);
    rec(fullLabel, full.seconds, 's', `median of ${full.runs.map((s) => s.toFixed(2)).join(' ')}`);
    const ratio = full.seconds / zero.seconds;
    rec(balloon ? 'reboot_ratio_inflated_vs_empty' : 'reboot_ratio_added_vs_0', ratio, 'x');
    rec('held_after_reboot', mib(full.held), 'MiB');
    rec(
      'agreed_again_s',
      full.back.ok ? full.back.seconds : null,
      's',
      full.back.ok ? undefined : `held ${mib(full.back.value)} MiB after 120 s`,
    );
    rec('correct_after_reboot', full.back.ok ? 1 : 0, 'bool');
    if (!balloon) await toZero(ctx);
  },
};

/**
 * Unplug under fragmentation: 2 GiB added, then the guest fills it with unmovable (inodes and
 * dentries of 60000 tmpfs files) and movable (512 MiB of tmpfs data) memory, and 2 GiB is asked
 * back (the balloon: asked to take 2 GiB from a guest given everything, filled the same way).
 * Hot-plug runs twice, hot-added memory onlined movable and onlined as kernel memory.
 */
const fragmentation: Scenario = {
  name: 'fragmentation',
  appliesTo: () => true,
  async run(ctx) {
    const { m, rec } = ctx;
    const policies = m.method === 'balloon' ? ['n/a'] : ['online_movable', 'online_kernel'];
    for (const policy of policies) {
      // The balloon is asked to take 2 GiB from a guest holding everything; hot-plug to give
      // back the 2 GiB it was given.
      const high = m.method === 'balloon' ? m.capacity : 2 * GiB;
      const low = high - 2 * GiB;
      if (policy !== 'n/a') {
        // Hot-plug starts from nothing so that all 2 GiB is onlined under this policy.
        await requestAndWait(m, low, STEP_TIMEOUT_MS);
        await m.vm.exec(`echo ${policy} > /sys/devices/system/memory/auto_online_blocks`);
      }
      await requestAndWait(m, high, STEP_TIMEOUT_MS);
      const before = await m.shown();
      await m.vm.exec(`${ROOMY_TMP}${FRAGMENT_FILL}`, 300_000);
      const r = await requestAndWait(m, low, FRAGMENT_TIMEOUT_MS);
      const suffix = policy === 'n/a' ? '' : `_${policy}`;
      rec(`returned_fraction${suffix}`, (before - r.shown) / (high - low), '1', r.outcome.detail);
      rec(`shrink${suffix}_s`, r.guestSeconds, 's', r.ok ? undefined : 'did not reach the target');
      await m.vm.exec('rm -rf /tmp/frag /tmp/frag-data', 120_000);
    }
    if (m.method !== 'balloon') {
      await m.vm.exec('echo online_movable > /sys/devices/system/memory/auto_online_blocks');
      await toZero(ctx, 'reset_to_0', FRAGMENT_TIMEOUT_MS);
    }
  },
};

/**
 * A guest touching memory it gave back. QEMU's hot-plug methods: the guest reads and writes an
 * unplugged (or removed) address through /dev/mem; balloons: the guest fills memory past what
 * it was given, which deflate-on-oom allows. Caught is what the VMM reported; growth is host
 * resident memory.
 */
const misuse: Scenario = {
  name: 'misuse',
  appliesTo: (m) => m.vm instanceof QemuVm || m.method === 'balloon',
  async run(ctx) {
    const { m, rec } = ctx;
    // The balloon keeps what fragmentation left inflated (2 GiB); hot-plug starts from 0.
    if (m.method !== 'balloon') await toZero(ctx);
    const vm = m.vm;
    const rssBefore = (await settleRss(m)).rss;
    if (m.method === 'balloon') {
      const before = await m.provided();
      const avail = meminfoKiB(await vm.exec('cat /proc/meminfo'), 'MemAvailable');
      const fillMiB = Math.floor(avail / 1024) + 256;
      const out = await vm
        .exec(
          `${ROOMY_TMP}dd if=/dev/zero of=/tmp/misuse bs=1M count=${fillMiB} 2>&1; echo rc=$?`,
          180_000,
        )
        .catch((e: unknown) => String(e));
      const reused = (await m.provided()) - before;
      rec('guest_reused', mib(reused), 'MiB', out.trim().split('\n').pop());
      rec('host_rss_growth', mib((await vm.hostResidentBytes()) - rssBefore), 'MiB');
      rec('caught', 0, 'count', 'the balloon has no notion of a forbidden page');
      await vm.exec('rm -f /tmp/misuse');
      return;
    }
    if (!(vm instanceof QemuVm)) return;
    let target: number;
    if (m instanceof QemuVirtioMem) {
      const dev = await m.device();
      target = (dev.memaddr ?? 0) + m.capacity - 4096;
    } else {
      await requestAndWait(m, 1 * GiB, STEP_TIMEOUT_MS);
      const devices =
        await vm.qmp.execute<{ type: string; data: { addr: number } }[]>('query-memory-devices');
      target = devices.find((d) => d.type === 'dimm')?.data.addr ?? 0;
      const gone = await requestAndWait(m, 0, STEP_TIMEOUT_MS);
      if (!gone.ok) rec('dimm_removed', 0, 'bool', gone.outcome.detail);
    }
    const hex = `0x${target.toString(16)}`;
    const events = vm.qmp.received.length;
    const read = await vm.run(`devmem ${hex} 64`);
    const write = await vm.run(`devmem ${hex} 64 0x5a5a5a5a5a5a5a5a && devmem ${hex} 64`);
    const said = (r: { code: number; stdout: string; stderr: string }) =>
      `exit ${r.code} ${(r.stdout + r.stderr).trim().split('\n').pop() ?? ''}`;
    rec(
      'guest_access_allowed',
      read.code === 0 ? 1 : 0,
      'bool',
      `${hex}: read ${said(read)}; write ${said(write)}`,
    );
    rec('host_rss_growth', mib((await vm.hostResidentBytes()) - rssBefore), 'MiB');
    rec('caught', vm.qmp.received.length - events, 'count', 'QMP events after the access');
  },
};

/** All scenarios in the order they run on one guest. */
export const SCENARIOS: readonly Scenario[] = [
  granularity,
  resize,
  numa,
  speed,
  reboot,
  fragmentation,
  misuse,
];
