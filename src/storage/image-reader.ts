// Reading a disk's guest content straight from its image files: `qemu-img map` says, for every
// extent, which file of the backing chain holds it and at which offset; the bytes are then read
// with plain positioned reads. No qemu-nbd in the path and no socket copy: a qcow2 exports at
// the speed of the page cache. Compressed clusters have no plain offset; such images are not
// read this way (the caller falls back to qemu-nbd).
//
// The files are opened once, before the first read, and pinned (storage/readers.ts) until
// closed: a garbage collection meanwhile may delete them (an open file stays readable) but never
// rewrites them.
import { open, type FileHandle } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { imageChain, mapImage, type ImageFormat, type MapExtent } from '../qemu/img.js'
import { pinImages } from './readers.js'

export interface ImageReader {
  /** Guest extents, with where their data is. */
  readonly extents: readonly MapExtent[]
  /**
   * Guest bytes [offset, offset + length): zeros where nothing is allocated or past the files'
   * ends. Read into `into` (at least `length` bytes, its content irrelevant) when given.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>
  close(): Promise<void>
}

/** Opens the chain of `path` for direct reads, or undefined when some data is not stored as is (compressed). */
export async function openImageReader(path: string, format: ImageFormat): Promise<ImageReader | undefined> {
  const extents = await mapImage(path, format)
  if (extents.some((e) => e.data && e.offset === undefined)) return undefined
  const chain = (format === 'raw' ? [path] : (await imageChain(path, format)).map((link) => link.path)).map((p) => resolve(dirname(path), p))
  const release = pinImages(chain)
  const files: FileHandle[] = []
  const close = async () => {
    release()
    await Promise.all(files.map((f) => f.close()))
  }
  try {
    for (const file of chain) files.push(await open(file, 'r'))
  } catch (err) {
    await close()
    throw err
  }
  return { extents, read: (offset, length, into) => readExtents(extents, files, offset, length, into), close }
}

/** Index of the first extent that ends after `offset` (extents are sorted and contiguous). */
function firstExtent(extents: readonly MapExtent[], offset: number): number {
  let lo = 0
  let hi = extents.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    const e = extents[mid]!
    if (e.start + e.length <= offset) lo = mid + 1
    else hi = mid
  }
  return lo
}

async function readExtents(extents: readonly MapExtent[], files: FileHandle[], offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
  const reads: Promise<unknown>[] = []
  // Everything not read is zero-filled; the buffer may hold anything.
  let filled = offset
  for (let i = firstExtent(extents, offset); i < extents.length; i++) {
    const e = extents[i]!
    if (e.start >= offset + length) break
    if (!e.data || e.zero || e.offset === undefined) continue
    const from = Math.max(offset, e.start)
    const to = Math.min(offset + length, e.start + e.length)
    const file = files[e.depth ?? 0]
    if (!file) throw new Error(`qemu-img map names layer ${e.depth} of a ${files.length}-file chain`)
    buf.fill(0, filled - offset, from - offset)
    reads.push(readFully(file, buf, from - offset, to - from, e.offset + (from - e.start)))
    filled = to
  }
  buf.fill(0, filled - offset)
  await Promise.all(reads)
  return buf
}

/** Fills buf[at, at + n) from the file at `position`, with zeros for what lies past the file's end. */
async function readFully(file: FileHandle, buf: Buffer, at: number, n: number, position: number): Promise<void> {
  let done = 0
  while (done < n) {
    const { bytesRead } = await file.read(buf, at + done, n - done, position + done)
    if (bytesRead === 0) return void buf.fill(0, at + done, at + n)
    done += bytesRead
  }
}
