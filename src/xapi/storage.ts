// SR and VDI messages: records here, the work (files, qemu-img) in the host agent that has
// the SR plugged.
import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { constructorArgs, NULL_REF } from '../idl/index.js'
import { asXapiError, XapiError } from '../idl/errors.js'
import type { VDIRecord, VMRecord } from '../idl/records.js'
import type { Tx } from '../db/database.js'
import type { FreezeRequest, SrLocation, SrProbe, SrUsage, VdiImage, VdiRef } from '../agent/contract.js'
import { now, register, type CallContext, type Services } from './context.js'
import { PREFIX } from '../db/etcd.js'
import { srRootKey } from './pool-master.js'
import { hostSeeingSrs, srHost, vmHost } from './forwarding.js'
import { checkProbeConfig, NETWORK_SR_TYPES, srWhere } from './sr-config.js'
import { withSrLock, withSrLocks } from './sr-locks.js'
import { createTask, finishTask } from './task.js'
import { withUndo, type UndoStack } from '../lib/undo.js'

/**
 * Where an SR of type `type` is, from a PBD's device_config, as the driver takes it: network SRs
 * with the device_config, their credentials, a `<name>_secret` key (a secret's uuid, as xapi's
 * SM drivers take passwords) as the secret's value under `<name>`.
 */
function srLocation(svc: Services, sr: { type: string; uuid: string }, config: Readonly<Record<string, string>>): SrLocation {
  const where: SrLocation = { type: sr.type, path: srWhere(sr.type, config, sr.uuid), ...(config.device ? { device: config.device } : {}) }
  return NETWORK_SR_TYPES.has(sr.type) ? { ...where, config: withSecrets(svc, config) } : where
}

/** A device_config with each `<name>_secret` (a secret's uuid) also as `<name>`, the secret's value. */
function withSecrets(svc: Services, config: Readonly<Record<string, string>>): Record<string, string> {
  const resolved: Record<string, string> = { ...config }
  for (const [key, uuid] of Object.entries(config)) {
    if (!key.endsWith('_secret')) continue
    const ref = svc.db.replica.refByUuid('secret', uuid)
    if (!ref) throw new XapiError('UUID_INVALID', ['secret', uuid])
    resolved[key.slice(0, -'_secret'.length)] = svc.db.record('secret', ref).value
  }
  return resolved
}

/** An SR plugged on `host` as its driver there names it, from its PBD there. */
export function attachedSr(svc: Services, srRef: string, host: string): SrLocation {
  const sr = svc.db.record('SR', srRef)
  for (const pbd of sr.PBDs) {
    const rec = svc.db.record('PBD', pbd)
    if (rec.host === host) {
      if (!rec.currently_attached) throw new XapiError('SR_NOT_ATTACHED', [srRef])
      return srLocation(svc, sr, rec.device_config)
    }
  }
  throw new XapiError('SR_HAS_NO_PBDS', [srRef])
}

/** The directory (or URL) of an SR on `host`, from its PBD there. */
export const srPath = (svc: Services, srRef: string, host: string): string => attachedSr(svc, srRef, host).path

/** A VDI's image on `host`, as the agent there finds its file. */
export function imageOf(svc: Services, vdiRef: string, host: string): VdiRef {
  const vdi = svc.db.record('VDI', vdiRef)
  const format = vdi.sm_config['image-format'] === 'raw' ? 'raw' : 'qcow2'
  return { sr: attachedSr(svc, vdi.SR, host), location: vdi.location, format }
}

/** Refreshes an SR's size figures from a host that has it plugged. */
export async function refreshSrUsage(svc: Services, srRef: string): Promise<void> {
  const host = srHost(svc, srRef)
  await recordSrUsage(svc, srRef, await svc.agentFor(host).call('sr.usage', attachedSr(svc, srRef, host)))
}

/** Writes an SR's size figures as its host reported them. */
async function recordSrUsage(svc: Services, srRef: string, usage: SrUsage): Promise<void> {
  await svc.db.transact((tx) => {
    const sr = tx.get('SR', srRef)
    const allocation = sr.VDIs.reduce((sum, v) => sum + Number(tx.exists('VDI', v) ? tx.get('VDI', v).virtual_size : 0), 0)
    tx.update('SR', srRef, { physical_size: usage.physicalSize, physical_utilisation: usage.physicalUtilisation, virtual_allocation: allocation })
  })
}


const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Records a VDI the agent has just made: its uuid is its image's name where that is a uuid (file SRs; ISO files keep their names). */
export async function recordVdi(svc: Services, srRef: string, image: VdiImage, fields: Record<string, unknown>, usage?: SrUsage): Promise<string> {
  const ref = await svc.db.transact((tx) => tx.create('VDI', vdiFields(srRef, image, fields)))
  await (usage ? recordSrUsage(svc, srRef, usage) : refreshSrUsage(svc, srRef)).catch(() => undefined)
  return ref
}

/** The record of a VDI whose image the agent has just made, for tx.create. */
export function vdiFields(srRef: string, image: VdiImage, fields: Record<string, unknown>): Record<string, unknown> {
  return {
    type: 'user',
    uuid: UUID.test(image.location) ? image.location : randomUUID(),
    ...fields,
    SR: srRef,
    location: image.location,
    virtual_size: image.virtualSize,
    physical_utilisation: image.physicalUtilisation,
    ...(image.format === 'raw' ? { sm_config: { ...((fields.sm_config as Record<string, string> | undefined) ?? {}), 'image-format': 'raw' } } : {}),
    managed: true,
    allowed_operations: ['clone', 'copy', 'destroy', 'resize', 'snapshot', 'update'],
  }
}

