// A pool database in memory for unit tests of start-of-day code: a replica that applies each
// transaction's writes at once, as the watch would after a commit.
import { Tx } from '../../src/db/database.js'
import type { Change } from '../../src/db/etcd.js'
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
