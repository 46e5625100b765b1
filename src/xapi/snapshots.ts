// The VM snapshot family: VM.snapshot, VM.checkpoint, VM.revert, with xapi's bookkeeping
// (reference/xapi.md §3.5). Disks are frozen qcow2 images that later images build on; see
// storage/chain.ts for how chains stay short.
import { randomUUID } from 'node:crypto'
import { getClass, NULL_REF, storedFields } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { StoredOf, VMRecord } from '../idl/records.js'
import type { Tx } from '../db/database.js'
import { fromJson, toJson } from '../lib/int64.js'
import { withUndo } from '../lib/undo.js'
import { now, register, type CallContext, type Services } from './context.js'
import { attachedSr, cloneVdi, createSuspendVdi, destroyVdi, recordVdi, snapshotVdis, srPath } from './storage.js'
import { refreshAllowedOperations, withVmOperation } from './vm.js'
import { srHost, vmHost } from './forwarding.js'
import { markHalted } from './vm-lifecycle.js'
import { deviceCopy, KEPT_BY_REVERT, SNAPSHOT_RESETS } from './vm-copies.js'

type Rec = Readonly<VMRecord>

const VM = getClass('VM')


/** The snapshot VM record and its devices, pointing at the snapshot disks. */
function recordSnapshot(tx: Tx, vmRef: string, vm: Rec, name: string, disks: Map<string, string>, extra: Partial<StoredOf<'VM'>>): string {
  const metrics = tx.create('VM_metrics', {})
  const snapshot = tx.create('VM', {
    ...storedFields('VM', vm),
    ...SNAPSHOT_RESETS,
    uuid: randomUUID(),
    name_label: name,
    snapshot_of: vmRef,
    snapshot_time: now(),
    snapshot_info: { 'power-state-at-snapshot': vm.power_state, 'disk-snapshot-type': 'crash_consistent' },
    snapshot_metadata: toJson(storedFields('VM', vm)),
    parent: vm.parent,
    metrics,
    ...extra,
  })
  for (const vbd of vm.VBDs) {
    const original = tx.get('VBD', vbd)
    tx.create('VBD', deviceCopy('VBD', original, { VM: snapshot, VDI: disks.get(vbd) ?? original.VDI }))
  }
  for (const vif of vm.VIFs) tx.create('VIF', deviceCopy('VIF', tx.get('VIF', vif), { VM: snapshot }))
  tx.update('VM', vmRef, { parent: snapshot })
  refreshAllowedOperations(tx, snapshot)
  return snapshot
}

/** The VM's disks that a snapshot covers: Disk VBDs with a VDI, less the ignored ones. */
function snapshotDisks(svc: Services, vm: Rec, ignore: string[] = []): { vbd: string; vdi: string; userdevice: number }[] {
  return vm.VBDs
    .map((vbd) => ({ vbd, rec: svc.db.record('VBD', vbd) }))
    .filter(({ rec }) => rec.type !== 'CD' && rec.VDI !== NULL_REF && !ignore.includes(rec.VDI))
    .map(({ vbd, rec }) => ({ vbd, vdi: rec.VDI, userdevice: Number(rec.userdevice) }))
}

async function snapshotVm(ctx: CallContext, ref: string, name: string, ignore: string[]): Promise<string> {
  const svc = ctx.svc
  return withVmOperation(ctx, ref, 'snapshot', (vm) =>
    withUndo('VM.snapshot', async (undo) => {
      const made = new Map<string, string>()
      const disks = snapshotDisks(svc, vm, ignore)
      const snapshots = await snapshotVdis(svc, disks.map((d) => d.vdi), undo)
      for (const [i, disk] of disks.entries()) made.set(disk.vbd, snapshots[i]!)
      return svc.db.transact((tx) => recordSnapshot(tx, ref, tx.get('VM', ref), name, made, {}))
    }),
  )
}

register('VM.snapshot', (ctx, [ref, name, ignore]) => snapshotVm(ctx, ref, name, ignore ?? []))

register('VM.snapshot_with_quiesce', (_ctx, [ref]) => {
  throw new XapiError('VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED', [ref, 'quiesced snapshots need guest tools Flotilla does not have'])
})

/** Each disk a VM running on `host` now writes to its new overlay `next` gets that as its VDI's location. */
async function followFrozenDisks(svc: Services, host: string, uuid: string, disks: { vdi: string; sr: string; next: string }[]): Promise<void> {
  const agent = svc.agentFor(host)
  const inUse = new Set((await agent.call('vm.devices', { uuid })).disks.map((d) => d.file))
  for (const d of disks) {
    if (inUse.has(await agent.call('vdi.path', { ...attachedSr(svc, d.sr, host), location: d.next }))) await svc.db.transact((tx) => tx.update('VDI', d.vdi, { location: d.next }))
  }
}

