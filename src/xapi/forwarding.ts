// Which host a call's work runs on (xapi's message_forwarding.ml, reference/pools-migration-ha.md
// §1.2): a VM's work on the host it runs on, an SR's on a host that has it plugged, a PIF's on
// its host. Each choice is named here, so that call sites address a host and never imply one.
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'
import type { Services } from './context.js'

/** Where a VM's work runs (forward_vm_op): its host while Running or Paused, else the master. */
export function vmHost(svc: Services, vm: Readonly<VMRecord>): string {
  const resident = (vm.power_state === 'Running' || vm.power_state === 'Paused') && vm.resident_on !== NULL_REF
  return resident ? vm.resident_on : svc.hostRef
}

/** The hosts with a currently attached PBD for the SR, the master's first (xapi's choose_pbds_for_sr). */
export function hostsSeeingSr(svc: Services, srRef: string): string[] {
  const hosts = svc.db
    .record('SR', srRef)
    .PBDs.map((p) => svc.db.record('PBD', p))
    .filter((pbd) => pbd.currently_attached)
    .map((pbd) => pbd.host)
  return [...hosts.filter((h) => h === svc.hostRef), ...hosts.filter((h) => h !== svc.hostRef)]
}

/**
 * Where an SR's work runs (forward_sr_op): a host with the SR plugged, the master's for a shared
 * SR. An SR plugged nowhere is SR_NOT_ATTACHED when it has PBDs (as Flotilla answered before
 * pools), SR_HAS_NO_PBDS when it has none.
 */
export function srHost(svc: Services, srRef: string): string {
  const host = hostsSeeingSr(svc, srRef)[0]
  if (host !== undefined) return host
  if (svc.db.record('SR', srRef).PBDs.length > 0) throw new XapiError('SR_NOT_ATTACHED', [srRef])
  throw new XapiError('SR_HAS_NO_PBDS', [srRef])
}

/**
 * A host that sees every one of the SRs, the master if it does (forward_sr_multiple_op, the
 * forward_to_access_srs of VM.clone/snapshot/copy); NO_HOSTS_AVAILABLE if none sees them all.
 */
export function hostSeeingSrs(svc: Services, srRefs: Iterable<string>): string {
  const srs = [...new Set(srRefs)]
  if (srs.length === 0) return svc.hostRef
  for (const sr of srs) srHost(svc, sr) // an SR plugged nowhere is that SR's error
  const seeing = srs.map((sr) => hostsSeeingSr(svc, sr))
  const common = seeing[0]!.find((h) => seeing.every((hosts) => hosts.includes(h)))
  if (common === undefined) throw new XapiError('NO_HOSTS_AVAILABLE', [])
  return common
}

/** The hosts whose host_metrics say they are live. */
export function liveHosts(svc: Services): string[] {
  return [...svc.db.rows('host')].filter((r) => svc.db.tryRecord('host_metrics', r.stored.metrics)?.live === true).map((r) => r.ref)
}

/** A host's HTTPS base URL as clients reach it: this host's public URL, with the host's address. */
export function hostUrl(svc: Services, host: string): string {
  if (host === svc.hostRef) return svc.publicUrl
  const address = svc.db.record('host', host).address
  const url = new URL(svc.publicUrl)
  url.hostname = address.includes(':') ? `[${address}]` : address
  return url.origin
}
