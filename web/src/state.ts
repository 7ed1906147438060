// The state a test driver (or a curious operator, in the console) reads from
// window.gxconf.state. Every change goes through Store.update, which wakes the
// waiters of Store.until: a driver awaits a condition instead of sleeping.

/** Where the call is. "failed" is final; errors says why. */
export type Phase =
  | "idle"
  | "login"
  | "syncing"
  | "joining-room"
  | "discovering"
  | "token"
  | "connecting"
  | "in-call"
  | "left"
  | "failed";

export interface RemoteTrackState {
  sid: string;
  kind: "audio" | "video";
  source: string;
  muted: boolean;
  subscribed: boolean;
  /** The publisher's subscription permission lets us have it (subscription_permission_update). */
  allowed: boolean;
  encrypted: boolean;
}

export interface RemoteParticipantState {
  identity: string;
  sid: string;
  /** The service of the connection the participant is shown from (where it publishes). */
  serviceUrl: string;
  encrypted: boolean;
  tracks: Record<string, RemoteTrackState>;
}

export interface TokenAttempt {
  endpoint: "get_token" | "sfu_get";
  status: number;
  errcode?: string;
}

/** Element Call's MatrixRTC modes that work with state-event memberships. */
export type RtcMode =
  /** Multi-SFU: publish on our own focus, subscribe on every other member's (Element Call's default). */
  | "compatibility"
  /** Everyone on the oldest member's focus (Element Call before v0.17). */
  | "legacy";

/** One LiveKit Room connection of the call. */
export interface ConnectionInfo {
  /** The focus (livekit_service_url) the token came from; connections are keyed by it. */
  serviceUrl: string;
  /** We publish on this connection; the others only subscribe. */
  own: boolean;
  /** From the token: SFU URL, LiveKit room, our identity there, and the endpoint that gave it. */
  url?: string;
  lkRoom?: string;
  identity?: string;
  endpoint?: string;
  /** "token" while asking the focus, then livekit-client's ConnectionState, "failed" on error. */
  state: string;
  tokenAttempts: TokenAttempt[];
  /** Local tracks published on this connection. */
  published: number;
}

export interface DataMessage {
  from: string;
  topic?: string;
  text: string;
}

/** A frame received on a remote data track. */
export interface DataTrackFrameSeen {
  from: string;
  track: string;
  text: string;
}

/** The frame metadata (packet trailers) of a participant's latest displayed video frame. */
export interface FrameMetadataSeen {
  /** Frames displayed with metadata so far. */
  frames: number;
  /** The publisher's user timestamp, ms since the epoch. */
  userTimestampMs: number;
  frameId: number;
}

export interface CallState {
  phase: Phase;
  mode: RtcMode;
  userId?: string;
  deviceId?: string;
  roomId?: string;
  /** Our MatrixRTC member ID (a UUID per call, part of /get_token's identity). */
  memberId?: string;
  /** The focus and how it was found. */
  focus?: { serviceUrl: string; via: "rtc/transports" | "well-known" };
  /** Every token request for our own (publishing) connection, in order. */
  tokenAttempts: TokenAttempt[];
  /** What the focus of our own connection handed out: SFU URL, LiveKit room and our identity. */
  sfu?: { url: string; lkRoom: string; identity: string; endpoint: string };
  /** How often Room.connect was called, on all connections: 0 proves we never reached an SFU. */
  sfuConnectAttempts: number;
  /** livekit-client's state of our own connection. */
  connectionState: string;
  /** The LiveKit connections now open or opening, ours first. */
  connections: ConnectionInfo[];
  /** Connections closed because no member used their service any more, in order. */
  closedConnections: ConnectionInfo[];
  e2ee: boolean;
  /** livekit-client's E2EE is on for the room (worker running, keys applied). */
  e2eeActive: boolean;
  /** Published local tracks by source, true when not muted. */
  local: Record<string, boolean>;
  /**
   * Remote participants on any connection, by identity: those that publish
   * or that a membership names (a member's subscribe-only presence on another
   * service is not a participant of its own).
   */
  remote: Record<string, RemoteParticipantState>;
  /** Identities that were in the call and left. */
  departed: string[];
  /** MatrixRTC memberships of the room's call as "@user:server|DEVICE". */
  rtcMembers: string[];
  /** The service each membership publishes on (getTransport), by "@user:server|DEVICE". */
  rtcTransports: Record<string, string>;
  dataMessages: DataMessage[];
  /** Frames received on the data tracks subscribed to (subscribeDataTrack). */
  dataTrackFrames: DataTrackFrameSeen[];
  /** Frame metadata of the video received, by identity (params.frameMetadata). */
  frameMetadata: Record<string, FrameMetadataSeen>;
  /** Identities whose media key (from the MatrixRTC session) reached the E2EE worker. */
  mediaKeys: string[];
  encryptionErrors: string[];
  errors: string[];
  /** Bumped on every update. */
  version: number;
}

type Waiter = { check: () => boolean; resolve: () => void };

export class Store {
  public readonly state: CallState = {
    phase: "idle",
    mode: "compatibility",
    tokenAttempts: [],
    sfuConnectAttempts: 0,
    connectionState: "disconnected",
    connections: [],
    closedConnections: [],
    e2ee: false,
    e2eeActive: false,
    local: {},
    remote: {},
    departed: [],
    rtcMembers: [],
    rtcTransports: {},
    dataMessages: [],
    dataTrackFrames: [],
    frameMetadata: {},
    mediaKeys: [],
    encryptionErrors: [],
    errors: [],
    version: 0,
  };
  private waiters = new Set<Waiter>();
  private listeners = new Set<(s: CallState) => void>();

  public update(fn: (s: CallState) => void): void {
    fn(this.state);
    this.state.version++;
    for (const l of this.listeners) l(this.state);
    for (const w of [...this.waiters]) {
      if (w.check()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  public subscribe(l: (s: CallState) => void): void {
    this.listeners.add(l);
  }

  public error(where: string, e: unknown): void {
    const msg = `${where}: ${describe(e)}`;
    console.error("[gxconf]", msg);
    this.update((s) => s.errors.push(msg));
  }

  /**
   * Resolves with a snapshot of the state once pred holds; rejects after
   * timeoutMs, or at once when the call has failed and pred does not hold.
   */
  public until(pred: (s: CallState) => boolean, timeoutMs: number): Promise<CallState> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const snapshot = (): CallState => JSON.parse(JSON.stringify(this.state));
      const w: Waiter = {
        check: () => {
          if (pred(this.state)) {
            clearTimeout(timer);
            resolve(snapshot());
            return true;
          }
          if (this.state.phase === "failed") {
            clearTimeout(timer);
            reject(new Error(`call failed: ${this.state.errors.join("; ")}`));
            return true;
          }
          return false;
        },
        resolve: () => {},
      };
      if (w.check()) return;
      timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`condition not met within ${timeoutMs} ms; state: ${JSON.stringify(this.state)}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }
}

export function describe(e: unknown): string {
  if (e instanceof Error) {
    const extra = (e as { errcode?: string; httpStatus?: number });
    const parts = [e.name !== "Error" ? `${e.name}: ${e.message}` : e.message];
    if (extra.httpStatus) parts.push(`(HTTP ${extra.httpStatus}${extra.errcode ? " " + extra.errcode : ""})`);
    return parts.join(" ");
  }
  return String(e);
}
