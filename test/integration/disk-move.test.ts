// VDI.pool_migrate on one host: the disks of the running test guest (writing 1 MiB to its data
// disk every second) move live to an ext SR on a loop device, their snapshots with them; the
// counter goes on without a reboot, what was written before holds, the old images go and QEMU
// holds none of them open; a target SR too small fails the move and changes nothing; a halted
// VM's disk moves by copy.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, jsonrpc, login, waitFor } from '../helpers/daemon.js'
import { newGuest, ticksOf } from '../helpers/guest.js'

const MiB = 2 ** 20
const daemon = new Daemon()
const scratch = mkdtempSync(join(tmpdir(), 'flotilla-move-'))
const loops: string[] = []
let session: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)

function loopDevice(name: string, mib: number): string {
  const file = join(scratch, name)
  execFileSync('truncate', ['-s', `${mib}M`, file])
  const dev = execFileSync('losetup', ['-f', '--show', file]).toString().trim()
  loops.push(dev)
  return dev
}

const pathOf = async (sr: string) => (await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0]))!.path!
const imageOf = async (vdi: string) => join(await pathOf(await c<string>('VDI.get_SR', vdi)), `${await c<string>('VDI.get_location', vdi)}.qcow2`)
const imagesIn = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.qcow2'))
/** The files a process has open. */
const openFiles = (pid: number) => readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
  try {
    return [readlinkSync(`/proc/${pid}/fd/${fd}`)]
  } catch {
    return []
  }
})
const qemuIo = (image: string, command: string) => execFileSync('qemu-io', ['-f', 'qcow2', '-c', command, image]).toString()
/** What the guest's record at sector 0 of its data disk says. */
function recordOn(image: string): string {
  const out = join(scratch, 'record')
  rmSync(out, { force: true })
  execFileSync('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', `if=${image}`, `of=${out}`, 'bs=512', 'count=1'])
  return readFileSync(out, 'utf8')
}

