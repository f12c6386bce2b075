/**
 * Runs in the box beside the job and holds one empty KVM VM open for as long as the box lives.
 *
 * Why: the box's KVM enables virtualization on every CPU when the first VM is created and
 * disables it when the last one goes, each time by interrupting every CPU and waiting for all
 * to answer. Under TCG a box CPU sometimes never answers, and the box wedges there: seen with
 * QEMU's own guest exiting (`kvm_destroy_vm` waiting in `smp_call_function_many_cond`). With one
 * VM always open, the jobs' VMs come and go without that round of interrupts.
 */
import { Kvm } from '../kvm/kvm.js';

const vm = new Kvm().createVm();
setInterval(() => vm, 2 ** 30);
