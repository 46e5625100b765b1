// What moving a VM's disk to another SR takes, whichever call moves it (VDI.pool_migrate,
// VM.migrate_send): its snapshots copied along, and the disk's new VDI made and recorded before
// anything is written to it (an image no record names is the SR's garbage); the VM's VBDs and the
// snapshot copies point at the new VDI in the transaction that completes the move; the old VDIs
// go only after it. Until then a failure destroys what was made (the undo).
import { constructorArgs } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { Tx } from '../db/database.js'
import { withUndo, type UndoStack } from '../lib/undo.js'
import type { CallContext, Services } from './context.js'
import { srHost } from './forwarding.js'
import { attachedSr, copyVdi, createVdi, destroyVdi, imageOf, refreshSrUsage } from './storage.js'
import { withSrLocks } from './sr-locks.js'

/** A disk on its way to SR `sr`: its VDI there (`target`), copies of its snapshots there (old snapshot → copy). */
export interface DiskMove {
  vdi: string
  sr: string
  target: string
  snapshots: Map<string, string>
}

/**
 * Makes a disk's move to `sr` ready: its snapshots copied there, and its new VDI there, empty for
 * a mirror to fill (`live`) or a copy of the disk. The caller holds no lock of either SR.
 */
export async function prepareMove(ctx: CallContext, vdiRef: string, srRef: string, live: boolean, undo: UndoStack): Promise<DiskMove> {
  const svc = ctx.svc
  const vdi = svc.db.record('VDI', vdiRef)
  const snapshots = new Map<string, string>()
  for (const snapshot of vdi.snapshots) snapshots.set(snapshot, await undo.step(`the copy of snapshot ${snapshot}`, () => copyVdi(svc, snapshot, srRef, ctx.signal), (copy) => destroyVdi(svc, copy, true)))
  const make = live ? () => createVdi(svc, { ...constructorArgs('VDI', vdi), SR: srRef, sm_config: {} }) : () => copyVdi(svc, vdiRef, srRef, ctx.signal)
  const target = await undo.step(`the new VDI of ${vdiRef}`, make, (made) => destroyVdi(svc, made, true))
  return { vdi: vdiRef, sr: srRef, target, snapshots }
}

/** In the transaction that completes a move: the VM's VBDs point at the new VDI, the snapshot copies are its snapshots. */
export function completeMove(tx: Tx, move: DiskMove): void {
  for (const vbd of tx.get('VDI', move.vdi).VBDs) tx.update('VBD', vbd, { VDI: move.target })
  for (const [old, copy] of move.snapshots) {
    const snapshot = tx.get('VDI', old)
    tx.update('VDI', copy, { is_a_snapshot: true, snapshot_of: move.target, snapshot_time: snapshot.snapshot_time })
    for (const vbd of snapshot.VBDs) tx.update('VBD', vbd, { VDI: copy })
  }
}

/** After a move was recorded: the old VDI and its snapshots go; the new VDI's and the target SR's figures are read again (a mirror filled it). */
export async function destroyMovedFrom(svc: Services, move: DiskMove): Promise<void> {
  for (const old of [move.vdi, ...move.snapshots.keys()]) await destroyVdi(svc, old).catch((err: Error) => console.error(`VDI ${old} was moved; the old one stays: ${err.message}`))
  const host = srHost(svc, move.sr)
  const image = await svc.agentFor(host).call('vdi.image', { ...attachedSr(svc, move.sr, host), location: svc.db.record('VDI', move.target).location }).catch(() => undefined)
  if (image) await svc.db.transact((tx) => tx.exists('VDI', move.target) && tx.update('VDI', move.target, { physical_utilisation: image.physicalUtilisation }))
  await refreshSrUsage(svc, move.sr).catch(() => undefined)
}

/** A running VM's disk mirrored onto its new VDI by its QEMU and switched onto it, on an SR the VM's host must have plugged. */
async function mirrorLive(svc: Services, move: DiskMove, host: string, uuid: string, stallMs: number): Promise<void> {
  const vdi = svc.db.record('VDI', move.vdi)
  const vbd = vdi.VBDs.map((v) => svc.db.record('VBD', v)).find((v) => v.currently_attached)
  if (!vbd) throw new XapiError('VDI_NEEDS_VM_FOR_MIGRATE', [move.vdi])
  const target = imageOf(svc, move.target, host)
  // No collection merging into the disk being copied meanwhile.
  await withSrLocks([vdi.SR, move.sr], () => svc.agentFor(host).call('vm.move-disk', { uuid, userdevice: Number(vbd.userdevice), target, stallMs })).catch((err: Error) => {
    throw noSpace(err) ? srFull(svc, move.sr, Number(vdi.physical_utilisation)) : err
  })
}

export const noSpace = (err: Error) => /No space left on device/i.test(err.message)

/**
 * A disk moved to SR `sr` on its own: mirrored by the QEMU of the VM `running` on its host, else
 * copied; then recorded, and the old VDIs destroyed. Returns the new VDI.
 */
export async function moveDisk(ctx: CallContext, vdiRef: string, srRef: string, running: { host: string; uuid: string; stallMs: number } | undefined): Promise<string> {
  const move = await withUndo('disk move', async (undo) => {
    const move = await prepareMove(ctx, vdiRef, srRef, running !== undefined, undo)
    if (running) await mirrorLive(ctx.svc, move, running.host, running.uuid, running.stallMs)
    await ctx.svc.db.transact((tx) => completeMove(tx, move))
    return move
  })
  await destroyMovedFrom(ctx.svc, move)
  return move.target
}

/** The target SR filled up during a copy. */
export function srFull(svc: Services, srRef: string, needed: number): XapiError {
  const sr = svc.db.record('SR', srRef)
  return new XapiError('SR_FULL', [String(needed), String(Math.max(0, Number(sr.physical_size) - Number(sr.physical_utilisation)))])
}
