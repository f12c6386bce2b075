/**
 * The x86-64 guest-physical layout every part of memvisor agrees on: where boot RAM, the boot
 * structures, the legacy ports, the interrupt controllers and the virtio regions live.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Sizes used by the layout arithmetic below. */
export const SIZE = { KiB, MiB, GiB } as const;

/** Page sizes the boot page tables and region alignments use. */
export const PAGE_SIZE_4K = 4 * KiB;
export const PAGE_SIZE_2M = 2 * MiB;

// Boot RAM: one range below the 32-bit MMIO hole and the rest above 4 GiB.
/** Highest end of boot RAM below 4 GiB; [3 GiB, 4 GiB) is the MMIO hole. */
export const LOW_RAM_END_MAX = 3 * GiB;
/** Start of the 32-bit MMIO hole (virtio-mmio, IOAPIC, LAPIC, KVM's TSS). */
export const MMIO_HOLE_START = LOW_RAM_END_MAX;
/** First address above the MMIO hole; boot RAM beyond 3 GiB continues here. */
export const HIGH_RAM_START = 4 * GiB;

// e820: RAM [0, EBDA), reserved [EBDA, 1 MiB), RAM from 1 MiB.
/** Start of the legacy extended BIOS data area, the end of the first RAM entry. */
export const EBDA_START = 0x9fc00;
/** End of the legacy BIOS area; RAM resumes here. */
export const HIGH_MEMORY_START = 1 * MiB;

// Boot structures in the first MiB.
/** Global descriptor table: null, code, data, TSS entries of 8 bytes each. */
export const BOOT_GDT_START = 0x500;
/** An empty interrupt descriptor table right after the GDT (4 entries * 8 bytes = 0x20). */
export const BOOT_IDT_START = BOOT_GDT_START + 4 * 8;
/** The zero page (struct boot_params). */
export const ZERO_PAGE_START = 0x7000;
/** Top of the boot stack; grows down towards the zero page's end at 0x8000. */
export const BOOT_STACK_POINTER = 0x8ff0;
/** Page-map level 4 table. */
export const PML4_START = 0x9000;
/** Page-directory-pointer table referenced by PML4[0]. */
export const PDPTE_START = PML4_START + PAGE_SIZE_4K;
/** First of the page directories, one per GiB identity-mapped. */
export const PDE_START = PDPTE_START + PAGE_SIZE_4K;
/** The boot page tables identity-map [0, 4 GiB) with 2 MiB pages: 4 page directories. */
export const BOOT_IDENTITY_MAP_SIZE = 4 * GiB;
/** Number of page directories: one per GiB of the identity map (0xb000..0xefff). */
export const PDE_COUNT = BOOT_IDENTITY_MAP_SIZE / GiB;
/** Kernel command line. */
export const CMDLINE_START = 0x20000;
/** Most bytes of command line memvisor passes, including the terminating NUL. */
export const CMDLINE_MAX_SIZE = 4096;
/** ACPI tables live in [ACPI_START, ACPI_END), the legacy BIOS read-only area. */
export const ACPI_START = 0xe0000;
export const ACPI_END = HIGH_MEMORY_START;
/** The RSDP sits at the start of the ACPI area (and the zero page's acpi_rsdp_addr says so). */
export const RSDP_START = ACPI_START;
/** Where the kernel's protected-mode part (bzImage) or default load address (vmlinux) goes. */
export const KERNEL_START = HIGH_MEMORY_START;

