// VM messages beyond the generated accessors: the constructor, destroy, clone of what needs no
// storage, and the device-number helpers clients use. Power operations arrive with the agent's
// hypervisor backend.
import { randomUUID } from 'node:crypto'
import { getClass, NULL_REF, storedFields } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { Tx } from '../db/database.js'
import { withUndo } from '../lib/undo.js'
import type { StoredOf, VMRecord, VmOperations } from '../idl/records.js'
import { register, type CallContext } from './context.js'
import { createObject } from './generic.js'
import { withOperation } from './operations.js'
import { CLONE_RESETS, deviceCopy } from './vm-copies.js'
import { allowedVmOperations, vmOperationError } from './vm-ops.js'
import { macFromSeed } from './vif.js'
import { cloneVdi, copyVdi, destroyVdi } from './storage.js'

type Rec = Readonly<VMRecord>

const VM = getClass('VM')

/** Keeps a VM's allowed_operations in step with its state, inside the transaction that changed it. */
export function refreshAllowedOperations(tx: Tx, ref: string): void {
  const vm = tx.get('VM', ref)
  const allowed = allowedVmOperations(ref, vm)
  if (JSON.stringify(allowed) !== JSON.stringify(vm.allowed_operations)) tx.update('VM', ref, { allowed_operations: allowed })
}

export function assertVmOperation(tx: Tx, ref: string, op: VmOperations): Rec {
  const vm = tx.get('VM', ref)
  const err = vmOperationError(ref, vm, op)
  if (err) throw err
  return vm
}

/** Runs a VM operation under xapi's locking (operations.ts), checked by vmOperationError. */
export function withVmOperation<T>(ctx: CallContext, ref: string, op: VmOperations, fn: (vm: Rec) => Promise<T>): Promise<T> {
  return withOperation(ctx, { cls: 'VM', check: (tx, r) => assertVmOperation(tx, r, op), refresh: refreshAllowedOperations }, ref, op, fn)
}

register('VM.create', async (ctx, [args]) => {
  const given = args
  const other = { ...(given.other_config ?? {}) }
  other.mac_seed ??= randomUUID()
  const ref = await createObject(ctx, VM, { ...given, other_config: other })
  await ctx.svc.db.transact((tx) => {
    const metrics = tx.create('VM_metrics', { memory_actual: tx.get('VM', ref).memory_static_max, VCPUs_number: tx.get('VM', ref).VCPUs_at_startup })
    tx.update('VM', ref, { metrics, power_state: 'Halted', domid: -1 })
    refreshAllowedOperations(tx, ref)
  })
  return ref
})

/** Destroys a VM's own satellite objects (not its VDIs: VM.destroy never deletes disks). */
function destroySatellites(tx: Tx, ref: string, vm: Rec): void {
  for (const field of ['VBDs', 'VIFs', 'consoles', 'VTPMs', 'VUSBs', 'VGPUs', 'crash_dumps'] as const) {
    const cls = VM.fields.get(field)!.type
    if (cls.kind !== 'set' || cls.of.kind !== 'ref') continue
    for (const child of vm[field]) if (tx.exists(cls.of.cls, child)) tx.delete(cls.of.cls, child)
  }
  for (const [cls, field] of [['VM_metrics', 'metrics'], ['VM_guest_metrics', 'guest_metrics']] as const) {
    const child = vm[field]
    if (child !== NULL_REF && tx.exists(cls, child)) tx.delete(cls, child)
  }
}

register('VM.destroy', async (ctx, [ref]) => {
  const suspendImage = await ctx.svc.db.transact((tx) => {
    const vm = assertVmOperation(tx, ref, 'destroy')
    if (vm.is_default_template) throw new XapiError('VM_CANNOT_DELETE_DEFAULT_TEMPLATE', [ref])
    destroySatellites(tx, ref, vm)
    tx.delete('VM', ref)
    return vm.suspend_VDI
  })
  // A suspended VM's saved state is its own, unlike its disks.
  if (suspendImage !== NULL_REF && ctx.svc.db.tryRecord('VDI', suspendImage)) await destroyVdi(ctx.svc, suspendImage)
})

/** A clone's record: the source's, less what a clone does not inherit. */
function cloneFields(source: Rec, name: string): Partial<StoredOf<'VM'>> {
  const other = { ...source.other_config }
  delete other.default_template
  delete other.xensource_internal
  if (source.is_a_template) other.base_template_name = source.name_label
  other.mac_seed = randomUUID()
  return { ...storedFields('VM', source), ...CLONE_RESETS, uuid: randomUUID(), name_label: name, other_config: other }
}

