// The inter-host agent channel: an agent server with mutual TLS (agent/server.ts,
// startAgentTlsServer) and the TLS transport (agent/tls-transport.ts), with certificates of real
// pool CAs (daemon/pool-ca.ts) on loopback. A host of the pool calls, streams and connects; a
// host of another pool, a client without a certificate, and a client that does not trust the
// server are refused before any handler runs; an agent that cannot be reached is
// CANNOT_CONTACT_HOST [host].
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { request } from 'node:https'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { AgentClient } from '../../src/agent/client.js'
import type { CallHandlers } from '../../src/agent/contract.js'
import { AgentUnreachable } from '../../src/agent/failure.js'
import { startAgentTlsServer, type AgentTlsServer } from '../../src/agent/server.js'
import { tlsTransport, type AgentTls, type TlsAgentTransport } from '../../src/agent/tls-transport.js'
import { adoptPoolCa, ensurePoolTrust, readPoolCa } from '../../src/daemon/pool-ca.js'

interface TestContract {
  calls: {
    add: { args: { a: number; b: number }; result: number }
    fail: { args: void; result: void }
    slow: { args: { ms: number }; result: string }
  }
  streams: { upper: { prefix: string } }
  connects: { echo: null }
}

/** The handlers that ran, by name: a refused client must not add to them. */
const ran: string[] = []

const methods: CallHandlers<TestContract> = {
  add: async ({ a, b }) => (ran.push('add'), a + b),
  fail: async () => {
    ran.push('fail')
    throw new XapiError('VM_BAD_POWER_STATE', ['OpaqueRef:vm', 'running', 'halted'])
  },
  slow: async ({ ms }) => {
    ran.push('slow')
    await new Promise((resolve) => setTimeout(resolve, ms))
    return 'done'
  },
}

const HOST = 'OpaqueRef:host-a'
const cannotContact = (err: unknown) => err instanceof AgentUnreachable && err instanceof XapiError && err.description.join() === `CANNOT_CONTACT_HOST,${HOST}`

