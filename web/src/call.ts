// One call, start to end, in the order Element Call goes through it:
// password login → /sync → join the Matrix room → discover the focus →
// OpenID token → LiveKit token → announce the MatrixRTC membership →
// Room.connect → publish camera and microphone.

import {
  ClientEvent,
  createClient,
  type MatrixClient,
  type Room as MatrixRoom,
  SyncState,
} from "matrix-js-sdk";
import {
  type CallMembership,
  type LivekitTransport,
  type MatrixRTCSession,
  MatrixRTCSessionEvent,
} from "matrix-js-sdk/lib/matrixrtc";
import type { CallMembershipIdentityParts } from "matrix-js-sdk/lib/matrixrtc/EncryptionManager";
import {
  AudioPresets,
  ConnectionState,
  DisconnectReason,
  type Participant,
  RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  Room,
  RoomEvent,
  type RoomOptions,
  Track,
  type TrackPublication,
  VideoPresets,
} from "livekit-client";

import { discoverFocus, type DiscoveryMode, getSFUConfig, type JwtMode, type SFUConfig } from "./focus.ts";
import { MatrixKeyProvider } from "./keyprovider.ts";
import { describe, type Phase, type RemoteParticipantState, type Store } from "./state.ts";
import type { Tiles } from "./tiles.ts";

export interface CallParams {
  homeserver: string;
  user: string;
  password: string;
  /** Room ID or alias. */
  room: string;
  e2ee: boolean;
  jwt: JwtMode;
  discovery: DiscoveryMode;
  /** Capture height of the camera (Element Call: 720). */
  videoHeight: number;
  /**
   * Go on to ask the focus for a token even if joining the Matrix room
   * failed: proves that the focus itself refuses non-members.
   */
  probe: boolean;
}

/** What one inbound media stream looks like right now (inbound-rtp). */
export interface InboundStats {
  identity: string;
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

export class Call {
  private client?: MatrixClient;
  private session?: MatrixRTCSession;
  private keyProvider?: MatrixKeyProvider;
  public room?: Room;

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
    this.store.update((s) => (s.e2ee = p.e2ee));

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

    this.phase("discovering");
    const focus = await discoverFocus(client, p.homeserver, p.discovery, (m) => this.log(m));
    this.store.update((s) => (s.focus = { serviceUrl: focus.transport.livekit_service_url, via: focus.via }));

    this.phase("token");
    const member: CallMembershipIdentityParts = {
      userId: login.user_id,
      deviceId: login.device_id,
      // Element Call: a fresh UUID per call, only used by /get_token's identity.
      memberId: crypto.randomUUID(),
    };
    this.store.update((s) => (s.memberId = member.memberId));
    const sfu = await getSFUConfig(
      client,
      member,
      focus.transport.livekit_service_url,
      roomId,
      p.jwt,
      (a) => this.store.update((s) => s.tokenAttempts.push(a)),
      (m) => this.log(m),
    );
    this.store.update((s) => (s.sfu = { url: sfu.url, lkRoom: sfu.lkRoom, identity: sfu.identity, endpoint: sfu.endpoint }));
    if (!matrixRoom) throw new Error("the focus handed a token to a user who is not in the room");

    this.joinSession(matrixRoom, member, focus.transport.livekit_service_url);
    this.phase("connecting");
    await this.connect(sfu);
    this.phase("in-call");
  }

