// xapi's rules for what real clients do to VMs (Ansible's xenserver_guest, Xen Orchestra, XO
// Lite): VM.provision, the memory and vCPU setters with their checks, the checks of VM.start,
// live vCPU hot-plug, and VM.copy_bios_strings.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { agentCall } from '../helpers/agent.js'
import { call, Daemon, jsonrpc, login, waitFor } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'

const MiB = 2 ** 20
const daemon = new Daemon()
let url: string
let session: string
let host: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)

/** The error a call fails with, as [code, ...params]. */
async function failure(method: string, ...params: unknown[]): Promise<string[]> {
  const r = await jsonrpc(url, method, [session, ...params])
  assert.ok(r.error, `${method} should fail`)
  return [r.error.message, ...r.error.data]
}

/** A disk-less halted VM with the given settings (VM.create stores them unchecked, as xapi's does). */
const newVm = (name: string, fields: object = {}) =>
  c<string>('VM.create', { name_label: name, memory_static_min: 128 * MiB, memory_dynamic_min: 256 * MiB, memory_dynamic_max: 256 * MiB, memory_static_max: 256 * MiB, VCPUs_max: 2, VCPUs_at_startup: 1, HVM_boot_policy: 'BIOS order', HVM_boot_params: { order: 'c' }, HVM_shadow_multiplier: 1, actions_after_crash: 'restart', other_config: {}, ...fields })

const memory = async (vm: string) => {
  const r = await c<Record<string, number>>('VM.get_record', vm)
  return [r.memory_static_min, r.memory_dynamic_min, r.memory_target, r.memory_dynamic_max, r.memory_static_max].map((b) => b! / MiB)
}

