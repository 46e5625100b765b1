'use strict'
// Test-only stand-in for @vates/task: runs the wrapped function without XO's task journal.
class Task {
  static run(options, fn, ...rest) {
    return typeof options === 'function' ? options(fn, ...rest) : fn(...rest)
  }
  static wrap(options, fn) {
    const target = typeof fn === 'function' ? fn : options
    return function wrapped(...args) { return target.apply(this, args) }
  }
  static info() {}
  static warning() {}
  static set() {}
}
exports.Task = Task
