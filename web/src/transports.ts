// Which LiveKit services a call needs a connection to, decided as Element
// Call decides it (src/state/SessionBehaviors.ts and
// remoteMembers/ConnectionManager.ts): each MatrixRTC member publishes on one
// transport (matrix-js-sdk's CallMembership.getTransport: its own
// foci_preferred[0] with focus_selection "multi_sfu", the oldest member's with
// "oldest_membership"); a client publishes on its own connection and opens
// one more, subscribe-only, per other distinct livekit_service_url. The key
// is the service URL alone: within one Matrix room and slot a service maps
// every member to one LiveKit room.
//
// Pure functions on plain data, so the test driver can check them in the
// page (window.gxconf.transports).

/**
 * The service URLs to subscribe on: the members' publishing service URLs
 * (undefined for a member without a LiveKit transport), deduplicated in order
 * of first appearance, without the one we publish on.
 */
export function subscribeServiceUrls(memberServiceUrls: (string | undefined)[], publishServiceUrl: string): string[] {
  const out: string[] = [];
  for (const url of memberServiceUrls) {
    if (url === undefined || url === "" || url === publishServiceUrl || out.includes(url)) continue;
    out.push(url);
  }
  return out;
}

/** What to open and what to close to get from the open connections to the wanted ones. */
export function planConnections(open: string[], wanted: string[]): { open: string[]; close: string[] } {
  return {
    open: wanted.filter((u) => !open.includes(u)),
    close: open.filter((u) => !wanted.includes(u)),
  };
}
