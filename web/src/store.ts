// The client-side state: the session, every object of the subscribed classes kept live by one
// `event.from` long-poll loop, the tasks this page started, notices and the modal dialog.
import { computed, reactive, shallowReactive } from 'vue'
import { NULL_REF, refsOfResult, rpc, XapiError } from './api'
import { goToMaster } from './master'

export type Rec = Readonly<Record<string, any>> & { readonly $ref: string }

/** What the UI shows; `event.from` is subscribed to exactly these. */
const CLASSES = ['pool', 'host', 'host_metrics', 'VM', 'VM_metrics', 'VM_guest_metrics', 'VBD', 'VDI', 'VIF', 'SR', 'PBD', 'network', 'console', 'task'] as const
type Cls = Lowercase<(typeof CLASSES)[number]>
const SUBSCRIBED = CLASSES.map((c) => c.toLowerCase())
const EVENT_TIMEOUT = 30 // seconds a quiet event.from waits before it returns empty

/** Records by lower-case class, then ref. Records are replaced whole on each event (never mutated). */
export const objects = Object.fromEntries(CLASSES.map((c) => [c.toLowerCase(), shallowReactive<Record<string, Rec>>({})])) as Record<Cls, Record<string, Rec>>

export interface Notice {
  id: number
  kind: 'error' | 'info'
  text: string
}

export interface DialogField {
  key: string
  label: string
  type?: 'text' | 'number' | 'select' | 'password'
  value: string
  options?: { value: string; label: string }[]
}

export interface Dialog {
  title: string
  message?: string
  fields: DialogField[]
  confirm: string
  danger?: boolean
  resolve(values: Record<string, string> | null): void
}

export const state = reactive({
  session: '',
  user: '',
  /** The first full load has arrived. */
  loaded: false,
  /** The event loop reached the server on its last try. */
  online: true,
  loginMessage: '',
  /** The pool master's address, once a member answered HOST_IS_SLAVE: the browser is on its way there. */
  leavingFor: '',
  notices: [] as Notice[],
  /** Tasks started from this page, newest first. */
  myTasks: [] as string[],
  dialog: null as Dialog | null,
})

// ---- derived lists ----
const values = (cls: Cls) => Object.values(objects[cls])
const byName = (a: Rec, b: Rec) => String(a.name_label).localeCompare(String(b.name_label))
export const pool = computed(() => values('pool')[0])
export const hosts = computed(() => values('host').sort(byName))
export const vms = computed(() => values('vm').filter((v) => !v.is_a_template && !v.is_a_snapshot && !v.is_control_domain).sort(byName))
export const master = computed(() => get('host', pool.value?.master))
/** Whether the pool hears from the host (its host_metrics.live). */
export const isLive = (host: Rec) => get('host_metrics', host.metrics)?.live === true
/** A host's memory: total and used, in bytes (none before its metrics arrive). */
export function hostMemory(host: Rec): { total: number; used: number } | undefined {
  const m = get('host_metrics', host.metrics)
  return m && { total: Number(m.memory_total), used: Number(m.memory_total) - Number(m.memory_free) }
}
export const residentVms = (host: Rec) => vms.value.filter((v) => v.resident_on === host.$ref)
export const templates = computed(() => values('vm').filter((v) => v.is_a_template && !v.is_a_snapshot).sort(byName))
export const srs = computed(() => values('sr').sort(byName))
export const networks = computed(() => values('network').sort(byName))
export const tasks = computed(() => values('task').sort((a, b) => String(b.created).localeCompare(String(a.created))))
export const runningTasks = computed(() => tasks.value.filter((t) => t.status === 'pending'))

export const get = (cls: Cls, ref: string | undefined): Rec | undefined => (ref && ref !== NULL_REF ? objects[cls][ref] : undefined)
export const byUuid = (cls: Cls, uuid: string): Rec | undefined => values(cls).find((r) => r.uuid === uuid)

// ---- session and the event loop ----
let generation = 0
let abort = new AbortController()
const STORAGE_KEY = 'flotilla-session'

export async function login(user: string, password: string): Promise<void> {
  const session = await rpc<string>('session.login_with_password', [user, password, '1.0', 'Flotilla web UI']).catch((err) => {
    if (err instanceof XapiError && err.code === 'HOST_IS_SLAVE' && err.params[0]) leaveFor(err.params[0])
    throw err
  })
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ session, user }))
  begin(session, user)
}

/** Resumes a session kept from before a reload, if any; the event loop finds out whether it is still valid. */
export function resume(): boolean {
  try {
    const { session, user } = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null') ?? {}
    if (typeof session === 'string' && session) return begin(session, String(user ?? 'root')), true
  } catch {
    /* nothing kept */
  }
  return false
}

export async function logout(): Promise<void> {
  const session = state.session
  end('')
  await rpc('session.logout', [session]).catch(() => undefined)
}

function begin(session: string, user: string): void {
  Object.assign(state, { session, user, loaded: false, online: true, loginMessage: '' })
  abort = new AbortController()
  void eventLoop(++generation, abort.signal)
}

/** A member answered HOST_IS_SLAVE [master]: the UI lives on the master. */
function leaveFor(address: string): void {
  state.leavingFor = address
  goToMaster(address)
}

function end(message: string): void {
  generation++
  abort.abort()
  sessionStorage.removeItem(STORAGE_KEY)
  for (const map of Object.values(objects)) for (const ref of Object.keys(map)) delete map[ref]
  for (const w of waiters.values()) w.reject(new XapiError('SESSION_INVALID', [state.session]))
  waiters.clear()
  Object.assign(state, { session: '', loaded: false, loginMessage: message, myTasks: [] })
}

interface XapiEvent {
  class: Cls
  operation: 'add' | 'mod' | 'del'
  ref: string
  snapshot?: Record<string, unknown>
}

