/** Prometheus text exposition (format 0.0.4) of a VM's status. */
import type { VmStatus } from '../vmm/controller.js';

type Labels = Record<string, string | number>;

function line(name: string, labels: Labels, value: number): string {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${String(v).replace(/["\\\n]/g, '_')}"`)
    .join(',');
  return `${name}${l ? `{${l}}` : ''} ${value}`;
}

/** Renders gauges and counters for `status`, one HELP/TYPE block per metric. */
export function renderMetrics(status: VmStatus): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, rows: [Labels, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of rows) out.push(line(name, labels, value));
  };
  metric('memvisor_vcpus', 'gauge', 'vCPUs of the VM', [[{}, status.vcpus]]);
  metric('memvisor_boot_memory_bytes', 'gauge', 'Boot RAM', [[{}, status.boot_memory]]);
  metric('memvisor_resident_bytes', 'gauge', 'Host-resident guest memory', [
    [{}, status.resident_bytes],
  ]);
  metric('memvisor_resets_total', 'counter', 'System resets', [[{}, status.resets]]);
  const devs = status.virtio_mem;
  const per = (f: (d: (typeof devs)[number]) => number): [Labels, number][] =>
    devs.map((d) => [{ device: d.id, node: d.node }, f(d)]);
  metric(
    'memvisor_virtio_mem_region_bytes',
    'gauge',
    'Device region size',
    per((d) => d.region_size),
  );
  metric(
    'memvisor_virtio_mem_usable_bytes',
    'gauge',
    'Usable region size',
    per((d) => d.usable_region_size),
  );
  metric(
    'memvisor_virtio_mem_requested_bytes',
    'gauge',
    'Requested size',
    per((d) => d.requested_size),
  );
  metric(
    'memvisor_virtio_mem_plugged_bytes',
    'gauge',
    'Plugged size',
    per((d) => d.plugged_size),
  );
  metric(
    'memvisor_virtio_mem_resident_bytes',
    'gauge',
    'Host-resident bytes of the region',
    per((d) => d.resident_bytes),
  );
  metric(
    'memvisor_virtio_mem_violations_total',
    'counter',
    'Guest accesses to unplugged blocks',
    per((d) => d.violations),
  );
  if (status.balloon) {
    metric('memvisor_balloon_target_bytes', 'gauge', 'Balloon target', [
      [{}, status.balloon.target_bytes],
    ]);
    metric('memvisor_balloon_actual_bytes', 'gauge', 'Balloon size the driver reports', [
      [{}, status.balloon.actual_bytes],
    ]);
  }
  return `${out.join('\n')}\n`;
}
