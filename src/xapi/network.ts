// network.create/destroy: records plus the host bridge that carries the network.
import { getClass } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import { register, type CallContext, type Services } from './context.js'
import { createObject } from './generic.js'
import { liveHosts } from './forwarding.js'

/**
 * The network's bridge on `host`, created if missing. Other hosts make theirs when a VM there
 * needs it (the agent's vm.start and NIC plug ensure their bridges), as xapi's attach_for_vm does.
 */
export async function plugBridge(svc: Services, ref: string, host: string): Promise<void> {
  const uuid = svc.db.record('network', ref).uuid
  const bridge = await svc.agentFor(host).call('net.ensure', { network: uuid })
  await svc.db.transact((tx) => tx.update('network', ref, { bridge }))
}

async function createNetwork(ctx: CallContext, args: Record<string, unknown>): Promise<string> {
  const ref = await createObject(ctx, getClass('network'), { MTU: 1500, ...args, managed: true })
  await plugBridge(ctx.svc, ref, ctx.svc.hostRef)
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

/** Every network's bridge exists on this host (after a reboot of the host). */
export async function plugAllBridges(svc: Services): Promise<void> {
  for (const row of [...svc.db.rows('network')]) await plugBridge(svc, row.ref, svc.hostRef)
}
