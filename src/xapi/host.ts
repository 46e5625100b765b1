// host.* messages that need more than the generated accessors.
import { XapiError } from '../idl/errors.js'
import { formatDatetime } from '../idl/index.js'
import { register } from './context.js'

register('host.get_servertime', () => formatDatetime(new Date()))

register('host.get_server_localtime', () => formatDatetime(new Date()))

register('host.call_plugin', (_ctx, [, plugin]) => {
  throw new XapiError('XENAPI_MISSING_PLUGIN', [plugin])
})

register('host.list_methods', () => [])
