// NFS SRs on a real NFS server: nfs-ganesha in the lab's storage namespace (test/helpers/nfs-
// server.ts), shared by a 2-host lab pool. The hosts have no kernel NFS client: QEMU and
// qemu-img open the images by nfs:// URL, the daemon manages the SR directory through its
// userspace client. Probe (the exports as xapi's SR_BACKEND_FAILURE_101, then the SRs on one),
// create shared, a host joining gets a plugged PBD for it, VDI create / write / snapshot / clone / resize /
// destroy with checksums taken on the server's own files, a VM whose disks are on the SR started
// on host 1 then on host 2 with the same disk content, forget and introduce back with the VDIs
// found by scan, destroy.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { call, jsonrpc, ROOT, waitFor } from '../helpers/daemon.js'
import { newGuest, ridesOutStorageLoss } from '../helpers/guest.js'
import { contentHash } from '../helpers/images.js'
import { Lab } from '../helpers/lab.js'
import { NfsServer } from '../helpers/nfs-server.js'

const run = promisify(execFile)
const MiB = 2 ** 20

let lab: Lab
let nfs: NfsServer
let s: string
const login = (i: number) => call<string>(lab.host(i).url, 'session.login_with_password', 'root', lab.password)
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)
const failure = async (method: string, ...params: unknown[]): Promise<string[]> => {
  const r = await jsonrpc(lab.host(1).url, method, [s, ...params])
  return r.error ? [r.error.message, ...r.error.data] : ['ok']
}
const xe = (...args: string[]) => run(process.execPath, [join(ROOT, 'bin', 'xe.js'), '-s', lab.host(1).address, '-u', 'root', '-pw', lab.password, ...args], { timeout: 60_000 })

/** The guest content of an image on the export, as the server's own file has it: sha256 of its raw form. */

const hashOf = (path: string) => contentHash(path, lab.dir)

