/**
 * Entry point of a vCPU worker thread: owns one vCPU's fd, issues all of its ioctls, and runs
 * the KVM_RUN loop described in vcpu-protocol.ts. Exits that need no device state (reads of
 * the unclaimed PCI configuration ports) or only shared state (virtio-mmio interrupt status,
 * acknowledge and queue notify; mmio-worker.ts) are answered here without waking the main
 * thread.
 */
import { type MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { Vcpu } from '../kvm/kvm.js';
import { KvmExit } from '../kvm/run.js';
import { setLapicLint } from '../kvm/structs.js';
import { pthreadSelf } from '../sys/libc.js';
import { SharedMmioWindows } from '../virtio/transport/mmio-worker.js';
import {
  Slot,
  type VcpuCommand,
  type VcpuReply,
  VcpuState,
  type VcpuWorkerData,
} from './vcpu-protocol.js';

/** PCI configuration mechanism #1 ports, which memvisor leaves unclaimed (pci=off guests). */
const PCI_CONFIG_FIRST = 0xcf8;
const PCI_CONFIG_LAST = 0xcff;

const data = workerData as VcpuWorkerData & { port: MessagePort };
const control = new Int32Array(data.control);
const vcpu = Vcpu.fromFd(data.id, data.fd, data.runSize);

const thread = pthreadSelf();
Atomics.store(control, Slot.THREAD_LO, Number(thread & 0xffffffffn) | 0);
Atomics.store(control, Slot.THREAD_HI, Number(thread >> 32n) | 0);

function setState(state: number): void {
  Atomics.store(control, Slot.STATE, state);
  Atomics.notify(control, Slot.STATE);
}

/** The local APIC state, absent on a VM without an in-kernel irqchip (KVM_GET_LAPIC fails). */
function lapic(): { lapic?: Uint8Array } {
  try {
    return { lapic: vcpu.getLapic() };
  } catch {
    return {};
  }
}

function execute(cmd: VcpuCommand): VcpuReply {
  switch (cmd.type) {
    case 'setup': {
      const s = cmd.setup;
      // CPUID before MSRs and registers: KVM derives the valid MSR and CR4 bits from it.
      if (s.cpuid) vcpu.setCpuid2(s.cpuid);
      if (s.msrs) vcpu.setMsrs(s.msrs);
      for (const m of s.optionalMsrs ?? []) vcpu.trySetMsr(m);
      if (s.sregs) vcpu.setSregs(s.sregs);
      if (s.regs) vcpu.setRegs(s.regs);
      if (s.fpu) vcpu.setFpu(s.fpu);
      if (s.lapic) vcpu.setLapic(s.lapic);
      if (s.lapicLint) {
        const lapic = vcpu.getLapic();
        setLapicLint(lapic);
        vcpu.setLapic(lapic);
      }
      if (s.mpState !== undefined) vcpu.setMpState(s.mpState);
      return { ok: true };
    }
    case 'dump':
      return { ok: true, regs: vcpu.getRegs(), sregs: vcpu.getSregs(), ...lapic() };
    case 'quit':
      return { ok: true };
  }
}

/**
 * Waits while PAUSED, running commands; returns false once told to quit. `announce` publishes
 * PAUSED first; after an ERROR the main thread itself moves the state to PAUSED.
 */
function paused(announce: boolean): boolean {
  if (announce) setState(VcpuState.PAUSED);
  for (;;) {
    Atomics.wait(control, Slot.STATE, VcpuState.PAUSED);
    const state = Atomics.load(control, Slot.STATE);
    if (state === VcpuState.RUNNING) return true;
    if (state !== VcpuState.COMMAND) continue;
    const msg = receiveMessageOnPort(data.port);
    if (!msg) {
      setState(VcpuState.PAUSED);
      continue;
    }
    const cmd = msg.message as VcpuCommand;
    let reply: VcpuReply;
    try {
      reply = execute(cmd);
    } catch (err) {
      reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    if (cmd.type === 'quit') {
      vcpu.unmapRun();
      setState(VcpuState.EXITED);
      data.port.postMessage(reply);
      return false;
    }
    setState(VcpuState.PAUSED);
    data.port.postMessage(reply);
  }
}

const virtio = new SharedMmioWindows(data.virtioWindows);

/** Answers an exit that needs nothing from the main thread; true if it did. */
function answerLocally(reason: number): boolean {
  if (reason === KvmExit.MMIO) {
    const m = vcpu.run.mmio();
    return virtio.answer(m.addr, m.write, m.data);
  }
  if (reason !== KvmExit.IO) return false;
  const io = vcpu.run.io();
  if (io.port < PCI_CONFIG_FIRST || io.port > PCI_CONFIG_LAST) return false;
  if (!io.out) io.data.fill(0xff);
  return true;
}

function loop(): void {
  if (!paused(true)) return;
  // True from an answered exit until KVM_RUN is entered again. KVM finishes an access (the
  // RIP advance past an OUT, the register load of an IN) on that next entry, so a vCPU pausing
  // here first re-enters with immediate_exit set: the access completes, no guest code runs,
  // and the registers a pause reads or a reset overwrites are consistent.
  let answered = false;
  for (;;) {
    if (Atomics.load(control, Slot.PAUSE_REQUEST) !== 0) {
      if (!answered) {
        if (!paused(true)) return;
        continue;
      }
      vcpu.run.immediateExit = true;
    }
    const result = vcpu.runOnce();
    answered = false;
    if (result.kind === 'failed') {
      Atomics.store(control, Slot.ERRNO, result.errno);
      setState(VcpuState.ERROR);
      Atomics.wait(control, Slot.STATE, VcpuState.ERROR);
      if (!paused(false)) return;
      continue;
    }
    if (result.kind === 'interrupted') {
      vcpu.run.immediateExit = false;
      continue;
    }
    answered = true;
    if (answerLocally(result.reason)) continue;
    setState(VcpuState.EXIT);
    Atomics.wait(control, Slot.STATE, VcpuState.EXIT);
  }
}

loop();
data.port.close();
