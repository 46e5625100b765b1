// XVA export and import (/export, /import) against a real daemon: scenario 22 of
// reference/xo-compat.md §8 with Xen Orchestra's own client (plain, gzip, zstd, with and without
// length), an independent reader that checks every chunk of our export, archives from an
// independent writer (legacy SHA-1, a Ref:10 disk, XO-style tolerance), and bad archives that
// must fail their task and leave nothing behind.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { gunzipSync, gzipSync } from 'node:zlib'
import { after, before, describe, it } from 'node:test'
import tar from 'tar-stream'
import { request as undiciRequest } from 'undici'
import xxhash from 'xxhash-wasm'
import { call, Daemon, login, PASSWORD, waitFor } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'

const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => any }
const { h64Raw } = await xxhash()

const MiB = 1 << 20
const daemon = new Daemon()
let xapi: any
let session: string
let work: string
let vm: string
let sr: string
const loops: string[] = []

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const query = (q: Record<string, string>) => `?${new URLSearchParams({ session_id: session, ...q })}`

interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** A raw HTTP request: `body` is sent in full unless `cutAfter` bytes, after which the socket is destroyed. */
function http(method: string, path: string, opts: { body?: Buffer; headers?: Record<string, string | number>; cutAfter?: number; on?: Daemon } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(`${(opts.on ?? daemon).url}${path}`, { method, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    let answered: HttpAnswer | undefined
    req.on('response', (res) => (answered = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0) }))
    // The server may close the connection as soon as it knows the upload is bad.
    req.on('error', (err) => (answered ? resolve(answered) : reject(err)))
    if (opts.cutAfter !== undefined) {
      req.on('response', (res) => {
        req.write(opts.body!.subarray(0, opts.cutAfter), () => setTimeout(() => (req.destroy(), res.destroy(), resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0) })), 300))
      })
      req.flushHeaders()
    } else req.end(opts.body)
  })
}

async function taskOutcome(task: string): Promise<{ status: string; error_info: string[]; result: string }> {
  return waitFor(`task ${task}`, async () => {
    const rec = await c('task.get_record', task)
    return rec.status !== 'pending' && rec
  }, 60_000)
}

async function exportRaw(vdi: string): Promise<Buffer> {
  const r = await http('GET', `/export_raw_vdi${query({ vdi, format: 'raw' })}`)
  assert.equal(r.status, 200, r.body.toString())
  return r.body
}

/** The sha256 of each disk of a VM, by userdevice. */
async function diskSums(vmRef: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const vbd of await c<string[]>('VM.get_VBDs', vmRef)) {
    const rec = await c('VBD.get_record', vbd)
    if (rec.type === 'Disk') out[rec.userdevice] = sha(await exportRaw(rec.VDI))
  }
  return out
}

/** A PUT /import of `body` under a task of ours; its outcome. */
async function importBuffer(body: Buffer, q: Record<string, string> = {}, cutAfter?: number) {
  const task = await c<string>('task.create', 'xva test import', '')
  const r = await http('PUT', `/import${query({ task_id: task, ...q })}`, { body, cutAfter, headers: cutAfter === undefined ? { 'content-length': body.length } : { 'content-length': body.length } })
  assert.equal(r.status, 200, r.body.toString())
  return taskOutcome(task)
}

/** VMs, VDIs and the files of every SR directory: what a failed import must leave as it was. */
async function world(): Promise<string> {
  const vms = (await c<string[]>('VM.get_all')).sort()
  const vdis = (await c<string[]>('VDI.get_all')).sort()
  const networks = (await c<string[]>('network.get_all')).sort()
  const files: string[] = []
  for (const pbd of await c<string[]>('PBD.get_all')) {
    const path = (await c('PBD.get_device_config', pbd)).path as string
    if (path && existsSync(path)) files.push(...readdirSync(path).map((n) => `${path}/${n}`))
  }
  return JSON.stringify({ vms, vdis, networks, files: files.sort() })
}

/** The world is as it was (image files go with the SR's garbage collection, a moment after their records). */
async function unchanged(before: string, what: string): Promise<void> {
  await waitFor(what, async () => (await world()) === before, 20_000).catch(async () => assert.equal(await world(), before, what))
}

