// The team's API keys: create (the secret is shown once, here), list, revoke.
import { useState } from "preact/hooks";
import { api, message } from "../api";
import { dateTime } from "../format";
import { useLoad } from "../hooks";
import type { ApiKey } from "../types";
import { ConfirmButton, ErrorText, Section, Status, DataTable } from "../components/ui";

export function KeysPage() {
  const keys = useLoad((signal) => api.get<ApiKey[]>("/api-keys", signal), []);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<ApiKey>();
  const [status, setStatus] = useState<string>();
  const [error, setError] = useState<string>();
  return (
    <>
      <h1>API keys</h1>
      <Status text={status} />
      <Section title="New key" id="new-key">
        <form
          class="inline"
          onSubmit={async (e) => {
            e.preventDefault();
            setError(undefined);
            try {
              setCreated(await api.send<ApiKey>("POST", "/api-keys", { name: name.trim() }));
              setName("");
              keys.reload();
            } catch (err) {
              setError(message(err));
            }
          }}
        >
          <label for="key-name">Name</label>
          <input id="key-name" required value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          <button type="submit">Create key</button>
        </form>
        <ErrorText error={error} />
        {created?.key ? (
          <div class="secret" role="region" aria-label="The new key">
            <label for="new-secret">Key "{created.name}": copy it now, it is not shown again</label>
            <input id="new-secret" readOnly value={created.key} onFocus={(e) => (e.target as HTMLInputElement).select()} />
            <button
              type="button"
              onClick={async () => {
                try {
                  await navigator.clipboard.writeText(created.key!);
                  setStatus("Copied.");
                } catch {
                  setStatus("Select the key and copy it.");
                }
              }}
            >
              Copy
            </button>
            <button type="button" onClick={() => setCreated(undefined)}>
              Done
            </button>
          </div>
        ) : null}
      </Section>
      <Section title="Keys" id="keys">
        <ErrorText error={keys.error} />
        <DataTable
          testid="keys"
          caption="API keys of the team"
          columns={["Name", "Key", "Created"]}
          actions="Actions"
          rows={(keys.data)}
          row={(k) => (
            <tr key={k.id}>
              <td data-label="Name">{k.name}</td>
              <td data-label="Key" class="mono">
                {k.mask.prefix}
                {k.mask.maskedValuePrefix}…{k.mask.maskedValueSuffix}
              </td>
              <td data-label="Created">{dateTime(k.createdAt)}</td>
              <td>
                <ConfirmButton
                  label="Revoke"
                  confirm={`Revoke ${k.name}? Clients using it stop working.`}
                  action={() => api.send("DELETE", `/api-keys/${encodeURIComponent(k.id)}`)}
                  done={() => {
                    setStatus(`Key ${k.name} revoked.`);
                    keys.reload();
                  }}
                />
              </td>
            </tr>
          )}
        />
      </Section>
    </>
  );
}
