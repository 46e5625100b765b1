// What a host's records are made of: SMBIOS strings, NIC facts, and the control domain and PIFs
// its start of day writes (on an in-memory replica, as the pool database would apply them).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { memoryDatabase } from '../helpers/memory-db.js'
import { biosStrings, smbiosOemStrings } from '../../src/agent/facts.js'
import { parseDefaultRoute, parseIpAddr, parseResolvConf } from '../../src/agent/nics.js'
import type { NetworkFacts, NicFacts } from '../../src/agent/contract.js'
import { NULL_REF } from '../../src/idl/index.js'
import { CONTROL_DOMAIN_MEMORY, ensureControlDomain } from '../../src/xapi/host.js'
import { pifFields, pifNics, syncPifs } from '../../src/xapi/pif.js'


const nic = (fields: Partial<NicFacts>): NicFacts => ({ device: 'eth0', mac: '02:00:00:00:00:01', mtu: 1500, physical: true, carrier: true, speed: 1000, fullDuplex: true, vendorId: '8086', deviceId: '10d3', pciBusPath: '0000:00:03.0', ipv4: [], ipv6: [], ...fields })

const NETWORK: NetworkFacts = {
  nics: [
    nic({ ipv4: [{ address: '192.0.2.2', prefix: 24, dynamic: false }], ipv6: [{ address: 'fd00::2', prefix: 64, dynamic: true }] }),
    nic({ device: 'eth1', mac: '02:00:00:00:00:02', ipv4: [] }),
    nic({ device: 'ifb0', physical: false }),
  ],
  gateway4: { device: 'eth0', address: '192.0.2.1' },
  gateway6: { device: 'eth0', address: 'fd00::1' },
  dns: ['10.0.0.53', '10.0.0.54'],
}

describe('SMBIOS strings', () => {
  it('fill the keys xapi fills, cleaned as xapi cleans them, missing ones empty', () => {
    const strings = biosStrings({ sys_vendor: 'QEMU\n', product_name: 'Standard PC (Q35 + ICH9, 2009)\n', bios_version: 'Not Specified\n', board_serial: 'ab\u0001c ' }, ['first', 'second'])
    assert.deepEqual(Object.keys(strings), ['bios-vendor', 'bios-version', 'system-manufacturer', 'system-product-name', 'system-version', 'system-serial-number', 'baseboard-manufacturer', 'baseboard-product-name', 'baseboard-version', 'baseboard-serial-number', 'oem-1', 'oem-2'])
    assert.equal(strings['system-manufacturer'], 'QEMU')
    assert.equal(strings['system-product-name'], 'Standard PC (Q35 + ICH9, 2009)')
    assert.equal(strings['bios-version'], '')
    assert.equal(strings['bios-vendor'], '')
    assert.equal(strings['baseboard-serial-number'], 'abc')
    assert.equal(strings['oem-2'], 'second')
  })

  it('read the OEM strings of type 11 structures in a raw SMBIOS table', () => {
    const structure = (type: number, formatted: number[], strings: string[]) =>
      Buffer.concat([Buffer.from([type, 4 + formatted.length, 0, 0, ...formatted]), ...strings.map((s) => Buffer.from(`${s}\0`)), Buffer.from(strings.length ? [0] : [0, 0])])
    const table = Buffer.concat([structure(1, [1, 2], ['Vendor', 'Product']), structure(11, [2], ['oem one', 'oem two']), structure(32, [0], []), structure(127, [], [])])
    assert.deepEqual(smbiosOemStrings(table), ['oem one', 'oem two'])
    assert.deepEqual(smbiosOemStrings(Buffer.alloc(0)), [])
  })
})

