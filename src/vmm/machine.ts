/**
 * The `Machine`: one x86-64 VM on KVM. It composes boot RAM and its memslots, the in-kernel
 * irqchip and PIT, the vCPU worker threads, the legacy devices (COM1 console, COM2 agent,
 * i8042, ACPI power registers) and the Linux boot path, answers every vCPU exit on the main
 * thread, and runs until the guest powers off or panics, rebooting it on each reset.
 */
import { EventEmitter } from 'node:events';
import {
  type AcpiConfig,
  type NumaConfig,
  type VirtioMmioDevice,
  writeAcpiTables,
} from '../arch/x86/acpi/tables.js';
import { type BootCpuState, type RamRange, bootRamRanges, loadLinux } from '../arch/x86/boot.js';
import { filterCpuid } from '../arch/x86/cpuid.js';
import {
  ACPI_SLEEP_CONTROL_PORT,
  COM1_IRQ,
  COM1_PORT,
  COM2_IRQ,
  COM2_PORT,
  I8042_DATA_PORT,
  KVM_IDENTITY_MAP_START,
  KVM_TSS_START,
} from '../arch/x86/layout.js';
import { bootMsrs, pvMsrsOff } from '../arch/x86/msr.js';
import { ACPI_PM_PORT_COUNT, AcpiPm } from '../devices/acpi-pm.js';
import { Bus, type BusDevice, type IrqLine } from '../devices/bus.js';
import { I8042, I8042_PORT_COUNT } from '../devices/i8042.js';
import { Serial, UART_PORT_COUNT } from '../devices/serial.js';
import { AgentClient } from '../guest/agent-client.js';
import { Kvm, type Vm } from '../kvm/kvm.js';
import {
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  KvmExit,
  type KvmRun,
  exitName,
} from '../kvm/run.js';
import {
  type CpuidEntry,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_IRQCHIP_PIC_SLAVE,
  KVM_MP_STATE_RUNNABLE,
  KVM_MP_STATE_UNINITIALIZED,
} from '../kvm/structs.js';
import { type BackingKind, MappedBacking } from '../memory/backing.js';
import { GuestMemory, type GuestRegion } from '../memory/guest-memory.js';
import { EFAULT } from '../sys/libc.js';
import { MemvisorError } from '../util/errors.js';
import { RateLimitedLog, hex } from '../virtio/log.js';
import type { SharedMmioWindow } from '../virtio/transport/mmio-worker.js';
import { bootRegs, bootSregs, resetFpu } from './boot-cpu.js';
import { ConsoleSink, PanicDetector } from './console.js';
import type { VcpuReply } from './vcpu-protocol.js';
import { type ExitVerdict, VcpuThread } from './vcpu-thread.js';

/** KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates the TSC-deadline mode. */
const KVM_CAP_TSC_DEADLINE_TIMER = 72;
/** Delay between a detected guest panic and the VMM's exit, so the panic lines are complete. */
export const PANIC_EXIT_DELAY_MS = 1000;
/** Resets after which the VMM gives up on a guest caught in a reset loop. */
export const MAX_RESETS = 1000;

/** What a `Machine` boots. */
export interface MachineConfig {
  vcpus: number;
  /** Boot RAM in bytes. */
  memory: number;
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  /**
   * Guest memory beyond boot RAM (virtio-mem regions), reachable through `memory`; their KVM
   * memslots are the caller's to manage through `vm`.
   */
  extraRegions?: GuestRegion[];
  /** NUMA topology for the SRAT and SLIT; none by default. */
  numa?: NumaConfig;
  /** Host memory behind boot RAM; anonymous by default. */
  backing?: BackingKind;
  /** Where COM1 output goes; the VMM's stdout by default. */
  console?: (bytes: Uint8Array) => void;
  /** Where the VMM's own log lines go; stderr by default. */
  log?: (line: string) => void;
}

/** How a machine's run ended. */
export type MachineExit =
  | { kind: 'poweroff' }
  | { kind: 'panic' }
  | { kind: 'error'; message: string };

