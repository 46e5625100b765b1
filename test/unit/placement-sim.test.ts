// Placement and host removal through the real messages, on the simulated host with a second host
// record beside it (as a pool member's would be): its agent cannot be reached from here, so work
// addressed to it fails HOST_OFFLINE, which shows where the work was sent.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { VM_OVERHEAD } from '../../src/xapi/placement.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
let here: string
let localSr: string
const NULL = 'OpaqueRef:NULL'
const MiB = 2 ** 20
const GiB = 2 ** 30

const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)
const failure = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail('the call succeeded'),
    (err: unknown) => (err instanceof XapiCallError ? err.description : assert.fail(String(err))),
  )

/** Another host's records, as a pool member's are: its metrics (live or not, its RAM), a CPU count, optionally a PBD of `sr` plugged there. */
async function addHost(opts: { live: boolean; memory: number; enabled?: boolean; sr?: string; control?: boolean }): Promise<string> {
  return host.db.transact((tx) => {
    const metrics = tx.create('host_metrics', { live: opts.live, memory_total: opts.memory, memory_free: opts.memory })
    const ref = tx.create('host', { name_label: 'member', hostname: 'member', address: '192.0.2.11', enabled: opts.enabled ?? true, metrics, cpu_info: { cpu_count: '4' } })
    tx.create('host_cpu', { host: ref, number: 0 })
    if (opts.sr) tx.create('PBD', { host: ref, SR: opts.sr, device_config: { path: '/elsewhere' }, currently_attached: true })
    if (opts.control !== false) tx.create('VM', { name_label: 'Control domain on member', is_control_domain: true, power_state: 'Running', resident_on: ref, memory_static_max: GiB })
    return ref
  })
}

