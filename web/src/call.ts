// One call, start to end, in the order Element Call goes through it:
// password login → /sync → join the Matrix room → discover the focus →
// OpenID token → LiveKit token → announce the MatrixRTC membership →
// Room.connect → publish camera and microphone; meanwhile one more LiveKit
// connection, subscribe-only, per other focus the call's members publish on
// (multi-SFU, Element Call's default "compatibility" mode).

import {
  ClientEvent,
  createClient,
  type MatrixClient,
  type Room as MatrixRoom,
  SyncState,
} from "matrix-js-sdk";
import {
  isLivekitTransportConfig,
  type LivekitTransport,
  type MatrixRTCSession,
  MatrixRTCSessionEvent,
} from "matrix-js-sdk/lib/matrixrtc";
import type { CallMembershipIdentityParts } from "matrix-js-sdk/lib/matrixrtc/EncryptionManager";
import {
  AudioPresets,
  type ConnectionState,
  DisconnectReason,
  type LocalDataTrack,
  type Participant,
  RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  RemoteVideoTrack,
  Room,
  RoomEvent,
  type RoomOptions,
  Track,
  TrackEvent,
  type TrackPublication,
  VideoPresets,
} from "livekit-client";

import { discoverFocus, type DiscoveryMode, getSFUConfig, type JwtMode, type SFUConfig } from "./focus.ts";
import { MatrixKeyProvider } from "./keyprovider.ts";
import {
  type ConnectionInfo,
  describe,
  type Phase,
  type RemoteParticipantState,
  type RtcMode,
  type Store,
} from "./state.ts";
import type { Tiles } from "./tiles.ts";
import { planConnections, subscribeServiceUrls } from "./transports.ts";

export interface CallParams {
  homeserver: string;
  user: string;
  password: string;
  /** Room ID or alias. */
  room: string;
  e2ee: boolean;
  /** The token endpoint of our own connection (the others always try /get_token first). */
  jwt: JwtMode;
  discovery: DiscoveryMode;
  mode: RtcMode;
  /** Capture height of the camera (Element Call: 720). */
  videoHeight: number;
  /**
   * Go on to ask the focus for a token even if joining the Matrix room
   * failed: proves that the focus itself refuses non-members.
   */
  probe: boolean;
  /**
   * Append frame metadata (user timestamp, frame id) to our video as packet
   * trailers and read it from others' (livekit-client's frameMetadata).
   */
  frameMetadata?: boolean;
}

/** What one inbound media stream looks like right now (inbound-rtp). */
export interface InboundStats {
  identity: string;
  /** The service of the connection the stream arrives on. */
  serviceUrl: string;
  trackSid: string;
  kind: string;
  source: string;
  framesDecoded?: number;
  frameWidth?: number;
  frameHeight?: number;
  bytesReceived?: number;
  packetsReceived?: number;
  /** The element's layout size (CSS px) and the decoded video size. */
  elementWidth?: number;
  elementHeight?: number;
  videoWidth?: number;
  videoHeight?: number;
  /** Subscription side: whether the track is enabled (adaptive stream pauses hidden ones). */
  enabled?: boolean;
}

/** What one published local stream (one simulcast layer) sends (outbound-rtp). */
export interface OutboundStats {
  source: string;
  rid?: string;
  framesEncoded?: number;
  frameWidth?: number;
  frameHeight?: number;
  bytesSent?: number;
  qualityLimitationReason?: string;
  active?: boolean;
}

const SYNC_TIMEOUT_MS = 30_000;
/** The topic of the text streams the test client sends and records (sendText). */
const textTopic = "gxconf-text";

/** One LiveKit Room of the call, keyed by the focus its token came from. */
interface Connection {
  serviceUrl: string;
  /** We publish here; on the others we only subscribe. */
  own: boolean;
  room: Room;
  /** The entry in state.connections (then closedConnections) this connection updates. */
  info: ConnectionInfo;
  /** Closed by us: late results of a pending token request or connect are dropped. */
  closed: boolean;
}

