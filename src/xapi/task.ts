// Tasks: what Async calls and HTTP handlers run under, and what clients watch through events.
import { randomUUID } from 'node:crypto'
import { EPOCH, NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import { now, register, type CallContext, type Services } from './context.js'

export type Outcome = { status: 'success'; resultXml: string; type?: string } | { status: 'failure'; errorInfo: string[] }

/** Cancellation signals of tasks running in this daemon. */
const running = new Map<string, AbortController>()

export async function createTask(svc: Services, label: string, description = '', other: Record<string, string> = {}): Promise<string> {
  return svc.db.transact((tx) =>
    tx.create('task', {
      name_label: label,
      name_description: description,
      status: 'pending',
      progress: 0,
      created: now(),
      finished: EPOCH,
      resident_on: svc.hostRef,
      allowed_operations: ['cancel'],
      other_config: other,
      subtask_of: NULL_REF,
    }),
  )
}

/**
 * Marks a task as running its work on another host, as xapi's set_forwarding_on_task does with
 * resident_on (its forwarded and forwarded_to are internal fields, not in the API: the task and
 * its cancellation stay with this host, which drives the other host's agent). The first host the
 * work went to stays named.
 */
export async function markTaskForwarded(svc: Services, ref: string, host: string): Promise<void> {
  if (host === svc.hostRef) return
  await svc.db.transact((tx) => {
    if (tx.exists('task', ref) && tx.get('task', ref).resident_on === svc.hostRef) tx.update('task', ref, { resident_on: host })
  })
}

/** The services a task's handler runs with: its first call to another host's agent marks the task forwarded there. */
export function forwardingServices(svc: Services, taskRef: string): Services {
  const agentFor = (host: string) => {
    const agent = svc.agentFor(host)
    if (host !== svc.hostRef) void markTaskForwarded(svc, taskRef, host).catch(() => undefined)
    return agent
  }
  return new Proxy(svc, { get: (target, key) => (key === 'agentFor' ? agentFor : Reflect.get(target, key)) })
}

/** Registers a task as running here, so task.cancel can reach it. */
export function trackTask(ref: string): AbortSignal {
  const controller = new AbortController()
  running.set(ref, controller)
  return controller.signal
}

/** Whether task.cancel was called on a task (xapi's is_cancelling: a cancel among its current operations). */
export function cancelRequested(svc: Services, ref: string): boolean {
  return Object.values(svc.db.tryRecord('task', ref)?.current_operations ?? {}).includes('cancel')
}

/**
 * Completes a pending task; a task already finished or destroyed stays as it is. A failure of
 * work whose cancellation was asked for is the cancellation (xapi's TaskHelper.failed): the task
 * ends `cancelled` with TASK_CANCELLED, whatever error the interrupted work raised.
 */
export async function finishTask(svc: Services, ref: string, outcome: Outcome): Promise<void> {
  running.delete(ref)
  const cancelled = outcome.status === 'failure' && (outcome.errorInfo[0] === 'TASK_CANCELLED' || cancelRequested(svc, ref))
  await svc.db.transact((tx) => {
    if (!tx.exists('task', ref) || tx.get('task', ref).status !== 'pending') return
    tx.update('task', ref, {
      status: cancelled ? 'cancelled' : outcome.status,
      progress: 1,
      finished: now(),
      allowed_operations: [],
      current_operations: {},
      ...(outcome.status === 'success' ? { result: outcome.resultXml, type: outcome.type ?? '' } : { error_info: cancelled ? ['TASK_CANCELLED', ref] : outcome.errorInfo }),
    })
  })
}

const lastProgress = new Map<string, number>()

/** Reports progress (0..1) of the caller's task, at most a few times a second. */
export async function reportProgress(ctx: CallContext, progress: number): Promise<void> {
  const ref = ctx.taskRef
  if (!ref) return
  const last = lastProgress.get(ref) ?? 0
  if (Date.now() - last < 250 && progress < 1) return
  lastProgress.set(ref, Date.now())
  await ctx.svc.db.transact((tx) => tx.exists('task', ref) && tx.update('task', ref, { progress })).catch(() => undefined)
}

/**
 * As xapi's Task.cancel: the cancel is noted among the task's current operations and its work is
 * interrupted (an agent call or stream on another host is dropped, which stops it there); the
 * task ends `cancelled` once that work gives up, or `success` if it was already past the point
 * of no return. A task nothing here runs (task.create's) keeps the note for its owner.
 */
async function cancelTask(ctx: CallContext, ref: string): Promise<void> {
  await ctx.svc.db.transact((tx) => {
    const task = tx.get('task', ref)
    if (task.status !== 'pending') throw new XapiError('OPERATION_NOT_ALLOWED', [`task ${ref} is ${task.status}, not pending`])
    if (!task.allowed_operations.includes('cancel')) throw new XapiError('OPERATION_NOT_ALLOWED', [`task ${ref} cannot be cancelled`])
    tx.update('task', ref, { current_operations: { ...task.current_operations, [ctx.taskRef ?? `OpaqueRef:${randomUUID()}`]: 'cancel' } })
  })
  running.get(ref)?.abort()
}

register('task.create', (ctx, [label, description]) => createTask(ctx.svc, label, description))

register('task.cancel', (ctx, [ref]) => cancelTask(ctx, ref))

register('task.destroy', async (ctx, [ref]) => {
  await ctx.svc.db.transact((tx) => tx.delete('task', ref))
  running.get(ref)?.abort()
  running.delete(ref)
  lastProgress.delete(ref)
})

register('task.set_status', (ctx, [ref, status]) =>
  ctx.svc.db.transact((tx) => {
    tx.get('task', ref)
    tx.update('task', ref, { status, ...(status === 'pending' ? {} : { finished: now() }) })
  }),
)

for (const [message, field] of [
  ['set_progress', 'progress'],
  ['set_result', 'result'],
  ['set_error_info', 'error_info'],
] as const) {
  register(`task.${message}`, (ctx, [ref, value]) => ctx.svc.db.transact((tx) => tx.update('task', ref, { [field]: value })))
}

const datetimeMs = (d: unknown) => Date.parse(String(d).replace(/^(\d{4})(\d{2})(\d{2})T/, '$1-$2-$3T'))

/** xapi's task GC: finished tasks expire, hung pending ones are failed, finished ones are capped. */
export async function collectTasks(svc: Services): Promise<void> {
  const t = Date.now()
  const rows = [...svc.db.rows('task')]
  const doomed = new Set<string>()
  for (const row of rows) {
    const s = row.stored
    if (s.status === 'pending') {
      if (t - datetimeMs(s.created) > svc.settings.pendingTaskMs && !running.has(row.ref)) doomed.add(row.ref)
    } else if (t - datetimeMs(s.finished) > svc.settings.taskKeepMs) doomed.add(row.ref)
  }
  const finished = rows
    .filter((r) => r.stored.status !== 'pending' && !doomed.has(r.ref))
    .sort((a, b) => a.stored.finished.localeCompare(b.stored.finished) || a.modRev - b.modRev)
  for (const row of finished.slice(0, Math.max(0, finished.length - svc.settings.maxFinishedTasks))) doomed.add(row.ref)
  for (const ref of doomed) await svc.db.transact((tx) => tx.exists('task', ref) && tx.delete('task', ref)).catch(() => undefined)
}