/** VM.clone (thin disk clones) and VM.copy (full disk copies to `sr`, or each disk's own SR). */
async function cloneVm(ctx: CallContext, ref: string, name: string, op: 'clone' | 'copy', sr = NULL_REF): Promise<string> {
  return withVmOperation(ctx, ref, op, (source) =>
    withUndo(`VM.${op}`, async (undo) => {
      const disks = new Map<string, string>()
      for (const vbd of source.VBDs) {
        const rec = ctx.svc.db.record('VBD', vbd)
        const vdi = rec.VDI
        if (rec.type === 'CD' || vdi === NULL_REF) continue
        // Cancelled between two disks: the undo removes the copies made so far.
        if (ctx.signal?.aborted) throw new XapiError('TASK_CANCELLED', [ctx.taskRef ?? ''])
        const make = () => (op === 'clone' ? cloneVdi(ctx.svc, vdi) : copyVdi(ctx.svc, vdi, sr, ctx.signal))
        disks.set(vbd, await undo.step(`the ${op} of VDI ${vdi}`, make, (made) => destroyVdi(ctx.svc, made)))
      }
      return ctx.svc.db.transact((tx) => {
        const { uuid: _u, ...metricsFields } = tx.exists('VM_metrics', source.metrics) ? tx.get('VM_metrics', source.metrics) : {}
        const metrics = tx.create('VM_metrics', metricsFields)
        const clone = tx.create('VM', { ...cloneFields(source, name), metrics })
        const seed = String(tx.get('VM', clone).other_config.mac_seed)
        for (const vbd of source.VBDs) {
          const original = tx.get('VBD', vbd)
          tx.create('VBD', deviceCopy('VBD', original, { VM: clone, VDI: disks.get(vbd) ?? original.VDI }))
        }
        for (const vif of source.VIFs) {
          const original = tx.get('VIF', vif)
          const MAC = original.MAC_autogenerated ? macFromSeed(seed, original.device) : original.MAC
          tx.create('VIF', deviceCopy('VIF', original, { VM: clone, MAC }))
        }
        refreshAllowedOperations(tx, clone)
        return clone
      })
    }),
  )
}

register('VM.clone', (ctx, [ref, name]) => cloneVm(ctx, ref, name, 'clone'))
register('VM.copy', (ctx, [ref, name, sr]) => cloneVm(ctx, ref, name, 'copy', sr))

register('VM.assert_operation_valid', (ctx, [ref, op]) =>
  ctx.svc.db.transact((tx) => {
    assertVmOperation(tx, ref, op)
  }),
)

register('VM.update_allowed_operations', (ctx, [ref]) => ctx.svc.db.transact((tx) => refreshAllowedOperations(tx, ref)))

const usedDevices = (ctx: CallContext, ref: string, cls: 'VBD' | 'VIF') => {
  const vm = ctx.svc.db.record('VM', ref)
  return new Set(cls === 'VBD' ? vm.VBDs.map((r) => ctx.svc.db.record('VBD', r).userdevice) : vm.VIFs.map((r) => ctx.svc.db.record('VIF', r).device))
}

register('VM.get_allowed_VBD_devices', (ctx, [ref]) => {
  const used = usedDevices(ctx, ref, 'VBD')
  return Array.from({ length: 16 }, (_, i) => String(i)).filter((d) => !used.has(d))
})

register('VM.get_allowed_VIF_devices', (ctx, [ref]) => {
  const used = usedDevices(ctx, ref, 'VIF')
  return Array.from({ length: 7 }, (_, i) => String(i)).filter((d) => !used.has(d))
})

/** The BIOS strings xapi lets a client set, plus SMBIOS type 11 OEM strings ("oem-N") that Flotilla passes to the guest. */
const SETTABLE_BIOS_STRINGS = new Set(['bios-vendor', 'bios-version', 'system-manufacturer', 'system-product-name', 'system-version', 'system-serial-number', 'enclosure-asset-tag', 'baseboard-manufacturer', 'baseboard-product-name', 'baseboard-version', 'baseboard-serial-number', 'baseboard-asset-tag', 'baseboard-location-in-chassis'])

register('VM.set_bios_strings', (ctx, [ref, value]) =>
  ctx.svc.db.transact((tx) => {
    const vm = tx.get('VM', ref)
    if (vm.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [ref, 'halted', vm.power_state.toLowerCase()])
    for (const [key, text] of Object.entries(value)) {
      if (!SETTABLE_BIOS_STRINGS.has(key) && !/^oem-\d{1,3}$/.test(key)) throw new XapiError('INVALID_VALUE', [key, text])
      if (text.length > 512 || /[^\x20-\x7e]/.test(text)) throw new XapiError('INVALID_VALUE', [key, text])
    }
    tx.update('VM', ref, { bios_strings: { ...vm.bios_strings, ...value } })
  }),
)

/** The host's SMBIOS strings become the VM's (for OEM-licensed guests), and the host its affinity: only once. */
register('VM.copy_bios_strings', (ctx, [ref, host]) =>
  ctx.svc.db.transact((tx) => {
    const vm = tx.get('VM', ref)
    if (Object.keys(vm.bios_strings).length > 0) throw new XapiError('VM_BIOS_STRINGS_ALREADY_SET')
    tx.update('VM', ref, { bios_strings: tx.get('host', host).bios_strings, affinity: host })
  }),
)
