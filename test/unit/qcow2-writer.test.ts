// The agent's own qcow2 writer (storage/qcow2-writer.ts), checked by qemu-img: the image is
// consistent (check), reads back as written (convert) and stays thin where nothing was written (map).
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes, randomFillSync } from 'node:crypto'
import { closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { Qcow2Writer } from '../../src/storage/qcow2-writer.js'
import { BufferPool } from '../../src/lib/buffer-pool.js'

const dir = mkdtempSync(join(tmpdir(), 'qcow2-writer-'))
const KiB = 1024
const MiB = 1024 * KiB
const TMPFS_MAGIC = 0x01021994

/** Whether files under `dir` can be written around the page cache (and it would show: not tmpfs). */
function directWritesShow(dir: string): boolean {
  if (statfsSync(dir).type === TMPFS_MAGIC) return false
  try {
    closeSync(openSync(join(dir, 'probe'), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT))
    return true
  } catch {
    return false
  } finally {
    rmSync(join(dir, 'probe'), { force: true })
  }
}

function contentOf(path: string): Buffer {
  const raw = `${path}.raw`
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, raw])
  const data = readFileSync(raw)
  rmSync(raw)
  return data
}

/** Writes `pieces` ([offset, length], in order) of random data into a new image and into the expected content. */
async function writeImage(name: string, size: number, pieces: [number, number][], options?: { clusterBits?: number; flushEvery?: number }): Promise<{ path: string; expected: Buffer }> {
  const path = join(dir, name)
  const expected = Buffer.alloc(size)
  const writer = await Qcow2Writer.create(path, size, options)
  for (const [offset, length] of pieces) {
    const data = randomBytes(length)
    data.copy(expected, offset)
    await writer.write(offset, data)
  }
  await writer.finish()
  return { path, expected }
}

describe('qcow2 writer', () => {
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('writes an image qemu-img finds consistent and reads as written, across L2 tables and refcount blocks', async () => {
    // 1 KiB clusters: an L2 table maps 128 KiB, a refcount block counts 512 clusters, L1 spans 2
    // clusters. A flush starts every 8 KiB written, under the writes that follow.
    const size = 20 * 1024 * KiB + 512
    const pieces: [number, number][] = [
      [0, 64 * KiB], // whole clusters, across L2 tables
      [64 * KiB + 100, 50], // inside one cluster
      [64 * KiB + 150, 1000], // continues it, ends inside another
      [200 * KiB + 3, 600 * KiB], // unaligned head and tail; more clusters than a refcount block counts
      [1024 * KiB, 31 * KiB], // a gap before
      [1055 * KiB, 2 * KiB], // straddles an L2 boundary
      [20 * 1024 * KiB - 300, 812], // up to the end of the disk, in the middle of a cluster
    ]
    const { path, expected } = await writeImage('small-clusters.qcow2', size, pieces, { clusterBits: 10, flushEvery: 8 * KiB })
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', path])
    assert.ok(contentOf(path).equals(expected), 'reads back as written')
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path]).toString())
    assert.equal(info['virtual-size'], size)
    assert.equal(info['cluster-size'], 1024)
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', path]).toString()) as { start: number; length: number; data: boolean }[]
    const data = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0)
    assert.ok(data < 720 * KiB, `only what was written is allocated (${data} bytes)`)
    assert.ok(!map.some((e) => e.data && e.start < 19 * 1024 * KiB && e.start + e.length > 1100 * KiB), 'the gap stays unallocated')
  })

  it('writes a 64 KiB-cluster image like qemu-img create makes, and an empty one', async () => {
    const { path, expected } = await writeImage('default.qcow2', 8 * 1024 * KiB, [[0, 1024 * KiB], [3 * 1024 * KiB, 64 * KiB], [5 * 1024 * KiB + 1, 10]])
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', path])
    assert.ok(contentOf(path).equals(expected))
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path]).toString())
    assert.equal(info['format-specific'].data.compat, '1.1')
    assert.equal(info['format-specific'].data['refcount-bits'], 16)
    const empty = await writeImage('empty.qcow2', 1024 * KiB, [])
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', empty.path])
    assert.ok(contentOf(empty.path).equals(empty.expected))
  })

  it('writes page-aligned buffers around the page cache where the file system allows it, the rest through it', async () => {
    const pool = new BufferPool(MiB, { aligned: true })
    const path = join(dir, 'direct.qcow2')
    const size = 16 * MiB
    const expected = Buffer.alloc(size)
    const writer = await Qcow2Writer.create(path, size)
    for (let i = 0; i < 8; i++) {
      const buf = randomFillSync(pool.take())
      buf.copy(expected, i * MiB)
      await writer.write(i * MiB, buf)
    }
    const unaligned = randomBytes(100 * KiB)
    unaligned.copy(expected, 12 * MiB)
    await writer.write(12 * MiB, unaligned)
    await writer.finish()
    // Bytes of the file in the page cache: the tables, the header and the unaligned write's clusters, when the aligned ones went around it.
    const cached = Number(execFileSync('fincore', ['-b', '-n', '-o', 'RES', path]).toString().trim())
    if (directWritesShow(dir)) assert.ok(cached < 2 * MiB, `${cached} bytes in the page cache`)
    execFileSync('qemu-img', ['check', '-q', '-f', 'qcow2', path])
    assert.ok(contentOf(path).equals(expected), 'reads back as written')
  })

  it('refuses writes out of order or past the end, and an aborted image leaves no file', async () => {
    const path = join(dir, 'refused.qcow2')
    const writer = await Qcow2Writer.create(path, 1024 * KiB)
    await writer.write(128 * KiB, Buffer.alloc(64 * KiB, 1))
    await assert.rejects(writer.write(64 * KiB, Buffer.alloc(64 * KiB, 1)), /comes after one that ended/)
    await assert.rejects(writer.write(1000 * KiB, Buffer.alloc(64 * KiB, 1)), /goes past the disk/)
    await writer.abort()
    assert.equal(existsSync(path), false)
    await assert.rejects(Qcow2Writer.create(join(dir, 'default.qcow2'), KiB), /EEXIST/)
  })
})
