// A pool database in memory for unit tests: a replica that applies each transaction's writes at
// once, as the watch would after a commit (memoryDatabase, for start-of-day code), or a whole
// Database on an in-memory store that checks transactions as etcd does (memoryPoolDatabase).
import { setTimeout as sleep } from 'node:timers/promises'
import { Database, Tx } from '../../src/db/database.js'
import type { Change, KeyValue, TxnSpec } from '../../src/db/etcd.js'
import { Replica } from '../../src/db/replica.js'
import { toJson } from '../../src/lib/int64.js'

export function memoryDatabase() {
  const replica = new Replica()
  replica.load(1, [])
  let rev = 1
  const transact = <T>(fn: (tx: Tx) => T): T => {
    const tx = new Tx(replica)
    const result = fn(tx)
    rev++
    const changes: Change[] = [...tx.writes].map(([key, w]) => ({ type: w ? 'put' : 'delete', key, value: w ? toJson(w.stored) : '', createRev: rev, modRev: rev }))
    replica.apply(changes, rev)
    return result
  }
  return { replica, transact }
}

/**
 * A Database whose store keeps its keys in memory: a transaction commits only if nothing it read
 * has changed, and the replica sees each commit at once. With `latencyMs`, each commit is checked
 * after a random delay up to it, as transactions in flight to etcd race each other.
 */
export function memoryPoolDatabase(opts: { latencyMs?: number } = {}): Database {
  const replica = new Replica()
  replica.load(1, [])
  const kvs = new Map<string, KeyValue>()
  let rev = 1
  const txn = async (spec: TxnSpec): Promise<{ ok: boolean; rev: number }> => {
    if (opts.latencyMs) await sleep(Math.random() * opts.latencyMs)
    if (!spec.compares.every((c) => (kvs.get(c.key)?.modRev ?? 0) === c.modRev)) return { ok: false, rev }
    rev++
    const changes: Change[] = []
    for (const { key, value } of spec.puts) {
      const kv = { key, value, createRev: kvs.get(key)?.createRev ?? rev, modRev: rev }
      kvs.set(key, kv)
      changes.push({ type: 'put', ...kv })
    }
    for (const key of spec.deletes) {
      const kv = kvs.get(key)
      if (kv && kvs.delete(key)) changes.push({ type: 'delete', key, value: '', createRev: kv.createRev, modRev: rev })
    }
    replica.apply(changes, rev)
    return { ok: true, rev }
  }
  return new Database({ txn }, replica)
}