export class Call {
  private client?: MatrixClient;
  private session?: MatrixRTCSession;
  private keyProvider?: MatrixKeyProvider;
  private member?: CallMembershipIdentityParts;
  private roomId = "";
  /** The service of the connection we publish on. */
  private publishServiceUrl = "";
  private own?: Connection;
  private readonly dataTracks = new Map<string, LocalDataTrack>();
  private readonly dataTrackTimers = new Map<string, ReturnType<typeof setInterval>>();
  /** Open (or opening) connections by service URL, ours included. */
  private readonly connections = new Map<string, Connection>();
  /** Remote participants by identity, then by the service of the connection they are on. */
  private readonly participants = new Map<string, Map<string, RemoteParticipant>>();
  /** The LiveKit identities the call's memberships imply (CallMembership.rtcBackendIdentity). */
  private attested = new Set<string>();
  /** Identities shown as participants: they stay until they leave every connection. */
  private readonly shown = new Set<string>();
  /** Our membership is announced: from then on we follow the others' transports. */
  private joined = false;
  private leaving = false;

  public constructor(
    private readonly p: CallParams,
    private readonly store: Store,
    private readonly tiles: Tiles,
  ) {}

  private log(msg: string): void {
    console.info("[gxconf]", msg);
  }

  private phase(phase: Phase): void {
    this.log(`phase: ${phase}`);
    this.store.update((s) => (s.phase = phase));
  }

  /** Runs the call; failures end in phase "failed" with the reason in errors. */
  public async start(): Promise<void> {
    try {
      await this.run();
    } catch (e) {
      this.store.error(this.store.state.phase, e);
      this.store.update((s) => (s.phase = "failed"));
    }
  }

