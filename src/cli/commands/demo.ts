/**
 * `memvisor demo` (what `npm start` runs): boots a guest with 1 GiB of boot memory and a 4 GiB
 * virtio-mem device, resizes the device to 1 GiB, 3 GiB, 512 MiB and 0, and prints a table per
 * step: requested and plugged size, the guest's MemTotal, the region's host-resident bytes and
 * the seconds each step took.
 */
import type { Command } from 'commander';
import { guestOutput, memTotalKiB, resizeAndWait } from '../../api/converge.js';
import { launchVm } from '../../api/launcher.js';
import { GiB, MiB, formatSize } from '../../util/size.js';
import { textTable } from '../../util/table.js';
import type { BlockMap, VmStatus } from '../../vmm/controller.js';
import { renderBlocks } from './control.js';

const STEPS = [GiB, 3 * GiB, 512 * MiB, 0];
const FILL =
  'mkdir -p /mnt/demo && mount -t tmpfs tmpfs /mnt/demo && ' +
  'head -c 536870912 /dev/zero > /mnt/demo/fill';

export function register(program: Command): void {
  program
    .command('demo')
    .description('Boot a guest and grow and shrink its memory through virtio-mem, with a report')
    .option('--vcpus <n>', 'vCPUs', '2')
    .action(async (opts: { vcpus: string }) => {
      const t0 = performance.now();
      console.log(
        'memvisor demo: booting a guest with 1 GiB of boot memory and a 4 GiB virtio-mem device',
      );
      const vm = await launchVm([
        '--vcpus',
        opts.vcpus,
        '--memory',
        '1G',
        '--virtio-mem',
        '4G,id=mem0',
      ]);
      try {
        const bootSeconds = (performance.now() - t0) / 1000;
        const base = await memTotalKiB(vm.api);
        console.log(`guest ready after ${bootSeconds.toFixed(1)} s; MemTotal ${base} kB\n`);
        const rows: (string | number)[][] = [];
        for (const bytes of STEPS) {
          const step = await resizeAndWait(vm.api, 'mem0', bytes, { baseKiB: base });
          rows.push([
            formatSize(bytes),
            formatSize(step.device.plugged_size),
            step.memTotalKiB,
            step.memTotalKiB - base,
            formatSize(step.device.resident_bytes),
            Number(step.pluggedSeconds.toFixed(2)),
            Number(step.guestSeconds.toFixed(2)),
          ]);
          console.log(`requested ${formatSize(bytes)}: plugged, and the guest shows it`);
          if (bytes === 3 * GiB) {
            const map = await vm.api.call<BlockMap>('GET', '/v1/virtio-mem/mem0/blocks');
            console.log(`\n${renderBlocks(map)}\n`);
            // Memory the guest never touches costs the host nothing; using some shows it.
            await guestOutput(vm.api, FILL, 600_000);
            const used = (await vm.api.call<VmStatus>('GET', '/v1/vm')).virtio_mem[0]!;
            rows.push([
              '(guest fills 512 MiB)',
              '',
              '',
              '',
              formatSize(used.resident_bytes),
              '',
              '',
            ]);
            console.log('the guest wrote 512 MiB into a tmpfs file');
          }
          if (bytes === 512 * MiB) await guestOutput(vm.api, 'rm -f /mnt/demo/fill');
        }
        console.log(
          `\n${textTable(
            [
              'requested',
              'plugged',
              'MemTotal kB',
              'vs boot kB',
              'host resident',
              'plugged s',
              'guest s',
            ],
            rows,
          )}\n`,
        );
        console.log(
          'host resident = bytes of the device region backed by host memory (mincore); ' +
            'after a shrink it drops because unplugged blocks are discarded.',
        );
      } finally {
        const code = await vm.close();
        console.log(
          `VM stopped (status ${code}); total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
      }
    });
}
