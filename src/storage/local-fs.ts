// Local filesystems for SRs on a block device: formatted once (ext4 or XFS), mounted under the
// host's SR root while the SR is plugged.
import { mkdir, readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { MissingProgramError, runProgram, type Program } from '../lib/programs.js'

export type LocalFs = 'ext4' | 'xfs'

async function command(binary: Program, args: string[]): Promise<void> {
  try {
    await runProgram(binary, args)
  } catch (err) {
    if (err instanceof MissingProgramError) throw Object.assign(err, { code: 'SR_BACKEND_FAILURE', params: ['1', '', err.message] })
    const { stderr } = err as { stderr?: string }
    throw Object.assign(new Error(`${binary} ${args.join(' ')}: ${stderr?.trim() || (err as Error).message}`), {
      code: 'SR_BACKEND_FAILURE',
      params: ['1', '', `${binary}: ${stderr?.trim() ?? ''}`],
    })
  }
}

export async function format(device: string, fs: LocalFs): Promise<void> {
  await command(fs === 'xfs' ? 'mkfs.xfs' : 'mkfs.ext4', fs === 'xfs' ? ['-q', '-f', device] : ['-q', '-F', device])
}

export async function isMounted(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/mounts', 'utf8')
  return mounts.split('\n').some((line) => line.split(' ')[1] === path)
}

export async function mount(device: string, fs: LocalFs, path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 })
  if (!(await isMounted(path))) await command('mount', ['-t', fs, device, path])
}

/** How long unmount waits for the last holder of a file (a QEMU that just exited, a reader) to let go. */
const BUSY_RETRY_MS = 5000
const BUSY_POLL_MS = 100

export async function unmount(path: string): Promise<void> {
  const deadline = Date.now() + BUSY_RETRY_MS
  while (await isMounted(path)) {
    try {
      await command('umount', [path])
    } catch (err) {
      if (!/target is busy/.test((err as Error).message) || Date.now() > deadline) throw err
      await sleep(BUSY_POLL_MS)
    }
  }
}
