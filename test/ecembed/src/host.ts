// A widget host for Element Call embedded, as Element Web hosts it: the host
// logs in with matrix-js-sdk (Rust crypto for Olm), puts Element Call in an
// iframe with the URL parameters Element Web's ElementCall model builds, and
// talks to it through matrix-widget-api's ClientWidgetApi and HostDriver.
//
// Query parameters (the test opens the page with them):
//   hs        homeserver base URL as clients see it
//   user      user ID             password  the account's password
//   room      room ID (already joined)
//   ec        URL of Element Call's index.html (default ./ec/index.html)
//
// window.ecHost exposes the host's state and Element Call's media as the page
// sees it, and presses Element Call's end-call button.

import {
  ClientEvent,
  createClient,
  EventTimeline,
  type MatrixClient,
  type MatrixEvent,
  MatrixEventEvent,
  type ReceivedToDeviceMessage,
  RoomEvent,
  RoomStateEvent,
  SyncState,
} from "matrix-js-sdk";
import {
  ClientWidgetApi,
  type IRoomEvent,
  type IWidgetApiRequest,
  MatrixCapabilities,
  Widget,
  WidgetApiFromWidgetAction,
} from "matrix-widget-api";

import { HostDriver } from "./driver.ts";

/** Element Call's own widget actions (Element Web's ElementWidgetActions). */
const JoinCall = "io.element.join";
const HangupCall = "im.vector.hangup";
const Close = "io.element.close";
const DeviceMute = "io.element.device_mute";
/** Legacy MatrixRTC membership (MSC3401), what Element Call sends on a homeserver without sticky events. */
const CallMemberEventType = "org.matrix.msc3401.call.member";

export interface HostState {
  phase: "idle" | "login" | "syncing" | "widget" | "failed";
  userId?: string;
  deviceId?: string;
  roomId?: string;
  widgetUrl?: string;
  /** The capabilities Element Call asked for (all granted). */
  capabilities: string[];
  /** ClientWidgetApi's "ready": capabilities negotiated. */
  widgetReady: boolean;
  /**
   * Element Call said it joined the call (io.element.join), left it
   * (im.vector.hangup), or asked to be closed (io.element.close: the host
   * then stops talking to it and removes its frame, as Element Web does).
   */
  joined: boolean;
  hungUp: boolean;
  closed: boolean;
  /** Homeserver requests the driver made for the widget, by kind, and the failed ones. */
  requests: Record<string, number>;
  failures: string[];
  /** To-device messages fed to the widget, by type, and how many of them were encrypted. */
  toDeviceIn: Record<string, number>;
  toDeviceInEncrypted: number;
  /** The call's members by their org.matrix.msc3401.call.member state ("@user:server|DEVICE"), as the host's room state has them. */
  callMembers: string[];
  errors: string[];
}

type Waiter = () => boolean;

class Store {
  public readonly state: HostState = {
    phase: "idle",
    capabilities: [],
    widgetReady: false,
    joined: false,
    hungUp: false,
    closed: false,
    requests: {},
    failures: [],
    toDeviceIn: {},
    toDeviceInEncrypted: 0,
    callMembers: [],
    errors: [],
  };
  private waiters = new Set<Waiter>();

  public update(fn: (s: HostState) => void): void {
    fn(this.state);
    for (const w of [...this.waiters]) if (w()) this.waiters.delete(w);
  }

  public error(where: string, e: unknown): void {
    const msg = `${where}: ${e instanceof Error ? e.message : String(e)}`;
    console.error("[ecHost]", msg);
    this.update((s) => s.errors.push(msg));
  }

