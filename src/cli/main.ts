#!/usr/bin/env node
/**
 * The `memvisor` command. Each subcommand lives in ./commands and registers itself; this file
 * only parses, dispatches and turns errors into one line and an exit status: 2 for a usage
 * mistake, 1 for anything else.
 */
import { Command, CommanderError } from 'commander';
import { MemvisorError } from '../util/errors.js';
import { register as registerControl } from './commands/control.js';
import { UsageError } from './options.js';

const program = new Command('memvisor')
  .description('A KVM virtual machine monitor with elastic guest memory through virtio-mem')
  .showHelpAfterError()
  .exitOverride();

for (const register of [registerControl]) register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else if (err instanceof UsageError) {
    console.error(`memvisor: ${err.message}`);
    process.exitCode = 2;
  } else if (err instanceof MemvisorError) {
    console.error(`memvisor: ${err.message}`);
    process.exitCode = err.code === 'invalid_input' ? 2 : 1;
  } else {
    console.error(err);
    process.exitCode = 1;
  }
}
