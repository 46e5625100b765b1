// Live migration in a 2-host lab pool whose VM disks are on a shared NFS SR (nfs-ganesha in the
// lab's storage namespace): VM.pool_migrate moves the running test guest to host 2 and back, its
// counter going on without a reboot, a data disk's content holding, nothing of it left on the
// source; a destination QEMU killed mid-way leaves the VM running on the source and nothing on
// the destination; a QEMU of the VM left on a host it does not live on is stopped by that host.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { agentCall } from '../helpers/agent.js'
import { call, jsonrpc, ROOT, waitFor } from '../helpers/daemon.js'
import { newGuest, ticksOf } from '../helpers/guest.js'
import { Lab } from '../helpers/lab.js'
import { NfsServer } from '../helpers/nfs-server.js'

const MiB = 2 ** 20

let lab: Lab
let nfs: NfsServer
let s: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)
/** xe pointed at the master, as an administrator runs it. */
const xe = async (...args: string[]) => (await promisify(execFile)(process.execPath, [join(ROOT, 'bin', 'xe.js'), '-s', lab.host(1).address, '-u', 'root', '-pw', lab.password, ...args], { timeout: 300_000 })).stdout.trim()

/** The QEMU processes of a VM on this machine, whichever namespace they run in. */
function qemusOf(uuid: string): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(uuid)
    } catch {
      return false
    }
  }).map(Number)
}

/** What a migration destination for `uuid` is asked to start: a small QEMU, no disks, waiting for the stream. */
const receivingQemu = (uuid: string) => ({ uuid, name: 'receiving', memoryBytes: 64 * MiB, vcpus: 1, maxVcpus: 1, firmware: 'bios' as const, secureBoot: false, platform: {}, bootOrder: 'c', oemStrings: [], haltOnReboot: false, disks: [], nics: [], paused: true })

