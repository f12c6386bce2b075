/**
 * How the VMM dispatches a vCPU's port I/O and MMIO exits to emulated devices. Offsets are
 * relative to the device's base; `data` holds the access width (1, 2, 4 or 8 bytes) and is
 * filled on reads. Devices never throw on a guest access: an access they do not understand reads
 * as all ones and is ignored on write, with a rate-limited warning.
 */
export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

/** An interrupt line into the guest's interrupt controller, driven as an edge. */
export interface IrqLine {
  readonly gsi: number;
  trigger(): void;
}

/** Maps address ranges to devices; one instance for port I/O and one for MMIO. */
export class Bus {
  readonly #ranges: { base: number; size: number; device: BusDevice }[] = [];

  /** Registers `device` over [base, base+size); throws on overlap (a VMM bug, not guest input). */
  insert(base: number, size: number, device: BusDevice): void {
    for (const r of this.#ranges) {
      if (base < r.base + r.size && r.base < base + size) {
        throw new Error(
          `bus range 0x${base.toString(16)}+${size} overlaps 0x${r.base.toString(16)}`,
        );
      }
    }
    this.#ranges.push({ base, size, device });
  }

  /** The device and offset for `addr`, or undefined. */
  find(addr: number): { device: BusDevice; offset: number } | undefined {
    for (const r of this.#ranges) {
      if (addr >= r.base && addr < r.base + r.size)
        return { device: r.device, offset: addr - r.base };
    }
    return undefined;
  }

  /** Dispatches a read; unclaimed addresses read as all ones. Returns whether a device answered. */
  read(addr: number, data: Uint8Array): boolean {
    const hit = this.find(addr);
    if (!hit) {
      data.fill(0xff);
      return false;
    }
    hit.device.read(hit.offset, data);
    return true;
  }

  /** Dispatches a write; unclaimed addresses are ignored. Returns whether a device took it. */
  write(addr: number, data: Uint8Array): boolean {
    const hit = this.find(addr);
    if (!hit) return false;
    hit.device.write(hit.offset, data);
    return true;
  }
}
