/** A client of the control API over its Unix socket; the CLI's only way into a running VM. */
import { request } from 'node:http';
import { MemvisorError } from '../util/errors.js';

/** An answer of the API with a status of 400 or more. */
export class ApiError extends MemvisorError {
  readonly status: number;

  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

export class ApiClient {
  readonly #socket: string;

  constructor(socketPath: string) {
    this.#socket = socketPath;
  }

  /** Sends one request and parses the JSON answer (undefined for an empty body). */
  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        {
          socketPath: this.#socket,
          method,
          path,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: Record<string, unknown> | undefined;
            try {
              parsed = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
            } catch {
              reject(
                new MemvisorError(
                  'api_unreachable',
                  `API socket ${this.#socket}: the answer is not JSON; is a memvisor VM there?`,
                ),
              );
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 400) {
              const code = String(parsed?.error ?? 'http_error');
              const message = String(parsed?.message ?? `HTTP ${status}`);
              reject(new ApiError(status, code, message));
            } else {
              resolve(parsed as T);
            }
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => reject(unreachable(this.#socket, err)));
      if (payload) req.write(payload);
      req.end();
    });
  }

  /**
   * Follows the server-sent event stream, calling `onEvent` with each event's data until the
   * server closes it (the VM stopped) or `signal` aborts; resolves then. `onOpen` is called once
   * the stream is set up: no event after that moment is missed.
   */
  events(
    onEvent: (event: Record<string, unknown>) => void,
    signal?: AbortSignal,
    onOpen?: () => void,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath: this.#socket, method: 'GET', path: '/v1/events', signal },
        (res) => {
          onOpen?.();
          let buffered = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffered += chunk;
            let end = buffered.indexOf('\n\n');
            while (end >= 0) {
              const block = buffered.slice(0, end);
              buffered = buffered.slice(end + 2);
              const data = block.split('\n').find((l) => l.startsWith('data: '));
              if (data) onEvent(JSON.parse(data.slice(6)) as Record<string, unknown>);
              end = buffered.indexOf('\n\n');
            }
          });
          res.on('end', () => resolve());
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.name === 'AbortError') resolve();
        else reject(unreachable(this.#socket, err));
      });
      req.end();
    });
  }
}

/** The error for a request that got no answer from the socket at `socket`. */
function unreachable(socket: string, err: NodeJS.ErrnoException): MemvisorError {
  const why =
    err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
      ? 'no VM listens there'
      : err.code === 'ECONNRESET' || err.code === 'EPIPE'
        ? 'the VMM closed the connection without answering (it is stopping or gone)'
        : err.message;
  return new MemvisorError('api_unreachable', `API socket ${socket}: ${why}`);
}
