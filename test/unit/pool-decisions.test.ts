// The pure decisions of pools: how many voters, which membership change comes next, what a
// joiner brings into the pool's database, and the join's checks against the master.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { nextMembershipChange, voterTarget, type Member } from '../../src/db/cluster.js'
import { objectKey } from '../../src/db/replica.js'
import { poolCpuInfo } from '../../src/xapi/cpu-levelling.js'
import { checkAgainstMaster } from '../../src/xapi/pool-join.js'
import { matchNetworks, recordsForPool, type Objects } from '../../src/xapi/pool-merge.js'

const member = (name: string, learner = false, id = name): Member => ({ id, name, peerUrls: [`https://${name}:2380`], clientUrls: [`https://${name}:2379`], learner })

describe('pool database membership', () => {
  it('1 voter for 1–2 hosts, 3 from the third host on', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 9].map(voterTarget), [1, 1, 3, 3, 3, 3])
  })

  const hostOf = (m: Member) => (m.name.startsWith('gone') ? undefined : `host-${m.name}`)
  const live = (...names: string[]) => new Set(names.map((n) => `host-${n}`))

  it('keeps a 2-host pool at one voter and promotes both learners once a third host is there', () => {
    const two = [member('a'), member('b', true)]
    assert.equal(nextMembershipChange(two, hostOf, live('a', 'b'), 2, 'host-a'), undefined)
    const three = [member('a'), member('b', true), member('c', true)]
    assert.deepEqual(nextMembershipChange(three, hostOf, live('a', 'b', 'c'), 3, 'host-a'), { kind: 'promote', member: three[1] })
    const one = [member('a'), member('b'), member('c', true)]
    assert.deepEqual(nextMembershipChange(one, hostOf, live('a', 'b', 'c'), 3, 'host-a'), { kind: 'promote', member: one[2] })
    assert.equal(nextMembershipChange([member('a'), member('b'), member('c')], hostOf, live('a', 'b', 'c'), 3, 'host-a'), undefined)
  })

  it('does not promote a learner whose host is not live, nor one that has not started', () => {
    const members = [member('a'), member('b', true), { ...member('c', true), name: '' }]
    assert.equal(nextMembershipChange(members, hostOf, live('a'), 3, 'host-a'), undefined)
  })

  it('removes the member of a host that left, a learner first, and never the last voter', () => {
    const members = [member('a'), member('gone1'), member('gone2', true)]
    assert.deepEqual(nextMembershipChange(members, hostOf, live('a'), 1, 'host-a'), { kind: 'remove', member: members[2] })
    assert.deepEqual(nextMembershipChange(members.slice(0, 2), hostOf, live('a'), 1, 'host-a'), { kind: 'remove', member: members[1] })
    assert.equal(nextMembershipChange([member('gone1')], hostOf, live(), 1, 'host-a'), undefined)
  })

  it('demotes the voter beyond the target once a 3-host pool is down to 2 hosts, never the master\'s', () => {
    const two = [member('a'), member('b')]
    assert.deepEqual(nextMembershipChange(two, hostOf, live('a', 'b'), 2, 'host-a'), { kind: 'demote', member: two[1] })
    assert.deepEqual(nextMembershipChange(two, hostOf, live('a', 'b'), 2, 'host-b'), { kind: 'demote', member: two[0] })
    // the ejected host's member goes first; a master without a vote demotes nobody
    assert.deepEqual(nextMembershipChange([...two, member('gone1')], hostOf, live('a', 'b'), 2, 'host-a'), { kind: 'remove', member: member('gone1') })
    // a master without a vote gets one first; then the other voter is demoted
    const moved = [member('b'), member('a', true)]
    assert.deepEqual(nextMembershipChange(moved, hostOf, live('a', 'b'), 2, 'host-a'), { kind: 'promote', member: moved[1] })
    assert.deepEqual(nextMembershipChange([member('b'), member('a')], hostOf, live('a', 'b'), 2, 'host-a'), { kind: 'demote', member: member('b') })
    assert.equal(nextMembershipChange([member('a'), member('b'), member('c')], hostOf, live('a', 'b', 'c'), 3, 'host-a'), undefined)
  })
})

