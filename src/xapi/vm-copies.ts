// What a VM's copies (clone and copy, snapshot, import) and their devices do not take from the
// original, declared once each; the rest of a copy is the original's stored fields, or the
// datamodel's defaults for a record made from scratch (tx.create fills them).
import { EPOCH, NULL_REF, storedFields } from '../idl/index.js'
import type { ClassName, ClassRecords, StoredOf, VmPowerState } from '../idl/records.js'

type Fields<C extends ClassName> = Partial<StoredOf<C>>

/** Where and how the original runs: no copy keeps it. */
const NOT_RUNNING = {
  resident_on: NULL_REF,
  scheduled_to_be_resident_on: NULL_REF,
  current_operations: {},
  guest_metrics: NULL_REF,
} satisfies Fields<'VM'>

/** A copy that is a VM of its own is nobody's snapshot nor child, and never a default template. */
const NOT_A_SNAPSHOT = {
  is_a_snapshot: false,
  snapshot_of: NULL_REF,
  snapshot_time: EPOCH,
  parent: NULL_REF,
  is_default_template: false,
} satisfies Fields<'VM'>

/** VM.clone and VM.copy (reference/xapi.md §3.4); other_config is filtered apart. */
export const CLONE_RESETS = {
  ...NOT_RUNNING,
  ...NOT_A_SNAPSHOT,
  generation_id: '',
  ha_always_run: false,
  start_delay: 0,
  shutdown_delay: 0,
  order: 0,
  appliance: NULL_REF,
  suspend_SR: NULL_REF,
} satisfies Fields<'VM'>

/** VM.snapshot and VM.checkpoint: a halted template (a checkpoint then says Suspended). */
export const SNAPSHOT_RESETS = {
  ...NOT_RUNNING,
  is_a_snapshot: true,
  is_a_template: true,
  is_default_template: false,
  power_state: 'Halted' as VmPowerState,
  domid: -1,
  suspend_VDI: NULL_REF,
} satisfies Fields<'VM'>

/** A VM read from an export: not this pool's control domain, and placed nowhere yet. */
export const IMPORT_RESETS = {
  ...NOT_RUNNING,
  ...NOT_A_SNAPSHOT,
  is_control_domain: false,
  affinity: NULL_REF,
  domid: -1,
  allowed_operations: [],
} satisfies Fields<'VM'>

/** Fields VM.revert keeps from the VM rather than taking from the snapshot: identity, relations, runtime state. */
export const KEPT_BY_REVERT: ReadonlySet<string> = new Set<keyof StoredOf<'VM'>>([
  'uuid', 'name_label', 'name_description', 'is_a_template', 'is_a_snapshot', 'snapshot_of', 'snapshot_time', 'snapshot_info',
  'snapshot_metadata', 'parent', 'power_state', 'resident_on', 'scheduled_to_be_resident_on', 'domid', 'current_operations',
  'allowed_operations', 'metrics', 'guest_metrics', 'suspend_VDI', 'blocked_operations', 'is_default_template', 'tags',
  'transportable_snapshot_id', 'appliance', 'snapshot_schedule', 'other_config',
])

/** A VBD or VIF of a copy is not plugged, nor busy, whatever the original's is. */
export const DEVICE_RESETS = { currently_attached: false, current_operations: {}, allowed_operations: [], status_code: 0, status_detail: '' }

/** A device record for a copy of its VM: the original's fields without its uuid, reset, then `changes`. */
export function deviceCopy<C extends 'VBD' | 'VIF'>(cls: C, original: Readonly<ClassRecords[C]>, changes: Fields<C>): Fields<C> {
  const { uuid: _uuid, ...fields } = storedFields(cls, original) as StoredOf<C> & { uuid: string }
  return { ...fields, ...DEVICE_RESETS, ...changes } as Fields<C>
}

/** The device name of a disk or CD at a userdevice number: 0 is xvda. */
export const vbdDeviceName = (userdevice: number | string): string => `xvd${String.fromCharCode(97 + Number(userdevice))}`

/** A read-write disk VBD for a VDI of the VM; `more` sets what differs from the defaults (bootable, unpluggable…). */
export function diskVbd(vm: string, vdi: string, userdevice: string, more: Fields<'VBD'> = {}): Fields<'VBD'> {
  return { VM: vm, VDI: vdi, userdevice, device: vbdDeviceName(userdevice), mode: 'RW', type: 'Disk', empty: false, ...more }
}
