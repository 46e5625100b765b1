// /console (xapi.md §7.7): a VM's VNC (rfb) or serial (vt100) console, as raw bytes over a
// WebSocket (Xen Orchestra, XO Lite/noVNC: subprotocol "binary") or after an HTTP CONNECT
// (XenCenter, xapi's own clients: `CONNECT /console?uuid=…&session_id=… HTTP/1.0`).
// The client names a console (ref= or uuid=; a VM's ref or uuid also names its rfb console);
// this layer resolves it to a VM uuid and protocol, and the host agent opens the VM's socket.
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { splice } from '../lib/splice.js'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { Services } from '../xapi/context.js'
import { httpSession, queryOf } from './handler.js'
import type { HttpRoute } from './server.js'

export type ConsoleProtocol = 'rfb' | 'vt100'

/** What the agent's `console` connect handler is asked for. */
export interface ConsoleTarget {
  vm: string
  protocol: ConsoleProtocol
  /** The VM is the host's control domain: the agent serves the host's own console. */
  controlDomain?: true
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly body = '',
    readonly headers: Record<string, string> = {},
  ) {
    super(`${status} ${reason}`)
  }
}

const notFound = (why: string) => new Refusal(404, 'Not Found', `${why}\n`)

/** The console record a query names, with its VM and the host it runs on; 404 if there is none, or none of a running VM. */
export function resolveConsole(svc: Services, req: IncomingMessage): { target: ConsoleTarget; host: string } {
  const query = queryOf(req)
  const db = svc.db
  let consoleRef: string | undefined
  const ref = query.get('ref')
  const uuid = query.get('uuid')
  if (ref) {
    if (db.tryRecord('console', ref)) consoleRef = ref
    else if (db.tryRecord('VM', ref)) consoleRef = defaultConsole(svc, ref)
  } else if (uuid) {
    consoleRef = db.replica.refByUuid('console', uuid)
    if (!consoleRef) {
      const vm = db.replica.refByUuid('VM', uuid)
      if (vm) consoleRef = defaultConsole(svc, vm)
    }
  }
  const record = consoleRef ? db.tryRecord('console', consoleRef) : undefined
  if (!record) throw notFound('no such console')
  const protocol = record.protocol
  if (protocol !== 'rfb' && protocol !== 'vt100') throw notFound(`console protocol ${protocol} is not served`)
  const vm = db.tryRecord('VM', record.VM)
  if (!vm || !['Running', 'Paused'].includes(vm.power_state)) throw notFound('the console\'s VM is not running')
  return { target: { vm: vm.uuid, protocol, ...(vm.is_control_domain === true ? { controlDomain: true as const } : {}) }, host: vm.resident_on }
}

/** A VM's rfb console (what xapi gives for a VM ref/uuid in place of a console's). */
function defaultConsole(svc: Services, vmRef: string): string | undefined {
  const consoles = svc.db.tryRecord('VM', vmRef)?.consoles ?? []
  return consoles.find((c) => svc.db.tryRecord('console', c)?.protocol === 'rfb')
}

/** Checks the session, resolves the console and has the agent open it: the upstream byte stream. */
async function openConsole(svc: Services, req: IncomingMessage): Promise<Duplex> {
  try {
    await httpSession(svc, req)
  } catch {
    throw new Refusal(401, 'Unauthorized', '', { 'WWW-Authenticate': 'Basic realm="xapi"' })
  }
  const { target, host } = resolveConsole(svc, req)
  try {
    // The console is served by the agent of the host the VM runs on.
    return await svc.agentFor(host).connect('console', target)
  } catch {
    throw notFound('the console\'s VM is not running on this host')
  }
}

/** An HTTP error on a socket that has not been upgraded, then close. */
function refuse(socket: Duplex, err: unknown): void {
  const r = err instanceof Refusal ? err : new Refusal(500, 'Internal Server Error')
  const headers = { ...r.headers, 'Content-Type': 'text/plain', 'Content-Length': String(Buffer.byteLength(r.body)), Connection: 'close' }
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
  if (!socket.destroyed) socket.end(`HTTP/1.1 ${r.status} ${r.reason}\r\n${head}\r\n${r.body}`)
}

/** The console a client's socket asked for; undefined when refused (the socket is answered) or gone meanwhile. */
async function consoleFor(svc: Services, req: IncomingMessage, socket: Duplex): Promise<Duplex | undefined> {
  socket.on('error', () => socket.destroy())
  let upstream: Duplex
  try {
    upstream = await openConsole(svc, req)
  } catch (err) {
    refuse(socket, err)
    return undefined
  }
  if (!socket.destroyed) return upstream
  upstream.destroy()
  return undefined
}

export function consoleRoute(svc: Services): HttpRoute {
  // Frames carry raw RFB / terminal bytes; "binary" is what XO, XO Lite and noVNC offer.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false, handleProtocols: (offered) => (offered.has('binary') ? 'binary' : false) })
  return {
    async upgrade(req, socket, head) {
      const upstream = await consoleFor(svc, req, socket)
      if (!upstream) return
      upstream.on('error', () => upstream.destroy())
      wss.handleUpgrade(req, socket, head, (ws) => splice(createWebSocketStream(ws), upstream))
      // handleUpgrade answers a malformed upgrade itself (400) and closes the socket.
      socket.once('close', () => upstream.destroy())
    },

    async connect(req, socket, head) {
      const upstream = await consoleFor(svc, req, socket)
      if (!upstream) return
      // What xapi answers (also to an HTTP/1.0 CONNECT), then the socket is the console.
      socket.write('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nCache-Control: no-cache, no-store\r\n\r\n')
      if (head.length) upstream.write(head)
      splice(socket, upstream)
    },
  }
}