describe('NIC facts', () => {
  it('come from iproute2\'s JSON: ethernet links, global addresses, DHCP leases marked', () => {
    const links = parseIpAddr(
      JSON.stringify([
        { ifname: 'lo', link_type: 'loopback', mtu: 65536, address: '00:00:00:00:00:00', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
        { ifname: 'eth0', link_type: 'ether', mtu: 1400, address: '02:FC:00:00:00:01', addr_info: [{ family: 'inet', local: '192.0.2.2', prefixlen: 24, scope: 'global', dynamic: true }, { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' }, { family: 'inet6', local: 'fd00::2', prefixlen: 64, scope: 'global' }] },
      ]),
    )
    assert.deepEqual(links, [{ device: 'eth0', mac: '02:fc:00:00:00:01', mtu: 1400, ipv4: [{ address: '192.0.2.2', prefix: 24, dynamic: true }], ipv6: [{ address: 'fd00::2', prefix: 64, dynamic: false }] }])
    assert.deepEqual(parseDefaultRoute('[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]'), { device: 'eth0', address: '192.0.2.1' })
    assert.equal(parseDefaultRoute('[]'), undefined)
    assert.deepEqual(parseResolvConf('# comment\nnameserver 10.0.0.53\nsearch example\n nameserver fd00::53\n'), ['10.0.0.53', 'fd00::53'])
  })
})

describe('PIFs', () => {
  it('are made for physical NICs and for the one carrying the management address', () => {
    assert.deepEqual(pifNics(NETWORK, '127.0.0.1').map((n) => n.device), ['eth0', 'eth1'])
    const veth = { ...NETWORK, nics: [nic({ device: 'veth0', physical: false, ipv4: [{ address: '10.1.1.1', prefix: 16, dynamic: false }] })] }
    assert.deepEqual(pifNics(veth, '10.1.1.1').map((n) => n.device), ['veth0'])
  })

  it('describe the management NIC with the addresses the system gave it', () => {
    const pif = pifFields(NETWORK.nics[0]!, NETWORK, '192.0.2.2')
    assert.deepEqual(
      { ...pif },
      {
        device: 'eth0', MAC: '02:00:00:00:00:01', MTU: 1500, VLAN: -1, physical: true, management: true, currently_attached: true,
        ip_configuration_mode: 'Static', IP: '192.0.2.2', netmask: '255.255.255.0', gateway: '192.0.2.1', DNS: '10.0.0.53,10.0.0.54',
        ipv6_configuration_mode: 'Autoconf', IPv6: ['fd00::2/64'], ipv6_gateway: 'fd00::1', primary_address_type: 'IPv4', managed: true, properties: { gro: 'on' },
      },
    )
    const other = pifFields(NETWORK.nics[1]!, NETWORK, '192.0.2.2')
    assert.equal(other.management, false)
    assert.equal(other.currently_attached, false)
    assert.equal(other.ip_configuration_mode, 'None')
    assert.equal(other.gateway, '')
    assert.equal(other.DNS, '')
  })
})

describe('a host\'s start of day', () => {
  const start = (db: ReturnType<typeof memoryDatabase>, hostRef: string, address: string, cpus = 4) =>
    db.transact((tx) => {
      ensureControlDomain(tx, hostRef, 'box', cpus)
      syncPifs(tx, hostRef, NETWORK, address, '20260101T00:00:00Z', (tx.get('host', hostRef).PIFs as string[]).length === 0)
    })

  it('gives a host recorded before control domains and PIFs both, and a restart duplicates neither', () => {
    const db = memoryDatabase()
    const host = db.transact((tx) => tx.create('host', { name_label: 'box', hostname: 'box', address: '192.0.2.2' }))
    assert.equal(db.replica.record('host', host)!.control_domain, NULL_REF)
    start(db, host, '192.0.2.2')
    const dom0 = String(db.replica.record('host', host)!.control_domain)
    const vm = db.replica.record('VM', dom0)!
    assert.equal(vm.name_label, 'Control domain on host: box')
    assert.equal(vm.is_control_domain, true)
    assert.equal(vm.power_state, 'Running')
    assert.equal(vm.resident_on, host)
    assert.equal(vm.domid, 0)
    assert.equal(vm.VCPUs_max, 4)
    assert.equal(vm.memory_static_max, CONTROL_DOMAIN_MEMORY)
    assert.deepEqual(db.replica.record('host', host)!.resident_VMs, [dom0])
    assert.equal(db.replica.record('VM_metrics', String(vm.metrics))!.VCPUs_number, 4)
    const pifs = db.replica.record('host', host)!.PIFs as string[]
    assert.equal(pifs.length, 2)
    const eth0 = pifs.map((p) => db.replica.record('PIF', p)!).find((p) => p.device === 'eth0')!
    assert.equal(eth0.management, true)
    const network = db.replica.record('network', String(eth0.network))!
    assert.equal(network.name_label, 'Pool-wide network associated with eth0')
    assert.deepEqual(network.PIFs, [pifs.find((p) => db.replica.record('PIF', p)!.device === 'eth0')])
    assert.equal(db.replica.record('PIF_metrics', String(eth0.metrics))!.speed, 1000)

    start(db, host, '192.0.2.2', 8)
    assert.equal(db.replica.record('host', host)!.control_domain, dom0)
    assert.equal(db.replica.count('VM'), 1)
    assert.equal(db.replica.record('VM', dom0)!.VCPUs_max, 8)
    assert.deepEqual((db.replica.record('host', host)!.PIFs as string[]).sort(), [...pifs].sort())
    assert.equal(db.replica.count('network'), 2)
    assert.equal(db.replica.count('PIF_metrics'), 2)
  })

  it('moves the management flag with the management address, and keeps a renamed control domain\'s name', () => {
    const db = memoryDatabase()
    const host = db.transact((tx) => tx.create('host', { name_label: 'box', hostname: 'box', address: '192.0.2.2' }))
    start(db, host, '192.0.2.2')
    const dom0 = String(db.replica.record('host', host)!.control_domain)
    db.transact((tx) => tx.update('VM', dom0, { name_label: 'dom0 of the lab' }))
    start(db, host, '127.0.0.1')
    const pifs = (db.replica.record('host', host)!.PIFs as string[]).map((p) => db.replica.record('PIF', p)!)
    assert.deepEqual(pifs.filter((p) => p.management), [])
    assert.equal(db.replica.record('VM', dom0)!.name_label, 'dom0 of the lab')
  })
})
