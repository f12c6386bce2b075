/**
 * The Markdown report: the paper-style table first (one row per method, every cell read from
 * this run's rows), then memvisor/QEMU ratios per step, then every measured row.
 */
import { markdownTable } from '../src/util/table.js';
import type { Row } from './results.js';

/** Facts about the run printed under the title. */
export interface RunInfo {
  date: string;
  accel: string;
  kernel: string;
  qemu: string;
  seconds: number;
  scenarios: string[];
  /** VMs that could not be started, with why. */
  failures: { vmm: string; method: string; error: string }[];
}

const round = (v: number, digits = 2) => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

function value(rows: Row[], q: Partial<Row>): Row | undefined {
  return rows.find((r) => Object.entries(q).every(([k, v]) => r[k as keyof Row] === v));
}

function num(rows: Row[], q: Partial<Row>): number | undefined {
  const v = value(rows, q)?.value;
  return v === null || v === undefined ? undefined : v;
}

function kib(k: number): string {
  return k >= 1024 ? `${round(k / 1024, 1)} MiB` : `${round(k, 1)} KiB`;
}

/** One paper-table row for a method on a VMM. */
function paperRow(rows: Row[], vmm: Row['vmm'], method: string, why: string): string[] {
  const q = (scenario: string, metric: string) => num(rows, { vmm, method, scenario, metric });
  const missing = `not measured${why ? `: ${why}` : ''}`;
  const add = q('granularity', 'added_KiB');
  const rem = q('granularity', 'removed_KiB');
  const gran =
    add === undefined && rem === undefined
      ? missing
      : `+${add === undefined ? '?' : kib(add)} / −${rem === undefined ? '?' : kib(rem)}`;
  const n0 = q('numa', 'node0_gain');
  const n1 = q('numa', 'node1_gain');
  let numaCell = missing;
  if (n0 !== undefined && n1 !== undefined) {
    const aware = n1 > 0 && n1 >= 0.9 * (n0 + n1) && Math.abs(n0) < 0.1 * n1;
    numaCell = `${aware ? 'yes' : 'no'}: node 1 ${round(n1, 0)} MiB, node 0 ${round(n0, 0)} MiB`;
  }
  const correct = q('reboot', 'correct_after_reboot');
  const held = q('reboot', 'held_after_reboot');
  const again = q('reboot', 'agreed_again_s');
  const agreed = q('reboot', 'agreed');
  const rebootCell =
    correct === undefined
      ? missing
      : `${correct ? 'yes' : 'no'}: held ${round(held ?? Number.NaN, 0)} of ` +
        `${round(agreed ?? Number.NaN, 0)} MiB at first answer` +
        (again === undefined ? '' : `, agreed after ${round(again, 1)} s`);
  const caught = q('misuse', 'caught');
  const growth = q('misuse', 'host_rss_growth');
  const allowed = q('misuse', 'guest_access_allowed');
  const reused = q('misuse', 'guest_reused');
  const touched = q('misuse', 'touched');
  let misuseCell = missing;
  if (caught !== undefined) {
    const what =
      touched !== undefined
        ? `guest touched unplugged blocks ${touched} times`
        : reused !== undefined
          ? `guest took back ${round(reused, 0)} MiB`
          : `guest access ${allowed ? 'allowed' : 'refused by the guest kernel'}`;
    const host = `host +${round(growth ?? Number.NaN, 0)} MiB`;
    misuseCell = `${caught > 0 ? 'yes' : 'no'} (${caught} caught): ${what}, ${host}`;
  }
  const grow = q('speed', 'grow_total_s');
  const shrink = q('speed', 'shrink_total_s');
  const returned = q('speed', 'host_returned');
  const fraction = q('speed', 'host_returned_fraction');
  const shrinkNote = value(rows, {
    vmm,
    method,
    scenario: 'speed',
    metric: 'shrink_to_0GiB_guest_s',
  })?.note;
  return [
    `${vmm} ${method}`,
    gran,
    numaCell,
    rebootCell,
    misuseCell,
    grow === undefined ? missing : `${round(grow)} s`,
    shrink === undefined ? missing : `${round(shrink)} s${shrinkNote ? ` (${shrinkNote})` : ''}`,
    returned === undefined
      ? missing
      : `${round(returned, 0)} MiB (${round((fraction ?? 0) * 100, 0)} % of what the guest ` +
        'touched)',
  ];
}

