/**
 * The elastic-memory methods under comparison, each behind one interface: ask for an amount of
 * memory above the guest's floor, read what the host side says it gave, read what the guest
 * shows. A scenario is written once against `ElasticMethod` and runs on every method and VMM.
 */
import type { VmStatus } from '../src/vmm/controller.js';
import type { MemvisorVm } from './memvisor-vm.js';
import type { QemuVm } from './qemu-vm.js';
import { QmpError } from './qmp.js';
import { type BenchVm, guestMemTotalKiB, pollUntil } from './vm.js';

/** The methods of the paper's table. */
export type MethodName = 'virtio-mem' | 'pc-dimm' | 'balloon';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** How a request ended, as the VMM reported it. */
export interface RequestOutcome {
  /** False when the VMM refused or the guest did not complete it (DIMM unplug). */
  ok: boolean;
  /** What came back, in words, when not ok. */
  detail?: string;
}

/** One method on one VMM, driving one running guest. */
export interface ElasticMethod {
  readonly method: MethodName;
  readonly vm: BenchVm;
  /** Most bytes the method can add above the floor. */
  readonly capacity: number;
  /** The smallest step the method offers to request, in bytes. */
  readonly step: number;
  /** Asks for `bytes` above the floor. */
  request(bytes: number): Promise<RequestOutcome>;
  /** Bytes above the floor the host side reports as given to the guest. */
  provided(): Promise<number>;
  /** Bytes above the floor the guest shows (see each method for how it is read). */
  shown(): Promise<number>;
  /** Re-reads the guest's floor; call when nothing is added. */
  calibrate(): Promise<void>;
}

/** Guest-visible size through MemTotal, for methods that change it. */
abstract class MemTotalMethod {
  abstract readonly vm: BenchVm;
  #baseKiB = 0;

  async calibrate(): Promise<void> {
    this.#baseKiB = await guestMemTotalKiB(this.vm);
  }

  /** MemTotal above the calibrated floor, in bytes. */
  async shown(): Promise<number> {
    return ((await guestMemTotalKiB(this.vm)) - this.#baseKiB) * 1024;
  }
}

interface QemuMemoryDevice {
  type: string;
  /** For virtio-mem `size` is the plugged size; `max-size` the region. */
  data: { id?: string; size: number; node: number; memaddr?: number; 'block-size'?: number };
}

/** QEMU's virtio-mem-pci, resized with `qom-set <id> requested-size`. */
export class QemuVirtioMem extends MemTotalMethod implements ElasticMethod {
  readonly method = 'virtio-mem' as const;
  step = 2 * MiB;

  constructor(
    readonly vm: QemuVm,
    readonly capacity: number,
    readonly id = 'vm0',
  ) {
    super();
  }

  async request(bytes: number): Promise<RequestOutcome> {
    const path = this.id;
    await this.vm.qmp.execute('qom-set', { path, property: 'requested-size', value: bytes });
    return { ok: true };
  }

  async device(): Promise<QemuMemoryDevice['data']> {
    const devices = await this.vm.qmp.execute<QemuMemoryDevice[]>('query-memory-devices');
    const dev = devices.find((d) => d.type === 'virtio-mem' && d.data.id === this.id);
    if (!dev) throw new Error(`qemu: no virtio-mem device ${this.id}`);
    return dev.data;
  }

  async provided(): Promise<number> {
    return (await this.device()).size;
  }

  override async calibrate(): Promise<void> {
    this.step = (await this.device())['block-size'] ?? this.step;
    await super.calibrate();
  }
}

/**
 * QEMU's pc-dimm with ACPI hotplug: one `memory-backend-ram` and one `pc-dimm` per `dimmSize`,
 * added with `object-add` + `device_add`, removed with `device_del` (which the guest may refuse:
 * the DIMM then stays) and, once QEMU reports DEVICE_DELETED, `object-del`.
 */
export class QemuDimm extends MemTotalMethod implements ElasticMethod {
  readonly method = 'pc-dimm' as const;
  readonly step = 128 * MiB;
  /** Size of the DIMMs `request` adds; the scenario may change it between requests. */
  dimmSize = 1 * GiB;
  /** NUMA node new DIMMs go to. */
  node = 1;
  /** Seconds to wait for the guest to release a DIMM before calling the unplug failed. */
  unplugTimeoutMs = 30_000;
  #next = 0;
  #dimms: { id: string; size: number }[] = [];

  constructor(
    readonly vm: QemuVm,
    readonly capacity: number,
  ) {
    super();
  }

  async request(bytes: number): Promise<RequestOutcome> {
    let total = this.#dimms.reduce((s, d) => s + d.size, 0);
    while (total + this.dimmSize <= bytes) {
      const id = `dimm${this.#next++}`;
      const size = this.dimmSize;
      await this.vm.qmp.execute('object-add', {
        'qom-type': 'memory-backend-ram',
        id: `mem-${id}`,
        size,
      });
      await this.vm.qmp.execute('device_add', {
        driver: 'pc-dimm',
        id,
        memdev: `mem-${id}`,
        node: this.node,
      });
      this.#dimms.push({ id, size });
      total += size;
    }
    const failures: string[] = [];
    const leaving: { id: string; size: number }[] = [];
    for (let i = this.#dimms.length - 1; i >= 0 && total > bytes; i--) {
      const dimm = this.#dimms[i];
      if (!dimm) continue;
      leaving.push(dimm);
      total -= dimm.size;
    }
    for (const dimm of leaving) {
      const since = performance.now();
      try {
        await this.vm.qmp.execute('device_del', { id: dimm.id });
      } catch (error) {
        failures.push(`${dimm.id}: ${error instanceof QmpError ? error.desc : String(error)}`);
        continue;
      }
      const deleted = await this.vm.qmp.waitEvent(
        'DEVICE_DELETED',
        since,
        this.unplugTimeoutMs,
        (e) => e.data.device === dimm.id,
      );
      if (deleted === undefined) {
        const ost = this.vm.qmp.received.filter(
          (e) => e.event === 'ACPI_DEVICE_OST' && e.at >= since,
        );
        const status = ost.map((e) => JSON.stringify(e.data.info)).join(' ');
        failures.push(`${dimm.id} not released in ${this.unplugTimeoutMs} ms ${status}`.trim());
        continue;
      }
      await this.vm.qmp.execute('object-del', { id: `mem-${dimm.id}` });
      this.#dimms = this.#dimms.filter((d) => d !== dimm);
    }
    return failures.length === 0 ? { ok: true } : { ok: false, detail: failures.join('; ') };
  }

