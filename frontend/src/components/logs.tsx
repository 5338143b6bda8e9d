// The sandbox's logs, followed: GET /v2/sandboxes/{id}/logs forward from the newest entry
// seen, every 2 s while "Follow" is on. Lines are text, never markup.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, message } from "../api";
import type { LogEntry } from "../types";
import { ErrorText, Section } from "./ui";

const MAX_LINES = 2000;

export function Logs({ id }: { id: string }) {
  const [lines, setLines] = useState<LogEntry[]>([]);
  const [follow, setFollow] = useState(true);
  const [error, setError] = useState<string>();
  const box = useRef<HTMLDivElement>(null);
  const cursor = useRef<number | undefined>(undefined);
  const seen = useRef(new Set<string>());

  useEffect(() => {
    if (!follow) return;
    let stopped = false;
    let timer: number | undefined;
    const ctl = new AbortController();
    const poll = async () => {
      try {
        const q = new URLSearchParams({ direction: "forward", limit: "100" });
        if (cursor.current !== undefined) q.set("cursor", String(cursor.current));
        const page = await api.get<{ logs: LogEntry[] }>(`/v2/sandboxes/${encodeURIComponent(id)}/logs?${q}`, ctl.signal);
        // The cursor is inclusive: entries at the same millisecond come again; keep each once.
        const fresh = page.logs.filter((l) => {
          const key = `${l.timestamp}\u0000${l.message}`;
          if (seen.current.has(key)) return false;
          seen.current.add(key);
          return true;
        });
        if (page.logs.length) cursor.current = new Date(page.logs[page.logs.length - 1].timestamp).getTime();
        if (fresh.length && !stopped) setLines((old) => [...old, ...fresh].slice(-MAX_LINES));
        setError(undefined);
        if (!stopped) timer = window.setTimeout(poll, page.logs.length >= 100 ? 0 : 2000);
      } catch (e) {
        if (stopped) return;
        setError(message(e));
        timer = window.setTimeout(poll, 5000);
      }
    };
    poll();
    return () => {
      stopped = true;
      ctl.abort();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [id, follow]);

  useEffect(() => {
    const el = box.current;
    if (el && follow) el.scrollTop = el.scrollHeight;
  }, [lines.length, follow]);

  return (
    <Section
      title="Logs"
      id="logs"
      actions={
        <label class="check">
          <input type="checkbox" checked={follow} onChange={(e) => setFollow((e.target as HTMLInputElement).checked)} /> Follow
        </label>
      }
    >
      <ErrorText error={error} />
      <div class="logs" ref={box} role="log" aria-label="Sandbox logs" tabIndex={0} data-testid="logs">
        {lines.map((l, i) => (
          <div key={i} class={`line level-${l.level}`}>
            <time dateTime={l.timestamp}>{new Date(l.timestamp).toLocaleTimeString()}</time> <span class="level">{l.level}</span> <span class="msg">{l.message}</span>
          </div>
        ))}
      </div>
      {!lines.length ? <p class="muted">No log lines yet.</p> : null}
    </Section>
  );
}
