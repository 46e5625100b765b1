// XVA export/import throughput on a real daemon, against `qemu-img convert` of the same disk to
// and from raw in the same run (for the import, also with `-t writeback`: like an import, it then
// ends with its data on disk), plus zstd, the export of a 100 GiB thin disk holding 1 GiB, curl's
// own floor each way, and the daemon's peak RSS during the import. It only prints figures; it
// never fails on them.
//
//   npm run bench:xva   (BENCH_XVA_GIB=4 for the 4 GiB disk, default 1 GiB, half random; BENCH_XVA_ROUNDS, default 3)
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { call, Daemon, login, waitFor } from '../test/helpers/daemon.js'

const run = promisify(execFile)
const GiB = 2 ** 30
const MiB = 2 ** 20
const SIZE = Number(process.env.BENCH_XVA_GIB ?? 1) * GiB
const ROUNDS = Number(process.env.BENCH_XVA_ROUNDS ?? 3)
const daemon = new Daemon()
let session = ''
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const q = (o: Record<string, string>) => `?${new URLSearchParams({ session_id: session, ...o })}`
const rate = (bytes: number, ms: number) => `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`

function randomStream(bytes: number): Readable {
  let left = bytes
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null)
      const n = Math.min(4 * MiB, left)
      left -= n
      this.push(randomBytes(n))
    },
  })
}

/** An upload with curl, as a user sends one (Node's own file streams would be the slowest part). */
async function upload(path: string, file: string): Promise<string> {
  const { stdout } = await run('curl', ['-sS', '-o', '/dev/null', '-D', '-', '-T', file, `${daemon.url}${path}`])
  return /^task-id: (\S+)/im.exec(stdout)![1]!
}

function put(path: string, body: Readable, length: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(`${daemon.url}${path}`, { method: 'PUT', headers: { 'content-length': length } }, (res) => {
      res.resume()
      resolve(String(res.headers['task-id']))
    })
    req.on('error', reject)
    body.pipe(req)
  })
}

async function done(task: string): Promise<Record<string, any>> {
  return waitFor(`task ${task}`, async () => {
    const t = await c('task.get_record', task)
    return t.status !== 'pending' && t
  }, 3600_000)
}

/** A download with curl, as a user makes one. */
async function download(path: string, file: string): Promise<void> {
  await run('curl', ['-sS', '--fail', '-o', file, `${daemon.url}${path}`])
}

