// VHD (Microsoft Virtual Hard Disk) as XAPI exchanges it with Xen Orchestra (reference/xo-compat.md
// §4.1, xapi.md §7.5): dynamic (type 3) and differencing (type 4) disks with 2 MiB blocks.
//
// Stream layout written here: footer copy (512) | dynamic header (1024) | BAT (padded to 512) |
// blocks in BAT order, each a 512-byte sector bitmap (all set) + 2 MiB of data | footer (512).
// All fields are big-endian; checksums are the one's complement of the byte sum (with the
// checksum field zeroed). Everything here is pure: no I/O.
import { PulledBytes } from '../lib/byte-queue.js'

export const SECTOR = 512
export const VHD_BLOCK = 2 << 20
export const FOOTER_SIZE = 512
export const HEADER_SIZE = 1024
export const BITMAP_SIZE = VHD_BLOCK / SECTOR / 8
export const BLOCK_UNUSED = 0xffffffff
export const DISK_DYNAMIC = 3
export const DISK_DIFFERENCING = 4
/** The largest VDI XAPI exports as VHD (2040 GiB). */
export const VHD_MAX_SIZE = 2040 * 1024 ** 3
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z). */
const VHD_EPOCH = 946684800

export const vhdTimestamp = (date: Date): number => Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH) >>> 0

/** The checksum of a footer or header: one's complement of the sum of its bytes, the checksum field counted as zero. */
export function vhdChecksum(buf: Buffer, checksumOffset: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) if (i < checksumOffset || i >= checksumOffset + 4) sum += buf[i]!
  return ~sum >>> 0
}

/** CHS geometry of a disk as the VHD specification computes it (appendix "CHS calculation"). */
export function vhdGeometry(size: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  let total = Math.floor(size / SECTOR)
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255
  let spt: number
  let heads: number
  let cth: number
  if (total >= 65535 * 16 * 63) {
    spt = 255
    heads = 16
    cth = Math.floor(total / spt)
  } else {
    spt = 17
    cth = Math.floor(total / spt)
    heads = Math.floor((cth + 1023) / 1024)
    if (heads < 4) heads = 4
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31
      heads = 16
      cth = Math.floor(total / spt)
    }
    if (cth >= heads * 1024) {
      spt = 63
      heads = 16
      cth = Math.floor(total / spt)
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt }
}

