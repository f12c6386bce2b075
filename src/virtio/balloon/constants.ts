/** Constants of the traditional memory balloon, VIRTIO 1.2 section 5.5, with the spec's names. */

// Section 5.5.3 "Feature bits".
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 1n << 0n;
export const VIRTIO_BALLOON_F_STATS_VQ = 1n << 1n;
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 1n << 2n;
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 1n << 3n;
export const VIRTIO_BALLOON_F_PAGE_POISON = 1n << 4n;
export const VIRTIO_BALLOON_F_PAGE_REPORTING = 1n << 5n;

/**
 * Section 5.5.4 struct virtio_balloon_config offsets: le32 num_pages, le32 actual,
 * le32 free_page_hint_cmd_id, le32 poison_val.
 */
export const VIRTIO_BALLOON_CONFIG = {
  NUM_PAGES: 0,
  ACTUAL: 4,
  FREE_PAGE_HINT_CMD_ID: 8,
  POISON_VAL: 12,
} as const;
/** sizeof(struct virtio_balloon_config). */
export const VIRTIO_BALLOON_CONFIG_SIZE = 12 + 4;

/** Section 5.5.6: inflate and deflate PFNs are 4 KiB frame numbers whatever the page size. */
export const VIRTIO_BALLOON_PFN_SHIFT = 12;
export const VIRTIO_BALLOON_PAGE_SIZE = 1 << VIRTIO_BALLOON_PFN_SHIFT;
/** A PFN on the inflate and deflate queues: le32. */
export const VIRTIO_BALLOON_PFN_SIZE = 4;

/** Section 5.5.6.3 struct virtio_balloon_stat: le16 tag, le64 val (packed). */
export const VIRTIO_BALLOON_STAT_SIZE = 2 + 8;

/** Size offered for every balloon queue. */
export const VIRTIO_BALLOON_QUEUE_SIZE = 128;
/** Queues: inflateq, deflateq, then statsq and reporting_vq when negotiated. */
export const VIRTIO_BALLOON_QUEUE_COUNT = 4;

/** PFNs taken from one buffer; Linux sends at most 256 (VIRTIO_BALLOON_ARRAY_PFNS_MAX). */
export const VIRTIO_BALLOON_MAX_PFNS_PER_BUFFER = 4096;
/** Stats entries taken from one buffer; Linux 6.1 sends 10, newer kernels 16. */
export const VIRTIO_BALLOON_MAX_STATS = 64;
/** Buffers served per queue notification before yielding to the event loop. */
export const VIRTIO_BALLOON_BUFFERS_PER_NOTIFY = 32;

/**
 * Section 5.5.6.3 statistic tags, and the newer ones of Linux's uapi virtio_balloon.h, by the
 * name `status()` reports them under.
 */
export const VIRTIO_BALLOON_STAT_NAMES: Readonly<Record<number, string>> = {
  0: 'swap_in', // VIRTIO_BALLOON_S_SWAP_IN
  1: 'swap_out', // VIRTIO_BALLOON_S_SWAP_OUT
  2: 'major_faults', // VIRTIO_BALLOON_S_MAJFLT
  3: 'minor_faults', // VIRTIO_BALLOON_S_MINFLT
  4: 'free_memory', // VIRTIO_BALLOON_S_MEMFREE
  5: 'total_memory', // VIRTIO_BALLOON_S_MEMTOT
  6: 'available_memory', // VIRTIO_BALLOON_S_AVAIL
  7: 'disk_caches', // VIRTIO_BALLOON_S_CACHES
  8: 'hugetlb_allocations', // VIRTIO_BALLOON_S_HTLB_PGALLOC
  9: 'hugetlb_failures', // VIRTIO_BALLOON_S_HTLB_PGFAIL
  10: 'oom_kills', // VIRTIO_BALLOON_S_OOM_KILL
  11: 'alloc_stalls', // VIRTIO_BALLOON_S_ALLOC_STALL
  12: 'async_scans', // VIRTIO_BALLOON_S_ASYNC_SCAN
  13: 'direct_scans', // VIRTIO_BALLOON_S_DIRECT_SCAN
  14: 'async_reclaims', // VIRTIO_BALLOON_S_ASYNC_RECLAIM
  15: 'direct_reclaims', // VIRTIO_BALLOON_S_DIRECT_RECLAIM
};
