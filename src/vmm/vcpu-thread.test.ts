import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Kvm } from '../kvm/kvm.js';
import { KvmExit } from '../kvm/run.js';
import { MappedBacking } from '../memory/backing.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { VcpuThread } from './vcpu-thread.js';

// Real-mode code at 0x1000: OUT `count` times to 0x3f8 (AL = CL), read port 0x3f9 into AL and
// write it to 0x3fa, read the unclaimed PCI port 0xcfc (answered in the worker) and write it to
// 0x3fb, then write 0x34 to 0x600 and halt.
const CODE = [
  [0xb9, 0x00, 0x00], // mov cx, count (patched below)
  [0xba, 0xf8, 0x03], // mov dx, 0x3f8
  [0x88, 0xc8], // l: mov al, cl
  [0xee], // out dx, al
  [0xe2, 0xfb], // loop l
  [0xba, 0xf9, 0x03], // mov dx, 0x3f9
  [0xec], // in al, dx
  [0x42], // inc dx
  [0xee], // out dx, al
  [0xba, 0xfc, 0x0c], // mov dx, 0xcfc
  [0xec], // in al, dx
  [0xba, 0xfb, 0x03], // mov dx, 0x3fb
  [0xee], // out dx, al
  [0xba, 0x00, 0x06], // mov dx, 0x600
  [0xb0, 0x34], // mov al, 0x34
  [0xee], // out dx, al
  [0xf4], // hlt
].flat();

test('a vCPU worker runs KVM exits through the main thread and pauses on request', async () => {
  const count = 300;
  const code = Uint8Array.from(CODE);
  code[1] = count & 0xff;
  code[2] = count >> 8;
  const kvm = new Kvm();
  const vm = kvm.createVm();
  vm.setTssAddr(0xfffbd000);
  const size = 1 << 20;
  const backing = new MappedBacking(size, 'anonymous');
  const mem = new GuestMemory([{ name: 'ram', gpa: 0, size, backing }]);
  vm.setMemoryRegion(vm.allocateSlot(), 0, size, backing.hostAddress);
  mem.write(0x1000, code);

  const outs: number[] = [];
  const seen = new Map<number, number>();
  let done!: () => void;
  const finished = new Promise<void>((r) => {
    done = r;
  });
  const vcpu = new VcpuThread(
    0,
    vm.createVcpuFd(0),
    vm.vcpuMmapSize,
    (_t, run) => {
      assert.equal(run.exitReason, KvmExit.IO);
      const io = run.io();
      if (io.port === 0x3f8) outs.push(io.data[0]!);
      else if (io.port === 0x3f9) io.data[0] = 0x5c;
      else seen.set(io.port, io.data[0]!);
      if (io.port !== 0x600) return 'resume';
      done();
      return 'hold';
    },
    (_t, errno, message) => assert.fail(`${message} errno ${errno}`),
  );
  try {
    await runGuest(vcpu, count, finished, outs, seen);
  } finally {
    // A failed assertion must not leave the worker keeping the test process alive.
    await vcpu.quit();
    vm.close();
    kvm.close();
  }
});

async function runGuest(
  vcpu: VcpuThread,
  count: number,
  finished: Promise<void>,
  outs: number[],
  seen: Map<number, number>,
): Promise<void> {
  await vcpu.ready();
  const power = await vcpu.dump();
  assert.ok(power.ok && power.regs && power.sregs);
  assert.equal(power.sregs.cs.selector, 0xf000, 'KVM_GET_SREGS filled the buffer');
  assert.equal(power.regs.rip, 0xfff0n, 'KVM_GET_REGS filled the buffer');
  const sregs = { ...power.sregs, cs: { ...power.sregs.cs, base: 0n, selector: 0 } };
  await vcpu.setup({ sregs, regs: { ...power.regs, rip: 0x1000n } });
  const set = await vcpu.dump();
  assert.ok(set.ok && set.regs && set.sregs);
  assert.equal(set.regs.rip, 0x1000n);
  assert.equal(set.sregs.cs.base, 0n);

  const t0 = performance.now();
  vcpu.resume();
  await finished;
  const perExit = ((performance.now() - t0) * 1000) / (count + 4);
  await vcpu.pause();
  const end = await vcpu.dump();
  assert.ok(end.ok && end.regs);

  assert.equal(outs.length, count);
  assert.deepEqual(outs.slice(0, 3), [count & 0xff, (count - 1) & 0xff, (count - 2) & 0xff]);
  assert.equal(seen.get(0x3fa), 0x5c, 'the IN answer written on the main thread reached AL');
  assert.equal(seen.get(0x3fb), 0xff, 'the PCI port read was answered in the worker');
  assert.equal(seen.get(0x600), 0x34);
  assert.equal(end.regs.rip, 0x1000n + BigInt(CODE.length - 1), 'stopped before the hlt');
  assert.equal(vcpu.exits, count + 4, 'the PCI read never reached the main thread');
  process.stderr.write(`# vcpu exit round trip: ${perExit.toFixed(1)} us\n`);
}