export async function createVdi(svc: Services, args: Record<string, unknown>): Promise<string> {
  const srRef = String(args.SR ?? NULL_REF) === NULL_REF ? svc.db.record('pool', svc.db.first('pool')).default_SR : String(args.SR)
  if (srRef === NULL_REF) throw new XapiError('DEFAULT_SR_NOT_FOUND', [NULL_REF])
  svc.db.record('SR', srRef)
  const size = Number(args.virtual_size ?? 0)
  if (!(size > 0)) throw new XapiError('INVALID_VALUE', ['virtual_size', String(args.virtual_size)])
  const fields = constructorArgs('VDI', args)
  // The new file and its record appear together for the SR's garbage collection, which deletes
  // any image no record names.
  return withSrLock(srRef, async () => {
    const host = srHost(svc, srRef)
    const image = await svc.agentFor(host).call('vdi.create', { ...attachedSr(svc, srRef, host), size, nameLabel: String(args.name_label ?? '') })
    return recordVdi(svc, srRef, image, fields)
  })
}

function assertNotInUse(tx: Tx, vdiRef: string, vdi: Readonly<VDIRecord>, operation: string): void {
  for (const vbd of vdi.VBDs) {
    const rec = tx.get('VBD', vbd)
    const vm = tx.get('VM', rec.VM)
    if (rec.currently_attached || vm.power_state !== 'Halted') throw new XapiError('VDI_IN_USE', [vdiRef, operation])
  }
}

/** VDI.destroy; `fresh`: a VDI just made that nothing builds on yet (an undo), whose image goes at once. */
export async function destroyVdi(svc: Services, vdiRef: string, fresh = false): Promise<void> {
  const vdi = svc.db.record('VDI', vdiRef)
  const format = vdiFormat(svc, vdiRef)
  const forget = () =>
    svc.db.transact((tx) => {
      assertNotInUse(tx, vdiRef, tx.get('VDI', vdiRef), 'destroy')
      for (const vbd of tx.get('VDI', vdiRef).VBDs) tx.delete('VBD', vbd)
      tx.delete('VDI', vdiRef)
    })
  // A raw image goes at once, before its record (a driver may refuse: an RBD image with
  // snapshots); a qcow2 image with the garbage collection, as snapshots or clones may build on it.
  if (format === 'raw' || fresh) {
    await svc.db.transact((tx) => assertNotInUse(tx, vdiRef, tx.get('VDI', vdiRef), 'destroy'))
    const host = srHost(svc, vdi.SR)
    await svc.agentFor(host).call('vdi.destroy', { ...attachedSr(svc, vdi.SR, host), location: vdi.location })
    await forget()
  } else {
    await forget()
    void collectSrGarbage(svc, vdi.SR)
  }
  await refreshSrUsage(svc, vdi.SR).catch(() => undefined)
}

/** The running VM whose disk a VDI is, if any (snapshots of it are taken live, merges into it run in its QEMU). */
function runningUser(svc: Services, vdiRef: string): { vm: Readonly<VMRecord>; userdevice: number } | undefined {
  for (const vbd of svc.db.record('VDI', vdiRef).VBDs) {
    const rec = svc.db.record('VBD', vbd)
    const vm = svc.db.record('VM', rec.VM)
    if (rec.currently_attached && (vm.power_state === 'Running' || vm.power_state === 'Paused')) return { vm, userdevice: Number(rec.userdevice) }
  }
  return undefined
}

/** The running VM disk a VDI is, as the agent names it. */
function liveDisk(svc: Services, vdiRef: string): { uuid: string; userdevice: number } | undefined {
  const user = runningUser(svc, vdiRef)
  return user && { uuid: user.vm.uuid, userdevice: user.userdevice }
}

/** Where work on these VDIs runs: the host of a running VM using one (its QEMU holds the disk), else a host seeing all their SRs. */
export function disksHost(svc: Services, vdiRefs: string[]): string {
  for (const vdi of vdiRefs) {
    const user = runningUser(svc, vdi)
    if (user) return vmHost(svc, user.vm)
  }
  return hostSeeingSrs(svc, vdiRefs.map((v) => svc.db.record('VDI', v).SR))
}

/** How a VDI freezes on `host`, from its records: a snapshot's image is immutable already; a running VM's disk freezes live. */
function freezeRequest(svc: Services, vdiRef: string, clone: boolean, host: string): FreezeRequest {
  const vdi = svc.db.record('VDI', vdiRef)
  const live = liveDisk(svc, vdiRef)
  return { sr: attachedSr(svc, vdi.SR, host), location: vdi.location, next: randomUUID(), ...(vdi.is_a_snapshot ? { immutable: true } : live ? { live } : {}), ...(clone ? { clone: randomUUID() } : {}) }
}

/**
 * Makes the VDIs' current content immutable in one agent call, each VDI going on in a new
 * overlay, and returns the new VDIs' images (the frozen ones, or thin clones on them) with their
 * SRs' figures. Where a VDI went on is recorded also when a later one fails, before the failure
 * is raised. The caller holds the SRs' locks.
 */