function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a UUID: ${uuid}`)
  return Buffer.from(hex, 'hex')
}

const uuidString = (b: Buffer): string => {
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

export interface VhdParent {
  uuid: string
  /** The parent's modification time. */
  timestamp: Date
  /** The parent's file name (stored as UTF-16BE in the header). */
  name: string
}

export interface VhdOptions {
  /** Guest-visible size in bytes (current size: exact, not rounded to the geometry). */
  size: number
  /** The disk's UUID (the VDI's). */
  uuid: string
  /** Indexes of the 2 MiB blocks present in the file, any order (sorted and de-duplicated here). */
  blocks: Iterable<number>
  /** Given: a differencing disk (type 4) on top of this parent. */
  parent?: VhdParent
  timestamp?: Date
}

export function vhdFooter(opts: { size: number; uuid: string; diskType: number; timestamp: Date }): Buffer {
  const f = Buffer.alloc(FOOTER_SIZE)
  f.write('conectix', 0, 'latin1')
  f.writeUInt32BE(2, 8) // features: reserved bit always set
  f.writeUInt32BE(0x00010000, 12)
  f.writeBigUInt64BE(BigInt(FOOTER_SIZE), 16) // data offset: the dynamic header
  f.writeUInt32BE(vhdTimestamp(opts.timestamp), 24)
  f.write('tap\0', 28, 'latin1')
  f.writeUInt32BE(0x00010003, 32)
  f.writeUInt32BE(0, 36) // creator host OS
  f.writeBigUInt64BE(BigInt(opts.size), 40) // original size
  f.writeBigUInt64BE(BigInt(opts.size), 48) // current size
  const g = vhdGeometry(opts.size)
  f.writeUInt16BE(g.cylinders, 56)
  f.writeUInt8(g.heads, 58)
  f.writeUInt8(g.sectorsPerTrack, 59)
  f.writeUInt32BE(opts.diskType, 60)
  uuidBytes(opts.uuid).copy(f, 68)
  f.writeUInt32BE(vhdChecksum(f, 64), 64)
  return f
}

export function vhdHeader(opts: { size: number; tableOffset: number; parent?: VhdParent }): Buffer {
  const h = Buffer.alloc(HEADER_SIZE)
  h.write('cxsparse', 0, 'latin1')
  h.writeBigUInt64BE(0xffffffffffffffffn, 8)
  h.writeBigUInt64BE(BigInt(opts.tableOffset), 16)
  h.writeUInt32BE(0x00010000, 24)
  h.writeUInt32BE(blockCount(opts.size), 28)
  h.writeUInt32BE(VHD_BLOCK, 32)
  if (opts.parent) {
    uuidBytes(opts.parent.uuid).copy(h, 40)
    h.writeUInt32BE(vhdTimestamp(opts.parent.timestamp), 56)
    const name = Buffer.from(opts.parent.name.slice(0, 256), 'utf16le').swap16()
    name.copy(h, 64, 0, Math.min(name.length, 512))
  }
  h.writeUInt32BE(vhdChecksum(h, 36), 36)
  return h
}

/** The number of 2 MiB blocks of a disk of `size` bytes (pure). */
export const blockCount = (size: number): number => Math.ceil(size / VHD_BLOCK)

/** Bytes the block allocation table takes, padded to a sector. */
const batSize = (size: number): number => Math.ceil((blockCount(size) * 4) / SECTOR) * SECTOR

/**
 * A VHD stream in pieces: `head` (footer copy, header, BAT), then for each entry of `blocks`
 * (increasing index = increasing file offset) a bitmap + 2 MiB of that block's data, then
 * `tail` (the footer). `length` is the whole stream's size.
 */
export interface VhdLayout {
  head: Buffer
  blocks: number[]
  /** The 512-byte sector bitmap that precedes each block (all sectors present). */
  bitmap: Buffer
  tail: Buffer
  length: number
}

export function vhdLayout(opts: VhdOptions): VhdLayout {
  if (!Number.isSafeInteger(opts.size) || opts.size <= 0) throw new Error(`bad VHD size ${opts.size}`)
  if (opts.size > VHD_MAX_SIZE) throw new Error(`a VHD cannot hold ${opts.size} bytes (maximum ${VHD_MAX_SIZE})`)
  const n = blockCount(opts.size)
  const blocks = [...new Set(opts.blocks)].sort((a, b) => a - b)
  for (const b of blocks) if (!Number.isInteger(b) || b < 0 || b >= n) throw new Error(`block ${b} outside a disk of ${n} blocks`)
  const timestamp = opts.timestamp ?? new Date()
  const diskType = opts.parent ? DISK_DIFFERENCING : DISK_DYNAMIC
  const footer = vhdFooter({ size: opts.size, uuid: opts.uuid, diskType, timestamp })
  const tableOffset = FOOTER_SIZE + HEADER_SIZE
  const header = vhdHeader({ size: opts.size, tableOffset, parent: opts.parent })
  const bat = Buffer.alloc(batSize(opts.size), 0xff)
  const firstSector = (tableOffset + bat.length) / SECTOR
  const perBlock = (BITMAP_SIZE + VHD_BLOCK) / SECTOR
  blocks.forEach((b, i) => bat.writeUInt32BE(firstSector + i * perBlock, b * 4))
  const head = Buffer.concat([footer, header, bat])
  return { head, blocks, bitmap: Buffer.alloc(BITMAP_SIZE, 0xff), tail: footer, length: head.length + blocks.length * (BITMAP_SIZE + VHD_BLOCK) + FOOTER_SIZE }
}

/** The stream's size for `blockCount` present blocks, without building it (pure). */
export const vhdStreamLength = (size: number, presentBlocks: number): number => FOOTER_SIZE + HEADER_SIZE + batSize(size) + presentBlocks * (BITMAP_SIZE + VHD_BLOCK) + FOOTER_SIZE

// ---------------------------------------------------------------------------------------------
// Reading

export class VhdFormatError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'VhdFormatError'
  }
}

export interface VhdFooterInfo {
  diskType: number
  currentSize: number
  originalSize: number
  uuid: string
  dataOffset: number
}

export function parseVhdFooter(buf: Buffer): VhdFooterInfo {
  if (buf.length < FOOTER_SIZE) throw new VhdFormatError('truncated VHD footer')
  const f = buf.subarray(0, FOOTER_SIZE)
  if (f.toString('latin1', 0, 8) !== 'conectix') throw new VhdFormatError('not a VHD: no "conectix" footer cookie')
  if (f.readUInt32BE(64) !== vhdChecksum(f, 64)) throw new VhdFormatError('bad VHD footer checksum')
  const major = f.readUInt16BE(12)
  if (major !== 1) throw new VhdFormatError(`unsupported VHD version ${f.readUInt32BE(12).toString(16)}`)
  return {
    diskType: f.readUInt32BE(60),
    currentSize: Number(f.readBigUInt64BE(48)),
    originalSize: Number(f.readBigUInt64BE(40)),
    uuid: uuidString(f.subarray(68, 84)),
    dataOffset: Number(f.readBigUInt64BE(16)),
  }
}

export interface VhdHeaderInfo {
  tableOffset: number
  maxTableEntries: number
  blockSize: number
  parentUuid: string
}

export function parseVhdHeader(buf: Buffer): VhdHeaderInfo {
  if (buf.length < HEADER_SIZE) throw new VhdFormatError('truncated VHD dynamic header')
  const h = buf.subarray(0, HEADER_SIZE)
  if (h.toString('latin1', 0, 8) !== 'cxsparse') throw new VhdFormatError('no "cxsparse" dynamic header cookie')
  if (h.readUInt32BE(36) !== vhdChecksum(h, 36)) throw new VhdFormatError('bad VHD dynamic header checksum')
  const blockSize = h.readUInt32BE(32)
  if (blockSize === 0 || blockSize % SECTOR !== 0 || blockSize > 256 << 20) throw new VhdFormatError(`unsupported VHD block size ${blockSize}`)
  const tableOffset = Number(h.readBigUInt64BE(16))
  if (tableOffset < FOOTER_SIZE + HEADER_SIZE || tableOffset % SECTOR !== 0) throw new VhdFormatError(`bad VHD table offset ${tableOffset}`)
  return { tableOffset, maxTableEntries: h.readUInt32BE(28), blockSize, parentUuid: uuidString(h.subarray(40, 56)) }
}

/** Present blocks of a BAT in file order: block index and the file offset of its bitmap (pure). */
export function batEntries(bat: Buffer, entries: number): { index: number; offset: number }[] {
  const out: { index: number; offset: number }[] = []
  for (let i = 0; i < entries; i++) {
    const sector = bat.readUInt32BE(i * 4)
    if (sector !== BLOCK_UNUSED) out.push({ index: i, offset: sector * SECTOR })
  }
  return out.sort((a, b) => a.offset - b.offset)
}

/** Runs of sectors of a block whose bitmap bit is set (`present`) or clear, in bytes within the block (pure). */
export function bitmapRuns(bitmap: Buffer, blockSize: number): { offset: number; length: number; present: boolean }[] {
  const runs: { offset: number; length: number; present: boolean }[] = []
  const sectors = blockSize / SECTOR
  for (let s = 0; s < sectors; s++) {
    const present = ((bitmap[s >> 3]! >> (7 - (s & 7))) & 1) === 1
    const last = runs[runs.length - 1]
    if (last && last.present === present) last.length += SECTOR
    else runs.push({ offset: s * SECTOR, length: SECTOR, present })
  }
  return runs
}

/** A block read from a VHD stream: its data (blockSize bytes, less for the disk's last block), where it goes, and which sectors it defines. */
export interface VhdBlock {
  index: number
  /** Guest offset of the block's first byte. */
  offset: number
  data: Buffer
  bitmap: Buffer
}

/** A forward-only byte reader over an async iterable of chunks. */
class ForwardReader {
  private readonly input: PulledBytes
  constructor(source: AsyncIterable<Buffer>) {
    this.input = new PulledBytes(source)
  }
  private async need(n: number, what: string): Promise<void> {
    if (!(await this.input.fill(n))) throw new VhdFormatError(`the VHD stream ended early (in ${what}, at byte ${this.input.position + this.input.held})`)
  }
  /** The next `n` bytes, in `into` when given (which must be large enough), else in a buffer of their own. */
  async read(n: number, what: string, into?: Buffer): Promise<Buffer> {
    if (into && into.length < n) throw new RangeError(`a ${into.length}-byte buffer for ${n} bytes`)
    await this.need(n, what)
    const got = this.input.take(n, into)
    if (!into || (got.buffer === into.buffer && got.byteOffset === into.byteOffset)) return got
    // A view into one chunk of the stream.
    got.copy(into)
    return into.subarray(0, n)
  }
  async skipTo(offset: number, what: string): Promise<void> {
    const position = this.input.position
    if (offset < position) throw new VhdFormatError(`VHD ${what} at ${offset} lies behind the stream position ${position} (blocks must not overlap)`)
    while (this.input.position < offset) {
      const n = Math.min(offset - this.input.position, 1 << 20)
      await this.need(n, what)
      this.input.drop(n)
    }
  }
  /** Drains what is left (a trailing footer, padding). */
  drain(): Promise<void> {
    return this.input.drain()
  }
}

export interface VhdStreamInfo {
  footer: VhdFooterInfo
  header: VhdHeaderInfo
  /** Present blocks in stream order. */
  blocks: AsyncGenerator<VhdBlock>
  /** Whether the stream's blocks come in increasing disk offsets (as Xen Orchestra writes them). */
  inDiskOrder: boolean
}

/**
 * Parses a VHD read strictly forward (as XAPI's importer does): the footer copy, header and BAT,
 * then yields the present blocks in file order. Only dynamic and differencing disks.
 * `blockBuffer(blockSize)` gives the buffer a block's data is read into (the caller reuses it
 * once done with the block); by default each block gets its own.
 */
export async function readVhdStream(source: AsyncIterable<Buffer>, { blockBuffer }: { blockBuffer?: (size: number) => Buffer } = {}): Promise<VhdStreamInfo> {
  const r = new ForwardReader(source)
  const footer = parseVhdFooter(await r.read(FOOTER_SIZE, 'the footer'))
  if (footer.diskType !== DISK_DYNAMIC && footer.diskType !== DISK_DIFFERENCING) throw new VhdFormatError(`VHD disk type ${footer.diskType} is not supported (only dynamic (3) and differencing (4))`)
  await r.skipTo(footer.dataOffset, 'the dynamic header')
  const header = parseVhdHeader(await r.read(HEADER_SIZE, 'the dynamic header'))
  const needed = Math.ceil(footer.currentSize / header.blockSize)
  if (header.maxTableEntries < needed) throw new VhdFormatError(`the VHD's BAT has ${header.maxTableEntries} entries, ${needed} needed for ${footer.currentSize} bytes`)
  await r.skipTo(header.tableOffset, 'the BAT')
  const bat = await r.read(Math.ceil((header.maxTableEntries * 4) / SECTOR) * SECTOR, 'the BAT')
  const entries = batEntries(bat, header.maxTableEntries).filter((e) => e.index < needed)
  const bitmapSize = Math.ceil(header.blockSize / SECTOR / 8 / SECTOR) * SECTOR
  async function* blocks(): AsyncGenerator<VhdBlock> {
    for (const e of entries) {
      await r.skipTo(e.offset, `block ${e.index}`)
      const bitmap = await r.read(bitmapSize, `block ${e.index}'s bitmap`)
      // Only what lies inside the disk is required: a stream's last block may be short.
      const size = Math.min(header.blockSize, footer.currentSize - e.index * header.blockSize)
      const data = await r.read(size, `block ${e.index}`, blockBuffer?.(header.blockSize))
      yield { index: e.index, offset: e.index * header.blockSize, data, bitmap }
    }
    await r.drain()
  }
  return { footer, header, blocks: blocks(), inDiskOrder: entries.every((e, i) => i === 0 || e.index > entries[i - 1]!.index) }
}
