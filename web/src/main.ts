// Entry point of the gxconf call page.
//
// Without query parameters it shows a login form (the operator self-test).
// With them (a link) it shows the form filled in from them, and the call
// starts when the person presses Join: a link alone must not send their
// camera and microphone to the call service of a homeserver the link names
// (a browser that remembers the page's camera permission asks nothing). Only
// an automated browser (navigator.webdriver, as the end-to-end tests drive
// the page) starts the call at once. The parameters:
//
//   hs        homeserver base URL (the client-server API, as a client sees it)
//   user      user ID or localpart          password  the account's password
//   room      room ID or alias              e2ee=1    per-member media encryption
//   jwt       auto (/get_token, then /sfu/get) | legacy (/sfu/get only);
//             default auto, legacy with e2ee
//   discovery auto (rtc/transports, then .well-known) | well-known
//   mode      compatibility (multi-SFU: publish on our focus, subscribe on
//             every other member's; Element Call's default) | legacy (all on
//             the oldest member's focus); default compatibility
//   video     camera capture height (default 720)
//   probe=1   ask the focus for a token even when joining the room failed
//
// window.gxconf exposes the call's state and actions to a test driver.

import { Call, type CallParams, type InboundStats, type OutboundStats } from "./call.ts";
import type { DiscoveryMode, JwtMode } from "./focus.ts";
import { type CallState, type RtcMode, Store } from "./state.ts";
import { Tiles } from "./tiles.ts";
import { planConnections, subscribeServiceUrls } from "./transports.ts";

const store = new Store();
let call: Call | undefined;

function requireCall(): Call {
  if (!call) throw new Error("no call started");
  return call;
}

