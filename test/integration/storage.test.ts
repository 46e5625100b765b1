// Storage repositories: ext4 and XFS SRs on block devices (loop devices here), ISO libraries,
// PBD plug/unplug, a full SR, SR.destroy/forget.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { open } from 'node:fs/promises'
import { format, isMounted, mount, unmount } from '../../src/storage/local-fs.js'
import { call, Daemon, jsonrpc, login, waitFor } from '../helpers/daemon.js'

const daemon = new Daemon()
const scratch = mkdtempSync(join(tmpdir(), 'flotilla-sr-'))
const loops: string[] = []
let url: string
let session: string
let host: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
const mounted = (path: string) => readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === path)

function loopDevice(name: string, mib: number): string {
  const file = join(scratch, name)
  execFileSync('truncate', ['-s', `${mib}M`, file])
  const dev = execFileSync('losetup', ['-f', '--show', file]).toString().trim()
  loops.push(dev)
  return dev
}

const createSr = (type: string, deviceConfig: Record<string, string>, name = `${type} SR`) =>
  c<string>('SR.create', host, deviceConfig, 0, name, '', type, type === 'iso' ? 'iso' : 'user', false, {})
const pbdOf = async (sr: string) => (await c<string[]>('SR.get_PBDs', sr))[0]!
const pathOf = async (sr: string) => (await c<Record<string, string>>('PBD.get_device_config', await pbdOf(sr))).path!