describe('VDI.pool_migrate: disks moved between the SRs of one host', () => {
  let vm: string
  let uuid: string
  let data: string
  let root: string
  let localSr: string
  let big: string
  let small: string
  const serial = () => daemon.serial(uuid)
  const vbdAt = async (userdevice: string) => {
    for (const vbd of await c<string[]>('VM.get_VBDs', vm)) if ((await c<string>('VBD.get_userdevice', vbd)) === userdevice) return vbd
    throw new Error(`no disk ${userdevice}`)
  }

  before(async () => {
    await daemon.start()
    session = await login(daemon.url)
    const host = (await c<string[]>('host.get_all'))[0]!
    localSr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
    big = await c<string>('SR.create', host, { device: loopDevice('big.img', 512) }, 0, 'big', '', 'ext', 'user', false, {})
    small = await c<string>('SR.create', host, { device: loopDevice('small.img', 24) }, 0, 'small', '', 'ext', 'user', false, {})
    data = await c<string>('VDI.create', { SR: localSr, virtual_size: 128 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    // 40 MiB the guest never writes (it writes its record at sector 0 and 1 MiB a second between 1 and 65 MiB).
    qemuIo(await imageOf(data), 'write -P 0xa7 70M 40M')
    ;({ ref: vm, uuid } = await newGuest(daemon.url, session, 'moving disks', { oem: ['flotilla:diskwrite=1'], data }))
    root = await c<string>('VBD.get_VDI', await vbdAt('0'))
    await c('VM.start', vm, false, false)
    await waitFor('the guest to tick', () => /FLOTILLA tick=3 /.test(serial()) || undefined, 180_000)
  })
  after(async () => {
    await daemon.stop()
    for (const l of readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((p) => p.startsWith(daemon.dataDir))) execFileSync('umount', [l])
    for (const dev of loops) execFileSync('losetup', ['-d', dev], { stdio: 'ignore' })
    rmSync(scratch, { recursive: true, force: true })
    await daemon.dispose()
  })

  it('refuses a VDI no VM uses, and an SR that does not exist', async () => {
    const loose = await c<string>('VDI.create', { SR: localSr, virtual_size: MiB, name_label: 'loose', type: 'user', sharable: false, read_only: false, other_config: {} })
    const refused = (await jsonrpc(daemon.url, 'VDI.pool_migrate', [session, loose, big, {}])).error
    assert.deepEqual([refused?.message, refused?.data], ['VDI_NEEDS_VM_FOR_MIGRATE', [loose]])
    assert.equal((await jsonrpc(daemon.url, 'VDI.pool_migrate', [session, data, 'OpaqueRef:nope', {}])).error?.message, 'HANDLE_INVALID')
    await c('VDI.destroy', loose)
  })

  it('a target SR too small: SR_FULL, and the VM goes on on its disk with nothing left on the target', async () => {
    const answer = await jsonrpc(daemon.url, 'VDI.pool_migrate', [session, data, small, {}])
    assert.equal(answer.error?.message, 'SR_FULL', JSON.stringify(answer))
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    assert.equal(await c('VDI.get_SR', data), localSr)
    assert.deepEqual(await c('SR.get_VDIs', small), [])
    assert.deepEqual(imagesIn(await pathOf(small)), [], 'no image left on the target')
    const seen = ticksOf(serial()).length
    await waitFor('the guest to go on ticking', () => ticksOf(serial()).length >= seen + 2 || undefined, 30_000)
    const target = await pathOf(small)
    assert.deepEqual(openFiles(daemon.qemuPid(uuid)!).filter((f) => f.startsWith(target)), [], 'QEMU holds nothing on the target')
  })

  it('moves both running disks live, their snapshot with them: the counter goes on, the old images go', async () => {
    const snapshot = await c<string>('VM.snapshot', vm, 'before the move')
    const snapshotDisks = async () => Promise.all((await c<string[]>('VM.get_VBDs', snapshot)).map((vbd) => c<string>('VBD.get_VDI', vbd)))
    const oldImages = [await imageOf(data), await imageOf(root), ...(await Promise.all((await snapshotDisks()).map(imageOf)))]
    const before = Math.max(...ticksOf(serial()))
    const movedData = await c<string>('VDI.pool_migrate', data, big, {})
    const movedRoot = await c<string>('VDI.pool_migrate', root, big, {})
    for (const [old, moved, device] of [[data, movedData, '1'], [root, movedRoot, '0']] as const) {
      assert.notEqual(moved, old, 'a new VDI')
      assert.equal(await c('VDI.get_SR', moved), big)
      await assert.rejects(c('VDI.get_record', old), /HANDLE_INVALID/, 'the old VDI is gone')
      assert.equal(await c('VBD.get_VDI', await vbdAt(device)), moved, 'the VM uses the new VDI')
    }
    data = movedData
    root = movedRoot
    for (const disk of await snapshotDisks()) {
      assert.equal(await c('VDI.get_SR', disk), big, 'the snapshot came along')
      assert.ok([data, root].includes(await c<string>('VDI.get_snapshot_of', disk)), 'a snapshot of the moved disk')
    }
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    await waitFor('the guest to go on ticking', () => Math.max(...ticksOf(serial())) >= before + 3 || undefined, 30_000)
    assert.equal(serial().match(/FLOTILLA-GUEST boot/g)?.length, 1, 'no reboot')
    const localDir = await pathOf(localSr)
    await waitFor('the old images to go', () => oldImages.every((f) => !imagesIn(localDir).includes(f.slice(localDir.length + 1))) || undefined, 30_000)
    assert.deepEqual(openFiles(daemon.qemuPid(uuid)!).filter((f) => f.startsWith(localDir)), [], 'QEMU holds nothing of the old SR open')
    // The moved disk goes on as any other: a snapshot of it live.
    await c('VM.destroy', await c<string>('VM.snapshot', vm, 'after the move'))
  })

  it('the moved disks hold what the guest wrote, and a halted VM\'s disk moves back by copy', async () => {
    const last = Math.max(...ticksOf(serial()))
    await c('VM.hard_shutdown', vm)
    const check = async () => {
      const image = await imageOf(data)
      assert.doesNotMatch(qemuIo(image, 'read -P 0xa7 70M 40M'), /verification failed/i, 'what was written before the moves')
      const tick = Number(/FLOTILLA-DATA boots=\d+ tick=(\d+)/.exec(recordOn(image))?.[1])
      assert.ok(tick >= last - 2, `the guest's last record (tick ${tick}, last printed ${last}) is on the moved disk`)
    }
    await check()
    const back = await c<string>('VDI.pool_migrate', data, localSr, {})
    assert.equal(await c('VDI.get_SR', back), localSr)
    data = back
    await check()
    await c('VM.start', vm, false, false)
    await waitFor('the guest to boot from its moved disk', () => serial().match(/FLOTILLA tick=2 /) || undefined, 180_000)
    assert.match(serial(), /FLOTILLA data disk=\/dev\/vdb previous: FLOTILLA-DATA/, 'its data disk with its record')
    await c('VM.hard_shutdown', vm)
  })
})
