// The control domain's console records, as create_misc.ml's ensure_domain_zero_console_record
// keeps dom0's: exactly one rfb and one vt100 console, located at
// https://<host address>/console?ref=<console ref>. The rfb one is the host's login prompt that
// the agent serves on demand (agent/host-console.ts); nothing serves the vt100 one (it answers 404).
import { randomUUID } from 'node:crypto'
import { newRef, type Database, type Tx } from '../db/database.js'
import { NULL_REF } from '../idl/index.js'

const PROTOCOLS = ['rfb', 'vt100'] as const

/** A dom0 console's location, as xapi builds it (by ref, not uuid). */
export function controlDomainConsoleLocation(publicUrl: string, consoleRef: string): string {
  return `${publicUrl}/console?ref=${consoleRef}`
}

/** Every start: one console of each protocol for this host's control domain, located at this host's current public URL. */
export function ensureControlDomainConsoles(tx: Tx, hostRef: string, publicUrl: string): void {
  const vm = tx.get('host', hostRef).control_domain
  if (vm === NULL_REF || !tx.exists('VM', vm)) return
  const consoles = tx.get('VM', vm).consoles.filter((c) => tx.exists('console', c)).map((ref) => ({ ref, protocol: tx.get('console', ref).protocol }))
  for (const protocol of PROTOCOLS) {
    const mine = consoles.filter((c) => c.protocol === protocol).map((c) => c.ref)
    if (mine.length === 1) {
      const location = controlDomainConsoleLocation(publicUrl, mine[0]!)
      if (tx.get('console', mine[0]!).location !== location) tx.update('console', mine[0]!, { location })
      continue
    }
    // None, or more than one (something strange happened): start again with one, as xapi does.
    for (const c of mine) tx.delete('console', c)
    const ref = newRef()
    tx.create('console', { uuid: randomUUID(), protocol, VM: vm, location: controlDomainConsoleLocation(publicUrl, ref), other_config: {} }, ref)
  }
}

/** ensureControlDomainConsoles in a transaction of its own. */
export async function ensureHostConsoles(db: Database, hostRef: string, publicUrl: string): Promise<void> {
  await db.transact((tx) => ensureControlDomainConsoles(tx, hostRef, publicUrl))
}
