// Compression of XVA streams: gzip with node:zlib, zstd with Debian's `zstd` binary (Node 20
// has no zstd), both as duplex streams with backpressure. gzip uses level 1 as xapi's `gzip
// --fast` does; zstd its default level 3 on all cores.
import { spawn } from 'node:child_process'
import { Duplex, PassThrough, type Readable, type Writable } from 'node:stream'
import { createGunzip, createGzip } from 'node:zlib'
import type { Compression } from './format.js'
import { programPath } from '../lib/programs.js'

/**
 * `zstd` with these arguments as a duplex stream: stdin in, stdout out; a failure is a stream
 * error. A write calls back once its bytes are in the pipe to zstd, so its buffer may be reused.
 */
function zstdProcess(args: string[]): Duplex {
  const child = spawn(programPath('zstd'), ['-q', '-c', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)))
  const duplex = new Duplex({
    write: (chunk: Buffer, _encoding, callback) => void child.stdin.write(chunk, callback),
    final: (callback) => void child.stdin.end(callback),
    read: () => void child.stdout.resume(),
  })
  child.stdout.on('data', (d: Buffer) => duplex.push(d) || child.stdout.pause())
  child.stdout.once('end', () => duplex.push(null))
  child.stdin.on('error', () => undefined)
  child.once('error', (err) => duplex.destroy(err))
  child.once('exit', (code, signal) => {
    if (code !== 0 && !duplex.destroyed) duplex.destroy(new Error(`zstd ${args.join(' ')} failed: ${stderr.trim() || `exit ${code ?? signal}`}`))
  })
  duplex.once('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return duplex
}

/**
 * `zstd -d` as a writable (stdin) and a readable (stdout) kept apart, for a pump that feeds one
 * and a parser that reads the other; a failure of zstd is an error on the readable.
 */
export function zstdDecompressor(): { input: Writable; output: Readable; kill: () => void } {
  const child = spawn(programPath('zstd'), ['-q', '-c', '-d'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)))
  child.stdin.on('error', () => undefined)
  child.once('error', (err) => child.stdout.destroy(err))
  child.once('exit', (code, signal) => {
    if (code !== 0) child.stdout.destroy(new Error(`zstd -d failed: ${stderr.trim() || `exit ${code ?? signal}`}`))
  })
  return { input: child.stdin, output: child.stdout, kill: () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')) }
}

/** The compressing stream for `c`, or undefined for none (the archive is written out as is). */
export function compressor(c: Compression): Duplex | undefined {
  if (c === 'gzip') return createGzip({ level: 1, chunkSize: 1 << 16 })
  if (c === 'zstd') return zstdProcess(['-3', '-T0'])
  return undefined
}

export function decompressor(c: Compression): Duplex {
  // A truncated gzip or zstd stream is an error (unexpected end of file), as it should be for an archive.
  if (c === 'gzip') return createGunzip({ chunkSize: 1 << 16 })
  if (c === 'zstd') return zstdProcess(['-d'])
  return new PassThrough({ highWaterMark: 1 << 20 })
}