  /** Resolves with a snapshot once pred holds; rejects after timeoutMs or when the host failed. */
  public until(pred: (s: HostState) => boolean, timeoutMs: number): Promise<HostState> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const w: Waiter = () => {
        if (pred(this.state)) {
          clearTimeout(timer);
          resolve(JSON.parse(JSON.stringify(this.state)));
          return true;
        }
        if (this.state.phase === "failed") {
          clearTimeout(timer);
          reject(new Error(`host failed: ${this.state.errors.join("; ")}`));
          return true;
        }
        return false;
      };
      if (w()) return;
      timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`condition not met within ${timeoutMs} ms; state: ${JSON.stringify(this.state)}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }
}

const store = new Store();
let api: ClientWidgetApi | undefined;
let iframe: HTMLIFrameElement | undefined;

async function login(hs: string, user: string, password: string): Promise<MatrixClient> {
  const anon = createClient({ baseUrl: hs });
  const r = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "gxconf Element Call host",
  });
  store.update((s) => {
    s.userId = r.user_id;
    s.deviceId = r.device_id;
  });
  return createClient({ baseUrl: hs, userId: r.user_id, deviceId: r.device_id, accessToken: r.access_token });
}

/** Starts the client and waits for its first sync with the room in it. */
async function sync(client: MatrixClient, roomId: string): Promise<void> {
  const ready = new Promise<void>((resolve, reject) => {
    const onSync = (state: SyncState, _prev: SyncState | null, data?: { error?: Error }): void => {
      if (state === SyncState.Error) {
        client.off(ClientEvent.Sync, onSync);
        reject(data?.error ?? new Error("sync failed"));
      } else if ((state === SyncState.Prepared || state === SyncState.Syncing) && client.getRoom(roomId)?.getMyMembership() === "join") {
        client.off(ClientEvent.Sync, onSync);
        resolve();
      }
    };
    client.on(ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 20 });
  await ready;
}

/** The room's call members by their MSC3401 state events (a left member's content is empty). */
function callMembersOf(client: MatrixClient, roomId: string): string[] {
  const state = client.getRoom(roomId)?.getLiveTimeline().getState(EventTimeline.FORWARDS);
  return (state?.getStateEvents(CallMemberEventType) ?? [])
    .filter((e) => typeof e.getContent()["device_id"] === "string")
    .map((e) => `${e.getSender()}|${e.getContent()["device_id"]}`)
    .sort();
}

/**
 * Element Call's widget URL as Element Web's ElementCall.generateWidgetUrl
 * builds it: the parameters in the hash, some of them templates filled from
 * the widget's data; widgetId and parentUrl added as query parameters.
 */
function callWidget(client: MatrixClient, roomId: string, ecUrl: string): { widget: Widget; url: string } {
  const room = client.getRoom(roomId)!;
  const params = new URLSearchParams({
    confineToRoom: "true",
    skipLobby: "$skipLobby",
    returnToLobby: "$returnToLobby",
    intent: "$intent",
    perParticipantE2EE: "$perParticipantE2EE",
    header: "none",
    userId: client.getUserId()!,
    deviceId: client.getDeviceId()!,
    roomId,
    baseUrl: client.baseUrl,
    lang: "en",
    fontScale: "1",
    theme: "$org.matrix.msc2873.client_theme",
    sendNotificationType: "notification",
    preload: "false",
  });
  const url = new URL(ecUrl, location.href);
  url.hash = `#?${params.toString().replace(/%24/g, "$")}`;
  // Element Web: join_existing when someone else is already in the call.
  const others = callMembersOf(client, roomId).filter((m) => !m.startsWith(`${client.getUserId()}|`));
  const widget = new Widget({
    id: `gxconf-ec-${crypto.randomUUID()}`,
    creatorUserId: client.getUserId()!,
    type: "m.call",
    name: "Element Call",
    url: url.toString(),
    waitForIframeLoad: false,
    data: {
      skipLobby: true,
      returnToLobby: false,
      intent: others.length > 0 ? "join_existing" : "start_call",
      perParticipantE2EE: room.hasEncryptionStateEvent(),
    },
  });
  const complete = new URL(
    widget.getCompleteUrl({
      widgetRoomId: roomId,
      currentUserId: client.getUserId()!,
      clientId: "io.element.web",
      clientTheme: "dark",
      clientLanguage: "en",
      deviceId: client.getDeviceId()!,
      baseUrl: client.baseUrl,
    }),
  );
  complete.searchParams.set("widgetId", widget.id);
  complete.searchParams.set("parentUrl", location.href.split("#", 2)[0]);
  return { widget, url: complete.toString().replace(/%24/g, "$") };
}

/** Acknowledges a widget action the host handles itself (ClientWidgetApi rejects unhandled ones). */
function ack(name: string, then?: () => void): void {
  const widgetApi = api!;
  widgetApi.on(`action:${name}`, (ev: CustomEvent<IWidgetApiRequest>) => {
    ev.preventDefault();
    widgetApi.transport.reply(ev.detail, {});
    then?.();
  });
}

