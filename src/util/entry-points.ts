/**
 * Where memvisor's entry points are, for the code that starts one in a new process or thread.
 *
 * `npm run build` writes the program twice: tsc's output, one file per module under `dist/src`,
 * and esbuild's bundle of it under `dist/bundle` (scripts/bundle.mjs), which keeps the entry
 * points in the same folders and puts shared chunks one folder deep as well. So this module's
 * code, wherever the bundle inlines it, runs one folder below its copy's root, as it does in
 * tsc's output, and one relative URL finds the entry point of the same copy.
 */
import { fileURLToPath } from 'node:url';

/**
 * The `memvisor` command the package ships: always the bundle, which starts in half the time of
 * tsc's output inside the box, where every module file read is a 9p round trip.
 */
export const CLI = fileURLToPath(new URL('../../bundle/cli/main.js', import.meta.url));

/** The vCPU thread's module (vcpu-worker.ts) in this copy of the program. */
export const VCPU_WORKER_URL = new URL('../vmm/vcpu-worker.js', import.meta.url);

/** The box's KVM holder script (kvm-holder.ts) in this copy of the program. */
export const KVM_HOLDER = fileURLToPath(new URL('../box/kvm-holder.js', import.meta.url));
