// The pool database's members: who votes, who learns, and the membership changes a join, an
// eject or a death needs. 1 voter for a pool of 1–2 hosts (2 voters would stop the pool when
// either host dies: pool-lab §2e), 3 from the third host on; new members join as learners and are
// promoted once in sync. etcd refuses a membership change for about 5 s after the previous one
// (its strict reconfiguration check, pool-lab §2d), so each change is retried for a while.
import type { EtcdStore } from './etcd.js'

export interface Member {
  id: string
  /** Empty until the member has started. */
  name: string
  peerUrls: string[]
  clientUrls: string[]
  learner: boolean
}

/** How many voters a pool of `hosts` hosts should have. */
export function voterTarget(hosts: number): number {
  return hosts >= 3 ? 3 : 1
}

/** `demote`: a voter beyond the target is removed; its host adds itself back as a learner (etcd cannot demote in place). */
export type MembershipChange = { kind: 'promote' | 'remove' | 'demote'; member: Member }

/**
 * The next membership change, if any: members whose host left the pool go first (a learner
 * before a voter), then a learner is promoted while voters are below the target. One change at a
 * time, since etcd takes only one per few seconds. The master's member votes: a learner
 * master is promoted first. A voter beyond the target (a 3-host pool that lost a host, a 2-host
 * pool whose vote moved to its master) is then demoted, never the master's: two voters would
 * stop the pool when either host dies. `hostOf` names each member's host, or undefined for a
 * member no host of the pool owns any more.
 */
export function nextMembershipChange(members: Member[], hostOf: (m: Member) => string | undefined, liveHosts: Set<string>, hostCount: number, master: string): MembershipChange | undefined {
  // A member added but not started yet has no name: it belongs to a join in progress.
  const orphan = members.filter((m) => m.name !== '' && hostOf(m) === undefined).sort((a, b) => Number(a.learner === false) - Number(b.learner === false))[0]
  const voters = members.filter((m) => !m.learner)
  if (orphan && (orphan.learner || voters.length > 1)) return { kind: 'remove', member: orphan }
  if (voters.length < voterTarget(hostCount)) {
    const learner = members.find((m) => m.learner && m.name !== '' && liveHosts.has(hostOf(m) ?? ''))
    if (learner) return { kind: 'promote', member: learner }
  }
  // The master votes (a 2-host pool whose master was designated or took over): its member is
  // promoted, and the voter beyond the target is then demoted below.
  const masterVotes = voters.some((m) => hostOf(m) === master)
  if (!orphan && !masterVotes) {
    const own = members.find((m) => m.learner && m.name !== '' && hostOf(m) === master)
    if (own) return { kind: 'promote', member: own }
  }
  if (!orphan && voters.length > voterTarget(hostCount) && masterVotes) {
    const extra = voters.find((m) => hostOf(m) !== master && hostOf(m) !== undefined)
    if (extra) return { kind: 'demote', member: extra }
  }
  return undefined
}

export async function listMembers(store: EtcdStore): Promise<Member[]> {
  const res = await store.client.cluster.memberList({ linearizable: true })
  return res.members.map((m) => ({ id: m.ID, name: m.name, peerUrls: m.peerURLs, clientUrls: m.clientURLs, learner: Boolean(m.isLearner) }))
}

/** Retries a membership change while etcd refuses it as too soon or not yet possible. */
async function reconfigure<T>(what: string, change: () => Promise<T>, forMs = 20_000): Promise<T> {
  const deadline = Date.now() + forMs
  for (;;) {
    try {
      return await change()
    } catch (err) {
      const message = (err as Error).message
      const transient = /unhealthy cluster|not in sync|too many learner|request timed out|deadline|leader changed|UNAVAILABLE/i.test(message)
      if (!transient || Date.now() > deadline) throw new Error(`${what}: ${message}`)
      await new Promise((r) => setTimeout(r, 500))
    }
  }
}

/** Adds a learner; answers its id and the `--initial-cluster` it must start with. */
export async function addLearner(store: EtcdStore, name: string, peerUrl: string): Promise<{ id: string; initialCluster: string }> {
  const res = await reconfigure(`adding ${name} to the pool database`, () => store.client.cluster.memberAdd({ peerURLs: [peerUrl], isLearner: true }))
  const id = res.member.ID
  const initialCluster = res.members
    .map((m) => (m.ID === id ? `${name}=${peerUrl}` : m.name ? `${m.name}=${m.peerURLs[0]}` : ''))
    .filter((x) => x !== '')
    .join(',')
  return { id, initialCluster }
}

export const promote = (store: EtcdStore, id: string) => reconfigure(`promoting member ${id}`, () => store.client.cluster.memberPromote({ ID: id }), 5000)

export const removeMember = (store: EtcdStore, id: string) => reconfigure(`removing member ${id}`, () => store.client.cluster.memberRemove({ ID: id }))

export const updatePeerUrls = (store: EtcdStore, id: string, peerUrls: string[]) => reconfigure(`updating member ${id}`, () => store.client.cluster.memberUpdate({ ID: id, peerURLs: peerUrls }))

/** The client URLs of the voting members: where a host's daemon sends its reads and writes (learners serve neither). */
export const voterUrls = (members: Member[]) => members.filter((m) => !m.learner).flatMap((m) => m.clientUrls)
