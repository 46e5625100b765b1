// VDI.pool_migrate: a VM's disk moves to another SR (reference/pools-migration-ha.md §2.5). A
// running VM's disk is mirrored inside its own QEMU and the device switched onto the copy
// (qemu-lab §7): unlike xapi, which migrates the whole VM to the same host for it and so needs
// its memory free a second time (xen-api#4955), nothing but the disk is copied. A halted VM's
// disk is copied. The disk's snapshots come along as copies. The VM's VBDs name the new VDI in
// the same transaction that records it; the old VDIs go only then. Until that transaction the
// VM uses its old disk, and whatever was made on the target SR is removed on failure.
import { constructorArgs } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VdiImage } from '../agent/contract.js'
import { withUndo, type UndoStack } from '../lib/undo.js'
import { register, type CallContext, type Services } from './context.js'
import { srHost, vmHost } from './forwarding.js'
import { attachedSr, copyImage, copyVdi, destroyVdi, refreshSrUsage, vdiFields } from './storage.js'
import { withSrLocks } from './sr-locks.js'
import { withVmOperation } from './vm.js'

/** A disk copy that copies nothing for this long is given up (a target SR on a silent network server). */
const STALL_MS = 30_000

register('VDI.pool_migrate', (ctx, [vdi, sr]) => poolMigrateVdi(ctx, vdi, sr))

/** xapi's refusals of a VDI.pool_migrate before anything moves; the VM whose disk it is. */
export function vmOfMovedVdi(svc: Services, vdiRef: string, srRef: string): string {
  const vdi = svc.db.record('VDI', vdiRef)
  svc.db.record('SR', srRef)
  if (vdi.type === 'cbt_metadata') throw new XapiError('VDI_INCOMPATIBLE_TYPE', [vdiRef, 'cbt_metadata'])
  if (vdi.cbt_enabled) throw new XapiError('VDI_CBT_ENABLED', [vdiRef])
  const vbd = vdi.VBDs[0]
  if (vbd === undefined) throw new XapiError('VDI_NEEDS_VM_FOR_MIGRATE', [vdiRef])
  return svc.db.record('VBD', vbd).VM
}

async function poolMigrateVdi(ctx: CallContext, vdiRef: string, srRef: string): Promise<string> {
  const svc = ctx.svc
  const vmRef = vmOfMovedVdi(svc, vdiRef, srRef)
  return withVmOperation(ctx, vmRef, 'migrate_send', async (vm) => {
    const vdi = svc.db.record('VDI', vdiRef)
    if (vdi.SR === srRef) return vdiRef
    const live = vm.power_state === 'Running' || vm.power_state === 'Paused'
    const started = Date.now()
    const moved = await withUndo('VDI.pool_migrate', async (undo) => {
      const snapshots = await copySnapshots(ctx, vdiRef, srRef, undo)
      const made = live ? await moveLive(svc, vdiRef, srRef, vmHost(svc, vm), vm.uuid) : await moveCopy(ctx, vdiRef, srRef, undo)
      return recordMove(svc, vdiRef, srRef, made, snapshots)
    })
    console.log(`VDI ${vdi.uuid} of VM ${vm.uuid} moved ${live ? 'live ' : ''}to SR ${svc.db.record('SR', srRef).uuid} in ${Date.now() - started} ms`)
    for (const old of [vdiRef, ...snapshotsOf(svc, vdiRef)]) await destroyVdi(svc, old).catch((err: Error) => console.error(`VDI ${old} was moved; the old one stays: ${err.message}`))
    await refreshSrUsage(svc, srRef).catch(() => undefined)
    return moved
  })
}

const snapshotsOf = (svc: Services, vdiRef: string) => svc.db.record('VDI', vdiRef).snapshots

/** Copies of the disk's snapshots on the target SR, old to new; their undo destroys them. */
async function copySnapshots(ctx: CallContext, vdiRef: string, srRef: string, undo: UndoStack): Promise<Map<string, string>> {
  const copies = new Map<string, string>()
  for (const snapshot of snapshotsOf(ctx.svc, vdiRef)) copies.set(snapshot, await undo.step(`the copy of snapshot ${snapshot}`, () => copyVdi(ctx.svc, snapshot, srRef, ctx.signal), (copy) => destroyVdi(ctx.svc, copy)))
  return copies
}

/** The running disk mirrored onto a new image on the target SR, which its host must have plugged; the image is removed if the move fails. */
async function moveLive(svc: Services, vdiRef: string, srRef: string, host: string, uuid: string): Promise<VdiImage> {
  const vdi = svc.db.record('VDI', vdiRef)
  const target = attachedSr(svc, srRef, host)
  const agent = svc.agentFor(host)
  const vbd = vdi.VBDs.map((v) => svc.db.record('VBD', v)).find((v) => v.currently_attached)
  if (!vbd) throw new XapiError('VDI_NEEDS_VM_FOR_MIGRATE', [vdiRef])
  // No collection on either SR meanwhile: one would delete the target image no record names yet, or merge into the disk being copied.
  return withSrLocks([vdi.SR, srRef], async () => {
    const image = await agent.call('vdi.create', { ...target, size: Number(vdi.virtual_size), nameLabel: vdi.name_label })
    try {
      await agent.call('vm.move-disk', { uuid, userdevice: Number(vbd.userdevice), target: { sr: target, location: image.location, format: image.format }, stallMs: STALL_MS })
    } catch (err) {
      await agent.call('vdi.destroy', { ...target, location: image.location }).catch(() => undefined)
      throw /No space left on device/i.test((err as Error).message) ? srFull(svc, srRef, Number(vdi.physical_utilisation)) : err
    }
    return image
  })
}

/** The target SR filled up during the copy. */
function srFull(svc: Services, srRef: string, needed: number): XapiError {
  const sr = svc.db.record('SR', srRef)
  return new XapiError('SR_FULL', [String(needed), String(Math.max(0, Number(sr.physical_size) - Number(sr.physical_utilisation)))])
}

/** A halted VM's disk copied to the target SR; the undo destroys the copy until it is recorded. */
async function moveCopy(ctx: CallContext, vdiRef: string, srRef: string, undo: UndoStack): Promise<VdiImage> {
  const svc = ctx.svc
  return withSrLocks([srRef], async () => {
    const image = await copyImage(svc, vdiRef, srRef, ctx.signal)
    const host = srHost(svc, srRef)
    undo.push(`the copy of VDI ${vdiRef}`, () => svc.agentFor(host).call('vdi.destroy', { ...attachedSr(svc, srRef, host), location: image.location }))
    return image
  })
}

/** One transaction: the new VDI recorded, the VM's VBDs and the snapshot copies pointing at it. */
function recordMove(svc: Services, vdiRef: string, srRef: string, image: VdiImage, snapshots: Map<string, string>): Promise<string> {
  const vdi = svc.db.record('VDI', vdiRef)
  return svc.db.transact((tx) => {
    const moved = tx.create('VDI', vdiFields(srRef, image, { ...constructorArgs('VDI', vdi), sm_config: {} }))
    for (const vbd of tx.get('VDI', vdiRef).VBDs) tx.update('VBD', vbd, { VDI: moved })
    for (const [old, copy] of snapshots) {
      const snapshot = tx.get('VDI', old)
      tx.update('VDI', copy, { is_a_snapshot: true, snapshot_of: moved, snapshot_time: snapshot.snapshot_time })
      for (const vbd of snapshot.VBDs) tx.update('VBD', vbd, { VDI: copy })
    }
    return moved
  })
}
