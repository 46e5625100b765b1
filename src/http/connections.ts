// Connection hygiene for the HTTP(S) listeners: a cap on concurrent connections per client
// address, and a watchdog that closes connections on which the client keeps us waiting (no
// request, a body or a download that stopped moving) but never one on which we are the ones
// working (an event.from long poll, an import waiting for its SR, an export reading a disk).
// Node's own timeouts do the rest: headersTimeout for the request head (it counts from the
// first byte, hence the watchdog for connections that send nothing), keepAliveTimeout between
// requests, the TLS handshakeTimeout. Its requestTimeout (the whole request, body included) is
// off: it would cut uploads of many GiB, which may take hours.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { addressKey } from '../xapi/login-guard.js'

export interface ConnectionLimits {
  /** A request head must be complete this long after it began; a new connection must send within this long. */
  headersTimeoutMs: number
  /** An idle connection between two requests is closed after this long. */
  keepAliveTimeoutMs: number
  /** A request body or a response that moves no byte this long while we wait on the client is cut. */
  stallTimeoutMs: number
  /** An RPC body (at most 300 KiB) must arrive whole within this long, however it trickles. */
  rpcBodyTimeoutMs: number
  /** A TLS handshake must be done within this long. */
  tlsHandshakeTimeoutMs: number
  /** Connections beyond this many from one address (an IPv6 /64) are closed at once. */
  maxConnectionsPerAddress: number
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  headersTimeoutMs: 30_000,
  // What Node advertises (Keep-Alive: timeout=5) and XO's undici honours.
  keepAliveTimeoutMs: 5_000,
  // XO's own inactivity limit on HTTP transfers: never stricter than the main client.
  stallTimeoutMs: 5 * 60_000,
  rpcBodyTimeoutMs: 60_000,
  tlsHandshakeTimeoutMs: 10_000,
  // XO runs up to 20 calls at once plus its event loop and several transfers; ample for one host.
  maxConnectionsPerAddress: 100,
}

/** What a connection is waiting for when the watchdog looks at it. */
export type Phase = 'request' | 'client' | 'server'

export interface ConnectionState {
  /** A request is being answered on it. */
  busy: boolean
  /** Its request body is still arriving and the handler is reading it (not pausing it). */
  readingBody: boolean
  /** Bytes of the answer wait in the socket's buffer: the client is not reading them. */
  sendBlocked: boolean
}

/** Who the connection waits on: the next request, the client's bytes moving, or us (pure). */
export function phaseOf(s: ConnectionState): Phase {
  if (!s.busy) return 'request'
  if (s.readingBody || s.sendBlocked) return 'client'
  return 'server'
}

/** Whether a connection that moved no byte for `quietMs` should be closed (pure). */
export function overdue(phase: Phase, quietMs: number, limits: ConnectionLimits): boolean {
  if (phase === 'request') return quietMs >= limits.headersTimeoutMs
  if (phase === 'client') return quietMs >= limits.stallTimeoutMs
  return false
}

/** How often the watchdog looks: a quarter of the shortest limit it enforces, within [50 ms, 1 s]. */
export function tickMs(limits: ConnectionLimits): number {
  return Math.max(50, Math.min(1000, Math.floor(Math.min(limits.headersTimeoutMs, limits.stallTimeoutMs) / 4)))
}

interface Watched {
  req?: IncomingMessage
  moved: number
  lastMoved: number
}

export class ConnectionWatch {
  private readonly perAddress = new Map<string, number>()
  private readonly watched = new Map<Socket, Watched>()
  private readonly timer: NodeJS.Timeout

  constructor(readonly limits: ConnectionLimits) {
    this.timer = setInterval(() => this.look(), tickMs(limits))
    this.timer.unref()
  }

  /** Counts a new TCP connection against its address; past the cap it is closed and false returned. */
  admit(socket: Socket): boolean {
    const key = addressKey(socket.remoteAddress ?? '')
    const open = this.perAddress.get(key) ?? 0
    if (open >= this.limits.maxConnectionsPerAddress) {
      socket.destroy()
      return false
    }
    this.perAddress.set(key, open + 1)
    socket.once('close', () => {
      const left = (this.perAddress.get(key) ?? 1) - 1
      if (left > 0) this.perAddress.set(key, left)
      else this.perAddress.delete(key)
    })
    return true
  }

  /** Watches an HTTP connection (a plain one, or a TLS one once its handshake is done). */
  watch(socket: Socket): void {
    this.watched.set(socket, { moved: movedOn(socket), lastMoved: Date.now() })
    socket.once('close', () => this.watched.delete(socket))
  }

  /** A request is being answered on its connection until its response closes. */
  begin(req: IncomingMessage, res: ServerResponse): void {
    const w = this.watched.get(req.socket)
    if (!w) return
    w.req = req
    res.once('close', () => {
      if (w.req === req) w.req = undefined
    })
  }

  /** A connection handed to a WebSocket or CONNECT route, which owns its lifetime from now on. */
  forget(socket: Socket): void {
    this.watched.delete(socket)
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private look(): void {
    const now = Date.now()
    for (const [socket, w] of this.watched) {
      const moved = movedOn(socket)
      if (moved !== w.moved) {
        w.moved = moved
        w.lastMoved = now
        continue
      }
      const req = w.req
      const state = { busy: req !== undefined, readingBody: req !== undefined && !req.complete && req.readableFlowing === true, sendBlocked: socket.writableLength > 0 }
      if (overdue(phaseOf(state), now - w.lastMoved, this.limits)) {
        this.watched.delete(socket)
        socket.destroy()
      }
    }
  }
}

const movedOn = (socket: Socket) => socket.bytesRead + socket.bytesWritten
