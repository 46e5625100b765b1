// Writing to a stream with backpressure: a write that must wait returns a promise.
import type { Writable } from 'node:stream'

/** Resolves once `out` can take more (undefined when it already can), rejects if it closes first. */
export function writeOut(out: Writable, buf: Buffer): Promise<void> | undefined {
  if (out.destroyed || out.writableEnded) return Promise.reject(new Error('the receiver went away'))
  if (out.write(buf)) return undefined
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      out.off('drain', onDrain)
      out.off('close', onClose)
      err ? reject(err) : resolve()
    }
    const onDrain = () => done()
    const onClose = () => done(new Error('the receiver went away'))
    out.on('drain', onDrain)
    out.on('close', onClose)
  })
}
