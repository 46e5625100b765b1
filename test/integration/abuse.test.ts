// Hostile and careless clients against a real daemon: password guessing (slowed per address and
// per user, logged, never locking root out from elsewhere), idle, trickling and non-handshaking
// connections, too many connections from one address, stalled uploads; and what must still work
// with short limits: long event.from polls, slow uploads, HTTP Basic authentication.
// The loopback network is a whole /8 on Linux: clients bind 127.0.0.x to be different addresses.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login, PASSWORD, waitFor } from '../helpers/daemon.js'

const SECONDS = {
  headers: 1,
  keepAlive: 1,
  stall: 2,
  tlsHandshake: 1,
}
const CAP = 30
const daemon = new Daemon({
  env: {
    FLOTILLA_HTTP_HEADERS_SECONDS: String(SECONDS.headers),
    FLOTILLA_HTTP_KEEPALIVE_SECONDS: String(SECONDS.keepAlive),
    FLOTILLA_HTTP_STALL_SECONDS: String(SECONDS.stall),
    FLOTILLA_TLS_HANDSHAKE_SECONDS: String(SECONDS.tlsHandshake),
    FLOTILLA_MAX_CONNECTIONS_PER_ADDRESS: String(CAP),
    // Faster than the default (1/s) so that the test is short; the unit tests cover the defaults.
    FLOTILLA_LOGIN_PER_SECOND: '4',
    FLOTILLA_LOGIN_MAX_WAIT_SECONDS: '3',
    // Small, so that a leaked session of a Basic-auth request evicts the test's own session.
    FLOTILLA_MAX_SESSIONS_PER_USER: '3',
  },
})
const MiB = 1 << 20
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** One request on its own connection from `from` (a 127.0.0.x address). */
function send(from: string, method: string, path: string, opts: { body?: Buffer; headers?: Record<string, string | number> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${daemon.url}${path}`, { method, headers: opts.headers, localAddress: from, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** A JSON-RPC call from `from`: the result, or the error's code. */
async function rpc(from: string, method: string, ...params: unknown[]): Promise<{ result?: unknown; error?: string }> {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }))
  const r = await send(from, 'POST', '/jsonrpc', { body, headers: { 'content-type': 'application/json', 'content-length': body.length } })
  const j = JSON.parse(r.body.toString()) as { result?: unknown; error?: { message: string } }
  return j.error ? { error: j.error.message } : { result: j.result }
}

/** A raw TCP connection from `from` to `port`, and when it closed (ms after it was opened), once it has. */
function rawConnection(from: string, port: number): { socket: Socket; opened: Promise<void>; closed: Promise<number> } {
  const t0 = Date.now()
  const socket = connect({ host: '127.0.0.1', port, localAddress: from })
  socket.on('error', () => undefined)
  socket.on('data', () => undefined)
  const opened = new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - t0)))
  return { socket, opened, closed }
}

/** Resolves `p`, or rejects if it takes longer than `ms`. */
const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what}: still pending after ${ms} ms`)))])

let session: string
const c = <T = unknown>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)

before(async () => {
  await daemon.start()
  session = await login(daemon.url)
})
after(() => daemon.dispose())

describe('password guessing', () => {
  it('gets the same error for a known and an unknown user, logged with the client address and user name, never the password', async () => {
    const guess = `guess-${randomBytes(6).toString('hex')}`
    assert.equal((await rpc('127.0.0.1', 'session.login_with_password', 'root', guess)).error, 'SESSION_AUTHENTICATION_FAILED')
    assert.equal((await rpc('127.0.0.1', 'session.login_with_password', 'nobody', guess)).error, 'SESSION_AUTHENTICATION_FAILED')
    await waitFor('the log lines', () => daemon.output.includes('login failed: user "nobody" from HTTP 127.0.0.1'), 5000)
    assert.match(daemon.output, /login failed: user "root" from HTTP 127\.0\.0\.1/)
    assert.ok(!daemon.output.includes(guess), 'the password is never logged')
  })

  it('is slowed to a few attempts per second per address, while root logs in at once from another address', async () => {
    const attacker = '127.0.0.2'
    const t0 = Date.now()
    const guesses = Array.from({ length: 12 }, (_, i) => rpc(attacker, 'session.login_with_password', 'root', `guess-${i}`).then((r) => ({ ...r, at: Date.now() - t0 })))
    await sleep(300)
    const admin = await rpc('127.0.0.1', 'session.login_with_password', 'root', PASSWORD)
    const adminAt = Date.now() - t0
    assert.ok(typeof admin.result === 'string', `root logs in from another address: ${admin.error}`)
    const answers = await Promise.all(guesses)
    assert.ok(answers.every((a) => a.error === 'SESSION_AUTHENTICATION_FAILED'), JSON.stringify(answers))
    const last = Math.max(...answers.map((a) => a.at))
    // Five free mistakes, then four a second at most: the last of the other seven not before 1.75 s.
    assert.ok(last >= 1500, `12 guesses answered within ${last} ms`)
    assert.ok(adminAt < last, `root (${adminAt} ms) was not queued behind the guesses (last at ${last} ms)`)
    assert.match(daemon.output, /login failed: user "root" from HTTP 127\.0\.0\.2/)
  })

  it('refuses attempts that cannot start within the longest wait, without checking them', async () => {
    const attempts = await Promise.all(Array.from({ length: 25 }, (_, i) => rpc('127.0.0.4', 'session.login_with_password', 'nobody', `guess-${i}`)))
    assert.ok(attempts.every((a) => a.error === 'SESSION_AUTHENTICATION_FAILED'))
    assert.match(daemon.output, /login refused unchecked: user "nobody" from HTTP 127\.0\.0\.4/)
  })
})

