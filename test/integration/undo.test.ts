// Multi-step operations whose middle step fails leave nothing half-made (DESIGN §3's undo
// stacks): no leftover SR, PBD, VM, VDI or VBD records, no leftover image files, QEMU devices
// or taps, and the VM in the power state it had. Failures are made cheaply: an image file taken
// away (or spoilt) behind xapi's back, a device that cannot be formatted, an ISO library that
// cannot be scanned.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { agentCall } from '../helpers/agent.js'
import { newGuest as makeGuest } from '../helpers/guest.js'
import { call, Daemon, login, waitFor } from '../helpers/daemon.js'
import { tapName } from '../../src/net/bridge.js'
import { vmRunDir } from '../../src/agent/hardware.js'

const daemon = new Daemon()
const scratch = mkdtempSync(join(tmpdir(), 'flotilla-undo-'))
let url: string
let session: string
let host: string
let sr: string
let srPath: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
const MiB = 2 ** 20
const newData = (name = 'data') => c<string>('VDI.create', { SR: sr, virtual_size: 16 * MiB, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {} })
const attach = (vm: string, vdi: string, userdevice: string) =>
  c<string>('VBD.create', { VM: vm, VDI: vdi, userdevice, bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
const diskOf = async (vm: string, userdevice: string) => {
  for (const vbd of await c<string[]>('VM.get_VBDs', vm)) if ((await c('VBD.get_userdevice', vbd)) === userdevice) return c<string>('VBD.get_VDI', vbd)
  throw new Error(`no disk ${userdevice}`)
}

/** Takes a VDI's image file away, leaving garbage in its place if asked; returns how to put it back. */
async function spoil(vdi: string, { garbage = false } = {}): Promise<() => void> {
  const file = join(srPath, `${await c<string>('VDI.get_location', vdi)}.qcow2`)
  renameSync(file, `${file}.away`)
  if (garbage) writeFileSync(file, 'not a qcow2 image')
  return () => renameSync(`${file}.away`, file)
}

/** What a failed operation must leave as it was: the records of every class it makes, and the VM. */
async function state(vm: string) {
  const vbds = await c<string[]>('VM.get_VBDs', vm)
  return {
    counts: Object.fromEntries(await Promise.all(['VM', 'VDI', 'VBD', 'VIF', 'SR', 'PBD'].map(async (cls) => [cls, (await c<string[]>(`${cls}.get_all`)).length]))),
    power: await c<string>('VM.get_power_state', vm),
    residentOn: await c<string>('VM.get_resident_on', vm),
    scheduledOn: await c<string>('VM.get_scheduled_to_be_resident_on', vm),
    snapshots: await c<string[]>('VM.get_snapshots', vm),
    disks: await Promise.all(vbds.map(async (v) => [await c('VBD.get_userdevice', v), await c('VBD.get_VDI', v), await c('VBD.get_currently_attached', v)])),
    operations: await c<Record<string, string>>('VM.get_current_operations', vm),
  }
}

/** After garbage collection and a scan, the SR holds the VDIs it held: no image file was left behind. */
async function assertSrVdis(before: string[]): Promise<void> {
  await c('SR.scan', sr)
  assert.deepEqual((await c<string[]>('SR.get_VDIs', sr)).sort(), before, 'no image left behind (SR.scan would have recorded it)')
}

describe('a failed step leaves nothing half-made', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    host = (await c<string[]>('host.get_all'))[0]!
    const pool = (await c<string[]>('pool.get_all'))[0]
    sr = await c<string>('pool.get_default_SR', pool)
    srPath = (await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0])).path!
  })
  after(async () => {
    assert.doesNotMatch(daemon.output, /undoing .* failed/, 'every undo succeeded')
    await daemon.dispose()
    rmSync(scratch, { recursive: true, force: true })
  })

  it('SR.create: a device that cannot be formatted, an ISO library that cannot be scanned', async () => {
    const srs = await c<string[]>('SR.get_all')
    const pbds = await c<string[]>('PBD.get_all')
    const create = (type: string, config: Record<string, string>) => c('SR.create', host, config, 0, `broken ${type}`, '', type, type === 'iso' ? 'iso' : 'user', false, {})
    await assert.rejects(create('ext', { device: join(scratch, 'no-such-device') }), /SR_BACKEND_FAILURE/)
    const library = join(scratch, 'isos')
    mkdirSync(library)
    symlinkSync('/nonexistent/image.iso', join(library, 'dangling.iso'))
    await assert.rejects(create('iso', { location: library }))
    assert.deepEqual(await c('SR.get_all'), srs, 'no SR record left')
    assert.deepEqual(await c('PBD.get_all'), pbds, 'no PBD record left')
    assert.ok(lstatSync(join(library, 'dangling.iso')).isSymbolicLink(), 'the directory the caller named keeps its files')
  })

  it('VM.snapshot, VM.clone and VM.copy of a VM whose second disk image is gone', async () => {
    const vm = await newGuest('halted', await newData())
    const was = await state(vm.ref)
    const vdis = (await c<string[]>('SR.get_VDIs', sr)).sort()
    const restore = await spoil(await diskOf(vm.ref, '1'))
    await assert.rejects(c('VM.snapshot', vm.ref, 'never'))
    await assert.rejects(c('VM.clone', vm.ref, 'never'))
    await assert.rejects(c('VM.copy', vm.ref, 'never', sr))
    restore()
    assert.deepEqual(await state(vm.ref), was)
    await assertSrVdis(vdis)
  })

  it('VM.start of a VM whose disk image is spoilt: Halted, no QEMU, tap or run directory left', async () => {
    const vm = await newGuest('unstartable', await newData())
    const was = await state(vm.ref)
    const restore = await spoil(await diskOf(vm.ref, '1'), { garbage: true })
    await assert.rejects(c('VM.start', vm.ref, false, false))
    restore()
    assert.deepEqual(await state(vm.ref), was)
    assert.ok(!existsSync(vmRunDir(join(daemon.dataDir, 'run', 'vm'), vm.uuid)), 'no run directory')
    assert.doesNotMatch(execFileSync('ip', ['-o', 'link']).toString(), new RegExp(tapName(vm.uuid, '')), 'no tap')
    assert.doesNotMatch(execFileSync('ps', ['-eo', 'args']).toString(), new RegExp(vm.uuid), 'no QEMU')
  })

  it('VM.revert and VBD.plug on a running VM whose disk images are gone or spoilt: it runs on as it was', async () => {
    const vm = await newGuest('running', await newData())
    await c('VM.start', vm.ref, false, false)
    await waitFor('ticks', () => daemon.serial(vm.uuid).includes('FLOTILLA tick=2'))
    const snapshot = await c<string>('VM.snapshot', vm.ref, 'before')
    const was = await state(vm.ref)
    const vdis = (await c<string[]>('SR.get_VDIs', sr)).sort()
    const restoreSnapshot = await spoil(await diskOf(snapshot, '1'))
    await assert.rejects(c('VM.revert', snapshot))
    restoreSnapshot()
    assert.deepEqual(await state(vm.ref), was)
    await assertSrVdis(vdis)

    // A disk that fails halfway through its hot-plug (its image is no qcow2) leaves QEMU without a trace of it: plugged again once repaired, it works.
    const extra = await newData('extra')
    const vbd = await attach(vm.ref, extra, '2')
    const devices = await agentCall<{ disks: { id: string }[]; pci: string[] }>(daemon, 'vm.devices', { uuid: vm.uuid })
    const restoreExtra = await spoil(extra, { garbage: true })
    await assert.rejects(c('VBD.plug', vbd))
    restoreExtra()
    assert.equal(await c('VBD.get_currently_attached', vbd), false)
    assert.deepEqual(await agentCall(daemon, 'vm.devices', { uuid: vm.uuid }), devices)
    await c('VBD.plug', vbd)
    assert.equal(await c('VBD.get_currently_attached', vbd), true)
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running')
    await c('VM.hard_shutdown', vm.ref)
  })
})

const newGuest = (name: string, data: string) => makeGuest(url, session, name, { data })
