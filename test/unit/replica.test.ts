import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { objectKey, Replica } from '../../src/db/replica.js'
import type { Change } from '../../src/db/etcd.js'

const put = (cls: string, ref: string, stored: object, createRev: number, modRev: number): Change => ({ type: 'put', key: objectKey(cls, ref), value: JSON.stringify(stored), createRev, modRev })
const del = (cls: string, ref: string, rev: number): Change => ({ type: 'delete', key: objectKey(cls, ref), value: '', createRev: 0, modRev: rev })
const all = () => true

describe('the replica', () => {
  it('computes derived set fields from the ref side and marks both ends changed', () => {
    const r = new Replica()
    r.load(1, [])
    r.apply([put('VM', 'vm1', { uuid: 'u1', name_label: 'a' }, 2, 2)], 2)
    r.apply([put('VBD', 'vbd1', { uuid: 'u2', VM: 'vm1' }, 3, 3)], 3)
    assert.deepEqual(r.record('VM', 'vm1')?.VBDs, ['vbd1'])
    const changes = r.changesSince(2, all)!
    assert.deepEqual(changes.map((c) => `${c.cls}/${c.ref}`).sort(), ['VBD/vbd1', 'VM/vm1'])
    r.apply([put('VBD', 'vbd1', { uuid: 'u2', VM: 'vm2' }, 3, 4)], 4)
    assert.deepEqual(r.record('VM', 'vm1')?.VBDs, [])
    r.apply([del('VBD', 'vbd1', 5)], 5)
    const after = r.changesSince(4, all)!
    assert.equal(after.find((c) => c.cls === 'VBD')?.tomb?.deleteRev, 5)
  })

  it('fills fields missing from a stored record with their defaults, and freezes records', () => {
    const r = new Replica()
    r.load(5, [{ key: objectKey('VM', 'v'), value: JSON.stringify({ uuid: 'x' }), createRev: 3, modRev: 4 }])
    const rec = r.record('VM', 'v')!
    assert.equal(rec.power_state, 'Halted')
    assert.ok(Object.isFrozen(rec))
    assert.equal(r.refByUuid('VM', 'x'), 'v')
  })

  it('forgets objects created and deleted between two tokens, and refuses tokens older than it knows', () => {
    const r = new Replica()
    r.load(10, [])
    r.apply([put('network', 'n', { uuid: 'n' }, 11, 11)], 11)
    r.apply([del('network', 'n', 12)], 12)
    assert.deepEqual(r.changesSince(10, all), [])
    assert.equal(r.changesSince(9, all), undefined)
  })

  it('wakes waiters for the objects they want and resolves revision waits', async () => {
    const r = new Replica()
    r.load(1, [])
    let woke = false
    const waiting = r.waitForChange((cls) => cls === 'VM', 5000).then(() => (woke = true))
    const revReached = r.waitForRev(3)
    r.apply([put('network', 'n', { uuid: 'n' }, 2, 2)], 2)
    await new Promise((res) => setImmediate(res))
    assert.equal(woke, false)
    r.apply([put('VM', 'v', { uuid: 'v' }, 3, 3)], 3)
    await waiting
    await revReached
    assert.equal(woke, true)
  })
})
