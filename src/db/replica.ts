// The in-memory replica of the pool database, fed by the etcd watch. Reads are local; derived
// set fields (VM.VBDs, SR.VDIs, ...) are computed from reverse indexes and never stored; every
// applied change is logged by revision so event.from can answer from memory.
import { classes, defaultRecord, getClass, relations, type ClassDef, type Relation } from '../idl/index.js'
import { fromJson, toJson } from '../lib/int64.js'
import type { RecordOf, StoredOf } from '../idl/records.js'
import { PREFIX, type Change, type KeyValue } from './etcd.js'

export const OBJ_PREFIX = `${PREFIX}obj/`

export interface Row<C extends string = string> {
  cls: C
  ref: string
  stored: StoredOf<C>
  createRev: number
  modRev: number
  /** Last revision at which this object changed, its derived fields included. */
  eventRev: number
  record?: Readonly<RecordOf<C>>
}

export interface Tombstone {
  cls: string
  ref: string
  createRev: number
  deleteRev: number
  lastRecord: Readonly<Record<string, unknown>>
}

interface LogEntry {
  rev: number
  cls: string
  ref: string
}

type Waiter = { wants: (cls: string, ref: string) => boolean; wake: () => void }

const MAX_LOG = 200_000

export function objectKey(cls: string, ref: string): string {
  return `${OBJ_PREFIX}${cls}/${ref}`
}

function parseObjectKey(key: string): { cls: string; ref: string } | undefined {
  if (!key.startsWith(OBJ_PREFIX)) return undefined
  const rest = key.slice(OBJ_PREFIX.length)
  const slash = rest.indexOf('/')
  return slash < 0 ? undefined : { cls: rest.slice(0, slash), ref: rest.slice(slash + 1) }
}

const refsOf = (value: unknown): string[] =>
  Array.isArray(value) ? (value as string[]) : typeof value === 'string' && value !== 'OpaqueRef:NULL' ? [value] : []

export class Replica {
  appliedRev = 0
  /** Events older than this revision are no longer known (EVENTS_LOST below it). */
  logStart = 0
  private tables = new Map<string, Map<string, Row>>()
  private uuids = new Map<string, Map<string, string>>()
  private reverse = new Map<Relation, Map<string, Set<string>>>()
  private relationsByRefClass = new Map<string, Relation[]>()
  private log: LogEntry[] = []
  private tombstones = new Map<string, Tombstone>()
  private waiters = new Set<Waiter>()
  private revWaiters: { rev: number; resolve: () => void }[] = []
  /** Non-object keys under the prefix (accounts, settings). */
  readonly misc = new Map<string, KeyValue>()

  constructor() {
    for (const c of classes.keys()) {
      this.tables.set(c, new Map())
      this.uuids.set(c, new Map())
    }
    for (const r of relations) {
      this.reverse.set(r, new Map())
      const list = this.relationsByRefClass.get(r.refClass) ?? []
      list.push(r)
      this.relationsByRefClass.set(r.refClass, list)
    }
  }

  load(rev: number, kvs: KeyValue[]): void {
    for (const kv of kvs) this.applyOne({ type: 'put', ...kv }, kv.modRev, false)
    this.appliedRev = rev
    this.logStart = rev
  }

  /** Applies one watch batch (all changes of etcd revisions up to `rev`). */
  apply(changes: Change[], rev: number): void {
    const touched: LogEntry[] = []
    for (const change of changes) touched.push(...this.applyOne(change, change.modRev, true))
    this.appliedRev = Math.max(this.appliedRev, rev)
    this.trimLog()
    if (touched.length > 0) this.wakeWaiters(touched)
    if (this.revWaiters.length > 0) {
      const ready = this.revWaiters.filter((w) => w.rev <= this.appliedRev)
      this.revWaiters = this.revWaiters.filter((w) => w.rev > this.appliedRev)
      for (const w of ready) w.resolve()
    }
  }

  waitForRev(rev: number): Promise<void> {
    if (rev <= this.appliedRev) return Promise.resolve()
    return new Promise((resolve) => this.revWaiters.push({ rev, resolve }))
  }

  private applyOne(change: Change, rev: number, logIt: boolean): LogEntry[] {
    const id = parseObjectKey(change.key)
    if (!id) {
      if (change.type === 'delete') this.misc.delete(change.key)
      else this.misc.set(change.key, { key: change.key, value: change.value, createRev: change.createRev, modRev: change.modRev })
      return []
    }
    const table = this.tables.get(id.cls)
    if (!table) return []
    const cls = getClass(id.cls)
    const old = table.get(id.ref)
    const touched: LogEntry[] = []
    const touch = (c: string, r: string) => {
      const row = this.tables.get(c)?.get(r)
      if (row) {
        row.eventRev = rev
        row.record = undefined
      }
      if (logIt) touched.push({ rev, cls: c, ref: r })
    }
    if (change.type === 'delete') {
      if (!old) return []
      this.unindex(cls, old, touch)
      table.delete(id.ref)
      this.uuids.get(id.cls)?.delete(String(old.stored.uuid))
      if (logIt) {
        if (cls.generatesEvents) this.tombstones.set(`${id.cls}/${id.ref}`, { cls: id.cls, ref: id.ref, createRev: old.createRev, deleteRev: rev, lastRecord: this.materialize(old) })
        touched.push({ rev, cls: id.cls, ref: id.ref })
      }
    } else {
      const stored = fromJson(change.value) as Record<string, unknown>
      if (old) {
        this.unindex(cls, old, touch)
        this.uuids.get(id.cls)?.delete(String(old.stored.uuid))
      }
      const row: Row = { cls: id.cls, ref: id.ref, stored, createRev: change.createRev, modRev: change.modRev, eventRev: rev }
      table.set(id.ref, row)
      this.uuids.get(id.cls)?.set(String(stored.uuid), id.ref)
      this.index(cls, row, touch)
      if (logIt) touched.push({ rev, cls: id.cls, ref: id.ref })
    }
    // Classes without events (sessions) still wake waiters but need no history.
    if (logIt) for (const t of touched) if (getClass(t.cls).generatesEvents) this.log.push(t)
    return touched
  }

