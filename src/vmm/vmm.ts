/**
 * The VMM as operators see it: a `Machine` with its virtio-mem devices (one pluggable region,
 * device and virtio-mmio transport each), an optional virtio-balloon, the guest agent, and the
 * policy for guests that touch memory they were not given. Implements `VmController`, the
 * only thing the control API knows.
 */
import { EventEmitter } from 'node:events';
import type { AcpiConfig } from '../arch/x86/acpi/tables.js';
import { VIRTIO_MMIO_FIRST_GSI, virtioMmioBase } from '../arch/x86/layout.js';
import { MappedBacking } from '../memory/backing.js';
import type { GuestRegion } from '../memory/guest-memory.js';
import { bindToHostNode } from '../memory/numa.js';
import { type MemslotTable, PluggableRegion } from '../memory/pluggable-region.js';
import { InvalidInputError, MemvisorError } from '../util/errors.js';
import { VirtioBalloon } from '../virtio/balloon/device.js';
import { RateLimitedLog, hex } from '../virtio/log.js';
import { VirtioMem, type VirtioMemSizeChanged } from '../virtio/mem/device.js';
import { VIRTIO_MMIO_WINDOW, VirtioMmioTransport } from '../virtio/transport/mmio.js';
import type { VmConfig } from './config.js';
import type {
  BlockMap,
  ExecResult,
  VirtioMemStatus,
  VmController,
  VmEvent,
  VmStatus,
} from './controller.js';
import { bootRamRanges, nodeRamRanges, placeVirtioMem } from './layout.js';
import { Machine, type MachineExit, type UnclaimedMmio } from './machine.js';

/** What to boot. */
export interface BootImage {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
}

/** Where output goes. */
export interface VmmOutput {
  console?: (bytes: Uint8Array) => void;
  log?: (line: string) => void;
}

/** How often resident memory is checked against plugged memory. */
const ACCOUNTING_INTERVAL_MS = 1000;
/** Time an `exec` may take when the caller gives no limit. */
const DEFAULT_EXEC_TIMEOUT_MS = 600_000;

interface MemDevice {
  id: string;
  node: number;
  gsi: number;
  region: PluggableRegion;
  device: VirtioMem;
  transport: VirtioMmioTransport;
  violations: number;
  firstViolation: bigint | undefined;
  overResident: boolean;
}

/** Adapts KVM's slot calls to what a pluggable region needs. */
function memslots(machine: Machine): MemslotTable {
  return {
    allocate: () => machine.vm.allocateSlot(),
    map: (slot, gpa, size, host) => machine.vm.setMemoryRegion(slot, gpa, size, host),
    unmap: (slot) => machine.vm.setMemoryRegion(slot, 0, 0, 0n),
    release: (slot) => machine.vm.releaseSlot(slot),
  };
}

/**
 * A region never needs more KVM memory slots than it has blocks, and needs that many when the
 * guest plugs every other block (src/memory/pluggable-region.ts), so the blocks must fit the
 * slots left after boot RAM.
 */
export function checkSlotBudget(
  placed: { config: { id: string; regionSize: number; blockSize: number } }[],
  free: number,
): void {
  const blocks = placed.reduce((n, p) => n + p.config.regionSize / p.config.blockSize, 0);
  if (blocks <= free) return;
  const list = placed.map((p) => `${p.config.id} ${p.config.regionSize / p.config.blockSize}`);
  throw new InvalidInputError(
    `virtio-mem: ${blocks} blocks in all (${list.join(', ')}) need as many KVM memory slots, ` +
      `and this KVM has ${free} left; use a larger block= or smaller regions`,
  );
}

export class Vmm implements VmController {
  readonly events = new EventEmitter();
  readonly machine: Machine;
  readonly config: VmConfig;
  readonly #devices: MemDevice[] = [];
  readonly #balloon: { device: VirtioBalloon; transport: VirtioMmioTransport } | undefined;
  readonly #log: (line: string) => void;
  readonly #warn: RateLimitedLog;
  #agentReady = false;
  #paused = false;
  #accounting: NodeJS.Timeout | undefined;
  #balloonStats: NodeJS.Timeout | undefined;

