// The agent's side of /import_raw_vdi and /export_raw_vdi: guest-visible disk content in and
// out of an SR's image files.
//
// Raw in:  the bytes go, in 2 MiB blocks split into runs of data and of zeros (zero runs stay
//          thin), into an import sink (agent/import-sink.ts): a new image for a blank VDI, an
//          overlay over one holding data. Only a complete upload is put into the VDI; a short,
//          oversized or failed one is dropped, leaving the VDI exactly as it was.
// qcow2 in: the upload lands in a hidden temporary file in the SR directory; it must be a
//          standalone qcow2 (no backing file, no external data file, not encrypted) whose virtual
//          size fits; it is copied into a fresh image of the VDI's size that then replaces the VDI.
// Raw out: qemu-img map says where the data is; zero extents are sent without reading the disk,
//          data extents are read from the image files (agent/disk-source.ts), a few reads ahead.
// qcow2 out: qemu-img convert to a hidden temporary standalone qcow2, streamed, then deleted.
// VHD in and out (dynamic, and differencing for delta exports): agent/vhd-transfer.ts.
import { createReadStream, createWriteStream } from 'node:fs'
import { rename, rm, stat } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import type { ImportArgs, ImportResult, StreamOut, TransferArgs } from './contract.js'
import { openDiskSource, readInOrder, type DiskSource } from './disk-source.js'
import { pipeline } from 'node:stream/promises'
import { XapiError } from '../idl/errors.js'
import { ImageLockedError } from '../qemu/errors.js'
import { convertImage, convertInto, createImage, imageHeader, imageInfo, QemuImgError, type ImageFormat, type MapExtent } from '../qemu/img.js'
import { NbdError } from '../qemu/nbd.js'
import { isoPath } from '../storage/iso-sr.js'
import { FileSr } from '../storage/file-sr.js'
import { exportVhd, importVhd } from './vhd-transfer.js'
import { InFlight, writeOut, writeRuns, type BlockSink } from './block-writes.js'
import { BufferPool } from '../lib/buffer-pool.js'
import { pulled } from '../lib/chunk-puller.js'
import { hiddenTemp, openImportSink, type ImportSink } from './import-sink.js'

const BLOCK = 2 << 20
const MAX_IN_FLIGHT = 8

/** The pieces an export reads or synthesizes, in order: data extents cut to `chunk` bytes, zero extents as they are (pure). */
export function exportPlan(extents: MapExtent[], chunk = BLOCK): { start: number; length: number; read: boolean }[] {
  const out: { start: number; length: number; read: boolean }[] = []
  for (const e of extents) {
    const read = e.data && !e.zero
    for (let at = 0; at < e.length; at += chunk) out.push({ start: e.start + at, length: Math.min(chunk, e.length - at), read })
  }
  return out
}

const ioError = (msg: string) => new XapiError('VDI_IO_ERROR', [msg])

/** qemu-img/qemu-nbd failures as XenAPI errors; a held image lock means a VM has the disk. */
function asTransferError(err: unknown, operation: string): unknown {
  if (err instanceof XapiError) return err
  if (err instanceof ImageLockedError) return new XapiError('VDI_IN_USE', ['', operation])
  if (err instanceof QemuImgError || err instanceof NbdError) return ioError(err.message)
  return err
}

/** The image a transfer reads or writes: a qcow2 VDI, or a raw file in an ISO library. */
const imageOf = (args: TransferArgs): { path: string; format: ImageFormat } =>
  /\.iso$/i.test(args.location) ? { path: isoPath(args.sr, args.location), format: 'raw' } : { path: new FileSr(args.sr).path(args.location), format: 'qcow2' }

/** Streams `body` into the image behind `client`, starting at offset 0; returns the byte count. */
async function writeBody(body: Readable, client: BlockSink, size: number): Promise<number> {
  const inFlight = new InFlight(MAX_IN_FLIGHT)
  // Page-aligned: a new image's writer writes them around the page cache.
  const blocks = new BufferPool(BLOCK, { aligned: true })
  const flushBlock = async (block: Buffer, length: number, offset: number) => {
    void writeRuns(client, offset, block.subarray(0, length), inFlight).written.then(() => blocks.give(block))
    await inFlight.room()
  }
  let block = blocks.take()
  let fill = 0
  let offset = 0
  let received = 0
  for await (const chunk of pulled(body)) {
    received += chunk.length
    if (received > size) throw ioError(`the data is larger than the VDI (virtual size ${size} bytes)`)
    let at = 0
    while (at < chunk.length) {
      const n = Math.min(chunk.length - at, BLOCK - fill)
      chunk.copy(block, fill, at, at + n)
      fill += n
      at += n
      if (fill === BLOCK) {
        await flushBlock(block, BLOCK, offset)
        block = blocks.take()
        offset += BLOCK
        fill = 0
      }
    }
  }
  if (fill > 0) await flushBlock(block, fill, offset)
  await inFlight.drain()
  return received
}

const premature = (received: number, expected: number | null) =>
  expected !== null && received < expected ? ioError(`premature end of data: received ${received} of ${expected} bytes; the VDI was left unchanged`) : undefined

