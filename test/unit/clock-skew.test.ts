// Clock skew between hosts: the measure (NTP's middle of the round trip), the once-then-re-arm
// rule, and the master raising HOST_CLOCK_SKEW_DETECTED for a member whose agent reports a clock
// off by more than 2 s (in-memory pool, stand-in agents).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { checkClockSkew, measuredSkewSeconds, skewAlert } from '../../src/xapi/clock-skew.js'
import { DEFAULT_SETTINGS, type Services } from '../../src/xapi/index.js'
import { memoryPoolDatabase } from '../helpers/memory-db.js'

describe('clock skew', () => {
  it('measures against the middle of the round trip', () => {
    assert.equal(measuredSkewSeconds(1000, 1500, 2000), 0)
    assert.equal(measuredSkewSeconds(1000, 4500, 2000), 3)
    assert.equal(measuredSkewSeconds(1000, -1500, 2000), 3)
  })

  it('raises once above the limit and re-arms under half of it', () => {
    assert.equal(skewAlert(2.5, false), 'send')
    assert.equal(skewAlert(2.5, true), 'none')
    assert.equal(skewAlert(1.5, true), 'none', 'between half the limit and the limit nothing changes')
    assert.equal(skewAlert(0.5, true), 'rearm')
    assert.equal(skewAlert(0.5, false), 'none')
  })

  it('the master raises HOST_CLOCK_SKEW_DETECTED once for a live member 5 s off, none for one in time or not live', async () => {
    const db = memoryPoolDatabase()
    const offsets = new Map<string, number>()
    const hosts = await db.transact((tx) => {
      tx.create('pool', { name_label: 'lab' })
      const make = (name: string, live: boolean) => tx.create('host', { name_label: name, metrics: tx.create('host_metrics', { live }) })
      return { master: make('h1', true), skewed: make('h2', true), inTime: make('h3', true), dead: make('h4', false) }
    })
    offsets.set(hosts.skewed, 5000)
    offsets.set(hosts.dead, 60_000)
    const asked: string[] = []
    const agentFor = (host: string) => ({
      call: async (method: string) => {
        assert.equal(method, 'host.clock')
        asked.push(host)
        return Date.now() + (offsets.get(host) ?? 0)
      },
    })
    const svc = { db, agentFor, hostRef: hosts.master, settings: DEFAULT_SETTINGS, srRoot: '', publicUrl: '' } as unknown as Services
    const messages = () => db.refs('message').map((m) => db.record('message', m))
    await checkClockSkew(svc)
    assert.deepEqual(asked.sort(), [hosts.skewed, hosts.inTime].sort(), 'live members only')
    assert.equal(messages().length, 1)
    const [message] = messages()
    assert.equal(message!.name, 'HOST_CLOCK_SKEW_DETECTED')
    assert.equal(message!.cls, 'Host')
    assert.equal(message!.obj_uuid, db.record('host', hosts.skewed).uuid)
    assert.match(message!.body, /The clock on server 'h2' may not be synchronized with the other servers in pool 'lab'/)
    await checkClockSkew(svc)
    assert.equal(messages().length, 1, 'raised once while the skew lasts')
    offsets.set(hosts.skewed, 0)
    await checkClockSkew(svc)
    offsets.set(hosts.skewed, -4000)
    await checkClockSkew(svc)
    assert.equal(messages().length, 2, 'back in time, then off again: raised again')
  })
})
