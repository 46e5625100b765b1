// Where an import puts its data until all of it has arrived, so that a failed or short upload
// leaves the VDI as it was. A blank VDI (an XVA import's new disks, what Xen Orchestra restores
// into) gets a new image written directly (storage/qcow2-writer.ts) that takes its place; one
// holding data gets a qcow2 overlay written through qemu-nbd and committed into it.
import { randomUUID } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { commitImage, createImage, imageHeader, mapImage, type ImageFormat } from '../qemu/img.js'
import { NbdServer } from '../qemu/nbd.js'
import { Qcow2Writer } from '../storage/qcow2-writer.js'
import type { BlockSink } from './block-writes.js'

/** A file next to an image that nothing takes for a VDI (SR.scan skips hidden files). */
export const hiddenTemp = (imagePath: string, what: string) => join(dirname(imagePath), `.${what}-${randomUUID()}.qcow2`)

export interface ImportSink extends BlockSink {
  /** Puts what was written into the VDI. */
  complete(): Promise<void>
  /** Drops what was written; the VDI stays as it was. */
  discard(): Promise<void>
}

/** Whether an image holds nothing: no data and no backing file (a VDI just created). Fails when a VM has it open. */
async function isBlank(image: { path: string; format: ImageFormat }): Promise<boolean> {
  if ((await imageHeader(image.path, image.format)).backingFile) return false
  return !(await mapImage(image.path, image.format)).some((e) => e.data && !e.zero)
}

/**
 * A new image for a blank qcow2 `image` (no data, no backing file), written in increasing
 * offsets beside it, that takes its place on `complete`.
 */
export async function newImageSink(image: { path: string; format: ImageFormat }, virtualSize: number): Promise<ImportSink> {
  const writer = await Qcow2Writer.create(hiddenTemp(image.path, 'import'), virtualSize)
  return {
    write: (offset, data) => writer.write(offset, data),
    writeZeroes: async () => undefined,
    complete: async () => {
      // Takes the image's lock for a moment: fails if a VM has opened the disk meanwhile.
      await imageHeader(image.path, image.format)
      await writer.finish(image.path)
    },
    discard: () => writer.abort(),
  }
}

/**
 * Opens the sink for data written into `image`, in increasing offsets unless `inOrder` is
 * false (then always an overlay). Fails with ImageLockedError when a VM has the image.
 */
export async function openImportSink(image: { path: string; format: ImageFormat }, virtualSize: number, { inOrder = true } = {}): Promise<ImportSink> {
  if (inOrder && image.format === 'qcow2' && (await isBlank(image))) return newImageSink(image, virtualSize)
  const overlay = hiddenTemp(image.path, 'import')
  try {
    await createImage({ path: overlay, format: 'qcow2', size: virtualSize, backing: image })
    const { server, client } = await NbdServer.open(overlay, 'qcow2', { readOnly: false })
    return {
      write: (offset, data) => client.write(offset, data),
      writeZeroes: (offset, length) => client.writeZeroes(offset, length),
      complete: async () => {
        await client.flush()
        await client.close()
        await server.stop()
        await commitImage(overlay, 'qcow2')
        await rm(overlay, { force: true })
      },
      discard: async () => {
        client.destroy()
        await server.kill()
        await rm(overlay, { force: true })
      },
    }
  } catch (err) {
    await rm(overlay, { force: true })
    throw err
  }
}
