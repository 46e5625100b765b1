// A disk's guest content for the exporters (raw, VHD, XVA): read straight from the image files
// (storage/image-reader.ts), or through a read-only qemu-nbd when an image holds data that is
// not stored as is (compressed clusters). Either way the chain is pinned while it is read.
import { dirname, resolve } from 'node:path'
import { imageChain, mapImage, type ImageFormat, type MapExtent } from '../qemu/img.js'
import { NbdServer } from '../qemu/nbd.js'
import { openImageReader } from '../storage/image-reader.js'
import { pinImages } from '../storage/readers.js'
import { BufferPool } from '../lib/buffer-pool.js'

export interface DiskSource {
  /** Guest extents: where data is and where zeros are. */
  extents: readonly MapExtent[]
  /** Guest bytes [offset, offset + length), read into `into` when the source can (use the result either way). */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>
  close(): Promise<void>
  /** Ends it at once (error paths). */
  abort(): Promise<void>
}

export async function openDiskSource(path: string, format: ImageFormat): Promise<DiskSource> {
  const direct = await openImageReader(path, format)
  if (direct) return { ...direct, abort: () => direct.close() }
  const extents = await mapImage(path, format)
  const release = pinImages((await imageChain(path, format)).map((link) => resolve(dirname(path), link.path)))
  try {
    const { client, server } = await NbdServer.open(path, format, { readOnly: true })
    return {
      extents,
      read: (offset, length) => client.read(offset, length),
      close: async () => {
        await client.close()
        await server.stop()
        release()
      },
      abort: async () => {
        client.destroy()
        await server.kill()
        release()
      },
    }
  } catch (err) {
    release()
    throw err
  }
}

/**
 * Reads `pieces` (each at most `size` bytes) of a source in order, `depth` reads ahead, into
 * buffers of a pool; pieces marked `read: false` are zeros, not read. `use` gets each piece's
 * bytes and a `release` to call once nothing needs them any more (from the callback of the
 * write that sends them, see writeOut).
 */
export async function readInOrder<P extends { start: number; length: number; read?: boolean }>(
  source: DiskSource,
  pieces: Iterable<P>,
  size: number,
  use: (piece: P, data: Buffer, release: () => void) => Promise<void>,
  depth = 4,
): Promise<void> {
  const pool = new BufferPool(size)
  let zeros: Buffer | undefined
  const queue: { piece: P; buf?: Buffer; data: Promise<Buffer> }[] = []
  const next = async () => {
    const { piece, buf, data } = queue.shift()!
    await use(piece, await data, () => buf && pool.give(buf))
  }
  for (const piece of pieces) {
    if (piece.read === false) {
      zeros ??= Buffer.alloc(size)
      queue.push({ piece, data: Promise.resolve(zeros.subarray(0, piece.length)) })
    } else {
      const buf = pool.take()
      const data = source.read(piece.start, piece.length, buf)
      data.catch(() => undefined)
      queue.push({ piece, buf, data })
    }
    if (queue.length >= depth) await next()
  }
  while (queue.length) await next()
}
