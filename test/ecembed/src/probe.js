// Loaded into Element Call's page before its own scripts (the test server
// adds it to index.html): remembers every RTCPeerConnection, so that the
// host page (same origin) can read receiver statistics. It changes nothing
// else: the subclass passes every argument through.
(() => {
  const pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
    }
  };
  window.gxconfProbe = { pcs };
})();
