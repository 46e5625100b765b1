// PIFs: the host's network interfaces as records, as xapi's PIF.scan and its start-of-day
// refresh make them (xapi_pif.ml). Each NIC gets a PIF, its PIF_metrics and a network of its own
// ("Pool-wide network associated with eth0"; a joining host's is matched to the pool's by
// device). A plugged PIF's NIC is in its network's bridge on its host (PIF.plug, and at every
// start), so the network reaches the NIC's wire; the management NIC only where the host allows
// its address to move onto the bridge (FLOTILLA_BRIDGE_MANAGEMENT=1), else it stays as it is.
import type { NetworkFacts, NicFacts } from '../agent/contract.js'
import type { Tx } from '../db/database.js'
import type { PIFRecord } from '../idl/records.js'
import { XapiError } from '../idl/errors.js'
import { now, register } from './context.js'
import { detachPif, plugBridge, plugPif } from './network.js'

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
  // A VLAN PIF names its NIC's device too: the NIC's own PIF is the one without a tag.
  for (const ref of tx.get('host', hostRef).PIFs ?? []) if (tx.get('PIF', ref).VLAN < 0) known.set(tx.get('PIF', ref).device, { ref, pif: tx.get('PIF', ref) })
  const created: string[] = []
  const nics = pifNics(network, address)
  for (const nic of nics) {
    const fields = pifFields(nic, network, address)
    const metrics = pifMetricsFields(nic, stamp)
    const old = known.get(nic.device)
    if (old) {
      // A PIF plugged before stays plugged (its NIC goes back into its bridge at start).
      tx.update('PIF', old.ref, { ...fields, currently_attached: Boolean(fields.currently_attached) || old.pif.currently_attached })
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

register('PIF.plug', async (ctx, [ref]) => {
  const pif = ctx.svc.db.record('PIF', ref)
  if (!pif.managed) throw new XapiError('PIF_UNMANAGED', [ref])
  await plugPif(ctx.svc, ref)
})

/** Why PIF.unplug refuses, in xapi's order (xapi_pif.ml unplug), or undefined. */
export function unplugError(ref: string, pif: Readonly<PIFRecord>, pool: { ha_enabled: boolean; redo_log_enabled: boolean }): XapiError | undefined {
  if (!pif.managed) return new XapiError('PIF_UNMANAGED', [ref])
  if (pif.currently_attached && pool.ha_enabled) return new XapiError('HA_IS_ENABLED', [])
  if (pif.currently_attached && pool.redo_log_enabled) return new XapiError('REDO_LOG_IS_ENABLED', [])
  if (pif.management) return new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [ref])
  if (pif.disallow_unplug) return new XapiError('PIF_DOES_NOT_ALLOW_UNPLUG', [ref])
  return undefined
}

register('PIF.unplug', async (ctx, [ref]) => {
  const err = unplugError(ref, ctx.svc.db.record('PIF', ref), ctx.svc.db.record('pool', ctx.svc.db.first('pool')))
  if (err) throw err
  await detachPif(ctx.svc, ref)
  await ctx.svc.db.transact((tx) => tx.update('PIF', ref, { currently_attached: false }))
})
