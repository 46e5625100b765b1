// A pool of two real hosts (lab.ts) when a host dies: its pool database has one voter, the
// master's member, so the member dying changes nothing for the master, and the master dying
// leaves the member without quorum: it serves reads to sessions of its own, also after a
// restart, and answers HOST_IN_EMERGENCY_MODE to the rest until `xe
// pool-emergency-transition-to-master` makes it master. The old master, started again, does not
// act as master: it becomes the new master's member. A designated master gets the vote.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { call, jsonrpc, ROOT, waitFor } from '../helpers/daemon.js'
import { Lab } from '../helpers/lab.js'

const run = promisify(execFile)
let lab: Lab

const c = <T = any>(i: number, s: string, method: string, ...params: unknown[]) => call<T>(lab.host(i).url, method, s, ...params)
/** A JSON-RPC answer as xapi's error description ([code, params…]), or ['ok']. */
const failure = (r: { error?: { message: string; data: string[] } }) => (r.error ? [r.error.message, ...r.error.data] : ['ok'])
/** The answer host i gives to `method`, sent once, or UNREACHABLE. */
async function answer(i: number, method: string, params: unknown[]): Promise<string[]> {
  const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 })
  try {
    const res = await fetch(`${lab.host(i).url}/jsonrpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(5000) })
    return failure((await res.json()) as { error?: { message: string; data: string[] } })
  } catch (err) {
    return ['UNREACHABLE', (err as Error).message]
  }
}
const loginAnswer = (i: number) => answer(i, 'session.login_with_password', ['root', lab.password, '', ''])
const login = (i: number) => call<string>(lab.host(i).url, 'session.login_with_password', 'root', lab.password)
const localLogin = (i: number) => call<string>(lab.host(i).url, 'session.slave_local_login_with_password', 'root', lab.password)
const xe = (i: number, ...args: string[]) => run(process.execPath, [join(ROOT, 'bin', 'xe.js'), '-s', lab.host(i).address, '-p', '443', '-u', 'root', '-pw', lab.password, ...args], { timeout: 120_000 })
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`

let pool = ''
const hostRef: Record<number, string> = {}

describe('a pool of two hosts when one dies', () => {
  before(async () => {
    lab = await Lab.up(2)
  })
  afterEach((t) => lab?.reportFailure(t))
  after(() => lab?.down())

  it('host 2 joins host 1: one voter, host 2 a learner', async () => {
    const s2 = await login(2)
    ;[hostRef[2]] = await c<string[]>(2, s2, 'host.get_all')
    assert.deepEqual(failure(await jsonrpc(lab.host(2).url, 'pool.join', [s2, lab.host(1).address, 'root', lab.password], { resend: false })), ['ok'])
    await waitFor('host 2 to answer as a member', async () => (await loginAnswer(2))[0] === 'HOST_IS_SLAVE' || undefined)
    const s = await login(1)
    ;[pool] = await c<string[]>(1, s, 'pool.get_all')
    hostRef[1] = await c<string>(1, s, 'pool.get_master', pool)
    assert.deepEqual((await c<string[]>(1, s, 'host.get_all')).sort(), [hostRef[1], hostRef[2]].sort())
  })

  it('the member dying changes nothing for the master', async () => {
    await lab.kill(2)
    const s = await login(1)
    await c(1, s, 'pool.add_to_other_config', pool, 'written-while-2-is-down', 'yes')
    assert.equal((await c<Record<string, string>>(1, s, 'pool.get_other_config', pool))['written-while-2-is-down'], 'yes')
    await lab.restart(2)
    await waitFor('host 2 back as a member', async () => (await loginAnswer(2))[0] === 'HOST_IS_SLAVE' || undefined)
    await c(1, s, 'pool.add_to_other_config', pool, 'before-the-master-dies', 'yes')
    // the member's copy of the pool database has the last write
    const copy = join(lab.host(2).dataDir, 'pool-db-copy.json')
    await waitFor("host 2's copy of the pool database", () => (existsSync(copy) && readFileSync(copy, 'utf8').includes('before-the-master-dies')) || undefined, 30_000)
  })

  it('the master killed: the member serves reads to its own sessions and says why it cannot act', async () => {
    const killedAt = Date.now()
    await lab.kill(1)
    const first = await waitFor('host 2 to answer HOST_IN_EMERGENCY_MODE', async () => {
      const a = await loginAnswer(2)
      assert.ok(['HOST_IS_SLAVE', 'HOST_IN_EMERGENCY_MODE'].includes(a[0]!), a.join(' '))
      return a[0] === 'HOST_IN_EMERGENCY_MODE' ? a : undefined
    }, 30_000)
    process.stderr.write(`kill of the master → the member answers HOST_IN_EMERGENCY_MODE: ${seconds(Date.now() - killedAt)}\n`)
    assert.deepEqual(first, ['HOST_IN_EMERGENCY_MODE'])
    const local = await localLogin(2)
    assert.equal((await c<Record<string, string>>(2, local, 'pool.get_other_config', pool))['before-the-master-dies'], 'yes')
    assert.equal(await c(2, local, 'pool.get_master', pool), hostRef[1])
    assert.equal((await c<string[]>(2, local, 'host.get_all')).length, 2)
    const startedAt = Date.now()
    assert.deepEqual(await answer(2, 'pool.add_to_other_config', [local, pool, 'written-without-quorum', 'no']), ['HOST_IN_EMERGENCY_MODE'])
    assert.ok(Date.now() - startedAt < 5000, 'a write is refused at once, not after the database deadlines')
  })

  it('the member restarted while the master is still gone serves its copy read-only', async () => {
    await lab.kill(2)
    const startedAt = Date.now()
    await lab.restart(2)
    const local = await waitFor('host 2 to serve reads', () => localLogin(2).catch(() => undefined), 30_000)
    const config = await c<Record<string, string>>(2, local, 'pool.get_other_config', pool)
    process.stderr.write(`restart of the member with no voter → serving reads: ${seconds(Date.now() - startedAt)}\n`)
    assert.equal(config['before-the-master-dies'], 'yes')
    assert.deepEqual(await loginAnswer(2), ['HOST_IN_EMERGENCY_MODE'])
    assert.deepEqual(await answer(2, 'pool.add_to_other_config', [local, pool, 'written-without-quorum', 'no']), ['HOST_IN_EMERGENCY_MODE'])
  })

  it('xe pool-emergency-transition-to-master makes the member master: logins and writes work, the dead master stays, not live', async () => {
    const startedAt = Date.now()
    await xe(2, 'pool-emergency-transition-to-master')
    await waitFor('host 2 to answer as master', async () => (await loginAnswer(2))[0] === 'ok' || undefined, 60_000)
    process.stderr.write(`emergency transition → the new master answers logins: ${seconds(Date.now() - startedAt)}\n`)
    const s = await login(2)
    assert.equal(await c(2, s, 'pool.get_master', pool), hostRef[2])
    await c(2, s, 'pool.add_to_other_config', pool, 'written-by-the-new-master', 'yes')
    const config = await c<Record<string, string>>(2, s, 'pool.get_other_config', pool)
    assert.equal(config['before-the-master-dies'], 'yes')
    assert.equal(config['written-by-the-new-master'], 'yes')
    assert.deepEqual((await c<string[]>(2, s, 'host.get_all')).sort(), [hostRef[1], hostRef[2]].sort())
    const metrics = await c<string>(2, s, 'host.get_metrics', hostRef[1])
    await waitFor('the dead master shown not live', async () => (await c<boolean>(2, s, 'host_metrics.get_live', metrics)) === false || undefined, 30_000)
    // xe says so when the host is master already
    assert.match((await xe(2, 'pool-emergency-transition-to-master')).stdout, /already master/)
  })

  it('the old master started again does not act as master: it becomes the new master\'s member', async () => {
    await lab.restart(1)
    await waitFor('host 1 to answer as a member of host 2', async () => {
      const a = await loginAnswer(1)
      assert.notEqual(a[0], 'ok', 'the old master never answers as master')
      return a[0] === 'HOST_IS_SLAVE' ? a : undefined
    }, 90_000)
    assert.deepEqual(await loginAnswer(1), ['HOST_IS_SLAVE', lab.host(2).address])
    const s = await login(2)
    const metrics = await c<string>(2, s, 'host.get_metrics', hostRef[1])
    await waitFor('host 1 live again', async () => (await c<boolean>(2, s, 'host_metrics.get_live', metrics)) || undefined, 30_000)
    await c(2, s, 'pool.add_to_other_config', pool, 'after-the-old-master-is-back', 'yes')
    // host 1 reads the new master's database
    const local = await localLogin(1)
    await waitFor('host 1 to read the pool after its return', async () => (await c<Record<string, string>>(1, local, 'pool.get_other_config', pool))['after-the-old-master-is-back'] === 'yes' || undefined, 10_000)
    assert.equal(await c(1, local, 'pool.get_master', pool), hostRef[2])
  })

  it('the master cut off while its member is made master: xe pool-recover-slaves makes it the new master\'s member', async () => {
    // host 2 is master, host 1 its member; host 2 is cut off but lives on, master of its own database
    lab.cut(2)
    try {
      await waitFor('host 1 to answer HOST_IN_EMERGENCY_MODE', async () => (await loginAnswer(1))[0] === 'HOST_IN_EMERGENCY_MODE' || undefined, 30_000)
      await xe(1, 'pool-emergency-transition-to-master')
      await waitFor('host 1 to answer as master', async () => (await loginAnswer(1))[0] === 'ok' || undefined, 60_000)
      const s = await login(1)
      await c(1, s, 'pool.add_to_other_config', pool, 'written-by-host-1-as-master', 'yes')
    } finally {
      lab.heal(2)
    }
    // two masters now: the recovery makes the other one a member
    assert.deepEqual(await loginAnswer(2), ['ok'])
    const recovered = (await xe(1, 'pool-recover-slaves')).stdout.trim().split('\n')
    const s = await login(1)
    assert.deepEqual(recovered, [await c<string>(1, s, 'host.get_uuid', hostRef[2])])
    await waitFor('host 2 to answer as a member of host 1', async () => {
      const a = await loginAnswer(2)
      return a[0] === 'HOST_IS_SLAVE' ? a : undefined
    }, 60_000)
    assert.deepEqual(await loginAnswer(2), ['HOST_IS_SLAVE', lab.host(1).address])
    const local = await localLogin(2)
    await waitFor('host 2 to read host 1\'s database', async () => (await c<Record<string, string>>(2, local, 'pool.get_other_config', pool))['written-by-host-1-as-master'] === 'yes' || undefined, 10_000)
    // a member in contact is left alone
    assert.equal((await xe(1, 'pool-recover-slaves')).stdout.trim(), '')
  })

  it('designate_new_master moves the vote to the new master: the old one dying then changes nothing for it', async () => {
    const s = await login(1)
    await c(1, s, 'pool.designate_new_master', hostRef[2])
    await waitFor('host 2 to answer as master', async () => (await loginAnswer(2))[0] === 'ok' || undefined, 60_000)
    const uuid2 = await c<string>(2, await login(2), 'host.get_uuid', hostRef[2])
    await waitFor("one voter, host 2's", () => {
      const members = lab.etcdMembers(2)
      const voters = members.filter((m) => !m.learner).map((m) => m.name)
      return (members.length === 2 && members.every((m) => m.name !== '') && voters.length === 1 && voters[0] === uuid2) || undefined
    }, 60_000)
    await lab.kill(1)
    const s2 = await login(2)
    await c(2, s2, 'pool.add_to_other_config', pool, 'written-while-1-is-down', 'yes')
    assert.equal((await c<Record<string, string>>(2, s2, 'pool.get_other_config', pool))['written-while-1-is-down'], 'yes')
  })
})
