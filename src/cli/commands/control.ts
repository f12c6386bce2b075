/**
 * The commands that talk to a running VM through its API socket: status, stop, reset, exec,
 * resize, balloon, blocks, events.
 */
import type { Command } from 'commander';
import { ApiClient } from '../../api/client.js';
import { parseSize } from '../../util/size.js';
import type { BlockMap, VirtioMemStatus, VmStatus } from '../../vmm/controller.js';
import { fail, sizeOption } from '../options.js';

const SOCK_FLAG = '--api-sock <path>';
const SOCK_HELP = 'Unix socket of the running VM (memvisor run --api-sock)';

function client(opts: { apiSock: string }): ApiClient {
  return new ApiClient(opts.apiSock);
}

/** Picks the device a command names, or the only one. */
async function deviceId(api: ApiClient, given: string | undefined): Promise<string> {
  if (given) return given;
  const devices = await api.call<VirtioMemStatus[]>('GET', '/v1/virtio-mem');
  if (devices.length === 1) return devices[0]!.id;
  const ids = devices.map((d) => d.id).join(', ') || 'none';
  return fail(`--device is needed: the VM has ${devices.length} virtio-mem devices (${ids})`);
}

/** Draws a block map as rows of 64 blocks with the guest-physical address of each row. */
export function renderBlocks(map: BlockMap): string {
  const perRow = 64;
  const rows: string[] = [];
  for (let i = 0; i < map.plugged.length; i += perRow) {
    const addr = map.addr + i * map.block_size;
    const cells = map.plugged.slice(i, i + perRow);
    const usable = i < map.usable_blocks ? '' : '  (beyond usable region)';
    rows.push(`0x${addr.toString(16).padStart(12, '0')} ${cells}${usable}`);
  }
  const plugged = [...map.plugged].filter((c) => c === '#').length;
  const mib = map.block_size / (1 << 20);
  rows.push(`${map.id}: ${plugged}/${map.plugged.length} blocks of ${mib} MiB plugged ('#')`);
  return rows.join('\n');
}

export function register(program: Command): void {
  program
    .command('status')
    .description('Print the VM state as JSON (sizes in bytes)')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .action(async (opts) => {
      console.log(JSON.stringify(await client(opts).call<VmStatus>('GET', '/v1/vm'), null, 2));
    });

  program
    .command('stop')
    .description('Power the VM off')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .action(async (opts) => {
      await client(opts).call('PUT', '/v1/vm/stop');
    });

  program
    .command('reset')
    .description('System reset: unplugs every virtio-mem block and reboots the guest')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .action(async (opts) => {
      await client(opts).call('PUT', '/v1/vm/reset');
    });

  for (const [name, help] of [
    ['pause', 'Stop every vCPU where it is'],
    ['resume', 'Let a paused VM run again'],
  ] as const) {
    program
      .command(name)
      .description(help)
      .requiredOption(SOCK_FLAG, SOCK_HELP)
      .action(async (opts) => {
        await client(opts).call('PUT', `/v1/vm/${name}`);
      });
  }

  program
    .command('exec')
    .description('Run a command in the guest; prints its output and exits with its status')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .option('--timeout <seconds>', 'give up after this many seconds', '600')
    .argument('<command...>', 'the command, run with sh -c in the guest')
    .action(async (words: string[], opts) => {
      const timeout = Number(opts.timeout);
      if (!Number.isInteger(timeout) || timeout <= 0)
        fail(`--timeout: '${opts.timeout}' is not a whole number of seconds`);
      const r = await client(opts).call<{ code: number; stdout: string; stderr: string }>(
        'POST',
        '/v1/exec',
        {
          command: words.join(' '),
          timeout_ms: timeout * 1000,
        },
      );
      process.stdout.write(Buffer.from(r.stdout, 'base64'));
      process.stderr.write(Buffer.from(r.stderr, 'base64'));
      process.exitCode = r.code;
    });

  program
    .command('resize')
    .description("Set a virtio-mem device's requested size (e.g. 1G, 130M, bytes)")
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .option('--device <id>', 'device id (needed when the VM has more than one)')
    .argument('<size>', 'requested size')
    .action(async (size: string, opts) => {
      const bytes = sizeOption(size, 'SIZE');
      const api = client(opts);
      const id = await deviceId(api, opts.device);
      const dev = await api.call<VirtioMemStatus>(
        'PATCH',
        `/v1/virtio-mem/${encodeURIComponent(id)}`,
        {
          requested_size: bytes,
        },
      );
      console.log(JSON.stringify(dev, null, 2));
    });

  program
    .command('blocks')
    .description("Draw a virtio-mem device's blocks: plugged or not")
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .option('--device <id>', 'device id (needed when the VM has more than one)')
    .action(async (opts) => {
      const api = client(opts);
      const id = await deviceId(api, opts.device);
      console.log(
        renderBlocks(
          await api.call<BlockMap>('GET', `/v1/virtio-mem/${encodeURIComponent(id)}/blocks`),
        ),
      );
    });

  program
    .command('balloon')
    .description('Set the virtio-balloon target: how much memory to take from the guest')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .argument('<size>', 'balloon size')
    .action(async (size: string, opts) => {
      await client(opts).call('PUT', '/v1/balloon', { target_size: parseSize(size, 'SIZE') });
    });

  program
    .command('events')
    .description('Stream VM events (size changes, violations, resets) as JSON lines')
    .requiredOption(SOCK_FLAG, SOCK_HELP)
    .action(async (opts) => {
      await client(opts).events((e) => console.log(JSON.stringify(e)));
    });
}
