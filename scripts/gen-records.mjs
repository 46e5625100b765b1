// Writes src/idl/records.ts, the datamodel's TypeScript types, from the build (run by `npm run gen-records`).
import { writeFileSync } from 'node:fs'
import { renderRecords } from '../dist/src/idl/render-records.js'

writeFileSync(new URL('../src/idl/records.ts', import.meta.url), renderRecords())
