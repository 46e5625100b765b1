// What a host's daemon makes sure of at every start, once its own records exist (bootstrap):
// its consoles, SM records, local SR, PBDs of the pool's shared SRs, internal network, bridges
// and templates, then the VMs it runs reconciled with the database. The daemon and the simulated
// test host both start so.
import { ensureHostConsoles } from './host-console.js'
import type { Services } from './context.js'
import { ensureInternalNetwork, plugAllBridges } from './network.js'
import { ensureLocalSr, ensureStorageManagers, plugSharedSrs } from './storage.js'
import { ensureTemplates } from './templates.js'
import { reconcileVms } from './vm-lifecycle.js'

export async function startOfDay(svc: Services, testGuestImage: string): Promise<void> {
  await ensureHostConsoles(svc.db, svc.hostRef, svc.publicUrl)
  await ensureStorageManagers(svc)
  await ensureLocalSr(svc)
  await plugSharedSrs(svc)
  await ensureInternalNetwork(svc)
  await plugAllBridges(svc)
  await ensureTemplates(svc, testGuestImage)
  await reconcileVms(svc)
}
