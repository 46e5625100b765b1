// ChunkPuller: a stream's chunks as they came, with backpressure, and a premature close as an error.
import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, it } from 'node:test'
import { ChunkPuller, pulled } from '../../src/lib/chunk-puller.js'

describe('ChunkPuller', () => {
  it('yields the very buffers written, pauses the stream above its high-water mark and ends with it', async () => {
    const stream = new PassThrough()
    const puller = new ChunkPuller(stream, 10)
    const written = [Buffer.from('abcdef'), Buffer.from('ghijkl'), Buffer.from('mn')]
    for (const b of written) stream.write(b)
    await new Promise((r) => setImmediate(r))
    assert.equal(stream.isPaused(), true, 'paused with 12 bytes queued')
    const got: Buffer[] = []
    const done = (async () => {
      for await (const c of puller) got.push(c)
    })()
    stream.end()
    await done
    assert.deepEqual(got.map(String), ['abcdef', 'ghijkl', 'mn'])
    assert.equal(got[0]!.buffer, written[0]!.buffer, 'no copy')
  })

  it('gives back unshifted chunks first, and fails when the stream closes before its end', async () => {
    const stream = new PassThrough()
    const puller = new ChunkPuller(stream)
    stream.write(Buffer.from('head'))
    const first = await puller.next()
    puller.unshift([first.value!])
    assert.equal(String((await puller.next()).value), 'head')
    stream.destroy()
    await assert.rejects(puller.next(), /premature close/)
  })

  it('drops the rest once asked to', async () => {
    const stream = new PassThrough()
    const puller = new ChunkPuller(stream, 4)
    puller.discardRest()
    for (let i = 0; i < 100; i++) stream.write(Buffer.alloc(1024))
    stream.end()
    await new Promise((r) => stream.once('end', r))
    assert.equal((await puller.next()).done, true)
  })

  it('pulled(): the chunks of several writes one by one (a Readable\'s own iterator joins them), and a stop destroys the stream', async () => {
    const stream = new PassThrough()
    const written = [Buffer.from('ab'), Buffer.from('cd'), Buffer.from('ef')]
    for (const b of written) stream.write(b)
    stream.end()
    const got: Buffer[] = []
    for await (const c of pulled(stream)) got.push(c)
    assert.deepEqual(got.map(String), ['ab', 'cd', 'ef'])
    assert.equal(got[1]!.buffer, written[1]!.buffer, 'no copy')

    const early = new PassThrough()
    early.write(Buffer.from('x'))
    for await (const c of pulled(early)) {
      assert.equal(String(c), 'x')
      break
    }
    assert.equal(early.destroyed, true, 'stopping early destroys the stream')
  })
})

