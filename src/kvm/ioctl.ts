/**
 * KVM ioctl request numbers, computed the way the Linux UAPI macros compute them
 * (include/uapi/asm-generic/ioctl.h) so that each one can be checked against its struct size.
 */

const IOC_NRBITS = 8;
const IOC_TYPEBITS = 8;
const IOC_SIZEBITS = 14;
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS;

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

/** _IOC(dir, type, nr, size); the result stays a non-negative number below 2^32. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size >= 1 << IOC_SIZEBITS) throw new RangeError(`ioctl argument size ${size} too large`);
  return (
    dir * 2 ** IOC_DIRSHIFT +
    (size << IOC_SIZESHIFT) +
    (type << IOC_TYPESHIFT) +
    (nr << IOC_NRSHIFT)
  );
}

/** _IO: no argument buffer. */
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** _IOR: the kernel writes `size` bytes to user space. */
export const ior = (type: number, nr: number, size: number): number =>
  ioc(IOC_READ, type, nr, size);
/** _IOW: the kernel reads `size` bytes from user space. */
export const iow = (type: number, nr: number, size: number): number =>
  ioc(IOC_WRITE, type, nr, size);
/** _IOWR: both directions. */
export const iowr = (type: number, nr: number, size: number): number =>
  ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** The ioctl type byte of every KVM request. */
export const KVMIO = 0xae;

// Sizes of the argument structs the request numbers encode (linux/kvm.h, asm/kvm.h).
const SIZE_CPUID2_HEADER = 8;
const SIZE_MSR_LIST_HEADER = 4;
const SIZE_MSRS_HEADER = 8;
const SIZE_USERSPACE_MEMORY_REGION = 32;
const SIZE_U64 = 8;
const SIZE_IRQ_LEVEL = 8;
const SIZE_IRQFD = 32;
const SIZE_PIT_CONFIG = 64;
const SIZE_IOEVENTFD = 64;
const SIZE_REGS = 144;
const SIZE_SREGS = 312;
const SIZE_FPU = 416;
const SIZE_LAPIC_STATE = 1024;
const SIZE_MP_STATE = 4;
const SIZE_IRQCHIP = 520;
const SIZE_PIT_STATE2 = 112;

// System ioctls on /dev/kvm.
export const KVM_GET_API_VERSION = io(KVMIO, 0x00);
export const KVM_CREATE_VM = io(KVMIO, 0x01);
export const KVM_GET_MSR_INDEX_LIST = iowr(KVMIO, 0x02, SIZE_MSR_LIST_HEADER);
export const KVM_CHECK_EXTENSION = io(KVMIO, 0x03);
export const KVM_GET_VCPU_MMAP_SIZE = io(KVMIO, 0x04);
export const KVM_GET_SUPPORTED_CPUID = iowr(KVMIO, 0x05, SIZE_CPUID2_HEADER);

// VM ioctls.
export const KVM_CREATE_VCPU = io(KVMIO, 0x41);
export const KVM_SET_USER_MEMORY_REGION = iow(KVMIO, 0x46, SIZE_USERSPACE_MEMORY_REGION);
export const KVM_SET_TSS_ADDR = io(KVMIO, 0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = iow(KVMIO, 0x48, SIZE_U64);
export const KVM_CREATE_IRQCHIP = io(KVMIO, 0x60);
export const KVM_IRQ_LINE = iow(KVMIO, 0x61, SIZE_IRQ_LEVEL);
export const KVM_GET_IRQCHIP = iowr(KVMIO, 0x62, SIZE_IRQCHIP);
// The UAPI declares KVM_SET_IRQCHIP with _IOR although the kernel reads the struct.
export const KVM_SET_IRQCHIP = ior(KVMIO, 0x63, SIZE_IRQCHIP);
export const KVM_IRQFD = iow(KVMIO, 0x76, SIZE_IRQFD);
export const KVM_CREATE_PIT2 = iow(KVMIO, 0x77, SIZE_PIT_CONFIG);
export const KVM_IOEVENTFD = iow(KVMIO, 0x79, SIZE_IOEVENTFD);
export const KVM_GET_PIT2 = ior(KVMIO, 0x9f, SIZE_PIT_STATE2);
export const KVM_SET_PIT2 = iow(KVMIO, 0xa0, SIZE_PIT_STATE2);

// vCPU ioctls.
export const KVM_RUN = io(KVMIO, 0x80);
export const KVM_GET_REGS = ior(KVMIO, 0x81, SIZE_REGS);
export const KVM_SET_REGS = iow(KVMIO, 0x82, SIZE_REGS);
export const KVM_GET_SREGS = ior(KVMIO, 0x83, SIZE_SREGS);
export const KVM_SET_SREGS = iow(KVMIO, 0x84, SIZE_SREGS);
export const KVM_GET_MSRS = iowr(KVMIO, 0x88, SIZE_MSRS_HEADER);
export const KVM_SET_MSRS = iow(KVMIO, 0x89, SIZE_MSRS_HEADER);
export const KVM_GET_FPU = ior(KVMIO, 0x8c, SIZE_FPU);
export const KVM_SET_FPU = iow(KVMIO, 0x8d, SIZE_FPU);
export const KVM_GET_LAPIC = ior(KVMIO, 0x8e, SIZE_LAPIC_STATE);
export const KVM_SET_LAPIC = iow(KVMIO, 0x8f, SIZE_LAPIC_STATE);
export const KVM_SET_CPUID2 = iow(KVMIO, 0x90, SIZE_CPUID2_HEADER);
export const KVM_GET_MP_STATE = ior(KVMIO, 0x98, SIZE_MP_STATE);
export const KVM_SET_MP_STATE = iow(KVMIO, 0x99, SIZE_MP_STATE);

// KVM_CHECK_EXTENSION capabilities.
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_IMMEDIATE_EXIT = 136;

/** The only KVM API version there has ever been. */
export const KVM_API_VERSION = 12;
