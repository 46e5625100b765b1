// Writes to the pool database: optimistic transactions on etcd. A transaction reads through
// the replica (recording each object's mod_revision), stages its changes, and commits them in
// one etcd txn that checks nothing it read has changed since; on a conflict it waits for the
// replica to catch up and runs again. A caller returns only once the replica has applied its
// own write, so it always reads its own writes.
import { randomUUID } from 'node:crypto'
import { getClass, NULL_REF, type ClassDef } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { RecordOf, StoredOf } from '../idl/records.js'
import { toJson } from '../lib/int64.js'
import { EtcdStore, type KeyValue } from './etcd.js'
import { objectKey, Replica, type Row } from './replica.js'

export function newRef(): string {
  return `OpaqueRef:${randomUUID()}`
}

type Stored = Record<string, unknown>

export class Tx {
  readonly reads = new Map<string, number>()
  readonly writes = new Map<string, { cls: string; ref: string; stored: Stored } | null>()
  readonly rawWrites = new Map<string, string | null>()

  constructor(private readonly replica: Replica) {}

  private note(key: string, modRev: number): void {
    if (!this.reads.has(key)) this.reads.set(key, modRev)
  }

  /** The object's stored fields as this transaction sees them, or undefined if absent. */
  private current(cls: string, ref: string): Stored | undefined {
    const key = objectKey(cls, ref)
    if (this.writes.has(key)) return this.writes.get(key)?.stored
    const row = this.replica.row(cls, ref)
    this.note(key, row?.modRev ?? 0)
    return row?.stored
  }

  exists(cls: string, ref: string): boolean {
    return this.current(cls, ref) !== undefined
  }

  /** The full record (derived fields as of the replica), or HANDLE_INVALID. */
  get<C extends string>(cls: C, ref: string): Readonly<RecordOf<C>> {
    const stored = this.current(cls, ref)
    if (!stored) throw new XapiError('HANDLE_INVALID', [cls, ref])
    const base = this.replica.record(cls, ref)
    return (base && !this.writes.has(objectKey(cls, ref)) ? base : { ...(base ?? {}), ...stored }) as RecordOf<C>
  }

  /** Creates an object: the fields given, the rest at the datamodel's defaults, a fresh uuid unless one is given. */
  create<C extends string>(cls: C, given: Partial<StoredOf<C>>, ref: string = newRef()): string {
    const fields = given as Stored
    const def = getClass(cls)
    const stored: Stored = {}
    for (const f of def.storedFields) stored[f.name] = Object.hasOwn(fields, f.name) ? fields[f.name] : structuredClone(f.default)
    if (!fields.uuid) stored.uuid = randomUUID()
    const key = objectKey(cls, ref)
    this.note(key, this.replica.row(cls, ref)?.modRev ?? 0)
    this.writes.set(key, { cls, ref, stored })
    return ref
  }

  update<C extends string>(cls: C, ref: string, patch: Partial<StoredOf<C>>): void {
    const stored = this.current(cls, ref)
    if (!stored) throw new XapiError('HANDLE_INVALID', [cls, ref])
    this.writes.set(objectKey(cls, ref), { cls, ref, stored: { ...stored, ...patch } })
  }

  delete(cls: string, ref: string): void {
    if (!this.current(cls, ref)) throw new XapiError('HANDLE_INVALID', [cls, ref])
    this.writes.set(objectKey(cls, ref), null)
  }

  readRaw(key: string): string | undefined {
    if (this.rawWrites.has(key)) return this.rawWrites.get(key) ?? undefined
    const kv = this.replica.misc.get(key)
    this.note(key, kv?.modRev ?? 0)
    return kv?.value
  }

  writeRaw(key: string, value: string | null): void {
    this.readRaw(key)
    this.rawWrites.set(key, value)
  }
}

/** What a loaded database needs of its store: conflict-checked transactions (etcd; in memory for unit tests). */
export type TransactionStore = Pick<EtcdStore, 'txn'>

/** The condition on every write a master makes as master: its election key is still the one it created. */
export interface WriteGuard {
  /** The key and mod_revision to compare, or undefined while this host does not hold it. */
  current(): { key: string; modRev: number } | undefined
  /** The error a write gets once the key has gone to another host. */
  lost(): Error
}

export class Database {
  /** Set on a host that can be master: its writes as master then land only while it still is. */
  guard?: WriteGuard

  constructor(
    readonly store: TransactionStore,
    readonly replica: Replica,
  ) {}

  static async open(store: EtcdStore, onWatchError: (err: Error) => void): Promise<Database> {
    const replica = new Replica()
    const { rev, kvs } = await store.loadAll()
    replica.load(rev, kvs)
    await store.watch(rev + 1, (changes, r) => replica.apply(changes, r), onWatchError)
    return new Database(store, replica)
  }

