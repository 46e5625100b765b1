// Host resources for real-QEMU tests: a short temporary directory (unix socket paths stay
// under 107 bytes), tap devices, and every QEMU launched, all removed by dispose().
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { promisify } from 'node:util'
import type { QemuVmConfig } from '../../src/qemu/config.js'
import { killQemu, launchQemu, type QemuProcess } from '../../src/qemu/process.js'

const run = promisify(execFile)

/** query-block names a device by its qdev id or QOM path; this gives the id for ours. */
export const blockDeviceId = (qdev: string): string => qdev.replace(/^\/machine\/peripheral\//, '').replace(/\/virtio-backend$/, '')

export class QemuTestHost {
  dir = ''
  readonly taps: string[] = []
  private readonly launched: QemuProcess[] = []

  async init(): Promise<void> {
    this.dir = await mkdtemp('/tmp/flt-')
  }

  async addTap(): Promise<string> {
    const name = `flt${randomBytes(4).toString('hex')}`
    await run('ip', ['tuntap', 'add', 'mode', 'tap', 'name', name])
    this.taps.push(name)
    return name
  }

  async launch(config: QemuVmConfig): Promise<QemuProcess> {
    return this.track(await launchQemu(config))
  }

  /** Also clean up a process found by attachQemu. */
  track(proc: QemuProcess): QemuProcess {
    this.launched.push(proc)
    return proc
  }

  /** Ends a launched QEMU if a test did not get as far as quitting it. */
  async stop(proc: QemuProcess): Promise<void> {
    await proc.qmp.close()
    await killQemu(proc, 2000)
  }

  async dispose(): Promise<void> {
    for (const proc of this.launched) await this.stop(proc).catch(() => {})
    for (const tap of this.taps) await run('ip', ['tuntap', 'del', 'mode', 'tap', 'name', tap]).catch(() => {})
    if (this.dir) await rm(this.dir, { recursive: true, force: true })
  }
}