/** memvisor/QEMU ratio rows for every metric both measured in `scenario` with unit `s`. */
function ratios(rows: Row[], method: string, scenarios: string[]): (string | number)[][] {
  const out: (string | number)[][] = [];
  for (const r of rows) {
    if (r.vmm !== 'memvisor' || r.method !== method || !scenarios.includes(r.scenario)) continue;
    if (r.unit !== 's' || r.value === null) continue;
    const peer = num(rows, { vmm: 'qemu', method, scenario: r.scenario, metric: r.metric });
    if (peer === undefined) continue;
    out.push([r.scenario, r.metric, round(r.value, 3), round(peer, 3), round(r.value / peer, 2)]);
  }
  return out;
}

/** The whole report. `plots` are file names of SVGs beside it, with their captions. */
export function renderReport(
  rows: Row[],
  info: RunInfo,
  plots: { file: string; caption: string }[],
): string {
  const methods: [Row['vmm'], string][] = [
    ['memvisor', 'virtio-mem'],
    ['memvisor', 'balloon'],
    ['qemu', 'virtio-mem'],
    ['qemu', 'pc-dimm'],
    ['qemu', 'balloon'],
  ];
  const why = (vmm: string, method: string) =>
    info.failures.find((f) => f.vmm === vmm && f.method === method)?.error.split('\n')[0] ?? '';
  const paper = markdownTable(
    [
      'method',
      'granularity (add / remove)',
      'NUMA-aware (grow node 1)',
      'correct after reboot',
      'detects misuse',
      'grow time 0→4 GiB',
      'shrink time 4→0 GiB',
      'memory returned',
    ],
    methods.map(([vmm, method]) => paperRow(rows, vmm, method, why(vmm, method))),
  );
  const ratioRows = ['virtio-mem', 'balloon'].flatMap((method) =>
    ratios(rows, method, ['boot', 'resize', 'speed', 'reboot']).map((r) => [method, ...r]),
  );
  const lines = [
    '# memvisor benchmark',
    '',
    `Run of ${info.date}: accel ${info.accel}, guest kernel ${info.kernel}, ${info.qemu}, ` +
      `${round(info.seconds / 60, 1)} minutes, scenarios ${info.scenarios.join(', ')}.`,
    'Every cell comes from this run; sizes are above the guest floor (1 GiB of boot memory;',
    'the balloon guests boot with 5 GiB and start with 4 GiB inflated).',
    '',
    paper,
    '',
  ];
  if (info.failures.length > 0) {
    lines.push('## VMs that did not start', '');
    for (const f of info.failures) lines.push(`- ${f.vmm} ${f.method}: ${f.error.split('\n')[0]}`);
    lines.push('');
  }
  const boots = rows.filter((r) => r.scenario === 'boot' && r.metric === 'boot_to_agent_s');
  if (boots.length > 0) {
    const qemuBoot = num(rows, { vmm: 'qemu', method: 'virtio-mem', scenario: 'boot' });
    lines.push('## Boot: start until the guest agent first answers', '');
    lines.push(
      markdownTable(
        ['vmm', 'guest', 'seconds', 'ratio to QEMU virtio-mem guest', 'note'],
        boots.map((r) => [
          r.vmm,
          r.method,
          r.value === null ? 'n/a' : round(r.value, 2),
          r.value === null || qemuBoot === undefined ? 'n/a' : round(r.value / qemuBoot, 2),
          r.note ?? '',
        ]),
      ),
      '',
    );
  }
  lines.push('## memvisor / QEMU, per step', '');
  lines.push(
    ratioRows.length === 0
      ? 'No step was measured on both VMMs in this run.'
      : markdownTable(['method', 'scenario', 'step', 'memvisor s', 'QEMU s', 'ratio'], ratioRows),
    '',
  );
  for (const p of plots) lines.push(`![${p.caption}](${p.file})`, '');
  lines.push('## Every measurement', '');
  lines.push(
    markdownTable(
      ['scenario', 'vmm', 'method', 'metric', 'value', 'unit', 'note'],
      rows.map((r) => [
        r.scenario,
        r.vmm,
        r.method,
        r.metric,
        r.value === null ? 'n/a' : round(r.value, 3),
        r.unit,
        r.note ?? '',
      ]),
    ),
    '',
  );
  return lines.join('\n');
}
