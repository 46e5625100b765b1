// Guards against a program that runs on the developers' machines but that a fresh machine lacks:
// every program the code, the tests and the benchmarks run is in a table with its Debian
// package, the set-up installs that package, and the table tells the truth about this machine.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { locate, MissingProgramError, PROGRAMS, runProgram } from '../../src/lib/programs.js'
import { format } from '../../src/storage/local-fs.js'
import { TEST_PROGRAMS } from '../helpers/programs.js'

const ROOT = join(import.meta.dirname, '..', '..', '..')
const CALL = /\b(?:spawn|spawnSync|execFile|execFileSync|exec|execSync|run)\(\s*([^,)]+)/g
const EXECUTABLE_PATH = /executablePath:\s*([^,}\s]+)/g

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f))
}

/** The programs a file runs: literal first arguments of process calls, and constants named there. */
function programsRunBy(text: string): string[] {
  const constants = new Map([...text.matchAll(/const (\w+) = '([^']+)'/g)].map((m) => [m[1], m[2]]))
  const named = [...text.matchAll(CALL), ...text.matchAll(EXECUTABLE_PATH)].map((m) => m[1].trim())
  return named.flatMap((arg) => {
    const literal = /^'([^']+)'$/.exec(arg)?.[1]
    return literal ? [literal] : constants.has(arg) ? [constants.get(arg)!] : []
  })
}

const setupPackages = (): Set<string> => {
  const text = readFileSync(join(ROOT, 'scripts', 'setup.sh'), 'utf8')
  const list = /DEBIAN_PACKAGES=\(([^)]*)\)/.exec(text)?.[1] ?? ''
  return new Set(list.split('\n').map((l) => l.replace(/#.*/, '')).join(' ').split(/\s+/).filter(Boolean))
}

const dpkg = (...args: string[]): string | undefined => {
  try {
    return execFileSync('dpkg-query', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return undefined
  }
}
const hasDpkg = dpkg('--version') !== undefined

test('the daemon finds every program through lib/programs.ts, never by a bare name', () => {
  const offenders = sources('src')
    .filter((f) => f !== join('src', 'lib', 'programs.ts'))
    .flatMap((f) => {
      const text = readFileSync(join(ROOT, f), 'utf8')
      if (!text.includes("'node:child_process'")) return []
      return [...text.matchAll(CALL)].map((m) => m[1].trim()).filter((arg) => !/^(programPath\(|process\.execPath)/.test(arg)).map((arg) => `${f}: ${arg}`)
    })
  assert.deepEqual(offenders, [])
})

test('every program the tests and benchmarks run is in a table of programs', () => {
  const known = new Set([...Object.keys(PROGRAMS), ...Object.keys(TEST_PROGRAMS)])
  const unknown = [...sources('test'), ...sources('bench')].flatMap((f) =>
    programsRunBy(readFileSync(join(ROOT, f), 'utf8'))
      .filter((p) => !known.has(p) && p !== 'dpkg-query')
      .map((p) => `${f}: ${p}`),
  )
  assert.deepEqual(unknown, [])
})

test('the set-up installs the package of every program, unless Debian always has it', { skip: !hasDpkg && 'no dpkg here' }, () => {
  const installed = setupPackages()
  const missing = [...new Set([...Object.values(PROGRAMS), ...Object.values(TEST_PROGRAMS)])].filter((pkg) => {
    if (installed.has(pkg)) return false
    const [essential, priority] = (dpkg('-W', '-f=${Essential} ${Priority}', pkg) ?? '').split(' ')
    return !(essential === 'yes' || priority === 'required' || priority === 'important')
  })
  assert.deepEqual(missing, [])
})

test('each program is on this machine and comes from the package its table names', { skip: !hasDpkg && 'no dpkg here' }, () => {
  const table = Object.entries({ ...PROGRAMS, ...TEST_PROGRAMS })
  const paths = new Map(table.map(([program]) => [program, program.startsWith('/') ? program : locate(program)]))
  // merged /usr: dpkg may know a file by its /bin or /sbin name, or only the link's target
  const candidates = (path: string) => [path, realpathSync(path)].flatMap((p) => [p, p.replace(/^\/usr/, '')])
  const all = [...paths.values()].filter((p): p is string => p !== undefined && existsSync(p)).flatMap(candidates)
  // One dpkg-query for every path (it is slow); it exits 1 when some path has no package.
  const listing = spawnSync('dpkg-query', ['-S', ...all], { encoding: 'utf8' }).stdout
  const owner = new Map(listing.split('\n').filter(Boolean).map((line) => [line.slice(line.lastIndexOf(': ') + 2), line.split(':')[0]]))
  const wrong = table.flatMap(([program, pkg]) => {
    const path = paths.get(program)
    if (path === undefined || !existsSync(path)) return [`${program}: not installed (package ${pkg})`]
    const owners = candidates(path).map((p) => owner.get(p)).filter((o): o is string => o !== undefined)
    const depends = dpkg('-W', '-f=${Depends}, ${Pre-Depends}', pkg) ?? ''
    const ok = owners.some((o) => o === pkg || new RegExp(`(^|[ ,|])${o.replace(/[.+]/g, '\\$&')}([ ,(]|$)`).test(depends))
    return ok ? [] : [`${program}: from ${owners.join(' or ') || 'no package'}, the table says ${pkg}`]
  })
  assert.deepEqual(wrong, [])
})

test('a missing program fails naming itself and its package', async () => {
  const emptyDir = mkdtempSync(join(tmpdir(), 'flt-nopath-'))
  const path = process.env.PATH
  process.env.PATH = emptyDir
  try {
    await assert.rejects(runProgram('qemu-img', ['--version']), (err: unknown) => {
      assert.ok(err instanceof MissingProgramError)
      assert.equal(err.code, 'INTERNAL_ERROR')
      assert.match(err.params[0], /qemu-img is not installed \(Debian package qemu-utils/)
      return true
    })
    await assert.rejects(format(join(emptyDir, 'disk'), 'xfs'), (err: { code?: string; params?: string[] }) => {
      assert.equal(err.code, 'SR_BACKEND_FAILURE')
      assert.match(err.params?.[2] ?? '', /mkfs\.xfs is not installed \(Debian package xfsprogs/)
      return true
    })
  } finally {
    process.env.PATH = path
    rmSync(emptyDir, { recursive: true, force: true })
  }
})
