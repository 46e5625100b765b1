// Events: event.from (stateless, token = etcd revision), event.inject, and the legacy
// register/next/unregister queue of a session. Everything is answered from the replica.
import { classByAnyCase, classes, getClass } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { EventBatch, EventRecord } from '../idl/events.js'
import { register, type CallContext } from './context.js'
import { validSession } from './session.js'

type Wants = (cls: string, ref: string) => boolean

const MAX_WAIT_MS = 24 * 3600_000

/** The classes that events are reported for, lower-cased for `valid_ref_counts` and `class`. */
const EVENT_CLASSES = [...classes.values()].filter((c) => c.generatesEvents)

export function formatToken(rev: number): string {
  return `${String(rev).padStart(20, '0')},${'0'.padStart(20, '0')}`
}

export function parseToken(token: string): number {
  const m = /^(\d+)(?:,(\d+))?$/.exec(token)
  if (!m) throw new XapiError('EVENT_FROM_TOKEN_PARSE_FAILURE', [token])
  return Number(m[1])
}

/** Subscriptions: class names in any case, "*", or "class/ref". */
export function subscription(entries: string[]): Wants {
  const everything = entries.includes('*')
  const wholeClasses = new Set<string>()
  const objects = new Set<string>()
  for (const entry of entries) {
    if (entry === '*') continue
    const slash = entry.indexOf('/')
    const cls = classByAnyCase(slash < 0 ? entry : entry.slice(0, slash))
    if (entry.trim() === '' || (slash >= 0 && slash === entry.length - 1)) throw new XapiError('EVENT_SUBSCRIPTION_PARSE_FAILURE', [entry])
    if (!cls) continue
    if (slash < 0) wholeClasses.add(cls.name)
    else objects.add(`${cls.name}/${entry.slice(slash + 1)}`)
  }
  return (cls, ref) => getClass(cls).generatesEvents && (everything || wholeClasses.has(cls) || objects.has(`${cls}/${ref}`))
}

function validRefCounts(ctx: CallContext): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const c of EVENT_CLASSES) counts[c.name.toLowerCase()] = ctx.svc.db.replica.count(c.name)
  return counts
}

function timeoutMs(seconds: number): number {
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, MAX_WAIT_MS) : MAX_WAIT_MS
}

/** Waits for a change `wants` selects, or for the caller's session to go away. */
async function waitForChange(ctx: CallContext, wants: Wants, ms: number): Promise<void> {
  const replica = ctx.svc.db.replica
  await replica.waitForChange((cls, ref) => wants(cls, ref) || (cls === 'session' && ref === ctx.sessionRef), ms)
  await validSession(ctx.svc, ctx.sessionRef)
}

register('event.from', async (ctx, [classList, token, timeout]) => {
  const wants = subscription(classList)
  const replica = ctx.svc.db.replica
  if (token === '') {
    const events: EventRecord[] = []
    for (const c of EVENT_CLASSES)
      for (const row of replica.rows(c.name))
        if (wants(c.name, row.ref)) events.push({ id: String(row.eventRev), timestamp: '0.0', class: c.name.toLowerCase(), operation: 'add', ref: row.ref, snapshot: replica.materialize(row) })
    return { events, valid_ref_counts: validRefCounts(ctx), token: formatToken(replica.appliedRev) } satisfies EventBatch
  }
  const since = parseToken(token)
  const deadline = Date.now() + timeoutMs(timeout)
  for (;;) {
    const changes = replica.changesSince(since, wants)
    if (!changes) throw new XapiError('EVENTS_LOST')
    const remaining = deadline - Date.now()
    if (changes.length > 0 || remaining <= 0) {
      const events: EventRecord[] = changes.map(({ row, tomb, cls, ref }) => {
        const head = { timestamp: '0.0', class: cls.toLowerCase(), ref }
        if (!row) return { ...head, id: String(tomb!.deleteRev), operation: 'del' }
        return { ...head, id: String(row.eventRev), operation: row.createRev > since ? 'add' : 'mod', snapshot: replica.materialize(row) }
      })
      return { events, valid_ref_counts: validRefCounts(ctx), token: formatToken(replica.appliedRev) } satisfies EventBatch
    }
    await waitForChange(ctx, wants, remaining)
  }
})

register('event.inject', async (ctx, [clsName, ref]) => {
  const cls = classes.get(clsName)
  if (!cls) throw new XapiError('HANDLE_INVALID', [clsName, ref])
  await ctx.svc.db.transact((tx) => tx.update(cls.name, ref, {}))
  const row = ctx.svc.db.replica.row(cls.name, ref)
  return formatToken((row?.modRev ?? ctx.svc.db.replica.appliedRev) - 1)
})

register('event.get_current_id', (ctx) => ctx.svc.db.replica.appliedRev)

/** The legacy API's per-session queue: what it subscribed to and how far it has read. */
const legacy = new Map<string, { entries: Set<string>; since: number }>()

register('event.register', (ctx, [entries]) => {
  const state = legacy.get(ctx.sessionRef) ?? { entries: new Set<string>(), since: ctx.svc.db.replica.appliedRev }
  subscription(entries)
  for (const e of entries) state.entries.add(e)
  legacy.set(ctx.sessionRef, state)
})

register('event.unregister', (ctx, [entries]) => {
  const state = legacy.get(ctx.sessionRef)
  for (const e of entries) state?.entries.delete(e)
})

register('event.next', async (ctx) => {
  const replica = ctx.svc.db.replica
  for (;;) {
    const state = legacy.get(ctx.sessionRef)
    if (!state) throw new XapiError('SESSION_NOT_REGISTERED', [ctx.sessionRef])
    const wants = subscription([...state.entries])
    const changes = replica.changesSince(state.since, wants)
    if (!changes) {
      legacy.delete(ctx.sessionRef)
      throw new XapiError('EVENTS_LOST')
    }
    if (changes.length > 0) {
      const since = state.since
      state.since = replica.appliedRev
      const timestamp = `${Math.floor(Date.now() / 1000)}.`
      return changes.map(({ row, tomb, cls, ref }): EventRecord => {
        const head = { timestamp, class: cls.toLowerCase(), ref }
        if (!row) return { ...head, id: String(tomb!.deleteRev), operation: 'del', snapshot: tomb!.lastRecord }
        return { ...head, id: String(row.eventRev), operation: row.createRev > since ? 'add' : 'mod', snapshot: replica.materialize(row) }
      })
    }
    await waitForChange(ctx, wants, MAX_WAIT_MS).catch((err: unknown) => {
      legacy.delete(ctx.sessionRef)
      throw err
    })
  }
})
