// Edit a sandbox's metadata: PATCH /sandboxes/{id}/metadata with what changed (a removed
// key is sent as null, as the API merges).
import { useEffect, useState } from "preact/hooks";
import { api, message } from "../api";
import { ErrorText } from "./ui";

export function MetadataEditor(props: { path: string; metadata: Record<string, string>; saved: () => void; disabled: boolean }) {
  const [rows, setRows] = useState<[string, string][]>([]);
  const [dirty, setDirty] = useState(false);
  const [error, setError] = useState<string>();
  useEffect(() => {
    if (!dirty) setRows(Object.entries(props.metadata ?? {}));
  }, [JSON.stringify(props.metadata), dirty]);
  const set = (i: number, col: 0 | 1, v: string) => {
    setDirty(true);
    setRows(rows.map((r, j) => (j === i ? (col === 0 ? [v, r[1]] : [r[0], v]) : r)));
  };
  return (
    <form
      onSubmit={async (e) => {
        e.preventDefault();
        setError(undefined);
        const patch: Record<string, string | null> = {};
        const kept = new Map(rows.filter(([k]) => k.trim()).map(([k, v]) => [k.trim(), v]));
        for (const k of Object.keys(props.metadata ?? {})) if (!kept.has(k)) patch[k] = null;
        for (const [k, v] of kept) if (props.metadata?.[k] !== v) patch[k] = v;
        try {
          if (Object.keys(patch).length) await api.send("PATCH", `${props.path}/metadata`, patch);
          setDirty(false);
          props.saved();
        } catch (err) {
          setError(message(err));
        }
      }}
    >
      <table class="kv">
        <thead>
          <tr>
            <th scope="col">Key</th>
            <th scope="col">Value</th>
            <th scope="col">
              <span class="sr-only">Remove</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map(([k, v], i) => (
            <tr key={i}>
              <td>
                <input aria-label={`Key ${i + 1}`} value={k} disabled={props.disabled} onInput={(e) => set(i, 0, (e.target as HTMLInputElement).value)} />
              </td>
              <td>
                <input aria-label={`Value ${i + 1}`} value={v} disabled={props.disabled} onInput={(e) => set(i, 1, (e.target as HTMLInputElement).value)} />
              </td>
              <td>
                <button
                  type="button"
                  aria-label={`Remove ${k || `row ${i + 1}`}`}
                  disabled={props.disabled}
                  onClick={() => {
                    setDirty(true);
                    setRows(rows.filter((_, j) => j !== i));
                  }}
                >
                  ×
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="row">
        <button
          type="button"
          disabled={props.disabled}
          onClick={() => {
            setDirty(true);
            setRows([...rows, ["", ""]]);
          }}
        >
          Add key
        </button>
        <button type="submit" disabled={props.disabled || !dirty}>
          Save metadata
        </button>
        {dirty ? (
          <button type="button" onClick={() => setDirty(false)}>
            Discard changes
          </button>
        ) : null}
      </div>
      <ErrorText error={error} />
    </form>
  );
}
