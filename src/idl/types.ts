// XenAPI type expressions as xapi's datamodel spells them ("VM ref set",
// "(string -> enum vm_operations) map", "sr_stat record option") parsed into a small AST
// that the wire codecs, validation and record defaults are driven by.

export type XType =
  | { kind: 'string' }
  | { kind: 'int' }
  | { kind: 'float' }
  | { kind: 'bool' }
  | { kind: 'datetime' }
  | { kind: 'void' }
  | { kind: 'enum'; name: string }
  | { kind: 'ref'; cls: string }
  | { kind: 'record'; cls: string }
  | { kind: 'set'; of: XType }
  | { kind: 'map'; key: XType; value: XType }
  | { kind: 'option'; of: XType }
  /** `event.from`'s result struct. */
  | { kind: 'eventBatch' }
  /** An event's snapshot: a record of whichever class the event is about. */
  | { kind: 'anyRecord' }

const PRIMITIVES = new Set(['string', 'int', 'float', 'bool', 'datetime', 'void'])

export function parseType(text: string): XType {
  if (text === 'an event batch') return { kind: 'eventBatch' }
  const tokens = text.replace(/\(/g, ' ( ').replace(/\)/g, ' ) ').replace(/->/g, ' -> ').trim().split(/\s+/)
  let pos = 0
  const next = (): string => {
    const t = tokens[pos++]
    if (t === undefined) throw new Error(`bad type expression: ${text}`)
    return t
  }
  const parse = (): XType => {
    let t: XType
    const head = next()
    if (head === '(') {
      const key = parse()
      if (next() !== '->') throw new Error(`bad map type: ${text}`)
      const value = parse()
      if (next() !== ')' || next() !== 'map') throw new Error(`bad map type: ${text}`)
      t = { kind: 'map', key, value }
    } else if (head === 'enum') {
      t = { kind: 'enum', name: next() }
    } else if (PRIMITIVES.has(head) && tokens[pos] !== 'ref' && tokens[pos] !== 'record') {
      t = { kind: head } as XType
    } else {
      const what = next()
      if (what === 'ref') t = { kind: 'ref', cls: head }
      else if (what === 'record') t = head === '<class>' ? { kind: 'anyRecord' } : { kind: 'record', cls: head }
      else throw new Error(`bad type expression: ${text}`)
    }
    while (tokens[pos] === 'set' || tokens[pos] === 'option') {
      t = next() === 'set' ? { kind: 'set', of: t } : { kind: 'option', of: t }
    }
    return t
  }
  const result = parse()
  if (pos !== tokens.length) throw new Error(`bad type expression: ${text}`)
  return result
}

export function typeToString(t: XType): string {
  switch (t.kind) {
    case 'enum': return `enum ${t.name}`
    case 'ref': return `${t.cls} ref`
    case 'record': return `${t.cls} record`
    case 'set': return `${typeToString(t.of)} set`
    case 'option': return `${typeToString(t.of)} option`
    case 'map': return `(${typeToString(t.key)} -> ${typeToString(t.value)}) map`
    case 'eventBatch': return 'an event batch'
    case 'anyRecord': return '<class> record'
    default: return t.kind
  }
}
