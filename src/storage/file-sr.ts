// File-based SRs (types ext, xfs, zfs and nfs): a directory holding one qcow2 file per VDI, named
// after the VDI's location (its uuid), on this host's filesystem or on an NFS export
// (sr-files.ts). The default local SR lives inside the data dir.
import { commitImage, convertImage, createImage, imageInfo, mapImage, rebaseImage, resizeImage } from '../qemu/img.js'
import { freezePlan, type ImageNode } from './chain.js'
import { StorageError, type Frozen, type SrUsage, type VdiFormat, type VdiImage } from './driver.js'
import { srFiles, type SrFiles } from './sr-files.js'

const IMAGE = /^([0-9a-f-]{36})\.qcow2$/

export class FileSr {
  readonly files: SrFiles

  /** `dir`: the SR's directory, or its nfs:// URL. */
  constructor(readonly dir: string) {
    this.files = srFiles(dir)
  }

  attach = () => this.files.ensure()

  path(location: string, format: VdiFormat = 'qcow2'): string {
    return this.files.file(this.fileName(location, format))
  }

  private fileName(location: string, format: VdiFormat = 'qcow2'): string {
    if (!/^[0-9a-f-]{36}$/.test(location)) throw new StorageError('VDI_MISSING', [this.dir, location])
    return `${location}.${format}`
  }

  usage = (): Promise<SrUsage> => this.files.usage()

  /** Refuses to allocate more than the filesystem has free. */
  private async reserve(bytes: number): Promise<void> {
    const { free } = await this.usage()
    if (bytes > free) throw new StorageError('SR_FULL', [String(bytes), String(free)])
  }

  async create(location: string, virtualSize: number): Promise<VdiImage> {
    await this.reserve(1024 * 1024)
    await createImage({ path: this.path(location), format: 'qcow2', size: virtualSize })
    return this.image(location)
  }

  /**
   * Makes the content of VDI `location` immutable so that snapshots and clones can build on it,
   * and moves the VDI onto a fresh overlay `next`. An overlay with nothing written yet is frozen
   * as its backing instead, so cloning a template again and again adds no chain links.
   */
  async freeze(location: string, next: string): Promise<Frozen> {
    const path = this.path(location)
    const info = await imageInfo(path, 'qcow2')
    const ownData = !info.backingFile || (await mapImage(path, 'qcow2')).some((e) => (e.depth ?? 0) === 0)
    const plan = freezePlan(location, next, ownData ? undefined : this.locationOf(info.backingFile!), ownData)
    if (plan.location === next) await createImage({ path: this.path(next), format: 'qcow2', size: info.virtualSize, backing: { path, format: 'qcow2' } })
    return plan
  }

  /** The location an image path in this SR stands for. */
  locationOf(path: string): string {
    const m = /([0-9a-f-]{36})\.qcow2$/.exec(path)
    if (!m || this.path(m[1]!) !== path) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `image ${path} is outside SR ${this.dir}`])
    return m[1]!
  }

  /** Every image of the SR with what it builds on. */
  async tree(): Promise<ImageNode[]> {
    const out: ImageNode[] = []
    for (const name of await this.files.names()) {
      const m = IMAGE.exec(name)
      if (!m) continue
      const info = await imageInfo(this.files.file(name), 'qcow2')
      out.push({ name: m[1]!, ...(info.backingFile ? { backing: this.locationOf(info.backingFile) } : {}) })
    }
    return out
  }

  /**
   * Offline merge of a hidden base into its only child: the child's data is committed into the
   * base (work in proportion to the child's data, whatever the disk's size), then the base takes
   * the child's place by an atomic rename. A crash before the rename leaves the child as it was;
   * repeating the merge is harmless. Where qemu-img cannot write into a backing file (NFS), the
   * child takes in the base's data instead (a rebase onto what the base built on): work in
   * proportion to the base's data, and the child stays the same file throughout.
   */
  async mergeOffline(base: string, child: string): Promise<void> {
    if (!this.files.commitsIntoBacking) {
      const { backingFile } = await imageInfo(this.path(base), 'qcow2')
      await rebaseImage(this.path(child), backingFile ? { path: backingFile, format: 'qcow2' } : undefined)
      return
    }
    await commitImage(this.path(child), 'qcow2')
    await this.files.rename(this.fileName(base), this.fileName(child))
  }

  /** A thin clone: a new image whose backing file is `base` (which must then stay unchanged). */
  async cloneThin(base: string, location: string): Promise<VdiImage> {
    const info = await imageInfo(this.path(base), 'qcow2')
    await createImage({ path: this.path(location), format: 'qcow2', size: info.virtualSize, backing: { path: this.path(base), format: 'qcow2' } })
    return this.image(location)
  }

  /** A full, independent copy of `source` (any image file) as this SR's VDI `location`. */
  async importCopy(source: string, sourceFormat: 'qcow2' | 'raw', location: string): Promise<VdiImage> {
    const info = await imageInfo(source, sourceFormat)
    await this.reserve(info.actualSize)
    await convertImage({ source, sourceFormat, target: this.path(location), targetFormat: 'qcow2' })
    return this.image(location)
  }

  async resize(location: string, size: number): Promise<VdiImage> {
    await resizeImage(this.path(location), size)
    return this.image(location)
  }

  async destroy(location: string): Promise<void> {
    await Promise.all([this.files.remove(this.fileName(location)), this.files.remove(this.fileName(location, 'raw'))])
  }

  /** Removes an image file of the SR (gc's deletes and merged bases). */
  removeImage = (location: string) => this.files.remove(this.fileName(location))

  /** A copy of a raw state file (a checkpoint's memory image), cloned where the filesystem can. */
  async copyRaw(from: string, to: string): Promise<string> {
    const size = await this.files.allocated(this.fileName(from, 'raw'))
    if (size === undefined) throw new StorageError('VDI_MISSING', [this.dir, from])
    await this.reserve(size)
    await this.files.copyRaw(this.fileName(from, 'raw'), this.fileName(to, 'raw'))
    return this.path(to, 'raw')
  }

  /** Room for a raw state file of up to `bytes` (checked, not preallocated). */
  async reserveRaw(location: string, bytes: number): Promise<string> {
    await this.reserve(bytes)
    return this.path(location, 'raw')
  }

  async image(location: string): Promise<VdiImage> {
    const allocated = await this.files.allocated(this.fileName(location))
    if (allocated === undefined) throw new StorageError('VDI_MISSING', [this.dir, location])
    const info = await imageInfo(this.path(location), 'qcow2')
    return { location, virtualSize: info.virtualSize, physicalUtilisation: allocated }
  }

  /**
   * The images of the SR directory that could be a VDI nobody knows of: those no other image
   * builds on (a base is a snapshot's, which has its record, or a hidden one waiting for a merge).
   */
  async scan(): Promise<VdiImage[]> {
    const tree = await this.tree()
    const bases = new Set(tree.flatMap((i) => (i.backing ? [i.backing] : [])))
    const out: VdiImage[] = []
    for (const { name } of tree) if (!bases.has(name)) out.push(await this.image(name))
    return out
  }
}
