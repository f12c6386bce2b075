/**
 * JSON schemas of the control API's bodies and answers. They validate requests (fastify checks
 * them before a handler runs, so a bad body changes nothing) and make up the OpenAPI document.
 */

/** A size: a byte count, or a string such as "512M" or "1GiB". */
export const SIZE = {
  description: 'Bytes as an integer, or a string with a binary unit such as "512M" or "1GiB"',
  oneOf: [
    { type: 'integer', minimum: 0 },
    { type: 'string', minLength: 1, maxLength: 32 },
  ],
} as const;

export const ERROR = {
  type: 'object',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', description: 'Stable error code' },
    message: { type: 'string' },
  },
} as const;

export const RESIZE_BODY = {
  type: 'object',
  required: ['requested_size'],
  additionalProperties: false,
  properties: { requested_size: SIZE },
} as const;

export const BALLOON_BODY = {
  type: 'object',
  required: ['target_size'],
  additionalProperties: false,
  properties: { target_size: SIZE },
} as const;

export const EXEC_BODY = {
  type: 'object',
  required: ['command'],
  additionalProperties: false,
  properties: {
    command: { type: 'string', minLength: 1, maxLength: 65536 },
    timeout_ms: { type: 'integer', minimum: 1, maximum: 3_600_000 },
  },
} as const;

export const EXEC_RESULT = {
  type: 'object',
  required: ['code', 'stdout', 'stderr'],
  properties: {
    code: { type: 'integer' },
    stdout: { type: 'string', contentEncoding: 'base64' },
    stderr: { type: 'string', contentEncoding: 'base64' },
  },
} as const;

const BYTES = { type: 'integer', minimum: 0 } as const;

export const VIRTIO_MEM_STATUS = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    node: { type: 'integer' },
    addr: BYTES,
    region_size: BYTES,
    block_size: BYTES,
    usable_region_size: BYTES,
    requested_size: BYTES,
    plugged_size: BYTES,
    resident_bytes: BYTES,
    driver_ok: { type: 'boolean' },
    violations: { type: 'integer' },
  },
} as const;

export const VM_STATUS = {
  type: 'object',
  properties: {
    state: { type: 'string', enum: ['booting', 'running', 'paused', 'stopping', 'stopped'] },
    vcpus: { type: 'integer' },
    boot_memory: BYTES,
    resident_bytes: BYTES,
    uptime_ms: { type: 'integer' },
    resets: { type: 'integer' },
    numa_nodes: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          node: { type: 'integer' },
          cpus: { type: 'array', items: { type: 'integer' } },
          boot_memory: BYTES,
          requested_size: BYTES,
          plugged_size: BYTES,
        },
      },
    },
    virtio_mem: { type: 'array', items: VIRTIO_MEM_STATUS },
    balloon: {
      oneOf: [
        { type: 'null' },
        {
          type: 'object',
          properties: {
            target_bytes: BYTES,
            actual_bytes: BYTES,
            resident_discarded_bytes: BYTES,
            stats: { type: 'object', additionalProperties: { type: 'number' } },
          },
        },
      ],
    },
  },
} as const;

export const BLOCKS = {
  type: 'object',
  required: ['id', 'block_size', 'addr', 'usable_blocks', 'plugged'],
  properties: {
    id: { type: 'string' },
    addr: BYTES,
    block_size: BYTES,
    usable_blocks: { type: 'integer' },
    plugged: {
      type: 'string',
      description: 'One character per block of the region: "#" plugged, "." unplugged',
    },
  },
} as const;
