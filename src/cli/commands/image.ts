/**
 * `memvisor image [--quiet] [--smoke]`: builds the guest image if needed and prints its paths
 * and versions; `--smoke` then boots it under QEMU/KVM and runs a command through the agent.
 */
import type { Command } from 'commander';
import { type GuestImage, ensureGuestImage } from '../../guest/image.js';
import { startQemuGuest } from '../../guest/qemu-guest.js';
import { MemvisorError } from '../../util/errors.js';

async function smoke(image: GuestImage): Promise<void> {
  const guest = await startQemuGuest(image);
  try {
    const began = Date.now();
    const result = await guest.agent.exec('uname -r; grep MemTotal /proc/meminfo; lsmod');
    const execMs = Date.now() - began;
    process.stdout.write(result.stdout);
    process.stdout.write(
      `console marker ${guest.markerMs} ms, agent ready ${guest.agentMs} ms, exec ${execMs} ms\n`,
    );
    if (result.code !== 0 || !result.stdout.includes(image.kernelVersion)) {
      throw new MemvisorError('guest_failed', `smoke command failed: ${result.stderr}`);
    }
  } finally {
    await guest.stop();
  }
}

/** Adds the `image` command to `program`. */
export function register(program: Command): void {
  program
    .command('image')
    .description('build (if needed) the cached guest image and print its paths and versions')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--smoke', 'boot the image under QEMU/KVM and run a command through its agent')
    .action(async (options: { quiet?: boolean; smoke?: boolean }) => {
      const image = await ensureGuestImage({ quiet: options.quiet ?? false });
      if (!options.quiet) printImage(image);
      if (options.smoke) await smoke(image);
    });
}

function printImage(image: GuestImage): void {
  const rows: [string, string][] = [
    ['kernel version', image.kernelVersion],
    ['bzImage', image.kernel],
    ['vmlinux', image.vmlinux],
    ['guest initrd', image.initrd],
    ['box initrd', image.boxInitrd],
    ['command line', image.cmdline],
    ['manifest', `${image.dir}/manifest.json`],
  ];
  for (const [name, value] of rows) process.stdout.write(`${name.padEnd(16)}${value}\n`);
}
