// What every bulk HTTP handler needs: its query, the caller's session (from a cookie, the query,
// or a login with HTTP Basic credentials), and the task it reports through (adopted from task_id,
// or its own).
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough, type Writable } from 'node:stream'
import { asXapiError, XapiError } from '../idl/errors.js'
import type { Services } from '../xapi/context.js'
import { destroySession, login, validSession } from '../xapi/session.js'
import { createTask, finishTask, trackTask } from '../xapi/task.js'
import { taskResultXml } from '../xapi/dispatch.js'
import type { XType } from '../idl/index.js'
import type { AgentStream } from '../agent/contract.js'
import { clientOf } from './server.js'

export function queryOf(req: IncomingMessage): URLSearchParams {
  return new URL(req.url ?? '/', 'http://localhost').searchParams
}

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === name) return decodeURIComponent(v.join('='))
  }
  return undefined
}

/** The credentials of an `Authorization: Basic` header, split at the first colon as xapi does. */
export function basicCredentials(header: string | undefined): { user: string; password: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined
  const decoded = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

/** What ends a request: its response closing, or (for a WebSocket or CONNECT) its socket. */
type RequestEnd = { once(event: 'close', listener: () => void): unknown; readonly closed: boolean }

/**
 * The session a handler runs as, in xapi's order: `session_id` by cookie, then by query; else,
 * with Basic credentials, a login (through the same guard as session.login_with_password) whose
 * session is destroyed when the request ends, as xapi logs out. SESSION_INVALID or
 * SESSION_AUTHENTICATION_FAILED otherwise.
 */
export async function httpSession(svc: Services, req: IncomingMessage, end: RequestEnd = req.socket): Promise<{ ref: string; session: Readonly<Record<string, unknown>> }> {
  const given = cookie(req, 'session_id') ?? queryOf(req).get('session_id') ?? undefined
  const basic = given === undefined ? basicCredentials(req.headers.authorization) : undefined
  if (!basic) return { ref: given ?? '', session: await validSession(svc, given ?? '') }
  const client = clientOf(req)
  const ref = await login(svc, basic.user, basic.password, `${client.protocol} ${client.address} using Basic auth`, client)
  const logout = () => void destroySession(svc, ref).catch(() => undefined)
  if (end.closed) logout()
  else end.once('close', logout)
  return { ref, session: await validSession(svc, ref) }
}

/** A handler's task: the client's own (task_id, which must be pending) or one made for the call. */
export class HandlerTask {
  /** Aborted by task.cancel. */
  readonly signal: AbortSignal

  private constructor(
    private readonly svc: Services,
    readonly ref: string,
  ) {
    this.signal = trackTask(ref)
  }

  static async adopt(svc: Services, req: IncomingMessage, label: string): Promise<HandlerTask> {
    const given = queryOf(req).get('task_id')
    if (given) {
      const task = svc.db.tryRecord('task', given)
      if (!task) throw new XapiError('HANDLE_INVALID', ['task', given])
      if (task.status !== 'pending') throw new XapiError('OPERATION_NOT_ALLOWED', [`task ${given} is ${task.status}`])
      return new HandlerTask(svc, given)
    }
    return new HandlerTask(svc, await createTask(svc, label))
  }

  async progress(fraction: number): Promise<void> {
    await this.svc.db.transact((tx) => tx.exists('task', this.ref) && tx.update('task', this.ref, { progress: Math.min(1, Math.max(0, fraction)) })).catch(() => undefined)
  }

  succeed(value: unknown, type: XType): Promise<void> {
    return finishTask(this.svc, this.ref, { status: 'success', resultXml: taskResultXml(value, type), type: type.kind === 'ref' ? type.cls : '' })
  }

  fail(err: unknown): Promise<void> {
    const e = err instanceof XapiError ? err : new XapiError('INTERNAL_ERROR', [err instanceof Error ? err.message : String(err)])
    return finishTask(this.svc, this.ref, { status: 'failure', errorInfo: e.description })
  }
}

/**
 * The request body as a stream that ends when the client is done: at the end of the announced
 * length, or when it closes the connection (XO's 1 PiB uploads end that way). Node drops what a
 * paused request still buffers when the connection resets, so that is drained first.
 * `discard` ends the body early and drops whatever else the client sends.
 */
export function bodyUntilClose(req: IncomingMessage, onData: (bytes: number) => void): { body: PassThrough; firstOrEnd: Promise<number>; discard: () => void } {
  const body = new PassThrough({ highWaterMark: 1 << 20 })
  let received = 0
  let settle!: (n: number) => void
  const firstOrEnd = new Promise<number>((r) => (settle = r))
  let ended = false
  const end = () => {
    if (ended) return
    ended = true
    settle(received)
    body.end()
  }
  // The reader may stop early (a bad upload) and destroy the body: the rest is dropped.
  body.on('error', () => undefined)
  req.on('data', (chunk: Buffer) => {
    if (ended || body.destroyed) return
    received += chunk.length
    onData(received)
    settle(received)
    if (!body.write(chunk)) req.pause()
  })
  body.on('drain', () => req.resume())
  req.on('end', end)
  req.on('aborted', () => {
    while (req.read() !== null);
    end()
  })
  req.on('error', () => undefined)
  req.on('close', end)
  // Whatever follows the archive is read and dropped.
  const discard = () => {
    end()
    req.resume()
  }
  return { body, firstOrEnd, discard }
}

/** XO's probe (an empty PUT without task_id, to find redirects before it gives its stream): answered 200, nothing done. */
export function answeredProbe(req: IncomingMessage, res: ServerResponse, expected: number | null): boolean {
  if (queryOf(req).get('task_id') || expected !== 0) return false
  res.writeHead(200, { 'content-length': 0, connection: 'close' })
  res.end()
  return true
}

/** The HTTP status an error gets when it is known before the 200 went out (pure). */
export function statusFor(code: string): number {
  if (code.startsWith('SESSION_')) return 401
  if (code === 'HANDLE_INVALID' || code === 'UUID_INVALID') return 404
  if (code === 'NOT_IMPLEMENTED') return 501
  if (code === 'IMPORT_ERROR_CANNOT_HANDLE_CHUNKED') return 403
  if (['VDI_TOO_SMALL', 'VDI_TOO_LARGE', 'OPERATION_NOT_ALLOWED', 'SR_OPERATION_NOT_SUPPORTED', 'DEFAULT_SR_NOT_FOUND'].includes(code)) return 400
  if (['VDI_IN_USE', 'VM_BAD_POWER_STATE', 'OTHER_OPERATION_IN_PROGRESS', 'OPERATION_BLOCKED'].includes(code)) return 409
  return 500
}

/** Responses whose status line went out on the socket itself (streamingAnswer). */
const answeredOnSocket = new WeakSet<ServerResponse>()

/**
 * Starts an answer as xapi's streaming export handlers do, `HTTP/1.0 200 OK`, no length, the
 * body ended by closing the connection. Node's own status line is always HTTP/1.1, and an
 * HTTP/1.1 answer framed by neither a length nor chunks makes clients (XO's undici) fail, so the
 * head is written on the socket, which the body then goes to.
 */
export function streamingAnswer(res: ServerResponse, headers: Record<string, string>): Socket {
  const socket = res.socket
  if (!socket) throw new XapiError('INTERNAL_ERROR', ['the client connection is gone'])
  answeredOnSocket.add(res)
  const lines = Object.entries({ connection: 'close', 'cache-control': 'no-cache, no-store', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`)
  socket.write(`HTTP/1.0 200 OK\r\n${lines.join('')}\r\n`)
  return socket
}

/** An error answer before any data moved: a small text body, then the connection closes. */
export function refuse(req: IncomingMessage, res: ServerResponse, err: XapiError): void {
  if (answeredOnSocket.has(res)) return void res.socket?.destroy()
  if (res.headersSent) return void res.destroy()
  const body = `${err.description.join(' ')}\n`
  res.writeHead(statusFor(err.code), { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), connection: 'close' })
  res.end(body)
  res.once('finish', () => lingerThenClose(req))
}

const LINGER_MS = 2000
const LINGER_BYTES = 64 << 20

/**
 * Reads and drops what the client still sends, for a moment, then closes. Closing with unread
 * data resets the connection, and the client can then lose the answer it was sent.
 */
function lingerThenClose(req: IncomingMessage): void {
  if (req.complete) return void req.destroy()
  let dropped = 0
  const close = () => {
    clearTimeout(timer)
    req.destroy()
  }
  const timer = setTimeout(close, LINGER_MS)
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length
    if (dropped > LINGER_BYTES) close()
  })
  req.once('end', close)
  req.once('error', close)
  req.resume()
}

/** Fails the client's pending task_id task (if any) when we cannot even adopt it (bad session, bad query). */
async function failGivenTask(svc: Services, req: IncomingMessage, err: XapiError): Promise<void> {
  const given = queryOf(req).get('task_id')
  if (given && svc.db.tryRecord('task', given)?.status === 'pending') await finishTask(svc, given, { status: 'failure', errorInfo: err.description }).catch(() => undefined)
}

/** Progress updates at most four times a second. */
export function throttledProgress(task: HandlerTask): (fraction: number) => void {
  let last = 0
  return (fraction) => {
    const now = Date.now()
    if (now - last < 250) return
    last = now
    void task.progress(fraction)
  }
}

/**
 * The checks of a bulk request made before anything is answered: a failure (a XenAPI error)
 * fails the client's own task_id task and is refused; undefined then.
 */
export async function precheck<T>(svc: Services, req: IncomingMessage, res: ServerResponse, check: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await check()
  } catch (err) {
    const e = asXapiError(err)
    await failGivenTask(svc, req, e)
    refuse(req, res, e)
    return undefined
  }
}

/** The request's session; a bad one fails the client's task (as an authentication failure) and is refused. */
export async function authenticated(svc: Services, req: IncomingMessage, res: ServerResponse): Promise<{ ref: string; session: Readonly<Record<string, unknown>> } | undefined> {
  try {
    return await httpSession(svc, req, res)
  } catch (err) {
    const e = asXapiError(err)
    await failGivenTask(svc, req, new XapiError('SESSION_AUTHENTICATION_FAILED', [e.code === 'SESSION_INVALID' ? 'session invalid' : e.message]))
    refuse(req, res, e)
    return undefined
  }
}

/** The request's task (the client's task_id, or a new one named `label`); undefined when refused. */
export async function adoptTask(svc: Services, req: IncomingMessage, res: ServerResponse, label: string): Promise<HandlerTask | undefined> {
  try {
    const task = await HandlerTask.adopt(svc, req, label)
    // A cancelled transfer drops its connection: the stream from or to the client (and to the
    // agent of the host holding the data) fails, and the handler's failure ends the task cancelled.
    task.signal.addEventListener('abort', () => {
      req.destroy()
      res.destroy()
    }, { once: true })
    return task
  } catch (err) {
    refuse(req, res, asXapiError(err))
    return undefined
  }
}

/** Whether the client of `target` (a response or its socket) went away. */
function isGone(target: Writable): boolean {
  if (target.destroyed) return true
  if (!('socket' in target)) return false
  const socket = (target as ServerResponse).socket
  return !socket || socket.destroyed
}

/**
 * Relays what an agent stream sends to the client, with backpressure, calling `onSent` with the
 * bytes sent so far. Rejects with VDI_IO_ERROR (after destroying both ends) when the stream stops
 * short or the client goes away; `length`, when known, only shapes the message.
 */
export function relayToClient(source: AgentStream, res: Writable, onSent: (sent: number) => void, length?: number): Promise<void> {
  let sent = 0
  const of = length === undefined ? '' : ` of ${length}`
  return new Promise<void>((resolve, reject) => {
    let settled = false
    const settle = (err?: Error) => {
      if (settled) return
      settled = true
      if (!err) return resolve()
      source.destroy()
      res.destroy()
      reject(new XapiError('VDI_IO_ERROR', [err.message]))
    }
    const count = (bytes: number) => {
      sent += bytes
      onSent(sent)
    }
    if (source.forward) {
      // In process: the handler writes straight into the response.
      source.forward(res, count)
      source.on('finish', () => res.end())
      source.on('close', () => source.complete || settle(new Error(`the export stopped after ${sent}${of} bytes`)))
    } else {
      source.on('data', (chunk: Buffer) => {
        count(chunk.length)
        if (!res.write(chunk)) source.pause()
      })
      res.on('drain', () => source.resume())
      source.on('end', () => (source.complete ? res.end() : settle(new Error(`the export stopped after ${sent}${of} bytes`))))
    }
    source.on('aborted', () => settle(new Error(`the export stopped after ${sent}${of} bytes`)))
    // A forwarded stream fails when its writes into the response do: the client went away.
    source.on('error', (err) => settle(isGone(res) ? clientGone() : new Error(`the export stopped after ${sent}${of} bytes: ${err.message}`)))
    const clientGone = () => new Error(`the client closed the connection after ${sent}${of} bytes`)
    res.on('finish', () => settle())
    res.on('close', () => settle(res.writableFinished ? undefined : clientGone()))
  })
}
