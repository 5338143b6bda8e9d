// Templates: the team's list with sizes and builds, one template's builds and their logs,
// and an import from an OCI image with its progress (POST /templates/from-image, NDJSON).
import { useState } from "preact/hooks";
import { api, message, request } from "../api";
import { dateTime, mib } from "../format";
import { useLoad } from "../hooks";
import type { BuildLogEntry, Template } from "../types";
import { ConfirmButton, ErrorText, Section, Status, DataTable } from "../components/ui";

export function TemplatesPage({ selected }: { selected?: string }) {
  const list = useLoad((signal) => api.get<Template[]>("/templates", signal), [], 5000);
  return (
    <>
      <h1>Templates</h1>
      <ErrorText error={list.error} />
      <DataTable
        testid="templates"
        caption="Templates of the team"
        columns={["Name", "ID", "Status", "Size", "Builds", "Public", "Updated"]}
        rows={(list.data)}
        row={(t) => (
          <tr key={t.templateID} aria-current={selected === t.templateID ? "true" : undefined}>
            <td data-label="Name">
              <a href={`#/templates/${encodeURIComponent(t.templateID)}`}>{t.aliases[0] ?? t.templateID}</a>
            </td>
            <td data-label="ID" class="mono">
              {t.templateID}
            </td>
            <td data-label="Status">{t.buildStatus ?? "ready"}</td>
            <td data-label="Size">
              {t.cpuCount} CPU, {mib(t.memoryMB)}
              {t.diskSizeMB ? `, ${mib(t.diskSizeMB)} disk` : ""}
            </td>
            <td data-label="Builds">{t.buildCount}</td>
            <td data-label="Public">{t.public ? "yes" : "no"}</td>
            <td data-label="Updated">{dateTime(t.updatedAt)}</td>
          </tr>
        )}
      />
      {selected ? <TemplateDetail id={selected} key={selected} deleted={list.reload} /> : null}
      <ImportForm imported={list.reload} />
    </>
  );
}

function TemplateDetail({ id, deleted }: { id: string; deleted: () => void }) {
  const t = useLoad((signal) => api.get<Template>(`/templates/${encodeURIComponent(id)}`, signal), [id], 5000);
  const [logsOf, setLogsOf] = useState<string>();
  return (
    <Section
      title={`Template ${t.data?.aliases[0] ?? id}`}
      id="template-detail"
      actions={
        <ConfirmButton
          label="Delete"
          confirm="Delete this template?"
          action={() => api.send("DELETE", `/templates/${encodeURIComponent(id)}`)}
          done={() => {
            location.hash = "#/templates";
            deleted();
          }}
        />
      }
    >
      <ErrorText error={t.error} />
      <DataTable
        caption="Builds, newest first"
        visibleCaption
        columns={["Build", "Status", "Size", "Created", "Finished"]}
        actions="Logs"
        rows={(t.data?.builds)}
        row={(b) => (
          <tr key={b.buildID}>
            <td data-label="Build" class="mono">
              {b.buildID}
            </td>
            <td data-label="Status">{b.status}</td>
            <td data-label="Size">
              {b.cpuCount} CPU, {mib(b.memoryMB)}
            </td>
            <td data-label="Created">{dateTime(b.createdAt)}</td>
            <td data-label="Finished">{dateTime(b.finishedAt)}</td>
            <td>
              <button type="button" onClick={() => setLogsOf(logsOf === b.buildID ? undefined : b.buildID)} aria-expanded={logsOf === b.buildID}>
                {logsOf === b.buildID ? "Hide logs" : "Logs"}
              </button>
            </td>
          </tr>
        )}
      />
      {logsOf ? <BuildLogs template={id} build={logsOf} /> : null}
    </Section>
  );
}

