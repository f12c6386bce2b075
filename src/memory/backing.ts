/**
 * Host memory behind a guest region. Two kinds: a mapping of host memory (anonymous or memfd)
 * for real guests, and a plain ArrayBuffer for unit tests. Both expose byte views no larger than
 * 1 GiB, which is the most V8 will wrap safely.
 */
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  type HostAddress,
  MADV_DONTDUMP,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAX_VIEW,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  close,
  fallocate,
  ftruncate,
  hostView,
  madvise,
  memfdCreate,
  mmap,
  mprotect,
  munmap,
  residentPages,
} from '../sys/libc.js';
import { MemvisorError } from '../util/errors.js';

/** The transparent huge page size of x86-64, to which host mappings are aligned. */
const HUGE_PAGE = 2 * 1024 * 1024;
const HUGE_PAGE_BIG = BigInt(HUGE_PAGE);

/** Page size of every backing; discard and residency work in these units. */
export const PAGE_SIZE = 4096;

/** Where a region's bytes live on the host. Offsets are relative to the region start. */
export interface Backing {
  readonly size: number;
  /** Host virtual address of offset 0, or null for a backing KVM cannot map. */
  readonly hostAddress: HostAddress | null;
  /** A view of `len` bytes at `offset`; the range lies within one 1 GiB chunk. */
  chunkView(offset: number, len: number): Uint8Array;
  /** Gives the pages back to the host; they read as zeros afterwards. */
  discard(offset: number, len: number): void;
  /** Bytes of the range currently resident on the host. */
  residentBytes(offset: number, len: number): number;
  /** Makes the range inaccessible to host and guest (true) or accessible again (false). */
  protect(offset: number, len: number, inaccessible: boolean): void;
  release(): void;
}

/** Which kind of host memory backs guest RAM. */
export type BackingKind = 'anonymous' | 'memfd';

/**
 * A host mapping reserved whole at creation and populated on first touch (MAP_NORESERVE).
 * Anonymous private memory is discarded with MADV_DONTNEED; memfd (shared) memory needs the
 * file's pages freed too, so it punches a hole in the file.
 */
export class MappedBacking implements Backing {
  readonly size: number;
  readonly hostAddress: HostAddress;
  readonly kind: BackingKind;
  readonly #fd: number;
  #chunks = new Map<number, ArrayBuffer>();

  constructor(size: number, kind: BackingKind, name = 'memvisor-ram') {
    this.size = size;
    this.kind = kind;
    const prot = PROT_READ | PROT_WRITE;
    // KVM maps guest memory with 2 MiB pages only where the host does, and the host uses
    // transparent huge pages only on 2 MiB-aligned addresses and, with Debian's default
    // setting, only where asked. Every 4 KiB page instead costs a nested page fault of its own.
    let reserved: HostAddress;
    try {
      reserved = mmap(size + HUGE_PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    } catch (err) {
      throw new MemvisorError(
        'host_memory',
        `cannot reserve ${size} bytes of host address space for guest memory ` +
          `(${(err as Error).message})`,
      );
    }
    const head = Number((HUGE_PAGE_BIG - (reserved % HUGE_PAGE_BIG)) % HUGE_PAGE_BIG);
    const at = reserved + BigInt(head);
    if (kind === 'memfd') {
      this.#fd = memfdCreate(name);
      ftruncate(this.#fd, size);
      this.hostAddress = mmap(size, prot, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, this.#fd, 0, at);
    } else {
      this.#fd = -1;
      const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED;
      this.hostAddress = mmap(size, prot, flags, -1, 0, at);
    }
    if (head > 0) munmap(reserved, head);
    if (head < HUGE_PAGE) munmap(at + BigInt(size), HUGE_PAGE - head);
    madvise(this.hostAddress, size, MADV_HUGEPAGE);
    // Guest RAM has no place in a core dump of the VMM.
    madvise(this.hostAddress, size, MADV_DONTDUMP);
  }

  chunkView(offset: number, len: number): Uint8Array {
    const index = Math.floor(offset / MAX_VIEW);
    let chunk = this.#chunks.get(index);
    if (!chunk) {
      const start = index * MAX_VIEW;
      chunk = hostView(this.hostAddress + BigInt(start), Math.min(MAX_VIEW, this.size - start));
      this.#chunks.set(index, chunk);
    }
    return new Uint8Array(chunk, offset - index * MAX_VIEW, len);
  }

  discard(offset: number, len: number): void {
    if (this.kind === 'memfd') {
      fallocate(this.#fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    } else {
      madvise(this.hostAddress + BigInt(offset), len, MADV_DONTNEED);
    }
  }

  residentBytes(offset: number, len: number): number {
    return residentPages(this.hostAddress + BigInt(offset), len) * PAGE_SIZE;
  }

  protect(offset: number, len: number, inaccessible: boolean): void {
    const prot = inaccessible ? PROT_NONE : PROT_READ | PROT_WRITE;
    mprotect(this.hostAddress + BigInt(offset), len, prot);
  }

  release(): void {
    this.#chunks.clear();
    munmap(this.hostAddress, this.size);
    if (this.#fd >= 0) close(this.#fd);
  }
}

/**
 * An ArrayBuffer standing in for host memory in unit tests. Residency is tracked per page:
 * a page is resident once written through `chunkView` users mark it, or when it is non-zero.
 */
export class BufferBacking implements Backing {
  readonly size: number;
  /** A made-up address, for tests of code that hands host addresses to KVM. */
  readonly hostAddress: HostAddress | null;
  readonly bytes: Uint8Array;
  readonly protectedPages = new Set<number>();

  constructor(size: number, fakeHostAddress: HostAddress | null = null) {
    this.size = size;
    this.hostAddress = fakeHostAddress;
    this.bytes = new Uint8Array(size);
  }

  chunkView(offset: number, len: number): Uint8Array {
    return this.bytes.subarray(offset, offset + len);
  }

  discard(offset: number, len: number): void {
    this.bytes.fill(0, offset, offset + len);
  }

  residentBytes(offset: number, len: number): number {
    let n = 0;
    for (let p = offset; p < offset + len; p += PAGE_SIZE) {
      if (this.bytes.subarray(p, Math.min(p + PAGE_SIZE, offset + len)).some((b) => b !== 0)) {
        n += PAGE_SIZE;
      }
    }
    return n;
  }

  protect(offset: number, len: number, inaccessible: boolean): void {
    for (let p = offset; p < offset + len; p += PAGE_SIZE) {
      if (inaccessible) this.protectedPages.add(p / PAGE_SIZE);
      else this.protectedPages.delete(p / PAGE_SIZE);
    }
  }

  release(): void {}
}
