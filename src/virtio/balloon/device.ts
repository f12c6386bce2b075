/**
 * The traditional memory balloon (VIRTIO 1.2 section 5.5), the baseline virtio-mem is compared
 * with. The host sets a target in 4 KiB pages; the driver inflates by handing frames to the
 * device, which discards them, and deflates by taking them back, which needs nothing here
 * because discarded memory repopulates on touch. Free page reporting discards reported ranges
 * the same way. VIRTIO_BALLOON_F_MUST_TELL_HOST, FREE_PAGE_HINT and PAGE_POISON are not offered.
 *
 * Queue numbering follows Linux 6.1, which numbers only the queues it sets up: inflateq 0,
 * deflateq 1, then statsq if STATS_VQ was negotiated, then reporting_vq if PAGE_REPORTING was.
 * A driver numbering by the spec's fixed table (statsq 2, reporting_vq 4) without STATS_VQ
 * would find its reporting queue unserved.
 */
import { EventEmitter } from 'node:events';
import { InvalidInputError } from '../../util/errors.js';
import type { BalloonStatus } from '../../vmm/controller.js';
import {
  type DeviceContext,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BALLOON,
  type VirtioDevice,
  readConfigBytes,
} from '../device.js';
import { type LogSink, RateLimitedLog, hex } from '../log.js';
import type { DescriptorChain, Virtqueue } from '../queue.js';
import {
  VIRTIO_BALLOON_BUFFERS_PER_NOTIFY,
  VIRTIO_BALLOON_CONFIG,
  VIRTIO_BALLOON_CONFIG_SIZE,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_PAGE_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VIRTIO_BALLOON_MAX_PFNS_PER_BUFFER,
  VIRTIO_BALLOON_MAX_STATS,
  VIRTIO_BALLOON_PAGE_SIZE,
  VIRTIO_BALLOON_PFN_SIZE,
  VIRTIO_BALLOON_QUEUE_COUNT,
  VIRTIO_BALLOON_QUEUE_SIZE,
  VIRTIO_BALLOON_STAT_NAMES,
  VIRTIO_BALLOON_STAT_SIZE,
} from './constants.js';

/** What the VMM does for the balloon. */
export interface BalloonHost {
  /** Gives [gpa, gpa+len) of guest RAM back to the host; it reads as zeros on next touch. */
  discard(gpa: number, len: number): void;
}

/** Construction parameters. */
export interface VirtioBalloonOptions {
  /** Initial target in bytes, a multiple of 4 KiB; 0 when absent. */
  targetBytes?: number;
  /**
   * Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM. Linux then leaves inflated pages in MemTotal and
   * may take them back under memory pressure; without it MemTotal drops by the balloon size.
   */
  deflateOnOom?: boolean;
  host: BalloonHost;
  log?: LogSink;
}

/** Counters of the balloon, as the metrics endpoint exposes them. */
export interface VirtioBalloonMetrics {
  inflated_pages: number;
  deflated_pages: number;
  /** PFNs naming no guest memory, skipped. */
  out_of_range_pfns: number;
  reported_bytes: number;
  stats_updates: number;
  /** Guest protocol violations: malformed chains, bad buffers, broken rings. */
  violations: number;
  host_failures: number;
}

/** What each configured queue index serves. */
type QueueRole = 'inflate' | 'deflate' | 'stats' | 'reporting';

