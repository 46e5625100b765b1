// What the master keeps true about the pool, once a second, and what every host watches for
// itself: pool.master names the election's holder; host_metrics.live follows each host's lease;
// the pool database's voters follow the pool's size; a host the master ejected leaves.
import { isDeepStrictEqual } from 'node:util'
import { listMembers, nextMembershipChange, promote, removeMember, voterUrls } from '../db/cluster.js'
import type { Database } from '../db/database.js'
import type { EtcdStore } from '../db/etcd.js'
import { PREFIX } from '../db/etcd.js'
import { DESIGNATED_KEY, liveKey, type HostPresence } from '../db/presence.js'
import { XapiError } from '../idl/errors.js'
import { NULL_REF } from '../idl/index.js'
import { register, type Services } from './context.js'
import { poolCpuInfo } from './cpu-levelling.js'
import { masterAddress } from './pool-join.js'
import { checkClockSkew } from './clock-skew.js'
import { stopStrayQemus } from './vm-migrate.js'

/** Set by the master on a host it ejects: the host leaves the pool when it sees it. */
export const ejectedKey = (hostRef: string) => `${PREFIX}ejected/${hostRef}`
export const memberKey = (hostRef: string) => `${PREFIX}member/${hostRef}`
/** Where a host's agent is reached by the other hosts of its pool (https://address:port). */
export const agentUrlKey = (hostRef: string) => `${PREFIX}agent-url/${hostRef}`
/** The directory a host keeps its SRs in by default (hosts of a lab on one machine each have their own). */
export const srRootKey = (hostRef: string) => `${PREFIX}sr-root/${hostRef}`

const TICK_MS = 1000
/** Membership is looked at every this many ticks (a linearizable member list each time). */
const MEMBERSHIP_EVERY = 3
/** The members' clocks are compared with the master's every this many ticks. */
const CLOCKS_EVERY = 30
/** How often every host looks for QEMUs of VMs that do not live on it, and how long one must stay so before it goes. */
const STRAYS_EVERY = 5
const STRAY_GRACE_MS = 8_000

/** Also run by a newly elected master before it answers as one (HostPresence.onElected), which on a
 * host's first start is before the pool's records exist. */
export async function keepPoolRecords(db: Database, hostRef: string): Promise<void> {
  await db.transact((tx) => {
    const pool = db.refs('pool')[0]
    if (pool && tx.get('pool', pool).master !== hostRef) tx.update('pool', pool, { master: hostRef })
    if (pool) {
      const hosts = db.refs('host').map((h) => tx.get('host', h).cpu_info)
      const cpuInfo = poolCpuInfo(tx.get('host', hostRef).cpu_info.vendor ?? '', hosts)
      // a record's maps have no prototype: compared as plain objects, or the pool is rewritten every tick
      if (!isDeepStrictEqual({ ...tx.get('pool', pool).cpu_info }, cpuInfo)) tx.update('pool', pool, { cpu_info: cpuInfo })
    }
    if (tx.readRaw(DESIGNATED_KEY) === hostRef) tx.writeRaw(DESIGNATED_KEY, null)
    for (const host of db.refs('host')) {
      const metrics = String(tx.get('host', host).metrics)
      const live = host === hostRef || db.raw(liveKey(host)) !== undefined
      if (metrics !== NULL_REF && tx.exists('host_metrics', metrics) && tx.get('host_metrics', metrics).live !== live) tx.update('host_metrics', metrics, { live })
    }
  })
}

async function keepMembership(svc: Services, store: EtcdStore): Promise<void> {
  const members = await listMembers(store)
  const hostOfName = new Map<string, string>()
  for (const host of svc.db.refs('host')) {
    const name = svc.db.raw(memberKey(host))?.value
    if (name) hostOfName.set(name, host)
  }
  const hostOf = (m: { name: string }) => hostOfName.get(m.name)
  const live = new Set(svc.db.refs('host').filter((h) => h === svc.hostRef || svc.db.raw(liveKey(h))))
  const change = nextMembershipChange(members, hostOf, live, svc.db.refs('host').length, svc.hostRef)
  if (change?.kind === 'promote') await promote(store, change.member.id)
  if (change?.kind === 'remove' || change?.kind === 'demote') await removeMember(store, change.member.id)
  if (change?.kind === 'demote') console.log(`pool database: member ${change.member.name} no longer votes; its host adds it back as a learner`)
}

/**
 * Every host follows who votes: its database client talks to the voters only (learners serve no
 * reads) and the daemon notes them for its next start. A host whose member the master removed
 * while the host stays in the pool (a demoted voter) adds it back as a learner.
 */
async function followVoters(svc: Services, store: EtcdStore, onVoters: (urls: string[]) => void): Promise<void> {
  const members = await listMembers(store)
  const urls = voterUrls(members)
  store.followEndpoints(urls)
  onVoters(urls)
  if (svc.membership && !svc.membership.isMember(members)) await svc.membership.rejoinAsLearner()
}

