// What only the daemon can do when its host changes pools: move its etcd member and its
// certificates to another pool and start again on it (a join), or become a fresh standalone host
// (an eject). Each step of a join registers its undo, so a join that fails anywhere before the
// host restarts leaves it the standalone host it was and the pool as it was.
import { existsSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { listMembers, addLearner, removeMember, voterUrls } from '../db/cluster.js'
import { EtcdStore, type StoreTls } from '../db/etcd.js'
import { peekRole } from '../xapi/remote-pool.js'
import { memberKey } from '../xapi/pool-master.js'
import { OBJ_PREFIX } from '../db/replica.js'
import type { HostPresence } from '../db/presence.js'
import { DESIGNATED_KEY, DESIGNATION_SECONDS, MASTER_KEY } from '../db/presence.js'
import { XapiError } from '../idl/errors.js'
import { fromJson } from '../lib/int64.js'
import { UndoStack } from '../lib/undo.js'
import type { PoolMembership, PoolSecret, PoolView } from '../xapi/context.js'
import { localClientUrl, peerUrl, readMembership, type EtcdPlace, type EtcdSupervisor } from './etcd.js'
import { adoptPoolCa, ensurePoolTrust, readPoolCa } from './pool-ca.js'
import type { Identity } from './bootstrap.js'

export interface PoolHostContext {
  dataDir: string
  /** The pool CA and host certificate directory. */
  poolDir: string
  etcd: EtcdSupervisor
  place: EtcdPlace
  store: EtcdStore
  presence: HostPresence
  /** This host's pool certificates, for clients of other pool databases than `store`'s. */
  trust: StoreTls
  identity: Identity
  hostname: string
  address: string
  /** Starts the host again in this process, on whatever database its files now name. */
  restart: () => void
}

/** Etcd takes at most 128 operations per transaction. */
const TXN_OPS = 100

async function poolView(store: EtcdStore): Promise<PoolView> {
  const view: PoolView = new Map()
  for (const kv of (await store.loadAll()).kvs) {
    if (!kv.key.startsWith(OBJ_PREFIX)) continue
    const rest = kv.key.slice(OBJ_PREFIX.length)
    const slash = rest.indexOf('/')
    const cls = rest.slice(0, slash)
    let table = view.get(cls)
    if (!table) view.set(cls, (table = new Map()))
    table.set(rest.slice(slash + 1), fromJson(kv.value) as Record<string, unknown>)
  }
  return view
}

async function waitStarted(store: EtcdStore, id: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const member = (await listMembers(store).catch(() => [])).find((m) => m.id === id)
    if (member && member.name !== '') return
    if (Date.now() > deadline) throw new Error('the new pool database member did not start')
    await new Promise((r) => setTimeout(r, 300))
  }
}

