// VLANs (xapi_vlan.ml, xapi_pif.ml create_VLAN, xapi_pool.ml create_VLAN*): a VLAN network on a
// host is an 802.1Q device on a PIF's NIC, in the network's bridge, recorded as an untagged PIF
// (device = the NIC's, VLAN = the tag) and a VLAN object. The host makes the device first and the
// records follow, so a host that cannot (a kernel without 802.1Q answers OPERATION_NOT_ALLOWED)
// is left as it was; the pool-wide calls undo the hosts done when one fails.
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { PIFRecord } from '../idl/records.js'
import { register, type Services } from './context.js'
import { liveHosts } from './forwarding.js'

/** What VLAN.create refuses, in xapi's order, or undefined; `vlans` are the tagged PIF's (tag of each), `onHost` the host's PIFs already on the network. */
export function vlanCreateError(a: {
  taggedRef: string
  tagged: Readonly<PIFRecord>
  tag: number
  networkRef: string
  networkManaged: boolean
  onHost: string[]
  vlanTags: number[]
}): XapiError | undefined {
  if (!a.networkManaged) return new XapiError('NETWORK_UNMANAGED', [a.networkRef])
  if (a.onHost.length > 0) return new XapiError('NETWORK_ALREADY_CONNECTED', [a.tagged.host, a.onHost[0]])
  if (!a.tagged.managed) return new XapiError('PIF_UNMANAGED', [a.taggedRef])
  if (a.tagged.bond_slave_of !== NULL_REF) return new XapiError('CANNOT_ADD_VLAN_TO_BOND_SLAVE', [a.taggedRef])
  if (a.tagged.VLAN_master_of !== NULL_REF || a.tagged.VLAN >= 0) return new XapiError('PIF_IS_VLAN', [a.taggedRef])
  if (a.tagged.tunnel_access_PIF_of.length > 0) return new XapiError('IS_TUNNEL_ACCESS_PIF', [a.taggedRef])
  if (!Number.isInteger(a.tag) || a.tag < 0 || a.tag > 4094) return new XapiError('VLAN_TAG_INVALID', [a.tag])
  if (a.vlanTags.includes(a.tag)) return new XapiError('PIF_VLAN_EXISTS', [a.tagged.device])
  return undefined
}

/** VLAN.create: the device on the tagged PIF's host, then the untagged PIF and the VLAN (plugged, as xapi plugs it). */
export async function createVlan(svc: Services, taggedRef: string, tag: number, networkRef: string): Promise<string> {
  const tagged = svc.db.record('PIF', taggedRef)
  const network = svc.db.record('network', networkRef)
  const err = vlanCreateError({
    taggedRef,
    tagged,
    tag,
    networkRef,
    networkManaged: network.managed,
    onHost: network.PIFs.filter((p) => svc.db.record('PIF', p).host === tagged.host),
    vlanTags: tagged.VLAN_slave_of.map((v) => Number(svc.db.record('VLAN', v).tag)),
  })
  if (err) throw err
  const agent = svc.agentFor(tagged.host)
  await agent.call('net.vlan-create', { device: tagged.device, tag, network: network.uuid })
  try {
    return await svc.db.transact((tx) => {
      const untagged = tx.create('PIF', {
        device: tagged.device,
        network: networkRef,
        host: tagged.host,
        // xapi's dummy VLAN MAC
        MAC: 'fe:ff:ff:ff:ff:ff',
        MTU: tagged.MTU,
        VLAN: tag,
        metrics: tagged.metrics,
        physical: false,
        currently_attached: true,
        ip_configuration_mode: 'None',
        ipv6_configuration_mode: 'None',
        primary_address_type: tagged.primary_address_type,
        managed: true,
      })
      const vlan = tx.create('VLAN', { tagged_PIF: taggedRef, untagged_PIF: untagged, tag, other_config: {} })
      tx.update('PIF', untagged, { VLAN_master_of: vlan })
      return vlan
    })
  } catch (e) {
    await agent.call('net.vlan-remove', { device: tagged.device, tag }).catch(() => undefined)
    throw e
  }
}

