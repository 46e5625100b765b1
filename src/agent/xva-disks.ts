// The agent's side of /export and /import (XVA, reference/xapi.md §8): the tar stream itself,
// its compression and the disk data. The API layer only sees ova.xml.
//
// Export (`xva.export`): the request body is ova.xml; the response is the whole archive. Per
// disk, in id order, qemu-img map says which 1 MiB chunks may hold data; only those are read
// (from the image files directly, storage/image-reader.ts), so a thin disk exports in time
// proportional to its data. Zero
// chunks are skipped except the first and last of each disk; each chunk is followed by its
// XXH64 `.xxhash`, as XCP-ng 8.1 writes them.
//
// Import (`xva.import`): the request body is the upload (gzip/zstd sniffed), parsed as it
// arrives. The response is a line-per-message JSON stream: `{"ova": …}` once ova.xml is read,
// then the agent waits for the API layer to create the VDIs and name their images
// (`xva.import-targets`), then writes the chunks into new images itself, verifying every
// checksum, and ends with `{"done": …}` or `{"error": [code, …params]}`. Nothing is written
// anywhere but the named images: tar names only select a target, they are never paths.
import { createHash, randomUUID } from 'node:crypto'
import { open } from 'node:fs/promises'
import type { Readable, Writable } from 'node:stream'
import type { AgentStreamArgs, ImportTarget, ImportTargets, StreamOut, XvaDisk, XvaExportArgs } from './contract.js'
// Native XXH64: half the CPU of the WebAssembly build (150 ms against 330 ms per 2 GiB), on the
// thread that also parses the upload.
import { xxh64 } from '@node-rs/xxhash'
import { XapiError } from '../idl/errors.js'
import { FileSr } from '../storage/file-sr.js'
import { openDiskSource, readInOrder } from './disk-source.js'
import { newImageSink, type ImportSink } from './import-sink.js'
import { compressor, decompressor, zstdDecompressor } from '../xva/compress.js'
import { TarReader } from '../xva/tar-reader.js'
import { ChunkPuller } from '../lib/chunk-puller.js'
import { BufferPool } from '../lib/buffer-pool.js'
import { CHUNK, ChunkCursor, classifyEntry, chunkName, MAX_CHUNK_ENTRY, MAX_OVA_XML, sniffCompression, TAR_END, tarHeader, tarPadding, xxhashText } from '../xva/format.js'
import { InFlight, isZero, writeOut, writeRuns } from './block-writes.js'

const ZEROS = Buffer.alloc(CHUNK)
const READS_IN_FLIGHT = 4
const WRITES_IN_FLIGHT = 8

/** A tar entry; `written` as for writeOut (`data` may be reused then). */
async function writeEntry(out: Writable, name: string, data: Buffer, written?: () => void): Promise<void> {
  await writeOut(out, tarHeader(name, data.length))
  if (data.length) await writeOut(out, data, written)
  else written?.()
  const pad = tarPadding(data.length)
  if (pad) await writeOut(out, ZEROS.subarray(0, pad))
}

/** The chunk numbers of a disk that may hold data, from its map, plus the first and last (pure). */
export function candidateChunks(extents: { start: number; length: number; data: boolean; zero: boolean }[], size: number): number[] {
  const last = Math.max(0, Math.ceil(size / CHUNK) - 1)
  const set = new Set<number>([0, last])
  for (const e of extents) {
    if (!e.data || e.zero || e.length === 0) continue
    for (let n = Math.floor(e.start / CHUNK); n <= Math.floor((e.start + e.length - 1) / CHUNK) && n <= last; n++) set.add(n)
  }
  return [...set].sort((a, b) => a - b)
}

async function exportDisk(disk: XvaDisk, out: Writable): Promise<void> {
  const source = await openDiskSource(new FileSr(disk.sr).path(disk.location, disk.format), disk.format)
  try {
    const chunks = candidateChunks([...source.extents], disk.size)
    const last = chunks[chunks.length - 1]!
    const pieces = function* () {
      for (const n of chunks) yield { n, start: n * CHUNK, length: Math.max(0, Math.min(CHUNK, disk.size - n * CHUNK)) }
    }
    await readInOrder(source, pieces(), CHUNK, async ({ n }, data, release) => {
      if (n !== 0 && n !== last && isZero(data)) return release()
      const name = chunkName(disk.id, n)
      const checksum = Buffer.from(xxhashText(xxh64(data, 0n)))
      await writeEntry(out, name, data, release)
      await writeEntry(out, `${name}.xxhash`, checksum)
    }, READS_IN_FLIGHT)
    await source.close()
  } catch (err) {
    await source.abort()
    throw err
  }
}