  constructor(config: VmConfig, image: BootImage, output: VmmOutput = {}) {
    this.config = config;
    this.#log = output.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.#warn = new RateLimitedLog('memvisor', this.#log);
    this.events.setMaxListeners(100);

    const ram = bootRamRanges(config.memory);
    const placed = placeVirtioMem(ram, config.virtioMem);
    const regions: PluggableRegion[] = [];
    const backings = placed.map((p) => {
      const backing = new MappedBacking(
        p.config.regionSize,
        'anonymous',
        `virtio-mem-${p.config.id}`,
      );
      if (p.config.hostNode !== undefined) {
        bindToHostNode(backing.hostAddress, backing.size, p.config.hostNode);
      }
      return backing;
    });
    const extraRegions: GuestRegion[] = placed.map((p, i) => ({
      name: `virtio-mem ${p.config.id}`,
      gpa: p.gpa,
      size: p.config.regionSize,
      backing: backings[i]!,
      accessible: (offset, len) => regions[i]!.allPlugged(offset, len),
    }));

    const numa = this.#acpiNuma(
      ram,
      placed.map((p) => ({ node: p.config.node ?? 0, gpa: p.gpa })),
    );
    this.machine = new Machine({
      vcpus: config.vcpus,
      memory: config.memory,
      kernel: image.kernel,
      ...(image.initrd ? { initrd: image.initrd } : {}),
      cmdline: image.cmdline,
      extraRegions,
      ...(numa ? { numa } : {}),
      ...(output.console ? { console: output.console } : {}),
      log: this.#log,
    });
    const machine = this.machine;
    checkSlotBudget(placed, machine.vm.maxMemslots - machine.vm.memslots.length);

    placed.forEach((p, i) => {
      const region = new PluggableRegion(
        p.gpa,
        p.config.blockSize,
        backings[i]!,
        memslots(machine),
      );
      regions.push(region);
      const device = new VirtioMem({
        id: p.config.id,
        addr: p.gpa,
        regionSize: p.config.regionSize,
        blockSize: p.config.blockSize,
        nodeId: p.config.node ?? 0,
        acpiPxm: config.numa.length > 0,
        requestedSize: p.config.requestedSize,
        host: region,
        log: this.#log,
      });
      const gsi = VIRTIO_MMIO_FIRST_GSI + i;
      const transport = new VirtioMmioTransport(device, machine.memory, machine.irqLine(gsi), {
        name: `virtio-mem[${p.config.id}]`,
        log: this.#log,
      });
      machine.addMmioDevice(virtioMmioBase(i), VIRTIO_MMIO_WINDOW, transport, {
        gsi,
        shared: transport.shared,
      });
      const entry: MemDevice = {
        id: p.config.id,
        node: p.config.node ?? 0,
        gsi,
        region,
        device,
        transport,
        violations: 0,
        firstViolation: undefined,
        overResident: false,
      };
      // Every VM event names its virtio-mem device `device`, as the API's other events do.
      device.events.on('size_changed', ({ id, ...rest }: VirtioMemSizeChanged) =>
        this.#emit('size_changed', { device: id, ...rest }),
      );
      this.#devices.push(entry);
    });

    if (config.balloon) {
      const device = new VirtioBalloon({
        deflateOnOom: config.balloonDeflateOnOom,
        host: { discard: (gpa, len) => machine.memory.discard(gpa, len) },
        log: this.#log,
      });
      const index = placed.length;
      const gsi = VIRTIO_MMIO_FIRST_GSI + index;
      const transport = new VirtioMmioTransport(device, machine.memory, machine.irqLine(gsi), {
        name: 'virtio-balloon',
        log: this.#log,
      });
      machine.addMmioDevice(virtioMmioBase(index), VIRTIO_MMIO_WINDOW, transport, {
        gsi,
        shared: transport.shared,
      });
      this.#balloon = { device, transport };
    }

    machine.onUnclaimedMmio = (access) => this.#onUnclaimedMmio(access);
    machine.onMemoryFault = () => this.#isolateUnplugged();
    machine.events.on('event', (e: VmEvent) => this.#onMachineEvent(e));
  }