describe('storage repositories', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    host = (await c<string[]>('host.get_all'))[0]!
  })
  after(async () => {
    await daemon.stop()
    for (const l of readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((p) => p.startsWith(daemon.dataDir))) execFileSync('umount', [l])
    for (const dev of loops) execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
    rmSync(scratch, { recursive: true, force: true })
    await daemon.dispose()
  })

  for (const [type, mib] of [['ext', 64], ['xfs', 320]] as const) {
    it(`makes a ${type} SR on a block device, unplugs, replugs and destroys it`, async () => {
      const sr = await createSr(type, { device: loopDevice(`${type}.img`, mib) })
      const record = await c('SR.get_record', sr)
      assert.equal(record.type, type)
      assert.ok(record.physical_size > (mib / 2) * 2 ** 20 && record.physical_size <= mib * 2 ** 20, `physical_size ${record.physical_size}`)
      const path = await pathOf(sr)
      assert.ok(mounted(path), 'the filesystem is mounted while the SR is plugged')
      const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 8 * 2 ** 30, name_label: 'thin', type: 'user', sharable: false, read_only: false, other_config: {} })
      assert.equal(await c('VDI.get_virtual_size', vdi), 8 * 2 ** 30, 'thin: bigger than the device')
      assert.ok(existsSync(join(path, `${await c<string>('VDI.get_location', vdi)}.qcow2`)))
      const pbd = await pbdOf(sr)
      await c('PBD.unplug', pbd)
      assert.equal(mounted(path), false)
      assert.equal((await jsonrpc(url, 'VDI.create', [session, { SR: sr, virtual_size: 2 ** 20, name_label: 'x', type: 'user', sharable: false, read_only: false, other_config: {} }])).error?.message, 'SR_NOT_ATTACHED')
      await c('PBD.plug', pbd)
      assert.ok(mounted(path))
      assert.equal((await jsonrpc(url, 'SR.forget', [session, sr])).error?.message, 'SR_HAS_PBD', 'an SR with a plugged PBD cannot be forgotten')
      assert.equal(await c('VDI.get_virtual_size', vdi), 8 * 2 ** 30, 'the VDI is still there after a replug')
      await c('SR.destroy', sr)
      assert.equal(mounted(path), false)
      await assert.rejects(c('SR.get_record', sr), /HANDLE_INVALID/)
      await assert.rejects(c('VDI.get_record', vdi), /HANDLE_INVALID/)
    })
  }

  it('answers SR_FULL when a copy does not fit, and leaves nothing behind', async () => {
    const sr = await createSr('ext', { device: loopDevice('small.img', 24) }, 'small')
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const [vbd] = await c<string[]>('VM.get_VBDs', template)
    const big = await c<string>('VBD.get_VDI', vbd)
    const before = await c<string[]>('SR.get_VDIs', sr)
    const res = await jsonrpc(url, 'VDI.copy', [session, big, sr])
    assert.equal(res.error?.message, 'SR_FULL')
    assert.deepEqual(await c('SR.get_VDIs', sr), before)
    await c('SR.destroy', sr)
  })

  it('unmounting waits for a file held open a moment longer (a QEMU that just exited)', async () => {
    const mnt = mkdtempSync(join(scratch, 'mnt-'))
    const dev = loopDevice('busy.img', 16)
    await format(dev, 'ext4')
    await mount(dev, 'ext4', mnt)
    const held = await open(join(mnt, 'held'), 'w')
    const released = new Promise((r) => setTimeout(r, 300)).then(() => held.close())
    try {
      await unmount(mnt)
      assert.equal(await isMounted(mnt), false)
    } finally {
      await released
      if (await isMounted(mnt)) execFileSync('umount', [mnt])
    }
  })

  it('pauses a running VM whose thin disk fills its SR, with a message, instead of corrupting it', async () => {
    const sr = await createSr('ext', { device: loopDevice('tight.img', 24) }, 'tight')
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c<string>('VM.clone', template, 'filler')
    await c('VM.provision', vm)
    await c('VM.set_is_a_template', vm, false)
    await c('VM.set_bios_strings', vm, { 'oem-1': 'flotilla:diskwrite=1' })
    const data = await c<string>('VDI.create', { SR: sr, virtual_size: 256 * 2 ** 20, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VM.start', vm, false, false)
    const uuid = await c<string>('VM.get_uuid', vm)
    await waitFor('the VM to be paused by the full SR', async () => (await c('VM.get_power_state', vm)) === 'Paused', 120_000)
    const messages = Object.values(await c<Record<string, any>>('message.get_all_records'))
    assert.ok(messages.some((m) => m.obj_uuid === uuid && m.name === 'VM_PAUSED_SR_FULL'), 'a message says why')
    await c('VM.hard_shutdown', vm)
    await c('VM.destroy', vm)
    await c('SR.destroy', sr)
  })

  it('keeps ISO images in an ISO library, found by SR.scan', async () => {
    const sr = await createSr('iso', {})
    const path = await pathOf(sr)
    writeFileSync(join(path, 'tools.iso'), Buffer.alloc(4096, 1))
    await c('SR.scan', sr)
    const vdis = await c<Record<string, any>>('VDI.get_all_records_where', `field "SR" = "${sr}"`)
    const tools = Object.values(vdis).find((v) => v.name_label === 'tools.iso')
    assert.equal(tools?.virtual_size, 4096)
    assert.equal(tools?.read_only, true)
    const upload = await c<string>('VDI.create', { SR: sr, virtual_size: 2 ** 20, name_label: 'upload.iso', type: 'user', sharable: false, read_only: true, other_config: {} })
    assert.ok(existsSync(join(path, 'upload.iso')))
    const image = randomBytes(2 ** 20)
    const put = await fetch(`${url}/import_raw_vdi?vdi=${upload}&format=raw&session_id=${session}`, { method: 'PUT', body: image, headers: { 'content-length': String(image.length) } })
    assert.equal(put.status, 200)
    await put.arrayBuffer()
    await waitFor('the upload to land', () => readFileSync(join(path, 'upload.iso')).equals(image), 20_000)
    await c('VDI.destroy', upload)
    assert.equal(existsSync(join(path, 'upload.iso')), false)
    const bad = await jsonrpc(url, 'SR.create', [session, host, {}, 0, 'x', '', 'nfs-via-kernel', 'user', false, {}])
    assert.deepEqual([bad.error?.message, ...(bad.error?.data ?? [])], ['SR_UNKNOWN_DRIVER', 'nfs-via-kernel'])
  })
})
