/**
 * The VM's configuration as the command line gives it, parsed and validated before anything is
 * started: a bad value is an InvalidInputError naming the flag, and nothing runs.
 */
import { InvalidInputError } from '../util/errors.js';
import { GiB, MiB, parseSize } from '../util/size.js';

/** The x86-64 memory block: the unit Linux adds and removes memory in. */
export const MEMORY_BLOCK_SIZE = 128 * MiB;
/** Smallest virtio-mem block: the x86-64 pageblock (THP) size. */
export const MIN_BLOCK_SIZE = 2 * MiB;
/** The MADT's 8-bit local APIC entries allow at most 254 vCPUs; 64 is what is tested. */
export const MAX_VCPUS = 64;

/** What `--on-violation` does when the guest touches an unplugged block. */
export type ViolationPolicy = 'log' | 'pause' | 'stop';

export interface VirtioMemConfig {
  id: string;
  regionSize: number;
  blockSize: number;
  requestedSize: number;
  /** Guest NUMA node (ACPI proximity domain), or undefined on a VM without --numa. */
  node: number | undefined;
  /** Host NUMA node the region's memory is bound to, if any. */
  hostNode: number | undefined;
}

export interface NumaNodeConfig {
  node: number;
  cpus: number[];
  memory: number;
}

export interface VmConfig {
  vcpus: number;
  memory: number;
  numa: NumaNodeConfig[];
  distances: number[][] | undefined;
  virtioMem: VirtioMemConfig[];
  balloon: boolean;
  /** Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM (the guest may take inflated pages back). */
  balloonDeflateOnOom: boolean;
  /** Seconds between requests for the guest's balloon statistics; 0 asks only once, at start. */
  balloonStatsSeconds: number;
  onViolation: ViolationPolicy;
}

function bad(flag: string, message: string): never {
  throw new InvalidInputError(`${flag}: ${message}`);
}

/** Splits `a=1,b=2` (with an optional leading bare value) into a map and the bare value. */
function keyValues(
  flag: string,
  text: string,
  keys: string[],
): [string | undefined, Map<string, string>] {
  const map = new Map<string, string>();
  let bare: string | undefined;
  text.split(',').forEach((part, i) => {
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (i !== 0) bad(flag, `'${part}' is not key=value`);
      bare = part;
      return;
    }
    const key = part.slice(0, eq);
    if (!keys.includes(key)) bad(flag, `unknown key '${key}' (known: ${keys.join(', ')})`);
    if (map.has(key)) bad(flag, `'${key}' given twice`);
    map.set(key, part.slice(eq + 1));
  });
  return [bare, map];
}

function wholeNumber(flag: string, key: string, value: string, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) > max) {
    bad(flag, `${key}='${value}' is not a whole number from 0 to ${max}`);
  }
  return Number(value);
}

/** Parses a CPU list such as `0-1,4` (commas inside come as `0-1:4` too). */
export function parseCpuList(flag: string, text: string): number[] {
  const cpus: number[] = [];
  for (const part of text.split(/[:;]/)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) bad(flag, `cpus='${text}' is not a CPU list such as 0-1 or 0:2`);
    const lo = Number(m[1]);
    const hi = Number(m[2] ?? m[1]);
    if (hi < lo || hi >= MAX_VCPUS) bad(flag, `cpus='${text}' has a bad range`);
    for (let c = lo; c <= hi; c++) cpus.push(c);
  }
  return cpus;
}

/** Parses one `--virtio-mem SIZE[,id=NAME][,block=2M][,requested=SIZE][,node=N][,host-node=N]`. */
export function parseVirtioMem(text: string, index: number): VirtioMemConfig {
  const flag = '--virtio-mem';
  const [bare, kv] = keyValues(flag, text, [
    'size',
    'id',
    'block',
    'requested',
    'node',
    'host-node',
  ]);
  const sizeText = kv.get('size') ?? bare;
  if (sizeText === undefined) bad(flag, 'a region size is needed, e.g. --virtio-mem 4G');
  const regionSize = parseSize(sizeText, flag);
  const blockSize = parseSize(kv.get('block') ?? '2M', `${flag} block`);
  const requestedSize = parseSize(kv.get('requested') ?? '0', `${flag} requested`);
  const id = kv.get('id') ?? `mem${index}`;
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(id)) bad(flag, `id='${id}' must be 1-32 of A-Z a-z 0-9 _ . -`);
  if (blockSize < MIN_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0 || blockSize > GiB) {
    bad(flag, `block=${kv.get('block')} must be a power of two from 2 MiB to 1 GiB`);
  }
  if (regionSize === 0 || regionSize % MEMORY_BLOCK_SIZE !== 0) {
    bad(flag, `region size ${sizeText} must be a non-zero multiple of 128 MiB`);
  }
  if (regionSize % blockSize !== 0) bad(flag, `region size ${sizeText} is not a multiple of block`);
  if (regionSize > 1024 * GiB) bad(flag, `region size ${sizeText} is above 1 TiB`);
  if (requestedSize % blockSize !== 0) {
    bad(flag, `requested=${kv.get('requested')} is not a multiple of the block size`);
  }
  if (requestedSize > regionSize) bad(flag, `requested=${kv.get('requested')} exceeds the region`);
  const node = kv.has('node') ? wholeNumber(flag, 'node', kv.get('node')!, 63) : undefined;
  const hostNode = kv.has('host-node')
    ? wholeNumber(flag, 'host-node', kv.get('host-node')!, 1023)
    : undefined;
  return { id, regionSize, blockSize, requestedSize, node, hostNode };
}

