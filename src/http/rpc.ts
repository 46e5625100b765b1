// The RPC endpoints: JSON-RPC on /jsonrpc, XML-RPC on every other POST path, framed exactly as
// xapi frames them (content types, Status/Value structs, JSON-RPC 1.0 and 2.0 shapes).
import type { CallResult, Dispatcher } from '../xapi/dispatch.js'
import { chunksToBuffer, jsonChunks, xmlChunks, type Chunk } from '../rpc/marshal.js'
import { decodeJsonBody, decodeXmlBody, invalidUtf8, MalformedRequest, parseJsonWire, type Wire } from '../rpc/wire.js'
import { escapeXml, parseMethodCall, xmlBare, xmlFailure, xmlSuccess } from '../rpc/xmlrpc.js'
import { XapiError } from '../idl/errors.js'
import { parseInt64 } from '../lib/int64.js'

export interface RpcReply {
  contentType: 'text/xml' | 'application/json'
  body: Buffer
}

/** The levels a JSON-RPC envelope adds around its values: the request object and its params array. */
const JSON_ENVELOPE_DEPTH = 2

export function xmlReply(result: CallResult): Chunk[] {
  if (result.ok) {
    const value: Chunk[] = []
    xmlChunks(result.value, result.type, value)
    return result.bare ? xmlBare(value) : xmlSuccess(value)
  }
  if ('fault' in result)
    return [`<?xml version="1.0"?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>-1</int></value></member><member><name>faultString</name><value>${escapeXml(result.fault)}</value></member></struct></value></fault></methodResponse>`]
  return [xmlFailure(result.error)]
}

export async function handleXmlRpc(dispatcher: Dispatcher, body: Buffer, onMethod?: (name: string) => void): Promise<RpcReply> {
  let call
  try {
    call = parseMethodCall(decodeXmlBody(body))
  } catch (err) {
    // A XenAPI error raised while reading the request (a limit) is a failure response, as in xapi.
    if (!(err instanceof XapiError)) throw err
    onMethod?.('')
    return { contentType: 'text/xml', body: Buffer.from(xmlFailure(err.description)) }
  }
  onMethod?.(call.method)
  return { contentType: 'text/xml', body: chunksToBuffer(xmlReply(await dispatcher.call(call.method, call.params))) }
}

/** A failure raised before the call has an id: xapi sends it in the 2.0 shape with id 0. */
function jsonEarlyFailure(err: XapiError): RpcReply {
  const [code, ...data] = err.description
  return { contentType: 'application/json', body: Buffer.from(`{"jsonrpc":"2.0","error":${JSON.stringify({ code: 1, message: code, data })},"id":0}`) }
}

export async function handleJsonRpc(dispatcher: Dispatcher, body: Buffer, onMethod?: (name: string) => void): Promise<RpcReply> {
  let request: Wire
  try {
    request = parseJsonWire(decodeJsonBody(body), JSON_ENVELOPE_DEPTH)
  } catch (err) {
    if (!(err instanceof XapiError)) throw err
    onMethod?.('')
    return jsonEarlyFailure(err)
  }
  if (request.t !== 'struct') throw new MalformedRequest('JSON-RPC request is not an object')
  const field = (name: string) => request.v.get(name)
  const version = field('jsonrpc')
  const v2 = version?.t === 'string' && version.v === '2.0'
  if (version !== undefined && !v2) throw new MalformedRequest('unsupported jsonrpc version')
  // Like xapi's, an id is a string or an int64 (echoed with all its digits); a float is no id.
  const idWire = field('id')
  const intId = idWire?.t === 'int' ? parseInt64(idWire.v) : undefined
  let id: string
  if (idWire?.t === 'string') id = JSON.stringify(idWire.v)
  else if (intId !== undefined) id = String(intId)
  else throw new MalformedRequest('JSON-RPC request without a string or int64 id')
  const method = field('method')
  if (method?.t !== 'string') throw new MalformedRequest('JSON-RPC request without a method')
  const rawParams = field('params')
  let params: Wire[]
  if (rawParams?.t === 'array') params = rawParams.v
  else if (v2 && (rawParams === undefined || rawParams.t === 'nil')) params = []
  else if (v2 && rawParams?.t === 'struct') params = [rawParams]
  else throw new MalformedRequest('JSON-RPC params must be an array')
  onMethod?.(method.v)
  const badUtf8 = invalidUtf8(params)
  const result: CallResult = badUtf8 ? { ok: false, error: badUtf8.description } : await dispatcher.call(method.v, params)
  const out: Chunk[] = []
  if (result.ok) {
    out.push(v2 ? '{"jsonrpc":"2.0","result":' : '{"result":')
    jsonChunks(result.value, result.type, out)
    out.push(v2 ? `,"id":${id}}` : `,"error":null,"id":${id}}`)
  } else {
    const [code, ...data] = 'fault' in result ? ['INTERNAL_ERROR', result.fault] : result.error
    out.push(
      v2
        ? `{"jsonrpc":"2.0","error":${JSON.stringify({ code: 1, message: code, data })},"id":${id}}`
        : `{"result":null,"error":${JSON.stringify([code, ...data])},"id":${id}}`,
    )
  }
  return { contentType: 'application/json', body: chunksToBuffer(out) }
}
