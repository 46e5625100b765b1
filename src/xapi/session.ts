// session.*: login, logout, password changes, and the validity rules every call goes through.
import { randomUUID } from 'node:crypto'
import { buildRecord, NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import { setTimeout as sleep } from 'node:timers/promises'
import { newRef } from '../db/database.js'
import { now, register, type Client, type Services } from './context.js'
import { setPassword, verifyPassword } from './accounts.js'
import { LoginGuard } from './login-guard.js'

type Rec = Readonly<Record<string, unknown>>

const lastActiveMs = (s: Rec) => Date.parse(String(s.last_active).replace(/^(\d{4})(\d{2})(\d{2})T/, '$1-$2-$3T'))

/**
 * Sessions of this host alone (slave_local_login_with_password), kept in memory and never in the
 * pool database: a member logs them in and checks them while the pool database has no quorum.
 */
const localSessions = (svc: Services) => (svc.localSessions ??= new Map())

export function isLocalSession(svc: Services, ref: string): boolean {
  return svc.localSessions?.has(ref) ?? false
}

/** The session record for a ref, refreshing its last_active now and then; SESSION_INVALID otherwise. */
export async function validSession(svc: Services, ref: string): Promise<Rec> {
  const local = svc.localSessions?.get(ref)
  if (local) {
    if (Date.now() - lastActiveMs(local) > svc.settings.sessionIdleMs) {
      svc.localSessions!.delete(ref)
      throw new XapiError('SESSION_INVALID', [ref])
    }
    const fresh = { ...local, last_active: now() }
    svc.localSessions!.set(ref, fresh)
    return fresh
  }
  const session = svc.db.tryRecord('session', ref)
  if (!session) throw new XapiError('SESSION_INVALID', [ref])
  const idle = Date.now() - lastActiveMs(session)
  if (idle > svc.settings.sessionIdleMs) {
    await destroySession(svc, ref)
    throw new XapiError('SESSION_INVALID', [ref])
  }
  if (idle > Math.min(600_000, svc.settings.sessionIdleMs / 10)) {
    await svc.db.transact((tx) => tx.exists('session', ref) && tx.update('session', ref, { last_active: now() })).catch(() => undefined)
  }
  return session
}

export async function destroySession(svc: Services, ref: string): Promise<void> {
  if (svc.localSessions?.delete(ref)) return
  await svc.db.transact((tx) => {
    if (tx.exists('session', ref)) tx.delete('session', ref)
  })
}

/** Sessions of one user beyond the cap, oldest first, are destroyed (xapi keeps 500 per user). */
async function enforceSessionCap(svc: Services, user: string): Promise<void> {
  const mine = [...svc.db.rows('session')]
    .filter((r) => r.stored.auth_user_name === user)
    .sort((a, b) => a.stored.last_active.localeCompare(b.stored.last_active) || a.createRev - b.createRev)
  for (const row of mine.slice(0, Math.max(0, mine.length - svc.settings.maxSessionsPerUser))) await destroySession(svc, row.ref)
}

/** Idle sessions are collected by the housekeeping loop too, not only when next used. */
export async function collectIdleSessions(svc: Services): Promise<void> {
  for (const row of [...svc.db.rows('session')]) {
    if (Date.now() - lastActiveMs(row.stored) > svc.settings.sessionIdleMs) await destroySession(svc, row.ref)
  }
}

/** How often a slowed attempt looks again (a success elsewhere may have given a token back). */
const GUARD_POLL_MS = 250
/** User names longer than this are cut in log lines. */
const LOGGED_NAME_MAX = 64

const clientName = (client: Client | undefined) => (client ? `${client.protocol} ${client.address}` : 'inside the daemon')
const loggedName = (user: string) => JSON.stringify(user.length > LOGGED_NAME_MAX ? `${user.slice(0, LOGGED_NAME_MAX)}…` : user)

/**
 * A password check through the login guard: it waits while the client's address (or the user
 * name, for addresses that failed recently) is slowed, is refused unchecked when it cannot start
 * within the guard's longest wait, and logs each failure with the client and the user name.
 */
async function guardedCheck(svc: Services, what: string, user: string, password: string, client: Client | undefined): Promise<boolean> {
  const guard = (svc.loginGuard ??= new LoginGuard(svc.settings.login))
  const address = client?.address ?? ''
  const deadline = Date.now() + svc.settings.login.maxWaitMs
  let admission = guard.admit(address, user, Date.now())
  while (!admission.go) {
    const left = deadline - Date.now()
    if (left <= 0) {
      console.warn(`${what} refused unchecked: user ${loggedName(user)} from ${clientName(client)} (too many recent failures)`)
      return false
    }
    await sleep(Math.min(admission.retryInMs, GUARD_POLL_MS, left))
    admission = guard.admit(address, user, Date.now())
  }
  let ok = false
  try {
    ok = await verifyPassword(svc.db, user, password)
  } finally {
    guard.settle(admission.ticket, ok, Date.now())
  }
  if (!ok) console.warn(`${what} failed: user ${loggedName(user)} from ${clientName(client)}`)
  return ok
}

export async function login(svc: Services, user: string, password: string, originator: string, client?: Client): Promise<string> {
  if (!(await guardedCheck(svc, 'login', user, password, client))) throw new XapiError('SESSION_AUTHENTICATION_FAILED', [user, 'Authentication failure'])
  return openSession(svc, { user, originator, pool: false, superuser: user === 'root' })
}

/** A session recorded in the pool database, within the user's cap of sessions. */
async function openSession(svc: Services, who: { user: string; originator: string; pool: boolean; superuser: boolean }): Promise<string> {
  const stamp = now()
  const ref = await svc.db.transact((tx) =>
    tx.create('session', {
      this_host: svc.hostRef,
      this_user: NULL_REF,
      last_active: stamp,
      validation_time: stamp,
      pool: who.pool,
      is_local_superuser: who.superuser,
      auth_user_name: who.user,
      originator: who.originator,
    }),
  )
  await enforceSessionCap(svc, who.user)
  return ref
}

/** A new session of the same subject as `session` (host.migrate_receive hands one to the sending pool). */
export const cloneSession = (svc: Services, session: Rec) =>
  openSession(svc, { user: String(session.auth_user_name ?? ''), originator: String(session.originator ?? ''), pool: session.pool === true, superuser: session.is_local_superuser === true })

register('session.login_with_password', (ctx, [user, password, , originator]) => login(ctx.svc, user, password, originator, ctx.client))

/** A session of this host alone, checked against the accounts this host's replica holds: it writes nothing to the pool database. */
export async function localLogin(svc: Services, user: string, password: string, client?: Client): Promise<string> {
  if (!(await guardedCheck(svc, 'local login', user, password, client))) throw new XapiError('SESSION_AUTHENTICATION_FAILED', [user, 'Authentication failure'])
  const stamp = now()
  const ref = newRef()
  const record = buildRecord('session', { uuid: randomUUID(), this_host: svc.hostRef, last_active: stamp, validation_time: stamp, is_local_superuser: user === 'root', auth_user_name: user })
  localSessions(svc).set(ref, record as unknown as Rec)
  return ref
}

register('session.slave_local_login_with_password', (ctx, [user, password]) => localLogin(ctx.svc, user, password, ctx.client))

register('session.logout', async (ctx) => destroySession(ctx.svc, ctx.sessionRef))

register('session.local_logout', async (ctx) => destroySession(ctx.svc, ctx.sessionRef))

register('session.change_password', async (ctx, [oldPassword, newPassword]) => {
  const user = String(ctx.session.auth_user_name)
  if (!(await guardedCheck(ctx.svc, 'password change', user, oldPassword, ctx.client))) throw new XapiError('SESSION_AUTHENTICATION_FAILED', [user, 'Authentication failure'])
  if (newPassword === '') throw new XapiError('CHANGE_PASSWORD_REJECTED', ['the new password is empty'])
  await setPassword(ctx.svc.db, user, newPassword)
  if (user === 'root') await ctx.svc.onRootPasswordChanged?.().catch(() => undefined)
})

register('session.get_all_subject_identifiers', () => [])

register('session.logout_subject_identifier', () => {
  throw new XapiError('AUTH_IS_DISABLED')
})
