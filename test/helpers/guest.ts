// A VM made as a user makes one: clone the "Flotilla test guest" template, provision it, turn it
// into a VM; optionally with SMBIOS OEM switches for the guest and a data disk at userdevice 1.
import assert from 'node:assert/strict'
import { call, waitFor } from './daemon.js'

export async function newGuest(url: string, session: string, name: string, opts: { oem?: string[]; data?: string } = {}): Promise<{ ref: string; uuid: string }> {
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
  const [template] = await c<string[]>('VM.get_by_name_label', 'Flotilla test guest')
  const ref = await c<string>('VM.clone', template, name)
  await c('VM.provision', ref)
  await c('VM.set_is_a_template', ref, false)
  if (opts.oem?.length) await c('VM.set_bios_strings', ref, Object.fromEntries(opts.oem.map((s, i) => [`oem-${i + 1}`, s])))
  if (opts.data) await c('VBD.create', { VM: ref, VDI: opts.data, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
  return { ref, uuid: await c<string>('VM.get_uuid', ref) }
}

/** The counter values the test guest printed on its serial console, in order. */
export const ticksOf = (serial: string): number[] => [...serial.matchAll(/FLOTILLA tick=(\d+) /g)].map((m) => Number(m[1]))

/**
 * A running test guest whose storage goes away (`lose`) for 12 s and comes back (`restore`): its
 * counter stops (each tick's record is written with fsync, so without storage the guest stalls in
 * it), then goes on once storage is back, unpaused if QEMU paused it. Returns the last tick it
 * printed before being shut down; the record of the tick before that must be on its disk.
 */
export async function ridesOutStorageLoss(c: <T = any>(method: string, ...params: unknown[]) => Promise<T>, vm: string, serial: () => string, lose: () => unknown, restore: () => Promise<void>): Promise<number> {
  const ticks = () => ticksOf(serial())
  await lose()
  await new Promise((r) => setTimeout(r, 8000))
  const stalledAt = Math.max(...ticks())
  await new Promise((r) => setTimeout(r, 4000))
  assert.ok(Math.max(...ticks()) <= stalledAt + 1, 'no tick is counted while the storage is away')
  await restore()
  if ((await c<string>('VM.get_power_state', vm)) === 'Paused') await c('VM.unpause', vm)
  await waitFor('the guest to go on after the storage is back', () => Math.max(...ticks()) >= stalledAt + 3 || undefined, 120_000)
  assert.equal(await c<string>('VM.get_power_state', vm), 'Running')
  const last = Math.max(...ticks())
  await c('VM.hard_shutdown', vm)
  return last
}
