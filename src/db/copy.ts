// A member's copy of the pool database on its own disk. A member restarted while its pool
// database has no quorum (the only voter, the master's, is gone) cannot load from etcd: it serves
// this copy, read-only, until the database answers again or it is made master.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { XapiError } from '../idl/errors.js'
import type { KeyValue, TxnSpec } from './etcd.js'
import { Replica } from './replica.js'

export interface DatabaseCopy {
  rev: number
  kvs: KeyValue[]
}

/** Writes the replica as it stands (atomically: a crash leaves the copy of before). */
export function saveCopy(file: string, replica: Replica): void {
  const copy: DatabaseCopy = { rev: replica.appliedRev, kvs: replica.dump() }
  writeFileSync(`${file}.tmp`, JSON.stringify(copy), { mode: 0o600 })
  renameSync(`${file}.tmp`, file)
}

export function readCopy(file: string): DatabaseCopy | undefined {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as DatabaseCopy) : undefined
}

/** A replica loaded from a copy. */
export function replicaOf(copy: DatabaseCopy): Replica {
  const replica = new Replica()
  replica.load(copy.rev, copy.kvs)
  return replica
}

/** The store of a database served from a copy: every write is refused at once. */
export const noQuorumStore = {
  txn: (_spec: TxnSpec): Promise<{ ok: boolean; rev: number }> => Promise.reject(new XapiError('HOST_IN_EMERGENCY_MODE')),
}
