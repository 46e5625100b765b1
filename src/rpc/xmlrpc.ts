// XML-RPC: parsing a methodCall (strictly, without DTDs or entity expansion) and writing
// methodResponse documents as xapi writes them.
import { SaxesParser } from 'saxes'
import type { Chunk } from './marshal.js'
import { MalformedRequest, MAX_VALUE_DEPTH, valuesTooDeep, type Wire } from './wire.js'

export { MalformedRequest }

export interface MethodCall {
  method: string
  params: Wire[]
}

const SCALARS = new Set(['string', 'int', 'i4', 'i8', 'double', 'boolean', 'dateTime.iso8601', 'base64'])
/** What a <value> may hold instead of text: exactly one of these. */
const TYPED = new Set([...SCALARS, 'array', 'struct', 'nil'])
/** Elements whose children come in this order, each at most once (completeness is checked on close). */
const SEQUENCE: Record<string, readonly string[]> = {
  methodCall: ['methodName', 'params'],
  param: ['value'],
  array: ['data'],
  member: ['name', 'value'],
}
/** Elements holding any number of children of one kind. */
const REPEATED: Record<string, string> = { params: 'param', data: 'value', struct: 'member' }
/** Elements that hold character data (all others may only hold white space between children). */
const TEXT = new Set([...SCALARS, 'value', 'name', 'methodName'])
/** XML white space, the only text xapi's parser skips between elements. */
const NOT_BLANK = /[^ \t\n\r]/

interface Frame {
  tag: string
  text: string
  children: number
  /** Where the next child may start in the element's SEQUENCE. */
  next: number
  /** What a <value>, <param> or <member> holds once its child has closed. */
  value?: Wire
  /** A <member>'s name. */
  name?: string
  /** The items of a <data> (then of its <array>). */
  items?: Wire[]
  /** A <struct>'s members. */
  members?: Map<string, Wire>
}

function scalarWire(tag: string, text: string): Wire {
  switch (tag) {
    case 'string': case 'base64': return { t: 'string', v: text }
    case 'int': case 'i4': case 'i8': return { t: 'int', v: text.trim() }
    case 'double': return { t: 'double', v: text.trim() }
    case 'boolean': return { t: 'bool', v: text.trim() === '1' }
    default: return { t: 'datetime', v: text.trim() }
  }
}

/** Whether `tag` may open inside `parent` now; advances the parent's sequence. */
function admits(parent: Frame, tag: string): boolean {
  const sequence = SEQUENCE[parent.tag]
  if (sequence) {
    const at = sequence.indexOf(tag, parent.next)
    if (at < 0) return false
    parent.next = at + 1
    return true
  }
  if (parent.tag === 'value') return TYPED.has(tag) && parent.children === 0 && !NOT_BLANK.test(parent.text)
  return REPEATED[parent.tag] === tag
}

export function parseMethodCall(xml: string): MethodCall {
  const { method, params } = parseDocument(xml, 'methodCall')
  if (!method) throw new MalformedRequest('no <methodName>')
  return { method, params }
}

/** A document that is one bare XML-RPC `<value>` (an XVA's ova.xml), with the same strictness. */
export function parseValueDocument(xml: string): Wire {
  const { top } = parseDocument(xml, 'value')
  if (!top) throw new MalformedRequest('no <value>')
  return top
}

/**
 * The grammar xapi's parser (ocaml-rpc's Xmlrpc) enforces: one <methodName>, one <params>,
 * one <value> per <param>, a <value> holding text or one typed element, members of one name
 * and one value, no stray text. Anything else is malformed rather than guessed at.
 */
function parseDocument(xml: string, rootTag: 'methodCall' | 'value'): { method?: string; params: Wire[]; top?: Wire } {
  const parser = new SaxesParser({ xmlns: false })
  let documentValue: Wire | undefined
  const stack: Frame[] = []
  const params: Wire[] = []
  let method: string | undefined
  let error: string | undefined
  let limit: Error | undefined
  let depth = 0

  const fail = (msg: string) => {
    error ??= msg
  }
  const deliver = (w: Wire) => {
    const parent = stack[stack.length - 1]
    if (!parent) documentValue = w
    else if (parent.tag === 'data') parent.items!.push(w)
    else parent.value = w
  }
  const onText = (text: string) => {
    const top = stack[stack.length - 1]
    if (error || !top) return
    if (!TEXT.has(top.tag) || (top.tag === 'value' && top.children > 0)) {
      if (NOT_BLANK.test(text)) fail(`text inside <${top.tag}>`)
    } else top.text += text
  }

  parser.on('doctype', () => fail('DTDs are not accepted'))
  parser.on('error', (e) => fail(e.message))
  parser.on('opentag', (node) => {
    if (error) return
    const tag = node.name
    const parent = stack[stack.length - 1]
    if (parent) {
      if (!admits(parent, tag)) return fail(`unexpected <${tag}> inside <${parent.tag}>`)
      parent.children++
    } else if (tag !== rootTag) return fail(`root element is <${tag}>, not <${rootTag}>`)
    if (tag === 'array' || tag === 'struct') {
      if (++depth > MAX_VALUE_DEPTH) {
        limit = valuesTooDeep()
        return fail(limit.message)
      }
    }
    stack.push({ tag, text: '', children: 0, next: 0, items: tag === 'data' ? [] : undefined, members: tag === 'struct' ? new Map() : undefined })
  })
  parser.on('text', onText)
  parser.on('cdata', onText)
  parser.on('closetag', () => {
    if (error) return
    const top = stack.pop()!
    const parent = stack[stack.length - 1]
    switch (top.tag) {
      case 'value':
        return deliver(top.value ?? { t: 'string', v: top.text })
      case 'nil':
        return void (parent!.value = { t: 'nil' })
      case 'array':
        depth--
        return void (parent!.value = { t: 'array', v: top.items ?? [] })
      case 'data':
        return void (parent!.items = top.items)
      case 'struct':
        depth--
        return void (parent!.value = { t: 'struct', v: top.members! })
      case 'member':
        if (top.name === undefined || top.value === undefined) return fail('<member> without <name> and <value>')
        return void parent!.members!.set(top.name, top.value)
      case 'name':
        return void (parent!.name = top.text)
      case 'methodName':
        return void (method = top.text.trim())
      case 'param':
        if (top.value === undefined) return fail('<param> without a <value>')
        return void params.push(top.value)
      case 'params': case 'methodCall':
        return
      default:
        return void (parent!.value = scalarWire(top.tag, top.text))
    }
  })
  try {
    parser.write(xml).close()
  } catch (e) {
    fail((e as Error).message)
  }
  if (limit) throw limit
  if (error) throw new MalformedRequest(error)
  return { method, params, top: documentValue }
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'))
}

const HEAD = '<?xml version="1.0"?><methodResponse><params><param><value>'
const TAIL = '</value></param></params></methodResponse>'

/** A success response around an encoded `<value>`. */
export function xmlSuccess(value: Chunk[]): Chunk[] {
  return [`${HEAD}<struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>`, ...value, `</member></struct>${TAIL}`]
}

export function xmlFailure(description: string[]): string {
  const items = description.map((d) => `<value>${escapeXml(d)}</value>`).join('')
  return `${HEAD}<struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>${items}</data></array></value></member></struct>${TAIL}`
}

/** A bare response (system.listMethods answers without the Status wrapper). */
export function xmlBare(value: Chunk[]): Chunk[] {
  return ['<?xml version="1.0"?><methodResponse><params><param>', ...value, '</param></params></methodResponse>']
}
