// Clock skew between the pool's hosts (xapi's db_gc.ml detect_clock_skew): the master reads each
// live member's clock through its agent, as NTP does (the member's time against the middle of the
// round trip), and raises HOST_CLOCK_SKEW_DETECTED once when a host is further off than the limit,
// re-armed when it comes back under half of it. xapi's limit is 5 minutes; Flotilla's 2 s, since
// etcd leases and the fail-over timings assume clocks kept by NTP.
import { now, type Services } from './context.js'
import { liveHosts } from './forwarding.js'

export const MAX_CLOCK_SKEW_SECONDS = 2

/** How far a host's clock is from ours: its reading against the middle of the call that fetched it. */
export function measuredSkewSeconds(sentAt: number, remote: number, receivedAt: number): number {
  return Math.abs(remote - (sentAt + receivedAt) / 2) / 1000
}

/** Whether to raise the message for a host (once), re-arm it, or do nothing. */
export function skewAlert(skew: number, alreadySent: boolean, max = MAX_CLOCK_SKEW_SECONDS): 'send' | 'rearm' | 'none' {
  if (skew > max && !alreadySent) return 'send'
  if (skew < max / 2 && alreadySent) return 'rearm'
  return 'none'
}

/** The hosts a message was raised for, until they are back in time (this master's memory, as xapi's table). */
const warned = new Set<string>()

/** Measures each live member's skew and raises or re-arms its message; a host that does not answer is skipped. */
export async function checkClockSkew(svc: Services): Promise<void> {
  for (const host of liveHosts(svc).filter((h) => h !== svc.hostRef)) {
    let skew: number
    try {
      const sentAt = Date.now()
      const remote = await svc.agentFor(host).call('host.clock')
      skew = measuredSkewSeconds(sentAt, remote, Date.now())
    } catch {
      continue
    }
    const decision = skewAlert(skew, warned.has(host))
    if (decision === 'rearm') warned.delete(host)
    if (decision !== 'send') continue
    warned.add(host)
    const record = svc.db.record('host', host)
    const pool = svc.db.record('pool', svc.db.first('pool'))
    console.error(`host ${record.name_label} (${host}): its clock is ${skew.toFixed(2)} s off this host's, above ${MAX_CLOCK_SKEW_SECONDS} s`)
    await svc.db.transact((tx) =>
      tx.create('message', {
        name: 'HOST_CLOCK_SKEW_DETECTED',
        priority: 3,
        cls: 'Host',
        obj_uuid: record.uuid,
        timestamp: now(),
        body: `The clock on server '${record.name_label}' may not be synchronized with the other servers in pool '${pool.name_label}' (${skew.toFixed(1)} s apart). This could lead to errors when performing VM lifecycle operations, and will also affect the times recorded against archived performance data gathered from this server.`,
      }),
    )
  }
}
