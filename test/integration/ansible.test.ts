// Ansible's own XenServer modules (Debian's ansible: community.general's xenserver_guest,
// xenserver_guest_powerstate, xenserver_guest_info) deploy, reconfigure, start, inspect, stop and
// remove a VM on a real daemon, as an Ansible user's playbook does against XCP-ng.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login, PASSWORD, ROOT } from '../helpers/daemon.js'

const run = promisify(execFile)
const MiB = 2 ** 20
const daemon = new Daemon()
let session: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)

async function playbook(name: string, vars: Record<string, string | number>): Promise<void> {
  const env = {
    ...process.env,
    // Debian ships XenAPI.py inside os_xenapi; test/python names it as the module Ansible imports.
    PYTHONPATH: join(ROOT, 'test', 'python'),
    ANSIBLE_PYTHON_INTERPRETER: '/usr/bin/python3',
    ANSIBLE_LOCALHOST_WARNING: 'false',
    ANSIBLE_INVENTORY_UNPARSED_WARNING: 'false',
    ANSIBLE_NOCOLOR: '1',
  }
  try {
    await run('ansible-playbook', [join(ROOT, 'test', 'ansible', name), '-e', JSON.stringify(vars)], { env, timeout: 300_000 })
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string }
    assert.fail(`ansible-playbook ${name} failed:\n${stdout}\n${stderr}`)
  }
}

describe('Ansible XenServer modules', { timeout: 600_000 }, () => {
  before(async () => {
    await daemon.start()
    session = await login(daemon.url)
  })
  after(() => daemon.dispose())

  it('deploys from the test-guest template with VM.copy, reconfigures, powers on, reads facts, powers off and removes', async () => {
    const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
    const systemVdi = await c<string>('VBD.get_VDI', (await c<string[]>('VM.get_VBDs', template!))[0])
    const vars = {
      xen_url: daemon.url,
      xen_password: PASSWORD,
      system_disk_mb: Number(await c<string>('VDI.get_virtual_size', systemVdi)) / MiB,
      sr_name: await c<string>('SR.get_name_label', await c<string>('VDI.get_SR', systemVdi)),
      network_name: await c<string>('network.get_name_label', (await c<string[]>('network.get_all'))[0]),
    }
    await playbook('deploy.yml', vars)
    const [vm] = await c<string[]>('VM.get_by_name_label', 'ansible-vm')
    assert.ok(vm, 'the VM exists')
    const record = await c<Record<string, any>>('VM.get_record', vm)
    assert.equal(record.is_a_template, false)
    assert.equal(record.power_state, 'Running')
    assert.equal(Number(record.VCPUs_max), 2)
    assert.equal(Number(record.memory_static_max), 256 * MiB)
    assert.equal(record.VBDs.length, 2)
    const vdis = await Promise.all((record.VBDs as string[]).map((vbd) => c<string>('VBD.get_VDI', vbd)))

    await playbook('remove.yml', vars)
    assert.deepEqual(await c('VM.get_by_name_label', 'ansible-vm'), [])
    const left = await c<string[]>('VDI.get_all')
    assert.deepEqual(vdis.filter((v) => left.includes(v)), [], 'its disks went with it')
  })
})
