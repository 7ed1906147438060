// Builds the browser call client into dist/ (served by gxconf at /selftest/
// through the Go package in this directory, which embeds dist/).
//
//   app.js            the page: matrix-js-sdk + livekit-client, one ES module
//   e2ee-worker.js    livekit-client's E2EE worker (a separate file: Chromium
//                     runs it as a module worker from the same origin)
//   fm-worker.js      livekit-client's frame metadata worker (packet trailers)
//   pkg/…wasm         matrix-sdk-crypto-wasm, fetched next to app.js by the
//                     Rust crypto (new URL("./pkg/…", import.meta.url))
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";

const dist = "dist";

// Keep the committed placeholder; everything else is rebuilt.
await mkdir(dist, { recursive: true });
for (const name of await readdir(dist)) {
  if (name !== "PLACEHOLDER") await rm(path.join(dist, name), { recursive: true, force: true });
}

const common = {
  bundle: true,
  platform: "browser",
  target: ["chrome120"],
  minify: true,
  legalComments: "linked",
  logLevel: "warning",
};
await build({ ...common, entryPoints: ["src/main.ts"], format: "esm", outfile: `${dist}/app.js` });
await build({ ...common, entryPoints: ["livekit-client/e2ee-worker"], format: "esm", outfile: `${dist}/e2ee-worker.js` });
await build({ ...common, entryPoints: ["livekit-client/frame-metadata-worker"], format: "esm", outfile: `${dist}/fm-worker.js` });

const wasm = "node_modules/@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm";
await mkdir(`${dist}/pkg`, { recursive: true });
await copyFile(wasm, `${dist}/pkg/matrix_sdk_crypto_wasm_bg.wasm`);
for (const f of ["index.html", "style.css"]) await copyFile(`src/${f}`, `${dist}/${f}`);
console.log("web: built dist/");
