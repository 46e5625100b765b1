#!/usr/bin/env node
import { onSupportedRuntime } from './runtime.js'
if (onSupportedRuntime()) await import('../dist/src/cli/main.js')
