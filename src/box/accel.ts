/**
 * Chooses how guests run here: on `/dev/kvm` directly (`native`), or inside the box when the
 * host's KVM is the software kind (module `kvm_pvm`, on which guests crawl) or absent. Inside the
 * box, `/dev/kvm` comes from `kvm_amd` on QEMU's emulated SVM, and that counts as native.
 */
import { existsSync } from 'node:fs';

/** How memvisor reaches a hardware-backed KVM. */
export type Accel = 'native' | 'box';

/** Paths the decision reads; a parameter so that tests can point it at a fake tree. */
export interface AccelProbePaths {
  devKvm: string;
  kvmPvm: string;
}

const HOST_PATHS: AccelProbePaths = { devKvm: '/dev/kvm', kvmPvm: '/sys/module/kvm_pvm' };

/** Returns `box` where `/dev/kvm` is missing or software-only, `native` otherwise. */
export function detectAccel(paths: AccelProbePaths = HOST_PATHS): Accel {
  if (!existsSync(paths.devKvm) || existsSync(paths.kvmPvm)) return 'box';
  return 'native';
}