async function vmWithDisk(size: number, data: number): Promise<{ vm: string; vdi: string; file: string }> {
  const sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: size, name_label: 'bench', name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
  const task = await put(`/import_raw_vdi${q({ vdi, format: 'raw' })}`, randomStream(data), data)
  await done(task)
  const vm = await c<string>('VM.create', { name_label: 'xva bench', memory_static_max: 2 ** 28, memory_dynamic_max: 2 ** 28, memory_dynamic_min: 2 ** 28, memory_static_min: 2 ** 27, VCPUs_max: 1, VCPUs_at_startup: 1, HVM_boot_params: { order: 'c' }, other_config: {} })
  await c('VBD.create', { VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', unpluggable: false, empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  const uuid = await c<string>('VDI.get_uuid', vdi)
  const file = execFileSync('find', [join(daemon.dataDir, 'sr'), '-name', `${uuid}.qcow2`]).toString().trim()
  return { vm, vdi, file }
}

/** CPU time (user + system) of a process's main thread so far, in ms (clock ticks of 10 ms). */
function mainThreadCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/**
 * A server that sends `bytes` of a prebuilt buffer and does nothing else: what curl alone costs
 * to take that many bytes into a file, the floor of any export to it.
 */
async function idealServer(bytes: number): Promise<{ url: string; close: () => void }> {
  const block = randomBytes(MiB)
  const server = createServer(async (_req, res) => {
    res.writeHead(200, { 'content-length': bytes })
    for (let sent = 0; sent < bytes; sent += MiB) if (!res.write(block)) await new Promise((r) => res.once('drain', r))
    res.end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, close: () => server.close() }
}

/** A server that reads uploads and drops them: what curl alone costs to send an archive, the floor of any import of it. */
async function dropServer(): Promise<{ url: string; close: () => void }> {
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => res.end())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, close: () => server.close() }
}

/** Removes an imported VM and its disks (the rounds would fill the SR otherwise). */
async function destroyImported(vm: string): Promise<void> {
  const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', vm)).map((vbd) => c<string>('VBD.get_VDI', vbd)))
  await c('VM.destroy', vm)
  for (const vdi of vdis) if (vdi !== 'OpaqueRef:NULL') await c('VDI.destroy', vdi)
}

/**
 * Makes free memory ready to use. This machine hands free memory back to its host within seconds
 * (free page reporting); the first write to such a page then costs about 5x more kernel time
 * (2 GiB into a file: 3.1 s of system time instead of 0.65 s). Touching and freeing more than
 * the next step will use puts every step, baseline or ours, on the same footing.
 */
function warmMemory(): void {
  const scratch = join(mem, 'warm')
  execFileSync('dd', ['if=/dev/zero', `of=${scratch}`, 'bs=1M', `count=${Math.ceil((SIZE * 0.75 + 512 * MiB) / MiB)}`, 'status=none'])
  rmSync(scratch)
}

/** Times `fn`, starting with no dirty pages left by the step before (their writeback would land on this one) and warm free memory. */
function time<T>(fn: () => Promise<T>): Promise<[T, number]> {
  execFileSync('sync')
  warmMemory()
  const t0 = performance.now()
  return fn().then((v) => [v, performance.now() - t0])
}

const work = mkdtempSync(join(tmpdir(), 'xva-bench-'))
// Archives and raw copies live in memory (/dev/shm) when it exists: writing them to this disk
// varies from 0.4 s to 5 s per GiB here, which would swamp both sides' figures. The SR and the
// qemu-img qcow2 outputs stay on disk, alike.
const mem = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/xva-bench-') : work
try {
  await daemon.start()
  session = await login(daemon.url)
  const data = SIZE / 2
  console.log(`disk: ${SIZE / GiB} GiB qcow2, first half random (${data / MiB} MiB of data)`)
  const { vm, file } = await vmWithDisk(SIZE, data)

  // Rounds alternate the baselines and ours; medians are printed (this machine is noisy).
  const xva = join(mem, 'vm.xva')
  const zst = join(mem, 'vm.xva.zst')
  const m: Record<'rawOut' | 'rawIn' | 'rawInSynced' | 'exportMs' | 'exportNullMs' | 'idealMs' | 'zstdMs' | 'importMs' | 'importMainMs' | 'importZMs' | 'dropMs', number[]> = { rawOut: [], rawIn: [], rawInSynced: [], exportMs: [], exportNullMs: [], idealMs: [], zstdMs: [], importMs: [], importMainMs: [], importZMs: [], dropMs: [] }
  const ideal = await idealServer(data)
  const drop = await dropServer()
  const outcomes: string[] = []
  const pid = daemon.child.pid!
  for (let round = 0; round < ROUNDS; round++) {
    rmSync(join(mem, 'disk.raw'), { force: true })
    m.rawOut.push((await time(async () => execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, join(mem, 'disk.raw')])))[1])
    m.exportMs.push((await time(() => download(`/export${q({ ref: vm })}`, xva)))[1])
    rmSync(join(mem, 'ideal.out'), { force: true })
    m.idealMs.push((await time(async () => run('curl', ['-sS', '--fail', '-o', join(mem, 'ideal.out'), ideal.url])))[1])
    rmSync(join(mem, 'ideal.out'), { force: true })
    m.exportNullMs.push((await time(() => download(`/export${q({ ref: vm })}`, '/dev/null')))[1])
    m.zstdMs.push((await time(() => download(`/export${q({ ref: vm, use_compression: 'zstd' })}`, zst)))[1])
    rmSync(join(work, 'back.qcow2'), { force: true })
    m.rawIn.push((await time(async () => execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(mem, 'disk.raw'), join(work, 'back.qcow2')])))[1])
    rmSync(join(work, 'back.qcow2'), { force: true })
    m.rawInSynced.push((await time(async () => execFileSync('qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'qcow2', join(mem, 'disk.raw'), join(work, 'back.qcow2')])))[1])
    m.dropMs.push((await time(() => run('curl', ['-sS', '--fail', '-o', '/dev/null', '-T', xva, drop.url])))[1])
    for (const [archive, into] of [[xva, m.importMs], [zst, m.importZMs]] as const) {
      const busy = mainThreadCpuMs(pid)
      const [outcome, ms] = await time(async () => done(await upload(`/import${q({})}`, archive)))
      into.push(ms)
      if (archive === xva) m.importMainMs.push(mainThreadCpuMs(pid) - busy)
      outcomes.push(String(outcome.status))
      if (outcome.status === 'success') await destroyImported(/OpaqueRef:[0-9a-f-]+/.exec(String(outcome.result))![0])
    }
  }
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  ideal.close()
  drop.close()
  const [rawOut, rawIn, rawInSynced, exportMs, exportNullMs, idealMs, zstdMs, importMs, importMainMs, importZMs, dropMs] = [m.rawOut, m.rawIn, m.rawInSynced, m.exportMs, m.exportNullMs, m.idealMs, m.zstdMs, m.importMs, m.importMainMs, m.importZMs, m.dropMs].map(median) as number[]
  const xvaSize = statSync(xva).size
  const zstdSize = statSync(zst).size

  console.log(`medians of ${ROUNDS} rounds; imports: ${outcomes.join(', ')}`)
  console.log(`export (tar, none):  ${(exportMs / 1000).toFixed(2)} s  ${rate(data, exportMs)} of data  (archive ${(xvaSize / MiB).toFixed(0)} MiB)`)
  console.log(`  baseline qemu-img convert qcow2 -> raw: ${(rawOut / 1000).toFixed(2)} s  ${rate(data, rawOut)} of data; throughput ratio ${(rawOut / exportMs).toFixed(2)} (aim >= 0.8)`)
  console.log(`  the same export into /dev/null (what the daemon delivers, without curl's small writes into memory): ${(exportNullMs / 1000).toFixed(2)} s  ${rate(data, exportNullMs)} of data; ratio to the baseline ${(rawOut / exportNullMs).toFixed(2)}`)
  console.log(`  curl taking the same bytes into memory from a server that only sends a prebuilt buffer: ${(idealMs / 1000).toFixed(2)} s  ${rate(data, idealMs)}`)
  console.log(`export (zstd):       ${(zstdMs / 1000).toFixed(2)} s  ${rate(data, zstdMs)} of data  (archive ${(zstdSize / MiB).toFixed(0)} MiB)`)
  console.log(`import (tar, none):  ${(importMs / 1000).toFixed(2)} s  ${rate(data, importMs)} of data`)
  console.log(`  baseline qemu-img convert -t writeback raw -> qcow2 (ends with its data on disk, as an import must): ${(rawInSynced / 1000).toFixed(2)} s  ${rate(data, rawInSynced)} of data; throughput ratio ${(rawInSynced / importMs).toFixed(2)} (aim >= 0.8)`)
  console.log(`  qemu-img convert's default (cache=unsafe: no flush, the data still in memory when it ends): ${(rawIn / 1000).toFixed(2)} s  ${rate(data, rawIn)} of data; ratio ${(rawIn / importMs).toFixed(2)}`)
  console.log(`  curl sending the same archive to a server that only drops it: ${(dropMs / 1000).toFixed(2)} s  ${rate(data, dropMs)}`)
  console.log(`  the daemon's main thread was busy ${(importMainMs / 1000).toFixed(2)} s of it (CPU time: parsing, copying, hashing, and the loopback TCP work the kernel does on its reads)`)
  console.log(`import (zstd):       ${(importZMs / 1000).toFixed(2)} s  ${rate(data, importZMs)} of data`)
  console.log(`daemon peak RSS (VmHWM) after the imports: ${hwm ? (Number(hwm) / 1024).toFixed(0) : '?'} MiB`)

  // A 100 GiB thin disk with 1 GiB of data: the export reads only allocated extents. Into
  // /dev/null, as what is measured is the daemon's reading; medians, alternating.
  const thin = await vmWithDisk(100 * GiB, GiB)
  const small = await vmWithDisk(GiB, GiB)
  const thinMs: number[] = []
  const smallMs: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    thinMs.push((await time(() => download(`/export${q({ ref: thin.vm })}`, '/dev/null')))[1])
    smallMs.push((await time(() => download(`/export${q({ ref: small.vm })}`, '/dev/null')))[1])
  }
  const [thinMedian, smallMedian] = [median(thinMs), median(smallMs)]
  console.log(`export of a 100 GiB thin disk holding 1 GiB: ${(thinMedian / 1000).toFixed(2)} s; of a full 1 GiB disk: ${(smallMedian / 1000).toFixed(2)} s; time ratio ${(thinMedian / smallMedian).toFixed(2)} (aim <= 2)`)
} finally {
  await daemon.dispose()
  rmSync(work, { recursive: true, force: true })
  rmSync(mem, { recursive: true, force: true })
}
