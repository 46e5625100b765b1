// Snapshots, checkpoints, revert and clone on qcow2 chains: data integrity checked by checksum
// at every step (in the manner of xapi's Quicktest), live and offline, and chains that stay
// short whatever the order of operations.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { agentCall } from '../helpers/agent.js'
import { newGuest as makeGuest } from '../helpers/guest.js'
import { call, Daemon, login, waitFor } from '../helpers/daemon.js'

const daemon = new Daemon()
let url: string
let session: string
let sr: string
let srPath: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const MiB = 2 ** 20

async function exportDisk(vdi: string): Promise<string> {
  const res = await fetch(`${url}/export_raw_vdi?vdi=${vdi}&format=raw&session_id=${session}`)
  assert.equal(res.status, 200)
  return sha(new Uint8Array(await res.arrayBuffer()))
}

async function importDisk(vdi: string, data: Buffer): Promise<void> {
  const task = await c<string>('task.create', 'upload', '')
  const res = await fetch(`${url}/import_raw_vdi?vdi=${vdi}&format=raw&session_id=${session}&task_id=${task}`, { method: 'PUT', body: new Uint8Array(data), headers: { 'content-length': String(data.length) } })
  await res.arrayBuffer()
  await waitFor('the upload task', async () => (await c('task.get_status', task)) !== 'pending')
  assert.equal(await c('task.get_status', task), 'success', JSON.stringify(await c('task.get_error_info', task)))
}

/** Random data in the first half of a 16 MiB disk, zeros after. */
const content = () => Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(8 * MiB)])

const newGuest = (name: string, data?: string) => makeGuest(url, session, name, { data })

