// The driver of ISO libraries (type iso): a directory whose *.iso files are read-only VDIs
// named after them. It has no image chains: nothing to snapshot, clone, resize or collect.
import { mkdir, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { FileSr } from './file-sr.js'
import { StorageError, type SrCapability, type SrDriver, type SrDriverInfo, type SrLocation, type SrUsage, type VdiImage } from './driver.js'

const CAPABILITIES: readonly SrCapability[] = ['VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'SR_SCAN']

/** An ISO library's file by name: a plain name ending in .iso, never a path. */
export function isoPath(dir: string, name: string): string {
  if (!/^[^/\0]{1,250}\.iso$/i.test(name) || name.startsWith('.')) throw Object.assign(new Error(`bad ISO name ${name}`), { code: 'VDI_MISSING', params: [dir, name] })
  return join(dir, name)
}

/** What an image operation the library lacks answers: it holds no image by that name (as before drivers declared capabilities). */
const noImage = (sr: SrLocation, location: string) => Promise.reject(new StorageError('VDI_MISSING', [sr.path, location]))

export class IsoSrDriver implements SrDriver {
  info(): SrDriverInfo {
    return { type: 'iso', name: 'ISO', capabilities: CAPABILITIES }
  }

  async create(sr: SrLocation): Promise<void> {
    await this.attach(sr)
  }

  async attach(sr: SrLocation): Promise<void> {
    await mkdir(sr.path, { recursive: true, mode: 0o700 })
  }

  async detach(): Promise<void> {}

  async destroy(sr: SrLocation): Promise<void> {
    await rm(sr.path, { recursive: true, force: true, maxRetries: 0 }).catch(() => undefined)
  }

  usage = (sr: SrLocation): Promise<SrUsage> => new FileSr(sr.path).usage()

  async scan(sr: SrLocation): Promise<VdiImage[]> {
    const out: VdiImage[] = []
    for (const name of await readdir(sr.path)) {
      if (!/\.iso$/i.test(name)) continue
      const st = await stat(join(sr.path, name))
      if (st.isFile()) out.push({ location: name, virtualSize: st.size, physicalUtilisation: st.blocks * 512 })
    }
    return out
  }

  async gc() {
    return { done: [], deferred: false }
  }

  vdiPath(sr: SrLocation, location: string): string {
    return isoPath(sr.path, location)
  }

  vdiImage = noImage
  snapshot = noImage
  clone = noImage
  resize = noImage
  importImage = noImage

  /** A sparse file named after the VDI's name_label when that is an ISO file name. */
  async createVdi(sr: SrLocation, size: number, nameLabel: string): Promise<VdiImage> {
    const name = /\.iso$/i.test(nameLabel) ? nameLabel : `${randomUUID()}.iso`
    const file = isoPath(sr.path, name)
    await writeFile(file, '', { flag: 'wx' })
    await truncate(file, size)
    return { location: name, virtualSize: size, physicalUtilisation: 0 }
  }

  async destroyVdi(sr: SrLocation, location: string): Promise<void> {
    await rm(isoPath(sr.path, location), { force: true })
  }
}
