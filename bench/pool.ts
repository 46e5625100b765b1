// Pool benchmark (issue 16): API read and write rates of a 3-host pool (client on the master, etcd
// with 3 voters) against a 1-host pool measured in the same run, the time from a master's kill to
// a new master answering (5 tries), and the third host's join. It only prints figures; it never
// fails on them.
//
//   npm run bench:pool          (BENCH_SECONDS=10 for longer rate runs, default 5 s per figure;
//                                BENCH_KILLS=0 to skip the fail-over tries)
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { call, jsonrpc, waitFor } from '../test/helpers/daemon.js'
import { Lab } from '../test/helpers/lab.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CLIENTS = 8
const KILLS = Number(process.env.BENCH_KILLS ?? 5)
const AIM_READS = 0.9
const AIM_WRITES = 0.5
const AIM_FAILOVER_S = 15

const login = (lab: Lab, i: number) => call<string>(lab.host(i).url, 'session.login_with_password', 'root', lab.password)

/** Calls per second of `one` from CLIENTS concurrent clients for SECONDS, after a second's warm-up. */
async function rate(one: (client: number, n: number) => Promise<unknown>): Promise<number> {
  const warmUntil = performance.now() + 1000
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (let n = 0; performance.now() < warmUntil; n++) await one(c, n)
  }))
  let done = 0
  const until = performance.now() + SECONDS * 1000
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (let n = 0; performance.now() < until; n++) {
      await one(c, n)
      done++
    }
  }))
  return done / SECONDS
}

/** CPU seconds (user + system) used so far by the processes of each host's namespace, by program. */
function cpuSeconds(lab: Lab, hosts: number[]): Map<string, number>[] {
  const ticks = 100 // USER_HZ on Linux
  return hosts.map((i) => {
    const byProgram = new Map<string, number>()
    for (const pid of lab.host(i).pids()) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
        const program = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        byProgram.set(program, (byProgram.get(program) ?? 0) + (Number(fields[11]) + Number(fields[12])) / ticks)
      } catch {
        // the process ended meanwhile
      }
    }
    return byProgram
  })
}

/** Rates, and the CPU seconds each host's processes spent per 1000 calls (where the time goes). */
async function rates(lab: Lab, master: number, hosts: number[]): Promise<{ reads: number; writes: number; readCpu: string[]; writeCpu: string[] }> {
  const s = await login(lab, master)
  const url = lab.host(master).url
  const [pool] = await call<string[]>(url, 'pool.get_all', s)
  const perThousand = (before: Map<string, number>[], after: Map<string, number>[], calls: number) =>
    after.map((a, k) => [...a].map(([program, secs]) => `${program} ${(((secs - (before[k].get(program) ?? 0)) * 1000) / calls).toFixed(2)}`).join(' + '))
  let cpu = cpuSeconds(lab, hosts)
  const reads = await rate(() => call(url, 'pool.get_record', s, pool))
  const readCpu = perThousand(cpu, (cpu = cpuSeconds(lab, hosts)), reads * SECONDS)
  // each client rewrites its own key, so the record keeps its size through the run
  const writes = await rate(async (c, n) => {
    await call(url, 'pool.remove_from_other_config', s, pool, `bench-${c}`)
    await call(url, 'pool.add_to_other_config', s, pool, `bench-${c}`, String(n))
  }) * 2
  const writeCpu = perThousand(cpu, cpuSeconds(lab, hosts), writes * SECONDS)
  return { reads, writes, readCpu, writeCpu }
}

/** What a login on host i answers: 'ok', an error code, or 'unreachable' (a daemon restarting). */
async function loginAnswer(lab: Lab, i: number): Promise<string> {
  const r = await jsonrpc(lab.host(i).url, 'session.login_with_password', ['root', lab.password, '', ''], { resend: false }).catch(() => undefined)
  return !r ? 'unreachable' : r.error ? r.error.message : 'ok'
}

/** Which host answers logins as master. */
const masterOf = (lab: Lab, hosts: number[], timeoutMs = 60_000) =>
  waitFor('a master', async () => {
    for (const i of hosts) if ((await loginAnswer(lab, i)) === 'ok') return i
    return undefined
  }, timeoutMs)

const memberAgain = (lab: Lab, i: number) => waitFor(`host ${i} a member`, async () => (await loginAnswer(lab, i)) === 'HOST_IS_SLAVE' || undefined, 90_000)

async function join(lab: Lab, i: number, master: number): Promise<void> {
  const s = await login(lab, i)
  await call(lab.host(i).url, 'pool.join', s, lab.host(master).address, 'root', lab.password)
}

const fmt = (x: number) => x.toFixed(2)

async function main(): Promise<void> {
  const single = await Lab.up(1)
  let one: Awaited<ReturnType<typeof rates>>
  try {
    one = await rates(single, 1, [1])
  } finally {
    single.down()
  }

  const lab = await Lab.up(3)
  try {
    await join(lab, 2, 1)
    await memberAgain(lab, 2)
    const joinStart = performance.now()
    await join(lab, 3, 1)
    const joinCall = performance.now() - joinStart
    await memberAgain(lab, 3)
    const joinMember = performance.now() - joinStart
    const three = await rates(lab, 1, [1, 2, 3])

    const failovers: number[] = []
    for (let k = 0; k < KILLS; k++) {
      const old = await masterOf(lab, [1, 2, 3])
      // the pool is whole again (all three hosts live) before each kill
      await sleep(3000)
      const killedAt = performance.now()
      await lab.kill(old)
      const next = await masterOf(lab, [1, 2, 3].filter((i) => i !== old))
      failovers.push((performance.now() - killedAt) / 1000)
      process.stderr.write(`kill ${k + 1}: host ${old} killed, host ${next} master after ${fmt(failovers.at(-1)!)} s\n`)
      await lab.restart(old)
      await memberAgain(lab, old)
    }

    console.log(`pool of 3 against a pool of 1 (${CLIENTS} clients, ${SECONDS} s each, client on the master):`)
    console.log(`  reads  (pool.get_record):          ${three.reads.toFixed(0)}/s vs ${one.reads.toFixed(0)}/s: ratio ${fmt(three.reads / one.reads)} (aim ≥ ${AIM_READS})`)
    console.log(`  writes (other_config add/remove): ${three.writes.toFixed(0)}/s vs ${one.writes.toFixed(0)}/s: ratio ${fmt(three.writes / one.writes)} (aim ≥ ${AIM_WRITES})`)
    const cpu = (xs: string[]) => xs.map((x, k) => `host ${k + 1}: ${x}`).join('; ')
    console.log(`  CPU s per 1000 reads,  pool of 1: ${cpu(one.readCpu)}`)
    console.log(`                         pool of 3: ${cpu(three.readCpu)}`)
    console.log(`  CPU s per 1000 writes, pool of 1: ${cpu(one.writeCpu)}`)
    console.log(`                         pool of 3: ${cpu(three.writeCpu)}`)
    console.log(`master killed → new master answering, ${KILLS} tries: ${failovers.map(fmt).join(', ')} s (sorted ${[...failovers].sort((a, b) => a - b).map(fmt).join(', ')}; aim ≤ ${AIM_FAILOVER_S} s)`)
    console.log(`third host's join: pool.join answered in ${fmt(joinCall / 1000)} s, a member answering HOST_IS_SLAVE after ${fmt(joinMember / 1000)} s`)
  } finally {
    lab.down()
  }
}

await main()