  private index(cls: ClassDef, row: Row, touch: (c: string, r: string) => void): void {
    for (const rel of this.relationsByRefClass.get(cls.name) ?? []) {
      const idx = this.reverse.get(rel)!
      for (const target of refsOf(row.stored[rel.refField])) {
        let set = idx.get(target)
        if (!set) idx.set(target, (set = new Set()))
        set.add(row.ref)
        touch(rel.setClass, target)
      }
    }
  }

  private unindex(cls: ClassDef, row: Row, touch: (c: string, r: string) => void): void {
    for (const rel of this.relationsByRefClass.get(cls.name) ?? []) {
      const idx = this.reverse.get(rel)!
      for (const target of refsOf(row.stored[rel.refField])) {
        idx.get(target)?.delete(row.ref)
        touch(rel.setClass, target)
      }
    }
  }

  private trimLog(): void {
    if (this.log.length <= MAX_LOG) return
    const drop = this.log.length - MAX_LOG / 2
    this.logStart = this.log[drop - 1]!.rev
    this.log.splice(0, drop)
    for (const [key, t] of this.tombstones) if (t.deleteRev <= this.logStart) this.tombstones.delete(key)
  }

  /** Every key as etcd holds it (for a copy that load() takes back): objects and the other keys. */
  dump(): KeyValue[] {
    const kvs: KeyValue[] = [...this.misc.values()]
    for (const table of this.tables.values()) for (const row of table.values()) kvs.push({ key: objectKey(row.cls, row.ref), value: toJson(row.stored), createRev: row.createRev, modRev: row.modRev })
    return kvs
  }

  row<C extends string>(cls: C, ref: string): Row<C> | undefined {
    return this.tables.get(cls)?.get(ref) as Row<C> | undefined
  }

  rows<C extends string>(cls: C): IterableIterator<Row<C>> {
    return (this.tables.get(cls) ?? new Map<string, Row>()).values() as IterableIterator<Row<C>>
  }

  count(cls: string): number {
    return this.tables.get(cls)?.size ?? 0
  }

  refByUuid(cls: string, uuid: string): string | undefined {
    return this.uuids.get(cls)?.get(uuid)
  }

  /**
   * The full record: stored fields over defaults, derived set fields filled in, maps as
   * null-prototype objects (so no key reads as an Object.prototype member). Frozen and cached per change.
   */
  record<C extends string>(cls: C, ref: string): Readonly<RecordOf<C>> | undefined {
    const row = this.row(cls, ref)
    return row ? this.materialize(row) : undefined
  }

  materialize<C extends string>(row: Row<C>): Readonly<RecordOf<C>> {
    if (row.record) return row.record
    const cls = getClass(row.cls)
    const rec = defaultRecord(cls)
    Object.assign(rec, row.stored)
    for (const f of cls.fieldList) {
      if (f.type.kind === 'map') rec[f.name] = Object.assign(Object.create(null), rec[f.name])
      if (!f.derivedFrom) continue
      const rel = relations.find((r) => r.setClass === cls.name && r.setField === f.name)
      rec[f.name] = rel ? [...(this.reverse.get(rel)?.get(row.ref) ?? [])] : []
    }
    row.record = Object.freeze(rec) as RecordOf<C>
    return row.record
  }

  /**
   * What changed after revision `since` among the objects `wants` selects: one entry per object,
   * with its current row or its tombstone. Undefined when `since` is older than the log.
   */
  changesSince(since: number, wants: (cls: string, ref: string) => boolean): { row?: Row; tomb?: Tombstone; cls: string; ref: string }[] | undefined {
    if (since < this.logStart) return undefined
    let lo = 0
    let hi = this.log.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.log[mid]!.rev <= since) lo = mid + 1
      else hi = mid
    }
    const seen = new Set<string>()
    const out: { row?: Row; tomb?: Tombstone; cls: string; ref: string }[] = []
    for (let i = this.log.length - 1; i >= lo; i--) {
      const e = this.log[i]!
      const key = `${e.cls}/${e.ref}`
      if (seen.has(key)) continue
      seen.add(key)
      if (!wants(e.cls, e.ref)) continue
      const row = this.row(e.cls, e.ref)
      if (row) out.push({ row, cls: e.cls, ref: e.ref })
      else {
        const tomb = this.tombstones.get(key)
        if (tomb && tomb.createRev <= since) out.push({ tomb, cls: e.cls, ref: e.ref })
      }
    }
    return out
  }

  /** Resolves when an object that `wants` selects changes, or after `ms`. Returns a cancel function via the promise's resolution. */
  waitForChange(wants: (cls: string, ref: string) => boolean, ms: number, abort?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const waiter: Waiter = { wants, wake: () => done() }
      const timer = setTimeout(() => done(), ms)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(waiter)
        abort?.removeEventListener('abort', done)
        resolve()
      }
      abort?.addEventListener('abort', done)
      this.waiters.add(waiter)
    })
  }

  private wakeWaiters(touched: LogEntry[]): void {
    for (const w of [...this.waiters]) if (touched.some((t) => w.wants(t.cls, t.ref))) w.wake()
  }
}
