// format=vhd for /export_raw_vdi and /import_raw_vdi, agent side (reference/xo-compat.md §4.1,
// xapi.md §7.5).
//
// VHD out: a dynamic VHD holding the 2 MiB blocks where the image chain has data (qemu-img map),
//          or, with a base snapshot, a differencing VHD holding only the blocks that changed
//          since it: the extents the chain above the base allocates (map depth < the base's depth
//          in the chain); if the base is not in the chain, blocks whose content differs (both
//          read). Block data is read from the image files (agent/disk-source.ts), a few reads ahead.
// VHD in:  parsed strictly forward; each present block is written at its offset into an import
//          sink (agent/import-sink.ts), put into the VDI only once the whole stream was
//          read: like raw imports, a failure leaves the VDI unchanged. Blocks absent
//          from the VHD are left as they were (so a differencing VHD applies on top of the VDI's
//          content); in a dynamic VHD, sectors whose bitmap bit is clear read as zeros.
import { randomUUID } from 'node:crypto'
import { realpath } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import type { StreamOut } from './contract.js'
import { openDiskSource, readInOrder, type DiskSource } from './disk-source.js'
import { XapiError } from '../idl/errors.js'
import { imageInfo, mapImage, type ImageFormat, type ImageInfo, type MapExtent } from '../qemu/img.js'
import { bitmapRuns, blockCount, DISK_DYNAMIC, readVhdStream, VHD_BLOCK, VHD_MAX_SIZE, vhdLayout, VhdFormatError, type VhdParent } from '../vhd/vhd.js'
import { InFlight, writeOut, writeRuns } from './block-writes.js'
import { openImportSink, type ImportSink } from './import-sink.js'
import { BufferPool } from '../lib/buffer-pool.js'
import { pulled } from '../lib/chunk-puller.js'

type Image = { path: string; format: ImageFormat }

const ioError = (msg: string) => new XapiError('VDI_IO_ERROR', [msg])
const MAX_IN_FLIGHT = 8

/** The 2 MiB blocks that extents matching `pick` touch (pure). */
export function blocksOf(extents: MapExtent[], pick: (e: MapExtent) => boolean, blockSize = VHD_BLOCK): Set<number> {
  const out = new Set<number>()
  for (const e of extents) {
    if (!pick(e) || e.length === 0) continue
    for (let b = Math.floor(e.start / blockSize); b <= Math.floor((e.start + e.length - 1) / blockSize); b++) out.add(b)
  }
  return out
}

/** Blocks with data (not known zeros) anywhere in the chain (pure). */
export const allocatedBlocks = (extents: MapExtent[]): Set<number> => blocksOf(extents, (e) => e.data && !e.zero)

/** Blocks the images above depth `baseDepth` allocate (data or zeros), i.e. changed since that backing image (pure). */
export const blocksAbove = (extents: MapExtent[], baseDepth: number): Set<number> => blocksOf(extents, (e) => e.present !== false && (e.depth ?? 0) < baseDepth)

/** The position of `base` in `top`'s backing chain (0 = top itself), or -1. */
async function depthInChain(top: Image, base: string): Promise<number> {
  const target = await realpath(base)
  let path: string | undefined = top.path
  let format: ImageFormat | undefined = top.format
  for (let depth = 0; path !== undefined && depth < 1000; depth++) {
    if ((await realpath(path).catch(() => path)) === target) return depth
    const info: ImageInfo | undefined = await imageInfo(path, format).catch(() => undefined)
    path = info?.backingFile === undefined ? undefined : resolve(dirname(path), info.backingFile)
    format = info?.backingFormat as ImageFormat | undefined
  }
  return -1
}

/** Blocks whose content differs between the two images; slow, used when the base is not in the chain. */
async function differingBlocks(top: Image, base: Image, size: number): Promise<Set<number>> {
  const baseSize = (await imageInfo(base.path, base.format)).virtualSize
  const mine = await openDiskSource(top.path, top.format)
  let theirs: DiskSource | undefined
  try {
    theirs = await openDiskSource(base.path, base.format)
    const candidates = [...new Set([...allocatedBlocks([...mine.extents]), ...allocatedBlocks([...theirs.extents])])]
      .filter((b) => b < blockCount(size))
      .sort((a, b) => a - b)
    const out = new Set<number>()
    for (const block of candidates) {
      const at = block * VHD_BLOCK
      const len = Math.min(VHD_BLOCK, size - at)
      const a = await mine.read(at, len)
      const b = at >= baseSize ? Buffer.alloc(len) : Buffer.concat([await theirs.read(at, Math.min(len, baseSize - at)), Buffer.alloc(Math.max(0, at + len - baseSize))])
      if (!a.equals(b)) out.add(block)
    }
    return out
  } finally {
    await mine.abort()
    await theirs?.abort()
  }
}