/** A minimal, independent tar reader: entries (name, type, data) and the archive's length facts. */
function readTar(buf: Buffer): { name: string; type: string; data: Buffer }[] {
  const out: { name: string; type: string; data: Buffer }[] = []
  let at = 0
  for (;;) {
    const h = buf.subarray(at, at + 512)
    if (h.length < 512) throw new Error('truncated tar')
    if (h.every((b) => b === 0)) break
    const name = h.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '')
    const size = parseInt(h.subarray(124, 136).toString('ascii').replace(/\0.*$/s, '').trim(), 8)
    let sum = 0
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!
    assert.equal(parseInt(h.subarray(148, 156).toString('ascii'), 8), sum, `header checksum of ${name}`)
    const type = String.fromCharCode(h[156]!)
    out.push({ name, type, data: buf.subarray(at + 512, at + 512 + size) })
    at += 512 + Math.ceil(size / 512) * 512
  }
  assert.ok(buf.length - at >= 1024 && buf.subarray(at).every((b) => b === 0), 'the archive ends with at least two zero blocks')
  return out
}

/** Checks an XVA the way an importer would, independently of our code; returns each disk's chunks by id. */
function verifyXva(buf: Buffer): { ova: string; disks: Map<string, { n: number; data: Buffer }[]> } {
  assert.equal(buf.length % 512, 0, 'tar size is a multiple of 512')
  const entries = readTar(buf)
  assert.equal(entries[0]!.name, 'ova.xml')
  const disks = new Map<string, { n: number; data: Buffer }[]>()
  for (let i = 1; i < entries.length; i += 2) {
    const data = entries[i]!
    const sum = entries[i + 1]!
    const m = /^(Ref:\d+)\/(\d{8})$/.exec(data.name)
    assert.ok(m, `chunk name ${data.name}`)
    assert.equal(data.type, '0')
    assert.equal(sum.name, `${data.name}.xxhash`)
    assert.equal(sum.data.toString(), h64Raw(data.data, 0n).toString(16).toUpperCase().padStart(16, '0'), `xxhash of ${data.name}`)
    assert.ok(data.data.length <= MiB)
    const list = disks.get(m[1]!) ?? []
    list.push({ n: Number(m[2]), data: data.data })
    disks.set(m[1]!, list)
  }
  return { ova: entries[0]!.data.toString(), disks }
}

/** A disk's content from its chunks (missing chunks are zeros). */
function assemble(chunks: { n: number; data: Buffer }[], size: number): Buffer {
  const out = Buffer.alloc(size)
  for (const ch of chunks) ch.data.copy(out, ch.n * MiB)
  return out
}

// ---- an independent XVA writer (tar-stream) ----

interface GenDisk {
  id: string
  data: Buffer
  checksum?: 'xxhash' | 'sha1' | 'none'
  corrupt?: number
}

function genOva(disks: { id: string; size: number }[], extra = ''): string {
  const vdis = disks.map((d, i) => `<value><struct><member><name>class</name><value>VDI</value></member><member><name>id</name><value>${d.id}</value></member><member><name>snapshot</name><value><struct>
    <member><name>uuid</name><value>00000000-0000-4000-8000-00000000000${i}</value></member><member><name>name_label</name><value>gen disk ${i}</value></member>
    <member><name>virtual_size</name><value>${d.size}</value></member><member><name>type</name><value>user</value></member><member><name>SR</name><value>Ref:99</value></member>
    <member><name>VBDs</name><value><array><data><value>Ref:${50 + i}</value></data></array></value></member><member><name>some_future_field</name><value>x</value></member>
  </struct></value></member></struct></value>
  <value><struct><member><name>class</name><value>VBD</value></member><member><name>id</name><value>Ref:${50 + i}</value></member><member><name>snapshot</name><value><struct>
    <member><name>VM</name><value>Ref:0</value></member><member><name>VDI</name><value>${d.id}</value></member><member><name>userdevice</name><value>${i}</value></member>
    <member><name>type</name><value>disk</value></member><member><name>mode</name><value>rw</value></member><member><name>bootable</name><value><boolean>${i === 0 ? 1 : 0}</boolean></value></member>
  </struct></value></member></struct></value>`)
  return `<value><struct><member><name>version</name><value><struct>
  <member><name>hostname</name><value>gen</value></member><member><name>date</name><value>2024-01-01</value></member><member><name>product_version</name><value>8.2.1</value></member>
  <member><name>product_brand</name><value>XCP-ng</value></member><member><name>build_number</name><value>gen</value></member>
  <member><name>xapi_major</name><value><i4>1</i4></value></member><member><name>xapi_minor</name><value><i4>20</i4></value></member><member><name>export_vsn</name><value><i4>2</i4></value></member>
</struct></value></member><member><name>objects</name><value><array><data>
  <value><struct><member><name>class</name><value>VM</value></member><member><name>id</name><value>Ref:0</value></member><member><name>snapshot</name><value><struct>
    <member><name>name_label</name><value>generated VM</value></member><member><name>power_state</name><value>halted</value></member>
    <member><name>memory_static_max</name><value>268435456</value></member><member><name>memory_dynamic_max</name><value>268435456</value></member>
    <member><name>memory_dynamic_min</name><value>268435456</value></member><member><name>memory_static_min</name><value>134217728</value></member>
    <member><name>VCPUs_max</name><value>1</value></member><member><name>VCPUs_at_startup</name><value>1</value></member><member><name>HVM_shadow_multiplier</name><value>1</value></member>
    <member><name>HVM_boot_params</name><value><struct><member><name>order</name><value>c</value></member></struct></value></member>
    <member><name>affinity</name><value>Ref:77</value></member><member><name>is_a_template</name><value><boolean>0</boolean></value></member>
    <member><name>other_config</name><value><struct><member><name>mac_seed</name><value>1a2b</value></member></struct></value></member>
  </struct></value></member></struct></value>
  ${vdis.join('\n')}
  <value><struct><member><name>class</name><value>VIF</value></member><member><name>id</name><value>Ref:70</value></member><member><name>snapshot</name><value><struct>
    <member><name>VM</name><value>Ref:0</value></member><member><name>network</name><value>Ref:71</value></member><member><name>device</name><value>0</value></member><member><name>MAC</name><value>aa:bb:cc:dd:ee:ff</value></member>
  </struct></value></member></struct></value>
  ${extra}
</data></array></value></member></struct></value>`
}

