// xe: the XenAPI command line. Generic commands for every class derive from the datamodel;
// it speaks JSON-RPC to the host (HTTPS on 443, self-signed certificates accepted, or HTTP 80
// with --nossl).
import { readFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { classes, parseType, type ClassDef } from '../idl/index.js'
import { apiName, columnOf, formatRecord, matches, xeClass, xeName } from './format.js'
import { checkRequired, describeCommand, MEMBER_COMMANDS, POOL_COMMANDS } from './pool-commands.js'
import { OPERATIONS } from './vm-commands.js'

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message)
  }
}

/** A XenAPI error the host answered, with its code and parameters. */
export class ServerError extends CliError {
  constructor(
    readonly code: string,
    readonly params: string[],
  ) {
    super(describeError(code, params))
  }
}

export interface Invocation {
  server: string
  port: number
  ssl: boolean
  user: string
  password: string
  command: string
  /** What `xe help <command>` asks about. */
  topic?: string
  params: Map<string, string>
  flags: Set<string>
}

function readDotXe(): Record<string, string> {
  try {
    return Object.fromEntries(
      readFileSync(join(homedir(), '.xe'), 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    )
  } catch {
    return {}
  }
}

export function parseInvocation(argv: string[], dotXe: Record<string, string> = readDotXe(), env = process.env): Invocation {
  const params = new Map<string, string>()
  const flags = new Set<string>()
  let command = ''
  let topic: string | undefined
  const opts: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (['-s', '-p', '-u', '-pw', '-pwf'].includes(a)) {
      const v = argv[++i]
      if (v === undefined) throw new CliError(`${a} needs a value`)
      opts[a] = v
    } else if (a.startsWith('--')) flags.add(a.slice(2))
    else if (!command && !a.includes('=')) command = a
    else if (command === 'help' && topic === undefined && !a.includes('=')) topic = a
    else if (a.includes('=')) params.set(a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1))
    else throw new CliError(`unexpected argument: ${a}`)
  }
  const ssl = !flags.has('nossl')
  const password = opts['-pw'] ?? (opts['-pwf'] ? readFileSync(opts['-pwf'], 'utf8').split('\n')[0]! : undefined) ?? dotXe.password ?? env.XE_PASSWORD ?? ''
  return {
    server: opts['-s'] ?? dotXe.server ?? '127.0.0.1',
    port: Number(opts['-p'] ?? dotXe.port ?? (ssl ? 443 : 80)),
    ssl,
    user: opts['-u'] ?? dotXe.username ?? env.XE_USERNAME ?? 'root',
    password,
    command,
    ...(topic === undefined ? {} : { topic }),
    params,
    flags,
  }
}

export class Connection {
  private session = ''
  /** A session of this host alone (slave_local_login_with_password): it ends with local_logout. */
  private local = false

  get sessionRef(): string {
    return this.session
  }
  constructor(private readonly inv: Invocation) {}

  async rpc<T>(method: string, ...params: unknown[]): Promise<T> {
    const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 })
    const send = this.inv.ssl ? httpsRequest : httpRequest
    const text = await new Promise<string>((resolve, reject) => {
      const req = send(
        { host: this.inv.server, port: this.inv.port, path: '/jsonrpc', method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve(Buffer.concat(chunks).toString()))
        },
      )
      req.on('error', (e) => reject(new CliError(`cannot reach ${this.inv.server}:${this.inv.port}: ${e.message}`, 3)))
      req.end(body)
    })
    const reply = JSON.parse(text) as { result?: T; error?: { message: string; data: string[] } }
    if (reply.error) throw new ServerError(reply.error.message, reply.error.data)
    return reply.result as T
  }

  /**
   * A pool member answers HOST_IS_SLAVE with its master's address: xe carries on with the master
   * (xapi's member forwards xe's commands to its master itself), for the file transfers too.
   */
  async login(): Promise<void> {
    const loginHere = () => this.rpc<string>('session.login_with_password', this.inv.user, this.inv.password, '1.0', 'xe')
    try {
      this.session = await loginHere()
    } catch (err) {
      if (!(err instanceof ServerError && err.code === 'HOST_IS_SLAVE' && err.params[0])) throw err
      this.inv.server = err.params[0]
      this.session = await loginHere()
    }
  }

  /** A session of the host xe was pointed at, master or member (xapi's Neverforward commands). */
  async loginLocally(): Promise<void> {
    this.session = await this.rpc<string>('session.slave_local_login_with_password', this.inv.user, this.inv.password)
    this.local = true
  }

  call<T>(method: string, ...params: unknown[]): Promise<T> {
    return this.rpc<T>(method, this.session, ...params)
  }

  logout(): Promise<unknown> {
    return this.rpc(this.local ? 'session.local_logout' : 'session.logout', this.session).catch(() => undefined)
  }
}

