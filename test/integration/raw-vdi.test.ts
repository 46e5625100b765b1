// /import_raw_vdi and /export_raw_vdi against a real daemon: scenarios 15–16 of
// reference/xo-compat.md §8 with Xen Orchestra's own client, then qcow2, hostile images, sizes,
// truncated uploads, sessions and disks in use, with plain HTTP.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login, PASSWORD, waitFor } from '../helpers/daemon.js'

type XapiClient = {
  connect(): Promise<void>
  disconnect(): Promise<void>
  objectsFetched: Promise<void>
  call<T = any>(method: string, ...args: unknown[]): Promise<T>
  [k: string]: any
}
const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => XapiClient }

const MiB = 1 << 20
const daemon = new Daemon({ requestLog: true })
let xapi: XapiClient
let session: string
let work: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

async function newVdi(size: number, name = 'raw-vdi test'): Promise<string> {
  const pool = (await c<string[]>('pool.get_all'))[0]
  const sr = await c<string>('pool.get_default_SR', pool)
  return c<string>('VDI.create', { SR: sr, virtual_size: size, name_label: name, name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
}

/** A stream of `buf` in 1 MiB chunks, carrying (or not) XO's `length` property. */
function streamOf(buf: Buffer, withLength: boolean): Readable {
  const chunks: Buffer[] = []
  for (let at = 0; at < buf.length; at += MiB) chunks.push(buf.subarray(at, at + MiB))
  const s = Readable.from(chunks, { objectMode: false })
  if (withLength) Object.assign(s, { length: buf.length })
  return s
}

/** 8 MiB of random data, 4 MiB of zeros, 3 MiB random, 1 MiB zeros, 37 random bytes. */
function sampleData(): Buffer {
  return Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(4 * MiB), randomBytes(3 * MiB), Buffer.alloc(MiB), randomBytes(37)])
}

interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** A raw HTTP request: `body` is sent in full unless `cutAfter` bytes, after which the socket is destroyed. */
function http(method: string, path: string, opts: { body?: Buffer; headers?: Record<string, string | number>; cutAfter?: number } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(`${daemon.url}${path}`, { method, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      // a server that refuses a body closes while it is still being sent: its answer may still come
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') setTimeout(() => resolve({ status: 0, headers: {}, body: Buffer.alloc(0) }), 2000)
      else reject(err)
    })
    if (opts.cutAfter !== undefined) {
      req.on('response', (res) => {
        req.write(opts.body!.subarray(0, opts.cutAfter), () => setTimeout(() => (req.destroy(), res.destroy(), resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0) })), 200))
      })
      req.flushHeaders()
    } else req.end(opts.body)
  })
}

const query = (q: Record<string, string>) => `?${new URLSearchParams({ session_id: session, ...q })}`

async function exportRaw(vdi: string): Promise<Buffer> {
  const r = await http('GET', `/export_raw_vdi${query({ vdi, format: 'raw' })}`)
  assert.equal(r.status, 200, r.body.toString())
  return r.body
}

async function taskOutcome(task: string): Promise<{ status: string; error_info: string[]; result: string }> {
  return waitFor(`task ${task}`, async () => {
    const rec = await c('task.get_record', task)
    return rec.status !== 'pending' && rec
  }, 30_000)
}

