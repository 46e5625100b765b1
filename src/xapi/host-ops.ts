// host.disable/enable, host.declare_dead and host.destroy, host.allowed_operations (xapi_host.ml,
// xapi_host_helpers.ml, message_forwarding.ml) and host.get/set_sched_gran. Where a VM may be
// placed is placement.ts.
import { enumValues } from '../idl/index.js'
import { XapiError, type ErrorCode } from '../idl/errors.js'
import type { HostAllowedOperations, HostRecord } from '../idl/records.js'
import type { Tx } from '../db/database.js'
import { register, type CallContext, type Services } from './context.js'
import { withOperation } from './operations.js'
import { markHalted } from './vm-lifecycle.js'

type Host = Readonly<HostRecord>
type Op = HostAllowedOperations

const ALL_OPERATIONS = enumValues('host_allowed_operations')
const CREATING = new Set<Op>(['provision', 'vm_resume', 'vm_migrate'])
const REMOVING = new Set<Op>(['evacuate', 'reboot', 'shutdown'])

/**
 * Why each host operation would be refused now (xapi's valid_operations), in xapi's precedence:
 * the first reason found for an operation is its error. `live` is host_metrics.live.
 * Flotilla has no power-on plugin, so power_on is never possible.
 */
export function hostOperationErrors(ref: string, host: Host, live: boolean): Map<Op, XapiError | undefined> {
  const table = new Map<Op, XapiError | undefined>(ALL_OPERATIONS.map((op) => [op, undefined]))
  const set = (code: ErrorCode, params: unknown[], ops: Op[]) => {
    for (const op of ops) if (table.has(op) && table.get(op) === undefined) table.set(op, new XapiError(code, params))
  }
  const current = Object.entries(host.current_operations)
  const creating = current.find(([, op]) => CREATING.has(op))
  const removing = current.find(([, op]) => REMOVING.has(op))
  for (const op of ALL_OPERATIONS) {
    if (op === 'power_on') continue
    const other = CREATING.has(op) ? removing : REMOVING.has(op) ? creating : undefined
    if (other) set('OTHER_OPERATION_IN_PROGRESS', ['host', ref, other[1], other[0]], [op])
  }
  const running = (kind: Op) => current.find(([, op]) => op === kind)
  const rebooting = running('reboot')
  if (rebooting) set('OTHER_OPERATION_IN_PROGRESS', ['host', ref, 'reboot', rebooting[0]], ['shutdown', 'apply_updates'])
  const stopping = running('shutdown')
  if (stopping) set('OTHER_OPERATION_IN_PROGRESS', ['host', ref, 'shutdown', stopping[0]], ['reboot', 'apply_updates'])
  const updating = running('apply_updates')
  if (updating) set('OTHER_OPERATION_IN_PROGRESS', ['host', ref, 'apply_updates', updating[0]], ['reboot', 'shutdown', 'enable'])
  const provisioning = running('provision')
  if (provisioning) set('OTHER_OPERATION_IN_PROGRESS', ['host', ref, 'provision', provisioning[0]], ['provision'])
  // A host must be disabled before it reboots, shuts down or applies updates.
  if (host.enabled) set('HOST_NOT_DISABLED', [], ['reboot', 'shutdown', 'apply_updates'])
  if (live) set('HOST_IS_LIVE', [ref], ['power_on'])
  if (host.power_on_mode === '') set('HOST_POWER_ON_MODE_DISABLED', [], ['power_on'])
  set('XENAPI_MISSING_PLUGIN', ['power-on-host'], ['power_on'])
  return table
}

export function allowedHostOperations(ref: string, host: Host, live: boolean): Op[] {
  return [...hostOperationErrors(ref, host, live)].filter(([, err]) => err === undefined).map(([op]) => op)
}

function hostLive(tx: Tx, host: Host): boolean {
  return tx.exists('host_metrics', host.metrics) && tx.get('host_metrics', host.metrics).live
}

