// The agent's storage calls: SRs are directories on this host, VDIs are image files in them.
import { readdir, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
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
  'iso.scan': async ({ path }: SrRef) => isoImages(path),
  'iso.create': async ({ path, name, size }: SrRef & { name: string; size: number }) => {
    const file = isoPath(path, name)
    await writeFile(file, '', { flag: 'wx' })
    await truncate(file, size)
    return { location: name, virtualSize: size, physicalUtilisation: 0 }
  },
  'iso.path': async ({ path, name }: SrRef & { name: string }) => isoPath(path, name),
  'iso.destroy': async ({ path, name }: SrRef & { name: string }) => rm(isoPath(path, name), { force: true }),
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
  'vdi.copy-raw': async ({ path, from, to }: SrRef & { from: string; to: string }) => new FileSr(path).copyRaw(from, to),
  'vdi.image': async ({ path, location }: SrRef & { location: string }) => new FileSr(path).image(location),
  'vdi.path': async ({ path, location, format }: SrRef & { location: string; format?: VdiFormat }) => new FileSr(path).path(location, format),
  'vdi.reserve-raw': async ({ path, location, size }: SrRef & { location: string; size: number }) => new FileSr(path).reserveRaw(location, size),
}

/** An ISO library's file by name: a plain name ending in .iso, never a path. */
export function isoPath(dir: string, name: string): string {
  if (!/^[^/\0]{1,250}\.iso$/i.test(name) || name.startsWith('.')) throw Object.assign(new Error(`bad ISO name ${name}`), { code: 'VDI_MISSING', params: [dir, name] })
  return join(dir, name)
}

async function isoImages(dir: string): Promise<VdiImage[]> {
  const out: VdiImage[] = []
  for (const name of await readdir(dir)) {
    if (!/\.iso$/i.test(name)) continue
    const st = await stat(join(dir, name))
    if (st.isFile()) out.push({ location: name, virtualSize: st.size, physicalUtilisation: st.blocks * 512 })
  }
  return out
}
