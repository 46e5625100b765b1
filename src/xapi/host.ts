// host.* messages that need more than the generated accessors, and the host's control domain.
import { XapiError } from '../idl/errors.js'
import { formatDatetime, NULL_REF } from '../idl/index.js'
import type { Tx } from '../db/database.js'
import { register } from './context.js'
import { refreshAllowedOperations } from './vm.js'

register('host.get_servertime', () => formatDatetime(new Date()))

register('host.get_server_localtime', () => formatDatetime(new Date()))

register('host.call_plugin', (_ctx, [, plugin]) => {
  throw new XapiError('XENAPI_MISSING_PLUGIN', [plugin])
})

register('host.list_methods', () => [])

/** What the host keeps for itself (its daemon, etcd, page cache): the control domain's memory. */
export const CONTROL_DOMAIN_MEMORY = 512 * 2 ** 20

const CONTROL_DOMAIN_NAME = 'Control domain on host: '

/** The control domain as create_misc.ml makes dom0's record, for a host with `cpus` CPUs. */
export function controlDomainFields(hostRef: string, hostname: string, cpus: number): Record<string, unknown> {
  return {
    name_label: CONTROL_DOMAIN_NAME + hostname,
    name_description: 'The domain which manages physical devices and manages other domains',
    is_control_domain: true,
    power_state: 'Running',
    resident_on: hostRef,
    affinity: hostRef,
    domid: 0,
    domarch: 'x64',
    domain_type: 'pv',
    user_version: 1,
    VCPUs_max: cpus,
    VCPUs_at_startup: cpus,
    memory_static_min: CONTROL_DOMAIN_MEMORY,
    memory_dynamic_min: CONTROL_DOMAIN_MEMORY,
    memory_target: CONTROL_DOMAIN_MEMORY,
    memory_dynamic_max: CONTROL_DOMAIN_MEMORY,
    memory_static_max: CONTROL_DOMAIN_MEMORY,
    HVM_boot_policy: '',
    HVM_shadow_multiplier: 1,
    actions_after_softreboot: 'soft_reboot',
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'destroy',
    actions_after_crash: 'destroy',
  }
}

/**
 * Every start: the host's control domain exists, runs here with the host's CPUs, and is named
 * after the host (unless someone renamed it). Its memory settings are the host's reservation
 * and survive restarts; a restart is the reboot that requires_reboot asked for.
 */
export function ensureControlDomain(tx: Tx, hostRef: string, hostname: string, cpus: number): string {
  const existing = tx.get('host', hostRef).control_domain
  if (existing === NULL_REF || !tx.exists('VM', existing)) {
    const metrics = tx.create('VM_metrics', { memory_actual: CONTROL_DOMAIN_MEMORY, VCPUs_number: cpus, current_domain_type: 'pv' })
    const ref = tx.create('VM', { ...controlDomainFields(hostRef, hostname, cpus), metrics })
    tx.update('host', hostRef, { control_domain: ref })
    refreshAllowedOperations(tx, ref)
    return ref
  }
  const vm = tx.get('VM', existing)
  const named = vm.name_label.startsWith(CONTROL_DOMAIN_NAME)
  tx.update('VM', existing, {
    ...(named ? { name_label: CONTROL_DOMAIN_NAME + hostname } : {}),
    power_state: 'Running',
    resident_on: hostRef,
    domid: 0,
    VCPUs_max: cpus,
    VCPUs_at_startup: cpus,
    requires_reboot: false,
  })
  const metrics = vm.metrics
  if (tx.exists('VM_metrics', metrics)) tx.update('VM_metrics', metrics, { VCPUs_number: cpus, memory_actual: vm.memory_target })
  refreshAllowedOperations(tx, existing)
  return existing
}