export interface VhdExportOptions {
  /** The VDI's uuid (the VHD's). */
  uuid?: string
  /** A delta export: only the blocks that changed since this image (a snapshot of the same disk). */
  base?: { path: string; format: ImageFormat; uuid: string; name?: string; timestamp?: number }
}

export async function exportVhd(image: Image, opts: VhdExportOptions, res: StreamOut): Promise<void> {
  const { virtualSize } = await imageInfo(image.path, image.format)
  if (virtualSize > VHD_MAX_SIZE) throw new XapiError('VDI_TOO_LARGE', ['', String(VHD_MAX_SIZE)])
  let blocks: Set<number>
  let parent: VhdParent | undefined
  if (opts.base) {
    const depth = await depthInChain(image, opts.base.path)
    blocks = depth > 0 ? blocksAbove(await mapImage(image.path, image.format), depth) : depth === 0 ? new Set() : await differingBlocks(image, opts.base, virtualSize)
    parent = { uuid: opts.base.uuid, name: opts.base.name ?? `${opts.base.uuid}.vhd`, timestamp: new Date(opts.base.timestamp ?? Date.now()) }
  } else blocks = allocatedBlocks(await mapImage(image.path, image.format))
  for (const b of blocks) if (b >= blockCount(virtualSize)) blocks.delete(b)
  const layout = vhdLayout({ size: virtualSize, uuid: opts.uuid ?? randomUUID(), blocks, parent })
  const source = await openDiskSource(image.path, image.format)
  try {
    res.writeHead(200, { 'content-type': 'application/vhd', 'content-length': layout.length })
    await writeOut(res, layout.head)
    const pieces = function* () {
      for (const b of layout.blocks) yield { start: b * VHD_BLOCK, length: Math.min(VHD_BLOCK, virtualSize - b * VHD_BLOCK) }
    }
    await readInOrder(source, pieces(), VHD_BLOCK, async (_piece, data, release) => {
      await writeOut(res, layout.bitmap)
      if (data.length === VHD_BLOCK) return writeOut(res, data, release)
      const padded = Buffer.concat([data, Buffer.alloc(VHD_BLOCK - data.length)])
      release()
      return writeOut(res, padded)
    })
    await writeOut(res, layout.tail)
    await source.close()
  } catch (err) {
    await source.abort()
    throw err
  }
  // Closed before the end goes out: whoever sees the end sees the images free (storage/readers.ts).
  await new Promise<void>((resolve, reject) => res.end(() => resolve()).once('error', reject))
}

export async function importVhd(
  body: Readable,
  image: Image,
  expected: number | null,
): Promise<{ received: number }> {
  const { virtualSize } = await imageInfo(image.path, image.format)
  // A VHD of the whole disk: its data, a bitmap per block and the metadata.
  const limit = virtualSize + (blockCount(virtualSize) + 64) * 4096 + (64 << 20)
  let received = 0
  async function* counted(): AsyncGenerator<Buffer> {
    for await (const chunk of pulled(body)) {
      received += chunk.length
      if (received > limit) throw ioError(`the upload is larger than a VHD of this VDI can be (${limit} bytes)`)
      yield chunk
    }
  }
  let target: ImportSink | undefined
  try {
    // Page-aligned: a new image's writer writes them around the page cache.
    const blocks = new BufferPool(VHD_BLOCK, { aligned: true })
    const vhd = await readVhdStream(counted(), { blockBuffer: (size) => (size === blocks.size ? blocks.take() : Buffer.allocUnsafe(size)) })
    if (vhd.footer.currentSize > virtualSize) throw new XapiError('VDI_TOO_SMALL', ['', String(vhd.footer.currentSize)])
    target = await openImportSink(image, virtualSize, { inOrder: vhd.inDiskOrder })
    const inFlight = new InFlight(MAX_IN_FLIGHT)
    const dynamic = vhd.footer.diskType === DISK_DYNAMIC
    for await (const block of vhd.blocks) {
      const writes: Promise<unknown>[] = []
      for (const run of bitmapRuns(block.bitmap, vhd.header.blockSize)) {
        if (run.offset >= block.data.length) break
        const length = Math.min(run.length, block.data.length - run.offset)
        const at = block.offset + run.offset
        if (run.present) writes.push(writeRuns(target, at, block.data.subarray(run.offset, run.offset + length), inFlight).written)
        else if (dynamic) inFlight.add(target.writeZeroes(at, length))
        // differencing: a clear bit means "as in the parent", i.e. as the VDI already is
      }
      // The block's buffer (a whole one: a short last block is not given back) serves again once its writes are over.
      void Promise.allSettled(writes).then(() => blocks.give(block.data))
      await inFlight.room()
    }
    await inFlight.drain()
    if (expected !== null && received < expected) throw ioError(`premature end of data: received ${received} of ${expected} bytes; the VDI was left unchanged`)
    await target.complete()
    return { received }
  } catch (err) {
    await target?.discard()
    if (err instanceof VhdFormatError) throw ioError(`bad VHD: ${err.message}`)
    throw err
  }
}
