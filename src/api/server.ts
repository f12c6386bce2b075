/**
 * The control API: HTTP/1.1 over a Unix socket, described by the OpenAPI document it serves at
 * GET /v1/openapi.json. Every request body is validated against its schema before a handler
 * runs; an operator mistake is answered 400 (or 404 for an unknown device) with a stable
 * `error` code and a message, and changes nothing.
 */
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { InvalidInputError, MemvisorError } from '../util/errors.js';
import { parseSize } from '../util/size.js';
import { claimUnixSocketPath } from '../util/unix-socket.js';
import type { VmController, VmEvent } from '../vmm/controller.js';
import { renderMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
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

/** A size as the API accepts it: bytes or a string with a unit. */
type SizeInput = number | string;

function sizeOf(value: SizeInput, field: string): number {
  return typeof value === 'number' ? value : parseSize(value, field);
}

const HTTP_STATUS: Record<string, number> = {
  invalid_input: 400,
  unknown_device: 404,
  not_ready: 409,
  vm_paused: 409,
  agent_timeout: 504,
  agent_reset: 409,
};

function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  if (err instanceof MemvisorError) {
    return reply.code(HTTP_STATUS[err.code] ?? 500).send({ error: err.code, message: err.message });
  }
  const message = err instanceof Error ? err.message : String(err);
  return reply.code(500).send({ error: 'internal', message });
}

/** Builds the API server for `vm`; call `listen(path)` to serve it. */
export function createApiServer(vm: VmController): FastifyInstance {
  const app = Fastify({
    logger: false,
    // Closing the API must end event streams and requests the stopped guest will never answer.
    forceCloseConnections: true,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  });

  app.setErrorHandler((err: unknown, _req, reply) => {
    const e = err as { validation?: unknown; statusCode?: number; message?: string };
    if (e.validation) {
      return reply.code(400).send({ error: 'invalid_input', message: e.message ?? 'bad request' });
    }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({ error: 'bad_request', message: e.message ?? '' });
    }
    return sendError(reply, err);
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url}` }),
  );

  const errors = { 400: ERROR, 404: ERROR, 409: ERROR, 500: ERROR };

  app.get('/v1/openapi.json', async () => openApiDocument());

  app.get('/v1/vm', { schema: { response: { 200: VM_STATUS } } }, async () => vm.status());

  app.get('/v1/metrics', async (_req, reply) =>
    reply.type('text/plain; version=0.0.4').send(renderMetrics(vm.status())),
  );

  app.get('/v1/virtio-mem', async () => vm.status().virtio_mem);

  app.get<{ Params: { id: string } }>(
    '/v1/virtio-mem/:id/blocks',
    { schema: { response: { 200: BLOCKS, ...errors } } },
    async (req, reply) => {
      try {
        return vm.blocks(req.params.id);
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.patch<{ Params: { id: string }; Body: { requested_size: SizeInput } }>(
    '/v1/virtio-mem/:id',
    { schema: { body: RESIZE_BODY, response: { 200: VIRTIO_MEM_STATUS, ...errors } } },
    async (req, reply) => {
      try {
        const bytes = sizeOf(req.body.requested_size, 'requested_size');
        vm.resize(req.params.id, bytes);
        return vm.status().virtio_mem.find((d) => d.id === req.params.id);
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.put<{ Body: { target_size: SizeInput } }>(
    '/v1/balloon',
    { schema: { body: BALLOON_BODY, response: { ...errors } } },
    async (req, reply) => {
      try {
        vm.setBalloon(sizeOf(req.body.target_size, 'target_size'));
        return reply.code(204).send();
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.post<{ Body: { command: string; timeout_ms?: number } }>(
    '/v1/exec',
    { schema: { body: EXEC_BODY, response: { 200: EXEC_RESULT, ...errors, 504: ERROR } } },
    async (req, reply) => {
      try {
        const r = await vm.exec(req.body.command, req.body.timeout_ms);
        return {
          code: r.code,
          stdout: r.stdout.toString('base64'),
          stderr: r.stderr.toString('base64'),
        };
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.put('/v1/vm/reset', async (_req, reply) => {
    vm.reset();
    return reply.code(204).send();
  });

  app.put('/v1/vm/pause', async (_req, reply) => {
    await vm.pause();
    return reply.code(204).send();
  });

  app.put('/v1/vm/resume', async (_req, reply) => {
    vm.resume();
    return reply.code(204).send();
  });

  app.put('/v1/vm/stop', async (_req, reply) => {
    // Answer first: stopping ends this process.
    reply.code(202).send({ state: 'stopping' });
    setImmediate(() => void vm.stop());
    return reply;
  });

  app.get('/v1/events', (req, reply) => {
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    // The headers go out now, with the listener added in this same tick, so a client that has
    // them knows it will miss no event from here on.
    reply.raw.flushHeaders();
    const send = (event: VmEvent) => {
      reply.raw.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    };
    vm.events.on('event', send);
    // A client that goes away must not leave a listener behind.
    req.raw.on('close', () => vm.events.off('event', send));
    reply.hijack();
  });

  return app;
}

/**
 * Serves `vm` on the Unix socket `path`. A socket file left by a dead VMM is replaced; one a
 * live server answers on is refused, so two VMs never share a socket.
 */
export async function listenApi(vm: VmController, path: string): Promise<FastifyInstance> {
  await claimUnixSocketPath(path, '--api-sock');
  const app = createApiServer(vm);
  await app.listen({ path });
  return app;
}
