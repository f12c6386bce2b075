/**
 * The few libc calls memvisor needs, bound through koffi. Every wrapper checks the result and
 * throws a `SyscallError` carrying errno, so callers never test for -1 themselves.
 */
import { createRequire } from 'node:module';
import { MemvisorError } from '../util/errors.js';

const require = createRequire(import.meta.url);
// koffi is CommonJS and ships no ESM entry.
const koffi = require('koffi') as typeof import('koffi');

const libc = koffi.load('libc.so.6');

/** A failed system call, with its name and errno. */
export class SyscallError extends MemvisorError {
  readonly errno: number;

  constructor(call: string, errno: number, detail = '') {
    super('syscall_failed', `${call}${detail ? ` (${detail})` : ''} failed: errno ${errno}`);
    this.errno = errno;
  }
}

/** Host address, as koffi hands pointers back. */
export type HostAddress = bigint;

const c = {
  open: libc.func('int open(const char *path, int flags, int mode)'),
  close: libc.func('int close(int fd)'),
  ioctlPtr: libc.func('int ioctl(int fd, unsigned long request, void *arg)'),
  ioctlInt: libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)'),
  ioctlAddr: libc.func('int ioctl(int fd, unsigned long request, uint64_t arg)'),
  mmap: libc.func(
    'uint64_t mmap(uint64_t addr, size_t len, int prot, int flags, int fd, int64_t off)',
  ),
  munmap: libc.func('int munmap(uint64_t addr, size_t len)'),
  madvise: libc.func('int madvise(uint64_t addr, size_t len, int advice)'),
  mprotect: libc.func('int mprotect(uint64_t addr, size_t len, int prot)'),
  mincore: libc.func('int mincore(uint64_t addr, size_t len, void *vec)'),
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t off, int64_t len)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t len)'),
  memfdCreate: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  read: libc.func('long read(int fd, void *buf, size_t count)'),
  write: libc.func('long write(int fd, const void *buf, size_t count)'),
  pthreadSelf: libc.func('unsigned long pthread_self()'),
  pthreadKill: libc.func('int pthread_kill(unsigned long thread, int sig)'),
  syscall6: libc.func(
    'long syscall(long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f)',
  ),
};

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

function check(call: string, rc: number | bigint, detail?: string): number {
  if (rc === -1 || rc === -1n) throw new SyscallError(call, koffi.errno(), detail);
  return Number(rc);
}

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_DONTNEED = 4;
export const MADV_REMOVE = 9;
export const MADV_DONTDUMP = 16;
export const MADV_HUGEPAGE = 14;
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const MFD_CLOEXEC = 0x1;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

/** open(2) with O_CLOEXEC added. */
export function open(path: string, flags: number, mode = 0): number {
  return check('open', c.open(path, flags | O_CLOEXEC, mode), path);
}

export function close(fd: number): void {
  check('close', c.close(fd));
}

/** ioctl(2) whose argument is a buffer the kernel reads and/or fills in place. */
export function ioctlBuf(
  fd: number,
  request: number,
  arg: Uint8Array | null,
  name: string,
): number {
  return check(name, c.ioctlPtr(fd, request, arg));
}

/** ioctl(2) whose argument is an integer (or none). */
export function ioctlInt(fd: number, request: number, arg: number, name: string): number {
  return check(name, c.ioctlInt(fd, request, arg));
}

/**
 * ioctl(2) with an integer argument that reports failure as a negative errno instead of
 * throwing, for calls whose failures are expected in normal operation (KVM_RUN and EINTR).
 */
export function ioctlIntErrno(fd: number, request: number, arg: number): number {
  const rc = c.ioctlInt(fd, request, arg);
  return rc === -1 ? -koffi.errno() : Number(rc);
}

/** ioctl(2) whose argument is a raw host address. */
export function ioctlAddr(fd: number, request: number, arg: HostAddress, name: string): number {
  return check(name, c.ioctlAddr(fd, request, arg));
}

/** mmap(2); throws on MAP_FAILED. */
export function mmap(
  len: number,
  prot: number,
  flags: number,
  fd = -1,
  offset = 0,
  addr: HostAddress = 0n,
): HostAddress {
  const p = BigInt(c.mmap(addr, len, prot, flags, fd, offset));
  if (p === MAP_FAILED) throw new SyscallError('mmap', koffi.errno(), `${len} bytes`);
  return p;
}

export function munmap(addr: HostAddress, len: number): void {
  check('munmap', c.munmap(addr, len));
}