describe('xapi semantics of VM settings', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    host = (await c<string[]>('host.get_all'))[0]!
  })
  after(() => daemon.dispose())

  describe('VM.provision', () => {
    const disks = (second: string) =>
      `<provision><disk device="0" size="${32 * MiB}" sr="" bootable="true" type="system"/><disk device="1" size="${16 * MiB}" sr="${second}" bootable="false" type="user"/></provision>`

    it('turns the template into a VM, records its install time, and makes the disks of its spec as xapi does', async () => {
      const template = await newVm('to provision', { is_a_template: true, other_config: { disks: disks(''), postinstall: 'echo hi', keep: 'me' } })
      await c('VM.provision', template)
      const rec = await c('VM.get_record', template)
      assert.equal(rec.is_a_template, false)
      assert.notEqual((await c('VM_metrics.get_record', rec.metrics)).install_time, '19700101T00:00:00Z')
      assert.deepEqual(rec.other_config.keep, 'me')
      assert.equal(rec.other_config.disks, undefined)
      assert.equal(rec.other_config.postinstall, undefined)
      assert.ok(rec.allowed_operations.includes('start'), 'a VM now, that can start')
      const vbds = await Promise.all((rec.VBDs as string[]).map((v) => c('VBD.get_record', v)))
      const byDevice = new Map(vbds.map((v) => [v.userdevice, v]))
      assert.equal(byDevice.get('0').unpluggable, false, 'a system disk cannot be unplugged')
      assert.equal(byDevice.get('1').unpluggable, true)
      assert.deepEqual(byDevice.get('0').other_config, { owner: '' })
      const vdi = await c('VDI.get_record', byDevice.get('1').VDI)
      assert.equal(vdi.virtual_size, 16 * MiB)
      assert.equal(vdi.type, 'user')
      assert.equal(vdi.name_description, 'Created by template provisioner')
      assert.equal(vdi.sm_config.vmhint, rec.uuid)
      assert.deepEqual(await failure('VM.provision', template), ['PROVISION_ONLY_ALLOWED_ON_TEMPLATE'])
    })

    it('removes the disks it made when one of them cannot be made', async () => {
      const vdisBefore = (await c<string[]>('VDI.get_all')).length
      const missing = '00000000-0000-0000-0000-000000000000'
      const template = await newVm('bad spec', { is_a_template: true, other_config: { disks: disks(missing) } })
      assert.deepEqual(await failure('VM.provision', template), ['UUID_INVALID', 'sr', missing])
      assert.deepEqual(await c('VM.get_VBDs', template), [])
      assert.equal((await c<string[]>('VDI.get_all')).length, vdisBefore)
      assert.equal(await c('VM.get_is_a_template', template), false, 'xapi clears the flag before it makes disks')
    })
  })

  describe('memory settings', () => {
    it('set_memory_limits, set_memory and the range setters store the limits (target = dynamic_min)', async () => {
      const vm = await newVm('memory')
      await c('VM.set_memory_limits', vm, 64 * MiB, 512 * MiB, 128 * MiB, 384 * MiB)
      assert.deepEqual(await memory(vm), [64, 128, 128, 384, 512])
      await c('VM.set_memory', vm, 300 * MiB)
      assert.deepEqual(await memory(vm), [64, 300, 300, 300, 300], 'static_min is left alone')
      await c('VM.set_memory_static_range', vm, 32 * MiB, 400 * MiB)
      await c('VM.set_memory_dynamic_range', vm, 200 * MiB, 350 * MiB)
      assert.deepEqual(await memory(vm), [32, 200, 200, 350, 400])
      await c('VM.set_memory_static_max', vm, 360 * MiB)
      await c('VM.set_memory_dynamic_min', vm, 100 * MiB)
      assert.deepEqual(await memory(vm), [32, 100, 100, 350, 360])
    })

    it('refuses settings out of order, and a control domain\'s unpinned range', async () => {
      const vm = await newVm('bad memory')
      const before = await memory(vm)
      assert.deepEqual(await failure('VM.set_memory_static_max', vm, -1), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
      assert.deepEqual(await failure('VM.set_memory_static_max', vm, 200 * MiB), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'], 'below dynamic_max')
      assert.deepEqual(await failure('VM.set_memory_dynamic_max', vm, 512 * MiB), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'], 'above static_max')
      assert.deepEqual(await failure('VM.set_memory_limits', vm, 300 * MiB, 512 * MiB, 256 * MiB, 512 * MiB), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
      assert.deepEqual(await failure('VM.set_memory_dynamic_range', vm, 256 * MiB, 200 * MiB), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
      assert.deepEqual(await memory(vm), before, 'nothing changed')
      const dom0 = await c<string>('host.get_control_domain', host)
      const [dmin, dmax] = [await c<number>('VM.get_memory_dynamic_min', dom0), await c<number>('VM.get_memory_dynamic_max', dom0)]
      assert.deepEqual(await failure('VM.set_memory_dynamic_range', dom0, dmin / 2, dmax), ['MEMORY_CONSTRAINT_VIOLATION_MAXPIN', 'control domain'])
      const nested = await newVm('nested', { platform: { 'nested-virt': 'true' } })
      assert.deepEqual(await failure('VM.set_memory_dynamic_range', nested, 128 * MiB, 256 * MiB), ['VM_IS_USING_NESTED_VIRT', nested])
      assert.deepEqual(await failure('VM.set_memory_limits', nested, 128 * MiB, 256 * MiB, 128 * MiB, 256 * MiB), ['MEMORY_CONSTRAINT_VIOLATION_MAXPIN', 'nested virt'])
    })
  })

  describe('vCPU settings', () => {
    const rule = 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max'

    it('refuses VCPUs_max of 0, -1 or below VCPUs_at_startup, and VCPUs_at_startup above VCPUs_max', async () => {
      const vm = await newVm('vcpus')
      assert.deepEqual(await failure('VM.set_VCPUs_max', vm, 0), ['INVALID_VALUE', rule, '0'])
      assert.deepEqual(await failure('VM.set_VCPUs_max', vm, -1), ['INVALID_VALUE', rule, '-1'])
      assert.deepEqual(await failure('VM.set_VCPUs_at_startup', vm, 3), ['INVALID_VALUE', rule, '3'])
      assert.deepEqual(await failure('VM.set_VCPUs_at_startup', vm, 0), ['INVALID_VALUE', rule, '0'])
      await c('VM.set_VCPUs_at_startup', vm, 2)
      assert.deepEqual(await failure('VM.set_VCPUs_max', vm, 1), ['INVALID_VALUE', rule, '1'])
      await c('VM.set_VCPUs_max', vm, 4)
      assert.equal(await c('VM.get_VCPUs_max', vm), 4)
      const dom0 = await c<string>('host.get_control_domain', host)
      assert.deepEqual(await failure('VM.set_VCPUs_at_startup', dom0, 1), ['OPERATION_NOT_ALLOWED', 'set_VCPUs_at_startup is not allowed on dom0'])
      assert.deepEqual(await failure('VM.set_VCPUs_max', dom0, 1), ['OPERATION_NOT_ALLOWED', 'This operation is not allowed on dom0'])
    })
  })

  describe('VM.start', () => {
    it('refuses settings xapi does not boot with, which VM.create accepted', async () => {
      const cpus = (await c<Record<string, string>>('host.get_cpu_info', host)).cpu_count!
      assert.deepEqual(await failure('VM.start', await newVm('no vcpus', { VCPUs_max: 0, VCPUs_at_startup: 0 }), false, false), ['INVALID_VALUE', 'VCPUs_max', '0'])
      assert.deepEqual(await failure('VM.start', await newVm('too many at startup', { VCPUs_max: 1, VCPUs_at_startup: 2 }), false, false), ['VALUE_NOT_SUPPORTED', 'VCPUs-at-startup', '2', 'value greater than VCPUs-max'])
      assert.deepEqual(await failure('VM.start', await newVm('inverted', { memory_static_min: 512 * MiB }), false, false), ['MEMORY_CONSTRAINT_VIOLATION'])
      assert.deepEqual(await failure('VM.start', await newVm('shadow', { HVM_shadow_multiplier: 0.5 }), false, false), ['INVALID_VALUE', 'HVM_shadow_multiplier', '0.5'])
      const wide = Number(cpus) + 1
      assert.deepEqual(await failure('VM.start', await newVm('wide', { VCPUs_max: wide }), false, false), ['HOST_NOT_ENOUGH_PCPUS', String(wide), cpus])
    })
  })

  describe('running VMs', () => {
    it('change static memory and VCPUs_max only while Halted; the dynamic range is recorded live', async () => {
      const vm = await newGuest(url, session, 'live settings')
      await c('VM.start', vm.ref, false, false)
      assert.deepEqual(await failure('VM.set_memory_static_max', vm.ref, 512 * MiB), ['VM_BAD_POWER_STATE', vm.ref, 'halted', 'running'])
      assert.deepEqual(await failure('VM.set_memory_limits', vm.ref, 128 * MiB, 256 * MiB, 256 * MiB, 256 * MiB), ['VM_BAD_POWER_STATE', vm.ref, 'halted', 'running'])
      assert.deepEqual(await failure('VM.set_memory', vm.ref, 128 * MiB), ['VM_BAD_POWER_STATE', vm.ref, 'halted', 'running'])
      assert.deepEqual(await failure('VM.set_VCPUs_max', vm.ref, 1), ['VM_BAD_POWER_STATE', vm.ref, 'halted', 'running'])
      const staticMax = await c<number>('VM.get_memory_static_max', vm.ref)
      await c('VM.set_memory_dynamic_range', vm.ref, staticMax / 2, staticMax)
      assert.equal(await c('VM.get_memory_dynamic_min', vm.ref), staticMax / 2)
      assert.equal(await c('VM.get_power_state', vm.ref), 'Running')
      await c('VM.hard_shutdown', vm.ref)
    })

    it('hot-plugs and unplugs vCPUs up to VCPUs_max (QEMU and the records agree)', async () => {
      const vm = await newGuest(url, session, 'hotplug vcpus')
      assert.deepEqual(await failure('VM.set_VCPUs_number_live', vm.ref, 1), ['VM_BAD_POWER_STATE', vm.ref, 'running', 'halted'])
      await c('VM.set_VCPUs_max', vm.ref, 2)
      await c('VM.set_VCPUs_at_startup', vm.ref, 1)
      await c('VM.start', vm.ref, false, false)
      await waitFor('the guest to boot', () => daemon.serial(vm.uuid).includes('FLOTILLA tick='))
      const inQemu = async () => (await agentCall<{ vcpus: number }>(daemon, 'vm.devices', { uuid: vm.uuid })).vcpus
      const metrics = await c<string>('VM.get_metrics', vm.ref)
      assert.equal(await inQemu(), 1)
      await c('VM.set_VCPUs_number_live', vm.ref, 2)
      assert.equal(await inQemu(), 2)
      assert.equal(await c('VM_metrics.get_VCPUs_number', metrics), 2)
      assert.equal(await c('VM.get_VCPUs_at_startup', vm.ref), 2, 'the next boot keeps them')
      assert.deepEqual(await failure('VM.set_VCPUs_number_live', vm.ref, 3), ['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', '3'])
      await c('VM.set_VCPUs_number_live', vm.ref, 1)
      assert.equal(await inQemu(), 1)
      assert.equal(await c('VM_metrics.get_VCPUs_number', metrics), 1)
      await waitFor('the guest to keep ticking', () => daemon.serial(vm.uuid).split('FLOTILLA tick=').length > 5)
      await c('VM.hard_shutdown', vm.ref)
    })
  })

  describe('VM.copy_bios_strings', () => {
    it('copies the host\'s SMBIOS strings once, and makes the host the VM\'s affinity', async () => {
      const vm = await newVm('oem')
      await c('VM.copy_bios_strings', vm, host)
      assert.deepEqual(await c('VM.get_bios_strings', vm), await c('host.get_bios_strings', host))
      assert.equal(await c('VM.get_affinity', vm), host)
      assert.deepEqual(await failure('VM.copy_bios_strings', vm, host), ['VM_BIOS_STRINGS_ALREADY_SET'])
    })
  })
})
