// Multi-step operations whose middle step fails, on the simulated host (test/helpers/sim-host.ts):
// a host agent call made to fail, the operation must leave no half-made records, image files or
// taps, the VM in its power state, and the caller must get the failing step's own error.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, after, before, describe, it, mock } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { tapName } from '../../src/net/bridge.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
let sr: string
let restoreAgent: (() => void) | undefined
const MiB = 2 ** 20

const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)
const injected = (method: string) => (err: unknown) => err instanceof XapiCallError && err.code === 'SR_BACKEND_FAILURE' && err.description[3] === `injected failure of ${method}`

/** Makes the agent calls named fail, each at its `nth` call from now, as a host whose step fails would. */
function failAgentCalls(failures: Record<string, number>): void {
  const agent = host.agent
  const real = agent.call
  const untyped = real as unknown as (this: typeof agent, name: string, args?: unknown) => Promise<unknown>
  const seen = new Map<string, number>()
  let left = Object.keys(failures).length
  restoreAgent = () => (agent.call = real)
  agent.call = function (this: typeof agent, name: string, args?: unknown) {
    const n = (seen.get(name) ?? 0) + 1
    seen.set(name, n)
    if (failures[name] !== n) return untyped.call(this, name, args)
    if (--left === 0) restoreAgent!()
    return Promise.reject(new XapiError('SR_BACKEND_FAILURE', ['1', '', `injected failure of ${name}`]))
  } as unknown as typeof agent.call
}

const failAgentCall = (method: string, nth = 1) => failAgentCalls({ [method]: nth })

/** Makes the next vdi.freeze (all of a VM's disks in one call) fail at its `nth` disk, as the agent reports it: the disks before it frozen, then the failure. */
function failFreezeAt(nth: number): void {
  const agent = host.agent
  const real = agent.call
  const untyped = real as unknown as (this: typeof agent, name: string, args?: unknown) => Promise<unknown>
  restoreAgent = () => (agent.call = real)
  agent.call = async function (this: typeof agent, name: string, args?: unknown) {
    if (name !== 'vdi.freeze') return untyped.call(this, name, args)
    restoreAgent!()
    const { disks } = args as { disks: unknown[] }
    const outcome = (await untyped.call(this, name, { disks: disks.slice(0, nth - 1) })) as object
    return { ...outcome, failure: { error: 'injected', xapi: ['SR_BACKEND_FAILURE', '1', '', `injected failure of ${name}`] } }
  } as unknown as typeof agent.call
}

/** Passes the next call of the agent method `method` on with its arguments changed by `change`. */
function alterAgentCall(method: string, change: (args: any) => unknown): void {
  const agent = host.agent
  const real = agent.call
  const untyped = real as unknown as (this: typeof agent, name: string, args?: unknown) => Promise<unknown>
  restoreAgent = () => (agent.call = real)
  agent.call = function (this: typeof agent, name: string, args?: unknown) {
    if (name !== method) return untyped.call(this, name, args)
    restoreAgent!()
    return untyped.call(this, name, change(args))
  } as unknown as typeof agent.call
}

