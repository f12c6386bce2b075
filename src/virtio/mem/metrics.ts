/** Counters of one virtio-mem device, as the metrics endpoint exposes them. */
export interface VirtioMemMetrics {
  /** Requests by type, including unsupported ones. */
  plug_requests: number;
  unplug_requests: number;
  unplug_all_requests: number;
  state_requests: number;
  unsupported_requests: number;
  /** Responses by type. */
  ack: number;
  nack: number;
  busy: number;
  error: number;
  /** Guest protocol violations: ERROR answers, malformed chains, short buffers, broken rings. */
  violations: number;
  /** Chains returned unanswered because no response could be written. */
  dropped_chains: number;
  /** Host plug or unplug callbacks that threw. */
  host_failures: number;
  /** Configuration change notifications sent. */
  config_changes: number;
}

/** A fresh set of counters, all zero. */
export function newVirtioMemMetrics(): VirtioMemMetrics {
  return {
    plug_requests: 0,
    unplug_requests: 0,
    unplug_all_requests: 0,
    state_requests: 0,
    unsupported_requests: 0,
    ack: 0,
    nack: 0,
    busy: 0,
    error: 0,
    violations: 0,
    dropped_chains: 0,
    host_failures: 0,
    config_changes: 0,
  };
}
