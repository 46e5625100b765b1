// XVA records (reference/xapi.md §8): what an export puts in ova.xml, and the objects an import
// creates from it, each creation with its undo so that a failed import leaves nothing behind.
// The bytes (tar, chunks, compression) are the host agent's (agent/xva-disks.ts).
import { randomUUID } from 'node:crypto'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { EPOCH, getClass, NULL_REF } from '../idl/index.js'
import { asXapiError, XapiError } from '../idl/errors.js'
import type { Tx } from '../db/database.js'
import type { Int64 } from '../lib/int64.js'
import { UndoStack } from '../lib/undo.js'
import type { ImportTargets } from '../agent/contract.js'
import { archiveSnapshot, parseOvaXml, tolerantRecord, writeOvaXml, type OvaObject } from '../xva/ova.js'
import { EXPORT_VERSION } from '../xva/format.js'
import type { Services } from './context.js'
import { hostSeeingSrs, srHost } from './forwarding.js'
import { createSuspendImage, createVdi, destroyVdi, isIsoSr, refreshSrUsage, srPath, vdiFormat } from './storage.js'
import { refreshAllowedOperations } from './vm.js'
import { macFromSeed } from './vif.js'
import { DEVICE_RESETS, IMPORT_RESETS, vbdDeviceName } from './vm-copies.js'

type Rec = Record<string, unknown>

export interface ExportPlan {
  ovaXml: Buffer
  /** The host that reads the disks: one that sees all their SRs. */
  host: string
  /** The disks whose data the archive carries: archive id, SR directory on `host`, image name, format and size. */
  disks: { id: string; sr: string; location: string; format: 'qcow2' | 'raw'; size: number }[]
  /** Sum of their virtual sizes (for progress). */
  totalSize: number
}

/**
 * ova.xml and the disks to stream for an export of `vmRef`. A plain export comes back Halted;
 * with `preservePowerState` a Suspended VM (or a checkpoint) carries its memory image and comes
 * back Suspended, as a VM (a template or snapshot cannot be resumed).
 */
export function exportPlan(svc: Services, vmRef: string, { preservePowerState = false } = {}): ExportPlan {
  const db = svc.db
  const vm = db.record('VM', vmRef)
  const image = vm.suspend_VDI
  const suspended = preservePowerState && vm.power_state === 'Suspended' && image !== NULL_REF && db.tryRecord('VDI', image) !== undefined
  const ids = new Map<string, string>()
  const order: { cls: string; ref: string }[] = []
  const add = (cls: string, ref: string) => {
    if (ref === NULL_REF || ids.has(ref) || !db.tryRecord(cls, ref)) return
    ids.set(ref, `Ref:${ids.size}`)
    order.push({ cls, ref })
  }
  add('VM', vmRef)
  add('VM_metrics', vm.metrics)
  add('VM_guest_metrics', vm.guest_metrics)
  const vbds = vm.VBDs.filter((r) => db.tryRecord('VBD', r))
  const vifs = vm.VIFs.filter((r) => db.tryRecord('VIF', r))
  for (const r of vbds) add('VBD', r)
  for (const r of vifs) add('VIF', r)
  for (const r of vifs) add('network', db.record('VIF', r).network)
  for (const r of vbds) add('VDI', db.record('VBD', r).VDI)
  if (suspended) add('VDI', image)
  const vdis = order.filter((o) => o.cls === 'VDI')
  for (const o of vdis) add('SR', db.record('VDI', o.ref).SR)
  // The disks the archive carries: non-CD, non-ISO qcow2 disks once each, and the memory image.
  const carried: { vdiRef: string; format: 'qcow2' | 'raw' }[] = []
  for (const r of vbds) {
    const vbd = db.record('VBD', r)
    const vdiRef = vbd.VDI
    const vdi = db.tryRecord('VDI', vdiRef)
    if (!vdi || vbd.type === 'CD' || isIsoSr(svc, vdi.SR)) continue
    if (vdiFormat(svc, vdiRef) === 'raw') continue
    if (carried.some((d) => d.vdiRef === vdiRef)) continue
    carried.push({ vdiRef, format: 'qcow2' })
  }
  if (suspended) carried.push({ vdiRef: image, format: vdiFormat(svc, image) })
  const host = hostSeeingSrs(svc, carried.map((d) => db.record('VDI', d.vdiRef).SR))
  const disks: ExportPlan['disks'] = carried.map(({ vdiRef, format }) => {
    const vdi = db.record('VDI', vdiRef)
    return { id: ids.get(vdiRef)!, sr: srPath(svc, vdi.SR, host), location: vdi.location, format, size: Number(vdi.virtual_size) }
  })
  const totalSize = disks.reduce((sum, d) => sum + d.size, 0)
  const idOf = (ref: string) => ids.get(ref)
  const objects: OvaObject[] = order.map(({ cls, ref }) => {
    const snapshot = archiveSnapshot(cls, db.record(cls, ref), idOf)
    if (cls === 'VM')
      Object.assign(snapshot, {
        ...(suspended ? { power_state: 'Suspended', suspend_VDI: ids.get(image), is_a_template: false } : { power_state: 'Halted', suspend_VDI: NULL_REF }),
        is_a_snapshot: false, snapshot_of: NULL_REF, snapshots: [], snapshot_time: EPOCH,
        parent: NULL_REF, children: [], consoles: [], crash_dumps: [], blobs: {}, resident_on: NULL_REF, scheduled_to_be_resident_on: NULL_REF, domid: -1,
        snapshot_info: {}, snapshot_metadata: '', transportable_snapshot_id: '',
      })
    if (cls === 'VBD' || cls === 'VIF') Object.assign(snapshot, { ...(suspended ? {} : { currently_attached: false }), status_code: 0, status_detail: '' })
    if (cls === 'VDI') {
      const sm = { ...(snapshot.sm_config as Record<string, string>) }
      delete sm['flotilla-base']
      Object.assign(snapshot, { sm_config: sm, parent: NULL_REF, snapshot_of: NULL_REF, snapshots: [], is_a_snapshot: false })
    }
    return { cls, id: ids.get(ref)!, snapshot }
  })
  return { ovaXml: writeOvaXml(objects, EXPORT_VERSION), host, disks, totalSize }
}

