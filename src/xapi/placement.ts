// Where a VM may boot and where VM.start puts it (xapi_vm_helpers.ml: assert_can_boot_here,
// choose_host_for_vm; memory_check.ml: host_compute_free_memory), as pure functions of the
// pool's state handed in: no database, no I/O, so that the rules are table-tested alone.
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'
import { pcpusError } from './vm-constraints.js'

/** QEMU's own overhead per VM beyond guest RAM (reference/qemu-lab.md §2: about 50 MiB). */
export const VM_OVERHEAD = 64 * 2 ** 20

type Vm = Pick<VMRecord, 'memory_static_max' | 'is_control_domain'>

/**
 * What a VM takes of its host's RAM while there: its static maximum (guests are not ballooned),
 * plus QEMU's overhead. The control domain's is what the host keeps for itself (daemon, etcd,
 * page cache), with no QEMU.
 */
export function vmFootprint(vm: Vm): number {
  return Number(vm.memory_static_max) + (vm.is_control_domain ? 0 : VM_OVERHEAD)
}

/** host.compute_free_memory: the host's RAM less the footprints of the VMs resident or scheduled there. */
export function freeMemory(memoryTotal: number, guests: readonly Vm[]): number {
  return Math.max(0, guests.reduce((free, vm) => free - vmFootprint(vm), memoryTotal))
}

/** A host as placement sees it. */
export interface HostState {
  ref: string
  /** host_metrics.live. */
  live: boolean
  enabled: boolean
  /** Free memory, not counting the VM being placed (freeMemory). */
  freeMemory: number
  /** Logical CPUs (host.cpu_info.cpu_count). */
  cpus: number
  /** The SRs with a currently attached PBD on the host. */
  srs: ReadonlySet<string>
}

/** A VM to boot, as placement sees it. */
export interface BootNeeds {
  ref: string
  vm: Readonly<VMRecord>
  /** The SRs of its non-empty disks and CDs, and of its suspend image when Suspended (assert_can_see_SRs). */
  srs: readonly string[]
}

export interface HostChecks {
  /** Whether the host's free memory and CPUs count (xapi's do_memory_check, for memory). */
  capacity?: boolean
}

/**
 * Why the VM cannot boot on the host, in assert_can_boot_here's order: live (HOST_NOT_LIVE), enabled
 * (HOST_DISABLED; a control domain starts on a disabled host too), every SR plugged there
 * (VM_REQUIRES_SR), free memory (HOST_NOT_ENOUGH_FREE_MEMORY [needed, available]), CPUs. The VM's
 * own settings are checked before this, by the caller. Undefined when it can.
 */
export function hostRefusal(needs: BootNeeds, host: HostState, checks: HostChecks = {}): XapiError | undefined {
  if (!host.live) return new XapiError('HOST_NOT_LIVE', [])
  if (!needs.vm.is_control_domain && !host.enabled) return new XapiError('HOST_DISABLED', [host.ref])
  const missing = needs.srs.find((sr) => !host.srs.has(sr))
  if (missing !== undefined) return new XapiError('VM_REQUIRES_SR', [needs.ref, missing])
  if (checks.capacity === false) return undefined
  const needed = vmFootprint(needs.vm)
  if (needed > host.freeMemory) return new XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', [needed, host.freeMemory])
  return pcpusError(needs.vm, host.cpus)
}

/** VM.get_possible_hosts: the hosts the VM can boot on now. */
export function possibleHosts(needs: BootNeeds, hosts: readonly HostState[]): string[] {
  return hosts.filter((h) => hostRefusal(needs, h) === undefined).map((h) => h.ref)
}

/**
 * Where VM.start without a host puts the VM (choose_host_for_vm): its affinity host if that can
 * take it, else the host with the most free memory (ties: the first given), so that load spreads
 * and a host that fails leaves the least to restart. xapi instead picks at random with a bias
 * against the master; a fixed rule is what a user can predict. When no host has the room, the
 * choice is made again without the memory and CPU checks (xapi drops the memory check only): the
 * start then fails on that host with HOST_NOT_ENOUGH_FREE_MEMORY or HOST_NOT_ENOUGH_PCPUS, which
 * say more than NO_HOSTS_AVAILABLE. Undefined when no host can take the VM even so.
 */
export function chooseHost(needs: BootNeeds, hosts: readonly HostState[]): string | undefined {
  for (const checks of [{}, { capacity: false }]) {
    const fitting = hosts.filter((h) => hostRefusal(needs, h, checks) === undefined)
    const affinity = fitting.find((h) => h.ref === needs.vm.affinity)
    if (affinity) return affinity.ref
    const roomiest = fitting.reduce<HostState | undefined>((best, h) => (best === undefined || h.freeMemory > best.freeMemory ? h : best), undefined)
    if (roomiest) return roomiest.ref
  }
  return undefined
}
