// Accounts and sessions: the generated root password, password changes, the per-user cap,
// and the host agent's refusal of callers without the host secret.
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { call, Daemon, jsonrpc } from '../helpers/daemon.js'

const loginAs = (url: string, password: string) => jsonrpc(url, 'session.login_with_password', ['root', password])

describe('the root account', () => {
  it('gets a generated password at first start, kept readable by root only until changed', async () => {
    const daemon = new Daemon({ env: { FLOTILLA_ROOT_PASSWORD: '' } })
    try {
      await daemon.start()
      const printed = /root password[^:]*: (\S+)/.exec(daemon.output)?.[1]
      assert.ok(printed, 'the password is printed at first start')
      const file = join(daemon.dataDir, 'initial-root-password')
      assert.equal(readFileSync(file, 'utf8').trim(), printed)
      assert.equal(statSync(file).mode & 0o077, 0, 'only root can read it')
      const session = (await loginAs(daemon.url, printed)).result as string
      assert.equal((await loginAs(daemon.url, 'wrong')).error?.message, 'SESSION_AUTHENTICATION_FAILED')
      const refused = await jsonrpc(daemon.url, 'session.change_password', [session, 'not-the-old-one', 'new-secret'])
      assert.equal(refused.error?.message, 'SESSION_AUTHENTICATION_FAILED')
      await call(daemon.url, 'session.change_password', session, printed, 'new-secret')
      assert.equal((await loginAs(daemon.url, printed)).error?.message, 'SESSION_AUTHENTICATION_FAILED')
      assert.ok((await loginAs(daemon.url, 'new-secret')).result)
      assert.equal(existsSync(file), false, 'the stale initial password is gone')
      await daemon.stop()
      await daemon.start()
      assert.ok(!/root password/.test(daemon.output), 'later starts print no password')
      assert.ok((await loginAs(daemon.url, 'new-secret')).result)
    } finally {
      await daemon.dispose()
    }
  })
})

describe('sessions', () => {
  it('are capped per user, the oldest destroyed first, and know their host', async () => {
    const daemon = new Daemon({ env: { FLOTILLA_MAX_SESSIONS_PER_USER: '3' } })
    try {
      await daemon.start()
      const password = 'flotilla-test-password'
      const sessions: string[] = []
      for (let i = 0; i < 4; i++) sessions.push((await loginAs(daemon.url, password)).result as string)
      const oldest = await jsonrpc(daemon.url, 'host.get_all', [sessions[0]])
      assert.deepEqual([oldest.error?.message, ...(oldest.error?.data ?? [])], ['SESSION_INVALID', sessions[0]])
      const hosts = await call<string[]>(daemon.url, 'host.get_all', sessions[3])
      assert.deepEqual([await call(daemon.url, 'session.get_this_host', sessions[3], sessions[3])], hosts)
      assert.equal(await call(daemon.url, 'session.get_auth_user_name', sessions[3], sessions[3]), 'root')
      const twoArgs = await jsonrpc(daemon.url, 'session.login_with_password', ['root', password, '1.0', 'my-tool'])
      assert.equal(await call(daemon.url, 'session.get_originator', twoArgs.result, twoArgs.result), 'my-tool')
    } finally {
      await daemon.dispose()
    }
  })
})

describe('the host agent', () => {
  const agentCall = (socketPath: string, secret?: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request({ socketPath, path: '/call/host.facts', method: 'POST', headers: secret ? { 'x-flotilla-agent-secret': secret } : {} }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.end()
    })

  it('refuses calls without the host secret, even locally', async () => {
    const daemon = new Daemon()
    try {
      await daemon.start()
      const socket = join(daemon.dataDir, 'run', 'agent.sock')
      const { agentSecret } = JSON.parse(readFileSync(join(daemon.dataDir, 'identity.json'), 'utf8')) as { agentSecret: string }
      assert.equal(await agentCall(socket), 403)
      assert.equal(await agentCall(socket, 'x'.repeat(agentSecret.length)), 403)
      assert.equal(await agentCall(socket, agentSecret), 200)
    } finally {
      await daemon.dispose()
    }
  })
})
