// A lab of three hosts on this machine (test/helpers/lab.ts, scripts/lab-pool.sh): each host
// answers the XenAPI at its own address from the root namespace and runs its VMs inside its own
// namespace; a host can be cut off and healed, powered off and restarted on its data; down()
// leaves nothing behind.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { alive } from '../../src/lib/process.js'
import { call, waitFor } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'
import { Lab } from '../helpers/lab.js'

const IP = 'ip'
let lab: Lab

const loginTo = (url: string) => call<string>(url, 'session.login_with_password', 'root', lab.password)

/** Whether anything answers HTTP at `url` within 2 s. */
async function answers(url: string): Promise<boolean> {
  try {
    await fetch(`${url}/`, { signal: AbortSignal.timeout(2000) })
    return true
  } catch {
    return false
  }
}

/** From host `from`'s namespace: whether host `to` answers HTTP within 2 s. */
function peerAnswers(from: number, to: number): boolean {
  try {
    lab.exec(from, 'curl', ['-sS', '-m', '2', '-o', '/dev/null', lab.host(to).url])
    return true
  } catch {
    return false
  }
}

describe('a lab of three hosts', () => {
  /** The QEMU of the VM on host 2, left running for down() to stop. */
  let qemuOnHost2: number | undefined

  before(async () => {
    lab = await Lab.up(3)
  })
  after(() => lab?.down())

  it('each host answers the XenAPI at its own address, as a standalone pool', async () => {
    const uuids = new Set<string>()
    for (const h of lab.hosts) {
      const s = await loginTo(h.url)
      const hosts = await call<string[]>(h.url, 'host.get_all', s)
      assert.equal(hosts.length, 1)
      assert.equal(await call(h.url, 'host.get_address', s, hosts[0]), h.address)
      assert.equal(await call(h.url, 'host.get_hostname', s, hosts[0]), h.hostname)
      const pools = await call<string[]>(h.url, 'pool.get_all', s)
      assert.equal(pools.length, 1)
      assert.equal(await call(h.url, 'pool.get_master', s, pools[0]), hosts[0])
      uuids.add(await call<string>(h.url, 'host.get_uuid', s, hosts[0]))
      // its daemon and its etcd run inside its namespace
      assert.ok(h.pids().includes(h.daemonPid!), `daemon of ${h.hostname} in ${h.netns}`)
      assert.ok(h.pids().includes(h.etcdPid!), `etcd of ${h.hostname} in ${h.netns}`)
    }
    assert.equal(uuids.size, 3)
  })

  it("a VM started on host 2 runs its QEMU inside host 2's namespace", async () => {
    const h = lab.host(2)
    const s = await loginTo(h.url)
    const vm = await newGuest(h.url, s, 'lab guest')
    await call(h.url, 'VM.start', s, vm.ref, false, false)
    qemuOnHost2 = h.daemon.qemuPid(vm.uuid)
    assert.ok(qemuOnHost2)
    assert.equal(execFileSync(IP, ['netns', 'identify', String(qemuOnHost2)], { encoding: 'utf8' }).trim(), h.netns)
  })

  it('cut(2) makes host 2 unreachable while hosts 1 and 3 answer, and heal(2) restores it', async () => {
    lab.cut(2)
    try {
      assert.equal(await answers(lab.host(2).url), false)
      for (const i of [1, 3]) await loginTo(lab.host(i).url)
      // cut off from the other hosts too, which still reach each other
      assert.equal(peerAnswers(1, 2), false)
      assert.equal(peerAnswers(1, 3), true)
    } finally {
      lab.heal(2)
    }
    await waitFor('host 2 to answer again', async () => (await answers(lab.host(2).url)) || undefined)
    await loginTo(lab.host(2).url)
    assert.equal(peerAnswers(3, 2), true)
  })

  it('kill(3) leaves no process in its namespace, and restart(3) brings it back with its data', async () => {
    const h = lab.host(3)
    let s = await loginTo(h.url)
    const [pool] = await call<string[]>(h.url, 'pool.get_all', s)
    const [host] = await call<string[]>(h.url, 'host.get_all', s)
    await call(h.url, 'pool.set_name_label', s, pool, 'the pool of host 3')
    const running = h.pids()
    assert.ok(running.length >= 2, 'a daemon and its etcd')

    await lab.kill(3)
    assert.deepEqual(h.pids(), [])
    assert.deepEqual(running.filter(alive), [])
    assert.equal(await answers(h.url), false)

    await lab.restart(3)
    s = await loginTo(h.url)
    assert.equal(await call(h.url, 'pool.get_name_label', s, pool), 'the pool of host 3')
    assert.deepEqual(await call(h.url, 'host.get_all', s), [host])
    assert.ok(h.pids().includes(h.daemonPid!))
  })

  it('down() leaves no namespace, veth, bridge, process or file behind', async () => {
    const pids = lab.hosts.flatMap((h) => h.pids())
    assert.ok(qemuOnHost2 && pids.includes(qemuOnHost2), 'the VM on host 2 still runs')
    lab.down()
    const namespaces = execFileSync(IP, ['netns', 'list'], { encoding: 'utf8' })
    // the switch's namespace held the bridge; each host's namespace its veth and the daemon's bridges
    assert.deepEqual(lab.namespaces.filter((ns) => namespaces.includes(ns)), [])
    const links = execFileSync(IP, ['-o', 'link', 'show'], { encoding: 'utf8' })
    assert.equal(links.includes(`: ${lab.rootLink}@`), false, 'the root end of the switch veth')
    assert.equal(existsSync(lab.dir), false)
    assert.equal(Lab.list().some((l) => l.number === lab.number), false)
    await waitFor('every process of the lab to be reaped', () => pids.every((pid) => !alive(pid)) || undefined)
  })
})
