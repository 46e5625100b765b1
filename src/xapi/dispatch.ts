// From a method name and wire parameters to a XenAPI result, in xapi's order of checks:
// name resolution, arity, unmarshalling, session, lifecycle, then the call (Async ones as tasks).
import { classes, type Message, type XType } from '../idl/index.js'
import { asXapiError, XapiError } from '../idl/errors.js'
import { handlers, type CallContext, type Client, type Handler, type Services } from './context.js'
import { genericHandler, readsOnly } from './generic.js'
import { isLocalSession, validSession } from './session.js'
import { createTask, finishTask, forwardingServices, trackTask } from './task.js'
import { toXml, unmarshal } from '../rpc/marshal.js'
import type { Wire } from '../rpc/wire.js'

export type CallResult =
  | { ok: true; value: unknown; type: XType; bare?: boolean }
  | { ok: false; error: string[] }
  /** An XML-RPC fault: what xapi answers for Async calls of messages without an Async form. */
  | { ok: false; fault: string }

const TASK_REF: XType = { kind: 'ref', cls: 'task' }

/** What a pool member answers itself (xapi's emergency calls, datamodel.ml); every other call is the master's. */
const MEMBER_CALLS = new Set([
  'pool.emergency_reset_master', 'pool.emergency_transition_to_master', 'session.slave_local_login_with_password', 'session.local_logout',
  'host.local_management_reconfigure', 'host.management_disable', 'host.get_system_status_capabilities', 'host.shutdown_agent', 'host.emergency_ha_disable',
  'host.emergency_reset_server_certificate', 'host.emergency_disable_tls_verification', 'host.emergency_reenable_tls_verification', 'host.emergency_clear_mandatory_guidance',
])

/**
 * Why this host does not answer a call itself: a member sends clients to the master
 * (HOST_IS_SLAVE with its address, from memory, so it answers even when the pool database does
 * not); a host that has lost the pool database and knows no master says so.
 */
function notMaster(svc: Services): XapiError | undefined {
  if (!svc.pool || svc.pool.isMaster()) return undefined
  const master = svc.pool.masterRef()
  const address = master && master !== svc.hostRef ? svc.db.tryRecord('host', master)?.address : undefined
  return svc.pool.inContact() && address ? new XapiError('HOST_IS_SLAVE', [address]) : new XapiError('HOST_IN_EMERGENCY_MODE')
}
const STRING_SET: XType = { kind: 'set', of: { kind: 'string' } }

/** Every synchronous wire name, as system.listMethods lists them. */
export const METHOD_NAMES: string[] = [...classes.values()].flatMap((c) => [...c.messages.keys()].map((m) => `${c.name}.${m}`))

const resolved = new Map<string, Message | null>()

/** Finds the message for "Class.message" or "Class_message" (class names may hold underscores). */
export function resolveMessage(name: string): Message | undefined {
  const hit = resolved.get(name)
  if (hit !== undefined) return hit ?? undefined
  let found: Message | undefined
  const dot = name.indexOf('.')
  if (dot > 0) found = classes.get(name.slice(0, dot))?.messages.get(name.slice(dot + 1))
  else
    for (let i = name.indexOf('_'); i > 0 && !found; i = name.indexOf('_', i + 1))
      found = classes.get(name.slice(0, i))?.messages.get(name.slice(i + 1))
  if (resolved.size < 10_000) resolved.set(name, found ?? null)
  return found
}

const handlerCache = new Map<Message, Handler | null>()

function handlerFor(msg: Message): Handler | undefined {
  let h = handlerCache.get(msg)
  if (h === undefined) {
    h = handlers.get(`${msg.cls}.${msg.name}`) ?? genericHandler(msg) ?? null
    handlerCache.set(msg, h)
  }
  return h ?? undefined
}

/** The result of a finished Async call as the task's `result` field holds it: an XML-RPC value. */
export function taskResultXml(value: unknown, type: XType): string {
  return type.kind === 'void' ? '' : toXml(value, type)
}

