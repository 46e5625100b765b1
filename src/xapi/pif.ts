// PIFs: the host's network interfaces as records, as xapi's PIF.scan and its start-of-day
// refresh make them (xapi_pif.ml). Each NIC gets a PIF, its PIF_metrics and a network of its own
// ("Pool-wide network associated with eth0"). The PIF records the NIC as it is: Flotilla does not
// enslave it into that network's bridge (a VM on the network reaches the host's other VMs, not
// the NIC's wire) until pools bridge PIFs for real.
import type { NetworkFacts, NicFacts } from '../agent/contract.js'
import type { Tx } from '../db/database.js'
import type { PIFRecord } from '../idl/records.js'
import { now, register } from './context.js'
import { plugBridge } from './network.js'

/** The NIC carries the host's management address. */
const carries = (nic: NicFacts, address: string) => [...nic.ipv4, ...nic.ipv6].some((a) => a.address === address)

/** The NICs that get PIFs: xapi's physical ones, and the one carrying the management address whatever it is. */
export function pifNics(network: NetworkFacts, address: string): NicFacts[] {
  return network.nics.filter((n) => n.physical || carries(n, address))
}

function netmask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join('.')
}

/** What a PIF says of its NIC now: link, addresses as the system configured them, management. */
export function pifFields(nic: NicFacts, network: NetworkFacts, address: string): Record<string, unknown> {
  const management = carries(nic, address)
  const v4 = nic.ipv4[0]
  const v6 = nic.ipv6
  return {
    device: nic.device,
    MAC: nic.mac,
    MTU: nic.mtu,
    VLAN: -1,
    physical: nic.physical,
    management,
    // xapi brings up its management interface; other PIFs wait for PIF.plug.
    currently_attached: management,
    ip_configuration_mode: v4 ? (v4.dynamic ? 'DHCP' : 'Static') : 'None',
    IP: v4?.address ?? '',
    netmask: v4 ? netmask(v4.prefix) : '',
    gateway: network.gateway4?.device === nic.device ? network.gateway4.address : '',
    DNS: management ? network.dns.join(',') : '',
    ipv6_configuration_mode: v6.length === 0 ? 'None' : v6.some((a) => a.dynamic) ? 'Autoconf' : 'Static',
    IPv6: v6.map((a) => `${a.address}/${a.prefix}`),
    ipv6_gateway: network.gateway6?.device === nic.device ? network.gateway6.address : '',
    primary_address_type: address.includes(':') ? 'IPv6' : 'IPv4',
    managed: true,
    properties: nic.physical ? { gro: 'on' } : {},
  }
}

export function pifMetricsFields(nic: NicFacts, stamp: string): Record<string, unknown> {
  return {
    carrier: nic.carrier,
    speed: nic.speed,
    duplex: nic.fullDuplex,
    vendor_id: nic.vendorId,
    device_id: nic.deviceId,
    // Names would come from the PCI id database, which a host need not have.
    vendor_name: '',
    device_name: '',
    pci_bus_path: nic.pciBusPath,
    last_updated: stamp,
  }
}

/**
 * Refreshes the host's PIFs from its NICs (xapi's start-of-day refresh): MAC, MTU, addresses,
 * metrics, and the management flag, which follows the management address. With `scan`, NICs
 * without a PIF get one, with a PIF_metrics and a network (PIF.scan). PIFs of NICs that are
 * gone stay until PIF.forget, as in xapi. Returns the networks it created.
 */
export function syncPifs(tx: Tx, hostRef: string, network: NetworkFacts, address: string, stamp: string, scan: boolean): string[] {
  const known = new Map<string, { ref: string; pif: Readonly<PIFRecord> }>()
  for (const ref of tx.get('host', hostRef).PIFs ?? []) known.set(tx.get('PIF', ref).device, { ref, pif: tx.get('PIF', ref) })
  const created: string[] = []
  const nics = pifNics(network, address)
  for (const nic of nics) {
    const fields = pifFields(nic, network, address)
    const metrics = pifMetricsFields(nic, stamp)
    const old = known.get(nic.device)
    if (old) {
      tx.update('PIF', old.ref, fields)
      const metricsRef = old.pif.metrics
      if (tx.exists('PIF_metrics', metricsRef)) tx.update('PIF_metrics', metricsRef, metrics)
      else tx.update('PIF', old.ref, { metrics: tx.create('PIF_metrics', metrics) })
    } else if (scan) {
      const net = tx.create('network', { name_label: `Pool-wide network associated with ${nic.device}`, name_description: '', MTU: 1500, managed: true, other_config: {} })
      tx.create('PIF', { ...fields, host: hostRef, network: net, metrics: tx.create('PIF_metrics', metrics) })
      created.push(net)
    }
  }
  const current = new Set(nics.map((n) => n.device))
  for (const [device, { ref, pif }] of known) if (!current.has(device) && pif.management) tx.update('PIF', ref, { management: false })
  return created
}

register('PIF.scan', async (ctx, [host]) => {
  const address = ctx.svc.db.record('host', host).address
  const { network } = await ctx.svc.agentFor(host).call('host.facts')
  const created = await ctx.svc.db.transact((tx) => syncPifs(tx, host, network, address, now(), true))
  for (const net of created) await plugBridge(ctx.svc, net, host)
})