/** An import in progress: what the agent must write where, and how to finish or undo it. */
export interface PreparedImport {
  vms: string[]
  targets: ImportTargets
  commit(): Promise<void>
  undo(): Promise<void>
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const MAX_DISK = 64 * 2 ** 40

/** Stored fields of `cls` from an archive record: references resolved through `resolve` (NULL when not imported). */
function resolvedFields(cls: string, rec: Rec, resolve: (id: string) => string | undefined): Rec {
  const out: Rec = {}
  for (const f of getClass(cls).storedFields) {
    let v = rec[f.name]
    if (f.type.kind === 'ref') v = typeof v === 'string' ? (resolve(v) ?? NULL_REF) : NULL_REF
    else if (f.type.kind === 'set' && f.type.of.kind === 'ref') v = ((v as string[]) ?? []).map(resolve).filter((x): x is string => x !== undefined)
    else if (f.type.kind === 'map' && f.type.value.kind === 'ref') v = {}
    out[f.name] = v
  }
  return out
}

/**
 * Creates the records of an archive in `srRef` (VDIs with their images, networks that do not
 * exist here, the VMs with their VBDs and VIFs), each step with its undo, and says which
 * image each streamed disk goes into. The VMs are marked with the task until `commit`.
 */
export async function prepareImport(svc: Services, xml: string, host: string, opts: { srRef: string; restore: boolean; force: boolean; taskRef: string }): Promise<PreparedImport> {
  const ova = parseOvaXml(xml)
  const typed = new Map<string, { cls: string; rec: Rec }>()
  for (const o of ova.objects) {
    try {
      typed.set(o.id, { cls: o.cls, rec: tolerantRecord(o.cls, o.snapshot) })
    } catch {
      // A class this datamodel does not know: ignored, as xapi ignores what it cannot use.
    }
  }
  const ofClass = (cls: string) => [...typed].filter(([, o]) => o.cls === cls).map(([id, o]) => ({ id, rec: o.rec }))
  const archived = (id: unknown, cls: string) => (typeof id === 'string' && typed.get(id)?.cls === cls ? typed.get(id)!.rec : undefined)
  const vmObjects = ofClass('VM').filter((o) => !o.rec.is_control_domain)
  if (vmObjects.length === 0) throw new XapiError('IMPORT_ERROR', ['the archive holds no VM'])

  const undo = new UndoStack('XVA import')
  const mapping = new Map<string, string>()
  // export_vsn ≥ 1 archives carry an inline checksum after every chunk; older ones none.
  const targets: ImportTargets = { disks: {}, force: opts.force, requireChecksums: Number(ova.version.export_vsn ?? 0) >= 1 }
  const vmRefs: string[] = []
  const replaced: { old: string; fresh: string; uuid: string }[] = []
  try {
    // Disks: a VDI used by a CD drive or kept in an ISO SR is matched by location in an ISO
    // library here (else the drive is left empty); any other VDI becomes a new image in the SR.
    const vbdObjects = ofClass('VBD').filter((o) => vmObjects.some((v) => v.id === o.rec.VM))
    // The memory images of VMs exported Suspended (preserve_power_state) come back as such.
    const memoryImages = new Set(vmObjects.filter((v) => v.rec.power_state === 'Suspended').map((v) => String(v.rec.suspend_VDI)))
    for (const { id, rec } of ofClass('VDI')) {
      const sr = archived(rec.SR, 'SR')
      const cdOnly = vbdObjects.some((v) => v.rec.VDI === id) && vbdObjects.filter((v) => v.rec.VDI === id).every((v) => v.rec.type === 'CD')
      if (cdOnly || sr?.content_type === 'iso' || sr?.type === 'iso') {
        const iso = [...svc.db.rows('VDI')].find((r) => r.stored.location === rec.location && svc.db.tryRecord('SR', r.stored.SR) && isIsoSr(svc, r.stored.SR))
        if (iso) mapping.set(id, iso.ref)
        continue
      }
      const size = Number(rec.virtual_size)
      if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_DISK) throw new XapiError('IMPORT_ERROR', [`VDI ${id} has an unusable virtual_size ${String(rec.virtual_size)}`])
      if (memoryImages.has(id)) {
        const image = await createSuspendImage(svc, opts.srRef, size, { name_label: rec.name_label, name_description: rec.name_description, other_config: { import_task: opts.taskRef } }, host)
        undo.push(`the memory image VDI ${image.ref}`, () => destroyVdi(svc, image.ref))
        mapping.set(id, image.ref)
        targets.disks[id] = { location: svc.db.record('VDI', image.ref).location, format: 'raw', virtualSize: size }
        continue
      }
      const type = ['user', 'system', 'ephemeral'].includes(String(rec.type)) ? rec.type : 'user'
      const ref = await createVdi(svc, {
        SR: opts.srRef, virtual_size: size, name_label: rec.name_label, name_description: rec.name_description, type,
        sharable: rec.sharable, read_only: rec.read_only, other_config: { ...(rec.other_config as object), import_task: opts.taskRef },
      }).catch((err) => {
        throw err instanceof XapiError ? err : XapiError.relayed(String(err.code ?? 'SR_BACKEND_FAILURE'), (err.params ?? [String(err)]).map(String))
      })
      undo.push(`VDI ${ref}`, () => destroyVdi(svc, ref))
      mapping.set(id, ref)
      const vdi = svc.db.record('VDI', ref)
      targets.disks[id] = { location: vdi.location, format: 'qcow2', virtualSize: Number(vdi.virtual_size) }
    }

    // Networks: matched by name, then bridge; otherwise created from the archived record.
    const vifObjects = ofClass('VIF').filter((o) => vmObjects.some((v) => v.id === o.rec.VM))
    for (const { rec } of vifObjects) {
      const netId = String(rec.network)
      if (mapping.has(netId)) continue
      const net = archived(netId, 'network')
      if (!net) continue
      const rows = [...svc.db.rows('network')]
      const match = rows.find((r) => r.stored.name_label === net.name_label) ?? rows.find((r) => net.bridge && r.stored.bridge === net.bridge)
      if (match) {
        mapping.set(netId, match.ref)
        continue
      }
      const ref = await svc.db.transact((tx) =>
        tx.create('network', { name_label: net.name_label as string, name_description: net.name_description as string, MTU: Number(net.MTU) || 1500, managed: true, other_config: { ...(net.other_config as object), import_task: opts.taskRef }, tags: net.tags as string[] }),
      )
      const uuid = svc.db.record('network', ref).uuid
      undo.push(`network ${ref}`, async () => {
        await svc.db.transact((tx) => tx.exists('network', ref) && tx.delete('network', ref))
        await svc.agentFor(host).call('net.remove', { network: uuid })
      })
      const bridge = await svc.agentFor(host).call('net.ensure', { network: uuid })
      await svc.db.transact((tx) => tx.update('network', ref, { bridge }))
      mapping.set(netId, ref)
    }

    // The VMs, their metrics, VBDs and VIFs, in one transaction each.
    for (const { id, rec } of vmObjects) {
      const other = { ...(rec.other_config as Record<string, string>) }
      let uuid: string = randomUUID()
      let replacing: string | undefined
      if (opts.restore) {
        if (other.mac_seed) {
          const dup = [...svc.db.rows('VM')].find((r) => r.stored.other_config.mac_seed === other.mac_seed && r.stored.uuid !== rec.uuid)
          if (dup) throw new XapiError('DUPLICATE_MAC_SEED', [other.mac_seed])
        }
        if (typeof rec.uuid === 'string' && UUID.test(rec.uuid)) {
          const existing = [...svc.db.rows('VM')].find((r) => r.stored.uuid === rec.uuid)
          if (existing) {
            if (existing.stored.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [existing.ref, 'halted', existing.stored.power_state.toLowerCase()])
            replacing = existing.ref
          } else uuid = rec.uuid.toLowerCase()
        }
      }
      if (!opts.restore || !other.mac_seed) other.mac_seed = randomUUID()
      other.import_task = opts.taskRef
      const resolve = (x: string) => mapping.get(x)
      const memory = rec.power_state === 'Suspended' && memoryImages.has(String(rec.suspend_VDI)) ? mapping.get(String(rec.suspend_VDI)) : undefined
      const ref = await svc.db.transact((tx: Tx) => {
        const fields = resolvedFields('VM', rec, resolve)
        const vmRef = tx.create('VM', {
          ...fields,
          uuid,
          other_config: other,
          ...(memory ? { power_state: 'Suspended', suspend_VDI: memory, is_a_template: false } : { power_state: 'Halted', suspend_VDI: NULL_REF }),
          ...IMPORT_RESETS,
          current_operations: { [opts.taskRef]: 'import' },
        })
        const metrics = tx.create('VM_metrics', { memory_actual: fields.memory_static_max as Int64, VCPUs_number: fields.VCPUs_at_startup as Int64 })
        tx.update('VM', vmRef, { metrics })
        const used = new Set<string>()
        for (const v of vbdObjects.filter((o) => o.rec.VM === id)) {
          const vbd = resolvedFields('VBD', v.rec, resolve)
          const type = vbd.type === 'CD' || vbd.type === 'Floppy' ? vbd.type : 'Disk'
          const vdi = String(vbd.VDI)
          if (type === 'Disk' && vdi === NULL_REF) continue // its disk is not in the archive
          let userdevice = String(vbd.userdevice)
          if (!/^\d+$/.test(userdevice) || Number(userdevice) > 15 || used.has(userdevice)) userdevice = String([...Array(16).keys()].find((i) => !used.has(String(i))) ?? '')
          if (userdevice === '') continue
          used.add(userdevice)
          tx.create('VBD', {
            ...vbd, VM: vmRef, VDI: vdi, type, empty: vdi === NULL_REF, mode: type === 'CD' ? 'RO' : vbd.mode === 'RO' ? 'RO' : 'RW', userdevice,
            // A Suspended VM keeps its disks, as VM.suspend leaves them.
            device: vbdDeviceName(userdevice), ...DEVICE_RESETS, currently_attached: memory !== undefined,
          })
        }
        const devices = new Set<string>()
        for (const v of vifObjects.filter((o) => o.rec.VM === id)) {
          const vif = resolvedFields('VIF', v.rec, resolve)
          if (String(vif.network) === NULL_REF) continue // its network is not in the archive
          const device = String(vif.device)
          if (!/^\d+$/.test(device) || devices.has(device)) continue
          devices.add(device)
          const keepMac = opts.restore && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(String(vif.MAC))
          tx.create('VIF', {
            ...vif, VM: vmRef, device, MAC: keepMac ? String(vif.MAC).toLowerCase() : macFromSeed(other.mac_seed!, device), MAC_autogenerated: keepMac ? (vif.MAC_autogenerated as boolean) : true,
            ...DEVICE_RESETS,
          })
        }
        refreshAllowedOperations(tx, vmRef)
        return vmRef
      })
      undo.push(`VM ${ref} with its devices`, () =>
        svc.db.transact((tx) => {
          if (!tx.exists('VM', ref)) return
          const vm = tx.get('VM', ref)
          for (const r of vm.VBDs) if (tx.exists('VBD', r)) tx.delete('VBD', r)
          for (const r of vm.VIFs) if (tx.exists('VIF', r)) tx.delete('VIF', r)
          if (tx.exists('VM_metrics', vm.metrics)) tx.delete('VM_metrics', vm.metrics)
          tx.delete('VM', ref)
        }),
      )
      vmRefs.push(ref)
      if (replacing) replaced.push({ old: replacing, fresh: ref, uuid: String(rec.uuid).toLowerCase() })
    }
  } catch (err) {
    await undo.rollback()
    throw err
  }