describe('live migration between the hosts of a pool, on shared NFS storage', () => {
  const hosts = new Map<number, string>()
  let vm: string
  let uuid: string
  let dataImage: string
  let local: { ref: string; uuid: string }

  before(async () => {
    lab = await Lab.up(2)
    nfs = await NfsServer.start(lab)
    await lab.join(2)
    s = await call<string>(lab.host(1).url, 'session.login_with_password', 'root', lab.password)
    for (const h of await c<string[]>('host.get_all')) hosts.set((await c<string>('host.get_address', h)) === lab.host(1).address ? 1 : 2, h)
    for (const h of hosts.values()) await waitFor('both hosts live', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', h))) || undefined, 90_000)
    const sr = await c<string>('SR.create', hosts.get(1), { server: nfs.address, serverpath: nfs.exportPath }, 0, 'NFS', '', 'nfs', 'user', true, {})
    local = await newGuest(lab.host(1).url, s, 'local guest')
    vm = await c<string>('VM.copy', local.ref, 'migrating guest', sr)
    uuid = await c<string>('VM.get_uuid', vm)
    const data = await c<string>('VDI.create', { SR: sr, virtual_size: 16 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    // What the guest never writes (it writes its record at sector 0): 1 MiB at 8 MiB, written as QEMU writes, through NFS, and checked after the moves.
    dataImage = `nfs://${nfs.address}${nfs.exportPath}/${await c<string>('SR.get_uuid', sr)}/${await c<string>('VDI.get_location', data)}.qcow2`
    lab.exec(1, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa7 8M 1M', dataImage])
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest to tick on host 1', () => /FLOTILLA tick=3 /.test(lab.host(1).daemon.serial(uuid)) || undefined, 180_000)
  })
  afterEach((t) => lab?.reportFailure(t))
  after(() => lab?.down())

  it('VM.pool_migrate moves the running guest to host 2: its counter goes on without a reboot, nothing of it stays on host 1', async () => {
    assert.ok((await c<string[]>('VM.get_allowed_operations', vm)).includes('pool_migrate'))
    const before = Math.max(...ticksOf(lab.host(1).daemon.serial(uuid)))
    await c('VM.pool_migrate', vm, hosts.get(2), {})
    assert.equal(await c('VM.get_resident_on', vm), hosts.get(2))
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    await waitFor('the guest to tick on host 2', () => ticksOf(lab.host(2).daemon.serial(uuid)).length >= 2 || undefined, 60_000)
    const after = ticksOf(lab.host(2).daemon.serial(uuid))
    assert.ok(after[0]! >= before && after[0]! <= before + 5, `the counter goes on: ${before} on host 1, then ${after[0]} on host 2`)
    assert.doesNotMatch(lab.host(2).daemon.serial(uuid), /FLOTILLA-GUEST boot/, 'no reboot')
    assert.equal(lab.host(1).daemon.qemuPid(uuid), undefined, 'no run directory left on host 1')
    assert.deepEqual(qemusOf(uuid), [lab.host(2).daemon.qemuPid(uuid)], 'one QEMU, on host 2')
    const consoles = await Promise.all((await c<string[]>('VM.get_consoles', vm)).map((con) => c<string>('console.get_location', con)))
    assert.ok(consoles.length === 2 && consoles.every((l) => l.includes(lab.host(2).address)), `the consoles are host 2's: ${consoles.join(' ')}`)
    const messages = Object.values(await c<Record<string, { name: string; obj_uuid: string; body: string }>>('message.get_all_records'))
    assert.ok(messages.some((m) => m.name === 'VM_MIGRATED' && m.obj_uuid === uuid && /to host .*uuid: /.test(m.body)), 'a VM_MIGRATED message')
  })

  it('a destination QEMU killed mid-way leaves the VM running on the source, and nothing on the destination', async () => {
    // Host 2 runs it now; host 1 is the destination, and its QEMU dies as soon as it appears.
    let killed: number | undefined
    const killer = setInterval(() => {
      const pid = lab.host(1).daemon.qemuPid(uuid)
      if (pid && !killed) {
        killed = pid
        process.kill(pid, 'SIGKILL')
      }
    }, 2)
    const answer = await jsonrpc(lab.host(1).url, 'VM.pool_migrate', [s, vm, hosts.get(1), {}]).finally(() => clearInterval(killer))
    assert.ok(killed, 'the destination QEMU was started, and killed')
    assert.ok(answer.error, `the migration failed: ${JSON.stringify(answer)}`)
    assert.equal(await c('VM.get_resident_on', vm), hosts.get(2))
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    assert.equal(await c('VM.get_scheduled_to_be_resident_on', vm), 'OpaqueRef:NULL')
    const seen = ticksOf(lab.host(2).daemon.serial(uuid)).length
    await waitFor('the guest to go on ticking on host 2', () => ticksOf(lab.host(2).daemon.serial(uuid)).length >= seen + 2 || undefined, 30_000)
    await waitFor('no QEMU of it on host 1', () => qemusOf(uuid).length === 1 || undefined, 10_000)
    assert.equal(lab.host(1).daemon.qemuPid(uuid), undefined)
    assert.ok((await c<string[]>('VM.get_allowed_operations', vm)).includes('pool_migrate'), 'the VM can migrate again')
  })

  it('migrates back to host 1, and the data disk holds what was written before the first move', async () => {
    await c('VM.pool_migrate', vm, hosts.get(1), {})
    assert.equal(await c('VM.get_resident_on', vm), hosts.get(1))
    await waitFor('the guest to tick on host 1', () => ticksOf(lab.host(1).daemon.serial(uuid)).length >= 2 || undefined, 60_000)
    assert.doesNotMatch(lab.host(1).daemon.serial(uuid), /FLOTILLA-GUEST boot/)
    assert.deepEqual(qemusOf(uuid), [lab.host(1).daemon.qemuPid(uuid)])
    await c('VM.hard_shutdown', vm)
    const stdout = lab.exec(1, 'qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xa7 8M 1M', dataImage])
    assert.match(stdout, /read 1048576\/1048576 bytes/)
    assert.doesNotMatch(stdout, /verification failed/i, 'the data written before the moves')
  })

  it('the destination host cut off mid-way: the VM runs on on the source, and the destination stops its QEMU once back', async () => {
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest to tick on host 1', () => ticksOf(lab.host(1).daemon.serial(uuid)).length >= 2 || undefined, 180_000)
    let cut = false
    const cutter = setInterval(() => {
      if (!cut && lab.host(2).daemon.qemuPid(uuid)) {
        cut = true
        lab.cut(2)
      }
    }, 2)
    const answer = await jsonrpc(lab.host(1).url, 'VM.pool_migrate', [s, vm, hosts.get(2), {}]).finally(() => clearInterval(cutter))
    assert.ok(cut, 'host 2 was cut off once its QEMU was there')
    try {
      assert.ok(['VM_MIGRATE_FAILED', 'CANNOT_CONTACT_HOST'].includes(String(answer.error?.message)), JSON.stringify(answer))
      assert.equal(await c('VM.get_resident_on', vm), hosts.get(1))
      assert.equal(await c('VM.get_power_state', vm), 'Running')
      const seen = ticksOf(lab.host(1).daemon.serial(uuid)).length
      await waitFor('the guest to go on ticking on host 1', () => ticksOf(lab.host(1).daemon.serial(uuid)).length >= seen + 2 || undefined, 30_000)
    } finally {
      lab.heal(2)
    }
    await waitFor('host 2 to stop the QEMU it was given', () => qemusOf(uuid).length === 1 || undefined, 90_000)
    assert.equal(lab.host(2).daemon.qemuPid(uuid), undefined)
    assert.equal(await c('VM.get_resident_on', vm), hosts.get(1))
    await c('VM.hard_shutdown', vm)
  })

  it('a VM with a disk on host 1\'s local SR is refused with VM_REQUIRES_SR and runs on (XO then uses storage motion)', async () => {
    await c('VM.start_on', local.ref, hosts.get(1), false, false)
    const answer = await jsonrpc(lab.host(1).url, 'VM.pool_migrate', [s, local.ref, hosts.get(2), {}])
    assert.equal(answer.error?.message, 'VM_REQUIRES_SR', JSON.stringify(answer))
    assert.equal(await c('VM.get_resident_on', local.ref), hosts.get(1))
    assert.equal(await c('VM.get_power_state', local.ref), 'Running')
    assert.equal(await c('VM.get_scheduled_to_be_resident_on', local.ref), 'OpaqueRef:NULL')
    assert.deepEqual(qemusOf(local.uuid), [lab.host(1).daemon.qemuPid(local.uuid)])
    await c('VM.hard_shutdown', local.ref)
  })

  describe('storage motion: VM.migrate_send between the two hosts\' local SRs', () => {
    const localSr = new Map<number, string>()
    const token = async (n: number) => {
      const pif = (await Promise.all((await c<string[]>('host.get_PIFs', hosts.get(n))).map(async (p) => ({ p, management: await c<boolean>('PIF.get_management', p) })))).find((p) => p.management)!.p
      return c<Record<string, string>>('host.migrate_receive', hosts.get(n), await c<string>('PIF.get_network', pif), {})
    }
    const disksOf = async (vmRef: string) => {
      const vbds = await Promise.all((await c<string[]>('VM.get_VBDs', vmRef)).map((v) => c<Record<string, string>>('VBD.get_record', v)))
      return vbds.filter((v) => v.type === 'Disk').map((v) => v.VDI!)
    }
    const mapTo = async (vmRef: string, sr: string) => Object.fromEntries((await disksOf(vmRef)).map((vdi) => [vdi, sr]))
    const srDir = async (sr: string) => (await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0]))!.path!
    const imagesIn = async (sr: string) => readdirSync(await srDir(sr)).filter((f) => f.endsWith('.qcow2')).sort()
    let snapshot: string
    let dataImageOn: () => Promise<string>
    /** What each host's local SR holds besides the guest (the template's disk): images, then VDIs. */
    const others = new Map<number, { images: string[]; vdis: string[] }>()
    const leftOf = async (n: number) => ({ images: await imagesIn(localSr.get(n)!), vdis: ((await c<string[]>('SR.get_VDIs', localSr.get(n))) as string[]).sort() })
    /** Whether host n's local SR holds nothing of the guest: the VDIs it had besides, and no image it did not have (the collection may have taken some of those). */
    const clean = async (n: number) => {
      const left = await leftOf(n)
      return JSON.stringify(left.vdis) === JSON.stringify(others.get(n)!.vdis) && left.images.every((f) => others.get(n)!.images.includes(f))
    }

    before(async () => {
      for (const [n, h] of hosts) {
        for (const pbd of await c<string[]>('host.get_PBDs', h)) {
          const sr = await c<string>('PBD.get_SR', pbd)
          if (!(await c<boolean>('SR.get_shared', sr)) && (await c<string>('SR.get_content_type', sr)) !== 'iso') localSr.set(n, sr)
        }
      }
      const [root] = await disksOf(local.ref)
      for (const n of [1, 2]) others.set(n, await leftOf(n))
      const rootLocation = await c<string>('VDI.get_location', root)
      others.set(1, { images: others.get(1)!.images.filter((f) => f !== `${rootLocation}.qcow2`), vdis: others.get(1)!.vdis.filter((v) => v !== root) })
      const data = await c<string>('VDI.create', { SR: localSr.get(1), virtual_size: 16 * MiB, name_label: 'local data', type: 'user', sharable: false, read_only: false, other_config: {} })
      await c('VBD.create', { VM: local.ref, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
      const dataVbd = (await c<string[]>('VDI.get_VBDs', data))[0]!
      dataImageOn = async () => {
        const vdi = await c<string>('VBD.get_VDI', dataVbd)
        return `${await srDir(await c<string>('VDI.get_SR', vdi))}/${await c<string>('VDI.get_location', vdi)}.qcow2`
      }
      lab.exec(1, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5c 8M 1M', await dataImageOn()])
      snapshot = await c<string>('VM.snapshot', local.ref, 'before the motion')
      await c('VM.start_on', local.ref, hosts.get(1), false, false)
      await waitFor('the local guest to tick on host 1', () => ticksOf(lab.host(1).daemon.serial(local.uuid)).length >= 2 || undefined, 180_000)
    })

    it('host.migrate_receive gives the five keys; VM.assert_can_migrate answers migrate_send\'s refusals and moves nothing', async () => {
      const dest = await token(2)
      assert.deepEqual(Object.keys(dest).sort(), ['SM', 'host', 'master', 'session_id', 'xenops'])
      assert.equal(dest.host, hosts.get(2))
      assert.equal(dest.master, `http://${lab.host(1).address}`)
      assert.equal(dest.xenops, `http://${lab.host(2).address}/services/xenops?session_id=${dest.session_id}`)
      const refusal = async (vdiMap: Record<string, string>, vifMap: Record<string, string>, options: Record<string, string> = {}) => {
        const answer = await jsonrpc(lab.host(1).url, 'VM.assert_can_migrate', [s, local.ref, dest, true, vdiMap, vifMap, options])
        return [answer.error?.message, ...(answer.error?.data ?? [])]
      }
      const [root] = await disksOf(local.ref)
      assert.deepEqual(await refusal({ [root!]: localSr.get(2)! }, {}), ['VDI_NOT_IN_MAP', (await disksOf(local.ref))[1]])
      const toHost1 = await mapTo(local.ref, localSr.get(1)!)
      assert.deepEqual((await refusal(toHost1, {})).slice(0, 3), ['VM_REQUIRES_SR', local.ref, localSr.get(1)])
      const toHost2 = await mapTo(local.ref, localSr.get(2)!)
      const vif = (await c<string[]>('VM.get_VIFs', local.ref))[0]
      if (vif) assert.equal((await refusal(toHost2, { [vif]: await c<string>('VIF.get_network', vif) }))[0], 'OPERATION_NOT_ALLOWED')
      assert.equal((await refusal(toHost2, {}, { copy: 'true' }))[0], 'OPERATION_NOT_ALLOWED')
      assert.deepEqual(await refusal(toHost2, {}), [undefined], 'a full map to host 2\'s SR passes')
      assert.equal(await c('VM.get_resident_on', local.ref), hosts.get(1))
      assert.ok(await clean(2), 'nothing made on host 2')
    })

    it('moves the running guest with its disks and snapshot to host 2\'s local SR: the counter goes on, nothing of it stays on host 1', async () => {
      const before = Math.max(...ticksOf(lab.host(1).daemon.serial(local.uuid)))
      const oldDisks = await disksOf(local.ref)
      const vdiMap = await mapTo(local.ref, localSr.get(2)!)
      // As xo-server's _migrateVmWithStorageMotion calls it through Xen Orchestra's own library (reference §2.8): the token, an asserting task, a sending task.
      const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => { connect(): Promise<void>; disconnect(): Promise<void>; call<T>(method: string, ...args: unknown[]): Promise<T>; callAsync<T>(method: string, ...args: unknown[]): Promise<T> } }
      const xo = new Xapi({ url: lab.host(1).url, auth: { user: 'root', password: lab.password }, allowUnauthorized: true, callTimeout: 300e3 })
      await xo.connect()
      try {
        const pif = (await Promise.all((await xo.call<string[]>('host.get_PIFs', hosts.get(2))).map(async (p) => ({ p, management: await xo.call<boolean>('PIF.get_management', p) })))).find((p) => p.management)!.p
        const dest = await xo.call<Record<string, string>>('host.migrate_receive', hosts.get(2), await xo.call<string>('PIF.get_network', pif), {})
        await xo.callAsync('VM.assert_can_migrate', local.ref, dest, true, vdiMap, {}, { force: 'false' })
        assert.equal(await xo.callAsync('VM.migrate_send', local.ref, dest, true, vdiMap, {}, { force: 'false' }), local.ref)
      } finally {
        await xo.disconnect()
      }
      assert.equal(await c('VM.get_resident_on', local.ref), hosts.get(2))
      assert.equal(await c('VM.get_power_state', local.ref), 'Running')
      await waitFor('the guest to tick on host 2', () => ticksOf(lab.host(2).daemon.serial(local.uuid)).length >= 2 || undefined, 60_000)
      const after = ticksOf(lab.host(2).daemon.serial(local.uuid))
      assert.ok(after[0]! >= before && after[0]! <= before + 5, `the counter goes on: ${before} on host 1, then ${after[0]} on host 2`)
      assert.doesNotMatch(lab.host(2).daemon.serial(local.uuid), /FLOTILLA-GUEST boot/, 'no reboot')
      assert.deepEqual(qemusOf(local.uuid), [lab.host(2).daemon.qemuPid(local.uuid)], 'one QEMU, on host 2')
      const newDisks = await disksOf(local.ref)
      for (const vdi of newDisks) assert.equal(await c('VDI.get_SR', vdi), localSr.get(2))
      for (const vdi of oldDisks) assert.equal((await jsonrpc(lab.host(1).url, 'VDI.get_record', [s, vdi])).error?.message, 'HANDLE_INVALID', 'the old VDIs are gone')
      const snapDisks = await disksOf(snapshot)
      for (const vdi of snapDisks) {
        assert.equal(await c('VDI.get_SR', vdi), localSr.get(2), 'the snapshot\'s disks came along')
        assert.ok(newDisks.includes(await c<string>('VDI.get_snapshot_of', vdi)), 'each a snapshot of the moved disk')
      }
      await waitFor('no image of the guest left on host 1', async () => (await clean(1)) || undefined, 30_000)
    })

    it('a destination QEMU killed during the mirror leaves the guest running on host 2, and nothing on host 1', async () => {
      const images = await imagesIn(localSr.get(2)!)
      let killed: number | undefined
      const killer = setInterval(() => {
        const pid = lab.host(1).daemon.qemuPid(local.uuid)
        if (pid && !killed) {
          killed = pid
          process.kill(pid, 'SIGKILL')
        }
      }, 2)
      const vdiMap = await mapTo(local.ref, localSr.get(1)!)
      const answer = await jsonrpc(lab.host(1).url, 'VM.migrate_send', [s, local.ref, await token(1), true, vdiMap, {}, {}]).finally(() => clearInterval(killer))
      assert.ok(killed, 'the destination QEMU was started, and killed')
      assert.ok(answer.error, `the migration failed: ${JSON.stringify(answer)}`)
      assert.equal(await c('VM.get_resident_on', local.ref), hosts.get(2))
      assert.equal(await c('VM.get_power_state', local.ref), 'Running')
      const seen = ticksOf(lab.host(2).daemon.serial(local.uuid)).length
      await waitFor('the guest to go on ticking on host 2', () => ticksOf(lab.host(2).daemon.serial(local.uuid)).length >= seen + 2 || undefined, 30_000)
      assert.ok(await clean(1), `no VDI nor image of it left on host 1: ${JSON.stringify(await leftOf(1))}`)
      assert.deepEqual(await imagesIn(localSr.get(2)!), images, 'host 2\'s images as they were')
      for (const vdi of await disksOf(local.ref)) assert.equal(await c('VDI.get_SR', vdi), localSr.get(2))
    })

    it('moves back to host 1, and the data disk holds what was written before the first move', async () => {
      // As an administrator would: xe vm-migrate with the SR every disk goes to.
      await xe('vm-migrate', `uuid=${local.uuid}`, `host=${await c<string>('host.get_uuid', hosts.get(1))}`, `sr-uuid=${await c<string>('SR.get_uuid', localSr.get(1))}`)
      assert.equal(await c('VM.get_resident_on', local.ref), hosts.get(1))
      await waitFor('the guest to tick on host 1', () => ticksOf(lab.host(1).daemon.serial(local.uuid)).length >= 2 || undefined, 60_000)
      assert.doesNotMatch(lab.host(1).daemon.serial(local.uuid), /FLOTILLA-GUEST boot/)
      await c('VM.hard_shutdown', local.ref)
      const stdout = lab.exec(1, 'qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5c 8M 1M', await dataImageOn()])
      assert.match(stdout, /read 1048576\/1048576 bytes/)
      assert.doesNotMatch(stdout, /verification failed/i, 'the data written before the moves')
    })

    it('a halted VM\'s disks move by copy', async () => {
      const vdiMap = await mapTo(local.ref, localSr.get(2)!)
      await c('VM.migrate_send', local.ref, await token(2), false, vdiMap, {}, {})
      for (const vdi of await disksOf(local.ref)) assert.equal(await c('VDI.get_SR', vdi), localSr.get(2))
      assert.equal(await c('VM.get_power_state', local.ref), 'Halted')
      const stdout = lab.exec(2, 'qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5c 8M 1M', await dataImageOn()])
      assert.doesNotMatch(stdout, /verification failed/i)
      await waitFor('no image of the guest left on host 1', async () => (await clean(1)) || undefined, 30_000)
    })
  })

  it('a QEMU of the VM on a host it does not live on (a migration destination left while out of reach) is stopped by that host', async () => {
    assert.equal(await c('VM.get_power_state', vm), 'Halted')
    await agentCall(lab.host(2).daemon, 'vm.receive', { request: receivingQemu(uuid), address: lab.host(2).address })
    assert.equal(qemusOf(uuid).length, 1, 'a destination QEMU waits on host 2')
    await waitFor('host 2 to stop it', () => qemusOf(uuid).length === 0 || undefined, 60_000)
    assert.equal(await c('VM.get_power_state', vm), 'Halted', 'the VM itself is as it was')
  })

  it('a receiving QEMU left when its host\'s daemon is killed -9 is stopped once the daemon is back', async () => {
    await agentCall(lab.host(2).daemon, 'vm.receive', { request: receivingQemu(uuid), address: lab.host(2).address })
    process.kill(lab.host(2).daemonPid!, 'SIGKILL')
    await waitFor('the daemon to be gone', () => (lab.host(2).daemonPid === undefined || !existsSync(`/proc/${lab.host(2).daemonPid}`)) || undefined, 10_000)
    assert.equal(qemusOf(uuid).length, 1, 'its QEMU outlives the daemon')
    await lab.restart(2)
    await waitFor('host 2 to stop the orphan', () => qemusOf(uuid).length === 0 || undefined, 90_000)
    assert.equal(await c('VM.get_power_state', vm), 'Halted')
  })
})
