// The host's records as XO Lite reads them: bios_strings from the machine's SMBIOS, a control
// domain, and PIFs (with PIF_metrics and networks) for its NICs, made once and kept across restarts.
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, jsonrpc, login } from '../helpers/daemon.js'

/** The NICs xapi would make PIFs of: those with a device behind them. */
const physicalNics = () => readdirSync('/sys/class/net').filter((n) => existsSync(`/sys/class/net/${n}/device`)).sort()
const sysfs = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8').trim() : undefined)

describe('host records', () => {
  const daemon = new Daemon()
  let url: string
  let session: string
  let host: string
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
  const failure = async (method: string, ...params: unknown[]) => {
    const r = await jsonrpc(url, method, [session, ...params])
    return r.error ? [r.error.message, ...r.error.data] : undefined
  }

  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    host = (await c<string[]>('host.get_all'))[0]!
  })
  after(() => daemon.dispose())

  it('host.bios_strings has xapi\'s SMBIOS keys, with the values of /sys/class/dmi/id', async () => {
    const strings = await c<Record<string, string>>('host.get_bios_strings', host)
    const files: Record<string, string> = { 'bios-vendor': 'bios_vendor', 'bios-version': 'bios_version', 'system-manufacturer': 'sys_vendor', 'system-product-name': 'product_name', 'system-version': 'product_version', 'system-serial-number': 'product_serial', 'baseboard-manufacturer': 'board_vendor', 'baseboard-product-name': 'board_name', 'baseboard-version': 'board_version', 'baseboard-serial-number': 'board_serial' }
    for (const [key, file] of Object.entries(files)) {
      assert.equal(typeof strings[key], 'string', key)
      const value = sysfs(`/sys/class/dmi/id/${file}`)
      if (value !== undefined && value !== 'Not Specified') assert.equal(strings[key], value, key)
    }
  })

  it('has a control domain: Running here, named after the host, with its CPUs, and no life cycle', async () => {
    const dom0 = await c<string>('host.get_control_domain', host)
    const vm = await c('VM.get_record', dom0)
    const hostRec = await c('host.get_record', host)
    assert.equal(vm.is_control_domain, true)
    assert.equal(vm.power_state, 'Running')
    assert.equal(vm.resident_on, host)
    assert.equal(vm.domid, 0)
    assert.equal(vm.name_label, `Control domain on host: ${hostRec.hostname}`)
    assert.equal(String(vm.VCPUs_max), hostRec.cpu_info.cpu_count)
    assert.ok(hostRec.resident_VMs.includes(dom0))
    assert.equal((await c('VM_metrics.get_record', vm.metrics)).VCPUs_number, vm.VCPUs_max)
    assert.deepEqual([...vm.allowed_operations].sort(), ['changing_dynamic_range', 'changing_static_range', 'metadata_export'])
    for (const [method, ...args] of [['VM.hard_shutdown'], ['VM.clean_reboot'], ['VM.suspend'], ['VM.snapshot', 'snap']] as const)
      assert.deepEqual(await failure(method, dom0, ...args), ['OPERATION_NOT_ALLOWED', 'This operation is not allowed on a control domain'], method)
    assert.deepEqual((await failure('VM.destroy', dom0))?.[0], 'VM_BAD_POWER_STATE')
    const templates = Object.values(await c<Record<string, any>>('VM.get_all_records')).filter((r) => r.is_a_template)
    assert.ok(templates.every((t) => !t.is_control_domain), 'it is no template')
  })

  it('has a PIF for each physical NIC, each on a network of its own, with its metrics', async () => {
    const pifs = await c<Record<string, any>>('PIF.get_all_records')
    const records = Object.entries(pifs)
    assert.deepEqual(records.map(([, p]) => p.device).sort(), physicalNics())
    assert.deepEqual((await c<string[]>('host.get_PIFs', host)).sort(), Object.keys(pifs).sort())
    for (const [ref, pif] of records) {
      assert.equal(pif.host, host)
      assert.equal(pif.physical, true)
      assert.equal(pif.MAC, sysfs(`/sys/class/net/${pif.device}/address`))
      assert.equal(String(pif.MTU), sysfs(`/sys/class/net/${pif.device}/mtu`))
      assert.equal(pif.VLAN, -1)
      assert.equal(pif.management, false, 'the host is managed over loopback here')
      const network = await c('network.get_record', pif.network)
      assert.equal(network.name_label, `Pool-wide network associated with ${pif.device}`)
      assert.deepEqual(network.PIFs, [ref])
      const metrics = await c('PIF_metrics.get_record', pif.metrics)
      assert.equal(metrics.carrier, sysfs(`/sys/class/net/${pif.device}/carrier`) === '1')
      assert.deepEqual(await failure('network.destroy', pif.network), ['NETWORK_CONTAINS_PIF', ref])
    }
  })

  it('keeps the same control domain and PIFs through a restart and a PIF.scan', async () => {
    const dom0 = await c<string>('host.get_control_domain', host)
    const pifs = (await c<string[]>('PIF.get_all')).sort()
    const networks = (await c<string[]>('network.get_all')).sort()
    await daemon.stop()
    await daemon.start()
    session = await login(url)
    assert.equal(await c('host.get_control_domain', host), dom0)
    assert.equal(Object.values(await c<Record<string, any>>('VM.get_all_records')).filter((r) => r.is_control_domain).length, 1)
    assert.equal(await c('VM.get_power_state', dom0), 'Running')
    await c('PIF.scan', host)
    assert.deepEqual((await c<string[]>('PIF.get_all')).sort(), pifs)
    assert.deepEqual((await c<string[]>('network.get_all')).sort(), networks)
  })
})

/** A non-loopback IPv4 address of this machine, if it has one. */
const externalAddress = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a?.family === 'IPv4' && !a.internal)?.address

describe('the management PIF', { skip: externalAddress ? false : 'this machine has no non-loopback IPv4 address' }, () => {
  const daemon = new Daemon({ address: externalAddress })
  after(() => daemon.dispose())

  it('is the NIC carrying host.address, attached, with the IP configuration the system gave it', async () => {
    await daemon.start()
    const session = await login(daemon.url)
    const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
    const [host] = await c<string[]>('host.get_all')
    assert.equal(await c('host.get_address', host), externalAddress)
    const management = Object.values(await c<Record<string, any>>('PIF.get_all_records')).filter((p) => p.management)
    assert.equal(management.length, 1)
    const [pif] = management
    const nic = Object.entries(os.networkInterfaces()).find(([, addrs]) => addrs?.some((a) => a.address === externalAddress))!
    const v4 = nic[1]!.find((a) => a.address === externalAddress)!
    assert.equal(pif.device, nic[0])
    assert.equal(pif.MAC, v4.mac)
    assert.equal(pif.IP, externalAddress)
    assert.equal(pif.netmask, v4.netmask)
    assert.equal(pif.currently_attached, true)
    assert.ok(['Static', 'DHCP'].includes(pif.ip_configuration_mode))
    assert.equal(pif.primary_address_type, 'IPv4')
  })
})
