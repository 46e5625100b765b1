// pool.join / join_force (called on the joiner), pool.eject and pool.designate_new_master (on
// the master): xapi's checks and errors in xapi's order (xapi_pool.ml: pre_join_checks,
// eject_self), over an etcd membership change instead of a database push (pools-migration-ha §1.3).
import { XapiError } from '../idl/errors.js'
import { register, type CallContext, type PoolSecret, type PoolView, type Services } from './context.js'
import { BROUGHT_CLASSES, recordsForPool } from './pool-merge.js'
import { RemotePool } from './remote-pool.js'

type Rec = Readonly<Record<string, unknown>>

const isUserVm = (vm: Rec) => vm.is_control_domain !== true && vm.is_a_template !== true && vm.is_a_snapshot !== true

/** The joiner's own checks, before it contacts the master. */
function checkJoiner(svc: Services): void {
  const pool = svc.db.record('pool', svc.db.first('pool'))
  if (pool.ha_enabled) throw new XapiError('HA_IS_ENABLED')
  if (svc.db.refs('host').length > 1) throw new XapiError('JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS')
  const vms = [...svc.db.rows('VM')].map((r) => r.stored)
  if (vms.some((vm) => !vm.is_control_domain && vm.power_state === 'Running')) throw new XapiError('JOINING_HOST_CANNOT_HAVE_RUNNING_VMS')
  if (vms.some((vm) => isUserVm(vm) && Object.keys(vm.current_operations).length > 0)) throw new XapiError('JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS')
  if ([...svc.db.rows('SR')].some((r) => r.stored.shared && r.stored.content_type !== 'iso')) throw new XapiError('JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS')
}

/** The checks against the master's host record (xapi's order; join_force skips the homogeneity ones). */
export function checkAgainstMaster(me: Rec, master: Rec, masterPool: Rec, force: boolean): void {
  if (masterPool.ha_enabled) throw new XapiError('HA_IS_ENABLED')
  if (master.uuid === me.uuid) throw new XapiError('OPERATION_NOT_ALLOWED', ['Host cannot become slave of itself'])
  const mine = me.software_version as Record<string, string>
  const theirs = master.software_version as Record<string, string>
  const brand = (v: Record<string, string>) => v.product_brand ?? v.platform_name
  if (mine.platform_version !== theirs.platform_version || brand(mine) !== brand(theirs)) throw new XapiError('HOSTS_NOT_COMPATIBLE')
  if (!force) {
    if (mine.xapi !== theirs.xapi || mine.flotilla !== theirs.flotilla || mine.git_id !== theirs.git_id) throw new XapiError('HOSTS_NOT_HOMOGENEOUS', ['Software version differs'])
    const vendor = (h: Rec) => (h.cpu_info as Record<string, string>).vendor
    if (vendor(me) !== vendor(master)) throw new XapiError('HOSTS_NOT_HOMOGENEOUS', ['CPUs differ'])
  }
  const api = (h: Rec) => `${String(h.API_version_major)}.${String(h.API_version_minor)}`
  if (api(me) !== api(master)) throw new XapiError('POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION', [api(me), api(master)])
  if (mine.db_schema !== theirs.db_schema || !mine.db_schema) throw new XapiError('POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA', [mine.db_schema ?? '', theirs.db_schema ?? ''])
}

/** This host's database as a joiner brings it: every object's stored fields. */
function ownObjects(svc: Services): PoolView {
  const view: PoolView = new Map()
  for (const cls of BROUGHT_CLASSES) {
    view.set(cls, new Map([...svc.db.rows(cls)].map((r) => [r.ref, r.stored as Record<string, unknown>])))
  }
  return view
}

async function join(ctx: CallContext, address: string, user: string, password: string, force: boolean): Promise<void> {
  const svc = ctx.svc
  if (!svc.membership) throw new XapiError('OPERATION_NOT_ALLOWED', ['this host cannot join a pool'])
  checkJoiner(svc)
  const remote = new RemotePool(address)
  await remote.login(user, password)
  try {
    const masterPool = (await remote.c<Record<string, Rec>>('pool.get_all_records'))
    const [poolRec] = Object.values(masterPool)
    const master = await remote.c<Rec>('host.get_record', poolRec!.master)
    checkAgainstMaster(svc.db.record('host', svc.hostRef), master, poolRec!, force)
    const secret = await remote.handler<PoolSecret>('/pool_secret')
    const own = ownObjects(svc)
    await svc.membership.join(secret, (pool) => {
      if (pool.get('host')?.has(svc.hostRef)) throw new XapiError('OPERATION_NOT_ALLOWED', ['Host is already part of a pool'])
      return recordsForPool(own, pool, svc.hostRef)
    })
  } finally {
    await remote.logout()
  }
}

register('pool.join', (ctx, [address, user, password]) => join(ctx, address, user, password, false))
register('pool.join_force', (ctx, [address, user, password]) => join(ctx, address, user, password, true))

/** What the master hands a joiner that logged in as a pool administrator (xapi: pool.initial_auth and the certificate exchange). */
export async function poolSecretFor(svc: Services, session: Rec): Promise<PoolSecret> {
  if (session.is_local_superuser !== true) throw new XapiError('RBAC_PERMISSION_DENIED', ['pool.join', 'only a pool administrator can join hosts'])
  if (svc.pool && !svc.pool.isMaster()) throw new XapiError('HOST_IS_SLAVE', [masterAddress(svc)])
  if (!svc.membership) throw new XapiError('OPERATION_NOT_ALLOWED', ['this pool cannot take more hosts'])
  return svc.membership.secret()
}

/** The master's address as the pool database says ('' when unknown). */
export function masterAddress(svc: Services): string {
  const master = svc.pool?.masterRef() ?? svc.db.record('pool', svc.db.first('pool')).master
  return String(svc.db.tryRecord('host', master)?.address ?? '')
}
