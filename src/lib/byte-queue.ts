// Bytes arriving in chunks, taken back out in pieces of any size (a protocol reader's buffer).
// A generic helper below every layer: qemu/ (NBD), xva/ (tar) and vhd/ read framed streams.

export class ByteQueue {
  private chunks: Buffer[] = []
  /** Bytes held. */
  length = 0

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.length += chunk.length
  }

  /**
   * The next `n` bytes (the caller checked `length >= n`): a view into a chunk when it can be,
   * else a copy, made in `scratch` when given and large enough (the caller reuses it).
   */
  take(n: number, scratch?: Buffer): Buffer {
    if (n === 0) return Buffer.alloc(0)
    if (n > this.length) throw new RangeError(`take(${n}) with ${this.length} bytes held`)
    this.length -= n
    const first = this.chunks[0]!
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = scratch && scratch.length >= n ? scratch.subarray(0, n) : Buffer.allocUnsafe(n)
    for (let at = 0; at < n; ) {
      const c = this.chunks[0]!
      const k = Math.min(c.length, n - at)
      c.copy(out, at, 0, k)
      at += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    return out
  }

  /** Drops the next `n` bytes (the caller checked `length >= n`) without copying them. */
  drop(n: number): void {
    if (n > this.length) throw new RangeError(`drop(${n}) with ${this.length} bytes held`)
    this.length -= n
    while (n > 0) {
      const c = this.chunks[0]!
      if (c.length <= n) {
        this.chunks.shift()
        n -= c.length
      } else {
        this.chunks[0] = c.subarray(n)
        n = 0
      }
    }
  }
}

/** A ByteQueue fed from an async iterable of chunks, pulled only as far as its reader needs. */
export class PulledBytes {
  private readonly queue = new ByteQueue()
  private readonly it: AsyncIterator<Buffer>
  private ended = false
  /** Bytes taken so far. */
  position = 0

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]()
  }

  /** Bytes pulled and not taken yet. */
  get held(): number {
    return this.queue.length
  }

  /** Pulls until `n` bytes are held; false when the source ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.queue.length < n && !this.ended) {
      const r = await this.it.next()
      if (r.done) this.ended = true
      else this.queue.push(Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array))
    }
    return this.queue.length >= n
  }

  /** Takes `n` held bytes, as ByteQueue.take does. */
  take(n: number, scratch?: Buffer): Buffer {
    const out = this.queue.take(n, scratch)
    this.position += n
    return out
  }

  /** Drops `n` held bytes, as ByteQueue.drop does. */
  drop(n: number): void {
    this.queue.drop(n)
    this.position += n
  }

  /** Pulls and drops whatever else the source gives. */
  async drain(): Promise<void> {
    this.drop(this.queue.length)
    while (!this.ended) {
      const r = await this.it.next()
      if (r.done) this.ended = true
      else this.position += r.value.length
    }
  }
}
