// What tests read back from disk images: the guest content of a qcow2 image, as a checksum.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** The sha256 of a qcow2 image's guest content (its raw form, written to a scratch file in `scratchDir`). */
export async function contentHash(path: string, scratchDir: string): Promise<string> {
  const raw = join(scratchDir, `content-${process.pid}.raw`)
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, raw])
  try {
    return createHash('sha256').update(readFileSync(raw)).digest('hex')
  } finally {
    rmSync(raw, { force: true })
  }
}