async function importRaw(body: Readable, image: { path: string; format: ImageFormat }, expected: number | null): Promise<ImportResult> {
  const { virtualSize } = await imageInfo(image.path, image.format)
  if (expected !== null && expected > virtualSize) throw ioError(`the data (${expected} bytes) is larger than the VDI (virtual size ${virtualSize} bytes)`)
  let target: ImportSink | undefined
  try {
    target = await openImportSink(image, virtualSize)
    const received = await writeBody(body, target, virtualSize)
    const short = premature(received, expected)
    if (short) throw short
    await target.complete()
    return { received }
  } catch (err) {
    await target?.discard()
    throw asTransferError(err, 'import')
  }
}

async function importQcow2(body: Readable, image: { path: string; format: ImageFormat }, expected: number | null): Promise<ImportResult> {
  const { virtualSize } = await imageInfo(image.path, image.format)
  // A qcow2 of a full disk is its data plus a little metadata.
  const limit = virtualSize + Math.ceil(virtualSize / 64) + (64 << 20)
  const upload = hiddenTemp(image.path, 'upload')
  const fresh = hiddenTemp(image.path, 'import')
  try {
    let received = 0
    await pipeline(
      body,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          received += chunk.length
          if (received > limit) throw ioError(`the upload is larger than a qcow2 of this VDI can be (${limit} bytes)`)
          yield chunk
        }
      },
      createWriteStream(upload, { mode: 0o600 }),
    )
    const short = premature(received, expected)
    if (short) throw short
    const header = await imageHeader(upload, 'qcow2').catch((err: Error) => {
      throw ioError(`the upload is not a qcow2 image: ${err.message}`)
    })
    if (header.backingFile) throw ioError(`the qcow2 image has a backing file (${header.backingFile}): only standalone images can be imported`)
    if (header.dataFile) throw ioError(`the qcow2 image has an external data file (${header.dataFile}): only standalone images can be imported`)
    if (header.encrypted) throw ioError('the qcow2 image is encrypted')
    if (header.virtualSize > virtualSize) throw new XapiError('VDI_TOO_SMALL', ['', String(header.virtualSize)])
    await createImage({ path: fresh, format: image.format, size: virtualSize })
    await convertInto({ source: upload, sourceFormat: 'qcow2', target: fresh, targetFormat: image.format, targetIsZero: true })
    // Takes the image's lock for a moment: fails if a VM has the disk open.
    await imageHeader(image.path, image.format)
    await rename(fresh, image.path)
    return { received }
  } catch (err) {
    throw asTransferError(err, 'import')
  } finally {
    await rm(upload, { force: true })
    await rm(fresh, { force: true })
  }
}

/** `vdi.import` stream: the request body is the content; answers {received} once it is in the image. */
export async function importStream(args: ImportArgs, req: Readable, res: StreamOut): Promise<void> {
  const image = imageOf(args)
  const result =
    args.format === 'vhd'
      ? await importVhd(req, image, args.expected).catch((err: unknown) => {
          throw asTransferError(err, 'import')
        })
      : await (args.format === 'qcow2' ? importQcow2 : importRaw)(req, image, args.expected)
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ result }))
}


async function exportRaw(image: { path: string; format: ImageFormat }, res: StreamOut): Promise<void> {
  let source: DiskSource | undefined
  try {
    const { virtualSize } = await imageInfo(image.path, image.format)
    source = await openDiskSource(image.path, image.format)
    const plan = exportPlan([...source.extents])
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': virtualSize })
    await readInOrder(source, plan, BLOCK, async (_piece, data, release) => writeOut(res, data, release))
    // Closed before the end goes out: whoever sees the end sees the images free (storage/readers.ts).
    await source.close()
    source = undefined
    await new Promise<void>((resolve, reject) => res.end(() => resolve()).once('error', reject))
  } catch (err) {
    await source?.abort()
    throw asTransferError(err, 'export')
  }
}

async function exportQcow2(image: { path: string; format: ImageFormat }, res: StreamOut): Promise<void> {
  const copy = hiddenTemp(image.path, 'export')
  try {
    await convertImage({ source: image.path, sourceFormat: image.format, target: copy, targetFormat: 'qcow2' })
    const { size } = await stat(copy)
    res.writeHead(200, { 'content-type': 'application/x-qemu-disk', 'content-length': size })
    await pipeline(createReadStream(copy, { highWaterMark: 1 << 20 }), res)
  } catch (err) {
    throw asTransferError(err, 'export')
  } finally {
    await rm(copy, { force: true })
  }
}

/** `vdi.export` stream: the response is the VDI's content (with its Content-Length). */
export async function exportStream(args: TransferArgs, _req: Readable, res: StreamOut): Promise<void> {
  const image = imageOf(args)
  if (args.format === 'vhd') {
    const base = args.base ? { ...imageOf({ ...args, location: args.base.location }), ...args.base } : undefined
    return exportVhd(image, { uuid: args.uuid, base }, res).catch((err: unknown) => {
      throw asTransferError(err, 'export')
    })
  }
  await (args.format === 'qcow2' ? exportQcow2 : exportRaw)(image, res)
}
