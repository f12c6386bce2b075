/**
 * Constants of the VIRTIO memory device, VIRTIO 1.2 section 5.15 "Memory Device", with the spec's
 * names.
 */

// Section 5.15.3 "Feature bits".
export const VIRTIO_MEM_F_ACPI_PXM = 1n << 0n;
export const VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE = 1n << 1n;

// Section 5.15.6 "Device Operation": request types.
export const VIRTIO_MEM_REQ_PLUG = 0;
export const VIRTIO_MEM_REQ_UNPLUG = 1;
export const VIRTIO_MEM_REQ_UNPLUG_ALL = 2;
export const VIRTIO_MEM_REQ_STATE = 3;

// Section 5.15.6 "Device Operation": response types.
export const VIRTIO_MEM_RESP_ACK = 0;
export const VIRTIO_MEM_RESP_NACK = 1;
export const VIRTIO_MEM_RESP_BUSY = 2;
export const VIRTIO_MEM_RESP_ERROR = 3;

// Section 5.15.6.4 "STATE request": block states.
export const VIRTIO_MEM_STATE_PLUGGED = 0;
export const VIRTIO_MEM_STATE_UNPLUGGED = 1;
export const VIRTIO_MEM_STATE_MIXED = 2;

/** Section 5.15.2: the single "guest-request" virtqueue. */
export const VIRTIO_MEM_GUEST_REQUEST_QUEUE = 0;
/** Size offered for the guest-request queue; the Linux driver has one request in flight. */
export const VIRTIO_MEM_QUEUE_SIZE = 128;

/**
 * Section 5.15.4 struct virtio_mem_config offsets: le64 block_size, le16 node_id, u8 padding[6],
 * le64 addr, le64 region_size, le64 usable_region_size, le64 plugged_size, le64 requested_size.
 */
export const VIRTIO_MEM_CONFIG = {
  BLOCK_SIZE: 0,
  NODE_ID: 8,
  ADDR: 8 + 2 + 6,
  REGION_SIZE: 24,
  USABLE_REGION_SIZE: 32,
  PLUGGED_SIZE: 40,
  REQUESTED_SIZE: 48,
} as const;
/** sizeof(struct virtio_mem_config). */
export const VIRTIO_MEM_CONFIG_SIZE = 48 + 8;

/**
 * How far beyond `requested_size` the usable region reaches, so the driver can plug around
 * blocks it cannot use (the figure QEMU uses on x86).
 */
export const VIRTIO_MEM_USABLE_EXTENT = 256 * 1024 * 1024;

/** Requests served per queue notification before yielding to the event loop. */
export const VIRTIO_MEM_REQUESTS_PER_NOTIFY = 32;
