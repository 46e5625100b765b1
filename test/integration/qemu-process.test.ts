// Detached QEMU processes, QMP against real QEMU, re-attachment, kill, image locks, the serial
// console (log + socket), and qemu-img. TCG only (this machine's /dev/kvm cannot run guests).
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { QemuVmConfig } from '../../src/qemu/config.js'
import { ImageLockedError } from '../../src/qemu/errors.js'
import { checkImage, convertImage, createImage, imageInfo, QemuImgError, resizeImage } from '../../src/qemu/img.js'
import { attachQemu, killQemu, launchQemu, runningPid, waitForExit } from '../../src/qemu/process.js'
import { QmpError } from '../../src/qemu/qmp.js'
import { QemuTestHost } from '../helpers/qemu-host.js'

const host = new QemuTestHost()
const imgHost = new QemuTestHost()
const MiB = 1024 * 1024
let vmCount = 0

function vmConfig(overrides: Partial<QemuVmConfig> = {}): QemuVmConfig {
  const n = ++vmCount
  return {
    uuid: `0a0b0c0d-0000-4000-8000-${String(n).padStart(12, '0')}`,
    name: `proc-${n}`,
    accel: 'tcg', machine: 'q35', firmware: 'bios', secureBoot: false,
    memoryMiB: 64, vcpus: 1, maxVcpus: 1, disks: [], nics: [],
    runDir: `${host.dir}/vm${n}`, oemStrings: [], hotplugPorts: 0, vga: 'none', paused: true,
    ...overrides,
  }
}

/** A boot sector that writes a line to COM1 and halts: real guest output in well under a second. */
function serialHelloMbr(): Buffer {
  const code = [0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xba, 0xf8, 0x03, 0xbe, 0x16, 0x7c, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd]
  const sector = Buffer.alloc(MiB)
  Buffer.from(code).copy(sector)
  sector.write('FLOTILLA-SERIAL-OK\r\n\0', code.length, 'latin1')
  sector[510] = 0x55
  sector[511] = 0xaa
  return sector
}

async function waitForFile(path: string, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await readFile(path, 'utf8').catch(() => '')).includes(text)) {
    if (Date.now() > deadline) throw new Error(`"${text}" not in ${path} within ${timeoutMs} ms`)
    await sleep(20)
  }
}

