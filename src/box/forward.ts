/**
 * Byte pipes that carry the control API between the host and the box. On the host a Unix socket
 * server at the operator's `--api-sock` path pipes each connection to a loopback TCP port that
 * QEMU's user network forwards into the box; in the box a TCP server on the box's address pipes
 * each connection to the VMM's real Unix socket. The pipes know nothing of HTTP: a long-lived
 * event stream is just a connection that stays open, and a half-close travels through.
 */
import { unlinkSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { MemvisorError } from '../util/errors.js';
import { RateLimitedLog, stderrSink } from '../virtio/log.js';
import { BOX_NET } from './box.js';

/** The TCP port inside the box on which the API forwarder listens. */
export const BOX_API_PORT = 7024;
/** The VMM's API socket inside the box; the box's `/tmp` is its own tmpfs. */
export const BOX_API_SOCKET = '/tmp/memvisor-api.sock';
/** Variable telling the memvisor started in the box to forward `<port>:<unix path>`. */
export const FORWARD_ENV = 'MEMVISOR_BOX_API_FORWARD';

/** Where a forwarder connects each accepted connection. */
export type Upstream = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** Counters of a forwarder. */
export interface ForwardStats {
  /** Connections accepted. */
  accepted: number;
  /** Connections dropped because the upstream could not be reached. */
  upstreamFailed: number;
  /** Connections open now. */
  active: number;
}

/** A running forwarder. */
export interface Forwarder {
  readonly stats: Readonly<ForwardStats>;
  /** Where it listens: a Unix path, or `host:port`. */
  readonly address: string;
  /**
   * Removes its Unix socket if it made one (at once, before the first await), stops accepting
   * and ends every open connection.
   */
  close(): Promise<void>;
}

/** Options of a forwarder. */
export interface ForwardOptions {
  /** Prefix of its warnings, e.g. `api-forward[host]`. */
  name: string;
  /** Where warnings go; standard error when absent. */
  log?: (line: string) => void;
  /** Keep the process alive while it listens; false lets the process end without closing it. */
  ref?: boolean;
}

function dial(upstream: Upstream): Socket {
  const socket =
    upstream.kind === 'tcp'
      ? connect({ host: upstream.host, port: upstream.port, allowHalfOpen: true })
      : connect({ path: upstream.path, allowHalfOpen: true });
  if (upstream.kind === 'tcp') socket.setNoDelay(true);
  return socket;
}

function describe(upstream: Upstream): string {
  return upstream.kind === 'tcp' ? `${upstream.host}:${upstream.port}` : upstream.path;
}

/**
 * Joins two connected sockets both ways. An end on one side half-closes the other; once either
 * side is fully closed or fails, the other is destroyed, so no connection outlives its peer.
 */
export function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const teardown = () => {
    a.destroy();
    b.destroy();
  };
  a.once('close', teardown);
  b.once('close', teardown);
  a.on('error', teardown);
  b.on('error', teardown);
}

/**
 * Serves `server` by piping every accepted connection to `upstream`. Bytes the client sends
 * before the upstream answers are held by the paused socket and flow once both are joined.
 */
function serve(server: Server, upstream: Upstream, opts: ForwardOptions) {
  const log = new RateLimitedLog(opts.name, opts.log ?? stderrSink);
  const stats: ForwardStats = { accepted: 0, upstreamFailed: 0, active: 0 };
  const open = new Set<Socket>();
  server.on('connection', (client: Socket) => {
    stats.accepted++;
    stats.active++;
    open.add(client);
    client.pause();
    if (opts.ref === false) client.unref();
    const peer = dial(upstream);
    if (opts.ref === false) peer.unref();
    open.add(peer);
    let joined = false;
    // Once joined, splice handles errors; before, a failure is the upstream being unreachable.
    peer.on('error', (err: NodeJS.ErrnoException) => {
      if (joined) return;
      stats.upstreamFailed++;
      log.warn(`cannot reach ${describe(upstream)}: ${err.code ?? err.message}`);
      client.destroy();
    });
    client.on('error', () => peer.destroy());
    peer.once('connect', () => {
      joined = true;
      splice(client, peer);
      client.resume();
    });
    client.once('close', () => {
      if (!joined) peer.destroy();
      stats.active--;
      open.delete(client);
    });
    peer.once('close', () => open.delete(peer));
  });
  const close = () =>
    new Promise<void>((done) => {
      server.close(() => done());
      for (const socket of open) socket.destroy();
    });
  return { stats, close };
}

