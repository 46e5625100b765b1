// Runs this entry point on the Node.js LTS the project pins (package.json's optional
// node-linux-* dependency) when it was started by an older `node`, e.g. `node bin/xe.js`.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const MIN_NODE_MAJOR = 24

/** True when the caller should go on in this process; otherwise the process exits with the re-run's status. */
export function onSupportedRuntime() {
  if (Number(process.versions.node.split('.')[0]) >= MIN_NODE_MAJOR) return true
  const bundled = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url))
  if (!existsSync(bundled)) {
    process.stderr.write(`Flotilla needs Node.js ${MIN_NODE_MAJOR} or newer (this is ${process.version}); run \`npm start\` to install it\n`)
    process.exit(1)
  }
  const run = spawnSync(bundled, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' })
  process.exit(run.status ?? 1)
}
