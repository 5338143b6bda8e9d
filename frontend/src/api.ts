// Every call the dashboard makes goes through here: the session (sign-in, sign-out), the
// team's API under /dashboard/api (the public E2B REST API, same checks as the SDK), and
// the sandbox's envd under /dashboard/sandboxes/{id}/envd. Mutating calls carry the
// session's CSRF token; any 401 signs the page out.

export const BASE = "/dashboard";

export interface Session {
  team: { teamID?: string; name?: string; [k: string]: unknown };
  admin: boolean;
  csrfToken: string;
  /** The signed-in key, masked (``e2b_3f…9a1c``). */
  keyMask?: string;
  expiresAt?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = "";
let onSignedOut: () => void = () => {};

export function useSessionHooks(session: Session | null, signedOut: () => void): void {
  csrfToken = session?.csrfToken ?? "";
  onSignedOut = signedOut;
}

export function csrf(): string {
  return csrfToken;
}

async function failure(r: Response): Promise<ApiError> {
  let message = `${r.status} ${r.statusText}`;
  try {
    const text = await r.text();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.message === "string") message = body.message;
      else if (body && typeof body.detail === "string") message = body.detail;
    } catch {
      if (text) message = text.slice(0, 300);
    }
  } catch {
    /* the status is all there is */
  }
  return new ApiError(r.status, message);
}

export interface RequestOptions {
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** A 401 here is an answer (the sign-in form's), not a signed-out session. */
  keepOn401?: boolean;
}

export async function request(method: string, url: string, opts: RequestOptions = {}): Promise<Response> {
  const headers = new Headers(opts.headers);
  let body = opts.body;
  if (opts.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(opts.json);
  }
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers.set("X-CSRF-Token", csrfToken);
  const r = await fetch(url, { method, body, headers, credentials: "same-origin", signal: opts.signal });
  if (!r.ok) {
    const err = await failure(r);
    // A 401 signs the page out when the session itself is gone (expired, or its key
    // revoked); a route's own 401 (an admin route for a team key) is only an error.
    if (r.status === 401 && !opts.keepOn401) void stillSignedIn().then((yes) => yes || onSignedOut());
    throw err;
  }
  return r;
}

async function stillSignedIn(): Promise<boolean> {
  try {
    const r = await fetch(`${BASE}/session`, { credentials: "same-origin" });
    return r.ok;
  } catch {
    return true; // unreachable is not signed out
  }
}

async function jsonOf<T>(r: Response): Promise<T> {
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** The team's API: ``path`` as the public API spells it (``/v2/sandboxes``). */
export const api = {
  url: (path: string) => `${BASE}/api${path}`,
  async get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return jsonOf<T>(await request("GET", api.url(path), { signal }));
  },
  async getWithHeaders<T>(path: string, signal?: AbortSignal): Promise<[T, Headers]> {
    const r = await request("GET", api.url(path), { signal });
    return [await jsonOf<T>(r), r.headers];
  },
  async send<T>(method: string, path: string, json?: unknown): Promise<T> {
    return jsonOf<T>(await request(method, api.url(path), { json }));
  },
};

export const session = {
  async current(): Promise<Session | null> {
    try {
      return await jsonOf<Session>(await request("GET", `${BASE}/session`, { keepOn401: true }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
  },
  async signIn(apiKey: string): Promise<Session> {
    return jsonOf<Session>(await request("POST", `${BASE}/session`, { json: { apiKey }, keepOn401: true }));
  },
  async signOut(): Promise<void> {
    await request("DELETE", `${BASE}/session`, { keepOn401: true });
  },
};

/** A sandbox's envd (files, filesystem RPCs) through the dashboard. */
export function envdUrl(sandboxId: string, rest: string): string {
  return `${BASE}/sandboxes/${encodeURIComponent(sandboxId)}/envd/${rest}`;
}

export async function envdRpc<T>(sandboxId: string, method: string, json: unknown): Promise<T> {
  const r = await request("POST", envdUrl(sandboxId, `filesystem.Filesystem/${method}`), {
    json,
    headers: { "Connect-Protocol-Version": "1" },
  });
  return jsonOf<T>(r);
}

/** A volume's content API (``dir``, ``file``, ``path`` + query) through the dashboard. */
export function volumeUrl(volumeId: string, rest: string): string {
  return `${BASE}/volumes/${encodeURIComponent(volumeId)}/content/${rest}`;
}

export function terminalUrl(sandboxId: string): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ csrf: csrfToken });
  return `${scheme}//${location.host}${BASE}/sandboxes/${encodeURIComponent(sandboxId)}/terminal?${q}`;
}

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
