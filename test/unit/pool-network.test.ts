// Networks that span hosts, the pure parts: the ip batches that put a PIF's NIC into its
// network's bridge (moving the management address in one go) and take it out, the facts that
// keep giving a bridged NIC its addresses, PIF.unplug's refusals; and PIF plug/unplug and VLANs
// on a simulated host (its agent real, its network in memory).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { attachLines, bridgeName, detachLines, type NicPlace } from '../../src/net/bridge.js'
import { bridgeStandIns, parseIpAddr, throughBridges } from '../../src/agent/nics.js'
import type { NetworkFacts, NicFacts } from '../../src/agent/contract.js'
import { syncPifs, unplugError } from '../../src/xapi/pif.js'
import { memoryDatabase } from '../helpers/memory-db.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

const nicFacts = (device: string, address?: string): NicFacts => ({
  device, mac: `02:00:00:00:00:0${device.slice(-1)}`, mtu: 1500, physical: true, carrier: true, speed: 1000, fullDuplex: true, vendorId: '', deviceId: '', pciBusPath: '',
  ipv4: address ? [{ address, prefix: 24, dynamic: false }] : [], ipv6: [],
})

const eth0: NicPlace = { device: 'eth0', mac: '02:00:00:00:00:01', mtu: 1500, holder: 'eth0', addresses: ['10.0.0.11/24', 'fd00::11/64'], routes: [{ dst: 'default', gateway: '10.0.0.1', metric: 100 }], masterOtherwiseEmpty: true }

describe('a PIF into its bridge', () => {
  it('moves the NIC\'s addresses and routes onto the bridge, which takes its MAC, in one batch', () => {
    assert.deepEqual(attachLines(eth0, 'fb1'), [
      'link set dev fb1 address 02:00:00:00:00:01 mtu 1500 up',
      'addr del 10.0.0.11/24 dev eth0',
      'addr del fd00::11/64 dev eth0',
      'link set dev eth0 master fb1 up',
      'addr add 10.0.0.11/24 brd + dev fb1',
      'addr add fd00::11/64 dev fb1',
      'route replace default via 10.0.0.1 dev fb1 metric 100',
    ])
  })

  it('does nothing when the NIC is in the bridge already', () => {
    assert.deepEqual(attachLines({ ...eth0, master: 'fb1', holder: 'fb1' }, 'fb1'), [])
    assert.deepEqual(attachLines({ ...eth0, master: 'fb1', addresses: [], routes: [] }, 'fb1'), [])
  })

  it('moves a NIC from its previous network\'s bridge (a host that joined a pool), removing that bridge once empty', () => {
    const inOld = { ...eth0, master: 'fold', holder: 'fold', routes: [] }
    assert.deepEqual(attachLines(inOld, 'fnew'), [
      'link set dev fnew address 02:00:00:00:00:01 mtu 1500 up',
      'addr del 10.0.0.11/24 dev fold',
      'addr del fd00::11/64 dev fold',
      'link set dev eth0 nomaster',
      'link set dev eth0 master fnew up',
      'addr add 10.0.0.11/24 brd + dev fnew',
      'addr add fd00::11/64 dev fnew',
      'link del dev fold',
    ])
    assert.ok(!attachLines({ ...inOld, masterOtherwiseEmpty: false }, 'fnew').includes('link del dev fold'), 'a bridge with VMs\' taps stays')
  })

  it('gives the addresses back to the NIC when it leaves the bridge', () => {
    assert.deepEqual(detachLines({ ...eth0, master: 'fb1', holder: 'fb1' }, 'fb1'), [
      'addr del 10.0.0.11/24 dev fb1',
      'addr del fd00::11/64 dev fb1',
      'link set dev eth0 nomaster',
      'addr add 10.0.0.11/24 brd + dev eth0',
      'addr add fd00::11/64 dev eth0',
      'route replace default via 10.0.0.1 dev eth0 metric 100',
    ])
    assert.deepEqual(detachLines({ ...eth0, addresses: [], routes: [], master: 'fb1' }, 'fb1'), ['link set dev eth0 nomaster'])
    assert.deepEqual(detachLines(eth0, 'fb1'), [], 'not in it: nothing')
  })

  it('names bridges per host and network, within 15 characters', () => {
    const name = bridgeName('0f3c8a52-1111-2222-3333-444444444444', 'ab12cd34-5555-6666-7777-888888888888')
    assert.equal(name, 'f0f3c8aab12cd')
    assert.ok(name.length <= 15)
  })
})

