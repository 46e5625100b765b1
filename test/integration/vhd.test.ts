// format=vhd on /export_raw_vdi and /import_raw_vdi against a real daemon: scenarios 19–21 of
// reference/xo-compat.md §8 with Xen Orchestra's own XapiDiskSource and SR_importVdi, delta
// exports with base=, and qemu-img as an independent VHD reader/writer.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { readVhdStream, VHD_BLOCK } from '../../src/vhd/vhd.js'
import { call, Daemon, login, PASSWORD, waitFor } from '../helpers/daemon.js'

type XapiClient = {
  connect(): Promise<void>
  disconnect(): Promise<void>
  objectsFetched: Promise<void>
  call<T = any>(method: string, ...args: unknown[]): Promise<T>
  [k: string]: any
}
const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => XapiClient }
const { XapiDiskSource } = (await import('@xen-orchestra/xapi/disks/Xapi.mjs' as string)) as { XapiDiskSource: new (opts: object) => any }

const MiB = 1 << 20
const GiB = 1 << 30
const daemon = new Daemon()
let xapi: XapiClient
let session: string
let work: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const query = (q: Record<string, string>) => `?${new URLSearchParams({ session_id: session, ...q })}`

async function newVdi(size: number, name = 'vhd test'): Promise<string> {
  const pool = (await c<string[]>('pool.get_all'))[0]
  const sr = await c<string>('pool.get_default_SR', pool)
  return c<string>('VDI.create', { SR: sr, virtual_size: size, name_label: name, name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
}

interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

function http(method: string, path: string, body?: Buffer): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(`${daemon.url}${path}`, { method, headers: body ? { 'content-length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function taskOutcome(task: string): Promise<{ status: string; error_info: string[] }> {
  return waitFor(`task ${task}`, async () => {
    const rec = await c('task.get_record', task)
    return rec.status !== 'pending' && rec
  }, 60_000)
}

async function upload(vdi: string, body: Buffer, format: 'raw' | 'vhd'): Promise<void> {
  const r = await http('PUT', `/import_raw_vdi${query({ vdi, format })}`, body)
  assert.equal(r.status, 200, r.body.toString())
  const outcome = await taskOutcome(String(r.headers['task-id']))
  assert.equal(outcome.status, 'success', JSON.stringify(outcome.error_info))
}

/** A raw export, hashed per 2 MiB block as it streams (1 GiB disks stay out of memory). */
async function blockHashes(vdi: string): Promise<string[]> {
  const hashes: string[] = []
  await new Promise<void>((resolve, reject) => {
    request(`${daemon.url}/export_raw_vdi${query({ vdi, format: 'raw' })}`, (res) => {
      assert.equal(res.statusCode, 200)
      let pending: Buffer[] = []
      let have = 0
      res.on('data', (d: Buffer) => {
        pending.push(d)
        have += d.length
        while (have >= VHD_BLOCK) {
          const all = Buffer.concat(pending)
          hashes.push(sha(all.subarray(0, VHD_BLOCK)))
          pending = [all.subarray(VHD_BLOCK)]
          have -= VHD_BLOCK
        }
      })
      res.on('end', () => (have > 0 && hashes.push(sha(Buffer.concat(pending))), resolve()))
      res.on('error', reject)
    })
      .on('error', reject)
      .end()
  })
  return hashes
}

async function exportVhd(vdi: string, base?: string): Promise<HttpAnswer> {
  const r = await http('GET', `/export_raw_vdi${query({ vdi, format: 'vhd', ...(base ? { base } : {}) })}`)
  assert.equal(r.status, 200, r.body.toString())
  assert.equal(r.headers['content-type'], 'application/vhd')
  assert.equal(Number(r.headers['content-length']), r.body.length, 'Content-Length announced in advance')
  return r
}

async function* chunked(buf: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += MiB) yield buf.subarray(at, at + MiB)
}

describe('format=vhd on /export_raw_vdi and /import_raw_vdi', () => {
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'vhd-test-'))
    await daemon.start()
    session = await login(daemon.url)
    xapi = new Xapi({ url: daemon.url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, callTimeout: 30e3, eventPollDelay: 1e3, syncStackTraces: true })
    await xapi.connect()
    await xapi.objectsFetched
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await daemon.dispose()
    rmSync(work, { recursive: true, force: true })
  })

  it('19: XapiDiskSource reads a full VHD export: data blocks equal the disk, empty blocks absent; qemu-img reads it', async () => {
    const size = 40 * MiB + 3 * 512
    const content = Buffer.alloc(size)
    randomBytes(3 * MiB).copy(content, MiB) // blocks 0 and 1
    randomBytes(MiB).copy(content, 20 * MiB) // block 10
    randomBytes(999).copy(content, size - 999) // the short last block (20)
    const vdi = await newVdi(size)
    await upload(vdi, content, 'raw')

    const source = new XapiDiskSource({ xapi, vdiRef: vdi, preferNbd: false })
    await source.init()
    try {
      assert.equal(source.isDifferencing(), false)
      assert.equal(source.getVirtualSize(), size)
      const seen: number[] = []
      for await (const { index, data } of source.diskBlocks()) {
        seen.push(index)
        assert.ok((data as Buffer).equals(content.subarray(index * VHD_BLOCK, index * VHD_BLOCK + (data as Buffer).length)), `block ${index}`)
      }
      assert.deepEqual(seen, [0, 1, 10, 20])
    } finally {
      await source.close()
    }

    const r = await exportVhd(vdi)
    assert.match(String(r.headers['content-disposition']), /\.vhd"$/)
    const file = join(work, 'full.vhd')
    writeFileSync(file, r.body)
    execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, join(work, 'full.raw')])
    assert.ok(readFileSync(join(work, 'full.raw')).equals(content), 'qemu-img reads the same content')
    rmSync(file)
    rmSync(join(work, 'full.raw'))
  })

  it('20: delta export with base=: only changed blocks (1 MiB changed of 1 GiB → under 8 MiB), applies over the base', async () => {
    const vdi = await newVdi(GiB, 'delta')
    const first = randomBytes(4 * MiB)
    await upload(vdi, first, 'raw')
    const s1 = await c<string>('VDI.snapshot', vdi)
    // Change 1 MiB at 600 MiB, through a VHD made by qemu-img (only that block is in it).
    const raw = join(work, 'change.raw')
    const fd = openSync(raw, 'w')
    writeSync(fd, randomBytes(MiB), 0, MiB, 600 * MiB)
    closeSync(fd)
    execFileSync('truncate', ['-s', String(GiB), raw])
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, join(work, 'change.vhd')])
    await upload(vdi, readFileSync(join(work, 'change.vhd')), 'vhd')
    rmSync(raw)
    rmSync(join(work, 'change.vhd'))
    const s2 = await c<string>('VDI.snapshot', vdi)

    const delta = await exportVhd(s2, s1)
    assert.ok(delta.body.length < 8 * MiB, `delta of ${delta.body.length} bytes`)
    const vhd = await readVhdStream(chunked(delta.body))
    assert.equal(vhd.footer.diskType, 4)
    assert.equal(vhd.header.parentUuid, await c('VDI.get_uuid', s1))
    const indexes: number[] = []
    for await (const b of vhd.blocks) indexes.push(b.index)
    assert.deepEqual(indexes, [300])

    // XO's reader sees a differencing disk with the same blocks.
    const source = new XapiDiskSource({ xapi, vdiRef: s2, baseRef: s1, preferNbd: false })
    await source.init()
    try {
      assert.equal(source.isDifferencing(), true)
      assert.deepEqual(source.getBlockIndexes(), [300])
    } finally {
      await source.close()
    }

    // Applied over a copy of the base (import of a differencing VHD), it gives S2's content.
    const restored = await c<string>('VDI.clone', s1)
    await upload(restored, delta.body, 'vhd')
    assert.deepEqual(await blockHashes(restored), await blockHashes(s2))
    // A base outside the exported chain (S2 for the restored clone) is compared block by block: nothing differs.
    const blocksOf = async (r: HttpAnswer) => {
      const out: number[] = []
      for await (const b of (await readVhdStream(chunked(r.body))).blocks) out.push(b.index)
      return out
    }
    assert.deepEqual(await blocksOf(await exportVhd(restored, s2)), [])
    assert.deepEqual(await blocksOf(await exportVhd(restored, s1)), [300])
    // A full export of the same snapshot is a dynamic disk with blocks 0, 1 and 300.
    const full = await readVhdStream(chunked((await exportVhd(s2)).body))
    assert.equal(full.footer.diskType, 3)
    const all: number[] = []
    for await (const b of full.blocks) all.push(b.index)
    assert.deepEqual(all, [0, 1, 300])
    const nothing = await exportVhd(s2, s2)
    assert.equal(nothing.body.length, 512 + 1024 + 2048 + 512, 'no block changed since itself')
  })

  it('21: imports a dynamic VHD made by qemu-img (and through XO SR_importVdi): same size and content', async () => {
    const size = 24 * MiB + 512
    const content = Buffer.alloc(size)
    randomBytes(5 * MiB).copy(content, 3 * MiB)
    randomBytes(512).copy(content, size - 512)
    writeFileSync(join(work, 'in.raw'), content)
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', join(work, 'in.raw'), join(work, 'in.vhd')])
    const file = readFileSync(join(work, 'in.vhd'))

    // Over old content: blocks absent from the VHD keep it, the VHD's blocks replace theirs.
    const vdi = await newVdi(size)
    await upload(vdi, Buffer.alloc(size, 0x55), 'raw')
    await upload(vdi, file, 'vhd')
    const expected = Buffer.alloc(size, 0x55)
    for (let b = 0; b * VHD_BLOCK < size; b++) {
      const piece = content.subarray(b * VHD_BLOCK, (b + 1) * VHD_BLOCK)
      if (!piece.equals(Buffer.alloc(piece.length))) piece.copy(expected, b * VHD_BLOCK)
    }
    const got = await http('GET', `/export_raw_vdi${query({ vdi, format: 'raw' })}`)
    assert.equal(sha(got.body), sha(expected))

    const pool = (await c<string[]>('pool.get_all'))[0]
    const sr = await c<string>('pool.get_default_SR', pool)
    const stream = Object.assign(Readable.from(chunked(file)), { length: file.length })
    const imported = await xapi.SR_importVdi(sr, stream, { format: 'vhd' })
    assert.equal(Number(await c('VDI.get_virtual_size', imported)), size)
    const back = await http('GET', `/export_raw_vdi${query({ vdi: imported, format: 'raw' })}`)
    assert.equal(sha(back.body), sha(content))

    // Broken VHDs fail the task and leave the VDI as it was (the server may reset the upload).
    const failing = async (target: string, body: Buffer) => {
      const task = await c<string>('task.create', 'failing vhd import', '')
      await http('PUT', `/import_raw_vdi${query({ vdi: target, format: 'vhd', task_id: task })}`, body).catch(() => undefined)
      return taskOutcome(task)
    }
    const broken = Buffer.from(file)
    broken[100] = broken[100]! ^ 0xff
    const outcome = await failing(imported, broken)
    assert.equal(outcome.status, 'failure')
    assert.match(outcome.error_info.join(' '), /VDI_IO_ERROR.*checksum/)
    assert.equal((await failing(imported, file.subarray(0, file.length - 3 * MiB))).status, 'failure')
    assert.equal(sha((await http('GET', `/export_raw_vdi${query({ vdi: imported, format: 'raw' })}`)).body), sha(content))
    assert.equal((await failing(await newVdi(size - 2 * MiB), file)).error_info[0], 'VDI_TOO_SMALL')
    rmSync(join(work, 'in.raw'))
    rmSync(join(work, 'in.vhd'))
  })
})
