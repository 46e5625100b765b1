// /console on a real test-guest VM: the VNC console over WebSocket (ws: and wss:, session by query
// and by cookie), the serial console over HTTP CONNECT (as XenCenter and xapi's clients do), and
// scenario 18 of reference/xo-compat.md §8 with Xen Orchestra's own client library.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import { call, Daemon, login, PASSWORD, waitFor } from '../helpers/daemon.js'

type XapiClient = {
  connect(): Promise<void>
  disconnect(): Promise<void>
  objectsFetched: Promise<void>
  sessionId: string
  getObject(refOrUuid: string): any
  [k: string]: any
}

const daemon = new Daemon()
let url: string
let session: string
let vm: { ref: string; uuid: string }
const consoles: Record<string, { ref: string; uuid: string; location: string }> = {}

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)

const RFB_GREETING = /^RFB 003\.00\d\n/

/** Opens a WebSocket and resolves with it and its first binary message; rejects on refusal. */
function firstFrame(address: string, protocols: string[] | undefined, opts: { headers?: Record<string, string> } = {}): Promise<{ ws: WebSocket; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(address, protocols, { rejectUnauthorized: false, ...opts })
    const timer = setTimeout(() => (ws.terminate(), reject(new Error(`no frame from ${address}`))), 10_000)
    ws.once('message', (data: Buffer, isBinary: boolean) => {
      clearTimeout(timer)
      assert.equal(isBinary, true, 'binary frames')
      resolve({ ws, data })
    })
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer)
      ws.terminate()
      reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }))
    })
    ws.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

const closeWs = (ws: WebSocket) => new Promise<void>((resolve) => (ws.readyState === WebSocket.CLOSED ? resolve() : (ws.once('close', () => resolve()), ws.close())))

/** The status an upgrade is refused with. */
async function refusal(address: string, opts: { headers?: Record<string, string> } = {}): Promise<number> {
  try {
    const { ws } = await firstFrame(address, ['binary'], opts)
    ws.terminate()
    return 101
  } catch (err) {
    return (err as { status?: number }).status ?? -1
  }
}

/** `CONNECT <path> HTTP/1.0` on a fresh socket: the response head, and the socket for what follows. */
function httpConnect(path: string, tls = false): Promise<{ head: string; socket: Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket: Socket = tls ? tlsConnect({ host: '127.0.0.1', port: daemon.httpsPort, rejectUnauthorized: false }) : netConnect(daemon.httpPort, '127.0.0.1')
    let buffered = Buffer.alloc(0)
    const onData = (d: Buffer) => {
      buffered = Buffer.concat([buffered, d])
      const end = buffered.indexOf('\r\n\r\n')
      if (end < 0) return
      socket.off('data', onData)
      socket.pause()
      resolve({ head: buffered.subarray(0, end).toString(), socket, rest: buffered.subarray(end + 4) })
    }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.once(tls ? 'secureConnect' : 'connect', () => socket.write(`CONNECT ${path} HTTP/1.0\r\n\r\n`))
  })
}