describe('connections', () => {
  it('that send nothing are closed after the header timeout', async () => {
    const { closed } = rawConnection('127.0.0.1', daemon.httpPort)
    const ms = await within(closed, 10_000, 'an idle connection')
    assert.ok(ms >= SECONDS.headers * 1000 - 100, `closed after ${ms} ms`)
  })

  it('that trickle their request head are cut', async () => {
    const { socket, opened, closed } = rawConnection('127.0.0.1', daemon.httpPort)
    await opened
    const head = `GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(1000)}`
    let i = 0
    const trickle = setInterval(() => socket.destroyed || socket.write(head[i++ % head.length]!), 100)
    try {
      const ms = await within(closed, 10_000, 'a trickling connection')
      assert.ok(ms >= SECONDS.headers * 1000 - 100, `closed after ${ms} ms`)
    } finally {
      clearInterval(trickle)
    }
  })

  it('that never do their TLS handshake are closed', async () => {
    const { closed } = rawConnection('127.0.0.1', daemon.httpsPort)
    const ms = await within(closed, 10_000, 'a connection without TLS handshake')
    assert.ok(ms >= SECONDS.tlsHandshake * 1000 - 100, `closed after ${ms} ms`)
  })

  it('are capped per address, and a long event.from poll outlives every timeout', async () => {
    const from = '127.0.0.3'
    const { token } = await c<{ token: string }>('event.from', ['vm'], '', 1)
    const t0 = Date.now()
    // CAP connections, each with a long poll (longer than the header, keep-alive and stall timeouts).
    const polls = Array.from({ length: CAP }, () => rpc(from, 'event.from', session, ['vm'], token, 4))
    await sleep(500)
    const extra = rawConnection(from, daemon.httpPort)
    const ms = await within(extra.closed, 2000, `connection ${CAP + 1}`)
    assert.ok(ms < SECONDS.headers * 1000, `connection ${CAP + 1} refused at once (${ms} ms)`)
    assert.ok((await rpc('127.0.0.5', 'system.isAlive', 'x')).result === 'x', 'another address is not refused')
    const answers = await Promise.all(polls)
    assert.ok(Date.now() - t0 >= 3500)
    assert.ok(answers.every((a) => typeof (a.result as { token?: string } | undefined)?.token === 'string'), JSON.stringify(answers.find((a) => a.error)))
    // The polls' connections are closed and no longer counted.
    await waitFor('a connection from the capped address again', async () => (await rpc(from, 'system.isAlive', 'y').catch(() => ({ result: undefined }))).result === 'y', 5000)
  })
})

