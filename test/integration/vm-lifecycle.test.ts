// Real VMs: the test guest from the "Flotilla test guest" template on QEMU (TCG here), driven
// through the XenAPI, watched on its serial console.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { newGuest as makeGuest } from '../helpers/guest.js'
import { call, Daemon, jsonrpc, login, waitFor } from '../helpers/daemon.js'
import { tapName } from '../../src/net/bridge.js'

const daemon = new Daemon()
let url: string
let session: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)

const newGuest = (name: string, oem: string[] = []) => makeGuest(url, session, name, { oem })

const ticks = (uuid: string) => [...daemon.serial(uuid).matchAll(/FLOTILLA tick=(\d+)/g)].map((m) => Number(m[1]))
const waitForTick = (uuid: string, n = 1) => waitFor(`tick ${n} of ${uuid}`, () => ticks(uuid).some((t) => t >= n))
const powerState = (ref: string) => c<string>('VM.get_power_state', ref)

describe('VM lifecycle on QEMU', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
  })
  after(() => daemon.dispose())

  it('boots the test guest under BIOS, shuts it down cleanly and hard, and reboots it', async () => {
    const vm = await newGuest('bios')
    await c('VM.start', vm.ref, false, false)
    assert.equal(await powerState(vm.ref), 'Running')
    await waitForTick(vm.uuid)
    assert.match(daemon.serial(vm.uuid), new RegExp(`FLOTILLA-GUEST boot uuid=${vm.uuid} firmware=bios`), 'the guest sees the VM uuid as its SMBIOS uuid')
    const vmRecord = await c('VM.get_record', vm.ref)
    assert.equal((await c<string[]>('host.get_resident_VMs', vmRecord.resident_on)).includes(vm.ref), true)
    assert.equal(vmRecord.consoles.length, 2)
    await assert.rejects(c('VM.start', vm.ref, false, false), /VM_BAD_POWER_STATE/)
    await c('VM.hard_reboot', vm.ref)
    await waitFor('a second boot', () => daemon.serial(vm.uuid).split('FLOTILLA-GUEST boot').length > 2)
    await c('VM.clean_shutdown', vm.ref)
    assert.equal(await powerState(vm.ref), 'Halted')
    const halted = await c('VM.get_record', vm.ref)
    assert.equal(halted.resident_on, 'OpaqueRef:NULL')
    assert.deepEqual(halted.consoles, [])
    await c('VM.start', vm.ref, false, false)
    await waitForTick(vm.uuid)
    await c('VM.pause', vm.ref)
    assert.equal(await powerState(vm.ref), 'Paused')
    await c('VM.unpause', vm.ref)
    await c('VM.hard_shutdown', vm.ref)
    assert.equal(await powerState(vm.ref), 'Halted')
    const hardAgain = await jsonrpc(url, 'VM.hard_shutdown', [session, vm.ref])
    assert.deepEqual([hardAgain.error?.message, ...(hardAgain.error?.data ?? [])], ['VM_BAD_POWER_STATE', vm.ref, 'paused, suspended, running', 'halted'])
  })

  it('suspends with no QEMU left, survives a daemon restart, and resumes where it was', async () => {
    const vm = await newGuest('sleeper')
    await c('VM.start', vm.ref, false, false)
    await waitForTick(vm.uuid, 2)
    await c('VM.suspend', vm.ref)
    const suspended = await c('VM.get_record', vm.ref)
    assert.equal(suspended.power_state, 'Suspended')
    assert.notEqual(suspended.suspend_VDI, 'OpaqueRef:NULL')
    assert.equal(suspended.resident_on, 'OpaqueRef:NULL')
    assert.equal(await c('VDI.get_type', suspended.suspend_VDI), 'suspend')
    assert.ok(!execFileSync('ps', ['-eo', 'args']).toString().includes(vm.uuid), 'no QEMU runs while Suspended')
    await daemon.stop()
    await daemon.start()
    await c('VM.resume', vm.ref, false, false)
    assert.equal(await powerState(vm.ref), 'Running')
    await waitFor('ticks after resume', () => daemon.serial(vm.uuid).includes('FLOTILLA tick='))
    const after = ticks(vm.uuid)
    assert.ok(after[0]! > 2, `the counter went on from where it was (first tick after resume: ${after[0]})`)
    assert.ok(!daemon.serial(vm.uuid).includes('FLOTILLA-GUEST boot'), 'no reboot')
    assert.equal(await c('VM.get_suspend_VDI', vm.ref), 'OpaqueRef:NULL')
    await assert.rejects(c('VDI.get_record', suspended.suspend_VDI), /HANDLE_INVALID/)
    await c('VM.hard_shutdown', vm.ref)
  })

  it('follows the actions_after_* of the reason the guest stopped for: crash, reboot and poweroff told apart', async () => {
    // Each guest's own reason has one action and the two other reasons the opposite one, so a
    // stop taken for another reason ends the other way (a restart where a halt was due, or not).
    const setActions = (ref: string, a: { crash: string; reboot: string; shutdown: string }) =>
      Promise.all([c('VM.set_actions_after_crash', ref, a.crash), c('VM.set_actions_after_reboot', ref, a.reboot), c('VM.set_actions_after_shutdown', ref, a.shutdown)])
    const halted = (what: string, ref: string) => waitFor(what, async () => (await powerState(ref)) === 'Halted', 90_000)
    /** A start after a stop makes new consoles: the VM runs with none of `before`. */
    const restarted = (what: string, ref: string, before: string[]) =>
      waitFor(what, async () => {
        const vm = await c('VM.get_record', ref)
        return vm.power_state === 'Running' && vm.consoles.length > 0 && !vm.consoles.some((x: string) => before.includes(x))
      }, 120_000)

    const rebooter = await newGuest('rebooter', ['flotilla:reboot-after=2'])
    await setActions(rebooter.ref, { crash: 'restart', reboot: 'destroy', shutdown: 'restart' })
    await c('VM.start', rebooter.ref, false, false)
    await halted('the rebooting guest to be Halted', rebooter.ref)

    const crasher = await newGuest('crasher', ['flotilla:crash-after=2'])
    await setActions(crasher.ref, { crash: 'restart', reboot: 'destroy', shutdown: 'destroy' })
    await c('VM.start', crasher.ref, false, false)
    await restarted('the crashed guest to be restarted', crasher.ref, await c<string[]>('VM.get_consoles', crasher.ref))
    await c('VM.set_actions_after_crash', crasher.ref, 'destroy')
    await halted('the crashed guest to be Halted', crasher.ref)

    const selfOff = await newGuest('self-off', ['flotilla:poweroff-after=2'])
    await setActions(selfOff.ref, { crash: 'destroy', reboot: 'destroy', shutdown: 'restart' })
    await c('VM.start', selfOff.ref, false, false)
    await restarted('the powered-off guest to be restarted', selfOff.ref, await c<string[]>('VM.get_consoles', selfOff.ref))
    await c('VM.set_actions_after_shutdown', selfOff.ref, 'destroy')
    await halted('the powered-off guest to be Halted', selfOff.ref)

    // Two restart cycles later, the rebooter was not restarted.
    const rebooted = await c('VM.get_record', rebooter.ref)
    assert.equal(rebooted.power_state, 'Halted')
    assert.deepEqual(rebooted.consoles, [])
  })

  it('boots under UEFI and keeps a UEFI variable across a VM restart', async () => {
    const vm = await newGuest('uefi', ['flotilla:efivar-write=kept-value'])
    await c('VM.remove_from_HVM_boot_params', vm.ref, 'firmware')
    await c('VM.add_to_HVM_boot_params', vm.ref, 'firmware', 'uefi')
    await c('VM.start', vm.ref, false, false)
    await waitForTick(vm.uuid)
    assert.match(daemon.serial(vm.uuid), /firmware=uefi/)
    await c('VM.hard_shutdown', vm.ref)
    const nvram = await c<Record<string, string>>('VM.get_NVRAM', vm.ref)
    assert.ok(nvram['EFI-variables'] && nvram['EFI-variables'].length < 64 * 1024, 'the variable store is kept, compressed')
    await c('VM.set_bios_strings', vm.ref, { 'oem-1': 'flotilla:none' })
    await c('VM.start', vm.ref, false, false)
    await waitForTick(vm.uuid)
    assert.match(daemon.serial(vm.uuid), /FLOTILLA efivar FlotillaTest=kept-value/)
    await c('VM.hard_shutdown', vm.ref)
  })

  it("refuses a start that does not fit in the host's memory", async () => {
    const vm = await newGuest('too-big')
    const huge = 4 * 2 ** 40
    await c('VM.set_memory_limits', vm.ref, 128 * 2 ** 20, huge, huge, huge).catch(async () => {
      for (const f of ['memory_static_max', 'memory_dynamic_max', 'memory_dynamic_min']) await c(`VM.set_${f}`, vm.ref, huge)
    })
    const res = await jsonrpc(url, 'VM.start', [session, vm.ref, false, false])
    assert.equal(res.error?.message, 'HOST_NOT_ENOUGH_FREE_MEMORY')
    assert.equal(await powerState(vm.ref), 'Halted')
  })

  it('keeps VMs running, with their NICs, through a kill -9 and a stop of the daemon, and still controls them after', async () => {
    const vm = await newGuest('survivor')
    const network = await c<string>('network.create', { name_label: 'survivor net', name_description: '', MTU: 1500, other_config: {} })
    await c('VIF.create', { VM: vm.ref, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VM.start', vm.ref, false, false)
    await waitForTick(vm.uuid)
    await daemon.crash(false)
    const before = Math.max(...ticks(vm.uuid))
    await daemon.start()
    assert.equal(await powerState(vm.ref), 'Running')
    await waitFor('ticks to go on', () => Math.max(...ticks(vm.uuid)) > before + 1)
    assert.equal(daemon.serial(vm.uuid).split('FLOTILLA-GUEST boot').length, 2, 'no reboot')
    // A clean stop of the daemon lets go of the VM: its NICs stay plugged into their bridges.
    const taps = await Promise.all((await c<string[]>('VM.get_VIFs', vm.ref)).map(async (vif) => tapName(vm.uuid, await c<string>('VIF.get_device', vif))))
    await daemon.stop()
    for (const tap of taps) assert.match(execFileSync('ip', ['-o', 'link', 'show', 'dev', tap]).toString(), / master /, `${tap} is still in its bridge`)
    await daemon.start()
    session = await login(url)
    assert.equal(await powerState(vm.ref), 'Running')
    await c('VM.clean_shutdown', vm.ref)
    assert.equal(await powerState(vm.ref), 'Halted')
  })
})
