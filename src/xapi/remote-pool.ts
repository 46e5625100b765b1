// A XenAPI client to another pool's master, for pool.join: JSON-RPC over HTTPS without checking
// the master's certificate, as xapi's join logs in (the trust is established by the join itself:
// the joiner receives the pool CA from the master it authenticated to with the pool's password).
import { request } from 'node:https'
import { XapiError } from '../idl/errors.js'

const TIMEOUT_MS = 10_000

/** One answer from the master: a POST of `body` (an RPC call), or a GET without one. */
function send(address: string, path: string, body?: string, timeoutMs = TIMEOUT_MS): Promise<{ status: number; text: string }> {
  const host = address.includes(':') && !address.startsWith('[') ? `[${address}]` : address
  const headers = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
  return new Promise((resolve, reject) => {
    const req = request(`https://${host}${path}`, { method: body === undefined ? 'GET' : 'POST', rejectUnauthorized: false, timeout: timeoutMs, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${address} within ${timeoutMs / 1000} s`)))
    req.on('error', reject)
    req.end(body)
  })
}

export class RemotePool {
  private session = ''
  private id = 0

  constructor(readonly address: string) {}

  /** A call; the master's XenAPI errors come back as they are, transport failures as JOINING_HOST_CONNECTION_FAILED. */
  async call<T>(method: string, ...params: unknown[]): Promise<T> {
    let answer: { status: number; text: string }
    try {
      answer = await send(this.address, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method, params, id: ++this.id }))
    } catch (err) {
      throw new XapiError('JOINING_HOST_CONNECTION_FAILED', [(err as Error).message])
    }
    if (answer.status !== 200) throw new XapiError('JOINING_HOST_SERVICE_FAILED', [])
    const parsed = JSON.parse(answer.text) as { result?: T; error?: { message: string; data?: string[] } }
    if (parsed.error) throw XapiError.relayed(parsed.error.message, parsed.error.data ?? [])
    return parsed.result as T
  }

  async login(user: string, password: string): Promise<void> {
    this.session = await this.call<string>('session.login_with_password', user, password, '', 'pool.join')
  }

  /** A call with the session of login(). */
  c<T>(method: string, ...params: unknown[]): Promise<T> {
    return this.call<T>(method, this.session, ...params)
  }

  /** A Flotilla handler of the master's (a GET answered in JSON, the session in the query). */
  async handler<T>(path: string): Promise<T> {
    let answer: { status: number; text: string }
    try {
      answer = await send(this.address, `${path}?session_id=${encodeURIComponent(this.session)}`)
    } catch (err) {
      throw new XapiError('JOINING_HOST_CONNECTION_FAILED', [(err as Error).message])
    }
    const parsed = JSON.parse(answer.text || '{}') as T & { error?: string[] }
    if (answer.status !== 200) {
      const [code, ...rest] = parsed.error ?? ['JOINING_HOST_SERVICE_FAILED']
      throw XapiError.relayed(code!, rest)
    }
    return parsed
  }

  async logout(): Promise<void> {
    await this.c('session.logout').catch(() => undefined)
  }
}

/** What a host says of its place in its pool (GET /pool_role, no session: nothing in it is secret). */
export interface PoolRoleAnswer {
  /** Whether it answers as master now. */
  master: boolean
  /** Its host ref. */
  host: string
  /** The client URLs of its pool database's voters (reached only with the pool CA's certificates). */
  etcdUrls: string[]
  /** Whether it reaches its pool database. */
  inContact: boolean
  /** The master its pool database names (possibly stale when it is not in contact). */
  masterHost: string | undefined
}

/** Host `address`'s answer to GET /pool_role, or undefined when it does not answer within `timeoutMs`. */
export async function peekRole(address: string, timeoutMs: number): Promise<PoolRoleAnswer | undefined> {
  try {
    const answer = await send(address, '/pool_role', undefined, timeoutMs)
    return answer.status === 200 ? (JSON.parse(answer.text) as PoolRoleAnswer) : undefined
  } catch {
    return undefined
  }
}
