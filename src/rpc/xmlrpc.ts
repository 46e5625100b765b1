// XML-RPC: parsing a methodCall (strictly, without DTDs or entity expansion) and writing
// methodResponse documents as xapi writes them.
import { SaxesParser } from 'saxes'
import type { Chunk } from './marshal.js'
import type { Wire } from './wire.js'

export class MalformedRequest extends Error {}

export interface MethodCall {
  method: string
  params: Wire[]
}

const SCALARS = new Set(['string', 'int', 'i4', 'i8', 'double', 'boolean', 'dateTime.iso8601', 'base64'])

type Frame =
  | { kind: 'value'; text: string; child?: Wire }
  | { kind: 'scalar'; tag: string; text: string }
  | { kind: 'array'; items: Wire[] }
  | { kind: 'struct'; members: Map<string, Wire> }
  | { kind: 'member'; name?: string; value?: Wire }
  | { kind: 'name'; text: string }
  | { kind: 'other'; tag: string; text: string }

function scalarWire(tag: string, text: string): Wire {
  switch (tag) {
    case 'string': case 'base64': return { t: 'string', v: text }
    case 'int': case 'i4': case 'i8': return { t: 'int', v: text.trim() }
    case 'double': return { t: 'double', v: text.trim() }
    case 'boolean': return { t: 'bool', v: text.trim() === '1' }
    default: return { t: 'datetime', v: text.trim() }
  }
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

function parseDocument(xml: string, rootTag: 'methodCall' | 'value'): { method?: string; params: Wire[]; top?: Wire } {
  const parser = new SaxesParser({ xmlns: false })
  let documentValue: Wire | undefined
  const stack: Frame[] = []
  const params: Wire[] = []
  let method: string | undefined
  let error: string | undefined
  let root = ''

  const fail = (msg: string) => {
    error ??= msg
  }
  const topValue = (w: Wire) => {
    documentValue = w
  }
  const deliver = (w: Wire) => {
    const top = stack[stack.length - 1]
    if (!top) {
      if (rootTag === 'value') return topValue(w)
      return fail('value outside any element')
    }
    if (top.kind === 'value') top.child = w
    else if (top.kind === 'array') top.items.push(w)
    else if (top.kind === 'member') top.value = w
    else if (top.kind === 'other' && top.tag === 'param') params.push(w)
    else fail(`unexpected value inside <${top.kind}>`)
  }

  parser.on('doctype', () => fail('DTDs are not accepted'))
  parser.on('error', (e) => fail(e.message))
  parser.on('opentag', (node) => {
    if (error) return
    const tag = node.name
    if (!root) {
      root = tag
      if (tag !== rootTag) fail(`root element is <${tag}>, not <${rootTag}>`)
    }
    const parent = stack[stack.length - 1]
    if (tag === 'value') stack.push({ kind: 'value', text: '' })
    else if (SCALARS.has(tag)) {
      if (parent?.kind !== 'value') fail(`<${tag}> outside <value>`)
      stack.push({ kind: 'scalar', tag, text: '' })
    } else if (tag === 'nil') {
      if (parent?.kind !== 'value') fail('<nil> outside <value>')
      stack.push({ kind: 'other', tag, text: '' })
    } else if (tag === 'array') stack.push({ kind: 'array', items: [] })
    else if (tag === 'data') {
      if (parent?.kind !== 'array') fail('<data> outside <array>')
    } else if (tag === 'struct') stack.push({ kind: 'struct', members: new Map() })
    else if (tag === 'member') stack.push({ kind: 'member' })
    else if (tag === 'name') stack.push({ kind: 'name', text: '' })
    else if (['methodCall', 'methodName', 'params', 'param'].includes(tag)) stack.push({ kind: 'other', tag, text: '' })
    else fail(`unexpected element <${tag}>`)
  })
  parser.on('text', (text) => {
    const top = stack[stack.length - 1]
    if (!top) return
    if (top.kind === 'value' || top.kind === 'scalar' || top.kind === 'name' || top.kind === 'other') top.text += text
  })
  parser.on('closetag', (node) => {
    if (error) return
    const tag = node.name
    if (tag === 'data') return
    const top = stack.pop()
    if (!top) return fail('unbalanced document')
    switch (top.kind) {
      case 'value':
        return deliver(top.child ?? { t: 'string', v: top.text })
      case 'scalar': {
        const parent = stack[stack.length - 1]
        if (parent?.kind === 'value') parent.child = scalarWire(top.tag, top.text)
        return
      }
      case 'array': {
        const parent = stack[stack.length - 1]
        if (parent?.kind === 'value') parent.child = { t: 'array', v: top.items }
        return
      }
      case 'struct': {
        const parent = stack[stack.length - 1]
        if (parent?.kind === 'value') parent.child = { t: 'struct', v: top.members }
        return
      }
      case 'member': {
        const parent = stack[stack.length - 1]
        if (top.name === undefined || top.value === undefined) return fail('<member> without <name> and <value>')
        if (parent?.kind === 'struct') parent.members.set(top.name, top.value)
        return
      }
      case 'name': {
        const parent = stack[stack.length - 1]
        if (parent?.kind === 'member') parent.name = top.text
        return
      }
      case 'other':
        if (top.tag === 'nil') {
          const parent = stack[stack.length - 1]
          if (parent?.kind === 'value') parent.child = { t: 'nil' }
        } else if (top.tag === 'methodName') method = top.text.trim()
        return
    }
  })
  try {
    parser.write(xml).close()
  } catch (e) {
    fail((e as Error).message)
  }
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
