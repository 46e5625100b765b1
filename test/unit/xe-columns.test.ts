// xe's columns: datamodel fields as xe names them (any case: `vlan`, `default-sr`), the
// `<ref>-uuid` / `<ref>-name-label` columns xapi's CLI adds, and an SR's `host`.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { getClass } from '../../src/idl/index.js'
import { columnOf, formatRecord, matches, type Fetched } from '../../src/cli/format.js'

const fetched: Fetched = new Map<string, Record<string, Record<string, unknown>>>([
  ['host', { 'OpaqueRef:h1': { uuid: 'uuid-h1', name_label: 'alpha', metrics: 'OpaqueRef:m1' }, 'OpaqueRef:h2': { uuid: 'uuid-h2', name_label: 'beta', metrics: 'OpaqueRef:m2' } }],
  ['host_metrics', { 'OpaqueRef:m1': { live: true }, 'OpaqueRef:m2': { live: false } }],
  ['SR', { 'OpaqueRef:local': { uuid: 'uuid-local', name_label: 'Local storage', PBDs: ['OpaqueRef:p1'] }, 'OpaqueRef:shared': { uuid: 'uuid-shared', name_label: 'NFS', PBDs: ['OpaqueRef:p2', 'OpaqueRef:p3'] } }],
  ['PBD', { 'OpaqueRef:p1': { uuid: 'uuid-p1', host: 'OpaqueRef:h2', SR: 'OpaqueRef:local' }, 'OpaqueRef:p2': { host: 'OpaqueRef:h1' }, 'OpaqueRef:p3': { host: 'OpaqueRef:h2' } }],
])
const uuidOf = (cls: string, ref: string) => fetched.get(cls)?.[ref]?.uuid as string | undefined
const render = (cls: string, column: string, rec: Record<string, unknown>) => columnOf(getClass(cls), column)!.render(rec, fetched, uuidOf)

describe('xe columns', () => {
  it('shows a reference field as the uuid it points at, and adds <field>-uuid and <field>-name-label', () => {
    const pbd = fetched.get('PBD')!['OpaqueRef:p1']!
    assert.equal(render('PBD', 'host', pbd), 'uuid-h2')
    assert.equal(render('PBD', 'host-uuid', pbd), 'uuid-h2')
    assert.equal(render('PBD', 'host-name-label', pbd), 'beta')
    assert.equal(render('PBD', 'sr-uuid', pbd), 'uuid-local')
    assert.equal(render('PBD', 'sr-name-label', pbd), 'Local storage')
    assert.equal(render('PBD', 'sr-name-label', { SR: 'OpaqueRef:gone' }), '<not in database>')
    assert.deepEqual(columnOf(getClass('PBD'), 'sr-name-label')!.reads, ['SR'])
  })

  it("names an SR's host, or <shared> when several hosts have it", () => {
    assert.equal(render('SR', 'host', fetched.get('SR')!['OpaqueRef:local']!), 'beta')
    assert.equal(render('SR', 'host', fetched.get('SR')!['OpaqueRef:shared']!), '<shared>')
    assert.deepEqual(columnOf(getClass('SR'), 'host')!.reads, ['PBD', 'host'])
  })

  it("shows a host's host-metrics-live from its host_metrics, and filters on it", () => {
    const hosts = fetched.get('host')!
    assert.equal(render('host', 'host-metrics-live', hosts['OpaqueRef:h1']!), 'true')
    assert.equal(render('host', 'host-metrics-live', hosts['OpaqueRef:h2']!), 'false')
    assert.deepEqual(columnOf(getClass('host'), 'host-metrics-live')!.reads, ['host_metrics'])
    assert.ok(matches(columnOf(getClass('host'), 'host-metrics-live')!, hosts['OpaqueRef:h2']!, 'false', fetched, uuidOf))
  })

  it('finds fields whatever their case, and knows no column that is not one', () => {
    assert.equal(columnOf(getClass('PIF'), 'vlan')!.name, 'VLAN')
    assert.equal(columnOf(getClass('pool'), 'default-sr')!.name, 'default-SR')
    assert.equal(columnOf(getClass('PBD'), 'no-such-thing'), undefined)
    assert.equal(columnOf(getClass('PBD'), 'device-config-uuid'), undefined, 'only a reference field has a -uuid column')
  })

  it('filters enums whatever their case (type=Disk, power-state=Running), other columns exactly', () => {
    const disk = { type: 'Disk' }
    assert.ok(matches(columnOf(getClass('VBD'), 'type')!, disk, 'Disk', fetched, uuidOf))
    assert.ok(matches(columnOf(getClass('VBD'), 'type')!, disk, 'disk', fetched, uuidOf))
    assert.ok(!matches(columnOf(getClass('VBD'), 'type')!, disk, 'CD', fetched, uuidOf))
    assert.ok(!matches(columnOf(getClass('PBD'), 'host-name-label')!, fetched.get('PBD')!['OpaqueRef:p1']!, 'BETA', fetched, uuidOf))
  })

  it('prints a record as xe does: the first label left-aligned, the others right-aligned before their qualifier', () => {
    const cls = getClass('PBD')
    const columns = ['uuid', 'host-uuid', 'currently-attached'].map((c) => columnOf(cls, c)!)
    const text = formatRecord({ uuid: 'uuid-p1', host: 'OpaqueRef:h2', currently_attached: true }, columns, fetched, uuidOf)
    assert.equal(text, ['uuid ( RO)              : uuid-p1', '         host-uuid ( RO): uuid-h2', 'currently-attached ( RO): true'].join('\n'))
  })
})
