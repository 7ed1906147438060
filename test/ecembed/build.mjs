// Builds the widget host into the directory given as the only argument; the
// browser test (test/element_call_embedded_test.go) builds it into a
// temporary directory on every run: `node build.mjs OUTDIR`.
//
//   host.html, host.js  the host page: matrix-js-sdk + matrix-widget-api
//   probe.js            loaded into Element Call's page by the test server
//   pkg/…wasm           matrix-sdk-crypto-wasm, fetched next to host.js
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUTDIR");
  process.exit(2);
}
await mkdir(`${out}/pkg`, { recursive: true });
await build({
  entryPoints: ["src/host.ts"],
  bundle: true,
  platform: "browser",
  target: ["chrome120"],
  format: "esm",
  outfile: `${out}/host.js`,
  logLevel: "warning",
});
await copyFile("node_modules/@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm", `${out}/pkg/matrix_sdk_crypto_wasm_bg.wasm`);
for (const f of ["host.html", "probe.js"]) await copyFile(`src/${f}`, `${out}/${f}`);
