// A terminal into the sandbox: xterm.js over the dashboard's WebSocket to a PTY of envd.
// Input and size go out as JSON text frames; the PTY's output comes back as binary frames,
// and {"type":"exit","code"} when the shell ends.
import { useEffect, useRef, useState } from "preact/hooks";
import { message, terminalUrl } from "../api";
import { Section } from "./ui";

export function Terminal({ id }: { id: string }) {
  const [open, setOpen] = useState(false);
  const [state, setState] = useState("closed");
  const box = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    let cleanup: (() => void) | undefined;
    let stopped = false;
    setState("loading");
    // xterm.js is most of the bundle's weight: loaded when a terminal is first opened.
    import("./xterm")
      .then((xterm) => {
        if (!stopped) cleanup = start(xterm);
      })
      .catch((e) => setState(`failed to load: ${message(e)}`));
    return () => {
      stopped = true;
      cleanup?.();
    };
  }, [open, id]);

  function start({ XTerm, FitAddon, openWithoutInlineStyles }: typeof import("./xterm")): () => void {
    const term = new XTerm({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 2000, screenReaderMode: false });
    const fit = new FitAddon();
    term.loadAddon(fit);
    const unstyle = openWithoutInlineStyles(term, box.current!);
    // xterm.js draws only while its element is on screen: show it.
    box.current!.scrollIntoView({ block: "nearest" });
    fit.fit();
    setState("connecting");
    const ws = new WebSocket(terminalUrl(id));
    ws.binaryType = "arraybuffer";
    const send = (msg: object) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(msg));
    ws.onopen = () => {
      setState("connected");
      send({ type: "resize", cols: term.cols, rows: term.rows });
      term.focus();
    };
    ws.onmessage = (ev) => {
      if (ev.data instanceof ArrayBuffer) {
        term.write(new Uint8Array(ev.data));
        return;
      }
      try {
        const msg = JSON.parse(String(ev.data));
        if (msg.type === "exit") setState(`exited with code ${msg.code}`);
        else if (msg.type === "error") setState(`error: ${msg.message ?? "unknown"}`);
      } catch {
        term.write(String(ev.data));
      }
    };
    ws.onclose = (ev) => setState((s) => (s.startsWith("exited") || s.startsWith("error") ? s : `closed${ev.reason ? `: ${ev.reason}` : ""}`));
    ws.onerror = () => setState("connection failed");
    const input = term.onData((data) => send({ type: "input", data }));
    const resized = term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
    const observer = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        /* not laid out */
      }
    });
    observer.observe(box.current!);
    return () => {
      observer.disconnect();
      input.dispose();
      resized.dispose();
      ws.close();
      term.dispose();
      unstyle();
    };
  }

  return (
    <Section
      title="Terminal"
      id="terminal"
      actions={
        <button type="button" onClick={() => setOpen(!open)} aria-expanded={open} aria-controls="terminal-box">
          {open ? "Close terminal" : "Open terminal"}
        </button>
      }
    >
      <p class="muted" role="status" data-testid="terminal-state">
        Terminal {state}
      </p>
      <div id="terminal-box" class={open ? "terminal" : "terminal hidden"} ref={box} data-testid="terminal" />
    </Section>
  );
}
