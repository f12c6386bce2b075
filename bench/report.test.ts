import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type RunInfo, renderReport } from './report.js';
import type { Row } from './results.js';

const info: RunInfo = {
  date: '2026-12-03T20:00:00Z',
  accel: 'box',
  kernel: '6.1.0-57-amd64',
  qemu: 'QEMU emulator version 7.2.22',
  seconds: 600,
  scenarios: ['resize'],
  failures: [{ vmm: 'memvisor', method: 'balloon', error: 'memvisor run ended with 2\nmore' }],
};

const row = (
  vmm: Row['vmm'],
  scenario: string,
  metric: string,
  value: number,
  unit = 's',
): Row => ({
  scenario,
  method: 'virtio-mem',
  vmm,
  metric,
  value,
  unit,
});

test('the paper table reads its cells from the rows and says why a cell is missing', () => {
  const rows = [
    row('qemu', 'granularity', 'added_KiB', 2048, 'KiB'),
    row('qemu', 'granularity', 'removed_KiB', 2048, 'KiB'),
    row('qemu', 'numa', 'node0_gain', 0, 'MiB'),
    row('qemu', 'numa', 'node1_gain', 1024, 'MiB'),
    row('qemu', 'speed', 'grow_total_s', 3.456),
    row('qemu', 'speed', 'host_returned', 1900, 'MiB'),
    row('qemu', 'speed', 'host_returned_fraction', 0.95, '1'),
  ];
  const md = renderReport(rows, info, []);
  const line = md.split('\n').find((l) => l.startsWith('| qemu virtio-mem |'));
  assert.equal(
    line,
    '| qemu virtio-mem | +2 MiB / −2 MiB | yes: node 1 1024 MiB, node 0 0 MiB | not measured | ' +
      'not measured | 3.46 s | not measured | 1900 MiB (95 % of what the guest touched) |',
  );
  const balloon = md.split('\n').find((l) => l.startsWith('| memvisor balloon |'));
  assert.match(balloon ?? '', /not measured: memvisor run ended with 2 \|/);
});

test('ratios are memvisor over QEMU for steps both measured', () => {
  const rows = [
    row('memvisor', 'resize', 'to_1GiB_guest_s', 0.3),
    row('qemu', 'resize', 'to_1GiB_guest_s', 0.6),
    row('memvisor', 'resize', 'to_4GiB_guest_s', 1.0),
  ];
  const md = renderReport(rows, info, []);
  assert.ok(md.includes('| virtio-mem | resize | to_1GiB_guest_s | 0.3 | 0.6 | 0.5 |'));
  assert.ok(!md.includes('| virtio-mem | resize | to_4GiB_guest_s |'));
});
