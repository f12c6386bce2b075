/**
 * What the control API and the CLI may ask of a running VM. The `Machine` implements it; the API
 * layer knows nothing else of the VMM.
 */
import type { EventEmitter } from 'node:events';

/** The result of a command run in the guest through the agent. */
export interface ExecResult {
  code: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** One virtio-mem device as `status` reports it; every size in bytes. */
export interface VirtioMemStatus {
  id: string;
  node: number;
  addr: number;
  region_size: number;
  block_size: number;
  usable_region_size: number;
  requested_size: number;
  plugged_size: number;
  resident_bytes: number;
  driver_ok: boolean;
  violations: number;
}

/** virtio-balloon state as `status` reports it. */
export interface BalloonStatus {
  target_bytes: number;
  actual_bytes: number;
  resident_discarded_bytes: number;
  stats: Record<string, number>;
}

/** One guest NUMA node: its boot memory, and its virtio-mem devices' sizes added up. */
export interface NumaNodeStatus {
  node: number;
  cpus: number[];
  boot_memory: number;
  requested_size: number;
  plugged_size: number;
}

/** The VM's state as `status` reports it. */
export interface VmStatus {
  state: 'booting' | 'running' | 'paused' | 'stopping' | 'stopped';
  vcpus: number;
  boot_memory: number;
  resident_bytes: number;
  uptime_ms: number;
  resets: number;
  numa_nodes: NumaNodeStatus[];
  virtio_mem: VirtioMemStatus[];
  balloon: BalloonStatus | null;
}

/** An event on the VM's event stream; `type` names it, the rest is its data. */
export interface VmEvent {
  type: string;
  time: string;
  [key: string]: unknown;
}

/** The plug state of every block of one virtio-mem device. */
export interface BlockMap {
  id: string;
  addr: number;
  block_size: number;
  usable_blocks: number;
  /** One character per block of the region: '#' plugged, '.' unplugged. */
  plugged: string;
}

export interface VmController {
  /** Emits 'event' with a `VmEvent` for every size change, violation, reset and stop. */
  readonly events: EventEmitter;
  status(): VmStatus;
  /** Sets a virtio-mem device's requested size; throws InvalidInputError and changes nothing. */
  resize(deviceId: string | undefined, bytes: number): void;
  /** The block map of a virtio-mem device (the only one when `deviceId` is undefined). */
  blocks(deviceId: string | undefined): BlockMap;
  /** Sets the balloon's target size in bytes. */
  setBalloon(bytes: number): void;
  exec(command: string, timeoutMs?: number): Promise<ExecResult>;
  /** Stops every vCPU where it is; the VM keeps its state. */
  pause(): Promise<void>;
  /** Lets a paused VM run again. */
  resume(): void;
  /** A system reset, as if the guest rebooted. */
  reset(): void;
  /** Powers the VM off and ends the VMM. */
  stop(): Promise<void>;
}
