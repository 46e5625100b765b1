// Buffer pools (lib/buffer-pool.ts): buffers come back for reuse, and aligned pools hand out
// separate page-aligned buffers that O_DIRECT writes can take.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { BufferPool, isPageAligned } from '../../src/lib/buffer-pool.js'

const MiB = 2 ** 20

describe('buffer pool', () => {
  it('hands a given-back buffer out again, and keeps no more than it is told', () => {
    const pool = new BufferPool(1000, { keep: 1 })
    const [a, b] = [pool.take(), pool.take()]
    pool.give(a)
    pool.give(b)
    assert.equal(pool.take(), a)
    assert.notEqual(pool.take(), b, 'b was one too many to keep')
    pool.give(Buffer.alloc(10))
    assert.equal(pool.take().length, 1000, 'a buffer of another size is not taken back')
  })

  it('hands out page-aligned buffers that do not overlap', () => {
    const pool = new BufferPool(MiB + 100, { aligned: true })
    const bufs = Array.from({ length: 40 }, () => pool.take())
    for (const [i, buf] of bufs.entries()) {
      assert.equal(buf.length, MiB + 100)
      assert.ok(isPageAligned(buf), `buffer ${i} is page-aligned`)
      buf.fill(i)
    }
    for (const [i, buf] of bufs.entries()) assert.ok(buf.every((b) => b === i), `buffer ${i} kept its bytes`)
    assert.ok(isPageAligned(bufs[0]!.subarray(4096)))
    assert.ok(!isPageAligned(bufs[0]!.subarray(100)))
    assert.ok(!isPageAligned(new BufferPool(MiB).take()), 'a plain pool makes no promise')
    assert.ok(!isPageAligned(Buffer.alloc(MiB)))
  })
})
