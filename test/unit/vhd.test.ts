// The VHD writer and reader (src/vhd/vhd.ts), and the block selection of delta exports.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { allocatedBlocks, blocksAbove } from '../../src/agent/vhd-transfer.js'
import {
  BITMAP_SIZE,
  bitmapRuns,
  DISK_DIFFERENCING,
  DISK_DYNAMIC,
  parseVhdFooter,
  parseVhdHeader,
  readVhdStream,
  vhdChecksum,
  vhdGeometry,
  vhdLayout,
  vhdStreamLength,
  VHD_BLOCK,
} from '../../src/vhd/vhd.js'

const MiB = 1 << 20
const UUID = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0'

/** A whole VHD file from a layout and the disk content. */
function build(content: Buffer, blocks: number[], parent?: { uuid: string; name: string; timestamp: Date }): Buffer {
  const layout = vhdLayout({ size: content.length, uuid: UUID, blocks, parent, timestamp: new Date('2026-01-01T00:00:00Z') })
  const parts = [layout.head]
  for (const b of layout.blocks) {
    const data = content.subarray(b * VHD_BLOCK, (b + 1) * VHD_BLOCK)
    parts.push(layout.bitmap, data, Buffer.alloc(VHD_BLOCK - data.length))
  }
  parts.push(layout.tail)
  const file = Buffer.concat(parts)
  assert.equal(file.length, layout.length)
  assert.equal(file.length, vhdStreamLength(content.length, layout.blocks.length))
  return file
}

async function* chunks(buf: Buffer, size = 65537): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += size) yield buf.subarray(at, at + size)
}

