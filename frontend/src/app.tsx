// The shell: the session gate (sign-in until GET /dashboard/session answers), the
// navigation and the page of the hash route.
import { useEffect, useState } from "preact/hooks";
import { ApiError, message, session as sessions, useSessionHooks, type Session } from "./api";
import { useRoute } from "./hooks";
import { SignIn } from "./pages/signin";
import { SandboxesPage } from "./pages/sandboxes";
import { SandboxPage } from "./pages/sandbox";
import { TemplatesPage } from "./pages/templates";
import { StoragePage } from "./pages/storage";
import { KeysPage } from "./pages/keys";
import { NodesPage } from "./pages/nodes";

const NAV: [string, string, boolean][] = [
  ["sandboxes", "Sandboxes", false],
  ["templates", "Templates", false],
  ["storage", "Volumes & snapshots", false],
  ["keys", "API keys", false],
  ["nodes", "Nodes", true],
];

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [notice, setNotice] = useState<string>();
  const route = useRoute();
  useSessionHooks(session ?? null, () => {
    setSession(null);
    setNotice("Your session ended: sign in again.");
  });

  useEffect(() => {
    sessions
      .current()
      .then(setSession)
      .catch((e) => {
        setSession(null);
        setNotice(e instanceof ApiError ? e.message : message(e));
      });
  }, []);

  if (session === undefined) return <p class="loading" role="status">Loading…</p>;
  if (session === null)
    return (
      <SignIn
        notice={notice}
        signedIn={(s) => {
          setNotice(undefined);
          setSession(s);
          if (!location.hash) location.hash = "#/sandboxes";
        }}
      />
    );

  const page = route[0] ?? "sandboxes";
  const teamName = String(session.team.name ?? session.team.teamID ?? "team");
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/sandboxes">
          hutch
        </a>
        <nav aria-label="Sections">
          <ul>
            {NAV.filter(([, , admin]) => !admin || session.admin).map(([id, label]) => (
              <li key={id}>
                <a href={`#/${id}`} aria-current={page === id ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span data-testid="team-name" title={session.keyMask ? `signed in with ${session.keyMask}` : undefined}>
            {teamName}
          </span>
          {session.admin ? <span class="badge">admin</span> : null}
          <button
            type="button"
            onClick={async () => {
              try {
                await sessions.signOut();
              } finally {
                setSession(null);
                setNotice("Signed out.");
                location.hash = "";
              }
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page === "sandboxes" && route[1] ? (
          <SandboxPage id={route[1]} key={route[1]} />
        ) : page === "sandboxes" ? (
          <SandboxesPage />
        ) : page === "templates" ? (
          <TemplatesPage selected={route[1]} />
        ) : page === "storage" ? (
          <StoragePage />
        ) : page === "keys" ? (
          <KeysPage />
        ) : page === "nodes" && session.admin ? (
          <NodesPage />
        ) : (
          <p>
            No such page. <a href="#/sandboxes">Sandboxes</a>
          </p>
        )}
      </main>
    </>
  );
}
