// Untyped wire values as XML-RPC and JSON-RPC deliver them, before the datamodel gives them a type.
export type Wire =
  | { t: 'string'; v: string }
  | { t: 'int'; v: string }
  | { t: 'double'; v: string }
  | { t: 'bool'; v: boolean }
  | { t: 'datetime'; v: string }
  | { t: 'nil' }
  | { t: 'array'; v: Wire[] }
  | { t: 'struct'; v: Map<string, Wire> }

export function wireFromJson(value: unknown): Wire {
  if (typeof value === 'string') return { t: 'string', v: value }
  if (typeof value === 'number') return Number.isInteger(value) ? { t: 'int', v: String(value) } : { t: 'double', v: String(value) }
  if (typeof value === 'boolean') return { t: 'bool', v: value }
  if (value === null || value === undefined) return { t: 'nil' }
  if (Array.isArray(value)) return { t: 'array', v: value.map(wireFromJson) }
  return { t: 'struct', v: new Map(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, wireFromJson(v)])) }
}

export function describeWire(w: Wire): string {
  switch (w.t) {
    case 'array': return 'an array'
    case 'struct': return 'a struct'
    case 'nil': return 'nil'
    default: return `${w.t} ${JSON.stringify(w.v)}`
  }
}
