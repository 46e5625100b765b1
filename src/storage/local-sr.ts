// The driver of local file SRs (types ext and xfs): a directory of qcow2 images (file-sr.ts),
// either inside the host's SR root or on a block device formatted with the type's filesystem.
import { randomUUID } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { FileSr } from './file-sr.js'
import { collectGarbage } from './gc.js'
import { format, mount, unmount, type LocalFs } from './local-fs.js'
import type { SrCapability, SrDriver, SrDriverInfo, SrLocation } from './driver.js'

const CAPABILITIES: readonly SrCapability[] = ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_UPDATE', 'VDI_CLONE', 'VDI_SNAPSHOT', 'VDI_RESIZE', 'THIN_PROVISIONING']

export class LocalSrDriver implements SrDriver {
  constructor(
    private readonly type: string,
    private readonly name: string,
    private readonly fs: LocalFs,
  ) {}

  info(): SrDriverInfo {
    return { type: this.type, name: this.name, capabilities: CAPABILITIES }
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

  usage = (sr: SrLocation) => new FileSr(sr.path).usage()
  scan = (sr: SrLocation) => new FileSr(sr.path).scan()
  gc = (sr: SrLocation, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: Parameters<SrDriver['gc']>[3]) => collectGarbage(new FileSr(sr.path), referenced, liveTops, live)
  vdiPath = (sr: SrLocation, location: string, format?: 'qcow2' | 'raw') => new FileSr(sr.path).path(location, format)
  vdiImage = (sr: SrLocation, location: string) => new FileSr(sr.path).image(location)
  /** Named by a fresh uuid: the VDI's uuid is its image's name. */
  createVdi = (sr: SrLocation, size: number) => new FileSr(sr.path).create(randomUUID(), size)
  destroyVdi = (sr: SrLocation, location: string) => new FileSr(sr.path).destroy(location)
  snapshot = (sr: SrLocation, location: string, next: string) => new FileSr(sr.path).freeze(location, next)
  clone = (sr: SrLocation, base: string, location: string) => new FileSr(sr.path).cloneThin(base, location)
  resize = (sr: SrLocation, location: string, size: number) => new FileSr(sr.path).resize(location, size)
}