  /**
   * Announces our membership as Element Call does in its default ("legacy")
   * MatrixRTC mode: an org.matrix.msc3401.call.member state event naming the
   * focus and the Matrix room as LiveKit alias (a homeserver without MSC4354
   * sticky events, such as Dendrite, supports nothing newer).
   */
  private joinSession(room: MatrixRoom, member: CallMembershipIdentityParts, serviceUrl: string): void {
    const session = this.client!.matrixRTC.getRoomSession(room);
    this.session = session;
    const onMemberships = (_old: CallMembership[], memberships: CallMembership[]): void => {
      this.store.update((s) => (s.rtcMembers = memberships.map((m) => `${m.userId}|${m.deviceId}`)));
    };
    session.on(MatrixRTCSessionEvent.MembershipsChanged, onMemberships);
    onMemberships([], session.memberships);
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
    const transport: LivekitTransport = {
      type: "livekit",
      livekit_service_url: serviceUrl,
      livekit_alias: room.roomId,
    };
    session.joinRTCSession(member, [transport], undefined, {
      manageMediaKeys: this.p.e2ee,
      callIntent: "video",
      // Element Call's matrix_rtc_session defaults.
      delayedLeaveEventDelayMs: 10_000,
      networkErrorRetryMs: 1_000,
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
    if (this.keyProvider) {
      // One worker per LiveKit room, as Element Call does.
      options.e2ee = {
        keyProvider: this.keyProvider,
        worker: new Worker(new URL("./e2ee-worker.js", import.meta.url), { type: "module" }),
      };
    }
    return options;
  }

  private async connect(sfu: SFUConfig): Promise<void> {
    const room = new Room(this.roomOptions());
    this.room = room;
    this.watch(room);
    this.store.update((s) => s.sfuConnectAttempts++);
    await room.connect(sfu.url, sfu.jwt);
    if (this.keyProvider) await room.setE2EEEnabled(true);
    this.tiles.local(room.localParticipant);
    await room.localParticipant.enableCameraAndMicrophone();
    this.syncLocal();
    for (const p of room.remoteParticipants.values()) this.syncRemote(p);
  }

  private watch(room: Room): void {
    const s = this.store;
    room
      .on(RoomEvent.ConnectionStateChanged, (cs: ConnectionState) => s.update((st) => (st.connectionState = cs)))
      .on(RoomEvent.ParticipantConnected, (p) => this.syncRemote(p))
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        this.tiles.remove(p.identity);
        s.update((st) => {
          delete st.remote[p.identity];
          st.departed.push(p.identity);
        });
      })
      .on(RoomEvent.TrackPublished, (_pub, p) => this.syncRemote(p))
      .on(RoomEvent.TrackUnpublished, (_pub, p) => this.syncRemote(p))
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, pub: RemoteTrackPublication, p: RemoteParticipant) => {
        this.tiles.attach(p, track, pub);
        this.syncRemote(p);
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack, _pub, p: RemoteParticipant) => {
        this.tiles.detach(p, track);
        this.syncRemote(p);
      })
      .on(RoomEvent.TrackMuted, (_pub: TrackPublication, p: Participant) => this.syncAny(p))
      .on(RoomEvent.TrackUnmuted, (_pub: TrackPublication, p: Participant) => this.syncAny(p))
      .on(RoomEvent.LocalTrackPublished, () => this.syncLocal())
      .on(RoomEvent.LocalTrackUnpublished, () => this.syncLocal())
      .on(RoomEvent.ParticipantEncryptionStatusChanged, (_enc: boolean, p?: Participant) => {
        // The worker reports our own encryption asynchronously, after setE2EEEnabled.
        s.update((st) => (st.e2eeActive = room.isE2EEEnabled));
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
        this.log(`disconnected from the SFU (reason ${reason})`);
      });
  }

  private syncAny(p: Participant): void {
    if (p instanceof RemoteParticipant) this.syncRemote(p);
    else this.syncLocal();
  }

  private syncLocal(): void {
    const lp = this.room?.localParticipant;
    if (!lp) return;
    const local: Record<string, boolean> = {};
    for (const pub of lp.trackPublications.values()) local[pub.source] = !pub.isMuted;
    this.store.update((s) => (s.local = local));
  }

  private syncRemote(p: RemoteParticipant): void {
    if (!this.room?.remoteParticipants.has(p.identity)) return;
    const st: RemoteParticipantState = { identity: p.identity, sid: p.sid, encrypted: p.isEncrypted, tracks: {} };
    for (const pub of p.trackPublications.values()) {
      st.tracks[pub.trackSid] = {
        sid: pub.trackSid,
        kind: pub.kind === Track.Kind.Audio ? "audio" : "video",
        source: pub.source,
        muted: pub.isMuted,
        subscribed: pub.isSubscribed,
        encrypted: pub.isEncrypted,
      };
    }
    this.tiles.ensure(p);
    this.store.update((s) => (s.remote[p.identity] = st));
  }

  /** inbound-rtp of every subscribed remote track. */
  public async stats(): Promise<InboundStats[]> {
    const out: InboundStats[] = [];
    for (const p of this.room?.remoteParticipants.values() ?? []) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!track) continue;
        const entry: InboundStats = {
          identity: p.identity,
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
    return out;
  }

  /** outbound-rtp of every published local track, one entry per layer. */
  public async outboundStats(): Promise<OutboundStats[]> {
    const out: OutboundStats[] = [];
    for (const pub of this.room?.localParticipant.trackPublications.values() ?? []) {
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

  public async sendData(text: string, topic = "gxconf-test"): Promise<void> {
    await this.room!.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic });
  }

  public async setCamera(enabled: boolean): Promise<void> {
    await this.room!.localParticipant.setCameraEnabled(enabled);
    this.syncLocal();
  }

  public async setMicrophone(enabled: boolean): Promise<void> {
    await this.room!.localParticipant.setMicrophoneEnabled(enabled);
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

  /** Leaves as Element Call's hang-up does: the SFU room, then the MatrixRTC session. */
  public async leave(): Promise<void> {
    await this.room?.disconnect(true);
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
