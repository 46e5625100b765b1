// bench/migrate: VM.pool_migrate of the 256 MiB test guest back and forth between the two hosts
// of a lab pool whose SR is NFS (nfs-ganesha in the lab's storage namespace), idle and busy (the
// flotilla:diskwrite switch: 1 MiB written and fsync'd every second). Baseline, in the same runs:
// QEMU's own figures for the same migration (query-migrate's total-time and downtime, which the
// daemon logs beside its own). Printed: the API call's time; Flotilla's total (call to the VM
// running on the destination) and downtime (QEMU's, plus the switch-over until the destination
// runs it) against QEMU's. Aims: downtime ≤ 1.1× and total ≤ 1.25× QEMU's.
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { call, waitFor } from '../test/helpers/daemon.js'
import { newGuest } from '../test/helpers/guest.js'
import { Lab } from '../test/helpers/lab.js'
import { NfsServer } from '../test/helpers/nfs-server.js'

const RUNS = Number(process.env.FLOTILLA_MIGRATE_RUNS ?? 6)
const LINE = /VM (\S+) migrated to host \S+ in (\d+) ms \(QEMU's migration (\d+) ms\), downtime (\d+) ms \(QEMU's (\d+) ms\)/g

interface Run { callMs: number; totalMs: number; qemuTotalMs: number; downtimeMs: number; qemuDowntimeMs: number }

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const lab = await Lab.up(2)
try {
  const nfs = await NfsServer.start(lab)
  await lab.join(2)
  const url = lab.host(1).url
  const session = await call<string>(url, 'session.login_with_password', 'root', lab.password)
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
  const hosts = new Map<number, string>()
  for (const h of await c<string[]>('host.get_all')) hosts.set((await c<string>('host.get_address', h)) === lab.host(1).address ? 1 : 2, h)
  for (const h of hosts.values()) await waitFor('both hosts live', async () => (await c<boolean>('host_metrics.get_live', await c<string>('host.get_metrics', h))) || undefined, 90_000)
  const sr = await c<string>('SR.create', hosts.get(1), { server: nfs.address, serverpath: nfs.exportPath }, 0, 'NFS', '', 'nfs', 'user', true, {})
  const accel = String((await c<Record<string, string>>('host.get_software_version', hosts.get(1))).xen)
  console.log(`migrate: the 256 MiB test guest on NFS, ${RUNS} moves between 2 lab hosts each, on ${accel}`)

  for (const [label, oem] of [['idle', []], ['busy (diskwrite)', ['flotilla:diskwrite=1']]] as const) {
    const local = await newGuest(url, session, `bench ${label}`)
    const vm = await c<string>('VM.copy', local.ref, `migrating ${label}`, sr)
    await c('VM.destroy', local.ref)
    const data = await c<string>('VDI.create', { SR: sr, virtual_size: 128 * 2 ** 20, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    await c('VBD.create', { VM: vm, VDI: data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
    if (oem.length) await c('VM.set_bios_strings', vm, Object.fromEntries(oem.map((s, i) => [`oem-${i + 1}`, s])))
    const uuid = await c<string>('VM.get_uuid', vm)
    await c('VM.start_on', vm, hosts.get(1), false, false)
    await waitFor('the guest to tick', () => /FLOTILLA tick=5 /.test(lab.host(1).daemon.serial(uuid)) || undefined, 180_000)
    const runs: Run[] = []
    for (let i = 0; i < RUNS; i++) {
      const to = i % 2 === 0 ? 2 : 1
      const logBefore = readFileSync(lab.host(1).log, 'utf8').length
      const t0 = performance.now()
      await c('VM.pool_migrate', vm, hosts.get(to), {})
      const callMs = performance.now() - t0
      const line = [...readFileSync(lab.host(1).log, 'utf8').slice(logBefore).matchAll(LINE)].find((m) => m[1] === uuid)
      if (!line) throw new Error('the master logged no migration line')
      runs.push({ callMs, totalMs: Number(line[2]), qemuTotalMs: Number(line[3]), downtimeMs: Number(line[4]), qemuDowntimeMs: Number(line[5]) })
      await waitFor('the guest to tick on its new host', () => /FLOTILLA tick=\d+ /.test(lab.host(to).daemon.serial(uuid)) || undefined, 60_000)
      await new Promise((r) => setTimeout(r, 2000))
    }
    for (const r of runs) console.log(`${label.padEnd(17)} call ${r.callMs.toFixed(0).padStart(5)} ms  total ${String(r.totalMs).padStart(5)} ms (QEMU ${String(r.qemuTotalMs).padStart(4)})  downtime ${String(r.downtimeMs).padStart(4)} ms (QEMU ${String(r.qemuDowntimeMs).padStart(4)})`)
    const m = (f: (r: Run) => number) => median(runs.map(f))
    console.log(`${label.padEnd(17)} median: total ${m((r) => r.totalMs)} / ${m((r) => r.qemuTotalMs)} ms = ${(m((r) => r.totalMs) / m((r) => r.qemuTotalMs)).toFixed(2)}× QEMU's (aim ≤ 1.25), downtime ${m((r) => r.downtimeMs)} / ${m((r) => r.qemuDowntimeMs)} ms = ${(m((r) => r.downtimeMs) / Math.max(1, m((r) => r.qemuDowntimeMs))).toFixed(2)}× (aim ≤ 1.1), call ${m((r) => r.callMs).toFixed(0)} ms`)
    await c('VM.hard_shutdown', vm)
  }
} finally {
  lab.down()
}
