// A VM made as a user makes one: clone the "Flotilla test guest" template, provision it, turn it
// into a VM; optionally with SMBIOS OEM switches for the guest and a data disk at userdevice 1.
import { call } from './daemon.js'

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