const api = {
  state: store.state,
  /** Resolves once pred(state) holds (see Store.until). */
  until: (pred: (s: CallState) => boolean, timeoutMs = 30_000) => store.until(pred, timeoutMs),
  stats: (): Promise<InboundStats[]> => requireCall().stats(),
  outboundStats: (): Promise<OutboundStats[]> => requireCall().outboundStats(),
  visibility: () => ({ visibilityState: document.visibilityState, hasFocus: document.hasFocus() }),
  /**
   * Resolves with the stats once pred(stats) holds, sampling them every
   * 200 ms: receiver statistics are counters without change events.
   */
  untilStats: async (pred: (st: InboundStats[]) => boolean, timeoutMs = 30_000): Promise<InboundStats[]> => {
    const deadline = Date.now() + timeoutMs;
    let last: InboundStats[] = [];
    for (;;) {
      if (store.state.phase === "failed") throw new Error(`call failed: ${store.state.errors.join("; ")}`);
      last = await requireCall().stats();
      if (pred(last)) return last;
      if (Date.now() > deadline) throw new Error(`stats condition not met within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  },
  sendData: (text: string, topic?: string) => requireCall().sendData(text, topic),
  setSubscribers: (identities: string[] | null) => requireCall().setSubscribers(identities),
  sendText: (text: string) => requireCall().sendText(text),
  performRpc: (identity: string, method: string, payload: string) => requireCall().performRpc(identity, method, payload),
  publishDataTrack: (name: string) => requireCall().publishDataTrack(name),
  pushDataTrackEvery: (name: string, text: string, intervalMs?: number) => requireCall().pushDataTrackEvery(name, text, intervalMs),
  stopDataTrackPush: (name: string) => requireCall().stopDataTrackPush(name),
  unpublishDataTrack: (name: string) => requireCall().unpublishDataTrack(name),
  subscribeDataTrack: (identity: string, name: string) => requireCall().subscribeDataTrack(identity, name),
  setCamera: (on: boolean) => requireCall().setCamera(on),
  setMicrophone: (on: boolean) => requireCall().setMicrophone(on),
  requestVideoSize: (identity: string, w: number, h: number) => requireCall().requestVideoSize(identity, w, h),
  leave: () => requireCall().leave(),
  /** The pure transport selection, for a driver to check with its own inputs. */
  transports: { subscribeServiceUrls, planConnections },
};
declare global {
  interface Window {
    gxconf: typeof api;
  }
}
window.gxconf = api;

function paramsFrom(q: URLSearchParams): CallParams {
  const e2ee = q.get("e2ee") === "1" || q.get("e2ee") === "true";
  // Media keys are bound to the LiveKit identity that the membership implies:
  // "@user:DEVICE" for the call.member state events we send, which only
  // /sfu/get hands out (/get_token's identity is a hash that only MSC4354
  // sticky-event memberships imply). So E2EE defaults to /sfu/get, as in
  // Element Call's legacy mode.
  const jwt = (q.get("jwt") || (e2ee ? "legacy" : "auto")) as JwtMode;
  const discovery = (q.get("discovery") ?? "auto") as DiscoveryMode;
  const mode = (q.get("mode") || "compatibility") as RtcMode;
  if (!["auto", "legacy"].includes(jwt)) throw new Error(`jwt=${jwt}: want auto or legacy`);
  if (!["auto", "well-known"].includes(discovery)) throw new Error(`discovery=${discovery}: want auto or well-known`);
  if (!["compatibility", "legacy"].includes(mode)) throw new Error(`mode=${mode}: want compatibility or legacy`);
  const need = (k: string): string => {
    const v = q.get(k);
    if (!v) throw new Error(`parameter ${k} is missing`);
    return v;
  };
  return {
    homeserver: need("hs").replace(/\/+$/, ""),
    user: need("user"),
    password: need("password"),
    room: need("room"),
    e2ee,
    jwt,
    discovery,
    mode,
    videoHeight: Number(q.get("video") ?? 720),
    probe: q.get("probe") === "1",
    frameMetadata: q.get("fm") === "1",
  };
}

function render(s: CallState): void {
  const el = document.getElementById("status")!;
  const lines = [
    `phase: ${s.phase}${s.e2ee ? " (E2EE)" : ""}`,
    s.userId ? `user: ${s.userId} (device ${s.deviceId})` : "",
    s.roomId ? `room: ${s.roomId}` : "",
    s.focus ? `focus: ${s.focus.serviceUrl} (found via ${s.focus.via})` : "",
    ...s.tokenAttempts.map((a) => `token: ${a.endpoint} → ${a.status}${a.errcode ? " " + a.errcode : ""}`),
    `MatrixRTC mode: ${s.mode}`,
    ...s.connections.map((c) =>
      `${c.own ? "publishing on" : "subscribed on"} ${c.serviceUrl}: ${c.state}` +
      (c.url ? `, SFU ${c.url}, LiveKit room ${c.lkRoom}, identity ${c.identity}` : ""),
    ),
    s.rtcMembers.length ? `MatrixRTC members: ${s.rtcMembers.join(", ")}` : "",
    Object.keys(s.remote).length ? `in the call with: ${Object.keys(s.remote).join(", ")}` : "",
    ...s.errors.map((e) => `error: ${e}`),
  ];
  el.textContent = lines.filter(Boolean).join("\n");
  document.body.dataset.phase = s.phase;
}

function start(p: CallParams): void {
  document.getElementById("login")!.hidden = true;
  document.getElementById("controls")!.hidden = false;
  call = new Call(p, store, new Tiles(document.getElementById("tiles")!));
  void call.start();
}

/**
 * Shows the login form. link holds a link's call parameters: they fill in
 * the form, and those it has no field for (video, discovery, …) go with the
 * call when the person presses Join.
 */
function setupForm(link?: URLSearchParams): void {
  const form = document.getElementById("login") as HTMLFormElement;
  form.hidden = false;
  const saved = JSON.parse(localStorage.getItem("gxconf-selftest") ?? "{}") as Record<string, string>;
  const fill = (k: string, v: string): void => {
    const input = form.elements.namedItem(k) as HTMLInputElement | HTMLSelectElement | null;
    if (!input) return;
    if (input instanceof HTMLInputElement && input.type === "checkbox") input.checked = v === "1" || v === "true";
    else input.value = v;
  };
  for (const [k, v] of Object.entries(saved)) {
    const input = form.elements.namedItem(k) as HTMLInputElement | null;
    if (input && input.type !== "password") fill(k, v);
  }
  if (link) {
    for (const [k, v] of link.entries()) fill(k, v);
    const notice = document.getElementById("link-notice")!;
    notice.textContent =
      `This link asks you to join a call as ${link.get("user") ?? "?"} on ${link.get("hs") ?? "?"}. ` +
      "Joining sends your camera and microphone to that homeserver's call service: " +
      "press Join only if you trust the homeserver and the room.";
    notice.hidden = false;
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    if (link) for (const [k, v] of link.entries()) if (!form.elements.namedItem(k)) q.set(k, v);
    for (const [k, v] of data.entries()) if (typeof v === "string" && v !== "") q.set(k, v);
    if (q.has("e2ee")) q.set("e2ee", "1");
    const remembered: Record<string, string> = {};
    for (const k of ["hs", "user", "room"]) remembered[k] = q.get(k) ?? "";
    localStorage.setItem("gxconf-selftest", JSON.stringify(remembered));
    try {
      start(paramsFrom(q));
    } catch (e) {
      store.error("form", e);
    }
  });
}

function setupControls(): void {
  const cam = document.getElementById("toggle-camera") as HTMLButtonElement;
  const mic = document.getElementById("toggle-mic") as HTMLButtonElement;
  const hang = document.getElementById("hang-up") as HTMLButtonElement;
  cam.onclick = () => void requireCall().setCamera(!store.state.local["camera"]);
  mic.onclick = () => void requireCall().setMicrophone(!store.state.local["microphone"]);
  hang.onclick = () => void requireCall().leave();
}

store.subscribe(render);
render(store.state);
setupControls();
const query = new URLSearchParams(location.search);
if (query.has("hs") && navigator.webdriver) {
  try {
    start(paramsFrom(query));
  } catch (e) {
    store.error("parameters", e);
    store.update((s) => (s.phase = "failed"));
  }
} else {
  setupForm(query.has("hs") ? query : undefined);
}
