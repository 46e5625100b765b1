// Runs this entry point on the Node.js LTS the project pins (package.json's optional
// node-linux-* dependency) when it was started by an older `node`, e.g. `node bin/xe.js`.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const MIN_NODE_MAJOR = 24
const FORWARDED_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT']

/** True when the caller should go on in this process; otherwise the entry point re-runs on the pinned Node.js and this process mirrors it. */
export function onSupportedRuntime() {
  if (Number(process.versions.node.split('.')[0]) >= MIN_NODE_MAJOR) return true
  const bundled = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url))
  if (!existsSync(bundled)) {
    process.stderr.write(`Flotilla needs Node.js ${MIN_NODE_MAJOR} or newer (this is ${process.version}); run \`npm start\` to install it\n`)
    process.exit(1)
  }
  const child = spawn(bundled, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' })
  // Whoever signals this process (a test, `kill`) means the real one.
  for (const signal of FORWARDED_SIGNALS) process.on(signal, () => child.kill(signal))
  child.on('exit', (code, signal) => {
    if (signal) {
      for (const s of FORWARDED_SIGNALS) process.removeAllListeners(s)
      process.kill(process.pid, signal)
    } else process.exit(code ?? 1)
  })
  return false
}
