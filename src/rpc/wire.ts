// Untyped wire values as XML-RPC and JSON-RPC deliver them, before the datamodel gives them a
// type, and the checks xapi makes on a request before it looks at any method: nesting, UTF-8.
import { isUtf8 } from 'node:buffer'
import { XapiError } from '../idl/errors.js'

/** Scalars keep their text: ints and doubles are converted (exactly) once their type is known. */
export type Wire =
  | { t: 'string'; v: string }
  | { t: 'int'; v: string }
  | { t: 'double'; v: string }
  | { t: 'bool'; v: boolean }
  | { t: 'datetime'; v: string }
  | { t: 'nil' }
  | { t: 'array'; v: Wire[] }
  | { t: 'struct'; v: Map<string, Wire> }

/** A body that is not an RPC request at all: xapi answers it with its HTTP 500 page. */
export class MalformedRequest extends Error {}

/**
 * How deep arrays and structs may nest in a request. XenAPI values need a handful of levels
 * (a VM record holding maps, a map of maps); big legitimate requests are wide, not deep.
 */
export const MAX_VALUE_DEPTH = 64

export function valuesTooDeep(): XapiError {
  return new XapiError('INTERNAL_ERROR', [`RPC request values are nested deeper than ${MAX_VALUE_DEPTH} arrays and structs`])
}

/** What a scan of a JSON text finds outside its strings (before parsing, which recurses). */
interface JsonShape {
  /** How deep `[` and `{` nest. */
  depth: number
  /** Every number is an integer of at most 15 digits (not -0): JSON.parse reads those exactly. */
  plainNumbers: boolean
}

const PLAIN_INTEGER_DIGITS = 15

function scanJson(text: string): JsonShape {
  let depth = 0
  let max = 0
  let plainNumbers = true
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      // Skip the string, escapes included.
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++
    } else if (c === 0x5b || c === 0x7b) max = Math.max(max, ++depth)
    else if (c === 0x5d || c === 0x7d) depth--
    else if (plainNumbers && (c === 0x2d || (c >= 0x30 && c <= 0x39))) {
      let end = i + 1
      while (end < text.length && /[\d.eE+-]/.test(text[end]!)) end++
      const token = text.slice(i, end)
      plainNumbers = token.length - (c === 0x2d ? 1 : 0) <= PLAIN_INTEGER_DIGITS && INTEGER_TOKEN.test(token) && token !== '-0'
      i = end - 1
    }
  }
  return { depth: max, plainNumbers }
}

const INTEGER_TOKEN = /^-?\d+$/

/** A JSON.parse reviver building Wires from the tokens' own text. */
function wireOfJson(_key: string, value: unknown, context?: { source?: string }): Wire {
  switch (typeof value) {
    case 'string': return { t: 'string', v: value }
    case 'boolean': return { t: 'bool', v: value }
    // The token's own digits: JSON.parse would round integers beyond 2^53. Like xapi's JSON
    // parser, a token with a fraction or an exponent is a float even if its value is integral.
    case 'number': return INTEGER_TOKEN.test(context!.source!) ? { t: 'int', v: context!.source! } : { t: 'double', v: context!.source! }
  }
  if (value === null) return { t: 'nil' }
  // Children were revived first: they are Wires already.
  if (Array.isArray(value)) return { t: 'array', v: value as Wire[] }
  return { t: 'struct', v: new Map(Object.entries(value as Record<string, Wire>)) }
}

/** The same Wires from JSON.parse's plain result, when every number is a plain integer (the common case, and far cheaper than a reviver). */
function wireOfPlainJson(value: unknown): Wire {
  switch (typeof value) {
    case 'string': return { t: 'string', v: value }
    case 'boolean': return { t: 'bool', v: value }
    case 'number': return { t: 'int', v: String(value) }
  }
  if (value === null) return { t: 'nil' }
  if (Array.isArray(value)) return { t: 'array', v: value.map(wireOfPlainJson) }
  return { t: 'struct', v: new Map(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, wireOfPlainJson(v)])) }
}

/**
 * A JSON text as one Wire (a JSON-RPC envelope, its params included). `extraDepth` is how many
 * levels the text adds around its values (the envelope object and the params array).
 */
