// Xen Orchestra's own client libraries against a real daemon: scenarios 1–8 and 11 of
// reference/xo-compat.md §8, on objects that need no storage (VMs without disks, networks).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login, PASSWORD } from '../helpers/daemon.js'

// The libraries ship without types.
type XapiClient = {
  connect(): Promise<void>
  disconnect(): Promise<void>
  objectsFetched: Promise<void>
  status: string
  pool: Record<string, any>
  objects: { all: Record<string, any> }
  call<T = any>(method: string, ...args: unknown[]): Promise<T>
  callAsync<T = any>(method: string, ...args: unknown[]): Promise<T>
  getObject(refOrUuid: string): any
  waitObjectState(ref: string, predicate: (o: any) => boolean, opts?: { timeout: number }): Promise<any>
  barrier(): Promise<void>
  [k: string]: any
}

const { Xapi } = (await import('@xen-orchestra/xapi')) as { Xapi: new (opts: object) => XapiClient }

const daemon = new Daemon({ requestLog: true })
let xapi: XapiClient

const options = (url: string, extra: object = {}) => ({ url, auth: { user: 'root', password: PASSWORD }, allowUnauthorized: true, callTimeout: 30e3, eventPollDelay: 1e3, syncStackTraces: true, ...extra })

/** A disk-less VM with the fields XO's VM_create passes. */
async function createVm(name: string): Promise<string> {
  return xapi.VM_create({
    name_label: name,
    name_description: '',
    user_version: 1,
    is_a_template: false,
    memory_static_max: 256 * 2 ** 20,
    memory_dynamic_max: 256 * 2 ** 20,
    memory_dynamic_min: 256 * 2 ** 20,
    memory_static_min: 128 * 2 ** 20,
    VCPUs_max: 1,
    VCPUs_at_startup: 1,
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'restart',
    HVM_boot_policy: 'BIOS order',
    HVM_boot_params: { order: 'cd' },
    platform: {},
    other_config: {},
  })
}

const isRef = (v: unknown) => typeof v === 'string' && /^OpaqueRef:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|NULL)$/.test(v)