async function readAll(req: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length
    if (n > limit) throw new XapiError('IMPORT_ERROR', [`more than ${limit} bytes`])
    chunks.push(c)
  }
  return Buffer.concat(chunks)
}

/** `xva.export` stream: body = ova.xml, response = the archive. */
export async function xvaExportStream(args: XvaExportArgs, req: Readable, res: StreamOut): Promise<void> {
  const ova = await readAll(req, MAX_OVA_XML)
  res.writeHead(200, { 'content-type': 'application/octet-stream' })
  const compress = compressor(args.compression)
  const out: Writable = compress ?? res
  let failed: Error | undefined
  compress?.on('error', (err) => {
    failed ??= err
    res.destroy(err)
  })
  compress?.pipe(res)
  try {
    await writeEntry(out, 'ova.xml', ova)
    // xapi streams disks sorted by id as strings ("Ref:10" before "Ref:9").
    const disks = [...args.disks].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    for (const disk of disks) await exportDisk(disk, out)
    await writeOut(out, TAR_END)
    await new Promise<void>((resolve, reject) => {
      out.end()
      res.once('finish', resolve)
      res.once('close', () => (res.writableFinished ? resolve() : reject(failed ?? new Error('the receiver went away'))))
    })
  } catch (err) {
    compress?.destroy()
    res.destroy(err as Error)
  }
}

// ---- import ----

const waiting = new Map<string, { resolve: (t: ImportTargets | undefined) => void }>()

/** `xva.import-targets` stream: the API layer's answer to an import's ova.xml (targets, or {abort:true}). */
export async function xvaImportTargetsStream(args: AgentStreamArgs['xva.import-targets'], _req: Readable, res: StreamOut): Promise<void> {
  const w = waiting.get(args.importId)
  waiting.delete(args.importId)
  w?.resolve(args.targets)
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ result: w !== undefined }))
}

function asImportError(err: unknown): XapiError {
  if (err instanceof XapiError) return err
  if ((err as { code?: string }).code === 'ENOSPC') return new XapiError('SR_FULL', ['', ''])
  const msg = err instanceof Error ? err.message : String(err)
  if (/unexpected end|premature|truncated|aborted|ECONNRESET/i.test(msg)) return new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
  if (/incorrect header check|invalid|corrupt|unknown frame|header/i.test(msg)) return new XapiError('IMPORT_ERROR', [`the archive cannot be read: ${msg}`])
  return new XapiError('IMPORT_ERROR', [msg])
}

/** Where a disk's chunks go: a new qcow2 image written directly, or a raw file (a memory image). */
async function openDiskSink(sr: string, target: ImportTarget): Promise<ImportSink> {
  const path = new FileSr(sr).path(target.location, target.format)
  if (target.format === 'qcow2') return newImageSink({ path, format: 'qcow2' }, target.virtualSize)
  // A new file of the import's own (its name is fresh): never one that exists.
  const file = await open(path, 'wx')
  return {
    write: async (offset, data) => void (await file.write(data, 0, data.length, offset)),
    writeZeroes: async () => undefined,
    complete: async () => {
      await file.sync()
      await file.close()
    },
    discard: () => file.close(),
  }
}

/** The disk being written, with bounded writes in flight. */
class DiskWriter {
  private readonly inFlight = new InFlight(WRITES_IN_FLIGHT)
  readonly cursor: ChunkCursor
  written = 0
  chunks = 0

  private constructor(
    readonly id: string,
    readonly size: number,
    private readonly sink: ImportSink,
  ) {
    this.cursor = new ChunkCursor(id)
  }

  static async open(id: string, sr: string, target: ImportTarget): Promise<DiskWriter> {
    return new DiskWriter(id, target.virtualSize, await openDiskSink(sr, target))
  }

