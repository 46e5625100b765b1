// Where an SR is, as the agents name it, from its PBD's device_config: pure, so the checks of a
// device_config (xapi's SM errors for what is missing) and the place they lead to are tested alone.
import { XapiError } from '../idl/errors.js'

/** The SR types whose storage every host of a pool reaches (a PBD per host, all plugged). */
export const NETWORK_SR_TYPES: ReadonlySet<string> = new Set(['nfs', 'rbd'])

/** A device_config's serverpath as an absolute path without a trailing slash, or SR_BACKEND_FAILURE_103. */
function serverPath(path: string): string {
  const parts = path.split('/').filter(Boolean)
  if (!path.startsWith('/') || parts.some((p) => p === '.' || p === '..') || /[\0?#]/.test(path)) throw new XapiError('SR_BACKEND_FAILURE_103', ['', `The serverpath argument is not valid [opterr=serverpath is ${path}]`, ''])
  return `/${parts.join('/')}`
}

/** An NFS device_config's server and serverpath, or the SM error for the one missing. */
export function nfsTarget(config: Readonly<Record<string, string>>): { server: string; serverpath: string } {
  if (!config.server) throw new XapiError('SR_BACKEND_FAILURE_102', ['', 'The request is missing the server parameter', ''])
  if (!/^[A-Za-z0-9.:_-]+$/.test(config.server)) throw new XapiError('SR_BACKEND_FAILURE_102', ['', `The request is missing the server parameter [opterr=not a host name or address: ${config.server}]`, ''])
  if (!config.serverpath) throw new XapiError('SR_BACKEND_FAILURE_101', ['', 'The request is missing the serverpath parameter', ''])
  if (config.nfsversion && config.nfsversion !== '3') throw new XapiError('SR_BACKEND_FAILURE_72', ['', `Required NFS server version unsupported [opterr=NFS version ${config.nfsversion}: Flotilla's hosts reach NFS servers over NFSv3]`, ''])
  return { server: config.server, serverpath: serverPath(config.serverpath) }
}

/** A Ceph device_config's monitors (host[:port], comma-separated) and pool, or the SM error for the one missing. */
export function rbdTarget(config: Readonly<Record<string, string>>): { monitors: string; pool: string } {
  const monitors = (config.monitors ?? '').split(',').map((m) => m.trim()).filter(Boolean)
  if (monitors.length === 0) throw new XapiError('SR_BACKEND_FAILURE_102', ['', 'The request is missing the server parameter [opterr=device_config needs monitors]', ''])
  if (monitors.some((m) => !/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(m))) throw new XapiError('SR_BACKEND_FAILURE_102', ['', `The request is missing the server parameter [opterr=not a monitor address: ${config.monitors}]`, ''])
  if (!config.pool) throw new XapiError('SR_BACKEND_FAILURE_101', ['', 'The request is missing the serverpath parameter [opterr=device_config needs pool]', ''])
  if (!/^[A-Za-z0-9._-]+$/.test(config.pool)) throw new XapiError('SR_BACKEND_FAILURE_103', ['', `The serverpath argument is not valid [opterr=not a pool name: ${config.pool}]`, ''])
  return { monitors: monitors.join(','), pool: config.pool }
}

/** A probe's device_config, as far as it goes: what it names is checked as SR.create checks it. */
export function checkProbeConfig(type: string, config: Readonly<Record<string, string>>): void {
  if (type === 'nfs' && config.server && config.serverpath) nfsTarget(config)
  if (type === 'rbd' && config.pool) rbdTarget(config)
}

/**
 * Where the SR `srUuid` of `type` is: its directory (device_config path); for NFS its nfs:// URL
 * (serverpath/<SR uuid>, as xapi lays it out); for RBD the namespace named after it on the pool.
 */
export function srWhere(type: string, config: Readonly<Record<string, string>>, srUuid: string): string {
  if (type === 'nfs') {
    const { server, serverpath } = nfsTarget(config)
    return `nfs://${server}${serverpath === '/' ? '' : serverpath}/${srUuid}`
  }
  if (type === 'rbd') {
    const { monitors, pool } = rbdTarget(config)
    return `rbd://${monitors}/${pool}/${srUuid}`
  }
  if (!config.path) throw new XapiError('SR_BACKEND_FAILURE', ['1', '', `the PBD's device_config has no path for an SR of type ${type}`])
  return config.path
}