  async provided(): Promise<number> {
    const devices = await this.vm.qmp.execute<QemuMemoryDevice[]>('query-memory-devices');
    return devices.filter((d) => d.type === 'dimm').reduce((s, d) => s + d.data.size, 0);
  }
}

interface QemuBalloonInfo {
  actual: number;
}

/**
 * QEMU's virtio-balloon-pci (deflate-on-oom, free-page-reporting). The guest boots with its floor
 * plus `capacity` and the balloon holds what is not given: `balloon` sets the guest's size.
 * With deflate-on-oom the Linux driver leaves MemTotal alone, so what the guest shows is the
 * `actual` size its driver reports back to the device.
 */
export class QemuBalloon implements ElasticMethod {
  readonly method = 'balloon' as const;
  readonly step = 4096;

  constructor(
    readonly vm: QemuVm,
    readonly capacity: number,
    readonly bootBytes: number,
  ) {}

  get floor(): number {
    return this.bootBytes - this.capacity;
  }

  async request(bytes: number): Promise<RequestOutcome> {
    await this.vm.qmp.execute('balloon', { value: this.floor + bytes });
    return { ok: true };
  }

  async provided(): Promise<number> {
    const info = await this.vm.qmp.execute<QemuBalloonInfo>('query-balloon');
    return info.actual - this.floor;
  }

  shown(): Promise<number> {
    return this.provided();
  }

  async calibrate(): Promise<void> {}
}

/** memvisor's virtio-mem, resized through `PATCH /v1/virtio-mem/{id}`. */
export class MemvisorVirtioMem extends MemTotalMethod implements ElasticMethod {
  readonly method = 'virtio-mem' as const;
  step = 2 * MiB;

  constructor(
    readonly vm: MemvisorVm,
    readonly capacity: number,
    readonly id = 'mem0',
  ) {
    super();
  }

  async request(bytes: number): Promise<RequestOutcome> {
    await this.vm.api.call('PATCH', `/v1/virtio-mem/${this.id}`, { requested_size: bytes });
    return { ok: true };
  }

  async device(): Promise<VmStatus['virtio_mem'][number]> {
    const dev = (await this.vm.status()).virtio_mem.find((d) => d.id === this.id);
    if (!dev) throw new Error(`memvisor: no virtio-mem device ${this.id}`);
    return dev;
  }

  async provided(): Promise<number> {
    return (await this.device()).plugged_size;
  }

  override async calibrate(): Promise<void> {
    this.step = (await this.device()).block_size;
    await super.calibrate();
  }
}

/**
 * memvisor's virtio-balloon. Its target is the balloon's size (bytes inflated), so the guest
 * boots with floor plus `capacity` and the balloon holds `capacity - bytes`. The guest shows the
 * `actual` its driver reports, as for QEMU's balloon.
 */
export class MemvisorBalloon implements ElasticMethod {
  readonly method = 'balloon' as const;
  readonly step = 4096;

  constructor(
    readonly vm: MemvisorVm,
    readonly capacity: number,
  ) {}

  async request(bytes: number): Promise<RequestOutcome> {
    await this.vm.api.call('PUT', '/v1/balloon', { target_size: this.capacity - bytes });
    return { ok: true };
  }

  async provided(): Promise<number> {
    const balloon = (await this.vm.status()).balloon;
    if (!balloon) throw new Error('memvisor: no balloon in status');
    return this.capacity - balloon.actual_bytes;
  }

  shown(): Promise<number> {
    return this.provided();
  }

  async calibrate(): Promise<void> {}
}

/** Most bytes of tolerance when comparing what the guest shows with what was asked; half a
 * step when the method's step is smaller. */
export const SHOWN_TOLERANCE = 1 * MiB;

/**
 * Requests `bytes` and waits until the guest shows it. Resolves with the seconds until the
 * request was accepted, until the host side reported it and until the guest showed it, and what
 * was reached when the wait ran out.
 */
export async function requestAndWait(m: ElasticMethod, bytes: number, timeoutMs: number) {
  const start = performance.now();
  const outcome = await m.request(bytes);
  const acceptedSeconds = (performance.now() - start) / 1000;
  const tolerance = Math.min(SHOWN_TOLERANCE, m.step / 2);
  const near = (v: number) => Math.abs(v - bytes) < tolerance;
  // A refused request (a DIMM the guest kept) will not converge: read where things stand.
  const wait = outcome.ok ? timeoutMs : 0;
  const host = await pollUntil(() => m.provided(), near, wait, 50);
  const guest = await pollUntil(
    () => m.shown(),
    near,
    outcome.ok ? Math.max(1000, timeoutMs - host.seconds * 1000) : 0,
    50,
  );
  return {
    outcome,
    acceptedSeconds,
    hostSeconds: acceptedSeconds + host.seconds,
    guestSeconds: (performance.now() - start) / 1000,
    provided: host.value,
    shown: guest.value,
    ok: host.ok && guest.ok && outcome.ok,
  };
}