  /**
   * Writes chunk `n` (`data`), skipping zero runs (a fresh image reads as zeros), clamped to the
   * disk; resolves when more may be put, with a promise of when `data` is no longer needed.
   */
  async put(n: number, data: Buffer): Promise<{ written: Promise<unknown> }> {
    this.chunks++
    const at = this.cursor.place(n, data.length)
    const usable = Math.max(0, Math.min(data.length, this.size - at))
    if (usable < data.length && !isZero(data.subarray(usable))) throw new XapiError('IMPORT_ERROR', [`chunk ${chunkName(this.id, n)} goes past the end of the disk (${this.size} bytes)`])
    const { sent, written } = writeRuns(this.sink, at, data.subarray(0, usable), this.inFlight, { skipZeroes: true })
    this.written += sent
    await this.inFlight.room()
    return { written }
  }

  async close(): Promise<void> {
    try {
      await this.inFlight.drain()
      await this.sink.complete()
    } catch (err) {
      await this.kill()
      throw err
    }
  }

  async kill(): Promise<void> {
    await this.sink.discard()
  }
}

/** The upload's chunks with its compression sniffed from the first bytes and undone; `stop` ends the pumping (and zstd). */
async function uncompressed(body: Readable): Promise<{ chunks: ChunkPuller; stop: () => void }> {
  const upload = new ChunkPuller(body)
  const head: Buffer[] = []
  let n = 0
  while (n < 4) {
    const r = await upload.next()
    if (r.done) break
    head.push(r.value)
    n += r.value.length
  }
  upload.unshift(head)
  const kind = sniffCompression(Buffer.concat(head))
  // Stopping drops the rest of the upload (never destroys it: the answer must still get through).
  if (kind === 'none') return { chunks: upload, stop: () => upload.discardRest() }
  let input: Writable
  let output: Readable
  let kill = () => undefined as void
  if (kind === 'zstd') ({ input, output, kill } = zstdDecompressor())
  else {
    const d = decompressor(kind)
    input = d
    output = d
  }
  let stopped = false
  const stop = () => {
    stopped = true
    kill()
    output.destroy()
    upload.discardRest()
  }
  const writeIn = (buf: Buffer) =>
    input.write(buf)
      ? undefined
      : new Promise<void>((resolve, reject) => {
          const onClose = () => reject(new Error('aborted'))
          input.once('close', onClose)
          input.once('drain', () => {
            input.off('close', onClose)
            resolve()
          })
        })
  void (async () => {
    try {
      for await (const chunk of upload) {
        if (stopped) break
        await writeIn(chunk)
      }
      input.end()
    } catch (err) {
      if (!stopped) output.destroy(err as Error)
    }
  })()
  return { chunks: new ChunkPuller(output), stop }
}