function startWidget(client: MatrixClient, roomId: string, ecUrl: string): void {
  const { widget, url } = callWidget(client, roomId, ecUrl);
  store.update((s) => (s.widgetUrl = url));
  const frame = document.createElement("iframe");
  // Element Web's AppTile attributes.
  frame.allow = "microphone; camera; encrypted-media; autoplay; display-capture; clipboard-write; clipboard-read;";
  frame.setAttribute("sandbox", "allow-forms allow-popups allow-popups-to-escape-sandbox allow-same-origin allow-scripts allow-presentation allow-downloads");
  frame.id = "element-call";
  iframe = frame;
  // In the document before the API is made: it talks to the frame's window
  // (the same WindowProxy before and after the widget's URL loads).
  document.body.appendChild(frame);

  const driver = new HostDriver(client, roomId, {
    capabilities: (granted) => store.update((s) => (s.capabilities = granted)),
    request: (what) => store.update((s) => (s.requests[what] = (s.requests[what] ?? 0) + 1)),
    failure: (what, e) => store.update((s) => s.failures.push(`${what}: ${e instanceof Error ? e.message : String(e)}`)),
  });
  api = new ClientWidgetApi(widget, frame, driver);
  api.setViewedRoomId(roomId);
  api.once("ready", () => store.update((s) => (s.widgetReady = true)));
  ack(JoinCall, () => store.update((s) => (s.joined = true)));
  ack(HangupCall, () => store.update((s) => (s.hungUp = true)));
  ack(Close, () => {
    store.update((s) => (s.closed = true));
    api?.stop();
    api = undefined;
    frame.remove();
  });
  ack(DeviceMute);
  api.on(`action:${WidgetApiFromWidgetAction.UpdateAlwaysOnScreen}`, (ev: CustomEvent<IWidgetApiRequest>) => {
    if (!api!.hasCapability(MatrixCapabilities.AlwaysOnScreen)) return;
    ev.preventDefault();
    api!.transport.reply(ev.detail, {});
  });

  // A feed still awaiting the widget's reply when the widget asked to be
  // closed is rejected by the transport the host then stopped: expected, the
  // widget is gone. Anything else is an error.
  const failed =
    (what: string) =>
    (e: unknown): void => {
      if (store.state.closed && e instanceof Error && e.message === "Transport stopped") {
        console.info("[ecHost]", `${what}: dropped, the widget closed before it answered`);
        return;
      }
      store.error(what, e);
    };
  // Feed the widget what the client receives from now on (WidgetMessaging in
  // Element Web): new timeline events once decrypted, state updates, and
  // to-device messages with whether they were encrypted.
  const feed = (ev: MatrixEvent): void => {
    if (ev.getRoomId() !== roomId || ev.isBeingDecrypted() || ev.isDecryptionFailure()) return;
    api?.feedEvent(ev.getEffectiveEvent() as IRoomEvent).catch(failed("feed event"));
  };
  client.on(RoomEvent.Timeline, (ev, _room, toStart, _removed, data) => {
    if (toStart || !data.liveEvent) return;
    if (ev.isEncrypted()) void client.decryptEventIfNeeded(ev);
    feed(ev);
  });
  client.on(MatrixEventEvent.Decrypted, (ev) => feed(ev));
  const members = (): void => store.update((s) => (s.callMembers = callMembersOf(client, roomId)));
  members();
  client.on(RoomStateEvent.Events, (ev) => {
    if (ev.getRoomId() !== roomId) return;
    if (ev.getType() === CallMemberEventType) members();
    api?.feedStateUpdate(ev.getEffectiveEvent() as IRoomEvent).catch(failed("feed state"));
  });
  client.on(ClientEvent.ReceivedToDeviceMessage, ({ message, encryptionInfo }: ReceivedToDeviceMessage) => {
    store.update((s) => {
      s.toDeviceIn[message.type] = (s.toDeviceIn[message.type] ?? 0) + 1;
      if (encryptionInfo) s.toDeviceInEncrypted++;
    });
    api?.feedToDevice(message as unknown as IRoomEvent, encryptionInfo !== null).catch(failed("feed to-device"));
  });

  frame.src = url;
  store.update((s) => (s.phase = "widget"));
}

