// Per-member E2EE keys for livekit-client, fed from the MatrixRTC session the
// way Element Call does (src/e2ee/matrixKeyProvider.ts): matrix-js-sdk
// generates our key and exchanges keys with the other members as encrypted
// to-device messages; every key it learns (ours included) is handed to the
// LiveKit E2EE worker as HKDF key material for the participant identity the
// membership implies (its "RTC backend identity").

import { BaseKeyProvider } from "livekit-client";
import { type MatrixRTCSession, MatrixRTCSessionEvent } from "matrix-js-sdk/lib/matrixrtc";

export class MatrixKeyProvider extends BaseKeyProvider {
  public constructor(
    private readonly session: MatrixRTCSession,
    private readonly onKey: (identity: string, index: number) => void,
    private readonly onError: (e: unknown) => void,
  ) {
    // Element Call's settings: a ring of 256 key indices, ratcheting allowed.
    super({ ratchetWindowSize: 10, keyringSize: 256 });
    session.on(MatrixRTCSessionEvent.EncryptionKeyChanged, this.keyChanged);
    // Keys the session learnt before we listened.
    session.reemitEncryptionKeys();
  }

  public stop(): void {
    this.session.off(MatrixRTCSessionEvent.EncryptionKeyChanged, this.keyChanged);
  }

  private readonly keyChanged = (key: Uint8Array<ArrayBuffer>, index: number, _member: unknown, identity: string): void => {
    crypto.subtle.importKey("raw", key, "HKDF", false, ["deriveBits", "deriveKey"]).then(
      (material) => {
        this.onSetEncryptionKey(material, identity, index);
        this.onKey(identity, index);
      },
      this.onError,
    );
  };
}
