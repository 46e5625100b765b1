// The master's tick over the pool's own records (keepPoolRecords) on a simulated host: it writes
// only what changed, since every write wakes each host's watch and the pool record's writers.
import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { keepPoolRecords } from '../../src/xapi/pool-master.js'
import { startSimHost, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
before(async () => (host = await startSimHost()))
after(() => host.dispose())

it('leaves the pool record alone when nothing in it changed', async () => {
  const pool = host.db.first('pool')
  await keepPoolRecords(host.db, host.svc.hostRef)
  const rev = host.db.replica.row('pool', pool)!.modRev
  await keepPoolRecords(host.db, host.svc.hostRef)
  await keepPoolRecords(host.db, host.svc.hostRef)
  assert.equal(host.db.replica.row('pool', pool)!.modRev, rev)
})

it('levels the pool CPU anew when a host\'s CPU changes', async () => {
  const pool = host.db.first('pool')
  const cpu = host.db.record('host', host.svc.hostRef).cpu_info
  await host.db.transact((tx) => tx.update('host', host.svc.hostRef, { cpu_info: { ...cpu, features_hvm_host: 'fpu sse' } }))
  await keepPoolRecords(host.db, host.svc.hostRef)
  assert.equal(host.db.record('pool', pool).cpu_info.features_hvm_host, 'fpu sse')
})
