// Buffers of one size, handed out and given back. A stream of 1-2 MiB disk reads that allocated
// a new buffer for each spent most of its time zero-filling, page-faulting and garbage
// collecting them (an XVA export of 2 GiB: 2.5 s, of which 2 s in the daemon's allocator and GC;
// 1 s with a pool).
//
// A pool can also hand out page-aligned buffers, which files opened with O_DIRECT take (the
// memory's address must be aligned too, and Node tells no addresses). They are carved out of
// WebAssembly memories, which always start on a page boundary, a slab of several buffers each.

const PAGE = 4096
const SLAB = 16 * 2 ** 20
const alignedMemory = new WeakSet<ArrayBufferLike>()

/** Whether `buf` starts on a page boundary of memory that this module made page-aligned. */
export function isPageAligned(buf: Buffer): boolean {
  return buf.byteOffset % PAGE === 0 && alignedMemory.has(buf.buffer)
}

function alignedSlab(size: number): Buffer[] {
  const stride = Math.ceil(size / PAGE) * PAGE
  const count = Math.max(1, Math.floor(SLAB / stride))
  const memory = new WebAssembly.Memory({ initial: Math.ceil((stride * count) / 65536) })
  alignedMemory.add(memory.buffer)
  return Array.from({ length: count }, (_, i) => Buffer.from(memory.buffer, i * stride, size))
}

export class BufferPool {
  private readonly free: Buffer[] = []

  constructor(
    readonly size: number,
    private readonly options: {
      /** How many given-back buffers are kept; more are left to the garbage collector. */
      keep?: number
      /** Page-aligned buffers (see above). */
      aligned?: boolean
    } = {},
  ) {}

  /** A buffer of `size` bytes, with whatever it held before. */
  take(): Buffer {
    const buf = this.free.pop()
    if (buf) return buf
    if (!this.options.aligned) return Buffer.allocUnsafeSlow(this.size)
    const [first, ...rest] = alignedSlab(this.size)
    this.free.push(...rest)
    return first!
  }

  /** Gives back a buffer from `take` that nothing uses any more. */
  give(buf: Buffer): void {
    if (buf.length === this.size && this.free.length < (this.options.keep ?? 32)) this.free.push(buf)
  }
}