describe('/import_raw_vdi and /export_raw_vdi', () => {
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'raw-vdi-test-'))
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

  it('15: XO VDI_importContent / VDI_exportContent round-trip raw data, probe first, tasks adopted, xo:import keys removed', async () => {
    const vdi = await newVdi(32 * MiB)
    // Old content where the new data has zeros: the zeros must replace it.
    const old = Buffer.alloc(16 * MiB, 0x55)
    const pre = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'raw' })}`, { body: old })
    assert.equal(pre.status, 200)
    await taskOutcome(String(pre.headers['task-id']))

    const data = sampleData()
    const before = daemon.requests().length
    const tasksBefore = new Set(await c<string[]>('task.get_all'))
    await xapi.VDI_importContent(vdi, streamOf(data, true), { format: 'raw' })
    const puts = daemon.requests().slice(before).filter((l) => l.startsWith('PUT /import_raw_vdi'))
    assert.equal(puts.length, 2, 'a probe, then the upload')

    const exported: Readable = await xapi.VDI_exportContent(vdi, { format: 'raw' })
    const chunks: Buffer[] = []
    for await (const chunk of exported) chunks.push(chunk as Buffer)
    const got = Buffer.concat(chunks)
    assert.equal(got.length, 32 * MiB)
    const expected = Buffer.concat([data, Buffer.alloc(32 * MiB - data.length)])
    assert.equal(sha(got), sha(expected))

    // No task of our own (the probe left none); XO's tasks all finished.
    const records = await c<Record<string, any>>('task.get_all_records')
    const mine = Object.entries(records).filter(([ref]) => !tasksBefore.has(ref))
    assert.ok(mine.every(([, t]) => !String(t.name_label).startsWith('VDI import')), 'the probe made no task')
    await waitFor('tasks finished', async () => Object.values(await c<Record<string, any>>('task.get_all_records')).every((t) => t.status !== 'pending'), 10_000)
    await waitFor('xo:import keys removed', async () => {
      const oc = await c<Record<string, string>>('VDI.get_other_config', vdi)
      return !Object.keys(oc).some((k) => k.startsWith('xo:import:'))
    }, 10_000)
    // Sparse: the zero hole and the untouched tail hold no data in the image.
    const uuid = await c<string>('VDI.get_uuid', vdi)
    const file = execFileSync('find', [join(daemon.dataDir, 'sr'), '-name', `${uuid}.qcow2`]).toString().trim()
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-U', '-f', 'qcow2', file]).toString()) as { length: number; data: boolean }[]
    const allocated = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0)
    assert.ok(allocated <= 11 * MiB + 64 * 1024, `only the data is allocated (${allocated} bytes)`)
    assert.deepEqual(readdirSync(dirname(file)).filter((n) => n.startsWith('.')), [], 'no temporary files left in the SR')
  })

  it('writes a raw import into a new VDI as a consistent, thin image of its own, and a short one leaves the VDI blank', async () => {
    const vdi = await newVdi(40 * MiB)
    const data = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(5 * MiB), randomBytes(MiB + 7)])
    const put = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'raw' })}`, { body: data })
    assert.equal((await taskOutcome(String(put.headers['task-id']))).status, 'success')
    const uuid = await c<string>('VDI.get_uuid', vdi)
    const file = execFileSync('find', [join(daemon.dataDir, 'sr'), '-name', `${uuid}.qcow2`]).toString().trim()
    execFileSync('qemu-img', ['check', '-q', '-U', '-f', 'qcow2', file])
    const got = await exportRaw(vdi)
    assert.equal(sha(got), sha(Buffer.concat([data, Buffer.alloc(40 * MiB - data.length)])))
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-U', '-f', 'qcow2', file]).toString()) as { length: number; data: boolean }[]
    const allocated = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0)
    assert.ok(allocated <= 4 * MiB + 64 * 1024, `only the data is allocated (${allocated} bytes)`)

    const blank = await newVdi(8 * MiB)
    const short = await http('PUT', `/import_raw_vdi${query({ vdi: blank, format: 'raw' })}`, { body: randomBytes(4 * MiB), headers: { 'content-length': 6 * MiB }, cutAfter: 4 * MiB })
    const outcome = await taskOutcome(String(short.headers['task-id']))
    assert.equal(outcome.error_info[0], 'VDI_IO_ERROR')
    assert.ok((await exportRaw(blank)).equals(Buffer.alloc(8 * MiB)), 'still blank')
    assert.deepEqual(readdirSync(dirname(file)).filter((n) => n.startsWith('.')), [], 'no temporary files left in the SR')
  })

  it('16: putResource of a stream without length resolves quickly and all data arrives', async () => {
    const vdi = await newVdi(16 * MiB)
    const data = Buffer.concat([randomBytes(6 * MiB), Buffer.alloc(2 * MiB), randomBytes(MiB + 5)])
    const start = Date.now()
    await xapi.putResource(streamOf(data, false), '/import_raw_vdi/', { query: { vdi, format: 'raw' } })
    assert.ok(Date.now() - start < 15_000, 'no 5-minute hang')
    const got = await exportRaw(vdi)
    assert.equal(sha(got.subarray(0, data.length)), sha(data))
    assert.ok(got.subarray(data.length).equals(Buffer.alloc(16 * MiB - data.length)))
  })

  it('imports and exports qcow2 (a standalone copy), by uuid, with its own task', async () => {
    const vdi = await newVdi(24 * MiB)
    const uuid = await c<string>('VDI.get_uuid', vdi)
    const data = Buffer.concat([randomBytes(5 * MiB), Buffer.alloc(7 * MiB), randomBytes(3 * MiB)])
    const rawFile = join(work, 'src.raw')
    const qcowFile = join(work, 'src.qcow2')
    writeFileSync(rawFile, data)
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawFile, qcowFile])
    const put = await http('PUT', `/import_raw_vdi${query({ vdi: uuid, format: 'qcow2' })}`, { body: readFileSync(qcowFile) })
    assert.equal(put.status, 200)
    const outcome = await taskOutcome(String(put.headers['task-id']))
    assert.equal(outcome.status, 'success', outcome.error_info?.join(' '))
    const raw = await exportRaw(vdi)
    assert.equal(raw.length, 24 * MiB)
    assert.equal(sha(raw.subarray(0, data.length)), sha(data))

    const get = await http('GET', `/export_raw_vdi${query({ vdi, format: 'qcow2' })}`)
    assert.equal(get.status, 200)
    assert.equal(get.headers['content-type'], 'application/x-qemu-disk')
    assert.equal(Number(get.headers['content-length']), get.body.length)
    assert.equal(get.body.subarray(0, 4).toString('latin1'), 'QFI\xfb')
    const back = join(work, 'back.qcow2')
    writeFileSync(back, get.body)
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', back]).toString())
    assert.equal(info['virtual-size'], 24 * MiB)
    assert.equal(info['backing-filename'], undefined)
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', back, join(work, 'back.raw')])
    assert.equal(sha(readFileSync(join(work, 'back.raw'))), sha(raw))
    const exportTask = String(get.headers['task-id'])
    assert.equal((await taskOutcome(exportTask)).status, 'success')
  })

  it('refuses a hostile qcow2 (backing file, external data file) and leaves the VDI unchanged', async () => {
    const vdi = await newVdi(8 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(2 * MiB) }).then((r) => taskOutcome(String(r.headers['task-id'])))
    const before = sha(await exportRaw(vdi))
    const hostile = join(work, 'hostile.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/shadow', '-F', 'raw', hostile, String(8 * MiB)])
    const task = await c<string>('task.create', 'hostile', '')
    const put = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'qcow2', task_id: task })}`, { body: readFileSync(hostile) })
    assert.equal(put.status, 200)
    const outcome = await taskOutcome(task)
    assert.equal(outcome.status, 'failure')
    assert.equal(outcome.error_info[0], 'VDI_IO_ERROR')
    assert.match(outcome.error_info[1]!, /backing file/)

    const dataFile = join(work, 'data.raw')
    const withData = join(work, 'datafile.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${dataFile},data_file_raw=on`, withData, String(8 * MiB)])
    const put2 = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'qcow2' })}`, { body: readFileSync(withData) })
    const outcome2 = await taskOutcome(String(put2.headers['task-id']))
    assert.equal(outcome2.status, 'failure')
    assert.match(outcome2.error_info.join(' '), /data file/)

    const notQcow = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'qcow2' })}`, { body: randomBytes(MiB) })
    assert.equal((await taskOutcome(String(notQcow.headers['task-id']))).error_info[0], 'VDI_IO_ERROR')

    const big = join(work, 'big.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', big, String(9 * MiB)])
    const put3 = await http('PUT', `/import_raw_vdi${query({ vdi, format: 'qcow2' })}`, { body: readFileSync(big) })
    assert.deepEqual((await taskOutcome(String(put3.headers['task-id']))).error_info, ['VDI_TOO_SMALL', vdi, String(9 * MiB)])
    assert.equal(sha(await exportRaw(vdi)), before)
  })

  it('refuses raw data larger than the VDI, announced or not, leaving the VDI unchanged', async () => {
    const vdi = await newVdi(4 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(MiB) }).then((r) => taskOutcome(String(r.headers['task-id'])))
    const before = sha(await exportRaw(vdi))
    const task = await c<string>('task.create', 'too big', '')
    const announced = await http('PUT', `/import_raw_vdi${query({ vdi, task_id: task })}`, { body: randomBytes(5 * MiB) })
    // 400, unless the connection closed under the body before its answer was read (status 0)
    assert.ok([400, 0].includes(announced.status), `status ${announced.status}`)
    assert.deepEqual((await taskOutcome(task)).error_info, ['VDI_TOO_SMALL', vdi, String(5 * MiB)])

    const unannounced = await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(5 * MiB), headers: { 'content-length': '1125899906842624' }, cutAfter: 5 * MiB })
    const outcome = await taskOutcome(String(unannounced.headers['task-id']))
    assert.equal(outcome.status, 'failure')
    assert.equal(outcome.error_info[0], 'VDI_IO_ERROR')
    assert.match(outcome.error_info[1]!, /larger than the VDI/)
    assert.equal(sha(await exportRaw(vdi)), before)
  })

  it('fails the task of a truncated upload and leaves the VDI unchanged', async () => {
    const vdi = await newVdi(16 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(3 * MiB) }).then((r) => taskOutcome(String(r.headers['task-id'])))
    const before = sha(await exportRaw(vdi))
    const task = await c<string>('task.create', 'truncated', '')
    const body = randomBytes(8 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi, task_id: task })}`, { body, headers: { 'content-length': body.length }, cutAfter: 3 * MiB })
    const outcome = await taskOutcome(task)
    assert.equal(outcome.status, 'failure')
    assert.equal(outcome.error_info[0], 'VDI_IO_ERROR')
    assert.match(outcome.error_info[1]!, /premature end of data: received \d+ of 8388608 bytes; the VDI was left unchanged/)
    assert.equal(sha(await exportRaw(vdi)), before)
  })

  it('answers a probe (empty PUT, no task_id) with 200 and no side effects, also with a 1 PiB length', async () => {
    const vdi = await newVdi(MiB)
    const tasks = (await c<string[]>('task.get_all')).length
    const probe = await http('PUT', `/import_raw_vdi/${query({ vdi, format: 'raw' })}`, { body: Buffer.alloc(0) })
    assert.equal(probe.status, 200)
    assert.equal(probe.headers['task-id'], undefined)
    const hack = await http('PUT', `/import_raw_vdi/${query({ vdi, format: 'raw' })}`, { body: Buffer.alloc(0), headers: { 'content-length': '1125899906842624' }, cutAfter: 0 })
    assert.equal(hack.status, 200)
    await new Promise((r) => setTimeout(r, 500))
    assert.equal((await c<string[]>('task.get_all')).length, tasks)
  })

  it('rejects bad sessions, unknown VDIs, unsupported formats and chunked uploads clearly', async () => {
    const vdi = await newVdi(MiB)
    const task = await c<string>('task.create', 'bad session', '')
    const bad = await http('PUT', `/import_raw_vdi?session_id=OpaqueRef:nope&vdi=${vdi}&task_id=${task}`, { body: Buffer.alloc(10) })
    assert.equal(bad.status, 401)
    assert.equal((await taskOutcome(task)).error_info[0], 'SESSION_AUTHENTICATION_FAILED')
    assert.equal((await http('GET', `/export_raw_vdi?vdi=${vdi}`)).status, 401)

    const task2 = await c<string>('task.create', 'unknown vdi', '')
    const unknown = await http('GET', `/export_raw_vdi${query({ vdi: 'OpaqueRef:00000000-0000-0000-0000-000000000001', task_id: task2 })}`)
    assert.equal(unknown.status, 404)
    assert.deepEqual((await taskOutcome(task2)).error_info, ['HANDLE_INVALID', 'VDI', 'OpaqueRef:00000000-0000-0000-0000-000000000001'])

    const tar = await http('GET', `/export_raw_vdi${query({ vdi, format: 'tar' })}`)
    assert.equal(tar.status, 501)
    assert.match(tar.body.toString(), /format=tar is not supported yet/)
    const rawDelta = await http('GET', `/export_raw_vdi${query({ vdi, base: vdi })}`)
    assert.equal(rawDelta.status, 501)
    assert.match(rawDelta.body.toString(), /base= needs format=vhd/)

    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request(`${daemon.url}/import_raw_vdi${query({ vdi })}`, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' } }, (res) => (res.resume(), resolve(res.statusCode ?? 0)))
      req.on('error', reject)
      req.end('abc')
    })
    assert.equal(chunked, 403)
  })

  it('exports stop the task when the client goes away midway', async () => {
    const vdi = await newVdi(64 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(64 * MiB) }).then((r) => taskOutcome(String(r.headers['task-id'])))
    const task = await c<string>('task.create', 'aborted export', '')
    await new Promise<void>((resolve, reject) => {
      const req = request(`${daemon.url}/export_raw_vdi${query({ vdi, task_id: task })}`, (res) => {
        res.once('data', () => (res.destroy(), resolve()))
      })
      req.on('error', reject)
      req.end()
    })
    const outcome = await taskOutcome(task)
    assert.equal(outcome.status, 'failure')
    assert.match(outcome.error_info.join(' '), /client closed the connection/)
  })

  it('a slow export does not hold up snapshots and merges of its SR, and reads the disk as it was', async () => {
    const vdi = await newVdi(64 * MiB)
    const before = randomBytes(64 * MiB)
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: before }).then((r) => taskOutcome(String(r.headers['task-id'])))
    const chunks: Buffer[] = []
    let resume!: () => void
    const exported = new Promise<Buffer>((resolve, reject) => {
      const req = request(`${daemon.url}/export_raw_vdi${query({ vdi })}`, (res) => {
        res.once('data', (d: Buffer) => {
          chunks.push(d)
          res.pause()
          resume = () => {
            res.on('data', (more: Buffer) => chunks.push(more))
            res.resume()
          }
        })
        res.on('end', () => resolve(Buffer.concat(chunks)))
      })
      req.on('error', reject)
      req.end()
    })
    await waitFor('the export to start', () => chunks.length > 0)
    // Meanwhile: a snapshot, new data in the disk, the snapshot deleted (its image merged away).
    const snap = await c<string>('VDI.snapshot', vdi, {})
    await http('PUT', `/import_raw_vdi${query({ vdi })}`, { body: randomBytes(64 * MiB) }).then((r) => taskOutcome(String(r.headers['task-id'])))
    await c('VDI.destroy', snap)
    await c('SR.scan', await c<string>('VDI.get_SR', vdi))
    const backingOf = async () => {
      const file = execFileSync('find', [join(daemon.dataDir, 'sr'), '-name', `${await c<string>('VDI.get_location', vdi)}.qcow2`]).toString().trim()
      return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file]).toString())['backing-filename'] as string | undefined
    }
    assert.ok(await backingOf(), 'the merge waits while the export reads')
    resume()
    assert.equal(sha(await exported), sha(before))
    await waitFor('the merge, once the export is done', async () => (await backingOf()) === undefined, 20_000)
  })

  it('refuses to import into the disk of a running VM (VDI_IN_USE)', async () => {
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c<string>('VM.clone', template!, 'raw-vdi in use')
    await c('VM.provision', vm)
    await c('VM.set_is_a_template', vm, false)
    const vbds = await c<string[]>('VM.get_VBDs', vm)
    const disk = (await Promise.all(vbds.map(async (v) => ((await c<string>('VBD.get_type', v)) === 'Disk' ? c<string>('VBD.get_VDI', v) : undefined)))).find(Boolean)!
    await c('VM.start', vm, true, false)
    try {
      const task = await c<string>('task.create', 'in use', '')
      const put = await http('PUT', `/import_raw_vdi${query({ vdi: disk, task_id: task })}`, { body: randomBytes(MiB) })
      assert.equal(put.status, 409)
      assert.deepEqual((await taskOutcome(task)).error_info, ['VDI_IN_USE', disk, 'import'])
    } finally {
      await c('VM.hard_shutdown', vm)
    }
  })
})