/** `xva.import` stream: body = the upload; response = JSON lines (see the top of this file). */
export async function xvaImportStream(args: AgentStreamArgs['xva.import'], req: Readable, res: StreamOut): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  const say = (msg: unknown) => {
    if (!res.destroyed) res.write(`${JSON.stringify(msg)}\n`)
  }
  let writer: DiskWriter | undefined
  const finished = new Map<string, DiskWriter>()
  let source: ChunkPuller | undefined
  let stopSource = () => undefined as void
  let aborted = false
  res.once('close', () => {
    aborted = true
    const w = waiting.get(args.importId)
    waiting.delete(args.importId)
    w?.resolve(undefined)
  })
  try {
    const upload = await uncompressed(req)
    source = upload.chunks
    stopSource = upload.stop
    const reader = new TarReader(source)
    let targets: ImportTargets | undefined
    // For the chunks an upload splits across its packets: page-aligned, the image writer writes
    // them around the page cache.
    const chunkBuffers = new BufferPool(CHUNK, { aligned: true })
    // The last data chunk, until its checksum entry is read; `done` gives its buffer back.
    let pending: { name: string; data: Buffer; done: () => void } | undefined
    let first = true
    for (;;) {
      const entry = await reader.next()
      if (aborted) throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
      if (!entry) break
      const { name, size, type } = entry
      const kind = classifyEntry(name, type)
      if (first) {
        first = false
        if (kind.kind !== 'ova') throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', ['ova.xml', name])
        if (size > MAX_OVA_XML) throw new XapiError('IMPORT_ERROR', [`ova.xml is too large (${size} bytes)`])
        const xml = (await reader.data(size)).toString('utf8')
        targets = await new Promise<ImportTargets | undefined>((resolve) => {
          waiting.set(args.importId, { resolve })
          say({ ova: xml })
        })
        if (!targets) throw new XapiError('IMPORT_ERROR', ['the import was abandoned'])
        continue
      }
      if (kind.kind === 'ova') throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', ['Ref:N/NNNNNNNN', name])
      if (kind.kind === 'dir') {
        await reader.skip(size)
        continue
      }
      if (!targets!.disks[kind.id]) throw new XapiError('IMPORT_ERROR_FAILED_TO_FIND_OBJECT', [kind.id])
      if (kind.kind === 'checksum') {
        if (size > 256) throw new XapiError('IMPORT_ERROR', [`checksum entry ${name} is too large`])
        const text = (await reader.data(size)).toString('latin1').trim()
        if (!pending || pending.name !== kind.of) throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', [pending ? `${pending.name}.xxhash` : 'Ref:N/NNNNNNNN', name])
        const actual = kind.algo === 'xxhash' ? xxhashText(xxh64(pending.data, 0n)) : createHash('sha1').update(pending.data).digest('hex')
        if (actual.toLowerCase() !== text.toLowerCase() && !targets!.force) throw new XapiError('IMPORT_ERROR_SOME_CHECKSUMS_FAILED', [])
        pending.done()
        pending = undefined
        continue
      }
      // A data chunk.
      if (pending && targets!.requireChecksums) throw new XapiError('IMPORT_ERROR', [`Expected to find an inline checksum after ${pending.name}, found ${name}`])
      if (size > MAX_CHUNK_ENTRY) throw new XapiError('IMPORT_ERROR', [`archive entry ${name} is too large (${size} bytes)`])
      if (writer?.id !== kind.id) {
        if (finished.has(kind.id)) throw new XapiError('IMPORT_ERROR', [`the chunks of ${kind.id} are not contiguous in the archive`])
        if (writer) {
          finished.set(writer.id, writer)
          const w = writer
          writer = undefined
          await w.close()
        }
        writer = await DiskWriter.open(kind.id, args.sr, targets!.disks[kind.id]!)
      }
      pending?.done()
      const scratch = chunkBuffers.take()
      const data = await reader.data(size, scratch)
      const { written } = await writer.put(kind.n, data)
      const copied = data.buffer === scratch.buffer
      if (!copied) chunkBuffers.give(scratch)
      pending = { name: kind.name, data, done: () => void (copied && written.then(() => chunkBuffers.give(scratch))) }
    }
    // The end-of-archive marker: the client may now be told (it closes XO's 1 PiB uploads); what
    // follows it (a tar's record padding) is read and dropped.
    say({ eof: true })
    // A compressed stream may still have its epilogue in flight when the client closes.
    source.discardRest()
    if (first) throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', ['ova.xml', ''])
    if (pending && targets!.requireChecksums) throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
    if (writer) {
      finished.set(writer.id, writer)
      const w = writer
      writer = undefined
      await w.close()
    }
    // Every disk must have arrived whole: its last chunk is always in the archive.
    for (const [id, target] of Object.entries(targets!.disks)) {
      const w = finished.get(id)
      if (!w || w.cursor.offset < Math.min(target.virtualSize, w.size)) throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
    }
    say({ done: Object.fromEntries([...finished].map(([id, w]) => [id, { chunks: w.chunks, written: w.written }])) })
    res.end()
  } catch (err) {
    await writer?.kill().catch(() => undefined)
    stopSource()
    // The rest of the upload is dropped until the API layer closes it; the answer must still get through.
    req.on('error', () => undefined)
    req.resume()
    const e = asImportError(err)
    if (process.env.FLOTILLA_XVA_DEBUG) console.error('xva import (agent) failed:', err)
    say({ error: e.description })
    res.end()
  }
}

export const newImportId = () => randomUUID()
