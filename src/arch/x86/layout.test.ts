import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ACPI_POWER_OFF_VALUE,
  BOOT_IDT_START,
  KVM_IDENTITY_MAP_START,
  PDE_COUNT,
  PDE_START,
  PDPTE_START,
  VIRTIO_MMIO_MAX_DEVICES,
  bootRamEnd,
  firstVirtioMemBase,
  virtioMemBases,
  virtioMmioSlot,
} from './layout.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe('layout', () => {
  it('keeps the agreed fixed addresses', () => {
    assert.equal(BOOT_IDT_START, 0x520);
    assert.equal(PDPTE_START, 0xa000);
    assert.equal(PDE_START, 0xb000);
    assert.equal(PDE_START + PDE_COUNT * 0x1000, 0xf000);
    assert.equal(KVM_IDENTITY_MAP_START, 0xfffbc000);
    assert.equal(ACPI_POWER_OFF_VALUE, 0x34);
  });

  it('numbers virtio-mmio slots from 0xd0000000 and GSI 5', () => {
    assert.deepEqual(virtioMmioSlot(0), { base: 0xd0000000, size: 0x1000, gsi: 5 });
    assert.deepEqual(virtioMmioSlot(3), { base: 0xd0003000, size: 0x1000, gsi: 8 });
    assert.equal(VIRTIO_MMIO_MAX_DEVICES, 19);
  });

  it('puts virtio-mem regions 1 GiB-aligned above boot RAM and 4 GiB', () => {
    assert.equal(bootRamEnd(2 * GiB), 2 * GiB);
    assert.equal(bootRamEnd(5 * GiB), 6 * GiB);
    assert.equal(firstVirtioMemBase(512 * MiB), 4 * GiB);
    assert.equal(firstVirtioMemBase(3 * GiB), 4 * GiB);
    assert.equal(firstVirtioMemBase(3 * GiB + 128 * MiB), 5 * GiB);
    assert.equal(firstVirtioMemBase(4 * GiB), 5 * GiB);
    assert.deepEqual(virtioMemBases(5 * GiB, [4 * GiB, 128 * MiB, GiB]), [
      6 * GiB,
      10 * GiB,
      10 * GiB + 128 * MiB,
    ]);
  });
});
