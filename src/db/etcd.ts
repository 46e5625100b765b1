// The pool database's connection to etcd: one range read to load, one watch to follow, and
// transactions that compare the mod_revision of everything they read. Over mutual TLS with the
// pool CA's certificates; every call has a deadline and is retried on another member (pool-lab
// §2b: a proposal sent to a lost leader is never answered), and a broken watch reconnects within
// a second rather than etcd3's default of up to 30 s.
import { ConstantBackoff, ExponentialBackoff, handleAll, noop, retry } from 'cockatiel'
import { Etcd3, type IKeyValue, type IWatchResponse, type Watcher } from 'etcd3'

export const PREFIX = '/flotilla/v1/'

export interface KeyValue {
  key: string
  value: string
  createRev: number
  modRev: number
}

export interface Change {
  type: 'put' | 'delete'
  key: string
  value: string
  createRev: number
  modRev: number
}

export interface TxnSpec {
  /** Keys whose mod_revision must still be as read (0 = the key must be absent). */
  compares: { key: string; modRev: number }[]
  /** A put with a lease goes when the lease expires (liveness and election keys). */
  puts: { key: string; value: string; lease?: string }[]
  deletes: string[]
}

const toKv = (kv: IKeyValue): KeyValue => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  createRev: Number(kv.create_revision),
  modRev: Number(kv.mod_revision),
})

/** PEM texts of the pool CA and of this host's certificate and key. */
export interface StoreTls {
  ca: string
  cert: string
  key: string
}

/** etcd3's per-member connection (connection-pool.js: Host), as much of it as followEndpoints uses. */
interface EtcdHost {
  host: string
  channelCredentials: unknown
  channelOptions: unknown
  close(): void
}
type EtcdHostClass = new (url: string, credentials: unknown, options: unknown, policy: unknown) => EtcdHost

/** How long one etcd call may take before it is tried again (on another member when there are several). */
export const CALL_DEADLINE_MS = 2500

export class EtcdStore {
  readonly client: Etcd3
  private watcher: Watcher | undefined

  constructor(
    readonly endpoints: string[],
    tls?: StoreTls,
  ) {
    this.client = new Etcd3({
      hosts: endpoints,
      dialTimeout: 5000,
      // A member cut off drops packets: without pings a watch or lease stream on it hangs for good
      // (a cut-off master's lease then never looks expired to the others). etcd allows a ping every
      // 5 s on a connection with streams (--grpc-keepalive-min-time), so: a ping each 6 s, dead after 2 s.
      grpcOptions: { 'grpc.keepalive_time_ms': 6000, 'grpc.keepalive_timeout_ms': 2000 },
      credentials: tls && { rootCertificate: Buffer.from(tls.ca), certChain: Buffer.from(tls.cert), privateKey: Buffer.from(tls.key) },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
      faultHandling: {
        // No per-member circuit breaker: with one voter it would turn a 1 s hiccup into 5 s of refusals.
        host: () => noop,
        global: retry(handleAll, { maxAttempts: 3, backoff: new ConstantBackoff(100) }),
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }).next(),
      },
    })
  }

  /**
   * Talks to these members only, the voters: those the client does not know yet (voters promoted
   * after this host joined) are added, so it still reaches the pool database when the members it
   * started with are gone; the connections to the others (a learner answers no reads, a removed
   * member nothing) are closed. etcd3 1.1.2 (pinned) fixes its hosts at construction; a new host
   * is made like the first one, with the same credentials and channel options, and the pool picks
   * among all of them for each call. An empty list (the members could not be listed) changes nothing.
   */
  followEndpoints(urls: string[]): void {
    if (urls.length === 0) return
    const pool = (this.client as unknown as { pool: { hosts: EtcdHost[] } }).pool
    const hostOf = (url: string) => url.replace(/^https?:\/\//, '')
    const wanted = new Set(urls.map(hostOf))
    const template = pool.hosts[0]!
    for (const url of urls) {
      if (pool.hosts.some((h) => h.host === hostOf(url))) continue
      pool.hosts.push(new (template.constructor as EtcdHostClass)(url, template.channelCredentials, template.channelOptions, noop))
    }
    for (const host of pool.hosts.filter((h) => !wanted.has(h.host))) {
      pool.hosts.splice(pool.hosts.indexOf(host), 1)
      host.close()
    }
    this.endpoints.splice(0, this.endpoints.length, ...urls)
  }

  /** Waits until etcd answers, for up to `ms`. */
  async waitReady(ms: number): Promise<void> {
    const deadline = Date.now() + ms
    for (;;) {
      try {
        await this.client.maintenance.status()
        return
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`etcd did not answer within ${ms} ms: ${(err as Error).message}`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }

  async loadAll(): Promise<{ rev: number; kvs: KeyValue[] }> {
    const res = await this.client.kv.range({ key: Buffer.from(PREFIX), range_end: Buffer.from(prefixEnd(PREFIX)) })
    return { rev: Number(res.header.revision), kvs: res.kvs.map(toKv) }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.client.kv.range({ key: Buffer.from(key) })
    return res.kvs[0] ? toKv(res.kvs[0]) : undefined
  }

  /** Follows every change under the prefix from `fromRev`, one callback per etcd revision batch. */
  async watch(fromRev: number, onChanges: (changes: Change[], rev: number) => void, onError: (err: Error) => void): Promise<void> {
    const watcher = await this.client.watch().prefix(PREFIX).startRevision(String(fromRev)).create()
    this.watcher = watcher
    watcher.on('data', (res: IWatchResponse) => {
      if (res.events.length === 0) return
      const changes: Change[] = res.events.map((e) => ({
        type: e.type === 'Delete' ? 'delete' : 'put',
        ...toKv(e.kv),
      }))
      onChanges(changes, Number(res.header.revision))
    })
    watcher.on('error', onError)
  }

  async txn(spec: TxnSpec): Promise<{ ok: boolean; rev: number }> {
    const res = await this.client.kv.txn({
      compare: spec.compares.map((c) => ({ key: Buffer.from(c.key), result: 'Equal', target: 'Mod', mod_revision: String(c.modRev) })),
      success: [
        ...spec.puts.map((p) => ({ request_put: { key: Buffer.from(p.key), value: Buffer.from(p.value), lease: p.lease } })),
        ...spec.deletes.map((k) => ({ request_delete_range: { key: Buffer.from(k) } })),
      ],
      failure: [],
    })
    return { ok: res.succeeded, rev: Number(res.header.revision) }
  }

  async close(): Promise<void> {
    await this.watcher?.cancel().catch(() => undefined)
    this.client.close()
  }
}

function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)
}