export class Dispatcher {
  constructor(
    private readonly svc: Services,
    private readonly client?: Client,
  ) {}

  /** The same dispatcher for the calls of one client (login slowing and logs need its address). */
  forClient(client: Client): Dispatcher {
    return new Dispatcher(this.svc, client)
  }

  async call(wireName: string, params: Wire[]): Promise<CallResult> {
    try {
      return await this.dispatch(wireName, params)
    } catch (err) {
      const e = asXapiError(err)
      if (e.code === 'INTERNAL_ERROR' && !(err instanceof XapiError)) console.error(`${wireName}:`, err)
      return { ok: false, error: e.description }
    }
  }

  private async dispatch(wireName: string, params: Wire[]): Promise<CallResult> {
    if (wireName === 'system.listMethods') return { ok: true, value: METHOD_NAMES, type: STRING_SET, bare: true }
    if (wireName.startsWith('system.isAlive')) return { ok: true, value: params[0]?.t === 'string' ? params[0].v : '', type: { kind: 'string' } }
    const isAsync = wireName.startsWith('Async.')
    const callName = isAsync ? wireName.slice('Async.'.length) : wireName
    const msg = resolveMessage(callName)
    if (!msg) {
      const first = params[0]
      if (first) await validSession(this.svc, first.t === 'string' ? first.v : '')
      throw new XapiError('MESSAGE_METHOD_UNKNOWN', [wireName])
    }
    const declared = msg.takesSession ? msg.params.slice(1) : msg.params
    const required = declared.filter((p) => !('default' in p)).length
    const received = params.length - (msg.takesSession ? 1 : 0)
    const hasDefaults = required < declared.length
    if (received < required || (!hasDefaults && received > required)) {
      throw new XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', [callName, required, Math.max(0, received)])
    }
    const args = declared.map((p, i) => {
      const w = params[i + (msg.takesSession ? 1 : 0)]
      return w === undefined ? structuredClone(p.default) : unmarshal(w, p.type, `parameter ${p.name} of ${msg.cls}.${msg.name}`)
    })
    const member = MEMBER_CALLS.has(callName) ? undefined : notMaster(this.svc)
    if (member && !msg.takesSession) throw member
    let sessionRef = ''
    let session: Readonly<Record<string, unknown>> = {}
    if (msg.takesSession) {
      const s = params[0]!
      sessionRef = s.t === 'string' ? s.v : ''
      session = await validSession(this.svc, sessionRef)
      // A session of this host alone reads this host's replica of the pool database, also while
      // the database has no quorum (a member whose master died); anything else is the master's.
      if (member && !(readsOnly(msg) && isLocalSession(this.svc, sessionRef))) throw member
    }
    if (msg.state === 'removed') throw new XapiError('MESSAGE_REMOVED')
    if (isAsync && !msg.hasAsync) return { ok: false, fault: `No async mode for this operation (rpc: ${wireName})` }
    const handler = handlerFor(msg)
    if (!handler) throw new XapiError('NOT_IMPLEMENTED', [`${msg.cls}.${msg.name}`])
    const ctx: CallContext = { svc: this.svc, sessionRef, session, wireName, client: this.client }
    if (!isAsync) return { ok: true, value: await handler(ctx, args), type: msg.result }

    const taskRef = await createTask(this.svc, wireName)
    const signal = trackTask(taskRef)
    void (async () => {
      try {
        const value = await handler({ ...ctx, svc: forwardingServices(this.svc, taskRef), taskRef, signal }, args)
        const type = msg.result.kind === 'ref' ? msg.result.cls : ''
        await finishTask(this.svc, taskRef, { status: 'success', resultXml: taskResultXml(value, msg.result), type })
      } catch (err) {
        await finishTask(this.svc, taskRef, { status: 'failure', errorInfo: asXapiError(err).description }).catch(() => undefined)
      }
    })()
    return { ok: true, value: taskRef, type: TASK_REF }
  }
}