function describeError(code: string, params: string[]): string {
  if (code === 'SESSION_AUTHENTICATION_FAILED') return 'Authentication failed'
  if (code === 'HOST_IS_SLAVE') return `Host is a slave: the pool's master is at ${params[0]}.`
  return [`The server failed to handle your request (${code}).`, ...params.map((p) => `  ${p}`)].join('\n')
}

/** xe's names for kinds of VM: snapshot-list and template-list list VMs. */
const VM_ALIASES = new Set(['snapshot', 'template'])

/** "vm-list" → the VM class and "list"; class names in xe are lower case with dashes. */
function splitCommand(command: string): { cls: ClassDef; verb: string; alias?: string } | undefined {
  for (const verb of ['list', 'param-get', 'param-list', 'param-set', 'param-add', 'param-remove', 'param-clear']) {
    if (!command.endsWith(`-${verb}`)) continue
    const prefix = command.slice(0, -verb.length - 1)
    if (VM_ALIASES.has(prefix)) return { cls: classes.get('VM')!, verb, alias: prefix }
    const cls = [...classes.values()].find((c) => xeClass(c.name) === prefix && c.listable)
    if (cls) return { cls, verb }
  }
  return undefined
}

/** The columns `xe <class>-list` shows without params=, as xapi's cli_operations.ml lists them. */
const DEFAULT_LIST_COLUMNS: Record<string, string[]> = {
  VM: ['uuid', 'name-label', 'power-state'],
  SR: ['uuid', 'name-label', 'name-description', 'host', 'type', 'content-type'],
  pool: ['uuid', 'name-label', 'name-description', 'master', 'default-SR'],
  PBD: ['uuid', 'host-uuid', 'sr-uuid', 'device-config', 'currently-attached'],
  VBD: ['uuid', 'vm-uuid', 'vm-name-label', 'vdi-uuid', 'device', 'empty'],
  VDI: ['uuid', 'name-label', 'name-description', 'sr-uuid', 'virtual-size', 'sharable', 'read-only'],
  VIF: ['uuid', 'vm-uuid', 'device', 'network-uuid'],
  PIF: ['uuid', 'device', 'MAC', 'currently-attached', 'VLAN', 'network-uuid', 'host-uuid'],
  network: ['uuid', 'name-label', 'name-description', 'bridge'],
  console: ['uuid', 'vm-uuid', 'vm-name-label', 'protocol', 'location'],
  task: ['uuid', 'name-label', 'name-description', 'status', 'progress'],
  host_cpu: ['uuid', 'number', 'vendor', 'speed', 'utilisation'],
  VLAN: ['uuid', 'tagged-PIF', 'untagged-PIF', 'tag'],
}

type Rec = Record<string, unknown>

