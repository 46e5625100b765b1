// Slows password guessing without locking anyone out. Each client address has a bucket of
// attempts that refills slowly; each attempt takes a token before its password is checked and a
// success gives it back, so mistakes cost and correct logins are free (and concurrent attempts
// cannot all slip through before the first failure is known). A user name has a bucket too, but
// it only gates addresses that failed recently: an attacker at one address can slow down guesses
// on root from everywhere that guesses, never root's login from an address that has not failed.
// Pure: the caller passes the clock and does the waiting.
import { createHash } from 'node:crypto'

export interface LoginPolicy {
  /** Attempts an address may make at once before it is slowed (free mistakes). */
  addressBurst: number
  /** Then this many attempts per second. */
  addressPerSecond: number
  /** The same for a user name, counted over the addresses that failed recently. */
  userBurst: number
  userPerSecond: number
  /** An address whose last failure is younger than this is subject to the user name's bucket. */
  suspectMs: number
  /** An attempt that could not start within this long is refused without checking its password. */
  maxWaitMs: number
}

export const DEFAULT_LOGIN_POLICY: LoginPolicy = {
  addressBurst: 5,
  addressPerSecond: 1,
  userBurst: 10,
  userPerSecond: 2,
  suspectMs: 15 * 60_000,
  maxWaitMs: 30_000,
}

/** Past this many tracked addresses (or user names), the least recently touched are forgotten. */
const MAX_TRACKED = 10_000
/** Longer user names are remembered by their hash, so that memory stays bounded. */
const USER_KEY_MAX = 128

interface Bucket {
  tokens: number
  /** When `tokens` was last brought up to date. */
  at: number
  /** An address's last failed attempt. */
  lastFailure?: number
}

/** An admitted attempt: what it took, to be given back if it succeeds. */
export interface Ticket {
  address: string
  user: string
  tookUserToken: boolean
}

export type Admission = { go: true; ticket: Ticket } | { go: false; retryInMs: number }

/**
 * The key an address is limited by: IPv4 (also when mapped into IPv6) as is, IPv6 by its /64,
 * since one host can use a whole /64 and would otherwise get a fresh bucket per address.
 */
export function addressKey(address: string): string {
  const bare = address.replace(/%.*$/, '').toLowerCase()
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare)
  if (mapped) return mapped[1]!
  if (!bare.includes(':')) return bare
  const [head = '', tail] = bare.split('::')
  const left = head ? head.split(':') : []
  const right = tail ? tail.split(':') : []
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`
}

/** The key a user name is limited by: itself, or its hash when long. */
export function userKey(user: string): string {
  return user.length <= USER_KEY_MAX ? user : `sha256:${createHash('sha256').update(user).digest('hex')}`
}

export class LoginGuard {
  private readonly addresses = new Map<string, Bucket>()
  private readonly users = new Map<string, Bucket>()

  constructor(private readonly policy: LoginPolicy = DEFAULT_LOGIN_POLICY) {}

  /** Whether an attempt may check its password now (then it holds a token of each bucket that applies), or how long until it may. */
  admit(address: string, user: string, now: number): Admission {
    const p = this.policy
    const key = addressKey(address)
    const name = userKey(user)
    const a = refilled(this.addresses.get(key), p.addressBurst, p.addressPerSecond, now)
    const suspect = a.lastFailure !== undefined && now - a.lastFailure < p.suspectMs
    const u = suspect ? refilled(this.users.get(name), p.userBurst, p.userPerSecond, now) : undefined
    const retryInMs = Math.max(waitFor(a, p.addressPerSecond), u ? waitFor(u, p.userPerSecond) : 0)
    if (retryInMs > 0) return { go: false, retryInMs }
    a.tokens -= 1
    this.keep(this.addresses, key, a)
    if (u) {
      u.tokens -= 1
      this.keep(this.users, name, u)
    }
    return { go: true, ticket: { address: key, user: name, tookUserToken: u !== undefined } }
  }

  /** The outcome of an admitted attempt: a success gives its tokens back; a failure marks its address and costs its user name. */
  settle(ticket: Ticket, succeeded: boolean, now: number): void {
    const p = this.policy
    const a = refilled(this.addresses.get(ticket.address), p.addressBurst, p.addressPerSecond, now)
    const u = refilled(this.users.get(ticket.user), p.userBurst, p.userPerSecond, now)
    if (succeeded) {
      a.tokens = Math.min(p.addressBurst, a.tokens + 1)
      if (ticket.tookUserToken) u.tokens = Math.min(p.userBurst, u.tokens + 1)
    } else {
      a.lastFailure = now
      // A failure from an address that was not suspect yet still counts against the name.
      if (!ticket.tookUserToken) u.tokens = Math.max(0, u.tokens - 1)
    }
    this.keepOrForget(this.addresses, ticket.address, a, p.addressBurst, now)
    this.keepOrForget(this.users, ticket.user, u, p.userBurst, now)
  }

  /** How many addresses and user names are remembered (for tests of the memory bound). */
  get tracked(): number {
    return this.addresses.size + this.users.size
  }

  private keepOrForget(map: Map<string, Bucket>, key: string, b: Bucket, burst: number, now: number): void {
    if (this.settled(b, burst, now)) map.delete(key)
    else this.keep(map, key, b)
  }

  /** Full and without a recent failure: the same as never seen. */
  private settled(b: Bucket, burst: number, now: number): boolean {
    return b.tokens >= burst && (b.lastFailure === undefined || now - b.lastFailure >= this.policy.suspectMs)
  }

  private keep(map: Map<string, Bucket>, key: string, b: Bucket): void {
    map.delete(key)
    map.set(key, b)
    if (map.size <= MAX_TRACKED) return
    // The oldest entries first (a Map keeps insertion order; touched entries were re-inserted).
    for (const k of map.keys()) {
      if (map.size <= MAX_TRACKED) break
      map.delete(k)
    }
  }
}

/** A copy of a bucket (a full new one if none) with the tokens it has regained since. */
function refilled(b: Bucket | undefined, burst: number, perSecond: number, now: number): Bucket {
  if (!b) return { tokens: burst, at: now }
  return { ...b, tokens: Math.min(burst, b.tokens + (Math.max(0, now - b.at) * perSecond) / 1000), at: now }
}

function waitFor(b: Bucket, perSecond: number): number {
  // Less a hair, so that float rounding never makes it a millisecond longer.
  return b.tokens >= 1 ? 0 : Math.ceil(((1 - b.tokens) * 1000) / perSecond - 1e-6)
}
