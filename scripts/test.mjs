// `npm test`: lint and unit tests on the host, then the end-to-end suite on real guests (inside
// the box where /dev/kvm is the software kind), as one node:test run; exits non-zero if any fails.
import { spawnSync } from 'node:child_process';

const run = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit' }).status ?? 1;
const lint = run('npx', ['biome', 'check', 'src', 'test', 'bench']);
const unit = run(process.execPath, ['--test', 'dist/src', 'dist/bench']);
const e2e = run(process.execPath, [
  'dist/src/cli/main.js',
  'box',
  '--',
  process.execPath,
  '--test',
  'dist/test/e2e',
]);
process.exit(lint === 0 && unit === 0 && e2e === 0 ? 0 : 1);