/** The virtio-balloon device. */
export class VirtioBalloon implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BALLOON;
  readonly availableFeatures: bigint;
  readonly queueMaxSizes: readonly number[] = Array(VIRTIO_BALLOON_QUEUE_COUNT).fill(
    VIRTIO_BALLOON_QUEUE_SIZE,
  );
  /** 'guest_error' ({ reason }) for every guest protocol violation. */
  readonly events = new EventEmitter();
  readonly metrics: VirtioBalloonMetrics = {
    inflated_pages: 0,
    deflated_pages: 0,
    out_of_range_pfns: 0,
    reported_bytes: 0,
    stats_updates: 0,
    violations: 0,
    host_failures: 0,
  };
  readonly #host: BalloonHost;
  readonly #log: RateLimitedLog;
  #numPages = 0;
  #actual = 0;
  /** Frames inflated and not deflated since; their memory was discarded. */
  readonly #inflated = new Set<number>();
  readonly #stats = new Map<string, number>();
  #statsHead: number | null = null;
  #roles: QueueRole[] = [];
  #ctx: DeviceContext | null = null;
  readonly #continuations = new Set<number>();

  constructor(opts: VirtioBalloonOptions) {
    this.#host = opts.host;
    this.availableFeatures =
      VIRTIO_F_VERSION_1 |
      VIRTIO_BALLOON_F_STATS_VQ |
      VIRTIO_BALLOON_F_PAGE_REPORTING |
      (opts.deflateOnOom ? VIRTIO_BALLOON_F_DEFLATE_ON_OOM : 0n);
    this.#log = new RateLimitedLog('virtio-balloon', opts.log);
    this.#numPages = VirtioBalloon.#pagesFor(opts.targetBytes ?? 0);
  }

  /**
   * Sets the balloon target. Throws InvalidInputError, changing nothing, for a value that is
   * negative, not a multiple of 4 KiB, or more pages than the 32-bit num_pages can hold.
   */
  setTarget(bytes: number): void {
    const pages = VirtioBalloon.#pagesFor(bytes);

    this.#numPages = pages;

    this.#ctx?.signalConfig();
  }

  /**
   * Returns the held stats buffer so the driver refills and re-posts it (section 5.5.6.3).
   * Returns false if the driver has not posted one.
   */
  requestStats(): boolean {
    const ctx = this.#ctx;
    const index = this.#roles.indexOf('stats');
    const queue = ctx?.queues[index];
    if (!ctx || !queue || this.#statsHead === null) return false;
    queue.addUsed(this.#statsHead, 0);
    this.#statsHead = null;
    ctx.signalUsed(index);
    return true;
  }

  /** The balloon's state, with the last statistics by name. */
  status(): BalloonStatus {
    return {
      target_bytes: this.#numPages * VIRTIO_BALLOON_PAGE_SIZE,
      actual_bytes: this.#actual * VIRTIO_BALLOON_PAGE_SIZE,
      resident_discarded_bytes: this.#inflated.size * VIRTIO_BALLOON_PAGE_SIZE,
      stats: Object.fromEntries(this.#stats),
    };
  }

  readConfig(offset: number, data: Uint8Array): void {
    const config = new Uint8Array(VIRTIO_BALLOON_CONFIG_SIZE);
    const view = new DataView(config.buffer);
    view.setUint32(VIRTIO_BALLOON_CONFIG.NUM_PAGES, this.#numPages, true);
    view.setUint32(VIRTIO_BALLOON_CONFIG.ACTUAL, this.#actual, true);
    readConfigBytes(config, offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    const start = VIRTIO_BALLOON_CONFIG.ACTUAL;
    if (offset < start || offset + data.length > start + 4) {
      this.#violation(`write of ${data.length} bytes at config ${hex(offset)} outside actual`);
      return;
    }
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, this.#actual, true);
    bytes.set(data, offset - start);
    this.#actual = new DataView(bytes.buffer).getUint32(0, true);
  }

  activate(ctx: DeviceContext): void {
    this.#ctx = ctx;
    this.#roles = ['inflate', 'deflate'];
    if (ctx.ackedFeatures & VIRTIO_BALLOON_F_STATS_VQ) this.#roles.push('stats');
    if (ctx.ackedFeatures & VIRTIO_BALLOON_F_PAGE_REPORTING) this.#roles.push('reporting');
  }

  deviceReset(): void {
    // The driver starts over with an empty balloon; frames it had inflated are its own again.
    this.#ctx = null;
    this.#roles = [];
    this.#statsHead = null;
    this.#actual = 0;
    this.#inflated.clear();
  }

  processQueue(index: number): void {
    const ctx = this.#ctx;
    const queue = ctx?.queues[index];
    const role = this.#roles[index];
    if (!ctx || !queue || !role) return;
    let used = false;
    for (let served = 0; served < VIRTIO_BALLOON_BUFFERS_PER_NOTIFY; served++) {
      const popped = queue.pop();
      if (popped === null) break;
      if (popped.kind === 'broken') {
        this.#violation(`${role} queue: ${popped.reason}`);
        if (used) ctx.signalUsed(index);
        ctx.needsReset(popped.reason);
        return;
      }
      if (popped.kind === 'bad_chain') {
        this.#violation(`${role} queue: ${popped.reason}`);
        if (popped.head !== null) used = queue.addUsed(popped.head, 0) || used;
        continue;
      }
      used = this.#serve(ctx, queue, role, popped.chain) || used;
    }
    if (used) ctx.signalUsed(index);
    if (queue.hasPending()) this.#continueLater(ctx, index);
  }

  /** Returns whether the chain went back to the driver (the stats buffer is held). */
  #serve(ctx: DeviceContext, queue: Virtqueue, role: QueueRole, chain: DescriptorChain): boolean {
    switch (role) {
      case 'inflate':
        this.#inflate(ctx, chain);
        break;
      case 'deflate':
        this.#deflate(ctx, chain);
        break;
      case 'reporting':
        this.#report(chain);
        break;
      case 'stats':
        this.#takeStats(ctx, queue, chain);
        return false;
    }
    return queue.addUsed(chain.head, 0);
  }

  #inflate(ctx: DeviceContext, chain: DescriptorChain): void {
    const frames: number[] = [];
    for (const pfn of this.#pfns(ctx, chain)) {
      if (!ctx.memory.contains(pfn * VIRTIO_BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PAGE_SIZE)) {
        this.metrics.out_of_range_pfns++;
        continue;
      }
      this.metrics.inflated_pages++;
      this.#inflated.add(pfn);
      frames.push(pfn);
    }
    // In address order, so that neighbouring frames the driver listed apart share one discard:
    // each discard is a system call and a round of KVM's MMU notifier.
    frames.sort((a, b) => a - b);
    let first = 0;
    for (let i = 1; i <= frames.length; i++) {
      if (i < frames.length && frames[i]! <= frames[i - 1]! + 1) continue;
      const start = frames[first]!;
      this.#discard(
        start * VIRTIO_BALLOON_PAGE_SIZE,
        (frames[i - 1]! - start + 1) * VIRTIO_BALLOON_PAGE_SIZE,
      );
      first = i;
    }
  }

  #deflate(ctx: DeviceContext, chain: DescriptorChain): void {
    for (const pfn of this.#pfns(ctx, chain)) {
      if (!ctx.memory.contains(pfn * VIRTIO_BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PAGE_SIZE)) {
        this.metrics.out_of_range_pfns++;
        continue;
      }
      this.metrics.deflated_pages++;
      this.#inflated.delete(pfn);
    }
  }

  /** Free page reporting hands the free ranges as device-writable buffers. */
  #report(chain: DescriptorChain): void {
    for (const range of chain.writable) {
      this.metrics.reported_bytes += range.len;
      this.#discard(range.addr, range.len);
    }
  }

  #takeStats(ctx: DeviceContext, queue: Virtqueue, chain: DescriptorChain): void {
    if (this.#statsHead !== null) {
      // Only one stats buffer is ever in flight; a second one goes straight back.
      this.#violation('second stats buffer posted while one is held');
      queue.addUsed(this.#statsHead, 0);
    }
    this.#statsHead = chain.head;
    const bytes = chain.readBytes(ctx.memory, VIRTIO_BALLOON_MAX_STATS * VIRTIO_BALLOON_STAT_SIZE);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (
      let at = 0;
      at + VIRTIO_BALLOON_STAT_SIZE <= bytes.length;
      at += VIRTIO_BALLOON_STAT_SIZE
    ) {
      // Section 5.5.6.3: unknown tags are ignored.
      const name = VIRTIO_BALLOON_STAT_NAMES[view.getUint16(at, true)];
      if (name !== undefined) this.#stats.set(name, Number(view.getBigUint64(at + 2, true)));
    }
    this.metrics.stats_updates++;
  }

  /** The PFNs of an inflate or deflate buffer, up to the per-buffer cap. */
  #pfns(ctx: DeviceContext, chain: DescriptorChain): Uint32Array {
    const max = VIRTIO_BALLOON_MAX_PFNS_PER_BUFFER * VIRTIO_BALLOON_PFN_SIZE;
    if (chain.readableLength > max) {
      this.#violation(`buffer of ${chain.readableLength} bytes; only ${max} are read`);
    }
    const bytes = chain.readBytes(ctx.memory, max);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const pfns = new Uint32Array(Math.floor(bytes.length / VIRTIO_BALLOON_PFN_SIZE));
    for (let i = 0; i < pfns.length; i++)
      pfns[i] = view.getUint32(i * VIRTIO_BALLOON_PFN_SIZE, true);
    return pfns;
  }

  #discard(gpa: number, len: number): void {
    try {
      this.#host.discard(gpa, len);
    } catch (err) {
      this.metrics.host_failures++;
      this.#log.warn(
        `discard ${hex(gpa)}+${len} failed: ${err instanceof Error ? err.message : err}`,
      );
    }
  }

  #continueLater(ctx: DeviceContext, index: number): void {
    if (this.#continuations.has(index)) return;
    this.#continuations.add(index);
    setImmediate(() => {
      this.#continuations.delete(index);
      if (this.#ctx === ctx) this.processQueue(index);
    });
  }

  #violation(reason: string): void {
    this.metrics.violations++;
    this.#log.warn(reason);
    this.events.emit('guest_error', { reason });
  }

  static #pagesFor(bytes: number): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % VIRTIO_BALLOON_PAGE_SIZE !== 0) {
      throw new InvalidInputError(
        `balloon target ${bytes} is not a whole number of 4 KiB pages (bytes, multiple of 4096)`,
      );
    }
    const pages = bytes / VIRTIO_BALLOON_PAGE_SIZE;
    if (pages > 0xffffffff) {
      throw new InvalidInputError(`balloon target ${bytes} is above 2^32 pages of 4 KiB`);
    }
    return pages;
  }
}
