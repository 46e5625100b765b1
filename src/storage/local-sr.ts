// The driver of local file SRs (types ext and xfs): a directory of qcow2 images (file-sr.ts),
// either inside the host's SR root or on a block device formatted with the type's filesystem.
import { rm } from 'node:fs/promises'
import { FileImagesDriver } from './file-driver.js'
import { FileSr } from './file-sr.js'
import { format, mount, unmount, type LocalFs } from './local-fs.js'
import type { SrCapability, SrDriverInfo, SrLocation } from './driver.js'

export const FILE_SR_CAPABILITIES: readonly SrCapability[] = ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_UPDATE', 'VDI_CLONE', 'VDI_SNAPSHOT', 'VDI_RESIZE', 'THIN_PROVISIONING']

export class LocalSrDriver extends FileImagesDriver {
  constructor(
    private readonly type: string,
    private readonly name: string,
    private readonly fs: LocalFs,
  ) {
    super()
  }

  info(): SrDriverInfo {
    return { type: this.type, name: this.name, capabilities: FILE_SR_CAPABILITIES }
  }

  async create(sr: SrLocation): Promise<void> {
    if (sr.device) {
      await format(sr.device, this.fs)
      await mount(sr.device, this.fs, sr.path)
    }
    await new FileSr(sr.path).attach()
  }

  async attach(sr: SrLocation): Promise<void> {
    if (sr.device) await mount(sr.device, this.fs, sr.path)
    await new FileSr(sr.path).attach()
  }

  async detach(sr: SrLocation): Promise<void> {
    if (sr.device) await unmount(sr.path)
  }

  async destroy(sr: SrLocation): Promise<void> {
    await rm(sr.path, { recursive: true, force: true, maxRetries: 0 }).catch(() => undefined)
    if (sr.device) {
      await unmount(sr.path)
      await rm(sr.path, { recursive: true, force: true })
    }
  }
}
