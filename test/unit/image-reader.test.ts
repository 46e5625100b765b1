// Direct reads of a qcow2 chain (storage/image-reader.ts) against what qemu-img itself reads.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { randomBytes } from 'node:crypto'
import { openImageReader } from '../../src/storage/image-reader.js'

const MiB = 1 << 20
const dir = mkdtempSync(join(tmpdir(), 'image-reader-'))
const qemuIo = (path: string, cmd: string) => execFileSync('qemu-io', ['-f', 'qcow2', '-c', cmd, path], { stdio: 'ignore' })

/** The guest content of an image as qemu-img reads it. */
function contentOf(path: string): Buffer {
  const raw = join(dir, 'content.raw')
  execFileSync('qemu-img', ['convert', '-O', 'raw', path, raw])
  const data = readFileSync(raw)
  rmSync(raw)
  return data
}

describe('image reader', () => {
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('reads a two-level qcow2 chain as qemu-img does, at any offset and length', async () => {
    const base = join(dir, 'base.qcow2')
    const top = join(dir, 'top.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(16 * MiB)])
    const random = join(dir, 'random.raw')
    writeFileSync(random, randomBytes(3 * MiB))
    execFileSync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'qcow2', random, base])
    qemuIo(base, 'write -P 0x11 5M 1M')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
    qemuIo(top, 'write -P 0x22 1536k 1M')
    qemuIo(top, 'write -z 5M 64k')
    qemuIo(top, 'write -P 0x33 15M 1M')
    const expected = contentOf(top)
    const reader = await openImageReader(top, 'qcow2')
    assert.ok(reader, 'an uncompressed chain is read directly')
    try {
      assert.ok(reader.extents.some((e) => e.depth === 1 && e.data), 'some data comes from the base')
      assert.ok((await reader.read(0, 16 * MiB)).equals(expected))
      for (const [offset, length] of [[0, MiB], [MiB + 12345, 3 * MiB], [5 * MiB - 100, 200], [15 * MiB, MiB]] as const)
        assert.ok((await reader.read(offset, length)).equals(expected.subarray(offset, offset + length)), `read(${offset}, ${length})`)
      // Into a reused buffer holding old bytes: holes and zeroed clusters still read as zeros.
      const dirty = Buffer.alloc(4 * MiB, 0xee)
      for (const offset of [0, 4 * MiB, 8 * MiB, 12 * MiB]) {
        const got = await reader.read(offset, 4 * MiB, dirty)
        assert.equal(got.buffer, dirty.buffer, 'read into the given buffer')
        assert.ok(got.equals(expected.subarray(offset, offset + 4 * MiB)), `read(${offset}) into a dirty buffer`)
      }
    } finally {
      await reader.close()
    }
  })

  it('reads zeros past the end of a raw file shorter than the disk', async () => {
    const raw = join(dir, 'short.raw')
    const data = randomBytes(1500)
    writeFileSync(raw, data)
    const reader = await openImageReader(raw, 'raw')
    assert.ok(reader)
    const got = await reader.read(1000, MiB, Buffer.alloc(MiB, 0xee))
    await reader.close()
    assert.ok(got.subarray(0, 500).equals(data.subarray(1000)))
    assert.ok(got.subarray(500).every((b) => b === 0), 'zeros past the end, whatever the buffer held')
  })

  it('leaves a compressed image to qemu-nbd', async () => {
    const source = join(dir, 'plain.qcow2')
    const compressed = join(dir, 'compressed.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', source, String(4 * MiB)])
    qemuIo(source, 'write -P 0x44 0 2M')
    execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', source, compressed])
    assert.equal(await openImageReader(compressed, 'qcow2'), undefined)
  })
})
