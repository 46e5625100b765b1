// xe's pool and host commands, as xapi has them (cli_frontend.ml, cli_operations.ml): their
// parameters, their help, their warnings and the "Type 'yes' to continue" that --force skips.
import { createInterface } from 'node:readline'
import { apiName } from './format.js'
import type { Operation } from './vm-commands.js'
import { CliError, ServerError, type Connection, type Invocation } from './xe.js'

type Rec = Record<string, any>

export interface CommandSpec {
  reqd: string[]
  optn: string[]
  help: string
  run: Operation
}

/** `--force` or `force=true`: xe sends both as the same boolean parameter. */
export const forced = (inv: Invocation) => inv.flags.has('force') || inv.params.get('force') === 'true'

/** xapi's check_required_keys, before anything is sent. */
export function checkRequired(inv: Invocation, reqd: string[]): void {
  for (const key of reqd) if (!inv.params.has(key)) throw new CliError(`Required parameter not found: ${key}`)
}

/** The warnings, then a line from the terminal: only "yes" goes on (xapi's user_says_yes). */
async function userSaysYes(warnings: string[], out: (s: string) => void): Promise<boolean> {
  for (const w of warnings) out(w)
  out("Type 'yes' to continue")
  const lines = createInterface({ input: process.stdin })
  const answer = await new Promise<string>((resolve) => {
    lines.once('line', resolve)
    lines.once('close', () => resolve(''))
  })
  lines.close()
  if (answer.trim().toLowerCase() === 'yes') return true
  out(`Aborted (you typed: '${answer}')`)
  return false
}

async function hostByUuid(conn: Connection, inv: Invocation, param: string): Promise<string> {
  return conn.call<string>('host.get_by_uuid', inv.params.get(param)!)
}

/** A host by uuid, name-label or hostname (xapi's get_host_by_name_or_id). */
export async function hostByNameOrId(conn: Connection, name: string): Promise<string> {
  const hosts = await conn.call<Record<string, Rec>>('host.get_all_records')
  const hit = Object.entries(hosts).find(([, h]) => h.uuid === name || h.name_label === name || h.hostname === name)
  if (!hit) throw new CliError(`Host ${name} not found`)
  return hit[0]
}

/**
 * xapi's host selectors: `host=<uuid, hostname or name-label>` and field filters (`uuid=`,
 * `name-label=`…); none selects every host, and more than one host needs --multiple.
 */
async function selectHosts(conn: Connection, inv: Invocation): Promise<string[]> {
  const hosts = await conn.call<Record<string, Rec>>('host.get_all_records')
  const name = inv.params.get('host')
  const filters = [...inv.params].filter(([k]) => k !== 'host').map(([k, v]) => [k === 'host-uuid' ? 'uuid' : apiName(k), v] as const)
  const matches = Object.entries(hosts).filter(([, h]) => (name === undefined || [h.uuid, h.hostname, h.name_label].includes(name)) && filters.every(([k, v]) => String(h[k]) === v))
  if (matches.length === 0) throw new CliError('No matching hosts found')
  if (matches.length > 1 && !inv.flags.has('multiple')) throw new CliError('Multiple matching hosts found. --multiple required to complete the operation')
  return matches.map(([ref]) => ref)
}

/** The VDIs of the SRs only this host sees: eject reinitialises them. */
async function localVdis(conn: Connection, host: string): Promise<string[]> {
  const pbds = await conn.call<Record<string, Rec>>('PBD.get_all_records')
  const hostsOf = (sr: string) => Object.values(pbds).filter((p) => p.SR === sr).map((p) => p.host as string)
  const localSrs = new Set(Object.values(pbds).filter((p) => p.host === host && hostsOf(p.SR).every((h) => h === host)).map((p) => p.SR as string))
  const vdis = await conn.call<Record<string, Rec>>('VDI.get_all_records')
  return Object.values(vdis).filter((v) => localSrs.has(v.SR)).map((v) => `VDI: ${v.uuid} (${v.name_label})`)
}

/** host-forget and host-declare-dead: the host by uuid=, after the warnings unless --force. */
const carefulHostOp = (method: string, warnings: string[]): Operation => async (conn, inv, out) => {
  const host = await hostByUuid(conn, inv, 'uuid')
  if (forced(inv) || (await userSaysYes(warnings, out))) await conn.call(method, host)
}

/** Whether the host xe was pointed at answers logins itself: a master (or a host of its own). */
async function answersLogins(conn: Connection, inv: Invocation): Promise<boolean> {
  try {
    await conn.rpc('session.logout', await conn.rpc<string>('session.login_with_password', inv.user, inv.password, '1.0', 'xe'))
    return true
  } catch (err) {
    if (err instanceof ServerError && (err.code === 'HOST_IS_SLAVE' || err.code === 'HOST_IN_EMERGENCY_MODE')) return false
    throw err
  }
}

