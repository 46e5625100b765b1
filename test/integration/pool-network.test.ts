// Networks that span hosts, on a lab pool of three (each host a network namespace whose eth0 is
// on one switch, lab.ts): every host's management PIF is in the pool network of eth0, its NIC in
// that network's bridge on its host with the host's address moved onto the bridge; test guests
// started by the master on two members see each other on that network (the guest pings ff02::1
// and prints its neighbours), also after a member's daemon restarts; network.create makes the
// bridge on every host; PIF.unplug and the VLAN calls refuse as xapi does (a kernel without
// 802.1Q, as here, refuses a VLAN and nothing changes).
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { call, jsonrpc, ROOT, waitFor } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'
import { Lab } from '../helpers/lab.js'
import { bridgeName } from '../../src/net/bridge.js'

let lab: Lab
let s: string
const login = (i: number) => call<string>(lab.host(i).url, 'session.login_with_password', 'root', lab.password)
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(lab.host(1).url, method, s, ...params)
const failure = async (method: string, ...params: unknown[]) => {
  const r = await jsonrpc(lab.host(1).url, method, [s, ...params])
  return r.error ? [r.error.message, ...r.error.data] : ['ok']
}
const run = promisify(execFile)
/** xe against the master, as an administrator runs it. */
const xe = (...args: string[]) => run(process.execPath, [join(ROOT, 'bin', 'xe.js'), '-s', lab.host(1).address, '-u', 'root', '-pw', lab.password, ...args], { timeout: 60_000 })
/** Host i's links as `ip -j addr` lists them inside its namespace. */
const links = (i: number) => JSON.parse(execFileSync('ip', ['-n', lab.host(i).netns, '-j', 'addr', 'show'], { encoding: 'utf8' })) as { ifname: string; master?: string; address: string; addr_info: { local: string }[] }[]
/** The lab hosts that have a VLAN 5 device on eth0. */
const vlanDevices = () => [1, 2, 3].filter((i) => links(i).some((l) => l.ifname === 'eth0.5'))
const hostUuid = (i: number) => (JSON.parse(readFileSync(`${lab.host(i).dataDir}/identity.json`, 'utf8')) as { hostUuid: string }).hostUuid

/** The IPv6 link-local address a guest derives from its MAC (EUI-64), as `ip` prints it. */
function linkLocal(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16))
  const group = (hi: number, lo: number) => ((hi << 8) | lo).toString(16)
  return `fe80::${group(b[0]! ^ 2, b[1]!)}:${group(b[2]!, 0xff)}:${group(0xfe, b[3]!)}:${group(b[4]!, b[5]!)}`
}

