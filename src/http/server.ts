// The daemon's HTTP and HTTPS front door: RPC, CORS pre-flights, and (later) the bulk
// handlers and the web UI. Bodies that cannot be RPC get xapi's HTTP 500 page.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from '../xapi/dispatch.js'
import type { Client } from '../xapi/context.js'
import { ConnectionWatch, DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from './connections.js'
import { MalformedRequest } from '../rpc/xmlrpc.js'
import { escapeXml } from '../rpc/xmlrpc.js'
import { handleJsonRpc, handleXmlRpc } from './rpc.js'

/** xapi's limit on an RPC request body. */
export const MAX_RPC_BODY = 300 * 1024

const CORS = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'X-Requested-With' }

/** A bulk handler (/import_raw_vdi, /console, ...): plain requests, WebSocket upgrades, HTTP CONNECT. */
export interface HttpRoute {
  request?(req: IncomingMessage, res: ServerResponse): void | Promise<void>
  upgrade?(req: IncomingMessage, socket: Duplex, head: Buffer): void | Promise<void>
  connect?(req: IncomingMessage, socket: Duplex, head: Buffer): void | Promise<void>
}

export interface HttpOptions {
  dispatcher: Dispatcher
  /** Bulk handlers by path, matched with or without a trailing slash. */
  routes?: Map<string, HttpRoute>
  /** Called with one line per request: "POST /jsonrpc VM.get_record". */
  requestLog?: (line: string) => void
  /** Timeouts and the per-address connection cap (defaults: DEFAULT_CONNECTION_LIMITS). */
  limits?: ConnectionLimits
}

/** The client of a request as xapi names it: "HTTP 192.0.2.1", an IPv4-mapped address as IPv4. */
export function clientOf(req: IncomingMessage): Client {
  const address = (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '')
  return { protocol: 'encrypted' in req.socket && req.socket.encrypted ? 'HTTPS' : 'HTTP', address }
}

const routeOf = (opts: HttpOptions, url: string | undefined): HttpRoute | undefined => {
  const path = (url ?? '/').split('?')[0]!
  return opts.routes?.get(path.length > 1 ? path.replace(/\/+$/, '') : path)
}

/** What xapi sends for a request it cannot handle at all: a 500 page, then it closes. */
function internalError(res: ServerResponse, detail: string): void {
  const body = `<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; please wait a while and try again. If the problem persists, please contact your support representative.<h1> Additional information </h1>${escapeXml(detail)}</body></html>`
  res.writeHead(500, { 'content-type': 'text/html', connection: 'close', 'cache-control': 'no-cache, no-store' })
  res.end(body)
}

/** The body, which must come whole within `timeoutMs` (a trickle that keeps moving is cut too). */
function readBody(req: IncomingMessage, length: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const timer = setTimeout(() => req.destroy(new Error('the request body took too long')), timeoutMs)
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > length) req.destroy(new Error('body longer than its Content-Length'))
      else chunks.push(c)
    })
    req.on('end', () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks))
    })
    req.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    req.on('close', () => clearTimeout(timer))
  })
}

export function requestHandler(opts: HttpOptions) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0]!
    const log = (what: string) => opts.requestLog?.(`${req.method} ${path} ${what}`.trimEnd())
    if (req.method === 'OPTIONS') {
      log('')
      res.writeHead(200, { ...CORS, 'access-control-allow-methods': 'POST, GET, OPTIONS', 'content-length': 0 })
      return void res.end()
    }
    const route = routeOf(opts, req.url)
    if (route?.request && req.method !== 'POST') {
      log('')
      return void Promise.resolve(route.request(req, res)).catch((err: Error) => (res.headersSent ? res.destroy() : internalError(res, err.message)))
    }
    if (req.method === 'POST') return void handleRpc(req, res, path, log)
    log('')
    if (req.method === 'GET' && path === '/') {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
      return void res.end('Flotilla: XenAPI on XML-RPC (POST /) and JSON-RPC (POST /jsonrpc).\n')
    }
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('not found\n')
  }

  async function handleRpc(req: IncomingMessage, res: ServerResponse, path: string, log: (what: string) => void): Promise<void> {
    const declared = req.headers['content-length']
    if (declared === undefined) {
      log('')
      return internalError(res, 'We require a content-length: HTTP header')
    }
    const length = Number(declared)
    if (!Number.isSafeInteger(length) || length > MAX_RPC_BODY) {
      log('')
      return internalError(res, 'Http_svr.Client_requested_size_over_limit')
    }
    try {
      const body = await readBody(req, length, (opts.limits ?? DEFAULT_CONNECTION_LIMITS).rpcBodyTimeoutMs)
      const handle = path === '/jsonrpc' || path === '/jsonrpc/' ? handleJsonRpc : handleXmlRpc
      const reply = await handle(opts.dispatcher.forClient(clientOf(req)), body, log)
      res.writeHead(200, { 'content-type': reply.contentType, 'content-length': reply.body.length, ...CORS })
      res.end(reply.body)
    } catch (err) {
      if (res.headersSent || req.socket.destroyed) return
      log('')
      internalError(res, err instanceof MalformedRequest ? `parse error: ${err.message}` : String(err))
    }
  }
}