export async function freezeVdis(svc: Services, vdiRefs: string[], clone: boolean): Promise<{ image: VdiImage; usage?: SrUsage }[]> {
  const host = disksHost(svc, vdiRefs)
  const agent = svc.agentFor(host)
  const requests = vdiRefs.map((v) => freezeRequest(svc, v, clone, host))
  const outcome = await agent.call('vdi.freeze', { disks: requests })
  const moved = outcome.done.flatMap((d, i) => (d.location !== requests[i]!.location ? [[vdiRefs[i]!, d.location] as const] : []))
  if (moved.length) await svc.db.transact((tx) => moved.forEach(([vdi, location]) => tx.update('VDI', vdi, { location })))
  if (outcome.failure) {
    // The frozen images are hidden bases now: the collection merges them back.
    for (const sr of new Set(outcome.done.map((_, i) => svc.db.record('VDI', vdiRefs[i]!).SR))) void collectSrGarbage(svc, sr)
    throw agent.failure(outcome.failure)
  }
  return outcome.done.map((d, i) => ({ image: d.image!, usage: outcome.usage[requests[i]!.sr.path] }))
}


/** The SRs a VM's disks live in. */
export function srsOfVm(svc: Services, vm: Readonly<VMRecord>): string[] {
  return vm.VBDs.flatMap((vbd) => {
    const vdi = svc.db.record('VBD', vbd).VDI
    return vdi === NULL_REF ? [] : [svc.db.record('VDI', vdi).SR]
  })
}

/**
 * VDI.snapshot of each VDI: read-only point-in-time images, in time independent of the disks'
 * sizes, all in one agent call (crash-consistent when running). Each snapshot recorded goes on
 * `undo`, so that a later failure leaves none.
 */
export async function snapshotVdis(svc: Services, vdiRefs: string[], undo: UndoStack): Promise<string[]> {
  const sources = vdiRefs.map((ref) => svc.db.record('VDI', ref))
  return withSrLocks(sources.map((vdi) => vdi.SR), async () => {
    const made = await freezeVdis(svc, vdiRefs, false)
    const snapshots: string[] = []
    for (const [i, vdi] of sources.entries()) {
      const fields = { ...constructorArgs('VDI', vdi), uuid: randomUUID(), is_a_snapshot: true, snapshot_of: vdiRefs[i]!, snapshot_time: now() }
      snapshots.push(await undo.step(`the snapshot of VDI ${vdiRefs[i]}`, () => recordVdi(svc, vdi.SR, made[i]!.image, fields, made[i]!.usage), (snapshot) => destroyVdi(svc, snapshot)))
    }
    return snapshots
  })
}

/** VDI.clone: a writable thin copy, an overlay on an immutable image of the source. */
export async function cloneVdi(svc: Services, vdiRef: string, extra: Record<string, unknown> = {}): Promise<string> {
  const vdi = svc.db.record('VDI', vdiRef)
  const srRef = vdi.SR
  return withSrLock(srRef, async () => {
    const [made] = await freezeVdis(svc, [vdiRef], true)
    return recordVdi(svc, srRef, made!.image, { ...constructorArgs('VDI', vdi), ...extra }, made!.usage)
  })
}

/** SRs whose last collection left merges until exports reading their images are done. */
const deferredCollections = new Set<string>()

/** After an export: the collections that waited for exports run again. */
export function exportDone(svc: Services): void {
  for (const sr of [...deferredCollections]) void collectSrGarbage(svc, sr)
}

/** A collection queued but not started yet, per SR: later requests join it. */
const queuedCollections = new Map<string, Promise<void>>()

/**
 * Where an SR's collection runs: merges into a running VM's disk run in that VM's QEMU, so on its
 * host; with no disk in use, where the SR is plugged. Undefined while VMs on several hosts use
 * the SR's disks: no one host can make all the merges, and the collection waits for a VM to stop.
 */
function gcHost(svc: Services, srRef: string): string | undefined {
  const users = new Set(svc.db.record('SR', srRef).VDIs.flatMap((v) => {
    const user = runningUser(svc, v)
    return user ? [vmHost(svc, user.vm)] : []
  }))
  if (users.size > 1) return undefined
  return [...users][0] ?? srHost(svc, srRef)
}

/** Normalises an SR's image tree in the background, as a task; returns when a run that started after this call is done. */
export function collectSrGarbage(svc: Services, srRef: string): Promise<void> {
  const queued = queuedCollections.get(srRef)
  if (queued) return queued
  const run = withSrLock(srRef, async () => {
    queuedCollections.delete(srRef)
    // gone meanwhile (destroyed or forgotten while the run waited for the SR's lock)
    const sr = svc.db.tryRecord('SR', srRef)
    // An introduced SR's images have no VDI records until its first scan: collected, they would all go.
    if (!sr || sr.type === 'iso' || svc.db.raw(unscannedKey(srRef))) return
    const task = await createTask(svc, `SR.gc ${sr.name_label}`, 'Removes images nothing needs and merges chain links')
    try {
      const host = gcHost(svc, srRef)
      if (host === undefined) return await finishTask(svc, task, { status: 'success', resultXml: '' })
      const vdis = sr.VDIs.map((v) => svc.db.record('VDI', v))
      const live: Record<string, { uuid: string; userdevice: number }> = {}
      for (const v of sr.VDIs) {
        const disk = liveDisk(svc, v)
        if (disk) live[svc.db.record('VDI', v).location] = disk
      }
      const { deferred } = await svc.agentFor(host).call('sr.gc', { ...attachedSr(svc, srRef, host), referenced: vdis.map((v) => v.location), live })
      if (deferred) deferredCollections.add(srRef)
      else deferredCollections.delete(srRef)
      await finishTask(svc, task, { status: 'success', resultXml: '' })
      await refreshSrUsage(svc, srRef).catch(() => undefined)
    } catch (err) {
      console.error(`garbage collection of SR ${sr.uuid}: ${(err as Error).message}`)
      await finishTask(svc, task, { status: 'failure', errorInfo: asXapiError(err).description })
    }
  }).catch((err: Error) => console.error(`garbage collection of SR ${srRef}: ${err.message}`)) // a background run must not bring the daemon down
  queuedCollections.set(srRef, run)
  return run
}

