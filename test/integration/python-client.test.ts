// Debian's python3-os-xenapi (XenAPI.py, over XML-RPC) against a real daemon: login with four
// arguments, hosts, pool, VM.create/get_record with xapi's XML-RPC typing (ints as strings,
// bools as booleans), Failure exceptions, logout, and SESSION_INVALID afterwards.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Daemon, PASSWORD, ROOT } from '../helpers/daemon.js'

const run = promisify(execFile)
// Debian's interpreter, where python3-os-xenapi lives (not whatever python3 is first on PATH).
const PYTHON = '/usr/bin/python3'
const SCRIPT = join(ROOT, 'test', 'python', 'os_xenapi_client.py')

async function importError(): Promise<string | undefined> {
  try {
    await run(PYTHON, ['-c', 'from os_xenapi.client import XenAPI'], { timeout: 30_000 })
    return undefined
  } catch (e) {
    const err = e as { stderr?: string; message: string }
    return (err.stderr || err.message).trim().split('\n').pop()
  }
}

interface Typed<T = unknown> {
  value: T
  type: string
}

test('python3-os-xenapi client over XML-RPC', async () => {
  // The set-up installs python3-os-xenapi: its absence is a failure, not a reason to skip.
  const missing = await importError()
  assert.equal(missing, undefined, `${PYTHON} cannot import os_xenapi.client.XenAPI; scripts/setup.sh installs python3-os-xenapi`)
  const daemon = new Daemon()
  try {
    await daemon.start()
    let stdout: string
    try {
      ;({ stdout } = await run(PYTHON, [SCRIPT, daemon.url, PASSWORD], { timeout: 60_000 }))
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; message: string }
      assert.fail(`python client failed: ${err.message}\n${err.stderr ?? ''}\n${err.stdout ?? ''}\n--- daemon ---\n${daemon.output.slice(-3000)}`)
    }
    const out = JSON.parse(stdout) as Record<string, any>

    // Login with 4 args; XenAPI.py derived the API version from pool master's host record.
    assert.match(out.session, /^OpaqueRef:[0-9a-f-]{36}$/)
    assert.match(out.api_version, /^2\.\d+$/)

    // Hosts and the host record.
    assert.equal(out.hosts.length, 1)
    assert.match(out.hosts[0], /^OpaqueRef:[0-9a-f-]{36}$/)
    const host = out.host
    assert.equal(host.product_brand, 'XCP-ng')
    // ints arrive as strings over XML-RPC (xapi's behaviour), and XenAPI.py leaves them so.
    assert.deepEqual(host.API_version_major, { value: '2', type: 'str' })
    assert.equal(host.API_version_minor.type, 'str')
    assert.match(host.API_version_minor.value, /^\d+$/)
    assert.equal(out.api_version, `2.${host.API_version_minor.value}`)
    assert.deepEqual(host.enabled, { value: true, type: 'bool' })
    assert.equal(host.memory_overhead.type, 'str')
    assert.match(host.memory_overhead.value, /^\d+$/)

    // pool.get_all_records: one pool whose master is the host.
    const pools = Object.entries(out.pools as Record<string, { master: string; type: string }>)
    assert.equal(pools.length, 1)
    assert.match(pools[0]![0], /^OpaqueRef:/)
    assert.equal(pools[0]![1].master, out.hosts[0])
    assert.equal(pools[0]![1].type, 'dict')

    // VM.create then VM.get_record, with the Python types a client gets.
    assert.match(out.vm, /^OpaqueRef:[0-9a-f-]{36}$/)
    assert.equal(out.vm_in_get_all, true)
    const vm = out.vm_record as Record<string, Typed>
    assert.deepEqual(vm.name_label, { value: 'from-python', type: 'str' })
    assert.deepEqual(vm.power_state, { value: 'Halted', type: 'str' })
    assert.deepEqual(vm.is_a_template, { value: false, type: 'bool' })
    assert.deepEqual(vm.is_control_domain, { value: false, type: 'bool' })
    assert.deepEqual(vm.memory_static_max, { value: String(2 * 1024 ** 3), type: 'str' })
    assert.deepEqual(vm.VCPUs_max, { value: '2', type: 'str' })
    assert.deepEqual(vm.VCPUs_at_startup, { value: '2', type: 'str' })
    assert.deepEqual(vm.user_version, { value: '1', type: 'str' })
    assert.deepEqual(vm.domid, { value: '-1', type: 'str' })
    assert.deepEqual(vm.HVM_shadow_multiplier, { value: 1, type: 'float' })
    assert.equal(vm.other_config!.type, 'dict')
    assert.equal((vm.other_config!.value as Record<string, string>).made_by, 'python')
    assert.deepEqual(vm.tags, { value: ['python'], type: 'list' })
    assert.deepEqual(vm.resident_on, { value: 'OpaqueRef:NULL', type: 'str' })
    assert.deepEqual(vm.HVM_boot_params, { value: { order: 'cd' }, type: 'dict' })
    assert.deepEqual(out.vcpus_max_getter, { value: '2', type: 'str' })

    // Failures raise XenAPI.Failure with the ErrorDescription.
    assert.deepEqual(out.bad_ref, ['HANDLE_INVALID', 'VM', 'OpaqueRef:00000000-dead-beef-0000-000000000000'])
    assert.equal(out.vm_destroyed, true)

    // After session.logout the old ref is refused.
    assert.equal(out.handle_after_logout, null)
    assert.deepEqual(out.after_logout_raw, { Status: 'Failure', ErrorDescription: ['SESSION_INVALID', out.session] })
    // XenAPI.py sees SESSION_INVALID, has no login to replay, and gives up with Fault 401.
    assert.equal(out.after_logout_wrapped?.type, 'Fault')
    assert.equal(out.after_logout_wrapped?.faultCode, 401)
  } finally {
    await daemon.dispose()
  }
})
