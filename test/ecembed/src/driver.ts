// The widget driver: what matrix-widget-api's ClientWidgetApi asks the host
// client to do on the widget's behalf, carried out by matrix-js-sdk logged in
// as the host's user. It behaves as Element Web's driver does for its own,
// trusted Element Call widget: every requested capability is granted, OpenID
// tokens are handed out without a prompt, and homeserver errors reach the
// widget as Matrix errors (so that matrix-js-sdk inside Element Call can tell
// "not supported" from a failure, e.g. for delayed events on Dendrite).

import {
  Direction,
  EventType,
  MatrixError,
  type IContent,
  type MatrixClient,
  type MatrixEvent,
  type StateEvents,
  type TimelineEvents,
} from "matrix-js-sdk";
import {
  type Capability,
  type IOpenIDUpdate,
  type IReadEventRelationsResult,
  type IRoomEvent,
  type IRtcTransportsResult,
  type ISendDelayedEventDetails,
  type ISendEventDetails,
  type ITurnServer,
  type IWidgetApiErrorResponseDataDetails,
  OpenIDRequestState,
  type SimpleObservable,
  WidgetDriver,
} from "matrix-widget-api";

/** What the driver did, for the test to assert on (see HostState). */
export interface DriverLog {
  capabilities(granted: string[]): void;
  request(what: string): void;
  failure(what: string, e: unknown): void;
}

const raw = (e: MatrixEvent): IRoomEvent => e.getEffectiveEvent() as IRoomEvent;

export class HostDriver extends WidgetDriver {
  public constructor(
    private readonly client: MatrixClient,
    /** The room the widget lives in: a room widget is confined to it. */
    private readonly roomId: string,
    private readonly log: DriverLog,
  ) {
    super();
  }

  public async validateCapabilities(requested: Set<Capability>): Promise<Set<Capability>> {
    this.log.capabilities([...requested]);
    return new Set(requested);
  }

  private room(roomId: string | null | undefined): string {
    return roomId || this.roomId;
  }

  /** Runs a homeserver call, noting its failure before handing it on to the widget. */
  private async call<T>(what: string, f: () => Promise<T>): Promise<T> {
    this.log.request(what);
    try {
      return await f();
    } catch (e) {
      this.log.failure(what, e);
      throw e;
    }
  }

  public async sendEvent(eventType: string, content: unknown, stateKey: string | null = null, roomId: string | null = null): Promise<ISendEventDetails> {
    const room = this.room(roomId);
    const c = content as IContent;
    let r: { event_id: string };
    if (stateKey !== null) {
      r = await this.call(`state ${eventType}`, () =>
        this.client.sendStateEvent(room, eventType as keyof StateEvents, c as StateEvents[keyof StateEvents], stateKey),
      );
    } else if (eventType === EventType.RoomRedaction) {
      r = await this.call("redaction", () => this.client.redactEvent(room, c["redacts"] as string));
    } else {
      r = await this.call(`event ${eventType}`, () =>
        this.client.sendEvent(room, eventType as keyof TimelineEvents, c as TimelineEvents[keyof TimelineEvents]),
      );
    }
    return { roomId: room, eventId: r.event_id };
  }

  // MSC4140 delayed events: handed to the homeserver as Element Web does.
  // Dendrite has none and answers 404 M_UNRECOGNIZED, which matrix-js-sdk in
  // the widget takes as "not supported" and goes on without.
  public async sendDelayedEvent(delay: number, eventType: string, content: unknown, stateKey: string | null = null, roomId: string | null = null): Promise<ISendDelayedEventDetails> {
    const room = this.room(roomId);
    const r =
      stateKey !== null
        ? await this.call(`delayed state ${eventType}`, () =>
            this.client._unstable_sendDelayedStateEvent(room, { delay }, eventType as keyof StateEvents, content as StateEvents[keyof StateEvents], stateKey),
          )
        : await this.call(`delayed event ${eventType}`, () =>
            this.client._unstable_sendDelayedEvent(room, { delay }, null, eventType as keyof TimelineEvents, content as TimelineEvents[keyof TimelineEvents]),
          );
    return { roomId: room, delayId: r.delay_id };
  }