describe('an NFS SR shared by a pool', () => {
  const hosts = new Map<number, string>()
  let sr: string
  let srUuid: string
  const srDir = () => nfs.local(srUuid)

  before(async () => {
    lab = await Lab.up(2)
    nfs = await NfsServer.start(lab)
    s = await login(1)
    hosts.set(1, (await c<string[]>('host.get_all'))[0]!)
  })
  afterEach((t) => lab?.reportFailure(t))
  after(() => lab?.down())

  it('probes a server: its exports as xapi gives them (SR_BACKEND_FAILURE_101 with their XML), then the SRs on one', async () => {
    const [code, , description, xml] = await failure('SR.probe', hosts.get(1), { server: nfs.address }, 'nfs', {})
    assert.equal(code, 'SR_BACKEND_FAILURE_101')
    assert.match(description!, /missing the serverpath/)
    assert.match(xml!, new RegExp(`<nfs-exports>\\s*<Export>\\s*<Target>${nfs.address}</Target>\\s*<Path>${nfs.exportPath}</Path>`))
    assert.match(await c<string>('SR.probe', hosts.get(1), { server: nfs.address, serverpath: nfs.exportPath }, 'nfs', {}), /<SRlist>\s*<\/SRlist>/)
    // what XO's "new SR" form and xe show
    const probed = await xe('sr-probe', 'type=nfs', `device-config:server=${nfs.address}`).then(() => 'no error', (err: { stderr: string }) => err.stderr)
    assert.match(probed, /SR_BACKEND_FAILURE_101/)
    assert.match(probed, new RegExp(`<Path>${nfs.exportPath}</Path>`))
    const ext = await c<any[]>('SR.probe_ext', hosts.get(1), { server: nfs.address }, 'nfs', {})
    assert.deepEqual(ext.map((r) => [r.configuration.serverpath, r.complete]), [[nfs.exportPath, false]])
  })

  it('refuses a device_config without a server or serverpath, or with a server nobody answers on, and makes nothing', async () => {
    const before = (await c<string[]>('SR.get_all')).length
    assert.equal((await failure('SR.create', hosts.get(1), { serverpath: nfs.exportPath }, 0, 'x', '', 'nfs', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_102')
    assert.equal((await failure('SR.create', hosts.get(1), { server: nfs.address }, 0, 'x', '', 'nfs', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_101')
    assert.equal((await failure('SR.create', hosts.get(1), { server: nfs.address, serverpath: '/no/such/export' }, 0, 'x', '', 'nfs', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_73')
    assert.equal((await failure('SR.create', hosts.get(1), { server: lab.host(2).address, serverpath: '/x' }, 0, 'x', '', 'nfs', 'user', true, {}))[0], 'SR_BACKEND_FAILURE_73')
    assert.equal((await c<string[]>('SR.get_all')).length, before)
    assert.deepEqual(readdirSync(nfs.exportPath), [])
  })

  it('xe sr-create type=nfs shared=true: the SR, plugged on the host, its directory on the export', async () => {
    const { stdout } = await xe('sr-create', 'type=nfs', 'name-label=NFS storage', 'shared=true', `device-config:server=${nfs.address}`, `device-config:serverpath=${nfs.exportPath}`)
    srUuid = stdout.trim()
    sr = await c<string>('SR.get_by_uuid', srUuid)
    const rec = await c<any>('SR.get_record', sr)
    assert.equal(rec.type, 'nfs')
    assert.equal(rec.shared, true)
    assert.ok(Number(rec.physical_size) > 0, 'the export\'s size')
    const pbds = await Promise.all(rec.PBDs.map((p: string) => c<any>('PBD.get_record', p)))
    assert.deepEqual(pbds.map((p) => [p.host, p.currently_attached, p.device_config.server, p.device_config.serverpath]), [[hosts.get(1), true, nfs.address, nfs.exportPath]])
    assert.ok(existsSync(srDir()))
    const sm = Object.values(await c<Record<string, any>>('SM.get_all_records')).find((m) => m.type === 'nfs')
    assert.ok(sm?.capabilities.includes('VDI_SNAPSHOT'))
  })

  it('a host that joins the pool gets a PBD for the shared SR, plugged', async () => {
    await lab.join(2)
    for (const h of await c<string[]>('host.get_all')) if (h !== hosts.get(1)) hosts.set(2, h)
    for (const h of hosts.values()) await waitFor('both hosts live', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', h))) || undefined, 90_000)
    const plugged = async () => {
      const pbds = await Promise.all((await c<string[]>('SR.get_PBDs', sr)).map((p) => c<any>('PBD.get_record', p)))
      return pbds.filter((p) => p.currently_attached).map((p) => p.host).sort()
    }
    await waitFor('a plugged PBD on each host', async () => (await plugged()).length === 2 || undefined, 60_000)
    assert.deepEqual(await plugged(), [...hosts.values()].sort())
    assert.match(await c<string>('SR.probe', hosts.get(2), { server: nfs.address, serverpath: nfs.exportPath }, 'nfs', {}), new RegExp(`<UUID>${srUuid}</UUID>`))
  })

  const vdis: Record<string, string> = {}
  const imageOf = (vdi: string) => join(srDir(), `${vdi}.qcow2`)

  it('VDIs on it: create, write, snapshot, clone, resize and destroy, the content checked on the server', async () => {
    const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 8 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    const uuid = await c<string>('VDI.get_uuid', vdi)
    vdis.data = uuid
    assert.ok(existsSync(imageOf(uuid)))
    // a pattern written through host 2's QEMU NFS client, as a guest would write it
    lab.exec(2, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 4M 512k', `nfs://${nfs.address}${srDir()}/${uuid}.qcow2`])
    const written = await hashOf(imageOf(uuid))
    const snapshot = await c<string>('VDI.snapshot', vdi, {})
    const clone = await c<string>('VDI.clone', snapshot, {})
    for (const v of [snapshot, clone]) assert.equal(await hashOf(imageOf(await c<string>('VDI.get_location', v))), written)
    assert.equal(await hashOf(imageOf(await c<string>('VDI.get_location', vdi))), written, 'the VDI itself after its snapshot')
    await c('VDI.resize', clone, 16 * MiB)
    assert.equal(Number(await c('VDI.get_virtual_size', clone)), 16 * MiB)
    const cloneImage = imageOf(await c<string>('VDI.get_location', clone))
    await c('VDI.destroy', clone)
    await c('VDI.destroy', snapshot)
    // their images go with the SR's collection, which the destroys start; the chain is one image again
    await waitFor('the clone\'s image to go', () => !existsSync(cloneImage) || undefined, 30_000)
    await waitFor('the snapshot\'s base to be merged', () => readdirSync(srDir()).length === 1 || undefined, 30_000)
    assert.equal(await hashOf(imageOf(await c<string>('VDI.get_location', vdi))), written, 'the VDI after the merge')
    vdis.location = await c<string>('VDI.get_location', vdi)
  })

  it('a VM whose disks are on it starts on host 1, then on host 2 with the same disk content', async () => {
    const local = await newGuest(lab.host(1).url, s, 'local guest')
    const vm = await c<string>('VM.copy', local.ref, 'NFS guest', sr)
    const data = await c<string>('VDI.get_by_uuid', vdis.data)
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const uuid = await c<string>('VM.get_uuid', vm)
    const disks = (await c<string[]>('VM.get_VBDs', vm)).map(async (vbd) => c<string>('VDI.get_SR', await c<string>('VBD.get_VDI', vbd)))
    assert.deepEqual(new Set(await Promise.all(disks)), new Set([sr]))
    assert.deepEqual((await c<string[]>('VM.get_possible_hosts', vm)).sort(), [...hosts.values()].sort())

    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest on host 1 to record ticks on its data disk', () => /FLOTILLA tick=3 /.test(lab.host(1).daemon.serial(uuid)) || undefined, 180_000)
    await c('VM.hard_shutdown', vm)
    await c('VM.start_on', vm, hosts.get(2), false, false)
    await waitFor('the guest on host 2 to boot', () => /FLOTILLA data disk=/.test(lab.host(2).daemon.serial(uuid)) || undefined, 180_000)
    // the record host 1's run left on the data disk, read back on host 2
    assert.match(lab.host(2).daemon.serial(uuid), /FLOTILLA data disk=\S+ previous: FLOTILLA-DATA boots=1 tick=\d+/)
    const pbd2 = (await Promise.all((await c<string[]>('SR.get_PBDs', sr)).map(async (p) => [p, await c<string>('PBD.get_host', p)]))).find(([, h]) => h === hosts.get(2))![0]!
    assert.equal((await failure('PBD.unplug', pbd2))[0], 'SR_DEVICE_IN_USE', 'the SR stays plugged under a running VM')
    await c('VM.hard_shutdown', vm)
    await c('VM.destroy', local.ref)
    guest = { ref: vm, uuid }
  })

  let guest: { ref: string; uuid: string }
  it('the server lost while the VM writes: the guest waits, goes on once the server is back, and what it wrote holds', async () => {
    const { ref: vm, uuid } = guest
    const serial = () => lab.host(1).daemon.serial(uuid)
    const seen = serial().length
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest to record ticks', () => /FLOTILLA tick=3 /.test(serial().slice(seen)) || undefined, 180_000)
    const last = await ridesOutStorageLoss(c, vm, serial, () => nfs.stop(), () => nfs.resume())
    // the last tick printed was counted after the record before it was on the disk
    const data = imageOf(await c<string>('VDI.get_location', await c<string>('VDI.get_by_uuid', vdis.data)))
    await run('qemu-img', ['check', '-f', 'qcow2', data])
    const raw = join(lab.dir, 'record.raw')
    await run('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', 'bs=512', 'count=1', `if=${data}`, `of=${raw}`])
    const record = /FLOTILLA-DATA boots=\d+ tick=(\d+)/.exec(readFileSync(raw, 'latin1'))
    assert.ok(record && Number(record[1]) >= last - 1, `the record on the disk (${record?.[0]}) is at least tick ${last - 1}`)
    await c('VM.destroy', vm)
  })

  it('forget and introduce bring it back with its VDIs found by scan', async () => {
    // the guest's runs wrote their record on the data disk since
    const hash = await hashOf(imageOf(vdis.location!))
    const pbds = await c<string[]>('SR.get_PBDs', sr)
    for (const pbd of pbds) await c('PBD.unplug', pbd)
    await c('SR.forget', sr)
    assert.ok(existsSync(imageOf(vdis.location!)), 'forget leaves the data')
    sr = await c<string>('SR.introduce', srUuid, 'NFS storage again', '', 'nfs', 'user', true, {})
    for (const h of hosts.values()) await c('PBD.plug', await c<string>('PBD.create', { host: h, SR: sr, device_config: { server: nfs.address, serverpath: nfs.exportPath }, other_config: {} }))
    await c('SR.scan', sr)
    const found = await Promise.all((await c<string[]>('SR.get_VDIs', sr)).map((v) => c<string>('VDI.get_location', v)))
    assert.ok(found.includes(vdis.location!), `scan finds the data VDI's image among ${found.join(' ')}`)
    assert.equal(await hashOf(imageOf(vdis.location!)), hash)
  })

  it('SR.destroy removes its directory from the export', async () => {
    for (const v of await c<string[]>('SR.get_VDIs', sr)) await c('VDI.destroy', v)
    await c('SR.destroy', sr)
    assert.ok(!existsSync(srDir()))
  })
})
