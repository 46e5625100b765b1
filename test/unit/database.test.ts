// The pool database's transactions under contention: concurrent writers of one object all land,
// and writers in one process do not spend the store's consensus rounds losing to each other.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Database } from '../../src/db/database.js'
import { memoryPoolDatabase } from '../helpers/memory-db.js'

/** A database whose store counts the transactions it refused for a conflict. */
function countingDatabase(): { db: Database; refused: () => number; committed: () => number } {
  const inner = memoryPoolDatabase({ latencyMs: 2 })
  let refused = 0
  let committed = 0
  const db = new Database({
    txn: async (spec) => {
      const r = await inner.store.txn(spec)
      r.ok ? committed++ : refused++
      return r
    },
  }, inner.replica)
  return { db, refused: () => refused, committed: () => committed }
}

const addKey = (db: Database, pool: string, key: string) =>
  db.transact((tx) => {
    const { other_config } = tx.get('pool', pool)
    tx.update('pool', pool, { other_config: { ...other_config, [key]: 'x' } })
  })

test('16 concurrent writers of one record all land, none starved by the others', async () => {
  const { db, refused, committed } = countingDatabase()
  const pool = await db.transact((tx) => tx.create('pool', { name_label: 'p' }))
  const writers = 16
  const each = 30
  await Promise.all(Array.from({ length: writers }, async (_, w) => {
    for (let n = 0; n < each; n++) await addKey(db, pool, `w${w}-${n}`)
  }))
  assert.equal(Object.keys(db.record('pool', pool).other_config).length, writers * each)
  // each write took one round of the store: none was sent only to lose to a writer here
  assert.equal(refused(), 0)
  assert.equal(committed(), writers * each + 1)
})

test('writers of different records commit side by side', async () => {
  const { db } = countingDatabase()
  const pools = await db.transact((tx) => [tx.create('pool', { name_label: 'a' }), tx.create('pool', { name_label: 'b' })])
  let inFlight = 0
  let most = 0
  const slow = new Database({
    txn: async (spec) => {
      most = Math.max(most, ++inFlight)
      try {
        return await db.store.txn(spec)
      } finally {
        inFlight--
      }
    },
  }, db.replica)
  await Promise.all(pools.map((p, i) => addKey(slow, p, `k${i}`)))
  assert.equal(most, 2)
})

test('a writer of another process still wins a conflict, and the loser runs again on what it wrote', async () => {
  const { db, refused } = countingDatabase()
  const pool = await db.transact((tx) => tx.create('pool', { name_label: 'p' }))
  const other = new Database(db.store, db.replica)
  let runs = 0
  await db.transact(async (tx) => {
    runs++
    const { other_config } = tx.get('pool', pool)
    if (runs === 1) await addKey(other, pool, 'theirs')
    tx.update('pool', pool, { other_config: { ...other_config, mine: 'x' } })
  })
  assert.equal(runs, 2)
  assert.equal(refused(), 1)
  assert.deepEqual(Object.keys(db.record('pool', pool).other_config).sort(), ['mine', 'theirs'])
})
