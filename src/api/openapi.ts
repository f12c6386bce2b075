/** The OpenAPI 3.1 document of the control API, built from the same schemas that validate it. */
import {
  BALLOON_BODY,
  BLOCKS,
  ERROR,
  EXEC_BODY,
  EXEC_RESULT,
  RESIZE_BODY,
  VIRTIO_MEM_STATUS,
  VM_STATUS,
} from './schemas.js';

const json = (schema: unknown) => ({ 'application/json': { schema } });
const errorAnswer = (description: string) => ({ description, content: json(ERROR) });

/** Returns the document served at GET /v1/openapi.json. */
export function openApiDocument(): Record<string, unknown> {
  const deviceId = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
  return {
    openapi: '3.1.0',
    info: {
      title: 'memvisor control API',
      version: '1',
      description:
        'Served over HTTP/1.1 on the Unix socket given to `memvisor run --api-sock`. ' +
        'All sizes are bytes unless a string with a binary unit is given.',
    },
    paths: {
      '/v1/vm': {
        get: {
          summary: 'VM state, per-device sizes and host-resident memory',
          responses: { 200: { description: 'VM status', content: json(VM_STATUS) } },
        },
      },
      '/v1/vm/stop': {
        put: {
          summary: 'Power the VM off and end the VMM',
          responses: { 202: { description: 'Stopping' } },
        },
      },
      '/v1/vm/reset': {
        put: {
          summary: 'System reset: every virtio-mem block is unplugged, the guest boots again',
          responses: { 204: { description: 'Reset done' } },
        },
      },
      '/v1/vm/pause': {
        put: {
          summary: 'Stop every vCPU where it is (also what --on-violation pause does)',
          responses: { 204: { description: 'Paused' } },
        },
      },
      '/v1/vm/resume': {
        put: {
          summary: 'Let a paused VM run again',
          responses: { 204: { description: 'Running' } },
        },
      },
      '/v1/virtio-mem': {
        get: {
          summary: 'Every virtio-mem device',
          responses: {
            200: {
              description: 'Devices',
              content: json({ type: 'array', items: VIRTIO_MEM_STATUS }),
            },
          },
        },
      },
      '/v1/virtio-mem/{id}': {
        patch: {
          summary: "Set a device's requested size; the guest driver plugs or unplugs to reach it",
          parameters: [deviceId],
          requestBody: { required: true, content: json(RESIZE_BODY) },
          responses: {
            200: { description: 'The device after the change', content: json(VIRTIO_MEM_STATUS) },
            400: errorAnswer('Bad, unaligned or too large size; nothing changed'),
            404: errorAnswer('No such device'),
          },
        },
      },
      '/v1/virtio-mem/{id}/blocks': {
        get: {
          summary: 'Plug state of every block of the device',
          parameters: [deviceId],
          responses: {
            200: { description: 'Block map', content: json(BLOCKS) },
            404: errorAnswer('No such device'),
          },
        },
      },
      '/v1/balloon': {
        put: {
          summary: 'Set the virtio-balloon target (memory taken from the guest)',
          requestBody: { required: true, content: json(BALLOON_BODY) },
          responses: {
            204: { description: 'Target set' },
            400: errorAnswer('Bad size, or no balloon device'),
          },
        },
      },
      '/v1/exec': {
        post: {
          summary: 'Run a shell command in the guest through the agent',
          requestBody: { required: true, content: json(EXEC_BODY) },
          responses: {
            200: { description: 'Exit code and base64 output', content: json(EXEC_RESULT) },
            409: errorAnswer('Guest agent not ready, or the VM is paused'),
            504: errorAnswer('Command timed out'),
          },
        },
      },
      '/v1/events': {
        get: {
          summary: 'Server-sent events: size changes, violations, resets, stop',
          responses: { 200: { description: 'text/event-stream' } },
        },
      },
      '/v1/metrics': {
        get: {
          summary: 'Prometheus text exposition of sizes and counters',
          responses: { 200: { description: 'text/plain' } },
        },
      },
    },
  };
}
