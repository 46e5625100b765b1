// The agent contract (agent/contract.ts): one failure encoding for calls and streams, the typed
// client against a real agent server on a temporary Unix socket, and the compile-time checks.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { request, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { StorageError } from '../../src/storage/driver.js'
import { AgentClient } from '../../src/agent/client.js'
import type { CallHandlers, NotJson } from '../../src/agent/contract.js'
import { AgentError, decodeFailure, encodeFailure } from '../../src/agent/failure.js'
import { startAgentServer } from '../../src/agent/server.js'
import { SECRET_HEADER, socketTransport } from '../../src/agent/socket-transport.js'

const roundTrip = (thrown: unknown, status = 500) => decodeFailure(JSON.parse(JSON.stringify(encodeFailure(thrown))), status)

describe('agent failure encoding', () => {
  it('keeps a XenAPI error\'s code and params', () => {
    const err = roundTrip(new XapiError('VDI_IN_USE', ['OpaqueRef:1', 'export']))
    assert.ok(err instanceof XapiError)
    assert.deepEqual(err.description, ['VDI_IN_USE', 'OpaqueRef:1', 'export'])
  })

  it('keeps code and params of any error that carries them (storage errors, tagged errors)', () => {
    assert.deepEqual((roundTrip(new StorageError('SR_FULL', ['10', '5'])) as XapiError).description, ['SR_FULL', '10', '5'])
    const tagged = Object.assign(new Error('bad ISO name x'), { code: 'VDI_MISSING', params: ['/sr', 'x', 3] })
    assert.deepEqual(encodeFailure(tagged), { error: 'bad ISO name x', xapi: ['VDI_MISSING', '/sr', 'x', '3'] })
    assert.deepEqual((roundTrip(tagged) as XapiError).description, ['VDI_MISSING', '/sr', 'x', '3'])
  })

  it('makes a plain Error an AgentError with its message and the answer\'s status', () => {
    const err = roundTrip(new Error('qemu-img failed'), 500)
    assert.ok(err instanceof AgentError)
    assert.equal(err.message, 'qemu-img failed')
    assert.equal(err.status, 500)
    assert.ok(roundTrip(Object.assign(new Error('no code'), { code: 'ENOENT' })) instanceof AgentError)
  })

  it('makes a thrown non-Error an AgentError naming the status', () => {
    for (const thrown of ['a string', 42, null, undefined, { code: 5 }]) {
      const err = roundTrip(thrown, 500)
      assert.ok(err instanceof AgentError)
      assert.equal(err.message, 'agent answered 500')
    }
  })
})

/** A small contract: what the typed client infers from. */
interface TestContract {
  calls: {
    add: { args: { a: number; b: number }; result: number }
    hello: { args: void; result: string }
    fail: { args: { xapi: boolean }; result: void }
  }
  streams: { upper: { prefix: string } }
  connects: { echo: null }
}

const methods: CallHandlers<TestContract> = {
  add: async ({ a, b }) => a + b,
  hello: async () => 'hello',
  fail: async ({ xapi }) => {
    throw xapi ? new XapiError('VM_BAD_POWER_STATE', ['OpaqueRef:vm', 'running', 'halted']) : new Error('disk on fire')
  },
}

