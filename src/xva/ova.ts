// ova.xml: one bare XML-RPC <value>, a struct of `version` and `objects` (reference/xapi.md §8.2).
// Writing: records with their references rewritten to archive ids (Ref:N); reading: as
// tolerantly as xapi (missing fields take IDL defaults, lower-case enums, numbers as strings,
// unknown fields ignored, references to objects not in the archive become NULL). Pure.
import { canonicalEnum, classes, getClass, NULL_REF, type XType } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import { chunksToBuffer, normaliseDatetime, recordXml, type Chunk } from '../rpc/marshal.js'
import { escapeXml, parseValueDocument, MalformedRequest } from '../rpc/xmlrpc.js'
import type { Wire } from '../rpc/wire.js'

type Rec = Record<string, unknown>

export interface OvaObject {
  cls: string
  id: string
  snapshot: Rec
}

export interface OvaVersion {
  [key: string]: string | number
}

/** Object classes an export may contain; anything else found on import is ignored. */
export const KNOWN_CLASSES = ['VM', 'VM_metrics', 'VM_guest_metrics', 'VBD', 'VIF', 'VDI', 'SR', 'network', 'host', 'VTPM', 'VGPU', 'GPU_group', 'VGPU_type', 'PVS_proxy', 'PVS_site']

function versionXml(version: OvaVersion): string {
  const members = Object.entries(version)
    .map(([k, v]) => `<member><name>${escapeXml(k)}</name><value>${typeof v === 'number' ? `<i4>${v}</i4>` : escapeXml(v)}</value></member>`)
    .join('')
  return `<value><struct>${members}</struct></value>`
}

/** The text of ova.xml for these objects (pure). */
export function writeOvaXml(objects: OvaObject[], version: OvaVersion): Buffer {
  const out: Chunk[] = [`<value><struct><member><name>version</name>${versionXml(version)}</member><member><name>objects</name><value><array><data>`]
  for (const o of objects) {
    out.push(`<value><struct><member><name>class</name><value>${escapeXml(o.cls)}</value></member><member><name>id</name><value>${escapeXml(o.id)}</value></member><member><name>snapshot</name>`)
    out.push(recordXml(o.cls, o.snapshot))
    out.push('</member></struct></value>')
  }
  out.push('</data></array></value></member></struct></value>')
  return chunksToBuffer(out)
}

/** Rewrites a record's references for an archive: exported objects by id, others NULL (refs) or dropped (sets); operations emptied (pure). */
export function archiveSnapshot(cls: string, rec: Readonly<Rec>, idOf: (ref: string) => string | undefined): Rec {
  const def = getClass(cls)
  const out: Rec = {}
  for (const f of def.fieldList) {
    let v = rec[f.name]
    if (f.type.kind === 'ref') v = typeof v === 'string' ? (idOf(v) ?? NULL_REF) : NULL_REF
    else if (f.type.kind === 'set' && f.type.of.kind === 'ref') v = ((v as string[] | undefined) ?? []).map((r) => idOf(r)).filter((r): r is string => r !== undefined)
    else if (f.type.kind === 'map' && f.type.value.kind === 'ref') v = {}
    if (f.name === 'current_operations') v = {}
    if (f.name === 'allowed_operations') v = []
    out[f.name] = v
  }
  return out
}

export interface ParsedOva {
  version: Record<string, string>
  objects: { cls: string; id: string; snapshot: Map<string, Wire> }[]
}

const wireText = (w: Wire | undefined): string | undefined => (w && w.t !== 'array' && w.t !== 'struct' && w.t !== 'nil' ? String(w.v) : undefined)

/** ova.xml's structure, checked but not yet typed (IMPORT_ERROR if it is not one). */
export function parseOvaXml(xml: string): ParsedOva {
  let root: Wire
  try {
    root = parseValueDocument(xml)
  } catch (err) {
    throw new XapiError('IMPORT_ERROR', [`ova.xml is not an XML-RPC value: ${err instanceof MalformedRequest ? err.message : String(err)}`])
  }
  if (root.t !== 'struct') throw new XapiError('IMPORT_ERROR', ['ova.xml is not a struct'])
  const version: Record<string, string> = {}
  const v = root.v.get('version')
  if (v?.t === 'struct') for (const [k, w] of v.v) version[k] = wireText(w) ?? ''
  const list = root.v.get('objects')
  if (!list || list.t !== 'array') throw new XapiError('IMPORT_ERROR', ['ova.xml has no objects array'])
  const objects: ParsedOva['objects'] = []
  const seen = new Set<string>()
  for (const item of list.v) {
    if (item.t !== 'struct') throw new XapiError('IMPORT_ERROR', ['an ova.xml object is not a struct'])
    const cls = wireText(item.v.get('class'))
    const id = wireText(item.v.get('id'))
    const snapshot = item.v.get('snapshot')
    if (!cls || !id || snapshot?.t !== 'struct') throw new XapiError('IMPORT_ERROR', ['an ova.xml object lacks class, id or snapshot'])
    if (seen.has(id)) throw new XapiError('IMPORT_ERROR', [`ova.xml has two objects with id ${id}`])
    seen.add(id)
    const canonical = [...classes.keys()].find((c) => c.toLowerCase() === cls.toLowerCase())
    objects.push({ cls: canonical ?? cls, id, snapshot: snapshot.v })
  }
  return { version, objects }
}

/** A wire value as a value of type `t`, accepting what xapi accepts; undefined if it cannot be one. */
export function tolerantValue(w: Wire, t: XType): unknown {
  const text = wireText(w)
  switch (t.kind) {
    case 'string': case 'ref':
      return text
    case 'int': {
      if (text === undefined) return undefined
      const n = Number(text.trim())
      return text.trim() !== '' && Number.isFinite(n) ? Math.trunc(n) : undefined
    }
    case 'float': {
      if (text === undefined) return undefined
      const n = Number(text.trim())
      return text.trim() !== '' && Number.isFinite(n) ? n : undefined
    }
    case 'bool':
      if (w.t === 'bool') return w.v
      if (text === undefined) return undefined
      return /^(true|1)$/i.test(text.trim()) ? true : /^(false|0)$/i.test(text.trim()) ? false : undefined
    case 'datetime':
      return text === undefined ? undefined : normaliseDatetime(text.trim())
    case 'enum':
      return text === undefined ? undefined : canonicalEnum(t.name, text.trim())
    case 'set': {
      if (w.t !== 'array') return undefined
      return w.v.map((item) => tolerantValue(item, t.of)).filter((x) => x !== undefined)
    }
    case 'map': {
      if (w.t !== 'struct') return w.t === 'array' && w.v.length === 0 ? {} : undefined
      const out: Rec = {}
      for (const [k, item] of w.v) {
        const val = tolerantValue(item, t.value)
        if (val !== undefined) out[k] = val
      }
      return out
    }
    case 'option':
      return w.t === 'nil' ? undefined : tolerantValue(w, t.of)
    default:
      return undefined
  }
}

/** An archive object's snapshot as a record of its class: every field typed, defaulted where missing or unusable (pure). */
export function tolerantRecord(cls: string, snapshot: Map<string, Wire>): Rec {
  const def = getClass(cls)
  const out: Rec = {}
  for (const f of def.fieldList) {
    const w = snapshot.get(f.name)
    const v = w === undefined ? undefined : tolerantValue(w, f.type)
    out[f.name] = v === undefined ? structuredClone(f.default) : v
  }
  return out
}
