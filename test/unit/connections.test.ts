// The connection watchdog's decisions: who a connection waits on, and when that is too long.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { DEFAULT_CONNECTION_LIMITS, overdue, phaseOf, tickMs } from '../../src/http/connections.js'

const limits = DEFAULT_CONNECTION_LIMITS
const HOUR = 3600_000

describe('the connection watchdog', () => {
  it('closes a connection that sends no request within the header timeout', () => {
    const phase = phaseOf({ busy: false, readingBody: false, sendBlocked: false })
    assert.equal(phase, 'request')
    assert.equal(overdue(phase, limits.headersTimeoutMs - 1, limits), false)
    assert.equal(overdue(phase, limits.headersTimeoutMs, limits), true)
  })

  it('cuts a body or a download that stopped moving, not one that is slow', () => {
    for (const state of [{ busy: true, readingBody: true, sendBlocked: false }, { busy: true, readingBody: false, sendBlocked: true }]) {
      assert.equal(phaseOf(state), 'client')
      assert.equal(overdue('client', limits.stallTimeoutMs - 1, limits), false)
      assert.equal(overdue('client', limits.stallTimeoutMs, limits), true)
    }
  })

  it('never cuts a connection on which the daemon is the one working (a long poll, a paused upload, an export reading its disk)', () => {
    const phase = phaseOf({ busy: true, readingBody: false, sendBlocked: false })
    assert.equal(phase, 'server')
    assert.equal(overdue(phase, 24 * HOUR, limits), false)
  })

  it('leaves XO room: a 60 s event.from is not a stall, and a body may pause for XO\'s own 5 minutes', () => {
    assert.ok(limits.stallTimeoutMs >= 5 * 60_000)
    assert.ok(limits.headersTimeoutMs >= 10_000 && limits.keepAliveTimeoutMs >= 5_000)
  })

  it('looks often enough for short test limits and rarely for the real ones', () => {
    assert.equal(tickMs(limits), 1000)
    assert.equal(tickMs({ ...limits, headersTimeoutMs: 1000 }), 250)
    assert.equal(tickMs({ ...limits, headersTimeoutMs: 10, stallTimeoutMs: 10 }), 50)
  })
})
