// `npm test`: lint and unit tests on the host, then the end-to-end suite on real guests (inside
// the box where /dev/kvm is the software kind), as one node:test run; exits non-zero if any fails.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BOX_TEMPFAIL_STATUS } from '../dist/src/box/box.js';

/** New boxes the end-to-end suite gets after the box failed or a guest triple-faulted. */
const RETRIES = 4;
/**
 * Seconds the suite may take in one box (it takes about 9 minutes): a job that hangs with the box
 * alive then fails the run with time left in CI's 90 minutes for the retries above.
 */
const E2E_TIMEOUT_S = 1500;
/** What memvisor logs when a guest vCPU triple-faults (src/vmm/machine.ts). */
const TRIPLE_FAULT = /memvisor: vcpu \d+: triple fault, resetting/;
/** Where the suite keeps each VM's output (test/e2e/support.ts, LOG_DIR). */
const VM_LOGS = 'dist/e2e-logs';

/** Whether a guest triple-faulted in the last run: its VMM output is in the VM logs. */
function tripleFaulted(output) {
  if (TRIPLE_FAULT.test(output)) return true;
  let names = [];
  try {
    names = readdirSync(VM_LOGS);
  } catch {
    return false;
  }
  return names.some((name) => TRIPLE_FAULT.test(readFileSync(join(VM_LOGS, name), 'utf8')));
}

const run = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit' }).status ?? 1;

/** Runs the suite in a new box, passing its output through; resolves with status and output. */
function e2e() {
  rmSync(VM_LOGS, { recursive: true, force: true });
  const box = ['dist/bundle/cli/main.js', 'box', '--timeout', String(E2E_TIMEOUT_S)];
  const args = [...box, '--', process.execPath, '--test', 'dist/test/e2e'];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    for (const [from, to] of [
      [child.stdout, process.stdout],
      [child.stderr, process.stderr],
    ]) {
      from.on('data', (chunk) => {
        to.write(chunk);
        output = (output + chunk.toString()).slice(-1_000_000);
      });
    }
    child.on('close', (code) => resolve({ status: code ?? 1, output }));
  });
}

const lint = run('npx', ['biome', 'check', 'src', 'test', 'bench']);
const unit = run(process.execPath, ['--test', 'dist/src', 'dist/bench']);
// The suite runs again from the start, in a new box, in two cases only: BOX_TEMPFAIL_STATUS
// (the box machine wedged or reset under it; see runInBox), and a failure in a run where a
// guest vCPU triple-faulted, which happens now and then in the box with no guest log line first
// and is not understood (README, Known gaps). Any other failure stands, and so does a failure
// that repeats in every box.
let result = await e2e();
for (let retry = 1; retry <= RETRIES && result.status !== 0; retry++) {
  const boxFailed = result.status === BOX_TEMPFAIL_STATUS;
  if (!boxFailed && !tripleFaulted(result.output)) break;
  const why = boxFailed ? 'the box failed' : 'a guest triple-faulted';
  console.error(`npm test: ${why}; end-to-end suite again in a new box (${retry}/${RETRIES})`);
  result = await e2e();
}
process.exit(lint === 0 && unit === 0 && result.status === 0 ? 0 : 1);
