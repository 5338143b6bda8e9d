// The sandbox's files: a directory listing (envd's Filesystem/ListDir over Connect JSON),
// downloads (GET envd /files) and uploads (POST envd /files, multipart, optional metadata).
import { useRef, useState } from "preact/hooks";
import { envdRpc, envdUrl, message, request } from "../api";
import { bytes, dateTime, parsePairs } from "../format";
import { useLoad } from "../hooks";
import type { EntryInfo } from "../types";
import { ErrorText, Pairs, Section, Status } from "./ui";

function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

function parent(dir: string): string {
  const trimmed = dir.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i <= 0 ? "/" : trimmed.slice(0, i);
}

function isDir(e: EntryInfo): boolean {
  return e.type === "FILE_TYPE_DIRECTORY" || e.type === "directory";
}

export function Files({ id }: { id: string }) {
  const [dir, setDir] = useState("/");
  const [typed, setTyped] = useState("/");
  const [status, setStatus] = useState<string>();
  const [uploadError, setUploadError] = useState<string>();
  const [meta, setMeta] = useState("");
  const picker = useRef<HTMLInputElement>(null);
  const listing = useLoad(
    (signal) => envdRpc<{ entries?: EntryInfo[] }>(id, "ListDir", { path: dir, depth: 1 }).then((r) => {
      if (signal.aborted) throw new Error("aborted");
      return (r.entries ?? []).sort((a, b) => Number(isDir(b)) - Number(isDir(a)) || a.name.localeCompare(b.name));
    }),
    [id, dir],
  );
  const go = (path: string) => {
    setDir(path);
    setTyped(path);
  };
  const upload = async (files: FileList | null) => {
    if (!files || !files.length) return;
    setUploadError(undefined);
    try {
      const headers: Record<string, string> = {};
      for (const [k, v] of parsePairs(meta)) headers[`X-Metadata-${k}`] = v;
      for (const file of Array.from(files)) {
        setStatus(`Uploading ${file.name}…`);
        const form = new FormData();
        form.append("file", file, file.name);
        const q = new URLSearchParams({ path: join(dir, file.name) });
        await request("POST", envdUrl(id, `files?${q}`), { body: form, headers });
      }
      setStatus(`Uploaded ${Array.from(files).map((f) => f.name).join(", ")} to ${dir}.`);
      listing.reload();
    } catch (e) {
      setStatus(undefined);
      setUploadError(message(e));
    } finally {
      if (picker.current) picker.current.value = "";
    }
  };
  return (
    <Section title="Files" id="files">
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          go(typed.trim() || "/");
        }}
      >
        <label for="files-path">Directory</label>
        <input id="files-path" value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        <button type="submit">Open</button>
        <button type="button" onClick={() => go(parent(dir))} disabled={dir === "/"}>
          Up
        </button>
        <button type="button" onClick={() => listing.reload()}>
          Refresh
        </button>
      </form>
      <div class="inline upload">
        <label for="upload-meta">Metadata for uploads</label>
        <input id="upload-meta" value={meta} placeholder="key=value, …" onInput={(e) => setMeta((e.target as HTMLInputElement).value)} />
        <label for="upload-file">Upload to {dir}</label>
        <input id="upload-file" ref={picker} type="file" multiple onChange={(e) => upload((e.target as HTMLInputElement).files)} />
      </div>
      <Status text={status} />
      <ErrorText error={uploadError} />
      <ErrorText error={listing.error} />
      <div class="table-wrap">
        <table class="list" data-testid="files">
          <caption class="sr-only">Entries of {dir}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Permissions</th>
              <th scope="col">Owner</th>
              <th scope="col">Modified</th>
              <th scope="col">Metadata</th>
            </tr>
          </thead>
          <tbody>
            {(listing.data ?? []).map((e) => (
              <tr key={e.path} data-name={e.name}>
                <td data-label="Name">
                  {isDir(e) ? (
                    <button type="button" class="link" onClick={() => go(e.path)}>
                      {e.name}/
                    </button>
                  ) : (
                    <a href={envdUrl(id, `files?${new URLSearchParams({ path: e.path })}`)} download={e.name} aria-label={`Download ${e.name}`}>
                      {e.name}
                    </a>
                  )}
                  {e.symlinkTarget ? <span class="muted"> → {e.symlinkTarget}</span> : null}
                </td>
                <td data-label="Size">{isDir(e) ? "–" : bytes(e.size)}</td>
                <td data-label="Permissions" class="mono">
                  {e.permissions ?? ""}
                </td>
                <td data-label="Owner">
                  {e.owner ?? ""}
                  {e.group ? `:${e.group}` : ""}
                </td>
                <td data-label="Modified">{dateTime(e.modifiedTime)}</td>
                <td data-label="Metadata">
                  <Pairs map={e.metadata} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}
