// Crashes and restarts: kill -9 of the daemon (with or without its etcd) during writes loses no
// acknowledged write, ref or session; tokens from before a restart answer EVENTS_LOST.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { call, callOnce, Daemon, jsonrpc, login } from '../helpers/daemon.js'

/**
 * Writes from 4 concurrent writers until stopped. For each VM it remembers the names it may
 * have now: the acknowledged one, and the one of a write in flight when the daemon died.
 */
function writeUntilStopped(url: string, session: string) {
  const acknowledged = new Map<string, string[]>()
  let running = true
  const writer = async (id: number) => {
    for (let i = 0; running; i++) {
      const name = `w${id}-${i}`
      try {
        const ref = await callOnce<string>(url, 'VM.create', session, { name_label: name })
        acknowledged.set(ref, [name, `${name}-renamed`])
        await callOnce(url, 'VM.set_name_label', session, ref, `${name}-renamed`)
        acknowledged.set(ref, [`${name}-renamed`])
      } catch {
        return
      }
    }
  }
  const done = Promise.all([0, 1, 2, 3].map(writer))
  return { acknowledged, stop: () => ((running = false), done) }
}

for (const alsoEtcd of [true, false]) {
  describe(`kill -9 of the daemon${alsoEtcd ? ' and its etcd' : ''} during writes`, () => {
    it('keeps every acknowledged write, ref and session', async () => {
      const daemon = new Daemon()
      try {
        await daemon.start()
        const session = await login(daemon.url)
        const pool = await call<string[]>(daemon.url, 'pool.get_all', session)
        const host = await call<string[]>(daemon.url, 'host.get_all', session)
        const load = writeUntilStopped(daemon.url, session)
        while (load.acknowledged.size < 30) await new Promise((r) => setTimeout(r, 20))
        await daemon.crash(alsoEtcd)
        await load.stop()
        await daemon.start()
        assert.deepEqual(await call(daemon.url, 'pool.get_all', session), pool, 'the session and the pool ref survive')
        assert.deepEqual(await call(daemon.url, 'host.get_all', session), host)
        const records = await call<Record<string, { name_label: string }>>(daemon.url, 'VM.get_all_records', session)
        for (const [ref, names] of load.acknowledged) assert.ok(names.includes(String(records[ref]?.name_label)), `acknowledged write to ${ref}: ${records[ref]?.name_label} not in ${names}`)
      } finally {
        await daemon.dispose()
      }
    })
  })
}

describe('a clean restart', () => {
  it('keeps sessions and refs, and answers EVENTS_LOST for tokens older than what it still knows', async () => {
    const daemon = new Daemon()
    try {
      await daemon.start()
      const session = await login(daemon.url)
      const vm = await call<string>(daemon.url, 'VM.create', session, { name_label: 'before' })
      const doomed = await call<string>(daemon.url, 'VM.create', session, { name_label: 'doomed' })
      const { token } = await call<{ token: string }>(daemon.url, 'event.from', session, ['vm'], '', 1)
      await call(daemon.url, 'VM.destroy', session, doomed)
      await daemon.stop()
      await daemon.start()
      assert.equal(await call(daemon.url, 'VM.get_name_label', session, vm), 'before')
      const stale = await jsonrpc(daemon.url, 'event.from', [session, ['vm'], token, 1])
      assert.equal(stale.error?.message, 'EVENTS_LOST')
    } finally {
      await daemon.dispose()
    }
  })
})
