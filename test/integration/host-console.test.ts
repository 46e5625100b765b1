// The host's console, as XO Lite's host page opens it: host.control_domain's rfb console, its
// location as a WebSocket (subprotocol binary, session_id in the query), and noVNC's RFB 3.8
// handshake against a real Xvnc showing an xterm with /bin/login. The VNC server and its xterm
// start with the first client, go when nobody has been connected for the idle time, start again
// for the next client, and are gone when the daemon stops.
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import { alive } from '../../src/lib/process.js'
import { call, Daemon, login, waitFor } from '../helpers/daemon.js'

const daemon = new Daemon({ env: { FLOTILLA_HOST_CONSOLE_IDLE_SECONDS: '2' } })
let url: string
let session: string
let location: string
const seen = new Set<number>()

const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
const pidFile = () => join(daemon.dataDir, 'run', 'console', 'pids.json')
const pids = (): number[] => (existsSync(pidFile()) ? (JSON.parse(readFileSync(pidFile(), 'utf8')) as number[]) : [])
const comm = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return ''
  }
}
/** Alive and not a zombie. */
const running = (pid: number) => alive(pid) && !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
const childrenOf = (pid: number) =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return Number(readFileSync(`/proc/${d}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]) === pid
      } catch {
        return false
      }
    })
    .map(Number)

/** The WebSocket as noVNC reads it: bytes on demand. */
class RfbSocket {
  private buffered = Buffer.alloc(0)
  private waiter?: () => void
  closed = false
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d])
      this.waiter?.()
    })
    ws.on('close', () => {
      this.closed = true
      this.waiter?.()
    })
  }

  async read(n: number, ms = 15_000): Promise<Buffer> {
    const deadline = Date.now() + ms
    while (this.buffered.length < n) {
      if (this.closed) throw new Error(`closed after ${this.buffered.length} of ${n} bytes`)
      if (Date.now() > deadline) throw new Error(`timed out reading ${n} bytes`)
      await new Promise<void>((resolve) => {
        this.waiter = resolve
        setTimeout(resolve, 200)
      })
    }
    const out = this.buffered.subarray(0, n)
    this.buffered = this.buffered.subarray(n)
    return out
  }

  send(b: Buffer | string): void {
    this.ws.send(typeof b === 'string' ? Buffer.from(b) : b)
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.ws.readyState === WebSocket.CLOSED ? resolve() : (this.ws.once('close', () => resolve()), this.ws.close())))
  }
}

function open(address: string): Promise<RfbSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(address, ['binary'], { rejectUnauthorized: false })
    const rfb = new RfbSocket(ws)
    ws.once('open', () => resolve(rfb))
    ws.once('unexpected-response', (_req, res) => {
      ws.terminate()
      reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }))
    })
    ws.once('error', reject)
  })
}

/** XO Lite's address: the console's location as wss:, with the session. */
const wsAddress = (withSession = true) => {
  const u = new URL(location)
  u.protocol = 'wss:'
  if (withSession) u.searchParams.set('session_id', session)
  return u.toString()
}

/** RFB 3.8 up to ServerInit, then full-screen updates until one has a lit pixel (the xterm's text). */
async function handshakeAndFrame(rfb: RfbSocket): Promise<{ width: number; height: number; name: string }> {
  assert.equal((await rfb.read(12)).toString(), 'RFB 003.008\n')
  rfb.send('RFB 003.008\n')
  const count = (await rfb.read(1))[0]!
  assert.ok(count > 0, 'security types offered')
  const types = [...(await rfb.read(count))]
  assert.ok(types.includes(1), `security None among ${types}`)
  rfb.send(Buffer.from([1]))
  assert.equal((await rfb.read(4)).readUInt32BE(0), 0, 'SecurityResult OK')
  rfb.send(Buffer.from([1])) // ClientInit: shared
  const init = await rfb.read(24)
  const width = init.readUInt16BE(0)
  const height = init.readUInt16BE(2)
  const bpp = init[4]!
  const name = (await rfb.read(init.readUInt32BE(20))).toString()
  const request = Buffer.alloc(10)
  request.writeUInt8(3, 0)
  request.writeUInt16BE(width, 6)
  request.writeUInt16BE(height, 8)
  const deadline = Date.now() + 20_000
  for (;;) {
    rfb.send(request)
    let lit = false
    let pixels = 0
    for (;;) {
      const type = (await rfb.read(1))[0]
      if (type === 0) break
      if (type === 2) continue // Bell
      if (type === 3) {
        await rfb.read(3)
        await rfb.read((await rfb.read(4)).readUInt32BE(0))
        continue
      }
      throw new Error(`unexpected server message ${type}`)
    }
    await rfb.read(1)
    const rects = (await rfb.read(2)).readUInt16BE(0)
    for (let i = 0; i < rects; i++) {
      const head = await rfb.read(12)
      const [w, h, encoding] = [head.readUInt16BE(4), head.readUInt16BE(6), head.readInt32BE(8)]
      assert.equal(encoding, 0, 'Raw, as no SetEncodings asked otherwise')
      const data = await rfb.read(w * h * (bpp / 8))
      pixels += w * h
      if (data.some((b) => b !== 0)) lit = true
    }
    assert.ok(pixels > 0, 'the update has pixels')
    if (lit) return { width, height, name }
    if (Date.now() > deadline) throw new Error('the screen stayed black')
    await new Promise((r) => setTimeout(r, 300))
  }
}

describe('the host console (control domain rfb)', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    const host = (await c<string[]>('host.get_all'))[0]!
    const dom0 = await c<string>('host.get_control_domain', host)
    assert.equal(await c('VM.get_is_control_domain', dom0), true)
    const records = await Promise.all((await c<string[]>('VM.get_consoles', dom0)).map(async (ref) => ({ ref, ...(await c<{ protocol: string; location: string }>('console.get_record', ref)) })))
    assert.deepEqual(records.map((r) => r.protocol).sort(), ['rfb', 'vt100'])
    const rfb = records.find((r) => r.protocol === 'rfb')!
    assert.equal(rfb.location, `https://127.0.0.1:${daemon.httpsPort}/console?ref=${rfb.ref}`)
    location = rfb.location
  })

  after(async () => {
    await daemon.dispose()
    for (const pid of seen) if (alive(pid) && ['Xvnc', 'xterm'].includes(comm(pid))) process.kill(pid, 'SIGKILL')
  })

  it('is refused without a session, and starts nothing', async () => {
    await assert.rejects(open(wsAddress(false)), (err: { status?: number }) => err.status === 401)
    assert.deepEqual(pids(), [])
  })

  it('shows a 1024x768 screen with the login prompt\'s xterm to a client with a session, and to a second one meanwhile', async () => {
    const first = await open(wsAddress())
    const init = await handshakeAndFrame(first)
    assert.equal(init.width, 1024)
    assert.equal(init.height, 768)
    assert.ok(init.name.length > 0)
    const [xvnc, xterm] = pids()
    assert.ok(xvnc && xterm)
    for (const p of pids()) seen.add(p)
    assert.equal(comm(xvnc), 'Xvnc')
    assert.equal(comm(xterm), 'xterm')
    await waitFor('login under the xterm', () => childrenOf(xterm).some((p) => comm(p) === 'login'), 10_000)

    const second = await open(wsAddress())
    assert.deepEqual(await handshakeAndFrame(second), init)
    assert.deepEqual(pids(), [xvnc, xterm], 'the same server for both')
    await second.close()
    // The first is still served (a full update of one pixel).
    first.send(Buffer.from([3, 0, 0, 0, 0, 0, 0, 1, 0, 1]))
    assert.equal((await first.read(1))[0], 0)
    await first.close()
  })

  it('the vt100 console of the control domain is not served', async () => {
    const host = (await c<string[]>('host.get_all'))[0]!
    const dom0 = await c<string>('host.get_control_domain', host)
    const consoles = await c<string[]>('VM.get_consoles', dom0)
    const protocols = await Promise.all(consoles.map((ref) => c<string>('console.get_protocol', ref)))
    const vt100 = consoles[protocols.indexOf('vt100')]!
    const u = new URL(await c<string>('console.get_location', vt100))
    u.protocol = 'wss:'
    u.searchParams.set('session_id', session)
    await assert.rejects(open(u.toString()), (err: { status?: number }) => err.status === 404)
  })

  it('stops when nobody has been connected for the idle time, and starts again for the next client', async () => {
    const before = [...seen]
    await waitFor('the idle teardown', () => pids().length === 0 && before.every((p) => !running(p)), 15_000)
    const rfb = await open(wsAddress())
    await handshakeAndFrame(rfb)
    const now = pids()
    assert.equal(now.length, 2)
    assert.ok(now.every((p) => !before.includes(p) && running(p)))
    for (const p of now) seen.add(p)
    await rfb.close()
  })

  it('leaves no Xvnc or xterm once the daemon stops, even with a client connected', async () => {
    const rfb = await open(wsAddress())
    await handshakeAndFrame(rfb)
    const last = pids()
    for (const p of last) seen.add(p)
    assert.ok(last.every(running))
    await daemon.stop()
    for (const pid of seen) assert.equal(running(pid), false, `${pid} is gone`)
    await waitFor('the client\'s socket closed', () => rfb.closed, 5000)
  })

  it('a daemon that died with the console running stops its Xvnc and xterm at its next start', async () => {
    await daemon.start()
    session = await login(url)
    const rfb = await open(wsAddress())
    await handshakeAndFrame(rfb)
    const orphans = pids()
    for (const p of orphans) seen.add(p)
    await daemon.crash(false)
    assert.ok(orphans.every(running), 'a crash leaves them running')
    await daemon.start()
    for (const pid of orphans) assert.equal(running(pid), false, `${pid} is gone`)
    assert.deepEqual(pids(), [])
  })
})
