#!/usr/bin/env node
/**
 * The `memvisor` command. Each subcommand lives in ./commands and registers itself; this file
 * only parses, dispatches and turns errors into one line and an exit status: 2 for a usage
 * mistake, BOX_TEMPFAIL_STATUS (75) when the box itself wedged or reset, 1 for anything else.
 */
import { Command, CommanderError } from 'commander';
import { BOX_FAILURE_CODES, BOX_TEMPFAIL_STATUS } from '../box/box.js';
import { MemvisorError } from '../util/errors.js';
import { dispatchAccel } from './accel.js';
import { register as registerBox } from './commands/box.js';
import { register as registerControl } from './commands/control.js';
import { register as registerDemo } from './commands/demo.js';
import { register as registerImage } from './commands/image.js';
import { type RunOptions, checkRunOptions, register as registerRun } from './commands/run.js';
import { UsageError } from './options.js';

const program = new Command('memvisor')
  .description('A KVM virtual machine monitor with elastic guest memory through virtio-mem')
  .showHelpAfterError()
  .enablePositionalOptions()
  .exitOverride();

for (const register of [registerRun, registerControl, registerDemo, registerImage, registerBox]) {
  register(program);
}

/** What each subcommand can check on the host before it is sent into the box. */
const CHECKS: Record<string, (opts: Record<string, unknown>) => void> = {
  run: (opts) => void checkRunOptions(opts as unknown as RunOptions),
};

/** Thrown by the pre-action hook of a check-only parse, so that no action runs. */
class Checked extends Error {}
let checkOnly = false;
program.hook('preAction', (_program, action) => {
  if (!checkOnly) return;
  CHECKS[action.name()]?.(action.opts());
  throw new Checked();
});

/** Parses `args` and runs the subcommand's checks, without running it. */
async function check(args: string[]): Promise<void> {
  checkOnly = true;
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (err) {
    if (!(err instanceof Checked)) throw err;
  } finally {
    checkOnly = false;
  }
}

try {
  const args = process.argv.slice(2);
  const boxed = await dispatchAccel(args, check);
  if (boxed !== undefined) process.exitCode = boxed;
  else await program.parseAsync(args, { from: 'user' });
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else if (err instanceof UsageError) {
    console.error(`memvisor: ${err.message}`);
    process.exitCode = 2;
  } else if (err instanceof MemvisorError) {
    console.error(`memvisor: ${err.message}`);
    if (err.code === 'invalid_input' || err.code === 'unknown_device') process.exitCode = 2;
    else if (BOX_FAILURE_CODES.includes(err.code)) process.exitCode = BOX_TEMPFAIL_STATUS;
    else process.exitCode = 1;
  } else {
    console.error(err);
    process.exitCode = 1;
  }
  // A command that failed is over, but what it started may keep the event loop alive (a vCPU
  // worker, a timer of a VMM that never booted); every caller cleans up before it throws.
  process.exit();
}
