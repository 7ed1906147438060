// Finding the MatrixRTC focus and getting a LiveKit token from it, as Element
// Call does (src/state/CallViewModel/localMember/RtcTransportAutoDiscovery.ts,
// src/livekit/openIDSFU.ts).

import type { IOpenIDToken, MatrixClient } from "matrix-js-sdk";
import type { LivekitTransportConfig } from "matrix-js-sdk/lib/matrixrtc";
import type { CallMembershipIdentityParts } from "matrix-js-sdk/lib/matrixrtc/EncryptionManager";

import type { TokenAttempt } from "./state.ts";

export type DiscoveryMode = "auto" | "well-known";

export interface DiscoveredFocus {
  transport: LivekitTransportConfig;
  via: "rtc/transports" | "well-known";
}

function isLivekit(t: unknown): t is LivekitTransportConfig {
  const o = t as { type?: unknown; livekit_service_url?: unknown };
  return o?.type === "livekit" && typeof o.livekit_service_url === "string" && o.livekit_service_url !== "";
}

/**
 * Asks the homeserver for its RTC transports (MSC4519, the unstable
 * org.matrix.msc4143 path Element Call uses), and falls back to the
 * org.matrix.msc4143.rtc_foci key of /.well-known/matrix/client (MSC4158,
 * what Element Call did until 2026-08 and older clients still do).
 */
export async function discoverFocus(
  client: Pick<MatrixClient, "_unstable_getRTCTransports">,
  homeserverUrl: string,
  mode: DiscoveryMode,
  log: (msg: string) => void,
): Promise<DiscoveredFocus> {
  if (mode === "auto") {
    try {
      const transports = await client._unstable_getRTCTransports();
      const first = transports.find(isLivekit);
      if (first) return { transport: first, via: "rtc/transports" };
      log(`rtc/transports lists no livekit transport: ${JSON.stringify(transports)}`);
    } catch (e) {
      log(`rtc/transports failed, trying .well-known: ${e}`);
    }
  }
  const url = new URL("/.well-known/matrix/client", homeserverUrl);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
  const doc = (await res.json()) as Record<string, unknown>;
  const foci = doc["org.matrix.msc4143.rtc_foci"];
  const first = Array.isArray(foci) ? foci.find(isLivekit) : undefined;
  if (!first) throw new Error(`no livekit focus in rtc/transports nor in ${url} (org.matrix.msc4143.rtc_foci)`);
  return { transport: first, via: "well-known" };
}

/** Which token endpoint to use, in Element Call's terms (JwtEndpointVersion). */
export type JwtMode =
  /** /get_token (MSC4195 body), on any failure /sfu/get: openIDSFU.ts without a forced endpoint. */
  | "auto"
  /** /sfu/get only: Element Call's default "legacy" MatrixRTC mode for its own connection. */
  | "legacy";

export interface SFUConfig {
  url: string;
  jwt: string;
  lkRoom: string;
  identity: string;
  endpoint: TokenAttempt["endpoint"];
}

/** A focus that answered with a Matrix error. */
export class FocusError extends Error {
  public constructor(
    public readonly endpoint: TokenAttempt["endpoint"],
    public readonly httpStatus: number,
    public readonly errcode: string | undefined,
    message: string,
  ) {
    super(`${endpoint}: HTTP ${httpStatus} ${errcode ?? ""} ${message}`.trim());
    this.name = "FocusError";
  }
}

/**
 * Gets an OpenID token from the homeserver and trades it for a LiveKit token
 * at the focus.
 */
export async function getSFUConfig(
  client: Pick<MatrixClient, "getOpenIdToken">,
  member: CallMembershipIdentityParts,
  serviceUrl: string,
  roomId: string,
  mode: JwtMode,
  record: (a: TokenAttempt) => void,
  log: (msg: string) => void,
): Promise<SFUConfig> {
  const openid = await client.getOpenIdToken();
  if (mode === "auto") {
    try {
      return await postToken(serviceUrl, "get_token", {
        room_id: roomId,
        slot_id: "m.call#ROOM",
        openid_token: openid,
        member: { id: member.memberId, claimed_user_id: member.userId, claimed_device_id: member.deviceId },
      }, record);
    } catch (e) {
      log(`get_token failed, falling back to /sfu/get: ${e}`);
    }
  }
  return await postToken(serviceUrl, "sfu_get", legacyBody(roomId, openid, member.deviceId), record);
}

function legacyBody(roomId: string, openid: IOpenIDToken, deviceId: string): object {
  return { room: roomId, openid_token: openid, device_id: deviceId };
}

async function postToken(
  serviceUrl: string,
  endpoint: TokenAttempt["endpoint"],
  body: object,
  record: (a: TokenAttempt) => void,
): Promise<SFUConfig> {
  const path = endpoint === "get_token" ? "/get_token" : "/sfu/get";
  const res = await fetch(serviceUrl.replace(/\/+$/, "") + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: reported below with the status.
  }
  const errcode = typeof json.errcode === "string" ? json.errcode : undefined;
  record({ endpoint, status: res.status, errcode });
  if (!res.ok) throw new FocusError(endpoint, res.status, errcode, String(json.error ?? text.slice(0, 200)));
  const url = json.url, jwt = json.jwt;
  if (typeof url !== "string" || typeof jwt !== "string") throw new Error(`${path}: answer lacks url or jwt`);
  // Element Call reads the LiveKit room and identity from the token itself.
  const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) as {
    sub?: string;
    video?: { room?: string };
  };
  return { url, jwt, lkRoom: payload.video?.room ?? "", identity: payload.sub ?? "", endpoint };
}