describe('what a joiner brings into the pool', () => {
  const table = (rows: Record<string, Record<string, unknown>>) => new Map(Object.entries(rows))
  const pool: Objects = new Map([
    ['network', table({ 'net-p0': { uuid: 'p0', other_config: {} }, 'net-pi': { uuid: 'pi', other_config: { is_host_internal_management_network: 'true' } } })],
    ['PIF', table({ 'pif-p': { uuid: 'pp', device: 'eth0', network: 'net-p0', host: 'master' } })],
    ['SM', table({ 'sm-p': { uuid: 'smp', type: 'ext' } })],
  ])
  const joiner: Objects = new Map([
    ['host', table({ joiner: { uuid: 'j' } })],
    ['network', table({ 'net-j0': { uuid: 'j0', other_config: {} }, 'net-ji': { uuid: 'ji', other_config: { is_host_internal_management_network: 'true' } }, 'net-priv': { uuid: 'jp', other_config: {} } })],
    ['PIF', table({ 'pif-j': { uuid: 'pj', device: 'eth0', network: 'net-j0', host: 'joiner' } })],
    ['VM', table({ halted: { uuid: 'h', is_a_template: false, power_state: 'Halted', metrics: 'm-h' }, tmpl: { uuid: 't', is_a_template: true, is_default_template: true, metrics: 'm-t' } })],
    ['VM_metrics', table({ 'm-h': { uuid: 'mh' }, 'm-t': { uuid: 'mt' } })],
    ['VIF', table({ vif: { uuid: 'v', VM: 'halted', network: 'net-j0' }, 'vif-priv': { uuid: 'vp', VM: 'halted', network: 'net-priv' }, 'vif-t': { uuid: 'vt', VM: 'tmpl', network: 'net-ji' } })],
    ['SM', table({ 'sm-j': { uuid: 'smj', type: 'ext' }, 'sm-iso': { uuid: 'smi', type: 'iso' } })],
    ['pool', table({ 'pool-j': { uuid: 'pj' } })],
    ['session', table({ s: { uuid: 's' } })],
  ])

  it('matches the NIC network by device and the host-internal network to the pool\'s', () => {
    assert.deepEqual(Object.fromEntries(matchNetworks(joiner, pool, 'joiner')), { 'net-j0': 'net-p0', 'net-ji': 'net-pi' })
  })

  it('brings its host, halted VMs and private networks, rewrites matched networks, leaves the rest', () => {
    const out = recordsForPool(joiner, pool, 'joiner')
    const keys = new Set(out.keys())
    for (const [cls, ref] of [['host', 'joiner'], ['VM', 'halted'], ['VM_metrics', 'm-h'], ['PIF', 'pif-j'], ['network', 'net-priv'], ['VIF', 'vif'], ['VIF', 'vif-priv'], ['SM', 'sm-iso']]) assert.ok(keys.has(objectKey(cls!, ref!)), `${cls} ${ref} brought`)
    for (const [cls, ref] of [['network', 'net-j0'], ['network', 'net-ji'], ['VM', 'tmpl'], ['VM_metrics', 'm-t'], ['VIF', 'vif-t'], ['SM', 'sm-j'], ['pool', 'pool-j'], ['session', 's']]) assert.ok(!keys.has(objectKey(cls!, ref!)), `${cls} ${ref} left behind`)
    assert.equal(JSON.parse(out.get(objectKey('VIF', 'vif'))!).network, 'net-p0')
    assert.equal(JSON.parse(out.get(objectKey('PIF', 'pif-j'))!).network, 'net-p0')
    assert.equal(JSON.parse(out.get(objectKey('VIF', 'vif-priv'))!).network, 'net-priv')
  })
})

describe('the join\'s checks against the master', () => {
  const host = (uuid: string, over: Record<string, unknown> = {}) => ({
    uuid,
    API_version_major: 2,
    API_version_minor: 16,
    cpu_info: { vendor: 'GenuineIntel' },
    software_version: { platform_version: '3.1.0', product_brand: 'XCP-ng', xapi: '1.20', flotilla: '0.1.0', git_id: '', db_schema: '5.504' },
    ...over,
  })
  const pool = { ha_enabled: false }

  it('accepts a like host and refuses in xapi\'s order with xapi\'s errors', () => {
    assert.doesNotThrow(() => checkAgainstMaster(host('a'), host('b'), pool, false))
    const code = (f: () => void) => {
      try {
        f()
        return 'none'
      } catch (err) {
        return (err as { description: string[] }).description.join(' ')
      }
    }
    assert.equal(code(() => checkAgainstMaster(host('a'), host('b'), { ha_enabled: true }, false)), 'HA_IS_ENABLED')
    assert.equal(code(() => checkAgainstMaster(host('a'), host('a'), pool, false)), 'OPERATION_NOT_ALLOWED Host cannot become slave of itself')
    const otherCpu = host('b', { cpu_info: { vendor: 'AuthenticAMD' } })
    assert.equal(code(() => checkAgainstMaster(host('a'), otherCpu, pool, false)), 'HOSTS_NOT_HOMOGENEOUS CPUs differ')
    assert.equal(code(() => checkAgainstMaster(host('a'), otherCpu, pool, true)), 'none', 'join_force skips the CPU vendor')
    const newer = host('b', { software_version: { ...host('b').software_version, flotilla: '0.2.0' } })
    assert.equal(code(() => checkAgainstMaster(host('a'), newer, pool, false)), 'HOSTS_NOT_HOMOGENEOUS Software version differs')
    assert.equal(code(() => checkAgainstMaster(host('a'), host('b', { API_version_minor: 20 }), pool, true)), 'POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION 2.16 2.20')
  })
})

describe('the pool\'s CPU (pool.cpu_info)', () => {
  const host = (cpus: number, flags: string) => ({ cpu_count: String(cpus), socket_count: '1', vendor: 'GenuineIntel', features_hvm_host: flags, features_pv_host: flags })
  it('sums the hosts\' CPUs and sockets and keeps only the features every host has', () => {
    const info = poolCpuInfo('GenuineIntel', [host(4, 'fpu vme sse2 avx2 vmx'), host(2, 'fpu sse2 vmx avx512f'), host(8, 'vmx fpu sse2 avx2')])
    assert.deepEqual(info, { vendor: 'GenuineIntel', cpu_count: '14', socket_count: '3', features_hvm_host: 'fpu sse2 vmx', features_pv_host: 'fpu sse2 vmx' })
  })
  it('is the host itself in a pool of one, and falls back on the flags of hosts recorded before features', () => {
    assert.deepEqual(poolCpuInfo('AuthenticAMD', [host(2, 'fpu svm')]).features_hvm_host, 'fpu svm')
    assert.equal(poolCpuInfo('x', [{ cpu_count: '2', flags: 'a b' }, host(1, 'b c')]).features_hvm_host, 'b')
  })
})
