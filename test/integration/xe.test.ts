// xe against a running daemon, as an administrator uses it: install a VM from the test guest
// template, start it, watch its serial console, list it, stop and remove it; and its errors.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { Daemon, PASSWORD, ROOT } from '../helpers/daemon.js'

const run = promisify(execFile)
const scratch = mkdtempSync(join(tmpdir(), 'flotilla-xe-'))
const daemon = new Daemon()
const XE = join(ROOT, 'bin', 'xe.js')
const base = () => ['-s', '127.0.0.1', '-p', String(daemon.httpsPort), '-u', 'root', '-pw', PASSWORD]
const xe = (...args: string[]) => run(process.execPath, [XE, ...base(), ...args], { timeout: 120_000 })
const xeFails = (...args: string[]) => xe(...args).then(
  () => assert.fail(`xe ${args.join(' ')} succeeded`),
  (err: { code: number; stderr: string }) => err,
)

describe('xe', () => {
  before(() => daemon.start())
  after(async () => {
    await daemon.dispose()
    rmSync(scratch, { recursive: true, force: true })
  })

  it('installs, starts, shows the console of, stops and uninstalls a VM', async () => {
    const uuid = (await xe('vm-install', 'template=Flotilla test guest', 'new-name-label=xe-vm')).stdout.trim()
    assert.match(uuid, /^[0-9a-f-]{36}$/)
    await xe('vm-start', `uuid=${uuid}`)
    const listed = (await xe('vm-list', 'name-label=xe-vm', 'params=uuid,name-label,power-state')).stdout
    assert.match(listed, new RegExp(`uuid \\( RO\\)\\s*: ${uuid}`))
    assert.match(listed, /power-state \( RO\): running/)
    assert.equal((await xe('vm-list', 'power-state=running', '--minimal')).stdout.trim(), uuid)

    const consoleOut = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [XE, ...base(), 'console', 'vm=xe-vm'], { stdio: ['pipe', 'pipe', 'pipe'] })
      let text = ''
      const timer = setTimeout(() => (child.kill(), reject(new Error(`no tick on the console: ${text}`))), 60_000)
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString()
        if (/FLOTILLA tick=\d+/.test(text)) {
          clearTimeout(timer)
          child.stdin.write(Buffer.from([0x1d]))
          child.once('exit', () => resolve(text))
        }
      })
    })
    assert.match(consoleOut, /FLOTILLA tick=/)

    await xe('vm-shutdown', 'vm=xe-vm', '--force')
    assert.equal((await xe('vm-param-get', `uuid=${uuid}`, 'param-name=power-state')).stdout.trim(), 'halted')
    await xe('vm-param-set', `uuid=${uuid}`, 'other-config:owner=ops')
    assert.equal((await xe('vm-param-get', `uuid=${uuid}`, 'param-name=other-config', 'param-key=owner')).stdout.trim(), 'ops')
    await xe('vm-uninstall', `uuid=${uuid}`, '--force')
    assert.equal((await xe('vm-list', 'name-label=xe-vm', '--minimal')).stdout.trim(), '')
  })

  it('plays a typical admin session: snapshots, checkpoints, reverts, clones, copies, disks and networks', async () => {
    assert.match((await xe('template-list', 'params=name-label')).stdout, /name-label \( RW\): Flotilla test guest/)
    const vm = (await xe('vm-install', 'template=Flotilla test guest', 'new-name-label=admin')).stdout.trim()
    const sr = (await xe('sr-list', 'name-label=Local storage', '--minimal')).stdout.trim()
    const data = (await xe('vdi-create', `sr-uuid=${sr}`, 'name-label=admin-data', 'virtual-size=16MiB')).stdout.trim()
    await xe('vbd-create', `vm-uuid=${vm}`, `vdi-uuid=${data}`, 'device=1')
    await xe('vdi-resize', `uuid=${data}`, 'disk-size=32MiB')
    const image = join(scratch, 'disk.raw')
    writeFileSync(image, randomBytes(2 ** 20))
    await xe('vdi-import', `uuid=${data}`, `filename=${image}`)
    await xe('vdi-export', `uuid=${data}`, `filename=${image}.out`)
    assert.ok(readFileSync(`${image}.out`).subarray(0, 2 ** 20).equals(readFileSync(image)), 'vdi-export gives back what vdi-import sent')
    await xe('vm-param-add', `uuid=${vm}`, 'param-name=tags', 'param-key=web')
    await xe('vm-param-add', `uuid=${vm}`, 'param-name=other-config', 'team=ops', 'tier=1')
    await xe('vm-param-remove', `uuid=${vm}`, 'param-name=other-config', 'param-key=tier')
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=tags')).stdout.trim(), 'web')
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=other-config', 'param-key=team')).stdout.trim(), 'ops')
    await xe('vm-param-clear', `uuid=${vm}`, 'param-name=tags')
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=tags')).stdout.trim(), '')
    assert.equal((await xe('vdi-param-get', `uuid=${data}`, 'param-name=virtual-size')).stdout.trim(), String(32 * 2 ** 20))
    assert.match((await xe('vm-disk-list', 'vm=admin')).stdout, /userdevice \( RW\): 1/)
    const net = (await xe('network-create', 'name-label=admin-net')).stdout.trim()
    await xe('vif-create', `vm-uuid=${vm}`, `network-uuid=${net}`, 'device=0')
    assert.match((await xe('vm-vif-list', 'vm=admin')).stdout, /MAC \( RO\): [0-9a-f:]{17}/)

    const snap = (await xe('vm-snapshot', 'vm=admin', 'new-name-label=before')).stdout.trim()
    assert.equal((await xe('snapshot-list', `uuid=${snap}`, 'params=is-a-snapshot', '--minimal')).stdout.trim(), 'true')
    await xe('vm-start', 'vm=admin')
    const cp = (await xe('vm-checkpoint', 'vm=admin', 'new-name-label=running')).stdout.trim()
    assert.equal((await xe('snapshot-list', `uuid=${cp}`, 'params=power-state', '--minimal')).stdout.trim(), 'suspended')
    await xe('snapshot-revert', `snapshot-uuid=${snap}`)
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=power-state')).stdout.trim(), 'halted')
    await xe('snapshot-revert', `snapshot-uuid=${cp}`)
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=power-state')).stdout.trim(), 'suspended')
    await xe('vm-resume', 'vm=admin')
    assert.equal((await xe('vm-param-get', `uuid=${vm}`, 'param-name=power-state')).stdout.trim(), 'running')
    await xe('vm-shutdown', 'vm=admin', '--force')
    const clone = (await xe('vm-clone', 'vm=admin', 'new-name-label=admin-clone')).stdout.trim()
    const copy = (await xe('vm-copy', 'vm=admin', 'new-name-label=admin-copy', `sr-uuid=${sr}`)).stdout.trim()
    assert.match(clone, /^[0-9a-f-]{36}$/)
    assert.match(copy, /^[0-9a-f-]{36}$/)
    const xva = join(scratch, 'admin.xva')
    await xe('vm-export', 'vm=admin', `filename=${xva}`)
    const imported = (await xe('vm-import', `filename=${xva}`)).stdout.trim()
    assert.match(imported, /^[0-9a-f-]{36}$/)
    assert.equal((await xe('vm-param-get', `uuid=${imported}`, 'param-name=name-label')).stdout.trim(), 'admin')
    const ambiguous = await xeFails('vm-start', 'vm=admin')
    assert.match(ambiguous.stderr, /Multiple matches/)
    await xe('vm-start', '--multiple', 'name-label=admin')
    assert.equal((await xe('vm-list', 'power-state=running', '--minimal')).stdout.trim().split(',').length, 2)
    await xe('vm-shutdown', '--multiple', 'power-state=running', '--force')
    await xe('vm-destroy', `uuid=${imported}`)
    const cpXva = join(scratch, 'checkpoint.xva')
    await xe('snapshot-export-to-template', `snapshot-uuid=${cp}`, 'preserve-power-state=true', `filename=${cpXva}`)
    const restored = (await xe('vm-import', `filename=${cpXva}`)).stdout.trim()
    assert.equal((await xe('vm-param-get', `uuid=${restored}`, 'param-name=power-state')).stdout.trim(), 'suspended')
    await xe('vm-uninstall', `uuid=${restored}`, '--force')
    for (const s of [snap, cp]) await xe('snapshot-uninstall', `snapshot-uuid=${s}`, '--force')
    for (const v of [vm, clone, copy]) await xe('vm-uninstall', `uuid=${v}`, '--force')
    await xe('network-destroy', `uuid=${net}`)
    await xe('sr-scan', `uuid=${sr}`)
    assert.equal((await xe('vm-list', '--minimal')).stdout.trim(), '')
    assert.equal((await xe('snapshot-list', '--minimal')).stdout.trim(), '')
  })

  it('lists the pool of one with its master, and disables and enables its host', async () => {
    const host = (await xe('host-list', '--minimal')).stdout.trim()
    assert.match(host, /^[0-9a-f-]{36}$/)
    assert.match((await xe('pool-list')).stdout, new RegExp(`master \\( RO\\)\\s*: ${host}`))
    await xe('host-disable')
    assert.equal((await xe('host-param-get', `uuid=${host}`, 'param-name=enabled')).stdout.trim(), 'false')
    await xe('host-enable', `host=${host}`)
    assert.equal((await xe('host-param-get', `uuid=${host}`, 'param-name=enabled')).stdout.trim(), 'true')
    const joinMissing = await xeFails('pool-join', 'master-address=192.0.2.1')
    assert.match(joinMissing.stderr, /Required parameter not found: master-username/)
  })

  it('fails clearly, with a non-zero exit code', async () => {
    const unknown = await xeFails('frobnicate-list')
    assert.equal(unknown.code, 1)
    assert.match(unknown.stderr, /Unknown command: frobnicate-list/)
    const missing = await xeFails('vm-start')
    assert.match(missing.stderr, /needs a VM/)
    const nothing = await xeFails('vm-start', 'vm=no-such-vm')
    assert.match(nothing.stderr, /No matching VMs/)
    const bad = await run(process.execPath, [XE, '-s', '127.0.0.1', '-p', String(daemon.httpsPort), '-u', 'root', '-pw', 'wrong', 'host-list']).then(
      () => assert.fail('bad credentials accepted'),
      (err: { code: number; stderr: string }) => err,
    )
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /Authentication failed/)
  })
})