describe('QEMU processes and QMP', () => {
  before(() => host.init())
  after(() => host.dispose())

  it('launches detached, survives losing its client, and is found again by attach', async (t) => {
    const config = vmConfig()
    const started = performance.now()
    const vm = await host.launch(config)
    t.diagnostic(`launch to QMP ready: ${(performance.now() - started).toFixed(0)} ms`)
    // Own session (setsid): the daemon's process group and terminal signals do not reach it.
    const stat = await readFile(`/proc/${vm.pid}/stat`, 'utf8')
    assert.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]), vm.pid)
    assert.equal(Number((await readFile(vm.paths.pidfile, 'utf8')).trim()), vm.pid)

    await vm.qmp.close() // as if the daemon died
    const again = await attachQemu(config.runDir, config.uuid)
    assert.ok(again)
    host.track(again)
    assert.equal(again.pid, vm.pid)
    assert.equal((await again.qmp.execute('query-status')).status, 'prelaunch')
    assert.equal(await attachQemu(config.runDir, '0a0b0c0d-0000-4000-8000-999999999999'), undefined)
    await assert.rejects(launchQemu(config), new RegExp(`already runs as QEMU pid ${vm.pid}`))

    await killQemu(again, 5000)
    assert.equal(await runningPid(config.runDir, config.uuid), undefined)
    assert.equal(await attachQemu(config.runDir, config.uuid), undefined)
  })

  it('runs commands, reports errors and events, and fails cleanly when QEMU quits', async () => {
    const vm = await host.launch(vmConfig())
    assert.equal(vm.qmp.version.major, 7)
    const resumed = vm.qmp.waitForEvent('RESUME', undefined, 5000)
    await vm.qmp.execute('cont')
    await resumed
    assert.equal((await vm.qmp.execute('query-status')).status, 'running')
    const stopped = vm.qmp.waitForEvent('STOP', undefined, 5000)
    await vm.qmp.execute('stop')
    await stopped
    assert.equal((await vm.qmp.execute('query-status')).status, 'paused')

    const err = await vm.qmp.execute('device_del', { id: 'nope' }).catch((e) => e)
    assert.ok(err instanceof QmpError)
    assert.equal(err.qmpClass, 'DeviceNotFound')

    const statuses = [1, 2, 3].map(() => vm.qmp.execute('query-status'))
    const shutdown = vm.qmp.waitForEvent('SHUTDOWN', undefined, 5000)
    await vm.qmp.execute('quit')
    assert.equal((await shutdown).data.reason, 'host-qmp-quit')
    assert.equal((await Promise.all(statuses)).length, 3)
    assert.ok(await waitForExit(vm.pid, 5000))
    await new Promise((resolve) => (vm.qmp.closed ? resolve(undefined) : vm.qmp.once('close', resolve)))
    await assert.rejects(vm.qmp.execute('query-status'), /connection is closed/)
  })

  it('says which image is locked when a second VM wants a disk in use', async () => {
    const path = `${host.dir}/shared.qcow2`
    await createImage({ path, format: 'qcow2', size: 16 * MiB })
    const disk = { node: 'd0', userdevice: 0, path, format: 'qcow2' as const, readOnly: false, media: 'disk' as const, bus: 'virtio' as const }
    await host.launch(vmConfig({ disks: [disk] }))
    const second = vmConfig({ disks: [disk] })
    const err = await launchQemu(second).catch((e) => e)
    assert.ok(err instanceof ImageLockedError, String(err))
    assert.equal(err.imagePath, path)
    assert.equal(await runningPid(second.runDir, second.uuid), undefined)
    await assert.rejects(resizeImage(path, 32 * MiB, 'qcow2'), ImageLockedError)
    assert.equal((await imageInfo(path, 'qcow2')).virtualSize, 16 * MiB) // -U reads a disk in use
  })

  it('logs the serial console to a file, with or without a client on its socket', async () => {
    const boot = `${host.dir}/hello.raw`
    await writeFile(boot, serialHelloMbr())
    const disk = { node: 'boot', userdevice: 0, path: boot, format: 'raw' as const, readOnly: true, media: 'disk' as const, bus: 'virtio' as const, bootIndex: 1 }

    const unattended = await host.launch(vmConfig({ disks: [disk], paused: false }))
    await waitForFile(unattended.paths.serialLog, 'FLOTILLA-SERIAL-OK', 20_000)

    const watched = await host.launch(vmConfig({ disks: [disk] }))
    const console = connect(watched.paths.serialSocket)
    let seen = ''
    console.on('data', (chunk) => (seen += chunk))
    await new Promise((resolve) => console.once('connect', resolve))
    await watched.qmp.execute('cont')
    try {
      await waitForFile(watched.paths.serialLog, 'FLOTILLA-SERIAL-OK', 20_000)
      for (let i = 0; i < 100 && !seen.includes('FLOTILLA-SERIAL-OK'); i++) await sleep(20)
      assert.match(seen, /FLOTILLA-SERIAL-OK/)
    } finally {
      console.destroy()
    }
  })

  it('reports a QEMU that refuses its command line with its own words', async () => {
    const missing = { node: 'd0', userdevice: 0, path: `${host.dir}/missing.qcow2`, format: 'qcow2' as const, readOnly: false, media: 'disk' as const, bus: 'virtio' as const }
    await assert.rejects(launchQemu(vmConfig({ disks: [missing] })), /did not start[\s\S]*missing\.qcow2[\s\S]*No such file/)
  })
})

describe('qemu-img', () => {
  before(() => imgHost.init())
  after(() => imgHost.dispose())

  it('creates, inspects, grows, converts and checks images', async () => {
    const base = `${imgHost.dir}/base.qcow2`
    const overlay = `${imgHost.dir}/overlay.qcow2`
    await createImage({ path: base, format: 'qcow2', size: 64 * MiB })
    await createImage({ path: overlay, format: 'qcow2', backing: { path: base, format: 'qcow2' } })
    const info = await imageInfo(overlay, 'qcow2')
    assert.equal(info.virtualSize, 64 * MiB)
    assert.equal(info.backingFile, base)
    assert.equal(info.backingFormat, 'qcow2')

    await resizeImage(overlay, 128 * MiB, 'qcow2')
    assert.equal((await imageInfo(overlay)).virtualSize, 128 * MiB)

    const vhd = `${imgHost.dir}/export.vhd`
    await convertImage({ source: overlay, sourceFormat: 'qcow2', target: vhd, targetFormat: 'vpc' })
    assert.equal((await imageInfo(vhd, 'vpc')).virtualSize, 128 * MiB) // force_size: not CHS-rounded
    const raw = `${imgHost.dir}/export.raw`
    await convertImage({ source: vhd, sourceFormat: 'vpc', target: raw, targetFormat: 'raw' })
    assert.equal((await imageInfo(raw, 'raw')).format, 'raw')

    assert.deepEqual(await checkImage(overlay, 'qcow2'), { corruptions: 0, leaks: 0, checkErrors: 0 })
  })

  it('fails with qemu-img\'s own message', async () => {
    const err = await imageInfo(`${imgHost.dir}/nope.qcow2`).catch((e) => e)
    assert.ok(err instanceof QemuImgError)
    assert.match(err.message, /nope\.qcow2.*No such file/s)
  })
})
