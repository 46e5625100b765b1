import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseType } from '../../src/idl/index.js'
import { XapiError } from '../../src/idl/errors.js'
import { chunksToBuffer, jsonChunks, normaliseDatetime, toXml, unmarshal, type Chunk } from '../../src/rpc/marshal.js'
import { parseJsonWire } from '../../src/rpc/wire.js'
import { MalformedRequest, parseMethodCall, xmlFailure } from '../../src/rpc/xmlrpc.js'
import { resolveMessage } from '../../src/xapi/dispatch.js'

const wireFromJson = (value: unknown) => parseJsonWire(JSON.stringify(value))
const call = (params: string) => `<?xml version="1.0"?><methodCall><methodName>VM.x</methodName><params>${params}</params></methodCall>`

describe('XML-RPC parsing', () => {
  it('reads untyped and typed scalars, arrays and structs', () => {
    const { method, params } = parseMethodCall(
      call('<param><value>plain</value></param><param><value><int>-7</int></value></param><param><value> <boolean>1</boolean> </value></param><param><value><array><data><value>a</value><value><double>1.5</double></value></data></array></value></param><param><value><struct><member><name>k</name><value><i8>9</i8></value></member></struct></value></param><param><value></value></param>'),
    )
    assert.equal(method, 'VM.x')
    assert.deepEqual(params, [
      { t: 'string', v: 'plain' },
      { t: 'int', v: '-7' },
      { t: 'bool', v: true },
      { t: 'array', v: [{ t: 'string', v: 'a' }, { t: 'double', v: '1.5' }] },
      { t: 'struct', v: new Map([['k', { t: 'int', v: '9' }]]) },
      { t: 'string', v: '' },
    ])
  })

  it('refuses DTDs (no entity expansion), other roots and unknown elements', () => {
    const bomb = `<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><methodCall><methodName>&b;</methodName></methodCall>`
    assert.throws(() => parseMethodCall(bomb), MalformedRequest)
    assert.throws(() => parseMethodCall('<methodResponse/>'), MalformedRequest)
    assert.throws(() => parseMethodCall(call('<param><value><blob/></value></param>')), MalformedRequest)
    assert.throws(() => parseMethodCall('<methodCall><methodName>x'), MalformedRequest)
  })

  it('escapes failure parameters', () => {
    assert.match(xmlFailure(['CODE', 'a<b&c']), /<value>a&lt;b&amp;c<\/value>/)
  })
})

describe('type-directed marshalling', () => {
  it('encodes ints as strings and floats as doubles in XML, as xapi does', () => {
    assert.equal(toXml(42, parseType('int')), '<value>42</value>')
    assert.equal(toXml(1.5, parseType('float')), '<value><double>1.5</double></value>')
    assert.equal(toXml(true, parseType('bool')), '<value><boolean>1</boolean></value>')
    assert.equal(toXml({ a: 1 }, parseType('(string -> int) map')), '<value><struct><member><name>a</name><value>1</value></member></struct></value>')
    const json: Chunk[] = []
    jsonChunks(undefined, parseType('void'), json)
    assert.equal(chunksToBuffer(json).toString(), '""')
  })

  it('accepts what xapi accepts and refuses the rest with a XenAPI error', () => {
    assert.equal(unmarshal({ t: 'string', v: '12' }, parseType('int'), 'x'), 12)
    assert.equal(unmarshal({ t: 'int', v: '3' }, parseType('float'), 'x'), 3)
    assert.equal(unmarshal({ t: 'string', v: 'running' }, parseType('enum vm_power_state'), 'x'), 'Running')
    assert.equal(unmarshal(wireFromJson(true), parseType('bool'), 'x'), true)
    assert.throws(() => unmarshal(wireFromJson('true'), parseType('bool'), 'x'), (e: XapiError) => e.code === 'INTERNAL_ERROR')
    assert.throws(() => unmarshal(wireFromJson([]), parseType('VM ref'), 'x'), (e: XapiError) => e.code === 'INTERNAL_ERROR')
    assert.throws(() => unmarshal(wireFromJson('12a'), parseType('int'), 'x'), XapiError)
    assert.deepEqual({ ...(unmarshal(wireFromJson({ a: 'b' }), parseType('(string -> string) map'), 'x') as object) }, { a: 'b' })
  })

  it('normalises datetimes to xapi\'s basic form', () => {
    assert.equal(normaliseDatetime('20240131T12:34:56Z'), '20240131T12:34:56Z')
    assert.equal(normaliseDatetime('2024-01-31T13:34:56+01:00'), '20240131T12:34:56Z')
    assert.equal(normaliseDatetime('2024-01-31T12:34:56'), '20240131T12:34:56Z')
    assert.equal(normaliseDatetime('yesterday'), undefined)
  })
})

describe('method names', () => {
  it('resolves Class.message and Class_message, including classes with underscores', () => {
    assert.equal(resolveMessage('VM.start')?.name, 'start')
    assert.equal(resolveMessage('task_create')?.cls, 'task')
    assert.equal(resolveMessage('VM_guest_metrics_get_record')?.cls, 'VM_guest_metrics')
    assert.equal(resolveMessage('VM.frobnicate'), undefined)
  })
})
