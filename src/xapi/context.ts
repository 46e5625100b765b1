// What a message implementation sees: the services of this daemon and the caller's session.
import { formatDatetime } from '../idl/index.js'
import type { ArgsOf } from '../idl/records.js'
import type { Member } from '../db/cluster.js'
import type { Database } from '../db/database.js'
import type { Agent } from '../agent/contract.js'
import { XapiError } from '../idl/errors.js'
import { DEFAULT_LOGIN_POLICY, type LoginGuard, type LoginPolicy } from './login-guard.js'

export interface Settings {
  /** Sessions idle longer than this are destroyed (xapi: 24 h). */
  sessionIdleMs: number
  /** Past this many sessions of one user name, the oldest is destroyed (xapi: 500). */
  maxSessionsPerUser: number
  /** Finished tasks older than this are collected (xapi: 65 min). */
  taskKeepMs: number
  /** Pending tasks older than this are failed and collected (xapi: 24 h). */
  pendingTaskMs: number
  /** At most this many finished tasks are kept (xapi: 200). */
  maxFinishedTasks: number
  /** How password guessing is slowed (xapi only delays each failure by 5 s). */
  login: LoginPolicy
}

export const DEFAULT_SETTINGS: Settings = {
  sessionIdleMs: 24 * 3600_000,
  maxSessionsPerUser: 500,
  taskKeepMs: 65 * 60_000,
  pendingTaskMs: 24 * 3600_000,
  maxFinishedTasks: 200,
  login: DEFAULT_LOGIN_POLICY,
}

/** This host's place in its pool: whether it is master now, and who is. */
export interface PoolRole {
  isMaster(): boolean
  /** Whether this host still reaches the pool database (its lease is renewed). */
  inContact(): boolean
  /** The master as the pool database says, possibly stale on a host cut off from it. */
  masterRef(): string | undefined
}

/** What the pool CA and the pool database's members are, as a master hands them to a joiner. */
export interface PoolSecret {
  caCert: string
  caKey: string
  /** Client URLs of the pool database's voting members. */
  etcdUrls: string[]
}

/** The daemon's part in pool membership changes: what only the daemon can do (its etcd member, its certificates, its restart). */
export interface PoolMembership {
  /** The pool secret of this host's pool (asked by a joiner through the master). */
  secret(): Promise<PoolSecret>
  /** Moves this host into the pool whose secret is given, bringing `records` (key → JSON) into its database; then restarts the host on it. */
  join(secret: PoolSecret, records: (pool: PoolView) => Map<string, string>): Promise<void>
  /** Makes this host a fresh standalone host again (eject); then restarts it. */
  leave(): Promise<void>
  /** Gives up the master role (designate_new_master). */
  resign(successor: string): Promise<void>
  /** The client URLs of the pool database's voters. */
  voters(): Promise<string[]>
  /** Whether this host's member is among `members` of the pool database. */
  isMember(members: Member[]): boolean
  /** Adds this host's member back to the pool database as a learner, on an empty data dir (after a demotion). */
  rejoinAsLearner(): Promise<void>
  /** Makes this member's own copy of the pool database a database of one and restarts the host on it, as master (emergency_transition_to_master). */
  transitionToMaster(): Promise<void>
  /** Makes this host a member of the pool whose master is at `address`, on that pool's database; then restarts it (emergency_reset_master). */
  resetMaster(address: string): Promise<void>
}

/** The pool's records as a joiner sees them before it joins: stored fields by class and ref. */
export type PoolView = Map<string, Map<string, Record<string, unknown>>>

export interface Services {
  db: Database
  /** Absent on a host that is always master of its own pool (the in-process test host). */
  pool?: PoolRole
  membership?: PoolMembership
  /** The agent of a host: work runs on the host that owns it (forwarding.ts says which host that is).
   * HOST_OFFLINE for a host that is not live, unless `liveCheck` is false (xapi's emergency calls). */
  agentFor(host: string, opts?: { liveCheck: boolean }): Agent
  /** This host: the one whose daemon this is. */
  hostRef: string
  settings: Settings
  /** Where this host keeps SR directories and mount points. */
  srRoot: string
  /** This host's HTTPS base URL as clients reach it (console locations are built from it). */
  publicUrl: string
  /** Called when root's password changes (the daemon then forgets the generated one it kept). */
  onRootPasswordChanged?: () => Promise<void>
  /** The state of login slowing; made from `settings.login` on first use when absent. */
  loginGuard?: LoginGuard
  /** Sessions of this host alone (session.slave_local_login_with_password), by ref; made on first use. */
  localSessions?: Map<string, Readonly<Record<string, unknown>>>
}

/**
 * agentFor for a daemon that reaches its own host's agent only: any other host is offline to it
 * (HOST_OFFLINE [host], the error xapi gives for a member it cannot forward to).
 */
export function ownAgentOnly(hostRef: string, agent: Agent): (host: string) => Agent {
  return (host) => {
    if (host !== hostRef) throw new XapiError('HOST_OFFLINE', [host])
    return agent
  }
}

/** Who called, as xapi names clients in originators and logs: "HTTP 192.0.2.1". */
export interface Client {
  protocol: 'HTTP' | 'HTTPS'
  address: string
}

export interface CallContext {
  svc: Services
  sessionRef: string
  session: Readonly<Record<string, unknown>>
  /** The task this call runs under, if it is an Async call. */
  taskRef?: string
  /** The method name as the client sent it. */
  wireName: string
  /** Aborted when the call's task is cancelled. */
  signal?: AbortSignal
  /** The client the call came from (absent for calls made inside the daemon). */
  client?: Client
}

export type Handler = (ctx: CallContext, args: unknown[]) => unknown | Promise<unknown>

/** Implementations of non-generic messages, by "Class.message". */
export const handlers = new Map<string, Handler>()

/** Registers the implementation of "Class.message"; its arguments are typed by the message's parameters. */
export function register<N extends string>(name: N, handler: (ctx: CallContext, args: ArgsOf<N>) => unknown): void {
  if (handlers.has(name)) throw new Error(`handler registered twice: ${name}`)
  handlers.set(name, handler as Handler)
}

export function now(): string {
  return formatDatetime(new Date())
}
