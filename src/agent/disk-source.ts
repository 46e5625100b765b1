// A disk's guest content for the exporters (raw, VHD, XVA): read straight from the image files
// (storage/image-reader.ts), or through a read-only qemu-nbd when an image holds data that is
// not stored as is (compressed clusters). Either way the chain is pinned while it is read.
import { dirname, resolve } from 'node:path'
import { imageChain, mapImage, type ImageFormat, type MapExtent } from '../qemu/img.js'
import { NbdServer } from '../qemu/nbd.js'
import { openImageReader } from '../storage/image-reader.js'
import { pinImages } from '../storage/readers.js'

export interface DiskSource {
  /** Guest extents: where data is and where zeros are. */
  extents: readonly MapExtent[]
  read(offset: number, length: number): Promise<Buffer>
  close(): Promise<void>
  /** Ends it at once (error paths). */
  abort(): Promise<void>
}

export async function openDiskSource(path: string, format: ImageFormat): Promise<DiskSource> {
  const direct = await openImageReader(path, format)
  if (direct) return { ...direct, abort: () => direct.close() }
  const extents = await mapImage(path, format)
  const release = pinImages((await imageChain(path, format)).map((link) => resolve(dirname(path), link.path)))
  try {
    const { client, server } = await NbdServer.open(path, format, { readOnly: true })
    return {
      extents,
      read: (offset, length) => client.read(offset, length),
      close: async () => {
        await client.close()
        await server.stop()
        release()
      },
      abort: async () => {
        client.destroy()
        await server.kill()
        release()
      },
    }
  } catch (err) {
    release()
    throw err
  }
}
