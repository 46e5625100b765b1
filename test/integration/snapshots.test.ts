// Snapshots, checkpoints, revert and clone on qcow2 chains of the default local SR (the tests any
// directory SR passes, in chain-suite), then through Xen Orchestra, online resizes, and a daemon
// killed in the middle of a merge.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { agentCall } from '../helpers/agent.js'
import { qcow2ChainTests, type ChainSr } from '../helpers/chain-suite.js'
import { call, Daemon, login, waitFor } from '../helpers/daemon.js'

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const MiB = 2 ** 20

describe('snapshots on qcow2 chains of the local SR', () => {
  const daemon = new Daemon()
  let where: ChainSr
  before(async () => {
    await daemon.start()
    const session = await login(daemon.url)
    const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
    const sr = await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])
    const srPath = (await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0])).path!
    where = { daemon, session, sr, srPath }
  })
  after(() => daemon.dispose())
  qcow2ChainTests(() => where)
})

describe('snapshots with Xen Orchestra, resizes, and crashes during merges', () => {
  const d = new Daemon()
  let xapi: any
  let s2: string
  const c2 = <T = any>(method: string, ...params: unknown[]) => call<T>(d.url, method, s2, ...params)

  before(async () => {
    await d.start()
    s2 = await login(d.url)
    const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => any }
    xapi = new Xapi({ url: d.url, auth: { user: 'root', password: 'flotilla-test-password' }, allowUnauthorized: true, callTimeout: 60e3, eventPollDelay: 1e3 })
    await xapi.connect()
    await xapi.objectsFetched
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await d.dispose()
  })

  it('14: snapshots, checkpoints (falling back on a halted VM), copies and reverts through XO', async () => {
    const [template] = await c2<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await xapi.callAsync('VM.clone', template, 'xo-14')
    await xapi.callAsync('VM.provision', vm)
    await xapi.call('VM.set_is_a_template', vm, false)
    const snap = await xapi.VM_snapshot(vm, { name_label: 'xo snapshot' })
    const cached = await xapi.waitObjectState(snap, (o: any) => o.VBDs.length === 1, { timeout: 10e3 })
    assert.equal(cached.is_a_snapshot, true)
    assert.equal(cached.snapshot_of, vm)
    assert.equal(cached.$VBDs[0].$VDI.snapshot_of, (await xapi.getRecord('VM', vm)).$VBDs[0].VDI)
    await xapi.waitObjectState(vm, (o: any) => o.snapshots.includes(snap), { timeout: 10e3 })
    const checkpoint = await xapi.VM_checkpoint(vm, { name_label: 'xo checkpoint' })
    assert.equal((await xapi.getRecord('VM', checkpoint)).is_a_snapshot, true, 'a halted VM gets a snapshot instead')
    const copy = await xapi.callAsync('VM.copy', vm, 'xo copy', xapi.pool.default_SR)
    assert.equal((await xapi.getRecord('VM', copy)).is_a_snapshot, false)
    await xapi.callAsync('VM.revert', snap)
    assert.equal((await xapi.getRecord('VM', vm)).parent, snap)
  })

  it('grows the disk of a running VM online', async () => {
    const [template] = await c2<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const vm = await c2<string>('VM.clone', template, 'grow')
    await c2('VM.provision', vm)
    await c2('VM.set_is_a_template', vm, false)
    const data = await c2<string>('VDI.create', { SR: await c2('pool.get_default_SR', (await c2<string[]>('pool.get_all'))[0]), virtual_size: 16 * MiB, name_label: 'grow', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c2('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    await c2('VM.start', vm, false, false)
    await c2('VDI.resize', data, 32 * MiB)
    assert.equal(await c2('VDI.get_virtual_size', data), 32 * MiB)
    await c2('VM.hard_shutdown', vm)
  })

  it('loses no data when the daemon is killed in the middle of a merge, and finishes the merge after', async () => {
    const sr = await c2<string>('pool.get_default_SR', (await c2<string[]>('pool.get_all'))[0])
    const data = await c2<string>('VDI.create', { SR: sr, virtual_size: 512 * MiB, name_label: 'crashy', type: 'user', sharable: false, read_only: false, other_config: {} })
    const upload = async (bytes: Buffer) => {
      let task = ''
      for (let attempt = 1; ; attempt++) {
        task = await c2<string>('task.create', 'upload', '')
        try {
          await (await fetch(`${d.url}/import_raw_vdi?vdi=${data}&format=raw&session_id=${s2}&task_id=${task}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-length': String(bytes.length) } })).arrayBuffer()
          break
        } catch (err) {
          // Seen under load: the upload's connection breaks (EPIPE) before any answer. Say what the task knew, and send it again.
          const known = `${String(await c2('task.get_status', task))} ${JSON.stringify(await c2('task.get_error_info', task))}`
          process.stderr.write(`upload attempt ${attempt} broke: ${String((err as Error & { cause?: Error }).cause ?? err)}; its task: ${known}\n`)
          if (attempt === 3) throw err
        }
      }
      await waitFor('upload', async () => (await c2('task.get_status', task)) !== 'pending')
      assert.equal(await c2('task.get_status', task), 'success', JSON.stringify(await c2('task.get_error_info', task)))
    }
    await upload(randomBytes(192 * MiB))
    const snap = await c2<string>('VDI.snapshot', data)
    const after = randomBytes(192 * MiB)
    await upload(after)
    await c2('VDI.destroy', snap)
    await new Promise((r) => setTimeout(r, 150))
    await d.crash(false)
    await d.start()
    s2 = await login(d.url)
    // A merge the killed daemon left running (its qemu-img goes on) holds the images for a moment.
    const got = await waitFor('the disk to be readable', async () => {
      // While the images are held the export is refused, and the refusal closes the connection.
      const res = await fetch(`${d.url}/export_raw_vdi?vdi=${data}&format=raw&session_id=${s2}`).catch(() => undefined)
      const body = res && new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0)))
      return res?.status === 200 && body!.length >= after.length ? body!.subarray(0, after.length) : undefined
    }, 60_000)
    assert.equal(sha(got), sha(after), 'the data is intact')
    const path = (await c2<Record<string, string>>('PBD.get_device_config', (await c2<string[]>('SR.get_PBDs', sr))[0])).path!
    await waitFor('the merge to finish', async () => {
      await c2('SR.scan', sr)
      const images = await agentCall<{ name: string; backing?: string }[]>(d, 'sr.tree', { path })
      const location = await c2<string>('VDI.get_location', data)
      return images.find((i) => i.name === location)?.backing === undefined
    }, 60_000)
  })
})
