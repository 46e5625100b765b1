// Xen Orchestra's libraries on real VMs and disks: scenarios 12 and 13 of reference/xo-compat.md
// §8, and scenarios 5, 6 and 8 extended to disks and templates.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Daemon, PASSWORD, waitFor } from '../helpers/daemon.js'

const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => any }

const daemon = new Daemon()
let xapi: any

describe('Xen Orchestra with VMs and disks', () => {
  before(async () => {
    await daemon.start()
    xapi = new Xapi({ url: daemon.url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, callTimeout: 60e3, eventPollDelay: 1e3 })
    await xapi.connect()
    await xapi.objectsFetched
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await daemon.dispose()
  })

  it('12: creates a VM with a disk and a NIC, links them, and destroys them', async () => {
    const vm = await xapi.VM_create({ name_label: 'xo-12', memory_static_max: 2 ** 28, memory_dynamic_max: 2 ** 28, memory_dynamic_min: 2 ** 28, memory_static_min: 2 ** 27, VCPUs_max: 1, VCPUs_at_startup: 1, HVM_boot_params: { order: 'c' }, other_config: {} })
    const vdi = await xapi.VDI_create({ name_label: 'xo-12 disk', virtual_size: 32 * 2 ** 20, type: 'user' })
    const vbd = await xapi.VBD_create({ VM: vm, VDI: vdi, bootable: true })
    const network = xapi.objects.all[Object.keys(xapi.objects.all).find((k: string) => xapi.objects.all[k].$type === 'network')!]
    const vif = await xapi.VIF_create({ VM: vm, network: network.$ref })
    const cached = await xapi.waitObjectState(vm, (o: any) => o.VBDs.length === 1 && o.VIFs.length === 1, { timeout: 10e3 })
    assert.equal(cached.$VBDs[0].$VDI.$ref, vdi)
    assert.equal(cached.$VBDs[0].$VDI.$SR.$ref, xapi.pool.default_SR)
    assert.deepEqual((await xapi.getRecord('VDI', vdi)).VBDs, [vbd])
    assert.match(cached.$VIFs[0].MAC, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
    assert.ok(cached.other_config.mac_seed, 'the server made a mac_seed')
    assert.equal(cached.power_state, 'Halted')
    await xapi.call('VM.add_to_blocked_operations', vm, 'destroy', 'protected')
    await assert.rejects(xapi.VM_destroy(vm))
    await xapi.VM_destroy(vm, { force: true })
    await waitFor('the VM, its VBD and VDI to go', () => ![vm, vbd, vdi, vif].some((r) => xapi.objects.all[r]), 10e3)
  })

  it('13: power-cycles a real VM and reports xapi\'s power-state errors', async () => {
    const template = Object.values(xapi.objects.all).find((o: any) => o.$type === 'VM' && o.is_a_template && o.name_label === 'Flotilla test guest') as any
    const vm = await xapi.callAsync('VM.clone', template.$ref, 'xo-13')
    await xapi.callAsync('VM.provision', vm)
    await xapi.call('VM.set_is_a_template', vm, false)
    await xapi.call('VM.start', vm, false, false)
    const running = await xapi.waitObjectState(vm, (o: any) => o.power_state === 'Running', { timeout: 30e3 })
    assert.notEqual(running.resident_on, 'OpaqueRef:NULL')
    assert.notEqual(running.$metrics.start_time, '19700101T00:00:00Z')
    assert.equal(running.$consoles.length, 2)
    const uuid = running.uuid as string
    await waitFor('the guest to tick', () => daemon.serial(uuid).includes('FLOTILLA tick='))
    await xapi.callAsync('VM.clean_shutdown', vm)
    await xapi.waitObjectState(vm, (o: any) => o.power_state === 'Halted', { timeout: 30e3 })
    await assert.rejects(xapi.callAsync('VM.hard_shutdown', vm), (e: any) => e.code === 'VM_BAD_POWER_STATE' && e.params[0] === vm && e.params[2] === 'halted')
  })

  it('5, 6, 8 with disks: clone of a template with a disk, links to its SR, and events for disks', async () => {
    const template = Object.values(xapi.objects.all).find((o: any) => o.$type === 'VM' && o.is_a_template && o.name_label === 'Flotilla test guest') as any
    const clone = await xapi.callAsync('VM.clone', template.$ref, 'xo-clone')
    const cached = await xapi.waitObjectState(clone, (o: any) => o.VBDs.length === 1, { timeout: 10e3 })
    const disk = cached.$VBDs[0].$VDI
    assert.notEqual(disk.$ref, template.$VBDs[0].VDI, 'the clone has its own disk')
    assert.equal(disk.$SR.$ref, xapi.pool.default_SR)
    const vdi = await xapi.VDI_create({ name_label: 'ephemeral', virtual_size: 2 ** 20, type: 'user' })
    await xapi.waitObjectState(vdi, () => true, { timeout: 10e3 })
    await xapi.VDI_destroy(vdi)
    await waitFor('the VDI to leave the cache', () => !xapi.objects.all[vdi], 10e3)
    await xapi.VM_destroy(clone)
  })
})