function BuildLogs({ template, build }: { template: string; build: string }) {
  const logs = useLoad(
    (signal) => api.get<{ logs: BuildLogEntry[] }>(`/templates/${encodeURIComponent(template)}/builds/${encodeURIComponent(build)}/logs?limit=100`, signal),
    [template, build],
    3000,
  );
  return (
    <>
      <h3>Build logs</h3>
      <ErrorText error={logs.error} />
      <div class="logs" role="log" aria-label="Build logs" tabIndex={0}>
        {(logs.data?.logs ?? []).map((l, i) => (
          <div key={i} class={`line level-${l.level}`}>
            <time dateTime={l.timestamp}>{new Date(l.timestamp).toLocaleTimeString()}</time> {l.step ? <span class="level">[{l.step}]</span> : null}{" "}
            <span class="msg">{l.message}</span>
          </div>
        ))}
      </div>
      {logs.data && !logs.data.logs.length ? <p class="muted">No log lines.</p> : null}
    </>
  );
}

interface Progress {
  stage: string;
  done: number;
  total: number;
}

function ImportForm({ imported }: { imported: () => void }) {
  const [source, setSource] = useState("");
  const [name, setName] = useState("");
  const [cpu, setCpu] = useState("");
  const [memory, setMemory] = useState("");
  const [disk, setDisk] = useState("");
  const [inject, setInject] = useState(true);
  const [stages, setStages] = useState<Record<string, Progress>>({});
  const [status, setStatus] = useState<string>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const num = (s: string) => (s.trim() ? Number(s) : undefined);
  return (
    <Section title="Import from an image" id="import">
      <form
        class="grid"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          setStages({});
          setStatus("Importing…");
          try {
            const body: Record<string, unknown> = { source: source.trim(), name: name.trim(), enableInjectEnvd: inject };
            if (num(cpu) !== undefined) body.cpuCount = num(cpu);
            if (num(memory) !== undefined) body.memoryMB = num(memory);
            if (num(disk) !== undefined) body.diskSizeMB = num(disk);
            const r = await request("POST", api.url("/templates/from-image"), { json: body, headers: { Accept: "application/x-ndjson" } });
            const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
            let buffer = "";
            for (;;) {
              const { value, done } = await reader.read();
              if (value) buffer += value;
              let nl: number;
              while ((nl = buffer.indexOf("\n")) >= 0) {
                const line = buffer.slice(0, nl).trim();
                buffer = buffer.slice(nl + 1);
                if (!line) continue;
                const ev = JSON.parse(line);
                if (ev.type === "progress") setStages((s) => ({ ...s, [ev.stage]: ev }));
                else if (ev.type === "result") {
                  setStatus(`Imported ${ev.template.aliases?.[0] ?? ev.template.templateID}.`);
                  imported();
                } else if (ev.type === "error") throw new Error(ev.message);
              }
              if (done) break;
            }
          } catch (err) {
            setStatus(undefined);
            setError(message(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="img-source">Image</label>
        <input id="img-source" required placeholder="docker.io/library/alpine:3 or oci-archive:/path" value={source} onInput={(e) => setSource((e.target as HTMLInputElement).value)} />
        <label for="img-name">Template name</label>
        <input id="img-name" required value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <label for="img-cpu">CPUs</label>
        <input id="img-cpu" type="number" min="0.1" step="0.1" value={cpu} onInput={(e) => setCpu((e.target as HTMLInputElement).value)} />
        <label for="img-mem">Memory (MiB)</label>
        <input id="img-mem" type="number" min="8" value={memory} onInput={(e) => setMemory((e.target as HTMLInputElement).value)} />
        <label for="img-disk">Disk (MiB)</label>
        <input id="img-disk" type="number" min="1" value={disk} onInput={(e) => setDisk((e.target as HTMLInputElement).value)} />
        <label class="check">
          <input type="checkbox" checked={inject} onChange={(e) => setInject((e.target as HTMLInputElement).checked)} /> Inject envd
        </label>
        <button type="submit" disabled={busy}>
          {busy ? "Importing…" : "Import"}
        </button>
      </form>
      {Object.values(stages).map((p) => (
        <div class="progress" key={p.stage}>
          <label for={`stage-${p.stage}`}>{p.stage}</label>
          <progress id={`stage-${p.stage}`} max={p.total || 1} value={p.done} />
          <span class="muted">
            {p.done} / {p.total}
          </span>
        </div>
      ))}
      <Status text={status} />
      <ErrorText error={error} />
    </Section>
  );
}