/**
 * A full, independent copy, to any SR: made on a host that sees both SRs, else (two hosts' local
 * SRs) streamed from the host that has the disk into a new image on the host that has the SR,
 * through this host, as xapi's VDI.copy falls back to a host seeing the source only.
 */
export async function copyVdi(svc: Services, vdiRef: string, srRef: string, signal?: AbortSignal): Promise<string> {
  const vdi = svc.db.record('VDI', vdiRef)
  // As xapi's VM.copy: an SR reference that is not valid (NULL, '') means the disk's own SR.
  const target = svc.db.tryRecord('SR', srRef) ? srRef : vdi.SR
  const fields = constructorArgs('VDI', vdi)
  // As in createVdi: no collection of the target SR between the copy's first byte and its record.
  return withSrLock(target, async () => {
    const image = await copyImage(svc, vdiRef, target, signal)
    return recordVdi(svc, target, image, { ...fields, sm_config: {} })
  })
}

/** A full copy of a VDI's image in SR `target`, not recorded yet (the caller holds `target`'s lock and records it, or destroys it). */
export async function copyImage(svc: Services, vdiRef: string, target: string, signal?: AbortSignal): Promise<VdiImage> {
  const vdi = svc.db.record('VDI', vdiRef)
  let host: string | undefined
  try {
    host = hostSeeingSrs(svc, [vdi.SR, target])
  } catch (err) {
    if (!(err instanceof XapiError && err.code === 'NO_HOSTS_AVAILABLE')) throw err
  }
  if (host !== undefined) return svc.agentFor(host).call('vdi.copy', { ...attachedSr(svc, target, host), source: imageOf(svc, vdiRef, host), location: randomUUID() })
  const from = disksHost(svc, [vdiRef])
  const to = srHost(svc, target)
  return withUndo('VDI.copy between hosts', async (undo) => {
    const dest = attachedSr(svc, target, to)
    const image = await undo.step(
      `the new image on ${to}`,
      () => svc.agentFor(to).call('vdi.create', { ...dest, size: Number(vdi.virtual_size), nameLabel: vdi.name_label }),
      (made) => svc.agentFor(to).call('vdi.destroy', { ...dest, location: made.location }),
    )
    const format = imageOf(svc, vdiRef, from).format === 'raw' ? 'raw' : 'qcow2'
    const source = await withSrLocks([vdi.SR], () => svc.agentFor(from).stream('vdi.export', { sr: srPath(svc, vdi.SR, from), location: vdi.location, format }))
    // The length the export announces lets the import tell a cut stream from a complete one.
    const length = Number(source.headers['content-length'])
    // task.cancel drops both streams: the target's import fails on the cut and the undo removes its image.
    let answer: Readable | undefined
    const cancel = () => [source, answer].forEach((s) => s?.destroy(new XapiError('TASK_CANCELLED', [])))
    signal?.addEventListener('abort', cancel, { once: true })
    try {
      answer = await svc.agentFor(to).stream('vdi.import', { sr: dest.path, location: image.location, format, expected: Number.isSafeInteger(length) ? length : null }, source)
      await finished(answer.resume())
    } finally {
      signal?.removeEventListener('abort', cancel)
    }
    if (signal?.aborted) throw new XapiError('TASK_CANCELLED', [])
    return svc.agentFor(to).call('vdi.image', { ...dest, location: image.location })
  })
}

register('VDI.create', (ctx, [args]) => createVdi(ctx.svc, args))
register('VDI.destroy', (ctx, [ref]) => destroyVdi(ctx.svc, ref))
register('VDI.clone', (ctx, [ref]) => cloneVdi(ctx.svc, ref))
register('VDI.snapshot', async (ctx, [ref]) => (await withUndo('VDI.snapshot', (undo) => snapshotVdis(ctx.svc, [ref], undo)))[0])
register('VDI.copy', (ctx, [ref, sr]) => copyVdi(ctx.svc, ref, sr, ctx.signal))

/** VDI.resize grows a disk, offline with qemu-img or online in the QEMU of the running VM that uses it. */
register('VDI.resize', async (ctx, [ref, size]) => {
  const vdi = ctx.svc.db.record('VDI', ref)
  if (vdi.is_a_snapshot) throw new XapiError('VDI_READONLY', [ref])
  if (Number(size) < Number(vdi.virtual_size)) throw new XapiError('VDI_TOO_SMALL', [ref, String(vdi.virtual_size)])
  const live = liveDisk(ctx.svc, ref)
  const host = disksHost(ctx.svc, [ref])
  const agent = ctx.svc.agentFor(host)
  if (live) await agent.call('vm.resize-disk', { ...live, size: Number(size) })
  else {
    await ctx.svc.db.transact((tx) => assertNotInUse(tx, ref, tx.get('VDI', ref), 'resize'))
    await agent.call('vdi.resize', { ...attachedSr(ctx.svc, vdi.SR, host), location: vdi.location, size: Number(size) })
  }
  const image = await agent.call('vdi.image', { ...attachedSr(ctx.svc, vdi.SR, host), location: vdi.location })
  await ctx.svc.db.transact((tx) => tx.update('VDI', ref, { virtual_size: image.virtualSize, physical_utilisation: image.physicalUtilisation }))
})