  private async run(): Promise<void> {
    const p = this.p;
    this.store.update((s) => {
      s.e2ee = p.e2ee;
      s.mode = p.mode;
    });

    this.phase("login");
    const anon = createClient({ baseUrl: p.homeserver });
    const login = await anon.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: p.user },
      password: p.password,
      initial_device_display_name: "gxconf self-test",
    });
    const client = createClient({
      baseUrl: p.homeserver,
      userId: login.user_id,
      deviceId: login.device_id,
      accessToken: login.access_token,
    });
    this.client = client;
    this.store.update((s) => {
      s.userId = login.user_id;
      s.deviceId = login.device_id;
    });
    if (p.e2ee) {
      // Per-member media keys travel as Olm-encrypted to-device messages.
      await client.initRustCrypto({ useIndexedDB: false });
    }

    this.phase("syncing");
    await startAndSync(client);

    this.phase("joining-room");
    let matrixRoom: MatrixRoom | undefined;
    try {
      const joined = await client.joinRoom(p.room);
      matrixRoom = await waitForJoinedRoom(client, joined.roomId);
      this.store.update((s) => (s.roomId = matrixRoom!.roomId));
    } catch (e) {
      if (!p.probe) throw e;
      this.store.error("joining-room", e);
    }
    const roomId = matrixRoom?.roomId ?? (p.room.startsWith("!") ? p.room : (await client.getRoomIdForAlias(p.room)).room_id);
    this.roomId = roomId;
    if (matrixRoom) this.watchSession(client.matrixRTC.getRoomSession(matrixRoom));

    this.phase("discovering");
    const focus = await discoverFocus(client, p.homeserver, p.discovery, (m) => this.log(m));
    const ownServiceUrl = focus.transport.livekit_service_url;
    this.store.update((s) => (s.focus = { serviceUrl: ownServiceUrl, via: focus.via }));
    this.publishServiceUrl = ownServiceUrl;
    if (p.mode === "legacy" && this.session) {
      // Element Call's legacy mode (LocalTransport.ts): publish where the
      // oldest member does, if there is one.
      await this.session.ensureRecalculateSessionMembers();
      const oldest = this.session.getOldestMembership();
      const t = oldest?.getTransport(oldest);
      if (isLivekitTransportConfig(t)) this.publishServiceUrl = t.livekit_service_url;
    }

    this.phase("token");
    const member: CallMembershipIdentityParts = {
      userId: login.user_id,
      deviceId: login.device_id,
      // Element Call: a fresh UUID per call, only used by /get_token's identity.
      memberId: crypto.randomUUID(),
    };
    this.member = member;
    this.store.update((s) => (s.memberId = member.memberId));
    const own = this.addConnection(this.publishServiceUrl, true);
    this.own = own;
    // A method the operator's backend may call (RoomService.PerformRpc),
    // as an agent or moderation tool calls a client.
    own.room.registerRpcMethod("gxconf.echo", async (d) => `echo from ${login.user_id}: ${d.payload}`);
    // Text streams (livekit-client's sendText) on our test topic, recorded
    // with the data messages.
    own.room.registerTextStreamHandler(textTopic, async (reader, from) => {
      const text = await reader.readAll();
      this.store.update((st) => st.dataMessages.push({ from: from.identity, topic: textTopic, text }));
    });
    const sfu = await getSFUConfig(
      client,
      member,
      this.publishServiceUrl,
      roomId,
      p.jwt,
      (a) =>
        this.store.update((s) => {
          s.tokenAttempts.push(a);
          own.info.tokenAttempts.push(a);
        }),
      (m) => this.log(m),
    );
    this.store.update((s) => {
      s.sfu = { url: sfu.url, lkRoom: sfu.lkRoom, identity: sfu.identity, endpoint: sfu.endpoint };
      Object.assign(own.info, s.sfu);
    });
    if (!matrixRoom) throw new Error("the focus handed a token to a user who is not in the room");

    this.joinSession(matrixRoom, member, ownServiceUrl);
    this.joined = true;
    this.onMemberships();
    this.phase("connecting");
    await this.connect(own, sfu);
    if (this.keyProvider) await own.room.setE2EEEnabled(true);
    this.tiles.local(own.room.localParticipant);
    await own.room.localParticipant.enableCameraAndMicrophone();
    this.syncLocal();
    this.phase("in-call");
  }

  /**
   * Follows the call's memberships (identities, transports) and, with E2EE,
   * their media keys, before we join: the key provider must exist when our
   * first LiveKit room is made.
   */
  private watchSession(session: MatrixRTCSession): void {
    this.session = session;
    session.on(MatrixRTCSessionEvent.MembershipsChanged, () => this.onMemberships());
    session.on(MatrixRTCSessionEvent.MembershipManagerError, (e) => this.store.error("membership", e));
    if (this.p.e2ee) {
      this.keyProvider = new MatrixKeyProvider(
        session,
        (identity, index) => {
          this.log(`media key ${index} for ${identity}`);
          this.store.update((s) => {
            if (!s.mediaKeys.includes(identity)) s.mediaKeys.push(identity);
          });
        },
        (e) => this.store.error("e2ee key", e),
      );
    }
  }

  private onMemberships(): void {
    const session = this.session!;
    const memberships = session.memberships;
    const oldest = session.getOldestMembership();
    const transports: Record<string, string> = {};
    for (const m of memberships) {
      const t = oldest ? m.getTransport(oldest) : undefined;
      if (isLivekitTransportConfig(t)) transports[`${m.userId}|${m.deviceId}`] = t.livekit_service_url;
    }
    this.attested = new Set(memberships.map((m) => m.rtcBackendIdentity));
    this.store.update((s) => {
      s.rtcMembers = memberships.map((m) => `${m.userId}|${m.deviceId}`);
      s.rtcTransports = transports;
    });
    for (const identity of this.participants.keys()) this.syncRemote(identity);
    this.reconcile(Object.values(transports));
  }

  /**
   * Announces our membership as Element Call does with state events (a
   * homeserver without MSC4354 sticky events, such as Dendrite, supports
   * nothing newer): an org.matrix.msc3401.call.member state event with the
   * Matrix room as LiveKit alias. In compatibility mode it names our focus as
   * the one we publish on (focus_selection "multi_sfu"), in legacy mode as
   * our preference, the oldest member's focus being the one used.
   */
  private joinSession(room: MatrixRoom, member: CallMembershipIdentityParts, serviceUrl: string): void {
    const session = this.session!;
    const transport: LivekitTransport = {
      type: "livekit",
      livekit_service_url: serviceUrl,
      livekit_alias: room.roomId,
    };
    const multiSfu = this.p.mode === "compatibility";
    session.joinRTCSession(member, multiSfu ? [] : [transport], multiSfu ? transport : undefined, {
      manageMediaKeys: this.p.e2ee,
      callIntent: "video",
      // Element Call's matrix_rtc_session defaults.
      delayedLeaveEventDelayMs: 10_000,
      networkErrorRetryMs: 1_000,
    });
  }

  /**
   * Opens a connection to every other service the members publish on and
   * closes those no member uses any more (Element Call's ConnectionManager).
   */
  private reconcile(memberServiceUrls: string[]): void {
    if (!this.joined || this.leaving) return;
    const wanted = subscribeServiceUrls(memberServiceUrls, this.publishServiceUrl);
    const open = [...this.connections.values()].filter((c) => !c.own).map((c) => c.serviceUrl);
    const plan = planConnections(open, wanted);
    for (const url of plan.close) void this.close(this.connections.get(url)!);
    for (const url of plan.open) void this.subscribeOn(url);
  }

  private addConnection(serviceUrl: string, own: boolean): Connection {
    const info: ConnectionInfo = { serviceUrl, own, state: "token", tokenAttempts: [], published: 0 };
    const conn: Connection = { serviceUrl, own, room: new Room(this.roomOptions()), info, closed: false };
    this.connections.set(serviceUrl, conn);
    this.store.update((s) => (own ? s.connections.unshift(info) : s.connections.push(info)));
    this.watch(conn);
    return conn;
  }

  /**
   * A subscribe-only connection to another member's service: its token as
   * Element Call gets one for a service it does not publish on (/get_token,
   * then /sfu/get), the same key provider as ours.
   */
  private async subscribeOn(serviceUrl: string): Promise<void> {
    this.log(`subscribing on ${serviceUrl}`);
    const conn = this.addConnection(serviceUrl, false);
    try {
      const sfu = await getSFUConfig(
        this.client!,
        this.member!,
        serviceUrl,
        this.roomId,
        "auto",
        (a) => this.store.update(() => conn.info.tokenAttempts.push(a)),
        (m) => this.log(m),
      );
      if (conn.closed) return;
      this.store.update(() => Object.assign(conn.info, { url: sfu.url, lkRoom: sfu.lkRoom, identity: sfu.identity, endpoint: sfu.endpoint }));
      await this.connect(conn, sfu);
    } catch (e) {
      if (conn.closed) return;
      this.store.error(`connection to ${serviceUrl}`, e);
      this.store.update(() => (conn.info.state = "failed"));
    }
  }

  private async close(conn: Connection): Promise<void> {
    this.log(`closing the connection to ${conn.serviceUrl}: no member publishes there`);
    conn.closed = true;
    this.connections.delete(conn.serviceUrl);
    // Room.disconnect forgets its participants without events.
    const present = [...conn.room.remoteParticipants.values()];
    await conn.room.disconnect(true);
    for (const p of present) this.forget(conn, p);
    this.store.update((s) => {
      s.connections = s.connections.filter((i) => i !== conn.info);
      conn.info.state = conn.room.state;
      s.closedConnections.push(conn.info);
    });
  }

  private roomOptions(): RoomOptions {
    const capture = VideoPresets.h720.resolution;
    const height = this.p.videoHeight;
    const resolution = { width: Math.round((height * capture.width) / capture.height), height, frameRate: 30 };
    const options: RoomOptions = {
      // Element Call's src/livekit/options.ts.
      adaptiveStream: true,
      dynacast: true,
      videoCaptureDefaults: { resolution },
      publishDefaults: {
        audioPreset: AudioPresets.music,
        dtx: true,
        red: false,
        forceStereo: false,
        simulcast: true,
        videoSimulcastLayers: [VideoPresets.h180, VideoPresets.h360],
        stopMicTrackOnMute: false,
        videoCodec: "vp8",
        videoEncoding: { maxBitrate: 1_700_000, maxFramerate: 30 },
        backupCodec: { codec: "vp8", encoding: VideoPresets.h720.encoding },
      },
      stopLocalTrackOnUnpublish: true,
      disconnectOnPageLeave: true,
      webAudioMix: false,
    };
    if (this.p.frameMetadata) {
      options.publishDefaults = { ...options.publishDefaults, frameMetadata: { timestamp: true, frameId: true } };
      // With E2EE its worker writes and reads the trailers.
      if (!this.keyProvider) {
        options.frameMetadata = { worker: new Worker(new URL("./fm-worker.js", import.meta.url), { type: "module" }) };
      }
    }
    if (this.keyProvider) {
      // One key provider (keys by LiveKit identity) for every room, one
      // worker per room, as Element Call does (ECConnectionFactory.ts): a
      // worker given streams of two rooms confuses them.
      options.e2ee = {
        keyProvider: this.keyProvider,
        worker: new Worker(new URL("./e2ee-worker.js", import.meta.url), { type: "module" }),
      };
    }
    return options;
  }

  private async connect(conn: Connection, sfu: SFUConfig): Promise<void> {
    this.store.update((s) => s.sfuConnectAttempts++);
    await conn.room.connect(sfu.url, sfu.jwt);
    for (const p of conn.room.remoteParticipants.values()) this.participantSeen(conn, p);
  }

  private watch(conn: Connection): void {
    const s = this.store;
    const room = conn.room;
    room
      .on(RoomEvent.ConnectionStateChanged, (cs: ConnectionState) => {
        if (conn.closed) return;
        s.update((st) => {
          conn.info.state = cs;
          if (conn.own) st.connectionState = cs;
        });
      })
      .on(RoomEvent.ParticipantConnected, (p) => this.participantSeen(conn, p))
      .on(RoomEvent.ParticipantDisconnected, (p) => this.forget(conn, p))
      .on(RoomEvent.TrackPublished, (_pub, p) => this.participantSeen(conn, p))
      .on(RoomEvent.TrackUnpublished, (_pub, p) => this.syncRemote(p.identity))
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, pub: RemoteTrackPublication, p: RemoteParticipant) => {
        this.tiles.attach(p, track, pub);
        this.participantSeen(conn, p);
        if (this.p.frameMetadata && track instanceof RemoteVideoTrack) this.watchFrameMetadata(p.identity, track);
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack, _pub, p: RemoteParticipant) => {
        this.tiles.detach(p, track);
        // livekit-client emits this before the publication lets go of the
        // track (isSubscribed is still true now): read it afterwards.
        queueMicrotask(() => this.syncRemote(p.identity));
      })
      .on(RoomEvent.TrackSubscriptionPermissionChanged, (_pub, _status, p: RemoteParticipant) => this.syncRemote(p.identity))
      .on(RoomEvent.TrackMuted, (_pub: TrackPublication, p: Participant) => this.syncAny(p))
      .on(RoomEvent.TrackUnmuted, (_pub: TrackPublication, p: Participant) => this.syncAny(p))
      .on(RoomEvent.LocalTrackPublished, () => this.syncLocal())
      .on(RoomEvent.LocalTrackUnpublished, () => this.syncLocal())
      .on(RoomEvent.ParticipantEncryptionStatusChanged, (_enc: boolean, p?: Participant) => {
        // The worker reports our own encryption asynchronously, after
        // setE2EEEnabled, which only our publishing room calls.
        if (conn.own) s.update((st) => (st.e2eeActive = room.isE2EEEnabled));
        if (p) this.syncAny(p);
      })
      .on(RoomEvent.EncryptionError, (e: Error) => {
        console.warn("[gxconf] encryption error", e);
        s.update((st) => st.encryptionErrors.push(describe(e)));
      })
      .on(RoomEvent.DataReceived, (payload: Uint8Array, p?: RemoteParticipant, _kind?: unknown, topic?: string) => {
        const text = new TextDecoder().decode(payload);
        s.update((st) => st.dataMessages.push({ from: p?.identity ?? "", topic, text }));
      })
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        this.log(`disconnected from ${conn.serviceUrl}'s SFU (reason ${reason})`);
      });
  }

  private syncAny(p: Participant): void {
    if (p instanceof RemoteParticipant) this.syncRemote(p.identity);
    else this.syncLocal();
  }

  private syncLocal(): void {
    const lp = this.own?.room.localParticipant;
    if (!lp) return;
    const local: Record<string, boolean> = {};
    for (const pub of lp.trackPublications.values()) local[pub.source] = !pub.isMuted;
    this.store.update((s) => {
      s.local = local;
      for (const c of this.connections.values()) c.info.published = c.room.localParticipant.trackPublications.size;
    });
  }

  private participantSeen(conn: Connection, p: RemoteParticipant): void {
    if (conn.closed) return;
    let on = this.participants.get(p.identity);
    if (!on) this.participants.set(p.identity, (on = new Map()));
    on.set(conn.serviceUrl, p);
    this.syncRemote(p.identity);
  }

  /**
   * p left conn (a connection to the same service opened since may have its
   * own participant of that identity); gone from the call if it is on no
   * connection any more.
   */
  private forget(conn: Connection, p: RemoteParticipant): void {
    const on = this.participants.get(p.identity);
    if (on?.get(conn.serviceUrl) !== p) return;
    on.delete(conn.serviceUrl);
    const identity = p.identity;
    if (on.size) {
      this.syncRemote(identity);
      return;
    }
    this.participants.delete(identity);
    if (!this.shown.delete(identity)) return;
    this.tiles.remove(identity);
    this.store.update((st) => {
      delete st.remote[identity];
      st.departed.push(identity);
    });
  }

  /**
   * Shows the identity from the connection where it publishes. An identity
   * that has published nothing yet and that no membership names is another
   * member's subscribe-only presence, not a participant (Element Call shows
   * members, matched to participants by rtcBackendIdentity).
   */
  private syncRemote(identity: string): void {
    const on = [...(this.participants.get(identity)?.entries() ?? [])];
    const [serviceUrl, p] = on.find(([, p]) => p.trackPublications.size > 0) ?? on[0] ?? [];
    if (!p || !serviceUrl) return;
    if (p.trackPublications.size === 0 && !this.attested.has(identity) && !this.shown.has(identity)) return;
    this.shown.add(identity);
    const st: RemoteParticipantState = { identity, sid: p.sid, serviceUrl, encrypted: p.isEncrypted, tracks: {} };
    for (const pub of p.trackPublications.values()) {
      st.tracks[pub.trackSid] = {
        sid: pub.trackSid,
        kind: pub.kind === Track.Kind.Audio ? "audio" : "video",
        source: pub.source,
        muted: pub.isMuted,
        subscribed: pub.isSubscribed,
        allowed: pub.permissionStatus === "allowed",
        encrypted: pub.isEncrypted,
      };
    }
    this.tiles.ensure(p);
    this.store.update((s) => (s.remote[identity] = st));
  }

  /** inbound-rtp of every subscribed remote track, on every connection. */
  public async stats(): Promise<InboundStats[]> {
    const out: InboundStats[] = [];
    for (const conn of this.connections.values()) {
      for (const p of conn.room.remoteParticipants.values()) {
        for (const pub of p.trackPublications.values()) {
          const track = pub.track;
          if (!track) continue;
          const entry: InboundStats = {
            identity: p.identity,
            serviceUrl: conn.serviceUrl,
            trackSid: pub.trackSid,
            kind: pub.kind,
            source: pub.source,
            enabled: pub.isEnabled,
          };
          const report = await track.getRTCStatsReport();
          report?.forEach((r) => {
            if (r.type !== "inbound-rtp") return;
            entry.framesDecoded = r.framesDecoded;
            entry.frameWidth = r.frameWidth;
            entry.frameHeight = r.frameHeight;
            entry.bytesReceived = r.bytesReceived;
            entry.packetsReceived = r.packetsReceived;
          });
          const el = this.tiles.element(p.identity, track.kind);
          if (el) {
            const rect = el.getBoundingClientRect();
            entry.elementWidth = rect.width;
            entry.elementHeight = rect.height;
            if (el instanceof HTMLVideoElement) {
              entry.videoWidth = el.videoWidth;
              entry.videoHeight = el.videoHeight;
            }
          }
          out.push(entry);
        }
      }
    }
    return out;
  }

  /** outbound-rtp of every published local track, one entry per layer. */
  public async outboundStats(): Promise<OutboundStats[]> {
    const out: OutboundStats[] = [];
    for (const pub of this.own?.room.localParticipant.trackPublications.values() ?? []) {
      const report = await pub.track?.getRTCStatsReport();
      report?.forEach((r) => {
        if (r.type !== "outbound-rtp") return;
        out.push({
          source: pub.source,
          rid: r.rid,
          framesEncoded: r.framesEncoded,
          frameWidth: r.frameWidth,
          frameHeight: r.frameHeight,
          bytesSent: r.bytesSent,
          qualityLimitationReason: r.qualityLimitationReason,
          active: r.active,
        });
      });
    }
    return out;
  }

  private ownRoom(): Room {
    if (!this.own) throw new Error("not connected");
    return this.own.room;
  }

  public async sendData(text: string, topic = "gxconf-test"): Promise<void> {
    await this.ownRoom().localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic });
  }

  /**
   * Records the frame metadata of identity's displayed video frames
   * (livekit-client's lookupFrameMetadata on each new frame) in
   * state.frameMetadata.
   */
  private watchFrameMetadata(identity: string, track: RemoteVideoTrack): void {
    track.on(TrackEvent.TimeSyncUpdate, ({ rtpTimestamp }: { rtpTimestamp: number }) => {
      const m = track.lookupFrameMetadata({ rtpTimestamp });
      if (!m || m.userTimestamp === 0n) return;
      this.store.update((st) => {
        const seen = st.frameMetadata[identity] ?? { frames: 0, userTimestampMs: 0, frameId: 0 };
        st.frameMetadata[identity] = { frames: seen.frames + 1, userTimestampMs: Number(m.userTimestamp / 1000n), frameId: m.frameId };
      });
    });
  }

  /** Sends text as a text stream on the test topic (livekit-client's sendText), to everyone. */
  public async sendText(text: string): Promise<void> {
    await this.ownRoom().localParticipant.sendText(text, { topic: textTopic });
  }

  /** Calls method on identity's client (livekit-client's performRpc) and returns its answer. */
  public async performRpc(identity: string, method: string, payload: string): Promise<string> {
    return this.ownRoom().localParticipant.performRpc({ destinationIdentity: identity, method, payload });
  }

  /** Publishes a data track (livekit-client's publishDataTrack) and returns its sid. */
  public async publishDataTrack(name: string): Promise<string> {
    const track = await this.ownRoom().localParticipant.publishDataTrack({ name });
    this.dataTracks.set(name, track);
    return track.info?.sid ?? "";
  }

  /** Pushes text as a frame every intervalMs on our data track name until stopDataTrackPush. */
  public pushDataTrackEvery(name: string, text: string, intervalMs = 100): void {
    const track = this.dataTracks.get(name);
    if (!track) throw new Error(`no data track ${name}`);
    this.stopDataTrackPush(name);
    const push = (): void => {
      track.tryPush({ payload: new TextEncoder().encode(text) }).catch((e: unknown) => this.log(`data track push: ${describe(e)}`));
    };
    push();
    this.dataTrackTimers.set(name, setInterval(push, intervalMs));
  }

  public stopDataTrackPush(name: string): void {
    clearInterval(this.dataTrackTimers.get(name));
    this.dataTrackTimers.delete(name);
  }

  public async unpublishDataTrack(name: string): Promise<void> {
    this.stopDataTrackPush(name);
    await this.dataTracks.get(name)?.unpublish();
    this.dataTracks.delete(name);
  }

  /**
   * Subscribes to identity's data track name (waiting for it to be
   * published) and records every frame in state.dataTrackFrames; resolves
   * once the SFU has assigned the subscription its handle.
   */
  public async subscribeDataTrack(identity: string, name: string): Promise<void> {
    const p = this.ownRoom().remoteParticipants.get(identity);
    if (!p) throw new Error(`no participant ${identity}`);
    const track = await p.dataTracks.getDeferred(name);
    const reader = track.subscribe().getReader();
    void (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        const text = new TextDecoder().decode(value.payload);
        this.store.update((st) => st.dataTrackFrames.push({ from: identity, track: name, text }));
      }
    })().catch((e: unknown) => this.log(`data track ${name} of ${identity}: ${describe(e)}`));
  }

  /**
   * Who may subscribe to our tracks: everyone (null) or the listed LiveKit
   * identities (livekit-client's setTrackSubscriptionPermissions).
   */
  public setSubscribers(identities: string[] | null): void {
    this.ownRoom().localParticipant.setTrackSubscriptionPermissions(
      identities === null,
      (identities ?? []).map((participantIdentity) => ({ participantIdentity, allowAll: true })),
    );
  }

  public async setCamera(enabled: boolean): Promise<void> {
    await this.ownRoom().localParticipant.setCameraEnabled(enabled);
    this.syncLocal();
  }

  public async setMicrophone(enabled: boolean): Promise<void> {
    await this.ownRoom().localParticipant.setMicrophoneEnabled(enabled);
    this.syncLocal();
  }

  /**
   * Shows the participant's video in a box of width×height CSS pixels. With
   * adaptive stream on (as in Element Call) livekit-client then asks the SFU
   * for a layer that fits, exactly as a shrinking tile does.
   */
  public requestVideoSize(identity: string, width: number, height: number): void {
    this.tiles.resize(identity, width, height);
  }

  /** Leaves as Element Call's hang-up does: the SFU rooms, then the MatrixRTC session. */
  public async leave(): Promise<void> {
    this.leaving = true;
    await Promise.all([...this.connections.values()].map((c) => c.room.disconnect(true)));
    await this.session?.leaveRoomSession(5_000);
    this.keyProvider?.stop();
    this.store.update((s) => (s.phase = "left"));
  }
}