export function poolMembership(ctx: PoolHostContext): PoolMembership {
  return {
    secret: async () => ({ ...(await readPoolCa(ctx.poolDir)), etcdUrls: voterUrls(await listMembers(ctx.store)) }),

    join: async (secret: PoolSecret, recordsFor: (pool: PoolView) => Map<string, string>) => {
      const undo = new UndoStack('pool.join')
      const joiningDir = `${ctx.poolDir}.joining`
      const previousDir = `${ctx.poolDir}.previous`
      try {
        rmSync(joiningDir, { recursive: true, force: true })
        const trust: StoreTls = await adoptPoolCa(joiningDir, { caCert: secret.caCert, caKey: secret.caKey }, ctx.hostname, ctx.address)
        const pool = new EtcdStore(secret.etcdUrls, trust)
        undo.push('the pool database client', () => pool.close())
        await pool.waitReady(10_000).catch((err: Error) => {
          throw new XapiError('JOINING_HOST_CONNECTION_FAILED', [err.message])
        })
        const records = recordsFor(await poolView(pool))
        records.set(memberKey(ctx.identity.hostRef), ctx.identity.hostUuid)
        const keys = [...records.keys()]
        for (let i = 0; i < keys.length; i += TXN_OPS) {
          const chunk = keys.slice(i, i + TXN_OPS)
          const { ok } = await pool.txn({ compares: chunk.map((key) => ({ key, modRev: 0 })), puts: chunk.map((key) => ({ key, value: records.get(key)! })), deletes: [] })
          if (!ok) throw new XapiError('OPERATION_NOT_ALLOWED', ['Host is already part of a pool'])
          undo.push('the records brought into the pool', () => pool.txn({ compares: [], puts: [], deletes: chunk }).then(() => undefined))
        }
        const learner = await addLearner(pool, ctx.identity.hostUuid, peerUrl(ctx.place))
        undo.push('the new pool database member', () => removeMember(pool, learner.id).then(() => undefined))
        // From here on the host's own database is left behind: its certificates and member move to the pool's.
        await ctx.presence.close()
        rmSync(previousDir, { recursive: true, force: true })
        renameSync(ctx.poolDir, previousDir)
        renameSync(joiningDir, ctx.poolDir)
        const before = { name: ctx.etcd.name }
        undo.push('the standalone database', async () => {
          rmSync(ctx.poolDir, { recursive: true, force: true })
          renameSync(previousDir, ctx.poolDir)
          await ctx.etcd.restoreAside(before)
        })
        await ctx.etcd.restartAs({ name: ctx.identity.hostUuid, joining: learner.initialCluster, endpoints: secret.etcdUrls })
        await waitStarted(pool, learner.id, 30_000)
        undo.commit()
        await pool.close()
      } catch (err) {
        await undo.rollback()
        rmSync(joiningDir, { recursive: true, force: true })
        throw err
      }
      ctx.restart()
    },

    leave: async () => {
      // The pool has forgotten this host: start over as a pool of one, with nothing of the pool's.
      await ctx.presence.close()
      await ctx.etcd.stop()
      for (const dir of [ctx.poolDir, join(ctx.dataDir, 'sr')]) if (existsSync(dir)) rmSync(dir, { recursive: true, force: true })
      await ensurePoolTrust(ctx.poolDir, ctx.hostname, ctx.address)
      await ctx.etcd.restartFresh({ name: ctx.identity.hostUuid })
      ctx.restart()
    },

    voters: async () => voterUrls(await listMembers(ctx.store)),

    isMember: (members) => members.some((m) => m.peerUrls.includes(peerUrl(ctx.place))),

    rejoinAsLearner: async () => {
      const voters = voterUrls(await listMembers(ctx.store))
      console.log('pool database: this host no longer votes; its member joins again as a learner')
      const learner = await addLearner(ctx.store, ctx.identity.hostUuid, peerUrl(ctx.place))
      // The removed member's data is of no use: a learner starts empty and is sent the database.
      await ctx.etcd.restartAs({ name: ctx.identity.hostUuid, joining: learner.initialCluster, endpoints: voters })
    },

    transitionToMaster: async () => {
      const undo = new UndoStack('pool.emergency_transition_to_master')
      const before = readMembership(ctx.dataDir, ctx.identity.hostUuid)
      try {
        // Its lease went with the quorum; closing does not wait for the unreachable database.
        await ctx.presence.close()
        await ctx.etcd.restartAlone()
        undo.push('the member of the pool database', () => ctx.etcd.restoreAside(before))
        const alone = new EtcdStore([localClientUrl(ctx.place)], ctx.trust)
        try {
          await alone.waitReady(30_000)
          // Every lease is of the pool of before (the dead master's, this host's old one): revoked,
          // the dead master shows not live at once and the master key is free for this host.
          const { leases } = await alone.client.leaseClient.leaseLeases()
          for (const lease of leases) await alone.client.leaseClient.leaseRevoke({ ID: lease.ID })
          await alone.txn({ compares: [], puts: [], deletes: [MASTER_KEY, DESIGNATED_KEY] })
        } finally {
          await alone.close()
        }
        undo.commit()
      } catch (err) {
        await undo.rollback()
        // Its presence is closed: the host starts again, on its member as it was.
        ctx.restart()
        throw err
      }
      ctx.restart()
    },

    resetMaster: async (address: string) => {
      const role = await peekRole(address, 10_000)
      if (!role) throw new XapiError('CANNOT_CONTACT_HOST', [address])
      if (!role.master || role.etcdUrls.length === 0) throw new XapiError('HOST_IS_SLAVE', [address])
      // Its master already, or itself: nothing to do.
      if (role.host === ctx.identity.hostRef || (ctx.presence.leaseFresh && ctx.presence.masterRef() === role.host)) return
      const undo = new UndoStack('pool.emergency_reset_master')
      const before = readMembership(ctx.dataDir, ctx.identity.hostUuid)
      const pool = new EtcdStore(role.etcdUrls, ctx.trust)
      try {
        await pool.waitReady(10_000)
        // A member of this host's from before (a learner the master's database was made from) goes first.
        for (const m of await listMembers(pool)) if (m.name === ctx.etcd.name) await removeMember(pool, m.id)
        const learner = await addLearner(pool, ctx.etcd.name, peerUrl(ctx.place))
        undo.push('the new pool database member', () => removeMember(pool, learner.id).then(() => undefined))
        // The presence stays: the restart closes it, and an undone reset leaves the host as it was.
        undo.push('the pool database of before', () => ctx.etcd.restoreAside(before))
        await ctx.etcd.restartAs({ name: ctx.etcd.name, joining: learner.initialCluster, endpoints: role.etcdUrls })
        await waitStarted(pool, learner.id, 30_000)
        undo.commit()
      } catch (err) {
        await undo.rollback()
        throw err
      } finally {
        await pool.close()
      }
      ctx.restart()
    },

    resign: async (successor: string) => {
      const designation = ctx.store.client.lease(DESIGNATION_SECONDS, { autoKeepAlive: false })
      await ctx.store.txn({ compares: [], puts: [{ key: DESIGNATED_KEY, value: successor, lease: await designation.grant() }], deletes: [] })
      await ctx.presence.resign()
    },
  }
}