describe('VHD writer', () => {
  it('computes the CHS geometry of the specification', () => {
    // Values as Virtual PC / the spec's algorithm give them.
    assert.deepEqual(vhdGeometry(1 << 30), { cylinders: 2080, heads: 16, sectorsPerTrack: 63 })
    assert.deepEqual(vhdGeometry(10 * MiB), { cylinders: 301, heads: 4, sectorsPerTrack: 17 })
    assert.deepEqual(vhdGeometry(2040 * 1024 * MiB), { cylinders: 65535, heads: 16, sectorsPerTrack: 255 })
  })

  it('writes footer, header and BAT with checksums, blocks in BAT order, footer at the end', () => {
    const size = 5 * VHD_BLOCK + 12345 * 2 // not a multiple of the block size
    const content = Buffer.alloc(size)
    content.fill(0xaa, 4 * VHD_BLOCK, 4 * VHD_BLOCK + 100)
    content.fill(0xbb, 5 * VHD_BLOCK, size)
    const file = build(content, [5, 4, 4])
    const footer = parseVhdFooter(file)
    assert.equal(footer.diskType, DISK_DYNAMIC)
    assert.equal(footer.currentSize, size)
    assert.equal(footer.originalSize, size)
    assert.equal(footer.uuid, UUID)
    assert.equal(file.toString('latin1', 28, 32), 'tap\0')
    assert.deepEqual(file.subarray(file.length - 512), file.subarray(0, 512), 'the trailing footer is the copy')
    assert.equal(vhdChecksum(file.subarray(0, 512), 64), file.readUInt32BE(64))
    const header = parseVhdHeader(file.subarray(512))
    assert.equal(header.blockSize, VHD_BLOCK)
    assert.equal(header.maxTableEntries, 6)
    assert.equal(header.tableOffset, 1536)
    const bat = file.subarray(1536, 1536 + 512)
    const sectors = [0, 1, 2, 3, 4, 5].map((i) => bat.readUInt32BE(i * 4))
    assert.deepEqual(sectors.slice(0, 4), [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff])
    assert.ok(sectors[4]! < sectors[5]!, 'blocks in increasing file offset')
    assert.equal(sectors[4]! * 512, 2048)
    assert.equal(file.readUInt8(sectors[4]! * 512), 0xff, 'bitmap: all sectors present')
    assert.equal(file.readUInt8(sectors[4]! * 512 + BITMAP_SIZE), 0xaa)
    assert.equal(file.readUInt8(sectors[5]! * 512 + BITMAP_SIZE), 0xbb)
    assert.throws(() => vhdLayout({ size, uuid: UUID, blocks: [6] }), /outside/)
  })

  it('writes a differencing header with the parent uuid, timestamp and unicode name', () => {
    const content = Buffer.alloc(4 * VHD_BLOCK)
    const parentUuid = '11111111-2222-3333-4444-555555555555'
    const file = build(content, [1], { uuid: parentUuid, name: 'p.vhd', timestamp: new Date('2020-01-01T00:00:00Z') })
    assert.equal(parseVhdFooter(file).diskType, DISK_DIFFERENCING)
    const header = parseVhdHeader(file.subarray(512))
    assert.equal(header.parentUuid, parentUuid)
    assert.equal(file.readUInt32BE(512 + 56), 631152000) // 2020-01-01 in VHD seconds (since 2000)
    assert.equal(file.subarray(512 + 64, 512 + 74).swap16().toString('utf16le'), 'p.vhd')
  })

  it('qemu-img reads what it writes (dynamic, exact size)', { skip: !hasQemuImg() }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhd-unit-'))
    try {
      const size = 9 * VHD_BLOCK + 3 * 512
      const content = Buffer.alloc(size)
      randomBytes(3 * MiB).copy(content, VHD_BLOCK / 2)
      randomBytes(1000).copy(content, size - 1000)
      const blocks = [0, 1, 9]
      writeFileSync(join(dir, 'a.vhd'), build(content, blocks))
      const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'vpc', join(dir, 'a.vhd')]).toString())
      assert.equal(info['virtual-size'], size)
      execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', join(dir, 'a.vhd'), join(dir, 'a.raw')])
      assert.ok(readFileSync(join(dir, 'a.raw')).equals(content))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('VHD reader', () => {
  it('reads back blocks in file order, tolerates a missing trailing footer and a short last block', async () => {
    const size = 3 * VHD_BLOCK + 4096
    const content = randomBytes(size)
    const file = build(content, [0, 3])
    for (const bytes of [file, file.subarray(0, file.length - 512), file.subarray(0, file.length - 512 - (VHD_BLOCK - 4096))]) {
      const vhd = await readVhdStream(chunks(bytes))
      assert.equal(vhd.footer.currentSize, size)
      const got: number[] = []
      for await (const b of vhd.blocks) {
        got.push(b.index)
        assert.ok(b.data.equals(content.subarray(b.offset, b.offset + b.data.length)))
        assert.equal(b.data.length, Math.min(VHD_BLOCK, size - b.offset))
      }
      assert.deepEqual(got, [0, 3])
      assert.equal(vhd.inDiskOrder, true)
    }
    // The same blocks stored the other way round: read in file order, and said to be out of disk order.
    const swapped = Buffer.from(file)
    const table = Number(swapped.readBigUInt64BE(512 + 16))
    const [first, fourth] = [swapped.readUInt32BE(table), swapped.readUInt32BE(table + 12)]
    swapped.writeUInt32BE(fourth, table)
    swapped.writeUInt32BE(first, table + 12)
    const vhd = await readVhdStream(chunks(swapped))
    assert.equal(vhd.inDiskOrder, false)
    const order: number[] = []
    for await (const b of vhd.blocks) order.push(b.index)
    assert.deepEqual(order, [3, 0])
  })

  it('refuses bad checksums, fixed disks and truncated streams', async () => {
    const file = build(Buffer.alloc(2 * VHD_BLOCK), [1])
    const badFooter = Buffer.from(file)
    badFooter[40] = badFooter[40]! ^ 1
    await assert.rejects(readVhdStream(chunks(badFooter)), /footer checksum/)
    const badHeader = Buffer.from(file)
    badHeader[512 + 28] = 9
    await assert.rejects(readVhdStream(chunks(badHeader)), /header checksum/)
    const fixed = Buffer.from(file.subarray(0, 512))
    fixed.writeUInt32BE(2, 60)
    fixed.writeUInt32BE(vhdChecksum(fixed, 64), 64)
    await assert.rejects(readVhdStream(chunks(fixed)), /disk type 2/)
    await assert.rejects(readVhdStream(chunks(Buffer.from('hello'))), /truncated|ended early|conectix/)
    const vhd = await readVhdStream(chunks(file.subarray(0, 3000)))
    await assert.rejects(async () => {
      for await (const _ of vhd.blocks);
    }, /ended early/)
  })

  it('turns a sector bitmap into runs', () => {
    const bitmap = Buffer.alloc(BITMAP_SIZE)
    bitmap[0] = 0b0110_0000
    bitmap[BITMAP_SIZE - 1] = 0x01
    const runs = bitmapRuns(bitmap, VHD_BLOCK)
    assert.deepEqual(runs.slice(0, 3), [
      { offset: 0, length: 512, present: false },
      { offset: 512, length: 1024, present: true },
      { offset: 1536, length: VHD_BLOCK - 1536 - 512, present: false },
    ])
    assert.deepEqual(runs[3], { offset: VHD_BLOCK - 512, length: 512, present: true })
  })
})

describe('delta block selection', () => {
  const extents = [
    { start: 0, length: MiB, data: true, zero: false, depth: 2, present: true },
    { start: MiB, length: MiB, data: true, zero: false, depth: 1, present: true },
    { start: 2 * MiB, length: 2 * MiB, data: true, zero: false, depth: 2, present: true },
    { start: 4 * MiB, length: 4 * MiB, data: false, zero: true, depth: 2, present: false },
    { start: 8 * MiB, length: MiB, data: false, zero: true, depth: 1, present: true },
    { start: 9 * MiB, length: 55 * MiB, data: false, zero: true, depth: 2, present: false },
  ]
  it('full exports take blocks with data; deltas take blocks allocated above the base, zeros included', () => {
    assert.deepEqual([...allocatedBlocks(extents)].sort(), [0, 1])
    assert.deepEqual([...blocksAbove(extents, 2)].sort(), [0, 4])
    assert.deepEqual([...blocksAbove(extents, 1)], [])
  })
})

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'])
    return true
  } catch {
    return false
  }
}
