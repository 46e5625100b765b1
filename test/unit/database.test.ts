// The pool database's transactions under contention: concurrent writers of one object all land.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { memoryPoolDatabase } from '../helpers/memory-db.js'

test('16 concurrent writers of one record all land, none starved by the others', async () => {
  const db = memoryPoolDatabase({ latencyMs: 2 })
  const pool = await db.transact((tx) => tx.create('pool', { name_label: 'p' }))
  const writers = 16
  const each = 30
  await Promise.all(Array.from({ length: writers }, async (_, w) => {
    for (let n = 0; n < each; n++) {
      await db.transact((tx) => {
        const { other_config } = tx.get('pool', pool)
        tx.update('pool', pool, { other_config: { ...other_config, [`w${w}-${n}`]: 'x' } })
      })
    }
  }))
  assert.equal(Object.keys(db.record('pool', pool).other_config).length, writers * each)
})