describe('agent over mutual TLS', () => {
  let root: string
  /** The serving host, another host of its pool, and a host of another pool. */
  let serving: AgentTls
  let member: AgentTls
  let foreign: AgentTls
  let server: AgentTlsServer
  let url: string
  const transports: TlsAgentTransport[] = []
  const clientWith = (tls: AgentTls, target = url, connectTimeoutMs?: number) => {
    const transport = tlsTransport({ url: target, hostRef: HOST, tls, connectTimeoutMs })
    transports.push(transport)
    return new AgentClient<TestContract>(transport)
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'agent-tls-'))
    serving = await ensurePoolTrust(join(root, 'a'), 'host-a', '127.0.0.1')
    member = await adoptPoolCa(join(root, 'a2'), await readPoolCa(join(root, 'a')), 'host-a2', '127.0.0.1')
    foreign = await ensurePoolTrust(join(root, 'b'), 'host-b', '127.0.0.1')
    server = await startAgentTlsServer<TestContract>({ host: '127.0.0.1', port: 0, tls: serving }, methods, {
      stream: {
        upper: async ({ prefix }, body, out) => {
          ran.push('upper')
          const chunks: Buffer[] = []
          for await (const c of body) chunks.push(c as Buffer)
          out.writeHead(200, { 'content-type': 'text/plain' })
          out.end(prefix + Buffer.concat(chunks).toString().toUpperCase())
        },
      },
      connect: {
        echo: async (_args, socket) => {
          ran.push('echo')
          socket.write('HTTP/1.1 200 Connection established\r\n\r\n')
          socket.pipe(socket)
        },
      },
    })
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    for (const t of transports) t.close()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await rm(root, { recursive: true, force: true })
  })

  it('serves calls to another host of the pool, failures with their XenAPI code', async () => {
    const client = clientWith(member)
    assert.equal(await client.call('add', { a: 2, b: 3 }), 5)
    await assert.rejects(client.call('fail'), (err: unknown) => err instanceof XapiError && err.description.join() === 'VM_BAD_POWER_STATE,OpaqueRef:vm,running,halted')
  })

  it('gives a call all the time its work takes: only the connection is timed', async () => {
    assert.equal(await clientWith(member, url, 50).call('slow', { ms: 300 }), 'done')
  })

  it('streams bytes in and out', async () => {
    const answer = await clientWith(member).stream('upper', { prefix: '> ' }, Readable.from([Buffer.from('abc'), Buffer.from('def')]))
    const chunks: Buffer[] = []
    for await (const c of answer) chunks.push(c as Buffer)
    assert.equal(Buffer.concat(chunks).toString(), '> ABCDEF')
    assert.equal(answer.complete, true)
  })

  it('connects a raw byte stream both ways', async () => {
    const socket = await clientWith(member).connect('echo', null)
    socket.write('ping')
    const [data] = (await new Promise((resolve) => socket.once('data', (d: Buffer) => resolve([d])))) as [Buffer]
    assert.equal(data.toString(), 'ping')
    socket.destroy()
  })

  it('refuses a host of another pool, even one that trusts this pool\'s CA, before any handler runs', async () => {
    const before = ran.length
    const outsider = clientWith({ ca: serving.ca, cert: foreign.cert, key: foreign.key })
    await assert.rejects(outsider.call('add', { a: 1, b: 1 }), cannotContact)
    await assert.rejects(outsider.stream('upper', { prefix: '' }, Readable.from([Buffer.from('x')])), cannotContact)
    await assert.rejects(outsider.connect('echo', null), cannotContact)
    await assert.rejects(clientWith(foreign).call('add', { a: 1, b: 1 }), cannotContact)
    assert.deepEqual(ran.slice(before), [])
  })

  it('refuses a client without a certificate before any handler runs', async () => {
    const before = ran.length
    const answered = await new Promise<string>((resolve) => {
      const req = request({ host: '127.0.0.1', port: new URL(url).port, path: '/call/add', method: 'POST', ca: serving.ca, checkServerIdentity: () => undefined, agent: false }, (res) =>
        resolve(`answered ${res.statusCode}`),
      )
      req.on('error', (err) => resolve(`refused: ${err.message}`))
      req.end('{"a":1,"b":1}')
    })
    assert.match(answered, /^refused/)
    assert.deepEqual(ran.slice(before), [])
  })

  it('does not talk to a server whose certificate is not of its pool', async () => {
    const before = ran.length
    const misled = clientWith({ ca: foreign.ca, cert: member.cert, key: member.key })
    await assert.rejects(misled.call('add', { a: 1, b: 1 }), (err: unknown) => cannotContact(err) && /certificate/i.test(String((err as Error).cause)))
    assert.deepEqual(ran.slice(before), [])
  })

  it('tells an agent that is not listening as CANNOT_CONTACT_HOST', async () => {
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    await assert.rejects(clientWith(member, `https://127.0.0.1:${port}`).call('add', { a: 1, b: 1 }), (err: unknown) => cannotContact(err) && (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED')
  })

  it('gives up on a connection whose TLS handshake does not finish', async () => {
    const accepted: Socket[] = []
    const silent: Server = createServer((socket) => void accepted.push(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const target = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`
    try {
      await assert.rejects(clientWith(member, target, 100).call('add', { a: 1, b: 1 }), (err: unknown) => cannotContact(err) && /no TLS connection/.test(String((err as Error).cause)))
    } finally {
      for (const s of accepted) s.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  })

  it('serves with a replaced CA and cuts the connections made under the old one', async () => {
    const memberClient = clientWith(member)
    const socket = await memberClient.connect('echo', null)
    const closed = new Promise((resolve) => socket.once('close', resolve))
    assert.equal(await memberClient.call('add', { a: 1, b: 2 }), 3)
    server.replaceTls(foreign)
    await closed
    await assert.rejects(memberClient.call('add', { a: 1, b: 1 }), cannotContact)
    assert.equal(await clientWith(foreign).call('add', { a: 4, b: 4 }), 8)
  })
})
