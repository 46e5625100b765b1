// Every golden VM shape, started for real (TCG, -S) on real image files and tap devices:
// QEMU must accept the command line, answer QMP, see the VM's UUID, and quit.
import assert from 'node:assert/strict'
import { copyFile, mkdir } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import type { QemuVmConfig } from '../../src/qemu/config.js'
import { createImage } from '../../src/qemu/img.js'
import { waitForExit } from '../../src/qemu/process.js'
import { OVMF_VARS, qemuShapes } from '../helpers/qemu-shapes.js'
import { blockDeviceId, QemuTestHost } from '../helpers/qemu-host.js'

const host = new QemuTestHost()

/** Creates the images and NVRAM a shape refers to. */
async function provision(config: QemuVmConfig): Promise<void> {
  for (const disk of config.disks) {
    if (disk.path) await createImage({ path: disk.path, format: disk.format, size: 16 * 1024 * 1024 })
  }
  if (config.nvram) await copyFile(OVMF_VARS, config.nvram)
}

describe('golden argv shapes on the real qemu-system-x86_64', () => {
  let shapes: Record<string, QemuVmConfig> = {}

  before(async () => {
    await host.init()
    await mkdir(`${host.dir}/data`)
    shapes = qemuShapes({ runRoot: `${host.dir}/run`, dataRoot: `${host.dir}/data`, taps: [await host.addTap(), await host.addTap()] })
  })
  after(() => host.dispose())

  const names = Object.keys(qemuShapes({ runRoot: '/r', dataRoot: '/d', taps: ['a', 'b'] }))
  for (const name of names) {
    it(`${name} starts, answers QMP and quits`, async (t) => {
      // This machine's /dev/kvm cannot run guests (PVM): the argv is the golden one but for accel.
      const config: QemuVmConfig = { ...shapes[name]!, accel: 'tcg', paused: true }
      await provision(config)
      const started = performance.now()
      const vm = await host.launch(config)
      try {
        t.diagnostic(`launch to QMP ready: ${(performance.now() - started).toFixed(0)} ms`)
        const status = await vm.qmp.execute('query-status')
        assert.equal(status.status, config.incoming ? 'inmigrate' : 'prelaunch')
        assert.equal((await vm.qmp.execute('query-uuid')).UUID, config.uuid)
        const blockDevices = (await vm.qmp.execute('query-block')).map((b: any) => blockDeviceId(b.qdev))
        const firmware = config.firmware === 'uefi' ? ['/machine/system.flash0', '/machine/system.flash1'] : []
        assert.deepEqual([...blockDevices].sort(), [...firmware, ...config.disks.map((d) => `${d.node}-dev`)].sort())

        const shutdown = vm.qmp.waitForEvent('SHUTDOWN', undefined, 5000)
        await vm.qmp.execute('quit')
        assert.equal((await shutdown).data.reason, 'host-qmp-quit')
        assert.ok(await waitForExit(vm.pid, 5000), 'QEMU exits after quit')
      } finally {
        await host.stop(vm)
      }
    })
  }

  it('an empty CD drive takes a named medium node later, and gives it back', async () => {
    const config: QemuVmConfig = { ...shapes['empty-cd']!, accel: 'tcg', paused: true }
    const iso = `${host.dir}/data/later.iso`
    await createImage({ path: iso, format: 'raw', size: 1024 * 1024 })
    const vm = await host.launch(config)
    const cdInserted = async () => (await vm.qmp.execute('query-block')).find((b: any) => blockDeviceId(b.qdev) === 'cd0-dev').inserted
    assert.equal(await cdInserted(), undefined)

    await vm.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': 'cd0', 'read-only': true, file: { driver: 'file', filename: iso, 'node-name': 'cd0f', 'read-only': true } })
    await vm.qmp.execute('blockdev-open-tray', { id: 'cd0-dev' })
    await vm.qmp.execute('blockdev-insert-medium', { id: 'cd0-dev', 'node-name': 'cd0' })
    await vm.qmp.execute('blockdev-close-tray', { id: 'cd0-dev' })
    const inserted = await cdInserted()
    assert.equal(inserted['node-name'], 'cd0')
    assert.equal(inserted.file, iso)

    await vm.qmp.execute('blockdev-open-tray', { id: 'cd0-dev', force: true })
    await vm.qmp.execute('blockdev-remove-medium', { id: 'cd0-dev' })
    await vm.qmp.execute('blockdev-del', { 'node-name': 'cd0' })
    assert.equal(await cdInserted(), undefined)
    await host.stop(vm)
  })
})