/** Reads from a socket (after `rest`) until `pattern` matches what came, or fails after `ms`. */
function readUntil(socket: Socket, rest: Buffer, pattern: RegExp, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = rest.toString('latin1')
    if (pattern.test(text)) return resolve(text)
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in ${JSON.stringify(text.slice(-500))}`)), ms)
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (pattern.test(text)) {
        clearTimeout(timer)
        resolve(text)
      }
    })
    socket.resume()
  })
}

const wsUrl = (query: string) => `ws://127.0.0.1:${daemon.httpPort}/console?${query}`

describe('/console', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const ref = await c<string>('VM.clone', template, 'console')
    await c('VM.provision', ref)
    await c('VM.set_is_a_template', ref, false)
    vm = { ref, uuid: await c<string>('VM.get_uuid', ref) }
    await c('VM.start', ref, false, false)
    await waitFor('the first tick', () => /FLOTILLA tick=\d+/.test(daemon.serial(vm.uuid)))
    for (const ref of await c<string[]>('VM.get_consoles', vm.ref)) {
      const rec = await c<{ uuid: string; protocol: string; location: string }>('console.get_record', ref)
      consoles[rec.protocol] = { ref, uuid: rec.uuid, location: rec.location }
    }
  })
  after(async () => {
    if (vm) await c('VM.hard_shutdown', vm.ref).catch(() => undefined)
    await daemon.dispose()
  })

  it('has an rfb and a vt100 console located at /console?uuid=', () => {
    assert.deepEqual(Object.keys(consoles).sort(), ['rfb', 'vt100'])
    for (const { uuid, location } of Object.values(consoles)) assert.equal(location, `https://127.0.0.1:${daemon.httpsPort}/console?uuid=${uuid}`)
  })

  it('serves VNC over a WebSocket with subprotocol binary, session in the query', async () => {
    const { ws, data } = await firstFrame(wsUrl(`uuid=${consoles.rfb!.uuid}&session_id=${session}`), ['binary'])
    assert.equal(ws.protocol, 'binary')
    assert.match(data.toString('latin1'), RFB_GREETING)
    // Both ways: answer the version; QEMU offers its security types (1 = None).
    const next = new Promise<Buffer>((resolve) => ws.once('message', (d: Buffer) => resolve(d)))
    ws.send(Buffer.from('RFB 003.008\n'))
    const types = await next
    assert.ok(types.length >= 2 && types[0]! >= 1, `security types ${types.toString('hex')}`)
    await closeWs(ws)
  })

  it('takes the session from a cookie, as xo-server sends it', async () => {
    const { ws, data } = await firstFrame(wsUrl(`uuid=${consoles.rfb!.uuid}`), ['binary'], { headers: { cookie: `session_id=${session}` } })
    assert.equal(ws.protocol, 'binary')
    assert.match(data.toString('latin1'), RFB_GREETING)
    await closeWs(ws)
  })

  it('works without a subprotocol, and by console ref', async () => {
    const { ws, data } = await firstFrame(wsUrl(`ref=${consoles.rfb!.ref}&session_id=${session}`), undefined)
    assert.equal(ws.protocol, '')
    assert.match(data.toString('latin1'), RFB_GREETING)
    await closeWs(ws)
  })

  it("takes a VM's uuid for its rfb console", async () => {
    const { ws, data } = await firstFrame(wsUrl(`uuid=${vm.uuid}&session_id=${session}`), ['binary'])
    assert.match(data.toString('latin1'), RFB_GREETING)
    await closeWs(ws)
  })

  it('serves wss: on the HTTPS port', async () => {
    const { ws, data } = await firstFrame(`wss://127.0.0.1:${daemon.httpsPort}/console?uuid=${consoles.rfb!.uuid}&session_id=${session}`, ['binary'])
    assert.equal(ws.protocol, 'binary')
    assert.match(data.toString('latin1'), RFB_GREETING)
    await closeWs(ws)
  })

  it('serves the serial console after an HTTP/1.0 CONNECT, and again after the first client left', async () => {
    for (let round = 0; round < 2; round++) {
      const { head, socket, rest } = await httpConnect(`/console?uuid=${consoles.vt100!.uuid}&session_id=${session}`)
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/)
      await readUntil(socket, rest, /FLOTILLA tick=\d+[^\n]*\n/, 5_000)
      socket.destroy()
    }
  })

  it('serves VNC after a CONNECT over TLS, as XenCenter does', async () => {
    const { head, socket, rest } = await httpConnect(`/console?uuid=${consoles.rfb!.uuid}&session_id=${session}`, true)
    assert.match(head, /^HTTP\/1\.1 200 OK\r\n/)
    assert.match(await readUntil(socket, rest, /RFB 003\.00\d\n/), RFB_GREETING)
    socket.destroy()
  })

  it('refuses a missing or bad session before upgrading', async () => {
    assert.equal(await refusal(wsUrl(`uuid=${consoles.rfb!.uuid}`)), 401)
    assert.equal(await refusal(wsUrl(`uuid=${consoles.rfb!.uuid}&session_id=OpaqueRef:${randomUUID()}`)), 401)
    assert.equal(await refusal(wsUrl(`uuid=${consoles.rfb!.uuid}`), { headers: { cookie: 'session_id=OpaqueRef:NULL' } }), 401)
    const { head, socket } = await httpConnect(`/console?uuid=${consoles.vt100!.uuid}&session_id=bogus`)
    assert.match(head, /^HTTP\/1\.1 401 /)
    socket.destroy()
  })

  it('answers 404 for an unknown console', async () => {
    assert.equal(await refusal(wsUrl(`uuid=${randomUUID()}&session_id=${session}`)), 404)
    assert.equal(await refusal(wsUrl(`ref=OpaqueRef:${randomUUID()}&session_id=${session}`)), 404)
    assert.equal(await refusal(wsUrl(`session_id=${session}`)), 404)
    const { head, socket } = await httpConnect(`/console?uuid=${randomUUID()}&session_id=${session}`)
    assert.match(head, /^HTTP\/1\.1 404 /)
    socket.destroy()
  })

  it('18: Xen Orchestra reaches the console at vm.$consoles[].location', async () => {
    const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => XapiClient }
    const xapi = new Xapi({ url: daemon.url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, callTimeout: 30e3, eventPollDelay: 1e3, syncStackTraces: true })
    try {
      await xapi.connect()
      await xapi.objectsFetched
      const record = await waitFor('the VM with its consoles in the cache', () => {
        const o = xapi.getObject(vm.ref)
        return o?.$consoles?.length === 2 && o.$consoles.every(Boolean) ? o : undefined
      }, 10_000)
      const rfb = record.$consoles.find((con: { protocol: string }) => con.protocol === 'rfb')
      assert.ok(rfb, 'an rfb console')
      const location = new URL(rfb.location)
      location.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'
      location.searchParams.set('session_id', xapi.sessionId)
      const { ws, data } = await firstFrame(location.href, ['binary'])
      assert.equal(ws.protocol, 'binary')
      assert.match(data.toString('latin1'), RFB_GREETING)
      await closeWs(ws)
    } finally {
      await xapi.disconnect().catch(() => undefined)
    }
  })

  it('closes the WebSocket when the VM stops, and then answers 404', async () => {
    const { ws } = await firstFrame(wsUrl(`uuid=${consoles.rfb!.uuid}&session_id=${session}`), ['binary'])
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
    await c('VM.hard_shutdown', vm.ref)
    await closed
    assert.equal(await refusal(wsUrl(`uuid=${consoles.rfb!.uuid}&session_id=${session}`)), 404)
  })
})
