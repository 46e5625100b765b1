// Networks that span hosts, the pure parts: the ip batches that put a PIF's NIC into its
// network's bridge (moving the management address in one go) and take it out, the facts that
// keep giving a bridged NIC its addresses, and PIF.unplug's refusals.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { attachLines, bridgeName, detachLines, type NicPlace } from '../../src/net/bridge.js'
import { bridgeStandIns, parseIpAddr, throughBridges } from '../../src/agent/nics.js'
import { unplugError } from '../../src/xapi/pif.js'

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