for (const field of ['name_label', 'name_description', 'read_only', 'sharable', 'on_boot', 'allow_caching'] as const) {
  register(`VDI.set_${field}`, (ctx, [ref, value]) => ctx.svc.db.transact((tx) => tx.update('VDI', ref, { [field]: value })))
}

/** Marks an SR introduced and not scanned yet (a raw key, no field of the SR's). */
const unscannedKey = (srRef: string) => `${PREFIX}sr-unscanned/${srRef}`

/**
 * SR.scan: a collection (so hidden bases waiting to go are not taken for VDIs), then VDI records
 * for the images no record names and nothing builds on. An introduced SR is not collected until
 * its first scan has recorded its images (collectSrGarbage), so that scan records them first.
 */
async function scanSr(ctx: CallContext, srRef: string): Promise<void> {
  if (isIsoSr(ctx.svc, srRef)) return scanIsoSr(ctx.svc, srRef)
  await collectSrGarbage(ctx.svc, srRef)
  const host = srHost(ctx.svc, srRef)
  const images = await ctx.svc.agentFor(host).call('sr.scan', attachedSr(ctx.svc, srRef, host))
  const known = new Set(ctx.svc.db.record('SR', srRef).VDIs.map((v) => ctx.svc.db.record('VDI', v).location))
  for (const image of images) {
    if (!known.has(image.location)) await recordVdi(ctx.svc, srRef, image, { name_label: '', type: 'user' })
  }
  if (ctx.svc.db.raw(unscannedKey(srRef))) await ctx.svc.db.transact((tx) => tx.writeRaw(unscannedKey(srRef), null))
  await refreshSrUsage(ctx.svc, srRef)
}

register('SR.scan', (ctx, [ref]) => scanSr(ctx, ref))
register('SR.update', (ctx, [ref]) => refreshSrUsage(ctx.svc, ref))
register('SR.get_supported_types', (ctx) => [...srTypes(ctx.svc)])
register('SR.set_name_label', (ctx, [ref, value]) => ctx.svc.db.transact((tx) => tx.update('SR', ref, { name_label: value })))
register('SR.set_name_description', (ctx, [ref, value]) => ctx.svc.db.transact((tx) => tx.update('SR', ref, { name_description: value })))

/** The first start's local SR: a directory inside the data dir, plugged on this host (the daemon's own start-of-day work). */
export async function ensureLocalSr(svc: Services): Promise<string> {
  const pool = svc.db.first('pool')
  const existing = svc.db.record('pool', pool).default_SR
  if (existing !== NULL_REF && svc.db.tryRecord('SR', existing)) return existing
  const uuid = randomUUID()
  const path = `${svc.srRoot}/${uuid}`
  await svc.agentFor(svc.hostRef).call('sr.attach', { type: 'ext', path })
  const sr = await svc.db.transact((tx) => {
    const ref = tx.create('SR', { uuid, name_label: 'Local storage', name_description: `Local storage in ${svc.srRoot}`, type: 'ext', content_type: 'user', shared: false, other_config: { 'i18n-key': 'local-storage' }, sm_config: { devserial: '' } })
    tx.create('PBD', { host: svc.hostRef, SR: ref, device_config: { path }, currently_attached: true })
    tx.update('pool', pool, { default_SR: ref, suspend_image_SR: ref, crash_dump_SR: ref })
    tx.update('host', svc.hostRef, { suspend_image_sr: ref, crash_dump_sr: ref })
    return ref
  })
  await refreshSrUsage(svc, sr)
  return sr
}

/** SM records for the SR drivers this host's agent has, with the capabilities each declares. */
export async function ensureStorageManagers(svc: Services): Promise<void> {
  const have = srTypes(svc)
  const drivers = await svc.agentFor(svc.hostRef).call('sr.drivers')
  await svc.db.transact((tx) => {
    for (const d of drivers)
      if (!have.has(d.type))
        tx.create('SM', { type: d.type, name_label: d.name, name_description: d.name, capabilities: [...d.capabilities], vendor: 'Flotilla', copyright: '', version: '1.0', required_api_version: '1.0', configuration: {}, features: Object.fromEntries(d.capabilities.map((c) => [c, 1])), driver_filename: '', other_config: {}, required_cluster_stack: [] })
  })
}

/** The SR types there is a driver for: those of the SM records. */
const srTypes = (svc: Services) => new Set([...svc.db.rows('SM')].map((r) => r.stored.type))

/**
 * Where a VM running on `host` suspends: as xapi, the VM's suspend_SR, else the pool's, else the
 * host's; beyond xapi, the first of them (or the default SR) that `host` has plugged, so that a
 * pool whose suspend SR is the master's local SR still suspends VMs on its other hosts. Not a
 * network SR: QEMU writes the state to a file of the host.
 */
export function suspendSr(svc: Services, vm: Readonly<VMRecord>, host: string): string {
  const pool = svc.db.record('pool', svc.db.first('pool'))
  const candidates = [vm.suspend_SR, pool.suspend_image_SR, svc.db.record('host', host).suspend_image_sr, pool.default_SR]
  const plugged = (sr: string) => sr !== NULL_REF && svc.db.tryRecord('SR', sr) && !isIsoSr(svc, sr) && !NETWORK_SR_TYPES.has(svc.db.record('SR', sr).type) &&
    svc.db.record('SR', sr).PBDs.some((pbd) => svc.db.record('PBD', pbd).host === host && svc.db.record('PBD', pbd).currently_attached)
  const sr = candidates.find(plugged)
  if (!sr) throw new XapiError('VM_NO_SUSPEND_SR', [vm.uuid])
  return sr
}

