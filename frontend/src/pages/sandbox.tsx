// One sandbox: its facts and actions (timeout, pause, resume, snapshot, kill, metadata),
// its metrics plotted, its logs followed, a terminal and a file browser.
import { useMemo, useState } from "preact/hooks";
import { api, message } from "../api";
import { dateTime, mib, relative } from "../format";
import { useLoad } from "../hooks";
import type { SandboxDetail } from "../types";
import { ActionButton, ConfirmButton, ErrorText, Pairs, Section, Status } from "../components/ui";
import { Metrics } from "../components/metrics";
import { Logs } from "../components/logs";
import { Terminal } from "../components/terminal";
import { Files, sandboxFiles } from "../components/files";
import { MetadataEditor } from "../components/metadata";

export function SandboxPage({ id }: { id: string }) {
  const [status, setStatus] = useState<string>();
  const files = useMemo(() => sandboxFiles(id), [id]);
  const detail = useLoad((signal) => api.get<SandboxDetail>(`/sandboxes/${encodeURIComponent(id)}`, signal), [id], 3000);
  const s = detail.data;
  const path = `/sandboxes/${encodeURIComponent(id)}`;
  const after = (text: string) => () => {
    setStatus(text);
    detail.reload();
  };
  return (
    <>
      <p class="crumbs">
        <a href="#/sandboxes">Sandboxes</a> / <span>{id}</span>
      </p>
      <h1>
        Sandbox <span class="mono">{id}</span>
      </h1>
      {detail.status === 404 ? (
        <p role="alert">
          No such sandbox: it was killed, its timeout ended, or it is not this team's. <a href="#/sandboxes">Back to the list</a>
        </p>
      ) : (
        <ErrorText error={detail.error} />
      )}
      <Status text={status} />
      {s && detail.status !== 404 ? (
        <>
          <Section title="Overview" id="overview">
            <dl class="facts">
              <dt>State</dt>
              <dd>
                <span class={`state state-${s.state}`} data-testid="sandbox-state">
                  {s.state}
                </span>
                {s.pauseMode ? <span class="muted"> ({s.pauseMode})</span> : null}
              </dd>
              <dt>Template</dt>
              <dd>{s.alias ?? s.templateID}</dd>
              <dt>Resources</dt>
              <dd>
                {s.cpuCount} CPU, {mib(s.memoryMB)} memory{s.diskSizeMB ? `, ${mib(s.diskSizeMB)} disk` : ""}
              </dd>
              <dt>Started</dt>
              <dd>{dateTime(s.startedAt)}</dd>
              <dt>Ends</dt>
              <dd>
                {dateTime(s.endAt)} ({relative(s.endAt)}, then {s.lifecycle?.onTimeout ?? "kill"})
              </dd>
              <dt>envd</dt>
              <dd>{s.envdVersion}</dd>
              <dt>Metadata</dt>
              <dd data-testid="sandbox-metadata">
                <Pairs map={s.metadata} />
              </dd>
            </dl>
          </Section>
          <Section title="Actions" id="actions">
            <div class="actions">
              <TimeoutForm path={path} done={after("Timeout set.")} />
              {s.state === "running" ? (
                <ActionButton label="Pause" action={() => api.send("POST", `${path}/pause`, {})} done={after("Paused.")} />
              ) : null}
              {s.state === "paused" ? (
                <ActionButton label="Resume" action={() => api.send("POST", `${path}/connect`, { timeout: 300 })} done={after("Resumed.")} />
              ) : null}
              <SnapshotForm path={path} done={(name) => setStatus(`Snapshot ${name} taken.`)} />
              <ConfirmButton
                label="Kill"
                confirm="Kill this sandbox? Its files are lost."
                action={() => api.send("DELETE", path)}
                done={() => {
                  location.hash = "#/sandboxes";
                }}
              />
            </div>
          </Section>
          <Section title="Metadata" id="metadata-edit">
            <MetadataEditor path={path} metadata={s.metadata} saved={after("Metadata saved.")} disabled={s.state !== "running"} />
          </Section>
          <Metrics id={id} since={s.startedAt} />
          <Logs id={id} />
          {s.state === "running" ? (
            <>
              <Terminal id={id} />
              <Files source={files} />
            </>
          ) : (
            <p class="muted">The terminal and files are there while the sandbox runs.</p>
          )}
        </>
      ) : null}
    </>
  );
}

function TimeoutForm({ path, done }: { path: string; done: () => void }) {
  const [seconds, setSeconds] = useState("300");
  const [error, setError] = useState<string>();
  return (
    <form
      class="inline"
      onSubmit={async (e) => {
        e.preventDefault();
        setError(undefined);
        try {
          await api.send("POST", `${path}/timeout`, { timeout: Number.parseInt(seconds, 10) });
          done();
        } catch (err) {
          setError(message(err));
        }
      }}
    >
      <label for="timeout-s">Timeout from now (s)</label>
      <input id="timeout-s" type="number" min="0" required value={seconds} onInput={(e) => setSeconds((e.target as HTMLInputElement).value)} />
      <button type="submit">Set timeout</button>
      <ErrorText error={error} />
    </form>
  );
}

function SnapshotForm({ path, done }: { path: string; done: (name: string) => void }) {
  const [name, setName] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="inline"
      onSubmit={async (e) => {
        e.preventDefault();
        setError(undefined);
        setBusy(true);
        try {
          const snap = await api.send<{ snapshotID: string; names: string[] }>("POST", `${path}/snapshots`, name.trim() ? { name: name.trim() } : {});
          done(snap.names[0] ?? snap.snapshotID);
          setName("");
        } catch (err) {
          setError(message(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      <label for="snapshot-name">Snapshot name (optional)</label>
      <input id="snapshot-name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      <button type="submit" disabled={busy}>
        {busy ? "Snapshotting…" : "Snapshot"}
      </button>
      <ErrorText error={error} />
    </form>
  );
}
