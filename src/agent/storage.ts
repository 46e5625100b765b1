// The agent's storage calls: SRs are directories on this host, VDIs are image files in them.
import { rm } from 'node:fs/promises'
import { FileSr, type SrUsage, type VdiFormat, type VdiImage } from '../storage/file-sr.js'
import { format, mount, unmount, type LocalFs } from '../storage/local-fs.js'

export type { SrUsage, VdiImage }

export interface SrRef {
  /** The SR directory (device_config.path of its PBD on this host). */
  path: string
}

/** Where the SR lives on this host: a directory, or a block device with its filesystem and mount point. */
export interface SrPlacement extends SrRef {
  device?: string
  fs?: LocalFs
}

export const storageMethods = {
  'sr.make': async ({ path, device, fs }: SrPlacement) => {
    if (device) {
      await format(device, fs ?? 'ext4')
      await mount(device, fs ?? 'ext4', path)
    }
    await new FileSr(path).attach()
  },
  'sr.attach': async ({ path, device, fs }: SrPlacement) => {
    if (device) await mount(device, fs ?? 'ext4', path)
    await new FileSr(path).attach()
  },
  'sr.detach': async ({ path, device }: SrPlacement) => {
    if (device) await unmount(path)
  },
  'sr.remove': async ({ path, device }: SrPlacement) => {
    await rm(path, { recursive: true, force: true, maxRetries: 0 }).catch(() => undefined)
    if (device) {
      await unmount(path)
      await rm(path, { recursive: true, force: true })
    }
  },
  'sr.usage': async ({ path }: SrRef): Promise<SrUsage> => new FileSr(path).usage(),
  'sr.scan': async ({ path }: SrRef): Promise<VdiImage[]> => new FileSr(path).scan(),
  'vdi.create': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).create(location, size),
  'vdi.destroy': async ({ path, location }: SrRef & { location: string }) => new FileSr(path).destroy(location),
  'vdi.clone': async ({ path, base, location }: SrRef & { base: string; location: string }) => new FileSr(path).cloneThin(base, location),
  'vdi.copy': async ({ path, source, location }: SrRef & { source: string; location: string }) => new FileSr(path).importCopy(source, 'qcow2', location),
  'vdi.import-file': async ({ path, source, format, location }: SrRef & { source: string; format: 'qcow2' | 'raw'; location: string }) =>
    new FileSr(path).importCopy(source, format, location),
  'vdi.resize': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).resize(location, size),
  'vdi.path': async ({ path, location, format }: SrRef & { location: string; format?: VdiFormat }) => new FileSr(path).path(location, format),
  'vdi.reserve-raw': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).reserveRaw(location, size),
}