/** Keeps host.allowed_operations in step, inside the transaction that changed the host. */
export function refreshHostAllowedOperations(tx: Tx, ref: string): void {
  const host = tx.get('host', ref)
  const allowed = allowedHostOperations(ref, host, hostLive(tx, host))
  if (JSON.stringify(allowed) !== JSON.stringify(host.allowed_operations)) tx.update('host', ref, { allowed_operations: allowed })
}

/** xapi's with_host_operation (operations.ts), checked by hostOperationErrors. */
function withHostOperation<T>(ctx: CallContext, ref: string, op: Op, fn: () => Promise<T>): Promise<T> {
  const check = (tx: Tx, r: string) => {
    const host = tx.get('host', r)
    const err = hostOperationErrors(r, host, hostLive(tx, host)).get(op)
    if (err) throw err
  }
  return withOperation(ctx, { cls: 'host', check, refresh: refreshHostAllowedOperations }, ref, op, fn)
}

/** host.disable and host.enable run on the host itself (xapi forwards them there): HOST_OFFLINE [host] while it is not live. */
function assertReachable(tx: Tx, ref: string, host: Host): void {
  if (!hostLive(tx, host)) throw new XapiError('HOST_OFFLINE', [ref])
}

/**
 * host.disable: the host takes no new VMs (VM.start/resume/migrate place nothing there) until
 * host.enable or the daemon's next start (xapi re-enables a host when its toolstack starts,
 * unless the newer disable(auto_enable=false) was used, which this API version lacks). It is
 * allowed on the pool master too: xapi only refuses it where it would break an HA restart plan
 * (HA is never on here). Idempotent.
 */
register('host.disable', (ctx, [ref]) =>
  ctx.svc.db.transact((tx) => {
    const host = tx.get('host', ref)
    assertReachable(tx, ref, host)
    if (host.enabled) tx.update('host', ref, { enabled: false })
    refreshHostAllowedOperations(tx, ref)
  }),
)

/** host.enable, under the `enable` operation; refused while mandatory update guidance is pending. */
register('host.enable', (ctx, [ref]) =>
  withHostOperation(ctx, ref, 'enable', () =>
    ctx.svc.db.transact((tx) => {
      const host = tx.get('host', ref)
      assertReachable(tx, ref, host)
      if (host.enabled) return
      if (host.pending_guidances.length > 0) throw new XapiError('HOST_PENDING_MANDATORY_GUIDANCE_NOT_EMPTY', [ref])
      tx.update('host', ref, { enabled: true })
    }),
  ),
)

/**
 * host.shutdown and host.reboot (xapi's shutdown_and_reboot_common): the host must be disabled
 * (HOST_NOT_DISABLED) and run no guest (HOST_IN_USE [host, "vm", vm], as xapi's bacon test; xapi
 * would evacuate them, Flotilla leaves that choice to the caller). The host's agent then stops
 * its daemon, or starts it again, once it has answered; the machine itself stays up.
 */
function powerHost(ctx: CallContext, ref: string, op: 'shutdown' | 'reboot'): Promise<void> {
  return withHostOperation(ctx, ref, op, async () => {
    const running = ctx.svc.db.transact((tx) => {
      const host = tx.get('host', ref)
      assertReachable(tx, ref, host)
      return guestsOn(tx, host).find((vm) => ['Running', 'Paused'].includes(tx.get('VM', vm).power_state))
    })
    const vm = await running
    if (vm) throw new XapiError('HOST_IN_USE', [ref, 'vm', vm])
    await ctx.svc.agentFor(ref).call('host.power', { action: op === 'reboot' ? 'restart' : 'stop' })
  })
}

register('host.shutdown', (ctx, [ref]) => powerHost(ctx, ref, 'shutdown'))
register('host.reboot', (ctx, [ref]) => powerHost(ctx, ref, 'reboot'))

/** host.restart_agent: the host's daemon starts again; its VMs keep running and are taken up again. */
register('host.restart_agent', async (ctx, [ref]) => {
  await ctx.svc.db.transact((tx) => assertReachable(tx, ref, tx.get('host', ref)))
  await ctx.svc.agentFor(ref).call('host.power', { action: 'restart' })
})

