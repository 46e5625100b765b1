// Hostile input at the wire layer, against a real daemon: integers at and beyond the int64
// limits, deeply nested bodies and filters, broken and genuine UTF-8, ambiguous XML-RPC and
// map keys named like Object.prototype members. Each case must get xapi's answer and change
// nothing, or be stored and read back exactly, through XML-RPC, JSON-RPC and events alike.
import assert from 'node:assert/strict'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import { Daemon, call, login } from '../helpers/daemon.js'

interface Reply {
  status: number
  contentType: string | null
  text: string
}

async function post(url: string, path: string, body: string | Buffer, contentType: string): Promise<Reply> {
  const bytes = typeof body === 'string' ? body : new Uint8Array(body)
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': contentType }, body: bytes, signal: AbortSignal.timeout(20_000) })
  return { status: res.status, contentType: res.headers.get('content-type'), text: await res.text() }
}

/** JSON with every number as a bigint or its source text (floats), so nothing is rounded on our side. */
function exactJson(text: string): any {
  return JSON.parse(text, (_k, v, ctx?: { source?: string }) => (typeof v === 'number' ? (/^-?\d+$/.test(ctx!.source!) ? BigInt(ctx!.source!) : ctx!.source) : v))
}

/** A JSON-RPC 2.0 request whose params are JSON text we write ourselves (numbers keep their digits). */
async function jsonCall(url: string, method: string, paramsJson: string, id = '7'): Promise<Reply & { json?: any }> {
  const r = await post(url, '/jsonrpc', `{"jsonrpc":"2.0","method":${JSON.stringify(method)},"params":${paramsJson},"id":${id}}`, 'application/json')
  return { ...r, json: r.contentType === 'application/json' ? exactJson(r.text) : undefined }
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const unesc = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&')
const str = (s: string) => `<value>${esc(s)}</value>`
const xmlCallBody = (method: string, values: string[]) =>
  `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${values.map((v) => `<param>${v}</param>`).join('')}</params></methodCall>`

interface XmlReply extends Reply {
  outcome?: string
  value?: string
  error?: string[]
}

function readXml(r: Reply): XmlReply {
  const outcome = /<member><name>Status<\/name><value>(\w+)<\/value><\/member>/.exec(r.text)?.[1]
  const value = /<member><name>Value<\/name>([\s\S]*)<\/member><\/struct><\/value><\/param>/.exec(r.text)?.[1]
  const desc = /<name>ErrorDescription<\/name><value><array><data>([\s\S]*?)<\/data><\/array><\/value>/.exec(r.text)
  const error = desc ? [...desc[1]!.matchAll(/<value>([\s\S]*?)<\/value>/g)].map((m) => unesc(m[1]!)) : undefined
  return { ...r, outcome, value, error }
}

const xmlCall = async (url: string, method: string, values: string[]) => readXml(await post(url, '/', xmlCallBody(method, values), 'text/xml'))

function assertHtml500(r: Reply): void {
  assert.equal(r.status, 500, r.text.slice(0, 300))
  assert.equal(r.contentType, 'text/html')
}

function assertJsonFailure(r: Reply & { json?: any }, code: string, data?: string[]): void {
  assert.equal(r.status, 200, r.text.slice(0, 300))
  assert.equal(r.contentType, 'application/json')
  assert.ok(r.json.error, `expected ${code}, got ${r.text.slice(0, 300)}`)
  assert.equal(r.json.error.message, code, r.text.slice(0, 300))
  if (data) assert.deepEqual(r.json.error.data, data)
}

function assertXmlFailure(r: XmlReply, code: string, params?: string[]): void {
  assert.equal(r.status, 200, r.text.slice(0, 300))
  assert.equal(r.contentType, 'text/xml')
  assert.equal(r.outcome, 'Failure', r.text.slice(0, 300))
  assert.equal(r.error?.[0], code, r.text.slice(0, 300))
  if (params) assert.deepEqual(r.error?.slice(1), params)
}

const INT64_MAX = '9223372036854775807'
const INT64_MIN = '-9223372036854775808'

describe('hostile wire input', () => {
  const daemon = new Daemon()
  let url = ''
  let session = ''
  /** The VM the cases write to; `recordBefore` is what it must still be after a refused case. */
  let vm = ''
  let recordBefore = ''

  const record = async () => (await jsonCall(url, 'VM.get_record', JSON.stringify([session, vm]))).text
  const unchanged = async () => assert.equal(await record(), recordBefore)

  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
    vm = await call<string>(url, 'VM.create', session, { name_label: 'hostile-wire', other_config: { keep: 'me' } })
  })

  after(() => daemon.dispose())

  let outputSeen = 0
  beforeEach(() => {
    outputSeen = daemon.output.length
  })

  afterEach(async () => {
    // The daemon still serves, and logged no uncaught exception (no stack trace) for the case.
    assert.equal((await call<string[]>(url, 'host.get_all', session)).length, 1)
    assert.doesNotMatch(daemon.output.slice(outputSeen), /RangeError|Maximum call stack|\n\s+at /)
  })

  describe('int64', () => {
    const setUserVersion = (paramJson: string) => jsonCall(url, 'VM.set_user_version', `[${JSON.stringify(session)},${JSON.stringify(vm)},${paramJson}]`)

    for (const value of [INT64_MAX, INT64_MIN, '9007199254740993', '-9007199254740993', '0', '-1']) {
      it(`${value} round-trips exactly through JSON-RPC numbers, XML-RPC strings and <i8>, the database and events`, async () => {
        const viaJson = await setUserVersion(value)
        assert.equal(viaJson.json.error, undefined, viaJson.text)
        const got = await jsonCall(url, 'VM.get_user_version', JSON.stringify([session, vm]))
        assert.match(got.text, new RegExp(`"result":${value},`))
        assert.equal(exactJson((await jsonCall(url, 'VM.get_record', JSON.stringify([session, vm]))).text).result.user_version, BigInt(value))
        const xml = await xmlCall(url, 'VM.get_user_version', [str(session), str(vm)])
        assert.equal(xml.value, `<value>${value}</value>`)
        assert.match((await xmlCall(url, 'VM.get_record', [str(session), str(vm)])).text, new RegExp(`<name>user_version</name><value>${value}</value>`))
        const batch = await jsonCall(url, 'event.from', JSON.stringify([session, [`vm/${vm}`], '', 1.0]))
        assert.equal(batch.json.result.events[0].snapshot.user_version, BigInt(value))

        // The same value sent by XML-RPC, as a string and as <i8>, after another one.
        await call(url, 'VM.set_user_version', session, vm, 5)
        assertXmlSuccess(await xmlCall(url, 'VM.set_user_version', [str(session), str(vm), str(value)]))
        assert.equal((await xmlCall(url, 'VM.get_user_version', [str(session), str(vm)])).value, `<value>${value}</value>`)
        await call(url, 'VM.set_user_version', session, vm, 5)
        assertXmlSuccess(await xmlCall(url, 'VM.set_user_version', [str(session), str(vm), `<value><i8>${value}</i8></value>`]))
        assert.equal((await xmlCall(url, 'VM.get_user_version', [str(session), str(vm)])).value, `<value>${value}</value>`)
      })
    }

    it('values outside int64 are type errors (INTERNAL_ERROR) and change nothing', async () => {
      await call(url, 'VM.set_user_version', session, vm, 1)
      recordBefore = await record()
      const huge = '9'.repeat(400)
      for (const v of ['9223372036854775808', '-9223372036854775809', '99999999999999999999999', huge, `-${huge}`]) {
        assertJsonFailure(await setUserVersion(v), 'INTERNAL_ERROR')
        assertJsonFailure(await setUserVersion(JSON.stringify(v)), 'INTERNAL_ERROR')
        assertXmlFailure(await xmlCall(url, 'VM.set_user_version', [str(session), str(vm), str(v)]), 'INTERNAL_ERROR')
        assertXmlFailure(await xmlCall(url, 'VM.set_user_version', [str(session), str(vm), `<value><i8>${v}</i8></value>`]), 'INTERNAL_ERROR')
        // A custom setter sees the same refusal before it runs.
        assertJsonFailure(await jsonCall(url, 'VM.set_VCPUs_max', JSON.stringify([session, vm, v])), 'INTERNAL_ERROR')
      }
      await unchanged()
    })

    it('a JSON float is not an int (xapi reads 1.0 and 1e3 as floats)', async () => {
      recordBefore = await record()
      for (const v of ['1.0', '1e3', '-0.0']) assertJsonFailure(await setUserVersion(v), 'INTERNAL_ERROR')
      await unchanged()
    })

    it('a VM holding int64s beyond 2^53 snapshots and reverts with them exact', async () => {
      await setUserVersion(INT64_MAX)
      const snapshot = await call<string>(url, 'VM.snapshot', session, vm, 'hostile-wire-snap')
      const userVersion = async (ref: string) => exactJson((await jsonCall(url, 'VM.get_user_version', JSON.stringify([session, ref]))).text).result
      assert.equal(await userVersion(snapshot), BigInt(INT64_MAX))
      await setUserVersion('1')
      await call(url, 'VM.revert', session, snapshot)
      assert.equal(await userVersion(vm), BigInt(INT64_MAX))
      await call(url, 'VM.destroy', session, snapshot)
    })

    it('a JSON-RPC id beyond 2^53 is echoed with all its digits', async () => {
      const r = await jsonCall(url, 'host.get_all', JSON.stringify([session]), INT64_MAX)
      assert.match(r.text, new RegExp(`"id":${INT64_MAX}}$`))
    })
  })

  describe('nesting and size limits', () => {
    const nestedJson = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`
    const nestedXml = (depth: number) => `${'<value><array><data>'.repeat(depth)}${'</data></array></value>'.repeat(depth)}`

    it('a JSON-RPC body nested 5,000 arrays deep gets a XenAPI failure, not HTTP 500', async () => {
      recordBefore = await record()
      const r = await jsonCall(url, 'VM.set_name_label', `[${JSON.stringify(session)},${JSON.stringify(vm)},${nestedJson(5000)}]`)
      assertJsonFailure(r, 'INTERNAL_ERROR')
      assert.match(r.json.error.data[0], /nested/)
      await unchanged()
    })

    it('an XML-RPC body nested 5,000 arrays deep gets a XenAPI failure, not HTTP 500', async () => {
      recordBefore = await record()
      const r = await xmlCall(url, 'VM.set_name_label', [str(session), str(vm), nestedXml(5000)])
      assertXmlFailure(r, 'INTERNAL_ERROR')
      assert.match(r.error![1]!, /nested/)
      await unchanged()
    })

    it('moderate nesting is still an ordinary value (a type error here)', async () => {
      assertJsonFailure(await jsonCall(url, 'VM.set_name_label', `[${JSON.stringify(session)},${JSON.stringify(vm)},${nestedJson(20)}]`), 'INTERNAL_ERROR')
      assertXmlFailure(await xmlCall(url, 'VM.set_name_label', [str(session), str(vm), nestedXml(20)]), 'INTERNAL_ERROR')
    })

    it('a where-expression with 10^4 nested nots is INVALID_VALUE, every time, without a stack trace', async () => {
      const expr = `${'not '.repeat(10_000)}true`
      for (let i = 0; i < 3; i++) {
        const r = await jsonCall(url, 'VM.get_all_records_where', JSON.stringify([session, expr]))
        assertJsonFailure(r, 'INVALID_VALUE')
        assert.equal(r.json.error.data[0], expr)
      }
    })

    it('a long flat or-chain of uuids is fine (2,000 terms)', async () => {
      const uuid = await call<string>(url, 'VM.get_uuid', session, vm)
      const terms = Array.from({ length: 1999 }, (_, i) => `field "uuid" = "00000000-0000-0000-0000-${String(i).padStart(12, '0')}"`)
      terms.push(`field "uuid" = "${uuid}"`)
      const records = await call<Record<string, unknown>>(url, 'VM.get_all_records_where', session, terms.join(' or '))
      assert.deepEqual(Object.keys(records), [vm])
    })

    it('a map of 3,000 keys is fine through both protocols', async () => {
      const big: Record<string, string> = {}
      for (let i = 0; i < 3000; i++) big[`key-${i}`] = `value-${i}`
      await call(url, 'VM.set_other_config', session, vm, big)
      assert.deepEqual(await call(url, 'VM.get_other_config', session, vm), big)
      const members = Object.entries(big).map(([k, v]) => `<member><name>${k}</name>${str(v.toUpperCase())}</member>`).join('')
      const r = await xmlCall(url, 'VM.set_other_config', [str(session), str(vm), `<value><struct>${members}</struct></value>`])
      assertXmlSuccess(r)
      assert.equal(Object.keys(await call<Record<string, string>>(url, 'VM.get_other_config', session, vm)).length, 3000)
      await call(url, 'VM.set_other_config', session, vm, { keep: 'me' })
    })
  })

  describe('UTF-8', () => {
    const rawJson = (nameJsonBytes: Buffer) =>
      Buffer.concat([Buffer.from(`{"jsonrpc":"2.0","method":"VM.set_name_label","params":[${JSON.stringify(session)},${JSON.stringify(vm)},"`), nameJsonBytes, Buffer.from('"],"id":1}')])
    const postJson = async (body: Buffer) => {
      const r = await post(url, '/jsonrpc', body, 'application/json')
      return { ...r, json: r.contentType === 'application/json' ? JSON.parse(r.text) : undefined }
    }

    it('a correctly encoded U+FFFD is an ordinary character, through both protocols', async () => {
      const name = 'before\uFFFDafter'
      assert.equal((await postJson(rawJson(Buffer.from(name)))).json.error, undefined)
      assert.equal(await call(url, 'VM.get_name_label', session, vm), name)
      await call(url, 'VM.set_name_label', session, vm, 'reset')
      assertXmlSuccess(await xmlCall(url, 'VM.set_name_label', [str(session), str(vm), str(name)]))
      assert.equal(await call(url, 'VM.get_name_label', session, vm), name)
    })

    it('lone surrogates in JSON escapes are INVALID_VALUE, with the parameter as xapi prints it', async () => {
      await call(url, 'VM.set_name_label', session, vm, 'clean')
      recordBefore = await record()
      for (const escape of ['\\ud800', '\\udc00', 'x\\udfffy', '\\ud83d']) {
        const r = await postJson(rawJson(Buffer.from(escape)))
        const sent = (JSON.parse(`"${escape}"`) as string).replace(/\p{Cs}/gu, '\uFFFD')
        assertJsonFailure(r, 'INVALID_VALUE', ['Invalid UTF-8 string in parameter', `S(${sent})`])
        assert.equal(r.json.id, 1)
      }
      // A surrogate pair is one character.
      assert.equal((await postJson(rawJson(Buffer.from('\\ud83d\\ude00')))).json.error, undefined)
      assert.equal(await call(url, 'VM.get_name_label', session, vm), '\u{1F600}')
      await call(url, 'VM.set_name_label', session, vm, 'clean')
      await unchanged()
    })

    it('invalid byte sequences in a JSON-RPC body are INVALID_VALUE for the parameter that holds them', async () => {
      recordBefore = await record()
      for (const bytes of [[0xff], [0xc3], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]]) {
        const r = await postJson(rawJson(Buffer.concat([Buffer.from('a'), Buffer.from(bytes), Buffer.from('b')])))
        assertJsonFailure(r, 'INVALID_VALUE')
        assert.equal(r.json.error.data[0], 'Invalid UTF-8 string in parameter')
        assert.match(r.json.error.data[1], /^S\(a\uFFFD+b\)$/)
      }
      await unchanged()
    })

    it('invalid byte sequences and control characters in an XML-RPC body are malformed XML (HTTP 500), as in xapi', async () => {
      recordBefore = await record()
      const head = `<?xml version="1.0"?><methodCall><methodName>VM.set_name_label</methodName><params><param>${str(session)}</param><param>${str(vm)}</param><param><value>`
      const tail = '</value></param></params></methodCall>'
      for (const bytes of [[0xff], [0xed, 0xa0, 0x80]]) assertHtml500(await post(url, '/', Buffer.concat([Buffer.from(head), Buffer.from(bytes), Buffer.from(tail)]), 'text/xml'))
      for (const text of ['\x01', '&#1;', '&#x1b;', '\uFFFE', '&#xD800;']) assertHtml500(await post(url, '/', `${head}a${text}b${tail}`, 'text/xml'))
      await unchanged()
      // Tab, newline and carriage return (as a reference: a raw CR is normalised by XML) are characters.
      assertXmlSuccess(await xmlCall(url, 'VM.set_name_label', [str(session), str(vm), '<value>a\tb\nc&#13;d</value>']))
      assert.equal(await call(url, 'VM.get_name_label', session, vm), 'a\tb\nc\rd')
      await call(url, 'VM.set_name_label', session, vm, 'clean')
    })
  })

  describe('ambiguous XML-RPC', () => {
    const rename = (name: string) => `<param>${str(session)}</param><param>${str(vm)}</param><param>${str(name)}</param>`

    it('two <methodName>s, two <params>, or a <param> with two values are malformed (HTTP 500) and run nothing', async () => {
      recordBefore = await record()
      const bodies = [
        `<methodCall><methodName>VM.get_name_label</methodName><methodName>VM.set_name_label</methodName><params>${rename('two-names')}</params></methodCall>`,
        `<methodCall><methodName>VM.set_name_label</methodName><params><param>${str(session)}</param></params><params><param>${str(vm)}</param><param>${str('two-params')}</param></params></methodCall>`,
        `<methodCall><methodName>VM.set_name_label</methodName><params><param>${str(session)}</param><param>${str(vm)}${str('x')}</param></params></methodCall>`,
        `<methodCall><methodName>VM.set_name_label</methodName><params>${rename('stray')}</params>text</methodCall>`,
        `<methodCall><methodName>VM.set_name_label</methodName><params><param>${str(session)}</param><param>${str(vm)}</param><param><value>a<string>b</string></value></param></params></methodCall>`,
      ]
      for (const body of bodies) assertHtml500(await post(url, '/', `<?xml version="1.0"?>${body}`, 'text/xml'))
      await unchanged()
    })
  })

  describe('maps with Object.prototype names as keys', () => {
    // Parsed, not written as a literal: an object literal's __proto__ key would set the prototype.
    const hostile = () => JSON.parse('{"__proto__":"p","constructor":"c","toString":"t","hasOwnProperty":"h","valueOf":"v","__defineGetter__":"g"}') as Record<string, string>

    const snapshotOtherConfig = async () => {
      const batch = await jsonCall(url, 'event.from', JSON.stringify([session, [`vm/${vm}`], '', 1.0]))
      return batch.json.result.events[0].snapshot.other_config as Record<string, string>
    }

    it('set_other_config keeps every key (JSON-RPC and XML-RPC), and get_, get_record and events show them', async () => {
      const map = hostile()
      assert.deepEqual(Object.keys(map).sort(), ['__defineGetter__', '__proto__', 'constructor', 'hasOwnProperty', 'toString', 'valueOf'])
      const r = await jsonCall(url, 'VM.set_other_config', `[${JSON.stringify(session)},${JSON.stringify(vm)},${JSON.stringify(map)}]`)
      assert.equal(r.json.error, undefined, r.text)
      const read = async () => exactJson((await jsonCall(url, 'VM.get_other_config', JSON.stringify([session, vm]))).text).result
      assert.deepEqual(Object.entries(await read()).sort(), Object.entries(map).sort())
      assert.deepEqual(Object.entries(exactJson(await record()).result.other_config).sort(), Object.entries(map).sort())
      assert.deepEqual(Object.entries(await snapshotOtherConfig()).sort(), Object.entries(map).sort())

      await call(url, 'VM.set_other_config', session, vm, {})
      const members = Object.entries(map).map(([k, v]) => `<member><name>${k}</name>${str(v)}</member>`).join('')
      assertXmlSuccess(await xmlCall(url, 'VM.set_other_config', [str(session), str(vm), `<value><struct>${members}</struct></value>`]))
      assert.deepEqual(Object.entries(await read()).sort(), Object.entries(map).sort())
      const xml = await xmlCall(url, 'VM.get_other_config', [str(session), str(vm)])
      for (const k of Object.keys(map)) assert.match(xml.value!, new RegExp(`<member><name>${k}</name><value>${map[k]}</value></member>`))
    })

    it('add_to_, remove_from_ and MAP_DUPLICATE_KEY treat them as ordinary keys', async () => {
      await call(url, 'VM.set_other_config', session, vm, {})
      const uuid = await call<string>(url, 'VM.get_uuid', session, vm)
      for (const key of ['__proto__', 'constructor', 'toString']) {
        await call(url, 'VM.add_to_other_config', session, vm, key, `v-${key}`)
        assertJsonFailure(await jsonCall(url, 'VM.add_to_other_config', JSON.stringify([session, vm, key, 'again'])), 'MAP_DUPLICATE_KEY', ['VM', 'other_config', uuid, key])
      }
      const all = exactJson((await jsonCall(url, 'VM.get_other_config', JSON.stringify([session, vm]))).text).result
      assert.deepEqual(Object.entries(all).sort(), [['__proto__', 'v-__proto__'], ['constructor', 'v-constructor'], ['toString', 'v-toString']])
      assert.equal((await snapshotOtherConfig())['__proto__'], 'v-__proto__')
      // Removing a key that is only inherited by plain objects is removing a missing key.
      await call(url, 'VM.remove_from_other_config', session, vm, 'valueOf')
      for (const key of ['__proto__', 'constructor', 'toString']) await call(url, 'VM.remove_from_other_config', session, vm, key)
      assert.match((await jsonCall(url, 'VM.get_other_config', JSON.stringify([session, vm]))).text, /"result":\{\}/)
      // Nothing leaked into other objects' maps.
      const other = await call<string>(url, 'VM.create', session, { name_label: 'hostile-wire-other' })
      assert.deepEqual(Object.keys(await call<Record<string, string>>(url, 'VM.get_other_config', session, other)), ['mac_seed'])
      await call(url, 'VM.destroy', session, other)
      await call(url, 'VM.set_other_config', session, vm, { keep: 'me' })
    })
  })
})

function assertXmlSuccess(r: XmlReply): void {
  assert.equal(r.status, 200, r.text.slice(0, 300))
  assert.equal(r.outcome, 'Success', r.text.slice(0, 300))
}
