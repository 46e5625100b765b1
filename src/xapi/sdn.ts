// SDN_controller.introduce/forget (xapi_sdn_controller.ml). xapi records a controller only on
// hosts whose network backend is Open vSwitch, which it then points at the controller; a host
// on Linux bridges refuses. Flotilla's hosts say which backend they run in
// host.software_version:network_backend.
import { isIPv4 } from 'node:net'
import { XapiError } from '../idl/errors.js'
import type { SDN_controllerRecord, SdnControllerProtocol } from '../idl/records.js'
import { register } from './context.js'

/** The OVSDB manager port xapi gives an ssl controller introduced without one. */
export const SDN_CONTROLLER_PORT = 6632

/**
 * The record SDN_controller.introduce makes, or its refusal, in xapi's order: one controller
 * per pool; pssl (the controller connects in) takes neither address nor port; ssl needs an IPv4
 * address; a port is 1–65535, and 0 means 6632 for ssl.
 */
export function sdnControllerFields(existing: number, protocol: SdnControllerProtocol, address: string, port: number): Pick<SDN_controllerRecord, 'protocol' | 'address' | 'port'> {
  if (existing > 0) throw new XapiError('OPERATION_NOT_ALLOWED', ['SDN controller has been configured. Please forget it first.'])
  if (protocol === 'pssl') {
    if (address !== '') throw new XapiError('INVALID_VALUE', ['address', address])
    if (port !== 0) throw new XapiError('INVALID_VALUE', ['port', port])
  }
  if (protocol === 'ssl') {
    if (address === '') throw new XapiError('INVALID_VALUE', ['address', address])
    if (!isIPv4(address)) throw new XapiError('INVALID_IP_ADDRESS_SPECIFIED', ['address'])
  }
  if (port !== 0 && !(port >= 1 && port <= 65535)) throw new XapiError('VALUE_NOT_SUPPORTED', ['port', port, 'Port out of range'])
  return { protocol, address, port: protocol === 'ssl' && port === 0 ? SDN_CONTROLLER_PORT : port }
}

register('SDN_controller.introduce', (ctx, [protocol, address, port]) =>
  ctx.svc.db.transact((tx) => {
    const backend = tx.get('host', ctx.svc.hostRef).software_version.network_backend
    if (backend !== 'openvswitch') throw new XapiError('OPERATION_NOT_ALLOWED', ['host not configured for vswitch operation'])
    const existing = [...ctx.svc.db.rows('SDN_controller')].filter((r) => tx.exists('SDN_controller', r.ref)).length
    return tx.create('SDN_controller', sdnControllerFields(existing, protocol, address, Number(port)))
  }),
)

register('SDN_controller.forget', (ctx, [ref]) => ctx.svc.db.transact((tx) => tx.delete('SDN_controller', ref)))
