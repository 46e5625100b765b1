// In-process agent streams (agent/client.ts): a handler may reuse a buffer once its write has
// called back, whether the caller reads the output or forwards it into a destination.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { Writable, type Readable } from 'node:stream'
import { describe, it } from 'node:test'
import { writeOut } from '../../src/agent/block-writes.js'
import { AgentClient } from '../../src/agent/client.js'
import type { StreamOut } from '../../src/agent/contract.js'
import { socketTransport } from '../../src/agent/socket-transport.js'

const SIZE = 256 << 10
const ROUNDS = 4

/** Writes one buffer ROUNDS times, refilled with the round's number each time its write calls back. */
async function reusing(_args: unknown, _body: Readable, out: StreamOut): Promise<void> {
  out.writeHead(200, { 'x-test': 'yes' })
  const buf = Buffer.alloc(SIZE)
  for (let round = 1; round <= ROUNDS; round++) {
    buf.fill(round)
    await new Promise<void>((resolve, reject) => writeOut(out, buf, resolve)?.catch(reject))
  }
  out.end()
}

/** A contract of one stream, run in this process only. */
interface ReusingContract {
  calls: object
  streams: { reusing: null }
  connects: object
}

const client = new AgentClient<ReusingContract>(socketTransport('/nonexistent.sock', 'secret'), { reusing })
const expected = Buffer.concat(Array.from({ length: ROUNDS }, (_, i) => Buffer.alloc(SIZE, i + 1)))

describe('in-process agent streams', () => {
  it('hands a reader copies, so a reused buffer does not change what was sent', async () => {
    const stream = await client.stream('reusing', null)
    assert.equal(stream.headers['x-test'], 'yes')
    const chunks: Buffer[] = []
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    assert.ok(Buffer.concat(chunks).equals(expected))
    assert.equal(stream.complete, true)
  })

  it('forwards writes into a destination and calls back only once the destination has consumed them', async () => {
    const stream = await client.stream('reusing', null)
    const consumed: Buffer[] = []
    const slow = new Writable({
      highWaterMark: 1,
      // Takes its time, then looks at the bytes: a buffer reused too early would show the next round.
      write: (chunk: Buffer, _encoding, callback) => setTimeout(() => (consumed.push(Buffer.from(chunk)), callback()), 10),
    })
    let forwarded = 0
    assert.ok(stream.forward)
    stream.forward(slow, (n) => (forwarded += n))
    await once(stream, 'finish')
    assert.ok(Buffer.concat(consumed).equals(expected))
    assert.equal(forwarded, expected.length)
    assert.equal(stream.complete, true)
  })

  it('forwards a failure of the destination to the handler', async () => {
    const stream = await client.stream('reusing', null)
    const broken = new Writable({ write: (_chunk, _encoding, callback) => callback(new Error('disk on fire')) })
    broken.on('error', () => undefined)
    stream.forward!(broken, () => undefined)
    const [err] = (await once(stream, 'error')) as [Error]
    assert.match(err.message, /disk on fire/)
    assert.equal(stream.complete, false)
  })
})
