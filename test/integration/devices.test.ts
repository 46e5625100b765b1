// Devices of running VMs: disk hot-plug and unplug, CD insert and eject, NICs on a network
// that connects two VMs — checked in QEMU (through the agent) and in the guest.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { agentCall } from '../helpers/agent.js'
import { newGuest as makeGuest } from '../helpers/guest.js'
import { call, Daemon, login, waitFor } from '../helpers/daemon.js'

const daemon = new Daemon()
let url: string
let session: string
let sr: string

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
type Devices = { disks: { id: string; file?: string }[]; pci: string[] }
const devices = (uuid: string) => agentCall<Devices>(daemon, 'vm.devices', { uuid })

const newGuest = (name: string) => makeGuest(url, session, name)

const newVdi = (name: string) => c<string>('VDI.create', { SR: sr, virtual_size: 64 * 2 ** 20, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {} })
const lastDisksLine = (uuid: string) => [...daemon.serial(uuid).matchAll(/FLOTILLA disks: (.*)/g)].at(-1)?.[1]

/** The IPv6 link-local address a guest derives from its MAC (EUI-64), as `ip` prints it. */
function linkLocal(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16))
  const group = (hi: number, lo: number) => ((hi << 8) | lo).toString(16)
  return `fe80::${group(b[0]! ^ 2, b[1]!)}:${group(b[2]!, 0xff)}:${group(0xfe, b[3]!)}:${group(b[4]!, b[5]!)}`
}

describe('devices of running VMs', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    const pool = (await c<string[]>('pool.get_all'))[0]
    sr = await c<string>('pool.get_default_SR', pool)
  })
  after(() => daemon.dispose())

  it('hot-plugs a disk that QEMU and the guest see, and unplugs it', async () => {
    const vm = await newGuest('hotplug')
    await c('VM.start', vm.ref, false, false)
    await waitFor('the guest to list its disks', () => lastDisksLine(vm.uuid) === 'vda')
    const vdi = await newVdi('extra')
    const vbd = await c<string>('VBD.create', { VM: vm.ref, VDI: vdi, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    assert.equal(await c('VBD.get_device', vbd), 'xvdb')
    await c('VBD.plug', vbd)
    assert.equal(await c('VBD.get_currently_attached', vbd), true)
    const inQemu = await devices(vm.uuid)
    const location = await c<string>('VDI.get_location', vdi)
    assert.ok(inQemu.disks.some((d) => d.id === 'd1-dev' && d.file?.includes(location)), 'query-block shows the new disk')
    assert.ok(inQemu.pci.includes('d1-dev'), 'query-pci shows it behind a hot-plug port')
    await waitFor('the guest to see the disk', () => lastDisksLine(vm.uuid) === 'vda vdb')
    await assert.rejects(c('VDI.destroy', vdi), /VDI_IN_USE/)
    await c('VBD.unplug', vbd)
    await waitFor('the guest to lose the disk', () => lastDisksLine(vm.uuid) === 'vda')
    assert.ok(!(await devices(vm.uuid)).pci.includes('d1-dev'))
    await c('VM.hard_shutdown', vm.ref)
  })

  it('inserts and ejects a CD in a running VM', async () => {
    const vm = await newGuest('cd')
    const cd = await c<string>('VBD.create', { VM: vm.ref, VDI: 'OpaqueRef:NULL', userdevice: '3', bootable: false, mode: 'RO', type: 'CD', empty: true, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VM.start', vm.ref, false, false)
    assert.equal((await devices(vm.uuid)).disks.find((d) => d.id === 'd3-dev')?.file, undefined, 'the drive starts empty')
    const media = await newVdi('media')
    await c('VBD.insert', cd, media)
    const location = await c<string>('VDI.get_location', media)
    assert.ok((await devices(vm.uuid)).disks.find((d) => d.id === 'd3-dev')?.file?.includes(location))
    await assert.rejects(c('VBD.insert', cd, media), /VBD_NOT_EMPTY/)
    await c('VBD.eject', cd)
    assert.equal((await devices(vm.uuid)).disks.find((d) => d.id === 'd3-dev')?.file, undefined)
    assert.equal(await c('VBD.get_empty', cd), true)
    await assert.rejects(c('VBD.eject', cd), /VBD_IS_EMPTY/)
    await c('VM.hard_shutdown', vm.ref)
  })

  it('connects two VMs on one network, and hot-plugs a NIC', async () => {
    const network = await c<string>('network.create', { name_label: 'lab', name_description: '', MTU: 1500, other_config: {} })
    const a = await newGuest('net-a')
    const b = await newGuest('net-b')
    const vif = (vm: string) => c<string>('VIF.create', { VM: vm, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const macA = await c<string>('VIF.get_MAC', await vif(a.ref))
    const vifB = await vif(b.ref)
    const macB = await c<string>('VIF.get_MAC', vifB)
    await c('VM.start', a.ref, false, false)
    await c('VM.start', b.ref, false, false)
    await waitFor('a to see b', () => daemon.serial(a.uuid).includes(linkLocal(macB)), 90_000)
    await waitFor('b to see a', () => daemon.serial(b.uuid).includes(linkLocal(macA)), 90_000)
    const second = await c<string>('VIF.create', { VM: a.ref, network, device: '1', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VIF.plug', second)
    assert.ok((await devices(a.uuid)).pci.includes('n1'))
    await waitFor('the guest to bring up eth1', () => daemon.serial(a.uuid).includes('FLOTILLA net eth1'), 60_000)
    await c('VIF.unplug', second)
    assert.ok(!(await devices(a.uuid)).pci.includes('n1'))
    await c('VM.hard_shutdown', a.ref)
    await c('VM.hard_shutdown', b.ref)
    await c('network.destroy', network)
  })
})