const newData = () => c<string>('VDI.create', { SR: sr, virtual_size: 16 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
const dataDiskOf = async (vm: string) => {
  for (const vbd of await c<string[]>('VM.get_VBDs', vm)) if ((await c('VBD.get_userdevice', vbd)) === '1') return c<string>('VBD.get_VDI', vbd)
  throw new Error('no data disk')
}
const tree = () => agentCall<{ name: string; backing?: string }[]>(daemon, 'sr.tree', { path: srPath })
const depthOf = async (location: string) => {
  const images = new Map((await tree()).map((i) => [i.name, i]))
  let depth = 0
  for (let cur = images.get(location); cur; cur = cur.backing ? images.get(cur.backing) : undefined) depth++
  return depth
}
/** After garbage collection, every image is a VDI's, or a hidden base two or more images build on. */
async function assertNoLeaks(): Promise<void> {
  await c('SR.scan', sr)
  const locations = new Set(await Promise.all((await c<string[]>('SR.get_VDIs', sr)).map((v) => c<string>('VDI.get_location', v))))
  const images = await tree()
  const children = new Map<string, number>()
  for (const i of images) if (i.backing) children.set(i.backing, (children.get(i.backing) ?? 0) + 1)
  assert.deepEqual(images.map((i) => i.name).filter((i) => !locations.has(i) && (children.get(i) ?? 0) < 2), [], 'no image that nothing needs')
}

describe('snapshots on qcow2 chains', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    const pool = (await c<string[]>('pool.get_all'))[0]
    sr = await c<string>('pool.get_default_SR', pool)
    srPath = (await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0])).path!
  })
  after(() => daemon.dispose())

  it('keeps every checksum through snapshot, writes, revert, clone, copy and deletes in any order (halted)', async () => {
    const data = await newData()
    const vm = await newGuest('quicktest', data)
    const a = content()
    await importDisk(data, a)
    const s1 = await c<string>('VM.snapshot', vm.ref, 's1')
    const rec = await c('VM.get_record', s1)
    assert.equal(rec.is_a_snapshot, true)
    assert.equal(rec.is_a_template, true)
    assert.equal(rec.snapshot_of, vm.ref)
    assert.equal(rec.power_state, 'Halted')
    assert.equal(rec.snapshot_info['power-state-at-snapshot'], 'Halted')
    assert.deepEqual(await c('VM.get_snapshots', vm.ref), [s1])
    assert.equal(await c('VM.get_parent', vm.ref), s1)
    const s1Data = await dataDiskOf(s1)
    assert.equal(await c('VDI.get_snapshot_of', s1Data), await dataDiskOf(vm.ref))
    assert.equal(await c('VDI.get_is_a_snapshot', s1Data), true)

    const b = content()
    await importDisk(data, b)
    assert.equal(await exportDisk(data), sha(b), 'the VM sees its new data')
    assert.equal(await exportDisk(s1Data), sha(a), 'the snapshot kept the old data')
    const s2 = await c<string>('VM.snapshot', vm.ref, 's2')
    assert.equal(await c('VM.get_parent', s2), s1, 'snapshots chain through parent')

    const clone = await c<string>('VM.clone', s1, 'from-s1')
    assert.equal(await exportDisk(await dataDiskOf(clone)), sha(a))
    const copy = await c<string>('VM.copy', s2, 'copy-of-s2', sr)
    assert.equal(await exportDisk(await dataDiskOf(copy)), sha(b))

    await c('VM.revert', s1)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Halted')
    assert.equal(await exportDisk(await dataDiskOf(vm.ref)), sha(a), 'revert brought the old data back')
    assert.equal(await c('VM.get_parent', vm.ref), s1)

    // Delete the middle snapshot first, then the oldest: every remaining disk keeps its data.
    for (const snap of [s2, s1]) {
      const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))
      await c('VM.destroy', snap)
      for (const v of vdis) if ((await c<string[]>('VDI.get_VBDs', v)).length === 0 && (await c('VDI.get_type', v)) !== 'system') await c('VDI.destroy', v).catch(() => undefined)
      await c('SR.scan', sr)
      assert.equal(await exportDisk(await dataDiskOf(vm.ref)), sha(a))
      assert.equal(await exportDisk(await dataDiskOf(clone)), sha(a))
      assert.equal(await exportDisk(await dataDiskOf(copy)), sha(b))
    }
    await assertNoLeaks()
    assert.ok((await depthOf(await c<string>('VDI.get_location', await dataDiskOf(vm.ref)))) <= 2)
  })

  it('snapshots a running VM live, and merges a deleted snapshot into the disk it runs on', async () => {
    const data = await newData()
    const vm = await newGuest('live', data)
    await c('VM.start', vm.ref, false, false)
    await waitFor('ticks', () => daemon.serial(vm.uuid).includes('FLOTILLA tick=3'))
    const snap = await c<string>('VM.snapshot', vm.ref, 'live-snap')
    assert.equal((await c('VM.get_record', snap)).snapshot_info['power-state-at-snapshot'], 'Running')
    const snapData = await dataDiskOf(snap)
    const record = Buffer.from(await (await fetch(`${url}/export_raw_vdi?vdi=${snapData}&format=raw&session_id=${session}`)).arrayBuffer()).subarray(0, 512).toString()
    assert.match(record, /^FLOTILLA-DATA boots=1 tick=\d+/, 'the snapshot holds the guest\'s record, crash-consistent')
    const liveLocation = await c<string>('VDI.get_location', data)
    assert.equal(await depthOf(liveLocation), 2)
    const snapBoot = (await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))).filter((v) => v !== snapData)
    await c('VM.destroy', snap)
    for (const v of [snapData, ...snapBoot]) await c('VDI.destroy', v)
    await c('SR.scan', sr)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running')
    const ticksBefore = (daemon.serial(vm.uuid).match(/FLOTILLA tick=/g) ?? []).length
    await waitFor('the guest to keep running', () => (daemon.serial(vm.uuid).match(/FLOTILLA tick=/g) ?? []).length > ticksBefore + 1)
    assert.equal(await depthOf(await c<string>('VDI.get_location', data)), 1, 'the deleted snapshot was streamed into the running disk')
    await c('VM.hard_shutdown', vm.ref)
  })

  it('checkpoints a running guest; revert and resume continue its counter without a reboot', async () => {
    const data = await newData()
    const vm = await newGuest('checkpoint', data)
    await c('VM.start', vm.ref, false, false)
    await waitFor('ticks', () => daemon.serial(vm.uuid).includes('FLOTILLA tick=3'))
    const checkpoint = await c<string>('VM.checkpoint', vm.ref, 'cp')
    const ticks = () => [...daemon.serial(vm.uuid).matchAll(/FLOTILLA tick=(\d+)/g)].map((m) => Number(m[1]))
    const atCheckpoint = Math.max(...ticks())
    const cp = await c('VM.get_record', checkpoint)
    assert.equal(cp.power_state, 'Suspended')
    assert.notEqual(cp.suspend_VDI, 'OpaqueRef:NULL')
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running', 'the VM keeps running')
    await waitFor('more ticks', () => Math.max(...ticks()) >= atCheckpoint + 3)
    await c('VM.revert', checkpoint)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Suspended')
    await c('VM.resume', vm.ref, false, false)
    await waitFor('ticks after resume', () => daemon.serial(vm.uuid).includes('FLOTILLA tick='))
    const first = ticks()[0]!
    assert.ok(first >= atCheckpoint && first <= atCheckpoint + 2, `the counter goes on from the checkpoint (${atCheckpoint}), got ${first}`)
    assert.ok(!daemon.serial(vm.uuid).includes('FLOTILLA-GUEST boot'), 'no reboot')
    await c('VM.hard_shutdown', vm.ref)
  })

  it('comes back to where it started after 100 snapshot/delete cycles', async () => {
    const vm = await newGuest('cycles', await newData())
    await assertNoLeaks()
    const vdisBefore = (await c<string[]>('SR.get_VDIs', sr)).length
    const imagesBefore = (await tree()).length
    for (let i = 0; i < 100; i++) {
      const snap = await c<string>('VM.snapshot', vm.ref, `cycle ${i}`)
      const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))
      await c('VM.destroy', snap)
      for (const v of vdis) await c('VDI.destroy', v)
    }
    await assertNoLeaks()
    assert.equal((await c<string[]>('SR.get_VDIs', sr)).length, vdisBefore)
    assert.ok((await tree()).length <= imagesBefore, `${(await tree()).length} images, ${imagesBefore} before`)
    assert.ok((await depthOf(await c<string>('VDI.get_location', await dataDiskOf(vm.ref)))) <= 2)
  })
})