/** Packs an XVA the way XO's generator does (chunks of 1 MiB, first and last always, zero chunks skipped). */
async function genXva(ova: string, disks: GenDisk[], opts: { before?: (pack: tar.Pack) => void; skipOva?: boolean; hostile?: (pack: tar.Pack) => void } = {}): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer)
  })()
  const add = (name: string, data: Buffer | string) => new Promise<void>((res, rej) => pack.entry({ name, mtime: new Date(0) }, data, (e) => (e ? rej(e) : res())))
  opts.before?.(pack)
  if (!opts.skipOva) await add('ova.xml', ova)
  opts.hostile?.(pack)
  for (const d of disks) {
    const count = Math.ceil(d.data.length / MiB)
    for (let n = 0; n < count; n++) {
      const data = d.data.subarray(n * MiB, (n + 1) * MiB)
      if (n !== 0 && n !== count - 1 && data.every((b) => b === 0)) continue
      const name = `${d.id}/${String(n).padStart(8, '0')}`
      await add(name, data)
      let text = d.checksum === 'sha1' ? createHash('sha1').update(data).digest('hex') : h64Raw(data, 0n).toString(16).toUpperCase().padStart(16, '0')
      if (d.corrupt === n) text = text.replace(/^./, (ch) => (ch === '0' ? '1' : '0'))
      if (d.checksum !== 'none') await add(`${name}.${d.checksum === 'sha1' ? 'checksum' : 'xxhash'}`, text)
    }
  }
  pack.finalize()
  await done
  return Buffer.concat(chunks)
}

function pattern(size: number): Buffer {
  const b = Buffer.alloc(size)
  randomBytes(3 * MiB).copy(b, 0)
  randomBytes(MiB + 12345).copy(b, 7 * MiB + 100)
  if (size > 16 * MiB) randomBytes(2 * MiB).copy(b, size - 2 * MiB - 77)
  return b
}

