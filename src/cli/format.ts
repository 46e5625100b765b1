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

/** One record as xe prints it: the first field left-aligned, the others right-aligned. */
export function formatRecord(cls: ClassDef, rec: Readonly<Record<string, unknown>>, fields: string[], uuidOf: UuidOf): string {
  const labels = fields.map((name) => `${xeName(name)} ${qualifier(cls.fields.get(name)!)}`)
  const width = Math.max(...labels.map((l) => l.length))
  return fields
    .map((name, i) => {
      const label = i === 0 ? labels[i]!.padEnd(width) : labels[i]!.padStart(width)
      return `${label}: ${formatValue(rec[name], cls.fields.get(name)!.type, uuidOf)}`
    })
    .join('\n')
}
