// A file browser over a FileSource: a sandbox's files (envd's Filesystem/ListDir over
// Connect JSON, GET/POST envd /files, Filesystem/Remove) or a volume's (the volume content
// API through /dashboard/volumes/{id}/content: GET dir, GET/PUT file, DELETE path).
// Listing, going into directories, downloads, uploads (with metadata) and deletes.
import { useRef, useState } from "preact/hooks";
import { envdRpc, envdUrl, message, request, volumeUrl } from "../api";
import { bytes, dateTime, parsePairs } from "../format";
import { useLoad } from "../hooks";
import type { EntryInfo, VolumeEntry } from "../types";
import { ConfirmButton, ErrorText, Pairs, Section, Status, DataTable } from "./ui";

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

/** Where a browser's files are: what identifies it, and its four calls. */
export interface FileSource {
  key: string;
  list(dir: string): Promise<EntryInfo[]>;
  downloadUrl(path: string): string;
  upload(path: string, file: File, headers: Record<string, string>): Promise<void>;
  remove(path: string): Promise<void>;
}

export function sandboxFiles(id: string): FileSource {
  return {
    key: `sandbox:${id}`,
    list: (dir) => envdRpc<{ entries?: EntryInfo[] }>(id, "ListDir", { path: dir, depth: 1 }).then((r) => r.entries ?? []),
    downloadUrl: (path) => envdUrl(id, `files?${new URLSearchParams({ path })}`),
    async upload(path, file, headers) {
      const form = new FormData();
      form.append("file", file, file.name);
      await request("POST", envdUrl(id, `files?${new URLSearchParams({ path })}`), { body: form, headers });
    },
    async remove(path) {
      await envdRpc(id, "Remove", { path });
    },
  };
}

function octal(mode: number | undefined): string {
  return mode === undefined ? "" : (mode & 0o7777).toString(8).padStart(4, "0");
}

export function volumeFiles(id: string): FileSource {
  return {
    key: `volume:${id}`,
    async list(dir) {
      const r = await request("GET", volumeUrl(id, `dir?${new URLSearchParams({ path: dir })}`));
      const entries = (await r.json()) as VolumeEntry[];
      return entries.map((e) => ({
        name: e.name,
        type: e.type,
        path: e.path,
        size: e.size,
        permissions: octal(e.mode),
        owner: String(e.uid),
        group: String(e.gid),
        modifiedTime: e.mtime,
        symlinkTarget: e.target,
        metadata: e.metadata,
      }));
    },
    downloadUrl: (path) => volumeUrl(id, `file?${new URLSearchParams({ path })}`),
    async upload(path, file, headers) {
      await request("PUT", volumeUrl(id, `file?${new URLSearchParams({ path })}`), {
        body: file,
        headers: { ...headers, "Content-Type": "application/octet-stream" },
      });
    },
    async remove(path) {
      await request("DELETE", volumeUrl(id, `path?${new URLSearchParams({ path })}`));
    },
  };
}

export function Files({ source, title = "Files" }: { source: FileSource; title?: string }) {
  const [dir, setDir] = useState("/");
  const [typed, setTyped] = useState("/");
  const [status, setStatus] = useState<string>();
  const [uploadError, setUploadError] = useState<string>();
  const [meta, setMeta] = useState("");
  const picker = useRef<HTMLInputElement>(null);
  const listing = useLoad(
    (signal) => source.list(dir).then((entries) => {
      if (signal.aborted) throw new Error("aborted");
      return entries.sort((a, b) => Number(isDir(b)) - Number(isDir(a)) || a.name.localeCompare(b.name));
    }),
    [source.key, dir],
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
        await source.upload(join(dir, file.name), file, headers);
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
    <Section title={title} id="files">
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
      <DataTable
        testid="files"
        caption={`Entries of ${dir}`}
        columns={["Name", "Size", "Permissions", "Owner", "Modified", "Metadata"]}
        actions="Actions"
        rows={(listing.data)}
        row={(e) => (
          <tr key={e.path} data-name={e.name}>
            <td data-label="Name">
              {isDir(e) ? (
                <button type="button" class="link" onClick={() => go(e.path)}>
                  {e.name}/
                </button>
              ) : (
                <a href={source.downloadUrl(e.path)} download={e.name} aria-label={`Download ${e.name}`}>
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
            <td>
              <ConfirmButton
                label="Delete"
                confirm={`Delete ${e.name}${isDir(e) ? " and everything in it" : ""}?`}
                action={() => source.remove(e.path)}
                done={() => {
                  setStatus(`Deleted ${e.path}.`);
                  listing.reload();
                }}
              />
            </td>
          </tr>
        )}
      />
    </Section>
  );
}
