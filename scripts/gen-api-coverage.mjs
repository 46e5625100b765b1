// Writes docs/api-coverage.md from the build (run `npm run build` first).
import { readFileSync, writeFileSync } from 'node:fs'
import { coverageMarkdown } from '../dist/src/xapi/coverage.js'

const root = new URL('..', import.meta.url)
const { calls } = JSON.parse(readFileSync(new URL('test/fixtures/client-calls.json', root), 'utf8'))
writeFileSync(new URL('docs/api-coverage.md', root), coverageMarkdown(calls))
