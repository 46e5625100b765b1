// Live migration in a 2-host lab pool whose VM disks are on a shared NFS SR (nfs-ganesha in the
// lab's storage namespace): VM.pool_migrate moves the running test guest to host 2 and back, its
// counter going on without a reboot, a data disk's content holding, nothing of it left on the
// source; a destination QEMU killed mid-way leaves the VM running on the source and nothing on
// the destination; a QEMU of the VM left on a host it does not live on is stopped by that host.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { agentCall } from '../helpers/agent.js'
import { call, jsonrpc, waitFor } from '../helpers/daemon.js'
import { newGuest, ticksOf } from '../helpers/guest.js'
import { Lab } from '../helpers/lab.js'
import { NfsServer } from '../helpers/nfs-server.js'

const MiB = 2 ** 20

let lab: Lab
let nfs: NfsServer
let s: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)

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