/** VLAN.destroy: its device goes from its host, then its untagged PIF and itself (xapi's checks first). */
export async function destroyVlan(svc: Services, ref: string): Promise<void> {
  const vlan = svc.db.record('VLAN', ref)
  const untagged = svc.db.tryRecord('PIF', vlan.untagged_PIF)
  if (!untagged) return void (await svc.db.transact((tx) => tx.delete('VLAN', ref)))
  if (untagged.bond_slave_of !== NULL_REF) throw new XapiError('PIF_ALREADY_BONDED', [vlan.untagged_PIF])
  const pool = svc.db.record('pool', svc.db.first('pool'))
  if (untagged.currently_attached && untagged.management) throw new XapiError('PIF_IS_MANAGEMENT_INTERFACE', [vlan.untagged_PIF])
  if (untagged.currently_attached && pool.ha_enabled) throw new XapiError('HA_IS_ENABLED', [])
  if (untagged.currently_attached && pool.redo_log_enabled) throw new XapiError('REDO_LOG_IS_ENABLED', [])
  if (untagged.VLAN < 0) throw new XapiError('PIF_IS_PHYSICAL', [])
  await svc.agentFor(untagged.host).call('net.vlan-remove', { device: untagged.device, tag: Number(untagged.VLAN) })
  await svc.db.transact((tx) => {
    tx.delete('VLAN', ref)
    tx.delete('PIF', vlan.untagged_PIF)
  })
}

register('VLAN.create', (ctx, [tagged, tag, network]) => createVlan(ctx.svc, tagged, Number(tag), network))
register('VLAN.destroy', (ctx, [ref]) => destroyVlan(ctx.svc, ref))

/** The host's PIF of `device` without a tag (PIF.create_VLAN's tagged PIF). */
function basePif(svc: Services, host: string, device: string): string {
  const base = svc.db.record('host', host).PIFs.find((p) => {
    const pif = svc.db.record('PIF', p)
    return pif.device === device && pif.VLAN < 0
  })
  if (base === undefined) throw new XapiError('INVALID_VALUE', ['device', device])
  return base
}

register('PIF.create_VLAN', async (ctx, [device, network, host, tag]) => {
  const vlan = await createVlan(ctx.svc, basePif(ctx.svc, host, device), Number(tag), network)
  return ctx.svc.db.record('VLAN', vlan).untagged_PIF
})

/** VLAN.create on each PIF; on a failure the VLANs made so far go and the failure is raised. Answers the untagged PIFs. */
async function createEverywhere(svc: Services, tagged: string[], tag: number, network: string): Promise<string[]> {
  const made: string[] = []
  try {
    for (const pif of tagged) made.push(await createVlan(svc, pif, tag, network))
  } catch (e) {
    for (const vlan of made.reverse()) await destroyVlan(svc, vlan).catch((u: Error) => console.error(`undoing VLAN ${vlan}: ${u.message}`))
    throw e
  }
  return made.map((v) => svc.db.record('VLAN', v).untagged_PIF)
}

// pool.create_VLAN_from_PIF: on every live host with a PIF on the given PIF's network.
register('pool.create_VLAN_from_PIF', (ctx, [pif, network, tag]) => {
  const live = new Set(liveHosts(ctx.svc))
  const onNetwork = ctx.svc.db.record('network', ctx.svc.db.record('PIF', pif).network).PIFs.filter((p) => live.has(ctx.svc.db.record('PIF', p).host))
  return createEverywhere(ctx.svc, onNetwork, Number(tag), network)
})

// pool.create_VLAN: on every host, on its PIF of that device.
register('pool.create_VLAN', (ctx, [device, network, tag]) =>
  createEverywhere(ctx.svc, [...ctx.svc.db.rows('host')].map((h) => basePif(ctx.svc, h.ref, device)), Number(tag), network),
)
