// Type-directed conversion between wire values and Flotilla's internal values, driven by the
// datamodel's types. Internal values are JSON-shaped: ints are exact int64s (numbers, bigints
// beyond 2^53: see lib/int64.ts), floats are numbers, datetimes are xapi's
// "YYYYMMDDTHH:MM:SSZ" strings, refs and enums are strings, sets are arrays, maps are
// null-prototype objects with string keys (any key is an ordinary key, "__proto__" too),
// records are objects with every field of their class.
import { canonicalEnum, classByAnyCase, formatDatetime, getClass, type XType } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { EventBatch, EventRecord } from '../idl/events.js'
import { parseInt64, toJson } from '../lib/int64.js'
import { escapeXml } from './xmlrpc.js'
import { describeWire, type Wire } from './wire.js'

function typeError(what: string, expected: string, got: Wire): XapiError {
  return new XapiError('INTERNAL_ERROR', [`Type error in ${what}: expected ${expected}, got ${describeWire(got)}`])
}

/** Datetimes in any form xapi accepts (basic or extended ISO 8601, with or without an offset) to xapi's form. */
export function normaliseDatetime(text: string): string | undefined {
  const basic = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})(Z)?$/.exec(text)
  const iso = basic ? `${basic[1]}-${basic[2]}-${basic[3]}T${basic[4]}:${basic[5]}:${basic[6]}Z` : /[zZ]|[+-]\d{2}:?\d{2}$/.test(text) ? text : `${text}Z`
  const ms = Date.parse(iso)
  return Number.isNaN(ms) ? undefined : formatDatetime(new Date(ms))
}


export function unmarshal(w: Wire, t: XType, what: string): unknown {
  switch (t.kind) {
    case 'string':
      if (w.t === 'string') return w.v
      throw typeError(what, 'a string', w)
    case 'int': {
      // Outside int64 is a type error, as xapi's Int64.of_string makes it.
      const n = w.t === 'int' || w.t === 'string' ? parseInt64(w.v.trim()) : undefined
      if (n === undefined) throw typeError(what, 'an int', w)
      return n
    }
    case 'float':
      if ((w.t === 'double' || w.t === 'int' || w.t === 'string') && w.v.trim() !== '' && Number.isFinite(Number(w.v))) return Number(w.v)
      throw typeError(what, 'a float', w)
    case 'bool':
      if (w.t === 'bool') return w.v
      throw typeError(what, 'a bool', w)
    case 'datetime': {
      const d = w.t === 'datetime' || w.t === 'string' ? normaliseDatetime(w.v) : undefined
      if (d === undefined) throw typeError(what, 'a datetime', w)
      return d
    }
    case 'enum': {
      const v = w.t === 'string' ? canonicalEnum(t.name, w.v) : undefined
      if (v === undefined) throw typeError(what, `a value of enum ${t.name}`, w)
      return v
    }
    case 'ref':
      if (w.t === 'string') return w.v
      throw typeError(what, `a ${t.cls} ref`, w)
    case 'set':
      if (w.t === 'array') return w.v.map((item) => unmarshal(item, t.of, what))
      throw typeError(what, 'an array', w)
    case 'map': {
      if (w.t !== 'struct') throw typeError(what, 'a struct', w)
      const out: Record<string, unknown> = Object.create(null)
      for (const [k, v] of w.v) {
        const key = unmarshal({ t: 'string', v: k }, t.key.kind === 'int' ? { kind: 'string' } : t.key, what)
        out[String(key)] = unmarshal(v, t.value, what)
      }
      return out
    }
    case 'record': {
      if (w.t !== 'struct') throw typeError(what, `a ${t.cls} record`, w)
      const cls = getClass(t.cls)
      const out: Record<string, unknown> = Object.create(null)
      for (const [k, v] of w.v) {
        const f = cls.fields.get(k)
        if (f) out[k] = unmarshal(v, f.type, `${what}.${k}`)
      }
      return out
    }
    case 'option':
      return w.t === 'nil' ? undefined : unmarshal(w, t.of, what)
    default:
      throw typeError(what, t.kind, w)
  }
}

/**
 * Encoded output: strings, and the cached UTF-8 bytes of records. Replies are assembled from
 * chunks so that a large get_all_records copies each record's bytes once instead of
 * re-encoding its text.
 */
export type Chunk = string | Buffer

const xmlRecordCache = new WeakMap<object, Buffer>()
const jsonRecordCache = new WeakMap<object, Buffer>()

const formatDouble = (n: number) => (Number.isFinite(n) ? String(n) : '0')

