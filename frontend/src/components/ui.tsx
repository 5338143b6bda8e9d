import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { message } from "../api";

export function ErrorText({ error }: { error?: string }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function Status({ text }: { text?: string }) {
  return (
    <p class="status" role="status" aria-live="polite">
      {text ?? ""}
    </p>
  );
}

/** A button that runs ``action``, disabled while it runs; its error is shown beside it. */
export function ActionButton(props: {
  label: string;
  action: () => Promise<unknown>;
  danger?: boolean;
  disabled?: boolean;
  done?: (result: unknown) => void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  return (
    <span class="action">
      <button
        type="button"
        class={props.danger ? "danger" : undefined}
        disabled={busy || props.disabled}
        onClick={async () => {
          setBusy(true);
          setError(undefined);
          try {
            props.done?.(await props.action());
          } catch (e) {
            setError(message(e));
          } finally {
            setBusy(false);
          }
        }}
      >
        {props.label}
      </button>
      {error ? (
        <span class="error" role="alert">
          {error}
        </span>
      ) : null}
    </span>
  );
}

/** A destructive action behind a second, explicit confirmation. */
export function ConfirmButton(props: { label: string; confirm: string; action: () => Promise<unknown>; done?: () => void }) {
  const [asking, setAsking] = useState(false);
  if (!asking)
    return (
      <button type="button" class="danger" onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  return (
    <span class="confirm" role="group" aria-label={props.confirm}>
      <span>{props.confirm}</span>
      <ActionButton
        label={`Yes, ${props.label.toLowerCase()}`}
        danger
        action={props.action}
        done={() => {
          setAsking(false);
          props.done?.();
        }}
      />
      <button type="button" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

export function Section(props: { title: string; id?: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const id = props.id ?? props.title.toLowerCase().replace(/\W+/g, "-");
  const headingId = `${id}-heading`;
  return (
    <section class="card" id={id} aria-labelledby={headingId}>
      <div class="card-head">
        <h2 id={headingId}>{props.title}</h2>
        {props.actions}
      </div>
      {props.children}
    </section>
  );
}

export function Pairs({ map }: { map: Record<string, string> | undefined }) {
  const entries = Object.entries(map ?? {});
  if (!entries.length) return <span class="muted">none</span>;
  return (
    <ul class="pairs">
      {entries.map(([k, v]) => (
        <li key={k}>
          <span class="key">{k}</span>=<span class="value">{v}</span>
        </li>
      ))}
    </ul>
  );
}

/** The dashboard's list table: one ``th`` per column, an unlabelled last column (``actions``
 * names it for screen readers) when the rows carry buttons, ``row`` rendering each ``tr``.
 * The caption is for screen readers unless ``visibleCaption``. */
export function DataTable<T>(props: {
  caption: ComponentChildren;
  columns: string[];
  rows: readonly T[] | undefined;
  row: (item: T) => ComponentChildren;
  actions?: string;
  testid?: string;
  visibleCaption?: boolean;
}) {
  return (
    <div class="table-wrap">
      <table class="list" data-testid={props.testid}>
        <caption class={props.visibleCaption ? undefined : "sr-only"}>{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th scope="col" key={c}>
                {c}
              </th>
            ))}
            {props.actions ? (
              <th scope="col">
                <span class="sr-only">{props.actions}</span>
              </th>
            ) : null}
          </tr>
        </thead>
        <tbody>{(props.rows ?? []).map((item) => props.row(item))}</tbody>
      </table>
    </div>
  );
}
