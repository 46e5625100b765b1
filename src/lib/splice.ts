// Joins two byte streams (a client's console connection and the VM's socket, or the API
// layer's stream and the agent's), as the console routes of both layers need.
import type { Duplex } from 'node:stream'

/** Bytes both ways; when either side ends, closes or fails, the other is closed too. */
export function splice(a: Duplex, b: Duplex): void {
  let done = false
  const close = () => {
    if (done) return
    done = true
    a.destroy()
    b.destroy()
  }
  for (const s of [a, b]) {
    s.on('error', close)
    s.once('close', close)
    s.once('finish', close)
  }
  a.pipe(b)
  b.pipe(a)
}
