// task.cancel as xapi's: the cancel is noted on the task, its work is interrupted, and the task
// ends cancelled once the work gave up. The work here is VDI.copy from the sim host's local SR to
// a member's local SR: the disk streams into the member's agent (a stand-in that holds the stream
// open, as a slow host would), so the copy is still running when the cancel comes.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Readable } from 'node:stream'
import type { AgentStream } from '../../src/agent/contract.js'
import { startSimHost, XapiCallError, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
let member: string
let memberSr: string
let localSr: string
const MiB = 2 ** 20

const c = <T = any>(method: string, ...params: unknown[]) => host.c<T>(method, ...params)

/** What the member's stand-in agent was asked. */
const asked: { created: string[]; destroyed: string[]; importStarted?: () => void } = { created: [], destroyed: [] }

/** The member's agent: it makes and removes images, and takes an import in without ever finishing it. */
const memberAgent = {
  async call(method: string, args: { location?: string }) {
    if (method === 'vdi.create') {
      const location = `made-${asked.created.length}`
      asked.created.push(location)
      return { location, virtualSize: 16 * MiB, physicalUtilisation: 0, format: 'qcow2' }
    }
    if (method === 'vdi.destroy') return void asked.destroyed.push(String(args.location))
    throw new Error(`the member's agent was not expected to be asked ${method}`)
  },
  stream(name: string, _args: unknown, body?: Readable): Promise<AgentStream> {
    if (name !== 'vdi.import' || !body) return Promise.reject(new Error(`unexpected stream ${name}`))
    asked.importStarted?.()
    // Reads nothing: the source waits on it, until the stream is dropped.
    return new Promise((_resolve, reject) => body.once('close', () => reject(new Error('the import stream was cut'))))
  },
}

/** The task's status once it is no longer pending, or 'pending' if it still is after 10 s. */
async function taskEnd(task: string): Promise<string> {
  for (const deadline = Date.now() + 10_000; ; ) {
    const status = await c<string>('task.get_status', task)
    if (status !== 'pending' || Date.now() > deadline) return status
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('task.cancel', () => {
  before(async () => {
    host = await startSimHost()
    localSr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
    ;({ member, memberSr } = await host.db.transact((tx) => {
      const metrics = tx.create('host_metrics', { live: true, memory_total: 4096 * MiB, memory_free: 4096 * MiB })
      const ref = tx.create('host', { name_label: 'member', hostname: 'member', address: '192.0.2.11', enabled: true, metrics })
      const sr = tx.create('SR', { name_label: "member's local storage", type: 'ext', content_type: 'user' })
      tx.create('PBD', { host: ref, SR: sr, device_config: { path: '/member/sr' }, currently_attached: true })
      return { member: ref, memberSr: sr }
    }))
    const own = host.svc.agentFor
    ;(host.svc as { agentFor: typeof own }).agentFor = (h) => (h === member ? (memberAgent as unknown as ReturnType<typeof own>) : own(h))
  })
  after(() => host?.dispose())

  it("stops a disk copy streaming to another host: the task ends cancelled, the member's new image is removed, no VDI is left", async () => {
    const vdi = await c<string>('VDI.create', { SR: localSr, virtual_size: 16 * MiB, name_label: 'to copy', type: 'user', sharable: false, read_only: false, other_config: {} })
    const vdisBefore = (await c<string[]>('SR.get_VDIs', memberSr)).length
    const started = new Promise<void>((resolve) => (asked.importStarted = resolve))
    const task = await c<string>('Async.VDI.copy', vdi, memberSr)
    await started
    assert.equal(await c('task.get_resident_on', task), member, 'the task names the host its work went to')
    await c('task.cancel', task)
    const end = await taskEnd(task)
    assert.equal(end, 'cancelled')
    assert.deepEqual(await c('task.get_error_info', task), ['TASK_CANCELLED', task])
    assert.deepEqual(asked.destroyed, asked.created, "the member's new image is removed")
    assert.equal((await c<string[]>('SR.get_VDIs', memberSr)).length, vdisBefore)
    // A finished task is cancelled no more.
    await assert.rejects(c('task.cancel', task), (e: XapiCallError) => e.description[0] === 'OPERATION_NOT_ALLOWED')
  })

  it('notes the cancel on a task nothing here runs (task.create), for its owner to act on', async () => {
    const task = await c<string>('task.create', 'a client task', '')
    await c('task.cancel', task)
    assert.equal(await c('task.get_status', task), 'pending')
    assert.deepEqual(Object.values(await c<Record<string, string>>('task.get_current_operations', task)), ['cancel'])
    await c('task.destroy', task)
  })
})
