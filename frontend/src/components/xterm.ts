// The terminal's heavy parts, a chunk of their own (terminal.tsx imports it when opened).
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";

export { Terminal as XTerm } from "@xterm/xterm";
export { FitAddon } from "@xterm/addon-fit";

/** ``term.open(parent)`` under a CSP without ``'unsafe-inline'`` styles.
 *
 * xterm.js 6 keeps its theme, cell dimensions and scrollbar colours in ``<style>`` elements
 * it writes ``textContent`` into, which ``style-src 'self'`` refuses (the terminal would draw
 * without colours or cell sizes). While it opens, ``createElement("style")`` makes an inert
 * ``<xterm-style>`` element instead (hidden by styles.css); each one's text is mirrored
 * into a constructed stylesheet adopted by the document, which CSP allows, and kept in step
 * as xterm rewrites it. Returns the undo (called when the terminal is disposed). */
export function openWithoutInlineStyles(term: Terminal, parent: HTMLElement): () => void {
  const doc = parent.ownerDocument;
  const create = doc.createElement;
  doc.createElement = function (this: Document, tag: string, options?: ElementCreationOptions) {
    return create.call(this, tag.toLowerCase() === "style" ? "xterm-style" : tag, options);
  } as typeof doc.createElement;
  try {
    term.open(parent);
  } finally {
    doc.createElement = create;
  }
  const sheets = new Map<Element, CSSStyleSheet>();
  const mine = new WeakSet<CSSStyleSheet>();
  const sync = () => {
    const live = new Set(Array.from(parent.querySelectorAll("xterm-style")));
    for (const el of sheets.keys()) if (!live.has(el)) sheets.delete(el);
    for (const el of live) {
      let sheet = sheets.get(el);
      if (!sheet) {
        sheet = new CSSStyleSheet();
        mine.add(sheet);
        sheets.set(el, sheet);
      }
      sheet.replaceSync(el.textContent ?? "");
    }
    doc.adoptedStyleSheets = [...doc.adoptedStyleSheets.filter((s) => !mine.has(s)), ...sheets.values()];
  };
  const observer = new MutationObserver(sync);
  observer.observe(parent, { subtree: true, childList: true, characterData: true });
  sync();
  return () => {
    observer.disconnect();
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => !mine.has(s));
  };
}
