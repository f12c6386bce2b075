/**
 * `memvisor box [--memory MiB] [--timeout s] -- CMD...`: runs CMD inside the nested-KVM box
 * and exits with its exit code.
 */
import type { Command } from 'commander';
import { DEFAULT_BOX_MEMORY_MIB, runInBox } from '../../box/box.js';
import { InvalidInputError } from '../../util/errors.js';

function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new InvalidInputError(`${flag} must be a positive integer, got '${value}'`);
    }
    return n;
  };
}

/** Adds the `box` command to `program`. */
export function register(program: Command): void {
  program
    .command('box')
    .description('run a command inside the nested-KVM box (QEMU TCG with emulated SVM)')
    .option('-m, --memory <MiB>', 'box memory', positiveInt('--memory'), DEFAULT_BOX_MEMORY_MIB)
    .option('-t, --timeout <seconds>', 'kill the box after this long', positiveInt('--timeout'))
    .argument('<command...>', 'the command and its arguments (after --)')
    .action(async (argv: string[], options: { memory: number; timeout?: number }) => {
      const code = await runInBox(argv, {
        memoryMiB: options.memory,
        ...(options.timeout !== undefined ? { timeoutMs: options.timeout * 1000 } : {}),
      });
      process.exitCode = code;
    });
}
