/**
 * `npm run bench [-- SCENARIO...] [--vmm qemu|memvisor]`: the evaluation harness. Where the
 * host's KVM is the software kind it re-runs itself inside one box and does everything there.
 * It boots one guest per method and VMM, runs the selected scenarios on it, and writes
 * `bench/results/latest.json` (rows), `latest.md` (the report) and SVG plots beside them.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectAccel } from '../src/box/accel.js';
import { runInBox } from '../src/box/box.js';
import { ensureGuestImage } from '../src/guest/image.js';
import { MemvisorError } from '../src/util/errors.js';
import { MemvisorVm, bootSecondsByExec, rogueMisuse } from './memvisor-vm.js';
import {
  type ElasticMethod,
  MemvisorBalloon,
  MemvisorVirtioMem,
  QemuBalloon,
  QemuDimm,
  QemuVirtioMem,
} from './methods.js';
import { renderSvg, rssTimelineSpec, stepTimesSpec } from './plot.js';
import { QemuVm, pciInitrd } from './qemu-vm.js';
import { renderReport } from './report.js';
import { Results } from './results.js';
import { SCENARIOS } from './scenarios.js';
import { pollUntil } from './vm.js';

const GiB = 2 ** 30;
const CAPACITY = 4 * GiB;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS_DIR = join(ROOT, 'bench', 'results');
/** How long a guest gets to answer again after a failed scenario before a new one replaces it. */
const RECOVER_MS = 90_000;

/** Two guest NUMA nodes with one vCPU each and boot memory split evenly, as QEMU's guests. */
const numa = (bootMiB: number) => [
  ...['--vcpus', '2', '--memory', `${bootMiB}M`],
  ...['--numa', `node=0,cpus=0,memory=${bootMiB / 2}M`],
  ...['--numa', `node=1,cpus=1,memory=${bootMiB / 2}M`],
];
/** memvisor's command lines: the same guests as QEMU's below, device on node 1. */
const MEMVISOR_VIRTIO_MEM_ARGS = [...numa(1024), '--virtio-mem', '4G,id=mem0,node=1'];
const MEMVISOR_BALLOON_ARGS = [...numa(1024 + CAPACITY / 2 ** 20), '--balloon', 'deflate-on-oom'];
/** A plain guest, to time memvisor's boot when its virtio-mem guest cannot start. */
const MEMVISOR_PLAIN_ARGS = ['--vcpus', '2', '--memory', '1G'];

/** One guest to boot and the method it carries. */
interface Subject {
  vmm: 'qemu' | 'memvisor';
  method: ElasticMethod['method'];
  start(logDir: string): Promise<ElasticMethod>;
}

function subjects(image: Awaited<ReturnType<typeof ensureGuestImage>>): Subject[] {
  return [
    {
      vmm: 'memvisor',
      method: 'virtio-mem',
      start: async () =>
        new MemvisorVirtioMem(await MemvisorVm.start(MEMVISOR_VIRTIO_MEM_ARGS), CAPACITY),
    },
    {
      vmm: 'memvisor',
      method: 'balloon',
      start: async () =>
        new MemvisorBalloon(await MemvisorVm.start(MEMVISOR_BALLOON_ARGS), CAPACITY),
    },
    {
      vmm: 'qemu',
      method: 'virtio-mem',
      start: async (logDir) => {
        const vm = await QemuVm.start({
          image,
          name: 'virtio-mem',
          logDir,
          bootMiB: 1024,
          memExtra: 'maxmem=8G',
          args: [
            ...['-object', `memory-backend-ram,id=vmem0,size=${CAPACITY}`],
            ...['-device', 'virtio-mem-pci,id=vm0,memdev=vmem0,node=1,requested-size=0'],
          ],
        });
        return new QemuVirtioMem(vm, CAPACITY);
      },
    },
    {
      vmm: 'qemu',
      method: 'pc-dimm',
      start: async (logDir) => {
        const vm = await QemuVm.start({
          image,
          name: 'pc-dimm',
          logDir,
          bootMiB: 1024,
          memExtra: 'slots=32,maxmem=8G',
          args: [],
        });
        return new QemuDimm(vm, CAPACITY);
      },
    },
    {
      vmm: 'qemu',
      method: 'balloon',
      start: async (logDir) => {
        const bootMiB = 1024 + CAPACITY / 2 ** 20;
        const vm = await QemuVm.start({
          image,
          name: 'balloon',
          logDir,
          bootMiB,
          args: [
            '-device',
            'virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on',
          ],
        });
        return new QemuBalloon(vm, CAPACITY, bootMiB * 2 ** 20);
      },
    },
  ];
}

