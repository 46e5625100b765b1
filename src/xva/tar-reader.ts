// A strict streaming tar reader for XVA imports. Unlike a general-purpose extractor it stops at
// the end-of-archive marker (two zero blocks) instead of waiting for the input to end: XO's
// uploads of unknown length end only when the client sees our answer and closes, so the
// importer must know the archive is complete from the archive itself. Entries are whole
// buffers (an entry's size is checked against a limit before its data is read); ustar/v7
// headers with verified checksums, pax (`x`, `g`) and GNU long-name (`L`, `K`) headers.
import { XapiError } from '../idl/errors.js'
import { BLOCK } from './format.js'
import { PulledBytes } from '../lib/byte-queue.js'

export interface TarEntry {
  name: string
  /** 'file', 'directory', 'symlink', 'link', or the type flag of anything else. */
  type: string
  size: number
}

const TYPES: Record<string, string> = { '0': 'file', '\0': 'file', '7': 'file', '5': 'directory', '2': 'symlink', '1': 'link', '3': 'character-device', '4': 'block-device', '6': 'fifo' }

function field(h: Buffer, at: number, len: number): string {
  const s = h.subarray(at, at + len)
  const nul = s.indexOf(0)
  return s.subarray(0, nul < 0 ? len : nul).toString('utf8')
}

function octal(h: Buffer, at: number, len: number): number {
  // GNU base-256 for large sizes.
  if (h[at]! & 0x80) {
    let n = 0
    for (let i = at + 1; i < at + len; i++) n = n * 256 + h[i]!
    return n
  }
  const text = field(h, at, len).trim()
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw new XapiError('IMPORT_ERROR', [`bad tar header field ${JSON.stringify(text)}`])
  return parseInt(text, 8)
}

/** Parses one 512-byte header (pure); null for a zero block. */
export function parseHeader(h: Buffer): (TarEntry & { flag: string }) | null {
  if (h.every((b) => b === 0)) return null
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!
  if (octal(h, 148, 8) !== sum) throw new XapiError('IMPORT_ERROR', ['the upload is not a tar archive (bad header checksum)'])
  const flag = String.fromCharCode(h[156]!)
  let name = field(h, 0, 100)
  if (h.subarray(257, 262).toString('latin1') === 'ustar') {
    const prefix = field(h, 345, 155)
    if (prefix) name = `${prefix}/${name}`
  }
  return { name, flag, type: TYPES[flag] ?? `type ${JSON.stringify(flag)}`, size: octal(h, 124, 12) }
}

function paxPath(data: Buffer): string | undefined {
  let at = 0
  let path: string | undefined
  while (at < data.length) {
    const sp = data.indexOf(0x20, at)
    if (sp < 0) break
    const len = Number(data.subarray(at, sp).toString('ascii'))
    if (!Number.isSafeInteger(len) || len <= 0) break
    const rec = data.subarray(sp + 1, at + len - 1).toString('utf8')
    const eq = rec.indexOf('=')
    if (rec.slice(0, eq) === 'path') path = rec.slice(eq + 1)
    at += len
  }
  return path
}

export class TarReader {
  private readonly input: PulledBytes

  constructor(source: AsyncIterable<Buffer>) {
    this.input = new PulledBytes(source)
  }

  private async need(n: number): Promise<void> {
    if (!(await this.input.fill(n))) throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
  }

  private async take(n: number, scratch?: Buffer): Promise<Buffer> {
    await this.need(n)
    return this.input.take(n, scratch)
  }

  private async drop(n: number): Promise<void> {
    await this.need(n)
    this.input.drop(n)
  }

  /** The next entry's header, or null at the end-of-archive marker; `limit(entry)` is checked before any data is read. */
  async next(): Promise<TarEntry | null> {
    let longName: string | undefined
    for (;;) {
      const h = parseHeader(await this.take(BLOCK))
      if (!h) {
        // The first zero block; the second must follow (xapi and tar write both).
        const second = await this.take(BLOCK)
        if (!second.every((b) => b === 0)) throw new XapiError('IMPORT_ERROR', ['a tar header is missing between entries'])
        return null
      }
      if (h.flag === 'x' || h.flag === 'g' || h.flag === 'L' || h.flag === 'K') {
        if (h.size > 1 << 20) throw new XapiError('IMPORT_ERROR', ['an extended tar header is too large'])
        const data = await this.data(h.size)
        if (h.flag === 'x') longName = paxPath(data) ?? longName
        if (h.flag === 'L') longName = data.toString('utf8').replace(/\0+$/, '')
        continue
      }
      return { name: longName ?? h.name, type: h.type, size: h.size }
    }
  }

  /** The current entry's data (with its padding consumed); copied into `scratch` when it has to be copied and fits. */
  async data(size: number, scratch?: Buffer): Promise<Buffer> {
    const out = size ? await this.take(size, scratch) : Buffer.alloc(0)
    const pad = (BLOCK - (size % BLOCK)) % BLOCK
    if (pad) await this.drop(pad)
    return out
  }

  /** Skips the current entry's data. */
  async skip(size: number): Promise<void> {
    let left = size + ((BLOCK - (size % BLOCK)) % BLOCK)
    while (left > 0) {
      const n = Math.min(left, 1 << 20)
      await this.drop(n)
      left -= n
    }
  }
}
