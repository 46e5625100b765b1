// VM start latency: from the API call VM.start to the guest's first line on its serial console,
// against launching the very same QEMU command line directly, alternating in one run. Also
// prints the daemon's memory and the RSS of an idle test-guest QEMU. It only prints.
//
//   npm run bench:vm-start        (BENCH_RUNS=5 by default)
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { call, Daemon, login } from '../test/helpers/daemon.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const BANNER = 'FLOTILLA-GUEST boot'

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function waitForText(file: string, text: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(existsSync(file) && readFileSync(file, 'utf8').includes(text))) {
    if (Date.now() > deadline) throw new Error(`no "${text}" in ${file}`)
    await sleep(10)
  }
}

const daemon = new Daemon()
try {
  await daemon.start()
  const session = await login(daemon.url)
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const vm = await c<string>('VM.clone', template, 'bench')
  await c('VM.provision', vm)
  await c('VM.set_is_a_template', vm, false)
  const uuid = await c<string>('VM.get_uuid', vm)
  const runDir = join(daemon.dataDir, 'run', 'vm', uuid.replace(/-/g, '').slice(0, 12))

  const viaApi: number[] = []
  const direct: number[] = []
  let argv: string[] = []
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now()
    await c('VM.start', vm, false, false)
    await waitForText(join(runDir, 'serial.log'), BANNER)
    viaApi.push(performance.now() - t0)
    // The launcher logs the exact command line it ran.
    argv = /launching \S+ (.*)$/m.exec(readFileSync(join(runDir, 'qemu.log'), 'utf8'))![1]!.split(' ')
    await c('VM.hard_shutdown', vm)

    const own = mkdtempSync(join(tmpdir(), 'flt-bench-'))
    const args = argv.map((a) => a.replaceAll(runDir, own))
    const t1 = performance.now()
    const qemu = spawn('qemu-system-x86_64', args, { stdio: 'ignore' })
    await waitForText(join(own, 'serial.log'), BANNER)
    direct.push(performance.now() - t1)
    const exited = new Promise((r) => qemu.once('exit', r))
    qemu.kill('SIGKILL')
    await exited
    rmSync(own, { recursive: true, force: true })
  }

  await c('VM.start', vm, false, false)
  await waitForText(join(runDir, 'serial.log'), 'FLOTILLA tick=5')
  const qemuRss = rssMiB(Number(readFileSync(join(runDir, 'qemu.pid'), 'utf8')))
  const daemonRss = rssMiB(daemon.child.pid!)
  await c('VM.hard_shutdown', vm)

  const api = median(viaApi)
  const bare = median(direct)
  console.log('-'.repeat(84))
  console.log(`VM.start → first guest line (median of ${RUNS})   API ${(api / 1000).toFixed(2)} s   direct QEMU ${(bare / 1000).toFixed(2)} s   ratio ${(api / bare).toFixed(2)}   aim ≤ 1.25`)
  console.log(`  API runs:    ${viaApi.map((t) => (t / 1000).toFixed(2)).join(' ')} s`)
  console.log(`  direct runs: ${direct.map((t) => (t / 1000).toFixed(2)).join(' ')} s`)
  console.log(`daemon RSS ${daemonRss.toFixed(0)} MiB; idle test-guest QEMU RSS ${qemuRss.toFixed(0)} MiB (256 MiB guest, ${argv.some((a) => a.includes('accel=kvm')) ? 'KVM' : 'TCG'})`)
  console.log('-'.repeat(84))
} finally {
  await daemon.dispose()
}
