// What every bulk HTTP handler needs: its query, the caller's session (from the query or a
// cookie), and the task it reports through (adopted from task_id, or its own).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { PassThrough } from 'node:stream'
import { XapiError } from '../idl/errors.js'
import type { Services } from '../xapi/context.js'
import { validSession } from '../xapi/session.js'
import { createTask, finishTask } from '../xapi/task.js'
import { taskResultXml } from '../rpc/dispatch.js'
import type { XType } from '../idl/index.js'

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

/** The session a handler runs as: `session_id` by query or cookie; SESSION_INVALID otherwise. */
export async function httpSession(svc: Services, req: IncomingMessage): Promise<{ ref: string; session: Readonly<Record<string, unknown>> }> {
  const ref = queryOf(req).get('session_id') ?? cookie(req, 'session_id') ?? ''
  return { ref, session: await validSession(svc, ref) }
}

/** A handler's task: the client's own (task_id, which must be pending) or one made for the call. */
export class HandlerTask {
  private constructor(
    private readonly svc: Services,
    readonly ref: string,
  ) {}

  static async adopt(svc: Services, req: IncomingMessage, label: string): Promise<HandlerTask> {
    const given = queryOf(req).get('task_id')
    if (given) {
      const task = svc.db.tryRecord('task', given)
      if (!task) throw new XapiError('HANDLE_INVALID', ['task', given])
      if (task.status !== 'pending') throw new XapiError('OPERATION_NOT_ALLOWED', [`task ${given} is ${String(task.status)}`])
      return new HandlerTask(svc, given)
    }
    return new HandlerTask(svc, await createTask(svc, label))
  }

  get cancelled(): boolean {
    return this.svc.db.tryRecord('task', this.ref)?.status === 'cancelled'
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