// Legacy I/O ports.
/** 8250 UART, guest console (ttyS0). */
export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
/** 8250 UART, guest agent (ttyS1). */
export const COM2_PORT = 0x2f8;
export const COM2_IRQ = 3;
/** Span of the 8250 register block. */
export const SERIAL_PORT_SIZE = 8;
/** i8042 data and command ports; writing 0xfe to the command port resets the system. */
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
export const I8042_RESET_COMMAND = 0xfe;
/** ACPI hardware-reduced sleep control register (1 byte). */
export const ACPI_SLEEP_CONTROL_PORT = 0x600;
/** ACPI sleep status register (1 byte). */
export const ACPI_SLEEP_STATUS_PORT = ACPI_SLEEP_CONTROL_PORT + 1;
/** ACPI reset register (1 byte); writing ACPI_RESET_VALUE resets the system. */
export const ACPI_RESET_PORT = ACPI_SLEEP_CONTROL_PORT + 4;
export const ACPI_RESET_VALUE = 1;
/** SLP_EN in the sleep control register. */
export const ACPI_SLP_EN = 1 << 5;
/** SLP_TYP of S5 (soft off), matching the DSDT's \_S5_ package. */
export const ACPI_S5_SLP_TYP = 5;
/** The byte a guest writes to the sleep control register to power off: 0x34. */
export const ACPI_POWER_OFF_VALUE = ACPI_SLP_EN | (ACPI_S5_SLP_TYP << 2);
/** PCI configuration mechanism #1 ports; unclaimed, they read as all ones. */
export const PCI_CONFIG_PORT_START = 0xcf8;
export const PCI_CONFIG_PORT_END = 0xcff;

// Interrupt controllers and the addresses KVM needs on Intel.
export const IOAPIC_START = 0xfec00000;
export const IOAPIC_PINS = 24;
export const APIC_START = 0xfee00000;
/** KVM_SET_TSS_ADDR: three pages KVM uses for real-mode emulation on Intel. */
export const KVM_TSS_START = 0xfffbd000;
/** KVM_SET_IDENTITY_MAP_ADDR: one page, right below the TSS. */
export const KVM_IDENTITY_MAP_START = KVM_TSS_START - PAGE_SIZE_4K;

// virtio-mmio devices: slot i at base + i * size, interrupt GSI first + i.
export const VIRTIO_MMIO_START = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;
export const VIRTIO_MMIO_FIRST_GSI = 5;

/** virtio-mmio slots: one per IOAPIC pin from the first virtio GSI up. */
export const VIRTIO_MMIO_MAX_DEVICES = IOAPIC_PINS - VIRTIO_MMIO_FIRST_GSI;

/** Guest-physical base of virtio-mmio slot `index`. */
export function virtioMmioBase(index: number): number {
  return VIRTIO_MMIO_START + index * VIRTIO_MMIO_SIZE;
}

/** Interrupt (GSI, equal to the IOAPIC pin) of virtio-mmio slot `index`. */
export function virtioMmioGsi(index: number): number {
  return VIRTIO_MMIO_FIRST_GSI + index;
}

/** Slot `index` as the DSDT describes it. */
export function virtioMmioSlot(index: number): { base: number; size: number; gsi: number } {
  return { base: virtioMmioBase(index), size: VIRTIO_MMIO_SIZE, gsi: virtioMmioGsi(index) };
}

// virtio-mem regions: above boot RAM, 1 GiB aligned, back to back.
export const VIRTIO_MEM_REGION_ALIGN = 1 * GiB;
/** Every virtio-mem region size is a multiple of this. */
export const VIRTIO_MEM_REGION_GRANULE = 128 * MiB;

/** End (exclusive) of boot RAM for a guest with `memBytes` of it. */
export function bootRamEnd(memBytes: number): number {
  return memBytes <= LOW_RAM_END_MAX ? memBytes : HIGH_RAM_START + (memBytes - LOW_RAM_END_MAX);
}

/** Base of the first virtio-mem region for a guest with `memBytes` of boot RAM. */
export function firstVirtioMemBase(memBytes: number): number {
  const floor = Math.max(HIGH_RAM_START, bootRamEnd(memBytes));
  return Math.ceil(floor / VIRTIO_MEM_REGION_ALIGN) * VIRTIO_MEM_REGION_ALIGN;
}

/** Base of each virtio-mem region given their sizes in device order. */
export function virtioMemBases(memBytes: number, sizes: readonly number[]): number[] {
  const bases: number[] = [];
  let next = firstVirtioMemBase(memBytes);
  for (const size of sizes) {
    bases.push(next);
    next += size;
  }
  return bases;
}
