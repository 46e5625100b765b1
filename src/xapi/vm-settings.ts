// A VM's memory and vCPU settings: xapi's setters with their operation locks and constraint
// checks. The single-field setters go through the range setters, as xapi's forwarding layer
// turns them into set_memory_static_range / set_memory_dynamic_range.
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord, VmOperations } from '../idl/records.js'
import { register, type CallContext } from './context.js'
import { liveVcpusError, memoryConstraintError, memoryOf, vcpusAtStartupError, vcpusMaxError, type MemoryConstraints } from './vm-constraints.js'
import { withVmOperation } from './vm.js'
import { vmHost } from './forwarding.js'

type Rec = Readonly<VMRecord>

/**
 * Stores new memory settings under `op` once they pass xapi's checks. A running control domain
 * may change them but uses them only after its next boot, which requires_reboot tells clients.
 */
function setMemory(ctx: CallContext, ref: string, op: VmOperations, change: (current: MemoryConstraints, vm: Rec) => Partial<MemoryConstraints>): Promise<void> {
  return withVmOperation(ctx, ref, op, () =>
    ctx.svc.db.transact((tx) => {
      const vm = tx.get('VM', ref)
      const current = memoryOf(vm)
      const next = { ...current, ...change(current, vm) }
      const err = memoryConstraintError(vm, next)
      if (err) throw err
      tx.update('VM', ref, {
        memory_static_min: next.static_min,
        memory_dynamic_min: next.dynamic_min,
        memory_target: next.target,
        memory_dynamic_max: next.dynamic_max,
        memory_static_max: next.static_max,
        ...(vm.is_control_domain && vm.power_state === 'Running' ? { requires_reboot: true } : {}),
      })
    }),
  )
}

const staticRange = (ctx: CallContext, ref: string, min: number, max: number) => setMemory(ctx, ref, 'changing_static_range', () => ({ static_min: min, static_max: max }))

// memory_target is unused; xapi keeps it at dynamic_min so that no check trips over it. A running
// VM's new range is only recorded: QEMU runs it with static_max and no balloon device, as Xen
// runs a guest without a balloon driver, which never moves towards its target either.
const dynamicRange = (ctx: CallContext, ref: string, min: number, max: number) => setMemory(ctx, ref, 'changing_dynamic_range', () => ({ dynamic_min: min, target: min, dynamic_max: max }))

const vm = (ctx: CallContext, ref: unknown) => ctx.svc.db.record('VM', ref as string)

register('VM.set_memory_static_range', (ctx, [ref, min, max]) => staticRange(ctx, ref, min as number, max as number))
register('VM.set_memory_static_min', (ctx, [ref, value]) => staticRange(ctx, ref, value as number, Number(vm(ctx, ref).memory_static_max)))
register('VM.set_memory_static_max', (ctx, [ref, value]) => staticRange(ctx, ref, Number(vm(ctx, ref).memory_static_min), value as number))

register('VM.set_memory_dynamic_range', (ctx, [ref, min, max]) => dynamicRange(ctx, ref, min as number, max as number))
register('VM.set_memory_dynamic_min', (ctx, [ref, value]) => dynamicRange(ctx, ref, value as number, Number(vm(ctx, ref).memory_dynamic_max)))
register('VM.set_memory_dynamic_max', (ctx, [ref, value]) => dynamicRange(ctx, ref, Number(vm(ctx, ref).memory_dynamic_min), value as number))

register('VM.set_memory_limits', (ctx, [ref, staticMin, staticMax, dynamicMin, dynamicMax]) =>
  setMemory(ctx, ref, 'changing_memory_limits', () => ({
    static_min: staticMin as number,
    dynamic_min: dynamicMin as number,
    target: dynamicMin as number,
    dynamic_max: dynamicMax as number,
    static_max: staticMax as number,
  })),
)

/** static_max = dynamic_min = dynamic_max = value; static_min stays. */
register('VM.set_memory', (ctx, [ref, value]) =>
  setMemory(ctx, ref, 'changing_memory_limits', () => ({ dynamic_min: value as number, target: value as number, dynamic_max: value as number, static_max: value as number })),
)

register('VM.set_VCPUs_max', (ctx, [ref, value]) =>
  withVmOperation(ctx, ref, 'changing_VCPUs', () =>
    ctx.svc.db.transact((tx) => {
      const err = vcpusMaxError(tx.get('VM', ref), value as number)
      if (err) throw err
      tx.update('VM', ref, { VCPUs_max: value })
    }),
  ),
)

// xapi takes no operation lock here: a running VM's count for its next boot may change.
register('VM.set_VCPUs_at_startup', (ctx, [ref, value]) =>
  ctx.svc.db.transact((tx) => {
    const rec = tx.get('VM', ref)
    if (rec.is_control_domain) throw new XapiError('OPERATION_NOT_ALLOWED', ['set_VCPUs_at_startup is not allowed on dom0'])
    const err = vcpusAtStartupError(rec, value as number)
    if (err) throw err
    tx.update('VM', ref, { VCPUs_at_startup: value })
  }),
)

/** CPU hot-plug (QEMU runs every VM with maxcpus = VCPUs_max); the new count is also the next boot's. */
register('VM.set_VCPUs_number_live', (ctx, [ref, count]) =>
  withVmOperation(ctx, ref, 'changing_VCPUs_live', async (rec) => {
    const err = liveVcpusError(rec, count as number)
    if (err) throw err
    await ctx.svc.agentFor(vmHost(ctx.svc, rec)).call('vm.set-vcpus', { uuid: rec.uuid, count: count as number })
    await ctx.svc.db.transact((tx) => {
      tx.update('VM', ref, { VCPUs_at_startup: count })
      const metrics = tx.get('VM', ref).metrics
      if (metrics !== NULL_REF && tx.exists('VM_metrics', metrics)) tx.update('VM_metrics', metrics, { VCPUs_number: count })
    })
  }),
)
