// Bad input at every layer of the RPC front door (HTTP framing, XML/JSON parsing, JSON-RPC
// envelopes, arity, types, refs, sessions, maps), checked as a client sees it: status line,
// content type, error code and parameters. After every case the daemon must still serve and
// nothing may have changed.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { readFileSync } from 'node:fs'
import { Daemon, PASSWORD, call, jsonrpc, login } from '../helpers/daemon.js'

// ---------------------------------------------------------------------------------------------
// Small clients

interface HttpReply {
  status: number
  contentType: string | null
  text: string
}

async function post(url: string, path: string, body: string, contentType = 'text/xml'): Promise<HttpReply> {
  // A bounded wait: a server that never answers must fail the case, not hang the file.
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': contentType }, body, signal: AbortSignal.timeout(10_000) })
  return { status: res.status, contentType: res.headers.get('content-type'), text: await res.text() }
}

/** A JSON-RPC request with a body we write ourselves (any envelope, valid or not). */
async function jsonRaw(url: string, body: string): Promise<HttpReply & { json?: any }> {
  const r = await post(url, '/jsonrpc', body, 'application/json')
  let json: any
  if (r.contentType === 'application/json') json = JSON.parse(r.text)
  return { ...r, json }
}

interface RawReply {
  status: number
  headers: Record<string, string>
  body: string
  /** The server closed the connection (we never close it first). */
  closed: boolean
  ms: number
}

/** Sends raw bytes on a fresh TCP connection; collects the answer until the server closes it or `waitMs` passes. */
function raw(port: number, head: string, body: Buffer | string = '', waitMs = 5000): Promise<RawReply> {
  return new Promise((resolve) => {
    const started = Date.now()
    const sock = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let closed = false
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      sock.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      const split = text.indexOf('\r\n\r\n')
      const headLines = (split >= 0 ? text.slice(0, split) : text).split('\r\n')
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headLines[0] ?? '')?.[1] ?? 0)
      const headers: Record<string, string> = {}
      for (const line of headLines.slice(1)) {
        const i = line.indexOf(':')
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
      }
      resolve({ status, headers, body: split >= 0 ? text.slice(split + 4) : '', closed, ms: Date.now() - started })
    }
    const timer = setTimeout(finish, waitMs)
    sock.on('data', (d: Buffer) => chunks.push(d))
    // Writing a body the server no longer reads may fail with EPIPE/ECONNRESET: what it already
    // answered is still what we judge.
    sock.on('error', () => undefined)
    sock.on('end', () => {
      closed = true
    })
    sock.on('close', () => {
      closed = true
      finish()
    })
    sock.on('connect', () => {
      sock.write(head)
      if (body.length) sock.write(body)
    })
  })
}

// A tiny XML-RPC request builder and a loose response reader.

type XVal = string | number | boolean | XVal[] | { [k: string]: XVal }

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const unesc = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&')