function listening(server: Server, listen: (cb: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    listen(() => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

/** Asks the kernel for a free TCP port on 127.0.0.1; another process may take it before use. */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await listening(server, (cb) => server.listen(0, '127.0.0.1', cb));
  const address = server.address();
  await new Promise<void>((done) => server.close(() => done()));
  if (address === null || typeof address === 'string') {
    throw new MemvisorError('forward_failed', 'no TCP port on 127.0.0.1');
  }
  return address.port;
}

/**
 * Listens on the Unix socket `path` (which must be free: see `claimUnixSocketPath` in
 * src/util/unix-socket.ts) and pipes every connection to `upstream`. Closing removes the socket
 * file: at once, so that a signal handler can rely on it, and libuv would unlink the bound path
 * on close anyway.
 */
export async function forwardUnix(
  path: string,
  upstream: Upstream,
  opts: ForwardOptions,
): Promise<Forwarder> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  if (opts.ref === false) server.unref();
  await listening(server, (cb) => server.listen(path, cb));
  const served = serve(server, upstream, opts);
  return {
    stats: served.stats,
    address: path,
    close: async () => {
      try {
        unlinkSync(path);
      } catch {
        // Already gone.
      }
      await served.close();
    },
  };
}

/** Listens on TCP `host:port` (0: any free port) and pipes every connection to `upstream`. */
export async function forwardTcp(
  host: string,
  port: number,
  upstream: Upstream,
  opts: ForwardOptions,
): Promise<Forwarder> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  if (opts.ref === false) server.unref();
  await listening(server, (cb) => server.listen(port, host, cb));
  const bound = server.address();
  const served = serve(server, upstream, opts);
  const actual = bound !== null && typeof bound !== 'string' ? bound.port : port;
  return { stats: served.stats, address: `${host}:${actual}`, close: served.close };
}

/** The `<port>:<unix path>` value of `FORWARD_ENV`. */
export function formatForwardEnv(port: number, path: string): string {
  return `${port}:${path}`;
}

/** Parses a `FORWARD_ENV` value; undefined when it is not `<port>:<absolute unix path>`. */
export function parseForwardEnv(value: string): { port: number; path: string } | undefined {
  const match = /^(\d{1,5}):(\/.+)$/.exec(value);
  const port = Number(match?.[1]);
  if (!match?.[2] || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { port, path: match[2] };
}

/**
 * In the box: when `env` carries `FORWARD_ENV`, starts the TCP forwarder into the VMM's socket
 * and removes the variable so that child processes do not try again. The forwarder does not keep
 * the process alive; it ends with it. Resolves with the forwarder, or undefined when none is
 * asked for.
 */
export async function startBoxForward(
  env: NodeJS.ProcessEnv = process.env,
): Promise<Forwarder | undefined> {
  const value = env[FORWARD_ENV];
  if (value === undefined) return undefined;
  delete env[FORWARD_ENV];
  const target = parseForwardEnv(value);
  if (target === undefined) {
    throw new MemvisorError('forward_failed', `${FORWARD_ENV}: bad value '${value}'`);
  }
  return forwardTcp(
    BOX_NET.address,
    target.port,
    { kind: 'unix', path: target.path },
    { name: 'api-forward[box]', ref: false },
  );
}
