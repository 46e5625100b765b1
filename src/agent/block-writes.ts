// Moving disk data efficiently: stream writes that respect backpressure, zero runs found in a
// buffer (sent as write-zeroes or skipped, so images stay sparse), and bounded NBD writes in flight.
import type { Writable } from 'node:stream'

const GRANULE = 64 << 10
const ZEROS = Buffer.alloc(2 << 20)

export interface Run {
  offset: number
  length: number
  zero: boolean
}

/** Whether buf[start, end) is all zeros. */
export function isZero(buf: Buffer, start = 0, end = buf.length): boolean {
  for (let at = start; at < end; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - at)
    if (!buf.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false
  }
  return true
}

/** Splits a buffer into alternating runs of all-zero and other `granule`-sized pieces (pure). */
export function dataRuns(buf: Buffer, granule = GRANULE): Run[] {
  const runs: Run[] = []
  for (let at = 0; at < buf.length; at += granule) {
    const end = Math.min(buf.length, at + granule)
    const zero = isZero(buf, at, end)
    const last = runs[runs.length - 1]
    if (last && last.zero === zero) last.length += end - at
    else runs.push({ offset: at, length: end - at, zero })
  }
  return runs
}

/**
 * Writes `buf` to `out`. Resolves once `out` can take more (undefined when it already can),
 * rejects if it closes first. `written` runs once `out` is done with `buf`, which may then be
 * reused: true of sockets, HTTP responses, zlib, the zstd compressor and the in-process agent
 * output, whose write callbacks come once they have consumed the bytes, but not of a
 * PassThrough, which hands the buffer itself on.
 */
export function writeOut(out: Writable, buf: Buffer, written?: () => void): Promise<void> | undefined {
  if (out.destroyed || out.writableEnded) {
    written?.()
    return Promise.reject(new Error('the receiver went away'))
  }
  if (out.write(buf, written && (() => written()))) return undefined
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      out.off('drain', onDrain)
      out.off('close', onClose)
      err ? reject(err) : resolve()
    }
    const onDrain = () => done()
    const onClose = () => done(new Error('the receiver went away'))
    out.on('drain', onDrain)
    out.on('close', onClose)
  })
}

/**
 * Writes (NBD requests) issued without waiting for each, at most `limit` at a time; the first
 * failure is kept and thrown by the next `room()` or by `drain()`.
 */
export class InFlight {
  private readonly pending = new Set<Promise<void>>()
  private failure: unknown

  constructor(private readonly limit: number) {}

  add(request: Promise<void>): void {
    const tracked: Promise<void> = request.then(
      () => void this.pending.delete(tracked),
      (err) => {
        this.pending.delete(tracked)
        this.failure ??= err
      },
    )
    this.pending.add(tracked)
  }

  /** Waits until fewer than the limit are pending. */
  async room(): Promise<void> {
    while (this.pending.size >= this.limit) await Promise.race(this.pending)
    if (this.failure) throw this.failure
  }

  /** Waits for all of them. */
  async drain(): Promise<void> {
    await Promise.all(this.pending)
    if (this.failure) throw this.failure
  }
}

/** Something disk data is written into at offsets: an NBD client, or a file. */
export interface BlockSink {
  write(offset: number, data: Buffer): Promise<void>
  writeZeroes(offset: number, length: number): Promise<void>
}

/**
 * Writes `data` at `offset` without waiting: data runs as writes, zero runs as write-zeroes
 * (or not at all on an image known to be empty). Returns the bytes of data sent, and when
 * these writes are over (`data` may be reused then).
 */
export function writeRuns(client: BlockSink, offset: number, data: Buffer, inFlight: InFlight, { skipZeroes = false } = {}): { sent: number; written: Promise<unknown> } {
  let sent = 0
  const writes: Promise<void>[] = []
  for (const run of dataRuns(data)) {
    const at = offset + run.offset
    if (!run.zero) {
      writes.push(client.write(at, data.subarray(run.offset, run.offset + run.length)))
      sent += run.length
    } else if (!skipZeroes) writes.push(client.writeZeroes(at, run.length))
  }
  for (const write of writes) inFlight.add(write)
  return { sent, written: Promise.allSettled(writes) }
}
