// xe's pool and host commands against a stand-in host (a JSON-RPC server in the test, with a
// pool of two hosts): which XenAPI call each command sends with which arguments, its warnings and
// confirmation, and how it follows a pool member's HOST_IS_SLAVE to the master.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, beforeEach, describe, it } from 'node:test'
import { parseInvocation, run } from '../../src/cli/xe.js'
import { ROOT } from '../helpers/daemon.js'

type Rec = Record<string, unknown>

const HOSTS: Record<string, Rec> = {
  'OpaqueRef:h1': { uuid: 'uuid-h1', name_label: 'alpha', hostname: 'alpha.lan', enabled: true },
  'OpaqueRef:h2': { uuid: 'uuid-h2', name_label: 'beta', hostname: 'beta.lan', enabled: true },
}
const VMS: Record<string, Rec> = { 'OpaqueRef:vm': { uuid: 'uuid-vm', name_label: 'web', is_a_template: false, is_control_domain: false, power_state: 'Halted' } }
const POOLS: Record<string, Rec> = { 'OpaqueRef:pool': { uuid: 'uuid-pool', name_label: 'lab', name_description: '', master: 'OpaqueRef:h1', default_SR: 'OpaqueRef:NULL' } }
// beta's local SR holds one disk; the shared SR is seen by both hosts.
const PBDS: Record<string, Rec> = {
  'OpaqueRef:p1': { host: 'OpaqueRef:h2', SR: 'OpaqueRef:local' },
  'OpaqueRef:p2': { host: 'OpaqueRef:h1', SR: 'OpaqueRef:shared' },
  'OpaqueRef:p3': { host: 'OpaqueRef:h2', SR: 'OpaqueRef:shared' },
}
const VDIS: Record<string, Rec> = {
  'OpaqueRef:d1': { uuid: 'uuid-d1', name_label: 'beta-disk', SR: 'OpaqueRef:local' },
  'OpaqueRef:d2': { uuid: 'uuid-d2', name_label: 'shared-disk', SR: 'OpaqueRef:shared' },
}

interface Call {
  method: string
  params: unknown[]
}

/** A stand-in host: records every call; `answer` may answer one with an error. */
class StandIn {
  readonly calls: Call[] = []
  answer: (method: string) => { code: string; data: string[] } | undefined = () => undefined
  private server!: Server

  constructor(readonly address: string) {}

  listen(port = 0): Promise<number> {
    this.server = createServer((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => (body += c.toString()))
      req.on('end', () => {
        const { method, params, id } = JSON.parse(body) as Call & { id: number }
        this.calls.push({ method, params })
        const error = this.answer(method)
        const reply = error ? { jsonrpc: '2.0', id, error: { code: 1, message: error.code, data: error.data } } : { jsonrpc: '2.0', id, result: result(method, params) }
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify(reply))
      })
    })
    return new Promise((resolve) => this.server.listen(port, this.address, () => resolve((this.server.address() as AddressInfo).port)))
  }

  /** The calls but the session's own. */
  get sent(): Call[] {
    return this.calls.filter((c) => !c.method.startsWith('session.') && !c.method.endsWith('get_all_records') && !c.method.endsWith('get_by_uuid'))
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

function result(method: string, params: unknown[]): unknown {
  const tables: Record<string, Record<string, Rec>> = { host: HOSTS, VM: VMS, pool: POOLS, PBD: PBDS, VDI: VDIS }
  const [cls, call] = method.split('.') as [string, string]
  if (method.startsWith('session.') && method.includes('login')) return 'OpaqueRef:session'
  if (call === 'get_all_records') return tables[cls] ?? {}
  if (call === 'get_by_uuid') return Object.entries(tables[cls] ?? {}).find(([, r]) => r.uuid === params[1])?.[0]
  if (method === 'host.get_uuid') return HOSTS[String(params[1])]?.uuid
  if (method === 'pool.recover_slaves') return ['OpaqueRef:h2']
  return ''
}

const master = new StandIn('127.0.0.2')
const member = new StandIn('127.0.0.1')
let port = 0

const args = (server: StandIn, ...argv: string[]) => ['-s', server.address, '-p', String(port), '-pw', 'secret', '--nossl', ...argv]

async function xe(server: StandIn, ...argv: string[]): Promise<string> {
  const lines: string[] = []
  await run(parseInvocation(args(server, ...argv), {}, {}), (s) => lines.push(s))
  return lines.join('\n')
}

/** xe as a process, with what the user types on its terminal. */
function xeTyping(typed: string, ...argv: string[]): Promise<{ stdout: string; code: number | null }> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'xe.js'), ...args(master, ...argv)], { stdio: ['pipe', 'pipe', 'inherit'] })
  let stdout = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stdin.end(typed)
  return new Promise((resolve) => child.once('close', (code) => resolve({ stdout, code })))
}

