// The xe command.
import { CliError, parseInvocation, run } from './xe.js'
try {
  await run(parseInvocation(process.argv.slice(2)), (s) => console.log(s))
} catch (err) {
  console.error(err instanceof CliError ? err.message : String(err))
  process.exitCode = err instanceof CliError ? err.exitCode : 1
}
