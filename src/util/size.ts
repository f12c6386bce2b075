import { InvalidInputError } from './errors.js';

/** 1 KiB, 1 MiB and 1 GiB in bytes. */
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: KiB,
  kb: KiB,
  kib: KiB,
  m: MiB,
  mb: MiB,
  mib: MiB,
  g: GiB,
  gb: GiB,
  gib: GiB,
  t: 1024 * GiB,
  tb: 1024 * GiB,
  tib: 1024 * GiB,
};

/**
 * Parses a size such as `512M`, `1G`, `1536MiB` or a plain byte count. Units are binary
 * (`1G` is 2^30 bytes) as every VMM's memory flags are. The result is a whole number of bytes
 * below 2^53; anything else throws `InvalidInputError` naming `what` (for example the flag).
 */
export function parseSize(text: string, what: string): number {
  const match = /^\s*(\d+)(?:\.(\d+))?\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? UNITS[match[3]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new InvalidInputError(
      `${what}: '${text}' is not a size (use bytes or a number with K, M, G or T, e.g. 512M)`,
    );
  }
  const whole = BigInt(match[1]!);
  const frac = match[2] ?? '';
  const scaled =
    whole * BigInt(unit) + (BigInt(frac || '0') * BigInt(unit)) / 10n ** BigInt(frac.length);
  if ((BigInt(frac || '0') * BigInt(unit)) % 10n ** BigInt(frac.length) !== 0n) {
    throw new InvalidInputError(`${what}: '${text}' is not a whole number of bytes`);
  }
  if (scaled > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidInputError(`${what}: '${text}' is too large`);
  }
  return Number(scaled);
}

/** Formats bytes for people: the largest binary unit that divides it, else two decimals. */
export function formatSize(bytes: number): string {
  for (const [unit, value] of [
    ['TiB', 1024 * GiB],
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', KiB],
  ] as const) {
    if (bytes >= value) {
      return bytes % value === 0
        ? `${bytes / value} ${unit}`
        : `${(bytes / value).toFixed(2)} ${unit}`;
    }
  }
  return `${bytes} B`;
}