  public async cancelScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.call("cancel delayed event", () => this.client._unstable_cancelScheduledDelayedEvent(delayId));
  }

  public async restartScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.call("restart delayed event", () => this.client._unstable_restartScheduledDelayedEvent(delayId));
  }

  public async sendScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.call("send delayed event", () => this.client._unstable_sendScheduledDelayedEvent(delayId));
  }

  // MSC4354 sticky events (Element Call's matrix_2_0 mode); Dendrite has none.
  public async sendStickyEvent(stickyDurationMs: number, eventType: string, content: unknown, roomId: string | null = null): Promise<ISendEventDetails> {
    const room = this.room(roomId);
    const r = await this.call(`sticky event ${eventType}`, () =>
      this.client._unstable_sendStickyEvent(room, stickyDurationMs, null, eventType as keyof TimelineEvents, content as TimelineEvents[keyof TimelineEvents]),
    );
    return { roomId: room, eventId: r.event_id };
  }

  public async readStickyEvents(roomId: string): Promise<IRoomEvent[]> {
    const room = this.client.getRoom(roomId);
    return room ? [...room._unstable_getStickyEvents()].map(raw) : [];
  }

  /**
   * To-device messages; encrypted ones (Element Call's per-participant media
   * keys) are Olm-encrypted by the host's Rust crypto, one batch per distinct
   * content.
   */
  public async sendToDevice(eventType: string, encrypted: boolean, contentMap: { [userId: string]: { [deviceId: string]: object } }): Promise<void> {
    const recipients = Object.entries(contentMap).flatMap(([userId, devices]) =>
      Object.entries(devices).map(([deviceId, payload]) => ({ userId, deviceId, payload })),
    );
    if (!encrypted) {
      await this.call(`to-device ${eventType}`, () => this.client.queueToDevice({ eventType, batch: recipients }));
      return;
    }
    const crypto = this.client.getCrypto();
    if (!crypto) throw new Error("the host client has no crypto: encrypted to-device messages need it");
    const byContent = new Map<string, { userId: string; deviceId: string }[]>();
    for (const r of recipients) {
      const key = JSON.stringify(r.payload);
      byContent.set(key, [...(byContent.get(key) ?? []), { userId: r.userId, deviceId: r.deviceId }]);
    }
    await this.call(`encrypted to-device ${eventType}`, () =>
      Promise.all(
        [...byContent].map(async ([payload, devices]) => {
          const batch = await crypto.encryptToDeviceMessages(eventType, devices, JSON.parse(payload));
          await this.client.queueToDevice(batch);
        }),
      ),
    );
  }

  public async readRoomTimeline(roomId: string, eventType: string, msgtype: string | undefined, stateKey: string | undefined, limit: number, since: string | undefined): Promise<IRoomEvent[]> {
    const room = this.client.getRoom(roomId);
    if (!room) return [];
    const max = limit > 0 ? limit : Number.MAX_SAFE_INTEGER;
    const out: IRoomEvent[] = [];
    // Newest first, down to (not including) `since`.
    for (const ev of [...room.getLiveTimeline().getEvents()].reverse()) {
      if (out.length >= max || (since !== undefined && ev.getId() === since)) break;
      if (ev.getType() !== eventType) continue;
      if (msgtype && eventType === EventType.RoomMessage && ev.getContent()["msgtype"] !== msgtype) continue;
      if (stateKey !== undefined && ev.getStateKey() !== stateKey) continue;
      out.push(raw(ev));
    }
    return out;
  }

  public async readRoomState(roomId: string, eventType: string, stateKey: string | undefined): Promise<IRoomEvent[]> {
    const state = this.client.getRoom(roomId)?.getLiveTimeline().getState(Direction.Forward);
    if (!state) return [];
    if (stateKey === undefined) return state.getStateEvents(eventType).map(raw);
    const ev = state.getStateEvents(eventType, stateKey);
    return ev ? [raw(ev)] : [];
  }

  public async readEventRelations(eventId: string, roomId?: string, relationType?: string, eventType?: string, from?: string, to?: string, limit?: number, direction?: "f" | "b"): Promise<IReadEventRelationsResult> {
    const r = await this.client.relations(this.room(roomId), eventId, relationType ?? null, eventType ?? null, {
      from,
      to,
      limit,
      dir: direction as Direction | undefined,
    });
    return { chunk: r.events.map(raw), nextBatch: r.nextBatch ?? undefined, prevBatch: r.prevBatch ?? undefined };
  }

  /** Element Web approves OpenID for its own Element Call widget without asking. */
  public askOpenID(observer: SimpleObservable<IOpenIDUpdate>): void {
    this.call("openid", () => this.client.getOpenIdToken()).then(
      (token) => observer.update({ state: OpenIDRequestState.Allowed, token }),
      () => observer.update({ state: OpenIDRequestState.Blocked }),
    );
  }

  /**
   * The homeserver's TURN servers, if it has any (Dendrite without TURN
   * config: none). Element Call 0.26 does not ask for them (its widget client
   * is made with turnServers: false): LiveKit's ICE servers come from the SFU.
   */
  public async *getTurnServers(): AsyncGenerator<ITurnServer> {
    for (const s of this.client.getTurnServers()) {
      yield { uris: s.urls, username: s.username ?? "", password: s.credential ?? "" };
    }
  }

  /** MSC4143 transport discovery, asked of the homeserver (here: the operator's proxy, which routes it to gxconf). */
  public async getRtcTransports(): Promise<IRtcTransportsResult> {
    const transports = await this.call("rtc transports", () => this.client._unstable_getRTCTransports());
    return { rtc_transports: transports as IRtcTransportsResult["rtc_transports"] };
  }

  public getKnownRooms(): string[] {
    return this.client.getRooms().map((r) => r.roomId);
  }

  public processError(error: unknown): IWidgetApiErrorResponseDataDetails | undefined {
    return error instanceof MatrixError ? { matrix_api_error: error.asWidgetApiErrorData() } : undefined;
  }
}
