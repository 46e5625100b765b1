// The datamodel: every class, field, message, enum and error of the XenAPI, loaded from
// datamodel.json (generated from xapi's own datamodel by scripts/gen-idl.mjs) plus the few
// wire facts xapi keeps outside that file (relations, async forms, parameter defaults).
// Everything else — dispatch, accessors, validation, record defaults, xe — derives from here.
import { readFileSync } from 'node:fs'
import { parseType, type XType } from './types.js'
import { RELATIONS, ASYNC_MESSAGES, PARAM_DEFAULTS, NO_EVENT_CLASSES } from './wire-facts.js'
import type { ClassName, ClassRecords, Enums, StoredOf } from './records.js'

export type { XType } from './types.js'
export { parseType, typeToString } from './types.js'

export type Lifecycle = 'published' | 'prototyped' | 'deprecated' | 'removed'
export type Qualifier = 'RW' | 'RO/constructor' | 'RO/runtime' | 'StaticRO' | 'DynamicRO'

export interface Field {
  name: string
  type: XType
  typeText: string
  qualifier: Qualifier
  default: unknown
  state: Lifecycle
  release: string
  /** Set by the relation table: this set field mirrors `refClass.refField` and is never stored. */
  derivedFrom?: { refClass: string; refField: string }
}

export interface Param {
  name: string
  type: XType
  typeText: string
  /** Present when callers may omit the parameter (a trailing parameter added later). */
  default?: unknown
}

export interface Message {
  cls: string
  name: string
  /** Parameters as declared, the session parameter included where there is one. */
  params: Param[]
  takesSession: boolean
  result: XType
  implicit: boolean
  hasAsync: boolean
  errors: string[]
  state: Lifecycle
  release: string
}

export interface ClassDef {
  name: string
  state: Lifecycle
  release: string
  fields: Map<string, Field>
  fieldList: Field[]
  messages: Map<string, Message>
  /** Stored fields: all fields but the derived set fields. */
  storedFields: Field[]
  hasNameLabel: boolean
  /** Whether get_all/get_all_records/get_all_records_where exist for this class. */
  listable: boolean
  generatesEvents: boolean
}

interface RawModel {
  classes: {
    name: string
    state: Lifecycle
    release: string
    fields: { name: string; type: string; qualifier: Qualifier; default?: string; state: Lifecycle; release: string }[]
    messages: {
      name: string
      params: { name: string; type: string }[]
      result: string
      implicit: boolean
      errors: string[]
      state: Lifecycle
      release: string
    }[]
    enums: { name: string; values: string[] }[]
  }[]
  errors: Record<string, string[]>
}

const raw = JSON.parse(readFileSync(new URL('../../../src/idl/datamodel.json', import.meta.url), 'utf8')) as RawModel

export const NULL_REF = 'OpaqueRef:NULL'
export const EPOCH = '19700101T00:00:00Z'
/** The API version Flotilla reports: that of XCP-ng 8.1 (quebec). */
export const API_VERSION = { major: 2, minor: 14 }
/** The xapi version of XCP-ng 8.1 (host.software_version's `xapi`), and the Server header xapi's handlers send. */
export const XAPI_VERSION = '1.20'
export const XAPI_USER_AGENT = `xapi/${XAPI_VERSION}`

export const enums = new Map<string, string[]>()
for (const c of raw.classes) for (const e of c.enums) enums.set(e.name, e.values)

/** The values of a datamodel enum, typed as its union. */
export function enumValues<N extends keyof Enums>(name: N): Enums[N][] {
  return (enums.get(name) ?? []) as Enums[N][]
}

/** Error codes with the names of their parameters. */
export const errors: ReadonlyMap<string, string[]> = new Map(Object.entries(raw.errors))

/** The zero value of a type: what a field without a declared default holds. */
export function zeroValue(t: XType): unknown {
  switch (t.kind) {
    case 'string': return ''
    case 'int': case 'float': return 0
    case 'bool': return false
    case 'datetime': return EPOCH
    case 'enum': return enums.get(t.name)?.[0] ?? ''
    case 'ref': return NULL_REF
    case 'set': return []
    case 'map': return {}
    default: return null
  }
}

/** Converts a default as xapi's datamodel prints it ("{}", "0.", "Null", "{\"a\" -> \"b\"}") to a value. */
export function parseDefault(text: string | undefined, t: XType): unknown {
  if (text === undefined) return zeroValue(t)
  const unquote = (s: string) => (s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s)
  switch (t.kind) {
    case 'string': return unquote(text)
    case 'int': case 'float': return Number(text)
    case 'bool': return text === 'true'
    case 'ref': return text === 'Null' ? NULL_REF : text
    case 'set': {
      const inner = text.replace(/^\{|\}$/g, '').trim()
      return inner === '' ? [] : inner.split(/\s*;\s*|\s*,\s*/).map((item) => parseDefault(item, t.of))
    }
    case 'map': {
      const inner = text.replace(/^\{|\}$/g, '').trim()
      if (inner === '') return {}
      const entries = inner.split(/\s*[;,]\s*/).map((pair) => pair.split(/\s*->\s*/).map(unquote) as [string, string])
      return Object.fromEntries(entries.map(([k, v]) => [k, parseDefault(`"${v}"`, t.value)]))
    }
    default: return unquote(text)
  }
}

const paramDefaultFor = (cls: string, msg: string, param: string): { value: unknown } | undefined => {
  const d = PARAM_DEFAULTS[`${cls}.${msg}`]?.[param]
  return d === undefined ? undefined : { value: d }
}