describe('agent server and typed client', () => {
  let dir: string
  let socketPath: string
  let server: Server
  let client: AgentClient<TestContract>

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'agent-contract-'))
    socketPath = join(dir, 'agent.sock')
    server = await startAgentServer<TestContract>(socketPath, 'secret', methods, {
      stream: {
        upper: async ({ prefix }, body, out) => {
          if (prefix === 'refuse') throw new XapiError('VDI_IN_USE', ['OpaqueRef:vdi', 'import'])
          const chunks: Buffer[] = []
          for await (const c of body) chunks.push(c as Buffer)
          out.writeHead(200, { 'content-type': 'text/plain' })
          out.end(prefix + Buffer.concat(chunks).toString().toUpperCase())
        },
      },
      connect: {
        echo: async (_args, socket) => {
          socket.write('HTTP/1.1 200 Connection established\r\n\r\n')
          socket.pipe(socket)
        },
      },
    })
    client = new AgentClient<TestContract>(socketTransport(socketPath, 'secret'))
  })

  after(async () => {
    await new Promise((resolve) => server.close(resolve))
    await rm(dir, { recursive: true, force: true })
  })

  /** A raw request to the server, as a client of another build would send it. */
  const raw = (path: string, secret = 'secret', body = 'null') =>
    new Promise<{ status: number; body: unknown }>((resolve, reject) => {
      const req = request({ socketPath, path, method: 'POST', headers: { [SECRET_HEADER]: secret, 'content-length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }))
      })
      req.on('error', reject)
      req.end(body)
    })

  it('infers arguments and results from the method name', async () => {
    const sum: number = await client.call('add', { a: 2, b: 3 })
    assert.equal(sum, 5)
    const greeting: string = await client.call('hello')
    assert.equal(greeting, 'hello')
  })

  it('answers a XenAPI error as itself and any other failure as an AgentError', async () => {
    await assert.rejects(client.call('fail', { xapi: true }), (err: unknown) => err instanceof XapiError && err.description.join() === 'VM_BAD_POWER_STATE,OpaqueRef:vm,running,halted')
    await assert.rejects(client.call('fail', { xapi: false }), (err: unknown) => err instanceof AgentError && err.status === 500 && err.message === 'disk on fire')
    assert.deepEqual(await raw('/call/fail', 'secret', '{"xapi":true}'), {
      status: 500,
      body: { error: 'VM_BAD_POWER_STATE(OpaqueRef:vm, running, halted)', xapi: ['VM_BAD_POWER_STATE', 'OpaqueRef:vm', 'running', 'halted'] },
    })
  })

  it('answers an unknown method with 404, also for names every object has', async () => {
    assert.deepEqual(await raw('/call/nope'), { status: 404, body: { error: 'no such agent call: /call/nope' } })
    assert.deepEqual(await raw('/call/toString'), { status: 404, body: { error: 'no such agent call: /call/toString' } })
    const untyped = client as unknown as AgentClient<{ calls: { nope: { args: null; result: void } }; streams: object; connects: object }>
    await assert.rejects(untyped.call('nope', null), (err: unknown) => err instanceof AgentError && err.status === 404 && err.message === 'no such agent call: /call/nope')
  })

  it('refuses a wrong secret', async () => {
    assert.deepEqual(await raw('/call/add', 'wrong', '{"a":1,"b":1}'), { status: 403, body: { error: 'agent secret missing or wrong' } })
  })

  it('streams bytes in and out, and a failure before any output with the same encoding as calls', async () => {
    const answer = await client.stream('upper', { prefix: '> ' }, Readable.from([Buffer.from('abc')]))
    const chunks: Buffer[] = []
    for await (const c of answer) chunks.push(c as Buffer)
    assert.equal(Buffer.concat(chunks).toString(), '> ABC')
    assert.equal(answer.complete, true)
    await assert.rejects(client.stream('upper', { prefix: 'refuse' }), (err: unknown) => err instanceof XapiError && err.description.join() === 'VDI_IN_USE,OpaqueRef:vdi,import')
  })

  it('fails an in-process stream the same way as one over the socket', async () => {
    const local = new AgentClient<TestContract>(socketTransport('/nonexistent.sock', 'secret'), {
      upper: async ({ prefix }) => {
        throw prefix === 'xapi' ? new XapiError('VDI_IN_USE', ['OpaqueRef:vdi', 'import']) : new Error('disk on fire')
      },
    })
    await assert.rejects(local.stream('upper', { prefix: 'xapi' }), (err: unknown) => err instanceof XapiError && err.description.join() === 'VDI_IN_USE,OpaqueRef:vdi,import')
    await assert.rejects(local.stream('upper', { prefix: 'plain' }), (err: unknown) => err instanceof AgentError && err.status === 500 && err.message === 'disk on fire')
  })

  it('connects a raw byte stream, and refuses an unknown one', async () => {
    const socket = await client.connect('echo', null)
    socket.write('ping')
    const [data] = (await new Promise((resolve) => socket.once('data', (d: Buffer) => resolve([d])))) as [Buffer]
    assert.equal(data.toString(), 'ping')
    socket.destroy()
    const untyped = client as unknown as AgentClient<{ calls: object; streams: object; connects: { nope: null } }>
    await assert.rejects(untyped.connect('nope', null), (err: unknown) => err instanceof AgentError && err.status === 403)
  })
})

// Compile-time: a contract carrying what JSON would lose or change names the offending methods.
interface NotJsonContract {
  calls: {
    buffer: { args: { data: Buffer }; result: void }
    date: { args: void; result: Date }
    fn: { args: { done: () => void }; result: void }
    holes: { args: (string | undefined)[]; result: void }
    loose: { args: unknown; result: void }
    fine: { args: { name?: string; sizes: number[]; tags: Record<string, string> }; result: null }
  }
  streams: { map: Map<string, string>; fine: null }
  connects: { fine: { vm: string } }
}
type Flagged = NotJson<NotJsonContract>
type Expected = 'buffer' | 'date' | 'fn' | 'holes' | 'loose' | 'map'
const flaggedExactly: [Flagged] extends [Expected] ? ([Expected] extends [Flagged] ? true : false) : false = true

describe('contract checks', () => {
  it('flags arguments and results that are not JSON (at compile time)', () => {
    assert.equal(flaggedExactly, true)
  })
})
