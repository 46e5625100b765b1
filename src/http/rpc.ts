// The RPC endpoints: JSON-RPC on /jsonrpc, XML-RPC on every other POST path, framed exactly as
// xapi frames them (content types, Status/Value structs, JSON-RPC 1.0 and 2.0 shapes).
import type { CallResult, Dispatcher } from '../rpc/dispatch.js'
import { chunksToBuffer, jsonChunks, xmlChunks, type Chunk } from '../rpc/marshal.js'
import { wireFromJson, type Wire } from '../rpc/wire.js'
import { escapeXml, MalformedRequest, parseMethodCall, xmlBare, xmlFailure, xmlSuccess } from '../rpc/xmlrpc.js'

export interface RpcReply {
  contentType: 'text/xml' | 'application/json'
  body: Buffer
}

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

export async function handleXmlRpc(dispatcher: Dispatcher, body: string, onMethod?: (name: string) => void): Promise<RpcReply> {
  const call = parseMethodCall(body)
  onMethod?.(call.method)
  return { contentType: 'text/xml', body: chunksToBuffer(xmlReply(await dispatcher.call(call.method, call.params))) }
}

export async function handleJsonRpc(dispatcher: Dispatcher, body: string, onMethod?: (name: string) => void): Promise<RpcReply> {
  let request: unknown
  try {
    request = JSON.parse(body)
  } catch (e) {
    throw new MalformedRequest(`JSON: ${(e as Error).message}`)
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) throw new MalformedRequest('JSON-RPC request is not an object')
  const r = request as Record<string, unknown>
  const v2 = r.jsonrpc === '2.0'
  if (r.jsonrpc !== undefined && !v2) throw new MalformedRequest(`unsupported jsonrpc version ${JSON.stringify(r.jsonrpc)}`)
  if (typeof r.id !== 'string' && typeof r.id !== 'number') throw new MalformedRequest('JSON-RPC request without an id')
  if (typeof r.method !== 'string') throw new MalformedRequest('JSON-RPC request without a method')
  let params: Wire[]
  if (Array.isArray(r.params)) params = r.params.map(wireFromJson)
  else if (v2 && (r.params === undefined || r.params === null)) params = []
  else if (v2 && typeof r.params === 'object') params = [wireFromJson(r.params)]
  else throw new MalformedRequest('JSON-RPC params must be an array')
  onMethod?.(r.method)
  const result = await dispatcher.call(r.method, params)
  const id = JSON.stringify(r.id)
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