/** One long-poll at a time: a full dump (token "") first, then the changes since the last token. */
async function eventLoop(gen: number, signal: AbortSignal): Promise<void> {
  let token = ''
  let failures = 0
  while (gen === generation) {
    try {
      const batch = await rpc<{ events: XapiEvent[]; token: string }>('event.from', [state.session, SUBSCRIBED, token, EVENT_TIMEOUT], signal)
      if (gen !== generation) return
      if (token === '') for (const map of Object.values(objects)) for (const ref of Object.keys(map)) delete map[ref]
      apply(batch.events)
      token = batch.token
      failures = 0
      state.loaded = true
      state.online = true
    } catch (err) {
      if (gen !== generation || signal.aborted) return
      const code = (err as XapiError).code
      if (code === 'SESSION_INVALID') return end('Your session has ended; please log in again.')
      // This host became a member (another host is master now): the pool is managed there.
      if (code === 'HOST_IS_SLAVE' && (err as XapiError).params[0]) return end(''), leaveFor((err as XapiError).params[0]!)
      if (code === 'EVENTS_LOST' || code === 'EVENT_FROM_TOKEN_PARSE_FAILURE') {
        token = '' // resynchronise with a full dump
        continue
      }
      state.online = false
      await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** failures++)))
    }
  }
}

function apply(events: XapiEvent[]): void {
  for (const e of events) {
    const map = objects[e.class]
    if (!map) continue
    if (e.operation === 'del') {
      delete map[e.ref]
      if (e.class === 'task') settle(e.ref, undefined)
    } else if (e.snapshot) {
      const rec = Object.freeze({ ...e.snapshot, $ref: e.ref }) as Rec
      map[e.ref] = rec
      if (e.class === 'task' && rec.status !== 'pending') settle(e.ref, rec)
    }
  }
}

// ---- calls and tasks ----
/** A synchronous call with this session. */
export const call = <T = unknown>(method: string, ...params: unknown[]): Promise<T> => rpc<T>(method, [state.session, ...params])

const waiters = new Map<string, { resolve(rec: Rec): void; reject(err: Error): void }>()

function settle(ref: string, rec: Rec | undefined): void {
  const w = waiters.get(ref)
  if (!w) return
  waiters.delete(ref)
  if (!rec) return w.reject(new Error('The task was destroyed before it completed.'))
  if (rec.status === 'success') return w.resolve(rec)
  const [code, ...params] = (rec.error_info as string[]).length ? (rec.error_info as string[]) : ['TASK_CANCELLED', ref]
  w.reject(new XapiError(code!, params))
}

/** Waits (through the event loop, no polling) until a task is no longer pending. */
export function waitTask(ref: string): Promise<Rec> {
  return new Promise((resolve, reject) => {
    waiters.set(ref, { resolve, reject })
    const rec = objects.task[ref]
    if (rec && rec.status !== 'pending') settle(ref, rec)
  })
}

/** An `Async.` call watched to its end: the refs in its result. */
export async function act(method: string, ...params: unknown[]): Promise<string[]> {
  const task = await call<string>(`Async.${method}`, ...params)
  state.myTasks.unshift(task)
  return refsOfResult(String((await waitTask(task)).result ?? ''))
}

/** Runs a user action; a failure becomes an error notice (in words, with its XenAPI code). */
export async function run<T>(what: string, action: () => Promise<T>): Promise<T | undefined> {
  try {
    return await action()
  } catch (err) {
    notify('error', `${what}: ${(err as Error).message}`)
    return undefined
  }
}

let noticeId = 0
export function notify(kind: Notice['kind'], text: string): void {
  const id = ++noticeId
  state.notices.push({ id, kind, text })
  setTimeout(() => dismiss(id), kind === 'error' ? 20_000 : 5_000)
}
export const dismiss = (id: number) => void state.notices.splice(0, state.notices.length, ...state.notices.filter((n) => n.id !== id))

/** Opens the modal dialog; resolves with the field values, or null if cancelled. */
export function ask(opts: Omit<Dialog, 'resolve' | 'fields' | 'confirm'> & { fields?: DialogField[]; confirm?: string }): Promise<Record<string, string> | null> {
  return new Promise((resolve) => {
    state.dialog = { fields: [], confirm: 'OK', ...opts, resolve: (v) => ((state.dialog = null), resolve(v)) }
  })
}

/** A URL for an HTTP handler of this host, with the session. */
export const handlerUrl = (path: string, query: Record<string, string>) => `${path}?${new URLSearchParams({ ...query, session_id: state.session })}`

/** PUTs a file to an HTTP handler (/import, /import_raw_vdi) with a task of its own, watched to its end: the refs in its result. */
export async function upload(path: string, query: Record<string, string>, file: File, label: string): Promise<string[]> {
  const task = await call<string>('task.create', label, file.name)
  state.myTasks.unshift(task)
  const done = waitTask(task)
  let res: Response
  try {
    res = await fetch(handlerUrl(path, { ...query, task_id: task }), { method: 'PUT', body: file })
  } catch (err) {
    void call('task.destroy', task).catch(() => undefined)
    throw new XapiError('NETWORK_ERROR', [String((err as Error).message)])
  }
  if (!res.ok) {
    // The handler may have failed the task with a XenAPI error; prefer that.
    const rec = objects.task[task]
    void call('task.destroy', task).catch(() => undefined)
    if (rec?.status === 'failure') throw new XapiError(rec.error_info[0], rec.error_info.slice(1))
    throw new XapiError('HTTP_ERROR', [`${res.status} ${res.statusText} on ${path}`, (await res.text()).trim().slice(0, 200)])
  }
  return refsOfResult(String((await done).result ?? ''))
}
