// The call's video tiles: one for us, one per remote participant. Remote
// audio plays through a hidden <audio> element in the participant's tile.

import type { LocalParticipant, RemoteParticipant, RemoteTrack, RemoteTrackPublication } from "livekit-client";
import { Track } from "livekit-client";

const DEFAULT_WIDTH = 480;
const DEFAULT_HEIGHT = 270;

export class Tiles {
  private tiles = new Map<string, HTMLElement>();

  public constructor(private readonly grid: HTMLElement) {}

  private tile(key: string, label: string, local = false): HTMLElement {
    let t = this.tiles.get(key);
    if (t) return t;
    t = document.createElement("figure");
    t.className = "tile";
    t.dataset.identity = key;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound comes from the <audio> element
    // Our own preview is small and last, as in Element Call.
    video.style.width = `${local ? DEFAULT_WIDTH / 2 : DEFAULT_WIDTH}px`;
    video.style.height = `${local ? DEFAULT_HEIGHT / 2 : DEFAULT_HEIGHT}px`;
    const caption = document.createElement("figcaption");
    caption.textContent = label;
    t.append(video, caption);
    const localTile = this.tiles.get("local");
    if (localTile && !local) this.grid.insertBefore(t, localTile);
    else this.grid.append(t);
    this.tiles.set(key, t);
    return t;
  }

  public local(p: LocalParticipant): void {
    const t = this.tile("local", `${p.identity} (you)`, true);
    t.classList.add("local");
    p.on("localTrackPublished", (pub) => {
      if (pub.track?.kind === Track.Kind.Video) pub.track.attach(t.querySelector("video")!);
    });
  }

  /** Makes sure a remote participant has a tile, even before media arrives. */
  public ensure(p: RemoteParticipant): void {
    const t = this.tile(p.identity, p.identity);
    const video = [...p.videoTrackPublications.values()].find((pub) => pub.source === Track.Source.Camera);
    t.classList.toggle("muted", !video || video.isMuted);
  }

  public attach(p: RemoteParticipant, track: RemoteTrack, pub: RemoteTrackPublication): void {
    const t = this.tile(p.identity, p.identity);
    if (track.kind === Track.Kind.Video && pub.source === Track.Source.Camera) {
      track.attach(t.querySelector("video")!);
    } else if (track.kind === Track.Kind.Audio) {
      const audio = track.attach();
      t.append(audio);
    }
  }

  public detach(_p: RemoteParticipant, track: RemoteTrack): void {
    track.detach();
  }

  public remove(identity: string): void {
    this.tiles.get(identity)?.remove();
    this.tiles.delete(identity);
  }

  public element(identity: string, kind: Track.Kind): HTMLMediaElement | undefined {
    return this.tiles.get(identity)?.querySelector(kind === Track.Kind.Video ? "video" : "audio") ?? undefined;
  }

  public resize(identity: string, width: number, height: number): void {
    const v = this.tiles.get(identity)?.querySelector("video");
    if (!v) throw new Error(`no video tile for ${identity}`);
    v.style.width = `${width}px`;
    v.style.height = `${height}px`;
  }
}