function parseArgs(argv: string[]) {
  const names = SCENARIOS.map((s) => s.name);
  let vmm: string | undefined;
  const chosen: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--vmm') vmm = argv[++i];
    else if (a === 'boot' || names.includes(a)) chosen.push(a);
    else {
      console.error(`bench: unknown argument '${a}'; scenarios: boot ${names.join(' ')}`);
      process.exit(2);
    }
  }
  if (vmm !== undefined && vmm !== 'qemu' && vmm !== 'memvisor') {
    console.error(`bench: --vmm takes qemu or memvisor, not '${vmm}'`);
    process.exit(2);
  }
  return { scenarios: chosen.length === 0 ? ['boot', ...names] : chosen, vmm };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const { scenarios, vmm } = parseArgs(argv);
  const image = await ensureGuestImage({ quiet: true });
  if (process.env.MEMVISOR_IN_BOX !== '1' && detectAccel() === 'box') {
    // Built here, where the cache is writable; the box mounts the host root read-only.
    pciInitrd(image);
    process.stderr.write('bench: software KVM here, running inside one box\n');
    return runInBox([process.execPath, fileURLToPath(import.meta.url), ...argv], { cwd: ROOT });
  }

  const started = performance.now();
  const results = new Results();
  const failures: { vmm: string; method: string; error: string }[] = [];
  mkdirSync(RESULTS_DIR, { recursive: true });
  const logDir = join(RESULTS_DIR, 'logs');
  for (const subject of subjects(image)) {
    if (vmm !== undefined && subject.vmm !== vmm) continue;
    const probe = { method: subject.method } as ElasticMethod;
    const todo = SCENARIOS.filter((s) => scenarios.includes(s.name) && s.appliesTo(probe));
    if (!scenarios.includes('boot') && todo.length === 0) continue;
    process.stderr.write(`bench: starting ${subject.vmm} ${subject.method}\n`);
    let m: ElasticMethod;
    try {
      m = await subject.start(logDir);
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      const lines = text.split('\n').map((l) => l.trim());
      const brief = lines.find((l) => /^(error|memvisor):/.test(l)) ?? lines[0] ?? text;
      failures.push({ vmm: subject.vmm, method: subject.method, error: brief });
      process.stderr.write(
        `bench: ${subject.vmm} ${subject.method} did not start: ${text.slice(0, 2000)}\n`,
      );
      if (subject.vmm === 'memvisor' && subject.method === 'virtio-mem') await plainBoot(results);
      continue;
    }
    try {
      results.recorder('boot', m.method, m.vm.vmm)('boot_to_agent_s', m.vm.bootSeconds, 's');
      await m.calibrate();
      for (const scenario of SCENARIOS) {
        if (!scenarios.includes(scenario.name) || !scenario.appliesTo(m)) continue;
        const rec = results.recorder(scenario.name, m.method, m.vm.vmm);
        const t = performance.now();
        let failed = false;
        try {
          await scenario.run({ m, rec, results });
        } catch (error) {
          failed = true;
          rec(
            'failed',
            null,
            '',
            error instanceof Error ? error.message.split('\n')[0] : String(error),
          );
          const output = (m.vm as { output?: () => string }).output?.();
          if (output !== undefined) {
            mkdirSync(logDir, { recursive: true });
            const name = `${m.vm.vmm}-${m.method}-${scenario.name}.failed.log`;
            writeFileSync(join(logDir, name), output);
          }
        }
        rec('scenario_s', (performance.now() - t) / 1000, 's');
        await writeOut(results, scenarios, failures, started);
        if (failed && !(await answers(m))) {
          // Without this, every later scenario waits out its timeouts on a guest that is gone.
          rec('restarted', 1, 'bool', 'the guest stopped answering; a new guest runs the rest');
          process.stderr.write(`bench: ${subject.vmm} ${subject.method} restarting\n`);
          await m.vm.close().catch(() => undefined);
          m = await subject.start(logDir);
          await m.calibrate();
        }
      }
    } catch (error) {
      const text = error instanceof Error ? error.message.split('\n')[0] : String(error);
      failures.push({ vmm: subject.vmm, method: subject.method, error: text ?? '' });
      process.stderr.write(`bench: ${subject.vmm} ${subject.method} gave up: ${text}\n`);
    } finally {
      await m.vm.close().catch(() => undefined);
    }
  }
  if (scenarios.includes('misuse') && vmm !== 'qemu') {
    process.stderr.write('bench: memvisor virtio-mem misuse (rogue guest)\n');
    await rogueMisuse(results.recorder('misuse', 'virtio-mem', 'memvisor'));
  }
  await writeOut(results, scenarios, failures, started, true);
  return 0;
}

