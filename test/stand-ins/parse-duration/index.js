'use strict'
// Test-only stand-in for @vates/parse-duration (not on the registry reachable here).
const ms = require('ms')
exports.parseDuration = function parseDuration(input) {
  if (typeof input === 'number') return input
  const millis = typeof input === 'string' && input.length > 0 ? ms(input) : undefined
  if (millis === undefined) throw new TypeError(`invalid duration: ${input}`)
  return millis
}