/** A VM with one disk in `sr`, or none. */
async function newVm(name: string, opts: { memory?: number; sr?: string } = {}): Promise<string> {
  const memory = opts.memory ?? 256 * MiB
  const vm = await c<string>('VM.create', { name_label: name, memory_static_min: memory, memory_dynamic_min: memory, memory_dynamic_max: memory, memory_static_max: memory, VCPUs_max: 1, VCPUs_at_startup: 1, HVM_boot_policy: 'BIOS order', HVM_boot_params: { order: 'c' }, HVM_shadow_multiplier: 1, actions_after_crash: 'restart', other_config: {} })
  if (opts.sr) {
    const vdi = await c<string>('VDI.create', { SR: opts.sr, virtual_size: 16 * MiB, name_label: `${name} disk`, type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  }
  return vm
}

/** Takes a member record out again, as a user would: it goes down, then host.destroy. */
async function forget(ref: string): Promise<void> {
  await host.db.transact((tx) => tx.update('host_metrics', tx.get('host', ref).metrics, { live: false }))
  await c('host.destroy', ref)
}

describe('placement on a pool of the sim host and a member record', () => {
  before(async () => {
    host = await startSimHost()
    here = host.svc.hostRef
    localSr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  })
  after(() => host?.dispose())

  it('host.compute_free_memory: RAM less the control domain and each running VM with its QEMU overhead', async () => {
    const free = async () => Number(await c('host.compute_free_memory', here))
    const before = await free()
    const total = Number(await c('host_metrics.get_memory_total', await c('host.get_metrics', here)))
    const dom0 = Number(await c('VM.get_memory_static_max', await c('host.get_control_domain', here)))
    assert.equal(before, total - dom0)
    const vm = await newVm('counted', { memory: 512 * MiB })
    await c('VM.start', vm, false, false)
    assert.equal(await free(), before - 512 * MiB - VM_OVERHEAD)
    await c('VM.hard_shutdown', vm)
    assert.equal(await free(), before)
  })

  it('VM.start reserves the host (scheduled_to_be_resident_on) while it starts, then the VM is resident there', async () => {
    const vm = await newVm('reserved')
    const call = host.agent.call.bind(host.agent)
    let seen: string | undefined
    host.agent.call = (async (method: string, ...args: unknown[]) => {
      if (method === 'vm.start') seen = await c<string>('VM.get_scheduled_to_be_resident_on', vm)
      return (call as (m: string, ...a: unknown[]) => Promise<unknown>)(method, ...args)
    }) as typeof host.agent.call
    try {
      await c('VM.start', vm, false, false)
    } finally {
      host.agent.call = call
    }
    assert.equal(seen, here)
    assert.equal(await c('VM.get_scheduled_to_be_resident_on', vm), NULL)
    assert.equal(await c('VM.get_resident_on', vm), here)
    await c('VM.hard_shutdown', vm)
  })

  it('VM.start_on and VM.assert_can_boot_here check the host given, in xapi order', async () => {
    const diskless = await newVm('diskless')
    const onLocal = await newVm('on local storage', { sr: localSr })
    const dead = await addHost({ live: false, memory: 64 * GiB })
    const disabled = await addHost({ live: true, enabled: false, memory: 64 * GiB })
    const small = await addHost({ live: true, memory: 2 * GiB })
    const roomy = await addHost({ live: true, memory: 64 * GiB })
    try {
      assert.deepEqual(await failure(c('VM.start_on', diskless, dead, false, false)), ['HOST_NOT_LIVE'])
      assert.deepEqual(await failure(c('VM.start_on', diskless, disabled, false, false)), ['HOST_DISABLED', disabled])
      assert.deepEqual(await failure(c('VM.start_on', onLocal, roomy, false, false)), ['VM_REQUIRES_SR', onLocal, localSr])
      const big = await newVm('big', { memory: 1536 * MiB })
      assert.deepEqual(await failure(c('VM.start_on', big, small, false, false)), ['HOST_NOT_ENOUGH_FREE_MEMORY', String(1536 * MiB + VM_OVERHEAD), String(1 * GiB)])
      assert.deepEqual(await failure(c('VM.assert_can_boot_here', big, small)), ['HOST_NOT_ENOUGH_FREE_MEMORY', String(1536 * MiB + VM_OVERHEAD), String(1 * GiB)])
      await c('VM.assert_can_boot_here', diskless, roomy)
      await c('VM.assert_can_boot_here', onLocal, here)
      // The checks pass: the start goes to that host's agent, which this host cannot reach yet.
      assert.deepEqual(await failure(c('VM.start_on', diskless, roomy, false, false)), ['HOST_OFFLINE', roomy])
      assert.equal(await c('VM.get_power_state', diskless), 'Halted')
      assert.equal(await c('VM.get_scheduled_to_be_resident_on', diskless), NULL, 'the reservation is dropped')
      await c('VM.start_on', onLocal, here, false, false)
      assert.equal(await c('VM.get_resident_on', onLocal), here)
      await c('VM.hard_shutdown', onLocal)
    } finally {
      for (const h of [dead, disabled, small, roomy]) await forget(h)
    }
  })

  it('VM.resume_on checks the host given, the suspend image SR included', async () => {
    const vm = await newVm('suspended')
    await c('VM.start', vm, false, false)
    await c('VM.suspend', vm)
    const imageSr = await c<string>('VDI.get_SR', await c<string>('VM.get_suspend_VDI', vm))
    const dead = await addHost({ live: false, memory: 64 * GiB })
    const member = await addHost({ live: true, memory: 64 * GiB })
    try {
      assert.deepEqual(await failure(c('VM.resume_on', vm, dead, false, false)), ['HOST_NOT_LIVE'])
      assert.deepEqual(await failure(c('VM.resume_on', vm, member, false, false)), ['VM_REQUIRES_SR', vm, imageSr])
      assert.deepEqual(await c('VM.get_possible_hosts', vm), [here])
      await c('VM.resume_on', vm, here, false, false)
      assert.equal(await c('VM.get_resident_on', vm), here)
      await c('VM.hard_shutdown', vm)
    } finally {
      for (const h of [dead, member]) await forget(h)
    }
  })

  it('VM.start picks the affinity host, else the live enabled host with the most free memory that sees the disks', async () => {
    const diskless = await newVm('placed')
    const onLocal = await newVm('placed on local storage', { sr: localSr })
    const roomier = await addHost({ live: true, memory: 256 * GiB })
    const dead = await addHost({ live: false, memory: 512 * GiB })
    try {
      assert.deepEqual(new Set(await c<string[]>('VM.get_possible_hosts', diskless)), new Set([here, roomier]))
      assert.deepEqual(await c<string[]>('VM.get_possible_hosts', onLocal), [here])
      // The roomier member is chosen: the start goes to its agent.
      assert.deepEqual(await failure(c('VM.start', diskless, false, false)), ['HOST_OFFLINE', roomier])
      await c('VM.set_affinity', diskless, here)
      await c('VM.start', diskless, false, false)
      assert.equal(await c('VM.get_resident_on', diskless), here)
      await c('VM.start', onLocal, false, false)
      assert.equal(await c('VM.get_resident_on', onLocal), here, 'its disk pins it to this host')
      for (const vm of [diskless, onLocal]) await c('VM.hard_shutdown', vm)
      await c('VM.set_affinity', diskless, NULL)
      await c('host.disable', roomier)
      await c('VM.start', diskless, false, false)
      assert.equal(await c('VM.get_resident_on', diskless), here, 'a disabled host is not chosen')
      await c('VM.hard_shutdown', diskless)
      await c('host.disable', here)
      assert.deepEqual(await failure(c('VM.start', diskless, false, false)), ['NO_HOSTS_AVAILABLE'])
      assert.deepEqual(await c('VM.get_possible_hosts', diskless), [])
    } finally {
      await c('host.enable', here)
      for (const h of [roomier, dead]) await forget(h)
    }
  })
})

describe('host.declare_dead and host.destroy', () => {
  before(async () => {
    host = await startSimHost()
    here = host.svc.hostRef
  })
  after(() => host?.dispose())

  /** A VM the records say runs on `member` (started there before it was lost). */
  const residentOn = async (member: string, name: string) => {
    const vm = await newVm(name)
    await host.db.transact((tx) => tx.update('VM', vm, { power_state: 'Running', resident_on: member, domid: 7 }))
    return vm
  }

  it('refuse a live host and this host (the master): HOST_IS_LIVE', async () => {
    const live = await addHost({ live: true, memory: 8 * GiB })
    for (const call of ['host.declare_dead', 'host.destroy']) {
      assert.deepEqual(await failure(c(call, live)), ['HOST_IS_LIVE', live])
      assert.deepEqual(await failure(c(call, here)), ['HOST_IS_LIVE', here])
    }
    await forget(live)
  })

  it('declare_dead halts the VMs of a dead host and disables it; destroy then removes its records', async () => {
    const lost = await addHost({ live: false, memory: 8 * GiB, sr: (await c<string[]>('SR.get_all'))[0] })
    const vm = await residentOn(lost, 'was on the lost host')
    assert.deepEqual(await failure(c('host.destroy', lost)), ['HOST_HAS_RESIDENT_VMS', lost])
    assert.deepEqual(await failure(c('host.enable', lost)), ['HOST_OFFLINE', lost])
    await c('host.declare_dead', lost)
    assert.equal(await c('VM.get_power_state', vm), 'Halted')
    assert.equal(await c('VM.get_resident_on', vm), NULL)
    assert.equal(await c('host.get_enabled', lost), false)
    const record = await c<Record<string, any>>('host.get_record', lost)
    const control = await c<string[]>('host.get_resident_VMs', lost)
    assert.equal(control.length, 1, 'its control domain stays resident')
    assert.equal(await c('VM.get_is_control_domain', control[0]), true)

    await c('host.destroy', lost)
    assert.ok(!(await c<string[]>('host.get_all')).includes(lost))
    assert.deepEqual(await failure(c('VM.get_record', control[0])), ['HANDLE_INVALID', 'VM', control[0]])
    assert.deepEqual(await failure(c('host_metrics.get_record', record.metrics)), ['HANDLE_INVALID', 'host_metrics', record.metrics])
    for (const pbd of record.PBDs) assert.deepEqual(await failure(c('PBD.get_record', pbd)), ['HANDLE_INVALID', 'PBD', pbd])
    for (const cpu of record.host_CPUs) assert.deepEqual(await failure(c('host_cpu.get_record', cpu)), ['HANDLE_INVALID', 'host_cpu', cpu])
    assert.equal(await c('VM.get_power_state', vm), 'Halted', 'its halted VMs stay in the pool')
    // The VM can start again elsewhere.
    await c('VM.start', vm, false, false)
    assert.equal(await c('VM.get_resident_on', vm), here)
    await c('VM.hard_shutdown', vm)
  })
})

describe('host.shutdown, host.reboot and host.restart_agent', () => {
  before(async () => {
    host = await startSimHost()
    here = host.svc.hostRef
  })
  after(() => host?.dispose())

  it('refuse an enabled host (HOST_NOT_DISABLED), one running a guest (HOST_IN_USE) and an offline one; then ask the host to stop or restart', async () => {
    for (const call of ['host.shutdown', 'host.reboot']) assert.deepEqual(await failure(c(call, here)), ['HOST_NOT_DISABLED'])
    const vm = await newVm('keeps the host busy')
    await c('VM.start', vm, false, false)
    await c('host.disable', here)
    for (const call of ['host.shutdown', 'host.reboot']) assert.deepEqual(await failure(c(call, here)), ['HOST_IN_USE', here, 'vm', vm])
    assert.deepEqual(host.powerRequests, [], 'nothing asked of the daemon')
    // restart_agent keeps the VMs running: it is allowed with one
    await c('host.restart_agent', here)
    await c('VM.hard_shutdown', vm)
    await c('host.reboot', here)
    await c('host.shutdown', here)
    await waitForRequests(3)
    assert.deepEqual(host.powerRequests, ['restart', 'restart', 'stop'])
    assert.deepEqual(await c('host.get_current_operations', here), {}, 'the operations ended with the calls')
    const lost = await addHost({ live: false, memory: 8 * GiB, enabled: false })
    for (const call of ['host.shutdown', 'host.reboot', 'host.restart_agent']) assert.deepEqual(await failure(c(call, lost)), ['HOST_OFFLINE', lost])
    await c('host.enable', here)
    await forget(lost)
  })
})

/** host.power acts shortly after it answered: until then the request is not recorded. */
async function waitForRequests(n: number): Promise<void> {
  for (let i = 0; i < 100 && host.powerRequests.length < n; i++) await new Promise((r) => setTimeout(r, 50))
}