export interface Listeners {
  http?: Server
  https?: HttpsServer
}

/** Each listener's sockets handed to an upgrade or CONNECT route (consoles): closing the listener ends them, or server.close() would wait for them. */
const routedSockets = new WeakMap<object, Set<Duplex>>()

/** Sends WebSocket upgrades and CONNECT requests to their route; anything else is refused. */
function attachSocketRoutes(server: Server, opts: HttpOptions, watch: ConnectionWatch): void {
  const routed = new Set<Duplex>()
  routedSockets.set(server, routed)
  for (const kind of ['upgrade', 'connect'] as const) {
    server.on(kind, (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      opts.requestLog?.(`${req.method} ${(req.url ?? '/').split('?')[0]} ${kind}`)
      watch.forget(socket as Socket)
      routed.add(socket)
      socket.once('close', () => routed.delete(socket))
      const handle = routeOf(opts, req.url)?.[kind]
      if (!handle) return void socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n')
      void Promise.resolve(handle(req, socket, head)).catch(() => socket.destroy())
    })
  }
}

/** The connection cap and the watchdog on one listener (TLS connections are watched once secure). */
function guardConnections(server: Server, watch: ConnectionWatch, tls: boolean): void {
  server.keepAliveTimeout = watch.limits.keepAliveTimeoutMs
  server.on('connection', (socket: Socket) => {
    if (watch.admit(socket) && !tls) watch.watch(socket)
  })
  if (tls) server.on('secureConnection', (socket: Socket) => watch.watch(socket))
  server.on('request', (req: IncomingMessage, res: ServerResponse) => watch.begin(req, res))
  server.on('close', () => watch.stop())
}

export async function listen(opts: HttpOptions, address: string, httpPort: number | undefined, https?: { port: number; key: string; cert: string }): Promise<Listeners> {
  const handler = requestHandler(opts)
  const limits = opts.limits ?? DEFAULT_CONNECTION_LIMITS
  // One watch for both listeners: the cap counts a client's HTTP and HTTPS connections together.
  const watch = new ConnectionWatch(limits)
  const nodeOptions = {
    headersTimeout: limits.headersTimeoutMs,
    // Off: it covers the whole body, and uploads of many GiB may take hours (the watchdog cuts stalled ones).
    requestTimeout: 0,
    // How often Node looks for overdue request heads (its default, 30 s, would let them run late).
    connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
  }
  const out: Listeners = {}
  const start = (server: Server, port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, address, () => resolve())
    })
  if (httpPort !== undefined) {
    out.http = createHttpServer(nodeOptions, handler)
    guardConnections(out.http, watch, false)
    await start(out.http, httpPort)
  }
  if (https) {
    out.https = createHttpsServer({ ...nodeOptions, ...tlsOptions(https), handshakeTimeout: limits.tlsHandshakeTimeoutMs }, handler)
    guardConnections(out.https, watch, true)
    await start(out.https, https.port)
  }
  for (const s of [out.http, out.https]) if (s) attachSocketRoutes(s, opts, watch)
  return out
}

/** The TLS options of the HTTPS listener: with `listen`'s, and again when its certificate is replaced. */
const tlsOptions = (t: { key: string; cert: string }) => ({ key: t.key, cert: t.cert, minVersion: 'TLSv1.2' as const })

/** New HTTPS connections present this key and certificate from now on; open ones keep theirs. Throws if the TLS library refuses them. */
export function reloadCertificate(l: Listeners, t: { key: string; cert: string }): void {
  l.https?.setSecureContext(tlsOptions(t))
}

export async function closeListeners(l: Listeners): Promise<void> {
  await Promise.all(
    [l.http, l.https].map((s) =>
      s ? new Promise<void>((resolve) => {
        s.close(() => resolve())
        s.closeAllConnections()
        for (const socket of routedSockets.get(s) ?? []) socket.destroy()
      }) : undefined,
    ),
  )
}
