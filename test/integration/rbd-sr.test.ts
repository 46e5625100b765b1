// Ceph RBD SRs on a real cluster: one monitor, manager and OSD in the lab's storage namespace
// (test/helpers/ceph-server.ts), with cephx and a client key limited to RBD on one pool, shared
// by a 2-host lab pool. Probe (the pools, then the SRs on one), create shared with a PBD plugged
// on both hosts, VDI create / write / snapshot / clone / resize / destroy with checksums read
// back through Ceph's own tools, a VM whose disks are on the SR started on host 1 then on host 2
// with the same disk content and checkpointed there, the OSD killed while a VM writes and started
// again (the guest waits, then goes on, its acknowledged writes on the disk), destroy.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { call, jsonrpc, waitFor } from '../helpers/daemon.js'
import { newGuest, ridesOutStorageLoss, ticksOf } from '../helpers/guest.js'
import { Lab } from '../helpers/lab.js'
import { CephServer } from '../helpers/ceph-server.js'

const MiB = 2 ** 20

let lab: Lab
let ceph: CephServer
let s: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)
const failure = async (method: string, ...params: unknown[]): Promise<string[]> => {
  const r = await jsonrpc(lab.host(1).url, method, [s, ...params])
  return r.error ? [r.error.message, ...r.error.data] : ['ok']
}

