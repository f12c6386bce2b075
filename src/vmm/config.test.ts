import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GiB, MiB } from '../util/size.js';
import {
  type VmConfig,
  distanceMatrix,
  parseNuma,
  parseVirtioMem,
  validateConfig,
} from './config.js';

const base = (over: Partial<VmConfig> = {}): VmConfig => ({
  vcpus: 2,
  memory: GiB,
  numa: [],
  distances: undefined,
  virtioMem: [],
  balloon: false,
  balloonDeflateOnOom: false,
  balloonStatsSeconds: 5,
  onViolation: 'log',
  ...over,
});

test('--virtio-mem takes a size and optional keys', () => {
  assert.deepEqual(parseVirtioMem('4G', 0), {
    id: 'mem0',
    regionSize: 4 * GiB,
    blockSize: 2 * MiB,
    requestedSize: 0,
    node: undefined,
    hostNode: undefined,
  });
  const d = parseVirtioMem('1G,id=hot,block=4M,requested=512M,node=1,host-node=0', 3);
  assert.equal(d.id, 'hot');
  assert.equal(d.blockSize, 4 * MiB);
  assert.equal(d.requestedSize, 512 * MiB);
  assert.equal(d.node, 1);
  assert.equal(d.hostNode, 0);
});

test('--virtio-mem refuses sizes the device cannot have', () => {
  const cases: [string, RegExp][] = [
    ['100M', /multiple of 128 MiB/],
    ['1G,block=3M', /power of two/],
    ['1G,block=1M', /power of two from 2 MiB/],
    ['1G,requested=3M', /multiple of the block size/],
    ['1G,requested=2G', /exceeds the region/],
    ['1G,colour=red', /unknown key 'colour'/],
    ['1G,id=a b', /id=/],
    ['block=2M', /region size is needed/],
    ['1G,node=x', /node='x'/],
    ['0', /non-zero multiple/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseVirtioMem(text, 0), message, text);
  }
});

test('--numa parses node, cpus and memory', () => {
  assert.deepEqual(parseNuma('node=1,cpus=2-3,memory=512M'), {
    node: 1,
    cpus: [2, 3],
    memory: 512 * MiB,
  });
  assert.deepEqual(parseNuma('node=0,cpus=0:2-3').cpus, [0, 2, 3]);
});

test('a valid two-node topology passes and devices default to their node', () => {
  const cfg = validateConfig(
    base({
      vcpus: 4,
      memory: GiB + 512 * MiB,
      numa: [parseNuma('node=1,cpus=2-3,memory=512M'), parseNuma('node=0,cpus=0-1,memory=1G')],
      virtioMem: [parseVirtioMem('1G,node=1', 0)],
    }),
  );
  assert.deepEqual(
    cfg.numa.map((n) => n.node),
    [0, 1],
  );
  assert.equal(cfg.virtioMem[0]!.node, 1);
});

test('invalid topologies are refused with the reason', () => {
  const two = (a: string, b: string, over: Partial<VmConfig> = {}) =>
    base({ vcpus: 4, memory: 2 * GiB, numa: [parseNuma(a), parseNuma(b)], ...over });
  const cases: [VmConfig, RegExp][] = [
    [
      two('node=0,cpus=0-2,memory=1G', 'node=1,cpus=2-3,memory=1G'),
      /cpu 2 is in node 0 and node 1/,
    ],
    [two('node=0,cpus=0-1,memory=1G', 'node=1,cpus=2,memory=1G'), /cpu 3 is in no node/],
    [two('node=0,cpus=0-1,memory=1G', 'node=1,cpus=2-3,memory=512M'), /adds up to/],
    [two('node=0,cpus=0-3,memory=2G', 'node=1'), /node 1 has no CPUs, no memory and no device/],
    [two('node=0,cpus=0-1,memory=1G', 'node=2,cpus=2-3,memory=1G'), /without gaps/],
    [two('node=0,cpus=0-1,memory=1G', 'node=0,cpus=2-3,memory=1G'), /node 0 is given twice/],
    [
      two('node=0,cpus=0-1,memory=1G', 'node=1,cpus=2-3,memory=1G', {
        virtioMem: [parseVirtioMem('1G', 0)],
      }),
      /must name its node/,
    ],
    [
      two('node=0,cpus=0-1,memory=1G', 'node=1,cpus=2-3,memory=1G', {
        virtioMem: [parseVirtioMem('1G,node=5', 0)],
      }),
      /node 5, which does not exist/,
    ],
    [base({ virtioMem: [parseVirtioMem('1G', 0), parseVirtioMem('1G', 0)] }), /used twice/],
    [base({ memory: 100 * MiB }), /--memory/],
    [base({ vcpus: 0 }), /--vcpus/],
  ];
  for (const [cfg, message] of cases) assert.throws(() => validateConfig(cfg), message);
});

test('a node may have no boot memory but a device', () => {
  const cfg = validateConfig(
    base({
      numa: [parseNuma('node=0,cpus=0-1,memory=1G'), parseNuma('node=1')],
      virtioMem: [parseVirtioMem('1G,node=1', 0)],
    }),
  );
  assert.equal(cfg.numa[1]!.memory, 0);
});

test('distance matrices default to 10 and 20 and stay symmetric', () => {
  assert.deepEqual(distanceMatrix(2, []), [
    [10, 20],
    [20, 10],
  ]);
  assert.deepEqual(distanceMatrix(2, ['0:1=30']), [
    [10, 30],
    [30, 10],
  ]);
  assert.throws(() => distanceMatrix(2, ['0:0=30']), /remote/);
  assert.throws(() => distanceMatrix(2, ['0:3=30']), /does not exist/);
  assert.throws(() => distanceMatrix(0, ['0:1=30']), {
    message: '--numa-distance: needs --numa nodes',
  });
  for (const twice of [
    ['0:1=20', '0:1=30'],
    ['0:1=20', '1:0=30'],
  ]) {
    assert.throws(() => distanceMatrix(2, twice), {
      message: `--numa-distance: '${twice[1]}': the distance between nodes 0:1 is given twice`,
    });
  }
});