/**
 * Whether the guest agent answers within RECOVER_MS; a guest that reset meanwhile gets that
 * long to boot again.
 */
async function answers(m: ElasticMethod): Promise<boolean> {
  const alive = () =>
    m.vm.exec('true', 15_000).then(
      () => true,
      () => false,
    );
  return (await pollUntil(alive, (ok) => ok, RECOVER_MS, 2000)).ok;
}

/**
 * Times memvisor's boot on a guest with no elastic device, through `run --exec` (the API may
 * not be served yet); records why if that fails too.
 */
async function plainBoot(results: Results): Promise<void> {
  const rec = results.recorder('boot', 'plain', 'memvisor');
  try {
    const seconds = await bootSecondsByExec(MEMVISOR_PLAIN_ARGS);
    rec('boot_to_agent_s', seconds, 's', 'no elastic device; run --exec, without the API');
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    rec('boot_to_agent_s', null, 's', text.replace(/\s+/g, ' ').slice(0, 300));
  }
}

async function writeOut(
  results: Results,
  scenarios: string[],
  failures: { vmm: string; method: string; error: string }[],
  started: number,
  plots = false,
): Promise<void> {
  writeFileSync(join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(results.rows, null, 2)}\n`);
  writeFileSync(join(RESULTS_DIR, 'latest-rss.json'), `${JSON.stringify(results.rss)}\n`);
  const files: { file: string; caption: string }[] = [];
  if (plots) {
    const specs = [
      {
        file: 'resize.svg',
        caption: 'resize steps',
        spec: stepTimesSpec(results.rows, 'resize', 'virtio-mem resize: seconds per step'),
      },
      {
        file: 'speed.svg',
        caption: 'speed steps',
        spec: stepTimesSpec(results.rows, 'speed', 'Speed: seconds per 1 GiB step'),
      },
      { file: 'rss.svg', caption: 'host memory over time', spec: rssTimelineSpec(results.rss) },
    ];
    for (const p of specs) {
      writeFileSync(join(RESULTS_DIR, p.file), await renderSvg(p.spec));
      files.push({ file: p.file, caption: p.caption });
    }
  }
  const qemu = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  const report = renderReport(
    results.rows,
    {
      date: new Date().toISOString(),
      accel: process.env.MEMVISOR_IN_BOX === '1' ? 'box (nested KVM in QEMU TCG)' : 'native KVM',
      kernel: (await ensureGuestImage({ quiet: true })).kernelVersion,
      qemu: qemu.stdout.split('\n')[0] ?? 'QEMU',
      seconds: (performance.now() - started) / 1000,
      scenarios,
      failures,
    },
    files,
  );
  writeFileSync(join(RESULTS_DIR, 'latest.md'), report);
}

try {
  process.exitCode = await main();
} catch (err) {
  // The box failing (wedged, reset, timed out) ends the run; the report keeps what was measured.
  if (!(err instanceof MemvisorError)) throw err;
  process.stderr.write(`bench: ${err.message}\n`);
  process.exitCode = 1;
}
