// How many round trips to the host agent a VM start and a VM snapshot cost, on the simulated
// host (test/helpers/sim-host.ts) with its agent client wrapped to count: one per host, the same
// for a VM with one disk as for one with four.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startSimHost, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
const calls: string[] = []
const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)

/** The agent calls `op` makes. */
async function callsOf(op: () => Promise<unknown>): Promise<string[]> {
  const from = calls.length
  await op()
  return calls.slice(from)
}

/** A VM of the test guest (one disk) with `extra` more data disks. */
async function guestWithDisks(name: string, extra: number): Promise<string> {
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const vm = await c<string>('VM.clone', template, name)
  await c('VM.provision', vm)
  await c('VM.set_is_a_template', vm, false)
  const sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  for (let i = 1; i <= extra; i++) {
    const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 2 ** 20, name_label: `${name} ${i}`, type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: vdi, userdevice: String(i), bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  }
  return vm
}

describe('agent round trips', () => {
  before(async () => {
    host = await startSimHost()
    const agent = host.agent
    const call = agent.call.bind(agent)
    agent.call = (method, ...args) => {
      calls.push(method)
      return call(method, ...args)
    }
  })
  after(() => host?.dispose())

  it('of VM.start and VM.snapshot are one each, whatever the number of disks', async () => {
    // No VM stops between the counted calls: a stop starts collections in the background.
    const vms = { one: await guestWithDisks('one disk', 0), four: await guestWithDisks('four disks', 3) }
    for (const vm of Object.values(vms)) {
      assert.deepEqual(await callsOf(() => c('VM.snapshot', vm, 'halted')), ['vdi.freeze'], 'VM.snapshot of a halted VM')
      assert.deepEqual(await callsOf(() => c('VM.start', vm, false, false)), ['vm.start'], 'VM.start')
      assert.deepEqual(await callsOf(() => c('VM.snapshot', vm, 'running')), ['vdi.freeze'], 'VM.snapshot of a running VM')
    }
    assert.equal((await c<string[]>('VM.get_VBDs', vms.four)).length, 4)
    assert.equal((await c<string[]>('VM.get_snapshots', vms.four)).length, 2)
    for (const vm of Object.values(vms)) await c('VM.hard_shutdown', vm)
  })
})
