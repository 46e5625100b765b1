// XenAPI handlers on the simulated hypervisor (test/helpers/sim-host.ts): VM lifecycle, stops
// the guest decides, snapshots and storage bookkeeping, through the real message
// implementations and host agent, with no root, no etcd and no QEMU emulator.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { tapName } from '../../src/net/bridge.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
let sr: string
const NULL = 'OpaqueRef:NULL'
const MiB = 2 ** 20

const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)
const record = (cls: string, ref: string) => c(`${cls}.get_record`, ref)
const powerState = (ref: string) => c<string>('VM.get_power_state', ref)
const failsWith = (code: string) => (err: unknown) => err instanceof XapiCallError && err.code === code
const devices = (uuid: string) => host.agent.call('vm.devices', { uuid })

/** A VM as a user makes one: a clone of the test guest template, provisioned. */
async function newGuest(name: string): Promise<{ ref: string; uuid: string }> {
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const ref = await c<string>('VM.clone', template, name)
  await c('VM.provision', ref)
  await c('VM.set_is_a_template', ref, false)
  return { ref, uuid: await c<string>('VM.get_uuid', ref) }
}

const newVdi = (name: string, size = 64 * MiB) => c<string>('VDI.create', { SR: sr, virtual_size: size, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {} })
const newVbd = (vm: string, vdi: string, userdevice: string, type: 'Disk' | 'CD' = 'Disk') =>
  c<string>('VBD.create', { VM: vm, VDI: vdi, userdevice, bootable: false, mode: type === 'CD' ? 'RO' : 'RW', type, empty: vdi === NULL, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
const newVif = async (vm: string, device: string) => {
  const [network] = await c<string[]>('network.get_by_name_label', 'Host internal management network')
  return c<string>('VIF.create', { VM: vm, network, device, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
}

describe('XenAPI handlers on the simulated hypervisor', () => {
  before(async () => {
    host = await startSimHost()
    sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
  })
  after(() => host?.dispose())

  it('starts, reboots, pauses and stops a VM: power state, residence, consoles and hypervisor agree', async () => {
    const vm = await newGuest('lifecycle')
    await newVif(vm.ref, '0')
    await c('VM.start', vm.ref, false, false)
    const running = await record('VM', vm.ref)
    assert.equal(running.power_state, 'Running')
    assert.equal(running.resident_on, host.svc.hostRef)
    assert.equal(running.consoles.length, 2)
    assert.deepEqual(await c('host.get_resident_VMs', host.svc.hostRef).then((vms: string[]) => vms.includes(vm.ref)), true)
    assert.equal(host.backend.guest(vm.uuid).status, 'running')
    assert.ok(host.network.taps.get(tapName(vm.uuid, '0')), 'the VIF has its tap in a bridge')
    await assert.rejects(c('VM.start', vm.ref, false, false), failsWith('VM_BAD_POWER_STATE'))

    await c('VM.hard_reboot', vm.ref)
    assert.equal(host.backend.guest(vm.uuid).boots, 2, 'a hard reboot resets the VM in place')
    await c('VM.clean_reboot', vm.ref)
    assert.equal(host.backend.guest(vm.uuid).boots, 1, 'a clean reboot starts a new VM process')
    assert.equal(await powerState(vm.ref), 'Running')

    await c('VM.pause', vm.ref)
    assert.equal(await powerState(vm.ref), 'Paused')
    assert.equal(host.backend.guest(vm.uuid).status, 'paused')
    await c('VM.unpause', vm.ref)
    assert.equal(host.backend.guest(vm.uuid).status, 'running')

    await c('VM.clean_shutdown', vm.ref)
    const halted = await record('VM', vm.ref)
    assert.equal(halted.power_state, 'Halted')
    assert.equal(halted.resident_on, NULL)
    assert.deepEqual(halted.consoles, [])
    assert.ok(!host.backend.running().includes(vm.uuid))
    assert.ok(!host.network.taps.has(tapName(vm.uuid, '0')), 'the tap went with the VM')

    await c('VM.start', vm.ref, true, false)
    assert.equal(await powerState(vm.ref), 'Paused')
    assert.equal(host.backend.guest(vm.uuid).status, 'paused', 'start_paused leaves the vCPUs stopped')
    await c('VM.hard_shutdown', vm.ref)
    assert.equal(await powerState(vm.ref), 'Halted')
    await assert.rejects(c('VM.hard_shutdown', vm.ref), (err: XapiCallError) => {
      assert.deepEqual(err.description, ['VM_BAD_POWER_STATE', vm.ref, 'paused, suspended, running', 'halted'])
      return true
    })
  })

  it('suspends to a saved state with no VM process left, and resumes where it was', async () => {
    const vm = await newGuest('sleeper')
    await c('VM.start', vm.ref, false, false)
    await c('VM.hard_reboot', vm.ref)
    await c('VM.suspend', vm.ref)
    const suspended = await record('VM', vm.ref)
    assert.equal(suspended.power_state, 'Suspended')
    assert.equal(suspended.resident_on, NULL)
    assert.notEqual(suspended.suspend_VDI, NULL)
    assert.equal(await c('VDI.get_type', suspended.suspend_VDI), 'suspend')
    assert.ok(!host.backend.running().includes(vm.uuid), 'no VM process while Suspended')

    await c('VM.resume', vm.ref, false, false)
    assert.equal(await powerState(vm.ref), 'Running')
    assert.equal(host.backend.guest(vm.uuid).boots, 2, 'the VM went on from its saved state, not from a boot')
    assert.equal(await c('VM.get_suspend_VDI', vm.ref), NULL)
    await assert.rejects(c('VDI.get_record', suspended.suspend_VDI), failsWith('HANDLE_INVALID'))

    await c('VM.suspend', vm.ref)
    const image = await c<string>('VM.get_suspend_VDI', vm.ref)
    await c('VM.hard_shutdown', vm.ref)
    assert.equal(await powerState(vm.ref), 'Halted')
    await assert.rejects(c('VDI.get_record', image), failsWith('HANDLE_INVALID'), 'shutting a Suspended VM down drops its saved state')
  })

  describe('stops the guest decides follow the actions_after_* of their reason, and of no other', () => {
    type Reason = 'shutdown' | 'reboot' | 'crash'
    const act: Record<Reason, (uuid: string) => void> = {
      shutdown: (uuid) => host.backend.guest(uuid).powerOff(),
      reboot: (uuid) => host.backend.guest(uuid).reboot(),
      crash: (uuid) => host.backend.guest(uuid).crash(),
    }
    for (const reason of ['shutdown', 'reboot', 'crash'] as const) {
      for (const own of ['restart', 'destroy'] as const) {
        // The two other reasons get the opposite action: a reason taken for another ends the other way.
        const other = own === 'restart' ? 'destroy' : 'restart'
        it(`a guest ${reason} with actions_after_${reason} = ${own} (the others ${other})`, async () => {
          const vm = await newGuest(`${reason}-${own}`)
          for (const r of ['shutdown', 'reboot', 'crash'] as const) await c(`VM.set_actions_after_${r}`, vm.ref, r === reason ? own : other)
          await c('VM.start', vm.ref, false, false)
          const before = await record('VM', vm.ref)
          act[reason](vm.uuid)
          await host.settled()
          const after = await record('VM', vm.ref)
          if (own === 'destroy') {
            assert.equal(after.power_state, 'Halted')
            assert.deepEqual(after.consoles, [])
            assert.ok(!host.backend.running().includes(vm.uuid))
            return
          }
          assert.equal(after.power_state, 'Running')
          if (reason === 'reboot') {
            // Reboot = restart: the hypervisor resets the VM in place, the domain goes on.
            assert.deepEqual(after.consoles, before.consoles)
            assert.equal(host.backend.guest(vm.uuid).boots, 2)
          } else {
            assert.ok(!after.consoles.some((x: string) => before.consoles.includes(x)), 'the VM was started again (new consoles)')
            assert.equal(host.backend.guest(vm.uuid).boots, 1)
          }
          await c('VM.hard_shutdown', vm.ref)
        })
      }
    }

    it('a VM process killed from outside ends Halted, whatever the actions', async () => {
      const vm = await newGuest('killed')
      for (const r of ['shutdown', 'reboot', 'crash'] as const) await c(`VM.set_actions_after_${r}`, vm.ref, 'restart')
      await c('VM.start', vm.ref, false, false)
      host.backend.guest(vm.uuid).die()
      await host.settled()
      assert.equal(await powerState(vm.ref), 'Halted')
    })
  })

  it('pauses a VM whose disk write failed, saying whether its SR is full, until it is unpaused', async () => {
    const vm = await newGuest('full')
    await c('VM.start', vm.ref, false, false)
    const messages = async () => Object.values(await c<Record<string, { name: string; obj_uuid: string }>>('message.get_all_records')).filter((m) => m.obj_uuid === vm.uuid).map((m) => m.name)
    host.backend.guest(vm.uuid).ioError('d0', true)
    await host.settled()
    assert.equal(await powerState(vm.ref), 'Paused')
    assert.deepEqual(await messages(), ['VM_PAUSED_SR_FULL'])
    await c('VM.unpause', vm.ref)
    assert.equal(host.backend.guest(vm.uuid).status, 'running')
    host.backend.guest(vm.uuid).ioError('d0', false)
    await host.settled()
    assert.equal(await powerState(vm.ref), 'Paused')
    assert.deepEqual((await messages()).sort(), ['VM_PAUSED_IO_ERROR', 'VM_PAUSED_SR_FULL'])
    await c('VM.hard_shutdown', vm.ref)
  })

  it('plugs and unplugs disks, CDs, NICs and vCPUs of a running VM', async () => {
    const vm = await newGuest('devices')
    const cd = await newVbd(vm.ref, NULL, '3', 'CD')
    await c('VM.set_VCPUs_max', vm.ref, 2)
    await c('VM.start', vm.ref, false, false)

    const vdi = await newVdi('extra')
    const vbd = await newVbd(vm.ref, vdi, '1')
    await c('VBD.plug', vbd)
    assert.equal(await c('VBD.get_currently_attached', vbd), true)
    const location = await c<string>('VDI.get_location', vdi)
    const plugged = await devices(vm.uuid)
    assert.ok(plugged.disks.some((d) => d.id === 'd1-dev' && d.file?.includes(location)))
    assert.ok(plugged.pci.includes('d1-dev'))
    await assert.rejects(c('VDI.destroy', vdi), failsWith('VDI_IN_USE'))
    await c('VBD.unplug', vbd)
    assert.ok(!(await devices(vm.uuid)).pci.includes('d1-dev'))

    const media = await newVdi('media')
    await c('VBD.insert', cd, media)
    assert.ok((await devices(vm.uuid)).disks.find((d) => d.id === 'd3-dev')?.file?.includes(await c<string>('VDI.get_location', media)))
    await assert.rejects(c('VBD.insert', cd, media), failsWith('VBD_NOT_EMPTY'))
    await c('VBD.eject', cd)
    assert.equal((await devices(vm.uuid)).disks.find((d) => d.id === 'd3-dev')?.file, undefined)

    const vif = await newVif(vm.ref, '1')
    await c('VIF.plug', vif)
    assert.ok((await devices(vm.uuid)).pci.includes('n1'))
    assert.ok(host.network.taps.get(tapName(vm.uuid, '1')))
    await c('VIF.unplug', vif)
    assert.ok(!(await devices(vm.uuid)).pci.includes('n1'))
    assert.ok(!host.network.taps.has(tapName(vm.uuid, '1')))

    await c('VM.set_VCPUs_number_live', vm.ref, 2)
    assert.equal((await devices(vm.uuid)).vcpus, 2)
    assert.equal(await c('VM.get_VCPUs_at_startup', vm.ref), 2)
    await c('VM.hard_shutdown', vm.ref)
  })

  it('snapshots, checkpoints and reverts a running VM with xapi’s bookkeeping', async () => {
    const vm = await newGuest('snapper')
    await c('VM.start', vm.ref, false, false)
    const [disk] = await c<string[]>('VM.get_VBDs', vm.ref)
    const vdi = await c<string>('VBD.get_VDI', disk)

    const snapshot = await c<string>('VM.snapshot', vm.ref, 'snap')
    const snap = await record('VM', snapshot)
    assert.equal(snap.is_a_snapshot, true)
    assert.equal(snap.snapshot_of, vm.ref)
    assert.equal(snap.power_state, 'Halted')
    const snapVdi = await c<string>('VBD.get_VDI', snap.VBDs[0])
    assert.equal(await c('VDI.get_is_a_snapshot', snapVdi), true)
    assert.equal(await c('VDI.get_snapshot_of', snapVdi), vdi)
    assert.ok((await devices(vm.uuid)).disks.find((d) => d.id === 'd0-dev')?.file?.includes(await c<string>('VDI.get_location', vdi)), 'the running disk writes to the VDI’s new overlay')
    assert.deepEqual(await c('VM.get_snapshots', vm.ref), [snapshot])

    const checkpoint = await c<string>('VM.checkpoint', vm.ref, 'check')
    const check = await record('VM', checkpoint)
    assert.equal(check.power_state, 'Suspended')
    assert.notEqual(check.suspend_VDI, NULL)
    assert.equal(host.backend.guest(vm.uuid).status, 'running', 'the VM runs on after its checkpoint')

    await c('VM.hard_reboot', vm.ref)
    await c('VM.revert', checkpoint)
    const reverted = await record('VM', vm.ref)
    assert.equal(reverted.power_state, 'Suspended', 'a checkpoint reverts to its saved state')
    assert.equal(reverted.parent, checkpoint)
    await c('VM.resume', vm.ref, false, false)
    assert.equal(host.backend.guest(vm.uuid).boots, 1, 'the memory state came back from before the reboot')

    await c('VM.revert', snapshot)
    const back = await record('VM', vm.ref)
    assert.equal(back.power_state, 'Halted', 'a disk snapshot reverts to a halted VM')
    assert.equal(back.parent, snapshot)
    const restored = await c<string>('VBD.get_VDI', back.VBDs[0])
    assert.notEqual(restored, snapVdi)
    assert.equal(await c('VDI.get_is_a_snapshot', restored), false)
    await assert.rejects(c('VDI.get_record', vdi), failsWith('HANDLE_INVALID'), 'the disk the VM had is dropped')
  })

  it('keeps the SR’s books as VDIs come and go', async () => {
    const allocation = () => c<number>('SR.get_virtual_allocation', sr).then(Number)
    const start = await allocation()
    const vdi = await newVdi('books', 256 * MiB)
    assert.equal(await allocation(), start + 256 * MiB)
    assert.ok((await c<string[]>('SR.get_VDIs', sr)).includes(vdi))
    await c('VDI.resize', vdi, 512 * MiB)
    assert.equal(Number(await c('VDI.get_virtual_size', vdi)), 512 * MiB)
    const clone = await c<string>('VDI.clone', vdi, {})
    assert.equal(await allocation(), start + 1024 * MiB)
    await c('SR.scan', sr)
    assert.ok((await c<string[]>('SR.get_VDIs', sr)).includes(clone), 'a scan keeps what is there')
    await c('VDI.destroy', clone)
    await c('VDI.destroy', vdi)
    await assert.rejects(c('VDI.get_record', vdi), failsWith('HANDLE_INVALID'))
    assert.equal(await allocation(), start)
    assert.ok(Number(await c('SR.get_physical_utilisation', sr)) > 0)
  })
})