describe('XVA export and import', () => {
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'xva-test-'))
    await daemon.start()
    if (process.env.XVA_TEST_LOG) setInterval(() => writeFileSync(process.env.XVA_TEST_LOG!, daemon.output), 500).unref()
    session = await login(daemon.url)
    xapi = new Xapi({ url: daemon.url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, callTimeout: 60e3, eventPollDelay: 1e3 })
    await xapi.connect()
    await xapi.objectsFetched
    const pool = (await c<string[]>('pool.get_all'))[0]
    sr = await c<string>('pool.get_default_SR', pool)
    const template = (await c<string[]>('VM.get_by_name_label', 'Flotilla test guest'))[0]
    vm = await c<string>('VM.clone', template, 'xva source')
    await c('VM.provision', vm)
    await c('VM.set_is_a_template', vm, false)
    // A second disk with known data, and a NIC.
    const data = await c<string>('VDI.create', { SR: sr, virtual_size: 20 * MiB, name_label: 'xva data', name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
    const put = await http('PUT', `/import_raw_vdi${query({ vdi: data, format: 'raw' })}`, { body: pattern(20 * MiB) })
    assert.equal((await taskOutcome(String(put.headers['task-id']))).status, 'success')
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', unpluggable: true, empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const network = (await c<string[]>('network.get_all'))[0]
    await c('VIF.create', { VM: vm, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await daemon.dispose()
    for (const dev of loops) execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
    rmSync(work, { recursive: true, force: true })
  })

  let plain: Buffer
  let sourceSums: Record<string, string>

  it('22: XO VM_export (no compression) writes a valid XVA whose every chunk checks out', async () => {
    sourceSums = await diskSums(vm)
    const res = await xapi.VM_export(vm, { compress: false })
    const chunks: Buffer[] = []
    for await (const ch of res.body) chunks.push(Buffer.from(ch))
    plain = Buffer.concat(chunks)
    const { ova, disks } = verifyXva(plain)
    assert.match(ova, /^<value><struct><member><name>version<\/name>/)
    assert.match(ova, /<name>xapi_major<\/name><value><i4>1<\/i4><\/value>/)
    assert.match(ova, /<name>xapi_minor<\/name><value><i4>20<\/i4><\/value>/)
    assert.match(ova, /<name>product_brand<\/name><value>XCP-ng<\/value>/)
    assert.ok(!ova.includes('OpaqueRef:') || !/OpaqueRef:[0-9a-f]{8}-/.test(ova), 'no live references leak into ova.xml')
    for (const cls of ['VM', 'VBD', 'VDI', 'VIF', 'network', 'SR']) assert.ok(ova.includes(`<name>class</name><value>${cls}</value>`), `ova.xml has a ${cls}`)
    assert.equal(disks.size, 2)
    // Python's tarfile reads it too.
    const file = join(work, 'plain.xva')
    writeFileSync(file, plain)
    const names = execFileSync('/usr/bin/python3', ['-c', 'import sys,tarfile; print("\\n".join(tarfile.open(sys.argv[1]).getnames()))', file]).toString().trim().split('\n')
    assert.equal(names[0], 'ova.xml')
    assert.equal(names.length, 1 + [...disks.values()].reduce((n, l) => n + 2 * l.length, 0))
    // The data disk's content from the archive equals the VDI's.
    const ids = [...disks.keys()].sort()
    const contents = ids.map((id) => disks.get(id)!)
    const twenty = contents.find((l) => l[l.length - 1]!.n === 19)!
    assert.equal(sha(assemble(twenty, 20 * MiB)), sourceSums['1'])
    // Zero chunks are skipped (except first and last).
    assert.ok(twenty.length < 20, `zero chunks skipped (${twenty.length} of 20)`)
  })

  /** A GET on a raw socket: the answer's head as sent, and the socket, paused, for the body. */
  async function rawGet(path: string): Promise<{ head: string; rest: Buffer; socket: Socket }> {
    const { hostname, port } = new URL(daemon.url)
    const socket = connect(Number(port), hostname)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`)
    // Not `for await`: leaving its loop would destroy the socket.
    return new Promise((resolve, reject) => {
      let received = Buffer.alloc(0)
      const onData = (chunk: Buffer) => {
        received = Buffer.concat([received, chunk])
        const end = received.indexOf('\r\n\r\n')
        if (end < 0) return
        socket.pause()
        socket.off('data', onData)
        resolve({ head: received.subarray(0, end).toString('latin1'), rest: received.subarray(end + 4), socket })
      }
      socket.on('data', onData)
      socket.once('error', reject)
      socket.once('end', () => reject(new Error(`no answer to GET ${path}`)))
    })
  }

  it('GET /export answers as xapi: HTTP/1.0 200, Connection: close, no length, the archive ends at the close', async () => {
    const { head, rest, socket } = await rawGet(`/export${query({ ref: vm })}`)
    const [status, ...lines] = head.split('\r\n')
    assert.equal(status, 'HTTP/1.0 200 OK')
    const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
    assert.equal(headers.get('connection'), 'close')
    assert.equal(headers.get('content-type'), 'application/octet-stream')
    assert.equal(headers.get('content-disposition'), 'attachment; filename="export.xva"')
    assert.match(headers.get('server') ?? '', /^xapi\/\d+\.\d+$/)
    assert.match(headers.get('task-id') ?? '', /^OpaqueRef:/)
    assert.ok(!headers.has('content-length') && !headers.has('transfer-encoding'), head)
    const chunks = [rest]
    socket.resume()
    for await (const chunk of socket) chunks.push(chunk as Buffer)
    assert.equal(verifyXva(Buffer.concat(chunks)).disks.size, 2)
    assert.equal((await taskOutcome(headers.get('task-id')!)).status, 'success')
    // What XO's HTTP client (undici) makes of it: the whole archive.
    const answer = await undiciRequest(`${daemon.url}/export${query({ ref: vm })}`)
    assert.equal(answer.statusCode, 200)
    assert.equal(verifyXva(Buffer.from(await answer.body.arrayBuffer())).disks.size, 2)
  })

  it('an export whose client goes away releases the VM at once and fails its task', async () => {
    const { head, socket } = await rawGet(`/export${query({ ref: vm })}`)
    const task = /^task-id: (\S+)$/im.exec(head)![1]
    // The client stops reading (the export blocks on a full socket), then vanishes.
    await new Promise((r) => setTimeout(r, 500))
    assert.deepEqual(Object.values(await c('VM.get_current_operations', vm)), ['export'])
    socket.destroy()
    await waitFor('the export to release the VM', async () => Object.keys(await c('VM.get_current_operations', vm)).length === 0, 10_000)
    assert.equal((await taskOutcome(task)).status, 'failure')
    const snapshot = await c<string>('VM.snapshot', vm, 'after a broken export')
    const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snapshot)).map((vbd) => c<string>('VBD.get_VDI', vbd)))
    await c('VM.destroy', snapshot)
    for (const vdi of vdis) if (vdi !== 'OpaqueRef:NULL') await c('VDI.destroy', vdi)
  })

  it('22: XO VM_import of that archive, with and without length, gives an equivalent VM with the same disks', async () => {
    const src = await c('VM.get_record', vm)
    for (const withLength of [true, false]) {
      const stream = Readable.from([plain])
      if (withLength) Object.assign(stream, { length: plain.length })
      const ref = await xapi.VM_import(stream, sr)
      assert.match(ref, /^OpaqueRef:[0-9a-f-]+$/)
      const rec = await c('VM.get_record', ref)
      assert.equal(rec.name_label, src.name_label)
      assert.notEqual(rec.uuid, src.uuid)
      assert.equal(rec.power_state, 'Halted')
      assert.equal(rec.memory_static_max, src.memory_static_max)
      assert.equal(rec.VCPUs_max, src.VCPUs_max)
      assert.deepEqual(rec.HVM_boot_params, src.HVM_boot_params)
      assert.deepEqual(rec.platform, src.platform)
      assert.equal(rec.VBDs.length, src.VBDs.length)
      assert.equal(rec.VIFs.length, 1)
      assert.notEqual(rec.other_config.mac_seed, src.other_config.mac_seed)
      assert.equal(rec.other_config.import_task, undefined)
      assert.deepEqual(rec.current_operations, {})
      assert.ok(rec.allowed_operations.includes('start'))
      const mac = await c<string>('VIF.get_MAC', rec.VIFs[0])
      assert.notEqual(mac, await c<string>('VIF.get_MAC', src.VIFs[0]))
      assert.deepEqual(await diskSums(ref), sourceSums)
    }
  })

  it('22: zstd and gzip exports round-trip through XO', async () => {
    for (const compress of ['gzip', 'zstd'] as const) {
      const res = await xapi.VM_export(vm, { compress })
      const chunks: Buffer[] = []
      for await (const ch of res.body) chunks.push(Buffer.from(ch))
      const buf = Buffer.concat(chunks)
      if (compress === 'gzip') {
        assert.deepEqual([...buf.subarray(0, 2)], [0x1f, 0x8b])
        verifyXva(gunzipSync(buf))
      } else {
        assert.equal(buf.readUInt32BE(0), 0x28b52ffd)
        const file = join(work, 'x.xva.zst')
        writeFileSync(file, buf)
        verifyXva(execFileSync('zstd', ['-d', '-c', '-q', file], { maxBuffer: 1 << 30 }))
      }
      const ref = await xapi.VM_import(Readable.from([buf]), sr)
      assert.deepEqual(await diskSums(ref), sourceSums)
    }
  })

  it('restore=true keeps the VM uuid and MACs; the default renews them', async () => {
    const src = await c('VM.get_record', vm)
    const mac = await c<string>('VIF.get_MAC', src.VIFs[0])
    const copy = await c<string>('VM.clone', vm, 'to restore')
    const exp = await http('GET', `/export${query({ ref: copy })}`)
    assert.equal(exp.status, 200)
    // The VM stays locked (current_operations: export) until the export's task is done.
    assert.equal((await taskOutcome(String(exp.headers['task-id']))).status, 'success')
    const copyRec = await c('VM.get_record', copy)
    const copyMac = await c<string>('VIF.get_MAC', copyRec.VIFs[0])
    await c('VM.destroy', copy)
    const outcome = await importBuffer(exp.body, { restore: 'true', sr_id: sr })
    assert.equal(outcome.status, 'success', outcome.error_info?.join(' '))
    const ref = /OpaqueRef:[0-9a-f-]+/.exec(outcome.result)![0]
    assert.match(outcome.result, /^<value><array><data><value>OpaqueRef:[0-9a-f-]+<\/value><\/data><\/array><\/value>$/)
    const rec = await c('VM.get_record', ref)
    assert.equal(rec.uuid, copyRec.uuid)
    assert.equal(await c<string>('VIF.get_MAC', rec.VIFs[0]), copyMac)
    assert.notEqual(copyMac, mac)
  })

  it('refuses to export a running VM (VM_BAD_POWER_STATE) and exports a snapshot', async () => {
    const running = await c<string>('VM.clone', vm, 'xva running')
    await c('VM.start', running, false, false)
    const task = await c<string>('task.create', 'export running', '')
    const r = await http('GET', `/export${query({ ref: running, task_id: task })}`)
    assert.notEqual(r.status, 200)
    const outcome = await taskOutcome(task)
    assert.equal(outcome.status, 'failure')
    assert.equal(outcome.error_info[0], 'VM_BAD_POWER_STATE')
    const snapshot = await c<string>('VM.snapshot', running, 'xva snap')
    await c('VM.hard_shutdown', running)
    assert.equal(await c('VM.get_is_a_snapshot', snapshot), true)
    const exp = await http('GET', `/export${query({ uuid: await c<string>('VM.get_uuid', snapshot) })}`)
    assert.equal(exp.status, 200)
    const { ova } = verifyXva(exp.body)
    assert.match(ova, /<name>is_a_snapshot<\/name><value><boolean>0<\/boolean><\/value>/)
    const outcome2 = await importBuffer(exp.body)
    assert.equal(outcome2.status, 'success', outcome2.error_info?.join(' '))
    const ref = /OpaqueRef:[0-9a-f-]+/.exec(outcome2.result)![0]
    assert.equal(await c('VM.get_is_a_snapshot', ref), false)
    const snapSums = await diskSums(snapshot)
    assert.deepEqual(await diskSums(ref), snapSums)
  })

  it('a checkpoint exported with preserve_power_state comes back Suspended on a fresh host and resumes where it was', async () => {
    const guest = await newGuest(daemon.url, session, 'xva checkpoint')
    await c('VM.start', guest.ref, false, false)
    const ticks = (d: Daemon, uuid: string) => [...d.serial(uuid).matchAll(/FLOTILLA tick=(\d+)/g)].map((m) => Number(m[1]))
    await waitFor('ticks', () => ticks(daemon, guest.uuid).length >= 3)
    const checkpoint = await c<string>('VM.checkpoint', guest.ref, 'xva cp')
    const atCheckpoint = Math.max(...ticks(daemon, guest.uuid))
    await c('VM.hard_shutdown', guest.ref)
    const memory = await c<string>('VM.get_suspend_VDI', checkpoint)

    // Without preserve_power_state the memory stays home.
    const plainXva = verifyXva((await http('GET', `/export${query({ ref: checkpoint })}`)).body)
    assert.match(plainXva.ova, /<name>power_state<\/name><value>Halted<\/value>/)
    const exp = await http('GET', `/export${query({ ref: checkpoint, preserve_power_state: 'true' })}`)
    assert.equal(exp.status, 200)
    const { ova, disks } = verifyXva(exp.body)
    assert.match(ova, /<name>power_state<\/name><value>Suspended<\/value>/)
    assert.equal(disks.size, plainXva.disks.size + 1, 'the memory image is one more disk')
    const memoryId = /<name>suspend_VDI<\/name><value>(Ref:\d+)<\/value>/.exec(ova)?.[1]
    assert.ok(memoryId && disks.has(memoryId), 'suspend_VDI names a disk of the archive')
    const image = disks.get(memoryId)!
    const saved = readFileSync(execFileSync('find', [join(daemon.dataDir, 'sr'), '-name', `${await c<string>('VDI.get_location', memory)}.raw`]).toString().trim())
    const carried = assemble(image, Number(await c('VDI.get_virtual_size', memory)))
    assert.ok(carried.subarray(0, saved.length).equals(saved) && !carried.subarray(saved.length).some((b) => b !== 0), 'the archive carries the memory image as it is')

    const fresh = new Daemon()
    try {
      await fresh.start()
      const freshSession = await login(fresh.url)
      const f = <T = any>(method: string, ...params: unknown[]) => call<T>(fresh.url, method, freshSession, ...params)
      const put = await http('PUT', `/import?session_id=${freshSession}`, { on: fresh, body: exp.body, headers: { 'content-length': exp.body.length } })
      const outcome = await waitFor('the import', async () => {
        const t = await f('task.get_record', String(put.headers['task-id']))
        return t.status !== 'pending' && t
      }, 60_000)
      assert.equal(outcome.status, 'success', outcome.error_info?.join(' '))
      const ref = /OpaqueRef:[0-9a-f-]+/.exec(outcome.result)![0]
      const vm = await f('VM.get_record', ref)
      assert.equal(vm.power_state, 'Suspended')
      assert.equal(vm.is_a_template, false)
      assert.equal(vm.is_a_snapshot, false)
      assert.equal(await f('VDI.get_type', vm.suspend_VDI), 'suspend')
      await f('VM.resume', ref, false, false)
      await waitFor('ticks after resume', () => ticks(fresh, vm.uuid).length > 0)
      const first = ticks(fresh, vm.uuid)[0]!
      assert.ok(first >= atCheckpoint && first <= atCheckpoint + 2, `the counter goes on from the checkpoint (${atCheckpoint}), got ${first}`)
      assert.ok(!fresh.serial(vm.uuid).includes('FLOTILLA-GUEST boot'), 'no reboot')
      assert.equal(await f('VM.get_suspend_VDI', ref), 'OpaqueRef:NULL')
      await f('VM.hard_shutdown', ref)
    } finally {
      await fresh.dispose()
    }
  })

  it('imports archives of an independent writer: legacy SHA-1 checksums, a Ref:10 disk, XO-style records', async () => {
    const a = pattern(20 * MiB)
    const b = Buffer.concat([randomBytes(MiB + 3), Buffer.alloc(3 * MiB - 3)])
    // Ref:10 sorts before Ref:9: the writer streams it first, as xapi does.
    const ova = genOva([{ id: 'Ref:10', size: a.length }, { id: 'Ref:9', size: b.length }])
    for (const checksum of ['sha1', 'xxhash'] as const) {
      const buf = await genXva(ova, [{ id: 'Ref:10', data: a, checksum }, { id: 'Ref:9', data: b, checksum }])
      const outcome = await importBuffer(buf)
      assert.equal(outcome.status, 'success', outcome.error_info?.join(' '))
      const ref = /OpaqueRef:[0-9a-f-]+/.exec(outcome.result)![0]
      const rec = await c('VM.get_record', ref)
      assert.equal(rec.name_label, 'generated VM')
      assert.equal(rec.HVM_shadow_multiplier, 1)
      assert.equal(rec.affinity, 'OpaqueRef:NULL')
      assert.notEqual(rec.other_config.mac_seed, '1a2b')
      assert.equal(rec.VIFs.length, 0, 'a VIF whose network is not in the archive is dropped')
      const sums = await diskSums(ref)
      assert.deepEqual(sums, { '0': sha(a), '1': sha(b) })
    }
    // gzip-compressed, sniffed by magic bytes.
    const gz = gzipSync(await genXva(ova, [{ id: 'Ref:10', data: a }, { id: 'Ref:9', data: b }]))
    assert.equal((await importBuffer(gz)).status, 'success')
  })

  it('bad archives fail the task and leave no VM, VDI or file behind', async () => {
    const a = pattern(20 * MiB)
    const ova = genOva([{ id: 'Ref:1', size: a.length }])
    const good = await genXva(ova, [{ id: 'Ref:1', data: a }])
    const cases: { what: string; body: Promise<Buffer> | Buffer; code: RegExp; cutAfter?: number; q?: Record<string, string> }[] = [
      { what: 'corrupt checksum', body: genXva(ova, [{ id: 'Ref:1', data: a, corrupt: 7 }]), code: /^IMPORT_ERROR_SOME_CHECKSUMS_FAILED$/ },
      { what: 'truncated upload', body: good, cutAfter: Math.floor(good.length / 2), code: /^IMPORT_ERROR_PREMATURE_EOF$/ },
      { what: 'truncated archive (announced length)', body: good.subarray(0, good.length - 3 * 512 - 1024), code: /^IMPORT_ERROR_PREMATURE_EOF$/ },
      { what: '../ entry', body: genXva(ova, [{ id: 'Ref:1', data: a }], { hostile: (p) => p.entry({ name: '../../../tmp/evil' }, 'x') }), code: /^IMPORT_ERROR/ },
      { what: 'absolute path', body: genXva(ova, [{ id: 'Ref:1', data: a }], { hostile: (p) => p.entry({ name: '/tmp/evil' }, 'x') }), code: /^IMPORT_ERROR/ },
      { what: 'symlink', body: genXva(ova, [{ id: 'Ref:1', data: a }], { hostile: (p) => p.entry({ name: 'Ref:1/00000000', type: 'symlink', linkname: '/etc/shadow' }) }), code: /^IMPORT_ERROR/ },
      { what: 'unknown Ref', body: genXva(ova, [{ id: 'Ref:1', data: a }, { id: 'Ref:5', data: Buffer.alloc(MiB, 1) }]), code: /^IMPORT_ERROR_FAILED_TO_FIND_OBJECT$/ },
      { what: 'missing ova.xml', body: genXva(ova, [{ id: 'Ref:1', data: a }], { skipOva: true }), code: /^IMPORT_ERROR_UNEXPECTED_FILE$/ },
      { what: 'not XML', body: genXva('<value><struct>', [{ id: 'Ref:1', data: a }]), code: /^IMPORT_ERROR$/ },
      { what: 'garbage', body: randomBytes(100_000), code: /^IMPORT_ERROR/ },
    ]
    for (const t of cases) {
      const before = await world()
      const body = await t.body
      const outcome = await importBuffer(body, t.q, t.cutAfter)
      assert.equal(outcome.status, 'failure', t.what)
      assert.match(outcome.error_info[0]!, t.code, `${t.what}: ${outcome.error_info.join(' ')}`)
      await unchanged(before, `${t.what}: nothing left behind`)
    }
    assert.ok(!existsSync('/tmp/evil'))
    // An oversize entry is refused from its header, before its data is read.
    const before = await world()
    const huge = Buffer.concat([await genXva(ova, [], {}).then((b) => b.subarray(0, b.length - 1024)), Buffer.from(tarHeaderOf('Ref:1/00000000', 200 * MiB))])
    const outcome = await importBuffer(huge)
    assert.equal(outcome.status, 'failure')
    await unchanged(before, 'oversize entry: nothing left behind')
  })

  it('SR too small: SR_FULL, and nothing left behind', async () => {
    const file = join(work, 'small.img')
    execFileSync('truncate', ['-s', `${24 * MiB}`, file])
    const dev = execFileSync('losetup', ['-f', '--show', file]).toString().trim()
    loops.push(dev)
    const host = (await c<string[]>('host.get_all'))[0]
    const small = await c<string>('SR.create', host, { device: dev }, 0, 'small', '', 'ext', 'user', false, {})
    try {
      const big = Buffer.concat([randomBytes(40 * MiB), Buffer.alloc(8 * MiB)])
      const ova = genOva([{ id: 'Ref:1', size: big.length }])
      const buf = await genXva(ova, [{ id: 'Ref:1', data: big }])
      const before = await world()
      const outcome = await importBuffer(buf, { sr_id: small })
      assert.equal(outcome.status, 'failure')
      assert.equal(outcome.error_info[0], 'SR_FULL', outcome.error_info.join(' '))
      await unchanged(before, 'SR_FULL: nothing left behind')
    } finally {
      await c('SR.destroy', small).catch(() => undefined)
    }
  })

  it('without sr_id and no default SR: DEFAULT_SR_NOT_FOUND', async () => {
    const pool = (await c<string[]>('pool.get_all'))[0]
    await c('pool.set_default_SR', pool, 'OpaqueRef:NULL')
    try {
      const task = await c<string>('task.create', 'no sr', '')
      const r = await http('PUT', `/import${query({ task_id: task })}`, { body: plain })
      assert.notEqual(r.status, 200)
      const outcome = await taskOutcome(task)
      assert.equal(outcome.error_info[0], 'DEFAULT_SR_NOT_FOUND')
    } finally {
      await c('pool.set_default_SR', pool, sr)
    }
  })
})

function tarHeaderOf(name: string, size: number): Buffer {
  const h = Buffer.alloc(512)
  h.write(name, 0)
  h.write('0000644\0', 100)
  h.write('0000000\0', 108)
  h.write('0000000\0', 116)
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124)
  h.write('00000000000\0', 136)
  h.fill(32, 148, 156)
  h[156] = 48
  h.write('ustar\0', 257)
  h.write('00', 263)
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148)
  return h
}