function xmlValue(v: XVal): string {
  if (typeof v === 'string') return `<value>${esc(v)}</value>`
  if (typeof v === 'number') return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`
  if (Array.isArray(v)) return `<value><array><data>${v.map(xmlValue).join('')}</data></array></value>`
  return `<value><struct>${Object.entries(v).map(([k, x]) => `<member><name>${esc(k)}</name>${xmlValue(x)}</member>`).join('')}</struct></value>`
}

function methodCall(method: string, params: XVal[]): string {
  return `<?xml version="1.0"?><methodCall><methodName>${esc(method)}</methodName><params>${params.map((p) => `<param>${xmlValue(p)}</param>`).join('')}</params></methodCall>`
}

interface XmlOutcome {
  status: number
  contentType: string | null
  text: string
  /** "Success" / "Failure" from the Status member, if there is one. */
  outcome?: string
  /** ErrorDescription's strings, for a Failure. */
  error?: string[]
}

async function xmlrpc(url: string, method: string, params: XVal[]): Promise<XmlOutcome> {
  const r = await post(url, '/', methodCall(method, params))
  const outcome = /<member><name>Status<\/name><value>(?:<string>)?(\w+)(?:<\/string>)?<\/value><\/member>/.exec(r.text)?.[1]
  let error: string[] | undefined
  const desc = /<name>ErrorDescription<\/name><value><array><data>([\s\S]*?)<\/data><\/array><\/value>/.exec(r.text)
  if (desc) error = [...desc[1]!.matchAll(/<value>(?:<string>)?([\s\S]*?)(?:<\/string>)?<\/value>/g)].map((m) => unesc(m[1]!))
  return { ...r, outcome, error }
}

/** Asserts a JSON-RPC v2 failure exactly as xapi sends it. */
function assertV2Failure(r: Awaited<ReturnType<typeof jsonrpc>>, code: string, data: string[]): void {
  assert.ok(r.error, `expected ${code}, got result ${JSON.stringify(r.result)}`)
  assert.equal(r.error.code, 1)
  assert.equal(r.error.message, code)
  assert.deepEqual(r.error.data, data)
  assert.equal('result' in r, false)
}

function assertHtml500(r: { status: number; contentType: string | null; text: string }): void {
  assert.equal(r.status, 500, r.text.slice(0, 300))
  assert.equal(r.contentType, 'text/html')
  assert.match(r.text, /<html>[\s\S]*500[\s\S]*<\/html>/)
}

const BAD_REF = 'OpaqueRef:00000000-dead-beef-0000-000000000000'
const BAD_UUID = '00000000-dead-beef-0000-000000000000'

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0)
}

// ---------------------------------------------------------------------------------------------

describe('bad input', () => {
  let daemon: Daemon
  let url = ''
  let session = ''
  /** A VM nobody is allowed to change; `mapVm` is the one the map tests change. */
  let vm = ''
  let mapVm = ''
  let vmBefore: Record<string, unknown> = {}
  let vmsBefore: string[] = []

  before(async () => {
    daemon = new Daemon()
    await daemon.start()
    url = daemon.url
    session = await login(url)
    vm = await call<string>(url, 'VM.create', session, {
      name_label: 'bad-input-vm',
      name_description: 'must not change',
      VCPUs_max: 2,
      VCPUs_at_startup: 2,
      memory_static_max: 1073741824,
      memory_dynamic_max: 1073741824,
      memory_dynamic_min: 536870912,
      memory_static_min: 536870912,
      is_a_template: false,
      other_config: { keep: 'me' },
    })
    mapVm = await call<string>(url, 'VM.create', session, { name_label: 'bad-input-map-vm', other_config: { existing: 'old' } })
    vmBefore = await call(url, 'VM.get_record', session, vm)
    vmsBefore = (await call<string[]>(url, 'VM.get_all', session)).sort()
  })

  after(async () => {
    await daemon?.dispose()
  })

  afterEach(async () => {
    // Still serves: a fresh login and host.get_all; nothing changed.
    const s = await login(url)
    const hosts = await call<string[]>(url, 'host.get_all', s)
    assert.equal(hosts.length, 1)
    assert.deepEqual((await call<string[]>(url, 'VM.get_all', s)).sort(), vmsBefore)
    assert.deepEqual(await call(url, 'VM.get_record', s, vm), vmBefore)
    await call(url, 'session.logout', s)
  })

  describe('unparseable XML-RPC bodies → HTTP 500 text/html', () => {
    it('malformed XML', async () => {
      assertHtml500(await post(url, '/', '<?xml version="1.0"?><methodCall><methodName>VM.get_all</methodName><params><param><value>x'))
      assertHtml500(await post(url, '/RPC2', '<methodCall><methodName>VM.get_all</methodName></methodCall><junk'))
      assertHtml500(await post(url, '/', 'this is not XML at all'))
    })

    it('well-formed XML that is not a methodCall', async () => {
      assertHtml500(await post(url, '/', '<?xml version="1.0"?><methodResponse><params><param><value>x</value></param></params></methodResponse>'))
      assertHtml500(await post(url, '/', '<?xml version="1.0"?><foo><methodName>VM.get_all</methodName></foo>'))
      // A methodCall without a methodName is not a call either.
      assertHtml500(await post(url, '/', '<?xml version="1.0"?><methodCall><params/></methodCall>'))
    })

    it('an entity-expansion bomb (billion laughs) is refused fast, without expanding it', async () => {
      const levels = ['<!ENTITY lol "lol">']
      for (let i = 1; i <= 9; i++) levels.push(`<!ENTITY lol${i} "${`&lol${i === 1 ? '' : i - 1};`.repeat(10)}">`)
      const bomb = `<?xml version="1.0"?><!DOCTYPE methodCall [${levels.join('')}]><methodCall><methodName>VM.get_all</methodName><params><param><value>&lol9;</value></param></params></methodCall>`
      const rssBefore = rssKiB(daemon.child.pid!)
      const started = Date.now()
      const r = await post(url, '/', bomb)
      const ms = Date.now() - started
      assertHtml500(r)
      assert.ok(ms < 2000, `took ${ms} ms`)
      // 10^9 "lol"s would be gigabytes; allow ordinary noise only.
      const grown = rssKiB(daemon.child.pid!) - rssBefore
      assert.ok(grown < 100 * 1024, `daemon RSS grew by ${grown} KiB`)
      assert.doesNotMatch(r.text, /lollollol/)
      // An external entity is not fetched either.
      const xxe = `<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY x SYSTEM "file:///etc/passwd">]><methodCall><methodName>system.isAlive</methodName><params><param><value>&x;</value></param></params></methodCall>`
      const r2 = await post(url, '/', xxe)
      assertHtml500(r2)
      assert.doesNotMatch(r2.text, /root:/)
    })
  })

  describe('bad JSON-RPC envelopes → HTTP 500 text/html', () => {
    it('malformed JSON', async () => {
      assertHtml500(await jsonRaw(url, '{"jsonrpc":"2.0","method":"VM.get_all","params":['))
      assertHtml500(await jsonRaw(url, 'not json'))
      assertHtml500(await jsonRaw(url, '[1,2,3]'))
    })

    it('no id (a notification), or a null id', async () => {
      assertHtml500(await jsonRaw(url, JSON.stringify({ jsonrpc: '2.0', method: 'host.get_all', params: [session] })))
      assertHtml500(await jsonRaw(url, JSON.stringify({ jsonrpc: '2.0', method: 'host.get_all', params: [session], id: null })))
      assertHtml500(await jsonRaw(url, JSON.stringify({ method: 'host.get_all', params: [session] })))
    })

    it('an unknown jsonrpc version', async () => {
      assertHtml500(await jsonRaw(url, JSON.stringify({ jsonrpc: '3.0', method: 'host.get_all', params: [session], id: 1 })))
      assertHtml500(await jsonRaw(url, JSON.stringify({ jsonrpc: 2, method: 'host.get_all', params: [session], id: 1 })))
    })

    it('params that are not an array in JSON-RPC 1.0', async () => {
      assertHtml500(await jsonRaw(url, JSON.stringify({ method: 'host.get_all', params: session, id: 1 })))
      assertHtml500(await jsonRaw(url, JSON.stringify({ method: 'host.get_all', params: { session }, id: 1 })))
      assertHtml500(await jsonRaw(url, JSON.stringify({ method: 'host.get_all', id: 1 })))
      // The same envelope with an array is fine, and answers in the 1.0 shape.
      const ok = await jsonRaw(url, JSON.stringify({ method: 'host.get_all', params: [session], id: 'x' }))
      assert.equal(ok.status, 200)
      assert.equal(ok.contentType, 'application/json')
      assert.equal(ok.json.error, null)
      assert.equal(ok.json.id, 'x')
      assert.equal(ok.json.result.length, 1)
    })
  })

  describe('HTTP framing', () => {
    it('a body of exactly 300 KiB is accepted', async () => {
      const prefix = JSON.stringify({ jsonrpc: '2.0', method: 'host.get_all', params: [session], id: 7 })
      const body = prefix + ' '.repeat(307200 - Buffer.byteLength(prefix))
      assert.equal(Buffer.byteLength(body), 307200)
      const r = await jsonRaw(url, body)
      assert.equal(r.status, 200)
      assert.equal(r.json.result.length, 1)
    })

    it('a body of 307201 bytes (sent in full) gets HTTP 500 and the connection closed', async () => {
      const prefix = methodCall('host.get_all', [session])
      const body = Buffer.from(prefix + ' '.repeat(307201 - Buffer.byteLength(prefix)))
      assert.equal(body.length, 307201)
      const r = await raw(daemon.httpPort, `POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: ${body.length}\r\n\r\n`, body)
      assert.equal(r.status, 500)
      assert.equal(r.headers['content-type'], 'text/html')
      assert.match(r.body, /500/)
      assert.ok(r.closed, 'the server closes the connection')
    })

    it('a huge declared Content-Length with a short body is refused at once, without waiting for the body', async () => {
      const r = await raw(daemon.httpPort, `POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: 10737418240\r\n\r\n`, methodCall('host.get_all', [session]))
      assert.equal(r.status, 500)
      assert.equal(r.headers['content-type'], 'text/html')
      assert.ok(r.closed, 'the server closes the connection')
      assert.ok(r.ms < 3000, `took ${r.ms} ms`)
      const j = await raw(daemon.httpPort, `POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 400000\r\n\r\n`, '{"jsonrpc":"2.0"')
      assert.equal(j.status, 500)
      assert.equal(j.headers['content-type'], 'text/html')
      assert.ok(j.closed)
    })

    it('a chunked POST without Content-Length gets HTTP 500', async () => {
      const body = methodCall('host.get_all', [session])
      const chunked = `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`
      const r = await raw(daemon.httpPort, `POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n`, chunked)
      assert.equal(r.status, 500)
      assert.equal(r.headers['content-type'], 'text/html')
      assert.match(r.body, /content-length/i)
      assert.ok(r.closed, 'the server closes the connection')
      const json = JSON.stringify({ jsonrpc: '2.0', method: 'host.get_all', params: [session], id: 1 })
      const j = await raw(daemon.httpPort, `POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`, `${Buffer.byteLength(json).toString(16)}\r\n${json}\r\n0\r\n\r\n`)
      assert.equal(j.status, 500)
      assert.equal(j.headers['content-type'], 'text/html')
    })
  })

  describe('API errors (JSON-RPC)', () => {
    it('wrong arity: too few and too many', async () => {
      assertV2Failure(await jsonrpc(url, 'VM.get_record', [session]), 'MESSAGE_PARAMETER_COUNT_MISMATCH', ['VM.get_record', '1', '0'])
      assertV2Failure(await jsonrpc(url, 'VM.get_record', [session, vm, 'extra']), 'MESSAGE_PARAMETER_COUNT_MISMATCH', ['VM.get_record', '1', '2'])
      assertV2Failure(await jsonrpc(url, 'VM.set_name_label', [session, vm]), 'MESSAGE_PARAMETER_COUNT_MISMATCH', ['VM.set_name_label', '2', '1'])
      // session.login_with_password takes no session, and 2 to 4 parameters.
      assertV2Failure(await jsonrpc(url, 'session.login_with_password', []), 'MESSAGE_PARAMETER_COUNT_MISMATCH', ['session.login_with_password', '2', '0'])
      assertV2Failure(await jsonrpc(url, 'session.login_with_password', ['root']), 'MESSAGE_PARAMETER_COUNT_MISMATCH', ['session.login_with_password', '2', '1'])
      for (const extra of [[], ['1.1'], ['1.1', 'bad-input-test']]) {
        const r = await jsonrpc(url, 'session.login_with_password', ['root', PASSWORD, ...extra])
        assert.equal(r.error, undefined, `${2 + extra.length} args: ${JSON.stringify(r.error)}`)
        assert.match(String(r.result), /^OpaqueRef:[0-9a-f-]{36}$/)
        await call(url, 'session.logout', r.result)
      }
      // Like xapi's generated dispatcher, a message with defaulted parameters ignores extra ones.
      const five = await jsonrpc(url, 'session.login_with_password', ['root', PASSWORD, '1.1', 'bad-input-test', 'ignored'])
      assert.match(String(five.result), /^OpaqueRef:[0-9a-f-]{36}$/)
      await call(url, 'session.logout', five.result)
    })

    it('wrong types → INTERNAL_ERROR with a message, and nothing set', async () => {
      const check = (r: Awaited<ReturnType<typeof jsonrpc>>) => {
        assert.ok(r.error, `expected INTERNAL_ERROR, got result ${JSON.stringify(r.result)}`)
        assert.equal(r.error.code, 1)
        assert.equal(r.error.message, 'INTERNAL_ERROR')
        assert.equal(r.error.data.length, 1)
        assert.equal(typeof r.error.data[0], 'string')
        assert.ok(r.error.data[0]!.length > 0)
      }
      // An array where a ref goes.
      check(await jsonrpc(url, 'VM.get_record', [session, [vm]]))
      check(await jsonrpc(url, 'VM.set_name_label', [session, [vm], 'renamed']))
      // A struct where a string goes.
      check(await jsonrpc(url, 'VM.set_name_label', [session, vm, { not: 'a string' }]))
      // A string where a bool goes (JSON-RPC takes JSON booleans only).
      check(await jsonrpc(url, 'VM.set_is_a_template', [session, vm, 'true']))
      // A non-numeric string, and a float, where an int goes.
      check(await jsonrpc(url, 'VM.set_VCPUs_at_startup', [session, vm, 'lots']))
      check(await jsonrpc(url, 'VM.set_VCPUs_max', [session, vm, 'two']))
      check(await jsonrpc(url, 'VM.set_memory_static_max', [session, vm, 1.5]))
      // A value outside an enum.
      check(await jsonrpc(url, 'VM.set_actions_after_crash', [session, vm, 'explode']))
    })

    it('unknown refs → HANDLE_INVALID [VM, ref]', async () => {
      assertV2Failure(await jsonrpc(url, 'VM.get_record', [session, BAD_REF]), 'HANDLE_INVALID', ['VM', BAD_REF])
      assertV2Failure(await jsonrpc(url, 'VM.set_name_label', [session, BAD_REF, 'x']), 'HANDLE_INVALID', ['VM', BAD_REF])
      assertV2Failure(await jsonrpc(url, 'VM.get_name_label', [session, 'OpaqueRef:NULL']), 'HANDLE_INVALID', ['VM', 'OpaqueRef:NULL'])
      // A host ref is not a VM ref.
      const [host] = await call<string[]>(url, 'host.get_all', session)
      assertV2Failure(await jsonrpc(url, 'VM.get_record', [session, host]), 'HANDLE_INVALID', ['VM', host!])
    })

    it('get_by_uuid of an unknown uuid → UUID_INVALID [VM, uuid]', async () => {
      assertV2Failure(await jsonrpc(url, 'VM.get_by_uuid', [session, BAD_UUID]), 'UUID_INVALID', ['VM', BAD_UUID])
      assert.equal(await call(url, 'VM.get_by_uuid', session, vmBefore.uuid), vm)
    })

    it('unknown methods, with and without a (valid or bad) session', async () => {
      assertV2Failure(await jsonrpc(url, 'VM.frobnicate', []), 'MESSAGE_METHOD_UNKNOWN', ['VM.frobnicate'])
      assertV2Failure(await jsonrpc(url, 'VM.frobnicate', [session, vm]), 'MESSAGE_METHOD_UNKNOWN', ['VM.frobnicate'])
      assertV2Failure(await jsonrpc(url, 'NoSuchClass.get_all', [session]), 'MESSAGE_METHOD_UNKNOWN', ['NoSuchClass.get_all'])
      // The session is checked first when there are params.
      assertV2Failure(await jsonrpc(url, 'VM.frobnicate', [BAD_REF, vm]), 'SESSION_INVALID', [BAD_REF])
    })

    it('a bad session ref → SESSION_INVALID [ref]', async () => {
      assertV2Failure(await jsonrpc(url, 'VM.get_all', [BAD_REF]), 'SESSION_INVALID', [BAD_REF])
      assertV2Failure(await jsonrpc(url, 'VM.get_record', ['not-even-a-ref', vm]), 'SESSION_INVALID', ['not-even-a-ref'])
      assertV2Failure(await jsonrpc(url, 'VM.set_name_label', [BAD_REF, vm, 'hijacked']), 'SESSION_INVALID', [BAD_REF])
      // A logged-out session is as bad as an unknown one.
      const s = await login(url)
      await call(url, 'session.logout', s)
      assertV2Failure(await jsonrpc(url, 'VM.get_all', [s]), 'SESSION_INVALID', [s])
    })

    it('an expired session → SESSION_INVALID [ref]', async () => {
      const short = new Daemon({ env: { FLOTILLA_SESSION_IDLE_SECONDS: '2' } })
      try {
        await short.start()
        const s = await login(short.url)
        assert.equal((await call<string[]>(short.url, 'host.get_all', s)).length, 1)
        await new Promise((r) => setTimeout(r, 3200))
        assertV2Failure(await jsonrpc(short.url, 'host.get_all', [s]), 'SESSION_INVALID', [s])
        // It stays invalid, and a new login works.
        assertV2Failure(await jsonrpc(short.url, 'VM.get_all', [s]), 'SESSION_INVALID', [s])
        const fresh = await login(short.url)
        assert.equal((await call<string[]>(short.url, 'host.get_all', fresh)).length, 1)
      } finally {
        await short.dispose()
      }
    })

    it('add_to_other_config of an existing key → MAP_DUPLICATE_KEY, map unchanged; removing a missing key succeeds', async () => {
      const before = await call<Record<string, string>>(url, 'VM.get_other_config', session, mapVm)
      assert.equal(before.existing, 'old')
      const uuid = await call<string>(url, 'VM.get_uuid', session, mapVm)
      assertV2Failure(await jsonrpc(url, 'VM.add_to_other_config', [session, mapVm, 'existing', 'new']), 'MAP_DUPLICATE_KEY', ['VM', 'other_config', uuid, 'existing'])
      assert.deepEqual(await call(url, 'VM.get_other_config', session, mapVm), before)
      assert.equal(await call(url, 'VM.remove_from_other_config', session, mapVm, 'no-such-key'), '')
      assert.deepEqual(await call(url, 'VM.get_other_config', session, mapVm), before)
    })
  })

  describe('API errors (XML-RPC)', () => {
    const assertXmlFailure = (r: XmlOutcome, error: string[]) => {
      assert.equal(r.status, 200)
      assert.equal(r.contentType, 'text/xml')
      assert.doesNotMatch(r.text, /<fault>/)
      assert.equal(r.outcome, 'Failure', r.text)
      assert.deepEqual(r.error, error)
    }

    it('a well-formed call works (control)', async () => {
      const r = await xmlrpc(url, 'VM.get_name_label', [session, vm])
      assert.equal(r.status, 200)
      assert.equal(r.contentType, 'text/xml')
      assert.equal(r.outcome, 'Success')
      assert.match(r.text, /<name>Value<\/name><value>bad-input-vm<\/value>/)
    })

    it('wrong arity', async () => {
      assertXmlFailure(await xmlrpc(url, 'VM.get_record', [session]), ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '1', '0'])
      assertXmlFailure(await xmlrpc(url, 'VM.get_record', [session, vm, vm]), ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '1', '2'])
      assertXmlFailure(await xmlrpc(url, 'session.login_with_password', ['root']), ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'session.login_with_password', '2', '1'])
    })

    it('unknown ref → HANDLE_INVALID', async () => {
      assertXmlFailure(await xmlrpc(url, 'VM.get_record', [session, BAD_REF]), ['HANDLE_INVALID', 'VM', BAD_REF])
      assertXmlFailure(await xmlrpc(url, 'VM.set_name_label', [session, BAD_REF, 'x']), ['HANDLE_INVALID', 'VM', BAD_REF])
    })

    it('other failures keep the same shape', async () => {
      assertXmlFailure(await xmlrpc(url, 'VM.get_all', [BAD_REF]), ['SESSION_INVALID', BAD_REF])
      assertXmlFailure(await xmlrpc(url, 'VM.frobnicate', [session]), ['MESSAGE_METHOD_UNKNOWN', 'VM.frobnicate'])
      assertXmlFailure(await xmlrpc(url, 'VM.get_by_uuid', [session, BAD_UUID]), ['UUID_INVALID', 'VM', BAD_UUID])
      const r = await xmlrpc(url, 'VM.set_VCPUs_at_startup', [session, vm, 'lots'])
      assert.equal(r.outcome, 'Failure')
      assert.equal(r.error?.[0], 'INTERNAL_ERROR')
      assert.equal(r.error?.length, 2)
    })

    it('system.listMethods takes no params and answers a bare array', async () => {
      for (const body of [
        '<?xml version="1.0"?><methodCall><methodName>system.listMethods</methodName><params></params></methodCall>',
        '<?xml version="1.0"?><methodCall><methodName>system.listMethods</methodName></methodCall>',
      ]) {
        const r = await post(url, '/', body)
        assert.equal(r.status, 200)
        assert.equal(r.contentType, 'text/xml')
        assert.match(r.text, /^<\?xml version="1.0"\?>\s*<methodResponse>\s*<params>\s*<param>\s*<value>\s*<array>\s*<data>/)
        assert.doesNotMatch(r.text, /<name>Status<\/name>/)
        assert.doesNotMatch(r.text, /<fault>/)
        const names = [...r.text.matchAll(/<value>(?:<string>)?([^<]*)(?:<\/string>)?<\/value>/g)].map((m) => m[1]!)
        assert.ok(names.includes('VM.get_all_records'))
        assert.ok(names.includes('session.login_with_password'))
        assert.ok(names.includes('host.get_all'))
        assert.equal(names.filter((n) => n.startsWith('Async.')).length, 0)
      }
    })

    it('Async.VM.get_name_label (a getter has no Async form) → an XML-RPC <fault>', async () => {
      const tasksBefore = await call<string[]>(url, 'task.get_all', session)
      const r = await xmlrpc(url, 'Async.VM.get_name_label', [session, vm])
      assert.equal(r.status, 200)
      assert.equal(r.contentType, 'text/xml')
      assert.match(r.text, /<methodResponse>\s*<fault>\s*<value>[\s\S]*<\/value>\s*<\/fault>\s*<\/methodResponse>/)
      assert.doesNotMatch(r.text, /<params>/)
      assert.match(r.text, /No async mode for this operation/)
      // No task was created for it.
      assert.deepEqual((await call<string[]>(url, 'task.get_all', session)).sort(), tasksBefore.sort())
    })
  })
})
