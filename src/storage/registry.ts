// The SR drivers of this host by SR type: what SR.create accepts and the SM records show.
import { StorageError, type SrDriver, type SrDriverInfo } from './driver.js'
import { IsoSrDriver } from './iso-sr.js'
import { LocalSrDriver } from './local-sr.js'
import { NfsSrDriver } from './nfs-sr.js'
import { RbdSrDriver } from './rbd-sr.js'
import { ZfsSrDriver } from './zfs-sr.js'

const DRIVERS: readonly SrDriver[] = [new LocalSrDriver('ext', 'Local EXT4 VHD', 'ext4'), new LocalSrDriver('xfs', 'Local XFS', 'xfs'), new IsoSrDriver(), new NfsSrDriver(), new RbdSrDriver(), new ZfsSrDriver()]

const byType = new Map(DRIVERS.map((d) => [d.info().type, d]))

/** The driver of an SR type; an unknown type is xapi's SR_UNKNOWN_DRIVER. */
export function getDriver(type: string): SrDriver {
  const driver = byType.get(type)
  if (!driver) throw new StorageError('SR_UNKNOWN_DRIVER', [type])
  return driver
}

/** What every driver declares, in a fixed order (SR.get_supported_types lists them so). */
export const driverInfos = (): SrDriverInfo[] => DRIVERS.map((d) => d.info())