describe('uploads', () => {
  let vdi: string
  before(async () => {
    const pool = (await c<string[]>('pool.get_all'))[0]
    const sr = await c<string>('pool.get_default_SR', pool)
    vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 4 * MiB, name_label: 'abuse test', name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
  })

  /** PUT /import_raw_vdi sending `chunks` with `gapMs` between them, then (unless `stallAfter`) the end. */
  function slowUpload(chunks: Buffer[], gapMs: number, stallAfter?: number): { done: Promise<{ status: number; cut: boolean }>; task: Promise<string> } {
    const total = chunks.reduce((n, b) => n + b.length, 0)
    let gotTask!: (t: string) => void
    const task = new Promise<string>((r) => (gotTask = r))
    const done = new Promise<{ status: number; cut: boolean }>((resolve) => {
      const q = new URLSearchParams({ session_id: session, vdi, format: 'raw' })
      const req = request(`${daemon.url}/import_raw_vdi?${q}`, { method: 'PUT', headers: { 'content-length': total }, agent: false })
      let status = 0
      req.on('response', (res) => {
        status = res.statusCode ?? 0
        gotTask(String(res.headers['task-id']))
        res.resume()
        res.on('end', () => resolve({ status, cut: false }))
        res.on('error', () => resolve({ status, cut: true }))
        res.on('close', () => resolve({ status, cut: !res.complete }))
      })
      req.on('error', () => resolve({ status, cut: true }))
      req.flushHeaders()
      void (async () => {
        for (const [i, chunk] of chunks.entries()) {
          if (i === stallAfter) return
          req.write(chunk)
          await sleep(gapMs)
        }
        req.end()
      })()
    })
    return { done, task }
  }

  it('that are slow but keep moving are not cut, however long they take', async () => {
    const data = randomBytes(4 * MiB)
    const chunks = Array.from({ length: 16 }, (_, i) => data.subarray(i * 256 * 1024, (i + 1) * 256 * 1024))
    const t0 = Date.now()
    const { done, task } = slowUpload(chunks, 300)
    const outcome = await done
    assert.ok(Date.now() - t0 > 2 * SECONDS.stall * 1000, 'the upload took longer than the stall timeout')
    assert.deepEqual(outcome, { status: 200, cut: false })
    const t = await task
    await waitFor('the import task', async () => (await c<string>('task.get_status', t)) !== 'pending', 10_000)
    assert.equal(await c('task.get_status', t), 'success')
    const exported = await send('127.0.0.1', 'GET', `/export_raw_vdi?${new URLSearchParams({ session_id: session, vdi, format: 'raw' })}`)
    assert.ok(exported.body.equals(data), 'the disk holds what was sent')
  })

  it('that stop moving are cut after the stall timeout', async () => {
    const chunks = Array.from({ length: 4 }, () => randomBytes(MiB))
    const t0 = Date.now()
    // The answer has no length (it ends with the connection), so its end is the cut.
    const { done } = slowUpload(chunks, 10, 1)
    await within(done, 15_000, 'a stalled upload')
    assert.ok(Date.now() - t0 >= SECONDS.stall * 1000 - 100, `cut after ${Date.now() - t0} ms`)
  })
})

describe('HTTP Basic authentication', () => {
  const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })
  let vdi: string
  let vm: string
  before(async () => {
    session = await login(daemon.url)
    const pool = (await c<string[]>('pool.get_all'))[0]
    const sr = await c<string>('pool.get_default_SR', pool)
    vdi = await c<string>('VDI.create', { SR: sr, virtual_size: MiB, name_label: 'basic auth', name_description: '', type: 'user', sharable: false, read_only: false, other_config: {} })
    vm = await c<string>('VM.create', { name_label: 'basic auth', name_description: '' })
  })

  it('is accepted on /export_raw_vdi and /export, with a session made for the request and destroyed after it', async () => {
    session = await login(daemon.url)
    for (let i = 0; i < 2; i++) {
      const raw = await send('127.0.0.1', 'GET', `/export_raw_vdi?vdi=${vdi}&format=raw`, { headers: basic('root', PASSWORD) })
      assert.equal(raw.status, 200, raw.body.toString())
      assert.equal(raw.body.length, MiB)
      const xva = await send('127.0.0.1', 'GET', `/export?ref=${vm}`, { headers: basic('root', PASSWORD) })
      assert.equal(xva.status, 200, xva.body.toString())
      assert.ok(xva.body.subarray(0, 512).toString('latin1').includes('ova.xml'))
    }
    // Four logins beyond the cap of three sessions: had any stayed, this one would be gone.
    assert.ok(await c<string[]>('host.get_all'), 'the test\'s own session is still valid')
  })

  it('goes through the login guard: a wrong password is refused with 401, logged, and fails the client\'s task', async () => {
    const task = await c<string>('task.create', 'basic auth', '')
    const r = await send('127.0.0.6', 'GET', `/export_raw_vdi?vdi=${vdi}&format=raw&task_id=${task}`, { headers: basic('root', 'wrong') })
    assert.equal(r.status, 401)
    assert.equal(await c('task.get_status', task), 'failure')
    assert.equal((await c<string[]>('task.get_error_info', task))[0], 'SESSION_AUTHENTICATION_FAILED')
    assert.match(daemon.output, /login failed: user "root" from HTTP 127\.0\.0\.6/)
  })
})
