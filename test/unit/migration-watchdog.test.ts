// The live migration watchdog's decisions (qemu/migration.ts migrationStep): done, failed,
// stalled once no byte moved for the stall time, else going with the progress it keeps; and the
// block mirror's (qemu/mirror.ts mirrorStep): in sync, failed, stalled, copying.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { migrationStep } from '../../src/qemu/migration.js'
import { mirrorStep } from '../../src/qemu/mirror.js'

describe('the migration watchdog', () => {
  const start = { transferred: 0, since: 1_000 }

  it('reports a completed migration with its figures', () => {
    assert.deepEqual(migrationStep({ status: 'completed', 'total-time': 250, downtime: 40, ram: { transferred: 95e6 } }, start, 1_300, 10_000), { state: 'completed', stats: { totalMs: 250, downtimeMs: 40, transferredBytes: 95e6 } })
  })

  it('reports a failed or cancelled one with QEMU\'s reason', () => {
    assert.deepEqual(migrationStep({ status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' }, start, 1_100, 10_000), { state: 'failed', reason: 'Unable to write to socket: Broken pipe' })
    assert.deepEqual(migrationStep({ status: 'cancelled' }, start, 1_100, 10_000), { state: 'failed', reason: 'cancelled' })
  })

  it('keeps going while bytes move, and counts the stall from the last byte', () => {
    const moving = migrationStep({ status: 'active', ram: { transferred: 10e6 } }, start, 5_000, 10_000)
    assert.deepEqual(moving, { state: 'going', progress: { transferred: 10e6, since: 5_000 } })
    assert.deepEqual(migrationStep({ status: 'active', ram: { transferred: 10e6 } }, { transferred: 10e6, since: 5_000 }, 14_999, 10_000), { state: 'going', progress: { transferred: 10e6, since: 5_000 } })
    assert.deepEqual(migrationStep({ status: 'active', ram: { transferred: 10e6 } }, { transferred: 10e6, since: 5_000 }, 15_000, 10_000), { state: 'stalled' })
  })

  it('a migration that never connects (setup, nothing sent) stalls too', () => {
    assert.deepEqual(migrationStep({ status: 'setup' }, start, 11_000, 10_000), { state: 'stalled' })
  })
})

describe('the block mirror watchdog', () => {
  const start = { transferred: 0, since: 1_000 }
  const job = (offset: number, ready = false) => ({ device: 'move-d1m1', len: 100e6, offset, ready })

  it('is done once the mirror is in sync', () => {
    assert.deepEqual(mirrorStep(job(100e6, true), undefined, start, 1_200, 10_000), { state: 'ready' })
  })

  it('reports the error QEMU ended the job with (a full target), and a job gone without one', () => {
    assert.deepEqual(mirrorStep(undefined, 'No space left on device', start, 1_200, 10_000), { state: 'failed', reason: 'No space left on device' })
    assert.deepEqual(mirrorStep(job(5e6), 'No space left on device', start, 1_200, 10_000), { state: 'failed', reason: 'No space left on device' }, 'the event wins over a stale look')
    assert.equal(mirrorStep(undefined, undefined, start, 1_200, 10_000).state, 'failed')
  })

  it('keeps going while bytes are copied, and stalls once none were for the stall time', () => {
    assert.deepEqual(mirrorStep(job(10e6), undefined, start, 5_000, 10_000), { state: 'going', progress: { transferred: 10e6, since: 5_000 } })
    assert.deepEqual(mirrorStep(job(10e6), undefined, { transferred: 10e6, since: 5_000 }, 14_999, 10_000), { state: 'going', progress: { transferred: 10e6, since: 5_000 } })
    assert.deepEqual(mirrorStep(job(10e6), undefined, { transferred: 10e6, since: 5_000 }, 15_000, 10_000), { state: 'stalled' })
  })
})
