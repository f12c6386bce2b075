/** Shared handling of command-line values: one-line errors, exit status 2, nothing started. */
import { InvalidInputError } from '../util/errors.js';
import { parseSize } from '../util/size.js';

/** A command-line mistake; main prints its message alone and exits with status 2. */
export class UsageError extends InvalidInputError {}

/** Throws a UsageError with `message`. */
export function fail(message: string): never {
  throw new UsageError(message);
}

/** Parses a SIZE value of `flag`, turning a bad one into a UsageError naming the flag. */
export function sizeOption(value: string, flag: string): number {
  try {
    return parseSize(value, flag);
  } catch (err) {
    return fail((err as Error).message);
  }
}

/** Parses a whole number in [min, max] for `flag`. */
export function intOption(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    fail(`${flag}: '${value}' is not a whole number from ${min} to ${max}`);
  }
  return n;
}