/** A suspend image (memory and device state) for a VM, in its suspend SR: a raw file the agent of `host` fills. */
export async function createSuspendVdi(svc: Services, vm: Readonly<VMRecord>, host: string): Promise<{ ref: string; path: string }> {
  const srRef = suspendSr(svc, vm, host)
  return createSuspendImage(svc, srRef, Number(vm.memory_static_max) + 64 * 2 ** 20, { name_label: `Suspend image of ${vm.name_label}` }, host)
}

/** A VDI of type suspend in `srRef`: room for `size` bytes reserved by `host`, its path there returned, the raw file not made yet. */
export async function createSuspendImage(svc: Services, srRef: string, size: number, fields: Record<string, unknown>, host: string): Promise<{ ref: string; path: string }> {
  const location = randomUUID()
  const path = await svc.agentFor(host).call('vdi.reserve-raw', { path: srPath(svc, srRef, host), location, size })
  const ref = await svc.db.transact((tx) =>
    tx.create('VDI', { other_config: {}, ...fields, uuid: location, location, SR: srRef, type: 'suspend', virtual_size: size, managed: true, sm_config: { 'image-format': 'raw' } }),
  )
  return { ref, path }
}

export const isIsoSr = (svc: Services, srRef: string) => svc.db.record('SR', srRef).type === 'iso'

/** The image format of a VDI's file as QEMU must open it. */
export function vdiFormat(svc: Services, vdiRef: string): 'qcow2' | 'raw' {
  const vdi = svc.db.record('VDI', vdiRef)
  return isIsoSr(svc, vdi.SR) || vdi.sm_config['image-format'] === 'raw' ? 'raw' : 'qcow2'
}

/** Where a PBD's SR is on the PBD's host, plugged or not: its directory and, for device SRs, the device. */
function placement(svc: Services, srRef: string, pbd: string): SrLocation {
  return srLocation(svc, svc.db.record('SR', srRef), svc.db.record('PBD', pbd).device_config)
}

/** Where SRs go by default on a host: its own root, as it recorded it at its start. */
const srRootOf = (svc: Services, host: string) => (host === svc.hostRef ? svc.srRoot : (svc.db.raw(srRootKey(host))?.value ?? svc.srRoot))

register('SR.create', async (ctx, [host, deviceConfig, , name, description, type, contentType, shared, smConfig]) => {
  const svc = ctx.svc
  if (!srTypes(ctx.svc).has(type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type])
  if (NETWORK_SR_TYPES.has(type)) return createNetworkSr(svc, { host, deviceConfig, name, description, type, contentType, shared, smConfig })
  const agent = svc.agentFor(host)
  const config = { ...deviceConfig }
  const uuid = randomUUID()
  const root = srRootOf(svc, host)
  if (type === 'iso' && !config.location) config.path = `${root}/${uuid}`
  else if (type === 'iso') config.path = config.location!
  else if (type === 'zfs' && !config.location) throw new XapiError('SR_BACKEND_FAILURE_94', ['', 'The request is missing the location parameter', ''])
  else if (type === 'zfs') config.path = config.location!
  else if (!config.device && !config.path) throw new XapiError('SR_BACKEND_FAILURE', ['1', '', 'device_config needs device (a block device to format) or path (a directory)'])
  config.path ??= `${root}/${uuid}`
  const where: SrLocation = { type: String(type), path: config.path, ...(config.device ? { device: config.device } : {}) }
  return withUndo('SR.create', async (undo) => {
    // Undone, a directory of ours goes; one the caller named stays (it may hold their files), unmounted.
    const ours = config.path === `${root}/${uuid}`
    await undo.step(`the SR at ${config.path}`, () => agent.call('sr.make', where), () => agent.call(ours ? 'sr.remove' : 'sr.detach', where))
    const sr = await undo.step(
      `the SR and PBD records of ${uuid}`,
      () =>
        svc.db.transact((tx) => {
          const ref = tx.create('SR', { uuid, name_label: name, name_description: description, type, content_type: type === 'iso' ? 'iso' : contentType || 'user', shared: false, sm_config: smConfig ?? {}, other_config: {} })
          tx.create('PBD', { host, SR: ref, device_config: config, currently_attached: true })
          return ref
        }),
      async (ref) => {
        await svc.db.transact((tx) => {
          for (const pbd of tx.get('SR', ref).PBDs) tx.update('PBD', pbd, { currently_attached: false })
        })
        await forgetSr(svc, ref)
      },
    )
    if (type === 'iso') await scanIsoSr(svc, sr)
    await refreshSrUsage(svc, sr)
    return sr
  })
})

/**
 * SR.create of an SR on network storage: made from `host`, then, when shared, a PBD for every
 * host of the pool, each plugged by its host's agent (xapi plugs them all, and fails the create
 * if one host cannot reach the storage). Undone in full on any failure; the storage made goes.
 */
