// Snapshot figures: VM.snapshot on a 1 GiB and on a 4 TiB thin disk (the ratio should be ≈ 1:
// time independent of size), VM.checkpoint of a running 256 MiB guest, VM.revert, and the
// compaction of a chain of 10 snapshots against `qemu-img commit` of the same chain.
//
//   npm run bench:snapshot
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { call, Daemon, login, waitFor } from '../test/helpers/daemon.js'

const MiB = 2 ** 20
const LAYERS = 10
const LAYER_BYTES = 64 * MiB
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const timed = async (fn: () => Promise<unknown>) => {
  const t = performance.now()
  await fn()
  return performance.now() - t
}

const daemon = new Daemon()
const scratch = mkdtempSync(join(tmpdir(), 'flt-bench-snap-'))
try {
  await daemon.start()
  const session = await login(daemon.url)
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
  const sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const guest = async (name: string, dataSize?: number) => {
    const vm = await c<string>('VM.clone', template, name)
    await c('VM.provision', vm)
    await c('VM.set_is_a_template', vm, false)
    let data = ''
    if (dataSize) {
      data = await c<string>('VDI.create', { SR: sr, virtual_size: dataSize, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
      await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    }
    return { vm, data }
  }
  const upload = async (vdi: string, bytes: Buffer) => {
    const task = await c<string>('task.create', 'upload', '')
    await (await fetch(`${daemon.url}/import_raw_vdi?vdi=${vdi}&format=raw&session_id=${session}&task_id=${task}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-length': String(bytes.length) } })).arrayBuffer()
    await waitFor('upload', async () => (await c('task.get_status', task)) !== 'pending')
  }
  const dropSnapshot = async (snap: string) => {
    const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))
    await c('VM.destroy', snap)
    for (const v of vdis) await c('VDI.destroy', v)
  }

  // Snapshot time against disk size.
  const sizes: [string, number][] = [['1 GiB', 2 ** 30], ['4 TiB', 4 * 2 ** 40]]
  const snapshotTimes: Record<string, number> = {}
  for (const [label, size] of sizes) {
    const { vm } = await guest(`size ${label}`, size)
    const runs: number[] = []
    for (let i = 0; i < 5; i++) {
      let snap = ''
      runs.push(await timed(async () => (snap = await c<string>('VM.snapshot', vm, `s${i}`))))
      await dropSnapshot(snap)
    }
    snapshotTimes[label] = median(runs)
  }

  // Checkpoint of a running guest, then revert.
  const { vm: running } = await guest('checkpoint')
  await c('VM.start', running, false, false)
  const uuid = await c<string>('VM.get_uuid', running)
  await waitFor('the guest to tick', () => daemon.serial(uuid).includes('FLOTILLA tick=3'), 120_000)
  let checkpoint = ''
  const checkpointMs = await timed(async () => (checkpoint = await c<string>('VM.checkpoint', running, 'cp')))
  const revertMs = await timed(() => c('VM.revert', checkpoint))
  await c('VM.hard_shutdown', running)

  // Compaction of a chain of 10 snapshots, each holding its own 64 MiB of new data.
  const { vm: chained, data } = await guest('chain', 2 * 2 ** 30)
  const snaps: string[] = []
  for (let i = 0; i < LAYERS; i++) {
    await upload(data, randomBytes(LAYER_BYTES))
    snaps.push(await c<string>('VM.snapshot', chained, `layer ${i}`))
  }
  const compactMs = await timed(async () => {
    for (const s of snaps) await dropSnapshot(s)
    await c('SR.scan', sr)
  })

  // Baseline: the same chain built with qemu-img and qemu-io, merged with qemu-img commit.
  const layer = (i: number) => join(scratch, `l${i}.qcow2`)
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', layer(0), '2G'])
  for (let i = 1; i <= LAYERS; i++) {
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${i} 0 ${LAYER_BYTES}`, layer(i - 1)], { stdio: 'ignore' })
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', layer(i - 1), '-F', 'qcow2', layer(i)])
  }
  const commitMs = await timed(async () => {
    for (let i = LAYERS; i >= 1; i--) execFileSync('qemu-img', ['commit', '-q', '-d', layer(i)])
  })

  console.log('-'.repeat(84))
  const [small, big] = [snapshotTimes['1 GiB']!, snapshotTimes['4 TiB']!]
  console.log(`VM.snapshot, 1 GiB disk ${small.toFixed(0)} ms, 4 TiB thin disk ${big.toFixed(0)} ms: ratio ${(big / small).toFixed(2)} (aim ≈ 1)`)
  console.log(`VM.checkpoint of a running 256 MiB guest: ${checkpointMs.toFixed(0)} ms (the guest is paused for part of it); VM.revert to it: ${revertMs.toFixed(0)} ms`)
  console.log(`compacting ${LAYERS} snapshots of ${LAYER_BYTES / MiB} MiB each on a 2 GiB disk: ${compactMs.toFixed(0)} ms; qemu-img commit of the same chain: ${commitMs.toFixed(0)} ms; ratio ${(compactMs / commitMs).toFixed(2)}`)
  console.log('-'.repeat(84))
} finally {
  await daemon.dispose()
  rmSync(scratch, { recursive: true, force: true })
}