describe('a pool network across hosts', () => {
  /** The guests made on hosts 2 and 3 before they join (their disks are on those hosts' local SRs). */
  const guests: { host: number; ref: string; uuid: string; mac?: string }[] = []
  const hostRefs = new Map<number, string>()
  let eth0Network: string

  before(async () => {
    lab = await Lab.up(3)
    for (const i of [2, 3]) guests.push({ host: i, ...(await newGuest(lab.host(i).url, await login(i), `guest of host ${i}`)) })
    await lab.join(2)
    await lab.join(3)
    s = await login(1)
    for (const h of await c<string[]>('host.get_all')) {
      const address = await c<string>('host.get_address', h)
      hostRefs.set([1, 2, 3].find((i) => lab.host(i).address === address)!, h)
    }
    for (const h of hostRefs.values()) await waitFor('every host live', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', h))) || undefined, 90_000)
  })
  afterEach((t) => lab?.reportFailure(t))
  after(() => lab?.down())

  it('every host has a management PIF for eth0 with its address, all in one pool network, with real metrics', async () => {
    const pifs = Object.values(await c<Record<string, any>>('PIF.get_all_records')).filter((p) => p.device === 'eth0')
    assert.equal(pifs.length, 3)
    assert.equal(new Set(pifs.map((p) => p.network)).size, 1, 'the joiners\' eth0 networks became the pool\'s')
    eth0Network = pifs[0].network
    assert.equal(await c('network.get_name_label', eth0Network), 'Pool-wide network associated with eth0')
    for (const [i, host] of hostRefs) {
      const pif = pifs.find((p) => p.host === host)!
      assert.equal(pif.management, true)
      assert.equal(pif.currently_attached, true)
      assert.equal(pif.IP, lab.host(i).address, 'the PIF keeps the address its bridge now carries')
      assert.equal(pif.MAC, links(i).find((l) => l.ifname === 'eth0')!.address)
      const metrics = await c('PIF_metrics.get_record', pif.metrics)
      assert.equal(metrics.carrier, true)
      // In the host: eth0 is a port of the network's bridge, which has eth0's MAC and the host's address.
      const bridge = bridgeName(hostUuid(i), await c<string>('network.get_uuid', eth0Network))
      const eth0 = links(i).find((l) => l.ifname === 'eth0')!
      assert.equal(eth0.master, bridge)
      const br = links(i).find((l) => l.ifname === bridge)!
      assert.equal(br.address, eth0.address)
      assert.ok(br.addr_info.some((a) => a.local === lab.host(i).address), `host ${i}'s address is on ${bridge}`)
      assert.equal(links(i).filter((l) => l.addr_info.some((a) => a.local === lab.host(i).address)).length, 1, 'on that bridge alone')
      // The bridge its standalone start made for its own eth0 network went with the move.
      assert.equal(links(i).filter((l) => l.ifname.startsWith(`f${hostUuid(i).replace(/-/g, '').slice(0, 6)}`) && l.master === undefined && l.address === eth0.address).length, 1)
    }
  })

  it('guests started by the master on hosts 2 and 3 see each other on that network', async () => {
    for (const g of guests) {
      const vif = await c<string>('VIF.create', { VM: g.ref, network: eth0Network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
      g.mac = await c<string>('VIF.get_MAC', vif)
    }
    for (const g of guests) await c('VM.start_on', g.ref, hostRefs.get(g.host), false, false)
    const started = Date.now()
    const [a, b] = guests as [(typeof guests)[0], (typeof guests)[0]]
    const serial = (g: typeof a) => lab.host(g.host).daemon.serial(g.uuid)
    await waitFor('the guest on host 2 to see the one on host 3', () => serial(a).includes(linkLocal(b.mac!)), 120_000)
    const aSees = Date.now() - started
    await waitFor('the guest on host 3 to see the one on host 2', () => serial(b).includes(linkLocal(a.mac!)), 120_000)
    process.stderr.write(`guests on hosts 2 and 3 saw each other ${aSees} / ${Date.now() - started} ms after VM.start_on\n`)
    assert.match(serial(a), /FLOTILLA net eth0 mac=\S+ neighbours=.*fe80::/)
  })

  it('PIF.unplug of a management PIF is PIF_IS_MANAGEMENT_INTERFACE, and changes nothing', async () => {
    const [pif] = await c<string[]>('network.get_PIFs', eth0Network)
    assert.deepEqual(await failure('PIF.unplug', pif), ['PIF_IS_MANAGEMENT_INTERFACE', pif])
    const viaXe = await xe('pif-unplug', `uuid=${await c<string>('PIF.get_uuid', pif)}`).then(() => '', (err: { stderr: string }) => err.stderr)
    assert.match(viaXe, /PIF_IS_MANAGEMENT_INTERFACE/)
    assert.equal(await c('PIF.get_currently_attached', pif), true)
    await c('PIF.plug', pif) // plugged already: nothing to do
  })

  it('a member restarted keeps its eth0 PIF as it was (no PIF for the bridge), eth0 bridged, its guest on the wire', async () => {
    const host3 = hostRefs.get(3)!
    const before = await c<string[]>('host.get_PIFs', host3)
    const g = guests.find((x) => x.host === 3)!
    await lab.host(3).daemon.stop()
    await lab.host(3).daemon.start()
    await waitFor('host 3 live again', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', host3))) || undefined, 90_000)
    assert.deepEqual(await c('host.get_PIFs', host3), before)
    const pif = await c('PIF.get_record', before[0])
    assert.deepEqual([pif.device, pif.management, pif.currently_attached, pif.IP], ['eth0', true, true, lab.host(3).address])
    assert.equal(links(3).find((l) => l.ifname === 'eth0')!.master, bridgeName(hostUuid(3), await c<string>('network.get_uuid', eth0Network)))
    assert.equal(await c('VM.get_power_state', g.ref), 'Running')
    const other = guests.find((x) => x.host === 2)!
    const seen = lab.host(3).daemon.serial(g.uuid).length
    await waitFor('the guest on host 3 to see the other again after the restart', () => lab.host(3).daemon.serial(g.uuid).slice(seen).includes(linkLocal(other.mac!)), 60_000)
  })

  /** The VLAN network made on every host, or why there is none. */
  let vlan: { network: string } | { refused: string } | undefined

  it('pool.create_VLAN_from_PIF makes the VLAN on every host, or refuses and changes nothing where the kernel has no 802.1Q', async () => {
    const [pif] = await c<string[]>('network.get_PIFs', eth0Network)
    const vlanNet = await c<string>('network.create', { name_label: 'VLAN 5', name_description: '', MTU: 1500, other_config: {} })
    const pifsBefore = (await c<string[]>('PIF.get_all')).length
    // As an administrator asks for it: xe pool-vlan-create.
    const made = await xe('pool-vlan-create', `pif-uuid=${await c<string>('PIF.get_uuid', pif)}`, 'vlan=5', `network-uuid=${await c<string>('network.get_uuid', vlanNet)}`).then(
      (r) => ({ pifs: r.stdout.trim().split('\n') }),
      (err: { stderr: string }) => ({ refused: err.stderr }),
    )
    if ('refused' in made) {
      assert.match(made.refused, /OPERATION_NOT_ALLOWED[^]*802\.1Q/)
      assert.deepEqual(await c('VLAN.get_all'), [])
      assert.equal((await c<string[]>('PIF.get_all')).length, pifsBefore)
      assert.deepEqual(await c('network.get_PIFs', vlanNet), [])
      assert.deepEqual(vlanDevices(), [])
      await c('network.destroy', vlanNet)
      vlan = { refused: made.refused.trim().split('\n').at(-1)!.trim() }
      return
    }
    assert.equal(made.pifs.length, 3)
    assert.equal((await c<string[]>('VLAN.get_all')).length, 3)
    assert.deepEqual(vlanDevices(), [1, 2, 3])
    vlan = { network: vlanNet }
  })

  it('guests moved to the VLAN network see each other there', async (t) => {
    if (!vlan || 'refused' in vlan) return t.skip(`no VLAN to carry traffic: ${vlan && 'refused' in vlan ? vlan.refused : 'none made'}`)
    for (const g of guests) for (const vif of await c<string[]>('VM.get_VIFs', g.ref)) await c('VIF.move', vif, vlan.network)
    const [a, b] = guests as [(typeof guests)[0], (typeof guests)[0]]
    const seen = lab.host(a.host).daemon.serial(a.uuid).length
    await waitFor('the guest on host 2 to see the one on host 3 on the VLAN', () => lab.host(a.host).daemon.serial(a.uuid).slice(seen).includes(linkLocal(b.mac!)), 60_000)
    for (const g of guests) for (const vif of await c<string[]>('VM.get_VIFs', g.ref)) await c('VIF.move', vif, eth0Network)
    for (const v of await c<string[]>('VLAN.get_all')) await c('VLAN.destroy', v)
    assert.deepEqual(vlanDevices(), [])
    await c('network.destroy', vlan.network)
  })

  it('network.create makes the bridge on every host, network.destroy removes them', async () => {
    const net = await c<string>('network.create', { name_label: 'spanning', name_description: '', MTU: 1500, other_config: {} })
    const uuid = await c<string>('network.get_uuid', net)
    for (const i of [1, 2, 3]) assert.ok(links(i).some((l) => l.ifname === bridgeName(hostUuid(i), uuid)), `the bridge on host ${i}`)
    await c('network.destroy', net)
    for (const i of [1, 2, 3]) assert.ok(!links(i).some((l) => l.ifname === bridgeName(hostUuid(i), uuid)), `no bridge left on host ${i}`)
  })
})
