// Loads every message implementation (each module registers its handlers).
import './session.js'
import './event.js'
import './task.js'
import './host.js'
import './vm.js'
import './message.js'
import './vif.js'

export { DEFAULT_SETTINGS, type Services, type Settings } from './context.js'
export { collectTasks } from './task.js'
export { collectIdleSessions } from './session.js'