async function createNetworkSr(
  svc: Services,
  args: { host: string; deviceConfig: Record<string, string>; name: string; description: string; type: string; contentType: string; shared: boolean; smConfig: Record<string, string> },
): Promise<string> {
  const uuid = randomUUID()
  const config = { ...args.deviceConfig }
  const where = srLocation(svc, { type: args.type, uuid }, config)
  const hosts = args.shared ? [args.host, ...svc.db.refs('host').filter((h) => h !== args.host)] : [args.host]
  return withUndo('SR.create', async (undo) => {
    await undo.step(`the SR at ${where.path}`, () => svc.agentFor(args.host).call('sr.make', where), () => svc.agentFor(args.host).call('sr.remove', where))
    for (const host of hosts.slice(1)) await undo.step(`the SR plugged on ${host}`, () => svc.agentFor(host).call('sr.attach', where), () => svc.agentFor(host).call('sr.detach', where))
    const sr = await undo.step(
      `the SR and PBD records of ${uuid}`,
      () =>
        svc.db.transact((tx) => {
          const ref = tx.create('SR', { uuid, name_label: args.name, name_description: args.description, type: args.type, content_type: args.contentType || 'user', shared: args.shared, sm_config: args.smConfig ?? {}, other_config: {} })
          for (const host of hosts) tx.create('PBD', { host, SR: ref, device_config: config, currently_attached: true })
          return ref
        }),
      async (ref) => {
        await svc.db.transact((tx) => {
          for (const pbd of tx.get('SR', ref).PBDs) tx.update('PBD', pbd, { currently_attached: false })
        })
        await forgetSr(svc, ref)
      },
    )
    await refreshSrUsage(svc, sr)
    return sr
  })
}

/**
 * A host's start of day (also its first after a pool join): a PBD for each shared SR on network
 * storage that it has none for, like the others' and plugged when its agent reaches the storage
 * (left unplugged, with the reason logged, when not), as xapi's pool join gives a host the
 * pool's shared SRs.
 */