/** Starts /sync and resolves once the first sync is processed. */
async function startAndSync(client: MatrixClient): Promise<void> {
  const prepared = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no initial sync within ${SYNC_TIMEOUT_MS} ms`)), SYNC_TIMEOUT_MS);
    const onSync = (state: SyncState, _prev: SyncState | null, data?: { error?: Error }): void => {
      if (state === SyncState.Prepared || state === SyncState.Syncing) {
        clearTimeout(timer);
        client.off(ClientEvent.Sync, onSync);
        resolve();
      } else if (state === SyncState.Error) {
        clearTimeout(timer);
        client.off(ClientEvent.Sync, onSync);
        reject(data?.error ?? new Error("sync failed"));
      }
    };
    client.on(ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 10 });
  await prepared;
}

/** Waits until /sync delivered the room with our join in it. */
async function waitForJoinedRoom(client: MatrixClient, roomId: string): Promise<MatrixRoom> {
  const joined = (): MatrixRoom | undefined => {
    const r = client.getRoom(roomId);
    return r?.getMyMembership() === "join" ? r : undefined;
  };
  const now = joined();
  if (now) return now;
  return await new Promise<MatrixRoom>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(ClientEvent.Sync, onSync);
      reject(new Error(`room ${roomId} not synced as joined within ${SYNC_TIMEOUT_MS} ms`));
    }, SYNC_TIMEOUT_MS);
    const onSync = (): void => {
      const r = joined();
      if (!r) return;
      clearTimeout(timer);
      client.off(ClientEvent.Sync, onSync);
      resolve(r);
    };
    client.on(ClientEvent.Sync, onSync);
  });
}