/** An MMIO access no device claims; `data` is answered in place on reads. */
export interface UnclaimedMmio {
  vcpu: number;
  addr: bigint;
  data: Uint8Array;
  write: boolean;
}

/** Lifecycle of a machine. */
export type MachineState = 'created' | 'running' | 'paused' | 'resetting' | 'stopping' | 'stopped';

/** Counters the machine keeps. */
export interface MachineCounters {
  resets: number;
  ioExits: number;
  mmioExits: number;
  unclaimedMmio: number;
  unclaimedPio: number;
}

/** A one-vCPU view of the boot register state, kept to put a vCPU back at power-on state. */
interface PowerOnState {
  regs: NonNullable<Extract<VcpuReply, { ok: true }>['regs']>;
  sregs: NonNullable<Extract<VcpuReply, { ok: true }>['sregs']>;
  lapic: Uint8Array;
}

/** One VM: memory, vCPUs, devices and the boot path. */
export class Machine {
  readonly config: MachineConfig;
  /** Emits 'event' with `{ type, time, ... }` for boot, reset, power off, panic and errors. */
  readonly events = new EventEmitter();
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly memory: GuestMemory;
  readonly pioBus = new Bus();
  readonly mmioBus = new Bus();
  readonly com1: Serial;
  readonly com2: Serial;
  readonly agent: AgentClient;
  readonly counters: MachineCounters = {
    resets: 0,
    ioExits: 0,
    mmioExits: 0,
    unclaimedMmio: 0,
    unclaimedPio: 0,
  };
  /**
   * Handles MMIO that no device claims (virtio-mem catches accesses to unplugged memory here).
   * The default reads all ones, ignores writes and warns.
   */
  onUnclaimedMmio: (access: UnclaimedMmio) => void;
  /**
   * Called with every vCPU paused when KVM_RUN failed with EFAULT (KVM could not map the host
   * memory behind a memory slot). Returns true if it changed the slots so that running again
   * completes the access or exits with it; the vCPUs then run on. The default, and a false
   * return, stop the VM.
   */
  onMemoryFault: () => boolean = () => false;
  readonly #log: (line: string) => void;
  readonly #warn: RateLimitedLog;
  readonly #ram: { range: RamRange; backing: MappedBacking; slot: number }[] = [];
  readonly #vcpus: VcpuThread[] = [];
  readonly #powerOn: PowerOnState[] = [];
  readonly #powerOnChips: { irqchips: Uint8Array[]; pit: Uint8Array };
  readonly #irqLines = new Map<number, IrqLine>();
  readonly #virtioMmio: VirtioMmioDevice[] = [];
  readonly #sharedWindows: SharedMmioWindow[] = [];
  readonly #console: ConsoleSink;
  readonly #panic: PanicDetector;
  #supportedCpuid: CpuidEntry[] = [];
  #state: MachineState = 'created';
  #pending: 'reset' | 'poweroff' | null = null;
  /** Bumped whenever pause, reset or stop take the vCPUs; a memory-fault repair then yields. */
  #epoch = 0;
  #repairing = false;
  #panicked = false;
  #startedAt = 0;
  #exit: Promise<MachineExit>;
  #finish!: (exit: MachineExit) => void;

