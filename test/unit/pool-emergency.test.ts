// A pool member whose pool database has no quorum (pool-emergency.ts, dispatch.ts): which calls
// it serves from its replica (the datamodel's getters, to sessions of this host alone), what it
// refuses and how; which other master a host starting as master follows; and the member's copy
// of the pool database, which a start without quorum serves.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { readCopy, replicaOf, saveCopy } from '../../src/db/copy.js'
import { objectKey, Replica } from '../../src/db/replica.js'
import { classes } from '../../src/idl/index.js'
import { readsOnly } from '../../src/xapi/generic.js'
import { needsRecovery, otherMaster } from '../../src/xapi/pool-emergency.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

const message = (name: string) => {
  const [cls, msg] = name.split('.')
  return classes.get(cls!)!.messages.get(msg!)!
}

describe('what a member serves without quorum', () => {
  it('counts only the getters the datamodel generates as reads', () => {
    for (const m of ['VM.get_all', 'VM.get_record', 'VM.get_by_uuid', 'VM.get_name_label', 'host.get_all_records', 'pool.get_master', 'SR.get_by_name_label', 'VM.get_all_records_where', 'session.get_this_host']) assert.ok(readsOnly(message(m)), m)
    for (const m of ['VM.set_name_label', 'pool.add_to_other_config', 'VM.start', 'VM.destroy', 'VM.create', 'session.login_with_password', 'pool.emergency_transition_to_master', 'host.get_servertime', 'VM.add_tags']) assert.ok(!readsOnly(message(m)), m)
  })

  let host: SimHost
  const password = 'emergency unit test'
  before(async () => {
    process.env.FLOTILLA_ROOT_PASSWORD = password
    host = await startSimHost()
    // A member cut off from its pool database: not master, not in contact, the master as it last knew.
    host.svc.pool = { isMaster: () => false, inContact: () => false, masterRef: () => 'OpaqueRef:the-dead-master' }
  })
  after(async () => {
    await host?.dispose()
    delete process.env.FLOTILLA_ROOT_PASSWORD
  })

  const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: XapiCallError) => e.description.join(' '))

  it('logs in sessions of its own and answers reads from its replica with them', async () => {
    const local = await host.call<string>('session.slave_local_login_with_password', 'root', password)
    const [pool] = await host.call<string[]>('pool.get_all', local)
    assert.ok(pool)
    assert.equal(await host.call('pool.get_master', local, pool), host.db.record('pool', pool!).master)
    assert.equal(Object.keys(await host.call<object>('host.get_all_records', local)).length, 1)
    assert.equal(await code(host.call('session.slave_local_login_with_password', 'root', 'wrong')), 'SESSION_AUTHENTICATION_FAILED root Authentication failure')
    // nothing of it is in the pool database
    assert.equal(host.db.tryRecord('session', local), undefined)
    await host.call('session.local_logout', local)
    assert.equal(await code(host.call('pool.get_all', local)), `SESSION_INVALID ${local}`)
  })

  it('says why it cannot act: writes, pool logins and pool sessions answer HOST_IN_EMERGENCY_MODE', async () => {
    const local = await host.call<string>('session.slave_local_login_with_password', 'root', password)
    const [pool] = await host.call<string[]>('pool.get_all', local)
    assert.equal(await code(host.call('pool.add_to_other_config', local, pool, 'k', 'v')), 'HOST_IN_EMERGENCY_MODE')
    assert.equal(await code(host.call('session.login_with_password', 'root', password, '', '')), 'HOST_IN_EMERGENCY_MODE')
    assert.equal(await code(host.c('pool.get_all')), 'HOST_IN_EMERGENCY_MODE')
    // a member in contact with its master sends everything but its own sessions' reads there
    host.svc.pool = { isMaster: () => false, inContact: () => true, masterRef: () => host.svc.hostRef }
    assert.equal(await code(host.call('pool.get_all', local)), 'ok')
  })
})

describe('a host starting as master', () => {
  const role = (master: boolean, host: string) => ({ master, host, etcdUrls: master ? ['https://b:2379'] : [], inContact: true, masterHost: master ? host : 'A' })
  it('follows another host that answers as master when its own database names itself or no one', () => {
    const answers = [{ address: 'b', answer: role(true, 'B') }, { address: 'c', answer: undefined }]
    assert.equal(otherMaster('A', 'A', answers), 'b')
    assert.equal(otherMaster('A', undefined, answers), 'b')
    assert.equal(otherMaster('A', 'A', [{ address: 'b', answer: role(false, 'B') }, { address: 'c', answer: undefined }]), undefined)
    // its database names another master already: it is that one's member anyway
    assert.equal(otherMaster('A', 'B', answers), undefined)
    assert.equal(otherMaster('A', 'A', [{ address: 'a2', answer: role(true, 'A') }]), undefined)
  })
})

describe('pool.recover_slaves', () => {
  it('recovers every other host but the members in contact with its own database', () => {
    const answer = (master: boolean, inContact: boolean, masterHost: string) => ({ master, host: 'B', etcdUrls: [], inContact, masterHost })
    assert.equal(needsRecovery('A', answer(false, true, 'A')), false)
    assert.equal(needsRecovery('A', answer(false, false, 'A')), true, 'a member without quorum')
    assert.equal(needsRecovery('A', answer(false, true, 'C')), true, 'a member of another master')
    assert.equal(needsRecovery('A', answer(true, true, 'B')), true, 'a master of its own (the old one, cut off during the transition)')
  })
})

describe("a member's copy of the pool database", () => {
  it('gives back the same records, other keys and revision', () => {
    const r = new Replica()
    r.load(7, [
      { key: objectKey('VM', 'v'), value: JSON.stringify({ uuid: 'x', name_label: 'kept', memory_static_max: 1073741824 }), createRev: 3, modRev: 5 },
      { key: '/flotilla/v1/master', value: 'OpaqueRef:h1', createRev: 6, modRev: 6 },
    ])
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-copy-'))
    try {
      const file = join(dir, 'pool-db-copy.json')
      saveCopy(file, r)
      const back = replicaOf(readCopy(file)!)
      assert.equal(back.appliedRev, 7)
      assert.deepEqual(back.record('VM', 'v'), r.record('VM', 'v'))
      assert.equal(back.row('VM', 'v')?.modRev, 5)
      assert.equal(back.misc.get('/flotilla/v1/master')?.value, 'OpaqueRef:h1')
      assert.equal(readCopy(join(dir, 'absent.json')), undefined)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