export function runPoolDuties(svc: Services, store: EtcdStore, presence: HostPresence, onVoters: (urls: string[]) => void): { stop(): void } {
  let ticks = 0
  let busy = false
  let leaving = false
  let comparingClocks = false
  const strays = new Map<string, number>()
  const timer = setInterval(() => {
    if (busy) return
    busy = true
    void (async () => {
      try {
        if (!leaving && svc.db.raw(ejectedKey(svc.hostRef)) && svc.membership) {
          leaving = true
          console.log('this host was ejected from its pool: it starts again as a standalone host')
          await svc.membership.leave()
          return
        }
        const membershipTick = ++ticks % MEMBERSHIP_EVERY === 0
        if (membershipTick) await followVoters(svc, store, onVoters)
        if (ticks % STRAYS_EVERY === 0) await stopStrayQemus(svc, strays, STRAY_GRACE_MS)
        if (!presence.isMaster()) return
        await keepPoolRecords(svc.db, svc.hostRef)
        if (membershipTick) await keepMembership(svc, store)
        // Apart from the ticks: a member that stopped answering must not hold them up.
        if (ticks % CLOCKS_EVERY === 5 && !comparingClocks) {
          comparingClocks = true
          void checkClockSkew(svc)
            .catch((err: Error) => console.error(`clock comparison: ${err.message}`))
            .finally(() => (comparingClocks = false))
        }
      } catch (err) {
        console.error(`pool duties: ${(err as Error).message}`)
      } finally {
        busy = false
      }
    })()
  }, TICK_MS)
  return { stop: () => clearInterval(timer) }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

register('pool.eject', async (ctx, [host]) => {
  const svc = ctx.svc
  const record = svc.db.record('host', host)
  if (svc.db.record('pool', svc.db.first('pool')).ha_enabled) throw new XapiError('HA_IS_ENABLED')
  if (host === svc.hostRef) throw new XapiError('OPERATION_NOT_ALLOWED', ['Cannot eject the pool master'])
  const resident = record.resident_VMs.filter((vm) => !svc.db.record('VM', vm).is_control_domain && svc.db.record('VM', vm).power_state !== 'Halted')
  if (resident.length > 0) throw new XapiError('OPERATION_NOT_ALLOWED', ['VM resident on host'])
  if (!svc.db.raw(liveKey(host))) throw new XapiError('HOST_OFFLINE', [host])
  await svc.db.transact((tx) => tx.writeRaw(ejectedKey(host), '1'))
  // The host leaves on its own: its lease goes when it has stopped its member of the pool database.
  for (let i = 0; i < 60 && svc.db.raw(liveKey(host)); i++) await sleep(500)
  await forgetHost(svc, host)
})

/** Removes a host and everything only it had from the pool's records (eject, host.destroy). */
export async function forgetHost(svc: Services, host: string): Promise<void> {
  await svc.db.transact((tx) => {
    const record = tx.get('host', host)
    for (const pbd of record.PBDs) {
      const sr = String(tx.get('PBD', pbd).SR)
      tx.delete('PBD', pbd)
      if (!tx.exists('SR', sr)) continue
      const others = tx.get('SR', sr).PBDs.filter((p) => p !== pbd)
      if (others.length > 0) continue
      for (const vdi of tx.get('SR', sr).VDIs) {
        for (const vbd of tx.get('VDI', vdi).VBDs) tx.update('VBD', vbd, { VDI: NULL_REF, empty: true })
        tx.delete('VDI', vdi)
      }
      tx.delete('SR', sr)
    }
    for (const pif of record.PIFs) {
      const metrics = String(tx.get('PIF', pif).metrics)
      if (tx.exists('PIF_metrics', metrics)) tx.delete('PIF_metrics', metrics)
      tx.delete('PIF', pif)
    }
    for (const cpu of record.host_CPUs) tx.delete('host_cpu', cpu)
    for (const vm of record.resident_VMs) {
      const rec = tx.get('VM', vm)
      if (rec.is_control_domain) {
        for (const c of rec.consoles) tx.delete('console', c)
        if (tx.exists('VM_metrics', String(rec.metrics))) tx.delete('VM_metrics', String(rec.metrics))
        tx.delete('VM', vm)
      } else tx.update('VM', vm, { resident_on: NULL_REF })
    }
    if (tx.exists('host_metrics', String(record.metrics))) tx.delete('host_metrics', String(record.metrics))
    tx.delete('host', host)
    for (const key of [memberKey(host), ejectedKey(host), agentUrlKey(host), srRootKey(host)]) tx.writeRaw(key, null)
  })
}

register('pool.designate_new_master', async (ctx, [host]) => {
  const svc = ctx.svc
  svc.db.record('host', host)
  if (host === svc.hostRef) return
  if (svc.db.record('pool', svc.db.first('pool')).ha_enabled) throw new XapiError('HA_IS_ENABLED')
  if (!svc.db.raw(liveKey(host))) throw new XapiError('HOST_OFFLINE', [host])
  if (!svc.membership) throw new XapiError('OPERATION_NOT_ALLOWED', ['this host cannot hand the master role over'])
  await svc.membership.resign(host)
  for (let i = 0; i < 30 && svc.pool?.masterRef() !== host; i++) await sleep(500)
  if (svc.pool?.masterRef() !== host) throw new XapiError('HA_ABORT_NEW_MASTER', [`${masterAddress(svc)} is master; ${String(svc.db.record('host', host).address)} did not take over`])
})