  constructor(config: MachineConfig) {
    if (!Number.isInteger(config.vcpus) || config.vcpus < 1 || config.vcpus > 254) {
      throw new MemvisorError('invalid_input', `vcpus: ${config.vcpus} is not from 1 to 254`);
    }
    this.config = config;
    this.#log = config.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.#warn = new RateLimitedLog('machine', this.#log);
    this.#exit = new Promise((resolve) => {
      this.#finish = resolve;
    });
    this.onUnclaimedMmio = (a) => {
      this.#warn.warn(
        `vcpu ${a.vcpu}: unclaimed MMIO ${a.write ? 'write' : 'read'} ` +
          `addr=${hex(a.addr)} len=${a.data.length}`,
      );
      if (!a.write) a.data.fill(0xff);
    };

    this.kvm = new Kvm();
    this.vm = this.kvm.createVm();
    this.vm.setTssAddr(KVM_TSS_START);
    this.vm.setIdentityMapAddr(KVM_IDENTITY_MAP_START);
    this.vm.createIrqchip();
    this.vm.createPit2();
    // The interrupt controllers' and PIT's power-on state, put back on every reset: a new
    // kernel booting on the previous one's IOAPIC routes and PIT mode can lose its timer.
    this.#powerOnChips = {
      irqchips: [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC].map((id) =>
        this.vm.getIrqchip(id),
      ),
      pit: this.vm.getPit2(),
    };

    const regions: GuestRegion[] = [];
    for (const range of bootRamRanges(config.memory)) {
      const backing = new MappedBacking(range.size, config.backing ?? 'anonymous', 'memvisor-ram');
      const slot = this.vm.allocateSlot();
      this.vm.setMemoryRegion(slot, range.gpa, range.size, backing.hostAddress);
      this.#ram.push({ range, backing, slot });
      regions.push({ name: `ram@${hex(range.gpa)}`, gpa: range.gpa, size: range.size, backing });
    }
    this.memory = new GuestMemory([...regions, ...(config.extraRegions ?? [])]);

    this.#console = new ConsoleSink(config.console ?? ((b) => process.stdout.write(b)));
    this.#panic = new PanicDetector(() => this.#onPanic());
    this.com1 = new Serial(this.irqLine(COM1_IRQ), (byte) => {
      this.#console.push(byte);
      this.#panic.push(byte);
    });
    this.agent = new AgentClient((bytes) => this.com2.enqueue(bytes), {
      name: 'agent',
      warn: (m) => this.#warn.warn(m),
    });
    const agentBytes = new Uint8Array(1);
    this.com2 = new Serial(this.irqLine(COM2_IRQ), (byte) => {
      agentBytes[0] = byte;
      this.agent.receive(agentBytes);
    });
    this.pioBus.insert(COM1_PORT, UART_PORT_COUNT, this.com1);
    this.pioBus.insert(COM2_PORT, UART_PORT_COUNT, this.com2);
    this.pioBus.insert(I8042_DATA_PORT, I8042_PORT_COUNT, new I8042(() => this.#request('reset')));
    this.pioBus.insert(
      ACPI_SLEEP_CONTROL_PORT,
      ACPI_PM_PORT_COUNT,
      new AcpiPm({
        powerOff: () => this.#request('poweroff'),
        reset: () => this.#request('reset'),
      }),
    );
  }

  /** The machine's state. */
  get state(): MachineState {
    return this.#state;
  }

  /** Milliseconds since the last (re)boot. */
  get uptimeMs(): number {
    return this.#startedAt === 0 ? 0 : Date.now() - this.#startedAt;
  }

  /** The vCPU threads, for counters and diagnostics. */
  get vcpus(): readonly VcpuThread[] {
    return this.#vcpus;
  }

  /** An edge-triggered interrupt line into the in-kernel irqchip at `gsi`. */
  irqLine(gsi: number): IrqLine {
    let line = this.#irqLines.get(gsi);
    if (!line) {
      const vm = this.vm;
      line = {
        gsi,
        trigger() {
          vm.irqLine(gsi, 1);
          vm.irqLine(gsi, 0);
        },
      };
      this.#irqLines.set(gsi, line);
    }
    return line;
  }

  /**
   * Adds an MMIO device before `start`. With `virtio`, the device is a virtio-mmio transport:
   * it is described in the DSDT (LNRO0005) with interrupt `gsi`, and the vCPU workers answer
   * its hot registers through `shared` (mmio-worker.ts).
   */
  addMmioDevice(
    base: number,
    size: number,
    device: BusDevice,
    virtio?: { gsi: number; shared: SharedArrayBuffer },
  ): void {
    if (this.#state !== 'created') {
      throw new MemvisorError('machine_state', 'MMIO devices are added before the machine starts');
    }
    this.mmioBus.insert(base, size, device);
    if (virtio === undefined) return;
    this.#virtioMmio.push({ base, size, gsi: virtio.gsi });
    this.#sharedWindows.push({ base, size, shared: virtio.shared });
  }

  /** Boots the guest: loads Linux and the ACPI tables, sets up the vCPUs and lets them run. */
  async start(): Promise<void> {
    if (this.#state !== 'created') throw new MemvisorError('machine_state', 'already started');
    this.#supportedCpuid = this.kvm.supportedCpuid();
    for (let id = 0; id < this.config.vcpus; id++) {
      const fd = this.vm.createVcpuFd(id);
      const vcpu = new VcpuThread(
        id,
        fd,
        this.vm.vcpuMmapSize,
        (t, run) => this.#onExit(t, run),
        (t, errno, message) => void this.#onRunError(t, errno, message),
        this.#sharedWindows,
      );
      this.#vcpus.push(vcpu);
    }
    await Promise.all(this.#vcpus.map((v) => v.ready()));
    for (const v of this.#vcpus) {
      const d = await v.dump();
      if (!d.ok || !d.regs || !d.sregs || !d.lapic) {
        throw new MemvisorError('vcpu_setup', `vcpu ${v.id}: cannot read its power-on state`);
      }
      this.#powerOn.push({ regs: d.regs, sregs: d.sregs, lapic: d.lapic });
    }
    await this.#boot(true);
  }

  /** Resolves when the guest powers off or panics, or the VMM fails; the VMM then stops. */
  wait(): Promise<MachineExit> {
    return this.#exit;
  }

  /** Stops every vCPU where it is; `resume` lets them go on. Devices keep their state. */
  async pause(): Promise<void> {
    if (this.#state !== 'running') return;
    this.#state = 'paused';
    this.#epoch++;
    await Promise.all(this.#vcpus.map((v) => v.pause()));
    this.#emit('paused');
  }

  /** Lets the vCPUs of a paused machine run again. */
  resume(): void {
    if (this.#state !== 'paused') return;
    this.#state = 'running';
    for (const v of this.#vcpus) v.resume();
    this.#emit('resumed');
    if (this.#pending !== null) queueMicrotask(() => void this.#act());
  }

  /** A system reset, as if the guest had written the ACPI reset register. */
  reset(): void {
    this.#request('reset');
  }

  /** Stops every vCPU and releases the VM. */
  async stop(exit: MachineExit = { kind: 'poweroff' }): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'stopped') return;
    this.#state = 'stopping';
    this.#epoch++;
    await Promise.all(this.#vcpus.map((v) => v.quit()));
    this.#console.flush();
    this.#state = 'stopped';
    this.#emit('stopped', { reason: exit.kind });
    this.#finish(exit);
  }

  #emit(type: string, data: Record<string, unknown> = {}): void {
    this.events.emit('event', { type, time: new Date().toISOString(), ...data });
  }

  /** Loads the guest and starts every vCPU at its boot state. */
  async #boot(first: boolean): Promise<void> {
    const ram = this.#ram.map((r) => r.range);
    const entry: BootCpuState = loadLinux(this.memory, {
      kernel: this.config.kernel,
      ...(this.config.initrd ? { initrd: this.config.initrd } : {}),
      cmdline: this.config.cmdline,
      ram,
    });
    const acpi: AcpiConfig = {
      vcpus: this.config.vcpus,
      virtioMmio: this.#virtioMmio,
      ...(this.config.numa ? { numa: this.config.numa } : {}),
    };
    writeAcpiTables(this.memory, acpi);

    const tscDeadline = this.kvm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    for (const v of this.#vcpus) {
      const power = this.#powerOn[v.id]!;
      const bsp = v.id === 0;
      await v.setup({
        // KVM refuses a changed CPUID table once a vCPU has run; the table never changes.
        ...(first
          ? {
              cpuid: filterCpuid(
                this.#supportedCpuid,
                { id: v.id, count: this.config.vcpus },
                { tscDeadline },
              ),
            }
          : {}),
        msrs: bootMsrs(),
        optionalMsrs: pvMsrsOff(),
        sregs: bsp ? bootSregs(power.sregs, entry) : power.sregs,
        regs: bsp ? bootRegs(entry) : power.regs,
        fpu: resetFpu(),
        lapic: power.lapic,
        lapicLint: bsp,
        mpState: bsp ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED,
      });
    }
    if (!first && this.#state !== 'resetting') return;
    this.#state = 'running';
    this.#startedAt = Date.now();
    this.#emit('boot', { resets: this.counters.resets });
    for (const v of this.#vcpus) v.resume();
  }

  #request(action: 'reset' | 'poweroff'): void {
    // After a panic the VMM is about to exit; the guest's own panic reboot is not carried out.
    if (this.#panicked) return;
    // Power off wins over a reset requested in the same moment.
    if (this.#pending === 'poweroff') return;
    const first = this.#pending === null;
    this.#pending = action;
    if (first) queueMicrotask(() => void this.#act());
  }

  async #act(): Promise<void> {
    if (this.#state !== 'running') return;
    const action = this.#pending;
    if (action === 'poweroff') {
      this.#emit('poweroff');
      await this.stop({ kind: 'poweroff' });
      return;
    }
    this.#state = 'resetting';
    this.#epoch++;
    await Promise.all(this.#vcpus.map((v) => v.pause()));
    this.#pending = null;
    this.counters.resets++;
    if (this.counters.resets > MAX_RESETS) {
      this.#fail(`the guest reset ${this.counters.resets} times`);
      return;
    }
    try {
      for (const r of this.#ram) r.backing.discard(0, r.range.size);
      for (const chip of this.#powerOnChips.irqchips) this.vm.setIrqchip(chip);
      this.vm.setPit2(this.#powerOnChips.pit);
      this.com1.reset();
      this.com2.reset();
      this.#panic.clear();
      // Listeners reset their own devices on this event, after the legacy ones.
      this.#emit('reset', { resets: this.counters.resets });
      await this.#boot(false);
    } catch (err) {
      // A stop that came during the reboot took the vCPUs; its reason stands.
      if (this.#state !== 'resetting') return;
      this.#fail(`reboot failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    // A reset asked for while this one ran (the API, or a vCPU's last exit) is carried out now.
    if (this.#pending !== null) queueMicrotask(() => void this.#act());
  }

  #onPanic(): void {
    if (this.#panicked) return;
    this.#panicked = true;
    this.#emit('panic');
    setTimeout(() => void this.stop({ kind: 'panic' }), PANIC_EXIT_DELAY_MS);
  }

  /**
   * A failed KVM_RUN. EFAULT goes to `onMemoryFault` with every vCPU paused; several vCPUs
   * failing at once share one repair, whose pause takes them all. Anything else stops the VM.
   */
  async #onRunError(vcpu: VcpuThread, errno: number, message: string): Promise<void> {
    let why = '';
    if (errno === EFAULT) {
      // Not running: whoever paused, resets or stops the machine decides whether the vCPU runs
      // again, and a fault that persists comes back then.
      if (this.#state !== 'running' || this.#repairing) return;
      this.#repairing = true;
      const epoch = this.#epoch;
      await Promise.all(this.#vcpus.map((v) => v.pause()));
      let repaired = false;
      try {
        repaired = this.onMemoryFault();
      } catch (err) {
        why = `; repairing the memory slots failed: ${(err as Error).message}`;
      }
      this.#repairing = false;
      // A pause, reset or stop that came meanwhile owns the vCPUs now and resumes them itself.
      if (epoch !== this.#epoch) return;
      if (repaired) {
        for (const v of this.#vcpus) v.resume();
        if (this.#pending !== null) queueMicrotask(() => void this.#act());
        return;
      }
    }
    this.#fail(`vcpu ${vcpu.id}: ${message} (errno ${errno})${why}`);
  }

  #fail(message: string): void {
    this.#log(`memvisor: ${message}`);
    this.#emit('error', { message });
    void this.stop({ kind: 'error', message });
  }

  /** Answers one vCPU exit on the main thread. */
  #onExit(vcpu: VcpuThread, run: KvmRun): ExitVerdict {
    // Exits keep being answered while pausing or resetting: a vCPU parks only after its access
    // is complete. Once the machine stops nothing needs answering.
    if (this.#state === 'stopping' || this.#state === 'stopped') return 'hold';
    const reason = run.exitReason;
    switch (reason) {
      case KvmExit.IO:
        this.#onIo(run);
        break;
      case KvmExit.MMIO:
        this.#onMmio(vcpu.id, run);
        break;
      case KvmExit.SHUTDOWN:
        // A triple fault: what a PC does next is a reset.
        this.#log(`memvisor: vcpu ${vcpu.id}: triple fault, resetting`);
        this.#request('reset');
        break;
      case KvmExit.SYSTEM_EVENT: {
        const type = run.systemEventType;
        if (type === KVM_SYSTEM_EVENT_SHUTDOWN) this.#request('poweroff');
        else if (type === KVM_SYSTEM_EVENT_RESET) this.#request('reset');
        else if (type === KVM_SYSTEM_EVENT_CRASH) this.#onPanic();
        else this.#warn.warn(`vcpu ${vcpu.id}: system event ${type} ignored`);
        break;
      }
      case KvmExit.HLT:
        // Only seen without an in-kernel LAPIC; re-entering is the right answer either way.
        break;
      case KvmExit.FAIL_ENTRY:
        this.#diagnose(vcpu, `entry failed, hardware reason ${hex(run.failEntryReason)}`);
        return 'hold';
      case KvmExit.INTERNAL_ERROR:
        this.#diagnose(vcpu, `KVM internal error, suberror ${run.internalSuberror}`);
        return 'hold';
      default:
        this.#diagnose(vcpu, `unexpected exit ${exitName(reason)}`);
        return 'hold';
    }
    return this.#pending === null ? 'resume' : 'hold';
  }

  #onIo(run: KvmRun): void {
    this.counters.ioExits++;
    const io = run.io();
    for (let i = 0; i < io.count; i++) {
      const data = io.data.subarray(i * io.size, (i + 1) * io.size);
      if (data.length !== io.size) break;
      const claimed = io.out ? this.pioBus.write(io.port, data) : this.pioBus.read(io.port, data);
      if (!claimed) this.counters.unclaimedPio++;
    }
  }

  #onMmio(vcpu: number, run: KvmRun): void {
    this.counters.mmioExits++;
    const m = run.mmio();
    const addr = Number(m.addr);
    let claimed = false;
    if (Number.isSafeInteger(addr)) {
      claimed = m.write ? this.mmioBus.write(addr, m.data) : this.mmioBus.read(addr, m.data);
    }
    if (claimed) return;
    this.counters.unclaimedMmio++;
    this.onUnclaimedMmio({ vcpu, addr: m.addr, data: m.data, write: m.write });
  }

  /** Logs a fatal vCPU state with its registers, then stops the VM with an error. */
  #diagnose(vcpu: VcpuThread, what: string): void {
    const message = `vcpu ${vcpu.id}: ${what}`;
    void (async () => {
      this.#state = 'stopping';
      await vcpu.pause();
      const d = await vcpu.dump();
      if (d.ok && d.regs && d.sregs) {
        this.#log(
          `memvisor: ${message}: rip=${hex(d.regs.rip)} rsp=${hex(d.regs.rsp)} ` +
            `cr0=${hex(d.sregs.cr0)} cr3=${hex(d.sregs.cr3)} cr4=${hex(d.sregs.cr4)} ` +
            `efer=${hex(d.sregs.efer)} cs=${hex(d.sregs.cs.selector)}`,
        );
      }
      this.#state = 'running';
      this.#fail(message);
    })();
  }
}
