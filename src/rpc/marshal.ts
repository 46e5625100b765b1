// Type-directed conversion between wire values and Flotilla's internal values, driven by the
// datamodel's types. Internal values are JSON-shaped: ints and floats are numbers, datetimes
// are xapi's "YYYYMMDDTHH:MM:SSZ" strings, refs and enums are strings, sets are arrays, maps
// are objects with string keys, records are objects with every field of their class.
import { canonicalEnum, classByAnyCase, formatDatetime, getClass, type XType } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { EventBatch, EventRecord } from '../idl/events.js'
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
      if (w.t === 'string') {
        if (w.v.includes('\uFFFD')) throw new XapiError('INVALID_VALUE', ['Invalid UTF-8 string in parameter', w.v])
        return w.v
      }
      throw typeError(what, 'a string', w)
    case 'int':
      if ((w.t === 'int' || w.t === 'string') && /^[+-]?\d+$/.test(w.v.trim())) return Number(w.v)
      throw typeError(what, 'an int', w)
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
      const out: Record<string, unknown> = {}
      for (const [k, v] of w.v) {
        const key = unmarshal({ t: 'string', v: k }, t.key.kind === 'int' ? { kind: 'string' } : t.key, what)
        out[String(key)] = unmarshal(v, t.value, what)
      }
      return out
    }
    case 'record': {
      if (w.t !== 'struct') throw typeError(what, `a ${t.cls} record`, w)
      const cls = getClass(t.cls)
      const out: Record<string, unknown> = {}
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

const xmlRecordCache = new WeakMap<object, string>()
const jsonRecordCache = new WeakMap<object, string>()

const formatDouble = (n: number) => (Number.isFinite(n) ? String(n) : '0')

/** The XML-RPC `<value>` element for an internal value of type `t`. */
export function toXml(value: unknown, t: XType): string {
  switch (t.kind) {
    case 'string': case 'enum': case 'ref':
      return `<value>${escapeXml(String(value ?? ''))}</value>`
    case 'int':
      return `<value>${Math.trunc(Number(value ?? 0))}</value>`
    case 'float':
      return `<value><double>${formatDouble(Number(value ?? 0))}</double></value>`
    case 'bool':
      return `<value><boolean>${value ? 1 : 0}</boolean></value>`
    case 'datetime':
      return `<value><dateTime.iso8601>${escapeXml(String(value))}</dateTime.iso8601></value>`
    case 'void':
      return '<value></value>'
    case 'set':
      return `<value><array><data>${((value as unknown[]) ?? []).map((v) => toXml(v, t.of)).join('')}</data></array></value>`
    case 'map': {
      const entries = Object.entries((value as Record<string, unknown>) ?? {})
      return `<value><struct>${entries.map(([k, v]) => `<member><name>${escapeXml(k)}</name>${toXml(v, t.value)}</member>`).join('')}</struct></value>`
    }
    case 'record':
      return t.cls === 'event' ? eventXml(value as EventRecord) : recordXml(t.cls, value as Record<string, unknown>)
    case 'anyRecord':
      throw new Error('a record of unknown class cannot be encoded')
    case 'option':
      return value === undefined || value === null ? '<value></value>' : toXml(value, t.of)
    case 'eventBatch':
      return eventBatchXml(value as EventBatch)
  }
}

export function recordXml(clsName: string, rec: Record<string, unknown>): string {
  const cached = xmlRecordCache.get(rec)
  if (cached !== undefined) return cached
  const cls = getClass(clsName)
  let out = '<value><struct>'
  for (const f of cls.fieldList) out += `<member><name>${f.name}</name>${toXml(rec[f.name], f.type)}</member>`
  out += '</struct></value>'
  if (Object.isFrozen(rec)) xmlRecordCache.set(rec, out)
  return out
}

export function eventXml(e: EventRecord): string {
  let out = `<value><struct><member><name>id</name><value>${e.id}</value></member><member><name>timestamp</name><value>${e.timestamp}</value></member><member><name>class</name><value>${e.class}</value></member><member><name>operation</name><value>${e.operation}</value></member><member><name>ref</name><value>${escapeXml(e.ref)}</value></member>`
  const cls = classByAnyCase(e.class)
  if (e.snapshot && cls) out += `<member><name>snapshot</name>${recordXml(cls.name, e.snapshot as Record<string, unknown>)}</member>`
  return out + '</struct></value>'
}

function eventBatchXml(b: EventBatch): string {
  const counts = Object.entries(b.valid_ref_counts).map(([k, n]) => `<member><name>${k}</name><value><i4>${n}</i4></value></member>`).join('')
  return `<value><struct><member><name>events</name><value><array><data>${b.events.map(eventXml).join('')}</data></array></value></member><member><name>valid_ref_counts</name><value><struct>${counts}</struct></value></member><member><name>token</name><value>${b.token}</value></member></struct></value>`
}

/** JSON text for an internal value. Records are cached per immutable snapshot. */
export function toJson(value: unknown, t: XType): string {
  switch (t.kind) {
    case 'void':
      return '""'
    case 'record':
      return t.cls === 'event' ? JSON.stringify(value) : recordJson(value as Record<string, unknown>)
    case 'map':
      if (t.value.kind === 'record') {
        const parts = Object.entries(value as Record<string, Record<string, unknown>>).map(([k, v]) => `${JSON.stringify(k)}:${recordJson(v)}`)
        return `{${parts.join(',')}}`
      }
      return JSON.stringify(value ?? {})
    case 'eventBatch': {
      const b = value as EventBatch
      const events = b.events.map((e) => {
        const { snapshot, ...head } = e
        const headJson = JSON.stringify(head)
        return snapshot ? `${headJson.slice(0, -1)},"snapshot":${recordJson(snapshot as Record<string, unknown>)}}` : headJson
      })
      return `{"events":[${events.join(',')}],"valid_ref_counts":${JSON.stringify(b.valid_ref_counts)},"token":${JSON.stringify(b.token)}}`
    }
    case 'float':
      return formatDouble(Number(value ?? 0))
    default:
      return JSON.stringify(value ?? null)
  }
}

function recordJson(rec: Record<string, unknown>): string {
  const cached = jsonRecordCache.get(rec)
  if (cached !== undefined) return cached
  const out = JSON.stringify(rec)
  if (Object.isFrozen(rec)) jsonRecordCache.set(rec, out)
  return out
}
