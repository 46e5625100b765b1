// network.create/destroy: records plus the bridge that carries the network on every host. A
// network with PIFs spans hosts: each host's bridge holds that host's PIF's NIC (xapi's xenbr0
// with eth0), so VIFs on different hosts share layer 2.
import { getClass } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import { register, type CallContext, type Services } from './context.js'
import { createObject } from './generic.js'
import { liveHosts } from './forwarding.js'

/**
 * The network's bridge on `host`, created if missing (a VM's start and NIC plug also ensure
 * theirs, as xapi's attach_for_vm does). Bridge names are per host; network.bridge names the
 * master's.
 */
export async function plugBridge(svc: Services, ref: string, host: string): Promise<void> {
  const network = svc.db.record('network', ref)
  const bridge = await svc.agentFor(host).call('net.ensure', { network: network.uuid })
  if (network.bridge !== bridge && (network.bridge === '' || host === svc.pool?.masterRef())) await svc.db.transact((tx) => tx.update('network', ref, { bridge }))
}

/**
 * The PIF's NIC (or, for a VLAN PIF, its VLAN device on the NIC) into its network's bridge on
 * the PIF's host; false where that host keeps a NIC with addresses out of bridges.
 */
export async function attachPif(svc: Services, pifRef: string): Promise<boolean> {
  const pif = svc.db.record('PIF', pifRef)
  const network = svc.db.record('network', pif.network).uuid
  const agent = svc.agentFor(pif.host)
  if (pif.VLAN >= 0) return agent.call('net.vlan-create', { device: pif.device, tag: Number(pif.VLAN), network }).then(() => true)
  return agent.call('net.attach', { network, device: pif.device })
}

/**
 * What xapi's attach_for_vm / attach_for_vif do before a VM's NICs go up on `host`: the PIFs
 * there of the networks given, managed but unplugged, are plugged (PIF.plug's work), so a VM
 * started on a host whose PIF was unplugged reaches the network's other hosts.
 */
export async function attachNetworksOn(svc: Services, networks: string[], host: string): Promise<void> {
  for (const network of new Set(networks)) {
    if (!svc.db.tryRecord('network', network)) continue
    for (const pif of svc.db.record('network', network).PIFs) {
      const record = svc.db.record('PIF', pif)
      if (record.host === host && record.managed && !record.currently_attached) await plugPif(svc, pif)
    }
  }
}

/** PIF.plug's work: the PIF into its bridge, and marked attached. */
export async function plugPif(svc: Services, pifRef: string): Promise<void> {
  await attachPif(svc, pifRef)
  if (!svc.db.record('PIF', pifRef).currently_attached) await svc.db.transact((tx) => tx.update('PIF', pifRef, { currently_attached: true }))
}

/** The NIC of a PIF out of its network's bridge (a VLAN PIF's device goes). */
export async function detachPif(svc: Services, pifRef: string): Promise<void> {
  const pif = svc.db.record('PIF', pifRef)
  const agent = svc.agentFor(pif.host)
  if (pif.VLAN >= 0) return agent.call('net.vlan-remove', { device: pif.device, tag: Number(pif.VLAN) })
  await agent.call('net.detach', { network: svc.db.record('network', pif.network).uuid, device: pif.device })
}

/** Runs `work` for every live host but this one (which must succeed), logging those that fail: a host down makes its bridges at its next start. */
async function onOtherLiveHosts(svc: Services, what: string, work: (host: string) => Promise<void>): Promise<void> {
  const others = liveHosts(svc).filter((h) => h !== svc.hostRef)
  const results = await Promise.allSettled(others.map(work))
  results.forEach((r, i) => r.status === 'rejected' && console.error(`${what} on host ${others[i]}: ${(r.reason as Error).message}`))
}

async function createNetwork(ctx: CallContext, args: Record<string, unknown>): Promise<string> {
  const ref = await createObject(ctx, getClass('network'), { MTU: 1500, ...args, managed: true })
  await plugBridge(ctx.svc, ref, ctx.svc.hostRef)
  await onOtherLiveHosts(ctx.svc, 'making the bridge of a new network', (host) => plugBridge(ctx.svc, ref, host))
  return ref
}

register('network.create', (ctx, [args]) => createNetwork(ctx, args))

register('network.destroy', async (ctx, [ref]) => {
  const network = ctx.svc.db.record('network', ref)
  const attached = network.VIFs.filter((v) => ctx.svc.db.record('VIF', v).currently_attached)
  if (attached.length > 0) throw new XapiError('NETWORK_CONTAINS_VIF', attached)
  if (network.PIFs.length > 0) throw new XapiError('NETWORK_CONTAINS_PIF', network.PIFs)
  if (network.other_config.is_host_internal_management_network === 'true') throw new XapiError('CANNOT_DESTROY_SYSTEM_NETWORK', [ref])
  await ctx.svc.db.transact((tx) => {
    for (const vif of tx.get('network', ref).VIFs) tx.delete('VIF', vif)
    tx.delete('network', ref)
  })
  // Its bridge goes on every host that is up; one that cannot be reached keeps an unused bridge.
  const removals = liveHosts(ctx.svc).map((host) => ctx.svc.agentFor(host).call('net.remove', { network: network.uuid }))
  for (const r of await Promise.allSettled(removals)) if (r.status === 'rejected') console.error(`removing the bridge of network ${network.uuid}: ${(r.reason as Error).message}`)
})

/** The first start's host-internal network. */
export async function ensureInternalNetwork(svc: Services): Promise<void> {
  const existing = [...svc.db.rows('network')].find((r) => r.stored.other_config.is_host_internal_management_network === 'true')
  if (existing) return plugBridge(svc, existing.ref, svc.hostRef)
  const ref = await svc.db.transact((tx) =>
    tx.create('network', {
      name_label: 'Host internal management network',
      name_description: 'A network private to this host: VMs on it reach each other',
      MTU: 1500,
      managed: true,
      other_config: { is_host_internal_management_network: 'true' },
    }),
  )
  await plugBridge(svc, ref, svc.hostRef)
}

/** Every network's bridge exists on this host, with this host's plugged PIFs in theirs (after a reboot of the host, or a join). */
export async function plugAllBridges(svc: Services): Promise<void> {
  for (const row of [...svc.db.rows('network')]) await plugBridge(svc, row.ref, svc.hostRef)
  for (const pif of svc.db.record('host', svc.hostRef).PIFs) {
    if (!svc.db.record('PIF', pif).currently_attached) continue
    // The daemon starts anyway: a NIC left out of its bridge costs its VMs the wire, not the host.
    const bridged = await attachPif(svc, pif).catch((e: Error) => (console.error(`PIF ${svc.db.record('PIF', pif).device}: ${e.message}`), true))
    if (!bridged) console.log(`PIF ${svc.db.record('PIF', pif).device} carries the host's addresses and stays out of its network's bridge (FLOTILLA_BRIDGE_MANAGEMENT=1 bridges it)`)
  }
}
