// The XVA container as xapi writes and reads it (reference/xapi.md §8): a ustar stream with
// ova.xml first, then per disk `Ref:N/%08d` chunks of 1 MiB, each followed by its checksum
// (`.xxhash`: XXH64 seed 0 as 16 upper-case hex digits; legacy `.checksum`: SHA-1 hex).
// Everything here is pure: tar headers, entry names, checksum text, compression sniffing.
import { XapiError } from '../idl/errors.js'

export const CHUNK = 1 << 20
export const BLOCK = 512
/** The largest disk chunk an import accepts in one entry (xapi writes 1 MiB; some writers pad). */
export const MAX_CHUNK_ENTRY = 16 << 20
/** The largest ova.xml an import accepts. */
export const MAX_OVA_XML = 64 << 20

/** What an export claims to be (reference/xapi.md §8.2: 1.20 so that XCP-ng ≥ 8.1 accepts it). */
export const EXPORT_VERSION = {
  hostname: 'localhost',
  date: '2020-03-12',
  product_version: '8.1.0',
  product_brand: 'XCP-ng',
  build_number: 'release/yangtze/master/58',
  xapi_major: 1,
  xapi_minor: 20,
  export_vsn: 2,
}

export type Compression = 'none' | 'gzip' | 'zstd'

/** The `use_compression` query parameter: true/gzip → gzip, zstd → zstd, anything else → none (pure). */
export function parseCompression(value: string | null | undefined): Compression {
  const v = (value ?? '').toLowerCase()
  if (v === 'true' || v === 'gzip') return 'gzip'
  if (v === 'zstd') return 'zstd'
  return 'none'
}

/** The compression of a stream from its first bytes (gzip 1f 8b, zstd 28 b5 2f fd), as xapi sniffs it (pure). */
export function sniffCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return 'zstd'
  return 'none'
}

export const chunkName = (id: string, n: number) => `${id}/${String(n).padStart(8, '0')}`

/** XXH64 as xapi writes it in `.xxhash` files: the 64-bit value in 16 upper-case hex digits (pure). */
export const xxhashText = (h: bigint) => h.toString(16).toUpperCase().padStart(16, '0')

function octal(buf: Buffer, at: number, width: number, value: number): void {
  buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, width, 'ascii')
}

/** A ustar header for a regular file, as xapi's tar library writes it: mode 0644, owner 0, mtime given (pure). */
export function tarHeader(name: string, size: number, mtime = 0): Buffer {
  const nameBytes = Buffer.from(name, 'utf8')
  if (nameBytes.length > 100) throw new Error(`tar entry name too long: ${name}`)
  const h = Buffer.alloc(BLOCK)
  nameBytes.copy(h, 0)
  octal(h, 100, 8, 0o644)
  octal(h, 108, 8, 0)
  octal(h, 116, 8, 0)
  octal(h, 124, 12, size)
  octal(h, 136, 12, mtime)
  h.fill(0x20, 148, 156)
  h[156] = 0x30 // '0': regular file
  h.write('ustar\0', 257, 'ascii')
  h.write('00', 263, 'ascii')
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii')
  return h
}

/** The zero bytes that pad an entry of `size` bytes to a whole block (pure). */
export const tarPadding = (size: number) => (BLOCK - (size % BLOCK)) % BLOCK

/** The end-of-archive marker: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK)

/** A tar entry name of an XVA, classified; hostile or unknown names are errors (pure). */
export type EntryName =
  | { kind: 'ova' }
  | { kind: 'dir'; id: string }
  | { kind: 'chunk'; id: string; n: number; name: string }
  | { kind: 'checksum'; id: string; n: number; algo: 'xxhash' | 'sha1'; of: string }

export function classifyEntry(rawName: string, type: string): EntryName {
  const name = rawName.replace(/^\.\//, '')
  if (name.startsWith('/') || name.split('/').some((p) => p === '..') || name.includes('\0') || name.includes('\\'))
    throw new XapiError('IMPORT_ERROR', [`refusing archive entry with an unsafe path: ${JSON.stringify(rawName)}`])
  if (type === 'directory') {
    const d = /^(Ref:\d{1,9})\/?$/.exec(name)
    if (d) return { kind: 'dir', id: d[1]! }
    throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', ['Ref:N/', rawName])
  }
  if (type !== 'file' && type !== 'contiguous-file')
    throw new XapiError('IMPORT_ERROR', [`refusing archive entry ${JSON.stringify(rawName)} of type ${type}: only regular files are accepted`])
  if (name === 'ova.xml') return { kind: 'ova' }
  const m = /^(Ref:\d{1,9})\/(\d{1,12})(?:\.(xxhash|checksum))?$/.exec(name)
  if (!m) throw new XapiError('IMPORT_ERROR_UNEXPECTED_FILE', ['Ref:N/NNNNNNNN', rawName])
  const id = m[1]!
  const n = Number(m[2])
  if (m[3]) return { kind: 'checksum', id, n, algo: m[3] === 'xxhash' ? 'xxhash' : 'sha1', of: `${id}/${m[2]}` }
  return { kind: 'chunk', id, n, name }
}

/**
 * Where the chunks of one disk go, tracked incrementally as xapi does (§8.3): chunk numbers
 * strictly increase, missing numbers are zero chunks of the first chunk's length, empty chunks
 * are keep-alives that do not advance the offset (pure).
 */
export class ChunkCursor {
  private last = -1
  private firstLength: number | undefined
  offset = 0

  constructor(readonly id: string) {}

  /** The disk offset at which chunk `n` of `length` bytes goes; advances past it. */
  place(n: number, length: number): number {
    if (n <= this.last) throw new XapiError('IMPORT_ERROR', [`chunk ${chunkName(this.id, n)} comes after ${chunkName(this.id, this.last)}: chunk numbers must increase`])
    const gap = n - this.last - 1
    if (this.firstLength === undefined && length > 0) this.firstLength = length
    this.offset += gap * (this.firstLength ?? CHUNK)
    const at = this.offset
    this.offset += length
    this.last = n
    return at
  }
}