export async function run(inv: Invocation, out: (s: string) => void): Promise<void> {
  const member = MEMBER_COMMANDS[inv.command]
  const spec = member ?? POOL_COMMANDS[inv.command]
  if (spec) checkRequired(inv, spec.reqd)
  const operation = spec?.run ?? OPERATIONS[inv.command]
  if (operation) {
    const conn = new Connection(inv)
    await (member ? conn.loginLocally() : conn.login())
    try {
      return await operation(conn, inv, out)
    } finally {
      await conn.logout()
    }
  }
  const specs = { ...POOL_COMMANDS, ...MEMBER_COMMANDS }
  if (inv.command === 'help-commands') {
    const generic = ['list', 'param-get', 'param-list', 'param-set', 'param-add', 'param-remove', 'param-clear']
    const prefixes = [...[...classes.values()].filter((c) => c.listable).map((c) => xeClass(c.name)), ...VM_ALIASES]
    return out([...Object.keys(OPERATIONS), ...Object.keys(specs), ...prefixes.flatMap((p) => generic.map((g) => `${p}-${g}`)), 'help'].sort().join('\n'))
  }
  const asked = inv.topic === undefined ? undefined : specs[inv.topic]
  if (asked) return out(describeCommand(inv.topic!, asked))
  if (inv.command === '' || inv.command === 'help') {
    const names = [...classes.values()].filter((c) => c.listable).map((c) => xeClass(c.name))
    out(`Usage: xe [-s server] [-p port] [-u user] [-pw password | -pwf file] [--nossl] <command> [param=value ...] [--minimal]\n\nGeneric commands: <class>-list, <class>-param-get, <class>-param-list, <class>-param-set\nVM commands: ${Object.keys(OPERATIONS).join(', ')}\nPool and host commands: ${Object.keys(specs).join(', ')}\nClasses: ${names.join(', ')}`)
    return
  }
  const target = splitCommand(inv.command)
  if (!target) throw new CliError(`Unknown command: ${inv.command}\nFor help, type: xe help`, 1)
  const conn = new Connection(inv)
  await conn.login()
  try {
    const { cls, verb } = target
    const column = (xe: string) => {
      const found = columnOf(cls, xe)
      if (!found) throw new CliError(`Unknown field: ${xe}`)
      return found
    }
    const control = new Set(['params', 'minimal', 'uuid', 'param-name', 'param-key'])
    const wanted = inv.params.get('params')
    const columns =
      verb !== 'list' ? [] : wanted === 'all' ? cls.fieldList.map((f) => column(xeName(f.name))) : (wanted?.split(',') ?? DEFAULT_LIST_COLUMNS[cls.name] ?? ['uuid', ...(cls.hasNameLabel ? ['name-label', 'name-description'] : [])]).map(column)
    const filters = verb !== 'list' ? [] : [...inv.params].filter(([key]) => !control.has(key) || key === 'uuid').map(([key, value]) => [column(key), value] as const)
    const asked = verb === 'param-get' ? [column(inv.params.get('param-name') ?? '(missing param-name=)')] : []
    // Every class a reference field points at (their uuids stand for the refs), and what derived columns read.
    const referenced = cls.fieldList.flatMap((f) => (f.type.kind === 'ref' ? [f.type.cls] : f.type.kind === 'set' && f.type.of.kind === 'ref' ? [f.type.of.cls] : []))
    const fetched = new Map<string, Record<string, Rec>>([[cls.name, await conn.call<Record<string, Rec>>(`${cls.name}.get_all_records`)]])
    for (const c of new Set([...referenced, ...[...columns, ...asked, ...filters.map(([col]) => col)].flatMap((col) => col.reads)])) {
      if (!fetched.has(c) && classes.get(c)?.listable) fetched.set(c, await conn.call<Record<string, Rec>>(`${c}.get_all_records`).catch(() => ({})))
    }
    const records = fetched.get(cls.name)!
    const uuidOf = (c: string, ref: string) => fetched.get(c)?.[ref]?.uuid as string | undefined
    const selectByUuid = () => {
      const uuid = inv.params.get('uuid')
      if (!uuid) throw new CliError('This command needs the parameter uuid=')
      const hit = Object.entries(records).find(([, r]) => r.uuid === uuid)
      if (!hit) throw new CliError(`No ${xeClass(cls.name)} with uuid ${uuid}`)
      return hit
    }
    if (verb === 'list') {
      let rows = Object.values(records)
      if (cls.name === 'VM' && target.alias === 'snapshot') rows = rows.filter((r) => r.is_a_snapshot)
      else if (cls.name === 'VM' && target.alias === 'template') rows = rows.filter((r) => r.is_a_template && !r.is_a_snapshot)
      else if (cls.name === 'VM' && !inv.params.has('is-a-template')) rows = rows.filter((r) => !r.is_a_template && !r.is_control_domain)
      for (const [col, value] of filters) rows = rows.filter((r) => matches(col, r, value, fetched, uuidOf))
      if (inv.flags.has('minimal')) out(rows.map((r) => columns[0]!.render(r, fetched, uuidOf)).join(','))
      else out(rows.map((r) => formatRecord(r, columns, fetched, uuidOf) + '\n\n').join('').replace(/\n$/, ''))
      return
    }
    const [ref, rec] = selectByUuid()
    if (verb === 'param-list') return out(formatRecord(rec, cls.fieldList.map((f) => column(xeName(f.name))), fetched, uuidOf))
    if (verb === 'param-get') {
      const field = cls.fields.get(apiName(asked[0]!.name))
      const key = inv.params.get('param-key')
      if (key !== undefined && field) {
        const map = rec[field.name] as Record<string, unknown>
        if (!(key in map)) throw new CliError(`Key ${key} not found in map`)
        return out(String(map[key]))
      }
      return out(asked[0]!.render(rec, fetched, uuidOf))
    }
    if (verb === 'param-set') {
      for (const [key, value] of inv.params) {
        if (key === 'uuid') continue
        const [fieldName, mapKey] = key.split(':') as [string, string | undefined]
        const field = cls.fields.get(apiName(fieldName))
        if (!field || field.qualifier !== 'RW') throw new CliError(`Field ${fieldName} is not settable`)
        if (mapKey !== undefined) {
          await conn.call(`${cls.name}.remove_from_${field.name}`, ref, mapKey)
          await conn.call(`${cls.name}.add_to_${field.name}`, ref, mapKey, value)
        } else await conn.call(`${cls.name}.set_${field.name}`, ref, scalarFromText(value, field.type))
      }
      return
    }
    const name = inv.params.get('param-name')
    const field = name ? cls.fields.get(apiName(name)) : undefined
    if (!field || field.qualifier !== 'RW' || (field.type.kind !== 'map' && field.type.kind !== 'set')) throw new CliError(`param-name must name a settable map or set field, got ${name ?? '(nothing)'}`)
    const key = inv.params.get('param-key')
    if (verb === 'param-clear') return void (await conn.call(`${cls.name}.set_${field.name}`, ref, field.type.kind === 'map' ? {} : []))
    if (field.type.kind === 'set') {
      if (!key) throw new CliError('This command needs param-key=')
      return void (await conn.call(`${cls.name}.${verb === 'param-add' ? 'add' : 'remove'}_${field.name}`, ref, key))
    }
    if (verb === 'param-remove') {
      if (!key) throw new CliError('This command needs param-key=')
      return void (await conn.call(`${cls.name}.remove_from_${field.name}`, ref, key))
    }
    for (const [k, v] of inv.params) if (!['uuid', 'param-name', 'param-key'].includes(k)) await conn.call(`${cls.name}.add_to_${field.name}`, ref, k, v)
  } finally {
    await conn.logout()
  }
}

function scalarFromText(text: string, t: ReturnType<typeof parseType>): unknown {
  switch (t.kind) {
    case 'int': case 'float': return Number(text)
    case 'bool': return text === 'true'
    case 'set': return text === '' ? [] : text.split(',').map((s) => s.trim())
    case 'map': return Object.fromEntries(text.split(';').filter(Boolean).map((kv) => kv.split(':').map((s) => s.trim())))
    default: return text
  }
}

