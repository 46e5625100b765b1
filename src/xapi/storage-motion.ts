// Storage motion (reference/pools-migration-ha.md §2.2–§2.4): host.migrate_receive hands the
// sender a token naming the destination host and its address on the migration network;
// VM.assert_can_migrate answers every refusal VM.migrate_send would give, before anything moves;
// VM.migrate_send moves the VM with its disks going to the SRs vdi_map names. A running VM moves
// live, its moving disks mirrored to the destination's new images while it runs (migrateLive); a
// halted VM's disks are copied. Each disk's snapshots go where it goes.
import { NULL_REF } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'
import { withUndo } from '../lib/undo.js'
import { register, type CallContext, type Services } from './context.js'
import { completeMove, destroyMovedFrom, prepareMove, type DiskMove } from './disk-motion.js'
import { masterAddress } from './pool-join.js'
import { cloneSession } from './session.js'
import { assertCanBootWith } from './vm-placement.js'
import { migrateLive } from './vm-migrate.js'
import { withVmOperation } from './vm.js'

type Token = Record<string, string>
type Rec = Readonly<VMRecord>

/** A host's address in a URL. */
const urlHost = (address: string) => (address.includes(':') ? `[${address}]` : address)

/** The address of `host` on `network`, from its PIF there (xapi's migrate_receive). */
function addressOn(svc: Services, host: string, network: string): string {
  const pif = svc.db.record('host', host).PIFs.map((p) => [p, svc.db.record('PIF', p)] as const).find(([, p]) => p.network === network)
  if (!pif) throw new XapiError('HOST_CANNOT_ATTACH_NETWORK', [host, network])
  const [ref, rec] = pif
  const v6 = rec.IPv6.map((a) => a.split('/')[0]!).find((a) => !a.toLowerCase().startsWith('fe80'))
  const address = rec.primary_address_type === 'IPv6' ? v6 : rec.IP
  if (address) return address
  throw new XapiError(rec.ip_configuration_mode === 'None' && rec.ipv6_configuration_mode === 'None' ? 'PIF_HAS_NO_NETWORK_CONFIGURATION' : 'INTERFACE_HAS_NO_IP', [ref])
}

register('host.migrate_receive', async (ctx, [host, network]) => {
  const svc = ctx.svc
  svc.db.record('host', host)
  svc.db.record('network', network)
  const address = urlHost(addressOn(svc, host, network))
  const session = await cloneSession(svc, ctx.session)
  return {
    SM: `http://${address}/services/SM?session_id=${session}`,
    xenops: `http://${address}/services/xenops?session_id=${session}`,
    host,
    session_id: session,
    master: `http://${urlHost(masterAddress(svc))}`,
  }
})

/** What a migrate_send will do, once every refusal is ruled out: the destination host and its stream address, the disks that move. */
interface Plan {
  host: string
  address: string
  moves: Map<string, string>
}

const isTrue = (options: Record<string, string>, key: string) => String(options[key]).toLowerCase() === 'true'

/** The VM's own disks: the VDIs of its non-empty, non-CD VBDs. */
function ownDisks(svc: Services, vm: Rec): string[] {
  return vm.VBDs.map((v) => svc.db.record('VBD', v)).filter((v) => v.type !== 'CD' && !v.empty && v.VDI !== NULL_REF).map((v) => v.VDI)
}

/** xapi's assert_can_migrate for a destination in this pool, in its order; the plan when nothing refuses. */
async function planMigration(svc: Services, ref: string, vm: Rec, token: Token, vdiMap: Record<string, string>, vifMap: Record<string, string>, options: Record<string, string>): Promise<Plan> {
  const host = token.host ?? ''
  if (!svc.db.tryRecord('host', host)) {
    // A token from another pool (its host unknown here).
    if (/^OpaqueRef:/.test(host)) throw new XapiError('OPERATION_NOT_ALLOWED', ['Migration to another pool is not supported yet: migrate into a host of this pool'])
    throw new XapiError('INVALID_VALUE', ['dest', 'a token from host.migrate_receive'])
  }
  if (isTrue(options, 'copy')) throw new XapiError('OPERATION_NOT_ALLOWED', ['Copy mode is disallowed on intra pool storage migration, try efficient alternatives, for example, VM.copy/clone.'])
  for (const [vdi, sr] of Object.entries(vdiMap)) {
    svc.db.record('VDI', vdi)
    svc.db.record('SR', sr)
  }
  const moves = new Map<string, string>()
  for (const vdi of ownDisks(svc, vm)) {
    const sr = vdiMap[vdi]
    if (sr === undefined) throw new XapiError('VDI_NOT_IN_MAP', [vdi])
    if (sr !== svc.db.record('VDI', vdi).SR) moves.set(vdi, sr)
  }
  if (vm.power_state === 'Running' || vm.power_state === 'Paused') await assertCanBootWith(svc, ref, host, moves)
  if (Object.keys(vifMap).length) throw new XapiError('OPERATION_NOT_ALLOWED', ['VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network'])
  for (const vdi of moves.keys()) {
    const rec = svc.db.record('VDI', vdi)
    if (rec.cbt_enabled) throw new XapiError('VDI_CBT_ENABLED', [vdi])
    if (rec.sm_config.key_hash !== undefined) throw new XapiError('VDI_IS_ENCRYPTED', [vdi])
    if (rec.on_boot === 'reset') throw new XapiError('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION', [])
  }
  if (vm.power_state === 'Suspended' && moves.size) throw new XapiError('VM_BAD_POWER_STATE', [ref, 'running', 'suspended'])
  return { host, address: streamAddress(svc, token, host), moves }
}

/** Where the destination takes the streams: the address migrate_receive found on the migration network. */
function streamAddress(svc: Services, token: Token, host: string): string {
  try {
    return new URL(token.xenops ?? '').hostname.replace(/^\[|\]$/g, '')
  } catch {
    return svc.db.record('host', host).address
  }
}

register('VM.assert_can_migrate', async (ctx, [ref, dest, , vdiMap, vifMap, options]) => {
  await planMigration(ctx.svc, ref, ctx.svc.db.record('VM', ref), dest, vdiMap, vifMap, options)
})

register('VM.migrate_send', (ctx, [ref, dest, , vdiMap, vifMap, options]) =>
  withVmOperation(ctx, ref, 'migrate_send', async (vm) => {
    const plan = await planMigration(ctx.svc, ref, vm, dest, vdiMap, vifMap, options)
    if (vm.power_state === 'Running' || vm.power_state === 'Paused') await migrateLive(ctx, ref, vm, plan.host, { moves: plan.moves, address: plan.address })
    else await copyDisks(ctx, plan.moves)
    return ref
  }),
)

/** A halted VM's disks copied to their new SRs, recorded in one transaction: all move, or none. */
async function copyDisks(ctx: CallContext, moves: ReadonlyMap<string, string>): Promise<void> {
  const done = await withUndo('VM.migrate_send', async (undo) => {
    const done: DiskMove[] = []
    for (const [vdi, sr] of moves) done.push(await prepareMove(ctx, vdi, sr, false, undo))
    await ctx.svc.db.transact((tx) => done.forEach((move) => completeMove(tx, move)))
    return done
  })
  for (const move of done) await destroyMovedFrom(ctx.svc, move)
}