  return {
    vms: vmRefs,
    targets,
    undo: () => undo.rollback(),
    commit: async () => {
      // restore=true over an existing halted VM: the old record goes, the new one takes its uuid.
      for (const r of replaced)
        await svc.db.transact((tx) => {
          if (!tx.exists('VM', r.old)) return
          const old = tx.get('VM', r.old)
          if (old.power_state !== 'Halted') throw new XapiError('VM_BAD_POWER_STATE', [r.old, 'halted', old.power_state.toLowerCase()])
          for (const x of old.VBDs) if (tx.exists('VBD', x)) tx.delete('VBD', x)
          for (const x of old.VIFs) if (tx.exists('VIF', x)) tx.delete('VIF', x)
          if (tx.exists('VM_metrics', old.metrics)) tx.delete('VM_metrics', old.metrics)
          tx.delete('VM', r.old)
          tx.update('VM', r.fresh, { uuid: r.uuid })
        })
      await svc.db.transact((tx) => {
        for (const ref of vmRefs) {
          if (!tx.exists('VM', ref)) continue
          const vm = tx.get('VM', ref)
          const { import_task: _t, ...other } = vm.other_config
          const { [opts.taskRef]: _o, ...ops } = vm.current_operations
          tx.update('VM', ref, { other_config: other, current_operations: ops })
          refreshAllowedOperations(tx, ref)
        }
        for (const vdi of [...mapping.values()]) {
          if (!tx.exists('VDI', vdi)) continue
          const oc = tx.get('VDI', vdi).other_config
          if (oc.import_task === undefined) continue
          const { import_task: _t, ...rest } = oc
          tx.update('VDI', vdi, { other_config: rest })
        }
        for (const net of [...mapping.values()]) {
          if (!tx.exists('network', net)) continue
          const oc = tx.get('network', net).other_config
          if (oc.import_task !== opts.taskRef) continue
          const { import_task: _t, ...rest } = oc
          tx.update('network', net, { other_config: rest })
        }
      })
      undo.commit()
      await refreshSrUsage(svc, opts.srRef).catch(() => undefined)
    },
  }
}

