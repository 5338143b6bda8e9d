// Volumes (list, create, delete, browse their files) and snapshots (list, delete), with the
// API's own guards: a volume mounted in a live sandbox, for one, is refused with its message.
import { useMemo, useState } from "preact/hooks";
import { api, message } from "../api";
import { bytes } from "../format";
import { useLoad } from "../hooks";
import type { Snapshot, Volume } from "../types";
import { Files, volumeFiles } from "../components/files";
import { ConfirmButton, ErrorText, Section, Status, DataTable } from "../components/ui";

export function StoragePage() {
  const volumes = useLoad((signal) => api.get<Volume[]>("/volumes", signal), [], 5000);
  const snapshots = useLoad((signal) => api.get<Snapshot[]>("/snapshots?limit=100", signal), [], 5000);
  const [name, setName] = useState("");
  const [size, setSize] = useState("");
  const [status, setStatus] = useState<string>();
  const [error, setError] = useState<string>();
  const [browsing, setBrowsing] = useState<Volume>();
  const browser = useMemo(() => (browsing ? volumeFiles(browsing.volumeID) : undefined), [browsing?.volumeID]);
  return (
    <>
      <h1>Volumes &amp; snapshots</h1>
      <Status text={status} />
      <Section title="Volumes" id="volumes">
        <ErrorText error={volumes.error} />
        <DataTable
          testid="volumes"
          caption="Volumes of the team"
          columns={["Name", "ID", "Size", "Used"]}
          actions="Actions"
          rows={(volumes.data)}
          row={(v) => (
            <tr key={v.volumeID}>
              <td data-label="Name">{v.name}</td>
              <td data-label="ID" class="mono">
                {v.volumeID}
              </td>
              <td data-label="Size">{bytes(v.sizeMB * 1048576)}</td>
              <td data-label="Used">{v.usedBytes !== undefined ? bytes(v.usedBytes) : "–"}</td>
              <td>
                <button type="button" aria-pressed={browsing?.volumeID === v.volumeID} aria-label={`Browse the files of ${v.name}`} onClick={() => setBrowsing(v)}>
                  Browse
                </button>{" "}
                <ConfirmButton
                  label="Delete"
                  confirm={`Delete volume ${v.name} and its files?`}
                  action={() => api.send("DELETE", `/volumes/${encodeURIComponent(v.volumeID)}`)}
                  done={() => {
                    setStatus(`Volume ${v.name} deleted.`);
                    if (browsing?.volumeID === v.volumeID) setBrowsing(undefined);
                    volumes.reload();
                  }}
                />
              </td>
            </tr>
          )}
        />
        {volumes.data && !volumes.data.length ? <p class="muted">No volumes.</p> : null}
        <form
          class="inline"
          onSubmit={async (e) => {
            e.preventDefault();
            setError(undefined);
            try {
              const body: Record<string, unknown> = { name: name.trim() };
              if (size.trim()) body.sizeMB = Number.parseInt(size, 10);
              await api.send("POST", "/volumes", body);
              setStatus(`Volume ${name.trim()} created.`);
              setName("");
              setSize("");
              volumes.reload();
            } catch (err) {
              setError(message(err));
            }
          }}
        >
          <label for="vol-name">New volume name</label>
          <input id="vol-name" required value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          <label for="vol-size">Size (MiB, optional)</label>
          <input id="vol-size" type="number" min="1" value={size} onInput={(e) => setSize((e.target as HTMLInputElement).value)} />
          <button type="submit">Create volume</button>
        </form>
        <ErrorText error={error} />
      </Section>
      {browsing && browser ? <Files source={browser} title={`Files of volume ${browsing.name}`} key={browsing.volumeID} /> : null}
      <Section title="Snapshots" id="snapshots">
        <ErrorText error={snapshots.error} />
        <DataTable
          testid="snapshots"
          caption="Snapshots of the team"
          columns={["Snapshot", "Names"]}
          actions="Actions"
          rows={(snapshots.data)}
          row={(s) => (
            <tr key={s.snapshotID}>
              <td data-label="Snapshot" class="mono">
                {s.snapshotID}
              </td>
              <td data-label="Names">{s.names.join(", ") || "–"}</td>
              <td>
                <ConfirmButton
                  label="Delete"
                  confirm="Delete this snapshot?"
                  action={() => api.send("DELETE", `/templates/${encodeURIComponent(s.snapshotID)}`)}
                  done={() => {
                    setStatus(`Snapshot ${s.snapshotID} deleted.`);
                    snapshots.reload();
                  }}
                />
              </td>
            </tr>
          )}
        />
        {snapshots.data && !snapshots.data.length ? <p class="muted">No snapshots. Take one from a sandbox's page.</p> : null}
      </Section>
    </>
  );
}
