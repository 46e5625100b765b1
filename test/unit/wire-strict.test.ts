// The wire layer as strict as xapi: exact int64s, nesting limits, UTF-8 as xapi checks it,
// XML-RPC's grammar without guesses, and map keys that are only keys.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { objectKey, Replica } from '../../src/db/replica.js'
import { XapiError } from '../../src/idl/errors.js'
import { parseType } from '../../src/idl/index.js'
import { handleJsonRpc, handleXmlRpc } from '../../src/http/rpc.js'
import { fromJson, parseInt64, toJson } from '../../src/lib/int64.js'
import type { CallResult, Dispatcher } from '../../src/xapi/dispatch.js'
import { chunksToBuffer, jsonChunks, toXml, unmarshal, type Chunk } from '../../src/rpc/marshal.js'
import { decodeJsonBody, MAX_VALUE_DEPTH, type Wire } from '../../src/rpc/wire.js'
import { MalformedRequest, parseMethodCall } from '../../src/rpc/xmlrpc.js'
import { evaluateWhere, MAX_WHERE_NESTING, parseWhere } from '../../src/xapi/where.js'

const INT = parseType('int')
const STRING_MAP = parseType('(string -> string) map')

/** A dispatcher that records what it was called with and answers with `value` as an int. */
function recorder(value: unknown = 0, type = INT) {
  const calls: { method: string; params: Wire[] }[] = []
  const dispatcher = {
    call: async (method: string, params: Wire[]): Promise<CallResult> => {
      calls.push({ method, params })
      return { ok: true, value, type }
    },
  } as unknown as Dispatcher
  return { calls, dispatcher }
}

const jsonBody = (params: string, id = '1') => Buffer.from(`{"jsonrpc":"2.0","method":"VM.x","params":${params},"id":${id}}`)
const xmlBody = (values: string) => Buffer.from(`<?xml version="1.0"?><methodCall><methodName>VM.x</methodName><params>${values}</params></methodCall>`)
const isTypeError = (e: unknown) => e instanceof XapiError && e.code === 'INTERNAL_ERROR' && /Type error/.test(e.params[0]!)
const json = (value: unknown, t = INT) => {
  const out: Chunk[] = []
  jsonChunks(value, t, out)
  return chunksToBuffer(out).toString()
}

