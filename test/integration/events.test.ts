// event.from, event.inject and the legacy event queue, over JSON-RPC against a real daemon.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, jsonrpc, login } from '../helpers/daemon.js'

interface Batch {
  events: { id: string; class: string; operation: string; ref: string; snapshot?: Record<string, any> }[]
  valid_ref_counts: Record<string, number>
  token: string
}

const daemon = new Daemon()
let url: string
let session: string

const from = (classes: string[], token: string, timeout = 5) => call<Batch>(url, 'event.from', session, classes, token, timeout)
const newVm = (name: string) => call<string>(url, 'VM.create', session, { name_label: name })
const newNetwork = (name: string) => call<string>(url, 'network.create', session, { name_label: name, name_description: '', MTU: 1500, other_config: {} })

describe('events', () => {
  before(async () => {
    await daemon.start()
    url = daemon.url
    session = await login(url)
  })
  after(() => daemon.dispose())

  it('dumps everything as add events for an empty token, with counts for every class', async () => {
    const vm = await newVm('dump')
    const batch = await from(['*'], '')
    assert.match(batch.token, /^\d{20},\d{20}$/)
    const add = batch.events.find((e) => e.ref === vm)
    assert.equal(add?.operation, 'add')
    assert.equal(add?.class, 'vm')
    assert.equal(add?.snapshot?.name_label, 'dump')
    assert.ok(batch.events.every((e) => e.class !== 'session'), 'sessions make no events')
    assert.equal(typeof batch.valid_ref_counts.task, 'number')
    assert.equal(batch.valid_ref_counts.host, 1)
  })

  it('reports a ref change as mod events on both sides of the relation', async () => {
    const vm = await newVm('linked')
    const network = await newNetwork('linked-net')
    const { token } = await from(['VM', 'network', 'VIF'], '')
    const vif = await call<string>(url, 'VIF.create', session, { VM: vm, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    const batch = await from(['VM', 'network', 'VIF'], token)
    const byRef = new Map(batch.events.map((e) => [e.ref, e]))
    assert.equal(byRef.get(vif)?.operation, 'add')
    assert.equal(byRef.get(vm)?.operation, 'mod')
    assert.deepEqual(byRef.get(vm)?.snapshot?.VIFs, [vif])
    assert.equal(byRef.get(network)?.operation, 'mod')
    assert.deepEqual(byRef.get(network)?.snapshot?.VIFs, [vif])
  })

  it('reports deletions without a snapshot, and matches class names in any case', async () => {
    const network = await newNetwork('doomed')
    const { token } = await from(['NETWORK'], '')
    await call(url, 'network.destroy', session, network)
    const batch = await from(['NeTwOrK'], token)
    const del = batch.events.find((e) => e.ref === network)
    assert.equal(del?.operation, 'del')
    assert.equal(del?.class, 'network')
    assert.equal(del?.snapshot, undefined)
  })

  it('blocks until a change arrives, and returns an empty batch on timeout', async () => {
    const vm = await newVm('waiting')
    const { token } = await from(['VM'], '')
    const empty = await from(['VM'], token, 0.2)
    assert.deepEqual(empty.events, [])
    const started = Date.now()
    const pending = from([`VM/${vm}`], empty.token, 30)
    setTimeout(() => void call(url, 'VM.set_name_label', session, vm, 'woken'), 200)
    const batch = await pending
    assert.ok(Date.now() - started < 10_000)
    assert.equal(batch.events.length, 1)
    assert.equal(batch.events[0]?.snapshot?.name_label, 'woken')
  })

  it('event.inject returns a token from which that object is reported', async () => {
    const pool = (await call<string[]>(url, 'pool.get_all', session))[0]!
    const token = await call<string>(url, 'event.inject', session, 'pool', pool)
    const batch = await from(['pool'], token, 1)
    assert.equal(batch.events.find((e) => e.ref === pool)?.operation, 'mod')
    const bad = await jsonrpc(url, 'event.inject', [session, 'VM', pool])
    assert.deepEqual([bad.error?.message, ...(bad.error?.data ?? [])], ['HANDLE_INVALID', 'VM', pool])
    const unparsable = await jsonrpc(url, 'event.from', [session, ['vm'], 'not-a-token', 1.0])
    assert.equal(unparsable.error?.message, 'EVENT_FROM_TOKEN_PARSE_FAILURE')
  })

  it('wakes a pending event.from with SESSION_INVALID when its session logs out', async () => {
    const other = await login(url)
    const { token } = await call<Batch>(url, 'event.from', other, ['vm'], '', 1)
    const started = Date.now()
    const pending = jsonrpc(url, 'event.from', [other, ['vm'], token, 60])
    await new Promise((r) => setTimeout(r, 200))
    await call(url, 'session.logout', other)
    const res = await pending
    assert.equal(res.error?.message, 'SESSION_INVALID')
    assert.ok(Date.now() - started < 5000)
  })

  it('serves the legacy register/next/unregister queue', async () => {
    const other = await login(url)
    const notRegistered = await jsonrpc(url, 'event.next', [other])
    assert.deepEqual([notRegistered.error?.message, ...(notRegistered.error?.data ?? [])], ['SESSION_NOT_REGISTERED', other])
    await call(url, 'event.register', other, ['vm'])
    const vm = await newVm('legacy')
    const events = await call<Batch['events']>(url, 'event.next', other)
    const add = events.find((e) => e.ref === vm)
    assert.equal(add?.operation, 'add')
    assert.equal(add?.snapshot?.name_label, 'legacy')
    await call(url, 'VM.destroy', session, vm)
    const next = await call<Batch['events']>(url, 'event.next', other)
    const del = next.find((e) => e.ref === vm)
    assert.equal(del?.operation, 'del')
    assert.equal(del?.snapshot?.name_label, 'legacy', 'legacy deletions carry the last record')
    await call(url, 'event.unregister', other, ['vm'])
    assert.equal(typeof (await call<number>(url, 'event.get_current_id', other)), 'number')
  })
})