/** Commands xapi never forwards to the master: the host xe was pointed at runs them, with a session of its own. */
export const MEMBER_COMMANDS: Record<string, CommandSpec> = {
  'pool-emergency-reset-master': {
    reqd: ['master-address'],
    optn: [],
    help: 'Instruct slave to reset master address.',
    run: async (conn, inv) => {
      await conn.call('pool.emergency_reset_master', inv.params.get('master-address')!)
    },
  },
  'pool-emergency-transition-to-master': {
    reqd: [],
    optn: ['force'],
    help: "Instruct slave to become pool master. The operation will be ignored if this host is already master; the optional parameter '--force' will force the operation.",
    run: async (conn, inv, out) => {
      if (!forced(inv) && (await answersLogins(conn, inv))) return out("Host agent is already master. Use '--force' to execute the operation anyway.")
      await conn.call('pool.emergency_transition_to_master')
    },
  },
}

export const POOL_COMMANDS: Record<string, CommandSpec> = {
  'pool-join': {
    reqd: ['master-address', 'master-username', 'master-password'],
    optn: ['force'],
    help: 'Instruct host to join an existing pool.',
    run: async (conn, inv) => {
      const args = ['master-address', 'master-username', 'master-password'].map((k) => inv.params.get(k)!)
      try {
        await conn.call(forced(inv) ? 'pool.join_force' : 'pool.join', ...args)
      } catch (err) {
        if (!(err instanceof ServerError && err.code === 'POOL_JOINING_HOST_CONNECTION_FAILED')) throw err
        throw new CliError('Host cannot contact destination host: connection refused.\nCheck destination host has services running and accessible from this host.')
      }
    },
  },
  'pool-eject': {
    reqd: ['host-uuid'],
    optn: [],
    help: 'Instruct host to leave an existing pool.',
    run: async (conn, inv, out) => {
      const host = await hostByUuid(conn, inv, 'host-uuid')
      if (!forced(inv)) {
        const vdis = await localVdis(conn, host)
        const warnings = ["WARNING: Ejecting a host from the pool will reinitialise that host's local SRs.", 'WARNING: Any data contained with the local SRs will be lost.']
        if (vdis.length) warnings.push('The following VDI objects will be destroyed:', ...vdis)
        if (!(await userSaysYes(warnings, out))) return
      }
      await conn.call('pool.eject', host)
    },
  },
  'pool-designate-new-master': {
    reqd: ['host-uuid'],
    optn: [],
    help: 'Request an orderly handover of the role of master to another host.',
    run: async (conn, inv) => {
      await conn.call('pool.designate_new_master', await hostByUuid(conn, inv, 'host-uuid'))
    },
  },
  'pool-recover-slaves': {
    reqd: [],
    optn: [],
    help: 'Instruct master to try and reset master-address of all slaves currently running in emergency mode.',
    run: async (conn, _inv, out) => {
      for (const host of await conn.call<string[]>('pool.recover_slaves')) out(await conn.call<string>('host.get_uuid', host))
    },
  },
  'host-disable': {
    reqd: [],
    optn: [],
    help: 'Disable the XE host.',
    run: async (conn, inv) => {
      for (const host of await selectHosts(conn, inv)) await conn.call('host.disable', host)
    },
  },
  'host-shutdown': {
    reqd: [],
    optn: [],
    help: 'Shutdown the XE host.',
    run: async (conn, inv) => {
      for (const host of await selectHosts(conn, inv)) await conn.call('host.shutdown', host)
    },
  },
  'host-reboot': {
    reqd: [],
    optn: [],
    help: 'Reboot the XE host.',
    run: async (conn, inv) => {
      for (const host of await selectHosts(conn, inv)) await conn.call('host.reboot', host)
    },
  },
  'host-enable': {
    reqd: [],
    optn: [],
    help: 'Enable the XE host.',
    run: async (conn, inv) => {
      for (const host of await selectHosts(conn, inv)) {
        await conn.call('host.remove_from_other_config', host, 'MAINTENANCE_MODE')
        await conn.call('host.enable', host)
      }
    },
  },
  'host-forget': {
    reqd: ['uuid'],
    optn: [],
    help: "Forget about the host without contacting it explicitly. WARNING: this call is useful if the host to 'forget' is dead; however, if the host is live and part of the pool, you should consider using pool-eject instead.",
    run: carefulHostOp('host.destroy', [
      'WARNING: A host should only be forgotten if it is physically unrecoverable;',
      "WARNING: if possible, Hosts should be 'ejected' from the Pool instead.",
      'WARNING: Once a host has been forgotten it will have to be re-installed.',
      'WARNING: This operation is irreversible.',
    ]),
  },
  'host-declare-dead': {
    reqd: ['uuid'],
    optn: [],
    help: 'Declare that the the host is dead without contacting it explicitly. WARNING: This call is dangerous and can cause data loss if the host is not actually dead',
    run: carefulHostOp('host.declare_dead', [
      'WARNING: A host should only be declared dead if it is verified offline.',
      'WARNING: Performing this operation if the host is still online and has any',
      'WARNING: running VMs may lead to possible data loss and/or corruption.',
    ]),
  },
}

/** `xe help <command>` as xapi prints it. */
export function describeCommand(name: string, spec: CommandSpec): string {
  return [
    `command name            : ${name}`,
    `        reqd params     : ${spec.reqd.join(', ')}`,
    `        optional params : ${spec.optn.join(', ')}`,
    `        description     : ${spec.help}`,
  ].join('\n')
}
