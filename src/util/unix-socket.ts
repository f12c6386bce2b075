/**
 * Unix socket paths an operator names (`--api-sock`): whether a server answers on one, and
 * making one free for a new server without ever removing what is not a stale socket.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { InvalidInputError } from './errors.js';

/** How long a probe of an existing socket path waits for an answer. */
const PROBE_TIMEOUT_MS = 1000;
/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * Answers whether a server accepts connections on the Unix socket `path` now. A refused or
 * missing socket is not live; a connection that neither opens nor fails in time counts as live,
 * since replacing a busy server's socket would cut it off.
 */
export function unixSocketLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const timer = setTimeout(() => finish(true), PROBE_TIMEOUT_MS);
    const finish = (live: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(live);
    };
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Makes `path` free for a new Unix socket server: nothing there is fine, a stale socket (no
 * server answers) is removed. A live socket, any other kind of file, a missing folder or a
 * path too long for a socket is refused with an InvalidInputError whose message starts with
 * `label` (the flag that named the path), leaving everything untouched.
 */
export async function claimUnixSocketPath(path: string, label: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new InvalidInputError(
      `${label}: ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the most a Unix ` +
        'socket path can be',
    );
  }
  if (!existsSync(dirname(path))) {
    throw new InvalidInputError(`${label}: folder ${dirname(path)} does not exist`);
  }
  let kind: 'socket' | 'other';
  try {
    kind = lstatSync(path).isSocket() ? 'socket' : 'other';
  } catch {
    return;
  }
  if (kind === 'other') {
    throw new InvalidInputError(`${label}: ${path} exists and is not a socket; not replacing it`);
  }
  if (await unixSocketLive(path)) {
    throw new InvalidInputError(`${label}: ${path} is in use: a server already answers there`);
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