export interface ArchiveImport {
  srRef: string
  restore: boolean
  force: boolean
  /** The task the import runs under (it marks the objects being made). */
  taskRef: string
  /** Called when the archive's end-of-archive marker has been read (the HTTP handler answers then). */
  onEndOfArchive?: () => void
}

/**
 * Imports an XVA archive read from `body` into `srRef`: the agent of a host with the SR plugged unpacks it and writes
 * the disks while the records are made here; returns the VMs. On any failure whatever was made
 * is undone, and the error is the import's (an SR_FULL names the target SR). The entry point
 * of PUT /import and of VM.import.
 */
export async function importArchive(svc: Services, body: Readable, opts: ArchiveImport): Promise<string[]> {
  const importId = randomUUID()
  const host = srHost(svc, opts.srRef)
  const agent = svc.agentFor(host)
  let prepared: PreparedImport | undefined
  try {
    const agentRes = await agent.stream('xva.import', { importId, sr: srPath(svc, opts.srRef, host) }, body)
    const lines = createInterface({ input: agentRes, crlfDelay: Infinity })[Symbol.asyncIterator]()
    const next = async (): Promise<{ ova?: string; done?: unknown; error?: string[] }> => {
      for (;;) {
        const r = await lines.next()
        if (r.done) throw new XapiError('IMPORT_ERROR_PREMATURE_EOF', [])
        const msg = JSON.parse(r.value) as { ova?: string; eof?: boolean; done?: unknown; error?: string[] }
        if (!msg.eof) return msg
        opts.onEndOfArchive?.()
      }
    }
    const agentError = (e: string[]) => XapiError.relayed(e[0] ?? 'IMPORT_ERROR', e.slice(1))
    const first = await next()
    if (first.error) throw agentError(first.error)
    try {
      prepared = await prepareImport(svc, first.ova ?? '', host, opts)
    } catch (err) {
      await agent.stream('xva.import-targets', { importId }).then((r) => r.resume()).catch(() => undefined)
      throw err
    }
    await agent.stream('xva.import-targets', { importId, targets: prepared.targets }).then((r) => r.resume())
    const last = await next()
    if (last.error) throw agentError(last.error)
    await prepared.commit()
    return prepared.vms
  } catch (err) {
    const e = asXapiError(err)
    await prepared?.undo()
    throw e.code === 'SR_FULL' ? new XapiError('SR_FULL', [opts.srRef, ...e.params.slice(1)]) : e
  }
}