describe('int64', () => {
  it('every int64 text reads as its exact value: a number while safe, a bigint beyond', () => {
    assert.equal(parseInt64('9007199254740991'), 9007199254740991)
    assert.equal(parseInt64('9007199254740992'), 9007199254740992n)
    assert.equal(parseInt64('9007199254740993'), 9007199254740993n)
    assert.equal(parseInt64('-9007199254740993'), -9007199254740993n)
    assert.equal(parseInt64('9223372036854775807'), 9223372036854775807n)
    assert.equal(parseInt64('-9223372036854775808'), -9223372036854775808n)
    assert.equal(parseInt64('+42'), 42)
    assert.equal(parseInt64(`${'0'.repeat(400)}9007199254740993`), 9007199254740993n)
    assert.ok(Object.is(parseInt64('-0'), 0))
    for (const bad of ['9223372036854775808', '-9223372036854775809', '9'.repeat(400), '1.0', '1e3', '0x10', '', ' 1', '--1'])
      assert.equal(parseInt64(bad), undefined, bad)
  })

  it('int parameters beyond int64, or given as floats, are type errors (INTERNAL_ERROR)', () => {
    assert.equal(unmarshal({ t: 'int', v: '9223372036854775807' }, INT, 'x'), 9223372036854775807n)
    assert.equal(unmarshal({ t: 'string', v: '-9007199254740993' }, INT, 'x'), -9007199254740993n)
    for (const w of [{ t: 'string', v: '99999999999999999999999' }, { t: 'int', v: '9'.repeat(400) }, { t: 'double', v: '1.0' }] as Wire[])
      assert.throws(() => unmarshal(w, INT, 'x'), isTypeError)
  })

  it('writes int64s with all their digits: XML-RPC strings, JSON numbers', () => {
    assert.equal(toXml(9223372036854775807n, INT), '<value>9223372036854775807</value>')
    assert.equal(toXml(-9007199254740993n, INT), '<value>-9007199254740993</value>')
    assert.equal(json(9007199254740993n), '9007199254740993')
    assert.equal(json({ a: -9223372036854775808n }, parseType('(string -> int) map')), '{"a":-9223372036854775808}')
    assert.equal(json([1n, 9007199254740993n], parseType('int set')), '[1,9007199254740993]')
  })

  it('database JSON round-trips int64 bigints, and keeps integral floats beyond 2^53 floats', () => {
    const row = { user_version: 9223372036854775807n, small: 5, neg: -9007199254740993n, big_float: 2 ** 60, huge_float: 1e300, frac: 0.1, text: '12345678901234567890', map: { k: 9007199254740993n } }
    const text = toJson(row)
    assert.match(text, /"user_version":9223372036854775807,/)
    assert.match(text, /"big_float":1\.152921504606847e\+18,/)
    assert.deepEqual(fromJson(text), row)
    assert.equal(typeof (fromJson(text) as typeof row).big_float, 'number')
    // Plain values take the plain path and give the same text as JSON.stringify.
    assert.equal(toJson({ a: 1, b: 'x', c: [1.5] }), '{"a":1,"b":"x","c":[1.5]}')
  })

  it('the replica reads stored int64s exactly', () => {
    const r = new Replica()
    r.load(2, [{ key: objectKey('VM', 'v'), value: '{"uuid":"u","user_version":-9223372036854775808,"VCPUs_max":9007199254740993}', createRev: 1, modRev: 1 }])
    assert.equal(r.record('VM', 'v')!.user_version, -9223372036854775808n)
    assert.equal(r.record('VM', 'v')!.VCPUs_max, 9007199254740993n)
  })

  it('JSON-RPC numbers keep their digits, and floats stay floats even when integral', async () => {
    const { calls, dispatcher } = recorder()
    await handleJsonRpc(dispatcher, jsonBody('[9007199254740993, -9223372036854775808, 1.0, 1e3, -0, 12345678901234567890123]'))
    assert.deepEqual(calls[0]!.params, [
      { t: 'int', v: '9007199254740993' },
      { t: 'int', v: '-9223372036854775808' },
      { t: 'double', v: '1.0' },
      { t: 'double', v: '1e3' },
      { t: 'int', v: '-0' },
      { t: 'int', v: '12345678901234567890123' },
    ])
  })

  it('bodies whose numbers are all short integers take a cheaper parse with the same result', async () => {
    const { calls, dispatcher } = recorder()
    const params = '[1, -2, 123456789012345, "9007199254740993", {"a": [true, null, 0]}, []]'
    await handleJsonRpc(dispatcher, jsonBody(params))
    await handleJsonRpc(dispatcher, jsonBody(params.replace('0]}', '0.5]}')))
    const [plain, exact] = calls.map((c) => c.params)
    assert.deepEqual(plain!.slice(0, 4), exact!.slice(0, 4))
    assert.deepEqual(plain, [
      { t: 'int', v: '1' },
      { t: 'int', v: '-2' },
      { t: 'int', v: '123456789012345' },
      { t: 'string', v: '9007199254740993' },
      { t: 'struct', v: new Map([['a', { t: 'array', v: [{ t: 'bool', v: true }, { t: 'nil' }, { t: 'int', v: '0' }] }]]) },
      { t: 'array', v: [] },
    ])
    assert.deepEqual((exact![4] as { v: Map<string, { v: Wire[] }> }).v.get('a')!.v[2], { t: 'double', v: '0.5' })
  })

  it('a JSON-RPC id is a string or an int64, echoed with all its digits; a float id is malformed', async () => {
    const { dispatcher } = recorder(9007199254740993n)
    const reply = await handleJsonRpc(dispatcher, jsonBody('[]', '9223372036854775807'))
    assert.equal(reply.body.toString(), '{"jsonrpc":"2.0","result":9007199254740993,"id":9223372036854775807}')
    await assert.rejects(handleJsonRpc(dispatcher, jsonBody('[]', '1.5')), MalformedRequest)
    await assert.rejects(handleJsonRpc(dispatcher, jsonBody('[]', '9223372036854775808')), MalformedRequest)
  })
})