export const classes = new Map<string, ClassDef>()
for (const c of raw.classes) {
  const fieldList: Field[] = c.fields.map((f) => {
    const type = parseType(f.type)
    return { name: f.name, type, typeText: f.type, qualifier: f.qualifier, default: parseDefault(f.default, type), state: f.state, release: f.release }
  })
  const messages = new Map<string, Message>()
  for (const m of c.messages) {
    const params: Param[] = m.params.map((p) => {
      const d = paramDefaultFor(c.name, m.name, p.name)
      return { name: p.name, type: parseType(p.type), typeText: p.type, ...(d ? { default: d.value } : {}) }
    })
    messages.set(m.name, {
      cls: c.name,
      name: m.name,
      params,
      takesSession: params[0]?.typeText === 'session ref' && params[0].name === 'session_id',
      result: parseType(m.result),
      implicit: m.implicit,
      hasAsync: ASYNC_MESSAGES.has(`${c.name}.${m.name}`),
      errors: m.errors,
      state: m.state,
      release: m.release,
    })
  }
  // xapi generates get_all_records_where for every class with get_all_records; its published
  // datamodel leaves it out (it lists only message's custom one).
  const all = messages.get('get_all_records')
  if (all && !messages.has('get_all_records_where')) {
    const session = all.params[0]!
    messages.set('get_all_records_where', { ...all, name: 'get_all_records_where', params: [session, { name: 'expr', type: parseType('string'), typeText: 'string' }], hasAsync: false, errors: [] })
  }
  classes.set(c.name, {
    name: c.name,
    state: c.state,
    release: c.release,
    fields: new Map(fieldList.map((f) => [f.name, f])),
    fieldList,
    messages,
    storedFields: fieldList,
    hasNameLabel: fieldList.some((f) => f.name === 'name_label'),
    listable: messages.has('get_all_records'),
    generatesEvents: !NO_EVENT_CLASSES.has(c.name),
  })
}

export interface Relation {
  setClass: string
  setField: string
  refClass: string
  refField: string
  /** The ref side is itself a set (a many-to-many relation such as pool_update.hosts). */
  refIsSet: boolean
}

/** Bound field pairs: `setClass.setField` lists the objects whose `refClass.refField` points at it. */
export const relations: Relation[] = []
for (const r of RELATIONS) {
  const setClass = classes.get(r.setClass)
  const refClass = classes.get(r.refClass)
  const setField = setClass?.fields.get(r.setField)
  const refField = refClass?.fields.get(r.refField)
  if (!setClass || !refClass || !setField || !refField) continue
  if (setField.type.kind !== 'set' || setField.type.of.kind !== 'ref' || setField.type.of.cls !== r.refClass) continue
  setField.derivedFrom = { refClass: r.refClass, refField: r.refField }
  relations.push({ ...r, refIsSet: refField.type.kind === 'set' })
}
for (const c of classes.values()) c.storedFields = c.fieldList.filter((f) => !f.derivedFrom)

/** Case-insensitive class lookup, as event subscriptions need. */
const lowerNames = new Map([...classes.keys()].map((n) => [n.toLowerCase(), n]))
export function classByAnyCase(name: string): ClassDef | undefined {
  const canonical = lowerNames.get(name.toLowerCase())
  return canonical === undefined ? undefined : classes.get(canonical)
}

export function getClass(name: string): ClassDef {
  const c = classes.get(name)
  if (!c) throw new Error(`no such class in the datamodel: ${name}`)
  return c
}

/** A complete record of `cls` with every field at its default. */
export function defaultRecord(cls: ClassDef): Record<string, unknown> {
  const rec: Record<string, unknown> = {}
  for (const f of cls.fieldList) rec[f.name] = structuredClone(f.default)
  return rec
}

/** A complete record of class `cls`: every field at the datamodel's default but those given. */
export function buildRecord<C extends ClassName>(cls: C, fields: Partial<ClassRecords[C]> = {}): ClassRecords[C] {
  return Object.assign(defaultRecord(getClass(cls)), fields) as unknown as ClassRecords[C]
}

/** A record's stored fields (the derived set fields left out): what a copy of the object starts from. */
export function storedFields<C extends ClassName>(cls: C, rec: Readonly<ClassRecords[C]>): StoredOf<C> {
  const out: Record<string, unknown> = {}
  for (const f of getClass(cls).storedFields) out[f.name] = (rec as Record<string, unknown>)[f.name]
  return out as StoredOf<C>
}

/** What of `given` the generated constructor of `cls` takes: its RW and RO/constructor stored fields. */
export function constructorArgs<C extends string>(cls: C, given: object): Partial<StoredOf<C>> {
  const out: Record<string, unknown> = {}
  for (const f of getClass(cls).storedFields)
    if ((f.qualifier === 'RW' || f.qualifier === 'RO/constructor') && Object.hasOwn(given, f.name)) out[f.name] = (given as Record<string, unknown>)[f.name]
  return out as Partial<StoredOf<C>>
}

/** Canonical spelling of an enum value given in any case, or undefined if not a member. */
export function canonicalEnum(enumName: string, value: string): string | undefined {
  const values = enums.get(enumName)
  if (!values) return undefined
  const lower = value.toLowerCase()
  return values.find((v) => v.toLowerCase() === lower)
}

/** A datetime as xapi writes it: "YYYYMMDDTHH:MM:SSZ", UTC. */
export function formatDatetime(d: Date): string {
  return d.toISOString().replace(/-/g, '').replace(/\.\d{3}Z$/, 'Z')
}
