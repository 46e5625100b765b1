// xapi's get_all_records_where filter language: `field "name__label" = "x" and not (...)`.
// Field names are database column names (nested namespaces joined by "__").
import { XapiError } from '../idl/errors.js'

export type Expr =
  | { op: 'true' }
  | { op: 'false' }
  | { op: 'eq'; left: Operand; right: Operand }
  | { op: 'and' | 'or'; left: Expr; right: Expr }
  | { op: 'not'; expr: Expr }

export type Operand = { field: string } | { literal: string }

function tokenize(text: string): string[] {
  const tokens: string[] = []
  const re = /\s*(?:("(?:[^"\\]|\\.)*")|(\(|\)|=)|([A-Za-z_]+))/y
  let pos = 0
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break
    re.lastIndex = pos
    const m = re.exec(text)
    if (!m) throw new XapiError('INVALID_VALUE', ['expr', text])
    tokens.push(m[1] ?? m[2] ?? m[3]!)
    pos = re.lastIndex
  }
  return tokens
}

export function parseWhere(text: string): Expr {
  const tokens = tokenize(text)
  let i = 0
  const bad = () => new XapiError('INVALID_VALUE', ['expr', text])
  const operand = (): Operand => {
    const t = tokens[i++]
    if (t === 'field') {
      const name = tokens[i++]
      if (!name?.startsWith('"')) throw bad()
      return { field: JSON.parse(name) as string }
    }
    if (t?.startsWith('"')) return { literal: JSON.parse(t) as string }
    throw bad()
  }
  const primary = (): Expr => {
    const t = tokens[i]
    if (t === '(') {
      i++
      const e = disjunction()
      if (tokens[i++] !== ')') throw bad()
      return e
    }
    if (t === 'not') {
      i++
      return { op: 'not', expr: primary() }
    }
    if (t === 'true' || t === 'false') {
      i++
      return { op: t }
    }
    const left = operand()
    if (tokens[i++] !== '=') throw bad()
    return { op: 'eq', left, right: operand() }
  }
  const conjunction = (): Expr => {
    let e = primary()
    while (tokens[i] === 'and') {
      i++
      e = { op: 'and', left: e, right: primary() }
    }
    return e
  }
  const disjunction = (): Expr => {
    let e = conjunction()
    while (tokens[i] === 'or') {
      i++
      e = { op: 'or', left: e, right: conjunction() }
    }
    return e
  }
  const e = disjunction()
  if (i !== tokens.length) throw bad()
  return e
}

/** How a stored value compares in a filter: as the database's string form. */
function columnText(value: unknown): string {
  if (typeof value === 'string') return value
  if (typeof value === 'boolean' || typeof value === 'number') return String(value)
  if (Array.isArray(value)) return `(${value.map((v) => `'${String(v)}'`).join(' ')})`
  if (value && typeof value === 'object') return `(${Object.entries(value).map(([k, v]) => `('${k}' '${String(v)}')`).join(' ')})`
  return ''
}

export function evaluateWhere(e: Expr, rec: Readonly<Record<string, unknown>>): boolean {
  const value = (o: Operand) => ('literal' in o ? o.literal : columnText(rec[o.field.replace(/__/g, '_')]))
  switch (e.op) {
    case 'true': return true
    case 'false': return false
    case 'eq': return value(e.left) === value(e.right)
    case 'and': return evaluateWhere(e.left, rec) && evaluateWhere(e.right, rec)
    case 'or': return evaluateWhere(e.left, rec) || evaluateWhere(e.right, rec)
    case 'not': return !evaluateWhere(e.expr, rec)
  }
}