export async function plugSharedSrs(svc: Services): Promise<void> {
  for (const { ref, stored: sr } of [...svc.db.rows('SR')]) {
    if (!sr.shared || !NETWORK_SR_TYPES.has(sr.type)) continue
    const pbds = svc.db.record('SR', ref).PBDs.map((p) => svc.db.record('PBD', p))
    if (pbds.length === 0 || pbds.some((p) => p.host === svc.hostRef)) continue
    const config = pbds[0]!.device_config
    const attached = await svc
      .agentFor(svc.hostRef)
      .call('sr.attach', srLocation(svc, sr, config))
      .then(() => true)
      .catch((err: Error) => (console.error(`plugging the shared SR ${sr.uuid} on this host: ${err.message}`), false))
    await svc.db.transact((tx) => {
      if (!tx.get('host', svc.hostRef).PBDs.some((p) => tx.exists('PBD', p) && tx.get('PBD', p).SR === ref)) tx.create('PBD', { host: svc.hostRef, SR: ref, device_config: config, currently_attached: attached })
    })
  }
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/**
 * SR.probe's answer for what a driver found, in xapi's XML: the SRs found. An NFS server's exports
 * are xapi's SR_BACKEND_FAILURE_101 (the serverpath is missing) with their XML as the driver's
 * output, which XO parses (nfs.py scan_exports); a Ceph cluster's pools, which xapi has no driver
 * for, come in the same shape as a plain answer.
 */
export function probeAnswer(config: Readonly<Record<string, string>>, found: SrProbe): string {
  const item = (tag: string, fields: [string, string][]) => `\t<${tag}>\n${fields.map(([k, v]) => `\t\t<${k}>${escapeXml(v)}</${k}>\n`).join('')}\t</${tag}>\n`
  if (found.exports) {
    const items = found.exports.map((path) => item('Export', [['Target', config.server ?? ''], ['Path', path], ['Accesslist', '*']]))
    throw new XapiError('SR_BACKEND_FAILURE_101', ['', 'The request is missing the serverpath parameter', `<?xml version="1.0" ?>\n<nfs-exports>\n${items.join('')}</nfs-exports>\n`])
  }
  if (found.pools) return `<?xml version="1.0" ?>\n<ceph-pools>\n${found.pools.map((p) => item('Pool', [['Name', p]])).join('')}</ceph-pools>\n`
  return `<?xml version="1.0" ?>\n<SRlist>\n${(found.srs ?? []).map((uuid) => item('SR', [['UUID', uuid]])).join('')}</SRlist>\n`
}

/** What the SR type's driver on `host` finds with a device_config, checked as SR.create would check it. */
async function probe(ctx: CallContext, host: string, deviceConfig: Record<string, string>, type: string): Promise<SrProbe> {
  if (!srTypes(ctx.svc).has(type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type])
  checkProbeConfig(type, deviceConfig)
  return ctx.svc.agentFor(host).call('sr.probe', { type, config: withSecrets(ctx.svc, deviceConfig) })
}

register('SR.probe', async (ctx, [host, deviceConfig, type]) => probeAnswer(deviceConfig, await probe(ctx, host, deviceConfig, type)))

/** SR.probe_ext (xapi's structured probe): a probe_result per SR found, or per export or pool to probe further. */
register('SR.probe_ext', async (ctx, [host, deviceConfig, type]) => {
  const found = await probe(ctx, host, deviceConfig, type)
  const further = (extra: Record<string, string>) => ({ configuration: { ...deviceConfig, ...extra }, complete: false, sr: null, extra_info: {} })
  if (found.exports) return found.exports.map((serverpath) => further({ serverpath }))
  if (found.pools) return found.pools.map((pool) => further({ pool }))
  return (found.srs ?? []).map((uuid) => ({ configuration: deviceConfig, complete: true, sr: { uuid, name_label: '', name_description: '', total_space: 0, free_space: 0, clustered: false, health: 'healthy' }, extra_info: {} }))
})

register('SR.introduce', (ctx, [uuid, name, description, type, contentType, shared, smConfig]) => {
  if (!srTypes(ctx.svc).has(type)) throw new XapiError('SR_UNKNOWN_DRIVER', [type])
  return ctx.svc.db.transact((tx) => {
    const ref = tx.create('SR', { uuid, name_label: name, name_description: description, type, content_type: contentType, shared, sm_config: smConfig, other_config: {} })
    tx.writeRaw(unscannedKey(ref), 'introduced')
    return ref
  })
})

register('PBD.plug', async (ctx, [ref]) => {
  const pbd = ctx.svc.db.record('PBD', ref)
  if (pbd.currently_attached) return
  await ctx.svc.agentFor(pbd.host).call('sr.attach', placement(ctx.svc, pbd.SR, ref))
  await ctx.svc.db.transact((tx) => tx.update('PBD', ref, { currently_attached: true }))
  await refreshSrUsage(ctx.svc, pbd.SR).catch(() => undefined)
})

register('PBD.unplug', async (ctx, [ref]) => {
  const pbd = ctx.svc.db.record('PBD', ref)
  if (!pbd.currently_attached) return
  const sr = pbd.SR
  for (const vdi of ctx.svc.db.record('SR', sr).VDIs)
    for (const vbd of ctx.svc.db.record('VDI', vdi).VBDs)
      if (ctx.svc.db.record('VM', ctx.svc.db.record('VBD', vbd).VM).power_state !== 'Halted') throw new XapiError('SR_DEVICE_IN_USE')
  await ctx.svc.agentFor(pbd.host).call('sr.detach', placement(ctx.svc, sr, ref))
  await ctx.svc.db.transact((tx) => tx.update('PBD', ref, { currently_attached: false }))
})

/** Forgets an SR's records (its data stays); its PBDs must be unplugged. */
async function forgetSr(svc: Services, ref: string): Promise<void> {
  await svc.db.transact((tx) => {
    const sr = tx.get('SR', ref)
    for (const pbd of sr.PBDs) if (tx.get('PBD', pbd).currently_attached) throw new XapiError('SR_HAS_PBD', [ref])
    for (const vdi of sr.VDIs) {
      for (const vbd of tx.get('VDI', vdi).VBDs) tx.delete('VBD', vbd)
      tx.delete('VDI', vdi)
    }
    for (const pbd of sr.PBDs) tx.delete('PBD', pbd)
    tx.delete('SR', ref)
    if (tx.readRaw(unscannedKey(ref)) !== undefined) tx.writeRaw(unscannedKey(ref), null)
    const pool = svc.db.first('pool')
    for (const field of ['default_SR', 'suspend_image_SR', 'crash_dump_SR'] as const)
      if (tx.get('pool', pool)[field] === ref) tx.update('pool', pool, { [field]: NULL_REF })
  })
}

register('SR.forget', (ctx, [ref]) => forgetSr(ctx.svc, ref))

register('SR.destroy', async (ctx, [ref]) => {
  const svc = ctx.svc
  const sr = svc.db.record('SR', ref)
  for (const vdi of sr.VDIs)
    for (const vbd of svc.db.record('VDI', vdi).VBDs)
      if (svc.db.record('VM', svc.db.record('VBD', vbd).VM).power_state !== 'Halted') throw new XapiError('SR_DEVICE_IN_USE')
  const host = srHost(svc, ref)
  const pbd = sr.PBDs.find((p) => svc.db.record('PBD', p).host === host)!
  // under the SR's lock: a collection the VDIs' destroys queued must not run in a directory going away
  await withSrLock(ref, async () => {
    await svc.agentFor(host).call('sr.remove', placement(svc, ref, pbd))
    await svc.db.transact((tx) => {
      for (const pbd of tx.get('SR', ref).PBDs) tx.update('PBD', pbd, { currently_attached: false })
    })
    await forgetSr(svc, ref)
  })
})

/** ISO libraries: every *.iso file in the directory is a read-only VDI named after it. */
async function scanIsoSr(svc: Services, srRef: string): Promise<void> {
  const host = srHost(svc, srRef)
  const images = await svc.agentFor(host).call('sr.scan', attachedSr(svc, srRef, host))
  const known = new Map(svc.db.record('SR', srRef).VDIs.map((v) => [svc.db.record('VDI', v).location, v]))
  await svc.db.transact((tx) => {
    for (const image of images) {
      const existing = known.get(image.location)
      if (existing) tx.update('VDI', existing, { virtual_size: image.virtualSize, physical_utilisation: image.physicalUtilisation })
      else tx.create('VDI', { SR: srRef, name_label: image.location, location: image.location, type: 'user', read_only: true, virtual_size: image.virtualSize, physical_utilisation: image.physicalUtilisation, managed: true, sm_config: {}, other_config: {} })
    }
    const present = new Set(images.map((i) => i.location))
    for (const [location, vdi] of known) if (!present.has(location) && tx.exists('VDI', vdi)) tx.delete('VDI', vdi)
  })
}

/** After an upload replaced a VDI's content: a qcow2 upload is standalone, so the image it built on may be garbage now. */
export async function vdiContentReplaced(svc: Services, vdiRef: string, format: 'raw' | 'qcow2'): Promise<void> {
  const sr = svc.db.record('VDI', vdiRef).SR
  if (format === 'qcow2') await collectSrGarbage(svc, sr)
  await refreshSrUsage(svc, sr).catch(() => undefined)
}

/** Collects every file SR plugged here: after a start (what a crash interrupted) and when a VM stops (merges that waited for it). */
export function collectAllGarbage(svc: Services): void {
  for (const row of [...svc.db.rows('SR')]) {
    const plugged = svc.db.record('SR', row.ref).PBDs.some((p) => {
      const pbd = svc.db.record('PBD', p)
      return pbd.host === svc.hostRef && pbd.currently_attached
    })
    if (plugged && row.stored.type !== 'iso') void collectSrGarbage(svc, row.ref)
  }
}

