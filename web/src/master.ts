// A pool member does not serve the UI's calls: it answers HOST_IS_SLAVE with its master's
// address, and the page sends the browser there, keeping the scheme and port it was loaded with.

/** The query parameter that tells the master's login page which member the browser came from. */
export const FROM_MEMBER = 'from_member'

/** The same page on the master: https://<master>:<this page's port>/?from_member=<this host>. */
export function masterUrl(address: string, here: Location = location): string {
  const host = address.includes(':') && !address.startsWith('[') ? `[${address}]` : address
  const url = new URL(`${here.protocol}//${host}${here.port ? `:${here.port}` : ''}/`)
  url.searchParams.set(FROM_MEMBER, here.hostname)
  return url.toString()
}

/** The member this page was sent from, if it was. */
export const sentFromMember = (): string | null => new URLSearchParams(location.search).get(FROM_MEMBER)

export const goToMaster = (address: string) => location.assign(masterUrl(address))