describe('snapshots with Xen Orchestra, resizes, and crashes during merges', () => {
  const d = new Daemon()
  let xapi: any
  let s2: string
  const c2 = <T = any>(method: string, ...params: unknown[]) => call<T>(d.url, method, s2, ...params)

  before(async () => {
    await d.start()
    s2 = await login(d.url)
    const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => any }
    xapi = new Xapi({ url: d.url, auth: { user: 'root', password: 'flotilla-test-password' }, allowUnauthorized: true, callTimeout: 60e3, eventPollDelay: 1e3 })
    await xapi.connect()
    await xapi.objectsFetched
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await d.dispose()
  })

  it('14: snapshots, checkpoints (falling back on a halted VM), copies and reverts through XO', async () => {
    const [template] = await c2<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await xapi.callAsync('VM.clone', template, 'xo-14')
    await xapi.callAsync('VM.provision', vm)
    await xapi.call('VM.set_is_a_template', vm, false)
    const snap = await xapi.VM_snapshot(vm, { name_label: 'xo snapshot' })
    const cached = await xapi.waitObjectState(snap, (o: any) => o.VBDs.length === 1, { timeout: 10e3 })
    assert.equal(cached.is_a_snapshot, true)
    assert.equal(cached.snapshot_of, vm)
    assert.equal(cached.$VBDs[0].$VDI.snapshot_of, (await xapi.getRecord('VM', vm)).$VBDs[0].VDI)
    await xapi.waitObjectState(vm, (o: any) => o.snapshots.includes(snap), { timeout: 10e3 })
    const checkpoint = await xapi.VM_checkpoint(vm, { name_label: 'xo checkpoint' })
    assert.equal((await xapi.getRecord('VM', checkpoint)).is_a_snapshot, true, 'a halted VM gets a snapshot instead')
    const copy = await xapi.callAsync('VM.copy', vm, 'xo copy', xapi.pool.default_SR)
    assert.equal((await xapi.getRecord('VM', copy)).is_a_snapshot, false)
    await xapi.callAsync('VM.revert', snap)
    assert.equal((await xapi.getRecord('VM', vm)).parent, snap)
  })

  it('grows the disk of a running VM online', async () => {
    const [template] = await c2<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c2<string>('VM.clone', template, 'grow')
    await c2('VM.provision', vm)
    await c2('VM.set_is_a_template', vm, false)
    const data = await c2<string>('VDI.create', { SR: await c2('pool.get_default_SR', (await c2<string[]>('pool.get_all'))[0]), virtual_size: 16 * MiB, name_label: 'grow', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c2('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c2('VM.start', vm, false, false)
    await c2('VDI.resize', data, 32 * MiB)
    assert.equal(await c2('VDI.get_virtual_size', data), 32 * MiB)
    await c2('VM.hard_shutdown', vm)
  })

  it('loses no data when the daemon is killed in the middle of a merge, and finishes the merge after', async () => {
    const sr = await c2<string>('pool.get_default_SR', (await c2<string[]>('pool.get_all'))[0])
    const data = await c2<string>('VDI.create', { SR: sr, virtual_size: 512 * MiB, name_label: 'crashy', type: 'user', sharable: false, read_only: false, other_config: {} })
    const upload = async (bytes: Buffer) => {
      let task = ''
      for (let attempt = 1; ; attempt++) {
        task = await c2<string>('task.create', 'upload', '')
        try {
          await (await fetch(`${d.url}/import_raw_vdi?vdi=${data}&format=raw&session_id=${s2}&task_id=${task}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-length': String(bytes.length) } })).arrayBuffer()
          break
        } catch (err) {
          // Seen under load: the upload's connection breaks (EPIPE) before any answer. Say what the task knew, and send it again.
          const known = `${String(await c2('task.get_status', task))} ${JSON.stringify(await c2('task.get_error_info', task))}`
          process.stderr.write(`upload attempt ${attempt} broke: ${String((err as Error & { cause?: Error }).cause ?? err)}; its task: ${known}\n`)
          if (attempt === 3) throw err
        }
      }
      await waitFor('upload', async () => (await c2('task.get_status', task)) !== 'pending')
      assert.equal(await c2('task.get_status', task), 'success', JSON.stringify(await c2('task.get_error_info', task)))
    }
    await upload(randomBytes(192 * MiB))
    const snap = await c2<string>('VDI.snapshot', data)
    const after = randomBytes(192 * MiB)
    await upload(after)
    await c2('VDI.destroy', snap)
    await new Promise((r) => setTimeout(r, 150))
    await d.crash(false)
    await d.start()
    s2 = await login(d.url)
    // A merge the killed daemon left running (its qemu-img goes on) holds the images for a moment.
    const got = await waitFor('the disk to be readable', async () => {
      // While the images are held the export is refused, and the refusal closes the connection.
      const res = await fetch(`${d.url}/export_raw_vdi?vdi=${data}&format=raw&session_id=${s2}`).catch(() => undefined)
      const body = res && new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0)))
      return res?.status === 200 && body!.length >= after.length ? body!.subarray(0, after.length) : undefined
    }, 60_000)
    assert.equal(sha(got), sha(after), 'the data is intact')
    const path = (await c2<Record<string, string>>('PBD.get_device_config', (await c2<string[]>('SR.get_PBDs', sr))[0])).path!
    await waitFor('the merge to finish', async () => {
      await c2('SR.scan', sr)
      const images = await agentCall<{ name: string; backing?: string }[]>(d, 'sr.tree', { path })
      const location = await c2<string>('VDI.get_location', data)
      return images.find((i) => i.name === location)?.backing === undefined
    }, 60_000)
  })
})
