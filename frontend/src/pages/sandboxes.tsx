// The team's sandboxes, polled every 2 s, filtered by state, template and metadata as the
// API filters them (GET /v2/sandboxes), with each running one's newest CPU and memory
// sample (GET /sandboxes/metrics).
import { useState } from "preact/hooks";
import { api, message } from "../api";
import { bytes, dateTime, parsePairs, pct, relative } from "../format";
import { useLoad } from "../hooks";
import type { ListedSandbox, Metric } from "../types";
import { ErrorText, Pairs, DataTable } from "../components/ui";

const POLL_MS = 2000;

/** The ``metadata`` filter as the SDK sends it: each key and value escaped, then the
 * whole ``k=v&k=v`` escaped once more as one query value (hutch's query.py). */
export function metadataQuery(pairs: [string, string][]): string {
  const twice = (s: string) => encodeURIComponent(encodeURIComponent(s));
  return pairs.map(([k, v]) => `${twice(k)}=${twice(v)}`).join("&");
}

interface Listing {
  items: ListedSandbox[];
  metrics: Record<string, Metric>;
  more: boolean;
}

export function SandboxesPage() {
  const [state, setState] = useState("running,paused");
  const [template, setTemplate] = useState("");
  const [metaText, setMetaText] = useState("");
  const [applied, setApplied] = useState({ template: "", meta: "" });
  const [filterError, setFilterError] = useState<string>();

  const listing = useLoad<Listing>(
    async (signal) => {
      const q = new URLSearchParams({ limit: "100" });
      if (state) q.set("state", state);
      if (applied.template) q.set("template", applied.template);
      if (applied.meta) q.set("metadata", metadataQuery(parsePairs(applied.meta)));
      const [items, headers] = await api.getWithHeaders<ListedSandbox[]>(`/v2/sandboxes?${q}`, signal);
      const running = items.filter((s) => s.state === "running").map((s) => s.sandboxID);
      let metrics: Record<string, Metric> = {};
      if (running.length) {
        const m = await api.get<{ sandboxes: Record<string, Metric> }>(
          `/sandboxes/metrics?${new URLSearchParams({ sandbox_ids: running.join(",") })}`,
          signal,
        );
        metrics = m.sandboxes ?? {};
      }
      return { items, metrics, more: headers.has("X-Next-Token") };
    },
    [state, applied.template, applied.meta],
    POLL_MS,
  );
  const items = listing.data?.items ?? [];
  return (
    <>
      <h1>Sandboxes</h1>
      <form
        class="filters"
        aria-label="Filter sandboxes"
        onSubmit={(e) => {
          e.preventDefault();
          try {
            parsePairs(metaText);
            setFilterError(undefined);
            setApplied({ template: template.trim(), meta: metaText.trim() });
          } catch (err) {
            setFilterError(message(err));
          }
        }}
      >
        <div class="field">
          <label for="f-state">State</label>
          <select id="f-state" value={state} onChange={(e) => setState((e.target as HTMLSelectElement).value)}>
            <option value="running,paused">running or paused</option>
            <option value="running">running</option>
            <option value="paused">paused</option>
          </select>
        </div>
        <div class="field">
          <label for="f-template">Template</label>
          <input id="f-template" value={template} placeholder="id or name" onInput={(e) => setTemplate((e.target as HTMLInputElement).value)} />
        </div>
        <div class="field grow">
          <label for="f-meta">Metadata</label>
          <input
            id="f-meta"
            value={metaText}
            placeholder="key=value, key2=value2"
            aria-describedby={filterError ? "f-meta-error" : undefined}
            onInput={(e) => setMetaText((e.target as HTMLInputElement).value)}
          />
        </div>
        <button type="submit">Filter</button>
        {filterError ? (
          <p id="f-meta-error" class="error" role="alert">
            {filterError}
          </p>
        ) : null}
      </form>
      <ErrorText error={listing.error} />
      <p class="muted" role="status" data-testid="sandbox-count">
        {listing.loading ? "Loading…" : `${items.length}${listing.data?.more ? "+" : ""} sandbox${items.length === 1 ? "" : "es"}`}
      </p>
      <DataTable
        testid="sandboxes"
        caption="Sandboxes of the team"
        columns={["Sandbox", "Template", "State", "Metadata", "Started", "Ends", "CPU", "Memory"]}
        rows={items}
        row={(s) => {
          const m = listing.data?.metrics[s.sandboxID];
          return (
            <tr key={s.sandboxID} data-sandbox-id={s.sandboxID}>
              <td data-label="Sandbox">
                <a href={`#/sandboxes/${encodeURIComponent(s.sandboxID)}`}>{s.sandboxID}</a>
              </td>
              <td data-label="Template">{s.alias ?? s.templateID}</td>
              <td data-label="State">
                <span class={`state state-${s.state}`}>{s.state}</span>
              </td>
              <td data-label="Metadata" class="metadata">
                <Pairs map={s.metadata} />
              </td>
              <td data-label="Started" title={dateTime(s.startedAt)}>
                {relative(s.startedAt)}
              </td>
              <td data-label="Ends" title={dateTime(s.endAt)}>
                {relative(s.endAt)}
              </td>
              <td data-label="CPU">
                {m ? pct(m.cpuUsedPct) : "–"} <span class="muted">of {s.cpuCount}</span>
              </td>
              <td data-label="Memory">
                {m ? bytes(m.memUsed) : "–"} <span class="muted">of {bytes(s.memoryMB * 1048576)}</span>
              </td>
            </tr>
          );
        }}
      />
      {!listing.loading && !items.length && !listing.error ? <p>No sandboxes match.</p> : null}
    </>
  );
}