describe('nesting limits', () => {
  const jsonNested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`
  const xmlNested = (depth: number) => `<param>${'<value><array><data>'.repeat(depth)}${'</data></array></value>'.repeat(depth)}</param>`

  it(`JSON-RPC values may nest ${MAX_VALUE_DEPTH} deep; deeper is a failure reply (id 0), and nothing is called`, async () => {
    const { calls, dispatcher } = recorder()
    await handleJsonRpc(dispatcher, jsonBody(`[${jsonNested(MAX_VALUE_DEPTH)}]`))
    assert.equal(calls.length, 1)
    for (const depth of [MAX_VALUE_DEPTH + 1, 5000, 100_000]) {
      const reply = JSON.parse((await handleJsonRpc(dispatcher, jsonBody(`[${jsonNested(depth)}]`))).body.toString())
      assert.equal(reply.error.message, 'INTERNAL_ERROR')
      assert.match(reply.error.data[0], /nested deeper than 64/)
      assert.equal(reply.id, 0)
    }
    // Brackets inside strings are text, not nesting.
    await handleJsonRpc(dispatcher, jsonBody(JSON.stringify(['['.repeat(5000), '\\"['])))
    assert.equal(calls.length, 2)
  })

  it(`XML-RPC values may nest ${MAX_VALUE_DEPTH} deep; deeper is a failure reply`, async () => {
    assert.equal(parseMethodCall(xmlBody(xmlNested(MAX_VALUE_DEPTH)).toString()).params.length, 1)
    assert.throws(() => parseMethodCall(xmlBody(xmlNested(MAX_VALUE_DEPTH + 1)).toString()), (e: unknown) => e instanceof XapiError && e.code === 'INTERNAL_ERROR')
    const { calls, dispatcher } = recorder()
    const reply = (await handleXmlRpc(dispatcher, xmlBody(xmlNested(5000)))).body.toString()
    assert.match(reply, /<name>Status<\/name><value>Failure<\/value>.*<value>INTERNAL_ERROR<\/value><value>RPC request values are nested deeper than 64/)
    assert.equal(calls.length, 0)
  })

  it(`where-expressions may nest ${MAX_WHERE_NESTING} deep; deeper is INVALID_VALUE [expr, reason]`, () => {
    assert.equal(evaluateWhere(parseWhere(`${'not '.repeat(MAX_WHERE_NESTING)}true`), {}), true)
    assert.equal(evaluateWhere(parseWhere(`${'('.repeat(MAX_WHERE_NESTING)}true${')'.repeat(MAX_WHERE_NESTING)}`), {}), true)
    for (const expr of [`${'not '.repeat(10_000)}true`, `${'('.repeat(10_000)}true${')'.repeat(10_000)}`]) {
      assert.throws(() => parseWhere(expr), (e: unknown) => e instanceof XapiError && e.code === 'INVALID_VALUE' && e.params[0] === expr && /nested/.test(e.params[1]!))
    }
  })

  it('long flat and/or runs cost no depth', () => {
    const rec = { name_label: 'x' }
    assert.equal(evaluateWhere(parseWhere(Array(50_000).fill('field "name__label" = "x"').join(' and ')), rec), true)
    assert.equal(evaluateWhere(parseWhere(`${Array(50_000).fill('false').join(' or ')} or true`), rec), true)
  })
})

describe("where-expressions parse as xapi's grammar does", () => {
  const holds = (expr: string, rec: Record<string, unknown> = {}) => evaluateWhere(parseWhere(expr), rec)

  it('and and or bind equally, from the left; not takes the rest of its run', () => {
    assert.equal(holds('true or true and false'), false) // (true or true) and false
    assert.equal(holds('false and true or true'), true) // (false and true) or true
    assert.equal(holds('not true and false'), true) // not (true and false)
    assert.equal(holds('true and not false or true'), false) // true and not (false or true)
    assert.equal(holds('(not true) and false'), false)
  })

  it('reads literals without escapes, and compares fields as the database writes them', () => {
    assert.equal(holds('field "name__label" = "a\\b"', { name_label: 'a\\b' }), true)
    assert.throws(() => parseWhere('field "name__label" = "a\\"b"'), (e: unknown) => e instanceof XapiError && e.code === 'INVALID_VALUE')
    assert.equal(holds('field "user_version" = "9223372036854775807"', { user_version: 9223372036854775807n }), true)
    // A name that only Object.prototype has is a column that is not there.
    assert.equal(holds('field "constructor" = ""', { name_label: 'x' }), true)
  })
})

describe('UTF-8', () => {
  it('a correctly encoded U+FFFD is an ordinary character', () => {
    assert.equal(unmarshal({ t: 'string', v: 'a\uFFFDb' }, parseType('string'), 'x'), 'a\uFFFDb')
    assert.equal(decodeJsonBody(Buffer.from('"a\uFFFDb"')), '"a\uFFFDb"')
  })

  it('each byte of an invalid sequence in a JSON body reads as a lone surrogate', () => {
    const body = Buffer.concat([Buffer.from('"a'), Buffer.from([0xff, 0xc0, 0xaf, 0xed, 0xa0, 0x80]), Buffer.from('\u00e9\u{1F600}b"')])
    assert.equal(decodeJsonBody(body), '"a\udcff\udcc0\udcaf\udced\udca0\udc80\u00e9\u{1F600}b"')
  })

  it('JSON-RPC parameters with lone surrogates or invalid bytes are INVALID_VALUE, printed as xapi prints them', async () => {
    const { calls, dispatcher } = recorder()
    const reply = async (body: Buffer) => JSON.parse((await handleJsonRpc(dispatcher, body)).body.toString())
    assert.deepEqual((await reply(jsonBody('["ok", "\\ud800"]'))).error, { code: 1, message: 'INVALID_VALUE', data: ['Invalid UTF-8 string in parameter', 'S(\uFFFD)'] })
    assert.deepEqual((await reply(jsonBody('[{"k\\udc00": "v", "n": [5, true, null, 1.5]}]'))).error.data, ['Invalid UTF-8 string in parameter', '{k\uFFFD:S(v);n:[I(5);B(true);N;F(1.5)]}'])
    const raw = Buffer.concat([Buffer.from('{"method":"VM.x","params":["a'), Buffer.from([0xfe]), Buffer.from('b"],"id":"i"}')])
    assert.deepEqual(await reply(raw), { result: null, error: ['INVALID_VALUE', 'Invalid UTF-8 string in parameter', 'S(a\uFFFDb)'], id: 'i' })
    assert.equal(calls.length, 0)
    await handleJsonRpc(dispatcher, jsonBody('["\\ud83d\\ude00", "\uFFFD"]'))
    assert.deepEqual(calls[0]!.params, [{ t: 'string', v: '\u{1F600}' }, { t: 'string', v: '\uFFFD' }])
  })

  it('an XML-RPC body that is not UTF-8, or holds characters XML forbids, is malformed', async () => {
    const { dispatcher } = recorder()
    const withText = (text: Buffer) => Buffer.concat([xmlBody('<param><value>').subarray(0, -'</params></methodCall>'.length), text, Buffer.from('</value></param></params></methodCall>')])
    for (const bad of [Buffer.from([0xff]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('\x01'), Buffer.from('&#1;'), Buffer.from('\uFFFF')])
      await assert.rejects(handleXmlRpc(dispatcher, withText(bad)), MalformedRequest, bad.toString('hex'))
    assert.match((await handleXmlRpc(dispatcher, withText(Buffer.from('\uFFFD\t')))).body.toString(), /Success/)
  })
})

describe('XML-RPC grammar', () => {
  const malformed = (body: string) => assert.throws(() => parseMethodCall(`<?xml version="1.0"?>${body}`), MalformedRequest, body)

  it('refuses documents xapi refuses instead of guessing', () => {
    malformed('<methodCall><methodName>a</methodName><methodName>b</methodName><params/></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params/><params/></methodCall>')
    malformed('<methodCall><params/><methodName>a</methodName></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value>1</value><value>2</value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><value>1</value></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value>x<int>1</int></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><int>1</int>x</value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><int>1</int><int>2</int></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><array><data/><data/></array></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><struct><member><name>a</name><name>b</name><value/></member></struct></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><struct><member><value/><name>a</name></member></struct></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><struct>text</struct></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><int>1<b/></int></value></param></params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params>x</params></methodCall>')
    malformed('<methodCall><methodName>a</methodName><params><param><value><nil>x</nil></value></param></params></methodCall>')
  })

  it('reads what Python and XO send: white space between elements, CDATA as text, empty arrays', () => {
    const body = `<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.x</methodName>\n<params>\n<param>\n<value><string>a</string></value>\n</param>\n<param>\n<value>\n  <struct>\n<member>\n<name>k</name>\n<value><i8>9223372036854775807</i8></value>\n</member>\n</struct>\n</value>\n</param>\n<param><value><array><data>\n</data></array></value></param>\n<param><value><![CDATA[<b>]]></value></param>\n<param><value><array/></value></param>\n</params>\n</methodCall>\n`
    assert.deepEqual(parseMethodCall(body), {
      method: 'VM.x',
      params: [
        { t: 'string', v: 'a' },
        { t: 'struct', v: new Map([['k', { t: 'int', v: '9223372036854775807' }]]) },
        { t: 'array', v: [] },
        { t: 'string', v: '<b>' },
        { t: 'array', v: [] },
      ],
    })
  })
})

describe('maps', () => {
  const HOSTILE = '{"__proto__":"p","constructor":"c","toString":"t","hasOwnProperty":"h"}'

  it('unmarshal keeps "__proto__" and Object.prototype names as own keys of a null-prototype map', async () => {
    const { calls, dispatcher } = recorder()
    await handleJsonRpc(dispatcher, jsonBody(`[${HOSTILE}]`))
    const map = unmarshal(calls[0]!.params[0]!, STRING_MAP, 'x') as Record<string, string>
    assert.equal(Object.getPrototypeOf(map), null)
    assert.deepEqual(Object.entries(map), [['__proto__', 'p'], ['constructor', 'c'], ['toString', 't'], ['hasOwnProperty', 'h']])
    const fromXml = unmarshal(parseMethodCall(xmlBody('<param><value><struct><member><name>__proto__</name><value>p</value></member></struct></value></param>').toString()).params[0]!, STRING_MAP, 'x')
    assert.deepEqual(Object.entries(fromXml as object), [['__proto__', 'p']])
    assert.equal(json(map, STRING_MAP), HOSTILE)
    assert.match(toXml(map, STRING_MAP), /<member><name>__proto__<\/name><value>p<\/value><\/member><member><name>constructor<\/name>/)
    assert.equal(({} as Record<string, unknown>).p, undefined)
  })

  it('records from the replica hold null-prototype maps: a missing key reads as missing', () => {
    const r = new Replica()
    r.load(2, [{ key: objectKey('VM', 'v'), value: `{"uuid":"u","other_config":${HOSTILE}}`, createRev: 1, modRev: 1 }])
    const config = r.record('VM', 'v')!.other_config as Record<string, unknown>
    assert.equal(config.__proto__, 'p')
    assert.equal(config.valueOf, undefined)
    assert.equal((r.record('VM', 'v')!.platform as Record<string, unknown>).constructor, undefined)
  })
})
