// Which VM operations are valid right now: xapi's checks in its order, as a pure function of
// the VM record (reference/xapi.md §3.1–3.2). Used to refuse calls and to fill allowed_operations.
import { enumValues } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord, VmOperations as Op, VmPowerState } from '../idl/records.js'

type Rec = Readonly<VMRecord>

const ALLOWED_POWER_STATES: Partial<Record<Op, VmPowerState[]>> = {
  start: ['Halted'], start_on: ['Halted'], provision: ['Halted'], make_into_template: ['Halted'],
  changing_shadow_memory: ['Halted'], changing_NVRAM: ['Halted'], create_vtpm: ['Halted'],
  changing_VCPUs: ['Halted'], changing_static_range: ['Halted'], changing_memory_limits: ['Halted'],
  unpause: ['Paused'], resume: ['Suspended'], resume_on: ['Suspended'], csvm: ['Suspended'],
  pause: ['Running'], suspend: ['Running'], clean_shutdown: ['Running'], clean_reboot: ['Running'],
  pool_migrate: ['Running'], send_sysrq: ['Running'], send_trigger: ['Running'], call_plugin: ['Running'],
  changing_memory_live: ['Running'], awaiting_memory_live: ['Running'], changing_shadow_memory_live: ['Running'],
  changing_VCPUs_live: ['Running'], data_source_op: ['Running'], snapshot_with_quiesce: ['Running'],
  changing_dynamic_range: ['Halted', 'Running'],
  clone: ['Halted'], copy: ['Halted'],
  destroy: ['Halted', 'Suspended'], export: ['Halted', 'Suspended'], create_template: ['Halted', 'Suspended'],
  hard_reboot: ['Paused', 'Running'],
  checkpoint: ['Paused', 'Suspended', 'Running'], shutdown: ['Paused', 'Suspended', 'Running'],
  hard_shutdown: ['Paused', 'Suspended', 'Running'], get_boot_record: ['Paused', 'Suspended', 'Running'],
  migrate_send: ['Halted', 'Suspended', 'Running'],
}

const TEMPLATE_OK = new Set<Op>(['changing_memory_limits', 'changing_static_range', 'changing_dynamic_range', 'changing_VCPUs', 'changing_NVRAM', 'changing_shadow_memory', 'clone', 'copy', 'export', 'metadata_export', 'provision', 'destroy', 'migrate_send'])
const SNAPSHOT_OK = new Set<Op>(['revert', 'clone', 'copy', 'export', 'destroy', 'hard_shutdown', 'metadata_export'])
const NEVER_ADVERTISED = new Set<Op>(['create_template', 'power_state_reset', 'csvm', 'get_boot_record', 'send_sysrq', 'send_trigger', 'query_services', 'shutdown', 'call_plugin', 'changing_memory_live', 'awaiting_memory_live', 'changing_memory_limits', 'changing_shadow_memory_live', 'changing_VCPUs', 'assert_operation_valid', 'data_source_op', 'update_allowed_operations', 'import', 'reverting'])
/**
 * What a control domain allows (xapi_vm_lifecycle.ml): its memory settings, metrics and metadata,
 * not its life cycle. (xapi also lets other control domains than dom0 change VCPUs and be destroyed.)
 */
const CONTROL_DOMAIN_OK = new Set<Op>(['data_source_op', 'changing_memory_live', 'awaiting_memory_live', 'metadata_export', 'changing_dynamic_range', 'changing_memory_limits', 'changing_static_range', 'start', 'start_on'])
/** Halted-only settings a running control domain may still change (for its next boot). */
const CONTROL_DOMAIN_RUNNING_OK = new Set<Op>(['changing_VCPUs', 'changing_static_range', 'changing_memory_limits'])
const LONG_COPIES = new Set<Op>(['clone', 'copy', 'export'])
const SNAPSHOTS = new Set<Op>(['snapshot', 'checkpoint'])

function compatible(op: Op, running: Op): boolean {
  if (LONG_COPIES.has(op) && LONG_COPIES.has(running)) return true
  if (SNAPSHOTS.has(op) && SNAPSHOTS.has(running)) return true
  if (op === 'hard_shutdown') return running !== 'hard_shutdown'
  if (op === 'hard_reboot') return running !== 'hard_shutdown' && running !== 'hard_reboot'
  return false
}

/** The first reason `op` is not allowed on `vm` now, as the XenAPI error xapi would raise. */
export function vmOperationError(vmRef: string, vm: Rec, op: Op): XapiError | undefined {
  const blocked = vm.blocked_operations[op]
  if (blocked !== undefined) return new XapiError('OPERATION_BLOCKED', [vmRef, blocked])
  const power = vm.power_state
  const allowed: VmPowerState[] | undefined = vm.is_control_domain && CONTROL_DOMAIN_RUNNING_OK.has(op) ? ['Halted', 'Running'] : ALLOWED_POWER_STATES[op]
  if (allowed && !allowed.includes(power) && !(op === 'clone' || op === 'copy' ? vm.is_a_snapshot && power === 'Suspended' : false))
    return new XapiError('VM_BAD_POWER_STATE', [vmRef, allowed.map((s) => s.toLowerCase()).join(', '), power.toLowerCase()])
  const current = Object.entries(vm.current_operations)
  const clash = current.filter(([, running]) => !compatible(op, running))
  if (clash.length > 0) {
    const ops = clash.map(([, o]) => o)
    const tasks = clash.map(([t]) => t)
    return new XapiError('OTHER_OPERATION_IN_PROGRESS', ['VM', vmRef, ops.length === 1 ? ops[0] : `{${ops.join(',')}}`, tasks.length === 1 ? tasks[0] : `{${tasks.join(',')}}`])
  }
  if (vm.is_a_template && !vm.is_a_snapshot && !TEMPLATE_OK.has(op)) return new XapiError('VM_IS_TEMPLATE', [vmRef, op])
  if (vm.is_a_snapshot && !SNAPSHOT_OK.has(op)) return new XapiError('VM_IS_SNAPSHOT', [vmRef, op])
  if (op === 'provision' && !vm.is_a_template) return new XapiError('PROVISION_ONLY_ALLOWED_ON_TEMPLATE')
  if (op === 'revert' && !vm.is_a_snapshot) return new XapiError('REVERT_ONLY_ALLOWED_ON_SNAPSHOT')
  const platform = vm.platform
  if ((['suspend', 'checkpoint', 'pool_migrate', 'migrate_send'] as Op[]).includes(op) && (platform.nomigrate === 'true' || platform['nested-virt'] === 'true'))
    return new XapiError('VM_IS_IMMOBILE', [vmRef])
  if (op === 'changing_dynamic_range' && platform['nested-virt'] === 'true') return new XapiError('VM_IS_USING_NESTED_VIRT', [vmRef])
  // Every Flotilla control domain is its host's domain zero.
  if (vm.is_control_domain && (op === 'changing_VCPUs' || op === 'destroy')) return new XapiError('OPERATION_NOT_ALLOWED', ['This operation is not allowed on dom0'])
  if (vm.is_control_domain && !CONTROL_DOMAIN_OK.has(op)) return new XapiError('OPERATION_NOT_ALLOWED', ['This operation is not allowed on a control domain'])
  return undefined
}

/** allowed_operations: every VM operation that would pass validation now, minus those xapi never lists. */
export function allowedVmOperations(vmRef: string, vm: Rec): Op[] {
  return enumValues('vm_operations').filter((op) => !NEVER_ADVERTISED.has(op) && !vmOperationError(vmRef, vm, op))
}