export function madvise(addr: HostAddress, len: number, advice: number): void {
  check('madvise', c.madvise(addr, len, advice), `advice ${advice}`);
}

export function mprotect(addr: HostAddress, len: number, prot: number): void {
  check('mprotect', c.mprotect(addr, len, prot));
}

/** Counts the resident 4 KiB pages of a page-aligned host range with mincore(2). */
export function residentPages(addr: HostAddress, len: number): number {
  const pages = Math.ceil(len / 4096);
  // One vector, grown as needed and overwritten by every call: a fresh megabyte per status
  // request of a 4 GiB region was measurable garbage-collector work in the nested box.
  if (mincoreVec.length < pages) mincoreVec = Buffer.allocUnsafe(pages);
  const vec = mincoreVec.subarray(0, pages);
  check('mincore', c.mincore(addr, len, vec));
  return countOnes(vec);
}

let mincoreVec = Buffer.alloc(0);

/**
 * Counts the bytes equal to 1 in a mincore(2) vector, where Linux writes exactly 0 or 1 per
 * page. Runs are found with indexOf, which scans natively: a byte-by-byte loop over a 4 GiB
 * region's million pages took the main thread long enough, in the nested box, that frequent
 * status requests starved the devices it also serves.
 */
export function countOnes(vec: Buffer): number {
  let count = 0;
  let at = 0;
  while (at < vec.length) {
    const start = vec.indexOf(1, at);
    if (start < 0) break;
    const end = vec.indexOf(0, start);
    const stop = end < 0 ? vec.length : end;
    count += stop - start;
    at = stop;
  }
  return count;
}

export function fallocate(fd: number, mode: number, offset: number, len: number): void {
  check('fallocate', c.fallocate(fd, mode, offset, len));
}

export function ftruncate(fd: number, len: number): void {
  check('ftruncate', c.ftruncate(fd, len));
}

export function memfdCreate(name: string): number {
  return check('memfd_create', c.memfdCreate(name, MFD_CLOEXEC));
}

export function eventfd(flags = EFD_CLOEXEC): number {
  return check('eventfd', c.eventfd(0, flags));
}

/** write(2) of the whole buffer; returns bytes written. */
export function write(fd: number, buf: Uint8Array): number {
  return check('write', c.write(fd, buf, buf.length));
}

/** read(2) into buf; returns bytes read. */
export function read(fd: number, buf: Uint8Array): number {
  return check('read', c.read(fd, buf, buf.length));
}

/** The calling thread's pthread_t, for `pthreadKill` from another thread. */
export function pthreadSelf(): bigint {
  return BigInt(c.pthreadSelf());
}

/** pthread_kill(3): interrupts a blocking system call in `thread` with `sig`. */
export function pthreadKill(thread: bigint, sig: number): void {
  const rc = Number(c.pthreadKill(thread, sig));
  // pthread_kill returns the error number instead of setting errno.
  if (rc !== 0) throw new SyscallError('pthread_kill', rc);
}

/** SIGUSR2: the signal that kicks a vCPU thread out of KVM_RUN. */
export const SIGUSR2 = 12;
export const EINTR = 4;
export const EAGAIN = 11;
export const EFAULT = 14;

/** A raw syscall(2) for calls libc does not wrap (mbind). */
export function syscall(nr: number, name: string, ...args: (number | bigint)[]): number {
  const a = [0, 1, 2, 3, 4, 5].map((i) => BigInt(args[i] ?? 0));
  return check(name, c.syscall6(nr, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!));
}

/**
 * An ArrayBuffer over host memory at `addr`, without copying. V8 aborts the process (it does
 * not throw) on a view it cannot represent, so callers keep views at or below 1 GiB.
 */
export function hostView(addr: HostAddress, len: number): ArrayBuffer {
  if (len > MAX_VIEW) throw new MemvisorError('view_too_large', `host view of ${len} bytes`);
  return koffi.view(addr, len) as ArrayBuffer;
}

/** The largest host view memvisor creates. */
export const MAX_VIEW = 1 << 30;

const syscallMbind = libc.func(
  'long syscall(long nr, uint64_t addr, uint64_t len, int mode, void *nodemask, ' +
    'uint64_t maxnode, unsigned int flags)',
);
const SYS_mbind = 237;

/** mbind(2): sets the NUMA memory policy of [addr, addr+len). */
export function mbind(
  addr: HostAddress,
  len: number,
  mode: number,
  nodemask: Uint8Array,
  maxnode: number,
) {
  check('mbind', syscallMbind(SYS_mbind, addr, len, mode, nodemask, maxnode, 0));
}
