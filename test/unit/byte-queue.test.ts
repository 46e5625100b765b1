// ByteQueue and PulledBytes: bytes taken out in pieces of any size, dropped without a copy.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ByteQueue, PulledBytes } from '../../src/lib/byte-queue.js'

describe('ByteQueue', () => {
  it('drops bytes across chunks and takes the next ones where they follow', () => {
    const q = new ByteQueue()
    for (const s of ['abc', 'defg', 'hi']) q.push(Buffer.from(s))
    q.drop(5)
    assert.equal(q.length, 4)
    assert.equal(String(q.take(3)), 'fgh')
    q.drop(1)
    assert.equal(q.length, 0)
    assert.throws(() => q.drop(1), RangeError)
  })

  it('takes a piece within one chunk as a view, and one across chunks into the scratch buffer given', () => {
    const q = new ByteQueue()
    const first = Buffer.from('abcd')
    q.push(first)
    q.push(Buffer.from('efgh'))
    const view = q.take(2)
    assert.equal(view.buffer, first.buffer, 'a view, no copy')
    const scratch = Buffer.alloc(8)
    const across = q.take(4, scratch)
    assert.equal(String(across), 'cdef')
    assert.equal(across.buffer, scratch.buffer)
  })
})

describe('PulledBytes', () => {
  it('pulls only what its reader needs, counts what was taken or dropped, and drains the rest', async () => {
    let pulls = 0
    async function* source() {
      for (const s of ['0123', '4567', '89']) {
        pulls++
        yield Buffer.from(s)
      }
    }
    const p = new PulledBytes(source())
    assert.equal(await p.fill(3), true)
    assert.equal(pulls, 1)
    p.drop(3)
    assert.equal(await p.fill(3), true)
    assert.equal(String(p.take(3)), '345')
    assert.equal(p.position, 6)
    await p.drain()
    assert.equal(p.position, 10)
    assert.equal(await p.fill(1), false)
  })
})
