// The tests a local SR passes, for any SR that keeps qcow2 chains in a directory (the default local
// SR, a ZFS SR): snapshots, checkpoints, revert and clone with data integrity checked by checksum
// at every step (in the manner of xapi's Quicktest), live and offline, and chains that stay short
// whatever the order of operations. The caller's describe starts the daemon and names the SR.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { it } from 'node:test'
import { agentCall } from './agent.js'
import { call, type Daemon, waitFor } from './daemon.js'
import { newGuest as makeGuest } from './guest.js'

/** Where the tests run: the daemon, a session on it, and the SR (its directory) that is the pool's default SR. */
export interface ChainSr { daemon: Daemon; session: string; sr: string; srPath: string }

export function qcow2ChainTests(ctx: () => ChainSr): void {
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(ctx().daemon.url, method, ctx().session, ...params)
  const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
  const MiB = 2 ** 20

  async function exportDisk(vdi: string): Promise<string> {
    const res = await fetch(`${ctx().daemon.url}/export_raw_vdi?vdi=${vdi}&format=raw&session_id=${ctx().session}`)
    assert.equal(res.status, 200)
    return sha(new Uint8Array(await res.arrayBuffer()))
  }

  async function importDisk(vdi: string, data: Buffer): Promise<void> {
    const task = await c<string>('task.create', 'upload', '')
    const res = await fetch(`${ctx().daemon.url}/import_raw_vdi?vdi=${vdi}&format=raw&session_id=${ctx().session}&task_id=${task}`, { method: 'PUT', body: new Uint8Array(data), headers: { 'content-length': String(data.length) } })
    await res.arrayBuffer()
    await waitFor('the upload task', async () => (await c('task.get_status', task)) !== 'pending')
    assert.equal(await c('task.get_status', task), 'success', JSON.stringify(await c('task.get_error_info', task)))
  }

  /** Random data in the first half of a 16 MiB disk, zeros after. */
  const content = () => Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(8 * MiB)])

  const newGuest = (name: string, data?: string) => makeGuest(ctx().daemon.url, ctx().session, name, { data })

  const newData = () => c<string>('VDI.create', { SR: ctx().sr, virtual_size: 16 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
  const dataDiskOf = async (vm: string) => {
    for (const vbd of await c<string[]>('VM.get_VBDs', vm)) if ((await c('VBD.get_userdevice', vbd)) === '1') return c<string>('VBD.get_VDI', vbd)
    throw new Error('no data disk')
  }
  const tree = () => agentCall<{ name: string; backing?: string }[]>(ctx().daemon, 'sr.tree', { path: ctx().srPath })
  const depthOf = async (location: string) => {
    const images = new Map((await tree()).map((i) => [i.name, i]))
    let depth = 0
    for (let cur = images.get(location); cur; cur = cur.backing ? images.get(cur.backing) : undefined) depth++
    return depth
  }
  /** After garbage collection, every image is a VDI's, or a hidden base two or more images build on. */
  async function assertNoLeaks(): Promise<void> {
    await c('SR.scan', ctx().sr)
    const locations = new Set(await Promise.all((await c<string[]>('SR.get_VDIs', ctx().sr)).map((v) => c<string>('VDI.get_location', v))))
    const images = await tree()
    const children = new Map<string, number>()
    for (const i of images) if (i.backing) children.set(i.backing, (children.get(i.backing) ?? 0) + 1)
    assert.deepEqual(images.map((i) => i.name).filter((i) => !locations.has(i) && (children.get(i) ?? 0) < 2), [], 'no image that nothing needs')
  }

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
    const copy = await c<string>('VM.copy', s2, 'copy-of-s2', ctx().sr)
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
      await c('SR.scan', ctx().sr)
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
    await waitFor('ticks', () => ctx().daemon.serial(vm.uuid).includes('FLOTILLA tick=3'))
    const snap = await c<string>('VM.snapshot', vm.ref, 'live-snap')
    assert.equal((await c('VM.get_record', snap)).snapshot_info['power-state-at-snapshot'], 'Running')
    const snapData = await dataDiskOf(snap)
    const record = Buffer.from(await (await fetch(`${ctx().daemon.url}/export_raw_vdi?vdi=${snapData}&format=raw&session_id=${ctx().session}`)).arrayBuffer()).subarray(0, 512).toString()
    assert.match(record, /^FLOTILLA-DATA boots=1 tick=\d+/, 'the snapshot holds the guest\'s record, crash-consistent')
    const liveLocation = await c<string>('VDI.get_location', data)
    assert.equal(await depthOf(liveLocation), 2)
    const snapBoot = (await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))).filter((v) => v !== snapData)
    await c('VM.destroy', snap)
    for (const v of [snapData, ...snapBoot]) await c('VDI.destroy', v)
    await c('SR.scan', ctx().sr)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running')
    const ticksBefore = (ctx().daemon.serial(vm.uuid).match(/FLOTILLA tick=/g) ?? []).length
    await waitFor('the guest to keep running', () => (ctx().daemon.serial(vm.uuid).match(/FLOTILLA tick=/g) ?? []).length > ticksBefore + 1)
    assert.equal(await depthOf(await c<string>('VDI.get_location', data)), 1, 'the deleted snapshot was streamed into the running disk')
    await c('VM.hard_shutdown', vm.ref)
  })

  it('checkpoints a running guest; revert and resume continue its counter without a reboot', async () => {
    const data = await newData()
    const vm = await newGuest('checkpoint', data)
    await c('VM.start', vm.ref, false, false)
    await waitFor('ticks', () => ctx().daemon.serial(vm.uuid).includes('FLOTILLA tick=3'))
    const checkpoint = await c<string>('VM.checkpoint', vm.ref, 'cp')
    const ticks = () => [...ctx().daemon.serial(vm.uuid).matchAll(/FLOTILLA tick=(\d+)/g)].map((m) => Number(m[1]))
    const atCheckpoint = Math.max(...ticks())
    const cp = await c('VM.get_record', checkpoint)
    assert.equal(cp.power_state, 'Suspended')
    assert.notEqual(cp.suspend_VDI, 'OpaqueRef:NULL')
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running', 'the VM keeps running')
    await waitFor('more ticks', () => Math.max(...ticks()) >= atCheckpoint + 3)
    await c('VM.revert', checkpoint)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Suspended')
    await c('VM.resume', vm.ref, false, false)
    await waitFor('ticks after resume', () => ctx().daemon.serial(vm.uuid).includes('FLOTILLA tick='))
    const first = ticks()[0]!
    assert.ok(first >= atCheckpoint && first <= atCheckpoint + 2, `the counter goes on from the checkpoint (${atCheckpoint}), got ${first}`)
    assert.ok(!ctx().daemon.serial(vm.uuid).includes('FLOTILLA-GUEST boot'), 'no reboot')
    await c('VM.hard_shutdown', vm.ref)
  })

  it('comes back to where it started after 100 snapshot/delete cycles', async () => {
    const vm = await newGuest('cycles', await newData())
    await assertNoLeaks()
    const vdisBefore = (await c<string[]>('SR.get_VDIs', ctx().sr)).length
    const imagesBefore = (await tree()).length
    for (let i = 0; i < 100; i++) {
      const snap = await c<string>('VM.snapshot', vm.ref, `cycle ${i}`)
      const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((v) => c<string>('VBD.get_VDI', v)))
      await c('VM.destroy', snap)
      for (const v of vdis) await c('VDI.destroy', v)
    }
    await assertNoLeaks()
    assert.equal((await c<string[]>('SR.get_VDIs', ctx().sr)).length, vdisBefore)
    assert.ok((await tree()).length <= imagesBefore, `${(await tree()).length} images, ${imagesBefore} before`)
    assert.ok((await depthOf(await c<string>('VDI.get_location', await dataDiskOf(vm.ref)))) <= 2)
  })
}
