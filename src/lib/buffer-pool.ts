// Buffers of one size, handed out and given back. A stream of 1-2 MiB disk reads that allocated
// a new buffer for each spent most of its time zero-filling, page-faulting and garbage
// collecting them (an XVA export of 2 GiB: 2.5 s, of which 2 s in the daemon's allocator and GC;
// 1 s with a pool).

export class BufferPool {
  private readonly free: Buffer[] = []

  constructor(
    readonly size: number,
    /** How many given-back buffers are kept; more are left to the garbage collector. */
    private readonly keep = 32,
  ) {}

  /** A buffer of `size` bytes, with whatever it held before. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)
  }

  /** Gives back a buffer from `take` that nothing uses any more. */
  give(buf: Buffer): void {
    if (buf.length === this.size && this.free.length < this.keep) this.free.push(buf)
  }
}
