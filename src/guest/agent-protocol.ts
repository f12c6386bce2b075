/**
 * The wire format between the host's `AgentClient` and the guest agent on the second UART.
 * Every frame is one line of printable ASCII that starts with `#MV`, so a line of noise is never
 * taken for a frame, and every payload is base64 with its length stated beside it, so a line cut
 * short or joined with noise fails the length check instead of being misread.
 *
 *   hello    guest -> host   `#MV ready`
 *   request  host -> guest   `#MV <id> <b64len> <b64(command)>`
 *   result   guest -> host   `#MV <id> <code> <outlen> <errlen> <b64(stdout)> <b64(stderr)>`
 *   refusal  guest -> host   `#MV <id> ERR <reason>`   (id 0 when the id itself was unreadable)
 *
 * `outlen` and `errlen` count decoded bytes. A payload may instead be `z:<b64(gzip(bytes))>`
 * when that is shorter; `:` is not a base64 character, so the two cannot be confused. The host
 * starts each request with a newline so that any partial line already in the guest's buffer ends
 * there and is refused on its own.
 */
import { gunzipSync } from 'node:zlib';

/** First field of every frame. */
export const FRAME_TAG = '#MV';
/** The line the agent prints once it owns the port. */
export const HELLO_LINE = `${FRAME_TAG} ready`;
/** Longest line the host keeps; a longer one is noise and is dropped. */
export const MAX_LINE_BYTES = 64 * 1024 * 1024;

const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A line from the guest, decoded. */
export type GuestFrame =
  | { kind: 'hello' }
  | { kind: 'result'; id: number; code: number; stdout: Buffer; stderr: Buffer }
  | { kind: 'refusal'; id: number; reason: string }
  | { kind: 'invalid'; reason: string };

/** Encodes one request, leading newline included. */
export function encodeRequest(id: number, command: string): Buffer {
  const b64 = Buffer.from(command, 'utf8').toString('base64');
  return Buffer.from(`\n${FRAME_TAG} ${id} ${b64.length} ${b64}\n`, 'ascii');
}

/** Prefix of a gzip-compressed payload. */
export const GZIP_PREFIX = 'z:';
/** Most bytes a compressed payload may inflate to; a bigger claim is refused before inflating. */
const MAX_PAYLOAD_BYTES = 1 << 30;

function decodePayload(text: string, expectedBytes: number): Buffer | undefined {
  const gzip = text.startsWith(GZIP_PREFIX);
  const b64 = gzip ? text.slice(GZIP_PREFIX.length) : text;
  if (b64.length % 4 !== 0 || !BASE64.test(b64) || expectedBytes > MAX_PAYLOAD_BYTES) {
    return undefined;
  }
  let bytes = Buffer.from(b64, 'base64');
  if (gzip) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: expectedBytes + 1 });
    } catch {
      return undefined;
    }
  }
  return bytes.length === expectedBytes ? bytes : undefined;
}

/**
 * Decodes one line from the guest, without its newline. Lines that do not start with the tag
 * return `undefined` (console noise is not an error); tagged lines that do not check out return
 * an `invalid` frame naming what failed.
 */
export function decodeGuestLine(line: string): GuestFrame | undefined {
  if (!line.startsWith(`${FRAME_TAG} `)) return undefined;
  if (line === HELLO_LINE) return { kind: 'hello' };
  const fields = line.split(' ');
  const [, id, second] = fields;
  if (id === undefined || !DECIMAL.test(id)) return { kind: 'invalid', reason: 'bad id' };
  if (second === 'ERR') {
    return { kind: 'refusal', id: Number(id), reason: fields.slice(3).join(' ') };
  }
  if (fields.length !== 7) return { kind: 'invalid', reason: `${fields.length} fields` };
  const [, , code, outLen, errLen, out, err] = fields as [...string[]];
  for (const n of [code, outLen, errLen]) {
    if (n === undefined || !DECIMAL.test(n)) return { kind: 'invalid', reason: 'bad number' };
  }
  const stdout = decodePayload(out ?? '', Number(outLen));
  const stderr = decodePayload(err ?? '', Number(errLen));
  if (stdout === undefined || stderr === undefined) {
    return { kind: 'invalid', reason: 'payload does not match its length' };
  }
  return { kind: 'result', id: Number(id), code: Number(code), stdout, stderr };
}