/**
 * What host.declare_dead and host.destroy check first (precheck_destroy_declare_dead): the host
 * is not live, and is not this host (the master cannot declare itself dead). xapi asks a host
 * marked live whether it still answers; here host_metrics.live, which follows the host's lease
 * on the pool database, is the answer.
 */
function assertDead(tx: Tx, svc: Services, ref: string, host: Host): void {
  if (hostLive(tx, host) || ref === svc.hostRef) throw new XapiError('HOST_IS_LIVE', [ref])
}

/** The host's resident VMs that are not its control domains. */
const guestsOn = (tx: Tx, host: Host) => host.resident_VMs.filter((vm) => tx.exists('VM', vm) && !tx.get('VM', vm).is_control_domain)

/**
 * host.declare_dead: a host known to be gone (powered off, cut off for good) gives up its VMs:
 * each resident VM but its control domain is reset to Halted (VM.power_state_reset), so that it
 * can start elsewhere, and the host is disabled.
 */
register('host.declare_dead', (ctx, [ref]) =>
  ctx.svc.db.transact((tx) => {
    const host = tx.get('host', ref)
    assertDead(tx, ctx.svc, ref, host)
    for (const vm of guestsOn(tx, host)) markHalted(tx, vm)
    tx.update('host', ref, { enabled: false })
    refreshHostAllowedOperations(tx, ref)
  }),
)

/**
 * host.destroy (xe host-forget): a dead host with no VMs resident leaves the pool's records: the
 * host, its control domain (and that VM's consoles and metrics), its host_metrics, CPUs, PIFs
 * and PBDs. As in xapi, the SRs its PBDs served and its halted VMs stay.
 */
register('host.destroy', (ctx, [ref]) =>
  ctx.svc.db.transact((tx) => {
    const host = tx.get('host', ref)
    assertDead(tx, ctx.svc, ref, host)
    if (tx.get('pool', ctx.svc.db.first('pool')).ha_enabled) throw new XapiError('HA_IS_ENABLED', [])
    if (guestsOn(tx, host).length > 0) throw new XapiError('HOST_HAS_RESIDENT_VMS', [ref])
    const controlDomains = new Set([host.control_domain, ...host.resident_VMs].filter((vm) => tx.exists('VM', vm) && tx.get('VM', vm).is_control_domain))
    for (const vm of controlDomains) {
      const rec = tx.get('VM', vm)
      for (const console of rec.consoles) if (tx.exists('console', console)) tx.delete('console', console)
      if (tx.exists('VM_metrics', rec.metrics)) tx.delete('VM_metrics', rec.metrics)
      tx.delete('VM', vm)
    }
    for (const pif of host.PIFs) {
      if (!tx.exists('PIF', pif)) continue
      const metrics = tx.get('PIF', pif).metrics
      if (tx.exists('PIF_metrics', metrics)) tx.delete('PIF_metrics', metrics)
      tx.delete('PIF', pif)
    }
    for (const [cls, refs] of [['PBD', host.PBDs], ['host_cpu', host.host_CPUs], ['host_metrics', [host.metrics]]] as const) for (const r of refs) if (tx.exists(cls, r)) tx.delete(cls, r)
    tx.delete('host', ref)
  }),
)

/**
 * host.get_sched_gran reads Xen's sched-gran boot option, and answers `cpu` (Xen's default)
 * when the command line has none. A KVM host has no Xen command line: its vCPUs are scheduled
 * one per logical CPU, which is Xen's `cpu` granularity.
 */
register('host.get_sched_gran', (ctx, [ref]) => {
  ctx.svc.db.record('host', ref)
  return 'cpu'
})

/** host.set_sched_gran: xapi refuses it unless xapi.conf allows it, which it does not by default; Flotilla has no such option. */
register('host.set_sched_gran', (ctx, [ref]) => {
  ctx.svc.db.record('host', ref)
  throw new XapiError('OPERATION_NOT_ALLOWED', ['Disabled by xapi.conf'])
})
