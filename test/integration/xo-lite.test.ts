// XO Lite's calls, replayed in its order over JSON-RPC as its xen-api library sends them
// (@xen-orchestra/lite: pages/vm/new.vue's _createVm, the host dashboard and system pages, the
// host console page): its new-VM wizard makes and starts a VM from the test-guest template, its
// host page finds the hardware, the host's PIFs and networks and the host console.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login } from '../helpers/daemon.js'

const MiB = 2 ** 20
const NULL = 'OpaqueRef:NULL'
const daemon = new Daemon()
let session: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)

describe('XO Lite', { timeout: 300_000 }, () => {
  before(async () => {
    await daemon.start()
    session = await login(daemon.url)
  })
  after(() => daemon.dispose())

  it("the new-VM wizard makes and starts a VM from the test-guest template", async () => {
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const [host] = await c<string[]>('host.get_all')
    const [network] = await c<string[]>('network.get_all')
    const [vm] = [await c<string>('VM.copy', template, 'lite vm', '')]
    assert.equal(await c('VM.get_domain_type', vm), 'hvm')
    await c('VM.remove_from_other_config', vm, 'disks')
    await c('VM.provision', vm)
    await c('VM.set_VCPUs_max', vm, '2')
    await Promise.all([
      c('VM.set_name_label', vm, 'lite vm'),
      c('VM.set_name_description', vm, 'made by the wizard'),
      c('VM.set_tags', vm, ['lite']),
      c('VM.set_affinity', vm, NULL),
      c('VM.set_memory', vm, 192 * MiB),
      c('VM.remove_from_other_config', vm, 'auto_poweron').then(() => c('VM.add_to_other_config', vm, 'auto_poweron', 'false')),
      c('VM.remove_from_platform', vm, 'cores-per-socket').then(() => c('VM.add_to_platform', vm, 'cores-per-socket', '1')),
      c('VM.set_VCPUs_at_startup', vm, 2),
    ])
    const record = await c<Record<string, any>>('VM.get_record', vm)
    assert.equal(record.is_a_template, false)
    assert.equal(Number(record.memory_static_max), 192 * MiB)
    assert.equal(Number(record.memory_dynamic_min), 192 * MiB)
    await Promise.all((record.VIFs as string[]).map((vif) => c('VIF.destroy', vif)))
    await c('VIF.create', { VM: vm, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] })
    const sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
    const vdi = await c<string>('VDI.create', { name_label: 'lite data', name_description: '', SR: sr, virtual_size: 16 * MiB, type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: {}, tags: [] })
    await c('VBD.create', { VM: vm, VDI: vdi, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, unpluggable: true, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VM.start', vm, false, false)
    assert.equal(await c('VM.get_power_state', vm), 'Running')
    assert.equal(await c('VM.get_resident_on', vm), host)
    assert.equal(Number(await c('VM_metrics.get_VCPUs_number', await c('VM.get_metrics', vm))), 2)
    await c('VM.hard_shutdown', vm)
    await c('VM.destroy', vm)
    await c('VDI.destroy', vdi)
  })

  it('the host page: hardware from bios_strings, its PIFs and networks, and a console on the control domain', async () => {
    const [host] = await c<string[]>('host.get_all')
    const hostRecord = await c<Record<string, any>>('host.get_record', host)
    for (const key of ['system-manufacturer', 'system-product-name', 'bios-vendor', 'bios-version']) assert.equal(typeof hostRecord.bios_strings[key], 'string', key)
    const pifs = Object.entries(await c<Record<string, any>>('PIF.get_all_records')).filter(([, p]) => p.host === host)
    assert.ok(pifs.length >= 1, 'the host has a PIF')
    // A daemon on loopback has no management NIC: any PIF of the host will do for the page.
    const [pifRef, pif] = pifs[0]!
    assert.equal(pif.physical, true)
    assert.match(pif.MAC, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
    assert.ok((await c<string[]>('network.get_PIFs', pif.network)).includes(pifRef))
    const metrics = await c<Record<string, any>>('PIF_metrics.get_record', pif.metrics)
    assert.equal(typeof metrics.carrier, 'boolean')
    const dom0 = hostRecord.control_domain
    assert.notEqual(dom0, NULL)
    const dom0Record = await c<Record<string, any>>('VM.get_record', dom0)
    assert.equal(dom0Record.is_control_domain, true)
    assert.equal(dom0Record.resident_on, host)
    assert.equal(dom0Record.power_state, 'Running')
    // XO Lite's VM list leaves it out, and it is no template.
    assert.equal(dom0Record.is_a_template, false)
    const consoles = await Promise.all((dom0Record.consoles as string[]).map((ref) => c<Record<string, any>>('console.get_record', ref)))
    const rfb = consoles.find((k) => k.protocol === 'rfb')
    assert.ok(rfb, 'the control domain has an rfb console')
    assert.match(rfb.location, /\/console\?/)
  })
})