  /** Boots the guest and starts watching the agent and the accounting. */
  async start(): Promise<void> {
    await this.machine.start();
    this.#watchAgent();
    this.#accounting = setInterval(() => this.#account(), ACCOUNTING_INTERVAL_MS);
    this.#accounting.unref();
    const balloon = this.#balloon?.device;
    if (balloon && this.config.balloonStatsSeconds > 0) {
      // The driver refills its statistics only when the device hands the buffer back.
      this.#balloonStats = setInterval(
        () => balloon.requestStats(),
        this.config.balloonStatsSeconds * 1000,
      );
      this.#balloonStats.unref();
    }
  }

  /** Resolves when the VM has ended. */
  async wait(): Promise<MachineExit> {
    const exit = await this.machine.wait();
    if (this.#accounting) clearInterval(this.#accounting);
    if (this.#balloonStats) clearInterval(this.#balloonStats);
    // A command that powered the guest off never answers; its caller must not wait forever.
    this.#agentReady = false;
    this.machine.agent.reset();
    return exit;
  }

  status(): VmStatus {
    const m = this.machine;
    const state = this.#paused
      ? 'paused'
      : m.state === 'running'
        ? this.#agentReady
          ? 'running'
          : 'booting'
        : m.state === 'stopped'
          ? 'stopped'
          : m.state === 'stopping'
            ? 'stopping'
            : 'booting';
    const ram = bootRamRanges(this.config.memory);
    const perNode = this.config.numa.length ? nodeRamRanges(ram, this.config.numa) : [ram];
    // Each region is measured once (mincore over gigabytes is the costly part of a status).
    const devices = this.#devices.map((d) => this.#deviceStatus(d));
    const fixed = m.memory.residentBytes((r) => r.accessible === undefined);
    return {
      state,
      vcpus: this.config.vcpus,
      boot_memory: this.config.memory,
      resident_bytes: devices.reduce((sum, d) => sum + d.resident_bytes, fixed),
      uptime_ms: m.uptimeMs,
      resets: m.counters.resets,
      numa_nodes: (this.config.numa.length
        ? this.config.numa
        : [{ node: 0, cpus: [...Array(this.config.vcpus).keys()], memory: this.config.memory }]
      ).map((n, i) => {
        const devices = this.#devices.filter((d) => d.node === n.node);
        return {
          node: n.node,
          cpus: n.cpus,
          boot_memory: (perNode[i] ?? []).reduce((s, r) => s + r.size, 0),
          requested_size: devices.reduce((s, d) => s + d.device.requestedSize, 0),
          plugged_size: devices.reduce((s, d) => s + d.device.pluggedSize, 0),
        };
      }),
      virtio_mem: devices,
      balloon: this.#balloon ? this.#balloon.device.status() : null,
    };
  }

  resize(deviceId: string | undefined, bytes: number): void {
    const d = this.#device(deviceId);
    const before = d.device.requestedSize;
    d.device.setRequestedSize(bytes);
    if (before !== bytes) {
      this.#emit('requested_size_changed', { device: d.id, node: d.node, requested_size: bytes });
    }
  }

  blocks(deviceId: string | undefined): BlockMap {
    const d = this.#device(deviceId);
    return {
      id: d.id,
      addr: d.region.gpa,
      block_size: d.region.blockSize,
      usable_blocks: d.device.usableRegionSize / d.region.blockSize,
      plugged: d.region.picture(),
    };
  }

  setBalloon(bytes: number): void {
    if (!this.#balloon)
      throw new InvalidInputError('this VM has no balloon (run it with --balloon)');
    this.#balloon.device.setTarget(bytes);
    this.#emit('balloon_target_changed', { target_bytes: bytes });
  }

  async exec(command: string, timeoutMs = DEFAULT_EXEC_TIMEOUT_MS): Promise<ExecResult> {
    if (!this.#agentReady) {
      throw new MemvisorError(
        'not_ready',
        'the guest agent is not ready yet (the guest is booting)',
      );
    }
    if (this.#paused) {
      throw new MemvisorError('vm_paused', 'the VM is paused; resume it to run guest commands');
    }
    return this.machine.agent.exec(command, timeoutMs);
  }

  reset(): void {
    this.machine.reset();
  }

  async pause(): Promise<void> {
    this.#paused = true;
    await this.machine.pause();
  }

  resume(): void {
    this.#paused = false;
    this.machine.resume();
  }

  async stop(): Promise<void> {
    await this.machine.stop({ kind: 'poweroff' });
  }

  /** One line per virtio-mem device on what the guest did to it, for the end of a run. */
  summary(): string[] {
    return this.#devices.flatMap((d) => {
      const lines = [
        `virtio-mem[${d.id}]: plugged ${d.device.pluggedSize} of ${d.region.size} bytes; ` +
          `resident ${d.region.residentBytes()} bytes`,
      ];
      if (d.violations > 0) {
        lines.push(
          `virtio-mem[${d.id}]: ${d.violations} guest accesses to unplugged memory caught, ` +
            `first at ${hex(d.firstViolation ?? 0n)}`,
        );
      }
      return lines;
    });
  }

  #device(id: string | undefined): MemDevice {
    if (id === undefined) {
      if (this.#devices.length === 1) return this.#devices[0]!;
      throw new InvalidInputError(
        `name a device: this VM has ${this.#devices.length} virtio-mem devices`,
      );
    }
    const d = this.#devices.find((x) => x.id === id);
    if (!d) {
      const known = this.#devices.map((x) => x.id).join(', ') || 'none';
      throw new MemvisorError('unknown_device', `no virtio-mem device '${id}' (devices: ${known})`);
    }
    return d;
  }

  #deviceStatus(d: MemDevice): VirtioMemStatus {
    return {
      ...d.device.status(),
      resident_bytes: d.region.residentBytes(),
      violations: d.violations,
    };
  }

  #acpiNuma(
    ram: ReturnType<typeof bootRamRanges>,
    devices: { node: number; gpa: number }[],
  ): AcpiConfig['numa'] {
    if (this.config.numa.length === 0 && devices.length === 0) return undefined;
    // Without --numa, one node holding everything: the SRAT still marks the virtio-mem regions
    // hot-pluggable, which sizes Linux's view of the possible physical address space.
    const numaNodes = this.config.numa.length
      ? this.config.numa
      : [{ node: 0, cpus: [...Array(this.config.vcpus).keys()], memory: this.config.memory }];
    const perNode = nodeRamRanges(ram, numaNodes);
    return {
      nodes: numaNodes.map((n, i) => ({
        id: n.node,
        cpus: n.cpus,
        ram: perNode[i]!,
        hotplug: devices
          .map((d, j) => ({ ...d, size: this.config.virtioMem[j]!.regionSize }))
          .filter((d) => d.node === n.node)
          .map((d) => ({ gpa: d.gpa, size: d.size })),
      })),
      ...(this.config.distances ? { distances: this.config.distances } : {}),
    };
  }

  #watchAgent(): void {
    this.#agentReady = false;
    this.machine.agent.ready(24 * 3600_000).then(
      () => {
        this.#agentReady = true;
        this.#emit('agent_ready', { uptime_ms: this.machine.uptimeMs });
      },
      () => {},
    );
  }

  #onMachineEvent(e: VmEvent): void {
    if (e.type === 'reset') {
      // A system reset unplugs every block (VIRTIO 1.2, 5.15.6.2: SHOULD unplug all blocks)
      // before the guest boots again; the requested size is kept so the driver plugs back.
      for (const d of this.#devices) {
        d.transport.reset();
        try {
          d.device.systemReset();
        } catch (err) {
          this.#log(`virtio-mem[${d.id}]: unplug on reset failed: ${(err as Error).message}`);
        }
      }
      this.#balloon?.transport.reset();
      this.machine.agent.reset();
      this.#watchAgent();
    }
    this.events.emit('event', e);
  }

  /**
   * A vCPU touched host memory KVM could not map: in virtio-mem regions, an unplugged block
   * whose slot still maps plugged neighbours. Gives those blocks no slot, so that the access
   * comes back as an MMIO exit with its address (see pluggable-region.ts).
   */
  #isolateUnplugged(): boolean {
    let isolated = false;
    for (const d of this.#devices) {
      if (!d.region.isolateUnplugged()) continue;
      isolated = true;
      this.#log(
        `virtio-mem[${d.id}]: guest touched an unplugged block inside a memory slot; ` +
          `that slot now maps plugged blocks only (${d.region.slotCount} slots)`,
      );
    }
    return isolated;
  }

  #onUnclaimedMmio(access: UnclaimedMmio): void {
    const gpa = Number(access.addr);
    const d = this.#devices.find((x) => gpa >= x.region.gpa && gpa < x.region.gpa + x.region.size);
    if (!d) {
      if (!access.write) access.data.fill(0xff);
      this.#warn.warn(`unclaimed MMIO ${access.write ? 'write' : 'read'} at ${hex(access.addr)}`);
      return;
    }
    if (d.region.access(gpa - d.region.gpa, access.data, access.write) === 'emulated') return;
    d.violations++;
    d.firstViolation ??= access.addr;
    const kind = access.write ? 'write' : 'read';
    this.#warn.warn(
      `virtio-mem[${d.id}]: guest ${kind} of unplugged memory at ${hex(access.addr)} ` +
        `(vcpu ${access.vcpu}, policy ${this.config.onViolation})`,
    );
    this.#emit('violation', {
      device: d.id,
      node: d.node,
      gpa: hex(access.addr),
      access: kind,
      vcpu: access.vcpu,
      count: d.violations,
      policy: this.config.onViolation,
    });
    if (this.config.onViolation === 'stop') {
      const where = `${hex(access.addr)} (${d.id})`;
      const message = `guest ${kind} of unplugged virtio-mem memory at ${where}`;
      void this.machine.stop({ kind: 'error', message });
    } else if (this.config.onViolation === 'pause' && !this.#paused) {
      void this.pause();
    }
  }

  #account(): void {
    if (this.machine.state !== 'running') return;
    for (const d of this.#devices) {
      const resident = d.region.residentBytes();
      const over = resident > d.device.pluggedSize + d.region.blockSize;
      if (over && !d.overResident) {
        this.#emit('resident_exceeds_plugged', {
          device: d.id,
          resident_bytes: resident,
          plugged_size: d.device.pluggedSize,
        });
      }
      d.overResident = over;
    }
  }

  #emit(type: string, data: Record<string, unknown>): void {
    this.events.emit('event', { type, time: new Date().toISOString(), ...data });
  }
}
