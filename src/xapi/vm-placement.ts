// The pool's state as placement (placement.ts) reads it, the reservation VM.start makes on the
// host it goes to (scheduled_to_be_resident_on), and the messages that ask the same questions:
// VM.assert_can_boot_here, VM.get_possible_hosts, host.compute_free_memory. The state is read in
// a transaction, so that two starts reserving on one host conflict and the second one re-reads.
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'
import type { Tx } from '../db/database.js'
import { register, type Services } from './context.js'
import { chooseHost, freeMemory, hostRefusal, possibleHosts, type BootNeeds, type HostState } from './placement.js'
import { bootSettingsError } from './vm-constraints.js'

/** The VMs that take memory on each host: resident there or scheduled to be, but `ignoring` (the VM being placed). */
function guestsByHost(tx: Tx, svc: Services, ignoring?: string): Map<string, Readonly<VMRecord>[]> {
  const byHost = new Map<string, Readonly<VMRecord>[]>()
  for (const ref of svc.db.refs('VM')) {
    if (ref === ignoring || !tx.exists('VM', ref)) continue
    const vm = tx.get('VM', ref)
    for (const host of new Set([vm.resident_on, vm.scheduled_to_be_resident_on])) if (host !== NULL_REF) byHost.set(host, [...(byHost.get(host) ?? []), vm])
  }
  return byHost
}

function stateOf(tx: Tx, ref: string, guests: readonly Readonly<VMRecord>[]): HostState {
  const host = tx.get('host', ref)
  const metrics = tx.exists('host_metrics', host.metrics) ? tx.get('host_metrics', host.metrics) : undefined
  const srs = new Set(host.PBDs.filter((p) => tx.exists('PBD', p) && tx.get('PBD', p).currently_attached).map((p) => tx.get('PBD', p).SR))
  return { ref, live: metrics?.live === true, enabled: host.enabled, freeMemory: freeMemory(Number(metrics?.memory_total ?? 0), guests), cpus: Number(host.cpu_info.cpu_count), srs }
}

/** Every host as placement sees it, for placing `ignoring` (its own reservation does not count against it). */
export function hostStates(tx: Tx, svc: Services, ignoring?: string): HostState[] {
  const guests = guestsByHost(tx, svc, ignoring)
  return svc.db.refs('host').filter((h) => tx.exists('host', h)).map((h) => stateOf(tx, h, guests.get(h) ?? []))
}

/**
 * What booting the VM needs: the SRs of its non-empty disks and CDs, and of its suspend image
 * while Suspended; `moves` (VDI → SR) names the SRs of disks on their way to another (storage motion).
 */
export function bootNeeds(tx: Tx, ref: string, moves: ReadonlyMap<string, string> = new Map()): BootNeeds {
  const vm = tx.get('VM', ref)
  const vdis = vm.VBDs.map((vbd) => tx.get('VBD', vbd)).filter((vbd) => !vbd.empty && vbd.VDI !== NULL_REF).map((vbd) => vbd.VDI)
  if (vm.power_state === 'Suspended' && vm.suspend_VDI !== NULL_REF) vdis.push(vm.suspend_VDI)
  return { ref, vm, srs: [...new Set(vdis.filter((v) => tx.exists('VDI', v)).map((v) => moves.get(v) ?? tx.get('VDI', v).SR))] }
}

/**
 * How a start finds its host: `choose` (VM.start, VM.resume: placement's choice, NO_HOSTS_AVAILABLE
 * when there is none), `{ on }` (start_on, resume_on: that host, whose refusal is the error),
 * `in-place` (a VM restarting after its guest rebooted it stays on the host it ran on, as a
 * Xen domain's reboot does, also on a disabled host: only memory and CPUs are checked).
 */
export type Placement = 'choose' | 'in-place' | { on: string }

/**
 * xapi's assert_can_boot_here on `host`: the VM's settings, then the host (hostRefusal). In
 * place, the host is the one the VM ran on a moment ago, its liveness and enabled state moot.
 */
function assertCanBoot(needs: BootNeeds, host: HostState, inPlace = false): void {
  const refused = bootSettingsError(needs.vm) ?? hostRefusal(needs, inPlace ? { ...host, live: true, enabled: true } : host)
  if (refused) throw refused
}

/**
 * Chooses the host a VM boots on, checks it can, and reserves it there (scheduled_to_be_resident_on)
 * in one transaction: a start elsewhere reserving on the same host makes this one read again.
 * `here` is the host an in-place restart happens on; `moves` as in bootNeeds.
 */
export function reserveHost(svc: Services, ref: string, placement: Placement, here: string, moves?: ReadonlyMap<string, string>): Promise<string> {
  return svc.db.transact((tx) => {
    const needs = bootNeeds(tx, ref, moves)
    const states = hostStates(tx, svc, ref)
    const host = placement === 'choose' ? chooseHost(needs, states) : placement === 'in-place' ? here : placement.on
    if (host === undefined) throw new XapiError('NO_HOSTS_AVAILABLE', [])
    const state = states.find((s) => s.ref === host)
    if (!state) throw new XapiError('HANDLE_INVALID', ['host', host])
    assertCanBoot(needs, state, placement === 'in-place')
    tx.update('VM', ref, { scheduled_to_be_resident_on: host })
    return host
  })
}

/** Drops a reservation a start that failed had made. */
export const releaseHost = (svc: Services, ref: string) => svc.db.transact((tx) => tx.exists('VM', ref) && tx.update('VM', ref, { scheduled_to_be_resident_on: NULL_REF }))

/** assert_can_boot_here on `host` for a VM whose disks `moves` go to other SRs on the way (storage motion). */
export function assertCanBootWith(svc: Services, ref: string, host: string, moves: ReadonlyMap<string, string>): Promise<void> {
  return svc.db.transact((tx) => {
    const state = hostStates(tx, svc, ref).find((s) => s.ref === host)
    if (!state) throw new XapiError('HANDLE_INVALID', ['host', host])
    assertCanBoot(bootNeeds(tx, ref, moves), state)
  })
}

register('VM.assert_can_boot_here', (ctx, [ref, host]) => assertCanBootWith(ctx.svc, ref, host, new Map()))

/** As xapi: a VM with a reservation can go only where it is reserved. */
register('VM.get_possible_hosts', (ctx, [ref]) =>
  ctx.svc.db.transact((tx) => {
    const vm = tx.get('VM', ref)
    if (vm.scheduled_to_be_resident_on !== NULL_REF) return [vm.scheduled_to_be_resident_on]
    const needs = bootNeeds(tx, ref)
    return bootSettingsError(vm) ? [] : possibleHosts(needs, hostStates(tx, ctx.svc, ref))
  }),
)

register('host.compute_free_memory', (ctx, [host]) =>
  ctx.svc.db.transact((tx) => {
    const state = hostStates(tx, ctx.svc).find((s) => s.ref === host)
    if (!state) throw new XapiError('HANDLE_INVALID', ['host', host])
    return state.freeMemory
  }),
)