register('VM.checkpoint', (ctx, [ref, name]) => {
  const svc = ctx.svc
  return withVmOperation(ctx, ref, 'checkpoint', async (vm) => {
    if (vm.power_state !== 'Running' && vm.power_state !== 'Paused') throw new XapiError('VM_BAD_POWER_STATE', [ref, 'running, paused', vm.power_state.toLowerCase()])
    const disks = snapshotDisks(svc, vm).map((d) => ({ ...d, location: svc.db.record('VDI', d.vdi).location, next: randomUUID(), sr: svc.db.record('VDI', d.vdi).SR }))
    const host = vmHost(svc, vm)
    const agent = svc.agentFor(host)
    return withUndo('VM.checkpoint', async (undo) => {
      const image = await undo.step('the suspend image', () => createSuspendVdi(svc, vm, host), (made) => destroyVdi(svc, made.ref))
      try {
        // A checkpoint that fails after QEMU moved disks onto their new overlays leaves them there: their records follow.
        undo.push('the locations of the disks QEMU froze', () => followFrozenDisks(svc, host, vm.uuid, disks))
        const checkpointDisks = disks.map((d) => ({ sr: attachedSr(svc, d.sr, host), userdevice: d.userdevice, location: d.location, next: d.next }))
        const frozenDisks = await agent.call('vm.checkpoint', { uuid: vm.uuid, disks: checkpointDisks, state: image.path })
        const snapshotOf = new Map<string, string>()
        for (const [i, d] of disks.entries()) {
          const { frozen: frozenLocation, location } = frozenDisks[i]!
          await svc.db.transact((tx) => tx.update('VDI', d.vdi, { location }))
          const frozen = await agent.call('vdi.image', { ...checkpointDisks[i]!.sr, location: frozenLocation })
          const source = svc.db.record('VDI', d.vdi)
          const fields = { name_label: source.name_label, name_description: source.name_description, type: source.type, read_only: source.read_only, sharable: source.sharable, other_config: source.other_config, uuid: randomUUID(), is_a_snapshot: true, snapshot_of: d.vdi, snapshot_time: now() }
          snapshotOf.set(d.vbd, await undo.step(`the snapshot of VDI ${d.vdi}`, () => recordVdi(svc, d.sr, frozen, fields), (snap) => destroyVdi(svc, snap)))
        }
        return await svc.db.transact((tx) => recordSnapshot(tx, ref, tx.get('VM', ref), name, snapshotOf, { power_state: 'Suspended', suspend_VDI: image.ref }))
      } catch (err) {
        throw new XapiError('VM_CHECKPOINT_SUSPEND_FAILED', [ref, (err as Error).message])
      }
    })
  })
})

register('VM.revert', async (ctx, [snapshotRef]) => {
  const svc = ctx.svc
  const snapshot = svc.db.record('VM', snapshotRef)
  if (!snapshot.is_a_snapshot) throw new XapiError('REVERT_ONLY_ALLOWED_ON_SNAPSHOT')
  const vmRef = snapshot.snapshot_of
  if (!svc.db.tryRecord('VM', vmRef)) throw new XapiError('VM_REVERT_FAILED', [snapshotRef, vmRef])
  await withVmOperation(ctx, vmRef, 'reverting', (vm) =>
    withUndo('VM.revert', async (undo) => {
      // The snapshot's disks are copied before the VM is touched: a copy that fails leaves it as it was.
      const disks = new Map<string, string>()
      for (const disk of snapshotDisks(svc, snapshot))
        disks.set(disk.vbd, await undo.step(`the clone of VDI ${disk.vdi}`, () => cloneVdi(svc, disk.vdi, { is_a_snapshot: false, snapshot_of: NULL_REF }), (clone) => destroyVdi(svc, clone)))
      let suspendImage = NULL_REF
      if (snapshot.power_state === 'Suspended' && snapshot.suspend_VDI !== NULL_REF) {
        const source = svc.db.record('VDI', snapshot.suspend_VDI)
        const host = srHost(svc, source.SR)
        const copy = await undo.step('the copy of the suspend image', () => createSuspendVdi(svc, snapshot, host), (image) => destroyVdi(svc, image.ref))
        await svc.agentFor(host).call('vdi.copy-raw', { path: srPath(svc, source.SR, host), from: source.location, to: svc.db.record('VDI', copy.ref).location })
        suspendImage = copy.ref
      }
      // A running VM is stopped hard, as xapi does.
      if (vm.power_state === 'Running' || vm.power_state === 'Paused') {
        const { nvram } = await svc.agentFor(vmHost(svc, vm)).call('vm.stop', { uuid: vm.uuid, clean: false })
        await svc.db.transact((tx) => markHalted(tx, vmRef, nvram))
      }
      const old = svc.db.record('VM', vmRef)
      const discard = [old.suspend_VDI, ...snapshotDisks(svc, old).map((d) => d.vdi)].filter((v) => v !== NULL_REF)
      const metadata = fromJson(snapshot.snapshot_metadata || '{}') as Record<string, unknown>
      await svc.db.transact((tx) => {
        const current = tx.get('VM', vmRef)
        for (const vbd of current.VBDs) tx.delete('VBD', vbd)
        for (const vif of current.VIFs) tx.delete('VIF', vif)
        for (const vbd of snapshot.VBDs) {
          const original = tx.get('VBD', vbd)
          tx.create('VBD', deviceCopy('VBD', original, { VM: vmRef, VDI: disks.get(vbd) ?? original.VDI, currently_attached: suspendImage !== NULL_REF }))
        }
        for (const vif of snapshot.VIFs) tx.create('VIF', deviceCopy('VIF', tx.get('VIF', vif), { VM: vmRef }))
        const restored = Object.fromEntries(Object.entries(metadata).filter(([k]) => !KEPT_BY_REVERT.has(k) && VM.fields.has(k)))
        tx.update('VM', vmRef, { ...restored, parent: snapshotRef, power_state: suspendImage !== NULL_REF ? 'Suspended' : 'Halted', suspend_VDI: suspendImage })
        refreshAllowedOperations(tx, vmRef)
      })
      // The VM now runs on the copies: from here on nothing is undone.
      undo.commit()
      for (const vdi of discard) if (svc.db.tryRecord('VDI', vdi)) await destroyVdi(svc, vdi).catch((e: Error) => console.error(`revert: dropping ${vdi}: ${e.message}`))
    }),
  )
})
