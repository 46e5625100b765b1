// How xe prints records: field names with dashes, right-aligned before their qualifier
// ("( RO)", "( RW)", "(SRO)", "(MRW)"), enums in lower case, maps as "k: v; k: v",
// refs as the uuid of the object they point at.
import type { ClassDef, Field, XType } from '../idl/index.js'

export const xeName = (field: string) => field.replace(/_/g, '-')
export const apiName = (param: string) => param.replace(/-/g, '_')
export const xeClass = (cls: string) => cls.toLowerCase().replace(/_/g, '-')

export function qualifier(f: Field): string {
  const rw = f.qualifier === 'RW' ? 'RW' : 'RO'
  const kind = f.type.kind === 'set' ? 'S' : f.type.kind === 'map' ? 'M' : ' '
  return `(${kind}${rw})`
}

export type UuidOf = (cls: string, ref: string) => string | undefined

export function formatValue(value: unknown, t: XType, uuidOf: UuidOf): string {
  switch (t.kind) {
    case 'enum':
      return String(value).toLowerCase()
    case 'ref':
      return value === 'OpaqueRef:NULL' ? '<not in database>' : (uuidOf(t.cls, String(value)) ?? '<not in database>')
    case 'set':
      return (value as unknown[]).map((v) => formatValue(v, t.of, uuidOf)).join('; ')
    case 'map':
      return Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => `${k}: ${formatValue(v, t.value, uuidOf)}`)
        .join('; ')
    default:
      return String(value)
  }
}

/** The records xe fetched, by class then ref: what derived columns look through. */
export type Fetched = ReadonlyMap<string, Readonly<Record<string, Readonly<Record<string, unknown>>>>>

/**
 * One column of xe's output or filters: a datamodel field, or one of the columns xapi's CLI adds
 * (records.ml): `<ref field>-uuid` and `<ref field>-name-label` of what a reference points at,
 * an SR's `host` (its one host's name, "<shared>" for an SR with several PBDs) and a host's
 * `host-metrics-live` (its host_metrics' live).
 */
export interface Column {
  /** As xe names it: `name-label`, `sr-uuid`. */
  name: string
  qualifier: string
  /** The classes whose records the column reads besides the listed one. */
  reads: string[]
  /** Filters on it ignore case (enums, which xapi prints in various cases: `running`, `Disk`). */
  caseInsensitive: boolean
  render(rec: Readonly<Record<string, unknown>>, fetched: Fetched, uuidOf: UuidOf): string
}

const fieldNamed = (cls: ClassDef, xe: string): Field | undefined =>
  cls.fields.get(apiName(xe)) ?? cls.fieldList.find((f) => f.name.toLowerCase() === apiName(xe).toLowerCase())

const nameOf = (fetched: Fetched, cls: string, ref: unknown) => {
  const name = fetched.get(cls)?.[String(ref)]?.name_label
  return name === undefined ? '<not in database>' : String(name)
}

export function columnOf(cls: ClassDef, xe: string): Column | undefined {
  const field = fieldNamed(cls, xe)
  if (field) return { name: xeName(field.name), qualifier: qualifier(field), reads: [], caseInsensitive: field.type.kind === 'enum', render: (rec, _f, uuidOf) => formatValue(rec[field.name], field.type, uuidOf) }
  if (cls.name === 'SR' && xe === 'host') {
    return {
      name: 'host',
      qualifier: '( RO)',
      reads: ['PBD', 'host'],
      caseInsensitive: false,
      render: (rec, fetched) => {
        const pbds = rec.PBDs as string[]
        return pbds.length > 1 ? '<shared>' : nameOf(fetched, 'host', fetched.get('PBD')?.[pbds[0] ?? '']?.host)
      },
    }
  }
  if (cls.name === 'host' && xe === 'host-metrics-live') {
    return {
      name: xe,
      qualifier: '( RO)',
      reads: ['host_metrics'],
      caseInsensitive: false,
      render: (rec, fetched) => String(fetched.get('host_metrics')?.[String(rec.metrics)]?.live ?? '<not in database>'),
    }
  }
  const derived = /^(.+)-(uuid|name-label)$/.exec(xe)
  const base = derived ? fieldNamed(cls, derived[1]!) : undefined
  if (!derived || base?.type.kind !== 'ref') return undefined
  const target = base.type.cls
  const render: Column['render'] = derived[2] === 'uuid' ? (rec, _f, uuidOf) => formatValue(rec[base.name], base.type, uuidOf) : (rec, fetched) => nameOf(fetched, target, rec[base.name])
  return { name: xe, qualifier: '( RO)', reads: [target], caseInsensitive: false, render }
}

/** Whether a record passes an xe filter `column=value`. */
export const matches = (column: Column, rec: Readonly<Record<string, unknown>>, value: string, fetched: Fetched, uuidOf: UuidOf): boolean => {
  const shown = column.render(rec, fetched, uuidOf)
  return column.caseInsensitive ? shown.toLowerCase() === value.toLowerCase() : shown === value
}

/** One record as xe prints it: the first column left-aligned, the others right-aligned. */
export function formatRecord(rec: Readonly<Record<string, unknown>>, columns: Column[], fetched: Fetched, uuidOf: UuidOf): string {
  const labels = columns.map((c) => `${c.name} ${c.qualifier}`)
  const width = Math.max(...labels.map((l) => l.length))
  return columns.map((c, i) => `${i === 0 ? labels[i]!.padEnd(width) : labels[i]!.padStart(width)}: ${c.render(rec, fetched, uuidOf)}`).join('\n')
}