describe('the facts of a bridged NIC', () => {
  const json = JSON.stringify([
    { ifname: 'eth0', link_type: 'ether', mtu: 1500, address: '02:00:00:00:00:01', master: 'fb1', addr_info: [{ family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' }] },
    { ifname: 'fb1', link_type: 'ether', mtu: 1500, address: '02:00:00:00:00:01', addr_info: [{ family: 'inet', local: '10.0.0.11', prefixlen: 24, scope: 'global' }] },
    { ifname: 'tap1', link_type: 'ether', mtu: 1500, address: '66:00:00:00:00:09', master: 'fb1' },
    { ifname: 'fb2', link_type: 'ether', mtu: 1500, address: '66:00:00:00:00:02', addr_info: [{ family: 'inet', local: '192.168.5.1', prefixlen: 24, scope: 'global' }] },
  ])

  it('give the NIC the addresses its bridge carries for it, and the default route through it', () => {
    const standIns = bridgeStandIns(json)
    assert.deepEqual([...standIns], [['fb1', 'eth0']], 'a tap has a MAC of its own')
    const gateway = { device: 'fb1', address: '10.0.0.1' }
    const nics = throughBridges(parseIpAddr(json), standIns, [gateway, undefined])
    assert.deepEqual(nics.find((n) => n.device === 'eth0')!.ipv4, [{ address: '10.0.0.11', prefix: 24, dynamic: false }])
    assert.deepEqual(nics.find((n) => n.device === 'fb1')!.ipv4, [])
    assert.deepEqual(nics.find((n) => n.device === 'fb2')!.ipv4, [{ address: '192.168.5.1', prefix: 24, dynamic: false }], 'a bridge standing for no NIC keeps its own')
    assert.equal(gateway.device, 'eth0')
  })
})

describe('PIF.unplug', () => {
  const pif = { managed: true, currently_attached: true, management: false, disallow_unplug: false } as never
  const pool = { ha_enabled: false, redo_log_enabled: false }
  const code = (p: object, q = pool) => unplugError('OpaqueRef:p', { ...(pif as object), ...p } as never, q)?.code
  it('refuses as xapi does: unmanaged, HA on, the management interface, disallow_unplug', () => {
    assert.equal(code({}), undefined)
    assert.equal(code({ managed: false }), 'PIF_UNMANAGED')
    assert.equal(code({}, { ...pool, ha_enabled: true }), 'HA_IS_ENABLED')
    assert.equal(code({ currently_attached: false }, { ...pool, ha_enabled: true }), undefined)
    assert.deepEqual(unplugError('OpaqueRef:p', { ...(pif as object), management: true } as never, pool)?.params, ['OpaqueRef:p'])
    assert.equal(code({ management: true }), 'PIF_IS_MANAGEMENT_INTERFACE')
    assert.equal(code({ disallow_unplug: true }), 'PIF_DOES_NOT_ALLOW_UNPLUG')
  })
})

describe('a host\'s PIFs at start', () => {
  it('stay plugged once plugged, and a VLAN PIF on the same device is not taken for the NIC\'s own', () => {
    const db = memoryDatabase()
    const host = db.transact((tx) => tx.create('host', { name_label: 'box', hostname: 'box', address: '192.0.2.2' }))
    const facts: NetworkFacts = { nics: [nicFacts('eth0', '192.0.2.2'), nicFacts('eth1')], dns: [] }
    db.transact((tx) => syncPifs(tx, host, facts, '192.0.2.2', 'T', true))
    const byDevice = () => (db.replica.record('host', host)!.PIFs as string[]).map((p) => ({ ref: p, ...db.replica.record('PIF', p)! }))
    const eth1 = byDevice().find((p) => p.device === 'eth1')!
    db.transact((tx) => {
      tx.update('PIF', eth1.ref, { currently_attached: true })
      tx.create('PIF', { device: 'eth1', host, VLAN: 5, MAC: 'fe:ff:ff:ff:ff:ff', network: eth1.network, currently_attached: true })
    })
    db.transact((tx) => syncPifs(tx, host, facts, '192.0.2.2', 'T', false))
    const after = byDevice()
    assert.equal(after.find((p) => p.ref === eth1.ref)!.currently_attached, true, 'PIF.plug holds across restarts')
    const vlan = after.find((p) => p.VLAN === 5)!
    assert.equal(vlan.MAC, 'fe:ff:ff:ff:ff:ff', 'the VLAN PIF is left as it is')
    assert.equal(after.find((p) => p.ref === eth1.ref)!.VLAN, -1)
  })
})

describe('VLANs and PIFs on a simulated host', () => {
  let host: SimHost
  const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)
  const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: XapiCallError) => e.description.join(' '))
  before(async () => {
    host = await startSimHost()
  })
  after(() => host?.dispose())

  it('puts the management NIC into its network\'s bridge at start, and refuses to unplug it', async () => {
    const [eth0] = await c<string[]>('PIF.get_all')
    const network = await c<string>('PIF.get_network', eth0)
    const hostUuid = await c<string>('host.get_uuid', host.svc.hostRef)
    assert.equal(host.network.nics.get('eth0'), bridgeName(hostUuid, await c<string>('network.get_uuid', network)))
    assert.equal(await code(c('PIF.unplug', eth0)), `PIF_IS_MANAGEMENT_INTERFACE ${eth0}`)
  })

  it('makes a VLAN as xapi does: a plugged untagged PIF with the tag, its device in the network\'s bridge; refusals change nothing', async () => {
    const [eth0] = await c<string[]>('PIF.get_all')
    const net = await c<string>('network.create', { name_label: 'vlan 5', name_description: '', MTU: 1500, other_config: {} })
    assert.equal(await code(c('VLAN.create', eth0, 4095, net)), 'VLAN_TAG_INVALID 4095')
    const [untagged] = await c<string[]>('pool.create_VLAN_from_PIF', eth0, net, 5)
    const pif = await c('PIF.get_record', untagged)
    assert.deepEqual([pif.device, pif.VLAN, pif.currently_attached, pif.network, pif.host], ['eth0', 5, true, net, host.svc.hostRef])
    const vlan = pif.VLAN_master_of
    assert.equal(await c('VLAN.get_tagged_PIF', vlan), eth0)
    assert.deepEqual(await c('PIF.get_VLAN_slave_of', eth0), [vlan])
    const bridge = bridgeName(await c<string>('host.get_uuid', host.svc.hostRef), await c<string>('network.get_uuid', net))
    assert.equal(host.network.taps.get('eth0.5'), bridge)
    const other = await c<string>('network.create', { name_label: 'other', name_description: '', MTU: 1500, other_config: {} })
    assert.equal(await code(c('VLAN.create', eth0, 5, other)), 'PIF_VLAN_EXISTS eth0')
    assert.equal(await code(c('VLAN.create', untagged, 6, other)), `PIF_IS_VLAN ${untagged}`)
    assert.equal(await code(c('VLAN.create', eth0, 6, net)), `NETWORK_ALREADY_CONNECTED ${host.svc.hostRef} ${untagged}`)
    assert.equal(await code(c('PIF.create_VLAN', 'eth9', other, host.svc.hostRef, 6)), 'INVALID_VALUE device eth9')
    assert.equal((await c<string[]>('VLAN.get_all')).length, 1)
    await c('VLAN.destroy', vlan)
    assert.deepEqual(await c('VLAN.get_all'), [])
    assert.equal(await code(c('PIF.get_record', untagged)), `HANDLE_INVALID PIF ${untagged}`)
    assert.equal(host.network.taps.has('eth0.5'), false)
    const [again] = await c<string[]>('pool.create_VLAN', 'eth0', other, 7)
    assert.equal(await c('PIF.get_VLAN', again), 7)
    await c('PIF.unplug', again)
    assert.equal(host.network.taps.has('eth0.7'), false)
    await c('PIF.plug', again)
    assert.equal(host.network.taps.has('eth0.7'), true)
  })

  it("plugs an unplugged PIF of a VM's network when the VM starts (xapi's attach_for_vm)", async () => {
    const net = await c<string>('network.create', { name_label: 'vlan 8', name_description: '', MTU: 1500, other_config: {} })
    const [pif] = await c<string[]>('pool.create_VLAN', 'eth0', net, 8)
    await c('PIF.unplug', pif)
    assert.equal(host.network.taps.has('eth0.8'), false)
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c<string>('VM.clone', template, 'attach-for-vm')
    await c('VM.provision', vm)
    await c('VIF.create', { device: '1', network: net, VM: vm, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c('VM.start', vm, false, false)
    assert.equal(await c('PIF.get_currently_attached', pif), true)
    assert.equal(host.network.taps.has('eth0.8'), true)
    await c('VM.hard_shutdown', vm)
  })
})