describe('Xen Orchestra client libraries', () => {
  before(async () => {
    await daemon.start()
    xapi = new Xapi(options(daemon.url))
    await xapi.connect()
    await xapi.objectsFetched
  })
  after(async () => {
    await xapi?.disconnect().catch(() => undefined)
    await daemon.dispose()
  })

  it('1–2: loads, connects over JSON-RPC in the order XO expects, and finds the master', async () => {
    assert.equal(xapi.status, 'connected')
    assert.equal(xapi.pool.$master.name_label.length > 0, true)
    const rpcLines = () => daemon.requests().filter((l) => l.startsWith('POST'))
    for (let i = 0; i < 100 && !rpcLines().some((l) => l.endsWith(' event.from')); i++) await new Promise((r) => setTimeout(r, 50))
    const rpc = rpcLines()
    const order = rpc.map((l) => l.split(' ')[2])
    assert.deepEqual(order.slice(0, 4), ['session.login_with_password', 'pool.get_all_records', 'system.listMethods', 'event.inject'])
    assert.ok(rpc.every((l) => l.split(' ')[1] === '/jsonrpc'), 'no XML-RPC fallback')
    assert.ok(order.includes('event.from'), 'the event loop runs')
  })

  it('3: reports XenAPI errors with xapi\'s codes and parameters', async () => {
    const bad = new Xapi(options(daemon.url, { auth: { user: 'root', password: 'wrong' } }))
    await assert.rejects(bad.connect(), (e: any) => e.code === 'SESSION_AUTHENTICATION_FAILED')
    await bad.disconnect().catch(() => undefined)
    await assert.rejects(xapi.call('VM.get_record', 'OpaqueRef:NULL'), (e: any) => e.code === 'HANDLE_INVALID' && e.params[0] === 'VM' && e.params[1] === 'OpaqueRef:NULL')
    await assert.rejects(xapi.call('VM.frobnicate', 'OpaqueRef:NULL'), (e: any) => e.code === 'MESSAGE_METHOD_UNKNOWN' && e.params[0] === 'VM.frobnicate')
    await assert.rejects(xapi.call('VM.start', 'OpaqueRef:NULL'), (e: any) => e.code === 'MESSAGE_PARAMETER_COUNT_MISMATCH' && e.params.join() === 'VM.start,3,1')
  })

  it('4: accepts Class_method names for task calls', async () => {
    const task = await xapi.call<string>('task_create', 'x', '')
    assert.ok(isRef(task))
    await xapi.call('task_set_status', task, 'cancelled')
    assert.equal(await xapi.call('task.get_status', task), 'cancelled')
    await xapi.call('task.destroy', task)
    await assert.rejects(xapi.call('task.get_record', task), (e: any) => e.code === 'HANDLE_INVALID')
  })

  it('5: every class answers get_all_records with complete, uniform records and linked refs', async () => {
    const vm = await createVm('shape')
    const network = await xapi.call<string>('network.create', { name_label: 'shape-net', name_description: '', MTU: 1500, other_config: {} })
    await xapi.VIF_create({ VM: vm, network, device: '0' })
    const methods = await xapi.call<string[]>('system.listMethods')
    const classes = methods.filter((m) => m.endsWith('.get_all_records')).map((m) => m.slice(0, -'.get_all_records'.length))
    assert.ok(classes.length >= 40)
    for (const cls of classes) {
      let records: Record<string, Record<string, unknown>>
      try {
        records = await xapi.call(`${cls}.get_all_records`)
      } catch (e: any) {
        assert.equal(e.code, 'MESSAGE_REMOVED', `${cls}.get_all_records failed with ${e.code}`)
        continue
      }
      const shapes = new Set(Object.values(records).map((r) => Object.keys(r).join(',')))
      assert.ok(shapes.size <= 1, `${cls} records differ in their fields`)
      for (const ref of Object.keys(records)) assert.ok(isRef(ref), `${cls} ref ${ref}`)
    }
    const cached = await xapi.waitObjectState(vm, (o) => o.VIFs.length === 1, { timeout: 5000 })
    assert.equal(cached.$VIFs[0].$network.name_label, 'shape-net')
    assert.match(cached.$VIFs[0].MAC, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
    assert.ok(cached.other_config.mac_seed, 'the server generated a mac_seed')
    assert.equal(xapi.pool.$master.$metrics.live, true)
  })

  it('6: streams events: updates, barriers, creation and deletion', async () => {
    const vm = await createVm('events')
    await xapi.call('VM.set_name_label', vm, 'renamed')
    await xapi.waitObjectState(vm, (o) => o.name_label === 'renamed', { timeout: 5000 })
    await xapi.barrier()
    const network = await xapi.call<string>('network.create', { name_label: 'ephemeral', name_description: '', MTU: 1500, other_config: {} })
    await xapi.waitObjectState(network, () => true, { timeout: 5000 })
    await xapi.call('network.destroy', network)
    const deadline = Date.now() + 5000
    while (xapi.objects.all[network] !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(xapi.objects.all[network], undefined, 'the deleted network left the cache')
    const session = await login(daemon.url)
    const batch = await call<{ valid_ref_counts: Record<string, number> }>(daemon.url, 'event.from', session, ['vm'], '', 0.1)
    const tasks = await call<string[]>(daemon.url, 'task.get_all', session)
    assert.equal(batch.valid_ref_counts.task, tasks.length)
    assert.equal(batch.valid_ref_counts.vm, (await call<string[]>(daemon.url, 'VM.get_all', session)).length)
  })

  it('7: map and set helpers behave as XO relies on', async () => {
    const vmRef = await createVm('maps')
    const vm = await xapi.waitObjectState(vmRef, () => true, { timeout: 5000 })
    await vm.update_other_config('k', 'v')
    await vm.update_other_config('k', 'v2')
    await xapi.waitObjectState(vmRef, (o) => o.other_config.k === 'v2', { timeout: 5000 })
    await vm.update_other_config('k', null)
    await vm.update_other_config('never-set', null)
    await vm.add_tags('t')
    const after = await xapi.waitObjectState(vmRef, (o) => o.other_config.k === undefined && o.tags.includes('t'), { timeout: 5000 })
    assert.deepEqual(after.tags, ['t'])
    await xapi.call('VM.add_to_other_config', vmRef, 'dup', '1')
    await assert.rejects(xapi.call('VM.add_to_other_config', vmRef, 'dup', '2'), (e: any) => e.code === 'MAP_DUPLICATE_KEY' && e.params.join() === `VM,other_config,${after.uuid},dup`)
    assert.equal(await xapi.call('VM.get_other_config', vmRef).then((m: any) => m.dup), '1')
  })

  it('8: runs Async calls as tasks, with results and failures, and cleans them up', async () => {
    const vm = await createVm('async')
    const clone = await xapi.callAsync<string>('VM.clone', vm, 'c')
    assert.ok(isRef(clone))
    assert.equal(await xapi.call('VM.get_name_label', clone), 'c')
    await xapi.call('VM.set_is_a_template', vm, true)
    await assert.rejects(xapi.callAsync('VM.start', vm, false, false), (e: any) => e.code === 'VM_IS_TEMPLATE' && e.params[0] === vm && e.task !== undefined)
    const tasks = await xapi.call<Record<string, any>>('task.get_all_records')
    assert.ok(!Object.values(tasks).some((t) => t.name_label === 'Async.VM.clone'), 'XO destroyed its finished tasks')
  })

  it('11: serves HTTPS with a self-signed certificate', async () => {
    const tls = new Xapi(options(daemon.httpsUrl))
    await tls.connect()
    assert.equal(tls.status, 'connected')
    await tls.disconnect()
    const strict = new Xapi(options(daemon.httpsUrl, { allowUnauthorized: false }))
    await assert.rejects(strict.connect(), (e: any) => /certificate/i.test(String(e.message ?? e.code)))
    await strict.disconnect().catch(() => undefined)
  })
})
