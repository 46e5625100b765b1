// xapi's emergency calls over an etcd pool database (pools-migration-ha §1.7): a member whose
// master is gone has no quorum when the master's member was the only voter (a 2-host pool), so it
// serves reads from its replica and refuses the rest (HOST_IN_EMERGENCY_MODE) until the master
// comes back or it is made master here. A master that starts again while another host was made
// master meanwhile becomes that one's member (xapi's check for other masters at start).
import { XapiError } from '../idl/errors.js'
import { register, type Services } from './context.js'
import { peekRole, type PoolRoleAnswer } from './remote-pool.js'

function assertHaOff(svc: Services): void {
  if (svc.db.record('pool', svc.db.first('pool')).ha_enabled) throw new XapiError('HA_IS_ENABLED')
}

register('pool.emergency_transition_to_master', async (ctx) => {
  const svc = ctx.svc
  // Already master: nothing to do (xe says so unless --force).
  if (!svc.pool || svc.pool.isMaster()) return
  assertHaOff(svc)
  // With quorum the pool has a master already, or elects one by itself: a second would split it.
  if (svc.pool.inContact()) throw new XapiError('OPERATION_NOT_ALLOWED', ['the pool database has quorum: the pool has a master (pool.designate_new_master hands the role over)'])
  if (!svc.membership) throw new XapiError('OPERATION_NOT_ALLOWED', ['this host cannot become master'])
  await svc.membership.transitionToMaster()
})

register('pool.emergency_reset_master', async (ctx, [address]) => {
  const svc = ctx.svc
  assertHaOff(svc)
  if (!svc.membership) throw new XapiError('OPERATION_NOT_ALLOWED', ['this host cannot change pools'])
  await svc.membership.resetMaster(address)
})

/** Whether a host that answered so needs recovering by master `me`: anything but a member in contact with `me`'s database. */
export function needsRecovery(me: string, answer: PoolRoleAnswer): boolean {
  return answer.master || !answer.inContact || answer.masterHost !== me
}

register('pool.recover_slaves', async (ctx) => {
  const svc = ctx.svc
  const me = svc.db.record('host', svc.hostRef)
  const recovered: string[] = []
  // Hosts that do not answer are left (xapi returns the hosts that accepted); no liveness check,
  // since a host in emergency mode holds no lease in this database.
  for (const host of svc.db.refs('host').filter((h) => h !== svc.hostRef)) {
    const answer = await peekRole(String(svc.db.record('host', host).address), 5000)
    if (!answer || !needsRecovery(svc.hostRef, answer)) continue
    try {
      await svc.agentFor(host, { liveCheck: false }).call('host.follow-master', { address: String(me.address) })
      recovered.push(host)
    } catch (err) {
      console.error(`pool.recover_slaves: ${String(svc.db.record('host', host).address)}: ${(err as Error).message}`)
    }
  }
  return recovered
})

/**
 * Which other host a host starting as master must follow instead: one that answers as master
 * itself, when this host's own database does not name it (it was made master while this host was
 * away). `answers` holds what each other host of this host's database said (undefined: no answer).
 */
export function otherMaster(me: string, masterInMyDatabase: string | undefined, answers: { address: string; answer: PoolRoleAnswer | undefined }[]): string | undefined {
  if (masterInMyDatabase !== undefined && masterInMyDatabase !== me) return undefined
  return answers.find((a) => a.answer?.master && a.answer.host !== me)?.address
}
