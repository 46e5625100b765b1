// A stream's chunks pulled one at a time, as they arrived. A Readable's own async iterator
// joins whatever is buffered into one new buffer at every step: for an upload of gigabytes that
// is a copy of every byte and as much garbage, which stalls the event loop other transfers share.

export class ChunkPuller implements AsyncIterableIterator<Buffer> {
  private queue: Buffer[] = []
  private queued = 0
  private ended = false
  private dropping = false
  private failure: Error | undefined
  private wake: (() => void) | undefined

  constructor(
    private readonly stream: NodeJS.ReadableStream & { destroy(err?: Error): unknown; isPaused(): boolean },
    private readonly highWater = 4 << 20,
  ) {
    stream.on('data', (chunk: Buffer) => {
      if (this.dropping) return
      this.queue.push(chunk)
      this.queued += chunk.length
      if (this.queued >= highWater) stream.pause()
      this.notify()
    })
    stream.once('end', () => {
      this.ended = true
      this.notify()
    })
    stream.once('error', (err: Error) => {
      this.failure ??= err
      this.notify()
    })
    // Closed before its end: the data stopped short.
    stream.once('close', () => {
      if (!this.ended) this.failure ??= new Error('premature close of the stream')
      this.notify()
    })
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  async next(): Promise<IteratorResult<Buffer, undefined>> {
    for (;;) {
      const chunk = this.queue.shift()
      if (chunk) {
        this.queued -= chunk.length
        if (this.queued < this.highWater && this.stream.isPaused() && !this.dropping) this.stream.resume()
        return { value: chunk, done: false }
      }
      if (this.failure) throw this.failure
      if (this.ended) return { value: undefined, done: true }
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  /** Puts chunks taken back in front (bytes read to sniff a format). */
  unshift(chunks: Buffer[]): void {
    this.queue.unshift(...chunks)
    this.queued += chunks.reduce((n, c) => n + c.length, 0)
  }

  /** Reads and drops whatever else comes. */
  discardRest(): void {
    this.dropping = true
    this.queue = []
    this.queued = 0
    this.stream.on('error', () => undefined)
    this.stream.resume()
  }

  destroy(): void {
    this.dropping = true
    this.queue = []
    this.stream.on('error', () => undefined)
    this.stream.destroy()
    this.notify()
  }
}

/**
 * A stream's chunks as they arrived, for `for await`: stopping early (a break or a throw)
 * destroys the stream, as a Readable's own iterator does.
 */
export async function* pulled(stream: ConstructorParameters<typeof ChunkPuller>[0]): AsyncGenerator<Buffer, void, undefined> {
  const puller = new ChunkPuller(stream)
  let ended = false
  try {
    for await (const chunk of puller) yield chunk
    ended = true
  } finally {
    if (!ended) puller.destroy()
  }
}
