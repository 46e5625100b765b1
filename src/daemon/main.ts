// The `flotilla` command: the daemon and host administration.
import { Command, InvalidArgumentError } from 'commander'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { FLOTILLA_VERSION } from './bootstrap.js'
import { serve } from './serve.js'
import { MissingProgramError, missingPrograms, PROGRAMS } from '../lib/programs.js'

const port = (value: string) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('not a port number')
  return n
}

const program = new Command()
program.name('flotilla').description('Flotilla: a XenAPI-compatible virtualization host on QEMU/KVM').version(FLOTILLA_VERSION)

program
  .command('serve')
  .description('run the host daemon (API, pool database, host agent) in the foreground')
  .option('--data-dir <dir>', 'where this host keeps its state', '/var/lib/flotilla')
  .option('--address <addr>', "the host's management address (default: the default route's interface); also the only address listened on")
  .option('--http-port <n>', 'HTTP port', port, 80)
  .option('--https-port <n>', 'HTTPS port', port, 443)
  .option('--request-log <file>', 'append one line per HTTP request (method, path, RPC method) to this file')
  .action(async (o: { dataDir: string; address?: string; httpPort: number; httpsPort: number; requestLog?: string }) => {
    // Disk transfers allocate a buffer for every packet they receive; V8 answers that external
    // memory with incremental marking, which cost an XVA import more CPU than the rest of the
    // daemon's work (4.7 s of user time for 2 GiB, 2.1 s without). The heap is small, so full
    // collections stay short.
    setFlagsFromString('--no-incremental-marking')
    for (const program of missingPrograms()) console.error(`flotilla: warning: ${new MissingProgramError(program, PROGRAMS[program]).message}`)
    try {
      await serve(o)
    } catch (err) {
      console.error(`flotilla: ${(err as Error).message}`)
      process.exit(1)
    }
  })

program
  .command('stop')
  .description('stop the daemon serving a data dir (its VMs keep running)')
  .option('--data-dir <dir>', 'the data dir of the daemon to stop', '/var/lib/flotilla')
  .action((o: { dataDir: string }) => {
    let pid: number
    try {
      pid = Number(readFileSync(join(o.dataDir, 'run', 'flotilla.pid'), 'utf8'))
      process.kill(pid, 'SIGTERM')
    } catch {
      console.error(`flotilla: no daemon is running for ${o.dataDir}`)
      process.exit(1)
    }
    console.log(`sent SIGTERM to flotilla (pid ${pid})`)
  })

await program.parseAsync()