async function newGuest(name: string): Promise<{ ref: string; uuid: string }> {
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const ref = await c<string>('VM.clone', template, name)
  await c('VM.provision', ref)
  await c('VM.set_is_a_template', ref, false)
  const data = await c<string>('VDI.create', { SR: sr, virtual_size: 16 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
  await c('VBD.create', { VM: ref, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  const [network] = await c<string[]>('network.get_by_name_label', 'Host internal management network')
  await c('VIF.create', { VM: ref, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  return { ref, uuid: await c<string>('VM.get_uuid', ref) }
}

/** What a failed operation must leave as it was: how many records of each class it makes, and the VM. */
async function state(vm: string) {
  const counts = Object.fromEntries(['VM', 'VM_metrics', 'VDI', 'VBD', 'VIF', 'console', 'SR', 'PBD'].map((cls) => [cls, host.db.refs(cls).length]))
  const rec = await c('VM.get_record', vm)
  const disks = await Promise.all((rec.VBDs as string[]).map(async (v) => [await c('VBD.get_userdevice', v), await c('VBD.get_VDI', v), await c('VBD.get_currently_attached', v)]))
  return { counts, power: rec.power_state, residentOn: rec.resident_on, scheduledOn: rec.scheduled_to_be_resident_on, suspendVdi: rec.suspend_VDI, snapshots: rec.snapshots, operations: rec.current_operations, disks, taps: [...host.network.taps.keys()].sort() }
}

/** After garbage collection and a scan, the SR holds the VDIs it held: no image file was left behind. */
async function srVdis(): Promise<string[]> {
  await c('SR.scan', sr)
  return (await c<string[]>('SR.get_VDIs', sr)).sort()
}

describe('a failing step undone, on the simulated host', () => {
  before(async () => {
    host = await startSimHost()
    sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  })
  afterEach(() => restoreAgent?.())
  after(() => host?.dispose())

  it('VM.snapshot, VM.clone and VM.copy whose second disk fails', async () => {
    const vm = await newGuest('halted')
    const was = await state(vm.ref)
    const vdis = await srVdis()
    for (const [op, method] of [['VM.snapshot', 'vdi.freeze'], ['VM.clone', 'vdi.freeze'], ['VM.copy', 'vdi.copy']] as const) {
      if (op === 'VM.snapshot') failFreezeAt(2)
      else failAgentCall(method, 2)
      await assert.rejects(op === 'VM.copy' ? c(op, vm.ref, 'never', sr) : c(op, vm.ref, 'never'), injected(method), op)
      assert.deepEqual(await state(vm.ref), was, op)
    }
    assert.deepEqual(await srVdis(), vdis)
  })

  it('VM.provision whose second disk names an SR that does not exist', async () => {
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c<string>('VM.clone', template, 'provision')
    const disks = `<provision><disk device="1" size="${16 * MiB}" sr="" bootable="false" type="user"/><disk device="2" size="${16 * MiB}" sr="00000000-0000-0000-0000-000000000000" bootable="false" type="user"/></provision>`
    await c('VM.remove_from_other_config', vm, 'disks')
    await c('VM.add_to_other_config', vm, 'disks', disks)
    const was = await state(vm)
    await assert.rejects(c('VM.provision', vm), (err: unknown) => err instanceof XapiCallError && err.code === 'UUID_INVALID')
    assert.deepEqual((await state(vm)).counts, was.counts, 'the first disk and its VBD are gone')
    assert.deepEqual((await state(vm)).disks, was.disks)
  })

  it('VM.start whose QEMU fails: Halted, not scheduled, no tap', async () => {
    const vm = await newGuest('unstartable')
    const was = await state(vm.ref)
    failAgentCall('vm.start')
    await assert.rejects(c('VM.start', vm.ref, false, false), injected('vm.start'))
    assert.deepEqual(await state(vm.ref), was)
  })

  it('VM.checkpoint, VM.suspend and VM.revert of a running VM whose last step fails: it runs on as it was', async () => {
    const vm = await newGuest('running')
    await c('VM.start', vm.ref, false, false)
    const snapshot = await c<string>('VM.snapshot', vm.ref, 'before')
    const was = await state(vm.ref)
    const vdis = await srVdis()

    failAgentCall('vdi.image', 2)
    await assert.rejects(c('VM.checkpoint', vm.ref, 'never'), (err: unknown) => err instanceof XapiCallError && err.code === 'VM_CHECKPOINT_SUSPEND_FAILED')
    assert.deepEqual(await state(vm.ref), was, 'checkpoint')

    failAgentCall('vm.suspend')
    await assert.rejects(c('VM.suspend', vm.ref), injected('vm.suspend'))
    assert.deepEqual(await state(vm.ref), was, 'suspend')

    for (const [method, nth] of [['vdi.freeze', 2], ['vm.stop', 1]] as const) {
      failAgentCall(method, nth)
      await assert.rejects(c('VM.revert', snapshot), injected(method))
      assert.deepEqual(await state(vm.ref), was, `revert failing at ${method}`)
    }
    assert.equal(host.backend.guest(vm.uuid).status, 'running')
    assert.deepEqual(await srVdis(), vdis)
    await c('VM.hard_shutdown', vm.ref)
  })

  it('VM.checkpoint whose memory cannot be saved once the disks are frozen: the records follow the disks to their new overlays', async () => {
    const vm = await newGuest('half-frozen')
    await c('VM.start', vm.ref, false, false)
    const was = await state(vm.ref)
    const vdis = await srVdis()
    alterAgentCall('vm.checkpoint', (args) => ({ ...args, state: join(host.dataDir, 'no-such-directory', 'state') }))
    await assert.rejects(c('VM.checkpoint', vm.ref, 'never'), (err: unknown) => err instanceof XapiCallError && err.code === 'VM_CHECKPOINT_SUSPEND_FAILED')
    assert.deepEqual(await state(vm.ref), was)
    assert.deepEqual(await srVdis(), vdis)
    const files = (await host.agent.call('vm.devices', { uuid: vm.uuid })).disks.map((d) => d.file ?? '')
    for (const vbd of await c<string[]>('VM.get_VBDs', vm.ref)) {
      const location = await c<string>('VDI.get_location', await c<string>('VBD.get_VDI', vbd))
      const file = files.find((f) => f.endsWith(`/${location}.qcow2`))
      assert.ok(file && existsSync(file), `the VDI names the image its disk writes to (${location}), and the collection kept it`)
    }
    await c('VM.hard_shutdown', vm.ref)
  })

  it('an undo that fails is logged with the operation and the step; the others run and the caller gets the original error', async () => {
    const vm = await newGuest('logged')
    await c('VM.start', vm.ref, false, false)
    const errors = mock.method(console, 'error', () => undefined)
    try {
      // The suspend image is raw: its undo asks the agent to remove the file, which fails too.
      failAgentCalls({ 'vm.suspend': 1, 'vdi.destroy': 1 })
      await assert.rejects(c('VM.suspend', vm.ref), injected('vm.suspend'))
    } finally {
      errors.mock.restore()
    }
    const lines = errors.mock.calls.map((call) => String(call.arguments[0]))
    assert.ok(lines.includes('VM.suspend: undoing the suspend image failed: SR_BACKEND_FAILURE(1, , injected failure of vdi.destroy)'), lines.join('\n'))
    assert.equal(await c('VM.get_power_state', vm.ref), 'Running')
    await c('VM.hard_shutdown', vm.ref)
  })

  it('a NIC hot-plug the VM has no port for leaves no tap', async () => {
    const vm = await newGuest('ports')
    await c('VM.start', vm.ref, false, false)
    const [network] = await c<string[]>('network.get_by_name_label', 'Host internal management network')
    const vifs: string[] = []
    for (const device of ['1', '2', '3', '4', '5']) vifs.push(await c<string>('VIF.create', { VM: vm.ref, network, device, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} }))
    for (const vif of vifs.slice(0, 4)) await c('VIF.plug', vif)
    await assert.rejects(c('VIF.plug', vifs[4]), /no free hot-plug port/)
    assert.equal(await c('VIF.get_currently_attached', vifs[4]), false)
    assert.equal(host.network.taps.has(tapName(vm.uuid, '5')), false, 'no tap left')
    await c('VM.hard_shutdown', vm.ref)
  })
})
