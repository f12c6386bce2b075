// `npm test`: unit tests on the host, then the end-to-end suite on real guests (inside the box
// where /dev/kvm is the software kind), as one node:test run each; exits non-zero if either fails.
import { spawnSync } from 'node:child_process';

const run = (args) => spawnSync(process.execPath, args, { stdio: 'inherit' }).status ?? 1;
const unit = run(['--test', 'dist/src', 'dist/test/unit']);
const e2e = run(['dist/src/cli/main.js', 'box', '--', process.execPath, '--test', 'dist/test/e2e']);
process.exit(unit === 0 && e2e === 0 ? 0 : 1);
