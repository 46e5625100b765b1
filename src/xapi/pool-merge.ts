// What a joining host brings into the pool's database (xapi's join pushes the joiner's VMs and
// its non-pool objects to the master): its host and what hangs off it, its local SRs with their
// disks, its halted VMs and own templates. Not its pool, accounts, sessions, tasks or messages
// (those are the pool's), nor its default templates and SM records (the pool has them). Its
// networks are matched to the pool's (a NIC's network by device, as xapi matches eth0 to xenbr0;
// the host-internal one to the pool's), and every reference to a matched network is rewritten.
import { getClass, type ClassDef } from '../idl/index.js'
import { objectKey } from '../db/replica.js'
import { toJson } from '../lib/int64.js'
import type { PoolView } from './context.js'

type Stored = Record<string, unknown>
/** A database's objects: stored fields by class and ref. */
export type Objects = PoolView

/** The classes a joiner brings along; everything else it has stays behind. */
export const BROUGHT_CLASSES = new Set([
  'host', 'host_metrics', 'host_cpu', 'host_crashdump', 'VM', 'VM_metrics', 'VM_guest_metrics', 'VBD', 'VBD_metrics', 'VIF', 'VIF_metrics',
  'VDI', 'SR', 'PBD', 'console', 'PIF', 'PIF_metrics', 'network', 'VLAN', 'VTPM', 'crashdump', 'VM_appliance', 'Certificate', 'SM',
])

const internal = (n: Stored) => (n.other_config as Record<string, string> | undefined)?.is_host_internal_management_network === 'true'

/** The pool network each of the joiner's networks becomes, where the pool has one. */
export function matchNetworks(joiner: Objects, pool: Objects, joinerHost: string): Map<string, string> {
  const match = new Map<string, string>()
  const poolNetworks = pool.get('network') ?? new Map<string, Stored>()
  const poolByDevice = new Map<string, string>()
  for (const pif of (pool.get('PIF') ?? new Map<string, Stored>()).values()) if (!poolByDevice.has(String(pif.device))) poolByDevice.set(String(pif.device), String(pif.network))
  for (const [ref, net] of joiner.get('network') ?? []) {
    if (internal(net)) {
      const poolInternal = [...poolNetworks].find(([, n]) => internal(n))?.[0]
      if (poolInternal) match.set(ref, poolInternal)
      continue
    }
    const pif = [...(joiner.get('PIF') ?? new Map<string, Stored>()).values()].find((p) => p.network === ref && p.host === joinerHost)
    const poolNet = pif && poolByDevice.get(String(pif.device))
    if (poolNet && poolNetworks.has(poolNet)) match.set(ref, poolNet)
  }
  return match
}

function remapRefs(def: ClassDef, stored: Stored, map: Map<string, string>): Stored {
  const out: Stored = { ...stored }
  for (const f of def.storedFields) {
    if (f.type.kind === 'ref' && f.type.cls === 'network' && typeof out[f.name] === 'string') out[f.name] = map.get(out[f.name] as string) ?? out[f.name]
  }
  return out
}

/** Whether an object hangs off a VM left behind (a default template's VBDs, VIFs, consoles; not a VM cloned from it). */
const refersToLeftVm = (def: ClassDef, stored: Stored, left: Set<string>) =>
  def.name !== 'VM' &&
  def.storedFields.some((f) => f.type.kind === 'ref' && f.type.cls === 'VM' && left.has(stored[f.name] as string))

/** The keys and JSON values the joiner writes into the pool's database. */
export function recordsForPool(joiner: Objects, pool: Objects, joinerHost: string): Map<string, string> {
  const networks = matchNetworks(joiner, pool, joinerHost)
  const poolSmTypes = new Set([...(pool.get('SM') ?? new Map<string, Stored>()).values()].map((sm) => sm.type))
  const defaultTemplates = [...(joiner.get('VM') ?? new Map<string, Stored>())].filter(([, vm]) => vm.is_a_template === true && vm.is_default_template === true)
  const left = new Set(defaultTemplates.flatMap(([ref, vm]) => [ref, String(vm.metrics), String(vm.guest_metrics)]))
  const out = new Map<string, string>()
  for (const [cls, table] of joiner) {
    if (!BROUGHT_CLASSES.has(cls)) continue
    const def = getClass(cls)
    for (const [ref, stored] of table) {
      if (cls === 'network' && networks.has(ref)) continue
      if (cls === 'SM' && poolSmTypes.has(stored.type)) continue
      if (left.has(ref) || refersToLeftVm(def, stored, left)) continue
      out.set(objectKey(cls, ref), toJson(remapRefs(def, stored, networks)))
    }
  }
  return out
}