/** Parses one `--numa node=N,cpus=LIST[,memory=SIZE]`. */
export function parseNuma(text: string): NumaNodeConfig {
  const flag = '--numa';
  const [bare, kv] = keyValues(flag, text, ['node', 'cpus', 'memory']);
  if (bare !== undefined) bad(flag, `'${bare}' is not key=value`);
  if (!kv.has('node')) bad(flag, 'node=N is needed');
  const node = wholeNumber(flag, 'node', kv.get('node')!, 63);
  const cpus = kv.has('cpus') ? parseCpuList(flag, kv.get('cpus')!) : [];
  const memory = parseSize(kv.get('memory') ?? '0', `${flag} memory`);
  if (memory % MEMORY_BLOCK_SIZE !== 0) {
    bad(flag, `memory=${kv.get('memory')} of node ${node} must be a multiple of 128 MiB`);
  }
  return { node, cpus, memory };
}

/**
 * Parses `--numa-distance 0:1=30`-style entries into a full matrix (10 local, 20 remote). A
 * distance holds both ways, so a pair may be given once, in either order.
 */
export function distanceMatrix(nodes: number, entries: string[]): number[][] {
  if (nodes === 0 && entries.length > 0) bad('--numa-distance', 'needs --numa nodes');
  const d: number[][] = Array.from({ length: nodes }, (_, i) =>
    Array.from({ length: nodes }, (_, j) => (i === j ? 10 : 20)),
  );
  const given = new Set<string>();
  for (const e of entries) {
    const m = /^(\d+):(\d+)=(\d+)$/.exec(e);
    if (!m) bad('--numa-distance', `'${e}' is not FROM:TO=DISTANCE`);
    const [a, b, v] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (a >= nodes || b >= nodes) bad('--numa-distance', `'${e}' names a node that does not exist`);
    if (a === b || v <= 10 || v > 254) bad('--numa-distance', `'${e}' must be remote, 11..254`);
    const pair = `${Math.min(a, b)}:${Math.max(a, b)}`;
    if (given.has(pair)) {
      bad('--numa-distance', `'${e}': the distance between nodes ${pair} is given twice`);
    }
    given.add(pair);
    d[a]![b] = v;
    d[b]![a] = v;
  }
  return d;
}

/**
 * Checks the whole configuration: every vCPU in exactly one node, nodes numbered 0..n-1, node
 * memory adding up to --memory, every device on an existing node (and naming one when there
 * are several), unique device ids, no empty node.
 */
export function validateConfig(cfg: VmConfig): VmConfig {
  if (cfg.vcpus < 1 || cfg.vcpus > MAX_VCPUS) bad('--vcpus', `must be from 1 to ${MAX_VCPUS}`);
  if (cfg.memory < 256 * MiB || cfg.memory % (2 * MiB) !== 0) {
    bad('--memory', 'must be at least 256 MiB and a multiple of 2 MiB');
  }
  const ids = new Set<string>();
  for (const d of cfg.virtioMem) {
    if (ids.has(d.id)) bad('--virtio-mem', `id '${d.id}' is used twice`);
    ids.add(d.id);
  }
  if (cfg.numa.length === 0) {
    for (const d of cfg.virtioMem) {
      if (d.node !== undefined && d.node !== 0) {
        bad('--virtio-mem', `device ${d.id} names node ${d.node}, but the VM has no --numa nodes`);
      }
    }
    return cfg;
  }
  const nodes = [...cfg.numa].sort((a, b) => a.node - b.node);
  nodes.forEach((n, i) => {
    if (i > 0 && n.node === nodes[i - 1]!.node) bad('--numa', `node ${n.node} is given twice`);
    if (n.node !== i) bad('--numa', `nodes must be numbered 0..${nodes.length - 1} without gaps`);
  });
  const owner = new Map<number, number>();
  for (const n of nodes) {
    for (const c of n.cpus) {
      if (c >= cfg.vcpus)
        bad('--numa', `cpu ${c} of node ${n.node} is beyond --vcpus ${cfg.vcpus}`);
      if (owner.has(c)) bad('--numa', `cpu ${c} is in node ${owner.get(c)} and node ${n.node}`);
      owner.set(c, n.node);
    }
  }
  for (let c = 0; c < cfg.vcpus; c++) {
    if (!owner.has(c)) bad('--numa', `cpu ${c} is in no node`);
  }
  const total = nodes.reduce((s, n) => s + n.memory, 0);
  if (total !== cfg.memory) {
    bad(
      '--numa',
      `node memory adds up to ${total} bytes but --memory is ${cfg.memory}; ` +
        'give each node its share with memory=SIZE',
    );
  }
  if (nodes[0]!.memory === 0) bad('--numa', 'node 0 needs boot memory (the kernel lives there)');
  for (const d of cfg.virtioMem) {
    if (d.node === undefined && nodes.length > 1) {
      bad('--virtio-mem', `device ${d.id} must name its node (node=N) on a VM with several nodes`);
    }
    if (d.node !== undefined && d.node >= nodes.length) {
      bad('--virtio-mem', `device ${d.id} names node ${d.node}, which does not exist`);
    }
  }
  for (const n of nodes) {
    const hasDevice = cfg.virtioMem.some((d) => (d.node ?? 0) === n.node);
    if (n.cpus.length === 0 && n.memory === 0 && !hasDevice) {
      bad('--numa', `node ${n.node} has no CPUs, no memory and no device`);
    }
  }
  return {
    ...cfg,
    numa: nodes,
    virtioMem: cfg.virtioMem.map((d) => ({ ...d, node: d.node ?? 0 })),
  };
}
