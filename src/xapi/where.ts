// xapi's get_all_records_where filter language: `field "name__label" = "x" and not (...)`.
// Field names are database column names (nested namespaces joined by "__"). The grammar is
// xapi's (ocaml/database/db_filter_parse.mly): "and" and "or" bind equally and from the left,
// and "not" takes everything after it up to the closing parenthesis ("not a and b" is
// "not (a and b)"); literals are quoted with no escapes.
import { XapiError } from '../idl/errors.js'

export type Expr =
  | { op: 'true' }
  | { op: 'false' }
  | { op: 'eq'; left: Operand; right: Operand }
  /** A run of terms joined by and/or, evaluated from the left (a flat list, so a long run needs no deep recursion). */
  | { op: 'chain'; first: Expr; rest: { join: 'and' | 'or'; expr: Expr }[] }
  | { op: 'not'; expr: Expr }

export type Operand = { field: string } | { literal: string }

/**
 * How deep parentheses and "not"s may nest. Real filters nest a few levels; the limit keeps
 * parsing and evaluation (both recursive) far from the stack's end. The length of a filter is
 * bounded by the request body (300 KiB), and long flat and/or runs cost no depth.
 */
export const MAX_WHERE_NESTING = 256

/** One token after optional white space, or the end of the text (no group matched). */
const TOKEN = /[ \t\n]*(?:("[^"]*")|([()=])|(true|false|field|and|or|not)|$)/y

function tokenize(text: string, bad: (reason: string) => XapiError): string[] {
  const tokens: string[] = []
  TOKEN.lastIndex = 0
  for (;;) {
    const at = TOKEN.lastIndex
    const m = TOKEN.exec(text)
    if (!m) throw bad(`unexpected character at offset ${at}`)
    const token = m[1] ?? m[2] ?? m[3]
    if (token === undefined) return tokens
    tokens.push(token)
  }
}

export function parseWhere(text: string): Expr {
  // xapi's Expression_error: the expression, then what was wrong with it.
  const bad = (reason: string) => new XapiError('INVALID_VALUE', [text, reason])
  const tokens = tokenize(text, bad)
  let i = 0
  let depth = 0
  const syntax = () => bad(`syntax error at token ${i}`)
  const nest = () => {
    if (++depth > MAX_WHERE_NESTING) throw bad(`nested deeper than ${MAX_WHERE_NESTING} levels`)
  }
  const operand = (): Operand => {
    const t = tokens[i++]
    if (t === 'field') {
      const name = tokens[i++]
      if (!name?.startsWith('"')) throw syntax()
      return { field: name.slice(1, -1) }
    }
    if (t?.startsWith('"')) return { literal: t.slice(1, -1) }
    throw syntax()
  }
  const term = (): Expr => {
    const t = tokens[i]
    if (t === 'not') {
      i++
      nest()
      const e: Expr = { op: 'not', expr: chain() }
      depth--
      return e
    }
    if (t === '(') {
      i++
      nest()
      const e = chain()
      if (tokens[i++] !== ')') throw syntax()
      depth--
      return e
    }
    if (t === 'true' || t === 'false') {
      i++
      return { op: t }
    }
    const left = operand()
    if (tokens[i++] !== '=') throw syntax()
    return { op: 'eq', left, right: operand() }
  }
  const chain = (): Expr => {
    const first = term()
    const rest: { join: 'and' | 'or'; expr: Expr }[] = []
    for (let t = tokens[i]; t === 'and' || t === 'or'; t = tokens[i]) {
      i++
      rest.push({ join: t, expr: term() })
    }
    return rest.length === 0 ? first : { op: 'chain', first, rest }
  }
  const e = chain()
  if (i !== tokens.length) throw syntax()
  return e
}

/** How a stored value compares in a filter: as the database's string form. */
function columnText(value: unknown): string {
  if (typeof value === 'string') return value
  if (typeof value === 'boolean' || typeof value === 'number' || typeof value === 'bigint') return String(value)
  if (Array.isArray(value)) return `(${value.map((v) => `'${String(v)}'`).join(' ')})`
  if (value && typeof value === 'object') return `(${Object.entries(value).map(([k, v]) => `('${k}' '${String(v)}')`).join(' ')})`
  return ''
}

export function evaluateWhere(e: Expr, rec: Readonly<Record<string, unknown>>): boolean {
  const value = (o: Operand) => {
    if ('literal' in o) return o.literal
    const column = o.field.replace(/__/g, '_')
    return Object.hasOwn(rec, column) ? columnText(rec[column]) : ''
  }
  switch (e.op) {
    case 'true': return true
    case 'false': return false
    case 'eq': return value(e.left) === value(e.right)
    case 'not': return !evaluateWhere(e.expr, rec)
    case 'chain': {
      let result = evaluateWhere(e.first, rec)
      for (const { join, expr } of e.rest) result = join === 'and' ? result && evaluateWhere(expr, rec) : result || evaluateWhere(expr, rec)
      return result
    }
  }
}