async function run(): Promise<void> {
  const q = new URLSearchParams(location.search);
  const need = (k: string): string => {
    const v = q.get(k);
    if (!v) throw new Error(`query parameter ${k} is required`);
    return v;
  };
  const hs = need("hs");
  const roomId = need("room");
  const user = need("user");
  const password = need("password");
  const ecUrl = q.get("ec") ?? "./ec/index.html";
  // Off the address bar, as a login page would: the widget gets the host's
  // URL as parentUrl.
  history.replaceState(null, "", location.pathname);
  store.update((s) => {
    s.phase = "login";
    s.roomId = roomId;
  });
  const client = await login(hs, user, password);
  // Element Call's per-participant media keys travel as Olm-encrypted
  // to-device messages, which the host encrypts and decrypts.
  await client.initRustCrypto({ useIndexedDB: false });
  store.update((s) => (s.phase = "syncing"));
  await sync(client, roomId);
  startWidget(client, roomId, ecUrl);
}

/** Per-connection receiver statistics inside Element Call (see probe.js). */
interface Inbound {
  kind: string;
  packetsReceived: number;
  bytesReceived: number;
  framesDecoded?: number;
  frameWidth?: number;
  frameHeight?: number;
  totalAudioEnergy?: number;
  totalSamplesReceived?: number;
}

/** What Element Call shows and plays, as seen from the host page. */
interface Media {
  /** Element Call's <video> elements showing a remote participant. */
  remoteVideos: { videoWidth: number; videoHeight: number; currentTime: number; paused: boolean; totalFrames: number; width: number; height: number }[];
  localVideos: number;
  /** Remote audio tracks playing in <audio> elements. */
  remoteAudioElements: number;
  inbound: Inbound[];
}

async function media(): Promise<Media> {
  const w = iframe?.contentWindow as (Window & { gxconfProbe?: { pcs: RTCPeerConnection[] } }) | null | undefined;
  const doc = iframe?.contentDocument;
  const probe = w?.gxconfProbe;
  if (!w || !doc || !probe) throw new Error("Element Call's frame (or its probe) is not loaded");
  const receivers = probe.pcs.flatMap((pc) => pc.getReceivers());
  const remoteTracks = new Set(receivers.map((r) => r.track));
  // srcObject comes from the frame's realm: no instanceof against ours.
  const tracksOf = (el: HTMLMediaElement): MediaStreamTrack[] => {
    const src = el.srcObject as MediaStream | null;
    return src && typeof src.getTracks === "function" ? src.getTracks() : [];
  };
  const videos = [...doc.querySelectorAll("video")];
  const remoteVideos = videos.filter((v) => tracksOf(v).some((t) => remoteTracks.has(t)));
  const inbound: Inbound[] = [];
  for (const pc of probe.pcs) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp") inbound.push(r as Inbound);
    });
  }
  return {
    remoteVideos: remoteVideos.map((v) => {
      const rect = v.getBoundingClientRect();
      return {
        videoWidth: v.videoWidth,
        videoHeight: v.videoHeight,
        currentTime: v.currentTime,
        paused: v.paused,
        totalFrames: v.getVideoPlaybackQuality().totalVideoFrames,
        width: rect.width,
        height: rect.height,
      };
    }),
    localVideos: videos.length - remoteVideos.length,
    remoteAudioElements: [...doc.querySelectorAll("audio")].filter((a) => !a.paused && tracksOf(a).some((t) => remoteTracks.has(t))).length,
    inbound,
  };
}

(window as unknown as { ecHost: unknown }).ecHost = {
  state: store.state,
  until: (pred: (s: HostState) => boolean, timeoutMs = 30_000) => store.until(pred, timeoutMs),
  media,
  /**
   * Resolves with the media once pred holds, sampling every 200 ms: element
   * times and receiver statistics are counters without change events.
   */
  untilMedia: async (pred: (m: Media) => boolean, timeoutMs = 30_000): Promise<Media> => {
    const deadline = Date.now() + timeoutMs;
    let last: Media | string = "not sampled";
    for (;;) {
      if (store.state.phase === "failed") throw new Error(`host failed: ${store.state.errors.join("; ")}`);
      try {
        last = await media();
        if (pred(last)) return last;
      } catch (e) {
        last = String(e);
      }
      if (Date.now() > deadline) throw new Error(`media condition not met within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  },
  /** The user presses Element Call's own end-call button. */
  pressEndCall: (): void => {
    const button = iframe?.contentDocument?.querySelector<HTMLButtonElement>('[data-testid="incall_leave"]');
    if (!button) throw new Error("Element Call shows no end-call button");
    button.click();
  },
};

run().catch((e) => {
  store.error(store.state.phase, e);
  store.update((s) => (s.phase = "failed"));
});
