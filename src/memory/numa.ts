/**
 * Binding guest memory to a host NUMA node with mbind(2). A host with one node has only node 0;
 * any other node is refused before the VM starts, with the nodes the host does have.
 */
import { readdirSync } from 'node:fs';
import { type HostAddress, mbind } from '../sys/libc.js';
import { InvalidInputError } from '../util/errors.js';

/** The host's NUMA nodes, from sysfs. */
export function hostNodes(): number[] {
  try {
    return readdirSync('/sys/devices/system/node')
      .map((n) => /^node(\d+)$/.exec(n)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [0];
  }
}

/** MPOL_BIND: allocate only on the given nodes. */
const MPOL_BIND = 2;

/** Binds [addr, addr+len) to host node `node`; pages are placed there when first touched. */
export function bindToHostNode(addr: HostAddress, len: number, node: number): void {
  const nodes = hostNodes();
  if (!nodes.includes(node)) {
    throw new InvalidInputError(
      `host-node=${node}: this host has NUMA ${nodes.length > 1 ? 'nodes' : 'node'} ` +
        nodes.join(', '),
    );
  }
  const mask = new BigUint64Array(Math.floor(node / 64) + 1);
  mask[Math.floor(node / 64)] = 1n << BigInt(node % 64);
  mbind(addr, len, MPOL_BIND, new Uint8Array(mask.buffer), mask.length * 64 + 1);
}
