/**
 * Where the VM's memory goes in guest-physical space: boot RAM split around the 32-bit hole and
 * over the NUMA nodes, and the virtio-mem regions above it.
 */
import { type RamRange, bootRamRanges } from '../arch/x86/boot.js';
import { HIGH_RAM_START } from '../arch/x86/layout.js';
import { GiB } from '../util/size.js';
import type { NumaNodeConfig, VirtioMemConfig } from './config.js';

/** A virtio-mem device's place: its region and its virtio-mmio slot. */
export interface VirtioMemPlacement {
  config: VirtioMemConfig;
  gpa: number;
}

/** Alignment of the first virtio-mem region: keeps it in its own 1 GiB page of the guest. */
const HOTPLUG_ALIGN = GiB;

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/**
 * Places the virtio-mem regions one after another from the first 1 GiB boundary at or above
 * max(4 GiB, end of boot RAM). Region sizes are multiples of 128 MiB (the Linux memory block),
 * so every region starts and ends on a memory block boundary.
 */
export function placeVirtioMem(ram: readonly RamRange[], devices: readonly VirtioMemConfig[]) {
  const ramEnd = Math.max(...ram.map((r) => r.gpa + r.size));
  let next = alignUp(Math.max(HIGH_RAM_START, ramEnd), HOTPLUG_ALIGN);
  return devices.map((config): VirtioMemPlacement => {
    const placement = { config, gpa: next };
    next += config.regionSize;
    return placement;
  });
}

/**
 * Hands out boot RAM to NUMA nodes in node order: node 0 gets the first `memory` bytes of the
 * boot RAM ranges, node 1 the next, and so on. A node with no boot memory gets no range.
 */
export function nodeRamRanges(ram: readonly RamRange[], nodes: readonly NumaNodeConfig[]) {
  const pieces: RamRange[][] = nodes.map(() => []);
  let rangeIndex = 0;
  let used = 0;
  nodes.forEach((node, i) => {
    let want = node.memory;
    while (want > 0) {
      const range = ram[rangeIndex]!;
      const take = Math.min(want, range.size - used);
      pieces[i]!.push({ gpa: range.gpa + used, size: take });
      want -= take;
      used += take;
      if (used === range.size) {
        rangeIndex++;
        used = 0;
      }
    }
  });
  return pieces;
}

export { bootRamRanges };
