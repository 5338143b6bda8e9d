// The dashboard's build: one index.html and content-hashed assets in the Python package
// (src/hutch/dashboard/static), served by the api at /dashboard under a strict CSP:
// nothing inline (no data: URIs, no inline <script>/<style>, no module-preload polyfill).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/dashboard/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact", legalComments: "none" },
  build: {
    outDir: "../src/hutch/dashboard/static",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    sourcemap: false,
    target: "es2022",
    chunkSizeWarningLimit: 800,
  },
});