/** Joins chunks into one buffer, converting runs of strings at once. */
export function chunksToBuffer(chunks: Chunk[]): Buffer {
  const parts: Buffer[] = []
  let text = ''
  for (const c of chunks) {
    if (typeof c === 'string') text += c
    else {
      if (text) parts.push(Buffer.from(text))
      text = ''
      parts.push(c)
    }
  }
  if (text) parts.push(Buffer.from(text))
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

/** The XML-RPC `<value>` element for an internal value of type `t`. */
export function toXml(value: unknown, t: XType): string {
  const out: Chunk[] = []
  xmlChunks(value, t, out)
  return chunksToBuffer(out).toString()
}

export function xmlChunks(value: unknown, t: XType, out: Chunk[]): void {
  switch (t.kind) {
    case 'string': case 'enum': case 'ref':
      return void out.push(`<value>${escapeXml(String(value ?? ''))}</value>`)
    case 'int':
      return void out.push(`<value>${typeof value === 'bigint' ? value : Math.trunc(Number(value ?? 0))}</value>`)
    case 'float':
      return void out.push(`<value><double>${formatDouble(Number(value ?? 0))}</double></value>`)
    case 'bool':
      return void out.push(`<value><boolean>${value ? 1 : 0}</boolean></value>`)
    case 'datetime':
      return void out.push(`<value><dateTime.iso8601>${escapeXml(String(value))}</dateTime.iso8601></value>`)
    case 'void':
      return void out.push('<value></value>')
    case 'set':
      out.push('<value><array><data>')
      for (const v of (value as unknown[]) ?? []) xmlChunks(v, t.of, out)
      return void out.push('</data></array></value>')
    case 'map':
      out.push('<value><struct>')
      for (const [k, v] of Object.entries((value as Record<string, unknown>) ?? {})) {
        out.push(`<member><name>${escapeXml(k)}</name>`)
        xmlChunks(v, t.value, out)
        out.push('</member>')
      }
      return void out.push('</struct></value>')
    case 'record':
      return t.cls === 'event' ? eventXml(value as EventRecord, out) : void out.push(recordXml(t.cls, value as Record<string, unknown>))
    case 'anyRecord':
      throw new Error('a record of unknown class cannot be encoded')
    case 'option':
      return value === undefined || value === null ? void out.push('<value></value>') : xmlChunks(value, t.of, out)
    case 'eventBatch':
      return eventBatchXml(value as EventBatch, out)
  }
}

/** A record's `<value><struct>…`, encoded once per immutable snapshot. */
export function recordXml(clsName: string, rec: Record<string, unknown>): Buffer {
  const cached = xmlRecordCache.get(rec)
  if (cached !== undefined) return cached
  const cls = getClass(clsName)
  const parts: Chunk[] = ['<value><struct>']
  for (const f of cls.fieldList) {
    parts.push(`<member><name>${f.name}</name>`)
    xmlChunks(rec[f.name], f.type, parts)
    parts.push('</member>')
  }
  parts.push('</struct></value>')
  const bytes = chunksToBuffer(parts)
  if (Object.isFrozen(rec)) xmlRecordCache.set(rec, bytes)
  return bytes
}

function eventXml(e: EventRecord, out: Chunk[]): void {
  out.push(`<value><struct><member><name>id</name><value>${e.id}</value></member><member><name>timestamp</name><value>${e.timestamp}</value></member><member><name>class</name><value>${e.class}</value></member><member><name>operation</name><value>${e.operation}</value></member><member><name>ref</name><value>${escapeXml(e.ref)}</value></member>`)
  const cls = classByAnyCase(e.class)
  if (e.snapshot && cls) out.push('<member><name>snapshot</name>', recordXml(cls.name, e.snapshot as Record<string, unknown>), '</member>')
  out.push('</struct></value>')
}

function eventBatchXml(b: EventBatch, out: Chunk[]): void {
  out.push('<value><struct><member><name>events</name><value><array><data>')
  for (const e of b.events) eventXml(e, out)
  const counts = Object.entries(b.valid_ref_counts).map(([k, n]) => `<member><name>${k}</name><value><i4>${n}</i4></value></member>`).join('')
  out.push(`</data></array></value></member><member><name>valid_ref_counts</name><value><struct>${counts}</struct></value></member><member><name>token</name><value>${b.token}</value></member></struct></value>`)
}

/** JSON for an internal value, as chunks (records come from their cache). */
export function jsonChunks(value: unknown, t: XType, out: Chunk[]): void {
  switch (t.kind) {
    case 'void':
      return void out.push('""')
    case 'record':
      return void out.push(t.cls === 'event' ? toJson(value) : recordJson(value as Record<string, unknown>))
    case 'map':
      if (t.value.kind !== 'record') return void out.push(toJson(value ?? {}))
      out.push('{')
      Object.entries(value as Record<string, Record<string, unknown>>).forEach(([k, v], i) => out.push(`${i ? ',' : ''}${JSON.stringify(k)}:`, recordJson(v)))
      return void out.push('}')
    case 'eventBatch': {
      const b = value as EventBatch
      out.push('{"events":[')
      b.events.forEach((e, i) => {
        const { snapshot, ...head } = e
        const headJson = JSON.stringify(head)
        if (i) out.push(',')
        if (snapshot) out.push(`${headJson.slice(0, -1)},"snapshot":`, recordJson(snapshot as Record<string, unknown>), '}')
        else out.push(headJson)
      })
      return void out.push(`],"valid_ref_counts":${JSON.stringify(b.valid_ref_counts)},"token":${JSON.stringify(b.token)}}`)
    }
    case 'float':
      return void out.push(formatDouble(Number(value ?? 0)))
    default:
      return void out.push(toJson(value ?? null))
  }
}

function recordJson(rec: Record<string, unknown>): Buffer {
  const cached = jsonRecordCache.get(rec)
  if (cached !== undefined) return cached
  const bytes = Buffer.from(toJson(rec))
  if (Object.isFrozen(rec)) jsonRecordCache.set(rec, bytes)
  return bytes
}