describe('a Ceph RBD SR shared by a pool', () => {
  const hosts = new Map<number, string>()
  let sr: string
  let srUuid: string
  let config: Record<string, string>
  /** The content of an image (or image@snapshot) of the SR, as Ceph exports it: its sha256. */
  const contentHash = async (location: string) => {
    const file = join(lab.dir, 'export.raw')
    await ceph.admin('rbd', ['export', '--no-progress', `${ceph.pool}/${srUuid}/${location}`, file])
    try {
      return createHash('sha256').update(readFileSync(file)).digest('hex')
    } finally {
      rmSync(file, { force: true })
    }
  }
  const images = async () => (JSON.parse(await ceph.admin('rbd', ['ls', '--format', 'json', `${ceph.pool}/${srUuid}`])) as string[]).sort()

  before(async () => {
    lab = await Lab.up(2)
    ceph = await CephServer.start(lab)
    config = { monitors: ceph.monitors, pool: ceph.pool, user: ceph.user, key: ceph.key }
    await lab.join(2)
    s = await call<string>(lab.host(1).url, 'session.login_with_password', 'root', lab.password)
    for (const h of await c<string[]>('host.get_all')) hosts.set((await c<string>('host.get_address', h)) === lab.host(1).address ? 1 : 2, h)
    for (const h of hosts.values()) await waitFor('both hosts live', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', h))) || undefined, 90_000)
  })
  afterEach((t) => {
    lab?.reportFailure(t)
    if ((t as { passed?: boolean }).passed === false) process.stderr.write(`--- the OSD's log:\n${ceph?.log()}\n`)
  })
  after(() => lab?.down())

  it('probes the cluster: its pools, then the SRs on one', async () => {
    const { monitors, user, key } = config
    assert.match(await c<string>('SR.probe', hosts.get(1), { monitors, user, key }, 'rbd', {}), /<ceph-pools>[\s\S]*<Pool>\s*<Name>rbd<\/Name>/)
    assert.match(await c<string>('SR.probe', hosts.get(1), config, 'rbd', {}), /<SRlist>\s*<\/SRlist>/)
  })

  it('refuses a device_config without monitors or pool, or with a wrong key, and makes nothing', async () => {
    const before = (await c<string[]>('SR.get_all')).length
    assert.equal((await failure('SR.create', hosts.get(1), { ...config, monitors: '' }, 0, 'x', '', 'rbd', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_102')
    assert.equal((await failure('SR.create', hosts.get(1), { ...config, pool: '' }, 0, 'x', '', 'rbd', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_101')
    const wrongKey = await failure('SR.create', hosts.get(1), { ...config, key: 'AQBhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGZhcw==' }, 0, 'x', '', 'rbd', 'user', true, {})
    assert.equal(wrongKey[0], 'SR_BACKEND_FAILURE')
    assert.equal((await c<string[]>('SR.get_all')).length, before)
    assert.deepEqual(JSON.parse(await ceph.admin('rbd', ['namespace', 'ls', '--format', 'json', ceph.pool])), [])
  })

  it('SR.create type rbd shared: an RBD namespace for it, a PBD plugged on each host', async () => {
    sr = await c<string>('SR.create', hosts.get(1), config, 0, 'Ceph', '', 'rbd', 'user', true, {})
    srUuid = await c<string>('SR.get_uuid', sr)
    const rec = await c<any>('SR.get_record', sr)
    assert.deepEqual([rec.type, rec.shared], ['rbd', true])
    assert.ok(Number(rec.physical_size) > 0)
    const pbds = await Promise.all(rec.PBDs.map((p: string) => c<any>('PBD.get_record', p)))
    assert.deepEqual(pbds.filter((p) => p.currently_attached).map((p) => p.host).sort(), [...hosts.values()].sort())
    assert.deepEqual(JSON.parse(await ceph.admin('rbd', ['namespace', 'ls', '--format', 'json', ceph.pool])).map((n: { name: string }) => n.name), [srUuid])
    assert.match(await c<string>('SR.probe', hosts.get(2), config, 'rbd', {}), new RegExp(`<UUID>${srUuid}</UUID>`))
  })

  let data: string
  it('VDIs on it: create, write, snapshot, clone, resize and destroy, the content checked through Ceph', async () => {
    const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 8 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    const location = await c<string>('VDI.get_location', vdi)
    assert.deepEqual(await images(), [location])
    assert.equal((await c<any>('VDI.get_sm_config', vdi))['image-format'], 'raw')
    // a pattern written through librbd, as a guest writes
    await ceph.qemuIo(`${ceph.pool}/${srUuid}/${location}`, ['-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 4M 512k'])
    const written = await contentHash(location)
    const snapshot = await c<string>('VDI.snapshot', vdi, {})
    const snapLocation = await c<string>('VDI.get_location', snapshot)
    assert.match(snapLocation, new RegExp(`^${location}@`))
    const clone = await c<string>('VDI.clone', snapshot, {})
    const cloneLocation = await c<string>('VDI.get_location', clone)
    for (const l of [location, snapLocation, cloneLocation]) assert.equal(await contentHash(l), written, l)
    await c('VDI.resize', clone, 16 * MiB)
    assert.equal(Number(await c('VDI.get_virtual_size', clone)), 16 * MiB)
    await c('VDI.destroy', clone)
    await c('VDI.destroy', snapshot)
    assert.deepEqual(await images(), [location])
    data = vdi
    // a disk destroyed before its snapshot: the image stays for the snapshot, out of scans, and goes with it
    const other = await c<string>('VDI.create', { SR: sr, virtual_size: 4 * MiB, name_label: 'other', type: 'user', sharable: false, read_only: false, other_config: {} })
    const otherImage = await c<string>('VDI.get_location', other)
    await ceph.qemuIo(`${ceph.pool}/${srUuid}/${otherImage}`, ['-c', 'write -P 0x33 0 64k'])
    const otherSnap = await c<string>('VDI.snapshot', other, {})
    const kept = await contentHash(otherImage)
    await c('VDI.destroy', other)
    assert.deepEqual(await images(), [location, otherImage].sort())
    assert.equal(await contentHash(await c<string>('VDI.get_location', otherSnap)), kept)
    await c('SR.scan', sr)
    assert.deepEqual(await Promise.all((await c<string[]>('SR.get_VDIs', sr)).map((v) => c<string>('VDI.get_location', v))).then((l) => l.filter((x) => !x.includes('@')).sort()), [location])
    await c('VDI.destroy', otherSnap)
    assert.deepEqual(await images(), [location])
  })

  it('a VM whose disks are on it starts on host 1, then on host 2 with the same disk content', async () => {
    const local = await newGuest(lab.host(1).url, s, 'local guest')
    const vm = await c<string>('VM.copy', local.ref, 'RBD guest', sr)
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const uuid = await c<string>('VM.get_uuid', vm)
    assert.deepEqual((await c<string[]>('VM.get_possible_hosts', vm)).sort(), [...hosts.values()].sort())
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest on host 1 to record ticks on its data disk', () => /FLOTILLA tick=3 /.test(lab.host(1).daemon.serial(uuid)) || undefined, 180_000)
    await c('VM.snapshot', vm, 'while running')
    await c('VM.hard_shutdown', vm)
    await c('VM.start_on', vm, hosts.get(2), false, false)
    await waitFor('the guest on host 2 to boot', () => /FLOTILLA data disk=/.test(lab.host(2).daemon.serial(uuid)) || undefined, 180_000)
    assert.match(lab.host(2).daemon.serial(uuid), /FLOTILLA data disk=\S+ previous: FLOTILLA-DATA boots=1 tick=\d+/)
    // A checkpoint freezes the RBD disks in place (RBD snapshots) and saves the memory on host 2's own SR.
    await waitFor('the guest on host 2 to tick', () => /FLOTILLA tick=2 /.test(lab.host(2).daemon.serial(uuid)) || undefined, 180_000)
    const checkpoint = await c<string>('VM.checkpoint', vm, 'on host 2')
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    await c('VM.revert', checkpoint)
    assert.equal(await c('VM.get_power_state', vm), 'Suspended')
    await c('VM.resume', vm, false, false)
    await waitFor('the resumed guest to tick', () => /FLOTILLA tick=\d+ /.test(lab.host(2).daemon.serial(uuid)) || undefined, 120_000)
    assert.doesNotMatch(lab.host(2).daemon.serial(uuid), /FLOTILLA-GUEST boot/, 'resumed, not rebooted')
    await c('VM.hard_shutdown', vm)
    for (const snap of await c<string[]>('VM.get_snapshots', vm)) {
      const vdis = await Promise.all((await c<string[]>('VM.get_VBDs', snap)).map((vbd) => c<string>('VBD.get_VDI', vbd)))
      await c('VM.destroy', snap)
      for (const vdi of vdis) await c('VDI.destroy', vdi)
    }
    for (const vbd of await c<string[]>('VM.get_VBDs', vm)) await c('VDI.destroy', await c<string>('VBD.get_VDI', vbd))
    await c('VM.destroy', vm)
    await c('VM.destroy', local.ref)
    assert.deepEqual(await images(), [])
  })

  it('the OSD lost while the VM writes: the guest waits, goes on once the OSD is back, and what it wrote holds', async () => {
    const local = await newGuest(lab.host(1).url, s, 'local guest')
    const vm = await c<string>('VM.copy', local.ref, 'RBD outage guest', sr)
    await c('VM.destroy', local.ref)
    const data = await c<string>('VDI.create', { SR: sr, virtual_size: 16 * MiB, name_label: 'outage data', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const uuid = await c<string>('VM.get_uuid', vm)
    const serial = () => lab.host(1).daemon.serial(uuid)
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest to record ticks', () => ticksOf(serial()).includes(3) || undefined, 180_000)
    const last = await ridesOutStorageLoss(c, vm, serial, () => ceph.stopOsd(), () => ceph.resumeOsd())
    // the last tick printed was counted after the record before it was on the disk
    const file = join(lab.dir, 'record.raw')
    await ceph.admin('rbd', ['export', '--no-progress', `${ceph.pool}/${srUuid}/${await c<string>('VDI.get_location', data)}`, file])
    const record = /FLOTILLA-DATA boots=\d+ tick=(\d+)/.exec(readFileSync(file, 'latin1').slice(0, 512))
    rmSync(file, { force: true })
    assert.ok(record && Number(record[1]) >= last - 1, `the record on the disk (${record?.[0]}) is at least tick ${last - 1}`)
    for (const vbd of await c<string[]>('VM.get_VBDs', vm)) await c('VDI.destroy', await c<string>('VBD.get_VDI', vbd))
    await c('VM.destroy', vm)
    assert.deepEqual(await images(), [])
  })

  it('SR.destroy removes its namespace from the pool', async () => {
    await c('SR.destroy', sr)
    assert.deepEqual(JSON.parse(await ceph.admin('rbd', ['namespace', 'ls', '--format', 'json', ceph.pool])), [])
  })
})
