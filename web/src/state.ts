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
  encrypted: boolean;
}

export interface RemoteParticipantState {
  identity: string;
  sid: string;
  encrypted: boolean;
  tracks: Record<string, RemoteTrackState>;
}

export interface TokenAttempt {
  endpoint: "get_token" | "sfu_get";
  status: number;
  errcode?: string;
}

export interface DataMessage {
  from: string;
  topic?: string;
  text: string;
}

export interface CallState {
  phase: Phase;
  userId?: string;
  deviceId?: string;
  roomId?: string;
  /** Our MatrixRTC member ID (a UUID per call, part of /get_token's identity). */
  memberId?: string;
  /** The focus and how it was found. */
  focus?: { serviceUrl: string; via: "rtc/transports" | "well-known" };
  /** Every token request made, in order. */
  tokenAttempts: TokenAttempt[];
  /** What the focus handed out: SFU URL, LiveKit room and our identity. */
  sfu?: { url: string; lkRoom: string; identity: string; endpoint: string };
  /** How often Room.connect was called: 0 proves we never reached the SFU. */
  sfuConnectAttempts: number;
  connectionState: string;
  e2ee: boolean;
  /** livekit-client's E2EE is on for the room (worker running, keys applied). */
  e2eeActive: boolean;
  /** Published local tracks by source, true when not muted. */
  local: Record<string, boolean>;
  /** Remote participants currently in the LiveKit room, by identity. */
  remote: Record<string, RemoteParticipantState>;
  /** Identities that were in the room and left. */
  departed: string[];
  /** MatrixRTC memberships of the room's call as "@user:server|DEVICE". */
  rtcMembers: string[];
  dataMessages: DataMessage[];
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
    tokenAttempts: [],
    sfuConnectAttempts: 0,
    connectionState: "disconnected",
    e2ee: false,
    e2eeActive: false,
    local: {},
    remote: {},
    departed: [],
    rtcMembers: [],
    dataMessages: [],
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
