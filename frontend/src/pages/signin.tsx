import { useState } from "preact/hooks";
import { message, session, type Session } from "../api";

export function SignIn(props: { notice?: string; signedIn: (s: Session) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin" id="main">
      <form
        aria-labelledby="signin-heading"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            const s = await session.signIn(key.trim());
            setKey("");
            props.signedIn(s);
          } catch (err) {
            setError(message(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <h1 id="signin-heading">hutch dashboard</h1>
        {props.notice && !error ? <p role="status">{props.notice}</p> : null}
        <label for="api-key">API key</label>
        <input
          id="api-key"
          name="apiKey"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          aria-describedby={error ? "signin-error" : "signin-help"}
          aria-invalid={error ? true : undefined}
        />
        <p id="signin-help" class="muted">
          A team's key (e2b_…), as the SDK uses. It stays in this browser's session cookie, never in the page.
        </p>
        {error ? (
          <p id="signin-error" class="error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
