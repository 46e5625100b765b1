// xe's VM operation commands, as xapi names them: each is a few XenAPI calls.
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Duplex } from 'node:stream'
import { CliError, type Connection, type Invocation } from './xe.js'

type Operation = (conn: Connection, inv: Invocation, out: (s: string) => void) => Promise<void>
type Rec = Record<string, any>

/** The one VM a selector names: `uuid=`, or `vm=` (a name or a uuid). */
async function selectVm(conn: Connection, inv: Invocation, { templates = false } = {}): Promise<[string, Rec]> {
  const key = inv.params.get('uuid') ?? inv.params.get('vm') ?? inv.params.get('template')
  if (!key) throw new CliError('This command needs a VM: vm=<name or uuid> or uuid=<uuid>')
  const records = await conn.call<Record<string, Rec>>('VM.get_all_records')
  const matches = Object.entries(records).filter(([, r]) => (r.uuid === key || r.name_label === key) && Boolean(r.is_a_template) === templates && !r.is_control_domain)
  if (matches.length === 0) throw new CliError(`No matching ${templates ? 'templates' : 'VMs'} found: ${key}`)
  if (matches.length > 1) throw new CliError(`Multiple matches for ${key}: use uuid= to pick one`)
  return matches[0]!
}

const simple = (method: string, ...extra: unknown[]): Operation => async (conn, inv) => {
  const [ref] = await selectVm(conn, inv)
  await conn.call(method, ref, ...extra)
}

const byForce = (clean: string, hard: string): Operation => async (conn, inv) => {
  const [ref] = await selectVm(conn, inv)
  await conn.call(inv.flags.has('force') ? hard : clean, ref)
}

/** vm-install: clone the template, point its disks at the SR, provision, make it a VM. */
const install: Operation = async (conn, inv, out) => {
  const name = inv.params.get('new-name-label')
  if (!name) throw new CliError('This command needs new-name-label=')
  const [template] = await selectVm(conn, inv, { templates: true })
  const pool = Object.values(await conn.call<Record<string, Rec>>('pool.get_all_records'))[0]!
  const srs = await conn.call<Record<string, Rec>>('SR.get_all_records')
  const wanted = inv.params.get('sr-uuid') ?? inv.params.get('sr-name-label')
  const sr = wanted ? Object.entries(srs).find(([, r]) => r.uuid === wanted || r.name_label === wanted)?.[0] : pool.default_SR
  if (!sr || !srs[sr]) throw new CliError(wanted ? `No SR found: ${wanted}` : 'The pool has no default SR: give sr-uuid=')
  const vm = await conn.call<string>('VM.clone', template, name)
  const disks = (await conn.call<Rec>('VM.get_other_config', vm)).disks as string | undefined
  if (disks) {
    await conn.call('VM.remove_from_other_config', vm, 'disks')
    await conn.call('VM.add_to_other_config', vm, 'disks', disks.replace(/sr="[^"]*"/g, `sr="${srs[sr]!.uuid}"`))
  }
  await conn.call('VM.provision', vm)
  await conn.call('VM.set_is_a_template', vm, false)
  out(await conn.call<string>('VM.get_uuid', vm))
}

/** vm-uninstall: the VM and the disks only it uses. */
const uninstall: Operation = async (conn, inv) => {
  const [ref, vm] = await selectVm(conn, inv)
  if (vm.power_state !== 'Halted') await conn.call('VM.hard_shutdown', ref)
  const vdis: string[] = []
  for (const vbd of vm.VBDs as string[]) {
    const rec = await conn.call<Rec>('VBD.get_record', vbd)
    if (rec.type === 'Disk' && rec.VDI !== 'OpaqueRef:NULL') vdis.push(rec.VDI)
  }
  await conn.call('VM.destroy', ref)
  for (const vdi of vdis) if ((await conn.call<string[]>('VDI.get_VBDs', vdi)).length === 0) await conn.call('VDI.destroy', vdi)
}

/** console: the VM's serial console on this terminal, until the connection ends (Ctrl-] leaves). */
const attachConsole: Operation = async (conn, inv) => {
  const [, vm] = await selectVm(conn, inv)
  const consoles = await Promise.all((vm.consoles as string[]).map((c) => conn.call<Rec>('console.get_record', c)))
  const vt100 = consoles.find((c) => c.protocol === 'vt100')
  if (!vt100) throw new CliError('The VM has no text console (is it running?)')
  const send = inv.ssl ? httpsRequest : httpRequest
  const socket = await new Promise<Duplex>((resolve, reject) => {
    const req = send({ host: inv.server, port: inv.port, method: 'CONNECT', path: `/console?uuid=${vt100.uuid}&session_id=${conn.sessionRef}`, rejectUnauthorized: false })
    req.on('connect', (res, s, head) => {
      if (res.statusCode !== 200) return reject(new CliError(`the console refused: HTTP ${res.statusCode}`))
      if (head.length) s.unshift(head)
      resolve(s)
    })
    req.on('error', reject)
    req.end()
  })
  const stdin = process.stdin
  if (stdin.isTTY) stdin.setRawMode(true)
  stdin.on('data', (d: Buffer) => (d.includes(0x1d) ? socket.end() : socket.write(d)))
  socket.pipe(process.stdout)
  await new Promise((resolve) => socket.once('close', resolve))
  if (stdin.isTTY) stdin.setRawMode(false)
  stdin.pause()
}

export const OPERATIONS: Record<string, Operation> = {
  'vm-install': install,
  'vm-uninstall': uninstall,
  'vm-start': simple('VM.start', false, false),
  'vm-shutdown': byForce('VM.clean_shutdown', 'VM.hard_shutdown'),
  'vm-reboot': byForce('VM.clean_reboot', 'VM.hard_reboot'),
  'vm-suspend': simple('VM.suspend'),
  'vm-resume': simple('VM.resume', false, false),
  'vm-pause': simple('VM.pause'),
  'vm-unpause': simple('VM.unpause'),
  console: attachConsole,
}