describe('xe pool and host commands', () => {
  before(async () => {
    port = await member.listen()
    await master.listen(port)
  })
  after(async () => {
    await member.close()
    await master.close()
  })
  beforeEach(() => {
    for (const s of [master, member]) {
      s.calls.length = 0
      s.answer = () => undefined
    }
  })

  it('pool-join sends pool.join with the master and credentials, join_force with force=true', async () => {
    await xe(master, 'pool-join', 'master-address=10.0.0.1', 'master-username=root', 'master-password=pw')
    assert.deepEqual(master.sent, [{ method: 'pool.join', params: ['OpaqueRef:session', '10.0.0.1', 'root', 'pw'] }])
    master.calls.length = 0
    await xe(master, 'pool-join', 'master-address=10.0.0.1', 'master-username=root', 'master-password=pw', 'force=true')
    assert.deepEqual(master.sent, [{ method: 'pool.join_force', params: ['OpaqueRef:session', '10.0.0.1', 'root', 'pw'] }])
  })

  it('checks the required parameters before it sends anything', async () => {
    await assert.rejects(xe(master, 'pool-join', 'master-address=10.0.0.1', 'master-username=root'), /Required parameter not found: master-password/)
    await assert.rejects(xe(master, 'pool-eject'), /Required parameter not found: host-uuid/)
    assert.deepEqual(master.calls, [])
  })

  it('pool-eject warns of the local disks it will lose and ejects only after "yes"', async () => {
    const refused = await xeTyping('no\n', 'pool-eject', 'host-uuid=uuid-h2')
    assert.equal(refused.code, 0)
    assert.match(refused.stdout, /WARNING: Ejecting a host from the pool will reinitialise that host's local SRs\./)
    assert.match(refused.stdout, /The following VDI objects will be destroyed:\nVDI: uuid-d1 \(beta-disk\)\nType 'yes' to continue/)
    assert.doesNotMatch(refused.stdout, /shared-disk/)
    assert.match(refused.stdout, /Aborted \(you typed: 'no'\)/)
    assert.deepEqual(master.calls.filter((c) => c.method === 'pool.eject'), [])
    const accepted = await xeTyping('yes\n', 'pool-eject', 'host-uuid=uuid-h2')
    assert.equal(accepted.code, 0)
    assert.deepEqual(master.calls.filter((c) => c.method === 'pool.eject'), [{ method: 'pool.eject', params: ['OpaqueRef:session', 'OpaqueRef:h2'] }])
  })

  it('with --force, pool-eject, host-forget and host-declare-dead ask nothing', async () => {
    assert.equal(await xe(master, 'pool-eject', 'host-uuid=uuid-h2', '--force'), '')
    await xe(master, 'host-forget', 'uuid=uuid-h2', '--force')
    await xe(master, 'host-declare-dead', 'uuid=uuid-h2', 'force=true')
    assert.deepEqual(master.sent, [
      { method: 'pool.eject', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'host.destroy', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'host.declare_dead', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
    ])
  })

  it('host-forget prints xapi\'s warnings and forgets nothing without "yes"', async () => {
    const refused = await xeTyping('\n', 'host-forget', 'uuid=uuid-h2')
    assert.match(refused.stdout, /WARNING: A host should only be forgotten if it is physically unrecoverable;/)
    assert.deepEqual(master.calls.filter((c) => c.method === 'host.destroy'), [])
  })

  it('pool-designate-new-master and pool-recover-slaves', async () => {
    await xe(master, 'pool-designate-new-master', 'host-uuid=uuid-h2')
    assert.equal(await xe(master, 'pool-recover-slaves'), 'uuid-h2')
    assert.deepEqual(master.sent.slice(0, 2), [
      { method: 'pool.designate_new_master', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'pool.recover_slaves', params: ['OpaqueRef:session'] },
    ])
  })

  it('host-disable and host-enable take the host selectors; two hosts need --multiple', async () => {
    await assert.rejects(xe(master, 'host-disable'), /Multiple matching hosts found\. --multiple required/)
    await xe(master, 'host-disable', 'host=beta')
    await xe(master, 'host-enable', 'uuid=uuid-h2')
    await xe(master, 'host-disable', '--multiple')
    await assert.rejects(xe(master, 'host-enable', 'host=gamma'), /No matching hosts found/)
    assert.deepEqual(master.sent, [
      { method: 'host.disable', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'host.remove_from_other_config', params: ['OpaqueRef:session', 'OpaqueRef:h2', 'MAINTENANCE_MODE'] },
      { method: 'host.enable', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'host.disable', params: ['OpaqueRef:session', 'OpaqueRef:h1'] },
      { method: 'host.disable', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
    ])
  })

  it('host-shutdown and host-reboot take the host selectors too', async () => {
    await assert.rejects(xe(master, 'host-shutdown'), /Multiple matching hosts found\. --multiple required/)
    await xe(master, 'host-shutdown', 'host=beta')
    await xe(master, 'host-reboot', 'uuid=uuid-h1')
    assert.deepEqual(master.sent, [
      { method: 'host.shutdown', params: ['OpaqueRef:session', 'OpaqueRef:h2'] },
      { method: 'host.reboot', params: ['OpaqueRef:session', 'OpaqueRef:h1'] },
    ])
  })

  it('vm-start on=<host name or uuid> starts on that host; without it, VM.start', async () => {
    await xe(master, 'vm-start', 'vm=web', 'on=beta')
    await xe(master, 'vm-start', 'uuid=uuid-vm', 'on=uuid-h1')
    await xe(master, 'vm-start', 'vm=web')
    await assert.rejects(xe(master, 'vm-start', 'vm=web', 'on=gamma'), /Host gamma not found/)
    assert.deepEqual(master.sent, [
      { method: 'VM.start_on', params: ['OpaqueRef:session', 'OpaqueRef:vm', 'OpaqueRef:h2', false, false] },
      { method: 'VM.start_on', params: ['OpaqueRef:session', 'OpaqueRef:vm', 'OpaqueRef:h1', false, false] },
      { method: 'VM.start', params: ['OpaqueRef:session', 'OpaqueRef:vm', false, false] },
    ])
  })

  it('the emergency commands run on the member itself, with a session of its own', async () => {
    member.answer = (m) => (m === 'session.login_with_password' ? { code: 'HOST_IN_EMERGENCY_MODE', data: [] } : undefined)
    await xe(member, 'pool-emergency-transition-to-master')
    await xe(member, 'pool-emergency-reset-master', 'master-address=10.0.0.9')
    const methods = member.calls.map((c) => c.method).filter((m) => m !== 'session.login_with_password')
    assert.deepEqual(methods, [
      'session.slave_local_login_with_password', 'pool.emergency_transition_to_master', 'session.local_logout',
      'session.slave_local_login_with_password', 'pool.emergency_reset_master', 'session.local_logout',
    ])
    assert.deepEqual(member.sent[1]?.params, ['OpaqueRef:session', '10.0.0.9'])
    assert.deepEqual(master.calls, [])
  })

  it('pool-emergency-transition-to-master on a master does nothing without --force', async () => {
    assert.equal(await xe(master, 'pool-emergency-transition-to-master'), "Host agent is already master. Use '--force' to execute the operation anyway.")
    assert.equal(master.sent.length, 0)
    await xe(master, 'pool-emergency-transition-to-master', '--force')
    assert.deepEqual(master.sent.map((c) => c.method), ['pool.emergency_transition_to_master'])
  })

  it('follows a member\'s HOST_IS_SLAVE to the master, and says so when the master sends it on too', async () => {
    member.answer = (m) => (m === 'session.login_with_password' ? { code: 'HOST_IS_SLAVE', data: [master.address] } : undefined)
    const listed = await xe(member, 'pool-list')
    assert.match(listed, /master \( RO\)\s*: uuid-h1/)
    assert.deepEqual(member.calls.map((c) => c.method), ['session.login_with_password'])
    assert.ok(master.calls.some((c) => c.method === 'pool.get_all_records'))
    master.answer = (m) => (m === 'session.login_with_password' ? { code: 'HOST_IS_SLAVE', data: ['10.0.0.7'] } : undefined)
    await assert.rejects(xe(member, 'host-list'), /Host is a slave: the pool's master is at 10\.0\.0\.7\./)
  })

  it('host-list shows every host; xe help describes a pool command as xapi does', async () => {
    const hosts = await xe(master, 'host-list', 'params=name-label', '--minimal')
    assert.equal(hosts, 'alpha,beta')
    assert.equal(await xe(master, 'help', 'pool-join'), [
      'command name            : pool-join',
      '        reqd params     : master-address, master-username, master-password',
      '        optional params : force',
      '        description     : Instruct host to join an existing pool.',
    ].join('\n'))
  })
})
