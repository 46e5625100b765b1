// A host's presence in the pool: one etcd lease per host, a liveness key bound to it, and the
// master election key, which the first live host to find it absent creates with its own lease.
// A host counts itself master only while its key is there *and* its last successful keepalive is
// younger than the lease's TTL less a margin: a cut-off master learns it lost only late (pool-lab
// §2c), so it stops acting by its own clock. Writes made as master are also conditional on the
// key (Database.guard), so a write of an old master never lands.
import type { Lease } from 'etcd3'
import { PREFIX, type EtcdStore } from './etcd.js'
import type { Replica } from './replica.js'

export const MASTER_KEY = `${PREFIX}master`
/** Set by designate_new_master to the successor's ref, on a lease of its own that is never renewed:
 * only the named host may take the master key while it exists, and if it never does, the key goes. */
export const DESIGNATED_KEY = `${PREFIX}designated-master`
export const DESIGNATION_SECONDS = 15
export const liveKey = (hostRef: string) => `${PREFIX}live/${hostRef}`

export interface PresenceTiming {
  /** The lease's TTL: how long a host that stops renewing still counts as live. */
  ttlSeconds: number
  /** How often the election key is looked at. */
  pollMs: number
}

export const DEFAULT_PRESENCE: PresenceTiming = { ttlSeconds: 5, pollMs: 300 }

export class HostPresence {
  private lease: Lease | undefined
  private leaseId = ''
  private lastRenewal = 0
  private timer: NodeJS.Timeout | undefined
  private closed = false
  /** A tick still running: the next one waits, or a slow lease grant would make a second lease. */
  private ticking = false
  /** Set once onElected has run for the key held: until then this host does not answer as master. */
  private inOffice = false
  /** The mod_revision of the master key this host created, while it holds it. */
  private heldRev = 0
  /** Whether the last tick found this host master (a change is logged). */
  private wasMaster = false
  /** Set on a host that must not take the master key: another host was made master while it was away. */
  standAside = false
  /** Runs once the master key is won and before this host answers as master (it writes pool.master,
   * so no client is ever sent to a master that pool.master does not name yet). */
  onElected: () => Promise<void> = async () => undefined

  constructor(
    private readonly store: EtcdStore,
    private readonly replica: Replica,
    readonly hostRef: string,
    private readonly timing: PresenceTiming = DEFAULT_PRESENCE,
  ) {}

  /** Takes the lease and, when the master key is free (or this host's own), becomes master before answering. */
  async start(): Promise<void> {
    await this.renewLease()
    await this.tick()
    this.timer = setInterval(() => void this.tick(), this.timing.pollMs)
  }

  private async renewLease(): Promise<void> {
    const lease = this.store.client.lease(this.timing.ttlSeconds)
    // Renewals count only for the lease in use: an older one's would make a dead lease look fresh.
    lease.on('keepaliveSucceeded', () => {
      if (this.lease === lease) this.lastRenewal = Date.now()
    })
    lease.on('lost', () => {
      if (this.lease === lease) this.lease = undefined
    })
    try {
      const id = await lease.grant()
      await this.store.txn({ compares: [], puts: [{ key: liveKey(this.hostRef), value: JSON.stringify({ since: new Date().toISOString() }), lease: id }], deletes: [] })
      // The lease counts only once the others can see it (its liveness key is written).
      this.leaseId = id
      this.lastRenewal = Date.now()
      this.lease = lease
    } catch (err) {
      await lease.revoke().catch(() => undefined)
      throw err
    }
  }

  /** Whether this host's lease can still be alive as far as the others are concerned. */
  get leaseFresh(): boolean {
    return this.lease !== undefined && Date.now() - this.lastRenewal < (this.timing.ttlSeconds - 1) * 1000
  }

  /** The master as the pool database says (possibly stale on a cut-off host). */
  masterRef(): string | undefined {
    return this.replica.misc.get(MASTER_KEY)?.value
  }

  isMaster(): boolean {
    const key = this.replica.misc.get(MASTER_KEY)
    return this.inOffice && this.heldRev !== 0 && key?.modRev === this.heldRev && this.leaseFresh
  }

  /** The condition every write made as master carries. */
  guard(): { key: string; modRev: number } | undefined {
    return this.heldRev ? { key: MASTER_KEY, modRev: this.heldRev } : undefined
  }

  private async tick(): Promise<void> {
    if (this.closed || this.ticking) return
    this.ticking = true
    try {
      await this.step()
    } finally {
      this.ticking = false
    }
  }

  private async step(): Promise<void> {
    try {
      if (!this.lease) await this.renewLease()
      const key = this.replica.misc.get(MASTER_KEY)
      if (this.heldRev && key?.modRev !== this.heldRev) this.lose()
      const designated = this.replica.misc.get(DESIGNATED_KEY)?.value
      // The key of this host's previous run (a daemon restart) is taken over at once, not waited out.
      const free = !key || (key.value === this.hostRef && key.modRev !== this.heldRev)
      if (free && !this.standAside && this.leaseFresh && (!designated || designated === this.hostRef)) await this.campaign(key?.modRev ?? 0)
      if (this.heldRev && !this.inOffice) {
        await this.onElected()
        this.inOffice = true
      }
    } catch (err) {
      console.error(`pool presence: ${(err as Error).message}`)
    }
    const master = this.isMaster()
    if (master !== this.wasMaster) {
      this.wasMaster = master
      console.log(`${new Date().toISOString()} pool presence: ${master ? `master from now (election key revision ${this.heldRev})` : `no longer master (${this.whyNotMaster()})`}`)
    }
  }

  private whyNotMaster(): string {
    if (!this.lease) return 'its lease is lost'
    if (!this.leaseFresh) return `its lease was last renewed ${((Date.now() - this.lastRenewal) / 1000).toFixed(1)} s ago`
    const holder = this.replica.misc.get(MASTER_KEY)?.value
    return holder ? `the election key is held by ${holder}` : 'the election key is gone'
  }

  private async campaign(seenRev: number): Promise<void> {
    const { ok, rev } = await this.store.txn({ compares: [{ key: MASTER_KEY, modRev: seenRev }], puts: [{ key: MASTER_KEY, value: this.hostRef, lease: this.leaseId }], deletes: [] })
    if (ok) {
      await this.replica.waitForRev(rev)
      this.heldRev = rev
    }
  }

  private lose(): void {
    this.heldRev = 0
    this.inOffice = false
  }

  /** Gives the master key up (designate_new_master): another host takes it. */
  async resign(): Promise<void> {
    const held = this.heldRev
    this.lose()
    if (held) await this.store.txn({ compares: [{ key: MASTER_KEY, modRev: held }], puts: [], deletes: [MASTER_KEY] })
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    // A lease not renewed lately is not revoked: the pool database is out of reach (no quorum),
    // and the call would only wait out its deadlines.
    if (this.leaseFresh) await this.lease?.revoke().catch(() => undefined)
  }
}