export function parseJsonWire(text: string, extraDepth = 0): Wire {
  const { depth, plainNumbers } = scanJson(text)
  if (depth > MAX_VALUE_DEPTH + extraDepth) throw valuesTooDeep()
  try {
    return plainNumbers ? wireOfPlainJson(JSON.parse(text)) : (JSON.parse(text, wireOfJson) as Wire)
  } catch (e) {
    throw new MalformedRequest(`JSON: ${(e as Error).message}`)
  }
}

function validSequenceLength(b: Buffer, i: number): number {
  const b0 = b[i]!
  const continues = (k: number, lo = 0x80, hi = 0xbf) => {
    const c = b[i + k]
    return c !== undefined && c >= lo && c <= hi
  }
  if (b0 < 0x80) return 1
  if (b0 >= 0xc2 && b0 <= 0xdf) return continues(1) ? 2 : 0
  // No overlong forms, no UTF-16 surrogates (ED A0–BF), nothing above U+10FFFF.
  if (b0 >= 0xe0 && b0 <= 0xef) return continues(1, b0 === 0xe0 ? 0xa0 : 0x80, b0 === 0xed ? 0x9f : 0xbf) && continues(2) ? 3 : 0
  if (b0 >= 0xf0 && b0 <= 0xf4) return continues(1, b0 === 0xf0 ? 0x90 : 0x80, b0 === 0xf4 ? 0x8f : 0xbf) && continues(2) && continues(3) ? 4 : 0
  return 0
}

/**
 * A JSON body as text. xapi's JSON parser passes a string's bytes through and then refuses the
 * parameters that are not valid UTF-8; to tell those apart from a genuine U+FFFD, each byte of
 * an invalid sequence becomes a lone surrogate (U+DC80–U+DCFF), which the same check refuses.
 */
export function decodeJsonBody(body: Buffer): string {
  if (isUtf8(body)) return body.toString('utf8')
  let text = ''
  let run = 0
  for (let i = 0; i < body.length; ) {
    const n = validSequenceLength(body, i)
    if (n > 0) {
      i += n
      continue
    }
    text += body.toString('utf8', run, i) + String.fromCharCode(0xdc00 | body[i]!)
    run = ++i
  }
  return text + body.toString('utf8', run)
}

/** An XML body as text: xapi's XML parser refuses a malformed character stream outright. */
export function decodeXmlBody(body: Buffer): string {
  if (!isUtf8(body)) throw new MalformedRequest('malformed character stream (not UTF-8)')
  return body.toString('utf8')
}

const LONE_SURROGATE = /\p{Cs}/u
const LONE_SURROGATES = /\p{Cs}/gu

function wellFormed(w: Wire): boolean {
  switch (w.t) {
    case 'string': return !LONE_SURROGATE.test(w.v)
    case 'array': return w.v.every(wellFormed)
    case 'struct': return [...w.v].every(([k, v]) => !LONE_SURROGATE.test(k) && wellFormed(v))
    default: return true
  }
}

/** A parameter as xapi's Rpc.to_string prints it (S(…), I(…), {k:v;…}, […]) in its errors. */
function rpcText(w: Wire): string {
  switch (w.t) {
    case 'string': return `S(${w.v})`
    case 'int': return `I(${w.v})`
    case 'double': return `F(${w.v})`
    case 'bool': return `B(${w.v})`
    case 'datetime': return `D(${w.v})`
    case 'nil': return 'N'
    case 'array': return `[${w.v.map(rpcText).join(';')}]`
    case 'struct': return `{${[...w.v].map(([k, v]) => `${k}:${rpcText(v)}`).join(';')}}`
  }
}

/**
 * xapi's first check on a call, before it even resolves the method: every parameter must be
 * valid UTF-8, or INVALID_VALUE ["Invalid UTF-8 string in parameter", <the parameter>]. The
 * parameter is sent back with U+FFFD where the bad code units were, so the reply stays valid.
 */
export function invalidUtf8(params: Wire[]): XapiError | undefined {
  const bad = params.find((p) => !wellFormed(p))
  return bad && new XapiError('INVALID_VALUE', ['Invalid UTF-8 string in parameter', rpcText(bad).replace(LONE_SURROGATES, '\uFFFD')])
}

export function describeWire(w: Wire): string {
  switch (w.t) {
    case 'array': return 'an array'
    case 'struct': return 'a struct'
    case 'nil': return 'nil'
    default: return `${w.t} ${JSON.stringify(w.v)}`
  }
}