  /** The tail of the queue of transactions retrying after a conflict (see transact). */
  private retrying: Promise<unknown> = Promise.resolve()

  /**
   * Runs `fn` as one atomic, conflict-checked transaction; retries it on conflicts. The first try
   * is optimistic, unless it read what another transaction here is committing: it then waits for
   * that one, as a lost conflict would cost a consensus round. A transaction that waited or lost
   * retries in a queue, one at a time in this process, so writers of one object cannot starve each
   * other: with 8 concurrent writers of the pool record some lost 50 rounds in a row. So `fn` must
   * not wait for another transaction.
   */
  async transact<T>(fn: (tx: Tx) => T | Promise<T>): Promise<T> {
    const first = await this.attempt(fn)
    if (first.ok) return first.result
    const retry = this.retrying.then(async () => {
      for (let conflicts = 0; ; ) {
        const next = await this.attempt(fn)
        if (next.ok) return next.result
        // only another process's writes can still conflict: waits for this one's commits do not count
        if (next.conflicted && ++conflicts >= 50) throw new XapiError('INTERNAL_ERROR', ['database transaction kept conflicting'])
      }
    })
    this.retrying = retry.catch(() => undefined)
    return retry
  }

  /** The keys written by this process's transactions now committing, each until the replica has applied it. */
  private committing = new Map<string, Promise<unknown>>()

  private async attempt<T>(fn: (tx: Tx) => T | Promise<T>): Promise<{ ok: true; result: T } | { ok: false; conflicted: boolean }> {
    const tx = new Tx(this.replica)
    const result = await fn(tx)
    if (tx.writes.size === 0 && tx.rawWrites.size === 0) return { ok: true, result }
    // A transaction that read what another one here is committing would lose to it in etcd, at the
    // cost of a consensus round each: it waits for that commit instead and runs again.
    const ahead = [...tx.reads.keys()].flatMap((key) => this.committing.get(key) ?? [])
    if (ahead.length > 0) {
      await Promise.all(ahead)
      return { ok: false, conflicted: false }
    }
    const commit = this.commit(tx)
    const settled = commit.catch(() => undefined)
    const keys = [...tx.writes.keys(), ...tx.rawWrites.keys()]
    for (const key of keys) this.committing.set(key, settled)
    try {
      return (await commit) ? { ok: true, result } : { ok: false, conflicted: true }
    } finally {
      for (const key of keys) if (this.committing.get(key) === settled) this.committing.delete(key)
    }
  }

  /** Commits the transaction's writes if nothing it read has changed; true if it did. */
  private async commit(tx: Tx): Promise<boolean> {
    const puts: { key: string; value: string }[] = []
    const deletes: string[] = []
    for (const [key, w] of tx.writes) w ? puts.push({ key, value: toJson(w.stored) }) : deletes.push(key)
    for (const [key, v] of tx.rawWrites) v === null ? deletes.push(key) : puts.push({ key, value: v })
    const compares = [...tx.reads].map(([key, modRev]) => ({ key, modRev }))
    const guarded = this.guard?.current()
    if (guarded) compares.push(guarded)
    const { ok, rev } = await this.store.txn({ compares, puts, deletes })
    await this.replica.waitForRev(rev)
    if (ok) return true
    if (guarded && this.replica.misc.get(guarded.key)?.modRev !== guarded.modRev) throw this.guard!.lost()
    return false
  }

  record<C extends string>(cls: C, ref: string): Readonly<RecordOf<C>> {
    const rec = this.replica.record(cls, ref)
    if (!rec) throw new XapiError('HANDLE_INVALID', [cls, ref])
    return rec
  }

  tryRecord<C extends string>(cls: C, ref: string): Readonly<RecordOf<C>> | undefined {
    return this.replica.record(cls, ref)
  }

  rows<C extends string>(cls: C): IterableIterator<Row<C>> {
    return this.replica.rows(cls)
  }

  refs(cls: string): string[] {
    return [...this.replica.rows(cls)].map((r) => r.ref)
  }

  /** The only object of a class that always has one (pool), or the first of its kind. */
  first(cls: string): string {
    const row = this.replica.rows(cls).next()
    return row.done ? NULL_REF : row.value.ref
  }

  refByUuid(cls: ClassDef, uuid: string): string {
    const ref = this.replica.refByUuid(cls.name, uuid)
    if (!ref) throw new XapiError('UUID_INVALID', [cls.name, uuid])
    return ref
  }

  raw(key: string): KeyValue | undefined {
    return this.replica.misc.get(key)
  }
}
