/** Which blocks of a virtio-mem region are plugged: one bit per block, with a running count. */
export class BlockBitmap {
  readonly blocks: number;
  readonly #bits: Uint32Array;
  #plugged = 0;

  constructor(blocks: number) {
    this.blocks = blocks;
    this.#bits = new Uint32Array(Math.ceil(blocks / 32));
  }

  /** Number of plugged blocks. */
  get plugged(): number {
    return this.#plugged;
  }

  /** Whether block `index` is plugged; false outside the region. */
  isPlugged(index: number): boolean {
    if (index < 0 || index >= this.blocks) return false;
    return ((this.#bits[index >>> 5]! >>> (index & 31)) & 1) === 1;
  }

  /** How many of [first, first+count) are plugged; the range must lie inside the region. */
  countPlugged(first: number, count: number): number {
    let n = 0;
    for (let i = first; i < first + count; i++) if (this.isPlugged(i)) n++;
    return n;
  }

  /** Sets [first, first+count) to `plugged`; the range must lie inside the region. */
  set(first: number, count: number, plugged: boolean): void {
    for (let i = first; i < first + count; i++) {
      if (this.isPlugged(i) === plugged) continue;
      const word = i >>> 5;
      this.#bits[word] = this.#bits[word]! ^ (1 << (i & 31));
      this.#plugged += plugged ? 1 : -1;
    }
  }

  /** Maximal runs of plugged blocks, lowest first, as [first, count]. */
  pluggedRuns(): [first: number, count: number][] {
    const runs: [number, number][] = [];
    let start = -1;
    for (let i = 0; i <= this.blocks; i++) {
      const on = i < this.blocks && this.isPlugged(i);
      if (on && start < 0) start = i;
      if (!on && start >= 0) {
        runs.push([start, i - start]);
        start = -1;
      }
    }
    return runs;
  }
}
