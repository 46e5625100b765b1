// xapi's operation locking (with_vm_operation, with_host_operation) for any class that has
// current_operations: the operation is checked and recorded under the caller's task in one
// transaction, so two callers cannot both start it, and cleared however it ends.
import { randomUUID } from 'node:crypto'
import type { Tx } from '../db/database.js'
import type { StoredOf } from '../idl/records.js'
import type { CallContext } from './context.js'

/** The classes whose records carry current_operations and allowed_operations. */
type Lockable = 'VM' | 'host'

interface LockedClass<C extends Lockable, R> {
  cls: C
  /** Throws the operation's XenAPI error if it is not allowed now; returns what the operation gets. */
  check(tx: Tx, ref: string): R
  /** Brings allowed_operations in step with current_operations. */
  refresh(tx: Tx, ref: string): void
}

export async function withOperation<C extends Lockable, R, T>(ctx: CallContext, locked: LockedClass<C, R>, ref: string, op: string, fn: (rec: R) => Promise<T>): Promise<T> {
  const key = ctx.taskRef ?? `OpaqueRef:${randomUUID()}`
  const operations = (tx: Tx): Record<string, string> => tx.get(locked.cls, ref).current_operations
  const write = (tx: Tx, current: Record<string, string>) => {
    // Both classes' operation enums are strings; the checks above keep each to its own.
    tx.update(locked.cls, ref, { current_operations: current } as unknown as Partial<StoredOf<C>>)
    locked.refresh(tx, ref)
  }
  const rec = await ctx.svc.db.transact((tx) => {
    const checked = locked.check(tx, ref)
    write(tx, { ...operations(tx), [key]: op })
    return checked
  })
  try {
    return await fn(rec)
  } finally {
    await ctx.svc.db.transact((tx) => {
      if (!tx.exists(locked.cls, ref)) return
      const { [key]: _done, ...rest } = operations(tx)
      write(tx, rest)
    })
  }
}
