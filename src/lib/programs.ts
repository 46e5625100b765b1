// The one table of external programs Flotilla runs, with the Debian package each comes from, and
// how the code finds them (runProgram, or spawn(programPath(…))): scripts/setup.sh installs every package named here
// (test/unit/programs.test.ts checks it), and a program that is absent anyway fails with an
// error that names it and its package instead of a bare ENOENT or an empty stderr.
import { execFile, type ExecFileOptions } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { promisify } from 'node:util'

export const PROGRAMS = {
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-img': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  ip: 'iproute2',
  openssl: 'openssl',
  zstd: 'zstd',
  'mkfs.ext4': 'e2fsprogs',
  'mkfs.xfs': 'xfsprogs',
  mount: 'mount',
  umount: 'mount',
  Xvnc: 'tigervnc-standalone-server',
  xterm: 'xterm',
  // Ceph RBD SRs: images and snapshots (rbd), the pool's space (ceph)
  rbd: 'ceph-common',
  ceph: 'ceph-common',
} as const

export type Program = keyof typeof PROGRAMS

/** A program of the table is not on PATH. Its code and params make it a XenAPI INTERNAL_ERROR as it stands. */
export class MissingProgramError extends Error {
  readonly code = 'INTERNAL_ERROR'
  readonly params: string[]
  constructor(readonly program: string, readonly debianPackage: string) {
    super(`${program} is not installed (Debian package ${debianPackage}; scripts/setup.sh installs it)`)
    this.name = 'MissingProgramError'
    this.params = [this.message]
  }
}

/** The absolute path of `program` on PATH, or undefined. */
export function locate(program: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue
    const candidate = join(dir, program)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not in this directory
    }
  }
  return undefined
}

/** Where `program` is, for spawn(); throws MissingProgramError when it is not installed. */
export function programPath(program: Program): string {
  const path = locate(program)
  if (path === undefined) throw new MissingProgramError(program, PROGRAMS[program])
  return path
}

/** The programs of the table that are not on PATH (the daemon warns about them at start). */
export function missingPrograms(): Program[] {
  return (Object.keys(PROGRAMS) as Program[]).filter((p) => locate(p) === undefined)
}

const execFileAsync = promisify(execFile)

/** Runs `program` to its end; its failure rejects as execFile's does (with stdout, stderr and code). */
export async function runProgram(program: Program, args: string[], options: ExecFileOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr } = await execFileAsync(programPath(program), args, { ...options, encoding: 'utf8' })
  return { stdout, stderr }
}
