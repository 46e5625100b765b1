import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { buildRecord } from '../../src/idl/index.js'
import type { VMRecord } from '../../src/idl/records.js'
import { allowedVmOperations, vmOperationError } from '../../src/xapi/vm-ops.js'
import { evaluateWhere, parseWhere } from '../../src/xapi/where.js'
import { macFromSeed } from '../../src/xapi/vif.js'
import { formatToken, parseToken, subscription } from '../../src/xapi/event.js'
import { kvmUsable, parseCpuinfo, parseMeminfo } from '../../src/agent/facts.js'
import { defaultRouteInterface } from '../../src/daemon/address.js'
import { etcdArgs } from '../../src/daemon/etcd.js'

const vm = (fields: Partial<VMRecord>) => buildRecord('VM', fields)

describe('VM operation checks', () => {
  it('follow xapi\'s order: blocked, power state, other operations, template, snapshot', () => {
    assert.equal(vmOperationError('r', vm({ blocked_operations: { start: 'backup' } }), 'start')?.description.join(), 'OPERATION_BLOCKED,r,backup')
    assert.equal(vmOperationError('r', vm({ power_state: 'Running' }), 'start')?.description.join(), 'VM_BAD_POWER_STATE,r,halted,running')
    assert.equal(vmOperationError('r', vm({ power_state: 'Running' }), 'destroy')?.description.join(), 'VM_BAD_POWER_STATE,r,halted, suspended,running')
    assert.equal(vmOperationError('r', vm({ current_operations: { t1: 'clean_shutdown' } }), 'start')?.description.join(), 'OTHER_OPERATION_IN_PROGRESS,VM,r,clean_shutdown,t1')
    assert.equal(vmOperationError('r', vm({ current_operations: { t1: 'clone' } }), 'copy'), undefined)
    assert.equal(vmOperationError('r', vm({ is_a_template: true }), 'start')?.description.join(), 'VM_IS_TEMPLATE,r,start')
    assert.equal(vmOperationError('r', vm({ is_a_template: true, is_a_snapshot: true }), 'start')?.code, 'VM_IS_SNAPSHOT')
    assert.equal(vmOperationError('r', vm({}), 'revert')?.code, 'REVERT_ONLY_ALLOWED_ON_SNAPSHOT')
  })

  it('list allowed operations without the ones xapi never advertises', () => {
    const ops = allowedVmOperations('r', vm({}))
    assert.ok(ops.includes('start') && ops.includes('clone') && ops.includes('destroy'))
    assert.ok(!ops.includes('clean_shutdown') && !ops.includes('changing_VCPUs'))
  })
})

describe('get_all_records_where filters', () => {
  it('evaluate xapi\'s expression language on database column names', () => {
    const rec = { name_label: 'web', power_state: 'Running', is_a_template: false }
    assert.equal(evaluateWhere(parseWhere('field "name__label" = "web" and field "is_a_template" = "false"'), rec), true)
    assert.equal(evaluateWhere(parseWhere('not (field "power_state" = "Running") or false'), rec), false)
    assert.equal(evaluateWhere(parseWhere('true'), rec), true)
    assert.throws(() => parseWhere('field "x" = '), /INVALID_VALUE/)
  })
})

describe('events', () => {
  it('format and parse xapi-shaped tokens', () => {
    assert.equal(formatToken(42), '00000000000000000042,00000000000000000000')
    assert.equal(parseToken(formatToken(42)), 42)
    assert.throws(() => parseToken('x'), /EVENT_FROM_TOKEN_PARSE_FAILURE/)
  })

  it('match subscriptions in any case, per object, and never for sessions', () => {
    const wants = subscription(['vm', 'network/OpaqueRef:n'])
    assert.equal(wants('VM', 'a'), true)
    assert.equal(wants('network', 'OpaqueRef:n'), true)
    assert.equal(wants('network', 'OpaqueRef:m'), false)
    assert.equal(subscription(['*'])('session', 's'), false)
  })
})

describe('host facts', () => {
  const cpuinfo = 'processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon\nstepping\t: 7\ncpu MHz\t\t: 2000.000\nflags\t\t: fpu vmx sse\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse\n'
  it('parse /proc/cpuinfo and /proc/meminfo', () => {
    const cpus = parseCpuinfo(cpuinfo)
    assert.equal(cpus.length, 2)
    assert.equal(cpus[0]?.modelname, 'Xeon')
    assert.deepEqual(parseMeminfo('MemTotal:  2048 kB\nMemAvailable: 1024 kB\n'), { total: 2048 * 1024, free: 1024 * 1024 })
  })

  it('trust KVM only when the CPU offers hardware virtualisation', () => {
    assert.equal(kvmUsable('fpu vmx sse', true), true)
    assert.equal(kvmUsable('fpu sse', true), false)
    assert.equal(kvmUsable('fpu svm', false), false)
  })

  it('find the default route\'s interface', () => {
    const table = 'Iface\tDestination\tGateway\nlo\t0000007F\t00000000\neth0\t00000000\t0102A8C0\n'
    assert.equal(defaultRouteInterface(table), 'eth0')
    assert.equal(defaultRouteInterface('Iface\tDestination\n'), undefined)
  })
})

describe('small decisions', () => {
  it('derive MACs from the seed: stable, unicast, locally administered', () => {
    const mac = macFromSeed('seed', '0')
    assert.equal(mac, macFromSeed('seed', '0'))
    assert.notEqual(mac, macFromSeed('seed', '1'))
    assert.equal(parseInt(mac.slice(0, 2), 16) & 0x03, 0x02)
  })

  it('derive etcd\'s command line from the data dir', () => {
    const place = { address: '192.0.2.10', listen: '192.0.2.10', ports: { client: 2000, peer: 2001 }, tls: { ca: '/d/pool/ca.pem', cert: '/d/pool/host.pem', key: '/d/pool/host-key.pem' } }
    const args = etcdArgs('/d', place, { name: 'h1' })
    assert.equal(args[args.indexOf('--data-dir') + 1], '/d/etcd')
    // Clients on other hosts, and this host's daemon on loopback; peers only on the host's address.
    assert.equal(args[args.indexOf('--listen-client-urls') + 1], 'https://192.0.2.10:2000,https://127.0.0.1:2000')
    assert.equal(args[args.indexOf('--listen-peer-urls') + 1], 'https://192.0.2.10:2001')
    assert.equal(args[args.indexOf('--initial-cluster') + 1], 'h1=https://192.0.2.10:2001')
    assert.equal(args[args.indexOf('--initial-cluster-state') + 1], 'new')
    assert.ok(args.includes('--client-cert-auth') && args.includes('--peer-client-cert-auth'))
    const joining = etcdArgs('/d', place, { name: 'h2', joining: 'h1=https://192.0.2.9:2001,h2=https://192.0.2.10:2001' })
    assert.equal(joining[joining.indexOf('--initial-cluster-state') + 1], 'existing')
    assert.equal(joining[joining.indexOf('--initial-cluster') + 1], 'h1=https://192.0.2.9:2001,h2=https://192.0.2.10:2001')
    assert.equal(args[args.indexOf('--auto-compaction-mode') + 1], 'revision')
    assert.ok(args.includes('--pre-vote=true'))
  })
})
