import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, message } from "./api";

/** The current hash route, split: "#/sandboxes/abc" → ["sandboxes", "abc"]. */
export function useRoute(): string[] {
  const read = () =>
    location.hash
      .replace(/^#\/?/, "")
      .split("?")[0]
      .split("/")
      .filter(Boolean)
      .map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  /** The HTTP status of the last failure, when it was the API's answer. */
  status: number | undefined;
  loading: boolean;
  reload: () => void;
}

/** ``load`` at once, again on ``deps`` and every ``everyMs`` (when given) while mounted;
 * a newer answer always wins over an older one. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [status, setStatus] = useState<number | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const seq = useRef(0);
  useEffect(() => {
    const ctl = new AbortController();
    let timer: number | undefined;
    let stopped = false;
    const run = async () => {
      const mine = ++seq.current;
      try {
        const value = await load(ctl.signal);
        if (mine === seq.current && !stopped) {
          setData(value);
          setError(undefined);
          setStatus(undefined);
        }
      } catch (e) {
        if (!stopped && mine === seq.current) {
          setError(message(e));
          setStatus(e instanceof ApiError ? e.status : undefined);
        }
      } finally {
        if (!stopped) {
          setLoading(false);
          if (everyMs) timer = window.setTimeout(run, everyMs);
        }
      }
    };
    run();
    return () => {
      stopped = true;
      ctl.abort();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, status, loading, reload: () => setTick((t) => t + 1) };
}
