// The API coverage table stays true, and what real clients call gets implemented: a core
// message they call may be missing only while it is on the list below, which only shrinks.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { classes } from '../../src/idl/index.js'
import { coverageMarkdown, implementationOf, type ClientCall } from '../../src/xapi/coverage.js'

const ROOT = join(import.meta.dirname, '..', '..', '..')
const calls = (JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'client-calls.json'), 'utf8')) as { calls: ClientCall[] }).calls

/** Core messages clients call that are still NOT_IMPLEMENTED (the pool, backup, metrics and Secure Boot issues bring their own). */
const KNOWN_CORE_GAPS = new Set<string>([
  'PIF.forget',
  'PIF.introduce',
  'PIF.plug',
  'PIF.reconfigure_ip',
  'PIF.reconfigure_ipv6',
  'PIF.unplug',
  'PUSB.scan',
  'SR.probe',
  'VM.restart_device_models',
  'VUSB.unplug',
  'host.apply_updates',
  'host.management_disable',
  'host.management_reconfigure',
  'host.power_on',
  'host.syslog_reconfigure',
  'pool_update.introduce',
])

test('docs/api-coverage.md is what the datamodel and the implementations say (npm run gen-api-coverage)', () => {
  assert.equal(readFileSync(join(ROOT, 'docs', 'api-coverage.md'), 'utf8'), coverageMarkdown(calls))
})

test('every core message real clients call is implemented, but for the known gaps', () => {
  const missing = calls
    .filter((c) => c.category === 'core')
    .filter((c) => {
      const [cls, name] = c.message.split('.')
      return implementationOf(classes.get(cls!)!.messages.get(name!)!) === 'missing'
    })
    .map((c) => c.message)
  assert.deepEqual(missing.filter((m) => !KNOWN_CORE_GAPS.has(m)), [])
})
